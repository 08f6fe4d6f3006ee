
# Copyright (c) 2026, estream developers

# Long-polling fetch (wait_ms > 0): it returns as soon as a record at or after
# from_offset commits, never returns rolled-back records, waits behind open
# transactions, times out empty, and can be interrupted by pg_cancel_backend
# and statement_timeout.
#
# Timings are only ever checked against generous bounds: a poll that is
# "woken" by a commit must return well before its 30 s wait_ms, and one that
# times out must not return before its wait_ms.
#
# Application roles: long-pollers and readers run as lp_consumer (read on
# topic lp), producers as lp_producer (write on lp), a transaction that
# produces and fetches as lp_app (read and write on lp), all granted with
# estream.grant_acl(); cancelling and the checks run as the superuser.

use strict;
use warnings;

use EstreamNode;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $long_wait_ms = 30000;
# A woken long-poll must return well before wait_ms, even on a slow machine.
my $woken_bound_s = 20;

my $node = EstreamNode->create('longpoll');

$node->safe_psql(
	'postgres', q{
CREATE EXTENSION estream;
SELECT estream.create_topic('lp', 2);
CREATE ROLE lp_consumer LOGIN;
CREATE ROLE lp_producer LOGIN;
CREATE ROLE lp_app LOGIN;
SELECT estream.grant_acl('lp_consumer', 'read', 'topic', 'lp');
SELECT estream.grant_acl('lp_producer', 'write', 'topic', 'lp');
SELECT estream.grant_acl('lp_app', 'read,write', 'topic', 'lp');
});

# The application's roles are ordinary roles: not superusers, and refused
# (42501) when they write the topic's log directly.
my $segment = $node->safe_psql('postgres',
	"SELECT format('estream.log_%s_%s', topic_id, current_segment) FROM estream.topic WHERE name = 'lp'"
);
for my $role (qw(lp_consumer lp_producer lp_app))
{
	is($node->as_role($role, q{SELECT current_user, current_setting('is_superuser')}),
		"$role|off", "$role is not a superuser");
	my ($ret, $stdout, $stderr) = $node->psql(
		'postgres',
		"INSERT INTO $segment VALUES (0, 0, 9223372036854775807, now(), NULL, '{}', NULL, NULL)",
		extra_params => [ '-U', $role, '-v', 'VERBOSITY=sqlstate' ]);
	like($stderr, qr/ERROR:  42501/,
		"$role cannot write the log of topic lp directly (42501)");
}

