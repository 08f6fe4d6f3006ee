-- The catalog of estream in this database, as text: every function
-- (signature, attributes, body, rights, comment), relation, column,
-- default, constraint, index, trigger, view definition, type, sequence,
-- comment, grant, extension member and dumped table.  Two databases with
-- the same estream give the same output (test/t/021_fresh_vs_update.pl).
\pset format unaligned
\pset tuples_only on
\pset fieldsep ' | '

SELECT 'function', p.oid::regprocedure::text, p.prokind, p.prosecdef, p.provolatile, p.proparallel,
	   p.proisstrict, p.proretset, pg_catalog.pg_get_function_result(p.oid),
	   pg_catalog.pg_get_function_arguments(p.oid), p.proconfig, p.procost, p.prorows,
	   l.lanname, p.probin, pg_catalog.md5(p.prosrc), (SELECT pg_catalog.array_agg(x::text ORDER BY x::text) FROM pg_catalog.unnest(p.proacl) x),
	   pg_catalog.obj_description(p.oid, 'pg_proc')
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE p.pronamespace = 'estream'::regnamespace
ORDER BY 2;

SELECT 'relation', c.relname, c.relkind, c.relpersistence, c.reloptions, (SELECT pg_catalog.array_agg(x::text ORDER BY x::text) FROM pg_catalog.unnest(c.relacl) x),
	   pg_catalog.obj_description(c.oid, 'pg_class'), c.relrowsecurity, c.relreplident
FROM pg_catalog.pg_class c
WHERE c.relnamespace = 'estream'::regnamespace AND c.relname !~ '^log_[0-9]'
ORDER BY 2;

SELECT 'column', c.relname, pg_catalog.row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
	   a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
	   pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated, a.attcollation,
	   (SELECT pg_catalog.array_agg(x::text ORDER BY x::text) FROM pg_catalog.unnest(a.attacl) x), pg_catalog.col_description(c.oid, a.attnum)
FROM pg_catalog.pg_class c
	 JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
	 LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE c.relnamespace = 'estream'::regnamespace AND c.relname !~ '^log_[0-9]'
ORDER BY 2, 3;

SELECT 'constraint', c.conrelid::regclass::text, c.conname, c.contype,
	   pg_catalog.pg_get_constraintdef(c.oid), pg_catalog.obj_description(c.oid, 'pg_constraint')
FROM pg_catalog.pg_constraint c
WHERE c.connamespace = 'estream'::regnamespace
ORDER BY 2, 3;

SELECT 'index', i.indexrelid::regclass::text, pg_catalog.pg_get_indexdef(i.indexrelid)
FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
WHERE c.relnamespace = 'estream'::regnamespace AND c.relname !~ '^log_[0-9]'
ORDER BY 2;

SELECT 'trigger', t.tgrelid::regclass::text, t.tgname, t.tgenabled, pg_catalog.pg_get_triggerdef(t.oid),
	   pg_catalog.obj_description(t.oid, 'pg_trigger')
FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
WHERE c.relnamespace = 'estream'::regnamespace AND NOT t.tgisinternal
ORDER BY 2, 3;

SELECT 'view', c.relname, pg_catalog.pg_get_viewdef(c.oid)
FROM pg_catalog.pg_class c
WHERE c.relnamespace = 'estream'::regnamespace AND c.relkind = 'v'
ORDER BY 2;

SELECT 'type', t.typname, t.typtype, pg_catalog.obj_description(t.oid, 'pg_type'), (SELECT pg_catalog.array_agg(x::text ORDER BY x::text) FROM pg_catalog.unnest(t.typacl) x)
FROM pg_catalog.pg_type t
WHERE t.typnamespace = 'estream'::regnamespace AND t.typtype <> 'b' AND t.typrelid IN
	(SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relkind = 'c') OR
	(t.typnamespace = 'estream'::regnamespace AND t.typtype NOT IN ('b', 'c'))
ORDER BY 2;

SELECT 'sequence', s.seqrelid::regclass::text, s.seqtypid::regtype, s.seqstart, s.seqincrement,
	   s.seqmax, s.seqmin, s.seqcache, s.seqcycle
FROM pg_catalog.pg_sequence s JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid
WHERE c.relnamespace = 'estream'::regnamespace
ORDER BY 2;

SELECT 'schema', n.nspname, (SELECT pg_catalog.array_agg(x::text ORDER BY x::text) FROM pg_catalog.unnest(n.nspacl) x), pg_catalog.obj_description(n.oid, 'pg_namespace')
FROM pg_catalog.pg_namespace n WHERE n.nspname = 'estream';

SELECT 'member', pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid)
FROM pg_catalog.pg_depend d
WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e'
  AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'estream')
ORDER BY 2;

SELECT 'dumped', x.rel, x.cond
FROM pg_catalog.pg_extension e,
	 LATERAL unnest(e.extconfig::regclass[]::text[], e.extcondition) AS x(rel, cond)
WHERE e.extname = 'estream'
ORDER BY 2;

SELECT 'role', r.rolname, r.rolcanlogin, r.rolsuper, pg_catalog.shobj_description(r.oid, 'pg_authid')
FROM pg_catalog.pg_roles r WHERE r.rolname LIKE 'estream\_%'
ORDER BY 2;

SELECT 'config_option', o.* FROM estream.config_option o ORDER BY o.name;
SELECT 'acl', a.role, a.resource_type, a.pattern_type, a.resource_name, a.operation FROM estream.acl a ORDER BY 2, 3, 4, 5, 6;
