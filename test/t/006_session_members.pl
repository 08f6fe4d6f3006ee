
# Copyright (c) 2026, estream developers

# Session members of a consumer group: heartbeats, session timeouts,
# rebalancing and at-least-once processing.
#
# Three members m1, m2 and m3 join a group on a 6-partition topic with a
# short session timeout, and run a consume / process / commit loop in
# separate transactions (at-least-once: the processed records are recorded,
# then their offsets committed), while a producer keeps adding records (and
# rolled-back ones, which leave holes).  m3 is then stopped without leaving
# the group: its psql is killed and its backend terminated.  Checked:
#
# - round-robin assignment: m1 0,3; m2 1,4; m3 2,5 with three members; after
#   m3's session timed out, the heartbeats of m1 and m2 remove it and give
#   its partitions away (m1 0,2,4; m2 1,3,5), not before its timeout;
# - m3's old partitions are consumed by m1 and m2 from m3's committed
#   offsets;
# - m3 gets QE002 from commit, heartbeat and consume (and leave_group); m2
#   committing partition 4, which it lost in the rebalance, gets QE001, as
#   does a commit without member id of a partition a live member owns;
# - a member joining again gets its partitions back, and leave_group gives
#   them away at once;
# - at the end every committed record was processed at least once, no
#   processed record is one that did not commit, and the group's committed
#   offsets reach the stable offsets; members that leave leave the group
#   empty, and it can be deleted.
#
# Members rejoin when they get QE002 themselves (a stalled machine can make
# a live member time out); that is reported, not failed on.
#
# Application roles: the producer runs as sm_producer, a member of the
# predefined role estream_producer; the members, and the test's own calls
# as a member or client of group sg, as sm_member, a member of
# estream_consumer; both with privileges on the test's tables and
# sequences.  Stopping m3 and the checks run as the superuser.

use strict;
use warnings;

use IPC::Run;
use EstreamNode;
use PostgreSQL::Test::Utils;
use Test::More;

my $n_partitions = 6;
my $session_timeout_ms = 1500;
my $n_prefill_per_partition = 100;

my $node = EstreamNode->create('session_members', conf => "log_min_messages = log\n");

