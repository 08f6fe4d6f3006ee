
# Copyright (c) 2026, estream developers

# Change data capture runs no user code with the worker's rights.
#
# The worker is a superuser.  to_jsonb() renders a value of a user-defined
# type through the type's cast to json when there is one, and whoever owns
# the type can create such a cast with a function of their own.  Here an
# ordinary role, "attacker", owns a table, its types and the casts, and a
# superuser captures the table.  What we tried:
#
# 1. Casts to json WITH FUNCTION, each trying to take over the server:
#    - on enum "mood": an SQL function, ALTER ROLE attacker SUPERUSER;
#    - on enum "color": a PL/pgSQL function, ALTER ROLE attacker SUPERUSER;
#    - on range "moodrange" (over the enum, made without C): a PL/pgSQL
#      function, COPY (SELECT 1) TO PROGRAM 'touch <file>';
#    - on its multirange "moodmultirange": an SQL function, COPY ... TO
#      PROGRAM 'touch <another file>'.
#    Every cast function first counts its call in a sequence (nextval() is
#    not rolled back, so calls made while decoding, in a transaction that is
#    always aborted, count too), then logs it in a table.
#    The captured table has columns of: the enum (also in the primary key,
#    so in every key), a domain over the enum, arrays of the enum (1-D, 2-D
#    with a null, empty) and of the domain, a composite type containing the
#    enum, an array of it, a domain over it, a composite nesting a
#    composite, an enum array, the second enum and the range, the range, the
#    multirange; and built-in types (numeric, jsonb, timestamptz,
#    timestamp, integer[], text).  Both paths: the initial copy (rows there
#    before capture()) and decoding (insert, updates with before images
#    under REPLICA IDENTITY FULL, an update of the key, a delete).
#    Checked: attacker is still not a superuser, no file was made, the
#    counter and the log are empty, no capture error, and every event and
#    key holds exactly the JSON the types' output functions give ("happy",
#    ["happy", "sad"], {"m": "happy", "n": 1}, "[sad,happy)", ...), the
#    built-in types exactly as to_jsonb() renders them.
# 2. The initial copy reads the table as its owner in a security-restricted
#    operation: a table under FORCE ROW LEVEL SECURITY whose policy calls a
#    function that records current_user and tries ALTER ROLE ... SUPERUSER
#    and CREATE TEMP TABLE.  It runs as "attacker", both fail (as the
#    superuser, row-level security would not even apply).
# 3. A hostile search_path: in a database owned by attacker, who sets its
#    search_path (ALTER DATABASE ... SET, which the worker picks up) to put
#    attacker_schema first, with the attacker's count(*), = on name, oid,
#    text, "char" and smallint, >, ->>, pg_current_snapshot(),
#    clock_timestamp(), and a type named "text" with a cast from
#    pg_snapshot, all counting their calls.  A table there is copied,
#    streamed and uncaptured (the slot dropped): none of them is called,
#    and the events are right.

use strict;
use warnings;

use EstreamNode;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = EstreamNode->create('cdc_user_code',
	cdc => 1,
	conf => "estream.worker_naptime = 100ms\n" . "timezone = 'UTC'\n");

$node->safe_psql('postgres', 'CREATE EXTENSION estream');
$node->safe_psql('postgres', 'CREATE ROLE attacker LOGIN');

# files the casts' COPY ... TO PROGRAM would make
my $range_file = $node->basedir . '/made_by_range_cast';
my $multi_file = $node->basedir . '/made_by_multirange_cast';

# Every query of this test starts with this: the database of part 3 has
# the attacker's search_path.
my $safe = 'SET search_path = pg_catalog, public;';

sub query
{
	my ($db, $sql) = @_;
	return $node->safe_psql($db, "$safe $sql");
}

sub log_of
{
	my ($db, $topic) = @_;
	return query($db, "SELECT log_relid::regclass FROM estream.topic WHERE name = '$topic'");
}

# The events of a topic in offset order, one line each:
# op|key|after|before, as the jsonb text of each part.
sub events
{
	my ($db, $topic) = @_;
	my $log = log_of($db, $topic);
	return query(
		$db, qq{
SELECT string_agg(format('%s|%s|%s|%s', value->>'op', convert_from(key, 'UTF8'),
						 value->'after', value->'before'), E'\n' ORDER BY partition, "offset")
FROM $log});
}

