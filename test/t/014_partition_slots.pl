
# Copyright (c) 2026, estream developers

# Shared partition slots (estream.max_partitions = 16) bound the partitions
# in use at once, not the partitions that exist, in every database:
#
# 1. with 40 partitions in each of two databases, reading all of them
#    (estream.partitions, watermarks(), fetch(), offsets_for_times(),
#    consumer_lag, a long-poll fetch that times out) succeeds and takes no
#    slot, and shows the stored offsets;
# 2. producing to all 80 partitions, round after round, evicts idle slots
#    and continues every partition exactly where it was (dense offsets, in
#    both databases), and a fetch long-polling a partition without a slot
#    wakes when a record is produced there;
# 3. the evicted slots' stable offsets are persisted by the worker;
# 4. a produce_batch to more partitions than max_partitions_per_transaction
#    (20) fails with 54000 before reserving anything: no hole, no slot; one
#    to more partitions than there are slots (17) fails with 53200, also
#    leaving no hole, and takes no slot for good;
# 5. when open transactions hold every slot, only a call that needs one
#    more fails (53200, with a hint), while the other database goes on
#    producing to the partition it holds and reads every partition; once
#    the transactions end, producing works again;
# 6. the slots of a dropped topic are reclaimed by the worker.

use strict;
use warnings;

use EstreamNode;
use PostgreSQL::Test::Utils;
use Test::More;

# deliberately few partition slots (the minimum; see above)
my $node = EstreamNode->create(
	'slots',
	conf => "estream.max_partitions = 16\n"
	  . "estream.max_partitions_per_transaction = 20\n"
	  . "estream.worker_naptime = 100ms\n"
	  . "max_connections = 30\n");

my @dbs = ('postgres', 'db2');
my @topics = map { "t$_" } 0 .. 9;    # 4 partitions each
$node->safe_psql('postgres', 'CREATE DATABASE db2');
for my $db (@dbs)
{
	$node->safe_psql($db, 'CREATE EXTENSION estream');
	$node->safe_psql($db,
		join('', map { "SELECT estream.create_topic('$_', 4);\n" } @topics));
	# one record to each of the first n partitions of a topic, each in its
	# own transaction (one transaction could hold only 16 slots)
	$node->safe_psql(
		$db, q{
CREATE TABLE got (tag text, topic text, partition int, "offset" bigint);
CREATE PROCEDURE produce_each(tp text, n int, tg text)
LANGUAGE plpgsql AS $$
DECLARE
	o bigint;
BEGIN
	FOR p IN 0 .. n - 1 LOOP
		o := (estream.produce(tp, jsonb_build_object('tag', tg), partition => p))."offset";
		INSERT INTO got VALUES (tg, tp, p, o);
		COMMIT;
	END LOOP;
END
$$;
});
}

# The output of a query, or its error (so that a failing read shows as a
# failed test, not as the end of the script).
sub try_psql
{
	my ($db, $sql) = @_;
	my ($ret, $stdout, $stderr) = $node->psql($db, $sql);
	return $ret == 0 ? $stdout : "ERROR: $stderr";
}

# Slots in use: in the server, and of this database.
sub used
{
	my ($db) = @_;
	return $node->safe_psql($db,
		'SELECT used FROM estream.partition_slots');
}

sub this_db_slots
{
	my ($db) = @_;
	return $node->safe_psql($db,
		'SELECT count(*) FROM estream._shared_partitions()');
}

# partition:stable:next of every partition of every topic, one line
sub all_watermarks
{
	my ($db) = @_;
	return $node->safe_psql(
		$db, q{
SELECT string_agg(format('%s/%s:%s:%s', t.name, w.partition, w.stable_offset, w.next_offset), ','
				  ORDER BY t.name, w.partition)
FROM estream.topic t, estream.watermarks(t.name) w});
}

# Produce one record to every partition of every topic of a database, each
# in its own transaction; returns the offsets, one line.
sub produce_round
{
	my ($db, $tag) = @_;
	$node->safe_psql($db,
		join('', map { "CALL produce_each('$_', 4, '$tag');\n" } @topics));
	return $node->safe_psql(
		$db, qq{
SELECT string_agg(format('%s/%s:%s', topic, partition, "offset"), ',' ORDER BY topic, partition)
FROM got WHERE tag = '$tag'});
}

