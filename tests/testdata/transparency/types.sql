SET TimeZone = 'Europe/Paris';
SET extra_float_digits = 1;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE typed (
  i2 int2, i4 int4, i8 int8, n numeric, f4 float4, f8 float8, t text, b bytea, ok bool,
  d date, tm time, ts timestamp, tz timestamptz, iv interval, u uuid, j json, jb jsonb,
  a int[], ta text[], m mood, ip inet, r int4range
);
INSERT INTO typed VALUES
  (-32768, 2147483647, 9223372036854775807, 12345678901234567890.123456789012345, 1.5, 'Infinity', 'héllo wörld ✓', '\xdeadbeef', true,
   '2026-11-22', '12:34:56.789', '2026-11-22 12:34:56.789', '2026-11-22 12:34:56.789+00', '1 year 2 mons 3 days 04:05:06', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
   '{"k": [1, 2, {"x": null}]}', '{"b": 2, "a": 1}', '{{1,2},{3,NULL}}', '{"a","b c",NULL}', 'happy', '192.168.0.1/24', '[1,10)'),
  (NULL, NULL, NULL, 'NaN', '-Infinity', 'NaN', '', '', false, 'infinity', NULL, '-infinity', NULL, NULL, NULL, 'null', '[]', '{}', '{}', NULL, NULL, 'empty'),
  (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
SELECT * FROM typed ORDER BY i4 NULLS LAST, n NULLS LAST;
SELECT row(1, 'two', 3.0)::record, (1, 'x')::record IS NULL, ARRAY[row(1,2)];
SELECT 0.1::numeric + 0.2::numeric AS exact, 0.1::float8 + 0.2::float8 AS inexact;
SELECT generate_series(1, 5) AS n, repeat('x', 3000) AS wide LIMIT 2;
