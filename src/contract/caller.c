/*-------------------------------------------------------------------------
 *
 * caller.c
 *	  The calling side of the committed interaction contract: deterministic
 *	  call ids, a lazily written log of calls and replies, forces only when
 *	  a callee is about to release a reply the log does not yet hold
 *	  stably, and restart and replay after a crash.
 *
 * A caller is an application component that runs deterministically between
 * its calls.  Its log is two tables:
 *
 *	 rmsg.caller	one row per caller: the next call id, the last checkpoint
 *					(its state and the call id it covers), and the incarnation
 *					of shared memory the caller was last (re)started in
 *	 rmsg.call_log	one row per call since the checkpoint: callee, request
 *					and, once recorded, the reply
 *
 * Every write to them commits lazily (core/commit_mode.c), so a crash may
 * lose the newest of them.  That is safe because a callee keeps its last
 * replies per caller stably (callee.c) until the caller calls it again, and
 * prepare_call forces the WAL before a call that would release a reply the
 * log does not yet hold stably (called_components.c).  After a crash the
 * caller restarts from its checkpoint and runs again: prepare_call hands
 * out the same call ids in the same order, returns each reply the log
 * kept, and for a lost one the call is sent again and the callee answers
 * it from what it kept.
 *
 * A crash of the server may lose log writes the application has already
 * acted on, so its in-memory state can be ahead of the log.  prepare_call
 * and the other writers therefore refuse a caller that was not restarted
 * in the current incarnation of shared memory, which is made anew at every
 * server start and after every crash.  For that the caller's row must
 * survive any crash: the transaction that makes it commits stably.
 *
 * Locking: two sessions acting for one caller are serialized by the row
 * lock on the caller's row, which every prepare_call, checkpoint and
 * restart takes by updating it, until its transaction ends.  The
 * called-component table has a lock of its own (called_components.c).
 *
 * Acting as a caller takes the use privilege on its component, which the
 * role that first used the name owns (component_catalog.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "contract/contract.h"

PG_FUNCTION_INFO_V1(rmsg_prepare_call);
PG_FUNCTION_INFO_V1(rmsg_record_reply);
PG_FUNCTION_INFO_V1(rmsg_force_log);
PG_FUNCTION_INFO_V1(rmsg_checkpoint);
PG_FUNCTION_INFO_V1(rmsg_restart);
PG_FUNCTION_INFO_V1(rmsg_replay);

/*
 * Takes the next call id and the caller's row lock, reads what the log
 * holds under that id and the caller's previous call to the callee, and
 * logs the call unless the log has it already, all in one statement: it is
 * the caller's hot path.  Should a check of the results fail, the error
 * takes the insert back with it.  The CTEs share one snapshot, so the reads
 * never see the row the insert adds.  $1 caller, $2 callee, $3 request
 */
static RmsgPlan take_call_id_plan = {
	"WITH taken AS ("
	"  UPDATE rmsg.caller SET next_call_id = next_call_id + 1"
	"   WHERE caller = $1 RETURNING next_call_id - 1 AS call_id, incarnation),"
	" logged AS ("
	"  SELECT l.callee, l.request, l.reply FROM taken t"
	"    JOIN rmsg.call_log l ON l.caller = $1 AND l.call_id = t.call_id),"
	" added AS ("
	"  INSERT INTO rmsg.call_log (caller, call_id, callee, request)"
	"  SELECT $1, t.call_id, $2, $3 FROM taken t"
	"   WHERE NOT EXISTS (SELECT 1 FROM logged) RETURNING 1)"
	" SELECT t.call_id, t.incarnation, l.callee AS logged_callee,"
	"        l.request AS logged_request, l.reply AS logged_reply,"
	"        p.call_id AS previous_call_id, p.replied AS previous_replied,"
	"        (SELECT count(*) FROM added) AS added"
	"   FROM taken t"
	"   LEFT JOIN logged l ON true"
	"   LEFT JOIN LATERAL ("
	"        SELECT c.call_id, c.reply IS NOT NULL AS replied FROM rmsg.call_log c"
	"         WHERE c.caller = $1 AND c.callee = $2 AND c.call_id < t.call_id"
	"         ORDER BY c.call_id DESC LIMIT 1) p ON true",
	3, {TEXTOID, TEXTOID, BYTEAOID}
};

