/*-------------------------------------------------------------------------
 *
 * receive.c
 *	  rmsg.receive and rmsg.receive_any: handing out an instance's messages
 *	  in order, one batch at a time.
 *
 * An instance's line is its messages in msg_id order.  A receive leases up
 * to max messages from the head of the line, and none while any message of
 * the instance is in flight (its lease running): an instance handles one
 * batch at a time, and with max = 1 one message at a time.  In recovery
 * only recovery messages are received; the normal ones wait where they
 * are, and, having arrived first, come first once the mode is normal
 * again.
 *
 * Finding what is in flight takes two probes, not a scan, because leases are
 * only ever taken from the head: the messages in flight are always at the
 * head of the line, or (when they were taken in recovery) at the head of
 * the instance's recovery messages.  The partial index on recovery messages
 * lets a recovering instance reach them without walking past its deferred
 * ones.
 *
 * A receiver holds the instance's take lock until its transaction ends, so
 * two receivers never lease from one line at once; receive_any skips an
 * instance whose lock is held, as SKIP LOCKED would, and lets go at once of
 * the lock of an instance it took nothing from.  It visits instances
 * in the order of their ids, round-robin from where this backend left off,
 * so every instance with work gets its turn.  A lease is a losable write,
 * committed lazily like rmsg.get's (core/commit_mode.c): a crash may forget
 * it, and the message is then handed out again.
 *
 * Each leased message comes with a receipt, as a get's does
 * (queue/receipts.c).  receive needs the instance's receive privilege, and
 * receive_any visits only the instances the role may receive from.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "instance/instance.h"

PG_FUNCTION_INFO_V1(rmsg_receive);
PG_FUNCTION_INFO_V1(rmsg_receive_any);

/*
 * Leases up to $4 messages from the head of instance $1's line, unless the
 * head of the line or of its recovery messages is in flight.  $2 now, $3 the
 * lease's end, $5 where the line's hint says it starts (line_hint.c: no
 * message below it is still there).  The two statements differ only in the
 * line they take from: all messages, or (in recovery) the recovery ones.
 *
 * Each part is written so that only the line's index serves it.  With an
 * equality on instance_id, the planner takes the wanted order to be msg_id
 * order, and when few instances hold messages the statistics make a scan of
 * the primary key, filtering on instance_id, look cheap: every receive then
 * walked all other instances' messages.  A range of one value asks for the
 * same rows but keeps instance_id in the order, which only the line's
 * indexes give; the lease then goes by msg_id.
 */
#define IN_FLIGHT_CHECK \
	"WITH busy AS (" \
	"  SELECT coalesce((SELECT lease_until > $2 FROM rmsg.instance_message" \
	"                    WHERE instance_id BETWEEN $1 AND $1 AND msg_id >= $5" \
	"                    ORDER BY instance_id, msg_id LIMIT 1), false)" \
	"      OR coalesce((SELECT lease_until > $2 FROM rmsg.instance_message" \
	"                    WHERE instance_id BETWEEN $1 AND $1 AND kind = 'recovery'" \
	"                      AND msg_id >= $5" \
	"                    ORDER BY instance_id, msg_id LIMIT 1), false) AS busy),"
#define LEASE_PICKED \
	" leased AS (" \
	"  UPDATE rmsg.instance_message m" \
	"     SET lease_until = $3, deliveries = m.deliveries + 1" \
	"   WHERE m.msg_id = ANY (ARRAY(SELECT msg_id FROM picked))" \
	"  RETURNING m.msg_id, m.kind, m.payload, m.headers, m.deliveries)" \
	" SELECT * FROM leased ORDER BY msg_id"

static RmsgPlan receive_plan = {
	IN_FLIGHT_CHECK
	" picked AS ("
	"  SELECT msg_id FROM rmsg.instance_message"
	"   WHERE instance_id BETWEEN $1 AND $1 AND msg_id >= $5"
	"     AND NOT (SELECT busy FROM busy)"
	"     AND (lease_until IS NULL OR lease_until <= $2)"
	"   ORDER BY instance_id, msg_id LIMIT $4),"
	LEASE_PICKED,
	5, {INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID, INT8OID}
};

static RmsgPlan receive_recovery_plan = {
	IN_FLIGHT_CHECK
	" picked AS ("
	"  SELECT msg_id FROM rmsg.instance_message"
	"   WHERE instance_id BETWEEN $1 AND $1 AND kind = 'recovery' AND msg_id >= $5"
	"     AND NOT (SELECT busy FROM busy)"
	"     AND (lease_until IS NULL OR lease_until <= $2)"
	"   ORDER BY instance_id, msg_id LIMIT $4),"
	LEASE_PICKED,
	5, {INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID, INT8OID}
};

