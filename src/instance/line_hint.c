/*-------------------------------------------------------------------------
 *
 * line_hint.c
 *	  Where in an instance's line a receive may start: past the messages
 *	  that are gone for good.
 *
 * A receive reads the head of its instance's line three times (is a
 * message in flight, is a recovery message in flight, which messages come
 * next), each along instance_message_line_idx (instance_id, msg_id).  An
 * acked message leaves its index entry behind until VACUUM removes it, and
 * VACUUM cannot while any transaction might still see the message: under
 * one long transaction (a report, a REPEATABLE READ export, a replica's
 * query with hot_standby_feedback) every receive stepped over every
 * message acked since, reading each from the heap.  Draining 30,000
 * messages from one instance beside a held xid, receive + ack fell from
 * 685 to 63 a second; TAP 032's 3,000 read 14,482,320 index entries (and
 * by receive_any, which looked for the next instance with messages the
 * same way, 65,146,755), now 19,040 and 27,621.
 *
 * So each instance with a long line behind it has a hint in shared memory,
 * line_from: a msg_id below which its line holds no message that is not
 * gone for good (every version deleted by a committed transaction, or
 * inserted by an aborted one).  A receive first walks from line_from with
 * a dirty snapshot, which also sees what running transactions inserted or
 * are deleting or changing, passes the entries that are gone, stops at the
 * first that is not, and moves line_from there; then it reads the line
 * from line_from (receive.c).  The messages in flight are at the head of
 * the line, so they are never passed.
 *
 * What could break it: a message delivered with a msg_id below line_from.
 * Deliveries to one instance hold its arrival lock until they end, so a
 * delivery takes its msg_id after every earlier one committed or rolled
 * back, and one still at work stops the walk (the dirty snapshot sees its
 * insert).  The rule below does not lean on that lock: after inserting,
 * before it commits, deliver.c calls RmsgLineHintLower with the new msg_id.
 * A lowering first counts a write in one of RMSG_LINE_WRITE_SLOTS counters
 * (the instance's, shared with the instances that hash alike), then lowers
 * line_from if the instance has an entry; a walk reads that counter before
 * it starts, and moves line_from (or makes the entry) only if the counter
 * is unchanged, checked under the lock a lowering must take after
 * counting.  So either the walk sees the write and gives up (the next
 * receive walks again), or the lowering comes after the walk's move and
 * undoes it.  And a walk does not pass a message its own transaction
 * deleted (an ack, a drop, DROP OWNED): the dirty snapshot cannot tell
 * those from committed deletes, and they all come back if it rolls back.
 *
 * A receive reads line_from again after its statement's snapshot is taken
 * (receive.c): a delivery that committed before that snapshot lowered the
 * hint before it committed, so the statement never starts past it.
 *
 * The table holds RMSG_MAX_LINE_HINTS instances.  An entry is made only
 * when a walk passed at least RMSG_LINE_HINT_WORTH gone entries, so short
 * lines (most instances) take no room; when the table is full, an entry
 * is dropped to make room.  A missing entry means the front of the line,
 * so dropping one is always safe.  The hints live in shared memory only:
 * after a restart every line starts from its front.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "common/hashfn.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "core/locks.h"
#include "instance/instance.h"

#define RMSG_MAX_LINE_HINTS 4096

/* A walk that passes fewer gone entries than this makes no entry. */
#define RMSG_LINE_HINT_WORTH 16

/* Counters of lowerings, one per group of instances that hash alike. */
#define RMSG_LINE_WRITE_SLOTS 1024

/* An instance of a database's extension; zeroed first (hashed as bytes). */
typedef struct LineKey
{
	Oid			database;
	Oid			instance_table;	/* rmsg.instance of that database */
	int64		instance_id;
} LineKey;

typedef struct LineHint
{
	LineKey		key;			/* the hash key */
	slock_t		mutex;			/* guards line_from */
	int64		line_from;		/* no message below it is still there */
} LineHint;

typedef struct LineHintShared
{
	LWLock	   *lock;			/* guards the hash table's entries */
	pg_atomic_uint64 writes[RMSG_LINE_WRITE_SLOTS];
} LineHintShared;

