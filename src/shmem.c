/*-------------------------------------------------------------------------
 *
 * shmem.c
 *		Shared partition state: offset allocation, in-flight producers and
 *		the stable watermark of every topic partition.
 *
 * Concurrent transactions commit in any order, so a reader that simply
 * read "offset > last seen" would skip an offset whose transaction commits
 * after one holding a higher offset.  Like Kafka's last stable offset, every
 * partition therefore has a stable watermark W below which every offset
 * belongs to a transaction that has ended.  Readers read W first, then take
 * a fresh snapshot and scan [from, W).
 *
 * For each partition we keep in shared memory:
 *
 *	next			the next offset to hand out;
 *	inflight		one marker per open transaction that produced to the
 *					partition, holding the first offset it reserved;
 *	committed_end	1 + the highest offset produced by a committed
 *					transaction (in a subtransaction that was not rolled
 *					back).
 *
 * and W = min(committed_end, lowest first offset among in-flight markers).
 * Capping W at committed_end (rather than at next) means that W never
 * exposes an offset range that only aborted transactions used: after a
 * crash, when shared memory is rebuilt empty, next is recomputed as
 * 1 + the highest stored offset, which is then >= every W a reader could
 * have seen, so no offset a consumer has passed is ever handed out again.
 *
 * Note about locking:
 *
 * - EstreamShared->lock (an LWLock of the "estream" tranche) protects the
 *	 structure of the partition hash table: shared to look up, exclusive to
 *	 enter.  Entries are never removed while the postmaster lives, so a
 *	 backend may cache pointers to them.
 * - EstreamPartition->mutex (a spinlock) protects every other field of the
 *	 entry, including the in-flight list and the markers linked into it.
 *	 Registering a marker and advancing next happen in ONE critical
 *	 section, or a reader could see next move with no marker.  No code
 *	 holding it can error, allocate or sleep.
 * - The end-of-transaction callback drops this backend's markers at
 *	 XACT_EVENT_COMMIT / XACT_EVENT_ABORT, which run after
 *	 ProcArrayEndTransaction: by the time W moves past our offsets, our
 *	 rows are visible (or known aborted) to every new snapshot.  It takes
 *	 only spinlocks and broadcasts the condition variable.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/shmem.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "funcapi.h"
#include "storage/procarray.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "estream.h"

typedef struct EstreamShared
{
	LWLock	   *lock;			/* protects the hash table's structure */
	int			markers_per_backend;
	ConditionVariable any_cv;	/* broadcast when any stable watermark moves,
								 * for waits over several partitions */
} EstreamShared;

/* One marker this backend's open transaction holds (backend-local) */
typedef struct LocalMarker
{
	EstreamPartition *part;
	EstreamMarker *marker;		/* in shared memory */
	int64		last;			/* highest offset produced by live subxacts,
								 * -1 if none */
} LocalMarker;

/* Value of a LocalMarker's last before a subtransaction first produced */
typedef struct SubxactSave
{
	int			nestlevel;
	int			idx;			/* into local_markers */
	int64		saved_last;
} SubxactSave;

typedef struct LocalPartKey
{
	Oid			logrelid;
	int32		partition;
} LocalPartKey;

typedef struct LocalPartEntry
{
	LocalPartKey key;
	EstreamPartition *part;
} LocalPartEntry;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static EstreamShared *estream_shared = NULL;
static HTAB *part_hash = NULL;
static EstreamMarker *all_markers = NULL;

static HTAB *local_part_cache = NULL;
static LocalMarker *local_markers = NULL;
static int	n_local_markers = 0;
static SubxactSave *subxact_saves = NULL;
static int	n_subxact_saves = 0;
static int	max_subxact_saves = 0;
static bool callbacks_registered = false;

static void estream_shmem_request(void);
static void estream_shmem_startup(void);
static void estream_xact_callback(XactEvent event, void *arg);
static void estream_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
									 SubTransactionId parentSubid, void *arg);
static void release_markers(bool commit);
static void estream_backend_exit(int code, Datum arg);

