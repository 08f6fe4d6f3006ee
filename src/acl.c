/*-------------------------------------------------------------------------
 *
 * acl.c
 *		Rights in Kafka's ACL model: who may do what to which topic, group
 *		or to the cluster, and the identity under which estream works.
 *
 * From extension version 1.4 on, no role but the extension's owner holds
 * any privilege on estream's tables: roles act through estream's functions,
 * which check estream's own rights first and then do their work as the
 * extension's owner.  A right is an operation (read, write, describe, ...)
 * on a resource (a topic, a consumer group, the cluster) granted to a role
 * or to PUBLIC, for one resource name ("literal"; "*" means every resource
 * of the type, as in Kafka) or for every name that starts with a prefix
 * ("prefixed").  Role membership counts, as for PostgreSQL's privileges
 * (has_privs_of_role).  On top of the rows of estream.acl:
 *
 *	- superusers and roles with the privileges of the extension's owner
 *	  may do everything;
 *	- the owner of a topic (its creator) may do everything to it;
 *	- the predefined roles estream_admin, estream_producer,
 *	  estream_consumer and estream_monitor hold fixed rights on every topic,
 *	  group and the cluster (see docs/security.md), like pg_monitor.
 *
 * Who is the caller?  C entry points (produce, fetch, ...) run with the
 * caller's identity and see it with GetUserId().  Entry points written in
 * PL/pgSQL must change estream's tables and so run as the extension's
 * owner (SECURITY DEFINER), which hides their caller.  They are therefore
 * reached through estream_gateway(): the SQL function the user calls is
 * this C function, which notes the caller and then calls the SECURITY
 * DEFINER body "_<name>_impl" with the same arguments ("<name>_impl" if the
 * name starts with an underscore).  The body asks
 * estream._caller() (estream_caller() in C) whom to check.  A gateway
 * called from inside a body (capture() creating its topic, say) keeps the
 * outer caller.  Bodies never run user code, so no user code can run while
 * a gateway's caller is set.
 *
 * The ACL rows of a database are cached per backend and dropped when
 * estream.acl changes (a trigger sends a relcache invalidation), when role
 * membership or role attributes change (syscache callbacks), and whenever
 * the topic cache is dropped.
 *
 * Databases whose extension is older than 1.4 have no estream.acl: there
 * estream works as before (the caller's table privileges decide).
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/acl.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "common/hashfn.h"
#include "storage/lock.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "acl.h"
#include "schema.h"

/* an ACL row */
typedef struct AclEntry
{
	Oid			role;			/* InvalidOid: PUBLIC */
	EstreamResource resource;
	bool		prefixed;
	char	   *name;			/* NULL for the cluster */
	uint32		ops;
} AclEntry;

/* a literal resource name and the operations granted on it */
typedef struct LiteralRight
{
	char		name[1024];		/* hash key: 249 characters of up to 4 bytes */
	uint32		ops;
} LiteralRight;

/* the rights of one role, every source folded in */
typedef struct RoleRights
{
	Oid			role;			/* hash key */
	bool		all;			/* superuser or the extension's owner */
	uint32		cluster;		/* operations on the cluster */
	uint32		any[ESTREAM_NRESOURCES];	/* on every resource ("*") */
	HTAB	   *literal[ESTREAM_NRESOURCES];	/* LiteralRight by name */
	List	   *prefixes[ESTREAM_NRESOURCES];	/* AclEntry */
} RoleRights;

static MemoryContext acl_cxt = NULL;
static bool acl_loaded = false;
static bool acl_mode;			/* extension 1.4 or later: estream's rights */
static Oid	acl_relid = InvalidOid;
static Oid	ext_owner = InvalidOid;
static List *acl_entries = NIL;
static HTAB *role_rights = NULL;

/* the caller noted by the outermost gateway, if any */
static Oid	gateway_caller = InvalidOid;

static const char *const resource_names[ESTREAM_NRESOURCES] = {
	"topic", "group", "cluster"
};

