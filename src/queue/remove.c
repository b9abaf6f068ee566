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
 * delete that version.  message has no triggers (we refuse one that has,
 * core/relations.c), and a delete touches no index, so nothing else is
 * owed.
 * Under REPEATABLE READ, a row changed since the transaction's snapshot
 * raises a serialization failure, as a DELETE would.
 *
 * A message of a queue the role may not get from is, for it, no message at
 * all: we look at the queue before we lock anything, so such a role can
 * neither ack it nor hold its row locked.  With a receipt, the message goes
 * only while the lease the receipt names holds: the row's lease is that one
 * (receipts.c) and has not run out.  Anything else is a stale receipt,
 * which changes nothing.
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

#include "utils/builtins.h"

#include "queue/queue.h"

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

/* The queue a version of a message row belongs to. */
static int32
QueueOf(TupleTableSlot *slot, const RmsgRelations *rels)
{
	bool		isnull;

	return DatumGetInt32(slot_getattr(slot, rels->att_queue_id, &isnull));
}

/*
 * The queue of a version, and whether the current role may take it: it may
 * get from the queue, and the queue is local (a remote queue's messages
 * wait only to be moved to the receiving server, catalog.c).
 */
static bool
MayTake(TupleTableSlot *slot, const RmsgRelations *rels, int32 *queue_id)
{
	AclMode		rights;

	*queue_id = QueueOf(slot, rels);
	return RmsgObjectRights(RMSG_QUEUE, *queue_id, NULL, GetUserId(), &rights, NULL) &&
		(rights & RMSG_GET) != 0 && !RmsgQueueIsRemote(*queue_id);
}

/*
 * Whether the version's lease is the one `receipt` names and, when
 * valid_at is not 0, still runs then.
 */
static bool
LeaseHolds(TupleTableSlot *slot, const RmsgRelations *rels, int64 receipt,
		   TimestampTz valid_at)
{
	bool		isnull;
	Datum		value;
	int64		msg_id = DatumGetInt64(slot_getattr(slot, rels->att_msg_id, &isnull));
	int32		deliveries = DatumGetInt32(slot_getattr(slot, rels->att_deliveries, &isnull));
	TimestampTz visible_at = DatumGetTimestampTz(slot_getattr(slot, rels->att_visible_at, &isnull));

	if (RmsgReceiptOf(msg_id, deliveries, visible_at) != receipt)
		return false;
	if (valid_at == 0)
		return true;
	value = slot_getattr(slot, rels->att_lease_until, &isnull);
	return !isnull && DatumGetTimestampTz(value) > valid_at;
}

/*
 * The message changed since our snapshot: locks its newest version
 * (waiting for whoever holds it), checks again what we checked on the old
 * one, and deletes it.
 */
static RmsgRemoveResult
DeleteNewestVersion(Relation rel, const RmsgRelations *rels, TupleTableSlot *seen,
					TupleTableSlot *locked, Snapshot snapshot, CommandId cid,
					int64 msg_id, const int64 *receipt, TimestampTz valid_at,
					bool check_rights, int32 *queue_id)
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
	if (result == TM_Ok && check_rights && tmfd.traversed &&
		!MayTake(locked, rels, queue_id))
		result = TM_Deleted;	/* moved to a queue we may not get from */
	if (result == TM_Ok && receipt != NULL &&
		!LeaseHolds(locked, rels, *receipt, valid_at))
		return RMSG_REMOVE_STALE;
	if (result == TM_Ok)
	{
		result = table_tuple_delete(rel, &locked->tts_tid, cid, snapshot,
									InvalidSnapshot, true, &tmfd, false);
		if (result != TM_Ok)
			elog(ERROR, "could not delete locked message " INT64_FORMAT " (%d)",
				 msg_id, (int) result);
		return RMSG_REMOVE_DELETED;
	}
	/* TM_Deleted: acked by someone else meanwhile; nothing to do */
	return receipt != NULL ? RMSG_REMOVE_STALE : RMSG_REMOVE_NOT_FOUND;
}

