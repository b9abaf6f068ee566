/*-------------------------------------------------------------------------
 *
 * flow.c
 *	  Flow control: how many of a queue's messages the workers may take.
 *
 * rmsg.subscribe(..., concurrency, rate) limits what the workers do with a
 * queue, across all of them: at most `concurrency` of its messages in
 * handlers at once, and at most `rate` handler calls per second.  Both
 * protect what a handler talks to (a database, an API with a quota) from
 * as many calls as there are workers and ready messages.
 *
 * Concurrency.  A worker handles the messages of its turn one after the
 * other, so the messages of a queue in handlers at once are the workers
 * in a turn of that queue.  Each queue with limits has an entry in a
 * shared table with the set of workers in such a turn (a bit per worker
 * number): a worker joins it before it takes any message, if the set is
 * smaller than `concurrency`, and leaves it when its turn ends, commits or
 * fails.  A worker that starts, or recovers from an error, leaves every
 * set it was in, so a worker that died in a turn holds no place for long.
 *
 * Rate.  The same entry is a token bucket: it fills at `rate` tokens a
 * second up to max(1, rate) (a burst of at most one second's calls), and
 * a turn takes at most as many messages as there are whole tokens; the
 * ones it did not take are given back when it ends.  Failed calls count:
 * a retry storm is held to the rate too.
 *
 * A worker refused a turn skips the queue in this pass and sleeps no
 * longer than until a token is due; one leaving a full set wakes the
 * others.  The entries live in shared memory only: after a restart every
 * queue starts with a full bucket.  A table full of entries (more than
 * RMSG_FLOW_QUEUES limited queues in flight at once) drops the entries
 * nobody is in whose buckets are full, and with none to drop lets the
 * turn go unlimited, with a warning.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "port/pg_bitutils.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "worker/worker.h"

#define RMSG_FLOW_QUEUES 256

typedef struct FlowEntry
{
	bool		used;
	RmsgQueueKey key;
	uint32		in_turn;		/* bit i: worker i is in a turn of the queue */
	double		tokens;
	TimestampTz filled_at;		/* when tokens was last brought up to date */
	bool		refused;		/* a worker was refused since the last leave */
} FlowEntry;

typedef struct FlowTable
{
	LWLock	   *lock;
	FlowEntry	entries[RMSG_FLOW_QUEUES];
} FlowTable;

static FlowTable *flow = NULL;

Size
RmsgFlowShmemSize(void)
{
	return sizeof(FlowTable);
}

/* Called under AddinShmemInitLock. */
void
RmsgFlowShmemStartup(void)
{
	bool		found;

	flow = ShmemInitStruct("recoverable_msg flow control", sizeof(FlowTable), &found);
	if (!found)
	{
		memset(flow, 0, sizeof(FlowTable));
		flow->lock = RmsgLWLock(RMSG_LWLOCK_FLOW);
	}
}

static bool
Limited(const RmsgHandler *h)
{
	return h->concurrency > 0 || h->rate > 0;
}

/* The bucket's size: a second's worth of calls, at least one. */
static double
Capacity(const RmsgHandler *h)
{
	return Max(1.0, h->rate);
}

/*
 * The queue's entry, made with a full bucket on first use; NULL when the
 * table is full of entries in use.  The lock held exclusively.  The key
 * was made when the handlers were loaded: a turn begins and ends outside
 * any transaction, where the catalog cannot be read.
 */
