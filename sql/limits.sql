-- Limits: max.message.bytes per topic, batch record and byte limits.  A
-- rejected call leaves nothing behind: no rows, no holes.
\set VERBOSITY terse
SET synchronous_commit = on;

SELECT estream.create_topic('lim', 1, '{"max.message.bytes": 1000}');
-- just under and over the record limit (key + value + headers)
SELECT * FROM estream.produce('lim', to_jsonb(repeat('x', 900)));
SELECT * FROM estream.produce('lim', to_jsonb(repeat('x', 1000)));
SELECT * FROM estream.produce('lim', to_jsonb(repeat('x', 500)), repeat('k', 500));
SELECT * FROM estream.produce('lim', '{}', headers => jsonb_build_object('h', repeat('y', 1000)));
SELECT * FROM estream.produce_binary('lim', convert_to(repeat('z', 1001), 'UTF8'));
-- one oversized record fails the whole batch
SELECT * FROM estream.produce_batch('lim', ARRAY['{}', to_jsonb(repeat('x', 2000)), '{}']::jsonb[]);
-- the default limit is 1 MiB
SELECT estream.create_topic('big', 1);
SELECT * FROM estream.produce('big', to_jsonb(repeat('x', 1048000)));
SELECT * FROM estream.produce('big', to_jsonb(repeat('x', 1048600)));
-- raising the limit takes effect at once
SELECT estream.alter_topic('big', '{"max.message.bytes": 2000000}');
SELECT * FROM estream.produce('big', to_jsonb(repeat('x', 1048600)));
-- batch record count and bytes limits
SET estream.max_batch_records = 5;
SELECT * FROM estream.produce_batch('lim', ARRAY['{}', '{}', '{}', '{}', '{}', '{}']::jsonb[]);
SELECT * FROM estream.fetch('lim', 0, 0, 6);
RESET estream.max_batch_records;
SET estream.max_batch_bytes = 2048;
SELECT * FROM estream.produce_batch('lim', ARRAY(SELECT to_jsonb(repeat('x', 900)) FROM generate_series(1, 3)));
RESET estream.max_batch_bytes;
-- nothing of the rejected calls is left: no records and no holes
SELECT partition, stable_offset, next_offset FROM estream.watermarks('lim');
SELECT partition, stable_offset, next_offset FROM estream.watermarks('big');
SELECT "offset", length(value #>> '{}') FROM estream.fetch('lim', 0, 0);
-- settings are bounded
SET estream.max_batch_records = 0;
SET estream.max_batch_bytes = 10;
-- full messages (detail and hint) of the errors users meet most
\set VERBOSITY default
SELECT * FROM estream.produce('lim', to_jsonb(repeat('x', 1000)));
SELECT * FROM estream.produce('lim', '{}', partition => 1);
SELECT * FROM estream.fetch('lim', 0, 5);
SELECT * FROM estream.produce('no_such_topic', '{}');
SELECT estream.create_topic('bad name');
SELECT estream.create_topic('x', 1, '{"retention.msec": 1}');
SELECT estream.add_partitions('lim', 1);
