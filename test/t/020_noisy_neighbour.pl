
# Copyright (c) 2026, estream developers

# Noisy neighbour (issue 12): everything that used to take down more than
# its own object happens at once in database "noisy", while database "quiet"
# of the same server runs an ordinary workload that must see no error, lose
# nothing and keep its latency.
#
# In "noisy", for the whole run:
#   - topic "brk" with a configuration the worker cannot compute with
#     (written into the catalog directly, as an older version or a hand
#     edit could have), and topics with Kafka's largest millisecond values
#     (segment.ms, delete.retention.ms of a compacted topic);
#   - a capture whose changes cannot be written (a row larger than its
#     topic's max.message.bytes), next to a capture that works;
#   - a consumer group fed binary records with keys that are not UTF-8;
#   - a transaction that holds 40 of the server's 64 partition slots open,
#     a reader that reads every partition of a 200-partition topic over and
#     over (it takes no slot), and a producer whose 200-partition batches
#     are refused (54000) again and again;
# In "quiet": a producer, a consumer group polling, a long-poll that
# measures how long a record takes to reach it, a captured table, and a
# topic whose retention must keep applying.
#
# The checks: every statement of "quiet" succeeded; the group received
# exactly what was produced, once, in offset order; the capture delivered
# every change; retention ran; "quiet" has no maintenance error; its
# worker ran throughout.  In "noisy", each failure shows up where it
# belongs (the topic's maintenance error, the capture's state, the
# caller's SQLSTATE) and the rest of "noisy" goes on too.  Latency is
# checked against a generous bound only (20 s for a record that commits
# to reach a waiting long-poll); the figures go to the log.

use strict;
use warnings;

use EstreamNode;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $run_s = $ENV{ESTREAM_NOISY_SECONDS} // 30;
my $latency_bound_s = 20;

my $node = EstreamNode->create('noisy', cdc => 1, conf => q{
max_worker_processes = 16
estream.max_partitions = 64
estream.max_partitions_per_transaction = 48
estream.worker_naptime = '200ms'
});

$node->safe_psql('postgres', q{
CREATE ROLE app LOGIN;
CREATE DATABASE noisy OWNER app;
CREATE DATABASE quiet OWNER app;
});
for my $db (qw(noisy quiet))
{
	$node->safe_psql(
		$db, q{
CREATE EXTENSION estream;
SELECT estream.grant_acl('app', 'create', 'cluster');
SELECT estream.grant_acl('app', 'read', 'group', '*');
});
}

is($node->as_role('app', q{SELECT current_setting('is_superuser')}, dbname => 'quiet'),
	'off', 'app is not a superuser');

#
# "quiet": its objects
#
$node->as_role(
	'app', q{
SELECT estream.create_topic('orders', 4);
SELECT estream.create_topic('short', 1, '{"retention.ms": 1000, "segment.ms": 500}');
CREATE TABLE q_items (id int PRIMARY KEY, label text);
SELECT estream.capture('q_items', 'q_items', '{"snapshot": false}');
}, dbname => 'quiet');
ok( $node->poll_query_until(
		'quiet',
		q{SELECT state = 'streaming' FROM estream.captures WHERE topic = 'q_items'}),
	'quiet: the capture streams');

#
# "noisy": the bad objects
#
$node->as_role(
	'app', q{
SELECT estream.create_topic('brk', 1);
SELECT estream.create_topic('never_rolls', 1, '{"segment.ms": 9223372036854775807}');
SELECT estream.create_topic('compacted', 1,
  '{"cleanup.policy": "compact", "delete.retention.ms": 9223372036854775807, "segment.ms": 100}');
SELECT estream.produce('compacted', '{"v": 1}', key => 'k');
SELECT estream.produce('compacted', NULL, key => 'k');
SELECT estream.create_topic('n_short', 1, '{"retention.ms": 1000, "segment.ms": 500}');
SELECT estream.produce('n_short', '{}');
SELECT estream.create_topic('mixed', 2);
SELECT estream.create_topic('wide', 200);
CREATE TABLE n_big (id int PRIMARY KEY, payload text);
CREATE TABLE n_ok (id int PRIMARY KEY);
SELECT estream.create_topic('n_big', 1, '{"max.message.bytes": 1024}');
SELECT estream.capture('n_big', 'n_big', '{"snapshot": false}');
SELECT estream.capture('n_ok', 'n_ok', '{"snapshot": false}');
}, dbname => 'noisy');
# a configuration the worker cannot compute with, as only a direct write
# of the catalog (not alter_topic) can leave it
$node->safe_psql('noisy',
	q{UPDATE estream.topic SET config = '{"retention.ms": "soon"}' WHERE name = 'brk'});
