
# Copyright (c) 2026, estream developers

# Change data capture: edge cases, each checked against what docs/cdc.md
# promises (exact events, keys, ops, counts, slot and origin rows, error
# codes).
#
# 1. "snapshot": false: rows present before capture() are not emitted; the
#    state is "waiting for the worker" until the worker started the capture;
#    changes committed after that are emitted exactly once, in order.  For
#    the database's first capture the stream starts at the slot the worker
#    creates; once the slot exists, a change committed after capture()
#    while the worker is off is emitted too.
# 2. A table captured and dropped before the worker made its initial copy:
#    the other table captured with it is still copied and streamed, and the
#    worker ends the dropped table's capture.  A table dropped while
#    streaming stays registered under its OID until uncaptured.
# 3. Compacted topics: a table without primary key is refused (22023); a
#    TRUNCATE of a captured table writes no keyless record to a compacted
#    topic, the other events are there.
# 4. The output plugin in a walsender (pg_recvlogical) and through the SQL
#    interface: no crash, one JSON line per change and a commit line per
#    transaction, the worker's capture undisturbed.
# 5. (second node, max_replication_slots = 2, both used) The slot cannot be
#    created: the capture step fails and says so, again at every run,
#    without leaving a slot; uncapturing then leaves no origin either; once
#    a slot is free the copy and the later changes arrive exactly once.
# 6. DROP DATABASE of a database with captures works without FORCE and
#    leaves neither its slot nor its replication origin.
# 7. REPLICA IDENTITY USING INDEX on an index that does not cover the
#    primary key: the key of every event, the copy's included, is that
#    index's columns (one partition per row); with REPLICA IDENTITY FULL
#    deletes are keyed by the primary key.
# 8. Uncapturing a table with a backlog the worker has not captured yet:
#    the other table gets all its changes, the uncaptured one none of those
#    that the worker had not written when uncapture() committed.
# 9. (second node) DROP EXTENSION while a capture streams: the worker drops
#    the slot and the origin.
# 10. A copy waiting for a transaction open longer than the worker's
#    lock_timeout, with a column type change meanwhile: no failed step;
#    copy, stream and another capture exact afterwards.
# 11. Batches stay below estream.max_batch_bytes: with the setting at 1 MB,
#    the copy of 300 rows of 20 kB (6 MB) and one transaction that inserts
#    as much again are written in several produce_batch() calls; every row
#    is there once, and no step fails.

use strict;
use warnings;

use IPC::Run;
use JSON::PP;
use EstreamNode;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

