// node-postgres client driven by tests/clients_test.go and tests/auth_test.go.
//
// Usage: PGRULES_URL=postgres://... node client.js matrix|auth
//
// matrix  runs the client-matrix session against an empty database;
// auth    connects, reports current_user and TLS, or the connection error.
// PGRULES_CHANNEL_BINDING=1 lets the client use SCRAM-SHA-256-PLUS when it
// is offered.
//
// Each result is one JSON line {"step": ..., "value": ...} on stdout; the Go
// test holds them to its expectations. Anything unexpected exits non-zero.
'use strict';
const { Client } = require('pg');

const UNICODE = 'ünïcødé ✓';

const out = (step, value) => console.log(JSON.stringify({ step, value }));

function config() {
  const url = new URL(process.env.PGRULES_URL);
  const sslmode = url.searchParams.get('sslmode') || 'disable';
  url.searchParams.delete('sslmode');
  // pg-connection-string reads sslmode=require as verify-full, and the
  // tests' certificate is self-signed, so TLS is set up here instead.
  let ssl;
  if (sslmode === 'disable') ssl = false;
  else if (sslmode === 'require') ssl = { rejectUnauthorized: false };
  else throw new Error(`unsupported sslmode ${sslmode}`);
  return {
    connectionString: url.toString(),
    ssl,
    enableChannelBinding: process.env.PGRULES_CHANNEL_BINDING === '1',
    connectionTimeoutMillis: 10000,
  };
}

async function one(client, query) {
  const res = await client.query(query);
  return res.rows[0][Object.keys(res.rows[0])[0]];
}

async function sqlstate(promise) {
  try {
    await promise;
    return null;
  } catch (e) {
    if (!e.code) throw e;
    return e.code;
  }
}

const encrypted = (client) => client.connection.stream.encrypted === true;

async function matrix() {
  const c = new Client(config());
  await c.connect();
  await c.query('CREATE TABLE item (id int PRIMARY KEY, price numeric, note text)');
  await c.query('INSERT INTO item VALUES ($1, $2, $3), (2, 0.10, NULL)', [1, '19.99', 'first']);
  const sel = await c.query({ text: 'SELECT id, price, note FROM item ORDER BY id', rowMode: 'array' });
  out('select', sel.rows);

  await c.query('BEGIN');
  await c.query('INSERT INTO item VALUES (3, 3, $1)', ['rolled back']);
  await c.query('ROLLBACK');
  await c.query('BEGIN');
  await c.query('INSERT INTO item VALUES (4, 4.5, $1)', ['committed']);
  await c.query('COMMIT');
  // count(*) is bigint, which node-postgres returns as a string.
  out('rolled_back', await one(c, { text: 'SELECT count(*)::int FROM item WHERE id = $1', values: [3] }));
  out('committed', await one(c, { text: 'SELECT count(*)::int FROM item WHERE id = $1', values: [4] }));

  out('error', await sqlstate(c.query('INSERT INTO item VALUES (1, 0, NULL)')));
  out('after_error', await one(c, 'SELECT 1'));

  await c.query('BEGIN');
  let status = c.getTransactionStatus();
  out('tx_error', await sqlstate(c.query('SELECT * FROM no_such_table')));
  // A failed query settles on its ErrorResponse, before the ReadyForQuery
  // behind it may have arrived; the next query is sent only after that
  // ReadyForQuery, so once it has failed too the status is the one the
  // first failure left.
  out('tx_aborted', await sqlstate(c.query('SELECT 1')));
  status += c.getTransactionStatus();
  await c.query('ROLLBACK');
  status += c.getTransactionStatus();
  out('tx_status', status);
  out('after_rollback', await one(c, 'SELECT 1'));

  // A query with a name is parsed once per connection as a named
  // server-side statement and only bound and executed afterwards.
  const ins = await c.query({
    name: 'ins',
    text: 'INSERT INTO item VALUES ($1, $2, $3)',
    values: [5, '12345678.901', UNICODE],
  });
  out('prepared_insert', ins.rowCount);
  const notes = [];
  for (const id of [1, 4, 5]) {
    const res = await c.query({ name: 'by_id', text: 'SELECT note FROM item WHERE id = $1', values: [id] });
    notes.push(res.rows[0].note);
  }
  out('prepared', notes);
  out('server_side', await one(c, "SELECT count(*)::int FROM pg_prepared_statements WHERE name IN ('ins', 'by_id')"));
  out('ssl', encrypted(c));
  await c.end();
}

async function auth() {
  const c = new Client(config());
  try {
    await c.connect();
  } catch (e) {
    out('connect_error', { code: e.code || null, message: e.message });
    return;
  }
  out('user', await one(c, 'SELECT current_user'));
  out('ssl', encrypted(c));
  await c.end();
}

const modes = { matrix, auth };
const mode = modes[process.argv[2]];
if (!mode) {
  console.error('usage: node client.js matrix|auth (with PGRULES_URL set)');
  process.exit(2);
}
mode().catch((e) => {
  console.error(e);
  process.exit(1);
});
