/*-------------------------------------------------------------------------
 *
 * dispatch_queue.c
 *	  The worker's work on a subscribed queue: one transaction takes up to
 *	  the subscription's batch of ready messages and calls the handler for
 *	  each of them.
 *
 * The messages are leased as a get leases them (queue/get.c), so exhausted
 * ones are dead-lettered on the way and two workers never take the same
 * one: each holds the rows it leased locked until it commits.  Then, per
 * message:
 *	- the handler returns: the message is acked, in the same transaction;
 *	- the handler fails (handler_call.c): its work is undone, and the
 *	  message is dead-lettered if this was its last allowed delivery, or
 *	  else given back to be tried again later (exponential backoff).  The
 *	  error is written to the subscription's row.
 * One commit covers the whole batch.  A crash before it loses nothing: the
 * lease, the handler's work and the ack all roll back, and the messages
 * are handled again.  A crash after it repeats nothing.
 *
 * Locks: the queue's name lock, shared, as a put or a get takes it, so that
 * drop_queue waits for the transaction to end; and the row locks of the
 * leased messages (core/locks.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/timestamp.h"

#include "worker/worker.h"

/*
 * $1 msg_id, $2 when to try again, $3 the deliveries of the worker's lease.
 * The message goes to the back of its line.
 */
static RmsgPlan give_back_plan = {
	"WITH ended AS (UPDATE rmsg.lease SET lease_until = NULL"
	"                WHERE msg_id = $1 AND deliveries = $3 RETURNING msg_id)"
	" UPDATE rmsg.message m SET visible_at = $2 FROM ended e WHERE m.msg_id = e.msg_id",
	3, {INT8OID, TIMESTAMPTZOID, INT4OID}
};

/*
 * Handles up to max (h->batch, or less under flow control: flow.c) ready
 * messages of the subscribed queue in the current transaction, counting what happened into *counts.  Returns how
 * many messages it took (0 when the queue is gone), or RMSG_HANDLERS_STALE
 * (worker.h); *retry_at is moved earlier to the first retry it scheduled.
 */
int
RmsgDispatchQueue(const RmsgHandler *h, int max, uint64 generation,
				  RmsgWorkCounts *counts, TimestampTz *retry_at)
{
	RmsgQueue	queue;
	RmsgTaken  *taken;
	int			ntaken;

	RmsgSpiConnect();
	if (!RmsgTryOpenQueue(h->target, AccessShareLock, &queue) ||
		queue.queue_id != h->queue_id)
	{
		/* dropped, or dropped and made again, since we read the handlers */
		RmsgSpiFinish();
		return 0;
	}

	taken = palloc(sizeof(RmsgTaken) * max);
	ntaken = RmsgTakeMessages(&queue, max, RMSG_WORKER_LEASE_USECS, taken);
	/* taken after an unsubscribe or a new handler committed? */
	if (ntaken > 0 && RmsgHandlerGeneration() != generation)
	{
		RmsgSpiFinish();
		return RMSG_HANDLERS_STALE;
	}

	for (int i = 0; i < ntaken; i++)
	{
		RmsgTaken  *t = &taken[i];
		Datum		args[RMSG_HANDLER_MAX_ARGS];
		bool		nulls[RMSG_HANDLER_MAX_ARGS] = {false};
		char	   *error = NULL;

		CHECK_FOR_INTERRUPTS();
		args[0] = RmsgTakenPayload(t);
		args[1] = t->headers;
		nulls[1] = t->headers_null;
		args[2] = Int64GetDatum(t->msg_id);

		if (RmsgCallHandler(h, h->queue_id, args, nulls, &error))
		{
			int32		queue_id;

			/* our lease: we hold its row locked, so it cannot have run out */
			if (RmsgDeleteMessage(t->msg_id, &t->receipt, 0, false, &queue_id) !=
				RMSG_REMOVE_DELETED)
				elog(ERROR, "message " INT64_FORMAT " is no longer leased by this worker",
					 t->msg_id);
			counts->processed++;
			continue;
		}

		counts->failed++;
		RmsgHandlerFailed(h, NULL, t->msg_id, t->deliveries, queue.max_deliveries, error);
		if (t->deliveries >= queue.max_deliveries)
			counts->dead_lettered += RmsgDeadLetterById(&queue, &t->msg_id, 1);
		else
		{
			Datum		values[3];
			TimestampTz again = RmsgRetryAt(t->deliveries, retry_at);

			values[0] = Int64GetDatum(t->msg_id);
			values[1] = TimestampTzGetDatum(again);
			values[2] = Int32GetDatum(t->deliveries);
			RmsgPlanExecute(&give_back_plan, values, NULL, false, 0);
			/* a new entry in the queue's ready index, at its retry time */
			RmsgReadyHintLower(queue.queue_id, t->priority, again);
			counts->retried++;
		}
	}

	RmsgSpiFinish();
	return ntaken;
}
