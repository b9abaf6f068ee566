/*-------------------------------------------------------------------------
 *
 * commit_mode.c
 *	  Lazy commits for transactions whose only writes are leases.
 *
 * A get, nack or extend changes when a message is visible, nothing more.
 * If the server crashes before such a commit reaches disk, the lease is
 * forgotten and the message is ready again, which is what the expiry of the
 * lease would have done anyway: delivery is at least once either way.  So a
 * transaction that wrote nothing but leases need not wait for its WAL flush;
 * it commits as if synchronous_commit were off.  PostgreSQL keeps such
 * commits consistent: any later synchronous commit (an ack, say) flushes
 * the WAL past them first.
 *
 * A transaction that wrote anything else, before or after a lease, commits
 * under the session's own synchronous_commit.  We tell the two apart by the
 * transaction id (assigned on the first write) and by XactLastRecEnd, this
 * backend's end of WAL, noted after each lease write: if it moved since,
 * someone else wrote.
 *
 * State is backend-local and reset at every transaction end.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "utils/guc.h"

#include "rmsg.h"

typedef enum LeaseOnlyState
{
	LEASE_NONE,					/* no lease written in this transaction */
	LEASE_ONLY,					/* nothing but leases written so far */
	LEASE_MIXED					/* other writes too: commit as configured */
} LeaseOnlyState;

static LeaseOnlyState lease_state = LEASE_NONE;
static XLogRecPtr wal_end_after_lease = InvalidXLogRecPtr;

/* Called before a lease write. */
void
RmsgLeaseWriteBegin(void)
{
	switch (lease_state)
	{
		case LEASE_NONE:
			lease_state = TransactionIdIsValid(GetTopTransactionIdIfAny())
				? LEASE_MIXED : LEASE_ONLY;
			break;
		case LEASE_ONLY:
			if (XactLastRecEnd != wal_end_after_lease)
				lease_state = LEASE_MIXED;
			break;
		case LEASE_MIXED:
			break;
	}
}

/* Called after a lease write: remember where our WAL ended. */
void
RmsgLeaseWriteEnd(void)
{
	if (lease_state == LEASE_ONLY)
		wal_end_after_lease = XactLastRecEnd;
}

/*
 * Before the commit record: a lease-only transaction commits lazily.  The
 * setting is LOCAL, so it ends with the transaction.
 */
void
RmsgCommitModePreCommit(void)
{
	if (lease_state == LEASE_ONLY && rmsg_lazy_leases &&
		XactLastRecEnd == wal_end_after_lease)
		(void) set_config_option("synchronous_commit", "off",
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
}

void
RmsgCommitModeXactEnd(void)
{
	lease_state = LEASE_NONE;
	wal_end_after_lease = InvalidXLogRecPtr;
}
