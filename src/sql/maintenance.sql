-- src/sql/maintenance.sql: The background worker and its maintenance steps: rolling, sealing,
-- retention, compaction, persisted offsets.
--
-- Replayed by every update script: every statement here must be
-- re-runnable (CREATE OR REPLACE, COMMENT ON).

CREATE OR REPLACE FUNCTION estream._rewrite_segment(segment regclass, partitions integer[], offsets bigint[])
RETURNS bigint
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_rewrite_segment';
COMMENT ON FUNCTION estream._rewrite_segment(regclass, integer[], bigint[]) IS
	'Compaction: rewrites a segment without the given records (survivors frozen, no dead tuples); -1 if the segment is in use.';

CREATE OR REPLACE FUNCTION estream._truncate_segment(segment regclass)
RETURNS boolean
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_truncate_segment';
COMMENT ON FUNCTION estream._truncate_segment(regclass) IS
	'Retention: empties a segment as its owner unless it is in use (false then).';

CREATE OR REPLACE FUNCTION estream._start_worker()
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_start_worker';
COMMENT ON FUNCTION estream._start_worker() IS
	'Asks the launcher to start this database''s worker once the current transaction commits.';

CREATE OR REPLACE FUNCTION estream._worker_status(
	OUT datid oid, OUT kind text, OUT pid integer, OUT state text,
	OUT started_at timestamptz, OUT last_run_at timestamptz, OUT last_run_ms double precision,
	OUT naptime_ms integer, OUT runs bigint,
	OUT offsets_persisted bigint, OUT segments_rolled bigint, OUT segments_deleted bigint,
	OUT records_compacted bigint, OUT segments_dropped bigint, OUT markers_reaped bigint,
	OUT sessions_terminated bigint, OUT errors bigint, OUT last_error text,
	OUT last_error_at timestamptz)
RETURNS SETOF record
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_worker_status';
COMMENT ON FUNCTION estream._worker_status() IS
	'State of the estream launcher and of every database worker (source of estream.workers).';

--
-- Maintenance steps, run by the worker one transaction each, or all at
-- once by estream.run_maintenance().
--
CREATE OR REPLACE FUNCTION estream._require_read_committed()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF current_setting('transaction_isolation') <> 'read committed' THEN
		RAISE EXCEPTION 'estream maintenance requires READ COMMITTED'
			USING ERRCODE = 'invalid_transaction_state',
				  DETAIL = format('The transaction runs at %s; retention and compaction must see records committed after the transaction started.',
								  upper(current_setting('transaction_isolation'))),
				  HINT = 'Run it in a READ COMMITTED transaction.';
	END IF;
END
$$;
COMMENT ON FUNCTION estream._require_read_committed() IS
	'Raises an error unless the transaction is READ COMMITTED.';

