/*-------------------------------------------------------------------------
 *
 * cdc.c
 *		Change data capture: the logical decoding output plugin "estream"
 *		and the database worker's capture step.
 *
 * The output plugin renders every change of a captured table (a row of
 * estream.capture, a user catalog table, read with the historic snapshot
 * of the change) as one JSON line:
 *
 *	{"topic": ..., "relid": ..., "key": {pk columns} | null,
 *	 "value": {"before", "after", "op", "source", "ts_ms"}}
 *
 * The value is a Debezium-style envelope; column values are rendered by
 * to_jsonb().  It works through the SQL interface too
 * (pg_logical_slot_get_changes() on a slot of plugin 'estream').
 *
 * The worker decodes in process from one slot per database (estream_<oid>)
 * and writes into topics in the same transaction that advances the
 * replication origin estream_<oid> to the end of the last source
 * transaction written (exactly-once: on restart decoding resumes from the
 * origin's progress; the slot is confirmed afterwards).  The worker's
 * session uses that origin, so the plugin drops the worker's own writes.
 *
 * A table captured while the slot already runs needs a cut between its
 * initial copy and the stream.  The worker takes a snapshot S after every
 * transaction that committed before the capture became visible has ended,
 * copies the rows S sees (op "r"), and from then on writes a decoded change
 * only if its transaction is not visible in S.  Every committed change is
 * thus either in the copy or in the stream, never both.  A change of a
 * capture whose copy has not been made yet stops the batch before its
 * transaction; the next run makes the copy and decodes it again.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/cdc.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogutils.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
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
#include "utils/tuplestore.h"
#include "utils/xid8.h"

#include "estream.h"

#define UNAVAILABLE_VALUE "__debezium_unavailable_value"

/* ------------------------------------------------------------------
 * Output plugin
 * ------------------------------------------------------------------
 */

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
} CaptureInfo;

typedef struct PluginState
{
	MemoryContext cxt;			/* reset after every change */
	MemoryContext cache_cxt;	/* CaptureInfo */
	HTAB	   *captures;
	HTAB	   *jsonb_fns;		/* type -> FmgrInfo of to_jsonb */
	RepOriginId own_origin;		/* the worker's writes: never decoded */
	char	   *dbname;			/* NULL until looked up */
	MemoryContext ctx_cxt;
} PluginState;

typedef struct JsonbFn
{
	Oid			typid;
	FmgrInfo	flinfo;
} JsonbFn;

