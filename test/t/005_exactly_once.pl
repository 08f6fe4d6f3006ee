
# Copyright (c) 2026, estream developers

# Exactly-once processing with estream.poll() under load.
#
# An input topic of 4 partitions is pre-filled with keyed records (and
# rolled-back batches, which leave holes), and a producer keeps adding
# records (committing, rolling back, holding transactions open) while three
# workers of one consumer group process it.  Each worker iteration polls up
# to 50 records in a transaction, inserts each into a result table (unique on
# the input partition and offset) and produces it to an output topic with
# the same key.  The transaction then commits (possibly after polling a
# second time), rolls back, fails in a statement, fails at commit (a
# deferred constraint), or rolls back a savepoint and polls again; some
# iterations sleep before committing.  A killer session terminates random
# worker backends, preferably inside a transaction; the supervisor restarts
# them.
#
# Every record the producer committed is recorded, with the position
# produce_batch() returned, in input_ids in the producing transaction, so
# input_ids is exactly the committed input.  After draining (the group's
# committed offsets reach the stable offsets):
#
# - the result table holds every input record exactly once, and per input
#   partition the insertion order (a serial) follows the offsets;
# - the output topic holds every input record exactly once, with its key,
#   at the positions the committing transactions recorded, and per key in
#   input order;
# - no worker ever hit the result table's unique constraint (a second
#   delivery of a committed record would);
# - there were redeliveries (rolled-back, failed and terminated
#   transactions), and terminations inside transactions.
#
# Workers are psql scripts generated here (with ON_ERROR_STOP off), as in
# 002_offset_invariant.pl.  Set ESTREAM_TEST_SEED to replay a run's random
# choices.
#
# Application roles: the producer runs as eo_producer (write on topic in),
# the workers as eo_worker (read on in and on group eo, write on out), both
# granted with estream.grant_acl(), plus privileges on the test's tables and
# sequences; the killer and the checks run as the superuser.

use strict;
use warnings;

use IPC::Run;
use EstreamNode;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $load_seconds = 10;
my $n_workers = 3;
my $n_in_partitions = 4;
my $n_out_partitions = 3;
my $n_prefill = 3000;
# keys repeat, so that every key has many records whose order must be kept
my $n_keys = 40;
# terminations inside a transaction the load phase waits for, at least
my $min_kills_in_xact = 3;

my $seed = $ENV{ESTREAM_TEST_SEED} // int(rand(2**31));
srand($seed);
note "random seed: $seed (set ESTREAM_TEST_SEED to reuse it)";

my $node = EstreamNode->create('exactly_once',
	conf => "log_min_messages = log\n" . "log_min_error_statement = panic\n");

