/*-------------------------------------------------------------------------
 *
 * serve.c
 *	  The callee's side of rmsg.call: a handler per callee, and
 *	  rmsg.serve_call, which the caller's server calls over libpq.
 *
 * By hand, a callee does accept_call, its work and reply in one
 * transaction (callee.c).  rmsg.serve_call does the same with the function
 * registered for the callee by rmsg.set_callee_handler: accept_call says
 * whether the call is new; for a new one the handler turns the request
 * into a reply, and reply keeps it, all in the transaction of the caller's
 * statement, which commits flushed (callee.c).  A duplicate (the caller
 * sends again a call whose answer it lost) gets the kept reply, and the
 * handler is not called: its work is done once.
 *
 * The handler, handler(caller text, call_id bigint, request bytea) ->
 * bytea, runs as the role that registered it, as the worker's handlers do
 * (RmsgInvokeAsRole, core/privileges.c: its own GUC nest level, a
 * security-restricted operation, no SET ROLE back to the calling role);
 * that role's EXECUTE on the function is checked again before each call.  Registering takes manage on the callee's
 * component (the handler decides what every call to it does) and EXECUTE
 * on the function; serving a call takes what accept_call takes: use on the
 * callee, or call on it for a caller name of the calling role's own
 * (callee.c).  An error in the handler fails the statement, so
 * nothing of the call commits and the caller may send it again.
 *
 * The session is the caller's, so what of it could steer the handler is
 * set aside: the handler runs with a search path of its own (pg_catalog,
 * its schema, pg_temp) and PostgreSQL's defaults for the settings that
 * change what SQL means (RmsgInvokeAsRole), and a session that has made
 * temporary objects is refused (RefuseTemporaryObjects says why).  Other
 * settings (DateStyle, custom ones) reach it, as they reach a SECURITY
 * DEFINER function.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "contract/contract.h"

PG_FUNCTION_INFO_V1(rmsg_set_callee_handler);
PG_FUNCTION_INFO_V1(rmsg_serve_call);

/* $1 callee, $2 handler, $3 owner */
static RmsgPlan set_plan = {
	"INSERT INTO rmsg.callee_handler (callee, handler, owner) VALUES ($1, $2, $3)"
	" ON CONFLICT (callee) DO UPDATE SET handler = $2, owner = $3, created_at = now()",
	3, {TEXTOID, OIDOID, OIDOID}
};

static RmsgPlan remove_plan = {
	"DELETE FROM rmsg.callee_handler WHERE callee = $1",
	1, {TEXTOID}
};

static RmsgPlan lookup_plan = {
	"SELECT handler::oid AS handler, owner::oid AS owner FROM rmsg.callee_handler"
	" WHERE callee = $1",
	1, {TEXTOID}
};

/*
 * accept_call and reply, run as the calling role with their own checks
 * (core/kept_plans.c, RmsgExecuteAsCaller), prepared once per backend.
 */
static SPIPlanPtr accept_call_plan = NULL;
static SPIPlanPtr reply_plan = NULL;


/*
 * A handler must be handler(text, bigint, bytea) returning bytea, a plain
 * function: the call id lets its work name the call (a key in its own
 * tables), as a callee that answers by hand does.
 */
static void
CheckCalleeHandler(Oid handler)
{
	HeapTuple	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(handler));
	Form_pg_proc proc;
	bool		ok;

	if (!HeapTupleIsValid(tuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("callee handler function %u does not exist", handler)));
	proc = (Form_pg_proc) GETSTRUCT(tuple);
	ok = proc->prokind == PROKIND_FUNCTION && !proc->proretset &&
		proc->pronargs == 3 && proc->proargtypes.values[0] == TEXTOID &&
		proc->proargtypes.values[1] == INT8OID && proc->proargtypes.values[2] == BYTEAOID &&
		proc->prorettype == BYTEAOID;
	ReleaseSysCache(tuple);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("callee handler %s must be a plain function (caller text, call_id bigint, request bytea) returning bytea",
						format_procedure(handler))));
}

/* rmsg.set_callee_handler(callee, handler): NULL handler removes it */
Datum
rmsg_set_callee_handler(PG_FUNCTION_ARGS)
{
	char	   *callee;
	Datum		values[3];

	RmsgEnter("rmsg.set_callee_handler", true);
	callee = RmsgTextArg(fcinfo, 0, "callee");
	RmsgCheckName(callee, "component");
	/*
	 * use makes the component on its first use (its maker owns it); then
	 * manage, since the handler decides what every call to the callee does.
	 */
	(void) RmsgUseComponent(callee, true);
	{
		AclMode		rights;

		if (!RmsgObjectRights(RMSG_COMPONENT, 0, callee, GetUserId(), &rights, NULL))
			elog(ERROR, "component \"%s\" vanished while its handler was set", callee);
		RmsgRequireRights(RMSG_COMPONENT, callee, rights, RMSG_MANAGE);
	}
	values[0] = CStringGetTextDatum(callee);
	RmsgSpiConnect();
	if (PG_ARGISNULL(1))
		RmsgPlanExecute(&remove_plan, values, NULL, true, 0);
	else
	{
		Oid			handler = PG_GETARG_OID(1);

		CheckCalleeHandler(handler);
		if (pg_proc_aclcheck(handler, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
			aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FUNCTION, get_func_name(handler));
		values[1] = ObjectIdGetDatum(handler);
		values[2] = ObjectIdGetDatum(GetUserId());
		RmsgPlanExecute(&set_plan, values, NULL, true, 0);
	}
	RmsgSpiFinish();
	PG_RETURN_VOID();
}

/*
 * The handler runs as its owner in the caller's session.  A temporary
 * table the caller made there is found by name before the owner's own
 * whenever the handler's search path does not put pg_temp last (one the
 * handler sets itself, with SET search_path = its_schema, say: PostgreSQL
 * then looks in pg_temp first for tables), and the table's triggers would
 * run as the owner.  A security-restricted operation cannot make temporary
 * objects, but may use those made before.  So a session that has a
 * temporary schema (it made a temporary object, even one dropped since)
 * serves no call; the connection rmsg.call makes never makes one.
 */
static void
RefuseTemporaryObjects(void)
{
	Oid			temp_namespace;
	Oid			temp_toast_namespace;

	GetTempNamespaceState(&temp_namespace, &temp_toast_namespace);
	if (OidIsValid(temp_namespace))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("rmsg.serve_call cannot run in a session that has made temporary objects"),
				 errdetail("A callee's handler runs as its owner, and could find this session's temporary tables, and run their triggers, in place of its own."),
				 errhint("Call rmsg.serve_call in a session that makes no temporary objects.")));
}

