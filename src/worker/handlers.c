/*-------------------------------------------------------------------------
 *
 * handlers.c
 *	  Which SQL function handles which messages: rmsg.subscribe,
 *	  rmsg.unsubscribe, rmsg.set_handler and rmsg.remove_handler, and the
 *	  list the worker reads them into.
 *
 * A queue has at most one handler (rmsg.subscription, dropped with the
 * queue); an instance is handled by the handler of the longest prefix of its
 * name (rmsg.instance_handler).  A handler is a plain function whose own
 * arguments say what it gets, from the front of a fixed list:
 *	queue:	  (payload bytea [, headers jsonb [, msg_id bigint]])
 *	instance: (instance text, payload bytea [, kind text [, headers jsonb
 *			  [, msg_id bigint]]])
 * It runs as the role that registered it, which must be allowed to execute
 * it.  Registering one commits like any write; the workers read the
 * handlers again when such a transaction commits (slots.c).
 *
 * Rights.  Subscribing takes manage on the queue, and since the handler
 * runs as the subscriber and takes the queue's messages, get as well; the
 * worker checks again before each call that the role still holds get.  An
 * instance prefix may cover instances of many owners, so each role has its
 * own handler for a prefix: set_handler replaces the calling role's, and
 * remove_handler removes those of the roles the caller has the privileges
 * of.  The worker gives an instance's messages to the handler of the
 * longest prefix among those whose role may receive from that instance
 * (the first registered, between equal prefixes), so a handler registered
 * by a role without that right is simply not chosen, and no role can take
 * a prefix away from another.  The tables also keep each handler's error
 * count and last error, which the worker writes in the transaction that
 * records the failure.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "worker/worker.h"

PG_FUNCTION_INFO_V1(rmsg_subscribe);
PG_FUNCTION_INFO_V1(rmsg_unsubscribe);
PG_FUNCTION_INFO_V1(rmsg_set_handler);
PG_FUNCTION_INFO_V1(rmsg_remove_handler);

/* The most messages a queue handler's transaction takes at once. */
#define MAX_BATCH 1000
/* subscribe's rate, in calls per second */
#define MIN_RATE 0.001
#define MAX_RATE 1000000.0

static const Oid queue_convention[] = {BYTEAOID, JSONBOID, INT8OID};
static const Oid instance_convention[] = {TEXTOID, BYTEAOID, TEXTOID, JSONBOID, INT8OID};

#define QUEUE_CONVENTION "handler(payload bytea [, headers jsonb [, msg_id bigint]])"
#define INSTANCE_CONVENTION "handler(instance text, payload bytea [, kind text [, headers jsonb [, msg_id bigint]]])"

/* $1 queue_id, $2 handler, $3 batch, $4 owner, $5 concurrency, $6 rate */
static RmsgPlan subscribe_plan = {
	"INSERT INTO rmsg.subscription (queue_id, handler, batch, owner, concurrency, rate)"
	" VALUES ($1, $2, $3, $4, $5, $6)"
	" ON CONFLICT (queue_id) DO UPDATE"
	"   SET handler = excluded.handler, batch = excluded.batch, owner = excluded.owner,"
	"       concurrency = excluded.concurrency, rate = excluded.rate",
	6, {INT4OID, REGPROCEDUREOID, INT4OID, REGROLEOID, INT4OID, NUMERICOID}
};

static RmsgPlan unsubscribe_plan = {
	"DELETE FROM rmsg.subscription WHERE queue_id = $1",
	1, {INT4OID}
};

/* $1 prefix, $2 handler, $3 owner */
static RmsgPlan set_handler_plan = {
	"INSERT INTO rmsg.instance_handler (prefix, handler, owner)"
	" VALUES ($1, $2, $3)"
	" ON CONFLICT (prefix, owner) DO UPDATE SET handler = excluded.handler",
	3, {TEXTOID, REGPROCEDUREOID, REGROLEOID}
};

/* The prefix's handlers of the roles $2 has the privileges of. */
static RmsgPlan remove_handler_plan = {
	"DELETE FROM rmsg.instance_handler"
	" WHERE prefix = $1 AND pg_catalog.pg_has_role($2, owner::oid, 'USAGE')",
	2, {TEXTOID, OIDOID}
};

/*
 * Every handler: queues first, then instance prefixes, each prefix's first
 * registered first.  The first arm names the columns of the union.
 */
