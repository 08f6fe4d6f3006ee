-- Maintenance (1.2): segment rolling and sealing, retention by time and by
-- size, compaction, latest value per key, persisted stable offsets.
--
-- The regression instance runs with estream.enable_worker = off, so nothing
-- happens unless the test calls estream.run_maintenance() (or one of its
-- steps): every count below is exact.  Segment ages are made certain with
-- segment.ms = 1 and a short pg_sleep() before the run that must roll.
\set VERBOSITY terse
\set SHOW_CONTEXT never
SET synchronous_commit = on;

-- Topics of the earlier tests: persist their offsets now, so that the
-- counts below are about this file's topics only.  None of them is old or
-- large enough to roll, so nothing else happens to them.
SELECT step, done FROM estream.run_maintenance() WHERE step <> 'persist stable offsets';

--
-- Rolling and sealing
--
SELECT estream.create_topic('m_roll', 1, '{"segment.ms": 1}');
SELECT log_relid AS roll_log FROM estream.topic WHERE name = 'm_roll' \gset
-- segment 0 exists from the start and is active
SELECT segment, state, closed_at IS NULL AS open, sealed_at IS NULL AS unsealed
FROM estream.segments WHERE topic = 'm_roll' ORDER BY segment;
-- an empty segment is never rolled, however old
SELECT pg_sleep(0.01);
SELECT * FROM estream.run_maintenance('m_roll');
SELECT * FROM estream.produce('m_roll', '{"n": 0}');
SELECT pg_sleep(0.01);
BEGIN;
-- older than segment.ms and not empty: rolled
SELECT * FROM estream.run_maintenance('m_roll');
-- the segment this transaction closed is not sealed by it (its change is
-- not visible to others yet, so a producer may still go there), and the
-- new active segment is old enough but empty: nothing to do
SELECT pg_sleep(0.01);
SELECT * FROM estream.run_maintenance('m_roll');
SELECT segment, state, closed_at IS NOT NULL AS closed, sealed_at IS NOT NULL AS sealed
FROM estream.segments WHERE topic = 'm_roll' ORDER BY segment;
COMMIT;
-- a later transaction seals it
SELECT * FROM estream.run_maintenance('m_roll');
SELECT segment, state, closed_at <= sealed_at AS sealed_after_closed, deleted_at IS NULL AS kept,
       size_bytes > 0 AS has_size
FROM estream.segments WHERE topic = 'm_roll' ORDER BY segment;
-- producers go to the new segment; readers read across both
SELECT * FROM estream.produce('m_roll', '{"n": 1}');
SELECT segment, "offset", value FROM :roll_log ORDER BY "offset";
SELECT "offset", value FROM estream.fetch('m_roll', 0, 0) ORDER BY "offset";
SELECT segments FROM estream.topics WHERE topic = 'm_roll';
SELECT estream.drop_topic('m_roll');

--
-- Retention by time
--
SELECT estream.create_topic('m_ret', 2, '{"segment.ms": 1}');
SELECT count(*) FROM estream.produce_batch('m_ret',
    ARRAY['{"i": 0}', '{"i": 1}', '{"i": 2}']::jsonb[], partition => 0);
SELECT count(*) FROM estream.produce_batch('m_ret',
    ARRAY['{"j": 0}', '{"j": 1}']::jsonb[], partition => 1);
SELECT pg_sleep(0.01);
SELECT * FROM estream.run_maintenance('m_ret');
-- from now on the active segment stays: later records must survive
SELECT estream.alter_topic('m_ret', '{"segment.ms": null}') ? 'segment.ms' AS "segment.ms set";
-- offset 3 of partition 0 is a hole, 4 a record of segment 1
BEGIN;
SELECT * FROM estream.produce('m_ret', '{"i": "rolled back"}', partition => 0);
ROLLBACK;
SELECT * FROM estream.produce('m_ret', '{"i": 4}', partition => 0);
-- sealed, but younger than retention.ms (7 days): kept
SELECT * FROM estream.run_maintenance('m_ret');
SELECT segment, state FROM estream.segments WHERE topic = 'm_ret' ORDER BY segment;
SELECT * FROM estream.watermarks('m_ret') ORDER BY partition;
SELECT estream.alter_topic('m_ret', '{"retention.ms": 0}') ->> 'retention.ms' AS "retention.ms";
-- Retention empties segment 0 and moves each log start just past the
-- partition's highest deleted offset: 3 = 1 + 2 in partition 0 (offset 3
-- itself is a hole), 2 = 1 + 1 in partition 1.  The empty table is dropped
-- by a later step; the retention step runs alone here to show the state in
-- between.
SELECT estream._apply_retention(topic_id) FROM estream.topic WHERE name = 'm_ret';
SELECT segment, state, deleted_at IS NOT NULL AS deleted,
       sealed_at <= deleted_at AS deleted_after_sealed
