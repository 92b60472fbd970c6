-- Several statements in one simple Query message (psql's \;): each result
-- is shown, an error ends the message and rolls back its implicit
-- transaction, and transaction commands inside the message take effect.
-- Also psql's own extended-protocol use (\gdesc), its cursor-based
-- fetching (FETCH_COUNT) and \gset.
-- expect-sqlstate: 22012 42P01 25P02 42601
-- expect-tag: INSERT 0 1

CREATE TABLE m (id int PRIMARY KEY, v text);

SELECT 1 AS one \; SELECT 'two' AS two, 2.5 AS n \; SELECT NULL AS three;

INSERT INTO m VALUES (1, 'a') \; INSERT INTO m VALUES (2, 'b') \; SELECT count(*) FROM m;

INSERT INTO m VALUES (3, 'rolled back') \; SELECT 1 / 0 \; INSERT INTO m VALUES (4, 'never');

SELECT id, v FROM m ORDER BY id;

BEGIN \; INSERT INTO m VALUES (5, 'in block') \; COMMIT \; SELECT count(*) FROM m;

BEGIN \; INSERT INTO m VALUES (6, 'left open');
SELECT count(*) FROM m;
INSERT INTO m VALUES (6, 'duplicate') \; SELECT 'skipped';
SELECT 'aborted block' \; SELECT 'still aborted';
ROLLBACK \; SELECT count(*) FROM m;

CREATE TABLE m2 (k int) \; INSERT INTO m2 SELECT generate_series(1, 3) \; UPDATE m2 SET k = k * 10 \; DELETE FROM m2 WHERE k = 20 \; SELECT * FROM m2 ORDER BY k;

SELECT * FROM m2 \; SELECT * FROM no_such_relation \; SELECT 'unreached';

SET TimeZone = 'UTC' \; SELECT '2026-07-01 12:00'::timestamptz \; SET TimeZone = 'Australia/Lord_Howe' \; SELECT '2026-07-01 12:00'::timestamptz;

SELECT 1 \; SELEC 2 \; SELECT 3;

DO $$ BEGIN RAISE NOTICE 'first'; END $$ \; DO $$ BEGIN RAISE NOTICE 'second'; END $$ \; SELECT 'after notices';

SELECT id, v, length(v) AS len FROM m WHERE id > $$0$$::int ORDER BY id \gdesc

SELECT 'x' || '; not a separator' AS semi, $tag$ a $$ b ; c $tag$ AS dollar, E'\'' AS esc, "col" FROM (SELECT 1 AS "col") AS q;

SELECT count(*) AS n, max(id) AS top FROM m \gset
\echo n is :n, top is :top

\set FETCH_COUNT 3
SELECT g, repeat('y', g) AS ys FROM generate_series(1, 8) AS g;
SELECT g / (5 - g) FROM generate_series(1, 8) AS g;
\unset FETCH_COUNT

\x on
SELECT id, v FROM m ORDER BY id LIMIT 2;
\x off

\pset format unaligned
SELECT id, v FROM m ORDER BY id;
\pset format aligned