static Size
estream_shmem_size(void)
{
	Size		size;

	size = MAXALIGN(sizeof(EstreamShared));
	size = add_size(size, hash_estimate_size(estream_max_partitions,
											 sizeof(EstreamPartition)));
	size = add_size(size, mul_size(mul_size(MaxBackends,
											estream_max_partitions_per_xact),
								   sizeof(EstreamMarker)));
	size = add_size(size, estream_worker_shmem_size());
	return size;
}

/*
 * Called from _PG_init when loaded through shared_preload_libraries.
 */
void
estream_shmem_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = estream_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = estream_shmem_startup;
}

static void
estream_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();

	RequestAddinShmemSpace(estream_shmem_size());
	/* 0: partition hash, 1: worker state */
	RequestNamedLWLockTranche("estream", 2);
}

static void
estream_shmem_startup(void)
{
	bool		found;
	HASHCTL		info;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);

	estream_shared = ShmemInitStruct("estream state", sizeof(EstreamShared), &found);
	if (!found)
	{
		estream_shared->lock = &(GetNamedLWLockTranche("estream"))->lock;
		estream_shared->markers_per_backend = estream_max_partitions_per_xact;
		ConditionVariableInit(&estream_shared->any_cv);
	}
	estream_worker_shmem_startup(&(GetNamedLWLockTranche("estream"))[1].lock);

	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(EstreamPartKey);
	info.entrysize = sizeof(EstreamPartition);
	part_hash = ShmemInitHash("estream partitions",
							  estream_max_partitions, estream_max_partitions,
							  &info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);

	all_markers = ShmemInitStruct("estream markers",
								  mul_size(mul_size(MaxBackends,
													estream_max_partitions_per_xact),
										   sizeof(EstreamMarker)),
								  &found);
	if (!found)
		memset(all_markers, 0, mul_size(mul_size(MaxBackends,
												 estream_max_partitions_per_xact),
										sizeof(EstreamMarker)));

	LWLockRelease(AddinShmemInitLock);
}

bool
estream_shmem_ready(void)
{
	return estream_shared != NULL;
}

/*
 * Raise an error unless estream's shared memory exists.
 */
void
estream_require_shmem(void)
{
	if (estream_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("estream must be loaded via shared_preload_libraries"),
				 errdetail("Producing and fetching need the shared stable-offset state that estream sets up at server start."),
				 errhint("Add estream to shared_preload_libraries in postgresql.conf and restart the server.")));
}

/*
 * Register the transaction callbacks and backend-local structures the first
 * time this backend touches a partition.
 */
static void
ensure_backend_state(void)
{
	HASHCTL		info;

	if (callbacks_registered)
		return;

	if (MyBackendId == InvalidBackendId || MyBackendId > MaxBackends)
		elog(ERROR, "estream: backend has no valid backend id");

	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(LocalPartKey);
	info.entrysize = sizeof(LocalPartEntry);
	local_part_cache = hash_create("estream partition pointers", 64, &info,
								   HASH_ELEM | HASH_BLOBS);

	local_markers = MemoryContextAllocZero(TopMemoryContext,
										   sizeof(LocalMarker) * estream_max_partitions_per_xact);
	max_subxact_saves = 16;
	subxact_saves = MemoryContextAlloc(TopMemoryContext,
									   sizeof(SubxactSave) * max_subxact_saves);

	RegisterXactCallback(estream_xact_callback, NULL);
	RegisterSubXactCallback(estream_subxact_callback, NULL);
	before_shmem_exit(estream_backend_exit, (Datum) 0);
	callbacks_registered = true;
}

/*
 * Where offsets of a partition continue after a restart: 1 + its highest
 * stored offset, or its log start offset if higher.  Read with a fresh
 * snapshot.
 */
