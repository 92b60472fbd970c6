-- COPY in psql: FROM STDIN with inline data in text and CSV, errors in the
-- data (reported with the line), COPY TO STDOUT in every format option,
-- COPY inside a transaction that rolls back.
-- expect-sqlstate: 22P02 22P04 23505 42P01 0A000 22012
-- expect-tag: COPY 4
-- expect-tag: COPY 2

SET TimeZone = 'UTC';
SET DateStyle = 'ISO';

CREATE TABLE c (id int PRIMARY KEY, name text, amount numeric, at date, tags text[], doc jsonb);

COPY c FROM STDIN;
1	alpha	1.10	2026-01-01	{a,b}	{"k": 1}
2	beta	\N	2026-01-02	\N	\N
3	tab\there, back\\slash	-0.5	2026-01-03	{}	[]
4	ünïcödé ✓	1e3	infinity	{"x y",NULL}	"s"
\.

COPY c (id, name) FROM STDIN WITH (FORMAT csv, HEADER true, NULL 'NULL');
id,name
5,"quoted, ""comma"""
6,NULL
\.

COPY c TO STDOUT;

COPY c TO STDOUT WITH (FORMAT csv, HEADER true, FORCE_QUOTE (name), DELIMITER ';', NULL '<null>');

COPY (SELECT id, name, amount * 2 AS double FROM c WHERE amount IS NOT NULL ORDER BY id DESC) TO STDOUT WITH (FORMAT text, NULL '-');

COPY c (id, tags) TO STDOUT WITH (FORMAT csv, QUOTE '''', ESCAPE '\', FORCE_QUOTE *);

COPY c FROM STDIN;
7	gamma	not a number	2026-01-07	{}	{}
\.

COPY c FROM STDIN;
8	short
\.

COPY c (id, name) FROM STDIN;
1	duplicate key
\.

COPY nowhere TO STDOUT;

COPY (SELECT g, 10 / (g - 4) FROM generate_series(1, 6) AS g) TO STDOUT;

COPY c TO STDOUT WITH (FORMAT binary, HEADER true);

BEGIN;
COPY c (id, name) FROM STDIN;
10	in transaction
11	also
\.
SELECT count(*) FROM c;
ROLLBACK;

SELECT count(*) FROM c;

COPY (SELECT g, md5(g::text) FROM generate_series(1, 2000) AS g) TO STDOUT WITH (FORMAT csv);
