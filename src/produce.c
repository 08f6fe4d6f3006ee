/*-------------------------------------------------------------------------
 *
 * produce.c
 *		estream.produce() and its binary and batch forms.
 *
 * A produce call validates every record first (sizes, headers, partition),
 * then reserves offsets in shared memory (shmem.c), then INSERTs the rows
 * into the topic's log through a kept SPI plan.  Nothing is reserved for a
 * call that fails validation; a call that fails after reserving leaves only
 * a hole, which readers skip.  The rows become visible to consumers when,
 * and only if, the caller's transaction commits.
 *
 * From extension version 1.4 a call first checks the caller's write right
 * on the topic (acl.c), before the topic's existence, then works as the
 * extension's owner, which alone may write estream's tables.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/produce.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "estream.h"
#include "acl.h"
#include "murmur2.h"
#include "schema.h"
#include "shmem.h"
#include "topic.h"

/* One record being produced */
typedef struct ProduceRecord
{
	bytea	   *key;			/* NULL for a null key */
	Datum		value;			/* jsonb or bytea */
	bool		value_null;
	Jsonb	   *headers;		/* NULL for no headers */
	int32		partition;
	int64		offset;
} ProduceRecord;

#define INSERT_COLUMNS \
	"(segment, partition, \"offset\", ts, key, value, value_bin, headers)"

/*
 * Headers are a JSON object whose values are strings or null, like Kafka's
 * record headers (string keys, byte-string values).
 */
static void
check_headers(Jsonb *headers)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (!JB_ROOT_IS_OBJECT(headers) || JB_ROOT_IS_SCALAR(headers))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("record headers must be a JSON object"),
				 errdetail("Headers map names to string values, as in {\"trace-id\": \"abc\"}.")));

	it = JsonbIteratorInit(&headers->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_VALUE && v.type != jbvString && v.type != jbvNull)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("record header values must be strings or null"),
					 errdetail("Headers map names to string values, as in {\"trace-id\": \"abc\"}.")));
	}
}

static bytea *
text_key_to_bytes(text *key)
{
	int			len;
	char	   *utf8 = estream_text_to_utf8(key, &len);
	bytea	   *result = palloc(VARHDRSZ + len);

	SET_VARSIZE(result, VARHDRSZ + len);
	memcpy(VARDATA(result), utf8, len);
	return result;
}

static Size
record_size(ProduceRecord *r)
{
	Size		size = 0;

	if (r->key != NULL)
		size += VARSIZE_ANY_EXHDR(r->key);
	if (!r->value_null)
		size += VARSIZE_ANY_EXHDR(DatumGetPointer(r->value));
	if (r->headers != NULL)
		size += VARSIZE_ANY_EXHDR(r->headers);
	return size;
}

static void
check_record_size(EstreamTopic *topic, ProduceRecord *r, int index)
{
	Size		size = record_size(r);
	int64		limit = topic->max_message_bytes >= 0 ?
	topic->max_message_bytes : estream_default_max_message_bytes;

	if ((int64) size > limit)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("record is too large for topic \"%s\"", topic->name),
				 index >= 0 ?
				 errdetail("Record %d of the batch has %zu bytes of key, value and headers; the limit is %lld bytes.",
						   index + 1, size, (long long) limit) :
				 errdetail("The record has %zu bytes of key, value and headers; the limit is %lld bytes.",
						   size, (long long) limit),
				 errhint("Raise the topic's max.message.bytes with estream.alter_topic().")));
}

/*
 * Partition for a null key: round-robin over the topic's partitions,
 * starting at a backend-dependent place so that producers spread.
 */
static int32
sticky_partition(EstreamTopic *topic)
{
	int32		p;

	if (topic->rr_next < 0 || topic->rr_next >= topic->partitions)
		topic->rr_next = MyProcPid % topic->partitions;
	p = topic->rr_next;
	topic->rr_next = (p + 1) % topic->partitions;
	return p;
}

static void
check_can_produce(void)
{
	estream_require_shmem();
	PreventCommandIfReadOnly("estream.produce()");
	PreventCommandDuringRecovery("estream.produce()");
	if (IsInParallelMode())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("cannot produce during a parallel operation")));
}

