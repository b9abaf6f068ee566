/*-------------------------------------------------------------------------
 *
 * ready_scan.c
 *	  Finding a queue's oldest ready messages, locking and leasing them,
 *	  without the planner or the executor.
 *
 * This is the hot path of every get.  As a SQL statement it was the one
 * whose plan the planner got wrong on a queue table: after heavy churn the
 * statistics say "a few rows in a thousand pages", and a bitmap scan plus
 * sort, which reads every entry of the queue, dead ones included, looks as
 * cheap as the ordered index scan that stops after max rows; and its
 * executor start and end were a good part of a get's cost.  So we walk the
 * ready index ourselves: btree keys queue_id = q AND priority = p AND
 * visible_at <= now, in index order, stepping over messages whose lease is
 * still running, one priority lane after another from the highest
 * (priorities.c).
 *
 * Each candidate is locked as SELECT ... FOR UPDATE SKIP LOCKED would:
 * table_tuple_lock with LockWaitSkip, following the update chain to the
 * newest version, which we then check again (a nack with a delay may have
 * moved it, a dead-lettering taken it away).  The lease is not in the
 * message row but in a row of rmsg.lease (lease_rows.c), which we read
 * again once the lock is ours and then write: the message row, with its
 * data, is never written by a get.  The lease's receipt follows from its
 * new delivery count (receipts.c).  The tables have no triggers (we refuse
 * one that has, core/relations.c).  A message whose deliveries are used up
 * is left locked and unleased, for the caller to dead-letter by its tid,
 * which our lock keeps stable until commit.
 *
 * The walk starts at the queue's hint (ready_hint.c) instead of the front,
 * and moves the hint over the entries it may pass: gone for good, or leased
 * by a committed get.  Each entry our snapshot does not show as ready is
 * looked up again with a dirty snapshot, which tells those apart from the
 * entries a transaction is still at work on (StateOfEntry).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/itup.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/snapshot.h"
#include "utils/timestamp.h"

#include "queue/queue.h"

/*
 * Whether a version of a message row is visible at `now` and in our queue;
 * its lease is in rmsg.lease.
 */
static bool
IsVisible(TupleTableSlot *slot, const RmsgRelations *rels, int32 queue_id,
		  TimestampTz now)
{
	bool		isnull;
	Datum		value;

	value = slot_getattr(slot, rels->att_queue_id, &isnull);
	if (isnull || DatumGetInt32(value) != queue_id)
		return false;
	value = slot_getattr(slot, rels->att_visible_at, &isnull);
	return !isnull && DatumGetTimestampTz(value) <= now;
}

static int64
MsgIdOf(TupleTableSlot *slot, const RmsgRelations *rels)
{
	bool		isnull;

	return DatumGetInt64(slot_getattr(slot, rels->att_msg_id, &isnull));
}

/* Copies what get returns of a message leased for its deliveries-th time. */
static void
Describe(TupleTableSlot *slot, const RmsgRelations *rels, int32 deliveries,
		 RmsgTaken *taken)
{
	TupleDesc	desc = slot->tts_tupleDescriptor;
	bool		isnull;
	Datum		value;

	taken->msg_id = MsgIdOf(slot, rels);
	taken->deliveries = deliveries;
	taken->receipt = RmsgReceiptOf(taken->msg_id, taken->deliveries,
								   DatumGetTimestampTz(slot_getattr(slot, rels->att_visible_at, &isnull)));
	taken->enqueued_at = DatumGetTimestampTz(slot_getattr(slot, rels->att_enqueued_at, &isnull));
	value = slot_getattr(slot, rels->att_headers, &taken->headers_null);
	taken->headers = taken->headers_null ? (Datum) 0
		: datumCopy(value, false, TupleDescAttr(desc, rels->att_headers - 1)->attlen);
	value = slot_getattr(slot, rels->att_inline_data, &taken->inline_null);
	taken->inline_data = taken->inline_null ? (Datum) 0
		: datumCopy(value, false, -1);
	value = slot_getattr(slot, rels->att_payload_id, &isnull);
	taken->payload_id = isnull ? 0 : DatumGetInt64(value);
}

