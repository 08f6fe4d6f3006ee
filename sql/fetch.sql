-- Fetch: ranges, limits, out-of-range offsets, offsets_for_times, watermarks.
\set VERBOSITY terse
SET synchronous_commit = on;

SELECT estream.create_topic('f', 2);
SELECT count(*) FROM estream.produce_batch('f',
    ARRAY(SELECT jsonb_build_object('i', i) FROM generate_series(0, 9) i), partition => 0);

SELECT "offset", value FROM estream.fetch('f', 0, 0, max_records => 3);
SELECT "offset", value FROM estream.fetch('f', 0, 3, 4);
SELECT "offset", value FROM estream.fetch('f', 0, 8);
-- at the stable offset: empty, no error
SELECT count(*) FROM estream.fetch('f', 0, 10);
-- a short long-poll with nothing to read times out empty
SELECT count(*) FROM estream.fetch('f', 0, 10, wait_ms => 50);
-- a long-poll returns at once when records are there
SELECT count(*) FROM estream.fetch('f', 0, 5, wait_ms => 60000);
-- the other partition is empty
SELECT count(*) FROM estream.fetch('f', 1, 0);

-- beyond the stable offset: OFFSET_OUT_OF_RANGE
SELECT * FROM estream.fetch('f', 0, 11);
SELECT * FROM estream.fetch('f', 1, 1);
-- below the log start: reset per auto_offset_reset
UPDATE estream.partition SET log_start_offset = 4
WHERE topic_id = (SELECT topic_id FROM estream.topic WHERE name = 'f') AND partition = 0;
SELECT min("offset") FROM estream.fetch('f', 0, 0);
SELECT min("offset") FROM estream.fetch('f', 0, 0, auto_offset_reset => 'earliest');
SELECT count(*) FROM estream.fetch('f', 0, 0, auto_offset_reset => 'latest');
SELECT * FROM estream.fetch('f', 0, 0, auto_offset_reset => 'error');
SELECT * FROM estream.fetch('f', 0, 0, auto_offset_reset => 'sometimes');
SELECT partition, log_start_offset, stable_offset, next_offset FROM estream.watermarks('f') ORDER BY 1;
UPDATE estream.partition SET log_start_offset = 0
WHERE topic_id = (SELECT topic_id FROM estream.topic WHERE name = 'f') AND partition = 0;

-- max_bytes bounds a fetch by size, but the first record always comes
SELECT count(*) FROM estream.fetch('f', 0, 0, max_bytes => 1);
SELECT count(*) FROM estream.fetch('f', 0, 0, max_bytes => 40);
SELECT count(*) FROM estream.fetch('f', 0, 0, max_bytes => 100000);
SELECT * FROM estream.fetch('f', 0, 0, max_bytes => 0);

-- bad arguments
SELECT * FROM estream.fetch('f', 0, -1);
SELECT * FROM estream.fetch('f', 0, 0, 0);
SELECT * FROM estream.fetch('f', 0, 0, 100001);
SELECT * FROM estream.fetch('f', 0, 0, 10, -5);
SELECT * FROM estream.fetch('f', 2, 0);
SELECT * FROM estream.fetch('f', NULL, 0);
SELECT * FROM estream.fetch('f', 0, NULL);
SELECT * FROM estream.fetch('nope', 0, 0);
SELECT * FROM estream.watermarks('nope');

-- offsets_for_times: the first offset at or after a timestamp, per partition
SELECT estream.create_topic('t', 2);
SELECT * FROM estream.produce('t', '{"at": 1}', partition => 0, ts => '2026-01-01 00:00:00+00');
SELECT * FROM estream.produce('t', '{"at": 2}', partition => 0, ts => '2026-01-02 00:00:00+00');
SELECT * FROM estream.produce('t', '{"at": 3}', partition => 0, ts => '2026-01-03 00:00:00+00');
SELECT * FROM estream.produce('t', '{"at": 2}', partition => 1, ts => '2026-01-02 00:00:00+00');
SELECT * FROM estream.offsets_for_times('t', '2026-01-01 12:00:00+00') ORDER BY partition;
SELECT * FROM estream.offsets_for_times('t', '2025-01-01 00:00:00+00') ORDER BY partition;
SELECT * FROM estream.offsets_for_times('t', '2027-01-01 00:00:00+00') ORDER BY partition;
SELECT * FROM estream.offsets_for_times('t', NULL);
SELECT * FROM estream.offsets_for_times('nope', now());