/*
 * Prepare (once per backend and topic) the INSERT plans, so that a call
 * that fails to plan fails before it reserves offsets.
 */
static void
prepare_insert_plans(EstreamTopic *topic, bool batch)
{
	if (!batch && topic->insert_plan == NULL)
	{
		char	   *sql;
		Oid			argtypes[8] = {INT4OID, INT4OID, INT8OID, TIMESTAMPTZOID,
		BYTEAOID, JSONBOID, BYTEAOID, JSONBOID};

		sql = psprintf("INSERT INTO estream.log_%d_%d " INSERT_COLUMNS
					   " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", topic->topic_id,
					   topic->segment);
		topic->insert_plan = estream_prepare_kept(sql, 8, argtypes);
	}
	if (batch && topic->insert_batch_plan == NULL)
	{
		char	   *sql;
		Oid			argtypes[8] = {INT4OID, INT4ARRAYOID, INT8ARRAYOID, TIMESTAMPTZOID,
		BYTEAARRAYOID, JSONBARRAYOID, BYTEAARRAYOID, JSONBARRAYOID};

		sql = psprintf("INSERT INTO estream.log_%d_%d " INSERT_COLUMNS
					   " SELECT $1, u.p, u.o, $4, u.k, u.v, u.b, u.h"
					   " FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3),"
					   " pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7),"
					   " pg_catalog.unnest($8)) AS u(p, o, k, v, b, h)",
					   topic->topic_id, topic->segment);
		topic->insert_batch_plan = estream_prepare_kept(sql, 8, argtypes);
	}
}

/*
 * Is the segment exactly as create_topic made it: the eight columns of
 * INSERT_COLUMNS with their types, no triggers, no row-level security, no
 * CHECK constraints?  Only then may insert_direct() skip the executor.
 */
static bool
segment_is_plain(Relation rel)
{
	static const Oid types[8] = {INT4OID, INT4OID, INT8OID, TIMESTAMPTZOID,
	BYTEAOID, JSONBOID, BYTEAOID, JSONBOID};
	TupleDesc	desc = RelationGetDescr(rel);

	if (rel->trigdesc != NULL || rel->rd_rel->relrowsecurity ||
		(desc->constr != NULL && desc->constr->num_check > 0) ||
		desc->natts != lengthof(types))
		return false;
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || att->atttypid != types[i])
			return false;
	}
	return true;
}

/*
 * Open the current segment of a topic for a direct insert and check the
 * caller's INSERT right on it.  Done before reserving offsets.  Returns NULL
 * if the segment is not plain (triggers, say): then the SPI path, which
 * honours all of that, must insert.
 */
static Relation
open_segment(EstreamTopic **topicp)
{
	EstreamTopic *topic = *topicp;
	Relation	rel;
	AclResult	aclresult;

	for (;;)
	{
		if (!OidIsValid(topic->segrelid))
		{
			char		relname[NAMEDATALEN];

			snprintf(relname, sizeof(relname), "log_%d_%d", topic->topic_id, topic->segment);
			topic->segrelid = get_relname_relid(relname, estream_schema_oid());
			if (!OidIsValid(topic->segrelid))
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_OBJECT),
						 errmsg("segment %d of topic \"%s\" does not exist",
								topic->segment, topic->name),
						 errhint("The topic may have been dropped concurrently.")));
		}

		rel = try_table_open(topic->segrelid, RowExclusiveLock);

		/*
		 * Taking the lock processed invalidations.  If the worker started a
		 * new segment (or the topic changed) since the lookup, look again:
		 * once the worker has sealed a segment, nobody may insert into it. A
		 * transaction that held the lock already keeps its segment, and the
		 * worker cannot seal that one before it ends.
		 */
		if (!estream_topic_cache_is_stale())
			break;
		if (rel != NULL)
			table_close(rel, RowExclusiveLock);
		topic = estream_lookup_topic(topic->name, false);
	}
	*topicp = topic;

	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("segment %d of topic \"%s\" does not exist",
						topic->segment, topic->name),
				 errhint("The topic may have been dropped concurrently.")));

	/*
	 * From 1.4 on the caller's write right was checked, and this runs as the
	 * extension's owner; before, the caller's table privilege decides.
	 */
	aclresult = pg_class_aclcheck(RelationGetRelid(rel), GetUserId(), ACL_INSERT);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, get_relkind_objtype(rel->rd_rel->relkind),
					   RelationGetRelationName(rel));

	if (!segment_is_plain(rel))
	{
		table_close(rel, NoLock);
		return NULL;
	}
	return rel;
}

