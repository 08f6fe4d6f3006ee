
# Copyright (c) 2026, estream developers

# Offsets and stable offsets across crashes.
#
# Shared memory (next offset, in-flight markers, committed end) is rebuilt
# empty after a crash; next is then recomputed as 1 + the highest stored
# offset.  This test checks, after a backend killed with SIGKILL (crash
# restart) and after an immediate shutdown:
#
# - every committed record is still there, at its offset;
# - no stable offset moved backwards, so no offset a consumer passed is
#   handed out again, while offsets that only aborted transactions used
#   may be;
# - records of transactions open at the crash are gone;
# - producing and fetching (from the consumers' positions) work.
#
# It does so first step by step, with exact offsets, then under random load
# (pgbench producers and a consumer, crashed at a random moment).  Last,
# PREPARE TRANSACTION after producing fails with 0A000 and leaves nothing.
#
# Application roles: producers (sessions and pgbench) run as crash_producer,
# a member of the predefined role estream_producer; consumers as
# crash_consumer (read on topic cr and on topics prefixed load_, granted
# with estream.grant_acl()); crashes and checks run as the superuser.

use strict;
use warnings;

use IPC::Run;
use EstreamNode;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = EstreamNode->create('crash', conf => "restart_after_crash = on\n");

$node->safe_psql(
	'postgres', q{
CREATE EXTENSION estream;
SELECT estream.create_topic('cr', 3);
CREATE ROLE crash_producer LOGIN IN ROLE estream_producer;
CREATE ROLE crash_consumer LOGIN;
SELECT estream.grant_acl('crash_consumer', 'read', 'topic', 'cr');
SELECT estream.grant_acl('crash_consumer', 'read', 'topic', 'load_', pattern_type => 'prefixed');
});

# A session of the application, as one of its roles.
sub role_session
{
	my ($role) = @_;
	return $node->background_psql('postgres', extra_params => [ '-U', $role ]);
}

# The application's roles are ordinary roles: not superusers, and refused
# (42501) when they write the topic's log directly.
my $segment = $node->safe_psql('postgres',
	"SELECT format('estream.log_%s_%s', topic_id, current_segment) FROM estream.topic WHERE name = 'cr'"
);
for my $role (qw(crash_producer crash_consumer))
{
	is($node->as_role($role, q{SELECT current_user, current_setting('is_superuser')}),
		"$role|off", "$role is not a superuser");
	my ($ret, $stdout, $stderr) = $node->psql(
		'postgres',
		"INSERT INTO $segment VALUES (0, 0, 9223372036854775807, now(), NULL, '{}', NULL, NULL)",
		extra_params => [ '-U', $role, '-v', 'VERBOSITY=sqlstate' ]);
	like($stderr, qr/ERROR:  42501/,
		"$role cannot write the log of topic cr directly (42501)");
}

# partition:offset:value of every record of a topic
sub log_contents
{
	my ($topic, $partitions) = @_;
	return $node->safe_psql(
		'postgres', qq{
SELECT string_agg(format('%s:%s:%s', f.partition, f."offset", f.value->>'v'), ','
				  ORDER BY f.partition, f."offset")
FROM generate_series(0, $partitions - 1) p, estream.fetch('$topic', p, 0) f});
}

# Produce one record, in a session or as crash_producer; returns its offset.
sub produce
{
	my ($session, $v, $partition) = @_;
	my $sql =
	  qq{SELECT "offset" FROM estream.produce('cr', '{"v": "$v"}', partition => $partition)};
	return defined $session
	  ? $session->query_safe($sql)
	  : $node->as_role('crash_producer', $sql);
}

# Wait for the postmaster to reinitialize after a crash, and for the server
# to accept connections again.
sub wait_for_crash_restart
{
	my ($log_offset, $what) = @_;
	ok( $node->wait_for_log(
			qr/all server processes terminated; reinitializing/, $log_offset),
		"crash restart began: $what");
	ok($node->poll_query_until('postgres', 'SELECT 1', '1'),
		"server accepts connections again: $what");
}

