/*-------------------------------------------------------------------------
 *
 * shmem.c
 *		Shared partition state: offset allocation, in-flight producers and
 *		the stable watermark of every topic partition in use.
 *
 * Concurrent transactions commit in any order, so a reader that simply
 * read "offset > last seen" would skip an offset whose transaction commits
 * after one holding a higher offset.  Like Kafka's last stable offset, every
 * partition therefore has a stable watermark W below which every offset
 * belongs to a transaction that has ended.  Readers read W first, then take
 * a fresh snapshot and scan [from, W).
 *
 * For each partition in use we keep in a slot of shared memory:
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
 * exposes an offset range that only aborted transactions used.
 *
 * Slots and their life
 * --------------------
 *
 * estream.max_partitions slots exist; they bound the partitions in use at
 * once, not the partitions that exist.  A slot is given to a partition
 * when a producer first needs it ("creation"), and initialized from what
 * is stored (stored_offset_end(): 1 + the highest stored offset, the log
 * start, the persisted stable offset, the highest offset a consumer group
 * committed).  A slot that is idle -- no in-flight marker, no pin -- may be
 * taken back ("evicted") when another partition needs one and none is free
 * (a clock sweep over the slots, of every database, giving a second chance
 * to slots used since the hand last passed), and the database worker takes
 * back the slots of dropped topics and databases.  Only when every slot is
 * held by a marker or a pin does the caller that needs one more get
 * "out of estream partition slots"; nobody else is affected.
 *
 * Readers never take a slot.  A partition without one has no marker, so
 * no transaction is in flight on it (a producer needs the slot first), and
 * its W is what a slot would be initialized with now: stored_offset_end().
 * A producer may create the slot while a reader computes that, so the
 * reader notes, under the LWLock, that there is no slot and the creation
 * count of the key's bucket; computes the value with a fresh snapshot; and
 * looks again under the LWLock.  A slot found then is used instead; no
 * slot and the same count mean that no slot existed at any moment in
 * between, so every transaction that ever produced to the partition had
 * ended before the snapshot was taken, and the value is a valid W (and
 * next) of the partition.  Otherwise it tries again.
 *
 * Why re-initializing after an eviction is safe
 * ---------------------------------------------
 *
 * An evicted slot had no marker: every transaction that produced to it has
 * ended (its marker is dropped after ProcArrayEndTransaction, or by a
 * backend that is exiting and whose transaction can only abort), and
 * committed_end C is 1 + the highest committed offset.  Every W the slot
 * ever showed was <= C, and, as in departure (a) of docs/architecture.md,
 * the offset C - 1 is stored by a committed transaction, visible to every
 * snapshot taken after the eviction.  Retention and compaction, the only
 * steps that remove committed records, raise the persisted stable offset
 * past what they remove in the same transaction (estream--1.3--1.4.sql), so
 * stored_offset_end() computed after the eviction is >= C either way.  So
 * the new generation starts at or above every W a reader saw: W never moves
 * backwards, no offset a consumer passed is handed out again, and every
 * offset below the new W belongs to a transaction that has ended.  This is
 * the argument of a restart, with one difference that makes it stronger:
 * nothing is lost, so synchronous_commit does not matter.  (The one input
 * that can shrink is the highest committed group offset, by deleting a
 * group or seeking back; it can exceed the others only after a crash lost
 * asynchronously committed records, as described for restarts.)
 * An evicted slot's W is queued for the worker of its database, which
 * persists it at its next run, so that standbys see the partition's last
 * records even if nobody produces to it again.
 *
 * Note about locking:
 *
 * - EstreamShared->lock (an LWLock of the "estream" tranche) protects the
 *	 key-to-slot hash table, the free list, the clock hand, the queue of
 *	 evicted watermarks and the counters: shared to look up, exclusive to
 *	 create, evict or reclaim.  It is never held across a call that can
 *	 error, and never while waiting.
 * - A slot's in_use, key and generation change only with the LWLock held
 *	 exclusively AND the slot's mutex held, so holding either keeps them
 *	 still: a backend holding the LWLock (any mode) may use a slot it looked
 *	 up without checking its generation.
 * - EstreamPartition->mutex (a spinlock) protects every other field of the
 *	 slot, including the in-flight list and the markers linked into it,
 *	 pins and usage.  Registering a marker and advancing next happen in ONE
 *	 critical section, which also checks the slot's generation, or a reader
 *	 could see next move with no marker.  No code holding it can error,
 *	 allocate or sleep.
 * - A backend keeps references (slot, generation) to slots: in its cache of
 *	 partitions, in a reader.  They are hints: every use checks the
 *	 generation under the mutex, and a stale one is looked up again.  A
 *	 backend dereferences a slot without that check only while it holds
 *	 the LWLock, a pin or a marker on it: a pinned slot or one with
 *	 markers is never evicted.  Pins are short: a producer pins the slots of
 *	 a multi-partition call from lookup to reservation (so that it fails
 *	 before reserving anything if it cannot have them all), and a backend
 *	 pins a slot while it initializes it.  Pins are undone at the end of the
 *	 call, or by the (sub)transaction abort and exit callbacks.
 * - A long-poll sleeps on its slot's condition variable without a pin; the
 *	 evictor broadcasts it, and the sleeper, which checks the generation
 *	 after PrepareToSleep and after every wake-up, looks again.  A long-poll
 *	 on a partition without a slot sleeps on any_cv, which every move of any
 *	 W broadcasts, and looks again when the creation count of its key's
 *	 bucket changes: a W can only move after a slot is created.
 * - The end-of-transaction callback drops this backend's markers at
 *	 XACT_EVENT_COMMIT / XACT_EVENT_ABORT, which run after
 *	 ProcArrayEndTransaction: by the time W moves past our offsets, our
 *	 rows are visible (or known aborted) to every new snapshot.  It takes
 *	 only spinlocks and broadcasts condition variables.
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
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "port/atomics.h"
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
#include "acl.h"
#include "shmem.h"
#include "topic.h"

/* creation counts: one per bucket of keys (a power of two) */
#define ESTREAM_CREATION_BUCKETS 1024

/*
 * Evicted watermarks waiting for their database's worker: room for two
 * table's worth of evictions between two runs of the worker.
 */
#define EVICTED_CAPACITY(nslots)	Max(1024, 2 * (nslots))

/*
 * The shared end cache: the watermark of partitions without a slot, as a
 * reader last computed it (see "The end cache" below).  Sets of
 * END_CACHE_WAYS entries; END_CACHE_PER_SLOT entries per slot, at least
 * END_CACHE_MIN, rounded up to a power of two.
 */
#define END_CACHE_WAYS 4
#define END_CACHE_PER_SLOT 8
#define END_CACHE_MIN 8192

/* DROP EXTENSION, ALTER EXTENSION UPDATE or drop_topic() in progress at once */
#define ESTREAM_DRAINS 16

/*
 * A transaction about to drop or replace what long-polls wait on: waits of
 * its database (on one topic, or on all with topic_id 0) end at once
 * instead of holding their locks until their deadline.
 */
typedef struct EstreamDrain
{
	int			pid;			/* 0: free entry */
	Oid			dbid;
	int32		topic_id;		/* 0: every topic of the database */
} EstreamDrain;

typedef struct EstreamShared
{
	LWLock	   *lock;			/* see "Note about locking" above */
	int			markers_per_backend;
	int			nslots;
	ConditionVariable any_cv;	/* broadcast when any stable watermark moves,
								 * for waits over several partitions and on
								 * partitions without a slot */
	/* the rest is protected by lock */
	int			nfree;			/* slots on the free list */
	int			clock_hand;		/* next slot the clock sweep looks at */
	int			nevicted;		/* entries of the evicted queue in use */
	int			evicted_overwrite;	/* next entry to overwrite when full */
	uint64		creations;		/* slots given to a partition */
	uint64		evictions;		/* idle slots taken back for another */
	uint64		reclaimed;		/* slots of dropped topics taken back */
	uint64		exhausted;		/* calls refused: every slot held */
	uint64		evicted_lost;	/* evicted watermarks overwritten unpersisted */
	slock_t		drain_mutex;	/* protects drains */
	EstreamDrain drains[ESTREAM_DRAINS];
} EstreamShared;

