-- src/sql/groups.sql: Consumer groups: offsets, seeks, poll(), members and their assignment.
--
-- Replayed by every update script: every statement here must be
-- re-runnable (CREATE OR REPLACE, COMMENT ON).

--
-- Helpers
--
CREATE OR REPLACE FUNCTION estream._check_reset(auto_offset_reset text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF auto_offset_reset IS NOT NULL AND auto_offset_reset NOT IN ('earliest', 'latest') THEN
		RAISE EXCEPTION 'invalid value for auto_offset_reset: "%"', auto_offset_reset
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A group starts at "earliest" or "latest".';
	END IF;
	RETURN auto_offset_reset;
END
$$;
COMMENT ON FUNCTION estream._check_reset(text) IS
	'Raises an error unless auto_offset_reset is earliest, latest or null.';

-- Making a group, or a group's offset rows for a topic, takes a lock on the
-- name first (estream._lock_name(): a lock no role can take from SQL):
-- poll() tries it and, when another transaction is making them, polls what
-- exists instead of queueing behind that transaction.
CREATE OR REPLACE FUNCTION estream._group(p_group text, p_reset text, p_create boolean)
RETURNS estream."group"
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	g estream."group";
BEGIN
	IF p_group IS NULL THEN
		RAISE EXCEPTION 'group must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF p_group = '' OR length(p_group) > 249 OR p_group ~ '[[:cntrl:]]' THEN
		RAISE EXCEPTION 'invalid group name "%"', p_group
			USING ERRCODE = 'invalid_name',
				  DETAIL = 'Group names have 1 to 249 characters and no control characters.';
	END IF;
	PERFORM estream._check_reset(p_reset);
	SELECT * INTO g FROM estream."group" x WHERE x.name = p_group;
	IF NOT FOUND THEN
		IF NOT p_create THEN
			RAISE EXCEPTION 'consumer group "%" does not exist', p_group
				USING ERRCODE = 'undefined_object',
					  HINT = 'Groups are created by estream.create_group(), poll() or join_group().';
		END IF;
		PERFORM estream._lock_name('group', p_group, true);
		INSERT INTO estream."group" (name, auto_offset_reset)
			VALUES (p_group, coalesce(p_reset, 'latest'))
			ON CONFLICT (name) DO NOTHING;
		SELECT * INTO g FROM estream."group" x WHERE x.name = p_group;
	END IF;
	RETURN g;
END
$$;
COMMENT ON FUNCTION estream._group(text, text, boolean) IS
	'Looks up a consumer group, creating it if asked.';

-- Give every partition of the topic a committed offset row for the group:
-- the log start ("earliest") or the stable offset ("latest").
CREATE OR REPLACE FUNCTION estream._ensure_offsets(g estream."group", t estream.topic, p_reset text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
BEGIN
	IF (SELECT count(*) FROM estream.group_offset o
		WHERE o.group_id = g.group_id AND o.topic_id = t.topic_id) < t.partitions THEN
		PERFORM estream._lock_name('group offsets', g.group_id::text || '.' || t.topic_id::text, true);
		INSERT INTO estream.group_offset (group_id, topic_id, partition, committed_offset)
		SELECT g.group_id, t.topic_id, w.partition,
			   CASE coalesce(p_reset, g.auto_offset_reset)
				   WHEN 'earliest' THEN w.log_start_offset ELSE w.stable_offset END
		FROM estream.watermarks(t.name) w
		ON CONFLICT DO NOTHING;
	END IF;
END
$$;
COMMENT ON FUNCTION estream._ensure_offsets(estream."group", estream.topic, text) IS
	'Creates the missing committed-offset rows of a group for a topic, at its earliest or latest offset.';

CREATE OR REPLACE FUNCTION estream._member_alive(p_group_id integer, p_member text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT EXISTS (SELECT 1 FROM estream.group_member m
				   WHERE m.group_id = p_group_id AND m.member_id = p_member
				   AND m.last_heartbeat + m.session_timeout_ms * interval '1 millisecond'
					   >= pg_catalog.clock_timestamp())
$$;
COMMENT ON FUNCTION estream._member_alive(integer, text) IS
	'Whether a session member exists and its session has not timed out.';

CREATE OR REPLACE FUNCTION estream._require_live_member(g estream."group", p_member text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT estream._member_alive(g.group_id, p_member) THEN
		RAISE EXCEPTION 'member "%" is not a live member of consumer group "%"', p_member, g.name
			USING ERRCODE = 'QE002',	-- ERRCODE_ESTREAM_UNKNOWN_MEMBER (src/errcodes.h)
				  DETAIL = 'Its session timed out or it left the group; its partitions were reassigned.',
				  HINT = 'Join the group again with estream.join_group().';
	END IF;
END
$$;
COMMENT ON FUNCTION estream._require_live_member(estream."group", text) IS
	'Raises QE002 unless the member is live (Kafka''s UNKNOWN_MEMBER_ID).';

--
-- Groups and committed offsets
--
CREATE OR REPLACE FUNCTION estream.create_group("group" text, auto_offset_reset text DEFAULT 'latest')
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.create_group(text, text) IS
	'Creates a consumer group; auto_offset_reset says where its partitions start (earliest or latest). Needs the read right on the group.';

CREATE OR REPLACE FUNCTION estream.delete_group("group" text, if_exists boolean DEFAULT false)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.delete_group(text, boolean) IS
	'Deletes a consumer group and its committed offsets; it must have no live members (needs delete on the group and read on its topics).';

-- Set the committed offset of one partition, checking the member's
-- ownership when a member commits.
CREATE OR REPLACE FUNCTION estream.commit("group" text, topic text, partition integer, "offset" bigint,
										  member_id text DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.commit(text, text, integer, bigint, text) IS
	'Commits the next offset to consume for a partition, in the caller''s transaction; a session member may commit only partitions assigned to it. Needs read on the group and the topic.';

CREATE OR REPLACE FUNCTION estream.committed("group" text, topic text)
RETURNS TABLE (partition integer, committed_offset bigint, member_id text, committed_at timestamptz)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.committed(text, text) IS
	'Committed offsets of a group for a topic, per partition (needs describe on both).';

--
-- Consumer groups.  A group is bound to the rights of the role that uses
-- it: consuming, committing, seeking and joining need read on the group
-- and on the topic; deleting needs delete on the group and read on its
-- topics; looking needs describe.
--
CREATE OR REPLACE FUNCTION estream._seek(p_group text, p_topic text, p_partition integer, p_how text,
										 p_offset bigint, p_ts timestamptz)
RETURNS TABLE (partition integer, committed_offset bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	g estream."group";
	t estream.topic;
BEGIN
	g := estream._authorize_group(p_group, 'read', NULL, true);
	t := estream._authorize_topic(p_topic, 'read');
	IF p_partition IS NOT NULL AND (p_partition < 0 OR p_partition >= t.partitions) THEN
		RAISE EXCEPTION 'partition % does not exist in topic "%"', p_partition, t.name
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('Topic "%s" has %s partitions, numbered from 0.', t.name, t.partitions);
	END IF;
	-- as commit(): the group row first, so no rebalance runs meanwhile
	PERFORM 1 FROM estream."group" x WHERE x.group_id = g.group_id FOR SHARE;
	PERFORM estream._ensure_offsets(g, t, NULL);
	IF EXISTS (SELECT 1 FROM estream.group_offset o
			   WHERE o.group_id = g.group_id AND o.topic_id = t.topic_id
			   AND (p_partition IS NULL OR o.partition = p_partition)
			   AND o.member_id IS NOT NULL AND estream._member_alive(g.group_id, o.member_id)) THEN
		RAISE EXCEPTION 'cannot seek partitions of consumer group "%" assigned to live members', g.name
			USING ERRCODE = 'object_in_use',
				  HINT = 'Seek when the members have left, or commit as the member.';
	END IF;
	RETURN QUERY
	UPDATE estream.group_offset o
	SET committed_offset = CASE p_how
			WHEN 'offset' THEN p_offset
			WHEN 'earliest' THEN w.log_start_offset
			WHEN 'latest' THEN w.stable_offset
			ELSE coalesce((SELECT f."offset" FROM estream.offsets_for_times(t.name, p_ts) f
						   WHERE f.partition = o.partition), w.stable_offset) END,
		committed_at = pg_catalog.now()
	FROM estream.watermarks(t.name) w
	WHERE o.group_id = g.group_id AND o.topic_id = t.topic_id AND w.partition = o.partition
	  AND (p_partition IS NULL OR o.partition = p_partition)
	RETURNING o.partition, o.committed_offset;
END
$$;
COMMENT ON FUNCTION estream._seek(text, text, integer, text, bigint, timestamptz) IS
	'Moves committed offsets of a group (shared body of the seek functions).';

CREATE OR REPLACE FUNCTION estream.seek("group" text, topic text, partition integer, "offset" bigint)
RETURNS SETOF estream.group_position
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.seek(text, text, integer, bigint) IS
	'Sets the committed offset of one partition of a group (needs read on the group and the topic).';

CREATE OR REPLACE FUNCTION estream.seek_to_beginning("group" text, topic text, partition integer DEFAULT NULL)
RETURNS SETOF estream.group_position
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.seek_to_beginning(text, text, integer) IS
	'Moves a group to the log start of one partition, or of every partition of the topic (needs read on the group and the topic).';

CREATE OR REPLACE FUNCTION estream.seek_to_end("group" text, topic text, partition integer DEFAULT NULL)
RETURNS SETOF estream.group_position
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.seek_to_end(text, text, integer) IS
	'Moves a group to the stable offset of one partition, or of every partition of the topic (needs read on the group and the topic).';

CREATE OR REPLACE FUNCTION estream.seek_to_time("group" text, topic text, ts timestamptz, partition integer DEFAULT NULL)
RETURNS SETOF estream.group_position
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.seek_to_time(text, text, timestamptz, integer) IS
	'Moves a group to the first offset at or after ts (the stable offset if there is none), per partition (needs read on the group and the topic).';

--
-- In-transaction consumption
--
CREATE OR REPLACE FUNCTION estream.poll("group" text, topic text, max_records integer DEFAULT 500,
										wait_ms integer DEFAULT 0, auto_offset_reset text DEFAULT NULL)
RETURNS SETOF estream.group_record
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.poll(text, text, integer, integer, text) IS
	'Claims partitions of a topic that no other transaction of the group holds, returns their records after the committed offsets and advances those offsets in the caller''s transaction (exactly-once with the caller''s writes). Needs read on the group and the topic.';

--
-- Session members
--

-- Recompute the assignment of a group's partitions to its live members:
-- members time out first; then, per topic, partition i goes to the i-th
-- (mod n) live member subscribed to it, members sorted by id.  The caller
-- holds the group row locked.  Returns the generation.
CREATE OR REPLACE FUNCTION estream._rebalance(p_group_id integer)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	changed integer;
	gen integer;
	g estream."group";
	t estream.topic;
BEGIN
	DELETE FROM estream.group_member m
	WHERE m.group_id = p_group_id AND NOT estream._member_alive(p_group_id, m.member_id);
	SELECT * INTO g FROM estream."group" x WHERE x.group_id = p_group_id;
	FOR t IN SELECT * FROM estream.topic x
			 WHERE x.topic_id IN (SELECT unnest(m.topics) FROM estream.group_member m
								  WHERE m.group_id = p_group_id) LOOP
		PERFORM estream._ensure_offsets(g, t, NULL);
	END LOOP;
	WITH subs AS (
		SELECT u.topic_id, m.member_id,
			   row_number() OVER (PARTITION BY u.topic_id ORDER BY m.member_id) - 1 AS idx,
			   count(*) OVER (PARTITION BY u.topic_id) AS n
		FROM estream.group_member m, unnest(m.topics) AS u(topic_id)
		WHERE m.group_id = p_group_id
	), target AS (
		SELECT o.topic_id, o.partition, s.member_id
		FROM estream.group_offset o
		LEFT JOIN (SELECT DISTINCT topic_id, n FROM subs) c ON c.topic_id = o.topic_id
		LEFT JOIN subs s ON s.topic_id = o.topic_id AND s.idx = o.partition % c.n
		WHERE o.group_id = p_group_id
	)
	UPDATE estream.group_offset o SET member_id = target.member_id
	FROM target
	WHERE o.group_id = p_group_id AND o.topic_id = target.topic_id AND o.partition = target.partition
	  AND o.member_id IS DISTINCT FROM target.member_id;
	GET DIAGNOSTICS changed = ROW_COUNT;
	IF changed > 0 THEN
		UPDATE estream."group" x SET generation = x.generation + 1 WHERE x.group_id = p_group_id
		RETURNING x.generation INTO gen;
	ELSE
		gen := g.generation;
	END IF;
	RETURN gen;
END
$$;
COMMENT ON FUNCTION estream._rebalance(integer) IS
	'Removes timed-out members and reassigns a group''s partitions round-robin over its live members.';

CREATE OR REPLACE FUNCTION estream.join_group("group" text, topics text[], member_id text DEFAULT NULL,
								   session_timeout_ms integer DEFAULT 10000,
								   auto_offset_reset text DEFAULT NULL)
RETURNS estream.group_membership
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.join_group(text, text[], text, integer, text) IS
	'Joins a session member to a group (a new member id if none is given) and rebalances; returns the member id and the generation. Needs read on the group and on every topic.';

CREATE OR REPLACE FUNCTION estream.heartbeat("group" text, member_id text)
RETURNS integer
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.heartbeat(text, text) IS
	'Keeps a session member alive; if a member timed out, removes it and rebalances; returns the generation. Needs read on the group.';

CREATE OR REPLACE FUNCTION estream.leave_group("group" text, member_id text)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.leave_group(text, text) IS
	'Removes a session member from its group and gives its partitions to the others (needs read on the group).';

CREATE OR REPLACE FUNCTION estream.assignment("group" text, member_id text)
RETURNS TABLE (topic text, partition integer, committed_offset bigint)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.assignment(text, text) IS
	'The partitions assigned to a session member, with their committed offsets (needs describe on the group).';

-- Heartbeat, then read the member's partitions from their committed
-- offsets.  Does not commit: the member commits what it has processed.
CREATE OR REPLACE FUNCTION estream.consume("group" text, member_id text, max_records integer DEFAULT 500,
								wait_ms integer DEFAULT 0)
RETURNS SETOF estream.group_record
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.consume(text, text, integer, integer) IS
	'For session members: heartbeats, then returns records of the member''s partitions from their committed offsets (commit with estream.commit() after processing). Needs read on the group and the topics.';

CREATE OR REPLACE FUNCTION estream._create_group_impl("group" text, auto_offset_reset text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
BEGIN
	IF "group" IS NULL THEN
		RAISE EXCEPTION 'group must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM estream._require('read', 'group', "group", NULL);
	IF EXISTS (SELECT 1 FROM estream."group" g WHERE g.name = _create_group_impl."group") THEN
		RAISE EXCEPTION 'consumer group "%" already exists', _create_group_impl."group"
			USING ERRCODE = 'duplicate_object';
	END IF;
	PERFORM estream._group(_create_group_impl."group", coalesce(auto_offset_reset, 'latest'), true);
END
$$;
COMMENT ON FUNCTION estream._create_group_impl(text, text) IS
	'Body of create_group(): needs the read right on the group.';

CREATE OR REPLACE FUNCTION estream._delete_group_impl("group" text, if_exists boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	g estream."group";
	t estream.topic;
	n integer;
BEGIN
	IF "group" IS NULL THEN
		RAISE EXCEPTION 'group must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM estream._require('delete', 'group', "group", NULL);
	SELECT * INTO g FROM estream."group" x WHERE x.name = _delete_group_impl."group" FOR UPDATE;
	IF NOT FOUND THEN
		IF if_exists THEN
			RAISE NOTICE 'consumer group "%" does not exist, skipping', _delete_group_impl."group";
			RETURN;
		END IF;
		PERFORM estream._group(_delete_group_impl."group", NULL, false);
	END IF;
	-- its committed offsets go too: only for a role that may read them
	-- (without naming a topic the caller may not even describe)
	FOR t IN SELECT tp.* FROM estream.topic tp
			  WHERE tp.topic_id IN (SELECT o.topic_id FROM estream.group_offset o
									 WHERE o.group_id = g.group_id)
			  ORDER BY tp.name LOOP
		IF NOT estream._allowed('describe', 'topic', t.name, t.owner) THEN
			RAISE EXCEPTION 'permission denied for consumer group "%"', g.name
				USING ERRCODE = 'insufficient_privilege',
					  DETAIL = 'The group has committed offsets on topics the role may not read.';
		END IF;
		PERFORM estream._require('read', 'topic', t.name, t.owner);
	END LOOP;
	SELECT count(*)::integer INTO n FROM estream.group_member m
	WHERE m.group_id = g.group_id AND estream._member_alive(g.group_id, m.member_id);
	IF n > 0 THEN
		RAISE EXCEPTION 'consumer group "%" has % live member%', g.name, n,
				CASE WHEN n = 1 THEN '' ELSE 's' END
			USING ERRCODE = 'object_in_use',
				  HINT = 'Members must leave the group (estream.leave_group()) or time out first.';
	END IF;
	DELETE FROM estream."group" x WHERE x.group_id = g.group_id;
END
$$;
COMMENT ON FUNCTION estream._delete_group_impl(text, boolean) IS
	'Body of delete_group(): needs the delete right on the group and read on its topics.';

CREATE OR REPLACE FUNCTION estream._commit_impl("group" text, topic text, partition integer, "offset" bigint,
									 member_id text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	g estream."group";
	t estream.topic;
	w record;
	o estream.group_offset;
BEGIN
	g := estream._authorize_group(_commit_impl."group", 'read', NULL, member_id IS NULL);
	t := estream._authorize_topic(_commit_impl.topic, 'read');
	IF _commit_impl.partition IS NULL OR _commit_impl.partition < 0 OR _commit_impl.partition >= t.partitions THEN
		RAISE EXCEPTION 'partition % does not exist in topic "%"', coalesce(_commit_impl.partition::text, 'NULL'), t.name
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('Topic "%s" has %s partitions, numbered from 0.', t.name, t.partitions);
	END IF;
	SELECT * INTO w FROM estream.watermarks(t.name) x WHERE x.partition = _commit_impl.partition;
	IF _commit_impl."offset" IS NULL OR _commit_impl."offset" < 0 OR _commit_impl."offset" > w.stable_offset THEN
		RAISE EXCEPTION 'cannot commit offset % for partition % of topic "%"',
				coalesce(_commit_impl."offset"::text, 'NULL'), _commit_impl.partition, t.name
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('A committed offset is the next offset to consume, between 0 and the stable offset (%s).',
								  w.stable_offset);
	END IF;
	-- lock order of every group path: the group row, then offset rows.  A
	-- rebalance holds the group row exclusively while it updates offset
	-- rows; commits share it, so they never hold an offset row a rebalance
	-- waits for while waiting for the rebalance themselves.
	PERFORM 1 FROM estream."group" x WHERE x.group_id = g.group_id FOR SHARE;
	PERFORM estream._ensure_offsets(g, t, NULL);
	SELECT * INTO o FROM estream.group_offset x
	WHERE x.group_id = g.group_id AND x.topic_id = t.topic_id AND x.partition = _commit_impl.partition
	FOR UPDATE;
	IF member_id IS NOT NULL THEN
		PERFORM estream._require_live_member(g, member_id);
		IF o.member_id IS DISTINCT FROM _commit_impl.member_id THEN
			RAISE EXCEPTION 'partition % of topic "%" is not assigned to member "%"', _commit_impl.partition, t.name, member_id
				USING ERRCODE = 'QE001',	-- ERRCODE_ESTREAM_PARTITION_NOT_ASSIGNED (src/errcodes.h)
					  DETAIL = format('The group rebalanced (generation %s); the partition now belongs to %s.',
									  g.generation, coalesce('member "' || o.member_id || '"', 'no member')),
					  HINT = 'Fetch the new assignment with estream.assignment() and resume from its committed offsets.';
		END IF;
	ELSIF o.member_id IS NOT NULL AND estream._member_alive(g.group_id, o.member_id) THEN
		RAISE EXCEPTION 'partition % of topic "%" is assigned to member "%"', _commit_impl.partition, t.name, o.member_id
			USING ERRCODE = 'QE001',	-- ERRCODE_ESTREAM_PARTITION_NOT_ASSIGNED (src/errcodes.h)
				  HINT = 'Pass member_id to commit as that member.';
	END IF;
	UPDATE estream.group_offset x SET committed_offset = _commit_impl."offset", committed_at = pg_catalog.now()
	WHERE x.group_id = g.group_id AND x.topic_id = t.topic_id AND x.partition = _commit_impl.partition;
END
$$;
COMMENT ON FUNCTION estream._commit_impl(text, text, integer, bigint, text) IS
	'Body of commit(): needs the read right on the group and on the topic.';

CREATE OR REPLACE FUNCTION estream._committed_impl("group" text, topic text)
RETURNS TABLE (partition integer, committed_offset bigint, member_id text, committed_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	t estream.topic;
BEGIN
	IF _committed_impl."group" IS NULL THEN
		RAISE EXCEPTION 'group must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM estream._require('describe', 'group', _committed_impl."group", NULL);
	t := estream._authorize_topic(_committed_impl.topic, 'describe');
	RETURN QUERY
	SELECT o.partition, o.committed_offset, o.member_id, o.committed_at
	FROM estream.group_offset o
	JOIN estream."group" g USING (group_id)
	WHERE g.name = _committed_impl."group" AND o.topic_id = t.topic_id
	ORDER BY o.partition;
END
$$;
COMMENT ON FUNCTION estream._committed_impl(text, text) IS
	'Body of committed(): needs describe on the group and the topic.';

CREATE OR REPLACE FUNCTION estream._seek_impl("group" text, topic text, partition integer, "offset" bigint)
RETURNS SETOF estream.group_position
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	w record;
BEGIN
	IF _seek_impl.partition IS NULL THEN
		RAISE EXCEPTION 'partition must not be null' USING ERRCODE = 'null_value_not_allowed',
			HINT = 'seek_to_beginning(), seek_to_end() and seek_to_time() move every partition.';
	END IF;
	IF _seek_impl."group" IS NULL THEN
		RAISE EXCEPTION 'group must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM estream._require('read', 'group', _seek_impl."group", NULL);
	PERFORM estream._authorize_topic(_seek_impl.topic, 'read');
	SELECT * INTO w FROM estream.watermarks(_seek_impl.topic) x WHERE x.partition = _seek_impl.partition;
	IF FOUND AND (_seek_impl."offset" IS NULL OR _seek_impl."offset" < 0 OR _seek_impl."offset" > w.stable_offset) THEN
		RAISE EXCEPTION 'cannot seek to offset % in partition % of topic "%"',
				coalesce(_seek_impl."offset"::text, 'NULL'), _seek_impl.partition, _seek_impl.topic
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('The offset must be between 0 and the stable offset (%s).', w.stable_offset);
	END IF;
	RETURN QUERY SELECT * FROM estream._seek(_seek_impl."group", _seek_impl.topic, _seek_impl.partition,
											 'offset', _seek_impl."offset", NULL);
END
$$;
COMMENT ON FUNCTION estream._seek_impl(text, text, integer, bigint) IS
	'Body of seek(): needs read on the group and the topic.';

CREATE OR REPLACE FUNCTION estream._seek_to_beginning_impl("group" text, topic text, partition integer)
RETURNS SETOF estream.group_position
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
BEGIN
	RETURN QUERY SELECT * FROM estream._seek(_seek_to_beginning_impl."group", _seek_to_beginning_impl.topic,
											 _seek_to_beginning_impl.partition, 'earliest', NULL, NULL);
END
$$;
COMMENT ON FUNCTION estream._seek_to_beginning_impl(text, text, integer) IS
	'Body of seek_to_beginning(): needs read on the group and the topic.';

CREATE OR REPLACE FUNCTION estream._seek_to_end_impl("group" text, topic text, partition integer)
RETURNS SETOF estream.group_position
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
BEGIN
	RETURN QUERY SELECT * FROM estream._seek(_seek_to_end_impl."group", _seek_to_end_impl.topic,
											 _seek_to_end_impl.partition, 'latest', NULL, NULL);
END
$$;
COMMENT ON FUNCTION estream._seek_to_end_impl(text, text, integer) IS
	'Body of seek_to_end(): needs read on the group and the topic.';

CREATE OR REPLACE FUNCTION estream._seek_to_time_impl("group" text, topic text, ts timestamptz, partition integer)
RETURNS SETOF estream.group_position
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
BEGIN
	IF ts IS NULL THEN
		RAISE EXCEPTION 'ts must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	RETURN QUERY SELECT * FROM estream._seek(_seek_to_time_impl."group", _seek_to_time_impl.topic,
											 _seek_to_time_impl.partition, 'time', NULL, _seek_to_time_impl.ts);
END
$$;
COMMENT ON FUNCTION estream._seek_to_time_impl(text, text, timestamptz, integer) IS
	'Body of seek_to_time(): needs read on the group and the topic.';

CREATE OR REPLACE FUNCTION estream._poll_impl("group" text, topic text, max_records integer,
								   wait_ms integer, auto_offset_reset text)
RETURNS SETOF estream.group_record
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	g estream."group";
	t estream.topic;
	stable bigint[];
	parts integer[];
	froms bigint[];
	start integer;
	p integer;
	c bigint;
	m text;
	got integer := 0;
	n integer;
	last bigint;
	deadline timestamptz;
BEGIN
	IF current_setting('transaction_isolation') <> 'read committed' THEN
		RAISE EXCEPTION 'estream.poll() requires the READ COMMITTED isolation level'
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = format('The transaction is %s: claiming partitions with row locks would raise serialization failures.',
								  upper(current_setting('transaction_isolation')));
	END IF;
	IF max_records IS NULL OR max_records < 1 THEN
		RAISE EXCEPTION 'max_records must be at least 1' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF wait_ms IS NULL OR wait_ms < 0 THEN
		RAISE EXCEPTION 'wait_ms must not be negative' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM estream._check_reset(_poll_impl.auto_offset_reset);
	IF _poll_impl."group" IS NULL THEN
		RAISE EXCEPTION 'group must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM estream._require('read', 'group', _poll_impl."group", NULL);
	t := estream._authorize_topic(_poll_impl.topic, 'read');
	-- A new group, or new offset rows (a new topic or partitions), are
	-- made by one poller at a time: the others of the group do not queue
	-- behind its transaction's locks, they poll what exists and come back.
	-- For a new group nothing exists yet: they look again every 5 ms
	-- within wait_ms (instead of spinning on empty polls while the first
	-- poller's transaction runs), then return nothing.
	deadline := clock_timestamp() + wait_ms * interval '1 millisecond';
	LOOP
		SELECT * INTO g FROM estream."group" x WHERE x.name = _poll_impl."group";
		EXIT WHEN FOUND;
		IF estream._lock_name('group', _poll_impl."group", false) THEN
			g := estream._group(_poll_impl."group", _poll_impl.auto_offset_reset, true);
			EXIT;
		END IF;
		IF clock_timestamp() >= deadline THEN
			RETURN;
		END IF;
		PERFORM pg_sleep(least(0.005, greatest(0, extract(epoch FROM deadline - clock_timestamp()))));
	END LOOP;
	IF (SELECT count(*) FROM estream.group_offset o
		WHERE o.group_id = g.group_id AND o.topic_id = t.topic_id) < t.partitions
	   AND estream._lock_name('group offsets', g.group_id::text || '.' || t.topic_id::text, false) THEN
		PERFORM estream._ensure_offsets(g, t, _poll_impl.auto_offset_reset);
	END IF;

	LOOP
		SELECT array_agg(w.stable_offset ORDER BY w.partition) INTO stable
		FROM estream.watermarks(t.name) w;
		parts := '{}';
		froms := '{}';
		-- start at a random partition so that concurrent pollers spread
		start := floor(random() * t.partitions)::integer;
		FOR i IN 0 .. t.partitions - 1 LOOP
			p := (start + i) % t.partitions;
			-- unlocked look first: skip partitions with nothing to read or
			-- assigned to a live session member
			SELECT o.committed_offset, o.member_id INTO c, m FROM estream.group_offset o
			WHERE o.group_id = g.group_id AND o.topic_id = t.topic_id AND o.partition = p;
			IF m IS NOT NULL AND estream._member_alive(g.group_id, m) THEN
				CONTINUE;
			END IF;
			IF c >= stable[p + 1] THEN
				parts := parts || p;
				froms := froms || c;
				CONTINUE;
			END IF;
			-- claim it: no other transaction of the group may hold it; and
			-- look at the owner again under the lock, since a member may
			-- have joined and taken it since the unlocked look
			SELECT o.committed_offset, o.member_id INTO c, m FROM estream.group_offset o
			WHERE o.group_id = g.group_id AND o.topic_id = t.topic_id AND o.partition = p
			FOR UPDATE SKIP LOCKED;
			IF NOT FOUND OR (m IS NOT NULL AND estream._member_alive(g.group_id, m)) THEN
				CONTINUE;
			END IF;
			-- the rows go straight into the result; the last offset is
			-- fetch()'s (no PL/pgSQL loop over them)
			RETURN QUERY SELECT t.name, f.partition, f."offset", f."timestamp", f.key, f.value, f.headers
						   FROM estream.fetch(t.name, p, c, max_records - got) f;
			GET DIAGNOSTICS n = ROW_COUNT;
			got := got + n;
			last := CASE WHEN n > 0 THEN estream._last_fetched_offset() END;
			-- past what was returned; over holes only, up to the stable
			-- offset read before the claim
			UPDATE estream.group_offset o
			SET committed_offset = CASE WHEN last IS NOT NULL THEN last + 1
										ELSE greatest(c, stable[p + 1]) END,
				committed_at = now()
			WHERE o.group_id = g.group_id AND o.topic_id = t.topic_id AND o.partition = p;
			EXIT WHEN got >= max_records;
		END LOOP;
		EXIT WHEN got > 0 OR wait_ms = 0 OR clock_timestamp() >= deadline
			OR estream._draining(t.topic_id);
		-- nothing to read in the partitions we could claim: wait for any
		-- partition to move past where the group stands
		IF cardinality(parts) = 0 THEN
			-- every partition with records is claimed by another transaction
			PERFORM pg_sleep(least(0.01, greatest(0, extract(epoch FROM deadline - clock_timestamp()))));
		ELSIF NOT estream._wait_for_records(t.name, parts, froms,
				greatest(1, ceil(extract(epoch FROM deadline - clock_timestamp()) * 1000))::integer) THEN
			-- timed out, or cannot wait (this transaction produced to the
			-- topic and holds its own stable offset back)
			EXIT;
		END IF;
		EXIT WHEN clock_timestamp() >= deadline AND NOT EXISTS (
			SELECT 1 FROM estream.watermarks(t.name) w, unnest(parts, froms) AS x(pp, ff)
			WHERE w.partition = x.pp AND w.stable_offset > x.ff);
	END LOOP;
	RETURN;
END
$$;
COMMENT ON FUNCTION estream._poll_impl(text, text, integer, integer, text) IS
	'Body of poll(): needs read on the group and the topic.';

CREATE OR REPLACE FUNCTION estream._join_group_impl("group" text, topics text[], member_id text,
								   session_timeout_ms integer,
								   auto_offset_reset text)
RETURNS estream.group_membership
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	g estream."group";
	ids integer[];
	mid text := coalesce(_join_group_impl.member_id, gen_random_uuid()::text);
	gen integer;
BEGIN
	IF topics IS NULL OR cardinality(topics) = 0 THEN
		RAISE EXCEPTION 'a member must subscribe to at least one topic' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF mid = '' OR length(mid) > 249 THEN
		RAISE EXCEPTION 'invalid member id "%"', mid USING ERRCODE = 'invalid_name',
			DETAIL = 'Member ids have 1 to 249 characters.';
	END IF;
	IF session_timeout_ms IS NULL OR session_timeout_ms < 100 OR session_timeout_ms > 3600000 THEN
		RAISE EXCEPTION 'session_timeout_ms must be between 100 and 3600000' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM estream._check_reset(_join_group_impl.auto_offset_reset);
	g := estream._authorize_group(_join_group_impl."group", 'read', _join_group_impl.auto_offset_reset, true);
	SELECT array_agg(DISTINCT (estream._authorize_topic(x, 'read')).topic_id) INTO ids FROM unnest(topics) AS x;
	PERFORM 1 FROM estream."group" x WHERE x.group_id = g.group_id FOR UPDATE;
	-- a member rejoining with the same id after its session timed out keeps
	-- the partitions still assigned to it, so the rebalance changes no row
	-- and would not wait for a poll or commit that took them meanwhile:
	-- wait for those transactions here (moved partitions wait through the
	-- rebalance's UPDATE)
	PERFORM 1 FROM estream.group_offset o
	WHERE o.group_id = g.group_id AND o.member_id = mid FOR UPDATE;
	FOR i IN 1 .. cardinality(topics) LOOP
		PERFORM estream._ensure_offsets(g, estream._authorize_topic(topics[i], 'read'),
										_join_group_impl.auto_offset_reset);
	END LOOP;
	INSERT INTO estream.group_member AS m (group_id, member_id, topics, session_timeout_ms)
	VALUES (g.group_id, mid, ids, session_timeout_ms)
	ON CONFLICT ON CONSTRAINT group_member_pkey DO UPDATE
		SET topics = excluded.topics, session_timeout_ms = excluded.session_timeout_ms,
			last_heartbeat = clock_timestamp();
	gen := estream._rebalance(g.group_id);
	RETURN (mid, gen)::estream.group_membership;
END
$$;
COMMENT ON FUNCTION estream._join_group_impl(text, text[], text, integer, text) IS
	'Body of join_group(): needs read on the group and on every topic.';

CREATE OR REPLACE FUNCTION estream._heartbeat_impl("group" text, member_id text)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	g estream."group";
BEGIN
	g := estream._authorize_group(_heartbeat_impl."group", 'read', NULL, false);
	PERFORM estream._require_live_member(g, _heartbeat_impl.member_id);
	UPDATE estream.group_member m SET last_heartbeat = clock_timestamp()
	WHERE m.group_id = g.group_id AND m.member_id = _heartbeat_impl.member_id;
	-- take the group lock and rebalance only when a member has timed out,
	-- so that heartbeats of live members do not queue behind each other
	IF EXISTS (SELECT 1 FROM estream.group_member m
			   WHERE m.group_id = g.group_id AND NOT estream._member_alive(g.group_id, m.member_id)) THEN
		-- if another transaction holds the group (a join, a rebalance), it
		-- is rebalancing: do not queue behind it
		PERFORM 1 FROM estream."group" x WHERE x.group_id = g.group_id FOR UPDATE SKIP LOCKED;
		IF FOUND THEN
			RETURN estream._rebalance(g.group_id);
		END IF;
	END IF;
	RETURN g.generation;
END
$$;
COMMENT ON FUNCTION estream._heartbeat_impl(text, text) IS
	'Body of heartbeat(): needs read on the group.';

CREATE OR REPLACE FUNCTION estream._leave_group_impl("group" text, member_id text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	g estream."group";
BEGIN
	g := estream._authorize_group(_leave_group_impl."group", 'read', NULL, false);
	PERFORM 1 FROM estream."group" x WHERE x.group_id = g.group_id FOR UPDATE;
	DELETE FROM estream.group_member m WHERE m.group_id = g.group_id AND m.member_id = _leave_group_impl.member_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'member "%" is not a member of consumer group "%"', _leave_group_impl.member_id, g.name
			USING ERRCODE = 'QE002';	-- ERRCODE_ESTREAM_UNKNOWN_MEMBER (src/errcodes.h)
	END IF;
	PERFORM estream._rebalance(g.group_id);
END
$$;
COMMENT ON FUNCTION estream._leave_group_impl(text, text) IS
	'Body of leave_group(): needs read on the group.';

CREATE OR REPLACE FUNCTION estream._assignment_impl("group" text, member_id text)
RETURNS TABLE (topic text, partition integer, committed_offset bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
BEGIN
	IF _assignment_impl."group" IS NULL THEN
		RAISE EXCEPTION 'group must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM estream._require('describe', 'group', _assignment_impl."group", NULL);
	RETURN QUERY
	SELECT t.name, o.partition, o.committed_offset
	FROM estream.group_offset o
	JOIN estream."group" g USING (group_id)
	JOIN estream.topic t USING (topic_id)
	WHERE g.name = _assignment_impl."group" AND o.member_id = _assignment_impl.member_id
	  AND estream._allowed('describe', 'topic', t.name, t.owner)
	ORDER BY t.name, o.partition;
END
$$;
COMMENT ON FUNCTION estream._assignment_impl(text, text) IS
	'Body of assignment(): needs describe on the group.';

-- Heartbeat, then read the member's partitions from their committed
-- offsets.  Does not commit: the member commits what it has processed.
-- fetch() checks the read right on each topic.
CREATE OR REPLACE FUNCTION estream._consume_impl("group" text, member_id text, max_records integer,
								wait_ms integer)
RETURNS SETOF estream.group_record
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	a record;
	got integer := 0;
	r record;
	deadline timestamptz := clock_timestamp() + coalesce(wait_ms, 0) * interval '1 millisecond';
	gid integer;
BEGIN
	IF max_records IS NULL OR max_records < 1 THEN
		RAISE EXCEPTION 'max_records must be at least 1' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF wait_ms < 0 THEN
		RAISE EXCEPTION 'wait_ms must not be negative' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF _consume_impl."group" IS NULL THEN
		RAISE EXCEPTION 'group must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM estream._require('read', 'group', _consume_impl."group", NULL);
	PERFORM estream.heartbeat(_consume_impl."group", _consume_impl.member_id);
	SELECT x.group_id INTO gid FROM estream."group" x WHERE x.name = _consume_impl."group";
	LOOP
		FOR a IN SELECT t.name AS topic, o.partition, o.committed_offset
				 FROM estream.group_offset o JOIN estream.topic t USING (topic_id)
				 WHERE o.group_id = gid AND o.member_id = _consume_impl.member_id
				 ORDER BY random() LOOP
			FOR r IN SELECT * FROM estream.fetch(a.topic, a.partition, a.committed_offset, max_records - got) LOOP
				RETURN NEXT (a.topic, r.partition, r."offset", r."timestamp", r.key, r.value, r.headers)::estream.group_record;
				got := got + 1;
			END LOOP;
			EXIT WHEN got >= max_records;
		END LOOP;
		EXIT WHEN got > 0 OR coalesce(wait_ms, 0) = 0 OR clock_timestamp() >= deadline
			OR estream._draining(NULL);
		PERFORM pg_sleep(least(0.05, greatest(0, extract(epoch FROM deadline - clock_timestamp()))));
		-- waiting counts as being alive
		UPDATE estream.group_member m SET last_heartbeat = clock_timestamp()
		WHERE m.group_id = gid AND m.member_id = _consume_impl.member_id;
	END LOOP;
END
$$;
COMMENT ON FUNCTION estream._consume_impl(text, text, integer, integer) IS
	'Body of consume(): needs read on the group and on the topics of the member''s partitions.';
