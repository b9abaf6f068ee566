/*-------------------------------------------------------------------------
 *
 * locks.h
 *	  Every lock the extension takes, in one place.
 *
 * A newcomer who wonders "what can this wait for?" reads this file.  There
 * are three families:
 *
 * 1. Lightweight locks of our named tranche "recoverable_msg", one per
 *    shared table (RmsgLWLockId below; core/shmem.c hands them out).  Held
 *    for a few instructions, never across a statement.
 *
 *	  RMSG_LWLOCK_STATS		  core/stats.c: the per-queue counters' hash table
 *							  (exclusive to add or remove an entry; the
 *							  counters themselves are atomics)
 *	  RMSG_LWLOCK_COMPONENTS  contract/called_components.c: the called-
 *							  component table
 *	  RMSG_LWLOCK_INSTANCES	  instance/catalog.c: the cache of instance ids
 *							  and modes
 *	  RMSG_LWLOCK_READY_HINTS queue/ready_hint.c: where each queue's gets
 *							  start (exclusive to add or remove an entry;
 *							  each entry's fields have a spinlock)
 *	  RMSG_LWLOCK_FLOW		  worker/flow.c: the workers in each limited
 *							  queue's turns and its token bucket
 *	  RMSG_LWLOCK_LINE_HINTS  instance/line_hint.c: where each instance's
 *							  receives start (exclusive to add or remove an
 *							  entry; each entry has a spinlock)
 *
 *    Besides these: each worker slot has a spinlock (worker/slots.c), and
 *    long polling sleeps on condition variables (queue/long_poll.c).
 *
 * 2. Heavyweight locks on names (RmsgNameLock below; core/locks.c builds
 *    their tags).  They are advisory locks of the user lock method, held
 *    until the transaction (or subtransaction) that took them ends, and
 *    show in pg_locks as advisory locks whose objsubid is the kind's code.
 *
 *	  RMSG_LOCK_QUEUE_NAME		   'RQ'  put, get, grant_queue, revoke_queue
 *									     and the worker share it;
 *									     create_queue, drop_queue and DROP
 *									     OWNED take it exclusively
 *									     (queue/catalog.c)
 *	  RMSG_LOCK_INSTANCE_ARRIVAL   'RA'  deliver, begin_recovery,
 *									     complete_recovery, create, drop and
 *									     DROP OWNED: one arrival at a time
 *									     per instance
 *	  RMSG_LOCK_INSTANCE_TAKE	   'RT'  receive and the worker: one taker at
 *									     a time per instance (instance/catalog.c)
 *	  RMSG_LOCK_CALL_PAIR		   'RM'  accept_call and reply: one call of a
 *									     caller to a callee at a time
 *									     (contract/callee.c)
 *	  RMSG_LOCK_PUT_KEY			   'RK'  a put with a dedup_id: one put of a
 *									     (queue, dedup_id) at a time
 *									     (queue/put_keys.c)
 *	  RMSG_LOCK_GROUP			   'RG'  a put to a message group, and the
 *									     ack or dead letter that ends its
 *									     turn: one at a time per (queue,
 *									     group) (queue/groups.c)
 *
 * 3. Row locks, taken by our statements or by direct table access:
 *	  rmsg.message rows		   a get locks the ready rows it leases, skipping
 *							   locked ones (queue/ready_scan.c); ack locks the
 *							   row it deletes (queue/remove.c)
 *	  rmsg.payload rows		   a put that references a payload row pins it
 *							   with a key-share lock, which the collector's
 *							   FOR UPDATE SKIP LOCKED respects (dedup/payload.c)
 *	  catalog rows			   grant, revoke and owner changes lock the
 *							   object's row FOR UPDATE (core/privileges.c,
 *							   roles/owned_objects.c)
 *	  exhausted messages	   the worker's sweep, FOR UPDATE SKIP LOCKED
 *							   (worker/maintenance.c)
 *
 * Every privilege check runs before any of these is waited for, so a role
 * that may not act on an object cannot hold up those who may.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RMSG_LOCKS_H
#define RMSG_LOCKS_H

#include "storage/lock.h"
#include "storage/lwlock.h"

/* Lightweight locks of the tranche "recoverable_msg" */
typedef enum RmsgLWLockId
{
	RMSG_LWLOCK_STATS,
	RMSG_LWLOCK_COMPONENTS,
	RMSG_LWLOCK_INSTANCES,
	RMSG_LWLOCK_READY_HINTS,
	RMSG_LWLOCK_FLOW,
	RMSG_LWLOCK_LINE_HINTS,
	RMSG_LWLOCK_COUNT
} RmsgLWLockId;

/* Heavyweight locks on names */
typedef enum RmsgNameLock
{
	RMSG_LOCK_QUEUE_NAME,
	RMSG_LOCK_INSTANCE_ARRIVAL,
	RMSG_LOCK_INSTANCE_TAKE,
	RMSG_LOCK_CALL_PAIR,
	RMSG_LOCK_PUT_KEY,
	RMSG_LOCK_GROUP
} RmsgNameLock;

/* core/shmem.c: NULL without shared memory */
extern LWLock *RmsgLWLock(RmsgLWLockId id);

/* core/locks.c */
extern LockAcquireResult RmsgLockName(RmsgNameLock kind, const char *name,
									  const char *second, LOCKMODE mode, bool wait);
extern void RmsgUnlockName(RmsgNameLock kind, const char *name, const char *second,
						   LOCKMODE mode);

#endif							/* RMSG_LOCKS_H */
