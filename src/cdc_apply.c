/*-------------------------------------------------------------------------
 *
 * cdc_apply.c
 *		Change data capture: the database worker's capture step, which
 *		decodes in process, makes the initial copies and writes events
 *		into topics.
 *
 * The worker decodes in process from one slot per database (estream_<oid>)
 * with the output plugin of cdc_plugin.c, and writes into topics.  Every
 * capture has a position: every source transaction whose commit record
 * ends at or before it is written for that capture, none after it.  The captures that stream share one position, the
 * progress of the replication origin estream_<oid>, which the transaction
 * that writes their records advances (xact.c RecordTransactionCommit()); a
 * capture that is stopped, or resumed and catching up, has a position of
 * its own (estream.capture.progress_lsn), which the same transaction
 * updates.  So each capture is exactly-once on its own: after a crash,
 * decoding starts from the slot's restart point and each capture takes
 * only the transactions after its position.  The slot is confirmed, after
 * the write commits, up to the lowest position: a stopped capture keeps
 * the WAL it will need when resumed.  The worker's session uses the
 * origin, so the plugin drops the worker's own writes.
 *
 * The plugin hands the worker the pieces of each event through the
 * worker's writer (EstreamCdcWriter, the Collector below); events of the
 * stream and of the initial copy are built alike (cdc_envelope.c).
 *
 * A capture's failure stays its own.  The plugin renders only what the
 * worker wants (collector_admit()); the worker writes each topic's events
 * of a run in a subtransaction, and if that fails, a source transaction at
 * a time and then an event at a time, to find the change: a capture with
 * on_error "stop" stops before that change's transaction (its position),
 * with "skip" the change goes to estream.capture_dead_letter.  A change
 * whose rendering fails (which aborts the whole decoding) is recognised
 * when its step fails twice on it, and is then handed over without being
 * rendered (PoisonedChange).  A failed initial copy stops its capture.
 * Errors of the moment (locks, memory, cancels) still fail the whole step,
 * which is retried.
 *
 * A table captured while the slot already runs needs a cut between its
 * initial copy and the stream.  The worker takes a snapshot S after every
 * transaction that committed before the capture became visible has ended,
 * copies the rows S sees (op "r"), and from then on writes a decoded change
 * only if its transaction is not visible in S.  Every committed change is
 * thus either in the copy or in the stream, never both.  A change of a
 * capture whose copy has not been made yet stops the batch before its
 * transaction; the next run makes the copy and decodes it again.  The copy
 * (capture_activate()) reads the table through a cursor as the table's
 * owner, in a security-restricted operation, renders the rows as decoding
 * does, and writes them as the worker, within a lock timeout and a time
 * limit of its own (estream.capture_copy_lock_timeout, _timeout).
 *
 * The worker runs as a superuser, in a session whose search_path the
 * database's owner can set: every SQL name and operator here is qualified
 * (pg_catalog.count(*), OPERATOR(pg_catalog.=)), and no user-defined
 * function runs with the worker's rights.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/cdc_apply.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/sysattr.h"
#include "access/table.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogutils.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "replication/decode.h"
#include "replication/logical.h"
#include "replication/origin.h"
#include "replication/output_plugin.h"
#include "replication/slot.h"
#include "storage/lmgr.h"
#include "storage/procarray.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timeout.h"
#include "utils/tuplestore.h"
#include "utils/typcache.h"
#include "utils/xid8.h"

#include "estream.h"
#include "cdc_apply.h"
#include "cdc_envelope.h"
#include "cdc_plugin.h"
#include "schema.h"

/*
 * Changes that cannot be rendered.  An error while the plugin renders a
 * change of a capture aborts the whole decoding run (the reorder buffer
 * does not survive it), so the worker remembers the change (the writer's
 * rendering)
 * when its step fails.  A change whose rendering fails twice in a row,
 * with an error that is not of a transient kind, is "poisoned": from then
 * on the plugin does not render it but hands the worker the error instead
 * (PIECE_FAILURE), which the capture's policy deals with as with a change
 * that could not be written.  Worker only; in TopMemoryContext.
 */
typedef struct PoisonedChange
{
	Oid			relid;
	TimestampTz created_at;
	XLogRecPtr	lsn;			/* of the change */
	int			failures;		/* steps that failed rendering it */
	char	   *message;
	int			sqlerrcode;
} PoisonedChange;

static List *poisoned = NIL;

static PoisonedChange *
find_poisoned(Oid relid, TimestampTz created_at, XLogRecPtr lsn)
{
	ListCell   *lc;

	foreach(lc, poisoned)
	{
		PoisonedChange *pc = lfirst(lc);

		if (pc->relid == relid && pc->created_at == created_at && pc->lsn == lsn)
			return pc;
	}
	return NULL;
}

/* a capture as the apply side sees it */
typedef struct CaptureState
{
	Oid			relid;
	bool		active;			/* its copy is made: snapshot known */
	bool		copy;			/* with an initial copy */
	bool		pending;		/* the worker has not started it yet */
	bool		stopped;		/* stopped by an error: nothing is written */
	bool		stopped_now;	/* stopped by this run */
	bool		skip;			/* on_error "skip": failed changes are dead
								 * letters */
	XLogRecPtr	progress;		/* its own position, or invalid: the
								 * database's (cdc_common) */
	TimestampTz created_at;		/* which capture of the table */
	char	   *topic;
	FullTransactionId xmin;
	FullTransactionId xmax;
	int			nxip;
	FullTransactionId *xip;
} CaptureState;

/*
 * The decoded lines of one run, filtered before they are rendered (see
 * collector_admit()): changes of tables uncaptured since, of stopped
 * captures, that a capture's position or copy has already, are dropped; a
 * change of a capture whose copy is not made yet ends the collection
 * before its transaction.  Lines of one source transaction come together.
 */
typedef struct Collector
{
	EstreamCdcWriter writer;	/* first: the plugin's view of it */
	Tuplestorestate *lines;		/* columns LINE_* */
	TupleDesc	desc;
	List	   *caps;			/* CaptureState of this run */
	int64		nlines;			/* lines stored */
	TransactionId cur_xid;		/* transaction whose lines come now */
	int64		txn_first;		/* index of its first stored line */
	bool		stopped;		/* met a capture without its copy */
	int64		stop_at;		/* lines from this index on are not written */
	XLogRecPtr	stop_lsn;		/* commit record of the transaction there */
	Oid			unknown_relid;	/* stopped at a capture not in caps */
	TransactionId unknown_xmin; /* the transaction that made it */
	TimestampTz unknown_created_at;
} Collector;

/* the columns of a collected line */
#define LINE_LSN		1		/* the change's */
#define LINE_KIND		2		/* EstreamCdcPieceKind */
#define LINE_RELID		3
#define LINE_TOPIC		4
#define LINE_KEY		5		/* text, or null */
#define LINE_VALUE		6		/* jsonb; null for PIECE_FAILURE */
#define LINE_COMMIT_TS	7
#define LINE_XID		8
#define LINE_FINAL_LSN	9
#define LINE_END_LSN	10
#define LINE_ERROR		11		/* PIECE_FAILURE: message */
#define LINE_SQLSTATE	12
#define LINE_NATTS		12

/*
 * Captures (relid, created_at) not in the captures a run loaded, that
 * stopped that run (see collector_admits()): when a later run does not
 * find them either, they were uncaptured.
 */
typedef struct MissingCapture
{
	Oid			relid;
	TimestampTz created_at;
} MissingCapture;

static List *missing_checked = NIL;

static bool
missing_was_checked(Oid relid, TimestampTz created_at)
{
	ListCell   *lc;

	foreach(lc, missing_checked)
	{
		MissingCapture *mc = lfirst(lc);

		if (mc->relid == relid && mc->created_at == created_at)
			return true;
	}
	return false;
}

static char slot_name[NAMEDATALEN];
static bool origin_set_up = false;
static RepOriginId cdc_origin = InvalidRepOriginId; /* when origin_set_up */

/*
 * Positions in the source WAL.  A capture's position says that every source
 * transaction whose commit record ends at or before it has been written
 * into its topic (or had nothing for it); none after it has.  Captures
 * that stream share one position, cdc_common, durable as the progress of
 * the replication origin, which the transaction that writes their records
 * advances.  A capture with a position of its own (estream.capture's
 * progress_lsn: stopped, or resumed and not caught up yet) has it advanced
 * in the same transaction, by an UPDATE.  cdc_decoded_to is where the
 * decoding context has read to: a capture resumed behind it makes the
 * worker decode again from the slot's restart point.
 */
static XLogRecPtr cdc_common = InvalidXLogRecPtr;
static XLogRecPtr cdc_decoded_to = InvalidXLogRecPtr;

/* estream.capture has the columns of 1.4's failure policies */
static bool cdc_isolation = false;

/*
 * The decoding context lives from run to run, holding the slot, so that a
 * run reads only the WAL written since the last one.  It is rebuilt (from
 * the slot's restart point, skipping what the positions say is done)
 * after an error, after a run stopped at a capture without copy, and when
 * a capture resumes behind it.
 */
static LogicalDecodingContext *cdc_ctx = NULL;
static Collector coll;

static bool decoded_once = false;
static char saved_log_min_messages[32];

#define CDC_BATCH_LINES 100000
#define CDC_APPLY_CHUNK 1000
#define CDC_APPLY_BYTES (8 * 1024 * 1024)

/*
 * Bytes of events per produce_batch() call: at most 8 MB, and never above
 * estream.max_batch_bytes (which produce_batch() enforces).  A batch that
 * would pass it is written before the event that would; a single event
 * larger than it fails as any produce would.
 */
static Size
apply_bytes(void)
{
	return Min((Size) CDC_APPLY_BYTES, (Size) estream_max_batch_bytes);
}

static CaptureState *find_capture(List *caps, Oid relid);
static bool visible_in_copy(CaptureState *cs, TransactionId xid);

/* where a capture stands: its own position, or the database's */
static XLogRecPtr
capture_position(CaptureState *cs)
{
	return XLogRecPtrIsInvalid(cs->progress) ? cdc_common : cs->progress;
}

static void
stop_collection(Collector *c, ReorderBufferTXN *txn)
{
	c->stopped = true;
	c->stop_at = c->txn_first;
	c->stop_lsn = txn->final_lsn;
}

/*
 * Does the worker want a change of capture (relid, created_at) in txn (a transaction being
 * replayed: its commit is decoded)?  Called before the change is rendered,
 * so that nothing is rendered for nothing (a stopped capture, a change
 * written already, one in the copy).
 */
static bool
collector_admits(Collector *c, ReorderBufferTXN *txn, Oid relid,
				 TimestampTz created_at, TransactionId capture_xmin)
{
	CaptureState *cs;

	if (c->stopped)
		return false;
	if (txn->xid != c->cur_xid)
	{
		c->cur_xid = txn->xid;
		c->txn_first = c->nlines;
	}
	cs = find_capture(c->caps, relid);

	/*
	 * A change decoded under an earlier capture of the table (dropped with
	 * its topic, say, and captured again since): that capture is over, and
	 * the current one starts after it.
	 */
	if (cs != NULL && cs->created_at != created_at)
		return false;
	if (cs == NULL)
	{
		/*
		 * Uncaptured since, or captured by a transaction that committed (the
		 * plugin saw it) but was not visible yet when this run loaded the
		 * captures.  Stop here; the next run loads them again once that
		 * transaction is visible, and drops the changes if the capture is not
		 * there.
		 */
		if (missing_was_checked(relid, created_at))
			return false;
		stop_collection(c, txn);
		c->unknown_relid = relid;
		c->unknown_xmin = capture_xmin;
		c->unknown_created_at = created_at;
		return false;
	}
	/* stopped: resume_capture() makes the worker decode it again */
	if (cs->stopped)
		return false;
	if (!cs->active)
	{
		/* its copy first, at the next run */
		stop_collection(c, txn);
		return false;
	}
	/* written already (decoded again for a capture behind) */
	if (txn->end_lsn <= capture_position(cs))
		return false;
	/* in the copy already */
	if (visible_in_copy(cs, txn->xid))
		return false;
	return true;
}

