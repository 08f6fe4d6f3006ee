/*-------------------------------------------------------------------------
 *
 * schema.h
 *		The installed extension as the library sees it: its schema and the
 *		version of its SQL objects.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/schema.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ESTREAM_SCHEMA_H
#define ESTREAM_SCHEMA_H

/*
 * Versions of the extension's SQL objects, as estream_schema_version()
 * returns them: 10000 * major + 100 * minor, as PG_VERSION_NUM.
 */
#define ESTREAM_SCHEMA_NONE		0	/* not installed in this database */
#define ESTREAM_SCHEMA_1_0		10000
#define ESTREAM_SCHEMA_1_1		10100
#define ESTREAM_SCHEMA_1_2		10200	/* worker steps, persisted stable
										 * offsets */
#define ESTREAM_SCHEMA_1_3		10300	/* change data capture */
#define ESTREAM_SCHEMA_1_4		10400	/* rights, per-capture failure
										 * policies */

extern void estream_schema_init(void);
extern int	estream_schema_version(void);
extern bool estream_lookup_extension(Oid *owner, int *version);
extern Oid	estream_schema_oid(void);

#endif							/* ESTREAM_SCHEMA_H */
