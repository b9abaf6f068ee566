/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  Finding and locking instances, and the cache of their ids and modes
 *	  in shared memory.
 *
 * Locking.  Two heavyweight locks per instance name (core/locks.h), each
 * held until the end of the transaction:
 *	- the arrival lock, taken by deliver, begin_recovery, complete_recovery,
 *	  create_instance and drop_instance.  Deliveries to one instance are
 *	  therefore serialized, and each takes its msg_id after the one before
 *	  it committed: msg_id order is the order of arrival.  And a delivery
 *	  reads the mode only once no mode change is in progress, so it can
 *	  never file a message under a mode that is being changed.
 *	- the take lock, taken by receive (and receive_any, without waiting)
 *	  and drop_instance, so that two receivers never hand out the same line.
 *	  Receivers do not block deliveries, and deliveries do not block them.
 * The locks are taken before the instance row is read, and the row is read
 * with the latest snapshot, so whoever waited sees what the holder did.
 *
 * Cache.  Every delivery must know its instance's id and mode before it
 * can file the message, and reading them from the table each time would
 * cost a row read per delivery; so the shared hash table instance_cache
 * keeps them by name, and a delivery reads no row but its own insert.  The
 * table is the truth; the cache is only ever filled by a transaction
 * holding the instance's arrival lock, from a fresh read of the row.  A
 * transaction that changes an instance removes its entry at once and again
 * when it ends, in the transaction callback, which runs before its locks
 * are released: the next holder of the arrival lock finds no entry and
 * reads the committed row.  A rolled-back change thus leaves no trace, and
 * a transaction never uses the cache for an instance it changed itself
 * (its view of the row may yet roll back).  Readers that hold only the
 * take lock may use an entry but never add one.  The cache starts empty
 * after a restart; when it is full, instances beyond it are simply read
 * from the table.  rmsg.instance_cache = off bypasses it, for
 * measuring what it buys.
 *
 * instance_lock (RMSG_LWLOCK_INSTANCES) guards the hash table: to look an
 * entry up, hold it shared; to add or remove one, hold it exclusively.
 *
 * Rights.  An instance belongs to the role that created it, and its row
 * holds the privileges granted on it; opening one works out what the
 * current role may do with it (core/privileges.c), and the caller says
 * what it needs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "instance/instance.h"

/* rmsg.instance_cache (recoverable_msg.c defines the setting) */
bool		rmsg_instance_cache = true;

/* More instances than this are read from the table each time. */
#define RMSG_INSTANCE_CACHE_SIZE 16384

/*
 * The table's OID is part of the key: the cache is shared by every database,
 * and an extension dropped and made again starts its instances afresh
 * (entries of the old table are never found again).
 */
typedef struct InstanceKey
{
	Oid			database;
	Oid			table;			/* rmsg.instance */
	char		name[NAMEDATALEN];	/* zero-padded */
} InstanceKey;

typedef struct CachedInstance
{
	InstanceKey key;			/* hash key */
	RmsgInstance instance;
} CachedInstance;

static LWLock *instance_lock = NULL;
static HTAB *instance_cache = NULL;

/*
 * Keys of the instances this transaction changed, in TopTransactionContext:
 * made while the transaction could still read the catalog, so that the
 * callback at its end needs no catalog access.
 */
static List *changed_keys = NIL;

static RmsgPlan find_plan = {
	"SELECT instance_id, mode = 'recovery' AS recovering FROM rmsg.instance WHERE name = $1",
	1, {TEXTOID}
};

static RmsgPlan name_plan = {
	"SELECT name FROM rmsg.instance WHERE instance_id = $1",
	1, {INT8OID}
};

/* The cache's share of shared memory, asked for at preload. */
Size
RmsgInstanceCacheShmemSize(void)
{
	return hash_estimate_size(RMSG_INSTANCE_CACHE_SIZE, sizeof(CachedInstance));
}

/*
 * Attaches to the cache, or sets it up empty in the first process to get
 * here.  Called under AddinShmemInitLock.
 */