FROM estream.segments WHERE topic = 'm_ret' ORDER BY segment;
SELECT * FROM estream.watermarks('m_ret') ORDER BY partition;
SELECT * FROM estream.run_maintenance('m_ret');
SELECT segment, state FROM estream.segments WHERE topic = 'm_ret' ORDER BY segment;
-- the log start is in estream.partition; watermarks() and the partitions
-- view agree with it
SELECT p.partition, p.log_start_offset,
       w.log_start_offset = p.log_start_offset AS watermarks_agree,
       v.log_start_offset = p.log_start_offset AS view_agrees,
       v.stable_offset = w.stable_offset AND v.next_offset = w.next_offset AS same_offsets,
       s.records
FROM estream.partition p
     JOIN estream.topic t ON t.topic_id = p.topic_id
     JOIN estream.watermarks('m_ret') w ON w.partition = p.partition
     JOIN estream.partitions v ON v.topic = t.name AND v.partition = p.partition
     JOIN estream.partition_stats s ON s.topic = t.name AND s.partition = p.partition
WHERE t.name = 'm_ret' ORDER BY p.partition;
-- below the log start: an error if asked for, else reset to the log start
-- or to the stable offset
\set VERBOSITY default
SELECT * FROM estream.fetch('m_ret', 0, 0, auto_offset_reset => 'error');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM estream.fetch('m_ret', 1, 1, auto_offset_reset => 'error');
\set VERBOSITY terse
SELECT "offset", value FROM estream.fetch('m_ret', 0, 0, auto_offset_reset => 'earliest');
SELECT "offset", value FROM estream.fetch('m_ret', 0, 0);
SELECT "offset", value FROM estream.fetch('m_ret', 0, 0, auto_offset_reset => 'latest');
SELECT "offset", value FROM estream.fetch('m_ret', 1, 0, auto_offset_reset => 'latest');
-- at the log start itself there is nothing to reset
SELECT "offset", value FROM estream.fetch('m_ret', 0, 3, auto_offset_reset => 'error');
SELECT "offset", value FROM estream.fetch('m_ret', 1, 2, auto_offset_reset => 'error');
-- offsets go on after the deleted ones
SELECT * FROM estream.produce('m_ret', '{"j": 2}', partition => 1);
SELECT * FROM estream.produce('m_ret', '{"i": 5}', partition => 0);
SELECT partition, "offset", value FROM estream.fetch('m_ret', 0, 0)
UNION ALL
SELECT partition, "offset", value FROM estream.fetch('m_ret', 1, 0)
ORDER BY partition, "offset";
SELECT * FROM estream.watermarks('m_ret') ORDER BY partition;
-- the active segment is never deleted, whatever its age
SELECT pg_sleep(0.01);
SELECT * FROM estream.run_maintenance('m_ret');
SELECT segment, state FROM estream.segments WHERE topic = 'm_ret' ORDER BY segment;
SELECT estream.drop_topic('m_ret');

--
-- Retention by size
--
-- segment.bytes at its minimum: every non-empty segment is rolled
SELECT estream.create_topic('m_bytes', 1, '{"segment.bytes": 1024}');
SELECT * FROM estream.produce('m_bytes', '{"n": 0}');
SELECT done FROM estream.run_maintenance('m_bytes') WHERE step = 'roll segments';
SELECT * FROM estream.produce('m_bytes', '{"n": 1}');
SELECT done FROM estream.run_maintenance('m_bytes') WHERE step = 'roll segments';
SELECT * FROM estream.produce('m_bytes', '{"n": 2}');
SELECT done FROM estream.run_maintenance('m_bytes') WHERE step = 'roll segments';
SELECT * FROM estream.produce('m_bytes', '{"n": 3}');
SELECT done FROM estream.run_maintenance('m_bytes') WHERE step = 'roll segments';
SELECT * FROM estream.run_maintenance('m_bytes');
SELECT segment, state, size_bytes > 0 AS has_size FROM estream.segments
WHERE topic = 'm_bytes' ORDER BY segment;
-- The bound: the size of segments 2 to 4.  Segment 0 goes (the rest is
-- above the bound), segment 1 goes (the rest is exactly the bound), segment
-- 2 stays (without it the log would be below the bound).
SELECT sum(size_bytes) AS bound FROM estream.segments WHERE topic = 'm_bytes' AND segment >= 2 \gset
SELECT (estream.alter_topic('m_bytes', jsonb_build_object('retention.bytes', :bound))
        ->> 'retention.bytes')::bigint = :bound AS bound_set;
