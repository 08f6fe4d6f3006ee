/* estream--1.3--1.4.sql: rights in Kafka's ACL model; logs written only
 * through estream */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION estream UPDATE TO '1.4'" to load this file. \quit

--
-- Predefined roles, as PostgreSQL's pg_monitor: fixed rights on every
-- topic, group and the cluster (see docs/security.md).  Roles belong to the
-- cluster: they are made by the first database that installs estream 1.4
-- and stay when the extension is dropped.
--
DO $$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['estream_admin', 'estream_producer', 'estream_consumer', 'estream_monitor'] LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) r) THEN
			EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
		END IF;
	END LOOP;
END
$$;
COMMENT ON ROLE estream_admin IS
	'estream: every right on every topic and group, and on the cluster (create topics, grant rights, run maintenance).';
COMMENT ON ROLE estream_producer IS 'estream: write (produce) to every topic.';
COMMENT ON ROLE estream_consumer IS 'estream: read every topic and use every consumer group.';
COMMENT ON ROLE estream_monitor IS
	'estream: describe every topic, its configuration, every group and the cluster (views, lag, workers), read-only.';

--
-- Rights
--
CREATE TABLE estream.acl (
	role regrole NOT NULL,
	resource_type text NOT NULL CHECK (resource_type IN ('topic', 'group', 'cluster')),
	pattern_type text NOT NULL DEFAULT 'literal' CHECK (pattern_type IN ('literal', 'prefixed')),
	resource_name text NOT NULL,
	operation text NOT NULL CHECK (operation IN ('read', 'write', 'describe', 'describe_configs',
												 'alter_configs', 'alter', 'create', 'delete',
												 'cluster_action', 'all')),
	granted_by regrole,
	granted_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (role, resource_type, pattern_type, resource_name, operation)
);
COMMENT ON TABLE estream.acl IS
	'Rights granted with estream.grant_acl(): an operation on a resource (a topic, a group, the cluster; a literal name, * for all, or a prefix) for a role (role 0: PUBLIC).';
COMMENT ON COLUMN estream.acl.role IS 'The role the right is granted to; 0 (shown as -) for PUBLIC.';
COMMENT ON COLUMN estream.acl.resource_name IS
	'A topic or group name, "*" for every one (literal), or a prefix; empty for the cluster.';
SELECT pg_catalog.pg_extension_config_dump('estream.acl', '');

CREATE TRIGGER acl_invalidate
	AFTER INSERT OR UPDATE OR DELETE ON estream.acl
	FOR EACH ROW EXECUTE FUNCTION estream._topic_invalidate();
CREATE TRIGGER acl_invalidate_truncate
	AFTER TRUNCATE ON estream.acl
	FOR EACH STATEMENT EXECUTE FUNCTION estream._topic_invalidate();
ALTER TABLE estream.acl ENABLE ALWAYS TRIGGER acl_invalidate;
ALTER TABLE estream.acl ENABLE ALWAYS TRIGGER acl_invalidate_truncate;
COMMENT ON TRIGGER acl_invalidate ON estream.acl IS
	'Makes every backend drop its cached rights when a right is granted or revoked.';
COMMENT ON TRIGGER acl_invalidate_truncate ON estream.acl IS
	'Makes every backend drop its cached rights when estream.acl is truncated.';

-- every topic has an owner, who has every right on it: its creator
ALTER TABLE estream.topic ADD COLUMN owner regrole;
UPDATE estream.topic SET owner = (SELECT e.extowner FROM pg_catalog.pg_extension e
								   WHERE e.extname OPERATOR(pg_catalog.=) 'estream');
ALTER TABLE estream.topic ALTER COLUMN owner SET NOT NULL;
COMMENT ON COLUMN estream.topic.owner IS
	'The role that created the topic: it has every right on the topic and may grant rights on it.';

-- Who captured a table.  The worker writes a capture's events only while
-- that role still owns the table and may write the topic; captures made
-- before 1.4 were made by superusers, as the extension's owner.
ALTER TABLE estream.capture ADD COLUMN capturer regrole;
UPDATE estream.capture SET capturer = (SELECT e.extowner FROM pg_catalog.pg_extension e
									   WHERE e.extname OPERATOR(pg_catalog.=) 'estream');
ALTER TABLE estream.capture ALTER COLUMN capturer SET NOT NULL;
COMMENT ON COLUMN estream.capture.capturer IS
	'The role that captured the table; its events are written while it owns the table and may write the topic.';

CREATE FUNCTION estream._allowed(operation text, resource_type text, resource_name text, owner regrole)
RETURNS boolean
LANGUAGE C STABLE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_allowed_sql';
COMMENT ON FUNCTION estream._allowed(text, text, text, regrole) IS
	'Whether the caller may do an operation on a resource (owner: the topic''s owner); the views show only what it allows.';

CREATE FUNCTION estream._require(operation text, resource_type text, resource_name text, owner regrole)
RETURNS void
LANGUAGE C STABLE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_require_sql';
COMMENT ON FUNCTION estream._require(text, text, text, regrole) IS
	'Raises 42501 unless the caller may do an operation on a resource.';

CREATE FUNCTION estream._caller()
RETURNS regrole
LANGUAGE C STABLE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_caller_sql';
COMMENT ON FUNCTION estream._caller() IS
	'The role that called the estream function being run, whose rights it checks.';

CREATE FUNCTION estream._check_operation(operation text, resource_type text)
RETURNS text
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'estream_check_operation';
COMMENT ON FUNCTION estream._check_operation(text, text) IS
	'The operation''s name in lower case, or an error if it is not an operation on that kind of resource.';

CREATE FUNCTION estream._lock_name(space text, name text, wait boolean)
RETURNS boolean
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_lock_name';
COMMENT ON FUNCTION estream._lock_name(text, text, boolean) IS
	'Locks a name (of a topic or group being created) for the transaction in estream''s own lock space, which no role can take from SQL; false if not granted without waiting.';

CREATE FUNCTION estream.has_right(role regrole, operation text, resource_type text,
								  resource_name text DEFAULT NULL)
RETURNS boolean
LANGUAGE C STABLE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_has_right';
COMMENT ON FUNCTION estream.has_right(regrole, text, text, text) IS
	'Whether a role may do the operations (a comma-separated list) on a topic, a group or the cluster, as has_table_privilege() tells for tables.';

CREATE FUNCTION estream._timestamp_at(topic text, partition integer, from_offset bigint)
RETURNS timestamptz
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_timestamp_at';
COMMENT ON FUNCTION estream._timestamp_at(text, integer, bigint) IS
	'Timestamp of the first committed record at or after an offset (the age of the oldest unconsumed record, for consumer_lag); needs describe.';

-- The topic row after checking the caller's right on it: 42501 comes before
-- 42704, so that a role without rights cannot tell which topics exist.
CREATE FUNCTION estream._authorize_topic(p_topic text, p_operation text)
RETURNS estream.topic
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	t estream.topic;
BEGIN
	IF p_topic IS NULL THEN
		RAISE EXCEPTION 'topic must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT * INTO t FROM estream.topic x WHERE x.name = p_topic;
	PERFORM estream._require(p_operation, 'topic', p_topic, t.owner);
	IF t.topic_id IS NULL THEN
		RAISE EXCEPTION 'topic "%" does not exist', p_topic
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it with estream.create_topic(); estream.topics lists the topics.';
	END IF;
	RETURN t;
END
$$;
COMMENT ON FUNCTION estream._authorize_topic(text, text) IS
	'Looks up a topic after checking the caller''s right (42501 before 42704).';

-- The group row after checking the caller's right on it; created if asked
CREATE FUNCTION estream._authorize_group(p_group text, p_operation text, p_reset text, p_create boolean)
RETURNS estream."group"
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
BEGIN
	IF p_group IS NULL THEN
		RAISE EXCEPTION 'group must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM estream._require(p_operation, 'group', p_group, NULL);
	RETURN estream._group(p_group, p_reset, p_create);
END
$$;
COMMENT ON FUNCTION estream._authorize_group(text, text, text, boolean) IS
	'Looks up (or creates) a consumer group after checking the caller''s right on it.';

--
-- Entry points.  Each function a user calls that changes estream's tables
-- is the C gateway estream_gateway(): it notes the caller and calls the
-- SECURITY DEFINER body estream._<name>_impl with the same arguments.
-- Bodies check the caller's rights (estream._caller()) first.
--

--
-- Topic administration
--