void
RmsgInstanceCacheShmemStartup(void)
{
	HASHCTL		info;

	instance_lock = RmsgLWLock(RMSG_LWLOCK_INSTANCES);
	info.keysize = sizeof(InstanceKey);
	info.entrysize = sizeof(CachedInstance);
	/*
	 * Of fixed size: a full table refuses new entries rather than take the
	 * spare shared memory that PostgreSQL's lock table grows into.
	 */
	instance_cache = ShmemInitHash("recoverable_msg instance cache",
								   RMSG_INSTANCE_CACHE_SIZE, RMSG_INSTANCE_CACHE_SIZE,
								   &info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
}

/* The one error for an instance that is not there (42704). */
void
RmsgReportNoInstance(const char *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("instance \"%s\" does not exist", name)));
}

/* The cache key of the instance of this name in our database. */
static void
MakeKey(InstanceKey *key, const char *name)
{
	memset(key, 0, sizeof(*key));
	key->database = MyDatabaseId;
	key->table = RmsgGetRelations()->instance;
	strlcpy(key->name, name, NAMEDATALEN);
}

/*
 * Whether this transaction changed the instance: then only its row (as
 * this transaction sees it) may be trusted, never the cache.
 */
static bool
ChangedHere(const InstanceKey *key)
{
	ListCell   *lc;

	foreach(lc, changed_keys)
	{
		if (memcmp(lfirst(lc), key, sizeof(InstanceKey)) == 0)
			return true;
	}
	return false;
}

/* The cached id and mode, if the cache holds the instance. */
static bool
CacheLookup(const InstanceKey *key, RmsgInstance *out)
{
	CachedInstance *entry;

	LWLockAcquire(instance_lock, LW_SHARED);
	entry = hash_search(instance_cache, key, HASH_FIND, NULL);
	if (entry != NULL)
		*out = entry->instance;
	LWLockRelease(instance_lock);
	return entry != NULL;
}

/* Adds an entry if there is room; a full cache just caches nothing more. */
static void
CacheStore(const InstanceKey *key, const RmsgInstance *instance)
{
	CachedInstance *entry;

	LWLockAcquire(instance_lock, LW_EXCLUSIVE);
	entry = hash_search(instance_cache, key, HASH_ENTER_NULL, NULL);
	if (entry != NULL)
		entry->instance = *instance;
	LWLockRelease(instance_lock);
}

/* Forgets the instance; harmless when it is not cached, or there is no cache. */
static void
CacheRemove(const InstanceKey *key)
{
	if (instance_cache == NULL)
		return;
	LWLockAcquire(instance_lock, LW_EXCLUSIVE);
	hash_search(instance_cache, key, HASH_REMOVE, NULL);
	LWLockRelease(instance_lock);
}

/* Takes one of the instance's locks (core/locks.c), waiting if need be. */
void
RmsgLockInstance(const char *name, RmsgNameLock lock_kind)
{
	(void) RmsgLockName(lock_kind, name, NULL, ExclusiveLock, true);
}

/* The instance's row as last committed (or as this transaction changed it). */
static bool
ReadInstance(const char *name, RmsgInstance *out)
{
	Datum		arg = CStringGetTextDatum(name);
	bool		found;

	RmsgSpiConnect();
	RmsgPlanExecute(&find_plan, &arg, NULL, true, 1);
	found = SPI_processed > 0;
	if (found)
	{
		out->instance_id = DatumGetInt64(RmsgSpiNotNull(0, "instance_id"));
		/* mode is NOT NULL, so the comparison never is */
		out->recovering = DatumGetBool(RmsgSpiNotNull(0, "recovering"));
	}
	RmsgSpiFinish();
	return found;
}

/*
 * The instance's id and mode: from the cache where this transaction may use
 * it, else from its row.  With may_store (the caller holds the arrival
 * lock) what the row said is cached.
 */
static bool
FindInstance(const char *name, bool may_store, RmsgInstance *out)
{
	InstanceKey key;
	bool		usable = false;

	if (instance_cache != NULL && rmsg_instance_cache)
	{
		MakeKey(&key, name);
		usable = !ChangedHere(&key);
	}
	if (usable && CacheLookup(&key, out))
		return true;
	if (!ReadInstance(name, out))
		return false;
	if (usable && may_store)
		CacheStore(&key, out);
	return true;
}

