/*-------------------------------------------------------------------------
 *
 * fetch.c
 *		estream.fetch(), fetch_binary(), watermarks() and
 *		offsets_for_times().
 *
 * Every reader follows the protocol of shmem.c: read the stable watermark W
 * first, then take a fresh snapshot (GetLatestSnapshot) and scan [from, W).
 * The statement's own snapshot is older than W and could miss a record
 * whose transaction committed in between, so it is never used, whatever
 * the isolation level.
 *
 * Offsets out of range follow Kafka: a start offset above W is an error
 * (OFFSET_OUT_OF_RANGE); one below the partition's log start is reset to
 * the log start ("earliest", the default), to W ("latest"), or is an error
 * ("error"), as the caller chooses.
 *
 * From extension version 1.4 every function here first checks the caller's
 * right on the topic (read for fetch, describe for the others; acl.c),
 * before the topic's existence, then reads as the extension's owner.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/fetch.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/base64.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/params.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "estream.h"
#include "acl.h"
#include "shmem.h"
#include "topic.h"

typedef enum OffsetReset
{
	RESET_EARLIEST,
	RESET_LATEST,
	RESET_ERROR
} OffsetReset;

/*
 * Can this backend read stable offsets from shared memory?  On a hot
 * standby it cannot (the primary's shared memory is elsewhere): readers
 * there use the stable offsets that the primary's worker persisted in
 * estream.partition, read in the same snapshot as the records.  Every
 * record below a persisted stable offset was committed before the worker's
 * transaction that wrote it, so any snapshot that sees the row sees them.
 */
static bool
reading_persisted(void)
{
	if (RecoveryInProgress())
		return true;
	estream_require_shmem();
	return false;
}

static void
check_persisted(EstreamTopic *topic)
{
	if (!topic->has_persisted)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot read estream topics during recovery with extension version older than 1.2"),
				 errdetail("Reading on a hot standby needs the stable offsets that the worker persists from version 1.2 on."),
				 errhint("Run ALTER EXTENSION estream UPDATE on the primary.")));
}

/*
 * Persisted log start, stable and end offsets of a partition, read with
 * snap.  SPI connected.
 */
static void
read_persisted(EstreamTopic *topic, int32 partition, Snapshot snap,
			   int64 *log_start, EstreamWatermarks *wm)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2];
	Oid			argtypes[2] = {INT4OID, INT4OID};
	int			rc;
	bool		isnull;

	if (plan == NULL)
		plan = estream_prepare_kept("SELECT log_start_offset, stable_offset, end_offset"
									" FROM estream.partition"
									" WHERE topic_id OPERATOR(pg_catalog.=) $1"
									" AND partition OPERATOR(pg_catalog.=) $2",
									2, argtypes);
	args[0] = Int32GetDatum(topic->topic_id);
	args[1] = Int32GetDatum(partition);
	rc = SPI_execute_snapshot(plan, args, NULL, snap, InvalidSnapshot, true, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("partition %d of topic \"%s\" has no persisted state", partition, topic->name)));
	*log_start = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	wm->stable = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	wm->next = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	/* a partition nobody produced to since its row was written */
	if (wm->stable < *log_start)
		wm->stable = *log_start;
	if (wm->next < wm->stable)
		wm->next = wm->stable;
}

/*
 * Log start offset of a partition, from estream.partition.  SPI connected.
 */
static int64
log_start_offset(EstreamTopic *topic, int32 partition)
{
	Datum		args[2];
	int			rc;
	bool		isnull;
	int64		result = 0;

	/* one plan for every topic: estream.partition is not the topic's */
	static SPIPlanPtr plan = NULL;

	if (plan == NULL)
	{
		Oid			argtypes[2] = {INT4OID, INT4OID};

		plan = estream_prepare_kept("SELECT log_start_offset FROM estream.partition"
									" WHERE topic_id OPERATOR(pg_catalog.=) $1"
									" AND partition OPERATOR(pg_catalog.=) $2",
									2, argtypes);
	}
	args[0] = Int32GetDatum(topic->topic_id);
	args[1] = Int32GetDatum(partition);
	rc = SPI_execute_snapshot(plan, args, NULL,
							  GetLatestSnapshot(), InvalidSnapshot, true, false, 1);
	if (rc == SPI_OK_SELECT && SPI_processed == 1)
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			result = DatumGetInt64(d);
	}
	return result;
}

