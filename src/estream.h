/*-------------------------------------------------------------------------
 *
 * estream.h
 *		Declarations common to every module of estream: the GUC variables,
 *		which estream.c (the hub) defines in _PG_init.  Each subsystem has a
 *		header of its own; see docs/architecture.md, "Source layout", for
 *		which module may call which.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/estream.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ESTREAM_H
#define ESTREAM_H

/* estream's own SQLSTATEs (class QE) */
#include "errcodes.h"

/* GUC variables (estream.c) */
extern int	estream_max_partitions;
extern int	estream_max_partitions_per_xact;
extern int	estream_max_batch_records;
extern int	estream_max_batch_bytes;
extern int	estream_default_max_message_bytes;
extern bool estream_enable_worker;
extern int	estream_worker_naptime;
extern int	estream_capture_naptime;
extern int	estream_transaction_timeout;
extern int	estream_maintenance_lock_timeout;
extern int	estream_capture_copy_timeout;
extern int	estream_capture_copy_lock_timeout;

#endif							/* ESTREAM_H */