void		_PG_output_plugin_init(OutputPluginCallbacks *cb);

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
estream_cdc_init(void)
{
	CacheRegisterRelcacheCallback(capture_relcache_inval, (Datum) 0);
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
	info.entrysize = sizeof(JsonbFn);
	st->jsonb_fns = hash_create("estream to_jsonb", 64, &info,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
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
	/* the worker needs the end of every transaction that wrote something */
	if (txn->output_plugin_private == NULL)
		return;
	OutputPluginPrepareWrite(ctx, true);
	appendStringInfo(ctx->out, "{\"commit\": true, \"xid\": %u, \"commit_ts\": \"%s\"}",
					 txn->xid, timestamptz_to_str(txn->xact_time.commit_time));
	OutputPluginWrite(ctx, true);
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

		while ((tup = systable_getnext(scan)) != NULL)
		{
			bool		isnull;
			Datum		d = heap_getattr(tup, 1, desc, &isnull);

			if (isnull || DatumGetObjectId(d) != root)
				continue;
			ci->captured = true;
			d = heap_getattr(tup, 2, desc, &isnull);
			ci->topic = MemoryContextStrdup(st->cache_cxt, TextDatumGetCString(d));
			d = heap_getattr(tup, 3, desc, &isnull);
			ci->before = isnull ? true : DatumGetBool(d);
			d = heap_getattr(tup, 4, desc, &isnull);
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

/* render one value with to_jsonb(), exactly as SQL would */
static void
append_jsonb_value(PluginState *st, StringInfo out, Datum value, Oid typid)
{
	JsonbFn    *fn;
	bool		found;
	Jsonb	   *jb;

	fn = hash_search(st->jsonb_fns, &typid, HASH_ENTER, &found);
	if (!found)
	{
		MemoryContext old = MemoryContextSwitchTo(st->cache_cxt);
		FuncExpr   *expr;

		/* to_jsonb(anyelement) finds the argument type in its expression */
		expr = makeFuncExpr(F_TO_JSONB, JSONBOID,
							list_make1(makeNullConst(typid, -1, InvalidOid)),
							InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL);
		fmgr_info_cxt(F_TO_JSONB, &fn->flinfo, st->cache_cxt);
		fmgr_info_set_expr((Node *) expr, &fn->flinfo);
		MemoryContextSwitchTo(old);
	}
	jb = DatumGetJsonbP(FunctionCall1(&fn->flinfo, value));
	(void) JsonbToCString(out, &jb->root, VARSIZE(jb));
}

static bool
column_wanted(CaptureInfo *ci, const char *name)
{
	if (ci->ncolumns == 0)
		return true;
	for (int i = 0; i < ci->ncolumns; i++)
		if (strcmp(ci->columns[i], name) == 0)
			return true;
	return false;
}

/*
 * Append a row as a JSON object: every (wanted) column, or only the key
 * columns.  An unchanged TOASTed value, not in the WAL, becomes the
 * placeholder.
 */
static void
append_row(PluginState *st, StringInfo out, CaptureInfo *ci, Relation relation,
		   HeapTuple tuple, Bitmapset *only)
{
	TupleDesc	desc = RelationGetDescr(relation);
	bool		first = true;

	appendStringInfoChar(out, '{');
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		bool		isnull;
		Datum		value;

		if (att->attisdropped || att->attnum <= 0)
			continue;
		if (only != NULL &&
			!bms_is_member(att->attnum - FirstLowInvalidHeapAttributeNumber, only))
			continue;
		if (only == NULL && !column_wanted(ci, NameStr(att->attname)))
			continue;

		if (!first)
			appendStringInfoString(out, ", ");
		first = false;
		escape_json(out, NameStr(att->attname));
		appendStringInfoString(out, ": ");

		value = heap_getattr(tuple, i + 1, desc, &isnull);
		if (isnull)
			appendStringInfoString(out, "null");
		else if (att->attlen == -1 &&
				 VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(value)))
			escape_json(out, UNAVAILABLE_VALUE);
		else
			append_jsonb_value(st, out, value, att->atttypid);
	}
	appendStringInfoChar(out, '}');
}

static void
append_source(PluginState *st, StringInfo out, ReorderBufferTXN *txn,
			  Oid relid, XLogRecPtr lsn)
{
	appendStringInfoString(out, "\"source\": {\"version\": \"estream-1.3\", \"connector\": \"estream\", \"name\": ");
	escape_json(out, st->dbname);
	appendStringInfoString(out, ", \"db\": ");
	escape_json(out, st->dbname);
	appendStringInfoString(out, ", \"schema\": ");
	escape_json(out, get_namespace_name(get_rel_namespace(relid)));
	appendStringInfoString(out, ", \"table\": ");
	escape_json(out, get_rel_name(relid));
	appendStringInfo(out, ", \"txId\": %u, \"lsn\": " UINT64_FORMAT ", \"ts_ms\": " INT64_FORMAT
					 ", \"snapshot\": \"false\"}",
					 txn->xid, (uint64) lsn,
					 (int64) ((txn->xact_time.commit_time / 1000) +
							  (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000));
}

static void
begin_line(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, CaptureInfo *ci)
{
	/* mark the transaction as having output, for the commit line */
	txn->output_plugin_private = (void *) 1;
	OutputPluginPrepareWrite(ctx, true);
	appendStringInfoString(ctx->out, "{\"topic\": ");
	escape_json(ctx->out, ci->topic);
	appendStringInfo(ctx->out, ", \"relid\": %u, \"key\": ", ci->root);
}

static int64
now_ms(void)
{
	return (int64) (GetCurrentTimestamp() / 1000) +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;
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

	ci = lookup_capture(st, relation);
	if (!ci->captured)
		return;
	/* the worker's own writes (when filter_by_origin could not tell yet) */
	if (txn->origin_id != InvalidRepOriginId && txn->origin_id == st->own_origin)
		return;

	old = MemoryContextSwitchTo(st->cxt);

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
			MemoryContextSwitchTo(old);
			return;
	}
	if (change->data.tp.newtuple != NULL)
		newtup = &change->data.tp.newtuple->tuple;
	if (change->data.tp.oldtuple != NULL)
		oldtup = &change->data.tp.oldtuple->tuple;

	begin_line(ctx, txn, ci);

	/* key: the primary key columns, from the new row or the old key */
	pk = RelationGetIndexAttrBitmap(relation, INDEX_ATTR_BITMAP_PRIMARY_KEY);
	keytup = newtup ? newtup : oldtup;
	if (pk != NULL && keytup != NULL)
		append_row(st, ctx->out, ci, relation, keytup, pk);
	else
		appendStringInfoString(ctx->out, "null");

	appendStringInfoString(ctx->out, ", \"value\": {\"before\": ");
	if (oldtup != NULL && ci->before)
		append_row(st, ctx->out, ci, relation, oldtup, NULL);
	else
		appendStringInfoString(ctx->out, "null");
	appendStringInfoString(ctx->out, ", \"after\": ");
	if (newtup != NULL)
		append_row(st, ctx->out, ci, relation, newtup, NULL);
	else
		appendStringInfoString(ctx->out, "null");
	appendStringInfo(ctx->out, ", \"op\": \"%s\", ", op);
	append_source(st, ctx->out, txn, ci->root, change->lsn);
	appendStringInfo(ctx->out, ", \"ts_ms\": " INT64_FORMAT "}}", now_ms());

	OutputPluginWrite(ctx, true);
	MemoryContextSwitchTo(old);
	MemoryContextReset(st->cxt);
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
		old = MemoryContextSwitchTo(st->cxt);
		begin_line(ctx, txn, ci);
		appendStringInfoString(ctx->out, "null, \"value\": {\"before\": null, \"after\": null, \"op\": \"t\", ");
		append_source(st, ctx->out, txn, ci->root, change->lsn);
		appendStringInfo(ctx->out, ", \"ts_ms\": " INT64_FORMAT "}}", now_ms());
		OutputPluginWrite(ctx, true);
		MemoryContextSwitchTo(old);
		MemoryContextReset(st->cxt);
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

/* ------------------------------------------------------------------
 * The worker's capture step
 * ------------------------------------------------------------------
 */

/* decoded lines of one batch: (end_lsn, xid, commit?, text) */
typedef struct Collector
{
	Tuplestorestate *lines;
	TupleDesc	desc;
	int64		nlines;
	XLogRecPtr	last_commit_end;	/* end of the last complete transaction */
} Collector;

/* a capture as the apply side sees it */
typedef struct CaptureState
{
	Oid			relid;
	bool		active;			/* its copy is made: snapshot known */
	FullTransactionId xmin;
	FullTransactionId xmax;
	int			nxip;
	FullTransactionId *xip;
} CaptureState;

static char slot_name[NAMEDATALEN];
static bool origin_set_up = false;

/*
 * End of the last source transaction handled by a batch that wrote nothing
 * (every change was in a copy): the origin did not move, so the next batch
 * confirms and starts from here.  Lost at a restart, which merely decodes
 * those transactions again.
 */
static XLogRecPtr handled_upto = InvalidXLogRecPtr;

static bool decoded_once = false;
static char saved_log_min_messages[32];

#define CDC_BATCH_LINES 100000
#define CDC_APPLY_CHUNK 1000
#define CDC_APPLY_BYTES (8 * 1024 * 1024)	/* below estream.max_batch_bytes */

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
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	values[0] = LSNGetDatum(lsn);
	values[1] = TransactionIdGetDatum(xid);
	values[2] = PointerGetDatum(cstring_to_text_with_len(ctx->out->data, ctx->out->len));
	tuplestore_putvalues(c->lines, c->desc, values, nulls);
	c->nlines++;
	/* a commit line: lsn is the end of the transaction */
	if (strncmp(ctx->out->data, "{\"commit\"", 9) == 0)
		c->last_commit_end = lsn;
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
 * Make the copy of a capture that has none yet: wait until every
 * transaction that could have committed before the capture became visible
 * has ended, take snapshot S in a REPEATABLE READ transaction, copy what S
 * sees, record S.
 */
static void
activate_capture(Oid relid)
{
	Snapshot	snap;
	TransactionId *xids;
	int			nxids;
	Datum		args[1];
	Oid			argtypes[1] = {OIDOID};

	begin_xact();
	snap = GetLatestSnapshot();
	nxids = snap->xcnt;
	xids = palloc(sizeof(TransactionId) * Max(nxids, 1));
	memcpy(xids, snap->xip, sizeof(TransactionId) * nxids);
	for (int i = 0; i < nxids; i++)
		XactLockTableWait(xids[i], NULL, NULL, XLTW_None);
	end_xact();

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	XactIsoLevel = XACT_REPEATABLE_READ;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	args[0] = ObjectIdGetDatum(relid);
	if (SPI_execute_with_args("SELECT estream._capture_activate($1)", 1, argtypes,
							  args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not make the initial copy of relation %u", relid);
	end_xact();
}

static List *
load_captures(bool *any_pending)
{
	List	   *result = NIL;
	MemoryContext outer = CurrentMemoryContext;

	*any_pending = false;
	if (SPI_execute("SELECT relid, snapshot::text, initial_snapshot FROM estream.capture",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read estream.capture");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		MemoryContext old = MemoryContextSwitchTo(outer);
		CaptureState *cs = palloc0(sizeof(CaptureState));
		char	   *snaptext;

		cs->relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		snaptext = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull)))
		{
			/*
			 * No initial copy: every change the plugin emits (those that
			 * committed once the capture was visible) goes to the topic.
			 */
			cs->active = true;
			cs->xmin = cs->xmax = FullTransactionIdFromU64(0);
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
		else
			*any_pending = true;
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

static Oid
line_relid(const char *line)
{
	const char *p = strstr(line, "\"relid\": ");

	return p ? (Oid) strtoul(p + 9, NULL, 10) : InvalidOid;
}

static void
apply_chunk(Datum *chunk, int n)
{
	ArrayType  *arr;
	Datum		args[1];
	Oid			argtypes[1] = {TEXTARRAYOID};

	if (n == 0)
		return;
	arr = construct_array(chunk, n, TEXTOID, -1, false, TYPALIGN_INT);
	args[0] = PointerGetDatum(arr);
	if (SPI_execute_with_args("SELECT estream._cdc_apply($1)", 1, argtypes, args,
							  NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not write captured changes");
}

/*
 * One capture step of the worker.  Returns the number of change events
 * written.  Runs its own transactions.
 */
int64
estream_cdc_run(void)
{
	int64		ncaptures;
	bool		slot_exists;
	RepOriginId origin;
	char		origin_name[NAMEDATALEN];
	List	   *caps;
	bool		any_pending;
	Collector	coll;
	MemoryContext batch_cxt;
	MemoryContext old;
	XLogRecPtr	start;
	XLogRecPtr	end_of_wal;
	volatile int64 written = 0;
	TupleDesc	desc;

	snprintf(slot_name, sizeof(slot_name), "estream_%u", MyDatabaseId);
	snprintf(origin_name, sizeof(origin_name), "estream_%u", MyDatabaseId);
	if (saved_log_min_messages[0] == '\0')
		strlcpy(saved_log_min_messages, GetConfigOption("log_min_messages", false, false),
				sizeof(saved_log_min_messages));

	begin_xact();
	ncaptures = spi_int8("SELECT count(*) FROM estream.capture");
	slot_exists = spi_int8(psprintf("SELECT count(*) FROM pg_catalog.pg_replication_slots"
									" WHERE slot_name = '%s'", slot_name)) > 0;
	end_xact();

	if (ncaptures == 0)
	{
		/* uncapturing the last table drops the slot: WAL is not kept */
		if (slot_exists)
		{
			if (origin_set_up)
			{
				replorigin_session_reset();
				replorigin_session_origin = InvalidRepOriginId;
				origin_set_up = false;
			}
			begin_xact();
			SPI_execute(psprintf("SELECT pg_catalog.pg_drop_replication_slot('%s')", slot_name),
						false, 0);
			SPI_execute(psprintf("SELECT pg_catalog.pg_replication_origin_drop('%s')"
								 " FROM pg_catalog.pg_replication_origin WHERE roname = '%s'",
								 origin_name, origin_name), false, 0);
			end_xact();
		}
		return 0;
	}

	if (wal_level < WAL_LEVEL_LOGICAL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("change data capture needs wal_level = logical"),
				 errhint("Set wal_level = logical and restart the server.")));

	/* the origin first: the plugin drops the changes made under it */
	begin_xact();
	origin = replorigin_by_name(origin_name, true);
	if (origin == InvalidRepOriginId)
		origin = replorigin_create(origin_name);
	end_xact();
	if (!origin_set_up)
	{
		begin_xact();
		replorigin_session_setup(origin);
		end_xact();
		replorigin_session_origin = origin;
		origin_set_up = true;
	}

	if (!slot_exists)
	{
		/* in a transaction that has written nothing */
		begin_xact();
		if (SPI_execute(psprintf("SELECT pg_catalog.pg_create_logical_replication_slot('%s', 'estream')",
								 slot_name), false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not create replication slot \"%s\"", slot_name);
		end_xact();
	}

	/* copies of new captures, before decoding */
	begin_xact();
	old = MemoryContextSwitchTo(TopTransactionContext);
	caps = load_captures(&any_pending);
	MemoryContextSwitchTo(old);
	if (any_pending)
	{
		List	   *pending = NIL;
		ListCell   *lc;

		old = MemoryContextSwitchTo(TopMemoryContext);
		foreach(lc, caps)
		{
			CaptureState *cs = lfirst(lc);

			if (!cs->active)
				pending = lappend_oid(pending, cs->relid);
		}
		MemoryContextSwitchTo(old);
		end_xact();
		foreach(lc, pending)
			activate_capture(lfirst_oid(lc));
		list_free(pending);
	}
	else
		end_xact();

	/*
	 * Decode and write in one transaction: whatever it writes commits with
	 * the origin's progress, or not at all.
	 */
	batch_cxt = AllocSetContextCreate(TopMemoryContext, "estream capture batch",
									  ALLOCSET_DEFAULT_SIZES);
	begin_xact();
	old = MemoryContextSwitchTo(TopTransactionContext);
	caps = load_captures(&any_pending);
	MemoryContextSwitchTo(old);

	desc = CreateTemplateTupleDesc(3);
	TupleDescInitEntry(desc, 1, "lsn", PG_LSNOID, -1, 0);
	TupleDescInitEntry(desc, 2, "xid", XIDOID, -1, 0);
	TupleDescInitEntry(desc, 3, "line", TEXTOID, -1, 0);
	coll.desc = desc;
	coll.lines = tuplestore_begin_heap(false, false, work_mem);
	coll.nlines = 0;
	coll.last_commit_end = InvalidXLogRecPtr;

	ReplicationSlotAcquire(slot_name, true);
	PG_TRY();
	{
		LogicalDecodingContext *ctx;
		XLogRecPtr	progress = replorigin_session_get_progress(false);

		if (handled_upto > progress)
			progress = handled_upto;

		/*
		 * Starting to decode logs two LOG lines; at every run that is noise:
		 * only the first start of a worker is logged.
		 */
		if (decoded_once)
			SetConfigOption("log_min_messages", "fatal", PGC_SUSET, PGC_S_SESSION);
		ctx = CreateDecodingContext(progress, NIL, false,
									XL_ROUTINE(.page_read = read_local_xlog_page,
											   .segment_open = wal_segment_open,
											   .segment_close = wal_segment_close),
									cdc_prepare_write, cdc_write, NULL);
		if (decoded_once)
			SetConfigOption("log_min_messages", saved_log_min_messages, PGC_SUSET, PGC_S_SESSION);
		decoded_once = true;
		ctx->output_writer_private = &coll;

		/* what the last batch wrote is durable now: WAL before it can go */
		if (progress != InvalidXLogRecPtr &&
			progress > MyReplicationSlot->data.confirmed_flush)
			LogicalConfirmReceivedLocation(progress);

		start = MyReplicationSlot->data.restart_lsn;
		end_of_wal = GetFlushRecPtr(NULL);
		XLogBeginRead(ctx->reader, start);
		while (ctx->reader->EndRecPtr < end_of_wal)
		{
			XLogRecord *record;
			char	   *errm = NULL;

			record = XLogReadRecord(ctx->reader, &errm);
			if (errm)
				elog(ERROR, "could not read WAL for capture: %s", errm);
			if (record != NULL)
				LogicalDecodingProcessRecord(ctx, ctx->reader);
			if (coll.nlines >= CDC_BATCH_LINES)
				break;
			CHECK_FOR_INTERRUPTS();
		}

		/* nothing for us in what was read: the source is idle, move on */
		if (coll.nlines == 0 && ctx->reader->EndRecPtr != InvalidXLogRecPtr &&
			ctx->reader->EndRecPtr > MyReplicationSlot->data.confirmed_flush)
		{
			LogicalConfirmReceivedLocation(ctx->reader->EndRecPtr);
			ReplicationSlotMarkDirty();
		}
		FreeDecodingContext(ctx);
	}
	PG_FINALLY();
	{
		if (decoded_once)
			SetConfigOption("log_min_messages", saved_log_min_messages, PGC_SUSET, PGC_S_SESSION);
		ReplicationSlotRelease();
	}
	PG_END_TRY();
	InvalidateSystemCaches();

	/* write: source transactions in commit order, cut at a pending copy */
	{
		TupleTableSlot *slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
		Datum	   *chunk = MemoryContextAlloc(batch_cxt, sizeof(Datum) * CDC_APPLY_CHUNK);
		int			nchunk = 0;
		Size		chunk_bytes = 0;
		List	   *txn_lines = NIL;	/* lines of the current source xact */
		XLogRecPtr	applied = InvalidXLogRecPtr;
		TimestampTz applied_ts = 0;
		bool		stop = false;

		while (!stop && tuplestore_gettupleslot(coll.lines, true, false, slot))
		{
			bool		isnull;
			XLogRecPtr	lsn = DatumGetLSN(slot_getattr(slot, 1, &isnull));
			TransactionId xid = DatumGetTransactionId(slot_getattr(slot, 2, &isnull));
			text	   *line = DatumGetTextPP(slot_getattr(slot, 3, &isnull));
			char	   *s = text_to_cstring(line);

			if (strncmp(s, "{\"commit\"", 9) != 0)
			{
				CaptureState *cs = find_capture(caps, line_relid(s));

				if (cs == NULL)
					continue;	/* uncaptured since */
				if (!cs->active)
				{
					stop = true;	/* its copy first, at the next run */
					break;
				}
				if (visible_in_copy(cs, xid))
					continue;	/* in the copy already */
				old = MemoryContextSwitchTo(batch_cxt);
				txn_lines = lappend(txn_lines, cstring_to_text(s));
				MemoryContextSwitchTo(old);
				continue;
			}

			/* end of a source transaction: write its changes */
			{
				ListCell   *lc;
				char	   *ts = strstr(s, "\"commit_ts\": \"");

				foreach(lc, txn_lines)
				{
					chunk[nchunk++] = PointerGetDatum(lfirst(lc));
					chunk_bytes += VARSIZE_ANY(lfirst(lc));
					if (nchunk == CDC_APPLY_CHUNK || chunk_bytes >= CDC_APPLY_BYTES)
					{
						apply_chunk(chunk, nchunk);
						nchunk = 0;
						chunk_bytes = 0;
					}
					written++;
				}
				list_free(txn_lines);
				txn_lines = NIL;
				applied = lsn;
				if (ts != NULL)
				{
					char	   *q = pstrdup(ts + 14);
					char	   *e = strchr(q, '"');

					if (e)
						*e = '\0';
					applied_ts = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
																		 CStringGetDatum(q),
																		 ObjectIdGetDatum(InvalidOid),
																		 Int32GetDatum(-1)));
				}
			}
		}
		apply_chunk(chunk, nchunk);
		ExecDropSingleTupleTableSlot(slot);

		if (applied != InvalidXLogRecPtr && written > 0)
		{
			replorigin_session_origin_lsn = applied;
			replorigin_session_origin_timestamp = applied_ts;
		}
		else if (applied != InvalidXLogRecPtr)
			handled_upto = applied;
		tuplestore_end(coll.lines);
		end_xact();
		replorigin_session_origin_lsn = InvalidXLogRecPtr;
		replorigin_session_origin_timestamp = 0;
		if (applied_ts != 0)
			estream_worker_cdc_progress(applied_ts);
	}
	MemoryContextDelete(batch_cxt);
	return written;
}
