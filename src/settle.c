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
 * Rights.  A message of a queue the role may not get from (or of an
 * instance it may not receive from) is, for that role, no message at all:
 * these functions return false for it and touch nothing, not even a lock.
 *
 * Receipts.  get and receive hand out a receipt with each lease
 * (receipts.c).  Given one, these functions act only while that lease
 * holds: the message is in flight under that very lease, not one another
 * consumer took after it ran out, and not one given back by a nack.  They
 * read the message's lease first, compare its receipt, and then change the
 * row only if it still has that lease (the same deliveries and visible_at)
 * and it has not run out.  A stale receipt changes nothing, returns false
 * and is counted (rmsg.queues, rmsg.log_stats).  Without a receipt they act
 * on whatever lease the message has, as in version 1.0.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "rmsg.h"

PG_FUNCTION_INFO_V1(rmsg_ack);
PG_FUNCTION_INFO_V1(rmsg_ack_receipt);
PG_FUNCTION_INFO_V1(rmsg_ack_many);
PG_FUNCTION_INFO_V1(rmsg_ack_many_receipts);
PG_FUNCTION_INFO_V1(rmsg_nack);
PG_FUNCTION_INFO_V1(rmsg_extend);

/*
 * Where a message that is not a live queue message is: dead, or an
 * instance's, with what names its lease.
 */
static RmsgPlan where_plan = {
	"SELECT false AS of_instance, queue_id::bigint AS owner_id, deliveries,"
	"       NULL::timestamptz AS visible_at"
	"  FROM rmsg.dead_message WHERE msg_id = $1"
	" UNION ALL"
	" SELECT true, instance_id, deliveries, NULL FROM rmsg.instance_message WHERE msg_id = $1",
	1, {INT8OID}
};

/* Where a message in flight is: a queue's or an instance's, and its lease. */
static RmsgPlan where_leased_plan = {
	"SELECT false AS of_instance, queue_id::bigint AS owner_id, deliveries, visible_at"
	"  FROM rmsg.message WHERE msg_id = $1"
	" UNION ALL"
	" SELECT true, instance_id, deliveries, NULL FROM rmsg.instance_message WHERE msg_id = $1",
	1, {INT8OID}
};

/* $1 msg_id, $2 its queue */
static RmsgPlan ack_dead_plan = {
	"DELETE FROM rmsg.dead_message WHERE msg_id = $1 AND queue_id = $2",
	2, {INT8OID, INT4OID}
};

/*
 * $1 msg_id, $2 its instance, $3 the deliveries of the receipt's lease or
 * NULL, $4 now
 */
static RmsgPlan ack_instance_plan = {
	"DELETE FROM rmsg.instance_message"
	" WHERE msg_id = $1 AND instance_id = $2"
	"   AND ($3::int IS NULL OR (deliveries = $3 AND lease_until > $4))",
	4, {INT8OID, INT8OID, INT4OID, TIMESTAMPTZOID}
};

/*
 * The lease changes.  $1 msg_id, $2 now, $3 now + interval, $4 the queue or
 * instance, $5 and $6 the deliveries and visible_at of the receipt's lease,
 * or NULL.  A nack ends the lease: without a delay the message keeps its
 * place in line (and the update stays HOT); with one it goes to the back.
 */
static RmsgPlan nack_plan = {
	"UPDATE rmsg.message SET lease_until = NULL,"
	"       visible_at = CASE WHEN $3 > $2 THEN $3 ELSE visible_at END"
	" WHERE msg_id = $1 AND queue_id = $4 AND lease_until > $2"
	"   AND ($5::int IS NULL OR (deliveries = $5 AND visible_at = $6))",
	6, {INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID, INT4OID, TIMESTAMPTZOID}
};

static RmsgPlan extend_plan = {
	"UPDATE rmsg.message SET lease_until = $3"
	" WHERE msg_id = $1 AND queue_id = $4 AND lease_until > $2"
	"   AND ($5::int IS NULL OR (deliveries = $5 AND visible_at = $6))",
	6, {INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID, INT4OID, TIMESTAMPTZOID}
};

