/*-------------------------------------------------------------------------
 *
 * get.c
 *	  rmsg.get: taking ready messages, long polling, dead-lettering.
 *
 * ready_scan.c finds the oldest ready messages of the queue (the ones
 * whose visible_at passed first; a message whose lease ran out keeps its
 * place, a message nacked with a delay goes to the back), locks them,
 * skipping rows other consumers have locked, as FOR UPDATE SKIP LOCKED
 * would, and leases them: deliveries + 1, lease_until = now + visibility.
 * So two consumers are never handed the same message while its lease runs,
 * and a consumer whose transaction rolls back hands its messages straight
 * back.
 *
 * A message found with its deliveries used up is not leased but
 * dead-lettered: moved to the queue's dead-letter queue, or, without one,
 * to rmsg.dead_message.  Then the get looks again, so dead messages never
 * cost a consumer an empty answer.
 *
 * Every message returned comes with a data token (tokens.c), so that the
 * consumer can put the same data elsewhere by reference.
 *
 * With a wait, the get sleeps on the queue's condition variable
 * (wakeup.c) until a commit makes a message ready, a delayed message or an
 * expired lease becomes ready, or the wait is over.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
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

/* The payload of a leased message: inline, or read from its payload row. */
static Datum
PayloadOf(const RmsgTaken *t)
{
	bytea	   *data;

	if (!t->inline_null)
		return t->inline_data;
	/* we hold the message, so no collection can have removed its row */
	data = RmsgReadPayload(t->payload_id);
	if (data == NULL)
		elog(ERROR, "payload " INT64_FORMAT " of message " INT64_FORMAT " is missing",
			 t->payload_id, t->msg_id);
	return PointerGetDatum(data);
}

/*
 * Leases up to max ready messages (ready_scan.c) and adds them to the
 * result, oldest-ready first; returns how many.  Exhausted messages met on
 * the way are dead-lettered and replaced.  found and exhausted have room
 * for max entries; the caller allocates them once for all passes of a wait.
 */
static int
TakeMessages(const RmsgQueue *queue, int max, int64 visibility,
			 RmsgTaken *found, Datum *exhausted, ReturnSetInfo *rsinfo)
{
	int			ntaken = 0;

	while (ntaken < max)
	{
		TimestampTz now = GetCurrentTimestamp();
		int			nfound;
		int			nexhausted = 0;

		RmsgLazyWriteBegin(RMSG_LAZY_LEASE);
		nfound = RmsgLeaseReadyMessages(queue->queue_id, now, now + visibility,
										queue->max_deliveries, max - ntaken, found);
		RmsgLazyWriteEnd();
		if (nfound == 0)
			break;

		for (int i = 0; i < nfound; i++)
		{
			RmsgTaken  *t = &found[i];
			Datum		values[GET_RESULT_COLUMNS];
			bool		nulls[GET_RESULT_COLUMNS] = {false, false, false, false, false, false};
			RmsgTokenData token;

			if (t->exhausted)
			{
				exhausted[nexhausted++] = PointerGetDatum(&t->tid);
				continue;
			}
			values[0] = Int64GetDatum(t->msg_id);
			values[1] = PayloadOf(t);
			values[2] = t->headers;
			nulls[2] = t->headers_null;
			values[3] = Int32GetDatum(t->deliveries);
			values[4] = TimestampTzGetDatum(t->enqueued_at);
			/* seed 004, step 503: the session may put this data by reference */
			token.payload_id = t->inline_null ? t->payload_id : 0;
			token.msg_id = t->inline_null ? 0 : t->msg_id;
			token.size = (int32) (toast_raw_datum_size(values[1]) - VARHDRSZ);
			values[5] = Int64GetDatum(RmsgIssueToken(&token));
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
			ntaken++;
		}

		if (nexhausted == 0)
			break;				/* the queue had no more ready messages */
		DeadLetter(queue, exhausted, nexhausted);
	}

	if (ntaken > 0)
		RmsgWakeQueueAtEnd(queue->queue_id);
	return ntaken;
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
	RmsgTaken  *found;
	Datum	   *exhausted;

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
	/* an empty get hands out no data: last_data_token() is then NULL */
	RmsgClearLastToken();
	found = palloc(sizeof(RmsgTaken) * max);
	exhausted = palloc(sizeof(Datum) * max);

	for (;;)
	{
		TimestampTz until;
		TimestampTz next;

		if (wait > 0)
			RmsgWaitPrepare(queue.queue_id);
		if (TakeMessages(&queue, max, visibility, found, exhausted, rsinfo) > 0 ||
			wait == 0)
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