$node->safe_psql(
	'postgres', qq{
CREATE EXTENSION estream;
SELECT estream.create_topic('in', $n_in_partitions);
SELECT estream.create_topic('out', $n_out_partitions);

CREATE SEQUENCE id_seq;
-- one row per committed input record, written in the producing transaction
CREATE TABLE input_ids (
	id bigint PRIMARY KEY,
	key text NOT NULL,
	partition int NOT NULL,
	"offset" bigint NOT NULL,
	UNIQUE (partition, "offset"));
-- one row per processed input record, in insertion order
CREATE TABLE result (
	seq bigserial PRIMARY KEY,
	worker text NOT NULL,
	topic text NOT NULL,
	partition int NOT NULL,
	"offset" bigint NOT NULL,
	id bigint NOT NULL,
	key text,
	out_partition int NOT NULL,
	out_offset bigint NOT NULL,
	at timestamptz NOT NULL DEFAULT clock_timestamp(),
	UNIQUE (partition, "offset"));
-- counters that survive rollbacks
CREATE SEQUENCE delivered_seq;
CREATE SEQUENCE rollback_seq;
CREATE SEQUENCE statement_error_seq;
CREATE SEQUENCE commit_error_seq;
CREATE SEQUENCE deferred_seq;
CREATE TABLE deferred_t (x int UNIQUE DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE stop_producer (x int);
CREATE TABLE stop_killer (x int);
CREATE TABLE stop_workers (x int);
CREATE TABLE kills (pid int, worker text, state text, in_xact bool, has_xid bool);

-- Produce n keyed records to 'in' and remember them, in the caller's
-- transaction.
CREATE FUNCTION produce_in(n int) RETURNS void
LANGUAGE plpgsql AS \$\$
DECLARE
	ids bigint[];
BEGIN
	SELECT array_agg(nextval('id_seq') ORDER BY g) INTO ids FROM generate_series(1, n) g;
	INSERT INTO input_ids
	SELECT ids[r.o], 'k' || (ids[r.o] % $n_keys), r.partition, r."offset"
	FROM estream.produce_batch('in',
			ARRAY(SELECT jsonb_build_object('id', i) FROM unnest(ids) WITH ORDINALITY u(i, o) ORDER BY o),
			ARRAY(SELECT 'k' || (i % $n_keys) FROM unnest(ids) WITH ORDINALITY u(i, o) ORDER BY o))
		WITH ORDINALITY AS r(partition, "offset", o);
END
\$\$;

-- the producer: its estream right, and what produce_in() writes
CREATE ROLE eo_producer LOGIN;
SELECT estream.grant_acl('eo_producer', 'write', 'topic', 'in');
GRANT USAGE ON SEQUENCE id_seq TO eo_producer;
GRANT INSERT ON input_ids TO eo_producer;
GRANT SELECT ON stop_producer TO eo_producer;

-- One worker step: poll, and process every record (result row and output
-- record) in the caller's transaction.  With fail, raise an error after
-- processing.
CREATE FUNCTION process(w text, fail bool DEFAULT false) RETURNS int
LANGUAGE plpgsql AS \$\$
DECLARE
	r estream.group_record;
	pos estream.position;
	n int := 0;
BEGIN
	FOR r IN SELECT * FROM estream.poll('eo', 'in', 50, wait_ms => 200,
										auto_offset_reset => 'earliest') LOOP
		PERFORM nextval('delivered_seq');
		pos := estream.produce('out',
			jsonb_build_object('id', r.value->'id', 'in_partition', r.partition,
							   'in_offset', r."offset"),
			key => r.key);
		INSERT INTO result (worker, topic, partition, "offset", id, key, out_partition, out_offset)
		VALUES (w, r.topic, r.partition, r."offset", (r.value->>'id')::bigint, r.key,
				pos.partition, pos."offset");
		n := n + 1;
	END LOOP;
	IF fail THEN
		PERFORM nextval('statement_error_seq');
		RAISE EXCEPTION 'worker % failing after processing % records', w, n;
	END IF;
	RETURN n;
END
\$\$;

-- Terminate a random worker backend (preferring ones in a transaction)
-- every so often, until told to stop.
CREATE PROCEDURE killer()
LANGUAGE plpgsql AS \$\$
DECLARE
	v_pid int;
	v_app text;
	v_state text;
	v_in_xact bool;
	v_has_xid bool;
BEGIN
	WHILE NOT EXISTS (SELECT FROM stop_killer) LOOP
		PERFORM pg_sleep(0.3 + random() * 0.5);
		SELECT pid, application_name, state, xact_start IS NOT NULL, backend_xid IS NOT NULL
		INTO v_pid, v_app, v_state, v_in_xact, v_has_xid
		FROM pg_stat_activity
		WHERE application_name LIKE 'eo_worker_%'
		ORDER BY xact_start IS NULL, backend_xid IS NULL, random() LIMIT 1;
		IF v_pid IS NOT NULL AND pg_terminate_backend(v_pid) THEN
			INSERT INTO kills VALUES (v_pid, v_app, v_state, v_in_xact, v_has_xid);
		END IF;
		COMMIT;
	END LOOP;
END
\$\$;

-- the workers: their estream rights, and what process() and the worker
-- scripts write
CREATE ROLE eo_worker LOGIN;
SELECT estream.grant_acl('eo_worker', 'read', 'topic', 'in');
SELECT estream.grant_acl('eo_worker', 'write', 'topic', 'out');
SELECT estream.grant_acl('eo_worker', 'read', 'group', 'eo');
GRANT USAGE ON SEQUENCE result_seq_seq, delivered_seq, rollback_seq, statement_error_seq,
	commit_error_seq, deferred_seq TO eo_worker;
GRANT INSERT ON result, deferred_t TO eo_worker;
GRANT SELECT ON stop_workers TO eo_worker;

-- the producer's and the workers' statements are not logged (a
-- superuser's setting, which their connections may not set themselves)
ALTER ROLE eo_producer SET log_statement = none;
ALTER ROLE eo_worker SET log_statement = none;
});

# The application's roles are ordinary roles: not superusers, and refused
# (42501) when they write a topic's log directly.
my %segment = map {
	$_ => $node->safe_psql('postgres',
		"SELECT format('estream.log_%s_%s', topic_id, current_segment) FROM estream.topic WHERE name = '$_'"
	  )
} qw(in out);
for my $role (qw(eo_producer eo_worker))
{
	is( $node->safe_psql(
			'postgres', q{SELECT current_user, current_setting('is_superuser')},
			extra_params => [ '-U', $role ]),
		"$role|off",
		"$role is not a superuser");
	for my $topic (qw(in out))
	{
		my ($ret, $stdout, $stderr) = $node->psql(
			'postgres',
			"INSERT INTO $segment{$topic} VALUES (0, 0, 9223372036854775807, now(), NULL, '{}', NULL, NULL)",
			extra_params => [ '-U', $role, '-v', 'VERBOSITY=sqlstate' ]);
		like($stderr, qr/ERROR:  42501/,
			"$role cannot write the log of topic $topic directly (42501)");
	}
}

# Pre-fill the input topic in 30 committed batches, with rolled-back batches
# in between (holes).
$node->safe_psql(
	'postgres', join(
		'',
		map {
			    "SELECT produce_in(" . ($n_prefill / 30) . ");\n"
			  . ($_ % 7 == 0 ? "BEGIN; SELECT produce_in(10); ROLLBACK;\n" : '')
		} 1 .. 30),
	extra_params => [ '-U', 'eo_producer' ]);
is($node->safe_psql('postgres', 'SELECT count(*) FROM input_ids'),
	$n_prefill, 'input topic pre-filled');

my $psql = $node->installed_command('psql');
my $connstr = $node->connstr('postgres');
my $logdir = $PostgreSQL::Test::Utils::log_path;
my $scriptdir = PostgreSQL::Test::Utils::tempdir;
my $script_no = 0;

# Start psql on a generated script as a role, errors appended to a log file.
sub start_script
{
	my ($app, $role, $sql, $errfile) = @_;
	$script_no++;
	my $file = "$scriptdir/${app}_$script_no.sql";
	PostgreSQL::Test::Utils::append_to_file($file, $sql);
	return IPC::Run::start(
		[
			$psql, '-X', '-q', '-v', 'ON_ERROR_STOP=0',
			'-d', "$connstr user=$role application_name=$app",
			'-f', $file
		],
		'<', '/dev/null',
		'>', '/dev/null',
		'2>>', $errfile,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
}

sub stop_check
{
	my ($table) = @_;
	return "SELECT EXISTS (SELECT FROM $table) AS stop \\gset\n"
	  . "\\if :stop\n\\q\n\\endif\n";
}

#
# Producer: keyed batches that commit, roll back, or commit after holding
# the stable offsets back for a while.
#
sub producer_script
{
	my $sql = "\\o /dev/null\n";
	for my $i (1 .. 2000)
	{
		$sql .= stop_check('stop_producer') if $i % 5 == 1;
		my $r = rand(100);
		my $n = 1 + int(rand(40));
		if ($r < 65)
		{
			$sql .= "SELECT produce_in($n);\n";
		}
		elsif ($r < 80)
		{
			$sql .= "BEGIN;\nSELECT produce_in($n);\nROLLBACK;\n";
		}
		else
		{
			$sql .= "BEGIN;\nSELECT produce_in($n);\nSELECT pg_sleep("
			  . sprintf('%.3f', 0.05 + rand(0.15))
			  . ");\nCOMMIT;\n";
		}
		$sql .= "SELECT pg_sleep(0.01);\n";
	}
	return $sql;
}

#
# Workers
#

# One worker iteration, as psql input.
sub worker_iteration
{
	my ($w) = @_;
	my $r = rand(100);
	my $process = "SELECT process('$w');\n";

	# commit
	return "BEGIN;\n${process}COMMIT;\n" if $r < 50;
	# poll twice, the second poll going on from the first one's uncommitted
	# offsets, and commit
	return "BEGIN;\n$process${process}COMMIT;\n" if $r < 55;
	# commit a single-statement transaction
	return $process if $r < 60;
	# roll back
	return "BEGIN;\n${process}SELECT nextval('rollback_seq');\nROLLBACK;\n"
	  if $r < 72;
	# fail in a statement: the transaction aborts, COMMIT rolls it back
	return "BEGIN;\nSELECT process('$w', fail => true);\nCOMMIT;\n" if $r < 77;
	# fail at commit (a deferred unique constraint)
	return
	    "BEGIN;\n$process"
	  . "INSERT INTO deferred_t SELECT v FROM (SELECT nextval('deferred_seq') v) s, "
	  . "generate_series(1, 2);\n"
	  . "SELECT nextval('commit_error_seq');\nCOMMIT;\n"
	  if $r < 80;
	# roll back a savepoint after polling, poll again and commit
	return
	    "BEGIN;\nSAVEPOINT s;\n${process}ROLLBACK TO SAVEPOINT s;\n"
	  . "${process}COMMIT;\n"
	  if $r < 87;
	# a target for the killer: an open transaction that did its work
	return
	    "BEGIN;\n${process}SELECT pg_sleep("
	  . sprintf('%.3f', 0.05 + rand(0.15))
	  . ");\nCOMMIT;\n";
}

sub start_worker
{
	my ($slot) = @_;
	my $w = "w$slot";
	my $sql = "\\o /dev/null\n";
	for my $i (1 .. 1000)
	{
		$sql .= stop_check('stop_workers') if $i % 5 == 1;
		$sql .= worker_iteration($w);
	}
	return start_script("eo_worker_$slot", 'eo_worker', $sql,
		"$logdir/005_worker_slot$slot.err");
}

#
# Load: the producer, the workers and the killer run for $load_seconds (and
# until the killer terminated enough workers inside a transaction), dead
# workers being restarted.
#
my $producer = start_script('eo_producer', 'eo_producer', producer_script(),
	"$logdir/005_producer.err");
my @workers = map { start_worker($_) } 1 .. $n_workers;

my ($killer_out, $killer_err) = ('', '');
my $killer = IPC::Run::start(
	[
		$psql, '-XAtq', '-v', 'ON_ERROR_STOP=1',
		'-d', "$connstr application_name=eo_killer",
		'-c', 'CALL killer()'
	],
	'<', '/dev/null',
	'>', \$killer_out,
	'2>', \$killer_err,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));

my $restarts = 0;

sub restart_dead_workers
{
	for my $slot (1 .. $n_workers)
	{
		my $h = $workers[ $slot - 1 ];
		next if $h->pumpable;
		$h->finish;
		$workers[ $slot - 1 ] = start_worker($slot);
		$restarts++;
	}
}

my $t_start = time();
my $deadline = $t_start + $load_seconds;
# bounded: give up waiting for terminations after the default timeout
my $hard_deadline = $t_start + $PostgreSQL::Test::Utils::timeout_default;
while (1)
{
	restart_dead_workers();
	if (time() >= $deadline)
	{
		last if time() >= $hard_deadline;
		last
		  if $node->safe_psql('postgres',
			"SELECT count(*) >= $min_kills_in_xact FROM kills WHERE in_xact") eq
		  't';
	}
	# pace the supervisor loop
	usleep(50_000);
}

# Stop the producer and wait until its backend is gone: no input
# transaction is in flight any more.
$node->safe_psql('postgres', 'INSERT INTO stop_producer VALUES (1)');
$producer->finish;
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'eo_producer'"),
	'the producer backend is gone');
my $producer_err = slurp_file("$logdir/005_producer.err");
unlike($producer_err, qr/permission denied/,
	'the producer was never refused a right or privilege');

# Stop the killer; restart the workers it terminated last.
$node->safe_psql('postgres', 'INSERT INTO stop_killer VALUES (1)');
$killer->finish;
is($killer_err, '', 'killer ran without errors');
restart_dead_workers();

# Drain: the workers run until the group's committed offsets reach the
# stable offsets of every partition.
ok( $node->poll_query_until(
		'postgres', qq{
SELECT count(*) = $n_in_partitions
FROM estream.committed('eo', 'in') c
JOIN estream.watermarks('in') w USING (partition)
WHERE c.committed_offset >= w.stable_offset}),
	'the group drained the input topic');
my $elapsed = time() - $t_start;

$node->safe_psql('postgres', 'INSERT INTO stop_workers VALUES (1)');
for my $slot (1 .. $n_workers)
{
	$workers[ $slot - 1 ]->finish;
}
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name LIKE 'eo_worker_%'"),
	'every worker backend is gone');