# The same line with every offset equal to $o.
sub expected_offsets
{
	my ($o) = @_;
	return join(',', map { my $t = $_; map { "$t/$_:$o" } 0 .. 3 } @topics);
}

#
# 1. Reads take no slot.  Records first (two per partition in db2's t0,
#    one per partition elsewhere), 16 partitions at a time with a restart in
#    between (so that this part needs no eviction), then a restart: no slot
#    is in use.
#
my @pairs = map { my $db = $_; map { [ $db, $_ ] } @topics } @dbs;
while (my @chunk = splice(@pairs, 0, 4))
{
	for my $pair (@chunk)
	{
		my ($db, $topic) = @$pair;
		$node->safe_psql($db, "CALL produce_each('$topic', 4, 'seed')");
		$node->safe_psql($db, "CALL produce_each('$topic', 4, 'second')")
		  if $db eq 'db2' && $topic eq 't0';
	}
	$node->restart;
}
for my $db (@dbs)
{
	is( $node->safe_psql(
			$db, q{
SELECT string_agg(format('%s/%s:%s', topic, partition, "offset"), ',' ORDER BY topic, partition)
FROM got WHERE tag = 'seed'}),
		expected_offsets(0),
		"$db: one record per partition, at offset 0");
}

for my $db (@dbs)
{
	is( try_psql(
			$db, 'SELECT count(*), sum(stable_offset), sum(next_offset) FROM estream.partitions'),
		$db eq 'db2' ? '40|44|44' : '40|40|40',
		"$db: estream.partitions shows every partition with its stored offsets");
	is( try_psql(
			$db, q{
SELECT count(*) FROM estream.topic t, generate_series(0, 3) p, estream.fetch(t.name, p, 0) f}),
		$db eq 'db2' ? '44' : '40',
		"$db: fetch() reads every record of every partition");
	is( try_psql(
			$db, q{
SELECT count(*) FROM estream.topic t, estream.offsets_for_times(t.name, '-infinity') o
WHERE o."offset" = 0}),
		'40',
		"$db: offsets_for_times() finds the first record of every partition");
	try_psql($db,
		q{SELECT estream.create_group('g'); SELECT count(*) FROM estream.topic t, estream.seek_to_beginning('g', t.name) s});
	is( try_psql(
			$db, 'SELECT count(*), sum(lag) FROM estream.consumer_lag'),
		$db eq 'db2' ? '40|44' : '40|40',
		"$db: estream.consumer_lag shows the lag of every partition");
	is(try_psql($db, q{SELECT count(*) FROM estream.fetch('t1', 0, 1, wait_ms => 50)}),
		'0', "$db: a long-poll fetch with nothing to read times out");
	is(this_db_slots($db), '0', "$db: the reads took no slot");
}
is( try_psql('db2', q{SELECT count(*) FROM estream.topic t, estream.watermarks(t.name) w}),
	'40', 'watermarks() of 40 partitions');
is(used('postgres'), '0', 'no slot is in use after reading 80 partitions');
is( $node->safe_psql('postgres', 'SELECT created, evicted, refused FROM estream.partition_slots'),
	'0|0|0', 'no slot was ever given or refused');

#
# 2. Producing to 80 partitions through 16 slots, three rounds, alternating
#    databases: every partition continues where it was.  Meanwhile a fetch
#    long-polls a partition without a slot and wakes when it gets a record.
#
my $poll = $node->background_psql('postgres');
$poll->query_until(qr/polling/, q{
\echo polling
SELECT "offset", value->>'tag' FROM estream.fetch('t9', 3, 1, wait_ms => 60000);
});
ok( $node->poll_query_until(
		'postgres', q{
SELECT count(*) = 1 FROM pg_stat_activity
WHERE query LIKE 'SELECT "offset", value->>''tag'' FROM estream.fetch%' AND wait_event = 'Extension'}),
	'a fetch long-polls partition 3 of t9, which has no slot');
is(this_db_slots('postgres'), '0', 'the long-poll took no slot');

