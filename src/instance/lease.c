/*-------------------------------------------------------------------------
 *
 * lease.c
 *	  Acking, nacking and extending an instance's messages.
 *
 * rmsg.ack, rmsg.nack and rmsg.extend take any msg_id (queue/lease.c); a
 * message that is not a queue's comes here.  The rules are a queue's (a
 * receipt acts only while its lease holds, a role that may not receive
 * from the instance finds no message), with one difference: an instance's
 * message keeps its place at the head of its line, which is what keeps
 * the instance's messages in order.  So a nack with a delay does not give
 * the message back at once: the lease runs until then and holds the line
 * (receive.c), and the message's lease is named by its deliveries alone.
 *
 * No instance lock is taken here.  Each statement checks the lease again
 * as it changes the row (with a receipt: the same deliveries and a lease
 * still running; nack and extend want a running lease in any case), and
 * two settlers of one message queue on the row's lock, so the second sees
 * what the first did.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"

#include "instance/instance.h"

/* An instance's message and its lease.  $1 msg_id */
static RmsgPlan where_plan = {
	"SELECT instance_id, deliveries FROM rmsg.instance_message WHERE msg_id = $1",
	1, {INT8OID}
};

/*
 * $1 msg_id, $2 its instance, $3 the deliveries of the receipt's lease or
 * NULL, $4 now
 */
static RmsgPlan ack_plan = {
	"DELETE FROM rmsg.instance_message"
	" WHERE msg_id = $1 AND instance_id = $2"
	"   AND ($3::int IS NULL OR (deliveries = $3 AND lease_until > $4))",
	4, {INT8OID, INT8OID, INT4OID, TIMESTAMPTZOID}
};

/*
 * The lease changes.  $1 msg_id, $2 now, $3 the lease's new end, $4 the
 * instance, $5 the deliveries of the receipt's lease or NULL.  A nack
 * without a delay ends the lease; with one, the lease runs until then.
 */
static RmsgPlan nack_plan = {
	"UPDATE rmsg.instance_message"
	"   SET lease_until = CASE WHEN $3 > $2 THEN $3 END"
	" WHERE msg_id = $1 AND instance_id = $4 AND lease_until > $2"
	"   AND ($5::int IS NULL OR deliveries = $5)",
	5, {INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID, INT4OID}
};

/* The same arguments as nack_plan: the lease, still running, now ends at $3. */
static RmsgPlan extend_plan = {
	"UPDATE rmsg.instance_message SET lease_until = $3"
	" WHERE msg_id = $1 AND instance_id = $4 AND lease_until > $2"
	"   AND ($5::int IS NULL OR deliveries = $5)",
	5, {INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID, INT4OID}
};

/*
 * Finds the message: false when there is none, or it is of an instance the
 * role may not receive from.  Inside SPI.
 */
static bool
FindMessage(int64 msg_id, int64 *instance_id, int32 *deliveries, bool *exists)
{
	Datum		arg = Int64GetDatum(msg_id);
	AclMode		rights;

	RmsgPlanExecute(&where_plan, &arg, NULL, false, 1);
	*exists = (SPI_processed > 0);
	if (*exists)
	{
		*instance_id = DatumGetInt64(RmsgSpiNotNull(0, "instance_id"));
		*deliveries = DatumGetInt32(RmsgSpiNotNull(0, "deliveries"));
	}
	/* freed now: an ack of an array looks up each msg_id in one connection */
	SPI_freetuptable(SPI_tuptable);
	if (!*exists)
		return false;
	return RmsgObjectRights(RMSG_INSTANCE, *instance_id, NULL, GetUserId(), &rights, NULL) &&
		(rights & RMSG_RECEIVE) != 0;
}

/*
 * rmsg.ack of an instance's message: deletes it.  Given a receipt, only
 * while the lease it names is still running; without one, whatever its
 * lease.  Inside SPI.
 */
static RmsgSettleResult
AckInstanceMessage(int64 msg_id, const int64 *receipt, TimestampTz now)
{
	int64		instance_id;
	int32		deliveries;
	bool		exists;
	Datum		values[4];
	bool		nulls[4] = {false, false, receipt == NULL, false};

	if (!FindMessage(msg_id, &instance_id, &deliveries, &exists))
		return exists ? RMSG_SETTLE_REFUSED : RMSG_SETTLE_NOT_MINE;
	if (receipt != NULL && RmsgReceiptOf(msg_id, deliveries, 0) != *receipt)
		return RMSG_SETTLE_STALE;

	values[0] = Int64GetDatum(msg_id);
	values[1] = Int64GetDatum(instance_id);
	values[2] = Int32GetDatum(deliveries);
	values[3] = TimestampTzGetDatum(now);
	RmsgPlanExecute(&ack_plan, values, nulls, false, 0);
	if (SPI_processed > 0)
		return RMSG_SETTLE_DONE;
	return receipt != NULL ? RMSG_SETTLE_STALE : RMSG_SETTLE_REFUSED;
}

/*
 * rmsg.nack and rmsg.extend of an instance's message: moves the end of its
 * running lease to until (a nack without a delay ends it).  Inside SPI.
 */
static RmsgSettleResult
MoveInstanceLeaseEnd(int64 msg_id, const int64 *receipt, TimestampTz now,
					 TimestampTz until, bool nack)
{
	int64		instance_id;
	int32		deliveries;
	bool		exists;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, receipt == NULL};

	if (!FindMessage(msg_id, &instance_id, &deliveries, &exists))
		return exists ? RMSG_SETTLE_REFUSED : RMSG_SETTLE_NOT_MINE;
	if (receipt != NULL && RmsgReceiptOf(msg_id, deliveries, 0) != *receipt)
		return RMSG_SETTLE_STALE;

	/* the update changes the row only if it still has that lease */
	values[0] = Int64GetDatum(msg_id);
	values[1] = TimestampTzGetDatum(now);
	values[2] = TimestampTzGetDatum(until);
	values[3] = Int64GetDatum(instance_id);
	values[4] = Int32GetDatum(deliveries);
	RmsgLazyWriteBegin(RMSG_LAZY_LEASE);
	RmsgPlanExecute(nack ? &nack_plan : &extend_plan, values, nulls, false, 0);
	RmsgLazyWriteEnd();
	if (SPI_processed > 0)
	{
		/* the lease ended now: the instance's line is free for the workers */
		if (until <= now)
			RmsgInstanceMessagesReady();
		return RMSG_SETTLE_DONE;
	}
	return receipt != NULL ? RMSG_SETTLE_STALE : RMSG_SETTLE_REFUSED;
}

/* What queue/lease.c calls for a msg_id that is no queue's. */
static const RmsgLeaseKeeper instance_leases = {
	AckInstanceMessage,
	MoveInstanceLeaseEnd,
};

/* Called from _PG_init: rmsg.ack and its kin hand us the messages that are not a queue's. */
void
RmsgInstanceLeaseInit(void)
{
	RmsgRegisterLeaseKeeper(&instance_leases);
}
