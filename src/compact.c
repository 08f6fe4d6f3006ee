/*-------------------------------------------------------------------------
 *
 * compact.c
 *		Rewrite of a segment of a compacted topic without the records that
 *		compaction removes.
 *
 * The install script's estream._compact() decides which records go (see
 * docs/operations.md); this file removes them without leaving dead tuples
 * and without hiding the survivors from anyone:
 *
 *	1. take the segment's ACCESS EXCLUSIVE lock, without waiting (a busy
 *	   segment is cleaned on a later run);
 *	2. copy the surviving rows, de-TOASTed, into a tuplestore;
 *	3. TRUNCATE the segment (a new, empty file in this transaction);
 *	4. insert the survivors back as frozen tuples.
 *
 * Frozen tuples are visible to every snapshot, including snapshots taken
 * before this transaction committed: a reader that took its snapshot
 * earlier and then waited for the lock still sees every surviving record
 * (with a plain insert it would see an empty segment, because TRUNCATE is
 * not MVCC-safe).  If the transaction aborts, the new file is dropped and
 * the old one, untouched, stays.  Offsets, timestamps and every other
 * column of the survivors are kept as they were.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/compact.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/heaptoast.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"

#include "estream.h"
#include "schema.h"
#include "topic.h"

typedef struct RemoveKey
{
	int32		partition;
	int64		offset;
} RemoveKey;

static Oid
rel_owner(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * Raise an error unless segoid is a segment of an estream log that the
 * current user owns.  Returns its name.
 */
static char *
check_segment(Oid segoid)
{
	char	   *relname = get_rel_name(segoid);

	if (relname == NULL || get_rel_namespace(segoid) != estream_schema_oid() ||
		strncmp(relname, "log_", 4) != 0 || get_rel_relkind(segoid) != RELKIND_RELATION ||
		!get_rel_relispartition(segoid))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("relation with OID %u is not a segment of an estream topic", segoid)));
	if (!pg_class_ownercheck(segoid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, relname);
	return relname;
}

/*
 * TRUNCATE a segment (locked by the caller) as its owner, in a
 * security-restricted operation, as VACUUM does: user code that runs
 * (a trigger on the segment) must not run with the worker's rights.
 */
