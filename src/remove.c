/*-------------------------------------------------------------------------
 *
 * remove.c
 *	  Deleting one live message by msg_id, without the executor.
 *
 * An ack is a primary-key delete and nothing else: running it as a SQL
 * statement costs an executor start and end, a good part of its time.  So
 * we find the row through message_pkey, lock its newest version as a
 * DELETE would (waiting for a consumer whose get is still in progress,
 * following the update chain of a lease committed since our snapshot), and
 * delete that version.  message has no triggers, and a delete touches no
 * index, so nothing else is owed.  Under REPEATABLE READ, a row changed
 * since the transaction's snapshot raises a serialization failure, as a
 * DELETE would.
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
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "rmsg.h"

/* Finds the version of the message the snapshot sees, if any. */
static bool
FindMessage(Relation rel, Relation pkey, Snapshot snapshot, int64 msg_id,
			TupleTableSlot *slot)
{
	ScanKeyData key;
	IndexScanDesc scan;
	bool		found;

	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(msg_id));
	scan = index_beginscan(rel, pkey, snapshot, 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	return found;
}

/*
 * Deletes the live message msg_id; false when there is none.
 */
bool
RmsgDeleteMessage(int64 msg_id)
{
	const RmsgRelations *rels = RmsgGetRelations();
	Relation	rel;
	Relation	pkey;
	Snapshot	snapshot;
	TupleTableSlot *seen;
	TupleTableSlot *locked;
	CommandId	cid = GetCurrentCommandId(true);
	bool		deleted = false;

	RmsgCheckPrivilege(rels->message, ACL_SELECT | ACL_DELETE);
	rel = table_open(rels->message, RowExclusiveLock);
	pkey = index_open(rels->message_pkey, RowExclusiveLock);
	seen = table_slot_create(rel, NULL);
	locked = table_slot_create(rel, NULL);
	snapshot = RegisterSnapshot(GetTransactionSnapshot());
	if (FindMessage(rel, pkey, snapshot, msg_id, seen))
	{
		TM_FailureData tmfd;
		TM_Result	result;

		result = table_tuple_lock(rel, &seen->tts_tid, snapshot, locked, cid,
								  LockTupleExclusive, LockWaitBlock,
								  TUPLE_LOCK_FLAG_FIND_LAST_VERSION, &tmfd);
		/* the executor leaves this check to its callers, and so do we */
		if (result == TM_Ok && tmfd.traversed && IsolationUsesXactSnapshot())
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not serialize access due to concurrent update of message " INT64_FORMAT,
							msg_id)));
		if (result == TM_Ok)
		{
			result = table_tuple_delete(rel, &locked->tts_tid, cid, snapshot,
										InvalidSnapshot, true, &tmfd, false);
			if (result != TM_Ok)
				elog(ERROR, "could not delete locked message " INT64_FORMAT " (%d)",
					 msg_id, (int) result);
			deleted = true;
		}
		/* TM_Deleted: acked by someone else meanwhile; nothing to do */
	}

	/* as after a statement: what we wrote is seen by the commands after us */
	CommandCounterIncrement();
	ExecDropSingleTupleTableSlot(seen);
	ExecDropSingleTupleTableSlot(locked);
	UnregisterSnapshot(snapshot);
	index_close(pkey, NoLock);
	table_close(rel, NoLock);
	return deleted;
}
