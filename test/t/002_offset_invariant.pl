
# Copyright (c) 2026, estream developers

# The stable-offset invariant under concurrent load.
#
# Several producers commit, roll back, roll back savepoints, fail after
# producing (at statement and at commit time), produce to several partitions
# in one transaction and sleep inside open transactions, while another
# session terminates random producer backends.  Consumers read every
# partition from their position, with and without long-polling, and record
# what they see and the watermarks of every round.
#
# Every committed record is recorded, with the position produce() returned,
# in committed_ids in the producing transaction, so committed_ids is exactly
# what committed.  At the end each consumer must have seen, per partition, a
# strictly increasing sequence of offsets equal to the final log, the final
# log must equal committed_ids, and no consumer may ever have seen a
# watermark move backwards.
#
# With ESTREAM_INVARIANT_SLOTS set (test/t/015_offset_invariant_eviction.pl
# does), the server has that few shared partition slots and the topic
# ESTREAM_INVARIANT_PARTITIONS partitions, more than the slots: idle slots
# are evicted all the time and initialized again from what is stored, and
# the same checks must hold.
#
# Producers are psql scripts generated here (with ON_ERROR_STOP off) rather
# than pgbench: pgbench aborts a client on any error that is not a
# serialization or deadlock failure and on a terminated connection, and
# errors and terminations are what this test is about.  A producer whose
# backend was terminated is restarted with a fresh script.  Set
# ESTREAM_TEST_SEED to replay a run's random choices.
#
# Application roles: producers run as inv_producer (write on topic inv),
# consumers as inv_consumer (read on inv), granted with estream.grant_acl(),
# plus privileges on the test's tables and sequences; the terminator and
# the checks run as the superuser.

use strict;
use warnings;

use IPC::Run;
use EstreamNode;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $load_seconds = 20;
my $n_producers = 4;
my $n_partitions = $ENV{ESTREAM_INVARIANT_PARTITIONS} // 4;
my $n_slots = $ENV{ESTREAM_INVARIANT_SLOTS};

my $seed = $ENV{ESTREAM_TEST_SEED} // int(rand(2**31));
srand($seed);
note "random seed: $seed (set ESTREAM_TEST_SEED to reuse it)";

my $node = EstreamNode->create(
	defined $n_slots ? 'invariant_evict' : 'invariant',
	conf => "log_min_messages = log\n"
	  . "log_min_error_statement = panic\n"
	  . (defined $n_slots ? "estream.max_partitions = $n_slots\n" : ''));

