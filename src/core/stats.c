/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Counters for rmsg.log_stats, the counter columns of rmsg.queues and
 *	  rmsg.metrics().
 *
 * Cumulative since the server started, like PostgreSQL's own statistics
 * before they are reset, and counted when the work is done: a put that
 * rolls back wrote its WAL all the same.  The totals are atomics any
 * backend adds to.  Per-queue counts live in a shared hash table keyed by
 * the database, the OID of its rmsg.queue table (an extension dropped and
 * made again starts afresh) and the queue_id, so that no database sees
 * another's.  To find an entry or read them all one holds stats->lock
 * (RMSG_LWLOCK_STATS) shared, to create or remove one exclusively; the
 * counters in an entry are atomics, added to after the lock is released
 * (RmsgCountPut says why a put's entry stays put).  The table has room for
 * RMSG_MAX_QUEUE_STATS queues; beyond that, queues are counted in the
 * totals only (their columns in rmsg.queues are NULL).  Without shared
 * memory (the library not preloaded) nothing is counted.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "core/core.h"

PG_FUNCTION_INFO_V1(rmsg_stat_log);
PG_FUNCTION_INFO_V1(rmsg_stat_queues);
PG_FUNCTION_INFO_V1(rmsg_queue_counters);

#define RMSG_MAX_QUEUE_STATS 1024

typedef struct RmsgLogCounters
{
	LWLock	   *lock;			/* guards the queue hash table's entries */
	TimestampTz since;
	pg_atomic_uint64 forces;
	pg_atomic_uint64 forces_avoided;
	pg_atomic_uint64 bytes_written;
	pg_atomic_uint64 bytes_referenced;
	pg_atomic_uint64 puts_written;
	pg_atomic_uint64 puts_referenced;
	pg_atomic_uint64 payloads_collected;
	pg_atomic_uint64 stale_receipts;
} RmsgLogCounters;


typedef struct QueueCounters
{
	RmsgQueueKey key;		/* the hash key */
	pg_atomic_uint64 bytes_written;
	pg_atomic_uint64 bytes_referenced;
	pg_atomic_uint64 stale_receipts;
	pg_atomic_uint64 puts;
	pg_atomic_uint64 acks;
	pg_atomic_uint64 dead_lettered;
} QueueCounters;

/* The columns ReturnQueueCounters gives, queue_id first. */
#define QUEUE_COUNTER_COLUMNS 7

static RmsgLogCounters *stats = NULL;
static HTAB *queue_stats = NULL;

/* The counters, and the hash table of the queues' counters. */
Size
RmsgStatsShmemSize(void)
{
	return add_size(MAXALIGN(sizeof(RmsgLogCounters)),
					hash_estimate_size(RMSG_MAX_QUEUE_STATS, sizeof(QueueCounters)));
}

/* Called under AddinShmemInitLock. */
void
RmsgStatsShmemStartup(void)
{
	HASHCTL		info;
	bool		found;

	stats = ShmemInitStruct("recoverable_msg counters", sizeof(RmsgLogCounters), &found);
	if (!found)
	{
		stats->lock = RmsgLWLock(RMSG_LWLOCK_STATS);
		stats->since = GetCurrentTimestamp();
		pg_atomic_init_u64(&stats->forces, 0);
		pg_atomic_init_u64(&stats->forces_avoided, 0);
		pg_atomic_init_u64(&stats->bytes_written, 0);
		pg_atomic_init_u64(&stats->bytes_referenced, 0);
		pg_atomic_init_u64(&stats->puts_written, 0);
		pg_atomic_init_u64(&stats->puts_referenced, 0);
		pg_atomic_init_u64(&stats->payloads_collected, 0);
		pg_atomic_init_u64(&stats->stale_receipts, 0);
	}
	info.keysize = sizeof(RmsgQueueKey);
	info.entrysize = sizeof(QueueCounters);
	/*
	 * Of fixed size: a full table refuses new entries rather than take the
	 * spare shared memory that PostgreSQL's lock table grows into.
	 */
	queue_stats = ShmemInitHash("recoverable_msg queue stats",
								RMSG_MAX_QUEUE_STATS, RMSG_MAX_QUEUE_STATS,
								&info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
}

/*
 * The key of a queue of this database's extension: zeroed first, as the
 * hash compares the key's bytes, padding included.
 */
void
RmsgMakeQueueKey(RmsgQueueKey *key, int32 queue_id)
{
	memset(key, 0, sizeof(*key));
	key->database = MyDatabaseId;
	key->queue_table = RmsgGetRelations()->queue;
	key->queue_id = queue_id;
}

/*
 * Room in a full table of per-queue entries (keyed by RmsgQueueKey first):
 * the entries of this database's earlier extensions (DROP EXTENSION leaves
 * them behind) go.  The table's lock held exclusively.  Entries of dropped
 * databases are not found here (that would take a catalog look under the
 * lock); they go with the next restart.
 */
void
RmsgForgetOldExtensionEntries(HTAB *table, Oid queue_table)
{
	HASH_SEQ_STATUS status;
	RmsgQueueKey *entry;

	hash_seq_init(&status, table);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (entry->database == MyDatabaseId && entry->queue_table != queue_table)
			hash_search(table, entry, HASH_REMOVE, NULL);
	}
}

/* The queue's counters, created on first use; NULL when the table is full. */
static QueueCounters *
QueueEntry(int32 queue_id)
{
	RmsgQueueKey key;
	QueueCounters *entry;
	bool		found;

	RmsgMakeQueueKey(&key, queue_id);
	LWLockAcquire(stats->lock, LW_SHARED);
	entry = hash_search(queue_stats, &key, HASH_FIND, NULL);
	LWLockRelease(stats->lock);
	if (entry != NULL)
		return entry;

	LWLockAcquire(stats->lock, LW_EXCLUSIVE);
	entry = hash_search(queue_stats, &key, HASH_ENTER_NULL, &found);
	if (entry == NULL)
	{
		RmsgForgetOldExtensionEntries(queue_stats, key.queue_table);
		entry = hash_search(queue_stats, &key, HASH_ENTER_NULL, &found);
	}
	if (entry != NULL && !found)
	{
		pg_atomic_init_u64(&entry->bytes_written, 0);
		pg_atomic_init_u64(&entry->bytes_referenced, 0);
		pg_atomic_init_u64(&entry->stale_receipts, 0);
		pg_atomic_init_u64(&entry->puts, 0);
		pg_atomic_init_u64(&entry->acks, 0);
		pg_atomic_init_u64(&entry->dead_lettered, 0);
	}
	LWLockRelease(stats->lock);
	return entry;
}

/*
 * A message was put to queue_id, its data of `size` bytes written or
 * referenced.  The entry pointer stays valid after the lock is released:
 * only RmsgQueueStatsForget removes entries of this database's live
 * extension, for a queue being dropped, which holds the queue's name lock
 * exclusively and so excludes every put.
 */
void
RmsgCountPut(int32 queue_id, int32 size, bool referenced)
{
	RmsgCountPuts(queue_id, 1, size, referenced);
}

/* As RmsgCountPut, for n messages of `bytes` in all (a batch: one look-up). */
void
RmsgCountPuts(int32 queue_id, int n, int64 bytes, bool referenced)
{
	QueueCounters *entry;

	if (stats == NULL || n <= 0)
		return;
	entry = QueueEntry(queue_id);
	if (entry != NULL)
		pg_atomic_fetch_add_u64(&entry->puts, n);
	if (referenced)
	{
		pg_atomic_fetch_add_u64(&stats->bytes_referenced, bytes);
		pg_atomic_fetch_add_u64(&stats->puts_referenced, n);
		if (entry != NULL)
			pg_atomic_fetch_add_u64(&entry->bytes_referenced, bytes);
	}
	else
	{
		pg_atomic_fetch_add_u64(&stats->bytes_written, bytes);
		pg_atomic_fetch_add_u64(&stats->puts_written, n);
		if (entry != NULL)
			pg_atomic_fetch_add_u64(&entry->bytes_written, bytes);
	}
}

/* The WAL was forced for the contract (contract/called_components.c). */
void
RmsgCountForce(void)
{
	if (stats != NULL)
		pg_atomic_fetch_add_u64(&stats->forces, 1);
}

/*
 * A call was sent without a force while the caller's session had a commit
 * not yet flushed: a protocol that forces the log before every call would
 * have flushed it here.  This is what the contract saves.
 */
void
RmsgCountForceAvoided(void)
{
	if (stats != NULL)
		pg_atomic_fetch_add_u64(&stats->forces_avoided, 1);
}

/*
 * Adds n to the counter at byte offset `counter` of the queue's entry,
 * making the entry on first use.  For the callers that hold no lock on the
 * queue's name (an ack, say): a drop_queue may be removing the entry
 * meanwhile, so it is added to under the table's lock, which the removal
 * takes exclusively.  An ack racing the drop of its queue may leave an
 * entry behind for the dropped queue_id, which no queue has again; a full
 * table's clean-up does not find it, a restart does.
 */
static void
AddToQueueCounter(int32 queue_id, size_t counter, uint64 n)
{
	RmsgQueueKey key;
	QueueCounters *entry;

	RmsgMakeQueueKey(&key, queue_id);
	for (int attempt = 0; attempt < 2; attempt++)
	{
		LWLockAcquire(stats->lock, LW_SHARED);
		entry = hash_search(queue_stats, &key, HASH_FIND, NULL);
		if (entry != NULL)
			pg_atomic_fetch_add_u64((pg_atomic_uint64 *) ((char *) entry + counter), n);
		LWLockRelease(stats->lock);
		if (entry != NULL || QueueEntry(queue_id) == NULL)
			return;
	}
}

/*
 * An ack, nack or extend came with a receipt whose lease is gone; queue_id
 * is the message's queue, 0 when the message is gone too.
 */
void
RmsgCountStaleReceipt(int32 queue_id)
{
	if (stats == NULL)
		return;
	pg_atomic_fetch_add_u64(&stats->stale_receipts, 1);
	if (queue_id != 0)
		AddToQueueCounter(queue_id, offsetof(QueueCounters, stale_receipts), 1);
}

/* A message of queue_id was acked (by a consumer or the worker). */
void
RmsgCountAck(int32 queue_id)
{
	if (stats != NULL)
		AddToQueueCounter(queue_id, offsetof(QueueCounters, acks), 1);
}

/* n messages of queue_id used up their deliveries and were dead-lettered. */
void
RmsgCountDeadLettered(int32 queue_id, int n)
{
	if (stats != NULL && n > 0)
		AddToQueueCounter(queue_id, offsetof(QueueCounters, dead_lettered), (uint64) n);
}

/* Payload rows no message referenced any more were removed. */
void
RmsgCountCollected(int64 n)
{
	if (stats != NULL)
		pg_atomic_fetch_add_u64(&stats->payloads_collected, (uint64) n);
}

/* A dropped queue's counters go with it (even if the drop rolls back). */
void
RmsgQueueStatsForget(int32 queue_id)
{
	RmsgQueueKey key;

	if (stats == NULL)
		return;
	RmsgMakeQueueKey(&key, queue_id);
	LWLockAcquire(stats->lock, LW_EXCLUSIVE);
	hash_search(queue_stats, &key, HASH_REMOVE, NULL);
	LWLockRelease(stats->lock);
}

/* A counter as the bigint the SQL functions return. */
static Datum
Counter(pg_atomic_uint64 *counter)
{
	return Int64GetDatum((int64) pg_atomic_read_u64(counter));
}

/*
 * rmsg.stat_log(): one row of totals, behind the rmsg.log_stats view.
 * Zeros and a NULL stats_since without shared memory.
 */
Datum
rmsg_stat_log(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		values[9];
	bool		nulls[9] = {0};

	RmsgEnter("rmsg.stat_log", false);
	InitMaterializedSRF(fcinfo, 0);
	if (stats == NULL)
	{
		for (int i = 0; i < 9; i++)
			values[i] = Int64GetDatum(0);
		nulls[7] = true;
	}
	else
	{
		values[0] = Counter(&stats->forces);
		values[1] = Counter(&stats->forces_avoided);
		values[2] = Counter(&stats->bytes_written);
		values[3] = Counter(&stats->bytes_referenced);
		values[4] = Counter(&stats->puts_written);
		values[5] = Counter(&stats->puts_referenced);
		values[6] = Counter(&stats->payloads_collected);
		values[7] = TimestampTzGetDatum(stats->since);
		values[8] = Counter(&stats->stale_receipts);
	}
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return (Datum) 0;
}

/*
 * The per-queue counters of this database's queues; with only_visible,
 * those of the queues the current role manages (privileges.c), or all of
 * them for a role with pg_read_all_stats: how many bytes a put referenced
 * instead of writing would tell a producer of a content queue whether
 * others had put the same bytes.  The entries are copied under the lock,
 * and the rights checked after it, since that may read the catalog.
 */
static void
ReturnQueueCounters(FunctionCallInfo fcinfo, bool only_visible)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS status;
	QueueCounters *entry;
	Oid			queue_table;
	int			n = 0;
	int			room = 64;
	Datum	   *rows;

	InitMaterializedSRF(fcinfo, 0);
	if (stats == NULL)
		return;

	queue_table = RmsgGetRelations()->queue;
	rows = palloc(sizeof(Datum) * QUEUE_COUNTER_COLUMNS * room);
	LWLockAcquire(stats->lock, LW_SHARED);
	hash_seq_init(&status, queue_stats);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		Datum	   *row;

		if (entry->key.database != MyDatabaseId || entry->key.queue_table != queue_table)
			continue;
		if (n == room)
		{
			room *= 2;
			rows = repalloc(rows, sizeof(Datum) * QUEUE_COUNTER_COLUMNS * room);
		}
		row = &rows[QUEUE_COUNTER_COLUMNS * n];
		row[0] = Int32GetDatum(entry->key.queue_id);
		row[1] = Counter(&entry->bytes_written);
		row[2] = Counter(&entry->bytes_referenced);
		row[3] = Counter(&entry->stale_receipts);
		row[4] = Counter(&entry->puts);
		row[5] = Counter(&entry->acks);
		row[6] = Counter(&entry->dead_lettered);
		n++;
	}
	LWLockRelease(stats->lock);

	for (int i = 0; i < n; i++)
	{
		Datum	   *row = &rows[QUEUE_COUNTER_COLUMNS * i];
		bool		nulls[QUEUE_COUNTER_COLUMNS] = {0};

		if (only_visible &&
			!RmsgMaySee(RMSG_QUEUE, DatumGetInt32(row[0]), NULL, RMSG_MANAGE))
			continue;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, nulls);
	}
}

/* rmsg.stat_queues(): every queue's counters, for monitoring roles. */
Datum
rmsg_stat_queues(PG_FUNCTION_ARGS)
{
	RmsgEnter("rmsg.stat_queues", false);
	ReturnQueueCounters(fcinfo, false);
	return (Datum) 0;
}

/*
 * rmsg.queue_counters(): the counters of the queues the role may see,
 * joined into rmsg.queues.
 */
Datum
rmsg_queue_counters(PG_FUNCTION_ARGS)
{
	RmsgEnter("rmsg.queue_counters", false);
	ReturnQueueCounters(fcinfo, true);
	return (Datum) 0;
}
