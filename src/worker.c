/*-------------------------------------------------------------------------
 *
 * worker.c
 *		Background workers of estream: one launcher per cluster and one
 *		maintenance worker per database that has the extension.
 *
 * The launcher is a static background worker connected to no database.
 * Every second it lists the databases (pg_database) and makes sure each
 * one that allows connections and is not a template has a worker, unless
 * that database's worker found no extension there recently.  A backend
 * that creates the extension asks the launcher, when its transaction
 * commits, to look again at once.  The launcher is the only one that starts
 * database workers (they are registered with BGW_NEVER_RESTART), so it also
 * restarts a worker that exited with an error, after
 * ESTREAM_RESTART_DELAY_MS.
 *
 * A database worker runs the maintenance steps of the install script
 * (persist stable offsets, roll, seal, delete and drop segments, compact)
 * every estream.worker_naptime, each in its own transaction, an error in
 * one step being logged and remembered without stopping the others.  It
 * also reaps in-flight markers of backends that are gone and enforces
 * estream.transaction_timeout.  It exits (code 0) when the extension is no
 * longer there.  See docs/operations.md for the state diagram.
 *
 * DROP DATABASE, CREATE DATABASE ... TEMPLATE, ALTER DATABASE RENAME and
 * SET TABLESPACE refuse to run while another session is connected to the
 * database, so a utility hook stops the worker of that database first and
 * keeps the launcher from starting it again for ESTREAM_PAUSE_MS.
 *
 * Note about locking: EstreamWorkerShared->lock (the second LWLock of the
 * "estream" tranche) protects every field of the shared worker state.  The
 * launcher owns slot allocation; a database worker writes only its own
 * slot.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/genam.h"
#include "access/heapam.h"
#include "access/stratnum.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "commands/extension.h"
#include "commands/tablespace.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/origin.h"
#include "replication/slot.h"
#include "replication/logicallauncher.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "estream.h"
#include "acl.h"
#include "cdc_apply.h"
#include "schema.h"
#include "shmem.h"
#include "worker.h"

#define ESTREAM_RESTART_DELAY_MS	5000	/* before restarting a failed
											 * worker */
#define ESTREAM_NO_EXTENSION_MS		60000	/* before looking again at a
											 * database without estream */
#define ESTREAM_PAUSE_MS			10000	/* worker held off for DROP
											 * DATABASE */
#define ESTREAM_LAUNCHER_TICK_MS	1000

/* what a database worker is doing (shown by estream.workers) */
typedef enum EstreamWorkerState
{
	WS_FREE = 0,				/* slot unused */
	WS_STARTING,				/* registered, not yet connected */
	WS_RUNNING,					/* running its maintenance steps */
	WS_IDLE,					/* sleeping between runs */
	WS_DISABLED,				/* estream.enable_worker is off */
	WS_UPGRADE,					/* waiting for ALTER EXTENSION estream UPDATE */
	WS_NO_EXTENSION,			/* exited: no extension in the database */
	WS_FAILED,					/* exited with an error, restart pending */
	WS_PAUSED					/* stopped for DROP DATABASE and the like */
} EstreamWorkerState;

/* last_error of a worker that could not start: _worker_state() knows it */
#define NO_WORKER_SLOT_ERROR "could not start the worker: no free background worker slot"

static const char *const state_names[] = {
	"free", "starting", "running", "idle", "disabled",
	"waiting for ALTER EXTENSION estream UPDATE", "no extension",
	"failed", "paused"
};

typedef struct EstreamWorkerSlot
{
	Oid			dbid;
	EstreamWorkerState state;
	pid_t		pid;
	TimestampTz started_at;
	TimestampTz retry_at;		/* launcher: do not (re)start before */
	TimestampTz paused_until;	/* stopped for DROP DATABASE until then */
	bool		resumed;		/* the command it was stopped for failed:
								 * start it again at once */
	bool		had_extension;	/* stopped for DROP EXTENSION: the next worker
								 * says so when it finds none */
	volatile bool stop_requested;	/* exit cleanly between two steps */
	TimestampTz last_run_at;
	int64		last_run_us;
	int			naptime_ms;
	int64		runs;
	int64		counters[ESTREAM_WORKER_NCOUNTERS];
	int64		errors;
	TimestampTz last_error_at;
	char		last_error[256];
	TimestampTz cdc_last_commit;	/* source commit last captured */
	TimestampTz cdc_last_run;	/* end of the last capture step */
	TimestampTz cdc_caught_up;	/* start of the last capture step that
								 * captured everything committed before */
	char		cdc_error[256]; /* last error of the capture step */
	XLogRecPtr	cdc_position;	/* position of the streaming captures */

	/*
	 * Waking the capture step at commit (see capture_wake_callback()):
	 * whether the worker captures, its latch, and whether a wake-up is
	 * pending since its last capture step began.  Read and written without
	 * the lock, with barriers: a lost race costs a spurious wake-up or, at
	 * worst, waits until estream.capture_naptime.
	 */
	volatile bool cdc_capturing;
	Latch	   *volatile latch;
	volatile uint32 cdc_wake_pending;
} EstreamWorkerSlot;

typedef struct EstreamWorkerShared
{
	LWLock	   *lock;
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	bool		rescan;			/* launcher: look at every database now */
	int			nslots;
	EstreamWorkerSlot slots[FLEXIBLE_ARRAY_MEMBER];
} EstreamWorkerShared;

static EstreamWorkerShared *worker_shared = NULL;
static ProcessUtility_hook_type prev_process_utility = NULL;

/* database worker: its slot */
static int	my_slot = -1;

/* launcher: databases found without the extension, and when to look again */
typedef struct NoExtension
{
	Oid			dbid;
	TimestampTz retry_at;
} NoExtension;
static List *no_extension = NIL;

/* backend: wake the launcher when the current transaction commits */
static bool wake_launcher_at_commit = false;
static bool wake_callback_registered = false;

/* backend: the slot of this database's worker, as last found */
static int	capture_wake_slot = -1;

/* backend: the committing transaction has an xid (it wrote WAL) */
static bool capture_wake_wrote = false;

/*
 * backend: the database whose worker this transaction stopped for DROP or
 * ALTER EXTENSION estream, to start again when it ends; and whether it was
 * a drop
 */
static Oid	resume_at_end = InvalidOid;
static bool resume_after_drop = false;

/* backend: the transaction made or resumed a capture (_wake_capture()) */
static bool capture_wake_forced = false;

static void capture_wake_callback(XactEvent event, void *arg);

static void estream_process_utility(PlannedStmt *pstmt, const char *queryString,
									bool readOnlyTree, ProcessUtilityContext context,
									ParamListInfo params, QueryEnvironment *queryEnv,
									DestReceiver *dest, QueryCompletion *qc);

static char *option_string(List *options, const char *name);

PGDLLEXPORT void estream_launcher_main(Datum main_arg);
PGDLLEXPORT void estream_worker_main(Datum main_arg);

/*
 * The maintenance steps of a run, in order.  Each is one SQL call in its
 * own transaction, returning how much it did.
 */
static const struct
{
	const char *name;
	const char *sql;
	int			counter;
	int			since;			/* first extension version that has it */
}			maintenance_steps[] =