# A node like 010_cdc.pl's, plus WAL senders for pg_recvlogical.
sub new_node
{
	my ($name, $extra) = @_;
	return EstreamNode->create(
		$name,
		cdc => 1,
		conf => "max_wal_senders = 4\n"
		  . "estream.worker_naptime = 100ms\n"
		  . ($extra // ''));
}

my $node = new_node('cdc_edge');
$node->safe_psql('postgres', 'CREATE EXTENSION estream');

# op:key:after of every record of a topic, in (partition, offset) order
sub events
{
	my ($n, $db, $topic, $cond) = @_;
	my $log = $n->log_of($topic, dbname => $db);
	$cond //= 'true';
	return $n->safe_psql(
		$db, qq{
SELECT string_agg(format('%s:%s:%s', value->>'op', convert_from(key, 'UTF8'), value->'after'),
				  E'\n' ORDER BY partition, "offset")
FROM $log WHERE $cond});
}

sub count_records
{
	my ($n, $db, $topic, $cond) = @_;
	my $log = $n->log_of($topic, dbname => $db);
	$cond //= 'true';
	return $n->safe_psql($db, "SELECT count(*) FROM $log WHERE $cond");
}

# estream.enable_worker on or off, and wait until every database worker
# follows.
sub set_worker
{
	my ($n, $on) = @_;
	$n->alter_system('estream.enable_worker', $on ? 'on' : 'off');
	my $cond = $on ? "state NOT IN ('disabled', 'starting')" : "state = 'disabled'";
	ok( $n->poll_query_until(
			'postgres',
			"SELECT count(*) > 0 AND bool_and($cond) FROM estream.workers WHERE kind = 'database'"),
		'workers ' . ($on ? 'enabled' : 'disabled'));
}

# SQLSTATE and message of a statement that must fail
sub sql_error
{
	my ($n, $db, $sql) = @_;
	my ($ret, $out, $err) = $n->psql($db, "\\set VERBOSITY verbose\n$sql");
	return ('', "no error (psql returned $ret)") if $ret == 0;
	return ($1, $2) if $err =~ /ERROR:  ([0-9A-Z]{5}): ([^\n]*)/;
	return ('?', $err);
}

# the PostgreSQL log from an offset on
sub log_since
{
	my ($n, $offset) = @_;
	return substr(slurp_file($n->logfile), $offset);
}

my $slot = $node->slot_name('postgres');

#
# 1. "snapshot": false.  It is the database's first capture, made while the
#    worker is off: the slot does not exist yet.
#

$node->safe_psql(
	'postgres', q{
CREATE TABLE snap_off (id int PRIMARY KEY, v text);
INSERT INTO snap_off VALUES (1, 'one'), (2, 'two'), (3, 'three');
});
set_worker($node, 0);
is( $node->safe_psql(
		'postgres', q{SELECT estream.capture('snap_off', options => '{"snapshot": false}')}),
	'postgres.public.snap_off', 'snapshot false: capture() returns the topic');
is( $node->safe_psql(
		'postgres', "SELECT state FROM estream.captures WHERE source = 'snap_off'::regclass"),
	'waiting for the worker',
	'snapshot false, worker off: waiting for the worker (no slot yet)');
# committed after the capture, before the worker's first run
$node->safe_psql(
	'postgres', q{
INSERT INTO snap_off VALUES (4, 'four');
UPDATE snap_off SET v = 'ONE' WHERE id = 1;
});
set_worker($node, 1);
ok( $node->poll_query_until(
		'postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot'", '1'),
	'the worker created the slot');
$node->wait_caught_up('snapshot false, first run');
my $lsn_streaming = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
$node->safe_psql(
	'postgres', q{
INSERT INTO snap_off VALUES (5, 'five');
UPDATE snap_off SET v = 'FOUR' WHERE id = 4;
DELETE FROM snap_off WHERE id = 2;
});
$node->wait_caught_up('snapshot false, changes');
is(count_records($node, 'postgres', 'postgres.public.snap_off', "value->>'op' = 'r'"),
	'0', 'snapshot false: no copy (no r event)');
is(count_records($node, 'postgres', 'postgres.public.snap_off', "key = convert_to('{\"id\": 3}', 'UTF8')"),
	'0', 'snapshot false: a row only present before capture() gives nothing');
is( events(
		$node, 'postgres', 'postgres.public.snap_off',
		"(value->'source'->>'lsn')::numeric >= '$lsn_streaming'::pg_lsn - '0/0'"),
	qq(c:{"id": 5}:{"v": "five", "id": 5}
u:{"id": 4}:{"v": "FOUR", "id": 4}
d:{"id": 2}:null),
	'snapshot false: changes committed once streaming, exactly once, in order');
# documented: the first capture of a database starts where the worker
# creates the slot; what committed between capture() and then is not in it
is( events($node, 'postgres', 'postgres.public.snap_off'),
	qq(c:{"id": 5}:{"v": "five", "id": 5}
u:{"id": 4}:{"v": "FOUR", "id": 4}
d:{"id": 2}:null),
	'snapshot false, first capture: the stream starts at the slot, exactly once, in order');
is( $node->safe_psql(
		'postgres',
		"SELECT state, coalesce(snapshot_rows::text, 'null') FROM estream.captures WHERE source = 'snap_off'::regclass"),
	'streaming|0', 'snapshot false: streaming, snapshot_rows 0');

# The same once the slot exists: a change committed after capture() while
# the worker is off is emitted.
$node->safe_psql('postgres', 'CREATE TABLE snap_off2 (id int PRIMARY KEY); INSERT INTO snap_off2 VALUES (1)');
set_worker($node, 0);
$node->safe_psql(
	'postgres', q{
SELECT estream.capture('snap_off2', options => '{"snapshot": false}');
INSERT INTO snap_off2 VALUES (2);
});
set_worker($node, 1);
$node->wait_caught_up('snapshot false, slot already there');
is( events($node, 'postgres', 'postgres.public.snap_off2'),
	qq(c:{"id": 2}:{"id": 2}),
	'snapshot false, slot already there: the change committed after capture() while the worker was off is emitted'
);

#
# 2. Dropped before the initial copy (and dropped while streaming).
#

$node->safe_psql(
	'postgres', q{
CREATE TABLE drop_a (id int PRIMARY KEY);
INSERT INTO drop_a VALUES (1), (2);
CREATE TABLE keep_b (id int PRIMARY KEY, v int);
INSERT INTO keep_b VALUES (1, 0), (2, 0);
CREATE TABLE drop_c (id int PRIMARY KEY);
SELECT estream.capture('drop_c');
});
$node->wait_streaming('drop_c');
set_worker($node, 0);
my $a_oid = $node->safe_psql('postgres', "SELECT 'drop_a'::regclass::oid");
my $c_oid = $node->safe_psql('postgres', "SELECT 'drop_c'::regclass::oid");
$node->safe_psql(
	'postgres', q{
SELECT estream.capture('drop_a'), estream.capture('keep_b');
DROP TABLE drop_a;
INSERT INTO keep_b VALUES (3, 0);
INSERT INTO drop_c VALUES (1);
DROP TABLE drop_c;
});
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(source::text || ':' || state, ',' ORDER BY source::text) FROM estream.captures WHERE source::oid IN ($a_oid, $c_oid)"),
	"$a_oid:waiting for its initial copy,$c_oid:not running",
	'dropped tables stay registered, shown by OID (before the worker ran; the worker is off)');
set_worker($node, 1);
$node->wait_streaming('keep_b');
is( $node->safe_psql(
		'postgres', "SELECT snapshot_rows FROM estream.captures WHERE source = 'keep_b'::regclass"),
	'3', 'the table captured with the dropped one is copied');
$node->safe_psql(
	'postgres', q{
UPDATE keep_b SET v = 1 WHERE id = 1;
DELETE FROM keep_b WHERE id = 2;
INSERT INTO keep_b VALUES (4, 0);
});
$node->wait_caught_up('dropped before copy');
is( events($node, 'postgres', 'postgres.public.keep_b'),
	qq(r:{"id": 1}:{"v": 0, "id": 1}
r:{"id": 2}:{"v": 0, "id": 2}
r:{"id": 3}:{"v": 0, "id": 3}
u:{"id": 1}:{"v": 1, "id": 1}
d:{"id": 2}:null
c:{"id": 4}:{"v": 0, "id": 4}),
	'and streamed: copy then changes, exactly once');
is(count_records($node, 'postgres', 'postgres.public.drop_a'),
	'0', 'the table dropped before its copy: nothing in its topic');
is( events($node, 'postgres', 'postgres.public.drop_c'),
	qq(c:{"id": 1}:{"id": 1}),
	'the table dropped while streaming: its changes before the drop');
is( $node->safe_psql(
		'postgres', "SELECT coalesce(max(last_error), 'none') FROM estream.captures"),
	'none', 'no capture error');
is( $node->safe_psql(
		'postgres', "SELECT count(*) FROM estream.captures WHERE source::oid = $c_oid"),
	'1', 'the table dropped while streaming stays registered under its OID');
is( $node->safe_psql(
		'postgres', "SELECT count(*) FROM estream.captures WHERE source::oid = $a_oid"),
	'0', 'the table dropped before its copy: the worker ended its capture');
$node->safe_psql('postgres', "SELECT estream.uncapture($c_oid)");
is( $node->safe_psql(
		'postgres', "SELECT count(*) FROM estream.captures WHERE source::oid IN ($a_oid, $c_oid)"),
	'0', 'uncapture() by OID ends the capture of a dropped table');

#
# 3. Compacted topics.
#

$node->safe_psql(
	'postgres', q{
SELECT estream.create_topic('edge-compacted', 1, '{"cleanup.policy": "compact"}');
CREATE TABLE nopk (x int, y text);
CREATE TABLE cpk (id int PRIMARY KEY, v text);
INSERT INTO cpk VALUES (1, 'a'), (2, 'b');
});
my ($state, $msg) = sql_error($node, 'postgres', "SELECT estream.capture('nopk', 'edge-compacted')");
is($state, '22023', 'compacted topic, table without primary key: refused with 22023');
like($msg, qr/^table "(public\.)?nopk" has no primary key, which compacted topic "edge-compacted" needs$/,
	'with the documented message');
is($node->safe_psql('postgres', "SELECT count(*) FROM estream.capture WHERE relid = 'nopk'::regclass"),
	'0', 'and no capture row');
my ($ret, $out, $err) =
  $node->psql('postgres', "SELECT estream.capture('cpk', 'edge-compacted')");
is($out, 'edge-compacted', 'a table with primary key is captured into the compacted topic');
$node->wait_streaming('cpk');
$node->safe_psql(
	'postgres', q{
INSERT INTO cpk VALUES (3, 'c');
TRUNCATE cpk;
INSERT INTO cpk VALUES (4, 'd');
});
$node->wait_caught_up('compacted');
is( events($node, 'postgres', 'edge-compacted'),
	qq(r:{"id": 1}:{"v": "a", "id": 1}
r:{"id": 2}:{"v": "b", "id": 2}
c:{"id": 3}:{"v": "c", "id": 3}
c:{"id": 4}:{"v": "d", "id": 4}),
	'compacted topic: no keyless truncate record, the events around it are there');
is(count_records($node, 'postgres', 'edge-compacted', 'key IS NULL'),
	'0', 'compacted topic: no record without key');

#
# 4. The output plugin in a walsender and through the SQL interface.
#

$node->safe_psql(
	'postgres', q{
CREATE TABLE rl (id int PRIMARY KEY, v text);
SELECT estream.capture('rl', options => '{"snapshot": false}');
});
$node->wait_streaming('rl');
my $log_offset = -s $node->logfile;
my $recv = $node->installed_command('pg_recvlogical');
my $connstr = $node->connstr('postgres');
command_ok([ $recv, '-d', $connstr, '--slot', 'edge_recv', '--create-slot', '-P', 'estream' ],
	'pg_recvlogical creates a slot of plugin estream');
$node->safe_psql('postgres',
	"SELECT 'init' FROM pg_create_logical_replication_slot('edge_sql', 'estream')");
$node->safe_psql(
	'postgres', q{
BEGIN;
INSERT INTO rl VALUES (1, 'one');
UPDATE rl SET v = 'ONE' WHERE id = 1;
COMMIT;
});
my $recv_file = $node->basedir . '/edge_recv.out';
my ($recv_out, $recv_err) = ('', '');
my $recv_h = IPC::Run::start(
	[ $recv, '-d', $connstr, '--slot', 'edge_recv', '--start', '-f', $recv_file, '--no-loop', '-F', '1' ],
	'<', '/dev/null', '>', \$recv_out, '2>', \$recv_err,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
# changes while it streams
$node->safe_psql('postgres', "INSERT INTO rl VALUES (2, 'two')");
$node->safe_psql('postgres', "DELETE FROM rl WHERE id = 1");
$node->safe_psql('postgres', "INSERT INTO snap_off VALUES (6, 'not rl')");
$node->safe_psql('postgres', "TRUNCATE rl");

# wait for the four commit lines
my $recv_text = '';
for (my $i = 0; $i < 10 * $PostgreSQL::Test::Utils::timeout_default; $i++)
{
	$recv_text = -e $recv_file ? slurp_file($recv_file) : '';
	my $commits = () = $recv_text =~ /"commit": true/g;
	last if $commits >= 5 || !$recv_h->pumpable;
	usleep(100_000);
}
$recv_h->signal('INT');
$recv_h->finish;
is($recv_h->full_result(0), 0, 'pg_recvlogical stopped by SIGINT exits with 0');
# PostgreSQL 15's pg_recvlogical reports its own SIGINT like this, with an
# empty server message (test_decoding gives the same)
like($recv_err, qr/^(pg_recvlogical: error: unexpected termination of replication stream: \n)?$/,
	'pg_recvlogical: no error from the server');
unlike(log_since($node, $log_offset), qr/ERROR:|FATAL:|PANIC:|terminated by signal/,
	'no error in the server log while the walsender decoded');

my @recv_lines = grep { $_ ne '' } split /\n/, $recv_text;
my @parsed = map { eval { decode_json($_) } } @recv_lines;
is(scalar(@parsed), scalar(@recv_lines), 'pg_recvlogical: every line is valid JSON')
  or note "pg_recvlogical output:\n$recv_text";
is( join(' ',
		map { $_->{commit} ? 'commit' : "$_->{topic}:$_->{value}{op}:" . encode_json($_->{key}) }
		  @parsed),
	'postgres.public.rl:c:{"id":1} postgres.public.rl:u:{"id":1} commit '
	  . 'postgres.public.rl:c:{"id":2} commit postgres.public.rl:d:{"id":1} commit '
	  . 'postgres.public.snap_off:c:{"id":6} commit postgres.public.rl:t:null commit',
	'pg_recvlogical: the changes of captured tables, a commit line per transaction');
is( join(',', map { $_->{value}{source}{table} // '' } grep { !$_->{commit} } @parsed),
	'rl,rl,rl,rl,snap_off,rl', 'pg_recvlogical: source.table of each change');
is($node->safe_psql('postgres', 'SELECT 1'), '1', 'the server is up after pg_recvlogical');
unlike(log_since($node, $log_offset), qr/terminated by signal|server process .* was terminated/,
	'no process terminated by a signal');

# the SQL interface, on the slot made before the same changes
my $sql_lines = $node->safe_psql(
	'postgres', q{
SELECT string_agg(CASE WHEN data::jsonb ? 'commit' THEN 'commit'
					   ELSE format('%s:%s:%s', data::jsonb->>'topic', data::jsonb->'value'->>'op', data::jsonb->'key') END,
				  ' ' ORDER BY n)
FROM pg_logical_slot_get_changes('edge_sql', NULL, NULL) WITH ORDINALITY c(lsn, xid, data, n)});
is( $sql_lines,
	'postgres.public.rl:c:{"id": 1} postgres.public.rl:u:{"id": 1} commit '
	  . 'postgres.public.rl:c:{"id": 2} commit postgres.public.rl:d:{"id": 1} commit '
	  . 'postgres.public.snap_off:c:{"id": 6} commit postgres.public.rl:t:null commit',
	'pg_logical_slot_get_changes() on a slot of plugin estream: the same lines');
($state, $msg) = sql_error($node, 'postgres',
	"SELECT * FROM pg_logical_slot_peek_changes('edge_sql', NULL, NULL, 'include-xids', '1')");
is($state, '22023', 'an option of the plugin: 22023');
like($msg, qr/^option "include-xids" of output plugin "estream" is unknown$/, 'unknown option');
$node->safe_psql('postgres',
	"SELECT pg_drop_replication_slot('edge_recv'), pg_drop_replication_slot('edge_sql')");
is( $node->safe_psql('postgres', 'SELECT string_agg(slot_name, \',\') FROM pg_replication_slots'),
	$slot, 'the slots of the test are dropped, the worker\'s remains');
$node->wait_caught_up('plugin');
is( events($node, 'postgres', 'postgres.public.rl'),
	qq(c:{"id": 1}:{"v": "one", "id": 1}
u:{"id": 1}:{"v": "ONE", "id": 1}
c:{"id": 2}:{"v": "two", "id": 2}
d:{"id": 1}:null
t::null),
	'the worker captured the same changes meanwhile');

#
# 7. REPLICA IDENTITY USING INDEX and FULL.  The key is the primary key,
# except when the table's replica identity is USING INDEX on an index that
# does not cover the primary key columns; then it is that index's columns,
# for every op and the copy, so that all events of a row land in one
# partition.
#

$node->safe_psql(
	'postgres', q{
CREATE TABLE ri_idx (id int PRIMARY KEY, code text NOT NULL UNIQUE, v int);
ALTER TABLE ri_idx REPLICA IDENTITY USING INDEX ri_idx_code_key;
INSERT INTO ri_idx VALUES (2, 'copied', 0);
SELECT estream.capture('ri_idx', options => '{"partitions": 4}');
CREATE TABLE ri_full (id int PRIMARY KEY, v int);
ALTER TABLE ri_full REPLICA IDENTITY FULL;
SELECT estream.capture('ri_full', options => '{"partitions": 4}');
});
$node->wait_streaming($_) for qw(ri_idx ri_full);
# a code whose partition differs from that of the primary key
my $code = $node->safe_psql(
	'postgres', q{
SELECT c FROM unnest(ARRAY['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot']) c
WHERE estream.partition_for(jsonb_build_object('code', c)::text, 4)
	  <> estream.partition_for(jsonb_build_object('id', 1)::text, 4)
LIMIT 1});
my $code_part = $node->safe_psql('postgres',
	"SELECT estream.partition_for(jsonb_build_object('code', '$code')::text, 4)");
$node->safe_psql(
	'postgres', qq{
INSERT INTO ri_idx VALUES (1, '$code', 0);
UPDATE ri_idx SET v = 1 WHERE id = 1;
DELETE FROM ri_idx WHERE id = 1;
INSERT INTO ri_full VALUES (1, 0);
UPDATE ri_full SET v = 1 WHERE id = 1;
DELETE FROM ri_full WHERE id = 1;
});
$node->wait_caught_up('replica identity');
my $ri_log = $node->log_of('postgres.public.ri_idx');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(format('%s:%s:%s', value->>'op', convert_from(key, 'UTF8'), partition), ' ' ORDER BY \"offset\") FROM $ri_log WHERE value->>'op' <> 'r'"),
	qq(c:{"code": "$code"}:$code_part u:{"code": "$code"}:$code_part d:{"code": "$code"}:$code_part),
	'REPLICA IDENTITY USING INDEX (not covering the primary key): every event keyed by the index columns, one partition'
);
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(convert_from(key, 'UTF8'), ' ') FROM $ri_log WHERE value->>'op' = 'r'"),
	'{"code": "copied"}', 'the copy keyed by the same rule');
my $full_log = $node->log_of('postgres.public.ri_full');
my $id_part = $node->safe_psql('postgres',
	"SELECT estream.partition_for(jsonb_build_object('id', 1)::text, 4)");
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(format('%s:%s:%s:%s', value->>'op', convert_from(key, 'UTF8'), partition, value->'before'), ' ' ORDER BY \"offset\") FROM $full_log"
	),
	qq(c:{"id": 1}:$id_part:null u:{"id": 1}:$id_part:{"v": 0, "id": 1} d:{"id": 1}:$id_part:{"v": 1, "id": 1}),
	'REPLICA IDENTITY FULL: every event, deletes too, keyed by the primary key');

#
# 8. Uncapture with a backlog the worker has not captured yet.
#

$node->safe_psql(
	'postgres', q{
CREATE TABLE bl_a (id int PRIMARY KEY, v int NOT NULL);
CREATE TABLE bl_b (id int PRIMARY KEY, v int NOT NULL);
SELECT estream.capture('bl_a'), estream.capture('bl_b');
});
$node->wait_streaming($_) for qw(bl_a bl_b);
set_worker($node, 0);
# 1000 changes on each table: one transaction of 500 inserts into both,
# then 100 transactions of 5 updates per table
$node->safe_psql(
	'postgres', q{
BEGIN;
INSERT INTO bl_a SELECT g, 0 FROM generate_series(1, 500) g;
INSERT INTO bl_b SELECT g, 0 FROM generate_series(1, 500) g;
COMMIT;
} . join(
		'',
		map {
			"BEGIN; UPDATE bl_a SET v = v + 1 WHERE id <= 5; UPDATE bl_b SET v = v + 1 WHERE id <= 5; COMMIT;\n"
		} 1 .. 100));
$node->safe_psql('postgres', "SELECT estream.uncapture('bl_a')");
$node->safe_psql('postgres', 'UPDATE bl_a SET v = -1 WHERE id = 1; UPDATE bl_b SET v = -1 WHERE id = 1');
set_worker($node, 1);
$node->wait_caught_up('backlog');
is( count_records($node, 'postgres', 'postgres.public.bl_b'),
	'1001', 'the table still captured: all its 1000 changes of the backlog and the one after');
is( $node->safe_psql(
		'postgres', 'SELECT '
		  . "count(*) FILTER (WHERE value->>'op' = 'c') || ',' || count(*) FILTER (WHERE value->>'op' = 'u') || ',' "
		  . "|| count(DISTINCT value->'after') || ',' || max((value->'after'->>'v')::int) FROM "
		  . $node->log_of('postgres.public.bl_b')),
	'500,501,1001,100', 'bl_b: 500 inserts, 501 updates, each once, up to v = 100');
is( $node->safe_psql(
		'postgres', 'SELECT count(*) FROM (SELECT DISTINCT ON (key) value->\'after\' AS after FROM '
		  . $node->log_of('postgres.public.bl_b')
		  . ' ORDER BY key, "offset" DESC) t FULL JOIN (SELECT to_jsonb(b) AS after FROM bl_b b) b USING (after) WHERE t.after IS NULL OR b.after IS NULL'),
	'0', 'bl_b rebuilt from its topic equals the table');
is(count_records($node, 'postgres', 'postgres.public.bl_a'),
	'0', 'the uncaptured table: none of its backlog (not written when uncapture() committed) nor later changes');
is( $node->safe_psql(
		'postgres', "SELECT coalesce(max(last_error), 'none') FROM estream.captures"),
	'none', 'no capture error');

#
# 6. DROP DATABASE of a database with captures.
#

$node->safe_psql('postgres', 'CREATE DATABASE dropme');
$node->safe_psql(
	'dropme', q{
CREATE EXTENSION estream;
CREATE TABLE t (id int PRIMARY KEY);
INSERT INTO t VALUES (1);
SELECT estream.capture('t');
});
$node->wait_streaming('t', dbname => 'dropme');
$node->safe_psql('dropme', 'INSERT INTO t VALUES (2)');
$node->wait_caught_up('second database', dbname => 'dropme');
my $drop_oid = $node->dboid('dropme');
is( $node->safe_psql(
		'postgres', qq{
SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'estream_$drop_oid')
	|| ',' || (SELECT count(*) FROM pg_replication_origin WHERE roname = 'estream_$drop_oid')}),
	'1,1', 'the database to drop has its slot and origin');
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE dropme');
is($ret, 0, 'DROP DATABASE of a database with captures, without FORCE') or note $err;
is( $node->safe_psql(
		'postgres', qq{
SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'estream_$drop_oid')
	|| ',' || (SELECT count(*) FROM pg_replication_origin WHERE roname = 'estream_$drop_oid')}),
	'0,0', 'neither its slot nor its origin remains');
