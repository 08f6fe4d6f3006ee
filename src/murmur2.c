/*-------------------------------------------------------------------------
 *
 * murmur2.c
 *		Kafka-compatible key partitioner.
 *
 * Kafka's Java client hashes the serialized key bytes with its variant of
 * MurmurHash2 (seed 0x9747b28c) and picks (hash & 0x7fffffff) % partitions.
 * The same key bytes therefore land in the same partition here and in a
 * Kafka cluster with the same partition count.  All arithmetic is done on
 * uint32 so that overflow wraps as Java's int arithmetic does.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/murmur2.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "murmur2.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#define MURMUR2_SEED	0x9747b28cU
#define MURMUR2_M		0x5bd1e995U
#define MURMUR2_R		24

int32
estream_murmur2(const char *data, int len)
{
	const unsigned char *p = (const unsigned char *) data;
	uint32		h = MURMUR2_SEED ^ (uint32) len;
	int			nblocks = len / 4;
	int			tail = nblocks * 4;

	for (int i = 0; i < nblocks; i++)
	{
		uint32		k;

		k = (uint32) p[i * 4] |
			((uint32) p[i * 4 + 1] << 8) |
			((uint32) p[i * 4 + 2] << 16) |
			((uint32) p[i * 4 + 3] << 24);
		k *= MURMUR2_M;
		k ^= k >> MURMUR2_R;
		k *= MURMUR2_M;
		h *= MURMUR2_M;
		h ^= k;
	}

	switch (len % 4)
	{
		case 3:
			h ^= (uint32) p[tail + 2] << 16;
			/* FALLTHROUGH */
		case 2:
			h ^= (uint32) p[tail + 1] << 8;
			/* FALLTHROUGH */
		case 1:
			h ^= (uint32) p[tail];
			h *= MURMUR2_M;
	}

	h ^= h >> 13;
	h *= MURMUR2_M;
	h ^= h >> 15;

	return (int32) h;
}

int32
estream_partition_for_key(const char *data, int len, int32 partitions)
{
	uint32		h = (uint32) estream_murmur2(data, len);

	return (int32) ((h & 0x7fffffffU) % (uint32) partitions);
}

/*
 * The bytes of a text value in UTF-8, whatever the database encoding.  The
 * result may point into the argument; it is not NUL-terminated.
 */
char	   *
estream_text_to_utf8(text *t, int *len)
{
	char	   *src = VARDATA_ANY(t);
	int			srclen = VARSIZE_ANY_EXHDR(t);
	char	   *conv;

	conv = pg_server_to_any(src, srclen, PG_UTF8);
	*len = (conv == src) ? srclen : (int) strlen(conv);
	return conv;
}

static void
check_partition_count(int32 partitions)
{
	if (partitions < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("partition count must be at least 1"),
				 errdetail("The partition count given was %d.", partitions)));
}

/*
 * estream.partition_for(key text, partitions int) returns int
 *
 * The key is hashed as its UTF-8 bytes, whatever the database encoding.
 */
PG_FUNCTION_INFO_V1(estream_partition_for);
Datum
estream_partition_for(PG_FUNCTION_ARGS)
{
	text	   *key = PG_GETARG_TEXT_PP(0);
	int32		partitions = PG_GETARG_INT32(1);
	char	   *utf8;
	int			len;

	check_partition_count(partitions);
	utf8 = estream_text_to_utf8(key, &len);
	PG_RETURN_INT32(estream_partition_for_key(utf8, len, partitions));
}

/*
 * estream.partition_for(key bytea, partitions int) returns int
 */
PG_FUNCTION_INFO_V1(estream_partition_for_bytea);
Datum
estream_partition_for_bytea(PG_FUNCTION_ARGS)
{
	bytea	   *key = PG_GETARG_BYTEA_PP(0);
	int32		partitions = PG_GETARG_INT32(1);

	check_partition_count(partitions);
	PG_RETURN_INT32(estream_partition_for_key(VARDATA_ANY(key),
											  VARSIZE_ANY_EXHDR(key),
											  partitions));
}