/*
 * An instance's message has no place in line to lose, and must keep it:
 * with a delay, the lease just runs until then, which holds the instance's
 * line (receive.c) as its order requires.  ($6 is not used: an instance
 * message's lease is named by its deliveries alone.)
 */
static RmsgPlan instance_nack_plan = {
	"UPDATE rmsg.instance_message"
	"   SET lease_until = CASE WHEN $3 > $2 THEN $3 END"
	" WHERE msg_id = $1 AND instance_id = $4 AND lease_until > $2"
	"   AND ($5::int IS NULL OR deliveries = $5) AND $6::timestamptz IS NULL",
	6, {INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID, INT4OID, TIMESTAMPTZOID}
};

static RmsgPlan instance_extend_plan = {
	"UPDATE rmsg.instance_message SET lease_until = $3"
	" WHERE msg_id = $1 AND instance_id = $4 AND lease_until > $2"
	"   AND ($5::int IS NULL OR deliveries = $5) AND $6::timestamptz IS NULL",
	6, {INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID, INT4OID, TIMESTAMPTZOID}
};

/* What the lookups say of a message: whose it is, and its lease. */
typedef struct MessageWhere
{
	bool		of_instance;
	int64		owner_id;		/* its queue or instance */
	int32		deliveries;
	TimestampTz visible_at;		/* a queue message's; 0 for others */
} MessageWhere;

/* Reads the first row of where_plan or where_leased_plan. */
static void
ReadWhere(MessageWhere *where)
{
	HeapTuple	row = SPI_tuptable->vals[0];
	TupleDesc	desc = SPI_tuptable->tupdesc;
	bool		isnull;
	Datum		visible_at;

	where->of_instance = DatumGetBool(SPI_getbinval(row, desc, SPI_fnumber(desc, "of_instance"), &isnull));
	where->owner_id = DatumGetInt64(SPI_getbinval(row, desc, SPI_fnumber(desc, "owner_id"), &isnull));
	where->deliveries = DatumGetInt32(SPI_getbinval(row, desc, SPI_fnumber(desc, "deliveries"), &isnull));
	visible_at = SPI_getbinval(row, desc, SPI_fnumber(desc, "visible_at"), &isnull);
	where->visible_at = isnull ? 0 : DatumGetTimestampTz(visible_at);
}

/* Whether the receipt names the lease the message has now. */
static bool
ReceiptMatches(int64 msg_id, const MessageWhere *where, int64 receipt)
{
	return RmsgReceiptOf(msg_id, where->deliveries, where->visible_at) == receipt;
}

/* Whether the current role may settle messages of this queue or instance. */
static bool
MaySettle(bool of_instance, int64 owner_id)
{
	AclMode		rights;

	if (!RmsgObjectRights(of_instance ? RMSG_INSTANCE : RMSG_QUEUE, owner_id, NULL,
						  GetUserId(), &rights, NULL))
		return false;
	return (rights & (of_instance ? RMSG_RECEIVE : RMSG_GET)) != 0;
}

/*
 * Acks a message that is not a live queue message: a dead one (which has
 * no lease, so any receipt is stale) or an instance's.  Inside SPI.
 */
static bool
AckOther(int64 msg_id, const int64 *receipt, TimestampTz now)
{
	Datum		values[4];
	bool		nulls[4] = {false, false, receipt == NULL, false};
	MessageWhere where;

	values[0] = Int64GetDatum(msg_id);
	RmsgPlanExecute(&where_plan, values, NULL, false, 1);
	if (SPI_processed == 0)
	{
		if (receipt != NULL)
			RmsgCountStaleReceipt(0);	/* acked by someone else, most likely */
		return false;
	}
	ReadWhere(&where);
	if (!MaySettle(where.of_instance, where.owner_id))
		return false;

	if (!where.of_instance)
	{
		if (receipt != NULL)
		{
			RmsgCountStaleReceipt((int32) where.owner_id);
			return false;
		}
		values[1] = Int32GetDatum((int32) where.owner_id);
		RmsgPlanExecute(&ack_dead_plan, values, NULL, false, 0);
		return SPI_processed > 0;
	}

	if (receipt != NULL && !ReceiptMatches(msg_id, &where, *receipt))
	{
		RmsgCountStaleReceipt(0);
		return false;
	}
	values[1] = Int64GetDatum(where.owner_id);
	values[2] = Int32GetDatum(where.deliveries);
	values[3] = TimestampTzGetDatum(now);
	RmsgPlanExecute(&ack_instance_plan, values, nulls, false, 0);
	if (SPI_processed > 0)
		return true;
	if (receipt != NULL)
		RmsgCountStaleReceipt(0);
	return false;
}