/* Entries a walk passes between two moves of the hint */
#define RMSG_HINT_STEP 256

/* What a get may do with an index entry as it moves the queue's hint. */
typedef enum EntryState
{
	ENTRY_GONE,					/* gone for good: pass it */
	ENTRY_LEASED,				/* leased by a committed get: pass it, noting the lease */
	ENTRY_STOPS					/* ready, or a transaction is at work on it: stop */
} EntryState;

/*
 * The state of the index entry at tid in the newest state of its row, read
 * with a dirty snapshot: it finds no version when every version was
 * deleted by a committed transaction or inserted by an aborted one, and
 * says when a transaction still running inserted the version it found or
 * is deleting or changing it.  The message's lease is read the same way: a
 * get still running leases it (its lock alone does not show in the
 * message row).  Sets, for a leased message, *lease_end.
 */
static EntryState
StateOfEntry(IndexFetchTableData *fetch, ItemPointer tid, TupleTableSlot *slot,
			 RmsgLeases *leases, const RmsgRelations *rels, TimestampTz now,
			 TimestampTz *lease_end)
{
	SnapshotData dirty;
	bool		call_again = false;
	bool		all_dead = false;
	RmsgLease	lease;

	InitDirtySnapshot(dirty);
	if (!table_index_fetch_tuple(fetch, tid, &dirty, slot, &call_again, &all_dead))
		return ENTRY_GONE;
	if (TransactionIdIsValid(dirty.xmin) || TransactionIdIsValid(dirty.xmax))
		return ENTRY_STOPS;
	if (TransactionIdIsValid(RmsgLeaseFindDirty(leases, MsgIdOf(slot, rels), &lease)) ||
		!RmsgLeaseRuns(&lease, now))
		return ENTRY_STOPS;
	*lease_end = lease.until;
	return ENTRY_LEASED;
}

/*
 * The key of the index entry the scan is on: its (visible_at, msg_id),
 * which every version in its HOT chain shares.
 */
static RmsgHintKey
EntryKey(IndexScanDesc scan)
{
	RmsgHintKey key;
	bool		isnull;

	key.at = DatumGetTimestampTz(index_getattr(scan->xs_itup, 3, scan->xs_itupdesc, &isnull));
	key.msg_id = DatumGetInt64(index_getattr(scan->xs_itup, 4, scan->xs_itupdesc, &isnull));
	return key;
}

/* What the walks of one get share. */
typedef struct ReadyWalker
{
	const RmsgRelations *rels;
	Relation	rel;
	Relation	index;			/* the ready index */
	Snapshot	snapshot;
	IndexScanDesc scan;			/* of the ready index, rescanned per lane */
	TupleTableSlot *seen;		/* the version our snapshot sees */
	TupleTableSlot *locked;		/* its newest version, locked */
	TupleTableSlot *dirty;		/* for StateOfEntry */
	RmsgLeases	leases;
	IndexFetchTableData *dirty_fetch;
	CommandId	cid;
	int32		queue_id;
	TimestampTz now;
	TimestampTz lease_end;
	int32		max_deliveries;
	bool		may_move;		/* whether this transaction may move the hints */
	bool		front_only;		/* move the hint only: lock and lease nothing */
} ReadyWalker;

/*
 * Whether the message our snapshot shows is leased, so that the walk need
 * not lock it to know.  Under READ COMMITTED, by its newest lease (another
 * transaction at work on it counts too: it holds the message, or is
 * extending or ending a lease); under REPEATABLE READ, by the lease our
 * snapshot sees, kept in *seen_lease to be compared with the newest once
 * the message is locked.
 */
static bool
LeasedWhenSeen(ReadyWalker *w, int64 msg_id, RmsgLease *seen_lease)
{
	if (IsolationUsesXactSnapshot())
		return RmsgLeaseFind(&w->leases, msg_id, w->snapshot, seen_lease) &&
			RmsgLeaseRuns(seen_lease, w->now);
	return TransactionIdIsValid(RmsgLeaseFindDirty(&w->leases, msg_id, seen_lease)) ||
		RmsgLeaseRuns(seen_lease, w->now);
}

