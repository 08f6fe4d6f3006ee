-- src/sql/privileges.sql: Rights in Kafka's ACL model: who may do what, and the functions that
-- grant, revoke and check rights (docs/security.md).
--
-- Replayed by every update script: every statement here must be
-- re-runnable (CREATE OR REPLACE, COMMENT ON).

--
-- Predefined roles, as PostgreSQL's pg_monitor: fixed rights on every
-- topic, group and the cluster (see docs/security.md).  Roles belong to the
-- cluster: they are made by the first database that installs estream 1.4
-- and stay when the extension is dropped.
--
DO $$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['estream_admin', 'estream_producer', 'estream_consumer', 'estream_monitor'] LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) r) THEN
			EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
		END IF;
	END LOOP;
END
$$;
COMMENT ON ROLE estream_admin IS
	'estream: every right on every topic and group, and on the cluster (create topics, grant rights, run maintenance).';
COMMENT ON ROLE estream_producer IS 'estream: write (produce) to every topic.';
COMMENT ON ROLE estream_consumer IS 'estream: read every topic and use every consumer group.';
COMMENT ON ROLE estream_monitor IS
	'estream: describe every topic, its configuration, every group and the cluster (views, lag, workers), read-only.';


--
-- Entry points.  Each function a user calls that changes estream's tables
-- is the C gateway estream_gateway(): it notes the caller and calls the
-- SECURITY DEFINER body estream._<name>_impl with the same arguments.
-- Bodies check the caller's rights (estream._caller()) first.
--

CREATE OR REPLACE FUNCTION estream._allowed(operation text, resource_type text, resource_name text, owner regrole)
RETURNS boolean
LANGUAGE C STABLE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_allowed_sql';
COMMENT ON FUNCTION estream._allowed(text, text, text, regrole) IS
	'Whether the caller may do an operation on a resource (owner: the topic''s owner); the views show only what it allows.';

CREATE OR REPLACE FUNCTION estream._require(operation text, resource_type text, resource_name text, owner regrole)
RETURNS void
LANGUAGE C STABLE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_require_sql';
COMMENT ON FUNCTION estream._require(text, text, text, regrole) IS
	'Raises 42501 unless the caller may do an operation on a resource.';

CREATE OR REPLACE FUNCTION estream._caller()
RETURNS regrole
LANGUAGE C STABLE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_caller_sql';
COMMENT ON FUNCTION estream._caller() IS
	'The role that called the estream function being run, whose rights it checks.';

CREATE OR REPLACE FUNCTION estream._check_operation(operation text, resource_type text)
RETURNS text
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'estream_check_operation';
COMMENT ON FUNCTION estream._check_operation(text, text) IS
	'The operation''s name in lower case, or an error if it is not an operation on that kind of resource.';

CREATE OR REPLACE FUNCTION estream._lock_name(space text, name text, wait boolean)
RETURNS boolean
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_lock_name';
COMMENT ON FUNCTION estream._lock_name(text, text, boolean) IS
	'Locks a name (of a topic or group being created) for the transaction in estream''s own lock space, which no role can take from SQL; false if not granted without waiting.';

CREATE OR REPLACE FUNCTION estream.has_right(role regrole, operation text, resource_type text,
								  resource_name text DEFAULT NULL)
RETURNS boolean
LANGUAGE C STABLE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_has_right';
COMMENT ON FUNCTION estream.has_right(regrole, text, text, text) IS
	'Whether a role may do the operations (a comma-separated list) on a topic, a group or the cluster, as has_table_privilege() tells for tables.';

