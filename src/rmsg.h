/*-------------------------------------------------------------------------
 *
 * rmsg.h
 *	  Declarations shared by the files of recoverable_msg.
 *
 * Each .c file owns one concern; this header is the only place their
 * interfaces meet.  Settings are defined in recoverable_msg.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RMSG_H
#define RMSG_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "nodes/pg_list.h"
#include "storage/itemptr.h"
#include "storage/lock.h"
#include "storage/lockdefs.h"
#include "storage/lwlock.h"
#include "utils/acl.h"
#include "utils/jsonb.h"
#include "utils/relcache.h"

/* Settings (recoverable_msg.c) */
extern int	rmsg_max_payload_size;
extern int	rmsg_inline_payload_max;
extern bool rmsg_lazy_leases;
extern bool rmsg_lazy_caller_log;
extern int	rmsg_last_call_depth;
extern int	rmsg_max_components;
extern bool rmsg_instance_cache;
extern char *rmsg_database;
extern int	rmsg_worker_count;
extern int	rmsg_worker_naptime;	/* ms */
extern int	rmsg_retry_delay;	/* ms */
extern int	rmsg_max_retry_delay;	/* ms */
extern int	rmsg_handler_timeout;	/* ms, 0: none */

/* The version of the SQL objects this library works with (the control file's). */
#define RMSG_SQL_VERSION "1.1"

/* The most messages a get, a receive or a handler's batch takes at once. */
#define RMSG_MAX_BATCH 10000

/* The most replies per caller a callee can be told to keep. */
#define RMSG_MAX_CALL_DEPTH 32

/* shmem.c: shared memory, set up when we are preloaded */
typedef enum RmsgLockId
{
	RMSG_LOCK_STATS,			/* stats.c: the per-queue counters */
	RMSG_LOCK_COMPONENTS,		/* components.c: the called-component table */
	RMSG_LOCK_INSTANCES,		/* instance_catalog.c: the instance cache */
	RMSG_LOCK_COUNT
} RmsgLockId;

extern void RmsgRequireShmem(const char *what);
extern void RmsgShmemRequest(void);
extern uint64 RmsgCatalogGeneration(void);
extern void RmsgNoteCatalogChange(void);
extern bool RmsgCatalogChangedHere(void);
extern void RmsgCatalogXactEnd(void);
extern void RmsgBumpCatalogGeneration(void);

/* utility.c: what utility statements mean for the extension */
extern void RmsgUtilityInit(void);

/* role_references.c: DROP ROLE, REASSIGN OWNED and DROP OWNED for our objects */
extern void RmsgCheckRoleUnreferenced(Oid role, const char *name);
extern void RmsgReassignOwned(Oid old_role, Oid new_role);
extern void RmsgDropOwned(Oid role);
extern TimestampTz RmsgIncarnation(void);
extern uint64 RmsgNameLockSeed(void);

/* wakeup.c: long polling, woken by committed puts */
extern Size RmsgWakeupShmemSize(void);
extern void RmsgWakeupShmemInit(void *shared, bool found);
extern void RmsgWakeQueueAtCommit(int32 queue_id);
extern void RmsgWakeQueueAtEnd(int32 queue_id);
extern void RmsgWakeupXactEnd(bool committed);
extern void RmsgWaitPrepare(int32 queue_id);
extern bool RmsgWaitSleep(int32 queue_id, TimestampTz until);
extern void RmsgWaitCancel(void);

/* commit_mode.c: lazy commits for losable writes, stable ones for replies */
typedef enum RmsgLazyKind
{
	RMSG_LAZY_LEASE,			/* get, nack, extend (rmsg.lazy_leases) */
	RMSG_LAZY_CALLER_LOG		/* the caller's log of the contract */
} RmsgLazyKind;

extern void RmsgLazyWriteBegin(RmsgLazyKind kind);
extern void RmsgLazyWriteEnd(void);
extern void RmsgRequireStableCommit(void);
extern void RmsgCommitModePreCommit(void);
extern void RmsgCommitModeXactEnd(void);

