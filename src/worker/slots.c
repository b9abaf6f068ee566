/*-------------------------------------------------------------------------
 *
 * slots.c
 *	  What the background workers share with everyone else: one slot per
 *	  worker (what it is doing, its counters, its last error, its latch),
 *	  what wakes them, and rmsg.stat_worker behind the view rmsg.worker.
 *
 * A worker sleeps on its latch when it has nothing to do.  A transaction
 * that made work for it sets the latches of all workers when it ends:
 *	- a message ready in a queue (a put or a nack committed, a dead letter
 *	  moved to a dead-letter queue, a lease rolled back).  Only queues
 *	  with a handler matter, and the workers publish which ones they serve
 *	  as a mask of queue_id % 64; a transaction whose queues miss the mask
 *	  wakes nobody;
 *	- a message delivered to an instance, or an instance's recovery
 *	  completed, while any instance handler exists;
 *	- a handler added, changed or removed: the handler generation goes up,
 *	  and the workers read the handlers again.
 * Setting a latch is cheap when its owner is busy, and waking a worker for
 * nothing costs it one look, so a shared mask is as precise as it needs to
 * be.  Until a worker has published its mask, every queue wakes it.
 *
 * queue/ and instance/ know nothing of the workers: they call a hook when
 * a transaction made messages ready (rmsg_queue_ready_hook from
 * queue/long_poll.c at the transaction's end, rmsg_instance_ready_hook from
 * instance/deliver.c while it runs), and recoverable_msg.c points those
 * hooks at RmsgWakeWorkersForQueue and RmsgWakeWorkersAtCommit below.
 *
 * Locking: each slot has a spinlock, taken by its worker to change the slot
 * and by readers (the view) to copy it.  The worker's process number is
 * also read without the lock, to set its latch: a stale one at worst wakes
 * the wrong process, which latches tolerate.  The mask, the instance flag
 * and the generation are atomics.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "worker/worker.h"

#define NO_PROCESS (-1)

typedef struct WorkerSlot
{
	slock_t		mutex;
	int			procno;			/* NO_PROCESS while not running */
	pid_t		pid;
	RmsgWorkerState state;
	char		database[NAMEDATALEN];
	/*
	 * The database a worker of this slot was connecting to, kept until the
	 * connection succeeds: still set when the next worker of the slot
	 * starts, it says the connection failed (the database is missing).
	 */
	char		connecting[NAMEDATALEN];
	char		current[2 * NAMEDATALEN];	/* what it handles now */
	TimestampTz started_at;
	TimestampTz last_activity;
	int64		processed;		/* handler calls that succeeded */
	int64		errors;			/* handler calls that failed, and worker errors */
	int64		retried;
	int64		dead_lettered;
	TimestampTz maintained_at;
	int64		payloads_collected;
	TimestampTz last_error_at;
	char		last_error[256];
} WorkerSlot;

typedef struct WorkerShared
{
	pg_atomic_uint64 queue_mask;	/* bit queue_id % 64: a handler may serve it */
	pg_atomic_uint32 instance_handlers; /* nonzero: some instance has a handler */
	pg_atomic_uint64 handler_generation;
	int			nslots;
	WorkerSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} WorkerShared;

static WorkerShared *workers = NULL;
static WorkerSlot *my_slot = NULL;

/* what the current transaction will have made when it commits */
static bool wake_for_instances = false;
static bool handlers_changed = false;

static const char *const state_names[] = {
	[RMSG_WORKER_STARTING] = "starting",
	[RMSG_WORKER_IDLE] = "idle",
	[RMSG_WORKER_HANDLING] = "handling",
	[RMSG_WORKER_MAINTAINING] = "maintenance",
	[RMSG_WORKER_NO_EXTENSION] = "waiting for the extension",
	[RMSG_WORKER_OLD_EXTENSION] = "waiting for ALTER EXTENSION UPDATE",
	[RMSG_WORKER_NO_DATABASE] = "waiting for its database",
	[RMSG_WORKER_FAILED] = "recovering from an error",
};

Size
RmsgWorkerShmemSize(void)
{
	return add_size(offsetof(WorkerShared, slots),
					mul_size(sizeof(WorkerSlot), Max(rmsg_worker_count, 0)));
}

/* Called under AddinShmemInitLock. */
void
RmsgWorkerShmemStartup(void)
{
	bool		found;

	workers = ShmemInitStruct("recoverable_msg workers", RmsgWorkerShmemSize(), &found);
	if (found)
		return;
	pg_atomic_init_u64(&workers->queue_mask, PG_UINT64_MAX);
	pg_atomic_init_u32(&workers->instance_handlers, 1);
	pg_atomic_init_u64(&workers->handler_generation, 1);
	workers->nslots = Max(rmsg_worker_count, 0);
	for (int i = 0; i < workers->nslots; i++)
	{
		WorkerSlot *slot = &workers->slots[i];

		memset(slot, 0, sizeof(WorkerSlot));
		SpinLockInit(&slot->mutex);
		slot->procno = NO_PROCESS;
	}
}