-- The topic row after checking the caller's right on it: 42501 comes before
-- 42704, so that a role without rights cannot tell which topics exist.
CREATE OR REPLACE FUNCTION estream._authorize_topic(p_topic text, p_operation text)
RETURNS estream.topic
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	t estream.topic;
BEGIN
	IF p_topic IS NULL THEN
		RAISE EXCEPTION 'topic must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT * INTO t FROM estream.topic x WHERE x.name = p_topic;
	PERFORM estream._require(p_operation, 'topic', p_topic, t.owner);
	IF t.topic_id IS NULL THEN
		RAISE EXCEPTION 'topic "%" does not exist', p_topic
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it with estream.create_topic(); estream.topics lists the topics.';
	END IF;
	RETURN t;
END
$$;
COMMENT ON FUNCTION estream._authorize_topic(text, text) IS
	'Looks up a topic after checking the caller''s right (42501 before 42704).';

-- The group row after checking the caller's right on it; created if asked
CREATE OR REPLACE FUNCTION estream._authorize_group(p_group text, p_operation text, p_reset text, p_create boolean)
RETURNS estream."group"
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
BEGIN
	IF p_group IS NULL THEN
		RAISE EXCEPTION 'group must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM estream._require(p_operation, 'group', p_group, NULL);
	RETURN estream._group(p_group, p_reset, p_create);
END
$$;
COMMENT ON FUNCTION estream._authorize_group(text, text, text, boolean) IS
	'Looks up (or creates) a consumer group after checking the caller''s right on it.';

-- The worker's step: a dropped role's rights go, and its topics pass to
-- the extension's owner (estream's rows are not tracked by pg_shdepend, so
-- DROP ROLE does not see them).
CREATE OR REPLACE FUNCTION estream._forget_dropped_roles()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	v_rights bigint;
	v_topics bigint;
BEGIN
	DELETE FROM estream.acl a
	 WHERE a.role::oid <> 0 AND NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = a.role::oid);
	GET DIAGNOSTICS v_rights = ROW_COUNT;
	UPDATE estream.topic t
	   SET owner = (SELECT e.extowner FROM pg_extension e WHERE e.extname = 'estream')
	 WHERE NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = t.owner::oid);
	GET DIAGNOSTICS v_topics = ROW_COUNT;
	RETURN v_rights + v_topics;
END
$$;
COMMENT ON FUNCTION estream._forget_dropped_roles() IS
	'Worker: deletes the rights of dropped roles and gives their topics to the extension''s owner; returns how many rows changed.';

--
-- Rights administration
--

-- The role of a right: "public" for PUBLIC (0), else a role name.
CREATE OR REPLACE FUNCTION estream._acl_role(p_role text)
RETURNS regrole
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
BEGIN
	IF p_role IS NULL THEN
		RAISE EXCEPTION 'role must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF lower(p_role) = 'public' THEN
		RETURN 0::oid::regrole;
	END IF;
	RETURN p_role::regrole;
END
$$;
COMMENT ON FUNCTION estream._acl_role(text) IS
	'The role a right is granted to: 0 for "public", else the role (an error if it does not exist).';

