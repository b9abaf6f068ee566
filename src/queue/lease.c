/*-------------------------------------------------------------------------
 *
 * lease.c
 *	  rmsg.ack, rmsg.nack and rmsg.extend: what a consumer does with a
 *	  message it was handed.
 *
 * They take the msg_id of any message: msg_ids are unique across queues
 * and instances.  A queue's message is settled here; any other is handed
 * to the keeper of the other kind of leased message that registered
 * itself (instance/lease.c), so that this folder knows nothing of
 * instances.
 *
 * An ack removes the message, live (remove.c) or dead; a payload row it
 * referenced stays until rmsg.collect_payloads finds it unreferenced
 * (dedup/payload.c).  An ack commits under the session's
 * synchronous_commit like any write.  A nack or an extend only moves the
 * end of a lease, so it commits lazily when it is all its transaction
 * wrote (core/commit_mode.c).  Both apply only to a message in flight: its
 * lease_until still ahead.
 *
 * Rights.  A message of a queue the role may not get from (or of an
 * instance it may not receive from) is, for that role, no message at all:
 * these functions return false for it and touch nothing, not even a lock.
 * So is a remote queue's message, for every role: it waits here only to
 * be moved to the receiving server, and an ack would lose it unsent.
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

#include "queue/queue.h"

PG_FUNCTION_INFO_V1(rmsg_ack);
PG_FUNCTION_INFO_V1(rmsg_ack_receipt);
PG_FUNCTION_INFO_V1(rmsg_ack_many);
PG_FUNCTION_INFO_V1(rmsg_ack_many_receipts);
PG_FUNCTION_INFO_V1(rmsg_nack);
PG_FUNCTION_INFO_V1(rmsg_extend);

/* The other kind of message with leases: an instance's (instance/lease.c). */
static const RmsgLeaseKeeper *other_keeper = NULL;

/*
 * Called from _PG_init by instance/lease.c: the messages that are no
 * queue's go to this keeper.  There is one other kind, so one keeper.
 */
void
RmsgRegisterLeaseKeeper(const RmsgLeaseKeeper *keeper)
{
	other_keeper = keeper;
}

/* A dead message, with its queue.  $1 msg_id */
static RmsgPlan dead_plan = {
	"SELECT queue_id FROM rmsg.dead_message WHERE msg_id = $1",
	1, {INT8OID}
};

/* $1 msg_id, $2 its queue */
static RmsgPlan ack_dead_plan = {
	"DELETE FROM rmsg.dead_message WHERE msg_id = $1 AND queue_id = $2",
	2, {INT8OID, INT4OID}
};

/*
 * A live message, with its queue and lease: read before any lock, so that
 * the rights are checked first.  $1 msg_id
 */
static RmsgPlan live_plan = {
	"SELECT m.queue_id, m.visible_at, m.priority, l.deliveries"
	"  FROM rmsg.message m LEFT JOIN rmsg.lease l ON l.msg_id = m.msg_id"
	" WHERE m.msg_id = $1",
	1, {INT8OID}
};

/*
 * A nack with a delay moves the message: its newest version, locked first
 * (waiting for a get in progress) so that its lease is changed by a
 * transaction that holds the message (queue/lease_rows.c).  $1 msg_id, $2
 * its queue
 */
static RmsgPlan lock_plan = {
	"SELECT visible_at FROM rmsg.message WHERE msg_id = $1 AND queue_id = $2 FOR UPDATE",
	2, {INT8OID, INT4OID}
};

/*
 * The lease's end moves, if it still runs (and is the receipt's).  An
 * extend and a nack without a delay change the lease row alone: the
 * message row keeps its place in line.  $1 msg_id, $2 now, $3 the new end
 * (NULL: a nack ends it), $4 the queue, $5 and $6 the deliveries and
 * visible_at of the receipt's lease, or NULL.
 */
static RmsgPlan move_end_plan = {
	"UPDATE rmsg.lease l SET lease_until = $3 FROM rmsg.message m"
	" WHERE l.msg_id = $1 AND m.msg_id = $1 AND m.queue_id = $4 AND l.lease_until > $2"
	"   AND ($5::int IS NULL OR (l.deliveries = $5 AND m.visible_at = $6))",
	6, {INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID, INT4OID, TIMESTAMPTZOID}
};

