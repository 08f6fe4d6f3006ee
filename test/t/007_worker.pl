
# Copyright (c) 2026, estream developers

# The background workers: the launcher, one worker per database that has the
# extension, and what the workers do.
#
# Life cycle (databases db1, tpl and cpy; the view is read in postgres):
#
# - the launcher runs before any extension exists; a database without the
#   extension gets no lasting worker (its worker stops at once);
# - CREATE EXTENSION starts the database's worker, shown in estream.workers
#   (state idle, runs counting) and in pg_stat_activity as 'estream worker';
# - a new estream.worker_naptime reaches the workers with a reload (SIGHUP),
#   and estream.enable_worker = off leaves them connected but 'disabled';
# - a worker that dies (pg_terminate_backend) is logged as having exited
#   unexpectedly and is started again, and counts on;
# - DROP EXTENSION stops the worker (exit code 0, not a failure), CREATE
#   EXTENSION starts it again;
# - DROP DATABASE, CREATE DATABASE ... TEMPLATE and ALTER DATABASE RENAME
#   succeed while the database's worker runs (the worker is stopped first,
#   and kept off: 'paused'); a database copied from one with the extension
#   gets a worker.
#
# Maintenance, observed (not run by hand) with a 100 ms naptime:
#
# - retention by time under load: two pgbench producers and a consumer on a
#   topic with segment.ms 200 and retention.ms 1000; segments are rolled
#   and deleted while producing; the log start moves, a fetch below it fails
#   with 22023 unless auto_offset_reset says otherwise; n_dead_tup of the
#   log's tables stays 0; the consumer reads in order, without holes; once
#   the load ends everything is deleted and dropped but the empty active
#   segment, and the worker's counters say exactly that;
# - retention by size: once the log is larger than retention.bytes, the
#   oldest segments go while what is left stays at least retention.bytes;
# - compaction: only the latest record of each key stays, at its offset; a
#   tombstone stays until delete.retention.ms has passed, then goes with its
#   key; estream.latest() never changes; no dead tuples (n_dead_tup, and
#   pgstattuple when installed, as the worker's own statistics never reach
#   n_dead_tup);
# - estream.transaction_timeout: a session idle in a transaction that
#   produced is terminated, its record never becomes visible and the stable
#   offset moves past it.

use strict;
use warnings;

use IPC::Run;
use EstreamNode;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = EstreamNode->create('worker', conf => "estream.worker_naptime = 100ms\n");

# the columns of a database's row in estream.workers, as psql prints them
sub worker_row
{
	my ($dbname, $columns) = @_;
	return $node->safe_psql('postgres',
		"SELECT $columns FROM estream.workers WHERE database = '$dbname'");
}

# the counters of the postgres database's worker
sub counters
{
	my $row = worker_row('postgres',
		'segments_rolled, segments_deleted, segments_dropped, records_compacted, sessions_terminated, errors'
	);
	my %c;
	@c{qw(rolled deleted dropped compacted terminated errors)} = split /\|/,
	  $row;
	return \%c;
}

# sum(n_dead_tup) and sum(n_tup_ins) of the log tables of a topic
sub log_table_stats
{
	my ($topic) = @_;
	return $node->safe_psql(
		'postgres', qq{
SELECT coalesce(sum(s.n_dead_tup), 0), coalesce(sum(s.n_tup_ins), 0)
FROM pg_stat_user_tables s, estream.topic t
WHERE t.name = '$topic' AND s.schemaname = 'estream'
  AND (s.relname = 'log_' || t.topic_id OR s.relname LIKE 'log\\_' || t.topic_id || '\\_%')});
}

#
# 1. The launcher, and a worker for each database that has the extension.
#
ok($node->wait_for_log(qr/LOG:  estream launcher started/),
	'the launcher started with the server');
my $launcher_pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'estream launcher'");
like($launcher_pid, qr/^\d+$/, 'one estream launcher in pg_stat_activity');

# Without the extension, the worker of postgres stops at once (quietly: a
# database that never had the extension is looked at every minute).
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'estream worker'",
		'0'),
	'no estream worker runs before any extension exists');

$node->safe_psql('postgres', 'CREATE EXTENSION estream');
ok( $node->poll_query_until(
		'postgres',
		"SELECT state = 'idle' AND runs > 0 FROM estream.workers WHERE database = 'postgres'"
	),
	'CREATE EXTENSION started the worker of postgres');
