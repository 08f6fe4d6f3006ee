
# Copyright (c) 2026, estream developers

# Change data capture: one capture's failure stays its own (issue 12).
# Each finding of the issue is a section; before 1.4's failure policies
# every one of them stopped every capture of the database and kept WAL.
#
# 1. Two captured tables A and B.  A change of A that cannot be written
#    (its topic's max.message.bytes is too small), in a transaction that
#    also changes B: B keeps streaming, the changes of B in that
#    transaction included, and B's position keeps advancing; A is
#    "stopped" with the error, the change's LSN and transaction, since
#    when, and the WAL it keeps; its topic has exactly the changes before
#    the failing transaction; no capture step fails.  The slot stays
#    confirmed at A's position.  Resumed while the cause is still there, A
#    stops again at the same change.  Once max.message.bytes is raised and
#    A resumed, A gets every change since the failure exactly once, in
#    commit order (compared with a truth table written in the same
#    transactions), and the slot moves on.
# 2. on_error "skip": the failing change is in estream.capture_dead_letter
#    (and the view) with its LSN, transaction, key, event and error; the
#    other changes of its transaction and the later ones flow; the capture
#    keeps streaming.
# 3. A change that cannot be rendered (a json value nested deeper than the
#    worker's max_stack_depth allows to render, inserted by a session with
#    a larger one): with "stop" its capture stops at it and, after the
#    worker's max_stack_depth is raised and the capture resumed, gets it
#    and the later changes once, in order; with "skip" it is a dead letter
#    without event; the other captures stream on meanwhile.
# 4. A crash (immediate stop) while A is stopped and B streams under a
#    concurrent load: after the restart B holds exactly its committed
#    changes, per key in commit order; A, resumed after the fix, too.
# 5. Initial copies: one whose owner's row security policy raises stops
#    that capture only (the others stream), and after the policy is fixed
#    and the capture resumed, the copy is made.  One whose policy sleeps
#    (15 s per row) is cut by estream.capture_copy_timeout (2 s here), and
#    maintenance runs (estream.workers.runs advances) long before the sleep
#    would have ended.  One that waits for a lock (its owner's policy
#    waits for an advisory lock another session holds) is cut by
#    estream.capture_copy_lock_timeout; resumed once the lock is gone, it
#    is made.
# 6. Default topic names: public."a b", public.a_b and public."a.b" get
#    three topics (the name escapes what Kafka's names cannot hold, and
#    gives back the table); a table whose default name is the topic another
#    table was captured into by name is refused (42710).

use strict;
use warnings;
use Time::HiRes qw(time);

use IPC::Run;
use EstreamNode;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = EstreamNode->create('cdc_isolation',
	cdc => 1,
	conf => "estream.worker_naptime = 100ms\n" . "restart_after_crash = on\n");

$node->safe_psql('postgres', 'CREATE EXTENSION estream');
my $slot = $node->slot_name('postgres');

sub sql
{
	return $node->safe_psql('postgres', $_[0]);
}

sub wait_state
{
	my ($table, $state) = @_;
	ok( $node->poll_query_until(
			'postgres',
			"SELECT state FROM estream.captures WHERE source = '$table'::regclass", $state),
		"$table: $state");
}

# Wait until the capture of $table has written everything committed so far
# (its own position, whatever the others do).
sub wait_position
{
	my ($table, $what) = @_;
	my $lsn = sql('SELECT pg_current_wal_lsn()');
	ok( $node->poll_query_until(
			'postgres', qq{
SELECT progress_lsn >= '$lsn' FROM estream.captures WHERE source = '$table'::regclass}),
		"$table caught up: $what");
}

sub worker_errors
{
	return sql("SELECT errors FROM estream.workers WHERE database = 'postgres'");
}

# The changes of a table as the truth table has them, in commit order
# (one writer), and as its topic has them, in offset order (one partition):
# op:id:md5(v) per change.
sub expected
{
	my ($tbl, $cond) = @_;
	$cond //= 'true';
	return sql(qq{
SELECT string_agg(op || ':' || id || ':' || coalesce(md5(v), ''), ' ' ORDER BY seq)
FROM truth WHERE tbl = '$tbl' AND $cond});
}

