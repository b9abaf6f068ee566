/*-------------------------------------------------------------------------
 *
 * ready_hint.c
 *	  Where in a queue's ready index a get may start: past the entries of
 *	  messages that are gone for good.
 *
 * A get walks the ready index (queue_id, visible_at, msg_id) from the
 * front.  Every acked message leaves an index entry behind until VACUUM
 * removes it, and VACUUM cannot while any transaction might still see the
 * message: one long transaction (a report, a REPEATABLE READ export, a
 * replica's query with hot_standby_feedback) keeps every entry of every
 * message acked since it began.  Without help, each get steps over all of
 * them, reading each from the heap, and consumers slow to a crawl.
 *
 * So each queue has a hint in shared memory, scan_from: a visible_at below
 * which the index holds no entry that matters.  A get starts its walk at
 * scan_from, and moves it forward over the entries it finds gone for good:
 * those whose every row version was deleted by a committed transaction or
 * inserted by an aborted one.  It asks that with a dirty snapshot, which
 * also sees what transactions still running inserted or are deleting: so a
 * message of an uncommitted put, or one an uncommitted ack is deleting,
 * stops the hint.  So does every live message, ready or leased (a lease
 * may run out, and the message is then ready at its old place in line).
 *
 * The invariant: every index entry of the queue that is not gone for good
 * has a key at or above scan_from.  Entries only become gone for good,
 * never back, so what breaks it is a new entry below scan_from, or one a
 * get did not see while it moved the hint past its place.  Hence the rule
 * for every writer of rmsg.message: after adding an index entry (a put, a
 * lease or nack whose update is not HOT, a move to a dead-letter queue),
 * and before committing, call RmsgReadyHintLower with its key.  It lowers
 * scan_from if the key is below, and notes the key in the floor of the
 * current epoch.  A get that read the hint before that entry existed may
 * have walked past the entry's place; when it publishes, it takes the
 * lowest key noted since it started (the floors of its epoch and the next;
 * two epochs later it gives up), so it never moves the hint past an entry
 * added while it walked.  Each move of the hint starts a new epoch.
 *
 * The hints live in shared memory only: after a restart every queue starts
 * from the front again and finds its place on the first get.  A queue
 * without an entry (the table is full) is walked from the front, as before.
 * Writing rmsg.message directly, outside the extension's functions, breaks
 * the rule; a restart mends it.
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

#define RMSG_MAX_READY_HINTS 4096

typedef struct ReadyHintKey
{
	Oid			database;
	Oid			queue_table;	/* rmsg.queue of that database */
	int32		queue_id;
} ReadyHintKey;

typedef struct ReadyHint
{
	ReadyHintKey key;			/* the hash key */
	slock_t		mutex;			/* guards the fields below */
	TimestampTz scan_from;
	uint64		epoch;			/* moves of scan_from so far */
	TimestampTz floor[2];		/* lowest key added in epochs of each parity */
} ReadyHint;

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
	info.keysize = sizeof(ReadyHintKey);
	info.entrysize = sizeof(ReadyHint);
	/* of fixed size, like the other tables: see core/stats.c */
	hints = ShmemInitHash("recoverable_msg ready hint table",
						  RMSG_MAX_READY_HINTS, RMSG_MAX_READY_HINTS,
						  &info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
}

/* The key of a queue of this database's extension, padding zeroed. */
static void
MakeKey(ReadyHintKey *key, int32 queue_id)
{
	memset(key, 0, sizeof(*key));
	key->database = MyDatabaseId;
	key->queue_table = RmsgGetRelations()->queue;
	key->queue_id = queue_id;
}

/*
 * The queue's hint, or NULL.  create: make it when missing (a get does; a
 * writer need not, since a hint made later starts at the front).  Entries
 * are removed only under the lock held exclusively, and the caller holds
 * it shared while it uses the entry.
 */
