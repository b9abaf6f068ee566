/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The extension's shared memory: requested at preload, laid out once;
 *	  and the state of our own in it.
 *
 * Each mechanism that needs shared state describes it in an RmsgShmemArea
 * (its size, and a startup function that attaches to it or sets it up);
 * recoverable_msg.c lists them and hands the list over at preload.  This
 * file adds the sizes up for the request, and calls each startup function
 * under AddinShmemInitLock when the postmaster (or an EXEC_BACKEND child)
 * attaches.  Each area guards itself (core/locks.h lists how); its
 * lightweight lock comes from RmsgLWLock.
 *
 * Our own state here: the generation of the catalog of queues, instances
 * and components (bumped at the end of a transaction that changed it, so
 * that backends drop their caches), when this shared memory was made, and
 * the secret seed of the name locks' hash (core/locks.c).  It needs no
 * lock: the generation is an atomic counter, and the other two are written
 * once, under AddinShmemInitLock, before any backend can read them.
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

#include "core/core.h"

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* The areas recoverable_msg.c listed. */
static const RmsgShmemArea *areas = NULL;
static int	area_count = 0;

/* State of our own. */
typedef struct RmsgSharedState
{
	/* bumped at the end of every transaction that changed the catalog */
	pg_atomic_uint64 catalog_generation;
	/* when this shared memory was made: it is made anew after every crash */
	TimestampTz incarnation;
	/* the secret seed of the name locks' hash (core/locks.c) */
	uint64		name_lock_seed;
} RmsgSharedState;

static RmsgSharedState *shared_state = NULL;
static LWLockPadded *lwlocks = NULL;
static bool shmem_ready = false;

/* The current transaction created, dropped or granted something. */
static bool catalog_changed_in_xact = false;

/*
 * shmem_request_hook: room for our own state and every area (each given a
 * cache line to spare for ShmemInitStruct's alignment), and our tranche of
 * lightweight locks.
 */
static void
RmsgShmemRequestHook(void)
{
	Size		size = MAXALIGN(sizeof(RmsgSharedState));

	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	for (int i = 0; i < area_count; i++)
		size = add_size(size, add_size(areas[i].size(), PG_CACHE_LINE_SIZE));
	RequestAddinShmemSpace(size);
	RequestNamedLWLockTranche("recoverable_msg", RMSG_LWLOCK_COUNT);
}

/*
 * shmem_startup_hook: find our state, or set it up when this shared memory
 * is new (at server start and after every crash), then let each area do
 * the same.
 */
static void
RmsgShmemStartupHook(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	lwlocks = GetNamedLWLockTranche("recoverable_msg");
	shared_state = ShmemInitStruct("recoverable_msg", sizeof(RmsgSharedState), &found);
	if (!found)
	{
		pg_atomic_init_u64(&shared_state->catalog_generation, 1);
		shared_state->incarnation = GetCurrentTimestamp();
		if (!pg_strong_random(&shared_state->name_lock_seed,
							  sizeof(shared_state->name_lock_seed)))
			shared_state->name_lock_seed = (uint64) shared_state->incarnation;
	}
	for (int i = 0; i < area_count; i++)
		areas[i].startup();
	LWLockRelease(AddinShmemInitLock);

	shmem_ready = true;
}

/*
 * Called from _PG_init while shared_preload_libraries is being processed,
 * with every area the mechanisms need (the list must outlive the process).
 */
void
RmsgShmemRequest(const RmsgShmemArea *list, int count)
{
	areas = list;
	area_count = count;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = RmsgShmemRequestHook;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = RmsgShmemStartupHook;
}

/* One of our lightweight locks; NULL when there is no shared memory. */
LWLock *
RmsgLWLock(RmsgLWLockId id)
{
	return lwlocks != NULL ? &lwlocks[id].lock : NULL;
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
 * incarnation may have lost log writes since (contract/caller.c).
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

/*
 * Whether the current transaction changed the catalog: it must then read
 * the rows rather than any cache, to see its own changes.
 */
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
 * (roles/utility_hook.c): a prepared change becomes true (or not) only
 * then, and a backend may have cached the catalog as it stood meanwhile.
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
