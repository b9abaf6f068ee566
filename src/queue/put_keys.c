/*-------------------------------------------------------------------------
 *
 * put_keys.c
 *	  Idempotent puts: a dedup_id remembered for the queue's dedup_window.
 *
 * A producer that does not know whether its put committed (the connection
 * broke at COMMIT, a retry after a timeout) puts again with the same
 * dedup_id.  Within the queue's dedup_window (create_queue, 5 minutes by
 * default) of the first put, the repeat stores nothing and returns the
 * first put's msg_id, whether that message is still there or was taken
 * and acked since.  After the window, the same dedup_id puts a new message.
 *
 * The key table rmsg.put_key holds (queue_id, dedup_id) -> (msg_id, put_at)
 * under a primary key.  A put takes its msg_id first, then claims the key
 * with one INSERT ... ON CONFLICT DO UPDATE that replaces only an expired
 * key: a row returned means the put owns the key and inserts its message
 * under that msg_id; none means a live key, whose msg_id it returns.
 *
 * Two puts of one dedup_id that race: before it claims, a put takes the
 * key's lock (RMSG_LOCK_PUT_KEY, core/locks.h) until its transaction
 * ends, so the second waits for the first's transaction.  If the first
 * commits, the second finds its key live and returns its msg_id; if it
 * rolls back, the second inserts the key and its message.  The claim reads
 * with a snapshot taken after that wait, so under REPEATABLE READ too the
 * second finds a key committed after its transaction began (waiting on the
 * unique index alone would leave it a snapshot from before the first's
 * commit, and ON CONFLICT would then fail with a serialization error).
 * Nothing a repeat returns is a msg_id that did not commit.  Lock tags are
 * hashes of the queue and the first 63 bytes of the dedup_id: two ids that
 * share one only wait for each other.
 *
 * The worker's maintenance removes expired keys (RmsgRemoveExpiredPutKeys);
 * drop_queue removes a queue's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "queue/queue.h"


/*
 * Claims key ($1 queue_id, $2 dedup_id) for msg_id $3 put at $4, unless a
 * key put after $5 (now less the window) holds it.
 */
static RmsgPlan claim_plan = {
	"INSERT INTO rmsg.put_key AS k (queue_id, dedup_id, msg_id, put_at)"
	" VALUES ($1, $2, $3, $4)"
	" ON CONFLICT (queue_id, dedup_id) DO UPDATE"
	"   SET msg_id = excluded.msg_id, put_at = excluded.put_at"
	"   WHERE k.put_at <= $5"
	" RETURNING k.msg_id",
	5, {INT4OID, TEXTOID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID}
};

static RmsgPlan live_key_plan = {
	"SELECT msg_id FROM rmsg.put_key WHERE queue_id = $1 AND dedup_id = $2",
	2, {INT4OID, TEXTOID}
};

/* Keys older than their queue's window at $1. */
static RmsgPlan expired_keys_plan = {
	"DELETE FROM rmsg.put_key k USING rmsg.queue q"
	" WHERE k.queue_id = q.queue_id AND k.put_at + q.dedup_window <= $1",
	1, {TIMESTAMPTZOID}
};

/*
 * Claims the queue's key dedup_id for msg_id, put at `now`; returns msg_id
 * when the put owns the key, or the msg_id of the put that holds it within
 * the window.  Inside SPI.
 */
int64
RmsgClaimPutKey(const RmsgQueue *queue, const char *dedup_id, int64 msg_id,
				TimestampTz now)
{
	Datum		values[5];
	char		queue_key[16];

	snprintf(queue_key, sizeof(queue_key), "%d", queue->queue_id);
	(void) RmsgLockName(RMSG_LOCK_PUT_KEY, queue_key, dedup_id, ExclusiveLock, true);

	values[0] = Int32GetDatum(queue->queue_id);
	values[1] = CStringGetTextDatum(dedup_id);
	values[2] = Int64GetDatum(msg_id);
	values[3] = TimestampTzGetDatum(now);
	values[4] = TimestampTzGetDatum(now - queue->dedup_window);
	RmsgPlanExecute(&claim_plan, values, NULL, true, 0);
	if (SPI_processed == 1)
		return msg_id;

	/* a live key, locked by the statement above: its msg_id stays */
	RmsgPlanExecute(&live_key_plan, values, NULL, true, 1);
	if (SPI_processed != 1)
		elog(ERROR, "key \"%s\" of queue %d vanished while locked", dedup_id,
			 queue->queue_id);
	return DatumGetInt64(RmsgSpiNotNull(0, "msg_id"));
}

/* Removes every expired key; returns how many.  For the worker's maintenance. */
int64
RmsgRemoveExpiredPutKeys(void)
{
	Datum		now = TimestampTzGetDatum(GetCurrentTimestamp());
	int64		removed;

	RmsgSpiConnect();
	RmsgPlanExecute(&expired_keys_plan, &now, NULL, false, 0);
	removed = (int64) SPI_processed;
	RmsgSpiFinish();
	return removed;
}