is( $node->safe_psql(
		'postgres',
		"SELECT kind, datid, database, pid, state FROM estream.workers WHERE kind = 'launcher'"
	),
	"launcher|||$launcher_pid|running",
	'estream.workers shows the launcher');

# A new database, without the extension: its worker stops, no row.
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', 'CREATE DATABASE db1');
my $db1_oid = $node->safe_psql('postgres',
	"SELECT oid FROM pg_database WHERE datname = 'db1'");
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'estream worker' AND datid = $db1_oid",
		'0'),
	'no worker stays in db1: no extension there');
is($node->safe_psql('postgres', "SELECT count(*) FROM estream.workers WHERE datid = $db1_oid"),
	'0', 'no row in estream.workers for db1 without the extension');

$node->safe_psql('db1', 'CREATE EXTENSION estream');
ok( $node->poll_query_until(
		'postgres',
		"SELECT state = 'idle' AND runs > 0 AND pid IS NOT NULL FROM estream.workers WHERE database = 'db1'"
	),
	'CREATE EXTENSION in db1 started its worker');
my ($db1_pid, $db1_runs) = split /\|/, worker_row('db1', 'pid, runs');
ok( $node->poll_query_until(
		'postgres',
		"SELECT runs > $db1_runs FROM estream.workers WHERE database = 'db1'"),
	'the worker of db1 keeps running');
is( $node->safe_psql(
		'postgres', qq{
SELECT a.backend_type, a.datname, a.application_name, w.datid, w.kind, w.errors,
	   w.started_at IS NOT NULL, w.last_run_at >= w.started_at, w.last_run_ms >= 0, w.naptime_ms
FROM estream.workers w JOIN pg_stat_activity a USING (pid)
WHERE w.database = 'db1'}),
	"estream worker|db1|estream worker|$db1_oid|database|0|t|t|t|100",
	'the worker of db1 is an estream worker connected to db1, and its row is complete');
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FROM pg_stat_activity
WHERE backend_type = 'estream worker' AND datname IN ('postgres', 'db1')}),
	'2',
	'one worker for each database with the extension');

#
# 2. SIGHUP: a new naptime reaches the running workers.
#
$node->alter_system('estream.worker_naptime', '250ms');
ok( $node->poll_query_until(
		'postgres',
		"SELECT bool_and(naptime_ms = 250) FROM estream.workers WHERE kind = 'database'"
	),
	'estream.worker_naptime = 250ms reached every worker after a reload');
is(worker_row('db1', 'pid, state IN (\'idle\', \'running\')'),
	"$db1_pid|t", 'the reload did not restart the worker of db1');
$node->alter_system('estream.enable_worker', 'off');
ok( $node->poll_query_until(
		'postgres',
		"SELECT bool_and(state = 'disabled' AND pid IS NOT NULL) FROM estream.workers WHERE kind = 'database'"
	),
	'estream.enable_worker = off: the workers stay, disabled');
$node->alter_system('estream.enable_worker', undef);
ok( $node->poll_query_until(
		'postgres',
		"SELECT bool_and(state = 'idle') FROM estream.workers WHERE kind = 'database'"),
	'estream.enable_worker back on: the workers run again');
is(worker_row('db1', 'pid'), $db1_pid, 'the worker of db1 was not restarted');

#
# 3. A worker that dies is restarted.
#
my $db1_started = worker_row('db1', 'started_at');
($db1_runs) = worker_row('db1', 'runs');
$log_offset = -s $node->logfile;
is($node->safe_psql('postgres', "SELECT pg_terminate_backend($db1_pid)"),
	't', 'terminated the worker of db1');
ok( $node->wait_for_log(
		qr/LOG:  estream worker for database $db1_oid exited unexpectedly, restarting it in 5000 ms/,
		$log_offset),
	'the launcher logged that the worker exited unexpectedly');
ok( $node->log_contains(
		qr/background worker "estream worker" \(PID $db1_pid\) exited with exit code 1/,
		$log_offset),
	'the worker exited with exit code 1');
# the restart comes 5 s after the failure was noticed
is(worker_row('db1', 'state, pid IS NULL'),
	'failed|t', 'estream.workers shows the worker as failed, without a process');