$node->safe_psql(
	'postgres', qq{
CREATE EXTENSION estream;
SELECT estream.create_topic('inv', $n_partitions);

CREATE SEQUENCE id_seq;
CREATE SEQUENCE deferred_seq;
-- one row per committed record, written in the producing transaction
CREATE TABLE committed_ids (
	id bigint PRIMARY KEY,
	partition int NOT NULL,
	"offset" bigint NOT NULL,
	UNIQUE (partition, "offset"));
-- every record a consumer fetched, in the order fetch() returned them
CREATE TABLE seen (
	seq bigserial PRIMARY KEY,
	consumer text NOT NULL,
	round int NOT NULL,
	partition int NOT NULL,
	"offset" bigint NOT NULL,
	id bigint);
-- the watermarks every consumer read at the start of every round
CREATE TABLE wm_seen (
	consumer text,
	round int,
	partition int,
	stable bigint NOT NULL,
	next bigint NOT NULL,
	PRIMARY KEY (consumer, round, partition));
CREATE TABLE stop_producers (x int);
CREATE TABLE stop_consumers (x int);
CREATE TABLE kills (pid int, state text, in_xact bool);
CREATE TABLE deferred_t (x int UNIQUE DEFERRABLE INITIALLY DEFERRED);

-- the application's roles: estream rights, and what the test's functions
-- and procedures below touch
CREATE ROLE inv_producer LOGIN;
CREATE ROLE inv_consumer LOGIN;
SELECT estream.grant_acl('inv_producer', 'write', 'topic', 'inv');
SELECT estream.grant_acl('inv_consumer', 'read', 'topic', 'inv');
GRANT USAGE ON SEQUENCE id_seq, deferred_seq TO inv_producer;
GRANT INSERT ON committed_ids, deferred_t TO inv_producer;
GRANT SELECT ON stop_producers TO inv_producer;
GRANT USAGE ON SEQUENCE seen_seq_seq TO inv_consumer;
GRANT INSERT ON seen, wm_seen TO inv_consumer;
GRANT SELECT ON stop_consumers TO inv_consumer;
-- the producers' statements are not logged (a superuser's setting, which
-- their connections may not set themselves)
ALTER ROLE inv_producer SET log_statement = none;

-- Produce one record with a fresh id; remember it if the transaction commits.
CREATE FUNCTION p(part int, k text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS \$\$
DECLARE
	v_id bigint := nextval('id_seq');
	r estream.position;
BEGIN
	r := estream.produce('inv', jsonb_build_object('id', v_id), key => k, partition => part);
	INSERT INTO committed_ids VALUES (v_id, r.partition, r."offset");
	RETURN v_id;
END
\$\$;

-- Produce a batch (keys spread it over partitions unless part is given).
CREATE FUNCTION pb(n int, part int DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS \$\$
DECLARE
	ids bigint[];
BEGIN
	SELECT array_agg(nextval('id_seq')) INTO ids FROM generate_series(1, n);
	INSERT INTO committed_ids
	SELECT ids[r.o], r.partition, r."offset"
	FROM estream.produce_batch('inv',
			ARRAY(SELECT jsonb_build_object('id', i) FROM unnest(ids) WITH ORDINALITY u(i, o) ORDER BY o),
			ARRAY(SELECT 'key-' || i FROM unnest(ids) WITH ORDINALITY u(i, o) ORDER BY o),
			partition => part)
		WITH ORDINALITY AS r(partition, "offset", o);
END
\$\$;

-- Produce, then fail: the statement (and the transaction) aborts.
CREATE FUNCTION pe(part int) RETURNS bigint
LANGUAGE plpgsql AS \$\$
BEGIN
	PERFORM p(part);
	RAISE EXCEPTION 'failing after produce';
END
\$\$;

-- Produce around a PL/pgSQL exception block that rolls back its own records.
CREATE FUNCTION psub(a int, b int) RETURNS void
LANGUAGE plpgsql AS \$\$
BEGIN
	PERFORM p(a);
	BEGIN
		PERFORM p(b);
		PERFORM p(a);
		RAISE EXCEPTION 'roll back the block';
	EXCEPTION WHEN raise_exception THEN
		NULL;
	END;
	PERFORM p(b);
END
\$\$;

-- Read every partition from the consumer's position until told to stop,
-- committing what was seen each round.  Stops after a round that started
-- with the stop flag set (so after every producer was gone) and read
-- nothing.
CREATE PROCEDURE consume(c text, wait int, maxr int)
LANGUAGE plpgsql AS \$\$
DECLARE
	pos bigint[] := array_fill(0::bigint, ARRAY[$n_partitions]);
	rnd int := 0;
	stopping bool;
	got int;
	r record;
BEGIN
	LOOP
		rnd := rnd + 1;
		stopping := EXISTS (SELECT FROM stop_consumers);
		INSERT INTO wm_seen
			SELECT c, rnd, w.partition, w.stable_offset, w.next_offset
			FROM estream.watermarks('inv') w;
		got := 0;
		FOR part IN 0 .. $n_partitions - 1 LOOP
			FOR r IN SELECT f."offset", (f.value->>'id')::bigint AS id
					 FROM estream.fetch('inv', part, pos[part + 1], maxr, wait) f LOOP
				INSERT INTO seen (consumer, round, partition, "offset", id)
					VALUES (c, rnd, part, r."offset", r.id);
				pos[part + 1] := r."offset" + 1;
				got := got + 1;
			END LOOP;
		END LOOP;
		COMMIT;
		EXIT WHEN stopping AND got = 0;
		IF got = 0 AND wait = 0 THEN
			PERFORM pg_sleep(0.01);
		END IF;
	END LOOP;
END
\$\$;

-- Terminate a random producer backend (preferring ones in a transaction)
-- every so often, until the producers are told to stop.
CREATE PROCEDURE terminator()
LANGUAGE plpgsql AS \$\$
DECLARE
	v_pid int;
	v_state text;
	v_in_xact bool;
BEGIN
	WHILE NOT EXISTS (SELECT FROM stop_producers) LOOP
		PERFORM pg_sleep(0.2 + random() * 0.6);
		SELECT pid, state, xact_start IS NOT NULL INTO v_pid, v_state, v_in_xact
		FROM pg_stat_activity
		WHERE application_name = 'estream_producer'
		ORDER BY xact_start IS NULL, random() LIMIT 1;
		IF v_pid IS NOT NULL AND pg_terminate_backend(v_pid) THEN
			INSERT INTO kills VALUES (v_pid, v_state, v_in_xact);
		END IF;
		COMMIT;
	END LOOP;
END
\$\$;
});

my $psql = $node->installed_command('psql');
my $connstr = $node->connstr('postgres');
my $logdir = $PostgreSQL::Test::Utils::log_path;
my $scriptdir = PostgreSQL::Test::Utils::tempdir;

# The application's roles are ordinary roles: not superusers, and refused
# (42501) when they write the topic's log directly.
my $segment = $node->safe_psql('postgres',
	"SELECT format('estream.log_%s_%s', topic_id, current_segment) FROM estream.topic WHERE name = 'inv'"
);
for my $role (qw(inv_producer inv_consumer))
{
	is( $node->safe_psql(
			'postgres', q{SELECT current_user, current_setting('is_superuser')},
			extra_params => [ '-U', $role ]),
		"$role|off",
		"$role is not a superuser");
	my ($ret, $stdout, $stderr) = $node->psql(
		'postgres',
		"INSERT INTO $segment VALUES (0, 0, 9223372036854775807, now(), NULL, '{}', NULL, NULL)",
		extra_params => [ '-U', $role, '-v', 'VERBOSITY=sqlstate' ]);
	like($stderr, qr/ERROR:  42501/,
		"$role cannot write the log of topic inv directly (42501)");
}

#
# Producers
#
sub rand_part { return int(rand($n_partitions)); }
sub rand_sleep { return sprintf('%.3f', 0.01 + rand(0.15)); }

# One random transaction, as psql input.
sub random_transaction
{
	my $r = rand(100);
	my ($a, $b, $c) = (rand_part(), rand_part(), rand_part());
	my $k = 'k' . int(rand(1000));

	# commit one record
	return "SELECT p($a);\n" if $r < 20;
	# commit records on several partitions, one with a key
	return "BEGIN;\nSELECT p($a);\nSELECT p($b);\nSELECT p(NULL, '$k');\nCOMMIT;\n"
	  if $r < 32;
	# commit a batch spread by keys, or on one partition
	return "SELECT pb(" . (1 + int(rand(20))) . ");\n" if $r < 38;
	return "SELECT pb(" . (1 + int(rand(10))) . ", $a);\n" if $r < 42;
	# roll back
	return "BEGIN;\nSELECT p($a);\nSELECT p($b);\nROLLBACK;\n" if $r < 52;
	return "BEGIN;\nSELECT pb(5);\nROLLBACK;\n" if $r < 55;
	# roll back a savepoint, commit the rest
	return
	    "BEGIN;\nSELECT p($a);\nSAVEPOINT s1;\nSELECT p($b);\nSELECT p($c);\n"
	  . "ROLLBACK TO SAVEPOINT s1;\nSELECT p($c);\nCOMMIT;\n"
	  if $r < 62;
	# nested savepoints: release the inner one, roll back the outer one
	return
	    "BEGIN;\nSAVEPOINT s1;\nSELECT p($a);\nSAVEPOINT s2;\nSELECT p($b);\n"
	  . "RELEASE SAVEPOINT s2;\nROLLBACK TO SAVEPOINT s1;\nSELECT p($c);\n"
	  . "SAVEPOINT s3;\nSELECT p($a);\nRELEASE SAVEPOINT s3;\nCOMMIT;\n"
	  if $r < 66;
	# PL/pgSQL exception block rolls back part of the records
	return "SELECT psub($a, $b);\n" if $r < 71;
	# error after producing, in a statement of an explicit transaction ...
	return "BEGIN;\nSELECT p($a);\nSELECT pe($b);\nSELECT p($c);\nCOMMIT;\n"
	  if $r < 77;
	# ... in a single-statement transaction ...
	return "SELECT pe($a);\n" if $r < 80;
	# ... and at commit (a deferred unique constraint)
	return
	    "BEGIN;\nSELECT p($a);\nINSERT INTO deferred_t "
	  . "SELECT v FROM (SELECT nextval('deferred_seq') v) s, generate_series(1, 2);\n"
	  . "SELECT p($b);\nCOMMIT;\n"
	  if $r < 84;
	# sleep inside an open transaction, then commit or roll back
	return
	    "BEGIN;\nSELECT p($a);\nSELECT pg_sleep("
	  . rand_sleep()
	  . ");\nSELECT p($b);\nCOMMIT;\n"
	  if $r < 94;
	return
	    "BEGIN;\nSELECT p($a);\nSELECT pg_sleep("
	  . rand_sleep()
	  . ");\nROLLBACK;\n";
}

my $script_no = 0;

sub start_producer
{
	my ($slot) = @_;
	$script_no++;
	my $file = "$scriptdir/producer_$script_no.sql";
	my $sql = "\\o /dev/null\n";
	for my $i (1 .. 1000)
	{
		$sql .=
		  "SELECT EXISTS (SELECT FROM stop_producers) AS stop \\gset\n"
		  . "\\if :stop\n\\q\n\\endif\n"
		  if $i % 5 == 1;
		$sql .= random_transaction();
	}
	PostgreSQL::Test::Utils::append_to_file($file, $sql);
	return IPC::Run::start(
		[
			$psql, '-X', '-q', '-v', 'ON_ERROR_STOP=0',
			'-d',
			"$connstr user=inv_producer application_name=estream_producer",
			'-f', $file
		],
		'<', '/dev/null',
		'>', '/dev/null',
		'2>>', "$logdir/002_producer_slot$slot.err",
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
}

#
# Consumers and the terminator
#
my %consumers = (
	# name => [wait_ms, max_records]
	c_nowait => [ 0, 7 ],
	c_poll => [ 200, 50 ],
	c_bulk => [ 0, 500 ],);

my (%consumer_h, %consumer_out, %consumer_err);
for my $c (sort keys %consumers)
{
	my ($wait, $max) = @{ $consumers{$c} };
	$consumer_out{$c} = '';
	$consumer_err{$c} = '';
	$consumer_h{$c} = IPC::Run::start(
		[
			$psql, '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d',
			"$connstr user=inv_consumer application_name=estream_consumer",
			'-c', "CALL consume('$c', $wait, $max)"
		],
		'<', '/dev/null',
		'>', \$consumer_out{$c},
		'2>', \$consumer_err{$c},
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
}

my ($term_out, $term_err) = ('', '');
my $terminator = IPC::Run::start(
	[
		$psql, '-XAtq', '-v', 'ON_ERROR_STOP=1',
		'-d', "$connstr application_name=estream_terminator",
		'-c', 'CALL terminator()'
	],
	'<', '/dev/null',
	'>', \$term_out,
	'2>', \$term_err,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));

#
# Load: keep $n_producers producers running for $load_seconds, restarting
# the ones that exit (terminated, or at the end of their script).
#
my @producers = map { start_producer($_) } 1 .. $n_producers;
my $restarts = 0;
my $deadline = time() + $load_seconds;
while (time() < $deadline)
{
	for my $slot (1 .. $n_producers)
	{
		my $h = $producers[ $slot - 1 ];
		next if $h->pumpable;
		$h->finish;
		$producers[ $slot - 1 ] = start_producer($slot);
		$restarts++;
	}
	# pace the supervisor loop of the load generator
	usleep(50_000);
}

# Stop the producers and the terminator, and wait until every producer
# backend is gone: then no transaction is in flight any more.
$node->safe_psql('postgres', 'INSERT INTO stop_producers VALUES (1)');
$_->finish for @producers;
$terminator->finish;
is($term_err, '', 'terminator ran without errors');
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity
		 WHERE application_name = 'estream_producer'"),
	'every producer backend is gone');

# Let the consumers drain the log and stop.
$node->safe_psql('postgres', 'INSERT INTO stop_consumers VALUES (1)');
for my $c (sort keys %consumers)
{
	ok($consumer_h{$c}->finish, "consumer $c exited cleanly");
	is($consumer_err{$c}, '', "consumer $c reported no error");
}

# The producers' errors are those of their scripts, none for want of a
# right or privilege.
my $producer_errors = join '',
  map { -e $_ ? slurp_file($_) : '' }
  map { "$logdir/002_producer_slot$_.err" } 1 .. $n_producers;
unlike($producer_errors, qr/permission denied/,
	'the producers were never refused a right or privilege');

#
# Checks
#
$node->safe_psql(
	'postgres', qq{
CREATE FUNCTION fetch_all(part int) RETURNS SETOF estream.consumer_record
LANGUAGE plpgsql AS \$\$
DECLARE
	pos bigint := 0;
	n bigint;
	r estream.consumer_record;
BEGIN
	LOOP
		n := 0;
		FOR r IN SELECT * FROM estream.fetch('inv', part, pos, 10000) LOOP
			RETURN NEXT r;
			pos := r."offset" + 1;
			n := n + 1;
		END LOOP;
		EXIT WHEN n = 0;
	END LOOP;
END
\$\$;
CREATE TABLE final_log AS
	SELECT f.partition, f."offset", (f.value->>'id')::bigint AS id
	FROM generate_series(0, $n_partitions - 1) part, fetch_all(part) f;
});

my $log_table = $node->safe_psql('postgres',
	"SELECT log_relid FROM estream.topic WHERE name = 'inv'");
my ($committed, $attempted, $log_rows, $raw_rows, $kills, $kills_in_xact) =
  split /\|/, $node->safe_psql(
	'postgres', qq{
SELECT (SELECT count(*) FROM committed_ids),
	   (SELECT last_value FROM id_seq),
	   (SELECT count(*) FROM final_log),
	   (SELECT count(*) FROM $log_table),
	   (SELECT count(*) FROM kills),
	   (SELECT count(*) FROM kills WHERE in_xact)});
note
  "committed $committed of $attempted records, $kills terminations ($kills_in_xact in a transaction), $restarts producer restarts";

# The load did what it is meant to do.
cmp_ok($committed, '>', 200, 'producers committed records');
cmp_ok($attempted - $committed, '>', 100, 'producers rolled back records');
cmp_ok($kills, '>', 0, 'producer backends were terminated');
cmp_ok(
	$node->safe_psql(
		'postgres', q{
SELECT count(*) FROM wm_seen WHERE stable < next}),
	'>', 0,
	'consumers saw open transactions hold stable offsets back');

# The final log is exactly what committed, at the positions produce() returned.
is($log_rows, $committed, 'the final log has one record per committed id');
is($raw_rows, $committed, 'the log table holds only committed records');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM (
	(SELECT partition, "offset", id FROM final_log
	 EXCEPT ALL SELECT partition, "offset", id FROM committed_ids)
	UNION ALL
	(SELECT partition, "offset", id FROM committed_ids
	 EXCEPT ALL SELECT partition, "offset", id FROM final_log)) d}),
	'0',
	'the final log equals the committed records with their produced positions');