static int64
stored_offset_end(EstreamTopic *topic, int32 partition)
{
	Datum		values[1];
	char		nulls[1] = {' '};
	int64		result = 0;
	int			rc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	if (topic->max_offset_plan == NULL)
	{
		char	   *sql;
		Oid			argtypes[1] = {INT4OID};
		SPIPlanPtr	plan;

		/*
		 * 1 + the highest stored offset, but never below the log start:
		 * retention may have dropped every record of the partition.  From
		 * 1.2 on, never below the stable offset the worker persisted nor
		 * an offset a consumer group committed either: with
		 * synchronous_commit = off a crash can lose committed records that
		 * consumers have already read past.
		 */
		if (topic->has_persisted)
			sql = psprintf("SELECT pg_catalog.max(\"offset\") OPERATOR(pg_catalog.+) 1,"
					 " (SELECT GREATEST(p.log_start_offset, p.stable_offset,"
					 "   (SELECT pg_catalog.max(o.committed_offset) FROM estream.group_offset o"
					 "     WHERE o.topic_id OPERATOR(pg_catalog.=) %d"
					 "     AND o.partition OPERATOR(pg_catalog.=) $1))"
					 "   FROM estream.partition p"
					 "   WHERE p.topic_id OPERATOR(pg_catalog.=) %d"
					 "   AND p.partition OPERATOR(pg_catalog.=) $1)"
					 " FROM estream.log_%d WHERE partition OPERATOR(pg_catalog.=) $1",
					 topic->topic_id, topic->topic_id, topic->topic_id);
		else
			sql = psprintf("SELECT pg_catalog.max(\"offset\") OPERATOR(pg_catalog.+) 1,"
					 " (SELECT p.log_start_offset FROM estream.partition p"
					 "   WHERE p.topic_id OPERATOR(pg_catalog.=) %d"
					 "   AND p.partition OPERATOR(pg_catalog.=) $1)"
					 " FROM estream.log_%d WHERE partition OPERATOR(pg_catalog.=) $1",
					 topic->topic_id, topic->topic_id);
		plan = SPI_prepare(sql, 1, argtypes);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		topic->max_offset_plan = plan;
	}

	values[0] = Int32GetDatum(partition);
	rc = SPI_execute_snapshot(topic->max_offset_plan, values, nulls,
							  GetLatestSnapshot(), InvalidSnapshot,
							  true, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the highest offset of partition %d", partition);
	else
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									  1, &isnull);

		if (!isnull)
			result = DatumGetInt64(d);
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		if (!isnull && DatumGetInt64(d) > result)
			result = DatumGetInt64(d);
	}

	SPI_finish();
	return result;
}

/*
 * Find (or create) the shared entry of a topic partition, initializing its
 * offsets from the stored log on first touch since server start.
 */
EstreamPartition *
estream_get_partition(EstreamTopic *topic, int32 partition)
{
	LocalPartKey lkey;
	LocalPartEntry *lentry;
	EstreamPartKey key;
	EstreamPartition *part;
	bool		found;

	estream_require_shmem();
	ensure_backend_state();

	lkey.logrelid = topic->logrelid;
	lkey.partition = partition;
	lentry = hash_search(local_part_cache, &lkey, HASH_FIND, NULL);
	if (lentry != NULL)
		return lentry->part;

	memset(&key, 0, sizeof(key));
	key.dbid = MyDatabaseId;
	key.logrelid = topic->logrelid;
	key.partition = partition;

	LWLockAcquire(estream_shared->lock, LW_SHARED);
	part = hash_search(part_hash, &key, HASH_FIND, NULL);
	LWLockRelease(estream_shared->lock);

	if (part == NULL)
	{
		LWLockAcquire(estream_shared->lock, LW_EXCLUSIVE);
		part = hash_search(part_hash, &key, HASH_ENTER_NULL, &found);
		if (part != NULL && !found)
		{
			SpinLockInit(&part->mutex);
			part->initialized = false;
			part->next = 0;
			part->committed_end = 0;
			dlist_init(&part->inflight);
			ConditionVariableInit(&part->cv);
		}
		LWLockRelease(estream_shared->lock);

		if (part == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of estream partition slots"),
					 errdetail("All %d slots for partition state in shared memory are in use.",
							   estream_max_partitions),
					 errhint("Increase estream.max_partitions and restart the server.")));
	}

	if (!part->initialized)
	{
		int64		end = stored_offset_end(topic, partition);

		/*
		 * Nobody can have produced to this partition since server start
		 * before it was initialized, so the first value stored wins and any
		 * later (possibly newer) computation is ignored.
		 */
		SpinLockAcquire(&part->mutex);
		if (!part->initialized)
		{
			part->next = end;
			part->committed_end = end;
			part->initialized = true;
		}
		SpinLockRelease(&part->mutex);
	}

	lentry = hash_search(local_part_cache, &lkey, HASH_ENTER, &found);
	lentry->part = part;
	return part;
}

