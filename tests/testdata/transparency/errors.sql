-- Errors of every kind, each in its own paragraph so that batch and
-- pipeline modes reach every one. Every field PostgreSQL sends (position,
-- context, schema/table/column/constraint names, internal query) must
-- arrive unchanged.
-- expect-sqlstate: 42601 42P01 42703 42883 42702 42804 42P07 42723 42704
-- expect-sqlstate: 23505 23514 23502 23503 22001 22003 22008 22012 22023 22025
-- expect-sqlstate: 22P02 2201E 2201F 54000 0A000 57014 40P01
-- expect-sqlstate: P0001 P0042 XX123 01000 00000
-- (The XML error is not expected by code: it is 2200M only on servers
-- built with libxml.)

SET TimeZone = 'UTC';

SELEC 1;

SELECT 1 +;

SELECT 'unterminated;
';

SELECT * FROM no_such_table;

SELECT no_such_column FROM (VALUES (1)) AS v(a);

SELECT no_such_function(1, 'x');

CREATE TABLE parent (id int PRIMARY KEY, v int CHECK (v > 0), nn text NOT NULL, label varchar(3));
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id));
INSERT INTO parent VALUES (1, 1, 'a', 'abc');

CREATE TABLE parent (id int);

SELECT id FROM parent, child;

INSERT INTO parent VALUES (1, 1, 'dup', NULL);

INSERT INTO parent VALUES (2, -1, 'check', NULL);

INSERT INTO parent VALUES (3, 1, NULL, NULL);

INSERT INTO parent VALUES (4, 1, 'long', 'abcd');

INSERT INTO child VALUES (1, 99);

INSERT INTO child VALUES (2, 1);

DELETE FROM parent WHERE id = 1;

UPDATE parent SET v = 'many'::text WHERE id = 1;

SELECT 1 / 0;

SELECT 1.0 / 0.0;

SELECT 'abc'::int;

SELECT '2026-02-30'::date;

SELECT 32768::int2;

SELECT 2147483647 + 1;

SELECT sqrt(-1::float8);

SELECT ln(0::numeric);

SELECT '{"a": }'::jsonb;

SELECT '\xZZ'::bytea;

SELECT E'\u00e9\uZZZZ';

SELECT array_fill(1, ARRAY[-1]);

SELECT coalesce(1, 'x');

SELECT ARRAY[1, 2] = 1;

SELECT '1 year'::interval + 'infinity'::numeric;

DO $$ BEGIN RAISE EXCEPTION 'custom failure %', 42 USING ERRCODE = 'P0042', HINT = 'a hint', DETAIL = 'some detail'; END $$;

DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'XX123', MESSAGE = 'every field', DETAIL = 'd', HINT = 'h', COLUMN = 'c', CONSTRAINT = 'k', DATATYPE = 't', TABLE = 'tb', SCHEMA = 's'; END $$;

DO $$ BEGIN RAISE 'plain raise with quote '' and unicode ✓'; END $$;

DO $$ BEGIN RAISE NOTICE 'a notice with %', 42; RAISE WARNING 'a warning' USING DETAIL = 'warn detail'; RAISE INFO 'info'; RAISE LOG 'log, not sent'; END $$;

DO $$ BEGIN RAISE deadlock_detected; END $$;

DO $$ DECLARE x int; BEGIN EXECUTE 'SELECT 1 FROM nowhere WHERE' INTO x; END $$;

CREATE FUNCTION fails(n int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  IF n = 0 THEN
    RETURN 1 / n;
  END IF;
  RETURN fails(n - 1);
END $$;

SELECT fails(3);

SELECT fails(n) FROM generate_series(0, 1) AS n;

SET statement_timeout = '100ms';
SELECT pg_sleep(2);

RESET statement_timeout;

SELECT set_config('no.such.setting', 'x', false), current_setting('no.other.setting');

SET no_such_parameter = 1;

SET work_mem = 'lots';

SELECT pg_notify('c', repeat('x', 8000));

VACUUM (FULL, ANALYZE) nowhere;

CREATE FUNCTION dup(int) RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION dup(int) RETURNS int LANGUAGE sql AS 'SELECT 2';

SELECT dup2(1) FROM (SELECT 1) AS s(dup2);

SELECT xmlparse(document '<a>');

SELECT to_number('12', 'RN'), to_char(1e300::float8, 'FM9');

SELECT * FROM generate_series(1, 3) AS g WHERE g / (g - 2) > 0;

SELECT count(*) FROM parent;
