/*-------------------------------------------------------------------------
 *
 * ready_hint.c
 *	  Where in a queue's ready index a get may start: past the entries of
 *	  messages that are gone for good.
 *
 * A get walks the ready index (queue_id, priority, visible_at, msg_id)
 * from the front of its queue's lane (see lanes, below).  Every acked
 * message leaves an index entry behind until VACUUM removes it, and
 * VACUUM cannot while any transaction might still see the
 * message: one long transaction (a report, a REPEATABLE READ export, a
 * replica's query with hot_standby_feedback) keeps every entry of every
 * message acked since it began.  Without help, each get steps over all of
 * them, reading each from the heap, and consumers slow to a crawl.
 *
 * So each queue has a hint in shared memory, scan_from: a key (visible_at,
 * msg_id) below which the index holds no entry a get must look at.  The
 * msg_id lets it stop inside the messages of one batch, which share their
 * visible_at; writers name only a visible_at (below), which counts as the
 * lowest key with it.  A get starts its walk
 * at scan_from, and moves it forward over what it may pass:
 *  - entries gone for good: every row version deleted by a committed
 *    transaction or inserted by an aborted one;
 *  - messages leased by a committed get, whose lease has not run out.  A
 *    lease ends, and the message is then ready at its old place in line;
 *    so the hint also keeps return_from and return_at, the lowest key and
 *    the earliest lease end among the leased messages it was moved past.
 *    Once return_at has come, the hint goes back to return_from and
 *    forgets both; gets walk that part again and pass what they may.
 * It asks with a dirty snapshot, which also sees what transactions still
 * running inserted, are deleting or are changing: an uncommitted put, ack,
 * lease or nack stops the hint, as does a ready message.
 *
 * The invariant: every index entry of the queue that a get must look at
 * has a key at or above scan_from, or is a leased message whose key is at
 * or above return_from and whose lease ends at or after return_at.  What
 * could break it: a new index entry a get did not see while it moved the
 * hint past its place, a lease that ends sooner than the hint was told, a
 * lease that is rolled back.  Hence the rules, for every writer of
 * rmsg.message, before it commits:
 *  - after adding an index entry (a put, an update that was not HOT, a move
 *    to a dead-letter queue, a retry), RmsgReadyHintLower with its key;
 *  - after ending or moving a lease (a nack, an extend), with the row's
 *    key and the lease's new end, RmsgReadyHintLeaseMoved.
 * A lease, ack or move that is not committed cannot be passed by anyone
 * else's walk (the dirty snapshot says a transaction is at work on it); the
 * transaction's own walks do not move the hint of a queue whose messages it
 * wrote (RmsgReadyHintTouched), since all of that comes back if it rolls
 * back.
 * Each of those writes is noted, with its key, in a short ring of the
 * latest writes.  A get that read the hint before the write may have walked
 * past the place; when it publishes, it moves the hint no further than the
 * lowest key written since it read it (and gives up if more writes came
 * than the ring holds); what it learned of the leases it passed is added
 * to the hint's.
 *
 * Priorities (priorities.c) split a queue's part of the ready index into
 * lanes, (queue_id, priority, visible_at, msg_id): each lane is walked on
 * its own, so each has a hint of its own (scan_from, return_from and
 * return_at are per lane), and every rule above names the lane of the
 * entry or the lease.  The ring of writes is shared; each noted write
 * carries its lane, and only writes to its lane bound a walk.  The hint
 * also keeps which lanes may hold entries, so that a get walks only those:
 * RmsgReadyHintLower sets its lane's bit, and a get that finds a new hint
 * (the bits not known yet) looks the lanes up in the index and adds them
 * (RmsgReadyHintLanesFound).  A bit is never cleared: a lane once used
 * costs every get of the queue one index descent more, until a restart.
 *
 * The hints live in shared memory only: after a restart every queue starts
 * from the front again and finds its place on the first get.  A queue
 * without an entry (the table is full) is walked from the front, as before.
 * Writing rmsg.message
 * directly, outside the extension's functions, breaks the rules; a restart
 * mends it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "core/locks.h"
#include "queue/queue.h"

#define RMSG_MAX_READY_HINTS 1024
#define RMSG_HINT_WRITES 64

/* What the hint knows of one priority lane of its queue. */
typedef struct LaneHint
{
	RmsgHintKey scan_from;
	TimestampTz return_from;	/* lowest key of a leased message passed */
	TimestampTz return_at;		/* earliest end of the leases passed */
} LaneHint;

