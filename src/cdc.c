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
 * The value is a Debezium-style envelope; column values are rendered as
 * to_jsonb() renders them, but without ever running user code: to_jsonb()
 * would call a user-defined cast to json, a function of the type's owner,
 * and the worker is a superuser (see "Rendering values" below).  It works
 * through the SQL interface too (pg_logical_slot_get_changes() on a slot
 * of plugin 'estream').
 *
 * The worker decodes in process from one slot per database (estream_<oid>)
 * and writes into topics.  Every capture has a position: every source
 * transaction whose commit record ends at or before it is written for that
 * capture, none after it.  The captures that stream share one position, the
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
 * A capture's failure stays its own.  The plugin renders only what the
 * worker wants (collector_admits()); the worker writes each topic's events
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
 *		src/cdc.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
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
#include "cdc.h"
#include "schema.h"

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
	TransactionId capture_xmin; /* transaction that wrote the capture row */
	TimestampTz created_at;		/* which capture of the table */
} CaptureInfo;

/* renders values without user code: see "Rendering values" below */
typedef struct ValueRenderer ValueRenderer;

typedef struct PluginState
{
	MemoryContext cxt;			/* reset after every change */
	MemoryContext cache_cxt;	/* CaptureInfo */
	HTAB	   *captures;
	ValueRenderer *renderer;	/* in cache_cxt */
	RepOriginId own_origin;		/* the worker's writes: never decoded */
	char	   *dbname;			/* NULL until looked up */
	MemoryContext ctx_cxt;
} PluginState;

void		_PG_output_plugin_init(OutputPluginCallbacks *cb);

/*
 * The pieces of the line being written, for the worker's writer callback,
 * which stores them as they are: the topic, the key (or none) and the value
 * (the envelope) of an event; a change that could not be rendered (the
 * error instead of the event); or the end of a transaction.
 */
typedef enum PieceKind
{
	PIECE_EVENT,
	PIECE_FAILURE,
	PIECE_COMMIT
} PieceKind;

typedef struct LinePieces
{
	PieceKind	kind;
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
} LinePieces;

static LinePieces pieces;

/*
 * Changes that cannot be rendered.  An error while the plugin renders a
 * change of a capture aborts the whole decoding run (the reorder buffer
 * does not survive it), so the worker remembers the change (rendering_now)
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

static struct
{
	bool		active;			/* the plugin renders this change now */
	Oid			relid;
	TimestampTz created_at;
	XLogRecPtr	lsn;
} rendering_now;

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

static ValueRenderer *renderer_create(MemoryContext cxt);

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
	st->renderer = renderer_create(st->cache_cxt);
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

static void cdc_write(LogicalDecodingContext *ctx, XLogRecPtr lsn, TransactionId xid,
					  bool last_write);

static void
plugin_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr commit_lsn)
{
	/* the worker needs the end of every transaction that wrote something */
	if (txn->output_plugin_private == NULL)
		return;
	OutputPluginPrepareWrite(ctx, true);
	/* the worker's writer takes the pieces; other readers get a line */
	if (ctx->write != cdc_write)
		appendStringInfo(ctx->out, "{\"commit\": true, \"xid\": %u, \"commit_ts\": \"%s\"}",
						 txn->xid, timestamptz_to_str(txn->xact_time.commit_time));
	pieces.kind = PIECE_COMMIT;
	pieces.commit_time = txn->xact_time.commit_time;
	pieces.xid = txn->xid;
	pieces.final_lsn = txn->final_lsn;
	pieces.end_lsn = txn->end_lsn;
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

/*
 * Events are built as jsonb (the type of a topic's records): the worker
 * stores them as they are, the SQL interface and walsenders get their text.
 */
static void
push_key(JsonbParseState **ps, const char *key)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = (char *) key;
	v.val.string.len = strlen(key);
	(void) pushJsonbValue(ps, WJB_KEY, &v);
}

static void
push_string(JsonbParseState **ps, const char *str)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = (char *) str;
	v.val.string.len = strlen(str);
	(void) pushJsonbValue(ps, WJB_VALUE, &v);
}

static void
push_int(JsonbParseState **ps, int64 i)
{
	JsonbValue	v;

	v.type = jbvNumeric;
	v.val.numeric = int64_to_numeric(i);
	(void) pushJsonbValue(ps, WJB_VALUE, &v);
}

static void
push_null(JsonbParseState **ps)
{
	JsonbValue	v;

	v.type = jbvNull;
	(void) pushJsonbValue(ps, WJB_VALUE, &v);
}

/* ------------------------------------------------------------------
 * Rendering values without running user code
 * ------------------------------------------------------------------
 */

/*
 * Column values and key values are rendered as to_jsonb() renders them,
 * except that no user-defined function ever runs.  For a user-defined type
 * (OID >= FirstNormalObjectId after looking through domains), to_jsonb()
 * calls the type's cast to json if there is one (jsonb_categorize_type() in
 * jsonb.c), and whoever owns the type can CREATE CAST ... WITH FUNCTION an
 * SQL or PL/pgSQL function of their own: a user-defined cast is user code.
 * The worker decodes and copies as a superuser, so the owner of a captured
 * table would have that function run with superuser rights (COPY ... TO
 * PROGRAM, ALTER ROLE ... SUPERUSER).  Hence, by the type's base type:
 *
 *	- built-in (below FirstNormalObjectId) and not a pseudo-type: to_jsonb(),
 *	  which looks up casts only for user-defined types; the elements of a
 *	  built-in array type and the attributes of a built-in composite type are
 *	  built-in too.
 *	- an array of anything else: a JSON array, element by element, nested
 *	  per dimension; null elements are null, an empty array is [].
 *	- a composite type (a table's row type, a domain over one): an object,
 *	  attribute by attribute, dropped attributes skipped.
 *	- anything else (enum, range, multirange, an extension's base type): the
 *	  type's output function, as a JSON string.  Non-superusers can only
 *	  create types whose output functions are built-in (enum_out,
 *	  range_out, ...); base types with functions of their own take a
 *	  superuser.
 *
 * Pseudo-types, which tables cannot have, go by the value itself (anyarray
 * as an array, record as a composite).  The result is byte for byte what
 * to_jsonb() gives whenever no user-defined cast to json exists; when one
 * exists it is ignored, as if it did not.  Nothing here depends on the
 * current user, so the same rendering serves decoding and the initial copy.
 */