SELECT * FROM estream.run_maintenance('m_bytes');
SELECT segment, state FROM estream.segments WHERE topic = 'm_bytes' ORDER BY segment;
SELECT sum(size_bytes) = :bound AS at_bound FROM estream.segments WHERE topic = 'm_bytes';
SELECT * FROM estream.watermarks('m_bytes');
SELECT "offset", value FROM estream.fetch('m_bytes', 0, 0) ORDER BY "offset";
-- at the bound: nothing more goes
SELECT * FROM estream.run_maintenance('m_bytes');
SELECT estream.drop_topic('m_bytes');

--
-- Retention does not apply to a topic that is only compacted
--
SELECT estream.create_topic('m_keep', 1,
    '{"segment.ms": 1, "cleanup.policy": "compact", "retention.ms": 0, "retention.bytes": 0}');
SELECT count(*) FROM estream.produce_batch('m_keep',
    ARRAY['{"v": 1}', '{"v": 2}']::jsonb[], ARRAY['a', 'b']);
SELECT pg_sleep(0.01);
SELECT * FROM estream.run_maintenance('m_keep');
SELECT * FROM estream.run_maintenance('m_keep');
SELECT segment, state FROM estream.segments WHERE topic = 'm_keep' ORDER BY segment;
SELECT "offset", key, value FROM estream.fetch('m_keep', 0, 0) ORDER BY "offset";
SELECT * FROM estream.watermarks('m_keep');
SELECT estream.drop_topic('m_keep');

--
-- Compaction
--
SELECT estream.create_topic('m_cmp', 1,
    '{"cleanup.policy": "compact", "min.cleanable.dirty.ratio": 0.01, "segment.ms": 1}');
SELECT log_relid AS cmp_log FROM estream.topic WHERE name = 'm_cmp' \gset
SELECT * FROM estream.produce('m_cmp', '{"a": 1}', 'a');
SELECT * FROM estream.produce('m_cmp', '{"b": 1}', 'b');
SELECT * FROM estream.produce('m_cmp', '{"a": 2}', 'a');
SELECT * FROM estream.produce('m_cmp', '{"c": 1}', 'c');
SELECT * FROM estream.produce('m_cmp', '{"a": 3}', 'a');
-- a tombstone for c
SELECT * FROM estream.produce('m_cmp', NULL, 'c');
SELECT * FROM estream.produce('m_cmp', '{"d": 1}', 'd');
SELECT pg_sleep(0.01);
SELECT done FROM estream.run_maintenance('m_cmp') WHERE step = 'roll segments';
SELECT estream.alter_topic('m_cmp', '{"segment.ms": null}') ? 'segment.ms' AS "segment.ms set";
-- into the active segment: a newer a, and d twice
SELECT * FROM estream.produce('m_cmp', '{"d": 2}', 'd');
SELECT * FROM estream.produce('m_cmp', '{"d": 3}', 'd');
SELECT * FROM estream.produce('m_cmp', '{"a": 4}', 'a');
CREATE TEMP TABLE latest_before AS SELECT * FROM estream.latest('m_cmp');
SELECT "offset", key, value FROM latest_before ORDER BY key;
-- segment 0 is sealed, then cleaned: a1 to a3 (a newer a exists, even if in
-- the active segment), c1 (the tombstone is newer) and d1 go; b1 and the
-- tombstone stay (delete.retention.ms, one day, has not passed).  The
-- active segment is not touched: d2 stays although d3 is newer.
SELECT * FROM estream.run_maintenance('m_cmp');
SELECT segment, state FROM estream.segments WHERE topic = 'm_cmp' ORDER BY segment;
SELECT "offset", key, value FROM estream.fetch('m_cmp', 0, 0) ORDER BY "offset";
SELECT segment, "offset", convert_from(key, 'UTF8') AS key FROM :cmp_log ORDER BY "offset";
SELECT * FROM estream.watermarks('m_cmp');
-- the table view does not change
SELECT count(*) AS changed FROM (
    (TABLE latest_before EXCEPT SELECT * FROM estream.latest('m_cmp'))
    UNION ALL
    (SELECT * FROM estream.latest('m_cmp') EXCEPT TABLE latest_before)) x;
