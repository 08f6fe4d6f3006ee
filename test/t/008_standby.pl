
# Copyright (c) 2026, estream developers

# Reading on a streaming hot standby, and promotion.
#
# On a standby there is no shared memory of the primary: estream.fetch()
# and estream.watermarks() use the stable offsets that the primary's worker
# persists in estream.partition (every estream.worker_naptime, 100 ms here),
# read in the same snapshot as the records.  This test checks:
#
# - no estream worker runs on the standby; producing and polling there fail
#   with 25006;
# - a record committed behind an open transaction (offset k + 1 while k is
#   in flight) is not returned on the standby, even after the worker ran and
#   the standby replayed everything, and a fetch from k + 1 is out of range
#   (22023); once k commits both come, in order;
# - a fetch with wait_ms on the standby returns a record produced on the
#   primary during the wait;
# - under load (pgbench: commits, rollbacks, savepoints, transactions open
#   for a while; a new segment every second), a consumer on the standby
#   that fetches every partition from its position never gets an offset out
#   of order or at or above the persisted stable offset, never gets an
#   error, and never sees a stable offset move backwards; once the standby
#   has replayed the final watermarks it has read exactly the committed
#   records, in order, once;
# - meanwhile consumer group g polls on the primary, in transactions;
# - after the primary stops and the standby is promoted: the launcher and
#   the worker start on the new primary; its stable offsets are the old
#   primary's and new records get offsets from there on (offsets that only
#   rolled-back transactions at the end of a partition used are handed out
#   again, as after a crash: no reader got past them); a session opened
#   before the promotion produces and reads; the standby consumer resumes
#   from its positions; group g resumes from its committed offsets and,
#   together with what it consumed before, gets every committed record
#   exactly once.
#
# Application roles, granted with estream.grant_acl() on the primary (and
# replicated): producers run as sb_producer (write on t and oo), readers on
# the standby as sb_reader (read on t and oo), group g's and go's consumer
# as sb_group (read on t, oo and groups g and go), the session that lives
# across the promotion as sb_app (read and write on oo), with privileges on
# the test's tables; the checks run as the superuser.

use strict;
use warnings;

use IPC::Run;
use EstreamNode;
use PostgreSQL::Test::Utils;
use Test::More;

my $n_partitions = 3;
my $load_seconds = 10;

my $primary = EstreamNode->create('primary',
	init => { allows_streaming => 1 },
	conf => "estream.worker_naptime = 100ms\n");

