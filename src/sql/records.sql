-- src/sql/records.sql: Producing and reading records: the C functions' SQL faces, watermarks,
-- times, the latest value per key.
--
-- Replayed by every update script: every statement here must be
-- re-runnable (CREATE OR REPLACE, COMMENT ON).

CREATE OR REPLACE FUNCTION estream.produce(topic text, value jsonb, key text DEFAULT NULL,
								partition integer DEFAULT NULL, headers jsonb DEFAULT NULL,
								ts timestamptz DEFAULT NULL)
RETURNS estream.position
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_produce';
COMMENT ON FUNCTION estream.produce(text, jsonb, text, integer, jsonb, timestamptz) IS
	'Appends one JSON record to a topic in the current transaction; returns its partition and offset.';

CREATE OR REPLACE FUNCTION estream.produce_binary(topic text, value bytea, key bytea DEFAULT NULL,
									   partition integer DEFAULT NULL, headers jsonb DEFAULT NULL,
									   ts timestamptz DEFAULT NULL)
RETURNS estream.position
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_produce_binary';
COMMENT ON FUNCTION estream.produce_binary(text, bytea, bytea, integer, jsonb, timestamptz) IS
	'Appends one record with a binary key and value; returns its partition and offset.';

CREATE OR REPLACE FUNCTION estream.produce_batch(topic text, "values" jsonb[], keys text[] DEFAULT NULL,
									  partition integer DEFAULT NULL, headers jsonb[] DEFAULT NULL,
									  ts timestamptz DEFAULT NULL)
RETURNS SETOF estream.position
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_produce_batch';
COMMENT ON FUNCTION estream.produce_batch(text, jsonb[], text[], integer, jsonb[], timestamptz) IS
	'Appends many JSON records in one call; returns the partition and offset of each, in input order.';

CREATE OR REPLACE FUNCTION estream.produce_batch_binary(topic text, "values" bytea[], keys bytea[] DEFAULT NULL,
											 partition integer DEFAULT NULL, headers jsonb[] DEFAULT NULL,
											 ts timestamptz DEFAULT NULL)
RETURNS SETOF estream.position
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_produce_batch_binary';
COMMENT ON FUNCTION estream.produce_batch_binary(text, bytea[], bytea[], integer, jsonb[], timestamptz) IS
	'Appends many binary records in one call; returns the partition and offset of each, in input order.';

CREATE OR REPLACE FUNCTION estream.partition_for(key text, partitions integer)
RETURNS integer
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'estream_partition_for';
COMMENT ON FUNCTION estream.partition_for(text, integer) IS
	'The partition Kafka''s Java client picks for this key (UTF-8 bytes): murmur2 & 0x7fffffff % partitions.';

CREATE OR REPLACE FUNCTION estream.partition_for(key bytea, partitions integer)
RETURNS integer
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'estream_partition_for_bytea';
COMMENT ON FUNCTION estream.partition_for(bytea, integer) IS
	'The partition Kafka''s Java client picks for these key bytes: murmur2 & 0x7fffffff % partitions.';

--
-- Fetch
--
CREATE OR REPLACE FUNCTION estream.fetch(topic text, partition integer, from_offset bigint,
							  max_records integer DEFAULT 500, wait_ms integer DEFAULT 0,
							  auto_offset_reset text DEFAULT 'earliest',
							  max_bytes integer DEFAULT 52428800)
RETURNS SETOF estream.consumer_record
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_fetch';
COMMENT ON FUNCTION estream.fetch(text, integer, bigint, integer, integer, text, integer) IS
	'Returns committed records of one partition from an offset, below the stable offset; wait_ms > 0 long-polls.';

CREATE OR REPLACE FUNCTION estream.fetch_binary(topic text, partition integer, from_offset bigint,
									 max_records integer DEFAULT 500, wait_ms integer DEFAULT 0,
									 auto_offset_reset text DEFAULT 'earliest',
							  max_bytes integer DEFAULT 52428800)
RETURNS SETOF estream.consumer_record_binary
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_fetch_binary';
COMMENT ON FUNCTION estream.fetch_binary(text, integer, bigint, integer, integer, text, integer) IS
	'Like fetch(), with keys and values as bytes (JSON values as their text).';

CREATE OR REPLACE FUNCTION estream.watermarks(topic text)
RETURNS TABLE (partition integer, log_start_offset bigint, stable_offset bigint, next_offset bigint)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_watermarks';
COMMENT ON FUNCTION estream.watermarks(text) IS
	'Per partition: first retained offset, stable offset (consumers read below it) and next offset to be assigned.';

CREATE OR REPLACE FUNCTION estream.offsets_for_times(topic text, ts timestamptz)
RETURNS TABLE (partition integer, "offset" bigint, "timestamp" timestamptz)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_offsets_for_times';
COMMENT ON FUNCTION estream.offsets_for_times(text, timestamptz) IS
	'Per partition: the first stable offset whose timestamp is at or after ts, or null if none.';

--
-- Statistics for the views
--
CREATE OR REPLACE FUNCTION estream._partition_stats(p_topic_id integer)
RETURNS TABLE (partition integer, records bigint, bytes bigint,
			   oldest_timestamp timestamptz, newest_timestamp timestamptz)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream._partition_stats(integer) IS
	'Record count, size and timestamp range per partition of a topic the caller may describe (scans the log).';