static LineHintShared *shared = NULL;
static HTAB *line_hints = NULL;

Size
RmsgLineHintShmemSize(void)
{
	return add_size(MAXALIGN(sizeof(LineHintShared)),
					hash_estimate_size(RMSG_MAX_LINE_HINTS, sizeof(LineHint)));
}

/* Called under AddinShmemInitLock. */
void
RmsgLineHintShmemStartup(void)
{
	HASHCTL		info;
	bool		found;

	shared = ShmemInitStruct("recoverable_msg line hints", sizeof(LineHintShared), &found);
	if (!found)
	{
		shared->lock = RmsgLWLock(RMSG_LWLOCK_LINE_HINTS);
		for (int i = 0; i < RMSG_LINE_WRITE_SLOTS; i++)
			pg_atomic_init_u64(&shared->writes[i], 0);
	}
	info.keysize = sizeof(LineKey);
	info.entrysize = sizeof(LineHint);
	line_hints = ShmemInitHash("recoverable_msg line hint table",
							   RMSG_MAX_LINE_HINTS, RMSG_MAX_LINE_HINTS,
							   &info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
}

static void
MakeKey(LineKey *key, int64 instance_id)
{
	memset(key, 0, sizeof(*key));
	key->database = MyDatabaseId;
	key->instance_table = RmsgGetRelations()->instance;
	key->instance_id = instance_id;
}

/* The counter of lowerings of the instance's group. */
static pg_atomic_uint64 *
WritesOf(const LineKey *key)
{
	uint32		h = hash_bytes((const unsigned char *) key, sizeof(LineKey));

	return &shared->writes[h % RMSG_LINE_WRITE_SLOTS];
}

/* The instance's line_from, or 0 (its front) when it has no entry. */
static int64
ReadHint(const LineKey *key)
{
	int64		line_from = 0;
	LineHint   *hint;

	LWLockAcquire(shared->lock, LW_SHARED);
	hint = hash_search(line_hints, key, HASH_FIND, NULL);
	if (hint != NULL)
	{
		SpinLockAcquire(&hint->mutex);
		line_from = hint->line_from;
		SpinLockRelease(&hint->mutex);
	}
	LWLockRelease(shared->lock);
	return line_from;
}

/*
 * Moves the instance's line_from up to `to` (making its entry when
 * `create`, dropping another when the table is full), unless a lowering
 * was counted since the walk read `writes`.  The count is read under the
 * lock a lowering takes after counting (the table's lock exclusively, or
 * the entry's spinlock), so a lowering that is not seen here comes after
 * the move and sees the entry.
 */
static void
AdvanceHint(const LineKey *key, uint64 writes, int64 to, bool create)
{
	pg_atomic_uint64 *counter = WritesOf(key);
	LineHint   *hint;
	bool		found;

	if (create)
	{
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		hint = hash_search(line_hints, key, HASH_FIND, NULL);
		if (hint == NULL && pg_atomic_read_u64(counter) == writes)
		{
			hint = hash_search(line_hints, key, HASH_ENTER_NULL, &found);
			if (hint == NULL)
			{
				HASH_SEQ_STATUS status;
				LineHint   *victim;

				/* any entry may go: without one, a line is read from its front */
				hash_seq_init(&status, line_hints);
				victim = hash_seq_search(&status);
				if (victim != NULL)
				{
					LineKey		gone = victim->key;

					hash_seq_term(&status);
					hash_search(line_hints, &gone, HASH_REMOVE, NULL);
				}
				hint = hash_search(line_hints, key, HASH_ENTER_NULL, &found);
			}
			if (hint != NULL)
			{
				SpinLockInit(&hint->mutex);
				hint->line_from = to;
			}
		}
		LWLockRelease(shared->lock);
		return;
	}

	LWLockAcquire(shared->lock, LW_SHARED);
	hint = hash_search(line_hints, key, HASH_FIND, NULL);
	if (hint != NULL)
	{
		SpinLockAcquire(&hint->mutex);
		if (pg_atomic_read_u64(counter) == writes && hint->line_from < to)
			hint->line_from = to;
		SpinLockRelease(&hint->mutex);
	}
	LWLockRelease(shared->lock);
}

/*
 * A delivery inserted msg_id into the instance's line: before it commits,
 * no walk may have moved line_from past it.  Called after the insert.
 */
void
RmsgLineHintLower(int64 instance_id, int64 msg_id)
{
	LineKey		key;
	LineHint   *hint;

	if (line_hints == NULL)
		return;					/* not preloaded: no hints */
	MakeKey(&key, instance_id);
	/* counted first, then the entry: see AdvanceHint */
	pg_atomic_fetch_add_u64(WritesOf(&key), 1);
	LWLockAcquire(shared->lock, LW_SHARED);
	hint = hash_search(line_hints, &key, HASH_FIND, NULL);
	if (hint != NULL)
	{
		SpinLockAcquire(&hint->mutex);
		if (msg_id < hint->line_from)
			hint->line_from = msg_id;
		SpinLockRelease(&hint->mutex);
	}
	LWLockRelease(shared->lock);
}

/*
 * Whether the index entry at tid is gone for good: a dirty snapshot finds
 * no version of its row (every version deleted by a committed transaction
 * or inserted by an aborted one), and no version was deleted by this very
 * transaction.  The dirty snapshot cannot tell our own deletes (an ack, a
 * drop, DROP OWNED, the worker's ack, before a receive in the same
 * transaction) from committed ones, and they all come back if we roll back.
 */
static bool
EntryGone(IndexFetchTableData *fetch, ItemPointer tid, TupleTableSlot *slot)
{
	SnapshotData dirty;
	ItemPointerData at = *tid;
	bool		call_again = false;
	bool		all_dead = false;

	InitDirtySnapshot(dirty);
	if (table_index_fetch_tuple(fetch, &at, &dirty, slot, &call_again, &all_dead))
		return false;

	/* every version of the HOT chain, whatever its state */
	at = *tid;
	call_again = false;
	while (table_index_fetch_tuple(fetch, &at, SnapshotAny, slot, &call_again, &all_dead))
	{
		HeapTupleHeader header = ExecFetchSlotHeapTuple(slot, false, NULL)->t_data;

		if (!(header->t_infomask & HEAP_XMAX_INVALID) &&
			TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetUpdateXid(header)))
			return false;
		if (!call_again)
			break;
	}
	return true;
}