typedef enum RenderKind
{
	RENDER_TO_JSONB,			/* built-in type: to_jsonb() */
	RENDER_ARRAY,				/* element by element */
	RENDER_COMPOSITE,			/* attribute by attribute */
	RENDER_OUTPUT				/* the output function, as a string */
} RenderKind;

typedef struct RenderType
{
	Oid			typid;			/* hash key */
	RenderKind	kind;
	int16		typlen;			/* for arrays of this type */
	bool		typbyval;
	char		typalign;
	FmgrInfo	flinfo;			/* to_jsonb() or the output function */
} RenderType;

struct ValueRenderer
{
	MemoryContext cxt;			/* the entries and their functions' state */
	HTAB	   *types;			/* type -> RenderType */
};

static void render_value(ValueRenderer *vr, JsonbParseState **ps,
						 JsonbIteratorToken seq, Datum value, Oid typid);

/* a renderer whose type cache lives (and dies) in cxt */
static ValueRenderer *
renderer_create(MemoryContext cxt)
{
	ValueRenderer *vr = MemoryContextAlloc(cxt, sizeof(ValueRenderer));
	HASHCTL		info;

	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(Oid);
	info.entrysize = sizeof(RenderType);
	info.hcxt = cxt;
	vr->cxt = cxt;
	vr->types = hash_create("estream value rendering", 64, &info,
							HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	return vr;
}

/*
 * How values of a type are rendered, looked up once per renderer.  The
 * entry is entered only once complete, so an error leaves no half-made one.
 */
static RenderType *
render_type(ValueRenderer *vr, Oid typid)
{
	RenderType *entry;
	RenderType	rt;
	Oid			base;

	entry = hash_search(vr->types, &typid, HASH_FIND, NULL);
	if (entry != NULL)
		return entry;

	memset(&rt, 0, sizeof(rt));
	rt.typid = typid;
	get_typlenbyvalalign(typid, &rt.typlen, &rt.typbyval, &rt.typalign);
	base = getBaseType(typid);
	if (base < FirstNormalObjectId && get_typtype(base) != TYPTYPE_PSEUDO)
	{
		MemoryContext old = MemoryContextSwitchTo(vr->cxt);
		FuncExpr   *expr;

		/* to_jsonb(anyelement) finds the argument type in its expression */
		expr = makeFuncExpr(F_TO_JSONB, JSONBOID,
							list_make1(makeNullConst(typid, -1, InvalidOid)),
							InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL);
		fmgr_info_cxt(F_TO_JSONB, &rt.flinfo, vr->cxt);
		fmgr_info_set_expr((Node *) expr, &rt.flinfo);
		MemoryContextSwitchTo(old);
		rt.kind = RENDER_TO_JSONB;
	}
	else if (OidIsValid(get_element_type(base)) ||
			 base == ANYARRAYOID || base == ANYCOMPATIBLEARRAYOID)
		rt.kind = RENDER_ARRAY;
	else if (type_is_rowtype(base))
		rt.kind = RENDER_COMPOSITE;
	else
	{
		Oid			outfn;
		bool		isvarlena;

		getTypeOutputInfo(base, &outfn, &isvarlena);
		fmgr_info_cxt(outfn, &rt.flinfo, vr->cxt);
		rt.kind = RENDER_OUTPUT;
	}
	entry = hash_search(vr->types, &typid, HASH_ENTER, NULL);
	*entry = rt;
	return entry;
}

/* one dimension of an array: nested JSON arrays, as to_jsonb() makes them */
static void
render_array_dim(ValueRenderer *vr, JsonbParseState **ps, int dim, int ndim,
				 int *dims, Datum *elems, bool *nulls, int *next, Oid elemtype)
{
	(void) pushJsonbValue(ps, WJB_BEGIN_ARRAY, NULL);
	for (int i = 0; i < dims[dim]; i++)
	{
		if (dim + 1 < ndim)
			render_array_dim(vr, ps, dim + 1, ndim, dims, elems, nulls, next,
							 elemtype);
		else
		{
			if (nulls[*next])
			{
				JsonbValue	v;

				v.type = jbvNull;
				(void) pushJsonbValue(ps, WJB_ELEM, &v);
			}
			else
				render_value(vr, ps, WJB_ELEM, elems[*next], elemtype);
			(*next)++;
		}
	}
	(void) pushJsonbValue(ps, WJB_END_ARRAY, NULL);
}

static void
render_array(ValueRenderer *vr, JsonbParseState **ps, ArrayType *arr)
{
	Oid			elemtype = ARR_ELEMTYPE(arr);
	int			ndim = ARR_NDIM(arr);
	int		   *dims = ARR_DIMS(arr);
	int			nitems = ArrayGetNItems(ndim, dims);
	RenderType *et;
	Datum	   *elems;
	bool	   *nulls;
	int			next = 0;

	if (nitems <= 0)
	{
		(void) pushJsonbValue(ps, WJB_BEGIN_ARRAY, NULL);
		(void) pushJsonbValue(ps, WJB_END_ARRAY, NULL);
		return;
	}
	et = render_type(vr, elemtype);
	deconstruct_array(arr, elemtype, et->typlen, et->typbyval, et->typalign,
					  &elems, &nulls, &nitems);
	render_array_dim(vr, ps, 0, ndim, dims, elems, nulls, &next, elemtype);
	pfree(elems);
	pfree(nulls);
}

static void
render_composite(ValueRenderer *vr, JsonbParseState **ps, HeapTupleHeader td)
{
	TupleDesc	desc = lookup_rowtype_tupdesc(HeapTupleHeaderGetTypeId(td),
											  HeapTupleHeaderGetTypMod(td));
	HeapTupleData tuple;

	tuple.t_len = HeapTupleHeaderGetDatumLength(td);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = td;

	(void) pushJsonbValue(ps, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		Datum		value;
		bool		isnull;

		if (att->attisdropped)
			continue;
		push_key(ps, NameStr(att->attname));
		value = heap_getattr(&tuple, i + 1, desc, &isnull);
		if (isnull)
			push_null(ps);
		else
			render_value(vr, ps, WJB_VALUE, value, att->atttypid);
	}
	(void) pushJsonbValue(ps, WJB_END_OBJECT, NULL);
	ReleaseTupleDesc(desc);
}

/*
 * Push a (non-null) value of type typid as an object's value (seq
 * WJB_VALUE) or an array's element (WJB_ELEM).  See above: no user code.
 */
static void
render_value(ValueRenderer *vr, JsonbParseState **ps, JsonbIteratorToken seq,
			 Datum value, Oid typid)
{
	RenderType *rt;
	JsonbValue	v;

	check_stack_depth();
	rt = render_type(vr, typid);
	switch (rt->kind)
	{
		case RENDER_TO_JSONB:
			{
				Jsonb	   *jb = DatumGetJsonbP(FunctionCall1(&rt->flinfo, value));

				if (JB_ROOT_IS_SCALAR(jb))
					(void) JsonbExtractScalar(&jb->root, &v);
				else
				{
					v.type = jbvBinary;
					v.val.binary.data = &jb->root;
					v.val.binary.len = VARSIZE(jb) - VARHDRSZ;
				}
				(void) pushJsonbValue(ps, seq, &v);
			}
			break;
		case RENDER_ARRAY:
			render_array(vr, ps, DatumGetArrayTypeP(value));
			break;
		case RENDER_COMPOSITE:
			render_composite(vr, ps, DatumGetHeapTupleHeader(value));
			break;
		case RENDER_OUTPUT:
			{
				char	   *str = OutputFunctionCall(&rt->flinfo, value);
				size_t		len = strlen(str);

				/* as to_jsonb() says it */
				if (len > JENTRY_OFFLENMASK)
					ereport(ERROR,
							(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
							 errmsg("string too long to represent as jsonb string"),
							 errdetail("Due to an implementation restriction, jsonb strings cannot exceed %d bytes.",
									   JENTRY_OFFLENMASK)));
				v.type = jbvString;
				v.val.string.val = str;
				v.val.string.len = len;
				(void) pushJsonbValue(ps, seq, &v);
			}
			break;
	}
}

/* is the column in the capture's "columns" option (or is there none)? */
static bool
name_wanted(char **names, int nnames, const char *name)
{
	if (nnames == 0)
		return true;
	for (int i = 0; i < nnames; i++)
		if (strcmp(names[i], name) == 0)
			return true;
	return false;
}

static bool
column_wanted(CaptureInfo *ci, const char *name)
{
	return name_wanted(ci->columns, ci->ncolumns, name);
}

/*
 * Push a row as a JSON object: every (wanted) column, or only the key
 * columns.  An unchanged TOASTed value, not in the WAL, becomes the
 * placeholder.
 */
static JsonbValue *
push_row(PluginState *st, JsonbParseState **ps, CaptureInfo *ci, Relation relation,
		 HeapTuple tuple, Bitmapset *only)
{
	TupleDesc	desc = RelationGetDescr(relation);

	(void) pushJsonbValue(ps, WJB_BEGIN_OBJECT, NULL);
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

		push_key(ps, NameStr(att->attname));
		value = heap_getattr(tuple, i + 1, desc, &isnull);
		if (isnull)
			push_null(ps);
		else if (att->attlen == -1 &&
				 VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(value)))
			push_string(ps, UNAVAILABLE_VALUE);
		else
			render_value(st->renderer, ps, WJB_VALUE, value, att->atttypid);
	}
	return pushJsonbValue(ps, WJB_END_OBJECT, NULL);
}

