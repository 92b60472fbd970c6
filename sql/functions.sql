-- The pgrules API (rules-api.md §2): re-created on every install, so a fix
-- here needs no migration. The functions check what SQL can check (tables,
-- columns, argument forms, a column derived twice); expressions and
-- relationships are compiled by the proxy, in the same transaction.

CREATE OR REPLACE FUNCTION pgrules.raise(code text, message text, detail text DEFAULT NULL, hint text DEFAULT NULL,
  schema_name text DEFAULT NULL, table_name text DEFAULT NULL, constraint_name text DEFAULT NULL,
  column_name text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  -- RAISE refuses NULL option values: empty strings leave a field out.
  RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message, DETAIL = coalesce(detail, ''),
    HINT = coalesce(hint, ''), SCHEMA = coalesce(schema_name, ''), TABLE = coalesce(table_name, ''),
    CONSTRAINT = coalesce(constraint_name, ''), COLUMN = coalesce(column_name, '');
END $$;
COMMENT ON FUNCTION pgrules.raise IS 'Raises an error with the given SQLSTATE and fields (used by the pgrules proxy).';

-- _table resolves a table name through the search path.
CREATE OR REPLACE FUNCTION pgrules._table(tbl text, rule_name text, OUT sch text, OUT rel text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
  rel_oid regclass;
BEGIN
  rel_oid := to_regclass(tbl);
  IF rel_oid IS NULL THEN
    RAISE EXCEPTION 'rule "%": table "%" does not exist', rule_name, tbl USING ERRCODE = '42P01';
  END IF;
  SELECT n.nspname, c.relname INTO sch, rel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel_oid;
END $$;

-- _column splits '[schema.]table.column' and checks that the column exists.
CREATE OR REPLACE FUNCTION pgrules._column(ref text, what text, rule_name text, OUT sch text, OUT rel text, OUT col text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
  dot int := length(ref) - strpos(reverse(ref), '.') + 1;
BEGIN
  IF ref IS NULL OR strpos(ref, '.') = 0 THEN
    RAISE EXCEPTION 'rule "%": % must be ''table.column'', not %', rule_name, what, coalesce('''' || ref || '''', 'NULL')
      USING ERRCODE = '42P17', HINT = 'Write it as ''table.column'' or ''schema.table.column''.';
  END IF;
  col := substr(ref, dot + 1);
  SELECT t.sch, t.rel INTO sch, rel FROM pgrules._table(substr(ref, 1, dot - 1), rule_name) t;
  IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = format('%I.%I', sch, rel)::regclass
                 AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped) THEN
    RAISE EXCEPTION 'rule "%": column "%" of table %.% does not exist', rule_name, col, sch, rel USING ERRCODE = '42703';
  END IF;
END $$;

-- _default_name: a derivation is named after its target, other rules
-- '<table>_<kind>_<n>' with the lowest free n.
CREATE OR REPLACE FUNCTION pgrules._default_name(p_rel text, p_kind text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  n int := 1;
BEGIN
  WHILE EXISTS (SELECT 1 FROM pgrules.rule r WHERE r.name = format('%s_%s_%s', p_rel, p_kind, n)) LOOP
    n := n + 1;
  END LOOP;
  RETURN format('%s_%s_%s', p_rel, p_kind, n);
END $$;

CREATE OR REPLACE FUNCTION pgrules._nonempty(value text, what text, rule_name text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF value IS NULL OR btrim(value) = '' THEN
    RAISE EXCEPTION 'rule "%": % must not be empty', rule_name, what USING ERRCODE = '42P17';
  END IF;
END $$;

-- _save stores a rule, replacing one of the same name (keeping its place
-- in the definition order).
CREATE OR REPLACE FUNCTION pgrules._save(r pgrules.rule) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  other text;
BEGIN
  IF r.kind IN ('sum', 'count', 'min', 'max', 'formula', 'copy') THEN
    SELECT name INTO other FROM pgrules.rule
    WHERE table_schema = r.table_schema AND table_name = r.table_name AND target_column = r.target_column
      AND kind IN ('sum', 'count', 'min', 'max', 'formula', 'copy') AND name <> r.name;
    IF FOUND THEN
      RAISE EXCEPTION 'rule "%": column %.%.% is already derived by rule "%"', r.name, r.table_schema, r.table_name, r.target_column, other
        USING ERRCODE = '42P17', HINT = 'A column has at most one derivation: drop the other rule first (pgrules.drop_rule).';
    END IF;
  END IF;
  INSERT INTO pgrules.rule (name, table_schema, table_name, kind, target_column, expression, source_schema, source_table,
                            source_column, filter, via, message, timing, verbs, enabled)
  VALUES (r.name, r.table_schema, r.table_name, r.kind, r.target_column, r.expression, r.source_schema, r.source_table,
          r.source_column, r.filter, r.via, r.message, r.timing, r.verbs, true)
  ON CONFLICT (name) DO UPDATE SET
    table_schema = excluded.table_schema, table_name = excluded.table_name, kind = excluded.kind,
    target_column = excluded.target_column, expression = excluded.expression, source_schema = excluded.source_schema,
    source_table = excluded.source_table, source_column = excluded.source_column, filter = excluded.filter,
    via = excluded.via, message = excluded.message, timing = excluded.timing, verbs = excluded.verbs,
    enabled = true, txid = pg_current_xact_id(), defined_at = now(), defined_by = current_user;
  RETURN r.name;
END $$;

-- _aggregate defines sum, count, min and max.
CREATE OR REPLACE FUNCTION pgrules._aggregate(kind text, target text, "of" text, filter text, via text, name text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  r pgrules.rule;
  rule_name text := coalesce(name, regexp_replace(target, '^.*\.([^.]+\.[^.]+)$', '\1'));
BEGIN
  SELECT t.sch, t.rel, t.col INTO r.table_schema, r.table_name, r.target_column FROM pgrules._column(target, 'target', rule_name) t;
  IF kind = 'count' THEN
    SELECT t.sch, t.rel INTO r.source_schema, r.source_table FROM pgrules._table("of", rule_name) t;
  ELSE
    SELECT t.sch, t.rel, t.col INTO r.source_schema, r.source_table, r.source_column FROM pgrules._column("of", 'of', rule_name) t;
  END IF;
  r.name := rule_name; r.kind := kind; r.filter := nullif(btrim(filter), ''); r.via := via;
  RETURN pgrules._save(r);
END $$;

CREATE OR REPLACE FUNCTION pgrules.sum(target text, "of" text, filter text DEFAULT NULL, via text DEFAULT NULL, name text DEFAULT NULL)
RETURNS text LANGUAGE sql AS $$ SELECT pgrules._aggregate('sum', target, "of", filter, via, name) $$;
COMMENT ON FUNCTION pgrules.sum IS 'target = sum of the child column "of" (''child.column'') over the children whose filter is true.';

CREATE OR REPLACE FUNCTION pgrules.count(target text, "of" text, filter text DEFAULT NULL, via text DEFAULT NULL, name text DEFAULT NULL)
RETURNS text LANGUAGE sql AS $$ SELECT pgrules._aggregate('count', target, "of", filter, via, name) $$;
COMMENT ON FUNCTION pgrules.count IS 'target = number of child rows ("of" = ''child'') whose filter is true.';

CREATE OR REPLACE FUNCTION pgrules.min(target text, "of" text, filter text DEFAULT NULL, via text DEFAULT NULL, name text DEFAULT NULL)
RETURNS text LANGUAGE sql AS $$ SELECT pgrules._aggregate('min', target, "of", filter, via, name) $$;
COMMENT ON FUNCTION pgrules.min IS 'target = smallest non-NULL child value of "of" (''child.column''); NULL when none qualifies.';

CREATE OR REPLACE FUNCTION pgrules.max(target text, "of" text, filter text DEFAULT NULL, via text DEFAULT NULL, name text DEFAULT NULL)
RETURNS text LANGUAGE sql AS $$ SELECT pgrules._aggregate('max', target, "of", filter, via, name) $$;
COMMENT ON FUNCTION pgrules.max IS 'target = largest non-NULL child value of "of" (''child.column''); NULL when none qualifies.';

CREATE OR REPLACE FUNCTION pgrules.formula(target text, expression text, name text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  r pgrules.rule;
BEGIN
  r.name := coalesce(name, regexp_replace(target, '^.*\.([^.]+\.[^.]+)$', '\1'));
  SELECT t.sch, t.rel, t.col INTO r.table_schema, r.table_name, r.target_column FROM pgrules._column(target, 'target', r.name) t;
  PERFORM pgrules._nonempty(expression, 'the expression', r.name);
  r.kind := 'formula'; r.expression := expression;
  RETURN pgrules._save(r);
END $$;
COMMENT ON FUNCTION pgrules.formula IS 'target = expression, evaluated on the row (may read parent columns: row.customer.discount).';

CREATE OR REPLACE FUNCTION pgrules.copy(target text, source text, via text DEFAULT NULL, name text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  r pgrules.rule;
BEGIN
  r.name := coalesce(name, regexp_replace(target, '^.*\.([^.]+\.[^.]+)$', '\1'));
  SELECT t.sch, t.rel, t.col INTO r.table_schema, r.table_name, r.target_column FROM pgrules._column(target, 'target', r.name) t;
  SELECT t.sch, t.rel, t.col INTO r.source_schema, r.source_table, r.source_column FROM pgrules._column(source, 'source', r.name) t;
  r.kind := 'copy'; r.via := via;
  RETURN pgrules._save(r);
END $$;
COMMENT ON FUNCTION pgrules.copy IS 'target = the parent column source (''parent.column''), taken on insert and when the foreign key changes.';

CREATE OR REPLACE FUNCTION pgrules._check(kind text, tbl text, condition text, message text, name text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  r pgrules.rule;
  given text := coalesce(name, tbl || '_' || kind);
BEGIN
  SELECT t.sch, t.rel INTO r.table_schema, r.table_name FROM pgrules._table(tbl, given) t;
  r.name := coalesce(name, pgrules._default_name(r.table_name, kind));
  PERFORM pgrules._nonempty(condition, 'the condition', r.name);
  PERFORM pgrules._nonempty(message, 'the message', r.name);
  r.kind := kind; r.expression := condition; r.message := message;
  RETURN pgrules._save(r);
END $$;

CREATE OR REPLACE FUNCTION pgrules.constraint("table" text, condition text, message text, name text DEFAULT NULL) RETURNS text
LANGUAGE sql AS $$ SELECT pgrules._check('constraint', "table", condition, message, name) $$;
COMMENT ON FUNCTION pgrules.constraint IS 'condition must hold after the row''s logic on every insert and update; else the statement fails with 23514.';

CREATE OR REPLACE FUNCTION pgrules.commit_constraint("table" text, condition text, message text, name text DEFAULT NULL) RETURNS text
LANGUAGE sql AS $$ SELECT pgrules._check('commit_constraint', "table", condition, message, name) $$;
COMMENT ON FUNCTION pgrules.commit_constraint IS 'condition must hold at commit for every row of the table touched in the transaction.';

CREATE OR REPLACE FUNCTION pgrules.event("table" text, timing text, action text, verbs text[] DEFAULT '{insert,update,delete}', name text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  r pgrules.rule;
BEGIN
  SELECT t.sch, t.rel INTO r.table_schema, r.table_name FROM pgrules._table("table", coalesce(name, "table" || '_event')) t;
  r.name := coalesce(name, pgrules._default_name(r.table_name, 'event'));
  IF timing IS NULL OR timing NOT IN ('early', 'pre_insert', 'row', 'commit', 'after_commit', 'failure') THEN
    RAISE EXCEPTION 'rule "%": timing must be early, pre_insert, row, commit, after_commit or failure, not %', r.name, coalesce('''' || timing || '''', 'NULL')
      USING ERRCODE = '42P17';
  END IF;
  IF verbs IS NULL OR cardinality(verbs) = 0 OR NOT verbs <@ ARRAY['insert', 'update', 'delete'] THEN
    RAISE EXCEPTION 'rule "%": verbs must be a non-empty subset of {insert,update,delete}, not %', r.name, coalesce(verbs::text, 'NULL')
      USING ERRCODE = '42P17';
  END IF;
  PERFORM pgrules._nonempty(action, 'the action', r.name);
  r.kind := 'event'; r.timing := timing; r.expression := action; r.verbs := verbs;
  RETURN pgrules._save(r);
END $$;
COMMENT ON FUNCTION pgrules.event IS 'Runs action at timing (early, pre_insert, row, commit, after_commit, failure) for the given verbs.';

CREATE OR REPLACE FUNCTION pgrules._existing(rule_name text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pgrules.rule WHERE name = rule_name) THEN
    RAISE EXCEPTION 'rule "%" does not exist', rule_name USING ERRCODE = '42704',
      HINT = 'SELECT name FROM pgrules.rules lists the rules.';
  END IF;
END $$;

CREATE OR REPLACE FUNCTION pgrules.drop_rule(name text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pgrules._existing(name);
  DELETE FROM pgrules.rule r WHERE r.name = drop_rule.name;
  RETURN name;
END $$;
COMMENT ON FUNCTION pgrules.drop_rule IS 'Removes a rule.';

CREATE OR REPLACE FUNCTION pgrules._set_enabled(rule_name text, on_off boolean) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pgrules._existing(rule_name);
  UPDATE pgrules.rule SET enabled = on_off, txid = pg_current_xact_id() WHERE name = rule_name;
  RETURN rule_name;
END $$;

CREATE OR REPLACE FUNCTION pgrules.disable_rule(name text) RETURNS text
LANGUAGE sql AS $$ SELECT pgrules._set_enabled(name, false) $$;
COMMENT ON FUNCTION pgrules.disable_rule IS 'Switches a rule off.';

CREATE OR REPLACE FUNCTION pgrules.enable_rule(name text) RETURNS text
LANGUAGE sql AS $$ SELECT pgrules._set_enabled(name, true) $$;
COMMENT ON FUNCTION pgrules.enable_rule IS 'Switches a rule on.';

-- explain, verify and rebuild are computed by the proxy and handed over in
-- transaction-local settings.
CREATE OR REPLACE FUNCTION pgrules._proxy_setting(setting text, fn text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
  doc jsonb := nullif(current_setting(setting, true), '')::jsonb;
BEGIN
  IF doc IS NULL THEN
    RAISE EXCEPTION 'pgrules.% is answered by the pgrules proxy', fn USING ERRCODE = '55000',
      HINT = format('Connect through the proxy, or run: pgrules %s --upstream URL.', fn);
  END IF;
  RETURN doc;
END $$;

CREATE OR REPLACE FUNCTION pgrules.explain(tbl text)
RETURNS TABLE ("position" int, rule text, kind text, target text, reads text[], depends_on text[], used_by text[])
LANGUAGE plpgsql STABLE AS $$
DECLARE
  doc jsonb := pgrules._proxy_setting('pgrules.explain', 'explain');
  t record;
BEGIN
  SELECT x.sch, x.rel INTO t FROM pgrules._table(tbl, 'explain') x;
  RETURN QUERY
    SELECT (e->>'position')::int, e->>'rule', e->>'kind', e->>'target',
           ARRAY(SELECT jsonb_array_elements_text(coalesce(e->'reads', '[]'))),
           ARRAY(SELECT jsonb_array_elements_text(coalesce(e->'depends_on', '[]'))),
           ARRAY(SELECT jsonb_array_elements_text(coalesce(e->'used_by', '[]')))
    FROM jsonb_array_elements(coalesce(doc->(t.sch || '.' || t.rel), '[]')) e
    ORDER BY 1;
END $$;
COMMENT ON FUNCTION pgrules.explain IS 'The rules of a table in execution order, what each reads and what depends on it (through the proxy).';

CREATE OR REPLACE VIEW pgrules.rules AS
  SELECT name, table_schema || '.' || table_name AS table_name, kind,
         CASE WHEN target_column IS NOT NULL THEN table_name || '.' || target_column END AS target,
         expression,
         CASE WHEN source_table IS NOT NULL THEN source_schema || '.' || source_table || coalesce('.' || source_column, '') END AS source,
         filter, via, message, timing, verbs, enabled, defined_at, defined_by
  FROM pgrules.rule ORDER BY seq;

-- relationships: every foreign key between tables, with the name
-- expressions use for the parent (rules-api.md §3).
CREATE OR REPLACE VIEW pgrules.relationships AS
  WITH fk AS (
    SELECT c.conname AS name, cn.nspname AS child_schema, cc.relname AS child_table,
           pn.nspname AS parent_schema, pc.relname AS parent_table, c.conrelid, c.confrelid,
           ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                 JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i) AS child_columns,
           ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                 JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i) AS parent_columns,
           c.confdeltype::text AS on_delete, c.confupdtype::text AS on_update
    FROM pg_constraint c
    JOIN pg_class cc ON cc.oid = c.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
    JOIN pg_class pc ON pc.oid = c.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
    WHERE c.contype = 'f' AND cn.nspname NOT IN ('pgrules', 'pg_catalog', 'information_schema')
  ), stripped AS (
    SELECT fk.*, CASE WHEN cardinality(child_columns) = 1 AND child_columns[1] LIKE '%\_id'
                      THEN left(child_columns[1], -3) END AS short
    FROM fk
  )
  SELECT name, child_schema, child_table, child_columns, parent_schema, parent_table, parent_columns,
         CASE WHEN short IS NOT NULL AND short <> ''
               AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = s.conrelid AND a.attname = s.short
                               AND a.attnum > 0 AND NOT a.attisdropped)
               AND (SELECT count(*) FROM stripped o WHERE o.conrelid = s.conrelid AND o.short = s.short) = 1
              THEN short ELSE name END AS accessor,
         on_delete, on_update
  FROM stripped s;

CREATE OR REPLACE FUNCTION pgrules._notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('pgrules', current_database());
  RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS notify ON pgrules.rule;
CREATE TRIGGER notify AFTER INSERT OR UPDATE OR DELETE ON pgrules.rule
  FOR EACH STATEMENT EXECUTE FUNCTION pgrules._notify();

-- Schema changes made anywhere (through a proxy or not) reload every
-- proxy's catalog at commit. Event triggers need a superuser; Install
-- skips this part for other roles (the proxies then see schema changes
-- with the next rule change or restart).
CREATE OR REPLACE FUNCTION pgrules._notify_ddl() RETURNS event_trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('pgrules', current_database());
END $$;

CREATE OR REPLACE FUNCTION pgrules.verify(tbl text DEFAULT NULL)
RETURNS TABLE (rule text, table_name text, key text, stored text, computed text)
LANGUAGE sql STABLE AS $$
  SELECT d->>'rule', d->>'table', d->>'key', d->>'stored', d->>'computed'
  FROM jsonb_array_elements(pgrules._proxy_setting('pgrules.verify', 'verify')) d
$$;
COMMENT ON FUNCTION pgrules.verify IS 'Rows whose derived values differ from their definitions recomputed from scratch (through the proxy).';

CREATE OR REPLACE FUNCTION pgrules.rebuild(tbl text DEFAULT NULL)
RETURNS TABLE (rule text, rows_corrected int)
LANGUAGE sql VOLATILE AS $$
  SELECT d->>'rule', (d->>'rows')::int
  FROM jsonb_array_elements(pgrules._proxy_setting('pgrules.rebuild', 'rebuild')) d
$$;
COMMENT ON FUNCTION pgrules.rebuild IS 'Sets every derived column to its definition, in dependency order (through the proxy).';
