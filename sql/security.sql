-- Rights in Kafka's ACL model (1.4): every function and view, called by
-- roles that hold exactly the rights under test.  A refused call gives
-- 42501 (insufficient_privilege) and no data; a refused role cannot tell
-- whether a topic exists; views show only what the caller may describe.
-- Bad input tried: unknown operations, resource types and pattern types,
-- operations that do not apply to the resource, a name for the cluster,
-- no name for a topic, an invalid topic name, an unknown role, nulls.
\set VERBOSITY terse
SET synchronous_commit = on;

CREATE ROLE regress_admin;
GRANT estream_admin TO regress_admin;
CREATE ROLE regress_prod;
GRANT estream_producer TO regress_prod;
CREATE ROLE regress_cons;
GRANT estream_consumer TO regress_cons;
CREATE ROLE regress_mon;
GRANT estream_monitor TO regress_mon;
CREATE ROLE regress_none;
CREATE ROLE regress_app;
CREATE ROLE regress_team;
CREATE ROLE regress_member IN ROLE regress_team;
CREATE ROLE regress_noinherit NOINHERIT IN ROLE regress_team;

-- a fresh database has no rights but the predefined ones, and no role
-- but the extension's owner holds a privilege on estream's tables
SELECT count(*) AS acl_rows FROM estream.acl;
SELECT c.relname, a.grantee::regrole, a.privilege_type
FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
WHERE c.relnamespace = 'estream'::regnamespace AND a.grantee <> c.relowner
  AND c.relkind IN ('r', 'p')
ORDER BY 1, 2, 3;

--
-- Topic administration
--
SET ROLE regress_none;
SELECT estream.create_topic('sec.a', 2);
RESET ROLE;
SET ROLE regress_admin;
SELECT estream.create_topic('sec.a', 2);
SELECT estream.create_topic('team-a.orders', 1);
SELECT estream.create_topic('team-b.orders', 1);
SELECT estream.create_topic('sec.bin', 1);
SELECT topic, owner FROM estream.topics WHERE topic LIKE 'sec.%' OR topic LIKE 'team-%' ORDER BY 1;
RESET ROLE;

-- the create right on a prefix lets a role create matching topics, which
-- it then owns (every right, and may grant rights on them)
SELECT estream.grant_acl('regress_app', 'create', 'topic', 'app.', pattern_type => 'prefixed');
SET ROLE regress_app;
SELECT estream.create_topic('app.events', 1);
SELECT estream.create_topic('other.events', 1);
SELECT topic, owner, config FROM estream.topics ORDER BY 1;
SELECT * FROM estream.produce('app.events', '{"n": 1}', 'k');
SELECT "offset", value FROM estream.fetch('app.events', 0, 0);
SELECT estream.alter_topic('app.events', '{"retention.ms": 1000}') ->> 'retention.ms';
SELECT estream.add_partitions('app.events', 2);
SELECT estream.grant_acl('regress_cons', 'read', 'topic', 'app.events');
SELECT estream.grant_acl('regress_cons', 'read', 'topic', 'app.', pattern_type => 'prefixed');
SELECT estream.grant_acl('regress_cons', 'read', 'topic', 'sec.a');
SELECT estream.alter_topic_owner('app.events', 'regress_admin');
RESET ROLE;

-- every other right on an existing topic, one at a time
SET ROLE regress_none;
SELECT estream.alter_topic('sec.a', '{"retention.ms": 1000}');
SELECT estream.add_partitions('sec.a', 3);
SELECT estream.drop_topic('sec.a');
SELECT estream.drop_topic('sec.missing', if_exists => true);
SELECT estream.alter_topic_owner('sec.a', 'regress_none');
RESET ROLE;
SELECT estream.grant_acl('regress_none', 'alter_configs', 'topic', 'sec.a');
SELECT estream.grant_acl('regress_none', 'alter', 'topic', 'sec.a');
SET ROLE regress_none;
SELECT estream.alter_topic('sec.a', '{"retention.ms": 1000}') ->> 'retention.ms';
SELECT estream.add_partitions('sec.a', 3);
-- alter_configs gives describe_configs; alter gives describe
SELECT topic, partitions, config FROM estream.topics;
SELECT estream.drop_topic('sec.a');
RESET ROLE;
SELECT estream.revoke_acl('regress_none', 'all', 'topic', 'sec.a');

