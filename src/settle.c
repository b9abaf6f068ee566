/*-------------------------------------------------------------------------
 *
 * settle.c
 *	  rmsg.ack, rmsg.nack and rmsg.extend: what a consumer does with a
 *	  message it was handed.
 *
 * They apply to the messages of queues and of instances alike: msg_ids are
 * unique across both.
 *
 * An ack removes the message, live (remove.c), dead or an instance's; a payload row it
 * referenced stays until rmsg.collect_payloads finds it unreferenced
 * (payload.c).  An ack commits under the session's synchronous_commit like
 * any write.  A nack or an extend only moves the end of a lease, so it
 * commits lazily when it is all its transaction wrote (commit_mode.c).
 * Both apply only to a message in flight: its lease_until still ahead.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/timestamp.h"

#include "rmsg.h"

PG_FUNCTION_INFO_V1(rmsg_ack);
PG_FUNCTION_INFO_V1(rmsg_ack_many);
PG_FUNCTION_INFO_V1(rmsg_nack);
PG_FUNCTION_INFO_V1(rmsg_extend);

/* Not a queue's live message: a dead one, or an instance's. */
static RmsgPlan ack_other_plan = {
	"WITH dead AS (DELETE FROM rmsg.dead_message WHERE msg_id = $1 RETURNING 1),"
	"     instance AS (DELETE FROM rmsg.instance_message WHERE msg_id = $1 RETURNING 1)"
	" SELECT (SELECT count(*) FROM dead) + (SELECT count(*) FROM instance)",
	1, {INT8OID}
};

/* Returns how many messages went. */
static RmsgPlan ack_many_plan = {
	"WITH live AS (DELETE FROM rmsg.message WHERE msg_id = ANY($1) RETURNING 1),"
	"     dead AS (DELETE FROM rmsg.dead_message WHERE msg_id = ANY($1) RETURNING 1),"
	"     instance AS (DELETE FROM rmsg.instance_message WHERE msg_id = ANY($1) RETURNING 1)"
	" SELECT (SELECT count(*) FROM live) + (SELECT count(*) FROM dead)"
	"      + (SELECT count(*) FROM instance)",
	1, {INT8ARRAYOID}
};

/*
 * $1 msg_id, $2 now, $3 now + delay.  Without a delay the message keeps its
 * place in line (and the update stays HOT); with one it goes to the back.
 */
static RmsgPlan nack_plan = {
	"UPDATE rmsg.message SET lease_until = NULL,"
	"       visible_at = CASE WHEN $3 > $2 THEN $3 ELSE visible_at END"
	" WHERE msg_id = $1 AND lease_until > $2 RETURNING queue_id",
	3, {INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID}
};

/* $1 msg_id, $2 now, $3 new lease end */
static RmsgPlan extend_plan = {
	"UPDATE rmsg.message SET lease_until = $3"
	" WHERE msg_id = $1 AND lease_until > $2 RETURNING queue_id",
	3, {INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID}
};

/*
 * An instance's message has no place in line to lose, and must keep it:
 * with a delay, the lease just runs until then, which holds the instance's
 * line (receive.c) as its order requires.  $1 msg_id, $2 now, $3 now + delay
 */
static RmsgPlan instance_nack_plan = {
	"UPDATE rmsg.instance_message"
	"   SET lease_until = CASE WHEN $3 > $2 THEN $3 END"
	" WHERE msg_id = $1 AND lease_until > $2",
	3, {INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID}
};

static RmsgPlan instance_extend_plan = {
	"UPDATE rmsg.instance_message SET lease_until = $3"
	" WHERE msg_id = $1 AND lease_until > $2",
	3, {INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID}
};

/*
 * rmsg.ack(msg_id): true when the message existed.  A queue's live message
 * is deleted directly (remove.c), the hot path; others by statement.
 */
Datum
rmsg_ack(PG_FUNCTION_ARGS)
{
	int64		msg_id = PG_GETARG_INT64(0);
	bool		found;

	RmsgSpiConnect();
	found = RmsgDeleteMessage(msg_id);
	if (!found)
	{
		Datum		arg = Int64GetDatum(msg_id);
		bool		isnull;

		RmsgPlanExecute(&ack_other_plan, &arg, NULL, false, 0);
		found = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) > 0;
	}
	RmsgSpiFinish();
	PG_RETURN_BOOL(found);
}

/* rmsg.ack(msg_ids[]): how many of them existed */
Datum
rmsg_ack_many(PG_FUNCTION_ARGS)
{
	Datum		msg_ids = PG_GETARG_DATUM(0);
	bool		isnull;
	int64		count;

	RmsgSpiConnect();
	RmsgPlanExecute(&ack_many_plan, &msg_ids, NULL, false, 0);
	count = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	RmsgSpiFinish();
	PG_RETURN_INT32((int32) count);
}

/*
 * Moves the end of a running lease to now + interval; false when the message
 * is not in flight.  A nack also ends the lease, so the message is ready
 * again at that time, and consumers waiting for it are woken.
 */
static bool
MoveLeaseEnd(FunctionCallInfo fcinfo, RmsgPlan *plan, RmsgPlan *instance_plan,
			 int64 interval, bool wake)
{
	TimestampTz now = GetCurrentTimestamp();
	Datum		values[3];
	bool		isnull;
	int32		queue_id;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("msg_id must not be null")));
	values[0] = PG_GETARG_DATUM(0);
	values[1] = TimestampTzGetDatum(now);
	values[2] = TimestampTzGetDatum(now + interval);

	RmsgSpiConnect();
	RmsgLazyWriteBegin(RMSG_LAZY_LEASE);
	RmsgPlanExecute(plan, values, NULL, false, 0);
	if (SPI_processed == 0)
	{
		/* an instance's message, if any: nobody waits on those */
		bool		moved;

		RmsgPlanExecute(instance_plan, values, NULL, false, 0);
		moved = SPI_processed > 0;
		RmsgLazyWriteEnd();
		RmsgSpiFinish();
		return moved;
	}
	RmsgLazyWriteEnd();
	queue_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	RmsgSpiFinish();

	if (wake)
		RmsgWakeQueueAtCommit(queue_id);
	return true;
}

/* rmsg.nack(msg_id, delay) */
Datum
rmsg_nack(PG_FUNCTION_ARGS)
{
	int64		delay = RmsgIntervalArg(fcinfo, 1, "delay", 0, true);

	PG_RETURN_BOOL(MoveLeaseEnd(fcinfo, &nack_plan, &instance_nack_plan, delay, true));
}

/* rmsg.extend(msg_id, visibility) */
Datum
rmsg_extend(PG_FUNCTION_ARGS)
{
	int64		visibility;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("visibility must not be null")));
	visibility = RmsgIntervalArg(fcinfo, 1, "visibility", 0, false);
	PG_RETURN_BOOL(MoveLeaseEnd(fcinfo, &extend_plan, &instance_extend_plan, visibility, false));
}