#
# Checks
#
$node->safe_psql(
	'postgres', qq{
CREATE FUNCTION fetch_all(topic text, part int) RETURNS SETOF estream.consumer_record
LANGUAGE plpgsql AS \$\$
DECLARE
	pos bigint := 0;
	n bigint;
	r estream.consumer_record;
BEGIN
	LOOP
		n := 0;
		FOR r IN SELECT * FROM estream.fetch(topic, part, pos, 10000) LOOP
			RETURN NEXT r;
			pos := r."offset" + 1;
			n := n + 1;
		END LOOP;
		EXIT WHEN n = 0;
	END LOOP;
END
\$\$;
CREATE TABLE in_log AS
	SELECT f.partition, f."offset", f.key, (f.value->>'id')::bigint AS id
	FROM generate_series(0, $n_in_partitions - 1) part, fetch_all('in', part) f;
CREATE TABLE out_log AS
	SELECT f.partition, f."offset", f.key, (f.value->>'id')::bigint AS id,
		   (f.value->>'in_partition')::int AS in_partition,
		   (f.value->>'in_offset')::bigint AS in_offset
	FROM generate_series(0, $n_out_partitions - 1) part, fetch_all('out', part) f;
});

my ($n_input, $n_result, $n_out, $delivered, $rollbacks, $stmt_errors,
	$commit_errors, $kills, $kills_in_xact, $kills_with_xid, $result_seq)
  = split /\|/, $node->safe_psql(
	'postgres', q{
SELECT (SELECT count(*) FROM input_ids),
	   (SELECT count(*) FROM result),
	   (SELECT count(*) FROM out_log),
	   (SELECT last_value FROM delivered_seq),
	   (SELECT last_value FROM rollback_seq),
	   (SELECT last_value FROM statement_error_seq),
	   (SELECT last_value FROM commit_error_seq),
	   (SELECT count(*) FROM kills),
	   (SELECT count(*) FROM kills WHERE in_xact),
	   (SELECT count(*) FROM kills WHERE has_xid),
	   (SELECT last_value FROM result_seq_seq)});