/*
 * Reserve count consecutive offsets of a partition for the current
 * transaction and return the first.  Registers the transaction as in flight
 * on the partition in the same critical section that advances next.
 */
int64
estream_reserve(EstreamPartition *part, int64 count)
{
	int			idx = -1;
	int			nestlevel = GetCurrentTransactionNestLevel();
	int64		first;

	Assert(count > 0);

	for (int i = n_local_markers - 1; i >= 0; i--)
	{
		if (local_markers[i].part == part)
		{
			idx = i;
			break;
		}
	}

	if (idx < 0 && n_local_markers >= estream_shared->markers_per_backend)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("transaction produces to too many partitions"),
				 errdetail("One transaction can produce to at most %d partitions.",
						   estream_shared->markers_per_backend),
				 errhint("Increase estream.max_partitions_per_transaction, or split the transaction.")));

	/* Make room for the subtransaction save before reserving anything */
	if (nestlevel > 1 && n_subxact_saves >= max_subxact_saves)
	{
		max_subxact_saves *= 2;
		subxact_saves = repalloc(subxact_saves, sizeof(SubxactSave) * max_subxact_saves);
	}

	if (idx < 0)
	{
		EstreamMarker *m;

		idx = n_local_markers;
		m = &all_markers[(Size) (MyBackendId - 1) * estream_shared->markers_per_backend + idx];

		m->pid = MyProcPid;
		m->since = GetCurrentStatementStartTimestamp();
		SpinLockAcquire(&part->mutex);
		first = part->next;
		part->next += count;
		m->first = first;
		dlist_push_tail(&part->inflight, &m->node);
		SpinLockRelease(&part->mutex);

		local_markers[idx].part = part;
		local_markers[idx].marker = m;
		local_markers[idx].last = -1;
		n_local_markers++;
	}
	else
	{
		SpinLockAcquire(&part->mutex);
		first = part->next;
		part->next += count;
		SpinLockRelease(&part->mutex);
	}

	/* Remember what to restore if this subtransaction rolls back */
	if (nestlevel > 1)
	{
		bool		saved = false;

		for (int i = n_subxact_saves - 1; i >= 0; i--)
		{
			if (subxact_saves[i].nestlevel < nestlevel)
				break;
			if (subxact_saves[i].idx == idx)
			{
				saved = true;
				break;
			}
		}
		if (!saved)
		{
			subxact_saves[n_subxact_saves].nestlevel = nestlevel;
			subxact_saves[n_subxact_saves].idx = idx;
			subxact_saves[n_subxact_saves].saved_last = local_markers[idx].last;
			n_subxact_saves++;
		}
	}

	local_markers[idx].last = first + count - 1;
	return first;
}

/*
 * Read the stable watermark and the next offset of a partition.
 */
/*
 * The stable watermark of a partition.  Caller holds part->mutex.  Markers
 * are appended with first = next, which only grows, so the list is ordered
 * by first and its head holds the lowest.
 */
static inline int64
stable_locked(EstreamPartition *part)
{
	int64		stable = part->committed_end;

	if (!dlist_is_empty(&part->inflight))
	{
		EstreamMarker *m = dlist_head_element(EstreamMarker, node, &part->inflight);

		if (m->first < stable)
			stable = m->first;
	}
	return stable;
}

void
estream_read_watermarks(EstreamPartition *part, EstreamWatermarks *wm)
{
	SpinLockAcquire(&part->mutex);
	wm->stable = stable_locked(part);
	wm->next = part->next;
	SpinLockRelease(&part->mutex);
}

/*
 * Does the current transaction hold back this partition's watermark?  A
 * fetch must not wait for its own transaction to end.
 */
bool
estream_holds_marker(EstreamPartition *part)
{
	for (int i = 0; i < n_local_markers; i++)
	{
		if (local_markers[i].part == part)
			return true;
	}
	return false;
}