/*
 * Moves the instance's hint over the gone entries at the front of its line;
 * the caller reads the hint afterwards (RmsgLineHintRead).  Walks of one
 * line may run side by side (a receive holds the instance's take lock, but
 * receive_any's search for the next line with messages does not): each
 * only raises line_from to where it found a message that is not gone, and
 * only when no delivery was counted since it began, so either is right.
 */
void
RmsgLineHintWalk(int64 instance_id)
{
	const RmsgRelations *rels;
	LineKey		key;
	uint64		writes;
	int64		from;
	Relation	rel;
	Relation	index;
	ScanKeyData keys[2];
	IndexScanDesc scan;
	IndexFetchTableData *fetch;
	TupleTableSlot *slot;
	ItemPointer tid;
	int64		to;
	int64		passed = 0;

	if (line_hints == NULL)
		return;
	rels = RmsgGetRelations();
	MakeKey(&key, instance_id);
	writes = pg_atomic_read_u64(WritesOf(&key));
	pg_memory_barrier();		/* the count before anything the walk reads */
	from = to = ReadHint(&key);

	rel = table_open(rels->instance_message, AccessShareLock);
	RmsgRefuseBypass(rel, "rmsg.receive");
	index = index_open(rels->instance_message_line_idx, AccessShareLock);
	slot = table_slot_create(rel, NULL);
	fetch = table_index_fetch_begin(rel);
	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(instance_id));
	ScanKeyInit(&keys[1], 2, BTGreaterEqualStrategyNumber, F_INT8GE, Int64GetDatum(from));
	/*
	 * Every entry of the range: the dirty snapshot below judges each.  The
	 * entries index scans marked dead too: the btree would step over them
	 * unseen, the walk would pass none, and without a horizon held (when
	 * they are marked) the line would never get its hint, every probe
	 * stepping over their pages until a VACUUM.
	 */
	scan = index_beginscan(rel, index, SnapshotAny, 2, 0);
	scan->ignore_killed_tuples = false;
	scan->xs_want_itup = true;	/* for each entry's msg_id */
	index_rescan(scan, keys, 2, NULL, 0);
	while ((tid = index_getnext_tid(scan, ForwardScanDirection)) != NULL)
	{
		bool		isnull;
		int64		msg_id = DatumGetInt64(index_getattr(scan->xs_itup, 2,
														 scan->xs_itupdesc, &isnull));

		CHECK_FOR_INTERRUPTS();
		if (!EntryGone(fetch, tid, slot))
		{
			to = msg_id;
			break;
		}
		to = msg_id + 1;
		passed++;
	}
	index_endscan(scan);
	table_index_fetch_end(fetch);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, NoLock);
	table_close(rel, NoLock);

	if (from > 0 ? to > from : passed >= RMSG_LINE_HINT_WORTH)
		AdvanceHint(&key, writes, to, from == 0);
}

