
# Copyright (c) 2026, estream developers

# The current version installed fresh (estream--<v>.sql, made from
# src/sql/) and reached by updating from 1.0 and from the previous version
# give the same catalog: every function's signature, attributes, body,
# rights and comment; every table, column, default, constraint, index,
# trigger, view definition, type, sequence, comment and grant; the
# extension's members, its dumped tables, its roles and its rows of
# configuration (test/sql/catalog_snapshot.sql).  A difference means that
# src/sql/catalog.sql and src/sql/updates/ disagree.

use strict;
use warnings;

use EstreamNode;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = EstreamNode->create('fresh_vs_update', conf => "estream.enable_worker = off\n");

my $version = $node->safe_psql('postgres',
	q{SELECT default_version FROM pg_available_extensions WHERE name = 'estream'});
my ($previous) = $node->safe_psql('postgres',
	qq{SELECT string_agg(source, ',') FROM pg_extension_update_paths('estream')
	   WHERE target = '$version' AND path = source || '--' || target});
note("current version $version, updated directly from $previous");

my %how = (
	fresh => "CREATE EXTENSION estream",
	from_1_0 => "CREATE EXTENSION estream VERSION '1.0'; ALTER EXTENSION estream UPDATE",
	from_previous => "CREATE EXTENSION estream VERSION '$previous'; ALTER EXTENSION estream UPDATE",
	changed => "CREATE EXTENSION estream VERSION '1.0'; ALTER EXTENSION estream UPDATE");
for my $db (sort keys %how)
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, $how{$db});
	is($node->safe_psql($db, q{SELECT extversion FROM pg_extension WHERE extname = 'estream'}),
		$version, "$db: at $version");
}

my $snapshot_file = 'test/sql/catalog_snapshot.sql';
sub snapshot
{
	my ($db) = @_;
	my ($ret, $out, $err) = $node->psql($db, undef,
		extra_params => [ '-X', '-v', 'ON_ERROR_STOP=1', '-f', $snapshot_file ]);
	die "catalog snapshot of $db failed: $err" if $ret != 0;
	return $out;
}

my $fresh = snapshot('fresh');
cmp_ok(scalar(() = $fresh =~ /^function /mg), '>', 100, 'the snapshot lists the functions');
cmp_ok(scalar(() = $fresh =~ /^column /mg), '>', 100, 'and the columns');
like($fresh, qr/^view \| topics \| /m, 'and the views');
like($fresh, qr/^trigger \| estream\.acl \| acl_invalidate /m, 'and the triggers');

for my $db (qw(from_1_0 from_previous))
{
	my $got = snapshot($db);
	if ($got eq $fresh)
	{
		pass("$db: the same catalog as a fresh install");
	}
	else
	{
		# the lines that differ, not two pages of text
		my %in_fresh = map { $_ => 1 } split /\n/, $fresh;
		my %in_got = map { $_ => 1 } split /\n/, $got;
		my @only_fresh = grep { !$in_got{$_} } split /\n/, $fresh;
		my @only_got = grep { !$in_fresh{$_} } split /\n/, $got;
		fail("$db: the same catalog as a fresh install");
		diag("only in the fresh install:\n  " . join("\n  ", @only_fresh));
		diag("only in $db:\n  " . join("\n  ", @only_got));
	}
}

# the comparison sees a change of each kind
my @changes = (
	[ 'a function body', q{CREATE OR REPLACE FUNCTION estream._ms_ago(p_now timestamptz, p_ms bigint) RETURNS timestamptz
		LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$ SELECT p_now $$} ],
	[ 'a column comment', q{COMMENT ON COLUMN estream.topic.owner IS 'changed'} ],
	[ 'a grant', q{GRANT EXECUTE ON FUNCTION estream._drain(integer) TO PUBLIC} ],
	[ 'a default', q{ALTER TABLE estream.capture ALTER COLUMN on_error SET DEFAULT 'skip'} ],
	[ 'a view', q{CREATE OR REPLACE VIEW estream.acls AS SELECT * FROM estream._acls() WHERE true} ]);
my $before = snapshot('changed');
is($before, $fresh, 'changed: the same catalog before the changes');
for my $c (@changes)
{
	my ($what, $sql) = @$c;
	$node->safe_psql('changed', "BEGIN; $sql; COMMIT;");
	my $after = snapshot('changed');
	isnt($after, $before, "the comparison sees $what");
	$before = $after;
}

$node->stop;
done_testing();
