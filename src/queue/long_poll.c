/*-------------------------------------------------------------------------
 *
 * wakeup.c
 *	  Long polling: a get with a wait sleeps until a commit makes a message
 *	  of its queue ready.
 *
 * Shared state is an array of condition variables; queue q uses slot
 * q % RMSG_WAKE_SLOTS, so queues sharing a slot only cost a spurious wakeup.
 * Condition variables need no lock of ours.
 *
 * A backend remembers which queues its transaction made ready (puts, and
 * leases that a rollback hands back) and broadcasts on their slots when the
 * transaction ends: only then can a waiter see the change.  The background
 * workers hear of the same queues (worker_state.c).  The list is
 * backend-local and bounded; when it overflows every slot is woken.
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

static PendingWake pending[RMSG_PENDING_MAX];
static int	npending = 0;
static bool pending_overflow = false;

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

static ConditionVariable *
SlotFor(int32 queue_id)
{
	return &wake_slots[(uint32) queue_id % RMSG_WAKE_SLOTS].cv;
}

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

void
RmsgWaitCancel(void)
{
	ConditionVariableCancelSleep();
}
