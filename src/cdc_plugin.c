/*-------------------------------------------------------------------------
 *
 * cdc_plugin.c
 *		The logical decoding output plugin "estream" of change data capture.
 *
 * The output plugin renders every change of a captured table (a row of
 * estream.capture, a user catalog table, read with the historic snapshot
 * of the change) as one JSON line:
 *
 *	{"topic": ..., "relid": ..., "key": {pk columns} | null,
 *	 "value": {"before", "after", "op", "source", "ts_ms"}}
 *
 * The value is a Debezium-style envelope (cdc_envelope.c); column values
 * are rendered as to_jsonb() renders them, but without ever running user
 * code: to_jsonb() would call a user-defined cast to json, a function of
 * the type's owner, and the worker is a superuser.  It works through the
 * SQL interface too (pg_logical_slot_get_changes() on a slot of plugin
 * 'estream').
 *
 * The database worker decodes in process (cdc_apply.c) and registers its
 * writer (EstreamCdcWriter): then the plugin renders only what the writer
 * admits, and hands it the pieces of each event rather than a line of
 * text.  The worker's session uses the origin estream_<oid>, so the plugin
 * drops the worker's own writes.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/cdc_plugin.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/sysattr.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "replication/logical.h"
#include "replication/origin.h"
#include "replication/output_plugin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "cdc_envelope.h"
#include "cdc_plugin.h"

/* what the plugin knows of a relation, for one decoding session */
typedef struct CaptureInfo
{
	Oid			relid;			/* hash key: the changed relation */
	bool		captured;
	Oid			root;			/* captured table (partition root) */
	char	   *topic;
	bool		before;
	int			ncolumns;		/* 0: every column */
	char	  **columns;
	TransactionId capture_xmin; /* transaction that wrote the capture row */
	TimestampTz created_at;		/* which capture of the table */
} CaptureInfo;

typedef struct PluginState
{
	MemoryContext cxt;			/* reset after every change */
	MemoryContext cache_cxt;	/* CaptureInfo */
	HTAB	   *captures;
	EstreamRenderer *renderer;	/* in cache_cxt */
	RepOriginId own_origin;		/* the worker's writes: never decoded */
	char	   *dbname;			/* NULL until looked up */
	MemoryContext ctx_cxt;
} PluginState;

void		_PG_output_plugin_init(OutputPluginCallbacks *cb);

/* the worker's writer, when this backend is a worker that decodes */
static EstreamCdcWriter *worker_writer = NULL;

/*
 * Set when estream.capture changes: a trigger on it sends a relcache
 * invalidation, which decoding replays at the point in WAL where the change
 * committed, so the cache below follows the captures as of each change.
 */
static bool capture_cache_stale = false;
static Oid	capture_table_oid = InvalidOid;

static void
capture_relcache_inval(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == capture_table_oid)
		capture_cache_stale = true;
}

/* called from _PG_init */
void
estream_cdc_plugin_init(void)
{
	CacheRegisterRelcacheCallback(capture_relcache_inval, (Datum) 0);
}

/*
 * The worker registers its writer before it decodes (see
 * EstreamCdcWriter); decoding contexts with that output_writer_private
 * are its.
 */
void
estream_cdc_plugin_set_writer(EstreamCdcWriter *writer)
{
	worker_writer = writer;
}

/* the worker's writer if ctx is the worker's decoding, else NULL */
static EstreamCdcWriter *
writer_of(LogicalDecodingContext *ctx)
{
	if (worker_writer != NULL && ctx->output_writer_private == (void *) worker_writer)
		return worker_writer;
	return NULL;
}