/*
 * Log start offsets of every partition of a topic into starts (0 for a
 * partition without a row), in one query.  SPI connected.
 */
static void
log_start_offsets(EstreamTopic *topic, int64 *starts)
{
	Datum		args[1];
	int			rc;
	static SPIPlanPtr plan = NULL;

	if (plan == NULL)
	{
		Oid			argtypes[1] = {INT4OID};

		plan = estream_prepare_kept("SELECT partition, log_start_offset FROM estream.partition"
									" WHERE topic_id OPERATOR(pg_catalog.=) $1",
									1, argtypes);
	}
	memset(starts, 0, sizeof(int64) * topic->partitions);
	args[0] = Int32GetDatum(topic->topic_id);
	rc = SPI_execute_snapshot(plan, args, NULL,
							  GetLatestSnapshot(), InvalidSnapshot, true, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read the log start offsets of topic \"%s\"", topic->name);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull1,
					isnull2;
		Datum		p = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull1);
		Datum		o = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull2);

		if (!isnull1 && !isnull2 && DatumGetInt32(p) >= 0 &&
			DatumGetInt32(p) < topic->partitions)
			starts[DatumGetInt32(p)] = DatumGetInt64(o);
	}
}

static OffsetReset
parse_reset(FunctionCallInfo fcinfo, int argno)
{
	char	   *s;

	if (PG_ARGISNULL(argno))
		return RESET_EARLIEST;
	s = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (strcmp(s, "earliest") == 0)
		return RESET_EARLIEST;
	if (strcmp(s, "latest") == 0)
		return RESET_LATEST;
	if (strcmp(s, "error") == 0 || strcmp(s, "none") == 0)
		return RESET_ERROR;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid value for auto_offset_reset: \"%s\"", s),
			 errdetail("Valid values are \"earliest\", \"latest\" and \"error\" (or \"none\", as in Kafka).")));
	return RESET_ERROR;			/* keep compiler quiet */
}

static void
require_arg(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name)));
}

/*
 * base64 of some bytes, as text (standard alphabet, no line breaks)
 */
static char *
to_base64(const char *data, int len)
{
	int			enclen = pg_b64_enc_len(len);
	char	   *out = palloc(enclen + 1);
	int			n = pg_b64_encode(data, len, out, enclen);

	if (n < 0)
		elog(ERROR, "could not encode %d bytes as base64", len);
	out[n] = '\0';
	return out;
}

/*
 * Add a string header to a record's headers (null: none yet).
 */
static Datum
add_header(Datum headers, bool headers_null, const char *name, const char *value)
{
	JsonbParseState *ps = NULL;
	JsonbValue	v;
	JsonbValue *res;
	Jsonb	   *extra;

	(void) pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	v.type = jbvString;
	v.val.string.val = (char *) name;
	v.val.string.len = strlen(name);
	(void) pushJsonbValue(&ps, WJB_KEY, &v);
	v.val.string.val = (char *) value;
	v.val.string.len = strlen(value);
	(void) pushJsonbValue(&ps, WJB_VALUE, &v);
	res = pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
	extra = JsonbValueToJsonb(res);
	if (headers_null)
		return JsonbPGetDatum(extra);
	return DirectFunctionCall2(jsonb_concat, headers, JsonbPGetDatum(extra));
}

/*
 * Emit one fetched row into the result set.  Binary mode returns the bytes.
 * Text mode returns a text key and a JSON value; a record that has none
 * (it was produced with produce_binary()) comes back all the same, never
 * failing the call: a key that is not valid UTF-8 as its base64 text, with
 * the header "estream.key.encoding": "base64"; a binary value as a JSON
 * string of its base64, with the header "estream.value.encoding":
 * "base64".  So a JSON reader (fetch, poll, consume) gets every record, in
 * order, and can tell which ones to decode.
 */