/*
 * The writer's admit callback (see EstreamCdcWriter): collector_admits(),
 * and a change that failed to render twice (see PoisonedChange) is handed
 * over with its error instead of being rendered again.
 */
static EstreamCdcVerdict
collector_admit(EstreamCdcWriter *writer, ReorderBufferTXN *txn, Oid relid,
				TimestampTz created_at, TransactionId capture_xmin, XLogRecPtr lsn,
				const char **error, int *sqlerrcode)
{
	PoisonedChange *pc;

	if (!collector_admits((Collector *) writer, txn, relid, created_at, capture_xmin))
		return ESTREAM_CDC_SKIP;
	pc = find_poisoned(relid, created_at, lsn);
	if (pc != NULL && pc->failures >= 2)
	{
		*error = pc->message;
		*sqlerrcode = pc->sqlerrcode;
		return ESTREAM_CDC_FAILED;
	}
	return ESTREAM_CDC_RENDER;
}

static void
cdc_prepare_write(LogicalDecodingContext *ctx, XLogRecPtr lsn, TransactionId xid,
				  bool last_write)
{
	resetStringInfo(ctx->out);
}

static void
cdc_write(LogicalDecodingContext *ctx, XLogRecPtr lsn, TransactionId xid,
		  bool last_write)
{
	Collector  *c = ctx->output_writer_private;
	EstreamCdcPieces *pieces = &c->writer.pieces;
	Datum		values[LINE_NATTS];
	bool		nulls[LINE_NATTS];

	if (pieces->kind == PIECE_COMMIT)
	{
		c->cur_xid = InvalidTransactionId;
		return;
	}
	if (c->stopped)
		return;
	memset(nulls, false, sizeof(nulls));
	values[LINE_LSN - 1] = LSNGetDatum(lsn);
	values[LINE_KIND - 1] = Int32GetDatum((int32) pieces->kind);
	values[LINE_RELID - 1] = ObjectIdGetDatum(pieces->relid);
	values[LINE_TOPIC - 1] = CStringGetTextDatum(pieces->topic);
	nulls[LINE_KEY - 1] = true;
	if (pieces->key != NULL)
	{
		StringInfoData buf;

		initStringInfo(&buf);
		(void) JsonbToCString(&buf, &pieces->key->root, VARSIZE(pieces->key));
		values[LINE_KEY - 1] = PointerGetDatum(cstring_to_text_with_len(buf.data, buf.len));
		nulls[LINE_KEY - 1] = false;
	}
	if (pieces->kind == PIECE_EVENT)
		values[LINE_VALUE - 1] = JsonbPGetDatum(pieces->value);
	else
		nulls[LINE_VALUE - 1] = true;
	values[LINE_COMMIT_TS - 1] = TimestampTzGetDatum(pieces->commit_time);
	values[LINE_XID - 1] = Int64GetDatum((int64) pieces->xid);
	values[LINE_FINAL_LSN - 1] = LSNGetDatum(pieces->final_lsn);
	values[LINE_END_LSN - 1] = LSNGetDatum(pieces->end_lsn);
	if (pieces->kind == PIECE_FAILURE)
	{
		values[LINE_ERROR - 1] = CStringGetTextDatum(pieces->error);
		values[LINE_SQLSTATE - 1] = Int32GetDatum(pieces->sqlerrcode);
	}
	else
	{
		nulls[LINE_ERROR - 1] = true;
		nulls[LINE_SQLSTATE - 1] = true;
	}
	tuplestore_putvalues(c->lines, c->desc, values, nulls);
	c->nlines++;
}

static int64
spi_int8(const char *sql)
{
	bool		isnull;
	Datum		d;

	if (SPI_execute(sql, false, 1) < 0 || SPI_processed != 1)
		elog(ERROR, "estream: \"%s\" failed", sql);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? -1 : DatumGetInt64(d);
}

static void
begin_xact(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
}