sub got
{
	my ($topic, $cond) = @_;
	my $log = $node->log_of($topic);
	$cond //= 'true';
	return sql(qq{
SELECT string_agg(e, ' ' ORDER BY "offset") FROM (
	SELECT "offset", (value->>'op') || ':' || coalesce(value->'after'->>'id', value->'before'->>'id')
					 || ':' || coalesce(md5(value->'after'->>'v'), '') AS e,
		   coalesce(value->'after'->>'id', value->'before'->>'id')::int AS id
	FROM $log) x WHERE $cond});
}

# One source transaction: changes of tables (a table name, c/u/d, id, v),
# each recorded in truth in the same transaction.
sub txn
{
	my @sql = ('BEGIN;');
	for my $c (@_)
	{
		my ($tbl, $op, $id, $v) = @$c;
		my $val = defined $v ? "$v" : 'NULL';
		if ($op eq 'c')
		{
			push @sql, "INSERT INTO $tbl VALUES ($id, $val);";
		}
		elsif ($op eq 'u')
		{
			push @sql, "UPDATE $tbl SET v = $val WHERE id = $id;";
		}
		else
		{
			push @sql, "DELETE FROM $tbl WHERE id = $id;";
			$val = 'NULL';
		}
		push @sql, "INSERT INTO truth (tbl, id, v, op) VALUES ('$tbl', $id, $val, '$op');";
	}
	push @sql, 'COMMIT;';
	sql(join("\n", @sql));
}

sql(q{
CREATE TABLE truth (seq bigserial PRIMARY KEY, tbl text, id int, v text, op text,
					xid bigint DEFAULT pg_current_xact_id()::text::bigint);
CREATE TABLE a (id int PRIMARY KEY, v text);
CREATE TABLE b (id int PRIMARY KEY, v text);
SELECT estream.capture('a', 'ta');
SELECT estream.capture('b', 'tb');
SELECT estream.alter_topic('ta', '{"max.message.bytes": 2000}');
});
wait_state('a', 'streaming');
wait_state('b', 'streaming');

#
# 1. A change of A that cannot be written: A stops, B streams on.
#
my $errors0 = worker_errors();
txn([ 'a', 'c', 1, "'one'" ], [ 'b', 'c', 1, "'one'" ]);
txn([ 'a', 'c', 2, "repeat('x', 3000)" ], [ 'b', 'c', 2, "'two'" ]);
txn([ 'b', 'c', 3, "'three'" ]);
txn([ 'a', 'c', 3, "'three'" ], [ 'a', 'u', 1, "'ONE'" ]);
txn([ 'b', 'u', 1, "'ONE'" ], [ 'a', 'd', 3 ]);
wait_state('a', 'stopped');
wait_position('b', 'while A is stopped');
is(got('tb'), expected('b'),
	'B: every change, those of the failing transaction included');
is(got('ta'), expected('a', 'seq < (SELECT min(seq) FROM truth WHERE tbl = \'a\' AND id = 2)'),
	'A: exactly the changes before the failing transaction');
my $failing_xid = sql("SELECT xid FROM truth WHERE tbl = 'a' AND id = 2");
like( sql(qq{
SELECT stop_error || ';' || stop_sqlstate || ';' || (stop_xid = $failing_xid) || ';'
	   || (stop_lsn IS NOT NULL) || ';' || (stopped_at IS NOT NULL) || ';' || (retained_bytes > 0)
FROM estream.captures WHERE source = 'a'::regclass}),
	qr/^record is too large for topic "ta";54000;true;true;true;true$/,
	'estream.captures: A stopped, with the error, its SQLSTATE, the change\'s LSN and transaction, since when, the WAL it keeps');
is(worker_errors(), $errors0, 'no capture step failed');
is( sql(q{
SELECT count(*) FROM estream.captures WHERE last_error IS NOT NULL}),
	'0', 'no database-wide capture error');

# B's position advances while A is stopped; the slot stays at A's
my $b_pos = sql("SELECT progress_lsn FROM estream.captures WHERE source = 'b'::regclass");
txn([ 'b', 'c', 4, "'four'" ]);
txn([ 'a', 'c', 4, "'four'" ]);
wait_position('b', 'B moves on');
ok( sql(qq{
SELECT c.progress_lsn > '$b_pos' AND s.confirmed_flush_lsn = a.progress_lsn
   AND a.progress_lsn < c.progress_lsn AND a.state = 'stopped'
FROM estream.captures c, estream.captures a, pg_replication_slots s
WHERE c.source = 'b'::regclass AND a.source = 'a'::regclass AND s.slot_name = '$slot'}) eq 't',
	'B\'s position advances; the slot is held at A\'s position');