/* key-to-slot hash table entry */
typedef struct PartHashEntry
{
	EstreamPartKey key;			/* hash key, must be first */
	int			slot;
} PartHashEntry;

/*
 * Watermarks of an evicted slot, kept until the worker of its database
 * persists them (so that standbys see its last records).
 */
typedef struct EvictedWatermarks
{
	EstreamPartKey key;
	int64		stable;
	int64		next;
} EvictedWatermarks;

/*
 * The end cache.  A reader of a partition without a slot computes its
 * watermark from storage (stored_offset_end(), a query on the log), which
 * stays valid until a slot is created for the partition (see
 * reader_resolve()).  Each backend keeps what it computed; the end cache
 * shares it, so that a new session (an administrator's view over thousands
 * of idle partitions) does not query every log again.  An entry is stored
 * under the LWLock in shared mode, only by a reader that saw, under the
 * LWLock, no slot for the key and no creation in its bucket since before
 * it computed the value (or for a partition its transaction created);
 * giving the key a slot, under the LWLock held exclusively, removes the
 * entry.  So an entry present is valid.  The topic id guards against a log
 * OID reused by a new topic.  Entries are only a cache: a lost or
 * overwritten one is computed again.
 */
typedef struct EndCacheEntry
{
	EstreamPartKey key;
	int32		topic_id;		/* 0: empty entry */
	int64		end;
} EndCacheEntry;

typedef struct EndCacheSet
{
	slock_t		mutex;			/* protects the set */
	uint8		victim;			/* next entry to replace */
	EndCacheEntry entries[END_CACHE_WAYS];
} EndCacheSet;

/* One marker this backend's open transaction holds (backend-local) */
typedef struct LocalMarker
{
	EstreamPartition *part;		/* held by the marker: never evicted */
	uint64		generation;		/* of the slot, which the marker holds */
	EstreamPartKey key;
	EstreamMarker *marker;		/* in shared memory */
	int64		last;			/* highest offset produced by live subxacts,
								 * -1 if none */
} LocalMarker;

/* A pin this backend holds (backend-local) */
typedef struct LocalPin
{
	EstreamPartition *part;
	int			nestlevel;		/* transaction nesting level that took it */
} LocalPin;

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
	EstreamPartRef ref;			/* a hint: checked at every use; part NULL if
								 * none */
	bool		has_end;		/* end is known */
	int64		end;			/* watermark of the partition without a slot */
	uint64		end_creations;	/* creation count of its bucket then */
} LocalPartEntry;

static EstreamShared *estream_shared = NULL;
static HTAB *part_hash = NULL;
static EstreamPartition *slots = NULL;
static int *free_slots = NULL;
static pg_atomic_uint64 *creation_counts = NULL;
static EvictedWatermarks *evicted = NULL;
static EstreamMarker *all_markers = NULL;
static EndCacheSet *end_cache = NULL;
static uint32 end_cache_sets = 0;	/* a power of two */

static HTAB *local_part_cache = NULL;
static LocalMarker *local_markers = NULL;
static int	n_local_markers = 0;
static LocalPin *local_pins = NULL;
static int	n_local_pins = 0;
static int	max_local_pins = 0;
static SubxactSave *subxact_saves = NULL;
static int	n_subxact_saves = 0;
static int	max_subxact_saves = 0;
static bool callbacks_registered = false;
static bool local_drains = false;	/* this backend has entries in drains */
static bool persisting = false;

static void estream_xact_callback(XactEvent event, void *arg);
static void estream_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
									 SubTransactionId parentSubid, void *arg);
static void release_markers(bool commit);
static void end_drains(void);
static void release_pins(int nestlevel);
static void estream_backend_exit(int code, Datum arg);

/* Number of sets of the end cache, a power of two */
static uint32
end_cache_nsets(void)
{
	uint64		want = Max((uint64) END_CACHE_MIN,
						   (uint64) estream_max_partitions * END_CACHE_PER_SLOT) / END_CACHE_WAYS;
	uint32		n = 1;

	while (n < want && n < (UINT32_MAX / 2))
		n <<= 1;
	return n;
}

/*
 * The shared memory of the partition state, for estream.c's
 * shmem_request_hook.
 */
Size
estream_partitions_shmem_size(void)
{
	Size		size;

	size = MAXALIGN(sizeof(EstreamShared));
	size = add_size(size, hash_estimate_size(estream_max_partitions,
											 sizeof(PartHashEntry)));
	size = add_size(size, mul_size(estream_max_partitions, sizeof(EstreamPartition)));
	size = add_size(size, mul_size(estream_max_partitions, sizeof(int)));
	size = add_size(size, mul_size(EVICTED_CAPACITY(estream_max_partitions),
								   sizeof(EvictedWatermarks)));
	size = add_size(size, mul_size(ESTREAM_CREATION_BUCKETS, sizeof(pg_atomic_uint64)));
	size = add_size(size, mul_size(mul_size(MaxBackends,
											estream_max_partitions_per_xact),
								   sizeof(EstreamMarker)));
	size = add_size(size, mul_size(end_cache_nsets(), sizeof(EndCacheSet)));
	return size;
}

/*
 * Attach to (or create) the shared partition state, from estream.c's
 * shmem_startup_hook, which holds AddinShmemInitLock; lock is the LWLock
 * of EstreamShared.
 */