ok( $node->poll_query_until(
		'postgres', qq{
SELECT pid IS NOT NULL AND pid <> $db1_pid AND state = 'idle' AND runs > $db1_runs
	   AND started_at > '$db1_started'
FROM estream.workers WHERE database = 'db1'}),
	'the worker of db1 was restarted and counts on');
$db1_pid = worker_row('db1', 'pid');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE backend_type = 'estream worker' AND datname = 'db1'"
	),
	$db1_pid,
	'the restarted worker is the only worker of db1');

#
# 4. DROP EXTENSION stops the worker; CREATE EXTENSION starts it again.
#
$log_offset = -s $node->logfile;
$node->safe_psql('db1', 'DROP EXTENSION estream');
ok( $node->wait_for_log(
		qr/LOG:  estream worker for database "db1" is stopping: the extension is not installed/,
		$log_offset),
	'after DROP EXTENSION the worker of db1 stops');
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'estream worker' AND datname = 'db1'",
		'0'),
	'the worker process of db1 is gone');
is($node->safe_psql('postgres', "SELECT count(*) FROM estream.workers WHERE datid = $db1_oid"),
	'0', 'the row of db1 left estream.workers');

$node->safe_psql('db1', 'CREATE EXTENSION estream');
ok( $node->poll_query_until(
		'postgres', qq{
SELECT pid IS NOT NULL AND pid <> $db1_pid AND state = 'idle'
FROM estream.workers WHERE database = 'db1'}),
	'CREATE EXTENSION started the worker of db1 again');
# The launcher started a new worker, so it had seen the old one exit (and
# the postmaster had logged the exit before telling it).
ok( !$node->log_contains(
		qr/background worker "estream worker" \(PID $db1_pid\) exited with exit code/,
		$log_offset),
	'the worker stopped by DROP EXTENSION exited with exit code 0');
ok(!$node->log_contains(qr/exited unexpectedly/, $log_offset),
	'no worker exited unexpectedly around DROP and CREATE EXTENSION');
$db1_pid = worker_row('db1', 'pid');

#
# 5. DROP DATABASE while the database's worker runs.
#
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE pid = $db1_pid AND datname = 'db1'"),
	'1',
	'the worker of db1 is connected to db1');
$log_offset = -s $node->logfile;
my ($ret, $stdout, $stderr) = $node->psql('postgres', 'DROP DATABASE db1');
is($ret, 0, 'DROP DATABASE db1 succeeded while its worker ran');
is($stderr, '', 'DROP DATABASE db1 reported no error');
ok( $node->poll_query_until(
		'postgres', qq{
SELECT count(*) FROM (
	SELECT FROM estream.workers WHERE datid = $db1_oid
	UNION ALL SELECT FROM pg_stat_activity WHERE pid = $db1_pid) x},
		'0'),
	'the row and the worker of db1 are gone');
ok(!$node->log_contains(qr/exited unexpectedly|being accessed by other users/, $log_offset),
	'the worker was stopped for DROP DATABASE, not counted as a failure');

#
# CREATE DATABASE ... TEMPLATE a database whose worker runs: the copy has
# the extension, and gets its own worker.  ALTER DATABASE RENAME the copy
# while its worker runs.
#
$node->safe_psql('postgres', 'CREATE DATABASE tpl');
$node->safe_psql('tpl', 'CREATE EXTENSION estream');
ok( $node->poll_query_until(
		'postgres',
		"SELECT state = 'idle' FROM estream.workers WHERE database = 'tpl'"),
	'the worker of tpl runs');
$log_offset = -s $node->logfile;
($ret, $stdout, $stderr) = $node->psql('postgres', 'CREATE DATABASE cpy TEMPLATE tpl');
is($ret, 0, 'CREATE DATABASE cpy TEMPLATE tpl succeeded while the worker of tpl ran');
# the worker of tpl is kept off for 10 s
ok( $node->poll_query_until(
		'postgres',
		"SELECT state = 'paused' AND pid IS NULL FROM estream.workers WHERE database = 'tpl'"
	),
	'estream.workers shows the worker of tpl as paused');
ok( $node->poll_query_until(
		'postgres',
		"SELECT state = 'idle' FROM estream.workers WHERE database = 'cpy'"),
	'the copy cpy has its own worker');