/* A nack with a delay: the message goes to the back.  $1 msg_id, $2 when */
static RmsgPlan to_the_back_plan = {
	"UPDATE rmsg.message SET visible_at = $2 WHERE msg_id = $1",
	2, {INT8OID, TIMESTAMPTZOID}
};

/*
 * Whether the current role may settle messages of this queue: it may get
 * from it, and it is a local queue (a remote queue's messages are the
 * receiving server's, catalog.c).
 */
static bool
MayGet(int32 queue_id)
{
	AclMode		rights;

	return RmsgObjectRights(RMSG_QUEUE, queue_id, NULL, GetUserId(), &rights, NULL) &&
		(rights & RMSG_GET) != 0 && !RmsgQueueIsRemote(queue_id);
}

/*
 * What the other kind of message says of a msg_id that is no queue's:
 * true when it settled it; a stale receipt is counted (as no queue's).
 */
static bool
AskOtherKeeper(RmsgSettleResult result, const int64 *receipt)
{
	if (result == RMSG_SETTLE_DONE)
		return true;
	/* a message nobody has: acked by someone else, most likely */
	if (receipt != NULL && (result == RMSG_SETTLE_STALE || result == RMSG_SETTLE_NOT_MINE))
		RmsgCountStaleReceipt(0);
	return false;
}

/*
 * Acks a message that is not a live queue message: a dead one (which has
 * no lease, so any receipt is stale) or another kind's.  Inside SPI.
 */