void
estream_partitions_shmem_startup(LWLock *lock)
{
	bool		found;
	bool		found_slots;
	HASHCTL		info;
	int			n = estream_max_partitions;

	estream_shared = ShmemInitStruct("estream state", sizeof(EstreamShared), &found);
	if (!found)
	{
		memset(estream_shared, 0, sizeof(EstreamShared));
		estream_shared->lock = lock;
		estream_shared->markers_per_backend = estream_max_partitions_per_xact;
		estream_shared->nslots = n;
		ConditionVariableInit(&estream_shared->any_cv);
		SpinLockInit(&estream_shared->drain_mutex);
	}
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(EstreamPartKey);
	info.entrysize = sizeof(PartHashEntry);
	part_hash = ShmemInitHash("estream partitions", n, n,
							  &info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);

	/*
	 * Every slot's mutex and condition variable are initialized here, once: a
	 * backend may be about to sleep on a slot's condition variable while the
	 * slot changes hands.
	 */
	slots = ShmemInitStruct("estream partition slots",
							mul_size(n, sizeof(EstreamPartition)), &found_slots);
	free_slots = ShmemInitStruct("estream free slots", mul_size(n, sizeof(int)), &found);
	evicted = ShmemInitStruct("estream evicted watermarks",
							  mul_size(EVICTED_CAPACITY(n), sizeof(EvictedWatermarks)),
							  &found);
	creation_counts = ShmemInitStruct("estream creation counts",
									  mul_size(ESTREAM_CREATION_BUCKETS,
											   sizeof(pg_atomic_uint64)), &found);
	if (!found_slots)
	{
		for (int i = 0; i < n; i++)
		{
			EstreamPartition *part = &slots[i];

			memset(part, 0, sizeof(EstreamPartition));
			SpinLockInit(&part->mutex);
			dlist_init(&part->inflight);
			ConditionVariableInit(&part->cv);
			/* popped from the end: slot 0 first */
			free_slots[i] = n - 1 - i;
		}
		estream_shared->nfree = n;
		for (int i = 0; i < ESTREAM_CREATION_BUCKETS; i++)
			pg_atomic_init_u64(&creation_counts[i], 0);
	}

	all_markers = ShmemInitStruct("estream markers",
								  mul_size(mul_size(MaxBackends,
													estream_max_partitions_per_xact),
										   sizeof(EstreamMarker)),
								  &found);
	if (!found)
		memset(all_markers, 0, mul_size(mul_size(MaxBackends,
												 estream_max_partitions_per_xact),
										sizeof(EstreamMarker)));

	end_cache_sets = end_cache_nsets();
	end_cache = ShmemInitStruct("estream end cache",
								mul_size(end_cache_sets, sizeof(EndCacheSet)), &found);
	if (!found)
	{
		memset(end_cache, 0, mul_size(end_cache_sets, sizeof(EndCacheSet)));
		for (uint32 i = 0; i < end_cache_sets; i++)
			SpinLockInit(&end_cache[i].mutex);
	}
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
	max_local_pins = 16;
	local_pins = MemoryContextAlloc(TopMemoryContext, sizeof(LocalPin) * max_local_pins);

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

		/*
		 * 1 + the highest stored offset, but never below the log start:
		 * retention may have dropped every record of the partition.  From 1.2
		 * on, never below the stable offset the worker persisted nor an
		 * offset a consumer group committed either: with synchronous_commit =
		 * off a crash can lose committed records that consumers have already
		 * read past.
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
		topic->max_offset_plan = estream_prepare_kept(sql, 1, argtypes);
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

static inline void
make_key(EstreamPartKey *key, EstreamTopic *topic, int32 partition)
{
	memset(key, 0, sizeof(EstreamPartKey));
	key->dbid = MyDatabaseId;
	key->logrelid = topic->logrelid;
	key->partition = partition;
}

static inline pg_atomic_uint64 *
creation_count(uint32 hashcode)
{
	return &creation_counts[hashcode & (ESTREAM_CREATION_BUCKETS - 1)];
}

/*
 * The end of a partition without a slot, if the end cache has it.  Caller
 * holds estream_shared->lock (any mode) and found no slot for the key.
 */
static bool
end_cache_lookup(EstreamPartKey *key, uint32 hashcode, int32 topic_id, int64 *end)
{
	EndCacheSet *set = &end_cache[hashcode & (end_cache_sets - 1)];
	bool		found = false;

	SpinLockAcquire(&set->mutex);
	for (int i = 0; i < END_CACHE_WAYS; i++)
	{
		EndCacheEntry *e = &set->entries[i];

		if (e->topic_id == topic_id && memcmp(&e->key, key, sizeof(EstreamPartKey)) == 0)
		{
			*end = e->end;
			found = true;
			break;
		}
	}
	SpinLockRelease(&set->mutex);
	return found;
}

/*
 * Remember the end of a partition without a slot.  Caller holds
 * estream_shared->lock (any mode) and knows the value valid now (see "The
 * end cache").  Replaces the key's entry, else an empty one, else the
 * set's next victim.
 */
static void
end_cache_store(EstreamPartKey *key, uint32 hashcode, int32 topic_id, int64 end)
{
	EndCacheSet *set = &end_cache[hashcode & (end_cache_sets - 1)];
	EndCacheEntry *e = NULL;

	SpinLockAcquire(&set->mutex);
	for (int i = 0; i < END_CACHE_WAYS && e == NULL; i++)
	{
		if (memcmp(&set->entries[i].key, key, sizeof(EstreamPartKey)) == 0)
			e = &set->entries[i];
	}
	for (int i = 0; i < END_CACHE_WAYS && e == NULL; i++)
	{
		if (set->entries[i].topic_id == 0)
			e = &set->entries[i];
	}
	if (e == NULL)
	{
		e = &set->entries[set->victim];
		set->victim = (set->victim + 1) % END_CACHE_WAYS;
	}
	e->key = *key;
	e->topic_id = topic_id;
	e->end = end;
	SpinLockRelease(&set->mutex);
}

/*
 * Forget the end of a partition that is given a slot.  Caller holds
 * estream_shared->lock exclusively.
 */
static void
end_cache_forget(EstreamPartKey *key, uint32 hashcode)
{
	EndCacheSet *set = &end_cache[hashcode & (end_cache_sets - 1)];

	SpinLockAcquire(&set->mutex);
	for (int i = 0; i < END_CACHE_WAYS; i++)
	{
		EndCacheEntry *e = &set->entries[i];

		if (memcmp(&e->key, key, sizeof(EstreamPartKey)) == 0)
		{
			memset(e, 0, sizeof(EndCacheEntry));
			break;
		}
	}
	SpinLockRelease(&set->mutex);
}

/*
 * The slot of key, or NULL.  Caller holds estream_shared->lock (any mode),
 * which keeps the slot's identity still until it is released.
 */
static EstreamPartition *
lookup_locked(EstreamPartKey *key, uint32 hashcode)
{
	PartHashEntry *h = hash_search_with_hash_value(part_hash, key, hashcode,
												   HASH_FIND, NULL);

	return h != NULL ? &slots[h->slot] : NULL;
}

/*
 * Watermarks of a slot.  Caller holds its mutex.  Markers are appended with
 * first = next, which only grows, so the list is ordered by first and its
 * head holds the lowest.
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

/*
 * Read the watermarks of the slot a reference points to.  Returns false,
 * reading nothing, if the slot was taken back since (or is not initialized
 * yet).
 */
static bool
read_ref(EstreamPartRef *ref, EstreamWatermarks *wm)
{
	EstreamPartition *part = ref->part;
	bool		ok;

	SpinLockAcquire(&part->mutex);
	ok = part->generation == ref->generation && part->initialized;
	if (ok)
	{
		wm->stable = stable_locked(part);
		wm->next = part->next;
		part->usage = 1;
	}
	SpinLockRelease(&part->mutex);
	return ok;
}

/*
 * Remember a pin this backend took, so that an error undoes it.  Room is
 * made before the pin is taken (make_pin_room), so this cannot fail.
 */
static void
make_pin_room(void)
{
	if (n_local_pins >= max_local_pins)
	{
		max_local_pins *= 2;
		local_pins = repalloc(local_pins, sizeof(LocalPin) * max_local_pins);
	}
}

static void
remember_pin(EstreamPartition *part)
{
	Assert(n_local_pins < max_local_pins);
	local_pins[n_local_pins].part = part;
	local_pins[n_local_pins].nestlevel = GetCurrentTransactionNestLevel();
	n_local_pins++;
}

/*
 * Drop one pin this backend holds on part.  No error, no allocation.
 */
static void
unpin(EstreamPartition *part)
{
	for (int i = n_local_pins - 1; i >= 0; i--)
	{
		if (local_pins[i].part == part)
		{
			SpinLockAcquire(&part->mutex);
			Assert(part->pins > 0);
			part->pins--;
			SpinLockRelease(&part->mutex);
			local_pins[i] = local_pins[--n_local_pins];
			return;
		}
	}
	elog(WARNING, "estream: no pin to drop on a partition slot");
}

/*
 * Drop every pin taken at transaction nesting level nestlevel or deeper
 * (0: all).  Called at (sub)transaction abort and at exit: takes only
 * spinlocks, cannot fail.
 */
static void
release_pins(int nestlevel)
{
	int			i = 0;

	while (i < n_local_pins)
	{
		if (local_pins[i].nestlevel >= nestlevel)
		{
			EstreamPartition *part = local_pins[i].part;

			SpinLockAcquire(&part->mutex);
			if (part->pins > 0)
				part->pins--;
			SpinLockRelease(&part->mutex);
			local_pins[i] = local_pins[--n_local_pins];
		}
		else
			i++;
	}
}

/*
 * Queue the watermarks of an evicted slot for the worker of its database.
 * Caller holds the LWLock exclusively.  When the queue is full (its
 * database's worker does not run), an entry is overwritten: that
 * partition's persisted stable offset then catches up only when somebody
 * produces to it again.
 */
static void
queue_evicted_locked(EstreamPartKey *key, int64 stable, int64 next)
{
	EvictedWatermarks *e;

	if (estream_shared->nevicted < EVICTED_CAPACITY(estream_shared->nslots))
		e = &evicted[estream_shared->nevicted++];
	else
	{
		e = &evicted[estream_shared->evicted_overwrite];
		estream_shared->evicted_overwrite =
			(estream_shared->evicted_overwrite + 1) % EVICTED_CAPACITY(estream_shared->nslots);
		estream_shared->evicted_lost++;
	}
	e->key = *key;
	e->stable = stable;
	e->next = next;
}

/*
 * Take a slot back from its partition.  Caller holds the LWLock exclusively
 * and the slot's mutex, and has checked that the slot is idle (no marker,
 * no pin); releases the mutex.  A backend still sleeping on the slot's
 * condition variable is woken, finds the generation changed and looks its
 * partition up again.
 */
static void
take_back_locked(EstreamPartition *part, bool queue)
{
	EstreamPartKey key = part->key;
	bool		initialized = part->initialized;
	int64		stable = part->committed_end;
	int64		next = part->next;

	Assert(part->in_use && part->pins == 0 && dlist_is_empty(&part->inflight));
	part->in_use = false;
	part->initialized = false;
	part->generation++;
	SpinLockRelease(&part->mutex);

	if (hash_search(part_hash, &key, HASH_REMOVE, NULL) == NULL)
		elog(WARNING, "estream: partition slot missing from its hash table");
	if (queue && initialized)
		queue_evicted_locked(&key, stable, next);
	ConditionVariableBroadcast(&part->cv);
}

/*
 * Find an idle slot to evict: a clock sweep over every slot, which clears
 * the usage bit of idle slots it passes and takes the first idle slot whose
 * bit is already clear.  Two turns are enough to find one if there is
 * any.  Caller holds the LWLock exclusively.  Returns the slot number, or
 * -1 if every slot is held by a marker or a pin.
 */
static int
evict_locked(void)
{
	int			n = estream_shared->nslots;

	for (int i = 0; i < 2 * n; i++)
	{
		int			slotno = estream_shared->clock_hand;
		EstreamPartition *part = &slots[slotno];

		estream_shared->clock_hand = (slotno + 1) % n;
		SpinLockAcquire(&part->mutex);
		if (part->in_use && part->pins == 0 && dlist_is_empty(&part->inflight))
		{
			if (part->usage == 0)
			{
				take_back_locked(part, true);
				estream_shared->evictions++;
				return slotno;
			}
			part->usage = 0;
		}
		SpinLockRelease(&part->mutex);
	}
	return -1;
}

/*
 * Give a slot to key, pinned by this backend and not initialized.  Caller
 * holds the LWLock exclusively and has made pin room; key has no slot.
 * Returns NULL if every slot is held.
 */
static EstreamPartition *
create_locked(EstreamPartKey *key, uint32 hashcode)
{
	int			slotno;
	PartHashEntry *h;
	bool		found;
	EstreamPartition *part;

	if (estream_shared->nfree > 0)
		slotno = free_slots[--estream_shared->nfree];
	else if ((slotno = evict_locked()) < 0)
		return NULL;

	/* as many hash entries as slots, and this one's slot was free */
	h = hash_search_with_hash_value(part_hash, key, hashcode, HASH_ENTER_NULL, &found);
	if (h == NULL || found)
	{
		free_slots[estream_shared->nfree++] = slotno;
		elog(ERROR, "estream: could not enter a partition into the slot table");
	}
	h->slot = slotno;

	part = &slots[slotno];
	SpinLockAcquire(&part->mutex);
	Assert(!part->in_use && dlist_is_empty(&part->inflight) && part->pins == 0);
	part->key = *key;
	part->in_use = true;
	part->initialized = false;
	part->next = 0;
	part->committed_end = 0;
	part->usage = 1;
	part->pins = 1;
	SpinLockRelease(&part->mutex);
	remember_pin(part);

	end_cache_forget(key, hashcode);
	pg_atomic_fetch_add_u64(creation_count(hashcode), 1);
	estream_shared->creations++;
	return part;
}

/*
 * Find or create the slot of a topic partition for a producer, initialized
 * from the stored log if it is new.  With ESTREAM_ACQUIRE_PIN the slot is
 * pinned (estream_unpin_partition() or the end of the transaction drops
 * the pin), else *ref is a hint that estream_reserve() checks.  Raises
 * "out of estream partition slots" (53200) if every slot is held by a
 * marker or a pin: only this caller fails.
 */
void
estream_acquire_partition(EstreamTopic *topic, int32 partition, int flags,
						  EstreamPartRef *ref)
{
	LocalPartKey lkey;
	LocalPartEntry *lentry;
	EstreamPartKey key;
	uint32		hashcode;
	EstreamPartition *part;
	bool		initialized;

	estream_require_shmem();
	ensure_backend_state();

	lkey.logrelid = topic->logrelid;
	lkey.partition = partition;
	make_pin_room();
	if ((flags & ESTREAM_ACQUIRE_FRESH) == 0)
	{
		lentry = hash_search(local_part_cache, &lkey, HASH_FIND, NULL);
		if (lentry != NULL && lentry->ref.part != NULL)
		{
			*ref = lentry->ref;
			if ((flags & ESTREAM_ACQUIRE_PIN) == 0)
				return;

			/* a pin taken with the generation checked holds the slot */
			part = ref->part;
			SpinLockAcquire(&part->mutex);
			initialized = (part->generation == ref->generation && part->initialized);
			if (initialized)
				part->pins++;
			SpinLockRelease(&part->mutex);
			if (initialized)
			{
				remember_pin(part);
				return;
			}
		}
	}

	make_key(&key, topic, partition);
	hashcode = get_hash_value(part_hash, &key);

	/* pinned from here until initialized (and on, if asked) */
	LWLockAcquire(estream_shared->lock, LW_SHARED);
	part = lookup_locked(&key, hashcode);
	if (part != NULL)
	{
		SpinLockAcquire(&part->mutex);
		part->pins++;
		SpinLockRelease(&part->mutex);
		remember_pin(part);
	}
	LWLockRelease(estream_shared->lock);

	if (part == NULL)
	{
		LWLockAcquire(estream_shared->lock, LW_EXCLUSIVE);
		part = lookup_locked(&key, hashcode);
		if (part != NULL)
		{
			SpinLockAcquire(&part->mutex);
			part->pins++;
			SpinLockRelease(&part->mutex);
			remember_pin(part);
		}
		else if ((part = create_locked(&key, hashcode)) == NULL)
			estream_shared->exhausted++;
		LWLockRelease(estream_shared->lock);

		if (part == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of estream partition slots"),
					 errdetail("All %d slots for partition state in shared memory are held by open transactions or calls that produce to their partitions.",
							   estream_shared->nslots),
					 errhint("Increase estream.max_partitions and restart the server, or produce to fewer partitions in open transactions at once.")));
	}

	/* pinned: the slot's identity cannot change */
	ref->part = part;
	ref->generation = part->generation;

	SpinLockAcquire(&part->mutex);
	initialized = part->initialized;
	SpinLockRelease(&part->mutex);
	if (!initialized)
	{
		int64		end = stored_offset_end(topic, partition);

		/*
		 * Nobody can have produced to this generation of the slot before it
		 * was initialized, and every snapshot used to compute end was taken
		 * after the slot was created, so every computation sees the same
		 * committed rows: the first value stored wins.
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

	if ((flags & ESTREAM_ACQUIRE_PIN) == 0)
		unpin(part);

	lentry = hash_search(local_part_cache, &lkey, HASH_ENTER, NULL);
	lentry->ref = *ref;
	lentry->has_end = false;
}

/*
 * Drop the pin estream_acquire_partition() took.
 */
void
estream_unpin_partition(EstreamPartRef *ref)
{
	unpin(ref->part);
}

/*
 * Check, before anything is reserved, that producing to these partitions
 * of topic keeps the transaction within estream.max_partitions_per_transaction
 * (partitions it already produced to do not count again).
 */
void
estream_check_transaction_partitions(EstreamTopic *topic, const int32 *partitions,
									 int n)
{
	int			more = 0;

	estream_require_shmem();
	ensure_backend_state();

	for (int i = 0; i < n; i++)
	{
		bool		held = false;

		for (int j = 0; j < n_local_markers && !held; j++)
			held = (local_markers[j].key.logrelid == topic->logrelid &&
					local_markers[j].key.partition == partitions[i]);
		if (!held)
			more++;
	}

	if (n_local_markers + more > estream_shared->markers_per_backend)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("transaction produces to too many partitions"),
				 errdetail("The call would make the transaction produce to %d partitions; one transaction can produce to at most %d.",
						   n_local_markers + more, estream_shared->markers_per_backend),
				 errhint("Increase estream.max_partitions_per_transaction, or split the transaction.")));
}

