-- Consumer groups: poll, commit, seeks, session members, views, errors.
\set VERBOSITY terse
SET synchronous_commit = on;

SELECT estream.create_topic('gin', 2);
SELECT count(*) FROM estream.produce_batch('gin',
    ARRAY(SELECT jsonb_build_object('i', i) FROM generate_series(1, 6) i), partition => 0);
SELECT count(*) FROM estream.produce_batch('gin',
    ARRAY(SELECT jsonb_build_object('j', i) FROM generate_series(1, 4) i), partition => 1);

-- a new group starts at "latest" by default: nothing to read yet
SELECT count(*) FROM estream.poll('late', 'gin');
SELECT partition, committed_offset FROM estream.committed('late', 'gin');
-- or at "earliest" when asked
SELECT estream.create_group('early', 'earliest');
SELECT estream.create_group('early');

-- poll returns records in offset order per partition and advances the
-- committed offsets in the caller's transaction
BEGIN;
SELECT topic, partition, "offset", value FROM estream.poll('early', 'gin', 100) ORDER BY partition, "offset";
SELECT partition, committed_offset FROM estream.committed('early', 'gin');
ROLLBACK;
-- rolled back: the same records come again
SELECT partition, committed_offset FROM estream.committed('early', 'gin');
-- (poll starts at a random partition so that workers spread: show totals)
BEGIN;
SELECT count(*) FROM estream.poll('early', 'gin', 3);
COMMIT;
SELECT sum(committed_offset) AS consumed FROM estream.committed('early', 'gin');
-- max_records bounds one poll across partitions
SELECT count(*) FROM estream.poll('early', 'gin', 100);
SELECT count(*) FROM estream.poll('early', 'gin', 100);
SELECT partition, committed_offset FROM estream.committed('early', 'gin');
-- holes are skipped and the committed offset moves past them
BEGIN;
SELECT * FROM estream.produce('gin', '{"gone": true}', partition => 1);
ROLLBACK;
SELECT * FROM estream.produce('gin', '{"j": 5}', partition => 1);
SELECT partition, "offset", value FROM estream.poll('early', 'gin');
SELECT partition, committed_offset FROM estream.committed('early', 'gin');
-- a short wait times out empty
SELECT count(*) FROM estream.poll('early', 'gin', wait_ms => 50);

-- lag
SELECT "group", topic, partition, committed_offset, stable_offset, lag,
       oldest_unconsumed_age IS NULL AS caught_up
FROM estream.consumer_lag WHERE "group" IN ('early', 'late') ORDER BY 1, 2, 3;

-- commit and seeks
SELECT estream.commit('early', 'gin', 0, 2);
SELECT * FROM estream.seek('early', 'gin', 1, 1);
SELECT "group", partition, committed_offset, lag FROM estream.consumer_lag
WHERE "group" = 'early' ORDER BY partition;
SELECT partition, "offset", value FROM estream.poll('early', 'gin', 100) ORDER BY partition, "offset";
SELECT * FROM estream.seek_to_beginning('early', 'gin') ORDER BY partition;
SELECT * FROM estream.seek_to_end('early', 'gin', 0);
SELECT * FROM estream.seek_to_time('early', 'gin', now() + interval '1 day') ORDER BY partition;
SELECT * FROM estream.seek_to_time('early', 'gin', '2000-01-01') ORDER BY partition;

-- session members: round-robin assignment, ownership, rebalancing
SELECT * FROM estream.join_group('sess', ARRAY['gin'], 'm1', auto_offset_reset => 'earliest');
SELECT * FROM estream.join_group('sess', ARRAY['gin'], 'm2');
SELECT member_id, topics, alive, assignment FROM estream.group_members WHERE "group" = 'sess' ORDER BY 1;
SELECT * FROM estream.assignment('sess', 'm1');
SELECT topic, partition, "offset" FROM estream.consume('sess', 'm2', 2);
SELECT estream.commit('sess', 'gin', 1, 2, 'm2');
SELECT * FROM estream.assignment('sess', 'm2');
-- consume reads from the committed offset
SELECT topic, partition, "offset" FROM estream.consume('sess', 'm2', 10);
-- a member cannot commit a partition it does not own; nobody else can
-- commit a live member's partition; seeks are refused there too
SELECT estream.commit('sess', 'gin', 1, 3, 'm1');
SELECT estream.commit('sess', 'gin', 1, 3);
SELECT * FROM estream.seek_to_beginning('sess', 'gin');
SELECT estream.delete_group('sess');
-- leaving hands the partitions over
SELECT estream.leave_group('sess', 'm2');
SELECT * FROM estream.assignment('sess', 'm1');
SELECT estream.commit('sess', 'gin', 1, 3, 'm2');
SELECT estream.heartbeat('sess', 'm2');
SELECT estream.heartbeat('sess', 'm1') > 0 AS generation_positive;
SELECT "group", auto_offset_reset, live_members, topics FROM estream.groups ORDER BY 1;
SELECT estream.leave_group('sess', 'm1');
SELECT estream.delete_group('sess');
SELECT estream.delete_group('sess');
SELECT estream.delete_group('sess', if_exists => true);

-- bad input
SELECT * FROM estream.poll('early', 'nope');
SELECT * FROM estream.poll(NULL, 'gin');
SELECT * FROM estream.poll('', 'gin');
SELECT * FROM estream.poll('early', 'gin', 0);
SELECT * FROM estream.poll('early', 'gin', wait_ms => -1);
SELECT * FROM estream.poll('x', 'gin', auto_offset_reset => 'middle');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM estream.poll('early', 'gin');
ROLLBACK;
SELECT estream.commit('early', 'gin', 0, 999);
SELECT estream.commit('early', 'gin', 0, -1);
SELECT estream.commit('early', 'gin', 5, 0);
SELECT estream.commit('nope', 'gin', 0, 0, 'm1');
SELECT estream.commit('early', 'gin', 0, 0, 'ghost');
SELECT * FROM estream.seek('early', 'gin', 0, 999);
SELECT * FROM estream.seek('early', 'gin', NULL, 0);
SELECT * FROM estream.seek_to_time('early', 'gin', NULL);
SELECT * FROM estream.join_group('sess', '{}');
SELECT * FROM estream.join_group('sess', ARRAY['nope']);
SELECT * FROM estream.join_group('sess', ARRAY['gin'], session_timeout_ms => 5);
SELECT estream.heartbeat('nope', 'm1');
SELECT estream.leave_group('early', 'ghost');
SELECT count(*) FROM estream.consume('early', 'ghost');

-- dropping a topic drops the groups' offsets for it
SELECT estream.drop_topic('gin');
SELECT count(*) FROM estream.group_offset;