static const struct
{
	const char *name;
	uint32		op;
}			operation_names[] =

{
	{"read", ESTREAM_OP_READ},
	{"write", ESTREAM_OP_WRITE},
	{"describe", ESTREAM_OP_DESCRIBE},
	{"describe_configs", ESTREAM_OP_DESCRIBE_CONFIGS},
	{"alter_configs", ESTREAM_OP_ALTER_CONFIGS},
	{"alter", ESTREAM_OP_ALTER},
	{"create", ESTREAM_OP_CREATE},
	{"delete", ESTREAM_OP_DELETE},
	{"cluster_action", ESTREAM_OP_CLUSTER_ACTION},
	{"all", ESTREAM_OP_ALL},
};

/* the operations that make sense on each kind of resource */
static const uint32 valid_ops[ESTREAM_NRESOURCES] = {
	ESTREAM_OP_ALL & ~ESTREAM_OP_CLUSTER_ACTION,
	ESTREAM_OP_READ | ESTREAM_OP_DESCRIBE | ESTREAM_OP_DELETE,
	ESTREAM_OP_CREATE | ESTREAM_OP_ALTER | ESTREAM_OP_DESCRIBE | ESTREAM_OP_CLUSTER_ACTION,
};

static void
acl_reset(void)
{
	if (acl_cxt != NULL)
		MemoryContextReset(acl_cxt);
	acl_loaded = false;
	acl_entries = NIL;
	role_rights = NULL;
	ext_owner = InvalidOid;
}

/*
 * Without estream.acl (extension 1.3 or older, or none), any relation's
 * invalidation reloads: the table may just have been created by ALTER
 * EXTENSION UPDATE or CREATE EXTENSION, and a session that looked before
 * must not go on without rights.
 */
static void
acl_relcache_inval(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == acl_relid || !OidIsValid(acl_relid))
		acl_loaded = false;
}

static void
acl_syscache_inval(Datum arg, int cacheid, uint32 hashvalue)
{
	acl_loaded = false;
}

/* called from _PG_init */
void
estream_acl_init(void)
{
	CacheRegisterRelcacheCallback(acl_relcache_inval, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, acl_syscache_inval, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHOID, acl_syscache_inval, (Datum) 0);
}

/* the topic cache was dropped: so are the rights */
void
estream_acl_invalidate(void)
{
	acl_loaded = false;
}

/* the owner of extension estream, or InvalidOid if it is not installed */
static Oid
lookup_extension_owner(void)
{
	Oid			owner = InvalidOid;

	(void) estream_lookup_extension(&owner, NULL);
	return owner;
}

/*
 * Load the ACL rows (as the extension's owner, with a fresh snapshot: what
 * is read stays cached beyond this transaction).  Must be in a transaction.
 */
static void
acl_load(void)
{
	Oid			nsp;
	Oid			save_userid;
	int			save_sec_context;

	AcceptInvalidationMessages();
	if (acl_loaded)
		return;
	acl_reset();
	if (acl_cxt == NULL)
		acl_cxt = AllocSetContextCreate(TopMemoryContext, "estream acl cache",
										ALLOCSET_SMALL_SIZES);

	nsp = get_namespace_oid("estream", true);
	acl_relid = OidIsValid(nsp) ? get_relname_relid("acl", nsp) : InvalidOid;
	acl_mode = estream_schema_version() >= ESTREAM_SCHEMA_1_4;
	ext_owner = lookup_extension_owner();

	/* (in the update to 1.4, before its script has made estream.acl: no rows) */
	if (acl_mode && OidIsValid(acl_relid) && OidIsValid(ext_owner))
	{
		int			rc;

		GetUserIdAndSecContext(&save_userid, &save_sec_context);
		SetUserIdAndSecContext(ext_owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		rc = SPI_execute_snapshot(SPI_prepare("SELECT role::pg_catalog.oid, resource_type,"
											  " pattern_type OPERATOR(pg_catalog.=) 'prefixed',"
											  " resource_name, operation FROM estream.acl",
											  0, NULL),
								  NULL, NULL, GetLatestSnapshot(), InvalidSnapshot,
								  true, false, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "could not read estream.acl");
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			char	   *s;
			AclEntry   *e;
			MemoryContext old = MemoryContextSwitchTo(acl_cxt);

			e = palloc0(sizeof(AclEntry));
			e->role = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
			s = SPI_getvalue(tup, desc, 2);
			e->resource = estream_parse_resource(s);
			e->prefixed = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
			e->name = SPI_getvalue(tup, desc, 4);
			e->ops = estream_parse_operations(SPI_getvalue(tup, desc, 5), e->resource);
			acl_entries = lappend(acl_entries, e);
			MemoryContextSwitchTo(old);
		}
		SPI_finish();
		SetUserIdAndSecContext(save_userid, save_sec_context);
	}
	acl_loaded = true;
}

