-- Version 2: who defined a rule, and when.
ALTER TABLE pgrules.rule
  ADD COLUMN defined_at timestamptz NOT NULL DEFAULT now(),
  ADD COLUMN defined_by text NOT NULL DEFAULT current_user;