static void
truncate_as_owner(Oid segoid, const char *relname)
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	char	   *sql;

	sql = psprintf("TRUNCATE %s",
				   quote_qualified_identifier(get_namespace_name(get_rel_namespace(segoid)),
											  relname));
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(rel_owner(segoid),
						   save_sec_context | SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute(sql, false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not truncate segment \"%s\"", relname);
	SPI_finish();

	AtEOXact_GUC(false, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	CommandCounterIncrement();
}

/*
 * estream._truncate_segment(segment regclass) returns boolean
 *
 * Retention: empty a segment if nobody uses it (its ACCESS EXCLUSIVE lock
 * is taken without waiting and kept to the end of the transaction).
 * Returns false, having done nothing, if the segment is in use.
 */
PG_FUNCTION_INFO_V1(estream_truncate_segment);
Datum
estream_truncate_segment(PG_FUNCTION_ARGS)
{
	Oid			segoid = PG_GETARG_OID(0);
	char	   *relname = check_segment(segoid);

	if (!ConditionalLockRelationOid(segoid, AccessExclusiveLock))
		PG_RETURN_BOOL(false);
	truncate_as_owner(segoid, relname);
	PG_RETURN_BOOL(true);
}

/* the records (partitions[i], offsets[i]) to remove, as a hash table */
static HTAB *
records_to_remove(Datum *pdat, bool *pnull, Datum *odat, bool *onull, int n)
{
	HTAB	   *remove;
	HASHCTL		info;

	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(RemoveKey);
	info.entrysize = sizeof(RemoveKey);
	info.hcxt = CurrentMemoryContext;
	remove = hash_create("estream records to remove", n, &info,
						 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	for (int i = 0; i < n; i++)
	{
		RemoveKey	k;

		if (pnull[i] || onull[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("partitions and offsets must not contain nulls")));
		memset(&k, 0, sizeof(k));
		k.partition = DatumGetInt32(pdat[i]);
		k.offset = DatumGetInt64(odat[i]);
		(void) hash_search(remove, &k, HASH_ENTER, NULL);
	}
	return remove;
}

/*
 * The records of a segment that are not to be removed, with their TOASTed
 * values inline, read with a fresh snapshot; *removed: how many are.  The
 * caller holds the segment's AccessExclusiveLock.
 */
static Tuplestorestate *
read_survivors(Oid segoid, HTAB *remove, int64 *removed)
{
	Relation	rel;
	TupleDesc	desc;
	Tuplestorestate *keep;
	TableScanDesc scan;
	TupleTableSlot *slot;
	Snapshot	snap;

	rel = table_open(segoid, NoLock);
	desc = CreateTupleDescCopy(RelationGetDescr(rel));
	keep = tuplestore_begin_heap(false, false, work_mem);
	snap = RegisterSnapshot(GetLatestSnapshot());
	slot = table_slot_create(rel, NULL);
	scan = table_beginscan(rel, snap, 0, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		RemoveKey	k;
		bool		isnull;
		HeapTuple	tup;
		bool		should_free;

		memset(&k, 0, sizeof(k));
		k.partition = DatumGetInt32(slot_getattr(slot, 2, &isnull));
		k.offset = DatumGetInt64(slot_getattr(slot, 3, &isnull));
		if (hash_search(remove, &k, HASH_FIND, NULL) != NULL)
		{
			(*removed)++;
			continue;
		}
		tup = ExecFetchSlotHeapTuple(slot, false, &should_free);
		if (HeapTupleHasExternal(tup))
		{
			HeapTuple	flat = toast_flatten_tuple(tup, desc);

			tuplestore_puttuple(keep, flat);
			heap_freetuple(flat);
		}
		else
			tuplestore_puttuple(keep, tup);
		if (should_free)
			heap_freetuple(tup);
	}
	table_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	UnregisterSnapshot(snap);
	table_close(rel, NoLock);
	return keep;
}

/*
 * Insert the survivors into the (emptied) segment, frozen; as the owner,
 * since index expressions of the segment are evaluated.
 */
static void
insert_survivors(Oid segoid, Tuplestorestate *keep)
{
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot *slot;
	CommandId	cid;
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(rel_owner(segoid),
						   save_sec_context | SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();
	rel = table_open(segoid, NoLock);
	estate = CreateExecutorState();
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
	slot = ExecInitExtraTupleSlot(estate, RelationGetDescr(rel), &TTSOpsMinimalTuple);
	cid = GetCurrentCommandId(true);
	while (tuplestore_gettupleslot(keep, true, false, slot))
	{
		CHECK_FOR_INTERRUPTS();
		table_tuple_insert(rel, slot, cid, TABLE_INSERT_FROZEN, NULL);
		if (rri->ri_NumIndices > 0)
			(void) ExecInsertIndexTuples(rri, slot, estate, false, false, NULL, NIL);
		ResetPerTupleExprContext(estate);
	}
	ExecCloseIndices(rri);
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
	AtEOXact_GUC(false, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
}

/*
 * estream._rewrite_segment(segment regclass, partitions int[], offsets
 * bigint[]) returns bigint
 *
 * Remove the records (partitions[i], offsets[i]) from a segment.  Returns
 * how many were removed, or -1 if the segment is in use (nothing done).
 */
PG_FUNCTION_INFO_V1(estream_rewrite_segment);
Datum
estream_rewrite_segment(PG_FUNCTION_ARGS)
{
	Oid			segoid;
	Datum	   *pdat;
	Datum	   *odat;
	bool	   *pnull;
	bool	   *onull;
	int			np;
	HTAB	   *remove;
	Tuplestorestate *keep;
	int64		removed = 0;
	char	   *relname;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("arguments of estream._rewrite_segment must not be null")));
	segoid = PG_GETARG_OID(0);
	np = estream_position_arrays(PG_GETARG_ARRAYTYPE_P(1), PG_GETARG_ARRAYTYPE_P(2),
								 "offsets", &pdat, &pnull, &odat, &onull);

	/* only segments of estream logs, and only their owner */
	relname = check_segment(segoid);

	if (np == 0)
		PG_RETURN_INT64(0);
	if (!ConditionalLockRelationOid(segoid, AccessExclusiveLock))
		PG_RETURN_INT64(-1);

	remove = records_to_remove(pdat, pnull, odat, onull, np);

	/* 2. copy the survivors, with their TOASTed values inline */
	keep = read_survivors(segoid, remove, &removed);
	if (removed == 0)
	{
		tuplestore_end(keep);
		PG_RETURN_INT64(0);
	}

	/* 3. a new, empty file */
	truncate_as_owner(segoid, relname);

	/* 4. the survivors, frozen */
	insert_survivors(segoid, keep);
	tuplestore_end(keep);

	PG_RETURN_INT64(removed);
}