/* Acks one message, with or without a receipt.  Inside SPI. */
static bool
AckOne(int64 msg_id, const int64 *receipt, TimestampTz now)
{
	int32		queue_id;

	switch (RmsgDeleteMessage(msg_id, receipt, now, true, &queue_id))
	{
		case RMSG_REMOVE_DELETED:
			return true;
		case RMSG_REMOVE_STALE:
			RmsgCountStaleReceipt(queue_id);
			return false;
		case RMSG_REMOVE_NOT_FOUND:
			break;
	}
	return AckOther(msg_id, receipt, now);
}

/*
 * rmsg.ack(msg_id): true when the message existed.  A queue's live message
 * is deleted directly (remove.c), the hot path; others by statement.
 */
Datum
rmsg_ack(PG_FUNCTION_ARGS)
{
	bool		found;

	RmsgEnter("rmsg.ack", true);
	RmsgSpiConnect();
	found = AckOne(PG_GETARG_INT64(0), NULL, GetCurrentTimestamp());
	RmsgSpiFinish();
	PG_RETURN_BOOL(found);
}

/*
 * rmsg.ack(msg_id, receipt): true when the message went, under the lease
 * the receipt names; a NULL receipt acks without one.
 */
Datum
rmsg_ack_receipt(PG_FUNCTION_ARGS)
{
	int64		receipt;
	bool		found;

	RmsgEnter("rmsg.ack", true);
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	receipt = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT64(1);
	RmsgSpiConnect();
	found = AckOne(PG_GETARG_INT64(0), PG_ARGISNULL(1) ? NULL : &receipt,
				   GetCurrentTimestamp());
	RmsgSpiFinish();
	PG_RETURN_BOOL(found);
}

/* The elements of a one-dimensional bigint[] argument. */
static void
BigintArray(FunctionCallInfo fcinfo, int argno, const char *what,
			Datum **elems, bool **nulls, int *n)
{
	ArrayType  *array = PG_GETARG_ARRAYTYPE_P(argno);

	if (ARR_NDIM(array) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s must be a one-dimensional array", what)));
	deconstruct_array(array, INT8OID, sizeof(int64), FLOAT8PASSBYVAL,
					  TYPALIGN_DOUBLE, elems, nulls, n);
}

/*
 * rmsg.ack(msg_ids[]) and rmsg.ack(msg_ids[], receipts[]): how many of the
 * messages went.  NULL elements are skipped; a NULL receipt acks its
 * message without one.
 */
static int32
AckMany(FunctionCallInfo fcinfo, bool with_receipts)
{
	Datum	   *ids;
	bool	   *id_nulls;
	int			n;
	Datum	   *receipts = NULL;
	bool	   *receipt_nulls = NULL;
	int			nreceipts = 0;
	TimestampTz now = GetCurrentTimestamp();
	int32		count = 0;

	BigintArray(fcinfo, 0, "msg_ids", &ids, &id_nulls, &n);
	if (with_receipts)
	{
		BigintArray(fcinfo, 1, "receipts", &receipts, &receipt_nulls, &nreceipts);
		if (nreceipts != n)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("msg_ids has %d elements but receipts has %d", n, nreceipts),
					 errdetail("Each message needs the receipt of its lease, in the same position.")));
	}

	RmsgSpiConnect();
	for (int i = 0; i < n; i++)
	{
		int64		receipt;
		bool		checked = with_receipts && !receipt_nulls[i];

		CHECK_FOR_INTERRUPTS();
		if (id_nulls[i])
			continue;
		receipt = checked ? DatumGetInt64(receipts[i]) : 0;
		if (AckOne(DatumGetInt64(ids[i]), checked ? &receipt : NULL, now))
			count++;
	}
	RmsgSpiFinish();
	return count;
}