# Final watermarks: nothing in flight, the stable offset is 1 + the highest
# committed offset, and the rolled-back offsets left holes below next.
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM estream.watermarks('inv') w
LEFT JOIN (SELECT partition, max("offset") + 1 AS end_, count(*) AS n
		   FROM final_log GROUP BY partition) l USING (partition)
WHERE w.stable_offset <> coalesce(l.end_, 0)
   OR w.next_offset < w.stable_offset
   OR w.log_start_offset <> 0}),
	'0',
	'final stable offsets are 1 + the highest committed offset');
cmp_ok(
	$node->safe_psql(
		'postgres', q{
SELECT sum(w.next_offset) - (SELECT count(*) FROM final_log)
FROM estream.watermarks('inv') w}),
	'>', 0,
	'rolled-back offsets left holes');

if (defined $n_slots)
{
	my ($evicted, $refused) = split /\|/,
	  $node->safe_psql('postgres', 'SELECT evicted, refused FROM estream.partition_slots');
	# a batch spread by keys may need most slots at once: two of them
	# together may be refused (53200), which only rolls them back
	note "$evicted slots evicted, $refused calls refused a slot";
	cmp_ok($evicted, '>', 1000, 'idle slots were evicted all the time');
	is($node->safe_psql('postgres', 'SELECT held FROM estream.partition_slots'),
		'0', 'no slot is held once every producer is gone (no pin leaked)');
}

