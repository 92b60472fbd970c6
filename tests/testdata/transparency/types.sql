-- Every common type, as text (psql, ExecParams) and in binary (pgx, the
-- binary ExecPrepared mode), with NULLs, extremes and special values.
-- expect-tag: CREATE TYPE
-- expect-tag: CREATE DOMAIN
-- expect-tag: INSERT 0 4

SET TimeZone = 'America/New_York';
SET DateStyle = 'ISO, MDY';
SET IntervalStyle = 'postgres';
SET extra_float_digits = 1;
SET bytea_output = 'hex';

CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (label text, amount numeric(10,2));
CREATE DOMAIN posint AS int CHECK (VALUE > 0);

CREATE TABLE typed (
  id int PRIMARY KEY,
  i2 int2, i4 int4, i8 int8, n numeric, n2 numeric(30,10), f4 float4, f8 float8,
  t text, vc varchar(12), ch char(5), b bytea, ok bool,
  d date, tm time, ttz timetz, ts timestamp, tz timestamptz, iv interval,
  u uuid, j json, jb jsonb,
  ai int[], at text[], a2 numeric[][],
  m mood, p pair, ip inet, cidrv cidr, mac macaddr,
  r int4range, tr tstzrange, dr daterange, mr int4multirange,
  bits bit(4), vb varbit, pt point, tsv tsvector, dom posint
);

INSERT INTO typed VALUES
  (1, -32768, 2147483647, 9223372036854775807,
   12345678901234567890.123456789012345678901234567890, 12345678901234567890.0123456789,
   1.5, 3.141592653589793,
   'héllo wörld ✓ 日本語 🐘', 'varchar', 'ab', '\xdeadbeef00ff', true,
   '2026-11-22', '12:34:56.789', '12:34:56+05:30', '2026-11-22 12:34:56.789012',
   '2026-03-08 06:59:59.999999+00', '1 year 2 mons 3 days 04:05:06.7',
   'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
   '{"k": [1, 2.50, {"x": null}], "k": "dup"}', '{"b": 2, "a": [true, false, null], "c": {"d": 1.0}}',
   '{1,2,3}', '{"a","b c",NULL,"NULL","quote\"d","back\\slash"}', '{{1.1,2.2},{3.3,NULL}}',
   'happy', ROW('first', 12.5), '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03',
   '[1,10)', '[2026-01-01 00:00+00,2026-06-01 00:00+00)', '[2026-01-01,2026-12-31]', '{[1,3),[5,8)}',
   B'1010', B'110', '(1.5,-2)', 'the quick brown fox jumps', 42),
  (2, 32767, -2147483648, -9223372036854775808,
   'NaN', -0.0000000001, '-Infinity', 'NaN',
   '', '', '', '', false,
   'infinity', '00:00', '23:59:59.999999-12', '-infinity',
   'infinity', '-178000000 years',
   '00000000-0000-0000-0000-000000000000', 'null', '[]',
   '{}', '{}', '{}',
   'sad', ROW(NULL, NULL), '::1', '::/0', 'ff:ff:ff:ff:ff:ff',
   'empty', '(,)', '(,2026-01-01)', '{}',
   B'0000', B'', '(0,0)', '', 1),
  (3, 0, 0, 0,
   'Infinity', 0, 'Infinity', '-0',
   E'tab\there\nnewline', 'x', 'y', '\x00', NULL,
   '4713-01-01 BC', '24:00', NULL, '1999-12-31 23:59:59',
   '2000-01-01 00:00:00+14', '-1 days +02:03',
   NULL, '"just a string"', '"ünï"',
   '[0:2]={7,8,9}', '{{"a","b"},{"c","d"}}', '{{{1}}}',
   'ok', ROW('x', -0.01), '2001:db8::ff00:42:8329/128', '2001:db8::/32', NULL,
   '(,5]', '[2026-01-01 00:00+00,)', 'empty', '{(,0],[10,)}',
   B'1111', B'10101010101', NULL, 'a:1 b:2', NULL),
  (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

SELECT * FROM typed ORDER BY id;

SELECT id, i2, i4, i8, n, n2, f4, f8 FROM typed ORDER BY id;

SELECT id, t, length(t) AS len, octet_length(t) AS bytes, vc, ch, b, ok FROM typed ORDER BY id;

SELECT id, d, tm, ttz, ts, tz, iv, tz AT TIME ZONE 'UTC' AS utc FROM typed ORDER BY id;

SELECT id, u, j, jb, jb -> 'a' AS arr, jb ->> 'b' AS b, jsonb_typeof(jb) FROM typed ORDER BY id;

SELECT id, ai, at, a2, array_dims(ai), array_length(at, 1), ai[2] FROM typed ORDER BY id;

SELECT id, m, p, (p).label, ip, cidrv, mac, r, tr, dr, mr, bits, vb, pt, tsv, dom FROM typed ORDER BY id;

SELECT ROW(1, 'two', 3.0, NULL) AS rec, (1, 'x') IS NULL AS rec_is_null, ARRAY[ROW(1, 'a'), ROW(2, NULL)] AS recs;

SELECT t FROM typed t WHERE id = 1;

SELECT 0.1::numeric + 0.2::numeric AS exact, 0.1::float8 + 0.2::float8 AS inexact,
       1e308::float8 * 10 AS overflow_to_inf, 2::numeric ^ 200 AS big, 1::numeric / 3 AS third,
       'Infinity'::numeric - 1 AS inf, round(2.5::numeric) AS r1, round(2.5::float8) AS r2;

SELECT NULL AS untyped, NULL::int AS int_null, NULL::text[] AS arr_null, ARRAY[NULL]::int[] AS arr_of_null,
       '{}'::int[] AS empty_arr, ''::text AS empty_text, ''::bytea AS empty_bytea;

SELECT 42 AS "quoted ""name""", 1 AS "UPPER", 2 AS lower, 3 AS "日本";

SELECT i, repeat('x', 40000 + i) AS wide, decode(repeat('ab', 30000), 'hex') AS blob
  FROM generate_series(1, 3) AS i;

SELECT array_agg(i ORDER BY i) AS many, sum(i) AS total, avg(i) AS mean, stddev_samp(i) AS sd
  FROM generate_series(1, 5000) AS i;

SELECT '2026-03-08 01:59:59'::timestamp AT TIME ZONE 'America/New_York' AS before_dst,
       '2026-03-08 02:30:00'::timestamp AT TIME ZONE 'America/New_York' AS gap,
       '2026-11-01 01:30:00'::timestamptz AS ambiguous,
       extract(epoch FROM '2026-01-01 00:00:00+00'::timestamptz) AS epoch,
       make_interval(days => 10, secs => 1.5) AS mk;

SET IntervalStyle = 'iso_8601';

SELECT iv FROM typed ORDER BY id;

SET DateStyle = 'SQL, DMY';

SELECT d, ts, tz FROM typed ORDER BY id;

SET bytea_output = 'escape';

SELECT b FROM typed ORDER BY id;

RESET ALL;