{
	{"persist stable offsets", "SELECT estream._persist_watermarks()", EWC_PERSISTED, ESTREAM_SCHEMA_1_2},
	{"roll segments", "SELECT estream._roll_segments()", EWC_ROLLED, ESTREAM_SCHEMA_1_2},
	{"seal segments", "SELECT estream._seal_segments()", -1, ESTREAM_SCHEMA_1_2},
	{"apply retention", "SELECT estream._apply_retention()", EWC_DELETED, ESTREAM_SCHEMA_1_2},
	{"compact", "SELECT estream._compact()", EWC_COMPACTED, ESTREAM_SCHEMA_1_2},
	{"drop empty segments", "SELECT estream._drop_empty_segments()", EWC_DROPPED, ESTREAM_SCHEMA_1_2},
	{"forget the rights of dropped roles", "SELECT estream._forget_dropped_roles()", -1, ESTREAM_SCHEMA_1_4},
};

Size
estream_worker_shmem_size(void)
{
	return add_size(offsetof(EstreamWorkerShared, slots),
					mul_size(max_worker_processes, sizeof(EstreamWorkerSlot)));
}

void
estream_worker_shmem_startup(LWLock *lock)
{
	bool		found;

	worker_shared = ShmemInitStruct("estream workers", estream_worker_shmem_size(),
									&found);
	if (!found)
	{
		memset(worker_shared, 0, estream_worker_shmem_size());
		worker_shared->lock = lock;
		worker_shared->nslots = max_worker_processes;
	}
}

/*
 * Register the launcher and the utility hook (called from _PG_init when
 * preloaded, after the GUCs are defined).
 */
void
estream_worker_init(void)
{
	BackgroundWorker worker;

	if (IsBinaryUpgrade)
		return;

	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = estream_process_utility;
	RegisterXactCallback(capture_wake_callback, NULL);

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "estream");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "estream_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "estream launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "estream launcher");
	RegisterBackgroundWorker(&worker);
}

/*
 * ----------
 * Launcher
 * ----------
 */

static int
find_slot(Oid dbid)
{
	for (int i = 0; i < worker_shared->nslots; i++)
	{
		if (worker_shared->slots[i].state != WS_FREE &&
			worker_shared->slots[i].dbid == dbid)
			return i;
	}
	return -1;
}

/* databases that may run a worker: connectable, not templates */
static List *
list_databases(void)
{
	List	   *result = NIL;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	MemoryContext outer = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void) GetTransactionSnapshot();

	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		MemoryContext old;

		if (!db->datallowconn || db->datistemplate || db->datconnlimit == -2)
			continue;
		old = MemoryContextSwitchTo(outer);
		result = lappend_oid(result, db->oid);
		MemoryContextSwitchTo(old);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);

	CommitTransactionCommand();
	return result;
}

static bool
start_worker(int slot, BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "estream");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "estream_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "estream worker for database %u",
			 worker_shared->slots[slot].dbid);
	snprintf(worker.bgw_type, BGW_MAXLEN, "estream worker");
	worker.bgw_main_arg = Int32GetDatum(slot);
	memcpy(worker.bgw_extra, &worker_shared->slots[slot].dbid, sizeof(Oid));
	worker.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

static void
launcher_exit(int code, Datum arg)
{
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	worker_shared->launcher_pid = 0;
	worker_shared->launcher_latch = NULL;
	LWLockRelease(worker_shared->lock);
}

static TimestampTz
no_extension_until(Oid dbid)
{
	ListCell   *lc;

	foreach(lc, no_extension)
	{
		NoExtension *ne = lfirst(lc);

		if (ne->dbid == dbid)
			return ne->retry_at;
	}
	return 0;
}

static void
set_no_extension(Oid dbid, TimestampTz retry_at)
{
	ListCell   *lc;
	NoExtension *ne;
	MemoryContext old;

	foreach(lc, no_extension)
	{
		ne = lfirst(lc);
		if (ne->dbid == dbid)
		{
			ne->retry_at = retry_at;
			return;
		}
	}
	old = MemoryContextSwitchTo(TopMemoryContext);
	ne = palloc(sizeof(NoExtension));
	ne->dbid = dbid;
	ne->retry_at = retry_at;
	no_extension = lappend(no_extension, ne);
	MemoryContextSwitchTo(old);
}

/*
 * Workers started by a previous launcher (that failed) have no handle
 * here: stop them, and start afresh.
 */
static void
launcher_takeover(void)
{
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	worker_shared->launcher_pid = MyProcPid;
	worker_shared->launcher_latch = MyLatch;
	before_shmem_exit(launcher_exit, (Datum) 0);
	for (int i = 0; i < worker_shared->nslots; i++)
	{
		if (worker_shared->slots[i].pid != 0)
			(void) kill(worker_shared->slots[i].pid, SIGTERM);
	}
	LWLockRelease(worker_shared->lock);
	for (int tries = 0; tries < 500; tries++)
	{
		bool		any = false;

		LWLockAcquire(worker_shared->lock, LW_SHARED);
		for (int i = 0; i < worker_shared->nslots; i++)
			any |= (worker_shared->slots[i].pid != 0);
		LWLockRelease(worker_shared->lock);
		if (!any)
			break;
		pg_usleep(10000L);
		CHECK_FOR_INTERRUPTS();
	}
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < worker_shared->nslots; i++)
		memset(&worker_shared->slots[i], 0, sizeof(EstreamWorkerSlot));
	LWLockRelease(worker_shared->lock);
}

/*
 * Notice the workers that exited: a paused one waits, one that found no
 * extension frees its slot, one that failed is started again later.  The
 * caller holds the workers' lock.
 */
static void
launcher_reap(BackgroundWorkerHandle **handles, TimestampTz now,
			  TimestampTz last_rescan)
{
	for (int i = 0; i < worker_shared->nslots; i++)
	{
		EstreamWorkerSlot *s = &worker_shared->slots[i];
		pid_t		pid;

		if (s->state == WS_FREE || handles[i] == NULL)
			continue;
		if (GetBackgroundWorkerPid(handles[i], &pid) != BGWH_STOPPED)
			continue;
		pfree(handles[i]);
		handles[i] = NULL;
		s->pid = 0;
		if (s->paused_until > now)
		{
			s->state = WS_PAUSED;
			s->retry_at = s->paused_until;
		}
		else if (s->resumed)
		{
			s->state = WS_PAUSED;
			s->retry_at = 0;
		}
		else if (s->state == WS_NO_EXTENSION)
		{
			/*
			 * Free the slot; remember not to look again too soon, unless an
			 * extension was created since this worker looked.
			 */
			set_no_extension(s->dbid,
							 s->started_at < last_rescan ? 0 :
							 TimestampTzPlusMilliseconds(now, ESTREAM_NO_EXTENSION_MS));
			memset(s, 0, sizeof(*s));
		}
		else
		{
			s->state = WS_FAILED;
			s->retry_at = TimestampTzPlusMilliseconds(now, ESTREAM_RESTART_DELAY_MS);
			s->errors++;
			s->last_error_at = now;
			snprintf(s->last_error, sizeof(s->last_error),
					 "the worker exited unexpectedly (see the server log); it is started again in %d ms",
					 ESTREAM_RESTART_DELAY_MS);
			ereport(LOG,
					(errmsg("estream worker for database %u exited unexpectedly, restarting it in %d ms",
							s->dbid, ESTREAM_RESTART_DELAY_MS)));
		}
	}
}

/*
 * Start a worker for every database in dbs that has none and is not held
 * off (retry_at; a database without the extension is looked at again only
 * after a while, or at once on rescan).  The caller holds the workers'
 * lock.
 */
