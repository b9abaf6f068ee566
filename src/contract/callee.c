/*-------------------------------------------------------------------------
 *
 * callee.c
 *	  The called side of the committed interaction contract: a callee
 *	  answers each call once and keeps its last replies per caller stably,
 *	  so that a caller that lost its log can ask again.
 *
 * The replies live in rmsg.last_call, keyed by (callee, caller, call_id).
 * rmsg.reply stores one in the transaction that did the call's work, which
 * is what makes the work happen exactly once: a second delivery of the
 * call finds the reply (rmsg.accept_call says 'duplicate') or, if it raced
 * the first, fails on the key and rolls its work back.  That transaction
 * commits stably whatever the session's synchronous_commit
 * (core/commit_mode.c): the caller relies on the reply surviving a crash of
 * the callee.  After storing a reply, the callee forgets all but the newest
 * rmsg.last_call_depth replies to that caller: calling again is how a
 * caller releases a reply (its own log holds it stably by then, caller.c).
 *
 * Locking: both functions take a transaction-level lock on the (callee,
 * caller) pair, RMSG_LOCK_CALL_PAIR in ExclusiveLock (core/locks.h), so
 * that a duplicate delivery waits for the first to commit and then finds
 * its reply instead of doing the work again.  The lock is taken after the
 * privilege check, so a role that may not answer as the callee cannot
 * hold it up.
 *
 * Answering as a callee takes the use privilege on its component, which
 * the role that first used the name owns (component_catalog.c): use is for
 * the callee's own code, which answers every caller.  Or it takes call on
 * the callee, for a caller whose name is the role's own (use on that
 * name's component, made the role's own on its first use here): call is
 * what a caller's server's role needs for rmsg.serve_call, and with it
 * alone a role answers its own calls and nobody else's.  The replies are
 * kept by caller name, so without that a role that may call a callee could
 * answer another role's calls to it by hand: forge their replies, or take
 * their call ids first (RequireAnswerRights).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/builtins.h"

#include "contract/contract.h"

PG_FUNCTION_INFO_V1(rmsg_accept_call);
PG_FUNCTION_INFO_V1(rmsg_reply);

/* The replies kept for a pair, newest first.  $1 callee, $2 caller */
static RmsgPlan kept_replies_plan = {
	"SELECT call_id, reply FROM rmsg.last_call"
	" WHERE callee = $1 AND caller = $2 ORDER BY call_id DESC",
	2, {TEXTOID, TEXTOID}
};

/*
 * Stores a reply and releases the replies beyond the newest $5 + 1, in one
 * statement: the callee's hot path.  It stores nothing when the pair has a
 * reply to this call or a newer one; it returns the newest call answered
 * before and whether this one was, for rmsg.reply to raise the error (which
 * takes any write back).  The CTEs share one snapshot, in which the new row
 * is not yet there: keeping $5 of the earlier replies keeps $5 + 1 in all.
 * $1 callee, $2 caller, $3 call_id, $4 reply, $5 depth - 1
 */
static RmsgPlan store_reply_plan = {
	"WITH kept AS ("
	"  SELECT max(call_id) AS newest, coalesce(bool_or(call_id = $3), false) AS answered"
	"    FROM rmsg.last_call WHERE callee = $1 AND caller = $2),"
	" stored AS ("
	"  INSERT INTO rmsg.last_call (callee, caller, call_id, reply)"
	"  SELECT $1, $2, $3, $4 FROM kept WHERE coalesce(newest, 0) < $3"
	"  RETURNING 1),"
	" released AS ("
	"  DELETE FROM rmsg.last_call"
	"   WHERE callee = $1 AND caller = $2 AND EXISTS (SELECT 1 FROM stored)"
	"     AND call_id <= (SELECT call_id FROM rmsg.last_call"
	"                      WHERE callee = $1 AND caller = $2"
	"                      ORDER BY call_id DESC OFFSET $5 LIMIT 1)"
	"  RETURNING 1)"
	" SELECT newest, answered, (SELECT count(*) FROM released) AS released FROM kept",
	5, {TEXTOID, TEXTOID, INT8OID, BYTEAOID, INT8OID}
};

/* Waits for any other transaction answering this caller at this callee. */
static void
LockPair(const char *callee, const char *caller)
{
	(void) RmsgLockName(RMSG_LOCK_CALL_PAIR, callee, caller, ExclusiveLock, true);
}

