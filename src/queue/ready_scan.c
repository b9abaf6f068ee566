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
 * ready index ourselves: btree keys queue_id = q AND visible_at <= now, in
 * index order, stepping over messages whose lease is still running.
 *
 * Each candidate is locked as SELECT ... FOR UPDATE SKIP LOCKED would:
 * table_tuple_lock with LockWaitSkip, following the update chain to the
 * newest version, which we then check again (a concurrent get may have
 * leased it, a dead-lettering moved it).  Then we lease that version with
 * table_tuple_update: lease_until and deliveries are not indexed, so the
 * update is HOT when its page has room, and when it is not we add the index
 * entries ourselves (insert.c).  The lease's receipt follows from its new
 * delivery count (receipts.c).  The table has no triggers (we refuse one
 * that has, core/relations.c) and the new row keeps every constraint.  A
 * message whose deliveries are used up is left locked and unleased, for
 * the caller to dead-letter by its tid, which our lock keeps stable until
 * commit.
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

/* Whether a version of a message row is ready at `now` and in our queue. */
static bool
IsReady(TupleTableSlot *slot, const RmsgRelations *rels, int32 queue_id,
		TimestampTz now)
{
	bool		isnull;
	Datum		value;

	value = slot_getattr(slot, rels->att_queue_id, &isnull);
	if (isnull || DatumGetInt32(value) != queue_id)
		return false;
	value = slot_getattr(slot, rels->att_visible_at, &isnull);
	if (isnull || DatumGetTimestampTz(value) > now)
		return false;
	value = slot_getattr(slot, rels->att_lease_until, &isnull);
	return isnull || DatumGetTimestampTz(value) <= now;
}

