/*-------------------------------------------------------------------------
 *
 * schema.c
 *		The installed extension as the library sees it: its schema, and the
 *		version of its SQL objects, in one place.
 *
 * One library serves every database of the server, and a database may
 * still have an older version of the extension's SQL objects (until
 * ALTER EXTENSION estream UPDATE): the library must not use a table,
 * column or function that the database does not have yet.  Every such
 * decision asks estream_schema_version() (as pg_stat_statements decides by
 * its API version), never probes for a column or compares version strings
 * of its own.
 *
 * The version is read from pg_extension once and cached per backend until
 * an invalidation says the catalog may have changed.  Creating, updating
 * or dropping the extension always creates, replaces or drops functions
 * (a syscache invalidation of pg_proc) and usually relations (relcache
 * invalidations): any of them, or a reset of the invalidation queue, makes
 * the next call read pg_extension again.  An aborted transaction replays
 * its own invalidations locally, so a version read inside it does not
 * outlive it either.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/schema.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "schema.h"

/* the installed version, or -1: read it again */
static int	schema_version = -1;

static void
schema_relcache_inval(Datum arg, Oid relid)
{
	schema_version = -1;
}

static void
schema_syscache_inval(Datum arg, int cacheid, uint32 hashvalue)
{
	schema_version = -1;
}

/* called from _PG_init */
void
estream_schema_init(void)
{
	CacheRegisterRelcacheCallback(schema_relcache_inval, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID, schema_syscache_inval, (Datum) 0);
	CacheRegisterSyscacheCallback(NAMESPACEOID, schema_syscache_inval, (Datum) 0);
}

/* "1.4" -> 10400 */
static int
parse_version(const char *version)
{
	int			major = 0;
	int			minor = 0;

	(void) sscanf(version, "%d.%d", &major, &minor);
	return 10000 * major + 100 * minor;
}

/*
 * Read the row of estream in pg_extension: its owner and its version (as a
 * number, or ESTREAM_SCHEMA_NONE if null); false if there is none.  Either
 * output may be NULL.  Must be in a transaction.
 */
bool
estream_lookup_extension(Oid *owner, int *version)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		found;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("estream"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	found = HeapTupleIsValid(tup);
	if (found && owner != NULL)
		*owner = ((Form_pg_extension) GETSTRUCT(tup))->extowner;
	if (found && version != NULL)
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		*version = ESTREAM_SCHEMA_NONE;
		if (!isnull)
		{
			char	   *s = TextDatumGetCString(d);

			*version = parse_version(s);
			pfree(s);
		}
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/* the extversion of estream in pg_extension, as a number, or 0 */
static int
read_schema_version(void)
{
	int			version = ESTREAM_SCHEMA_NONE;

	if (!estream_lookup_extension(NULL, &version))
		return ESTREAM_SCHEMA_NONE;
	return version;
}

/*
 * The version of estream's SQL objects in this database (ESTREAM_SCHEMA_*,
 * 10000 * major + 100 * minor), or ESTREAM_SCHEMA_NONE if the extension is
 * not installed.  Must be called in a transaction.
 */
int
estream_schema_version(void)
{
	if (schema_version < 0)
		schema_version = read_schema_version();
	return schema_version;
}

/* the OID of schema estream; an error if there is none */
Oid
estream_schema_oid(void)
{
	return get_namespace_oid("estream", false);
}