for my $round (1 .. 3)
{
	for my $db (@dbs)
	{
		my $got = produce_round($db, "round$round");
		my $want = expected_offsets($round);
		# db2's t0 had two records per partition
		if ($db eq 'db2')
		{
			my $o = $round + 1;
			$want =~ s{t0/(\d):\d+}{t0/$1:$o}g;
		}
		is($got, $want, "$db: round $round continues every partition densely");
	}
}
my ($pout) = $poll->query('');
like($pout, qr/^1\|round1$/m, 'the long-poll woke with the record of round 1');
$poll->quit;

cmp_ok($node->safe_psql('postgres', 'SELECT evicted FROM estream.partition_slots'),
	'>=', 80 * 3 - 16, 'idle slots were evicted for other partitions');
cmp_ok(used('postgres'), '<=', 16, 'never more slots in use than there are');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM estream.topic t, generate_series(0, 3) p, estream.fetch(t.name, p, 0) f}),
	'160', 'postgres: every record is there, once');
is( $node->safe_psql(
		'db2', q{
SELECT string_agg(DISTINCT format('%s:%s', stable_offset, next_offset), ',') FROM estream.partitions
WHERE topic <> 't0'}),
	'4:4', 'db2: every partition is at stable offset 4, whether it has a slot or not');

#
# 3. The worker persists the stable offsets of evicted slots too.
#
for my $db (@dbs)
{
	ok( $node->poll_query_until(
			$db, q{
SELECT count(*) = 0 FROM estream.partitions WHERE persisted_stable_offset IS DISTINCT FROM stable_offset}),
		"$db: the worker persisted the stable offset of every partition, evicted or not");
}

#
# 4. Failed produce calls leave no hole and keep no slot.  Topic wide has 24
#    partitions; keys k1..k400 spread over all of them.
#
$node->safe_psql('postgres', q{SELECT estream.create_topic('wide', 24)});
my $keys = q{ARRAY(SELECT 'k' || g FROM generate_series(1, 400) g)};
my $vals = q{ARRAY(SELECT '{}'::jsonb FROM generate_series(1, 400) g)};
is( $node->safe_psql(
		'postgres',
		"SELECT count(DISTINCT estream.partition_for(k, 24)) FROM unnest($keys) k"),
	'24', 'the keys cover the 24 partitions');