static bool
AckOther(int64 msg_id, const int64 *receipt, TimestampTz now)
{
	Datum		values[2];
	int32		queue_id = 0;
	bool		dead;

	values[0] = Int64GetDatum(msg_id);
	RmsgPlanExecute(&dead_plan, values, NULL, false, 1);
	/*
	 * Each result lives until the SPI connection ends unless freed, and an
	 * ack of an array looks up each msg_id in one connection: 100,000 of
	 * them took 5.6 s, the memory growing with each, against 66 ms for 10,000.
	 */
	dead = SPI_processed > 0;
	if (dead)
		queue_id = DatumGetInt32(RmsgSpiNotNull(0, "queue_id"));
	SPI_freetuptable(SPI_tuptable);
	if (!dead)
		return AskOtherKeeper(other_keeper != NULL ? other_keeper->ack(msg_id, receipt, now)
							  : RMSG_SETTLE_NOT_MINE, receipt);
	if (!MayGet(queue_id))
		return false;
	if (receipt != NULL)
	{
		RmsgCountStaleReceipt(queue_id);
		return false;
	}
	values[1] = Int32GetDatum(queue_id);
	RmsgPlanExecute(&ack_dead_plan, values, NULL, false, 0);
	return SPI_processed > 0;
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

/* The elements of a bigint[] argument, which the caller checked is flat. */
static void
BigintElements(ArrayType *array, Datum **elems, bool **nulls, int *n)
{
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
	ArrayType  *id_array = PG_GETARG_ARRAYTYPE_P(0);

	if (ARR_NDIM(id_array) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("msg_ids must be a one-dimensional array")));
	BigintElements(id_array, &ids, &id_nulls, &n);
	if (with_receipts)
	{
		ArrayType  *receipt_array = PG_GETARG_ARRAYTYPE_P(1);

		if (ARR_NDIM(receipt_array) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("receipts must be a one-dimensional array")));
		BigintElements(receipt_array, &receipts, &receipt_nulls, &nreceipts);
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

/* rmsg.ack(msg_ids bigint[]) */
Datum
rmsg_ack_many(PG_FUNCTION_ARGS)
{
	RmsgEnter("rmsg.ack", true);
	PG_RETURN_INT32(AckMany(fcinfo, false));
}

/* rmsg.ack(msg_ids bigint[], receipts bigint[]) */
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
MoveLeaseEnd(FunctionCallInfo fcinfo, int64 interval, bool nack)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz until = RmsgTimeAfter(now, interval);
	int64		msg_id;
	int64		receipt = 0;
	const int64 *given = NULL;
	Datum		values[6];
	bool		nulls[6] = {false, false, false, false, false, false};
	int32		queue_id;
	int32		deliveries;
	bool		never_leased;
	TimestampTz visible_at;
	int			lane;			/* its priority (queue/priorities.c) */
	bool		moved;

	RmsgRequireArg(fcinfo, 0, "msg_id");
	msg_id = PG_GETARG_INT64(0);
	if (!PG_ARGISNULL(2))
	{
		receipt = PG_GETARG_INT64(2);
		given = &receipt;
	}

	RmsgSpiConnect();
	values[0] = Int64GetDatum(msg_id);
	RmsgPlanExecute(&live_plan, values, NULL, false, 1);
	if (SPI_processed == 0)
	{
		moved = AskOtherKeeper(other_keeper != NULL
							   ? other_keeper->move_lease_end(msg_id, given, now, until, nack)
							   : RMSG_SETTLE_NOT_MINE, given);
		RmsgSpiFinish();
		return moved;
	}
	queue_id = DatumGetInt32(RmsgSpiNotNull(0, "queue_id"));
	visible_at = DatumGetTimestampTz(RmsgSpiNotNull(0, "visible_at"));
	lane = DatumGetInt16(RmsgSpiNotNull(0, "priority"));
	deliveries = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											 4, &never_leased));
	if (!MayGet(queue_id))
	{
		RmsgSpiFinish();
		return false;
	}

	moved = false;
	if (!never_leased &&
		(given == NULL || RmsgReceiptOf(msg_id, deliveries, visible_at) == receipt))
	{
		bool		to_the_back = nack && until > now;

		values[1] = Int32GetDatum(queue_id);
		RmsgLazyWriteBegin(RMSG_LAZY_LEASE);
		if (to_the_back)
			RmsgPlanExecute(&lock_plan, values, NULL, false, 1);
		if (!to_the_back || SPI_processed > 0)
		{
			/* the update changes the lease only if it still is the receipt's */
			values[1] = TimestampTzGetDatum(now);
			values[2] = TimestampTzGetDatum(until);
			nulls[2] = nack;
			values[3] = Int32GetDatum(queue_id);
			values[4] = Int32GetDatum(deliveries);
			values[5] = TimestampTzGetDatum(visible_at);
			nulls[4] = nulls[5] = given == NULL;
			RmsgPlanExecute(&move_end_plan, values, nulls, false, 0);
			moved = SPI_processed > 0;
		}
		if (moved && to_the_back)
		{
			values[1] = TimestampTzGetDatum(until);
			RmsgPlanExecute(&to_the_back_plan, values, NULL, false, 0);
		}
		RmsgLazyWriteEnd();
		/*
		 * The queue's hint may have passed the message on its old lease
		 * (queue/ready_hint.c).  A nack with a delay gives it a new place
		 * in line (a new index entry); anything else keeps its place, and
		 * the lease ends now (a nack) or at `until`.
		 */
		if (moved)
			RmsgReadyHintTouched(queue_id);
		if (moved && nack && until > now)
			RmsgReadyHintLower(queue_id, lane, until);
		else if (moved)
			RmsgReadyHintLeaseMoved(queue_id, lane, visible_at, nack ? now : until);
	}
	RmsgSpiFinish();

	if (!moved && given != NULL)
		RmsgCountStaleReceipt(queue_id);
	/* ready again now: a nack, or a lease made to end at once */
	if (moved && (nack || until <= now))
		RmsgWakeQueueAtCommit(queue_id);
	return moved;
}

/* rmsg.nack(msg_id, delay, receipt) */
Datum
rmsg_nack(PG_FUNCTION_ARGS)
{
	int64		delay;

	RmsgEnter("rmsg.nack", true);
	delay = RmsgIntervalArg(fcinfo, 1, "delay", 0, true);
	PG_RETURN_BOOL(MoveLeaseEnd(fcinfo, delay, true));
}

/* rmsg.extend(msg_id, visibility, receipt) */
Datum
rmsg_extend(PG_FUNCTION_ARGS)
{
	int64		visibility;

	RmsgEnter("rmsg.extend", true);
	visibility = RmsgVisibilityArg(fcinfo, 1);
	PG_RETURN_BOOL(MoveLeaseEnd(fcinfo, visibility, false));
}
