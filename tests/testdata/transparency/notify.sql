LISTEN chan;
NOTIFY chan, 'payload one';
SELECT pg_notify('chan', 'payload two');
BEGIN; NOTIFY chan, 'at commit'; COMMIT;
BEGIN; NOTIFY chan, 'rolled back'; ROLLBACK;
UNLISTEN chan;
NOTIFY chan, 'not heard';
SELECT 'done';
