-- Costs follow work (issue 14): the worker's maintenance steps look only at
-- topics that may have something to do.  run_maintenance() without a topic
-- is the worker's path; estream.enable_worker = off here, so every look is
-- this file's.  What a step looked at is read from estream.segment's
-- roll_checked_at and has_records (internal columns, read as superuser).
\set VERBOSITY terse
\set SHOW_CONTEXT never
SET synchronous_commit = on;

-- earlier files' topics: looked at once, so that they are not candidates
SELECT step, done FROM estream.run_maintenance() WHERE step = 'roll segments' AND done < 0;

SELECT estream.create_topic('ic_size', 2, '{"segment.bytes": 1024}');
SELECT estream.create_topic('ic_idle', 2);
SELECT estream.create_topic('ic_old', 1);
SELECT estream.create_topic('ic_alter', 1);

-- 1. a new topic's segment is looked at once: empty, it does not roll
SELECT step, done FROM estream.run_maintenance() WHERE step = 'roll segments';
SELECT t.name, s.segment, s.roll_checked_at IS NOT NULL AS looked, s.has_records
FROM estream.segment s JOIN estream.topic t USING (topic_id)
WHERE t.name LIKE 'ic\_%' ORDER BY t.name, s.segment;
SELECT s.roll_checked_at AS idle_checked
FROM estream.segment s JOIN estream.topic t USING (topic_id) WHERE t.name = 'ic_idle' \gset

-- 2. records persisted into ic_size (its segment past segment.bytes: 1 kB
--    per partition) bring it back: it rolls; the idle topic is not looked at
--    again (same roll_checked_at)
SELECT count(*) FROM estream.produce_batch('ic_size',
	ARRAY(SELECT jsonb_build_object('n', g, 'pad', repeat('x', 100)) FROM generate_series(1, 100) g));
SELECT step, done FROM estream.run_maintenance() WHERE step IN ('persist stable offsets', 'roll segments') ORDER BY step;
SELECT t.name, s.segment, s.roll_checked_at IS NOT NULL AS looked, s.has_records, s.closed_at IS NOT NULL AS closed
FROM estream.segment s JOIN estream.topic t USING (topic_id)
WHERE t.name LIKE 'ic\_%' ORDER BY t.name, s.segment;
SELECT s.roll_checked_at = :'idle_checked' AS idle_not_looked_at
FROM estream.segment s JOIN estream.topic t USING (topic_id) WHERE t.name = 'ic_idle';

-- 3. a segment known to hold records rolls once it is older than
--    segment.ms, with no new record: ic_old gets a record (looked at, not
--    old: kept, has_records), then its segment is made 8 days old (the
--    default segment.ms is 7 days)
SELECT count(*) FROM estream.produce('ic_old', '{"n": 1}');
SELECT step, done FROM estream.run_maintenance() WHERE step = 'roll segments';
SELECT s.segment, s.has_records, s.closed_at IS NOT NULL AS closed
FROM estream.segment s JOIN estream.topic t USING (topic_id) WHERE t.name = 'ic_old' ORDER BY s.segment;
UPDATE estream.segment s SET created_at = s.created_at - interval '8 days'
FROM estream.topic t WHERE t.topic_id = s.topic_id AND t.name = 'ic_old';
SELECT step, done FROM estream.run_maintenance() WHERE step = 'roll segments';
SELECT s.segment, s.closed_at IS NOT NULL AS closed
FROM estream.segment s JOIN estream.topic t USING (topic_id) WHERE t.name = 'ic_old' ORDER BY s.segment;

-- 4. an old but empty idle segment is not rolled and not looked at again
UPDATE estream.segment s SET created_at = s.created_at - interval '8 days'
FROM estream.topic t WHERE t.topic_id = s.topic_id AND t.name = 'ic_idle';
SELECT step, done FROM estream.run_maintenance() WHERE step = 'roll segments';
SELECT s.roll_checked_at = :'idle_checked' AS idle_not_looked_at, s.closed_at IS NULL AS open
FROM estream.segment s JOIN estream.topic t USING (topic_id) WHERE t.name = 'ic_idle';

-- 5. alter_topic() makes the roll step look again: ic_alter holds a
--    record and was looked at (kept: 1 GB, 7 days); segment.bytes lowered
--    to 1 kB, it rolls without a new record
SELECT count(*) FROM estream.produce_batch('ic_alter',
	ARRAY(SELECT jsonb_build_object('n', g, 'pad', repeat('x', 100)) FROM generate_series(1, 100) g));
SELECT step, done FROM estream.run_maintenance() WHERE step = 'roll segments';
SELECT estream.alter_topic('ic_alter', '{"segment.bytes": 1024}') ->> 'segment.bytes' AS segment_bytes;
SELECT s.roll_checked_at IS NULL AS to_look_at
FROM estream.segment s JOIN estream.topic t USING (topic_id)
WHERE t.name = 'ic_alter' AND s.segment = t.current_segment;
SELECT step, done FROM estream.run_maintenance() WHERE step = 'roll segments';
SELECT s.segment, s.closed_at IS NOT NULL AS closed
FROM estream.segment s JOIN estream.topic t USING (topic_id) WHERE t.name = 'ic_alter' ORDER BY s.segment;

-- 6. every active segment is looked at again at least once an hour, in
--    case records came whose persisted watermark was lost (a crash, an
--    overwritten evicted slot): ic_size's, looked at an hour and more ago
UPDATE estream.segment s SET roll_checked_at = s.roll_checked_at - interval '2 hours'
FROM estream.topic t WHERE t.topic_id = s.topic_id AND t.name = 'ic_size' AND s.segment = t.current_segment;
SELECT step, done FROM estream.run_maintenance() WHERE step = 'roll segments';
SELECT s.roll_checked_at > now() - interval '1 hour' AS looked_again
FROM estream.segment s JOIN estream.topic t USING (topic_id)
WHERE t.name = 'ic_size' AND s.segment = t.current_segment;

-- 7. bad input: run_maintenance() of a topic that does not exist
SELECT * FROM estream.run_maintenance('ic_none');
\echo :LAST_ERROR_SQLSTATE

SELECT count(estream.drop_topic(t)) FROM unnest(ARRAY['ic_size', 'ic_idle', 'ic_old', 'ic_alter']) t;