$primary->safe_psql(
	'postgres', qq{
CREATE EXTENSION estream;
SELECT estream.create_topic('oo', 1);
-- a new segment every second under load: readers cross segments
SELECT estream.create_topic('t', $n_partitions, '{"segment.ms": 1000}');
SELECT estream.create_group('g', auto_offset_reset => 'earliest');

CREATE SEQUENCE id_seq;
-- one row per committed record of topic t, written by its transaction
CREATE TABLE committed_ids (id bigint PRIMARY KEY, partition int NOT NULL,
	"offset" bigint NOT NULL, UNIQUE (partition, "offset"));
-- every record group g consumed, written in the transaction that polled it
CREATE TABLE g_seen (partition int NOT NULL, "offset" bigint NOT NULL,
	id bigint NOT NULL, phase text NOT NULL);
-- the primary's watermarks once the load is over: tells the consumers to stop
CREATE TABLE load_done (partition int PRIMARY KEY, stable bigint NOT NULL);

CREATE FUNCTION p(part int) RETURNS void
LANGUAGE plpgsql AS \$\$
DECLARE
	v_id bigint := nextval('id_seq');
	r estream.position;
BEGIN
	r := estream.produce('t', jsonb_build_object('id', v_id), partition => part);
	INSERT INTO committed_ids VALUES (v_id, r.partition, r."offset");
END
\$\$;

-- Group g: poll a few records at a time, one transaction each, until the
-- load is over.
CREATE PROCEDURE group_consume()
LANGUAGE plpgsql AS \$\$
BEGIN
	WHILE NOT EXISTS (SELECT FROM load_done) LOOP
		INSERT INTO g_seen
		SELECT r.partition, r."offset", (r.value->>'id')::bigint, 'load'
		FROM estream.poll('g', 't', 20) r;
		COMMIT;
		PERFORM pg_sleep(0.02);
	END LOOP;
END
\$\$;

-- The standby consumer (the standby is read-only: it reports every record
-- with a notice, and raises an error on any anomaly).  Each round fetches
-- every partition from its position, then reads the persisted watermarks:
-- every record fetched must lie below them, and they never move back.  It
-- stops once load_done is replayed, the watermarks have reached it and a
-- last round has drained every partition.
CREATE PROCEDURE standby_consume(nparts int)
LANGUAGE plpgsql AS \$\$
DECLARE
	pos bigint[] := array_fill(0::bigint, ARRAY[nparts]);
	seen_stable bigint[] := array_fill(0::bigint, ARRAY[nparts]);
	last_round boolean := false;
	rounds int := 0;
	n int;
	r record;
	w record;
BEGIN
	LOOP
		rounds := rounds + 1;
		FOR part IN 0 .. nparts - 1 LOOP
			LOOP
				n := 0;
				FOR r IN SELECT f."offset", f.value->>'id' AS id
						 FROM estream.fetch('t', part, pos[part + 1], 100) f LOOP
					IF r."offset" < pos[part + 1] THEN
						RAISE EXCEPTION 'partition %: fetch from % returned offset %',
							part, pos[part + 1], r."offset";
					END IF;
					RAISE NOTICE 'rec %:%:%', part, r."offset", r.id;
					pos[part + 1] := r."offset" + 1;
					n := n + 1;
				END LOOP;
				EXIT WHEN NOT last_round OR n = 0;
			END LOOP;
		END LOOP;
		EXIT WHEN last_round;
		FOR w IN SELECT * FROM estream.watermarks('t') LOOP
			IF w.stable_offset < pos[w.partition + 1] THEN
				RAISE EXCEPTION 'partition %: read offset % but the stable offset is %',
					w.partition, pos[w.partition + 1] - 1, w.stable_offset;
			END IF;
			IF w.stable_offset < seen_stable[w.partition + 1] THEN
				RAISE EXCEPTION 'partition %: the stable offset moved back from % to %',
					w.partition, seen_stable[w.partition + 1], w.stable_offset;
			END IF;
			IF w.next_offset < w.stable_offset THEN
				RAISE EXCEPTION 'partition %: next offset % below the stable offset %',
					w.partition, w.next_offset, w.stable_offset;
			END IF;
			seen_stable[w.partition + 1] := w.stable_offset;
		END LOOP;
		last_round := (SELECT count(*) = nparts FROM load_done d
					   WHERE seen_stable[d.partition + 1] >= d.stable);
		COMMIT;
		PERFORM pg_sleep(0.005);
	END LOOP;
	RAISE NOTICE 'rounds %', rounds;
END
\$\$;

-- the application's roles
CREATE ROLE sb_producer LOGIN;
SELECT estream.grant_acl('sb_producer', 'write', 'topic', topic) FROM unnest('{t,oo}'::text[]) topic;
GRANT USAGE ON SEQUENCE id_seq TO sb_producer;
GRANT INSERT ON committed_ids TO sb_producer;
CREATE ROLE sb_reader LOGIN;
SELECT estream.grant_acl('sb_reader', 'read', 'topic', topic) FROM unnest('{t,oo}'::text[]) topic;
GRANT SELECT ON load_done TO sb_reader;
CREATE ROLE sb_group LOGIN;
SELECT estream.grant_acl('sb_group', 'read', 'topic', topic) FROM unnest('{t,oo}'::text[]) topic;
SELECT estream.grant_acl('sb_group', 'read', 'group', g) FROM unnest('{g,go}'::text[]) g;
GRANT INSERT ON g_seen TO sb_group;
GRANT SELECT ON load_done TO sb_group;
CREATE ROLE sb_app LOGIN;
SELECT estream.grant_acl('sb_app', 'read,write', 'topic', 'oo');
});

