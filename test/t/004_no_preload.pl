
# Copyright (c) 2026, estream developers

# estream without shared_preload_libraries: the extension installs and topics
# can be managed, but everything that needs the shared stable-offset state
# (produce, fetch, watermarks) raises 55000.  After a restart with the
# library preloaded, the same database works.

use strict;
use warnings;

use EstreamNode;
use PostgreSQL::Test::Utils;
use Test::More;

# deliberately not preloaded: the rest of test/estream.conf applies
my $node = EstreamNode->create('no_preload', preload => 0);

is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'),
	'', 'estream is not preloaded');

# Loading the library must not fail (_PG_init must stay quiet).
my ($ret, $stdout, $stderr) = $node->psql('postgres',
	"CREATE EXTENSION estream;
	 SELECT e.extversion = a.default_version
	 FROM pg_extension e JOIN pg_available_extensions a ON a.name = e.extname
	 WHERE e.extname = 'estream'");
is($stdout, 't', 'CREATE EXTENSION works without shared_preload_libraries')
  or diag "CREATE EXTENSION failed: $stderr";

($ret, $stdout, $stderr) = $node->psql('postgres',
	"SELECT estream.create_topic('np', 2)");
is($ret, 0, 'create_topic works without shared_preload_libraries')
  or diag "create_topic failed: $stderr";
($ret, $stdout, $stderr) = $node->psql('postgres',
	"SELECT name, partitions FROM estream.topic ORDER BY name");
is($stdout, 'np|2', 'the topic exists');

my $msg = 'estream must be loaded via shared_preload_libraries';

like(
	$node->psql_error(q{SELECT * FROM estream.produce('np', '{"a": 1}')}, on_error_stop => 0),
	qr/ERROR:  55000: \Q$msg\E/,
	'produce raises 55000 when not preloaded');
like(
	$node->psql_error(
		q{SELECT * FROM estream.produce_batch('np', ARRAY['{"a": 1}'::jsonb, '{"a": 2}'])},
		on_error_stop => 0),
	qr/ERROR:  55000: \Q$msg\E/,
	'produce_batch raises 55000 when not preloaded');
like(
	$node->psql_error(q{SELECT * FROM estream.fetch('np', 0, 0)}, on_error_stop => 0),
	qr/ERROR:  55000: \Q$msg\E/,
	'fetch raises 55000 when not preloaded');
like(
	$node->psql_error(q{SELECT * FROM estream.fetch('np', 0, 0, wait_ms => 10000)}, on_error_stop => 0),
	qr/ERROR:  55000: \Q$msg\E/,
	'long-poll fetch raises 55000 when not preloaded');
like(
	$node->psql_error(q{SELECT * FROM estream.watermarks('np')}, on_error_stop => 0),
	qr/ERROR:  55000: \Q$msg\E/,
	'watermarks raises 55000 when not preloaded');
like(
	$node->psql_error(q{SELECT * FROM estream.partitions}, on_error_stop => 0),
	qr/ERROR:  55000: \Q$msg\E/,
	'the partitions view raises 55000 when not preloaded');

# the failed calls left nothing behind
($ret, $stdout, $stderr) = $node->psql(
	'postgres', q{
DO $$
DECLARE
	n bigint;
BEGIN
	EXECUTE format('SELECT count(*) FROM %s',
				   (SELECT log_relid FROM estream.topic WHERE name = 'np')) INTO n;
	RAISE NOTICE 'records: %', n;
END
$$;});
like($stderr, qr/NOTICE:  records: 0/, 'failed produce calls stored no record');

# Restart with the library preloaded: the same topic now works.
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'estream'\nwal_level = logical\n");
$node->restart;

is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'),
	'estream', 'estream is preloaded after the restart');

# (no-ops, unless the first half failed: check the preloaded half anyway)
$node->safe_psql('postgres',
	"CREATE EXTENSION IF NOT EXISTS estream;
	 SELECT estream.create_topic('np', 2, if_not_exists => true);");

is( $node->safe_psql(
		'postgres',
		q{SELECT partition, "offset" FROM estream.produce('np', '{"a": 1}', partition => 0)}
	),
	'0|0',
	'produce works once preloaded');
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(format('%s:%s', partition, "offset"), ',' ORDER BY 1)
		  FROM estream.produce_batch('np', ARRAY['{"a": 2}'::jsonb, '{"a": 3}'], partition => 1)}
	),
	'1:0,1:1',
	'produce_batch works once preloaded');
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(format('%s:%s:%s', partition, "offset", value->>'a'), ','
		                    ORDER BY partition, "offset")
		  FROM (SELECT * FROM estream.fetch('np', 0, 0)
		        UNION ALL SELECT * FROM estream.fetch('np', 1, 0)) f}),
	'0:0:1,1:0:2,1:1:3',
	'fetch works once preloaded');
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(format('%s:%s:%s:%s', partition, log_start_offset, stable_offset, next_offset), ','
		                    ORDER BY partition)
		  FROM estream.watermarks('np')}),
	'0:0:1:1,1:0:2:2',
	'watermarks work once preloaded');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM estream.fetch('np', 0, 1, wait_ms => 100)}),
	'0',
	'a short long-poll times out empty once preloaded');

$node->stop;

done_testing();
