// Driven by tests/clients_test.go: one session through the proxy doing what
// every client in the matrix does, printing one JSON line per step.
'use strict';
const { Client } = require('pg');

async function main() {
  const client = new Client({
    connectionString: process.env.PGRULES_URL,
    ssl: process.env.PGRULES_TLS === '1' ? { rejectUnauthorized: false } : false,
  });
  await client.connect();
  const out = (step, value) => console.log(JSON.stringify({ step, value }));

  await client.query('CREATE TABLE item (id int PRIMARY KEY, price numeric(10,2), note text)');
  await client.query('INSERT INTO item VALUES ($1, $2, $3), (2, 0.10, NULL)', [1, '19.99', 'first']);
  const sel = await client.query('SELECT id, price, note FROM item ORDER BY id');
  out('select', sel.rows);

  await client.query('BEGIN');
  await client.query('INSERT INTO item VALUES (3, 1, $1)', ['rolled back']);
  await client.query('ROLLBACK');
  await client.query('BEGIN');
  await client.query('INSERT INTO item VALUES (4, 1, $1)', ['committed']);
  await client.query('COMMIT');
  const ids = await client.query('SELECT array_agg(id ORDER BY id) AS ids FROM item');
  out('ids', ids.rows[0].ids);

  try {
    await client.query('INSERT INTO item VALUES (1, 0, NULL)');
    out('error', null);
  } catch (e) {
    out('error', e.code);
  }
  const after = await client.query('SELECT 1 AS one');
  out('after_error', after.rows[0].one);

  const named = { name: 'by_id', text: 'SELECT note FROM item WHERE id = $1', values: [1] };
  out('prepared', (await client.query(named)).rows[0].note);
  named.values = [4];
  out('prepared_again', (await client.query(named)).rows[0].note);

  out('ssl', client.connection.stream.encrypted === true);
  await client.end();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