/*
 * Does this database use estream's rights (extension 1.4 or later)?  Must
 * be in a transaction.
 */
bool
estream_acl_mode(void)
{
	acl_load();
	return acl_mode;
}

/* the extension's owner, as whom estream does its work */
Oid
estream_extension_owner(void)
{
	acl_load();
	if (!OidIsValid(ext_owner))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("extension \"estream\" is not installed in this database")));
	return ext_owner;
}

/* whom to check: the caller of the outermost gateway, else the current user */
Oid
estream_caller(void)
{
	return OidIsValid(gateway_caller) ? gateway_caller : GetUserId();
}

EstreamResource
estream_parse_resource(const char *s)
{
	for (int i = 0; i < ESTREAM_NRESOURCES; i++)
	{
		if (s != NULL && strcmp(s, resource_names[i]) == 0)
			return (EstreamResource) i;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid resource type \"%s\"", s ? s : "(null)"),
			 errdetail("Rights are granted on a \"topic\", a consumer \"group\" or the \"cluster\".")));
	return ESTREAM_TOPIC;		/* keep compiler quiet */
}

/*
 * Parse a comma-separated list of operations ("read, write", "all") that
 * are valid on a kind of resource.
 */
uint32
estream_parse_operations(const char *s, EstreamResource resource)
{
	uint32		ops = 0;
	char	   *copy;
	char	   *tok;
	char	   *save;

	if (s == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("operation must not be null")));
	copy = pstrdup(s);
	for (tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save))
	{
		char	   *end;
		uint32		op = 0;

		while (*tok == ' ')
			tok++;
		end = tok + strlen(tok);
		while (end > tok && end[-1] == ' ')
			*--end = '\0';
		for (int i = 0; i < (int) lengthof(operation_names); i++)
		{
			if (pg_strcasecmp(tok, operation_names[i].name) == 0)
				op = operation_names[i].op;
		}
		if (op == ESTREAM_OP_ALL)
			op = valid_ops[resource];
		if (op == 0 || (op & ~valid_ops[resource]) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid operation \"%s\" on a %s", tok, resource_names[resource]),
					 errdetail("Valid operations on a %s are: %s.", resource_names[resource],
							   resource == ESTREAM_TOPIC ?
							   "read, write, describe, describe_configs, alter_configs, alter, create, delete, all" :
							   resource == ESTREAM_GROUP ? "read, describe, delete, all" :
							   "create, alter, describe, cluster_action, all")));
		ops |= op;
	}
	pfree(copy);
	if (ops == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("no operation given")));
	return ops;
}

const char *
estream_operation_name(uint32 op)
{
	for (int i = 0; i < (int) lengthof(operation_names); i++)
	{
		if (operation_names[i].op == op)
			return operation_names[i].name;
	}
	return "?";
}

const char *
estream_resource_name(EstreamResource resource)
{
	return resource_names[resource];
}

