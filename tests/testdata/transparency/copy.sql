CREATE TABLE c (id int, name text, amount numeric, at date);
COPY c FROM STDIN;
1	alpha	1.10	2026-01-01
2	beta	\N	2026-01-02
3	gamma with	tab	2026-01-03
\.
COPY c FROM STDIN WITH (FORMAT csv, HEADER true);
id,name,amount,at
4,"quoted, comma",4.40,2026-01-04
\.
COPY c TO STDOUT WITH (FORMAT csv, HEADER true);
COPY (SELECT id, name FROM c ORDER BY id DESC) TO STDOUT;
COPY c FROM STDIN;
bad	row
\.
SELECT count(*) FROM c;