is(got('tb'), expected('b'), 'B: every change');

# resumed with the cause still there: stopped again, at the same change
my $stop_lsn = sql("SELECT stop_lsn FROM estream.captures WHERE source = 'a'::regclass");
sql("SELECT estream.resume_capture('a')");
wait_state('a', 'stopped');
is(sql("SELECT stop_lsn FROM estream.captures WHERE source = 'a'::regclass"),
	$stop_lsn, 'resumed with the cause still there: stopped again at the same change');
is(got('ta'), expected('a', 'seq < (SELECT min(seq) FROM truth WHERE tbl = \'a\' AND id = 2)'),
	'A: still nothing after the failing transaction');

# fixed and resumed: every change since, once, in order
sql(q{SELECT estream.alter_topic('ta', '{"max.message.bytes": 1048576}')});
sql("SELECT estream.resume_capture('a')");
txn([ 'a', 'u', 4, "'FOUR'" ]);
wait_state('a', 'streaming');
wait_position('a', 'resumed');
is(got('ta'), expected('a'), 'A resumed: every change since the failure, exactly once, in order');
is(got('tb'), expected('b'), 'B: every change, once');
my $lsn = sql('SELECT pg_current_wal_lsn()');
ok( $node->poll_query_until(
		'postgres',
		"SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots WHERE slot_name = '$slot'"),
	'the slot moves on once A is resumed');
is( sql(q{
SELECT string_agg(coalesce(stop_error, '-') || ':' || coalesce(retained_bytes::text, '-'), ',')
FROM estream.captures WHERE source = 'a'::regclass}),
	'-:-', 'no error, no WAL kept');
is(worker_errors(), $errors0, 'no capture step failed');

#
# 2. on_error "skip": the failing change is a dead letter.
#
sql(q{
CREATE TABLE c (id int PRIMARY KEY, v text);
SELECT estream.capture('c', 'tc', '{"on_error": "skip"}');
SELECT estream.alter_topic('tc', '{"max.message.bytes": 2000}');
});
wait_state('c', 'streaming');
txn([ 'c', 'c', 1, "'one'" ], [ 'c', 'c', 2, "repeat('y', 3000)" ], [ 'c', 'c', 3, "'three'" ]);
txn([ 'c', 'u', 1, "'ONE'" ]);
wait_position('c', 'skip');
is(got('tc'), expected('c', 'id <> 2'),
	'skip: the other changes of the transaction and the later ones are written, in order');
my $dead_xid = sql("SELECT xid FROM truth WHERE tbl = 'c' AND id = 2");
is( sql(qq{
SELECT source || ';' || topic || ';' || (lsn IS NOT NULL) || ';' || (xid = $dead_xid) || ';' || key || ';'
	   || (event->'after'->>'id') || ';' || length(event->'after'->>'v') || ';' || error || ';' || sqlstate
FROM estream.capture_dead_letters}),
	qq(c;tc;true;true;{"id": 2};2;3000;record is too large for topic "tc";54000),
	'the dead letter: table, topic, LSN, transaction, key, event, error');
is( sql(q{
SELECT state || ';' || dead_letters FROM estream.captures WHERE source = 'c'::regclass}),
	'streaming;1', 'the capture streams on, with one dead letter');
is(worker_errors(), $errors0, 'no capture step failed');

