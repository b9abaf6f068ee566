/*-------------------------------------------------------------------------
 *
 * lifecycle.c
 *	  The life of an instance: create_instance, drop_instance,
 *	  begin_recovery, complete_recovery, and its state.
 *
 * An instance's mode is saved in its row and nowhere else that matters:
 * its normal messages that arrive while it recovers are not marked, they
 * merely are not received while the mode says recovery (receive.c).  So
 * complete_recovery releases them all by saving the mode as normal, and
 * none can be stranded however deliveries race it; they are first in the
 * instance's line, as they arrived first.  The mode changes under the
 * instance's arrival lock (catalog.c), which deliveries hold too: a
 * delivery that reported 'deferred' committed before the completion that
 * released it.  Creating, dropping and each change of mode also drop the
 * instance from the shared cache of modes (RmsgInstanceChanged), so that
 * no delivery reads a mode this transaction may yet roll back.
 *
 * The state is an ordinary column, written by the transaction that
 * handles a message: it commits or rolls back with that message's ack
 * when the handler acks in the same transaction, so a crash never leaves
 * the state ahead of or behind the messages handled.
 *
 * Rights.  create_instance is for the roles granted EXECUTE on it, and the
 * instance belongs to its creator.  Dropping it takes manage; its recovery
 * and its state belong to whoever handles its messages, the roles that
 * may receive from it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "instance/instance.h"

PG_FUNCTION_INFO_V1(rmsg_create_instance);
PG_FUNCTION_INFO_V1(rmsg_drop_instance);
PG_FUNCTION_INFO_V1(rmsg_begin_recovery);
PG_FUNCTION_INFO_V1(rmsg_complete_recovery);
PG_FUNCTION_INFO_V1(rmsg_save_state);
PG_FUNCTION_INFO_V1(rmsg_load_state);

static RmsgPlan create_plan = {
	"INSERT INTO rmsg.instance (name, state, owner) VALUES ($1, $2, $3)"
	" ON CONFLICT (name) DO NOTHING RETURNING instance_id",
	3, {TEXTOID, JSONBOID, OIDOID}
};

/* Returns how many messages went with it.  $1 instance_id */
static RmsgPlan drop_plan = {
	"WITH gone AS (DELETE FROM rmsg.instance WHERE instance_id = $1),"
	"     messages AS (DELETE FROM rmsg.instance_message WHERE instance_id = $1 RETURNING 1)"
	" SELECT count(*) FROM messages",
	1, {INT8OID}
};

/* $1 instance_id, $2 now */
static RmsgPlan begin_plan = {
	"UPDATE rmsg.instance SET mode = 'recovery', recovery_since = $2"
	" WHERE instance_id = $1 AND mode = 'normal'",
	2, {INT8OID, TIMESTAMPTZOID}
};

/*
 * Saves the mode as normal, and the state when given; returns whether the
 * instance was recovering and how many normal messages were waiting (not in
 * flight) and so are released.  $1 instance_id, $2 state or NULL, $3 now
 */
static RmsgPlan complete_plan = {
	"WITH completed AS ("
	"  UPDATE rmsg.instance SET mode = 'normal', recovery_since = NULL,"
	"         state = coalesce($2, state),"
	"         state_saved_at = CASE WHEN $2 IS NULL THEN state_saved_at ELSE $3 END"
	"   WHERE instance_id = $1 AND mode = 'recovery' RETURNING 1)"
	" SELECT EXISTS (SELECT 1 FROM completed) AS completed,"
	"        (SELECT count(*) FROM rmsg.instance_message"
	"          WHERE instance_id = $1 AND kind = 'normal'"
	"            AND (lease_until IS NULL OR lease_until <= $3)) AS released",
	3, {INT8OID, JSONBOID, TIMESTAMPTZOID}
};

/* $1 instance_id, $2 state, $3 now */
static RmsgPlan save_state_plan = {
	"UPDATE rmsg.instance SET state = $2, state_saved_at = $3 WHERE instance_id = $1",
	3, {INT8OID, JSONBOID, TIMESTAMPTZOID}
};

