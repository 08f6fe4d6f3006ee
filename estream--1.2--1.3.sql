/* estream--1.2--1.3.sql: change data capture from tables into topics */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION estream UPDATE TO '1.3'" to load this file. \quit

-- The output plugin reads this table while decoding, with the historic
-- snapshot of each change: it must be a user catalog table, and its first
-- four columns keep their positions.
CREATE TABLE estream.capture (
	relid oid PRIMARY KEY,
	topic text NOT NULL,
	with_before boolean NOT NULL DEFAULT true,
	columns text[],
	topic_id integer NOT NULL REFERENCES estream.topic ON DELETE CASCADE,
	source_schema name NOT NULL,
	source_table name NOT NULL,
	initial_snapshot boolean NOT NULL DEFAULT true,
	snapshot pg_catalog.pg_snapshot,
	snapshot_rows bigint,
	created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	activated_at timestamptz
) WITH (user_catalog_table = true);
COMMENT ON TABLE estream.capture IS
	'One row per captured table: its topic, options, and the snapshot that separates its initial copy from the stream of changes.';
-- Not dumped: rows name tables by OID, which a restore changes; capture the
-- tables again after restoring.

-- The output plugin caches what is captured; a relcache invalidation of
-- estream.capture, replayed by decoding where the change committed, makes it
-- look again.
CREATE TRIGGER capture_invalidate
	AFTER INSERT OR UPDATE OR DELETE ON estream.capture
	FOR EACH ROW EXECUTE FUNCTION estream._topic_invalidate();
CREATE TRIGGER capture_invalidate_truncate
	AFTER TRUNCATE ON estream.capture
	FOR EACH STATEMENT EXECUTE FUNCTION estream._topic_invalidate();
ALTER TABLE estream.capture ENABLE ALWAYS TRIGGER capture_invalidate;
ALTER TABLE estream.capture ENABLE ALWAYS TRIGGER capture_invalidate_truncate;
COMMENT ON TRIGGER capture_invalidate ON estream.capture IS
	'Makes decoding sessions look again at what is captured when a capture is added, changed or removed.';
COMMENT ON TRIGGER capture_invalidate_truncate ON estream.capture IS
	'Makes decoding sessions look again at what is captured when estream.capture is truncated.';

CREATE FUNCTION estream._capture_status(
	OUT events bigint, OUT last_commit timestamptz, OUT last_run timestamptz, OUT last_error text,
	OUT caught_up_at timestamptz)
RETURNS SETOF record
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_capture_status';
COMMENT ON FUNCTION estream._capture_status() IS
	'Change events written by this database''s capture step, the last source commit captured, its last run and error, and the start of its last run that captured everything committed before.';

CREATE FUNCTION estream.capture(source regclass, topic text DEFAULT NULL, options jsonb DEFAULT '{}')
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c record;
	v_root oid;
	v_topic text := capture.topic;
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

	SELECT cl.relkind, cl.relpersistence, cl.relispartition, n.nspname, cl.relname INTO c
	  FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace WHERE cl.oid = source;
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

	-- a partition is captured as its root (every partition, one topic)
	v_root := source;
	IF c.relispartition THEN
		v_root := pg_partition_root(source);
		RAISE NOTICE 'capturing partitioned table "%", the root of "%"', v_root::regclass, source;
		SELECT n.nspname, cl.relname INTO c.nspname, c.relname
		  FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace WHERE cl.oid = v_root;
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
	-- a row can be large: a new topic takes records up to 64 MB
	IF NOT EXISTS (SELECT 1 FROM estream.topic tp WHERE tp.name = v_topic) THEN
		PERFORM estream.create_topic(v_topic, v_partitions, '{"max.message.bytes": 67108864}');
	ELSIF position('compact' IN estream.effective_config(
			(SELECT tp.config FROM estream.topic tp WHERE tp.name = v_topic))->>'cleanup.policy') > 0
		  AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = v_root AND i.indisprimary) THEN
		RAISE EXCEPTION 'table "%" has no primary key, which compacted topic "%" needs', v_root::regclass, v_topic
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Its events would have no key, and a compacted topic keeps the latest record per key.';
	END IF;

	INSERT INTO estream.capture (relid, topic, with_before, columns, topic_id, source_schema,
								 source_table, initial_snapshot)
	SELECT v_root, v_topic, v_before, v_columns, t.topic_id, c.nspname, c.relname, v_snapshot
	  FROM estream.topic t WHERE t.name = v_topic;
	RETURN v_topic;
END
$$;
COMMENT ON FUNCTION estream.capture(regclass, text, jsonb) IS
	'Starts capturing the changes of a table into a topic (created if missing; by default <database>.<schema>.<table>), keyed by primary key; returns the topic.';

