-- Kafka-compatible partitioner: (murmur2(UTF-8 key bytes) & 0x7fffffff) % n.
-- Expected values were computed with a Kafka-compatible murmur2.
\set VERBOSITY terse
SELECT key, n, estream.partition_for(key, n) AS partition
FROM (VALUES ('a', 8), ('order-1', 8), ('customer-42', 8), ('hello world', 8),
             ('é', 8), ('é', 12), ('', 8)) AS v(key, n)
ORDER BY key, n;
-- the bytea form hashes the same bytes
SELECT estream.partition_for(convert_to('é', 'UTF8'), 8) AS bytes_e8,
       estream.partition_for('\x'::bytea, 8) AS bytes_empty;
-- a 1-partition topic always gets partition 0; bad counts are rejected
SELECT estream.partition_for('anything', 1);
SELECT estream.partition_for('a', 0);
SELECT estream.partition_for('a', -3);
SELECT estream.partition_for(NULL::text, 8) IS NULL AS strict_null;
-- keys of every tail length (len % 4 = 0..3) stay in range and are stable
SELECT k, estream.partition_for(k, 1000) FROM (VALUES ('abcd'), ('abcde'), ('abcdef'), ('abcdefg')) v(k) ORDER BY k;
