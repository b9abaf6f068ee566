/*-------------------------------------------------------------------------
 *
 * queue.h
 *	  Persistent queues: the catalog of queues, putting, taking and settling
 *	  messages, dead letters, fan-out and long polling.
 *	  queue/README.md says how they fit together.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RMSG_QUEUE_H
#define RMSG_QUEUE_H

#include "core/core.h"
#include "dedup/dedup.h"

#include "executor/tuptable.h"
#include "storage/itemptr.h"
#include "utils/relcache.h"
#include "utils/snapshot.h"

/* queue/catalog.c: the queue catalog and its locks */
#define RMSG_DEFAULT_DEDUP_WINDOW (5 * USECS_PER_MINUTE)	/* create_queue's */
#define RMSG_MAX_DEDUP_WINDOW (INT64CONST(366) * USECS_PER_DAY)

typedef struct RmsgQueue
{
	int32		queue_id;
	int32		max_deliveries;
	int32		dead_letter_queue_id;	/* 0 when none */
	RmsgDedupMode dedup;
	Oid			owner;
	bool		paused;			/* pause_queue: nothing is handed out */
	bool		remote;			/* remote/: its messages go to another server */
	int64		dedup_window;	/* usecs a put's dedup_id is remembered */
	AclMode		rights;			/* of the role that opened it */
} RmsgQueue;

extern void RmsgQueueCatalogInit(void);
extern RmsgQueue RmsgOpenQueue(const char *name, LOCKMODE mode);
extern RmsgQueue RmsgOpenQueueFor(const char *name, LOCKMODE mode, AclMode needed);
extern bool RmsgQueueIsRemote(int32 queue_id);
extern void RmsgRefuseRemoteQueue(const RmsgQueue *queue, const char *name, const char *what);
extern void RmsgRefuseDropOfDeadLetterQueue(const char *name);
extern bool RmsgTryOpenQueue(const char *name, LOCKMODE mode, RmsgQueue *queue);

/*
 * queue/priorities.c: where a put places its messages in their queue: in
 * a group (groups.c), and in the lane of their priority, higher lanes
 * handed out first (ready_scan.c).
 */
#define RMSG_MAX_PRIORITY 9
#define RMSG_PRIORITY_LANES (RMSG_MAX_PRIORITY + 1)

typedef struct RmsgPlacement
{
	const char *group_id;		/* NULL: no group */
	int16		priority;		/* 0 .. RMSG_MAX_PRIORITY */
} RmsgPlacement;

extern RmsgPlacement RmsgPlacementArgs(FunctionCallInfo fcinfo, int group_argno,
									   int priority_argno);
extern void RmsgCheckPlacement(const RmsgQueue *queue, const char *name,
							   const RmsgPlacement *place);
extern uint16 RmsgProbeLanes(Relation rel, Relation index, int32 queue_id);

/* queue/lease_rows.c: a message's lease, a row of rmsg.lease */
typedef struct RmsgLeases
{
	const RmsgRelations *rels;
	Relation	rel;
	Relation	index;			/* lease_pkey */
	struct IndexInfo *info;		/* for new entries, built when first needed */
	TupleTableSlot *slot;
	/* look-ups, begun when first needed and rescanned */
	struct IndexScanDescData *scan; /* with scan_snapshot */
	Snapshot	scan_snapshot;
	struct IndexScanDescData *dirty_scan;	/* with dirty */
	SnapshotData dirty;
} RmsgLeases;

typedef struct RmsgLease
{
	bool		found;			/* false: never delivered (or not since a reset) */
	ItemPointerData tid;		/* of the version found */
	int32		deliveries;		/* 0 when not found */
	TimestampTz until;			/* lease_until; DT_NOBEGIN when NULL or not found */
} RmsgLease;

extern void RmsgLeasesOpen(RmsgLeases *leases, const char *caller);
extern void RmsgLeasesClose(RmsgLeases *leases);
extern bool RmsgLeaseFind(RmsgLeases *leases, int64 msg_id, Snapshot snapshot,
						  RmsgLease *lease);