static Size
emit_row(ReturnSetInfo *rsinfo, int32 partition, Datum *values, bool *isnulls,
		 bool binary)
{
	Size		size = 0;
	Datum		row[6];
	bool		nulls[6];
	Datum		key;
	bool		keynull;
	Datum		value;
	Datum		value_bin;
	bool		value_null;
	bool		value_bin_null;
	int64		offset;

	/* "offset", ts, key, value, value_bin, headers: see read_range() */
	offset = DatumGetInt64(values[0]);
	row[0] = Int32GetDatum(partition);
	nulls[0] = false;
	row[1] = Int64GetDatum(offset);
	nulls[1] = false;
	row[2] = values[1];
	nulls[2] = isnulls[1];
	key = values[2];
	keynull = isnulls[2];
	value = values[3];
	value_null = isnulls[3];
	value_bin = values[4];
	value_bin_null = isnulls[4];
	row[5] = values[5];
	nulls[5] = isnulls[5];

	nulls[3] = keynull;
	if (binary)
	{
		row[3] = key;
		if (!value_bin_null)
		{
			row[4] = value_bin;
			nulls[4] = false;
		}
		else if (!value_null)
		{
			Jsonb	   *jb = DatumGetJsonbP(value);
			char	   *str = JsonbToCString(NULL, &jb->root, VARSIZE(jb));

			row[4] = PointerGetDatum(cstring_to_text(str)); /* same layout as bytea */
			nulls[4] = false;
		}
		else
			nulls[4] = true;
	}
	else
	{
		if (!keynull)
		{
			bytea	   *kb = DatumGetByteaPP(key);
			char	   *data = VARDATA_ANY(kb);
			int			len = VARSIZE_ANY_EXHDR(kb);

			if (!pg_verify_mbstr(PG_UTF8, data, len, true))
			{
				row[3] = PointerGetDatum(cstring_to_text(to_base64(data, len)));
				row[5] = add_header(row[5], nulls[5], "estream.key.encoding", "base64");
				nulls[5] = false;
			}
			else
			{
				data = pg_any_to_server(data, len, PG_UTF8);
				if (data == VARDATA_ANY(kb))
					row[3] = PointerGetDatum(cstring_to_text_with_len(data, len));
				else
					row[3] = PointerGetDatum(cstring_to_text(data));
			}
		}
		if (!value_bin_null)
		{
			bytea	   *vb = DatumGetByteaPP(value_bin);
			JsonbValue	jv;

			jv.type = jbvString;
			jv.val.string.val = to_base64(VARDATA_ANY(vb), VARSIZE_ANY_EXHDR(vb));
			jv.val.string.len = strlen(jv.val.string.val);
			row[4] = JsonbPGetDatum(JsonbValueToJsonb(&jv));
			nulls[4] = false;
			row[5] = add_header(row[5], nulls[5], "estream.value.encoding", "base64");
			nulls[5] = false;
		}
		else
		{
			row[4] = value;
			nulls[4] = value_null;
		}
	}

	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, nulls);

	for (int i = 3; i <= 5; i++)
	{
		if (!nulls[i])
			size += VARSIZE_ANY_EXHDR(DatumGetPointer(row[i]));
	}
	return size;
}

/*
 * The memory of fetch()'s results.  A fetch puts every record it returns
 * into its result's tuplestore, in the query's memory, which is given back
 * when the query ends; the next fetch gets fresh memory from the kernel,
 * and touching it for the first time (page faults and zeroing) cost more
 * than half of reading a backlog.  So a session keeps one arena: a
 * generation context whose first block (RESULT_ARENA_KEEP) outlives its
 * resets, so its pages are touched once per session.  Only the pages a
 * fetch used stay resident.  One result at a time uses it: a fetch takes
 * it if it is empty (no result is in it, or the one in it was ended), and
 * the end of the query of the fetch that took it last empties it (its
 * result may not have been ended if the query failed).  Other fetches use
 * the query's memory as before.
 */
#define RESULT_ARENA_KEEP (4 * 1024 * 1024)

static MemoryContext result_arena = NULL;
static uint64 result_arena_user = 0;	/* the fetch that took it last */

static void
result_arena_release(void *arg)
{
	uint64		user = *(uint64 *) arg;

	/* a later fetch took the arena (the one of user was ended): its own */
	if (user == result_arena_user && result_arena != NULL)
		MemoryContextReset(result_arena);
}

/*
 * Put the result of a fetch in the session's arena if no other result is
 * in it: a tuplestore there replaces the one InitMaterializedSRF() made.
 */