/* The last instance receive_any visited in this backend: it goes on after it. */
static int64 last_visited = 0;

/*
 * The columns the lease statements return, in the order of rmsg.receive's
 * result (receive_any's puts the instance's name before them); both
 * results end with the receipt.
 */
static const char *const leased_columns[] = {
	"msg_id", "kind", "payload", "headers", "deliveries"
};

#define RECEIVE_COLUMNS ((int) lengthof(leased_columns))

/*
 * Leases up to max messages of the instance, leaving them in SPI_tuptable
 * in the columns of receive_plan; returns how many.  The caller holds the
 * instance's take lock and an SPI connection.
 */
static int
LeaseFromLine(const RmsgInstance *instance, int max, int64 visibility)
{
	TimestampTz now = GetCurrentTimestamp();
	Datum		args[5];
	Snapshot	snapshot;

	/*
	 * Past what is gone for good at the head of the line (line_hint.c).
	 * The hint is read after the statement's snapshot is taken: a delivery
	 * the snapshot sees lowered it before committing, so the statement
	 * does not start past it.
	 */
	RmsgLineHintWalk(instance->instance_id);
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	args[0] = Int64GetDatum(instance->instance_id);
	args[1] = TimestampTzGetDatum(now);
	args[2] = TimestampTzGetDatum(RmsgTimeAfter(now, visibility));
	args[3] = Int32GetDatum(max);
	args[4] = Int64GetDatum(RmsgLineHintRead(instance->instance_id));
	RmsgLazyWriteBegin(RMSG_LAZY_LEASE);
	RmsgPlanExecuteIn(instance->recovering ? &receive_recovery_plan : &receive_plan,
					  args, NULL, snapshot, 0);
	RmsgLazyWriteEnd();
	UnregisterSnapshot(snapshot);
	return (int) SPI_processed;
}

/*
 * Adds the messages LeaseFromLine leased to the result, prefixed by the
 * instance's name when given (receive_any).
 */
static void
ReturnLeased(const char *name, ReturnSetInfo *rsinfo)
{
	int			first = (name != NULL) ? 1 : 0;

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		Datum		values[RECEIVE_COLUMNS + 2];
		bool		nulls[RECEIVE_COLUMNS + 2];

		if (name != NULL)
		{
			values[0] = CStringGetTextDatum(name);
			nulls[0] = false;
		}
		for (int col = 0; col < RECEIVE_COLUMNS; col++)
			values[first + col] = RmsgSpiValue(i, leased_columns[col], &nulls[first + col]);
		/* msg_id and deliveries name the lease */
		values[first + RECEIVE_COLUMNS] =
			Int64GetDatum(RmsgReceiptOf(DatumGetInt64(RmsgSpiNotNull(i, "msg_id")),
										DatumGetInt32(RmsgSpiNotNull(i, "deliveries")),
										0));
		nulls[first + RECEIVE_COLUMNS] = false;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
}

/* Leases from a line the round below has locked; returns how many. */
typedef int (*LineTaker) (const RmsgInstance *instance, const char *name, void *arg);

/*
 * One round over the instances with messages, in id order from after
 * *cursor, taking each one's lock without waiting (skipping those another
 * receiver holds, and those `wanted` refuses) and letting `take` lease from
 * its line, until `want` messages are taken.  The lock of an instance it
 * took nothing from is let go at once.  Returns how many were taken.
 */
static int
TakeRoundRobin(int64 *cursor, int want, RmsgInstanceFilter wanted,
			   void *wanted_arg, LineTaker take, void *take_arg)
{
	int64		start = *cursor;
	int64		id = start;
	bool		wrapped = false;
	int			taken = 0;

	while (taken < want)
	{
		char		name[NAMEDATALEN];
		RmsgInstance instance;
		bool		fresh;
		int			leased;

		CHECK_FOR_INTERRUPTS();
		id = RmsgNextLineWithMessages(id);	/* line_hint.c */
		if (id == 0)
		{
			if (wrapped || start == 0)
				break;
			wrapped = true;
			continue;			/* from the lowest id again */
		}
		if (wrapped && id > start)
			break;				/* been round once */
		*cursor = id;

		if (!RmsgTryOpenInstanceById(id, wanted, wanted_arg, name, &instance, &fresh))
			continue;
		leased = take(&instance, name, take_arg);
		/* nothing taken: other receivers need not skip it for our sake */
		if (leased == 0 && fresh)
			RmsgUnlockInstance(name, RMSG_LOCK_INSTANCE_TAKE);
		taken += leased;
	}
	return taken;
}

