/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  The queue catalog: create_queue, drop_queue, and looking queues up.
 *
 * Locking.  A put must never add a message to a queue that a concurrent
 * drop_queue is deleting: the drop would not see the uncommitted message
 * and would leave it behind.  So every put holds a heavyweight lock on the
 * queue's name (RMSG_LOCK_QUEUE_NAME, core/locks.h) in AccessShareLock
 * until its transaction ends, and create_queue and drop_queue take it in
 * AccessExclusiveLock.  The lock is taken before the catalog is read, and
 * the catalog is read with the latest snapshot, so a put that waited for a
 * drop sees the queue gone.  A get holds the same lock in AccessShareLock,
 * so a drop also waits for consumers that might be dead-lettering a
 * message into the queue's dead-message table.  Under REPEATABLE READ a
 * drop reads and deletes with the latest snapshot too, since its own
 * predates what it waited for.
 *
 * A dead-letter queue cannot be dropped while a queue still sends it
 * messages (RmsgRefuseDropOfDeadLetterQueue says why no foreign key does
 * this).
 *
 * Cache.  Every put and get needs its queue's row, so each backend keeps
 * the rows it read in a local hash, stamped with the catalog generation in
 * shared memory (core/shmem.c).  A transaction that creates, drops,
 * grants, pauses or resumes a queue bumps the generation when it ends, in the transaction
 * callback, which runs before its locks are released: whoever then gets
 * the name lock sees the new generation and reads the catalog again.  Rows
 * read by a transaction that changed the catalog itself are not cached
 * (they may roll back), and a relcache invalidation (DROP EXTENSION, say)
 * empties the cache.  Without shared memory nothing is cached.
 *
 * Rights.  A queue belongs to the role that created it, and its row holds
 * the privileges granted on it (core/privileges.c).  Opening a queue works
 * out what the current role may do with it; each function says what it
 * needs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/memutils.h"

#include "queue/queue.h"

typedef struct CachedQueue
{
	char		name[NAMEDATALEN];	/* hash key */
	uint64		generation;
	RmsgQueue	queue;			/* rights not set */
	Acl		   *acl;			/* in queue_cache_context, or NULL */
} CachedQueue;

static HTAB *queue_cache = NULL;
static MemoryContext queue_cache_context = NULL;
static bool queue_cache_stale = false;

/*
 * Whether each queue_id met by an ack, nack or extend is a remote queue's
 * (RmsgQueueIsRemote).  A queue is made remote or local in the transaction
 * that creates it and stays so, and queue_ids are not used again, so an
 * entry never needs a new read; a relcache invalidation empties it all the
 * same (the extension may have been dropped and made again).
 */
typedef struct CachedRemoteness
{
	int32		queue_id;		/* hash key */
	bool		remote;
} CachedRemoteness;

static HTAB *remoteness_cache = NULL;
static bool remoteness_cache_stale = false;

PG_FUNCTION_INFO_V1(rmsg_create_queue);
PG_FUNCTION_INFO_V1(rmsg_drop_queue);

/* Whether queue $1 is a remote queue. */
static RmsgPlan remoteness_plan = {
	"SELECT EXISTS (SELECT FROM rmsg.remote_queue WHERE queue_id = $1) AS remote",
	1, {INT4OID}
};

/* A queue's row; a queue without a dead-letter queue reads 0 for it.  $1 name */
static RmsgPlan lookup_plan = {
	"SELECT queue_id, max_deliveries,"
	"       coalesce(dead_letter_queue_id, 0) AS dead_letter_queue_id, dedup,"
	"       owner::oid AS owner, acl, paused,"
	"       (extract(epoch FROM dedup_window) * 1000000)::bigint AS dedup_window,"
	"       EXISTS (SELECT FROM rmsg.remote_queue r WHERE r.queue_id = q.queue_id) AS remote"
	"  FROM rmsg.queue q WHERE name = $1",
	1, {TEXTOID}
};

