/*-------------------------------------------------------------------------
 *
 * topic.c
 *		Backend-local cache of topic metadata and of the prepared plans that
 *		produce to and fetch from a topic's log.
 *
 * Topics are created, altered and dropped by SQL functions of the install
 * script, which change rows of estream.topic.  A trigger on that table
 * sends a relcache invalidation for it; every backend's callback then marks
 * the whole cache stale, and the next lookup rebuilds it.  Invalidations
 * are processed at transaction start and at lock acquisition, so a
 * transaction sees every topic change committed before it started.  The
 * callback only sets a flag; the next lookup replaces the cache, and the
 * old one (whose entries and plans an outer call may still be using) is
 * freed in a later transaction.  Any abort also marks the cache stale, since
 * a lookup may have cached a topic whose creation rolled back.
 *
 * The checks of rights that need a topic's owner (estream_authorize_topic(),
 * estream.has_right()) are here too, above acl.c, which knows nothing of
 * topics.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/topic.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/stat.h>

#include "access/genam.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_tablespace_d.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "access/xact.h"
#include "nodes/pg_list.h"
#include "storage/lmgr.h"
#include "common/relpath.h"
#include "utils/fmgroids.h"
#include "utils/syscache.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "acl.h"
#include "schema.h"
#include "topic.h"

#define MAX_TOPIC_NAME	249

static HTAB *topic_cache = NULL;
static bool topic_cache_stale = false;
static Oid	topic_catalog_relid = InvalidOid;

/*
 * Caches replaced while an estream call may still use one of their entries
 * (a trigger or function nested inside produce, say) are not freed at once:
 * they wait here until a later transaction, when no call of the transaction
 * that retired them can be running.
 */
static List *retired_caches = NIL;
static uint64 retired_in_xact = 0;
static uint64 xact_counter = 1;

static void
topic_cache_inval(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == topic_catalog_relid)
		topic_cache_stale = true;
}

/*
 * A lookup inside a transaction that then aborts may have cached a topic
 * that never committed (create_topic rolled back): forget everything.
 */
static void
topic_cache_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		topic_cache_stale = true;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
		xact_counter++;
}

void
estream_topic_cache_init(void)
{
	CacheRegisterRelcacheCallback(topic_cache_inval, (Datum) 0);
	RegisterXactCallback(topic_cache_xact_callback, NULL);
}

static void
free_plan(void *plan)
{
	if (plan != NULL)
		SPI_freeplan((SPIPlanPtr) plan);
}

static void
free_cache(HTAB *cache)
{
	HASH_SEQ_STATUS status;
	EstreamTopic *t;

	hash_seq_init(&status, cache);
	while ((t = hash_seq_search(&status)) != NULL)
	{
		free_plan(t->insert_plan);
		free_plan(t->insert_batch_plan);
		free_plan(t->fetch_plan);
		free_plan(t->max_offset_plan);
	}
	hash_destroy(cache);
}

/*
 * Free the caches retired by an earlier transaction: no call that could use
 * them is running any more.
 */
static void
free_retired_caches(void)
{
	ListCell   *lc;

	foreach(lc, retired_caches)
		free_cache((HTAB *) lfirst(lc));
	list_free(retired_caches);
	retired_caches = NIL;
}

static void
reset_topic_cache(void)
{
	HASHCTL		info;
	MemoryContext oldcxt;

	if (topic_cache != NULL)
	{
		oldcxt = MemoryContextSwitchTo(TopMemoryContext);
		retired_caches = lappend(retired_caches, topic_cache);
		MemoryContextSwitchTo(oldcxt);
		retired_in_xact = xact_counter;
	}

	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(((EstreamTopic *) NULL)->name);
	info.entrysize = sizeof(EstreamTopic);
	topic_cache = hash_create("estream topic cache", 32, &info,
							  HASH_ELEM | HASH_STRINGS);
	topic_cache_stale = false;
	topic_catalog_relid = InvalidOid;
	estream_acl_invalidate();
}

/*
 * Prepare a statement and keep its plan for the life of the backend.  SPI
 * must be connected.
 */
SPIPlanPtr
estream_prepare_kept(const char *sql, int nargs, Oid *argtypes)
{
	/*
	 * A generic plan from the first execution: estream's statements are keyed
	 * lookups whose best plan does not depend on the values, and the five
	 * custom plans the plan cache would make first cost a planning per
	 * partition in every new session (issue 14: 16,000 of them in
	 * estream.partitions).
	 */
	SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes, CURSOR_OPT_GENERIC_PLAN);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

/*
 * Look up a topic by name.  Returns NULL if it does not exist and missing_ok,
 * else raises an error.  The result is valid until the next lookup.
 */