is( $node->safe_psql(
		'cpy',
		"SELECT extversion = (SELECT default_version FROM pg_available_extensions WHERE name = 'estream') FROM pg_extension WHERE extname = 'estream'"
	),
	't',
	'the copy has the extension');
($ret, $stdout, $stderr) =
  $node->psql('postgres', 'ALTER DATABASE cpy RENAME TO cpy2');
is($ret, 0, 'ALTER DATABASE cpy RENAME succeeded while the worker of cpy ran');
ok( $node->poll_query_until(
		'postgres',
		"SELECT state = 'paused' AND pid IS NULL FROM estream.workers WHERE database = 'cpy2'"
	),
	'the worker of the renamed database is paused');
($ret, $stdout, $stderr) =
  $node->psql('postgres', 'DROP DATABASE cpy2; DROP DATABASE tpl;');
is($ret, 0, 'dropped cpy2 and tpl, their workers paused');
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) FROM estream.workers WHERE kind = 'database' AND datid <> (SELECT oid FROM pg_database WHERE datname = 'postgres')",
		'0'),
	'only the worker of postgres is left');
ok(!$node->log_contains(qr/exited unexpectedly|being accessed by other users/, $log_offset),
	'no worker failed around CREATE DATABASE TEMPLATE and DROP DATABASE');

#
# 6. Retention by time, under load.
#
$node->alter_system('estream.worker_naptime', undef);
ok( $node->poll_query_until(
		'postgres',
		"SELECT naptime_ms = 100 FROM estream.workers WHERE database = 'postgres'"),
	'ALTER SYSTEM RESET brought the naptime back to 100 ms');

$node->safe_psql(
	'postgres', q{
SELECT estream.create_topic('rt', 2, '{"segment.ms": 200, "retention.ms": 1000}');

-- one row per batch a consumer fetched
CREATE TABLE consumed (partition int, from_offset bigint, first_offset bigint,
					   last_offset bigint, n int);
CREATE TABLE stop_consumer (x int);
CREATE TABLE stop_producers (x int);

-- Read every partition of a topic, in order, until told to stop, jumping to
-- the log start over records that retention deleted first.
CREATE PROCEDURE consume_loop(t text, nparts int)
LANGUAGE plpgsql AS $$
DECLARE
	pos bigint[] := array_fill(0::bigint, ARRAY[nparts]);
	r record;
BEGIN
	WHILE NOT EXISTS (SELECT FROM stop_consumer) LOOP
		FOR p IN 0 .. nparts - 1 LOOP
			SELECT min(f."offset") AS first, max(f."offset") AS last, count(*) AS n INTO r
			  FROM estream.fetch(t, p, pos[p + 1], 500, 20, 'earliest') f;
			IF r.n > 0 THEN
				INSERT INTO consumed VALUES (p, pos[p + 1], r.first, r.last, r.n);
				pos[p + 1] := r.last + 1;
			END IF;
		END LOOP;
		COMMIT;
	END LOOP;
END
$$;
});
my $c0 = counters();

