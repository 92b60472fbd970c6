-- Version 5: the outbox is written only by the engine (rules-api.md §11).
-- No role but the schema's owner holds a privilege on it: the engine
-- records after_commit entries in the client's transaction through
-- pgrules._outbox_add (functions.sql), which takes the role from
-- current_user and pins each entry to its rule as it is at commit.
--
-- rule_digest is that pin, pgrules._rule_digest of the entry's rule: the
-- dispatchers run an entry only while its rule still has that digest, so
-- that what an entry runs comes from a rule, not from data.
ALTER TABLE pgrules.outbox ADD COLUMN rule_digest text;

-- Entries recorded before this version were written with whatever
-- privileges the writers had been granted on the outbox, so their sql may
-- come from a client: they are not run, but stay, dead, for an
-- administrator to look at (pgrules.retry(id) runs one with its rule as it
-- is now). Their posts and notifications go on, pinned to their rules.
UPDATE pgrules.outbox o SET rule_digest = md5(concat_ws(E'\x1f', r.name, r.kind, r.table_schema, r.table_name, r.expression, r.timing, r.verbs::text))
FROM pgrules.rule r
WHERE r.name = o.rule AND r.kind = 'event' AND r.timing = o.timing AND o.state = 'pending' AND o.kind <> 'sql';
UPDATE pgrules.outbox SET state = 'dead',
  last_error = CASE WHEN kind = 'sql'
                    THEN 'not run: recorded before pgrules schema version 5, when roles other than the engine could write the outbox; check it, then SELECT pgrules.retry(id)'
                    ELSE 'not run: its rule no longer exists as an event of this timing' END
WHERE state = 'pending' AND rule_digest IS NULL;

-- Grants made on the outbox for the writers of earlier versions are taken
-- back: nobody but the owner may insert, change or delete entries.
DO $$
DECLARE
  g record;
BEGIN
  FOR g IN
    SELECT DISTINCT c.oid::regclass AS obj, a.grantee
    FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
    WHERE c.oid IN ('pgrules.outbox'::regclass, 'pgrules.outbox_id_seq'::regclass) AND a.grantee <> c.relowner
  LOOP
    IF g.grantee = 0 THEN
      EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', g.obj);
    ELSE
      EXECUTE format('REVOKE ALL ON %s FROM %s', g.obj, g.grantee::regrole);
    END IF;
  END LOOP;
END $$;