static FlowEntry *
EntryFor(const RmsgHandler *h, TimestampTz now)
{
	FlowEntry  *free_entry = NULL;

	for (int i = 0; i < RMSG_FLOW_QUEUES; i++)
	{
		FlowEntry  *e = &flow->entries[i];

		if (e->used && memcmp(&e->key, &h->flow_key, sizeof(h->flow_key)) == 0)
			return e;
		if (!e->used && free_entry == NULL)
			free_entry = e;
	}
	if (free_entry == NULL)
	{
		/* an idle entry with a full bucket holds nothing worth keeping */
		for (int i = 0; i < RMSG_FLOW_QUEUES && free_entry == NULL; i++)
		{
			FlowEntry  *e = &flow->entries[i];

			if (e->in_turn == 0 && now - e->filled_at > USECS_PER_MINUTE)
				free_entry = e;
		}
		if (free_entry == NULL)
			return NULL;
	}
	memset(free_entry, 0, sizeof(FlowEntry));
	free_entry->used = true;
	free_entry->key = h->flow_key;
	free_entry->tokens = Capacity(h);
	free_entry->filled_at = now;
	return free_entry;
}

/*
 * How many messages worker `worker` may take in a turn of h's queue now:
 * h->batch without limits, else at most that, 0 when it must skip the
 * queue (then *due is moved earlier to when a token comes, for the rate).
 * A worker given a turn must call RmsgFlowEnd when it ends.
 */
int
RmsgFlowBegin(const RmsgHandler *h, int worker, TimestampTz *due)
{
	TimestampTz now;
	FlowEntry  *e;
	int			granted = h->batch;

	if (!Limited(h) || flow == NULL)
		return h->batch;

	now = GetCurrentTimestamp();
	LWLockAcquire(flow->lock, LW_EXCLUSIVE);
	e = EntryFor(h, now);
	if (e == NULL)
	{
		LWLockRelease(flow->lock);
		ereport(WARNING,
				(errmsg("recoverable_msg: no room to limit queue \"%s\"; its turn is not limited",
						h->target)));
		return h->batch;
	}

	if (h->concurrency > 0 && pg_popcount32(e->in_turn & ~(((uint32) 1) << worker)) >= h->concurrency)
		granted = 0;
	if (granted > 0 && h->rate > 0)
	{
		e->tokens = Min(Capacity(h),
						e->tokens + (double) (now - e->filled_at) / USECS_PER_SEC * h->rate);
		e->filled_at = now;
		granted = Min(granted, (int) e->tokens);
		if (granted == 0)
		{
			TimestampTz next = now + (TimestampTz) ((1.0 - e->tokens) / h->rate * USECS_PER_SEC) + 1;

			if (*due == 0 || next < *due)
				*due = next;
		}
		e->tokens -= granted;
	}
	if (granted > 0)
		e->in_turn |= ((uint32) 1) << worker;
	else
		e->refused = true;
	LWLockRelease(flow->lock);
	return granted;
}

/*
 * Ends worker `worker`'s turn of h's queue: it was granted `granted`
 * messages and took `taken`; the tokens it did not use go back.  Wakes
 * the workers when one was refused meanwhile.
 */
void
RmsgFlowEnd(const RmsgHandler *h, int worker, int granted, int taken)
{
	bool		wake = false;

	if (!Limited(h) || flow == NULL)
		return;
	LWLockAcquire(flow->lock, LW_EXCLUSIVE);
	for (int i = 0; i < RMSG_FLOW_QUEUES; i++)
	{
		FlowEntry  *e = &flow->entries[i];

		if (!e->used || memcmp(&e->key, &h->flow_key, sizeof(h->flow_key)) != 0)
			continue;
		e->in_turn &= ~(((uint32) 1) << worker);
		if (h->rate > 0 && taken < granted)
			e->tokens = Min(Capacity(h), e->tokens + (granted - taken));
		wake = e->refused;
		e->refused = false;
		break;
	}
	LWLockRelease(flow->lock);
	if (wake)
		RmsgWakeWorkersForQueue(h->queue_id);
}

/* Worker `worker` starts, or recovered from an error: it is in no turn. */
void
RmsgFlowLeaveAll(int worker)
{
	if (flow == NULL)
		return;
	LWLockAcquire(flow->lock, LW_EXCLUSIVE);
	for (int i = 0; i < RMSG_FLOW_QUEUES; i++)
		flow->entries[i].in_turn &= ~(((uint32) 1) << worker);
	LWLockRelease(flow->lock);
}