# A capture error ends the waits below at once (it would otherwise be
# retried until the timeout).
sub capture_errors
{
	my ($db) = @_;
	return query($db,
		"SELECT coalesce(string_agg(last_error, '; '), '') FROM estream.captures WHERE last_error IS NOT NULL"
	);
}

sub wait_streaming
{
	my ($db, $table) = @_;
	ok( $node->poll_query_until(
			$db, qq{
SELECT state OPERATOR(pg_catalog.=) 'streaming' OR last_error IS NOT NULL
FROM estream.captures WHERE source OPERATOR(pg_catalog.=) '$table'::pg_catalog.regclass}),
		"$table: initial copy made or failed");
	is(capture_errors($db), '', "$table: no capture error after the copy");
}

# Wait until the worker of $db has written everything committed so far (its
# slot confirmed past the current end of WAL), or failed.
sub wait_caught_up
{
	my ($db, $what) = @_;
	my $slot = $node->slot_name($db);
	my $lsn = query($db, 'SELECT pg_current_wal_lsn()');
	ok( $node->poll_query_until(
			$db, qq{
SELECT coalesce((SELECT confirmed_flush_lsn OPERATOR(pg_catalog.>=) '$lsn'
				 FROM pg_catalog.pg_replication_slots
				 WHERE slot_name OPERATOR(pg_catalog.=) '$slot'), false)
	OR EXISTS (SELECT 1 FROM estream.captures WHERE last_error IS NOT NULL)}),
		"capture caught up or failed: $what");
	is(capture_errors($db), '', "no capture error: $what");
}

# The canonical text of a jsonb value, to compare events with exactly.
sub canonical
{
	my ($json) = @_;
	$json =~ s/'/''/g;
	return query('postgres', "SELECT '$json'::jsonb");
}

#
# 1. Casts to json on the types of a captured table.
#

