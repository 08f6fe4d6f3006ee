/*-------------------------------------------------------------------------
 *
 * cdc_envelope.c
 *		The events of change data capture: the Debezium-style envelope of a
 *		change and its key, and how column values are rendered as JSON
 *		without running user code.
 *
 * One builder serves the output plugin (changes decoded from WAL,
 * cdc_plugin.c) and the worker's initial copy (rows read from the table,
 * cdc_apply.c), so that an event of the copy and one of the stream look
 * alike:
 *
 *	{"before": row | null, "after": row | null, "op": "c" | "u" | "d" |
 *	 "t" | "r", "source": {"version", "connector", "name", "db", "schema",
 *	 "table", "txId", "lsn", "ts_ms", "snapshot"}, "ts_ms": ...}
 *
 * and the key of an event is the object of the table's key columns
 * (estream_cdc_key_attnums(): the primary key's, or those of the replica
 * identity index when it does not cover the primary key), so that every
 * event of a row goes to one partition.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/cdc_envelope.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/sysattr.h"
#include "access/transam.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/typcache.h"

#include "cdc_envelope.h"

/* "source"."version" of every event, of the stream and of the copy alike */
#define ESTREAM_CDC_SOURCE_VERSION	"estream-1.3"

/* "source"."connector" */
#define ESTREAM_CDC_CONNECTOR		"estream"

/* an unchanged TOASTed value, which the WAL does not have (as Debezium) */
#define UNAVAILABLE_VALUE "__debezium_unavailable_value"

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

struct EstreamRenderer
{
	MemoryContext cxt;			/* the entries and their functions' state */
	HTAB	   *types;			/* type -> RenderType */
};

/* a renderer whose type cache lives (and dies) in cxt */
EstreamRenderer *
estream_renderer_create(MemoryContext cxt)
{
	EstreamRenderer *vr = MemoryContextAlloc(cxt, sizeof(EstreamRenderer));
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
render_type(EstreamRenderer *vr, Oid typid)
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
render_array_dim(EstreamRenderer *vr, JsonbParseState **ps, int dim, int ndim,
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
				estream_render_value(vr, ps, WJB_ELEM, elems[*next], elemtype);
			(*next)++;
		}
	}
	(void) pushJsonbValue(ps, WJB_END_ARRAY, NULL);
}

static void
render_array(EstreamRenderer *vr, JsonbParseState **ps, ArrayType *arr)
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
render_composite(EstreamRenderer *vr, JsonbParseState **ps, HeapTupleHeader td)
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
			estream_render_value(vr, ps, WJB_VALUE, value, att->atttypid);
	}
	(void) pushJsonbValue(ps, WJB_END_OBJECT, NULL);
	ReleaseTupleDesc(desc);
}

/*
 * Push a (non-null) value of type typid as an object's value (seq
 * WJB_VALUE) or an array's element (WJB_ELEM).  See above: no user code.
 */
void
estream_render_value(EstreamRenderer *vr, JsonbParseState **ps, JsonbIteratorToken seq,
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

/*
 * Push a row as a JSON object of the attributes row->atts, in that order.
 * A value of a decoded row that is TOASTed on disk was not changed and is
 * not in the WAL: it becomes the placeholder.
 */
static JsonbValue *
push_row(EstreamRenderer *vr, JsonbParseState **ps, const EstreamCdcRow *row)
{
	TupleDesc	desc = row->desc;

	(void) pushJsonbValue(ps, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < row->natts; i++)
	{
		AttrNumber	attnum = row->atts[i];
		Form_pg_attribute att = TupleDescAttr(desc, attnum - 1);
		bool		isnull;
		Datum		value;

		push_key(ps, NameStr(att->attname));
		value = heap_getattr(row->tuple, attnum, desc, &isnull);
		if (isnull)
			push_null(ps);
		else if (row->decoded && att->attlen == -1 &&
				 VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(value)))
			push_string(ps, UNAVAILABLE_VALUE);
		else
			estream_render_value(vr, ps, WJB_VALUE, value, att->atttypid);
	}
	return pushJsonbValue(ps, WJB_END_OBJECT, NULL);
}

