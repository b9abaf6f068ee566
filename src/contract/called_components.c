/*-------------------------------------------------------------------------
 *
 * called_components.c
 *	  The called-component table of the committed interaction contract, in
 *	  shared memory: for each caller and callee, the CLSNs of the caller's
 *	  last replies from that callee, so that prepare_call forces the WAL
 *	  only when a callee is about to release a reply that is not yet stable.
 *
 * A callee keeps its last rmsg.last_call_depth replies per caller (callee.c);
 * calling it again releases the oldest of them.  Before that call the
 * caller's own log must therefore hold that reply stably.  The entry of a
 * (caller, callee) pair remembers, newest call first and up to
 * RMSG_MAX_CALL_DEPTH of them, the CLSN of each reply the caller logged
 * with rmsg.record_reply: the end of the commit record of the transaction
 * that logged it (XactLastCommitEnd).  If the CLSN of the reply the next
 * call releases lies beyond the flushed end of WAL, RmsgBeforeSend forces
 * the WAL up to it; otherwise the call goes out without a flush.  At the
 * default depth of 1 the rule reads: before calling a component a second
 * time, make sure its last reply is stable.
 *
 * There is one entry per database and (caller, callee) pair called since
 * the server started: a caller of one database is not the caller of the
 * same name in another, and rmsg.called_components shows only the current
 * database's.  The key also holds the OID of the database's rmsg.caller
 * table: after DROP EXTENSION and CREATE EXTENSION a caller of the same
 * name starts a new log at call id 1, and the old entry's replies (call
 * ids 1, 2, ... with their CLSNs) must not stand for the new ones, or a
 * force the new log needs would be skipped.
 *
 * The table is not WAL-logged and starts empty after a restart, which is
 * correct: all WAL that survived a crash is stable.  It holds at most
 * rmsg.max_components entries.  When it is full, an entry whose replies are
 * all stable (and which no open transaction is about to update) is evicted,
 * the one called longest ago: a stable reply never needs a force, so
 * forgetting its CLSN loses nothing.  If no entry may go, the WAL is forced
 * once, which makes them all stable, and the search is made again.
 *
 * A reply's CLSN is known only once its transaction commits: until then
 * each backend lists the replies its transaction recorded (pending_replies,
 * backend-local) and hands their CLSNs over at commit, or drops them when
 * the transaction or the subtransaction that recorded them aborts.
 *
 * Locking: components_lock (RMSG_LWLOCK_COMPONENTS, core/locks.h) guards
 * the hash table and every entry; hold it exclusively to create, change or
 * remove an entry, shared to read.  An entry's pending count keeps it from
 * eviction between a record_reply and the end of its transaction, when the
 * CLSN is known.  The WAL is never flushed while the lock is held.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "contract/contract.h"

/* rmsg.last_call_depth and rmsg.max_components (recoverable_msg.c defines them) */
int			rmsg_last_call_depth = 1;
int			rmsg_max_components = 1024;

PG_FUNCTION_INFO_V1(rmsg_stat_components);

typedef struct ComponentKey
{
	Oid			database;
	Oid			caller_table;	/* rmsg.caller of that database */
	char		caller[NAMEDATALEN];
	char		callee[NAMEDATALEN];
} ComponentKey;

typedef struct CalledComponent
{
	ComponentKey key;			/* the hash key */
	int32		pending;		/* open transactions that recorded a reply */
	int32		nreplies;		/* valid entries in the arrays below */
	/* the caller's last replies from the callee, newest call first */
	int64		call_ids[RMSG_MAX_CALL_DEPTH];
	XLogRecPtr	clsns[RMSG_MAX_CALL_DEPTH];
	int64		calls;			/* sends prepared since the entry was made */
	int64		forces;			/* of them, sends that forced the WAL first */
	TimestampTz last_call_at;
} CalledComponent;

/* A reply logged by the current transaction, waiting for its CLSN. */
typedef struct PendingReply
{
	ComponentKey key;
	int64		call_id;
	SubTransactionId subxid;	/* dropped if this subtransaction aborts */
	bool		entered;		/* its entry's pending count includes it */
} PendingReply;

static LWLock *components_lock = NULL;
static HTAB *components = NULL;
static List *pending_replies = NIL; /* of PendingReply, in TopTransactionContext */

Size
RmsgComponentsShmemSize(void)
{
	return hash_estimate_size(rmsg_max_components, sizeof(CalledComponent));
}