--
-- Producing and reading
--
SELECT format('estream.log_%s', topic_id) AS sec_log, format('estream.log_%s_0', topic_id) AS sec_seg
FROM estream.topic WHERE name = 'sec.a' \gset
SET ROLE regress_none;
-- 42501 whether or not the topic exists: existence does not leak
SELECT * FROM estream.produce('sec.a', '{"x": 1}');
SELECT * FROM estream.produce('sec.nonexistent', '{"x": 1}');
SELECT * FROM estream.produce_binary('sec.a', '\x01'::bytea);
SELECT * FROM estream.produce_batch('sec.a', ARRAY['{}']::jsonb[]);
SELECT * FROM estream.produce_batch_binary('sec.a', ARRAY['\x01']::bytea[]);
SELECT * FROM estream.fetch('sec.a', 0, 0);
SELECT * FROM estream.fetch('sec.nonexistent', 0, 0);
SELECT * FROM estream.fetch_binary('sec.a', 0, 0);
SELECT * FROM estream.watermarks('sec.a');
SELECT * FROM estream.offsets_for_times('sec.a', now());
SELECT * FROM estream.latest('sec.a');
SELECT * FROM estream.latest_binary('sec.a');
SELECT estream.partition_for('k', 2);
SELECT estream.effective_config('{}') ->> 'retention.ms' AS retention_ms;
-- no direct access to estream's tables, logs or segments (42501)
\set VERBOSITY sqlstate
SELECT count(*) FROM estream.topic;
SELECT count(*) FROM :sec_log;
INSERT INTO :sec_seg VALUES (0, 0, 9223372036854775807, now(), NULL, '{}', NULL, NULL);
UPDATE estream.group_offset SET committed_offset = 0;
CREATE TRIGGER t BEFORE INSERT ON :sec_seg FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger();
SELECT estream._shared_partitions();
SELECT estream._caller();
SELECT estream._require('read', 'topic', 'sec.a', NULL);
SELECT estream._create_topic_impl('sec.direct', 1, '{}', false);
SELECT * FROM estream._poll_impl('g', 'sec.a', 1, 0, NULL);
\set VERBOSITY terse
RESET ROLE;

-- a producer writes every topic and reads none
SET ROLE regress_prod;
SELECT * FROM estream.produce('sec.a', '{"x": 1}', 'k1');
SELECT * FROM estream.produce_binary('sec.bin', '\x01'::bytea, '\x6b31'::bytea);
SELECT * FROM estream.produce_batch('sec.a', ARRAY['{"x": 2}', '{"x": 3}']::jsonb[], ARRAY['k1', 'k1']);
SELECT * FROM estream.produce_batch_binary('sec.bin', ARRAY['\x02']::bytea[], ARRAY['\x6b31']::bytea[]);
SELECT partition, stable_offset FROM estream.watermarks('sec.a') ORDER BY 1;
SELECT * FROM estream.fetch('sec.a', 0, 0);
SELECT * FROM estream.produce('sec.nonexistent', '{"x": 1}');
RESET ROLE;

-- a consumer reads every topic and writes none
SET ROLE regress_cons;
SELECT "offset", key, value FROM estream.fetch('sec.a', estream.partition_for('k1', 3), 0, max_records => 2);
SELECT "offset", key, value FROM estream.fetch_binary('sec.bin', 0, 0);
SELECT count(*) FROM estream.offsets_for_times('sec.a', '-infinity');
SELECT key, value FROM estream.latest('sec.a');
SELECT count(*) FROM estream.latest_binary('sec.a');
SELECT * FROM estream.produce('sec.a', '{"x": 1}');
RESET ROLE;

