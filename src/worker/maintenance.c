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
 * Nothing indexes how often a message was delivered (that column changes
 * with every lease, which must stay a HOT update), so finding exhausted
 * messages means reading messages.  The sweep once read every message of
 * every queue on each pass: a backlog of two million messages cost the
 * worker a second of every ten.  Now each pass reads at most SWEEP_SCAN
 * messages along the ready index, from where the last pass stopped, and
 * starts again from the front once it reaches the end: a pass costs the
 * same whatever the backlog, and an exhausted message nobody gets is
 * dead-lettered within (messages / SWEEP_SCAN) passes.
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
#include "utils/datum.h"
#include "utils/timestamp.h"

#include "worker/worker.h"

/* How many messages one pass reads, at most. */
#define SWEEP_SCAN 50000

/*
 * Where the next pass starts: the ready index's key of the last message
 * the pass before read (worker 0's memory; after a restart, the front).
 */
static struct
{
	int32		queue_id;
	int16		priority;
	TimestampTz visible_at;
	int64		msg_id;
} sweep_from = {0, 0, DT_NOBEGIN, 0};

/*
 * The next SWEEP_SCAN messages ready at $5 after ($1, $2, $3, $4) in the
 * ready index's order, read as one range of it: the last one's key and how
 * many were read, and by queue the exhausted ones whose lease has run out.
 * One row per queue met (none when nothing was read).  The index passes
 * over delayed messages (and a group's waiting ones) itself, without
 * reading their rows: they cannot be exhausted before they are ready.
 */
static RmsgPlan exhausted_scan_plan = {
	"WITH slice AS MATERIALIZED ("
	"       SELECT m.queue_id, m.priority, m.visible_at, m.msg_id, l.deliveries, l.lease_until"
	"         FROM rmsg.message m LEFT JOIN rmsg.lease l ON l.msg_id = m.msg_id"
	"        WHERE (m.queue_id, m.priority, m.visible_at, m.msg_id) > ($1, $2, $3, $4)"
	"          AND m.visible_at <= $5"
	"        ORDER BY m.queue_id, m.priority, m.visible_at, m.msg_id"
	"        LIMIT " CppAsString2(SWEEP_SCAN) "),"
	" last AS (SELECT s.queue_id, s.priority, s.visible_at, s.msg_id FROM slice s"
	"           ORDER BY s.queue_id DESC, s.priority DESC, s.visible_at DESC, s.msg_id DESC"
	"           LIMIT 1)"
	" SELECT l.queue_id, l.priority, l.visible_at, l.msg_id,"
	"        (SELECT count(*) FROM slice) AS n, q.name AS queue_name,"
	"        (SELECT array_agg(s.msg_id) FROM slice s"
	"          WHERE s.queue_id = q.queue_id AND s.deliveries >= q.max_deliveries"
	"            AND (s.lease_until IS NULL OR s.lease_until <= $5)) AS exhausted"
	"   FROM last l"
	"   LEFT JOIN rmsg.queue q ON q.queue_id IN (SELECT s.queue_id FROM slice s)",
	5, {INT4OID, INT2OID, TIMESTAMPTZOID, INT8OID, TIMESTAMPTZOID}
};

/* Of the messages $2 of queue $1, those still exhausted at $4, locked. */
static RmsgPlan exhausted_lock_plan = {
	"SELECT m.msg_id FROM rmsg.message m JOIN rmsg.lease l ON l.msg_id = m.msg_id"
	" WHERE m.msg_id = ANY ($2) AND m.queue_id = $1 AND m.visible_at <= $4"
	"   AND l.deliveries >= $3 AND (l.lease_until IS NULL OR l.lease_until <= $4)"
	" FOR UPDATE OF m SKIP LOCKED",
	4, {INT4OID, INT8ARRAYOID, INT4OID, TIMESTAMPTZOID}
};

/* A queue with exhausted messages that a pass found. */
typedef struct Exhausted
{
	char	   *queue_name;
	Datum		msg_ids;		/* bigint[] */
} Exhausted;

/*
 * Dead-letters those of the queue's msg_ids that are still exhausted,
 * under the queue's name lock and their row locks; returns how many.
 */
static int64
SweepQueue(const Exhausted *e, TimestampTz now)
{
	RmsgQueue	queue;
	Datum		values[4];
	int64	   *ids;
	int			n;
	int64		swept;

	if (!RmsgTryOpenQueue(e->queue_name, AccessShareLock, &queue))
		return 0;				/* dropped meanwhile */
	values[0] = Int32GetDatum(queue.queue_id);
	values[1] = e->msg_ids;
	values[2] = Int32GetDatum(queue.max_deliveries);
	values[3] = TimestampTzGetDatum(now);
	RmsgPlanExecute(&exhausted_lock_plan, values, NULL, false, 0);
	n = (int) SPI_processed;
	if (n == 0)
		return 0;
	ids = palloc(sizeof(int64) * n);
	for (int i = 0; i < n; i++)
		ids[i] = DatumGetInt64(RmsgSpiNotNull(i, "msg_id"));
	swept = RmsgDeadLetterById(&queue, ids, n);
	pfree(ids);
	return swept;
}

/*
 * Dead-letters the exhausted messages whose last lease ran out among the
 * next SWEEP_SCAN messages; returns how many.
 */
int64
RmsgSweepExhausted(void)
{
	TimestampTz now = GetCurrentTimestamp();
	Datum		values[5];
	List	   *found = NIL;
	ListCell   *lc;
	int64		swept = 0;

	RmsgSpiConnect();
	values[0] = Int32GetDatum(sweep_from.queue_id);
	values[1] = Int16GetDatum(sweep_from.priority);
	values[2] = TimestampTzGetDatum(sweep_from.visible_at);
	values[3] = Int64GetDatum(sweep_from.msg_id);
	values[4] = TimestampTzGetDatum(now);
	RmsgPlanExecute(&exhausted_scan_plan, values, NULL, false, 0);
	if (SPI_processed == 0 || DatumGetInt64(RmsgSpiNotNull(0, "n")) < SWEEP_SCAN)
	{
		/* the end of the index: the next pass starts from the front */
		sweep_from.queue_id = 0;
		sweep_from.priority = 0;
		sweep_from.visible_at = DT_NOBEGIN;
		sweep_from.msg_id = 0;
	}
	else
	{
		sweep_from.queue_id = DatumGetInt32(RmsgSpiNotNull(0, "queue_id"));
		sweep_from.priority = DatumGetInt16(RmsgSpiNotNull(0, "priority"));
		sweep_from.visible_at = DatumGetTimestampTz(RmsgSpiNotNull(0, "visible_at"));
		sweep_from.msg_id = DatumGetInt64(RmsgSpiNotNull(0, "msg_id"));
	}
	/* read them all first: each queue's sweep runs statements of its own */
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		ids = RmsgSpiValue(i, "exhausted", &isnull);
		Exhausted  *e;

		if (isnull)
			continue;
		/* in SPI's memory, which lasts until SPI_finish */
		e = palloc(sizeof(Exhausted));
		e->queue_name = RmsgSpiText(i, "queue_name");
		e->msg_ids = datumCopy(ids, false, -1);
		found = lappend(found, e);
	}
	foreach(lc, found)
		swept += SweepQueue((const Exhausted *) lfirst(lc), now);
	RmsgSpiFinish();
	return swept;
}
