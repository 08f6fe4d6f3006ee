-- src/sql/topics.sql: Topics: names, configuration, segments, creating, altering and dropping.
--
-- Replayed by every update script: every statement here must be
-- re-runnable (CREATE OR REPLACE, COMMENT ON).

CREATE OR REPLACE FUNCTION estream._topic_invalidate()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'estream_topic_invalidate';
COMMENT ON FUNCTION estream._topic_invalidate() IS
	'Trigger: makes every backend drop its cached topic metadata when a topic changes.';

--
-- Validation helpers
--
CREATE OR REPLACE FUNCTION estream._check_topic_name(topic text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF topic IS NULL THEN
		RAISE EXCEPTION 'topic must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF topic = '' OR length(topic) > 249 OR topic IN ('.', '..')
		OR topic !~ '^[A-Za-z0-9._-]+$' THEN
		RAISE EXCEPTION 'invalid topic name "%"', topic
			USING ERRCODE = 'invalid_name',
				  DETAIL = 'Topic names have 1 to 249 characters among ASCII letters, digits, ".", "_" and "-", and cannot be "." or "..".',
				  HINT = 'Kafka''s topic naming rule applies.';
	END IF;
END
$$;
COMMENT ON FUNCTION estream._check_topic_name(text) IS
	'Raises an error unless the name follows Kafka''s topic naming rule.';

CREATE OR REPLACE FUNCTION estream._check_partition_count(partitions integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF partitions IS NULL OR partitions < 1 OR partitions > 10000 THEN
		RAISE EXCEPTION 'invalid partition count %', coalesce(partitions::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A topic has between 1 and 10000 partitions.';
	END IF;
END
$$;
COMMENT ON FUNCTION estream._check_partition_count(integer) IS
	'Raises an error unless the partition count is between 1 and 10000.';

-- Validate a configuration object and merge it over base.  A JSON null value
-- removes the key (back to its default).  Values may be JSON strings (as in
-- Kafka) or numbers; they are stored normalized as strings.
CREATE OR REPLACE FUNCTION estream._merge_config(base jsonb, config jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	k text;
	v jsonb;
	s text;
	opt estream.config_option;
	n numeric;
	result jsonb := coalesce(base, '{}');
BEGIN
	IF config IS NULL THEN
		RAISE EXCEPTION 'config must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF jsonb_typeof(config) <> 'object' THEN
		RAISE EXCEPTION 'topic configuration must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('A JSON %s was given.', jsonb_typeof(config)),
				  HINT = 'Pass an object such as {"retention.ms": "3600000"}.';
	END IF;
	FOR k, v IN SELECT key, value FROM jsonb_each(config) LOOP
		SELECT * INTO opt FROM estream.config_option o WHERE o.name = k;
		IF NOT FOUND THEN
			RAISE EXCEPTION 'unknown topic configuration key "%"', k
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = format('Valid keys are: %s.',
									  (SELECT string_agg(name, ', ' ORDER BY name) FROM estream.config_option)),
					  HINT = 'Keys use Kafka''s names, with dots.';
		END IF;
		IF jsonb_typeof(v) = 'null' THEN
			result := result - k;
			CONTINUE;
		END IF;
		IF jsonb_typeof(v) NOT IN ('string', 'number') THEN
			RAISE EXCEPTION 'invalid value for topic configuration key "%"', k
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = format('The value must be a string or a number, not a JSON %s.', jsonb_typeof(v));
		END IF;
		s := v #>> '{}';
		IF opt.kind = 'enum' THEN
			IF k = 'cleanup.policy' THEN
				s := array_to_string(ARRAY(SELECT DISTINCT btrim(x) FROM unnest(string_to_array(s, ',')) x ORDER BY 1), ',');
			END IF;
			IF NOT s = ANY (opt.allowed) THEN
				RAISE EXCEPTION 'invalid value for topic configuration key "%": "%"', k, v #>> '{}'
					USING ERRCODE = 'invalid_parameter_value',
						  DETAIL = format('Valid values are: %s.', array_to_string(opt.allowed, ', '));
			END IF;
		ELSE
			BEGIN
				n := s::numeric;
			EXCEPTION WHEN invalid_text_representation THEN
				n := NULL;
			END;
			IF n IS NULL OR (opt.kind = 'long' AND (n <> trunc(n) OR n > 9223372036854775807 OR n < -9223372036854775808))
				OR (opt.kind = 'ratio' AND (n < 0 OR n > 1)) THEN
				RAISE EXCEPTION 'invalid value for topic configuration key "%": "%"', k, v #>> '{}'
					USING ERRCODE = 'invalid_parameter_value',
						  DETAIL = CASE opt.kind WHEN 'long' THEN 'The value must be an integer.'
									ELSE 'The value must be a number between 0 and 1.' END;
			END IF;
			IF opt.min_value IS NOT NULL AND n < opt.min_value THEN
				RAISE EXCEPTION 'invalid value for topic configuration key "%": "%"', k, v #>> '{}'
					USING ERRCODE = 'invalid_parameter_value',
						  DETAIL = format('The value must be at least %s.', opt.min_value);
			END IF;
			IF k = 'max.message.bytes' AND n > 1073741823 THEN
				RAISE EXCEPTION 'invalid value for topic configuration key "%": "%"', k, v #>> '{}'
					USING ERRCODE = 'invalid_parameter_value',
						  DETAIL = 'The value must be at most 1073741823 (1 GB minus one byte).';
			END IF;
			s := n::text;
		END IF;
		result := result || jsonb_build_object(k, s);
	END LOOP;
	RETURN result;
END
$$;
COMMENT ON FUNCTION estream._merge_config(jsonb, jsonb) IS
	'Validates a topic configuration object and merges it over a base configuration.';

CREATE OR REPLACE FUNCTION estream.effective_config(config jsonb)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT jsonb_object_agg(o.name, coalesce(config ->> o.name, o.default_value) ORDER BY o.name)
	FROM estream.config_option o
$$;
COMMENT ON FUNCTION estream.effective_config(jsonb) IS
	'Every topic configuration key with its value: the one set in config, else the default.';

CREATE OR REPLACE FUNCTION estream._create_segment(p_topic_id integer, p_segment integer)
RETURNS regclass
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	rel text := format('estream.log_%s_%s', p_topic_id, p_segment);
BEGIN
	EXECUTE format('CREATE TABLE %s PARTITION OF estream.log_%s FOR VALUES FROM (%s) TO (%s)',
				   rel, p_topic_id, p_segment, p_segment + 1);
	EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (partition, "offset")', rel);
	INSERT INTO estream.segment (topic_id, segment, relid) VALUES (p_topic_id, p_segment, rel::regclass);
	RETURN rel::regclass;
END
$$;
COMMENT ON FUNCTION estream._create_segment(integer, integer) IS
	'Creates one segment (a partition of the topic''s log table) with its (partition, offset) key.';

--
-- Topic administration
--
CREATE OR REPLACE FUNCTION estream.create_topic(topic text, partitions integer DEFAULT 1,
												config jsonb DEFAULT '{}', if_not_exists boolean DEFAULT false)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.create_topic(text, integer, jsonb, boolean) IS
	'Creates a topic with the given partition count and Kafka-style configuration; the caller becomes its owner (needs the create right).';

CREATE OR REPLACE FUNCTION estream.drop_topic(topic text, if_exists boolean DEFAULT false)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.drop_topic(text, boolean) IS
	'Drops a topic and all its records (needs the delete right).';

CREATE OR REPLACE FUNCTION estream.alter_topic(topic text, config jsonb)
RETURNS jsonb
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.alter_topic(text, jsonb) IS
	'Changes configuration keys of a topic (a JSON null resets a key to its default); returns the new explicit configuration (needs the alter_configs right).';

CREATE OR REPLACE FUNCTION estream.add_partitions(topic text, partitions integer)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.add_partitions(text, integer) IS
	'Grows a topic to the given total partition count (never shrinks; needs the alter right). Keys may map to other partitions afterwards, as in Kafka.';

CREATE OR REPLACE FUNCTION estream._topic(p_topic text)
RETURNS estream.topic
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t estream.topic;
BEGIN
	IF p_topic IS NULL THEN
		RAISE EXCEPTION 'topic must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT * INTO t FROM estream.topic WHERE name = p_topic;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'topic "%" does not exist', p_topic
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it with estream.create_topic(); estream.topics lists the topics.';
	END IF;
	RETURN t;
END
$$;
COMMENT ON FUNCTION estream._topic(text) IS 'Looks up a topic row by name, or raises an error.';


--
-- Topic administration
--
CREATE OR REPLACE FUNCTION estream._partitions_created(p_topic_id integer, p_log_relid oid,
													  p_first integer, p_last integer)
RETURNS void
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_partitions_created';
COMMENT ON FUNCTION estream._partitions_created(integer, oid, integer, integer) IS
	'Tell the shared end cache that partitions this transaction created are empty, so that their first reader does not query the log.';

CREATE OR REPLACE FUNCTION estream._create_topic_impl(topic text, partitions integer, config jsonb,
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
		v_id := nextval('estream.topic_id_seq')::integer;
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
	PERFORM estream._partitions_created(v_id, format('estream.log_%s', v_id)::regclass, 0, partitions - 1);
END
$$;
COMMENT ON FUNCTION estream._create_topic_impl(text, integer, jsonb, boolean) IS
	'Body of create_topic(): needs the create right on the topic (or the cluster); the caller owns the topic.';

CREATE OR REPLACE FUNCTION estream._drain(topic_id integer)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_drain';
COMMENT ON FUNCTION estream._drain(integer) IS
	'For drop_topic(): ends the long-polls of the topic now and keeps new ones from sleeping until the transaction ends.';

CREATE OR REPLACE FUNCTION estream._draining(topic_id integer)
RETURNS boolean
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_draining_sql';
COMMENT ON FUNCTION estream._draining(integer) IS
	'Whether another transaction is dropping the topic (null: any topic) or the extension: poll() and consume() stop waiting.';

CREATE OR REPLACE FUNCTION estream._drop_topic_impl(topic text, if_exists boolean)
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

CREATE OR REPLACE FUNCTION estream._alter_topic_impl(topic text, config jsonb)
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
	-- segment.bytes or segment.ms may have changed: the roll step looks again
	UPDATE estream.segment s SET roll_checked_at = NULL
	 WHERE s.topic_id = t.topic_id AND s.segment = t.current_segment AND s.roll_checked_at IS NOT NULL;
	RETURN v_new;
END
$$;
COMMENT ON FUNCTION estream._alter_topic_impl(text, jsonb) IS
	'Body of alter_topic(): needs the alter_configs right on the topic.';

CREATE OR REPLACE FUNCTION estream._add_partitions_impl(topic text, partitions integer)
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
	PERFORM estream._partitions_created(t.topic_id, t.log_relid, t.partitions, partitions - 1);
END
$$;
COMMENT ON FUNCTION estream._add_partitions_impl(text, integer) IS
	'Body of add_partitions(): needs the alter right on the topic.';

CREATE OR REPLACE FUNCTION estream._alter_topic_owner_impl(topic text, new_owner regrole)
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

CREATE OR REPLACE FUNCTION estream.alter_topic_owner(topic text, new_owner regrole)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.alter_topic_owner(text, regrole) IS
	'Gives a topic to another role (the owner has every right on its topic).';
