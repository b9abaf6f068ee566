/*-------------------------------------------------------------------------
 *
 * deliver.c
 *	  rmsg.deliver: a message arrives for an instance.
 *
 * The message joins the end of the instance's line.  The instance's mode,
 * read when the message arrives, decides what deliver reports: a normal
 * message for an instance in recovery is 'deferred', it waits in the line,
 * which is a persistent queue, until recovery completes; anything else is
 * 'ready'.  Nothing in the row marks a message as deferred: the mode alone
 * decides what receive hands out (receive.c).  Other instances never wait
 * for this one: each has its own locks and line.
 *
 * The delivery holds the instance's arrival lock until it commits
 * (catalog.c), and takes its msg_id under it, so the messages of one
 * instance are numbered in the order they committed, and a completion of
 * recovery waits for the deliveries already under way.  The mode is read
 * under that lock, from the shared cache when the instance is in it (the
 * cache and its lightweight lock are catalog.c's).  The role delivering
 * must hold the instance's deliver privilege.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "instance/instance.h"

PG_FUNCTION_INFO_V1(rmsg_deliver);

RmsgInstanceReadyHook rmsg_instance_ready_hook = NULL;

/*
 * This transaction made messages of some instance ready: whoever takes
 * them besides the receivers (the workers, through the hook that
 * recoverable_msg.c sets) may look once it commits.  A deferred delivery
 * does not call it: nothing can take that message yet.
 */
void
RmsgInstanceMessagesReady(void)
{
	if (rmsg_instance_ready_hook)
		rmsg_instance_ready_hook();
}

/* $1 instance_id, $2 kind, $3 now, $4 headers, $5 payload */
static RmsgPlan deliver_plan = {
	"INSERT INTO rmsg.instance_message"
	"       (msg_id, instance_id, kind, enqueued_at, headers, payload)"
	" VALUES (nextval('rmsg.msg_id_seq'), $1, $2, $3, $4, $5) RETURNING msg_id",
	5, {INT8OID, TEXTOID, TIMESTAMPTZOID, JSONBOID, BYTEAOID}
};

/* The kind argument: 'normal' or 'recovery'; true for recovery. */
static bool
KindArg(FunctionCallInfo fcinfo, int argno)
{
	char	   *kind = RmsgTextArg(fcinfo, argno, "kind");

	if (strcmp(kind, "recovery") == 0)
		return true;
	if (strcmp(kind, "normal") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid message kind \"%s\"", kind),
				 errhint("The kind is 'normal' or 'recovery'.")));
	return false;
}

/* rmsg.deliver(instance, payload, kind, headers) -> (msg_id, disposition) */
Datum
rmsg_deliver(PG_FUNCTION_ARGS)
{
	char	   *name;
	bool		recovery_kind;
	bytea	   *payload;
	RmsgInstance instance;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, PG_ARGISNULL(3), false};
	int64		msg_id;
	bool		deferred;
	TupleDesc	desc;
	Datum		result[2];
	bool		result_nulls[2] = {false, false};

	RmsgEnter("rmsg.deliver", true);
	name = RmsgTextArg(fcinfo, 0, "instance");
	RmsgCheckName(name, "instance");
	payload = RmsgPayloadArg(fcinfo, 1);
	recovery_kind = KindArg(fcinfo, 2);
	RmsgCheckHeaders(fcinfo, 3);
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "rmsg.deliver must return a row");

	instance = RmsgOpenInstance(name, RMSG_LOCK_INSTANCE_ARRIVAL, RMSG_DELIVER);
	deferred = instance.recovering && !recovery_kind;

	values[0] = Int64GetDatum(instance.instance_id);
	values[1] = CStringGetTextDatum(recovery_kind ? "recovery" : "normal");
	values[2] = TimestampTzGetDatum(GetCurrentTimestamp());
	values[3] = nulls[3] ? (Datum) 0 : PG_GETARG_DATUM(3);
	values[4] = PointerGetDatum(payload);
	RmsgSpiConnect();
	RmsgPlanExecute(&deliver_plan, values, nulls, false, 0);
	msg_id = DatumGetInt64(RmsgSpiNotNull(0, "msg_id"));
	RmsgSpiFinish();
	/* before we commit: no receive may start past our msg_id (line_hint.c) */
	RmsgLineHintLower(instance.instance_id, msg_id);
	if (!deferred)
		RmsgInstanceMessagesReady();

	result[0] = Int64GetDatum(msg_id);
	result[1] = CStringGetTextDatum(deferred ? "deferred" : "ready");
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc),
													  result, result_nulls)));
}
