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

/* $1 queue_id: how many went, and the groups whose messages went */
static RmsgPlan purge_plan = {
	"WITH live AS (DELETE FROM rmsg.message WHERE queue_id = $1 RETURNING group_id),"
	"     dead AS (DELETE FROM rmsg.dead_message WHERE queue_id = $1 RETURNING 1)"
	" SELECT (SELECT count(*) FROM live) + (SELECT count(*) FROM dead) AS purged,"
	"        (SELECT array_agg(DISTINCT group_id) FROM live"
	"          WHERE group_id IS NOT NULL) AS groups",
	1, {INT4OID}
};

/*
 * The lease rows of messages that are gone.  A separate statement: a get
 * that held one of the queue's messages when the purge reached it made
 * its lease after the purge's snapshot, and the purge waited for it.
 * Other queues' leases are always deleted with their messages, or by a
 * purge like this one.
 */
static RmsgPlan forget_leases_plan = {
	"DELETE FROM rmsg.lease l"
	" WHERE NOT EXISTS (SELECT FROM rmsg.message m WHERE m.msg_id = l.msg_id)",
	0, {0}
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
	RmsgPlanExecute(&forget_leases_plan, NULL, NULL, true, 0);
	RmsgGroupsReleased(queue.queue_id, groups, no_groups);
	RmsgSpiFinish();
	PG_RETURN_INT64(purged);
}