-- nothing more to clean
SELECT done FROM estream.run_maintenance('m_cmp') WHERE step = 'compact';
-- once delete.retention.ms has passed, the tombstone goes too
SELECT estream.alter_topic('m_cmp', '{"delete.retention.ms": 0}')
       ->> 'delete.retention.ms' AS "delete.retention.ms";
SELECT done FROM estream.run_maintenance('m_cmp') WHERE step = 'compact';
SELECT "offset", key, value FROM estream.fetch('m_cmp', 0, 0) ORDER BY "offset";
SELECT count(*) AS changed FROM (
    (TABLE latest_before EXCEPT SELECT * FROM estream.latest('m_cmp'))
    UNION ALL
    (SELECT * FROM estream.latest('m_cmp') EXCEPT TABLE latest_before)) x;
-- records younger than min.compaction.lag.ms stay, superseded or not
SELECT estream.alter_topic('m_cmp', '{"min.compaction.lag.ms": 86400000}')
       ->> 'min.compaction.lag.ms' AS "min.compaction.lag.ms";
SELECT * FROM estream.produce('m_cmp', '{"b": 2}', 'b');
SELECT estream.alter_topic('m_cmp', '{"segment.ms": 1}') ->> 'segment.ms' AS "segment.ms";
SELECT pg_sleep(0.01);
SELECT done FROM estream.run_maintenance('m_cmp') WHERE step = 'roll segments';
SELECT estream.alter_topic('m_cmp', '{"segment.ms": null}') ? 'segment.ms' AS "segment.ms set";
SELECT * FROM estream.run_maintenance('m_cmp');
SELECT segment, state FROM estream.segments WHERE topic = 'm_cmp' ORDER BY segment;
SELECT "offset", key, value FROM estream.fetch('m_cmp', 0, 0) ORDER BY "offset";
-- without the lag, b1 and d2 go (segment 1 is sealed now)
SELECT estream.alter_topic('m_cmp', '{"min.compaction.lag.ms": null}')
       ? 'min.compaction.lag.ms' AS "min.compaction.lag.ms set";
SELECT done FROM estream.run_maintenance('m_cmp') WHERE step = 'compact';
SELECT "offset", key, value FROM estream.fetch('m_cmp', 0, 0) ORDER BY "offset";
SELECT "offset", key, value FROM estream.latest('m_cmp') ORDER BY key;

