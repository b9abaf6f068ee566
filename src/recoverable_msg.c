/*-------------------------------------------------------------------------
 *
 * recoverable_msg.c
 *	  The module's entry point, at the top of the mechanisms: it defines the
 *	  settings, lists the shared memory each mechanism needs, connects the
 *	  mechanisms that must hear of each other, and ends their transactions.
 *
 * The mechanisms depend on each other one way, down (src/README.md):
 * worker -> instance, contract -> queue -> dedup -> core.  Where a lower
 * one must tell a higher one something (a commit made messages ready, and
 * the workers should look), it offers a hook, and this file connects it.
 *
 * The library can be loaded on first use, but long polling, the contract
 * and the workers need shared memory and therefore
 * shared_preload_libraries; RmsgRequireShmem() says so when it is missing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "contract/contract.h"
#include "roles/roles.h"
#include "worker/worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* Every mechanism's shared memory, in the order it is laid out. */
static const RmsgShmemArea shmem_areas[] = {
	{"counters", RmsgStatsShmemSize, RmsgStatsShmemStartup},
	{"long polling", RmsgLongPollShmemSize, RmsgLongPollShmemStartup},
	{"ready hints", RmsgReadyHintShmemSize, RmsgReadyHintShmemStartup},
	{"called components", RmsgComponentsShmemSize, RmsgComponentsShmemStartup},
	{"instance cache", RmsgInstanceCacheShmemSize, RmsgInstanceCacheShmemStartup},
	{"line hints", RmsgLineHintShmemSize, RmsgLineHintShmemStartup},
	{"workers", RmsgWorkerShmemSize, RmsgWorkerShmemStartup},
	{"flow control", RmsgFlowShmemSize, RmsgFlowShmemStartup},
};

/*
 * One callback for every transaction end, so that the files it concerns do
 * not each register their own: a commit's mode (lazy or stable) is settled
 * before its commit record is written, the contract notes the CLSNs of the
 * replies it logged once it is written, and waiters are woken once the
 * commit is visible.
 * Nothing here may raise an error after PRE_COMMIT.
 *
 * A prepared transaction ends in this backend at PREPARE and is committed
 * later, perhaps by another backend, which knows nothing of our lists: its
 * catalog change is published now, and its wakeups are dropped (a waiting
 * get or worker finds the messages at its next wakeup or when its wait
 * ends).
 */
static void
RmsgXactCallback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			RmsgCommitModePreCommit();
			break;
		case XACT_EVENT_COMMIT:
			RmsgCatalogXactEnd();
			RmsgReadyHintXactEnd();
			RmsgWakeupXactEnd(true);
			RmsgComponentsXactEnd(true);
			RmsgInstanceCacheXactEnd();
			RmsgWorkerXactEnd(true);
			RmsgCommitModeXactEnd();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
			RmsgCatalogXactEnd();
			RmsgReadyHintXactEnd();
			RmsgWakeupXactEnd(false);
			/*
			 * A prepared reply's CLSN is not ours to learn, and need not
			 * be: COMMIT PREPARED always flushes its commit record.
			 */
			RmsgComponentsXactEnd(false);
			RmsgInstanceCacheXactEnd();
			RmsgWorkerXactEnd(false);
			RmsgCommitModeXactEnd();
			break;
		default:
			break;
	}
}

/* Replies recorded in a subtransaction live and die with it. */
static void
RmsgSubXactCallback(SubXactEvent event, SubTransactionId subxid,
					SubTransactionId parent, void *arg)
{
	if (event == SUBXACT_EVENT_COMMIT_SUB)
		RmsgComponentsSubXactEnd(true, subxid, parent);
	else if (event == SUBXACT_EVENT_ABORT_SUB)
		RmsgComponentsSubXactEnd(false, subxid, parent);
}