static void
end_xact(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/*
 * The transactions a capture's copy waits for: those running when the
 * worker first saw the capture (they could have committed before it became
 * visible, with their commit records before it in WAL).  Kept from step to
 * step, so that newer transactions do not hold the copy back.
 */
typedef struct CopyWait
{
	Oid			relid;
	int			nxids;
	TransactionId xids[FLEXIBLE_ARRAY_MEMBER];
} CopyWait;

static List *copy_waits = NIL;

/* in a transaction: may the copy of relid start? */
static bool
copy_may_start(Oid relid)
{
	ListCell   *lc;
	CopyWait   *cw = NULL;
	MemoryContext old;

	foreach(lc, copy_waits)
	{
		if (((CopyWait *) lfirst(lc))->relid == relid)
		{
			cw = lfirst(lc);
			break;
		}
	}
	if (cw == NULL)
	{
		Snapshot	snap = GetLatestSnapshot();

		cw = MemoryContextAlloc(TopMemoryContext,
								offsetof(CopyWait, xids) + sizeof(TransactionId) * Max(snap->xcnt, 1));
		cw->relid = relid;
		cw->nxids = snap->xcnt;
		memcpy(cw->xids, snap->xip, sizeof(TransactionId) * snap->xcnt);
		old = MemoryContextSwitchTo(TopMemoryContext);
		copy_waits = lappend(copy_waits, cw);
		MemoryContextSwitchTo(old);
	}
	for (int i = 0; i < cw->nxids; i++)
		if (TransactionIdIsInProgress(cw->xids[i]))
			return false;
	copy_waits = list_delete_ptr(copy_waits, cw);
	pfree(cw);
	return true;
}

/*
 * Write n events (jsonb values, text keys or nulls) into a topic through
 * estream.produce_batch(), the normal produce path.  Returns how many it
 * wrote.
 */
static int64
produce_events(const char *topic, int n, Datum *values, Datum *keys, bool *key_nulls)
{
	Oid			argtypes[3] = {TEXTOID, JSONBARRAYOID, TEXTARRAYOID};
	Datum		args[3];
	int			dims[1];
	int			lbs[1] = {1};
	bool		isnull;
	int64		written;

	dims[0] = n;
	args[0] = CStringGetTextDatum(topic);
	args[1] = PointerGetDatum(construct_array(values, n, JSONBOID, -1, false,
											  TYPALIGN_INT));
	args[2] = PointerGetDatum(construct_md_array(keys, key_nulls, 1, dims, lbs,
												 TEXTOID, -1, false, TYPALIGN_INT));
	if (SPI_execute_with_args("SELECT pg_catalog.count(*) FROM estream.produce_batch($1, $2, $3)",
							  3, argtypes, args, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not write captured changes into topic \"%s\"", topic);
	written = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
										  1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	pfree(DatumGetPointer(args[0]));
	pfree(DatumGetPointer(args[1]));
	pfree(DatumGetPointer(args[2]));
	return written;
}

/*
 * The names of the key columns of the copy's events: those of the stream's
 * (estream_cdc_key_attnums()), in attnum order.  The caller holds a lock
 * on the table.
 */
static List *
copy_key_columns(Oid relid)
{
	Relation	rel = relation_open(relid, NoLock);
	Bitmapset  *attnums = estream_cdc_key_attnums(rel);
	TupleDesc	desc = RelationGetDescr(rel);
	List	   *names = NIL;
	int			x = -1;

	while ((x = bms_next_member(attnums, x)) >= 0)
	{
		AttrNumber	attnum = x + FirstLowInvalidHeapAttributeNumber;

		if (attnum > 0)
			names = lappend(names, pstrdup(NameStr(TupleDescAttr(desc, attnum - 1)->attname)));
	}
	relation_close(rel, NoLock);
	return names;
}

/* what the events of one copy share */
typedef struct CopyEvents
{
	EstreamRenderer *renderer;
	TupleDesc	desc;			/* of the rows read */
	AttrNumber *after_atts;		/* the columns in "after" */
	int			nafter;
	bool		after_null;		/* "columns" names none of the columns */
	AttrNumber *keyatts;		/* the key columns */
	int			nkeys;			/* 0: no key */
	EstreamCdcSource source;	/* as recorded by capture(), "snapshot" */
} CopyEvents;

/*
 * The event of one row: {"before": null, "after": row, "op": "r", "source":
 * {...}, "ts_ms": ...}, as estream._capture_activate() built it with
 * jsonb_build_object().
 */
static Jsonb *
copy_event(CopyEvents *ce, HeapTuple tuple)
{
	EstreamCdcRow after;

	after.desc = ce->desc;
	after.tuple = tuple;
	after.atts = ce->after_atts;
	after.natts = ce->nafter;
	after.decoded = false;
	/* jsonb_object_agg() of no column was null */
	return estream_cdc_envelope(ce->renderer, NULL, ce->after_null ? NULL : &after,
								"r", &ce->source, ce->source.ts_ms);
}

/* the key of one row's event: the text of {key columns}, or NULL */
static text *
copy_key(CopyEvents *ce, HeapTuple tuple)
{
	EstreamCdcRow key;
	Jsonb	   *jb;
	StringInfoData buf;

	if (ce->nkeys == 0)
		return NULL;
	key.desc = ce->desc;
	key.tuple = tuple;
	key.atts = ce->keyatts;
	key.natts = ce->nkeys;
	key.decoded = false;
	jb = estream_cdc_key(ce->renderer, &key);
	initStringInfo(&buf);
	(void) JsonbToCString(&buf, &jb->root, VARSIZE(jb));
	return cstring_to_text_with_len(buf.data, buf.len);
}

/*
 * The identity under which the copy reads a table: its owner's, in a
 * security-restricted operation, with GUC changes undone afterwards, as
 * REFRESH MATERIALIZED VIEW and VACUUM do (and compact.c).  Reading a table
 * can run its owner's code (row-level security policies under FORCE ROW
 * LEVEL SECURITY, a table that became a view); with the worker's rights it
 * would run as a superuser.
 */
typedef struct SavedIdentity
{
	Oid			userid;
	int			sec_context;
	int			nestlevel;
} SavedIdentity;

static void
become_owner(SavedIdentity *saved, Oid owner)
{
	GetUserIdAndSecContext(&saved->userid, &saved->sec_context);
	SetUserIdAndSecContext(owner, saved->sec_context | SECURITY_RESTRICTED_OPERATION);
	saved->nestlevel = NewGUCNestLevel();
}

static void
become_worker(SavedIdentity *saved)
{
	AtEOXact_GUC(false, saved->nestlevel);
	SetUserIdAndSecContext(saved->userid, saved->sec_context);
}

#define CDC_COPY_BATCH 1000		/* rows per produce_batch() of a copy, in
								 * slices of CDC_APPLY_BYTES */

/*
 * Copy the rows of a captured table that the transaction's snapshot sees
 * into its topic, as "r" events in the table's scan order, in batches of
 * CDC_COPY_BATCH.  The rows are read through a cursor opened and fetched
 * as the table's owner (see SavedIdentity) and rendered without user code
 * (see cdc_envelope.c); the worker then writes each batch as itself.  The
 * caller holds the capture row's lock.  Returns the number of events
 * written, or -1 if the table is gone.
 */
static int64
copy_table(Oid relid, const char *topic, char **columns, int ncolumns,
		   const char *schema, const char *table)
{
	HeapTuple	tup;
	Form_pg_class relform;
	Oid			owner;
	char	   *sql;
	List	   *keycols;
	CopyEvents	ce;
	MemoryContext copy_cxt;
	MemoryContext batch_cxt;
	Portal		portal = NULL;
	Datum		values[CDC_COPY_BATCH];
	Datum		keys[CDC_COPY_BATCH];
	bool		key_nulls[CDC_COPY_BATCH];
	int64		rows = 0;
	TimestampTz now;

	/*
	 * Locked, the table keeps its owner and name until the end of the
	 * transaction.  Dropped since the transaction's snapshot was taken, it is
	 * gone as much as if it had been dropped before.
	 */
	LockRelationOid(relid, AccessShareLock);
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		return -1;
	relform = (Form_pg_class) GETSTRUCT(tup);
	owner = relform->relowner;
	sql = psprintf("SELECT * FROM %s",
				   quote_qualified_identifier(get_namespace_name(relform->relnamespace),
											  NameStr(relform->relname)));
	ReleaseSysCache(tup);
	/* keyed as the stream keys them */
	keycols = copy_key_columns(relid);

	copy_cxt = AllocSetContextCreate(CurrentMemoryContext, "estream initial copy",
									 ALLOCSET_DEFAULT_SIZES);
	batch_cxt = AllocSetContextCreate(copy_cxt, "estream initial copy batch",
									  ALLOCSET_DEFAULT_SIZES);
	memset(&ce, 0, sizeof(ce));
	ce.renderer = estream_renderer_create(copy_cxt);
	ce.source.dbname = get_database_name(MyDatabaseId);
	ce.source.schema = schema;
	ce.source.table = table;
	ce.source.snapshot = true;

	/*
	 * One ts_ms for the whole copy, rounded to the millisecond as
	 * (extract(epoch FROM clock_timestamp()) * 1000)::bigint did, and the WAL
	 * position of pg_current_wal_lsn() before anything is written.
	 */
	now = GetCurrentTimestamp();
	ce.source.ts_ms = (now + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY + 500) / 1000;
	ce.source.lsn = GetXLogWriteRecPtr();

	for (;;)
	{
		SavedIdentity saved;
		uint64		n;
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		become_owner(&saved, owner);
		if (portal == NULL)
		{
			portal = SPI_cursor_open_with_args(NULL, sql, 0, NULL, NULL, NULL, false, 0);
			if (portal == NULL)
				elog(ERROR, "could not open a cursor on relation %u", relid);
		}
		SPI_cursor_fetch(portal, true, CDC_COPY_BATCH);
		n = SPI_processed;
		if (n > 0 && ce.desc == NULL)
		{
			ListCell   *lc;

			/* the columns of the rows: which go in "after", which in the key */
			old = MemoryContextSwitchTo(copy_cxt);
			ce.desc = CreateTupleDescCopy(SPI_tuptable->tupdesc);
			ce.after_atts = palloc(sizeof(AttrNumber) * Max(ce.desc->natts, 1));
			for (int i = 0; i < ce.desc->natts; i++)
			{
				Form_pg_attribute att = TupleDescAttr(ce.desc, i);

				if (!att->attisdropped &&
					estream_cdc_column_wanted(columns, ncolumns, NameStr(att->attname)))
					ce.after_atts[ce.nafter++] = att->attnum;
			}
			ce.after_null = ncolumns > 0 && ce.nafter == 0;
			ce.keyatts = palloc(sizeof(AttrNumber) * Max(list_length(keycols), 1));
			foreach(lc, keycols)
			{
				int			att = SPI_fnumber(ce.desc, lfirst(lc));

				if (att <= 0)
					elog(ERROR, "column \"%s\" of relation %u not found",
						 (char *) lfirst(lc), relid);
				ce.keyatts[ce.nkeys++] = att;
			}
			MemoryContextSwitchTo(old);
		}
		old = MemoryContextSwitchTo(batch_cxt);
		for (uint64 i = 0; i < n; i++)
		{
			text	   *key = copy_key(&ce, SPI_tuptable->vals[i]);

			values[i] = JsonbPGetDatum(copy_event(&ce, SPI_tuptable->vals[i]));
			keys[i] = PointerGetDatum(key);
			key_nulls[i] = key == NULL;
		}
		MemoryContextSwitchTo(old);
		SPI_freetuptable(SPI_tuptable);
		if (n == 0)
			SPI_cursor_close(portal);
		become_worker(&saved);

		if (n == 0)
			break;
		/* in slices below estream.max_batch_bytes (see apply_bytes()) */
		for (uint64 first = 0; first < n;)
		{
			uint64		last = first;
			Size		bytes = 0;

			while (last < n)
			{
				Size		size = VARSIZE_ANY(DatumGetPointer(values[last]));

				if (!key_nulls[last])
					size += VARSIZE_ANY(DatumGetPointer(keys[last]));
				if (last > first && bytes + size > apply_bytes())
					break;
				bytes += size;
				last++;
			}
			rows += produce_events(topic, (int) (last - first), values + first, keys + first,
								   key_nulls + first);
			first = last;
		}
		MemoryContextReset(batch_cxt);
	}
	MemoryContextDelete(copy_cxt);
	return rows;
}

/*
 * Record the snapshot that separates a capture's copy from its stream and
 * make the copy, as estream._capture_activate() (estream--1.2--1.3.sql,
 * no longer called) did, in the REPEATABLE READ transaction of the caller,
 * connected to SPI: lock the capture row; if its copy is made already, do
 * nothing; if the table is gone, end the capture; else copy what the
 * transaction's snapshot sees (with the "snapshot" option) and record the
 * snapshot.  Every name and operator is qualified: the worker is a
 * superuser, and the database's search_path is not its to trust.
 */
static void
capture_activate(Oid relid)
{
	Oid			argtypes[2] = {OIDOID, INT8OID};
	Datum		args[2];
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	char	   *topic;
	char	   *schema;
	char	   *table;
	char	  **columns = NULL;
	int			ncolumns = 0;
	bool		initial_snapshot;
	bool		exists;
	Datum		d;
	int64		rows = 0;

	args[0] = ObjectIdGetDatum(relid);
	if (SPI_execute_with_args("SELECT cp.topic, cp.columns, cp.source_schema, cp.source_table,"
							  " cp.initial_snapshot, cp.snapshot IS NOT NULL"
							  " FROM estream.capture cp WHERE cp.relid OPERATOR(pg_catalog.=) $1"
							  " FOR UPDATE",
							  1, argtypes, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the capture of relation %u", relid);
	if (SPI_processed == 0)
		return;
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	if (DatumGetBool(SPI_getbinval(row, desc, 6, &isnull)))
		return;					/* made already */
	topic = SPI_getvalue(row, desc, 1);
	schema = SPI_getvalue(row, desc, 3);
	table = SPI_getvalue(row, desc, 4);
	initial_snapshot = DatumGetBool(SPI_getbinval(row, desc, 5, &isnull));
	d = SPI_getbinval(row, desc, 2, &isnull);
	if (!isnull)
	{
		Datum	   *elems;
		bool	   *nulls;

		deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false,
						  TYPALIGN_INT, &elems, &nulls, &ncolumns);
		columns = palloc(sizeof(char *) * Max(ncolumns, 1));
		for (int i = 0; i < ncolumns; i++)
			columns[i] = TextDatumGetCString(elems[i]);
	}

	/* the table was dropped before its copy: the capture ends */
	if (SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_class cl WHERE cl.oid OPERATOR(pg_catalog.=) $1",
							  1, argtypes, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up relation %u", relid);
	exists = SPI_processed == 1;
	if (exists && initial_snapshot)
		rows = copy_table(relid, topic, columns, ncolumns, schema, table);
	if (!exists || rows < 0)
	{
		if (SPI_execute_with_args("DELETE FROM estream.capture cp WHERE cp.relid OPERATOR(pg_catalog.=) $1",
								  1, argtypes, args, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not end the capture of relation %u", relid);
		return;
	}

	args[1] = Int64GetDatum(rows);
	if (SPI_execute_with_args("UPDATE estream.capture cp SET snapshot = pg_catalog.pg_current_snapshot(),"
							  " snapshot_rows = $2, activated_at = pg_catalog.clock_timestamp()"
							  " WHERE cp.relid OPERATOR(pg_catalog.=) $1",
							  2, argtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not record the snapshot of the capture of relation %u", relid);
}

/*
 * The limits of an initial copy: it runs in the worker, which meanwhile
 * does nothing else (maintenance included), and reads the table as its
 * owner, whose code (row security policies) may wait or sleep.  The copy
 * waits for a lock at most estream.capture_copy_lock_timeout, and takes at
 * most estream.capture_copy_timeout in all: then it fails with the error
 * of lock_timeout or statement_timeout.  The worker's lock_timeout is set
 * with PGC_S_OVERRIDE, which the owner's code cannot change (nor a SET in
 * its functions); the statement timeout is a timer.
 */
static char *copy_saved_lock_timeout = NULL;

static void
copy_limits_begin(void)
{
	char		value[32];

	copy_saved_lock_timeout = MemoryContextStrdup(TopMemoryContext,
												  GetConfigOption("lock_timeout", false, false));
	snprintf(value, sizeof(value), "%d", estream_capture_copy_lock_timeout);
	SetConfigOption("lock_timeout", value, PGC_SUSET, PGC_S_OVERRIDE);
	if (estream_capture_copy_timeout > 0)
		enable_timeout_after(STATEMENT_TIMEOUT, estream_capture_copy_timeout);
}

/* after the copy, or after its error (the transaction aborted) */
static void
copy_limits_end(void)
{
	disable_timeout(STATEMENT_TIMEOUT, true);
	/* a timeout that came after the copy's last check: not for what follows */
	if (get_timeout_indicator(STATEMENT_TIMEOUT, true))
		QueryCancelPending = false;
	if (copy_saved_lock_timeout != NULL)
	{
		SetConfigOption("lock_timeout", copy_saved_lock_timeout, PGC_SUSET, PGC_S_OVERRIDE);
		pfree(copy_saved_lock_timeout);
		copy_saved_lock_timeout = NULL;
	}
}

/*
 * Make the copy of a capture that has none yet, once every transaction
 * that could have committed before the capture became visible has ended
 * (else it is tried again at the next step, and the capture waits): take
 * snapshot S in a REPEATABLE READ transaction, copy what S sees, record S.
 * A capture without copy is only marked as started: every change the slot
 * decodes from now on (all those committed after capture() unless the slot
 * was made since) goes to its topic.  Returns whether it was done.
 */
static bool
activate_capture(Oid relid, bool copy)
{
	if (copy)
	{
		bool		ready;

		begin_xact();
		ready = copy_may_start(relid);
		end_xact();
		if (!ready)
			return false;
	}

	/*
	 * Not under the worker's origin: code of the table's owner that runs
	 * during the copy (a row security policy) may write to captured tables,
	 * and those changes must be decoded like anyone's.  The caller sets the
	 * origin again after an error.
	 */
	replorigin_session_origin = InvalidRepOriginId;
	copy_limits_begin();
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	XactIsoLevel = XACT_REPEATABLE_READ;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	capture_activate(relid);
	end_xact();
	copy_limits_end();
	if (origin_set_up)
		replorigin_session_origin = cdc_origin;
	return true;
}

/*
 * Is an error one of the moment (a lock, a serialization failure, memory,
 * disk, a cancel or shutdown, an I/O error), which the worker retries with
 * its whole step, rather than one of the change (too large a record, a
 * value that cannot be rendered), which the capture's policy deals with?
 */
static bool
error_is_transient(int sqlerrcode)
{
	switch (ERRCODE_TO_CATEGORY(sqlerrcode))
	{
		case ERRCODE_TO_CATEGORY(ERRCODE_TRANSACTION_ROLLBACK):
		case ERRCODE_TO_CATEGORY(ERRCODE_INSUFFICIENT_RESOURCES):
		case ERRCODE_TO_CATEGORY(ERRCODE_OPERATOR_INTERVENTION):
		case ERRCODE_TO_CATEGORY(ERRCODE_SYSTEM_ERROR):
			return true;
		default:
			return sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE;
	}
}

/*
 * Start a capture (activate_capture()); if that fails, the capture alone
 * stops, whatever the error (a policy of the owner that raises, a lock
 * held on the table, the copy's time limit): the worker goes on with the
 * others, and resume_capture() tries the copy again.  Before 1.4 the error
 * fails the step, as it did.  Returns whether the capture was started.
 */
static bool
try_activate_capture(Oid relid, bool copy, bool *postponed)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool done = false;
	ErrorData  *volatile edata = NULL;

	PG_TRY();
	{
		if (activate_capture(relid, copy))
			done = true;
		else
			*postponed = true;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		copy_limits_end();
		if (origin_set_up)
			replorigin_session_origin = cdc_origin;
		if (!cdc_isolation)
			ReThrowError(edata);
	}
	PG_END_TRY();

	if (edata != NULL)
	{
		Oid			argtypes[4] = {OIDOID, TEXTOID, TEXTOID, TEXTOID};
		Datum		args[4];
		char		nulls[4] = {' ', ' ', ' ', ' '};

		args[0] = ObjectIdGetDatum(relid);
		args[1] = CStringGetTextDatum(edata->message ? edata->message : "unknown error");
		args[2] = CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode));
		if (edata->detail != NULL)
			args[3] = CStringGetTextDatum(edata->detail);
		else
			nulls[3] = 'n';
		begin_xact();
		if (SPI_execute_with_args("UPDATE estream.capture cp SET stopped_at = pg_catalog.clock_timestamp(),"
								  " stop_error = $2, stop_sqlstate = $3, stop_detail = $4, stop_lsn = NULL,"
								  " stop_xid = NULL, progress_lsn = NULL"
								  " WHERE cp.relid OPERATOR(pg_catalog.=) $1 AND cp.snapshot IS NULL"
								  " AND cp.stopped_at IS NULL"
								  " RETURNING cp.relid::pg_catalog.regclass::pg_catalog.text, cp.topic",
								  4, argtypes, args, nulls, false, 0) != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "could not stop the capture of relation %u", relid);
		if (SPI_processed == 1)
			ereport(LOG,
					(errmsg("estream stopped capturing table %s into topic \"%s\": its initial copy failed",
							SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1),
							SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2)),
					 errdetail("%s (SQLSTATE %s)", edata->message,
							   unpack_sql_state(edata->sqlerrcode)),
					 errhint("Remove the cause, then call estream.resume_capture(), which makes the copy again.")));
		end_xact();
		FreeErrorData(edata);
	}
	return done;
}

/*
 * The captures, as of the caller's snapshot (in a transaction, SPI
 * connected).  *any_pending: some capture waits for the worker to start
 * it (its copy, or its start without copy).  A stopped capture waits for
 * nothing: resume_capture() starts it again.
 */
static List *
load_captures(bool *any_pending)
{
	List	   *result = NIL;
	MemoryContext outer = CurrentMemoryContext;

	*any_pending = false;
	/* the failure policies are 1.4's: before, a failure fails the step */
	cdc_isolation = estream_schema_version() >= ESTREAM_SCHEMA_1_4;
	if (SPI_execute(cdc_isolation ?
					"SELECT relid, snapshot::pg_catalog.text, initial_snapshot, created_at, topic,"
					" stopped_at IS NOT NULL, progress_lsn, on_error OPERATOR(pg_catalog.=) 'skip'"
					" FROM estream.capture" :
					"SELECT relid, snapshot::pg_catalog.text, initial_snapshot, created_at, topic,"
					" false, NULL::pg_catalog.pg_lsn, false FROM estream.capture",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read estream.capture");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	row = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		MemoryContext old = MemoryContextSwitchTo(outer);
		CaptureState *cs = palloc0(sizeof(CaptureState));
		char	   *snaptext;
		Datum		d;

		cs->relid = DatumGetObjectId(SPI_getbinval(row, desc, 1, &isnull));
		snaptext = SPI_getvalue(row, desc, 2);
		cs->created_at = DatumGetTimestampTz(SPI_getbinval(row, desc, 4, &isnull));
		cs->topic = SPI_getvalue(row, desc, 5);
		cs->stopped = DatumGetBool(SPI_getbinval(row, desc, 6, &isnull));
		d = SPI_getbinval(row, desc, 7, &isnull);
		cs->progress = isnull ? InvalidXLogRecPtr : DatumGetLSN(d);
		cs->skip = DatumGetBool(SPI_getbinval(row, desc, 8, &isnull));
		if (!DatumGetBool(SPI_getbinval(row, desc, 3, &isnull)))
		{
			/*
			 * No initial copy: every change the plugin emits (those that
			 * committed once the capture was visible) goes to the topic.
			 */
			cs->active = true;
			cs->xmin = cs->xmax = FullTransactionIdFromU64(0);
			/* started (state streaming) once the slot is there */
			if (snaptext == NULL && !cs->stopped)
			{
				cs->pending = true;
				*any_pending = true;
			}
		}
		else if (snaptext != NULL)
		{
			/* xmin:xmax:xip,xip,... */
			char	   *p = snaptext;
			char	   *end;

			cs->active = true;
			cs->xmin = FullTransactionIdFromU64(strtou64(p, &end, 10));
			p = end + 1;
			cs->xmax = FullTransactionIdFromU64(strtou64(p, &end, 10));
			p = end + 1;
			cs->xip = palloc(sizeof(FullTransactionId) * (strlen(p) / 2 + 1));
			while (*p)
			{
				cs->xip[cs->nxip++] = FullTransactionIdFromU64(strtou64(p, &end, 10));
				p = (*end == ',') ? end + 1 : end;
			}
		}
		else if (!cs->stopped)
		{
			cs->copy = true;
			cs->pending = true;
			*any_pending = true;
		}
		result = lappend(result, cs);
		MemoryContextSwitchTo(old);
	}
	return result;
}

static CaptureState *
find_capture(List *caps, Oid relid)
{
	ListCell   *lc;

	foreach(lc, caps)
	{
		CaptureState *cs = lfirst(lc);

		if (cs->relid == relid)
			return cs;
	}
	return NULL;
}

/*
 * Is the (committed) transaction xid, decoded now, visible in the
 * capture's snapshot, i.e. part of its copy?  xid is near the snapshot's
 * xmax (it committed after the slot's start, which precedes it by far less
 * than 2^31 transactions).
 */
static bool
visible_in_copy(CaptureState *cs, TransactionId xid)
{
	uint64		xmax = U64FromFullTransactionId(cs->xmax);
	uint64		full = (xmax & ~(uint64) 0xFFFFFFFF) | xid;

	if (full > xmax + ((uint64) 1 << 31))
		full -= (uint64) 1 << 32;
	else if (full + ((uint64) 1 << 31) < xmax)
		full += (uint64) 1 << 32;
	if (full < U64FromFullTransactionId(cs->xmin))
		return true;
	if (full >= xmax)
		return false;
	for (int i = 0; i < cs->nxip; i++)
		if (U64FromFullTransactionId(cs->xip[i]) == full)
			return false;
	return true;
}

/* ------------------------------------------------------------------
 * Writing a run
 * ------------------------------------------------------------------
 */

/*
 * The records of one topic waiting for produce_batch(): at most
 * CDC_APPLY_CHUNK of them, and apply_bytes() in all.
 */
typedef struct TopicBatch
{
	char	   *topic;
	bool		compacted;		/* takes no record without a key */
	int			n;
	Size		bytes;
	Datum		values[CDC_APPLY_CHUNK];	/* jsonb */
	Datum		keys[CDC_APPLY_CHUNK];	/* text */
	bool		key_nulls[CDC_APPLY_CHUNK];
} TopicBatch;

/*
 * The write of one run.  Its lines are read back through read pointer 0 of
 * the tuplestore; pointer 1 marks the start of a source transaction (to
 * write it again) and pointer 2 the place before the last line read (to
 * give it back).
 */
typedef struct WriteRun
{
	Tuplestorestate *lines;
	TupleTableSlot *slot;
	int64		nlines;			/* lines to write: those before a stop */
	int64		pos;			/* index of the line pointer 0 reads next */
	int64		mark_pos;		/* where pointer 1 is */
	List	   *caps;
	int64		written;		/* events written */
	int64		dead;			/* dead letters written */
	TimestampTz last_commit;	/* of the last source transaction written */
} WriteRun;

/* a line as read back: points into the slot, valid until the next read */
typedef struct Line
{
	EstreamCdcPieceKind kind;
	XLogRecPtr	lsn;
	Oid			relid;
	text	   *topic;
	Datum		key;
	bool		key_null;
	Datum		value;
	TimestampTz commit_ts;
	int64		xid;
	XLogRecPtr	final_lsn;
	XLogRecPtr	end_lsn;
	char	   *error;
	int			sqlerrcode;
} Line;

/* why a change could not be written, and where it is */
typedef struct Failure
{
	char	   *message;
	char	   *detail;
	int			sqlerrcode;
	XLogRecPtr	lsn;			/* the change's */
	XLogRecPtr	final_lsn;		/* its transaction's commit record */
	int64		xid;
	TimestampTz commit_ts;
} Failure;

static void
rewind_lines(WriteRun *wr)
{
	tuplestore_select_read_pointer(wr->lines, 0);
	tuplestore_rescan(wr->lines);
	wr->pos = 0;
}

static bool
read_line(WriteRun *wr, Line *line)
{
	TupleTableSlot *slot = wr->slot;
	bool		isnull;
	Datum		d;

	CHECK_FOR_INTERRUPTS();
	if (wr->pos >= wr->nlines)
		return false;
	tuplestore_copy_read_pointer(wr->lines, 0, 2);
	if (!tuplestore_gettupleslot(wr->lines, true, false, slot))
		return false;
	wr->pos++;
	line->lsn = DatumGetLSN(slot_getattr(slot, LINE_LSN, &isnull));
	line->kind = (EstreamCdcPieceKind) DatumGetInt32(slot_getattr(slot, LINE_KIND, &isnull));
	line->relid = DatumGetObjectId(slot_getattr(slot, LINE_RELID, &isnull));
	line->topic = DatumGetTextPP(slot_getattr(slot, LINE_TOPIC, &isnull));
	line->key = slot_getattr(slot, LINE_KEY, &line->key_null);
	line->value = slot_getattr(slot, LINE_VALUE, &isnull);
	line->commit_ts = DatumGetTimestampTz(slot_getattr(slot, LINE_COMMIT_TS, &isnull));
	line->xid = DatumGetInt64(slot_getattr(slot, LINE_XID, &isnull));
	line->final_lsn = DatumGetLSN(slot_getattr(slot, LINE_FINAL_LSN, &isnull));
	line->end_lsn = DatumGetLSN(slot_getattr(slot, LINE_END_LSN, &isnull));
	d = slot_getattr(slot, LINE_ERROR, &isnull);
	line->error = isnull ? NULL : TextDatumGetCString(d);
	d = slot_getattr(slot, LINE_SQLSTATE, &isnull);
	line->sqlerrcode = isnull ? 0 : DatumGetInt32(d);
	return true;
}

/* give back the line just read */
static void
unread_line(WriteRun *wr)
{
	tuplestore_copy_read_pointer(wr->lines, 2, 0);
	wr->pos--;
}

static void
mark_lines(WriteRun *wr)
{
	tuplestore_copy_read_pointer(wr->lines, 0, 1);
	wr->mark_pos = wr->pos;
}

static void
back_to_mark(WriteRun *wr)
{
	tuplestore_copy_read_pointer(wr->lines, 1, 0);
	wr->pos = wr->mark_pos;
}

static bool
line_in_topic(Line *line, const char *topic)
{
	size_t		len = strlen(topic);

	return VARSIZE_ANY_EXHDR(line->topic) == len &&
		memcmp(VARDATA_ANY(line->topic), topic, len) == 0;
}

static TopicBatch *
topic_batch(const char *topic)
{
	TopicBatch *tb;
	Datum		args[1];
	Oid			argtypes[1] = {TEXTOID};

	tb = palloc0(sizeof(TopicBatch));
	tb->topic = pstrdup(topic);
	args[0] = CStringGetTextDatum(topic);
	if (SPI_execute_with_args("SELECT pg_catalog.position(estream.effective_config(config)"
							  " OPERATOR(pg_catalog.->>) 'cleanup.policy', 'compact') OPERATOR(pg_catalog.>) 0"
							  " FROM estream.topic WHERE name OPERATOR(pg_catalog.=) $1",
							  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up topic \"%s\"", topic);
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		tb->compacted = !isnull && DatumGetBool(d);
	}
	SPI_freetuptable(SPI_tuptable);
	return tb;
}

static void
batch_discard(TopicBatch *tb)
{
	for (int i = 0; i < tb->n; i++)
	{
		pfree(DatumGetPointer(tb->values[i]));
		if (!tb->key_nulls[i])
			pfree(DatumGetPointer(tb->keys[i]));
	}
	tb->n = 0;
	tb->bytes = 0;
}

static void
batch_flush(TopicBatch *tb)
{
	if (tb->n == 0)
		return;
	(void) produce_events(tb->topic, tb->n, tb->values, tb->keys, tb->key_nulls);
	batch_discard(tb);
}

/* add an event; a full batch is written first */
static void
batch_add(TopicBatch *tb, Line *line)
{
	Size		size = VARSIZE_ANY(DatumGetPointer(line->value)) +
	(line->key_null ? 0 : VARSIZE_ANY(DatumGetPointer(line->key)));

	/* a batch stays below estream.max_batch_bytes */
	if (tb->n > 0 && (tb->n == CDC_APPLY_CHUNK || tb->bytes + size > apply_bytes()))
		batch_flush(tb);
	tb->keys[tb->n] = line->key_null ? (Datum) 0 : PointerGetDatum(DatumGetTextPCopy(line->key));
	tb->key_nulls[tb->n] = line->key_null;
	tb->values[tb->n] = PointerGetDatum(DatumGetJsonbPCopy(line->value));
	tb->bytes += size;
	tb->n++;
}

/* a table's qualified name, or its OID once dropped */
static char *
table_name(Oid relid)
{
	char	   *name = get_rel_name(relid);

	if (name == NULL)
		return psprintf("%u", relid);
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), name);
}

static Failure *
failure_of_error(ErrorData *edata)
{
	Failure    *f = palloc0(sizeof(Failure));

	f->message = pstrdup(edata->message ? edata->message : "unknown error");
	f->detail = edata->detail ? pstrdup(edata->detail) : NULL;
	f->sqlerrcode = edata->sqlerrcode;
	return f;
}

/*
 * Run fn(arg) in a subtransaction: committed if it returns true, rolled
 * back if it returns false or fails.  Returns NULL but for an error, which
 * is thrown if transient and else returned (the caller frees it).
 * *result is what fn returned, or false after an error.
 */
static ErrorData *
try_in_subxact(bool (*fn) (void *), void *arg, bool *result)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;
	volatile bool ok = false;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		ok = fn(arg);
		if (ok)
			ReleaseCurrentSubTransaction();
		else
			RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		ok = false;
		if (error_is_transient(edata->sqlerrcode))
			ReThrowError(edata);
	}
	PG_END_TRY();
	*result = ok;
	return edata;
}