$node->safe_psql('postgres', "INSERT INTO rl VALUES (3, 'after drop database')");
$node->wait_caught_up('after DROP DATABASE');
is(count_records($node, 'postgres', 'postgres.public.rl', "value->'after'->>'id' = '3'"),
	'1', 'the other database still captures');

unlike(slurp_file($node->logfile), qr/terminated by signal/, 'no process terminated by a signal');

#
# 10. A copy that waits for a transaction open longer than the worker's
#     lock_timeout (2 s), while the table's type changes meanwhile: no step
#     fails, and once the transaction ends the copy and the stream hold
#     every row once, with the new type, and a change of another capture
#     made meanwhile (held back behind the table's changes) arrives once.
#
$node->safe_psql('postgres',
	'CREATE TABLE lt (id int PRIMARY KEY, b int); INSERT INTO lt VALUES (1, 1)');
my $long = $node->background_psql('postgres');
$long->query_safe('BEGIN; SELECT pg_current_xact_id()');
my $lt_errors = $node->safe_psql('postgres',
	"SELECT errors FROM estream.workers WHERE database = 'postgres'");
$node->safe_psql(
	'postgres', q{
SELECT estream.capture('lt');
INSERT INTO lt VALUES (2, 2);
ALTER TABLE lt ALTER b TYPE text;
INSERT INTO lt VALUES (3, 'three');
});
sleep(3);
$node->safe_psql('postgres', "INSERT INTO rl VALUES (10, 'while a copy waits')");
is( $node->safe_psql(
		'postgres',
		"SELECT state || ';' || coalesce(last_error, 'none') FROM estream.captures WHERE source = 'lt'::regclass"),
	'waiting for its initial copy;none', 'the copy waits, without error');
