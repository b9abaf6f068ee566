/*-------------------------------------------------------------------------
 *
 * maintenance.c
 *	  What the worker does on a schedule rather than on a wakeup: collect
 *	  unreferenced payloads, and dead-letter messages nobody will get.
 *
 * A payload row is written once and shared by every message that carries
 * its data.  Nothing counts those references, so no ack or drop removes
 * the row: it stays until a collection finds no message referencing it any
 * more (dedup/payload.c).  The worker runs that collection periodically,
 * so that unreferenced payloads do not pile up where nobody calls
 * rmsg.collect_payloads.
 *
 * A message whose deliveries are used up is dead-lettered by the next get
 * on its queue that meets it.  On a queue nobody gets from any more (its
 * consumers crashed holding leases, say), that might never happen; the
 * sweep does it once the last lease has run out, as that get would have.
 * It takes each queue's name lock shared, as a get does, and locks the
 * messages FOR UPDATE SKIP LOCKED, passing over rows a consumer holds
 * (core/locks.h).
 *
 * The sweep runs in the caller's transaction; worker 0 gives it, and the
 * collection, a transaction each (worker.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "worker/worker.h"

/* How many exhausted messages of a queue are dead-lettered per statement. */
#define SWEEP_BATCH 1000

/* The queues that have exhausted messages ready at $1. */
static RmsgPlan exhausted_queues_plan = {
	"SELECT q.name AS queue_name FROM rmsg.queue q"
	" WHERE EXISTS (SELECT 1 FROM rmsg.message m"
	"                WHERE m.queue_id = q.queue_id AND m.visible_at <= $1"
	"                  AND m.deliveries >= q.max_deliveries"
	"                  AND (m.lease_until IS NULL OR m.lease_until <= $1))"
	" ORDER BY q.queue_id",
	1, {TIMESTAMPTZOID}
};

/* Exhausted messages of queue $1 ready at $2 ($3: its max_deliveries), locked. */
static RmsgPlan exhausted_messages_plan = {
	"SELECT msg_id FROM rmsg.message"
	" WHERE queue_id = $1 AND visible_at <= $2 AND deliveries >= $3"
	"   AND (lease_until IS NULL OR lease_until <= $2)"
	" LIMIT " CppAsString2(SWEEP_BATCH)
	" FOR UPDATE SKIP LOCKED",
	3, {INT4OID, TIMESTAMPTZOID, INT4OID}
};

/* Dead-letters the exhausted messages of one queue; returns how many. */
static int64
SweepQueue(const char *name)
{
	RmsgQueue	queue;
	int64		swept = 0;

	if (!RmsgTryOpenQueue(name, AccessShareLock, &queue))
		return 0;				/* dropped meanwhile */

	for (;;)
	{
		Datum		values[3];
		int64	   *ids;
		int			n;

		values[0] = Int32GetDatum(queue.queue_id);
		values[1] = TimestampTzGetDatum(GetCurrentTimestamp());
		values[2] = Int32GetDatum(queue.max_deliveries);
		RmsgPlanExecute(&exhausted_messages_plan, values, NULL, false, 0);
		n = (int) SPI_processed;
		if (n == 0)
			break;
		ids = palloc(sizeof(int64) * n);
		for (int i = 0; i < n; i++)
			ids[i] = DatumGetInt64(RmsgSpiNotNull(i, "msg_id"));
		swept += RmsgDeadLetterById(&queue, ids, n);
		pfree(ids);
		if (n < SWEEP_BATCH)
			break;
	}
	return swept;
}

/* Dead-letters exhausted messages whose last lease ran out; returns how many. */
int64
RmsgSweepExhausted(void)
{
	Datum		now = TimestampTzGetDatum(GetCurrentTimestamp());
	List	   *names = NIL;
	ListCell   *lc;
	int64		swept = 0;

	RmsgSpiConnect();
	RmsgPlanExecute(&exhausted_queues_plan, &now, NULL, false, 0);
	/* read them all first: each queue's sweep runs statements of its own */
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		/* in SPI's memory, which lasts until SPI_finish */
		names = lappend(names, RmsgSpiText(i, "queue_name"));
	}
	foreach(lc, names)
		swept += SweepQueue((const char *) lfirst(lc));
	RmsgSpiFinish();
	return swept;
}