typedef struct OneEvent
{
	TopicBatch *tb;
	Line	   *line;
	CaptureState *cs;
	Failure    *f;
} OneEvent;

static bool
produce_one_body(void *arg)
{
	OneEvent   *e = (OneEvent *) arg;
	Datum		value = e->line->value;
	Datum		key = e->line->key;
	bool		key_null = e->line->key_null;

	(void) produce_events(e->tb->topic, 1, &value, &key, &key_null);
	return true;
}

/*
 * Write one event in a subtransaction of its own.  Returns NULL, or why it
 * could not be written (the subtransaction rolled back); a transient error
 * is thrown.
 */
static Failure *
produce_one(TopicBatch *tb, Line *line)
{
	OneEvent	e = {.tb = tb,.line = line};
	ErrorData  *edata;
	Failure    *f;
	bool		ok;

	edata = try_in_subxact(produce_one_body, &e, &ok);
	if (edata == NULL)
		return NULL;
	f = failure_of_error(edata);
	FreeErrorData(edata);
	return f;
}

/*
 * A change of a capture with on_error "skip" that could not be rendered
 * or written goes to estream.capture_dead_letter (with its event, if it
 * was rendered), in the transaction that writes the capture's events.
 */
static void
write_dead_letter(CaptureState *cs, Line *line, Failure *f)
{
	Oid			argtypes[10] = {OIDOID, TIMESTAMPTZOID, PG_LSNOID, INT8OID, TIMESTAMPTZOID,
	TEXTOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		args[10];
	char		nulls[10];

	memset(nulls, ' ', sizeof(nulls));
	args[0] = ObjectIdGetDatum(cs->relid);
	args[1] = TimestampTzGetDatum(cs->created_at);
	args[2] = LSNGetDatum(f->lsn);
	args[3] = Int64GetDatum(f->xid);
	args[4] = TimestampTzGetDatum(f->commit_ts);
	if (line->key_null)
		nulls[5] = 'n';
	else
		args[5] = line->key;
	if (line->kind == PIECE_EVENT)
		args[6] = line->value;
	else
		nulls[6] = 'n';
	args[7] = CStringGetTextDatum(f->message);
	if (f->detail != NULL)
		args[8] = CStringGetTextDatum(f->detail);
	else
		nulls[8] = 'n';
	args[9] = CStringGetTextDatum(unpack_sql_state(f->sqlerrcode));
	if (SPI_execute_with_args("INSERT INTO estream.capture_dead_letter (relid, capture_created_at,"
							  " source_schema, source_table, topic_id, topic, lsn, xid, commit_ts, key, event,"
							  " error, error_detail, sqlstate)"
							  " SELECT cp.relid, cp.created_at, COALESCE(n.nspname, cp.source_schema),"
							  " COALESCE(cl.relname, cp.source_table), cp.topic_id, cp.topic,"
							  " $3, $4, $5, $6, $7, $8, $9, $10"
							  " FROM estream.capture cp"
							  " LEFT JOIN pg_catalog.pg_class cl ON cl.oid OPERATOR(pg_catalog.=) cp.relid"
							  " LEFT JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) cl.relnamespace"
							  " WHERE cp.relid OPERATOR(pg_catalog.=) $1 AND cp.created_at OPERATOR(pg_catalog.=) $2",
							  10, argtypes, args, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not write a dead letter of capture of relation %u", cs->relid);
	ereport(LOG,
			(errmsg("estream could not capture a change of table %s into topic \"%s\" and wrote it to estream.capture_dead_letter",
					table_name(cs->relid), cs->topic),
			 errdetail("The change at %X/%X: %s (SQLSTATE %s)", LSN_FORMAT_ARGS(f->lsn),
					   f->message, unpack_sql_state(f->sqlerrcode))));
}

static bool
dead_letter_body(void *arg)
{
	OneEvent   *e = (OneEvent *) arg;

	write_dead_letter(e->cs, e->line, e->f);
	return true;
}

/*
 * write_dead_letter() in a subtransaction.  If even that fails (but for a
 * transient error, which is thrown), returns false, with the failure's
 * message telling both errors: the capture then stops.
 */
static bool
try_dead_letter(CaptureState *cs, Line *line, Failure *f)
{
	OneEvent	e = {.line = line,.cs = cs,.f = f};
	ErrorData  *edata;
	bool		ok;

	edata = try_in_subxact(dead_letter_body, &e, &ok);
	if (edata == NULL)
		return ok;
	f->detail = psprintf("%s%sWriting it to estream.capture_dead_letter failed too: %s.",
						 f->detail ? f->detail : "", f->detail ? " " : "",
						 edata->message ? edata->message : "unknown error");
	FreeErrorData(edata);
	return false;
}

/*
 * Stop a capture at the transaction of a change that could not be rendered
 * or written (its on_error is "stop"), in the caller's transaction: its
 * position becomes the start of that transaction's commit record, so that
 * everything of it before is written and nothing after; resume_capture()
 * goes on from there.
 */
static void
stop_capture(CaptureState *cs, Failure *f)
{
	Oid			argtypes[8] = {OIDOID, TIMESTAMPTZOID, TEXTOID, TEXTOID, TEXTOID,
	PG_LSNOID, INT8OID, PG_LSNOID};
	Datum		args[8];
	char		nulls[8];

	memset(nulls, ' ', sizeof(nulls));
	args[0] = ObjectIdGetDatum(cs->relid);
	args[1] = TimestampTzGetDatum(cs->created_at);
	args[2] = CStringGetTextDatum(f->message);
	if (f->detail != NULL)
		args[3] = CStringGetTextDatum(f->detail);
	else
		nulls[3] = 'n';
	args[4] = CStringGetTextDatum(unpack_sql_state(f->sqlerrcode));
	args[5] = LSNGetDatum(f->lsn);
	args[6] = Int64GetDatum(f->xid);
	args[7] = LSNGetDatum(f->final_lsn);
	if (SPI_execute_with_args("UPDATE estream.capture cp SET stopped_at = pg_catalog.clock_timestamp(),"
							  " stop_error = $3, stop_detail = $4, stop_sqlstate = $5, stop_lsn = $6,"
							  " stop_xid = $7, progress_lsn = $8"
							  " WHERE cp.relid OPERATOR(pg_catalog.=) $1 AND cp.created_at OPERATOR(pg_catalog.=) $2"
							  " AND cp.stopped_at IS NULL",
							  8, argtypes, args, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not stop the capture of relation %u", cs->relid);
	cs->stopped_now = true;
	cs->progress = f->final_lsn;
	ereport(LOG,
			(errmsg("estream stopped capturing table %s into topic \"%s\"",
					table_name(cs->relid), cs->topic),
			 errdetail("The change at %X/%X of transaction %lld could not be written: %s (SQLSTATE %s)",
					   LSN_FORMAT_ARGS(f->lsn), (long long) f->xid, f->message,
					   unpack_sql_state(f->sqlerrcode)),
			 errhint("Remove the cause, then call estream.resume_capture(), which goes on from that transaction.")));
}

/*
 * What one write into a topic's batch did: the body of a write in a
 * subtransaction (write_in_subxact()) fills it.
 */
typedef struct WriteTally
{
	WriteRun   *wr;
	TopicBatch *tb;
	XLogRecPtr	txn_end;		/* write_txn_try(): the transaction's end */
	bool		bulk;			/* write_txn_try(): in batches */
	int64		n;				/* events written */
	int64		dead;			/* events written as dead letters */
	TimestampTz last;			/* latest commit time of those */
	CaptureState *stop_cs;		/* the capture to stop, if any */
	Failure    *stop_failure;	/* and why */
} WriteTally;

typedef struct WriteCall
{
	bool		(*body) (WriteTally *);
	WriteTally *tally;
} WriteCall;

/* body, then the batch flushed inside the subtransaction */
static bool
write_call(void *arg)
{
	WriteCall  *c = (WriteCall *) arg;

	if (!c->body(c->tally))
		return false;
	batch_flush(c->tally->tb);
	return true;
}

/*
 * Run body in a subtransaction that writes into tally->tb: if it returns
 * true, flush the batch and commit the subtransaction, else discard the
 * batch and roll it back.  An error rolls it back too: a transient one,
 * or any when rethrow_all, is thrown; any other makes the result false.
 * Returns what body returned.
 */
static bool
write_in_subxact(bool (*body) (WriteTally *), WriteTally *tally, bool rethrow_all)
{
	WriteCall	c = {.body = body,.tally = tally};
	ErrorData  *edata;
	bool		done;

	edata = try_in_subxact(write_call, &c, &done);
	if (!done)
		batch_discard(tally->tb);
	if (edata != NULL)
	{
		if (rethrow_all)
			ReThrowError(edata);
		FreeErrorData(edata);
	}
	return done;
}

/* Body of write_topic_bulk(): false if a change could not be rendered. */
static bool
write_topic_bulk_body(WriteTally *t)
{
	Line		line;

	rewind_lines(t->wr);
	while (read_line(t->wr, &line))
	{
		if (!line_in_topic(&line, t->tb->topic))
			continue;
		if (line.kind == PIECE_FAILURE)
			return false;
		/* a compacted topic takes no record without a key (TRUNCATE) */
		if (line.key_null && t->tb->compacted)
			continue;
		batch_add(t->tb, &line);
		t->n++;
		t->last = Max(t->last, line.commit_ts);
	}
	return true;
}

/*
 * Write every event of a topic in this run in one subtransaction, in
 * batches.  Returns false, the subtransaction rolled back, if a change of
 * the topic could not be rendered or an event could not be written; a
 * transient error (or any error before 1.4) is thrown: the step fails.
 */
static bool
write_topic_bulk(WriteRun *wr, TopicBatch *tb)
{
	WriteTally	t = {.wr = wr,.tb = tb};

	if (!write_in_subxact(write_topic_bulk_body, &t, !cdc_isolation))
		return false;
	wr->written += t.n;
	wr->last_commit = Max(wr->last_commit, t.last);
	return true;
}

/*
 * Body of write_txn_try(): false if the transaction could not be written,
 * with t->stop_cs set when a capture must stop.
 */
static bool
write_txn_body(WriteTally *t)
{
	Line		line;

	while (read_line(t->wr, &line))
	{
		CaptureState *cs;
		Failure    *f;

		if (line.end_lsn != t->txn_end)
		{
			unread_line(t->wr);
			break;
		}
		if (!line_in_topic(&line, t->tb->topic))
			continue;
		cs = find_capture(t->wr->caps, line.relid);
		if (cs == NULL || cs->stopped_now)
			continue;
		if (line.kind == PIECE_FAILURE)
		{
			if (t->bulk)
				return false;
			f = palloc0(sizeof(Failure));
			f->message = line.error;
			f->sqlerrcode = line.sqlerrcode;
		}
		else if (line.key_null && t->tb->compacted)
			continue;
		else if (t->bulk)
		{
			batch_add(t->tb, &line);
			t->n++;
			t->last = Max(t->last, line.commit_ts);
			continue;
		}
		else if ((f = produce_one(t->tb, &line)) == NULL)
		{
			t->n++;
			t->last = Max(t->last, line.commit_ts);
			continue;
		}
		f->lsn = line.lsn;
		f->final_lsn = line.final_lsn;
		f->xid = line.xid;
		f->commit_ts = line.commit_ts;
		if (cs->skip && try_dead_letter(cs, &line, f))
		{
			t->dead++;
			t->last = Max(t->last, line.commit_ts);
			continue;
		}
		t->stop_cs = cs;
		t->stop_failure = f;
		return false;
	}
	return true;
}

/*
 * Write the events of one source transaction (ending at txn_end) for a
 * topic, from read pointer 0, in a subtransaction: in batches (bulk), or
 * else each in a subtransaction of its own, so that one that fails is
 * found: on_error "skip" writes it as a dead letter and goes on; "stop"
 * stops its capture (stop_capture()) and returns false, with the
 * subtransaction rolled back, so that the caller writes the transaction
 * again without that capture.  In bulk, returns false (rolled back) on any
 * failure but a transient one, which is thrown.  Returns true with read
 * pointer 0 after the transaction's lines.
 */
static bool
write_txn_try(WriteRun *wr, TopicBatch *tb, XLogRecPtr txn_end, bool bulk)
{
	WriteTally	t = {.wr = wr,.tb = tb,.txn_end = txn_end,.bulk = bulk};
	bool		done;

	/* event by event, only transient errors come to the catch */
	done = write_in_subxact(write_txn_body, &t, !bulk);
	if (t.stop_cs != NULL)
		stop_capture(t.stop_cs, t.stop_failure);
	if (!done)
		return false;
	wr->written += t.n;
	wr->dead += t.dead;
	wr->last_commit = Max(wr->last_commit, t.last);
	return true;
}

/*
 * Write a topic's events of this run one source transaction at a time (see
 * write_txn_try()): after write_topic_bulk() failed.
 */
static void
write_topic_each(WriteRun *wr, TopicBatch *tb)
{
	Line		line;

	rewind_lines(wr);
	while (read_line(wr, &line))
	{
		XLogRecPtr	txn_end = line.end_lsn;

		if (!line_in_topic(&line, tb->topic))
			continue;
		unread_line(wr);
		mark_lines(wr);
		if (write_txn_try(wr, tb, txn_end, true))
			continue;
		do
			back_to_mark(wr);
		while (!write_txn_try(wr, tb, txn_end, false));
	}
}

/*
 * Captures that are behind the others (resumed) get their own position
 * advanced to where this run read (upto), or rejoin the database's
 * position when they reach it: in the transaction that wrote their events.
 */
static void
advance_own_positions(List *caps, XLogRecPtr upto)
{
	ListCell   *lc;

	if (!cdc_isolation)
		return;
	foreach(lc, caps)
	{
		CaptureState *cs = lfirst(lc);
		Oid			argtypes[3] = {OIDOID, TIMESTAMPTZOID, PG_LSNOID};
		Datum		args[3];
		char		nulls[3] = {' ', ' ', ' '};
		XLogRecPtr	pos;

		if (cs->stopped || cs->stopped_now || !cs->active || cs->pending ||
			XLogRecPtrIsInvalid(cs->progress))
			continue;
		pos = Max(cs->progress, upto);
		args[0] = ObjectIdGetDatum(cs->relid);
		args[1] = TimestampTzGetDatum(cs->created_at);
		if (pos >= cdc_common)
		{
			nulls[2] = 'n';
			pos = InvalidXLogRecPtr;
		}
		else
			args[2] = LSNGetDatum(pos);
		if (SPI_execute_with_args("UPDATE estream.capture cp SET progress_lsn = $3"
								  " WHERE cp.relid OPERATOR(pg_catalog.=) $1"
								  " AND cp.created_at OPERATOR(pg_catalog.=) $2 AND cp.stopped_at IS NULL",
								  3, argtypes, args, nulls, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not record the position of the capture of relation %u", cs->relid);
		cs->progress = pos;
	}
}

/*
 * In the PG_CATCH of decoding: if the plugin was rendering a change of a
 * capture, count the failure against that change (see PoisonedChange).
 * The error stays current, to be thrown again.
 */
static void
note_render_failure(void)
{
	MemoryContext old;
	ErrorData  *edata;

	if (!coll.writer.rendering.active)
		return;
	coll.writer.rendering.active = false;
	if (!cdc_isolation)
		return;
	old = MemoryContextSwitchTo(TopMemoryContext);
	edata = CopyErrorData();
	if (!error_is_transient(edata->sqlerrcode))
	{
		PoisonedChange *pc = find_poisoned(coll.writer.rendering.relid, coll.writer.rendering.created_at,
										   coll.writer.rendering.lsn);

		if (pc == NULL)
		{
			pc = palloc0(sizeof(PoisonedChange));
			pc->relid = coll.writer.rendering.relid;
			pc->created_at = coll.writer.rendering.created_at;
			pc->lsn = coll.writer.rendering.lsn;
			poisoned = lappend(poisoned, pc);
		}
		pc->failures++;
		if (pc->message != NULL)
			pfree(pc->message);
		pc->message = pstrdup(edata->message ? edata->message : "unknown error");
		pc->sqlerrcode = edata->sqlerrcode;
	}
	FreeErrorData(edata);
	MemoryContextSwitchTo(old);
}

/* after a run that wrote up to upto: forget the poisoned changes before */
static void
forget_poisoned(XLogRecPtr upto)
{
	ListCell   *lc;

	foreach(lc, poisoned)
	{
		PoisonedChange *pc = lfirst(lc);

		if (pc->lsn < upto)
		{
			poisoned = foreach_delete_current(poisoned, lc);
			pfree(pc->message);
			pfree(pc);
		}
	}
}

/* ------------------------------------------------------------------
 * Decoding
 * ------------------------------------------------------------------
 */

/*
 * Start decoding (in a transaction): acquire the slot and read from its
 * restart point.  Transactions that ended before every capture's position
 * (caps) are skipped; the slot is confirmed up to the lowest position,
 * stopped captures included (after a restart the positions may be ahead of
 * the slot, which is saved only now and then).
 */
static void
start_decoding(List *caps)
{
	MemoryContext old;
	volatile XLogRecPtr start = cdc_common;
	volatile XLogRecPtr hold = cdc_common;
	ListCell   *lc;

	foreach(lc, caps)
	{
		CaptureState *cs = lfirst(lc);

		if (XLogRecPtrIsInvalid(cs->progress))
			continue;
		hold = Min(hold, cs->progress);
		if (!cs->stopped)
			start = Min(start, cs->progress);
	}

	ReplicationSlotAcquire(slot_name, true);
	coll.writer.admit = collector_admit;
	estream_cdc_plugin_set_writer(&coll.writer);

	/*
	 * Starting to decode logs two LOG lines: only the first start of a worker
	 * is logged.
	 */
	if (decoded_once)
		SetConfigOption("log_min_messages", "fatal", PGC_SUSET, PGC_S_SESSION);
	old = MemoryContextSwitchTo(TopMemoryContext);
	PG_TRY();
	{
		cdc_ctx = CreateDecodingContext(start, NIL, false,
										XL_ROUTINE(.page_read = read_local_xlog_page,
												   .segment_open = wal_segment_open,
												   .segment_close = wal_segment_close),
										cdc_prepare_write, cdc_write, NULL);
	}
	PG_FINALLY();
	{
		MemoryContextSwitchTo(old);
		if (decoded_once)
			SetConfigOption("log_min_messages", saved_log_min_messages, PGC_SUSET, PGC_S_SESSION);
	}
	PG_END_TRY();
	decoded_once = true;
	cdc_ctx->output_writer_private = &coll.writer;
	cdc_decoded_to = InvalidXLogRecPtr;

	if (hold != InvalidXLogRecPtr &&
		hold > MyReplicationSlot->data.confirmed_flush)
		LogicalConfirmReceivedLocation(hold);

	/*
	 * A capture's position behind the slot (a slot dropped by hand and made
	 * again, say): the changes in between are not in the WAL the slot decodes
	 * any more.
	 */
	foreach(lc, caps)
	{
		CaptureState *cs = lfirst(lc);

		if (!XLogRecPtrIsInvalid(cs->progress) &&
			cs->progress < MyReplicationSlot->data.confirmed_flush)
			ereport(WARNING,
					(errmsg("changes of table %s from %X/%X to %X/%X cannot be captured",
							table_name(cs->relid), LSN_FORMAT_ARGS(cs->progress),
							LSN_FORMAT_ARGS(MyReplicationSlot->data.confirmed_flush)),
					 errdetail("Replication slot \"%s\" is confirmed past the capture's position.",
							   slot_name),
					 errhint("Uncapture the table and capture it again to copy it afresh.")));
	}
	XLogBeginRead(cdc_ctx->reader, MyReplicationSlot->data.restart_lsn);
}

/* stop decoding, keeping the slot; the next run starts again */
static void
stop_decoding(void)
{
	if (cdc_ctx != NULL)
	{
		FreeDecodingContext(cdc_ctx);
		cdc_ctx = NULL;
	}
	cdc_decoded_to = InvalidXLogRecPtr;
	if (MyReplicationSlot != NULL)
		ReplicationSlotRelease();
}

/*
 * No capture left (or no extension): drop the slot, so that it keeps no
 * WAL, and the origin.  Outside a transaction.
 */
void
estream_cdc_drop(void)
{
	char		name[NAMEDATALEN];

	stop_decoding();
	if (origin_set_up)
	{
		replorigin_session_reset();
		replorigin_session_origin = InvalidRepOriginId;
		cdc_origin = InvalidRepOriginId;
		origin_set_up = false;
	}
	cdc_common = InvalidXLogRecPtr;
	list_free_deep(poisoned);
	poisoned = NIL;
	snprintf(name, sizeof(name), "estream_%u", MyDatabaseId);
	begin_xact();
	if (SPI_execute(psprintf("SELECT pg_catalog.pg_drop_replication_slot(slot_name)"
							 " FROM pg_catalog.pg_replication_slots WHERE slot_name OPERATOR(pg_catalog.=) '%s'",
							 name), false, 0) != SPI_OK_SELECT ||
		SPI_execute(psprintf("SELECT pg_catalog.pg_replication_origin_drop(roname)"
							 " FROM pg_catalog.pg_replication_origin WHERE roname OPERATOR(pg_catalog.=) '%s'",
							 name), false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not drop replication slot and origin \"%s\"", name);
	end_xact();
}

/* the worker stops capturing for a while (disabled, waiting for upgrade) */
void
estream_cdc_stop(void)
{
	stop_decoding();
}

/*
 * After an error of the capture step, with the failed transaction aborted:
 * forget the decoding context (its state may be half-way through a
 * record) and let go of the slot.  The next run starts again.
 */
void
estream_cdc_abort(void)
{
	coll.writer.rendering.active = false;
	cdc_decoded_to = InvalidXLogRecPtr;
	if (cdc_ctx != NULL)
	{
		MemoryContext cxt = cdc_ctx->context;

		if (cdc_ctx->reader != NULL)
			XLogReaderFree(cdc_ctx->reader);
		cdc_ctx = NULL;
		MemoryContextDelete(cxt);
	}
	if (MyReplicationSlot != NULL)
		ReplicationSlotRelease();
	ReplicationSlotCleanup();
	if (origin_set_up)
		replorigin_session_origin = cdc_origin;
	copy_limits_end();

	/* entries a failed decoding may have built from old catalogs */
	StartTransactionCommand();
	InvalidateSystemCaches();
	CommitTransactionCommand();
}

/*
 * A capture writes a table's rows into a topic for the role that captured
 * it (1.4): while that role owns the table and may write the topic.  A
 * capture whose role lost either (the table was given to another role,
 * the write right was revoked, the topic given away) ends here, at the
 * start of a step, as if uncaptured: nothing more of the table goes to
 * the topic.  In a transaction, SPI connected.
 */
static void
end_unauthorized_captures(void)
{
	if (estream_schema_version() < ESTREAM_SCHEMA_1_4)
		return;					/* no capturer before 1.4 */
	if (SPI_execute("DELETE FROM estream.capture c"
					" USING pg_catalog.pg_class cl, estream.topic t"
					" WHERE cl.oid OPERATOR(pg_catalog.=) c.relid"
					" AND t.topic_id OPERATOR(pg_catalog.=) c.topic_id"
					" AND NOT (pg_catalog.pg_has_role(c.capturer::pg_catalog.oid, cl.relowner, 'USAGE')"
					"          AND estream.has_right(c.capturer, 'write', 'topic', t.name))"
					" RETURNING c.relid::pg_catalog.regclass::pg_catalog.text, t.name,"
					" c.capturer::pg_catalog.text",
					false, 0) != SPI_OK_DELETE_RETURNING)
		elog(ERROR, "could not check the rights of captures");
	for (uint64 i = 0; i < SPI_processed; i++)
		ereport(LOG,
				(errmsg("estream stopped capturing table %s into topic \"%s\"",
						SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1),
						SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2)),
				 errdetail("Role \"%s\", which captured it, no longer owns the table or may no longer write the topic.",
						   SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3))));
}

/*
 * The start of a step: captures whose capturer lost its rights end; with
 * no capture left, the slot and the origin go, and it returns false.  Else
 * the session's origin is set up and the slot made, if need be.
 */
static bool
prepare_run(void)
{
	int64		ncaptures;
	bool		slot_exists;
	bool		origin_exists;
	RepOriginId origin;
	char		origin_name[NAMEDATALEN];

	snprintf(origin_name, sizeof(origin_name), "estream_%u", MyDatabaseId);
	begin_xact();
	end_unauthorized_captures();
	ncaptures = spi_int8("SELECT pg_catalog.count(*) FROM estream.capture");

	/*
	 * While decoding goes on, the slot is ours and the origin our session's:
	 * neither can be dropped, and the step spares the two lookups.
	 */
	if (cdc_ctx != NULL && MyReplicationSlot != NULL && origin_set_up)
		slot_exists = origin_exists = true;
	else
	{
		slot_exists = spi_int8(psprintf("SELECT pg_catalog.count(*) FROM pg_catalog.pg_replication_slots"
										" WHERE slot_name OPERATOR(pg_catalog.=) '%s'", slot_name)) > 0;
		origin_exists = spi_int8(psprintf("SELECT pg_catalog.count(*) FROM pg_catalog.pg_replication_origin"
										  " WHERE roname OPERATOR(pg_catalog.=) '%s'", origin_name)) > 0;
	}
	end_xact();

	if (ncaptures == 0)
	{
		/* uncapturing the last table drops the slot: WAL is not kept */
		if (slot_exists || origin_exists)
			estream_cdc_drop();
		return false;
	}

	if (wal_level < WAL_LEVEL_LOGICAL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("change data capture needs wal_level = logical"),
				 errhint("Set wal_level = logical and restart the server.")));

	/* the origin first: the plugin drops the changes made under it */
	if (!origin_set_up)
	{
		begin_xact();
		origin = replorigin_by_name(origin_name, true);
		if (origin == InvalidRepOriginId)
			origin = replorigin_create(origin_name);
		end_xact();
		begin_xact();
		replorigin_session_setup(origin);
		end_xact();
		replorigin_session_origin = origin;
		cdc_origin = origin;
		origin_set_up = true;
		/* the position of streaming captures, as durable as their records */
		cdc_common = replorigin_session_get_progress(false);
	}

	if (!slot_exists)
	{
		stop_decoding();
		/* in a transaction that has written nothing */
		begin_xact();
		if (SPI_execute(psprintf("SELECT pg_catalog.pg_create_logical_replication_slot('%s', 'estream')",
								 slot_name), false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not create replication slot \"%s\"", slot_name);
		end_xact();
	}
	return true;
}

/*
 * Start the captures that wait for the worker (their copies first), before
 * decoding, each in transactions of its own.  *copy_postponed: a copy waits
 * for an old transaction.
 */
static void
start_pending_captures(bool *copy_postponed)
{
	bool		any_pending;
	MemoryContext old;
	ListCell   *lc;

	begin_xact();
	old = MemoryContextSwitchTo(TopTransactionContext);
	coll.caps = load_captures(&any_pending);
	MemoryContextSwitchTo(old);
	if (any_pending)
	{
		List	   *copies = NIL;
		List	   *starts = NIL;

		old = MemoryContextSwitchTo(TopMemoryContext);
		foreach(lc, coll.caps)
		{
			CaptureState *cs = lfirst(lc);

			if (cs->pending && cs->copy)
				copies = lappend_oid(copies, cs->relid);
			else if (cs->pending)
				starts = lappend_oid(starts, cs->relid);
		}
		MemoryContextSwitchTo(old);
		end_xact();
		foreach(lc, copies)
			(void) try_activate_capture(lfirst_oid(lc), true, copy_postponed);
		foreach(lc, starts)
			(void) try_activate_capture(lfirst_oid(lc), false, copy_postponed);
		list_free(copies);
		list_free(starts);
	}
	else
		end_xact();
}

/*
 * Make the collector ready for a run (in the run's transaction): the
 * captures as of now, and an empty store of lines.
 */
static void
collector_begin(void)
{
	bool		any_pending;
	MemoryContext old;

	old = MemoryContextSwitchTo(TopTransactionContext);
	coll.caps = load_captures(&any_pending);
	MemoryContextSwitchTo(old);

	coll.desc = CreateTemplateTupleDesc(LINE_NATTS);
	TupleDescInitEntry(coll.desc, LINE_LSN, "lsn", PG_LSNOID, -1, 0);
	TupleDescInitEntry(coll.desc, LINE_KIND, "kind", INT4OID, -1, 0);
	TupleDescInitEntry(coll.desc, LINE_RELID, "relid", OIDOID, -1, 0);
	TupleDescInitEntry(coll.desc, LINE_TOPIC, "topic", TEXTOID, -1, 0);
	TupleDescInitEntry(coll.desc, LINE_KEY, "key", TEXTOID, -1, 0);
	TupleDescInitEntry(coll.desc, LINE_VALUE, "value", JSONBOID, -1, 0);
	TupleDescInitEntry(coll.desc, LINE_COMMIT_TS, "commit_ts", TIMESTAMPTZOID, -1, 0);
	TupleDescInitEntry(coll.desc, LINE_XID, "xid", INT8OID, -1, 0);
	TupleDescInitEntry(coll.desc, LINE_FINAL_LSN, "final_lsn", PG_LSNOID, -1, 0);
	TupleDescInitEntry(coll.desc, LINE_END_LSN, "end_lsn", PG_LSNOID, -1, 0);
	TupleDescInitEntry(coll.desc, LINE_ERROR, "error", TEXTOID, -1, 0);
	TupleDescInitEntry(coll.desc, LINE_SQLSTATE, "sqlstate", INT4OID, -1, 0);
	coll.lines = tuplestore_begin_heap(false, false, work_mem);
	/* read pointers 1 and 2 of WriteRun */
	(void) tuplestore_alloc_read_pointer(coll.lines, EXEC_FLAG_REWIND);
	(void) tuplestore_alloc_read_pointer(coll.lines, EXEC_FLAG_REWIND);
	coll.nlines = 0;
	coll.cur_xid = InvalidTransactionId;
	coll.txn_first = 0;
	coll.stopped = false;
	coll.stop_at = 0;
	coll.stop_lsn = InvalidXLogRecPtr;
	coll.unknown_relid = InvalidOid;
	coll.unknown_xmin = InvalidTransactionId;
	coll.unknown_created_at = 0;
}

/*
 * Decode the WAL flushed before now into the collector, from where the
 * decoding context is (started again if a capture resumed behind it), up
 * to a stop (a capture without its copy) or CDC_BATCH_LINES lines.
 * Returns whether it stopped at the batch limit with WAL left to read.
 */
static bool
decode_run(void)
{
	volatile bool more = false;
	XLogRecPtr	end_of_wal;
	MemoryContext old;
	ListCell   *lc;

	/* a capture resumed behind where decoding is: decode again for it */
	if (cdc_ctx != NULL)
	{
		foreach(lc, coll.caps)
		{
			CaptureState *cs = lfirst(lc);

			if (!cs->stopped && !XLogRecPtrIsInvalid(cs->progress) &&
				cs->progress < cdc_decoded_to)
			{
				stop_decoding();
				break;
			}
		}
	}
	if (cdc_ctx == NULL)
		start_decoding(coll.caps);

	/*
	 * Decoding builds catalog cache entries from the catalogs as they were at
	 * each change, and must not use entries built from today's: flush the
	 * caches before and after it, as logicalfuncs.c does.
	 */
	end_of_wal = GetFlushRecPtr(NULL);
	if (cdc_ctx->reader->EndRecPtr < end_of_wal)
		InvalidateSystemCaches();
	PG_TRY();
	{
		while (cdc_ctx->reader->EndRecPtr < end_of_wal)
		{
			XLogRecord *record;
			char	   *errm = NULL;

			/*
			 * The reader allocates its decode buffer and oversized records in
			 * the current memory context, and frees them at a later read:
			 * they must live as long as the decoding context.
			 */
			old = MemoryContextSwitchTo(cdc_ctx->context);
			record = XLogReadRecord(cdc_ctx->reader, &errm);
			MemoryContextSwitchTo(old);
			if (errm)
				elog(ERROR, "could not read WAL for capture: %s", errm);
			if (record != NULL)
				LogicalDecodingProcessRecord(cdc_ctx, cdc_ctx->reader);
			if (coll.stopped)
				break;
			if (coll.nlines >= CDC_BATCH_LINES)
			{
				more = cdc_ctx->reader->EndRecPtr < end_of_wal;
				break;
			}
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_CATCH();
	{
		/* a change that cannot be rendered: see PoisonedChange */
		note_render_failure();
		PG_RE_THROW();
	}
	PG_END_TRY();
	InvalidateSystemCaches();
	return more;
}

/*
 * Write the collected lines (those before a stop), topic by topic, source
 * transactions in commit order; wr gets what was written.
 */
static void
write_run(WriteRun *wr, bool stopped)
{
	List	   *topics = NIL;
	Line		line;
	char	   *last = NULL;
	ListCell   *lc;

	memset(wr, 0, sizeof(*wr));
	wr->lines = coll.lines;
	wr->slot = MakeSingleTupleTableSlot(coll.desc, &TTSOpsMinimalTuple);
	wr->nlines = stopped ? coll.stop_at : coll.nlines;
	wr->caps = coll.caps;

	/* the topics, in the order of their first lines */
	rewind_lines(wr);
	while (read_line(wr, &line))
	{
		char	   *topic = NULL;

		if (last != NULL && line_in_topic(&line, last))
			continue;
		foreach(lc, topics)
		{
			if (line_in_topic(&line, strVal(lfirst(lc))))
			{
				topic = strVal(lfirst(lc));
				break;
			}
		}
		if (topic == NULL)
		{
			topic = text_to_cstring(line.topic);
			topics = lappend(topics, makeString(topic));
		}
		last = topic;
	}
	foreach(lc, topics)
	{
		TopicBatch *tb = topic_batch(strVal(lfirst(lc)));

		if (!write_topic_bulk(wr, tb))
			write_topic_each(wr, tb);
		pfree(tb);
	}
	ExecDropSingleTupleTableSlot(wr->slot);
	tuplestore_end(coll.lines);
	coll.lines = NULL;
}

/*
 * After a run that stopped at a capture it did not know (see
 * collector_admits()): remember it, so that the next run drops its changes
 * if it does not know it either; after a run that did not stop, forget.
 */
static void
note_missing_capture(bool stopped)
{
	if (OidIsValid(coll.unknown_relid))
	{
		MissingCapture *mc;
		MemoryContext oldcxt;

		/*
		 * The next run must see the capture if it is there: the transaction
		 * that wrote its row has committed (its commit record precedes the
		 * change), it may not have ended yet.  A short wait, without
		 * lock_timeout.
		 */
		if (TransactionIdIsValid(coll.unknown_xmin) &&
			TransactionIdIsInProgress(coll.unknown_xmin))
		{
			SPI_execute("SET LOCAL lock_timeout = 0", false, 0);
			XactLockTableWait(coll.unknown_xmin, NULL, NULL, XLTW_None);
		}
		mc = MemoryContextAlloc(TopMemoryContext, sizeof(MissingCapture));
		mc->relid = coll.unknown_relid;
		mc->created_at = coll.unknown_created_at;
		oldcxt = MemoryContextSwitchTo(TopMemoryContext);
		missing_checked = lappend(missing_checked, mc);
		MemoryContextSwitchTo(oldcxt);
	}
	else if (!stopped)
	{
		list_free_deep(missing_checked);
		missing_checked = NIL;
	}
}

/*
 * Commit the run's transaction, with the streaming captures' position
 * (upto) as the origin's progress, then confirm the slot up to the lowest
 * position: upto, or that of a stopped capture, which keeps the WAL it
 * will need when resumed.
 */
static void
commit_run(XLogRecPtr upto, TimestampTz last_commit)
{
	XLogRecPtr	confirm = upto;
	ListCell   *lc;

	foreach(lc, coll.caps)
	{
		CaptureState *cs = lfirst(lc);

		if ((cs->stopped || cs->stopped_now) && !XLogRecPtrIsInvalid(cs->progress))
			confirm = Min(confirm, cs->progress);
	}
	coll.caps = NIL;

	/* the streaming captures' position commits with what was written */
	if (upto > cdc_common)
	{
		replorigin_session_origin_lsn = upto;
		replorigin_session_origin_timestamp = last_commit != 0 ?
			last_commit : GetCurrentTimestamp();
	}
	end_xact();
	replorigin_session_origin_lsn = InvalidXLogRecPtr;
	replorigin_session_origin_timestamp = 0;
	cdc_common = Max(cdc_common, upto);
	cdc_decoded_to = upto;
	forget_poisoned(upto);

	/* written and durable (synchronous commit) */
	if (confirm != InvalidXLogRecPtr &&
		confirm > MyReplicationSlot->data.confirmed_flush)
	{
		LogicalConfirmReceivedLocation(confirm);
		ReplicationSlotMarkDirty();
	}
}

/*
 * One capture step of the worker: decode the WAL written since the last
 * run and write the changes of captured tables into their topics.  Fills
 * result: the number of change events written; more when the run stopped
 * at its batch limit with WAL left to read, active when there are
 * captures, caught_up when everything committed before the run started
 * has been captured (or was for captures that are stopped); after a run
 * that decoded (progressed), the commit time of the last source
 * transaction written and the position of the streaming captures.  Runs
 * its own transactions.
 *
 * A capture's failure stays its own (1.4): its initial copy, or a change
 * that cannot be rendered or written, stops that capture (or, with
 * on_error "skip", makes the change a dead letter), and the others go on.
 * The events of each topic are written in a subtransaction; if one fails,
 * the topic's events are written again a source transaction at a time to
 * find it (write_topic_each()).  Errors of the moment (a lock, memory, a
 * cancel) fail the whole step, as any error did before.
 */
void
estream_cdc_run(EstreamCdcResult *result)
{
	bool		copy_postponed = false;
	bool		stopped;
	XLogRecPtr	upto;
	WriteRun	wr;

	memset(result, 0, sizeof(*result));
	snprintf(slot_name, sizeof(slot_name), "estream_%u", MyDatabaseId);
	if (saved_log_min_messages[0] == '\0')
		strlcpy(saved_log_min_messages, GetConfigOption("log_min_messages", false, false),
				sizeof(saved_log_min_messages));

	if (!prepare_run())
		return;
	result->active = true;

	/* copies of new captures, before decoding */
	start_pending_captures(&copy_postponed);

	/*
	 * Decode and write in one transaction: whatever it writes commits with
	 * the positions, or not at all.
	 */
	begin_xact();
	collector_begin();
	result->more = decode_run();
	stopped = coll.stopped;

	/*
	 * Every source transaction that ended before upto is decoded: the
	 * reader's position, or the start of the transaction the run stopped at
	 * (a capture without copy), whose lines and those after are not written.
	 */
	upto = stopped ? coll.stop_lsn : cdc_ctx->reader->EndRecPtr;

	write_run(&wr, stopped);
	advance_own_positions(coll.caps, upto);
	note_missing_capture(stopped);
	commit_run(upto, wr.last_commit);

	if (stopped)
	{
		stop_decoding();

		/*
		 * A copy waits for an old transaction and the stream reached the
		 * table's changes: decode again at the maintenance pace only.
		 */
		if (copy_postponed)
			result->active = false;
	}
	else if (!result->more)
		result->caught_up = true;

	result->written = wr.written;
	result->last_commit = wr.last_commit;
	result->position = cdc_common;
	result->progressed = true;
}
