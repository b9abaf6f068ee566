/*-------------------------------------------------------------------------
 *
 * purge.c
 *	  rmsg.purge_queue: deleting every message of a queue at once.
 *
 * A purge deletes the queue's messages in every state (ready, delayed, in
 * flight) and its dead ones (rmsg.dead_message), and returns how many it
 * deleted.  It reads with the latest snapshot, so under REPEATABLE READ too
 * it deletes every message committed before it; a put still running then
 * keeps its message.  A message a running get has leased is waited for and
 * deleted once that get's transaction ends; its ack then finds nothing.
 * Payload rows only the purged messages referenced wait for
 * rmsg.collect_payloads, as after acks.
 *
 * The purge holds the queue's name lock as a put does: a drop_queue cannot
 * run beside it, and the queue's producers and consumers are not held up.
 * It ends the turn of every message group it emptied (groups.c): a put to
 * such a group still running, which saw the group busy and waits its turn,
 * is then made ready once it commits, instead of waiting for ever.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "storage/lockdefs.h"

#include "queue/queue.h"

PG_FUNCTION_INFO_V1(rmsg_purge_queue);

/*
 * $1 queue_id: how many went, the groups whose messages went, and the
 * lowest and highest msg_id of the live ones (NULL: none)
 */
static RmsgPlan purge_plan = {
	"WITH live AS (DELETE FROM rmsg.message WHERE queue_id = $1 RETURNING msg_id, group_id),"
	"     dead AS (DELETE FROM rmsg.dead_message WHERE queue_id = $1 RETURNING 1)"
	" SELECT (SELECT count(*) FROM live) + (SELECT count(*) FROM dead) AS purged,"
	"        (SELECT array_agg(DISTINCT group_id) FROM live"
	"          WHERE group_id IS NOT NULL) AS groups,"
	"        (SELECT min(msg_id) FROM live) AS first_id, (SELECT max(msg_id) FROM live) AS last_id",
	1, {INT4OID}
};

/*
 * The lease rows of the live messages that went: those between $1 and $2
 * whose message is gone.  A statement of its own, after the purge: a get
 * that held one of the queue's messages when the purge reached it gave it
 * its first lease after the purge's snapshot (the purge waited for it), and
 * a join in the purge's statement would not see that row.
 */
static RmsgPlan forget_leases_plan = {
	"DELETE FROM rmsg.lease l WHERE l.msg_id BETWEEN $1 AND $2"
	"   AND NOT EXISTS (SELECT FROM rmsg.message m WHERE m.msg_id = l.msg_id)",
	2, {INT8OID, INT8OID}
};

/* rmsg.purge_queue(queue) -> bigint */
Datum
rmsg_purge_queue(PG_FUNCTION_ARGS)
{
	char	   *name;
	RmsgQueue	queue;
	Datum		arg;
	int64		purged;
	Datum		groups;
	bool		no_groups;
	Datum		range[2];
	bool		no_live;

	RmsgEnter("rmsg.purge_queue", true);
	name = RmsgTextArg(fcinfo, 0, "queue name");
	RmsgSpiConnect();
	queue = RmsgOpenQueueFor(name, AccessShareLock, RMSG_MANAGE);

	/* this transaction deletes the queue's messages: its walks move no hint */
	RmsgReadyHintTouched(queue.queue_id);
	arg = Int32GetDatum(queue.queue_id);
	RmsgPlanExecute(&purge_plan, &arg, NULL, true, 1);
	purged = DatumGetInt64(RmsgSpiNotNull(0, "purged"));
	groups = RmsgSpiCopyValue(0, "groups", &no_groups);
	range[0] = RmsgSpiValue(0, "first_id", &no_live);
	range[1] = RmsgSpiValue(0, "last_id", &no_live);
	if (!no_live)
		RmsgPlanExecute(&forget_leases_plan, range, NULL, true, 0);
	RmsgGroupsReleased(queue.queue_id, groups, no_groups);
	RmsgSpiFinish();
	PG_RETURN_INT64(purged);
}