static void
result_use_arena(ReturnSetInfo *rsinfo)
{
	MemoryContext query_cxt = rsinfo->econtext->ecxt_per_query_memory;
	MemoryContextCallback *cb;
	uint64	   *user;
	MemoryContext old;

	if (result_arena == NULL)
		result_arena = GenerationContextCreate(TopMemoryContext, "estream fetch results",
											   RESULT_ARENA_KEEP, RESULT_ARENA_KEEP,
											   ALLOCSET_DEFAULT_MAXSIZE);
	else if (!MemoryContextIsEmpty(result_arena))
		return;

	cb = MemoryContextAlloc(query_cxt, sizeof(MemoryContextCallback) + sizeof(uint64));
	user = (uint64 *) (cb + 1);
	*user = ++result_arena_user;
	cb->func = result_arena_release;
	cb->arg = user;
	MemoryContextRegisterResetCallback(query_cxt, cb);

	tuplestore_end(rsinfo->setResult);
	old = MemoryContextSwitchTo(result_arena);
	rsinfo->setResult = tuplestore_begin_heap((rsinfo->allowedModes & SFRM_Materialize_Random) != 0,
											  false, work_mem);
	MemoryContextSwitchTo(old);
}

/*
 * The receiver of read_range(): each row the log's index scan returns goes
 * straight into the function's result (no SPI tuple table in between),
 * until about max_bytes of keys, values and headers.
 */
typedef struct FetchReceiver
{
	DestReceiver pub;
	ReturnSetInfo *rsinfo;
	int32		partition;
	bool		binary;
	Size		bytes;
	Size		max_bytes;
	uint64		n;
	int64		last;			/* offset of the last row emitted */
	MemoryContext row_cxt;		/* what one row's rendering allocates */
} FetchReceiver;

/*
 * The offset of the last record the last fetch() of this session returned,
 * or -1: poll() asks it (_last_fetched_offset()) after RETURN QUERY.
 */
static int64 last_fetched = -1;

static bool
fetch_receive(TupleTableSlot *slot, DestReceiver *self)
{
	FetchReceiver *r = (FetchReceiver *) self;
	MemoryContext old;

	/* stop once max_bytes is reached, but always return the first record */
	if (r->bytes >= r->max_bytes)
		return false;
	slot_getallattrs(slot);
	old = MemoryContextSwitchTo(r->row_cxt);
	r->bytes += emit_row(r->rsinfo, r->partition, slot->tts_values, slot->tts_isnull,
						 r->binary);
	MemoryContextSwitchTo(old);
	MemoryContextReset(r->row_cxt);
	r->n++;
	r->last = DatumGetInt64(slot->tts_values[0]);
	return true;
}

static void
fetch_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
}

static void
fetch_shutdown(DestReceiver *self)
{
}

static void
fetch_destroy(DestReceiver *self)
{
}

/*
 * Read up to max records of [from, stable) with a fresh snapshot and emit
 * them, up to about max_bytes of keys, values and headers.  SPI connected.
 * Returns the number of rows.
 */
static uint64
read_range(ReturnSetInfo *rsinfo, EstreamTopic *topic, int32 partition,
		   int64 from, int64 stable, int32 max, int32 max_bytes, bool binary,
		   Snapshot snap)
{
	ParamListInfo params;
	SPIExecuteOptions options;
	FetchReceiver r;
	Oid			argtypes[4] = {INT4OID, INT8OID, INT8OID, INT4OID};
	Datum		args[4];
	int			rc;

	if (topic->fetch_plan == NULL)
	{
		char	   *sql;

		sql = psprintf("SELECT \"offset\", ts, key, value, value_bin, headers"
					   " FROM estream.log_%d WHERE partition OPERATOR(pg_catalog.=) $1"
					   " AND \"offset\" OPERATOR(pg_catalog.>=) $2"
					   " AND \"offset\" OPERATOR(pg_catalog.<) $3"
					   " ORDER BY \"offset\" LIMIT $4", topic->topic_id);
		topic->fetch_plan = estream_prepare_kept(sql, 4, argtypes);
	}

	args[0] = Int32GetDatum(partition);
	args[1] = Int64GetDatum(from);
	args[2] = Int64GetDatum(stable);
	args[3] = Int32GetDatum(max);
	params = makeParamList(4);
	for (int i = 0; i < 4; i++)
	{
		params->params[i].value = args[i];
		params->params[i].isnull = false;
		params->params[i].pflags = PARAM_FLAG_CONST;
		params->params[i].ptype = argtypes[i];
	}

	memset(&r, 0, sizeof(r));
	r.pub.receiveSlot = fetch_receive;
	r.pub.rStartup = fetch_startup;
	r.pub.rShutdown = fetch_shutdown;
	r.pub.rDestroy = fetch_destroy;
	r.pub.mydest = DestTuplestore;	/* a result kept: SPI_OK_SELECT */
	r.rsinfo = rsinfo;
	r.partition = partition;
	r.binary = binary;
	r.max_bytes = (Size) Max(max_bytes, 0);
	r.row_cxt = AllocSetContextCreate(CurrentMemoryContext, "estream fetch row",
									  ALLOCSET_SMALL_SIZES);

	memset(&options, 0, sizeof(options));
	options.params = params;
	options.read_only = true;
	options.dest = (DestReceiver *) &r;

	/*
	 * The snapshot must be taken after the watermark was read (or be the one
	 * the persisted watermark was read with).  Read-only SPI runs with the
	 * active snapshot.
	 */
	PushActiveSnapshot(snap ? snap : GetLatestSnapshot());
	rc = SPI_execute_plan_extended(topic->fetch_plan, &options);
	PopActiveSnapshot();
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read the log of topic \"%s\"", topic->name);
	MemoryContextDelete(r.row_cxt);
	if (r.n > 0)
		last_fetched = r.last;
	return r.n;
}