/* Where the instance's line may be read from now (0: its front). */
int64
RmsgLineHintRead(int64 instance_id)
{
	LineKey		key;

	if (line_hints == NULL)
		return 0;
	MakeKey(&key, instance_id);
	return ReadHint(&key);
}

/*
 * The lowest instance id above `after` whose line holds a message that a
 * statement starting now would see; 0 when there is none.  receive_any
 * and the worker go round the instances with it.  A SQL statement asking
 * for the first visible entry above `after` read every entry of a line
 * acked under a held horizon; here an index entry of any state names the
 * next instance, and its line is looked at from its hint, so a line whose
 * messages are all gone costs one probe.
 */
int64
RmsgNextLineWithMessages(int64 after)
{
	const RmsgRelations *rels = RmsgGetRelations();
	Relation	rel;
	Relation	index;
	IndexScanDesc next_scan;
	IndexScanDesc line_scan;
	TupleTableSlot *slot;
	Snapshot	snapshot;
	ScanKeyData next_key;
	ScanKeyData line_keys[2];
	int64		found = 0;

	rel = table_open(rels->instance_message, AccessShareLock);
	RmsgRefuseBypass(rel, "rmsg.receive_any");
	index = index_open(rels->instance_message_line_idx, AccessShareLock);
	slot = table_slot_create(rel, NULL);
	/* entries of any state: the next instance id, whatever its line holds */
	next_scan = index_beginscan(rel, index, SnapshotAny, 1, 0);
	next_scan->xs_want_itup = true;
	for (;;)
	{
		ItemPointer tid;
		bool		isnull;
		int64		instance_id;
		int64		from;

		CHECK_FOR_INTERRUPTS();
		ScanKeyInit(&next_key, 1, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(after));
		index_rescan(next_scan, &next_key, 1, NULL, 0);
		tid = index_getnext_tid(next_scan, ForwardScanDirection);
		if (tid == NULL)
			break;
		instance_id = DatumGetInt64(index_getattr(next_scan->xs_itup, 1,
												  next_scan->xs_itupdesc, &isnull));

		/* does its line, from its hint, hold a message we would see? */
		RmsgLineHintWalk(instance_id);
		snapshot = RegisterSnapshot(GetLatestSnapshot());
		from = RmsgLineHintRead(instance_id);
		ScanKeyInit(&line_keys[0], 1, BTEqualStrategyNumber, F_INT8EQ,
					Int64GetDatum(instance_id));
		ScanKeyInit(&line_keys[1], 2, BTGreaterEqualStrategyNumber, F_INT8GE,
					Int64GetDatum(from));
		line_scan = index_beginscan(rel, index, snapshot, 2, 0);
		index_rescan(line_scan, line_keys, 2, NULL, 0);
		if (index_getnext_slot(line_scan, ForwardScanDirection, slot))
			found = instance_id;
		index_endscan(line_scan);
		UnregisterSnapshot(snapshot);
		if (found != 0)
			break;
		after = instance_id;	/* past all of its entries at once */
	}
	index_endscan(next_scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, NoLock);
	table_close(rel, NoLock);
	return found;
}
