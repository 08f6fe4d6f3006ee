-- src/sql/catalog.sql: estream's tables, sequences and types as they are
-- now, for a fresh install.
--
-- Not replayed by update scripts: a change here needs the matching ALTER
-- in src/sql/updates/<from>--<to>.sql, and test/t/021_fresh_vs_update.pl
-- checks that both give the same catalog.  Triggers come in
-- src/sql/triggers.sql, once their functions exist.

--
-- Topics
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
	created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	owner regrole NOT NULL
);
COMMENT ON TABLE estream.topic IS
	'One row per topic: name, partition count, explicitly set configuration and log table.';
COMMENT ON COLUMN estream.topic.owner IS
	'The role that created the topic: it has every right on the topic and may grant rights on it.';

CREATE TABLE estream.partition (
	topic_id integer NOT NULL REFERENCES estream.topic ON DELETE CASCADE,
	partition integer NOT NULL,
	log_start_offset bigint NOT NULL DEFAULT 0,
	created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	stable_offset bigint NOT NULL DEFAULT 0,
	end_offset bigint NOT NULL DEFAULT 0,
	persisted_at timestamptz,
	PRIMARY KEY (topic_id, partition)
);
COMMENT ON TABLE estream.partition IS
	'One row per topic partition, with its log start offset (the first offset retention kept).';
COMMENT ON COLUMN estream.partition.stable_offset IS
	'Stable offset last persisted by the worker: readers on a standby read below it, and offsets below it are never handed out again.';
COMMENT ON COLUMN estream.partition.end_offset IS
	'Next offset to be assigned, as last persisted by the worker.';
COMMENT ON COLUMN estream.partition.persisted_at IS
	'When the worker last persisted stable_offset and end_offset.';

CREATE TABLE estream.segment (
	topic_id integer NOT NULL REFERENCES estream.topic ON DELETE CASCADE,
	segment integer NOT NULL,
	relid regclass NOT NULL,
	created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	closed_at timestamptz,
	sealed_at timestamptz,
	truncated_at timestamptz,
	roll_checked_at timestamptz,
	has_records boolean,
	PRIMARY KEY (topic_id, segment)
);
COMMENT ON TABLE estream.segment IS
	'One row per segment of a topic''s log; retention drops whole segments.';
COMMENT ON COLUMN estream.segment.closed_at IS
	'When the worker started the next segment; producers move on from then.';
COMMENT ON COLUMN estream.segment.sealed_at IS
	'When no transaction could write to the segment any more; retention counts from here.';
COMMENT ON COLUMN estream.segment.truncated_at IS
	'When retention emptied the segment; the empty table is dropped when its log is not in use.';
COMMENT ON COLUMN estream.segment.roll_checked_at IS
	'(1.4) When the roll step last looked at this segment while it was active without rolling it: it looks again after records are persisted into the topic since, after alter_topic(), or an hour later.';
COMMENT ON COLUMN estream.segment.has_records IS
	'(1.4) Whether the segment held records when the roll step last looked at it (a segment known to hold records rolls once older than segment.ms).';

SELECT pg_catalog.pg_extension_config_dump('estream.topic', '');
SELECT pg_catalog.pg_extension_config_dump('estream.partition', '');
SELECT pg_catalog.pg_extension_config_dump('estream.segment', '');
SELECT pg_catalog.pg_extension_config_dump('estream.topic_id_seq', '');

--
-- Records
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

--
-- Consumer groups
--

CREATE SEQUENCE estream.group_id_seq AS integer;
COMMENT ON SEQUENCE estream.group_id_seq IS 'Source of consumer group ids.';