/*
 * fetch(topic, partition, from_offset, max_records, wait_ms, auto_offset_reset,
 *		 max_bytes)
 */
static Datum
fetch_common(FunctionCallInfo fcinfo, bool binary)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *name;
	int32		partition;
	int64		from;
	int32		max_records;
	int32		wait_ms;
	int32		max_bytes;
	OffsetReset reset;
	EstreamTopic *topic;
	EstreamPartReader reader;
	EstreamWatermarks wm;
	int64		log_start;
	TimestampTz deadline;
	bool		persisted;
	Snapshot	snap = NULL;
	EstreamUserSwitch sw;
	Oid			caller;

	require_arg(fcinfo, 0, "topic");
	require_arg(fcinfo, 1, "partition");
	require_arg(fcinfo, 2, "from_offset");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	partition = PG_GETARG_INT32(1);
	from = PG_GETARG_INT64(2);
	max_records = PG_ARGISNULL(3) ? 500 : PG_GETARG_INT32(3);
	wait_ms = PG_ARGISNULL(4) ? 0 : PG_GETARG_INT32(4);
	reset = parse_reset(fcinfo, 5);
	max_bytes = PG_ARGISNULL(6) ? 52428800 : PG_GETARG_INT32(6);
	if (max_bytes < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_bytes must be positive"),
				 errdetail("The value given was %d.", max_bytes)));

	if (max_records < 1 || max_records > estream_max_batch_records)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_records must be between 1 and %d", estream_max_batch_records),
				 errdetail("The value given was %d.", max_records)));
	if (wait_ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wait_ms must not be negative"),
				 errdetail("The value given was %d.", wait_ms)));
	if (from < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("from_offset must not be negative"),
				 errdetail("The value given was %lld.", (long long) from)));

	persisted = reading_persisted();
	caller = estream_enter(&sw);
	topic = estream_authorize_topic(caller, name, ESTREAM_OP_READ);
	estream_check_partition(topic, partition);
	if (persisted)
		check_persisted(topic);
	else
		estream_reader_init(&reader, topic, partition);

	InitMaterializedSRF(fcinfo, 0);
	result_use_arena(rsinfo);
	last_fetched = -1;
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	if (persisted)
	{
		snap = RegisterSnapshot(GetLatestSnapshot());
		read_persisted(topic, partition, snap, &log_start, &wm);
	}
	else
	{
		/* never takes a slot: a partition nobody produces to has none */
		estream_reader_watermarks(&reader, &wm);
		log_start = log_start_offset(topic, partition);
	}

	if (from > wm.stable)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("offset %lld is out of range for partition %d of topic \"%s\"",
						(long long) from, partition, topic->name),
				 errdetail("The partition's log start offset is %lld and its stable offset is %lld.",
						   (long long) log_start, (long long) wm.stable),
				 errhint("Fetch from an offset between the log start offset and the stable offset; estream.watermarks() shows both.")));

	if (from < log_start)
	{
		if (reset == RESET_ERROR)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("offset %lld is out of range for partition %d of topic \"%s\"",
							(long long) from, partition, topic->name),
					 errdetail("The partition's log start offset is %lld: older records were deleted by retention.",
							   (long long) log_start),
					 errhint("Pass auto_offset_reset => 'earliest' or 'latest' to reset the position.")));
		from = (reset == RESET_EARLIEST) ? log_start : wm.stable;
	}

	for (;;)
	{
		if (from < wm.stable &&
			read_range(rsinfo, topic, partition, from, wm.stable, max_records,
					   max_bytes, binary, snap) > 0)
			break;
		if (wait_ms == 0)
			break;
		if (persisted)
		{
			/* the persisted row changes about every estream.worker_naptime */
			long		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
																	deadline);
			int64		past = wm.stable;
			int64		dummy;

			if (remaining <= 0 || estream_draining(topic->topic_id))
				break;
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Min(remaining, 100), PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			UnregisterSnapshot(snap);
			snap = RegisterSnapshot(GetLatestSnapshot());
			read_persisted(topic, partition, snap, &dummy, &wm);
			if (wm.stable < past)
				wm.stable = past;
			continue;
		}
		/* never wait for our own open transaction to end */
		if (estream_reader_holds_marker(&reader))
			break;
		/* [from, W) is empty or holes only: wait for W to move */
		if (!estream_wait_for_stable(&reader, wm.stable, deadline, &wm))
			break;
	}

	if (snap != NULL)
		UnregisterSnapshot(snap);
	SPI_finish();
	estream_leave(&sw);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(estream_fetch);