static int64
CallIdArg(FunctionCallInfo fcinfo, int argno)
{
	int64		call_id;

	RmsgRequireArg(fcinfo, argno, "call_id");
	call_id = PG_GETARG_INT64(argno);
	if (call_id < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid call_id " INT64_FORMAT, call_id),
				 errdetail("Call ids start at 1.")));
	return call_id;
}

/*
 * A call the pair's kept replies do not answer, though a newer call was
 * answered: either the caller released its reply by calling again, or the
 * call is older than one this callee answered and so out of order.
 */
static void
ReportNotKept(const char *callee, const char *caller, int64 call_id,
			  int64 oldest_kept, int64 newest_kept)
{
	if (call_id < oldest_kept)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("call " INT64_FORMAT " from caller \"%s\" is older than the replies callee \"%s\" keeps",
						call_id, caller, callee),
				 errdetail("The oldest reply kept for that caller is to call " INT64_FORMAT "; the caller released the older ones by calling again.",
						   oldest_kept)));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("call " INT64_FORMAT " from caller \"%s\" is older than the newest reply of callee \"%s\"",
					call_id, caller, callee),
			 errdetail("Callee \"%s\" already answered call " INT64_FORMAT " from that caller.",
					   callee, newest_kept)));
}

/*
 * Looks up the pair's kept replies, in the newest committed state even
 * under REPEATABLE READ.  Returns the reply to call_id, or NULL if it is
 * not kept; a call older than the newest kept one is an error then.
 */
static bytea *
KeptReply(Datum *pair, const char *callee, const char *caller, int64 call_id)
{
	int64		oldest = 0;
	int64		newest = 0;
	bool		isnull;

	RmsgPlanExecute(&kept_replies_plan, pair, NULL, true, 0);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		int64		kept = DatumGetInt64(RmsgSpiNotNull(i, "call_id"));

		if (kept == call_id)
			return (bytea *) DatumGetPointer(RmsgSpiCopyValue(i, "reply", &isnull));
		if (i == 0)
			newest = kept;
		oldest = kept;
	}
	if (call_id < newest)
		ReportNotKept(callee, caller, call_id, oldest, newest);
	return NULL;
}

/* Whether the callee keeps replies for the caller.  $1 callee, $2 caller */
static RmsgPlan any_kept_plan = {
	"SELECT EXISTS (SELECT FROM rmsg.last_call WHERE callee = $1 AND caller = $2) AS kept",
	2, {TEXTOID, TEXTOID}
};

/*
 * The rights to answer as callee to caller (see the file's header): use on
 * the callee, or call on it and use on the caller's name, which becomes
 * the role's own if nobody used it yet.  42501 otherwise.
 *
 * A caller's name nobody holds may still have replies kept for it: its
 * component was dropped (its role with it), or a role with use answered
 * it by hand.  Those replies are not the new claimant's to read, nor to be
 * served in place of its own calls' work, so a name with replies kept at
 * the callee is not made a role's own through call (42501); a superuser
 * decides whether they go.
 */
static void
RequireAnswerRights(const char *callee, const char *caller)
{
	AclMode		rights;
	AclMode		caller_rights;

	if (RmsgObjectRights(RMSG_COMPONENT, 0, callee, GetUserId(), &rights, NULL) &&
		(rights & RMSG_USE) == 0 && (rights & RMSG_CALL) != 0)
	{
		if (!RmsgObjectRights(RMSG_COMPONENT, 0, caller, GetUserId(), &caller_rights, NULL))
		{
			Datum		pair[2];
			bool		kept;

			pair[0] = CStringGetTextDatum(callee);
			pair[1] = CStringGetTextDatum(caller);
			RmsgSpiConnect();
			RmsgPlanExecute(&any_kept_plan, pair, NULL, true, 1);
			kept = DatumGetBool(RmsgSpiNotNull(0, "kept"));
			RmsgSpiFinish();
			if (kept)
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("caller name \"%s\" has replies kept at callee \"%s\" from before it was any role's",
								caller, callee),
						 errdetail("A role that may only call callee \"%s\" cannot take a caller's name whose replies are kept there.",
								   callee),
						 errhint("Use another caller name, or have a superuser remove those replies from rmsg.last_call once their caller is gone for good.")));
		}
		(void) RmsgUseComponent(caller, true);
	}
	else
		(void) RmsgUseComponent(callee, true);
}

