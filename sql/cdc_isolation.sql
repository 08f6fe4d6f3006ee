-- Change data capture, failure policies (1.4): the "on_error" option,
-- resume_capture() with its errors and rights, the columns of
-- estream.captures for stopped captures, estream.capture_dead_letters and
-- who sees what of it, and the escaped default topic names.  The worker
-- is off here: states that the worker sets (stopped, dead letters) are
-- made by hand.  What the worker does is tested in
-- test/t/015_cdc_isolation.pl.
\set VERBOSITY terse
SET synchronous_commit = on;

CREATE SCHEMA cdc_iso;
CREATE ROLE regress_ci_owner;
CREATE ROLE regress_ci_other;
CREATE ROLE regress_ci_mon IN ROLE estream_monitor;
CREATE ROLE regress_ci_reader;
GRANT USAGE ON SCHEMA cdc_iso TO PUBLIC;
CREATE TABLE cdc_iso.t (id integer PRIMARY KEY, v text);
CREATE TABLE cdc_iso.owned (id integer PRIMARY KEY);
ALTER TABLE cdc_iso.owned OWNER TO regress_ci_owner;

--
-- The option
--
SELECT estream.capture('cdc_iso.t', options => '{"on_error": "retry"}');
SELECT estream.capture('cdc_iso.t', options => '{"on_error": true}');
SELECT estream.capture('cdc_iso.t', options => '{"on_errors": "skip"}');
SELECT estream.capture('cdc_iso.t', 'iso-t', '{"on_error": "skip"}');
SELECT estream.capture('cdc_iso.owned', 'iso-owned');
SELECT source, state, on_error, progress_lsn, retained_bytes, stopped_at, stop_error, dead_letters
FROM estream.captures ORDER BY source::text;

--
-- resume_capture(): errors
--
SELECT estream.resume_capture(NULL);
SELECT estream.resume_capture('cdc_iso.missing');
CREATE TABLE cdc_iso.not_captured (id integer PRIMARY KEY);
SELECT estream.resume_capture('cdc_iso.not_captured');
SELECT estream.resume_capture('cdc_iso.t');
SELECT estream.resume_capture('cdc_iso.t', 'retry');

-- a capture stopped in its stream (as the worker stops it), and one whose
-- initial copy failed
UPDATE estream.capture SET snapshot = pg_current_snapshot(), snapshot_rows = 0,
	   progress_lsn = '0/10', stopped_at = now(), stop_error = 'record is too large for topic "iso-t"',
	   stop_sqlstate = '54000', stop_lsn = '0/18', stop_xid = 1234
 WHERE relid = 'cdc_iso.t'::regclass;
UPDATE estream.capture SET stopped_at = now(), stop_error = 'the owner''s policy refuses', stop_sqlstate = 'P0001'
 WHERE relid = 'cdc_iso.owned'::regclass;
SELECT source, state, progress_lsn, retained_bytes > 0 AS keeps_wal, lag_bytes = retained_bytes AS lag_is_kept,
	   lag_seconds, stop_lsn, stop_xid, stop_error, stop_sqlstate
FROM estream.captures ORDER BY source::text;