/* Kafka's implications: read, write, delete and alter allow describe, ... */
static uint32
implied(uint32 ops, EstreamResource resource)
{
	if (resource == ESTREAM_TOPIC)
	{
		if (ops & (ESTREAM_OP_READ | ESTREAM_OP_WRITE | ESTREAM_OP_DELETE | ESTREAM_OP_ALTER))
			ops |= ESTREAM_OP_DESCRIBE;
		if (ops & ESTREAM_OP_ALTER_CONFIGS)
			ops |= ESTREAM_OP_DESCRIBE_CONFIGS;
	}
	else if (resource == ESTREAM_GROUP)
	{
		if (ops & (ESTREAM_OP_READ | ESTREAM_OP_DELETE))
			ops |= ESTREAM_OP_DESCRIBE;
	}
	else if (ops & ESTREAM_OP_ALTER)
		ops |= ESTREAM_OP_DESCRIBE;
	return ops;
}

static void
add_right(RoleRights *rr, EstreamResource resource, bool prefixed, const char *name,
		  uint32 ops)
{
	if (resource == ESTREAM_CLUSTER)
		rr->cluster |= ops;
	else if (prefixed)
	{
		AclEntry   *e = palloc0(sizeof(AclEntry));

		e->resource = resource;
		e->prefixed = true;
		e->name = pstrdup(name);
		e->ops = ops;
		rr->prefixes[resource] = lappend(rr->prefixes[resource], e);
	}
	else if (strcmp(name, "*") == 0)
		rr->any[resource] |= ops;
	else
	{
		LiteralRight *lr;
		bool		found;

		if (rr->literal[resource] == NULL)
		{
			HASHCTL		info;

			memset(&info, 0, sizeof(info));
			info.keysize = sizeof(((LiteralRight *) NULL)->name);
			info.entrysize = sizeof(LiteralRight);
			info.hcxt = acl_cxt;
			rr->literal[resource] = hash_create("estream literal rights", 16, &info,
												HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		}
		if (strlen(name) >= sizeof(lr->name))
			return;				/* no such topic or group can exist */
		lr = hash_search(rr->literal[resource], name, HASH_ENTER, &found);
		if (!found)
			lr->ops = 0;
		lr->ops |= ops;
	}
}

static bool
member_of(Oid role, const char *rolename)
{
	Oid			r = get_role_oid(rolename, true);

	return OidIsValid(r) && has_privs_of_role(role, r);
}

/* the rights of a role, every source folded in (cached) */
static RoleRights *
rights_of(Oid role)
{
	RoleRights *rr;
	bool		found;
	MemoryContext old;
	ListCell   *lc;

	acl_load();
	if (role_rights == NULL)
	{
		HASHCTL		info;

		memset(&info, 0, sizeof(info));
		info.keysize = sizeof(Oid);
		info.entrysize = sizeof(RoleRights);
		info.hcxt = acl_cxt;
		role_rights = hash_create("estream role rights", 8, &info,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	rr = hash_search(role_rights, &role, HASH_FIND, NULL);
	if (rr != NULL)
		return rr;

	old = MemoryContextSwitchTo(acl_cxt);
	rr = hash_search(role_rights, &role, HASH_ENTER, &found);
	memset(((char *) rr) + sizeof(Oid), 0, sizeof(RoleRights) - sizeof(Oid));
	if (superuser_arg(role) ||
		(OidIsValid(ext_owner) && has_privs_of_role(role, ext_owner)))
		rr->all = true;
	else
	{
		/* the predefined roles, with fixed rights */
		if (member_of(role, "estream_admin"))
		{
			rr->cluster |= valid_ops[ESTREAM_CLUSTER];
			rr->any[ESTREAM_TOPIC] |= valid_ops[ESTREAM_TOPIC];
			rr->any[ESTREAM_GROUP] |= valid_ops[ESTREAM_GROUP];
		}
		if (member_of(role, "estream_producer"))
			rr->any[ESTREAM_TOPIC] |= ESTREAM_OP_WRITE;
		if (member_of(role, "estream_consumer"))
		{
			rr->any[ESTREAM_TOPIC] |= ESTREAM_OP_READ;
			rr->any[ESTREAM_GROUP] |= ESTREAM_OP_READ;
		}
		if (member_of(role, "estream_monitor"))
		{
			rr->cluster |= ESTREAM_OP_DESCRIBE;
			rr->any[ESTREAM_TOPIC] |= ESTREAM_OP_DESCRIBE | ESTREAM_OP_DESCRIBE_CONFIGS;
			rr->any[ESTREAM_GROUP] |= ESTREAM_OP_DESCRIBE;
		}
		foreach(lc, acl_entries)
		{
			AclEntry   *e = lfirst(lc);

			if (OidIsValid(e->role) && !has_privs_of_role(role, e->role))
				continue;
			add_right(rr, e->resource, e->prefixed, e->name, e->ops);
		}
	}
	MemoryContextSwitchTo(old);
	return rr;
}

/*
 * May role do op (one operation) on a resource?  For a topic, owner is the
 * topic's owner (InvalidOid if the topic does not exist).  In a database
 * whose extension predates 1.4 every check passes: table privileges decide
 * there.
 */
bool
estream_allowed(Oid role, uint32 op, EstreamResource resource, const char *name, Oid owner)
{
	RoleRights *rr = rights_of(role);
	uint32		ops;
	ListCell   *lc;

	if (!acl_mode || rr->all)
		return true;
	if (resource == ESTREAM_TOPIC && OidIsValid(owner) && has_privs_of_role(role, owner))
		return true;
	if (resource == ESTREAM_CLUSTER)
		return (implied(rr->cluster, resource) & op) != 0;

	ops = rr->any[resource];
	if (name != NULL)
	{
		if (rr->literal[resource] != NULL && strlen(name) < sizeof(((LiteralRight *) NULL)->name))
		{
			LiteralRight *lr = hash_search(rr->literal[resource], name, HASH_FIND, NULL);

			if (lr != NULL)
				ops |= lr->ops;
		}
		foreach(lc, rr->prefixes[resource])
		{
			AclEntry   *e = lfirst(lc);

			if (strncmp(name, e->name, strlen(e->name)) == 0)
				ops |= e->ops;
		}
	}
	/* creating a topic: the cluster's create right, or the topic's */
	if (resource == ESTREAM_TOPIC && op == ESTREAM_OP_CREATE)
		ops |= rr->cluster & ESTREAM_OP_CREATE;
	return (implied(ops, resource) & op) != 0;
}

/*
 * Raise ERRCODE_INSUFFICIENT_PRIVILEGE unless role may do op on a resource.
 */
void
estream_require(Oid role, uint32 op, EstreamResource resource, const char *name, Oid owner)
{
	char	   *rolename;

	if (estream_allowed(role, op, resource, name, owner))
		return;
	rolename = GetUserNameFromId(role, true);
	if (rolename == NULL)
		rolename = psprintf("%u", role);
	if (resource == ESTREAM_CLUSTER)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for the estream cluster"),
				 errdetail("Role \"%s\" has no %s right on the cluster.",
						   rolename, estream_operation_name(op)),
				 errhint("A role with the alter right on the cluster can grant it: estream.grant_acl('%s', '%s', 'cluster').",
						 rolename, estream_operation_name(op))));
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied for %s \"%s\"",
					resource == ESTREAM_TOPIC ? "topic" : "consumer group", name),
			 errdetail("Role \"%s\" has no %s right on %s \"%s\".", rolename,
					   estream_operation_name(op),
					   resource == ESTREAM_TOPIC ? "topic" : "consumer group", name),
			 errhint("A role with the alter right on the cluster can grant it: estream.grant_acl('%s', '%s', '%s', '%s').",
					 rolename, estream_operation_name(op), resource_names[resource], name)));
}