/* A new caller's row.  $1 caller, $2 incarnation */
static RmsgPlan new_caller_plan = {
	"INSERT INTO rmsg.caller (caller, next_call_id, incarnation)"
	" VALUES ($1, 1, $2) ON CONFLICT (caller) DO NOTHING",
	2, {TEXTOID, TIMESTAMPTZOID}
};

/* $1 caller, $2 call_id */
static RmsgPlan logged_call_plan = {
	"SELECT callee, request, reply FROM rmsg.call_log"
	" WHERE caller = $1 AND call_id = $2",
	2, {TEXTOID, INT8OID}
};

/* $1 caller */
static RmsgPlan incarnation_plan = {
	"SELECT incarnation FROM rmsg.caller WHERE caller = $1",
	1, {TEXTOID}
};

/*
 * The common case in one statement: a call without a reply, of a caller
 * restarted in this incarnation.  $1 caller, $2 call_id, $3 reply,
 * $4 incarnation
 */
static RmsgPlan record_reply_plan = {
	"UPDATE rmsg.call_log l SET reply = $3"
	"  FROM rmsg.caller c"
	" WHERE l.caller = $1 AND l.call_id = $2 AND l.reply IS NULL"
	"   AND c.caller = $1 AND c.incarnation = $4"
	" RETURNING l.callee",
	4, {TEXTOID, INT8OID, BYTEAOID, TIMESTAMPTZOID}
};

/* $1 caller, $2 state */
static RmsgPlan checkpoint_plan = {
	"UPDATE rmsg.caller SET checkpoint_call_id = next_call_id - 1,"
	"       state = $2, checkpointed_at = now()"
	" WHERE caller = $1 RETURNING checkpoint_call_id, incarnation",
	2, {TEXTOID, JSONBOID}
};

/* $1 caller, $2 checkpoint call id */
static RmsgPlan unreplied_call_plan = {
	"SELECT call_id FROM rmsg.call_log"
	" WHERE caller = $1 AND call_id <= $2 AND reply IS NULL"
	" ORDER BY call_id LIMIT 1",
	2, {TEXTOID, INT8OID}
};

/* $1 caller, $2 checkpoint call id */
static RmsgPlan forget_calls_plan = {
	"DELETE FROM rmsg.call_log WHERE caller = $1 AND call_id <= $2",
	2, {TEXTOID, INT8OID}
};

/* The calls logged since the checkpoint.  $1 caller */
static RmsgPlan replay_plan = {
	"SELECT l.call_id, l.callee, l.request, l.reply"
	"  FROM rmsg.call_log l JOIN rmsg.caller c ON c.caller = l.caller"
	" WHERE l.caller = $1 AND l.call_id > c.checkpoint_call_id"
	" ORDER BY l.call_id",
	1, {TEXTOID}
};

/* $1 caller, $2 incarnation */
static RmsgPlan restart_plan = {
	"UPDATE rmsg.caller SET next_call_id = checkpoint_call_id + 1, incarnation = $2"
	" WHERE caller = $1 RETURNING state",
	2, {TEXTOID, TIMESTAMPTZOID}
};

/*
 * Everything a contract function writes is the caller's log, committed
 * lazily (core/commit_mode.c): its statements, and the WAL their reads may
 * write as a side effect, such as pruning old row versions of
 * rmsg.call_log.
 * Each function connects to SPI and marks the start of its log writes in
 * one go, and marks their end as it finishes.
 */
static void
LogBegin(void)
{
	RmsgSpiConnect();
	RmsgLazyWriteBegin(RMSG_LAZY_CALLER_LOG);
}

static void
LogEnd(void)
{
	RmsgLazyWriteEnd();
	RmsgSpiFinish();
}

/*
 * Runs a statement on the caller's row ($1), making the row first when the
 * caller is new; the result is in SPI_tuptable.  The row's creation is the
 * one log write that must not be lazy: a row lost in a crash would make the
 * caller look new, and a new caller is not asked to restart, so an
 * application whose state is ahead of the log would go on with call ids
 * the log no longer knows.  So the transaction that makes the row commits
 * stably, once in a caller's life.
 */