ok( $node->poll_query_until(
		'noisy',
		q{SELECT count(*) = 2 FROM estream.captures WHERE state = 'streaming'}),
	'noisy: both captures stream before the bad change');

# the binary records and the group that reads them
$node->as_role(
	'app', q{
SELECT estream.produce('mixed', '{"n": 0}', partition => 0);
SELECT estream.produce_binary('mixed', '\xdeadbeef00ff', key => '\xff00fe', partition => 0);
SELECT estream.produce('mixed', '{"n": 2}', partition => 0);
}, dbname => 'noisy');

# 40 of the 64 slots held by an open transaction for the whole run
my $holder = $node->background_psql('noisy', extra_params => [ '-U', 'app' ]);
$holder->query_safe('BEGIN');
$holder->query_safe(
	q{SELECT count(*) FROM generate_series(0, 39) p,
	    LATERAL estream.produce('wide', '{}', partition => p)});
is( $node->safe_psql(
		'noisy', q{SELECT held >= 40 FROM estream.partition_slots}),
	't', 'noisy: an open transaction holds at least 40 partition slots');

# the slot-hungry reader and the refused producer, for the whole run, in
# the server (a DO block each): they count what they did
my $deadline = "clock_timestamp() + interval '$run_s seconds'";
my $reader = $node->background_psql('noisy', extra_params => [ '-U', 'app' ]);
$reader->query_until(
	qr/reader started/, qq{
\\echo reader started
DO \$\$
DECLARE n bigint := 0; d timestamptz := $deadline;
BEGIN
	WHILE clock_timestamp() < d LOOP
		PERFORM count(*) FROM estream.partitions;
		PERFORM count(*) FROM estream.watermarks('wide');
		PERFORM count(*) FROM estream.fetch('wide', (n % 200)::int, 0);
		n := n + 1;
	END LOOP;
	RAISE NOTICE 'reader rounds: %', n;
END
\$\$;
\\echo reader done
});
my $refused = $node->background_psql('noisy', extra_params => [ '-U', 'app' ]);
$refused->query_until(
	qr/refused started/, qq{
\\echo refused started
DO \$\$
DECLARE n bigint := 0; other bigint := 0; d timestamptz := $deadline;
BEGIN
	WHILE clock_timestamp() < d LOOP
		BEGIN
			PERFORM estream.produce_batch('wide',
				ARRAY(SELECT '{}'::jsonb FROM generate_series(0, 199)),
				keys => ARRAY(SELECT 'k' || i FROM generate_series(0, 199) i));
		EXCEPTION WHEN program_limit_exceeded OR insufficient_resources THEN
			n := n + 1;
		END;
		PERFORM pg_sleep(0.02);
	END LOOP;
	RAISE NOTICE 'refused: %', n;
END
\$\$;
\\echo refused done
});

# the change that cannot be written, in a transaction with one that can
$node->as_role(
	'app', q{
BEGIN;
INSERT INTO n_big VALUES (1, repeat('x', 5000));
INSERT INTO n_ok VALUES (1);
COMMIT;
}, dbname => 'noisy');

#
# "quiet": the workload, while all that goes on
#
my ($produced, $errors, $rounds) = (0, 0, 0);
my @latencies;
my $waiter = $node->background_psql('quiet', extra_params => [ '-U', 'app' ]);
my $t_end = time() + $run_s;
my $next_item = 1;
my %consumed;
my @order_errors;
my $runs_before = $node->safe_psql('quiet',
	q{SELECT runs FROM estream.workers WHERE database = 'quiet'});