note "$n_input input records, $delivered deliveries, $n_result results, "
  . "$n_out output records in ${\ sprintf('%.1f', $elapsed)} s";
note "$rollbacks rollbacks, $stmt_errors statement errors, $commit_errors "
  . "commit errors, $kills terminations ($kills_in_xact in a transaction, "
  . "$kills_with_xid after writing), $restarts worker restarts";
note 'the pre-filled records were processed in '
  . $node->safe_psql(
	'postgres', qq{
SELECT round(extract(epoch FROM max(at) FILTER (WHERE id <= $n_prefill) - min(at)), 1)
FROM result})
  . ' s';

# The load did what it is meant to do.
cmp_ok($n_input, '>', $n_prefill, 'the producer added records during the run');
cmp_ok($rollbacks, '>', 0, 'workers rolled back');
cmp_ok($stmt_errors + $commit_errors, '>', 0, 'worker transactions failed');
cmp_ok($kills_in_xact, '>=', $min_kills_in_xact,
	'the killer terminated workers inside transactions');
cmp_ok($restarts, '>', 0, 'terminated workers were restarted');
cmp_ok($delivered, '>', $n_result,
	'records were delivered again after aborted transactions');
cmp_ok($result_seq, '>', $n_result, 'aborted transactions inserted results');