EstreamTopic *
estream_lookup_topic(const char *name, bool missing_ok)
{
	/* without and with the owner column (before and from 1.4) */
	static SPIPlanPtr lookup_plans[2] = {NULL, NULL};

	EstreamTopic *t;
	bool		found;
	Datum		args[1];
	Oid			argtypes[1] = {TEXTOID};
	int			rc;
	SPIPlanPtr	plan;
	size_t		len = strlen(name);
	bool		acl_mode;
	EstreamUserSwitch sw;

	/* see topic changes committed since this transaction took its locks */
	AcceptInvalidationMessages();
	if (retired_caches != NIL && retired_in_xact != xact_counter)
		free_retired_caches();
	if (topic_cache == NULL || topic_cache_stale)
		reset_topic_cache();

	if (len == 0 || len > MAX_TOPIC_NAME)
		goto not_found;

	t = hash_search(topic_cache, name, HASH_FIND, NULL);
	if (t != NULL)
		return t;

	if (!OidIsValid(topic_catalog_relid))
		topic_catalog_relid = get_relname_relid("topic", estream_schema_oid());

	/* estream's tables belong to the extension's owner (1.4 on) */
	acl_mode = estream_acl_mode();
	(void) estream_enter(&sw);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/*
	 * Read with a snapshot taken now, not the statement's or transaction's:
	 * the invalidation that emptied the cache may come from a change newer
	 * than those snapshots, and what we read here stays cached beyond this
	 * transaction.
	 */
	plan = lookup_plans[acl_mode ? 1 : 0];
	if (plan == NULL)
	{
		/*
		 * Kept: a view over thousands of topics looks each one up in a new
		 * session.  The plan cache plans it again if estream.topic changes.
		 */
		plan = estream_prepare_kept(psprintf("SELECT topic_id, log_relid::pg_catalog.oid, partitions,"
											 " current_segment,"
											 " (config OPERATOR(pg_catalog.->>) 'max.message.bytes')::pg_catalog.int8,"
											 " config OPERATOR(pg_catalog.->>) 'message.timestamp.type',"
											 " config OPERATOR(pg_catalog.->>) 'cleanup.policy', %s"
											 " FROM estream.topic WHERE name OPERATOR(pg_catalog.=) $1",
											 acl_mode ? "owner::pg_catalog.oid" : "0::pg_catalog.oid"),
									1, argtypes);
		lookup_plans[acl_mode ? 1 : 0] = plan;
	}
	args[0] = CStringGetTextDatum(name);
	rc = SPI_execute_snapshot(plan, args, NULL, GetLatestSnapshot(),
							  InvalidSnapshot, true, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not look up topic \"%s\"", name);

	if (SPI_processed == 0)
	{
		SPI_finish();
		estream_leave(&sw);
		goto not_found;
	}
	else
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		d;
		char	   *tstype;

		EstreamTopic entry;

		/* fill a local copy first: an error must not leave a half entry */
		memset(&entry, 0, sizeof(entry));
		strlcpy(entry.name, name, sizeof(entry.name));
		entry.topic_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		entry.logrelid = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
		entry.partitions = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		entry.segment = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
		d = SPI_getbinval(tup, desc, 5, &isnull);
		entry.max_message_bytes = isnull ? -1 : DatumGetInt64(d);
		tstype = SPI_getvalue(tup, desc, 6);
		entry.log_append_time = (tstype != NULL && strcmp(tstype, "LogAppendTime") == 0);
		tstype = SPI_getvalue(tup, desc, 7);
		entry.compacted = (tstype != NULL && strstr(tstype, "compact") != NULL);
		entry.owner = DatumGetObjectId(SPI_getbinval(tup, desc, 8, &isnull));
		entry.has_persisted = estream_schema_version() >= ESTREAM_SCHEMA_1_2;
		entry.rr_next = -1;
		entry.segrelid = InvalidOid;

		t = hash_search(topic_cache, name, HASH_ENTER, &found);
		memcpy(t, &entry, sizeof(entry));
	}
	SPI_finish();
	estream_leave(&sw);
	return t;

not_found:
	if (missing_ok)
		return NULL;
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("topic \"%s\" does not exist", name),
			 errhint("Create it with estream.create_topic(); estream.topics lists the topics.")));
	return NULL;				/* keep compiler quiet */
}

/*
 * Has a topic changed since the cache was last rebuilt?  Checked after
 * taking a lock, which processes invalidations.
 */
bool
estream_topic_cache_is_stale(void)
{
	return topic_cache_stale;
}

/*
 * Raise an error unless partition is a partition of topic.
 */