--
-- Compacted topics need keys
--
\set VERBOSITY default
SELECT * FROM estream.produce('m_cmp', '{"no": "key"}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM estream.produce_batch('m_cmp',
    ARRAY['{"x": 1}', '{"x": 2}']::jsonb[], ARRAY['x', NULL]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM estream.produce_batch('m_cmp', ARRAY['{"x": 1}']::jsonb[]);
SELECT * FROM estream.produce_binary('m_cmp', '\x01');
\set VERBOSITY terse
-- nothing was taken: the next offset is the one after the last record
SELECT * FROM estream.watermarks('m_cmp');
SELECT estream.drop_topic('m_cmp');

-- A topic that becomes compacted keeps its records without a key:
-- compaction only removes records superseded by a record of the same key.
SELECT estream.create_topic('m_nokey', 1);
SELECT * FROM estream.produce('m_nokey', '{"n": 1}');
SELECT * FROM estream.produce('m_nokey', '{"k": 1}', 'k');
SELECT * FROM estream.produce('m_nokey', '{"n": 2}');
SELECT * FROM estream.produce('m_nokey', '{"k": 2}', 'k');
SELECT estream.alter_topic('m_nokey',
    '{"cleanup.policy": "compact", "min.cleanable.dirty.ratio": 0, "segment.ms": 1}');
SELECT pg_sleep(0.01);
SELECT done FROM estream.run_maintenance('m_nokey') WHERE step = 'roll segments';
SELECT * FROM estream.run_maintenance('m_nokey');
SELECT "offset", key, value FROM estream.fetch('m_nokey', 0, 0) ORDER BY "offset";
SELECT * FROM estream.produce('m_nokey', '{"n": 3}');
SELECT estream.drop_topic('m_nokey');

--
-- Latest value per key
--
SELECT estream.create_topic('m_lat', 3);
SELECT count(*) FROM estream.produce_batch('m_lat',
    ARRAY(SELECT jsonb_build_object('v', i) FROM generate_series(1, 8) i),
    ARRAY(SELECT 'k' || (i % 4) FROM generate_series(1, 8) i));
-- keys spread over the partitions
SELECT count(DISTINCT partition) AS partitions FROM estream.latest('m_lat');
SELECT partition, "offset", key, value, headers FROM estream.latest('m_lat') ORDER BY key;
-- a tombstone hides its key; a later record brings it back
SELECT * FROM estream.produce('m_lat', NULL, 'k1');
SELECT key FROM estream.latest('m_lat') ORDER BY key;
SELECT * FROM estream.produce('m_lat', '{"v": "back"}', 'k1', headers => '{"h": "1"}');
SELECT key, value, headers FROM estream.latest('m_lat') WHERE key = 'k1';
-- records without a key are not in it
SELECT * FROM estream.produce('m_lat', '{"v": "no key"}', partition => 0);
SELECT count(*) FROM estream.latest('m_lat');
-- binary values: null as JSON, as bytes in latest_binary(); JSON values
-- are given as their text
SELECT * FROM estream.produce_binary('m_lat', '\x00ff', 'kb'::bytea);
SELECT * FROM estream.produce_binary('m_lat', NULL, '\xfe'::bytea);
SELECT key, value FROM estream.latest('m_lat') WHERE key IN ('k0', 'kb') ORDER BY key;
SELECT key, value FROM estream.latest_binary('m_lat') ORDER BY key;
-- in the caller's snapshot: its own uncommitted records are in it
BEGIN;
SELECT * FROM estream.produce('m_lat', NULL, 'k2');
SELECT key FROM estream.latest('m_lat') ORDER BY key;
ROLLBACK;
SELECT key FROM estream.latest('m_lat') ORDER BY key;
-- joined with a normal table
CREATE TEMP TABLE accounts (key text PRIMARY KEY, owner text);
INSERT INTO accounts VALUES ('k0', 'ann'), ('k2', 'bob'), ('k9', 'cid');
SELECT a.key, a.owner, l.value
FROM accounts a LEFT JOIN estream.latest('m_lat') l ON l.key = a.key
ORDER BY a.key;
SELECT * FROM estream.latest('nope');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM estream.latest_binary('nope');
SELECT estream.drop_topic('m_lat');

--
-- Persisted stable offsets
--
SELECT estream.create_topic('m_per', 2);
SELECT count(*) FROM estream.produce_batch('m_per',
    ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}']::jsonb[], partition => 1);
-- not yet persisted
SELECT p.partition, p.stable_offset, p.end_offset, p.persisted_at IS NULL AS never
FROM estream.partition p JOIN estream.topic t USING (topic_id)
WHERE t.name = 'm_per' ORDER BY p.partition;
SELECT partition, stable_offset, persisted_stable_offset, persisted_at IS NULL AS never
FROM estream.partitions WHERE topic = 'm_per' ORDER BY partition;
-- the run persists the one partition that moved
SELECT * FROM estream.run_maintenance('m_per');
SELECT p.partition, p.stable_offset, p.stable_offset = w.stable_offset AS stable_agrees,
       p.end_offset, p.end_offset = w.next_offset AS next_agrees, p.persisted_at IS NULL AS never
FROM estream.partition p JOIN estream.topic t USING (topic_id)
     JOIN estream.watermarks('m_per') w ON w.partition = p.partition
WHERE t.name = 'm_per' ORDER BY p.partition;
SELECT partition, stable_offset, persisted_stable_offset FROM estream.partitions
WHERE topic = 'm_per' ORDER BY partition;
-- nothing moved: nothing written
SELECT done FROM estream.run_maintenance('m_per') WHERE step = 'persist stable offsets';
-- an open producing transaction holds the stable offset back, and so the
-- persisted one; the next offset is persisted as it is
BEGIN;
SELECT * FROM estream.produce('m_per', '{"n": 4}', partition => 1);
SELECT * FROM estream.run_maintenance('m_per') WHERE step = 'persist stable offsets';
SELECT p.stable_offset, p.end_offset FROM estream.partition p JOIN estream.topic t USING (topic_id)
WHERE t.name = 'm_per' AND p.partition = 1;
COMMIT;
SELECT done FROM estream.run_maintenance('m_per') WHERE step = 'persist stable offsets';
SELECT p.stable_offset, p.end_offset FROM estream.partition p JOIN estream.topic t USING (topic_id)
WHERE t.name = 'm_per' AND p.partition = 1;
SELECT estream.drop_topic('m_per');

--
-- The workers
--
-- estream.enable_worker is off here: the launcher runs and starts this
-- database's worker, which does nothing.  (It starts within a second of
-- CREATE EXTENSION: wait for it if this test runs alone.)
DO $$
BEGIN
	FOR i IN 1 .. 300 LOOP
		EXIT WHEN EXISTS (SELECT 1 FROM estream.workers
						  WHERE kind = 'database' AND database = current_database()
							AND state <> 'starting');
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
SELECT kind, state FROM estream.workers
WHERE kind = 'launcher' OR database = current_database() ORDER BY kind;
-- it counts no runs
SELECT runs, segments_rolled, errors FROM estream.workers WHERE database = current_database();