-- Checks the arguments of grant_acl()/revoke_acl() and that the caller may
-- manage the right: the alter right on the cluster, or ownership of the
-- topic for a literal right on one topic.  Returns the normalized
-- operations and the resource name to store.
CREATE OR REPLACE FUNCTION estream._acl_args(p_operation text, p_resource_type text, p_resource_name text,
								  p_pattern_type text, OUT r_ops text[], OUT r_name text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	t estream.topic;
BEGIN
	IF p_resource_type IS NULL OR p_resource_type NOT IN ('topic', 'group', 'cluster') THEN
		RAISE EXCEPTION 'invalid resource type "%"', coalesce(p_resource_type, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Rights are granted on a "topic", a consumer "group" or the "cluster".';
	END IF;
	IF p_pattern_type IS NULL OR p_pattern_type NOT IN ('literal', 'prefixed') THEN
		RAISE EXCEPTION 'invalid pattern type "%"', coalesce(p_pattern_type, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A right names one resource ("literal"; "*" for every one) or every resource whose name starts with a prefix ("prefixed").';
	END IF;
	IF p_operation IS NULL THEN
		RAISE EXCEPTION 'operation must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT array_agg(DISTINCT estream._check_operation(o, p_resource_type))
	  INTO r_ops FROM unnest(string_to_array(p_operation, ',')) o;
	IF p_resource_type = 'cluster' THEN
		IF p_resource_name IS NOT NULL OR p_pattern_type <> 'literal' THEN
			RAISE EXCEPTION 'the cluster has no name'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Leave resource_name out (null) for a right on the cluster.';
		END IF;
		r_name := '';
	ELSE
		IF p_resource_name IS NULL OR p_resource_name = '' THEN
			RAISE EXCEPTION 'a right on a % needs a resource name', p_resource_type
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Give a name, "*" for every one, or a prefix with pattern_type => ''prefixed''.';
		END IF;
		IF p_resource_type = 'topic' AND p_pattern_type = 'literal' AND p_resource_name <> '*' THEN
			PERFORM estream._check_topic_name(p_resource_name);
		END IF;
		r_name := p_resource_name;
	END IF;

	IF NOT estream._allowed('alter', 'cluster', NULL, NULL) THEN
		IF p_resource_type = 'topic' AND p_pattern_type = 'literal' THEN
			SELECT * INTO t FROM estream.topic x WHERE x.name = p_resource_name;
		END IF;
		IF t.topic_id IS NULL OR NOT pg_has_role(estream._caller(), t.owner, 'USAGE') THEN
			RAISE EXCEPTION 'permission denied to manage estream rights'
				USING ERRCODE = 'insufficient_privilege',
					  DETAIL = format('Role "%s" has no alter right on the cluster%s.', estream._caller(),
									  CASE WHEN p_resource_type = 'topic' AND p_pattern_type = 'literal'
										   THEN format(' and does not own topic "%s"', p_resource_name) ELSE '' END),
					  HINT = 'Rights are managed by roles with the alter right on the cluster (estream_admin); a topic''s owner manages the rights on that topic.';
		END IF;
	END IF;
END
$$;
COMMENT ON FUNCTION estream._acl_args(text, text, text, text) IS
	'Checks the arguments of grant_acl() and revoke_acl() and the caller''s right to manage them.';

CREATE OR REPLACE FUNCTION estream._grant_acl_impl(role text, operation text, resource_type text,
										resource_name text, pattern_type text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	a record;
	v_role regrole;
BEGIN
	v_role := estream._acl_role(role);
	a := estream._acl_args(operation, resource_type, resource_name, pattern_type);
	INSERT INTO estream.acl AS x (role, resource_type, pattern_type, resource_name, operation, granted_by)
	SELECT v_role, resource_type, pattern_type, a.r_name, o, estream._caller()
	  FROM unnest(a.r_ops) o
	ON CONFLICT DO NOTHING;
END
$$;
COMMENT ON FUNCTION estream._grant_acl_impl(text, text, text, text, text) IS
	'Body of grant_acl(): needs alter on the cluster, or ownership of the topic for a literal right on it.';

CREATE OR REPLACE FUNCTION estream.grant_acl(role text, operation text, resource_type text,
								  resource_name text DEFAULT NULL, pattern_type text DEFAULT 'literal')
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.grant_acl(text, text, text, text, text) IS
	'Grants operations (comma-separated: read, write, describe, describe_configs, alter_configs, alter, create, delete, all) on a topic, a group (a name, * for all, or a prefix with pattern_type => prefixed) or the cluster to a role or public.';

CREATE OR REPLACE FUNCTION estream._revoke_acl_impl(role text, operation text, resource_type text,
										 resource_name text, pattern_type text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	a record;
	v_role regrole;
	n bigint;
BEGIN
	v_role := estream._acl_role(role);
	a := estream._acl_args(operation, resource_type, resource_name, pattern_type);
	DELETE FROM estream.acl x
	 WHERE x.role::oid = v_role::oid AND x.resource_type = _revoke_acl_impl.resource_type
	   AND x.pattern_type = _revoke_acl_impl.pattern_type AND x.resource_name = a.r_name
	   AND (x.operation = ANY (a.r_ops) OR 'all' = ANY (a.r_ops));
	GET DIAGNOSTICS n = ROW_COUNT;
	IF n = 0 THEN
		RAISE NOTICE 'role "%" has no such right, nothing revoked', role;
	ELSIF EXISTS (SELECT 1 FROM estream.acl x
				   WHERE x.role::oid = v_role::oid AND x.resource_type = _revoke_acl_impl.resource_type
					 AND x.pattern_type = _revoke_acl_impl.pattern_type AND x.resource_name = a.r_name
					 AND x.operation = 'all') THEN
		RAISE NOTICE 'role "%" keeps the "all" right on this resource', role
			USING HINT = 'Revoke "all" and grant the operations it should keep.';
	END IF;
END
$$;
COMMENT ON FUNCTION estream._revoke_acl_impl(text, text, text, text, text) IS
	'Body of revoke_acl(): needs alter on the cluster, or ownership of the topic for a literal right on it.';

CREATE OR REPLACE FUNCTION estream.revoke_acl(role text, operation text, resource_type text,
								   resource_name text DEFAULT NULL, pattern_type text DEFAULT 'literal')
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream.revoke_acl(text, text, text, text, text) IS
	'Revokes operations on a resource from a role or public, exactly as granted ("all" revokes every operation of the resource pattern).';

-- The rights a caller may see, from a function: the view has a UNION, and
-- PostgreSQL flattens a UNION ALL view into branches that lose the
-- security barrier, so a caller's function could see hidden rows.
CREATE OR REPLACE FUNCTION estream._acls_impl()
RETURNS TABLE (role text, resource_type text, pattern_type text, resource_name text, operation text,
			   predefined boolean, granted_by regrole, granted_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict error
DECLARE
	v_all boolean := estream._allowed('describe', 'cluster', NULL, NULL);
BEGIN
	RETURN QUERY
	SELECT CASE WHEN a.role::oid = 0 THEN 'public' ELSE a.role::text END,
		   a.resource_type, a.pattern_type, NULLIF(a.resource_name, ''), a.operation, false,
		   a.granted_by, a.granted_at
	  FROM estream.acl a
	 WHERE v_all OR a.role::oid = 0 OR pg_has_role(estream._caller(), a.role::oid, 'USAGE')
	UNION ALL
	SELECT p.r, p.rt, 'literal', p.rn, p.op, true, NULL::regrole, NULL::timestamptz
	  FROM (VALUES ('estream_admin', 'cluster', NULL, 'all'),
				   ('estream_admin', 'topic', '*', 'all'),
				   ('estream_admin', 'group', '*', 'all'),
				   ('estream_producer', 'topic', '*', 'write'),
				   ('estream_consumer', 'topic', '*', 'read'),
				   ('estream_consumer', 'group', '*', 'read'),
				   ('estream_monitor', 'cluster', NULL, 'describe'),
				   ('estream_monitor', 'topic', '*', 'describe'),
				   ('estream_monitor', 'topic', '*', 'describe_configs'),
				   ('estream_monitor', 'group', '*', 'describe'))
		   AS p(r, rt, rn, op);
END
$$;
COMMENT ON FUNCTION estream._acls_impl() IS
	'Body of _acls(): every right to roles that may describe the cluster, else those of public and of the caller''s roles, and the predefined roles'' rights.';

CREATE OR REPLACE FUNCTION estream._acls()
RETURNS TABLE (role text, resource_type text, pattern_type text, resource_name text, operation text,
			   predefined boolean, granted_by regrole, granted_at timestamptz)
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'estream_gateway';
COMMENT ON FUNCTION estream._acls() IS
	'The rights the caller may see (source of estream.acls).';
