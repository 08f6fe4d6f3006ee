/*-------------------------------------------------------------------------
 *
 * cdc_envelope.h
 *		The events of change data capture: envelope, key, and values
 *		rendered without user code.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/cdc_envelope.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ESTREAM_CDC_ENVELOPE_H
#define ESTREAM_CDC_ENVELOPE_H

#include "access/htup.h"
#include "access/tupdesc.h"
#include "access/xlogdefs.h"
#include "nodes/bitmapset.h"
#include "utils/jsonb.h"
#include "utils/relcache.h"
#include "utils/timestamp.h"

/* renders values as to_jsonb() does, without user code (cdc_envelope.c) */
typedef struct EstreamRenderer EstreamRenderer;

extern EstreamRenderer *estream_renderer_create(MemoryContext cxt);
extern void estream_render_value(EstreamRenderer *vr, JsonbParseState **ps,
								 JsonbIteratorToken seq, Datum value, Oid typid);

/* a row of an event: which attributes of a tuple, in that order */
typedef struct EstreamCdcRow
{
	TupleDesc	desc;
	HeapTuple	tuple;
	const AttrNumber *atts;
	int			natts;
	bool		decoded;		/* from WAL: an on-disk TOASTed value is one
								 * that did not change, and is not there */
} EstreamCdcRow;

/* the "source" block of an event */
typedef struct EstreamCdcSource
{
	const char *dbname;
	const char *schema;
	const char *table;
	bool		snapshot;		/* of the initial copy: no transaction */
	TransactionId xid;			/* the source transaction, if not snapshot */
	XLogRecPtr	lsn;
	int64		ts_ms;
} EstreamCdcSource;

/* ts_ms of estream_cdc_envelope(): when the envelope is built */
#define ESTREAM_CDC_TS_NOW	(-1)

extern Jsonb *estream_cdc_envelope(EstreamRenderer *vr, const EstreamCdcRow *before,
								   const EstreamCdcRow *after, const char *op,
								   const EstreamCdcSource *source, int64 ts_ms);
extern Jsonb *estream_cdc_key(EstreamRenderer *vr, const EstreamCdcRow *key);
extern Bitmapset *estream_cdc_key_attnums(Relation rel);
extern bool estream_cdc_column_wanted(char **names, int nnames, const char *name);
extern int64 estream_cdc_unix_ms(TimestampTz ts);

#endif							/* ESTREAM_CDC_ENVELOPE_H */