/*
 * Locks and leases up to max ready messages of one lane of the queue
 * (priorities.c), oldest-ready first, into taken[]; returns how many it
 * locked.  Starts at the lane's hint and moves it.
 */
static int
WalkLane(ReadyWalker *w, int lane, int max, RmsgTaken *taken)
{
	const RmsgRelations *rels = w->rels;
	IndexScanDesc scan = w->scan;
	ScanKeyData keys[4];
	ScanKeyData from_hint[2];	/* (visible_at, msg_id) >= the hint's key */
	int			nfound = 0;
	RmsgReadyWalk walk = RmsgReadyHintRead(w->queue_id, lane, w->now);
	bool		may_move = w->may_move;
	bool		moving_hint = may_move;
	RmsgHintKey hint_to = {w->now, 0};	/* where the hint may move, if nothing stops it */
	TimestampTz leased_from = DT_NOEND;	/* the leased messages it passes */
	TimestampTz leased_until = DT_NOEND;
	ItemPointer tid;
	uint64		passed = 0;		/* entries the hint passed in this walk */

	/*
	 * From the hint's key (at DT_NOBEGIN: the front of the lane) up to now.
	 * The start is a row comparison, (visible_at, msg_id) >= (at, msg_id),
	 * which btree positions on directly: a hint may stop inside a batch,
	 * whose messages share one visible_at.  Keys in column order, as btree
	 * requires.
	 */
	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_INT4EQ,
				Int32GetDatum(w->queue_id));
	ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_INT2EQ,
				Int16GetDatum((int16) lane));
	ScanKeyInit(&keys[2], 3, BTLessEqualStrategyNumber, F_TIMESTAMPTZ_LE,
				TimestampTzGetDatum(w->now));
	/* the members of a row comparison compare with btree's three-way functions */
	ScanKeyEntryInitialize(&from_hint[0], SK_ROW_MEMBER, 3, BTGreaterEqualStrategyNumber,
						   InvalidOid, InvalidOid, F_TIMESTAMPTZ_CMP,
						   TimestampTzGetDatum(walk.start.at));
	ScanKeyEntryInitialize(&from_hint[1], SK_ROW_MEMBER | SK_ROW_END, 4,
						   BTGreaterEqualStrategyNumber, InvalidOid, InvalidOid, F_BTINT8CMP,
						   Int64GetDatum(walk.start.msg_id));
	/* a row comparison's header has no function of its own, as the executor makes it */
	MemSet(&keys[3], 0, sizeof(ScanKeyData));
	keys[3].sk_flags = SK_ROW_HEADER;
	keys[3].sk_attno = 3;
	keys[3].sk_strategy = BTGreaterEqualStrategyNumber;
	keys[3].sk_argument = PointerGetDatum(from_hint);
	index_rescan(scan, keys, 4, NULL, 0);

	while ((w->front_only ? moving_hint : nfound < max) &&
		   (tid = index_getnext_tid(scan, ForwardScanDirection)) != NULL)
	{
		TM_FailureData tmfd;
		TM_Result	result;
		bool		isnull;
		RmsgTaken  *t = taken != NULL ? &taken[nfound] : NULL;
		RmsgLease	seen_lease;		/* as LeasedWhenSeen read it */
		RmsgLease	lease;			/* the newest, once the message is locked */
		int64		msg_id;

		/*
		 * The entry's own tid, the root of its HOT chain: fetching the
		 * heap moves the scan's tid to the chain member it found.
		 */
		ItemPointerData entry = *tid;

		CHECK_FOR_INTERRUPTS();

		if (!index_fetch_heap(scan, w->seen) || !IsVisible(w->seen, rels, w->queue_id, w->now) ||
			LeasedWhenSeen(w, MsgIdOf(w->seen, rels), &seen_lease))
		{
			/*
			 * Not in our snapshot, or leased there: nothing for us to take.
			 * While the hint is moving, may it pass?
			 */
			if (moving_hint)
			{
				RmsgHintKey key = EntryKey(scan);
				TimestampTz lease_end;

				switch (StateOfEntry(w->dirty_fetch, &entry, w->dirty, &w->leases, rels,
									 w->now, &lease_end))
				{
					case ENTRY_GONE:
						break;
					case ENTRY_LEASED:
						leased_from = Min(leased_from, key.at);
						leased_until = Min(leased_until, lease_end);
						break;
					case ENTRY_STOPS:
						hint_to = key;
						moving_hint = false;
						break;
				}

				/*
				 * A long walk (a held horizon keeps many entries) moves the
				 * hint as it goes: each move answers only for the writes
				 * made since the last, which a ring of the latest writes
				 * always holds, however long the whole walk takes.
				 */
				if (moving_hint && ++passed % RMSG_HINT_STEP == 0)
				{
					if (!RmsgReadyHintAdvance(w->queue_id, &walk, key, leased_from, leased_until))
						moving_hint = may_move = false;
					leased_from = leased_until = DT_NOEND;
				}
			}
			continue;
		}
		if (moving_hint)
		{
			/* a ready message: the hint stops here */
			hint_to = EntryKey(scan);
			moving_hint = false;
		}
		if (w->front_only)
			break;

		result = table_tuple_lock(w->rel, &w->seen->tts_tid, w->snapshot, w->locked, w->cid,
								  LockTupleExclusive, LockWaitSkip,
								  TUPLE_LOCK_FLAG_FIND_LAST_VERSION, &tmfd);
		if (result != TM_Ok)
			continue;			/* locked by another consumer, or gone */

		/*
		 * A newer version than our snapshot's: under REPEATABLE READ we may
		 * not act on it (a statement would fail to serialize), and it is
		 * most likely another consumer's lease anyway.  Leave it.
		 */
		if (tmfd.traversed && IsolationUsesXactSnapshot())
			continue;
		/* changed since our snapshot, or moved out of the lane */
		if (!IsVisible(w->locked, rels, w->queue_id, w->now) ||
			DatumGetInt16(slot_getattr(w->locked, rels->att_priority, &isnull)) != lane)
			continue;

		/*
		 * Leased since our snapshot?  The lock is ours now, so a read of
		 * the lease now finds the newest (lease_rows.c).  Under REPEATABLE
		 * READ a lease our snapshot does not see is left alone, as a newer
		 * message version is above.
		 */
		msg_id = MsgIdOf(w->locked, rels);
		if (!RmsgLeaseFindNewest(&w->leases, msg_id, &lease, false) ||
			RmsgLeaseRuns(&lease, w->now))
			continue;			/* leased, or an extend or a nack is at work on it */
		if (IsolationUsesXactSnapshot() &&
			(lease.found != seen_lease.found ||
			 (lease.found && !ItemPointerEquals(&lease.tid, &seen_lease.tid))))
			continue;

		t->exhausted = lease.deliveries >= w->max_deliveries;
		if (t->exhausted)
			t->tid = w->locked->tts_tid;	/* all dead-lettering needs */
		else
		{
			if (!RmsgLeaseWrite(&w->leases, &lease, msg_id, lease.deliveries + 1,
								w->lease_end, w->cid))
				continue;		/* extended or nacked as it ran out: theirs */
			Describe(w->locked, rels, lease.deliveries + 1, t);
			t->priority = (int16) lane;
		}
		nfound++;
	}

	if (may_move && RmsgHintKeyBefore(walk.start, hint_to))
		(void) RmsgReadyHintAdvance(w->queue_id, &walk, hint_to, leased_from, leased_until);
	return nfound;
}

