/* estream--1.0--1.1.sql: consumer groups */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION estream UPDATE TO '1.1'" to load this file. \quit

--
-- Catalog
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
SELECT pg_catalog.pg_extension_config_dump('estream.group_member', '');
SELECT pg_catalog.pg_extension_config_dump('estream.group_offset', '');

CREATE TYPE estream.group_position AS (partition integer, committed_offset bigint);
COMMENT ON TYPE estream.group_position IS 'A partition and the committed offset a seek set for it.';

CREATE TYPE estream.group_membership AS (member_id text, generation integer);
COMMENT ON TYPE estream.group_membership IS 'A session member''s id and the generation of the group''s assignment.';

CREATE TYPE estream.group_record AS (
	topic text, partition integer, "offset" bigint, "timestamp" timestamptz,
	key text, value jsonb, headers jsonb);
COMMENT ON TYPE estream.group_record IS 'A record as poll() and consume() return it, with its topic.';

CREATE FUNCTION estream._wait_for_records(topic text, partitions integer[], from_offsets bigint[],
										  wait_ms integer)
RETURNS boolean
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_wait_for_records';
COMMENT ON FUNCTION estream._wait_for_records(text, integer[], bigint[], integer) IS
	'Waits until one of the partitions has a stable offset above its from_offset, or wait_ms passes.';

--
-- Helpers
--

CREATE FUNCTION estream._check_reset(auto_offset_reset text)
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

-- The group's row, created if missing (Kafka creates groups on first use).
CREATE FUNCTION estream._group(p_group text, p_reset text, p_create boolean)
RETURNS estream."group"
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
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
	SELECT * INTO g FROM estream."group" WHERE name = p_group;
	IF NOT FOUND THEN
		IF NOT p_create THEN
			RAISE EXCEPTION 'consumer group "%" does not exist', p_group
				USING ERRCODE = 'undefined_object',
					  HINT = 'Groups are created by estream.create_group(), poll() or join_group().';
		END IF;
		INSERT INTO estream."group" (name, auto_offset_reset)
			VALUES (p_group, coalesce(p_reset, 'latest'))
			ON CONFLICT (name) DO NOTHING;
		SELECT * INTO g FROM estream."group" WHERE name = p_group;
	END IF;
	RETURN g;
END
$$;
COMMENT ON FUNCTION estream._group(text, text, boolean) IS
	'Looks up a consumer group, creating it if asked.';

CREATE FUNCTION estream._topic(p_topic text)
RETURNS estream.topic
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	t estream.topic;
BEGIN
	IF p_topic IS NULL THEN
		RAISE EXCEPTION 'topic must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT * INTO t FROM estream.topic WHERE name = p_topic;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'topic "%" does not exist', p_topic
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it with estream.create_topic(); estream.topics lists the topics.';
	END IF;
	RETURN t;
END
$$;
COMMENT ON FUNCTION estream._topic(text) IS 'Looks up a topic row by name, or raises an error.';