# The producers run until told to stop; then they produce nothing and are
# killed (killed while producing, they would leave aborted inserts, that
# is dead tuples).  Rate-limited, they are idle between transactions, so
# that their statistics are reported about every second.
my $scriptdir = PostgreSQL::Test::Utils::tempdir;
PostgreSQL::Test::Utils::append_to_file(
	"$scriptdir/produce.sql", q{
\set p random(0, 1)
SELECT estream.produce('rt', jsonb_build_object('pad', repeat('x', 200)), partition => :p)
WHERE NOT EXISTS (SELECT FROM stop_producers);
});
my ($cout, $cerr, $pout, $perr) = ('', '', '', '');
my $consumer = IPC::Run::start(
	[
		$node->installed_command('psql'), '-XAtq',
		'-v', 'ON_ERROR_STOP=1',
		'-d', $node->connstr('postgres'),
		'-c', "CALL consume_loop('rt', 2)"
	],
	'<', '/dev/null', '>', \$cout, '2>', \$cerr,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
my $pgbench;
{
	local $ENV{PGAPPNAME} = 'estream_producer';
	$pgbench = IPC::Run::start(
		[
			$node->installed_command('pgbench'), '-n',
			'-c', '2', '-R', '2000',
			'-T', $PostgreSQL::Test::Utils::timeout_default,
			'-f', "$scriptdir/produce.sql", '-h', $node->host,
			'-p', $node->port, 'postgres'
		],
		'<', '/dev/null', '>', \$pout, '2>', \$perr);
}

ok( $node->poll_query_until(
		'postgres',
		"SELECT min(log_start_offset) > 0 FROM estream.watermarks('rt')"),
	'retention moved the log start of both partitions');
($ret, $stdout, $stderr) = $node->psql(
	'postgres',
	"SELECT count(*) FROM estream.fetch('rt', 0, 0, auto_offset_reset => 'error')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like(
	$stderr,
	qr/ERROR:  22023: offset 0 is out of range for partition 0 of topic "rt"\nDETAIL:  The partition's log start offset is \d+: older records were deleted by retention\./,
	'fetching a deleted offset with auto_offset_reset => error fails with 22023');
# The log start may move meanwhile: the first record is between the log
# start before and after.  Producing goes on, so there are records.
my ($start_before, $first, $start_after) = split /\n/, $node->safe_psql(
	'postgres', q{
SELECT log_start_offset FROM estream.watermarks('rt') WHERE partition = 0;
SELECT min("offset") FROM estream.fetch('rt', 0, 0, 1, auto_offset_reset => 'earliest');
SELECT log_start_offset FROM estream.watermarks('rt') WHERE partition = 0;});
ok( $first =~ /^\d+$/ && $start_before <= $first && $first <= $start_after,
	"auto_offset_reset => earliest starts at the log start ($start_before <= $first <= $start_after)"
);

# Statistics of the producers reach the stats system about every second.
ok( $node->poll_query_until(
		'postgres',
		"SELECT sum(n_tup_ins) > 0 FROM pg_stat_user_tables WHERE relname LIKE 'log\\_%'"),
	'the inserts into the log show in pg_stat_user_tables');
is((split /\|/, log_table_stats('rt'))[0], '0', 'no dead tuples in the log while producing');
ok( $node->poll_query_until(
		'postgres',
		"SELECT segments_deleted - $c0->{deleted} >= 5 FROM estream.workers WHERE database = 'postgres'"
	),
	'the worker deleted segments while producing');
is((split /\|/, log_table_stats('rt'))[0], '0', 'still no dead tuples in the log');

# Statements that start after the stop see it, and produce nothing: once
# none that started before it is left, the producers can be killed.
$node->safe_psql('postgres', 'INSERT INTO stop_producers VALUES (1)');
my $stopped_at = $node->safe_psql('postgres', 'SELECT clock_timestamp()');
ok( $node->poll_query_until(
		'postgres', qq{
SELECT count(*) FROM pg_stat_activity
WHERE application_name = 'estream_producer' AND state <> 'idle' AND query_start < '$stopped_at'},
		'0'),
	'the producers stopped producing');
$pgbench->kill_kill;
my $produced = $node->safe_psql('postgres',
	"SELECT sum(next_offset) FROM estream.watermarks('rt')");
note "records produced: $produced";

ok( $node->poll_query_until(
		'postgres', q{
SELECT count(*) FROM (SELECT partition, max(last_offset) AS m FROM consumed GROUP BY partition) c
	JOIN estream.watermarks('rt') w USING (partition)
WHERE c.m = w.next_offset - 1},
		'2'),
	'the consumer read up to the last record of both partitions');
$node->safe_psql('postgres', 'INSERT INTO stop_consumer VALUES (1)');
ok($consumer->finish, 'the consumer ended without error');
is($cerr, '', 'the consumer reported nothing');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FILTER (WHERE last_offset - first_offset + 1 <> n OR first_offset < from_offset),
	   count(*) FILTER (WHERE from_offset <> coalesce(prev_last + 1, 0))
FROM (SELECT *, lag(last_offset) OVER (PARTITION BY partition ORDER BY first_offset) AS prev_last
	  FROM consumed) c}),
	'0|0',
	'the consumer got the records in order, without holes, each once');
note 'batches for which the consumer found the log start past its position: '
  . $node->safe_psql('postgres',
	'SELECT count(*) FROM consumed WHERE first_offset > from_offset');

