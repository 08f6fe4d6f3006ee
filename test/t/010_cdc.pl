
# Copyright (c) 2026, estream developers

# Change data capture (estream.capture) end to end, with the database
# worker doing the decoding:
#
# 1. Small cases, exact events: a partition is captured as its root (one
#    topic for every partition); REPLICA IDENTITY FULL gives before images,
#    the default identity gives the key only; ALTER TABLE ADD/DROP COLUMN is
#    reflected in the events written after it; an idle captured table does
#    not pin WAL (the slot's confirmed_flush_lsn moves when only other
#    tables change); uncapturing the last table drops the slot and origin.
# 2. Exactly-once across crashes: a pgbench workload of inserts, updates,
#    deletes and rolled-back transactions on a captured table, recording
#    each committed change in a table that is not captured ("truth", in the
#    same transaction), while the server is stopped with an immediate
#    shutdown twice, a pgbench backend is SIGKILLed (crash restart), and the
#    estream worker itself is SIGKILLed (crash restart).  At the end the
#    topic holds, per key, exactly the committed changes in commit order:
#    the initial copy ('r') of the rows that existed, then one event per
#    committed change; nothing of a rolled-back transaction; and the state
#    rebuilt from the topic equals the table.
# 3. The initial copy under concurrent writes: a table is captured while
#    updates run; every row is in the copy or later events exactly once:
#    the per-row version counter seen in the topic goes up by exactly one
#    from event to event, and the state rebuilt equals the table.
# 4. One transaction of 1M rows with logical_decoding_work_mem = 64kB:
#    it spills to disk, every row gives exactly one event, and the worker's
#    private memory stays bounded.

use strict;
use warnings;
use Time::HiRes qw(usleep);

use IPC::Run;
use EstreamNode;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = EstreamNode->create('cdc',
	cdc => 1,
	conf => "estream.worker_naptime = 100ms\n" . "restart_after_crash = on\n");

$node->safe_psql('postgres', 'CREATE EXTENSION estream');
my $slot = $node->slot_name('postgres');

# op:after:before of every event of a topic, in offset order (one partition)
sub events
{
	my ($topic, $cond) = @_;
	my $log = $node->log_of($topic);
	$cond //= 'true';
	return $node->safe_psql(
		'postgres', qq{
SELECT string_agg(format('%s:%s:%s', value->>'op', value->'after', value->'before'), E'\n'
				  ORDER BY partition, "offset")
FROM $log WHERE $cond});
}

#
# 1. Small cases.
#

$node->safe_psql(
	'postgres', q{
CREATE TABLE p (id int PRIMARY KEY, t text) PARTITION BY RANGE (id);
CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (100);
CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (100) TO (200);
INSERT INTO p VALUES (1, 'one'), (101, 'hundred and one');
CREATE TABLE full_t (id int PRIMARY KEY, a int, b text);
ALTER TABLE full_t REPLICA IDENTITY FULL;
INSERT INTO full_t VALUES (1, 10, 'x');
CREATE TABLE dflt (id int PRIMARY KEY, a int);
INSERT INTO dflt VALUES (1, 10);
CREATE TABLE idle_t (id int PRIMARY KEY);
CREATE TABLE other (id int);
});

my ($ret, $out, $err) = $node->psql('postgres', "SELECT estream.capture('p2')");
is($out, 'postgres.public.p', 'capturing a partition captures its root, topic named after it');
like($err, qr/NOTICE:  capturing partitioned table "(public\.)?p", the root of "(public\.)?p2"/,
	'with a notice');
is( $node->safe_psql(
		'postgres', "SELECT estream.capture('full_t') || ',' || estream.capture('dflt') || ',' || estream.capture('idle_t')"),
	'postgres.public.full_t,postgres.public.dflt,postgres.public.idle_t',
	'three more captures');
is($node->safe_psql('postgres', 'SELECT string_agg(source::text, \',\' ORDER BY source::text) FROM estream.captures'),
	'dflt,full_t,idle_t,p', 'estream.captures lists the roots');
$node->wait_streaming($_) for qw(p full_t dflt idle_t);

$node->safe_psql(
	'postgres', q{
INSERT INTO p VALUES (2, 'two'), (102, 'hundred and two');
UPDATE p SET t = 'ONE' WHERE id = 1;
DELETE FROM p WHERE id = 101;
UPDATE full_t SET a = 11;
UPDATE dflt SET a = 11;
DELETE FROM full_t;
DELETE FROM dflt;
});
$node->wait_caught_up('small cases');