/* fill a virtual slot of a segment with one record */
static void
fill_slot(TupleTableSlot *slot, EstreamTopic *topic, ProduceRecord *r, bool binary,
		  TimestampTz ts)
{
	Datum	   *values = slot->tts_values;
	bool	   *nulls = slot->tts_isnull;

	ExecClearTuple(slot);
	values[0] = Int32GetDatum(topic->segment);
	nulls[0] = false;
	values[1] = Int32GetDatum(r->partition);
	nulls[1] = false;
	values[2] = Int64GetDatum(r->offset);
	nulls[2] = false;
	values[3] = TimestampTzGetDatum(ts);
	nulls[3] = false;
	values[4] = PointerGetDatum(r->key);
	nulls[4] = (r->key == NULL);
	values[5] = values[6] = r->value;
	nulls[5] = nulls[6] = true;
	if (!r->value_null)
		nulls[binary ? 6 : 5] = false;
	values[7] = PointerGetDatum(r->headers);
	nulls[7] = (r->headers == NULL);
	ExecStoreVirtualTuple(slot);
}

/*
 * What a direct batch insert writes at once, as COPY's buffers: up to 1,000
 * records or about 64 kB of keys, values and headers, whichever comes first.
 */
#define DIRECT_BATCH		1000
#define DIRECT_BATCH_BYTES	65536

/*
 * Insert records into an open segment without the executor's per-query
 * set-up, as the logical replication apply worker does for one row and COPY
 * for many: the tuples (one record with table_tuple_insert(), a batch with
 * table_multi_insert() and a bulk-insert state, which extends the segment
 * by several pages at a time), then their index entries; what a batch
 * allocates is freed after it.  segment_is_plain() checked the shape; every
 * NOT NULL column is set; the partition constraint holds because segment is
 * the segment's own number.
 */