/* A write noted in the ring: its lane and key. */
typedef struct NotedWrite
{
	int			lane;
	TimestampTz key;
} NotedWrite;

typedef struct ReadyHint
{
	RmsgQueueKey key;		/* the hash key */
	slock_t		mutex;			/* guards the fields below */
	uint64		writes;			/* writes noted so far */
	NotedWrite	written[RMSG_HINT_WRITES];	/* write n at n % size */
	bool		lanes_known;	/* whether lanes is complete yet */
	uint16		lanes;			/* bit n: lane n may hold entries */
	LaneHint	lane[RMSG_PRIORITY_LANES];
} ReadyHint;

/*
 * The queues whose messages this transaction wrote (RmsgReadyHintTouched).
 * Bounded: past it, every queue counts as written.
 */
#define RMSG_MAX_TOUCHED_QUEUES 16

static int32 touched[RMSG_MAX_TOUCHED_QUEUES];
static int	ntouched = 0;
static bool touched_overflow = false;

typedef struct ReadyHintShared
{
	LWLock	   *lock;			/* guards the hash table's entries */
} ReadyHintShared;

static ReadyHintShared *shared = NULL;
static HTAB *hints = NULL;

Size
RmsgReadyHintShmemSize(void)
{
	return add_size(MAXALIGN(sizeof(ReadyHintShared)),
					hash_estimate_size(RMSG_MAX_READY_HINTS, sizeof(ReadyHint)));
}

