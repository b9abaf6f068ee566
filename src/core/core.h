/*-------------------------------------------------------------------------
 *
 * core.h
 *	  What every mechanism of recoverable_msg builds on: shared memory, kept
 *	  plans, argument checks, our tables, commit modes, privileges, locks
 *	  and counters.  core/README.md says how they fit together.
 *
 * Nothing in core/ calls into the folders above it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RMSG_CORE_H
#define RMSG_CORE_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/acl.h"
#include "utils/hsearch.h"
#include "utils/relcache.h"

#include "core/compat.h"
#include "core/locks.h"

/* The version of the SQL objects this library works with (the control file's). */
#define RMSG_SQL_VERSION "1.1"

/* The most messages a get, a receive or a handler's batch takes at once. */
#define RMSG_MAX_BATCH 10000

/* Names of queues, instances and components: 1 to RMSG_NAME_MAX of RMSG_NAME_CHARS. */
#define RMSG_NAME_MAX (NAMEDATALEN - 1)
#define RMSG_NAME_CHARS \
	"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."

/*
 * core/shmem.c: shared memory, which exists only when we are preloaded.
 * Each mechanism with shared state describes it in an RmsgShmemArea;
 * recoverable_msg.c lists them all and hands the list over at preload.
 */
typedef struct RmsgShmemArea
{
	const char *name;			/* for messages */
	Size		(*size) (void); /* bytes it needs, its hash tables included */
	void		(*startup) (void);	/* attach or set up; AddinShmemInitLock is held */
} RmsgShmemArea;

extern void RmsgShmemRequest(const RmsgShmemArea *areas, int count);

/*
 * core/stats.c: the key of a per-queue entry of a shared table, for the
 * queue of this database's extension (its rmsg.queue table tells one
 * extension from a later one).  Zeroed first: hash tables compare keys'
 * bytes, padding included.
 */
typedef struct RmsgQueueKey
{
	Oid			database;
	Oid			queue_table;	/* rmsg.queue of that database */
	int32		queue_id;
} RmsgQueueKey;

extern void RmsgMakeQueueKey(RmsgQueueKey *key, int32 queue_id);
extern void RmsgForgetOldExtensionEntries(HTAB *table, Oid queue_table);
extern void RmsgRequireShmem(const char *what);
extern TimestampTz RmsgIncarnation(void);
extern uint64 RmsgNameLockSeed(void);

/*
 * core/shmem.c: the generation of the catalog of queues, instances and
 * components, which backends cache
 */
extern uint64 RmsgCatalogGeneration(void);
extern void RmsgNoteCatalogChange(void);
extern bool RmsgCatalogChangedHere(void);
extern void RmsgCatalogXactEnd(void);
extern void RmsgBumpCatalogGeneration(void);

/*
 * core/commit_mode.c: lazy commits for writes a crash may lose, stable ones
 * for what the contract must keep (replies, a caller's or component's row)
 */
typedef enum RmsgLazyKind
{
	RMSG_LAZY_LEASE,			/* get, nack, extend, receive (rmsg.lazy_leases) */
	RMSG_LAZY_CALLER_LOG,		/* the caller's log of the contract */
	RMSG_LAZY_TRANSFER_ACK		/* a remote queue forgetting what was received */
} RmsgLazyKind;

extern bool rmsg_lazy_leases;
extern bool rmsg_lazy_caller_log;
extern void RmsgLazyWriteBegin(RmsgLazyKind kind);
extern void RmsgLazyWriteEnd(void);
extern void RmsgRequireStableCommit(void);
extern void RmsgCommitModePreCommit(void);
extern void RmsgCommitModeXactEnd(void);

/* core/kept_plans.c: prepared statements kept for the life of the backend */
typedef struct RmsgPlan
{
	const char *sql;
	int			nargs;
	Oid			argtypes[8];
	SPIPlanPtr	plan;
} RmsgPlan;

extern int	RmsgPlanExecute(RmsgPlan *p, Datum *values, const bool *isnull,
							bool latest_snapshot, long count);
extern int	RmsgPlanExecuteIn(RmsgPlan *p, Datum *values, const bool *isnull,
							  Snapshot snapshot, long count);
extern void RmsgExecuteAsCaller(SPIPlanPtr *plan, int nargs, const char *sql, Oid *types,
								Datum *args, const char *nulls);
extern void RmsgSpiConnect(void);
extern void RmsgSpiFinish(void);

/*
 * core/kept_plans.c: columns of the current SPI result, by name (a
 * statement's column order may change; its names say what we read)
 */
extern Datum RmsgSpiValue(uint64 row, const char *column, bool *isnull);
extern Datum RmsgSpiNotNull(uint64 row, const char *column);
extern Datum RmsgSpiCopyValue(uint64 row, const char *column, bool *isnull);
extern char *RmsgSpiText(uint64 row, const char *column);

/* core/args.c: entry and argument checks shared by every SQL-callable function */
extern int	rmsg_max_payload_size;
extern void RmsgEnter(const char *function, bool writes);
extern void RmsgRequireArg(FunctionCallInfo fcinfo, int argno, const char *what);
extern char *RmsgTextArg(FunctionCallInfo fcinfo, int argno, const char *what);
extern void RmsgCheckName(const char *name, const char *what);
extern int64 RmsgIntervalArg(FunctionCallInfo fcinfo, int argno,
							 const char *what, int64 if_null, bool allow_zero);