/* $6: the dedup window in microseconds */
static RmsgPlan insert_plan = {
	"INSERT INTO rmsg.queue (name, max_deliveries, dead_letter_queue_id, dedup, owner,"
	"                        dedup_window)"
	" VALUES ($1, $2, nullif($3, 0), $4, $5, $6 * interval '1 microsecond')"
	" ON CONFLICT (name) DO NOTHING RETURNING queue_id",
	6, {TEXTOID, INT4OID, INT4OID, TEXTOID, OIDOID, INT8OID}
};

/* A queue, other than queue $1 itself, that sends its dead letters to it. */
static RmsgPlan dlq_users_plan = {
	"SELECT u.name FROM rmsg.queue q JOIN rmsg.queue u"
	"   ON u.dead_letter_queue_id = q.queue_id AND u.queue_id <> q.queue_id"
	" WHERE q.name = $1 ORDER BY u.name LIMIT 1",
	1, {TEXTOID}
};

/* Deletes a queue's messages, live and dead, and its put keys (put_keys.c). */
static RmsgPlan delete_messages_plan = {
	"WITH live AS (DELETE FROM rmsg.message WHERE queue_id = $1 RETURNING msg_id),"
	"     leases AS (DELETE FROM rmsg.lease l USING live WHERE l.msg_id = live.msg_id),"
	"     put_keys AS (DELETE FROM rmsg.put_key WHERE queue_id = $1)"
	" DELETE FROM rmsg.dead_message WHERE queue_id = $1",
	1, {INT4OID}
};

static RmsgPlan delete_queue_plan = {
	"DELETE FROM rmsg.queue WHERE queue_id = $1",
	1, {INT4OID}
};

/* Any relcache invalidation may mean our tables were dropped: start over. */
static void
QueueCacheInvalidate(Datum arg, Oid relid)
{
	queue_cache_stale = true;
	remoteness_cache_stale = true;
}

/* Called from _PG_init: a relcache invalidation empties the cache. */
void
RmsgQueueCatalogInit(void)
{
	CacheRegisterRelcacheCallback(QueueCacheInvalidate, (Datum) 0);
}

/*
 * Finds (HASH_FIND) or makes (HASH_ENTER) the cache entry of a queue name,
 * first emptying a cache that an invalidation made stale.  NULL when
 * finding in an empty cache.
 */
static CachedQueue *
QueueCacheEntry(const char *name, HASHACTION action, bool *found)
{
	if (queue_cache_stale && queue_cache != NULL)
	{
		hash_destroy(queue_cache);
		queue_cache = NULL;
		MemoryContextReset(queue_cache_context);
	}
	queue_cache_stale = false;

	if (queue_cache == NULL)
	{
		HASHCTL		ctl;

		if (action == HASH_FIND)
			return NULL;
		if (queue_cache_context == NULL)
			queue_cache_context = AllocSetContextCreate(CacheMemoryContext,
														"recoverable_msg queue lists",
														ALLOCSET_SMALL_SIZES);
		ctl.keysize = NAMEDATALEN;
		ctl.entrysize = sizeof(CachedQueue);
		queue_cache = hash_create("recoverable_msg queues", 64, &ctl,
								  HASH_ELEM | HASH_STRINGS);
	}
	return (CachedQueue *) hash_search(queue_cache, name, action, found);
}

/* Waits for the queue's name lock in `mode`; kept until the transaction ends. */
static void
RmsgLockQueueName(const char *name, LOCKMODE mode)
{
	(void) RmsgLockName(RMSG_LOCK_QUEUE_NAME, name, NULL, mode, true);
}

/*
 * Reads a queue's catalog row with the latest snapshot; false if none.
 * *acl is the row's list of privileges (in SPI's memory), or NULL.
 */
