/*-------------------------------------------------------------------------
 *
 * shmem.h
 *		Shared partition state: offset reservation, in-flight markers,
 *		stable watermarks, waits on one or several partitions, and the
 *		worker's housekeeping of them.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/shmem.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ESTREAM_SHMEM_H
#define ESTREAM_SHMEM_H

#include "lib/ilist.h"
#include "storage/condition_variable.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "topic.h"

/*
 * Key of a partition's shared state.  The log relation's OID (not the topic
 * id) identifies the topic so that a topic dropped and created again, or
 * an extension dropped and created again, does not meet the old entry.
 * OIDs can wrap around and be reused; a new log table that meets a stale
 * entry then merely starts at a higher offset (never a reused one).
 */
typedef struct EstreamPartKey
{
	Oid			dbid;
	Oid			logrelid;
	int32		partition;
} EstreamPartKey;

/*
 * One slot of shared partition state.  Slots live in a fixed array; a slot
 * is given to a partition when a producer first needs it and taken back
 * (evicted) when the partition is idle and the slot is needed, or when its
 * topic is dropped.  in_use, key and generation change only with both
 * EstreamShared->lock held exclusively and mutex held, so either one
 * keeps them still; every other field is protected by mutex.  cv is
 * initialized once at server start and never again, so a backend may
 * sleep on it whatever happens to the slot.  See shmem.c for the protocol.
 */
typedef struct EstreamPartition
{
	slock_t		mutex;
	bool		in_use;			/* given to the partition of key */
	bool		initialized;	/* next/committed_end valid */
	uint8		usage;			/* clock bit: used since the hand passed */
	int32		pins;			/* backends that need the slot to stay */
	uint64		generation;		/* changes when the slot is taken back */
	EstreamPartKey key;
	int64		next;			/* next offset to hand out */
	int64		committed_end;	/* 1 + highest offset of a committed xact */
	dlist_head	inflight;		/* EstreamMarker of open producing xacts */
	ConditionVariable cv;		/* broadcast when the watermark may move, and
								 * when the slot is taken back */
} EstreamPartition;

/*
 * A backend's reference to a partition's slot: valid while the slot's
 * generation is the same (checked under its mutex), or while a pin or a
 * marker of this backend holds the slot.
 */
typedef struct EstreamPartRef
{
	EstreamPartition *part;		/* NULL: no slot */
	uint64		generation;
} EstreamPartRef;

/* In-flight marker of one producing transaction on one partition (shmem) */
typedef struct EstreamMarker
{
	dlist_node	node;
	int64		first;			/* first offset this xact reserved */
	int			pid;			/* producing backend */
	TimestampTz since;			/* start of the statement that reserved first */
} EstreamMarker;

/* Watermarks of a partition as seen at one instant */
typedef struct EstreamWatermarks
{
	int64		stable;			/* every offset below it has ended */
	int64		next;			/* next offset to be reserved */
} EstreamWatermarks;

extern Size estream_partitions_shmem_size(void);
extern void estream_partitions_shmem_startup(LWLock *lock);
extern bool estream_shmem_ready(void);
extern void estream_require_shmem(void);

/* flags of estream_acquire_partition() */
#define ESTREAM_ACQUIRE_PIN		0x01	/* pin the slot until released */
#define ESTREAM_ACQUIRE_FRESH	0x02	/* do not trust the backend's cache */

extern void estream_acquire_partition(EstreamTopic *topic, int32 partition,
									  int flags, EstreamPartRef *ref);
extern void estream_unpin_partition(EstreamPartRef *ref);
extern void estream_check_transaction_partitions(EstreamTopic *topic,
												 const int32 *partitions, int n);
extern int64 estream_reserve(EstreamPartRef *ref, int64 count);

/*
 * A reader's view of one partition: the slot it found, if any, and, when it
 * found none, what it needs to notice that a producer gave it one since.
 */
typedef struct EstreamPartReader
{
	EstreamTopic *topic;
	int32		partition;
	EstreamPartKey key;
	uint32		hashcode;
	EstreamPartRef ref;			/* part NULL: no slot when last resolved */
	uint64		creations;		/* creation count of the key's bucket then */
	EstreamWatermarks last;		/* watermarks when last read */
} EstreamPartReader;

extern void estream_reader_init(EstreamPartReader *r, EstreamTopic *topic,
								int32 partition);
extern void estream_reader_watermarks(EstreamPartReader *r, EstreamWatermarks *wm);
extern bool estream_reader_holds_marker(EstreamPartReader *r);
extern bool estream_wait_for_stable(EstreamPartReader *r, int64 past,
									TimestampTz deadline, EstreamWatermarks *wm);
extern bool estream_wait_for_any(EstreamPartReader *readers, int64 *past, int n,
								 TimestampTz deadline);
extern void estream_partition_watermarks(EstreamTopic *topic, int32 partition,
										 EstreamWatermarks *wm);
extern void estream_set_persisting(bool on);
extern void estream_begin_drain(int32 topic_id);
extern bool estream_draining(int32 topic_id);
extern void estream_housekeep(int timeout_ms, int *reaped, int *terminated,
							  int *reclaimed);

#endif							/* ESTREAM_SHMEM_H */