is( events('postgres.public.p'),
	qq(r:{"t": "one", "id": 1}:null
r:{"t": "hundred and one", "id": 101}:null
c:{"t": "two", "id": 2}:null
c:{"t": "hundred and two", "id": 102}:null
u:{"t": "ONE", "id": 1}:null
d:null:{"t": null, "id": 101}),
	'partitioned table: copy and changes of every partition in one topic (a column named t, like the alias of the copy query)');
is( $node->safe_psql(
		'postgres', 'SELECT string_agg(DISTINCT value->\'source\'->>\'table\', \',\') FROM ' . $node->log_of('postgres.public.p')),
	'p', 'source.table names the root');
is( events('postgres.public.full_t'),
	qq(r:{"a": 10, "b": "x", "id": 1}:null
u:{"a": 11, "b": "x", "id": 1}:{"a": 10, "b": "x", "id": 1}
d:null:{"a": 11, "b": "x", "id": 1}),
	'REPLICA IDENTITY FULL: before images of updates and deletes');
is( events('postgres.public.dflt'),
	qq(r:{"a": 10, "id": 1}:null
u:{"a": 11, "id": 1}:null
d:null:{"a": null, "id": 1}),
	'default replica identity: no before image of an update, the key of a delete');

# ADD COLUMN / DROP COLUMN
$node->safe_psql(
	'postgres', q{
INSERT INTO dflt VALUES (2, 20);
ALTER TABLE dflt ADD COLUMN c text DEFAULT 'new';
INSERT INTO dflt VALUES (3, 30, 'three');
UPDATE dflt SET a = 21 WHERE id = 2;
ALTER TABLE dflt DROP COLUMN a;
INSERT INTO dflt VALUES (4, 'four');
UPDATE dflt SET c = 'TWO' WHERE id = 2;
});
$node->wait_caught_up('ALTER TABLE');
is( events('postgres.public.dflt', q{value->>'op' <> 'r' AND (value->'after'->>'id')::int >= 2}),
	qq(c:{"a": 20, "id": 2}:null
c:{"a": 30, "c": "three", "id": 3}:null
u:{"a": 21, "c": "new", "id": 2}:null
c:{"c": "four", "id": 4}:null
u:{"c": "TWO", "id": 2}:null),
	'ALTER TABLE ADD/DROP COLUMN: later events have the new columns');

# An idle captured table does not pin WAL: only an uncaptured table
# changes, and the slot is confirmed past it.
my $lsn0 = $node->safe_psql('postgres',
	"SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '$slot'");
$node->safe_psql('postgres',
	'INSERT INTO other SELECT generate_series(1, 10000); SELECT pg_switch_wal()');
my $lsn1 = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
ok( $node->poll_query_until(
		'postgres', qq{
SELECT confirmed_flush_lsn >= '$lsn1' AND restart_lsn > '$lsn0'
FROM pg_replication_slots WHERE slot_name = '$slot'}),
	'idle captures: confirmed_flush_lsn and restart_lsn move with the WAL of other tables');
is($node->safe_psql('postgres', 'SELECT count(*) FROM ' . $node->log_of('postgres.public.idle_t')),
	'0', 'no event for the idle table');

# Uncapturing the last table drops the slot and the origin; the topics stay.
$node->safe_psql('postgres',
	"SELECT estream.uncapture('p1'), estream.uncapture('full_t'), estream.uncapture('dflt')");