/* spi_plans.c: prepared statements kept for the life of the backend */
typedef struct RmsgPlan
{
	const char *sql;
	int			nargs;
	Oid			argtypes[8];
	SPIPlanPtr	plan;
} RmsgPlan;

extern int	RmsgPlanExecute(RmsgPlan *p, Datum *values, const bool *isnull,
							bool latest_snapshot, long count);
extern Datum RmsgSpiCopyVarlena(HeapTuple row, int col, bool *isnull);
extern void RmsgSpiConnect(void);
extern void RmsgSpiFinish(void);

/* Names of queues and instances: 1 to RMSG_NAME_MAX of RMSG_NAME_CHARS. */
#define RMSG_NAME_MAX (NAMEDATALEN - 1)
#define RMSG_NAME_CHARS \
	"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."

/* args.c: entry and argument checks shared by every SQL-callable function */
extern void RmsgEnter(const char *function, bool writes);
extern char *RmsgTextArg(FunctionCallInfo fcinfo, int argno, const char *what);
extern void RmsgCheckName(const char *name, const char *what);
extern int64 RmsgIntervalArg(FunctionCallInfo fcinfo, int argno,
							 const char *what, int64 if_null, bool allow_zero);
extern TimestampTz RmsgTimeAfter(TimestampTz base, int64 usecs);
extern int32 RmsgCountArg(FunctionCallInfo fcinfo, int argno, const char *what,
						  int32 limit);
extern void RmsgCheckPayloadSize(Size size);
extern bytea *RmsgPayloadArg(FunctionCallInfo fcinfo, int argno);
extern void RmsgCheckHeaders(FunctionCallInfo fcinfo, int argno);

/* name_locks.c: our heavyweight locks on names (the file lists who takes which) */
typedef enum RmsgNameLock
{
	RMSG_LOCK_QUEUE_NAME,
	RMSG_LOCK_INSTANCE_ARRIVAL,
	RMSG_LOCK_INSTANCE_TAKE,
	RMSG_LOCK_CALL_PAIR
} RmsgNameLock;

extern LockAcquireResult RmsgLockName(RmsgNameLock kind, const char *name,
									  const char *second, LOCKMODE mode, bool wait);
extern void RmsgUnlockName(RmsgNameLock kind, const char *name, const char *second,
						   LOCKMODE mode);

/* rights.c: the extension's own privileges on its objects */
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
#define RMSG_MANAGE		ACL_UPDATE	/* drop, subscribe, grant and revoke */

extern AclMode RmsgRightsOf(RmsgObjectKind kind, Oid role, Oid owner, const Acl *acl);
extern void RmsgRequireRights(RmsgObjectKind kind, const char *name,
							  AclMode held, AclMode needed);
extern AclMode RmsgParseRights(RmsgObjectKind kind, const char *text);
extern bool RmsgObjectRights(RmsgObjectKind kind, int64 id, const char *name,
							 Oid role, AclMode *rights, Oid *owner);
extern bool RmsgMaySee(RmsgObjectKind kind, int64 id, const char *name, AclMode any_of);

/* queue_admin.c: the queue catalog and its locks */
typedef struct RmsgQueue
{
	int32		queue_id;
	int32		max_deliveries;
	int32		dead_letter_queue_id;	/* 0 when none */
	char		dedup;			/* 'n'one, 't'oken, 'c'ontent */
	Oid			owner;
	AclMode		rights;			/* of the role that opened it */
} RmsgQueue;

extern void RmsgQueueCatalogInit(void);
extern RmsgQueue RmsgOpenQueue(const char *name, LOCKMODE mode);
extern RmsgQueue RmsgOpenQueueFor(const char *name, LOCKMODE mode, AclMode needed);
extern bool RmsgTryOpenQueue(const char *name, LOCKMODE mode, RmsgQueue *queue);

