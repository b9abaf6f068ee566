/*-------------------------------------------------------------------------
 *
 * queue_admin.c
 *	  The queue catalog: create_queue, drop_queue, and looking queues up.
 *
 * Locking.  A put must never add a message to a queue that a concurrent
 * drop_queue is deleting: the drop would not see the uncommitted message and
 * leave it behind.  So every put holds a heavyweight lock on the queue's
 * name in AccessShareLock until its transaction ends, and create_queue and
 * drop_queue take it in AccessExclusiveLock.  The lock is taken before the
 * catalog is read, and the catalog is read with the latest snapshot, so a
 * put that waited for a drop sees the queue gone.  A get holds the same lock
 * in AccessShareLock, so a drop also waits for consumers that might be
 * dead-lettering a message into the queue's dead-message table.  The lock
 * tag is an object lock with our own class id and the hash of the name; two
 * names sharing a hash only serialise needlessly.  Under REPEATABLE READ a
 * drop reads and deletes with the latest snapshot too, since its own
 * predates what it waited for.
 *
 * A dead-letter queue is referenced by id through a foreign key, so it
 * cannot be dropped while a queue still sends it messages.
 *
 * Cache.  Every put and get needs its queue's row, so each backend keeps
 * the rows it read in a local hash, stamped with the catalog generation in
 * shared memory.  A transaction that creates or drops a queue bumps the
 * generation when it ends, in the transaction callback, which runs before
 * its locks are released: whoever then gets the name lock sees the new
 * generation and reads the catalog again.  Rows read by a transaction that
 * changed the catalog itself are not cached (they may roll back), and a
 * relcache invalidation (DROP EXTENSION, say) empties the cache.  Without
 * shared memory nothing is cached.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"

#include "rmsg.h"

typedef struct CachedQueue
{
	char		name[NAMEDATALEN];	/* hash key */
	uint64		generation;
	RmsgQueue	queue;
} CachedQueue;

static HTAB *queue_cache = NULL;
static bool queue_cache_stale = false;
static bool catalog_changed_in_xact = false;

PG_FUNCTION_INFO_V1(rmsg_create_queue);
PG_FUNCTION_INFO_V1(rmsg_drop_queue);

static RmsgPlan lookup_plan = {
	"SELECT queue_id, max_deliveries, coalesce(dead_letter_queue_id, 0), dedup"
	"  FROM rmsg.queue WHERE name = $1",
	1, {TEXTOID}
};

static RmsgPlan insert_plan = {
	"INSERT INTO rmsg.queue (name, max_deliveries, dead_letter_queue_id, dedup)"
	" VALUES ($1, $2, nullif($3, 0), $4)"
	" ON CONFLICT (name) DO NOTHING RETURNING queue_id",
	4, {TEXTOID, INT4OID, INT4OID, TEXTOID}
};

static RmsgPlan dlq_users_plan = {
	"SELECT name FROM rmsg.queue"
	" WHERE dead_letter_queue_id = $1 AND queue_id <> $1 ORDER BY name LIMIT 1",
	1, {INT4OID}
};

/* Deletes a queue's messages, live and dead. */
static RmsgPlan delete_messages_plan = {
	"WITH live AS (DELETE FROM rmsg.message WHERE queue_id = $1)"
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
}

void
RmsgQueueCatalogInit(void)
{
	CacheRegisterRelcacheCallback(QueueCacheInvalidate, (Datum) 0);
}

/*
 * Transaction end, or PREPARE: publish a catalog change to every backend's
 * cache.  At PREPARE the prepared transaction keeps its name locks until
 * COMMIT PREPARED, so a backend that waited for one reads the catalog after
 * the outcome is known.
 */
void
RmsgQueueCatalogXactEnd(void)
{
	if (catalog_changed_in_xact)
		RmsgBumpCatalogGeneration();
	catalog_changed_in_xact = false;
}

static CachedQueue *
QueueCacheEntry(const char *name, HASHACTION action)
{
	if (queue_cache_stale && queue_cache != NULL)
	{
		hash_destroy(queue_cache);
		queue_cache = NULL;
	}
	queue_cache_stale = false;

	if (queue_cache == NULL)
	{
		HASHCTL		ctl;

		if (action == HASH_FIND)
			return NULL;
		ctl.keysize = NAMEDATALEN;
		ctl.entrysize = sizeof(CachedQueue);
		queue_cache = hash_create("recoverable_msg queues", 64, &ctl,
								  HASH_ELEM | HASH_STRINGS);
	}
	return (CachedQueue *) hash_search(queue_cache, name, action, NULL);
}

static void
RmsgLockQueueName(const char *name, LOCKMODE mode)
{
	uint32		hash = hash_bytes((const unsigned char *) name, strlen(name));

	LockDatabaseObject(RMSG_LOCK_CLASS, hash, RMSG_LOCK_QUEUE_NAME, mode);
}

