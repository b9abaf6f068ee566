/*-------------------------------------------------------------------------
 *
 * redrive.c
 *	  rmsg.redrive: sending dead letters back to be handled again.
 *
 * A queue holds dead letters in two ways (dead_letter.c): as its own
 * messages, when another queue sent them there as its dead-letter queue
 * (rmsg.message.died_in names that queue), and in rmsg.dead_message, when
 * they died in this queue and it has no dead-letter queue.  A redrive of
 * the queue moves both back: the first to the queue each died in, the
 * second to the queue itself, or all to to_queue when one is named.  Each
 * arrives ready, with no deliveries and no lease, at the back of the line;
 * its old receipts name nothing any more.  Messages sent to the queue by
 * puts (died_in NULL) are not dead letters and stay.
 *
 * Which go: in msg_id order, at most max (NULL: all), the queue's own
 * messages first, then its dead ones.  A message leased from the
 * dead-letter queue and still in its lease stays, and so does one a
 * running transaction has locked (skipped, as a get skips it).  A dead
 * letter whose queue was dropped stays too, unless to_queue is named.
 *
 * Rights: manage on the queue redriven (it empties it), put on every queue
 * a message goes to (without to_queue, the queue itself is one when it
 * keeps dead messages of its own: they go back to it).  Every such queue is opened first, its name lock held
 * as a put holds it, so none can be dropped under the move; the move then
 * sends messages only to queues checked so.  The moves are durable writes
 * that add entries to the ready index of the queues that receive them,
 * which are woken at commit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "storage/lockdefs.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "queue/queue.h"

PG_FUNCTION_INFO_V1(rmsg_redrive);

/* The queues the dead letters held by queue $1 died in, that still exist. */
static RmsgPlan origins_plan = {
	"SELECT DISTINCT q.name FROM rmsg.message m JOIN rmsg.queue q ON q.queue_id = m.died_in"
	" WHERE m.queue_id = $1 AND m.died_in IS NOT NULL",
	1, {INT4OID}
};

/* Whether queue $1 keeps dead messages of its own. */
static RmsgPlan has_dead_plan = {
	"SELECT EXISTS (SELECT FROM rmsg.dead_message WHERE queue_id = $1) AS has_dead",
	1, {INT4OID}
};

/*
 * Moves dead letters held as messages of queue $1 to $2 (NULL: where each
 * died), if that is one of $5; $3 now, $4 the most to move (NULL: all).
 * They arrive with no deliveries: their lease rows go.  A message a
 * consumer of the dead-letter queue has leased stays, unless that lease
 * committed after this statement began: then the message is both in that
 * consumer's hands and back in its queue, delivered twice but not lost.
 */
static RmsgPlan move_back_plan = {
	"WITH picked AS ("
	"  SELECT m.ctid AS tid, m.msg_id, coalesce($2, m.died_in) AS to_queue_id"
	"    FROM rmsg.message m"
	"   WHERE m.queue_id = $1 AND m.died_in IS NOT NULL"
	"     AND NOT EXISTS (SELECT FROM rmsg.lease l"
	"                      WHERE l.msg_id = m.msg_id AND l.lease_until > $3)"
	"     AND coalesce($2, m.died_in) = ANY ($5)"
	"   ORDER BY m.msg_id LIMIT $4"
	"     FOR UPDATE OF m SKIP LOCKED),"
	" unleased AS (DELETE FROM rmsg.lease l USING picked p WHERE l.msg_id = p.msg_id)"
	" UPDATE rmsg.message m SET queue_id = p.to_queue_id,"
	"        visible_at = $3, died_in = NULL, priority = 0"
	"   FROM picked p WHERE m.ctid = p.tid",
	5, {INT4OID, INT4OID, TIMESTAMPTZOID, INT4OID, INT4ARRAYOID}
};

/* Moves dead messages of queue $1 to queue $2 as new ones; $3 now, $4 max. */
static RmsgPlan revive_plan = {
	"WITH picked AS ("
	"  SELECT d.msg_id FROM rmsg.dead_message d WHERE d.queue_id = $1"
	"   ORDER BY d.msg_id LIMIT $4 FOR UPDATE SKIP LOCKED),"
	" gone AS (DELETE FROM rmsg.dead_message d USING picked p"
	"           WHERE d.msg_id = p.msg_id RETURNING d.*)"
	" INSERT INTO rmsg.message (msg_id, queue_id, visible_at,"
	"        enqueued_at, payload_size, payload_id, headers, inline_data)"
	" SELECT msg_id, $2, $3, enqueued_at, payload_size, payload_id, headers,"
	"        inline_data FROM gone",
	4, {INT4OID, INT4OID, TIMESTAMPTZOID, INT4OID}
};