/* relations.c: our tables, for direct access */
typedef struct RmsgRelations
{
	Oid			message;
	Oid			message_ready_idx;
	Oid			message_pkey;
	Oid			msg_id_seq;
	Oid			message_payload_idx;	/* partial: rows with a payload_id */
	Oid			payload;
	Oid			payload_pkey;
	Oid			payload_hash_idx;
	Oid			payload_id_seq;
	Oid			instance;
	Oid			queue;
	Oid			caller;
	Oid			namespace;		/* rmsg */
	Oid			owner;			/* of our tables: our statements run as it */
	struct OverrideSearchPath *search_path; /* pg_catalog, rmsg */
	AttrNumber	att_msg_id;
	AttrNumber	att_queue_id;
	AttrNumber	att_deliveries;
	AttrNumber	att_visible_at;
	AttrNumber	att_lease_until;
	AttrNumber	att_enqueued_at;
	AttrNumber	att_payload_size;
	AttrNumber	att_payload_id;
	AttrNumber	att_headers;
	AttrNumber	att_inline_data;
	/* of rmsg.payload */
	AttrNumber	att_payload_payload_id;
	AttrNumber	att_payload_hash;
	AttrNumber	att_payload_data;
} RmsgRelations;

extern const RmsgRelations *RmsgGetRelations(void);
extern char *RmsgInstalledVersion(void);
extern void RmsgRefuseBypass(Relation rel, const char *what);

/* ready_scan.c: finding, locking and leasing a queue's ready messages */
typedef struct RmsgTaken
{
	bool		exhausted;		/* deliveries used up: locked, not leased */
	ItemPointerData tid;		/* of the locked version, when exhausted */
	/* the rest only when leased */
	int64		msg_id;
	int64		receipt;
	int32		deliveries;
	TimestampTz enqueued_at;
	Datum		headers;
	bool		headers_null;
	Datum		inline_data;
	bool		inline_null;
	int64		payload_id;		/* when inline_null */
} RmsgTaken;

extern int	RmsgLeaseReadyMessages(int32 queue_id, TimestampTz now,
								   TimestampTz lease_end, int32 max_deliveries,
								   int max, RmsgTaken *taken);

/* get.c: taking ready messages, for rmsg.get and the worker */
extern int	RmsgTakeMessages(const RmsgQueue *queue, int max, int64 visibility,
							 RmsgTaken *taken);
extern Datum RmsgTakenPayload(const RmsgTaken *t);

/* dead_letter.c */
extern void RmsgDeadLetterLocked(const RmsgQueue *queue, Datum *tids, int n);
extern int	RmsgDeadLetterById(const RmsgQueue *queue, int64 *msg_ids, int n);

/* Where a message's data is kept: inline, or in a payload row. */
typedef struct RmsgStoredData
{
	int64		payload_id;		/* 0: inline */
	bytea	   *inline_data;	/* when inline */
	int32		size;			/* bytes of data, either way */
	bool		referenced;		/* a payload row that was already there */
} RmsgStoredData;

/* insert.c: adding a message row, without the executor */
extern void RmsgInsertIndexEntries(Relation rel, TupleTableSlot *slot,
								   bool key_unchanged);
extern int64 RmsgInsertMessage(int32 queue_id, TimestampTz visible_at,
							   TimestampTz enqueued_at, Datum headers,
							   bool headers_null, const RmsgStoredData *stored);

/* receipts.c: the number that names one lease */
extern int64 RmsgReceiptOf(int64 msg_id, int32 deliveries, TimestampTz epoch);

/* remove.c: deleting one message by msg_id, without the executor */
typedef enum RmsgRemoveResult
{
	RMSG_REMOVE_DELETED,
	RMSG_REMOVE_NOT_FOUND,		/* or of a queue the role may not get from */
	RMSG_REMOVE_STALE			/* the receipt's lease is gone */
} RmsgRemoveResult;

extern RmsgRemoveResult RmsgDeleteMessage(int64 msg_id, const int64 *receipt,
										  TimestampTz valid_at, bool check_rights,
										  int32 *queue_id);

/* tokens.c: the session's data tokens */
#define RMSG_SESSION_TOKENS 256

typedef struct RmsgTokenData
{
	int64		payload_id;		/* the payload row holding the data, 0: none known */
	int64		msg_id;			/* a message holding it inline, 0: none */
	int32		size;
	bool		hash_known;		/* hash is the data's RmsgContentHash */
	uint64		hash;
} RmsgTokenData;