my $before_wm = all_watermarks('postgres');
my $before_used = used('postgres');
my ($ret, $stdout, $stderr) = $node->psql(
	'postgres',
	"SELECT count(*) FROM estream.produce_batch('wide', $vals, $keys)",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($stderr, qr/ERROR:  54000: transaction produces to too many partitions/,
	'a batch to 24 partitions exceeds max_partitions_per_transaction (54000)');
like($stderr, qr/DETAIL:  The call would make the transaction produce to 24 partitions; one transaction can produce to at most 20\./,
	'the detail says how many partitions it needed');
is(all_watermarks('postgres'), $before_wm, 'it reserved no offset: no hole');
is(used('postgres'), $before_used, 'it took no slot');

# 17 partitions fit the transaction but not the 16 slots
my $keys17 = q{ARRAY(SELECT k FROM unnest(ARRAY(SELECT 'k' || g FROM generate_series(1, 400) g)) k
	WHERE estream.partition_for(k, 24) < 17)};
($ret, $stdout, $stderr) = $node->psql(
	'postgres',
	"SELECT count(*) FROM estream.produce_batch('wide', ARRAY(SELECT '{}'::jsonb FROM unnest($keys17)), $keys17)",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($stderr, qr/ERROR:  53200: out of estream partition slots/,
	'a batch to 17 partitions needs more slots than there are (53200)');
like($stderr, qr/HINT:  Increase estream.max_partitions/, 'with a hint');
is(all_watermarks('postgres'), $before_wm, 'it reserved no offset either');
$node->safe_psql('postgres', q{CALL produce_each('wide', 24, 'wide')});
is( $node->safe_psql(
		'postgres', q{
SELECT string_agg(format('%s:%s', partition, "offset"), ',' ORDER BY partition)
FROM got WHERE tag = 'wide'}),
	join(',', map { "$_:0" } 0 .. 23),
	'the next records of every partition of wide get offset 0: no hole');
is( $node->safe_psql('postgres', 'SELECT held FROM estream.partition_slots'),
	'0', 'the failed calls hold no slot');

#
# 5. Open transactions hold every slot: 15 partitions of wide in postgres,
#    partition 0 of t0 in db2.
#
my $hold1 = $node->background_psql('postgres');
$hold1->query_safe('BEGIN');
$hold1->query_safe(q{SELECT estream.produce('wide', '{"held": true}', partition => p) FROM generate_series(0, 14) p});
my $hold2 = $node->background_psql('db2');
$hold2->query_safe('BEGIN');
$hold2->query_safe(q{SELECT estream.produce('t0', '{"held": true}', partition => 0)});
is($node->safe_psql('postgres', 'SELECT held FROM estream.partition_slots'),
	'16', 'open transactions hold all 16 slots');

my $refused = $node->safe_psql('postgres', 'SELECT refused FROM estream.partition_slots');
($ret, $stdout, $stderr) = $node->psql(
	'postgres',
	q{SELECT estream.produce('wide', '{}', partition => 20)},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($stderr, qr/ERROR:  53200: out of estream partition slots/,
	'producing to one more partition fails with 53200');
like($stderr,
	qr/DETAIL:  All 16 slots for partition state in shared memory are held by open transactions/,
	'the detail says why');
like($stderr,
	qr/HINT:  Increase estream.max_partitions and restart the server, or produce to fewer partitions in open transactions at once\./,
	'the hint says what to do');
($ret, $stdout, $stderr) =
  $node->psql('db2', q{SELECT estream.produce('t5', '{}', partition => 1)});
like($stderr, qr/out of estream partition slots/,
	'db2 cannot take one more slot either');
is($node->safe_psql('postgres', 'SELECT refused FROM estream.partition_slots'),
	$refused + 2, 'the refused calls are counted');

# db2 goes on producing where it holds a slot, and reads everything
is( $node->safe_psql(
		'db2', q{
SELECT string_agg((estream.produce('t0', jsonb_build_object('i', g), partition => 0))."offset"::text, ',')
FROM generate_series(1, 3) g}),
	'6,7,8', 'db2 goes on producing to the partition whose slot its transaction holds');
is( $node->safe_psql('db2', 'SELECT count(*), sum(stable_offset) FROM estream.partitions'),
	'40|164', 'db2 reads every partition (t0/0 is held back at 5 by the open transaction)');
is( $node->safe_psql(
		'db2', q{SELECT count(*) FROM estream.topic t, generate_series(0, 3) p, estream.fetch(t.name, p, 0) f}),
	'164', 'db2 fetches every partition');
is($node->safe_psql('postgres', q{SELECT stable_offset FROM estream.watermarks('wide') WHERE partition = 20}),
	'1', 'postgres reads a partition without a slot');

$hold1->query_safe('COMMIT');
$hold2->query_safe('COMMIT');
$hold1->quit;
$hold2->quit;
is( $node->safe_psql('postgres',
		q{SELECT "offset" FROM estream.produce('wide', '{}', partition => 20)}),
	'1', 'once the transactions end, producing to a new partition works again');
is( $node->safe_psql('db2', q{SELECT "offset" FROM estream.produce('t5', '{}', partition => 1)}),
	'4', 'in both databases');

#
# 6. The slots of a dropped topic are reclaimed.  After a restart nothing
#    competes for slots: only the worker can free them.
#
$node->restart;
$node->safe_psql('db2', q{
SELECT estream.create_topic('gone', 3);
SELECT estream.produce('gone', '{}', partition => p) FROM generate_series(0, 2) p;
});
is(used('db2'), '3', 'topic gone holds 3 slots');
my $reclaimed = $node->safe_psql('postgres', 'SELECT reclaimed FROM estream.partition_slots');
$node->safe_psql('db2', q{SELECT estream.drop_topic('gone')});
ok( $node->poll_query_until(
		'postgres', 'SELECT used = 0 AND reclaimed = ' . ($reclaimed + 3) . ' FROM estream.partition_slots'),
	'the worker reclaimed the slots of the dropped topic');
is($node->safe_psql('postgres', 'SELECT evicted FROM estream.partition_slots'),
	'0', 'none of them was evicted');

# a role that may not describe the cluster sees no row
$node->safe_psql('postgres', 'CREATE ROLE nobody LOGIN');
is( $node->safe_psql(
		'postgres', 'SELECT count(*) FROM estream.partition_slots',
		extra_params => [ '-U', 'nobody' ]),
	'0', 'estream.partition_slots needs describe on the cluster');

$node->stop;

done_testing();
