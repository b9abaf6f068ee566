/*-------------------------------------------------------------------------
 *
 * get.c
 *	  rmsg.get: taking ready messages, long polling, dead-lettering.
 *
 * One statement finds the oldest ready messages of the queue (the ones
 * whose visible_at passed first; a message whose lease ran out keeps its
 * place, a message nacked with a delay goes to the back), skipping rows
 * other consumers have locked (FOR UPDATE SKIP LOCKED), and leases them:
 * deliveries + 1, lease_until = now + visibility.  So two consumers are
 * never handed the same message while its lease runs, and a consumer whose
 * transaction rolls back hands its messages straight back.
 *
 * A message found with its deliveries used up is not leased but
 * dead-lettered: moved to the queue's dead-letter queue, or, without one,
 * to rmsg.dead_message.  Then the get looks again, so dead messages never
 * cost a consumer an empty answer.
 *
 * With a wait, the get sleeps on the queue's condition variable
 * (wakeup.c) until a commit makes a message ready, a delayed message or an
 * expired lease becomes ready, or the wait is over.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "rmsg.h"

PG_FUNCTION_INFO_V1(rmsg_get);

#define GET_RESULT_COLUMNS 6

/*
 * $1 queue_id, $2 how many, $3 now, $4 lease end, $5 max_deliveries.
 *
 * The candidates are locked in the subquery and leased by their tuple ids:
 * we hold their row locks until commit, so the tids cannot move, and a TID
 * scan leaves the planner no index to choose wrongly.  The
 * queue is matched by a range (>= $1 AND <= $1) on purpose: an equality
 * would let the planner treat queue_id as constant and consider other
 * indexes for the order, filtering on the queue, which is slow for every
 * queue but the busiest.  The range leaves only the ready index
 * (queue_id, visible_at, msg_id) able to produce the order.  The scan
 * starts at the queue's oldest ready message and steps over the messages
 * in flight (their lease_until is not indexed, so that leasing is a HOT
 * update); delayed messages lie beyond now and are never visited.
 *
 * A candidate whose deliveries are used up is not leased (the row is left
 * as it was) and comes back marked exhausted for dead-lettering.
 */
static RmsgPlan take_plan = {
	"UPDATE rmsg.message m"
	"    SET lease_until = CASE WHEN m.deliveries < $5 THEN $4 ELSE m.lease_until END,"
	"        deliveries = m.deliveries + (m.deliveries < $5)::int"
	"  WHERE m.ctid = ANY (ARRAY("
	"        SELECT ctid FROM rmsg.message"
	"         WHERE queue_id >= $1 AND queue_id <= $1 AND visible_at <= $3"
	"           AND (lease_until IS NULL OR lease_until <= $3)"
	"         ORDER BY queue_id, visible_at, msg_id LIMIT $2 FOR UPDATE SKIP LOCKED))"
	" RETURNING m.msg_id,"
	"        coalesce(m.inline_data,"
	"                 (SELECT p.data FROM rmsg.payload p WHERE p.payload_id = m.payload_id)),"
	"        m.headers, m.deliveries, m.enqueued_at, m.lease_until IS DISTINCT FROM $4 AS exhausted",
	5, {INT4OID, INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID}
};

/* Into the dead-letter queue: a fresh start there.  $1 ids, $2 dlq, $3 now */
static RmsgPlan move_to_dlq_plan = {
	"UPDATE rmsg.message SET queue_id = $2, lease_until = NULL, deliveries = 0,"
	"       visible_at = $3"
	" WHERE msg_id = ANY($1)",
	3, {INT8ARRAYOID, INT4OID, TIMESTAMPTZOID}
};

/* No dead-letter queue: keep the message, payload reference and all. */
static RmsgPlan keep_dead_plan = {
	"WITH gone AS (DELETE FROM rmsg.message WHERE msg_id = ANY($1) RETURNING *)"
	" INSERT INTO rmsg.dead_message (msg_id, queue_id, deliveries, enqueued_at,"
	"        died_at, payload_size, payload_id, headers, inline_data)"
	" SELECT msg_id, queue_id, deliveries, enqueued_at, $3, payload_size,"
	"        payload_id, headers, inline_data FROM gone",
	3, {INT8ARRAYOID, INT4OID, TIMESTAMPTZOID}
};

/*
 * When the next delayed message or running lease of the queue comes due.
 * Only future times: a ready message that another consumer has locked is
 * that consumer's, and its commit or rollback wakes us.
 */
static RmsgPlan next_visible_plan = {
	"SELECT least(min(visible_at) FILTER (WHERE visible_at > $2),"
	"             min(lease_until) FILTER (WHERE lease_until > $2))"
	"  FROM rmsg.message WHERE queue_id = $1",
	2, {INT4OID, TIMESTAMPTZOID}
};

/*
 * Dead-letters the given messages of a queue (their rows are locked by the
 * caller).  Durable like any other write: this is not a lease.
 */