-- literal and prefixed rights, and role membership
SELECT estream.grant_acl('regress_team', 'read,write', 'topic', 'team-a.', pattern_type => 'prefixed');
SET ROLE regress_member;
SELECT * FROM estream.produce('team-a.orders', '{"o": 1}');
SELECT "offset", value FROM estream.fetch('team-a.orders', 0, 0);
SELECT * FROM estream.produce('team-b.orders', '{"o": 1}');
SELECT topic FROM estream.topics ORDER BY 1;
RESET ROLE;
-- a NOINHERIT member has the rights only after SET ROLE, as for tables
SET ROLE regress_noinherit;
SELECT * FROM estream.produce('team-a.orders', '{"o": 2}');
SET ROLE regress_team;
SELECT * FROM estream.produce('team-a.orders', '{"o": 2}');
RESET ROLE;
-- PUBLIC
SELECT estream.grant_acl('public', 'describe', 'topic', 'team-b.orders');
SET ROLE regress_none;
SELECT topic, config FROM estream.topics ORDER BY 1;
SELECT partition, stable_offset FROM estream.watermarks('team-b.orders');
RESET ROLE;
SELECT estream.revoke_acl('public', 'describe', 'topic', 'team-b.orders');
-- a revoked right is gone at once
SELECT estream.revoke_acl('regress_team', 'write', 'topic', 'team-a.', pattern_type => 'prefixed');
SET ROLE regress_member;
SELECT * FROM estream.produce('team-a.orders', '{"o": 3}');
SELECT count(*) FROM estream.fetch('team-a.orders', 0, 0);
RESET ROLE;
SELECT estream.has_right('regress_member', 'read', 'topic', 'team-a.orders') AS member_reads,
	   estream.has_right('regress_member', 'write', 'topic', 'team-a.orders') AS member_writes,
	   estream.has_right('regress_noinherit', 'read', 'topic', 'team-a.orders') AS noinherit_reads,
	   estream.has_right('regress_prod', 'write,describe', 'topic', 'anything') AS producer_writes,
	   estream.has_right('regress_mon', 'describe', 'cluster') AS monitor_describes_cluster,
	   estream.has_right('regress_mon', 'alter', 'cluster') AS monitor_alters_cluster;

--
-- Consumer groups: a group is bound to the rights of the role that uses it
--
SELECT estream.grant_acl('regress_app', 'read', 'topic', 'sec.a');
SELECT estream.grant_acl('regress_app', 'read', 'group', 'app-', pattern_type => 'prefixed');
SET ROLE regress_app;
SELECT count(*) FROM estream.poll('app-billing', 'sec.a', auto_offset_reset => 'earliest');
SELECT partition, committed_offset FROM estream.committed('app-billing', 'sec.a') ORDER BY 1;
SELECT * FROM estream.seek_to_beginning('app-billing', 'sec.a') ORDER BY 1;
SELECT * FROM estream.seek('app-billing', 'sec.a', 0, 0);
SELECT * FROM estream.seek_to_end('app-billing', 'sec.a') ORDER BY 1;
SELECT count(*) FROM estream.seek_to_time('app-billing', 'sec.a', '-infinity');
SELECT estream.commit('app-billing', 'sec.a', 0, 0);
SELECT estream.create_group('app-mailer', 'earliest');
SELECT member_id, generation FROM estream.join_group('app-mailer', ARRAY['sec.a'], member_id => 'm1');
SELECT estream.heartbeat('app-mailer', 'm1');
SELECT topic, partition FROM estream.assignment('app-mailer', 'm1') ORDER BY 1, 2;
SELECT count(*) FROM estream.consume('app-mailer', 'm1');
SELECT estream.leave_group('app-mailer', 'm1');
SELECT "group", topics FROM estream.groups ORDER BY 1;
SELECT "group", topic, partition, lag FROM estream.consumer_lag ORDER BY 1, 2, 3;
-- another role's group: no poll, commit, seek, join, heartbeat or delete
SELECT count(*) FROM estream.poll('billing', 'sec.a');
SELECT estream.commit('billing', 'sec.a', 0, 0);
SELECT * FROM estream.seek('billing', 'sec.a', 0, 0);
SELECT * FROM estream.seek_to_beginning('billing', 'sec.a');
SELECT * FROM estream.join_group('billing', ARRAY['sec.a']);
SELECT estream.heartbeat('billing', 'm1');
SELECT estream.leave_group('billing', 'm1');
SELECT * FROM estream.consume('billing', 'm1');
SELECT * FROM estream.assignment('billing', 'm1');
SELECT * FROM estream.committed('billing', 'sec.a');
SELECT estream.create_group('billing');
SELECT estream.delete_group('billing');
-- its own group on a topic it may not read: refused too
SELECT count(*) FROM estream.poll('app-billing', 'team-b.orders');
SELECT estream.commit('app-billing', 'team-b.orders', 0, 0);
SELECT * FROM estream.join_group('app-x', ARRAY['sec.a', 'team-b.orders']);
SELECT estream.delete_group('app-billing');
RESET ROLE;
-- the delete right on the group, and read on its topics, delete it
SELECT estream.grant_acl('regress_app', 'delete', 'group', 'app-billing');
SET ROLE regress_app;
SELECT estream.delete_group('app-billing');
RESET ROLE;
-- the consumer's rights are checked again at each consume: revoking read
-- on a topic stops a member that joined before
SET ROLE regress_app;
SELECT member_id FROM estream.join_group('app-mailer', ARRAY['sec.a'], member_id => 'm2');
RESET ROLE;
SELECT estream.revoke_acl('regress_app', 'read', 'topic', 'sec.a');
SET ROLE regress_app;
SELECT count(*) FROM estream.consume('app-mailer', 'm2');
SELECT estream.leave_group('app-mailer', 'm2');
RESET ROLE;
-- nor may it delete the group, whose offsets on that topic would go
SELECT estream.grant_acl('regress_app', 'delete', 'group', 'app-mailer');
SET ROLE regress_app;
SELECT estream.delete_group('app-mailer');
RESET ROLE;

