/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Counters for rmsg.log_stats and the byte columns of rmsg.queues.
 *
 * Cumulative since the server started, like PostgreSQL's own statistics
 * before they are reset, and counted when the work is done: a put that
 * rolls back wrote its WAL all the same.  The totals are atomics any
 * backend adds to.  Per-queue counts live in a shared hash table keyed by
 * queue_id: to add to an existing entry one holds stats->lock shared (the
 * counters are atomics), to create or remove an entry exclusively.  The
 * table has room for RMSG_MAX_QUEUE_STATS queues; beyond that, queues are
 * counted in the totals only (their columns in rmsg.queues are NULL).
 * Without shared memory (the library not preloaded) nothing is counted.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "rmsg.h"

PG_FUNCTION_INFO_V1(rmsg_stat_log);
PG_FUNCTION_INFO_V1(rmsg_stat_queues);

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
} RmsgLogCounters;

typedef struct QueueCounters
{
	int32		queue_id;		/* the hash key */
	pg_atomic_uint64 bytes_written;
	pg_atomic_uint64 bytes_referenced;
} QueueCounters;

static RmsgLogCounters *stats = NULL;
static HTAB *queue_stats = NULL;

Size
RmsgStatsShmemSize(void)
{
	return add_size(MAXALIGN(sizeof(RmsgLogCounters)),
					hash_estimate_size(RMSG_MAX_QUEUE_STATS, sizeof(QueueCounters)));
}

/* Called under AddinShmemInitLock with our part of the shared area. */
void
RmsgStatsShmemInit(void *shared, bool found, LWLock *lock)
{
	HASHCTL		info;

	stats = (RmsgLogCounters *) shared;
	if (!found)
	{
		stats->lock = lock;
		stats->since = GetCurrentTimestamp();
		pg_atomic_init_u64(&stats->forces, 0);
		pg_atomic_init_u64(&stats->forces_avoided, 0);
		pg_atomic_init_u64(&stats->bytes_written, 0);
		pg_atomic_init_u64(&stats->bytes_referenced, 0);
		pg_atomic_init_u64(&stats->puts_written, 0);
		pg_atomic_init_u64(&stats->puts_referenced, 0);
		pg_atomic_init_u64(&stats->payloads_collected, 0);
	}
	info.keysize = sizeof(int32);
	info.entrysize = sizeof(QueueCounters);
	queue_stats = ShmemInitHash("recoverable_msg queue stats",
								RMSG_MAX_QUEUE_STATS, RMSG_MAX_QUEUE_STATS,
								&info, HASH_ELEM | HASH_BLOBS);
}

/* The queue's counters, created on first use; NULL when the table is full. */
static QueueCounters *
QueueEntry(int32 queue_id)
{
	QueueCounters *entry;
	bool		found;

	LWLockAcquire(stats->lock, LW_SHARED);
	entry = hash_search(queue_stats, &queue_id, HASH_FIND, NULL);
	LWLockRelease(stats->lock);
	if (entry != NULL)
		return entry;

	LWLockAcquire(stats->lock, LW_EXCLUSIVE);
	entry = hash_search(queue_stats, &queue_id, HASH_ENTER_NULL, &found);
	if (entry != NULL && !found)
	{
		pg_atomic_init_u64(&entry->bytes_written, 0);
		pg_atomic_init_u64(&entry->bytes_referenced, 0);
	}
	LWLockRelease(stats->lock);
	return entry;
}

/*
 * A message was put to queue_id, its data written or referenced.  The
 * entry pointer stays valid after the lock is released: only
 * RmsgQueueStatsForget removes entries, for a queue being dropped, which
 * holds the queue's name lock exclusively and so excludes every put.
 */
void
RmsgCountPut(int32 queue_id, const RmsgStoredData *stored)
{
	QueueCounters *entry;

	if (stats == NULL)
		return;
	entry = QueueEntry(queue_id);
	if (stored->referenced)
	{
		pg_atomic_fetch_add_u64(&stats->bytes_referenced, stored->size);
		pg_atomic_fetch_add_u64(&stats->puts_referenced, 1);
		if (entry != NULL)
			pg_atomic_fetch_add_u64(&entry->bytes_referenced, stored->size);
	}
	else
	{
		pg_atomic_fetch_add_u64(&stats->bytes_written, stored->size);
		pg_atomic_fetch_add_u64(&stats->puts_written, 1);
		if (entry != NULL)
			pg_atomic_fetch_add_u64(&entry->bytes_written, stored->size);
	}
}

/* The WAL was forced for the contract (components.c). */
void
RmsgCountForce(void)
{
	if (stats != NULL)
		pg_atomic_fetch_add_u64(&stats->forces, 1);
}

/* A call was sent without a force the prior art would have made. */
void
RmsgCountForceAvoided(void)
{
	if (stats != NULL)
		pg_atomic_fetch_add_u64(&stats->forces_avoided, 1);
}

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
	if (stats == NULL)
		return;
	LWLockAcquire(stats->lock, LW_EXCLUSIVE);
	hash_search(queue_stats, &queue_id, HASH_REMOVE, NULL);
	LWLockRelease(stats->lock);
}

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
	Datum		values[8];
	bool		nulls[8] = {0};

	InitMaterializedSRF(fcinfo, 0);
	if (stats == NULL)
	{
		for (int i = 0; i < 7; i++)
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
	}
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return (Datum) 0;
}

/* rmsg.stat_queues(): the per-queue byte counts, joined into rmsg.queues. */
Datum
rmsg_stat_queues(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS status;
	QueueCounters *entry;

	InitMaterializedSRF(fcinfo, 0);
	if (stats == NULL)
		return (Datum) 0;

	LWLockAcquire(stats->lock, LW_SHARED);
	hash_seq_init(&status, queue_stats);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = Int32GetDatum(entry->queue_id);
		values[1] = Counter(&entry->bytes_written);
		values[2] = Counter(&entry->bytes_referenced);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(stats->lock);
	return (Datum) 0;
}
