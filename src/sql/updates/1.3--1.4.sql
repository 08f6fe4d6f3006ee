-- src/sql/updates/1.3--1.4.sql: what the update from 1.3 to 1.4 does to
-- the catalog before the concern files are replayed (tables, columns,
-- functions that go).  The same catalog as src/sql/catalog.sql makes
-- (test/t/021_fresh_vs_update.pl).

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

-- Session members are not dumped: a restored member would count as live
-- until its session timeout, although nobody heartbeats for it (its
-- partitions' offsets are dumped with the group; members join again).
SELECT pg_catalog.pg_extension_config_dump('estream.group_member', 'WHERE false');

-- the worker makes the initial copy of a capture itself (as the table's owner)
DROP FUNCTION estream._capture_activate(oid);

-- estream.partitions loses its columns that scan every log (issue 14: they
-- move to estream.partition_stats).  A view cannot drop columns: the old
-- one stays under another name until 1.3--1.4.post.sql has turned its
-- grants into rights, then goes.
ALTER VIEW estream.partitions RENAME TO _partitions_1_3;

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

-- issue 14: the roll step checks a current segment again only after
-- records were persisted into its topic since it last looked
ALTER TABLE estream.segment ADD COLUMN roll_checked_at timestamptz;
ALTER TABLE estream.segment ADD COLUMN has_records boolean;
COMMENT ON COLUMN estream.segment.roll_checked_at IS
	'(1.4) When the roll step last looked at this segment while it was active without rolling it: it looks again after records are persisted into the topic since, after alter_topic(), or an hour later.';
COMMENT ON COLUMN estream.segment.has_records IS
	'(1.4) Whether the segment held records when the roll step last looked at it (a segment known to hold records rolls once older than segment.ms).';