$long->query_safe('COMMIT');
$long->quit;
$node->wait_streaming('lt');
$node->safe_psql('postgres', "UPDATE lt SET b = 'two' WHERE id = 2");
$node->wait_caught_up('after the wait');
is( count_records($node, 'postgres', 'postgres.public.rl', "value->'after'->>'id' = '10'"),
	'1', 'the other capture\'s change made while the copy waited: once');
is( events($node, 'postgres', 'postgres.public.lt'),
	qq(r:{"id": 1}:{"b": "1", "id": 1}
r:{"id": 2}:{"b": "2", "id": 2}
r:{"id": 3}:{"b": "three", "id": 3}
u:{"id": 2}:{"b": "two", "id": 2}),
	'the copy (new type) and the change after it, once each');
is( $node->safe_psql('postgres', "SELECT errors FROM estream.workers WHERE database = 'postgres'"),
	$lt_errors, 'no failed step meanwhile');

#
# 5. The slot cannot be created (second node: max_replication_slots = 2,
#    both taken before any capture).
#

my $node2 = new_node('cdc_edge_slots', "max_replication_slots = 2\n");
$node2->safe_psql(
	'postgres', q{
CREATE EXTENSION estream;
SELECT 'x' FROM pg_create_physical_replication_slot('other_1');
SELECT 'x' FROM pg_create_physical_replication_slot('other_2');
CREATE TABLE s5 (id int PRIMARY KEY, v int NOT NULL);
INSERT INTO s5 VALUES (1, 0), (2, 0), (3, 0);
});
my $oid2 = $node2->dboid('postgres');
ok( $node2->poll_query_until(
		'postgres', "SELECT pid IS NOT NULL FROM estream.workers WHERE database = 'postgres'"),
	'the worker of the second node runs');