/*
 * Reserve count consecutive offsets of a partition for the current
 * transaction and return the first, or -1 (reserving nothing) if the slot
 * *ref points to was taken back since it was looked up: the caller then
 * acquires it again.  Registers the transaction as in flight on the
 * partition in the same critical section that checks the slot's generation
 * and advances next.  The caller has checked the transaction's partition
 * count.
 */
int64
estream_reserve(EstreamPartRef *ref, int64 count)
{
	EstreamPartition *part = ref->part;
	int			idx = -1;
	int			nestlevel = GetCurrentTransactionNestLevel();
	int64		first;

	Assert(count > 0);

	/*
	 * A marker of ours on this generation of the slot holds it.  (A stale
	 * reference may point to a slot that now belongs to another partition,
	 * maybe one we hold a marker on: the generation tells them apart.)
	 */
	for (int i = n_local_markers - 1; i >= 0; i--)
	{
		if (local_markers[i].part == part &&
			local_markers[i].generation == ref->generation)
		{
			idx = i;
			break;
		}
	}

	if (idx < 0 && n_local_markers >= estream_shared->markers_per_backend)
		elog(ERROR, "estream: transaction partition count not checked before reserving");

	/* Make room for the subtransaction save before reserving anything */
	if (nestlevel > 1 && n_subxact_saves >= max_subxact_saves)
	{
		max_subxact_saves *= 2;
		subxact_saves = repalloc(subxact_saves, sizeof(SubxactSave) * max_subxact_saves);
	}

	if (idx < 0)
	{
		EstreamMarker *m;
		bool		valid;

		idx = n_local_markers;
		m = &all_markers[(Size) (MyBackendId - 1) * estream_shared->markers_per_backend + idx];

		m->pid = MyProcPid;
		m->since = GetCurrentStatementStartTimestamp();
		SpinLockAcquire(&part->mutex);
		valid = (part->generation == ref->generation && part->initialized);
		if (valid)
		{
			first = part->next;
			part->next += count;
			part->usage = 1;
			m->first = first;
			dlist_push_tail(&part->inflight, &m->node);
		}
		SpinLockRelease(&part->mutex);
		if (!valid)
			return -1;

		local_markers[idx].part = part;
		local_markers[idx].generation = ref->generation;
		local_markers[idx].key = part->key;
		local_markers[idx].marker = m;
		local_markers[idx].last = -1;
		n_local_markers++;
	}
	else
	{
		SpinLockAcquire(&part->mutex);
		first = part->next;
		part->next += count;
		part->usage = 1;
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
 * Readers
 */

/*
 * Prepare to read a partition of topic.  Nothing is looked up yet.
 */
void
estream_reader_init(EstreamPartReader *r, EstreamTopic *topic, int32 partition)
{
	LocalPartKey lkey;
	LocalPartEntry *lentry;

	estream_require_shmem();
	ensure_backend_state();

	memset(r, 0, sizeof(EstreamPartReader));
	r->topic = topic;
	r->partition = partition;
	make_key(&r->key, topic, partition);
	r->hashcode = get_hash_value(part_hash, &r->key);
	r->creations = PG_UINT64_MAX;	/* never read: no count is that high */

	/* the backend's last reference, if any, as a hint */
	lkey.logrelid = topic->logrelid;
	lkey.partition = partition;
	lentry = hash_search(local_part_cache, &lkey, HASH_FIND, NULL);
	if (lentry != NULL && lentry->ref.part != NULL)
		r->ref = lentry->ref;
}

/*
 * Look the partition up (without the reader's hint) and read its
 * watermarks: from its slot if it has one, else from storage, taking no
 * slot (see "Slots and their life" above).  Takes the LWLock in shared
 * mode; may run a query.
 */
static void
reader_resolve(EstreamPartReader *r, EstreamWatermarks *wm)
{
	LocalPartKey lkey;
	LocalPartEntry *lentry;
	bool		found;

	lkey.logrelid = r->key.logrelid;
	lkey.partition = r->key.partition;
	lentry = hash_search(local_part_cache, &lkey, HASH_ENTER, &found);
	if (!found)
	{
		lentry->ref.part = NULL;
		lentry->has_end = false;
	}

	for (;;)
	{
		EstreamPartition *part;
		uint64		generation = 0;
		uint64		before;
		int64		end = 0;
		bool		done = false;

		LWLockAcquire(estream_shared->lock, LW_SHARED);
		part = lookup_locked(&r->key, r->hashcode);
		before = pg_atomic_read_u64(creation_count(r->hashcode));
		if (part != NULL)
		{
			generation = part->generation;
			r->ref.part = part;
			r->ref.generation = generation;
			done = read_ref(&r->ref, wm);
		}
		else if ((lentry->has_end && lentry->end_creations == before) ||
				 end_cache_lookup(&r->key, r->hashcode, r->topic->topic_id, &end))
		{
			/*
			 * Computed before (here or by another backend), and no slot
			 * created since: without a slot the watermark cannot move (see
			 * estream_wait_for_stable()).
			 */
			if (!(lentry->has_end && lentry->end_creations == before))
			{
				lentry->has_end = true;
				lentry->end = end;
				lentry->end_creations = before;
			}
			r->ref.part = NULL;
			r->creations = before;
			wm->stable = lentry->end;
			wm->next = lentry->end;
			done = true;
		}
		LWLockRelease(estream_shared->lock);
		if (done)
			break;

		/*
		 * No slot, or one whose producer is still computing where it starts
		 * (or failed to): no reservation has been made in it, so the
		 * watermark is what is stored.
		 */
		end = stored_offset_end(r->topic, r->partition);

		LWLockAcquire(estream_shared->lock, LW_SHARED);
		if (part == NULL)
		{
			part = lookup_locked(&r->key, r->hashcode);
			if (part == NULL &&
				pg_atomic_read_u64(creation_count(r->hashcode)) == before)
			{
				/* no slot at any moment since before the snapshot */
				r->ref.part = NULL;
				r->creations = before;
				wm->stable = end;
				wm->next = end;
				lentry->has_end = true;
				lentry->end = end;
				lentry->end_creations = before;
				end_cache_store(&r->key, r->hashcode, r->topic->topic_id, end);
				done = true;
			}
			else if (part != NULL)
			{
				r->ref.part = part;
				r->ref.generation = part->generation;
				done = read_ref(&r->ref, wm);
			}
		}
		else if (part->generation == generation)
		{
			/*
			 * The same generation of the slot all along: initialized
			 * meanwhile, its own watermarks; still not, no reservation was
			 * made in it since before the snapshot.
			 */
			done = read_ref(&r->ref, wm);
			if (!done)
			{
				wm->stable = end;
				wm->next = end;
				done = true;
			}
		}
		LWLockRelease(estream_shared->lock);
		if (done)
			break;

		/* a slot created or taken back meanwhile: look again */
		CHECK_FOR_INTERRUPTS();
	}

	/* the slot found, as a hint for the next call */
	if (r->ref.part != NULL)
	{
		lentry->ref = r->ref;
		lentry->has_end = false;
	}
	r->last = *wm;
}

/*
 * Read the stable watermark and the next offset of the partition of a
 * reader, never taking a slot.
 */
void
estream_reader_watermarks(EstreamPartReader *r, EstreamWatermarks *wm)
{
	if (r->ref.part != NULL && read_ref(&r->ref, wm))
	{
		r->last = *wm;
		return;
	}
	reader_resolve(r, wm);
}

/*
 * Watermarks of one partition, for SQL functions: never takes a slot.
 */
void
estream_partition_watermarks(EstreamTopic *topic, int32 partition,
							 EstreamWatermarks *wm)
{
	EstreamPartReader r;

	estream_reader_init(&r, topic, partition);
	estream_reader_watermarks(&r, wm);
}

/*
 * Does the current transaction hold back this partition's watermark?  A
 * fetch must not wait for its own transaction to end.
 */
bool
estream_reader_holds_marker(EstreamPartReader *r)
{
	for (int i = 0; i < n_local_markers; i++)
	{
		if (local_markers[i].key.logrelid == r->key.logrelid &&
			local_markers[i].key.partition == r->key.partition)
			return true;
	}
	return false;
}

/*
 * Has the watermark of a reader's partition possibly changed since it was
 * last read?  Reads it again if so; returns the watermarks in *wm.
 * Without a slot, the watermark cannot move until a producer creates one,
 * which the creation count of the key's bucket tells.
 */
static void
reader_refresh(EstreamPartReader *r, EstreamWatermarks *wm)
{
	if (r->ref.part != NULL)
		estream_reader_watermarks(r, wm);
	else if (pg_atomic_read_u64(creation_count(r->hashcode)) != r->creations)
		reader_resolve(r, wm);
	else
		*wm = r->last;
}

/*
 * Sleep until the stable watermark of a reader's partition is above past,
 * or until deadline.  Returns true if it moved, with the watermarks in *wm.
 * Interruptible (cancel, statement_timeout); holds no lock while sleeping.
 * With a slot, sleeps on its condition variable (re-checking the slot
 * after every wake-up: eviction wakes it); without, on any_cv.  Returns
 * false at once while the topic or the extension is being dropped.
 */
bool
estream_wait_for_stable(EstreamPartReader *r, int64 past, TimestampTz deadline,
						EstreamWatermarks *wm)
{
	for (;;)
	{
		ConditionVariable *cv;
		EstreamPartition *part = r->ref.part;
		long		remaining;

		cv = part != NULL ? &part->cv : &estream_shared->any_cv;
		ConditionVariablePrepareToSleep(cv);

		/* read after preparing to sleep, so that no broadcast is missed */
		reader_refresh(r, wm);
		if (wm->stable > past)
		{
			ConditionVariableCancelSleep();
			return true;
		}
		if (r->ref.part != part)
		{
			/* a slot appeared or was taken back: sleep on the right one */
			ConditionVariableCancelSleep();
			continue;
		}
		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (estream_draining(r->topic->topic_id))
			remaining = 0;
		if (remaining <= 0)
		{
			ConditionVariableCancelSleep();
			return false;
		}
		(void) ConditionVariableTimedSleep(cv, remaining, PG_WAIT_EXTENSION);
		ConditionVariableCancelSleep();
	}
}

/*
 * Sleep until the stable watermark of any of n readers' partitions is above
 * its past[i], or until deadline.  Returns true if one moved.
 * Interruptible; holds no lock while sleeping.  Wakes on every watermark
 * move of the server, so keep the partition list short.  The readers are of
 * one topic (a drain of it ends the wait).
 */
bool
estream_wait_for_any(EstreamPartReader *readers, int64 *past, int n,
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

			reader_refresh(&readers[i], &wm);
			moved = wm.stable > past[i];
		}
		if (moved)
			break;
		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (remaining <= 0 || (n > 0 && estream_draining(readers[0].topic->topic_id)))
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
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			if (n_local_markers > 0)
				release_markers(event == XACT_EVENT_COMMIT ||
								event == XACT_EVENT_PARALLEL_COMMIT);
			if (n_local_pins > 0)
				release_pins(0);
			if (local_drains)
				end_drains();
			break;
		default:
			break;
	}
}

