-- Transaction blocks: savepoints, ROLLBACK TO, the failed-transaction
-- state and how it ends, warnings for misplaced transaction commands,
-- deferred constraints failing at COMMIT, isolation and read-only
-- transactions, AND CHAIN. A statement that fails inside a block is the
-- last of its paragraph, so that batch and pipeline modes (which skip to
-- the next Sync after an error) leave the block in the same state psql
-- does.
-- expect-sqlstate: 25P02 25P01 25001 25006 23505 23503 22012 3B001 42601
-- expect-tag: ROLLBACK
-- expect-tag: SAVEPOINT
-- expect-tag: RELEASE
-- expect-tag: COMMIT

CREATE TABLE acct (id int PRIMARY KEY, bal numeric(12,2) NOT NULL);
CREATE TABLE transfer (id serial PRIMARY KEY, acct_id int REFERENCES acct DEFERRABLE INITIALLY DEFERRED, amount numeric(12,2));

BEGIN;
INSERT INTO acct VALUES (1, 100.00);
SAVEPOINT a;
INSERT INTO acct VALUES (2, 50.00);
ROLLBACK TO SAVEPOINT a;
INSERT INTO acct VALUES (3, 25.00);
SAVEPOINT b;
SAVEPOINT c;
RELEASE SAVEPOINT b;
INSERT INTO acct VALUES (4, 4.00);
COMMIT;
SELECT * FROM acct ORDER BY id;

BEGIN;
SAVEPOINT s1;
INSERT INTO acct VALUES (1, 0);

SELECT 'in a failed transaction';

SAVEPOINT not_allowed;

ROLLBACK TO s1;
SELECT 'recovered';
UPDATE acct SET bal = bal - 10 WHERE id = 1 RETURNING *;
SELECT 1 / 0;

SELECT 'failed again';

COMMIT;
SELECT bal FROM acct WHERE id = 1;

BEGIN;
ROLLBACK TO SAVEPOINT never_made;

ROLLBACK;

COMMIT;
ROLLBACK;
BEGIN;
BEGIN;
END;

BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY;
SHOW transaction_isolation;
SHOW transaction_read_only;
SELECT count(*) FROM acct;
INSERT INTO acct VALUES (9, 9);

ROLLBACK;

START TRANSACTION ISOLATION LEVEL REPEATABLE READ;
SET LOCAL TimeZone = 'Asia/Tokyo';
SHOW TimeZone;
SET TRANSACTION ISOLATION LEVEL SERIALIZABLE;

ROLLBACK;
SHOW transaction_isolation;

BEGIN;
INSERT INTO transfer (acct_id, amount) VALUES (99, 1.00);
SELECT count(*) FROM transfer;
COMMIT;

SELECT count(*) FROM transfer;

BEGIN;
SET CONSTRAINTS ALL IMMEDIATE;
INSERT INTO transfer (acct_id, amount) VALUES (98, 1.00);

ROLLBACK;

BEGIN;
INSERT INTO transfer (acct_id, amount) VALUES (1, 2.00);
COMMIT AND CHAIN;
SHOW transaction_isolation;
INSERT INTO transfer (acct_id, amount) VALUES (3, 3.00);
ROLLBACK AND CHAIN;
SELECT acct_id, amount FROM transfer ORDER BY id;
ROLLBACK;

BEGIN;
CREATE TABLE in_tx (k int);
INSERT INTO in_tx VALUES (1);
SAVEPOINT sp;
DROP TABLE in_tx;
ROLLBACK TO sp;
SELECT * FROM in_tx;
COMMIT;

BEGIN;
LOCK TABLE acct IN ACCESS EXCLUSIVE MODE NOWAIT;
SELECT id FROM acct ORDER BY id FOR UPDATE;
SELECT pg_advisory_xact_lock(42);
SELECT pg_try_advisory_xact_lock(42) AS reentrant;
COMMIT;

BEGIN;
SELECT 1;
SELEC 2;

SELECT 3;

ROLLBACK;
SELECT count(*) AS accounts FROM acct;

VACUUM acct;

BEGIN;
VACUUM acct;

ROLLBACK;

BEGIN;
DECLARE c CURSOR FOR SELECT id FROM acct ORDER BY id;
FETCH 1 FROM c;
SAVEPOINT x;
FETCH 1 FROM c;
ROLLBACK TO x;
FETCH 1 FROM c;
COMMIT;

-- psql acts on the transaction status itself: with ON_ERROR_ROLLBACK it
-- wraps each statement of a block in a savepoint and, after an error,
-- rolls back to it only if ReadyForQuery said the block failed. (The
-- drivers, which do not, see the block fail.)
\set ON_ERROR_ROLLBACK on
BEGIN;
INSERT INTO acct VALUES (20, 1);
INSERT INTO acct VALUES (20, 2);

SELECT id, bal FROM acct WHERE id = 20;

COMMIT;
\set ON_ERROR_ROLLBACK off
SELECT id, bal FROM acct ORDER BY id;