my $worker_pid = $node2->safe_psql('postgres',
	"SELECT pid FROM estream.workers WHERE database = 'postgres'");
$log_offset = -s $node2->logfile;
$node2->safe_psql('postgres', "SELECT estream.capture('s5')");
ok( $node2->poll_query_until(
		'postgres',
		"SELECT last_error LIKE 'capture changes: %replication slots are in use%' FROM estream.captures"),
	'slot creation fails: estream.captures.last_error says so');
like( $node2->safe_psql('postgres', "SELECT last_error FROM estream.workers WHERE database = 'postgres'"),
	qr/^capture changes: all replication slots are in use/, 'and estream.workers.last_error');
my $errors = $node2->safe_psql('postgres',
	"SELECT errors FROM estream.workers WHERE database = 'postgres'");
ok( $node2->poll_query_until(
		'postgres', "SELECT errors >= $errors + 3 FROM estream.workers WHERE database = 'postgres'"),
	'the failure repeats at every run');
my @failures = log_since($node2, $log_offset) =~
  /estream worker could not capture changes: all replication slots are in use/g;
cmp_ok(scalar(@failures), '>=', 3, 'and is logged each time');
is( $node2->safe_psql(
		'postgres', qq{
SELECT (SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots)
	|| ';' || (SELECT count(*) FROM pg_replication_origin WHERE roname <> 'estream_$oid2')
	|| ';' || (SELECT state FROM estream.captures)}),
	'other_1,other_2;0;waiting for its initial copy',
	'no estream slot left behind, no other origin, the capture waits');
