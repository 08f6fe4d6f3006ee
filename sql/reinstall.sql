-- DROP EXTENSION keeps the log tables of existing topics (user data); a
-- re-created extension starts topic ids above them, so nothing collides.
\set VERBOSITY terse
SET synchronous_commit = on;
SELECT estream.create_topic('keep_me', 1);
SELECT * FROM estream.produce('keep_me', '{"old": true}');
SELECT max(topic_id) AS last_id FROM estream.topic \gset
DROP EXTENSION estream;
SELECT to_regclass('estream.log_' || :last_id) IS NOT NULL AS old_log_kept;
CREATE EXTENSION estream;
SELECT estream.create_topic('keep_me', 1);
SELECT topic_id > :last_id AS new_id_above_old FROM estream.topic WHERE name = 'keep_me';
-- a fresh topic starts at offset 0
SELECT * FROM estream.produce('keep_me', '{"new": true}');
SELECT "offset", value FROM estream.fetch('keep_me', 0, 0);

-- upgrade path: install the oldest version, then update step by step
DROP EXTENSION estream;
CREATE EXTENSION estream VERSION '1.0';
SELECT extversion FROM pg_extension WHERE extname = 'estream';
SELECT estream.create_topic('upgraded', 1);
SELECT * FROM estream.produce('upgraded', '{"before": "update"}');
ALTER EXTENSION estream UPDATE TO '1.1';
SELECT extversion FROM pg_extension WHERE extname = 'estream';
SELECT partition, "offset", value FROM estream.poll('after_update', 'upgraded', auto_offset_reset => 'earliest');
-- 1.1 to 1.2: persisted offsets, segment states, maintenance
SELECT * FROM estream.produce('upgraded', '{"before": "1.2"}');
ALTER EXTENSION estream UPDATE TO '1.2';
SELECT extversion FROM pg_extension WHERE extname = 'estream';
-- the records produced before the update are all there
SELECT partition, "offset", value FROM estream.fetch('upgraded', 0, 0) ORDER BY "offset";
SELECT * FROM estream.watermarks('upgraded');
-- the new columns, nothing persisted yet
SELECT attname, format_type(atttypid, atttypmod) AS type, attnotnull
FROM pg_attribute
WHERE attrelid = 'estream.partition'::regclass AND attnum > 0 AND NOT attisdropped
ORDER BY attnum;
SELECT p.partition, p.stable_offset, p.end_offset, p.persisted_at IS NULL AS never
FROM estream.partition p JOIN estream.topic t USING (topic_id) WHERE t.name = 'upgraded';
-- the topic's segment has a state
SELECT segment, state FROM estream.segments WHERE topic = 'upgraded';
-- maintenance works on the old topic: persists its offsets, rolls its segment
SELECT estream.alter_topic('upgraded', '{"segment.ms": 1}') ->> 'segment.ms' AS "segment.ms";
SELECT pg_sleep(0.01);
SELECT * FROM estream.run_maintenance();
SELECT p.partition, p.stable_offset, p.end_offset, p.persisted_at IS NULL AS never
FROM estream.partition p JOIN estream.topic t USING (topic_id) WHERE t.name = 'upgraded';
SELECT partition, stable_offset, persisted_stable_offset
FROM estream.partitions WHERE topic = 'upgraded';
SELECT * FROM estream.run_maintenance('upgraded');
SELECT segment, state FROM estream.segments WHERE topic = 'upgraded' ORDER BY segment;
-- producers go on in the new segment; consumers read on
SELECT * FROM estream.produce('upgraded', '{"after": "1.2"}', 'k');
SELECT partition, "offset", value FROM estream.poll('after_update', 'upgraded');
SELECT key, value FROM estream.latest('upgraded');
-- the update started this database's worker (idle here: the worker is
-- disabled in the test configuration)
DO $$
BEGIN
	FOR i IN 1 .. 300 LOOP
		EXIT WHEN EXISTS (SELECT 1 FROM estream.workers
						  WHERE database = current_database() AND state = 'disabled');
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
SELECT kind, state FROM estream.workers WHERE database = current_database();
-- 1.2 -> 1.3: change data capture
ALTER EXTENSION estream UPDATE TO '1.3';
SELECT extversion FROM pg_extension WHERE extname = 'estream';
CREATE TABLE upgraded_src (id integer PRIMARY KEY, v text);
SELECT estream.capture('upgraded_src', 'upgraded-src');
SELECT source, topic, state FROM estream.captures;
SELECT estream.uncapture('upgraded_src');
DROP TABLE upgraded_src;