# offset:value of a fetch on a node, by a reader
sub fetch_values
{
	my ($node, $topic, $partition, $from) = @_;
	return $node->as_role(
		'sb_reader', qq{
SELECT string_agg(format('%s:%s', "offset", value->>'v'), ',' ORDER BY "offset")
FROM estream.fetch('$topic', $partition, $from)});
}

# partition:offset:id of every record of committed_ids on a node
sub committed_records
{
	my ($node) = @_;
	return $node->safe_psql(
		'postgres', q{
SELECT string_agg(format('%s:%s:%s', partition, "offset", id), ',' ORDER BY partition, "offset")
FROM committed_ids});
}

# Compare two comma-separated lists of records; on a difference, show the
# first records missing or extra rather than both lists.
sub same_records
{
	my ($got, $expected, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my @got = split /,/, $got;
	my @expected = split /,/, $expected;
	if ($got eq $expected)
	{
		pass($what);
		return;
	}
	fail($what);
	my %in_got = map { $_ => 1 } @got;
	my %in_expected = map { $_ => 1 } @expected;
	my @missing = grep { !$in_got{$_} } @expected;
	my @extra = grep { !$in_expected{$_} } @got;
	diag sprintf('%d records, %d expected; %d missing (%s), %d extra (%s)',
		scalar(@got), scalar(@expected),
		scalar(@missing), join(',', @missing[ 0 .. ($#missing < 9 ? $#missing : 9) ]),
		scalar(@extra), join(',', @extra[ 0 .. ($#extra < 9 ? $#extra : 9) ]));
	for my $i (0 .. $#expected)
	{
		next if defined $got[$i] && $got[$i] eq $expected[$i];
		diag "first difference at record $i: got "
		  . ($got[$i] // 'nothing')
		  . ", expected $expected[$i]";
		last;
	}
}

$primary->wait_worker_runs(1, "worker ran 1 times: primary");

$primary->backup('backup');
my $standby = EstreamNode->new('standby');
$standby->init_from_backup($primary, 'backup', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);

is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'),
	't', 'the standby is in recovery');
is($standby->watermarks('t'), '0:0:0:0,1:0:0:0,2:0:0:0',
	'watermarks work on the standby');
is( $standby->safe_psql('postgres',
		"SELECT string_agg(kind || ':' || state, ',') FROM estream.workers"),
	'launcher:stopped',
	'no estream worker runs on the standby');

# The application's roles are ordinary roles, on both nodes: not
# superusers, and refused (42501) when they write a topic's log directly.
my $segment = $primary->safe_psql('postgres',
	"SELECT format('estream.log_%s_%s', topic_id, current_segment) FROM estream.topic WHERE name = 't'"
);
for my $role (qw(sb_producer sb_reader sb_group sb_app))
{
	for my $node ($primary, $standby)
	{
		is($node->as_role($role, q{SELECT current_user, current_setting('is_superuser')}),
			"$role|off", "$role is not a superuser on the " . $node->name);
	}
	my ($ret, $stdout, $stderr) = $primary->psql(
		'postgres',
		"INSERT INTO $segment VALUES (0, 0, 9223372036854775807, now(), NULL, '{}', NULL, NULL)",
		extra_params => [ '-U', $role, '-v', 'VERBOSITY=sqlstate' ]);
	like($stderr, qr/ERROR:  42501/,
		"$role cannot write the log of topic t directly (42501)");
}

#
# 1. A record committed behind an open transaction is not read on the
# standby until that transaction ends.
#
$primary->as_role('sb_producer',
	q{SELECT estream.produce_batch('oo', ARRAY['{"v": "a0"}', '{"v": "a1"}']::jsonb[])});
my $open =
  $primary->background_psql('postgres', extra_params => [ '-U', 'sb_producer' ]);
$open->query_safe('BEGIN');
is( $open->query_safe(q{SELECT "offset" FROM estream.produce('oo', '{"v": "late"}')}),
	'2', 'the open transaction got offset 2');
my $ts_early = $primary->safe_psql('postgres', 'SELECT clock_timestamp()');
is( $primary->as_role('sb_producer',
		q{SELECT "offset" FROM estream.produce('oo', '{"v": "early"}')}),
	'3',
	'the record committed behind it got offset 3');

# Whatever the worker persists from now on, and whatever the standby
# replays, must keep offset 3 out of reach.
$primary->wait_worker_runs(2, "worker ran 2 times: offset 3 committed");
$primary->wait_for_catchup($standby);
is($standby->watermarks('oo'), '0:0:2:4',
	'the standby sees stable offset 2 (offset 2 in flight) and next offset 4');
is(fetch_values($standby, 'oo', 0, 0), '0:a0,1:a1',
	'a fetch on the standby stops below the open transaction');
is(fetch_values($standby, 'oo', 0, 2), '',
	'a fetch on the standby from the stable offset returns nothing');
is( $standby->as_role('sb_reader',
		"SELECT coalesce(\"offset\"::text, 'none') FROM estream.offsets_for_times('oo', '$ts_early')"),
	'none',
	'offsets_for_times on the standby does not find the record above the stable offset');
my ($ret, $stdout, $stderr) = $standby->psql(
	'postgres',
	q{SELECT * FROM estream.fetch('oo', 0, 3)},
	extra_params => [ '-U', 'sb_reader', '-v', 'VERBOSITY=verbose' ]);
like(
	$stderr,
	qr/ERROR:  22023: offset 3 is out of range for partition 0 of topic "oo"\nDETAIL:  The partition's log start offset is 0 and its stable offset is 2\./,
	'a fetch on the standby above the persisted stable offset is out of range (22023)'
);

$open->query_safe('COMMIT');
$open->quit;
ok( $standby->poll_query_until(
		'postgres',
		q{SELECT stable_offset FROM estream.watermarks('oo')}, '4'),
	'the standby reaches stable offset 4 once offset 2 committed');
is(fetch_values($standby, 'oo', 0, 2), '2:late,3:early',
	'the standby returns offsets 2 and 3 in order');
is( $standby->as_role('sb_reader',
		"SELECT \"offset\" FROM estream.offsets_for_times('oo', '$ts_early')"),
	'3',
	'offsets_for_times on the standby finds it now');
is(fetch_values($standby, 'oo', 0, 0), '0:a0,1:a1,2:late,3:early',
	'the standby has the whole log');

#
# 2. Producing and polling need the primary.
#
($ret, $stdout, $stderr) = $standby->psql(
	'postgres',
	q{SELECT estream.produce('oo', '{"v": "standby"}')},
	extra_params => [ '-U', 'sb_producer', '-v', 'VERBOSITY=verbose' ]);
like(
	$stderr,
	qr/ERROR:  25006: cannot execute estream.produce\(\) in a read-only transaction/,
	'produce on the standby fails with 25006');

# Group g has no committed offsets for topic oo yet: poll() would create
# them.  Group go has, and has records to read: poll() would claim them.
is( $primary->as_role(
		'sb_group',
		q{SELECT "offset" FROM estream.poll('go', 'oo', 1, auto_offset_reset => 'earliest')}),
	'0',
	'group go polled offset 0 on the primary');
$primary->wait_for_catchup($standby);
($ret, $stdout, $stderr) = $standby->psql(
	'postgres',
	q{SELECT * FROM estream.poll('g', 'oo')},
	extra_params => [ '-U', 'sb_group', '-v', 'VERBOSITY=verbose' ]);
like(
	$stderr,
	qr/ERROR:  25006: cannot execute INSERT in a read-only transaction/,
	'poll on the standby fails with 25006 (new committed offsets)');
($ret, $stdout, $stderr) = $standby->psql(
	'postgres',
	q{SELECT * FROM estream.poll('go', 'oo')},
	extra_params => [ '-U', 'sb_group', '-v', 'VERBOSITY=verbose' ]);
like(
	$stderr,
	qr/ERROR:  25006: cannot execute SELECT FOR UPDATE in a read-only transaction/,
	'poll on the standby fails with 25006 (records to claim)');
is($stdout, '', 'poll on the standby returned nothing');

#
# 3. A long poll on the standby returns a record produced during the wait.
#
# Nothing else is written meanwhile, on purpose: the waiting fetch keeps
# its statement's snapshot, so a cleanup record of the primary (such as the
# pruning of estream.partition, which the worker updates every run) that
# removes rows that snapshot could see makes replay wait for the fetch, up
# to max_standby_streaming_delay, and then cancels it; the record waited
# for is not replayed meanwhile.  hot_standby_feedback = on avoids that.
#
my ($lp_out, $lp_err) = ('', '');
my $long_poll = IPC::Run::start(
	[
		$standby->installed_command('psql'), '-XAtq',
		'-d', $standby->connstr('postgres') . ' user=sb_reader application_name=long_poll',
		'-c',
		qq{SELECT format('%s:%s', "offset", value->>'v') FROM estream.fetch('oo', 0, 4, 10, $PostgreSQL::Test::Utils::timeout_default * 1000)}
	],
	'<', '/dev/null', '>', \$lp_out, '2>', \$lp_err,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
ok( $standby->poll_query_until(
		'postgres',
		"SELECT wait_event_type = 'Extension' FROM pg_stat_activity WHERE application_name = 'long_poll'"
	),
	'the fetch on the standby waits');
$primary->as_role('sb_producer',
	q{SELECT estream.produce('oo', '{"v": "during the wait"}')});
$long_poll->finish;
is($lp_out, "4:during the wait\n",
	'the long poll on the standby returned the record produced during the wait');
is($lp_err, '', 'the long poll had no error');

#
# 4. Under load: producers on the primary, group g on the primary, and a
# consumer on the standby.
#
$primary->wait_for_catchup($standby);
my %pgbench_scripts = (
	'commit@4' => q{
\set p random(0, 2)
SELECT p(:p);
},
	'multi@2' => q{
\set p random(0, 2)
\set q random(0, 2)
BEGIN;
SELECT p(:p);
SELECT p(:q);
COMMIT;
},
	'rollback@1' => q{
\set p random(0, 2)
\set q random(0, 2)
BEGIN;
SELECT p(:p);
SELECT p(:q);
ROLLBACK;
},
	'savepoint@1' => q{
\set p random(0, 2)
\set q random(0, 2)
BEGIN;
SELECT p(:p);
SAVEPOINT s;
SELECT p(:q);
ROLLBACK TO SAVEPOINT s;
COMMIT;
},
	'slow@2' => q{
\set p random(0, 2)
\set q random(0, 2)
\set ms random(1, 50)
BEGIN;
SELECT p(:p);
SELECT pg_sleep(:ms / 1000.0);
SELECT p(:q);
COMMIT;
},
	'slowrollback@1' => q{
\set p random(0, 2)
\set ms random(1, 50)
BEGIN;
SELECT p(:p);
SELECT pg_sleep(:ms / 1000.0);
ROLLBACK;
},);

my $scriptdir = PostgreSQL::Test::Utils::tempdir;
my @pgbench_files;
for my $name (sort keys %pgbench_scripts)
{
	my ($base, $weight) = split /@/, $name;
	PostgreSQL::Test::Utils::append_to_file("$scriptdir/$base.sql",
		$pgbench_scripts{$name});
	push @pgbench_files, '-f', "$scriptdir/$base.sql\@$weight";
}

my ($sc_out, $sc_err, $gc_out, $gc_err, $pb_out, $pb_err) =
  ('', '', '', '', '', '');
my $standby_consumer = IPC::Run::start(
	[
		$standby->installed_command('psql'), '-XAtq',
		'-v', 'ON_ERROR_STOP=1',
		'-d', $standby->connstr('postgres') . ' user=sb_reader',
		'-c', "CALL standby_consume($n_partitions)"
	],
	'<', '/dev/null', '>', \$sc_out, '2>', \$sc_err,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
my $group_consumer = IPC::Run::start(
	[
		$primary->installed_command('psql'), '-XAtq',
		'-v', 'ON_ERROR_STOP=1',
		'-d', $primary->connstr('postgres') . ' user=sb_group',
		'-c', 'CALL group_consume()'
	],
	'<', '/dev/null', '>', \$gc_out, '2>', \$gc_err,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
my $pgbench = IPC::Run::start(
	[
		$primary->installed_command('pgbench'), '-n',
		'-c', '3', '-T', $load_seconds,
		@pgbench_files, '-h', $primary->host,
		'-p', $primary->port, '-U', 'sb_producer', 'postgres'
	],
	'<', '/dev/null', '>', \$pb_out, '2>', \$pb_err,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
ok($pgbench->finish, 'pgbench succeeded');
note "pgbench output:\n$pb_out\n$pb_err";

# Every producing transaction has ended: the primary's watermarks are final.
is( $primary->safe_psql('postgres',
		'SELECT coalesce(sum(inflight), 0) FROM estream._shared_partitions()'),
	'0',
	'no producing transaction is left on the primary');
my $final = $primary->watermarks('t');
$primary->safe_psql('postgres',
	"INSERT INTO load_done SELECT partition, stable_offset FROM estream.watermarks('t')"
);
ok($group_consumer->finish, 'group g polled on the primary during the load');
is($gc_err, '', 'group g had no error');
ok($standby_consumer->finish, 'the standby consumer finished');
unlike($sc_err, qr/ERROR|FATAL/,
	'the standby consumer saw no error and no anomaly');
diag "standby consumer: " . substr($sc_err =~ s/^NOTICE:  rec .*\n//mgr, 0, 2000)
  if $sc_err =~ /ERROR|FATAL/;
note 'standby consumer: ' . (($sc_err =~ /NOTICE:  (rounds \d+)/)[0] // '?');

# What the standby consumer read, in the order it read it.
my %read;
my $n_out_of_order = 0;
for my $line (split /\n/, $sc_err)
{
	next unless $line =~ /^NOTICE:  rec (\d+):(\d+):(\d+)$/;
	my ($part, $offset, $id) = ($1, $2, $3);
	$n_out_of_order++
	  if @{ $read{$part} // [] } && $offset <= $read{$part}[-1][0];
	push @{ $read{$part} }, [ $offset, $id ];
}
is($n_out_of_order, 0,
	'the standby consumer read every partition in offset order');
my $read_on_standby = join ',',
  map {
	my $part = $_;
	map { "$part:$_->[0]:$_->[1]" } @{ $read{$part} }
  } sort keys %read;

is($standby->watermarks('t'), $final,
	'the standby has the final watermarks of the primary');
my $n_committed =
  $primary->safe_psql('postgres', 'SELECT count(*) FROM committed_ids');
note "records committed: $n_committed";
cmp_ok($n_committed, '>', 100, 'the load committed records');
cmp_ok($primary->safe_psql('postgres', "SELECT count(*) FROM estream.segments WHERE topic = 't'"),
	'>=', 5, 'the log was rolled into new segments during the load');
cmp_ok(
	$primary->safe_psql(
		'postgres', q{SELECT count(*) FROM committed_ids c
		   WHERE c."offset" > (SELECT min("offset") FROM committed_ids d WHERE d.partition = c.partition)
			 AND NOT EXISTS (SELECT FROM committed_ids d
							 WHERE d.partition = c.partition AND d."offset" = c."offset" - 1)}),
	'>', 0, 'rolled-back transactions left holes');
my $committed = committed_records($primary);
same_records(
	$primary->safe_psql(
		'postgres', qq{
SELECT string_agg(format('%s:%s:%s', f.partition, f."offset", f.value->>'id'), ','
				  ORDER BY f.partition, f."offset")
FROM generate_series(0, $n_partitions - 1) part, estream.fetch('t', part, 0, 100000) f}),
	$committed,
	'the log on the primary is exactly the committed records');
same_records($read_on_standby, $committed,
	'the standby consumer read exactly the committed records, in order, once');

#
# 5. More records, and rolled-back ones at the end of every partition; then
# group g consumes a few of them and leaves the rest.
#
$primary->as_role('sb_producer',
	"SELECT p(part) FROM generate_series(0, $n_partitions - 1) part, generate_series(1, 4)"
);
$primary->as_role(
	'sb_producer', qq{
BEGIN;
SELECT p(part) FROM generate_series(0, $n_partitions - 1) part, generate_series(1, 2);
ROLLBACK;});
is( $primary->as_role(
		'sb_group', q{
WITH r AS (
	INSERT INTO g_seen
	SELECT r.partition, r."offset", (r.value->>'id')::bigint, 'before promotion'
	FROM estream.poll('g', 't', 5) r
	RETURNING 1)
SELECT count(*) FROM r}),
	'5',
	'group g polled 5 records on the primary');
my $old_final = $primary->watermarks('t');
my @old_stable = map { (split /:/)[2] } split /,/, $old_final;
is( join(',', map { my @w = split /:/; $w[3] - $w[2] } split /,/, $old_final),
	join(',', (2) x $n_partitions),
	'two rolled-back offsets at the end of every partition');
my $g_committed = $primary->safe_psql(
	'postgres', q{
SELECT string_agg(format('%s:%s', partition, committed_offset), ',' ORDER BY partition)
FROM estream.committed('g', 't')});
note "group g committed before the promotion: $g_committed";
cmp_ok($primary->safe_psql('postgres', 'SELECT count(*) FROM g_seen'),
	'<', $primary->safe_psql('postgres', 'SELECT count(*) FROM committed_ids'),
	'group g left records to consume');

ok( $standby->poll_query_until(
		'postgres',
		q{SELECT string_agg(format('%s:%s:%s:%s', partition, log_start_offset, stable_offset, next_offset), ','
						   ORDER BY partition)
		  FROM estream.watermarks('t')},
		$old_final),
	'the standby reaches the final watermarks');
$primary->wait_for_catchup($standby);

# A session of the standby that stays connected across the promotion.
my $session =
  $standby->background_psql('postgres', extra_params => [ '-U', 'sb_app' ]);
is( $session->query_safe(
		q{SELECT count(*) FROM estream.fetch('oo', 0, 0) WHERE value->>'v' <> ''}),
	'5',
	'a session on the standby reads before the promotion');

#
# 6. Promotion.
#
$primary->stop('fast');
$standby->promote;
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'),
	'f', 'the standby was promoted');
ok( $standby->poll_query_until(
		'postgres',
		"SELECT runs > 0 AND pid IS NOT NULL FROM estream.workers WHERE kind = 'database' AND database = 'postgres'"
	),
	'the worker runs on the new primary');
is( $standby->safe_psql('postgres',
		"SELECT state, pid IS NOT NULL FROM estream.workers WHERE kind = 'launcher'"),
	'running|t',
	'the launcher runs on the new primary');

# Offsets of transactions that rolled back at the end of a partition, which
# nobody could read past, are handed out again, as after a crash; no
# stable offset moves back.
is( $standby->watermarks('t'),
	join(',', map { "$_:0:$old_stable[$_]:$old_stable[$_]" } 0 .. $n_partitions - 1),
	'the new primary continues from the stable offsets of the old one');
is( $standby->as_role(
		'sb_producer', qq{
SELECT string_agg(format('%s:%s', r.partition, r."offset"), ',' ORDER BY r.partition)
FROM generate_series(0, $n_partitions - 1) part,
	 estream.produce('t', '{"after": true}', partition => part) r}),
	join(',', map { "$_:$old_stable[$_]" } 0 .. $n_partitions - 1),
	'new records get offsets from the old stable offsets on');
$standby->as_role('sb_producer',
	"SELECT p(part) FROM generate_series(0, $n_partitions - 1) part, generate_series(1, 3)"
);

# The session opened before the promotion produces and reads.
is( $session->query_safe(
		q{SELECT "offset" FROM estream.produce('oo', '{"v": "after"}')}),
	'5',
	'a session opened before the promotion produces at the next offset');
is( $session->query_safe(
		q{SELECT string_agg(format('%s:%s', "offset", value->>'v'), ',' ORDER BY "offset")
		  FROM estream.fetch('oo', 0, 4)}),
	'4:during the wait,5:after',
	'and reads its record');
$session->quit;

# The standby consumer resumes from its positions on the new primary: it
# gets the 4 records committed after it stopped, the new one and 3 more.
is( $standby->as_role(
		'sb_reader',
		join(
			"\nUNION ALL\n",
			map {
				my $from = $read{$_} ? $read{$_}[-1][0] + 1 : 0;
				qq{SELECT string_agg(CASE WHEN f.value ? 'after' THEN 'new' ELSE 'r' END, ' '
									 ORDER BY f."offset")
				   FROM estream.fetch('t', $_, $from, 100000) f}
			} 0 .. $n_partitions - 1)),
	join("\n", ('r r r r new r r r') x $n_partitions),
	'the standby consumer resumes from its positions on the new primary');
same_records(
	$standby->safe_psql(
		'postgres', qq{
SELECT string_agg(format('%s:%s:%s', f.partition, f."offset", f.value->>'id'), ','
				  ORDER BY f.partition, f."offset")
FROM generate_series(0, $n_partitions - 1) part, estream.fetch('t', part, 0, 100000) f
WHERE f.value ? 'id'}),
	committed_records($standby),
	'the log on the new primary is exactly the committed records');

# Group g resumes from its committed offsets: the first record it gets in
# every partition is the first committed record at or after them.
is( $standby->safe_psql(
		'postgres', q{
SELECT string_agg(format('%s:%s', partition, committed_offset), ',' ORDER BY partition)
FROM estream.committed('g', 't')}),
	$g_committed,
	'group g kept its committed offsets');
my $first_expected = $standby->safe_psql(
	'postgres', q{
SELECT string_agg(format('%s:%s', o.partition,
	(SELECT min(c."offset") FROM committed_ids c
	 WHERE c.partition = o.partition AND c."offset" >= o.committed_offset)), ','
	ORDER BY o.partition)
FROM estream.committed('g', 't') o});
my $polls = 0;
while (
	$standby->as_role(
		'sb_group', q{
WITH r AS (
	INSERT INTO g_seen
	SELECT r.partition, r."offset", (r.value->>'id')::bigint, 'after promotion'
	FROM estream.poll('g', 't', 500) r
	WHERE r.value ? 'id'
	RETURNING 1)
SELECT count(*) FROM r}) ne '0')
{
	last if ++$polls > 100;
}
is( $standby->safe_psql(
		'postgres', q{
SELECT string_agg(format('%s:%s', o.partition, o.committed_offset - w.stable_offset), ','
				  ORDER BY o.partition)
FROM estream.committed('g', 't') o JOIN estream.watermarks('t') w USING (partition)}),
	join(',', map { "$_:0" } 0 .. $n_partitions - 1),
	'group g reached the stable offsets on the new primary');
is( $standby->safe_psql(
		'postgres', q{
SELECT string_agg(format('%s:%s', partition, "offset"), ',' ORDER BY partition)
FROM (SELECT partition, min("offset") AS "offset" FROM g_seen
	  WHERE phase = 'after promotion' GROUP BY partition) s}),
	$first_expected,
	'group g resumed exactly at its committed offsets');
is( $standby->safe_psql(
		'postgres', q{
SELECT count(*) FROM (SELECT FROM g_seen GROUP BY partition, "offset" HAVING count(*) > 1) d}),
	'0',
	'group g consumed no record twice');
same_records(
	$standby->safe_psql(
		'postgres', q{
SELECT string_agg(format('%s:%s:%s', partition, "offset", id), ',' ORDER BY partition, "offset")
FROM g_seen}),
	committed_records($standby),
	'group g consumed every committed record, before and after the promotion');

$standby->stop;

done_testing();
