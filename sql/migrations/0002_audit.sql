-- Version 2: when and by whom each rule was (re)defined. Rules stored
-- before this version keep NULL in both: that is not known, and the time
-- of the upgrade would be a false answer.
ALTER TABLE pgrules.rule
  ADD COLUMN defined_at timestamptz,
  ADD COLUMN defined_by text;

ALTER TABLE pgrules.rule
  ALTER COLUMN defined_at SET DEFAULT now(),
  ALTER COLUMN defined_by SET DEFAULT current_user;
