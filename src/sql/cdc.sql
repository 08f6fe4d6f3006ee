-- src/sql/cdc.sql: Change data capture: capture(), uncapture(), resume_capture() and the
-- status of the worker's capture step (docs/cdc.md).
--
-- Replayed by every update script: every statement here must be
-- re-runnable (CREATE OR REPLACE, COMMENT ON).

CREATE OR REPLACE FUNCTION estream._capture_status(
	OUT events bigint, OUT last_commit timestamptz, OUT last_run timestamptz, OUT last_error text,
	OUT caught_up_at timestamptz)
RETURNS SETOF record
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_capture_status';
COMMENT ON FUNCTION estream._capture_status() IS
	'Change events written by this database''s capture step, the last source commit captured, its last run and error, and the start of its last run that captured everything committed before.';

CREATE OR REPLACE FUNCTION estream.capture(source regclass, topic text DEFAULT NULL, options jsonb DEFAULT '{}')
RETURNS text
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.capture(regclass, text, jsonb) IS
	'Starts capturing the changes of a table into a topic (created if missing; by default <database>.<schema>.<table>, escaped), keyed by primary key; returns the topic. Options: snapshot, columns, before, partitions, on_error ("stop" or "skip"). Needs ownership of the table and the create right (new topic) or ownership of the topic.';

CREATE OR REPLACE FUNCTION estream.uncapture(source regclass, if_exists boolean DEFAULT false)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.uncapture(regclass, boolean) IS
	'Stops capturing a table; its topic stays. When no table is captured any more, the worker drops the replication slot. Needs ownership of the table or of its topic, or alter on the cluster.';

--
-- Change data capture
--
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
	-- the worker starts the capture when this transaction commits
	PERFORM estream._wake_capture();
	RETURN v_topic;
END
$$;
COMMENT ON FUNCTION estream._capture_impl(regclass, text, jsonb) IS
	'Body of capture(): needs ownership of the table, and the create right for a new topic or ownership of an existing one.';

-- Who may stop or resume the capture of a table: its owner, the owner of
-- its topic (which may refuse what is written into it) or the cluster's
-- admin.  Returns the captured table: the root of a partitioned source.
CREATE OR REPLACE FUNCTION estream._authorize_capture_change(source regclass, action text)
RETURNS oid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	v_root oid := source::oid;
BEGIN
	IF source IS NULL THEN
		RAISE EXCEPTION 'source must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF (SELECT c.relispartition FROM pg_class c WHERE c.oid = source) THEN
		v_root := pg_partition_root(source);
	END IF;
	IF NOT estream._allowed('alter', 'cluster', NULL, NULL)
	   AND NOT coalesce(pg_has_role(estream._caller(), (SELECT c.relowner FROM pg_class c WHERE c.oid = v_root),
									'USAGE'), false)
	   AND NOT coalesce((SELECT pg_has_role(estream._caller(), t.owner, 'USAGE')
						   FROM estream.capture cp JOIN estream.topic t ON t.topic_id = cp.topic_id
						  WHERE cp.relid = v_root), false) THEN
		RAISE EXCEPTION 'must be owner of table % or of its topic', source
			USING ERRCODE = 'insufficient_privilege',
				  HINT = format('The table''s owner, the topic''s owner, or a role with the alter right on the cluster can %s a capture.', action);
	END IF;
	RETURN v_root;
END
$$;
COMMENT ON FUNCTION estream._authorize_capture_change(regclass, text) IS
	'Checks that the caller may stop or resume the capture of a table (its owner, its topic''s owner or the cluster''s admin); returns the captured table.';

CREATE OR REPLACE FUNCTION estream._uncapture_impl(source regclass, if_exists boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	v_root oid;
BEGIN
	v_root := estream._authorize_capture_change(source, 'stop');
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

CREATE OR REPLACE FUNCTION estream._wake_capture()
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_wake_capture';
COMMENT ON FUNCTION estream._wake_capture() IS
	'Makes the worker''s capture step run as soon as the calling transaction commits (capture(), resume_capture()).';

-- the replication origin's progress, for the captures view
CREATE OR REPLACE FUNCTION estream._capture_origin_lsn()
RETURNS pg_lsn
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_capture_origin_lsn';
COMMENT ON FUNCTION estream._capture_origin_lsn() IS
	'Progress of this database''s capture origin (the source position of the last change written), for roles that may describe the cluster.';

CREATE OR REPLACE FUNCTION estream._capture_position()
RETURNS pg_lsn
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_capture_position';
COMMENT ON FUNCTION estream._capture_position() IS
	'Position of this database''s streaming captures as its worker last wrote it: every source transaction that ended before it is in their topics.';

-- The schema and table parts of a default topic name: characters other
-- than A-Z, a-z, 0-9 and _ become -XX per UTF-8 byte (lower-case hex).
-- "-" never stands for itself, so different names give different parts,
-- and names of those characters only keep their name.
CREATE OR REPLACE FUNCTION estream._topic_name_part(part text)
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

CREATE OR REPLACE FUNCTION estream._resume_capture_impl(source regclass, on_error text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	v_root oid;
	c record;
BEGIN
	v_root := estream._authorize_capture_change(source, 'resume');
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
	PERFORM estream._wake_capture();
END
$$;
COMMENT ON FUNCTION estream._resume_capture_impl(regclass, text) IS
	'Body of resume_capture(): needs ownership of the table or of its topic, or the alter right on the cluster.';

CREATE OR REPLACE FUNCTION estream.resume_capture(source regclass, on_error text DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.resume_capture(regclass, text) IS
	'Starts a stopped capture again, from the source transaction it stopped at (or with a new initial copy, if that failed): no change lost, none twice; on_error, if given, replaces the capture''s policy. Needs ownership of the table or of its topic, or alter on the cluster.';
