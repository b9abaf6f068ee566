/*-------------------------------------------------------------------------
 *
 * dead_letter.c
 *	  Moving messages whose deliveries are used up out of their queue.
 *
 * A dead message goes to its queue's dead-letter queue, where it starts
 * afresh (ready at once, no deliveries) and remembers the queue it died in
 * (died_in, for rmsg.redrive, redrive.c), or, when the queue has none, to
 * rmsg.dead_message, payload reference and all, so nothing is lost.  It is
 * a durable write like any other: not a lease.
 *
 * Three callers: a get that meets exhausted messages (by the tids of the
 * rows it locked, get.c), the worker whose handler failed the last allowed
 * time (worker/dispatch_queue.c), and the worker's maintenance, which
 * sweeps exhausted messages whose last lease ran out while nobody was
 * getting from their queue (worker/maintenance.c); both of these by
 * msg_id, on rows they hold locked.  A message moved into a dead-letter
 * queue is ready there, so that queue's waiters are woken at commit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/timestamp.h"

#include "queue/queue.h"

/*
 * The two ways, for rows named by `rows`: $1 the rows' tids or msg_ids, $2
 * the dead-letter queue, $3 now.  Each returns how many rows moved, and
 * the groups they left (NULL: none), whose turns their moves end.
 */
#define MOVED_AND_GROUPS(cte) \
	" SELECT count(*) AS moved," \
	"        array_agg(DISTINCT group_id) FILTER (WHERE group_id IS NOT NULL) AS groups" \
	"   FROM " cte
#define MOVE_TO_DLQ(rows) \
	"WITH old AS (SELECT ctid AS tid, msg_id, group_id FROM rmsg.message WHERE " rows ")," \
	" moved AS (UPDATE rmsg.message m SET queue_id = $2," \
	"                  visible_at = $3, died_in = m.queue_id, group_id = NULL," \
	"                  priority = 0" \
	"             FROM old WHERE m.ctid = old.tid RETURNING old.group_id)," \
	" unleased AS (DELETE FROM rmsg.lease l USING old WHERE l.msg_id = old.msg_id)" \
	MOVED_AND_GROUPS("moved")
#define KEEP_DEAD(rows) \
	"WITH gone AS (DELETE FROM rmsg.message WHERE " rows " RETURNING *)," \
	" unleased AS (DELETE FROM rmsg.lease l USING gone WHERE l.msg_id = gone.msg_id" \
	"              RETURNING l.msg_id, l.deliveries)," \
	" kept AS (INSERT INTO rmsg.dead_message (msg_id, queue_id, deliveries, enqueued_at," \
	"        died_at, payload_size, payload_id, headers, inline_data)" \
	"   SELECT g.msg_id, g.queue_id, coalesce(u.deliveries, 0), g.enqueued_at, $3," \
	"          g.payload_size, g.payload_id, g.headers, g.inline_data" \
	"     FROM gone g LEFT JOIN unleased u ON u.msg_id = g.msg_id)" \
	MOVED_AND_GROUPS("gone")

static RmsgPlan move_to_dlq_by_tid_plan = {
	MOVE_TO_DLQ("ctid = ANY($1)"), 3, {TIDARRAYOID, INT4OID, TIMESTAMPTZOID}
};
static RmsgPlan keep_dead_by_tid_plan = {
	KEEP_DEAD("ctid = ANY($1)"), 3, {TIDARRAYOID, INT4OID, TIMESTAMPTZOID}
};
static RmsgPlan move_to_dlq_by_id_plan = {
	MOVE_TO_DLQ("msg_id = ANY($1)"), 3, {INT8ARRAYOID, INT4OID, TIMESTAMPTZOID}
};
static RmsgPlan keep_dead_by_id_plan = {
	KEEP_DEAD("msg_id = ANY($1)"), 3, {INT8ARRAYOID, INT4OID, TIMESTAMPTZOID}
};

/*
 * Runs one of the pairs above on an array of row identifiers; returns how
 * many rows went.  The messages leave their groups, whose next messages
 * then get their turn (groups.c).
 */
static int
DeadLetter(const RmsgQueue *queue, RmsgPlan *to_dlq, RmsgPlan *keep, Datum rows)
{
	Datum		values[3];
	TimestampTz now = GetCurrentTimestamp();
	int			moved;
	Datum		groups;
	bool		no_groups;

	values[0] = rows;
	values[1] = Int32GetDatum(queue->dead_letter_queue_id);
	values[2] = TimestampTzGetDatum(now);
	RmsgReadyHintTouched(queue->queue_id);

	if (queue->dead_letter_queue_id != 0)
	{
		RmsgPlanExecute(to_dlq, values, NULL, false, 1);
		/* the moved messages have new entries in the ready index, in lane 0 */
		RmsgReadyHintLower(queue->dead_letter_queue_id, 0, now);
		RmsgWakeQueueAtCommit(queue->dead_letter_queue_id);
	}
	else
		RmsgPlanExecute(keep, values, NULL, false, 1);
	moved = (int) DatumGetInt64(RmsgSpiNotNull(0, "moved"));
	groups = RmsgSpiCopyValue(0, "groups", &no_groups);
	RmsgCountDeadLettered(queue->queue_id, moved);
	RmsgGroupsReleased(queue->queue_id, groups, no_groups);
	return moved;
}

/*
 * Dead-letters messages of the queue by the tids of row versions the caller
 * has locked (which keeps the tids stable until commit).
 */
void
RmsgDeadLetterLocked(const RmsgQueue *queue, Datum *tids, int n)
{
	ArrayType  *array = construct_array(tids, n, TIDOID, sizeof(ItemPointerData),
										false, TYPALIGN_SHORT);

	(void) DeadLetter(queue, &move_to_dlq_by_tid_plan, &keep_dead_by_tid_plan,
					  PointerGetDatum(array));
}

/* Dead-letters messages of the queue by msg_id; returns how many went. */
int
RmsgDeadLetterById(const RmsgQueue *queue, int64 *msg_ids, int n)
{
	Datum	   *ids = palloc(sizeof(Datum) * n);
	ArrayType  *array;

	for (int i = 0; i < n; i++)
		ids[i] = Int64GetDatum(msg_ids[i]);
	array = construct_array(ids, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL,
							TYPALIGN_DOUBLE);
	return DeadLetter(queue, &move_to_dlq_by_id_plan, &keep_dead_by_id_plan,
					  PointerGetDatum(array));
}