$node->safe_psql(
	'postgres', qq{
CREATE EXTENSION estream;
SELECT estream.create_topic('sm', $n_partitions);

CREATE SEQUENCE id_seq;
-- one row per committed input record, written in the producing transaction
CREATE TABLE input_ids (
	id bigint PRIMARY KEY,
	partition int NOT NULL,
	"offset" bigint NOT NULL,
	UNIQUE (partition, "offset"));
-- every record a member processed, in a committed transaction
CREATE TABLE processed (
	seq bigserial PRIMARY KEY,
	member text NOT NULL,
	partition int NOT NULL,
	"offset" bigint NOT NULL,
	id bigint NOT NULL,
	at timestamptz NOT NULL DEFAULT clock_timestamp());
-- QE001/QE002 the members got, and their joins
CREATE TABLE member_events (
	member text NOT NULL,
	event text NOT NULL,
	partition int,
	at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE stop_producer (x int);
CREATE TABLE stop_members (x int);

-- Produce n records to every partition and remember them.
CREATE FUNCTION produce_sm(n int) RETURNS void
LANGUAGE plpgsql AS \$\$
DECLARE
	ids bigint[];
BEGIN
	FOR p IN 0 .. $n_partitions - 1 LOOP
		SELECT array_agg(nextval('id_seq') ORDER BY g) INTO ids FROM generate_series(1, n) g;
		INSERT INTO input_ids
		SELECT ids[r.o], r.partition, r."offset"
		FROM estream.produce_batch('sm',
				ARRAY(SELECT jsonb_build_object('id', i)
					  FROM unnest(ids) WITH ORDINALITY u(i, o) ORDER BY o),
				partition => p)
			WITH ORDINALITY AS r(partition, "offset", o);
	END LOOP;
END
\$\$;

-- Commit records to every partition until told to stop; some iterations
-- also produce records in a block they roll back (holes).
CREATE PROCEDURE producer()
LANGUAGE plpgsql AS \$\$
BEGIN
	WHILE NOT EXISTS (SELECT FROM stop_producer) LOOP
		PERFORM produce_sm(2);
		IF random() < 0.2 THEN
			BEGIN
				PERFORM produce_sm(1);
				RAISE EXCEPTION 'roll back';
			EXCEPTION WHEN raise_exception THEN
				NULL;
			END;
		END IF;
		COMMIT;
		PERFORM pg_sleep(0.05);
	END LOOP;
END
\$\$;

-- A session member: join, then consume, process (record the records) and
-- commit the next offsets, each in its own transaction, until told to stop;
-- then leave.  consume() long-polls for at most 100 ms: it holds the group
-- row locked (its heartbeat) until its transaction ends, which keeps the
-- other members from heartbeating meanwhile.
CREATE PROCEDURE member_loop(me text)
LANGUAGE plpgsql AS \$\$
DECLARE
	recs estream.group_record[];
	hi record;
BEGIN
	PERFORM estream.join_group('sg', '{sm}', me, $session_timeout_ms, 'earliest');
	INSERT INTO member_events (member, event) VALUES (me, 'joined');
	COMMIT;
	WHILE NOT EXISTS (SELECT FROM stop_members) LOOP
		recs := NULL;
		BEGIN
			SELECT array_agg(c) INTO recs FROM estream.consume('sg', me, 20, 100) c;
		EXCEPTION WHEN SQLSTATE 'QE002' THEN
			PERFORM estream.join_group('sg', '{sm}', me, $session_timeout_ms, 'earliest');
			INSERT INTO member_events (member, event) VALUES (me, 'rejoined');
		END;
		COMMIT;
		CONTINUE WHEN recs IS NULL;

		INSERT INTO processed (member, partition, "offset", id)
		SELECT me, r.partition, r."offset", (r.value->>'id')::bigint FROM unnest(recs) r;
		PERFORM pg_sleep(0.01);
		COMMIT;

		-- one transaction per partition: a transaction that holds one
		-- partition's offset row and then locks another one can deadlock
		-- with a concurrent rebalance, which locks them in its own order
		FOR hi IN SELECT r.partition, max(r."offset") + 1 AS next
				  FROM unnest(recs) r GROUP BY r.partition LOOP
			BEGIN
				PERFORM estream.commit('sg', 'sm', hi.partition, hi.next, me);
			EXCEPTION WHEN SQLSTATE 'QE001' OR SQLSTATE 'QE002' THEN
				INSERT INTO member_events (member, event, partition)
					VALUES (me, SQLSTATE, hi.partition);
			END;
			COMMIT;
		END LOOP;
	END LOOP;
	PERFORM estream.leave_group('sg', me);
END
\$\$;

-- the application's roles: predefined estream rights, and what the
-- producer and the members write
CREATE ROLE sm_producer LOGIN IN ROLE estream_producer;
CREATE ROLE sm_member LOGIN IN ROLE estream_consumer;
GRANT USAGE ON SEQUENCE id_seq TO sm_producer;
GRANT INSERT ON input_ids TO sm_producer;
GRANT SELECT ON stop_producer TO sm_producer;
GRANT USAGE ON SEQUENCE processed_seq_seq TO sm_member;
GRANT INSERT ON processed, member_events TO sm_member;
GRANT SELECT ON stop_members TO sm_member;
});

# The application's roles are ordinary roles: not superusers, and refused
# (42501) when they write the topic's log directly.
my $segment = $node->safe_psql('postgres',
	"SELECT format('estream.log_%s_%s', topic_id, current_segment) FROM estream.topic WHERE name = 'sm'"
);
for my $role (qw(sm_producer sm_member))
{
	is($node->as_role($role, q{SELECT current_user, current_setting('is_superuser')}),
		"$role|off", "$role is not a superuser");
	my ($ret, $stdout, $stderr) = $node->psql(
		'postgres',
		"INSERT INTO $segment VALUES (0, 0, 9223372036854775807, now(), NULL, '{}', NULL, NULL)",
		extra_params => [ '-U', $role, '-v', 'VERBOSITY=sqlstate' ]);
	like($stderr, qr/ERROR:  42501/,
		"$role cannot write the log of topic sm directly (42501)");
}

$node->as_role('sm_producer', "SELECT produce_sm($n_prefill_per_partition)");

my $psql = $node->installed_command('psql');
my $connstr = $node->connstr('postgres');

# Run a procedure in a psql of its own, as a role.
my (%h, %out, %err);

sub start_session
{
	my ($name, $role, $sql) = @_;
	$out{$name} = '';
	$err{$name} = '';
	$h{$name} = IPC::Run::start(
		[
			$psql, '-XAtq', '-v', 'ON_ERROR_STOP=1',
			'-d', "$connstr user=$role application_name=sg_$name",
			'-c', $sql
		],
		'<', '/dev/null',
		'>', \$out{$name},
		'2>', \$err{$name},
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
}

# partition:member of every partition of the group
sub assignment
{
	return $node->safe_psql(
		'postgres', q{
SELECT string_agg(format('%s:%s', partition, coalesce(member_id, '-')), ','
				  ORDER BY partition)
FROM estream.committed('sg', 'sm')});
}

sub generation
{
	return $node->safe_psql('postgres',
		q{SELECT generation FROM estream.groups WHERE "group" = 'sg'});
}

# The group's state, when a wait timed out.
sub diag_state
{
	diag $node->safe_psql('postgres', q{
SELECT * FROM estream.committed('sg', 'sm');
SELECT * FROM estream.watermarks('sm');
SELECT * FROM estream.group_members;
SELECT * FROM member_events ORDER BY at;
SELECT member, partition, min("offset"), max("offset"), min(at), max(at), count(*) FROM processed GROUP BY 1, 2 ORDER BY 1, 2;
SELECT pid, application_name, state, wait_event_type, wait_event, xact_start, left(query, 60) FROM pg_stat_activity WHERE application_name LIKE 'sg_%';
SELECT locktype, relation::regclass, page, tuple, transactionid, pid, mode, granted FROM pg_locks WHERE NOT granted;
});
}

#
# Three members join and get two partitions each, round-robin in member id
# order.
#
start_session('producer', 'sm_producer', 'CALL producer()');
start_session($_, 'sm_member', "CALL member_loop('$_')") for qw(m1 m2 m3);

ok( $node->poll_query_until(
		'postgres', q{
SELECT string_agg(format('%s:%s', partition, coalesce(member_id, '-')), ','
				  ORDER BY partition)
FROM estream.committed('sg', 'sm')},
		'0:m1,1:m2,2:m3,3:m1,4:m2,5:m3'),
	'three members share the partitions round-robin')
  or diag_state();
is( $node->safe_psql(
		'postgres', q{
SELECT string_agg(member_id || ':' || array_to_string(assignment, ' '), ',' ORDER BY member_id)
FROM estream.group_members WHERE "group" = 'sg' AND alive}),
	'm1:sm:0 sm:3,m2:sm:1 sm:4,m3:sm:2 sm:5',
	'group_members shows the three live members and their partitions');
is( $node->safe_psql('postgres', q{SELECT string_agg(partition::text, ',') FROM estream.assignment('sg', 'm3')}),
	'2,5', 'assignment() of m3');

# m3 works: it processed records of both its partitions.
ok( $node->poll_query_until(
		'postgres', q{
SELECT count(DISTINCT partition) = 2 FROM processed
WHERE member = 'm3' AND partition IN (2, 5)}),
	'm3 processed records of its partitions');

#
# Stop m3 without leave_group: kill its psql, and terminate its backend
# (which would otherwise go on running the procedure).
#
my $gen_before = generation();
my $m3_pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE application_name = 'sg_m3'");
$h{m3}->kill_kill;
$node->safe_psql('postgres', "SELECT pg_terminate_backend($m3_pid)");
ok( $node->poll_query_until(
		'postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $m3_pid"),
	"m3's backend is gone");

# m3's last heartbeat and committed offsets, as it left them
my ($m3_heartbeat, $m3_gone_at) = split /\|/, $node->safe_psql(
	'postgres', q{
SELECT (SELECT last_heartbeat FROM estream.group_members
		WHERE "group" = 'sg' AND member_id = 'm3'),
	   clock_timestamp()});
my %m3_committed = map { split /\|/ } split /\n/, $node->safe_psql(
	'postgres', q{
SELECT partition, committed_offset FROM estream.committed('sg', 'sm')
WHERE partition IN (2, 5)});
note "m3 last heartbeat at $m3_heartbeat, gone at $m3_gone_at; committed "
  . "offsets: 2:$m3_committed{2}, 5:$m3_committed{5}";

#
# After the session timeout, the heartbeats of m1 and m2 remove m3 and
# reassign its partitions.
#
ok( $node->poll_query_until(
		'postgres', q{
SELECT string_agg(format('%s:%s', partition, coalesce(member_id, '-')), ','
				  ORDER BY partition)
FROM estream.committed('sg', 'sm')},
		'0:m1,1:m2,2:m1,3:m2,4:m1,5:m2'),
	"m3's partitions were reassigned to m1 and m2")
  or diag_state();
SKIP:
{
	skip 'm3 had already timed out when it was stopped', 1
	  if $m3_heartbeat eq '';
	cmp_ok(
		$node->safe_psql(
			'postgres',
			"SELECT extract(epoch FROM clock_timestamp() - '$m3_heartbeat'::timestamptz) * 1000"
		),
		'>=',
		$session_timeout_ms,
		"m3's partitions were not reassigned before its session timed out");
}
is( $node->safe_psql(
		'postgres', q{
SELECT string_agg(member_id || ':' || alive, ',' ORDER BY member_id)
FROM estream.group_members WHERE "group" = 'sg'}),
	'm1:true,m2:true',
	'm3 was removed from the group; m1 and m2 are alive');
is($node->safe_psql('postgres', q{SELECT count(*) FROM estream.assignment('sg', 'm3')}),
	'0', 'm3 has no partitions');
cmp_ok(generation(), '>', $gen_before, 'the rebalance started a new generation');

# m3's old partitions are consumed by their new owners, from m3's committed
# offsets on (the first record there: the committed offset may be a hole).
for my $p (2, 5)
{
	my $owner = $p == 2 ? 'm1' : 'm2';
	ok( $node->poll_query_until(
			'postgres', qq{
SELECT count(*) > 0 FROM processed
WHERE partition = $p AND member = '$owner' AND at > '$m3_gone_at'
  AND "offset" = (SELECT min("offset") FROM input_ids
				  WHERE partition = $p AND "offset" >= $m3_committed{$p})}),
		"$owner processed partition $p from m3's committed offset")
	  or diag_state();
}

#
# QE002 for m3, QE001 for commits of partitions a member does not own.
#
like(
	$node->psql_error(q{SELECT estream.commit('sg', 'sm', 2, 0, 'm3')}, role => 'sm_member'),
	qr/ERROR:  QE002: member "m3" is not a live member of consumer group "sg"/,
	'm3 committing its old partition gets QE002');
like(
	$node->psql_error(q{SELECT estream.heartbeat('sg', 'm3')}, role => 'sm_member'),
	qr/ERROR:  QE002: member "m3" is not a live member of consumer group "sg"/,
	'm3 heartbeating gets QE002');
like(
	$node->psql_error(q{SELECT * FROM estream.consume('sg', 'm3')}, role => 'sm_member'),
	qr/ERROR:  QE002: member "m3" is not a live member of consumer group "sg"/,
	'm3 consuming gets QE002');
like(
	$node->psql_error(q{SELECT estream.leave_group('sg', 'm3')}, role => 'sm_member'),
	qr/ERROR:  QE002: member "m3" is not a member of consumer group "sg"/,
	'm3 leaving gets QE002');

my $offset4 = $node->safe_psql('postgres',
	q{SELECT committed_offset FROM estream.committed('sg', 'sm') WHERE partition = 4});
my $stderr = $node->psql_error(
	"SELECT estream.commit('sg', 'sm', 4, $offset4, 'm2')", role => 'sm_member');
like(
	$stderr,
	qr/ERROR:  QE001: partition 4 of topic "sm" is not assigned to member "m2"/,
	'm2 committing partition 4, which it lost in the rebalance, gets QE001');
like($stderr, qr/DETAIL:  The group rebalanced \(generation \d+\); the partition now belongs to member "m1"\./,
	'the QE001 detail names the new owner');
like(
	$node->psql_error("SELECT estream.commit('sg', 'sm', 4, $offset4)", role => 'sm_member'),
	qr/ERROR:  QE001: partition 4 of topic "sm" is assigned to member "m1"/,
	'a commit without member id of a partition a live member owns gets QE001');

#
# m3 joins again (with a long session, so that it cannot time out here) and
# gets its partitions back; leaving gives them away again.
#
my $gen = generation();
is( $node->as_role('sm_member',
		q{SELECT * FROM estream.join_group('sg', '{sm}', 'm3', 60000)}),
	'm3|' . ($gen + 1),
	'm3 joined again in a new generation');
is(assignment(), '0:m1,1:m2,2:m3,3:m1,4:m2,5:m3', 'm3 got partitions 2 and 5 back');
$node->as_role('sm_member', q{SELECT estream.leave_group('sg', 'm3')});
is(assignment(), '0:m1,1:m2,2:m1,3:m2,4:m1,5:m2',
	'leave_group gave m3\'s partitions to m1 and m2 at once');
is(generation(), $gen + 2, 'leave_group started a new generation');

#
# Stop the producer, let m1 and m2 drain the topic, and stop them.
#
$node->safe_psql('postgres', 'INSERT INTO stop_producer VALUES (1)');
ok($h{producer}->finish, 'the producer exited cleanly');
is($err{producer}, '', 'the producer reported no error');
ok( $node->poll_query_until(
		'postgres', qq{
SELECT count(*) = $n_partitions
FROM estream.committed('sg', 'sm') c
JOIN estream.watermarks('sm') w USING (partition)
WHERE c.committed_offset = w.stable_offset}),
	'm1 and m2 committed every partition up to its stable offset')
  or diag_state();

$node->safe_psql('postgres', 'INSERT INTO stop_members VALUES (1)');
for my $m (qw(m1 m2))
{
	ok($h{$m}->finish, "member $m exited cleanly");
	is($err{$m}, '', "member $m reported no error");
}

#
# Checks
#
$node->safe_psql(
	'postgres', q{
CREATE TABLE final_log AS
	SELECT f.partition, f."offset", (f.value->>'id')::bigint AS id
	FROM generate_series(0, 5) part,
		 LATERAL estream.fetch('sm', part, 0, 100000) f});

my ($n_input, $n_processed, $n_distinct, $rejoins, $qe001, $qe002) =
  split /\|/, $node->safe_psql(
	'postgres', q{
SELECT (SELECT count(*) FROM input_ids),
	   (SELECT count(*) FROM processed),
	   (SELECT count(DISTINCT (partition, "offset")) FROM processed),
	   (SELECT count(*) FROM member_events WHERE event = 'rejoined'),
	   (SELECT count(*) FROM member_events WHERE event = 'QE001'),
	   (SELECT count(*) FROM member_events WHERE event = 'QE002')});
note "$n_input input records, $n_processed processed ($n_distinct distinct); "
  . "members got QE001 $qe001 times, QE002 $qe002 times and rejoined $rejoins times";

cmp_ok($n_input, '>',
	$n_partitions * $n_prefill_per_partition,
	'the producer added records during the run');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM (
	(SELECT partition, "offset", id FROM final_log
	 EXCEPT ALL SELECT partition, "offset", id FROM input_ids)
	UNION ALL
	(SELECT partition, "offset", id FROM input_ids
	 EXCEPT ALL SELECT partition, "offset", id FROM final_log)) d}),
	'0',
	'the log equals the committed input records');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM final_log l