static void
insert_direct(Relation rel, EstreamTopic *topic, ProduceRecord *recs, int n,
			  bool binary, TimestampTz ts)
{
	EState	   *estate = CreateExecutorState();
	ResultRelInfo *rri = makeNode(ResultRelInfo);
	CommandId	cid = GetCurrentCommandId(true);
	BulkInsertState bistate = n > 1 ? GetBulkInsertState() : NULL;
	int			nslots = Min(n, DIRECT_BATCH);
	TupleTableSlot **slots = palloc(sizeof(TupleTableSlot *) * nslots);
	MemoryContext batch_cxt = AllocSetContextCreate(CurrentMemoryContext,
													"estream batch insert",
													ALLOCSET_DEFAULT_SIZES);
	int			done = 0;

	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
	for (int i = 0; i < nslots; i++)
		slots[i] = ExecInitExtraTupleSlot(estate, RelationGetDescr(rel), &TTSOpsVirtual);

	while (done < n)
	{
		MemoryContext old;
		Size		bytes = 0;
		int			m = 0;

		while (done + m < n && m < nslots && (m == 0 || bytes < DIRECT_BATCH_BYTES))
		{
			fill_slot(slots[m], topic, &recs[done + m], binary, ts);
			bytes += record_size(&recs[done + m]);
			m++;
		}
		old = MemoryContextSwitchTo(batch_cxt);
		if (n == 1)
			table_tuple_insert(rel, slots[0], cid, 0, NULL);
		else
			table_multi_insert(rel, slots, m, cid, 0, bistate);
		for (int i = 0; i < m && rri->ri_NumIndices > 0; i++)
		{
			ResetPerTupleExprContext(estate);
			(void) ExecInsertIndexTuples(rri, slots[i], estate, false, false, NULL, NIL);
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(batch_cxt);
		done += m;
	}

	if (bistate != NULL)
		FreeBulkInsertState(bistate);
	MemoryContextDelete(batch_cxt);
	ExecCloseIndices(rri);
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
}

/*
 * Insert one record whose offset is already reserved.  SPI is connected and
 * the plan prepared.
 */
static void
insert_one(EstreamTopic *topic, ProduceRecord *r, bool binary, TimestampTz ts)
{
	Datum		values[8];
	char		nulls[8];
	int			rc;

	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int32GetDatum(topic->segment);
	values[1] = Int32GetDatum(r->partition);
	values[2] = Int64GetDatum(r->offset);
	values[3] = TimestampTzGetDatum(ts);
	values[4] = PointerGetDatum(r->key);
	if (r->key == NULL)
		nulls[4] = 'n';
	values[5] = values[6] = r->value;
	nulls[5] = nulls[6] = 'n';
	if (!r->value_null)
		nulls[binary ? 6 : 5] = ' ';
	values[7] = PointerGetDatum(r->headers);
	if (r->headers == NULL)
		nulls[7] = 'n';

	rc = SPI_execute_plan(topic->insert_plan, values, nulls, false, 0);
	if (rc != SPI_OK_INSERT || SPI_processed != 1)
		elog(ERROR, "could not insert into the log of topic \"%s\"", topic->name);
}

static ArrayType *
make_array(Datum *elems, bool *nulls, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return construct_md_array(elems, nulls, 1, dims, lbs, elemtype,
							  typlen, typbyval, typalign);
}

/*
 * Insert n records whose offsets are reserved, in one statement.  SPI is
 * connected.
 */
static void
insert_many(EstreamTopic *topic, ProduceRecord *recs, int n, bool binary,
			TimestampTz ts)
{
	Datum	   *parts = palloc(sizeof(Datum) * n);
	Datum	   *offs = palloc(sizeof(Datum) * n);
	Datum	   *keys = palloc(sizeof(Datum) * n);
	Datum	   *vals = palloc(sizeof(Datum) * n);
	Datum	   *hdrs = palloc(sizeof(Datum) * n);
	bool	   *keynulls = palloc(sizeof(bool) * n);
	bool	   *valnulls = palloc(sizeof(bool) * n);
	bool	   *allnulls = palloc(sizeof(bool) * n);
	bool	   *hdrnulls = palloc(sizeof(bool) * n);
	Datum		values[8];
	char		nulls[8];
	int			rc;

	for (int i = 0; i < n; i++)
	{
		parts[i] = Int32GetDatum(recs[i].partition);
		offs[i] = Int64GetDatum(recs[i].offset);
		keys[i] = PointerGetDatum(recs[i].key);
		keynulls[i] = (recs[i].key == NULL);
		vals[i] = recs[i].value;
		valnulls[i] = recs[i].value_null;
		allnulls[i] = true;
		hdrs[i] = PointerGetDatum(recs[i].headers);
		hdrnulls[i] = (recs[i].headers == NULL);
	}

	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int32GetDatum(topic->segment);
	values[1] = PointerGetDatum(make_array(parts, NULL, n, INT4OID));
	values[2] = PointerGetDatum(make_array(offs, NULL, n, INT8OID));
	values[3] = TimestampTzGetDatum(ts);
	values[4] = PointerGetDatum(make_array(keys, keynulls, n, BYTEAOID));
	if (binary)
	{
		values[5] = PointerGetDatum(make_array(vals, allnulls, n, JSONBOID));
		values[6] = PointerGetDatum(make_array(vals, valnulls, n, BYTEAOID));
	}
	else
	{
		values[5] = PointerGetDatum(make_array(vals, valnulls, n, JSONBOID));
		values[6] = PointerGetDatum(make_array(vals, allnulls, n, BYTEAOID));
	}
	values[7] = PointerGetDatum(make_array(hdrs, hdrnulls, n, JSONBOID));

	rc = SPI_execute_plan(topic->insert_batch_plan, values, nulls, false, 0);
	if (rc != SPI_OK_INSERT || SPI_processed != (uint64) n)
		elog(ERROR, "could not insert into the log of topic \"%s\"", topic->name);
}

/*
 * Produce n validated records: choose partitions, reserve offsets (one
 * contiguous block per partition, in partition order), insert.
 */
static void
produce_records(EstreamTopic *topic, ProduceRecord *recs, int n, bool binary,
				bool has_partition, int32 partition, TimestampTz ts, Oid caller)
{
	EstreamTopic *authorized = topic;
	int32		sticky = -1;
	Relation	segrel = NULL;
	int64	   *counts;
	int64	   *nextoff;
	int32	   *parts;
	int			nparts = 0;

	/*
	 * Lock the current segment and check the INSERT right before reserving
	 * anything.  This may find the topic changed (a new segment, more
	 * partitions), so everything else uses the topic it returns.
	 */
	segrel = open_segment(&topic);

	/*
	 * The lookup done again after the lock may have found another topic of
	 * that name (dropped and created again meanwhile, by another role): the
	 * caller's right is checked again on what it found.
	 */
	if (topic != authorized)
		estream_require(caller, ESTREAM_OP_WRITE, ESTREAM_TOPIC, topic->name, topic->owner);

	if (has_partition)
		estream_check_partition(topic, partition);

	if (topic->log_append_time || ts == DT_NOBEGIN)
		ts = GetCurrentTimestamp();

	counts = palloc0(sizeof(int64) * topic->partitions);
	nextoff = palloc0(sizeof(int64) * topic->partitions);

	for (int i = 0; i < n; i++)
	{
		ProduceRecord *r = &recs[i];

		if (r->key == NULL && topic->compacted)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("compacted topic \"%s\" does not accept records without a key",
							topic->name),
					 errdetail("Record %d of the call has a null key; compaction keeps the latest record per key.",
							   i + 1),
					 errhint("Give every record of a topic with cleanup.policy \"compact\" a key.")));
		if (has_partition)
			r->partition = partition;
		else if (r->key != NULL)
			r->partition = estream_partition_for_key(VARDATA_ANY(r->key),
													 VARSIZE_ANY_EXHDR(r->key),
													 topic->partitions);
		else
		{
			/* all null-key records of one call stick to one partition */
			if (sticky < 0)
				sticky = sticky_partition(topic);
			r->partition = sticky;
		}
		counts[r->partition]++;
	}

	/*
	 * Records go straight into a plain segment; into a segment with triggers
	 * (say) through SPI.
	 */
	if (segrel == NULL)
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		prepare_insert_plans(topic, n > 1);
	}

	/*
	 * Before reserving anything: the transaction stays within
	 * estream.max_partitions_per_transaction, and every partition has its
	 * slot (initialized).  A call to several partitions pins their slots
	 * until it has reserved in all of them, so that it either gets them all
	 * or fails, with 53200, having reserved nothing; a call to one partition
	 * checks in the reservation that its slot is still the one it looked up,
	 * and looks again if not.
	 */
	parts = palloc(sizeof(int32) * topic->partitions);
	for (int p = 0; p < topic->partitions; p++)
	{
		if (counts[p] > 0)
			parts[nparts++] = p;
	}
	estream_check_transaction_partitions(topic, parts, nparts);

	if (nparts == 1)
	{
		EstreamPartRef ref;
		int			flags = 0;

		for (;;)
		{
			estream_acquire_partition(topic, parts[0], flags, &ref);
			nextoff[parts[0]] = estream_reserve(&ref, counts[parts[0]]);
			if (nextoff[parts[0]] >= 0)
				break;
			/* the slot was taken back since this backend last used it */
			flags = ESTREAM_ACQUIRE_FRESH;
		}
	}
	else
	{
		EstreamPartRef *refs = palloc(sizeof(EstreamPartRef) * nparts);

		for (int i = 0; i < nparts; i++)
			estream_acquire_partition(topic, parts[i], ESTREAM_ACQUIRE_PIN, &refs[i]);
		for (int i = 0; i < nparts; i++)
		{
			nextoff[parts[i]] = estream_reserve(&refs[i], counts[parts[i]]);
			if (nextoff[parts[i]] < 0)
				elog(ERROR, "estream: pinned partition slot was taken back");
		}
		/* the markers hold the slots now */
		for (int i = 0; i < nparts; i++)
			estream_unpin_partition(&refs[i]);
	}

	for (int i = 0; i < n; i++)
		recs[i].offset = nextoff[recs[i].partition]++;

	if (segrel != NULL)
	{
		insert_direct(segrel, topic, recs, n, binary, ts);
		table_close(segrel, NoLock);
		return;
	}
	if (n == 1)
		insert_one(topic, &recs[0], binary, ts);
	else
		insert_many(topic, recs, n, binary, ts);
	SPI_finish();
}

