
# Copyright (c) 2026, estream developers

# Change data capture is woken at commit (issue 14): a transaction that
# wrote WAL in a database whose worker captures sets the worker's latch,
# so its change is in the topic long before estream.capture_naptime and
# estream.worker_naptime (both 60 s here) would have polled it.
#
# 0. capture() wakes the worker when it commits: the capture streams
#    within seconds, not at the next naptime.
# 1. Committed changes of a captured table, made by an ordinary role, are
#    in the topic within 15 s, four times in a row (the worker sleeps the
#    full naptime between them, so a poll cannot explain it).
# 2. A transaction that rolls back, a read-only one and one in another
#    database wake nothing: the worker's capture step count (runs of the
#    capture are counted in events_captured only when it writes; the test
#    reads estream.workers' counters) shows no spurious written event, and
#    a change committed afterwards is still captured at once.
# 3. The worker's own commits (writing the events) do not wake it in a
#    loop: with no commits, the worker's process stays idle (its
#    pg_stat_activity state is idle, wait event the extension's).

use strict;
use warnings;
use Time::HiRes qw(time);

use EstreamNode;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = EstreamNode->create('cdc_wakeup',
	cdc => 1,
	conf => "estream.enable_worker = on\n"
	  . "estream.worker_naptime = 60s\n"
	  . "estream.capture_naptime = 60s\n");

$node->safe_psql('postgres', q{
CREATE EXTENSION estream;
CREATE ROLE app LOGIN;
CREATE TABLE public.orders (id int PRIMARY KEY, note text);
ALTER TABLE public.orders OWNER TO app;
GRANT estream_producer, estream_consumer TO app;
SELECT estream.grant_acl('app', 'create', 'topic', 'orders');
});
$node->safe_psql('postgres', q{CREATE DATABASE other});
my $t_capture = time;
$node->as_role('app',
	q{SELECT estream.capture('public.orders', 'orders', '{"snapshot": false}')});
$node->wait_streaming('public.orders');
cmp_ok(time - $t_capture, '<', 30, 'capture() wakes the worker: streaming long before the naptime');

# a commit wakes the worker; the long-poll returns the event
sub captured_within
{
	my ($id, $seconds) = @_;
	my $t0 = time;
	$node->as_role('app', "INSERT INTO public.orders VALUES ($id, 'n$id')");
	my $deadline = $t0 + $seconds;
	while (time < $deadline)
	{
		my $got = $node->as_role('app', qq{
SELECT count(*) FROM estream.fetch('orders', 0, 0, 1000, 2000)
 WHERE value->'after'->>'id' = '$id'});
		return time - $t0 if $got eq '1';
	}
	return undef;
}

# 1. every commit is captured long before the 60 s naptime
for my $id (1 .. 4)
{
	my $took = captured_within($id, 15);
	ok(defined $took, "change $id captured at commit, not at the naptime")
	  and note sprintf('change %d captured in %.3f s', $id, $took);
	sleep 1;
}

# 2. commits that wrote nothing here wake nothing that writes
my $before = $node->safe_psql('postgres',
	q{SELECT next_offset FROM estream.watermarks('orders')});
$node->as_role('app', q{
BEGIN; INSERT INTO public.orders VALUES (100, 'rolled back'); ROLLBACK;
SELECT count(*) FROM public.orders;
});
$node->safe_psql('other', q{CREATE TABLE t (a int); INSERT INTO t VALUES (1)});
sleep 1;
is( $node->safe_psql('postgres',
		q{SELECT next_offset FROM estream.watermarks('orders')}),
	$before,
	'a rollback, a read-only commit and another database add no event');
ok(defined captured_within(5, 15), 'and the next commit is captured at once');

# 3. the worker does not wake itself: idle between commits
my $idle = $node->poll_query_until('postgres', q{
SELECT state = 'idle' AND wait_event = 'Extension'
  FROM pg_stat_activity WHERE backend_type = 'estream worker'});
ok($idle, 'the worker sleeps when nothing commits');
my $steps0 = $node->safe_psql('postgres',
	q{SELECT sum(xact_commit) FROM pg_stat_database WHERE datname = 'postgres'});
sleep 2;
my $steps1 = $node->safe_psql('postgres',
	q{SELECT sum(xact_commit) FROM pg_stat_database WHERE datname = 'postgres'});
cmp_ok($steps1 - $steps0, '<', 20,
	'no loop of capture steps woken by their own commits');

is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'app'}),
	'f', 'app is still not superuser');

$node->stop;
done_testing();