/* Called under AddinShmemInitLock. */
void
RmsgComponentsShmemStartup(void)
{
	HASHCTL		info;

	components_lock = RmsgLWLock(RMSG_LWLOCK_COMPONENTS);
	info.keysize = sizeof(ComponentKey);
	info.entrysize = sizeof(CalledComponent);
	/*
	 * Of fixed size: a full table refuses new entries rather than take the
	 * spare shared memory that PostgreSQL's lock table grows into.
	 */
	components = ShmemInitHash("recoverable_msg called components",
							   rmsg_max_components, rmsg_max_components,
							   &info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
}

static void
MakeKey(ComponentKey *key, const char *caller, const char *callee)
{
	memset(key, 0, sizeof(*key));
	key->database = MyDatabaseId;
	key->caller_table = RmsgGetRelations()->caller;
	strlcpy(key->caller, caller, NAMEDATALEN);
	strlcpy(key->callee, callee, NAMEDATALEN);
}

/* The newest CLSN among the entry's replies; invalid when there are none. */
static XLogRecPtr
NewestClsn(const CalledComponent *entry)
{
	XLogRecPtr	newest = InvalidXLogRecPtr;

	for (int i = 0; i < entry->nreplies; i++)
		newest = Max(newest, entry->clsns[i]);
	return newest;
}

/* The flushed end of WAL; our functions write, so we are not in recovery. */
static XLogRecPtr
FlushedLsn(void)
{
	return RecoveryInProgress() ? InvalidXLogRecPtr : GetFlushRecPtr(NULL);
}

/*
 * The end of all WAL inserted so far, as a flush target.  The insert
 * position is kept in "start of the next record" form: at a page boundary it
 * points past the next page's header, at WAL that does not exist yet, and
 * XLogFlush refuses a request beyond what exists.  The same position as an
 * end of record is the page boundary itself.
 */
static XLogRecPtr
InsertedEnd(void)
{
	XLogRecPtr	ptr = GetXLogInsertRecPtr();

	if (XLogSegmentOffset(ptr, wal_segment_size) == SizeOfXLogLongPHD)
		return ptr - SizeOfXLogLongPHD;
	if (ptr % XLOG_BLCKSZ == SizeOfXLogShortPHD)
		return ptr - SizeOfXLogShortPHD;
	return ptr;
}

/*
 * Removes the entry called longest ago among those that may be forgotten.
 * Returns false when none may.  Lock held exclusively.
 */
static bool
EvictOne(XLogRecPtr flushed)
{
	HASH_SEQ_STATUS status;
	CalledComponent *entry;
	CalledComponent *victim = NULL;

	hash_seq_init(&status, components);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (entry->pending > 0 || NewestClsn(entry) > flushed)
			continue;
		if (victim == NULL || entry->last_call_at < victim->last_call_at)
			victim = entry;
	}
	if (victim == NULL)
		return false;
	hash_search(components, &victim->key, HASH_REMOVE, NULL);
	return true;
}

/*
 * Flushes the WAL up to target.  Returns true when that took a write to
 * disk, and counts it as a force then.
 */
static bool
ForceUpTo(XLogRecPtr target)
{
	if (XLogRecPtrIsInvalid(target) || target <= FlushedLsn())
		return false;
	XLogFlush(target);
	RmsgCountForce();
	return true;
}

/*
 * The entry for key, made if need be, with components_lock held exclusively
 * on return.  A full table gives up an entry, forcing the WAL once if none
 * is stable.
 */
static CalledComponent *
EnterComponent(const ComponentKey *key)
{
	for (int attempt = 0;; attempt++)
	{
		CalledComponent *entry;
		bool		found;

		LWLockAcquire(components_lock, LW_EXCLUSIVE);
		entry = hash_search(components, key, HASH_FIND, NULL);
		if (entry != NULL)
			return entry;
		if (hash_get_num_entries(components) < rmsg_max_components ||
			EvictOne(FlushedLsn()))
		{
			entry = hash_search(components, key, HASH_ENTER_NULL, &found);
			if (entry != NULL)
			{
				if (!found)
				{
					entry->pending = 0;
					entry->nreplies = 0;
					entry->calls = 0;
					entry->forces = 0;
					entry->last_call_at = GetCurrentTimestamp();
				}
				return entry;
			}
		}
		LWLockRelease(components_lock);

		if (attempt > 0)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("no room for caller \"%s\" and callee \"%s\" in the called-component table",
							key->caller, key->callee),
					 errdetail("All %d entries belong to transactions that are recording replies.",
							   rmsg_max_components),
					 errhint("Increase rmsg.max_components.")));
		(void) ForceUpTo(InsertedEnd());
	}
}

/*
 * Before the caller sends a call to callee: forces the WAL iff the reply
 * the callee will release by this call is not yet stable.  Returns whether
 * it forced.  Counts the send, and counts a force avoided when the caller's
 * session has a commit that is not yet flushed: a caller that forced its
 * log before every send, the simple way to survive crashes, would have
 * flushed it here.
 */