static int64
to_unix_ms(TimestampTz ts)
{
	return (int64) (ts / 1000) +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;
}

/* the envelope: before, after, op, source, ts_ms */
static Jsonb *
envelope(PluginState *st, CaptureInfo *ci, Relation relation, HeapTuple oldtup,
		 HeapTuple newtup, const char *op, ReorderBufferTXN *txn, XLogRecPtr lsn)
{
	JsonbParseState *ps = NULL;
	JsonbValue *res;

	(void) pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	push_key(&ps, "before");
	if (oldtup != NULL && ci->before)
		(void) push_row(st, &ps, ci, relation, oldtup, NULL);
	else
		push_null(&ps);
	push_key(&ps, "after");
	if (newtup != NULL)
		(void) push_row(st, &ps, ci, relation, newtup, NULL);
	else
		push_null(&ps);
	push_key(&ps, "op");
	push_string(&ps, op);

	push_key(&ps, "source");
	(void) pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	push_key(&ps, "version");
	push_string(&ps, "estream-1.3");
	push_key(&ps, "connector");
	push_string(&ps, "estream");
	push_key(&ps, "name");
	push_string(&ps, st->dbname);
	push_key(&ps, "db");
	push_string(&ps, st->dbname);
	push_key(&ps, "schema");
	push_string(&ps, get_namespace_name(get_rel_namespace(ci->root)));
	push_key(&ps, "table");
	push_string(&ps, get_rel_name(ci->root));
	push_key(&ps, "txId");
	push_int(&ps, txn->xid);
	push_key(&ps, "lsn");
	push_int(&ps, (int64) lsn);
	push_key(&ps, "ts_ms");
	push_int(&ps, to_unix_ms(txn->xact_time.commit_time));
	push_key(&ps, "snapshot");
	push_string(&ps, "false");
	(void) pushJsonbValue(&ps, WJB_END_OBJECT, NULL);

	push_key(&ps, "ts_ms");
	push_int(&ps, to_unix_ms(GetCurrentTimestamp()));
	res = pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/*
 * Write one event.  The worker's writer takes the pieces as they are; any
 * other reader gets a line of text:
 *
 *	{"topic": ..., "relid": ..., "key": {key columns} | null, "value": envelope}
 */
static void
set_pieces(ReorderBufferTXN *txn, CaptureInfo *ci, PieceKind kind)
{
	memset(&pieces, 0, sizeof(pieces));
	pieces.kind = kind;
	pieces.relid = ci->root;
	pieces.created_at = ci->created_at;
	pieces.topic = ci->topic;
	pieces.commit_time = txn->xact_time.commit_time;
	pieces.xid = txn->xid;
	pieces.final_lsn = txn->final_lsn;
	pieces.end_lsn = txn->end_lsn;
}

static void
emit_event(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, CaptureInfo *ci,
		   Jsonb *key, Jsonb *value)
{
	/* mark the transaction as having output, for the commit line */
	txn->output_plugin_private = (void *) 1;
	OutputPluginPrepareWrite(ctx, true);
	set_pieces(txn, ci, PIECE_EVENT);
	pieces.key = key;
	pieces.value = value;
	if (ctx->write != cdc_write)
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
 * The worker's writer only: a poisoned change, not rendered (see
 * PoisonedChange), with the error it gave.
 */
static void
emit_failure(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, CaptureInfo *ci,
			 PoisonedChange *pc)
{
	txn->output_plugin_private = (void *) 1;
	OutputPluginPrepareWrite(ctx, true);
	set_pieces(txn, ci, PIECE_FAILURE);
	pieces.error = pc->message;
	pieces.sqlerrcode = pc->sqlerrcode;
	OutputPluginWrite(ctx, true);
}

/*
 * Whether to render a change of capture ci at lsn: false if the worker
 * does not want it (see collector_admits()); if it is poisoned, hands the
 * worker its error and returns false.  Otherwise notes the change as the
 * one being rendered, until render_done().
 */
static bool collector_admits(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
							 CaptureInfo *ci);

static bool
render_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, CaptureInfo *ci,
			 XLogRecPtr lsn)
{
	PoisonedChange *pc;

	if (ctx->write != cdc_write)
		return true;
	if (!collector_admits(ctx, txn, ci))
		return false;
	pc = find_poisoned(ci->root, ci->created_at, lsn);
	if (pc != NULL && pc->failures >= 2)
	{
		emit_failure(ctx, txn, ci, pc);
		return false;
	}
	rendering_now.relid = ci->root;
	rendering_now.created_at = ci->created_at;
	rendering_now.lsn = lsn;
	rendering_now.active = true;
	return true;
}

