-- Version 4: the guard (rules-api.md §7). Every table with rules carries a
-- statement-level trigger, pgrules_guard, that refuses a write the engine
-- did not make; the engine's statements begin with a header naming the
-- guard key and the rules they were computed with (functions.sql,
-- pgrules._guard, says how it is checked).
--
-- guard_key is the secret of the header: only its owner (the role that
-- installed pgrules, which the proxies' catalog connections use) may read
-- it; the guards hold its md5.
CREATE TABLE pgrules.guard_key (
  key text NOT NULL CHECK (key ~ '^[0-9a-f]{32}$')
);
CREATE UNIQUE INDEX guard_key_one ON pgrules.guard_key ((true));
INSERT INTO pgrules.guard_key (key) VALUES (replace(gen_random_uuid()::text, '-', ''));
REVOKE ALL ON pgrules.guard_key FROM PUBLIC;

-- unguarded records each statement that wrote a table with rules while an
-- administrator had lifted the guard (SET LOCAL pgrules.guard = off):
-- pgrules.verify() lists them until pgrules.rebuild() of the table.
CREATE TABLE pgrules.unguarded (
  id         bigserial PRIMARY KEY,
  table_oid  oid NOT NULL,
  table_name text NOT NULL,
  operation  text NOT NULL,
  role       name NOT NULL,
  at         timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON pgrules.unguarded FROM PUBLIC;
GRANT SELECT ON pgrules.unguarded TO PUBLIC;
COMMENT ON TABLE pgrules.unguarded IS
  'Statements that wrote a table with rules with the guard lifted (pgrules.guard = off); listed by pgrules.verify() until pgrules.rebuild() of the table.';