/* Copies what get returns of a leased version into taken. */
static void
Describe(TupleTableSlot *slot, const RmsgRelations *rels, RmsgTaken *taken)
{
	TupleDesc	desc = slot->tts_tupleDescriptor;
	bool		isnull;
	Datum		value;

	taken->msg_id = DatumGetInt64(slot_getattr(slot, rels->att_msg_id, &isnull));
	taken->deliveries = DatumGetInt32(slot_getattr(slot, rels->att_deliveries, &isnull));
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

/*
 * Leases the locked version in `locked` until lease_end: a new version with
 * deliveries + 1.  Returns the new version in `leased`.
 */
static void
Lease(Relation rel, const RmsgRelations *rels, TupleTableSlot *locked,
	  TupleTableSlot *leased, TimestampTz lease_end, CommandId cid,
	  Snapshot snapshot)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			deliveries_at = rels->att_deliveries - 1;
	int			lease_at = rels->att_lease_until - 1;
	TM_FailureData tmfd;
	LockTupleMode lockmode;
	TM_Result	result;
	RmsgUpdateIndexes update_indexes;

	slot_getallattrs(locked);
	ExecClearTuple(leased);
	memcpy(leased->tts_values, locked->tts_values, sizeof(Datum) * desc->natts);
	memcpy(leased->tts_isnull, locked->tts_isnull, sizeof(bool) * desc->natts);
	leased->tts_values[deliveries_at] =
		Int32GetDatum(DatumGetInt32(locked->tts_values[deliveries_at]) + 1);
	leased->tts_values[lease_at] = TimestampTzGetDatum(lease_end);
	leased->tts_isnull[lease_at] = false;
	ExecStoreVirtualTuple(leased);

	result = table_tuple_update(rel, &locked->tts_tid, leased, cid, snapshot,
								InvalidSnapshot, true, &tmfd, &lockmode,
								&update_indexes);
	if (result != TM_Ok)
		elog(ERROR, "could not lease locked message (%d)", (int) result);
	if (RmsgIndexesNeedEntries(update_indexes))
		RmsgInsertIndexEntries(rel, leased, true);
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
 * is deleting or changing it.  Sets *key (the entry's visible_at) and, for
 * a leased message, *lease_end.
 */
static EntryState
StateOfEntry(IndexFetchTableData *fetch, ItemPointer tid, TupleTableSlot *slot,
			 const RmsgRelations *rels, TimestampTz now,
			 TimestampTz *key, TimestampTz *lease_end)
{
	SnapshotData dirty;
	bool		call_again = false;
	bool		all_dead = false;
	bool		isnull;
	Datum		lease;

	InitDirtySnapshot(dirty);
	if (!table_index_fetch_tuple(fetch, tid, &dirty, slot, &call_again, &all_dead))
		return ENTRY_GONE;
	*key = DatumGetTimestampTz(slot_getattr(slot, rels->att_visible_at, &isnull));
	if (TransactionIdIsValid(dirty.xmin) || TransactionIdIsValid(dirty.xmax))
		return ENTRY_STOPS;
	lease = slot_getattr(slot, rels->att_lease_until, &isnull);
	if (isnull || DatumGetTimestampTz(lease) <= now)
		return ENTRY_STOPS;
	*lease_end = DatumGetTimestampTz(lease);
	return ENTRY_LEASED;
}

/*
 * Locks and leases up to max ready messages of the queue, oldest-ready
 * first, into taken[]; returns how many it locked.  Messages other
 * transactions have locked are skipped, never waited for.  Those whose
 * deliveries are used up come back locked but not leased, marked exhausted.
 */
int
RmsgLeaseReadyMessages(int32 queue_id, TimestampTz now, TimestampTz lease_end,
					   int32 max_deliveries, int max, RmsgTaken *taken)
{
	const RmsgRelations *rels = RmsgGetRelations();
	Relation	rel;
	Relation	index;
	Snapshot	snapshot;
	IndexScanDesc scan;
	ScanKeyData keys[3];
	TupleTableSlot *seen;
	TupleTableSlot *locked;
	TupleTableSlot *leased;
	TupleTableSlot *dirty;
	IndexFetchTableData *dirty_fetch;
	CommandId	cid = GetCurrentCommandId(true);
	int			nfound = 0;
	RmsgReadyWalk walk;
	bool		may_move = RmsgReadyHintMayMove(queue_id);
	bool		moving_hint = may_move;
	TimestampTz hint_to = now;	/* where the hint may move, if nothing stops it */
	TimestampTz leased_from = DT_NOEND;	/* the leased messages it passes */
	TimestampTz leased_until = DT_NOEND;
	ItemPointer tid;
	int			nkeys = 2;
	uint64		passed = 0;		/* entries the hint passed in this walk */

	rel = table_open(rels->message, RowExclusiveLock);
	RmsgRefuseBypass(rel, "rmsg.get");
	index = index_open(rels->message_ready_idx, AccessShareLock);

	/*
	 * READ COMMITTED looks at the newest committed state, so that a get
	 * waiting in a loop sees messages committed since it started.
	 */
	snapshot = RegisterSnapshot(IsolationUsesXactSnapshot()
								? GetTransactionSnapshot() : GetLatestSnapshot());

	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_INT4EQ,
				Int32GetDatum(queue_id));
	ScanKeyInit(&keys[1], 2, BTLessEqualStrategyNumber, F_TIMESTAMPTZ_LE,
				TimestampTzGetDatum(now));
	walk = RmsgReadyHintRead(queue_id, now);
	if (walk.start != DT_NOBEGIN)
		ScanKeyInit(&keys[nkeys++], 2, BTGreaterEqualStrategyNumber, F_TIMESTAMPTZ_GE,
					TimestampTzGetDatum(walk.start));

	seen = table_slot_create(rel, NULL);
	locked = table_slot_create(rel, NULL);
	leased = table_slot_create(rel, NULL);
	dirty = table_slot_create(rel, NULL);
	dirty_fetch = table_index_fetch_begin(rel);
	scan = index_beginscan(rel, index, snapshot, nkeys, 0);
	scan->xs_want_itup = true;	/* for each entry's key */
	index_rescan(scan, keys, nkeys, NULL, 0);

	while (nfound < max && (tid = index_getnext_tid(scan, ForwardScanDirection)) != NULL)
	{
		TM_FailureData tmfd;
		TM_Result	result;
		bool		isnull;
		RmsgTaken  *t = &taken[nfound];

		/*
		 * The entry's own tid, the root of its HOT chain: fetching the
		 * heap moves the scan's tid to the chain member it found.
		 */
		ItemPointerData entry = *tid;

		CHECK_FOR_INTERRUPTS();

		if (!index_fetch_heap(scan, seen) || !IsReady(seen, rels, queue_id, now))
		{
			/*
			 * Not in our snapshot, or leased there: nothing for us to take.
			 * While the hint is moving, may it pass?
			 */
			if (moving_hint)
			{
				TimestampTz key;
				TimestampTz lease_end;

				switch (StateOfEntry(dirty_fetch, &entry, dirty, rels, now, &key, &lease_end))
				{
					case ENTRY_GONE:
						break;
					case ENTRY_LEASED:
						leased_from = Min(leased_from, key);
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
					key = DatumGetTimestampTz(index_getattr(scan->xs_itup, 2,
															scan->xs_itupdesc, &isnull));
					if (!RmsgReadyHintAdvance(queue_id, &walk, key, leased_from, leased_until))
						moving_hint = may_move = false;
					leased_from = leased_until = DT_NOEND;
				}
			}
			continue;
		}
		if (moving_hint)
		{
			/* a ready message: the hint stops here */
			hint_to = DatumGetTimestampTz(slot_getattr(seen, rels->att_visible_at, &isnull));
			moving_hint = false;
		}

		result = table_tuple_lock(rel, &seen->tts_tid, snapshot, locked, cid,
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
		if (!IsReady(locked, rels, queue_id, now))
			continue;			/* changed since our snapshot */

		t->exhausted = DatumGetInt32(slot_getattr(locked, rels->att_deliveries, &isnull))
			>= max_deliveries;
		if (t->exhausted)
			t->tid = locked->tts_tid;	/* all dead-lettering needs */
		else
		{
			Lease(rel, rels, locked, leased, lease_end, cid, snapshot);
			Describe(leased, rels, t);
		}
		nfound++;
	}

	/* as after a statement: what we wrote is seen by the commands after us */
	CommandCounterIncrement();
	index_endscan(scan);
	table_index_fetch_end(dirty_fetch);
	if (nfound > 0)
		RmsgReadyHintTouched(queue_id); /* we leased, or will move, some */
	if (may_move && hint_to > walk.start)
		(void) RmsgReadyHintAdvance(queue_id, &walk, hint_to, leased_from, leased_until);
	ExecDropSingleTupleTableSlot(dirty);
	ExecDropSingleTupleTableSlot(seen);
	ExecDropSingleTupleTableSlot(locked);
	ExecDropSingleTupleTableSlot(leased);
	UnregisterSnapshot(snapshot);
	index_close(index, NoLock);
	table_close(rel, NoLock);
	return nfound;
}