void
estream_check_partition(EstreamTopic *topic, int32 partition)
{
	if (partition < 0 || partition >= topic->partitions)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("partition %d does not exist in topic \"%s\"",
						partition, topic->name),
				 errdetail("Topic \"%s\" has %d partition%s, numbered from 0.",
						   topic->name, topic->partitions,
						   topic->partitions == 1 ? "" : "s"),
				 errhint("Use estream.add_partitions() to add partitions.")));
}

/*
 * Trigger on estream.topic: make every backend drop its cached topic
 * metadata when the transaction that changed a topic commits.
 */
PG_FUNCTION_INFO_V1(estream_topic_invalidate);
Datum
estream_topic_invalidate(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" was not called by trigger manager",
						"estream._topic_invalidate")));

	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}

/* ------------------------------------------------------------------
 * Rights on topics: the checks of acl.c that need a topic's owner
 * ------------------------------------------------------------------
 */

/*
 * Check the caller's right to do op on a topic (looked up, possibly
 * missing).  Rights are checked before existence, so that a role without
 * rights cannot tell which topics exist.  Returns the topic; raises
 * ERRCODE_UNDEFINED_OBJECT if it does not exist.  The caller of this
 * function has entered (estream_enter).
 */
EstreamTopic *
estream_authorize_topic(Oid caller, const char *name, uint32 op)
{
	EstreamTopic *topic = estream_lookup_topic(name, true);

	estream_require(caller, op, ESTREAM_TOPIC, name, topic ? topic->owner : InvalidOid);
	if (topic == NULL)
		topic = estream_lookup_topic(name, false);	/* raises the error */
	return topic;
}

static char *
text_arg(FunctionCallInfo fcinfo, int argno)
{
	return PG_ARGISNULL(argno) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(argno));
}

/*
 * estream.has_right(role regrole, operation text, resource_type text,
 * resource_name text) returns boolean
 *
 * May the role do the operation?  As has_table_privilege() does for
 * tables; a topic's owner counts.
 */
PG_FUNCTION_INFO_V1(estream_has_right);
Datum
estream_has_right(PG_FUNCTION_ARGS)
{
	EstreamUserSwitch sw;
	EstreamResource resource;
	uint32		ops;
	char	   *name;
	Oid			owner = InvalidOid;
	Oid			caller;
	bool		result = true;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("role must not be null")));
	resource = estream_parse_resource(text_arg(fcinfo, 2));
	ops = estream_parse_operations(text_arg(fcinfo, 1), resource);
	name = text_arg(fcinfo, 3);
	if (resource != ESTREAM_CLUSTER && name == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("resource_name must not be null for a %s", estream_resource_name(resource))));
	caller = estream_enter(&sw);

	/*
	 * About its own roles, anyone; about others, only who may describe the
	 * cluster (the answer tells which topics exist, and others' rights).
	 */
	if (!has_privs_of_role(caller, PG_GETARG_OID(0)) &&
		!estream_allowed(caller, ESTREAM_OP_DESCRIBE, ESTREAM_CLUSTER, NULL, InvalidOid))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to look at the rights of role \"%s\"",
						GetUserNameFromId(PG_GETARG_OID(0), true) ?
						GetUserNameFromId(PG_GETARG_OID(0), true) : "?"),
				 errdetail("A role may ask about the roles whose privileges it has; about others, only with the describe right on the cluster.")));
	if (resource == ESTREAM_TOPIC)
	{
		EstreamTopic *topic = estream_lookup_topic(name, true);

		if (topic != NULL)
			owner = topic->owner;
	}
	for (int bit = 0; bit < 16; bit++)
	{
		uint32		op = ((uint32) 1) << bit;

		if ((ops & op) && !estream_allowed(PG_GETARG_OID(0), op, resource, name, owner))
			result = false;
	}
	estream_leave(&sw);
	PG_RETURN_BOOL(result);
}

/*
 * Deconstruct a pair of arrays of partitions (integer[]) and offsets
 * (bigint[]), which must have the same length; returns that length.
 * offsets_name names the second in the error.
 */
int
estream_position_arrays(ArrayType *partitions, ArrayType *offsets,
						const char *offsets_name,
						Datum **pdat, bool **pnull, Datum **odat, bool **onull)
{
	int			np;
	int			no;

	deconstruct_array(partitions, INT4OID, 4, true, TYPALIGN_INT,
					  pdat, pnull, &np);
	deconstruct_array(offsets, INT8OID, 8, FLOAT8PASSBYVAL,
					  TYPALIGN_DOUBLE, odat, onull, &no);
	if (np != no)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("partitions and %s must have the same length", offsets_name),
				 errdetail("There are %d partitions and %d offsets.", np, no)));
	return np;
}

