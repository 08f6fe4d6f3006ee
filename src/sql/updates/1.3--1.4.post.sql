-- src/sql/updates/1.3--1.4.post.sql: what the update from 1.3 to 1.4
-- does once every function exists: from table privileges to rights.

--
-- From table privileges to rights.  Before 1.4 a role produced with INSERT
-- on a topic's segments, read with SELECT on its log, used consumer groups
-- with privileges on the group tables and ran maintenance with EXECUTE on
-- run_maintenance().  Each such privilege becomes the right it stood for
-- (docs/security.md lists them); then every privilege on estream's tables,
-- views, logs and segments held by another role than their owner goes,
-- the logs and segments pass to the extension's owner, and triggers and
-- rules that others could have put on them go.
--
DO $$
DECLARE
	v_owner oid := (SELECT e.extowner FROM pg_catalog.pg_extension e
					 WHERE e.extname OPERATOR(pg_catalog.=) 'estream');
	r record;
	col record;
	v_n bigint;
	v_grantee oid;
BEGIN
	-- a topic whose log belongs to another role: that role owns the topic
	UPDATE estream.topic t SET owner = c.relowner::regrole
	  FROM pg_catalog.pg_class c
	 WHERE c.oid = t.log_relid AND c.relowner <> v_owner;

	-- SELECT on a log: read; INSERT on one of its segments: write
	INSERT INTO estream.acl (role, resource_type, pattern_type, resource_name, operation, granted_by)
	SELECT DISTINCT a.grantee::regrole, 'topic', 'literal', t.name,
		   CASE WHEN a.privilege_type = 'SELECT' THEN 'read' ELSE 'write' END, v_owner::regrole
	  FROM estream.topic t
	  JOIN pg_catalog.pg_class c
		ON c.oid = t.log_relid
		OR c.oid IN (SELECT s.relid FROM estream.segment s WHERE s.topic_id = t.topic_id)
	  CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
	 WHERE a.grantee <> c.relowner AND a.grantee <> t.owner::oid
	   AND ((c.oid = t.log_relid AND a.privilege_type = 'SELECT')
			OR (c.oid <> t.log_relid AND a.privilege_type = 'INSERT'))
	ON CONFLICT DO NOTHING;
	GET DIAGNOSTICS v_n = ROW_COUNT;

	-- the group tables: read (poll, commit, join) and delete every group;
	-- the views: describe every topic or group
	INSERT INTO estream.acl (role, resource_type, pattern_type, resource_name, operation, granted_by)
	SELECT DISTINCT a.grantee::regrole, m.resource_type, 'literal', '*', m.operation, v_owner::regrole
	  FROM (VALUES ('estream.group_offset', 'UPDATE', 'group', 'read'),
				   ('estream.group', 'DELETE', 'group', 'delete'),
				   ('estream.groups', 'SELECT', 'group', 'describe'),
				   ('estream.group_members', 'SELECT', 'group', 'describe'),
				   ('estream.consumer_lag', 'SELECT', 'group', 'describe'),
				   ('estream.topics', 'SELECT', 'topic', 'describe'),
				   ('estream._partitions_1_3', 'SELECT', 'topic', 'describe'),
				   ('estream.segments', 'SELECT', 'topic', 'describe'))
		   AS m(rel, privilege, resource_type, operation)
	  JOIN pg_catalog.pg_class c ON c.oid = m.rel::regclass
	  CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
	 WHERE a.grantee <> c.relowner AND a.privilege_type = m.privilege
	ON CONFLICT DO NOTHING;

	-- run_maintenance(): the cluster_action right on the cluster
	INSERT INTO estream.acl (role, resource_type, pattern_type, resource_name, operation, granted_by)
	SELECT DISTINCT a.grantee::regrole, 'cluster', 'literal', '', 'cluster_action', v_owner::regrole
	  FROM pg_catalog.pg_proc p
	  CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) a
	 WHERE p.oid = 'estream.run_maintenance(text)'::regprocedure
	   AND a.grantee <> p.proowner AND a.privilege_type = 'EXECUTE'
	ON CONFLICT DO NOTHING;

	SELECT count(*) INTO v_n FROM estream.acl;
	IF v_n > 0 THEN
		RAISE NOTICE 'estream: % table privileges became rights (see estream.acls)', v_n;
	END IF;

	-- every relation of the schema but the logs of topics a dropped
	-- extension left behind (user data, not estream's any more)
	FOR r IN SELECT c.oid::regclass AS rel, c.relkind, c.relowner,
					(c.relname ~ '^log_[0-9]+(_[0-9]+)?$') AS is_log
			   FROM pg_catalog.pg_class c
			  WHERE c.relnamespace = 'estream'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'S')
				AND (c.relname !~ '^log_[0-9]+(_[0-9]+)?$' OR c.oid IN (SELECT t.log_relid FROM estream.topic t UNION SELECT s.relid FROM estream.segment s))
	LOOP
		IF r.is_log AND r.relowner <> v_owner THEN
			EXECUTE format('ALTER TABLE %s OWNER TO %I', r.rel, (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = v_owner));
		END IF;
		FOR v_grantee IN SELECT DISTINCT a.grantee
						   FROM pg_catalog.pg_class c CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
						  WHERE c.oid = r.rel AND a.grantee <> c.relowner
		LOOP
			EXECUTE format('REVOKE ALL ON %s FROM %s CASCADE', r.rel,
						   CASE WHEN v_grantee = 0 THEN 'PUBLIC'
								ELSE quote_ident((SELECT rolname FROM pg_catalog.pg_roles WHERE oid = v_grantee)) END);
		END LOOP;
		FOR col IN SELECT DISTINCT att.attname, a.grantee
					 FROM pg_catalog.pg_attribute att CROSS JOIN LATERAL pg_catalog.aclexplode(att.attacl) a
					WHERE att.attrelid = r.rel AND att.attacl IS NOT NULL
		LOOP
			EXECUTE format('REVOKE ALL (%I) ON %s FROM %s CASCADE', col.attname, r.rel,
						   CASE WHEN col.grantee = 0 THEN 'PUBLIC'
								ELSE quote_ident((SELECT rolname FROM pg_catalog.pg_roles WHERE oid = col.grantee)) END);
		END LOOP;
	END LOOP;

	-- A log or segment may carry what its owner put there before 1.4 (a
	-- role could own one, or hold TRIGGER on it), and estream now writes it
	-- as the extension's owner: code that a non-superuser controls would
	-- run with those rights.  A log gets back exactly the shape
	-- create_topic() gives it.  Its columns must be those of a log.
	FOR r IN SELECT t.name, t.log_relid FROM estream.topic t
			  WHERE (SELECT pg_catalog.array_agg(a.attname::text || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod)
												 ORDER BY a.attnum)
					   FROM pg_catalog.pg_attribute a
					  WHERE a.attrelid = t.log_relid AND a.attnum > 0 AND NOT a.attisdropped)
					IS DISTINCT FROM ARRAY['segment integer', 'partition integer', 'offset bigint',
										   'ts timestamp with time zone', 'key bytea', 'value jsonb',
										   'value_bin bytea', 'headers jsonb']
	LOOP
		RAISE EXCEPTION 'the log % of topic "%" was changed: its columns are not those of an estream log', r.log_relid, r.name
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'Columns were added to it, or their types changed, outside estream.',
				  HINT = 'Give it back the columns segment integer, partition integer, "offset" bigint, ts timestamptz, key bytea, value jsonb, value_bin bytea, headers jsonb, then update again.';
	END LOOP;
	FOR r IN SELECT c.oid::regclass AS rel, a.attname
			   FROM pg_catalog.pg_class c JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
			  WHERE c.oid IN (SELECT t.log_relid FROM estream.topic t UNION SELECT s.relid FROM estream.segment s)
				AND a.attnum > 0 AND a.atthasdef
	LOOP
		EXECUTE format('ALTER TABLE %s ALTER COLUMN %I DROP DEFAULT', r.rel, r.attname);
		RAISE WARNING 'estream: dropped the default of column % of %', r.attname, r.rel;
	END LOOP;
	-- constraints on them (but the segments' primary keys), and foreign keys
	-- that point at them
	FOR r IN SELECT cn.conname, cn.conrelid::regclass AS rel
			   FROM pg_catalog.pg_constraint cn
			  WHERE (cn.conrelid IN (SELECT t.log_relid FROM estream.topic t UNION SELECT s.relid FROM estream.segment s)
					 AND cn.contype <> 'p' AND cn.conislocal)
				 OR (cn.confrelid IN (SELECT t.log_relid FROM estream.topic t UNION SELECT s.relid FROM estream.segment s)
					 AND cn.contype = 'f')
	LOOP
		EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', r.rel, r.conname);
		RAISE WARNING 'estream: dropped constraint "%" of %', r.conname, r.rel;
	END LOOP;
	FOR r IN SELECT i.indexrelid::regclass AS idx
			   FROM pg_catalog.pg_index i
			  WHERE i.indrelid IN (SELECT t.log_relid FROM estream.topic t UNION SELECT s.relid FROM estream.segment s)
				AND NOT i.indisprimary
				AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits h WHERE h.inhrelid = i.indexrelid)
	LOOP
		EXECUTE format('DROP INDEX %s', r.idx);
		RAISE WARNING 'estream: dropped index %', r.idx;
	END LOOP;
	FOR r IN SELECT pg_catalog.format('%I.%I', n.nspname, x.stxname) AS stat
			   FROM pg_catalog.pg_statistic_ext x JOIN pg_catalog.pg_namespace n ON n.oid = x.stxnamespace
			  WHERE x.stxrelid IN (SELECT t.log_relid FROM estream.topic t UNION SELECT s.relid FROM estream.segment s)
	LOOP
		EXECUTE format('DROP STATISTICS %s', r.stat);
		RAISE WARNING 'estream: dropped statistics %', r.stat;
	END LOOP;
	FOR r IN SELECT pol.polname, pol.polrelid::regclass AS rel
			   FROM pg_catalog.pg_policy pol
			  WHERE pol.polrelid IN (SELECT t.log_relid FROM estream.topic t UNION SELECT s.relid FROM estream.segment s)
	LOOP
		EXECUTE format('DROP POLICY %I ON %s', r.polname, r.rel);
		RAISE WARNING 'estream: dropped policy "%" on %', r.polname, r.rel;
	END LOOP;
	FOR r IN SELECT c.oid::regclass AS rel FROM pg_catalog.pg_class c
			  WHERE c.oid IN (SELECT t.log_relid FROM estream.topic t UNION SELECT s.relid FROM estream.segment s)
				AND (c.relrowsecurity OR c.relforcerowsecurity)
	LOOP
		EXECUTE format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY', r.rel);
	END LOOP;
	FOR r IN SELECT rw.rulename, rw.ev_class::regclass AS rel
			   FROM pg_catalog.pg_rewrite rw
			  WHERE rw.ev_class IN (SELECT t.log_relid FROM estream.topic t UNION SELECT s.relid FROM estream.segment s)
				AND rw.rulename <> '_RETURN'
	LOOP
		EXECUTE format('DROP RULE %I ON %s', r.rulename, r.rel);
		RAISE WARNING 'estream: dropped rule "%" on %', r.rulename, r.rel;
	END LOOP;
	-- Triggers on estream's tables, logs and segments run in every
	-- producer's transaction, the worker's (a superuser) among them: those
	-- whose function a non-superuser owns go.
	FOR r IN SELECT tg.tgname, tg.tgrelid::regclass AS rel, p.oid::regprocedure AS fn, ro.rolsuper
			   FROM pg_catalog.pg_trigger tg
			   JOIN pg_catalog.pg_class c ON c.oid = tg.tgrelid
			   JOIN pg_catalog.pg_proc p ON p.oid = tg.tgfoid
			   JOIN pg_catalog.pg_roles ro ON ro.oid = p.proowner
			  WHERE NOT tg.tgisinternal
				AND ((c.relnamespace = 'estream'::regnamespace AND c.relname !~ '^log_[0-9]+(_[0-9]+)?$')
					 OR c.oid IN (SELECT t.log_relid FROM estream.topic t UNION SELECT s.relid FROM estream.segment s))
				AND tg.tgfoid <> 'estream._topic_invalidate()'::regprocedure
	LOOP
		IF r.rolsuper THEN
			RAISE WARNING 'estream: trigger "%" on % (function %) runs in every producer''s transaction', r.tgname, r.rel, r.fn
				USING HINT = 'Check that it should; estream''s logs are written only through estream.';
		ELSE
			EXECUTE format('DROP TRIGGER %I ON %s', r.tgname, r.rel);
			RAISE WARNING 'estream: dropped trigger "%" on % (function %): it would run as the worker', r.tgname, r.rel, r.fn;
		END IF;
	END LOOP;

	-- Only the owner creates objects in schema estream: a function put
	-- there by another role could be what a body's call resolves to (an
	-- overload of estream.fetch() with a closer signature, say), and run
	-- with the owner's rights.  Such objects made before 1.4 go.
	FOR v_grantee IN SELECT a.grantee
					   FROM pg_catalog.pg_namespace n CROSS JOIN LATERAL pg_catalog.aclexplode(n.nspacl) a
					  WHERE n.nspname = 'estream' AND a.grantee <> n.nspowner AND a.privilege_type = 'CREATE'
	LOOP
		EXECUTE format('REVOKE CREATE ON SCHEMA estream FROM %s CASCADE',
					   CASE WHEN v_grantee = 0 THEN 'PUBLIC'
							ELSE quote_ident((SELECT rolname FROM pg_catalog.pg_roles WHERE oid = v_grantee)) END);
	END LOOP;
	FOR r IN SELECT p.oid::regprocedure AS fn, p.prokind
			   FROM pg_catalog.pg_proc p
			  WHERE p.pronamespace = 'estream'::regnamespace
				AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
								 WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
	LOOP
		EXECUTE format('DROP %s %s CASCADE',
					   CASE r.prokind WHEN 'a' THEN 'AGGREGATE' WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, r.fn);
		RAISE WARNING 'estream: dropped %, which is not estream''s, from schema estream', r.fn;
	END LOOP;
	FOR r IN SELECT o.oid::regoperator AS op
			   FROM pg_catalog.pg_operator o
			  WHERE o.oprnamespace = 'estream'::regnamespace
				AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
								 WHERE d.classid = 'pg_operator'::regclass AND d.objid = o.oid AND d.deptype = 'e')
	LOOP
		EXECUTE format('DROP OPERATOR %s CASCADE', r.op);
		RAISE WARNING 'estream: dropped operator %, which is not estream''s, from schema estream', r.op;
	END LOOP;

	-- comments are readable by every role: no topic names in them
	FOR r IN SELECT t.log_relid FROM estream.topic t LOOP
		EXECUTE format('COMMENT ON TABLE %s IS %L', r.log_relid,
					   'Log of an estream topic (do not modify directly; estream.topics names it).');
	END LOOP;
END
$$;

-- the 1.3 shape of estream.partitions, kept for its grants until here
DROP VIEW estream._partitions_1_3;

-- Sessions cache whether this database has rights and every topic's
-- owner: make them look again (the trigger on estream.topic invalidates
-- their caches).
UPDATE estream.topic SET config = config;
