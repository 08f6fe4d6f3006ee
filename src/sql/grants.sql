-- src/sql/grants.sql: who may call what.  Last in every script (fresh and
-- update), after every function and view exists.
--
-- The schema is open to every role: estream's own rights decide (see
-- src/sql/privileges.sql and docs/security.md).  Internal functions (a
-- leading "_") are for the bodies and the worker, except those the views
-- call on the caller's behalf, which check rights themselves.

-- Only the extension's owner holds privileges on estream's own tables,
-- sequences and views, default privileges notwithstanding; the grants
-- below are the only others.
DO $$
DECLARE
	r record;
BEGIN
	FOR r IN SELECT c.oid::regclass AS rel, a.grantee
			   FROM pg_catalog.pg_class c CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
			  WHERE c.relnamespace OPERATOR(pg_catalog.=) 'estream'::regnamespace
				AND a.grantee OPERATOR(pg_catalog.<>) c.relowner
				AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
							 WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::regclass
							   AND d.objid OPERATOR(pg_catalog.=) c.oid AND d.deptype OPERATOR(pg_catalog.=) 'e')
	LOOP
		EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM %s', r.rel,
			CASE WHEN r.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
				 ELSE pg_catalog.quote_ident((SELECT ro.rolname FROM pg_catalog.pg_roles ro
											   WHERE ro.oid OPERATOR(pg_catalog.=) r.grantee)) END);
	END LOOP;
END
$$;

GRANT USAGE ON SCHEMA estream TO PUBLIC;
GRANT SELECT ON estream.config_option TO PUBLIC;
GRANT SELECT ON estream.topics, estream.partitions, estream.segments, estream.groups,
	estream.group_members, estream.consumer_lag, estream.captures, estream.workers,
	estream.acls, estream.maintenance_errors, estream.partition_slots, estream.partition_stats,
	estream.capture_dead_letters TO PUBLIC;
-- checks the cluster_action right on the cluster
GRANT EXECUTE ON FUNCTION estream.run_maintenance(text) TO PUBLIC;

DO $$
DECLARE
	f regprocedure;
BEGIN
	FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
			  WHERE p.pronamespace OPERATOR(pg_catalog.=) 'estream'::regnamespace
				AND pg_catalog.left(p.proname, 1) OPERATOR(pg_catalog.=) '_'
				AND p.proname OPERATOR(pg_catalog.<>) ALL (ARRAY[
					-- called by the views, for the caller
					'_allowed', '_timestamp_at', '_partition_stats', '_capture_status',
					'_worker_status', '_capture_origin_lsn', '_acls', '_worker_state',
					'_worker_missing', '_capture_position', '_partition_slots', '_relation_bytes']::name[])
	LOOP
		EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
	END LOOP;
END
$$;