WHERE NOT EXISTS (SELECT FROM processed p
				  WHERE p.partition = l.partition AND p."offset" = l."offset" AND p.id = l.id)}),
	'0',
	'every committed record was processed at least once');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM processed p
WHERE NOT EXISTS (SELECT FROM final_log l
				  WHERE p.partition = l.partition AND p."offset" = l."offset" AND p.id = l.id)}),
	'0',
	'every processed record is a committed one');
is( $node->safe_psql(
		'postgres', q{
SELECT string_agg(DISTINCT member, ',' ORDER BY member) FROM processed
WHERE partition IN (2, 5)}),
	'm1,m2,m3',
	'partitions 2 and 5 were processed by m3, then by m1 and m2');

# The members left: the group is empty, nothing is assigned, and it can be
# deleted.
is(assignment(), '0:-,1:-,2:-,3:-,4:-,5:-', 'no partition is assigned');
is( $node->safe_psql(
		'postgres',
		q{SELECT live_members FROM estream.groups WHERE "group" = 'sg'}),
	'0',
	'the group has no live members');
is($node->safe_psql('postgres', q{SELECT count(*) FROM estream.group_members}),
	'0', 'the members left the group');
is( $node->safe_psql(
		'postgres',
		q{SELECT sum(lag) FROM estream.consumer_lag WHERE "group" = 'sg'}),
	'0',
	'the group has no lag');
$node->safe_psql('postgres', q{SELECT estream.delete_group('sg')});
is($node->safe_psql('postgres', q{SELECT count(*) FROM estream.group_offset}),
	'0', 'delete_group removed the committed offsets');

$node->stop;

done_testing();
