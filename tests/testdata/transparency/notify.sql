-- LISTEN/NOTIFY within one session: own notifications arrive after the
-- command (or at COMMIT), not after ROLLBACK, duplicates in a transaction
-- fold into one, UNLISTEN stops delivery. psql prints the sender's PID,
-- which differs between the two runs and is normalised.
-- expect-tag: LISTEN
-- expect-tag: NOTIFY
-- expect-tag: UNLISTEN
-- expect-sqlstate: 22023

LISTEN chan;
LISTEN "Mixed Case";
LISTEN chan;
NOTIFY chan, 'payload one';
NOTIFY chan;
SELECT pg_notify('chan', 'payload two ✓');
NOTIFY "Mixed Case", 'quoted channel';
SELECT pg_notify('Mixed Case', repeat('p', 7990));

BEGIN;
NOTIFY chan, 'at commit';
NOTIFY chan, 'at commit';
NOTIFY chan, 'second at commit';
SELECT 'nothing delivered yet';
COMMIT;

BEGIN;
NOTIFY chan, 'rolled back';
ROLLBACK;

BEGIN;
NOTIFY chan, 'aborted';
SELECT 1 / 0;

ROLLBACK;

SELECT pg_notify('chan', repeat('x', 8000));

SELECT pg_notify('', 'empty channel');

SELECT channel FROM pg_listening_channels() AS channel ORDER BY 1;
UNLISTEN chan;
NOTIFY chan, 'not heard';
NOTIFY "Mixed Case", 'still heard';
UNLISTEN *;
NOTIFY "Mixed Case", 'not heard either';
SELECT count(*) FROM pg_listening_channels();