# The input log is exactly what the producer committed.
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM (
	(SELECT partition, "offset", key, id FROM in_log
	 EXCEPT ALL SELECT partition, "offset", key, id FROM input_ids)
	UNION ALL
	(SELECT partition, "offset", key, id FROM input_ids
	 EXCEPT ALL SELECT partition, "offset", key, id FROM in_log)) d}),
	'0',
	'the input log equals the committed input records');

# No worker ever delivered a record that was already processed: that would
# have hit the unique constraint of the result table.  Expected errors only.
for my $slot (1 .. $n_workers)
{
	my $errfile = "$logdir/005_worker_slot$slot.err";
	my $err = -e $errfile ? slurp_file($errfile) : '';
	my @unexpected = grep {
		!/failing after processing/
		  && !/duplicate key value violates unique constraint "deferred_t_x_key"/
		  && !/current transaction is aborted/
	} grep { /ERROR:/ } split /\n/, $err;
	is(join("\n", @unexpected), '', "worker slot $slot had only the expected errors");
}

# The result table: every input record exactly once, in order per partition.
is($n_result, $n_input, 'the result table has one row per input record');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM (
	(SELECT partition, "offset", key, id FROM result
	 EXCEPT ALL SELECT partition, "offset", key, id FROM in_log)
	UNION ALL
	(SELECT partition, "offset", key, id FROM in_log
	 EXCEPT ALL SELECT partition, "offset", key, id FROM result)) d}),
	'0',
	'the result table holds every input record exactly once');