CREATE OR REPLACE FUNCTION estream._relation_bytes(regclass)
RETURNS bigint
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_relation_bytes';
COMMENT ON FUNCTION estream._relation_bytes(regclass) IS
	'Bytes on disk of a relation with its indexes and TOAST table, as pg_total_relation_size() but building no relation cache entry; null if it does not exist.';

CREATE OR REPLACE FUNCTION estream._last_fetched_offset()
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_last_fetched_offset';
COMMENT ON FUNCTION estream._last_fetched_offset() IS
	'The offset of the last record the last fetch() of this session returned, or null if it returned none (poll() reads it after RETURN QUERY).';

CREATE OR REPLACE FUNCTION estream._wait_for_records(topic text, partitions integer[], from_offsets bigint[],
										  wait_ms integer)
RETURNS boolean
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_wait_for_records';
COMMENT ON FUNCTION estream._wait_for_records(text, integer[], bigint[], integer) IS
	'Waits until one of the partitions has a stable offset above its from_offset, or wait_ms passes.';

--
-- Functions in C
--
CREATE OR REPLACE FUNCTION estream._shared_partitions(
	OUT log_relid oid, OUT partition integer, OUT stable bigint, OUT next bigint,
	OUT inflight integer, OUT oldest_inflight timestamptz)
RETURNS SETOF record
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_shared_partitions';
COMMENT ON FUNCTION estream._shared_partitions() IS
	'Shared-memory state of the partitions of this database touched since server start: stable and next offset, transactions in flight.';

--
-- Latest value per key
--
CREATE OR REPLACE FUNCTION estream._latest_rows(topic text)
RETURNS TABLE (partition integer, "offset" bigint, ts timestamptz, key bytea,
			   value jsonb, value_bin bytea, headers jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_id integer;
BEGIN
	v_id := (estream._topic(topic)).topic_id;
	RETURN QUERY EXECUTE format(
		'SELECT l.partition, l."offset", l.ts, l.key, l.value, l.value_bin, l.headers'
		' FROM (SELECT DISTINCT ON (x.partition, x.key) x.*'
		'         FROM estream.log_%s x WHERE x.key IS NOT NULL'
		'        ORDER BY x.partition, x.key, x."offset" DESC) l'
		' WHERE l.value IS NOT NULL OR l.value_bin IS NOT NULL', v_id);
END
$$;
COMMENT ON FUNCTION estream._latest_rows(text) IS
	'The newest record of every key of a topic, unless it is a tombstone, as stored (for latest() and latest_binary()).';

CREATE OR REPLACE FUNCTION estream.latest(topic text)
RETURNS TABLE (partition integer, "offset" bigint, "timestamp" timestamptz,
			   key text, value jsonb, headers jsonb)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.latest(text) IS
	'The latest record of every key of a topic that is not deleted by a tombstone, in the caller''s snapshot: the table view of a compacted topic (needs read).';

CREATE OR REPLACE FUNCTION estream.latest_binary(topic text)
RETURNS TABLE (partition integer, "offset" bigint, "timestamp" timestamptz,
			   key bytea, value bytea, headers jsonb)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.latest_binary(text) IS
	'Like latest(), with keys and values as bytes (JSON values as their text); needs read.';

CREATE OR REPLACE FUNCTION estream._timestamp_at(topic text, partition integer, from_offset bigint)
RETURNS timestamptz
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_timestamp_at';
COMMENT ON FUNCTION estream._timestamp_at(text, integer, bigint) IS
	'Timestamp of the first committed record at or after an offset (the age of the oldest unconsumed record, for consumer_lag); needs describe.';

CREATE OR REPLACE FUNCTION estream._latest_impl(topic text)
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

CREATE OR REPLACE FUNCTION estream._latest_binary_impl(topic text)
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

-- the statistics of the partitions view: describe on the topic
CREATE OR REPLACE FUNCTION estream._partition_stats_impl(p_topic_id integer)
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

--
-- Shared partition slots (1.4): bounded by the partitions in use, not by
-- those that exist.  Readers take no slot; idle slots are evicted and
-- initialized again from what is stored; records removed by retention and
-- compaction leave the persisted stable offset above them.
--
CREATE OR REPLACE FUNCTION estream._stable_offsets(topic text,
	OUT partition integer, OUT stable bigint)
RETURNS SETOF record
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_stable_offsets';
COMMENT ON FUNCTION estream._stable_offsets(text) IS
	'Stable offset of every partition of a topic, from shared memory or, for a partition without a slot, from storage (taking no slot); for compaction.';

CREATE OR REPLACE FUNCTION estream._partition_slots(
	OUT slots integer, OUT used integer, OUT held integer, OUT this_database integer,
	OUT created bigint, OUT evicted bigint, OUT reclaimed bigint, OUT refused bigint,
	OUT evicted_unpersisted integer, OUT evicted_lost bigint)
RETURNS SETOF record
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_partition_slots';
COMMENT ON FUNCTION estream._partition_slots() IS
	'Use of the shared partition slots of the server, for roles that may describe the cluster (no row for others).';
