/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The background workers: handlers registered for queues and instance
 *	  prefixes, called for each message in the transaction that acks it.
 *	  worker/README.md says how they work.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RMSG_WORKER_H
#define RMSG_WORKER_H

#include "core/core.h"
#include "instance/instance.h"
#include "queue/queue.h"

#include "nodes/pg_list.h"

/* rmsg.worker_count's most; flow.c keeps a bit per worker */
#define RMSG_MAX_WORKERS 32

extern char *rmsg_database;
extern int	rmsg_worker_count;
extern int	rmsg_worker_naptime;	/* ms */
extern int	rmsg_retry_delay;	/* ms */
extern int	rmsg_max_retry_delay;	/* ms */
extern int	rmsg_handler_timeout;	/* ms, 0: none */

/* worker/handlers.c: which function handles which messages */
#define RMSG_HANDLER_MAX_ARGS 5

typedef struct RmsgHandler
{
	bool		for_instances;
	char		target[NAMEDATALEN];	/* the queue, or the instance prefix */
	int32		queue_id;
	Oid			handler;		/* pg_proc */
	Oid			owner;			/* the role it runs as */
	int32		batch;
	int32		concurrency;	/* flow.c: 0, no limit */
	double		rate;			/* flow.c: calls per second, 0: no limit */
	RmsgQueueKey flow_key;		/* flow.c: the queue's key, made when loaded */
	bool		usable;			/* callable now (worker.c's CheckUsable) */
} RmsgHandler;

extern int	RmsgCheckHandler(Oid handler, bool for_instances);
extern List *RmsgLoadHandlers(MemoryContext into);
extern void RmsgHandlerFailed(const RmsgHandler *h, const char *instance,
							  int64 msg_id, int32 deliveries,
							  int32 max_deliveries, const char *error);

/* worker/handler_call.c */
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
 * worker/dispatch_queue.c, worker/dispatch_instance.c: one transaction's
 * work.  They return how many messages they took, or RMSG_HANDLERS_STALE
 * when the handlers changed since `generation` (when the worker read
 * them): the caller must then roll back, so that no message goes to a
 * handler that was replaced or removed.
 */
#define RMSG_HANDLERS_STALE (-1)

/*
 * The length of the worker's leases.  They matter only while its
 * transaction runs, when its row and take locks protect them anyway; on
 * success the message is acked in the same commit, on failure the lease is
 * replaced by the retry's.
 */
#define RMSG_WORKER_LEASE_USECS (5 * 60 * USECS_PER_SEC)
extern int	RmsgDispatchQueue(const RmsgHandler *h, int max, uint64 generation,
							  RmsgWorkCounts *counts, TimestampTz *retry_at);
extern int	RmsgDispatchInstance(List *handlers, uint64 generation, int64 *cursor,
								 RmsgWorkCounts *counts, TimestampTz *retry_at);

/* worker/flow.c: concurrency and rate limits of subscriptions */
extern Size RmsgFlowShmemSize(void);
extern void RmsgFlowShmemStartup(void);
extern int	RmsgFlowBegin(const RmsgHandler *h, int worker, TimestampTz *due);
extern void RmsgFlowEnd(const RmsgHandler *h, int worker, int granted, int taken);
extern void RmsgFlowLeaveAll(int worker);

/* worker/worker.c: a transaction for one unit of the worker's work */
extern void RmsgWorkerBeginUnit(const char *activity);
extern void RmsgWorkerEndUnit(void);

/* worker/transfer.c: worker 0 moves the messages of remote queues (remote/) */
typedef struct RmsgRemote
{
	int32		queue_id;
	char		queue[NAMEDATALEN];
	char		server[NAMEDATALEN];
	char	   *remote_queue;
	char	   *channel;
	Oid			owner;			/* whose user mapping the worker connects with */
	TimestampTz retry_at;		/* after a failure: not before then */
	int			failures;		/* in a row: the next wait doubles */
} RmsgRemote;

extern List *RmsgLoadRemoteQueues(MemoryContext into);
extern bool RmsgTransferTurn(RmsgRemote *r, TimestampTz *retry_at);

/* worker/maintenance.c */
extern int64 RmsgSweepExhausted(void);

/* worker/slots.c: the workers' shared slots and wakeups */
typedef enum RmsgWorkerState
{
	RMSG_WORKER_STARTING,
	RMSG_WORKER_IDLE,
	RMSG_WORKER_HANDLING,
	RMSG_WORKER_MAINTAINING,
	RMSG_WORKER_NO_EXTENSION,
	RMSG_WORKER_OLD_EXTENSION,
	RMSG_WORKER_NO_DATABASE,
	RMSG_WORKER_FAILED
} RmsgWorkerState;

extern Size RmsgWorkerShmemSize(void);
extern void RmsgWorkerShmemStartup(void);
extern void RmsgWorkerAttach(int index, const char *database);
extern bool RmsgWorkerConnectFailed(int index, const char *database);
extern void RmsgWorkerConnecting(int index, const char *database);
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
extern void RmsgWorkersRecheckAll(void);

/* worker/worker.c */
extern void RmsgRegisterWorkers(void);

#endif							/* RMSG_WORKER_H */
