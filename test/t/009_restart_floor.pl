
# Copyright (c) 2026, estream developers

# The restart floor: after a restart, a partition's next offset is at least
# the stable offset the worker persisted and the highest offset a consumer
# group committed, even when the stored records do not reach that far.
#
# With synchronous_commit = off a crash can lose the last committed records
# after consumers have read them.  Such a loss cannot be produced on demand,
# so the test simulates it: it deletes the last records from the segment
# (as a lost commit would leave it) and stops the server in immediate mode.
# Without the floor, the next offsets would be handed out again and a
# consumer positioned after them would skip the new records.
#
# - topic a: the worker persisted stable offset 10; the records 6 to 9 are
#   "lost"; after the restart the next record gets offset 10, not 6, and a
#   consumer at 10 reads it;
# - topic b: a group committed offset 8 (the worker is off, so nothing is
#   persisted); the records 5 to 7 are "lost"; the next record gets 8;
# - topic c: nothing persisted, no group: the next offset is 1 + the highest
#   stored one, as before 1.2 (the floor adds nothing).

use strict;
use warnings;

use EstreamNode;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = EstreamNode->create('floor', conf => "estream.worker_naptime = 100ms\n");

$node->safe_psql(
	'postgres', q{
CREATE EXTENSION estream;
SELECT estream.create_topic('a', 1);
SELECT estream.create_topic('b', 1);
SELECT estream.create_topic('c', 1);
SELECT count(*) FROM (SELECT estream.produce('a', jsonb_build_object('i', g)) FROM generate_series(0, 9) g) x;
});

# the worker persists a's stable offset
ok( $node->poll_query_until(
		'postgres', q{
SELECT p.stable_offset = 10 FROM estream.partition p JOIN estream.topic t USING (topic_id)
WHERE t.name = 'a'}),
	'the worker persisted stable offset 10 of topic a');

# from here on nothing is persisted: the floor of b and c comes from groups
# or from the stored records only
$node->append_conf('postgresql.conf', "estream.enable_worker = off\n");
$node->reload;
ok( $node->poll_query_until(
		'postgres',
		"SELECT state FROM estream.workers WHERE database = 'postgres'",
		'disabled'),
	'the worker is disabled');

$node->safe_psql(
	'postgres', q{
SELECT count(*) FROM (SELECT estream.produce('b', jsonb_build_object('i', g)) FROM generate_series(0, 7) g) x;
SELECT count(*) FROM (SELECT estream.produce('c', jsonb_build_object('i', g)) FROM generate_series(0, 4) g) x;
BEGIN;
SELECT count(*) FROM estream.poll('g', 'b', auto_offset_reset => 'earliest');
COMMIT;
});
is($node->safe_psql('postgres', "SELECT committed_offset FROM estream.committed('g', 'b')"),
	'8', 'group g committed offset 8 of topic b');
is( $node->safe_psql(
		'postgres', q{
SELECT string_agg(t.name || '=' || p.stable_offset, ',' ORDER BY t.name)
FROM estream.partition p JOIN estream.topic t USING (topic_id)}),
	'a=10,b=0,c=0',
	'only topic a has a persisted stable offset');

# "lose" the last records, as an asynchronous commit lost in a crash would
$node->safe_psql(
	'postgres', q{
DO $$
BEGIN
	EXECUTE format('DELETE FROM estream.log_%s WHERE "offset" >= 6',
				   (SELECT topic_id FROM estream.topic WHERE name = 'a'));
	EXECUTE format('DELETE FROM estream.log_%s WHERE "offset" >= 5',
				   (SELECT topic_id FROM estream.topic WHERE name = 'b'));
END
$$;
});
$node->stop('immediate');
$node->start;

is( $node->safe_psql(
		'postgres', q{
SELECT string_agg(topic || ':' || partition || ':' || log_start_offset || ':' || stable_offset
				  || ':' || next_offset, ',' ORDER BY topic)
FROM (SELECT 'a' AS topic, * FROM estream.watermarks('a')
	  UNION ALL SELECT 'b', * FROM estream.watermarks('b')
	  UNION ALL SELECT 'c', * FROM estream.watermarks('c')) w}),
	'a:0:0:10:10,b:0:0:8:8,c:0:0:5:5',
	'after the restart: a continues at its persisted stable offset, b at the committed offset, c after its last record'
);

is( $node->safe_psql(
		'postgres', q{
SELECT string_agg(t || '@' || (p).offset, ',' ORDER BY t)
FROM (SELECT 'a' AS t, estream.produce('a', '{"new": true}') AS p
	  UNION ALL SELECT 'b', estream.produce('b', '{"new": true}')
	  UNION ALL SELECT 'c', estream.produce('c', '{"new": true}')) x}),
	'a@10,b@8,c@5',
	'new records get offsets above everything a consumer could have seen');

is($node->safe_psql('postgres', q{SELECT string_agg("offset" || '=' || value::text, ',') FROM estream.fetch('a', 0, 10)}),
	'10={"new": true}', 'a consumer positioned at 10 reads the new record of a');
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg("offset" || '=' || value::text, ',') FROM estream.poll('g', 'b')}),
	'8={"new": true}',
	'group g resumes at its committed offset and gets the new record of b');
is($node->safe_psql('postgres', q{SELECT string_agg("offset"::text, ',') FROM estream.fetch('a', 0, 0)}),
	'0,1,2,3,4,5,10', 'the lost offsets of a stay a hole');

$node->stop;
done_testing();