--
-- Bad input
--
-- no topic (NULL): every topic
SELECT estream.create_topic('m_all1', 1, '{"segment.ms": 1}');
SELECT estream.create_topic('m_all2', 2, '{"segment.ms": 1}');
SELECT * FROM estream.produce('m_all1', '{"n": 1}');
SELECT * FROM estream.produce('m_all2', '{"n": 1}', partition => 1);
SELECT pg_sleep(0.01);
SELECT * FROM estream.run_maintenance(NULL);
SELECT topic, segment, state FROM estream.segments
WHERE topic LIKE 'm\_all_' ORDER BY topic, segment;
SELECT estream.drop_topic('m_all1');
SELECT estream.drop_topic('m_all2');
-- an unknown topic
\set VERBOSITY default
SELECT * FROM estream.run_maintenance('nope');
\echo :LAST_ERROR_SQLSTATE
-- retention and compaction must see records committed after the
-- transaction started
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM estream.run_maintenance();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT * FROM estream.run_maintenance();
ROLLBACK;
\set VERBOSITY terse
-- the steps refuse it too
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT estream._apply_retention();
ROLLBACK;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT estream._compact();
ROLLBACK;
-- The rewrite of a segment only takes segments of estream topics.  Tried:
-- a catalog table, estream's own tables, a topic's log (the partitioned
-- parent), a table named like a segment outside the schema, an index of a
-- segment.  (The messages carry OIDs: show the SQLSTATE only.)
SELECT estream.create_topic('m_rw', 1);
SELECT * FROM estream.produce('m_rw', '{"n": 0}', 'k');
SELECT log_relid AS rw_log, log_relid::text || '_0' AS rw_seg
FROM estream.topic WHERE name = 'm_rw' \gset
CREATE TABLE public.log_1_0 (LIKE :rw_log);
\set VERBOSITY sqlstate
SELECT estream._rewrite_segment('pg_class', '{0}', '{0}');
SELECT estream._rewrite_segment('estream.topic', '{0}', '{0}');
SELECT estream._rewrite_segment('estream.segment', '{0}', '{0}');
SELECT estream._rewrite_segment(:'rw_log', '{0}', '{0}');
SELECT estream._rewrite_segment('public.log_1_0', '{0}', '{0}');
SELECT estream._rewrite_segment((:'rw_seg' || '_pkey')::regclass, '{0}', '{0}');
\set VERBOSITY terse
DROP TABLE public.log_1_0;
-- a real segment: arrays of different lengths or with nulls are refused;
-- null arguments give null (the function is strict); nothing to remove
-- (no such record, or empty arrays) removes nothing
SELECT estream._rewrite_segment(:'rw_seg', '{0,0}', '{0}');
\echo :LAST_ERROR_SQLSTATE
SELECT estream._rewrite_segment(:'rw_seg', '{NULL}', '{0}');
\echo :LAST_ERROR_SQLSTATE
SELECT estream._rewrite_segment(:'rw_seg', NULL, '{0}') IS NULL AS null_result;
SELECT estream._rewrite_segment(:'rw_seg', '{0}', '{7}');
SELECT estream._rewrite_segment(:'rw_seg', '{}', '{}');
SELECT "offset", key, value FROM estream.fetch('m_rw', 0, 0);
-- Maintenance is not for everyone: a role that may use the schema (to
-- produce and fetch) can neither run it nor call its steps (the rewrite
-- would lock any segment before checking a privilege).
CREATE ROLE regress_estream_user;
GRANT USAGE ON SCHEMA estream TO regress_estream_user;
SET ROLE regress_estream_user;
SELECT * FROM estream.run_maintenance('m_rw');
\echo :LAST_ERROR_SQLSTATE
SELECT estream._rewrite_segment(:'rw_seg', '{0}', '{7}');
SELECT estream._apply_retention();
SELECT estream._compact();
SELECT count(*) FROM estream._shared_partitions();
RESET ROLE;
REVOKE USAGE ON SCHEMA estream FROM regress_estream_user;
DROP ROLE regress_estream_user;
SELECT estream.drop_topic('m_rw');