/* Process exit: the slot shows the worker as stopped. */
static void
WorkerDetach(int code, Datum arg)
{
	SpinLockAcquire(&my_slot->mutex);
	my_slot->procno = NO_PROCESS;
	my_slot->pid = 0;
	my_slot->current[0] = '\0';
	SpinLockRelease(&my_slot->mutex);
	my_slot = NULL;
}

/* The worker of slot `index` has started and is connected to `database`. */
void
RmsgWorkerAttach(int index, const char *database)
{
	if (workers == NULL || index < 0 || index >= workers->nslots)
		elog(ERROR, "recoverable_msg worker slot %d does not exist", index);
	my_slot = &workers->slots[index];

	SpinLockAcquire(&my_slot->mutex);
	my_slot->pid = MyProcPid;
	my_slot->procno = RmsgMyProcNumber();
	my_slot->state = RMSG_WORKER_STARTING;
	strlcpy(my_slot->database, database, NAMEDATALEN);
	my_slot->current[0] = '\0';
	my_slot->started_at = GetCurrentTimestamp();
	my_slot->last_activity = my_slot->started_at;
	SpinLockRelease(&my_slot->mutex);

	before_shmem_exit(WorkerDetach, (Datum) 0);
}

/*
 * Whether the last worker of slot `index` tried to connect to `database`
 * and did not get there.  A failed connection is a FATAL error that ends
 * the process, and the postmaster starts the slot's worker again a few
 * seconds later: this is how the next one knows.
 */
bool
RmsgWorkerConnectFailed(int index, const char *database)
{
	WorkerSlot *slot;
	bool		failed;

	if (workers == NULL || index < 0 || index >= workers->nslots)
		return false;
	slot = &workers->slots[index];
	SpinLockAcquire(&slot->mutex);
	failed = (strcmp(slot->connecting, database) == 0);
	SpinLockRelease(&slot->mutex);
	return failed;
}

/*
 * Notes that slot `index` is about to connect to `database` (NULL: it got
 * there, or is to try again).
 */
void
RmsgWorkerConnecting(int index, const char *database)
{
	WorkerSlot *slot;

	if (workers == NULL || index < 0 || index >= workers->nslots)
		return;
	slot = &workers->slots[index];
	SpinLockAcquire(&slot->mutex);
	strlcpy(slot->connecting, database ? database : "", NAMEDATALEN);
	SpinLockRelease(&slot->mutex);
}

/* What the worker is doing now; `current` names what it handles, or NULL. */
void
RmsgWorkerReport(RmsgWorkerState state, const char *current)
{
	SpinLockAcquire(&my_slot->mutex);
	my_slot->state = state;
	strlcpy(my_slot->current, current ? current : "", sizeof(my_slot->current));
	my_slot->last_activity = GetCurrentTimestamp();
	SpinLockRelease(&my_slot->mutex);
}

/* Adds to the worker's counters what one unit of work did. */
void
RmsgWorkerCount(const RmsgWorkCounts *counts)
{
	SpinLockAcquire(&my_slot->mutex);
	my_slot->processed += counts->processed;
	my_slot->errors += counts->failed;
	my_slot->retried += counts->retried;
	my_slot->dead_lettered += counts->dead_lettered;
	SpinLockRelease(&my_slot->mutex);
}

/*
 * Keeps an error as the worker's last for the view; `count` it when nothing
 * else does (a handler's failure is counted with its unit's counts).
 */
void
RmsgWorkerNoteError(const char *message, bool count)
{
	SpinLockAcquire(&my_slot->mutex);
	if (count)
		my_slot->errors++;
	strlcpy(my_slot->last_error, message, sizeof(my_slot->last_error));
	my_slot->last_error_at = GetCurrentTimestamp();
	SpinLockRelease(&my_slot->mutex);
}

/* Worker 0 ran the maintenance: when, and what it collected and swept. */
void
RmsgWorkerMaintained(int64 collected, int64 dead_lettered)
{
	SpinLockAcquire(&my_slot->mutex);
	my_slot->maintained_at = GetCurrentTimestamp();
	my_slot->payloads_collected += collected;
	my_slot->dead_lettered += dead_lettered;
	SpinLockRelease(&my_slot->mutex);
}

/* The workers tell committers which queues and whether instances concern them. */
void
RmsgWorkersPublishTargets(uint64 queue_mask, bool instances)
{
	pg_atomic_write_u64(&workers->queue_mask, queue_mask);
	pg_atomic_write_u32(&workers->instance_handlers, instances ? 1 : 0);
}

/*
 * The handler generation: it goes up with every commit that changed the
 * handlers, so a worker that read them at another generation must read
 * them again.
 */