/*
 * Become the extension's owner to read and write estream's tables, having
 * noted the caller (returned).  Nothing is switched in a database whose
 * extension predates 1.4.  The security context flags of the caller stay
 * (a security-restricted operation stays one).  An error restores the
 * caller's identity with the (sub)transaction's abort.
 */
Oid
estream_enter(EstreamUserSwitch *sw)
{
	Oid			caller = estream_caller();

	GetUserIdAndSecContext(&sw->userid, &sw->sec_context);
	sw->switched = false;
	if (estream_acl_mode() && sw->userid != ext_owner)
	{
		SetUserIdAndSecContext(ext_owner, sw->sec_context | SECURITY_LOCAL_USERID_CHANGE);
		sw->switched = true;
	}
	return caller;
}

void
estream_leave(EstreamUserSwitch *sw)
{
	if (sw->switched)
		SetUserIdAndSecContext(sw->userid, sw->sec_context);
	sw->switched = false;
}

static Oid
regrole_arg(FunctionCallInfo fcinfo, int argno)
{
	return PG_ARGISNULL(argno) ? InvalidOid : PG_GETARG_OID(argno);
}

static char *
text_arg(FunctionCallInfo fcinfo, int argno)
{
	return PG_ARGISNULL(argno) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(argno));
}

/*
 * estream._allowed(operation text, resource_type text, resource_name text,
 * owner regrole) returns boolean
 *
 * May the caller do the operation?  For the views: a row is shown when
 * this is true of its topic or group.
 */
