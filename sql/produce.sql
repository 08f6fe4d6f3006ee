-- Produce: single, batch, binary; keys, explicit partitions, headers,
-- timestamps; transactional visibility; bad input.
\set VERBOSITY terse
SET synchronous_commit = on;

SELECT estream.create_topic('p', 8);

-- keyed records land where Kafka's partitioner puts them, offsets dense
SELECT * FROM estream.produce('p', '{"v": 1}', 'a');
SELECT * FROM estream.produce('p', '{"v": 2}', 'a');
SELECT * FROM estream.produce('p', '{"v": 3}', 'order-1');
SELECT * FROM estream.produce('p', '{"v": 4}', 'customer-42');
SELECT * FROM estream.produce('p', '{"v": 5}', 'hello world');
SELECT * FROM estream.produce('p', '{"v": 6}', 'é');
SELECT * FROM estream.produce('p', '{"v": 7}', '');
-- an explicit partition wins over the key
SELECT * FROM estream.produce('p', '{"v": 8}', 'a', partition => 0);
-- named arguments, headers, a producer timestamp
SELECT * FROM estream.produce(topic => 'p', value => '{"v": 9}', partition => 5,
                              headers => '{"trace": "t-1", "empty": null}',
                              ts => '2020-01-01 00:00:00+00');
SELECT "offset", key, value, headers, "timestamp" = '2020-01-01 00:00:00+00' AS kept_ts
FROM estream.fetch('p', 5, 0);
-- a null value is a tombstone
SELECT * FROM estream.produce('p', NULL, 'a');
SELECT "offset", key, value IS NULL AS tombstone FROM estream.fetch('p', 4, 0);

-- null keys spread round-robin over the partitions
SELECT estream.create_topic('rr', 4);
SELECT count(DISTINCT (estream.produce('rr', '{}')).partition) AS partitions_used
FROM generate_series(1, 8);
SELECT partition, stable_offset FROM estream.watermarks('rr') ORDER BY partition;

-- batch: one contiguous block per partition, results in input order
SELECT * FROM estream.produce_batch('p', ARRAY['{"b": 1}', '{"b": 2}', '{"b": 3}', '{"b": 4}']::jsonb[],
                                    ARRAY['a', 'order-1', 'a', 'é']);
-- all null-key records of one batch stick to one partition (which one
-- depends on the backend, so only the shape is shown); keyed ones follow
-- their key
SELECT estream.create_topic('sticky', 4);
SELECT count(DISTINCT partition) AS partitions, count(*) AS records,
       max("offset") - min("offset") + 1 AS span
FROM estream.produce_batch('sticky', ARRAY(SELECT jsonb_build_object('i', i) FROM generate_series(1, 50) i));
SELECT i, b.partition = estream.partition_for('k' || i, 4) AS keyed_ok
FROM estream.produce_batch('sticky', ARRAY(SELECT '{}'::jsonb FROM generate_series(1, 4)),
                           ARRAY['k1', NULL, 'k3', NULL]) WITH ORDINALITY AS b(partition, "offset", i)
WHERE i IN (1, 3);
SELECT sum(stable_offset) AS records FROM estream.watermarks('sticky');
-- batch to an explicit partition, with headers
SELECT * FROM estream.produce_batch('p', ARRAY['{"h": 1}', '{"h": 2}']::jsonb[], partition => 7,
                                    headers => ARRAY['{"k": "v"}', NULL]::jsonb[]);
SELECT "offset", value, headers FROM estream.fetch('p', 7, 0);
-- an empty batch produces nothing
SELECT count(*) FROM estream.produce_batch('p', '{}'::jsonb[]);
-- tombstones in a batch
SELECT * FROM estream.produce_batch('p', ARRAY[NULL, '{"x": 1}']::jsonb[], partition => 6);
SELECT "offset", value FROM estream.fetch('p', 6, 0);

-- binary records: bytea key and value
SELECT estream.create_topic('bin', 2);
SELECT * FROM estream.produce_binary('bin', '\x00ff10'::bytea, '\xdeadbeef'::bytea);
SELECT estream.partition_for('\xdeadbeef'::bytea, 2) AS expected_partition;
SELECT * FROM estream.produce_batch_binary('bin', ARRAY['\x01'::bytea, '\x0203'::bytea, NULL],
                                           ARRAY['\xdeadbeef'::bytea, NULL, NULL], partition => 1);
SELECT partition, "offset", key, value FROM estream.fetch_binary('bin', 1, 0);
-- a binary key equal to UTF-8 text maps like the text key
SELECT (estream.produce_binary('bin', '\x00', convert_to('a', 'UTF8'))).partition
     = estream.partition_for('a', 2) AS same_partition;