--
-- Views show only what the caller may describe
--
SET ROLE regress_none;
SELECT count(*) AS topics FROM estream.topics;
SELECT count(*) AS partitions FROM estream.partitions;
SELECT count(*) AS partition_stats FROM estream.partition_stats;
-- nor by calling the views' functions directly
SELECT count(*) AS stats FROM generate_series(1, 100) i, estream._partition_stats(i);
SELECT count(*) AS segments FROM estream.segments;
SELECT count(*) AS groups FROM estream.groups;
SELECT count(*) AS members FROM estream.group_members;
SELECT count(*) AS lag FROM estream.consumer_lag;
SELECT count(*) AS captures FROM estream.captures;
SELECT count(*) AS workers FROM estream.workers;
SELECT role, resource_type, resource_name, operation FROM estream.acls WHERE NOT predefined;
-- a function of the caller's in a WHERE clause sees no hidden row
CREATE FUNCTION pg_temp.leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS
$$ BEGIN RAISE NOTICE 'saw %', $1; RETURN true; END $$;
SELECT topic FROM estream.topics WHERE pg_temp.leak(topic);
SELECT "group" FROM estream.groups WHERE pg_temp.leak("group");
DROP FUNCTION pg_temp.leak(text);
RESET ROLE;
-- the monitor sees every topic, configuration, group and the database's
-- worker, and reads nothing
SET ROLE regress_mon;
SELECT topic, config IS NOT NULL AS has_config FROM estream.topics
WHERE topic ~ '^(sec|team|app|other)' ORDER BY 1;
SELECT count(*) > 0 AS sees_partitions FROM estream.partitions;
SELECT count(*) > 0 AS sees_partition_stats, sum(records) > 0 AS counts_records
FROM estream.partition_stats;
SELECT "group" FROM estream.groups WHERE "group" ~ '^(app|billing)' ORDER BY 1;
SELECT "group", topic, partition, lag, oldest_unconsumed_age IS NULL AS no_age
FROM estream.consumer_lag WHERE "group" ~ '^(app|billing)' ORDER BY 1, 2, 3;
SELECT kind FROM estream.workers ORDER BY 1;
SELECT count(*) > 0 AS sees_rights FROM estream.acls WHERE NOT predefined;
SELECT * FROM estream.fetch('sec.a', 0, 0);
SELECT * FROM estream.produce('sec.a', '{}');
SELECT * FROM estream.run_maintenance();
RESET ROLE;
-- the workers of other databases, and the launcher, only to those who
-- may see every session (pg_read_all_stats)
SELECT kind FROM estream.workers ORDER BY 1;

--
-- Cluster administration
--
SET ROLE regress_none;
SELECT * FROM estream.run_maintenance();
SELECT estream.grant_acl('regress_none', 'read', 'topic', 'sec.a');
SELECT estream.revoke_acl('regress_cons', 'read', 'topic', 'app.events');
RESET ROLE;
SET ROLE regress_admin;
SELECT count(*) FROM estream.run_maintenance('sec.a');
SELECT estream.grant_acl('regress_none', 'describe', 'group', 'g-', pattern_type => 'prefixed');
SELECT estream.revoke_acl('regress_none', 'describe', 'group', 'g-', pattern_type => 'prefixed');
RESET ROLE;
-- the owner of a topic manages literal rights on it, nothing else
SET ROLE regress_app;
SELECT estream.grant_acl('regress_none', 'read', 'topic', 'sec.a');
SELECT estream.grant_acl('regress_none', 'read', 'topic', 'other.', pattern_type => 'prefixed');
SELECT estream.grant_acl('regress_none', 'create', 'cluster');
RESET ROLE;