/* What the current role may do with the instance; 42704 if it is gone. */
static AclMode
InstanceRights(const char *name, int64 instance_id)
{
	AclMode		rights;

	if (!RmsgObjectRights(RMSG_INSTANCE, instance_id, NULL, GetUserId(), &rights, NULL))
		RmsgReportNoInstance(name);
	return rights;
}

/*
 * Locks the instance (RMSG_LOCK_INSTANCE_ARRIVAL or _TAKE) and returns its
 * id and mode as of now; 42704 when there is no such instance, 42501 when
 * the current role lacks the `needed` privileges.
 */
RmsgInstance
RmsgOpenInstance(const char *name, RmsgNameLock lock_kind, AclMode needed)
{
	RmsgInstance instance;
	AclMode		rights;

	/* a role that may not: refused before it can hold up the instance's line */
	if (RmsgObjectRights(RMSG_INSTANCE, 0, name, GetUserId(), &rights, NULL))
		RmsgRequireRights(RMSG_INSTANCE, name, rights, needed);

	RmsgLockInstance(name, lock_kind);
	if (!FindInstance(name, lock_kind == RMSG_LOCK_INSTANCE_ARRIVAL, &instance))
		RmsgReportNoInstance(name);
	instance.rights = InstanceRights(name, instance.instance_id);
	RmsgRequireRights(RMSG_INSTANCE, name, instance.rights, needed);
	return instance;
}

/*
 * For receive_any and the worker: takes the take lock of the instance with
 * this id without waiting.  False when it is held by another transaction,
 * the instance is gone, or `wanted` (if given) refuses its name; else its
 * name (NAMEDATALEN bytes) and mode.  *fresh says whether the lock is new
 * to this transaction, so that the caller may let it go again if it takes
 * nothing.
 */
bool
RmsgTryOpenInstanceById(int64 instance_id, RmsgInstanceFilter wanted, void *arg,
						char *name, RmsgInstance *instance, bool *fresh)
{
	Datum		id_arg = Int64GetDatum(instance_id);
	LockAcquireResult locked;
	bool		found;
	bool		same;

	RmsgSpiConnect();
	RmsgPlanExecute(&name_plan, &id_arg, NULL, true, 1);
	found = SPI_processed > 0;
	if (found)
		text_to_cstring_buffer(DatumGetTextPP(RmsgSpiNotNull(0, "name")),
							   name, NAMEDATALEN);
	RmsgSpiFinish();
	if (!found || (wanted != NULL && !wanted(instance_id, name, arg)))
		return false;
	locked = RmsgLockName(RMSG_LOCK_INSTANCE_TAKE, name, NULL, ExclusiveLock, false);
	if (locked == LOCKACQUIRE_NOT_AVAIL)
		return false;
	*fresh = (locked == LOCKACQUIRE_OK);

	/* dropped (and perhaps made again) before we had the lock? */
	same = FindInstance(name, false, instance) && instance->instance_id == instance_id;
	if (!same && *fresh)
		RmsgUnlockInstance(name, RMSG_LOCK_INSTANCE_TAKE);
	if (same)
		instance->rights = InstanceRights(name, instance_id);
	return same;
}

/*
 * Lets go of a lock this transaction took and has not used to change
 * anything (receive_any, on an instance it took nothing from).
 */
void
RmsgUnlockInstance(const char *name, RmsgNameLock lock_kind)
{
	RmsgUnlockName(lock_kind, name, NULL, ExclusiveLock);
}

/*
 * The caller (holding the arrival lock) changed the instance's row: forget
 * the cached entry now, and again when the transaction ends.
 */
void
RmsgInstanceChanged(const char *name)
{
	InstanceKey key;

	MakeKey(&key, name);
	if (!ChangedHere(&key))
	{
		MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
		InstanceKey *copy = palloc(sizeof(key));

		*copy = key;
		changed_keys = lappend(changed_keys, copy);
		MemoryContextSwitchTo(old);
	}
	CacheRemove(&key);
}

/*
 * Transaction callback, at commit or abort, before the locks are released.
 * It must not fail: removing an entry allocates nothing.
 */
void
RmsgInstanceCacheXactEnd(void)
{
	ListCell   *lc;

	foreach(lc, changed_keys)
		CacheRemove((const InstanceKey *) lfirst(lc));
	/* the list itself goes with TopTransactionContext */
	changed_keys = NIL;
}