/*
 * rmsg.accept_call(callee, caller, call_id, request) -> (status, reply)
 *
 * 'new': do the work and rmsg.reply in this transaction.  'duplicate': the
 * call was answered before; send the saved reply again.  A call older than
 * the kept replies is an error: the caller released it.  The request is
 * not kept; the call id names the call.
 */
Datum
rmsg_accept_call(PG_FUNCTION_ARGS)
{
	char	   *callee;
	char	   *caller;
	int64		call_id;
	TupleDesc	tupdesc;
	Datum		values[2];
	Datum		result[2];
	bool		result_nulls[2] = {false, true};
	const char *status = "new";
	bytea	   *reply;

	RmsgEnter("rmsg.accept_call", true);
	callee = RmsgTextArg(fcinfo, 0, "callee");
	caller = RmsgTextArg(fcinfo, 1, "caller");
	call_id = CallIdArg(fcinfo, 2);
	RmsgCheckName(callee, "callee");
	RmsgCheckName(caller, "caller");
	if (!PG_ARGISNULL(3))
		RmsgCheckPayloadSize(VARSIZE_ANY_EXHDR(PG_GETARG_BYTEA_PP(3)));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	RequireAnswerRights(callee, caller);
	LockPair(callee, caller);
	RmsgSpiConnect();
	values[0] = CStringGetTextDatum(callee);
	values[1] = CStringGetTextDatum(caller);
	reply = KeptReply(values, callee, caller, call_id);
	if (reply != NULL)
	{
		status = "duplicate";
		result[1] = PointerGetDatum(reply);
		result_nulls[1] = false;
	}
	RmsgSpiFinish();

	result[0] = CStringGetTextDatum(status);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc),
													  result, result_nulls)));
}

/* The oldest reply kept for the pair, for an error message. */
static int64
OldestKept(Datum *pair)
{
	int64		oldest = 0;

	RmsgPlanExecute(&kept_replies_plan, pair, NULL, true, 0);
	if (SPI_processed > 0)
		oldest = DatumGetInt64(RmsgSpiNotNull(SPI_processed - 1, "call_id"));
	return oldest;
}

/*
 * rmsg.reply(callee, caller, call_id, reply): stores the reply with the
 * work of this transaction, stably, and releases the replies to that
 * caller beyond the newest rmsg.last_call_depth.
 */
Datum
rmsg_reply(PG_FUNCTION_ARGS)
{
	char	   *callee;
	char	   *caller;
	int64		call_id;
	Datum		values[5];
	Datum		newest;
	bool		no_reply_yet;

	RmsgEnter("rmsg.reply", true);
	callee = RmsgTextArg(fcinfo, 0, "callee");
	caller = RmsgTextArg(fcinfo, 1, "caller");
	call_id = CallIdArg(fcinfo, 2);
	RmsgCheckName(callee, "callee");
	RmsgCheckName(caller, "caller");
	if (PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("reply must not be null"),
				 errhint("Reply with an empty reply as ''::bytea.")));
	RmsgCheckPayloadSize(VARSIZE_ANY_EXHDR(PG_GETARG_BYTEA_PP(3)));

	RequireAnswerRights(callee, caller);
	LockPair(callee, caller);
	RmsgSpiConnect();
	values[0] = CStringGetTextDatum(callee);
	values[1] = CStringGetTextDatum(caller);
	values[2] = Int64GetDatum(call_id);
	values[3] = PG_GETARG_DATUM(3);
	values[4] = Int64GetDatum((int64) rmsg_last_call_depth - 1);
	/* the newest committed replies, even under REPEATABLE READ */
	RmsgPlanExecute(&store_reply_plan, values, NULL, true, 0);
	newest = RmsgSpiValue(0, "newest", &no_reply_yet);
	if (DatumGetBool(RmsgSpiNotNull(0, "answered")))
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("call " INT64_FORMAT " from caller \"%s\" already has a reply from callee \"%s\"",
						call_id, caller, callee),
				 errhint("Check rmsg.accept_call before doing a call's work.")));
	if (!no_reply_yet && DatumGetInt64(newest) > call_id)
		ReportNotKept(callee, caller, call_id, OldestKept(values), DatumGetInt64(newest));
	RmsgSpiFinish();

	RmsgRequireStableCommit();
	PG_RETURN_VOID();
}
