/*-------------------------------------------------------------------------
 *
 * lease_rows.c
 *	  The lease of a queue message: a small row of rmsg.lease, read and
 *	  written without the executor.
 *
 * A message row never changes while it waits or is leased.  What a lease
 * changes, how many times the message was delivered and until when the
 * latest delivery runs, is a row of its own, (msg_id, deliveries,
 * lease_until), made by the first get and deleted with the message.  Were
 * it in the message row, each lease would write a new version of the whole
 * message, its data included: a get of 10 on a backlog found no room for
 * most of them on their pages, and the room kept for them (fillfactor 70)
 * made every put extend the table by 43% more pages.
 *
 * The rules that keep a message with one consumer at a time:
 * - a get leases only while it holds the message row's tuple lock, and
 *   reads the lease row again once the lock is ours: its newest version,
 *   through a dirty snapshot.  A lock does not change the message row, so
 *   PostgreSQL would not look at a lease made since the get's snapshot:
 *   without the second read, two gets lease one message
 *   (test/bench/lease_design.sh showed it happen thousands of times);
 * - an extend or a nack without a delay changes only a lease that still
 *   runs, and only the lease row: it takes no message lock.  A get that
 *   finds one of them at work on the lease leaves the message, and so does
 *   a get whose update of the lease row finds that one came first;
 * - an ack, a nack with a delay, a dead-lettering, a redrive, a purge or a
 *   drop lock, delete or move the message row first, then change the
 *   lease row, waiting for an extend or a nack at work on it.
 * So a transaction that holds a lease row waits for no message row, and
 * two writers of one lease never wait for each other.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/index.h"
#include "executor/tuptable.h"
#include "storage/lmgr.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "queue/queue.h"

/* Opens rmsg.lease and its primary key for reading and writing. */
void
RmsgLeasesOpen(RmsgLeases *leases, const char *caller)
{
	const RmsgRelations *rels = RmsgGetRelations();

	leases->rels = rels;
	leases->rel = table_open(rels->lease, RowExclusiveLock);
	RmsgRefuseBypass(leases->rel, caller);
	leases->index = index_open(rels->lease_pkey, RowExclusiveLock);
	leases->info = NULL;
	leases->slot = table_slot_create(leases->rel, NULL);
	leases->scan = NULL;
	leases->scan_snapshot = InvalidSnapshot;
	leases->dirty_scan = NULL;
}

void
RmsgLeasesClose(RmsgLeases *leases)
{
	if (leases->scan != NULL)
		index_endscan(leases->scan);
	if (leases->dirty_scan != NULL)
		index_endscan(leases->dirty_scan);
	ExecDropSingleTupleTableSlot(leases->slot);
	index_close(leases->index, NoLock);
	table_close(leases->rel, NoLock);
}

/*
 * Looks msg_id up with `scan` (rescanned: a scan of a btree is costly to
 * begin, and a get or an ack looks up several leases) into *lease.
 */
static bool
LookUp(RmsgLeases *leases, IndexScanDesc scan, int64 msg_id, RmsgLease *lease)
{
	const RmsgRelations *rels = leases->rels;
	ScanKeyData key;
	bool		isnull;
	Datum		value;

	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(msg_id));
	index_rescan(scan, &key, 1, NULL, 0);
	lease->found = index_getnext_slot(scan, ForwardScanDirection, leases->slot);
	if (!lease->found)
	{
		lease->deliveries = 0;
		lease->until = DT_NOBEGIN;
		return false;
	}
	lease->tid = leases->slot->tts_tid;
	lease->deliveries = DatumGetInt32(slot_getattr(leases->slot, rels->att_lease_deliveries,
												   &isnull));
	value = slot_getattr(leases->slot, rels->att_lease_until, &isnull);
	lease->until = isnull ? DT_NOBEGIN : DatumGetTimestampTz(value);
	return true;
}

/*
 * Reads the lease of msg_id that `snapshot` sees into *lease; false when
 * it sees none (the message was never delivered, or not since it was
 * dead-lettered or redriven).  The caller passes the same registered
 * snapshot on every call, for as long as the leases are open.
 */
bool
RmsgLeaseFind(RmsgLeases *leases, int64 msg_id, Snapshot snapshot, RmsgLease *lease)
{
	if (leases->scan == NULL)
	{
		leases->scan = index_beginscan(leases->rel, leases->index, snapshot, 1, 0);
		leases->scan_snapshot = snapshot;
	}
	Assert(leases->scan_snapshot == snapshot);
	return LookUp(leases, leases->scan, msg_id, lease);
}

/*
 * Reads the newest state of msg_id's lease with a dirty snapshot: what is
 * committed, and what a transaction still running wrote.  Returns the id
 * of another transaction that is writing or deleting the version found
 * (InvalidTransactionId when none); *lease is that version.
 */
