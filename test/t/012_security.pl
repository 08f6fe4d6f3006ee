
# Copyright (c) 2026, estream developers

# Escalation attempts against the estream worker (a superuser) and the
# database worker's neighbours, by roles that hold only what PostgreSQL and
# estream give them.  After each, the attacker is still not a superuser, no
# file was written by a program run as the server's OS user, and the
# attacker's planted code was never called by the worker.
#
# What was tried:
#
# 1. A database owner (not a superuser) plants, in a schema it owns and in
#    public, an aggregate count(*) and count(anyelement), operators = on text,
#    name, oid, integer and bigint, ->> on jsonb, and functions named like
#    those the worker's SQL calls (position, effective_config, produce_batch,
#    pg_drop_replication_slot, max, coalesce-free helpers), every one of
#    which tries ALTER ROLE ... SUPERUSER and COPY ... TO PROGRAM and logs
#    who called it; then sets ALTER DATABASE ... SET search_path to that
#    schema first (plpgsql.variable_conflict, which could change what the
#    worker's PL/pgSQL means, needs a superuser to set), and the worker
#    restarts (as a failing command could make it).  Captures, maintenance and housekeeping run for a while.
# 2. A producer and consumer (rights granted with grant_acl, nothing else)
#    tries to write its topic's log directly: INSERT of a forged offset
#    (9223372036854775807), UPDATE, DELETE, TRUNCATE, CREATE TRIGGER on the
#    segment, CREATE RULE, ALTER TABLE, and to move another role's group
#    offsets with UPDATE; every one is refused (42501); after a restart the
#    partition still hands out the next dense offset.
# 3. capture() of pg_catalog.pg_authid, as the table's non-owner and as a
#    superuser: refused, no topic, no slot, no SCRAM verifier in any log.
# 4. A role with CREATEDB runs CREATE DATABASE ... TEMPLATE victim, DROP
#    DATABASE victim and ALTER DATABASE victim RENAME in a loop, all refused
#    by PostgreSQL: the victim's worker is never stopped (same process,
#    runs keep counting).  The victim's owner with CREATEDB renames the
#    database it is connected to (checks pass, the command fails): the
#    worker comes back at once rather than after the 10 s pause.
# 5. Captures are authorized while they run, not only when made: a table
#    given to another role, or a topic given away, ends the capture at the
#    worker's next step, and nothing the table's new owner writes reaches
#    the old capturer's topic.  Code of a table's owner that runs during
#    the initial copy (a row security policy forced on itself) and writes
#    into another captured table is captured like any write.  A database
#    owner's ALTER DATABASE ... SET extra_float_digits and bytea_output do
#    not change the events written for a superuser's table.
#
#
# User-defined casts to json on captured columns (enum, domain, composite,
# array, range) are tried in 013_cdc_user_code.pl.

use strict;
use warnings;
use Time::HiRes qw(time);

use EstreamNode;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = EstreamNode->create('security',
	cdc => 1,
	conf => "estream.worker_naptime = 100ms\n" . "log_statement = none\n");

my $tmp = PostgreSQL::Test::Utils::tempdir;
my $pwned = "$tmp/pwned";

sub is_superuser
{
	my ($role) = @_;
	return $node->safe_psql('postgres',
		"SELECT rolsuper FROM pg_roles WHERE rolname = '$role'");
}

# The test's own queries in the victim database name everything with its
# schema: the planted objects must never run as the test's superuser.
sub worker_runs
{
	my ($db) = @_;
	return $node->safe_psql($db,
		"SELECT coalesce(pg_catalog.max(runs), 0) FROM estream.workers"
		  . " WHERE database OPERATOR(pg_catalog.=) pg_catalog.current_database()");
}

$node->safe_psql(
	'postgres', q{
CREATE ROLE dbowner LOGIN;
CREATE ROLE app LOGIN;
CREATE ROLE creator LOGIN CREATEDB;
CREATE DATABASE victim OWNER dbowner;
});
$node->safe_psql('victim', 'CREATE EXTENSION estream');

