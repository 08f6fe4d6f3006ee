/*-------------------------------------------------------------------------
 *
 * estream.h
 *		Shared declarations of the estream extension: shared partition
 *		state (stable watermarks), topic metadata cache, partitioner.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/estream.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ESTREAM_H
#define ESTREAM_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/ilist.h"
#include "storage/condition_variable.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "errcodes.h"

/* GUC variables (estream.c) */
extern int	estream_max_partitions;
extern int	estream_max_partitions_per_xact;
extern int	estream_max_batch_records;
extern int	estream_max_batch_bytes;
extern int	estream_default_max_message_bytes;
extern bool estream_enable_worker;
extern int	estream_worker_naptime;
extern int	estream_transaction_timeout;
extern int	estream_maintenance_lock_timeout;

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
	ConditionVariable cv;		/* broadcast when the watermark may move,
								 * and when the slot is taken back */
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

/* Cached metadata of one topic (topic.c) */
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
	bool		has_persisted;	/* estream.partition has the persisted
								 * stable offset (extension 1.2 or later) */
	int32		rr_next;		/* next partition for null keys, -1 unset */
	Oid			segrelid;		/* relation of the current segment, or
								 * InvalidOid until looked up */
	void	   *insert_plan;	/* SPIPlanPtr, kept */
	void	   *insert_batch_plan;	/* SPIPlanPtr, kept */
	void	   *fetch_plan;		/* SPIPlanPtr, kept */
	void	   *max_offset_plan;	/* SPIPlanPtr, kept */
	void	   *log_start_plan; /* SPIPlanPtr, kept */
} EstreamTopic;

/* counters of a database worker, shown by estream.workers */
typedef enum EstreamWorkerCounter
{
	EWC_PERSISTED,				/* partition rows with a new stable offset */
	EWC_ROLLED,					/* segments started */
	EWC_DELETED,				/* segments emptied by retention */
	EWC_COMPACTED,				/* records removed by compaction */
	EWC_DROPPED,				/* empty segments dropped */
	EWC_REAPED,					/* markers of gone backends removed */
	EWC_TERMINATED,				/* sessions ended by transaction_timeout */
	EWC_CAPTURED,				/* change events written by capture */
	ESTREAM_WORKER_NCOUNTERS
} EstreamWorkerCounter;

/* resources and operations of rights (acl.c) */
typedef enum EstreamResource
{
	ESTREAM_TOPIC,
	ESTREAM_GROUP,
	ESTREAM_CLUSTER
} EstreamResource;

#define ESTREAM_NRESOURCES 3

#define ESTREAM_OP_READ				0x0001
#define ESTREAM_OP_WRITE			0x0002
#define ESTREAM_OP_DESCRIBE			0x0004
#define ESTREAM_OP_DESCRIBE_CONFIGS	0x0008
#define ESTREAM_OP_ALTER_CONFIGS	0x0010
#define ESTREAM_OP_ALTER			0x0020
#define ESTREAM_OP_CREATE			0x0040
#define ESTREAM_OP_DELETE			0x0080
#define ESTREAM_OP_CLUSTER_ACTION	0x0100
#define ESTREAM_OP_ALL				0x01FF

/* the identity estream_enter() switched from */
typedef struct EstreamUserSwitch
{
	Oid			userid;
	int			sec_context;
	bool		switched;
} EstreamUserSwitch;

/* acl.c */
extern void estream_acl_init(void);
extern void estream_acl_invalidate(void);
extern bool estream_acl_mode(void);
extern Oid	estream_extension_owner(void);
extern Oid	estream_caller(void);
extern EstreamResource estream_parse_resource(const char *s);
extern uint32 estream_parse_operations(const char *s, EstreamResource resource);
extern const char *estream_operation_name(uint32 op);
extern const char *estream_resource_name(EstreamResource resource);
extern bool estream_allowed(Oid role, uint32 op, EstreamResource resource,
							const char *name, Oid owner);
extern void estream_require(Oid role, uint32 op, EstreamResource resource,
							const char *name, Oid owner);
extern Oid	estream_enter(EstreamUserSwitch *sw);
extern void estream_leave(EstreamUserSwitch *sw);
extern EstreamTopic *estream_authorize_topic(Oid caller, const char *name, uint32 op);

/* shmem.c */
extern void estream_shmem_init(void);
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

/* cdc.c */
extern void estream_cdc_init(void);
extern int64 estream_cdc_run(bool *more, bool *active, bool *caught_up);
extern void estream_cdc_abort(void);
extern void estream_cdc_stop(void);
extern void estream_cdc_drop(void);

/* worker.c */
extern int	estream_capture_copy_timeout;
extern int	estream_capture_copy_lock_timeout;
extern void estream_worker_cdc_progress(TimestampTz commit_ts, XLogRecPtr position);
struct PlannedStmt;
extern void estream_worker_init(void);
extern Size estream_worker_shmem_size(void);
extern void estream_worker_shmem_startup(LWLock *lock);

/* topic.c */
extern void estream_topic_cache_init(void);
extern EstreamTopic *estream_lookup_topic(const char *name, bool missing_ok);
extern Oid	estream_schema_oid(void);
extern SPIPlanPtr estream_prepare_kept(const char *sql, int nargs, Oid *argtypes);
extern void estream_check_partition(EstreamTopic *topic, int32 partition);
extern bool estream_topic_cache_is_stale(void);

/* murmur2.c */
extern int32 estream_murmur2(const char *data, int len);
extern int32 estream_partition_for_key(const char *data, int len, int32 partitions);
extern char *estream_text_to_utf8(text *t, int *len);

/* produce.c */
extern int32 estream_sticky_partition(EstreamTopic *topic);

#endif							/* ESTREAM_H */
