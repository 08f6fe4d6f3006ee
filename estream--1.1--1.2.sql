/* estream--1.1--1.2.sql: background worker, segment rolling, retention,
 * compaction, latest value per key, persisted stable offsets */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION estream UPDATE TO '1.2'" to load this file. \quit

--
-- Persisted state
--

ALTER TABLE estream.partition
	ADD COLUMN stable_offset bigint NOT NULL DEFAULT 0,
	ADD COLUMN end_offset bigint NOT NULL DEFAULT 0,
	ADD COLUMN persisted_at timestamptz;
COMMENT ON COLUMN estream.partition.stable_offset IS
	'Stable offset last persisted by the worker: readers on a standby read below it, and offsets below it are never handed out again.';
COMMENT ON COLUMN estream.partition.end_offset IS
	'Next offset to be assigned, as last persisted by the worker.';
COMMENT ON COLUMN estream.partition.persisted_at IS
	'When the worker last persisted stable_offset and end_offset.';

ALTER TABLE estream.segment
	ADD COLUMN closed_at timestamptz,
	ADD COLUMN sealed_at timestamptz,
	ADD COLUMN truncated_at timestamptz;
COMMENT ON COLUMN estream.segment.closed_at IS
	'When the worker started the next segment; producers move on from then.';
COMMENT ON COLUMN estream.segment.sealed_at IS
	'When no transaction could write to the segment any more; retention counts from here.';
COMMENT ON COLUMN estream.segment.truncated_at IS
	'When retention emptied the segment; the empty table is dropped when its log is not in use.';

--
-- Functions in C
--

CREATE FUNCTION estream._shared_partitions(
	OUT log_relid oid, OUT partition integer, OUT stable bigint, OUT next bigint,
	OUT inflight integer, OUT oldest_inflight timestamptz)
RETURNS SETOF record
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_shared_partitions';
COMMENT ON FUNCTION estream._shared_partitions() IS
	'Shared-memory state of the partitions of this database touched since server start: stable and next offset, transactions in flight.';

CREATE FUNCTION estream._rewrite_segment(segment regclass, partitions integer[], offsets bigint[])
RETURNS bigint
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_rewrite_segment';
COMMENT ON FUNCTION estream._rewrite_segment(regclass, integer[], bigint[]) IS
	'Compaction: rewrites a segment without the given records (survivors frozen, no dead tuples); -1 if the segment is in use.';

CREATE FUNCTION estream._truncate_segment(segment regclass)
RETURNS boolean
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_truncate_segment';
COMMENT ON FUNCTION estream._truncate_segment(regclass) IS
	'Retention: empties a segment as its owner unless it is in use (false then).';

CREATE FUNCTION estream._start_worker()
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_start_worker';
COMMENT ON FUNCTION estream._start_worker() IS
	'Asks the launcher to start this database''s worker once the current transaction commits.';