Datum
rmsg_ack_many(PG_FUNCTION_ARGS)
{
	RmsgEnter("rmsg.ack", true);
	PG_RETURN_INT32(AckMany(fcinfo, false));
}

Datum
rmsg_ack_many_receipts(PG_FUNCTION_ARGS)
{
	RmsgEnter("rmsg.ack", true);
	PG_RETURN_INT32(AckMany(fcinfo, true));
}

/*
 * Moves the end of a running lease to now + interval; false when the message
 * is not in flight (under the receipt's lease, when one is given).  A nack
 * also ends the lease, so the message is ready again at that time, and
 * consumers waiting for it are woken.  Argument 2 is the receipt.
 */
static bool
MoveLeaseEnd(FunctionCallInfo fcinfo, RmsgPlan *plan, RmsgPlan *instance_plan,
			 int64 interval, bool wake)
{
	TimestampTz now = GetCurrentTimestamp();
	Datum		values[6];
	bool		nulls[6] = {false, false, false, false, PG_ARGISNULL(2), PG_ARGISNULL(2)};
	MessageWhere where;
	bool		moved;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("msg_id must not be null")));
	values[0] = PG_GETARG_DATUM(0);
	values[1] = TimestampTzGetDatum(now);
	values[2] = TimestampTzGetDatum(RmsgTimeAfter(now, interval));

	RmsgSpiConnect();
	RmsgPlanExecute(&where_leased_plan, values, NULL, false, 1);
	if (SPI_processed == 0)
	{
		if (!PG_ARGISNULL(2))
			RmsgCountStaleReceipt(0);
		RmsgSpiFinish();
		return false;
	}
	ReadWhere(&where);
	if (!MaySettle(where.of_instance, where.owner_id))
	{
		RmsgSpiFinish();
		return false;
	}

	moved = false;
	if (PG_ARGISNULL(2) ||
		ReceiptMatches(PG_GETARG_INT64(0), &where, PG_GETARG_INT64(2)))
	{
		/* the update changes the row only if it still has that lease */
		values[3] = where.of_instance ? Int64GetDatum(where.owner_id)
			: Int32GetDatum((int32) where.owner_id);
		values[4] = Int32GetDatum(where.deliveries);
		values[5] = TimestampTzGetDatum(where.visible_at);
		nulls[5] = PG_ARGISNULL(2) || where.of_instance;
		RmsgLazyWriteBegin(RMSG_LAZY_LEASE);
		RmsgPlanExecute(where.of_instance ? instance_plan : plan, values, nulls, false, 0);
		RmsgLazyWriteEnd();
		moved = SPI_processed > 0;
	}
	RmsgSpiFinish();

	if (!moved && !PG_ARGISNULL(2))
		RmsgCountStaleReceipt(where.of_instance ? 0 : (int32) where.owner_id);
	if (moved && wake && !where.of_instance)
		RmsgWakeQueueAtCommit((int32) where.owner_id);
	return moved;
}

/* rmsg.nack(msg_id, delay, receipt) */
Datum
rmsg_nack(PG_FUNCTION_ARGS)
{
	int64		delay;

	RmsgEnter("rmsg.nack", true);
	delay = RmsgIntervalArg(fcinfo, 1, "delay", 0, true);
	PG_RETURN_BOOL(MoveLeaseEnd(fcinfo, &nack_plan, &instance_nack_plan, delay, true));
}

/* rmsg.extend(msg_id, visibility, receipt) */
Datum
rmsg_extend(PG_FUNCTION_ARGS)
{
	int64		visibility;

	RmsgEnter("rmsg.extend", true);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("visibility must not be null")));
	visibility = RmsgIntervalArg(fcinfo, 1, "visibility", 0, false);
	PG_RETURN_BOOL(MoveLeaseEnd(fcinfo, &extend_plan, &instance_extend_plan, visibility, false));
}
