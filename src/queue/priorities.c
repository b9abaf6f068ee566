/*-------------------------------------------------------------------------
 *
 * priorities.c
 *	  Priorities: higher ones handed out first, without making a get look
 *	  at more than it did.
 *
 * A put may give its message a priority from 0 (the default) to 9.  Among
 * the ready messages of a queue, a get takes those of the highest priority
 * first, and within a priority in the queue's usual order (the order they
 * became ready, then msg_id).
 *
 * The ready index is (queue_id, priority, visible_at, msg_id): each
 * priority of a queue is a lane of its own, ordered as a queue without
 * priorities is.  A get walks the lanes from the highest down, each from
 * its own hint (ready_hint.c), until it has what it asked for; so within a
 * lane it costs what it always did, and a lane costs one index descent.
 * The hint knows which lanes of the queue have been used, and a get walks
 * only those: a queue that never saw a priority walks lane 0 alone, as
 * before.  Sorting by priority inside one range of the index instead would
 * read every ready message of the queue on every get.
 *
 * priority is never changed after the put: a lease, a nack or a retry
 * keeps the message in its lane.  A dead letter and a redriven message
 * come back as plain messages, priority 0, as they leave their group.  In
 * a group (groups.c), the group's order comes first: its next message is
 * handed out only after the one before, whatever their priorities.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/itup.h"
#include "access/stratnum.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "queue/queue.h"

/*
 * The group_id and priority arguments of a put (a NULL priority is the
 * default, 0).  An out-of-range priority is refused before anything is
 * written.
 */
RmsgPlacement
RmsgPlacementArgs(FunctionCallInfo fcinfo, int group_argno, int priority_argno)
{
	RmsgPlacement place;
	int32		priority = PG_ARGISNULL(priority_argno) ? 0 : PG_GETARG_INT32(priority_argno);

	if (priority < 0 || priority > RMSG_MAX_PRIORITY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("priority must be between 0 and %d, not %d", RMSG_MAX_PRIORITY, priority),
				 errdetail("Higher priorities are handed out first; 0 is the default.")));
	place.group_id = RmsgKeyArg(fcinfo, group_argno, "group_id");
	place.priority = (int16) priority;
	return place;
}

/*
 * A remote queue (remote/) moves its messages in put order: a group or a
 * priority is for the queue on the receiving side, and is refused (0A000)
 * before anything is written.
 */
void
RmsgCheckPlacement(const RmsgQueue *queue, const char *name, const RmsgPlacement *place)
{
	if (queue->remote && (place->group_id != NULL || place->priority != 0))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("queue \"%s\" is a remote queue: its messages take no group_id or priority", name),
				 errdetail("A remote queue moves its messages to the other server in the order they were put.")));
}

/*
 * The lanes of the queue that hold index entries, live or dead, as a
 * bitmask: one descent of the ready index per lane found, and one more.
 * Entries marked dead in the index are not seen, and need not be.  For a
 * queue whose hint does not know its lanes yet (ready_hint.c).
 */
uint16
RmsgProbeLanes(Relation rel, Relation index, int32 queue_id)
{
	uint16		lanes = 1;		/* lane 0 is always walked */
	int			lane = 0;
	ScanKeyData keys[2];
	IndexScanDesc scan;

	/* SnapshotAny: every entry is there for the probe, whatever its row */
	scan = index_beginscan(rel, index, SnapshotAny, 2, 0);
	scan->xs_want_itup = true;
	for (;;)
	{
		ItemPointer tid;
		bool		isnull;

		ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_INT4EQ,
					Int32GetDatum(queue_id));
		ScanKeyInit(&keys[1], 2, BTGreaterStrategyNumber, F_INT2GT,
					Int16GetDatum((int16) lane));
		index_rescan(scan, keys, 2, NULL, 0);
		tid = index_getnext_tid(scan, ForwardScanDirection);
		if (tid == NULL)
			break;
		lane = DatumGetInt16(index_getattr(scan->xs_itup, 2, scan->xs_itupdesc, &isnull));
		if (lane < 0 || lane >= RMSG_PRIORITY_LANES)
			break;				/* not a lane we made: nothing to walk */
		lanes |= 1 << lane;
	}
	index_endscan(scan);
	return lanes;
}