static RmsgPlan load_plan = {
	"SELECT false AS for_instances, q.name AS target, s.queue_id,"
	"       s.handler::oid AS handler, s.owner::oid AS owner, s.batch, s.created_at,"
	"       coalesce(s.concurrency, 0) AS concurrency,"
	"       coalesce(s.rate, 0)::float8 AS rate"
	"  FROM rmsg.subscription s JOIN rmsg.queue q USING (queue_id)"
	" UNION ALL"
	" SELECT true, h.prefix, 0, h.handler::oid, h.owner::oid, 1, h.created_at, 0, 0"
	"  FROM rmsg.instance_handler h"
	" ORDER BY 1, 2, 7",
	0, {InvalidOid}
};

/* $1 queue_id or $1 prefix, $2 error, $3 at, $4 msg_id */
static RmsgPlan queue_error_plan = {
	"UPDATE rmsg.subscription SET errors = errors + 1, last_error = $2,"
	"       last_error_at = $3, last_error_msg_id = $4"
	" WHERE queue_id = $1",
	4, {INT4OID, TEXTOID, TIMESTAMPTZOID, INT8OID}
};

/* $5 the handler's role */
static RmsgPlan instance_error_plan = {
	"UPDATE rmsg.instance_handler SET errors = errors + 1, last_error = $2,"
	"       last_error_at = $3, last_error_msg_id = $4"
	" WHERE prefix = $1 AND owner = $5",
	5, {TEXTOID, TEXTOID, TIMESTAMPTZOID, INT8OID, OIDOID}
};

/*
 * Checks that the function fits the calling convention of queue or instance
 * handlers; returns how many arguments it takes.  Errors name the function
 * (formatted only then: the worker checks before every call).
 */
int
RmsgCheckHandler(Oid handler, bool for_instances)
{
	const Oid  *convention = for_instances ? instance_convention : queue_convention;
	int			max_args = for_instances ? lengthof(instance_convention) : lengthof(queue_convention);
	int			min_args = for_instances ? 2 : 1;
	int			headers_at = for_instances ? 3 : 1;
	const char *usage = for_instances ? INSTANCE_CONVENTION : QUEUE_CONVENTION;
	HeapTuple	tuple;
	Form_pg_proc proc;
	int			nargs;

	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(handler));
	if (!HeapTupleIsValid(tuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("handler function %u does not exist", handler)));
	proc = (Form_pg_proc) GETSTRUCT(tuple);
	nargs = proc->pronargs;

	if (proc->prokind != PROKIND_FUNCTION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("handler %s is not a plain function", format_procedure(handler)),
				 errhint("A handler is called as %s.", usage)));
	if (proc->proretset)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("handler %s must not return a set", format_procedure(handler))));
	if (nargs < min_args || nargs > max_args)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("handler %s must take %d to %d arguments, not %d",
						format_procedure(handler), min_args, max_args, nargs),
				 errhint("A handler is called as %s.", usage)));
	for (int i = 0; i < nargs; i++)
	{
		if (proc->proargtypes.values[i] != convention[i])
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
					 errmsg("argument %d of handler %s must be of type %s, not %s",
							i + 1, format_procedure(handler), format_type_be(convention[i]),
							format_type_be(proc->proargtypes.values[i])),
					 errhint("A handler is called as %s.", usage)));
	}
	/* a strict function would silently not be called for a message without headers */
	if (proc->proisstrict && nargs > headers_at)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("handler %s must not be STRICT", format_procedure(handler)),
				 errdetail("Messages put without headers pass NULL headers, and a strict function is then not called at all."),
				 errhint("Declare it CALLED ON NULL INPUT.")));
	ReleaseSysCache(tuple);
	return nargs;
}

/* The role registering a handler must be able to run it. */
static void
CheckMayExecute(Oid handler)
{
	if (pg_proc_aclcheck(handler, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FUNCTION, get_func_name(handler));
}

/* The handler argument: a regprocedure, which must be given. */
static Oid
HandlerArg(FunctionCallInfo fcinfo, int argno)
{
	RmsgRequireArg(fcinfo, argno, "handler");
	return PG_GETARG_OID(argno);
}

/* An instance prefix: empty (every instance) or the start of a valid name. */
static char *
PrefixArg(FunctionCallInfo fcinfo, int argno)
{
	char	   *prefix = RmsgTextArg(fcinfo, argno, "instance prefix");

	if (strlen(prefix) > RMSG_NAME_MAX ||
		strspn(prefix, RMSG_NAME_CHARS) != strlen(prefix))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid instance prefix \"%s\"", prefix),
				 errdetail("A prefix is the start of an instance name: up to %d ASCII letters, digits, \"_\", \"-\" and \".\".",
						   RMSG_NAME_MAX)));
	return prefix;
}