static bool
RmsgLookupQueue(const char *name, RmsgQueue *queue, Acl **acl)
{
	Datum		arg = CStringGetTextDatum(name);
	bool		isnull;
	Datum		value;

	RmsgPlanExecute(&lookup_plan, &arg, NULL, true, 1);
	if (SPI_processed == 0)
		return false;

	queue->queue_id = DatumGetInt32(RmsgSpiNotNull(0, "queue_id"));
	queue->max_deliveries = DatumGetInt32(RmsgSpiNotNull(0, "max_deliveries"));
	queue->dead_letter_queue_id = DatumGetInt32(RmsgSpiNotNull(0, "dead_letter_queue_id"));
	queue->dedup = RmsgParseDedupMode(TextDatumGetCString(RmsgSpiNotNull(0, "dedup")));
	queue->owner = DatumGetObjectId(RmsgSpiNotNull(0, "owner"));
	queue->paused = DatumGetBool(RmsgSpiNotNull(0, "paused"));
	queue->dedup_window = DatumGetInt64(RmsgSpiNotNull(0, "dedup_window"));
	queue->remote = DatumGetBool(RmsgSpiNotNull(0, "remote"));
	value = RmsgSpiValue(0, "acl", &isnull);
	*acl = isnull ? NULL : DatumGetAclP(value);
	return true;
}

/*
 * Checks the name, locks it and looks the queue up, in the cache when it is
 * current; false when there is no such queue (the lock is kept all the
 * same).  Call inside SPI.
 */
bool
RmsgTryOpenQueue(const char *name, LOCKMODE mode, RmsgQueue *queue)
{
	uint64		generation;
	bool		cacheable;
	CachedQueue *cached;
	bool		found;
	Acl		   *acl;

	RmsgCheckName(name, "queue");
	RmsgLockQueueName(name, mode);

	/* read before the catalog, so a change meanwhile makes the entry stale */
	generation = RmsgCatalogGeneration();
	cacheable = generation != 0 && !RmsgCatalogChangedHere();
	if (cacheable)
	{
		cached = QueueCacheEntry(name, HASH_FIND, NULL);
		if (cached != NULL && cached->generation == generation)
		{
			*queue = cached->queue;
			queue->rights = RmsgRightsOf(RMSG_QUEUE, GetUserId(), queue->owner, cached->acl);
			return true;
		}
	}

	if (!RmsgLookupQueue(name, queue, &acl))
		return false;
	queue->rights = RmsgRightsOf(RMSG_QUEUE, GetUserId(), queue->owner, acl);

	if (cacheable)
	{
		cached = QueueCacheEntry(name, HASH_ENTER, &found);
		if (found && cached->acl != NULL)
			pfree(cached->acl);
		cached->generation = generation;
		cached->queue = *queue;
		cached->acl = NULL;
		if (acl != NULL)
		{
			cached->acl = MemoryContextAlloc(queue_cache_context, VARSIZE(acl));
			memcpy(cached->acl, acl, VARSIZE(acl));
		}
	}
	return true;
}

/* As RmsgTryOpenQueue, but an unknown queue is an error. */
RmsgQueue
RmsgOpenQueue(const char *name, LOCKMODE mode)
{
	RmsgQueue	queue;

	if (!RmsgTryOpenQueue(name, mode, &queue))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("queue \"%s\" does not exist", name)));
	return queue;
}

/*
 * Refuses a role that lacks `needed` on an existing queue before any lock
 * is taken: a drop's exclusive lock, even held for a moment, or waited for,
 * would hold up the queue's producers and consumers for a role that may
 * not touch it.
 */
static void
PrecheckRights(const char *name, AclMode needed)
{
	AclMode		rights;

	RmsgCheckName(name, "queue");
	if (RmsgObjectRights(RMSG_QUEUE, 0, name, GetUserId(), &rights, NULL))
		RmsgRequireRights(RMSG_QUEUE, name, rights, needed);
}

/*
 * As RmsgOpenQueue, for a role that must hold the `needed` privileges:
 * checked before the lock is taken, and again on the row read under it.
 */