/*
 * Sleep until the stable watermark of a partition is above past, or until
 * deadline.  Returns true if it moved.  Interruptible (cancel,
 * statement_timeout); holds no lock while sleeping.
 */
bool
estream_wait_for_stable(EstreamPartition *part, int64 past, TimestampTz deadline)
{
	bool		moved = false;

	ConditionVariablePrepareToSleep(&part->cv);
	for (;;)
	{
		EstreamWatermarks wm;
		long		remaining;

		estream_read_watermarks(part, &wm);
		if (wm.stable > past)
		{
			moved = true;
			break;
		}
		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (remaining <= 0)
			break;
		(void) ConditionVariableTimedSleep(&part->cv, remaining, PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	return moved;
}

/*
 * Sleep until the stable watermark of any of n partitions is above its
 * past[i], or until deadline.  Returns true if one moved.  Interruptible;
 * holds no lock while sleeping.  Wakes on every watermark move of the
 * server, so keep the partition list short.
 */
bool
estream_wait_for_any(EstreamPartition **parts, int64 *past, int n,
					 TimestampTz deadline)
{
	bool		moved = false;

	ConditionVariablePrepareToSleep(&estream_shared->any_cv);
	for (;;)
	{
		long		remaining;

		for (int i = 0; i < n && !moved; i++)
		{
			EstreamWatermarks wm;

			estream_read_watermarks(parts[i], &wm);
			moved = wm.stable > past[i];
		}
		if (moved)
			break;
		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (remaining <= 0)
			break;
		(void) ConditionVariableTimedSleep(&estream_shared->any_cv, remaining,
										   PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	return moved;
}

/*
 * Drop this backend's in-flight markers at the end of its transaction.  On
 * commit, advance committed_end past what the transaction produced.  Must
 * not error, allocate or take LWLocks.
 */
static void
release_markers(bool commit)
{
	for (int i = 0; i < n_local_markers; i++)
	{
		EstreamPartition *part = local_markers[i].part;
		int64		last = local_markers[i].last;

		int64		before;
		int64		after;

		SpinLockAcquire(&part->mutex);
		before = stable_locked(part);
		dlist_delete(&local_markers[i].marker->node);
		if (commit && last >= 0 && last + 1 > part->committed_end)
			part->committed_end = last + 1;
		after = stable_locked(part);
		SpinLockRelease(&part->mutex);

		/* wake long-polls only when there is something new to read */
		if (after != before)
		{
			ConditionVariableBroadcast(&part->cv);
			ConditionVariableBroadcast(&estream_shared->any_cv);
		}
	}
	n_local_markers = 0;
	n_subxact_saves = 0;
}

static void
estream_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (n_local_markers > 0)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that has produced to an estream topic"),
						 errdetail("A prepared transaction would hold back the stable offset of the partitions it produced to until COMMIT PREPARED or ROLLBACK PREPARED."),
						 errhint("Produce in a transaction that commits directly.")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (n_local_markers > 0)
				release_markers(true);
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			if (n_local_markers > 0)
				release_markers(false);
			break;
		default:
			break;
	}
}

/*
 * A rolled-back subtransaction's offsets become holes: restore each marker's
 * "last" to what it was before the subtransaction first produced to it.  A
 * committed subtransaction hands its saves to its parent.
 */
static void
estream_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						 SubTransactionId parentSubid, void *arg)
{
	int			nestlevel;

	if (n_subxact_saves == 0)
		return;

	nestlevel = GetCurrentTransactionNestLevel();

	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		while (n_subxact_saves > 0 &&
			   subxact_saves[n_subxact_saves - 1].nestlevel >= nestlevel)
		{
			SubxactSave *s = &subxact_saves[--n_subxact_saves];

			local_markers[s->idx].last = s->saved_last;
		}
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		int			n = n_subxact_saves;
		int			keep = n;

		/* entries of this level are at the top of the stack */
		while (keep > 0 && subxact_saves[keep - 1].nestlevel >= nestlevel)
			keep--;

		for (int i = keep; i < n; i++)
		{
			bool		parent_has = (nestlevel - 1 <= 1);

			for (int j = keep - 1; j >= 0 && !parent_has; j--)
			{
				if (subxact_saves[j].nestlevel < nestlevel - 1)
					break;
				if (subxact_saves[j].idx == subxact_saves[i].idx)
					parent_has = true;
			}
			if (!parent_has)
			{
				subxact_saves[keep] = subxact_saves[i];
				subxact_saves[keep].nestlevel = nestlevel - 1;
				keep++;
			}
		}
		n_subxact_saves = keep;
	}
}