/*
 * Opens what a walk of queue_id's ready index needs.  READ COMMITTED looks
 * at the newest committed state, so that a get waiting in a loop sees
 * messages committed since it started.
 */
static void
BeginWalks(ReadyWalker *w, int32 queue_id, TimestampTz now, const char *caller)
{
	w->rels = RmsgGetRelations();
	w->queue_id = queue_id;
	w->now = now;
	w->lease_end = now;
	w->max_deliveries = 0;
	w->front_only = false;
	w->cid = GetCurrentCommandId(true);
	w->may_move = RmsgReadyHintMayMove(queue_id);
	w->rel = table_open(w->rels->message, RowExclusiveLock);
	RmsgRefuseBypass(w->rel, caller);
	w->index = index_open(w->rels->message_ready_idx, AccessShareLock);
	w->snapshot = RegisterSnapshot(IsolationUsesXactSnapshot()
								   ? GetTransactionSnapshot() : GetLatestSnapshot());
	RmsgLeasesOpen(&w->leases, caller);
	w->seen = table_slot_create(w->rel, NULL);
	w->locked = table_slot_create(w->rel, NULL);
	w->dirty = table_slot_create(w->rel, NULL);
	w->dirty_fetch = table_index_fetch_begin(w->rel);
	w->scan = index_beginscan(w->rel, w->index, w->snapshot, 4, 0);
	w->scan->xs_want_itup = true;	/* for each entry's key */
}