-- LogAppendTime ignores the producer's timestamp
SELECT estream.create_topic('lat', 1, '{"message.timestamp.type": "LogAppendTime"}');
SELECT * FROM estream.produce('lat', '{}', ts => '2000-01-01 00:00:00+00');
SELECT "timestamp" > '2020-01-01' AS append_time FROM estream.fetch('lat', 0, 0);
-- alter_topic takes effect in the same session
SELECT estream.alter_topic('lat', '{"message.timestamp.type": "CreateTime"}');
SELECT * FROM estream.produce('lat', '{}', ts => '2000-01-01 00:00:00+00');
SELECT "offset", "timestamp" = '2000-01-01 00:00:00+00' AS create_time FROM estream.fetch('lat', 0, 0);

-- fetch works inside REPEATABLE READ, with a fresh snapshot
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM estream.fetch('f', 0, 0);
SELECT count(*) FROM estream.fetch('f', 0, 0);
COMMIT;

-- the partitions view shows the offsets; partition_stats counts committed
-- records
SELECT v.topic, v.partition, v.log_start_offset, v.stable_offset, v.next_offset, s.records,
       s.bytes > 0 AS has_bytes, s.oldest_timestamp <= s.newest_timestamp AS ordered_times
FROM estream.partitions v JOIN estream.partition_stats s USING (topic, partition)
WHERE topic IN ('f', 't') ORDER BY topic, partition;

-- Results share one arena per session, used by one result at a time:
-- results that are alive together (nested, side by side, a cursor left
-- open, a query that failed) must each keep their own rows.
SELECT estream.create_topic('fa', 1);
SELECT count(*) FROM estream.produce_batch('fa',
    ARRAY(SELECT jsonb_build_object('n', g, 'pad', repeat('y', 200)) FROM generate_series(0, 2999) g));
-- side by side in one query, and one inside another's rows
SELECT (SELECT count(*) FROM estream.fetch('fa', 0, 0, 3000)) AS first,
       (SELECT count(*) FROM estream.fetch('fa', 0, 1000, 3000)) AS second;
SELECT count(*) AS outer_rows, sum(inner_rows) AS inner_rows,
       bool_and(a."offset" = (a.value->>'n')::bigint) AS outer_intact
FROM estream.fetch('fa', 0, 0, 3000) a,
     LATERAL (SELECT count(*) AS inner_rows FROM estream.fetch('fa', 0, least(a."offset" + 2990, 3000), 3000)) b;
-- rescanned: each call's rows, in order
SELECT i, count(*), min("offset"), max("offset")
FROM generate_series(0, 2) i, LATERAL estream.fetch('fa', 0, i * 1000, 1000) f
GROUP BY i ORDER BY i;
-- a cursor left open keeps its rows while other fetches run
BEGIN;
DECLARE c CURSOR FOR SELECT "offset", value->>'n' AS n FROM estream.fetch('fa', 0, 0, 3000);
FETCH 2 FROM c;
SELECT count(*), sum("offset") FROM estream.fetch('fa', 0, 1500, 3000);
SELECT count(*), sum("offset") FROM estream.fetch('fa', 0, 2500, 3000);
FETCH 2 FROM c;
MOVE 2994 FROM c;
FETCH ALL FROM c;
CLOSE c;
COMMIT;
-- a query that fails midway leaves nothing behind
SELECT "offset", 1 / (2000 - "offset") FROM estream.fetch('fa', 0, 0, 3000) WHERE "offset" >= 1998;
SELECT count(*), min("offset"), max("offset"), sum((value->>'n')::bigint) FROM estream.fetch('fa', 0, 0, 3000);
-- a result larger than work_mem goes to a temporary file as before
SET work_mem = '64kB';
SELECT count(*), sum((value->>'n')::bigint) AS sum_n, bool_and(length(value->>'pad') = 200) AS intact
FROM estream.fetch('fa', 0, 0, 3000);
RESET work_mem;