#
# 3. A change that cannot be rendered.
#
my ($ret, $out, $err) = $node->psql('postgres', "SET max_stack_depth = '7MB'");
SKIP:
{
	skip "max_stack_depth cannot be 7MB here: $err", 12 if $ret != 0;

	sql(q{
CREATE TABLE js (id int PRIMARY KEY, v json);
CREATE TABLE jd (id int PRIMARY KEY, v json);
SELECT estream.capture('js', 'tjs');
SELECT estream.capture('jd', 'tjd', '{"on_error": "skip"}');
});
	wait_state('js', 'streaming');
	wait_state('jd', 'streaming');
	# json_in takes 25,000 levels with 7MB of stack; to_jsonb() does not
	# with the worker's 2MB
	my $deep = "(repeat('[', 25000) || repeat(']', 25000))::json";
	txn([ 'js', 'c', 1, "'[1]'" ], [ 'jd', 'c', 1, "'[1]'" ]);
	sql(qq{
SET max_stack_depth = '7MB';
BEGIN;
INSERT INTO js VALUES (2, $deep);
INSERT INTO truth (tbl, id, v, op) VALUES ('js', 2, $deep, 'c');
INSERT INTO jd VALUES (2, $deep);
INSERT INTO truth (tbl, id, v, op) VALUES ('jd', 2, $deep, 'c');
COMMIT;
});
	txn([ 'js', 'c', 3, "'[3]'" ], [ 'jd', 'c', 3, "'[3]'" ], [ 'b', 'c', 10, "'ten'" ]);
	wait_state('js', 'stopped');
	wait_position('jd', 'a change that cannot be rendered, skipped');
	wait_position('b', 'B streams on');
	is(sql("SELECT stop_error || ';' || stop_sqlstate FROM estream.captures WHERE source = 'js'::regclass"),
		'stack depth limit exceeded;54001', 'stop: the capture stops at the change it cannot render');
	is(got('tjs'), expected('js', 'id = 1'), 'stop: nothing of it or after it');
	is(got('tjd'), expected('jd', 'id <> 2'), 'skip: the later changes flow');
	is( sql(q{
SELECT source || ';' || (event IS NULL) || ';' || (key IS NULL) || ';' || (xid = (SELECT xid FROM truth WHERE tbl = 'jd' AND id = 2)) || ';' || error
FROM estream.capture_dead_letters WHERE topic = 'tjd'}),
		'jd;true;true;true;stack depth limit exceeded',
		'skip: a dead letter without event (nor key), with its transaction');
	is(got('tb'), expected('b'), 'B meanwhile: every change');

	# the worker may render it once its stack may be as deep
	$node->alter_system('max_stack_depth', '7MB');
	sql("SELECT estream.resume_capture('js')");
	wait_state('js', 'streaming');
	wait_position('js', 'rendered after the fix');
	is( sql(qq{
SELECT string_agg((value->>'op') || ':' || (value->'after'->>'id') || ':'
				  || md5((value->'after'->'v')::text), ' ' ORDER BY "offset")
FROM @{[ $node->log_of('tjs') ]}}),
		sql(q{
SELECT string_agg(op || ':' || id || ':' || md5(v::jsonb::text), ' ' ORDER BY seq)
FROM truth WHERE tbl = 'js'}),
		'stop, resumed: the change and the later ones, once, in order');
	$node->alter_system('max_stack_depth', undef);
}
is(worker_errors() - $errors0 <= 4, 1,
	'only the steps that met the change before it was known to be unrenderable failed');
$errors0 = worker_errors();

#
# 4. A crash while A is stopped and B streams under load.
#
sql(q{SELECT estream.alter_topic('ta', '{"max.message.bytes": 2000}')});
txn([ 'a', 'c', 20, "repeat('z', 3000)" ]);
wait_state('a', 'stopped');
my $a_stop = sql("SELECT stop_lsn FROM estream.captures WHERE source = 'a'::regclass");