static void
reset_capture_cache(PluginState *st)
{
	HASHCTL		info;

	MemoryContextReset(st->cache_cxt);
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(Oid);
	info.entrysize = sizeof(CaptureInfo);
	info.hcxt = st->cache_cxt;
	st->captures = hash_create("estream captures", 64, &info,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	st->renderer = estream_renderer_create(st->cache_cxt);
	capture_cache_stale = false;
}

static void
plugin_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt, bool is_init)
{
	PluginState *st = palloc0(sizeof(PluginState));
	char		origin[NAMEDATALEN];
	ListCell   *lc;

	foreach(lc, ctx->output_plugin_options)
	{
		DefElem    *elem = lfirst(lc);

		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"%s\" of output plugin \"estream\" is unknown", elem->defname),
				 errdetail("The estream plugin takes no options: estream.capture() says what to capture.")));
	}

	st->cxt = AllocSetContextCreate(ctx->context, "estream change",
									ALLOCSET_DEFAULT_SIZES);
	st->cache_cxt = AllocSetContextCreate(ctx->context, "estream capture cache",
										  ALLOCSET_SMALL_SIZES);
	reset_capture_cache(st);

	/*
	 * Catalog lookups need a transaction, which a walsender does not have
	 * here: the worker's origin and the database name are looked up at the
	 * first change (changes are replayed in a transaction).
	 */
	st->own_origin = InvalidRepOriginId;
	st->dbname = NULL;
	if (IsTransactionState())
	{
		snprintf(origin, sizeof(origin), "estream_%u", MyDatabaseId);
		st->own_origin = replorigin_by_name(origin, true);
		st->dbname = MemoryContextStrdup(ctx->context, get_database_name(MyDatabaseId));
	}
	st->ctx_cxt = ctx->context;

	ctx->output_plugin_private = st;
	opt->output_type = OUTPUT_PLUGIN_TEXTUAL_OUTPUT;
	opt->receive_rewrites = false;
}

static void
plugin_shutdown(LogicalDecodingContext *ctx)
{
}

static bool
plugin_filter_origin(LogicalDecodingContext *ctx, RepOriginId origin_id)
{
	PluginState *st = ctx->output_plugin_private;

	return origin_id != InvalidRepOriginId && origin_id == st->own_origin;
}

static void
plugin_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
}

static void
plugin_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr commit_lsn)
{
	EstreamCdcWriter *w = writer_of(ctx);

	/* the worker needs the end of every transaction that wrote something */
	if (txn->output_plugin_private == NULL)
		return;
	OutputPluginPrepareWrite(ctx, true);
	/* the worker's writer takes the pieces; other readers get a line */
	if (w == NULL)
		appendStringInfo(ctx->out, "{\"commit\": true, \"xid\": %u, \"commit_ts\": \"%s\"}",
						 txn->xid, timestamptz_to_str(txn->xact_time.commit_time));
	else
	{
		w->pieces.kind = PIECE_COMMIT;
		w->pieces.commit_time = txn->xact_time.commit_time;
		w->pieces.xid = txn->xid;
		w->pieces.final_lsn = txn->final_lsn;
		w->pieces.end_lsn = txn->end_lsn;
	}
	OutputPluginWrite(ctx, true);
}

/*
 * The attribute number of a column of estream.capture, by name, in the
 * descriptor of the historic snapshot (0: the column is not there yet).
 */
static AttrNumber
capture_attnum(TupleDesc desc, const char *name)
{
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return att->attnum;
	}
	return InvalidAttrNumber;
}

/* a column of a row of estream.capture: null if the column is missing */
static Datum
capture_getattr(HeapTuple tup, AttrNumber attnum, TupleDesc desc, bool *isnull)
{
	if (attnum == InvalidAttrNumber)
	{
		*isnull = true;
		return (Datum) 0;
	}
	return heap_getattr(tup, attnum, desc, isnull);
}

/*
 * Look up (once per decoding session) whether a relation is captured, in
 * the historic snapshot of the change: a row of estream.capture for the
 * relation or its partition root.
 */