PG_FUNCTION_INFO_V1(estream_allowed_sql);
Datum
estream_allowed_sql(PG_FUNCTION_ARGS)
{
	char	   *rt = text_arg(fcinfo, 1);
	EstreamResource resource = estream_parse_resource(rt);
	uint32		op = estream_parse_operations(text_arg(fcinfo, 0), resource);

	PG_RETURN_BOOL(estream_allowed(estream_caller(), op, resource, text_arg(fcinfo, 2),
								   regrole_arg(fcinfo, 3)));
}

/*
 * estream._require(operation text, resource_type text, resource_name text,
 * owner regrole) returns void
 *
 * For the function bodies: raise ERRCODE_INSUFFICIENT_PRIVILEGE unless the
 * caller may do the operation.
 */
PG_FUNCTION_INFO_V1(estream_require_sql);
Datum
estream_require_sql(PG_FUNCTION_ARGS)
{
	char	   *rt = text_arg(fcinfo, 1);
	EstreamResource resource = estream_parse_resource(rt);
	uint32		op = estream_parse_operations(text_arg(fcinfo, 0), resource);
	char	   *name = text_arg(fcinfo, 2);

	if (resource != ESTREAM_CLUSTER && name == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", resource == ESTREAM_TOPIC ? "topic" : "group")));
	estream_require(estream_caller(), op, resource, name, regrole_arg(fcinfo, 3));
	PG_RETURN_VOID();
}

/*
 * estream._caller() returns regrole: whom the function bodies check.
 */
PG_FUNCTION_INFO_V1(estream_caller_sql);
Datum
estream_caller_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_OID(estream_caller());
}

/*
 * The gateway: the C function behind every entry point whose body is a
 * SECURITY DEFINER function.  It calls estream._<name>_impl, found once per
 * call site by the entry point's own name and argument types, with the
 * same arguments and result set, the caller noted for estream._caller().
 */
typedef struct GatewayCache
{
	FmgrInfo	impl;
} GatewayCache;

