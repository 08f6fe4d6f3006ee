/*-------------------------------------------------------------------------
 *
 * murmur2.h
 *		Kafka's murmur2 hash and its partitioner.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/murmur2.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ESTREAM_MURMUR2_H
#define ESTREAM_MURMUR2_H

extern int32 estream_murmur2(const char *data, int len);
extern int32 estream_partition_for_key(const char *data, int len, int32 partitions);
extern char *estream_text_to_utf8(text *t, int *len);

#endif							/* ESTREAM_MURMUR2_H */