/*
 * A rolled-back subtransaction's offsets become holes: restore each marker's
 * "last" to what it was before the subtransaction first produced to it, and
 * drop the pins it took.  A committed subtransaction hands its saves to its
 * parent.
 */
static void
estream_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						 SubTransactionId parentSubid, void *arg)
{
	int			nestlevel;

	if (n_subxact_saves == 0 && n_local_pins == 0)
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
		if (n_local_pins > 0)
			release_pins(nestlevel);
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

		/* pins of the committed level belong to its parent now */
		for (int i = 0; i < n_local_pins; i++)
		{
			if (local_pins[i].nestlevel >= nestlevel)
				local_pins[i].nestlevel = nestlevel - 1;
		}
	}
}

/*
 * A backend that exits in the middle of a producing transaction (FATAL,
 * pg_terminate_backend) drops its markers here.  before_shmem_exit
 * callbacks run last-registered first, so this runs before ShutdownPostgres
 * aborts the transaction, while its xid still looks in progress: harmless,
 * since that transaction can only abort and its rows never become visible,
 * and committed_end is not advanced.  (A slot freed this way may be
 * evicted and initialized again before the abort: its offsets may then be
 * handed out again, which is safe because no W ever passed them, and a
 * new row with one of them waits for the abort in the unique index.)
 */