-- 1.3 -> 1.4: rights.  The table privileges of the old model become the
-- rights they stood for; afterwards no role but the owner holds any
-- privilege on estream's tables, logs and segments, a trigger that a
-- non-superuser put on a segment is gone, and logs another role owned
-- pass to the extension's owner (that role owns the topic).
CREATE ROLE regress_old_producer;
CREATE ROLE regress_old_consumer;
CREATE ROLE regress_old_admin;
CREATE ROLE regress_old_owner;
SELECT format('estream.log_%s', topic_id) AS up_log,
	   format('estream.log_%s_%s', topic_id, current_segment) AS up_seg
FROM estream.topic WHERE name = 'upgraded' \gset
GRANT USAGE ON SCHEMA estream TO regress_old_producer, regress_old_consumer, regress_old_admin;
GRANT SELECT ON estream.topic, estream.partition TO regress_old_producer, regress_old_consumer;
GRANT SELECT ON :up_log TO regress_old_consumer;
GRANT INSERT, TRIGGER ON :up_seg TO regress_old_producer;
GRANT INSERT (partition) ON :up_seg TO regress_old_consumer;
GRANT SELECT, INSERT, UPDATE ON estream."group", estream.group_offset TO regress_old_consumer;
GRANT SELECT ON estream.consumer_lag TO regress_old_consumer;
GRANT EXECUTE ON FUNCTION estream.run_maintenance(text) TO regress_old_admin;
-- estream.partitions changes shape in 1.4: its grant still becomes a right
GRANT SELECT ON estream.partitions TO regress_old_admin;
CREATE SCHEMA regress_old AUTHORIZATION regress_old_producer;
SET ROLE regress_old_producer;
CREATE FUNCTION regress_old.old_trigger() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER regress_old_trigger BEFORE INSERT ON :up_seg
	FOR EACH ROW EXECUTE FUNCTION regress_old.old_trigger();
