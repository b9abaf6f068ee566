/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The extension's shared memory: requested at preload, laid out once.
 *
 * Each concern that needs shared state supplies its size and its
 * initialiser; this file only adds them up and calls them, under
 * AddinShmemInitLock, when the postmaster (or an EXEC_BACKEND child)
 * attaches.  The areas guard themselves; see their files.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "rmsg.h"

static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif

/* State of our own, next to the areas the other files lay out. */
typedef struct RmsgSharedState
{
	/* bumped at the end of every transaction that changed the queue catalog */
	pg_atomic_uint64 catalog_generation;
	/* when this shared memory was made: it is made anew after every crash */
	TimestampTz incarnation;
	/* the secret seed of the name locks' hash (name_locks.c) */
	uint64		name_lock_seed;
} RmsgSharedState;

static RmsgSharedState *shared_state = NULL;
static bool shmem_ready = false;

/* The current transaction created, dropped or granted something. */
static bool catalog_changed_in_xact = false;

static Size
RmsgShmemSize(void)
{
	Size		size = MAXALIGN(sizeof(RmsgSharedState));

	size = add_size(size, MAXALIGN(RmsgWakeupShmemSize()));
	size = add_size(size, MAXALIGN(RmsgStatsShmemSize()));
	size = add_size(size, MAXALIGN(RmsgWorkerShmemSize()));
	return size;
}

/* With the hash tables, which ShmemInitHash lays out itself. */
static Size
RmsgShmemTotalSize(void)
{
	Size		size = RmsgShmemSize();

	size = add_size(size, RmsgStatsHashSize());
	size = add_size(size, RmsgComponentsShmemSize());
	size = add_size(size, RmsgInstanceCacheShmemSize());
	return size;
}

/* Attach to (or create) the shared area and let each concern set up its part. */
static void
RmsgShmemStartup(void)
{
	bool		found;
	void	   *area;
	LWLockPadded *locks = GetNamedLWLockTranche("recoverable_msg");

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	area = ShmemInitStruct("recoverable_msg", RmsgShmemSize(), &found);
	shared_state = (RmsgSharedState *) area;
	if (!found)
	{
		pg_atomic_init_u64(&shared_state->catalog_generation, 1);
		shared_state->incarnation = GetCurrentTimestamp();
		if (!pg_strong_random(&shared_state->name_lock_seed,
							  sizeof(shared_state->name_lock_seed)))
			shared_state->name_lock_seed = (uint64) shared_state->incarnation;
	}
	area = (char *) area + MAXALIGN(sizeof(RmsgSharedState));
	RmsgWakeupShmemInit(area, found);
	area = (char *) area + MAXALIGN(RmsgWakeupShmemSize());
	RmsgStatsShmemInit(area, found, &locks[RMSG_LOCK_STATS].lock);	/* and its hash */
	area = (char *) area + MAXALIGN(RmsgStatsShmemSize());
	RmsgWorkerShmemInit(area, found);
	/* hash tables of their own: ShmemInitHash places them */
	RmsgComponentsShmemInit(&locks[RMSG_LOCK_COMPONENTS].lock);
	RmsgInstanceCacheShmemInit(&locks[RMSG_LOCK_INSTANCES].lock);
	LWLockRelease(AddinShmemInitLock);

	shmem_ready = true;
}

#if PG_VERSION_NUM >= 150000
static void
RmsgShmemRequestHook(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(RmsgShmemTotalSize());
	RequestNamedLWLockTranche("recoverable_msg", RMSG_LOCK_COUNT);
}
#endif

static void
RmsgShmemStartupHook(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	RmsgShmemStartup();
}

/* Called from _PG_init while shared_preload_libraries is being processed. */
void
RmsgShmemRequest(void)
{
#if PG_VERSION_NUM >= 150000
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = RmsgShmemRequestHook;
#else
	RequestAddinShmemSpace(RmsgShmemTotalSize());
	RequestNamedLWLockTranche("recoverable_msg", RMSG_LOCK_COUNT);
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = RmsgShmemStartupHook;
}

/*
 * The queue catalog's generation; 0 when there is no shared memory, which
 * callers take as "cache nothing".
 */
uint64
RmsgCatalogGeneration(void)
{
	return shmem_ready ? pg_atomic_read_u64(&shared_state->catalog_generation) : 0;
}

/*
 * The seed of the name locks' hash: drawn anew whenever shared memory is
 * made, which is also when every lock is gone.  Without shared memory
 * (not preloaded: then no backend has it) 0.
 */
uint64
RmsgNameLockSeed(void)
{
	return shmem_ready ? shared_state->name_lock_seed : 0;
}

/*
 * When this server's shared memory was made, which happens at start and
 * again after every crash: a caller that was restarted in an earlier
 * incarnation may have lost log writes since (caller.c).
 */
TimestampTz
RmsgIncarnation(void)
{
	RmsgRequireShmem("the committed interaction contract");
	return shared_state->incarnation;
}

/*
 * The current transaction changes the catalog of queues, instances or
 * components (their rows, owners or privileges): backends' caches of it
 * go stale when it ends, and until then it reads the rows itself.
 */
void
RmsgNoteCatalogChange(void)
{
	catalog_changed_in_xact = true;
}

bool
RmsgCatalogChangedHere(void)
{
	return catalog_changed_in_xact;
}

/*
 * Transaction end, or PREPARE: publish a catalog change to every backend's
 * caches.  It runs before the transaction's locks are released, so a
 * backend that waited for one of them reads the catalog again.  At PREPARE
 * the prepared transaction keeps its locks until COMMIT PREPARED, so a
 * backend that waited for one reads the catalog after the outcome is
 * known.  Must not fail.
 */
void
RmsgCatalogXactEnd(void)
{
	if (catalog_changed_in_xact)
		RmsgBumpCatalogGeneration();
	catalog_changed_in_xact = false;
}

/*
 * Makes every backend's caches of the catalog stale.  Besides the end of a
 * transaction that changed it, after COMMIT PREPARED and ROLLBACK PREPARED
 * (utility.c): a prepared change becomes true (or not) only then, and a
 * backend may have cached the catalog as it stood meanwhile.
 */
void
RmsgBumpCatalogGeneration(void)
{
	if (shmem_ready)
		pg_atomic_fetch_add_u64(&shared_state->catalog_generation, 1);
}

/*
 * Fail with a pointer to the fix when a feature needing shared memory is
 * used in a server that did not preload the library.
 */
void
RmsgRequireShmem(const char *what)
{
	if (!shmem_ready)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s requires recoverable_msg to be loaded at server start", what),
				 errhint("Add recoverable_msg to shared_preload_libraries and restart the server.")));
}