uint64
RmsgHandlerGeneration(void)
{
	return pg_atomic_read_u64(&workers->handler_generation);
}

/* Sets the latch of every running worker. */
static void
WakeAllWorkers(void)
{
	for (int i = 0; i < workers->nslots; i++)
	{
		int			procno = workers->slots[i].procno;

		if (procno != NO_PROCESS)
			SetLatch(&GetPGProcByNumber(procno)->procLatch);
	}
}

/*
 * A transaction that ended made a message of this queue ready (of any
 * queue, when queue_id is negative: too many to remember).  Called through
 * rmsg_queue_ready_hook from the transaction's end (queue/long_poll.c):
 * must not fail.
 */
void
RmsgWakeWorkersForQueue(int32 queue_id)
{
	uint64		mask;

	if (workers == NULL || workers->nslots == 0)
		return;
	mask = pg_atomic_read_u64(&workers->queue_mask);
	if (queue_id < 0 ? mask != 0 : (mask & (UINT64CONST(1) << ((uint32) queue_id % 64))) != 0)
		WakeAllWorkers();
}

/*
 * The current transaction gives an instance something to handle (called
 * through rmsg_instance_ready_hook); the workers hear of it at commit.
 */
void
RmsgWakeWorkersAtCommit(void)
{
	wake_for_instances = true;
}

/* The current transaction changes the handlers. */
void
RmsgHandlersChangedAtCommit(void)
{
	handlers_changed = true;
}

/*
 * After COMMIT PREPARED (roles/utility_hook.c): the prepared transaction
 * may have changed handlers or made messages ready, and ended in its own
 * backend at PREPARE, when nothing was known of its outcome.  The workers
 * read their handlers again and look for work.
 */
void
RmsgWorkersRecheckAll(void)
{
	if (workers == NULL || workers->nslots == 0)
		return;
	pg_atomic_fetch_add_u64(&workers->handler_generation, 1);
	WakeAllWorkers();
}

/* Transaction end (commit callback or abort): must not fail. */
void
RmsgWorkerXactEnd(bool committed)
{
	if (committed && workers != NULL && workers->nslots > 0)
	{
		if (handlers_changed)
		{
			pg_atomic_fetch_add_u64(&workers->handler_generation, 1);
			WakeAllWorkers();
		}
		else if (wake_for_instances &&
				 pg_atomic_read_u32(&workers->instance_handlers) != 0)
			WakeAllWorkers();
	}
	wake_for_instances = false;
	handlers_changed = false;
}

#define STAT_WORKER_COLUMNS 15

/*
 * rmsg.stat_worker(): one row per worker slot, running or not, behind the
 * view rmsg.worker.
 */
PG_FUNCTION_INFO_V1(rmsg_stat_worker);

Datum
rmsg_stat_worker(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	RmsgEnter("rmsg.stat_worker", false);
	InitMaterializedSRF(fcinfo, 0);
	if (workers == NULL)
		return (Datum) 0;

	for (int i = 0; i < workers->nslots; i++)
	{
		WorkerSlot	copy;
		Datum		values[STAT_WORKER_COLUMNS];
		bool		nulls[STAT_WORKER_COLUMNS];
		bool		running;

		SpinLockAcquire(&workers->slots[i].mutex);
		copy = workers->slots[i];
		SpinLockRelease(&workers->slots[i].mutex);
		running = copy.pid != 0;

		memset(nulls, false, sizeof(nulls));
		values[0] = Int32GetDatum(copy.pid);
		nulls[0] = !running;
		values[1] = CStringGetTextDatum(running ? state_names[copy.state] : "stopped");
		values[2] = TimestampTzGetDatum(copy.last_activity);
		nulls[2] = copy.last_activity == 0;
		values[3] = Int64GetDatum(copy.processed);
		values[4] = Int64GetDatum(copy.errors);
		values[5] = Int32GetDatum(i);
		values[6] = CStringGetTextDatum(copy.database);
		nulls[6] = copy.database[0] == '\0';
		values[7] = CStringGetTextDatum(copy.current);
		nulls[7] = !running || copy.current[0] == '\0';
		values[8] = Int64GetDatum(copy.retried);
		values[9] = Int64GetDatum(copy.dead_lettered);
		values[10] = CStringGetTextDatum(copy.last_error);
		nulls[10] = copy.last_error[0] == '\0';
		values[11] = TimestampTzGetDatum(copy.last_error_at);
		nulls[11] = copy.last_error_at == 0;
		values[12] = TimestampTzGetDatum(copy.started_at);
		nulls[12] = copy.started_at == 0;
		values[13] = TimestampTzGetDatum(copy.maintained_at);
		nulls[13] = copy.maintained_at == 0;
		values[14] = Int64GetDatum(copy.payloads_collected);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