static void
launcher_start_workers(BackgroundWorkerHandle **handles, List *dbs,
					   TimestampTz now, bool rescan, bool *warned_full)
{
	ListCell   *lc;

	foreach(lc, dbs)
	{
		Oid			dbid = lfirst_oid(lc);
		int			i = find_slot(dbid);
		EstreamWorkerSlot *s;

		if (i >= 0)
		{
			s = &worker_shared->slots[i];
			if (handles[i] != NULL || s->retry_at > now)
				continue;
		}
		else
		{
			/* a new extension somewhere is reason to look again */
			if (!rescan && no_extension_until(dbid) > now)
				continue;
			for (i = 0; i < worker_shared->nslots; i++)
				if (worker_shared->slots[i].state == WS_FREE)
					break;
			if (i >= worker_shared->nslots)
			{
				if (!*warned_full)
					ereport(WARNING,
							(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
							 errmsg("no free estream worker slot for database %u", dbid),
							 errdetail("estream tracks at most max_worker_processes (%d) database workers.",
									   worker_shared->nslots),
							 errhint("Increase max_worker_processes.")));
				*warned_full = true;
				break;			/* try again next tick */
			}
			s = &worker_shared->slots[i];
			memset(s, 0, sizeof(*s));
			s->dbid = dbid;
		}

		s->state = WS_STARTING;
		s->started_at = now;
		s->resumed = false;
		s->stop_requested = false;
		if (!start_worker(i, &handles[i]))
		{
			handles[i] = NULL;
			s->state = WS_FAILED;
			s->retry_at = TimestampTzPlusMilliseconds(now, ESTREAM_RESTART_DELAY_MS);
			s->errors++;
			s->last_error_at = now;
			snprintf(s->last_error, sizeof(s->last_error),
					 NO_WORKER_SLOT_ERROR " (max_worker_processes = %d)",
					 max_worker_processes);
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("could not start the estream worker for database %u", dbid),
					 errhint("Increase max_worker_processes.")));
		}
	}
}

void
estream_launcher_main(Datum main_arg)
{
	BackgroundWorkerHandle **handles;
	TimestampTz next_scan = 0;
	List	   *dbs = NIL;
	bool		warned_full = false;
	TimestampTz last_rescan = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("estream launcher");

	handles = MemoryContextAllocZero(TopMemoryContext,
									 sizeof(BackgroundWorkerHandle *) * worker_shared->nslots);

	launcher_takeover();

	ereport(LOG, (errmsg("estream launcher started")));

	for (;;)
	{
		TimestampTz now;
		bool		rescan;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		now = GetCurrentTimestamp();
		LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
		rescan = worker_shared->rescan;
		worker_shared->rescan = false;
		LWLockRelease(worker_shared->lock);
		if (rescan)
			last_rescan = now;

		if (now >= next_scan || rescan)
		{
			list_free(dbs);
			dbs = list_databases();
			next_scan = TimestampTzPlusMilliseconds(now, ESTREAM_LAUNCHER_TICK_MS);
		}

		LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);

		launcher_reap(handles, now, last_rescan);

		/* forget databases that are gone */
		for (int i = 0; i < worker_shared->nslots; i++)
		{
			EstreamWorkerSlot *s = &worker_shared->slots[i];

			if (s->state != WS_FREE && handles[i] == NULL &&
				!list_member_oid(dbs, s->dbid))
				memset(s, 0, sizeof(*s));
		}

		launcher_start_workers(handles, dbs, now, rescan, &warned_full);
		LWLockRelease(worker_shared->lock);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 ESTREAM_LAUNCHER_TICK_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

static void resume_worker(Oid dbid, bool dropped);

static void
wake_xact_callback(XactEvent event, void *arg)
{
	if (OidIsValid(resume_at_end) &&
		(event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT))
	{
		Oid			dbid = resume_at_end;

		resume_at_end = InvalidOid;
		resume_worker(dbid, resume_after_drop && event == XACT_EVENT_COMMIT);
	}
	if (!wake_launcher_at_commit)
		return;
	if (event == XACT_EVENT_COMMIT)
	{
		wake_launcher_at_commit = false;
		/* no LWLock at this point: a plain flag and the latch will do */
		if (worker_shared != NULL)
		{
			worker_shared->rescan = true;
			if (worker_shared->launcher_latch != NULL)
				SetLatch(worker_shared->launcher_latch);
		}
	}
	else if (event == XACT_EVENT_ABORT)
		wake_launcher_at_commit = false;
}

/*
 * In every backend of a preloaded estream: when a transaction that wrote
 * WAL commits in a database whose worker captures, set the worker's latch,
 * so that its capture step decodes the commit at once (as a walsender is
 * woken when WAL is flushed) instead of at the next
 * estream.capture_naptime.  At XACT_EVENT_COMMIT the commit record is
 * flushed (with synchronous_commit on; otherwise the WAL writer flushes it
 * and the naptime bounds the wait).  Wake-ups are batched: only the first
 * commit after the worker began a capture step sets the latch, the others
 * see the pending flag and pay a read and a barrier.
 */
static void
capture_wake_callback(XactEvent event, void *arg)
{
	EstreamWorkerSlot *slot;
	Latch	   *latch;
	int			i = capture_wake_slot;

	bool		forced = capture_wake_forced;

	if (event == XACT_EVENT_PRE_COMMIT)
	{
		capture_wake_wrote = TransactionIdIsValid(GetTopTransactionIdIfAny());
		return;
	}
	if (event != XACT_EVENT_COMMIT || !capture_wake_wrote)
	{
		capture_wake_wrote = false;
		capture_wake_forced = false;
		return;
	}
	capture_wake_wrote = false;
	capture_wake_forced = false;
	/* not preloaded, the launcher, or the worker itself */
	if (worker_shared == NULL || my_slot >= 0 || !OidIsValid(MyDatabaseId))
		return;
	if (i < 0 || i >= worker_shared->nslots ||
		worker_shared->slots[i].dbid != MyDatabaseId ||
		worker_shared->slots[i].state == WS_FREE)
	{
		i = find_slot(MyDatabaseId);
		capture_wake_slot = i;
		if (i < 0)
			return;
	}
	slot = &worker_shared->slots[i];
	if (!slot->cdc_capturing && !forced)
		return;
	/* our flushed commit, then the flag: pairs with run_capture() */
	pg_memory_barrier();
	if (slot->cdc_wake_pending)
		return;
	slot->cdc_wake_pending = 1;
	latch = slot->latch;
	if (latch != NULL)
		SetLatch(latch);
}

/*
 * estream._wake_capture() returns void
 *
 * Called by capture() and resume_capture(): when the transaction commits,
 * the worker's capture step runs at once, even if the worker captured
 * nothing before (see capture_wake_callback()).
 */
PG_FUNCTION_INFO_V1(estream_wake_capture);
Datum
estream_wake_capture(PG_FUNCTION_ARGS)
{
	capture_wake_forced = true;
	PG_RETURN_VOID();
}

/*
 * Background worker slots that database workers cannot have: estream's
 * launcher, and the logical replication launcher when there is one.
 * (Parallel queries and other extensions' workers take slots too, from
 * time to time.)
 */
static int
reserved_worker_slots(void)
{
	return 1 + (max_logical_replication_workers > 0 ? 1 : 0);
}

/*
 * estream._start_worker() returns void
 *
 * Called by the install script: once the transaction that created (or
 * updated) the extension commits, the launcher starts this database's
 * worker.  Does nothing when estream was not preloaded.
 */
PG_FUNCTION_INFO_V1(estream_start_worker);
Datum
estream_start_worker(PG_FUNCTION_ARGS)
{
	if (worker_shared == NULL)
		PG_RETURN_VOID();

	/* a database that will get no worker: say so now, not never */
	{
		bool		own = false;
		bool		own_unstarted = false;
		int			free_slots = 0;

		LWLockAcquire(worker_shared->lock, LW_SHARED);
		for (int i = 0; i < worker_shared->nslots; i++)
		{
			EstreamWorkerSlot *s = &worker_shared->slots[i];

			if (s->state == WS_FREE)
				free_slots++;
			else if (s->dbid == MyDatabaseId)
			{
				/*
				 * The launcher may have tried this database before the
				 * extension was created (it looks at every database) and
				 * found no background worker slot: that is no worker.
				 */
				if (s->state == WS_FAILED &&
					strncmp(s->last_error, NO_WORKER_SLOT_ERROR, strlen(NO_WORKER_SLOT_ERROR)) == 0)
					own_unstarted = true;
				else
					own = true;
			}
		}
		LWLockRelease(worker_shared->lock);
		if (own_unstarted ||
			(!own && worker_shared->nslots - free_slots + reserved_worker_slots() >= max_worker_processes))
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("estream has no free background worker slot for this database"),
					 errdetail("Retention, compaction, persisted offsets and captures of this database wait for a worker; the %d slots of max_worker_processes are in use.",
							   max_worker_processes),
					 errhint("Raise max_worker_processes (one slot per database with estream, one for the launcher, and those of parallel queries and replication) and restart the server.")));
	}
	if (!wake_callback_registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		wake_callback_registered = true;
	}
	wake_launcher_at_commit = true;
	PG_RETURN_VOID();
}