static void
estream_backend_exit(int code, Datum arg)
{
	if (n_local_markers > 0)
		release_markers(false);
	if (n_local_pins > 0)
		release_pins(0);
	if (local_drains)
		end_drains();
}

/*
 * Drains: DROP EXTENSION and ALTER EXTENSION UPDATE (whole database) and
 * drop_topic() (one topic) need locks that long-polls hold until they
 * return.  estream_begin_drain() records the drain until the end of the
 * calling transaction and wakes every wait; a wait checks
 * estream_draining() after preparing to sleep, so none sleeps through it,
 * and returns what it has.  With every entry taken, waits are still woken
 * once.  Must be called in a transaction.
 */
void
estream_begin_drain(int32 topic_id)
{
	int			free_entry = -1;

	if (estream_shared == NULL)
		return;
	ensure_backend_state();

	SpinLockAcquire(&estream_shared->drain_mutex);
	for (int i = 0; i < ESTREAM_DRAINS; i++)
	{
		EstreamDrain *d = &estream_shared->drains[i];

		if (d->pid == MyProcPid && d->dbid == MyDatabaseId && d->topic_id == topic_id)
		{
			free_entry = -2;	/* already draining */
			break;
		}
		if (d->pid == 0 && free_entry == -1)
			free_entry = i;
	}
	if (free_entry >= 0)
	{
		EstreamDrain *d = &estream_shared->drains[free_entry];

		d->pid = MyProcPid;
		d->dbid = MyDatabaseId;
		d->topic_id = topic_id;
		local_drains = true;
	}
	SpinLockRelease(&estream_shared->drain_mutex);

	/* after the entry is visible: a wait that missed it sees the broadcast */
	ConditionVariableBroadcast(&estream_shared->any_cv);
	for (int i = 0; i < estream_shared->nslots; i++)
		ConditionVariableBroadcast(&slots[i].cv);
}

/*
 * Whether another transaction of this database is dropping topic_id (or,
 * with topic_id 0, any topic) or the extension: waits should not sleep.
 */
bool
estream_draining(int32 topic_id)
{
	bool		found = false;

	if (estream_shared == NULL)
		return false;
	SpinLockAcquire(&estream_shared->drain_mutex);
	for (int i = 0; i < ESTREAM_DRAINS && !found; i++)
	{
		EstreamDrain *d = &estream_shared->drains[i];

		found = d->pid != 0 && d->pid != MyProcPid && d->dbid == MyDatabaseId &&
			(d->topic_id == 0 || topic_id == 0 || d->topic_id == topic_id);
	}
	SpinLockRelease(&estream_shared->drain_mutex);
	return found;
}

/* At the end of the draining transaction.  Must not error. */
static void
end_drains(void)
{
	SpinLockAcquire(&estream_shared->drain_mutex);
	for (int i = 0; i < ESTREAM_DRAINS; i++)
		if (estream_shared->drains[i].pid == MyProcPid)
			estream_shared->drains[i].pid = 0;
	SpinLockRelease(&estream_shared->drain_mutex);
	local_drains = false;
}