# Once the load is over, every segment is deleted and dropped but the
# active one, which stays empty.
ok( $node->poll_query_until(
		'postgres',
		qq{
SELECT count(*) = 1 AND bool_and(state = 'active')
	   AND (SELECT sum(records) FROM estream.partition_stats WHERE topic = 'rt') = 0
FROM estream.segments WHERE topic = 'rt'}
	),
	'everything was deleted and dropped but the empty active segment');
my $rt_segment = $node->safe_psql('postgres',
	"SELECT segment FROM estream.segments WHERE topic = 'rt'");
my $c1 = counters();
is( join(',',
		$c1->{rolled} - $c0->{rolled},
		$c1->{deleted} - $c0->{deleted},
		$c1->{dropped} - $c0->{dropped},
		$c1->{errors} - $c0->{errors}),
	"$rt_segment,$rt_segment,$rt_segment,0",
	"the worker counted $rt_segment segments rolled, deleted and dropped, and no error");
my ($next0, $next1) = split /\n/, $node->safe_psql('postgres',
	"SELECT next_offset FROM estream.watermarks('rt') ORDER BY partition");
is($node->watermarks('rt'), "0:$next0:$next0:$next0,1:$next1:$next1:$next1",
	'the log starts at the next offset of each partition');
is((split /\|/, log_table_stats('rt'))[0], '0', 'no dead tuples in the log after the load');

($ret, $stdout, $stderr) = $node->psql(
	'postgres',
	"SELECT count(*) FROM estream.fetch('rt', 1, 0, auto_offset_reset => 'error')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like(
	$stderr,
	qr/ERROR:  22023: offset 0 is out of range for partition 1 of topic "rt"/,
	'fetching from 0 with auto_offset_reset => error still fails with 22023');
$node->safe_psql('postgres',
	q{SELECT estream.produce('rt', '{"v": "after"}', partition => 1)});
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(format('%s:%s', "offset", value->>'v'), ',') FROM estream.fetch('rt', 1, 0, auto_offset_reset => 'earliest')}
	),
	"$next1:after",
	'fetching from 0 with earliest starts at the log start');
# that record goes the same way, before the next test counts
ok( $node->poll_query_until(
		'postgres', qq{
SELECT count(*) = 1 AND bool_and(state = 'active') AND min(segment) > $rt_segment
	   AND (SELECT sum(records) FROM estream.partition_stats WHERE topic = 'rt') = 0
FROM estream.segments WHERE topic = 'rt'}),
	'the last record was deleted too');

#
# 7. Retention by size: rounds of 300 records, one segment each.
#
my $retention_bytes = 262144;
$node->safe_psql('postgres',
	qq{SELECT estream.create_topic('rs', 1, '{"segment.bytes": 65536, "retention.bytes": $retention_bytes, "retention.ms": -1}')}
);
$c0 = counters();
my $rounds = 8;
for my $round (0 .. $rounds - 1)
{
	$node->safe_psql('postgres',
		q{SELECT count(*) FROM estream.produce_batch('rs', ARRAY(SELECT jsonb_build_object('i', i, 'pad', repeat('y', 250)) FROM generate_series(1, 300) i))}
	);
	# the segment is larger than segment.bytes: the next run rolls it
	$node->poll_query_until('postgres',
		"SELECT max(segment) > $round FROM estream.segments WHERE topic = 'rs'")
	  or die "segment $round of rs was not rolled";
}
ok( $node->poll_query_until(
		'postgres', qq{
SELECT bool_and(state IN ('sealed', 'active'))
	   AND sum(size_bytes) - (array_agg(size_bytes ORDER BY segment))[1] < $retention_bytes
FROM estream.segments WHERE topic = 'rs'}),
	'retention deleted the oldest segments beyond retention.bytes, and they were dropped');
my ($rs_min, $rs_max, $rs_total) = split /\|/, $node->safe_psql('postgres',
	"SELECT min(segment), max(segment), sum(size_bytes) FROM estream.segments WHERE topic = 'rs'"
);
ok($rs_min > 0, "segments below $rs_min were deleted");
cmp_ok($rs_total, '>=', $retention_bytes,
	'what is left is at least retention.bytes');