/*
 * Stop the worker of a database and keep it stopped for a while, so that
 * a command that needs the database to itself can run.  Returns whether
 * the database has a worker slot (then resume_worker() must follow).
 */
static bool
pause_worker(Oid dbid, bool gentle)
{
	pid_t		pid = 0;
	Latch	   *latch = NULL;
	TimestampTz deadline;
	bool		found = false;

	if (worker_shared == NULL || !OidIsValid(dbid))
		return false;

	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < worker_shared->nslots; i++)
	{
		EstreamWorkerSlot *s = &worker_shared->slots[i];

		if (s->state != WS_FREE && s->dbid == dbid)
		{
			s->paused_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														  ESTREAM_PAUSE_MS);
			if (s->retry_at < s->paused_until)
				s->retry_at = s->paused_until;
			pid = s->pid;
			latch = s->latch;
			if (gentle)
				s->stop_requested = true;
			found = true;
		}
	}
	LWLockRelease(worker_shared->lock);

	if (pid == 0)
		return found;

	/*
	 * Gently: the worker exits (with code 0) before its next step, and is
	 * woken if it sleeps; the command has taken none of its locks yet, so the
	 * step it is in ends.  Else, or if it is still there after 5 s: it is
	 * terminated.
	 */
	if (gentle && latch != NULL)
		SetLatch(latch);
	else
		(void) kill(pid, SIGTERM);

	/* wait (up to 5 s) for it to disconnect */
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 5000);
	for (;;)
	{
		bool		gone = true;

		LWLockAcquire(worker_shared->lock, LW_SHARED);
		for (int i = 0; i < worker_shared->nslots; i++)
		{
			if (worker_shared->slots[i].dbid == dbid &&
				worker_shared->slots[i].pid == pid)
				gone = false;
		}
		LWLockRelease(worker_shared->lock);
		if (gone)
			break;
		if (GetCurrentTimestamp() >= deadline)
		{
			if (gentle)
			{
				gentle = false;
				(void) kill(pid, SIGTERM);
				deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 5000);
				continue;
			}
			break;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	return found;
}

/*
 * The worker of a database that a command paused comes back at once: the
 * command failed.  (After a command that succeeded it stays paused for
 * ESTREAM_PAUSE_MS, so that commands in a row find the database free;
 * only the database's owner can run them.)  Only a database whose worker
 * was paused is looked at again: a rescan for nothing would make the
 * launcher look at every database without the extension at once.
 */
static void
resume_worker(Oid dbid, bool dropped)
{
	bool		found = false;

	if (worker_shared == NULL)
		return;
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < worker_shared->nslots; i++)
	{
		EstreamWorkerSlot *s = &worker_shared->slots[i];

		if (s->state != WS_FREE && s->dbid == dbid && s->paused_until != 0)
		{
			s->paused_until = 0;
			s->retry_at = 0;
			s->resumed = true;
			s->had_extension = dropped;
			s->stop_requested = false;
			found = true;
		}
	}
	if (found && worker_shared->launcher_latch != NULL)
		SetLatch(worker_shared->launcher_latch);
	LWLockRelease(worker_shared->lock);
}

/*
 * Would PostgreSQL's permission checks let the current user run this
 * command on database dbid?  The same checks as dbcommands.c makes:
 * CREATE DATABASE needs CREATEDB and, unless the template is marked as
 * one, ownership of it; DROP DATABASE ownership; RENAME ownership and
 * CREATEDB; SET TABLESPACE ownership and CREATE on the tablespace.
 */
static bool
may_run_database_command(Node *parsetree, Oid dbid)
{
	Oid			user = GetUserId();

	switch (nodeTag(parsetree))
	{
		case T_CreatedbStmt:
			{
				HeapTuple	tup;
				bool		istemplate;

				if (!have_createdb_privilege())
					return false;
				tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dbid));
				if (!HeapTupleIsValid(tup))
					return false;
				istemplate = ((Form_pg_database) GETSTRUCT(tup))->datistemplate;
				ReleaseSysCache(tup);
				return istemplate || pg_database_ownercheck(dbid, user);
			}
		case T_DropdbStmt:
			return pg_database_ownercheck(dbid, user);
		case T_RenameStmt:
			return pg_database_ownercheck(dbid, user) && have_createdb_privilege();
		case T_AlterDatabaseStmt:
			{
				char	   *tblspc = option_string(((AlterDatabaseStmt *) parsetree)->options,
												   "tablespace");
				Oid			tsoid = tblspc ? get_tablespace_oid(tblspc, true) : InvalidOid;

				return pg_database_ownercheck(dbid, user) && OidIsValid(tsoid) &&
					pg_tablespace_aclcheck(tsoid, user, ACL_CREATE) == ACLCHECK_OK;
			}
		default:
			return false;
	}
}

static char *
option_string(List *options, const char *name)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *def = lfirst_node(DefElem, lc);

		if (strcmp(def->defname, name) == 0 && def->arg != NULL)
			return defGetString(def);
	}
	return NULL;
}

/*
 * Whether the command drops or replaces estream in this database, by a role
 * that may (its owner, or the owner of its schema): long-polls holding
 * locks on estream's objects are then ended (see estream_begin_drain()).
 */
static bool
drops_or_updates_estream(Node *parsetree)
{
	Oid			extoid = get_extension_oid("estream", true);

	if (!OidIsValid(extoid))
		return false;
	if (IsA(parsetree, AlterExtensionStmt))
		return strcmp(((AlterExtensionStmt *) parsetree)->extname, "estream") == 0 &&
			pg_extension_ownercheck(extoid, GetUserId());
	if (IsA(parsetree, DropStmt))
	{
		DropStmt   *stmt = (DropStmt *) parsetree;
		ListCell   *lc;

		if (stmt->removeType != OBJECT_EXTENSION && stmt->removeType != OBJECT_SCHEMA)
			return false;
		foreach(lc, stmt->objects)
		{
			Node	   *obj = lfirst(lc);

			if (!IsA(obj, String) || strcmp(strVal(obj), "estream") != 0)
				continue;
			if (stmt->removeType == OBJECT_EXTENSION)
				return pg_extension_ownercheck(extoid, GetUserId());
			/* the extension's schema is estream (estream.control) */
			return OidIsValid(get_namespace_oid("estream", true)) &&
				pg_namespace_ownercheck(get_namespace_oid("estream", true), GetUserId());
		}
	}
	return false;
}