TransactionId
RmsgLeaseFindDirty(RmsgLeases *leases, int64 msg_id, RmsgLease *lease)
{
	if (leases->dirty_scan == NULL)
		leases->dirty_scan = index_beginscan(leases->rel, leases->index, &leases->dirty, 1, 0);
	/*
	 * A dirty snapshot says who is at work on a version as it looks at one;
	 * when the key has no entry it looks at none, so start from nobody.
	 */
	InitDirtySnapshot(leases->dirty);
	leases->dirty.xmin = leases->dirty.xmax = InvalidTransactionId;
	(void) LookUp(leases, leases->dirty_scan, msg_id, lease);
	if (TransactionIdIsValid(leases->dirty.xmin))
		return leases->dirty.xmin;
	return leases->dirty.xmax;
}

/*
 * Reads the newest lease of msg_id, whose message row the caller has
 * locked or deleted: no get may write it then, but an extend or a nack
 * may be changing it (they take no message lock).  With wait, waits for
 * such a writer to end and reads again; without, returns false when one is
 * at work.  True with *lease the newest committed lease (found or not).
 */
bool
RmsgLeaseFindNewest(RmsgLeases *leases, int64 msg_id, RmsgLease *lease, bool wait)
{
	for (;;)
	{
		TransactionId writer = RmsgLeaseFindDirty(leases, msg_id, lease);

		if (!TransactionIdIsValid(writer))
			return true;
		if (!wait)
			return false;
		XactLockTableWait(writer, leases->rel, &lease->tid, XLTW_FetchUpdated);
	}
}

/* Whether the lease runs at `now`. */
bool
RmsgLeaseRuns(const RmsgLease *lease, TimestampTz now)
{
	return lease->found && lease->until > now;
}

/*
 * Writes msg_id's lease as (deliveries, until; DT_NOBEGIN for NULL): a new
 * row, or a new version of `lease`, the newest one, found by
 * RmsgLeaseFindNewest under the message row's lock.  The column changed
 * is not indexed, so the update is HOT when the page has room.  Returns
 * false, writing nothing, when an extend or a nack changed the lease
 * meanwhile (they do not take the message's lock): the lease ran out for
 * us as they found it still running, so the message is theirs.
 */
bool
RmsgLeaseWrite(RmsgLeases *leases, const RmsgLease *lease, int64 msg_id,
			   int32 deliveries, TimestampTz until, CommandId cid)
{
	const RmsgRelations *rels = leases->rels;
	TupleTableSlot *slot = leases->slot;
	int			natts = RelationGetDescr(leases->rel)->natts;
	bool		need_entry = true;

	ExecClearTuple(slot);
	for (int i = 0; i < natts; i++)
		slot->tts_isnull[i] = true;
	slot->tts_values[rels->att_lease_msg_id - 1] = Int64GetDatum(msg_id);
	slot->tts_isnull[rels->att_lease_msg_id - 1] = false;
	slot->tts_values[rels->att_lease_deliveries - 1] = Int32GetDatum(deliveries);
	slot->tts_isnull[rels->att_lease_deliveries - 1] = false;
	slot->tts_values[rels->att_lease_until - 1] = TimestampTzGetDatum(until);
	slot->tts_isnull[rels->att_lease_until - 1] = (until == DT_NOBEGIN);
	ExecStoreVirtualTuple(slot);

	if (lease->found)
	{
		TM_FailureData tmfd;
		LockTupleMode lockmode;
		RmsgUpdateIndexes update_indexes;
		TM_Result	result;
		ItemPointerData tid = lease->tid;

		/* heap_update looks at the version itself, not at a snapshot */
		result = table_tuple_update(leases->rel, &tid, slot, cid, InvalidSnapshot,
									InvalidSnapshot, true, &tmfd, &lockmode,
									&update_indexes);
		if (result == TM_Updated || result == TM_Deleted)
			return false;
		if (result != TM_Ok)
			elog(ERROR, "could not write the lease of message " INT64_FORMAT " (%d)",
				 msg_id, (int) result);
		need_entry = RmsgIndexesNeedEntries(update_indexes);
	}
	else
		table_tuple_insert(leases->rel, slot, cid, 0, NULL);

	if (need_entry)
	{
		Datum		key = Int64GetDatum(msg_id);
		bool		key_null = false;

		if (leases->info == NULL)
			leases->info = BuildIndexInfo(leases->index);
		/* an update's new entry has the key of the version it replaces */
		index_insert(leases->index, &key, &key_null, &slot->tts_tid, leases->rel,
					 UNIQUE_CHECK_YES, lease->found, leases->info);
	}
	return true;
}

/*
 * Deletes msg_id's lease `lease`, the newest, whose message row the caller
 * has locked or deleted.  An extend or a nack may be changing it (they do
 * not wait for the message's lock): then we wait for it and delete what it
 * left.
 */
void
RmsgLeaseDelete(RmsgLeases *leases, int64 msg_id, const RmsgLease *lease, CommandId cid)
{
	RmsgLease	newest = *lease;
	TM_FailureData tmfd;
	TM_Result	result;

	while (newest.found)
	{
		result = table_tuple_delete(leases->rel, &newest.tid, cid, InvalidSnapshot,
									InvalidSnapshot, true, &tmfd, false);
		if (result == TM_Ok)
			return;
		if (result != TM_Updated)
			elog(ERROR, "could not delete the lease of message " INT64_FORMAT " (%d)",
				 msg_id, (int) result);
		(void) RmsgLeaseFindNewest(leases, msg_id, &newest, true);
	}
}
