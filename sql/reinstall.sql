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