RmsgQueue
RmsgOpenQueueFor(const char *name, LOCKMODE mode, AclMode needed)
{
	RmsgQueue	queue;

	PrecheckRights(name, needed);
	queue = RmsgOpenQueue(name, mode);
	RmsgRequireRights(RMSG_QUEUE, name, queue.rights, needed);
	return queue;
}

/* The error of a create_queue whose name is taken. */
static void
ReportQueueExists(const char *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_DUPLICATE_OBJECT),
			 errmsg("queue \"%s\" already exists", name)));
}

/* Refuses a dedup argument that names no mode, before any lock is taken. */
static void
CheckDedupArg(FunctionCallInfo fcinfo, int argno)
{
	(void) RmsgParseDedupMode(RmsgTextArg(fcinfo, argno, "dedup"));
}

/*
 * rmsg.create_queue(queue, max_deliveries, dead_letter_queue, dedup,
 *					   dedup_window)
 */
Datum
rmsg_create_queue(PG_FUNCTION_ARGS)
{
	char	   *name;
	int32		max_deliveries;
	char	   *dlq_name = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	int32		dlq_id = 0;
	int64		dedup_window;
	Datum		values[6];

	RmsgEnter("rmsg.create_queue", true);
	name = RmsgTextArg(fcinfo, 0, "queue name");
	RmsgCheckName(name, "queue");
	RmsgRequireArg(fcinfo, 1, "max_deliveries");
	max_deliveries = PG_GETARG_INT32(1);
	if (max_deliveries < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_deliveries must be at least 1, not %d", max_deliveries)));
	CheckDedupArg(fcinfo, 3);
	dedup_window = RmsgIntervalArg(fcinfo, 4, "dedup_window", RMSG_DEFAULT_DEDUP_WINDOW, false);
	if (dedup_window > RMSG_MAX_DEDUP_WINDOW)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dedup_window must be at most 366 days"),
				 errdetail("A put's dedup_id is kept for the whole window; longer windows are keys kept for ever.")));
	if (dlq_name != NULL)
	{
		RmsgCheckName(dlq_name, "queue");
		if (strcmp(dlq_name, name) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("queue \"%s\" cannot be its own dead-letter queue", name)));
	}

	/*
	 * Before any lock: the dead-letter queue comes to depend on the new
	 * queue (it cannot be dropped while the new one sends it messages), so
	 * naming one takes manage on it; and a name taken already is refused
	 * without its lock, which the queue's users hold.
	 */
	if (dlq_name != NULL)
		PrecheckRights(dlq_name, RMSG_MANAGE);
	{
		AclMode		rights;

		if (RmsgObjectRights(RMSG_QUEUE, 0, name, GetUserId(), &rights, NULL))
			ReportQueueExists(name);
	}

	RmsgSpiConnect();
	RmsgLockQueueName(name, AccessExclusiveLock);
	RmsgNoteCatalogChange();
	if (dlq_name != NULL)
		dlq_id = RmsgOpenQueueFor(dlq_name, AccessShareLock, RMSG_MANAGE).queue_id;

	values[0] = CStringGetTextDatum(name);
	values[1] = Int32GetDatum(max_deliveries);
	values[2] = Int32GetDatum(dlq_id);
	values[3] = PG_GETARG_DATUM(3);
	RmsgLockRole(GetUserId());
	values[4] = ObjectIdGetDatum(GetUserId());
	values[5] = Int64GetDatum(dedup_window);
	RmsgPlanExecute(&insert_plan, values, NULL, true, 0);
	if (SPI_processed == 0)
		ReportQueueExists(name);
	RmsgSpiFinish();
	PG_RETURN_VOID();
}

/*
 * Whether queue queue_id is a remote queue: its messages wait here only
 * until the worker moves them to the receiving server, so nobody takes or
 * settles them here (ack, nack and extend treat them as no message at all:
 * an ack would delete a message before it was ever sent).  Reads the
 * catalog once per queue and backend; works inside SPI or out of it.
 */
