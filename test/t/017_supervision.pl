
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

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('supervision');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'estream'\n"
	  . "estream.worker_naptime = 100ms\n"
	  . "max_worker_processes = 4\n"
	  . "max_parallel_workers = 0\n");
$node->start;

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
my ($ret, $out, $err) = $node->psql('db3', 'CREATE EXTENSION estream');
is($ret, 0, 'CREATE EXTENSION in a third database');
like($err, qr/WARNING:  estream has no free background worker slot for this database/,
	'with a warning that no worker slot is free');
ok( $node->poll_query_until(
		'db3',
		"SELECT state IN ('failed', 'not started') AND last_error LIKE '%background worker slot%'"
		  . " FROM estream.workers WHERE database = current_database()"),
	'estream.workers of db3 says why it has no worker');

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