-- One topic never stops maintenance of the others (1.4).  Kafka's largest
-- values are accepted and mean "never"; a topic whose step fails (its
-- configuration row damaged behind estream's back, here) is recorded in
-- estream.maintenance_errors and the step goes on with the other topics.
SELECT estream.create_topic('m_never', 1, '{"segment.ms": 9223372036854775807,
    "retention.ms": 9223372036854775807, "segment.bytes": 9223372036854775807,
    "retention.bytes": 9223372036854775807}');
SELECT estream.create_topic('m_never_c', 1, '{"cleanup.policy": "compact",
    "delete.retention.ms": 9223372036854775807, "min.compaction.lag.ms": 9223372036854775807,
    "segment.ms": 1}');
SELECT estream.create_topic('m_broken', 1, '{"segment.ms": 1, "retention.ms": 0}');
SELECT estream.create_topic('m_fine', 1, '{"segment.ms": 1, "retention.ms": 0}');
SELECT count(*) FROM unnest(ARRAY['m_never', 'm_never_c', 'm_broken', 'm_fine']) t,
    LATERAL estream.produce_batch(t, ARRAY['{}', '{}']::jsonb[], ARRAY['k', 'k']) p;
UPDATE estream.topic SET config = '{"segment.ms": "soon", "retention.ms": "0"}' WHERE name = 'm_broken';
SELECT pg_sleep(0.01);
SELECT step, done FROM estream.run_maintenance() WHERE step IN ('roll segments', 'compact');
SELECT pg_sleep(0.01);
SELECT step, done FROM estream.run_maintenance() WHERE step IN ('seal segments', 'apply retention');
SELECT topic, step, sqlstate, message, occurrences FROM estream.maintenance_errors
WHERE topic LIKE 'm\_%' ORDER BY topic, step;
-- the other topics were rolled and emptied; the "never" topics kept theirs
SELECT topic, segment, state FROM estream.segments
WHERE topic IN ('m_never', 'm_never_c', 'm_broken', 'm_fine') ORDER BY topic, segment;
-- the error goes when the step succeeds again on the topic
UPDATE estream.topic SET config = '{"segment.ms": "1", "retention.ms": "0"}' WHERE name = 'm_broken';
SELECT count(*) > 0 AS rolled FROM estream.run_maintenance('m_broken') WHERE step = 'roll segments' AND done > 0;
SELECT count(*) AS errors_left FROM estream.maintenance_errors WHERE topic LIKE 'm\_%';
SELECT estream.drop_topic(t) FROM unnest(ARRAY['m_never', 'm_never_c', 'm_broken', 'm_fine']) t;
-- this instance runs with estream.enable_worker = off: the view says that
-- no topic is maintained (but run_maintenance() works, as above)
DO $$ BEGIN   -- (once the worker saw it is disabled, within a second)
FOR i IN 1 .. 200 LOOP EXIT WHEN estream._worker_missing() IS NOT NULL; PERFORM pg_sleep(0.05); END LOOP;
END $$;
SELECT topic, step, sqlstate, message FROM estream.maintenance_errors WHERE topic IS NULL;