CREATE FUNCTION estream.uncapture(source regclass, if_exists boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_root oid := source;
BEGIN
	IF source IS NULL THEN
		RAISE EXCEPTION 'source must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF (SELECT relispartition FROM pg_class WHERE oid = source) THEN
		v_root := pg_partition_root(source);
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
COMMENT ON FUNCTION estream.uncapture(regclass, boolean) IS
	'Stops capturing a table; its topic stays. When no table is captured any more, the worker drops the replication slot.';

-- Called by the worker in a REPEATABLE READ transaction, after every
-- transaction that committed before the capture was visible has ended:
-- records the snapshot that cuts between copy and stream, and copies what
-- it sees as "r" events.
CREATE FUNCTION estream._capture_activate(p_relid oid)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c record;
	v_pk text[];
	v_ident text[];
	v_rows bigint := 0;
	v_key text;
	v_cols text;
BEGIN
	SELECT * INTO c FROM estream.capture cp WHERE cp.relid = p_relid FOR UPDATE;
	IF NOT FOUND OR c.snapshot IS NOT NULL THEN
		RETURN 0;
	END IF;
	-- the table was dropped before its copy: the capture ends
	IF NOT EXISTS (SELECT 1 FROM pg_class cl WHERE cl.oid = p_relid) THEN
		DELETE FROM estream.capture cp WHERE cp.relid = p_relid;
		RETURN 0;
	END IF;
	IF c.initial_snapshot THEN
		SELECT array_agg(a.attname::text ORDER BY a.attnum) INTO v_pk
		  FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
		 WHERE i.indrelid = p_relid AND i.indisprimary;
		-- as in the stream: with REPLICA IDENTITY USING INDEX on an index
		-- that does not cover the primary key, that index's columns
		SELECT array_agg(a.attname::text ORDER BY a.attnum) INTO v_ident
		  FROM pg_class cl
			   JOIN pg_index i ON i.indrelid = cl.oid AND i.indisreplident
			   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
		 WHERE cl.oid = p_relid AND cl.relreplident = 'i';
		IF v_ident IS NOT NULL AND (v_pk IS NULL OR NOT v_pk <@ v_ident) THEN
			v_pk := v_ident;
		END IF;
		v_key := CASE WHEN v_pk IS NULL THEN 'NULL::text'
					  ELSE format('jsonb_build_object(%s)::text',
								  (SELECT string_agg(format('%L, x.full -> %L', k, k), ', ') FROM unnest(v_pk) k))
				 END;
		v_cols := CASE WHEN c.columns IS NULL THEN 'x.full'
					   ELSE format('(SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(x.full) e WHERE e.key = ANY (%L::text[]))',
								   c.columns)
				  END;
		EXECUTE format($q$
			SELECT count(*) FROM (
				SELECT estream.produce_batch(%L, array_agg(y.v ORDER BY y.n), array_agg(y.k ORDER BY y.n))
				  FROM (SELECT row_number() OVER () AS n,
							   jsonb_build_object(
								 'before', NULL, 'after', %s, 'op', 'r',
								 'source', jsonb_build_object('version', 'estream-1.3', 'connector', 'estream',
									 'name', current_database(), 'db', current_database(),
									 'schema', %L, 'table', %L, 'txId', NULL,
									 'lsn', pg_current_wal_lsn() - '0/0', 'ts_ms', $1, 'snapshot', 'true'),
								 'ts_ms', $1) AS v,
							   %s AS k
						  FROM (SELECT to_jsonb(estream_source_row.*) AS full
								  FROM %s estream_source_row) x) y
				 GROUP BY (y.n - 1) / 1000) z
			$q$, c.topic, v_cols, c.source_schema, c.source_table, v_key, p_relid::regclass)
			INTO v_rows
			USING (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
	END IF;
	UPDATE estream.capture cp
	   SET snapshot = pg_current_snapshot(), snapshot_rows = v_rows, activated_at = clock_timestamp()
	 WHERE cp.relid = p_relid;
	RETURN v_rows;
END
$$;
COMMENT ON FUNCTION estream._capture_activate(oid) IS
	'Worker: records the snapshot that separates a capture''s initial copy from its stream, and makes the copy (op "r").';

CREATE VIEW estream.captures AS
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
	   o.remote_lsn AS origin_lsn,
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
	 LEFT JOIN pg_catalog.pg_replication_slots s
		ON s.slot_name OPERATOR(pg_catalog.=) ('estream_' OPERATOR(pg_catalog.||)
			(SELECT d.oid FROM pg_catalog.pg_database d
			  WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())::text)
	 LEFT JOIN pg_catalog.pg_replication_origin_status o
		ON o.external_id OPERATOR(pg_catalog.=) s.slot_name
	 LEFT JOIN estream._capture_status() st ON true;
COMMENT ON VIEW estream.captures IS
	'Captured tables with their topic, state, the slot''s confirmed position and origin progress, lag in bytes and seconds, and the worker''s capture progress.';

REVOKE EXECUTE ON FUNCTION estream._capture_activate(oid)
FROM PUBLIC;