static void
ExecuteForCaller(RmsgPlan *plan, Datum *values, const bool *nulls)
{
	Datum		new_caller[2];

	RmsgPlanExecute(plan, values, nulls, false, 0);
	if (SPI_processed > 0)
		return;
	new_caller[0] = values[0];
	new_caller[1] = TimestampTzGetDatum(RmsgIncarnation());
	RmsgPlanExecute(&new_caller_plan, new_caller, NULL, false, 0);
	if (SPI_processed > 0)
		RmsgRequireStableCommit();
	RmsgPlanExecute(plan, values, nulls, false, 0);
	if (SPI_processed == 0)
		elog(ERROR, "caller \"%s\" vanished while it was being made",
			 TextDatumGetCString(values[0]));
}

/*
 * Refuses a caller restarted in an earlier incarnation of shared memory:
 * the server crashed or restarted since, and the log may have lost writes
 * the application already acted on.
 */
static void
CheckIncarnation(const char *caller, TimestampTz incarnation)
{
	if (incarnation != RmsgIncarnation())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("caller \"%s\" must be restarted", caller),
				 errdetail("The server restarted since the caller last started, and the caller's latest log writes may be lost."),
				 errhint("Call rmsg.restart('%s') and run the caller again from the state it returns.", caller)));
}

static bool
SameBytes(Datum a, bool a_null, Datum b, bool b_null)
{
	if (a_null || b_null)
		return a_null == b_null;
	return DatumGetBool(DirectFunctionCall2(byteaeq, a, b));
}

/*
 * A replayed call must be the call the log holds under its id: the caller
 * runs deterministically from its checkpoint, so anything else means it
 * did not, and the log's replies would be wrong for it.
 */
static void
CheckSameCall(const char *caller, int64 call_id, const char *callee,
			  const char *logged_callee, Datum request, bool request_null,
			  Datum logged_request, bool logged_request_null)
{
	if (strcmp(callee, logged_callee) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("call " INT64_FORMAT " of caller \"%s\" went to callee \"%s\", not \"%s\"",
						call_id, caller, logged_callee, callee),
				 errdetail("A caller must repeat its calls in the same order after rmsg.restart.")));
	if (!SameBytes(request, request_null, logged_request, logged_request_null))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("call " INT64_FORMAT " of caller \"%s\" to \"%s\" had a different request",
						call_id, caller, callee),
				 errdetail("A caller must repeat its calls in the same order after rmsg.restart.")));
}

/*
 * A callee keeps its replies to a caller only until the caller calls it
 * again, so calling it before its previous reply is in the log could lose
 * that reply for good.
 */
static void
ReportUnrepliedCall(const char *caller, const char *callee, int64 previous)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("call " INT64_FORMAT " of caller \"%s\" to \"%s\" has no recorded reply",
					previous, caller, callee),
			 errdetail("Calling \"%s\" again would release its reply to that call.", callee),
			 errhint("Send call " INT64_FORMAT " again and record its reply with rmsg.record_reply first.",
					 previous)));
}

/*
 * rmsg.prepare_call(caller, callee, request)
 *	 -> (call_id, forced, logged_reply)
 *
 * The caller's next call id.  When the log already holds a reply under it
 * (the caller is replaying after rmsg.restart), that reply is returned and
 * the call must not be sent.  Otherwise the call is logged (if it is not
 * already) and the WAL is forced first iff the callee is about to release a
 * reply that is not yet stable here.
 */