/*
 * Is a column in "after" and "before"?  Those named by the capture's
 * "columns" option; every one when there is none (nnames 0).
 */
bool
estream_cdc_column_wanted(char **names, int nnames, const char *name)
{
	if (nnames == 0)
		return true;
	for (int i = 0; i < nnames; i++)
		if (strcmp(names[i], name) == 0)
			return true;
	return false;
}

/* a timestamp as milliseconds since 1970, truncated */
int64
estream_cdc_unix_ms(TimestampTz ts)
{
	return (int64) (ts / 1000) +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;
}

/*
 * The envelope of an event: before and after (NULL: null), op, the source
 * block, and ts_ms (ESTREAM_CDC_TS_NOW: the time it is built).  The initial
 * copy's source (source->snapshot) has no transaction.
 */
Jsonb	   *
estream_cdc_envelope(EstreamRenderer *vr, const EstreamCdcRow *before,
					 const EstreamCdcRow *after, const char *op,
					 const EstreamCdcSource *source, int64 ts_ms)
{
	JsonbParseState *ps = NULL;
	JsonbValue *res;

	(void) pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	push_key(&ps, "before");
	if (before != NULL)
		(void) push_row(vr, &ps, before);
	else
		push_null(&ps);
	push_key(&ps, "after");
	if (after != NULL)
		(void) push_row(vr, &ps, after);
	else
		push_null(&ps);
	push_key(&ps, "op");
	push_string(&ps, op);

	push_key(&ps, "source");
	(void) pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	push_key(&ps, "version");
	push_string(&ps, ESTREAM_CDC_SOURCE_VERSION);
	push_key(&ps, "connector");
	push_string(&ps, ESTREAM_CDC_CONNECTOR);
	push_key(&ps, "name");
	push_string(&ps, source->dbname);
	push_key(&ps, "db");
	push_string(&ps, source->dbname);
	push_key(&ps, "schema");
	push_string(&ps, source->schema);
	push_key(&ps, "table");
	push_string(&ps, source->table);
	push_key(&ps, "txId");
	if (source->snapshot)
		push_null(&ps);
	else
		push_int(&ps, source->xid);
	push_key(&ps, "lsn");
	push_int(&ps, (int64) source->lsn);
	push_key(&ps, "ts_ms");
	push_int(&ps, source->ts_ms);
	push_key(&ps, "snapshot");
	push_string(&ps, source->snapshot ? "true" : "false");
	(void) pushJsonbValue(&ps, WJB_END_OBJECT, NULL);

	push_key(&ps, "ts_ms");
	push_int(&ps, ts_ms == ESTREAM_CDC_TS_NOW ?
			 estream_cdc_unix_ms(GetCurrentTimestamp()) : ts_ms);
	res = pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/* the key of an event: the object of the key columns key->atts */
Jsonb	   *
estream_cdc_key(EstreamRenderer *vr, const EstreamCdcRow *key)
{
	JsonbParseState *ps = NULL;

	return JsonbValueToJsonb(push_row(vr, &ps, key));
}

/*
 * The attribute numbers of a table's key columns, as a set of attnum -
 * FirstLowInvalidHeapAttributeNumber (NULL: no key): the primary key's;
 * with REPLICA IDENTITY USING INDEX on an index that does not cover the
 * primary key, that index's.  A delete carries only the replica
 * identity's columns, so that index's columns are then the key of every
 * event, and all events of a row still go to one partition.
 */
Bitmapset  *
estream_cdc_key_attnums(Relation rel)
{
	Bitmapset  *pk = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_PRIMARY_KEY);

	if (rel->rd_rel->relreplident == REPLICA_IDENTITY_INDEX)
	{
		Bitmapset  *ident = RelationGetIndexAttrBitmap(rel,
													   INDEX_ATTR_BITMAP_IDENTITY_KEY);

		if (ident != NULL && (pk == NULL || !bms_is_subset(pk, ident)))
			pk = ident;
	}
	return pk;
}