/* Reads a queue's catalog row with the latest snapshot; false if none. */
static bool
RmsgLookupQueue(const char *name, RmsgQueue *queue)
{
	Datum		arg = CStringGetTextDatum(name);
	bool		isnull;
	TupleDesc	desc;
	HeapTuple	row;
	char	   *dedup;

	RmsgPlanExecute(&lookup_plan, &arg, NULL, true, 1);
	if (SPI_processed == 0)
		return false;

	desc = SPI_tuptable->tupdesc;
	row = SPI_tuptable->vals[0];
	queue->queue_id = DatumGetInt32(SPI_getbinval(row, desc, 1, &isnull));
	queue->max_deliveries = DatumGetInt32(SPI_getbinval(row, desc, 2, &isnull));
	queue->dead_letter_queue_id = DatumGetInt32(SPI_getbinval(row, desc, 3, &isnull));
	dedup = TextDatumGetCString(SPI_getbinval(row, desc, 4, &isnull));
	queue->dedup = dedup[0];
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

	RmsgCheckName(name, "queue");
	RmsgLockQueueName(name, mode);

	/* read before the catalog, so a change meanwhile makes the entry stale */
	generation = RmsgCatalogGeneration();
	cacheable = generation != 0 && !catalog_changed_in_xact;
	if (cacheable)
	{
		cached = QueueCacheEntry(name, HASH_FIND);
		if (cached != NULL && cached->generation == generation)
		{
			*queue = cached->queue;
			return true;
		}
	}

	if (!RmsgLookupQueue(name, queue))
		return false;

	if (cacheable)
	{
		cached = QueueCacheEntry(name, HASH_ENTER);
		cached->generation = generation;
		cached->queue = *queue;
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

static void
CheckDedupArg(FunctionCallInfo fcinfo, int argno)
{
	char	   *dedup = RmsgTextArg(fcinfo, argno, "dedup");

	if (strcmp(dedup, "none") != 0 && strcmp(dedup, "token") != 0 &&
		strcmp(dedup, "content") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid dedup mode \"%s\"", dedup),
				 errhint("Use \"none\", \"token\" or \"content\".")));
}

/*
 * rmsg.create_queue(queue, max_deliveries, dead_letter_queue, dedup)
 */
Datum
rmsg_create_queue(PG_FUNCTION_ARGS)
{
	char	   *name = RmsgTextArg(fcinfo, 0, "queue name");
	int32		max_deliveries;
	char	   *dlq_name = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	int32		dlq_id = 0;
	Datum		values[4];

	RmsgCheckName(name, "queue");
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("max_deliveries must not be null")));
	max_deliveries = PG_GETARG_INT32(1);
	if (max_deliveries < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_deliveries must be at least 1, not %d", max_deliveries)));
	CheckDedupArg(fcinfo, 3);
	if (dlq_name != NULL)
	{
		RmsgCheckName(dlq_name, "queue");
		if (strcmp(dlq_name, name) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("queue \"%s\" cannot be its own dead-letter queue", name)));
	}

	RmsgSpiConnect();
	RmsgLockQueueName(name, AccessExclusiveLock);
	catalog_changed_in_xact = true;
	if (dlq_name != NULL)
		dlq_id = RmsgOpenQueue(dlq_name, AccessShareLock).queue_id;

	values[0] = CStringGetTextDatum(name);
	values[1] = Int32GetDatum(max_deliveries);
	values[2] = Int32GetDatum(dlq_id);
	values[3] = PG_GETARG_DATUM(3);
	RmsgPlanExecute(&insert_plan, values, NULL, true, 0);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("queue \"%s\" already exists", name)));
	RmsgSpiFinish();
	PG_RETURN_VOID();
}

/*
 * rmsg.drop_queue(queue): the queue and its messages go in one
 * transaction; payload rows only they referenced wait for
 * rmsg.collect_payloads.
 */
Datum
rmsg_drop_queue(PG_FUNCTION_ARGS)
{
	char	   *name = RmsgTextArg(fcinfo, 0, "queue name");
	RmsgQueue	queue;
	Datum		arg;

	RmsgSpiConnect();
	catalog_changed_in_xact = true;		/* also: read the catalog, not the cache */
	queue = RmsgOpenQueue(name, AccessExclusiveLock);
	arg = Int32GetDatum(queue.queue_id);

	RmsgPlanExecute(&dlq_users_plan, &arg, NULL, true, 1);
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("queue \"%s\" is the dead-letter queue of queue \"%s\"", name,
						SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)),
				 errhint("Drop that queue first.")));

	/*
	 * The latest snapshot: under REPEATABLE READ the transaction's snapshot
	 * predates puts that committed while we waited for the name lock, and
	 * their messages would outlive the queue.
	 */
	RmsgPlanExecute(&delete_messages_plan, &arg, NULL, true, 0);
	RmsgQueueStatsForget(queue.queue_id);

	RmsgPlanExecute(&delete_queue_plan, &arg, NULL, true, 0);
	RmsgSpiFinish();
	PG_RETURN_VOID();
}