#
# 1. The database owner's planted code and settings
#
my $plant = q{
CREATE TABLE %s.calls (who text, fn text);
CREATE FUNCTION %s.pwn(fn text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO %s.calls VALUES (current_user, fn);
	BEGIN
		ALTER ROLE dbowner SUPERUSER;
	EXCEPTION WHEN OTHERS THEN NULL;
	END;
	BEGIN
		COPY (SELECT 1) TO PROGRAM 'touch PWNED';
	EXCEPTION WHEN OTHERS THEN NULL;
	END;
END $$;
CREATE FUNCTION %s.count_sfunc(int8) RETURNS int8 LANGUAGE plpgsql AS
$$ BEGIN PERFORM %s.pwn('count'); RETURN $1 + 1; END $$;
CREATE FUNCTION %s.count_sfunc_any(int8, anyelement) RETURNS int8 LANGUAGE plpgsql AS
$$ BEGIN PERFORM %s.pwn('count(any)'); RETURN $1 + 1; END $$;
CREATE AGGREGATE %s.count(*) (sfunc = %s.count_sfunc, stype = int8, initcond = '0');
CREATE AGGREGATE %s.count(anyelement) (sfunc = %s.count_sfunc_any, stype = int8, initcond = '0');
CREATE FUNCTION %s.max_sfunc(int8, int8) RETURNS int8 LANGUAGE plpgsql AS
$$ BEGIN PERFORM %s.pwn('max'); RETURN greatest($1, $2); END $$;
CREATE AGGREGATE %s.max(int8) (sfunc = %s.max_sfunc, stype = int8);
CREATE FUNCTION %s.eq_text(text, text) RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN PERFORM %s.pwn('= text'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR %s.= (leftarg = text, rightarg = text, function = %s.eq_text);
CREATE FUNCTION %s.eq_name(name, name) RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN PERFORM %s.pwn('= name'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR %s.= (leftarg = name, rightarg = name, function = %s.eq_name);
CREATE FUNCTION %s.eq_name_text(name, text) RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN PERFORM %s.pwn('= name text'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR %s.= (leftarg = name, rightarg = text, function = %s.eq_name_text);
CREATE FUNCTION %s.eq_oid(oid, oid) RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN PERFORM %s.pwn('= oid'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR %s.= (leftarg = oid, rightarg = oid, function = %s.eq_oid);
CREATE FUNCTION %s.eq_int(integer, integer) RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN PERFORM %s.pwn('= int'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR %s.= (leftarg = integer, rightarg = integer, function = %s.eq_int);
CREATE FUNCTION %s.eq_bigint(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN PERFORM %s.pwn('= bigint'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR %s.= (leftarg = bigint, rightarg = bigint, function = %s.eq_bigint);
CREATE FUNCTION %s.arrow_text(jsonb, text) RETURNS text LANGUAGE plpgsql AS
$$ BEGIN PERFORM %s.pwn('->>'); RETURN $1 OPERATOR(pg_catalog.->>) $2; END $$;
CREATE OPERATOR %s.->> (leftarg = jsonb, rightarg = text, function = %s.arrow_text);
CREATE FUNCTION %s.position(text, text) RETURNS integer LANGUAGE plpgsql AS
$$ BEGIN PERFORM %s.pwn('position'); RETURN pg_catalog.position($1, $2); END $$;
CREATE FUNCTION %s.pg_drop_replication_slot(name) RETURNS void LANGUAGE plpgsql AS
$$ BEGIN PERFORM %s.pwn('pg_drop_replication_slot'); END $$;
CREATE FUNCTION %s.now() RETURNS timestamptz LANGUAGE plpgsql AS
$$ BEGIN PERFORM %s.pwn('now'); RETURN pg_catalog.now(); END $$;
CREATE FUNCTION %s.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql AS
$$ BEGIN PERFORM %s.pwn('clock_timestamp'); RETURN pg_catalog.clock_timestamp(); END $$;
GRANT USAGE ON SCHEMA %s TO PUBLIC;
GRANT INSERT ON %s.calls TO PUBLIC;
};
for my $schema ('evil', 'public')
{
	my $sql = $plant;
	$sql =~ s/%s/$schema/g;
	$sql =~ s/PWNED/$pwned-$schema/g;
	$sql = "CREATE SCHEMA evil;\n$sql" if $schema eq 'evil';
	$node->as_role('dbowner', $sql, dbname => 'victim');
}

# the owner's table is captured (by the superuser: a DBA's doing), so the
# capture step runs its SQL at every step
$node->as_role('dbowner',
	'CREATE TABLE public.orders (id integer PRIMARY KEY, note text);'
	  . "INSERT INTO public.orders VALUES (1, 'before');", dbname => 'victim');
$node->safe_psql('victim', "SELECT estream.capture('public.orders', 'orders')");
$node->safe_psql('victim',
	"SELECT estream.create_topic('kept', 1, '{\"segment.ms\": 1, \"retention.ms\": 1}')");

$node->as_role('dbowner', q{
ALTER DATABASE victim SET search_path = evil, public, pg_catalog;
ALTER DATABASE victim SET default_tablespace = pg_default;
}, dbname => 'victim');

# the worker starts again and reads the database's settings
$node->restart;
my $runs = worker_runs('victim');
$node->as_role('dbowner',
	"INSERT INTO public.orders SELECT g, 'after' FROM generate_series(2, 50) g", dbname => 'victim');
$node->safe_psql('victim',
	"SELECT estream.produce('kept', '{}') FROM generate_series(1, 10)");
ok( $node->poll_query_until(
		'victim',
		"SELECT pg_catalog.count(*) OPERATOR(pg_catalog.=) 50"
		  . " FROM estream.fetch('orders', 0, 0, max_records => 1000)"),
	'the capture went on under the planted settings');
ok( $node->poll_query_until(
		'victim',
		"SELECT runs OPERATOR(pg_catalog.>=) $runs + 20 FROM estream.workers"
		  . " WHERE database OPERATOR(pg_catalog.=) pg_catalog.current_database()"),
	'maintenance ran 20 times under the planted settings');
is( $node->safe_psql('victim',
		"SELECT errors, last_error FROM estream.workers"
		  . " WHERE database OPERATOR(pg_catalog.=) pg_catalog.current_database()"),
	'0|', 'the worker met no error');
is($node->safe_psql('victim', 'SELECT pg_catalog.count(*) FROM evil.calls'),
	'0', 'no code planted in the owner\'s schema ran');
is($node->safe_psql('victim', 'SELECT pg_catalog.count(*) FROM public.calls'),
	'0', 'no code planted in public ran');
is(is_superuser('dbowner'), 'f', 'the database owner is not a superuser');
ok(!-e "$pwned-evil" && !-e "$pwned-public", 'no program ran as the server\'s user');

# the database's own settings again, for the tests below
$node->as_role('dbowner', 'ALTER DATABASE victim RESET ALL', dbname => 'victim');
$node->restart;

#
# 2. A producer and consumer cannot write the log, nor touch the groups
#
$node->safe_psql(
	'victim', q{
SELECT estream.create_topic('app-topic', 1);
SELECT estream.grant_acl('app', 'read,write', 'topic', 'app-topic');
SELECT estream.grant_acl('app', 'read', 'group', 'app-group');
});
$node->as_role('app',
	"SELECT estream.produce('app-topic', '{\"n\": 1}') FROM generate_series(1, 12);"
	  . "SELECT count(*) FROM estream.poll('app-group', 'app-topic', auto_offset_reset => 'earliest')", dbname => 'victim');
$node->safe_psql('victim',
	"SELECT count(*) FROM estream.poll('other-group', 'app-topic', auto_offset_reset => 'earliest')");
my $seg = $node->safe_psql('victim',
	"SELECT format('estream.log_%s_%s', topic_id, current_segment) FROM estream.topic WHERE name = 'app-topic'");
my $log = $node->safe_psql('victim',
	"SELECT log_relid FROM estream.topic WHERE name = 'app-topic'");
for my $sql (
	"INSERT INTO $seg VALUES (0, 0, 9223372036854775807, now(), NULL, '{}', NULL, NULL)",
	"INSERT INTO $log VALUES (0, 0, 12, now(), NULL, '{}', NULL, NULL)",
	"UPDATE $seg SET value = '{}'",
	"DELETE FROM $seg",
	"TRUNCATE $seg",
	"CREATE TRIGGER t BEFORE INSERT ON $seg FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()",
	"CREATE RULE r AS ON INSERT TO $seg DO INSTEAD NOTHING",
	"ALTER TABLE $seg ADD COLUMN x int",
	"UPDATE estream.group_offset SET committed_offset = 0",
	"UPDATE estream.partition SET stable_offset = 9223372036854775807",
	"INSERT INTO estream.acl VALUES ('app', 'cluster', 'literal', '', 'all')",
	"SELECT estream._rewrite_segment('$seg', '{0}', '{0}')",
	"SELECT estream._truncate_segment('$seg')",
	"SELECT * FROM estream.poll('other-group', 'app-topic')",
	"SELECT estream.seek_to_beginning('other-group', 'app-topic')",
	"SELECT estream.delete_group('other-group')")
{
	like($node->fails_as('app', $sql, dbname => 'victim'), qr/ERROR:  42501/, "refused: $sql");
}
$node->restart;
is( $node->as_role('app', "SELECT \"offset\" FROM estream.produce('app-topic', '{}')", dbname => 'victim'),
	'12', 'after a restart the next offset is the next dense one');
is( $node->safe_psql('victim',
		"SELECT committed_offset FROM estream.committed('other-group', 'app-topic')"),
	'12', 'the other role\'s group did not move');

#
# 3. System catalogs cannot be captured
#
like(
	$node->fails_as('dbowner', "SELECT estream.capture('pg_catalog.pg_authid', 'secrets')", dbname => 'victim'),
	qr/ERROR:  42501/,
	'a non-superuser cannot capture pg_authid');
like(
	$node->fails_as($node->safe_psql('postgres', 'SELECT current_user'),
		"SELECT estream.capture('pg_catalog.pg_authid', 'secrets')", dbname => 'victim'),
	qr/ERROR:  42501/,
	'nor can a superuser');
is( $node->safe_psql('victim',
		"SELECT count(*) FROM estream.topic WHERE name = 'secrets'"),
	'0', 'no topic was made');

#
# 4. Refused database commands do not stop the victim's worker
#
my $pid = $node->safe_psql('victim',
	"SELECT pid FROM estream.workers WHERE database = 'victim'");
$runs = worker_runs('victim');
for my $i (1 .. 10)
{
	for my $sql (
		"CREATE DATABASE copy_$i TEMPLATE victim",
		'DROP DATABASE victim',
		"ALTER DATABASE victim RENAME TO stolen_$i")
	{
		like($node->fails_as('creator', $sql),
			qr/ERROR:  42501/, "refused: $sql") if $i == 1;
		$node->fails_as('creator', $sql) if $i > 1;
	}
}
is( $node->safe_psql('victim',
		"SELECT pid FROM estream.workers WHERE database = 'victim'"),
	$pid, 'the victim\'s worker was never stopped');
ok( $node->poll_query_until(
		'victim',
		"SELECT runs > $runs + 5 FROM estream.workers WHERE database = 'victim'"),
	'and kept running');

# the owner's rename passes the checks and fails: the worker comes back at once
$node->safe_psql('postgres', 'ALTER ROLE dbowner CREATEDB');
my $t0 = time();
like(
	$node->fails_as('dbowner', 'ALTER DATABASE victim RENAME TO renamed', dbname => 'victim'),
	qr/ERROR:  (0A000|55006)/,
	'renaming the current database fails');
ok( $node->poll_query_until(
		'victim',
		"SELECT pid IS NOT NULL AND pid <> $pid AND state IN ('idle', 'running') FROM estream.workers WHERE database = 'victim'"),
	'the worker is back');
cmp_ok(time() - $t0, '<', 8, 'well before the 10 s pause would end');

#
# 5. Captures authorized while they run
#
$node->safe_psql(
	'victim', q{
CREATE ROLE capt LOGIN;
CREATE SCHEMA capt AUTHORIZATION capt;
SELECT estream.grant_acl('capt', 'create', 'topic', 'capt.', pattern_type => 'prefixed');
});
$node->as_role('capt', q{
CREATE TABLE capt.src (id integer PRIMARY KEY, v text);
CREATE TABLE capt.src2 (id integer PRIMARY KEY, v text);
SELECT estream.capture('capt.src', 'capt.src');
SELECT estream.capture('capt.src2', 'capt.src2');
INSERT INTO capt.src VALUES (1, 'mine');
INSERT INTO capt.src2 VALUES (1, 'mine');
}, dbname => 'victim');
ok( $node->poll_query_until(
		'victim',
		"SELECT (SELECT count(*) FROM estream.fetch('capt.src', 0, 0)) = 1"
		  . " AND (SELECT count(*) FROM estream.fetch('capt.src2', 0, 0)) = 1"),
	'the capturer\'s changes are captured');
# the table goes to dbowner; the other topic to another role
$node->safe_psql('victim', 'ALTER TABLE capt.src OWNER TO dbowner');
$node->safe_psql('victim', "SELECT estream.alter_topic_owner('capt.src2', 'app')");
ok( $node->poll_query_until(
		'victim', "SELECT count(*) = 0 FROM estream.capture WHERE topic LIKE 'capt.%'"),
	'both captures ended');
$runs = worker_runs('victim');
$node->safe_psql('victim',
	"INSERT INTO capt.src VALUES (2, 'the new owner''s'); INSERT INTO capt.src2 VALUES (2, 'after')");
ok( $node->poll_query_until(
		'victim', "SELECT runs > $runs + 5 FROM estream.workers WHERE database = 'victim'"),
	'the worker ran on');
is( $node->safe_psql('victim',
		"SELECT (SELECT count(*) FROM estream.fetch('capt.src', 0, 0)) || ':'"
		  . " || (SELECT count(*) FROM estream.fetch('capt.src2', 0, 0))"),
	'1:1', 'nothing written after the rights went');
ok($node->log_contains(qr/estream stopped capturing table capt\.src into topic "capt\.src"/),
	'the end of the capture is logged');

# the owner's policy writes into another captured table during the copy
$node->safe_psql(
	'victim', q{
CREATE TABLE public.vt (id integer PRIMARY KEY, note text);
SELECT estream.capture('public.vt', 'vt');
GRANT INSERT ON public.vt TO capt;
});
$node->as_role('capt', q{
CREATE FUNCTION capt.policy_writes() RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN INSERT INTO public.vt VALUES (101, 'written during the copy') ON CONFLICT DO NOTHING; RETURN true; END $$;
CREATE TABLE capt.rls (id integer PRIMARY KEY);
INSERT INTO capt.rls VALUES (1);
ALTER TABLE capt.rls ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY p ON capt.rls USING (capt.policy_writes());
INSERT INTO public.vt VALUES (100, 'written directly');
SELECT estream.capture('capt.rls', 'capt.rls');
}, dbname => 'victim');
ok( $node->poll_query_until(
		'victim', "SELECT count(*) = 1 FROM estream.fetch('capt.rls', 0, 0)"),
	'the copy of the owner\'s table is made');
ok( $node->poll_query_until(
		'victim',
		"SELECT string_agg(value->'after'->>'id', ',' ORDER BY \"offset\") = '100,101'"
		  . " FROM estream.fetch('vt', 0, 0)"),
	'the write made by the owner\'s code during the copy is captured');

# the database owner's settings do not change what is written
$node->safe_psql(
	'victim', q{
CREATE TABLE public.exact (id integer PRIMARY KEY, f float8, b bytea);
SELECT estream.capture('public.exact', 'exact', '{"snapshot": false}');
});
$node->as_role('dbowner', q{
ALTER DATABASE victim SET extra_float_digits = -15;
ALTER DATABASE victim SET bytea_output = escape;
ALTER DATABASE victim SET IntervalStyle = sql_standard;
}, dbname => 'victim');
$node->restart;
ok( $node->poll_query_until(
		'victim', "SELECT state = 'streaming' FROM estream.captures WHERE topic = 'exact'"),
	'the capture streams');
$node->safe_psql('victim',
	"INSERT INTO public.exact VALUES (1, 3.14159265358979, '\\x00ff')");
ok( $node->poll_query_until(
		'victim', "SELECT count(*) = 1 FROM estream.fetch('exact', 0, 0)"),
	'the change is captured');
is( $node->safe_psql('victim',
		"SELECT value->'after'->>'f' || ' ' || (value->'after'->>'b') FROM estream.fetch('exact', 0, 0)"),
	'3.14159265358979 \\x00ff', 'rendered with the server\'s settings');
$node->as_role('dbowner', 'ALTER DATABASE victim RESET ALL', dbname => 'victim');

is(is_superuser('dbowner'), 'f', 'dbowner is still not a superuser');
is(is_superuser('app'), 'f', 'app is still not a superuser');
is(is_superuser('creator'), 'f', 'creator is still not a superuser');

$node->stop;
done_testing();