static RmsgPlan load_state_plan = {
	"SELECT state FROM rmsg.instance WHERE instance_id = $1",
	1, {INT8OID}
};

static RmsgPlan lookup_id_plan = {
	"SELECT instance_id FROM rmsg.instance WHERE name = $1",
	1, {TEXTOID}
};

/*
 * The start of each function here: `function` for messages, `writes` as
 * RmsgEnter has it; returns the instance name argument, checked (unknown
 * names fail later with 42704).
 */
static char *
InstanceNameArg(FunctionCallInfo fcinfo, const char *function, bool writes)
{
	char	   *name;

	RmsgEnter(function, writes);
	name = RmsgTextArg(fcinfo, 0, "instance");
	RmsgCheckName(name, "instance");
	return name;
}

/*
 * The id of an instance the current role may handle (receive from), for
 * the functions that take no instance lock: 42704, 42501.
 */
static int64
HandledInstanceId(const char *name)
{
	AclMode		rights;
	Oid			owner;
	int64		id;
	Datum		arg = CStringGetTextDatum(name);

	RmsgSpiConnect();
	RmsgPlanExecute(&lookup_id_plan, &arg, NULL, false, 1);
	if (SPI_processed == 0)
		RmsgReportNoInstance(name);
	id = DatumGetInt64(RmsgSpiNotNull(0, "instance_id"));
	RmsgSpiFinish();
	if (!RmsgObjectRights(RMSG_INSTANCE, id, NULL, GetUserId(), &rights, &owner))
		RmsgReportNoInstance(name);
	RmsgRequireRights(RMSG_INSTANCE, name, rights, RMSG_RECEIVE);
	return id;
}

/* A state argument: any jsonb, but not NULL (the column is NOT NULL). */
static Datum
StateArg(FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("state must not be null"),
				 errhint("Pass '{}' for an empty state.")));
	return PG_GETARG_DATUM(argno);
}

/* rmsg.create_instance(instance, state): in normal mode */
Datum
rmsg_create_instance(PG_FUNCTION_ARGS)
{
	char	   *name = InstanceNameArg(fcinfo, "rmsg.create_instance", true);
	Datum		values[3];

	values[0] = CStringGetTextDatum(name);
	values[1] = StateArg(fcinfo, 1);
	RmsgLockRole(GetUserId());
	values[2] = ObjectIdGetDatum(GetUserId());

	RmsgLockInstance(name, RMSG_LOCK_INSTANCE_ARRIVAL);
	RmsgNoteCatalogChange();
	RmsgSpiConnect();
	RmsgPlanExecute(&create_plan, values, NULL, true, 0);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("instance \"%s\" already exists", name)));
	RmsgSpiFinish();
	RmsgInstanceChanged(name);
	PG_RETURN_VOID();
}

/* rmsg.drop_instance(instance): with every message delivered to it */
Datum
rmsg_drop_instance(PG_FUNCTION_ARGS)
{
	char	   *name = InstanceNameArg(fcinfo, "rmsg.drop_instance", true);
	RmsgInstance instance;
	Datum		arg;

	/* no delivery may add to the line, nor a receiver lease from it */
	RmsgNoteCatalogChange();
	instance = RmsgOpenInstance(name, RMSG_LOCK_INSTANCE_ARRIVAL, RMSG_MANAGE);
	RmsgLockInstance(name, RMSG_LOCK_INSTANCE_TAKE);
	arg = Int64GetDatum(instance.instance_id);
	RmsgSpiConnect();
	RmsgPlanExecute(&drop_plan, &arg, NULL, true, 0);
	RmsgSpiFinish();
	RmsgInstanceChanged(name);
	PG_RETURN_VOID();
}