/*
 * Stop the worker of a database that the utility command needs alone; end
 * the long-polls that would hold up dropping or updating the extension.
 */
static void
estream_process_utility(PlannedStmt *pstmt, const char *queryString,
						bool readOnlyTree, ProcessUtilityContext context,
						ParamListInfo params, QueryEnvironment *queryEnv,
						DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	const char *dbname = NULL;
	volatile Oid paused = InvalidOid;

	volatile Oid paused_ext = InvalidOid;

	if (drops_or_updates_estream(parsetree))
	{
		estream_begin_drain(0);

		/*
		 * Stop this database's worker first, as for DROP DATABASE: its steps
		 * lock estream's tables in another order than the command, and would
		 * deadlock with it.  It starts again when the transaction ends
		 * (drops_or_updates_estream() checked ownership).
		 */
		if (pause_worker(MyDatabaseId, true))
			paused_ext = MyDatabaseId;
	}

	switch (nodeTag(parsetree))
	{
		case T_DropdbStmt:
			dbname = ((DropdbStmt *) parsetree)->dbname;
			break;
		case T_CreatedbStmt:
			dbname = option_string(((CreatedbStmt *) parsetree)->options, "template");
			if (dbname == NULL)
				dbname = "template1";
			break;
		case T_RenameStmt:
			if (((RenameStmt *) parsetree)->renameType == OBJECT_DATABASE)
				dbname = ((RenameStmt *) parsetree)->subname;
			break;
		case T_AlterDatabaseStmt:
			if (option_string(((AlterDatabaseStmt *) parsetree)->options, "tablespace") != NULL)
				dbname = ((AlterDatabaseStmt *) parsetree)->dbname;
			break;
		default:
			break;
	}

	/*
	 * Only when PostgreSQL's own permission checks of the command pass, or
	 * anyone could keep a database's worker stopped by failing to run it; and
	 * if the command fails all the same, the worker comes back at once.
	 */
	if (dbname != NULL)
	{
		Oid			dbid = get_database_oid(dbname, true);

		if (OidIsValid(dbid) && may_run_database_command(parsetree, dbid) &&
			pause_worker(dbid, false))
			paused = dbid;
	}

	{
		Oid			dropped = InvalidOid;

		if (IsA(parsetree, DropdbStmt))
			dropped = get_database_oid(((DropdbStmt *) parsetree)->dbname, true);

		PG_TRY();
		{
			if (prev_process_utility)
				prev_process_utility(pstmt, queryString, readOnlyTree, context,
									 params, queryEnv, dest, qc);
			else
				standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
										params, queryEnv, dest, qc);
		}
		PG_CATCH();
		{
			if (OidIsValid(paused))
				resume_worker(paused, false);
			if (OidIsValid(paused_ext))
				resume_worker(paused_ext, false);
			PG_RE_THROW();
		}
		PG_END_TRY();
		if (OidIsValid(paused_ext))
		{
			resume_at_end = paused_ext;
			resume_after_drop = !IsA(parsetree, AlterExtensionStmt);
			if (!wake_callback_registered)
			{
				RegisterXactCallback(wake_xact_callback, NULL);
				wake_callback_registered = true;
			}
		}

		/*
		 * The database's slot went with it, but replication origins belong to
		 * the cluster: drop the capture origin of the dropped database.
		 */
		if (OidIsValid(dropped) && !OidIsValid(get_database_oid(((DropdbStmt *) parsetree)->dbname, true)))
		{
			char		origin[NAMEDATALEN];

			snprintf(origin, sizeof(origin), "estream_%u", dropped);
			replorigin_drop_by_name(origin, true, false);
		}
	}
}

/*
 * ----------------
 * Database worker
 * ----------------
 */

static void
set_state(EstreamWorkerState state)
{
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	worker_shared->slots[my_slot].state = state;
	LWLockRelease(worker_shared->lock);
}

static void
worker_exit(int code, Datum arg)
{
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	if (worker_shared->slots[my_slot].pid == MyProcPid)
	{
		worker_shared->slots[my_slot].pid = 0;
		worker_shared->slots[my_slot].cdc_capturing = false;
		worker_shared->slots[my_slot].latch = NULL;
	}
	LWLockRelease(worker_shared->lock);
}

/*
 * In a PG_CATCH block: end the failed transaction, log the error and keep
 * it for estream.workers.  The run goes on with its next step.
 */
static void
step_failed(MemoryContext cxt, const char *step)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	AbortCurrentTransaction();
	ereport(LOG,
			(errmsg("estream worker could not %s: %s", step, edata->message),
			 errdetail_internal("SQLSTATE %s.", unpack_sql_state(edata->sqlerrcode))));

	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	worker_shared->slots[my_slot].errors++;
	worker_shared->slots[my_slot].last_error_at = GetCurrentTimestamp();
	snprintf(worker_shared->slots[my_slot].last_error,
			 sizeof(worker_shared->slots[my_slot].last_error),
			 "%s: %s", step, edata->message);
	LWLockRelease(worker_shared->lock);
	FreeErrorData(edata);
}

/*
 * Run one maintenance step in its own transaction.  An error is logged,
 * recorded in the slot and does not stop the run.
 */
static void
run_step(int i)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile int64 done = 0;

	PG_TRY();
	{
		int			rc;

		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, maintenance_steps[i].sql);

		/* the persisting step also writes the evicted slots' watermarks */
		estream_set_persisting(maintenance_steps[i].counter == EWC_PERSISTED);
		rc = SPI_execute(maintenance_steps[i].sql, false, 1);
		estream_set_persisting(false);
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "estream worker: \"%s\" failed", maintenance_steps[i].sql);
		else
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
										  1, &isnull);

			if (!isnull)
				done = DatumGetInt64(d);
		}

		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		done = 0;
		estream_set_persisting(false);
		step_failed(cxt, maintenance_steps[i].name);
	}
	PG_END_TRY();

	pgstat_report_activity(STATE_IDLE, NULL);
	if (done > 0 && maintenance_steps[i].counter >= 0)
	{
		LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
		worker_shared->slots[my_slot].counters[maintenance_steps[i].counter] += done;
		LWLockRelease(worker_shared->lock);
	}
}

/*
 * Between two steps, outside a transaction: exit cleanly if DROP or ALTER
 * EXTENSION asked (pause_worker()); the launcher starts the worker again
 * when that command's transaction ends.
 */
static void
worker_check_stop(void)
{
	if (worker_shared->slots[my_slot].stop_requested)
	{
		/* outside a transaction: no catalog lookup, the OID only */
		ereport(DEBUG1,
				(errmsg("estream worker for database %u is stopping for DROP or ALTER EXTENSION",
						MyDatabaseId)));
		proc_exit(0);
	}
}

/*
 * The capture step (1.3): decode the WAL written since the last step and
 * write captured changes.  *more: it stopped at its batch limit; *active:
 * there are captures (and the last step did not fail).
 */
