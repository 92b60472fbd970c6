-- Schema changes: tags, the notices DDL raises, triggers that raise
-- notices, functions and procedures, psql's catalog queries.
-- expect-sqlstate: 00000
-- expect-tag: CREATE TABLE
-- expect-tag: CREATE INDEX
-- expect-tag: CREATE TRIGGER
-- expect-tag: CREATE VIEW
-- expect-tag: ALTER TABLE
-- expect-tag: REFRESH MATERIALIZED VIEW
-- expect-tag: DROP SCHEMA

CREATE SCHEMA shop;
SET search_path = shop, public;

CREATE TABLE shop.customer (
  id serial PRIMARY KEY,
  name text NOT NULL,
  email text UNIQUE,
  balance numeric(12,2) NOT NULL DEFAULT 0 CHECK (balance >= -1000),
  created timestamptz NOT NULL DEFAULT '2026-01-01 00:00+00'
);
CREATE TABLE shop.orders (
  id bigserial PRIMARY KEY,
  customer_id int NOT NULL REFERENCES shop.customer (id),
  amount numeric(12,2) NOT NULL,
  paid bool NOT NULL DEFAULT false
) WITH (fillfactor = 90);
CREATE INDEX orders_customer ON shop.orders (customer_id) WHERE NOT paid;
CREATE UNIQUE INDEX customer_lower_email ON shop.customer (lower(email));
CREATE SEQUENCE shop.ticket START 100 INCREMENT BY 5;
SELECT nextval('shop.ticket'), nextval('shop.ticket'), currval('shop.ticket');

CREATE FUNCTION shop.balance_of(cid int) RETURNS numeric LANGUAGE sql STABLE AS $$
  SELECT coalesce(sum(amount), 0) FROM shop.orders WHERE customer_id = cid AND NOT paid
$$;

CREATE FUNCTION shop.audit() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
  RAISE NOTICE 'audit: % on % (id %)', TG_OP, TG_TABLE_NAME, coalesce(NEW.id, OLD.id);
  IF TG_OP = 'DELETE' THEN
    RETURN OLD;
  END IF;
  NEW.amount := round(NEW.amount, 1);
  RETURN NEW;
END
$body$;
CREATE TRIGGER orders_audit BEFORE INSERT OR UPDATE OR DELETE ON shop.orders FOR EACH ROW EXECUTE FUNCTION shop.audit();

CREATE PROCEDURE shop.pay_all(cid int, INOUT paid_count int DEFAULT NULL) LANGUAGE plpgsql AS $$
BEGIN
  UPDATE shop.orders SET paid = true WHERE customer_id = cid AND NOT paid;
  GET DIAGNOSTICS paid_count = ROW_COUNT;
END
$$;

INSERT INTO customer (name, email) VALUES ('Ada', 'ada@example.com'), ('Grace', 'GRACE@example.com') RETURNING id, name, balance, created;
INSERT INTO orders (customer_id, amount) VALUES (1, 10.04), (1, 20.06), (2, 5.55) RETURNING id, amount;
UPDATE orders SET amount = amount + 0.01 WHERE customer_id = 2;
SELECT c.name, balance_of(c.id) FROM customer c ORDER BY c.id;
CALL pay_all(1);
CALL shop.pay_all(2, NULL);
DELETE FROM orders WHERE id = 3;

CREATE VIEW shop.open_orders AS SELECT o.id, c.name, o.amount FROM orders o JOIN customer c ON c.id = o.customer_id WHERE NOT o.paid;
CREATE MATERIALIZED VIEW shop.totals AS SELECT customer_id, sum(amount) AS total FROM orders GROUP BY customer_id;
REFRESH MATERIALIZED VIEW shop.totals;
SELECT * FROM totals ORDER BY customer_id;
SELECT * FROM open_orders;

ALTER TABLE customer ADD COLUMN tier text NOT NULL DEFAULT 'basic';
ALTER TABLE customer ALTER COLUMN tier TYPE varchar(10);
ALTER TABLE customer RENAME COLUMN tier TO level;
ALTER TABLE orders ADD CONSTRAINT amount_positive CHECK (amount > 0) NOT VALID;
ALTER TABLE orders VALIDATE CONSTRAINT amount_positive;
COMMENT ON COLUMN customer.level IS 'service level';
CREATE TEMP TABLE scratch (k int) ON COMMIT DELETE ROWS;
CREATE TABLE IF NOT EXISTS shop.customer (id int);
CREATE UNLOGGED TABLE shop.cache (k text PRIMARY KEY, v jsonb) ;
CREATE TABLE shop.events (id int, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE shop.events_2026 PARTITION OF shop.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO shop.events VALUES (1, '2026-05-05');
SELECT tableoid::regclass, * FROM shop.events;

\d shop.customer

\d+ shop.orders

\df shop.*

\dv shop.*

SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns
 WHERE table_schema = 'shop' AND table_name = 'customer' ORDER BY ordinal_position;

SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint
 WHERE connamespace = 'shop'::regnamespace ORDER BY conname;

DROP TABLE IF EXISTS shop.no_such_table;
DROP INDEX IF EXISTS shop.no_such_index, shop.orders_customer;
DROP VIEW open_orders;
DROP SCHEMA shop CASCADE;
RESET search_path;