static CaptureInfo *
lookup_capture(PluginState *st, Relation relation)
{
	Oid			relid = RelationGetRelid(relation);
	CaptureInfo *ci;
	bool		found;
	Oid			root = relid;
	Oid			nsp;
	Oid			capture_relid;

	if (st->dbname == NULL)
	{
		char		origin[NAMEDATALEN];

		snprintf(origin, sizeof(origin), "estream_%u", MyDatabaseId);
		st->own_origin = replorigin_by_name(origin, true);
		st->dbname = MemoryContextStrdup(st->ctx_cxt, get_database_name(MyDatabaseId));
	}
	if (capture_cache_stale)
		reset_capture_cache(st);
	ci = hash_search(st->captures, &relid, HASH_ENTER, &found);
	if (found)
		return ci;
	ci->captured = false;
	ci->topic = NULL;
	ci->ncolumns = 0;
	ci->columns = NULL;

	if (relation->rd_rel->relispartition)
	{
		List	   *anc = get_partition_ancestors(relid);

		if (anc != NIL)
			root = llast_oid(anc);
	}
	ci->root = root;

	nsp = get_namespace_oid("estream", true);
	capture_relid = OidIsValid(nsp) ? get_relname_relid("capture", nsp) : InvalidOid;
	capture_table_oid = capture_relid;
	if (OidIsValid(capture_relid))
	{
		Relation	rel = table_open(capture_relid, AccessShareLock);
		SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
		HeapTuple	tup;
		TupleDesc	desc = RelationGetDescr(rel);

		AttrNumber	att_relid = capture_attnum(desc, "relid");
		AttrNumber	att_topic = capture_attnum(desc, "topic");
		AttrNumber	att_before = capture_attnum(desc, "with_before");
		AttrNumber	att_columns = capture_attnum(desc, "columns");
		AttrNumber	att_created_at = capture_attnum(desc, "created_at");

		while ((tup = systable_getnext(scan)) != NULL)
		{
			bool		isnull;
			Datum		d = capture_getattr(tup, att_relid, desc, &isnull);

			if (isnull || DatumGetObjectId(d) != root)
				continue;
			ci->captured = true;
			ci->capture_xmin = HeapTupleHeaderGetXmin(tup->t_data);
			d = capture_getattr(tup, att_created_at, desc, &isnull);
			ci->created_at = isnull ? 0 : DatumGetTimestampTz(d);
			d = capture_getattr(tup, att_topic, desc, &isnull);
			ci->topic = MemoryContextStrdup(st->cache_cxt, TextDatumGetCString(d));
			d = capture_getattr(tup, att_before, desc, &isnull);
			ci->before = isnull ? true : DatumGetBool(d);
			d = capture_getattr(tup, att_columns, desc, &isnull);
			if (!isnull)
			{
				Datum	   *elems;
				bool	   *nulls;
				int			n;
				MemoryContext old = MemoryContextSwitchTo(st->cache_cxt);

				deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false,
								  TYPALIGN_INT, &elems, &nulls, &n);
				ci->columns = palloc(sizeof(char *) * Max(n, 1));
				for (int i = 0; i < n; i++)
					ci->columns[ci->ncolumns++] = TextDatumGetCString(elems[i]);
				MemoryContextSwitchTo(old);
			}
			break;
		}
		systable_endscan(scan);
		table_close(rel, AccessShareLock);
	}
	return ci;
}

/* is the column in the capture's "columns" option (or is there none)? */
static bool
column_wanted(CaptureInfo *ci, const char *name)
{
	return estream_cdc_column_wanted(ci->columns, ci->ncolumns, name);
}

/*
 * A row of an event, in the change context: every wanted column, or only
 * the key columns (only, a set of attnum - FirstLowInvalidHeapAttributeNumber).
 */
static EstreamCdcRow *
event_row(CaptureInfo *ci, Relation relation, HeapTuple tuple, Bitmapset *only)
{
	TupleDesc	desc = RelationGetDescr(relation);
	EstreamCdcRow *row = palloc(sizeof(EstreamCdcRow));
	AttrNumber *atts = palloc(sizeof(AttrNumber) * Max(desc->natts, 1));

	row->natts = 0;
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || att->attnum <= 0)
			continue;
		if (only != NULL &&
			!bms_is_member(att->attnum - FirstLowInvalidHeapAttributeNumber, only))
			continue;
		if (only == NULL && !column_wanted(ci, NameStr(att->attname)))
			continue;
		atts[row->natts++] = att->attnum;
	}
	row->desc = desc;
	row->tuple = tuple;
	row->atts = atts;
	row->decoded = true;
	return row;
}

/* the envelope of a decoded change (see cdc_envelope.c) */
static Jsonb *
envelope(PluginState *st, CaptureInfo *ci, Relation relation, HeapTuple oldtup,
		 HeapTuple newtup, const char *op, ReorderBufferTXN *txn, XLogRecPtr lsn)
{
	EstreamCdcSource source;
	EstreamCdcRow *before = NULL;
	EstreamCdcRow *after = NULL;

	if (oldtup != NULL && ci->before)
		before = event_row(ci, relation, oldtup, NULL);
	if (newtup != NULL)
		after = event_row(ci, relation, newtup, NULL);
	memset(&source, 0, sizeof(source));
	source.dbname = st->dbname;
	source.schema = get_namespace_name(get_rel_namespace(ci->root));
	source.table = get_rel_name(ci->root);
	source.snapshot = false;
	source.xid = txn->xid;
	source.lsn = lsn;
	source.ts_ms = estream_cdc_unix_ms(txn->xact_time.commit_time);
	return estream_cdc_envelope(st->renderer, before, after, op, &source,
								ESTREAM_CDC_TS_NOW);
}