/*
 * A backend that exits in the middle of a producing transaction (FATAL,
 * pg_terminate_backend) drops its markers here.  before_shmem_exit
 * callbacks run last-registered first, so this runs before ShutdownPostgres
 * aborts the transaction, while its xid still looks in progress: harmless,
 * since that transaction can only abort and its rows never become visible,
 * and committed_end is not advanced.
 */
static void
estream_backend_exit(int code, Datum arg)
{
	if (n_local_markers > 0)
		release_markers(false);
}

/*
 * Watermarks of one partition, for SQL functions: initializes the entry if
 * needed.
 */
void
estream_partition_watermarks(EstreamTopic *topic, int32 partition,
							 EstreamWatermarks *wm)
{
	EstreamPartition *part = estream_get_partition(topic, partition);

	estream_read_watermarks(part, wm);
}

/*
 * Housekeeping of the database worker, for the partitions of its database:
 *
 * - remove in-flight markers whose backend is gone (a backend normally
 *	 drops its markers when its transaction ends or when it exits; this is
 *	 the safety net);
 * - with timeout_ms > 0, terminate the session of a transaction whose
 *	 marker has held back a stable offset for longer than that, as Kafka
 *	 aborts a transaction after transaction.timeout.ms.
 *
 * Markers are copied under the spinlock, and acted on with no lock held;
 * a marker is removed only if the very same marker is still linked.
 * Entries are never removed, so the copied entry pointers stay valid.
 * Runs in a transaction (for relation names in messages).
 */
#define HOUSEKEEP_BATCH 1024

typedef struct MarkerRef
{
	EstreamPartition *part;
	EstreamMarker *marker;
	int			pid;
	int64		first;
	TimestampTz since;
} MarkerRef;

/* sessions already told to end, not to be signalled again for a while */
static int	signalled_pids[16];
static TimestampTz signalled_at[16];

void
estream_housekeep(int timeout_ms, int *reaped, int *terminated)
{
	HASH_SEQ_STATUS status;
	EstreamPartition *part;
	MarkerRef  *refs = palloc(sizeof(MarkerRef) * HOUSEKEEP_BATCH);
	int			nrefs = 0;
	TimestampTz now = GetCurrentTimestamp();

	*reaped = 0;
	*terminated = 0;
	if (estream_shared == NULL)
		return;

	LWLockAcquire(estream_shared->lock, LW_SHARED);
	hash_seq_init(&status, part_hash);
	while ((part = hash_seq_search(&status)) != NULL)
	{
		dlist_iter	iter;

		if (part->key.dbid != MyDatabaseId)
			continue;
		SpinLockAcquire(&part->mutex);
		dlist_foreach(iter, &part->inflight)
		{
			EstreamMarker *m = dlist_container(EstreamMarker, node, iter.cur);

			if (nrefs >= HOUSEKEEP_BATCH)
				break;
			refs[nrefs].part = part;
			refs[nrefs].marker = m;
			refs[nrefs].pid = m->pid;
			refs[nrefs].first = m->first;
			refs[nrefs].since = m->since;
			nrefs++;
		}
		SpinLockRelease(&part->mutex);
	}
	LWLockRelease(estream_shared->lock);

	for (int i = 0; i < nrefs; i++)
	{
		MarkerRef  *r = &refs[i];

		if (BackendPidGetProc(r->pid) == NULL)
		{
			bool		removed = false;
			dlist_iter	iter;

			SpinLockAcquire(&r->part->mutex);
			dlist_foreach(iter, &r->part->inflight)
			{
				EstreamMarker *m = dlist_container(EstreamMarker, node, iter.cur);

				if (m == r->marker && m->pid == r->pid && m->first == r->first)
				{
					dlist_delete(&m->node);
					removed = true;
					break;
				}
			}
			SpinLockRelease(&r->part->mutex);
			if (removed)
			{
				char	   *relname = get_rel_name(r->part->key.logrelid);

				(*reaped)++;
				ConditionVariableBroadcast(&r->part->cv);
				ConditionVariableBroadcast(&estream_shared->any_cv);
				ereport(LOG,
						(errmsg("estream removed the in-flight marker of gone process %d on partition %d of log \"%s\"",
								r->pid, r->part->key.partition,
								relname ? relname : "?")));
			}
		}
		else if (timeout_ms > 0 &&
				 TimestampDifferenceExceeds(r->since, now, timeout_ms))
		{
			char	   *relname;
			int			free_slot = -1;
			bool		recent = false;

			/* one signal per session: it may take a moment to exit */
			for (int k = 0; k < lengthof(signalled_pids); k++)
			{
				if (signalled_pids[k] == r->pid &&
					!TimestampDifferenceExceeds(signalled_at[k], now, 10000))
					recent = true;
				else if (free_slot < 0 &&
						 (signalled_pids[k] == 0 ||
						  TimestampDifferenceExceeds(signalled_at[k], now, 10000)))
					free_slot = k;
			}
			if (recent)
				continue;

			relname = get_rel_name(r->part->key.logrelid);
			ereport(LOG,
					(errmsg("terminating process %d: its transaction has held back the stable offset of partition %d of log \"%s\" for longer than estream.transaction_timeout (%d ms)",
							r->pid, r->part->key.partition,
							relname ? relname : "?", timeout_ms)));
			if (kill(r->pid, SIGTERM) == 0)
			{
				(*terminated)++;
				if (free_slot >= 0)
				{
					signalled_pids[free_slot] = r->pid;
					signalled_at[free_slot] = now;
				}
			}
		}
	}
}