extern int64 RmsgIssueToken(const RmsgTokenData *data);
extern bool RmsgLookupToken(int64 token, RmsgTokenData *data);
extern void RmsgTokenPromoted(int64 token, int64 payload_id);
extern int64 RmsgPromotedPayloadOf(int64 msg_id);
extern void RmsgClearLastToken(void);

/* put.c */
extern int64 RmsgIssuePutToken(int64 msg_id, const RmsgStoredData *stored,
							   int64 from_msg_id, bytea *data,
							   const RmsgTokenData *source);

/* payload.c: payload rows, shared by reference and collected */
extern int64 RmsgWritePayload(bytea *data, bool findable, Oid owner);
extern bool RmsgPinPayload(int64 payload_id);
extern int64 RmsgFindPayload(bytea *data, Oid owner);
extern uint64 RmsgContentHash(bytea *data);
extern bytea *RmsgReadPayload(int64 payload_id);
extern bytea *RmsgReadInlineData(int64 msg_id);
extern int64 RmsgCollectPayloads(void);

/* dedup.c: how a put stores its data (seed 004) */
#define RMSG_MIN_SHARED_SIZE 256
extern bool RmsgStoreData(const RmsgQueue *queue, bytea *data,
						  RmsgTokenData *source, bool will_share,
						  RmsgStoredData *out);

/* stats.c: rmsg.log_stats and the byte counts of rmsg.queues */
extern Size RmsgStatsShmemSize(void);
extern Size RmsgStatsHashSize(void);
extern void RmsgStatsShmemInit(void *shared, bool found, LWLock *lock);
extern void RmsgCountPut(int32 queue_id, const RmsgStoredData *stored);
extern void RmsgCountCollected(int64 n);
extern void RmsgCountStaleReceipt(int32 queue_id);
extern void RmsgCountForce(void);
extern void RmsgCountForceAvoided(void);
extern void RmsgQueueStatsForget(int32 queue_id);

/* components.c: the called-component table of the contract (seeds 000, 003) */
extern Size RmsgComponentsShmemSize(void);
extern void RmsgComponentsShmemInit(LWLock *lock);
extern bool RmsgBeforeSend(const char *caller, const char *callee);
extern void RmsgReplyRecorded(const char *caller, const char *callee, int64 call_id);
extern void RmsgComponentsXactEnd(bool committed);
extern void RmsgComponentsSubXactEnd(bool committed, SubTransactionId subxid,
									 SubTransactionId parent);
extern XLogRecPtr RmsgForceLog(void);

/* component_catalog.c: who may act as a caller or callee of the contract */
extern bool RmsgUseComponent(const char *name, bool may_make);

/* instance_catalog.c: instances, their locks and the shared mode cache */
typedef struct RmsgInstance
{
	int64		instance_id;
	bool		recovering;
	AclMode		rights;			/* of the role that opened it */
} RmsgInstance;

extern Size RmsgInstanceCacheShmemSize(void);
extern void RmsgInstanceCacheShmemInit(LWLock *lock);
extern void RmsgLockInstance(const char *name, RmsgNameLock lock_kind);
extern RmsgInstance RmsgOpenInstance(const char *name, RmsgNameLock lock_kind, AclMode needed);
typedef bool (*RmsgInstanceFilter) (int64 instance_id, const char *name, void *arg);
extern bool RmsgTryOpenInstanceById(int64 instance_id, RmsgInstanceFilter wanted,
									void *arg, char *name,
									RmsgInstance *instance, bool *fresh);
extern void RmsgUnlockInstance(const char *name, RmsgNameLock lock_kind);
extern void RmsgInstanceChanged(const char *name);
extern void RmsgInstanceCacheXactEnd(void);
extern void RmsgReportNoInstance(const char *name);

/* receive.c: an instance's head message, for the worker */
typedef struct RmsgInstanceMessage
{
	int64		visibility;		/* set by the caller: the lease's length */
	char		instance[NAMEDATALEN];
	int64		instance_id;
	int64		msg_id;
	Datum		kind;			/* text */
	Datum		payload;		/* bytea */
	Datum		headers;		/* jsonb */
	bool		headers_null;
	int32		deliveries;
	int64		receipt;
} RmsgInstanceMessage;