is( $node2->safe_psql('postgres', "SELECT pid FROM estream.workers WHERE database = 'postgres'"),
	$worker_pid, 'the worker keeps running (no restart)');

# Uncapturing the only capture while failing: the worker drops the slot
# and the origin when the last table is uncaptured (docs), so none remains.
$node2->safe_psql('postgres', "SELECT estream.uncapture('s5')");
$node2->wait_worker_runs(3, '3 worker runs: after uncapturing the failing capture');
is( $node2->safe_psql(
		'postgres', "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'estream%'"),
	'0', 'uncaptured while failing: no estream slot');
is( $node2->safe_psql(
		'postgres', "SELECT count(*) FROM pg_replication_origin WHERE roname = 'estream_$oid2'"),
	'0', 'uncaptured while failing: no estream origin');

# capture again, change the table while failing, then free a slot
$log_offset = -s $node2->logfile;
$node2->safe_psql(
	'postgres', q{
SELECT estream.capture('s5');
INSERT INTO s5 VALUES (4, 0);
UPDATE s5 SET v = 1 WHERE id = 1;
});
ok( $node2->poll_query_until(
		'postgres',
		"SELECT last_error LIKE 'capture changes: %replication slots are in use%' FROM estream.captures"),
	'captured again: fails again');
$node2->safe_psql('postgres',
	"INSERT INTO s5 VALUES (5, 0); SELECT pg_drop_replication_slot('other_2')");