#
# 1. Step by step, SIGKILL of a backend that has produced and not committed.
#

# partition 0: committed 0..4
$node->as_role('crash_producer',
	q{SELECT estream.produce_batch('cr', ARRAY(SELECT jsonb_build_object('v', 'a' || i) FROM generate_series(0, 4) i), partition => 0)}
);
# partition 1: committed 0..2, then 3 and 4 rolled back (a hole at the end)
$node->as_role('crash_producer',
	q{SELECT estream.produce_batch('cr', ARRAY(SELECT jsonb_build_object('v', 'b' || i) FROM generate_series(0, 2) i), partition => 1)}
);
$node->as_role(
	'crash_producer', q{
BEGIN;
SELECT estream.produce_batch('cr', ARRAY['{"v": "rolled-back"}'::jsonb, '{"v": "rolled-back"}'], partition => 1);
ROLLBACK;});
# partition 2: 0 committed, 1 produced in a savepoint that rolled back
$node->as_role(
	'crash_producer', q{
BEGIN;
SELECT estream.produce('cr', '{"v": "c0"}', partition => 2);
SAVEPOINT s;
SELECT estream.produce('cr', '{"v": "savepoint"}', partition => 2);
ROLLBACK TO SAVEPOINT s;
COMMIT;});

# Transactions open at the crash.  The first one will be killed.
my $victim = role_session('crash_producer');
my $victim_pid = $victim->query_safe('SELECT pg_backend_pid()');
$victim->query_safe('BEGIN');
is(produce($victim, 'in-flight', 0), '5', 'open transaction got offset 5 of partition 0');

my $open1 = role_session('crash_producer');
$open1->query_safe('BEGIN');
is(produce($open1, 'in-flight', 1), '5', 'open transaction got offset 5 of partition 1');

my $open2 = role_session('crash_producer');
$open2->query_safe('BEGIN');
is(produce($open2, 'in-flight', 2), '2', 'open transaction got offset 2 of partition 2');
$open2->query_safe('SAVEPOINT s');
is(produce($open2, 'in-flight', 2), '3', 'open savepoint got offset 3 of partition 2');

# committed behind an open transaction: stored, but above the stable offset
is(produce(undef, 'a6', 0), '6',
	'record committed behind the open transaction got offset 6');

is($node->watermarks('cr', qw(stable_offset next_offset)), '0:5:7,1:3:6,2:1:4', 'watermarks before the crash');
my $log_before = log_contents('cr', 3);
is($log_before, '0:0:a0,0:1:a1,0:2:a2,0:3:a3,0:4:a4,1:0:b0,1:1:b1,1:2:b2,2:0:c0',
	'a consumer sees the records below the stable offsets');

my $log_offset = -s $node->logfile;
kill 'KILL', $victim_pid;
wait_for_crash_restart($log_offset, 'SIGKILL of a producing backend');
ok( $node->log_contains(
		qr/server process \(PID $victim_pid\) was terminated by signal 9/,
		$log_offset),
	'the producing backend was killed by SIGKILL');
$_->quit for ($victim, $open1, $open2);

# Offsets continue from 1 + the highest committed offset: the hole left by
# the killed transaction (0:5) stays a hole, the aborted offsets at the end
# of partitions 1 and 2 are reused, and every stable offset is at least what
# it was before the crash.
is($node->watermarks('cr', qw(stable_offset next_offset)), '0:7:7,1:3:3,2:1:1', 'watermarks after the crash restart');
is( log_contents('cr', 3),
	'0:0:a0,0:1:a1,0:2:a2,0:3:a3,0:4:a4,0:6:a6,1:0:b0,1:1:b1,1:2:b2,2:0:c0',
	'committed records survived at their offsets, open ones are gone');

is(produce(undef, 'a7', 0), '7', 'partition 0 continues at 7');
is(produce(undef, 'b3', 1), '3', 'partition 1 continues at 3');
is(produce(undef, 'c1', 2), '1', 'partition 2 continues at 1');