bool
RmsgBeforeSend(const char *caller, const char *callee)
{
	ComponentKey key;
	CalledComponent *entry;
	XLogRecPtr	must_be_stable = InvalidXLogRecPtr;
	int			depth = rmsg_last_call_depth;
	bool		forced;

	RmsgRequireShmem("the committed interaction contract");
	MakeKey(&key, caller, callee);
	entry = EnterComponent(&key);
	if (entry->nreplies >= depth)
		must_be_stable = entry->clsns[depth - 1];
	entry->calls++;
	entry->last_call_at = GetCurrentTimestamp();
	LWLockRelease(components_lock);

	forced = ForceUpTo(must_be_stable);
	if (forced)
	{
		LWLockAcquire(components_lock, LW_EXCLUSIVE);
		entry = hash_search(components, &key, HASH_FIND, NULL);
		if (entry != NULL)
			entry->forces++;
		LWLockRelease(components_lock);
	}
	else if (XactLastCommitEnd > FlushedLsn())
		RmsgCountForceAvoided();
	return forced;
}

/*
 * Whether the current transaction logged a reply from callee to caller: its
 * CLSN is not known until commit, so a second call to that callee in the
 * same transaction could release a reply no log holds stably (rmsg.call
 * refuses it).
 */
bool
RmsgReplyPendingFor(const char *caller, const char *callee)
{
	ComponentKey key;
	ListCell   *lc;

	if (pending_replies == NIL)
		return false;
	MakeKey(&key, caller, callee);
	foreach(lc, pending_replies)
	{
		PendingReply *reply = (PendingReply *) lfirst(lc);

		if (memcmp(&reply->key, &key, sizeof(key)) == 0)
			return true;
	}
	return false;
}

/*
 * The current transaction logged the reply to call_id from callee: its CLSN
 * is known when the transaction commits (RmsgComponentsXactEnd).  Until
 * then the entry is kept from eviction.
 */
void
RmsgReplyRecorded(const char *caller, const char *callee, int64 call_id)
{
	PendingReply *reply;
	CalledComponent *entry;
	MemoryContext old;

	RmsgRequireShmem("the committed interaction contract");
	old = MemoryContextSwitchTo(TopTransactionContext);
	reply = palloc(sizeof(PendingReply));
	MakeKey(&reply->key, caller, callee);
	reply->call_id = call_id;
	reply->subxid = GetCurrentSubTransactionId();
	reply->entered = false;
	pending_replies = lappend(pending_replies, reply);
	MemoryContextSwitchTo(old);

	entry = EnterComponent(&reply->key);
	entry->pending++;
	reply->entered = true;
	LWLockRelease(components_lock);
}

/* Adds a reply's CLSN, keeping the newest calls first. */
static void
RememberReply(CalledComponent *entry, int64 call_id, XLogRecPtr clsn)
{
	int			pos = 0;
	int			kept;

	for (int i = 0; i < entry->nreplies; i++)
	{
		if (entry->call_ids[i] == call_id)
		{
			entry->clsns[i] = Max(entry->clsns[i], clsn);
			return;
		}
	}
	while (pos < entry->nreplies && entry->call_ids[pos] > call_id)
		pos++;
	if (pos >= RMSG_MAX_CALL_DEPTH)
		return;					/* older than every reply the callee keeps */
	kept = Min(entry->nreplies, RMSG_MAX_CALL_DEPTH - 1);
	memmove(&entry->call_ids[pos + 1], &entry->call_ids[pos],
			(kept - pos) * sizeof(int64));
	memmove(&entry->clsns[pos + 1], &entry->clsns[pos],
			(kept - pos) * sizeof(XLogRecPtr));
	entry->call_ids[pos] = call_id;
	entry->clsns[pos] = clsn;
	entry->nreplies = kept + 1;
}

/*
 * Ends the pending replies of this transaction, or of one subtransaction
 * (subxid valid).  On commit, XactLastCommitEnd is the end of our commit
 * record: the replies' CLSN.  Runs in transaction callbacks: no errors.
 *
 * The replies that stay pending (another subtransaction's) are listed anew
 * in TopTransactionContext, before the lock is taken: at a subtransaction's
 * abort the current memory context is that subtransaction's, which goes
 * with it, and a list made there would be read after it was freed.
 */