static TimestampTz
check_timestamp(TimestampTz ts)
{
	if (TIMESTAMP_NOT_FINITE(ts))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("record timestamp must be finite"),
				 errdetail("Record timestamps cannot be infinity or -infinity.")));
	return ts;
}

static char *
topic_arg(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("topic must not be null")));
	return text_to_cstring(PG_GETARG_TEXT_PP(0));
}

/*
 * Shared body of produce(topic, value jsonb, key text, partition, headers, ts)
 * and produce_binary(topic, value bytea, key bytea, partition, headers, ts).
 */
static Datum
produce_single(FunctionCallInfo fcinfo, bool binary)
{
	char	   *name = topic_arg(fcinfo);
	EstreamTopic *topic;
	ProduceRecord rec;
	TupleDesc	tupdesc;
	Datum		result[2];
	bool		rnulls[2] = {false, false};
	TimestampTz ts = DT_NOBEGIN;
	EstreamUserSwitch sw;
	Oid			caller;

	check_can_produce();
	caller = estream_enter(&sw);
	topic = estream_authorize_topic(caller, name, ESTREAM_OP_WRITE);

	rec.value_null = PG_ARGISNULL(1);
	rec.value = rec.value_null ? (Datum) 0 :
		PointerGetDatum(PG_DETOAST_DATUM(PG_GETARG_DATUM(1)));
	if (PG_ARGISNULL(2))
		rec.key = NULL;
	else if (binary)
		rec.key = PG_GETARG_BYTEA_PP(2);
	else
		rec.key = text_key_to_bytes(PG_GETARG_TEXT_PP(2));
	rec.headers = PG_ARGISNULL(4) ? NULL : PG_GETARG_JSONB_P(4);
	if (rec.headers != NULL)
		check_headers(rec.headers);
	if (!PG_ARGISNULL(5))
		ts = check_timestamp(PG_GETARG_TIMESTAMPTZ(5));
	check_record_size(topic, &rec, -1);

	produce_records(topic, &rec, 1, binary,
					!PG_ARGISNULL(3), PG_ARGISNULL(3) ? 0 : PG_GETARG_INT32(3), ts, caller);
	estream_leave(&sw);

	/* the result row descriptor is resolved once per call site */
	tupdesc = (TupleDesc) fcinfo->flinfo->fn_extra;
	if (tupdesc == NULL)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);

		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		tupdesc = BlessTupleDesc(CreateTupleDescCopy(tupdesc));
		MemoryContextSwitchTo(oldcxt);
		fcinfo->flinfo->fn_extra = tupdesc;
	}
	result[0] = Int32GetDatum(rec.partition);
	result[1] = Int64GetDatum(rec.offset);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, result, rnulls)));
}

