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
 * back.  A lease is a write a crash may lose without harm (the message is
 * then ready again, as if the lease had run out), so a transaction that
 * wrote nothing else commits without waiting for its WAL to be flushed
 * (core/commit_mode.c).
 *
 * A message found with its deliveries used up is not leased but
 * dead-lettered (dead_letter.c).  Then the get looks again, so dead
 * messages never cost a consumer an empty answer.
 *
 * Every message returned comes with a data token (dedup/tokens.c), so that
 * the consumer can put the same data elsewhere by reference, and a
 * receipt: the number that names this lease (receipts.c), so that an ack,
 * nack or extend that gives it acts only while this lease holds
 * (lease.c).  The role getting must hold the queue's get privilege.
 *
 * With a wait, the get sleeps on the queue's condition variable
 * (long_poll.c) until a commit makes a message ready, a delayed message or
 * an expired lease becomes ready, or the wait is over.  A paused queue
 * (pause.c) hands out nothing, and a get waiting on it sleeps until its
 * resume or the end of the wait.
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

#include "queue/queue.h"

PG_FUNCTION_INFO_V1(rmsg_get);

#define GET_RESULT_COLUMNS 7

/*
 * When the next delayed message or running lease of the queue comes due.
 * Only future times: a ready message that another consumer has locked is
 * that consumer's, and its commit or rollback wakes us.  $1 queue_id,
 * $2 now.
 */
static RmsgPlan next_visible_plan = {
	"SELECT least(min(m.visible_at) FILTER (WHERE m.visible_at > $2),"
	"             min(l.lease_until) FILTER (WHERE l.lease_until > $2))"
	"       AS next_visible_at"
	"  FROM rmsg.message m LEFT JOIN rmsg.lease l ON l.msg_id = m.msg_id"
	" WHERE m.queue_id = $1",
	2, {INT4OID, TIMESTAMPTZOID}
};

/* The payload of a leased message: inline, or read from its payload row. */
Datum
RmsgTakenPayload(const RmsgTaken *t)
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
 * Leases up to max ready messages of the queue (ready_scan.c) into taken[],
 * oldest-ready first; returns how many.  Exhausted messages met on the way
 * are dead-lettered and replaced.  taken has room for max entries.  Used by
 * rmsg.get and by the worker (worker/dispatch_queue.c).
 */
int
RmsgTakeMessages(const RmsgQueue *queue, int max, int64 visibility,
				 RmsgTaken *taken)
{
	int			ntaken = 0;
	ItemPointerData *tids;
	Datum	   *exhausted;

	if (queue->paused)
		return 0;				/* pause.c: nothing is handed out */
	tids = palloc(sizeof(ItemPointerData) * max);
	exhausted = palloc(sizeof(Datum) * max);
	while (ntaken < max)
	{
		TimestampTz now = GetCurrentTimestamp();
		RmsgTaken  *found = &taken[ntaken];
		int			nfound;
		int			nexhausted = 0;
		int			nleased = 0;

		RmsgLazyWriteBegin(RMSG_LAZY_LEASE);
		nfound = RmsgLeaseReadyMessages(queue->queue_id, now,
										RmsgTimeAfter(now, visibility),
										queue->max_deliveries, max - ntaken, found);
		RmsgLazyWriteEnd();
		if (nfound == 0)
			break;

		/* leased ones to the front, exhausted ones aside by their tids */
		for (int i = 0; i < nfound; i++)
		{
			if (found[i].exhausted)
			{
				tids[nexhausted] = found[i].tid;
				exhausted[nexhausted] = PointerGetDatum(&tids[nexhausted]);
				nexhausted++;
			}
			else
				found[nleased++] = found[i];
		}
		ntaken += nleased;

		if (nexhausted == 0)
			break;				/* the queue had no more ready messages */
		RmsgDeadLetterLocked(queue, exhausted, nexhausted);
	}

	if (ntaken > 0)
		RmsgWakeQueueAtEnd(queue->queue_id);
	pfree(tids);
	pfree(exhausted);
	return ntaken;
}

