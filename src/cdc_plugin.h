/*-------------------------------------------------------------------------
 *
 * cdc_plugin.h
 *		The logical decoding output plugin "estream", and what it hands the
 *		worker's capture step when the worker decodes in process.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/cdc_plugin.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ESTREAM_CDC_PLUGIN_H
#define ESTREAM_CDC_PLUGIN_H

#include "access/xlogdefs.h"
#include "replication/reorderbuffer.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

/*
 * The pieces of the line being written, for the worker's writer callback,
 * which stores them as they are: the topic, the key (or none) and the value
 * (the envelope) of an event; a change that could not be rendered (the
 * error instead of the event); or the end of a transaction.
 */
typedef enum EstreamCdcPieceKind
{
	PIECE_EVENT,
	PIECE_FAILURE,
	PIECE_COMMIT
} EstreamCdcPieceKind;

typedef struct EstreamCdcPieces
{
	EstreamCdcPieceKind kind;
	Oid			relid;			/* captured table */
	TimestampTz created_at;		/* which capture of the table */
	const char *topic;
	Jsonb	   *key;			/* NULL: none */
	Jsonb	   *value;
	TimestampTz commit_time;
	TransactionId xid;			/* the source transaction */
	XLogRecPtr	final_lsn;		/* its commit record */
	XLogRecPtr	end_lsn;		/* the end of its commit record */
	const char *error;			/* PIECE_FAILURE: the error's message */
	int			sqlerrcode;		/* and SQLSTATE */
} EstreamCdcPieces;

/* what the worker's writer wants done with a change (admit callback) */
typedef enum EstreamCdcVerdict
{
	ESTREAM_CDC_RENDER,			/* render it */
	ESTREAM_CDC_SKIP,			/* do not render it */
	ESTREAM_CDC_FAILED			/* hand over its failure, not rendered */
} EstreamCdcVerdict;

/*
 * The worker's writer, when the worker decodes in process (cdc_apply.c):
 * the decoding context's output_writer_private, registered with
 * estream_cdc_plugin_set_writer().  The plugin asks admit() before it
 * renders a change of capture (relid, created_at), made by transaction
 * capture_xmin, at lsn in txn; ESTREAM_CDC_FAILED sets *error and
 * *sqlerrcode.  While it renders a change, the plugin notes it in
 * rendering, so that the worker knows which change a failed decoding was
 * at.  Any other reader (pg_logical_slot_get_changes(), a walsender) gets
 * a line of text instead.
 */
typedef struct EstreamCdcWriter EstreamCdcWriter;

struct EstreamCdcWriter
{
	EstreamCdcVerdict (*admit) (EstreamCdcWriter *writer, ReorderBufferTXN *txn,
								Oid relid, TimestampTz created_at,
								TransactionId capture_xmin, XLogRecPtr lsn,
								const char **error, int *sqlerrcode);
	EstreamCdcPieces pieces;	/* of the line being written */
	struct
	{
		bool		active;		/* the plugin renders this change now */
		Oid			relid;
		TimestampTz created_at;
		XLogRecPtr	lsn;
	}			rendering;
};

extern void estream_cdc_plugin_init(void);
extern void estream_cdc_plugin_set_writer(EstreamCdcWriter *writer);

#endif							/* ESTREAM_CDC_PLUGIN_H */