is($rs_max, $rounds, "$rounds segments were rolled");
$c1 = counters();
is( join(',',
		$c1->{rolled} - $c0->{rolled},
		$c1->{deleted} - $c0->{deleted},
		$c1->{dropped} - $c0->{dropped},
		$c1->{errors} - $c0->{errors}),
	"$rounds,$rs_min,$rs_min,0",
	'the worker counted the segments rolled, deleted and dropped, and no error');
my $rs_start = 300 * $rs_min;
is($node->watermarks('rs'), "0:$rs_start:2400:2400",
	'the log starts at the first record of the oldest segment left');
is( $node->safe_psql(
		'postgres',
		q{SELECT min("offset") || ':' || max("offset") || ':' || count(*) FROM estream.fetch('rs', 0, 0, 10000, auto_offset_reset => 'earliest')}
	),
	"$rs_start:2399:" . (2400 - $rs_start),
	'the newest records are all there');
is((split /\|/, log_table_stats('rs'))[0], '0', 'no dead tuples in the log of rs');

#
# 8. Compaction.
#
$node->safe_psql('postgres',
	q{SELECT estream.create_topic('ct', 1, '{"cleanup.policy": "compact", "segment.ms": 100, "min.cleanable.dirty.ratio": 0.01, "delete.retention.ms": 3600000}')}
);
($ret, $stdout, $stderr) = $node->psql('postgres',
	q{SELECT estream.produce('ct', '{"v": 1}')},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like(
	$stderr,
	qr/ERROR:  22023: compacted topic "ct" does not accept records without a key/,
	'a compacted topic refuses a record without a key');
$c0 = counters();
# offsets 0 .. 6; k3 ends with a tombstone
$node->safe_psql(
	'postgres', q{
SELECT estream.produce('ct', '{"v": "k1-a"}', 'k1');
SELECT estream.produce('ct', '{"v": "k2-a"}', 'k2');
SELECT estream.produce('ct', '{"v": "k1-b"}', 'k1');
SELECT estream.produce('ct', '{"v": "k3-a"}', 'k3');
SELECT estream.produce('ct', '{"v": "k2-b"}', 'k2');
SELECT estream.produce('ct', NULL, 'k3');
SELECT estream.produce('ct', '{"v": "k1-c"}', 'k1');});

my $latest_sql = q{
SELECT string_agg(format('%s:%s:%s:%s:%s', partition, "offset", key, value->>'v', "timestamp"), ','
				  ORDER BY key)
FROM estream.latest('ct')};
my $records_sql = q{
SELECT string_agg(format('%s:%s:%s:%s', "offset", key, coalesce(value->>'v', 'null'), "timestamp"), ','
				  ORDER BY "offset")
FROM estream.fetch('ct', 0, 0)};
my $offsets_sql =
  q{SELECT string_agg("offset"::text, ',' ORDER BY "offset") FROM estream.fetch('ct', 0, 0)};
my $latest_before = $node->safe_psql('postgres', $latest_sql);
like($latest_before, qr/^0:6:k1:k1-c:[^,]+,0:4:k2:k2-b:[^,]+$/,
	'latest() before compaction: k1 and k2, not the deleted k3');
my %record_before = map { (split /:/)[0] => $_ } split /,/,
  $node->safe_psql('postgres', $records_sql);

ok($node->poll_query_until('postgres', $offsets_sql, '4,5,6'),
	'compaction removed the superseded records, the recent tombstone stays');
is(counters()->{compacted} - $c0->{compacted}, 4, 'the worker counted 4 records compacted');
is($node->safe_psql('postgres', $records_sql),
	join(',', @record_before{ 4, 5, 6 }),
	'the survivors kept their offsets, keys, values and timestamps');
is($node->safe_psql('postgres', $latest_sql),
	$latest_before, 'latest() is the same after compaction');
is($node->watermarks('ct'), '0:0:7:7', 'compaction does not move the log start');

$node->safe_psql('postgres',
	q{SELECT estream.alter_topic('ct', '{"delete.retention.ms": 0}')});
ok($node->poll_query_until('postgres', $offsets_sql, '4,6'),
	'once delete.retention.ms has passed, the tombstone is removed');
is(counters()->{compacted} - $c0->{compacted}, 5, 'the worker counted 5 records compacted');
is($node->safe_psql('postgres', $records_sql),
	join(',', @record_before{ 4, 6 }),
	'the latest records of k1 and k2 are left, unchanged');
is($node->safe_psql('postgres', $latest_sql),
	$latest_before, 'latest() is still the same');
is((split /\|/, log_table_stats('ct'))[0], '0', 'no dead tuples in the log of ct');

# Table statistics lag behind (they are flushed every run at most): look at
# the tables themselves too.
SKIP:
{
	skip 'pgstattuple is not installed', 1
	  unless $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_available_extensions WHERE name = 'pgstattuple'") eq '1';
	$node->safe_psql('postgres', 'CREATE EXTENSION pgstattuple');
	is( $node->safe_psql(
			'postgres', q{
SELECT count(*), sum((pgstattuple(relid)).dead_tuple_count)
FROM estream.segments WHERE topic IN ('rt', 'rs', 'ct')}),
		$node->safe_psql('postgres',
			"SELECT count(*) FROM estream.segments WHERE topic IN ('rt', 'rs', 'ct')") . '|0',
		'no dead tuple in any segment of the compacted and retained topics');
}
is(counters()->{errors} - $c0->{errors}, 0, 'the worker had no error compacting');

#
# 9. estream.transaction_timeout
#
$node->safe_psql('postgres', q{SELECT estream.create_topic('tt', 1)});
$node->alter_system('estream.transaction_timeout', '500ms');
is($node->safe_psql('postgres', 'SHOW estream.transaction_timeout'),
	'500ms', 'estream.transaction_timeout is 500ms');
$c0 = counters();

my ($sin, $sout, $serr) = ('', '', '');
my $session = IPC::Run::start(
	[
		$node->installed_command('psql'), '-XAtq',
		'-d', $node->connstr('postgres'), '-f', '-'
	],
	'<', \$sin, '>', \$sout, '2>', \$serr,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
$sin .= q{
SELECT pg_backend_pid();
BEGIN;
SELECT "offset" FROM estream.produce('tt', '{"v": "open"}');
\echo produced
};
$session->pump until $sout =~ /produced/;
my ($session_pid, $open_offset) = split /\n/, $sout;
is($open_offset, '0', 'the open transaction produced offset 0');
is( $node->safe_psql('postgres',
		q{SELECT "offset" FROM estream.produce('tt', '{"v": "committed"}')}),
	'1',
	'a record committed behind it got offset 1');

ok( $node->poll_query_until(
		'postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $session_pid", '0'),
	'the session idle in its producing transaction was terminated');
my $tt_log = $node->safe_psql('postgres', "SELECT 'log_' || topic_id FROM estream.topic WHERE name = 'tt'");
ok( $node->log_contains(
		qr/LOG:  terminating process $session_pid: its transaction has held back the stable offset of partition 0 of log "$tt_log" for longer than estream.transaction_timeout \(500 ms\)/
	),
	'the worker logged why it terminated the session');
cmp_ok(counters()->{terminated} - $c0->{terminated},
	'>=', 1, 'sessions_terminated counted it');
$sin .= "COMMIT;\n";
ok(!$session->finish, 'the session ended with an error');
like(
	$serr,
	qr/terminating connection due to administrator command/,
	'the next statement of the session failed: its connection was terminated');
is($node->watermarks('tt'), '0:0:2:2', 'the stable offset moved past the terminated transaction');
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(format('%s:%s', "offset", value->>'v'), ',') FROM estream.fetch('tt', 0, 0)}
	),
	'1:committed',
	'the record of the terminated transaction never became visible');
$node->alter_system('estream.transaction_timeout', undef);
is($node->safe_psql('postgres', 'SHOW estream.transaction_timeout'),
	'0', 'estream.transaction_timeout is off again');

is(worker_row('postgres', "errors || ':' || coalesce(last_error, '')"),
	'0:', 'the worker of postgres had no error');

# The worker has persisted offsets, and added and removed segments, for
# many seconds: its table statistics should show, for autovacuum too.
ok( $node->poll_query_until(
		'postgres', q{
SELECT (SELECT n_tup_upd > 0 FROM pg_stat_user_tables WHERE relid = 'estream.partition'::regclass)
   AND (SELECT n_tup_del > 0 FROM pg_stat_user_tables WHERE relid = 'estream.segment'::regclass)}),
	'the updates and deletes of the worker show in pg_stat_user_tables');

$node->stop;

done_testing();
