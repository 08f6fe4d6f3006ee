-- src/sql/views.sql: The views: what an administrator sees.
--
-- Replayed by every update script: every statement here must be
-- re-runnable (CREATE OR REPLACE, COMMENT ON).

--
-- Views: as their owner they read estream's tables; they show only the
-- topics and groups the caller may describe (security barriers, so that a
-- caller's own functions in a WHERE clause never see the other rows).
--


CREATE OR REPLACE VIEW estream.topics WITH (security_barrier) AS
SELECT t.name AS topic,
	   t.topic_id,
	   t.partitions,
	   CASE WHEN estream._allowed('describe_configs', 'topic', t.name, t.owner) THEN t.config END AS config,
	   CASE WHEN estream._allowed('describe_configs', 'topic', t.name, t.owner)
			THEN estream.effective_config(t.config) END AS effective_config,
	   (SELECT count(*) FROM estream.segment s WHERE s.topic_id = t.topic_id) AS segments,
	   (SELECT coalesce(sum(estream._relation_bytes(s.relid)), 0)::bigint
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
	   p.stable_offset AS persisted_stable_offset,
	   p.persisted_at
FROM estream.topic t
	 CROSS JOIN LATERAL (SELECT x.* FROM estream.watermarks(t.name) x
						  WHERE estream._allowed('describe', 'topic', t.name, t.owner)) w
	 LEFT JOIN estream.partition p
		ON p.topic_id OPERATOR(pg_catalog.=) t.topic_id
	   AND p.partition OPERATOR(pg_catalog.=) w.partition
WHERE estream._allowed('describe', 'topic', t.name, t.owner);
COMMENT ON VIEW estream.partitions IS
	'Partitions of the topics the caller may describe, with log start, stable and next offsets and the persisted stable offset (reads no log: see estream.partition_stats for counts and sizes).';

CREATE OR REPLACE VIEW estream.partition_stats WITH (security_barrier) AS
SELECT t.name AS topic,
	   n.partition,
	   coalesce(s.records, 0) AS records,
	   coalesce(s.bytes, 0) AS bytes,
	   s.oldest_timestamp,
	   s.newest_timestamp
FROM estream.topic t
	 CROSS JOIN LATERAL pg_catalog.generate_series(0, t.partitions OPERATOR(pg_catalog.-) 1) AS n(partition)
	 LEFT JOIN LATERAL estream._partition_stats(t.topic_id) s
		ON s.partition OPERATOR(pg_catalog.=) n.partition
WHERE estream._allowed('describe', 'topic', t.name, t.owner);
COMMENT ON VIEW estream.partition_stats IS
	'Per partition of the topics the caller may describe: committed record count, bytes and timestamp range (scans every log: filter by topic).';

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

CREATE OR REPLACE VIEW estream.workers AS
SELECT d.datname AS database, w.*
FROM estream._worker_status() w
	 LEFT JOIN pg_catalog.pg_database d ON d.oid OPERATOR(pg_catalog.=) w.datid;
COMMENT ON VIEW estream.workers IS
	'The estream launcher and the worker of every database with the extension: state, last run, counters and last error.';

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
	   estream._relation_bytes(s.relid) AS size_bytes
FROM estream.segment s
	 JOIN estream.topic t ON t.topic_id OPERATOR(pg_catalog.=) s.topic_id
WHERE estream._allowed('describe', 'topic', t.name, t.owner);
COMMENT ON VIEW estream.segments IS
	'Segments of the topics the caller may describe, with their state (active, closing, sealed, deleted), times and size on disk.';

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

CREATE OR REPLACE VIEW estream.acls AS
SELECT * FROM estream._acls();
COMMENT ON VIEW estream.acls IS
	'Rights granted with grant_acl() (all of them to roles that may describe the cluster; else those of public and of the caller''s roles), and the fixed rights of the predefined roles.';

CREATE OR REPLACE VIEW estream.maintenance_errors WITH (security_barrier) AS
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

CREATE OR REPLACE VIEW estream.partition_slots AS
SELECT * FROM estream._partition_slots();
COMMENT ON VIEW estream.partition_slots IS
	'Shared partition slots of the server (estream.max_partitions): in use, held by open producing transactions, of this database; slots given, evicted, reclaimed from dropped topics, calls refused since start; evicted stable offsets not yet persisted, and lost. Needs describe on the cluster.';

-- dead letters to those who may describe the topic; their key and event
-- (records that did not make it into the topic) to those who may read it
CREATE OR REPLACE VIEW estream.capture_dead_letters WITH (security_barrier) AS
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
