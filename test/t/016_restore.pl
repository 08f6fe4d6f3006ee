
# Copyright (c) 2026, estream developers

# pg_dump and pg_restore of a database with estream (docs/operations.md,
# "Backup and restore"): topics, records, committed offsets, rights and
# topic owners come back; session members do not (a restored member would
# count as live until its session timed out, blocking seeks with 55006 and
# keeping its partitions from poll()); offsets continue after the highest
# restored one.

use strict;
use warnings;

use EstreamNode;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = EstreamNode->create('restore', cdc => 1, conf => "estream.worker_naptime = 100ms\n");

$node->safe_psql(
	'postgres', q{
CREATE ROLE app LOGIN;
CREATE DATABASE src;
});
$node->safe_psql(
	'src', q{
CREATE EXTENSION estream;
SELECT estream.grant_acl('app', 'create', 'topic', 'app.', pattern_type => 'prefixed');
SELECT estream.grant_acl('app', 'read', 'group', '*');
GRANT CREATE ON SCHEMA public TO app;
});
$node->safe_psql(
	'src', q{
SELECT estream.create_topic('app.orders', 2);
SELECT count(*) FROM estream.produce_batch('app.orders',
	ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 10) g), partition => 0);
SELECT count(*) FROM estream.produce_batch('app.orders',
	ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 4) g), partition => 1);
SELECT count(*) FROM estream.poll('billing', 'app.orders', max_records => 7,
	auto_offset_reset => 'earliest');
SELECT * FROM estream.join_group('mailer', ARRAY['app.orders'], member_id => 'm1',
	session_timeout_ms => 3600000, auto_offset_reset => 'earliest');
}, extra_params => [ '-U', 'app' ]);

# poll() starts at a partition of its choosing, so which 7 records it read
# is not fixed: compare with what the source committed
my $committed_sql =
  "SELECT string_agg(partition || ':' || committed_offset, ',' ORDER BY partition) FROM estream.committed('billing', 'app.orders')";
my $committed_src = $node->safe_psql('src', $committed_sql);
like($committed_src, qr/^0:\d+,1:\d+$/, 'the source has committed offsets');
is(eval { my ($a, $b) = $committed_src =~ /^0:(\d+),1:(\d+)$/; $a + $b }, 7,
	'the source committed the 7 records it polled');

# a captured table, its copy and a change in the topic before the dump
$node->safe_psql(
	'src', q{
CREATE TABLE items (id int PRIMARY KEY, label text);
INSERT INTO items VALUES (1, 'one'), (2, 'two');
SELECT estream.capture('items', 'app.items');
}, extra_params => [ '-U', 'app' ]);
ok( $node->poll_query_until(
		'src', q{SELECT state = 'streaming' FROM estream.captures WHERE topic = 'app.items'}),
	'src: the capture streams');
$node->safe_psql('src', q{INSERT INTO items VALUES (3, 'three')}, extra_params => [ '-U', 'app' ]);
ok( $node->poll_query_until(
		'src', q{SELECT count(*) = 3 FROM estream.fetch('app.items', 0, 0)}),
	'src: the copy and the change are in the topic');

my $dump = PostgreSQL::Test::Utils::tempdir . '/src.dump';
command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('src') ], 'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE dst');
command_ok([ 'pg_restore', '-d', $node->connstr('dst'), $dump ], 'pg_restore');

is( $node->safe_psql(
		'dst',
		"SELECT string_agg(topic || ':' || owner, ',' ORDER BY topic) FROM estream.topics"),
	'app.items:app,app.orders:app', 'the topics and their owner are back');
is( $node->safe_psql(
		'dst',
		"SELECT string_agg(partition || ':' || stable_offset, ',' ORDER BY partition) FROM estream.watermarks('app.orders')"),
	'0:10,1:4', 'every record is back');
is( $node->safe_psql(
		'dst',
		"SELECT string_agg(role || ' ' || operation || ' ' || resource_type || ' ' || resource_name, ', ' ORDER BY role, resource_type)"
		  . " FROM estream.acls WHERE NOT predefined"),
	'app read group *, app create topic app.',
	'the rights are back');
is($node->safe_psql('dst', $committed_sql),
	$committed_src, 'the committed offsets are back');
is($node->safe_psql('dst', 'SELECT count(*) FROM estream.group_members'),
	'0', 'no session member was restored');

# as the application: the group goes on where it was, the member's
# partitions are free, a seek works, and new records get the next offsets
is( $node->safe_psql(
		'dst',
		"SELECT count(*) FROM estream.poll('mailer', 'app.orders')",
		extra_params => [ '-U', 'app' ]),
	'14', 'the former member\'s group polls every partition');
is( $node->safe_psql(
		'dst',
		"SELECT count(*) FROM estream.seek_to_beginning('mailer', 'app.orders')",
		extra_params => [ '-U', 'app' ]),
	'2', 'and seeks');
is( $node->safe_psql(
		'dst',
		"SELECT \"offset\" FROM estream.produce('app.orders', '{}', partition => 0)",
		extra_params => [ '-U', 'app' ]),
	'10', 'offsets go on after the restored ones');

# the capture, as docs/operations.md says: not restored; captured again
# without a copy, it goes on with the changes after it, and the topic has
# each row once from before the dump
is($node->safe_psql('dst', 'SELECT count(*) FROM estream.captures'),
	'0', 'no capture was restored');
is( $node->safe_psql(
		'dst', q{SELECT estream.capture('items', 'app.items', '{"snapshot": false}')},
		extra_params => [ '-U', 'app' ]),
	'app.items', 'the table is captured again into its topic, without a copy');
ok( $node->poll_query_until(
		'dst', q{SELECT state = 'streaming' FROM estream.captures WHERE topic = 'app.items'}),
	'dst: the capture streams');
$node->safe_psql('dst', q{INSERT INTO items VALUES (4, 'four'); UPDATE items SET label = 'ONE' WHERE id = 1},
	extra_params => [ '-U', 'app' ]);
ok( $node->poll_query_until(
		'dst', q{SELECT count(*) = 5 FROM estream.fetch('app.items', 0, 0)}),
	'dst: the changes after it are in the topic');
is( $node->safe_psql(
		'dst',
		q{SELECT string_agg("offset" || ' ' || (value->>'op') || ' ' || key, ', ' ORDER BY "offset")
		  FROM estream.fetch('app.items', 0, 0)},
		extra_params => [ '-U', 'app' ]),
	'0 r {"id": 1}, 1 r {"id": 2}, 2 c {"id": 3}, 3 c {"id": 4}, 4 u {"id": 1}',
	'dst: each row once from the copy before the dump, then the new changes; no second copy');

$node->stop;
done_testing();
