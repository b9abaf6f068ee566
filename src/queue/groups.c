/*-------------------------------------------------------------------------
 *
 * groups.c
 *	  Message groups: one message of a group out at a time, in order.
 *
 * A put may name a group (group_id).  The messages of one group in one
 * queue are handed out one at a time, in the order their puts committed:
 * the next only once the one before is acked or dead-lettered.  A lease
 * that runs out, a nack and a worker's retry keep the group's turn with
 * the same message.  Other groups and ungrouped messages are not held up.
 *
 * How: a group has at most one message that gets may see, its *head*;
 * the others wait with visible_at = 'infinity', beyond every get's scan
 * of the ready index (which stops at now), so waiting messages cost a get
 * nothing however many there are, and the ready hint (ready_hint.c) never
 * meets them.  A put to a group that has a live message waits; one to an
 * empty group is the head, ready (or delayed) as usual.  The ack or dead
 * letter that ends the head's turn makes the group's next message, the
 * lowest msg_id waiting, ready now: it joins the back of the line, as a
 * new put would.  The worker takes and acks through the same functions,
 * so it keeps the same rule.
 *
 * Both look the group up in message_group_idx (queue_id, group_id,
 * visible_at, msg_id): whether it has a head, and its first waiting
 * message, are each the first entry of a range, however long the group.
 *
 * Races.  Both a grouped put and the end of a turn take the group's lock
 * (RMSG_LOCK_GROUP, core/locks.h) until their transaction ends, and read
 * with the latest snapshot after taking it.  So a put that commits while
 * the head's ack is in progress is seen by that ack, which then makes it
 * ready; an ack that commits first leaves the group empty for the put,
 * which is then the head.  Two puts to a group wait for each other.  A
 * transaction that puts to several groups takes their locks in the order
 * of its puts: two that do so in opposite orders may deadlock (40P01),
 * like any two transactions that lock rows in opposite orders.  The price
 * of that order: the ack (or dead letter, or purge) that ends a group's
 * turn waits for a transaction still open that put to the same group, the
 * worker's too; producers that put to groups keep their transactions
 * short.  A put draws its msg_id after taking the group's lock, so the
 * group's msg_id order is the order in which its puts got the lock.
 *
 * A message that moves to a dead-letter queue leaves its group: there it
 * is an ordinary message, and a redrive sends it back without one.  A
 * delay given to a put that has to wait is spent waiting: it becomes
 * ready when its turn comes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "queue/queue.h"

/* What GroupHas looks for. */
typedef enum GroupProbe
{
	GROUP_ANY,					/* any live message of the group */
	GROUP_WAITING				/* a message waiting for its turn */
} GroupProbe;

/*
 * Makes the group's first waiting message ready at $3, unless the group
 * still has a message that is not waiting (the one acked was itself a
 * waiting one, acked by msg_id).
 */
static RmsgPlan next_in_group_plan = {
	"UPDATE rmsg.message SET visible_at = $3"
	" WHERE msg_id = (SELECT msg_id FROM rmsg.message"
	"                  WHERE queue_id = $1 AND group_id = $2 AND visible_at = 'infinity'"
	"                  ORDER BY msg_id LIMIT 1)"
	"   AND NOT EXISTS (SELECT FROM rmsg.message"
	"                    WHERE queue_id = $1 AND group_id = $2 AND visible_at < 'infinity')"
	" RETURNING priority",
	3, {INT4OID, TEXTOID, TIMESTAMPTZOID}
};

/*
 * Whether the queue's group has a message (any, or a waiting one) in the
 * latest snapshot, our own writes included: the first entry of a range of
 * message_group_idx, read directly (every grouped put and ack asks, and a
 * statement would cost each an executor start and end).
 */
static bool
GroupHas(int32 queue_id, const char *group_id, GroupProbe what)
{
	const RmsgRelations *rels = RmsgGetRelations();
	Relation	rel = table_open(rels->message, AccessShareLock);
	Relation	index = index_open(rels->message_group_idx, AccessShareLock);
	Snapshot	snapshot = RegisterSnapshot(GetLatestSnapshot());
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	ScanKeyData keys[3];
	int			nkeys = 2;
	IndexScanDesc scan;
	bool		found;

	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_INT4EQ, Int32GetDatum(queue_id));
	/* the index's own collation: a btree is searched in the order it was built in */
	ScanKeyEntryInitialize(&keys[1], 0, 2, BTEqualStrategyNumber, InvalidOid,
						   index->rd_indcollation[1], F_TEXTEQ,
						   CStringGetTextDatum(group_id));
	if (what == GROUP_WAITING)
		ScanKeyInit(&keys[nkeys++], 3, BTEqualStrategyNumber, F_TIMESTAMPTZ_EQ,
					TimestampTzGetDatum(DT_NOEND));
	scan = index_beginscan(rel, index, snapshot, nkeys, 0);
	index_rescan(scan, keys, nkeys, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	UnregisterSnapshot(snapshot);
	index_close(index, NoLock);
	table_close(rel, NoLock);
	return found;
}

/* Takes the group's lock for the rest of the transaction. */
static void
LockGroup(int32 queue_id, const char *group_id)
{
	char		queue_key[16];

	snprintf(queue_key, sizeof(queue_key), "%d", queue_id);
	(void) RmsgLockName(RMSG_LOCK_GROUP, queue_key, group_id, ExclusiveLock, true);
}

/*
 * The visible_at of a message put to the group: visible_at when the group
 * has no live message (it is the head), else 'infinity' (it waits its
 * turn).  Takes the group's lock.  Inside SPI.
 */
TimestampTz
RmsgGroupVisibleAt(int32 queue_id, const char *group_id, TimestampTz visible_at)
{
	LockGroup(queue_id, group_id);
	return GroupHas(queue_id, group_id, GROUP_ANY) ? DT_NOEND : visible_at;
}

/*
 * RmsgGroupReleased for each group of a text[] a statement returned (the
 * groups whose messages it removed), when it is not NULL.
 */
void
RmsgGroupsReleased(int32 queue_id, Datum groups, bool isnull)
{
	Datum	   *names;
	int			n;

	if (isnull)
		return;
	deconstruct_array(DatumGetArrayTypeP(groups), TEXTOID, -1, false, TYPALIGN_INT,
					  &names, NULL, &n);
	for (int i = 0; i < n; i++)
		RmsgGroupReleased(queue_id, TextDatumGetCString(names[i]));
}

/*
 * The group's head was acked or dead-lettered by this transaction: its
 * next message, if any, becomes ready (a new entry in the ready index,
 * and a wakeup at commit).  Takes the group's lock.
 */
void
RmsgGroupReleased(int32 queue_id, const char *group_id)
{
	Datum		values[3];
	TimestampTz now = GetCurrentTimestamp();

	LockGroup(queue_id, group_id);
	if (!GroupHas(queue_id, group_id, GROUP_WAITING))
		return;					/* most often: nobody waits */
	RmsgSpiConnect();
	values[0] = Int32GetDatum(queue_id);
	values[1] = CStringGetTextDatum(group_id);
	values[2] = TimestampTzGetDatum(now);
	RmsgPlanExecute(&next_in_group_plan, values, NULL, true, 0);
	if (SPI_processed > 0)
	{
		/* a new entry in the ready index, in the lane of its priority */
		RmsgReadyHintLower(queue_id, DatumGetInt16(RmsgSpiNotNull(0, "priority")), now);
		RmsgReadyHintTouched(queue_id);
		RmsgWakeQueueAtCommit(queue_id);
	}
	RmsgSpiFinish();
}