RESET ROLE;
SELECT estream.create_topic('owned-log', 1);
SELECT format('estream.log_%s', topic_id) AS own_log, format('estream.log_%s_0', topic_id) AS own_seg
FROM estream.topic WHERE name = 'owned-log' \gset
ALTER TABLE :own_log OWNER TO regress_old_owner;
ALTER TABLE :own_seg OWNER TO regress_old_owner;
-- as the log's owner: code it controls, on the log, that would run as
-- whoever writes the log (the extension's owner, from 1.4)
GRANT USAGE, CREATE ON SCHEMA estream TO regress_old_owner;
CREATE SCHEMA regress_owner_s AUTHORIZATION regress_old_owner;
SET ROLE regress_old_owner;
CREATE FUNCTION regress_owner_s.yes(jsonb) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
ALTER TABLE :own_log ADD CONSTRAINT regress_check CHECK (regress_owner_s.yes(value));
CREATE INDEX regress_expr ON :own_seg ((regress_owner_s.yes(value)));
ALTER TABLE :own_seg ALTER COLUMN headers SET DEFAULT '{}';
CREATE STATISTICS regress_owner_s.regress_stat ON (regress_owner_s.yes(value)), partition FROM :own_seg;
CREATE POLICY regress_policy ON :own_seg USING (regress_owner_s.yes(value));
-- and an overload of estream.fetch() closer to the call in poll()'s body
CREATE FUNCTION estream.fetch(text, integer, bigint, integer) RETURNS SETOF estream.consumer_record
	LANGUAGE sql AS 'SELECT NULL::estream.consumer_record WHERE false';
ALTER TABLE :own_seg ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
GRANT INSERT ON :own_seg TO regress_old_consumer WITH GRANT OPTION;
RESET ROLE;
SET ROLE regress_old_consumer;
GRANT INSERT ON :own_seg TO regress_old_admin;
RESET ROLE;
SET client_min_messages = error;
ALTER EXTENSION estream UPDATE TO '1.4';
RESET client_min_messages;
SELECT extversion FROM pg_extension WHERE extname = 'estream';
SELECT role, resource_type, pattern_type, resource_name, operation
FROM estream.acls WHERE NOT predefined ORDER BY 1, 2, 4, 5;
SELECT topic, owner FROM estream.topics ORDER BY 1;
SELECT c.relname ~ '^log_' AS log, c.relname, a.grantee::regrole, a.privilege_type
FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
WHERE c.relnamespace = 'estream'::regnamespace AND a.grantee <> c.relowner
ORDER BY 2, 3, 4;
SELECT count(*) AS column_grants FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE c.relnamespace = 'estream'::regnamespace AND a.attacl IS NOT NULL;
SELECT count(*) AS logs_not_owned_by_extension_owner
FROM pg_class c, pg_extension e
WHERE e.extname = 'estream' AND c.relnamespace = 'estream'::regnamespace
  AND c.relname ~ '^log_' AND c.relowner <> e.extowner;
SELECT count(*) AS old_trigger FROM pg_trigger WHERE tgname = 'regress_old_trigger';
SELECT (SELECT count(*) FROM pg_constraint WHERE conname = 'regress_check') AS checks,
	   (SELECT count(*) FROM pg_class WHERE relname = 'regress_expr') AS indexes,
	   (SELECT count(*) FROM pg_attribute WHERE attrelid = :'own_seg'::regclass AND atthasdef) AS defaults,
	   (SELECT count(*) FROM pg_statistic_ext WHERE stxname = 'regress_stat') AS statistics,
	   (SELECT count(*) FROM pg_policy WHERE polname = 'regress_policy') AS policies,
	   (SELECT relrowsecurity OR relforcerowsecurity FROM pg_class WHERE oid = :'own_seg'::regclass) AS rls,
	   (SELECT count(*) FROM pg_proc WHERE proname = 'fetch' AND pronamespace = 'estream'::regnamespace) AS fetch_functions,
	   has_schema_privilege('regress_old_owner', 'estream', 'CREATE') AS owner_creates_in_estream;
SELECT count(*) AS old_partitions_view FROM pg_class WHERE relname = '_partitions_1_3';
SELECT count(*) AS comments_naming_topics FROM pg_description d JOIN estream.topic t ON t.log_relid = d.objoid
WHERE d.description LIKE '%' || t.name || '%';
-- the old roles go on through their rights, and nothing else
SET ROLE regress_old_producer;
SELECT "offset" >= 0 AS produced FROM estream.produce('upgraded', '{"after": "1.4"}', 'k');
SELECT count(*) FROM estream.fetch('upgraded', 0, 0);
\set VERBOSITY sqlstate
INSERT INTO :up_seg VALUES (0, 0, 1000, now(), NULL, '{}', NULL, NULL);
\set VERBOSITY terse
RESET ROLE;
SET ROLE regress_old_consumer;
SELECT count(*) > 0 AS fetched FROM estream.fetch('upgraded', 0, 0);
SELECT partition, "offset", value FROM estream.poll('after_update', 'upgraded');
SELECT "group", lag FROM estream.consumer_lag WHERE topic = 'upgraded';
SELECT * FROM estream.produce('upgraded', '{}');
RESET ROLE;
SET ROLE regress_old_admin;
SELECT count(*) FROM estream.run_maintenance();
SELECT partition, stable_offset FROM estream.partitions WHERE topic = 'upgraded' ORDER BY 1;
RESET ROLE;
SET ROLE regress_old_owner;
SELECT * FROM estream.produce('owned-log', '{"mine": true}');
SELECT estream.drop_topic('owned-log');
RESET ROLE;
DELETE FROM estream.acl;
DROP SCHEMA regress_old CASCADE;
DROP SCHEMA regress_owner_s CASCADE;
DROP OWNED BY regress_old_producer, regress_old_consumer, regress_old_admin, regress_old_owner;
DROP ROLE regress_old_producer, regress_old_consumer, regress_old_admin, regress_old_owner;
