/* estream--1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION estream" to load this file. \quit

--
-- Catalog
--

CREATE TABLE estream.config_option (
	name text PRIMARY KEY,
	kind text NOT NULL CHECK (kind IN ('long', 'enum', 'ratio')),
	default_value text NOT NULL,
	min_value bigint,
	allowed text[],
	description text NOT NULL
);
COMMENT ON TABLE estream.config_option IS
	'Topic configuration keys accepted by create_topic() and alter_topic(), with their Kafka defaults.';

INSERT INTO estream.config_option VALUES
	('cleanup.policy', 'enum', 'delete', NULL, ARRAY['delete', 'compact', 'compact,delete'],
	 'Whether old records are deleted by retention, compacted to the latest value per key, or both.'),
	('retention.ms', 'long', '604800000', -1, NULL,
	 'Age after which a segment is deleted, in milliseconds; -1 keeps records forever.'),
	('retention.bytes', 'long', '-1', -1, NULL,
	 'Size per partition above which the oldest segments are deleted; -1 for no limit.'),
	('segment.ms', 'long', '604800000', 1, NULL,
	 'Age after which a new segment is started, in milliseconds.'),
	('segment.bytes', 'long', '1073741824', 1024, NULL,
	 'Size after which a new segment is started, in bytes.'),
	('min.compaction.lag.ms', 'long', '0', 0, NULL,
	 'Minimum age of a record before compaction may remove it, in milliseconds.'),
	('max.compaction.lag.ms', 'long', '9223372036854775807', 1, NULL,
	 'Maximum time a record can stay uncompacted, in milliseconds.'),
	('delete.retention.ms', 'long', '86400000', 0, NULL,
	 'How long tombstones (null values) are kept on compacted topics, in milliseconds.'),
	('min.cleanable.dirty.ratio', 'ratio', '0.5', NULL, NULL,
	 'Share of uncompacted records above which a compacted topic is cleaned.'),
	('message.timestamp.type', 'enum', 'CreateTime', NULL, ARRAY['CreateTime', 'LogAppendTime'],
	 'CreateTime keeps the producer''s timestamp; LogAppendTime always stamps the append time.'),
	('max.message.bytes', 'long', '1048576', 64, NULL,
	 'Largest record (key, value and headers) the topic accepts, in bytes.');

CREATE SEQUENCE estream.topic_id_seq AS integer;
COMMENT ON SEQUENCE estream.topic_id_seq IS 'Source of topic ids; ids are never reused.';

-- DROP EXTENSION leaves the log tables of existing topics in schema estream
-- (they hold user data and are not members of the extension).  Start topic
-- ids above them so that a re-created extension never collides.
SELECT pg_catalog.setval('estream.topic_id_seq',
						 pg_catalog.max(pg_catalog.substring(c.relname, '^log_([0-9]+)$')::integer))
FROM pg_catalog.pg_class c
WHERE c.relnamespace OPERATOR(pg_catalog.=) 'estream'::pg_catalog.regnamespace
  AND c.relname OPERATOR(pg_catalog.~) '^log_[0-9]+$'
HAVING pg_catalog.count(*) OPERATOR(pg_catalog.>) 0;

CREATE TABLE estream.topic (
	topic_id integer PRIMARY KEY,
	name text NOT NULL UNIQUE,
	partitions integer NOT NULL CHECK (partitions >= 1),
	config jsonb NOT NULL DEFAULT '{}',
	log_relid regclass NOT NULL,
	current_segment integer NOT NULL DEFAULT 0,
	created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE estream.topic IS
	'One row per topic: name, partition count, explicitly set configuration and log table.';

CREATE TABLE estream.partition (
	topic_id integer NOT NULL REFERENCES estream.topic ON DELETE CASCADE,
	partition integer NOT NULL,
	log_start_offset bigint NOT NULL DEFAULT 0,
	created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (topic_id, partition)
);
COMMENT ON TABLE estream.partition IS
	'One row per topic partition, with its log start offset (the first offset retention kept).';

CREATE TABLE estream.segment (
	topic_id integer NOT NULL REFERENCES estream.topic ON DELETE CASCADE,
	segment integer NOT NULL,
	relid regclass NOT NULL,
	created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (topic_id, segment)
);
COMMENT ON TABLE estream.segment IS
	'One row per segment of a topic''s log; retention drops whole segments.';

SELECT pg_catalog.pg_extension_config_dump('estream.topic', '');
SELECT pg_catalog.pg_extension_config_dump('estream.partition', '');
SELECT pg_catalog.pg_extension_config_dump('estream.segment', '');
SELECT pg_catalog.pg_extension_config_dump('estream.topic_id_seq', '');

CREATE FUNCTION estream._topic_invalidate()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'estream_topic_invalidate';
COMMENT ON FUNCTION estream._topic_invalidate() IS
	'Trigger: makes every backend drop its cached topic metadata when a topic changes.';

CREATE TRIGGER topic_invalidate
	AFTER INSERT OR UPDATE OR DELETE ON estream.topic
	FOR EACH ROW EXECUTE FUNCTION estream._topic_invalidate();
CREATE TRIGGER topic_invalidate_truncate
	AFTER TRUNCATE ON estream.topic
	FOR EACH STATEMENT EXECUTE FUNCTION estream._topic_invalidate();
COMMENT ON TRIGGER topic_invalidate ON estream.topic IS
	'Makes every backend drop its cached metadata of a topic that was created, changed or dropped.';
COMMENT ON TRIGGER topic_invalidate_truncate ON estream.topic IS
	'Makes every backend drop its cached topic metadata when estream.topic is truncated.';
-- also under session_replication_role = replica
ALTER TABLE estream.topic ENABLE ALWAYS TRIGGER topic_invalidate;
ALTER TABLE estream.topic ENABLE ALWAYS TRIGGER topic_invalidate_truncate;

--
-- Validation helpers
--

CREATE FUNCTION estream._check_topic_name(topic text)
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

CREATE FUNCTION estream._check_partition_count(partitions integer)
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
CREATE FUNCTION estream._merge_config(base jsonb, config jsonb)
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

CREATE FUNCTION estream.effective_config(config jsonb)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT jsonb_object_agg(o.name, coalesce(config ->> o.name, o.default_value) ORDER BY o.name)
	FROM estream.config_option o
$$;
COMMENT ON FUNCTION estream.effective_config(jsonb) IS
	'Every topic configuration key with its value: the one set in config, else the default.';

CREATE FUNCTION estream._create_segment(p_topic_id integer, p_segment integer)
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

CREATE FUNCTION estream.create_topic(topic text, partitions integer DEFAULT 1,
									 config jsonb DEFAULT '{}', if_not_exists boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_id integer;
	v_config jsonb;
BEGIN
	PERFORM estream._check_topic_name(topic);
	PERFORM estream._check_partition_count(partitions);
	v_config := estream._merge_config('{}', config);

	-- serialize creators of the same name so that if_not_exists is exact
	PERFORM pg_advisory_xact_lock(hashtext('estream.topic'), hashtext(topic));
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
	EXECUTE format('COMMENT ON TABLE estream.log_%s IS %L', v_id,
				   format('Log of estream topic %s (do not modify directly).', topic));
	INSERT INTO estream.topic (topic_id, name, partitions, config, log_relid)
		VALUES (v_id, topic, partitions, v_config, format('estream.log_%s', v_id)::regclass);
	INSERT INTO estream.partition (topic_id, partition)
		SELECT v_id, g FROM generate_series(0, partitions - 1) g;
	PERFORM estream._create_segment(v_id, 0);
END
$$;
COMMENT ON FUNCTION estream.create_topic(text, integer, jsonb, boolean) IS
	'Creates a topic with the given partition count and Kafka-style configuration.';

CREATE FUNCTION estream.drop_topic(topic text, if_exists boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_id integer;
BEGIN
	IF topic IS NULL THEN
		RAISE EXCEPTION 'topic must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT t.topic_id INTO v_id FROM estream.topic t WHERE t.name = topic FOR UPDATE;
	IF NOT FOUND THEN
		IF if_exists THEN
			RAISE NOTICE 'topic "%" does not exist, skipping', topic;
			RETURN;
		END IF;
		RAISE EXCEPTION 'topic "%" does not exist', topic
			USING ERRCODE = 'undefined_object',
				  HINT = 'Pass if_exists => true to ignore missing topics.';
	END IF;
	EXECUTE format('DROP TABLE estream.log_%s', v_id);
	DELETE FROM estream.topic t WHERE t.topic_id = v_id;
END
$$;
COMMENT ON FUNCTION estream.drop_topic(text, boolean) IS
	'Drops a topic and all its records.';

CREATE FUNCTION estream.alter_topic(topic text, config jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_config jsonb;
	v_new jsonb;
BEGIN
	IF topic IS NULL THEN
		RAISE EXCEPTION 'topic must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT t.config INTO v_config FROM estream.topic t WHERE t.name = topic FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'topic "%" does not exist', topic
			USING ERRCODE = 'undefined_object';
	END IF;
	v_new := estream._merge_config(v_config, config);
	UPDATE estream.topic t SET config = v_new WHERE t.name = topic;
	RETURN v_new;
END
$$;
COMMENT ON FUNCTION estream.alter_topic(text, jsonb) IS
	'Changes configuration keys of a topic (a JSON null resets a key to its default); returns the new explicit configuration.';

CREATE FUNCTION estream.add_partitions(topic text, partitions integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_id integer;
	v_old integer;
BEGIN
	IF topic IS NULL THEN
		RAISE EXCEPTION 'topic must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM estream._check_partition_count(partitions);
	SELECT t.topic_id, t.partitions INTO v_id, v_old
		FROM estream.topic t WHERE t.name = topic FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'topic "%" does not exist', topic
			USING ERRCODE = 'undefined_object';
	END IF;
	IF partitions <= v_old THEN
		RAISE EXCEPTION 'topic "%" already has % partition%', topic, v_old,
				CASE WHEN v_old = 1 THEN '' ELSE 's' END
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('The new partition count (%s) must be greater than the current one; partitions can be added but never removed.', partitions),
				  HINT = 'partitions is the new total count, as in Kafka''s CreatePartitions.';
	END IF;
	UPDATE estream.topic t SET partitions = add_partitions.partitions WHERE t.topic_id = v_id;
	INSERT INTO estream.partition (topic_id, partition)
		SELECT v_id, g FROM generate_series(v_old, partitions - 1) g;
END
$$;
COMMENT ON FUNCTION estream.add_partitions(text, integer) IS
	'Grows a topic to the given total partition count (never shrinks). Keys may map to other partitions afterwards, as in Kafka.';

--
-- Produce
--

CREATE TYPE estream.position AS (partition integer, "offset" bigint);
COMMENT ON TYPE estream.position IS 'Where a produced record landed: its partition and offset.';

CREATE TYPE estream.consumer_record AS (
	partition integer, "offset" bigint, "timestamp" timestamptz,
	key text, value jsonb, headers jsonb);
COMMENT ON TYPE estream.consumer_record IS 'A record as fetch() returns it (JSON value, text key).';

CREATE TYPE estream.consumer_record_binary AS (
	partition integer, "offset" bigint, "timestamp" timestamptz,
	key bytea, value bytea, headers jsonb);
COMMENT ON TYPE estream.consumer_record_binary IS 'A record as fetch_binary() returns it (bytes).';

CREATE FUNCTION estream.produce(topic text, value jsonb, key text DEFAULT NULL,
								partition integer DEFAULT NULL, headers jsonb DEFAULT NULL,
								ts timestamptz DEFAULT NULL)
RETURNS estream.position
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_produce';
COMMENT ON FUNCTION estream.produce(text, jsonb, text, integer, jsonb, timestamptz) IS
	'Appends one JSON record to a topic in the current transaction; returns its partition and offset.';

CREATE FUNCTION estream.produce_binary(topic text, value bytea, key bytea DEFAULT NULL,
									   partition integer DEFAULT NULL, headers jsonb DEFAULT NULL,
									   ts timestamptz DEFAULT NULL)
RETURNS estream.position
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_produce_binary';
COMMENT ON FUNCTION estream.produce_binary(text, bytea, bytea, integer, jsonb, timestamptz) IS
	'Appends one record with a binary key and value; returns its partition and offset.';

CREATE FUNCTION estream.produce_batch(topic text, "values" jsonb[], keys text[] DEFAULT NULL,
									  partition integer DEFAULT NULL, headers jsonb[] DEFAULT NULL,
									  ts timestamptz DEFAULT NULL)
RETURNS SETOF estream.position
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_produce_batch';
COMMENT ON FUNCTION estream.produce_batch(text, jsonb[], text[], integer, jsonb[], timestamptz) IS
	'Appends many JSON records in one call; returns the partition and offset of each, in input order.';

CREATE FUNCTION estream.produce_batch_binary(topic text, "values" bytea[], keys bytea[] DEFAULT NULL,
											 partition integer DEFAULT NULL, headers jsonb[] DEFAULT NULL,
											 ts timestamptz DEFAULT NULL)
RETURNS SETOF estream.position
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_produce_batch_binary';
COMMENT ON FUNCTION estream.produce_batch_binary(text, bytea[], bytea[], integer, jsonb[], timestamptz) IS
	'Appends many binary records in one call; returns the partition and offset of each, in input order.';

CREATE FUNCTION estream.partition_for(key text, partitions integer)
RETURNS integer
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'estream_partition_for';
COMMENT ON FUNCTION estream.partition_for(text, integer) IS
	'The partition Kafka''s Java client picks for this key (UTF-8 bytes): murmur2 & 0x7fffffff % partitions.';

CREATE FUNCTION estream.partition_for(key bytea, partitions integer)
RETURNS integer
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'estream_partition_for_bytea';
COMMENT ON FUNCTION estream.partition_for(bytea, integer) IS
	'The partition Kafka''s Java client picks for these key bytes: murmur2 & 0x7fffffff % partitions.';

--
-- Fetch
--

CREATE FUNCTION estream.fetch(topic text, partition integer, from_offset bigint,
							  max_records integer DEFAULT 500, wait_ms integer DEFAULT 0,
							  auto_offset_reset text DEFAULT 'earliest',
							  max_bytes integer DEFAULT 52428800)
RETURNS SETOF estream.consumer_record
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_fetch';
COMMENT ON FUNCTION estream.fetch(text, integer, bigint, integer, integer, text, integer) IS
	'Returns committed records of one partition from an offset, below the stable offset; wait_ms > 0 long-polls.';

CREATE FUNCTION estream.fetch_binary(topic text, partition integer, from_offset bigint,
									 max_records integer DEFAULT 500, wait_ms integer DEFAULT 0,
									 auto_offset_reset text DEFAULT 'earliest',
							  max_bytes integer DEFAULT 52428800)
RETURNS SETOF estream.consumer_record_binary
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_fetch_binary';
COMMENT ON FUNCTION estream.fetch_binary(text, integer, bigint, integer, integer, text, integer) IS
	'Like fetch(), with keys and values as bytes (JSON values as their text).';

CREATE FUNCTION estream.watermarks(topic text)
RETURNS TABLE (partition integer, log_start_offset bigint, stable_offset bigint, next_offset bigint)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_watermarks';
COMMENT ON FUNCTION estream.watermarks(text) IS
	'Per partition: first retained offset, stable offset (consumers read below it) and next offset to be assigned.';

CREATE FUNCTION estream.offsets_for_times(topic text, ts timestamptz)
RETURNS TABLE (partition integer, "offset" bigint, "timestamp" timestamptz)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_offsets_for_times';
COMMENT ON FUNCTION estream.offsets_for_times(text, timestamptz) IS
	'Per partition: the first stable offset whose timestamp is at or after ts, or null if none.';

--
-- Views
--

CREATE FUNCTION estream._partition_stats(p_topic_id integer)
RETURNS TABLE (partition integer, records bigint, bytes bigint,
			   oldest_timestamp timestamptz, newest_timestamp timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN QUERY EXECUTE format(
		'SELECT l.partition, count(*), sum(pg_column_size(l.*))::bigint, min(l.ts), max(l.ts)'
		' FROM estream.log_%s l GROUP BY l.partition', p_topic_id);
END
$$;
COMMENT ON FUNCTION estream._partition_stats(integer) IS
	'Record count, size and timestamp range per partition of a topic (scans the log).';

CREATE VIEW estream.topics AS
SELECT t.name AS topic,
	   t.topic_id,
	   t.partitions,
	   t.config,
	   estream.effective_config(t.config) AS effective_config,
	   (SELECT count(*) FROM estream.segment s WHERE s.topic_id = t.topic_id) AS segments,
	   (SELECT coalesce(sum(pg_catalog.pg_total_relation_size(s.relid)), 0)::bigint
		  FROM estream.segment s WHERE s.topic_id = t.topic_id) AS size_bytes,
	   t.created_at
FROM estream.topic t;
COMMENT ON VIEW estream.topics IS
	'Topics with partition count, explicit and effective configuration, segment count and size on disk.';

CREATE VIEW estream.partitions AS
SELECT t.name AS topic,
	   w.partition,
	   w.log_start_offset,
	   w.stable_offset,
	   w.next_offset,
	   coalesce(s.records, 0) AS records,
	   coalesce(s.bytes, 0) AS bytes,
	   s.oldest_timestamp,
	   s.newest_timestamp
FROM estream.topic t
	 CROSS JOIN LATERAL estream.watermarks(t.name) w
	 LEFT JOIN LATERAL estream._partition_stats(t.topic_id) s ON s.partition = w.partition;
COMMENT ON VIEW estream.partitions IS
	'Topic partitions with log start, stable and next offsets, committed record count, size and timestamp range (scans every log).';