static void
run_capture(bool *more, bool *active)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool failed = false;
	EstreamCdcResult result;
	TimestampTz start = GetCurrentTimestamp();

	memset(&result, 0, sizeof(result));

	/*
	 * Commits from now on wake the worker again: the flag, then the end of
	 * WAL the step reads (pairs with capture_wake_callback()).
	 */
	worker_shared->slots[my_slot].cdc_wake_pending = 0;
	pg_memory_barrier();
	PG_TRY();
	{
		pgstat_report_activity(STATE_RUNNING, "estream capture");
		estream_cdc_run(&result);
	}
	PG_CATCH();
	{
		failed = true;
		memset(&result, 0, sizeof(result));
		step_failed(cxt, "capture changes");

		/*
		 * A bgworker has no PostgresMain to release a slot after an error:
		 * the decoding context goes and the slot is released (an ephemeral
		 * one, left by a failed creation, is dropped).  A failing step is
		 * tried again at the pace of maintenance runs.
		 */
		estream_cdc_abort();
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	*more = result.more;
	*active = result.active;

	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	worker_shared->slots[my_slot].counters[EWC_CAPTURED] += result.written;
	worker_shared->slots[my_slot].cdc_last_run = GetCurrentTimestamp();
	if (result.caught_up)
		worker_shared->slots[my_slot].cdc_caught_up = start;
	if (failed)
		strlcpy(worker_shared->slots[my_slot].cdc_error,
				worker_shared->slots[my_slot].last_error,
				sizeof(worker_shared->slots[my_slot].cdc_error));
	else
		worker_shared->slots[my_slot].cdc_error[0] = '\0';
	/* the commit time of the last source transaction written, the position */
	if (result.progressed)
	{
		if (result.last_commit != 0)
			worker_shared->slots[my_slot].cdc_last_commit = result.last_commit;
		worker_shared->slots[my_slot].cdc_position = result.position;
	}
	LWLockRelease(worker_shared->lock);
}

/*
 * Reap markers of gone backends, enforce estream.transaction_timeout and
 * reclaim shared entries of dropped topics.
 */
static void
run_housekeeping(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	int			reaped = 0;
	int			terminated = 0;
	int			reclaimed = 0;

	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		estream_housekeep(estream_transaction_timeout, &reaped, &terminated,
						  &reclaimed);
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		step_failed(cxt, "do housekeeping");
	}
	PG_END_TRY();

	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	worker_shared->slots[my_slot].counters[EWC_REAPED] += reaped;
	worker_shared->slots[my_slot].counters[EWC_TERMINATED] += terminated;
	LWLockRelease(worker_shared->lock);
}

/*
 * After DROP EXTENSION: the captures are gone, so must be the slot (it
 * would keep WAL forever) and the origin.
 */
static void
drop_capture_slot(void)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		estream_cdc_drop();
	}
	PG_CATCH();
	{
		step_failed(cxt, "drop the capture slot");
		estream_cdc_abort();
	}
	PG_END_TRY();
}

/* settings of the server that the database's settings may not change */
static const char *const server_settings[] = {
	"DateStyle", "IntervalStyle", "TimeZone", "extra_float_digits", "bytea_output",
	"lc_monetary", "lc_numeric", "lc_time", "xmlbinary", "xmloption"
};
static char *server_values[lengthof(server_settings)];

/*
 * Take the worker's slot (main_arg), which must still be for its database:
 * a launcher that restarted meanwhile may have given it to another one.
 * Returns the database to connect to; exits if the slot is not ours.
 */