is( $node->safe_psql(
		'postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'1', 'slot kept while a table is captured');
$node->safe_psql('postgres', "SELECT estream.uncapture('idle_t')");
ok( $node->poll_query_until(
		'postgres', qq{
SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot')
	 + (SELECT count(*) FROM pg_replication_origin WHERE roname = '$slot')},
		'0'),
	'uncapturing the last table drops the slot and the origin');
is( $node->safe_psql(
		'postgres', "SELECT count(*) FROM estream.topics WHERE topic LIKE 'postgres.public.%'"),
	'4', 'the topics stay');


#
# 2. Exactly-once across crashes.
#

$node->safe_psql(
	'postgres', q{
CREATE TABLE src (id int PRIMARY KEY, v int NOT NULL, batch int NOT NULL);
CREATE TABLE truth (seq bigserial PRIMARY KEY, id int, v int, op text);
INSERT INTO src SELECT i, 0, 0 FROM generate_series(1, 200) i;
SELECT estream.capture('src', options => '{"partitions": 3}');
});
$node->wait_streaming('src');
my $src_log = $node->log_of('postgres.public.src');

# Each committed change of src is recorded in truth by the same
# transaction, after the row lock is taken: per key, truth.seq is in commit
# order.  Rolled-back transactions mark their rows batch = -1.  Keys are
# drawn from 1..400, so rows are deleted and inserted again.
my $scriptdir = PostgreSQL::Test::Utils::tempdir;
my %scripts = (
	'ins@3' => q{
\set id random(1, 400)
WITH c AS (INSERT INTO src VALUES (:id, 0, :client_id) ON CONFLICT DO NOTHING RETURNING id, v)
INSERT INTO truth (id, v, op) SELECT id, v, 'c' FROM c;
},
	'upd@5' => q{
\set id random(1, 400)
WITH u AS (UPDATE src SET v = v + 1, batch = :client_id WHERE id = :id RETURNING id, v)
INSERT INTO truth (id, v, op) SELECT id, v, 'u' FROM u;
},
	'del@1' => q{
\set id random(1, 400)
WITH d AS (DELETE FROM src WHERE id = :id RETURNING id, v)
INSERT INTO truth (id, v, op) SELECT id, NULL, 'd' FROM d;
},
	'multi@2' => q{
\set id random(1, 399)
BEGIN;
WITH u AS (UPDATE src SET v = v + 1, batch = :client_id WHERE id IN (:id, :id + 1) RETURNING id, v)
INSERT INTO truth (id, v, op) SELECT id, v, 'u' FROM u;
WITH c AS (INSERT INTO src VALUES (401 - :id, 0, :client_id) ON CONFLICT DO NOTHING RETURNING id, v)
INSERT INTO truth (id, v, op) SELECT id, v, 'c' FROM c;
COMMIT;
},
	'rollback@2' => q{
\set id random(1, 400)
BEGIN;
UPDATE src SET v = v + 1, batch = -1 WHERE id = :id;
INSERT INTO src VALUES (1000 + :id, 0, -1) ON CONFLICT DO NOTHING;
DELETE FROM src WHERE id = :id + 1;
INSERT INTO truth (id, v, op) VALUES (-1, -1, 'rolled back');
ROLLBACK;
},);
my @pgbench_files;
for my $name (sort keys %scripts)
{
	my ($base, $weight) = split /@/, $name;
	PostgreSQL::Test::Utils::append_to_file("$scriptdir/$base.sql", $scripts{$name});
	push @pgbench_files, '-f', "$scriptdir/$base.sql\@$weight";
}

# pgbench until the crash disconnects it (or 60 s)
sub start_load
{
	my ($files, $out) = @_;
	local $ENV{PGAPPNAME} = 'estream_pgbench';
	return IPC::Run::start(
		[
			$node->installed_command('pgbench'), '-n', '-c', '3', '-T', '60',
			'--max-tries', '10', @$files, '-h', $node->host, '-p', $node->port,
			'postgres'
		],
		'<', '/dev/null', '>', $out, '2>', $out,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
}

# Run the load until truth has grown by $n committed changes and the topic
# by some events, then crash the server the way $how says.
my $pgbench_out = '';
for my $how ('immediate', 'kill backend', 'immediate', 'kill worker', 'none')
{
	my $truth0 = $node->safe_psql('postgres', 'SELECT count(*) FROM truth');
	my $events0 = $node->safe_psql('postgres', "SELECT count(*) FROM $src_log");
	my $h = start_load(\@pgbench_files, \$pgbench_out);
	ok( $node->poll_query_until(
			'postgres', qq{
SELECT (SELECT count(*) FROM truth) >= $truth0 + 1500
   AND (SELECT count(*) FROM $src_log) >= $events0 + 500}),
		"load runs and is captured before: $how");
	if ($how eq 'immediate')
	{
		$node->stop('immediate');
		$h->finish;
		$node->start;
	}
	elsif ($how eq 'none')
	{
		$h->kill_kill;
	}
	else
	{
		my $type = $how eq 'kill worker' ? 'estream worker' : 'client backend';
		my $app = $how eq 'kill worker' ? '' : 'estream_pgbench';
		my $pid = $node->safe_psql(
			'postgres', qq{
SELECT pid FROM pg_stat_activity
WHERE backend_type = '$type' AND ('$app' = '' OR application_name = '$app')
LIMIT 1});
		die "no process to kill for $how" unless $pid =~ /^\d+$/;
		my $log_offset = -s $node->logfile;
		kill 'KILL', $pid;
		ok( $node->wait_for_log(
				qr/all server processes terminated; reinitializing/, $log_offset),
			"crash restart: $how");
		$h->finish;
		ok($node->poll_query_until('postgres', 'SELECT 1', '1'),
			"server accepts connections again: $how");
	}
}
note "pgbench output:\n$pgbench_out";
$node->wait_caught_up('after the crashes');

my $committed = $node->safe_psql('postgres', 'SELECT count(*) FROM truth');
note "committed changes: $committed";

# Per key: the expected history (the copy, then truth in seq order) and the
# one in the topic (in offset order: one key, one partition).
my $histories = qq{
WITH expected AS (
	SELECT id, string_agg(op || ':' || coalesce(v::text, ''), ' ' ORDER BY seq) AS h
	FROM (SELECT -1 AS seq, id, 0 AS v, 'r' AS op FROM generate_series(1, 200) id
		  UNION ALL SELECT seq, id, v, op FROM truth) x
	GROUP BY id),
got AS (
	SELECT coalesce(value->'after'->>'id', value->'before'->>'id')::int AS id,
		   string_agg((value->>'op') || ':' || coalesce(value->'after'->>'v', ''), ' '
					  ORDER BY "offset") AS h,
		   count(DISTINCT partition) AS partitions
	FROM $src_log GROUP BY 1)
};
is( $node->safe_psql(
		'postgres', qq{$histories
SELECT count(*) FROM expected e FULL JOIN got g USING (id)
WHERE e.h IS DISTINCT FROM g.h OR g.partitions <> 1}),
	'0', 'every key: exactly its committed changes, in commit order, in one partition');
note $node->safe_psql(
	'postgres', qq{$histories
SELECT format(E'id %s\\n expected: %s\\n got:      %s', id, e.h, g.h)
FROM expected e FULL JOIN got g USING (id)
WHERE e.h IS DISTINCT FROM g.h OR g.partitions <> 1 ORDER BY id LIMIT 5});
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) - $committed - 200 FROM $src_log"),
	'0', 'as many events as copied rows and committed changes');
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FROM $src_log
WHERE (value->'after'->>'batch')::int = -1 OR (value->'after'->>'id')::int > 1000}),
	'0', 'nothing of a rolled-back transaction');
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FROM (
	SELECT DISTINCT ON (id) id, (value->>'op') = 'd' AS deleted, value->'after' AS row
	FROM (SELECT coalesce(value->'after'->>'id', value->'before'->>'id')::int AS id,
				 value, "offset" FROM $src_log) l
	ORDER BY id, "offset" DESC) t