/*
 * Write one event.  The worker's writer takes the pieces as they are; any
 * other reader gets a line of text:
 *
 *	{"topic": ..., "relid": ..., "key": {key columns} | null, "value": envelope}
 */
static void
set_pieces(EstreamCdcWriter *w, ReorderBufferTXN *txn, CaptureInfo *ci,
		   EstreamCdcPieceKind kind)
{
	memset(&w->pieces, 0, sizeof(w->pieces));
	w->pieces.kind = kind;
	w->pieces.relid = ci->root;
	w->pieces.created_at = ci->created_at;
	w->pieces.topic = ci->topic;
	w->pieces.commit_time = txn->xact_time.commit_time;
	w->pieces.xid = txn->xid;
	w->pieces.final_lsn = txn->final_lsn;
	w->pieces.end_lsn = txn->end_lsn;
}

static void
emit_event(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, CaptureInfo *ci,
		   Jsonb *key, Jsonb *value)
{
	EstreamCdcWriter *w = writer_of(ctx);

	/* mark the transaction as having output, for the commit line */
	txn->output_plugin_private = (void *) 1;
	OutputPluginPrepareWrite(ctx, true);
	if (w != NULL)
	{
		set_pieces(w, txn, ci, PIECE_EVENT);
		w->pieces.key = key;
		w->pieces.value = value;
	}
	else
	{
		appendStringInfoString(ctx->out, "{\"topic\": ");
		escape_json(ctx->out, ci->topic);
		appendStringInfo(ctx->out, ", \"relid\": %u, \"key\": ", ci->root);
		if (key != NULL)
			(void) JsonbToCString(ctx->out, &key->root, VARSIZE(key));
		else
			appendStringInfoString(ctx->out, "null");
		appendStringInfoString(ctx->out, ", \"value\": ");
		(void) JsonbToCString(ctx->out, &value->root, VARSIZE(value));
		appendStringInfoChar(ctx->out, '}');
	}
	OutputPluginWrite(ctx, true);
}

/*
 * The worker's writer only: a change it does not want rendered (one that
 * failed to render before, see cdc_apply.c), with the error it gave.
 */
static void
emit_failure(LogicalDecodingContext *ctx, EstreamCdcWriter *w, ReorderBufferTXN *txn,
			 CaptureInfo *ci, const char *error, int sqlerrcode)
{
	txn->output_plugin_private = (void *) 1;
	OutputPluginPrepareWrite(ctx, true);
	set_pieces(w, txn, ci, PIECE_FAILURE);
	w->pieces.error = error;
	w->pieces.sqlerrcode = sqlerrcode;
	OutputPluginWrite(ctx, true);
}

/*
 * Whether to render a change of capture ci at lsn: false if the worker's
 * writer does not want it; if the writer says it failed before, hands the
 * writer that failure and returns false.  Otherwise notes the change as
 * the one being rendered, until render_done().
 */
static bool
render_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, CaptureInfo *ci,
			 XLogRecPtr lsn)
{
	EstreamCdcWriter *w = writer_of(ctx);
	const char *error = NULL;
	int			sqlerrcode = 0;

	if (w == NULL)
		return true;
	switch (w->admit(w, txn, ci->root, ci->created_at, ci->capture_xmin, lsn,
					 &error, &sqlerrcode))
	{
		case ESTREAM_CDC_SKIP:
			return false;
		case ESTREAM_CDC_FAILED:
			emit_failure(ctx, w, txn, ci, error, sqlerrcode);
			return false;
		case ESTREAM_CDC_RENDER:
			break;
	}
	w->rendering.relid = ci->root;
	w->rendering.created_at = ci->created_at;
	w->rendering.lsn = lsn;
	w->rendering.active = true;
	return true;
}

static void
render_done(LogicalDecodingContext *ctx)
{
	EstreamCdcWriter *w = writer_of(ctx);

	if (w != NULL)
		w->rendering.active = false;
}

