/*-------------------------------------------------------------------------
 *
 * dispatch_instance.c
 *	  The worker's work on instances: one transaction takes the head
 *	  message of one instance that has a handler and calls the handler for
 *	  it.
 *
 * An instance is one conversation whose messages must be handled one at a
 * time, in the order they arrived; while it recovers, only its recovery
 * messages may be handled, and its normal ones (those that arrived before
 * the recovery began as well as since) wait until it completes.
 *
 * The message is received as rmsg.receive_any would receive it
 * (instance/receive.c): the next instance round-robin whose line no other
 * receiver holds, in recovery only its recovery messages, never while a
 * message of the instance is in flight.  The instance's take lock
 * (core/locks.h) is held until the transaction ends, so no two workers
 * handle one instance at once, and one message at a time keeps the line's
 * order: the messages deferred while the instance recovered are handled
 * first once it completes, in arrival order.
 *
 * On success the message is acked in the handler's transaction.  On
 * failure it keeps its place at the head: its lease is set to run out when
 * it is to be tried again (exponential backoff), which holds the line until
 * then, as a nack with a delay does.  Instance messages have no
 * max_deliveries: dead-lettering one would break its conversation's order,
 * so a message that keeps failing holds its instance until an operator
 * acks it (its error is in rmsg.handlers and the log).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "worker/worker.h"

/* $1 msg_id, $2 the deliveries of the worker's lease */
static RmsgPlan ack_plan = {
	"DELETE FROM rmsg.instance_message WHERE msg_id = $1 AND deliveries = $2",
	2, {INT8OID, INT4OID}
};

/* $1 msg_id, $2 when to try again, $3 the deliveries of the worker's lease */
static RmsgPlan hold_plan = {
	"UPDATE rmsg.instance_message SET lease_until = $2 WHERE msg_id = $1 AND deliveries = $3",
	3, {INT8OID, TIMESTAMPTZOID, INT4OID}
};

/*
 * The handler of instance (id, name): the one of the longest prefix of the
 * name among the handlers whose role may receive from the instance, or
 * NULL.  A handler registered by a role without that right is passed over.
 */
static const RmsgHandler *
HandlerFor(int64 instance_id, const char *name, List *handlers)
{
	const RmsgHandler *best = NULL;
	ListCell   *lc;

	foreach(lc, handlers)
	{
		const RmsgHandler *h = (const RmsgHandler *) lfirst(lc);
		size_t		len = strlen(h->target);

		if (h->for_instances && strncmp(name, h->target, len) == 0 &&
			(best == NULL || len > strlen(best->target)) &&
			RmsgHandlerMayTake(h, instance_id))
			best = h;
	}
	return best;
}

/*
 * Whether the instance's messages are ours to handle now.  When its handler
 * cannot be called (worker.c), they wait: a shorter prefix's handler does
 * not stand in for it.
 */
static bool
HasHandler(int64 instance_id, const char *name, void *arg)
{
	const RmsgHandler *h = HandlerFor(instance_id, name, (List *) arg);

	return h != NULL && h->usable;
}

/*
 * Handles the head message of the next instance with a handler in the
 * current transaction, counting into *counts.  Returns 1, 0 when no
 * instance had a message to take, or RMSG_HANDLERS_STALE (worker.h).
 * *cursor is where the round-robin goes on; *retry_at is moved earlier to
 * a retry this schedules.
 */
int
RmsgDispatchInstance(List *handlers, uint64 generation, int64 *cursor,
					 RmsgWorkCounts *counts, TimestampTz *retry_at)
{
	RmsgInstanceMessage m;
	const RmsgHandler *h;
	Datum		args[RMSG_HANDLER_MAX_ARGS];
	bool		nulls[RMSG_HANDLER_MAX_ARGS] = {false};
	char	   *error = NULL;
	Datum		values[3];

	m.visibility = RMSG_WORKER_LEASE_USECS;
	if (!RmsgTakeInstanceMessage(cursor, HasHandler, handlers, &m))
		return 0;
	/* taken after a handler change committed: it may not be the right one */
	if (RmsgHandlerGeneration() != generation)
		return RMSG_HANDLERS_STALE;
	h = HandlerFor(m.instance_id, m.instance, handlers);

	args[0] = CStringGetTextDatum(m.instance);
	args[1] = m.payload;
	args[2] = m.kind;
	args[3] = m.headers;
	nulls[3] = m.headers_null;
	args[4] = Int64GetDatum(m.msg_id);

	values[0] = Int64GetDatum(m.msg_id);
	RmsgSpiConnect();
	if (RmsgCallHandler(h, m.instance_id, args, nulls, &error))
	{
		values[1] = Int32GetDatum(m.deliveries);
		RmsgPlanExecute(&ack_plan, values, NULL, false, 0);
		if (SPI_processed != 1)
			elog(ERROR, "message " INT64_FORMAT " is no longer leased by this worker",
				 m.msg_id);
		counts->processed++;
	}
	else
	{
		counts->failed++;
		counts->retried++;
		RmsgHandlerFailed(h, m.instance, m.msg_id, m.deliveries, 0, error);
		values[1] = TimestampTzGetDatum(RmsgRetryAt(m.deliveries, retry_at));
		values[2] = Int32GetDatum(m.deliveries);
		RmsgPlanExecute(&hold_plan, values, NULL, false, 0);
	}
	RmsgSpiFinish();
	return 1;
}