PG_FUNCTION_INFO_V1(estream_gateway);
Datum
estream_gateway(PG_FUNCTION_ARGS)
{
	GatewayCache *gc = (GatewayCache *) fcinfo->flinfo->fn_extra;

	LOCAL_FCINFO(impl, FUNC_MAX_ARGS);
	Oid			save_caller = gateway_caller;
	Datum		result;

	if (gc == NULL)
	{
		HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fcinfo->flinfo->fn_oid));
		Form_pg_proc proc;
		char	   *implname;
		Oid			imploid;

		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for function %u", fcinfo->flinfo->fn_oid);
		proc = (Form_pg_proc) GETSTRUCT(tup);
		/* estream.poll -> estream._poll_impl; estream._x -> estream._x_impl */
		implname = psprintf("%s%s_impl", NameStr(proc->proname)[0] == '_' ? "" : "_",
							NameStr(proc->proname));
		imploid = LookupFuncName(list_make2(makeString(get_namespace_name(proc->pronamespace)),
											makeString(implname)),
								 proc->pronargs, proc->proargtypes.values, true);
		ReleaseSysCache(tup);
		if (!OidIsValid(imploid))
			elog(ERROR, "estream: no function body %s for function %u", implname,
				 fcinfo->flinfo->fn_oid);
		gc = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(GatewayCache));
		fmgr_info_cxt(imploid, &gc->impl, fcinfo->flinfo->fn_mcxt);
		fmgr_info_set_expr(fcinfo->flinfo->fn_expr, &gc->impl);
		fcinfo->flinfo->fn_extra = gc;
	}

	InitFunctionCallInfoData(*impl, &gc->impl, fcinfo->nargs, fcinfo->fncollation,
							 fcinfo->context, fcinfo->resultinfo);
	for (int i = 0; i < fcinfo->nargs; i++)
		impl->args[i] = fcinfo->args[i];

	/* the outermost call notes the caller; nested calls keep it */
	if (!OidIsValid(gateway_caller))
		gateway_caller = GetUserId();
	PG_TRY();
	{
		result = FunctionCallInvoke(impl);
	}
	PG_FINALLY();
	{
		gateway_caller = save_caller;
	}
	PG_END_TRY();
	fcinfo->isnull = impl->isnull;
	return result;
}

/*
 * estream._check_operation(operation text, resource_type text) returns text
 *
 * One operation's name in lower case; an error unless it is an operation
 * on that kind of resource.
 */
PG_FUNCTION_INFO_V1(estream_check_operation);
Datum
estream_check_operation(PG_FUNCTION_ARGS)
{
	char	   *op = text_arg(fcinfo, 0);
	EstreamResource resource = estream_parse_resource(text_arg(fcinfo, 1));
	char	   *name;
	char	   *end;

	if (op == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("operation must not be null")));
	if (strchr(op, ',') != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expected one operation, got \"%s\"", op)));
	(void) estream_parse_operations(op, resource);	/* raises if invalid */
	name = op;
	while (*name == ' ')
		name++;
	end = name + strlen(name);
	while (end > name && end[-1] == ' ')
		*--end = '\0';
	for (char *c = name; *c; c++)
		*c = pg_tolower((unsigned char) *c);
	PG_RETURN_TEXT_P(cstring_to_text(name));
}

/*
 * estream._lock_name(space text, name text, wait boolean) returns boolean
 *
 * A lock of the current transaction on a name in estream's own lock space
 * (creating a topic or a group of that name, say): an advisory lock whose
 * tag the SQL advisory lock functions cannot make, so that no role can
 * hold it to keep others from creating a name.  Returns whether it was
 * granted (always true when waiting).
 */
#define ESTREAM_LOCKTAG_FIELD4 0x4553	/* "ES"; pg_advisory_* use 1 and 2 */

PG_FUNCTION_INFO_V1(estream_lock_name);
Datum
estream_lock_name(PG_FUNCTION_ARGS)
{
	text	   *space = PG_GETARG_TEXT_PP(0);
	text	   *name = PG_GETARG_TEXT_PP(1);
	bool		wait = PG_GETARG_BOOL(2);
	LOCKTAG		tag;
	uint32		h1 = DatumGetUInt32(hash_any((unsigned char *) VARDATA_ANY(space),
											 VARSIZE_ANY_EXHDR(space)));
	uint32		h2 = DatumGetUInt32(hash_any((unsigned char *) VARDATA_ANY(name),
											 VARSIZE_ANY_EXHDR(name)));

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, h1, h2, ESTREAM_LOCKTAG_FIELD4);
	PG_RETURN_BOOL(LockAcquire(&tag, ExclusiveLock, false, !wait) != LOCKACQUIRE_NOT_AVAIL);
}
