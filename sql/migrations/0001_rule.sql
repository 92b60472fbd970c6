-- Version 1: the version table and the rule table.
CREATE TABLE pgrules.schema_version (
  version      int PRIMARY KEY,
  installed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pgrules.rule (
  name          text PRIMARY KEY,
  table_schema  text NOT NULL,
  table_name    text NOT NULL,
  kind          text NOT NULL CHECK (kind IN ('sum', 'count', 'min', 'max', 'formula', 'copy',
                                              'constraint', 'commit_constraint', 'event')),
  target_column text,   -- derivations
  expression    text,   -- formula, condition, action
  source_schema text,   -- aggregates: the child; copy: the parent
  source_table  text,
  source_column text,
  filter        text,
  via           text,   -- the foreign key's constraint name, as given
  message       text,
  timing        text,
  verbs         text[],
  enabled       boolean NOT NULL DEFAULT true,
  seq           bigint GENERATED ALWAYS AS IDENTITY,
  -- The transaction that last wrote the rule: the proxy compiles and
  -- computes what the current transaction changed.
  txid          xid8 NOT NULL DEFAULT pg_current_xact_id()
);