static Oid
worker_attach(Datum main_arg)
{
	Oid			dbid;

	my_slot = DatumGetInt32(main_arg);
	memcpy(&dbid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	if (worker_shared->slots[my_slot].dbid != dbid ||
		worker_shared->slots[my_slot].pid != 0)
	{
		LWLockRelease(worker_shared->lock);
		proc_exit(0);
	}
	worker_shared->slots[my_slot].pid = MyProcPid;
	worker_shared->slots[my_slot].started_at = GetCurrentTimestamp();
	worker_shared->slots[my_slot].latch = MyLatch;
	worker_shared->slots[my_slot].cdc_capturing = false;
	worker_shared->slots[my_slot].cdc_wake_pending = 0;
	LWLockRelease(worker_shared->lock);
	before_shmem_exit(worker_exit, (Datum) 0);
	/* started just before DROP or ALTER EXTENSION asked it to stay away */
	worker_check_stop();
	return dbid;
}

/*
 * Connect to the database with the settings the worker needs, whatever the
 * database's own settings say.
 */
static void
worker_connect(Oid dbid)
{
	/*
	 * The settings that shape how values are rendered as text and JSON (CDC
	 * events) are the server's: a database's own settings (ALTER DATABASE ...
	 * SET, chosen by its owner) must not change what the worker writes for
	 * tables of other roles.  Noted before connecting, which applies the
	 * database's settings, and put back after.
	 */
	for (int i = 0; i < (int) lengthof(server_settings); i++)
		server_values[i] = MemoryContextStrdup(TopMemoryContext,
											   GetConfigOption(server_settings[i], true, false) ?
											   GetConfigOption(server_settings[i], true, false) : "");

	BackgroundWorkerInitializeConnectionByOid(dbid, InvalidOid, 0);
	pgstat_report_appname("estream worker");
	for (int i = 0; i < (int) lengthof(server_settings); i++)
	{
		if (server_values[i][0] != '\0')
			SetConfigOption(server_settings[i], server_values[i], PGC_SUSET, PGC_S_OVERRIDE);
	}

	/*
	 * The persisted floor must survive a crash; never wait long for a lock;
	 * and whatever the database's defaults: the steps need READ COMMITTED,
	 * write, and may take a while.
	 */
	SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("lock_timeout", "2000", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_isolation", "read committed",
					PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("idle_in_transaction_session_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * The worker is a superuser, and the database's owner chooses the
	 * database's settings (ALTER DATABASE ... SET): no name the worker's SQL
	 * uses may resolve to an object that someone else created, so the search
	 * path is pinned, whatever they say (every name is qualified too);
	 * PL/pgSQL must not take a column for a variable; and new segments go to
	 * the database's default tablespace.
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("plpgsql.variable_conflict", "error", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_tablespace", "", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("temp_tablespaces", "", PGC_SUSET, PGC_S_OVERRIDE);
}

/*
 * The version of the extension in the worker's database; if it is not
 * installed (any more), the worker drops its capture slot and exits.
 */
static int
worker_schema_version(Oid dbid, bool ever_installed)
{
	int			version;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	version = estream_schema_version();
	if (version == ESTREAM_SCHEMA_NONE)
	{
		set_state(WS_NO_EXTENSION);
		/* quietly for a database that never had it: looked at each minute */
		ereport(ever_installed ? LOG : DEBUG1,
				(errmsg("estream worker for database \"%s\" is stopping: the extension is not installed",
						get_database_name(dbid))));
		CommitTransactionCommand();
		drop_capture_slot();
		proc_exit(0);
	}
	CommitTransactionCommand();
	return version;
}

/*
 * One turn of the worker's loop with the extension at version and the
 * worker enabled: the maintenance steps if they are due (*next_maintenance),
 * then the capture step while there are captures (*capturing), again at
 * once while it stops at its batch limit and maintenance is not due.
 * Returns whether it ran maintenance; *more: the capture has WAL left.
 */
static bool
worker_run(int version, MemoryContext run_cxt, TimestampTz now,
		   TimestampTz *next_maintenance, bool *capturing, bool *more)
{
	MemoryContext old;
	bool		maintained = false;

	old = MemoryContextSwitchTo(run_cxt);
	if (now >= *next_maintenance)
	{
		set_state(WS_RUNNING);
		for (int i = 0; i < (int) lengthof(maintenance_steps); i++)
		{
			CHECK_FOR_INTERRUPTS();
			worker_check_stop();
			if (version >= maintenance_steps[i].since)
				run_step(i);
		}
		run_housekeeping();
		maintained = true;
		*next_maintenance = TimestampTzPlusMilliseconds(now, estream_worker_naptime);
	}
	/* a capture made or resumed (_wake_capture()) starts at once */
	if (version >= ESTREAM_SCHEMA_1_3 &&
		(maintained || *capturing || worker_shared->slots[my_slot].cdc_wake_pending))
	{
		do
		{
			CHECK_FOR_INTERRUPTS();
			worker_check_stop();
			run_capture(more, capturing);
			MemoryContextReset(run_cxt);
		} while (*more && GetCurrentTimestamp() < *next_maintenance);
	}
	else
		*capturing = false;
	/* table statistics of the steps' writes, for autovacuum */
	pgstat_report_stat(false);
	MemoryContextSwitchTo(old);
	MemoryContextReset(run_cxt);
	return maintained;
}

void
estream_worker_main(Datum main_arg)
{
	Oid			dbid;
	MemoryContext run_cxt;
	bool		ever_installed = false;
	TimestampTz next_maintenance = 0;
	bool		capturing = false;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	dbid = worker_attach(main_arg);
	/* stopped for DROP EXTENSION: it had the extension */
	LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
	ever_installed = worker_shared->slots[my_slot].had_extension;
	worker_shared->slots[my_slot].had_extension = false;
	LWLockRelease(worker_shared->lock);
	worker_connect(dbid);

	run_cxt = AllocSetContextCreate(TopMemoryContext, "estream worker run",
									ALLOCSET_DEFAULT_SIZES);

	/*
	 * Maintenance runs every estream.worker_naptime; while the database has
	 * captures, the capture step runs every estream.capture_naptime, and at
	 * once again when it stopped at its batch limit.
	 */
	for (;;)
	{
		int			version;
		TimestampTz now;
		EstreamWorkerState state;
		bool		maintained = false;
		bool		more = false;	/* the capture has WAL left to read */
		long		wait_ms;

		CHECK_FOR_INTERRUPTS();
		worker_check_stop();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		version = worker_schema_version(dbid, ever_installed);
		ever_installed = true;

		now = GetCurrentTimestamp();
		if (!estream_enable_worker)
			state = WS_DISABLED;
		else if (version < ESTREAM_SCHEMA_1_2)
			state = WS_UPGRADE;
		else
		{
			maintained = worker_run(version, run_cxt, now, &next_maintenance,
									&capturing, &more);
			state = WS_IDLE;
		}
		if (state != WS_IDLE)
		{
			/* not capturing: the slot is not held meanwhile */
			estream_cdc_stop();
			capturing = false;
			next_maintenance = 0;
		}

		worker_shared->slots[my_slot].cdc_capturing = capturing;
		LWLockAcquire(worker_shared->lock, LW_EXCLUSIVE);
		if (state != WS_IDLE || maintained)
		{
			worker_shared->slots[my_slot].state = state;
			worker_shared->slots[my_slot].naptime_ms = estream_worker_naptime;
		}
		if (maintained)
		{
			worker_shared->slots[my_slot].runs++;
			worker_shared->slots[my_slot].last_run_at = now;
			worker_shared->slots[my_slot].last_run_us =
				GetCurrentTimestamp() - now;
		}
		LWLockRelease(worker_shared->lock);

		if (state != WS_IDLE)
			wait_ms = estream_worker_naptime;
		else
		{
			wait_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), next_maintenance);
			if (capturing && wait_ms > estream_capture_naptime)
				wait_ms = estream_capture_naptime;
			if (more)
				wait_ms = 0;	/* maintenance came first; go on */
		}
		/* a lock wait in a step may have consumed pause_worker()'s latch */
		worker_check_stop();
		if (wait_ms > 0)
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 wait_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* the row of a database worker's slot in estream._worker_status() */
static void
worker_status_row(EstreamWorkerSlot *s, Datum *values, bool *nulls)
{
	int			c = 0;

	values[c] = ObjectIdGetDatum(s->dbid);
	nulls[c++] = false;
	values[c] = CStringGetTextDatum("database");
	nulls[c++] = false;
	if (s->pid != 0)
	{
		values[c] = Int32GetDatum(s->pid);
		nulls[c] = false;
	}
	c++;
	values[c] = CStringGetTextDatum(state_names[s->state]);
	nulls[c++] = false;
	if (s->started_at != 0)
	{
		values[c] = TimestampTzGetDatum(s->started_at);
		nulls[c] = false;
	}
	c++;
	if (s->last_run_at != 0)
	{
		values[c] = TimestampTzGetDatum(s->last_run_at);
		nulls[c] = false;
		values[c + 1] = Float8GetDatum(s->last_run_us / 1000.0);
		nulls[c + 1] = false;
	}
	c += 2;
	values[c] = Int32GetDatum(s->naptime_ms);
	nulls[c++] = false;
	values[c] = Int64GetDatum(s->runs);
	nulls[c++] = false;
	/* the columns of 1.2; estream._capture_status() shows the others */
	for (int k = 0; k <= EWC_TERMINATED; k++)
	{
		values[c] = Int64GetDatum(s->counters[k]);
		nulls[c++] = false;
	}
	values[c] = Int64GetDatum(s->errors);
	nulls[c++] = false;
	if (s->last_error_at != 0)
	{
		values[c] = CStringGetTextDatum(s->last_error);
		nulls[c] = false;
		values[c + 1] = TimestampTzGetDatum(s->last_error_at);
		nulls[c + 1] = false;
	}
	c += 2;
	Assert(c == 19);
}

/*
 * estream._worker_status() returns one row per worker (and one for the
 * launcher): the source of the estream.workers view.
 */
PG_FUNCTION_INFO_V1(estream_worker_status);
Datum
estream_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	EstreamWorkerSlot *copy;
	int			n;
	pid_t		launcher_pid;
	bool		see_own;
	bool		see_all;

	InitMaterializedSRF(fcinfo, 0);
	if (worker_shared == NULL)
		return (Datum) 0;

	/*
	 * This database's worker to those who may describe its cluster resource;
	 * every database's, and the launcher, only to those who may see every
	 * session's activity in pg_stat_activity.
	 */
	see_own = estream_allowed(estream_caller(), ESTREAM_OP_DESCRIBE, ESTREAM_CLUSTER, NULL,
							  InvalidOid);
	see_all = has_privs_of_role(estream_caller(), ROLE_PG_READ_ALL_STATS);

	n = worker_shared->nslots;
	copy = palloc(sizeof(EstreamWorkerSlot) * n);
	LWLockAcquire(worker_shared->lock, LW_SHARED);
	memcpy(copy, worker_shared->slots, sizeof(EstreamWorkerSlot) * n);
	launcher_pid = worker_shared->launcher_pid;
	LWLockRelease(worker_shared->lock);

	for (int i = -1; i < n; i++)
	{
		Datum		values[19];
		bool		nulls[19];
		EstreamWorkerSlot *s = (i >= 0) ? &copy[i] : NULL;

		memset(nulls, true, sizeof(nulls));
		if (s == NULL ? !see_all : !(see_all || (see_own && s->dbid == MyDatabaseId)))
			continue;
		if (s == NULL)
		{
			/* the launcher */
			values[1] = CStringGetTextDatum("launcher");
			nulls[1] = false;
			if (launcher_pid != 0)
			{
				values[2] = Int32GetDatum(launcher_pid);
				nulls[2] = false;
			}
			values[3] = CStringGetTextDatum(launcher_pid != 0 ? "running" : "stopped");
			nulls[3] = false;
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
			continue;
		}
		/* slots of databases without the extension are not interesting */
		if (s->state == WS_FREE || s->state == WS_NO_EXTENSION)
			continue;

		worker_status_row(s, values, nulls);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}

	/*
	 * This database has the extension (the function runs in it) but no
	 * worker: say so, and why, rather than showing nothing.  (On a standby no
	 * worker runs, by design: the primary's does the work.)
	 */
	if ((see_own || see_all) && !RecoveryInProgress())
	{
		bool		own = false;
		int			free_slots = 0;

		for (int i = 0; i < n; i++)
		{
			if (copy[i].state == WS_FREE)
				free_slots++;
			else if (copy[i].dbid == MyDatabaseId && copy[i].state != WS_NO_EXTENSION)
				own = true;
		}
		if (!own)
		{
			Datum		values[19];
			bool		nulls[19];

			memset(nulls, true, sizeof(nulls));
			values[0] = ObjectIdGetDatum(MyDatabaseId);
			nulls[0] = false;
			values[1] = CStringGetTextDatum("database");
			nulls[1] = false;
			values[3] = CStringGetTextDatum("not started");
			nulls[3] = false;
			values[17] = CStringGetTextDatum(n - free_slots + reserved_worker_slots() >= max_worker_processes ?
											 psprintf("no free background worker slot: the %d of max_worker_processes are all in use (raise it; see docs/operations.md)",
													  max_worker_processes) :
											 launcher_pid == 0 ?
											 "the estream launcher is not running (see the server log)" :
											 "the launcher starts it within a second");
			nulls[17] = false;
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	return (Datum) 0;
}

/*
 * estream._worker_state() returns text
 *
 * The state of this database's worker ("idle", "running", "disabled",
 * "failed", ...), "not started" when it has none yet, "no free worker
 * slot" when it cannot get one, "not preloaded": for the status of what
 * depends on it (captures, maintenance).  Tells only whether maintenance
 * runs.
 */
PG_FUNCTION_INFO_V1(estream_worker_state);
Datum
estream_worker_state(PG_FUNCTION_ARGS)
{
	const char *state = NULL;
	int			used = 0;

	if (worker_shared == NULL)
		PG_RETURN_TEXT_P(cstring_to_text("not preloaded"));
	LWLockAcquire(worker_shared->lock, LW_SHARED);
	for (int i = 0; i < worker_shared->nslots; i++)
	{
		EstreamWorkerSlot *s = &worker_shared->slots[i];

		if (s->state != WS_FREE)
			used++;
		if (s->state != WS_FREE && s->state != WS_NO_EXTENSION && s->dbid == MyDatabaseId)
			state = s->state == WS_FAILED &&
				strncmp(s->last_error, NO_WORKER_SLOT_ERROR, strlen(NO_WORKER_SLOT_ERROR)) == 0 ?
				"no free worker slot" : state_names[s->state];
	}
	LWLockRelease(worker_shared->lock);
	/* none yet: about to start, or never (every background worker in use) */
	if (state == NULL)
		state = used + reserved_worker_slots() >= max_worker_processes ?
			"no free worker slot" : "not started";
	PG_RETURN_TEXT_P(cstring_to_text(state));
}

/*
 * estream._capture_status() returns (events, last_commit, last_run,
 * last_error) of this database's capture step, from its worker.
 */
PG_FUNCTION_INFO_V1(estream_capture_status);
Datum
estream_capture_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	if (worker_shared == NULL ||
		!estream_allowed(estream_caller(), ESTREAM_OP_DESCRIBE, ESTREAM_CLUSTER, NULL,
						 InvalidOid))
		return (Datum) 0;

	LWLockAcquire(worker_shared->lock, LW_SHARED);
	for (int i = 0; i < worker_shared->nslots; i++)
	{
		EstreamWorkerSlot *s = &worker_shared->slots[i];
		Datum		values[5];
		bool		nulls[5] = {false, true, true, true, true};

		if (s->state == WS_FREE || s->dbid != MyDatabaseId)
			continue;
		values[0] = Int64GetDatum(s->counters[EWC_CAPTURED]);
		if (s->cdc_last_commit != 0)
		{
			values[1] = TimestampTzGetDatum(s->cdc_last_commit);
			nulls[1] = false;
		}
		if (s->cdc_last_run != 0)
		{
			values[2] = TimestampTzGetDatum(s->cdc_last_run);
			nulls[2] = false;
		}
		if (s->cdc_error[0] != '\0')
		{
			values[3] = CStringGetTextDatum(s->cdc_error);
			nulls[3] = false;
		}
		if (s->cdc_caught_up != 0)
		{
			values[4] = TimestampTzGetDatum(s->cdc_caught_up);
			nulls[4] = false;
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		break;
	}
	LWLockRelease(worker_shared->lock);
	return (Datum) 0;
}

/*
 * estream._capture_position() returns pg_lsn
 *
 * The position of this database's streaming captures (every source
 * transaction that ended before it is in their topics), as its worker last
 * wrote it; null before the worker's first capture step.  Captures with a
 * position of their own (stopped, or resumed and catching up) have it in
 * estream.capture.progress_lsn.  A WAL position, like those of
 * pg_replication_slots: for every role.
 */
PG_FUNCTION_INFO_V1(estream_capture_position);
Datum
estream_capture_position(PG_FUNCTION_ARGS)
{
	XLogRecPtr	lsn = InvalidXLogRecPtr;

	if (worker_shared == NULL)
		PG_RETURN_NULL();
	LWLockAcquire(worker_shared->lock, LW_SHARED);
	for (int i = 0; i < worker_shared->nslots; i++)
	{
		EstreamWorkerSlot *s = &worker_shared->slots[i];

		if (s->state != WS_FREE && s->dbid == MyDatabaseId)
		{
			lsn = s->cdc_position;
			break;
		}
	}
	LWLockRelease(worker_shared->lock);
	if (lsn == InvalidXLogRecPtr)
		PG_RETURN_NULL();
	PG_RETURN_LSN(lsn);
}

/*
 * estream._capture_origin_lsn() returns pg_lsn
 *
 * The progress of this database's capture origin (the source position of
 * the last change written into a topic), for estream.captures: only to
 * roles that may describe the cluster (PostgreSQL shows origins to
 * superusers only).
 */
PG_FUNCTION_INFO_V1(estream_capture_origin_lsn);
Datum
estream_capture_origin_lsn(PG_FUNCTION_ARGS)
{
	char		name[NAMEDATALEN];
	RepOriginId id;
	XLogRecPtr	lsn;

	if (!estream_allowed(estream_caller(), ESTREAM_OP_DESCRIBE, ESTREAM_CLUSTER, NULL,
						 InvalidOid))
		PG_RETURN_NULL();
	snprintf(name, sizeof(name), "estream_%u", MyDatabaseId);
	id = replorigin_by_name(name, true);
	if (id == InvalidRepOriginId)
		PG_RETURN_NULL();
	lsn = replorigin_get_progress(id, false);
	if (lsn == InvalidXLogRecPtr)
		PG_RETURN_NULL();
	PG_RETURN_LSN(lsn);
}