/*
 * Queue queue_id received ready messages at `now`: new entries in lane 0
 * of its ready index (ready_hint.c's rule), and its waiters woken at
 * commit.
 */
static void
Received(int32 queue_id, TimestampTz now)
{
	RmsgReadyHintLower(queue_id, 0, now);
	RmsgReadyHintTouched(queue_id);
	RmsgWakeQueueAtCommit(queue_id);
}

/* Opens a queue that messages go to, for a role that must hold put on it. */
static int32
OpenDestination(const char *name)
{
	return RmsgOpenQueueFor(name, AccessShareLock, RMSG_PUT).queue_id;
}

/*
 * rmsg.redrive(dead_letter_queue, to_queue, max) -> bigint
 */
Datum
rmsg_redrive(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *to_name = NULL;
	int32		max = -1;		/* none */
	RmsgQueue	queue;
	int32		to_queue_id = 0;
	int32	   *destinations;
	int			ndestinations = 0;
	Datum	   *ids;
	TimestampTz now;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	int64		moved;
	bool		may_revive = true;

	RmsgEnter("rmsg.redrive", true);
	name = RmsgTextArg(fcinfo, 0, "dead_letter_queue");
	if (!PG_ARGISNULL(1))
		to_name = RmsgTextArg(fcinfo, 1, "to_queue");
	if (!PG_ARGISNULL(2))
	{
		max = PG_GETARG_INT32(2);
		if (max < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max must not be negative, not %d", max)));
	}

	RmsgSpiConnect();
	queue = RmsgOpenQueueFor(name, AccessShareLock, RMSG_MANAGE);

	/* every destination opened and its rights checked before anything moves */
	if (to_name != NULL)
	{
		to_queue_id = OpenDestination(to_name);
		destinations = palloc(sizeof(int32));
		destinations[ndestinations++] = to_queue_id;
	}
	else
	{
		Datum		arg = Int32GetDatum(queue.queue_id);
		char	  **names;
		uint64		n;

		RmsgPlanExecute(&origins_plan, &arg, NULL, true, 0);
		n = SPI_processed;
		names = palloc(sizeof(char *) * (n + 1));
		for (uint64 i = 0; i < n; i++)
			names[i] = RmsgSpiText(i, "name");
		destinations = palloc(sizeof(int32) * (n + 1));
		for (uint64 i = 0; i < n; i++)
			destinations[ndestinations++] = OpenDestination(names[i]);
		/*
		 * Its own dead messages go back to the queue itself, which takes
		 * put on it when there are any.  A role without put revives none,
		 * so that dead messages arriving after this look stay too.
		 */
		if ((queue.rights & RMSG_PUT) == 0)
		{
			RmsgPlanExecute(&has_dead_plan, &arg, NULL, true, 1);
			if (DatumGetBool(RmsgSpiNotNull(0, "has_dead")))
				RmsgRequireRights(RMSG_QUEUE, name, queue.rights, RMSG_PUT);
			may_revive = false;
		}
	}

	now = GetCurrentTimestamp();
	ids = palloc(sizeof(Datum) * (ndestinations + 1));
	for (int i = 0; i < ndestinations; i++)
		ids[i] = Int32GetDatum(destinations[i]);

	/* this transaction writes the queue's messages: its walks move no hint */
	RmsgReadyHintTouched(queue.queue_id);
	values[0] = Int32GetDatum(queue.queue_id);
	values[1] = Int32GetDatum(to_queue_id);
	nulls[1] = to_name == NULL;
	values[2] = TimestampTzGetDatum(now);
	values[3] = Int32GetDatum(max);
	nulls[3] = max < 0;
	values[4] = PointerGetDatum(construct_array(ids, ndestinations, INT4OID, sizeof(int32),
												true, TYPALIGN_INT));
	RmsgPlanExecute(&move_back_plan, values, nulls, true, 0);
	moved = (int64) SPI_processed;
	if (moved > 0)
	{
		for (int i = 0; i < ndestinations; i++)
			Received(destinations[i], now);
	}

	if (may_revive && (max < 0 || moved < max))
	{
		int32		revived_into = to_name != NULL ? to_queue_id : queue.queue_id;

		values[1] = Int32GetDatum(revived_into);
		nulls[1] = false;
		values[3] = Int32GetDatum(max < 0 ? 0 : max - (int32) moved);
		RmsgPlanExecute(&revive_plan, values, nulls, true, 0);
		if (SPI_processed > 0)
			Received(revived_into, now);
		moved += (int64) SPI_processed;
	}
	RmsgSpiFinish();
	PG_RETURN_INT64(moved);
}