/* Calls the handler as its owner; its reply, which must not be NULL. */
static bytea *
CallHandler(const char *callee, Oid handler, Oid owner, text *caller, int64 call_id,
			bytea *request)
{
	Datum		reply;
	LOCAL_FCINFO(call, 3);
	FmgrInfo	flinfo;

	CheckCalleeHandler(handler);
	if (pg_proc_aclcheck(handler, owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the role of the handler of callee \"%s\" may no longer execute %s",
						callee, format_procedure(handler))));
	fmgr_info(handler, &flinfo);
	InitFunctionCallInfoData(*call, &flinfo, 3, InvalidOid, NULL, NULL);
	call->args[0].value = PointerGetDatum(caller);
	call->args[0].isnull = false;
	call->args[1].value = Int64GetDatum(call_id);
	call->args[1].isnull = false;
	call->args[2].value = PointerGetDatum(request);
	call->args[2].isnull = request == NULL;

	if (request == NULL && flinfo.fn_strict)
	{
		call->isnull = true;
		reply = (Datum) 0;
	}
	else
		reply = RmsgInvokeAsRole(owner, call);
	if (call->isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the handler of callee \"%s\" returned no reply", callee)));
	return DatumGetByteaPCopy(reply);
}

/* rmsg.serve_call(callee, caller, call_id, request) -> bytea */
Datum
rmsg_serve_call(PG_FUNCTION_ARGS)
{
	char	   *callee;
	int64		call_id;
	bytea	   *request = PG_ARGISNULL(3) ? NULL : PG_GETARG_BYTEA_PP(3);
	Datum		args[4];
	Oid			types[4] = {TEXTOID, TEXTOID, INT8OID, BYTEAOID};
	char		nulls[4] = {' ', ' ', ' ', PG_ARGISNULL(3) ? 'n' : ' '};
	bool		isnull;
	char	   *status;
	bytea	   *reply;
	Oid			handler;
	Oid			owner;

	RmsgEnter("rmsg.serve_call", true);
	RefuseTemporaryObjects();
	callee = RmsgTextArg(fcinfo, 0, "callee");
	(void) RmsgTextArg(fcinfo, 1, "caller");
	RmsgRequireArg(fcinfo, 2, "call_id");
	call_id = PG_GETARG_INT64(2);

	/*
	 * accept_call as the calling role, which must be allowed to: its
	 * checks are the ones a callee that answers by hand gets.  Qualified
	 * names and given argument types: nothing is looked up in the
	 * caller's search_path.
	 */
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	args[0] = PG_GETARG_DATUM(0);
	args[1] = PG_GETARG_DATUM(1);
	args[2] = Int64GetDatum(call_id);
	args[3] = request == NULL ? (Datum) 0 : PointerGetDatum(request);
	RmsgExecuteAsCaller(&accept_call_plan, 4, "SELECT status, reply FROM rmsg.accept_call($1, $2, $3, $4)",
				types, args, nulls);
	status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (strcmp(status, "duplicate") == 0)
	{
		Datum		kept = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);

		reply = isnull ? NULL : (bytea *) SPI_palloc(VARSIZE_ANY(DatumGetPointer(kept)));
		if (reply != NULL)
			memcpy(reply, DatumGetPointer(kept), VARSIZE_ANY(DatumGetPointer(kept)));
		SPI_finish();
		if (reply == NULL)
			PG_RETURN_NULL();
		PG_RETURN_BYTEA_P(reply);
	}

	/* a new call: the callee's handler, as its role */
	RmsgSpiConnect();
	RmsgPlanExecute(&lookup_plan, args, NULL, true, 1);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("callee \"%s\" has no handler on this server", callee),
				 errhint("Register one with rmsg.set_callee_handler.")));
	handler = DatumGetObjectId(RmsgSpiNotNull(0, "handler"));
	owner = DatumGetObjectId(RmsgSpiNotNull(0, "owner"));
	RmsgSpiFinish();
	reply = CallHandler(callee, handler, owner, PG_GETARG_TEXT_PP(1), call_id, request);

	/* the reply kept with the work, in this transaction */
	args[3] = PointerGetDatum(reply);
	nulls[3] = ' ';
	RmsgExecuteAsCaller(&reply_plan, 4, "SELECT rmsg.reply($1, $2, $3, $4)", types, args, nulls);
	reply = (bytea *) SPI_palloc(VARSIZE_ANY(reply));
	memcpy(reply, DatumGetPointer(args[3]), VARSIZE_ANY(DatumGetPointer(args[3])));
	SPI_finish();
	PG_RETURN_BYTEA_P(reply);
}