static void
EndPendingReplies(bool committed, SubTransactionId subxid)
{
	ListCell   *lc;
	List	   *kept = NIL;
	MemoryContext old;

	if (pending_replies == NIL)
		return;
	old = MemoryContextSwitchTo(TopTransactionContext);
	foreach(lc, pending_replies)
	{
		PendingReply *reply = lfirst(lc);

		if (subxid != InvalidSubTransactionId && reply->subxid != subxid)
			kept = lappend(kept, reply);
	}
	MemoryContextSwitchTo(old);

	LWLockAcquire(components_lock, LW_EXCLUSIVE);
	foreach(lc, pending_replies)
	{
		PendingReply *reply = lfirst(lc);
		CalledComponent *entry;

		if (subxid != InvalidSubTransactionId && reply->subxid != subxid)
			continue;			/* stays pending */
		if (!reply->entered)
			continue;			/* its record_reply failed to make the entry */
		entry = hash_search(components, &reply->key, HASH_FIND, NULL);
		if (entry == NULL)
			continue;			/* cannot happen: pending entries stay */
		if (committed)
			RememberReply(entry, reply->call_id, XactLastCommitEnd);
		entry->pending--;
	}
	LWLockRelease(components_lock);
	list_free(pending_replies);
	pending_replies = kept;
}

/* At the end of the top transaction.  A PREPARE counts as not committed. */
void
RmsgComponentsXactEnd(bool committed)
{
	EndPendingReplies(committed, InvalidSubTransactionId);
	pending_replies = NIL;
}

/*
 * A subtransaction's replies go with it if it aborts, and pass to its
 * parent if it commits.
 */
void
RmsgComponentsSubXactEnd(bool committed, SubTransactionId subxid,
						 SubTransactionId parent)
{
	ListCell   *lc;

	if (!committed)
	{
		EndPendingReplies(false, subxid);
		return;
	}
	foreach(lc, pending_replies)
	{
		PendingReply *reply = lfirst(lc);

		if (reply->subxid == subxid)
			reply->subxid = parent;
	}
}

/*
 * rmsg.force_log: makes everything logged so far stable.  Returns the
 * flushed LSN.
 */
XLogRecPtr
RmsgForceLog(void)
{
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot force the log during recovery")));
	(void) ForceUpTo(InsertedEnd());
	return GetFlushRecPtr(NULL);
}

/*
 * A component was dropped (DROP OWNED, roles/owned_objects.c): its entries,
 * as a caller or as a callee, go, so that a component made later under the
 * same name does not inherit the replies this one was told.  The WAL is
 * flushed first, so every reply the entries speak of is stable and
 * forgetting them can never skip a force that was due, whether or not the
 * drop commits.  Entries with replies still being recorded, or recorded
 * since the flush, stay: forgetting those could skip a force that is due.
 */
void
RmsgComponentsForget(const char *name)
{
	HASH_SEQ_STATUS status;
	CalledComponent *entry;
	Oid			caller_table;
	XLogRecPtr	flushed;

	if (components == NULL || RecoveryInProgress())
		return;
	(void) ForceUpTo(InsertedEnd());
	flushed = FlushedLsn();
	caller_table = RmsgGetRelations()->caller;
	LWLockAcquire(components_lock, LW_EXCLUSIVE);
	hash_seq_init(&status, components);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		/* a reply committed since the flush is not stable: keep its entry */
		if (entry->key.database != MyDatabaseId || entry->key.caller_table != caller_table ||
			entry->pending > 0 || NewestClsn(entry) > flushed)
			continue;
		if (strcmp(entry->key.caller, name) == 0 || strcmp(entry->key.callee, name) == 0)
			hash_search(components, &entry->key, HASH_REMOVE, NULL);
	}
	LWLockRelease(components_lock);
}

/* rmsg.stat_components(): the table, behind rmsg.called_components. */
Datum
rmsg_stat_components(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS status;
	CalledComponent *entry;
	XLogRecPtr	flushed;
	Oid			caller_table;

	RmsgEnter("rmsg.stat_components", false);
	InitMaterializedSRF(fcinfo, 0);
	if (components == NULL)
		return (Datum) 0;

	flushed = FlushedLsn();
	caller_table = RmsgGetRelations()->caller; /* before the lock: it may read the catalog */
	LWLockAcquire(components_lock, LW_SHARED);
	hash_seq_init(&status, components);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		Datum		values[9];
		bool		nulls[9] = {0};
		XLogRecPtr	clsn = NewestClsn(entry);

		if (entry->key.database != MyDatabaseId || entry->key.caller_table != caller_table)
			continue;
		values[0] = CStringGetTextDatum(entry->key.caller);
		values[1] = CStringGetTextDatum(entry->key.callee);
		values[2] = LSNGetDatum(clsn);
		nulls[2] = XLogRecPtrIsInvalid(clsn);
		values[3] = LSNGetDatum(flushed);
		values[4] = BoolGetDatum(clsn <= flushed);
		values[5] = Int64GetDatum(entry->calls);
		values[6] = Int64GetDatum(entry->forces);
		values[7] = Int32GetDatum(entry->nreplies);
		values[8] = TimestampTzGetDatum(entry->last_call_at);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(components_lock);
	return (Datum) 0;
}