/*
 * The worker's "persist stable offsets" step sets this around its
 * transaction: estream._shared_partitions() then also returns (and
 * dequeues) the watermarks of this database's evicted slots.
 */
void
estream_set_persisting(bool on)
{
	persisting = on;
}

/*
 * Housekeeping of the database worker:
 *
 * - remove in-flight markers whose backend is gone (a backend normally
 *	 drops its markers when its transaction ends or when it exits; this is
 *	 the safety net);
 * - with timeout_ms > 0, terminate the session of a transaction whose
 *	 marker has held back a stable offset for longer than that, as Kafka
 *	 aborts a transaction after transaction.timeout.ms;
 * - take back the idle slots of this database's dropped topics, and of
 *	 dropped databases (whose queued evicted watermarks go too).
 *
 * Markers are copied under the spinlock, with their slot's generation, and
 * acted on with no lock held; a marker is removed only if the very same
 * marker is still linked into the same generation of its slot.  Runs in a
 * transaction (for catalog lookups and relation names in messages).
 */
#define HOUSEKEEP_BATCH 1024

typedef struct MarkerRef
{
	EstreamPartition *part;
	uint64		generation;
	EstreamPartKey key;
	EstreamMarker *marker;
	int			pid;
	int64		first;
	TimestampTz since;
} MarkerRef;

typedef struct SlotRef
{
	EstreamPartition *part;
	uint64		generation;
	EstreamPartKey key;
} SlotRef;

/* sessions already told to end, not to be signalled again for a while */
static int	signalled_pids[16];
static TimestampTz signalled_at[16];

/*
 * Does the partition of a slot still exist?  Its database must exist and,
 * for this database, its log relation (a committed DROP is seen).
 */
static bool
slot_owner_exists(EstreamPartKey *key)
{
	if (key->dbid == MyDatabaseId)
		return SearchSysCacheExists1(RELOID, ObjectIdGetDatum(key->logrelid));
	return SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(key->dbid));
}

static int
reclaim_dropped(void)
{
	SlotRef    *cands = palloc(sizeof(SlotRef) * estream_shared->nslots);
	EstreamPartKey *gone;
	int			ncands = 0;
	int			ngone = 0;
	int			nreclaimed = 0;
	Oid			last_gone_db = InvalidOid;
	Oid			last_live_db = InvalidOid;

	LWLockAcquire(estream_shared->lock, LW_SHARED);
	for (int i = 0; i < estream_shared->nslots; i++)
	{
		EstreamPartition *part = &slots[i];

		/* a slot's identity holds still under the LWLock */
		if (!part->in_use)
			continue;
		cands[ncands].part = part;
		cands[ncands].generation = part->generation;
		cands[ncands].key = part->key;
		ncands++;
	}
	LWLockRelease(estream_shared->lock);

	/* keep the candidates whose partition is gone */
	gone = palloc(sizeof(EstreamPartKey) * Max(ncands, 1));
	for (int i = 0; i < ncands; i++)
	{
		SlotRef    *c = &cands[i];
		bool		exists;

		if (c->key.dbid != MyDatabaseId && c->key.dbid == last_live_db)
			exists = true;
		else if (c->key.dbid != MyDatabaseId && c->key.dbid == last_gone_db)
			exists = false;
		else
		{
			exists = slot_owner_exists(&c->key);
			if (c->key.dbid != MyDatabaseId)
			{
				if (exists)
					last_live_db = c->key.dbid;
				else
					last_gone_db = c->key.dbid;
			}
		}
		if (!exists)
		{
			gone[ngone] = c->key;
			if (c->key.dbid != MyDatabaseId)
				gone[ngone].logrelid = InvalidOid;	/* the whole database */
			ngone++;
		}
		else
			c->part = NULL;
	}
	if (ngone == 0)
	{
		pfree(cands);
		pfree(gone);
		return 0;
	}

	LWLockAcquire(estream_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < ncands; i++)
	{
		EstreamPartition *part = cands[i].part;

		if (part == NULL)
			continue;
		SpinLockAcquire(&part->mutex);
		if (part->generation == cands[i].generation && part->in_use &&
			part->pins == 0 && dlist_is_empty(&part->inflight))
		{
			/*
			 * This database's watermarks are queued as for an eviction: if
			 * the topic was in fact created by a transaction that committed
			 * after the look-up above, they still get persisted (for a
			 * dropped topic, the persisting step finds no row to update).
			 */
			take_back_locked(part, cands[i].key.dbid == MyDatabaseId);
			free_slots[estream_shared->nfree++] = part - slots;
			estream_shared->reclaimed++;
			nreclaimed++;
		}
		else
			SpinLockRelease(&part->mutex);
	}

	/* queued watermarks of dropped databases will never be persisted */
	for (int i = 0; i < estream_shared->nevicted;)
	{
		EstreamPartKey *key = &evicted[i].key;
		bool		match = false;

		for (int j = 0; j < ngone && !match; j++)
			match = (gone[j].dbid == key->dbid && !OidIsValid(gone[j].logrelid));
		if (match)
		{
			evicted[i] = evicted[--estream_shared->nevicted];
			if (estream_shared->evicted_overwrite >= estream_shared->nevicted)
				estream_shared->evicted_overwrite = 0;
		}
		else
			i++;
	}
	LWLockRelease(estream_shared->lock);

	pfree(cands);
	pfree(gone);
	return nreclaimed;
}