static void
EndWalks(ReadyWalker *w)
{
	index_endscan(w->scan);
	table_index_fetch_end(w->dirty_fetch);
	ExecDropSingleTupleTableSlot(w->dirty);
	ExecDropSingleTupleTableSlot(w->seen);
	ExecDropSingleTupleTableSlot(w->locked);
	RmsgLeasesClose(&w->leases);
	UnregisterSnapshot(w->snapshot);
	index_close(w->index, NoLock);
	table_close(w->rel, NoLock);
}

/*
 * Locks and leases up to max ready messages of the queue, highest priority
 * first and oldest-ready first within one, into taken[]; returns how many
 * it locked.  Messages other transactions have locked are skipped, never
 * waited for.  Those whose deliveries are used up come back locked but not
 * leased, marked exhausted.
 */
int
RmsgLeaseReadyMessages(int32 queue_id, TimestampTz now, TimestampTz lease_end,
					   int32 max_deliveries, int max, RmsgTaken *taken)
{
	ReadyWalker w;
	uint16		lanes;
	int			nfound = 0;

	BeginWalks(&w, queue_id, now, "rmsg.get");
	w.lease_end = lease_end;
	w.max_deliveries = max_deliveries;

	/* the lanes to walk: known to the hint, or looked up in the index */
	lanes = RmsgReadyHintLanes(queue_id);
	if (lanes == 0)
	{
		lanes = RmsgProbeLanes(w.rel, w.index, queue_id);
		RmsgReadyHintLanesFound(queue_id, lanes);
	}

	for (int lane = RMSG_MAX_PRIORITY; lane >= 0 && nfound < max; lane--)
		if (lanes & (1 << lane))
			nfound += WalkLane(&w, lane, max - nfound, taken + nfound);

	/* as after a statement: what we wrote is seen by the commands after us */
	CommandCounterIncrement();
	if (nfound > 0)
		RmsgReadyHintTouched(queue_id); /* we leased, or will move, some */
	EndWalks(&w);
	return nfound;
}

/*
 * For a reader of one lane of the queue that is not a get: moves the
 * lane's hint over the entries at its front that nobody needs to look at
 * again (gone for good, or leased by a committed get), locking and leasing
 * nothing.  The reader then takes its statement's snapshot and starts at
 * the hint's key (RmsgReadyHintRead): no entry before it holds a message
 * that is ready and not leased, and a put its snapshot sees lowered the
 * hint before it committed.  The worker's numbering of a remote queue
 * starts there: from the front of the lane it read, under a held horizon,
 * every entry of every message it had already moved.
 */
void
RmsgReadyFront(int32 queue_id, int lane, TimestampTz now)
{
	ReadyWalker w;

	BeginWalks(&w, queue_id, now, "the numbering of a remote queue");
	w.front_only = true;
	(void) WalkLane(&w, lane, 0, NULL);
	EndWalks(&w);
}
