/*-------------------------------------------------------------------------
 *
 * cdc.h
 *		Change data capture: the output plugin's registration and the
 *		database worker's capture step, what estream.c and worker.c call.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/cdc.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ESTREAM_CDC_H
#define ESTREAM_CDC_H

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
	bool		progressed;		/* decoded and committed: the two below
								 * are set */
	TimestampTz last_commit;	/* source commit last written, 0: none */
	XLogRecPtr	position;		/* position of the streaming captures */
} EstreamCdcResult;

extern void estream_cdc_init(void);
extern void estream_cdc_run(EstreamCdcResult *result);
extern void estream_cdc_abort(void);
extern void estream_cdc_stop(void);
extern void estream_cdc_drop(void);

#endif							/* ESTREAM_CDC_H */