/*
 * estream._shared_partitions() returns the shared state of every partition
 * of this database touched since the server started: log relation,
 * partition, stable and next offset, in-flight transactions and the start
 * of the oldest.  The worker persists the stable offsets from it.
 */
typedef struct SharedRow
{
	Oid			logrelid;
	int32		partition;
	int64		stable;
	int64		next;
	int32		inflight;
	TimestampTz oldest;
} SharedRow;

PG_FUNCTION_INFO_V1(estream_shared_partitions);
Datum
estream_shared_partitions(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS status;
	EstreamPartition *part;
	SharedRow  *rows;
	int			n = 0;
	int			max = estream_max_partitions;

	estream_require_shmem();
	InitMaterializedSRF(fcinfo, 0);

	rows = palloc(sizeof(SharedRow) * max);
	LWLockAcquire(estream_shared->lock, LW_SHARED);
	hash_seq_init(&status, part_hash);
	while ((part = hash_seq_search(&status)) != NULL)
	{
		SharedRow  *r;

		if (part->key.dbid != MyDatabaseId || n >= max)
			continue;
		r = &rows[n];
		r->logrelid = part->key.logrelid;
		r->partition = part->key.partition;
		r->inflight = 0;
		r->oldest = 0;
		SpinLockAcquire(&part->mutex);
		if (part->initialized)
		{
			dlist_iter	iter;

			r->stable = stable_locked(part);
			r->next = part->next;
			dlist_foreach(iter, &part->inflight)
			{
				EstreamMarker *m = dlist_container(EstreamMarker, node, iter.cur);

				r->inflight++;
				if (r->oldest == 0 || m->since < r->oldest)
					r->oldest = m->since;
			}
			n++;
		}
		SpinLockRelease(&part->mutex);
	}
	LWLockRelease(estream_shared->lock);

	for (int i = 0; i < n; i++)
	{
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};

		values[0] = ObjectIdGetDatum(rows[i].logrelid);
		values[1] = Int32GetDatum(rows[i].partition);
		values[2] = Int64GetDatum(rows[i].stable);
		values[3] = Int64GetDatum(rows[i].next);
		values[4] = Int32GetDatum(rows[i].inflight);
		values[5] = TimestampTzGetDatum(rows[i].oldest);
		nulls[5] = (rows[i].oldest == 0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
