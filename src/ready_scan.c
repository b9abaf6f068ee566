/*-------------------------------------------------------------------------
 *
 * ready_scan.c
 *	  Finding a queue's oldest ready messages and locking them, without the
 *	  planner.
 *
 * This is the hot path of every get, and the one statement whose plan the
 * planner gets wrong on a queue table: after heavy churn the statistics say
 * "a few rows in a thousand pages", and a bitmap scan plus sort, which reads
 * every entry of the queue, dead ones included, looks as cheap as the
 * ordered index scan that stops after max rows.  So we walk the ready index
 * ourselves: btree keys queue_id = q AND visible_at <= now, in index order,
 * stepping over messages whose lease is still running.
 *
 * Each candidate is locked as SELECT ... FOR UPDATE SKIP LOCKED would:
 * table_tuple_lock with LockWaitSkip, following the update chain to the
 * newest version, which we then check again (a concurrent get may have
 * leased it, a dead-lettering moved it).  The caller leases the locked
 * versions by tid in a statement of its own; under READ COMMITTED that
 * statement's fresh snapshot sees every version we locked, and under
 * REPEATABLE READ locking a version newer than the snapshot is already a
 * serialization failure.  Our row locks keep the tids stable until commit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "rmsg.h"

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

/*
 * Locks up to max ready messages of the queue, oldest-ready first, into
 * found[]; returns how many.  Messages other transactions have locked are
 * skipped, never waited for.
 */
int
RmsgLockReadyMessages(int32 queue_id, TimestampTz now, int max,
					  RmsgCandidate *found)
{
	const RmsgRelations *rels = RmsgGetRelations();
	Relation	rel;
	Relation	index;
	Snapshot	snapshot;
	IndexScanDesc scan;
	ScanKeyData keys[2];
	TupleTableSlot *seen;
	TupleTableSlot *locked;
	CommandId	cid = GetCurrentCommandId(true);
	int			nfound = 0;

	RmsgCheckPrivilege(rels->message, ACL_SELECT | ACL_UPDATE);
	rel = table_open(rels->message, RowShareLock);
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

	seen = table_slot_create(rel, NULL);
	locked = table_slot_create(rel, NULL);
	scan = index_beginscan(rel, index, snapshot, 2, 0);
	index_rescan(scan, keys, 2, NULL, 0);

	while (nfound < max && index_getnext_slot(scan, ForwardScanDirection, seen))
	{
		TM_FailureData tmfd;
		TM_Result	result;
		bool		isnull;

		CHECK_FOR_INTERRUPTS();

		if (!IsReady(seen, rels, queue_id, now))
			continue;			/* in flight */

		result = table_tuple_lock(rel, &seen->tts_tid, snapshot, locked, cid,
								  LockTupleExclusive, LockWaitSkip,
								  TUPLE_LOCK_FLAG_FIND_LAST_VERSION, &tmfd);
		if (result != TM_Ok)
			continue;			/* locked by another consumer, or gone */

		/*
		 * A newer version than our snapshot's: under REPEATABLE READ the
		 * lease statement could not see it, and it is most likely another
		 * consumer's lease anyway.  Leave it.
		 */
		if (tmfd.traversed && IsolationUsesXactSnapshot())
			continue;
		if (!IsReady(locked, rels, queue_id, now))
			continue;			/* changed since our snapshot */

		found[nfound].tid = locked->tts_tid;
		found[nfound].msg_id =
			DatumGetInt64(slot_getattr(locked, rels->att_msg_id, &isnull));
		nfound++;
	}

	index_endscan(scan);
	ExecDropSingleTupleTableSlot(seen);
	ExecDropSingleTupleTableSlot(locked);
	UnregisterSnapshot(snapshot);
	index_close(index, NoLock);
	table_close(rel, NoLock);
	return nfound;
}