# Wait until the backend sleeps in the long-poll (the estream condition
# variable wait is reported as wait event type "Extension").
sub wait_until_polling
{
	my ($pid, $what) = @_;
	ok( $node->poll_query_until(
			'postgres',
			"SELECT wait_event_type = 'Extension' AND state = 'active'
			 FROM pg_stat_activity WHERE pid = $pid"),
		"long-poll is waiting: $what");
}

# The output of a running background session so far, without blocking.
sub pending_output
{
	my ($bg) = @_;
	$bg->{run}->pump_nb();
	return $bg->{stdout};
}

my $fetch_cols = q{partition, "offset", value->>'id'};

#
# 1. A long-poll returns the record shortly after another session commits
# it, and not before: an uncommitted produce does not wake it with a result.
#
my ($bg, $pid) = $node->background_as_role('lp_consumer', 'verbose');

my $seq = $node->start_query($bg,
	"SELECT $fetch_cols FROM estream.fetch('lp', 0, 0, wait_ms => $long_wait_ms)"
);
wait_until_polling($pid, 'empty partition');

my $producer =
  $node->background_psql('postgres', extra_params => [ '-U', 'lp_producer' ]);
$producer->query_safe('BEGIN');
is( $producer->query_safe(
		q{SELECT partition, "offset" FROM estream.produce('lp', '{"id": "a"}', partition => 0)}
	),
	'0|0',
	'uncommitted produce got offset 0');
is( $node->safe_psql(
		'postgres',
		"SELECT stable_offset, next_offset FROM estream.watermarks('lp') WHERE partition = 0"
	),
	'0|1',
	'the open transaction holds the stable offset at 0');
wait_until_polling($pid, 'after an uncommitted produce');
is(pending_output($bg), '', 'no result while the producer is still open');

my $t0 = time();
$producer->query_safe('COMMIT');
my $rows = $node->finish_query($bg, $seq);
my $elapsed = time() - $t0;
is($rows, '0|0|a', 'long-poll returned the committed record');
cmp_ok($elapsed, '<', $woken_bound_s,
	'long-poll returned well before its wait_ms after the commit');

#
# 2. A long-poll whose producer rolls back keeps waiting, and returns only
# the record committed afterwards (at the next offset: the rolled-back one
# is a hole).
#
$seq = $node->start_query($bg,
	"SELECT $fetch_cols FROM estream.fetch('lp', 0, 1, wait_ms => $long_wait_ms)"
);
wait_until_polling($pid, 'at the stable offset');

$producer->query_safe('BEGIN');
is( $producer->query_safe(
		q{SELECT "offset" FROM estream.produce('lp', '{"id": "rolled-back"}', partition => 0)}
	),
	'1',
	'produce that will roll back got offset 1');
$producer->query_safe('ROLLBACK');

# A savepoint rolled back inside a committed transaction is a hole as well.
$producer->query_safe('BEGIN');
$producer->query_safe('SAVEPOINT s');
is( $producer->query_safe(
		q{SELECT "offset" FROM estream.produce('lp', '{"id": "savepoint"}', partition => 0)}
	),
	'2',
	'produce in a savepoint got offset 2');
$producer->query_safe('ROLLBACK TO SAVEPOINT s');
$producer->query_safe('COMMIT');

# Commits to another partition do not satisfy this poll.
$node->as_role('lp_producer',
	q{SELECT estream.produce('lp', '{"id": "other"}', partition => 1)});

wait_until_polling($pid, 'after a rollback, a savepoint rollback and a commit elsewhere');
is(pending_output($bg), '',
	'no result after the rollbacks and a commit to another partition');
is( $node->safe_psql(
		'postgres',
		"SELECT stable_offset, next_offset FROM estream.watermarks('lp') WHERE partition = 0"
	),
	'1|3',
	'rolled-back offsets do not advance the stable offset');

$t0 = time();
$node->as_role('lp_producer',
	q{SELECT estream.produce('lp', '{"id": "b"}', partition => 0)});
$rows = $node->finish_query($bg, $seq);
$elapsed = time() - $t0;
is($rows, '0|3|b',
	'long-poll skipped the rolled-back offsets and returned the next commit');
cmp_ok($elapsed, '<', $woken_bound_s,
	'long-poll returned well before its wait_ms after the rollbacks');

#
# 3. A record committed behind an open transaction is not returned until
# that transaction ends; when it rolls back, the poll returns the later
# record alone.
#
$seq = $node->start_query($bg,
	"SELECT $fetch_cols FROM estream.fetch('lp', 0, 4, wait_ms => $long_wait_ms)"
);
wait_until_polling($pid, 'before a blocking open transaction');

$producer->query_safe('BEGIN');
is( $producer->query_safe(
		q{SELECT "offset" FROM estream.produce('lp', '{"id": "blocker"}', partition => 0)}
	),
	'4',
	'open transaction got offset 4');
is( $node->as_role(
		'lp_producer',
		q{SELECT "offset" FROM estream.produce('lp', '{"id": "c"}', partition => 0)}),
	'5',
	'later transaction committed offset 5');
is( $node->safe_psql(
		'postgres',
		"SELECT stable_offset, next_offset FROM estream.watermarks('lp') WHERE partition = 0"
	),
	'4|6',
	'the open transaction holds the stable offset below the committed record');
wait_until_polling($pid, 'behind an open transaction');
is(pending_output($bg), '',
	'no result while an earlier offset is still in flight');

$t0 = time();
$producer->query_safe('ROLLBACK');
$rows = $node->finish_query($bg, $seq);
$elapsed = time() - $t0;
is($rows, '0|5|c',
	'long-poll returned the committed record once the blocker rolled back');
cmp_ok($elapsed, '<', $woken_bound_s,
	'long-poll returned well before its wait_ms after the blocker ended');

#
# 4. A short long-poll with nothing to read times out empty, after at least
# wait_ms.  A poll that starts below the stable offset but finds only holes
# waits too.
#
is( $node->as_role(
		'lp_consumer',
		q{SELECT count(*), clock_timestamp() - statement_timestamp() >= interval '500 ms'
		  FROM estream.fetch('lp', 0, 6, wait_ms => 500)}),
	'0|t',
	'short long-poll at the stable offset timed out empty after wait_ms');

$node->as_role('lp_producer',
	q{BEGIN; SELECT estream.produce('lp', '{"id": "hole"}', partition => 0); ROLLBACK;});
$node->as_role('lp_producer',
	q{BEGIN; SELECT estream.produce('lp', '{"id": "hole"}', partition => 1); ROLLBACK;});
is( $node->as_role(
		'lp_consumer',
		qq{SELECT count(*), clock_timestamp() - statement_timestamp() < interval '$woken_bound_s s'
		  FROM estream.fetch('lp', 1, 0, wait_ms => $long_wait_ms)}),
	'1|t',
	'long-poll with a record to read returns without waiting');
is( $node->as_role(
		'lp_consumer',
		q{SELECT count(*), clock_timestamp() - statement_timestamp() >= interval '500 ms'
		  FROM estream.fetch('lp', 1, 1, wait_ms => 500)}),
	'0|t',
	'short long-poll over holes only timed out empty after wait_ms');

# A long-poll never waits for its own open transaction: it returns at once
# (empty, since its own record is above the stable offset).
$t0 = time();
is( $node->as_role(
		'lp_app', qq{
BEGIN;
SELECT "offset" FROM estream.produce('lp', '{"id": "own"}', partition => 1);
SELECT count(*) FROM estream.fetch('lp', 1, 1, wait_ms => $long_wait_ms);
ROLLBACK;}),
	"2\n0",
	'long-poll inside the producing transaction returned empty');
$elapsed = time() - $t0;
cmp_ok($elapsed, '<', $woken_bound_s,
	'long-poll did not wait for its own transaction');

#
# 5. pg_cancel_backend interrupts a long-poll with SQLSTATE 57014, and the
# session stays usable.
#
$seq = $node->start_query($bg,
	"SELECT $fetch_cols FROM estream.fetch('lp', 0, 6, wait_ms => $long_wait_ms)"
);
wait_until_polling($pid, 'before pg_cancel_backend');
$t0 = time();
is($node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)"),
	't', 'pg_cancel_backend sent');
