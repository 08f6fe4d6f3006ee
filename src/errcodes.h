/*-------------------------------------------------------------------------
 *
 * errcodes.h
 *		The registry of estream's own SQLSTATEs.
 *
 * Every SQLSTATE that estream defines itself is declared here once, with
 * what it means; all other errors use PostgreSQL's codes
 * (utils/errcodes.h).  PL/pgSQL cannot include this file: src/sql/ raises
 * these codes as string literals ('QE001'), each with the macro's name in
 * a comment next to it.  test/t/022_errcodes.pl checks that the codes used
 * in src/ and the table of docs/reference.md ("Error codes") are exactly
 * the codes declared here.
 *
 * Class QE.  The SQL standard reserves the classes whose first character
 * is 0-4 or A-H; those starting with 5-9 or I-Z are for implementations.
 * PostgreSQL uses 5x, P0 and XX among those (and may add more digits),
 * ODBC uses IM and TimescaleDB TS; no known one uses Q.  A class of two
 * letters keeps clear of PostgreSQL's future numeric classes, and "E" is
 * for estream.  Up to 1.3 these codes were ES001 and ES002, in a class
 * the standard reserves.
 *
 * A code, once released, keeps its meaning: clients match on it.  A new
 * code takes the next number of the class, here, in the table of
 * docs/reference.md and in CHANGELOG.md.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/errcodes.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ESTREAM_ERRCODES_H
#define ESTREAM_ERRCODES_H

#include "utils/elog.h"

/*
 * QE001: the partition is not assigned to the calling member, so its
 * offset cannot be committed: commit() with member_id after a rebalance
 * gave the partition to another member ("partition N of topic "..." is not
 * assigned to member "...""), or commit() without member_id of a partition
 * that a live member owns ("... is assigned to member "..."").  Kafka's
 * ILLEGAL_GENERATION.
 */
#define ERRCODE_ESTREAM_PARTITION_NOT_ASSIGNED	MAKE_SQLSTATE('Q','E','0','0','1')

/*
 * QE002: the member is not a live member of the group: heartbeat(),
 * consume() (which heartbeats) and commit() with member_id of a member
 * whose session timed out, that left or that never joined ("member "..." is not a live member of consumer group
 * "...""), and leave_group() of a member that does not exist ("... is not
 * a member of ...").  The member joins again.  Kafka's UNKNOWN_MEMBER_ID.
 */
#define ERRCODE_ESTREAM_UNKNOWN_MEMBER			MAKE_SQLSTATE('Q','E','0','0','2')

#endif							/* ESTREAM_ERRCODES_H */
