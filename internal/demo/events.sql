-- The demo's events (rules-api.md §4), beside the check-credit rules: a key
-- for each order, an audit of order totals, a commit-time check, a veto
-- with its own SQLSTATE, and a webhook after the commit. The webhook's URL
-- is the demo's own receiver, which prints what it gets.
CREATE SEQUENCE order_code_seq START 1001;
ALTER TABLE orders ADD COLUMN code text UNIQUE;
CREATE TABLE order_audit (
  id serial PRIMARY KEY,
  order_id integer NOT NULL,
  verb text NOT NULL,
  old_total numeric(14,2),
  new_total numeric(14,2),
  at timestamptz NOT NULL DEFAULT now()
);

-- pre_insert: each new order gets its code, PO-1001, PO-1002, ...
SELECT pgrules.event('orders', 'pre_insert',
  'set("code", "PO-" + string(sql("SELECT nextval(''order_code_seq'') AS n")[0].n))',
  verbs => '{insert}', name => 'order_code');

-- row: every change of an order's total is audited (LogicBank's "audit
-- salary changes"); the audit row is written through pgrules.
SELECT pgrules.event('orders', 'row',
  'verb == "update" && row.amount_total == old.amount_total ? nil : insert("order_audit", {order_id: row.id, verb: verb, old_total: old.amount_total, new_total: verb == "delete" ? nil : row.amount_total})',
  name => 'audit_order_total');

-- commit: an order has at least one line when its transaction commits.
SELECT pgrules.event('orders', 'commit',
  'sql("SELECT count(*) AS n FROM lineitem WHERE order_id = $1", row.id)[0].n == 0 ? reject("order " + string(row.id) + " has no lines", "23514") : nil',
  verbs => '{insert}', name => 'order_has_lines');

-- early: a veto with its own SQLSTATE.
SELECT pgrules.event('lineitem', 'early',
  'row.quantity > 1000 ? reject("at most 1000 units a line, not " + string(row.quantity), "22023") : nil',
  verbs => '{insert,update}', name => 'quantity_cap');

-- after_commit: a webhook for each order paid, from the durable outbox.
SELECT pgrules.event('orders', 'after_commit',
  'row.paid && !old.paid ? post("{{webhook}}", {order: row.id, code: row.code, total: row.amount_total}) : nil',
  verbs => '{update}', name => 'order_paid_webhook');