while (time() < $t_end)
{
	$rounds++;
	# produce 20 records, keyed, across the partitions
	my ($ok, $out, $err) = $node->try_as_role(
		'app', qq{
SELECT count(*) FROM estream.produce_batch('orders',
  ARRAY(SELECT jsonb_build_object('id', $produced + i) FROM generate_series(0, 19) i),
  keys => ARRAY(SELECT 'k' || (($produced + i) % 7) FROM generate_series(0, 19) i));
INSERT INTO q_items SELECT g, 'item ' || g FROM generate_series($next_item, $next_item + 4) g;
SELECT estream.produce('short', '{"tick": true}');
}, dbname => 'quiet');
	if ($ok) { $produced += 20; $next_item += 5; }
	else { $errors++; diag("quiet produce failed: $err"); }

	# poll what is there, recording the order per partition
	($ok, $out, $err) = $node->try_as_role('app',
		q{SELECT partition, "offset", value->>'id' FROM estream.poll('qg', 'orders', max_records => 500, auto_offset_reset => 'earliest')}, dbname => 'quiet');
	if ($ok)
	{
		for my $line (split /\n/, $out)
		{
			my ($p, $o, $id) = split /\|/, $line;
			push @order_errors, "duplicate id $id" if exists $consumed{$id};
			$consumed{$id} = "$p:$o";
		}
	}
	else { $errors++; diag("quiet poll failed: $err"); }

	# every fifth round: how long a committed record takes to reach a
	# waiting long-poll
	if ($rounds % 5 == 1)
	{
		my $from = $node->safe_psql('quiet',
			q{SELECT stable_offset FROM estream.watermarks('orders') WHERE partition = 3});
		$waiter->query_until(qr/wait started/,
			"\\echo wait started\nSELECT value->>'probe' FROM estream.fetch('orders', 3, $from, wait_ms => 60000);\n\\echo wait done\n"
		);
		ok( $node->poll_query_until(
				'quiet',
				q{SELECT count(*) > 0 FROM pg_stat_activity
				  WHERE datname = 'quiet' AND usename = 'app' AND wait_event_type = 'Extension'}),
			"quiet: long-poll $rounds waits");
		my $t0 = time();
		($ok, $out, $err) = $node->try_as_role('app',
			qq{SELECT estream.produce('orders', '{"probe": $rounds, "id": -$rounds}', partition => 3)}, dbname => 'quiet');
		$errors++ unless $ok;
		my $got = $waiter->query_until(qr/wait done\n/, '');
		my $latency = time() - $t0;
		push @latencies, $latency;
		like($got, qr/^$rounds$/m, "quiet: long-poll $rounds got its record");
	}
	sleep 0.1;
}

is($errors, 0, "quiet: no statement failed in $rounds rounds");
my $max_latency = (sort { $b <=> $a } @latencies)[0] // 0;
cmp_ok($max_latency, '<', $latency_bound_s,
	'quiet: every record reached its waiting long-poll well within the bound');
diag(sprintf('quiet: %d rounds, %d records, long-poll latency max %.3f s over %d probes',
		$rounds, $produced, $max_latency, scalar @latencies));

# the rest of what was produced
for (1 .. 20)
{
	my $out = $node->as_role('app',
		q{SELECT partition, "offset", value->>'id' FROM estream.poll('qg', 'orders', max_records => 5000)}, dbname => 'quiet');
	last if $out eq '';
	for my $line (split /\n/, $out)
	{
		my ($p, $o, $id) = split /\|/, $line;
		push @order_errors, "duplicate id $id" if exists $consumed{$id};
		$consumed{$id} = "$p:$o";
	}
}
is_deeply(\@order_errors, [], 'quiet: no record was consumed twice');
is(scalar(grep { $_ >= 0 } keys %consumed), $produced,
	"quiet: the group received every one of the $produced records");
is(scalar(grep { $_ < 0 } keys %consumed), scalar @latencies,
	'quiet: and every latency probe');