CREATE FUNCTION estream._worker_status(
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

CREATE FUNCTION estream._require_read_committed()
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

CREATE FUNCTION estream._try_lock(rel text, mode text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
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

CREATE FUNCTION estream._persist_watermarks()
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

CREATE FUNCTION estream._add_segment(p_topic_id integer, p_segment integer)
RETURNS regclass
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	rel text := format('estream.log_%s_%s', p_topic_id, p_segment);
	v_prev regclass;
	v_owner name;
	g record;
BEGIN
	-- CREATE TABLE ... PARTITION OF would lock the whole log exclusively;
	-- ATTACH PARTITION takes a lock that producers and readers do not mind.
	EXECUTE format('CREATE TABLE %s (LIKE estream.log_%s)', rel, p_topic_id);
	EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (partition, "offset")', rel);

	-- same owner and rights as the segment it follows
	SELECT s.relid INTO v_prev FROM estream.segment s
	 WHERE s.topic_id = p_topic_id ORDER BY s.segment DESC LIMIT 1;
	IF v_prev IS NOT NULL THEN
		SELECT r.rolname INTO v_owner FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
		 WHERE c.oid = v_prev;
		EXECUTE format('ALTER TABLE %s OWNER TO %I', rel, v_owner);
		FOR g IN SELECT a.privilege_type, a.grantee, a.is_grantable
				   FROM pg_class c, aclexplode(c.relacl) a
				  WHERE c.oid = v_prev AND a.grantee <> c.relowner
		LOOP
			EXECUTE format('GRANT %s ON %s TO %s%s', g.privilege_type, rel,
						   CASE WHEN g.grantee = 0 THEN 'PUBLIC'
								ELSE quote_ident((SELECT rolname FROM pg_roles WHERE oid = g.grantee)) END,
						   CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
		END LOOP;
	END IF;

	EXECUTE format('ALTER TABLE estream.log_%s ATTACH PARTITION %s FOR VALUES FROM (%s) TO (%s)',
				   p_topic_id, rel, p_segment, p_segment + 1);
	INSERT INTO estream.segment (topic_id, segment, relid) VALUES (p_topic_id, p_segment, rel::regclass);
	RETURN rel::regclass;
END
$$;
COMMENT ON FUNCTION estream._add_segment(integer, integer) IS
	'Creates a segment and attaches it to the topic''s log without blocking producers or readers.';

CREATE FUNCTION estream._roll_segments(p_topic_id integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r record;
	cfg jsonb;
	v_nonempty boolean;
	v_n bigint := 0;
BEGIN
	FOR r IN SELECT t.topic_id, t.partitions, t.current_segment, t.config, s.created_at,
					format('estream.log_%s_%s', t.topic_id, t.current_segment) AS rel
			   FROM estream.topic t
			   JOIN estream.segment s ON s.topic_id = t.topic_id AND s.segment = t.current_segment
			  WHERE p_topic_id IS NULL OR t.topic_id = p_topic_id
			  ORDER BY t.topic_id
	LOOP
		cfg := estream.effective_config(r.config);
		CONTINUE WHEN to_regclass(r.rel) IS NULL;	-- topic being dropped
		-- like Kafka, an empty segment is never rolled
		EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', r.rel) INTO v_nonempty;
		CONTINUE WHEN NOT v_nonempty;
		CONTINUE WHEN NOT (
			clock_timestamp() - r.created_at >= (cfg->>'segment.ms')::bigint * interval '1 millisecond'
			OR pg_total_relation_size(r.rel::regclass) >= (cfg->>'segment.bytes')::bigint * r.partitions);
		-- skip a topic that is being altered or dropped
		PERFORM 1 FROM estream.topic t
		  WHERE t.topic_id = r.topic_id AND t.current_segment = r.current_segment
		  FOR NO KEY UPDATE SKIP LOCKED;
		CONTINUE WHEN NOT FOUND;

		-- Hold the old segment until this transaction's invalidations are
		-- out (they are sent after it becomes visible, before its locks go):
		-- sealing it needs a lock that waits for this one.
		EXECUTE format('LOCK TABLE %s IN ROW EXCLUSIVE MODE', r.rel);
		PERFORM estream._add_segment(r.topic_id, r.current_segment + 1);
		UPDATE estream.segment s SET closed_at = clock_timestamp()
		 WHERE s.topic_id = r.topic_id AND s.segment = r.current_segment;
		-- the topic trigger makes producers move to the new segment
		UPDATE estream.topic t SET current_segment = r.current_segment + 1
		 WHERE t.topic_id = r.topic_id;
		v_n := v_n + 1;
	END LOOP;
	RETURN v_n;
END
$$;
COMMENT ON FUNCTION estream._roll_segments(integer) IS
	'Starts a new segment for every topic whose current one is older than segment.ms or larger than segment.bytes per partition; returns how many.';

CREATE FUNCTION estream._seal_segments(p_topic_id integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r record;
	v_n bigint := 0;
BEGIN
	-- A closed segment is sealed once no transaction holds it: producers
	-- that lock it from then on see the new segment and go there.  Not in
	-- the transaction that closed it (its change is not visible yet).
	FOR r IN SELECT s.topic_id, s.segment FROM estream.segment s
			  WHERE s.closed_at IS NOT NULL AND s.sealed_at IS NULL AND s.closed_at < now()
				AND (p_topic_id IS NULL OR s.topic_id = p_topic_id)
			  ORDER BY s.topic_id, s.segment
	LOOP
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
	END LOOP;
	RETURN v_n;
END
$$;
COMMENT ON FUNCTION estream._seal_segments(integer) IS
	'Marks closed segments that no transaction writes to any more as sealed; returns how many.';

CREATE FUNCTION estream._apply_retention(p_topic_id integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
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
BEGIN
	PERFORM estream._require_read_committed();
	FOR t IN SELECT tp.topic_id, tp.partitions, tp.config, tp.log_relid, tp.current_segment
			   FROM estream.topic tp
			  WHERE p_topic_id IS NULL OR tp.topic_id = p_topic_id
			  ORDER BY tp.topic_id
	LOOP
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
			EXIT WHEN NOT ((v_ms >= 0 AND s.sealed_at <= clock_timestamp() - v_ms * interval '1 millisecond')
						   OR (v_bytes >= 0 AND v_total - v_size >= v_bytes * t.partitions));

			-- Every offset up to the segment's highest must have ended: a
			-- transaction still in flight below it would commit a record
			-- under the new log start.  The segment is sealed, so its
			-- highest offsets cannot change; the stable offsets are read
			-- before the statements below, which then see every record
			-- under them.
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
				UPDATE estream.partition p
				   SET log_start_offset = greatest(p.log_start_offset,
												   least(coalesce(v_min, v_maxes[i] + 1), v_maxes[i] + 1))
				 WHERE p.topic_id = t.topic_id AND p.partition = v_parts[i];
			END LOOP;

			UPDATE estream.segment sg SET truncated_at = clock_timestamp()
			 WHERE sg.topic_id = t.topic_id AND sg.segment = s.segment;
			v_total := v_total - v_size;
			v_n := v_n + 1;
		END LOOP;
	END LOOP;
	RETURN v_n;
END
$$;
COMMENT ON FUNCTION estream._apply_retention(integer) IS
	'Retention: empties (TRUNCATE) the oldest sealed segments past retention.ms or beyond retention.bytes per partition and moves the log start; returns how many.';

CREATE FUNCTION estream._drop_empty_segments(p_topic_id integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r record;
	v_nonempty boolean;
	v_n bigint := 0;
BEGIN
	FOR r IN SELECT s.topic_id, s.segment,
					format('estream.log_%s_%s', s.topic_id, s.segment) AS relid,
					format('estream.log_%s', s.topic_id) AS log_relid
			   FROM estream.segment s
			  WHERE s.truncated_at IS NOT NULL AND (p_topic_id IS NULL OR s.topic_id = p_topic_id)
			  ORDER BY s.topic_id, s.segment
	LOOP
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
	END LOOP;
	RETURN v_n;
END
$$;
COMMENT ON FUNCTION estream._drop_empty_segments(integer) IS
	'Drops segments that retention emptied, when their log is not in use; returns how many.';

CREATE TABLE estream.compaction (
	topic_id integer PRIMARY KEY REFERENCES estream.topic ON DELETE CASCADE,
	checked_at timestamptz NOT NULL,
	cleaned_at timestamptz,
	records_removed bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE estream.compaction IS
	'Per compacted topic: when the worker last looked for removable records, last cleaned, and how many records it removed in all.';
SELECT pg_catalog.pg_extension_config_dump('estream.compaction', '');

CREATE FUNCTION estream._compact(p_topic_id integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
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
BEGIN
	PERFORM estream._require_read_committed();
	FOR t IN SELECT tp.topic_id, tp.config, tp.log_relid, tp.current_segment, c.checked_at
			   FROM estream.topic tp
			   LEFT JOIN estream.compaction c ON c.topic_id = tp.topic_id
			  WHERE p_topic_id IS NULL OR tp.topic_id = p_topic_id
			  ORDER BY tp.topic_id
	LOOP
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
		-- statements that follow
		SELECT coalesce(jsonb_object_agg(w.partition::text, w.stable), '{}') INTO v_stable
		  FROM estream._shared_partitions() w WHERE w.log_relid = t.log_relid::oid;

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
				  clock_timestamp() - (cfg->>'min.compaction.lag.ms')::bigint * interval '1 millisecond',
				  clock_timestamp() - (cfg->>'delete.retention.ms')::bigint * interval '1 millisecond',
				  v_stable,
				  CASE WHEN (cfg->>'max.compaction.lag.ms')::numeric < 1e13
					   THEN clock_timestamp() - (cfg->>'max.compaction.lag.ms')::bigint * interval '1 millisecond'
					   ELSE '-infinity'::timestamptz END;

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
	END LOOP;
	RETURN v_n;
END
$$;
COMMENT ON FUNCTION estream._compact(integer) IS
	'Compaction: removes records superseded by a newer record of the same key, and expired tombstones, from sealed segments; returns how many.';

--
-- Administration
--

CREATE FUNCTION estream.run_maintenance(topic text DEFAULT NULL)
RETURNS TABLE (step text, done bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_id integer;
BEGIN
	PERFORM estream._require_read_committed();
	IF topic IS NOT NULL THEN
		SELECT t.topic_id INTO v_id FROM estream.topic t WHERE t.name = run_maintenance.topic;
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
COMMENT ON FUNCTION estream.run_maintenance(text) IS
	'Runs the worker''s maintenance steps now, in this transaction, for one topic or all; returns what each step did.';

--
-- Latest value per key
--

CREATE FUNCTION estream._latest_rows(topic text)
RETURNS TABLE (partition integer, "offset" bigint, ts timestamptz, key bytea,
			   value jsonb, value_bin bytea, headers jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_id integer;
BEGIN
	SELECT t.topic_id INTO v_id FROM estream.topic t WHERE t.name = _latest_rows.topic;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'topic "%" does not exist', topic
			USING ERRCODE = 'undefined_object',
				  HINT = 'estream.topics lists the topics.';
	END IF;
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

CREATE FUNCTION estream.latest(topic text)
RETURNS TABLE (partition integer, "offset" bigint, "timestamp" timestamptz,
			   key text, value jsonb, headers jsonb)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT l.partition, l."offset", l.ts, convert_from(l.key, 'UTF8'), l.value, l.headers
	  FROM estream._latest_rows(topic) l
$$;
COMMENT ON FUNCTION estream.latest(text) IS
	'The latest record of every key of a topic that is not deleted by a tombstone, in the caller''s snapshot: the table view of a compacted topic.';

CREATE FUNCTION estream.latest_binary(topic text)
RETURNS TABLE (partition integer, "offset" bigint, "timestamp" timestamptz,
			   key bytea, value bytea, headers jsonb)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT l.partition, l."offset", l.ts, l.key,
		   coalesce(l.value_bin, convert_to(l.value::text, 'UTF8')), l.headers
	  FROM estream._latest_rows(topic) l
$$;
COMMENT ON FUNCTION estream.latest_binary(text) IS
	'Like latest(), with keys and values as bytes (JSON values as their text).';

--
-- Views
--

CREATE VIEW estream.workers AS
SELECT d.datname AS database, w.*
FROM estream._worker_status() w
	 LEFT JOIN pg_catalog.pg_database d ON d.oid OPERATOR(pg_catalog.=) w.datid;
COMMENT ON VIEW estream.workers IS
	'The estream launcher and the worker of every database with the extension: state, last run, counters and last error.';

CREATE VIEW estream.segments AS
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
	 JOIN estream.topic t ON t.topic_id OPERATOR(pg_catalog.=) s.topic_id;
COMMENT ON VIEW estream.segments IS
	'Segments of every topic with their state (active, closing, sealed, deleted), times and size on disk.';

CREATE OR REPLACE VIEW estream.partitions AS
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
	 CROSS JOIN LATERAL estream.watermarks(t.name) w
	 LEFT JOIN estream.partition p
		ON p.topic_id OPERATOR(pg_catalog.=) t.topic_id
	   AND p.partition OPERATOR(pg_catalog.=) w.partition
	 LEFT JOIN LATERAL estream._partition_stats(t.topic_id) s ON s.partition = w.partition;
COMMENT ON VIEW estream.partitions IS
	'Topic partitions with log start, stable and next offsets, committed record count, size, timestamp range and the persisted stable offset (scans every log).';

-- Maintenance is for the worker and the extension's owner: the internal
-- functions lock segments and read shared state.
REVOKE EXECUTE ON FUNCTION
	estream._shared_partitions(), estream._rewrite_segment(regclass, integer[], bigint[]),
	estream._truncate_segment(regclass), estream._start_worker(), estream._try_lock(text, text),
	estream._persist_watermarks(), estream._add_segment(integer, integer),
	estream._roll_segments(integer), estream._seal_segments(integer),
	estream._apply_retention(integer), estream._drop_empty_segments(integer),
	estream._compact(integer), estream.run_maintenance(text)
FROM PUBLIC;

-- Sessions cache whether estream.partition has the persisted columns:
-- make them look again (the trigger on estream.topic invalidates caches).
UPDATE estream.topic SET config = config;

-- start this database's worker when the transaction commits
SELECT estream._start_worker();