for my $c (sort keys %consumers)
{
	my ($rows, $rounds) = split /\|/, $node->safe_psql(
		'postgres', qq{
SELECT (SELECT count(*) FROM seen WHERE consumer = '$c'),
	   (SELECT count(DISTINCT round) FROM wm_seen WHERE consumer = '$c')});
	note "consumer $c: $rows records in $rounds rounds";
	cmp_ok($rounds, '>', 10, "consumer $c read in many rounds");

	is( $node->safe_psql(
			'postgres', qq{
SELECT count(*) FROM (
	SELECT "offset" <= lag("offset") OVER w AS bad
	FROM seen WHERE consumer = '$c'
	WINDOW w AS (PARTITION BY partition ORDER BY seq)) s
WHERE bad}),
		'0',
		"consumer $c saw strictly increasing offsets in every partition");

	is( $node->safe_psql(
			'postgres', qq{
SELECT count(*) FROM (
	(SELECT partition, "offset", id FROM seen WHERE consumer = '$c'
	 EXCEPT ALL SELECT partition, "offset", id FROM final_log)
	UNION ALL
	(SELECT partition, "offset", id FROM final_log
	 EXCEPT ALL SELECT partition, "offset", id FROM seen WHERE consumer = '$c')) d}),
		'0',
		"consumer $c saw exactly the final log, each record once");

	is( $node->safe_psql(
			'postgres', qq{
SELECT count(*) FROM seen s WHERE consumer = '$c'
AND NOT EXISTS (SELECT FROM committed_ids c WHERE c.id = s.id)}),
		'0',
		"consumer $c never saw a rolled-back id");

	# The next offset never falls below a stable offset seen before (no
	# offset a consumer passed is handed out again).  Without eviction it
	# never moves backwards at all; a slot initialized again after an
	# eviction starts after the last committed offset, so offsets that only
	# rolled-back transactions had taken at the end of the partition (above
	# every stable offset) are handed out again, as after a restart.
	my $next_back = defined $n_slots ? 'false' : 'next < lag(next) OVER w';
	is( $node->safe_psql(
			'postgres', qq{
SELECT count(*) FROM (
	SELECT stable < lag(stable) OVER w OR $next_back
		   OR next < max(stable) OVER w OR stable > next AS bad
	FROM wm_seen WHERE consumer = '$c'
	WINDOW w AS (PARTITION BY partition ORDER BY round)) s
WHERE bad}),
		'0',
		"consumer $c never saw a watermark move backwards");
}

$node->stop;

done_testing();
