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
 * others.  The entries live in a shared hash table keyed like the
 * counters' and the ready hints' (RmsgQueueKey, core/stats.c), in shared
 * memory only: after a restart every queue starts with a full bucket.  A
 * full table (RMSG_FLOW_QUEUES limited queues) drops the entries of this
 * database's earlier extensions, then those nobody is in whose buckets
 * have filled up again; with none to drop the turn goes unlimited, with a
 * warning.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "port/pg_bitutils.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "worker/worker.h"

#define RMSG_FLOW_QUEUES 256

typedef struct FlowEntry
{
	RmsgQueueKey key;			/* the hash key */
	uint32		in_turn;		/* bit i: worker i is in a turn of the queue */
	double		rate;			/* the rate it was last limited to, 0: none */
	double		tokens;
	TimestampTz filled_at;		/* when tokens was last brought up to date */
	bool		refused;		/* a worker was refused since the last leave */
} FlowEntry;

static LWLock *flow_lock = NULL;
static HTAB *flow = NULL;

Size
RmsgFlowShmemSize(void)
{
	return hash_estimate_size(RMSG_FLOW_QUEUES, sizeof(FlowEntry));
}

/* Called under AddinShmemInitLock. */
void
RmsgFlowShmemStartup(void)
{
	HASHCTL		info;

	flow_lock = RmsgLWLock(RMSG_LWLOCK_FLOW);
	info.keysize = sizeof(RmsgQueueKey);
	info.entrysize = sizeof(FlowEntry);
	/* of fixed size, as the counters' table (core/stats.c says why) */
	flow = ShmemInitHash("recoverable_msg flow control", RMSG_FLOW_QUEUES, RMSG_FLOW_QUEUES,
						 &info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
}

static bool
Limited(const RmsgHandler *h)
{
	return h->concurrency > 0 || h->rate > 0;
}

/* A bucket's size: a second's worth of calls, at least one. */
static double
Capacity(double rate)
{
	return Max(1.0, rate);
}

/* Brings the entry's bucket up to date at `now`. */
static void
Refill(FlowEntry *e, TimestampTz now)
{
	if (e->rate > 0)
		e->tokens = Min(Capacity(e->rate),
						e->tokens + (double) (now - e->filled_at) / USECS_PER_SEC * e->rate);
	e->filled_at = now;
}

/*
 * Drops one entry nobody is in whose bucket is full again: it holds
 * nothing a new entry would not.  False when there is none.
 */
static bool
DropIdleEntry(TimestampTz now)
{
	HASH_SEQ_STATUS status;
	FlowEntry  *e;

	hash_seq_init(&status, flow);
	while ((e = hash_seq_search(&status)) != NULL)
	{
		Refill(e, now);
		if (e->in_turn == 0 && (e->rate == 0 || e->tokens >= Capacity(e->rate)))
		{
			hash_seq_term(&status);
			hash_search(flow, &e->key, HASH_REMOVE, NULL);
			return true;
		}
	}
	return false;
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
	FlowEntry  *e;
	bool		found;

	e = hash_search(flow, &h->flow_key, HASH_ENTER_NULL, &found);
	if (e == NULL)
	{
		RmsgForgetOldExtensionEntries(flow, h->flow_key.queue_table);
		e = hash_search(flow, &h->flow_key, HASH_ENTER_NULL, &found);
	}
	if (e == NULL && DropIdleEntry(now))
		e = hash_search(flow, &h->flow_key, HASH_ENTER_NULL, &found);
	if (e == NULL)
		return NULL;
	if (!found)
	{
		e->in_turn = 0;
		e->tokens = Capacity(h->rate);
		e->filled_at = now;
		e->refused = false;
	}
	e->rate = h->rate;			/* a subscribe may have changed it */
	return e;
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
	LWLockAcquire(flow_lock, LW_EXCLUSIVE);
	e = EntryFor(h, now);
	if (e == NULL)
	{
		LWLockRelease(flow_lock);
		ereport(WARNING,
				(errmsg("recoverable_msg: no room to limit queue \"%s\"; its turn is not limited",
						h->target)));
		return h->batch;
	}

	if (h->concurrency > 0 && pg_popcount32(e->in_turn & ~(((uint32) 1) << worker)) >= h->concurrency)
		granted = 0;
	if (granted > 0 && h->rate > 0)
	{
		Refill(e, now);
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
	LWLockRelease(flow_lock);
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
	FlowEntry  *e;
	bool		wake = false;

	if (!Limited(h) || flow == NULL)
		return;
	LWLockAcquire(flow_lock, LW_EXCLUSIVE);
	e = hash_search(flow, &h->flow_key, HASH_FIND, NULL);
	if (e != NULL)
	{
		e->in_turn &= ~((uint32) 1 << worker);
		if (h->rate > 0 && taken < granted)
			e->tokens = Min(Capacity(h->rate), e->tokens + (granted - taken));
		wake = e->refused;
		e->refused = false;
	}
	LWLockRelease(flow_lock);
	if (wake)
		RmsgWakeWorkersForQueue(h->queue_id);
}

/* Worker `worker` starts, or recovered from an error: it is in no turn. */
void
RmsgFlowLeaveAll(int worker)
{
	HASH_SEQ_STATUS status;
	FlowEntry  *e;

	if (flow == NULL)
		return;
	LWLockAcquire(flow_lock, LW_EXCLUSIVE);
	hash_seq_init(&status, flow);
	while ((e = hash_seq_search(&status)) != NULL)
		e->in_turn &= ~((uint32) 1 << worker);
	LWLockRelease(flow_lock);
}