CREATE FUNCTION estream._create_topic_impl(topic text, partitions integer, config jsonb,
										   if_not_exists boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the caller's settings must not choose where or how the owner creates
-- tables (its tablespace rights are not the owner's)
SET default_tablespace = ''
SET default_table_access_method = heap
AS $$
#variable_conflict error
DECLARE
	v_id integer;
	v_config jsonb;
BEGIN
	PERFORM estream._check_topic_name(topic);
	PERFORM estream._require('create', 'topic', topic, NULL);
	PERFORM estream._check_partition_count(partitions);
	v_config := estream._merge_config('{}', config);

	-- serialize creators of the same name so that if_not_exists is exact
	PERFORM estream._lock_name('topic', topic, true);
	IF EXISTS (SELECT 1 FROM estream.topic t WHERE t.name = topic) THEN
		IF if_not_exists THEN
			RAISE NOTICE 'topic "%" already exists, skipping', topic;
			RETURN;
		END IF;
		RAISE EXCEPTION 'topic "%" already exists', topic
			USING ERRCODE = 'duplicate_object',
				  HINT = 'Pass if_not_exists => true to skip existing topics.';
	END IF;

	-- skip ids whose log table exists already (left by a dropped extension)
	LOOP
		v_id := nextval('estream.topic_id_seq');
		EXIT WHEN to_regclass(format('estream.log_%s', v_id)) IS NULL;
	END LOOP;
	EXECUTE format('CREATE TABLE estream.log_%s ('
				   'segment integer NOT NULL, '
				   'partition integer NOT NULL, '
				   '"offset" bigint NOT NULL, '
				   'ts timestamptz NOT NULL, '
				   'key bytea, '
				   'value jsonb, '
				   'value_bin bytea, '
				   'headers jsonb'
				   ') PARTITION BY RANGE (segment)', v_id);
	-- no topic name here: comments are readable by every role
	EXECUTE format('COMMENT ON TABLE estream.log_%s IS %L', v_id,
				   'Log of an estream topic (do not modify directly; estream.topics names it).');
	INSERT INTO estream.topic (topic_id, name, partitions, config, log_relid, owner)
		VALUES (v_id, topic, partitions, v_config, format('estream.log_%s', v_id)::regclass,
				estream._caller());
	INSERT INTO estream.partition (topic_id, partition)
		SELECT v_id, g FROM generate_series(0, partitions - 1) g;
	PERFORM estream._create_segment(v_id, 0);
END
$$;
COMMENT ON FUNCTION estream._create_topic_impl(text, integer, jsonb, boolean) IS
	'Body of create_topic(): needs the create right on the topic (or the cluster); the caller owns the topic.';

CREATE OR REPLACE FUNCTION estream.create_topic(topic text, partitions integer DEFAULT 1,
												config jsonb DEFAULT '{}', if_not_exists boolean DEFAULT false)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.create_topic(text, integer, jsonb, boolean) IS
	'Creates a topic with the given partition count and Kafka-style configuration; the caller becomes its owner (needs the create right).';

CREATE FUNCTION estream._drain(topic_id integer)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_drain';
COMMENT ON FUNCTION estream._drain(integer) IS
	'For drop_topic(): ends the long-polls of the topic now and keeps new ones from sleeping until the transaction ends.';

CREATE FUNCTION estream._draining(topic_id integer)
RETURNS boolean
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_draining_sql';
COMMENT ON FUNCTION estream._draining(integer) IS
	'Whether another transaction is dropping the topic (null: any topic) or the extension: poll() and consume() stop waiting.';

CREATE FUNCTION estream._drop_topic_impl(topic text, if_exists boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	t estream.topic;
BEGIN
	IF topic IS NULL THEN
		RAISE EXCEPTION 'topic must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT * INTO t FROM estream.topic x WHERE x.name = topic FOR UPDATE;
	PERFORM estream._require('delete', 'topic', topic, t.owner);
	IF t.topic_id IS NULL THEN
		IF if_exists THEN
			RAISE NOTICE 'topic "%" does not exist, skipping', topic;
			RETURN;
		END IF;
		RAISE EXCEPTION 'topic "%" does not exist', topic
			USING ERRCODE = 'undefined_object',
				  HINT = 'Pass if_exists => true to ignore missing topics.';
	END IF;
	-- long-polls of the topic hold a lock on its log until they return
	PERFORM estream._drain(t.topic_id);
	EXECUTE format('DROP TABLE estream.log_%s', t.topic_id);
	DELETE FROM estream.topic x WHERE x.topic_id = t.topic_id;
	-- rights granted on this topic by name go with it, as privileges go
	-- with a table: a topic created again under the name starts without
	-- them (prefixed and "*" rights stay)
	DELETE FROM estream.acl a
	 WHERE a.resource_type = 'topic' AND a.pattern_type = 'literal' AND a.resource_name = topic;
END
$$;
COMMENT ON FUNCTION estream._drop_topic_impl(text, boolean) IS
	'Body of drop_topic(): needs the delete right on the topic; the literal rights on it go too.';

CREATE OR REPLACE FUNCTION estream.drop_topic(topic text, if_exists boolean DEFAULT false)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.drop_topic(text, boolean) IS
	'Drops a topic and all its records (needs the delete right).';

CREATE FUNCTION estream._alter_topic_impl(topic text, config jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	t estream.topic;
	v_new jsonb;
BEGIN
	t := estream._authorize_topic(topic, 'alter_configs');
	SELECT * INTO t FROM estream.topic x WHERE x.topic_id = t.topic_id FOR UPDATE;
	v_new := estream._merge_config(t.config, config);
	UPDATE estream.topic x SET config = v_new WHERE x.topic_id = t.topic_id;
	RETURN v_new;
END
$$;
COMMENT ON FUNCTION estream._alter_topic_impl(text, jsonb) IS
	'Body of alter_topic(): needs the alter_configs right on the topic.';

CREATE OR REPLACE FUNCTION estream.alter_topic(topic text, config jsonb)
RETURNS jsonb
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.alter_topic(text, jsonb) IS
	'Changes configuration keys of a topic (a JSON null resets a key to its default); returns the new explicit configuration (needs the alter_configs right).';

CREATE FUNCTION estream._add_partitions_impl(topic text, partitions integer)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	t estream.topic;
BEGIN
	t := estream._authorize_topic(topic, 'alter');
	PERFORM estream._check_partition_count(partitions);
	SELECT * INTO t FROM estream.topic x WHERE x.topic_id = t.topic_id FOR UPDATE;
	IF partitions <= t.partitions THEN
		RAISE EXCEPTION 'topic "%" already has % partition%', topic, t.partitions,
				CASE WHEN t.partitions = 1 THEN '' ELSE 's' END
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('The new partition count (%s) must be greater than the current one; partitions can be added but never removed.', partitions),
				  HINT = 'partitions is the new total count, as in Kafka''s CreatePartitions.';
	END IF;
	UPDATE estream.topic x SET partitions = _add_partitions_impl.partitions WHERE x.topic_id = t.topic_id;
	INSERT INTO estream.partition (topic_id, partition)
		SELECT t.topic_id, g FROM generate_series(t.partitions, partitions - 1) g;
END
$$;
COMMENT ON FUNCTION estream._add_partitions_impl(text, integer) IS
	'Body of add_partitions(): needs the alter right on the topic.';

CREATE OR REPLACE FUNCTION estream.add_partitions(topic text, partitions integer)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.add_partitions(text, integer) IS
	'Grows a topic to the given total partition count (never shrinks; needs the alter right). Keys may map to other partitions afterwards, as in Kafka.';

--
-- Consumer groups.  A group is bound to the rights of the role that uses
-- it: consuming, committing, seeking and joining need read on the group
-- and on the topic; deleting needs delete on the group and read on its
-- topics; looking needs describe.
--

CREATE OR REPLACE FUNCTION estream._seek(p_group text, p_topic text, p_partition integer, p_how text,
										 p_offset bigint, p_ts timestamptz)
RETURNS TABLE (partition integer, committed_offset bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	g estream."group";
	t estream.topic;
BEGIN
	g := estream._authorize_group(p_group, 'read', NULL, true);
	t := estream._authorize_topic(p_topic, 'read');
	IF p_partition IS NOT NULL AND (p_partition < 0 OR p_partition >= t.partitions) THEN
		RAISE EXCEPTION 'partition % does not exist in topic "%"', p_partition, t.name
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('Topic "%s" has %s partitions, numbered from 0.', t.name, t.partitions);
	END IF;
	-- as commit(): the group row first, so no rebalance runs meanwhile
	PERFORM 1 FROM estream."group" x WHERE x.group_id = g.group_id FOR SHARE;
	PERFORM estream._ensure_offsets(g, t, NULL);
	IF EXISTS (SELECT 1 FROM estream.group_offset o
			   WHERE o.group_id = g.group_id AND o.topic_id = t.topic_id
			   AND (p_partition IS NULL OR o.partition = p_partition)
			   AND o.member_id IS NOT NULL AND estream._member_alive(g.group_id, o.member_id)) THEN
		RAISE EXCEPTION 'cannot seek partitions of consumer group "%" assigned to live members', g.name
			USING ERRCODE = 'object_in_use',
				  HINT = 'Seek when the members have left, or commit as the member.';
	END IF;
	RETURN QUERY
	UPDATE estream.group_offset o
	SET committed_offset = CASE p_how
			WHEN 'offset' THEN p_offset
			WHEN 'earliest' THEN w.log_start_offset
			WHEN 'latest' THEN w.stable_offset
			ELSE coalesce((SELECT f."offset" FROM estream.offsets_for_times(t.name, p_ts) f
						   WHERE f.partition = o.partition), w.stable_offset) END,
		committed_at = pg_catalog.now()
	FROM estream.watermarks(t.name) w
	WHERE o.group_id = g.group_id AND o.topic_id = t.topic_id AND w.partition = o.partition
	  AND (p_partition IS NULL OR o.partition = p_partition)
	RETURNING o.partition, o.committed_offset;
END
$$;

CREATE FUNCTION estream._create_group_impl("group" text, auto_offset_reset text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
BEGIN
	IF "group" IS NULL THEN
		RAISE EXCEPTION 'group must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM estream._require('read', 'group', "group", NULL);
	IF EXISTS (SELECT 1 FROM estream."group" g WHERE g.name = _create_group_impl."group") THEN
		RAISE EXCEPTION 'consumer group "%" already exists', _create_group_impl."group"
			USING ERRCODE = 'duplicate_object';
	END IF;
	PERFORM estream._group(_create_group_impl."group", coalesce(auto_offset_reset, 'latest'), true);
END
$$;
COMMENT ON FUNCTION estream._create_group_impl(text, text) IS
	'Body of create_group(): needs the read right on the group.';

CREATE OR REPLACE FUNCTION estream.create_group("group" text, auto_offset_reset text DEFAULT 'latest')
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.create_group(text, text) IS
	'Creates a consumer group; auto_offset_reset says where its partitions start (earliest or latest). Needs the read right on the group.';

CREATE FUNCTION estream._delete_group_impl("group" text, if_exists boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	g estream."group";
	t estream.topic;
	n integer;
BEGIN
	IF "group" IS NULL THEN
		RAISE EXCEPTION 'group must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM estream._require('delete', 'group', "group", NULL);
	SELECT * INTO g FROM estream."group" x WHERE x.name = _delete_group_impl."group" FOR UPDATE;
	IF NOT FOUND THEN
		IF if_exists THEN
			RAISE NOTICE 'consumer group "%" does not exist, skipping', _delete_group_impl."group";
			RETURN;
		END IF;
		PERFORM estream._group(_delete_group_impl."group", NULL, false);
	END IF;
	-- its committed offsets go too: only for a role that may read them
	-- (without naming a topic the caller may not even describe)
	FOR t IN SELECT tp.* FROM estream.topic tp
			  WHERE tp.topic_id IN (SELECT o.topic_id FROM estream.group_offset o
									 WHERE o.group_id = g.group_id)
			  ORDER BY tp.name LOOP
		IF NOT estream._allowed('describe', 'topic', t.name, t.owner) THEN
			RAISE EXCEPTION 'permission denied for consumer group "%"', g.name
				USING ERRCODE = 'insufficient_privilege',
					  DETAIL = 'The group has committed offsets on topics the role may not read.';
		END IF;
		PERFORM estream._require('read', 'topic', t.name, t.owner);
	END LOOP;
	SELECT count(*) INTO n FROM estream.group_member m
	WHERE m.group_id = g.group_id AND estream._member_alive(g.group_id, m.member_id);
	IF n > 0 THEN
		RAISE EXCEPTION 'consumer group "%" has % live member%', g.name, n,
				CASE WHEN n = 1 THEN '' ELSE 's' END
			USING ERRCODE = 'object_in_use',
				  HINT = 'Members must leave the group (estream.leave_group()) or time out first.';
	END IF;
	DELETE FROM estream."group" x WHERE x.group_id = g.group_id;
END
$$;
COMMENT ON FUNCTION estream._delete_group_impl(text, boolean) IS
	'Body of delete_group(): needs the delete right on the group and read on its topics.';

CREATE OR REPLACE FUNCTION estream.delete_group("group" text, if_exists boolean DEFAULT false)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.delete_group(text, boolean) IS
	'Deletes a consumer group and its committed offsets; it must have no live members (needs delete on the group and read on its topics).';

CREATE FUNCTION estream._commit_impl("group" text, topic text, partition integer, "offset" bigint,
									 member_id text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	g estream."group";
	t estream.topic;
	w record;
	o estream.group_offset;
BEGIN
	g := estream._authorize_group(_commit_impl."group", 'read', NULL, member_id IS NULL);
	t := estream._authorize_topic(_commit_impl.topic, 'read');
	IF _commit_impl.partition IS NULL OR _commit_impl.partition < 0 OR _commit_impl.partition >= t.partitions THEN
		RAISE EXCEPTION 'partition % does not exist in topic "%"', coalesce(_commit_impl.partition::text, 'NULL'), t.name
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('Topic "%s" has %s partitions, numbered from 0.', t.name, t.partitions);
	END IF;
	SELECT * INTO w FROM estream.watermarks(t.name) x WHERE x.partition = _commit_impl.partition;
	IF _commit_impl."offset" IS NULL OR _commit_impl."offset" < 0 OR _commit_impl."offset" > w.stable_offset THEN
		RAISE EXCEPTION 'cannot commit offset % for partition % of topic "%"',
				coalesce(_commit_impl."offset"::text, 'NULL'), _commit_impl.partition, t.name
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('A committed offset is the next offset to consume, between 0 and the stable offset (%s).',
								  w.stable_offset);
	END IF;
	-- lock order of every group path: the group row, then offset rows.  A
	-- rebalance holds the group row exclusively while it updates offset
	-- rows; commits share it, so they never hold an offset row a rebalance
	-- waits for while waiting for the rebalance themselves.
	PERFORM 1 FROM estream."group" x WHERE x.group_id = g.group_id FOR SHARE;
	PERFORM estream._ensure_offsets(g, t, NULL);
	SELECT * INTO o FROM estream.group_offset x
	WHERE x.group_id = g.group_id AND x.topic_id = t.topic_id AND x.partition = _commit_impl.partition
	FOR UPDATE;
	IF member_id IS NOT NULL THEN
		PERFORM estream._require_live_member(g, member_id);
		IF o.member_id IS DISTINCT FROM _commit_impl.member_id THEN
			RAISE EXCEPTION 'partition % of topic "%" is not assigned to member "%"', _commit_impl.partition, t.name, member_id
				USING ERRCODE = 'ES001',
					  DETAIL = format('The group rebalanced (generation %s); the partition now belongs to %s.',
									  g.generation, coalesce('member "' || o.member_id || '"', 'no member')),
					  HINT = 'Fetch the new assignment with estream.assignment() and resume from its committed offsets.';
		END IF;
	ELSIF o.member_id IS NOT NULL AND estream._member_alive(g.group_id, o.member_id) THEN
		RAISE EXCEPTION 'partition % of topic "%" is assigned to member "%"', _commit_impl.partition, t.name, o.member_id
			USING ERRCODE = 'ES001',
				  HINT = 'Pass member_id to commit as that member.';
	END IF;
	UPDATE estream.group_offset x SET committed_offset = _commit_impl."offset", committed_at = pg_catalog.now()
	WHERE x.group_id = g.group_id AND x.topic_id = t.topic_id AND x.partition = _commit_impl.partition;
END
$$;
COMMENT ON FUNCTION estream._commit_impl(text, text, integer, bigint, text) IS
	'Body of commit(): needs the read right on the group and on the topic.';

CREATE OR REPLACE FUNCTION estream.commit("group" text, topic text, partition integer, "offset" bigint,
										  member_id text DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.commit(text, text, integer, bigint, text) IS
	'Commits the next offset to consume for a partition, in the caller''s transaction; a session member may commit only partitions assigned to it. Needs read on the group and the topic.';

CREATE FUNCTION estream._committed_impl("group" text, topic text)
RETURNS TABLE (partition integer, committed_offset bigint, member_id text, committed_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	t estream.topic;
BEGIN
	IF _committed_impl."group" IS NULL THEN
		RAISE EXCEPTION 'group must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM estream._require('describe', 'group', _committed_impl."group", NULL);
	t := estream._authorize_topic(_committed_impl.topic, 'describe');
	RETURN QUERY
	SELECT o.partition, o.committed_offset, o.member_id, o.committed_at
	FROM estream.group_offset o
	JOIN estream."group" g USING (group_id)
	WHERE g.name = _committed_impl."group" AND o.topic_id = t.topic_id
	ORDER BY o.partition;
END
$$;
COMMENT ON FUNCTION estream._committed_impl(text, text) IS
	'Body of committed(): needs describe on the group and the topic.';

CREATE OR REPLACE FUNCTION estream.committed("group" text, topic text)
RETURNS TABLE (partition integer, committed_offset bigint, member_id text, committed_at timestamptz)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.committed(text, text) IS
	'Committed offsets of a group for a topic, per partition (needs describe on both).';

CREATE FUNCTION estream._seek_impl("group" text, topic text, partition integer, "offset" bigint)
RETURNS SETOF estream.group_position
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	w record;
BEGIN
	IF _seek_impl.partition IS NULL THEN
		RAISE EXCEPTION 'partition must not be null' USING ERRCODE = 'null_value_not_allowed',
			HINT = 'seek_to_beginning(), seek_to_end() and seek_to_time() move every partition.';
	END IF;
	IF _seek_impl."group" IS NULL THEN
		RAISE EXCEPTION 'group must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM estream._require('read', 'group', _seek_impl."group", NULL);
	PERFORM estream._authorize_topic(_seek_impl.topic, 'read');
	SELECT * INTO w FROM estream.watermarks(_seek_impl.topic) x WHERE x.partition = _seek_impl.partition;
	IF FOUND AND (_seek_impl."offset" IS NULL OR _seek_impl."offset" < 0 OR _seek_impl."offset" > w.stable_offset) THEN
		RAISE EXCEPTION 'cannot seek to offset % in partition % of topic "%"',
				coalesce(_seek_impl."offset"::text, 'NULL'), _seek_impl.partition, _seek_impl.topic
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('The offset must be between 0 and the stable offset (%s).', w.stable_offset);
	END IF;
	RETURN QUERY SELECT * FROM estream._seek(_seek_impl."group", _seek_impl.topic, _seek_impl.partition,
											 'offset', _seek_impl."offset", NULL);
END
$$;
COMMENT ON FUNCTION estream._seek_impl(text, text, integer, bigint) IS
	'Body of seek(): needs read on the group and the topic.';

CREATE OR REPLACE FUNCTION estream.seek("group" text, topic text, partition integer, "offset" bigint)
RETURNS SETOF estream.group_position
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.seek(text, text, integer, bigint) IS
	'Sets the committed offset of one partition of a group (needs read on the group and the topic).';

CREATE FUNCTION estream._seek_to_beginning_impl("group" text, topic text, partition integer)
RETURNS SETOF estream.group_position
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
BEGIN
	RETURN QUERY SELECT * FROM estream._seek(_seek_to_beginning_impl."group", _seek_to_beginning_impl.topic,
											 _seek_to_beginning_impl.partition, 'earliest', NULL, NULL);
END
$$;
COMMENT ON FUNCTION estream._seek_to_beginning_impl(text, text, integer) IS
	'Body of seek_to_beginning(): needs read on the group and the topic.';

CREATE OR REPLACE FUNCTION estream.seek_to_beginning("group" text, topic text, partition integer DEFAULT NULL)
RETURNS SETOF estream.group_position
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.seek_to_beginning(text, text, integer) IS
	'Moves a group to the log start of one partition, or of every partition of the topic (needs read on the group and the topic).';

CREATE FUNCTION estream._seek_to_end_impl("group" text, topic text, partition integer)
RETURNS SETOF estream.group_position
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
BEGIN
	RETURN QUERY SELECT * FROM estream._seek(_seek_to_end_impl."group", _seek_to_end_impl.topic,
											 _seek_to_end_impl.partition, 'latest', NULL, NULL);
END
$$;
COMMENT ON FUNCTION estream._seek_to_end_impl(text, text, integer) IS
	'Body of seek_to_end(): needs read on the group and the topic.';

CREATE OR REPLACE FUNCTION estream.seek_to_end("group" text, topic text, partition integer DEFAULT NULL)
RETURNS SETOF estream.group_position
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.seek_to_end(text, text, integer) IS
	'Moves a group to the stable offset of one partition, or of every partition of the topic (needs read on the group and the topic).';

CREATE FUNCTION estream._seek_to_time_impl("group" text, topic text, ts timestamptz, partition integer)
RETURNS SETOF estream.group_position
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
BEGIN
	IF ts IS NULL THEN
		RAISE EXCEPTION 'ts must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	RETURN QUERY SELECT * FROM estream._seek(_seek_to_time_impl."group", _seek_to_time_impl.topic,
											 _seek_to_time_impl.partition, 'time', NULL, _seek_to_time_impl.ts);
END
$$;
COMMENT ON FUNCTION estream._seek_to_time_impl(text, text, timestamptz, integer) IS
	'Body of seek_to_time(): needs read on the group and the topic.';

CREATE OR REPLACE FUNCTION estream.seek_to_time("group" text, topic text, ts timestamptz, partition integer DEFAULT NULL)
RETURNS SETOF estream.group_position
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.seek_to_time(text, text, timestamptz, integer) IS
	'Moves a group to the first offset at or after ts (the stable offset if there is none), per partition (needs read on the group and the topic).';

CREATE FUNCTION estream._poll_impl("group" text, topic text, max_records integer,
								   wait_ms integer, auto_offset_reset text)
RETURNS SETOF estream.group_record
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	g estream."group";
	t estream.topic;
	stable bigint[];
	parts integer[];
	froms bigint[];
	start integer;
	p integer;
	c bigint;
	m text;
	got integer := 0;
	last bigint;
	r record;
	deadline timestamptz;
BEGIN
	IF current_setting('transaction_isolation') <> 'read committed' THEN
		RAISE EXCEPTION 'estream.poll() requires the READ COMMITTED isolation level'
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = format('The transaction is %s: claiming partitions with row locks would raise serialization failures.',
								  upper(current_setting('transaction_isolation')));
	END IF;
	IF max_records IS NULL OR max_records < 1 THEN
		RAISE EXCEPTION 'max_records must be at least 1' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF wait_ms IS NULL OR wait_ms < 0 THEN
		RAISE EXCEPTION 'wait_ms must not be negative' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM estream._check_reset(_poll_impl.auto_offset_reset);
	IF _poll_impl."group" IS NULL THEN
		RAISE EXCEPTION 'group must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM estream._require('read', 'group', _poll_impl."group", NULL);
	t := estream._authorize_topic(_poll_impl.topic, 'read');
	-- A new group, or new offset rows (a new topic or partitions), are
	-- made by one poller at a time: the others of the group do not queue
	-- behind its transaction, they poll what exists (nothing yet for a new
	-- group) and come back.
	SELECT * INTO g FROM estream."group" x WHERE x.name = _poll_impl."group";
	IF NOT FOUND THEN
		IF NOT estream._lock_name('group', _poll_impl."group", false) THEN
			RETURN;
		END IF;
		g := estream._group(_poll_impl."group", _poll_impl.auto_offset_reset, true);
	END IF;
	IF (SELECT count(*) FROM estream.group_offset o
		WHERE o.group_id = g.group_id AND o.topic_id = t.topic_id) < t.partitions
	   AND estream._lock_name('group offsets', g.group_id::text || '.' || t.topic_id::text, false) THEN
		PERFORM estream._ensure_offsets(g, t, _poll_impl.auto_offset_reset);
	END IF;
	deadline := clock_timestamp() + wait_ms * interval '1 millisecond';

	LOOP
		SELECT array_agg(w.stable_offset ORDER BY w.partition) INTO stable
		FROM estream.watermarks(t.name) w;
		parts := '{}';
		froms := '{}';
		-- start at a random partition so that concurrent pollers spread
		start := floor(random() * t.partitions)::integer;
		FOR i IN 0 .. t.partitions - 1 LOOP
			p := (start + i) % t.partitions;
			-- unlocked look first: skip partitions with nothing to read or
			-- assigned to a live session member
			SELECT o.committed_offset, o.member_id INTO c, m FROM estream.group_offset o
			WHERE o.group_id = g.group_id AND o.topic_id = t.topic_id AND o.partition = p;
			IF m IS NOT NULL AND estream._member_alive(g.group_id, m) THEN
				CONTINUE;
			END IF;
			IF c >= stable[p + 1] THEN
				parts := parts || p;
				froms := froms || c;
				CONTINUE;
			END IF;
			-- claim it: no other transaction of the group may hold it; and
			-- look at the owner again under the lock, since a member may
			-- have joined and taken it since the unlocked look
			SELECT o.committed_offset, o.member_id INTO c, m FROM estream.group_offset o
			WHERE o.group_id = g.group_id AND o.topic_id = t.topic_id AND o.partition = p
			FOR UPDATE SKIP LOCKED;
			IF NOT FOUND OR (m IS NOT NULL AND estream._member_alive(g.group_id, m)) THEN
				CONTINUE;
			END IF;
			last := NULL;
			FOR r IN SELECT * FROM estream.fetch(t.name, p, c, max_records - got) LOOP
				RETURN NEXT (t.name, r.partition, r."offset", r."timestamp", r.key, r.value, r.headers)::estream.group_record;
				last := r."offset";
				got := got + 1;
			END LOOP;
			-- past what was returned; over holes only, up to the stable
			-- offset read before the claim
			UPDATE estream.group_offset o
			SET committed_offset = CASE WHEN last IS NOT NULL THEN last + 1
										ELSE greatest(c, stable[p + 1]) END,
				committed_at = now()
			WHERE o.group_id = g.group_id AND o.topic_id = t.topic_id AND o.partition = p;
			EXIT WHEN got >= max_records;
		END LOOP;
		EXIT WHEN got > 0 OR wait_ms = 0 OR clock_timestamp() >= deadline
			OR estream._draining(t.topic_id);
		-- nothing to read in the partitions we could claim: wait for any
		-- partition to move past where the group stands
		IF cardinality(parts) = 0 THEN
			-- every partition with records is claimed by another transaction
			PERFORM pg_sleep(least(0.01, greatest(0, extract(epoch FROM deadline - clock_timestamp()))));
		ELSIF NOT estream._wait_for_records(t.name, parts, froms,
				greatest(1, ceil(extract(epoch FROM deadline - clock_timestamp()) * 1000))::integer) THEN
			-- timed out, or cannot wait (this transaction produced to the
			-- topic and holds its own stable offset back)
			EXIT;
		END IF;
		EXIT WHEN clock_timestamp() >= deadline AND NOT EXISTS (
			SELECT 1 FROM estream.watermarks(t.name) w, unnest(parts, froms) AS x(pp, ff)
			WHERE w.partition = x.pp AND w.stable_offset > x.ff);
	END LOOP;
	RETURN;
END
$$;
COMMENT ON FUNCTION estream._poll_impl(text, text, integer, integer, text) IS
	'Body of poll(): needs read on the group and the topic.';

CREATE OR REPLACE FUNCTION estream.poll("group" text, topic text, max_records integer DEFAULT 500,
										wait_ms integer DEFAULT 0, auto_offset_reset text DEFAULT NULL)
RETURNS SETOF estream.group_record
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.poll(text, text, integer, integer, text) IS
	'Claims partitions of a topic that no other transaction of the group holds, returns their records after the committed offsets and advances those offsets in the caller''s transaction (exactly-once with the caller''s writes). Needs read on the group and the topic.';

CREATE FUNCTION estream._join_group_impl("group" text, topics text[], member_id text,
								   session_timeout_ms integer,
								   auto_offset_reset text)
RETURNS estream.group_membership
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	g estream."group";
	ids integer[];
	mid text := coalesce(_join_group_impl.member_id, gen_random_uuid()::text);
	gen integer;
BEGIN
	IF topics IS NULL OR cardinality(topics) = 0 THEN
		RAISE EXCEPTION 'a member must subscribe to at least one topic' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF mid = '' OR length(mid) > 249 THEN
		RAISE EXCEPTION 'invalid member id "%"', mid USING ERRCODE = 'invalid_name',
			DETAIL = 'Member ids have 1 to 249 characters.';
	END IF;
	IF session_timeout_ms IS NULL OR session_timeout_ms < 100 OR session_timeout_ms > 3600000 THEN
		RAISE EXCEPTION 'session_timeout_ms must be between 100 and 3600000' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM estream._check_reset(_join_group_impl.auto_offset_reset);
	g := estream._authorize_group(_join_group_impl."group", 'read', _join_group_impl.auto_offset_reset, true);
	SELECT array_agg(DISTINCT (estream._authorize_topic(x, 'read')).topic_id) INTO ids FROM unnest(topics) AS x;
	PERFORM 1 FROM estream."group" x WHERE x.group_id = g.group_id FOR UPDATE;
	-- a member rejoining with the same id after its session timed out keeps
	-- the partitions still assigned to it, so the rebalance changes no row
	-- and would not wait for a poll or commit that took them meanwhile:
	-- wait for those transactions here (moved partitions wait through the
	-- rebalance's UPDATE)
	PERFORM 1 FROM estream.group_offset o
	WHERE o.group_id = g.group_id AND o.member_id = mid FOR UPDATE;
	FOR i IN 1 .. cardinality(topics) LOOP
		PERFORM estream._ensure_offsets(g, estream._authorize_topic(topics[i], 'read'),
										_join_group_impl.auto_offset_reset);
	END LOOP;
	INSERT INTO estream.group_member AS m (group_id, member_id, topics, session_timeout_ms)
	VALUES (g.group_id, mid, ids, session_timeout_ms)
	ON CONFLICT ON CONSTRAINT group_member_pkey DO UPDATE
		SET topics = excluded.topics, session_timeout_ms = excluded.session_timeout_ms,
			last_heartbeat = clock_timestamp();
	gen := estream._rebalance(g.group_id);
	RETURN (mid, gen)::estream.group_membership;
END
$$;
COMMENT ON FUNCTION estream._join_group_impl(text, text[], text, integer, text) IS
	'Body of join_group(): needs read on the group and on every topic.';

CREATE OR REPLACE FUNCTION estream.join_group("group" text, topics text[], member_id text DEFAULT NULL,
								   session_timeout_ms integer DEFAULT 10000,
								   auto_offset_reset text DEFAULT NULL)
RETURNS estream.group_membership
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.join_group(text, text[], text, integer, text) IS
	'Joins a session member to a group (a new member id if none is given) and rebalances; returns the member id and the generation. Needs read on the group and on every topic.';

CREATE FUNCTION estream._heartbeat_impl("group" text, member_id text)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	g estream."group";
BEGIN
	g := estream._authorize_group(_heartbeat_impl."group", 'read', NULL, false);
	PERFORM estream._require_live_member(g, _heartbeat_impl.member_id);
	UPDATE estream.group_member m SET last_heartbeat = clock_timestamp()
	WHERE m.group_id = g.group_id AND m.member_id = _heartbeat_impl.member_id;
	-- take the group lock and rebalance only when a member has timed out,
	-- so that heartbeats of live members do not queue behind each other
	IF EXISTS (SELECT 1 FROM estream.group_member m
			   WHERE m.group_id = g.group_id AND NOT estream._member_alive(g.group_id, m.member_id)) THEN
		-- if another transaction holds the group (a join, a rebalance), it
		-- is rebalancing: do not queue behind it
		PERFORM 1 FROM estream."group" x WHERE x.group_id = g.group_id FOR UPDATE SKIP LOCKED;
		IF FOUND THEN
			RETURN estream._rebalance(g.group_id);
		END IF;
	END IF;
	RETURN g.generation;
END
$$;
COMMENT ON FUNCTION estream._heartbeat_impl(text, text) IS
	'Body of heartbeat(): needs read on the group.';

CREATE OR REPLACE FUNCTION estream.heartbeat("group" text, member_id text)
RETURNS integer
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.heartbeat(text, text) IS
	'Keeps a session member alive; if a member timed out, removes it and rebalances; returns the generation. Needs read on the group.';

CREATE FUNCTION estream._leave_group_impl("group" text, member_id text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	g estream."group";
BEGIN
	g := estream._authorize_group(_leave_group_impl."group", 'read', NULL, false);
	PERFORM 1 FROM estream."group" x WHERE x.group_id = g.group_id FOR UPDATE;
	DELETE FROM estream.group_member m WHERE m.group_id = g.group_id AND m.member_id = _leave_group_impl.member_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'member "%" is not a member of consumer group "%"', _leave_group_impl.member_id, g.name
			USING ERRCODE = 'ES002';
	END IF;
	PERFORM estream._rebalance(g.group_id);
END
$$;
COMMENT ON FUNCTION estream._leave_group_impl(text, text) IS
	'Body of leave_group(): needs read on the group.';

CREATE OR REPLACE FUNCTION estream.leave_group("group" text, member_id text)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.leave_group(text, text) IS
	'Removes a session member from its group and gives its partitions to the others (needs read on the group).';

CREATE FUNCTION estream._assignment_impl("group" text, member_id text)
RETURNS TABLE (topic text, partition integer, committed_offset bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
BEGIN
	IF _assignment_impl."group" IS NULL THEN
		RAISE EXCEPTION 'group must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM estream._require('describe', 'group', _assignment_impl."group", NULL);
	RETURN QUERY
	SELECT t.name, o.partition, o.committed_offset
	FROM estream.group_offset o
	JOIN estream."group" g USING (group_id)
	JOIN estream.topic t USING (topic_id)
	WHERE g.name = _assignment_impl."group" AND o.member_id = _assignment_impl.member_id
	  AND estream._allowed('describe', 'topic', t.name, t.owner)
	ORDER BY t.name, o.partition;
END
$$;
COMMENT ON FUNCTION estream._assignment_impl(text, text) IS
	'Body of assignment(): needs describe on the group.';

CREATE OR REPLACE FUNCTION estream.assignment("group" text, member_id text)
RETURNS TABLE (topic text, partition integer, committed_offset bigint)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.assignment(text, text) IS
	'The partitions assigned to a session member, with their committed offsets (needs describe on the group).';

-- Heartbeat, then read the member's partitions from their committed
-- offsets.  Does not commit: the member commits what it has processed.
-- fetch() checks the read right on each topic.

CREATE FUNCTION estream._consume_impl("group" text, member_id text, max_records integer,
								wait_ms integer)
RETURNS SETOF estream.group_record
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	a record;
	got integer := 0;
	r record;
	deadline timestamptz := clock_timestamp() + coalesce(wait_ms, 0) * interval '1 millisecond';
	gid integer;
BEGIN
	IF max_records IS NULL OR max_records < 1 THEN
		RAISE EXCEPTION 'max_records must be at least 1' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF wait_ms < 0 THEN
		RAISE EXCEPTION 'wait_ms must not be negative' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF _consume_impl."group" IS NULL THEN
		RAISE EXCEPTION 'group must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM estream._require('read', 'group', _consume_impl."group", NULL);
	PERFORM estream.heartbeat(_consume_impl."group", _consume_impl.member_id);
	SELECT x.group_id INTO gid FROM estream."group" x WHERE x.name = _consume_impl."group";
	LOOP
		FOR a IN SELECT t.name AS topic, o.partition, o.committed_offset
				 FROM estream.group_offset o JOIN estream.topic t USING (topic_id)
				 WHERE o.group_id = gid AND o.member_id = _consume_impl.member_id
				 ORDER BY random() LOOP
			FOR r IN SELECT * FROM estream.fetch(a.topic, a.partition, a.committed_offset, max_records - got) LOOP
				RETURN NEXT (a.topic, r.partition, r."offset", r."timestamp", r.key, r.value, r.headers)::estream.group_record;
				got := got + 1;
			END LOOP;
			EXIT WHEN got >= max_records;
		END LOOP;
		EXIT WHEN got > 0 OR coalesce(wait_ms, 0) = 0 OR clock_timestamp() >= deadline
			OR estream._draining(NULL);
		PERFORM pg_sleep(least(0.05, greatest(0, extract(epoch FROM deadline - clock_timestamp()))));
		-- waiting counts as being alive
		UPDATE estream.group_member m SET last_heartbeat = clock_timestamp()
		WHERE m.group_id = gid AND m.member_id = _consume_impl.member_id;
	END LOOP;
END
$$;
COMMENT ON FUNCTION estream._consume_impl(text, text, integer, integer) IS
	'Body of consume(): needs read on the group and on the topics of the member''s partitions.';

CREATE OR REPLACE FUNCTION estream.consume("group" text, member_id text, max_records integer DEFAULT 500,
								wait_ms integer DEFAULT 0)
RETURNS SETOF estream.group_record
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.consume(text, text, integer, integer) IS
	'For session members: heartbeats, then returns records of the member''s partitions from their committed offsets (commit with estream.commit() after processing). Needs read on the group and the topics.';

--
-- Change data capture
--

CREATE FUNCTION estream._capture_impl(source regclass, topic text, options jsonb)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	c record;
	t estream.topic;
	v_root oid;
	v_topic text := _capture_impl.topic;
	v_snapshot boolean := true;
	v_before boolean := true;
	v_columns text[];
	v_partitions integer := 1;
	v_bad text;
	k text;
BEGIN
	IF source IS NULL THEN
		RAISE EXCEPTION 'source must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF current_setting('wal_level') <> 'logical' THEN
		RAISE EXCEPTION 'change data capture needs wal_level = logical'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = format('wal_level is %s.', current_setting('wal_level')),
				  HINT = 'Set wal_level = logical in postgresql.conf and restart the server.';
	END IF;

	SELECT cl.relkind, cl.relpersistence, cl.relispartition, n.nspname, cl.relname, cl.relowner INTO c
	  FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace WHERE cl.oid = source;
	-- the worker copies and decodes the table: only for its owner
	IF NOT pg_has_role(estream._caller(), c.relowner, 'USAGE') THEN
		RAISE EXCEPTION 'must be owner of table %', source
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'Capturing a table streams every row and change of it into a topic.',
				  HINT = 'Its owner (or a member of the owning role) can capture it.';
	END IF;
	IF c.relkind NOT IN ('r', 'p') THEN
		RAISE EXCEPTION '"%" is not a table', source
			USING ERRCODE = 'wrong_object_type',
				  DETAIL = format('Only tables can be captured; "%s" is a %s.', source,
								  CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
									  WHEN 'f' THEN 'foreign table' WHEN 'S' THEN 'sequence'
									  WHEN 'i' THEN 'index' WHEN 'c' THEN 'composite type'
									  ELSE 'relation of kind ' || c.relkind::text END);
	END IF;
	IF c.relpersistence = 't' THEN
		RAISE EXCEPTION 'cannot capture temporary table "%"', source
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = 'Changes of temporary tables are not written to the WAL.';
	END IF;
	IF c.relpersistence = 'u' THEN
		RAISE EXCEPTION 'cannot capture unlogged table "%"', source
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = 'Changes of unlogged tables are not written to the WAL.',
				  HINT = format('Make it logged first: ALTER TABLE %s SET LOGGED.', source);
	END IF;
	IF c.nspname = 'estream' THEN
		RAISE EXCEPTION 'cannot capture "%", a table of estream', source
			USING ERRCODE = 'feature_not_supported',
				  HINT = 'Consume its topic instead.';
	END IF;
	-- system catalogs hold other roles' secrets (pg_authid); extensions'
	-- tables (and their configuration tables) belong to the extension
	IF source::oid < 16384 OR c.nspname IN ('pg_catalog', 'information_schema', 'pg_toast') THEN
		RAISE EXCEPTION 'cannot capture system catalog "%"', source
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'Only user tables can be captured.';
	END IF;
	IF EXISTS (SELECT 1 FROM pg_depend d
				WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e'
				  AND d.objid IN (source, pg_partition_root(source))) THEN
		RAISE EXCEPTION 'cannot capture "%", a table of extension "%"', source,
				(SELECT e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
				  WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e'
					AND d.objid IN (source, pg_partition_root(source)) LIMIT 1)
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'Tables that belong to an extension, its configuration among them, cannot be captured.';
	END IF;

	-- a partition is captured as its root (every partition, one topic)
	v_root := source;
	IF c.relispartition THEN
		v_root := pg_partition_root(source);
		RAISE NOTICE 'capturing partitioned table "%", the root of "%"', v_root::regclass, source;
		SELECT n.nspname, cl.relname, cl.relowner INTO c.nspname, c.relname, c.relowner
		  FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace WHERE cl.oid = v_root;
		-- the root's rows are all captured: only for the root's owner
		IF NOT pg_has_role(estream._caller(), c.relowner, 'USAGE') THEN
			RAISE EXCEPTION 'must be owner of table %', v_root::regclass
				USING ERRCODE = 'insufficient_privilege',
					  DETAIL = format('Capturing "%s" captures its partitioned table "%s", every partition of it.',
									  source, v_root::regclass),
					  HINT = 'The owner of the partitioned table can capture it.';
		END IF;
	END IF;

	IF options IS NULL OR jsonb_typeof(options) <> 'object' THEN
		RAISE EXCEPTION 'options must be a JSON object' USING ERRCODE = 'invalid_parameter_value',
			HINT = 'Pass for example {"snapshot": false, "columns": ["id", "status"], "before": true}.';
	END IF;
	FOR k IN SELECT jsonb_object_keys(options) LOOP
		IF k NOT IN ('snapshot', 'columns', 'before', 'partitions') THEN
			RAISE EXCEPTION 'unknown capture option "%"', k USING ERRCODE = 'invalid_parameter_value',
				DETAIL = 'The options are "snapshot" (boolean), "columns" (array of column names), "before" (boolean) and "partitions" (integer, for a new topic).';
		END IF;
	END LOOP;
	IF options ? 'snapshot' THEN
		IF jsonb_typeof(options->'snapshot') <> 'boolean' THEN
			RAISE EXCEPTION 'capture option "snapshot" must be a boolean' USING ERRCODE = 'invalid_parameter_value';
		END IF;
		v_snapshot := (options->>'snapshot')::boolean;
	END IF;
	IF options ? 'before' THEN
		IF jsonb_typeof(options->'before') <> 'boolean' THEN
			RAISE EXCEPTION 'capture option "before" must be a boolean' USING ERRCODE = 'invalid_parameter_value';
		END IF;
		v_before := (options->>'before')::boolean;
	END IF;
	IF options ? 'partitions' THEN
		IF jsonb_typeof(options->'partitions') <> 'number' OR (options->>'partitions') !~ '^[0-9]+$' THEN
			RAISE EXCEPTION 'capture option "partitions" must be a positive integer' USING ERRCODE = 'invalid_parameter_value';
		END IF;
		v_partitions := (options->>'partitions')::integer;
	END IF;
	IF options ? 'columns' THEN
		IF jsonb_typeof(options->'columns') <> 'array'
		   OR EXISTS (SELECT 1 FROM jsonb_array_elements(options->'columns') e WHERE jsonb_typeof(e) <> 'string') THEN
			RAISE EXCEPTION 'capture option "columns" must be an array of column names'
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		SELECT array_agg(e) INTO v_columns FROM jsonb_array_elements_text(options->'columns') e;
		IF v_columns IS NULL THEN
			RAISE EXCEPTION 'capture option "columns" must name at least one column'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Leave the option out to capture every column.';
		END IF;
		SELECT string_agg(format('"%s"', col), ', ') INTO v_bad
		  FROM unnest(v_columns) col
		 WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = v_root AND a.attname = col
							  AND a.attnum > 0 AND NOT a.attisdropped);
		IF v_bad IS NOT NULL THEN
			RAISE EXCEPTION 'table "%" has no column %', v_root::regclass, v_bad
				USING ERRCODE = 'undefined_column';
		END IF;
	END IF;

	IF EXISTS (SELECT 1 FROM estream.capture cp WHERE cp.relid = v_root) THEN
		RAISE EXCEPTION 'table "%" is already captured', v_root::regclass
			USING ERRCODE = 'duplicate_object',
				  HINT = 'estream.captures lists the captures; estream.uncapture() ends one.';
	END IF;

	-- Debezium names topics <server>.<schema>.<table>
	IF v_topic IS NULL THEN
		v_topic := left(regexp_replace(format('%s.%s.%s', current_database(), c.nspname, c.relname),
									   '[^A-Za-z0-9._-]', '_', 'g'), 249);
	END IF;
	-- a row can be large: a new topic takes records up to 64 MB.  The
	-- caller needs the create right for a new topic (and owns it), the
	-- write right on an existing one.
	IF NOT EXISTS (SELECT 1 FROM estream.topic tp WHERE tp.name = v_topic) THEN
		PERFORM estream.create_topic(v_topic, v_partitions, '{"max.message.bytes": 67108864}');
	ELSE
		-- a table's rows go only into a topic of its owner's: the write right
		-- (every producer has it on every topic) would let anyone who made a
		-- topic of the default name first read what is captured into it
		t := estream._authorize_topic(v_topic, 'write');
		IF NOT pg_has_role(estream._caller(), t.owner, 'USAGE')
		   AND NOT estream._allowed('alter', 'cluster', NULL, NULL) THEN
			RAISE EXCEPTION 'topic "%" belongs to role "%"', v_topic, t.owner
				USING ERRCODE = 'insufficient_privilege',
					  DETAIL = 'A table is captured only into a new topic or one its capturer owns.',
					  HINT = 'Pass another topic name, or have the topic''s owner give it to you (estream.alter_topic_owner()).';
		END IF;
	END IF;
	IF position('compact' IN estream.effective_config(
			(SELECT tp.config FROM estream.topic tp WHERE tp.name = v_topic))->>'cleanup.policy') > 0
		  AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = v_root AND i.indisprimary) THEN
		RAISE EXCEPTION 'table "%" has no primary key, which compacted topic "%" needs', v_root::regclass, v_topic
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Its events would have no key, and a compacted topic keeps the latest record per key.';
	END IF;

	INSERT INTO estream.capture (relid, topic, with_before, columns, topic_id, source_schema,
								 source_table, initial_snapshot, capturer)
	SELECT v_root, v_topic, v_before, v_columns, x.topic_id, c.nspname, c.relname, v_snapshot,
		   estream._caller()
	  FROM estream.topic x WHERE x.name = v_topic;
	RETURN v_topic;
END
$$;
COMMENT ON FUNCTION estream._capture_impl(regclass, text, jsonb) IS
	'Body of capture(): needs ownership of the table, and the create right for a new topic or write on an existing one.';

CREATE OR REPLACE FUNCTION estream.capture(source regclass, topic text DEFAULT NULL, options jsonb DEFAULT '{}')
RETURNS text
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.capture(regclass, text, jsonb) IS
	'Starts capturing the changes of a table into a topic (created if missing; by default <database>.<schema>.<table>), keyed by primary key; returns the topic. Needs ownership of the table and the create right (new topic) or write (existing topic).';

CREATE FUNCTION estream._uncapture_impl(source regclass, if_exists boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	v_root oid := source;
BEGIN
	IF source IS NULL THEN
		RAISE EXCEPTION 'source must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF (SELECT relispartition FROM pg_class WHERE oid = source) THEN
		v_root := pg_partition_root(source);
	END IF;
	-- the table's owner, the topic's owner (it may refuse what is written
	-- into its topic) or the cluster's admin
	IF NOT estream._allowed('alter', 'cluster', NULL, NULL)
	   AND NOT coalesce(pg_has_role(estream._caller(), (SELECT relowner FROM pg_class WHERE oid = v_root),
									'USAGE'), false)
	   AND NOT coalesce((SELECT pg_has_role(estream._caller(), t.owner, 'USAGE')
						   FROM estream.capture cp JOIN estream.topic t ON t.topic_id = cp.topic_id
						  WHERE cp.relid = v_root), false) THEN
		RAISE EXCEPTION 'must be owner of table % or of its topic', source
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'The table''s owner, the topic''s owner, or a role with the alter right on the cluster can stop a capture.';
	END IF;
	DELETE FROM estream.capture cp WHERE cp.relid = v_root;
	IF NOT FOUND THEN
		IF if_exists THEN
			RAISE NOTICE 'table "%" is not captured, skipping', source;
			RETURN;
		END IF;
		RAISE EXCEPTION 'table "%" is not captured', source
			USING ERRCODE = 'undefined_object',
				  HINT = 'estream.captures lists the captures.';
	END IF;
END
$$;
COMMENT ON FUNCTION estream._uncapture_impl(regclass, boolean) IS
	'Body of uncapture(): needs ownership of the table or of its topic, or the alter right on the cluster.';

CREATE OR REPLACE FUNCTION estream.uncapture(source regclass, if_exists boolean DEFAULT false)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.uncapture(regclass, boolean) IS
	'Stops capturing a table; its topic stays. When no table is captured any more, the worker drops the replication slot. Needs ownership of the table or of its topic, or alter on the cluster.';

--
-- Maintenance, latest values, statistics
--

CREATE FUNCTION estream._run_maintenance_impl(topic text)
RETURNS TABLE (step text, done bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET default_tablespace = ''
SET default_table_access_method = heap
AS $$
#variable_conflict error
DECLARE
	v_id integer;
BEGIN
	PERFORM estream._require('cluster_action', 'cluster', NULL, NULL);
	PERFORM estream._require_read_committed();
	IF topic IS NOT NULL THEN
		SELECT t.topic_id INTO v_id FROM estream.topic t WHERE t.name = _run_maintenance_impl.topic;
		IF NOT FOUND THEN
			RAISE EXCEPTION 'topic "%" does not exist', topic
				USING ERRCODE = 'undefined_object',
					  HINT = 'estream.topics lists the topics.';
		END IF;
	END IF;
	step := 'persist stable offsets'; done := estream._persist_watermarks(); RETURN NEXT;
	step := 'seal segments'; done := estream._seal_segments(v_id); RETURN NEXT;
	step := 'roll segments'; done := estream._roll_segments(v_id); RETURN NEXT;
	step := 'apply retention'; done := estream._apply_retention(v_id); RETURN NEXT;
	step := 'compact'; done := estream._compact(v_id); RETURN NEXT;
	step := 'drop empty segments'; done := estream._drop_empty_segments(v_id); RETURN NEXT;
END
$$;
COMMENT ON FUNCTION estream._run_maintenance_impl(text) IS
	'Body of run_maintenance(): needs the cluster_action right on the cluster.';

CREATE OR REPLACE FUNCTION estream.run_maintenance(topic text DEFAULT NULL)
RETURNS TABLE (step text, done bigint)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.run_maintenance(text) IS
	'Runs the worker''s maintenance steps now, in this transaction, for one topic or all; returns what each step did. Needs the cluster_action right on the cluster.';

CREATE FUNCTION estream._latest_impl(topic text)
RETURNS TABLE (partition integer, "offset" bigint, "timestamp" timestamptz,
			   key text, value jsonb, headers jsonb)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
BEGIN
	PERFORM estream._authorize_topic(_latest_impl.topic, 'read');
	RETURN QUERY
	SELECT l.partition, l."offset", l.ts, convert_from(l.key, 'UTF8'), l.value, l.headers
	  FROM estream._latest_rows(_latest_impl.topic) l;
END
$$;
COMMENT ON FUNCTION estream._latest_impl(text) IS 'Body of latest(): needs read on the topic.';

CREATE OR REPLACE FUNCTION estream.latest(topic text)
RETURNS TABLE (partition integer, "offset" bigint, "timestamp" timestamptz,
			   key text, value jsonb, headers jsonb)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.latest(text) IS
	'The latest record of every key of a topic that is not deleted by a tombstone, in the caller''s snapshot: the table view of a compacted topic (needs read).';

CREATE FUNCTION estream._latest_binary_impl(topic text)
RETURNS TABLE (partition integer, "offset" bigint, "timestamp" timestamptz,
			   key bytea, value bytea, headers jsonb)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
BEGIN
	PERFORM estream._authorize_topic(_latest_binary_impl.topic, 'read');
	RETURN QUERY
	SELECT l.partition, l."offset", l.ts, l.key,
		   coalesce(l.value_bin, convert_to(l.value::text, 'UTF8')), l.headers
	  FROM estream._latest_rows(_latest_binary_impl.topic) l;
END
$$;
COMMENT ON FUNCTION estream._latest_binary_impl(text) IS 'Body of latest_binary(): needs read on the topic.';

CREATE OR REPLACE FUNCTION estream.latest_binary(topic text)
RETURNS TABLE (partition integer, "offset" bigint, "timestamp" timestamptz,
			   key bytea, value bytea, headers jsonb)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.latest_binary(text) IS
	'Like latest(), with keys and values as bytes (JSON values as their text); needs read.';

-- the statistics of the partitions view: describe on the topic
CREATE FUNCTION estream._partition_stats_impl(p_topic_id integer)
RETURNS TABLE (partition integer, records bigint, bytes bigint,
			   oldest_timestamp timestamptz, newest_timestamp timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	t estream.topic;
BEGIN
	SELECT * INTO t FROM estream.topic x WHERE x.topic_id = p_topic_id;
	IF NOT FOUND OR NOT estream._allowed('describe', 'topic', t.name, t.owner) THEN
		RETURN;
	END IF;
	RETURN QUERY EXECUTE format(
		'SELECT l.partition, count(*), sum(pg_column_size(l.*))::bigint, min(l.ts), max(l.ts)'
		' FROM estream.log_%s l GROUP BY l.partition', p_topic_id);
END
$$;
COMMENT ON FUNCTION estream._partition_stats_impl(integer) IS
	'Body of _partition_stats(): nothing for a topic the caller may not describe.';

CREATE OR REPLACE FUNCTION estream._partition_stats(p_topic_id integer)
RETURNS TABLE (partition integer, records bigint, bytes bigint,
			   oldest_timestamp timestamptz, newest_timestamp timestamptz)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream._partition_stats(integer) IS
	'Record count, size and timestamp range per partition of a topic the caller may describe (scans the log).';

-- new segments: the owner of the log, no other privilege
CREATE OR REPLACE FUNCTION estream._add_segment(p_topic_id integer, p_segment integer)
RETURNS regclass
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	rel text := format('estream.log_%s_%s', p_topic_id, p_segment);
	v_owner name;
BEGIN
	-- CREATE TABLE ... PARTITION OF would lock the whole log exclusively;
	-- ATTACH PARTITION takes a lock that producers and readers do not mind.
	EXECUTE format('CREATE TABLE %s (LIKE estream.log_%s)', rel, p_topic_id);
	EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (partition, "offset")', rel);
	SELECT r.rolname INTO v_owner FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
	 WHERE c.oid = format('estream.log_%s', p_topic_id)::regclass;
	EXECUTE format('ALTER TABLE %s OWNER TO %I', rel, v_owner);
	EXECUTE format('ALTER TABLE estream.log_%s ATTACH PARTITION %s FOR VALUES FROM (%s) TO (%s)',
				   p_topic_id, rel, p_segment, p_segment + 1);
	INSERT INTO estream.segment (topic_id, segment, relid) VALUES (p_topic_id, p_segment, rel::regclass);
	RETURN rel::regclass;
END
$$;
COMMENT ON FUNCTION estream._add_segment(integer, integer) IS
	'Creates a segment owned by the log''s owner, with no other privilege, and attaches it to the topic''s log without blocking producers or readers.';

-- The worker's step: a dropped role's rights go, and its topics pass to
-- the extension's owner (estream's rows are not tracked by pg_shdepend, so
-- DROP ROLE does not see them).
CREATE FUNCTION estream._forget_dropped_roles()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	v_rights bigint;
	v_topics bigint;
BEGIN
	DELETE FROM estream.acl a
	 WHERE a.role::oid <> 0 AND NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = a.role::oid);
	GET DIAGNOSTICS v_rights = ROW_COUNT;
	UPDATE estream.topic t
	   SET owner = (SELECT e.extowner FROM pg_extension e WHERE e.extname = 'estream')
	 WHERE NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = t.owner::oid);
	GET DIAGNOSTICS v_topics = ROW_COUNT;
	RETURN v_rights + v_topics;
END
$$;
COMMENT ON FUNCTION estream._forget_dropped_roles() IS
	'Worker: deletes the rights of dropped roles and gives their topics to the extension''s owner; returns how many rows changed.';

--
-- Rights administration
--

-- The role of a right: "public" for PUBLIC (0), else a role name.
CREATE FUNCTION estream._acl_role(p_role text)
RETURNS regrole
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
BEGIN
	IF p_role IS NULL THEN
		RAISE EXCEPTION 'role must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF lower(p_role) = 'public' THEN
		RETURN 0::oid::regrole;
	END IF;
	RETURN p_role::regrole;
END
$$;
COMMENT ON FUNCTION estream._acl_role(text) IS
	'The role a right is granted to: 0 for "public", else the role (an error if it does not exist).';

-- Checks the arguments of grant_acl()/revoke_acl() and that the caller may
-- manage the right: the alter right on the cluster, or ownership of the
-- topic for a literal right on one topic.  Returns the normalized
-- operations and the resource name to store.
CREATE FUNCTION estream._acl_args(p_operation text, p_resource_type text, p_resource_name text,
								  p_pattern_type text, OUT r_ops text[], OUT r_name text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	t estream.topic;
BEGIN
	IF p_resource_type IS NULL OR p_resource_type NOT IN ('topic', 'group', 'cluster') THEN
		RAISE EXCEPTION 'invalid resource type "%"', coalesce(p_resource_type, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Rights are granted on a "topic", a consumer "group" or the "cluster".';
	END IF;
	IF p_pattern_type IS NULL OR p_pattern_type NOT IN ('literal', 'prefixed') THEN
		RAISE EXCEPTION 'invalid pattern type "%"', coalesce(p_pattern_type, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A right names one resource ("literal"; "*" for every one) or every resource whose name starts with a prefix ("prefixed").';
	END IF;
	IF p_operation IS NULL THEN
		RAISE EXCEPTION 'operation must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT array_agg(DISTINCT estream._check_operation(o, p_resource_type))
	  INTO r_ops FROM unnest(string_to_array(p_operation, ',')) o;
	IF p_resource_type = 'cluster' THEN
		IF p_resource_name IS NOT NULL OR p_pattern_type <> 'literal' THEN
			RAISE EXCEPTION 'the cluster has no name'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Leave resource_name out (null) for a right on the cluster.';
		END IF;
		r_name := '';
	ELSE
		IF p_resource_name IS NULL OR p_resource_name = '' THEN
			RAISE EXCEPTION 'a right on a % needs a resource name', p_resource_type
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Give a name, "*" for every one, or a prefix with pattern_type => ''prefixed''.';
		END IF;
		IF p_resource_type = 'topic' AND p_pattern_type = 'literal' AND p_resource_name <> '*' THEN
			PERFORM estream._check_topic_name(p_resource_name);
		END IF;
		r_name := p_resource_name;
	END IF;

	IF NOT estream._allowed('alter', 'cluster', NULL, NULL) THEN
		IF p_resource_type = 'topic' AND p_pattern_type = 'literal' THEN
			SELECT * INTO t FROM estream.topic x WHERE x.name = p_resource_name;
		END IF;
		IF t.topic_id IS NULL OR NOT pg_has_role(estream._caller(), t.owner, 'USAGE') THEN
			RAISE EXCEPTION 'permission denied to manage estream rights'
				USING ERRCODE = 'insufficient_privilege',
					  DETAIL = format('Role "%s" has no alter right on the cluster%s.', estream._caller(),
									  CASE WHEN p_resource_type = 'topic' AND p_pattern_type = 'literal'
										   THEN format(' and does not own topic "%s"', p_resource_name) ELSE '' END),
					  HINT = 'Rights are managed by roles with the alter right on the cluster (estream_admin); a topic''s owner manages the rights on that topic.';
		END IF;
	END IF;
END
$$;
COMMENT ON FUNCTION estream._acl_args(text, text, text, text) IS
	'Checks the arguments of grant_acl() and revoke_acl() and the caller''s right to manage them.';

CREATE FUNCTION estream._grant_acl_impl(role text, operation text, resource_type text,
										resource_name text, pattern_type text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	a record;
	v_role regrole;
BEGIN
	v_role := estream._acl_role(role);
	a := estream._acl_args(operation, resource_type, resource_name, pattern_type);
	INSERT INTO estream.acl AS x (role, resource_type, pattern_type, resource_name, operation, granted_by)
	SELECT v_role, resource_type, pattern_type, a.r_name, o, estream._caller()
	  FROM unnest(a.r_ops) o
	ON CONFLICT DO NOTHING;
END
$$;
COMMENT ON FUNCTION estream._grant_acl_impl(text, text, text, text, text) IS
	'Body of grant_acl(): needs alter on the cluster, or ownership of the topic for a literal right on it.';

CREATE FUNCTION estream.grant_acl(role text, operation text, resource_type text,
								  resource_name text DEFAULT NULL, pattern_type text DEFAULT 'literal')
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.grant_acl(text, text, text, text, text) IS
	'Grants operations (comma-separated: read, write, describe, describe_configs, alter_configs, alter, create, delete, all) on a topic, a group (a name, * for all, or a prefix with pattern_type => prefixed) or the cluster to a role or public.';

CREATE FUNCTION estream._revoke_acl_impl(role text, operation text, resource_type text,
										 resource_name text, pattern_type text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	a record;
	v_role regrole;
	n bigint;
BEGIN
	v_role := estream._acl_role(role);
	a := estream._acl_args(operation, resource_type, resource_name, pattern_type);
	DELETE FROM estream.acl x
	 WHERE x.role::oid = v_role::oid AND x.resource_type = _revoke_acl_impl.resource_type
	   AND x.pattern_type = _revoke_acl_impl.pattern_type AND x.resource_name = a.r_name
	   AND (x.operation = ANY (a.r_ops) OR 'all' = ANY (a.r_ops));
	GET DIAGNOSTICS n = ROW_COUNT;
	IF n = 0 THEN
		RAISE NOTICE 'role "%" has no such right, nothing revoked', role;
	ELSIF EXISTS (SELECT 1 FROM estream.acl x
				   WHERE x.role::oid = v_role::oid AND x.resource_type = _revoke_acl_impl.resource_type
					 AND x.pattern_type = _revoke_acl_impl.pattern_type AND x.resource_name = a.r_name
					 AND x.operation = 'all') THEN
		RAISE NOTICE 'role "%" keeps the "all" right on this resource', role
			USING HINT = 'Revoke "all" and grant the operations it should keep.';
	END IF;
END
$$;
COMMENT ON FUNCTION estream._revoke_acl_impl(text, text, text, text, text) IS
	'Body of revoke_acl(): needs alter on the cluster, or ownership of the topic for a literal right on it.';

CREATE FUNCTION estream.revoke_acl(role text, operation text, resource_type text,
								   resource_name text DEFAULT NULL, pattern_type text DEFAULT 'literal')
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.revoke_acl(text, text, text, text, text) IS
	'Revokes operations on a resource from a role or public, exactly as granted ("all" revokes every operation of the resource pattern).';

CREATE FUNCTION estream._alter_topic_owner_impl(topic text, new_owner regrole)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	t estream.topic;
BEGIN
	IF new_owner IS NULL THEN
		RAISE EXCEPTION 'new_owner must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	t := estream._authorize_topic(topic, 'describe');
	-- as ALTER TABLE OWNER: the owner (or the cluster admin) gives the
	-- topic to a role it is a member of
	IF NOT estream._allowed('alter', 'cluster', NULL, NULL)
	   AND NOT (pg_has_role(estream._caller(), t.owner, 'USAGE')
				AND pg_has_role(estream._caller(), new_owner, 'MEMBER')) THEN
		RAISE EXCEPTION 'must be owner of topic "%" and a member of role "%"', topic, new_owner
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'A role with the alter right on the cluster can give any topic to any role.';
	END IF;
	UPDATE estream.topic x SET owner = new_owner WHERE x.topic_id = t.topic_id;
END
$$;
COMMENT ON FUNCTION estream._alter_topic_owner_impl(text, regrole) IS
	'Body of alter_topic_owner(): needs ownership of the topic and membership in the new owner, or alter on the cluster.';

CREATE FUNCTION estream.alter_topic_owner(topic text, new_owner regrole)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.alter_topic_owner(text, regrole) IS
	'Gives a topic to another role (the owner has every right on its topic).';

--
-- Views: as their owner they read estream's tables; they show only the
-- topics and groups the caller may describe (security barriers, so that a
-- caller's own functions in a WHERE clause never see the other rows).
--

CREATE FUNCTION estream._capture_origin_lsn()
RETURNS pg_lsn
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_capture_origin_lsn';
COMMENT ON FUNCTION estream._capture_origin_lsn() IS
	'Progress of this database''s capture origin (the source position of the last change written), for roles that may describe the cluster.';

CREATE OR REPLACE VIEW estream.topics WITH (security_barrier) AS
SELECT t.name AS topic,
	   t.topic_id,
	   t.partitions,
	   CASE WHEN estream._allowed('describe_configs', 'topic', t.name, t.owner) THEN t.config END AS config,
	   CASE WHEN estream._allowed('describe_configs', 'topic', t.name, t.owner)
			THEN estream.effective_config(t.config) END AS effective_config,
	   (SELECT count(*) FROM estream.segment s WHERE s.topic_id = t.topic_id) AS segments,
	   (SELECT coalesce(sum(pg_catalog.pg_total_relation_size(s.relid)), 0)::bigint
		  FROM estream.segment s WHERE s.topic_id = t.topic_id) AS size_bytes,
	   t.created_at,
	   t.owner
FROM estream.topic t
WHERE estream._allowed('describe', 'topic', t.name, t.owner);
COMMENT ON VIEW estream.topics IS
	'Topics the caller may describe, with partition count, owner, explicit and effective configuration (with describe_configs), segment count and size on disk.';

CREATE OR REPLACE VIEW estream.partitions WITH (security_barrier) AS
SELECT t.name AS topic,
	   w.partition,
	   w.log_start_offset,
	   w.stable_offset,
	   w.next_offset,
	   coalesce(s.records, 0) AS records,
	   coalesce(s.bytes, 0) AS bytes,
	   s.oldest_timestamp,
	   s.newest_timestamp,
	   p.stable_offset AS persisted_stable_offset,
	   p.persisted_at
FROM estream.topic t
	 CROSS JOIN LATERAL (SELECT x.* FROM estream.watermarks(t.name) x
						  WHERE estream._allowed('describe', 'topic', t.name, t.owner)) w
	 LEFT JOIN estream.partition p
		ON p.topic_id OPERATOR(pg_catalog.=) t.topic_id
	   AND p.partition OPERATOR(pg_catalog.=) w.partition
	 LEFT JOIN LATERAL estream._partition_stats(t.topic_id) s ON s.partition = w.partition
WHERE estream._allowed('describe', 'topic', t.name, t.owner);
COMMENT ON VIEW estream.partitions IS
	'Partitions of the topics the caller may describe, with log start, stable and next offsets, committed record count, size, timestamp range and the persisted stable offset (scans every log).';

CREATE OR REPLACE VIEW estream.segments WITH (security_barrier) AS
SELECT t.name AS topic,
	   s.segment,
	   s.relid,
	   CASE WHEN s.truncated_at IS NOT NULL THEN 'deleted'
			WHEN s.segment = t.current_segment THEN 'active'
			WHEN s.sealed_at IS NOT NULL THEN 'sealed'
			ELSE 'closing' END AS state,
	   s.created_at,
	   s.closed_at,
	   s.sealed_at,
	   s.truncated_at AS deleted_at,
	   pg_catalog.pg_total_relation_size(s.relid) AS size_bytes
FROM estream.segment s
	 JOIN estream.topic t ON t.topic_id OPERATOR(pg_catalog.=) s.topic_id
WHERE estream._allowed('describe', 'topic', t.name, t.owner);
COMMENT ON VIEW estream.segments IS
	'Segments of the topics the caller may describe, with their state (active, closing, sealed, deleted), times and size on disk.';

CREATE OR REPLACE VIEW estream.groups WITH (security_barrier) AS
SELECT g.name AS "group",
	   g.auto_offset_reset,
	   g.generation,
	   (SELECT count(*) FROM estream.group_member m
		WHERE m.group_id = g.group_id
		  AND m.last_heartbeat + m.session_timeout_ms * interval '1 millisecond'
			  >= pg_catalog.clock_timestamp()) AS live_members,
	   (SELECT array_agg(DISTINCT t.name ORDER BY t.name) FROM estream.group_offset o
		JOIN estream.topic t USING (topic_id)
		WHERE o.group_id = g.group_id AND estream._allowed('describe', 'topic', t.name, t.owner)) AS topics,
	   g.created_at
FROM estream."group" g
WHERE estream._allowed('describe', 'group', g.name, NULL);
COMMENT ON VIEW estream.groups IS
	'Consumer groups the caller may describe, with their generation, live session members and topics (those it may describe).';

CREATE OR REPLACE VIEW estream.group_members WITH (security_barrier) AS
SELECT g.name AS "group",
	   m.member_id,
	   ARRAY(SELECT t.name FROM estream.topic t
			  WHERE t.topic_id = ANY (m.topics) AND estream._allowed('describe', 'topic', t.name, t.owner)
			  ORDER BY t.name) AS topics,
	   m.session_timeout_ms,
	   m.joined_at,
	   m.last_heartbeat,
	   m.last_heartbeat + m.session_timeout_ms * interval '1 millisecond'
		 >= pg_catalog.clock_timestamp() AS alive,
	   (SELECT array_agg(t.name || ':' || o.partition ORDER BY t.name, o.partition)
		FROM estream.group_offset o JOIN estream.topic t USING (topic_id)
		WHERE o.group_id = g.group_id AND o.member_id = m.member_id
		  AND estream._allowed('describe', 'topic', t.name, t.owner)) AS assignment
FROM estream.group_member m
JOIN estream."group" g USING (group_id)
WHERE estream._allowed('describe', 'group', g.name, NULL);
COMMENT ON VIEW estream.group_members IS
	'Session members of the groups the caller may describe, with their subscriptions, heartbeat, liveness and assigned partitions.';

CREATE OR REPLACE VIEW estream.consumer_lag WITH (security_barrier) AS
SELECT g.name AS "group",
	   t.name AS topic,
	   o.partition,
	   o.committed_offset,
	   w.stable_offset,
	   greatest(w.stable_offset - greatest(o.committed_offset, w.log_start_offset), 0) AS lag,
	   pg_catalog.clock_timestamp()
		 - estream._timestamp_at(t.name, o.partition, least(o.committed_offset, w.stable_offset))
		 AS oldest_unconsumed_age,
	   o.member_id,
	   o.committed_at
FROM estream.group_offset o
JOIN estream."group" g USING (group_id)
JOIN estream.topic t USING (topic_id)
CROSS JOIN LATERAL (SELECT x.* FROM estream.watermarks(t.name) x
					 WHERE estream._allowed('describe', 'topic', t.name, t.owner)) w
WHERE w.partition = o.partition
  AND estream._allowed('describe', 'group', g.name, NULL)
  AND estream._allowed('describe', 'topic', t.name, t.owner);
COMMENT ON VIEW estream.consumer_lag IS
	'Per group and partition the caller may describe: committed offset, stable offset, lag in offsets and age of the oldest unconsumed record.';

CREATE OR REPLACE VIEW estream.captures WITH (security_barrier) AS
SELECT c.relid::regclass AS source,
	   c.topic,
	   CASE WHEN c.snapshot IS NOT NULL THEN 'streaming'
			WHEN c.initial_snapshot THEN 'waiting for its initial copy'
			ELSE 'waiting for the worker' END AS state,
	   c.columns,
	   c.with_before AS before_image,
	   c.initial_snapshot,
	   c.snapshot_rows,
	   c.created_at,
	   c.activated_at,
	   s.slot_name,
	   s.confirmed_flush_lsn,
	   estream._capture_origin_lsn() AS origin_lsn,
	   CASE WHEN s.confirmed_flush_lsn IS NULL THEN NULL
			ELSE pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint
	   END AS lag_bytes,
	   -- every change committed before now() - lag_seconds is in its topic
	   CASE WHEN c.snapshot IS NULL THEN NULL
			ELSE round(greatest(0, extract(epoch FROM pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) st.caught_up_at)), 3)
	   END AS lag_seconds,
	   st.last_commit AS last_source_commit,
	   st.events AS events_captured,
	   st.last_error
FROM estream.capture c
	 JOIN estream.topic t ON t.topic_id OPERATOR(pg_catalog.=) c.topic_id
	 LEFT JOIN pg_catalog.pg_replication_slots s
		ON s.slot_name OPERATOR(pg_catalog.=) ('estream_' OPERATOR(pg_catalog.||)
			(SELECT d.oid FROM pg_catalog.pg_database d
			  WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())::text)
	 LEFT JOIN estream._capture_status() st ON true
WHERE estream._allowed('describe', 'topic', t.name, t.owner);
COMMENT ON VIEW estream.captures IS
	'Captured tables whose topic the caller may describe, with their state, the slot''s confirmed position, lag in bytes and seconds, and (with describe on the cluster) the origin''s progress and the worker''s capture progress.';

-- The rights a caller may see, from a function: the view has a UNION, and
-- PostgreSQL flattens a UNION ALL view into branches that lose the
-- security barrier, so a caller's function could see hidden rows.
CREATE FUNCTION estream._acls_impl()
RETURNS TABLE (role text, resource_type text, pattern_type text, resource_name text, operation text,
			   predefined boolean, granted_by regrole, granted_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	v_all boolean := estream._allowed('describe', 'cluster', NULL, NULL);
BEGIN
	RETURN QUERY
	SELECT CASE WHEN a.role::oid = 0 THEN 'public' ELSE a.role::text END,
		   a.resource_type, a.pattern_type, NULLIF(a.resource_name, ''), a.operation, false,
		   a.granted_by, a.granted_at
	  FROM estream.acl a
	 WHERE v_all OR a.role::oid = 0 OR pg_has_role(estream._caller(), a.role::oid, 'USAGE')
	UNION ALL
	SELECT p.r, p.rt, 'literal', p.rn, p.op, true, NULL::regrole, NULL::timestamptz
	  FROM (VALUES ('estream_admin', 'cluster', NULL, 'all'),
				   ('estream_admin', 'topic', '*', 'all'),
				   ('estream_admin', 'group', '*', 'all'),
				   ('estream_producer', 'topic', '*', 'write'),
				   ('estream_consumer', 'topic', '*', 'read'),
				   ('estream_consumer', 'group', '*', 'read'),
				   ('estream_monitor', 'cluster', NULL, 'describe'),
				   ('estream_monitor', 'topic', '*', 'describe'),
				   ('estream_monitor', 'topic', '*', 'describe_configs'),
				   ('estream_monitor', 'group', '*', 'describe'))
		   AS p(r, rt, rn, op);
END
$$;
COMMENT ON FUNCTION estream._acls_impl() IS
	'Body of _acls(): every right to roles that may describe the cluster, else those of public and of the caller''s roles, and the predefined roles'' rights.';

CREATE FUNCTION estream._acls()
RETURNS TABLE (role text, resource_type text, pattern_type text, resource_name text, operation text,
			   predefined boolean, granted_by regrole, granted_at timestamptz)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream._acls() IS
	'The rights the caller may see (source of estream.acls).';

CREATE VIEW estream.acls AS
SELECT * FROM estream._acls();
COMMENT ON VIEW estream.acls IS
	'Rights granted with grant_acl() (all of them to roles that may describe the cluster; else those of public and of the caller''s roles), and the fixed rights of the predefined roles.';

--
-- Robustness (issue 12): one topic never stops maintenance of the others.
-- Each step handles each topic (or segment) in its own subtransaction; an
-- error is recorded against the topic in estream.maintenance_error (shown
-- by estream.maintenance_errors) and the step goes on.  Times in
-- milliseconds are compared through _ms_ago(), which the largest values
-- (Kafka's Long.MAX_VALUE, meaning "never") cannot overflow; sizes are
-- multiplied in numeric.
--

CREATE FUNCTION estream._ms_ago(p_now timestamptz, p_ms bigint)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	-- beyond about 317 years: never (no interval arithmetic to overflow)
	SELECT CASE WHEN p_ms > 10000000000000 THEN '-infinity'::timestamptz
				ELSE p_now - p_ms * interval '1 millisecond' END
$$;
COMMENT ON FUNCTION estream._ms_ago(timestamptz, bigint) IS
	'The time p_ms milliseconds before p_now; -infinity beyond about 317 years (never).';

CREATE TABLE estream.maintenance_error (
	topic_id integer NOT NULL REFERENCES estream.topic ON DELETE CASCADE,
	step text NOT NULL,
	sqlstate text NOT NULL,
	message text NOT NULL,
	since timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	last_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	occurrences bigint NOT NULL DEFAULT 1,
	PRIMARY KEY (topic_id, step)
);
COMMENT ON TABLE estream.maintenance_error IS
	'Per topic and maintenance step: the error the step last met on the topic, since when, and how many runs in a row (the row goes when the step succeeds on the topic).';

CREATE FUNCTION estream._step_failed(p_topic_id integer, p_step text, p_sqlstate text, p_message text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
BEGIN
	INSERT INTO estream.maintenance_error AS e (topic_id, step, sqlstate, message)
	VALUES (p_topic_id, p_step, p_sqlstate, p_message)
	ON CONFLICT (topic_id, step) DO UPDATE
		SET sqlstate = excluded.sqlstate, message = excluded.message,
			last_at = clock_timestamp(), occurrences = e.occurrences + 1;
	RAISE LOG 'estream: step "%" failed for topic id %: % (SQLSTATE %)', p_step, p_topic_id, p_message, p_sqlstate;
END
$$;
COMMENT ON FUNCTION estream._step_failed(integer, text, text, text) IS
	'Records (and logs) that a maintenance step failed on a topic; the step goes on with the other topics.';

CREATE FUNCTION estream._step_succeeded(p_topic_id integer, p_step text, p_failing integer[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
BEGIN
	-- p_failing: the topics that had an error when the step started
	IF p_topic_id = ANY (p_failing) THEN
		DELETE FROM estream.maintenance_error e WHERE e.topic_id = p_topic_id AND e.step = p_step;
	END IF;
END
$$;
COMMENT ON FUNCTION estream._step_succeeded(integer, text, integer[]) IS
	'Forgets the error a maintenance step recorded on a topic (called first in the topic''s block: undone if the step fails again).';

CREATE OR REPLACE FUNCTION estream._roll_segments(p_topic_id integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET default_tablespace = ''
SET default_table_access_method = heap
AS $$
#variable_conflict error
DECLARE
	r record;
	cfg jsonb;
	v_nonempty boolean;
	v_n bigint := 0;
	v_failing integer[] := ARRAY(SELECT e.topic_id FROM estream.maintenance_error e WHERE e.step = 'roll segments');
BEGIN
	FOR r IN SELECT t.topic_id, t.partitions, t.current_segment, t.config, s.created_at,
					format('estream.log_%s_%s', t.topic_id, t.current_segment) AS rel
			   FROM estream.topic t
			   JOIN estream.segment s ON s.topic_id = t.topic_id AND s.segment = t.current_segment
			  WHERE p_topic_id IS NULL OR t.topic_id = p_topic_id
			  ORDER BY t.topic_id
	LOOP
		BEGIN
			-- undone with the block if the step fails on the topic again
			PERFORM estream._step_succeeded(r.topic_id, 'roll segments', v_failing);
			cfg := estream.effective_config(r.config);
			CONTINUE WHEN to_regclass(r.rel) IS NULL;	-- topic being dropped
			-- like Kafka, an empty segment is never rolled
			EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', r.rel) INTO v_nonempty;
			CONTINUE WHEN NOT v_nonempty;
			CONTINUE WHEN NOT (
				r.created_at <= estream._ms_ago(clock_timestamp(), (cfg->>'segment.ms')::bigint)
				OR pg_total_relation_size(r.rel::regclass) >= (cfg->>'segment.bytes')::numeric * r.partitions);
			-- skip a topic that is being altered or dropped
			PERFORM 1 FROM estream.topic t
			  WHERE t.topic_id = r.topic_id AND t.current_segment = r.current_segment
			  FOR NO KEY UPDATE SKIP LOCKED;
			CONTINUE WHEN NOT FOUND;

			-- Hold the old segment until this transaction's invalidations are
			-- out (they are sent after it becomes visible, before its locks
			-- go): sealing it needs a lock that waits for this one.
			EXECUTE format('LOCK TABLE %s IN ROW EXCLUSIVE MODE', r.rel);
			PERFORM estream._add_segment(r.topic_id, r.current_segment + 1);
			UPDATE estream.segment s SET closed_at = clock_timestamp()
			 WHERE s.topic_id = r.topic_id AND s.segment = r.current_segment;
			-- the topic trigger makes producers move to the new segment
			UPDATE estream.topic t SET current_segment = r.current_segment + 1
			 WHERE t.topic_id = r.topic_id;
			v_n := v_n + 1;
		EXCEPTION WHEN OTHERS THEN
			PERFORM estream._step_failed(r.topic_id, 'roll segments', SQLSTATE, SQLERRM);
		END;
	END LOOP;
	RETURN v_n;
END
$$;

CREATE OR REPLACE FUNCTION estream._seal_segments(p_topic_id integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	r record;
	v_n bigint := 0;
	v_failing integer[] := ARRAY(SELECT e.topic_id FROM estream.maintenance_error e WHERE e.step = 'seal segments');
BEGIN
	-- A closed segment is sealed once no transaction holds it: producers
	-- that lock it from then on see the new segment and go there.  Not in
	-- the transaction that closed it (its change is not visible yet).
	FOR r IN SELECT s.topic_id, s.segment FROM estream.segment s
			  WHERE s.closed_at IS NOT NULL AND s.sealed_at IS NULL AND s.closed_at < now()
				AND (p_topic_id IS NULL OR s.topic_id = p_topic_id)
			  ORDER BY s.topic_id, s.segment
	LOOP
		BEGIN
			-- undone with the block if the step fails on the topic again
			PERFORM estream._step_succeeded(r.topic_id, 'seal segments', v_failing);
			-- a topic being dropped
			CONTINUE WHEN to_regclass(format('estream.log_%s_%s', r.topic_id, r.segment)) IS NULL;
			BEGIN
				EXECUTE format('LOCK TABLE estream.log_%s_%s IN SHARE MODE NOWAIT', r.topic_id, r.segment);
			EXCEPTION WHEN lock_not_available THEN
				CONTINUE;
			END;
			UPDATE estream.segment s SET sealed_at = clock_timestamp()
			 WHERE s.topic_id = r.topic_id AND s.segment = r.segment;
			v_n := v_n + 1;
		EXCEPTION WHEN OTHERS THEN
			PERFORM estream._step_failed(r.topic_id, 'seal segments', SQLSTATE, SQLERRM);
		END;
	END LOOP;
	RETURN v_n;
END
$$;

CREATE OR REPLACE FUNCTION estream._drop_empty_segments(p_topic_id integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	r record;
	v_nonempty boolean;
	v_n bigint := 0;
	v_failing integer[] := ARRAY(SELECT e.topic_id FROM estream.maintenance_error e WHERE e.step = 'drop empty segments');
BEGIN
	FOR r IN SELECT s.topic_id, s.segment,
					format('estream.log_%s_%s', s.topic_id, s.segment) AS relid,
					format('estream.log_%s', s.topic_id) AS log_relid
			   FROM estream.segment s
			  WHERE s.truncated_at IS NOT NULL AND (p_topic_id IS NULL OR s.topic_id = p_topic_id)
			  ORDER BY s.topic_id, s.segment
	LOOP
		BEGIN
			-- undone with the block if the step fails on the topic again
			PERFORM estream._step_succeeded(r.topic_id, 'drop empty segments', v_failing);
			CONTINUE WHEN to_regclass(r.relid) IS NULL;	-- topic being dropped
			-- dropping a partition locks its log exclusively: readers queue
			-- behind for at most estream.maintenance_lock_timeout
			CONTINUE WHEN NOT estream._try_lock(format('%s, %s', r.log_relid, r.relid), 'ACCESS EXCLUSIVE');
			EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', r.relid) INTO v_nonempty;
			IF v_nonempty THEN
				-- cannot happen once sealed; let retention look at it again
				UPDATE estream.segment s SET truncated_at = NULL
				 WHERE s.topic_id = r.topic_id AND s.segment = r.segment;
				CONTINUE;
			END IF;
			EXECUTE format('DROP TABLE %s', r.relid);
			DELETE FROM estream.segment s WHERE s.topic_id = r.topic_id AND s.segment = r.segment;
			v_n := v_n + 1;
		EXCEPTION WHEN OTHERS THEN
			PERFORM estream._step_failed(r.topic_id, 'drop empty segments', SQLSTATE, SQLERRM);
		END;
	END LOOP;
	RETURN v_n;
END
$$;

CREATE OR REPLACE FUNCTION estream._apply_retention(p_topic_id integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	t record;
	s record;
	cfg jsonb;
	v_ms bigint;
	v_bytes bigint;
	v_total bigint;
	v_size bigint;
	v_blocked bigint;
	v_parts integer[];
	v_maxes bigint[];
	v_min bigint;
	v_n bigint := 0;
	v_failing integer[] := ARRAY(SELECT e.topic_id FROM estream.maintenance_error e WHERE e.step = 'apply retention');
BEGIN
	PERFORM estream._require_read_committed();
	FOR t IN SELECT tp.topic_id, tp.partitions, tp.config, tp.log_relid, tp.current_segment
			   FROM estream.topic tp
			  WHERE p_topic_id IS NULL OR tp.topic_id = p_topic_id
			  ORDER BY tp.topic_id
	LOOP
		BEGIN
			-- undone with the block if the step fails on the topic again
			PERFORM estream._step_succeeded(t.topic_id, 'apply retention', v_failing);
			cfg := estream.effective_config(t.config);
			CONTINUE WHEN position('delete' IN cfg->>'cleanup.policy') = 0;
			v_ms := (cfg->>'retention.ms')::bigint;
			v_bytes := (cfg->>'retention.bytes')::bigint;
			CONTINUE WHEN v_ms < 0 AND v_bytes < 0;

			SELECT coalesce(sum(pg_total_relation_size(sg.relid)), 0) INTO v_total
			  FROM estream.segment sg WHERE sg.topic_id = t.topic_id AND sg.truncated_at IS NULL;

			-- oldest first, and stop at the first segment that must stay
			FOR s IN SELECT sg.segment, sg.sealed_at,
							format('estream.log_%s_%s', t.topic_id, sg.segment) AS rel
					   FROM estream.segment sg
					  WHERE sg.topic_id = t.topic_id AND sg.truncated_at IS NULL
						AND sg.segment < t.current_segment
					  ORDER BY sg.segment
			LOOP
				-- a segment a transaction may still write to stops retention
				EXIT WHEN s.sealed_at IS NULL;
				EXIT WHEN to_regclass(s.rel) IS NULL;	-- topic being dropped
				v_size := pg_total_relation_size(s.rel::regclass);
				EXIT WHEN NOT ((v_ms >= 0 AND s.sealed_at <= estream._ms_ago(clock_timestamp(), v_ms))
							   OR (v_bytes >= 0 AND v_total - v_size >= v_bytes::numeric * t.partitions));

				-- Every offset up to the segment's highest must have ended: a
				-- transaction still in flight below it would commit a record
				-- under the new log start.  The segment is sealed, so its
				-- highest offsets cannot change; the stable offsets are read
				-- before the statements below, which then see every record
				-- under them.  A partition without a shared slot has no
				-- transaction in flight.
				EXECUTE format('SELECT array_agg(x.partition ORDER BY x.partition), array_agg(x.m ORDER BY x.partition)'
							   ' FROM (SELECT l.partition, max(l."offset") AS m FROM %s l GROUP BY l.partition) x',
							   s.rel)
					INTO v_parts, v_maxes;
				SELECT count(*) INTO v_blocked
				  FROM unnest(v_parts, v_maxes) u(p, m)
				  JOIN estream._shared_partitions() w ON w.log_relid = t.log_relid::oid AND w.partition = u.p
				 WHERE w.stable <= u.m;
				EXIT WHEN v_blocked > 0;

				-- a reader holds it: come back later
				EXIT WHEN NOT estream._try_lock(s.rel, 'ACCESS EXCLUSIVE');
				EXIT WHEN NOT estream._truncate_segment(s.rel::regclass);

				-- The new log start: past the deleted records, but not past a
				-- record of a later segment (a producer whose transaction began
				-- before the roll may have written a lower offset there).
				FOR i IN 1 .. coalesce(array_length(v_parts, 1), 0) LOOP
					EXECUTE format('SELECT min(l."offset") FROM estream.log_%s l WHERE l.partition = $1',
								   t.topic_id)
						INTO v_min USING v_parts[i];
					-- (1.4) The records are gone, and the log start may stay
					-- below them (a lower offset in a later segment): the
					-- persisted stable offset keeps 1 + the highest of them,
					-- so that a partition whose slot is initialized again
					-- from what is stored (after an eviction or a restart)
					-- never starts below an offset a reader has passed.
					-- Every offset up to it has ended (checked above).
					UPDATE estream.partition p
					   SET log_start_offset = greatest(p.log_start_offset,
													   least(coalesce(v_min, v_maxes[i] + 1), v_maxes[i] + 1)),
						   stable_offset = greatest(p.stable_offset, v_maxes[i] + 1)
					 WHERE p.topic_id = t.topic_id AND p.partition = v_parts[i];
				END LOOP;

				UPDATE estream.segment sg SET truncated_at = clock_timestamp()
				 WHERE sg.topic_id = t.topic_id AND sg.segment = s.segment;
				v_total := v_total - v_size;
				v_n := v_n + 1;
			END LOOP;
		EXCEPTION WHEN OTHERS THEN
			PERFORM estream._step_failed(t.topic_id, 'apply retention', SQLSTATE, SQLERRM);
		END;
	END LOOP;
	RETURN v_n;
END
$$;
COMMENT ON FUNCTION estream._apply_retention(integer) IS
	'Retention: empties (TRUNCATE) the oldest sealed segments past retention.ms or beyond retention.bytes per partition, moves the log start and keeps the persisted stable offset above what it deleted; one topic''s error does not stop the others; returns how many.';

CREATE OR REPLACE FUNCTION estream._compact(p_topic_id integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	t record;
	g record;
	cfg jsonb;
	v_segs integer[];
	v_stable jsonb;
	v_groups jsonb;
	v_total bigint;
	v_old bigint;
	v_tombs bigint;
	v_overdue bigint;
	v_removed bigint;
	v_topic_removed bigint;
	v_empty boolean;
	v_n bigint := 0;
	v_failing integer[] := ARRAY(SELECT e.topic_id FROM estream.maintenance_error e WHERE e.step = 'compact');
BEGIN
	PERFORM estream._require_read_committed();
	FOR t IN SELECT tp.topic_id, tp.name, tp.config, tp.log_relid, tp.current_segment, c.checked_at
			   FROM estream.topic tp
			   LEFT JOIN estream.compaction c ON c.topic_id = tp.topic_id
			  WHERE p_topic_id IS NULL OR tp.topic_id = p_topic_id
			  ORDER BY tp.topic_id
	LOOP
		BEGIN
			-- undone with the block if the step fails on the topic again
			PERFORM estream._step_succeeded(t.topic_id, 'compact', v_failing);
			cfg := estream.effective_config(t.config);
			CONTINUE WHEN position('compact' IN cfg->>'cleanup.policy') = 0;

			-- The check reads the whole log: the worker does it at most once a
			-- second, or once per segment.ms if that is longer (up to a minute).
			-- run_maintenance(topic) always checks.
			CONTINUE WHEN p_topic_id IS NULL AND t.checked_at IS NOT NULL
				AND t.checked_at > clock_timestamp()
					- greatest(1000, least((cfg->>'segment.ms')::bigint, 60000)) * interval '1 millisecond';

			-- the active segment is never cleaned, as in Kafka
			SELECT array_agg(s.segment) INTO v_segs FROM estream.segment s
			 WHERE s.topic_id = t.topic_id AND s.sealed_at IS NOT NULL
			   AND s.truncated_at IS NULL AND s.segment < t.current_segment;
			INSERT INTO estream.compaction AS c (topic_id, checked_at) VALUES (t.topic_id, clock_timestamp())
				ON CONFLICT (topic_id) DO UPDATE SET checked_at = excluded.checked_at;
			CONTINUE WHEN v_segs IS NULL;

			-- stable offsets first: records below them are all visible to the
			-- statements that follow (1.4: of every partition, from shared
			-- memory or, for a partition without a slot, from storage)
			SELECT coalesce(jsonb_object_agg(w.partition::text, w.stable), '{}') INTO v_stable
			  FROM estream._stable_offsets(t.name) w;

			-- A record goes when a newer record of its key exists and it is
			-- older than min.compaction.lag.ms.  A tombstone (null value) goes
			-- when it is the newest record of its key, older than
			-- delete.retention.ms, below the stable offset (no older record of
			-- the key can still commit), and every other record of its key goes
			-- too: the latest value per key never changes.
			EXECUTE format($q$
				WITH r AS (
					SELECT l.segment, l.partition, l."offset", l.ts, l.key,
						   (l.value IS NULL AND l.value_bin IS NULL) AS tomb,
						   l."offset" = max(l."offset") OVER k AS newest,
						   l.segment = ANY ($1) AS eligible
					  FROM estream.log_%s l
					 WHERE l.key IS NOT NULL
					WINDOW k AS (PARTITION BY l.partition, l.key)),
				d AS (
					SELECT r.*, (NOT r.newest AND r.eligible AND r.ts <= $2) AS old,
						   bool_and(r.newest OR (r.eligible AND r.ts <= $2))
							 OVER (PARTITION BY r.partition, r.key) AS others_go
					  FROM r),
				x AS (
					SELECT d.segment, d.partition, d."offset", d.ts, d.old
					  FROM d
					 WHERE d.old
						OR (d.newest AND d.tomb AND d.eligible AND d.others_go AND d.ts <= $3
							AND d."offset" < coalesce(($4 ->> d.partition::text)::bigint, 0))),
				s AS (
					SELECT x.segment, array_agg(x.partition) AS parts, array_agg(x."offset") AS offs,
						   count(*) FILTER (WHERE x.old) AS n_old,
						   count(*) FILTER (WHERE NOT x.old) AS n_tombs,
						   count(*) FILTER (WHERE x.ts <= $5) AS n_overdue
					  FROM x GROUP BY x.segment)
				SELECT jsonb_agg(jsonb_build_object('segment', s.segment, 'parts', s.parts, 'offs', s.offs)
								 ORDER BY s.segment),
					   coalesce(sum(s.n_old), 0), coalesce(sum(s.n_tombs), 0), coalesce(sum(s.n_overdue), 0),
					   (SELECT count(*) FROM estream.log_%s l WHERE l.segment = ANY ($1))
				  FROM s
				$q$, t.topic_id, t.topic_id)
				INTO v_groups, v_old, v_tombs, v_overdue, v_total
				USING v_segs,
					  estream._ms_ago(clock_timestamp(), (cfg->>'min.compaction.lag.ms')::bigint),
					  estream._ms_ago(clock_timestamp(), (cfg->>'delete.retention.ms')::bigint),
					  v_stable,
					  estream._ms_ago(clock_timestamp(), (cfg->>'max.compaction.lag.ms')::bigint);

			-- clean when enough is dirty, a tombstone is due, or a record is
			-- older than max.compaction.lag.ms
			CONTINUE WHEN v_old + v_tombs = 0;
			CONTINUE WHEN NOT (v_tombs > 0 OR v_overdue > 0 OR
							   v_old >= (cfg->>'min.cleanable.dirty.ratio')::float8 * v_total);
			v_topic_removed := 0;
			FOR g IN SELECT (e->>'segment')::integer AS segment,
							ARRAY(SELECT jsonb_array_elements_text(e->'parts')::integer) AS parts,
							ARRAY(SELECT jsonb_array_elements_text(e->'offs')::bigint) AS offs
					   FROM jsonb_array_elements(v_groups) e
			LOOP
				CONTINUE WHEN to_regclass(format('estream.log_%s_%s', t.topic_id, g.segment)) IS NULL;
				CONTINUE WHEN NOT estream._try_lock(format('estream.log_%s_%s', t.topic_id, g.segment),
													'ACCESS EXCLUSIVE');
				v_removed := estream._rewrite_segment(
					format('estream.log_%s_%s', t.topic_id, g.segment)::regclass, g.parts, g.offs);
				IF v_removed > 0 THEN
					v_topic_removed := v_topic_removed + v_removed;
					-- (1.4) A removed tombstone may have been a partition's
					-- highest record: the persisted stable offset keeps the
					-- stable offset it was removed under, so that a slot
					-- initialized again from what is stored never starts
					-- below it.  Every offset below it has ended.
					UPDATE estream.partition p
					   SET stable_offset = greatest(p.stable_offset, (v_stable ->> p.partition::text)::bigint)
					 WHERE p.topic_id = t.topic_id AND p.partition = ANY (g.parts)
					   AND v_stable ? p.partition::text;
					-- nothing left: the empty table goes like a deleted one
					EXECUTE format('SELECT NOT EXISTS (SELECT 1 FROM estream.log_%s_%s)',
								   t.topic_id, g.segment) INTO v_empty;
					IF v_empty THEN
						UPDATE estream.segment sg SET truncated_at = clock_timestamp()
						 WHERE sg.topic_id = t.topic_id AND sg.segment = g.segment;
					END IF;
				END IF;
			END LOOP;
			IF v_topic_removed > 0 THEN
				UPDATE estream.compaction c
				   SET cleaned_at = clock_timestamp(), records_removed = c.records_removed + v_topic_removed
				 WHERE c.topic_id = t.topic_id;
				v_n := v_n + v_topic_removed;
			END IF;
		EXCEPTION WHEN OTHERS THEN
			PERFORM estream._step_failed(t.topic_id, 'compact', SQLSTATE, SQLERRM);
		END;
	END LOOP;
	RETURN v_n;
END
$$;
COMMENT ON FUNCTION estream._compact(integer) IS
	'Compaction: removes records superseded by a newer record of the same key, and expired tombstones, from sealed segments, keeping the persisted stable offset above what it removed; one topic''s error does not stop the others; returns how many.';

CREATE FUNCTION estream._worker_state()
RETURNS text
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_worker_state';
COMMENT ON FUNCTION estream._worker_state() IS
	'The state of this database''s worker (idle, running, disabled, failed, paused, ...; not started when it has none yet, no free worker slot when it cannot get one), for the status of what depends on it.';

-- What keeps this database's worker from running, or NULL while it runs
-- or is about to (starting, paused for a moment, not started yet).
CREATE FUNCTION estream._worker_missing()
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT CASE WHEN s.s IN ('starting', 'running', 'idle', 'paused', 'not started') THEN NULL ELSE s.s END
FROM (SELECT estream._worker_state() AS s) s
$$;
COMMENT ON FUNCTION estream._worker_missing() IS
	'Why this database''s estream worker does not run (disabled, failed, no free worker slot, not preloaded, waiting for an update), or NULL while it runs.';

CREATE VIEW estream.maintenance_errors WITH (security_barrier) AS
SELECT t.name AS topic, e.step, e.sqlstate, e.message, e.since, e.last_at, e.occurrences
FROM estream.maintenance_error e
	 JOIN estream.topic t ON t.topic_id OPERATOR(pg_catalog.=) e.topic_id
WHERE estream._allowed('describe', 'topic', t.name, t.owner)
UNION ALL
-- no worker: no topic of this database is maintained
SELECT NULL, 'worker', '55000',
	   pg_catalog.format('the estream worker of this database does not run (%s): no topic is rolled, retained or compacted and no table is captured', w.why),
	   NULL, NULL, NULL
FROM (SELECT estream._worker_missing() AS why) w
WHERE w.why IS NOT NULL;
COMMENT ON VIEW estream.maintenance_errors IS
	'Topics the caller may describe on which a maintenance step (roll, seal, retention, compaction, drop) fails: the step, the error, since when and how many runs in a row; the other topics are maintained meanwhile.  A row with step "worker" and no topic says that this database''s worker does not run, and why (see estream.workers).';

-- Making a group, or a group's offset rows for a topic, takes a lock on the
-- name first (estream._lock_name(): a lock no role can take from SQL):
-- poll() tries it and, when another transaction is making them, polls what
-- exists instead of queueing behind that transaction.
CREATE OR REPLACE FUNCTION estream._group(p_group text, p_reset text, p_create boolean)
RETURNS estream."group"
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	g estream."group";
BEGIN
	IF p_group IS NULL THEN
		RAISE EXCEPTION 'group must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF p_group = '' OR length(p_group) > 249 OR p_group ~ '[[:cntrl:]]' THEN
		RAISE EXCEPTION 'invalid group name "%"', p_group
			USING ERRCODE = 'invalid_name',
				  DETAIL = 'Group names have 1 to 249 characters and no control characters.';
	END IF;
	PERFORM estream._check_reset(p_reset);
	SELECT * INTO g FROM estream."group" x WHERE x.name = p_group;
	IF NOT FOUND THEN
		IF NOT p_create THEN
			RAISE EXCEPTION 'consumer group "%" does not exist', p_group
				USING ERRCODE = 'undefined_object',
					  HINT = 'Groups are created by estream.create_group(), poll() or join_group().';
		END IF;
		PERFORM estream._lock_name('group', p_group, true);
		INSERT INTO estream."group" (name, auto_offset_reset)
			VALUES (p_group, coalesce(p_reset, 'latest'))
			ON CONFLICT (name) DO NOTHING;
		SELECT * INTO g FROM estream."group" x WHERE x.name = p_group;
	END IF;
	RETURN g;
END
$$;

CREATE OR REPLACE FUNCTION estream._ensure_offsets(g estream."group", t estream.topic, p_reset text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
BEGIN
	IF (SELECT count(*) FROM estream.group_offset o
		WHERE o.group_id = g.group_id AND o.topic_id = t.topic_id) < t.partitions THEN
		PERFORM estream._lock_name('group offsets', g.group_id::text || '.' || t.topic_id::text, true);
		INSERT INTO estream.group_offset (group_id, topic_id, partition, committed_offset)
		SELECT g.group_id, t.topic_id, w.partition,
			   CASE coalesce(p_reset, g.auto_offset_reset)
				   WHEN 'earliest' THEN w.log_start_offset ELSE w.stable_offset END
		FROM estream.watermarks(t.name) w
		ON CONFLICT DO NOTHING;
	END IF;
END
$$;

-- Session members are not dumped: a restored member would count as live
-- until its session timeout, although nobody heartbeats for it (its
-- partitions' offsets are dumped with the group; members join again).
SELECT pg_catalog.pg_extension_config_dump('estream.group_member', 'WHERE false');


--
-- From table privileges to rights.  Before 1.4 a role produced with INSERT
-- on a topic's segments, read with SELECT on its log, used consumer groups
-- with privileges on the group tables and ran maintenance with EXECUTE on
-- run_maintenance().  Each such privilege becomes the right it stood for
-- (docs/security.md lists them); then every privilege on estream's tables,
-- views, logs and segments held by another role than their owner goes,
-- the logs and segments pass to the extension's owner, and triggers and
-- rules that others could have put on them go.
--
DO $$
DECLARE
	v_owner oid := (SELECT e.extowner FROM pg_catalog.pg_extension e
					 WHERE e.extname OPERATOR(pg_catalog.=) 'estream');
	r record;
	col record;
	v_n bigint;
	v_grantee oid;
BEGIN
	-- a topic whose log belongs to another role: that role owns the topic
	UPDATE estream.topic t SET owner = c.relowner::regrole
	  FROM pg_catalog.pg_class c
	 WHERE c.oid = t.log_relid AND c.relowner <> v_owner;

	-- SELECT on a log: read; INSERT on one of its segments: write
	INSERT INTO estream.acl (role, resource_type, pattern_type, resource_name, operation, granted_by)
	SELECT DISTINCT a.grantee::regrole, 'topic', 'literal', t.name,
		   CASE WHEN a.privilege_type = 'SELECT' THEN 'read' ELSE 'write' END, v_owner::regrole
	  FROM estream.topic t
	  JOIN pg_catalog.pg_class c
		ON c.oid = t.log_relid
		OR c.oid IN (SELECT s.relid FROM estream.segment s WHERE s.topic_id = t.topic_id)
	  CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
	 WHERE a.grantee <> c.relowner AND a.grantee <> t.owner::oid
	   AND ((c.oid = t.log_relid AND a.privilege_type = 'SELECT')
			OR (c.oid <> t.log_relid AND a.privilege_type = 'INSERT'))
	ON CONFLICT DO NOTHING;
	GET DIAGNOSTICS v_n = ROW_COUNT;

	-- the group tables: read (poll, commit, join) and delete every group;
	-- the views: describe every topic or group
	INSERT INTO estream.acl (role, resource_type, pattern_type, resource_name, operation, granted_by)
	SELECT DISTINCT a.grantee::regrole, m.resource_type, 'literal', '*', m.operation, v_owner::regrole
	  FROM (VALUES ('estream.group_offset', 'UPDATE', 'group', 'read'),
				   ('estream.group', 'DELETE', 'group', 'delete'),
				   ('estream.groups', 'SELECT', 'group', 'describe'),
				   ('estream.group_members', 'SELECT', 'group', 'describe'),
				   ('estream.consumer_lag', 'SELECT', 'group', 'describe'),
				   ('estream.topics', 'SELECT', 'topic', 'describe'),
				   ('estream.partitions', 'SELECT', 'topic', 'describe'),
				   ('estream.segments', 'SELECT', 'topic', 'describe'))
		   AS m(rel, privilege, resource_type, operation)
	  JOIN pg_catalog.pg_class c ON c.oid = m.rel::regclass
	  CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
	 WHERE a.grantee <> c.relowner AND a.privilege_type = m.privilege
	ON CONFLICT DO NOTHING;

	-- run_maintenance(): the cluster_action right on the cluster
	INSERT INTO estream.acl (role, resource_type, pattern_type, resource_name, operation, granted_by)
	SELECT DISTINCT a.grantee::regrole, 'cluster', 'literal', '', 'cluster_action', v_owner::regrole
	  FROM pg_catalog.pg_proc p
	  CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) a
	 WHERE p.oid = 'estream.run_maintenance(text)'::regprocedure
	   AND a.grantee <> p.proowner AND a.privilege_type = 'EXECUTE'
	ON CONFLICT DO NOTHING;

	SELECT count(*) INTO v_n FROM estream.acl;
	IF v_n > 0 THEN
		RAISE NOTICE 'estream: % table privileges became rights (see estream.acls)', v_n;
	END IF;

	-- every relation of the schema but the logs of topics a dropped
	-- extension left behind (user data, not estream's any more)
	FOR r IN SELECT c.oid::regclass AS rel, c.relkind, c.relowner,
					(c.relname ~ '^log_[0-9]+(_[0-9]+)?$') AS is_log
			   FROM pg_catalog.pg_class c
			  WHERE c.relnamespace = 'estream'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'S')
				AND (c.relname !~ '^log_[0-9]+(_[0-9]+)?$' OR c.oid IN (SELECT t.log_relid FROM estream.topic t UNION SELECT s.relid FROM estream.segment s))
	LOOP
		IF r.is_log AND r.relowner <> v_owner THEN
			EXECUTE format('ALTER TABLE %s OWNER TO %I', r.rel, (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = v_owner));
		END IF;
		FOR v_grantee IN SELECT DISTINCT a.grantee
						   FROM pg_catalog.pg_class c CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
						  WHERE c.oid = r.rel AND a.grantee <> c.relowner
		LOOP
			EXECUTE format('REVOKE ALL ON %s FROM %s CASCADE', r.rel,
						   CASE WHEN v_grantee = 0 THEN 'PUBLIC'
								ELSE quote_ident((SELECT rolname FROM pg_catalog.pg_roles WHERE oid = v_grantee)) END);
		END LOOP;
		FOR col IN SELECT DISTINCT att.attname, a.grantee
					 FROM pg_catalog.pg_attribute att CROSS JOIN LATERAL pg_catalog.aclexplode(att.attacl) a
					WHERE att.attrelid = r.rel AND att.attacl IS NOT NULL
		LOOP
			EXECUTE format('REVOKE ALL (%I) ON %s FROM %s CASCADE', col.attname, r.rel,
						   CASE WHEN col.grantee = 0 THEN 'PUBLIC'
								ELSE quote_ident((SELECT rolname FROM pg_catalog.pg_roles WHERE oid = col.grantee)) END);
		END LOOP;
	END LOOP;

	-- A log or segment may carry what its owner put there before 1.4 (a
	-- role could own one, or hold TRIGGER on it), and estream now writes it
	-- as the extension's owner: code that a non-superuser controls would
	-- run with those rights.  A log gets back exactly the shape
	-- create_topic() gives it.  Its columns must be those of a log.
	FOR r IN SELECT t.name, t.log_relid FROM estream.topic t
			  WHERE (SELECT pg_catalog.array_agg(a.attname::text || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod)
												 ORDER BY a.attnum)
					   FROM pg_catalog.pg_attribute a
					  WHERE a.attrelid = t.log_relid AND a.attnum > 0 AND NOT a.attisdropped)
					IS DISTINCT FROM ARRAY['segment integer', 'partition integer', 'offset bigint',
										   'ts timestamp with time zone', 'key bytea', 'value jsonb',
										   'value_bin bytea', 'headers jsonb']
	LOOP
		RAISE EXCEPTION 'the log % of topic "%" was changed: its columns are not those of an estream log', r.log_relid, r.name
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'Columns were added to it, or their types changed, outside estream.',
				  HINT = 'Give it back the columns segment integer, partition integer, "offset" bigint, ts timestamptz, key bytea, value jsonb, value_bin bytea, headers jsonb, then update again.';
	END LOOP;
	FOR r IN SELECT c.oid::regclass AS rel, a.attname
			   FROM pg_catalog.pg_class c JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
			  WHERE c.oid IN (SELECT t.log_relid FROM estream.topic t UNION SELECT s.relid FROM estream.segment s)
				AND a.attnum > 0 AND a.atthasdef
	LOOP
		EXECUTE format('ALTER TABLE %s ALTER COLUMN %I DROP DEFAULT', r.rel, r.attname);
		RAISE WARNING 'estream: dropped the default of column % of %', r.attname, r.rel;
	END LOOP;
	-- constraints on them (but the segments' primary keys), and foreign keys
	-- that point at them
	FOR r IN SELECT cn.conname, cn.conrelid::regclass AS rel
			   FROM pg_catalog.pg_constraint cn
			  WHERE (cn.conrelid IN (SELECT t.log_relid FROM estream.topic t UNION SELECT s.relid FROM estream.segment s)
					 AND cn.contype <> 'p' AND cn.conislocal)
				 OR (cn.confrelid IN (SELECT t.log_relid FROM estream.topic t UNION SELECT s.relid FROM estream.segment s)
					 AND cn.contype = 'f')
	LOOP
		EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', r.rel, r.conname);
		RAISE WARNING 'estream: dropped constraint "%" of %', r.conname, r.rel;
	END LOOP;
	FOR r IN SELECT i.indexrelid::regclass AS idx
			   FROM pg_catalog.pg_index i
			  WHERE i.indrelid IN (SELECT t.log_relid FROM estream.topic t UNION SELECT s.relid FROM estream.segment s)
				AND NOT i.indisprimary
				AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits h WHERE h.inhrelid = i.indexrelid)
	LOOP
		EXECUTE format('DROP INDEX %s', r.idx);
		RAISE WARNING 'estream: dropped index %', r.idx;
	END LOOP;
	FOR r IN SELECT pg_catalog.format('%I.%I', n.nspname, x.stxname) AS stat
			   FROM pg_catalog.pg_statistic_ext x JOIN pg_catalog.pg_namespace n ON n.oid = x.stxnamespace
			  WHERE x.stxrelid IN (SELECT t.log_relid FROM estream.topic t UNION SELECT s.relid FROM estream.segment s)
	LOOP
		EXECUTE format('DROP STATISTICS %s', r.stat);
		RAISE WARNING 'estream: dropped statistics %', r.stat;
	END LOOP;
	FOR r IN SELECT pol.polname, pol.polrelid::regclass AS rel
			   FROM pg_catalog.pg_policy pol
			  WHERE pol.polrelid IN (SELECT t.log_relid FROM estream.topic t UNION SELECT s.relid FROM estream.segment s)
	LOOP
		EXECUTE format('DROP POLICY %I ON %s', r.polname, r.rel);
		RAISE WARNING 'estream: dropped policy "%" on %', r.polname, r.rel;
	END LOOP;
	FOR r IN SELECT c.oid::regclass AS rel FROM pg_catalog.pg_class c
			  WHERE c.oid IN (SELECT t.log_relid FROM estream.topic t UNION SELECT s.relid FROM estream.segment s)
				AND (c.relrowsecurity OR c.relforcerowsecurity)
	LOOP
		EXECUTE format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY', r.rel);
	END LOOP;
	FOR r IN SELECT rw.rulename, rw.ev_class::regclass AS rel
			   FROM pg_catalog.pg_rewrite rw
			  WHERE rw.ev_class IN (SELECT t.log_relid FROM estream.topic t UNION SELECT s.relid FROM estream.segment s)
				AND rw.rulename <> '_RETURN'
	LOOP
		EXECUTE format('DROP RULE %I ON %s', r.rulename, r.rel);
		RAISE WARNING 'estream: dropped rule "%" on %', r.rulename, r.rel;
	END LOOP;
	-- Triggers on estream's tables, logs and segments run in every
	-- producer's transaction, the worker's (a superuser) among them: those
	-- whose function a non-superuser owns go.
	FOR r IN SELECT tg.tgname, tg.tgrelid::regclass AS rel, p.oid::regprocedure AS fn, ro.rolsuper
			   FROM pg_catalog.pg_trigger tg
			   JOIN pg_catalog.pg_class c ON c.oid = tg.tgrelid
			   JOIN pg_catalog.pg_proc p ON p.oid = tg.tgfoid
			   JOIN pg_catalog.pg_roles ro ON ro.oid = p.proowner
			  WHERE NOT tg.tgisinternal
				AND ((c.relnamespace = 'estream'::regnamespace AND c.relname !~ '^log_[0-9]+(_[0-9]+)?$')
					 OR c.oid IN (SELECT t.log_relid FROM estream.topic t UNION SELECT s.relid FROM estream.segment s))
				AND tg.tgfoid <> 'estream._topic_invalidate()'::regprocedure
	LOOP
		IF r.rolsuper THEN
			RAISE WARNING 'estream: trigger "%" on % (function %) runs in every producer''s transaction', r.tgname, r.rel, r.fn
				USING HINT = 'Check that it should; estream''s logs are written only through estream.';
		ELSE
			EXECUTE format('DROP TRIGGER %I ON %s', r.tgname, r.rel);
			RAISE WARNING 'estream: dropped trigger "%" on % (function %): it would run as the worker', r.tgname, r.rel, r.fn;
		END IF;
	END LOOP;

	-- Only the owner creates objects in schema estream: a function put
	-- there by another role could be what a body's call resolves to (an
	-- overload of estream.fetch() with a closer signature, say), and run
	-- with the owner's rights.  Such objects made before 1.4 go.
	FOR v_grantee IN SELECT a.grantee
					   FROM pg_catalog.pg_namespace n CROSS JOIN LATERAL pg_catalog.aclexplode(n.nspacl) a
					  WHERE n.nspname = 'estream' AND a.grantee <> n.nspowner AND a.privilege_type = 'CREATE'
	LOOP
		EXECUTE format('REVOKE CREATE ON SCHEMA estream FROM %s CASCADE',
					   CASE WHEN v_grantee = 0 THEN 'PUBLIC'
							ELSE quote_ident((SELECT rolname FROM pg_catalog.pg_roles WHERE oid = v_grantee)) END);
	END LOOP;
	FOR r IN SELECT p.oid::regprocedure AS fn, p.prokind
			   FROM pg_catalog.pg_proc p
			  WHERE p.pronamespace = 'estream'::regnamespace
				AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
								 WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
	LOOP
		EXECUTE format('DROP %s %s CASCADE',
					   CASE r.prokind WHEN 'a' THEN 'AGGREGATE' WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, r.fn);
		RAISE WARNING 'estream: dropped %, which is not estream''s, from schema estream', r.fn;
	END LOOP;
	FOR r IN SELECT o.oid::regoperator AS op
			   FROM pg_catalog.pg_operator o
			  WHERE o.oprnamespace = 'estream'::regnamespace
				AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
								 WHERE d.classid = 'pg_operator'::regclass AND d.objid = o.oid AND d.deptype = 'e')
	LOOP
		EXECUTE format('DROP OPERATOR %s CASCADE', r.op);
		RAISE WARNING 'estream: dropped operator %, which is not estream''s, from schema estream', r.op;
	END LOOP;

	-- comments are readable by every role: no topic names in them
	FOR r IN SELECT t.log_relid FROM estream.topic t LOOP
		EXECUTE format('COMMENT ON TABLE %s IS %L', r.log_relid,
					   'Log of an estream topic (do not modify directly; estream.topics names it).');
	END LOOP;
END
$$;

--
-- Who may call what.  The schema is open to every role: estream's own
-- rights decide.  Internal functions are for the bodies and the worker.
--
GRANT USAGE ON SCHEMA estream TO PUBLIC;
-- checks the cluster_action right on the cluster (it was the owner's only before)
GRANT EXECUTE ON FUNCTION estream.run_maintenance(text) TO PUBLIC;
GRANT SELECT ON estream.config_option TO PUBLIC;
GRANT SELECT ON estream.topics, estream.partitions, estream.segments, estream.groups,
	estream.group_members, estream.consumer_lag, estream.captures, estream.workers,
	estream.acls, estream.maintenance_errors TO PUBLIC;

DO $$
DECLARE
	f regprocedure;
BEGIN
	FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
			  WHERE p.pronamespace = 'estream'::regnamespace AND left(p.proname, 1) = '_'
				AND p.proname NOT IN ('_allowed', '_timestamp_at', '_partition_stats', '_capture_status',
									  '_worker_status', '_capture_origin_lsn', '_acls', '_worker_state',
									  '_worker_missing')
	LOOP
		EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
	END LOOP;
END
$$;

-- the worker makes the initial copy of a capture itself (as the table's owner)
DROP FUNCTION estream._capture_activate(oid);

-- Sessions cache whether this database has rights and every topic's
-- owner: make them look again (the trigger on estream.topic invalidates
-- their caches).
UPDATE estream.topic SET config = config;

--
-- Shared partition slots (1.4): bounded by the partitions in use, not by
-- those that exist.  Readers take no slot; idle slots are evicted and
-- initialized again from what is stored; records removed by retention and
-- compaction leave the persisted stable offset above them.
--

CREATE FUNCTION estream._stable_offsets(topic text,
	OUT partition integer, OUT stable bigint)
RETURNS SETOF record
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_stable_offsets';
COMMENT ON FUNCTION estream._stable_offsets(text) IS
	'Stable offset of every partition of a topic, from shared memory or, for a partition without a slot, from storage (taking no slot); for compaction.';
REVOKE EXECUTE ON FUNCTION estream._stable_offsets(text) FROM PUBLIC;

CREATE FUNCTION estream._partition_slots(
	OUT slots integer, OUT used integer, OUT held integer, OUT this_database integer,
	OUT created bigint, OUT evicted bigint, OUT reclaimed bigint, OUT refused bigint,
	OUT evicted_unpersisted integer, OUT evicted_lost bigint)
RETURNS SETOF record
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_partition_slots';
COMMENT ON FUNCTION estream._partition_slots() IS
	'Use of the shared partition slots of the server, for roles that may describe the cluster (no row for others).';

CREATE VIEW estream.partition_slots AS
SELECT * FROM estream._partition_slots();
COMMENT ON VIEW estream.partition_slots IS
	'Shared partition slots of the server (estream.max_partitions): in use, held by open producing transactions, of this database; slots given, evicted, reclaimed from dropped topics, calls refused since start; evicted stable offsets not yet persisted, and lost. Needs describe on the cluster.';
GRANT SELECT ON estream.partition_slots TO PUBLIC;

--
-- CDC isolation (issue 12).  A capture's failure stays its own: a change
-- that cannot be rendered or written stops that capture (on_error "stop")
-- or becomes a dead letter (on_error "skip"), a failed initial copy stops
-- its capture, and the others go on; resume_capture() starts a stopped
-- capture again from its position.  Default topic names are unique.
-- (This section is kept in one piece, at the end of the script.)
--

-- The output plugin reads only the first columns of estream.capture (by
-- number): these go at the end.  The worker writes them.
ALTER TABLE estream.capture
	ADD COLUMN on_error text NOT NULL DEFAULT 'stop' CHECK (on_error IN ('stop', 'skip')),
	ADD COLUMN progress_lsn pg_catalog.pg_lsn,
	ADD COLUMN stopped_at timestamptz,
	ADD COLUMN stop_error text,
	ADD COLUMN stop_detail text,
	ADD COLUMN stop_sqlstate text,
	ADD COLUMN stop_lsn pg_catalog.pg_lsn,
	ADD COLUMN stop_xid bigint;
COMMENT ON COLUMN estream.capture.on_error IS
	'What the worker does with a change it cannot render or write: "stop" the capture, or "skip" it into estream.capture_dead_letter.';
COMMENT ON COLUMN estream.capture.progress_lsn IS
	'The capture''s own position, when it is not that of the database''s streaming captures (stopped, or resumed and catching up): every source transaction that ended at or before it is written.';
COMMENT ON COLUMN estream.capture.stopped_at IS
	'When the worker stopped the capture (null: not stopped); estream.resume_capture() starts it again.';
COMMENT ON COLUMN estream.capture.stop_error IS 'The error that stopped the capture.';
COMMENT ON COLUMN estream.capture.stop_detail IS 'The detail of that error, if it had one.';
COMMENT ON COLUMN estream.capture.stop_sqlstate IS 'The SQLSTATE of that error.';
COMMENT ON COLUMN estream.capture.stop_lsn IS
	'The WAL position of the change that could not be captured; null if the initial copy failed.';
COMMENT ON COLUMN estream.capture.stop_xid IS 'The source transaction of that change.';

CREATE TABLE estream.capture_dead_letter (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	relid oid NOT NULL,
	capture_created_at timestamptz NOT NULL,
	source_schema name NOT NULL,
	source_table name NOT NULL,
	topic_id integer NOT NULL REFERENCES estream.topic ON DELETE CASCADE,
	topic text NOT NULL,
	lsn pg_catalog.pg_lsn NOT NULL,
	xid bigint NOT NULL,
	commit_ts timestamptz NOT NULL,
	key text,
	event jsonb,
	error text NOT NULL,
	error_detail text,
	sqlstate text NOT NULL,
	created_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
CREATE INDEX capture_dead_letter_relid ON estream.capture_dead_letter (relid, capture_created_at);
COMMENT ON TABLE estream.capture_dead_letter IS
	'Changes of captures with on_error "skip" that could not be rendered or written into their topic: the change''s position, transaction, key, event (null if it could not be rendered) and error.';
-- Not dumped, like estream.capture (rows name tables by OID).

-- Only the extension's owner holds privileges on estream's tables, default
-- privileges notwithstanding.
DO $$
DECLARE
	r record;
BEGIN
	FOR r IN SELECT c.oid::regclass AS rel, a.grantee
			   FROM pg_catalog.pg_class c CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
			  WHERE c.oid IN ('estream.capture_dead_letter'::regclass,
							  pg_catalog.pg_get_serial_sequence('estream.capture_dead_letter', 'id')::regclass)
				AND a.grantee <> c.relowner
	LOOP
		EXECUTE format('REVOKE ALL ON %s FROM %s', r.rel,
					   CASE WHEN r.grantee = 0 THEN 'PUBLIC'
							ELSE quote_ident((SELECT rolname FROM pg_catalog.pg_roles WHERE oid = r.grantee)) END);
	END LOOP;
END
$$;

CREATE FUNCTION estream._capture_position()
RETURNS pg_lsn
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_capture_position';
COMMENT ON FUNCTION estream._capture_position() IS
	'Position of this database''s streaming captures as its worker last wrote it: every source transaction that ended before it is in their topics.';

-- The schema and table parts of a default topic name: characters other
-- than A-Z, a-z, 0-9 and _ become -XX per UTF-8 byte (lower-case hex).
-- "-" never stands for itself, so different names give different parts,
-- and names of those characters only keep their name.
CREATE FUNCTION estream._topic_name_part(part text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT coalesce(string_agg(CASE WHEN ascii(x.ch) < 128 AND x.ch ~ '^[A-Za-z0-9_]$' THEN x.ch
								ELSE regexp_replace(encode(convert_to(x.ch, 'UTF8'), 'hex'), '(..)', '-\1', 'g')
						   END, '' ORDER BY x.i), '')
  FROM regexp_split_to_table(part, '') WITH ORDINALITY AS x(ch, i)
$$;
COMMENT ON FUNCTION estream._topic_name_part(text) IS
	'A schema or table name as a part of a default capture topic name: characters other than A-Z, a-z, 0-9 and _ escaped as -XX per UTF-8 byte.';
REVOKE EXECUTE ON FUNCTION estream._topic_name_part(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION estream._capture_impl(source regclass, topic text, options jsonb)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	c record;
	t estream.topic;
	v_root oid;
	v_topic text := _capture_impl.topic;
	v_snapshot boolean := true;
	v_before boolean := true;
	v_columns text[];
	v_partitions integer := 1;
	v_on_error text := 'stop';
	v_bad text;
	k text;
BEGIN
	IF source IS NULL THEN
		RAISE EXCEPTION 'source must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF current_setting('wal_level') <> 'logical' THEN
		RAISE EXCEPTION 'change data capture needs wal_level = logical'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = format('wal_level is %s.', current_setting('wal_level')),
				  HINT = 'Set wal_level = logical in postgresql.conf and restart the server.';
	END IF;

	SELECT cl.relkind, cl.relpersistence, cl.relispartition, n.nspname, cl.relname, cl.relowner INTO c
	  FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace WHERE cl.oid = source;
	-- the worker copies and decodes the table: only for its owner
	IF NOT pg_has_role(estream._caller(), c.relowner, 'USAGE') THEN
		RAISE EXCEPTION 'must be owner of table %', source
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'Capturing a table streams every row and change of it into a topic.',
				  HINT = 'Its owner (or a member of the owning role) can capture it.';
	END IF;
	IF c.relkind NOT IN ('r', 'p') THEN
		RAISE EXCEPTION '"%" is not a table', source
			USING ERRCODE = 'wrong_object_type',
				  DETAIL = format('Only tables can be captured; "%s" is a %s.', source,
								  CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
									  WHEN 'f' THEN 'foreign table' WHEN 'S' THEN 'sequence'
									  WHEN 'i' THEN 'index' WHEN 'c' THEN 'composite type'
									  ELSE 'relation of kind ' || c.relkind::text END);
	END IF;
	IF c.relpersistence = 't' THEN
		RAISE EXCEPTION 'cannot capture temporary table "%"', source
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = 'Changes of temporary tables are not written to the WAL.';
	END IF;
	IF c.relpersistence = 'u' THEN
		RAISE EXCEPTION 'cannot capture unlogged table "%"', source
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = 'Changes of unlogged tables are not written to the WAL.',
				  HINT = format('Make it logged first: ALTER TABLE %s SET LOGGED.', source);
	END IF;
	IF c.nspname = 'estream' THEN
		RAISE EXCEPTION 'cannot capture "%", a table of estream', source
			USING ERRCODE = 'feature_not_supported',
				  HINT = 'Consume its topic instead.';
	END IF;
	-- system catalogs hold other roles' secrets (pg_authid); extensions'
	-- tables (and their configuration tables) belong to the extension
	IF source::oid < 16384 OR c.nspname IN ('pg_catalog', 'information_schema', 'pg_toast') THEN
		RAISE EXCEPTION 'cannot capture system catalog "%"', source
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'Only user tables can be captured.';
	END IF;
	IF EXISTS (SELECT 1 FROM pg_depend d
				WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e'
				  AND d.objid IN (source, pg_partition_root(source))) THEN
		RAISE EXCEPTION 'cannot capture "%", a table of extension "%"', source,
				(SELECT e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
				  WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e'
					AND d.objid IN (source, pg_partition_root(source)) LIMIT 1)
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'Tables that belong to an extension, its configuration among them, cannot be captured.';
	END IF;

	-- a partition is captured as its root (every partition, one topic)
	v_root := source;
	IF c.relispartition THEN
		v_root := pg_partition_root(source);
		RAISE NOTICE 'capturing partitioned table "%", the root of "%"', v_root::regclass, source;
		SELECT n.nspname, cl.relname, cl.relowner INTO c.nspname, c.relname, c.relowner
		  FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace WHERE cl.oid = v_root;
		-- the root's rows are all captured: only for the root's owner
		IF NOT pg_has_role(estream._caller(), c.relowner, 'USAGE') THEN
			RAISE EXCEPTION 'must be owner of table %', v_root::regclass
				USING ERRCODE = 'insufficient_privilege',
					  DETAIL = format('Capturing "%s" captures its partitioned table "%s", every partition of it.',
									  source, v_root::regclass),
					  HINT = 'The owner of the partitioned table can capture it.';
		END IF;
	END IF;

	IF options IS NULL OR jsonb_typeof(options) <> 'object' THEN
		RAISE EXCEPTION 'options must be a JSON object' USING ERRCODE = 'invalid_parameter_value',
			HINT = 'Pass for example {"snapshot": false, "columns": ["id", "status"], "before": true, "on_error": "skip"}.';
	END IF;
	FOR k IN SELECT jsonb_object_keys(options) LOOP
		IF k NOT IN ('snapshot', 'columns', 'before', 'partitions', 'on_error') THEN
			RAISE EXCEPTION 'unknown capture option "%"', k USING ERRCODE = 'invalid_parameter_value',
				DETAIL = 'The options are "snapshot" (boolean), "columns" (array of column names), "before" (boolean), "partitions" (integer, for a new topic) and "on_error" ("stop" or "skip").';
		END IF;
	END LOOP;
	IF options ? 'snapshot' THEN
		IF jsonb_typeof(options->'snapshot') <> 'boolean' THEN
			RAISE EXCEPTION 'capture option "snapshot" must be a boolean' USING ERRCODE = 'invalid_parameter_value';
		END IF;
		v_snapshot := (options->>'snapshot')::boolean;
	END IF;
	IF options ? 'before' THEN
		IF jsonb_typeof(options->'before') <> 'boolean' THEN
			RAISE EXCEPTION 'capture option "before" must be a boolean' USING ERRCODE = 'invalid_parameter_value';
		END IF;
		v_before := (options->>'before')::boolean;
	END IF;
	IF options ? 'partitions' THEN
		IF jsonb_typeof(options->'partitions') <> 'number' OR (options->>'partitions') !~ '^[0-9]+$' THEN
			RAISE EXCEPTION 'capture option "partitions" must be a positive integer' USING ERRCODE = 'invalid_parameter_value';
		END IF;
		v_partitions := (options->>'partitions')::integer;
	END IF;
	IF options ? 'on_error' THEN
		IF jsonb_typeof(options->'on_error') <> 'string' OR options->>'on_error' NOT IN ('stop', 'skip') THEN
			RAISE EXCEPTION 'capture option "on_error" must be "stop" or "skip"'
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = '"stop" stops the capture at a change that cannot be captured; "skip" writes that change to estream.capture_dead_letter and goes on.';
		END IF;
		v_on_error := options->>'on_error';
	END IF;
	IF options ? 'columns' THEN
		IF jsonb_typeof(options->'columns') <> 'array'
		   OR EXISTS (SELECT 1 FROM jsonb_array_elements(options->'columns') e WHERE jsonb_typeof(e) <> 'string') THEN
			RAISE EXCEPTION 'capture option "columns" must be an array of column names'
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		SELECT array_agg(e) INTO v_columns FROM jsonb_array_elements_text(options->'columns') e;
		IF v_columns IS NULL THEN
			RAISE EXCEPTION 'capture option "columns" must name at least one column'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Leave the option out to capture every column.';
		END IF;
		SELECT string_agg(format('"%s"', col), ', ') INTO v_bad
		  FROM unnest(v_columns) col
		 WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = v_root AND a.attname = col
							  AND a.attnum > 0 AND NOT a.attisdropped);
		IF v_bad IS NOT NULL THEN
			RAISE EXCEPTION 'table "%" has no column %', v_root::regclass, v_bad
				USING ERRCODE = 'undefined_column';
		END IF;
	END IF;

	IF EXISTS (SELECT 1 FROM estream.capture cp WHERE cp.relid = v_root) THEN
		RAISE EXCEPTION 'table "%" is already captured', v_root::regclass
			USING ERRCODE = 'duplicate_object',
				  HINT = 'estream.captures lists the captures; estream.uncapture() ends one.';
	END IF;

	-- Debezium names topics <server>.<schema>.<table>: the database's name
	-- with characters outside Kafka's alphabet made "_", then the schema
	-- and the table escaped (estream._topic_name_part()), so that two
	-- tables never get the same name and the name gives back the table.
	IF v_topic IS NULL THEN
		v_topic := format('%s.%s.%s', regexp_replace(current_database(), '[^A-Za-z0-9._-]', '_', 'g'),
						  estream._topic_name_part(c.nspname), estream._topic_name_part(c.relname));
		IF length(v_topic) > 249 THEN
			RAISE EXCEPTION 'the topic name of table "%" would be too long', v_root::regclass
				USING ERRCODE = 'name_too_long',
					  DETAIL = format('"%s" has %s characters; a topic name has at most 249.', v_topic, length(v_topic)),
					  HINT = 'Pass a topic name to estream.capture().';
		END IF;
		-- a table captured into this name explicitly: not shared unasked
		SELECT cp.relid::regclass::text INTO v_bad FROM estream.capture cp
		 WHERE cp.topic = v_topic AND cp.relid <> v_root LIMIT 1;
		IF v_bad IS NOT NULL THEN
			RAISE EXCEPTION 'topic "%" is already the topic of table "%"', v_topic, v_bad
				USING ERRCODE = 'duplicate_object',
					  DETAIL = 'Without a topic name, capture() gives each table a topic of its own.',
					  HINT = format('Pass another topic name, or pass "%s" to share that topic.', v_topic);
		END IF;
	END IF;
	-- a row can be large: a new topic takes records up to 64 MB.  The
	-- caller needs the create right for a new topic (and owns it), the
	-- write right on an existing one.
	IF NOT EXISTS (SELECT 1 FROM estream.topic tp WHERE tp.name = v_topic) THEN
		PERFORM estream.create_topic(v_topic, v_partitions, '{"max.message.bytes": 67108864}');
	ELSE
		-- a table's rows go only into a topic of its owner's: the write right
		-- (every producer has it on every topic) would let anyone who made a
		-- topic of the default name first read what is captured into it
		t := estream._authorize_topic(v_topic, 'write');
		IF NOT pg_has_role(estream._caller(), t.owner, 'USAGE')
		   AND NOT estream._allowed('alter', 'cluster', NULL, NULL) THEN
			RAISE EXCEPTION 'topic "%" belongs to role "%"', v_topic, t.owner
				USING ERRCODE = 'insufficient_privilege',
					  DETAIL = 'A table is captured only into a new topic or one its capturer owns.',
					  HINT = 'Pass another topic name, or have the topic''s owner give it to you (estream.alter_topic_owner()).';
		END IF;
	END IF;
	IF position('compact' IN estream.effective_config(
			(SELECT tp.config FROM estream.topic tp WHERE tp.name = v_topic))->>'cleanup.policy') > 0
		  AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = v_root AND i.indisprimary) THEN
		RAISE EXCEPTION 'table "%" has no primary key, which compacted topic "%" needs', v_root::regclass, v_topic
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Its events would have no key, and a compacted topic keeps the latest record per key.';
	END IF;

	INSERT INTO estream.capture (relid, topic, with_before, columns, topic_id, source_schema,
								 source_table, initial_snapshot, capturer, on_error)
	SELECT v_root, v_topic, v_before, v_columns, x.topic_id, c.nspname, c.relname, v_snapshot,
		   estream._caller(), v_on_error
	  FROM estream.topic x WHERE x.name = v_topic;
	v_bad := estream._worker_missing();
	IF v_bad IS NOT NULL THEN
		RAISE WARNING 'table "%" will not be captured until the estream worker of this database runs', v_root::regclass
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = format('The worker does not run: %s.', v_bad),
				  HINT = 'See estream.workers and docs/operations.md ("Sizing the workers"). The capture starts when the worker runs, as docs/cdc.md describes.';
	END IF;
	RETURN v_topic;
END
$$;
COMMENT ON FUNCTION estream._capture_impl(regclass, text, jsonb) IS
	'Body of capture(): needs ownership of the table, and the create right for a new topic or ownership of an existing one.';
COMMENT ON FUNCTION estream.capture(regclass, text, jsonb) IS
	'Starts capturing the changes of a table into a topic (created if missing; by default <database>.<schema>.<table>, escaped), keyed by primary key; returns the topic. Options: snapshot, columns, before, partitions, on_error ("stop" or "skip"). Needs ownership of the table and the create right (new topic) or ownership of the topic.';

CREATE FUNCTION estream._resume_capture_impl(source regclass, on_error text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	v_root oid := source;
	c record;
BEGIN
	IF source IS NULL THEN
		RAISE EXCEPTION 'source must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF (SELECT relispartition FROM pg_class WHERE oid = source) THEN
		v_root := pg_partition_root(source);
	END IF;
	-- as uncapture(): the table's owner, the topic's owner or the cluster's admin
	IF NOT estream._allowed('alter', 'cluster', NULL, NULL)
	   AND NOT coalesce(pg_has_role(estream._caller(), (SELECT relowner FROM pg_class WHERE oid = v_root),
									'USAGE'), false)
	   AND NOT coalesce((SELECT pg_has_role(estream._caller(), t.owner, 'USAGE')
						   FROM estream.capture cp JOIN estream.topic t ON t.topic_id = cp.topic_id
						  WHERE cp.relid = v_root), false) THEN
		RAISE EXCEPTION 'must be owner of table % or of its topic', source
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'The table''s owner, the topic''s owner, or a role with the alter right on the cluster can resume a capture.';
	END IF;
	IF _resume_capture_impl.on_error IS NOT NULL AND _resume_capture_impl.on_error NOT IN ('stop', 'skip') THEN
		RAISE EXCEPTION 'capture option "on_error" must be "stop" or "skip"'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT cp.stopped_at, cp.snapshot IS NOT NULL AS copied INTO c
	  FROM estream.capture cp WHERE cp.relid = v_root FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'table "%" is not captured', source
			USING ERRCODE = 'undefined_object',
				  HINT = 'estream.captures lists the captures.';
	END IF;
	IF c.stopped_at IS NULL THEN
		RAISE EXCEPTION 'the capture of table "%" is not stopped', v_root::regclass
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'estream.captures shows the state of each capture.';
	END IF;
	-- from its position (progress_lsn, kept), or with a new copy
	UPDATE estream.capture cp
	   SET stopped_at = NULL, stop_error = NULL, stop_detail = NULL, stop_sqlstate = NULL,
		   stop_lsn = NULL, stop_xid = NULL,
		   on_error = coalesce(_resume_capture_impl.on_error, cp.on_error)
	 WHERE cp.relid = v_root;
END
$$;
COMMENT ON FUNCTION estream._resume_capture_impl(regclass, text) IS
	'Body of resume_capture(): needs ownership of the table or of its topic, or the alter right on the cluster.';
REVOKE EXECUTE ON FUNCTION estream._resume_capture_impl(regclass, text) FROM PUBLIC;

CREATE FUNCTION estream.resume_capture(source regclass, on_error text DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.resume_capture(regclass, text) IS
	'Starts a stopped capture again, from the source transaction it stopped at (or with a new initial copy, if that failed): no change lost, none twice; on_error, if given, replaces the capture''s policy. Needs ownership of the table or of its topic, or alter on the cluster.';

CREATE OR REPLACE VIEW estream.captures WITH (security_barrier) AS
SELECT c.relid::regclass AS source,
	   c.topic,
	   CASE WHEN c.stopped_at IS NOT NULL THEN 'stopped'
			WHEN c.snapshot IS NOT NULL AND c.progress_lsn IS NOT NULL THEN 'catching up'
			-- streams only while the worker runs
			WHEN c.snapshot IS NOT NULL AND w.why IS NOT NULL THEN 'not running'
			WHEN c.snapshot IS NOT NULL THEN 'streaming'
			WHEN c.initial_snapshot THEN 'waiting for its initial copy'
			ELSE 'waiting for the worker' END AS state,
	   c.columns,
	   c.with_before AS before_image,
	   c.initial_snapshot,
	   c.snapshot_rows,
	   c.created_at,
	   c.activated_at,
	   s.slot_name,
	   s.confirmed_flush_lsn,
	   estream._capture_origin_lsn() AS origin_lsn,
	   CASE WHEN p.lsn IS NULL THEN NULL
			ELSE pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), p.lsn)::bigint
	   END AS lag_bytes,
	   -- every change committed before now() - lag_seconds is in its topic
	   CASE WHEN c.snapshot IS NULL OR c.stopped_at IS NOT NULL OR c.progress_lsn IS NOT NULL THEN NULL
			ELSE round(greatest(0, extract(epoch FROM pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) st.caught_up_at)), 3)
	   END AS lag_seconds,
	   st.last_commit AS last_source_commit,
	   st.events AS events_captured,
	   st.last_error,
	   c.on_error,
	   p.lsn AS progress_lsn,
	   CASE WHEN c.stopped_at IS NOT NULL AND c.progress_lsn IS NOT NULL
			THEN pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), c.progress_lsn)::bigint
	   END AS retained_bytes,
	   c.stopped_at,
	   c.stop_lsn,
	   c.stop_xid,
	   c.stop_error,
	   c.stop_sqlstate,
	   (SELECT count(*) FROM estream.capture_dead_letter d
		 WHERE d.relid OPERATOR(pg_catalog.=) c.relid
		   AND d.capture_created_at OPERATOR(pg_catalog.=) c.created_at) AS dead_letters,
	   w.why AS not_running_because
FROM estream.capture c
	 CROSS JOIN (SELECT estream._worker_missing() AS why) w
	 JOIN estream.topic t ON t.topic_id OPERATOR(pg_catalog.=) c.topic_id
	 LEFT JOIN pg_catalog.pg_replication_slots s
		ON s.slot_name OPERATOR(pg_catalog.=) ('estream_' OPERATOR(pg_catalog.||)
			(SELECT d.oid FROM pg_catalog.pg_database d
			  WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())::text)
	 LEFT JOIN estream._capture_status() st ON true
	 -- the capture's position: its own, or that of the streaming captures
	 CROSS JOIN LATERAL (SELECT CASE WHEN c.snapshot IS NULL THEN NULL
									 WHEN c.progress_lsn IS NOT NULL THEN c.progress_lsn
									 ELSE coalesce(estream._capture_position(), s.confirmed_flush_lsn)
								END AS lsn) p
WHERE estream._allowed('describe', 'topic', t.name, t.owner);
COMMENT ON VIEW estream.captures IS
	'Captured tables whose topic the caller may describe, with their state (streaming, stopped, not running when the database''s worker does not, ...), position, lag in bytes and seconds, the WAL a stopped capture keeps, its error, dead letters, the slot''s confirmed position and (with describe on the cluster) the origin''s progress and the worker''s capture progress.';

-- dead letters to those who may describe the topic; their key and event
-- (records that did not make it into the topic) to those who may read it
CREATE VIEW estream.capture_dead_letters WITH (security_barrier) AS
SELECT d.id,
	   d.relid::regclass AS source,
	   d.source_schema,
	   d.source_table,
	   d.topic,
	   d.lsn,
	   d.xid,
	   d.commit_ts,
	   CASE WHEN estream._allowed('read', 'topic', t.name, t.owner) THEN d.key END AS key,
	   CASE WHEN estream._allowed('read', 'topic', t.name, t.owner) THEN d.event END AS event,
	   d.error,
	   d.error_detail,
	   d.sqlstate,
	   d.created_at
FROM estream.capture_dead_letter d
	 JOIN estream.topic t ON t.topic_id OPERATOR(pg_catalog.=) d.topic_id
WHERE estream._allowed('describe', 'topic', t.name, t.owner);
COMMENT ON VIEW estream.capture_dead_letters IS
	'Changes that captures with on_error "skip" could not write into their topic, for the topics the caller may describe; key and event only with read on the topic.';
GRANT SELECT ON estream.capture_dead_letters TO PUBLIC;

--
-- End of the CDC isolation section.
--