static void
DefineSettings(void)
{
	DefineCustomIntVariable("rmsg.max_payload_size",
							"Largest payload a put accepts.",
							"Larger payloads fail with SQLSTATE 54000.",
							&rmsg_max_payload_size,
							1024 * 1024, 1, MaxAllocSize / 2,
							PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("rmsg.inline_payload_max",
							"Payloads up to this size are stored in the message row itself.",
							"Larger payloads get a payload row of their own, which later puts of the same data can reference.",
							&rmsg_inline_payload_max,
							2000, 0, 8192,
							PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("rmsg.lazy_leases",
							 "Commit lease-only transactions without waiting for the WAL flush.",
							 "A transaction whose only writes are gets, nacks or extends does not wait for its commit record to reach disk; a crash may forget such a lease, and the message is then simply ready again.",
							 &rmsg_lazy_leases,
							 true,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("rmsg.lazy_caller_log",
							 "Commit the caller's log writes of the contract without waiting for the WAL flush.",
							 "On (the contract): prepare_call forces the WAL only when a callee would release a reply that is not yet stable. Off: those transactions commit under synchronous_commit, for comparison.",
							 &rmsg_lazy_caller_log,
							 true,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("rmsg.last_call_depth",
							"Replies a callee keeps per caller, and a caller counts on its callees keeping.",
							"A caller may call a callee this many times before it must force its log; set the same value on every server of a conversation.",
							&rmsg_last_call_depth,
							1, 1, RMSG_MAX_CALL_DEPTH,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("rmsg.instance_cache",
							 "Keep the ids and modes of instances in shared memory.",
							 "Off: every delivery reads its instance's row, for measuring what the cache saves.",
							 &rmsg_instance_cache,
							 true,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("rmsg.database",
							   "Database the background workers connect to.",
							   "The workers handle the messages and run the maintenance of the extension installed there; a change restarts them.",
							   &rmsg_database,
							   "postgres",
							   PGC_SIGHUP, 0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("rmsg.worker_naptime",
							"Longest time a background worker sleeps, and the period of its maintenance.",
							"Workers are woken by commits that give them work; this bounds how late they notice anything else, such as a lease running out.",
							&rmsg_worker_naptime,
							10000, 100, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("rmsg.retry_delay",
							"Delay before a message whose handler failed is tried again.",
							"The delay doubles with each further failure, up to rmsg.max_retry_delay.",
							&rmsg_retry_delay,
							1000, 0, 24 * 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("rmsg.max_retry_delay",
							"Longest delay before a message whose handler failed is tried again.",
							NULL,
							&rmsg_max_retry_delay,
							600000, 0, 24 * 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("rmsg.max_wait",
							"Longest time a get may wait for a message, whatever wait it asks for.",
							"Set it for the roles that reach the server through a pooler in transaction mode, where a waiting get holds a server connection.  0 means no ceiling.",
							&rmsg_max_wait,
							0, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("rmsg.handler_timeout",
							"Longest time a handler may run on one message before its call is cancelled.",
							"The cancelled call fails and its message is retried as after any error.  0 means no limit.",
							&rmsg_handler_timeout,
							300000, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	/*
	 * These size shared memory or register workers, so they exist only when
	 * we are preloaded (a PGC_POSTMASTER setting defined later is a FATAL
	 * error).
	 */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("rmsg.worker_count",
								"Background workers that call handlers.",
								"0 starts none: no handlers are called and no maintenance runs.",
								&rmsg_worker_count,
								1, 0, 32,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);
	else
		rmsg_worker_count = 0;

	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("rmsg.max_components",
								"Entries in the shared called-component table.",
								"One entry per caller and callee called since the server started; an entry whose replies are stable may be evicted.",
								&rmsg_max_components,
								1024, 16, 1024 * 1024,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);

	MarkGUCPrefixReserved("rmsg");
}

void
_PG_init(void)
{
	DefineSettings();

	if (process_shared_preload_libraries_in_progress)
	{
		RmsgShmemRequest(shmem_areas, lengthof(shmem_areas));
		RmsgRegisterWorkers();
	}

	/* commits that make messages ready wake the workers that serve them */
	rmsg_queue_ready_hook = RmsgWakeWorkersForQueue;
	rmsg_instance_ready_hook = RmsgWakeWorkersAtCommit;

	RmsgQueueCatalogInit();
	RmsgInstanceLeaseInit();
	RmsgUtilityInit();
	RegisterXactCallback(RmsgXactCallback, NULL);
	RegisterSubXactCallback(RmsgSubXactCallback, NULL);
}
