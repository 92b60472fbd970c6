-- Version 3: the outbox of after_commit and failure events (rules-api.md
-- §4). The engine records one entry per effect of an event's action: in
-- the client's transaction for after_commit (the entries exist exactly when
-- it committed), in a transaction of its own for failure. The proxies'
-- dispatchers deliver them at least once, in id order per key.
CREATE TABLE pgrules.outbox (
  id           bigserial PRIMARY KEY,
  created_at   timestamptz NOT NULL DEFAULT now(),
  rule         text NOT NULL,     -- the event that recorded the entry
  timing       text NOT NULL CHECK (timing IN ('after_commit', 'failure')),
  -- The row the event fired on, 'schema.table:key' (the primary key's
  -- values joined by ','): entries of one key are delivered in id order,
  -- which is commit order, since the row's lock orders the transactions.
  key          text NOT NULL,
  kind         text NOT NULL CHECK (kind IN ('notify', 'sql', 'post')),
  target       text NOT NULL,     -- notify: the channel; sql: the query; post: the URL
  payload      text,              -- notify: the payload; post: the body (JSON)
  args         text[],            -- sql: the query's parameters, as text
  -- The role that recorded the entry: an sql entry runs as that role, so
  -- that writing the outbox gives no more rights than the writer has.
  role         name NOT NULL DEFAULT current_user,
  state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'dead')),
  attempts     integer NOT NULL DEFAULT 0,
  next_at      timestamptz NOT NULL DEFAULT now(),
  last_error   text,
  delivered_at timestamptz
);
-- The dispatchers' claims read only pending entries: in id order, by key
-- (an earlier entry of the same key), and those waiting for their backoff.
CREATE INDEX outbox_pending ON pgrules.outbox (id) WHERE state = 'pending';
CREATE INDEX outbox_pending_key ON pgrules.outbox (key, id) WHERE state = 'pending';
CREATE INDEX outbox_pending_next ON pgrules.outbox (next_at) WHERE state = 'pending';
COMMENT ON TABLE pgrules.outbox IS
  'after_commit and failure effects of events, delivered by the proxies at least once, in order per key; state dead after the attempt limit (pgrules.retry(id) re-queues).';
