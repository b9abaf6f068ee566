/*-------------------------------------------------------------------------
 *
 * remove.c
 *	  Deleting one live message by msg_id, without the executor.
 *
 * An ack is a primary-key delete and nothing else: running it as a SQL
 * statement costs an executor start and end, a good part of its time.  So
 * we find the row through message_pkey and delete it as a DELETE would
 * (waiting for a consumer whose get is still in progress, following the
 * update chain when a nack or a dead-lettering moved it since our
 * snapshot), then delete its lease row (lease_rows.c).  message has no
 * triggers (we refuse one that has, core/relations.c), and a delete
 * touches no index, so nothing else is owed.  Under REPEATABLE READ, a row
 * changed since the transaction's snapshot raises a serialization failure,
 * as a DELETE would.
 *
 * A message of a queue the role may not get from is, for it, no message at
 * all: we look at the queue before we lock anything, so such a role can
 * neither ack it nor hold its row locked.  With a receipt, the message goes
 * only while the lease the receipt names holds: the lease is that one
 * (receipts.c) and has not run out.  A lease does not change the message
 * row, so a delete that waited for a get would not notice a new lease: the
 * lease is read again after the delete, and an ack that finds it taken
 * over by then fails (40001) rather than delete another consumer's
 * message.  That takes a lease running out, or the same consumer's nack,
 * while the ack waits; retried, the ack finds its receipt stale.  Anything
 * else is a stale receipt, which changes nothing.
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
 * Whether `lease`, of the message whose version is in slot, is the one
 * `receipt` names and, when valid_at is not 0, still runs then.
 */
static bool
LeaseHolds(TupleTableSlot *slot, const RmsgRelations *rels, const RmsgLease *lease,
		   int64 receipt, TimestampTz valid_at)
{
	bool		isnull;
	int64		msg_id = DatumGetInt64(slot_getattr(slot, rels->att_msg_id, &isnull));
	TimestampTz visible_at = DatumGetTimestampTz(slot_getattr(slot, rels->att_visible_at, &isnull));

	if (RmsgReceiptOf(msg_id, lease->deliveries, visible_at) != receipt)
		return false;
	return valid_at == 0 || RmsgLeaseRuns(lease, valid_at);
}

/*
 * Locks the newest version of the message (waiting for whoever holds it),
 * checks again what we checked on the version our snapshot sees, and the
 * newest lease against the receipt, and deletes it.  For a message that
 * changed since our snapshot, and for every ack with a receipt.
 */