Datum
rmsg_prepare_call(PG_FUNCTION_ARGS)
{
	char	   *caller;
	char	   *callee = RmsgTextArg(fcinfo, 1, "callee");
	bool		request_null = PG_ARGISNULL(2);
	Datum		request = request_null ? (Datum) 0 : PG_GETARG_DATUM(2);
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	Datum		result[3];
	bool		result_nulls[3] = {false, false, true};
	int64		call_id;
	bool		isnull;
	bool		logged;
	bool		forced = false;

	RmsgEnter("rmsg.prepare_call", true);
	caller = RmsgTextArg(fcinfo, 0, "caller");
	RmsgCheckName(caller, "caller");
	RmsgUseComponent(caller, true);
	RmsgCheckName(callee, "callee");
	if (!request_null)
		RmsgCheckPayloadSize(VARSIZE_ANY_EXHDR(PG_GETARG_BYTEA_PP(2)));
	RmsgRequireShmem("the committed interaction contract");
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	LogBegin();
	values[0] = CStringGetTextDatum(caller);
	values[1] = CStringGetTextDatum(callee);
	values[2] = request;
	nulls[2] = request_null;
	ExecuteForCaller(&take_call_id_plan, values, nulls);
	call_id = DatumGetInt64(RmsgSpiNotNull(0, "call_id"));
	CheckIncarnation(caller, DatumGetTimestampTz(RmsgSpiNotNull(0, "incarnation")));

	(void) RmsgSpiValue(0, "logged_callee", &isnull);
	logged = !isnull;
	if (logged)
	{
		bool		logged_request_null;
		Datum		logged_request = RmsgSpiValue(0, "logged_request", &logged_request_null);
		Datum		reply = RmsgSpiCopyValue(0, "logged_reply", &result_nulls[2]);

		CheckSameCall(caller, call_id, callee, RmsgSpiText(0, "logged_callee"),
					  request, request_null, logged_request, logged_request_null);
		result[2] = reply;
	}

	/* Not replayed: this call is sent. */
	if (result_nulls[2])
	{
		bool		no_previous;
		bool		previous_replied = DatumGetBool(RmsgSpiValue(0, "previous_replied",
																	 &no_previous));

		if (!no_previous && !previous_replied)
			ReportUnrepliedCall(caller, callee,
								DatumGetInt64(RmsgSpiNotNull(0, "previous_call_id")));
		forced = RmsgBeforeSend(caller, callee);
	}
	LogEnd();

	result[0] = Int64GetDatum(call_id);
	result[1] = BoolGetDatum(forced);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc),
													  result, result_nulls)));
}

/*
 * rmsg.record_reply(caller, call_id, reply): logs the reply, lazily.  Its
 * CLSN is noted in the called-component table when the transaction
 * commits.  Recording the same reply again changes nothing.
 */
Datum
rmsg_record_reply(PG_FUNCTION_ARGS)
{
	char	   *caller;
	int64		call_id;
	Datum		reply;
	Datum		values[4];

	RmsgEnter("rmsg.record_reply", true);
	caller = RmsgTextArg(fcinfo, 0, "caller");
	RmsgCheckName(caller, "caller");
	RmsgUseComponent(caller, true);
	RmsgRequireArg(fcinfo, 1, "call_id");
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("reply must not be null"),
				 errhint("Record an empty reply as ''::bytea.")));
	call_id = PG_GETARG_INT64(1);
	reply = PG_GETARG_DATUM(2);
	RmsgCheckPayloadSize(VARSIZE_ANY_EXHDR(PG_GETARG_BYTEA_PP(2)));
	RmsgRequireShmem("the committed interaction contract");

	LogBegin();
	values[0] = CStringGetTextDatum(caller);
	values[1] = Int64GetDatum(call_id);
	values[2] = reply;
	values[3] = TimestampTzGetDatum(RmsgIncarnation());
	RmsgPlanExecute(&record_reply_plan, values, NULL, false, 0);
	if (SPI_processed > 0)
		RmsgReplyRecorded(caller, RmsgSpiText(0, "callee"), call_id);
	else
	{
		/* Why not: the caller needs a restart, or the call is unknown or replied. */
		Datum		logged_reply;
		bool		logged_null;

		RmsgPlanExecute(&incarnation_plan, values, NULL, false, 0);
		if (SPI_processed > 0)
			CheckIncarnation(caller, DatumGetTimestampTz(RmsgSpiNotNull(0, "incarnation")));
		RmsgPlanExecute(&logged_call_plan, values, NULL, false, 0);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("call " INT64_FORMAT " of caller \"%s\" does not exist", call_id, caller),
					 errhint("Record the reply to a call_id that rmsg.prepare_call returned.")));
		logged_reply = RmsgSpiValue(0, "reply", &logged_null);
		if (!SameBytes(reply, false, logged_reply, logged_null))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("call " INT64_FORMAT " of caller \"%s\" already has a different reply",
							call_id, caller)));
	}
	LogEnd();
	PG_RETURN_VOID();
}

/*
 * rmsg.force_log(caller): makes everything logged so far stable, as after
 * non-determinism the caller cannot replay (reading a clock, say).
 * Returns the flushed LSN.  The caller's name is checked but not needed:
 * the log is the server's one WAL.
 */