-- bad input
SELECT estream.grant_acl('regress_none', 'fly', 'topic', 'sec.a');
SELECT estream.grant_acl('regress_none', 'write', 'group', 'g');
SELECT estream.grant_acl('regress_none', 'read', 'table', 'sec.a');
SELECT estream.grant_acl('regress_none', 'read', 'topic', 'sec.a', pattern_type => 'suffixed');
SELECT estream.grant_acl('regress_none', 'create', 'cluster', 'kafka-cluster');
SELECT estream.grant_acl('regress_none', 'read', 'topic');
SELECT estream.grant_acl('regress_none', 'read', 'topic', 'bad name!');
SELECT estream.grant_acl('regress_nobody', 'read', 'topic', 'sec.a');
SELECT estream.grant_acl(NULL, 'read', 'topic', 'sec.a');
SELECT estream.grant_acl('regress_none', NULL, 'topic', 'sec.a');
SELECT estream.grant_acl('regress_none', 'read,,write', 'topic', 'sec.a');
SELECT estream.revoke_acl('regress_none', 'read', 'topic', 'sec.a');
SELECT estream.has_right('regress_none', 'read', 'topic');
SELECT estream.has_right('regress_none', 'fly', 'topic', 'sec.a');
SELECT count(*) AS acl_rows_after_bad_input FROM estream.acl WHERE role = 'regress_none'::regrole;

-- the rights as stored: one row per operation, case and spaces normalized
SELECT estream.grant_acl('regress_none', ' READ , Describe ', 'topic', 'sec.a');
SELECT estream.grant_acl('regress_none', 'read', 'topic', 'sec.a');
SELECT role, resource_type, pattern_type, resource_name, operation, granted_by
FROM estream.acls WHERE role = 'regress_none' ORDER BY operation;
SELECT estream.revoke_acl('regress_none', 'all', 'topic', 'sec.a');
SELECT count(*) FROM estream.acls WHERE role = 'regress_none';

-- the rights granted on a topic by name go with the topic: a topic created
-- again under that name does not inherit them
SELECT estream.create_topic('sec.reborn', 1);
SELECT estream.grant_acl('regress_none', 'read', 'topic', 'sec.reborn');
SELECT estream.grant_acl('regress_none', 'read', 'topic', 'sec.reb', pattern_type => 'prefixed');
SELECT estream.drop_topic('sec.reborn');
SELECT pattern_type, resource_name, operation FROM estream.acls WHERE role = 'regress_none';
SELECT estream.revoke_acl('regress_none', 'read', 'topic', 'sec.reb', pattern_type => 'prefixed');

-- has_right() about other roles only with describe on the cluster (it
-- would tell which topics exist and who may read them)
SET ROLE regress_none;
SELECT estream.has_right('regress_none', 'read', 'topic', 'sec.a') AS about_itself;
SELECT estream.has_right('regress_app', 'read', 'topic', 'sec.a');
RESET ROLE;
SET ROLE regress_mon;
SELECT estream.has_right('regress_app', 'read', 'topic', 'sec.a') AS monitor_asks;
RESET ROLE;

-- the acls view is a function: a caller's function in WHERE sees nothing
-- hidden (a UNION ALL view would lose its security barrier)
SELECT estream.grant_acl('regress_app', 'read', 'topic', 'hidden.', pattern_type => 'prefixed');
SET ROLE regress_none;
CREATE FUNCTION pg_temp.leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS
$$ BEGIN RAISE NOTICE 'saw %', $1; RETURN true; END $$;
SELECT count(*) FROM estream.acls WHERE NOT predefined AND pg_temp.leak(resource_name);
DROP FUNCTION pg_temp.leak(text);
RESET ROLE;
SELECT estream.revoke_acl('regress_app', 'read', 'topic', 'hidden.', pattern_type => 'prefixed');

-- assignment() lists only the topics the caller may describe
SELECT member_id FROM estream.join_group('app-shared', ARRAY['team-b.orders'], member_id => 'mx');
SET ROLE regress_app;
SELECT * FROM estream.assignment('app-shared', 'mx');
RESET ROLE;
SELECT estream.leave_group('app-shared', 'mx');
SELECT estream.delete_group('app-shared');