/*
 * Bytes on disk of the storage of one relation, from its pg_class row:
 * every fork of its relfilenode.  No relcache entry is built (an
 * administrator's view over thousands of segments must not build one per
 * segment, as pg_total_relation_size() does).  Caller holds a lock on the
 * relation.
 */
static int64
storage_bytes(Form_pg_class rel)
{
	RelFileNode rnode;
	BackendId	backend;
	int64		bytes = 0;

	if (!RELKIND_HAS_STORAGE(rel->relkind) || !OidIsValid(rel->relfilenode))
		return 0;
	rnode.spcNode = OidIsValid(rel->reltablespace) ? rel->reltablespace : MyDatabaseTableSpace;
	rnode.dbNode = rel->reltablespace == GLOBALTABLESPACE_OID ? InvalidOid : MyDatabaseId;
	rnode.relNode = rel->relfilenode;
	backend = rel->relpersistence == RELPERSISTENCE_TEMP ? BackendIdForTempRelations() : InvalidBackendId;

	/*
	 * stat() every file of every fork: cheaper than opening them.  Only an
	 * unlogged relation has an init fork, only a table a visibility map, and
	 * a file shorter than a whole segment is the fork's last.
	 */
	for (ForkNumber fork = 0; fork <= MAX_FORKNUM; fork++)
	{
		char	   *path;

		if ((fork == INIT_FORKNUM && rel->relpersistence != RELPERSISTENCE_UNLOGGED) ||
			(fork == VISIBILITYMAP_FORKNUM && rel->relkind != RELKIND_RELATION &&
			 rel->relkind != RELKIND_MATVIEW && rel->relkind != RELKIND_TOASTVALUE))
			continue;
		path = relpathbackend(rnode, backend, fork);

		for (uint32 segno = 0;; segno++)
		{
			struct stat st;
			char	   *file = segno == 0 ? path : psprintf("%s.%u", path, segno);

			if (stat(file, &st) < 0)
			{
				if (errno != ENOENT)
					ereport(ERROR,
							(errcode_for_file_access(),
							 errmsg("could not stat file \"%s\": %m", file)));
				break;
			}
			bytes += st.st_size;
			if (file != path)
				pfree(file);
			if (st.st_size < (off_t) RELSEG_SIZE * BLCKSZ)
				break;
		}
		pfree(path);
	}
	return bytes;
}

/*
 * Size of one relation and, with_indexes, of its indexes and TOAST table;
 * -1 if it does not exist (any more).  Each relation measured is locked
 * (ACCESS SHARE, as pg_total_relation_size() locks them) while it is, so
 * that a concurrent DROP, TRUNCATE or REINDEX does not remove files under
 * the measure; the lock goes at once, so that a view over thousands of
 * segments does not hold thousands of locks.
 */
static int64
relation_bytes(Oid relid, bool with_indexes)
{
	HeapTuple	tup;
	Form_pg_class rel;
	int64		bytes = 0;

	LockRelationOid(relid, AccessShareLock);
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
	{
		UnlockRelationOid(relid, AccessShareLock);
		return -1;
	}
	rel = (Form_pg_class) GETSTRUCT(tup);
	bytes = storage_bytes(rel);
	if (with_indexes && rel->relhasindex)
	{
		Relation	pg_index = table_open(IndexRelationId, AccessShareLock);
		ScanKeyData key;
		SysScanDesc scan;
		HeapTuple	itup;

		ScanKeyInit(&key, Anum_pg_index_indrelid, BTEqualStrategyNumber,
					F_OIDEQ, ObjectIdGetDatum(relid));
		scan = systable_beginscan(pg_index, IndexIndrelidIndexId, true, NULL, 1, &key);
		while (HeapTupleIsValid(itup = systable_getnext(scan)))
			bytes += Max(relation_bytes(((Form_pg_index) GETSTRUCT(itup))->indexrelid, false), 0);
		systable_endscan(scan);
		table_close(pg_index, AccessShareLock);
	}
	if (with_indexes && OidIsValid(rel->reltoastrelid))
		bytes += Max(relation_bytes(rel->reltoastrelid, true), 0);
	ReleaseSysCache(tup);
	UnlockRelationOid(relid, AccessShareLock);
	return bytes;
}

/*
 * estream._relation_bytes(regclass): what pg_total_relation_size() returns
 * (every fork of the relation, its indexes and its TOAST table), null for
 * a relation that does not exist, for the views topics and segments.
 */
PG_FUNCTION_INFO_V1(estream_relation_bytes);
Datum
estream_relation_bytes(PG_FUNCTION_ARGS)
{
	int64		bytes = relation_bytes(PG_GETARG_OID(0), true);

	if (bytes < 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(bytes);
}
