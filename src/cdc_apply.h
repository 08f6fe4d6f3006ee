/*-------------------------------------------------------------------------
 *
 * cdc_apply.h
 *		The database worker's capture step: what worker.c calls.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/cdc_apply.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ESTREAM_CDC_APPLY_H
#define ESTREAM_CDC_APPLY_H

#include "access/xlogdefs.h"
#include "utils/timestamp.h"

/* what one capture step did, for the worker's state (estream.workers) */
typedef struct EstreamCdcResult
{
	int64		written;		/* change events written */
	bool		more;			/* stopped at its batch limit, WAL left */
	bool		active;			/* there are captures */
	bool		caught_up;		/* everything committed before the step
								 * started is captured */
	bool		progressed;		/* decoded and committed: the two below are
								 * set */
	TimestampTz last_commit;	/* source commit last written, 0: none */
	XLogRecPtr	position;		/* position of the streaming captures */
} EstreamCdcResult;

extern void estream_cdc_run(EstreamCdcResult *result);
extern void estream_cdc_abort(void);
extern void estream_cdc_stop(void);
extern void estream_cdc_drop(void);

#endif							/* ESTREAM_CDC_APPLY_H */