bool
RmsgQueueIsRemote(int32 queue_id)
{
	CachedRemoteness *entry;
	bool		found;
	bool		remote;
	Datum		arg = Int32GetDatum(queue_id);

	if (remoteness_cache_stale && remoteness_cache != NULL)
	{
		hash_destroy(remoteness_cache);
		remoteness_cache = NULL;
	}
	remoteness_cache_stale = false;
	if (remoteness_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(int32);
		ctl.entrysize = sizeof(CachedRemoteness);
		ctl.hcxt = CacheMemoryContext;
		remoteness_cache = hash_create("recoverable_msg remote queues", 64, &ctl,
									   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	entry = hash_search(remoteness_cache, &queue_id, HASH_FIND, NULL);
	if (entry != NULL)
		return entry->remote;

	RmsgSpiConnect();
	RmsgPlanExecute(&remoteness_plan, &arg, NULL, true, 1);
	remote = DatumGetBool(RmsgSpiNotNull(0, "remote"));
	RmsgSpiFinish();

	/* the statement may have invalidated the cache (a relcache message) */
	if (!remoteness_cache_stale)
	{
		entry = hash_search(remoteness_cache, &queue_id, HASH_ENTER, &found);
		entry->remote = remote;
	}
	return remote;
}

/*
 * Refuses (42809) what only a local queue does, on a remote queue: its
 * messages are the receiving server's (remote/create.c).
 */
void
RmsgRefuseRemoteQueue(const RmsgQueue *queue, const char *name, const char *what)
{
	if (queue->remote)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("queue \"%s\" is a remote queue: %s is for local queues", name, what),
				 errdetail("The worker moves a remote queue's messages to the queue of the foreign server it names.")));
}

/*
 * Refuses (2BP01) to drop queue `name` while another queue sends its dead
 * letters there.  No foreign key guards rmsg.queue.dead_letter_queue_id:
 * a key from the table to itself makes pg_dump warn of a circular
 * reference on every dump, and a dump restored one INSERT per row fails
 * when a dead-letter queue's row comes after its users'.  Instead, whoever
 * drops a queue holds its name lock in AccessExclusiveLock, which waits
 * for a create_queue naming it as dead-letter queue (that holds the name
 * lock in AccessShareLock until it commits), and then looks for users in
 * the latest snapshot, which includes that new queue.
 */
void
RmsgRefuseDropOfDeadLetterQueue(const char *name)
{
	Datum		arg = CStringGetTextDatum(name);

	RmsgPlanExecute(&dlq_users_plan, &arg, NULL, true, 1);
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("queue \"%s\" is the dead-letter queue of queue \"%s\"", name,
						RmsgSpiText(0, "name")),
				 errhint("Drop that queue first.")));
}

/*
 * rmsg.drop_queue(queue): the queue and its messages go in one
 * transaction; payload rows only they referenced wait for
 * rmsg.collect_payloads.
 */
Datum
rmsg_drop_queue(PG_FUNCTION_ARGS)
{
	char	   *name;
	RmsgQueue	queue;
	Datum		arg;

	RmsgEnter("rmsg.drop_queue", true);
	name = RmsgTextArg(fcinfo, 0, "queue name");
	RmsgSpiConnect();
	RmsgNoteCatalogChange();	/* also: read the catalog, not the cache */
	queue = RmsgOpenQueueFor(name, AccessExclusiveLock, RMSG_MANAGE);
	arg = Int32GetDatum(queue.queue_id);

	RmsgRefuseDropOfDeadLetterQueue(name);

	/*
	 * The latest snapshot: under REPEATABLE READ the transaction's snapshot
	 * predates puts that committed while we waited for the name lock, and
	 * their messages would outlive the queue.
	 */
	RmsgPlanExecute(&delete_messages_plan, &arg, NULL, true, 0);
	RmsgQueueStatsForget(queue.queue_id);
	RmsgReadyHintForget(queue.queue_id);

	RmsgPlanExecute(&delete_queue_plan, &arg, NULL, true, 0);
	RmsgSpiFinish();
	PG_RETURN_VOID();
}
