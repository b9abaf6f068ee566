/*-------------------------------------------------------------------------
 *
 * call.c
 *	  rmsg.call: a call of the committed interaction contract to a callee
 *	  on another server, made by the extension.
 *
 * By hand a caller does four things per call (contract/caller.c,
 * contract/callee.c): prepare_call, which logs the call, forces the log
 * when the contract requires it and hands back the reply when the log has
 * it already (a replay after a crash); the callee's accept_call, work and
 * reply in one transaction there; record_reply here.  rmsg.call does the
 * same in the caller's transaction: prepare_call; if the log held the
 * reply, that reply, and nothing is sent; else rmsg.serve_call (contract/
 * serve.c) on the callee's server, over a libpq connection made from the
 * foreign server and the calling role's user mapping (connection.c), which
 * runs the callee's handler once per call id; then record_reply.
 *
 * A caller is deterministic between its calls and, after any failure,
 * restarts from its checkpoint (rmsg.restart) and runs again, as the
 * contract asks: its calls get the same call ids, a call the callee
 * answered gets the kept reply back without the work being done again,
 * and a reply the log kept is returned without sending.  So a crash of
 * either server, or a connection lost after the callee committed, does
 * each call's work once.
 *
 * Commit between two calls to the same callee: the reply of the first is
 * known stable only once its transaction commits, and the callee forgets
 * it when called again (with rmsg.last_call_depth 1).  rmsg.call refuses a
 * second call to a callee whose reply this transaction recorded (55000).
 *
 * The connection is the backend's own, kept for its next calls and
 * dropped on any error.  A role that is not a superuser connects with the
 * password of its mapping, as postgres_fdw requires.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "foreign/foreign.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "contract/contract.h"
#include "remote/remote.h"

PG_FUNCTION_INFO_V1(rmsg_call);

/*
 * The contract's own functions, run as the calling role with its checks
 * (core/kept_plans.c, RmsgExecuteAsCaller), prepared once per backend: a
 * parse per call cost rmsg.call a sixth of its rate.
 */
static SPIPlanPtr prepare_call_plan = NULL;
static SPIPlanPtr record_reply_plan = NULL;

/* The request as a text parameter (bytea's hex form), or NULL. */
static const char *
RequestParam(bytea *request)
{
	if (request == NULL)
		return NULL;
	return DatumGetCString(DirectFunctionCall1(byteaout, PointerGetDatum(request)));
}

/* rmsg.call(caller, server, callee, request) -> bytea */
Datum
rmsg_call(PG_FUNCTION_ARGS)
{
	char	   *caller;
	char	   *server;
	char	   *callee;
	bytea	   *request = PG_ARGISNULL(3) ? NULL : PG_GETARG_BYTEA_PP(3);
	Datum		args[3];
	Oid			types[3] = {TEXTOID, TEXTOID, BYTEAOID};
	char		nulls[3] = {' ', ' ', PG_ARGISNULL(3) ? 'n' : ' '};
	int64		call_id;
	bool		isnull;
	Datum		logged;
	bytea	   *reply;
	RmsgConnInfo *info;
	PGconn	   *conn;
	PGresult   *volatile result = NULL;
	const char *params[4];
	char		call_id_text[24];
	char	   *volatile reply_text = NULL;

	RmsgEnter("rmsg.call", true);
	caller = RmsgTextArg(fcinfo, 0, "caller");
	server = RmsgTextArg(fcinfo, 1, "server");
	callee = RmsgTextArg(fcinfo, 2, "callee");
	RmsgCheckName(caller, "component");
	RmsgCheckName(callee, "component");
	RmsgCheckForeignServer(server);
	if (RmsgReplyPendingFor(caller, callee))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("caller \"%s\" called \"%s\" in this transaction already", caller, callee),
				 errdetail("Calling it again releases a reply whose log write has not committed."),
				 errhint("Commit between two calls to the same callee.")));

	/* prepare_call as the calling role, with its own checks */
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	args[0] = PG_GETARG_DATUM(0);
	args[1] = PG_GETARG_DATUM(2);
	args[2] = request == NULL ? (Datum) 0 : PointerGetDatum(request);
	RmsgExecuteAsCaller(&prepare_call_plan, 3,
				"SELECT call_id, logged_reply FROM rmsg.prepare_call($1, $2, $3)",
				types, args, nulls);
	call_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	logged = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (!isnull)
	{
		/* a replay: the log has the reply, nothing is sent */
		reply = (bytea *) SPI_palloc(VARSIZE_ANY(DatumGetPointer(logged)));
		memcpy(reply, DatumGetPointer(logged), VARSIZE_ANY(DatumGetPointer(logged)));
		SPI_finish();
		PG_RETURN_BYTEA_P(reply);
	}

	/* the callee's server: accept_call, the handler and reply there */
	info = RmsgRemoteConnInfo(server, GetUserId(), CurrentMemoryContext);
	snprintf(call_id_text, sizeof(call_id_text), INT64_FORMAT, call_id);
	params[0] = callee;
	params[1] = caller;
	params[2] = call_id_text;
	params[3] = RequestParam(request);
	PG_TRY();
	{
		conn = RmsgRemoteConnect(server, GetUserId(), info);
		result = RmsgRemoteExec(conn,
								"SELECT rmsg.serve_call($1, $2, $3::pg_catalog.int8,"
								" $4::pg_catalog.bytea)",
								4, params, -1);
		if (PQntuples(result) != 1 || PQgetisnull(result, 0, 0))
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("callee \"%s\" on server \"%s\" answered call " INT64_FORMAT " with no reply",
							callee, server, call_id)));
		reply_text = pstrdup(PQgetvalue(result, 0, 0));
		PQclear(result);
	}
	PG_CATCH();
	{
		/* whatever state the connection is in, it is not reused */
		if (result != NULL)
			PQclear(result);
		RmsgRemoteDisconnect(server, GetUserId());
		PG_RE_THROW();
	}
	PG_END_TRY();
	reply = DatumGetByteaPP(DirectFunctionCall1(byteain, CStringGetDatum(reply_text)));

	/* logged here, lazily: the callee keeps it until we call it again */
	args[1] = Int64GetDatum(call_id);
	args[2] = PointerGetDatum(reply);
	types[1] = INT8OID;
	nulls[2] = ' ';
	RmsgExecuteAsCaller(&record_reply_plan, 3, "SELECT rmsg.record_reply($1, $2, $3)",
						types, args, nulls);
	{
		bytea	   *copy = (bytea *) SPI_palloc(VARSIZE_ANY(reply));

		memcpy(copy, reply, VARSIZE_ANY(reply));
		SPI_finish();
		PG_RETURN_BYTEA_P(copy);
	}
}