/* Called under AddinShmemInitLock. */
void
RmsgReadyHintShmemStartup(void)
{
	HASHCTL		info;
	bool		found;

	shared = ShmemInitStruct("recoverable_msg ready hints", sizeof(ReadyHintShared), &found);
	if (!found)
		shared->lock = RmsgLWLock(RMSG_LWLOCK_READY_HINTS);
	info.keysize = sizeof(RmsgQueueKey);
	info.entrysize = sizeof(ReadyHint);
	/* of fixed size, like the other tables: see core/stats.c */
	hints = ShmemInitHash("recoverable_msg ready hint table",
						  RMSG_MAX_READY_HINTS, RMSG_MAX_READY_HINTS,
						  &info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
}

/*
 * The hint of key, or NULL.  create: make it when missing (a get does; a
 * writer need not, since a hint made later starts at the front).  Entries
 * are removed only under the lock held exclusively, and the caller holds
 * it shared while it uses the entry.
 */
static ReadyHint *
FindHint(const RmsgQueueKey *key, bool create)
{
	ReadyHint  *hint;
	bool		found;

	hint = hash_search(hints, key, HASH_FIND, NULL);
	if (hint != NULL || !create)
		return hint;

	LWLockRelease(shared->lock);
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	hint = hash_search(hints, key, HASH_ENTER_NULL, &found);
	if (hint == NULL)
	{
		RmsgForgetOldExtensionEntries(hints, key->queue_table);
		hint = hash_search(hints, key, HASH_ENTER_NULL, &found);
	}
	if (hint != NULL && !found)
	{
		SpinLockInit(&hint->mutex);
		hint->writes = 0;
		hint->lanes_known = false;
		hint->lanes = 1;		/* lane 0, the default priority */
		for (int lane = 0; lane < RMSG_PRIORITY_LANES; lane++)
		{
			hint->lane[lane].scan_from.at = DT_NOBEGIN;
			hint->lane[lane].scan_from.msg_id = 0;
			hint->lane[lane].return_from = hint->lane[lane].return_at = DT_NOEND;
		}
	}
	LWLockRelease(shared->lock);
	LWLockAcquire(shared->lock, LW_SHARED);
	/* it may have gone while we did not hold the lock: look again */
	return hash_search(hints, key, HASH_FIND, NULL);
}

/* Whether key a comes before key b in the ready index. */
bool
RmsgHintKeyBefore(RmsgHintKey a, RmsgHintKey b)
{
	return a.at < b.at || (a.at == b.at && a.msg_id < b.msg_id);
}

/*
 * Moves the lane's scan_from back to visible_at `at`, if it is past it:
 * to the lowest key with that visible_at, since the writer does not name
 * its entry's msg_id.  Spinlock held.
 */
static void
LowerTo(LaneHint *lh, TimestampTz at)
{
	if (at <= lh->scan_from.at)
	{
		lh->scan_from.at = at;
		lh->scan_from.msg_id = 0;
	}
}

/* Notes a write with key `key` in lane `lane`.  Spinlock held. */
static void
NoteWrite(ReadyHint *hint, int lane, TimestampTz key)
{
	NotedWrite *noted;

	hint->writes++;
	noted = &hint->written[hint->writes % RMSG_HINT_WRITES];
	noted->lane = lane;
	noted->key = key;
}

/*
 * The queue's hint with its spinlock held (and the table's lock, shared),
 * or NULL (the table's lock held all the same); UnlockHint undoes both.
 * The key is made first: that may read the catalogs (RmsgGetRelations),
 * which must not happen under the lock.
 */
static ReadyHint *
LockHint(int32 queue_id, bool create)
{
	RmsgQueueKey key;
	ReadyHint  *hint;

	RmsgMakeQueueKey(&key, queue_id);
	LWLockAcquire(shared->lock, LW_SHARED);
	hint = FindHint(&key, create);
	if (hint != NULL)
		SpinLockAcquire(&hint->mutex);
	return hint;
}

static void
UnlockHint(ReadyHint *hint)
{
	if (hint != NULL)
		SpinLockRelease(&hint->mutex);
	LWLockRelease(shared->lock);
}

/*
 * The lanes of the queue a get must walk, as a bitmask (bit n: lane n), or
 * 0 when the hint does not know them yet: the get then looks them up in
 * the index and tells RmsgReadyHintLanesFound.  Makes the queue's hint.
 */
uint16
RmsgReadyHintLanes(int32 queue_id)
{
	ReadyHint  *hint;
	uint16		lanes = 0;

	if (hints == NULL)
		return 0;				/* not preloaded: no shared memory */
	hint = LockHint(queue_id, true);
	if (hint != NULL && hint->lanes_known)
		lanes = hint->lanes;
	UnlockHint(hint);
	return lanes;
}

/*
 * A get found index entries in `lanes`, looking after RmsgReadyHintLanes
 * said it did not know.  Lanes a writer added meanwhile are kept: a writer
 * adds its entry before it sets its bit, so an entry added before the look
 * began was found by it, and one added later set its bit in this hint.
 */
void
RmsgReadyHintLanesFound(int32 queue_id, uint16 lanes)
{
	ReadyHint  *hint;

	if (hints == NULL)
		return;
	hint = LockHint(queue_id, false);
	if (hint != NULL)
	{
		hint->lanes |= lanes;
		hint->lanes_known = true;
	}
	UnlockHint(hint);
}

/*
 * Where a get of the queue's lane may start at `now`.  Once the first
 * lease the hint passed may have ended, the hint goes back to the lowest
 * leased message it passed and forgets what it knew of leases: the gets
 * walk that part again, take what is ready there and pass the rest anew.
 * Going back is noted as a write, so that a get still walking from the
 * old place cannot move the hint past it again.
 */
RmsgReadyWalk
RmsgReadyHintRead(int32 queue_id, int lane, TimestampTz now)
{
	ReadyHint  *hint;
	RmsgReadyWalk walk = {lane, false, 0, {DT_NOBEGIN, 0}, DT_NOEND};

	if (hints == NULL)
		return walk;			/* not preloaded: no shared memory */
	hint = LockHint(queue_id, true);
	if (hint != NULL)
	{
		LaneHint   *lh = &hint->lane[lane];

		if (lh->return_at <= now)
		{
			LowerTo(lh, lh->return_from);
			NoteWrite(hint, lane, lh->return_from);
			lh->return_from = lh->return_at = DT_NOEND;
		}
		walk.hinted = true;
		walk.writes = hint->writes;
		walk.start = lh->scan_from;
	}
	UnlockHint(hint);
	return walk;
}

/*
 * A get that started as `walk` says could pass every entry of its lane
 * below `to`; of those, the leased messages begin at key leased_from, and
 * their leases end at leased_until at the earliest (DT_NOEND: there were
 * none).  Moves the lane's hint there, or as far as the writes made
 * meanwhile allow, and starts the walk's next step: a later call answers
 * for the writes after this one.  False when more writes came than the
 * ring holds: nothing moved, and the walk may move nothing more.
 */
bool
RmsgReadyHintAdvance(int32 queue_id, RmsgReadyWalk *walk, RmsgHintKey to,
					 TimestampTz leased_from, TimestampTz leased_until)
{
	ReadyHint  *hint;
	bool		moved = false;

	if (hints == NULL)
		return false;
	hint = LockHint(queue_id, false);
	/*
	 * A walk that found no hint (the table was full) knows no count of
	 * writes to answer for: a hint made since (a drop freed room) may have
	 * noted writes it walked past.
	 */
	if (hint != NULL && walk->hinted && hint->writes - walk->writes <= RMSG_HINT_WRITES)
	{
		LaneHint   *lh = &hint->lane[walk->lane];

		/*
		 * No further than the lowest key written to the lane since the get
		 * read the hint: the walk is past that entry for good, so the
		 * writes an earlier step answered for still bound every later step.
		 */
		for (uint64 n = walk->writes + 1; n <= hint->writes; n++)
		{
			NotedWrite *noted = &hint->written[n % RMSG_HINT_WRITES];

			if (noted->lane == walk->lane)
				walk->cap = Min(walk->cap, noted->key);
		}
		if (walk->cap <= to.at)
		{
			/* a write with key cap: no further than cap's lowest key */
			to.at = walk->cap;
			to.msg_id = 0;
		}
		lh->return_from = Min(lh->return_from, leased_from);
		lh->return_at = Min(lh->return_at, leased_until);
		if (RmsgHintKeyBefore(lh->scan_from, to))
			lh->scan_from = to;
		walk->writes = hint->writes;
		moved = true;
	}
	UnlockHint(hint);
	return moved;
}

/*
 * A writer added an index entry with visible_at `key` to the queue's lane
 * (see the rule above): a get must not start past it, nor move the hint
 * past it; and gets must walk the lane.
 */
void
RmsgReadyHintLower(int32 queue_id, int lane, TimestampTz key)
{
	ReadyHint  *hint;

	Assert(lane >= 0 && lane < RMSG_PRIORITY_LANES);
	if (hints == NULL)
		return;
	hint = LockHint(queue_id, false);
	if (hint != NULL)
	{
		LowerTo(&hint->lane[lane], key);
		hint->lanes |= 1 << lane;
		NoteWrite(hint, lane, key);
	}
	UnlockHint(hint);
}

/*
 * A writer ended or moved the lease of a message with key `key` in the
 * queue's lane: it ends at `until` now (a nack: now).  If the hint passed
 * the message, gets must be back by then; and a get walking now must not
 * pass it on the old lease.
 */
void
RmsgReadyHintLeaseMoved(int32 queue_id, int lane, TimestampTz key, TimestampTz until)
{
	ReadyHint  *hint;

	Assert(lane >= 0 && lane < RMSG_PRIORITY_LANES);
	if (hints == NULL)
		return;
	hint = LockHint(queue_id, false);
	if (hint != NULL)
	{
		LaneHint   *lh = &hint->lane[lane];

		NoteWrite(hint, lane, key);
		lh->return_from = Min(lh->return_from, key);
		lh->return_at = Min(lh->return_at, until);
	}
	UnlockHint(hint);
}

/*
 * This transaction wrote a message of the queue (leased, acked, nacked,
 * extended, moved it).  Its own walks then publish nothing for the queue:
 * a dirty snapshot finds no version of a row this transaction deleted, and
 * takes for committed a lease this transaction made, yet both come back if
 * it rolls back.  Other backends see such rows as being worked on, and
 * stop.
 */
void
RmsgReadyHintTouched(int32 queue_id)
{
	for (int i = 0; i < ntouched; i++)
		if (touched[i] == queue_id)
			return;
	if (ntouched < RMSG_MAX_TOUCHED_QUEUES)
		touched[ntouched++] = queue_id;
	else
		touched_overflow = true;
}

/* Whether this transaction's walks may move the queue's hint. */
bool
RmsgReadyHintMayMove(int32 queue_id)
{
	if (touched_overflow)
		return false;
	for (int i = 0; i < ntouched; i++)
		if (touched[i] == queue_id)
			return false;
	return true;
}

/* The transaction ended (or was prepared): its list is done with. */
void
RmsgReadyHintXactEnd(void)
{
	ntouched = 0;
	touched_overflow = false;
}

/* The queue is dropped: its entry goes, making room. */
void
RmsgReadyHintForget(int32 queue_id)
{
	RmsgQueueKey key;

	if (hints == NULL)
		return;
	RmsgMakeQueueKey(&key, queue_id);
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	hash_search(hints, &key, HASH_REMOVE, NULL);
	LWLockRelease(shared->lock);
}