my $scriptdir = PostgreSQL::Test::Utils::tempdir;
PostgreSQL::Test::Utils::append_to_file(
	"$scriptdir/b.sql", q{
\set id random(100, 150)
BEGIN;
INSERT INTO b VALUES (:id, '0') ON CONFLICT (id) DO UPDATE SET v = (b.v::int + 1)::text;
INSERT INTO truth (tbl, id, v, op) SELECT 'b', :id, v, 'x' FROM b WHERE id = :id;
COMMIT;
});
my $pgbench_out = '';
my $h = IPC::Run::start(
	[
		$node->installed_command('pgbench'), '-n', '-c', '3', '-T', '60',
		'-f', "$scriptdir/b.sql", '-h', $node->host, '-p', $node->port, 'postgres'
	],
	'<', '/dev/null', '>', \$pgbench_out, '2>', \$pgbench_out,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
my $tb_log = $node->log_of('tb');
ok( $node->poll_query_until(
		'postgres', qq{
SELECT (SELECT count(*) FROM truth WHERE id >= 100) > 1000
   AND (SELECT count(*) FROM $tb_log WHERE (value->'after'->>'id')::int >= 100) > 300}),
	'the load on B runs and is captured while A is stopped');
txn([ 'a', 'u', 4, "'during the load'" ]);
$node->stop('immediate');
$h->finish;
$node->start;
wait_position('b', 'after the crash');
$errors0 = worker_errors();
# per key: the versions written, in commit order (truth.seq: taken under the
# row lock)
my $b_histories = qq{
WITH e AS (SELECT id, string_agg(v, ' ' ORDER BY seq) AS h FROM truth WHERE tbl = 'b' AND id >= 100 GROUP BY id),
	 g AS (SELECT (value->'after'->>'id')::int AS id, string_agg(value->'after'->>'v', ' ' ORDER BY "offset") AS h
			 FROM $tb_log WHERE (value->'after'->>'id')::int >= 100 GROUP BY 1)
SELECT count(*) FROM e FULL JOIN g USING (id) WHERE e.h IS DISTINCT FROM g.h};
is(sql($b_histories), '0', 'after the crash, B: every key, exactly its committed versions, in order');
is(sql("SELECT state || ';' || stop_lsn FROM estream.captures WHERE source = 'a'::regclass"),
	"stopped;$a_stop", 'A is still stopped at its change');
sql(q{SELECT estream.alter_topic('ta', '{"max.message.bytes": 1048576}')});
sql("SELECT estream.resume_capture('a')");
wait_state('a', 'streaming');
wait_position('a', 'resumed after the crash');
is(got('ta'), expected('a'), 'after the crash, A resumed: every change exactly once, in order');
is(sql($b_histories), '0', 'B still exact');
note "pgbench: $pgbench_out";

#
# 5. Initial copies that fail, sleep or wait for a lock.
#
sql(q{
CREATE ROLE towner;
CREATE SCHEMA towner AUTHORIZATION towner;
CREATE TABLE r (id int PRIMARY KEY, v text);
INSERT INTO r VALUES (1, 'r1'), (2, 'r2');
ALTER TABLE r OWNER TO towner;
SET ROLE towner;
CREATE FUNCTION towner.r_policy() RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN RAISE EXCEPTION 'the owner''s policy refuses'; END $$;
ALTER TABLE r ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY p ON r USING (towner.r_policy());
RESET ROLE;
SELECT estream.capture('r', 'tr');
});
wait_state('r', 'stopped');
is( sql("SELECT stop_error || ';' || stop_sqlstate || ';' || (stop_lsn IS NULL) FROM estream.captures WHERE source = 'r'::regclass"),
	"the owner's policy refuses;P0001;true", 'a copy whose policy raises: its capture stops');
txn([ 'b', 'c', 30, "'thirty'" ]);
wait_position('b', 'while the copy of r failed');
is(got('tb') =~ /c:30:/ ? 1 : 0, 1, 'the other captures stream on');
sql(q{
SET ROLE towner;
CREATE OR REPLACE FUNCTION towner.r_policy() RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN RETURN true; END $$;
RESET ROLE;
INSERT INTO r VALUES (3, 'r3');
SELECT estream.resume_capture('r');
});
wait_state('r', 'streaming');
sql("INSERT INTO r VALUES (4, 'r4')");
wait_position('r', 'copy made');
is( sql(qq{
SELECT string_agg((value->>'op') || (value->'after'->>'id'), ',' ORDER BY "offset") FROM @{[ $node->log_of('tr') ]}}),
	'r1,r2,r3,c4', 'resumed: the copy is made, then the stream');

# a policy that sleeps: cut by estream.capture_copy_timeout
sql(q{
ALTER SYSTEM SET estream.capture_copy_timeout = '2s';
ALTER SYSTEM SET estream.capture_copy_lock_timeout = '1s';
SELECT pg_reload_conf();
CREATE TABLE s (id int PRIMARY KEY);
INSERT INTO s VALUES (1);
ALTER TABLE s OWNER TO towner;
SET ROLE towner;
CREATE FUNCTION towner.s_policy() RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN PERFORM pg_sleep(15); RETURN true; END $$;
ALTER TABLE s ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY p ON s USING (towner.s_policy());
RESET ROLE;
});
ok( $node->poll_query_until(
		'postgres', "SELECT current_setting('estream.capture_copy_timeout') = '2s'"),
	'the copy timeout is set');
my $runs0 = sql("SELECT runs FROM estream.workers WHERE database = 'postgres'");
my $t0 = time();
sql("SELECT estream.capture('s', 'ts')");
wait_state('s', 'stopped');
ok( $node->poll_query_until(
		'postgres', "SELECT runs >= $runs0 + 10 FROM estream.workers WHERE database = 'postgres'"),
	'maintenance runs');
my $elapsed = time() - $t0;
cmp_ok($elapsed, '<', 14, 'the sleeping copy was cut: maintenance ran long before the sleep would have ended');
is( sql("SELECT stop_error || ';' || stop_sqlstate FROM estream.captures WHERE source = 's'::regclass"),
	'canceling statement due to statement timeout;57014', 'by the copy\'s time limit');

# A lock that the copy waits for: cut by estream.capture_copy_lock_timeout.
# (A lock on the table itself conflicts with the copy's only in ACCESS
# EXCLUSIVE mode, whose holder has a transaction id: the copy does not
# start before such a transaction running when the capture was seen ends.
# Here the owner's policy waits for an advisory lock that a session holds
# without a transaction.)
sql(q{
CREATE TABLE l (id int PRIMARY KEY);
INSERT INTO l VALUES (1);
ALTER TABLE l OWNER TO towner;
SET ROLE towner;
CREATE FUNCTION towner.l_policy() RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN true; END $$;
ALTER TABLE l ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY p ON l USING (towner.l_policy());
RESET ROLE;
});
my $locker = $node->background_psql('postgres');
$locker->query_safe('SELECT pg_advisory_lock(4242)');
sql("SELECT estream.capture('l', 'tl')");
wait_state('l', 'stopped');
is( sql("SELECT stop_sqlstate FROM estream.captures WHERE source = 'l'::regclass"),
	'55P03', 'a copy that waits for a lock is cut by its lock timeout');
txn([ 'b', 'c', 31, "'thirty-one'" ]);
wait_position('b', 'while l is locked');
$locker->query_safe('SELECT pg_advisory_unlock(4242)');
$locker->quit;
sql("SELECT estream.resume_capture('l')");
wait_state('l', 'streaming');
is(sql("SELECT count(*) FROM @{[ $node->log_of('tl') ]}"), '1', 'resumed once the lock is gone: the copy is made');
is(got('tb', 'id < 100'), expected('b', 'id < 100'),
	'B: every change of the single writer');
is(worker_errors(), $errors0, 'no capture step failed');

#
# 6. Default topic names.
#
sql(q{
CREATE TABLE "a b" (id int PRIMARY KEY);
CREATE TABLE a_b (id int PRIMARY KEY);
CREATE TABLE "a.b" (id int PRIMARY KEY);
});
is( sql(q{
SELECT estream.capture('public."a b"') || ' ' || estream.capture('public.a_b') || ' '
	   || estream.capture('public."a.b"')}),
	'postgres.public.a-20b postgres.public.a_b postgres.public.a-2eb',
	'three tables, three topics');
my @names;
for my $topic (split /\n/, sql(q{
SELECT topic FROM estream.captures WHERE topic LIKE 'postgres.public.a%b' ORDER BY topic}))
{
	my ($db, $schema, $table) = split /\./, $topic;
	s/-([0-9a-f]{2})/chr(hex($1))/ge for ($schema, $table);
	push @names, "$schema.$table";
}
is(join(',', @names), 'public.a b,public.a.b,public.a_b', 'the names give back the tables');
sql('CREATE TABLE y (id int PRIMARY KEY); CREATE TABLE x (id int PRIMARY KEY)');
sql(q{SELECT estream.capture('x', 'postgres.public.y')});
($ret, $out, $err) = $node->psql('postgres', "SELECT estream.capture('y')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/42710: topic "postgres\.public\.y" is already the topic of table "public\.x"/,
	'a default name that another table was captured into by name: refused');
like($err, qr/HINT:  Pass another topic name, or pass "postgres\.public\.y" to share that topic\./,
	'with a hint');

done_testing();