/* Adds leased messages to get's result, each with a data token. */
static void
ReturnMessages(RmsgTaken *taken, int n, ReturnSetInfo *rsinfo)
{
	for (int i = 0; i < n; i++)
	{
		RmsgTaken  *t = &taken[i];
		Datum		values[GET_RESULT_COLUMNS];
		bool		nulls[GET_RESULT_COLUMNS] = {false, false, false, false, false, false, false};
		RmsgTokenData token;
		bytea	   *data;

		values[0] = Int64GetDatum(t->msg_id);
		data = DatumGetByteaPP(RmsgTakenPayload(t));
		values[1] = PointerGetDatum(data);
		values[2] = t->headers;
		nulls[2] = t->headers_null;
		values[3] = Int32GetDatum(t->deliveries);
		values[4] = TimestampTzGetDatum(t->enqueued_at);
		/*
		 * Remember where this data is logged, so that the session may put
		 * it again by reference instead of writing it once more.
		 */
		token.payload_id = t->inline_null ? t->payload_id : 0;
		token.msg_id = t->inline_null ? 0 : t->msg_id;
		token.size = (int32) VARSIZE_ANY_EXHDR(data);
		token.hash_known = true;
		token.hash = RmsgContentHash(data);
		values[5] = Int64GetDatum(RmsgIssueToken(&token));
		values[6] = Int64GetDatum(t->receipt);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
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
	next = RmsgSpiValue(0, "next_visible_at", &isnull);
	return isnull ? 0 : DatumGetTimestampTz(next);
}

/*
 * rmsg.get(queue, max, visibility, wait)
 */
Datum
rmsg_get(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *queue_name;
	int32		max;
	int64		visibility;
	int64		wait;
	TimestampTz deadline;
	RmsgQueue	queue;
	RmsgTaken  *taken;

	RmsgEnter("rmsg.get", true);
	queue_name = RmsgTextArg(fcinfo, 0, "queue name");
	max = RmsgCountArg(fcinfo, 1, "max", RMSG_MAX_BATCH);
	visibility = RmsgVisibilityArg(fcinfo, 2);
	wait = RmsgWaitCeiling(RmsgIntervalArg(fcinfo, 3, "wait", 0, true));
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
	queue = RmsgOpenQueueFor(queue_name, AccessShareLock, RMSG_GET);
	RmsgRefuseRemoteQueue(&queue, queue_name, "rmsg.get");
	deadline = RmsgTimeAfter(GetCurrentTimestamp(), wait);
	/* an empty get hands out no data: last_data_token() is then NULL */
	RmsgClearLastToken();
	taken = palloc(sizeof(RmsgTaken) * max);

	for (;;)
	{
		TimestampTz until;
		TimestampTz next;
		int			ntaken;

		if (wait > 0)
			RmsgWaitPrepare(queue.queue_id);
		ntaken = RmsgTakeMessages(&queue, max, visibility, taken);
		if (ntaken > 0)
		{
			ReturnMessages(taken, ntaken, rsinfo);
			break;
		}
		if (wait == 0)
			break;
		if (GetCurrentTimestamp() >= deadline)
			break;

		/* a paused queue has nothing due: only its resume wakes us */
		next = queue.paused ? 0 : NextVisibleAt(&queue);
		until = (next != 0 && next < deadline) ? next : deadline;
		(void) RmsgWaitSleep(queue.queue_id, until);

		/*
		 * A pause or resume may have committed while we slept: it bumped
		 * the catalog generation, so opening the queue again (from the
		 * cache otherwise) reads the row afresh.  We hold its name lock
		 * already, so no check before the lock is owed.
		 */
		queue = RmsgOpenQueue(queue_name, AccessShareLock);
		RmsgRequireRights(RMSG_QUEUE, queue_name, queue.rights, RMSG_GET);
	}
	if (wait > 0)
		RmsgWaitCancel();

	RmsgSpiFinish();
	return (Datum) 0;
}