-- fetch() reads every record: a key that is not UTF-8 comes as its base64,
-- a binary value as a JSON string of its base64, each with a header that
-- says so (1.4; before, the whole call failed)
SELECT "offset", key, value, headers FROM estream.fetch('bin', 1, 0);
SELECT * FROM estream.produce_binary('bin', '\x01', convert_to('k', 'UTF8'), partition => 0);
SELECT "offset", key, value, headers FROM estream.fetch('bin', 0, 0);
-- decoded, they are the bytes fetch_binary() returns
SELECT "offset", decode(value #>> '{}', 'base64') AS bytes FROM estream.fetch('bin', 0, 0);
-- a consumer group gets past them too, committing as it goes
SELECT partition, "offset", key, value, headers
FROM estream.poll('bin-readers', 'bin', auto_offset_reset => 'earliest') ORDER BY 1, 2;
SELECT partition, committed_offset FROM estream.committed('bin-readers', 'bin') ORDER BY 1;
SELECT estream.delete_group('bin-readers');
SELECT "offset", convert_from(key, 'UTF8') AS key, value FROM estream.fetch_binary('bin', 0, 0);
-- fetch_binary() renders JSON values as their text
SELECT "offset", convert_from(value, 'UTF8') FROM estream.fetch_binary('p', 7, 0);

-- transactional: a rolled-back produce leaves a hole, never a record
BEGIN;
SELECT * FROM estream.produce('p', '{"gone": true}', partition => 3);
ROLLBACK;
SELECT * FROM estream.produce('p', '{"kept": true}', partition => 3);
SELECT "offset", value FROM estream.fetch('p', 3, 0);
SELECT partition, stable_offset, next_offset FROM estream.watermarks('p') WHERE partition = 3;
-- inside a transaction, the producer's own records are not yet stable
BEGIN;
SELECT * FROM estream.produce('p', '{"mine": true}', partition => 2);
SELECT count(*) AS visible_before_commit FROM estream.fetch('p', 2, 0);
SELECT stable_offset, next_offset FROM estream.watermarks('p') WHERE partition = 2;
COMMIT;
SELECT count(*) AS visible_after_commit FROM estream.fetch('p', 2, 0);
-- savepoints: the rolled-back record is a hole
BEGIN;
SELECT * FROM estream.produce('p', '{"s": 1}', partition => 1);
SAVEPOINT sp;
SELECT * FROM estream.produce('p', '{"s": 2}', partition => 1);
ROLLBACK TO SAVEPOINT sp;
SELECT * FROM estream.produce('p', '{"s": 3}', partition => 1);
COMMIT;
SELECT "offset", value FROM estream.fetch('p', 1, 0);
-- a savepoint rolled back after the last produce does not expose its range
BEGIN;
SELECT * FROM estream.produce('p', '{"t": 1}', partition => 1);
SAVEPOINT sp;
SELECT * FROM estream.produce('p', '{"t": 2}', partition => 1);
ROLLBACK TO SAVEPOINT sp;
COMMIT;
SELECT stable_offset, next_offset FROM estream.watermarks('p') WHERE partition = 1;
-- a produce in a business transaction commits atomically with the business row
CREATE TABLE shop_order (id int PRIMARY KEY);
BEGIN;
INSERT INTO shop_order VALUES (1);
SELECT * FROM estream.produce('p', '{"order": 1}', 'order-1');
COMMIT;
BEGIN;
INSERT INTO shop_order VALUES (1);  -- fails: duplicate
ROLLBACK;
SELECT count(*) FILTER (WHERE value = '{"order": 1}') AS order_events
FROM estream.fetch('p', estream.partition_for('order-1', 8), 0);

-- bad input
SELECT * FROM estream.produce('missing', '{}');
SELECT * FROM estream.produce(NULL, '{}');
SELECT * FROM estream.produce('p', '{}', partition => 8);
SELECT * FROM estream.produce('p', '{}', partition => -1);
SELECT * FROM estream.produce('p', '{}', headers => '["not", "an", "object"]');
SELECT * FROM estream.produce('p', '{}', headers => '{"n": 1}');
SELECT * FROM estream.produce('p', '{}', headers => '{"n": {"nested": "x"}}');
SELECT * FROM estream.produce('p', '{}', ts => 'infinity');
SELECT * FROM estream.produce_batch('p', NULL);
SELECT * FROM estream.produce_batch('p', ARRAY['{}']::jsonb[], ARRAY['a', 'b']);
SELECT * FROM estream.produce_batch('p', ARRAY['{}']::jsonb[], headers => ARRAY['{}', '{}']::jsonb[]);
SELECT * FROM estream.produce_batch('p', ARRAY[['{}', '{}'], ['{}', '{}']]::jsonb[]);
SELECT * FROM estream.produce_batch('p', ARRAY['{}']::jsonb[], partition => 99);
-- read-only transactions are refused before anything is reserved
BEGIN READ ONLY;
SELECT * FROM estream.produce('p', '{}', partition => 0);
ROLLBACK;
-- PREPARE is refused after producing
BEGIN;
SELECT * FROM estream.produce('p', '{"prepared": true}', partition => 0);
PREPARE TRANSACTION 'estream_p';
SELECT count(*) FROM pg_prepared_xacts;
SELECT count(*) FILTER (WHERE value ? 'prepared') AS prepared_visible FROM estream.fetch('p', 0, 0);
-- none of the failures held back a watermark or left rows behind; the
-- stable offset stops at 1 + the last committed offset, so the holes at the
-- tail of partitions 0 (PREPARE) and 1 (savepoint) are not exposed
SELECT partition, stable_offset, next_offset FROM estream.watermarks('p') ORDER BY partition;
SELECT partition, records FROM estream.partition_stats WHERE topic = 'p' ORDER BY partition;