extern TransactionId RmsgLeaseFindDirty(RmsgLeases *leases, int64 msg_id, RmsgLease *lease);
extern bool RmsgLeaseFindNewest(RmsgLeases *leases, int64 msg_id, RmsgLease *lease,
								bool wait);
extern bool RmsgLeaseRuns(const RmsgLease *lease, TimestampTz now);
extern bool RmsgLeaseWrite(RmsgLeases *leases, const RmsgLease *lease, int64 msg_id,
						   int32 deliveries, TimestampTz until, CommandId cid);
extern void RmsgLeaseDelete(RmsgLeases *leases, int64 msg_id, const RmsgLease *lease,
							CommandId cid);

/* queue/ready_scan.c: finding, locking and leasing a queue's ready messages */
typedef struct RmsgTaken
{
	bool		exhausted;		/* deliveries used up: locked, not leased */
	ItemPointerData tid;		/* of the locked version, when exhausted */
	/* the rest only when leased */
	int64		msg_id;
	int16		priority;
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

/* queue/get.c: taking ready messages, for rmsg.get and the worker */
extern int	RmsgTakeMessages(const RmsgQueue *queue, int max, int64 visibility,
							 RmsgTaken *taken);
extern Datum RmsgTakenPayload(const RmsgTaken *t);

/* queue/dead_letter.c: moving messages whose deliveries are used up */
extern void RmsgDeadLetterLocked(const RmsgQueue *queue, Datum *tids, int n);
extern int	RmsgDeadLetterById(const RmsgQueue *queue, int64 *msg_ids, int n);

/* queue/insert.c: adding a message row, without the executor */
extern void RmsgInsertIndexEntries(Relation rel, TupleTableSlot *slot,
								   bool key_unchanged);
extern void RmsgInsertMessageAs(int64 msg_id, int32 queue_id, TimestampTz visible_at,
								TimestampTz enqueued_at, Datum headers, bool headers_null,
								const RmsgStoredData *stored, const RmsgPlacement *place);
extern int64 RmsgNextMsgId(void);
extern void RmsgInsertMessages(int32 queue_id, TimestampTz visible_at, TimestampTz enqueued_at,
							   Datum headers, bool headers_null, int n,
							   const RmsgStoredData *stored, const RmsgPlacement *place,
							   int64 *msg_ids);

/* queue/put_keys.c: idempotent puts, by dedup_id */
extern int64 RmsgClaimPutKey(const RmsgQueue *queue, const char *dedup_id,
							 int64 msg_id, TimestampTz now);
extern int64 RmsgRemoveExpiredPutKeys(void);

/* queue/groups.c: message groups, one message of a group out at a time */
extern TimestampTz RmsgGroupVisibleAt(int32 queue_id, const char *group_id,
									  TimestampTz visible_at);
extern void RmsgGroupReleased(int32 queue_id, const char *group_id);
extern void RmsgGroupsReleased(int32 queue_id, Datum groups, bool isnull);

/* queue/receipts.c: the number that names one lease (instances' too) */
extern int64 RmsgReceiptOf(int64 msg_id, int32 deliveries, TimestampTz epoch);

/* queue/remove.c: deleting one message by msg_id, without the executor */
typedef enum RmsgRemoveResult
{
	RMSG_REMOVE_DELETED,
	RMSG_REMOVE_NOT_FOUND,		/* or of a queue the role may not get from */
	RMSG_REMOVE_STALE			/* the receipt's lease is gone */
} RmsgRemoveResult;

extern RmsgRemoveResult RmsgDeleteMessage(int64 msg_id, const int64 *receipt,
										  TimestampTz valid_at, bool check_rights,
										  int32 *queue_id);

/*
 * queue/lease.c: rmsg.ack, rmsg.nack and rmsg.extend take any msg_id, and
 * msg_ids are unique across queues and instances.  A message that is not
 * a queue's is offered to the other kind of message that has leases,
 * which registers how it settles its own (instance/lease.c).  Each
 * callback answers RMSG_SETTLE_NOT_MINE for a msg_id it does not know.
 */
typedef enum RmsgSettleResult
{
	RMSG_SETTLE_NOT_MINE,		/* no such message here: look elsewhere */
	RMSG_SETTLE_DONE,			/* acked, or its lease moved */
	RMSG_SETTLE_REFUSED,		/* not in flight, or the role may not take it */
	RMSG_SETTLE_STALE			/* the receipt named a lease that is gone */
} RmsgSettleResult;

typedef struct RmsgLeaseKeeper
{
	/* receipt NULL: without one */
	RmsgSettleResult (*ack) (int64 msg_id, const int64 *receipt, TimestampTz now);
	/* the lease ends at until; a nack gives the message back then */
	RmsgSettleResult (*move_lease_end) (int64 msg_id, const int64 *receipt,
										TimestampTz now, TimestampTz until,
										bool nack);
} RmsgLeaseKeeper;

extern void RmsgRegisterLeaseKeeper(const RmsgLeaseKeeper *keeper);

/*
 * queue/ready_hint.c: where a get may start in the ready index.  Every
 * writer of rmsg.message keeps its rules (see there) before it commits.
 */
/*
 * A place in a lane of the ready index: an entry's (visible_at, msg_id).
 * A batch puts many messages with one visible_at, so the msg_id lets a
 * hint stop inside it.
 */
typedef struct RmsgHintKey
{
	TimestampTz at;
	int64		msg_id;
} RmsgHintKey;

typedef struct RmsgReadyWalk
{
	int			lane;			/* the priority lane walked */
	bool		hinted;			/* the queue had a hint when the walk read it */
	uint64		writes;			/* the hint's count of writes, when read */
	RmsgHintKey start;			/* where the walk starts (at DT_NOBEGIN: the front) */
	TimestampTz cap;			/* the lowest key written since (DT_NOEND: none) */
} RmsgReadyWalk;

extern Size RmsgReadyHintShmemSize(void);
extern void RmsgReadyHintShmemStartup(void);
extern uint16 RmsgReadyHintLanes(int32 queue_id);
extern void RmsgReadyHintLanesFound(int32 queue_id, uint16 lanes);
extern RmsgReadyWalk RmsgReadyHintRead(int32 queue_id, int lane, TimestampTz now);
extern bool RmsgReadyHintAdvance(int32 queue_id, RmsgReadyWalk *walk, RmsgHintKey to,
								 TimestampTz leased_from, TimestampTz leased_until);
extern bool RmsgHintKeyBefore(RmsgHintKey a, RmsgHintKey b);
extern void RmsgReadyHintLower(int32 queue_id, int lane, TimestampTz key);
extern void RmsgReadyHintLeaseMoved(int32 queue_id, int lane, TimestampTz key,
									TimestampTz until);
extern void RmsgReadyHintTouched(int32 queue_id);
extern bool RmsgReadyHintMayMove(int32 queue_id);
extern void RmsgReadyHintXactEnd(void);
extern void RmsgReadyHintForget(int32 queue_id);

/* queue/ready_scan.c: where a reader that is not a get may start */
extern void RmsgReadyFront(int32 queue_id, int lane, TimestampTz now);

/* queue/long_poll.c: long polling, woken by the commits that make messages ready */
extern Size RmsgLongPollShmemSize(void);
extern void RmsgLongPollShmemStartup(void);
extern void RmsgWakeQueueAtCommit(int32 queue_id);
extern void RmsgWakeQueueAtEnd(int32 queue_id);
extern void RmsgWakeupXactEnd(bool committed);
extern int64 RmsgWaitCeiling(int64 wait);
extern void RmsgWaitPrepare(int32 queue_id);
extern bool RmsgWaitSleep(int32 queue_id, TimestampTz until);
extern void RmsgWaitCancel(void);

/*
 * Called after a transaction that made messages of a queue ready ends
 * (-1: perhaps of any queue), for whoever else takes messages besides the
 * waiting gets: recoverable_msg.c points it at the background workers.
 */
typedef void (*RmsgQueueReadyHook) (int32 queue_id);
extern RmsgQueueReadyHook rmsg_queue_ready_hook;
extern int	rmsg_max_wait;		/* ms, 0: no ceiling */

#endif							/* RMSG_QUEUE_H */
