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
 * The worker's session serves handlers of many roles, so nothing one of
 * them does may outlast its call.  Each call runs inside its own GUC nest
 * level, undone when it returns (a search_path it set would otherwise
 * steer the worker's and the next handler's statements), and as a
 * security-restricted operation, as PostgreSQL runs an index expression
 * of another role: no temporary tables (which another role's handler would
 * find first by name), no LISTEN, no change of role; and the session-level
 * advisory locks it took are let go when it returns.  Before each call the
 * worker checks again that the role may still execute the function and
 * take the message: get on the queue, receive on the instance.
 *
 * A call that has not returned after rmsg.handler_timeout is cancelled, as
 * pg_cancel_backend would cancel it: a handler that hangs, or a role that
 * registers one that sleeps, cannot keep a worker from the other queues
 * for longer than that.  statement_timeout does not help here: PostgreSQL
 * arms it when a client's statement starts, which never happens in a
 * background worker.
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
#include "storage/latch.h"
#include "storage/lock.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "worker/worker.h"

/* rmsg.retry_delay, rmsg.max_retry_delay, rmsg.handler_timeout (recoverable_msg.c defines them) */
int			rmsg_retry_delay = 1000;
int			rmsg_max_retry_delay = 600000;
int			rmsg_handler_timeout = 300000;

/* Our timer, registered on the first call; and whether it fired. */
static TimeoutId handler_timeout_id = MAX_TIMEOUTS;
static volatile sig_atomic_t handler_timed_out = false;

/*
 * Runs in the SIGALRM handler: asks for a cancel, as SIGINT would, which
 * the handler's next CHECK_FOR_INTERRUPTS turns into an error.
 */
static void
HandlerTimeoutFired(void)
{
	handler_timed_out = true;
	QueryCancelPending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

/*
 * Arms rmsg.handler_timeout for one call.  The timer is registered once per
 * process, on first use: a backend that never calls a handler never takes a
 * timeout slot.
 */
static void
StartHandlerTimer(void)
{
	if (handler_timeout_id == MAX_TIMEOUTS)
		handler_timeout_id = RegisterTimeout(USER_TIMEOUT, HandlerTimeoutFired);
	handler_timed_out = false;
	if (rmsg_handler_timeout > 0)
		enable_timeout_after(handler_timeout_id, rmsg_handler_timeout);
}

/* Disarms it, whether the call returned or failed. */
static void
StopHandlerTimer(void)
{
	if (handler_timeout_id != MAX_TIMEOUTS)
		disable_timeout(handler_timeout_id, false);
}

/*
 * Whether the handler's role may take the messages of its queue (target_id
 * the queue's id) or of instance target_id.
 */
bool
RmsgHandlerMayTake(const RmsgHandler *h, int64 target_id)
{
	AclMode		rights;

	if (!RmsgObjectRights(h->for_instances ? RMSG_INSTANCE : RMSG_QUEUE, target_id,
						  NULL, h->owner, &rights, NULL))
		return false;
	return (rights & (h->for_instances ? RMSG_RECEIVE : RMSG_GET)) != 0;
}

/*
 * Calls the handler with as many of args as it takes, in a subtransaction,
 * for a message of its queue or of instance target_id.  True when it
 * returned; otherwise its subtransaction is rolled back and *error is the
 * error's message, in the caller's memory context.
 */
bool
RmsgCallHandler(const RmsgHandler *h, int64 target_id, Datum *args, bool *nulls,
				char **error)
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
		int			nargs;

		/*
		 * Changed since it was registered?  Then that is this call's error,
		 * as it would be a statement's: the convention, and the owner's
		 * right to execute it, which fmgr does not check, and to take the
		 * message.
		 */
		nargs = RmsgCheckHandler(h->handler, h->for_instances);
		if (pg_proc_aclcheck(h->handler, h->owner, ACL_EXECUTE) != ACLCHECK_OK)
			aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FUNCTION, get_func_name(h->handler));
		if (!RmsgHandlerMayTake(h, target_id))
		{
			if (h->for_instances)
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("role of the handler of instance prefix \"%s\" may no longer take its messages",
								h->target)));
			else
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("role of the handler of queue \"%s\" may no longer take its messages",
								h->target)));
		}
		fmgr_info(h->handler, &flinfo);
		InitFunctionCallInfoData(*fcinfo, &flinfo, nargs, InvalidOid, NULL, NULL);
		for (int i = 0; i < nargs; i++)
		{
			fcinfo->args[i].value = args[i];
			fcinfo->args[i].isnull = nulls[i];
		}

		PushActiveSnapshot(GetTransactionSnapshot());
		StartHandlerTimer();
		(void) RmsgInvokeAsRole(h->owner, fcinfo);
		StopHandlerTimer();

		/*
		 * It returned, but the timer fired after its last check for
		 * interrupts: the cancel it asked for is not meant for the worker.
		 */
		if (handler_timed_out)
			QueryCancelPending = false;
		PopActiveSnapshot();

		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller_context);
		CurrentResourceOwner = caller_owner;
		ok = true;
		/* session-level advisory locks it took are its call's, not the worker's */
		LockReleaseSession(USER_LOCKMETHOD);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		StopHandlerTimer();
		MemoryContextSwitchTo(caller_context);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller_context);
		CurrentResourceOwner = caller_owner;
		if (handler_timed_out && edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			*error = psprintf("handler did not return within rmsg.handler_timeout (%d ms)",
							  rmsg_handler_timeout);
		else
			*error = edata->message ? pstrdup(edata->message) : pstrdup("unknown error");
		handler_timed_out = false;
		FreeErrorData(edata);
		LockReleaseSession(USER_LOCKMETHOD);
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