-- maintenance needs cluster_action, which does not manage rights
SELECT estream.grant_acl('regress_none', 'cluster_action', 'cluster');
SET ROLE regress_none;
SELECT count(*) FROM estream.run_maintenance('sec.a');
SELECT estream.grant_acl('regress_none', 'read', 'topic', 'sec.a');
RESET ROLE;
SELECT estream.revoke_acl('regress_none', 'cluster_action', 'cluster');

-- the tables of a topic go where the database says, whatever the
-- caller's default_tablespace (its rights on a tablespace are not the
-- extension owner's)
CREATE SCHEMA regress_app_s AUTHORIZATION regress_app;
SET allow_in_place_tablespaces = on;
CREATE TABLESPACE regress_ts LOCATION '';
RESET allow_in_place_tablespaces;
SET ROLE regress_app;
SET default_tablespace = regress_ts;
CREATE TABLE regress_app_s.try_ts (i int);
SELECT estream.create_topic('app.ts', 1);
RESET default_tablespace;
RESET ROLE;
SELECT count(*) AS logs_in_regress_ts FROM pg_class c JOIN estream.topic t
  ON c.oid = t.log_relid OR c.oid IN (SELECT s.relid FROM estream.segment s WHERE s.topic_id = t.topic_id)
WHERE t.name = 'app.ts' AND c.reltablespace <> 0;
SELECT estream.drop_topic('app.ts');
DROP TABLESPACE regress_ts;

-- Captures.  A partition stands for its partitioned table, whose owner
-- alone may capture it; a table goes only into a new topic or one its
-- capturer owns; the topic's owner may end a capture into its topic.
CREATE TABLE regress_salary (id int, amount int) PARTITION BY RANGE (id);
CREATE TABLE regress_salary_a PARTITION OF regress_salary FOR VALUES FROM (0) TO (100);
ALTER TABLE regress_salary_a OWNER TO regress_app;
SET ROLE regress_app;
SELECT estream.capture('regress_salary_a', 'app.salary');
CREATE TABLE regress_app_s.src (id int PRIMARY KEY);
RESET ROLE;
SELECT estream.create_topic('regress.squat');
SELECT estream.grant_acl('regress_app', 'write', 'topic', 'regress.squat');
SET ROLE regress_app;
SELECT estream.capture('regress_app_s.src', 'regress.squat');
SELECT estream.capture('regress_app_s.src', 'app.src');
RESET ROLE;
SELECT 'regress_app_s.src'::regclass::oid AS src_oid \gset
SELECT estream.alter_topic_owner('app.src', 'regress_member');
SET ROLE regress_none;
SELECT estream.uncapture(:src_oid);
RESET ROLE;
SET ROLE regress_member;
SELECT estream.uncapture(:src_oid);
RESET ROLE;
SELECT count(*) AS captures_left FROM estream.capture;
SELECT estream.drop_topic(t) FROM unnest(ARRAY['regress.squat', 'app.src']) t;
DROP TABLE regress_salary;
DROP SCHEMA regress_app_s CASCADE;

-- a dropped role's rights go, and its topics pass to the extension's owner
-- (the worker does this at every run; called here by hand)
CREATE ROLE regress_gone;
SELECT estream.grant_acl('regress_gone', 'create', 'topic', 'gone.', pattern_type => 'prefixed');
SET ROLE regress_gone;
SELECT estream.create_topic('gone.t', 1);
RESET ROLE;
DROP ROLE regress_gone;
SELECT estream._forget_dropped_roles();
SELECT count(*) AS rights_left FROM estream.acl WHERE role::oid NOT IN (SELECT oid FROM pg_roles);
SELECT t.owner::oid = e.extowner AS owned_by_extension_owner
FROM estream.topic t, pg_extension e WHERE t.name = 'gone.t' AND e.extname = 'estream';
SELECT estream.drop_topic('gone.t');

-- after all this, none of the roles is a superuser
SELECT rolname, rolsuper FROM pg_roles WHERE rolname LIKE 'regress\_%' ORDER BY 1;

-- clean up
SELECT estream.drop_topic(t) FROM unnest(ARRAY['sec.a', 'sec.bin', 'team-a.orders', 'team-b.orders',
											 'app.events']) t;
SELECT estream.delete_group(g) FROM unnest(ARRAY['app-mailer']) g;
DELETE FROM estream.acl;
DROP ROLE regress_admin, regress_prod, regress_cons, regress_mon, regress_none, regress_app,
	regress_member, regress_noinherit, regress_team;