# A consumer resumes from the stable offsets it saw before the crash.
is( $node->as_role(
		'crash_consumer', q{
SELECT string_agg(format('%s:%s:%s', f.partition, f."offset", f.value->>'v'), ','
				  ORDER BY f.partition, f."offset")
FROM (SELECT * FROM estream.fetch('cr', 0, 5)
	  UNION ALL SELECT * FROM estream.fetch('cr', 1, 3)
	  UNION ALL SELECT * FROM estream.fetch('cr', 2, 1)) f}),
	'0:6:a6,0:7:a7,1:3:b3,2:1:c1',
	'a consumer resumes from its pre-crash positions and sees every new record');

#
# 2. Step by step, immediate shutdown with transactions open.
#
my $open3 = role_session('crash_producer');
$open3->query_safe('BEGIN');
is(produce($open3, 'in-flight', 0), '8', 'open transaction got offset 8 of partition 0');
is(produce(undef, 'a9', 0), '9', 'record committed behind it got offset 9');
my $open4 = role_session('crash_producer');
$open4->query_safe('BEGIN');
is(produce($open4, 'in-flight', 1), '4', 'open transaction got offset 4 of partition 1');
$node->as_role(
	'crash_producer', q{
BEGIN;
SELECT estream.produce('cr', '{"v": "c2"}', partition => 2);
SAVEPOINT s;
SELECT estream.produce('cr', '{"v": "savepoint"}', partition => 2);
RELEASE SAVEPOINT s;
SAVEPOINT t;
SELECT estream.produce('cr', '{"v": "savepoint"}', partition => 2);
ROLLBACK TO SAVEPOINT t;
COMMIT;});
is($node->watermarks('cr', qw(stable_offset next_offset)), '0:8:10,1:4:5,2:4:5', 'watermarks before the immediate shutdown');

$node->stop('immediate');
$node->start;
$_->quit for ($open3, $open4);

is($node->watermarks('cr', qw(stable_offset next_offset)), '0:10:10,1:4:4,2:4:4',
	'watermarks after the immediate shutdown');
is( log_contents('cr', 3),
	'0:0:a0,0:1:a1,0:2:a2,0:3:a3,0:4:a4,0:6:a6,0:7:a7,0:9:a9,'
	  . '1:0:b0,1:1:b1,1:2:b2,1:3:b3,2:0:c0,2:1:c1,2:2:c2,2:3:savepoint',
	'committed records survived the immediate shutdown');
is( $node->as_role(
		'crash_producer', q{
SELECT string_agg(format('%s:%s', partition, "offset"), ',' ORDER BY partition)
FROM (SELECT * FROM estream.produce('cr', '{"v": "a10"}', partition => 0)
	  UNION ALL SELECT * FROM estream.produce('cr', '{"v": "b4"}', partition => 1)
	  UNION ALL SELECT * FROM estream.produce('cr', '{"v": "c4"}', partition => 2)) p}),
	'0:10,1:4,2:4',
	'offsets continue from 1 + the highest committed offset');
is( $node->as_role(
		'crash_consumer', q{
SELECT string_agg(format('%s:%s:%s', f.partition, f."offset", f.value->>'v'), ','
				  ORDER BY f.partition, f."offset")
FROM (SELECT * FROM estream.fetch('cr', 0, 8)
	  UNION ALL SELECT * FROM estream.fetch('cr', 1, 4)
	  UNION ALL SELECT * FROM estream.fetch('cr', 2, 4)) f}),
	'0:9:a9,0:10:a10,1:4:b4,2:4:c4',
	'a consumer resumes from its positions after the immediate shutdown');