static void
plugin_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			  Relation relation, ReorderBufferChange *change)
{
	PluginState *st = ctx->output_plugin_private;
	CaptureInfo *ci;
	MemoryContext old;
	HeapTuple	newtup = NULL;
	HeapTuple	oldtup = NULL;
	HeapTuple	keytup;
	Bitmapset  *pk;
	const char *op;
	Jsonb	   *key = NULL;

	ci = lookup_capture(st, relation);
	if (!ci->captured)
		return;
	/* the worker's own writes (when filter_by_origin could not tell yet) */
	if (txn->origin_id != InvalidRepOriginId && txn->origin_id == st->own_origin)
		return;

	switch (change->action)
	{
		case REORDER_BUFFER_CHANGE_INSERT:
			op = "c";
			break;
		case REORDER_BUFFER_CHANGE_UPDATE:
			op = "u";
			break;
		case REORDER_BUFFER_CHANGE_DELETE:
			op = "d";
			break;
		default:
			return;
	}
	if (!render_begin(ctx, txn, ci, change->lsn))
		return;
	old = MemoryContextSwitchTo(st->cxt);
	if (change->data.tp.newtuple != NULL)
		newtup = &change->data.tp.newtuple->tuple;
	if (change->data.tp.oldtuple != NULL)
		oldtup = &change->data.tp.oldtuple->tuple;

	/* key: the key columns (see estream_cdc_key_attnums()), new row or old */
	pk = estream_cdc_key_attnums(relation);
	keytup = newtup ? newtup : oldtup;
	if (pk != NULL && keytup != NULL)
		key = estream_cdc_key(st->renderer, event_row(ci, relation, keytup, pk));

	/*
	 * An update that changes the key is a delete under the old key and a
	 * create under the new one, as in Debezium: each key's partition gets the
	 * end or the start of the row's history.  (Under REPLICA IDENTITY DEFAULT
	 * or USING INDEX the old key is in the WAL only when it changed; under
	 * FULL it always is.)
	 */
	if (change->action == REORDER_BUFFER_CHANGE_UPDATE && key != NULL && oldtup != NULL)
	{
		Jsonb	   *oldkey = estream_cdc_key(st->renderer,
											 event_row(ci, relation, oldtup, pk));

		if (compareJsonbContainers(&oldkey->root, &key->root) != 0)
		{
			emit_event(ctx, txn, ci, oldkey,
					   envelope(st, ci, relation, oldtup, NULL, "d", txn, change->lsn));
			emit_event(ctx, txn, ci, key,
					   envelope(st, ci, relation, NULL, newtup, "c", txn, change->lsn));
			MemoryContextSwitchTo(old);
			MemoryContextReset(st->cxt);
			render_done(ctx);
			return;
		}
	}

	emit_event(ctx, txn, ci, key,
			   envelope(st, ci, relation, oldtup, newtup, op, txn, change->lsn));
	MemoryContextSwitchTo(old);
	MemoryContextReset(st->cxt);
	render_done(ctx);
}

static void
plugin_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
				int nrelations, Relation relations[], ReorderBufferChange *change)
{
	PluginState *st = ctx->output_plugin_private;

	for (int i = 0; i < nrelations; i++)
	{
		CaptureInfo *ci = lookup_capture(st, relations[i]);
		MemoryContext old;

		if (!ci->captured)
			continue;
		if (txn->origin_id != InvalidRepOriginId && txn->origin_id == st->own_origin)
			continue;
		if (!render_begin(ctx, txn, ci, change->lsn))
			continue;
		old = MemoryContextSwitchTo(st->cxt);
		emit_event(ctx, txn, ci, NULL,
				   envelope(st, ci, relations[i], NULL, NULL, "t", txn, change->lsn));
		MemoryContextSwitchTo(old);
		MemoryContextReset(st->cxt);
		render_done(ctx);
	}
}

void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	AssertVariableIsOfType(&_PG_output_plugin_init, LogicalOutputPluginInit);

	cb->startup_cb = plugin_startup;
	cb->begin_cb = plugin_begin;
	cb->change_cb = plugin_change;
	cb->truncate_cb = plugin_truncate;
	cb->commit_cb = plugin_commit;
	cb->filter_by_origin_cb = plugin_filter_origin;
	cb->shutdown_cb = plugin_shutdown;
}
