
# Copyright (c) 2026, estream developers

# Long-polls do not hold up what needs their locks (issue 12): a long-poll
# holds a lock on estream's tables until it returns, so DROP EXTENSION,
# ALTER EXTENSION UPDATE and drop_topic() used to wait for the pollers'
# wait_ms (19 s behind two fetches in the report).  Now they end the
# long-polls of what they drop at once: a fetch returns the records it has
# (none), a poll() or consume() returns empty.  Long-polls of other topics go
# on waiting and still get their records; a role that may not drop the
# extension does not end anyone's wait by trying.
#
# Bounds are generous: the long-polls wait 120 s, the commands must return
# within 30 s (in practice well under one).

use strict;
use warnings;

use EstreamNode;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $wait_ms = 120000;
my $bound_s = 30;

my $node = EstreamNode->create('drain');

# app owns its topics (created them), reader may read them, both ordinary
$node->safe_psql(
	'postgres', q{
CREATE ROLE app LOGIN;
CREATE ROLE reader LOGIN;
});

sub setup_extension
{
	my ($version) = @_;
	if (defined $version)
	{
		$node->safe_psql('postgres', "CREATE EXTENSION estream VERSION '$version'");
		return;
	}
	$node->safe_psql(
		'postgres', q{
CREATE EXTENSION estream;
SELECT estream.grant_acl('app', 'create', 'cluster'),
       estream.grant_acl('reader', 'read', 'group', 'g'),
       estream.grant_acl('reader', 'read', 'group', 's');
});
}

# Wait until the backend sleeps in a long-poll (estream's waits report
# wait event type Extension; poll()'s and consume()'s sleeps PgSleep).
sub wait_until_waiting
{
	my ($pid, $what) = @_;
	ok( $node->poll_query_until(
			'postgres',
			"SELECT state = 'active' AND (wait_event_type = 'Extension' OR wait_event = 'PgSleep')
			 FROM pg_stat_activity WHERE pid = $pid"),
		"waiting: $what");
}

sub still_waiting
{
	my ($pid) = @_;
	return $node->safe_psql('postgres',
		"SELECT state = 'active' AND (wait_event_type = 'Extension' OR wait_event = 'PgSleep')
		 FROM pg_stat_activity WHERE pid = $pid");
}

#
# 1. drop_topic() ends the long-polls of its topic, and only those.
#
setup_extension();
$node->as_role(
	'app', q{
SELECT estream.create_topic('doomed', 2);
SELECT estream.create_topic('kept', 1);
SELECT estream.grant_acl('reader', 'read', 'topic', 'doomed');
SELECT estream.grant_acl('reader', 'read', 'topic', 'kept');
SELECT estream.produce('doomed', '{"n": 0}', partition => 0);
});
is($node->as_role('reader', q{SELECT current_setting('is_superuser')}),
	'off', 'reader is not a superuser');

my ($f1, $f1pid) = $node->background_as_role('reader', 'sqlstate');
my ($p1, $p1pid) = $node->background_as_role('reader', 'sqlstate');
my ($k1, $k1pid) = $node->background_as_role('reader', 'sqlstate');
my $f1s = $node->start_query($f1,
	"SELECT count(*) FROM estream.fetch('doomed', 1, 0, wait_ms => $wait_ms)");
# the group's first poll reads offset 0 of partition 0 at once: poll past it
$node->as_role('reader', q{SELECT count(*) FROM estream.poll('g', 'doomed')});
my $p1s = $node->start_query($p1,
	"SELECT count(*) FROM estream.poll('g', 'doomed', wait_ms => $wait_ms)");
my $k1s = $node->start_query($k1,
	"SELECT value->>'n' FROM estream.fetch('kept', 0, 0, wait_ms => $wait_ms)");
wait_until_waiting($f1pid, 'fetch of doomed');
wait_until_waiting($p1pid, 'poll of doomed');
wait_until_waiting($k1pid, 'fetch of kept');

my $t0 = time();
$node->as_role('app', q{SELECT estream.drop_topic('doomed')});
my $took = time() - $t0;
cmp_ok($took, '<', $bound_s,
	"drop_topic returns at once behind two long-polls of the topic ($took s)");
is($node->finish_query($f1, $f1s), '0', 'the long fetch of the dropped topic returned empty');
is($node->finish_query($p1, $p1s), '0', 'the long poll of the dropped topic returned empty');
is(still_waiting($k1pid), 't', 'the long fetch of another topic still waits');
$node->as_role('app', q{SELECT estream.produce('kept', '{"n": 7}')});
is($node->finish_query($k1, $k1s), '7', 'and gets its record when it commits');
is($node->as_role('reader', q{SELECT count(*) FROM estream.topics WHERE topic = 'doomed'}),
	'0', 'the topic is gone');

#
# 2. A role that may not drop the extension ends no wait by trying.
#
$k1s = $node->start_query($k1,
	"SELECT value->>'n' FROM estream.fetch('kept', 0, 1, wait_ms => $wait_ms)");
wait_until_waiting($k1pid, 'fetch of kept, before a refused DROP EXTENSION');
my ($ret, $out, $err) = $node->psql(
	'postgres', 'DROP EXTENSION estream CASCADE',
	extra_params => [ '-U', 'reader', '-v', 'VERBOSITY=sqlstate' ]);
like($err, qr/ERROR:  42501/, 'reader may not drop the extension (42501)');
($ret, $out, $err) = $node->psql(
	'postgres', 'ALTER EXTENSION estream UPDATE',
	extra_params => [ '-U', 'reader', '-v', 'VERBOSITY=sqlstate' ]);
like($err, qr/ERROR:  42501/, 'nor update it (42501)');
sleep 1;
is(still_waiting($k1pid), 't', 'the long fetch still waits after both refusals');

#
# 3. DROP EXTENSION ends every long-poll of the database at once.
#
my ($c1, $c1pid) = $node->background_as_role('reader', 'sqlstate');
$c1->query_safe(
	q{SELECT member_id AS m FROM estream.join_group('s', ARRAY['kept'], 'm1') \gset});
$node->as_role('reader', q{SELECT count(*) FROM estream.consume('s', 'm1')});
my $c1s = $node->start_query($c1,
	"SELECT count(*) FROM estream.consume('s', 'm1', wait_ms => $wait_ms)");
wait_until_waiting($c1pid, 'consume of a session member');
$t0 = time();
$node->safe_psql('postgres', 'DROP EXTENSION estream CASCADE');
$took = time() - $t0;
cmp_ok($took, '<', $bound_s,
	"DROP EXTENSION returns at once behind long-polls ($took s)");
is($node->finish_query($k1, $k1s), '', 'the long fetch returned no record');
is($node->finish_query($c1, $c1s), '0', 'the consume of a session member returned empty');
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_extension WHERE extname = 'estream'}),
	'0', 'the extension is gone');