/*
 * Deletes the live message msg_id.  With check_rights, only a message of
 * a local queue the current role may get from (the worker, which took the
 * message itself, needs no check).  With a receipt (not NULL), only while
 * that lease holds: its lease must still run at valid_at, unless that is 0
 * (the worker holds the row locked, so its lease cannot be taken over).
 * *queue_id is the message's queue when it was found, else 0.
 */
RmsgRemoveResult
RmsgDeleteMessage(int64 msg_id, const int64 *receipt, TimestampTz valid_at,
				  bool check_rights, int32 *queue_id)
{
	const RmsgRelations *rels = RmsgGetRelations();
	Relation	rel;
	Relation	pkey;
	Snapshot	snapshot;
	TupleTableSlot *seen;
	TupleTableSlot *locked;
	CommandId	cid = GetCurrentCommandId(true);
	RmsgRemoveResult outcome = RMSG_REMOVE_NOT_FOUND;
	int32		deleted_from = 0;
	char	   *group_id = NULL;

	*queue_id = 0;
	rel = table_open(rels->message, RowExclusiveLock);
	RmsgRefuseBypass(rel, "rmsg.ack");
	pkey = index_open(rels->message_pkey, RowExclusiveLock);
	seen = table_slot_create(rel, NULL);
	locked = table_slot_create(rel, NULL);
	snapshot = RegisterSnapshot(GetTransactionSnapshot());
	if (FindMessage(rel, pkey, snapshot, msg_id, seen) &&
		(!check_rights || MayTake(seen, rels, queue_id)))
	{
		TM_FailureData tmfd;
		TM_Result	result;

		if (!check_rights)
			*queue_id = QueueOf(seen, rels);

		/* a lease already over in our snapshot need not be waited for */
		if (receipt != NULL && !LeaseHolds(seen, rels, *receipt, valid_at))
			outcome = RMSG_REMOVE_STALE;
		else
		{
			/*
			 * Most often the version we see is the newest: delete it
			 * straight away, one WAL record.  heap_delete waits for a
			 * transaction holding the row, and says TM_Updated if it
			 * changed it (a consumer leased it, a nack moved it): then we
			 * lock the newest version, look again, and delete that.
			 */
			result = table_tuple_delete(rel, &seen->tts_tid, cid, snapshot,
										InvalidSnapshot, true, &tmfd, false);
			if (result == TM_Ok)
				outcome = RMSG_REMOVE_DELETED;
			else if (result == TM_Updated)
				outcome = DeleteNewestVersion(rel, rels, seen, locked, snapshot, cid,
											  msg_id, receipt, valid_at, check_rights,
											  queue_id);
			else if (receipt != NULL)
				outcome = RMSG_REMOVE_STALE;	/* acked meanwhile */
			/*
			 * The queue of the version deleted: the newest one may have
			 * moved to a dead-letter queue since our snapshot.
			 */
			if (outcome == RMSG_REMOVE_DELETED)
			{
				TupleTableSlot *deleted = result == TM_Ok ? seen : locked;
				bool		ungrouped;
				Datum		group = slot_getattr(deleted, rels->att_group_id, &ungrouped);

				deleted_from = QueueOf(deleted, rels);
				if (!ungrouped)
					group_id = TextDatumGetCString(group);
				RmsgReadyHintTouched(deleted_from);
				RmsgCountAck(deleted_from);
			}
		}
	}

	/* as after a statement: what we wrote is seen by the commands after us */
	CommandCounterIncrement();
	ExecDropSingleTupleTableSlot(seen);
	ExecDropSingleTupleTableSlot(locked);
	UnregisterSnapshot(snapshot);
	index_close(pkey, NoLock);
	table_close(rel, NoLock);

	/* the end of a group's turn: its next message's comes (groups.c) */
	if (group_id != NULL)
		RmsgGroupReleased(deleted_from, group_id);
	return outcome;
}
