-- Data manipulation: every command tag shape, RETURNING, upserts, MERGE,
-- CTEs, cursors and EXPLAIN.
-- expect-tag: INSERT 0 3
-- expect-tag: UPDATE 2
-- expect-tag: DELETE 1
-- expect-tag: MERGE 3
-- expect-tag: SELECT 3
-- expect-tag: MOVE 1
-- expect-tag: UPDATE 0
-- expect-tag: TRUNCATE TABLE

SET TimeZone = 'UTC';

CREATE TABLE item (id serial PRIMARY KEY, name text NOT NULL UNIQUE, qty int NOT NULL DEFAULT 0, price numeric(10,2), tags text[]);
CREATE TABLE ledger (id bigint GENERATED ALWAYS AS IDENTITY, item_id int REFERENCES item ON DELETE CASCADE, delta int, at timestamptz DEFAULT '2026-01-01 00:00+00');

INSERT INTO item (name, qty, price) VALUES ('apple', 10, 0.50);
INSERT INTO item (name, qty, price, tags) VALUES ('banana', 5, 0.25, '{fruit,yellow}'), ('cherry', 100, 0.05, '{fruit}'), ('durian', 1, 12.00, NULL);
INSERT INTO item (name) VALUES ('eggplant') RETURNING *;
INSERT INTO item (name, qty) SELECT 'gen ' || g, g FROM generate_series(1, 3) AS g RETURNING id, name, qty;
INSERT INTO ledger (item_id, delta) SELECT id, qty FROM item WHERE qty > 0 ORDER BY id;
INSERT INTO item (name) VALUES ('apple') ON CONFLICT DO NOTHING;
INSERT INTO item (name, qty) VALUES ('apple', 1) ON CONFLICT (name) DO UPDATE SET qty = item.qty + excluded.qty RETURNING name, qty;
INSERT INTO item AS i (name, qty) VALUES ('banana', 1), ('fig', 2) ON CONFLICT (name) DO UPDATE SET qty = i.qty * 2 WHERE i.qty < 3 RETURNING name, qty;

UPDATE item SET price = price * 1.1 WHERE price IS NOT NULL AND qty < 10 RETURNING name, price;
UPDATE item SET qty = qty - 1 WHERE name IN ('apple', 'cherry');
UPDATE item SET qty = 0 WHERE false;
UPDATE item i SET tags = array_append(coalesce(i.tags, '{}'), 'sold') FROM ledger l WHERE l.item_id = i.id AND l.delta > 50 RETURNING i.name, i.tags;

DELETE FROM item WHERE name = 'durian';
DELETE FROM item WHERE name LIKE 'gen %' RETURNING *;
DELETE FROM ledger USING item WHERE ledger.item_id = item.id AND item.name = 'nothing';

WITH moved AS (DELETE FROM item WHERE name = 'eggplant' RETURNING name, qty)
INSERT INTO item (name, qty) SELECT name || ' (moved)', qty + 1 FROM moved RETURNING name, qty;

MERGE INTO item AS t
USING (VALUES ('apple', 3), ('kiwi', 7), ('fig', 0)) AS s(name, qty) ON t.name = s.name
WHEN MATCHED AND s.qty = 0 THEN DELETE
WHEN MATCHED THEN UPDATE SET qty = t.qty + s.qty
WHEN NOT MATCHED THEN INSERT (name, qty) VALUES (s.name, s.qty);

SELECT id, name, qty, price, tags FROM item ORDER BY id;

SELECT item_id, sum(delta) AS total, count(*) FROM ledger GROUP BY item_id ORDER BY item_id;

CREATE TABLE snapshot AS SELECT name, qty FROM item WHERE qty > 0 ORDER BY name LIMIT 3;
SELECT name, qty INTO TEMP snap2 FROM item ORDER BY name DESC LIMIT 2;
SELECT * FROM snapshot ORDER BY name;
TABLE snap2;
VALUES (1, 'one'), (2, NULL), (3, 'three');

WITH RECURSIVE fib(i, a, b) AS (SELECT 1, 0::numeric, 1::numeric UNION ALL SELECT i + 1, b, a + b FROM fib WHERE i < 120)
SELECT i, a FROM fib WHERE i % 20 = 0 ORDER BY i;

SELECT name, qty, rank() OVER (ORDER BY qty DESC), sum(qty) OVER (ORDER BY name ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
FROM item ORDER BY name;

SELECT g % 3 AS k, count(*), string_agg(g::text, ',' ORDER BY g) FROM generate_series(1, 10) AS g GROUP BY ROLLUP (g % 3) ORDER BY k NULLS LAST;

EXPLAIN (COSTS OFF) SELECT * FROM item WHERE name = 'apple';

BEGIN;
DECLARE cur SCROLL CURSOR FOR SELECT name FROM item ORDER BY name;
FETCH 2 FROM cur;
MOVE 1 IN cur;
FETCH NEXT FROM cur;
FETCH PRIOR FROM cur;
FETCH LAST FROM cur;
FETCH 5 FROM cur;
CLOSE cur;
DECLARE held CURSOR WITH HOLD FOR SELECT generate_series(1, 4) AS n;
COMMIT;

FETCH ALL FROM held;
CLOSE held;

COMMENT ON TABLE item IS 'things for sale';
SELECT obj_description('item'::regclass, 'pg_class');

TRUNCATE item, ledger RESTART IDENTITY;
SELECT count(*) FROM item;
INSERT INTO item (name) VALUES ('after truncate') RETURNING id;
