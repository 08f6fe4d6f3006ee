/*-------------------------------------------------------------------------
 *
 * estream.c
 *		Module entry point of estream: PG_MODULE_MAGIC, GUCs, and a
 *		_PG_init that delegates to the subsystems.
 *
 * _PG_init never raises an error: the library is also loaded in backends
 * that did not preload it (CREATE EXTENSION without shared_preload_libraries),
 * where it must stay quiet and let the SQL functions report the problem.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/estream.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "estream.h"

PG_MODULE_MAGIC;

int			estream_max_partitions = 4096;
int			estream_max_partitions_per_xact = 256;
int			estream_max_batch_records = 100000;
int			estream_max_batch_bytes = 64 * 1024 * 1024;
int			estream_default_max_message_bytes = 1024 * 1024;

void		_PG_init(void);

void
_PG_init(void)
{
	DefineCustomIntVariable("estream.max_batch_records",
							"Maximum number of records in one produce or fetch call.",
							NULL,
							&estream_max_batch_records,
							100000, 1, INT_MAX,
							PGC_SUSET, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("estream.max_batch_bytes",
							"Maximum total size of the records of one batch produce call.",
							NULL,
							&estream_max_batch_bytes,
							64 * 1024 * 1024, 1024, MaxAllocSize,
							PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("estream.default_max_message_bytes",
							"Maximum record size of topics that do not set max.message.bytes.",
							"The size counts the key, the value and the headers.",
							&estream_default_max_message_bytes,
							1024 * 1024, 64, MaxAllocSize,
							PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	estream_topic_cache_init();
	estream_cdc_init();
	estream_acl_init();

	/*
	 * Settings of the shared memory size exist only when preloaded:
	 * PGC_POSTMASTER variables cannot be defined after startup.
	 */
	if (!process_shared_preload_libraries_in_progress)
	{
		MarkGUCPrefixReserved("estream");
		return;
	}

	DefineCustomIntVariable("estream.max_partitions",
							"Number of shared slots for the state of topic partitions in use.",
							"A partition takes a slot while it is produced to; idle slots "
							"are given to other partitions when needed, and reading takes none. "
							"Only the partitions that open transactions produce to at once "
							"must fit.",
							&estream_max_partitions,
							4096, 16, INT_MAX / 2,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("estream.max_partitions_per_transaction",
							"Maximum number of partitions one transaction may produce to.",
							NULL,
							&estream_max_partitions_per_xact,
							256, 1, 65536,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);

	estream_worker_init();

	MarkGUCPrefixReserved("estream");

	estream_shmem_init();
}