is($node->safe_psql('postgres', q{SELECT count(*) FROM result WHERE topic <> 'in'}),
	'0', 'poll() returned the topic name with every record');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM (
	SELECT "offset" <= lag("offset") OVER (PARTITION BY partition ORDER BY seq) AS bad
	FROM result) s
WHERE bad}),
	'0',
	'results were inserted in offset order in every input partition');

# The output topic: every input record exactly once, with its key, where the
# committing transaction produced it, in input order per key.
is($n_out, $n_input, 'the output topic has one record per input record');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM (
	(SELECT id, key, in_partition, in_offset FROM out_log
	 EXCEPT ALL SELECT id, key, partition, "offset" FROM in_log)
	UNION ALL
	(SELECT id, key, partition, "offset" FROM in_log
	 EXCEPT ALL SELECT id, key, in_partition, in_offset FROM out_log)) d}),
	'0',
	'the output topic holds every input record exactly once, with its key');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM (
	(SELECT partition, "offset", id FROM out_log
	 EXCEPT ALL SELECT out_partition, out_offset, id FROM result)
	UNION ALL
	(SELECT out_partition, out_offset, id FROM result
	 EXCEPT ALL SELECT partition, "offset", id FROM out_log)) d}),
	'0',
	'output records are exactly those the committed transactions produced');
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FROM out_log
WHERE partition <> estream.partition_for(key, $n_out_partitions)}),
	'0',
	'output records are partitioned by their key');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM (
	SELECT in_partition <> lag(in_partition) OVER w
		   OR in_offset <= lag(in_offset) OVER w AS bad
	FROM out_log
	WINDOW w AS (PARTITION BY key ORDER BY partition, "offset")) s
WHERE bad}),
	'0',
	'the output topic keeps the input order of every key');
cmp_ok(
	$node->safe_psql(
		'postgres',
		q{SELECT sum(next_offset) - (SELECT count(*) FROM out_log)
		  FROM estream.watermarks('out')}),
	'>', 0,
	'aborted transactions left holes in the output topic');

# The group ends exactly at the stable offsets, with no member assigned.
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM estream.committed('eo', 'in') c
JOIN estream.watermarks('in') w USING (partition)
WHERE c.committed_offset = w.stable_offset AND c.member_id IS NULL}),
	$n_in_partitions,
	'committed offsets equal the final stable offsets of every partition')
  or diag $node->safe_psql(
	'postgres', q{
SELECT string_agg(format('%s: committed %s, stable %s, next %s, member %s',
						 partition, c.committed_offset, w.stable_offset,
						 w.next_offset, c.member_id), E'\n')
FROM estream.committed('eo', 'in') c
JOIN estream.watermarks('in') w USING (partition)});
is( $node->safe_psql(
		'postgres',
		q{SELECT sum(lag) FROM estream.consumer_lag WHERE "group" = 'eo'}),
	'0',
	'the group has no lag');

$node->stop;

done_testing();