static void
DeadLetter(const RmsgQueue *queue, Datum *msg_ids, int n)
{
	Datum		values[3];

	values[0] = PointerGetDatum(construct_array(msg_ids, n, INT8OID, sizeof(int64),
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = Int32GetDatum(queue->dead_letter_queue_id);
	values[2] = TimestampTzGetDatum(GetCurrentTimestamp());

	if (queue->dead_letter_queue_id != 0)
	{
		RmsgPlanExecute(&move_to_dlq_plan, values, NULL, false, 0);
		RmsgWakeQueueAtCommit(queue->dead_letter_queue_id);
	}
	else
		RmsgPlanExecute(&keep_dead_plan, values, NULL, false, 0);
}

/*
 * Leases up to max ready messages into the result; returns how many.
 * Exhausted messages met on the way are dead-lettered and replaced.
 */
static int
TakeMessages(const RmsgQueue *queue, int max, int64 visibility,
			 ReturnSetInfo *rsinfo)
{
	int			taken = 0;

	while (taken < max)
	{
		TimestampTz now = GetCurrentTimestamp();
		Datum		args[5];
		Datum	   *exhausted;
		int			nexhausted = 0;

		args[0] = Int32GetDatum(queue->queue_id);
		args[1] = Int32GetDatum(max - taken);
		args[2] = TimestampTzGetDatum(now);
		args[3] = TimestampTzGetDatum(now + visibility);
		args[4] = Int32GetDatum(queue->max_deliveries);

		RmsgLeaseWriteBegin();
		RmsgPlanExecute(&take_plan, args, NULL, false, 0);
		RmsgLeaseWriteEnd();

		if (SPI_processed == 0)
			break;

		exhausted = palloc(sizeof(Datum) * SPI_processed);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	row = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			Datum		values[GET_RESULT_COLUMNS];
			bool		nulls[GET_RESULT_COLUMNS];
			bool		is_exhausted;

			for (int c = 0; c < GET_RESULT_COLUMNS - 1; c++)
				values[c] = SPI_getbinval(row, desc, c + 1, &nulls[c]);
			is_exhausted = DatumGetBool(SPI_getbinval(row, desc, 6, &nulls[5]));

			if (is_exhausted)
			{
				exhausted[nexhausted++] = values[0];
				continue;
			}
			/* data_token: deduplicated logging is not in this version */
			values[5] = (Datum) 0;
			nulls[5] = true;
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
			taken++;
		}

		if (nexhausted == 0)
			break;				/* the queue had no more ready messages */
		DeadLetter(queue, exhausted, nexhausted);
	}

	if (taken > 0)
		RmsgWakeQueueAtEnd(queue->queue_id);
	return taken;
}

/* When the next message of the queue becomes ready, or 0 if none is due. */
static TimestampTz
NextVisibleAt(const RmsgQueue *queue)
{
	Datum		args[2];
	bool		isnull;
	Datum		next;

	args[0] = Int32GetDatum(queue->queue_id);
	args[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	RmsgPlanExecute(&next_visible_plan, args, NULL, false, 1);
	next = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? 0 : DatumGetTimestampTz(next);
}

/*
 * rmsg.get(queue, max, visibility, wait)
 */
Datum
rmsg_get(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *queue_name = RmsgTextArg(fcinfo, 0, "queue name");
	int32		max;
	int64		visibility;
	int64		wait;
	TimestampTz deadline;
	RmsgQueue	queue;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("max must not be null")));
	max = PG_GETARG_INT32(1);
	if (max < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max must be at least 1, not %d", max)));
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("visibility must not be null")));
	visibility = RmsgIntervalArg(fcinfo, 2, "visibility", 0, true);
	wait = RmsgIntervalArg(fcinfo, 3, "wait", 0, true);
	if (wait > 0)
	{
		RmsgRequireShmem("rmsg.get with a wait");
		if (IsolationUsesXactSnapshot())
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("rmsg.get with a wait requires READ COMMITTED"),
					 errdetail("A transaction snapshot would never see messages committed while waiting.")));
	}

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	RmsgSpiConnect();
	queue = RmsgOpenQueue(queue_name, AccessShareLock);
	deadline = GetCurrentTimestamp() + wait;

	for (;;)
	{
		TimestampTz until;
		TimestampTz next;

		if (wait > 0)
			RmsgWaitPrepare(queue.queue_id);
		if (TakeMessages(&queue, max, visibility, rsinfo) > 0 || wait == 0)
			break;
		if (GetCurrentTimestamp() >= deadline)
			break;

		next = NextVisibleAt(&queue);
		until = (next != 0 && next < deadline) ? next : deadline;
		(void) RmsgWaitSleep(queue.queue_id, until);
	}
	if (wait > 0)
		RmsgWaitCancel();

	RmsgSpiFinish();
	return (Datum) 0;
}
