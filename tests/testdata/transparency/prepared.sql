-- SQL-level prepared statements: PREPARE with and without parameter types,
-- EXECUTE, plan invalidation by DDL, argument errors, DEALLOCATE (ALL),
-- and the pg_prepared_statements view.
-- expect-sqlstate: 26000 42P05 42601 22P02 0A000 23505
-- expect-tag: PREPARE
-- expect-tag: DEALLOCATE
-- expect-tag: DEALLOCATE ALL

CREATE TABLE pr (id int PRIMARY KEY, name text, amount numeric(10,2));
INSERT INTO pr SELECT g, 'name ' || g, g * 1.5 FROM generate_series(1, 5) AS g;

PREPARE get_one(int) AS SELECT * FROM pr WHERE id = $1;
PREPARE ins (int, text, numeric) AS INSERT INTO pr VALUES ($1, $2, $3) RETURNING *;
PREPARE untyped AS SELECT $1::text || '!' AS shout, $2 + 1 AS next;
PREPARE star AS SELECT * FROM pr ORDER BY id LIMIT 2;

EXECUTE get_one(3);
EXECUTE get_one('4');
EXECUTE ins(6, 'six', 9.99);
EXECUTE ins(7, NULL, NULL);
EXECUTE untyped('hey', 41);
EXECUTE star;
SELECT name, statement, parameter_types, from_sql FROM pg_prepared_statements ORDER BY name;

EXECUTE get_one('x');

EXECUTE get_one(1, 2);

EXECUTE ins(6, 'dup', 0);

PREPARE get_one AS SELECT 1;

EXECUTE nope;

PREPARE bad AS SELEC 1;

PREPARE wrong(int) AS SELECT $2;

ALTER TABLE pr ADD COLUMN extra text DEFAULT 'x';

EXECUTE get_one(1);

EXECUTE star;

ALTER TABLE pr ALTER COLUMN amount TYPE text;

EXECUTE ins(8, 'eight', 8);

DEALLOCATE get_one;

EXECUTE get_one(1);

DEALLOCATE PREPARE ins;
DEALLOCATE ALL;
SELECT count(*) FROM pg_prepared_statements;

PREPARE fn_call(int[]) AS SELECT array_length($1, 1), $1[1], cardinality($1);
EXECUTE fn_call(ARRAY[5, 6, 7]);
EXECUTE fn_call('{}');
DEALLOCATE fn_call;
