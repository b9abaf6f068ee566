/*-------------------------------------------------------------------------
 *
 * commit_mode.c
 *	  How a transaction's commit reaches disk: lazily for writes a crash may
 *	  lose, stably for writes a crash must not lose.
 *
 * Three kinds of our writes may be lost in a crash without harm:
 *
 * - A lease (get, nack, extend, receive) changes when a message is visible,
 *	 nothing more.  A forgotten lease leaves the message ready again, which
 *	 is what the lease's expiry would have done anyway: delivery is at
 *	 least once either way.  (rmsg.lazy_leases = off turns this off.)
 * - A caller's log write (prepare_call, record_reply, checkpoint, restart)
 *	 in the committed interaction contract.  The caller's log does not have
 *	 to be on disk at once: each callee keeps its last replies stably until
 *	 the caller calls it again, and the caller flushes its log before a call
 *	 that would let a callee forget a reply the log does not yet hold stably
 *	 (contract/called_components.c).  A log write lost in a crash is redone
 *	 when the caller replays from its checkpoint.  (rmsg.lazy_caller_log =
 *	 off turns this off, to measure what it saves.)
 * - A remote queue's worker forgetting the messages the other server said
 *	 it holds (worker/transfer.c).  Lost, it sends them again, and the
 *	 receiver skips the numbers it has.
 *
 * A transaction that wrote nothing but such writes commits as if
 * synchronous_commit were off, whatever the session's setting.  PostgreSQL
 * keeps such commits consistent: any later synchronous commit flushes the
 * WAL past them first.  A transaction that wrote anything else, before or
 * after, commits under the session's own synchronous_commit: we never make
 * someone else's write lazy.  We tell the two apart by the transaction id
 * (assigned on the first write) and by XactLastRecEnd, this backend's end of
 * WAL, noted after each lazy write: if it moved since, someone else wrote.
 *
 * The opposite case is a write the contract needs on disk as soon as its
 * transaction commits: a callee's reply (contract/callee.c), which the
 * caller may depend on after a crash, and the first row of a caller or a
 * component (contract/caller.c, contract/component_catalog.c).  If the
 * session has synchronous_commit off, such a transaction commits with it
 * set to local.
 *
 * State is backend-local and reset at every transaction end
 * (recoverable_msg.c calls in before the commit record and at the end).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "utils/guc.h"

#include "core/core.h"

/* rmsg.lazy_leases and rmsg.lazy_caller_log (recoverable_msg.c defines them) */
bool		rmsg_lazy_leases = true;
bool		rmsg_lazy_caller_log = true;

typedef enum LazyOnlyState
{
	LAZY_NONE,					/* no lazy write in this transaction */
	LAZY_ONLY,					/* nothing but lazy writes so far */
	LAZY_MIXED					/* other writes too: commit as configured */
} LazyOnlyState;

static LazyOnlyState lazy_state = LAZY_NONE;
static XLogRecPtr wal_end_after_lazy = InvalidXLogRecPtr;
static bool wrote_lease = false;
static bool wrote_caller_log = false;
static bool stable_required = false;

/* Called before a write a crash may lose (see the banner). */
void
RmsgLazyWriteBegin(RmsgLazyKind kind)
{
	if (kind == RMSG_LAZY_LEASE)
		wrote_lease = true;
	else if (kind == RMSG_LAZY_CALLER_LOG)
		wrote_caller_log = true;
	switch (lazy_state)
	{
		case LAZY_NONE:
			lazy_state = TransactionIdIsValid(GetTopTransactionIdIfAny())
				? LAZY_MIXED : LAZY_ONLY;
			break;
		case LAZY_ONLY:
			if (XactLastRecEnd != wal_end_after_lazy)
				lazy_state = LAZY_MIXED;
			break;
		case LAZY_MIXED:
			break;
	}
}

/* Called after such a write: remember where our WAL ended. */
void
RmsgLazyWriteEnd(void)
{
	if (lazy_state == LAZY_ONLY)
		wal_end_after_lazy = XactLastRecEnd;
}

/*
 * This transaction wrote something the contract needs on disk once it
 * commits (a reply, a caller's or a component's first row): its commit
 * must be flushed, whatever else it wrote.
 */
void
RmsgRequireStableCommit(void)
{
	stable_required = true;
}

/*
 * Before the commit record: choose how it reaches disk by setting
 * synchronous_commit for this transaction only (GUC_ACTION_LOCAL), so the
 * session's own setting is back once the transaction ends.  A stable
 * write wins over lazy ones; a transaction is lazy only when every write
 * it made was lazy and the setting for each kind it made allows it.
 */
void
RmsgCommitModePreCommit(void)
{
	if (stable_required)
	{
		if (synchronous_commit == SYNCHRONOUS_COMMIT_OFF)
			(void) set_config_option("synchronous_commit", "local",
									 PGC_USERSET, PGC_S_SESSION,
									 GUC_ACTION_LOCAL, true, 0, false);
		return;
	}
	if (lazy_state == LAZY_ONLY && XactLastRecEnd == wal_end_after_lazy &&
		(!wrote_lease || rmsg_lazy_leases) &&
		(!wrote_caller_log || rmsg_lazy_caller_log))
		(void) set_config_option("synchronous_commit", "off",
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
}

/* At every transaction end (commit, abort or PREPARE): forget it all. */
void
RmsgCommitModeXactEnd(void)
{
	lazy_state = LAZY_NONE;
	wal_end_after_lazy = InvalidXLogRecPtr;
	wrote_lease = false;
	wrote_caller_log = false;
	stable_required = false;
}