extern int64 RmsgVisibilityArg(FunctionCallInfo fcinfo, int argno);
extern TimestampTz RmsgTimeAfter(TimestampTz base, int64 usecs);
extern int32 RmsgCountArg(FunctionCallInfo fcinfo, int argno, const char *what,
						  int32 limit);
extern void RmsgCheckPayloadSize(Size size);
extern bytea *RmsgPayloadArg(FunctionCallInfo fcinfo, int argno);
extern void RmsgCheckHeaders(FunctionCallInfo fcinfo, int argno);
#define RMSG_MAX_KEY_BYTES 128
extern char *RmsgKeyArg(FunctionCallInfo fcinfo, int argno, const char *what);

/* core/privileges.c: the extension's own privileges on its objects */
typedef enum RmsgObjectKind
{
	RMSG_QUEUE,
	RMSG_INSTANCE,
	RMSG_COMPONENT
} RmsgObjectKind;

/* stored as PostgreSQL's privilege bits in the aclitem[] of each object */
#define RMSG_PUT		ACL_INSERT	/* queue: put, put_batch, put_many, forward */
#define RMSG_GET		ACL_SELECT	/* queue: get, ack, nack, extend */
#define RMSG_DELIVER	ACL_INSERT	/* instance: deliver */
#define RMSG_RECEIVE	ACL_SELECT	/* instance: receive, ack, recovery, state */
#define RMSG_USE		ACL_SELECT	/* component: call and answer as it */
#define RMSG_CALL		ACL_EXECUTE /* component: call it (serve_call), and
									 * answer as it only for callers of one's own */
#define RMSG_MANAGE		ACL_UPDATE	/* drop, subscribe, grant and revoke */

extern AclMode RmsgRightsOf(RmsgObjectKind kind, Oid role, Oid owner, const Acl *acl);
extern void RmsgRequireRights(RmsgObjectKind kind, const char *name,
							  AclMode held, AclMode needed);
extern AclMode RmsgParseRights(RmsgObjectKind kind, const char *text);
extern bool RmsgObjectRights(RmsgObjectKind kind, int64 id, const char *name,
							 Oid role, AclMode *rights, Oid *owner);
extern bool RmsgMaySee(RmsgObjectKind kind, int64 id, const char *name, AclMode any_of);
extern void RmsgLockRole(Oid role);
extern Datum RmsgInvokeAsRole(Oid role, FunctionCallInfo fcinfo);

/* core/relations.c: our tables, for direct access */
typedef struct RmsgRelations
{
	Oid			message;
	Oid			message_ready_idx;
	Oid			message_pkey;
	Oid			msg_id_seq;
	Oid			message_payload_idx;	/* partial: rows with a payload_id */
	Oid			message_group_idx;	/* partial: rows with a group_id */
	Oid			lease;			/* the leases of queue messages */
	Oid			lease_pkey;		/* (msg_id) */
	Oid			payload;
	Oid			payload_pkey;
	Oid			payload_hash_idx;
	Oid			payload_id_seq;
	Oid			instance;
	Oid			instance_message;
	Oid			instance_message_line_idx;	/* (instance_id, msg_id) */
	Oid			queue;
	Oid			caller;
	Oid			namespace;		/* rmsg */
	Oid			owner;			/* of our tables: our statements run as it */
	struct OverrideSearchPath *search_path; /* pg_catalog, rmsg */
	AttrNumber	att_msg_id;
	AttrNumber	att_queue_id;
	AttrNumber	att_visible_at;
	AttrNumber	att_enqueued_at;
	AttrNumber	att_payload_size;
	AttrNumber	att_payload_id;
	AttrNumber	att_headers;
	AttrNumber	att_inline_data;
	AttrNumber	att_group_id;
	AttrNumber	att_priority;
	/* of rmsg.lease */
	AttrNumber	att_lease_msg_id;
	AttrNumber	att_lease_deliveries;
	AttrNumber	att_lease_until;
	/* of rmsg.payload */
	AttrNumber	att_payload_payload_id;
	AttrNumber	att_payload_hash;
	AttrNumber	att_payload_data;
} RmsgRelations;

extern const RmsgRelations *RmsgGetRelations(void);
extern char *RmsgInstalledVersion(void);
extern void RmsgRefuseBypass(Relation rel, const char *what);

/* core/stats.c: rmsg.log_stats and the counters of rmsg.queues */
extern Size RmsgStatsShmemSize(void);
extern void RmsgStatsShmemStartup(void);
extern void RmsgCountPut(int32 queue_id, int32 size, bool referenced);
extern void RmsgCountPuts(int32 queue_id, int n, int64 bytes, bool referenced);
extern void RmsgCountCollected(int64 n);
extern void RmsgCountStaleReceipt(int32 queue_id);
extern void RmsgCountAck(int32 queue_id);
extern void RmsgCountDeadLettered(int32 queue_id, int n);
extern void RmsgCountForce(void);
extern void RmsgCountForceAvoided(void);
extern void RmsgQueueStatsForget(int32 queue_id);

#endif							/* RMSG_CORE_H */