/*
 * A handler registered where no worker will call it is almost certainly a
 * mistake that would otherwise only show as messages that never move: say
 * so at once (the registration itself stands, for when the setting
 * changes).
 */
static void
WarnIfNotServed(void)
{
	char	   *here = get_database_name(MyDatabaseId);

	if (rmsg_worker_count == 0)
		ereport(WARNING,
				(errmsg("no background worker runs to call this handler"),
				 errdetail("rmsg.worker_count is 0, or recoverable_msg is not in shared_preload_libraries."),
				 errhint("Preload recoverable_msg with rmsg.worker_count of 1 or more, and restart the server.")));
	else if (here != NULL && strcmp(here, rmsg_database) != 0)
		ereport(WARNING,
				(errmsg("the background workers serve database \"%s\", not \"%s\"",
						rmsg_database, here),
				 errdetail("The handler is registered, but no worker calls it while rmsg.database names another database."),
				 errhint("Set rmsg.database to \"%s\" and reload the configuration, or register the handler in database \"%s\".",
						 here, rmsg_database)));
}

/*
 * The rate argument of subscribe: NULL, or calls per second from
 * MIN_RATE to MAX_RATE (22023 otherwise).
 */
static void
CheckRateArg(FunctionCallInfo fcinfo, int argno)
{
	double		rate;

	if (PG_ARGISNULL(argno))
		return;
	rate = DatumGetFloat8(DirectFunctionCall1(numeric_float8, PG_GETARG_DATUM(argno)));
	if (!(rate >= MIN_RATE && rate <= MAX_RATE))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("rate must be between %g and %g calls per second, not %g",
						MIN_RATE, MAX_RATE, rate)));
}

/* rmsg.subscribe(queue, handler, batch, concurrency, rate) */
Datum
rmsg_subscribe(PG_FUNCTION_ARGS)
{
	char	   *name;
	Oid			handler;
	int32		batch;
	RmsgQueue	queue;
	Datum		values[6];
	bool		nulls[6] = {false, false, false, false, false, false};

	RmsgEnter("rmsg.subscribe", true);
	name = RmsgTextArg(fcinfo, 0, "queue name");
	handler = HandlerArg(fcinfo, 1);
	batch = RmsgCountArg(fcinfo, 2, "batch", MAX_BATCH);
	nulls[4] = PG_ARGISNULL(3);
	values[4] = nulls[4] ? (Datum) 0 :
		Int32GetDatum(RmsgCountArg(fcinfo, 3, "concurrency", RMSG_MAX_WORKERS));
	CheckRateArg(fcinfo, 4);
	nulls[5] = PG_ARGISNULL(4);
	values[5] = nulls[5] ? (Datum) 0 : PG_GETARG_DATUM(4);
	(void) RmsgCheckHandler(handler, false);
	CheckMayExecute(handler);

	RmsgSpiConnect();
	/* as a put does: a concurrent drop_queue waits for us, or we for it */
	queue = RmsgOpenQueueFor(name, AccessShareLock, RMSG_MANAGE | RMSG_GET);
	RmsgRefuseRemoteQueue(&queue, name, "rmsg.subscribe");
	values[0] = Int32GetDatum(queue.queue_id);
	values[1] = ObjectIdGetDatum(handler);
	values[2] = Int32GetDatum(batch);
	RmsgLockRole(GetUserId());
	values[3] = ObjectIdGetDatum(GetUserId());
	RmsgPlanExecute(&subscribe_plan, values, nulls, true, 0);
	RmsgSpiFinish();
	RmsgHandlersChangedAtCommit();
	WarnIfNotServed();
	PG_RETURN_VOID();
}

/* rmsg.unsubscribe(queue) */
Datum
rmsg_unsubscribe(PG_FUNCTION_ARGS)
{
	char	   *name;
	RmsgQueue	queue;
	Datum		arg;

	RmsgEnter("rmsg.unsubscribe", true);
	name = RmsgTextArg(fcinfo, 0, "queue name");
	RmsgSpiConnect();
	queue = RmsgOpenQueueFor(name, AccessShareLock, RMSG_MANAGE);
	arg = Int32GetDatum(queue.queue_id);
	RmsgPlanExecute(&unsubscribe_plan, &arg, NULL, true, 0);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("queue \"%s\" has no handler", name)));
	RmsgSpiFinish();
	RmsgHandlersChangedAtCommit();
	PG_RETURN_VOID();
}