$node->safe_psql(
	'postgres', qq{
CREATE SCHEMA attacker_schema AUTHORIZATION attacker;
SET ROLE attacker;
SET search_path = pg_catalog;
CREATE SEQUENCE attacker_schema.cast_calls;
CREATE TABLE attacker_schema.calls (fn text, who text);

CREATE TYPE attacker_schema.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE attacker_schema.color AS ENUM ('red', 'green');
CREATE TYPE attacker_schema.moodrange AS RANGE (subtype = attacker_schema.mood);
CREATE DOMAIN attacker_schema.dmood AS attacker_schema.mood;
CREATE TYPE attacker_schema.pair AS (m attacker_schema.mood, n integer);
CREATE DOMAIN attacker_schema.dpair AS attacker_schema.pair;
CREATE TYPE attacker_schema.nest AS (p attacker_schema.pair, ms attacker_schema.mood[],
									 c attacker_schema.color, r attacker_schema.moodrange);

CREATE FUNCTION attacker_schema.mood_json(attacker_schema.mood) RETURNS json
LANGUAGE sql AS \$\$
	SELECT pg_catalog.nextval('attacker_schema.cast_calls');
	INSERT INTO attacker_schema.calls VALUES ('mood_json', current_user);
	ALTER ROLE attacker SUPERUSER;
	SELECT '"pwned"'::json;
\$\$;
CREATE CAST (attacker_schema.mood AS json) WITH FUNCTION attacker_schema.mood_json(attacker_schema.mood);

CREATE FUNCTION attacker_schema.color_json(attacker_schema.color) RETURNS json
LANGUAGE plpgsql AS \$\$
BEGIN
	PERFORM pg_catalog.nextval('attacker_schema.cast_calls');
	INSERT INTO attacker_schema.calls VALUES ('color_json', current_user);
	ALTER ROLE attacker SUPERUSER;
	RETURN '"pwned"';
END
\$\$;
CREATE CAST (attacker_schema.color AS json) WITH FUNCTION attacker_schema.color_json(attacker_schema.color);

CREATE FUNCTION attacker_schema.moodrange_json(attacker_schema.moodrange) RETURNS json
LANGUAGE plpgsql AS \$\$
BEGIN
	PERFORM pg_catalog.nextval('attacker_schema.cast_calls');
	COPY (SELECT 1) TO PROGRAM 'touch $range_file';
	INSERT INTO attacker_schema.calls VALUES ('moodrange_json', current_user);
	RETURN '"pwned"';
END
\$\$;
CREATE CAST (attacker_schema.moodrange AS json)
	WITH FUNCTION attacker_schema.moodrange_json(attacker_schema.moodrange);

CREATE FUNCTION attacker_schema.moodmulti_json(attacker_schema.moodmultirange) RETURNS json
LANGUAGE sql AS \$\$
	SELECT pg_catalog.nextval('attacker_schema.cast_calls');
	COPY (SELECT 1) TO PROGRAM 'touch $multi_file';
	INSERT INTO attacker_schema.calls VALUES ('moodmulti_json', current_user);
	SELECT '"pwned"'::json;
\$\$;
CREATE CAST (attacker_schema.moodmultirange AS json)
	WITH FUNCTION attacker_schema.moodmulti_json(attacker_schema.moodmultirange);

CREATE TABLE attacker_schema.t (
	id integer,
	m attacker_schema.mood,
	dm attacker_schema.dmood,
	ma attacker_schema.mood[],
	dma attacker_schema.dmood[],
	p attacker_schema.pair,
	pa attacker_schema.pair[],
	dp attacker_schema.dpair,
	nst attacker_schema.nest,
	c attacker_schema.color,
	r attacker_schema.moodrange,
	mr attacker_schema.moodmultirange,
	num numeric,
	j jsonb,
	ts timestamptz,
	tsl timestamp,
	ia integer[],
	note text,
	PRIMARY KEY (id, m));
ALTER TABLE attacker_schema.t REPLICA IDENTITY FULL;
INSERT INTO attacker_schema.t VALUES
	(1, 'happy', 'sad', '{happy,sad}', '{ok}', '(happy,1)', ARRAY['(sad,2)', NULL]::attacker_schema.pair[],
	 '(ok,3)', ROW('(happy,4)', '{{sad,ok},{happy,NULL}}', 'green', '[sad,happy)'),
	 'red', '[sad,happy)', '{[sad,ok), [happy,happy]}',
	 100.50, '{"a": {"b": [1, 2.50]}}', '2026-01-02 03:04:05.5+00', '2026-01-02 03:04:05.5', '{1,2}', 'x'),
	(2, 'ok', NULL, '{}', '{NULL}', '(,)', '{}', NULL, ROW(NULL, '{}', NULL, 'empty'),
	 NULL, '(,)', '{}', 'NaN', '[]', NULL, NULL, '{}', NULL);
});

# to_jsonb() calls the casts: as attacker, each fails at what it tries
for my $v (
	"'sad'::attacker_schema.mood", "'red'::attacker_schema.color",
	"'[sad,ok)'::attacker_schema.moodrange",
	"'{[sad,ok)}'::attacker_schema.moodmultirange")
{
	my ($ret, $out, $err) =
	  $node->psql('postgres', "SET ROLE attacker; SELECT to_jsonb($v)");
	like($err, qr/must be superuser/, "to_jsonb($v) calls the attacker's cast");
}
query('postgres', "SELECT setval('attacker_schema.cast_calls', 1, false)");

query('postgres', "SELECT estream.capture('attacker_schema.t')");
wait_streaming('postgres', 'attacker_schema.t');

# decoding: the same values inserted again, updated (before images), the
# key changed, deleted
$node->safe_psql(
	'postgres', q{
SET ROLE attacker;
INSERT INTO attacker_schema.t SELECT id + 10, m, dm, ma, dma, p, pa, dp, nst, c, r, mr, num, j, ts, tsl, ia, note
FROM attacker_schema.t;
UPDATE attacker_schema.t SET c = 'green', ma = '{{sad},{happy}}' WHERE id = 11;
UPDATE attacker_schema.t SET m = 'sad' WHERE id = 12;
DELETE FROM attacker_schema.t WHERE id = 1;
});
wait_caught_up('postgres', 'changes of the attacker\'s table');