Datum
rmsg_force_log(PG_FUNCTION_ARGS)
{
	char	   *caller;

	RmsgEnter("rmsg.force_log", true);
	caller = RmsgTextArg(fcinfo, 0, "caller");
	RmsgCheckName(caller, "caller");
	RmsgUseComponent(caller, true);
	PG_RETURN_LSN(RmsgForceLog());
}

/*
 * rmsg.checkpoint(caller, state): saves the caller's state as of its last
 * call; restart returns to it, and the log before it is dropped.  A call
 * still waiting for its reply cannot be covered: its reply would be in no
 * state and in no log.
 */
Datum
rmsg_checkpoint(PG_FUNCTION_ARGS)
{
	char	   *caller;
	Datum		values[2];
	int64		covered;

	RmsgEnter("rmsg.checkpoint", true);
	caller = RmsgTextArg(fcinfo, 0, "caller");
	RmsgCheckName(caller, "caller");
	RmsgUseComponent(caller, true);
	RmsgRequireArg(fcinfo, 1, "state");
	RmsgRequireShmem("the committed interaction contract");

	LogBegin();
	values[0] = CStringGetTextDatum(caller);
	values[1] = PG_GETARG_DATUM(1);
	ExecuteForCaller(&checkpoint_plan, values, NULL);
	covered = DatumGetInt64(RmsgSpiNotNull(0, "checkpoint_call_id"));
	CheckIncarnation(caller, DatumGetTimestampTz(RmsgSpiNotNull(0, "incarnation")));

	values[1] = Int64GetDatum(covered);
	RmsgPlanExecute(&unreplied_call_plan, values, NULL, false, 0);
	if (SPI_processed > 0)
	{
		int64		unreplied = DatumGetInt64(RmsgSpiNotNull(0, "call_id"));

		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("call " INT64_FORMAT " of caller \"%s\" has no recorded reply",
						unreplied, caller),
				 errhint("Record its reply with rmsg.record_reply before the checkpoint.")));
	}
	RmsgPlanExecute(&forget_calls_plan, values, NULL, false, 0);
	LogEnd();
	PG_RETURN_VOID();
}

/*
 * rmsg.restart(caller): rewinds the caller to its checkpoint and returns
 * the state saved there (NULL if it never checkpointed: start from the
 * beginning).  prepare_call then hands out the ids after the checkpoint
 * again, with the replies the log kept.
 */
Datum
rmsg_restart(PG_FUNCTION_ARGS)
{
	char	   *caller;
	Datum		values[2];
	Datum		state;
	bool		state_null;

	RmsgEnter("rmsg.restart", true);
	caller = RmsgTextArg(fcinfo, 0, "caller");
	RmsgCheckName(caller, "caller");
	RmsgUseComponent(caller, true);
	RmsgRequireShmem("the committed interaction contract");

	LogBegin();
	values[0] = CStringGetTextDatum(caller);
	values[1] = TimestampTzGetDatum(RmsgIncarnation());
	ExecuteForCaller(&restart_plan, values, NULL);
	state = RmsgSpiCopyValue(0, "state", &state_null);
	LogEnd();
	if (state_null)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(state);
}

/*
 * rmsg.replay(caller): the calls the caller's log holds since its
 * checkpoint, in order; reply is NULL where it was not logged.  Nothing
 * when the caller never called.
 */
Datum
rmsg_replay(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *caller;
	Datum		arg;

	RmsgEnter("rmsg.replay", false);
	caller = RmsgTextArg(fcinfo, 0, "caller");
	RmsgCheckName(caller, "caller");
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (!RmsgUseComponent(caller, false))
		return (Datum) 0;

	RmsgSpiConnect();
	arg = CStringGetTextDatum(caller);
	RmsgPlanExecute(&replay_plan, &arg, NULL, false, 0);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		Datum		values[4];
		bool		nulls[4];

		/* in the order of rmsg.replay's result columns */
		values[0] = RmsgSpiValue(i, "call_id", &nulls[0]);
		values[1] = RmsgSpiValue(i, "callee", &nulls[1]);
		values[2] = RmsgSpiValue(i, "request", &nulls[2]);
		values[3] = RmsgSpiValue(i, "reply", &nulls[3]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	RmsgSpiFinish();
	return (Datum) 0;
}
