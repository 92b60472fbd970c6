-- The functions, views and triggers of the pgrules schema (rules-api.md).
-- Install runs this file after the migrations whenever it differs from the
-- copy last installed, so a fix here needs no migration. Everything is
-- CREATE OR REPLACE; a change that cannot be made that way (a function's
-- argument names or result type, a view's existing columns) needs a
-- migration that drops the old object first.
--
-- The definition functions check what SQL can check, so that a direct
-- connection gets the same clear errors: tables, columns, the form of the
-- arguments, a column derived twice. Each error names the rule. Expressions
-- and relationships (which foreign key, via) are compiled by the proxy, in
-- the same transaction.
--
-- Names that start with an underscore are this file's helpers.

-- Every role that writes a table with rules runs the engine's statements,
-- which call pgrules._unnest and, to fail, pgrules.raise: the schema is
-- open to all. Its tables and views keep their own privileges.
GRANT USAGE ON SCHEMA pgrules TO PUBLIC;

-- _unnest is unnest with an estimate of one row, whatever the array; the
-- engine's statements take their keys through it (unnestFrom in
-- rules/sqlgen.go says why). Installed by a superuser it is the server's
-- own array_unnest under another name; otherwise it is a SQL function,
-- which costs some tens of microseconds a call, STRICT so that it is not
-- inlined (that would bring back unnest's own estimate). STRICT changes
-- nothing else: unnest(NULL) has no rows either.
DO $$
BEGIN
  IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    CREATE OR REPLACE FUNCTION pgrules._unnest(anyarray) RETURNS SETOF anyelement
    LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE ROWS 1 AS 'array_unnest';
  ELSE
    CREATE OR REPLACE FUNCTION pgrules._unnest(anyarray) RETURNS SETOF anyelement
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE ROWS 1 AS $f$ SELECT unnest($1) $f$;
  END IF;
END $$;

-- _tables is the catalog's tables with their columns (catalog/load.go),
-- read with an empty search_path: format_type and pg_get_expr then qualify
-- every type, sequence and function outside pg_catalog, so that a column's
-- type and default mean the same in every session, whatever its
-- search_path. before lists the enabled BEFORE ROW triggers of a table
-- (tgtype: ROW 1, BEFORE 2, INSTEAD 64).
CREATE OR REPLACE FUNCTION pgrules._tables() RETURNS text
LANGUAGE sql STABLE SET search_path = '' AS $$
SELECT coalesce(json_agg(json_build_object(
  'schema', n.nspname, 'name', c.relname, 'oid', c.oid::int8,
  'pk', (SELECT array_agg(a.attname ORDER BY k.i) FROM pg_index x
          CROSS JOIN unnest(x.indkey) WITH ORDINALITY k(n, i)
          JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.n
         WHERE x.indrelid = c.oid AND x.indisprimary),
  'uniques', (SELECT json_agg(json_build_object('index', ic.relname, 'constraint', con.conname,
          'columns', (SELECT array_agg(a.attname ORDER BY k.i) FROM unnest(x.indkey) WITH ORDINALITY k(n, i)
                      JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.n
                      WHERE k.i <= x.indnkeyatts),
          'expressions', x.indexprs IS NOT NULL, 'predicate', pg_get_expr(x.indpred, x.indrelid),
          'exclusion', con.contype = 'x', 'deferrable', coalesce(con.condeferrable, false),
          'nullsnotdistinct', coalesce((to_jsonb(x) ->> 'indnullsnotdistinct')::boolean, false)) ORDER BY ic.relname)
        FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid
        LEFT JOIN pg_constraint con ON con.conindid = x.indexrelid AND con.conrelid = x.indrelid AND con.contype IN ('p', 'u', 'x')
        WHERE x.indrelid = c.oid AND x.indisvalid AND (x.indisunique OR con.contype = 'x')),
  'columns', (SELECT json_agg(json_build_object(
          'name', a.attname, 'num', a.attnum, 'type', format_type(a.atttypid, a.atttypmod),
          'oid', (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END)::int8,
          'enum', t.typtype = 'e', 'notnull', a.attnotnull,
          'default', a.atthasdef OR a.attidentity <> '', 'generated', a.attgenerated <> '',
          'identity', a.attidentity,
          'genexpr', CASE WHEN a.attgenerated <> '' THEN (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d
                                                          WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum) END,
          'genreads', CASE WHEN a.attgenerated <> '' THEN (SELECT array_agg(DISTINCT r.attname) FROM pg_attrdef d
                                                           JOIN pg_depend dp ON dp.classid = 'pg_attrdef'::regclass AND dp.objid = d.oid
                                                                             OR dp.classid = 'pg_class'::regclass AND dp.objid = c.oid AND dp.objsubid = a.attnum
                                                           JOIN pg_attribute r ON r.attrelid = c.oid AND r.attnum = dp.refobjsubid
                                                           WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum
                                                             AND dp.refclassid = 'pg_class'::regclass AND dp.refobjid = c.oid
                                                             AND dp.refobjsubid > 0 AND dp.refobjsubid <> a.attnum) END,
          'scale', CASE WHEN (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END) = 1700
                         AND (CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END) >= 4
                        THEN ((((CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END) - 4) & 2047) # 1024) - 1024 END,
          'defexpr', CASE WHEN a.attidentity <> '' THEN format('nextval(%L::regclass)', pg_get_serial_sequence(c.oid::regclass::text, a.attname))
                          WHEN a.attgenerated = '' THEN (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d
                                                         WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum) END)
          ORDER BY a.attnum)
        FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
  'before', (SELECT json_agg(json_build_object('name', g.tgname, 'type', g.tgtype) ORDER BY g.tgname)
        FROM pg_trigger g WHERE g.tgrelid = c.oid AND NOT g.tgisinternal AND g.tgenabled IN ('O', 'A')
          AND g.tgtype & 67 = 3))), '[]')::text
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgrules')
    AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%';
$$;

-- pgrules.raise fails the statement with exactly the fields it is given.
-- RAISE fixes its USING options when the function is compiled and refuses
-- a NULL value, and an empty string would still be sent (psql prints an
-- empty "DETAIL:"), so leaving the NULL fields out takes one RAISE for each
-- combination of the six optional fields. This block writes the function
-- with all 64.
DO $generate$
DECLARE
  fields  text[] := '{detail,hint,schema_name,table_name,constraint_name,column_name}';
  options text[] := '{DETAIL,HINT,SCHEMA,TABLE,CONSTRAINT,COLUMN}';
  present text;         -- the expression of the bit mask of non-NULL fields
  branches text := '';
BEGIN
  SELECT string_agg(format('((%I IS NOT NULL)::int << %s)', fields[i], i - 1), ' | ' ORDER BY i)
    INTO present FROM generate_subscripts(fields, 1) i;
  FOR mask IN 0..63 LOOP
    branches := branches || format(E'\n    WHEN %s THEN RAISE EXCEPTION USING ERRCODE = c, MESSAGE = m%s;', mask,
      (SELECT string_agg(format(', %s = %I', options[i], fields[i]), '' ORDER BY i)
         FROM generate_subscripts(fields, 1) i WHERE mask & (1 << (i - 1)) <> 0));
  END LOOP;
  EXECUTE format($f$
CREATE OR REPLACE FUNCTION pgrules.raise(code text, message text, detail text DEFAULT NULL, hint text DEFAULT NULL,
  schema_name text DEFAULT NULL, table_name text DEFAULT NULL, constraint_name text DEFAULT NULL,
  column_name text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $body$
-- Written by a generator in pgrules' functions.sql: one RAISE for each set
-- of non-NULL fields, because RAISE refuses NULL option values.
DECLARE
  c text := coalesce(code, 'P0001');
  m text := coalesce(message, '');
BEGIN
  CASE %s%s
  END CASE;
END $body$$f$, present, branches);
END $generate$;
COMMENT ON FUNCTION pgrules.raise IS
  'Raises an ERROR with this SQLSTATE, message and fields; NULL fields are left out. The pgrules proxy uses it to fail a transaction as a server error would.';

-- _lock serializes rule definitions from here to the end of the
-- transaction, so that two transactions cannot both take the lowest free
-- default name, or derive one column under two names. The key is
-- 0x706772756c6573, "pgrules" in ASCII (Install's own lock is "pgrule").
CREATE OR REPLACE FUNCTION pgrules._lock() RETURNS void
LANGUAGE sql AS $$ SELECT pg_advisory_xact_lock(31638938685564275) $$;

-- _parse splits a name written as in SQL ('orders', 'sales.orders',
-- 'lineitem."Amount"') into its identifiers, unquoted and folded to lower
-- case as SQL folds them; NULL when it is not such a name.
CREATE OR REPLACE FUNCTION pgrules._parse(ref text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  RETURN parse_ident(ref);
EXCEPTION WHEN invalid_parameter_value THEN
  RETURN NULL;
END $$;

-- _prefix starts an error message with the rule it is about.
CREATE OR REPLACE FUNCTION pgrules._prefix(rule_name text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN rule_name IS NOT NULL THEN format('rule "%s": ', rule_name) ELSE '' END $$;

-- _relation resolves a parsed table name as SQL would (an unqualified one
-- through the search_path) to a table that can have rules: an ordinary or
-- partitioned table that the proxy's catalog sees.
CREATE OR REPLACE FUNCTION pgrules._relation(parts text[], rule_name text,
  OUT sch text, OUT rel text, OUT relid regclass)
LANGUAGE plpgsql STABLE AS $$
DECLARE
  shown text := array_to_string(parts, '.');
  kind "char";
  persistence "char";
BEGIN
  relid := to_regclass((SELECT string_agg(quote_ident(p), '.' ORDER BY i) FROM unnest(parts) WITH ORDINALITY u(p, i)));
  IF relid IS NULL THEN
    PERFORM pgrules.raise('42P01', format('%stable "%s" does not exist', pgrules._prefix(rule_name), shown),
      hint => CASE WHEN cardinality(parts) = 1
                   THEN format('An unqualified name is looked up in the search_path: %s.', array_to_string(current_schemas(false), ', '))
                   WHEN to_regnamespace(quote_ident(parts[1])) IS NULL
                   THEN format('There is no schema "%s" (a qualified name is schema.table).', parts[1]) END);
  END IF;
  SELECT n.nspname, c.relname, c.relkind, c.relpersistence INTO sch, rel, kind, persistence
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = relid;
  IF kind NOT IN ('r', 'p') THEN
    RAISE EXCEPTION USING ERRCODE = '42809', SCHEMA = sch, TABLE = rel,
      MESSAGE = format('%s%s.%s is %s, not a table', pgrules._prefix(rule_name), sch, rel,
                       CASE kind WHEN 'v' THEN 'a view' WHEN 'm' THEN 'a materialized view' WHEN 'f' THEN 'a foreign table'
                                 WHEN 'S' THEN 'a sequence' WHEN 'i' THEN 'an index' WHEN 'I' THEN 'an index'
                                 WHEN 'c' THEN 'a composite type' ELSE format('a relation of kind %s', kind) END),
      DETAIL = 'Rules apply to ordinary and partitioned tables.';
  END IF;
  IF sch IN ('pg_catalog', 'information_schema', 'pgrules') OR persistence = 't' THEN
    RAISE EXCEPTION USING ERRCODE = '42809', SCHEMA = sch, TABLE = rel,
      MESSAGE = format('%stable %s.%s cannot have rules', pgrules._prefix(rule_name), sch, rel),
      DETAIL = 'Rules apply to the tables of the database, not to system tables, to those of pgrules or to temporary tables.';
  END IF;
END $$;

-- _table resolves a table argument, 'table' or 'schema.table'. what names
-- the argument in errors.
CREATE OR REPLACE FUNCTION pgrules._table(tbl text, what text, rule_name text,
  OUT sch text, OUT rel text, OUT relid regclass)
LANGUAGE plpgsql STABLE AS $$
DECLARE
  parts text[] := pgrules._parse(tbl);
BEGIN
  IF parts IS NULL OR cardinality(parts) > 2 THEN
    RAISE EXCEPTION USING ERRCODE = '42P17',
      MESSAGE = format('%s%s must name a table, not %s', pgrules._prefix(rule_name), what, quote_nullable(tbl)),
      HINT = format('Write %s as ''table'' or ''schema.table''.', what);
  END IF;
  SELECT r.sch, r.rel, r.relid INTO sch, rel, relid FROM pgrules._relation(parts, rule_name) r;
END $$;

-- _column resolves a column argument, 'table.column' or
-- 'schema.table.column', to the table and the column's name.
CREATE OR REPLACE FUNCTION pgrules._column(ref text, what text, rule_name text, OUT sch text, OUT rel text, OUT col text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
  parts text[] := pgrules._parse(ref);
  n int := cardinality(parts);
  relid regclass;
BEGIN
  IF parts IS NULL OR n NOT IN (2, 3) THEN
    RAISE EXCEPTION USING ERRCODE = '42P17',
      MESSAGE = format('%s%s must name a column, not %s', pgrules._prefix(rule_name), what, quote_nullable(ref)),
      HINT = format('Write %s as ''table.column'' or ''schema.table.column''.', what);
  END IF;
  SELECT r.sch, r.rel, r.relid INTO sch, rel, relid FROM pgrules._relation(parts[1:n - 1], rule_name) r;
  SELECT a.attname INTO col FROM pg_attribute a
  WHERE a.attrelid = relid AND a.attname = parts[n] AND a.attnum > 0 AND NOT a.attisdropped;
  IF col IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = '42703', SCHEMA = sch, TABLE = rel, COLUMN = parts[n],
      MESSAGE = format('%scolumn "%s" of table %s.%s does not exist', pgrules._prefix(rule_name), parts[n], sch, rel);
  END IF;
END $$;

-- _given_name checks a name given with name => and returns it (NULL when
-- none was given: the caller then makes the default name).
CREATE OR REPLACE FUNCTION pgrules._given_name(name text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF btrim(name) = '' THEN
    RAISE EXCEPTION USING ERRCODE = '42P17', MESSAGE = 'a rule''s name must not be empty',
      HINT = 'Leave name out to get the default name.';
  END IF;
  RETURN name;
END $$;

-- _target_name is a derivation's default name: its target without the
-- schema, 'customer.balance' (the target as given when it is malformed, for
-- the error that follows).
CREATE OR REPLACE FUNCTION pgrules._target_name(target text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  parts text[] := pgrules._parse(target);
  n int := cardinality(parts);
BEGIN
  IF n IN (2, 3) THEN
    RETURN parts[n - 1] || '.' || parts[n];
  END IF;
  RETURN target;
END $$;

-- _default_name is the default name of any other rule:
-- '<table>_<kind>_<n>' with the lowest n that no rule has. p_rel is the
-- table as given (its parameters keep the names of the first release:
-- CREATE OR REPLACE cannot rename them).
CREATE OR REPLACE FUNCTION pgrules._default_name(p_rel text, p_kind text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  parts text[] := pgrules._parse(p_rel);
  base text := format('%s_%s_', coalesce(parts[cardinality(parts)], p_rel), p_kind);
  n int := 1;
BEGIN
  WHILE EXISTS (SELECT 1 FROM pgrules.rule r WHERE r.name = base || n) LOOP
    n := n + 1;
  END LOOP;
  RETURN base || n;
END $$;

-- _nonempty refuses a missing or blank expression, condition, message or
-- action; hint shows what one looks like.
CREATE OR REPLACE FUNCTION pgrules._nonempty(value text, what text, rule_name text, hint text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF value IS NULL OR btrim(value) = '' THEN
    RAISE EXCEPTION USING ERRCODE = '42P17', MESSAGE = format('%s%s is empty', pgrules._prefix(rule_name), what), HINT = hint;
  END IF;
END $$;

-- Who may author rules (rules-api.md §11): defining, dropping, enabling or
-- disabling a rule on a table requires owning the table (having the
-- privileges of its owner) or being a member of pgrules_admin; the owner
-- of the pgrules schema (its installer) may too. A rule whose table is
-- gone is theirs alone. _authorize raises 42501 otherwise; what is the
-- verb of the message.
CREATE OR REPLACE FUNCTION pgrules._may_author(sch text, rel text) RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT coalesce((SELECT pg_has_role(c.relowner, 'USAGE') FROM pg_class c
                   WHERE c.oid = to_regclass(format('%I.%I', sch, rel))), false)
      OR to_regrole('pgrules_admin') IS NOT NULL AND pg_has_role('pgrules_admin', 'MEMBER')
      OR pg_has_role((SELECT n.nspowner FROM pg_namespace n WHERE n.nspname = 'pgrules'), 'USAGE')
$$;

CREATE OR REPLACE FUNCTION pgrules._authorize(sch text, rel text, rule_name text, what text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF NOT pgrules._may_author(sch, rel) THEN
    RAISE EXCEPTION USING ERRCODE = '42501', SCHEMA = sch, TABLE = rel,
      MESSAGE = format('permission denied to %s rule "%s" on table %I.%I: rules of a table may be defined, dropped, enabled and disabled only by its owner or a member of pgrules_admin',
                       what, rule_name, sch, rel),
      HINT = format('Ask the owner of %I.%I, or an administrator (GRANT pgrules_admin TO %I).', sch, rel, current_user);
  END IF;
END $$;

-- _authorize_source refuses a derivation that reads a table its author
-- may not read: its values would show what that table holds.
CREATE OR REPLACE FUNCTION pgrules._authorize_source(r pgrules.rule) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
  relid regclass;
BEGIN
  IF r.source_table IS NULL THEN
    RETURN;
  END IF;
  relid := to_regclass(format('%I.%I', r.source_schema, r.source_table));
  IF relid IS NOT NULL AND NOT has_table_privilege(relid, 'SELECT')
     AND NOT pgrules._may_author(r.source_schema, r.source_table) THEN
    RAISE EXCEPTION USING ERRCODE = '42501', SCHEMA = r.source_schema, TABLE = r.source_table,
      MESSAGE = format('permission denied to define rule "%s": the %s reads table %I.%I, which %s may not read (SELECT)',
                       r.name, r.kind, r.source_schema, r.source_table, current_user);
  END IF;
END $$;

-- Every change of pgrules.rule, made by the functions or written directly,
-- is checked row by row: the rule before and after must both be the
-- writer's to author.
CREATE OR REPLACE FUNCTION pgrules._authorize_rule() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    IF NOT (to_regrole('pgrules_admin') IS NOT NULL AND pg_has_role('pgrules_admin', 'MEMBER')
            OR pg_has_role((SELECT n.nspowner FROM pg_namespace n WHERE n.nspname = 'pgrules'), 'USAGE')) THEN
      RAISE EXCEPTION USING ERRCODE = '42501',
        MESSAGE = 'permission denied to truncate pgrules.rule: only members of pgrules_admin may remove every rule at once',
        HINT = 'Drop rules one by one with pgrules.drop_rule(name).';
    END IF;
    RETURN NULL;
  END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    PERFORM pgrules._authorize(OLD.table_schema, OLD.table_name, OLD.name, CASE TG_OP WHEN 'DELETE' THEN 'drop' ELSE 'change' END);
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    PERFORM pgrules._authorize(NEW.table_schema, NEW.table_name, NEW.name, 'define');
    PERFORM pgrules._authorize_source(NEW);
    RETURN NEW;
  END IF;
  RETURN OLD;
END $$;

-- _save stores a rule, replacing the one of the same name (which keeps its
-- place in the definition order). named tells whether the caller gave the
-- name: a derivation's default name replaces only a rule that derives the
-- same column, never one of another schema's table of the same name.
CREATE OR REPLACE FUNCTION pgrules._save(r pgrules.rule, named boolean) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  other pgrules.rule;
BEGIN
  IF r.kind IN ('sum', 'count', 'min', 'max', 'formula', 'copy') THEN
    SELECT * INTO other FROM pgrules.rule o
    WHERE o.table_schema = r.table_schema AND o.table_name = r.table_name AND o.target_column = r.target_column
      AND o.kind IN ('sum', 'count', 'min', 'max', 'formula', 'copy') AND o.name <> r.name;
    IF FOUND THEN
      RAISE EXCEPTION USING ERRCODE = '42P17', SCHEMA = r.table_schema, TABLE = r.table_name, COLUMN = r.target_column,
        MESSAGE = format('rule "%s": column %s.%s.%s is already derived by rule "%s" (%s)',
                         r.name, r.table_schema, r.table_name, r.target_column, other.name, other.kind),
        HINT = format('A column has at most one derivation: drop the other first, SELECT pgrules.drop_rule(%L).', other.name);
    END IF;
    IF NOT named THEN
      SELECT * INTO other FROM pgrules.rule o
      WHERE o.name = r.name
        AND (o.table_schema, o.table_name, o.target_column) IS DISTINCT FROM (r.table_schema, r.table_name, r.target_column);
      IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '42710',
          MESSAGE = format('rule "%s" already exists, a %s of %s.%s%s', r.name, other.kind, other.table_schema, other.table_name,
                           coalesce('.' || other.target_column, '')),
          HINT = format('Give this derivation of %s.%s.%s a name of its own: name => ''...''.', r.table_schema, r.table_name, r.target_column);
      END IF;
    END IF;
  END IF;
  PERFORM pgrules._authorize(r.table_schema, r.table_name, r.name, 'define');
  PERFORM pgrules._authorize_source(r);
  SELECT * INTO other FROM pgrules.rule o WHERE o.name = r.name;
  IF FOUND THEN
    PERFORM pgrules._authorize(other.table_schema, other.table_name, other.name, 'replace');
  END IF;
  INSERT INTO pgrules.rule (name, table_schema, table_name, kind, target_column, expression, source_schema, source_table,
                            source_column, filter, via, message, timing, verbs)
  VALUES (r.name, r.table_schema, r.table_name, r.kind, r.target_column, r.expression, r.source_schema, r.source_table,
          r.source_column, r.filter, r.via, r.message, r.timing, r.verbs)
  ON CONFLICT (name) DO UPDATE SET
    table_schema = excluded.table_schema, table_name = excluded.table_name, kind = excluded.kind,
    target_column = excluded.target_column, expression = excluded.expression, source_schema = excluded.source_schema,
    source_table = excluded.source_table, source_column = excluded.source_column, filter = excluded.filter,
    via = excluded.via, message = excluded.message, timing = excluded.timing, verbs = excluded.verbs,
    enabled = true, txid = pg_current_xact_id(), defined_at = now(), defined_by = current_user;
  RETURN r.name;
END $$;

-- _kind is how the rules see the values of a table's column, as package
-- catalog decides (KindOf): a domain as its base type, an enum as text,
-- a type the rules pass around as text as 'other:' and its oid.
CREATE OR REPLACE FUNCTION pgrules._kind(sch text, rel text, col text, OUT kind text, OUT shown text, OUT scale integer)
LANGUAGE sql STABLE AS $$
  SELECT CASE WHEN t.typtype = 'e' THEN 'text'
              ELSE CASE b.oid WHEN 20 THEN 'int' WHEN 21 THEN 'int' WHEN 23 THEN 'int' WHEN 26 THEN 'int'
                              WHEN 1700 THEN 'decimal' WHEN 700 THEN 'float' WHEN 701 THEN 'float'
                              WHEN 25 THEN 'text' WHEN 1043 THEN 'text' WHEN 1042 THEN 'text' WHEN 19 THEN 'text' WHEN 2950 THEN 'text'
                              WHEN 16 THEN 'bool' WHEN 1082 THEN 'time' WHEN 1114 THEN 'time' WHEN 1184 THEN 'time'
                              WHEN 114 THEN 'json' WHEN 3802 THEN 'json' ELSE 'other:' || b.oid END END,
         format_type(a.atttypid, a.atttypmod),
         -- The scale of a numeric(p,s) column or domain, as pgrules._tables
         -- reads it; NULL when the column keeps every decimal.
         CASE WHEN b.oid = 1700 AND (CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END) >= 4
              THEN ((((CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END) - 4) & 2047) # 1024) - 1024 END
  FROM pg_attribute a
  JOIN pg_type t ON t.oid = a.atttypid
  JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
  WHERE a.attrelid = format('%I.%I', sch, rel)::regclass AND a.attname = col
$$;

-- _check_types refuses a sum, count, min, max or copy whose target cannot
-- hold its value without loss (rules-api.md §8), before anything is
-- stored, so that a direct connection is refused as the proxy's compiler
-- refuses (holds in rules/check.go): the same kind of value, or integers
-- into a numeric or float column.
CREATE OR REPLACE FUNCTION pgrules._check_types(r pgrules.rule) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
  dst record;
  src record;
  what text;
BEGIN
  SELECT * INTO dst FROM pgrules._kind(r.table_schema, r.table_name, r.target_column);
  IF r.kind = 'count' THEN
    IF dst.kind NOT IN ('int', 'decimal', 'float') THEN
      RAISE EXCEPTION USING ERRCODE = '42804', SCHEMA = r.table_schema, TABLE = r.table_name, COLUMN = r.target_column,
        MESSAGE = format('rule "%s": a count cannot be stored in %s (%s)', r.name, r.target_column, dst.shown);
    END IF;
    RETURN;
  END IF;
  SELECT * INTO src FROM pgrules._kind(r.source_schema, r.source_table, r.source_column);
  IF r.kind = 'sum' AND src.kind NOT IN ('int', 'decimal', 'float')
     OR r.kind IN ('min', 'max') AND src.kind NOT IN ('int', 'decimal', 'float', 'text', 'time') THEN
    RAISE EXCEPTION USING ERRCODE = '42804', SCHEMA = r.table_schema, TABLE = r.table_name, COLUMN = r.target_column,
      MESSAGE = format('rule "%s": %s of column %s.%s (%s) is not possible', r.name, r.kind, r.source_table, r.source_column, src.shown);
  END IF;
  IF (src.kind = dst.kind OR src.kind = 'int' AND dst.kind IN ('decimal', 'float'))
     -- A sum into a numeric target with fewer decimals than its source
     -- would round each adjustment on its own, and drift from the rounded
     -- total (a copy, min or max stores one value, rounded once).
     AND NOT (r.kind = 'sum' AND dst.kind = 'decimal' AND dst.scale IS NOT NULL
              AND (src.kind = 'decimal' AND (src.scale IS NULL OR src.scale > dst.scale) OR src.kind = 'int' AND dst.scale < 0)) THEN
    RETURN;
  END IF;
  what := CASE r.kind WHEN 'copy' THEN format('column %s.%s (%s) cannot be copied into', r.source_table, r.source_column, src.shown)
                      ELSE format('the %s of %s.%s (%s) cannot be stored in', r.kind, r.source_table, r.source_column, src.shown) END;
  RAISE EXCEPTION USING ERRCODE = '42804', SCHEMA = r.table_schema, TABLE = r.table_name, COLUMN = r.target_column,
    MESSAGE = format('rule "%s": %s %s (%s) without loss', r.name, what, r.target_column, dst.shown),
    HINT = 'The target must hold the value as it is: of the same type, or a numeric column for integers; a sum needs at least the decimals of its source.';
END $$;

-- _aggregate defines sum, count, min and max.
CREATE OR REPLACE FUNCTION pgrules._aggregate(kind text, target text, "of" text, filter text, via text, name text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  r pgrules.rule;
BEGIN
  PERFORM pgrules._lock();
  r.name := coalesce(pgrules._given_name(name), pgrules._target_name(target));
  r.kind := kind;
  SELECT c.sch, c.rel, c.col INTO r.table_schema, r.table_name, r.target_column FROM pgrules._column(target, 'target', r.name) c;
  IF kind = 'count' THEN
    SELECT t.sch, t.rel INTO r.source_schema, r.source_table FROM pgrules._table("of", 'of', r.name) t;
  ELSE
    SELECT c.sch, c.rel, c.col INTO r.source_schema, r.source_table, r.source_column FROM pgrules._column("of", 'of', r.name) c;
  END IF;
  r.filter := nullif(btrim(filter), '');
  r.via := nullif(btrim(via), '');
  PERFORM pgrules._check_types(r);
  RETURN pgrules._save(r, name IS NOT NULL);
END $$;

CREATE OR REPLACE FUNCTION pgrules.sum(target text, "of" text, filter text DEFAULT NULL, via text DEFAULT NULL, name text DEFAULT NULL)
RETURNS text LANGUAGE sql AS $$ SELECT pgrules._aggregate('sum', target, "of", filter, via, name) $$;
COMMENT ON FUNCTION pgrules.sum IS
  'target (''table.column'') = sum of the child column "of" (''child.column'') over the child rows whose filter is true; 0 when there are none. Returns the rule''s name.';

CREATE OR REPLACE FUNCTION pgrules.count(target text, "of" text, filter text DEFAULT NULL, via text DEFAULT NULL, name text DEFAULT NULL)
RETURNS text LANGUAGE sql AS $$ SELECT pgrules._aggregate('count', target, "of", filter, via, name) $$;
COMMENT ON FUNCTION pgrules.count IS
  'target (''table.column'') = number of child rows ("of" = ''child'') whose filter is true. Returns the rule''s name.';

CREATE OR REPLACE FUNCTION pgrules.min(target text, "of" text, filter text DEFAULT NULL, via text DEFAULT NULL, name text DEFAULT NULL)
RETURNS text LANGUAGE sql AS $$ SELECT pgrules._aggregate('min', target, "of", filter, via, name) $$;
COMMENT ON FUNCTION pgrules.min IS
  'target (''table.column'') = smallest non-NULL value of the child column "of" (''child.column'') whose row''s filter is true; NULL when none. Returns the rule''s name.';

CREATE OR REPLACE FUNCTION pgrules.max(target text, "of" text, filter text DEFAULT NULL, via text DEFAULT NULL, name text DEFAULT NULL)
RETURNS text LANGUAGE sql AS $$ SELECT pgrules._aggregate('max', target, "of", filter, via, name) $$;
COMMENT ON FUNCTION pgrules.max IS
  'target (''table.column'') = largest non-NULL value of the child column "of" (''child.column'') whose row''s filter is true; NULL when none. Returns the rule''s name.';

CREATE OR REPLACE FUNCTION pgrules.formula(target text, expression text, name text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  r pgrules.rule;
BEGIN
  PERFORM pgrules._lock();
  r.name := coalesce(pgrules._given_name(name), pgrules._target_name(target));
  r.kind := 'formula';
  SELECT c.sch, c.rel, c.col INTO r.table_schema, r.table_name, r.target_column FROM pgrules._column(target, 'target', r.name) c;
  PERFORM pgrules._nonempty(expression, 'the expression', r.name,
    'The expression computes the column from its row, e.g. ''row.quantity * row.unit_price''.');
  r.expression := expression;
  RETURN pgrules._save(r, name IS NOT NULL);
END $$;
COMMENT ON FUNCTION pgrules.formula IS
  'target (''table.column'') = expression, evaluated on the row; it may read parent columns (row.customer.discount). Returns the rule''s name.';

CREATE OR REPLACE FUNCTION pgrules.copy(target text, source text, via text DEFAULT NULL, name text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  r pgrules.rule;
BEGIN
  PERFORM pgrules._lock();
  r.name := coalesce(pgrules._given_name(name), pgrules._target_name(target));
  r.kind := 'copy';
  SELECT c.sch, c.rel, c.col INTO r.table_schema, r.table_name, r.target_column FROM pgrules._column(target, 'target', r.name) c;
  SELECT c.sch, c.rel, c.col INTO r.source_schema, r.source_table, r.source_column FROM pgrules._column(source, 'source', r.name) c;
  r.via := nullif(btrim(via), '');
  PERFORM pgrules._check_types(r);
  RETURN pgrules._save(r, name IS NOT NULL);
END $$;
COMMENT ON FUNCTION pgrules.copy IS
  'target (''table.column'') = the parent column source (''parent.column''), taken on insert and when the foreign key changes, never propagated later. Returns the rule''s name.';

-- _check defines constraint and commit_constraint.
CREATE OR REPLACE FUNCTION pgrules._check(kind text, tbl text, condition text, message text, name text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  r pgrules.rule;
BEGIN
  PERFORM pgrules._lock();
  r.name := coalesce(pgrules._given_name(name), pgrules._default_name(tbl, kind));
  r.kind := kind;
  SELECT t.sch, t.rel INTO r.table_schema, r.table_name FROM pgrules._table(tbl, 'table', r.name) t;
  PERFORM pgrules._nonempty(condition, 'the condition', r.name,
    'The condition is a boolean expression on the row, e.g. ''row.balance <= row.credit_limit''.');
  PERFORM pgrules._nonempty(message, 'the message', r.name,
    'The message is the error''s text; {...} holds an expression, e.g. ''balance {row.balance} exceeds {row.credit_limit}''.');
  r.expression := condition;
  r.message := message;
  RETURN pgrules._save(r, name IS NOT NULL);
END $$;

CREATE OR REPLACE FUNCTION pgrules.constraint("table" text, condition text, message text, name text DEFAULT NULL) RETURNS text
LANGUAGE sql AS $$ SELECT pgrules._check('constraint', "table", condition, message, name) $$;
COMMENT ON FUNCTION pgrules.constraint IS
  'condition must be true after the row''s logic, on every insert and update of the row; else the statement fails with 23514 and message. Returns the rule''s name.';

CREATE OR REPLACE FUNCTION pgrules.commit_constraint("table" text, condition text, message text, name text DEFAULT NULL) RETURNS text
LANGUAGE sql AS $$ SELECT pgrules._check('commit_constraint', "table", condition, message, name) $$;
COMMENT ON FUNCTION pgrules.commit_constraint IS
  'condition must be true at commit for every row of the table touched in the transaction and not deleted; else the commit fails. Returns the rule''s name.';

CREATE OR REPLACE FUNCTION pgrules.event("table" text, timing text, action text, verbs text[] DEFAULT '{insert,update,delete}', name text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  r pgrules.rule;
BEGIN
  PERFORM pgrules._lock();
  r.name := coalesce(pgrules._given_name(name), pgrules._default_name("table", 'event'));
  r.kind := 'event';
  SELECT t.sch, t.rel INTO r.table_schema, r.table_name FROM pgrules._table("table", 'table', r.name) t;
  IF timing IS NULL OR timing NOT IN ('early', 'pre_insert', 'row', 'commit', 'after_commit', 'failure') THEN
    RAISE EXCEPTION USING ERRCODE = '42P17',
      MESSAGE = format('rule "%s": %s is not a timing', r.name, quote_nullable(timing)),
      HINT = 'timing is one of early, pre_insert, row, commit, after_commit, failure.';
  END IF;
  IF verbs IS NULL OR cardinality(verbs) = 0 OR NOT verbs <@ '{insert,update,delete}'::text[] THEN
    RAISE EXCEPTION USING ERRCODE = '42P17',
      MESSAGE = format('rule "%s": verbs must be one or more of insert, update and delete, not %s', r.name, coalesce(quote_literal(verbs), 'NULL')),
      HINT = 'verbs is a non-empty subset of ''{insert,update,delete}''.';
  END IF;
  PERFORM pgrules._nonempty(action, 'the action', r.name,
    'The action is an expression run at the timing, e.g. ''notify("orders", string(row.id))''.');
  r.timing := timing;
  r.expression := action;
  r.verbs := verbs;
  RETURN pgrules._save(r, name IS NOT NULL);
END $$;
COMMENT ON FUNCTION pgrules.event IS
  'Runs action at timing (early, pre_insert, row, commit, after_commit, failure) for the rows of the table written with one of verbs. Returns the rule''s name.';

-- _existing refuses a rule name that no rule has.
CREATE OR REPLACE FUNCTION pgrules._existing(rule_name text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pgrules.rule WHERE name = rule_name) THEN
    RAISE EXCEPTION USING ERRCODE = '42704', MESSAGE = format('rule %s does not exist', coalesce('"' || rule_name || '"', 'NULL')),
      HINT = 'SELECT name FROM pgrules.rules lists the rules.';
  END IF;
END $$;

CREATE OR REPLACE FUNCTION pgrules.drop_rule(name text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pgrules._lock();
  PERFORM pgrules._existing(name);
  PERFORM pgrules._authorize(r.table_schema, r.table_name, r.name, 'drop') FROM pgrules.rule r WHERE r.name = drop_rule.name;
  DELETE FROM pgrules.rule r WHERE r.name = drop_rule.name;
  RETURN name;
END $$;
COMMENT ON FUNCTION pgrules.drop_rule IS 'Removes the rule. Returns its name.';

CREATE OR REPLACE FUNCTION pgrules._set_enabled(rule_name text, on_off boolean) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pgrules._lock();
  PERFORM pgrules._existing(rule_name);
  PERFORM pgrules._authorize(r.table_schema, r.table_name, r.name, CASE WHEN on_off THEN 'enable' ELSE 'disable' END)
  FROM pgrules.rule r WHERE r.name = rule_name;
  UPDATE pgrules.rule SET enabled = on_off, txid = pg_current_xact_id() WHERE name = rule_name;
  RETURN rule_name;
END $$;

CREATE OR REPLACE FUNCTION pgrules.disable_rule(name text) RETURNS text
LANGUAGE sql AS $$ SELECT pgrules._set_enabled(name, false) $$;
COMMENT ON FUNCTION pgrules.disable_rule IS 'Switches the rule off; it stays defined. Returns its name.';

CREATE OR REPLACE FUNCTION pgrules.enable_rule(name text) RETURNS text
LANGUAGE sql AS $$ SELECT pgrules._set_enabled(name, true) $$;
COMMENT ON FUNCTION pgrules.enable_rule IS 'Switches the rule back on. Returns its name.';

-- explain, verify and rebuild are computed by the proxy, which hands the
-- answer to the function in a transaction-local setting before the
-- statement runs. _proxy_setting reads it. A setting made local in an
-- earlier transaction reads '' afterwards, not NULL.
CREATE OR REPLACE FUNCTION pgrules._proxy_setting(setting text, fn text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
  doc jsonb := nullif(current_setting(setting, true), '')::jsonb;
BEGIN
  IF doc IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = format('pgrules.%s is answered by the pgrules proxy', fn),
      HINT = format('Connect through the pgrules proxy, or run: pgrules %s --upstream URL %s', fn,
                    CASE fn WHEN 'explain' THEN '<table>' ELSE '[table]' END);
  END IF;
  RETURN doc;
END $$;

-- _text_array is a JSON array of strings as text[]; {} for anything else
-- (a Go nil slice arrives as null).
CREATE OR REPLACE FUNCTION pgrules._text_array(j jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN jsonb_typeof(j) = 'array' THEN ARRAY(SELECT jsonb_array_elements_text(j)) ELSE '{}' END
$$;

CREATE OR REPLACE FUNCTION pgrules.explain(tbl text)
RETURNS TABLE ("position" int, rule text, kind text, target text, reads text[], depends_on text[], used_by text[])
LANGUAGE plpgsql STABLE AS $$
DECLARE
  doc jsonb := pgrules._proxy_setting('pgrules.explain', 'explain');
  entries jsonb;
BEGIN
  SELECT doc -> (t.sch || '.' || t.rel) INTO entries FROM pgrules._table(tbl, 'the table', NULL) t;
  IF jsonb_typeof(entries) IS DISTINCT FROM 'array' THEN
    RETURN;  -- a table without rules
  END IF;
  RETURN QUERY
    SELECT (e ->> 'position')::int, e ->> 'rule', e ->> 'kind', e ->> 'target',
           pgrules._text_array(e -> 'reads'), pgrules._text_array(e -> 'depends_on'), pgrules._text_array(e -> 'used_by')
    FROM jsonb_array_elements(entries) e
    ORDER BY 1;
END $$;
COMMENT ON FUNCTION pgrules.explain IS
  'The rules of a table in the order they run, what each reads, what it depends on and what uses it. Answered by the pgrules proxy (or: pgrules explain --upstream URL <table>).';

CREATE OR REPLACE FUNCTION pgrules.verify(tbl text DEFAULT NULL)
RETURNS TABLE (rule text, table_name text, key text, stored text, computed text)
LANGUAGE sql STABLE AS $$
  SELECT d ->> 'rule', d ->> 'table', d ->> 'key', d ->> 'stored', d ->> 'computed'
  FROM jsonb_array_elements(pgrules._proxy_setting('pgrules.verify', 'verify')) d
$$;
COMMENT ON FUNCTION pgrules.verify IS
  'The rows whose derived values differ from their definitions recomputed from scratch (of one table, or all). Answered by the pgrules proxy.';

CREATE OR REPLACE FUNCTION pgrules.rebuild(tbl text DEFAULT NULL)
RETURNS TABLE (rule text, rows_corrected int)
LANGUAGE sql VOLATILE AS $$
  SELECT d ->> 'rule', (d ->> 'rows')::int
  FROM jsonb_array_elements(pgrules._proxy_setting('pgrules.rebuild', 'rebuild')) d
$$;
COMMENT ON FUNCTION pgrules.rebuild IS
  'Sets every derived column (of one table, or all) to its definition, in dependency order. Answered by the pgrules proxy.';

-- _may_list: pgrules.rules shows a role the rules of the tables it may
-- read or owns (rules-api.md §11); those of a table that is gone, to whoever
-- may author them.
CREATE OR REPLACE FUNCTION pgrules._may_list(sch text, rel text) RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT coalesce((SELECT has_table_privilege(c.oid, 'SELECT') FROM pg_class c
                   WHERE c.oid = to_regclass(format('%I.%I', sch, rel))), false)
      OR pgrules._may_author(sch, rel)
$$;

CREATE OR REPLACE VIEW pgrules.rules AS
  SELECT name, table_schema || '.' || table_name AS table_name, kind,
         table_name || '.' || target_column AS target,
         expression,
         source_schema || '.' || source_table || coalesce('.' || source_column, '') AS source,
         filter, via, message, timing, verbs, enabled, defined_at, defined_by
  FROM pgrules.rule
  WHERE pgrules._may_list(table_schema, table_name)
  ORDER BY seq;
COMMENT ON VIEW pgrules.rules IS 'The rules of the tables the current role may read (or owns), in definition order.';
GRANT SELECT ON pgrules.rules TO PUBLIC;

-- relationships is every foreign key between the database's tables, with
-- the name expressions use for the parent seen from the child, its
-- accessor (rules-api.md §3); package catalog reads accessors from here
-- and nowhere else. A foreign key that references a partitioned table is
-- stored once more for each partition, on the same child table with
-- conparentid pointing at the original: those copies are left out (the
-- partitions of a child table keep their own).
CREATE OR REPLACE VIEW pgrules.relationships AS
  WITH fk AS (
    SELECT c.oid, c.conname AS name, c.conrelid,
           cn.nspname AS child_schema, cc.relname AS child_table,
           ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(num, i)
                 JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num ORDER BY k.i) AS child_columns,
           pn.nspname AS parent_schema, pc.relname AS parent_table,
           ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(num, i)
                 JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.num ORDER BY k.i) AS parent_columns,
           c.confdeltype::text AS on_delete, c.confupdtype::text AS on_update
    FROM pg_constraint c
    JOIN pg_class cc ON cc.oid = c.conrelid
    JOIN pg_namespace cn ON cn.oid = cc.relnamespace
    JOIN pg_class pc ON pc.oid = c.confrelid
    JOIN pg_namespace pn ON pn.oid = pc.relnamespace
    WHERE c.contype = 'f'
      AND cc.relkind IN ('r', 'p') AND pc.relkind IN ('r', 'p')
      AND cc.relpersistence <> 't' AND pc.relpersistence <> 't'
      AND cn.nspname NOT IN ('pg_catalog', 'information_schema', 'pgrules')
      AND pn.nspname NOT IN ('pg_catalog', 'information_schema', 'pgrules')
      AND NOT EXISTS (SELECT 1 FROM pg_constraint o WHERE o.oid = c.conparentid AND o.conrelid = c.conrelid)
  ), stripped AS (
    -- stripped: the key's one column without its _id suffix, if it has one.
    SELECT fk.*, CASE WHEN cardinality(child_columns) = 1 AND child_columns[1] LIKE '_%\_id'
                      THEN left(child_columns[1], -3) END AS stripped
    FROM fk
  )
  SELECT name, child_schema, child_table, child_columns, parent_schema, parent_table, parent_columns,
         CASE WHEN stripped IS NOT NULL
               -- not a column of the child: row.<accessor> would be ambiguous
               AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = s.conrelid AND a.attname = s.stripped
                               AND a.attnum > 0 AND NOT a.attisdropped)
               -- and no other foreign key of the child strips to it
               AND NOT EXISTS (SELECT 1 FROM stripped o WHERE o.conrelid = s.conrelid AND o.stripped = s.stripped AND o.oid <> s.oid)
              THEN stripped ELSE name END AS accessor,
         on_delete, on_update
  FROM stripped s
  ORDER BY child_schema, child_table, name;
COMMENT ON VIEW pgrules.relationships IS
  'Every foreign key between tables, and its accessor: the name rule expressions use for the parent (row.<accessor>.<column>).';
-- What it shows, pg_constraint shows every role; the engine reads it in
-- the transaction of a role that defines rules.
GRANT SELECT ON pgrules.relationships TO PUBLIC;

-- Every change of pgrules.rule tells the proxies listening on the channel
-- "pgrules" to reload that database's rules; NOTIFY is delivered at commit
-- and dropped by a rollback.
CREATE OR REPLACE FUNCTION pgrules._notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('pgrules', current_database());
  RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS authorize ON pgrules.rule;
CREATE TRIGGER authorize BEFORE INSERT OR UPDATE OR DELETE ON pgrules.rule
  FOR EACH ROW EXECUTE FUNCTION pgrules._authorize_rule();
DROP TRIGGER IF EXISTS authorize_truncate ON pgrules.rule;
CREATE TRIGGER authorize_truncate BEFORE TRUNCATE ON pgrules.rule
  FOR EACH STATEMENT EXECUTE FUNCTION pgrules._authorize_rule();

DROP TRIGGER IF EXISTS notify ON pgrules.rule;
CREATE TRIGGER notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pgrules.rule
  FOR EACH STATEMENT EXECUTE FUNCTION pgrules._notify();

-- Schema changes made anywhere (through a proxy or not) reload the
-- proxies' catalogs at commit, through the event trigger of
-- ddl_trigger.sql. Event triggers need a superuser: Install creates it
-- only for one, and the proxies then see schema changes with the next rule
-- change or restart.
-- A table created or altered may be a new partition or inheritance child of
-- a table with rules, which gets its guard at once.
CREATE OR REPLACE FUNCTION pgrules._notify_ddl() RETURNS event_trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('pgrules', current_database());
  IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() c WHERE c.command_tag IN ('CREATE TABLE', 'ALTER TABLE'))
     AND to_regprocedure('pgrules._sync_guards()') IS NOT NULL THEN
    PERFORM pgrules._sync_guards();
  END IF;
END $$;

COMMENT ON TABLE pgrules.rule IS 'The rules, one row each; written by the pgrules definition functions, listed by pgrules.rules.';
COMMENT ON TABLE pgrules.schema_version IS 'The pgrules schema versions installed, one row per migration.';

-- retry re-queues an outbox entry that is dead (or done, to deliver it
-- again), and wakes the dispatchers. The entry is pinned to its rule as it
-- is now: an entry whose rule changed since it was recorded, or one
-- recorded before the outbox was the engine's alone, runs once an
-- administrator has retried it.
CREATE OR REPLACE FUNCTION pgrules.retry(id bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
  found_state text;
BEGIN
  SELECT o.state INTO found_state FROM pgrules.outbox o WHERE o.id = retry.id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('outbox entry %s does not exist', coalesce(id::text, 'NULL')),
      HINT = 'SELECT id, state, last_error FROM pgrules.outbox WHERE state = ''dead'' lists the dead entries.';
  END IF;
  IF found_state = 'pending' THEN
    UPDATE pgrules.outbox o SET next_at = now() WHERE o.id = retry.id;
  ELSE
    UPDATE pgrules.outbox o SET state = 'pending', attempts = 0, next_at = now(), delivered_at = NULL,
      rule_digest = pgrules._rule_digest(o.rule, o.timing)
    WHERE o.id = retry.id;
  END IF;
  PERFORM pg_notify('pgrules_outbox', '');
  RETURN found_state <> 'pending';
END $$;
COMMENT ON FUNCTION pgrules.retry IS
  'Re-queues the outbox entry (dead, or done to deliver it again) for delivery now, with its rule as it is now; true when it was not pending. Returns false for a pending entry, which is made due now.';

-- _rule_digest identifies the definition of an event of a timing; NULL
-- when there is no such event. An outbox entry holds the digest of its
-- rule when it was recorded, and is run only while the rule still has it
-- (migration 0005 computes the same digest for the entries it keeps).
CREATE OR REPLACE FUNCTION pgrules._rule_digest(rule_name text, timing text) RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT md5(concat_ws(E'\x1f', r.name, r.kind, r.table_schema, r.table_name, r.expression, r.timing, r.verbs::text))
  FROM pgrules.rule r
  WHERE r.name = rule_name AND r.kind = 'event' AND r.timing = _rule_digest.timing
$$;

-- _outbox_add records the outbox entries of after_commit events in the
-- committing client's transaction (rules-api.md §11: the outbox is written
-- only by the engine; no other role holds a privilege on it). It runs as
-- the schema's owner, and only as the engine's own statement: the text the
-- client session sent at the top level (current_query()) must be exactly
-- the engine's, behind a header with the guard key. No client expression
-- or function can call it then, and the entries' role is the caller's
-- current_user, which that text passes. Each entry must name an event of
-- its timing, whose digest pins the entry to the rule as it is now.
CREATE OR REPLACE FUNCTION pgrules._outbox_add(rules text[], timings text[], keys text[], kinds text[], targets text[],
  payloads text[], args text[], writer name) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  k text := (SELECT g.key FROM pgrules.guard_key g);
  bad text;
BEGIN
  IF k IS NULL OR current_query() IS DISTINCT FROM
     '/*pgrules ' || k || E' outbox */\n'
     || 'SELECT pgrules._outbox_add($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], current_user)' THEN
    RAISE EXCEPTION USING ERRCODE = '42501',
      MESSAGE = 'permission denied to record outbox entries: only pgrules records them, for the events of the writes it runs',
      HINT = 'Write the table through pgrules; its after_commit and failure events record their effects.';
  END IF;
  SELECT x.r INTO bad
  FROM unnest(rules, timings) AS x(r, t)
  WHERE pgrules._rule_digest(x.r, x.t) IS NULL
  LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = '55000',
      MESSAGE = format('rule "%s" is not an after_commit or failure event any more; its effects cannot be recorded', bad),
      HINT = 'The rule changed in this transaction: commit again.';
  END IF;
  INSERT INTO pgrules.outbox (rule, timing, key, kind, target, payload, args, role, rule_digest)
  SELECT x.r, x.t, x.k, x.kd, x.tg, x.p, x.a::text[], writer, pgrules._rule_digest(x.r, x.t)
  FROM unnest(rules, timings, keys, kinds, targets, payloads, args) WITH ORDINALITY AS x(r, t, k, kd, tg, p, a, o)
  ORDER BY x.o;
  PERFORM pg_notify('pgrules_outbox', '');
END $$;

-- _sandbox runs the statement of an sql outbox entry, with its text
-- parameters, with exactly the rights of current_user: the dispatcher
-- calls it after SET LOCAL ROLE to the entry's role. The statement runs
-- inside a SECURITY DEFINER function that role owns (made in the session's
-- temporary schema, one per role, kept for the role's next entries), and
-- PostgreSQL refuses SET ROLE, RESET ROLE, SET SESSION AUTHORIZATION and
-- set_config('role', ...) anywhere inside such a function, however deep:
-- nothing the statement runs (a DO block, a function, a trigger) can take
-- the session back to the dispatcher's role or on to another. With
-- parameters the statement is prepared, so that they are typed as the
-- server infers them, as for a client's statement; without, any statement
-- runs (a DO block too).
CREATE OR REPLACE FUNCTION pgrules._sandbox(q text, args text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  fn text := 'pg_temp.' || pg_catalog.quote_ident('pgrules_sandboxed_' || (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user));
BEGIN
  IF pg_catalog.to_regprocedure(fn || '(text, text[])') IS NULL THEN
    EXECUTE 'CREATE FUNCTION ' || fn || $create$(q text, args text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER AS $body$
BEGIN
  IF COALESCE(pg_catalog.cardinality(args), 0) = 0 THEN
    EXECUTE q;
    RETURN;
  END IF;
  IF EXISTS (SELECT FROM pg_catalog.pg_prepared_statements p WHERE p.name = 'pgrules_outbox_entry') THEN
    EXECUTE 'DEALLOCATE pgrules_outbox_entry';
  END IF;
  EXECUTE 'PREPARE pgrules_outbox_entry AS ' || q;
  -- quote_nullable makes literals that read the same whatever
  -- standard_conforming_strings is (E'' when there is a backslash).
  EXECUTE 'EXECUTE pgrules_outbox_entry(' ||
    (SELECT pg_catalog.string_agg(pg_catalog.quote_nullable(a), ', ' ORDER BY i)
     FROM pg_catalog.unnest(args) WITH ORDINALITY AS u(a, i)) || ')';
  EXECUTE 'DEALLOCATE pgrules_outbox_entry';
END $body$
$create$;
  END IF;
  EXECUTE 'SELECT ' || fn || '($1, $2)' USING q, args;
END $$;

-- _reset_temp empties the session's temporary schema, unless it holds only
-- _sandbox's functions, each owned by the role it is for: the dispatcher
-- runs it between entries, so that no entry finds what another role's
-- left there (a temporary table is found before the table of the same
-- name). Dropping and making the functions again for every entry would
-- cost a catalog change each time.
CREATE OR REPLACE FUNCTION pgrules._reset_temp() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT FROM pg_catalog.pg_depend d
             WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.refobjid = pg_catalog.pg_my_temp_schema()
               AND NOT EXISTS (SELECT FROM pg_catalog.pg_proc p
                               WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND p.oid = d.objid
                                 AND p.proname = 'pgrules_sandboxed_' || p.proowner)) THEN
    DISCARD TEMP;
  END IF;
END $$;

-- _still_as fails the transaction of an outbox entry that does not end as
-- the entry's role: the statements the engine runs for an entry (a write
-- of a table with rules) run under SET LOCAL ROLE, and what they call
-- could reset it.
CREATE OR REPLACE FUNCTION pgrules._still_as(writer name) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF current_user IS DISTINCT FROM writer THEN
    RAISE EXCEPTION USING ERRCODE = '42501',
      MESSAGE = format('the outbox entry of role %s changed its role to %s: rolled back', writer, current_user),
      HINT = 'An after_commit action runs with the rights of the role that wrote the row; it may not change its role.';
  END IF;
END $$;

-- The guard (rules-api.md §7). A table with rules carries pgrules_guard, a
-- BEFORE ... FOR EACH STATEMENT trigger on INSERT, UPDATE, DELETE and
-- TRUNCATE, so that a write the engine did not make fails instead of
-- skipping the rules, whatever its path: a function, a procedure, a DO
-- block, a trigger of another table, a view or a rule on a view, SQL-level
-- PREPARE/EXECUTE, COPY, MERGE, TRUNCATE, a direct connection.
--
-- How a write is recognised as the engine's: every statement the engine
-- sends begins with a header, on its first line,
--
--   /*pgrules <key> <table oid>:<version>[*] <table oid>:<version>[*] ... */
--
-- where key is pgrules.guard_key's secret and each version is what the
-- engine's catalog holds for a table with rules, followed by * when a
-- foreign key's ON DELETE or ON UPDATE action may change the table's rows.
-- current_query() is the text the client (here, the engine) sent at the
-- top level, whatever runs inside it, so a function or trigger that writes
-- cannot present a header of its own; and the proxy refuses a client's
-- text that begins with one.
-- The guard passes a statement when the header's key matches (its md5 is
-- the trigger's second argument), the header names the table with the
-- version of the trigger's first argument, and the write is the
-- statement's own (trigger depth 1), or an UPDATE or DELETE below it of a
-- table marked * (the foreign keys' actions, whose rows the engine has
-- dealt with before). A version that differs means that the engine wrote
-- with rules older than those the transaction sees: refused, "retry".
--
-- The limits, documented in docs/guard.md: a client who knows the key
-- (from pg_stat_activity, which shows a role the texts of its own
-- sessions, or from the server's log) can forge a header on a direct
-- connection; and inside an engine statement that carries the client's
-- own expressions, a function those expressions call could write the
-- tables the header names.
--
-- The third argument is, for a partition or inheritance child of a table
-- with rules, that table: the engine never writes a child by its own name
-- (statement-level triggers of the named table are the ones that fire),
-- so every write naming the child is refused.
CREATE OR REPLACE FUNCTION pgrules._guard() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  q text := current_query();
  h text;
  e text;
BEGIN
  IF TG_ARGV[2] = '' AND left(q, 10) = '/*pgrules ' AND md5(substr(q, 11, 32)) = TG_ARGV[1] THEN
    h := left(q, strpos(q, '*/'));
    e := ' ' || TG_RELID || ':' || TG_ARGV[0];
    IF strpos(h, e || '* ') > 0 AND (pg_trigger_depth() = 1 OR TG_OP IN ('UPDATE', 'DELETE'))
       OR strpos(h, e || ' ') > 0 AND pg_trigger_depth() = 1 THEN
      RETURN NULL;
    END IF;
  END IF;
  PERFORM pgrules._guard_refuse(TG_RELID, TG_OP, TG_ARGV[0], TG_ARGV[1], TG_ARGV[2], q, current_user);
  RETURN NULL;
END $$;

-- _guard_refuse is the guard's slow path: the administrator's override,
-- recorded in pgrules.unguarded, or the error that says why the write is
-- refused. It runs as the schema's owner, who alone may write
-- pgrules.unguarded; writer is the role that wrote (current_user there).
CREATE OR REPLACE FUNCTION pgrules._guard_refuse(relid oid, op text, version text, keyhash text, parent text, q text, writer name) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  sch text;
  rel text;
  shown text;
  header boolean := left(q, 10) = '/*pgrules ' AND md5(substr(q, 11, 32)) = keyhash;
BEGIN
  SELECT n.nspname, c.relname INTO sch, rel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = relid;
  shown := format('%I.%I', sch, rel);
  IF current_setting('pgrules.guard', true) = 'off' THEN
    IF to_regrole('pgrules_admin') IS NULL
       OR NOT pg_has_role(session_user, 'pgrules_admin', 'MEMBER') OR NOT pg_has_role(writer, 'pgrules_admin', 'MEMBER') THEN
      RAISE EXCEPTION USING ERRCODE = '42501', SCHEMA = sch, TABLE = rel,
        MESSAGE = format('permission denied to lift the guard of %s: pgrules.guard = off is allowed only to members of pgrules_admin', shown),
        HINT = 'RESET pgrules.guard, and write the table through pgrules.';
    END IF;
    INSERT INTO pgrules.unguarded (table_oid, table_name, operation, role) VALUES (relid, shown, op, writer);
    RETURN;
  END IF;
  IF parent <> '' THEN
    RAISE EXCEPTION USING ERRCODE = '55000', SCHEMA = sch, TABLE = rel,
      MESSAGE = format('%s on %s is refused: it is a partition or child table of %s, which has rules', op, shown, parent),
      HINT = format('Write %s through pgrules with INSERT, UPDATE or DELETE, which run its rules.', parent);
  END IF;
  IF header AND op <> 'TRUNCATE' AND pg_trigger_depth() = 1 THEN
    -- The engine's own statement, computed with other rules than the
    -- transaction sees: a proxy whose catalog lags, or rules changed
    -- earlier in this transaction where the proxy could not see it.
    RAISE EXCEPTION USING ERRCODE = '55000', SCHEMA = sch, TABLE = rel, CONSTRAINT = 'pgrules_guard_stale',
      MESSAGE = format('the rules of %s changed since pgrules loaded them; retry', shown),
      DETAIL = format('pgrules computed this write with other rules of %s than the transaction sees (version %s).', shown, version),
      HINT = 'pgrules reloads its rules: run the transaction again. Rules defined inside a function are not seen by pgrules in that transaction; define them with SELECT pgrules.... statements.';
  END IF;
  RAISE EXCEPTION USING ERRCODE = '55000', SCHEMA = sch, TABLE = rel,
    MESSAGE = format('%s on %s is refused: the table has rules, and this %s would not run them', op, shown,
                     CASE WHEN pg_trigger_depth() > 1 THEN 'write from a trigger'
                          WHEN op = 'TRUNCATE' THEN 'TRUNCATE'
                          ELSE 'statement' END),
    DETAIL = 'Only the statements pgrules sends for a client''s INSERT, UPDATE or DELETE may write it; a write from a function, procedure, DO block, trigger, view rule, PREPARE/EXECUTE, COPY, MERGE, TRUNCATE or a connection that does not go through pgrules is refused.',
    HINT = format('Write %s through pgrules with INSERT, UPDATE or DELETE statements.', shown);
END $$;

-- _guard_plan is the guard every table should have: a version for each
-- table whose writes run rules, and the table with rules of each of their
-- partitions and inheritance children. A table's writes run rules when it
-- is the table of an enabled rule; the child of an aggregate or the parent
-- of a copy; a parent that an expression of a rule reads through a foreign
-- key (its accessor appears in the expression: this over-reaches at
-- worst, and the proxy runs every table with a guard through the engine);
-- or a table whose deletes cascade to one of those. A table's version is
-- an md5 of the rules that make it so: it changes exactly when they do.
CREATE OR REPLACE FUNCTION pgrules._guard_plan(OUT relid oid, OUT version text, OUT parent text)
RETURNS SETOF record LANGUAGE sql STABLE AS $$
  WITH RECURSIVE r AS (
    SELECT r.name, to_regclass(format('%I.%I', r.table_schema, r.table_name))::oid AS tbl,
           CASE WHEN r.source_table IS NOT NULL THEN to_regclass(format('%I.%I', r.source_schema, r.source_table))::oid END AS src,
           concat_ws(' ', r.expression, r.message) AS own, coalesce(r.filter, '') AS filter,
           md5(concat_ws(E'\x1f', r.name, r.kind, r.table_schema, r.table_name, r.target_column, r.expression,
                         r.source_schema, r.source_table, r.source_column, r.filter, r.via, r.message, r.timing,
                         r.verbs::text)) AS digest
    FROM pgrules.rule r
    WHERE r.enabled
  ), rel AS (
    SELECT to_regclass(format('%I.%I', x.child_schema, x.child_table))::oid AS child,
           to_regclass(format('%I.%I', x.parent_schema, x.parent_table))::oid AS parent,
           '\m' || regexp_replace(x.accessor, '(\W)', '\\\1', 'g') || '\M' AS pattern, x.on_delete
    FROM pgrules.relationships x
  ), reads(rule, tbl, txt) AS (
      SELECT name, tbl, own FROM r WHERE tbl IS NOT NULL
    UNION
      SELECT name, src, filter FROM r WHERE src IS NOT NULL
    UNION
      SELECT reads.rule, rel.parent, reads.txt FROM reads JOIN rel ON rel.child = reads.tbl AND reads.txt ~ rel.pattern
  ), involved(rule, tbl) AS (
      SELECT rule, tbl FROM reads
    UNION
      SELECT i.rule, rel.parent FROM involved i JOIN rel ON rel.child = i.tbl AND rel.on_delete IN ('c', 'n', 'd')
  ), guarded AS (
    SELECT i.tbl AS relid, left(md5(string_agg(DISTINCT r.digest, ',' ORDER BY r.digest)), 16) AS version
    FROM involved i JOIN r ON r.name = i.rule
    GROUP BY i.tbl
  ), kids(relid, parent) AS (
      SELECT h.inhrelid, h.inhparent FROM pg_inherits h JOIN guarded g ON g.relid = h.inhparent
    UNION
      SELECT h.inhrelid, k.parent FROM kids k JOIN pg_inherits h ON h.inhparent = k.relid
  )
  SELECT relid, version, '' FROM guarded
  UNION ALL
  SELECT DISTINCT ON (k.relid) k.relid, '', k.parent::regclass::text
  FROM kids k WHERE k.relid NOT IN (SELECT g.relid FROM guarded g)
$$;

-- _sync_guards gives every table the guard _guard_plan says, and takes it
-- from the others; a trigger whose arguments are right is left alone, so
-- that defining a rule locks only the tables whose rules change. The
-- definition functions run it; it runs as the schema's owner, who can
-- read the guard key and, as a superuser or the tables' owner, create
-- their triggers.
CREATE OR REPLACE FUNCTION pgrules._sync_guards() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  keyhash text := (SELECT md5(k.key) FROM pgrules.guard_key k);
  g record;
BEGIN
  FOR g IN
    WITH want AS (SELECT p.relid, format('%s\000%s\000%s\000', p.version, keyhash, p.parent) AS args,
                         p.version, p.parent FROM pgrules._guard_plan() p),
    have AS (SELECT t.tgrelid AS relid, encode(t.tgargs, 'escape') AS args FROM pg_trigger t
             WHERE t.tgname = 'pgrules_guard' AND t.tgfoid = 'pgrules._guard()'::regprocedure)
    SELECT coalesce(w.relid, h.relid)::regclass AS tbl, w.relid IS NOT NULL AS wanted, w.version, w.parent
    FROM want w FULL JOIN have h ON h.relid = w.relid
    WHERE w.args IS DISTINCT FROM h.args
    ORDER BY 1
  LOOP
    BEGIN
      IF g.wanted THEN
        EXECUTE format('CREATE OR REPLACE TRIGGER pgrules_guard BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION pgrules._guard(%L, %L, %L)', g.tbl, g.version, keyhash, g.parent);
      ELSE
        EXECUTE format('DROP TRIGGER pgrules_guard ON %s', g.tbl);
      END IF;
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE EXCEPTION USING ERRCODE = '42501',
        MESSAGE = format('pgrules cannot %s the guard of %s: its role %s may not create triggers on it',
                         CASE WHEN g.wanted THEN 'install' ELSE 'remove' END, g.tbl, current_user),
        HINT = format('The role that installed pgrules (%s) needs to own the table, or: GRANT TRIGGER ON %s TO %I.', current_user, g.tbl, current_user);
    END;
  END LOOP;
END $$;

-- Rules take effect, and lose it, with their guards.
CREATE OR REPLACE FUNCTION pgrules._guard_rules() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pgrules._sync_guards();
  RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS guard ON pgrules.rule;
CREATE TRIGGER guard AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pgrules.rule
  FOR EACH STATEMENT EXECUTE FUNCTION pgrules._guard_rules();

-- pgrules_admin may lift the guard for a transaction (SET LOCAL
-- pgrules.guard = off). Roles belong to the whole server: the first install
-- that may create roles creates it.
DO $$
BEGIN
  IF to_regrole('pgrules_admin') IS NULL
     AND (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
    CREATE ROLE pgrules_admin NOLOGIN;
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
  NULL; -- another database's install made it meanwhile
END $$;

SELECT pgrules._sync_guards();

-- _rebuilt forgets the unguarded writes of a table that pgrules.rebuild()
-- has put right (of every table when tbl is ''), of those the caller may
-- update.
CREATE OR REPLACE FUNCTION pgrules._rebuilt(tbl text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  DELETE FROM pgrules.unguarded u
  WHERE (tbl = '' OR u.table_oid = to_regclass(tbl)::oid)
    AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = u.table_oid)
    AND has_table_privilege(session_user, u.table_oid, 'UPDATE')
$$;