CREATE TABLE estream."group" (
	group_id integer PRIMARY KEY DEFAULT pg_catalog.nextval('estream.group_id_seq'),
	name text NOT NULL UNIQUE,
	auto_offset_reset text NOT NULL DEFAULT 'latest'
		CHECK (auto_offset_reset IN ('earliest', 'latest')),
	generation integer NOT NULL DEFAULT 0,
	created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE estream."group" IS
	'Consumer groups: name, where a partition without a committed offset starts, and the generation of the session members'' assignment.';

CREATE TABLE estream.group_member (
	group_id integer NOT NULL REFERENCES estream."group" ON DELETE CASCADE,
	member_id text NOT NULL,
	topics integer[] NOT NULL,
	session_timeout_ms integer NOT NULL CHECK (session_timeout_ms BETWEEN 100 AND 3600000),
	joined_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	last_heartbeat timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	PRIMARY KEY (group_id, member_id)
);
COMMENT ON TABLE estream.group_member IS
	'Session members of consumer groups, the topics they subscribe to and their last heartbeat.';

CREATE TABLE estream.group_offset (
	group_id integer NOT NULL REFERENCES estream."group" ON DELETE CASCADE,
	topic_id integer NOT NULL REFERENCES estream.topic ON DELETE CASCADE,
	partition integer NOT NULL,
	committed_offset bigint NOT NULL CHECK (committed_offset >= 0),
	member_id text,
	committed_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (group_id, topic_id, partition)
);
COMMENT ON TABLE estream.group_offset IS
	'Committed offset (the next offset to consume) per group and partition, and the session member the partition is assigned to.';

SELECT pg_catalog.pg_extension_config_dump('estream.group', '');
SELECT pg_catalog.pg_extension_config_dump('estream.group_id_seq', '');
-- Session members are not dumped: a restored member would count as live
-- until its session timeout, although nobody heartbeats for it (its
-- partitions' offsets are dumped with the group; members join again).
SELECT pg_catalog.pg_extension_config_dump('estream.group_member', 'WHERE false');
SELECT pg_catalog.pg_extension_config_dump('estream.group_offset', '');

CREATE TYPE estream.group_position AS (partition integer, committed_offset bigint);
COMMENT ON TYPE estream.group_position IS 'A partition and the committed offset a seek set for it.';

CREATE TYPE estream.group_membership AS (member_id text, generation integer);
COMMENT ON TYPE estream.group_membership IS 'A session member''s id and the generation of the group''s assignment.';

CREATE TYPE estream.group_record AS (
	topic text, partition integer, "offset" bigint, "timestamp" timestamptz,
	key text, value jsonb, headers jsonb);
COMMENT ON TYPE estream.group_record IS 'A record as poll() and consume() return it, with its topic.';

--
-- Maintenance
--

CREATE TABLE estream.compaction (
	topic_id integer PRIMARY KEY REFERENCES estream.topic ON DELETE CASCADE,
	checked_at timestamptz NOT NULL,
	cleaned_at timestamptz,
	records_removed bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE estream.compaction IS
	'Per compacted topic: when the worker last looked for removable records, last cleaned, and how many records it removed in all.';
SELECT pg_catalog.pg_extension_config_dump('estream.compaction', '');

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

--
-- Change data capture
--

-- The output plugin reads this table while decoding, with the historic
-- snapshot of each change: it must be a user catalog table, and its first
-- four columns keep their positions.  Not dumped: rows name tables by OID,
-- which a restore changes; capture the tables again after restoring.
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
	activated_at timestamptz,
	capturer regrole NOT NULL,
	on_error text NOT NULL DEFAULT 'stop' CHECK (on_error IN ('stop', 'skip')),
	progress_lsn pg_catalog.pg_lsn,
	stopped_at timestamptz,
	stop_error text,
	stop_detail text,
	stop_sqlstate text,
	stop_lsn pg_catalog.pg_lsn,
	stop_xid bigint
) WITH (user_catalog_table = true);
COMMENT ON TABLE estream.capture IS
	'One row per captured table: its topic, options, and the snapshot that separates its initial copy from the stream of changes.';
COMMENT ON COLUMN estream.capture.capturer IS
	'The role that captured the table; its events are written while it owns the table and may write the topic.';
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

-- Not dumped, like estream.capture (rows name tables by OID).
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