FULL JOIN (SELECT id, to_jsonb(s) AS row FROM src s) s USING (id)
WHERE t.row IS DISTINCT FROM s.row AND NOT (t.deleted AND s.row IS NULL)}),
	'0', 'the state rebuilt from the topic equals the table');
ok( $node->safe_psql(
		'postgres',
		"SELECT count(DISTINCT op) = 3 AND count(*) > 5000 FROM truth"),
	'the load inserted, updated and deleted');


#
# 3. The initial copy under concurrent writes (src is still captured, so
#    the slot is running when src2 is captured).
#

$node->safe_psql(
	'postgres', q{
CREATE TABLE src2 (id int PRIMARY KEY, v int NOT NULL);
INSERT INTO src2 SELECT i, 0 FROM generate_series(1, 20000) i;
});
PostgreSQL::Test::Utils::append_to_file(
	"$scriptdir/src2.sql", q{
\set id random(1, 21000)
INSERT INTO src2 VALUES (:id, 0) ON CONFLICT (id) DO UPDATE SET v = src2.v + 1;
\set id random(1, 20)
UPDATE src2 SET v = v + 1 WHERE id = :id;
});
my $writer = start_load([ '-f', "$scriptdir/src2.sql" ], \$pgbench_out);
ok( $node->poll_query_until(
		'postgres', 'SELECT sum(v) > 500 FROM src2'),
	'the writers run');