$rows = $node->finish_query($bg, $seq);
$elapsed = time() - $t0;
is($rows, '', 'cancelled long-poll returned no rows');
like(
	$bg->{stderr},
	qr/ERROR:  57014: canceling statement due to user request/,
	'cancelled long-poll failed with SQLSTATE 57014');
cmp_ok($elapsed, '<', $woken_bound_s,
	'pg_cancel_backend interrupted the long-poll well before its wait_ms');
$bg->{stderr} = '';

is( $bg->query_safe(
		"SELECT $fetch_cols FROM estream.fetch('lp', 0, 5)"),
	'0|5|c',
	'the session fetches normally after the cancel');

#
# 6. statement_timeout interrupts a long-poll with SQLSTATE 57014.
#
$t0 = time();
my ($ret, $stdout, $stderr) = $node->psql(
	'postgres',
	"SET statement_timeout = '1s';
	 SELECT * FROM estream.fetch('lp', 0, 6, wait_ms => $long_wait_ms);",
	extra_params => [ '-U', 'lp_consumer', '-v', 'VERBOSITY=verbose' ]);
$elapsed = time() - $t0;
isnt($ret, 0, 'long-poll under statement_timeout failed');
like(
	$stderr,
	qr/ERROR:  57014: canceling statement due to statement timeout/,
	'statement_timeout interrupted the long-poll with SQLSTATE 57014');
cmp_ok($elapsed, '<', $woken_bound_s,
	'statement_timeout interrupted the long-poll well before its wait_ms');

# Nothing leaked: no in-flight marker holds the stable offsets back.
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(format('%s:%s:%s', partition, stable_offset, next_offset), ','
		                    ORDER BY partition)
		  FROM estream.watermarks('lp')}),
	'0:6:7,1:1:3',
	'final watermarks');
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(format('%s:%s:%s', partition, "offset", value->>'id'), ','
		                    ORDER BY partition, "offset")
		  FROM (SELECT * FROM estream.fetch('lp', 0, 0)
		        UNION ALL SELECT * FROM estream.fetch('lp', 1, 0)) f}),
	'0:0:a,0:3:b,0:5:c,1:0:other',
	'the log holds exactly the committed records');

#
# 7. The first poll of a new group creates it in its transaction. A
# concurrent first poll with wait_ms waits for it (1.4; before, it
# returned nothing at once and its caller spun on empty polls), then
# polls what the first one left.
#
$node->safe_psql('postgres',
	q{SELECT estream.grant_acl('lp_consumer', 'read', 'group', 'lp-new')});
my $first =
  $node->background_psql('postgres', extra_params => [ '-U', 'lp_consumer' ]);
$first->query_safe('BEGIN');
is( $first->query_safe(
		q{SELECT count(*) FROM estream.poll('lp-new', 'lp', max_records => 1, auto_offset_reset => 'earliest')}
	),
	'1',
	'the first poll of a new group took one record, in an open transaction');
$seq = $node->start_query($bg,
	"SELECT count(*) FROM estream.poll('lp-new', 'lp', wait_ms => $long_wait_ms, auto_offset_reset => 'earliest')"
);
ok( $node->poll_query_until(
		'postgres',
		"SELECT wait_event = 'PgSleep' FROM pg_stat_activity WHERE pid = $pid"),
	'the second poll waits for the group');
sleep(1);
is(pending_output($bg), '', 'no result while the group is not committed');
$t0 = time();
$first->query_safe('COMMIT');
$rows = $node->finish_query($bg, $seq);
$elapsed = time() - $t0;
is($rows, '3', 'the second poll got the three records the first one left');
cmp_ok($elapsed, '<', $woken_bound_s,
	'the second poll returned well before its wait_ms after the commit');
$first->quit;

$producer->quit;
$bg->quit;
$node->stop;

done_testing();