/* rmsg.begin_recovery(instance): from now on its normal messages wait */
Datum
rmsg_begin_recovery(PG_FUNCTION_ARGS)
{
	char	   *name = InstanceNameArg(fcinfo, "rmsg.begin_recovery", true);
	RmsgInstance instance;
	Datum		values[2];

	instance = RmsgOpenInstance(name, RMSG_LOCK_INSTANCE_ARRIVAL, RMSG_RECEIVE);
	values[0] = Int64GetDatum(instance.instance_id);
	values[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	RmsgSpiConnect();
	RmsgPlanExecute(&begin_plan, values, NULL, true, 0);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("instance \"%s\" is already in recovery", name)));
	RmsgSpiFinish();
	RmsgInstanceChanged(name);
	PG_RETURN_VOID();
}

/*
 * rmsg.complete_recovery(instance, state): saves the mode as normal, and
 * the state with it when one is given, so that both commit together with
 * the handling of the message that ended the recovery.  That releases the
 * deferred messages, which are first in line; returns how many were
 * waiting (normal messages in flight are not counted).
 */
Datum
rmsg_complete_recovery(PG_FUNCTION_ARGS)
{
	char	   *name = InstanceNameArg(fcinfo, "rmsg.complete_recovery", true);
	RmsgInstance instance;
	Datum		values[3];
	bool		nulls[3] = {false, PG_ARGISNULL(1), false};
	bool		completed;
	int64		released;

	instance = RmsgOpenInstance(name, RMSG_LOCK_INSTANCE_ARRIVAL, RMSG_RECEIVE);
	values[0] = Int64GetDatum(instance.instance_id);
	values[1] = nulls[1] ? (Datum) 0 : PG_GETARG_DATUM(1);
	values[2] = TimestampTzGetDatum(GetCurrentTimestamp());
	RmsgSpiConnect();
	RmsgPlanExecute(&complete_plan, values, nulls, true, 0);
	completed = DatumGetBool(RmsgSpiNotNull(0, "completed"));
	released = DatumGetInt64(RmsgSpiNotNull(0, "released"));
	if (!completed)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("instance \"%s\" is not in recovery", name)));
	RmsgSpiFinish();
	RmsgInstanceChanged(name);
	RmsgInstanceMessagesReady();	/* the released messages are ready */
	PG_RETURN_INT32((int32) Min(released, PG_INT32_MAX));
}

/*
 * rmsg.save_state(instance, state): it commits with the transaction that
 * handled the message, and so with that message's ack: a crash never
 * keeps one without the other.  It takes no instance lock, so saving never
 * holds up deliveries; two saves of one instance wait on its row.
 */
Datum
rmsg_save_state(PG_FUNCTION_ARGS)
{
	char	   *name = InstanceNameArg(fcinfo, "rmsg.save_state", true);
	Datum		values[3];

	values[1] = StateArg(fcinfo, 1);
	values[0] = Int64GetDatum(HandledInstanceId(name));
	values[2] = TimestampTzGetDatum(GetCurrentTimestamp());
	RmsgSpiConnect();
	RmsgPlanExecute(&save_state_plan, values, NULL, true, 0);
	if (SPI_processed == 0)
		RmsgReportNoInstance(name);
	RmsgSpiFinish();
	PG_RETURN_VOID();
}

/*
 * rmsg.load_state(instance): the state as last saved (this transaction's
 * own save included), which a handler reads before it acts on a message.
 */
Datum
rmsg_load_state(PG_FUNCTION_ARGS)
{
	char	   *name = InstanceNameArg(fcinfo, "rmsg.load_state", false);
	Datum		arg = Int64GetDatum(HandledInstanceId(name));
	Datum		state;
	bool		isnull;

	RmsgSpiConnect();
	RmsgPlanExecute(&load_state_plan, &arg, NULL, false, 1);
	if (SPI_processed == 0)
		RmsgReportNoInstance(name);
	state = RmsgSpiCopyValue(0, "state", &isnull);
	RmsgSpiFinish();
	PG_RETURN_DATUM(state);
}