/* rmsg.set_handler(instance_prefix, handler) */
Datum
rmsg_set_handler(PG_FUNCTION_ARGS)
{
	char	   *prefix;
	Oid			handler;
	Datum		values[3];

	RmsgEnter("rmsg.set_handler", true);
	prefix = PrefixArg(fcinfo, 0);
	handler = HandlerArg(fcinfo, 1);
	(void) RmsgCheckHandler(handler, true);
	CheckMayExecute(handler);

	values[0] = CStringGetTextDatum(prefix);
	values[1] = ObjectIdGetDatum(handler);
	RmsgLockRole(GetUserId());
	values[2] = ObjectIdGetDatum(GetUserId());
	RmsgSpiConnect();
	RmsgPlanExecute(&set_handler_plan, values, NULL, true, 0);
	RmsgSpiFinish();
	RmsgHandlersChangedAtCommit();
	WarnIfNotServed();
	PG_RETURN_VOID();
}

/* rmsg.remove_handler(instance_prefix) */
Datum
rmsg_remove_handler(PG_FUNCTION_ARGS)
{
	char	   *prefix;
	Datum		args[2];

	RmsgEnter("rmsg.remove_handler", true);
	prefix = PrefixArg(fcinfo, 0);
	args[0] = CStringGetTextDatum(prefix);
	args[1] = ObjectIdGetDatum(GetUserId());
	RmsgSpiConnect();
	RmsgPlanExecute(&remove_handler_plan, args, NULL, true, 0);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("no handler of yours for instance prefix \"%s\"", prefix),
				 errdetail("remove_handler removes the handlers of the roles whose privileges the current role has.")));
	RmsgSpiFinish();
	RmsgHandlersChangedAtCommit();
	PG_RETURN_VOID();
}

/*
 * Reads every handler into a list of RmsgHandler, allocated in memory
 * context `into`.  Call inside SPI.
 */
List *
RmsgLoadHandlers(MemoryContext into)
{
	List	   *handlers = NIL;

	RmsgPlanExecute(&load_plan, NULL, NULL, false, 0);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		RmsgHandler *h;
		MemoryContext old = MemoryContextSwitchTo(into);

		h = palloc0(sizeof(RmsgHandler));
		MemoryContextSwitchTo(old);
		/* every column is NOT NULL in its table, or a constant */
		h->for_instances = DatumGetBool(RmsgSpiNotNull(i, "for_instances"));
		text_to_cstring_buffer(DatumGetTextPP(RmsgSpiNotNull(i, "target")),
							   h->target, sizeof(h->target));
		h->queue_id = DatumGetInt32(RmsgSpiNotNull(i, "queue_id"));
		h->handler = DatumGetObjectId(RmsgSpiNotNull(i, "handler"));
		h->owner = DatumGetObjectId(RmsgSpiNotNull(i, "owner"));
		h->batch = DatumGetInt32(RmsgSpiNotNull(i, "batch"));
		h->concurrency = DatumGetInt32(RmsgSpiNotNull(i, "concurrency"));
		h->rate = DatumGetFloat8(RmsgSpiNotNull(i, "rate"));
		/* made here, in a transaction: it reads the catalog (flow.c) */
		RmsgMakeQueueKey(&h->flow_key, h->queue_id);

		old = MemoryContextSwitchTo(into);
		handlers = lappend(handlers, h);
		MemoryContextSwitchTo(old);
	}
	return handlers;
}

/*
 * A handler failed on message msg_id (of `instance`, or of its queue when
 * NULL): says so in the log, in the worker's slot and in the handler's row,
 * the last in the transaction that records the retry or the dead letter.
 * max_deliveries is the queue's, 0 for an instance.  Call inside SPI.
 */
void
RmsgHandlerFailed(const RmsgHandler *h, const char *instance, int64 msg_id,
				  int32 deliveries, int32 max_deliveries, const char *error)
{
	Datum		values[5];

	if (instance == NULL)
		ereport(LOG,
				(errmsg("handler of queue \"%s\" failed on message " INT64_FORMAT " (delivery %d of %d): %s",
						h->target, msg_id, deliveries, max_deliveries, error)));
	else
		ereport(LOG,
				(errmsg("handler of instance \"%s\" failed on message " INT64_FORMAT " (delivery %d): %s",
						instance, msg_id, deliveries, error)));
	RmsgWorkerNoteError(error, false);

	values[0] = h->for_instances ? CStringGetTextDatum(h->target) : Int32GetDatum(h->queue_id);
	values[1] = CStringGetTextDatum(error);
	values[2] = TimestampTzGetDatum(GetCurrentTimestamp());
	values[3] = Int64GetDatum(msg_id);
	values[4] = ObjectIdGetDatum(h->owner);
	RmsgPlanExecute(h->for_instances ? &instance_error_plan : &queue_error_plan,
					values, NULL, false, 0);
}
