-- Change data capture (1.3): capture() and uncapture() with their errors,
-- and the event envelope of the output plugin "estream", read through the
-- SQL interface of logical decoding.  The worker is off here: captures stay
-- waiting for their initial copy, which the plugin does not mind (it
-- renders every change of a captured table).  The worker's copy, stream and
-- exactly-once writing are tested in test/t/010_cdc.pl.
\set VERBOSITY terse
SET synchronous_commit = on;

CREATE SCHEMA cdc;
CREATE TABLE cdc.kinds (
	id integer PRIMARY KEY,
	n numeric,
	t text,
	b boolean,
	ts timestamptz,
	j jsonb,
	a integer[],
	bin bytea);
CREATE TABLE cdc.nokey (x integer, y text);
CREATE TABLE cdc.full_ident (id integer PRIMARY KEY, v text);
ALTER TABLE cdc.full_ident REPLICA IDENTITY FULL;
CREATE TABLE cdc.parted (id integer, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE cdc.parted_eu PARTITION OF cdc.parted FOR VALUES IN ('eu');
CREATE TABLE cdc.parted_us PARTITION OF cdc.parted FOR VALUES IN ('us');
CREATE TABLE cdc.toasted (id integer PRIMARY KEY, big text, small integer);
CREATE TABLE cdc.narrow (id integer PRIMARY KEY, keep text, secret text);
CREATE TABLE cdc.not_captured (id integer PRIMARY KEY);

--
-- Bad input
--
SELECT estream.capture(NULL);
SELECT estream.capture('cdc.missing');
CREATE VIEW cdc.v AS SELECT * FROM cdc.kinds;
SELECT estream.capture('cdc.v');
DROP VIEW cdc.v;
CREATE SEQUENCE cdc.s;
SELECT estream.capture('cdc.s');
CREATE TEMP TABLE tmp_t (id integer PRIMARY KEY);
SELECT estream.capture('tmp_t');
CREATE UNLOGGED TABLE cdc.unlogged_t (id integer PRIMARY KEY);
SELECT estream.capture('cdc.unlogged_t');
SELECT estream.capture('estream.topic');
SELECT estream.capture('cdc.kinds', options => '[]');
SELECT estream.capture('cdc.kinds', options => '{"snapshots": true}');
SELECT estream.capture('cdc.kinds', options => '{"snapshot": "yes"}');
SELECT estream.capture('cdc.kinds', options => '{"columns": "id"}');
SELECT estream.capture('cdc.kinds', options => '{"columns": ["id", "nope", "zilch"]}');
SELECT estream.capture('cdc.kinds', options => '{"columns": []}');
SELECT estream.capture('cdc.kinds', options => '{"partitions": 2.5}');
SELECT estream.capture('cdc.kinds', topic => 'bad topic name');
-- a compacted topic needs keys
SELECT estream.create_topic('compacted', 1, '{"cleanup.policy": "compact"}');
SELECT estream.capture('cdc.nokey', 'compacted');
-- nothing was left behind by the failed calls
SELECT count(*) FROM estream.capture;
SELECT count(*) FROM estream.topic WHERE name LIKE '%kinds%';
SELECT estream.drop_topic('compacted');

--
-- Captures
--
SELECT estream.capture('cdc.kinds');
SELECT estream.capture('cdc.kinds');
SELECT estream.capture('cdc.nokey', 'nokey-events', '{"snapshot": false}');
SELECT estream.capture('cdc.full_ident');
-- a partition is captured as its root
SELECT estream.capture('cdc.parted_eu');
SELECT estream.capture('cdc.parted');
SELECT estream.capture('cdc.toasted');
SELECT estream.capture('cdc.narrow', options => '{"columns": ["id", "keep"], "before": false, "partitions": 3}');
SELECT source, topic, state, columns, before_image, initial_snapshot
FROM estream.captures ORDER BY source::text;
SELECT name, partitions FROM estream.topic WHERE name LIKE 'contrib_regression.%' OR name = 'nokey-events'
ORDER BY name;

SELECT estream.uncapture('cdc.not_captured');
SELECT estream.uncapture('cdc.not_captured', if_exists => true);
SELECT estream.uncapture(NULL);

--
-- The envelope, through the SQL interface
--
SELECT 'init' FROM pg_create_logical_replication_slot('regress_cdc', 'estream');

-- the changes of one line, without what differs from run to run
CREATE FUNCTION cdc.changes() RETURNS TABLE (topic text, key jsonb, op text, before jsonb, after jsonb, source jsonb)
LANGUAGE sql AS $$
	SELECT l->>'topic', l->'key', l->'value'->>'op', l->'value'->'before', l->'value'->'after',
		   (l->'value'->'source') - 'ts_ms' - 'lsn' - 'txId'
	FROM (SELECT data::jsonb AS l FROM pg_logical_slot_get_changes('regress_cdc', NULL, NULL)) x
	WHERE NOT l ? 'commit'
$$;

INSERT INTO cdc.kinds VALUES
	(1, 1.50, 'one', true, '2026-01-02 03:04:05.678+00', '{"x": [1, "y"]}', '{1,2,NULL}', '\x00ff'),
	(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
UPDATE cdc.kinds SET t = 'uno', n = n * 2 WHERE id = 1;
DELETE FROM cdc.kinds WHERE id = 2;
INSERT INTO cdc.not_captured VALUES (1);
SELECT * FROM cdc.changes();

-- source block, once in full
INSERT INTO cdc.kinds (id) VALUES (3);
SELECT source FROM cdc.changes();

-- a table captured while the slot decodes: the change before the capture
-- is not emitted, the one after is (decoded in one call: what is captured
-- follows the changes of estream.capture as of each change)
CREATE TABLE cdc.late (id integer PRIMARY KEY);
INSERT INTO cdc.late VALUES (1);
SELECT estream.capture('cdc.late', 'late');
INSERT INTO cdc.late VALUES (2);
SELECT topic, key, op FROM cdc.changes();

-- a rolled-back transaction and a rolled-back savepoint leave nothing
BEGIN;
INSERT INTO cdc.kinds (id) VALUES (4);
ROLLBACK;
BEGIN;
INSERT INTO cdc.kinds (id) VALUES (5);
SAVEPOINT s;
INSERT INTO cdc.kinds (id) VALUES (6);
ROLLBACK TO s;
COMMIT;
SELECT key, op FROM cdc.changes();

-- the commit line after each transaction with output
INSERT INTO cdc.kinds (id) VALUES (7), (8);
SELECT count(*) FILTER (WHERE data::jsonb ? 'commit') AS commits,
	   count(*) FILTER (WHERE NOT data::jsonb ? 'commit') AS changes
FROM pg_logical_slot_get_changes('regress_cdc', NULL, NULL);

-- no primary key: null key; with REPLICA IDENTITY DEFAULT and no key, the
-- delete carries no before image
INSERT INTO cdc.nokey VALUES (1, 'a');
UPDATE cdc.nokey SET y = 'b';
DELETE FROM cdc.nokey;
SELECT * FROM cdc.changes();

-- REPLICA IDENTITY FULL: full before images
INSERT INTO cdc.full_ident VALUES (1, 'a');
UPDATE cdc.full_ident SET v = 'b';
DELETE FROM cdc.full_ident;
SELECT * FROM cdc.changes();

-- a primary key change is a delete under the old key and a create under
-- the new one (with the default replica identity the old key is in the WAL
-- only then; under FULL the keys are compared)
INSERT INTO cdc.kinds (id, t) VALUES (20, 'moved');
UPDATE cdc.kinds SET id = 21 WHERE id = 20;
UPDATE cdc.kinds SET t = 'stays' WHERE id = 21;
INSERT INTO cdc.full_ident VALUES (1, 'a');
UPDATE cdc.full_ident SET id = 2;
UPDATE cdc.full_ident SET v = 'b';
DELETE FROM cdc.full_ident;
SELECT topic, key, op, before, after->>'id' AS after_id FROM cdc.changes();

-- partitions: the root's topic, and the root's name in the source block
INSERT INTO cdc.parted VALUES (1, 'eu'), (2, 'us');
SELECT topic, key, op, after, source->>'table' AS source_table FROM cdc.changes();

-- an unchanged TOASTed value is not in the WAL: placeholder
INSERT INTO cdc.toasted SELECT 1, string_agg(md5(g::text), ''), 1 FROM generate_series(1, 600) g;
UPDATE cdc.toasted SET small = 2;
SELECT op, after->>'small' AS small, length(after->>'big') > 10000 AS big_value, after->>'big' = '__debezium_unavailable_value' AS placeholder
FROM cdc.changes();

-- the columns option; no before image asked for
INSERT INTO cdc.narrow VALUES (1, 'k', 's');
UPDATE cdc.narrow SET keep = 'k2';
DELETE FROM cdc.narrow;
SELECT * FROM cdc.changes();

-- schema changes show in the events that follow
ALTER TABLE cdc.kinds ADD COLUMN added text DEFAULT 'new';
INSERT INTO cdc.kinds (id) VALUES (9);
ALTER TABLE cdc.kinds DROP COLUMN bin;
UPDATE cdc.kinds SET t = 'nine' WHERE id = 9;
SELECT op, after FROM cdc.changes();

-- TRUNCATE: one event per captured table, without key
TRUNCATE cdc.kinds, cdc.not_captured;
SELECT * FROM cdc.changes();

-- uncaptured: no more events
SELECT estream.uncapture('cdc.kinds');
INSERT INTO cdc.kinds (id) VALUES (10);
SELECT count(*) FROM cdc.changes();

-- the plugin takes no options
SELECT data FROM pg_logical_slot_get_changes('regress_cdc', NULL, NULL, 'include-xids', '1');

SELECT pg_drop_replication_slot('regress_cdc');

-- uncapture every table; the topics stay
SELECT estream.uncapture(c.relid::regclass) FROM estream.capture c;
SELECT count(*) FROM estream.captures;
SELECT count(*) FROM estream.topic WHERE name LIKE 'contrib_regression.cdc.%';
DROP SCHEMA cdc CASCADE;