CREATE OR REPLACE FUNCTION estream._try_lock(rel text, mode text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
-- @plpgsql_check_options: security_warnings = false
-- (sql/lint.sql) rel is a list of relations for one LOCK statement, so it
-- cannot be a regclass or a %I: every caller builds it with format() from
-- estream's integer ids (estream.log_<topic>_<segment>), mode is a literal,
-- and no role but the extension's owner may call this (grants.sql).
DECLARE
	v_ms integer;
	v_old text := current_setting('lock_timeout');
BEGIN
	-- estream.maintenance_lock_timeout: how long a step may queue for a
	-- lock that readers hold (they queue behind it meanwhile); 0: never
	SELECT s.setting::integer INTO v_ms FROM pg_settings s
	 WHERE s.name = 'estream.maintenance_lock_timeout';
	IF coalesce(v_ms, 0) <= 0 THEN
		EXECUTE format('LOCK TABLE %s IN %s MODE NOWAIT', rel, mode);
	ELSE
		-- local to the block: an error undoes it
		PERFORM set_config('lock_timeout', v_ms::text, true);
		EXECUTE format('LOCK TABLE %s IN %s MODE', rel, mode);
		PERFORM set_config('lock_timeout', v_old, true);
	END IF;
	RETURN true;
EXCEPTION WHEN lock_not_available THEN
	RETURN false;
END
$$;
COMMENT ON FUNCTION estream._try_lock(text, text) IS
	'Locks relations for a maintenance step without waiting, or waiting at most estream.maintenance_lock_timeout; false if not granted.';

CREATE OR REPLACE FUNCTION estream._persist_watermarks()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_n bigint;
BEGIN
	-- never backwards: a fresh entry after a restart starts at or above it
	UPDATE estream.partition p
	   SET stable_offset = w.stable, end_offset = w.next, persisted_at = clock_timestamp()
	  FROM estream._shared_partitions() w
	  JOIN estream.topic t ON t.log_relid::oid = w.log_relid
	 WHERE p.topic_id = t.topic_id AND p.partition = w.partition
	   AND w.stable >= p.stable_offset
	   AND (p.stable_offset <> w.stable OR p.end_offset <> w.next);
	GET DIAGNOSTICS v_n = ROW_COUNT;
	RETURN v_n;
END
$$;
COMMENT ON FUNCTION estream._persist_watermarks() IS
	'Writes the stable and next offset of every partition touched since start into estream.partition; returns the rows changed.';

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
	v_checked timestamptz;
	v_n bigint := 0::bigint;
	v_failing integer[] := ARRAY(SELECT e.topic_id FROM estream.maintenance_error e WHERE e.step = 'roll segments');
BEGIN
	-- Costs follow work (issue 14): a current segment is looked at again
	-- only when records were persisted into its topic since the last look
	-- (its size or emptiness may have changed), when it is known to hold
	-- records and has grown old, when it was never looked at, or when the
	-- topic had an error.  An idle topic costs one row of this query.
	FOR r IN SELECT t.topic_id, t.partitions, t.current_segment, t.config, s.created_at,
					s.roll_checked_at,
					format('estream.log_%s_%s', t.topic_id, t.current_segment) AS rel
			   FROM estream.topic t
			   JOIN estream.segment s ON s.topic_id = t.topic_id AND s.segment = t.current_segment
			   LEFT JOIN (SELECT p.topic_id, max(p.persisted_at) AS persisted_at
							FROM estream.partition p GROUP BY p.topic_id) a ON a.topic_id = t.topic_id
			   -- one row even without the option's row
			   CROSS JOIN (SELECT max(o.default_value) FILTER (WHERE o.name = 'segment.ms') AS ms
							 FROM estream.config_option o) d
			   CROSS JOIN LATERAL (SELECT coalesce(t.config->>'segment.ms', d.ms) AS ms) v
			  WHERE (p_topic_id IS NULL OR t.topic_id = p_topic_id)
				AND (p_topic_id IS NOT NULL
					 OR t.topic_id = ANY (v_failing)
					 OR s.roll_checked_at IS NULL
					 OR a.persisted_at >= s.roll_checked_at
					 -- records whose persisted watermark was lost (a crash, an
					 -- evicted slot overwritten) or a clock stepped back: every
					 -- segment is looked at again at least once an hour
					 OR s.roll_checked_at < clock_timestamp() - interval '1 hour'
					 -- known to hold records and older than segment.ms (as
					 -- _ms_ago(), written out to be evaluated inline); a value
					 -- that is not a number is looked at: the step reports it
					 OR CASE WHEN v.ms ~ '^[0-9]{14,18}$' THEN false
							 WHEN v.ms ~ '^[0-9]{1,13}$'
							 THEN s.has_records AND s.created_at <= clock_timestamp() - v.ms::bigint * interval '1 millisecond'
							 ELSE true END
					 OR coalesce(t.config->>'segment.bytes', '0') !~ '^-?[0-9]{1,18}$')
			  ORDER BY t.topic_id
	LOOP
		BEGIN
			-- undone with the block if the step fails on the topic again
			PERFORM estream._step_succeeded(r.topic_id, 'roll segments', v_failing);
			cfg := estream.effective_config(r.config);
			CONTINUE WHEN to_regclass(r.rel) IS NULL;	-- topic being dropped
			-- what this look saw; records persisted from now on bring it back
			v_checked := clock_timestamp();
			-- like Kafka, an empty segment is never rolled
			EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', r.rel::regclass) INTO v_nonempty;
			IF NOT (v_nonempty AND (
				r.created_at <= estream._ms_ago(clock_timestamp(), (cfg->>'segment.ms')::bigint)
				OR pg_total_relation_size(r.rel::regclass) >= (cfg->>'segment.bytes')::numeric * r.partitions)) THEN
				-- not over an alter_topic() that committed meanwhile (it reset
				-- roll_checked_at: the next run looks again)
				UPDATE estream.segment s SET roll_checked_at = v_checked, has_records = v_nonempty
				 WHERE s.topic_id = r.topic_id AND s.segment = r.current_segment
				   AND s.roll_checked_at IS NOT DISTINCT FROM r.roll_checked_at;
				CONTINUE;
			END IF;
			-- skip a topic that is being altered or dropped
			PERFORM 1 FROM estream.topic t
			  WHERE t.topic_id = r.topic_id AND t.current_segment = r.current_segment
			  FOR NO KEY UPDATE SKIP LOCKED;
			CONTINUE WHEN NOT FOUND;

			-- Hold the old segment until this transaction's invalidations are
			-- out (they are sent after it becomes visible, before its locks
			-- go): sealing it needs a lock that waits for this one.
			EXECUTE format('LOCK TABLE %s IN ROW EXCLUSIVE MODE', r.rel::regclass);
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
COMMENT ON FUNCTION estream._roll_segments(integer) IS
	'Starts a new segment for every topic whose current one is older than segment.ms or larger than segment.bytes per partition; returns how many.';

CREATE OR REPLACE FUNCTION estream._seal_segments(p_topic_id integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	r record;
	v_n bigint := 0::bigint;
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
COMMENT ON FUNCTION estream._seal_segments(integer) IS
	'Marks closed segments that no transaction writes to any more as sealed; returns how many.';

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
	v_n bigint := 0::bigint;
	v_failing integer[] := ARRAY(SELECT e.topic_id FROM estream.maintenance_error e WHERE e.step = 'apply retention');
BEGIN
	PERFORM estream._require_read_committed();
	-- Costs follow work (issue 14): only topics with a closed segment that
	-- retention by time may delete already, or with retention by size, or
	-- with an error, are looked at.
	FOR t IN SELECT tp.topic_id, tp.partitions, tp.config, tp.log_relid, tp.current_segment
			   FROM estream.topic tp
			   CROSS JOIN (SELECT max(o.default_value) FILTER (WHERE o.name = 'retention.ms') AS ms,
								  max(o.default_value) FILTER (WHERE o.name = 'retention.bytes') AS bytes,
								  max(o.default_value) FILTER (WHERE o.name = 'cleanup.policy') AS policy
							 FROM estream.config_option o) d
			   CROSS JOIN LATERAL (SELECT coalesce(tp.config->>'retention.ms', d.ms) AS ms,
										  coalesce(tp.config->>'retention.bytes', d.bytes) AS bytes,
										  coalesce(tp.config->>'cleanup.policy', d.policy) AS policy) v
			  WHERE (p_topic_id IS NULL OR tp.topic_id = p_topic_id)
				AND (p_topic_id IS NOT NULL
					 OR tp.topic_id = ANY (v_failing)
					 -- a value that is not a number: the step reports it
					 OR v.ms !~ '^-?[0-9]{1,18}$' OR v.bytes !~ '^-?[0-9]{1,18}$'
					 OR (position('delete' IN v.policy) > 0
						 AND EXISTS (SELECT 1 FROM estream.segment sg
									  WHERE sg.topic_id = tp.topic_id AND sg.segment < tp.current_segment
										AND sg.truncated_at IS NULL AND sg.sealed_at IS NOT NULL
										AND CASE WHEN v.bytes !~ '^-?[0-9]{1,18}$' OR v.ms !~ '^-?[0-9]{1,18}$' THEN true
												 WHEN v.bytes::bigint >= 0 THEN true
												 WHEN v.ms ~ '^[0-9]{1,13}$'
												 THEN sg.sealed_at <= clock_timestamp() - v.ms::bigint * interval '1 millisecond'
												 ELSE false END)))
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

			SELECT coalesce(sum(pg_total_relation_size(sg.relid)), 0)::bigint INTO v_total
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
							   s.rel::regclass)
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

CREATE OR REPLACE FUNCTION estream._drop_empty_segments(p_topic_id integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	r record;
	v_nonempty boolean;
	v_n bigint := 0::bigint;
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
			EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', r.relid::regclass) INTO v_nonempty;
			IF v_nonempty THEN
				-- cannot happen once sealed; let retention look at it again
				UPDATE estream.segment s SET truncated_at = NULL
				 WHERE s.topic_id = r.topic_id AND s.segment = r.segment;
				CONTINUE;
			END IF;
			EXECUTE format('DROP TABLE %s', r.relid::regclass);
			DELETE FROM estream.segment s WHERE s.topic_id = r.topic_id AND s.segment = r.segment;
			v_n := v_n + 1;
		EXCEPTION WHEN OTHERS THEN
			PERFORM estream._step_failed(r.topic_id, 'drop empty segments', SQLSTATE, SQLERRM);
		END;
	END LOOP;
	RETURN v_n;
END
$$;
COMMENT ON FUNCTION estream._drop_empty_segments(integer) IS
	'Drops segments that retention emptied, when their log is not in use; returns how many.';

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
	v_n bigint := 0::bigint;
	v_failing integer[] := ARRAY(SELECT e.topic_id FROM estream.maintenance_error e WHERE e.step = 'compact');
BEGIN
	PERFORM estream._require_read_committed();
	-- only compacted topics, and those with an error (issue 14)
	FOR t IN SELECT tp.topic_id, tp.name, tp.config, tp.log_relid, tp.current_segment, c.checked_at
			   FROM estream.topic tp
			   LEFT JOIN estream.compaction c ON c.topic_id = tp.topic_id
			  WHERE (p_topic_id IS NULL OR tp.topic_id = p_topic_id)
				AND (p_topic_id IS NOT NULL
					 OR tp.topic_id = ANY (v_failing)
					 OR position('compact' IN coalesce(tp.config->>'cleanup.policy',
						(SELECT o.default_value FROM estream.config_option o WHERE o.name = 'cleanup.policy'))) > 0)
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

--
-- Administration
--
CREATE OR REPLACE FUNCTION estream.run_maintenance(topic text DEFAULT NULL)
RETURNS TABLE (step text, done bigint)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.run_maintenance(text) IS
	'Runs the worker''s maintenance steps now, in this transaction, for one topic or all; returns what each step did. Needs the cluster_action right on the cluster.';

CREATE OR REPLACE FUNCTION estream._run_maintenance_impl(topic text)
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
		v_id := (estream._topic(topic)).topic_id;
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

--
-- Robustness (issue 12): one topic never stops maintenance of the others.
-- Each step handles each topic (or segment) in its own subtransaction; an
-- error is recorded against the topic in estream.maintenance_error (shown
-- by estream.maintenance_errors) and the step goes on.  Times in
-- milliseconds are compared through _ms_ago(), which the largest values
-- (Kafka's Long.MAX_VALUE, meaning "never") cannot overflow; sizes are
-- multiplied in numeric.
--
CREATE OR REPLACE FUNCTION estream._ms_ago(p_now timestamptz, p_ms bigint)
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

CREATE OR REPLACE FUNCTION estream._step_failed(p_topic_id integer, p_step text, p_sqlstate text, p_message text)
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

CREATE OR REPLACE FUNCTION estream._step_succeeded(p_topic_id integer, p_step text, p_failing integer[])
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

CREATE OR REPLACE FUNCTION estream._worker_state()
RETURNS text
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_worker_state';
COMMENT ON FUNCTION estream._worker_state() IS
	'The state of this database''s worker (idle, running, disabled, failed, paused, ...; not started when it has none yet, no free worker slot when it cannot get one), for the status of what depends on it.';

-- What keeps this database's worker from running, or NULL while it runs
-- or is about to (starting, paused for a moment, not started yet).
CREATE OR REPLACE FUNCTION estream._worker_missing()
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT CASE WHEN s.s IN ('starting', 'running', 'idle', 'paused', 'not started') THEN NULL ELSE s.s END
FROM (SELECT estream._worker_state() AS s) s
$$;
COMMENT ON FUNCTION estream._worker_missing() IS
	'Why this database''s estream worker does not run (disabled, failed, no free worker slot, not preloaded, waiting for an update), or NULL while it runs.';