PG_FUNCTION_INFO_V1(estream_produce);
Datum
estream_produce(PG_FUNCTION_ARGS)
{
	return produce_single(fcinfo, false);
}

PG_FUNCTION_INFO_V1(estream_produce_binary);
Datum
estream_produce_binary(PG_FUNCTION_ARGS)
{
	return produce_single(fcinfo, true);
}

static void
deconstruct_arg(FunctionCallInfo fcinfo, int argno, Oid elemtype, const char *what,
				Datum **elems, bool **nulls, int *n)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(argno);
	int16		typlen;
	bool		typbyval;
	char		typalign;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s must be a one-dimensional array", what)));
	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	deconstruct_array(arr, elemtype, typlen, typbyval, typalign, elems, nulls, n);
}

/*
 * Shared body of produce_batch(topic, values jsonb[], keys text[],
 * partition, headers jsonb[], ts) and produce_batch_binary(topic,
 * values bytea[], keys bytea[], partition, headers jsonb[], ts).  Returns
 * (partition, offset) of every record, in input order.
 */
static Datum
produce_batch(FunctionCallInfo fcinfo, bool binary)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *name = topic_arg(fcinfo);
	EstreamTopic *topic;
	Datum	   *vals;
	bool	   *valnulls;
	Datum	   *keys = NULL;
	bool	   *keynulls = NULL;
	Datum	   *hdrs = NULL;
	bool	   *hdrnulls = NULL;
	int			n;
	int			nkeys;
	int			nhdrs;
	ProduceRecord *recs;
	Size		total = 0;
	TimestampTz ts = DT_NOBEGIN;
	EstreamUserSwitch sw;
	Oid			caller;

	check_can_produce();
	caller = estream_enter(&sw);
	topic = estream_authorize_topic(caller, name, ESTREAM_OP_WRITE);

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("values must not be null"),
				 errhint("Pass an array of values; a null element is a tombstone.")));
	deconstruct_arg(fcinfo, 1, binary ? BYTEAOID : JSONBOID, "values", &vals, &valnulls, &n);

	if (n > estream_max_batch_records)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("batch of %d records is too large", n),
				 errdetail("One call can produce at most %d records.", estream_max_batch_records),
				 errhint("Split the batch, or raise estream.max_batch_records.")));

	if (!PG_ARGISNULL(2))
	{
		deconstruct_arg(fcinfo, 2, binary ? BYTEAOID : TEXTOID, "keys", &keys, &keynulls, &nkeys);
		if (nkeys != n)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("keys and values must have the same length"),
					 errdetail("There are %d values and %d keys.", n, nkeys)));
	}
	if (!PG_ARGISNULL(4))
	{
		deconstruct_arg(fcinfo, 4, JSONBOID, "headers", &hdrs, &hdrnulls, &nhdrs);
		if (nhdrs != n)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("headers and values must have the same length"),
					 errdetail("There are %d values and %d headers.", n, nhdrs)));
	}
	if (!PG_ARGISNULL(5))
		ts = check_timestamp(PG_GETARG_TIMESTAMPTZ(5));

	recs = palloc(sizeof(ProduceRecord) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		ProduceRecord *r = &recs[i];

		r->value_null = valnulls[i];
		r->value = valnulls[i] ? (Datum) 0 :
			PointerGetDatum(PG_DETOAST_DATUM(vals[i]));
		if (keys == NULL || keynulls[i])
			r->key = NULL;
		else if (binary)
			r->key = DatumGetByteaPP(keys[i]);
		else
			r->key = text_key_to_bytes(DatumGetTextPP(keys[i]));
		if (hdrs == NULL || hdrnulls[i])
			r->headers = NULL;
		else
		{
			r->headers = DatumGetJsonbP(hdrs[i]);
			check_headers(r->headers);
		}
		check_record_size(topic, r, i);
		total += record_size(r);
	}

	if (total > (Size) estream_max_batch_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("batch of %zu bytes is too large", total),
				 errdetail("One call can produce at most %d bytes of keys, values and headers.",
						   estream_max_batch_bytes),
				 errhint("Split the batch, or raise estream.max_batch_bytes.")));

	if (n > 0)
		produce_records(topic, recs, n, binary,
						!PG_ARGISNULL(3), PG_ARGISNULL(3) ? 0 : PG_GETARG_INT32(3), ts, caller);
	else if (!PG_ARGISNULL(3))
		estream_check_partition(topic, PG_GETARG_INT32(3));
	estream_leave(&sw);

	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < n; i++)
	{
		Datum		row[2];
		bool		rnulls[2] = {false, false};

		row[0] = Int32GetDatum(recs[i].partition);
		row[1] = Int64GetDatum(recs[i].offset);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, rnulls);
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(estream_produce_batch);
Datum
estream_produce_batch(PG_FUNCTION_ARGS)
{
	return produce_batch(fcinfo, false);
}

PG_FUNCTION_INFO_V1(estream_produce_batch_binary);
Datum
estream_produce_batch_binary(PG_FUNCTION_ARGS)
{
	return produce_batch(fcinfo, true);
}