static ReadyHint *
FindHint(int32 queue_id, bool create)
{
	ReadyHintKey key;
	ReadyHint  *hint;
	bool		found;

	MakeKey(&key, queue_id);
	hint = hash_search(hints, &key, HASH_FIND, NULL);
	if (hint != NULL || !create)
		return hint;

	LWLockRelease(shared->lock);
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	hint = hash_search(hints, &key, HASH_ENTER_NULL, &found);
	if (hint != NULL && !found)
	{
		SpinLockInit(&hint->mutex);
		hint->scan_from = DT_NOBEGIN;
		hint->epoch = 0;
		hint->floor[0] = hint->floor[1] = DT_NOEND;
	}
	LWLockRelease(shared->lock);
	LWLockAcquire(shared->lock, LW_SHARED);
	/* it may have gone while we did not hold the lock: look again */
	return hash_search(hints, &key, HASH_FIND, NULL);
}

/*
 * Where a get of the queue may start; *epoch is handed back to
 * RmsgReadyHintAdvance.  DT_NOBEGIN: from the front.
 */
TimestampTz
RmsgReadyHintRead(int32 queue_id, uint64 *epoch)
{
	ReadyHint  *hint;
	TimestampTz scan_from = DT_NOBEGIN;

	*epoch = 0;
	if (hints == NULL)
		return DT_NOBEGIN;		/* not preloaded: no shared memory */
	LWLockAcquire(shared->lock, LW_SHARED);
	hint = FindHint(queue_id, true);
	if (hint != NULL)
	{
		SpinLockAcquire(&hint->mutex);
		scan_from = hint->scan_from;
		*epoch = hint->epoch;
		SpinLockRelease(&hint->mutex);
	}
	LWLockRelease(shared->lock);
	return scan_from;
}

/*
 * A get that read the hint in `epoch` found every entry below `to` gone for
 * good: moves the hint there, or as far as the entries added meanwhile
 * allow.
 */
void
RmsgReadyHintAdvance(int32 queue_id, uint64 epoch, TimestampTz to)
{
	ReadyHint  *hint;

	if (hints == NULL)
		return;
	LWLockAcquire(shared->lock, LW_SHARED);
	hint = FindHint(queue_id, false);
	if (hint != NULL)
	{
		SpinLockAcquire(&hint->mutex);
		if (hint->epoch == epoch || hint->epoch == epoch + 1)
		{
			/* the lowest key added since the get read the hint */
			to = Min(to, hint->floor[epoch % 2]);
			if (hint->epoch == epoch + 1)
				to = Min(to, hint->floor[(epoch + 1) % 2]);
			if (to > hint->scan_from)
			{
				hint->scan_from = to;
				hint->epoch++;
				hint->floor[hint->epoch % 2] = DT_NOEND;
			}
		}
		SpinLockRelease(&hint->mutex);
	}
	LWLockRelease(shared->lock);
}

/*
 * A writer added an index entry with visible_at `key` to the queue (see the
 * rule above): a get must not start past it, nor move the hint past it.
 */
void
RmsgReadyHintLower(int32 queue_id, TimestampTz key)
{
	ReadyHint  *hint;

	if (hints == NULL)
		return;
	LWLockAcquire(shared->lock, LW_SHARED);
	hint = FindHint(queue_id, false);
	if (hint != NULL)
	{
		SpinLockAcquire(&hint->mutex);
		if (key < hint->scan_from)
			hint->scan_from = key;
		if (key < hint->floor[hint->epoch % 2])
			hint->floor[hint->epoch % 2] = key;
		SpinLockRelease(&hint->mutex);
	}
	LWLockRelease(shared->lock);
}

/* The queue is dropped: its entry goes, making room. */
void
RmsgReadyHintForget(int32 queue_id)
{
	ReadyHintKey key;

	if (hints == NULL)
		return;
	MakeKey(&key, queue_id);
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	hash_search(hints, &key, HASH_REMOVE, NULL);
	LWLockRelease(shared->lock);
}