is( query('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'attacker'"),
	'f', 'attacker is not a superuser');
ok(!-e $range_file, 'no file made by the range\'s cast (COPY TO PROGRAM, PL/pgSQL)');
ok(!-e $multi_file, 'no file made by the multirange\'s cast (COPY TO PROGRAM, SQL)');
is( query('postgres', 'SELECT is_called FROM attacker_schema.cast_calls'),
	'f', 'no cast function was called (their counter is untouched)');
is(query('postgres', 'SELECT count(*) FROM attacker_schema.calls'),
	'0', 'no cast function was called (their log is empty)');

my $row1 = canonical(
	q{{"id": 1, "m": "happy", "dm": "sad", "ma": ["happy", "sad"], "dma": ["ok"],
	   "p": {"m": "happy", "n": 1}, "pa": [{"m": "sad", "n": 2}, null], "dp": {"m": "ok", "n": 3},
	   "nst": {"p": {"m": "happy", "n": 4}, "ms": [["sad", "ok"], ["happy", null]], "c": "green",
			   "r": "[sad,happy)"},
	   "c": "red", "r": "[sad,happy)", "mr": "{[sad,ok),[happy,happy]}",
	   "num": 100.50, "j": {"a": {"b": [1, 2.50]}}, "ts": "2026-01-02T03:04:05.5+00:00",
	   "tsl": "2026-01-02T03:04:05.5", "ia": [1, 2], "note": "x"}});
my $row2 = canonical(
	q{{"id": 2, "m": "ok", "dm": null, "ma": [], "dma": [null], "p": {"m": null, "n": null},
	   "pa": [], "dp": null, "nst": {"p": null, "ms": [], "c": null, "r": "empty"}, "c": null,
	   "r": "(,)", "mr": "{}", "num": "NaN", "j": [], "ts": null, "tsl": null, "ia": [],
	   "note": null}});
(my $row11 = $row1) =~ s/"id": 1,/"id": 11,/;
(my $row12 = $row2) =~ s/"id": 2,/"id": 12,/;
(my $row11u = $row11) =~ s/"c": "red"/"c": "green"/;
$row11u =~ s/"ma": \["happy", "sad"\]/"ma": [["sad"], ["happy"]]/;
(my $row12u = $row12) =~ s/"m": "ok"/"m": "sad"/;
isnt($row11, $row1, 'expected rows derived');
isnt($row11u, $row11, 'expected update derived (c)');
isnt($row12u, $row12, 'expected update derived (m)');

is( events('postgres', 'postgres.attacker_schema.t'),
	join("\n",
		qq(r|{"m": "happy", "id": 1}|$row1|null),
		qq(r|{"m": "ok", "id": 2}|$row2|null),
		qq(c|{"m": "happy", "id": 11}|$row11|null),
		qq(c|{"m": "ok", "id": 12}|$row12|null),
		qq(u|{"m": "happy", "id": 11}|$row11u|$row11),
		qq(d|{"m": "ok", "id": 12}|null|$row12),
		qq(c|{"m": "sad", "id": 12}|$row12u|null),
		qq(d|{"m": "happy", "id": 1}|null|$row1)),
	'copy and decoding: values of user-defined types by their output functions, keys included; built-in types as to_jsonb() renders them'
);

# built-in types exactly as to_jsonb() renders them in SQL
is( query(
		'postgres', q{
SELECT jsonb_build_object('num', to_jsonb(num), 'j', to_jsonb(j), 'ts', to_jsonb(ts),
						  'tsl', to_jsonb(tsl), 'ia', to_jsonb(ia), 'note', to_jsonb(note))
FROM attacker_schema.t WHERE id = 11}),
	query(
		'postgres',
		'SELECT jsonb_build_object('
		  . join(', ', map { "'$_', value->'after'->'$_'" } qw(num j ts tsl ia note))
		  . ') FROM '
		  . log_of('postgres', 'postgres.attacker_schema.t')
		  . " WHERE value->>'op' = 'u'"),
	'built-in types: the same JSON as to_jsonb() in SQL');

#
# 2. The copy reads the table as its owner, in a security-restricted
#    operation.
#

$node->safe_psql(
	'postgres', q{
SET ROLE attacker;
SET search_path = pg_catalog;
CREATE TABLE attacker_schema.seen (who text, alter_role text, temp_table text);
CREATE FUNCTION attacker_schema.spy() RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
	v_alter text := 'succeeded';
	v_temp text := 'succeeded';
BEGIN
	BEGIN
		ALTER ROLE attacker SUPERUSER;
	EXCEPTION WHEN OTHERS THEN
		v_alter := SQLERRM;
	END;
	BEGIN
		CREATE TEMP TABLE spy_temp (x integer);
	EXCEPTION WHEN OTHERS THEN
		v_temp := SQLERRM;
	END;
	INSERT INTO attacker_schema.seen VALUES (current_user, v_alter, v_temp);
	RETURN true;
END
$$;
CREATE TABLE attacker_schema.rls_t (id integer PRIMARY KEY);
INSERT INTO attacker_schema.rls_t VALUES (1);
ALTER TABLE attacker_schema.rls_t ENABLE ROW LEVEL SECURITY;
ALTER TABLE attacker_schema.rls_t FORCE ROW LEVEL SECURITY;
CREATE POLICY spy ON attacker_schema.rls_t USING (attacker_schema.spy());
});
query('postgres', "SELECT estream.capture('attacker_schema.rls_t')");
wait_streaming('postgres', 'attacker_schema.rls_t');
my ($who, $alter, $temp) = split /\|/,
  query('postgres', 'SELECT DISTINCT who, alter_role, temp_table FROM attacker_schema.seen');
is($who, 'attacker', 'the copy reads the table as its owner (its policy ran as attacker)');
like($alter, qr/^must be superuser/, 'the owner\'s code could not make itself a superuser');
is( $temp,
	'cannot create temporary table within security-restricted operation',
	'the copy is a security-restricted operation');
is( events('postgres', 'postgres.attacker_schema.rls_t'),
	'r|{"id": 1}|{"id": 1}|null', 'the rows the owner sees are copied');
is( query('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'attacker'"),
	'f', 'attacker is still not a superuser');

#
# 3. A hostile search_path, set by the database's owner.
#

$node->safe_psql('postgres', 'CREATE DATABASE hostile OWNER attacker');
$node->safe_psql(
	'hostile', q{
CREATE SCHEMA attacker_schema AUTHORIZATION attacker;
SET ROLE attacker;
SET search_path = pg_catalog;
CREATE SEQUENCE attacker_schema.shadow_calls;
CREATE FUNCTION attacker_schema.called() RETURNS void
LANGUAGE sql AS $$ SELECT pg_catalog.nextval('attacker_schema.shadow_calls') $$;

CREATE FUNCTION attacker_schema.count_step(bigint) RETURNS bigint
LANGUAGE plpgsql AS $$ BEGIN PERFORM attacker_schema.called(); RETURN $1 OPERATOR(pg_catalog.+) 1; END $$;
CREATE AGGREGATE attacker_schema.count(*) (sfunc = attacker_schema.count_step, stype = bigint, initcond = '0');

CREATE FUNCTION attacker_schema.name_eq(name, name) RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN PERFORM attacker_schema.called(); RETURN pg_catalog.nameeq($1, $2); END $$;
CREATE OPERATOR attacker_schema.= (leftarg = name, rightarg = name, function = attacker_schema.name_eq);
CREATE FUNCTION attacker_schema.oid_eq(oid, oid) RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN PERFORM attacker_schema.called(); RETURN pg_catalog.oideq($1, $2); END $$;
CREATE OPERATOR attacker_schema.= (leftarg = oid, rightarg = oid, function = attacker_schema.oid_eq);
CREATE FUNCTION attacker_schema.text_eq(text, text) RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN PERFORM attacker_schema.called(); RETURN pg_catalog.texteq($1, $2); END $$;
CREATE OPERATOR attacker_schema.= (leftarg = text, rightarg = text, function = attacker_schema.text_eq);
CREATE FUNCTION attacker_schema.char_eq("char", "char") RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN PERFORM attacker_schema.called(); RETURN pg_catalog.chareq($1, $2); END $$;
CREATE OPERATOR attacker_schema.= (leftarg = "char", rightarg = "char", function = attacker_schema.char_eq);
CREATE FUNCTION attacker_schema.int2_eq(smallint, smallint) RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN PERFORM attacker_schema.called(); RETURN pg_catalog.int2eq($1, $2); END $$;
CREATE OPERATOR attacker_schema.= (leftarg = smallint, rightarg = smallint, function = attacker_schema.int2_eq);
CREATE FUNCTION attacker_schema.int4_gt(integer, integer) RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN PERFORM attacker_schema.called(); RETURN pg_catalog.int4gt($1, $2); END $$;
CREATE OPERATOR attacker_schema.> (leftarg = integer, rightarg = integer, function = attacker_schema.int4_gt);
CREATE FUNCTION attacker_schema.field_text(jsonb, text) RETURNS text
LANGUAGE plpgsql AS $$ BEGIN PERFORM attacker_schema.called(); RETURN pg_catalog.jsonb_object_field_text($1, $2); END $$;
CREATE OPERATOR attacker_schema.->> (leftarg = jsonb, rightarg = text, function = attacker_schema.field_text);
CREATE FUNCTION attacker_schema.pg_current_snapshot() RETURNS pg_snapshot
LANGUAGE plpgsql AS $$ BEGIN PERFORM attacker_schema.called(); RETURN pg_catalog.pg_current_snapshot(); END $$;
CREATE FUNCTION attacker_schema.clock_timestamp() RETURNS timestamptz
LANGUAGE plpgsql AS $$ BEGIN PERFORM attacker_schema.called(); RETURN pg_catalog.clock_timestamp(); END $$;
CREATE TYPE attacker_schema.text AS ENUM ('x');
CREATE FUNCTION attacker_schema.snapshot_text(pg_snapshot) RETURNS attacker_schema.text
LANGUAGE plpgsql AS $$ BEGIN PERFORM attacker_schema.called(); RETURN 'x'; END $$;
CREATE CAST (pg_snapshot AS attacker_schema.text) WITH FUNCTION attacker_schema.snapshot_text(pg_snapshot);

CREATE TABLE attacker_schema.h (id integer PRIMARY KEY, note pg_catalog.text);
INSERT INTO attacker_schema.h VALUES (1, 'before');
ALTER DATABASE hostile SET search_path = attacker_schema, pg_catalog, public;
});
$node->safe_psql('hostile', 'CREATE EXTENSION estream');

# the worker of the database connects with its settings; the poll queries
# of this test qualify their names, the other queries set search_path
$node->restart;
is( $node->safe_psql('hostile', 'SHOW search_path'),
	'attacker_schema, pg_catalog, public',
	'the database\'s search_path puts the attacker\'s schema first');
# two calls of the attacker's objects, counted: a name = name, a count(*)
is( $node->safe_psql('hostile', "SELECT 'a'::name = 'a'::name, count(*) FROM (VALUES (1)) v"),
	't|1', 'unqualified names resolve to the attacker\'s objects there');

query('hostile', "SELECT estream.capture('attacker_schema.h')");
wait_streaming('hostile', 'attacker_schema.h');
$node->safe_psql('hostile',
	"$safe INSERT INTO attacker_schema.h VALUES (2, 'after'); UPDATE attacker_schema.h SET note = 'changed' WHERE id = 1");
wait_caught_up('hostile', 'hostile search_path');
is( events('hostile', 'hostile.attacker_schema.h'),
	qq(r|{"id": 1}|{"id": 1, "note": "before"}|null
c|{"id": 2}|{"id": 2, "note": "after"}|null
u|{"id": 1}|{"id": 1, "note": "changed"}|null),
	'hostile search_path: the copy and the changes are right');
query('hostile', "SELECT estream.uncapture('attacker_schema.h')");
my $hostile_slot = $node->slot_name('hostile');
ok( $node->poll_query_until(
		'hostile', qq{
SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_replication_slots
		WHERE slot_name OPERATOR(pg_catalog.=) '$hostile_slot')
	 OPERATOR(pg_catalog.+)
	   (SELECT pg_catalog.count(*) FROM pg_catalog.pg_replication_origin
		WHERE roname OPERATOR(pg_catalog.=) '$hostile_slot')},
		'0'),
	'hostile search_path: uncapturing drops the slot and the origin');
is( query('hostile', 'SELECT last_value FROM attacker_schema.shadow_calls'),
	'2',
	'none of the attacker\'s functions, operators or casts was called by the worker (the two calls are the test\'s)'
);
is( query('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'attacker'"),
	'f', 'attacker is still not a superuser at the end');

done_testing();