/* max and visibility, the arguments both functions share */
static void
BatchArgs(FunctionCallInfo fcinfo, int argno, int32 *max, int64 *visibility)
{
	*max = RmsgCountArg(fcinfo, argno, "max", RMSG_MAX_BATCH);
	*visibility = RmsgVisibilityArg(fcinfo, argno + 1);
}

/* rmsg.receive(instance, max, visibility) */
Datum
rmsg_receive(PG_FUNCTION_ARGS)
{
	char	   *name;
	int32		max;
	int64		visibility;
	RmsgInstance instance;

	RmsgEnter("rmsg.receive", true);
	name = RmsgTextArg(fcinfo, 0, "instance");
	RmsgCheckName(name, "instance");
	BatchArgs(fcinfo, 1, &max, &visibility);

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	instance = RmsgOpenInstance(name, RMSG_LOCK_INSTANCE_TAKE, RMSG_RECEIVE);
	RmsgSpiConnect();
	(void) LeaseFromLine(&instance, max, visibility);
	ReturnLeased(NULL, (ReturnSetInfo *) fcinfo->resultinfo);
	RmsgSpiFinish();
	return (Datum) 0;
}

/* receive_any's share of the round: the head message of each line */
typedef struct ReceiveAnyArgs
{
	int64		visibility;
	ReturnSetInfo *rsinfo;
} ReceiveAnyArgs;

static int
ReceiveAnyTake(const RmsgInstance *instance, const char *name, void *arg)
{
	ReceiveAnyArgs *args = (ReceiveAnyArgs *) arg;
	int			leased = LeaseFromLine(instance, 1, args->visibility);

	ReturnLeased(name, args->rsinfo);
	return leased;
}

/* receive_any visits only the instances the role may receive from. */
static bool
MayReceive(int64 instance_id, const char *name, void *arg)
{
	AclMode		rights;

	return RmsgObjectRights(RMSG_INSTANCE, instance_id, NULL, GetUserId(), &rights, NULL) &&
		(rights & RMSG_RECEIVE) != 0;
}

/*
 * rmsg.receive_any(max, visibility): the next message of up to max
 * instances, one each, skipping instances another receiver holds.  One
 * round over the instances with messages, starting after the last one this
 * backend visited.
 */
Datum
rmsg_receive_any(PG_FUNCTION_ARGS)
{
	int32		max;
	ReceiveAnyArgs args;

	RmsgEnter("rmsg.receive_any", true);
	BatchArgs(fcinfo, 0, &max, &args.visibility);

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	args.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	RmsgSpiConnect();
	(void) TakeRoundRobin(&last_visited, max, MayReceive, NULL, ReceiveAnyTake, &args);
	RmsgSpiFinish();
	return (Datum) 0;
}

/* The worker's share of the round: the head message of one line, copied out. */
static int
WorkerTake(const RmsgInstance *instance, const char *name, void *arg)
{
	RmsgInstanceMessage *out = (RmsgInstanceMessage *) arg;
	bool		isnull;

	if (LeaseFromLine(instance, 1, out->visibility) == 0)
		return 0;
	strlcpy(out->instance, name, NAMEDATALEN);
	out->instance_id = instance->instance_id;
	out->msg_id = DatumGetInt64(RmsgSpiNotNull(0, "msg_id"));
	out->kind = RmsgSpiCopyValue(0, "kind", &isnull);
	out->payload = RmsgSpiCopyValue(0, "payload", &isnull);
	out->headers = RmsgSpiCopyValue(0, "headers", &out->headers_null);
	out->deliveries = DatumGetInt32(RmsgSpiNotNull(0, "deliveries"));
	out->receipt = RmsgReceiptOf(out->msg_id, out->deliveries, 0);
	return 1;
}

/*
 * For the worker: leases the head message of the next instance, round-robin
 * after *cursor, whose name `wanted` accepts and whose line no other
 * receiver holds; true with the message in *out, whose visibility the
 * caller sets.  The instance's take lock stays held until the transaction
 * ends, so no other worker handles the instance meanwhile.
 */
bool
RmsgTakeInstanceMessage(int64 *cursor, RmsgInstanceFilter wanted, void *arg,
						RmsgInstanceMessage *out)
{
	bool		taken;

	RmsgSpiConnect();
	taken = TakeRoundRobin(cursor, 1, wanted, arg, WorkerTake, out) > 0;
	RmsgSpiFinish();
	return taken;
}