--
-- resume_capture(): rights, as uncapture()'s
--
SET ROLE regress_ci_other;
SELECT estream.resume_capture('cdc_iso.t');
SELECT estream.resume_capture('cdc_iso.owned');
SELECT estream.resume_capture('cdc_iso.not_captured');
SELECT source FROM estream.captures;
RESET ROLE;
-- the table's owner: from the failed copy, a new copy
SET ROLE regress_ci_owner;
SELECT estream.resume_capture('cdc_iso.owned');
RESET ROLE;
-- the topic's owner, changing the policy: from its position
SELECT estream.alter_topic_owner('iso-t', 'regress_ci_other');
SET ROLE regress_ci_other;
SELECT estream.resume_capture('cdc_iso.t', on_error => 'stop');
RESET ROLE;
SELECT source, state, on_error, progress_lsn, stopped_at, stop_lsn, stop_error
FROM estream.captures ORDER BY source::text;
-- a superuser (the cluster's alter right)
UPDATE estream.capture SET stopped_at = now(), stop_error = 'again' WHERE relid = 'cdc_iso.t'::regclass;
SELECT estream.resume_capture('cdc_iso.t');
SELECT state FROM estream.captures WHERE source = 'cdc_iso.t'::regclass;
-- nobody but the extension's owner touches the tables
SET ROLE regress_ci_other;
SELECT count(*) FROM estream.capture_dead_letter;
INSERT INTO estream.capture_dead_letter (relid, capture_created_at, source_schema, source_table, topic_id,
										 topic, lsn, xid, commit_ts, error, sqlstate)
VALUES (1, now(), 'x', 'y', 1, 'iso-t', '0/1', 1, now(), 'forged', 'XX000');
UPDATE estream.capture SET stopped_at = NULL;
RESET ROLE;

--
-- Dead letters: rows for who may describe the topic, key and event for who
-- may read it
--
INSERT INTO estream.capture_dead_letter (relid, capture_created_at, source_schema, source_table, topic_id,
										 topic, lsn, xid, commit_ts, key, event, error, error_detail, sqlstate)
SELECT c.relid, c.created_at, c.source_schema, c.source_table, c.topic_id, c.topic, '0/20', 1235,
	   '2026-01-01 00:00:00+00', '{"id": 7}', '{"op": "c", "after": {"id": 7, "v": "big"}}',
	   'record is too large for topic "iso-t"', 'The record has 3100 bytes of key, value and headers; the limit is 2000 bytes.',
	   '54000'
  FROM estream.capture c WHERE c.relid = 'cdc_iso.t'::regclass;
SELECT source, topic, lsn, xid, commit_ts, key, event, error, error_detail, sqlstate
FROM estream.capture_dead_letters;
SELECT dead_letters FROM estream.captures WHERE source = 'cdc_iso.t'::regclass;
SET ROLE regress_ci_mon;
SELECT source, topic, lsn, key, event, error FROM estream.capture_dead_letters;
RESET ROLE;
SELECT estream.grant_acl('regress_ci_reader', 'read', 'topic', 'iso-t');
SELECT estream.grant_acl('regress_ci_reader', 'describe', 'topic', 'iso-t');
SET ROLE regress_ci_reader;
SELECT source, topic, lsn, key, event FROM estream.capture_dead_letters;
RESET ROLE;
SET ROLE regress_ci_owner;
SELECT count(*) AS dead_letters_seen FROM estream.capture_dead_letters;
RESET ROLE;
-- a security barrier: the caller's function in WHERE sees only its rows
CREATE FUNCTION cdc_iso.peek(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS
$$ BEGIN RAISE NOTICE 'peeked at %', $1; RETURN true; END $$;
SET ROLE regress_ci_owner;
SELECT count(*) FROM estream.capture_dead_letters WHERE cdc_iso.peek(error);
RESET ROLE;

--
-- Default topic names: characters other than A-Z a-z 0-9 _ in the schema
-- and the table escaped as -XX per UTF-8 byte
--
CREATE TABLE cdc_iso."a b" (id integer PRIMARY KEY);
CREATE TABLE cdc_iso.a_b (id integer PRIMARY KEY);
CREATE TABLE cdc_iso."a.b" (id integer PRIMARY KEY);
CREATE TABLE cdc_iso."a-b" (id integer PRIMARY KEY);
CREATE TABLE cdc_iso."Été" (id integer PRIMARY KEY);
SELECT estream.capture(t) FROM unnest(ARRAY['cdc_iso."a b"', 'cdc_iso.a_b', 'cdc_iso."a.b"',
											 'cdc_iso."a-b"', 'cdc_iso."Été"']::regclass[]) t;
-- a default name that is another table's topic by name: refused
CREATE TABLE cdc_iso.x (id integer PRIMARY KEY);
CREATE TABLE cdc_iso.y (id integer PRIMARY KEY);
SELECT estream.capture('cdc_iso.x', 'contrib_regression.cdc_iso.y');
SELECT estream.capture('cdc_iso.y');
SELECT estream.capture('cdc_iso.y', 'contrib_regression.cdc_iso.y');
-- too long once escaped
CREATE SCHEMA "ééééééééééééééééééééééééééééééé";
CREATE TABLE "ééééééééééééééééééééééééééééééé"."ééééééééééééééééééééééééééééééé" (id integer PRIMARY KEY);
SELECT estream.capture('"ééééééééééééééééééééééééééééééé"."ééééééééééééééééééééééééééééééé"');
DROP SCHEMA "ééééééééééééééééééééééééééééééé" CASCADE;

--
-- Clean up
--
SELECT estream.revoke_acl('regress_ci_reader', 'read', 'topic', 'iso-t');
SELECT estream.revoke_acl('regress_ci_reader', 'describe', 'topic', 'iso-t');
SELECT estream.uncapture(c.relid::regclass) FROM estream.capture c ORDER BY c.relid;
SELECT estream.drop_topic(t.name) FROM estream.topic t
 WHERE t.name LIKE 'iso-%' OR t.name LIKE 'contrib_regression.cdc_iso.%' ORDER BY t.name;
SELECT count(*) AS dead_letters_left FROM estream.capture_dead_letter;
DROP SCHEMA cdc_iso CASCADE;
DROP ROLE regress_ci_owner, regress_ci_other, regress_ci_mon, regress_ci_reader;