#
# 4. ALTER EXTENSION UPDATE (1.3 to 1.4) ends the long-polls too.
#
setup_extension('1.3');
$node->safe_psql(
	'postgres', q{
SELECT estream.create_topic('old', 1);
GRANT USAGE ON SCHEMA estream TO reader;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA estream TO reader;
GRANT SELECT ON ALL TABLES IN SCHEMA estream TO reader;
});
$k1s = $node->start_query($k1,
	"SELECT count(*) FROM estream.fetch('old', 0, 0, wait_ms => $wait_ms)");
wait_until_waiting($k1pid, 'fetch under 1.3');
$t0 = time();
$node->safe_psql('postgres', 'ALTER EXTENSION estream UPDATE');
$took = time() - $t0;
cmp_ok($took, '<', $bound_s,
	"ALTER EXTENSION UPDATE returns at once behind a long-poll ($took s)");
is($node->finish_query($k1, $k1s), '0', 'the long fetch returned empty');
is($node->safe_psql('postgres',
		q{SELECT extversion FROM pg_extension WHERE extname = 'estream'}),
	'1.4', 'the extension is at 1.4');

# Once the drain's transaction is over, long-polls wait again.
$node->safe_psql('postgres',
	q{SELECT estream.grant_acl('reader', 'read', 'topic', 'old')});
$k1s = $node->start_query($k1,
	"SELECT value->>'n' FROM estream.fetch('old', 0, 0, wait_ms => $wait_ms)");
wait_until_waiting($k1pid, 'fetch after the update');
$node->safe_psql('postgres', q{SELECT estream.produce('old', '{"n": 3}')});
is($node->finish_query($k1, $k1s), '3', 'and returns the record that commits');

$_->quit for ($f1, $p1, $k1, $c1);
$node->stop;
done_testing();