static RmsgRemoveResult
DeleteNewestVersion(Relation rel, const RmsgRelations *rels, RmsgLeases *leases,
					TupleTableSlot *seen, TupleTableSlot *locked, Snapshot snapshot,
					CommandId cid, int64 msg_id, const int64 *receipt,
					TimestampTz valid_at, bool check_rights, int32 *queue_id)
{
	TM_FailureData tmfd;
	TM_Result	result;
	RmsgLease	lease;

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
	if (result == TM_Ok && receipt != NULL)
	{
		(void) RmsgLeaseFindNewest(leases, msg_id, &lease, true);
		if (!LeaseHolds(locked, rels, &lease, *receipt, valid_at))
			return RMSG_REMOVE_STALE;
	}
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
	RmsgLeases	leases;
	CommandId	cid = GetCurrentCommandId(true);
	RmsgRemoveResult outcome = RMSG_REMOVE_NOT_FOUND;
	int32		deleted_from = 0;
	char	   *group_id = NULL;

	*queue_id = 0;
	rel = table_open(rels->message, RowExclusiveLock);
	RmsgRefuseBypass(rel, "rmsg.ack");
	pkey = index_open(rels->message_pkey, RowExclusiveLock);
	RmsgLeasesOpen(&leases, "rmsg.ack");
	seen = table_slot_create(rel, NULL);
	locked = table_slot_create(rel, NULL);
	snapshot = RegisterSnapshot(GetTransactionSnapshot());
	if (FindMessage(rel, pkey, snapshot, msg_id, seen) &&
		(!check_rights || MayTake(seen, rels, queue_id)))
	{
		TM_FailureData tmfd;
		TM_Result	result = TM_Ok;
		RmsgLease	seen_lease = {0};

		if (!check_rights)
			*queue_id = QueueOf(seen, rels);

		/*
		 * The lease our snapshot sees: one already over need not be waited
		 * for, and under REPEATABLE READ it is compared with the newest
		 * after the delete.
		 */
		if (receipt != NULL || IsolationUsesXactSnapshot())
			(void) RmsgLeaseFind(&leases, msg_id, snapshot, &seen_lease);
		if (receipt != NULL && !LeaseHolds(seen, rels, &seen_lease, *receipt, valid_at))
			outcome = RMSG_REMOVE_STALE;
		else
		{
			/*
			 * Most often the version we see is the newest: delete it
			 * straight away, one WAL record.  heap_delete waits for a
			 * transaction holding the row, and says TM_Updated if it
			 * changed it (a nack moved it to the back, say): then we
			 * lock the newest version, look again, and delete that.
			 */
			result = table_tuple_delete(rel, &seen->tts_tid, cid, snapshot,
										InvalidSnapshot, true, &tmfd, false);
			if (result == TM_Ok)
				outcome = RMSG_REMOVE_DELETED;
			else if (result == TM_Updated)
				outcome = DeleteNewestVersion(rel, rels, &leases, seen, locked, snapshot,
											  cid, msg_id, receipt, valid_at, check_rights,
											  queue_id);
			else if (receipt != NULL)
				outcome = RMSG_REMOVE_STALE;	/* acked meanwhile */
		}
		if (outcome == RMSG_REMOVE_DELETED)
		{
			/*
			 * The queue of the version deleted: the newest one may have
			 * moved to a dead-letter queue since our snapshot.
			 */
			TupleTableSlot *deleted = result == TM_Ok ? seen : locked;
			bool		ungrouped;
			Datum		group = slot_getattr(deleted, rels->att_group_id, &ungrouped);
			RmsgLease	newest;

			/*
			 * A lease does not change the message row, so the delete did
			 * not see one made or ended while it waited.  With a receipt,
			 * the newest lease must still be its lease: else the lease ran
			 * out and another consumer took the message while we waited,
			 * or a nack of the same lease came first.  What we deleted is
			 * theirs, and only the end of our transaction can give it
			 * back (lease_rows.c).
			 */
			(void) RmsgLeaseFindNewest(&leases, msg_id, &newest, true);
			if (receipt != NULL &&
				(!newest.found || newest.deliveries != seen_lease.deliveries ||
				 newest.until == DT_NOBEGIN))
				ereport(ERROR,
						(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						 errmsg("message " INT64_FORMAT " was given back or leased again while it was acked",
								msg_id),
						 errdetail("Its lease ran out, or was nacked, while the ack waited."),
						 errhint("Retry the transaction: the ack will then find its receipt stale.")));
			/* as a DELETE of the lease row would, under REPEATABLE READ */
			if (IsolationUsesXactSnapshot() &&
				(newest.found != seen_lease.found ||
				 (newest.found && !ItemPointerEquals(&newest.tid, &seen_lease.tid))))
				ereport(ERROR,
						(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
						 errmsg("could not serialize access due to concurrent update of message " INT64_FORMAT,
								msg_id)));
			RmsgLeaseDelete(&leases, msg_id, &newest, cid);

			deleted_from = QueueOf(deleted, rels);
			if (!ungrouped)
				group_id = TextDatumGetCString(group);
			RmsgReadyHintTouched(deleted_from);
			RmsgCountAck(deleted_from);
		}
	}

	/* as after a statement: what we wrote is seen by the commands after us */
	CommandCounterIncrement();
	ExecDropSingleTupleTableSlot(seen);
	ExecDropSingleTupleTableSlot(locked);
	RmsgLeasesClose(&leases);
	UnregisterSnapshot(snapshot);
	index_close(pkey, NoLock);
	table_close(rel, NoLock);

	/* the end of a group's turn: its next message's comes (groups.c) */
	if (group_id != NULL)
		RmsgGroupReleased(deleted_from, group_id);
	return outcome;
}