$node2->wait_streaming('s5');
$node2->safe_psql(
	'postgres', q{
INSERT INTO s5 VALUES (6, 0);
UPDATE s5 SET v = 2 WHERE id = 2;
DELETE FROM s5 WHERE id = 3;
});
$node2->wait_caught_up('after a slot was freed');
is( $node2->safe_psql(
		'postgres',
		"SELECT string_agg(format('%s:%s', value->>'op', value->'after'), ' ' ORDER BY value->'after'->>'id') FROM "
		  . $node2->log_of('postgres.public.s5') . " WHERE value->>'op' = 'r'"),
	'r:{"v": 1, "id": 1} r:{"v": 0, "id": 2} r:{"v": 0, "id": 3} r:{"v": 0, "id": 4} r:{"v": 0, "id": 5}',
	'once a slot is free: the copy has every row committed meanwhile, once');
is( events($node2, 'postgres', 'postgres.public.s5', "value->>'op' <> 'r'"),
	qq(c:{"id": 6}:{"v": 0, "id": 6}
u:{"id": 2}:{"v": 2, "id": 2}
d:{"id": 3}:null),
	'and the later changes, exactly once, in order');
is( $node2->safe_psql(
		'postgres', qq{
SELECT (SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots)
	|| ';' || (SELECT count(*) FROM pg_replication_origin WHERE roname = 'estream_$oid2')
	|| ';' || (SELECT coalesce(max(last_error), 'none') FROM estream.captures)}),
	"estream_$oid2,other_1;1;none", 'one estream slot and origin, no error');

