/*-------------------------------------------------------------------------
 *
 * handler_call.c
 *	  Calling a handler for one message, and what a failure costs it.
 *
 * The handler runs in a subtransaction of the worker's transaction, so its
 * failure undoes exactly what it did, and the worker's own writes around it
 * (the lease with its delivery count, the ack, the retry or the dead letter)
 * commit either way, in one commit: a message is acked in the transaction
 * that did its work, so work and ack survive a crash together or not at
 * all.  It runs as the role that registered it (handlers.c), with
 * SECURITY_LOCAL_USERID_CHANGE so that it cannot SET ROLE its way back to
 * the worker's superuser; the subtransaction's end restores the user.
 *
 * A failed message is tried again after rmsg.retry_delay, twice as long
 * after each further failure, but never longer than rmsg.max_retry_delay.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "rmsg.h"

/*
 * Calls the handler with as many of args as it takes, in a subtransaction.
 * True when it returned; otherwise its subtransaction is rolled back and
 * *error is the error's message, in the caller's memory context.
 */
bool
RmsgCallHandler(const RmsgHandler *h, Datum *args, bool *nulls, char **error)
{
	MemoryContext caller_context = CurrentMemoryContext;
	ResourceOwner caller_owner = CurrentResourceOwner;
	volatile bool ok = false;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(caller_context);

	PG_TRY();
	{
		LOCAL_FCINFO(fcinfo, RMSG_HANDLER_MAX_ARGS);
		FmgrInfo	flinfo;
		Oid			saved_user;
		int			saved_context;
		int			nargs;

		/*
		 * Changed since it was registered?  Then that is this call's error,
		 * as it would be a statement's: the convention, and the owner's
		 * right to execute it, which fmgr does not check.
		 */
		nargs = RmsgCheckHandler(h->handler, h->for_instances);
		if (pg_proc_aclcheck(h->handler, h->owner, ACL_EXECUTE) != ACLCHECK_OK)
			aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FUNCTION, get_func_name(h->handler));
		fmgr_info(h->handler, &flinfo);
		InitFunctionCallInfoData(*fcinfo, &flinfo, nargs, InvalidOid, NULL, NULL);
		for (int i = 0; i < nargs; i++)
		{
			fcinfo->args[i].value = args[i];
			fcinfo->args[i].isnull = nulls[i];
		}

		GetUserIdAndSecContext(&saved_user, &saved_context);
		SetUserIdAndSecContext(h->owner, saved_context | SECURITY_LOCAL_USERID_CHANGE);
		PushActiveSnapshot(GetTransactionSnapshot());
		(void) FunctionCallInvoke(fcinfo);
		PopActiveSnapshot();
		SetUserIdAndSecContext(saved_user, saved_context);

		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller_context);
		CurrentResourceOwner = caller_owner;
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller_context);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller_context);
		CurrentResourceOwner = caller_owner;
		*error = edata->message ? pstrdup(edata->message) : pstrdup("unknown error");
		FreeErrorData(edata);
	}
	PG_END_TRY();

	return ok;
}

/*
 * When a message that failed its `deliveries`-th delivery is tried again;
 * *earliest (0: none yet) is moved to it if it comes first.
 */
TimestampTz
RmsgRetryAt(int32 deliveries, TimestampTz *earliest)
{
	TimestampTz at;
	int64		delay = (int64) rmsg_retry_delay * 1000;	/* ms to us */
	int64		cap = (int64) rmsg_max_retry_delay * 1000;

	for (int i = 1; i < deliveries && delay < cap; i++)
		delay *= 2;
	at = GetCurrentTimestamp() + Min(delay, cap);
	if (*earliest == 0 || at < *earliest)
		*earliest = at;
	return at;
}