$node->safe_psql('postgres', "SELECT estream.capture('src2', options => '{\"partitions\": 2}')");
$node->wait_streaming('src2');
my $src2_log = $node->log_of('postgres.public.src2');
ok( $node->poll_query_until(
		'postgres', "SELECT count(*) > 500 FROM $src2_log WHERE value->>'op' <> 'r'"),
	'changes after the copy are captured');
$writer->kill_kill;
$node->wait_caught_up('src2');

is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FILTER (WHERE value->>'op' = 'r' AND (value->'after'->>'v')::int > 0) > 0
   AND count(*) FILTER (WHERE value->>'op' = 'r') = (SELECT snapshot_rows FROM estream.captures WHERE source = 'src2'::regclass)
FROM $src2_log}),
	't', 'the copy has rows updated before it, and as many as snapshot_rows');
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FROM (
	SELECT (value->'after'->>'v')::int - lag((value->'after'->>'v')::int)
			OVER (PARTITION BY value->'after'->>'id' ORDER BY "offset") AS step
	FROM $src2_log) s
WHERE step <> 1}),
	'0', 'per row, each event is the next version: no change both copied and streamed, none lost');
note 'src2 version steps (step, events): ' . $node->safe_psql(
	'postgres', qq{
SELECT string_agg(format('%s:%s', step, n), ' ' ORDER BY step) FROM (
	SELECT step, count(*) AS n FROM (
		SELECT (value->'after'->>'v')::int - lag((value->'after'->>'v')::int)
				OVER (PARTITION BY value->'after'->>'id' ORDER BY "offset") AS step
		FROM $src2_log) s GROUP BY step) t});
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FROM (
	SELECT DISTINCT ON (value->'after'->>'id') value->'after' AS row
	FROM $src2_log ORDER BY value->'after'->>'id', "offset" DESC) t
FULL JOIN (SELECT to_jsonb(s) AS row FROM src2 s) s USING (row)
WHERE t.row IS NULL OR s.row IS NULL}),
	'0', 'the state rebuilt from the topic (copy and changes) equals the table');

#
# 4. A large transaction (1M rows) with logical_decoding_work_mem = 64kB.
#

$node->safe_psql(
	'postgres', q{
ALTER SYSTEM SET logical_decoding_work_mem = '64kB';
SELECT pg_reload_conf();
CREATE TABLE big (id int PRIMARY KEY, note text);
SELECT estream.capture('big', options => '{"snapshot": false}');
});
$node->wait_streaming('big');
my $nbig = 1000000;
$node->safe_psql('postgres',
	"INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, $nbig) g");
my $big_lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');

# the worker's private memory while it decodes, spills and writes
my $worker_pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'estream worker'");
my $max_anon_kb = 0;
my $caught_up = 0;
for (my $i = 0; $i < 10 * $PostgreSQL::Test::Utils::timeout_default; $i++)
{
	if (open(my $fh, '<', "/proc/$worker_pid/status"))
	{
		while (<$fh>)
		{
			$max_anon_kb = $1 if /^RssAnon:\s+(\d+)/ && $1 > $max_anon_kb;
		}
		close($fh);
	}
	$caught_up = $node->safe_psql('postgres',
		"SELECT confirmed_flush_lsn >= '$big_lsn' FROM pg_replication_slots WHERE slot_name = '$slot'");
	last if $caught_up eq 't';
	usleep(100_000);
}
is($caught_up, 't', 'capture caught up: large transaction');
note "worker private memory at most $max_anon_kb kB";
SKIP:
{
	skip 'no /proc', 1 if !-e "/proc/$worker_pid/status" && $max_anon_kb == 0;
	cmp_ok($max_anon_kb, '<', 256 * 1024,
		'the worker captured it in bounded memory (private RSS below 256 MB)');
}
my $big_log = $node->log_of('postgres.public.big');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*), count(DISTINCT value->'after'->>'id'), min((value->'after'->>'id')::int), max((value->'after'->>'id')::int) FROM $big_log"),
	"$nbig|$nbig|1|$nbig",
	'one event per row of the large transaction');
ok( $node->safe_psql(
		'postgres',
		"SELECT spill_txns > 0 FROM pg_stat_replication_slots WHERE slot_name = '$slot'"),
	'it was spilled to disk');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM estream.captures WHERE last_error IS NOT NULL"),
	'0', 'no capture error');

done_testing();