extern bool RmsgTakeInstanceMessage(int64 *cursor, RmsgInstanceFilter wanted,
									void *arg, RmsgInstanceMessage *out);

/* handlers.c: which function handles which messages */
#define RMSG_HANDLER_MAX_ARGS 5

typedef struct RmsgHandler
{
	bool		for_instances;
	char		target[NAMEDATALEN];	/* the queue, or the instance prefix */
	int32		queue_id;
	Oid			handler;		/* pg_proc */
	Oid			owner;			/* the role it runs as */
	int32		batch;
	bool		usable;			/* function and role exist (worker.c) */
} RmsgHandler;

extern int	RmsgCheckHandler(Oid handler, bool for_instances);
extern List *RmsgLoadHandlers(MemoryContext into);
extern void RmsgHandlerFailed(const RmsgHandler *h, const char *instance,
							  int64 msg_id, int32 deliveries,
							  int32 max_deliveries, const char *error);

/* handler_call.c */
extern bool RmsgHandlerMayTake(const RmsgHandler *h, int64 target_id);
extern bool RmsgCallHandler(const RmsgHandler *h, int64 target_id, Datum *args,
							bool *nulls, char **error);
extern TimestampTz RmsgRetryAt(int32 deliveries, TimestampTz *earliest);

/* What one unit of the worker's work did, for its counters. */
typedef struct RmsgWorkCounts
{
	int64		processed;
	int64		failed;
	int64		retried;
	int64		dead_lettered;
} RmsgWorkCounts;

/*
 * dispatch_queue.c, dispatch_instance.c: one transaction's work.  They
 * return how many messages they took, or RMSG_HANDLERS_STALE when the
 * handlers changed since `generation` (when the worker read them): the
 * caller must then roll back, so that no message goes to a handler that
 * was replaced or removed.
 */
#define RMSG_HANDLERS_STALE (-1)

/*
 * The length of the worker's leases.  They matter only while its
 * transaction runs, when its row and take locks protect them anyway; on
 * success the message is acked in the same commit, on failure the lease is
 * replaced by the retry's.
 */
#define RMSG_WORKER_LEASE_USECS (5 * 60 * USECS_PER_SEC)
extern int	RmsgDispatchQueue(const RmsgHandler *h, uint64 generation,
							  RmsgWorkCounts *counts, TimestampTz *retry_at);
extern int	RmsgDispatchInstance(List *handlers, uint64 generation, int64 *cursor,
								 RmsgWorkCounts *counts, TimestampTz *retry_at);

/* maintenance.c */
extern int64 RmsgSweepExhausted(void);

/* worker_state.c: the workers' shared slots and wakeups */
typedef enum RmsgWorkerState
{
	RMSG_WORKER_STARTING,
	RMSG_WORKER_IDLE,
	RMSG_WORKER_HANDLING,
	RMSG_WORKER_MAINTAINING,
	RMSG_WORKER_NO_EXTENSION,
	RMSG_WORKER_OLD_EXTENSION,
	RMSG_WORKER_FAILED
} RmsgWorkerState;

extern Size RmsgWorkerShmemSize(void);
extern void RmsgWorkerShmemInit(void *shared, bool found);
extern void RmsgWorkerAttach(int index, const char *database);
extern void RmsgWorkerReport(RmsgWorkerState state, const char *current);
extern void RmsgWorkerCount(const RmsgWorkCounts *counts);
extern void RmsgWorkerNoteError(const char *message, bool count);
extern void RmsgWorkerMaintained(int64 collected, int64 dead_lettered);
extern void RmsgWorkersPublishTargets(uint64 queue_mask, bool instances);
extern uint64 RmsgHandlerGeneration(void);
extern void RmsgWakeWorkersForQueue(int32 queue_id);
extern void RmsgWakeWorkersAtCommit(void);
extern void RmsgHandlersChangedAtCommit(void);
extern void RmsgWorkerXactEnd(bool committed);

/* worker.c */
extern void RmsgRegisterWorkers(void);

#endif							/* RMSG_H */
