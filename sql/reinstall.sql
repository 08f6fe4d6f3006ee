-- DROP EXTENSION keeps the log tables of existing topics (user data); a
-- re-created extension starts topic ids above them, so nothing collides.
\set VERBOSITY terse
SET synchronous_commit = on;
SELECT estream.create_topic('keep_me', 1);
SELECT * FROM estream.produce('keep_me', '{"old": true}');
SELECT max(topic_id) AS last_id FROM estream.topic \gset
DROP EXTENSION estream;
SELECT to_regclass('estream.log_' || :last_id) IS NOT NULL AS old_log_kept;
CREATE EXTENSION estream;
SELECT estream.create_topic('keep_me', 1);
SELECT topic_id > :last_id AS new_id_above_old FROM estream.topic WHERE name = 'keep_me';
-- a fresh topic starts at offset 0
SELECT * FROM estream.produce('keep_me', '{"new": true}');
SELECT "offset", value FROM estream.fetch('keep_me', 0, 0);

-- upgrade path: install the oldest version, then update step by step
DROP EXTENSION estream;
CREATE EXTENSION estream VERSION '1.0';
SELECT extversion FROM pg_extension WHERE extname = 'estream';
SELECT estream.create_topic('upgraded', 1);
SELECT * FROM estream.produce('upgraded', '{"before": "update"}');
ALTER EXTENSION estream UPDATE TO '1.1';
SELECT extversion FROM pg_extension WHERE extname = 'estream';
SELECT partition, "offset", value FROM estream.poll('after_update', 'upgraded', auto_offset_reset => 'earliest');
-- 1.1 to 1.2: persisted offsets, segment states, maintenance
SELECT * FROM estream.produce('upgraded', '{"before": "1.2"}');
ALTER EXTENSION estream UPDATE TO '1.2';
SELECT extversion FROM pg_extension WHERE extname = 'estream';
-- the records produced before the update are all there
SELECT partition, "offset", value FROM estream.fetch('upgraded', 0, 0) ORDER BY "offset";
SELECT * FROM estream.watermarks('upgraded');
-- the new columns, nothing persisted yet
SELECT attname, format_type(atttypid, atttypmod) AS type, attnotnull
FROM pg_attribute
WHERE attrelid = 'estream.partition'::regclass AND attnum > 0 AND NOT attisdropped
ORDER BY attnum;
SELECT p.partition, p.stable_offset, p.end_offset, p.persisted_at IS NULL AS never
FROM estream.partition p JOIN estream.topic t USING (topic_id) WHERE t.name = 'upgraded';
-- the topic's segment has a state
SELECT segment, state FROM estream.segments WHERE topic = 'upgraded';
-- maintenance works on the old topic: persists its offsets, rolls its segment
SELECT estream.alter_topic('upgraded', '{"segment.ms": 1}') ->> 'segment.ms' AS "segment.ms";
SELECT pg_sleep(0.01);
SELECT * FROM estream.run_maintenance();
SELECT p.partition, p.stable_offset, p.end_offset, p.persisted_at IS NULL AS never
FROM estream.partition p JOIN estream.topic t USING (topic_id) WHERE t.name = 'upgraded';
SELECT partition, stable_offset, persisted_stable_offset
FROM estream.partitions WHERE topic = 'upgraded';
SELECT * FROM estream.run_maintenance('upgraded');
SELECT segment, state FROM estream.segments WHERE topic = 'upgraded' ORDER BY segment;
-- producers go on in the new segment; consumers read on
SELECT * FROM estream.produce('upgraded', '{"after": "1.2"}', 'k');
SELECT partition, "offset", value FROM estream.poll('after_update', 'upgraded');
SELECT key, value FROM estream.latest('upgraded');
-- the update started this database's worker (idle here: the worker is
-- disabled in the test configuration)
DO $$
BEGIN
	FOR i IN 1 .. 300 LOOP
		EXIT WHEN EXISTS (SELECT 1 FROM estream.workers
						  WHERE database = current_database() AND state = 'disabled');
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
SELECT kind, state FROM estream.workers WHERE database = current_database();
-- 1.2 -> 1.3: change data capture
ALTER EXTENSION estream UPDATE TO '1.3';
SELECT extversion FROM pg_extension WHERE extname = 'estream';
CREATE TABLE upgraded_src (id integer PRIMARY KEY, v text);
SELECT estream.capture('upgraded_src', 'upgraded-src');
SELECT source, topic, state FROM estream.captures;
SELECT estream.uncapture('upgraded_src');
DROP TABLE upgraded_src;