Datum
estream_fetch(PG_FUNCTION_ARGS)
{
	return fetch_common(fcinfo, false);
}

PG_FUNCTION_INFO_V1(estream_fetch_binary);
Datum
estream_fetch_binary(PG_FUNCTION_ARGS)
{
	return fetch_common(fcinfo, true);
}

/*
 * watermarks(topic) returns (partition, log_start_offset, stable_offset,
 * next_offset) for every partition.
 */
PG_FUNCTION_INFO_V1(estream_watermarks);
Datum
estream_watermarks(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	EstreamTopic *topic;
	bool		persisted;
	EstreamUserSwitch sw;
	Oid			caller;
	int64	   *starts = NULL;

	require_arg(fcinfo, 0, "topic");
	persisted = reading_persisted();
	caller = estream_enter(&sw);
	topic = estream_authorize_topic(caller, text_to_cstring(PG_GETARG_TEXT_PP(0)),
									ESTREAM_OP_DESCRIBE);
	if (persisted)
		check_persisted(topic);

	InitMaterializedSRF(fcinfo, 0);

	/*
	 * The log starts first, in one query: a log start only moves up to the
	 * stable offset of its time, so it stays at or below the watermarks read
	 * after it.
	 */
	if (!persisted)
	{
		starts = palloc(sizeof(int64) * topic->partitions);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		log_start_offsets(topic, starts);
		SPI_finish();
	}
	for (int32 p = 0; p < topic->partitions; p++)
	{
		EstreamWatermarks wm;
		Datum		row[4];
		bool		nulls[4] = {false, false, false, false};
		int64		log_start;

		if (persisted)
		{
			if (SPI_connect() != SPI_OK_CONNECT)
				elog(ERROR, "SPI_connect failed");
			read_persisted(topic, p, GetLatestSnapshot(), &log_start, &wm);
			SPI_finish();
		}
		else
		{
			estream_partition_watermarks(topic, p, &wm);
			log_start = starts[p];
		}

		row[0] = Int32GetDatum(p);
		row[1] = Int64GetDatum(log_start);
		row[2] = Int64GetDatum(wm.stable);
		row[3] = Int64GetDatum(wm.next);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, nulls);
	}
	estream_leave(&sw);
	return (Datum) 0;
}

/*
 * offsets_for_times(topic, ts) returns, for every partition, the first
 * stable offset whose timestamp is at or after ts (null if there is none),
 * as Kafka's ListOffsets does.
 */