static void
render_done(void)
{
	rendering_now.active = false;
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

	/*
	 * key: the primary key columns, from the new row or the old key.  A
	 * delete carries only the replica identity's columns: with REPLICA
	 * IDENTITY USING INDEX on an index that does not cover the primary key,
	 * that index's columns are the key of every event, so that all events
	 * of a row still go to one partition.
	 */
	pk = RelationGetIndexAttrBitmap(relation, INDEX_ATTR_BITMAP_PRIMARY_KEY);
	if (relation->rd_rel->relreplident == REPLICA_IDENTITY_INDEX)
	{
		Bitmapset  *ident = RelationGetIndexAttrBitmap(relation,
													   INDEX_ATTR_BITMAP_IDENTITY_KEY);

		if (ident != NULL && (pk == NULL || !bms_is_subset(pk, ident)))
			pk = ident;
	}
	keytup = newtup ? newtup : oldtup;
	if (pk != NULL && keytup != NULL)
	{
		JsonbParseState *ps = NULL;

		key = JsonbValueToJsonb(push_row(st, &ps, ci, relation, keytup, pk));
	}

	/*
	 * An update that changes the key is a delete under the old key and a
	 * create under the new one, as in Debezium: each key's partition gets
	 * the end or the start of the row's history.  (Under REPLICA IDENTITY
	 * DEFAULT or USING INDEX the old key is in the WAL only when it
	 * changed; under FULL it always is.)
	 */
	if (change->action == REORDER_BUFFER_CHANGE_UPDATE && key != NULL && oldtup != NULL)
	{
		JsonbParseState *ps = NULL;
		Jsonb	   *oldkey = JsonbValueToJsonb(push_row(st, &ps, ci, relation, oldtup, pk));

		if (compareJsonbContainers(&oldkey->root, &key->root) != 0)
		{
			emit_event(ctx, txn, ci, oldkey,
					   envelope(st, ci, relation, oldtup, NULL, "d", txn, change->lsn));
			emit_event(ctx, txn, ci, key,
					   envelope(st, ci, relation, NULL, newtup, "c", txn, change->lsn));
			MemoryContextSwitchTo(old);
			MemoryContextReset(st->cxt);
			render_done();
			return;
		}
	}

	emit_event(ctx, txn, ci, key,
			   envelope(st, ci, relation, oldtup, newtup, op, txn, change->lsn));
	MemoryContextSwitchTo(old);
	MemoryContextReset(st->cxt);
	render_done();
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
		render_done();
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
 * collector_admits()): changes of tables uncaptured since, of stopped
 * captures, that a capture's position or copy has already, are dropped; a
 * change of a capture whose copy is not made yet ends the collection
 * before its transaction.  Lines of one source transaction come together.
 */
