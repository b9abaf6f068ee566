/*-------------------------------------------------------------------------
 *
 * long_poll.c
 *	  Long polling: a get with a wait sleeps until a commit makes a message
 *	  of its queue ready.
 *
 * Shared state is an array of condition variables; queue q uses slot
 * q % RMSG_WAKE_SLOTS, so queues sharing a slot (of one database or of
 * two) only cost a spurious wakeup.  Condition variables need no lock of
 * ours: a waiter registers on its slot before it looks for messages, so a
 * broadcast between its look and its sleep is not lost.
 *
 * A backend remembers which queues its transaction made ready (puts,
 * nacks, dead letters moved into a queue, and leases that a rollback hands
 * back) and broadcasts on their slots when the transaction ends: only then
 * can a waiter see the change.  Whoever else takes messages hears of the
 * same queues through rmsg_queue_ready_hook, which recoverable_msg.c
 * points at the background workers (worker/slots.c), so that this folder
 * does not call up into theirs.  The list is backend-local and bounded;
 * when it overflows every slot is woken, and the hook is told -1.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "utils/timestamp.h"

#include "queue/queue.h"

#define RMSG_WAKE_SLOTS 64
#define RMSG_PENDING_MAX 16

typedef struct WakeSlot
{
	ConditionVariable cv;
} WakeSlot;

typedef struct PendingWake
{
	int32		queue_id;
	bool		also_on_abort;
} PendingWake;

static WakeSlot *wake_slots = NULL;

RmsgQueueReadyHook rmsg_queue_ready_hook = NULL;

/*
 * rmsg.max_wait: the longest a get may sleep, whatever wait it asks for;
 * 0 means no ceiling.  A sleeping get holds its server connection, which
 * behind a pooler in transaction mode is a connection no other client can
 * use meanwhile.  The operator sets a ceiling for the roles that come
 * through such a pool, and it is PGC_SUSET so that those roles cannot lift
 * it themselves.
 */
int			rmsg_max_wait = 0;

static PendingWake pending[RMSG_PENDING_MAX];
static int	npending = 0;
static bool pending_overflow = false;

/* The shared memory long polling needs: one condition variable per slot. */
Size
RmsgLongPollShmemSize(void)
{
	return mul_size(sizeof(WakeSlot), RMSG_WAKE_SLOTS);
}

/* Called under AddinShmemInitLock. */
void
RmsgLongPollShmemStartup(void)
{
	bool		found;

	wake_slots = ShmemInitStruct("recoverable_msg long polling",
								 RmsgLongPollShmemSize(), &found);
	if (!found)
	{
		for (int i = 0; i < RMSG_WAKE_SLOTS; i++)
			ConditionVariableInit(&wake_slots[i].cv);
	}
}

/*
 * The wait a get asks for, in microseconds, cut to rmsg.max_wait.  A get
 * cut short returns what it has (often nothing), exactly as if its own
 * wait had run out; the client polls again, on whatever server connection
 * the pooler gives it then.
 */
int64
RmsgWaitCeiling(int64 wait)
{
	int64		ceiling = (int64) rmsg_max_wait * 1000;

	if (rmsg_max_wait > 0 && wait > ceiling)
		return ceiling;
	return wait;
}

/* The condition variable a queue's waiters sleep on. */
static ConditionVariable *
SlotFor(int32 queue_id)
{
	return &wake_slots[(uint32) queue_id % RMSG_WAKE_SLOTS].cv;
}

/*
 * Notes a queue to wake at transaction end; also_on_abort: even if the
 * transaction rolls back.
 */
static void
Remember(int32 queue_id, bool also_on_abort)
{
	if (wake_slots == NULL)
		return;					/* not preloaded: nobody can be waiting */

	for (int i = 0; i < npending; i++)
	{
		if (pending[i].queue_id == queue_id)
		{
			pending[i].also_on_abort |= also_on_abort;
			return;
		}
	}
	if (npending < RMSG_PENDING_MAX)
	{
		pending[npending].queue_id = queue_id;
		pending[npending].also_on_abort = also_on_abort;
		npending++;
	}
	else
		pending_overflow = true;
}

/* The current transaction makes a message of this queue ready if it commits. */
void
RmsgWakeQueueAtCommit(int32 queue_id)
{
	Remember(queue_id, false);
}

/*
 * The current transaction leased messages of this queue: a rollback makes
 * them ready again at once, so waiters must hear of it either way.
 */
void
RmsgWakeQueueAtEnd(int32 queue_id)
{
	Remember(queue_id, true);
}

/* Transaction end: broadcast what became visible.  Must not raise errors. */
void
RmsgWakeupXactEnd(bool committed)
{
	if (wake_slots != NULL)
	{
		/* the waiting gets, and the background workers if a handler serves the queue */
		if (pending_overflow)
		{
			for (int i = 0; i < RMSG_WAKE_SLOTS; i++)
				ConditionVariableBroadcast(&wake_slots[i].cv);
			if (rmsg_queue_ready_hook)
				rmsg_queue_ready_hook(-1);
		}
		else
		{
			for (int i = 0; i < npending; i++)
			{
				if (committed || pending[i].also_on_abort)
				{
					ConditionVariableBroadcast(SlotFor(pending[i].queue_id));
					if (rmsg_queue_ready_hook)
						rmsg_queue_ready_hook(pending[i].queue_id);
				}
			}
		}
	}
	npending = 0;
	pending_overflow = false;
}

/*
 * Register as a waiter before looking for messages, so that a commit between
 * the look and the sleep is not missed.
 */
void
RmsgWaitPrepare(int32 queue_id)
{
	ConditionVariablePrepareToSleep(SlotFor(queue_id));
}

/*
 * Sleep until woken or until the deadline; returns false once the deadline
 * has passed.  A wakeup may be spurious: the caller looks again.
 */
bool
RmsgWaitSleep(int32 queue_id, TimestampTz until)
{
	long		remaining_ms;

	remaining_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);
	if (remaining_ms <= 0)
		return false;

	(void) ConditionVariableTimedSleep(SlotFor(queue_id), remaining_ms,
									   PG_WAIT_EXTENSION);
	CHECK_FOR_INTERRUPTS();
	return true;
}

/* No longer a waiter: after the last look, whatever it found. */
void
RmsgWaitCancel(void)
{
	ConditionVariableCancelSleep();
}
