/*-------------------------------------------------------------------------
 *
 * worker.h
 *		The launcher and the database workers: registration, shared state,
 *		and the utility hook that stops a worker before DROP DATABASE.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/worker.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ESTREAM_WORKER_H
#define ESTREAM_WORKER_H

#include "storage/lwlock.h"

/* counters of a database worker, shown by estream.workers */
typedef enum EstreamWorkerCounter
{
	EWC_PERSISTED,				/* partition rows with a new stable offset */
	EWC_ROLLED,					/* segments started */
	EWC_DELETED,				/* segments emptied by retention */
	EWC_COMPACTED,				/* records removed by compaction */
	EWC_DROPPED,				/* empty segments dropped */
	EWC_REAPED,					/* markers of gone backends removed */
	EWC_TERMINATED,				/* sessions ended by transaction_timeout */
	EWC_CAPTURED,				/* change events written by capture */
	ESTREAM_WORKER_NCOUNTERS
} EstreamWorkerCounter;

extern void estream_worker_init(void);
extern Size estream_worker_shmem_size(void);
extern void estream_worker_shmem_startup(LWLock *lock);

#endif							/* ESTREAM_WORKER_H */