#
# 3. Under load: pgbench producers commit, roll back and sleep in open
# transactions while a consumer records what it sees; then the server
# crashes.  Afterwards, nothing the consumer saw is lost or reused.
#
$node->safe_psql(
	'postgres', q{
CREATE TABLE committed_ids (topic text, id bigint, partition int, "offset" bigint,
	PRIMARY KEY (topic, id));
CREATE TABLE seen (topic text, partition int, "offset" bigint, id bigint);
CREATE TABLE wm_seen (topic text, round int, partition int, stable bigint, next bigint);
CREATE SEQUENCE id_seq;

CREATE FUNCTION p(t text, part int) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	v_id bigint := nextval('id_seq');
	r estream.position;
BEGIN
	r := estream.produce(t, jsonb_build_object('id', v_id), partition => part);
	INSERT INTO committed_ids VALUES (t, v_id, r.partition, r."offset");
END
$$;

-- Consume every partition of a topic forever, one transaction per round.
CREATE PROCEDURE consume(t text, nparts int)
LANGUAGE plpgsql AS $$
DECLARE
	pos bigint[] := array_fill(0::bigint, ARRAY[nparts]);
	rnd int := 0;
	r record;
BEGIN
	LOOP
		rnd := rnd + 1;
		INSERT INTO wm_seen
			SELECT t, rnd, w.partition, w.stable_offset, w.next_offset
			FROM estream.watermarks(t) w;
		FOR part IN 0 .. nparts - 1 LOOP
			FOR r IN SELECT f."offset", (f.value->>'id')::bigint AS id
					 FROM estream.fetch(t, part, pos[part + 1], 100, 20) f LOOP
				INSERT INTO seen VALUES (t, part, r."offset", r.id);
				pos[part + 1] := r."offset" + 1;
			END LOOP;
		END LOOP;
		COMMIT;
	END LOOP;
END
$$;

-- what the producers and the consumer write
GRANT USAGE ON SEQUENCE id_seq TO crash_producer;
GRANT INSERT ON committed_ids TO crash_producer;
GRANT INSERT ON seen, wm_seen TO crash_consumer;
});

my %pgbench_scripts = (
	'commit@4' => q{
\set p random(0, 3)
SELECT p('TOPIC', :p);
},
	'multi@2' => q{
\set p random(0, 3)
\set q random(0, 3)
BEGIN;
SELECT p('TOPIC', :p);
SELECT p('TOPIC', :q);
COMMIT;
},
	'rollback@2' => q{
\set p random(0, 3)
\set q random(0, 3)
BEGIN;
SELECT p('TOPIC', :p);
SELECT p('TOPIC', :q);
ROLLBACK;
},
	'savepoint@2' => q{
\set p random(0, 3)
\set q random(0, 3)
BEGIN;
SELECT p('TOPIC', :p);
SAVEPOINT s;
SELECT p('TOPIC', :q);
ROLLBACK TO SAVEPOINT s;
COMMIT;
},
	'sleep@2' => q{
\set p random(0, 3)
\set q random(0, 3)
BEGIN;
SELECT p('TOPIC', :p);
SELECT pg_sleep(0.05);
SELECT p('TOPIC', :q);
COMMIT;
},);

my $scriptdir = PostgreSQL::Test::Utils::tempdir;