# the group's committed offsets are the ends of the partitions
is( $node->as_role(
		'app', q{SELECT count(*) = 4 AND bool_and(lag = 0)
		FROM estream.consumer_lag WHERE "group" = 'qg' AND topic = 'orders'}, dbname => 'quiet'),
	't', 'quiet: the group committed up to the end of every partition');

ok( $node->poll_query_until(
		'quiet',
		"SELECT count(*) = " . ($next_item - 1)
		  . " FROM estream.fetch('q_items', 0, 0, max_records => 100000) WHERE value->>'op' = 'c'"),
	'quiet: the capture delivered every insert');
is( $node->safe_psql('quiet',
		q{SELECT state FROM estream.captures WHERE topic = 'q_items'}),
	'streaming', 'quiet: the capture is streaming');
ok( $node->poll_query_until(
		'quiet', q{SELECT log_start_offset > 0 FROM estream.partitions WHERE topic = 'short'}),
	'quiet: retention applied');
is($node->safe_psql('quiet', q{SELECT count(*) FROM estream.maintenance_errors}),
	'0', 'quiet: no maintenance error');
is( $node->safe_psql(
		'quiet', qq{SELECT state IN ('running', 'idle') AND runs > $runs_before
		FROM estream.workers WHERE database = 'quiet'}),
	't', 'quiet: the worker ran throughout');

#
# "noisy": each failure stayed where it belongs
#
my $out = $reader->query_until(qr/reader done\n/, '');
$reader->quit;
like($reader->{stderr}, qr/reader rounds: [1-9]/, 'noisy: the reader read throughout');
$refused->query_until(qr/refused done\n/, '');
$refused->quit;
like($refused->{stderr}, qr/refused: [1-9]/,
	'noisy: the 200-partition batches were refused to their caller');
$holder->query_safe('ROLLBACK');
$holder->quit;

is( $node->safe_psql(
		'noisy', q{SELECT topic || ': ' || step || ' ' || sqlstate FROM estream.maintenance_errors}),
	'brk: apply retention 22P02',
	'noisy: the broken configuration is a maintenance error of its topic only');
$node->as_role('app', q{SELECT estream.produce('n_short', '{}')}, dbname => 'noisy');
ok( $node->poll_query_until(
		'noisy', q{SELECT log_start_offset > 0 FROM estream.partitions WHERE topic = 'n_short'}),
	'noisy: retention applies to its good topic');
is( $node->safe_psql(
		'noisy', q{SELECT state FROM estream.captures WHERE topic = 'n_big'}),
	'stopped', 'noisy: the capture whose change cannot be written is stopped');
like( $node->safe_psql(
		'noisy', q{SELECT coalesce(stop_error, last_error) FROM estream.captures WHERE topic = 'n_big'}),
	qr/max\.message\.bytes|too large/, 'noisy: with its error');
is( $node->safe_psql(
		'noisy', q{SELECT state FROM estream.captures WHERE topic = 'n_ok'}),
	'streaming', 'noisy: the other capture streams');
$node->as_role('app', q{INSERT INTO n_ok VALUES (2)}, dbname => 'noisy');
ok( $node->poll_query_until(
		'noisy',
		q{SELECT count(*) = 2 FROM estream.fetch('n_ok', 0, 0) WHERE value->>'op' = 'c'}),
	'noisy: and delivers its changes, those of the failing transaction included');

is( $node->as_role(
		'app', q{SELECT string_agg("offset" || ':' || coalesce(headers->>'estream.key.encoding', '-'), ',' ORDER BY "offset")
		FROM estream.poll('bin', 'mixed', auto_offset_reset => 'earliest')}, dbname => 'noisy'),
	'0:-,1:base64,2:-',
	'noisy: the group reads past the binary record with a non-UTF-8 key');
is( $node->safe_psql(
		'noisy', q{SELECT state IN ('running', 'idle') AND runs > 0 AND last_error IS NULL
		FROM estream.workers WHERE database = 'noisy'}),
	't', "noisy: its worker still runs");

$waiter->quit;
$node->stop;
done_testing();
