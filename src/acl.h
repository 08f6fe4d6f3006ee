/*-------------------------------------------------------------------------
 *
 * acl.h
 *		Rights (extension 1.4 on): the per-session cache of estream.acl,
 *		the checks, and the switch to the extension's owner.  Knows nothing
 *		of topics: see topic.h for the checks that need a topic's metadata.
 *
 * Copyright (c) 2026, estream developers
 *
 * IDENTIFICATION
 *		src/acl.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ESTREAM_ACL_H
#define ESTREAM_ACL_H

/* resources and operations of rights */
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

#endif							/* ESTREAM_ACL_H */