# Run the load on a fresh topic, crash the server with $crash, check.
sub load_and_crash
{
	my ($topic, $what, $crash) = @_;

	$node->safe_psql('postgres', "SELECT estream.create_topic('$topic', 4)");

	my @pgbench_files;
	for my $name (sort keys %pgbench_scripts)
	{
		my ($base, $weight) = split /@/, $name;
		my $script = $pgbench_scripts{$name};
		$script =~ s/TOPIC/$topic/g;
		PostgreSQL::Test::Utils::append_to_file("$scriptdir/${topic}_$base.sql",
			$script);
		push @pgbench_files, '-f', "$scriptdir/${topic}_$base.sql\@$weight";
	}

	# Both run until the crash disconnects them.
	my ($out, $err, $cout, $cerr) = ('', '', '', '');
	my ($pgbench, $consumer);
	{
		local $ENV{PGAPPNAME} = 'estream_pgbench';
		$pgbench = IPC::Run::start(
			[
				$node->installed_command('pgbench'), '-n',
				'-c', '3', '-T', '120',
				@pgbench_files, '-h', $node->host,
				'-p', $node->port, '-U', 'crash_producer', 'postgres'
			],
			'<', '/dev/null', '>', \$out, '2>', \$err,
			IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	}
	{
		local $ENV{PGAPPNAME} = 'estream_consumer';
		$consumer = IPC::Run::start(
			[
				$node->installed_command('psql'), '-XAtq',
				'-d', $node->connstr('postgres') . ' user=crash_consumer',
				'-c', "CALL consume('$topic', 4)"
			],
			'<', '/dev/null', '>', \$cout, '2>', \$cerr,
			IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	}

	# Crash once the consumer has seen a good share of records and a
	# producer sleeps inside a transaction that produced.
	ok( $node->poll_query_until(
			'postgres',
			"SELECT count(*) >= 1000 FROM seen WHERE topic = '$topic'"),
		"consumer is reading: $what");
	ok( $node->poll_query_until(
			'postgres',
			"SELECT count(*) > 0 FROM pg_stat_activity
			 WHERE application_name = 'estream_pgbench' AND wait_event = 'PgSleep'"),
		"a producer is inside an open transaction: $what");

	$crash->();

	$pgbench->finish;
	$consumer->finish;
	note "pgbench output:\n$out\n$err";
	note "consumer output:\n$cerr";
	like(
		$cerr,
		qr/server closed the connection unexpectedly|connection to server was lost|terminating connection/,
		"the consumer was disconnected by the crash: $what");
	unlike($cerr, qr/ERROR/, "the consumer had no error until the crash: $what");

	my $stats = $node->safe_psql(
		'postgres', qq{
SELECT (SELECT count(*) FROM seen WHERE topic = '$topic'),
	   (SELECT count(*) FROM committed_ids WHERE topic = '$topic'),
	   (SELECT last_value FROM id_seq)});
	note "seen|committed|ids used: $stats";

	# Every record the consumer saw is still there, at its offset; the log
	# is exactly what committed.
	$node->safe_psql(
		'postgres', qq{
CREATE TABLE final_$topic AS
SELECT f.partition, f."offset", (f.value->>'id')::bigint AS id
FROM generate_series(0, 3) p, estream.fetch('$topic', p, 0, 100000) f});
	is( $node->safe_psql(
			'postgres', qq{
SELECT count(*) FROM (
	SELECT partition, "offset", id FROM seen WHERE topic = '$topic'
	EXCEPT SELECT partition, "offset", id FROM final_$topic) d}),
		'0',
		"every record the consumer saw survived at its offset: $what");
	is( $node->safe_psql(
			'postgres', qq{
SELECT count(*) FROM (
	(SELECT partition, "offset", id FROM final_$topic
	 EXCEPT SELECT partition, "offset", id FROM committed_ids WHERE topic = '$topic')
	UNION ALL
	(SELECT partition, "offset", id FROM committed_ids WHERE topic = '$topic'
	 EXCEPT SELECT partition, "offset", id FROM final_$topic)) d}),
		'0',
		"the log is exactly the committed records: $what");

	# No stable offset moved backwards; new offsets are above everything
	# the consumer passed.
	is( $node->safe_psql(
			'postgres', qq{
SELECT count(*)
FROM estream.watermarks('$topic') w
JOIN (SELECT partition, max(stable) AS stable FROM wm_seen
	  WHERE topic = '$topic' GROUP BY partition) s USING (partition)
WHERE w.stable_offset < s.stable}),
		'0',
		"no stable offset moved backwards across the crash: $what");
	is( $node->safe_psql(
			'postgres', qq{
SELECT count(*)
FROM estream.watermarks('$topic') w
LEFT JOIN (SELECT partition, max("offset") + 1 AS end_ FROM final_$topic
		   GROUP BY partition) l USING (partition)
WHERE w.stable_offset <> coalesce(l.end_, 0) OR w.next_offset <> w.stable_offset}),
		'0',
		"offsets restart at 1 + the highest committed offset: $what");
	is( $node->safe_psql(
			'postgres', qq{
SELECT count(*)
FROM generate_series(0, 3) part
CROSS JOIN LATERAL estream.produce('$topic', '{"after": true}', partition => part) n
WHERE n."offset" < (SELECT coalesce(max(stable), 0) FROM wm_seen
					WHERE topic = '$topic' AND partition = part)
   OR n."offset" <= (SELECT coalesce(max("offset"), -1) FROM seen
					 WHERE topic = '$topic' AND partition = part)}),
		'0',
		"new records never reuse an offset the consumer passed: $what");
	is( $node->safe_psql(
			'postgres', qq{
SELECT count(*)
FROM generate_series(0, 3) part
CROSS JOIN LATERAL estream.fetch('$topic', part,
	(SELECT coalesce(max("offset") + 1, 0) FROM seen WHERE topic = '$topic' AND partition = part),
	100000) f
WHERE f.value = '{"after": true}'}),
		'4',
		"a consumer resumes from its positions and sees the new records: $what");
}

load_and_crash(
	'load_kill', 'SIGKILL under load',
	sub {
		my $pid = $node->safe_psql(
			'postgres', q{
SELECT pid FROM pg_stat_activity
WHERE application_name = 'estream_pgbench'
ORDER BY wait_event IS NOT DISTINCT FROM 'PgSleep' DESC, xact_start IS NULL
LIMIT 1});
		die "no pgbench backend to kill" unless $pid =~ /^\d+$/;
		my $offset = -s $node->logfile;
		kill 'KILL', $pid;
		wait_for_crash_restart($offset, 'SIGKILL under load');
	});

load_and_crash(
	'load_immediate',
	'immediate shutdown under load',
	sub {
		$node->stop('immediate');
		$node->start;
	});

#
# 4. PREPARE TRANSACTION after producing fails, and leaves nothing behind.
#
my $wm_before = $node->watermarks('cr', qw(stable_offset next_offset));
my ($ret, $stdout, $stderr) = $node->psql(
	'postgres', q{
BEGIN;
SELECT estream.produce('cr', '{"v": "prepared"}', partition => 2);
PREPARE TRANSACTION 'estream_prep';},
	extra_params => [ '-U', 'crash_producer', '-v', 'VERBOSITY=verbose' ]);
like(
	$stderr,
	qr/ERROR:  0A000: cannot PREPARE a transaction that has produced to an estream topic/,
	'PREPARE TRANSACTION after produce fails with 0A000');
is($node->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts'),
	'0', 'no transaction was prepared');
is( $node->as_role(
		'crash_consumer',
		q{SELECT count(*) FROM estream.fetch('cr', 2, 0) WHERE value->>'v' = 'prepared'}),
	'0',
	'the record of the failed PREPARE is not visible');
is($node->watermarks('cr', qw(stable_offset next_offset)), '0:11:11,1:5:5,2:5:6',
	'the failed PREPARE left a hole and holds no stable offset back');
is( $node->as_role(
		'crash_producer',
		q{SELECT "offset" FROM estream.produce('cr', '{"v": "c6"}', partition => 2)}),
	'6',
	'producing works after the failed PREPARE');
is( $node->as_role(
		'crash_consumer',
		q{SELECT string_agg("offset"::text, ',' ORDER BY "offset") FROM estream.fetch('cr', 2, 4)}
	),
	'4,6',
	'a consumer skips the hole of the failed PREPARE');

# A transaction that only fetched can be prepared and committed.
$node->as_role(
	'crash_consumer', q{
BEGIN;
SELECT count(*) FROM estream.fetch('cr', 0, 0);
PREPARE TRANSACTION 'estream_read';
COMMIT PREPARED 'estream_read';});
is($node->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts'),
	'0', 'a transaction that only fetched was prepared and committed');

$node->stop;

done_testing();