typedef struct Collector
{
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
#define LINE_KIND		2		/* PieceKind */
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
static RepOriginId cdc_origin = InvalidRepOriginId;	/* when origin_set_up */

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
 * Does the worker want a change of capture ci in txn (a transaction being
 * replayed: its commit is decoded)?  Called before the change is rendered,
 * so that nothing is rendered for nothing (a stopped capture, a change
 * written already, one in the copy).
 */
static bool
collector_admits(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, CaptureInfo *ci)
{
	Collector  *c = ctx->output_writer_private;
	CaptureState *cs;

	if (c->stopped)
		return false;
	if (txn->xid != c->cur_xid)
	{
		c->cur_xid = txn->xid;
		c->txn_first = c->nlines;
	}
	cs = find_capture(c->caps, ci->root);

	/*
	 * A change decoded under an earlier capture of the table (dropped with
	 * its topic, say, and captured again since): that capture is over, and
	 * the current one starts after it.
	 */
	if (cs != NULL && cs->created_at != ci->created_at)
		return false;
	if (cs == NULL)
	{
		/*
		 * Uncaptured since, or captured by a transaction that committed
		 * (the plugin saw it) but was not visible yet when this run loaded
		 * the captures.  Stop here; the next run loads them again once that
		 * transaction is visible, and drops the changes if the capture is
		 * not there.
		 */
		if (missing_was_checked(ci->root, ci->created_at))
			return false;
		stop_collection(c, txn);
		c->unknown_relid = ci->root;
		c->unknown_xmin = ci->capture_xmin;
		c->unknown_created_at = ci->created_at;
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
	Datum		values[LINE_NATTS];
	bool		nulls[LINE_NATTS];

	if (pieces.kind == PIECE_COMMIT)
	{
		c->cur_xid = InvalidTransactionId;
		return;
	}
	if (c->stopped)
		return;
	memset(nulls, false, sizeof(nulls));
	values[LINE_LSN - 1] = LSNGetDatum(lsn);
	values[LINE_KIND - 1] = Int32GetDatum((int32) pieces.kind);
	values[LINE_RELID - 1] = ObjectIdGetDatum(pieces.relid);
	values[LINE_TOPIC - 1] = CStringGetTextDatum(pieces.topic);
	nulls[LINE_KEY - 1] = true;
	if (pieces.key != NULL)
	{
		StringInfoData buf;

		initStringInfo(&buf);
		(void) JsonbToCString(&buf, &pieces.key->root, VARSIZE(pieces.key));
		values[LINE_KEY - 1] = PointerGetDatum(cstring_to_text_with_len(buf.data, buf.len));
		nulls[LINE_KEY - 1] = false;
	}
	if (pieces.kind == PIECE_EVENT)
		values[LINE_VALUE - 1] = JsonbPGetDatum(pieces.value);
	else
		nulls[LINE_VALUE - 1] = true;
	values[LINE_COMMIT_TS - 1] = TimestampTzGetDatum(pieces.commit_time);
	values[LINE_XID - 1] = Int64GetDatum((int64) pieces.xid);
	values[LINE_FINAL_LSN - 1] = LSNGetDatum(pieces.final_lsn);
	values[LINE_END_LSN - 1] = LSNGetDatum(pieces.end_lsn);
	if (pieces.kind == PIECE_FAILURE)
	{
		values[LINE_ERROR - 1] = CStringGetTextDatum(pieces.error);
		values[LINE_SQLSTATE - 1] = Int32GetDatum(pieces.sqlerrcode);
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
 * The names of the columns of an index of relid (in attnum order), by a
 * query on pg_index that restricts it (cond, on pg_class cl and pg_index
 * i); NIL if there is no such index.
 */
static List *
index_columns(Oid relid, const char *cond)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		args[1];
	List	   *names = NIL;

	args[0] = ObjectIdGetDatum(relid);
	if (SPI_execute_with_args(psprintf("SELECT a.attname FROM pg_catalog.pg_class cl"
									   " JOIN pg_catalog.pg_index i ON i.indrelid OPERATOR(pg_catalog.=) cl.oid"
									   " JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid"
									   "  AND a.attnum OPERATOR(pg_catalog.=) ANY (i.indkey)"
									   " WHERE cl.oid OPERATOR(pg_catalog.=) $1 AND %s"
									   " ORDER BY a.attnum", cond),
							  1, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the indexes of relation %u", relid);
	for (uint64 i = 0; i < SPI_processed; i++)
		names = lappend(names, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	SPI_freetuptable(SPI_tuptable);
	return names;
}

/*
 * The key columns of the copy's events, as the stream has them (see
 * plugin_change()): the primary key's; with REPLICA IDENTITY USING INDEX on
 * an index that does not cover the primary key, that index's.
 */
static List *
copy_key_columns(Oid relid)
{
	List	   *pk = index_columns(relid, "i.indisprimary");
	List	   *ident = index_columns(relid, "cl.relreplident OPERATOR(pg_catalog.=) 'i' AND i.indisreplident");
	ListCell   *lc;

	if (ident == NIL)
		return pk;
	if (pk == NIL)
		return ident;
	foreach(lc, pk)
	{
		ListCell   *lc2;
		bool		found = false;

		foreach(lc2, ident)
		{
			if (strcmp(lfirst(lc), lfirst(lc2)) == 0)
			{
				found = true;
				break;
			}
		}
		if (!found)
			return ident;
	}
	return pk;
}

/* what the events of one copy share */
typedef struct CopyEvents
{
	ValueRenderer *renderer;
	TupleDesc	desc;			/* of the rows read */
	bool	   *wanted;			/* per attribute: in "after" */
	bool		after_null;		/* "columns" names none of the columns */
	int			nkeys;			/* 0: no key */
	int		   *keyatts;		/* key columns' attribute numbers */
	const char *dbname;
	const char *schema;			/* as recorded by capture() */
	const char *table;
	XLogRecPtr	lsn;
	int64		ts_ms;
} CopyEvents;

/*
 * The event of one row: {"before": null, "after": row, "op": "r", "source":
 * {...}, "ts_ms": ...}, as estream._capture_activate() built it with
 * jsonb_build_object().
 */
static Jsonb *
copy_event(CopyEvents *ce, HeapTuple tuple)
{
	JsonbParseState *ps = NULL;
	JsonbValue *res;

	(void) pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	push_key(&ps, "before");
	push_null(&ps);
	push_key(&ps, "after");
	if (ce->after_null)
		push_null(&ps);			/* jsonb_object_agg() of no column */
	else
	{
		(void) pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
		for (int i = 0; i < ce->desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(ce->desc, i);
			bool		isnull;
			Datum		value;

			if (att->attisdropped || !ce->wanted[i])
				continue;
			push_key(&ps, NameStr(att->attname));
			value = heap_getattr(tuple, i + 1, ce->desc, &isnull);
			if (isnull)
				push_null(&ps);
			else
				render_value(ce->renderer, &ps, WJB_VALUE, value, att->atttypid);
		}
		(void) pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
	}
	push_key(&ps, "op");
	push_string(&ps, "r");

	push_key(&ps, "source");
	(void) pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	push_key(&ps, "version");
	push_string(&ps, "estream-1.3");
	push_key(&ps, "connector");
	push_string(&ps, "estream");
	push_key(&ps, "name");
	push_string(&ps, ce->dbname);
	push_key(&ps, "db");
	push_string(&ps, ce->dbname);
	push_key(&ps, "schema");
	push_string(&ps, ce->schema);
	push_key(&ps, "table");
	push_string(&ps, ce->table);
	push_key(&ps, "txId");
	push_null(&ps);
	push_key(&ps, "lsn");
	push_int(&ps, (int64) ce->lsn);
	push_key(&ps, "ts_ms");
	push_int(&ps, ce->ts_ms);
	push_key(&ps, "snapshot");
	push_string(&ps, "true");
	(void) pushJsonbValue(&ps, WJB_END_OBJECT, NULL);

	push_key(&ps, "ts_ms");
	push_int(&ps, ce->ts_ms);
	res = pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/* the key of one row's event: the text of {key columns}, or NULL */
static text *
copy_key(CopyEvents *ce, HeapTuple tuple)
{
	JsonbParseState *ps = NULL;
	Jsonb	   *key;
	StringInfoData buf;

	if (ce->nkeys == 0)
		return NULL;
	(void) pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < ce->nkeys; i++)
	{
		Form_pg_attribute att = TupleDescAttr(ce->desc, ce->keyatts[i] - 1);
		bool		isnull;
		Datum		value;

		push_key(&ps, NameStr(att->attname));
		value = heap_getattr(tuple, ce->keyatts[i], ce->desc, &isnull);
		if (isnull)
			push_null(&ps);
		else
			render_value(ce->renderer, &ps, WJB_VALUE, value, att->atttypid);
	}
	key = JsonbValueToJsonb(pushJsonbValue(&ps, WJB_END_OBJECT, NULL));
	initStringInfo(&buf);
	(void) JsonbToCString(&buf, &key->root, VARSIZE(key));
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
 * (see ValueRenderer); the worker then writes each batch as itself.  The
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

	/* as the stream does: see plugin_change() */
	keycols = copy_key_columns(relid);

	/*
	 * Locked, the table keeps its owner and name until the end of the
	 * transaction.  Dropped since the transaction's snapshot was taken, it
	 * is gone as much as if it had been dropped before.
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

	copy_cxt = AllocSetContextCreate(CurrentMemoryContext, "estream initial copy",
									 ALLOCSET_DEFAULT_SIZES);
	batch_cxt = AllocSetContextCreate(copy_cxt, "estream initial copy batch",
									  ALLOCSET_DEFAULT_SIZES);
	memset(&ce, 0, sizeof(ce));
	ce.renderer = renderer_create(copy_cxt);
	ce.dbname = get_database_name(MyDatabaseId);
	ce.schema = schema;
	ce.table = table;

	/*
	 * One ts_ms for the whole copy, rounded to the millisecond as
	 * (extract(epoch FROM clock_timestamp()) * 1000)::bigint did, and the
	 * WAL position of pg_current_wal_lsn() before anything is written.
	 */
	now = GetCurrentTimestamp();
	ce.ts_ms = (now + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY + 500) / 1000;
	ce.lsn = GetXLogWriteRecPtr();

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
			bool		any = false;

			/* the columns of the rows: which go in "after", which in the key */
			old = MemoryContextSwitchTo(copy_cxt);
			ce.desc = CreateTupleDescCopy(SPI_tuptable->tupdesc);
			ce.wanted = palloc0(sizeof(bool) * Max(ce.desc->natts, 1));
			for (int i = 0; i < ce.desc->natts; i++)
			{
				Form_pg_attribute att = TupleDescAttr(ce.desc, i);

				ce.wanted[i] = !att->attisdropped &&
					name_wanted(columns, ncolumns, NameStr(att->attname));
				any |= ce.wanted[i];
			}
			ce.after_null = ncolumns > 0 && !any;
			ce.keyatts = palloc(sizeof(int) * Max(list_length(keycols), 1));
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
	PieceKind	kind;
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
	line->kind = (PieceKind) DatumGetInt32(slot_getattr(slot, LINE_KIND, &isnull));
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
 * Write one event in a subtransaction of its own.  Returns NULL, or why it
 * could not be written (the subtransaction rolled back); a transient error
 * is thrown.
 */
static Failure *
produce_one(TopicBatch *tb, Line *line)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	Failure    *volatile f = NULL;
	Datum		value = line->value;
	Datum		key = line->key;
	bool		key_null = line->key_null;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		(void) produce_events(tb->topic, 1, &value, &key, &key_null);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (error_is_transient(edata->sqlerrcode))
			ReThrowError(edata);
		f = failure_of_error(edata);
		FreeErrorData(edata);
	}
	PG_END_TRY();
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

/*
 * write_dead_letter() in a subtransaction.  If even that fails (but for a
 * transient error, which is thrown), returns false, with the failure's
 * message telling both errors: the capture then stops.
 */
static bool
try_dead_letter(CaptureState *cs, Line *line, Failure *f)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		write_dead_letter(cs, line, f);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (error_is_transient(edata->sqlerrcode))
			ReThrowError(edata);
		f->detail = psprintf("%s%sWriting it to estream.capture_dead_letter failed too: %s.",
							 f->detail ? f->detail : "", f->detail ? " " : "",
							 edata->message ? edata->message : "unknown error");
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	return ok;
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
 * Write every event of a topic in this run in one subtransaction, in
 * batches.  Returns false, the subtransaction rolled back, if a change of
 * the topic could not be rendered or an event could not be written; a
 * transient error (or any error before 1.4) is thrown: the step fails.
 */
static bool
write_topic_bulk(WriteRun *wr, TopicBatch *tb)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = true;
	volatile int64 n = 0;
	volatile TimestampTz last = 0;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		Line		line;

		rewind_lines(wr);
		while (read_line(wr, &line))
		{
			if (!line_in_topic(&line, tb->topic))
				continue;
			if (line.kind == PIECE_FAILURE)
			{
				ok = false;
				break;
			}
			/* a compacted topic takes no record without a key (TRUNCATE) */
			if (line.key_null && tb->compacted)
				continue;
			batch_add(tb, &line);
			n++;
			last = Max(last, line.commit_ts);
		}
		if (ok)
		{
			batch_flush(tb);
			ReleaseCurrentSubTransaction();
		}
		else
		{
			batch_discard(tb);
			RollbackAndReleaseCurrentSubTransaction();
		}
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		batch_discard(tb);
		if (!cdc_isolation || error_is_transient(edata->sqlerrcode))
			ReThrowError(edata);
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	if (ok)
	{
		wr->written += n;
		wr->last_commit = Max(wr->last_commit, last);
	}
	return ok;
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
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool done = true;
	volatile int64 n = 0;
	volatile int64 dead = 0;
	volatile TimestampTz last = 0;
	CaptureState *volatile stop_cs = NULL;
	Failure    *volatile stop_failure = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		Line		line;

		while (read_line(wr, &line))
		{
			CaptureState *cs;
			Failure    *f;

			if (line.end_lsn != txn_end)
			{
				unread_line(wr);
				break;
			}
			if (!line_in_topic(&line, tb->topic))
				continue;
			cs = find_capture(wr->caps, line.relid);
			if (cs == NULL || cs->stopped_now)
				continue;
			if (line.kind == PIECE_FAILURE)
			{
				if (bulk)
				{
					done = false;
					break;
				}
				f = palloc0(sizeof(Failure));
				f->message = line.error;
				f->sqlerrcode = line.sqlerrcode;
			}
			else if (line.key_null && tb->compacted)
				continue;
			else if (bulk)
			{
				batch_add(tb, &line);
				n++;
				last = Max(last, line.commit_ts);
				continue;
			}
			else if ((f = produce_one(tb, &line)) == NULL)
			{
				n++;
				last = Max(last, line.commit_ts);
				continue;
			}
			f->lsn = line.lsn;
			f->final_lsn = line.final_lsn;
			f->xid = line.xid;
			f->commit_ts = line.commit_ts;
			if (cs->skip && try_dead_letter(cs, &line, f))
			{
				dead++;
				last = Max(last, line.commit_ts);
				continue;
			}
			stop_cs = cs;
			stop_failure = f;
			done = false;
			break;
		}
		if (done)
		{
			batch_flush(tb);
			ReleaseCurrentSubTransaction();
		}
		else
		{
			batch_discard(tb);
			RollbackAndReleaseCurrentSubTransaction();
		}
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		batch_discard(tb);
		/* event by event, only transient errors come here */
		if (!bulk || error_is_transient(edata->sqlerrcode))
			ReThrowError(edata);
		FreeErrorData(edata);
		done = false;
	}
	PG_END_TRY();

	if (stop_cs != NULL)
		stop_capture(stop_cs, stop_failure);
	if (done)
	{
		wr->written += n;
		wr->dead += dead;
		wr->last_commit = Max(wr->last_commit, last);
	}
	return done;
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

	if (!rendering_now.active)
		return;
	rendering_now.active = false;
	if (!cdc_isolation)
		return;
	old = MemoryContextSwitchTo(TopMemoryContext);
	edata = CopyErrorData();
	if (!error_is_transient(edata->sqlerrcode))
	{
		PoisonedChange *pc = find_poisoned(rendering_now.relid, rendering_now.created_at,
										   rendering_now.lsn);

		if (pc == NULL)
		{
			pc = palloc0(sizeof(PoisonedChange));
			pc->relid = rendering_now.relid;
			pc->created_at = rendering_now.created_at;
			pc->lsn = rendering_now.lsn;
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

	/*
	 * Starting to decode logs two LOG lines: only the first start of a
	 * worker is logged.
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
	cdc_ctx->output_writer_private = &coll;
	cdc_decoded_to = InvalidXLogRecPtr;

	if (hold != InvalidXLogRecPtr &&
		hold > MyReplicationSlot->data.confirmed_flush)
		LogicalConfirmReceivedLocation(hold);

	/*
	 * A capture's position behind the slot (a slot dropped by hand and
	 * made again, say): the changes in between are not in the WAL the slot
	 * decodes any more.
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
	rendering_now.active = false;
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
	int64		ncaptures;
	bool		slot_exists;
	bool		origin_exists;
	RepOriginId origin;
	char		origin_name[NAMEDATALEN];
	bool		any_pending;
	MemoryContext old;
	XLogRecPtr	end_of_wal;
	XLogRecPtr	upto;
	XLogRecPtr	confirm;
	WriteRun	wr;
	bool		stopped;
	bool		copy_postponed = false;
	ListCell   *lc;

	memset(result, 0, sizeof(*result));
	snprintf(slot_name, sizeof(slot_name), "estream_%u", MyDatabaseId);
	snprintf(origin_name, sizeof(origin_name), "estream_%u", MyDatabaseId);
	if (saved_log_min_messages[0] == '\0')
		strlcpy(saved_log_min_messages, GetConfigOption("log_min_messages", false, false),
				sizeof(saved_log_min_messages));

	begin_xact();
	end_unauthorized_captures();
	ncaptures = spi_int8("SELECT pg_catalog.count(*) FROM estream.capture");
	slot_exists = spi_int8(psprintf("SELECT pg_catalog.count(*) FROM pg_catalog.pg_replication_slots"
									" WHERE slot_name OPERATOR(pg_catalog.=) '%s'", slot_name)) > 0;
	origin_exists = spi_int8(psprintf("SELECT pg_catalog.count(*) FROM pg_catalog.pg_replication_origin"
									  " WHERE roname OPERATOR(pg_catalog.=) '%s'", origin_name)) > 0;
	end_xact();

	if (ncaptures == 0)
	{
		/* uncapturing the last table drops the slot: WAL is not kept */
		if (slot_exists || origin_exists)
			estream_cdc_drop();
		return;
	}
	result->active = true;

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

	/* copies of new captures, before decoding */
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
			(void) try_activate_capture(lfirst_oid(lc), true, &copy_postponed);
		foreach(lc, starts)
			(void) try_activate_capture(lfirst_oid(lc), false, &copy_postponed);
		list_free(copies);
		list_free(starts);
	}
	else
		end_xact();

	/*
	 * Decode and write in one transaction: whatever it writes commits with
	 * the positions, or not at all.
	 */
	begin_xact();
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
	 * Decoding builds catalog cache entries from the catalogs as they were
	 * at each change, and must not use entries built from today's: flush
	 * the caches before and after it, as logicalfuncs.c does.
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
			 * The reader allocates its decode buffer and oversized records
			 * in the current memory context, and frees them at a later
			 * read: they must live as long as the decoding context.
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
				result->more = cdc_ctx->reader->EndRecPtr < end_of_wal;
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
	stopped = coll.stopped;
	InvalidateSystemCaches();

	/*
	 * Every source transaction that ended before upto is decoded: the
	 * reader's position, or the start of the transaction the run stopped at
	 * (a capture without copy), whose lines and those after are not
	 * written.
	 */
	upto = stopped ? coll.stop_lsn : cdc_ctx->reader->EndRecPtr;

	/* write, topic by topic: source transactions in commit order */
	memset(&wr, 0, sizeof(wr));
	wr.lines = coll.lines;
	wr.slot = MakeSingleTupleTableSlot(coll.desc, &TTSOpsMinimalTuple);
	wr.nlines = stopped ? coll.stop_at : coll.nlines;
	wr.caps = coll.caps;
	{
		List	   *topics = NIL;
		Line		line;
		char	   *last = NULL;

		rewind_lines(&wr);
		while (read_line(&wr, &line))
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

			if (!write_topic_bulk(&wr, tb))
				write_topic_each(&wr, tb);
			pfree(tb);
		}
	}
	ExecDropSingleTupleTableSlot(wr.slot);
	tuplestore_end(coll.lines);
	coll.lines = NULL;

	advance_own_positions(coll.caps, upto);

	if (OidIsValid(coll.unknown_relid))
	{
		MissingCapture *mc;
		MemoryContext oldcxt;

		/*
		 * The next run must see the capture if it is there: the
		 * transaction that wrote its row has committed (its commit record
		 * precedes the change), it may not have ended yet.  A short wait,
		 * without lock_timeout.
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

	/*
	 * Once this is written and durable, the slot may let go of the WAL
	 * before the lowest position: upto, or that of a stopped capture, which
	 * keeps the WAL it will need when resumed.
	 */
	confirm = upto;
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
		replorigin_session_origin_timestamp = wr.last_commit != 0 ?
			wr.last_commit : GetCurrentTimestamp();
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
