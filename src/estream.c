/*-------------------------------------------------------------------------
 *
 * estream.c
 *		Module entry point of estream, the hub of its modules:
 *		PG_MODULE_MAGIC, every GUC, and a _PG_init that delegates to the
 *		subsystems; the shared memory hooks, which add up the subsystems'
 *		sizes and let each attach to its part.
 *
 * Only this file calls into every subsystem; the subsystems read the GUC
 * variables defined here (declared in estream.h) but call nothing of it.
 * See docs/architecture.md, "Source layout", for which module may call
 * which.
 *
 * _PG_init never raises an error: the library is also loaded in backends
 * that did not preload it (CREATE EXTENSION without shared_preload_libraries),
 * where it must stay quiet and let the SQL functions report the problem.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/estream.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "estream.h"
#include "acl.h"
#include "cdc_plugin.h"
#include "schema.h"
#include "shmem.h"
#include "topic.h"
#include "worker.h"

PG_MODULE_MAGIC;

/* GUC variables */
int			estream_max_partitions = 4096;
int			estream_max_partitions_per_xact = 256;
int			estream_max_batch_records = 100000;
int			estream_max_batch_bytes = 64 * 1024 * 1024;
int			estream_default_max_message_bytes = 1024 * 1024;
bool		estream_enable_worker = true;
int			estream_worker_naptime = 1000;
int			estream_capture_naptime = 100;
int			estream_transaction_timeout = 0;
int			estream_maintenance_lock_timeout = 200;
int			estream_capture_copy_timeout = 10 * 60 * 1000;
int			estream_capture_copy_lock_timeout = 5000;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

void		_PG_init(void);
static void define_worker_gucs(void);
static void estream_shmem_request(void);
static void estream_shmem_startup(void);

void
_PG_init(void)
{
	DefineCustomIntVariable("estream.max_batch_records",
							"Maximum number of records in one produce or fetch call.",
							NULL,
							&estream_max_batch_records,
							100000, 1, INT_MAX,
							PGC_SUSET, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("estream.max_batch_bytes",
							"Maximum total size of the records of one batch produce call.",
							NULL,
							&estream_max_batch_bytes,
							64 * 1024 * 1024, 1024, MaxAllocSize,
							PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("estream.default_max_message_bytes",
							"Maximum record size of topics that do not set max.message.bytes.",
							"The size counts the key, the value and the headers.",
							&estream_default_max_message_bytes,
							1024 * 1024, 64, MaxAllocSize,
							PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	estream_schema_init();
	estream_topic_cache_init();
	estream_cdc_plugin_init();
	estream_acl_init();

	/*
	 * Settings of the shared memory size exist only when preloaded:
	 * PGC_POSTMASTER variables cannot be defined after startup.
	 */
	if (!process_shared_preload_libraries_in_progress)
	{
		MarkGUCPrefixReserved("estream");
		return;
	}

	DefineCustomIntVariable("estream.max_partitions",
							"Number of shared slots for the state of topic partitions in use.",
							"A partition takes a slot while it is produced to; idle slots "
							"are given to other partitions when needed, and reading takes none. "
							"Only the partitions that open transactions produce to at once "
							"must fit.",
							&estream_max_partitions,
							4096, 16, INT_MAX / 2,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("estream.max_partitions_per_transaction",
							"Maximum number of partitions one transaction may produce to.",
							NULL,
							&estream_max_partitions_per_xact,
							256, 1, 65536,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);

	define_worker_gucs();

	MarkGUCPrefixReserved("estream");

	estream_worker_init();

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = estream_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = estream_shmem_startup;
}

/* the settings of the database workers (worker.c, cdc_apply.c) */
static void
define_worker_gucs(void)
{
	DefineCustomBoolVariable("estream.enable_worker",
							 "Runs the per-database maintenance workers.",
							 "When off, workers stay connected but idle: no retention, "
							 "compaction or persisted stable offsets.",
							 &estream_enable_worker,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("estream.worker_naptime",
							"Time between two maintenance runs of a database worker.",
							"It bounds how far persisted stable offsets (read on standbys) "
							"lag behind the primary.",
							&estream_worker_naptime,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("estream.capture_naptime",
							"Time between two capture steps of a database worker that has captures.",
							"It bounds the capture lag of an idle worker: a change is in its "
							"topic at most this long plus one step after it committed.",
							&estream_capture_naptime,
							100, 10, 60 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("estream.transaction_timeout",
							"Longest time a producing transaction may hold back a partition's stable offset.",
							"The worker terminates the session of a transaction that has had "
							"produced records in flight for longer.  0 disables the limit.",
							&estream_transaction_timeout,
							0, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("estream.maintenance_lock_timeout",
							"Longest wait of a maintenance step for a lock that readers hold.",
							"Retention, compaction and dropping emptied segments need exclusive "
							"locks; readers that come meanwhile wait behind.  0: take them only "
							"when free.",
							&estream_maintenance_lock_timeout,
							200, 0, 60000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("estream.capture_copy_timeout",
							"Longest time the initial copy of a captured table may take.",
							"The worker does nothing else meanwhile, maintenance included.  A copy "
							"that takes longer fails, and its capture stops until "
							"estream.resume_capture().  0 disables the limit.",
							&estream_capture_copy_timeout,
							10 * 60 * 1000, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("estream.capture_copy_lock_timeout",
							"Longest wait of the initial copy of a captured table for a lock.",
							"A copy that waits longer fails, and its capture stops until "
							"estream.resume_capture().  0 waits without limit.",
							&estream_capture_copy_lock_timeout,
							5000, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
}

/* the LWLocks of tranche "estream", one per subsystem with shared state */
#define ESTREAM_LOCK_PARTITIONS	0	/* EstreamShared (shmem.c) */
#define ESTREAM_LOCK_WORKERS	1	/* the workers' state (worker.c) */
#define ESTREAM_NLOCKS			2

static void
estream_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();

	RequestAddinShmemSpace(add_size(estream_partitions_shmem_size(),
									estream_worker_shmem_size()));
	RequestNamedLWLockTranche("estream", ESTREAM_NLOCKS);
}

static void
estream_shmem_startup(void)
{
	LWLockPadded *locks;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	locks = GetNamedLWLockTranche("estream");
	estream_partitions_shmem_startup(&locks[ESTREAM_LOCK_PARTITIONS].lock);
	estream_worker_shmem_startup(&locks[ESTREAM_LOCK_WORKERS].lock);
	LWLockRelease(AddinShmemInitLock);
}
