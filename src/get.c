/*-------------------------------------------------------------------------
 *
 * get.c
 *	  rmsg.get: taking ready messages, long polling, dead-lettering.
 *
 * ready_scan.c finds the oldest ready messages of the queue (the ones
 * whose visible_at passed first; a message whose lease ran out keeps its
 * place, a message nacked with a delay goes to the back) and locks them,
 * skipping rows other consumers have locked, as FOR UPDATE SKIP LOCKED
 * would; one statement then leases them: deliveries + 1, lease_until =
 * now + visibility.  So two consumers are never handed the same message
 * while its lease runs, and a consumer whose transaction rolls back hands
 * its messages straight back.
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
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "rmsg.h"

PG_FUNCTION_INFO_V1(rmsg_get);

#define GET_RESULT_COLUMNS 6

/*
 * Leases the messages ready_scan.c locked: $1 their tids, $2 lease end,
 * $3 max_deliveries.  Messages whose deliveries are used up are left alone
 * (and so keep their tids) for dead-lettering.  Leasing sets only unindexed
 * columns: a HOT update.
 */
static RmsgPlan lease_plan = {
	"UPDATE rmsg.message m SET lease_until = $2, deliveries = m.deliveries + 1"
	" WHERE m.ctid = ANY ($1) AND m.deliveries < $3"
	" RETURNING m.msg_id,"
	"        coalesce(m.inline_data,"
	"                 (SELECT p.data FROM rmsg.payload p WHERE p.payload_id = m.payload_id)),"
	"        m.headers, m.deliveries, m.enqueued_at",
	3, {TIDARRAYOID, TIMESTAMPTZOID, INT4OID}
};

/*
 * Dead-lettering, by the tids of the rows we locked.
 * Into the dead-letter queue, for a fresh start there: $1 tids, $2 dlq, $3 now.
 */
static RmsgPlan move_to_dlq_plan = {
	"UPDATE rmsg.message SET queue_id = $2, lease_until = NULL, deliveries = 0,"
	"       visible_at = $3"
	" WHERE ctid = ANY($1)",
	3, {TIDARRAYOID, INT4OID, TIMESTAMPTZOID}
};

/* No dead-letter queue: keep the message, payload reference and all. */
static RmsgPlan keep_dead_plan = {
	"WITH gone AS (DELETE FROM rmsg.message WHERE ctid = ANY($1) RETURNING *)"
	" INSERT INTO rmsg.dead_message (msg_id, queue_id, deliveries, enqueued_at,"
	"        died_at, payload_size, payload_id, headers, inline_data)"
	" SELECT msg_id, queue_id, deliveries, enqueued_at, $3, payload_size,"
	"        payload_id, headers, inline_data FROM gone",
	3, {TIDARRAYOID, INT4OID, TIMESTAMPTZOID}
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

/* An array of tids for a statement's ANY($n). */
static Datum
TidArray(Datum *tids, int n)
{
	return PointerGetDatum(construct_array(tids, n, TIDOID, sizeof(ItemPointerData),
										   false, TYPALIGN_SHORT));
}

/*
 * Dead-letters the given messages of a queue (their rows are locked by the
 * caller).  Durable like any other write: this is not a lease.
 */
static void
DeadLetter(const RmsgQueue *queue, Datum *tids, int n)
{
	Datum		values[3];

	values[0] = TidArray(tids, n);
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

typedef struct RankedId
{
	int64		msg_id;
	int			rank;
} RankedId;

static int
CompareRankedIds(const void *a, const void *b)
{
	int64		x = ((const RankedId *) a)->msg_id;
	int64		y = ((const RankedId *) b)->msg_id;

	return (x > y) - (x < y);
}

/* Position of msg_id among the candidates, by binary search. */
static int
RankOf(const RankedId *ranks, int n, int64 msg_id)
{
	RankedId	key = {msg_id, 0};
	RankedId   *hit = bsearch(&key, ranks, n, sizeof(RankedId), CompareRankedIds);

	if (hit == NULL)
		elog(ERROR, "leased message " INT64_FORMAT " was not a candidate", msg_id);
	return hit->rank;
}

/*
 * Locks (ready_scan.c) and leases up to max ready messages and adds them
 * to the result, oldest-ready first; returns how many.  Exhausted messages
 * met on the way are dead-lettered and replaced.
 */
static int
TakeMessages(const RmsgQueue *queue, int max, int64 visibility,
			 ReturnSetInfo *rsinfo)
{
	int			taken = 0;
	RmsgCandidate *candidates = palloc(sizeof(RmsgCandidate) * max);
	RankedId   *ranks = palloc(sizeof(RankedId) * max);
	HeapTuple  *rows = palloc(sizeof(HeapTuple) * max);
	Datum	   *tids = palloc(sizeof(Datum) * max);
	Datum	   *exhausted = palloc(sizeof(Datum) * max);

	while (taken < max)
	{
		TimestampTz now = GetCurrentTimestamp();
		int			ncandidates;
		int			nexhausted = 0;
		Datum		args[3];
		TupleDesc	desc;

		RmsgLeaseWriteBegin();
		ncandidates = RmsgLockReadyMessages(queue->queue_id, now, max - taken,
											candidates);
		if (ncandidates == 0)
		{
			RmsgLeaseWriteEnd();
			break;
		}
		for (int i = 0; i < ncandidates; i++)
		{
			tids[i] = PointerGetDatum(&candidates[i].tid);
			ranks[i].msg_id = candidates[i].msg_id;
			ranks[i].rank = i;
			rows[i] = NULL;
		}
		qsort(ranks, ncandidates, sizeof(RankedId), CompareRankedIds);

		args[0] = TidArray(tids, ncandidates);
		args[1] = TimestampTzGetDatum(now + visibility);
		args[2] = Int32GetDatum(queue->max_deliveries);
		RmsgPlanExecute(&lease_plan, args, NULL, false, 0);
		RmsgLeaseWriteEnd();

		/* the TID scan returns rows in tid order: put them back in line */
		desc = SPI_tuptable->tupdesc;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	row = SPI_tuptable->vals[i];
			bool		isnull;
			int64		msg_id = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));

			rows[RankOf(ranks, ncandidates, msg_id)] = row;
		}

		for (int i = 0; i < ncandidates; i++)
		{
			Datum		values[GET_RESULT_COLUMNS];
			bool		nulls[GET_RESULT_COLUMNS];

			if (rows[i] == NULL)
			{
				/* not leased: its deliveries are used up */
				exhausted[nexhausted++] = tids[i];
				continue;
			}
			for (int c = 0; c < GET_RESULT_COLUMNS - 1; c++)
				values[c] = SPI_getbinval(rows[i], desc, c + 1, &nulls[c]);
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