-- Give every partition of the topic a committed offset row for the group:
-- the log start ("earliest") or the stable offset ("latest").
CREATE FUNCTION estream._ensure_offsets(g estream."group", t estream.topic, p_reset text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF (SELECT count(*) FROM estream.group_offset o
		WHERE o.group_id = g.group_id AND o.topic_id = t.topic_id) < t.partitions THEN
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

CREATE FUNCTION estream._member_alive(p_group_id integer, p_member text)
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

CREATE FUNCTION estream._require_live_member(g estream."group", p_member text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT estream._member_alive(g.group_id, p_member) THEN
		RAISE EXCEPTION 'member "%" is not a live member of consumer group "%"', p_member, g.name
			USING ERRCODE = 'ES002',
				  DETAIL = 'Its session timed out or it left the group; its partitions were reassigned.',
				  HINT = 'Join the group again with estream.join_group().';
	END IF;
END
$$;
COMMENT ON FUNCTION estream._require_live_member(estream."group", text) IS
	'Raises ES002 unless the member is live (Kafka''s UNKNOWN_MEMBER_ID).';

--
-- Groups and committed offsets
--

CREATE FUNCTION estream.create_group("group" text, auto_offset_reset text DEFAULT 'latest')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF EXISTS (SELECT 1 FROM estream."group" g WHERE g.name = create_group."group") THEN
		RAISE EXCEPTION 'consumer group "%" already exists', create_group."group"
			USING ERRCODE = 'duplicate_object';
	END IF;
	PERFORM estream._group(create_group."group", coalesce(auto_offset_reset, 'latest'), true);
END
$$;
COMMENT ON FUNCTION estream.create_group(text, text) IS
	'Creates a consumer group; auto_offset_reset says where its partitions start (earliest or latest).';

CREATE FUNCTION estream.delete_group("group" text, if_exists boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	g estream."group";
	n integer;
BEGIN
	SELECT * INTO g FROM estream."group" x WHERE x.name = delete_group."group" FOR UPDATE;
	IF NOT FOUND THEN
		IF if_exists THEN
			RAISE NOTICE 'consumer group "%" does not exist, skipping', delete_group."group";
			RETURN;
		END IF;
		PERFORM estream._group(delete_group."group", NULL, false);
	END IF;
	SELECT count(*) INTO n FROM estream.group_member m
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
COMMENT ON FUNCTION estream.delete_group(text, boolean) IS
	'Deletes a consumer group and its committed offsets; it must have no live members.';

-- Set the committed offset of one partition, checking the member's
-- ownership when a member commits.
CREATE FUNCTION estream.commit("group" text, topic text, partition integer, "offset" bigint,
							   member_id text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	g estream."group";
	t estream.topic;
	w record;
	o estream.group_offset;
BEGIN
	g := estream._group(commit."group", NULL, member_id IS NULL);
	t := estream._topic(commit.topic);
	IF commit.partition IS NULL OR commit.partition < 0 OR commit.partition >= t.partitions THEN
		RAISE EXCEPTION 'partition % does not exist in topic "%"', coalesce(commit.partition::text, 'NULL'), t.name
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('Topic "%s" has %s partitions, numbered from 0.', t.name, t.partitions);
	END IF;
	SELECT * INTO w FROM estream.watermarks(t.name) x WHERE x.partition = commit.partition;
	IF commit."offset" IS NULL OR commit."offset" < 0 OR commit."offset" > w.stable_offset THEN
		RAISE EXCEPTION 'cannot commit offset % for partition % of topic "%"',
				coalesce(commit."offset"::text, 'NULL'), commit.partition, t.name
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
	WHERE x.group_id = g.group_id AND x.topic_id = t.topic_id AND x.partition = commit.partition
	FOR UPDATE;
	IF member_id IS NOT NULL THEN
		PERFORM estream._require_live_member(g, member_id);
		IF o.member_id IS DISTINCT FROM commit.member_id THEN
			RAISE EXCEPTION 'partition % of topic "%" is not assigned to member "%"', commit.partition, t.name, member_id
				USING ERRCODE = 'ES001',
					  DETAIL = format('The group rebalanced (generation %s); the partition now belongs to %s.',
									  g.generation, coalesce('member "' || o.member_id || '"', 'no member')),
					  HINT = 'Fetch the new assignment with estream.assignment() and resume from its committed offsets.';
		END IF;
	ELSIF o.member_id IS NOT NULL AND estream._member_alive(g.group_id, o.member_id) THEN
		RAISE EXCEPTION 'partition % of topic "%" is assigned to member "%"', commit.partition, t.name, o.member_id
			USING ERRCODE = 'ES001',
				  HINT = 'Pass member_id to commit as that member.';
	END IF;
	UPDATE estream.group_offset x SET committed_offset = commit."offset", committed_at = pg_catalog.now()
	WHERE x.group_id = g.group_id AND x.topic_id = t.topic_id AND x.partition = commit.partition;
END
$$;
COMMENT ON FUNCTION estream.commit(text, text, integer, bigint, text) IS
	'Commits the next offset to consume for a partition, in the caller''s transaction; a session member may commit only partitions assigned to it.';

CREATE FUNCTION estream.committed("group" text, topic text)
RETURNS TABLE (partition integer, committed_offset bigint, member_id text, committed_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT o.partition, o.committed_offset, o.member_id, o.committed_at
	FROM estream.group_offset o
	JOIN estream."group" g USING (group_id)
	JOIN estream.topic t USING (topic_id)
	WHERE g.name = committed."group" AND t.name = committed.topic
	ORDER BY o.partition
$$;
COMMENT ON FUNCTION estream.committed(text, text) IS
	'Committed offsets of a group for a topic, per partition.';

-- Move committed offsets: to an offset, to the log start, to the stable
-- offset, or to the first offset at or after a time; one partition or all.
CREATE FUNCTION estream._seek(p_group text, p_topic text, p_partition integer, p_how text,
							  p_offset bigint, p_ts timestamptz)
RETURNS TABLE (partition integer, committed_offset bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	g estream."group";
	t estream.topic;
BEGIN
	g := estream._group(p_group, NULL, true);
	t := estream._topic(p_topic);
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

CREATE FUNCTION estream.seek("group" text, topic text, partition integer, "offset" bigint)
RETURNS SETOF estream.group_position
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	w record;
BEGIN
	IF seek.partition IS NULL THEN
		RAISE EXCEPTION 'partition must not be null' USING ERRCODE = 'null_value_not_allowed',
			HINT = 'seek_to_beginning(), seek_to_end() and seek_to_time() move every partition.';
	END IF;
	SELECT * INTO w FROM estream.watermarks(seek.topic) x WHERE x.partition = seek.partition;
	IF FOUND AND (seek."offset" IS NULL OR seek."offset" < 0 OR seek."offset" > w.stable_offset) THEN
		RAISE EXCEPTION 'cannot seek to offset % in partition % of topic "%"',
				coalesce(seek."offset"::text, 'NULL'), seek.partition, seek.topic
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('The offset must be between 0 and the stable offset (%s).', w.stable_offset);
	END IF;
	RETURN QUERY SELECT * FROM estream._seek(seek."group", seek.topic, seek.partition, 'offset', seek."offset", NULL);
END
$$;
COMMENT ON FUNCTION estream.seek(text, text, integer, bigint) IS
	'Sets the committed offset of one partition of a group.';

CREATE FUNCTION estream.seek_to_beginning("group" text, topic text, partition integer DEFAULT NULL)
RETURNS SETOF estream.group_position
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM estream._seek("group", topic, partition, 'earliest', NULL, NULL) $$;
COMMENT ON FUNCTION estream.seek_to_beginning(text, text, integer) IS
	'Moves a group to the log start of one partition, or of every partition of the topic.';

CREATE FUNCTION estream.seek_to_end("group" text, topic text, partition integer DEFAULT NULL)
RETURNS SETOF estream.group_position
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM estream._seek("group", topic, partition, 'latest', NULL, NULL) $$;
COMMENT ON FUNCTION estream.seek_to_end(text, text, integer) IS
	'Moves a group to the stable offset of one partition, or of every partition of the topic.';

CREATE FUNCTION estream.seek_to_time("group" text, topic text, ts timestamptz, partition integer DEFAULT NULL)
RETURNS SETOF estream.group_position
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF ts IS NULL THEN
		RAISE EXCEPTION 'ts must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	RETURN QUERY SELECT * FROM estream._seek("group", topic, partition, 'time', NULL, ts);
END
$$;
COMMENT ON FUNCTION estream.seek_to_time(text, text, timestamptz, integer) IS
	'Moves a group to the first offset at or after ts (the stable offset if there is none), per partition.';

--
-- In-transaction consumption
--

CREATE FUNCTION estream.poll("group" text, topic text, max_records integer DEFAULT 500,
							 wait_ms integer DEFAULT 0, auto_offset_reset text DEFAULT NULL)
RETURNS SETOF estream.group_record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
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
	last bigint;
	r record;
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
	g := estream._group(poll."group", poll.auto_offset_reset, true);
	t := estream._topic(poll.topic);
	PERFORM estream._ensure_offsets(g, t, poll.auto_offset_reset);
	deadline := clock_timestamp() + wait_ms * interval '1 millisecond';

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
			last := NULL;
			FOR r IN SELECT * FROM estream.fetch(t.name, p, c, max_records - got) LOOP
				RETURN NEXT (t.name, r.partition, r."offset", r."timestamp", r.key, r.value, r.headers)::estream.group_record;
				last := r."offset";
				got := got + 1;
			END LOOP;
			-- past what was returned; over holes only, up to the stable
			-- offset read before the claim
			UPDATE estream.group_offset o
			SET committed_offset = CASE WHEN last IS NOT NULL THEN last + 1
										ELSE greatest(c, stable[p + 1]) END,
				committed_at = now()
			WHERE o.group_id = g.group_id AND o.topic_id = t.topic_id AND o.partition = p;
			EXIT WHEN got >= max_records;
		END LOOP;
		EXIT WHEN got > 0 OR wait_ms = 0 OR clock_timestamp() >= deadline;
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
COMMENT ON FUNCTION estream.poll(text, text, integer, integer, text) IS
	'Claims partitions of a topic that no other transaction of the group holds, returns their records after the committed offsets and advances those offsets in the caller''s transaction (exactly-once with the caller''s writes).';

--
-- Session members
--

-- Recompute the assignment of a group's partitions to its live members:
-- members time out first; then, per topic, partition i goes to the i-th
-- (mod n) live member subscribed to it, members sorted by id.  The caller
-- holds the group row locked.  Returns the generation.
CREATE FUNCTION estream._rebalance(p_group_id integer)
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

CREATE FUNCTION estream.join_group("group" text, topics text[], member_id text DEFAULT NULL,
								   session_timeout_ms integer DEFAULT 10000,
								   auto_offset_reset text DEFAULT NULL)
RETURNS estream.group_membership
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	g estream."group";
	ids integer[];
	mid text := coalesce(join_group.member_id, gen_random_uuid()::text);
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
	g := estream._group(join_group."group", join_group.auto_offset_reset, true);
	SELECT array_agg(DISTINCT (estream._topic(x)).topic_id) INTO ids FROM unnest(topics) AS x;
	PERFORM 1 FROM estream."group" x WHERE x.group_id = g.group_id FOR UPDATE;
	-- a member rejoining with the same id after its session timed out keeps
	-- the partitions still assigned to it, so the rebalance changes no row
	-- and would not wait for a poll or commit that took them meanwhile:
	-- wait for those transactions here (moved partitions wait through the
	-- rebalance's UPDATE)
	PERFORM 1 FROM estream.group_offset o
	WHERE o.group_id = g.group_id AND o.member_id = mid FOR UPDATE;
	FOR i IN 1 .. cardinality(topics) LOOP
		PERFORM estream._ensure_offsets(g, estream._topic(topics[i]), join_group.auto_offset_reset);
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
COMMENT ON FUNCTION estream.join_group(text, text[], text, integer, text) IS
	'Joins a session member to a group (a new member id if none is given) and rebalances; returns the member id and the generation.';

CREATE FUNCTION estream.heartbeat("group" text, member_id text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	g estream."group";
BEGIN
	g := estream._group(heartbeat."group", NULL, false);
	PERFORM estream._require_live_member(g, heartbeat.member_id);
	UPDATE estream.group_member m SET last_heartbeat = clock_timestamp()
	WHERE m.group_id = g.group_id AND m.member_id = heartbeat.member_id;
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
COMMENT ON FUNCTION estream.heartbeat(text, text) IS
	'Keeps a session member alive; if a member timed out, removes it and rebalances; returns the generation.';

CREATE FUNCTION estream.leave_group("group" text, member_id text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	g estream."group";
BEGIN
	g := estream._group(leave_group."group", NULL, false);
	PERFORM 1 FROM estream."group" x WHERE x.group_id = g.group_id FOR UPDATE;
	DELETE FROM estream.group_member m WHERE m.group_id = g.group_id AND m.member_id = leave_group.member_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'member "%" is not a member of consumer group "%"', leave_group.member_id, g.name
			USING ERRCODE = 'ES002';
	END IF;
	PERFORM estream._rebalance(g.group_id);
END
$$;
COMMENT ON FUNCTION estream.leave_group(text, text) IS
	'Removes a session member from its group and gives its partitions to the others.';

CREATE FUNCTION estream.assignment("group" text, member_id text)
RETURNS TABLE (topic text, partition integer, committed_offset bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT t.name, o.partition, o.committed_offset
	FROM estream.group_offset o
	JOIN estream."group" g USING (group_id)
	JOIN estream.topic t USING (topic_id)
	WHERE g.name = assignment."group" AND o.member_id = assignment.member_id
	ORDER BY t.name, o.partition
$$;
COMMENT ON FUNCTION estream.assignment(text, text) IS
	'The partitions assigned to a session member, with their committed offsets.';

-- Heartbeat, then read the member's partitions from their committed
-- offsets.  Does not commit: the member commits what it has processed.
CREATE FUNCTION estream.consume("group" text, member_id text, max_records integer DEFAULT 500,
								wait_ms integer DEFAULT 0)
RETURNS SETOF estream.group_record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
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
	PERFORM estream.heartbeat(consume."group", consume.member_id);
	SELECT x.group_id INTO gid FROM estream."group" x WHERE x.name = consume."group";
	LOOP
		FOR a IN SELECT t.name AS topic, o.partition, o.committed_offset
				 FROM estream.group_offset o JOIN estream.topic t USING (topic_id)
				 WHERE o.group_id = gid AND o.member_id = consume.member_id
				 ORDER BY random() LOOP
			FOR r IN SELECT * FROM estream.fetch(a.topic, a.partition, a.committed_offset, max_records - got) LOOP
				RETURN NEXT (a.topic, r.partition, r."offset", r."timestamp", r.key, r.value, r.headers)::estream.group_record;
				got := got + 1;
			END LOOP;
			EXIT WHEN got >= max_records;
		END LOOP;
		EXIT WHEN got > 0 OR coalesce(wait_ms, 0) = 0 OR clock_timestamp() >= deadline;
		PERFORM pg_sleep(least(0.05, greatest(0, extract(epoch FROM deadline - clock_timestamp()))));
		-- waiting counts as being alive
		UPDATE estream.group_member m SET last_heartbeat = clock_timestamp()
		WHERE m.group_id = gid AND m.member_id = consume.member_id;
	END LOOP;
END
$$;
COMMENT ON FUNCTION estream.consume(text, text, integer, integer) IS
	'For session members: heartbeats, then returns records of the member''s partitions from their committed offsets (commit with estream.commit() after processing).';

--
-- Views
--

CREATE VIEW estream.groups AS
SELECT g.name AS "group",
	   g.auto_offset_reset,
	   g.generation,
	   (SELECT count(*) FROM estream.group_member m
		WHERE m.group_id = g.group_id AND estream._member_alive(g.group_id, m.member_id)) AS live_members,
	   (SELECT array_agg(DISTINCT t.name ORDER BY t.name) FROM estream.group_offset o
		JOIN estream.topic t USING (topic_id) WHERE o.group_id = g.group_id) AS topics,
	   g.created_at
FROM estream."group" g;
COMMENT ON VIEW estream.groups IS
	'Consumer groups with their generation, live session members and topics.';

CREATE VIEW estream.group_members AS
SELECT g.name AS "group",
	   m.member_id,
	   ARRAY(SELECT t.name FROM estream.topic t WHERE t.topic_id = ANY (m.topics) ORDER BY t.name) AS topics,
	   m.session_timeout_ms,
	   m.joined_at,
	   m.last_heartbeat,
	   estream._member_alive(g.group_id, m.member_id) AS alive,
	   (SELECT array_agg(t.name || ':' || o.partition ORDER BY t.name, o.partition)
		FROM estream.group_offset o JOIN estream.topic t USING (topic_id)
		WHERE o.group_id = g.group_id AND o.member_id = m.member_id) AS assignment
FROM estream.group_member m
JOIN estream."group" g USING (group_id);
COMMENT ON VIEW estream.group_members IS
	'Session members with their subscriptions, heartbeat, liveness and assigned partitions.';

CREATE VIEW estream.consumer_lag AS
SELECT g.name AS "group",
	   t.name AS topic,
	   o.partition,
	   o.committed_offset,
	   w.stable_offset,
	   greatest(w.stable_offset - greatest(o.committed_offset, w.log_start_offset), 0) AS lag,
	   clock_timestamp() - f."timestamp" AS oldest_unconsumed_age,
	   o.member_id,
	   o.committed_at
FROM estream.group_offset o
JOIN estream."group" g USING (group_id)
JOIN estream.topic t USING (topic_id)
CROSS JOIN LATERAL estream.watermarks(t.name) w
LEFT JOIN LATERAL estream.fetch_binary(t.name, o.partition, least(o.committed_offset, w.stable_offset), 1) f ON true
WHERE w.partition = o.partition;
COMMENT ON VIEW estream.consumer_lag IS
	'Per group and partition: committed offset, stable offset, lag in offsets and age of the oldest unconsumed record.';
