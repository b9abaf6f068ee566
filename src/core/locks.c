/*-------------------------------------------------------------------------
 *
 * locks.c
 *	  The heavyweight locks the extension takes on names: of queues, of
 *	  instances, and of a callee's pair with a caller.
 *
 * They are PostgreSQL's advisory locks (the user lock method): field 1 the
 * database, fields 2 and 3 a 64-bit hash of the name, field 4 a code of
 * our own for the kind of lock (pg_advisory_lock uses 1 and 2 there, so
 * the application's advisory locks never meet ours).  Two names whose
 * hashes collide merely wait for each other.  Nobody should be able to
 * make them collide on purpose, holding up another tenant's queue with a
 * name of their own (with the 32-bit hash of 1.0, a tenant found such a
 * name in under a minute): so the hash has 64 bits and a secret seed,
 * drawn whenever shared memory is made (shmem.c).  They are taken for the
 * transaction: they go with it, or with the subtransaction that took them.
 * pg_locks shows them as advisory locks, with objsubid the kind's code.
 *
 * The kinds, and who takes them in which mode (locks.h says the same from
 * the reader's side; the files named say why):
 *	queue name		  put, get, grant_queue, revoke_queue and the worker in
 *					  AccessShareLock; create_queue, drop_queue and DROP
 *					  OWNED in AccessExclusiveLock (queue/catalog.c,
 *					  roles/owned_objects.c)
 *	instance arrival  deliver, begin/complete_recovery, create, drop and
 *					  DROP OWNED (ExclusiveLock, instance/catalog.c)
 *	instance take	  receive, receive_any without waiting, drop and DROP
 *					  OWNED (ExclusiveLock, instance/catalog.c)
 *	call pair		  accept_call and reply (ExclusiveLock, contract/callee.c)
 *	put key			  a put with a dedup_id (ExclusiveLock, queue/put_keys.c)
 *	group			  a grouped put, and the end of a group's turn
 *					  (ExclusiveLock, queue/groups.c)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/lock.h"

#include "core/core.h"

/* field 4 of the lock tag, per kind: 'RQ', 'RA', 'RT', 'RM', 'RK', 'RG' */
static const uint16 kind_codes[] = {
	[RMSG_LOCK_QUEUE_NAME] = 0x5251,
	[RMSG_LOCK_INSTANCE_ARRIVAL] = 0x5241,
	[RMSG_LOCK_INSTANCE_TAKE] = 0x5254,
	[RMSG_LOCK_CALL_PAIR] = 0x524D,
	[RMSG_LOCK_PUT_KEY] = 0x524B,
	[RMSG_LOCK_GROUP] = 0x5247,
};

/*
 * The tag of a lock on `name`, or on the pair (name, second): both names,
 * each with its terminator, so that ("ab", "c") and ("a", "bc") differ.
 */
static void
MakeTag(LOCKTAG *tag, RmsgNameLock kind, const char *name, const char *second)
{
	char		key[2 * NAMEDATALEN + 2];
	size_t		len = strlcpy(key, name, NAMEDATALEN) + 1;
	uint64		hash;

	if (second != NULL)
		len += strlcpy(key + len, second, NAMEDATALEN) + 1;
	hash = hash_bytes_extended((const unsigned char *) key, (int) len, RmsgNameLockSeed());
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) (hash >> 32), (uint32) hash,
						 kind_codes[kind]);
}

/*
 * Takes a lock of this kind on the name (and second, for a pair), for the
 * transaction; without `wait`, the answer may be LOCKACQUIRE_NOT_AVAIL.
 */
LockAcquireResult
RmsgLockName(RmsgNameLock kind, const char *name, const char *second,
			 LOCKMODE mode, bool wait)
{
	LOCKTAG		tag;

	MakeTag(&tag, kind, name, second);
	return LockAcquire(&tag, mode, false, !wait);
}

/* Lets go of such a lock before the transaction ends. */
void
RmsgUnlockName(RmsgNameLock kind, const char *name, const char *second, LOCKMODE mode)
{
	LOCKTAG		tag;

	MakeTag(&tag, kind, name, second);
	LockRelease(&tag, mode, false);
}