PG_FUNCTION_INFO_V1(estream_offsets_for_times);
Datum
estream_offsets_for_times(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	EstreamTopic *topic;
	TimestampTz ts;
	SPIPlanPtr	plan;
	char	   *sql;
	Oid			argtypes[3] = {INT4OID, TIMESTAMPTZOID, INT8OID};
	bool		persisted;
	EstreamUserSwitch sw;
	Oid			caller;

	require_arg(fcinfo, 0, "topic");
	require_arg(fcinfo, 1, "ts");
	persisted = reading_persisted();
	caller = estream_enter(&sw);
	topic = estream_authorize_topic(caller, text_to_cstring(PG_GETARG_TEXT_PP(0)),
									ESTREAM_OP_DESCRIBE);
	if (persisted)
		check_persisted(topic);
	ts = PG_GETARG_TIMESTAMPTZ(1);

	InitMaterializedSRF(fcinfo, 0);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	sql = psprintf("SELECT \"offset\", ts FROM estream.log_%d"
				   " WHERE partition OPERATOR(pg_catalog.=) $1"
				   " AND ts OPERATOR(pg_catalog.>=) $2"
				   " AND \"offset\" OPERATOR(pg_catalog.<) $3"
				   " ORDER BY \"offset\" LIMIT 1", topic->topic_id);
	plan = SPI_prepare(sql, 3, argtypes);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));

	for (int32 p = 0; p < topic->partitions; p++)
	{
		EstreamWatermarks wm;
		Datum		args[3];
		Datum		row[3];
		bool		nulls[3] = {false, true, true};
		int			rc;
		Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());
		int64		log_start;

		if (persisted)
			read_persisted(topic, p, snap, &log_start, &wm);
		else
			estream_partition_watermarks(topic, p, &wm);
		args[0] = Int32GetDatum(p);
		args[1] = TimestampTzGetDatum(ts);
		args[2] = Int64GetDatum(wm.stable);
		rc = SPI_execute_snapshot(plan, args, NULL,
								  persisted ? snap : GetLatestSnapshot(),
								  InvalidSnapshot, true, false, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "could not read the log of topic \"%s\"", topic->name);
		row[0] = Int32GetDatum(p);
		if (SPI_processed == 1)
		{
			row[1] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &nulls[1]);
			row[2] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &nulls[2]);
		}
		UnregisterSnapshot(snap);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, nulls);
	}

	SPI_finish();
	estream_leave(&sw);
	return (Datum) 0;
}

/*
 * estream._wait_for_records(topic text, partitions int[], from_offsets
 * bigint[], wait_ms int) returns bool
 *
 * For poll() and consume(): wait until one of the partitions has a stable
 * offset above its from_offset (a record, or a range of holes, to read),
 * or wait_ms passes.  Returns at once, true, if one already has; never
 * waits for the caller's own transaction.
 */
PG_FUNCTION_INFO_V1(estream_wait_for_records);
Datum
estream_wait_for_records(PG_FUNCTION_ARGS)
{
	EstreamTopic *topic;
	Datum	   *pdat;
	Datum	   *odat;
	bool	   *pnull;
	bool	   *onull;
	int			np;
	int32		wait_ms;
	EstreamPartReader *readers;
	int64	   *past;
	EstreamUserSwitch sw;
	Oid			caller;
	bool		moved;

	require_arg(fcinfo, 0, "topic");
	require_arg(fcinfo, 1, "partitions");
	require_arg(fcinfo, 2, "from_offsets");
	wait_ms = PG_ARGISNULL(3) ? 0 : PG_GETARG_INT32(3);
	estream_require_shmem();
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot wait for estream records during recovery"),
				 errhint("Consumer groups commit offsets and need the primary; use estream.fetch() on a standby.")));
	caller = estream_enter(&sw);
	topic = estream_authorize_topic(caller, text_to_cstring(PG_GETARG_TEXT_PP(0)),
									ESTREAM_OP_DESCRIBE);

	np = estream_position_arrays(PG_GETARG_ARRAYTYPE_P(1), PG_GETARG_ARRAYTYPE_P(2),
								 "from_offsets", &pdat, &pnull, &odat, &onull);
	if (np == 0)
	{
		estream_leave(&sw);
		PG_RETURN_BOOL(false);
	}

	readers = palloc(sizeof(EstreamPartReader) * np);
	past = palloc(sizeof(int64) * np);
	for (int i = 0; i < np; i++)
	{
		if (pnull[i] || onull[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("partitions and from_offsets must not contain nulls")));
		estream_check_partition(topic, DatumGetInt32(pdat[i]));
		/* takes no slot: see estream_wait_for_any() */
		estream_reader_init(&readers[i], topic, DatumGetInt32(pdat[i]));
		past[i] = DatumGetInt64(odat[i]);
		/* a watermark held by our own transaction would never move */
		if (estream_reader_holds_marker(&readers[i]))
			wait_ms = 0;
	}

	/*
	 * Still as the extension's owner: a partition without a slot has its
	 * watermark read from its log.
	 */
	moved = estream_wait_for_any(readers, past, np,
								 TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
															 Max(wait_ms, 0)));
	estream_leave(&sw);
	PG_RETURN_BOOL(moved);
}