void
estream_housekeep(int timeout_ms, int *reaped, int *terminated, int *reclaimed)
{
	MarkerRef  *refs = palloc(sizeof(MarkerRef) * HOUSEKEEP_BATCH);
	int			nrefs = 0;
	TimestampTz now = GetCurrentTimestamp();

	*reaped = 0;
	*terminated = 0;
	*reclaimed = 0;
	if (estream_shared == NULL)
		return;

	LWLockAcquire(estream_shared->lock, LW_SHARED);
	for (int i = 0; i < estream_shared->nslots && nrefs < HOUSEKEEP_BATCH; i++)
	{
		EstreamPartition *part = &slots[i];
		dlist_iter	iter;

		if (!part->in_use || part->key.dbid != MyDatabaseId)
			continue;
		SpinLockAcquire(&part->mutex);
		dlist_foreach(iter, &part->inflight)
		{
			EstreamMarker *m = dlist_container(EstreamMarker, node, iter.cur);

			if (nrefs >= HOUSEKEEP_BATCH)
				break;
			refs[nrefs].part = part;
			refs[nrefs].generation = part->generation;
			refs[nrefs].key = part->key;
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
			if (r->part->generation == r->generation)
			{
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
			}
			SpinLockRelease(&r->part->mutex);
			if (removed)
			{
				char	   *relname = get_rel_name(r->key.logrelid);

				(*reaped)++;
				ConditionVariableBroadcast(&r->part->cv);
				ConditionVariableBroadcast(&estream_shared->any_cv);
				ereport(LOG,
						(errmsg("estream removed the in-flight marker of gone process %d on partition %d of log \"%s\"",
								r->pid, r->key.partition,
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
			for (int k = 0; k < (int) lengthof(signalled_pids); k++)
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

			relname = get_rel_name(r->key.logrelid);
			ereport(LOG,
					(errmsg("terminating process %d: its transaction has held back the stable offset of partition %d of log \"%s\" for longer than estream.transaction_timeout (%d ms)",
							r->pid, r->key.partition,
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

	*reclaimed = reclaim_dropped();
}

/*
 * estream._shared_partitions() returns the shared state of every partition
 * of this database that has a slot: log relation, partition, stable and
 * next offset, in-flight transactions and the start of the oldest.  The
 * worker persists the stable offsets from it; in its "persist stable
 * offsets" step it also gets (and dequeues) the watermarks of evicted slots
 * of this database that have no slot again.  Should that step fail, they
 * are lost: the partition's persisted stable offset (what standbys read
 * below) then catches up at its next produce.  Nothing else depends on it.
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
	SharedRow  *rows;
	int			n = 0;
	int			max;

	estream_require_shmem();
	InitMaterializedSRF(fcinfo, 0);

	max = estream_shared->nslots +
		(persisting ? EVICTED_CAPACITY(estream_shared->nslots) : 0);
	rows = palloc(sizeof(SharedRow) * max);
	LWLockAcquire(estream_shared->lock, persisting ? LW_EXCLUSIVE : LW_SHARED);
	for (int i = 0; i < estream_shared->nslots; i++)
	{
		EstreamPartition *part = &slots[i];
		SharedRow  *r;

		if (!part->in_use || part->key.dbid != MyDatabaseId)
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
	if (persisting)
	{
		for (int i = 0; i < estream_shared->nevicted;)
		{
			EvictedWatermarks *e = &evicted[i];

			if (e->key.dbid != MyDatabaseId)
			{
				i++;
				continue;
			}
			/* a slot taken again since has newer watermarks */
			if (lookup_locked(&e->key, get_hash_value(part_hash, &e->key)) == NULL)
			{
				SharedRow  *r = &rows[n++];

				r->logrelid = e->key.logrelid;
				r->partition = e->key.partition;
				r->stable = e->stable;
				r->next = e->next;
				r->inflight = 0;
				r->oldest = 0;
			}
			evicted[i] = evicted[--estream_shared->nevicted];
			if (estream_shared->evicted_overwrite >= estream_shared->nevicted)
				estream_shared->evicted_overwrite = 0;
		}
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

/*
 * estream._partition_slots() returns one row on the use of the shared
 * partition slots of the whole server: the number of slots, those in use,
 * those held (by an open producing transaction or a pin), those of this
 * database, and counters since the server started: slots given to
 * partitions, idle slots evicted, slots of dropped topics reclaimed, calls
 * refused because every slot was held, evicted stable offsets dropped
 * before the worker persisted them.  For roles that may describe the
 * cluster; others get no row.
 */
PG_FUNCTION_INFO_V1(estream_partition_slots);
Datum
estream_partition_slots(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		values[10];
	bool		nulls[10] = {0};
	int			used = 0;
	int			held = 0;
	int			mine = 0;
	int			nevicted;
	uint64		creations;
	uint64		evictions;
	uint64		reclaimed;
	uint64		exhausted;
	uint64		lost;

	estream_require_shmem();
	InitMaterializedSRF(fcinfo, 0);
	if (estream_acl_mode() &&
		!estream_allowed(estream_caller(), ESTREAM_OP_DESCRIBE, ESTREAM_CLUSTER, NULL,
						 InvalidOid))
		return (Datum) 0;

	LWLockAcquire(estream_shared->lock, LW_SHARED);
	for (int i = 0; i < estream_shared->nslots; i++)
	{
		EstreamPartition *part = &slots[i];

		if (!part->in_use)
			continue;
		used++;
		if (part->key.dbid == MyDatabaseId)
			mine++;
		SpinLockAcquire(&part->mutex);
		if (part->pins > 0 || !dlist_is_empty(&part->inflight))
			held++;
		SpinLockRelease(&part->mutex);
	}
	nevicted = estream_shared->nevicted;
	creations = estream_shared->creations;
	evictions = estream_shared->evictions;
	reclaimed = estream_shared->reclaimed;
	exhausted = estream_shared->exhausted;
	lost = estream_shared->evicted_lost;
	LWLockRelease(estream_shared->lock);

	values[0] = Int32GetDatum(estream_shared->nslots);
	values[1] = Int32GetDatum(used);
	values[2] = Int32GetDatum(held);
	values[3] = Int32GetDatum(mine);
	values[4] = Int64GetDatum((int64) creations);
	values[5] = Int64GetDatum((int64) evictions);
	values[6] = Int64GetDatum((int64) reclaimed);
	values[7] = Int64GetDatum((int64) exhausted);
	values[8] = Int32GetDatum(nevicted);
	values[9] = Int64GetDatum((int64) lost);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return (Datum) 0;
}

/*
 * estream._drain(topic_id integer) returns void
 *
 * For drop_topic(): end the long-polls of the topic now and keep new ones
 * from sleeping until this transaction ends (see estream_begin_drain()).
 */
PG_FUNCTION_INFO_V1(estream_drain);
Datum
estream_drain(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("topic_id must not be null")));
	estream_begin_drain(PG_GETARG_INT32(0));
	PG_RETURN_VOID();
}

/*
 * estream._draining(topic_id integer) returns boolean
 *
 * Whether another transaction is dropping the topic (null: any topic) or
 * the extension: the sleeping loops of poll() and consume() stop waiting.
 */
PG_FUNCTION_INFO_V1(estream_draining_sql);
Datum
estream_draining_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(estream_draining(PG_ARGISNULL(0) ? 0 : PG_GETARG_INT32(0)));
}

/*
 * estream._partitions_created(topic_id, log_relid, first, last): partitions
 * first..last of a topic were created by the current transaction
 * (create_topic(), add_partitions()): they are empty, so their watermark is
 * 0 until a producer takes a slot.  Put that in the end cache, so that the
 * first reader of each (an administrator's view right after 2,000 topics
 * were created) does not query its log.  Does nothing for a partition that
 * has a slot already (the transaction produced to it), nor without shared
 * memory.  Refuses partitions whose row the current transaction did not
 * insert: a wrong end would break the stable-offset rule.
 */
PG_FUNCTION_INFO_V1(estream_partitions_created);
Datum
estream_partitions_created(PG_FUNCTION_ARGS)
{
	int32		topic_id = PG_GETARG_INT32(0);
	Oid			logrelid = PG_GETARG_OID(1);
	int32		first = PG_GETARG_INT32(2);
	int32		last = PG_GETARG_INT32(3);
	Datum		args[4];
	int			rc;
	static SPIPlanPtr plan = NULL;

	if (estream_shared == NULL || first > last)
		PG_RETURN_VOID();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (plan == NULL)
	{
		Oid			argtypes[4] = {INT4OID, INT4OID, INT4OID, OIDOID};

		plan = estream_prepare_kept("SELECT p.xmin FROM estream.partition p"
									" JOIN estream.topic t ON t.topic_id OPERATOR(pg_catalog.=) p.topic_id"
									" WHERE p.topic_id OPERATOR(pg_catalog.=) $1"
									" AND p.partition OPERATOR(pg_catalog.>=) $2"
									" AND p.partition OPERATOR(pg_catalog.<=) $3"
									" AND t.log_relid::pg_catalog.oid OPERATOR(pg_catalog.=) $4",
									4, argtypes);
	}
	args[0] = Int32GetDatum(topic_id);
	args[1] = Int32GetDatum(first);
	args[2] = Int32GetDatum(last);
	args[3] = ObjectIdGetDatum(logrelid);
	rc = SPI_execute_plan(plan, args, NULL, true, 0);
	if (rc != SPI_OK_SELECT || SPI_processed != (uint64) (last - first + 1))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("partitions %d to %d of topic %d do not exist", first, last, topic_id),
				 errdetail("estream._partitions_created() is called by create_topic() and add_partitions() for the partitions they create.")));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		xmin = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

		if (isnull || !TransactionIdIsCurrentTransactionId(DatumGetTransactionId(xmin)))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("partitions %d to %d of topic %d were not created by this transaction",
							first, last, topic_id),
					 errdetail("Only partitions created by the current transaction are known to be empty.")));
	}
	SPI_finish();

	for (int32 p = first; p <= last; p++)
	{
		EstreamPartKey key;
		uint32		hashcode;

		memset(&key, 0, sizeof(key));
		key.dbid = MyDatabaseId;
		key.logrelid = logrelid;
		key.partition = p;
		hashcode = get_hash_value(part_hash, &key);
		LWLockAcquire(estream_shared->lock, LW_SHARED);
		if (lookup_locked(&key, hashcode) == NULL)
			end_cache_store(&key, hashcode, topic_id, 0);
		LWLockRelease(estream_shared->lock);
	}
	PG_RETURN_VOID();
}
