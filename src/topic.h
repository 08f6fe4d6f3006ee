/*-------------------------------------------------------------------------
 *
 * topic.h
 *		Per-session cache of topic metadata and prepared plans, and the
 *		checks of rights that need a topic's metadata.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/topic.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ESTREAM_TOPIC_H
#define ESTREAM_TOPIC_H

#include "utils/array.h"

#include "executor/spi.h"

/* Cached metadata of one topic */
typedef struct EstreamTopic
{
	char		name[256];		/* hash key */
	int32		topic_id;
	Oid			logrelid;
	int32		partitions;
	Oid			owner;			/* the topic's owner (1.4 on), else InvalidOid */
	int32		segment;		/* current segment number */
	int64		max_message_bytes;	/* -1: estream.default_max_message_bytes */
	bool		log_append_time;	/* message.timestamp.type */
	bool		compacted;		/* cleanup.policy includes compact */
	bool		has_persisted;	/* estream.partition has the persisted stable
								 * offset (extension 1.2 or later) */
	int32		rr_next;		/* next partition for null keys, -1 unset */
	Oid			segrelid;		/* relation of the current segment, or
								 * InvalidOid until looked up */
	void	   *insert_plan;	/* SPIPlanPtr, kept */
	void	   *insert_batch_plan;	/* SPIPlanPtr, kept */
	void	   *fetch_plan;		/* SPIPlanPtr, kept */
	void	   *max_offset_plan;	/* SPIPlanPtr, kept */
} EstreamTopic;

extern void estream_topic_cache_init(void);
extern EstreamTopic *estream_lookup_topic(const char *name, bool missing_ok);
extern SPIPlanPtr estream_prepare_kept(const char *sql, int nargs, Oid *argtypes);
extern void estream_check_partition(EstreamTopic *topic, int32 partition);
extern bool estream_topic_cache_is_stale(void);
extern EstreamTopic *estream_authorize_topic(Oid caller, const char *name, uint32 op);
extern int	estream_position_arrays(ArrayType *partitions, ArrayType *offsets,
									const char *offsets_name,
									Datum **pdat, bool **pnull,
									Datum **odat, bool **onull);

#endif							/* ESTREAM_TOPIC_H */