#
# 9. DROP EXTENSION with a capture streaming: the worker drops the slot (it
#    would keep WAL forever) and the origin, then exits.
#
($ret, $out, $err) = $node2->psql('postgres', 'DROP EXTENSION estream CASCADE');
is($ret, 0, 'DROP EXTENSION while a capture streams') or note $err;
ok( $node2->poll_query_until(
		'postgres', qq{
SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'estream_$oid2')
	+ (SELECT count(*) FROM pg_replication_origin WHERE roname = 'estream_$oid2')}, '0'),
	'after DROP EXTENSION neither the slot nor the origin remains');
is( $node2->safe_psql('postgres', 'SELECT slot_name FROM pg_replication_slots'),
	'other_1', 'the other slot stays');
unlike(log_since($node2, 0), qr/terminated by signal/, 'no process terminated by a signal');

#
# 11. Batches below estream.max_batch_bytes, in the copy and in the stream
#
$node->alter_system('estream.max_batch_bytes', '1MB');
my $errors11 = $node->safe_psql('postgres',
	"SELECT errors FROM estream.workers WHERE database = 'postgres'");
$node->safe_psql(
	'postgres', q{
CREATE TABLE big11 (id integer PRIMARY KEY, pad text);
INSERT INTO big11 SELECT g, repeat(md5(g::text), 640) FROM generate_series(1, 300) g;
SELECT estream.capture('big11', 'big11');
});
ok( $node->poll_query_until(
		'postgres', "SELECT count(*) = 300 FROM estream.fetch('big11', 0, 0, max_records => 1000)"),
	'a 6 MB copy is written under a 1 MB batch limit');
$node->safe_psql('postgres',
	"INSERT INTO big11 SELECT g, repeat(md5(g::text), 640) FROM generate_series(301, 600) g");
ok( $node->poll_query_until(
		'postgres', "SELECT count(*) = 600 FROM estream.fetch('big11', 0, 0, max_records => 1000)"),
	'and a 6 MB source transaction too');
is( $node->safe_psql(
		'postgres', q{
SELECT count(DISTINCT value->'after'->>'id') || ':' || count(*) || ':' || min(length(value->'after'->>'pad'))
FROM estream.fetch('big11', 0, 0, max_records => 1000)}),
	'600:600:20480', 'every row once, whole');
is( $node->safe_psql('postgres',
		"SELECT errors FROM estream.workers WHERE database = 'postgres'"),
	$errors11, 'no step failed');
$node->alter_system('estream.max_batch_bytes', undef);

$node2->stop;
$node->stop;
done_testing();
