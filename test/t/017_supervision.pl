
# Copyright (c) 2026, estream developers

# A database whose worker is missing says so (docs/operations.md, "Sizing
# the workers"): with max_worker_processes = 4 (estream's launcher, the
# logical replication launcher and two database workers), a third database
# with estream gets a warning at
# CREATE EXTENSION and shows its worker as failed or not started in
# estream.workers, with the reason, instead of no row at all; a worker
# that dies shows "failed" with a message, not an empty last_error.

use strict;
use warnings;

use EstreamNode;
use PostgreSQL::Test::Utils;
use Test::More;

# deliberately few worker processes (see above)
my $node = EstreamNode->create(
	'supervision',
	cdc => 1,
	conf => "estream.worker_naptime = 100ms\n"
	  . "max_worker_processes = 4\n"
	  . "max_parallel_workers = 0\n");

for my $db (qw(db1 db2))
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, 'CREATE EXTENSION estream');
	ok( $node->poll_query_until(
			$db,
			"SELECT state IN ('idle', 'running') FROM estream.workers WHERE database = current_database()"),
		"$db has its worker");
}

$node->safe_psql('postgres', 'CREATE DATABASE db3');
# the launcher looks at every database, and may find no worker slot for
# db3 before the extension is there: CREATE EXTENSION must warn all the
# same (give the launcher the time to try)
sleep(2);
my ($ret, $out, $err) = $node->psql('db3', 'CREATE EXTENSION estream');
is($ret, 0, 'CREATE EXTENSION in a third database');
like($err, qr/WARNING:  estream has no free background worker slot for this database/,
	'with a warning that no worker slot is free');
ok( $node->poll_query_until(
		'db3',
		"SELECT state IN ('failed', 'not started') AND last_error LIKE '%background worker slot%'"
		  . " FROM estream.workers WHERE database = current_database()"),
	'estream.workers of db3 says why it has no worker');

# what depends on the worker says that it does not run: a capture made
# now warns and shows "not running", maintenance_errors has a row, and
# the table owner (not a superuser) sees both
$node->safe_psql('postgres', 'CREATE ROLE owner3 LOGIN');
$node->safe_psql('db3', q{
SELECT estream.grant_acl('owner3', 'create', 'cluster');
GRANT CREATE ON SCHEMA public TO owner3;
});
($ret, $out, $err) = $node->psql('db3', q{
CREATE TABLE t3 (id int PRIMARY KEY);
SELECT estream.capture('t3', 't3');
}, extra_params => [ '-U', 'owner3' ]);
is($ret, 0, 'db3: capture() without a worker succeeds');
like($err,
	qr/WARNING:  table "public.t3" will not be captured until the estream worker of this database runs\nDETAIL:  The worker does not run: no free worker slot\./,
	'db3: with a warning that says why');
is( $node->safe_psql(
		'db3', q{SELECT state || ' / ' || not_running_because FROM estream.captures},
		extra_params => [ '-U', 'owner3' ]),
	'waiting for its initial copy / no free worker slot', 'db3: the capture waits, and shows why');
like( $node->safe_psql(
		'db3', q{SELECT coalesce(topic, '-') || ' ' || step || ' ' || sqlstate || ' ' || message FROM estream.maintenance_errors},
		extra_params => [ '-U', 'owner3' ]),
	qr/^- worker 55000 the estream worker of this database does not run \(no free worker slot\): no topic is rolled/,
	'db3: maintenance_errors says no topic is maintained');
is($node->safe_psql('db3', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'owner3'}),
	'f', 'owner3 is still not a superuser');

# db2 with a capture that streams, then the worker disabled: the capture
# is "not running (disabled)" and streams again once it is enabled
$node->safe_psql('db2', q{
CREATE TABLE t2 (id int PRIMARY KEY);
SELECT estream.capture('t2', 't2', '{"snapshot": false}');
});
ok( $node->poll_query_until(
		'db2', q{SELECT state = 'streaming' AND not_running_because IS NULL FROM estream.captures}),
	'db2: the capture streams');
is($node->safe_psql('db2', q{SELECT count(*) FROM estream.maintenance_errors}),
	'0', 'db2: no maintenance error while the worker runs');
$node->alter_system('estream.enable_worker', 'off');
ok( $node->poll_query_until(
		'db2', q{SELECT state || ' / ' || not_running_because FROM estream.captures},
		'not running / disabled'),
	'db2: with the worker disabled, the capture shows "not running / disabled"');
is( $node->safe_psql(
		'db2', q{SELECT step || ': ' || message FROM estream.maintenance_errors}),
	'worker: the estream worker of this database does not run (disabled): no topic is rolled, retained or compacted and no table is captured',
	'db2: and maintenance_errors says so');
($ret, $out, $err) = $node->psql('db2', q{
CREATE TABLE t2b (id int PRIMARY KEY);
SELECT estream.capture('t2b', 't2b');
});
like($err, qr/WARNING:  table "public.t2b" will not be captured.*\nDETAIL:  The worker does not run: disabled\./,
	'db2: capture() warns that the worker is disabled');
$node->safe_psql('db2', q{INSERT INTO t2 VALUES (1)});
$node->alter_system('estream.enable_worker', undef);
ok( $node->poll_query_until(
		'db2', q{SELECT count(*) = 2 FROM estream.captures WHERE state = 'streaming'}),
	'db2: enabled again, both captures stream');
ok( $node->poll_query_until(
		'db2', q{SELECT count(*) = 1 FROM estream.fetch('t2', 0, 0) WHERE value->>'op' = 'c'}),
	'db2: and the change made while it was disabled is in the topic');
is($node->safe_psql('db2', q{SELECT count(*) FROM estream.maintenance_errors}),
	'0', 'db2: no maintenance error once it runs');

# the worker of db1 dies: failed, with a message, and back again
my $pid = $node->safe_psql('db1',
	"SELECT pid FROM estream.workers WHERE database = current_database()");
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok( $node->poll_query_until(
		'db1',
		"SELECT last_error LIKE '%exited unexpectedly%' FROM estream.workers WHERE database = current_database()"),
	'a worker that died is reported with a message');

$node->stop;
done_testing();