/*
 * estream._timestamp_at(topic text, partition int, from_offset bigint)
 * returns timestamptz
 *
 * The timestamp of the first committed record at or after from_offset (or
 * the log start, if higher) below the stable offset, or null if there is
 * none: the age of the oldest record a consumer has not consumed, for
 * estream.consumer_lag.  Needs the describe right only (a monitor sees the
 * age, not the record).
 */
PG_FUNCTION_INFO_V1(estream_timestamp_at);
Datum
estream_timestamp_at(PG_FUNCTION_ARGS)
{
	EstreamTopic *topic;
	int32		partition;
	int64		from;
	EstreamWatermarks wm;
	int64		log_start;
	bool		persisted;
	Snapshot	snap;
	EstreamUserSwitch sw;
	Oid			caller;
	Datum		args[3];
	Oid			argtypes[3] = {INT4OID, INT8OID, INT8OID};
	Datum		result = (Datum) 0;
	bool		isnull = true;
	int			rc;

	require_arg(fcinfo, 0, "topic");
	require_arg(fcinfo, 1, "partition");
	require_arg(fcinfo, 2, "from_offset");
	partition = PG_GETARG_INT32(1);
	from = PG_GETARG_INT64(2);
	persisted = reading_persisted();
	caller = estream_enter(&sw);
	topic = estream_authorize_topic(caller, text_to_cstring(PG_GETARG_TEXT_PP(0)),
									ESTREAM_OP_DESCRIBE);
	estream_check_partition(topic, partition);
	if (persisted)
		check_persisted(topic);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (persisted)
	{
		snap = RegisterSnapshot(GetLatestSnapshot());
		read_persisted(topic, partition, snap, &log_start, &wm);
	}
	else
	{
		estream_partition_watermarks(topic, partition, &wm);
		log_start = log_start_offset(topic, partition);
		/* taken after the watermark was read */
		snap = RegisterSnapshot(GetLatestSnapshot());
	}
	args[0] = Int32GetDatum(partition);
	args[1] = Int64GetDatum(Max(from, log_start));
	args[2] = Int64GetDatum(wm.stable);
	rc = SPI_execute_snapshot(SPI_prepare(psprintf("SELECT ts FROM estream.log_%d"
												   " WHERE partition OPERATOR(pg_catalog.=) $1"
												   " AND \"offset\" OPERATOR(pg_catalog.>=) $2"
												   " AND \"offset\" OPERATOR(pg_catalog.<) $3"
												   " ORDER BY \"offset\" LIMIT 1", topic->topic_id),
										  3, argtypes),
							  args, NULL, snap, InvalidSnapshot, true, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read the log of topic \"%s\"", topic->name);
	if (SPI_processed == 1)
	{
		result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
			result = TimestampTzGetDatum(DatumGetTimestampTz(result));
	}
	UnregisterSnapshot(snap);
	SPI_finish();
	estream_leave(&sw);
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}

/*
 * estream._stable_offsets(topic text) returns (partition, stable) for every
 * partition of a topic: from its shared slot, or, for a partition without
 * one, from storage (taking no slot).  For compaction, which removes a
 * tombstone only below the stable offset.  Internal: not executable by
 * PUBLIC, no rights checked.
 */
PG_FUNCTION_INFO_V1(estream_stable_offsets);
Datum
estream_stable_offsets(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	EstreamTopic *topic;

	require_arg(fcinfo, 0, "topic");
	estream_require_shmem();
	topic = estream_lookup_topic(text_to_cstring(PG_GETARG_TEXT_PP(0)), false);

	InitMaterializedSRF(fcinfo, 0);
	for (int32 p = 0; p < topic->partitions; p++)
	{
		EstreamWatermarks wm;
		Datum		row[2];
		bool		nulls[2] = {false, false};

		estream_partition_watermarks(topic, p, &wm);
		row[0] = Int32GetDatum(p);
		row[1] = Int64GetDatum(wm.stable);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, nulls);
	}
	return (Datum) 0;
}

/*
 * _last_fetched_offset() returns bigint: the offset of the last record the
 * last fetch() of this session returned, or null if it returned none.
 */
PG_FUNCTION_INFO_V1(estream_last_fetched_offset);
Datum
estream_last_fetched_offset(PG_FUNCTION_ARGS)
{
	if (last_fetched < 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(last_fetched);
}
