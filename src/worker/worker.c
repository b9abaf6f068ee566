/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The background workers: registered at server start, connected to the
 *	  database rmsg.database names, they call the handlers of ready
 *	  messages and run the maintenance.
 *
 * rmsg.worker_count workers are registered while shared_preload_libraries
 * is processed; the postmaster starts them once the server accepts
 * connections and restarts one that dies, after RESTART_SECONDS.  A worker
 * stops at once on SIGTERM (die: the transaction in progress rolls back),
 * and reads the configuration again on SIGHUP; if rmsg.database changed,
 * it exits and comes back connected to the new database.
 *
 * A database that does not exist cannot be connected to: the attempt is a
 * FATAL error, and the postmaster would start the worker again every
 * RESTART_SECONDS, logging each time.  So the next worker of the slot,
 * seeing that its predecessor did not get there (slots.c), waits instead
 * while connected to no database (the shared catalogs are readable then),
 * logs why once, and exits to be started again, connected, when the
 * database appears or rmsg.database changes.
 *
 * Each worker goes round in passes.  A pass makes sure the handlers it
 * knows are current, then gives every subscribed queue one transaction (up
 * to its batch of messages, dispatch_queue.c) and instances up to
 * INSTANCE_TURNS transactions of one message each (dispatch_instance.c).
 * Worker 0 also runs the maintenance (maintenance.c) once per
 * rmsg.worker_naptime.  When a pass found nothing to do, the worker sleeps
 * on its latch until a commit gives it work (slots.c), a delayed message
 * or a retry comes due, or rmsg.worker_naptime has passed.  Several
 * workers share the work without coordinating: leases and row locks keep
 * them off each other's messages, take locks off each other's instances.
 *
 * The worker runs only against the SQL objects of the version this library
 * was built for: while the database has no extension, or one that still
 * needs ALTER EXTENSION UPDATE, it leaves the extension's tables alone,
 * shows why in its slot and looks again after each sleep.
 *
 * An error outside a handler (the extension dropped under it, say) is
 * logged and kept in the worker's slot; the worker rolls back, waits a
 * second, reads the handlers again and goes on.
 *
 * Everything in this file is the worker's own, in its process memory: the
 * state it shares with other backends is in slots.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "worker/worker.h"

/* the workers' settings (recoverable_msg.c defines them) */
char	   *rmsg_database = NULL;
int			rmsg_worker_count = 1;
int			rmsg_worker_naptime = 10000;

#define RESTART_SECONDS 5
/* instance messages handled per pass before the queues get their turn again */
#define INSTANCE_TURNS 100
/* how long a worker pauses after an error outside a handler */
#define ERROR_PAUSE_MS 1000

PGDLLEXPORT void rmsg_worker_main(Datum main_arg);

/* A worker's own state, kept across its passes. */
static int	worker_index;
static char connected_database[NAMEDATALEN];
static MemoryContext handlers_context = NULL;
static List *handlers = NIL;	/* of RmsgHandler */
static List *remotes = NIL;		/* of RmsgRemote: worker 0's, transfer.c */
static bool handlers_valid = false;
static bool handlers_checked = false;	/* since the last sleep */
static uint64 handlers_generation = 0;
static uint64 handlers_catalog_generation = 0;
static int64 instance_cursor = 0;
static TimestampTz earliest_retry = 0;	/* of the retries we scheduled */
static TimestampTz next_maintenance = 0;

/*
 * $1 subscribed queue ids, $2 now: when the first delayed message comes
 * due.  One index descent per queue and priority lane: with priority the
 * second column of the ready index, a scan of a whole queue ordered by
 * visible_at would read (and sort) every entry of it on each idle pass.
 */
static RmsgPlan next_due_plan = {
	"SELECT min(n.visible_at) AS next_due FROM unnest($1) q(id)"
	" CROSS JOIN generate_series(0, " CppAsString2(RMSG_MAX_PRIORITY) ") p(lane)"
	" CROSS JOIN LATERAL (SELECT visible_at FROM rmsg.message"
	"                      WHERE queue_id = q.id AND priority = p.lane AND visible_at > $2"
	"                      ORDER BY visible_at LIMIT 1) n",
	2, {INT4ARRAYOID, TIMESTAMPTZOID}
};

/* Registers the workers; called from _PG_init at preload. */
void
RmsgRegisterWorkers(void)
{
	for (int i = 0; i < rmsg_worker_count; i++)
	{
		BackgroundWorker worker;

		memset(&worker, 0, sizeof(worker));
		worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
		worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
		worker.bgw_restart_time = RESTART_SECONDS;
		snprintf(worker.bgw_library_name, BGW_MAXLEN, "recoverable_msg");
		snprintf(worker.bgw_function_name, BGW_MAXLEN, "rmsg_worker_main");
		snprintf(worker.bgw_name, BGW_MAXLEN, "recoverable_msg worker %d", i);
		snprintf(worker.bgw_type, BGW_MAXLEN, "recoverable_msg worker");
		worker.bgw_main_arg = Int32GetDatum(i);
		RegisterBackgroundWorker(&worker);
	}
}

/*
 * Starts a transaction for one unit of work, as a client's statement would
 * start: with a fresh start time (so that now() in a handler is this
 * transaction's), a snapshot, and its activity in pg_stat_activity.
 */
static void
BeginUnit(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

/* Commits the unit of work: its handlers' work and its acks together. */
static void
EndUnit(void)
{
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* The same, for the worker's other files (transfer.c). */
void
RmsgWorkerBeginUnit(const char *activity)
{
	BeginUnit(activity);
}

void
RmsgWorkerEndUnit(void)
{
	EndUnit();
}

/*
 * Whether a handler can be called: its function and its role still exist,
 * and a queue's handler role may still get from its queue (an instance
 * handler's right is checked per instance, dispatch_instance.c).  One that
 * cannot is skipped, its messages untouched, and said so once: in the log,
 * and as the last error of the worker's slot.
 */
static void
CheckUsable(RmsgHandler *h)
{
	bool		exists = SearchSysCacheExists1(PROCOID, ObjectIdGetDatum(h->handler)) &&
		SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(h->owner));
	bool		usable = exists &&
		(h->for_instances || RmsgHandlerMayTake(h, h->queue_id));

	if (!usable && h->usable)
	{
		char		message[256];

		/*
		 * The slot keeps the first clause; the log line says what happens
		 * to the messages as well.
		 */
		if (!exists && h->for_instances)
		{
			snprintf(message, sizeof(message),
					 "the handler of instance prefix \"%s\" (function %u, role %u) no longer exists",
					 h->target, h->handler, h->owner);
			ereport(WARNING,
					(errmsg("the handler of instance prefix \"%s\" (function %u, role %u) no longer exists; its messages wait",
							h->target, h->handler, h->owner),
					 errhint("Register the handler again, or grant the role get on the queue.")));
		}
		else if (!exists)
		{
			snprintf(message, sizeof(message),
					 "the handler of queue \"%s\" (function %u, role %u) no longer exists",
					 h->target, h->handler, h->owner);
			ereport(WARNING,
					(errmsg("the handler of queue \"%s\" (function %u, role %u) no longer exists; its messages wait",
							h->target, h->handler, h->owner),
					 errhint("Register the handler again, or grant the role get on the queue.")));
		}
		else
		{
			snprintf(message, sizeof(message),
					 "the role of the handler of queue \"%s\" (role %u) no longer holds get on it",
					 h->target, h->owner);
			ereport(WARNING,
					(errmsg("the role of the handler of queue \"%s\" (role %u) no longer holds get on it; its messages wait",
							h->target, h->owner),
					 errhint("Register the handler again, or grant the role get on the queue.")));
		}
		RmsgWorkerNoteError(message, true);
	}
	h->usable = usable;
}

/*
 * Makes sure the handlers are current: read again when a handler or the
 * queue catalog changed since.  False when the extension is not (or no
 * longer) installed in our database.  Looking for the extension costs a
 * catalog scan, so a busy worker does this only when something changed;
 * an extension dropped meanwhile makes its next statement fail, and the
 * error sends it here.
 */
static bool
PrepareHandlers(void)
{
	uint64		generation = RmsgHandlerGeneration();
	uint64		catalog_generation = RmsgCatalogGeneration();
	char	   *version;
	bool		installed;
	bool		outdated;
	ListCell   *lc;

	BeginUnit("recoverable_msg: reading handlers");
	version = RmsgInstalledVersion();
	installed = version != NULL && strcmp(version, RMSG_SQL_VERSION) == 0;
	if (installed && (!handlers_valid || generation != handlers_generation ||
					  catalog_generation != handlers_catalog_generation))
	{
		uint64		mask = 0;
		bool		instances = false;

		MemoryContextReset(handlers_context);
		RmsgSpiConnect();
		handlers = RmsgLoadHandlers(handlers_context);
		/* one sender per remote queue keeps its rounds in order */
		remotes = worker_index == 0 ? RmsgLoadRemoteQueues(handlers_context) : NIL;
		RmsgSpiFinish();
		foreach(lc, remotes)
			mask |= UINT64CONST(1) << ((uint32) ((RmsgRemote *) lfirst(lc))->queue_id % 64);

		foreach(lc, handlers)
		{
			RmsgHandler *h = (RmsgHandler *) lfirst(lc);

			h->usable = true;
			if (h->for_instances)
				instances = true;
			else
				mask |= UINT64CONST(1) << ((uint32) h->queue_id % 64);
		}
		RmsgWorkersPublishTargets(mask, instances);
		handlers_generation = generation;
		handlers_catalog_generation = catalog_generation;
		handlers_valid = true;
	}
	outdated = version != NULL && !installed;
	EndUnit();

	if (!installed)
	{
		handlers_valid = false;
		RmsgWorkerReport(outdated ? RMSG_WORKER_OLD_EXTENSION : RMSG_WORKER_NO_EXTENSION, NULL);
	}
	handlers_checked = installed;
	return installed;
}

/* What one turn (one transaction) came to. */
typedef enum TurnResult
{
	TURN_IDLE,					/* nothing to take */
	TURN_WORKED,				/* took messages */
	TURN_STALE					/* the handlers changed: read them again */
} TurnResult;

/*
 * Ends a turn: commits, or, when it took messages after the handlers
 * changed, rolls back, which hands the messages back untouched.
 */
static TurnResult
EndTurn(int taken, const RmsgWorkCounts *counts)
{
	if (taken == RMSG_HANDLERS_STALE)
	{
		PopActiveSnapshot();
		AbortCurrentTransaction();
		pgstat_report_activity(STATE_IDLE, NULL);
		return TURN_STALE;		/* the next pass reads the handlers again */
	}
	EndUnit();
	RmsgWorkerCount(counts);
	return taken > 0 ? TURN_WORKED : TURN_IDLE;
}

/* Whether the handlers changed since we read them. */
static bool
HandlersChanged(void)
{
	return RmsgHandlerGeneration() != handlers_generation ||
		RmsgCatalogGeneration() != handlers_catalog_generation;
}

/*
 * One transaction on one subscribed queue, if its flow control (flow.c)
 * gives this worker a turn now; else the queue waits for the next pass,
 * and the worker wakes for it no later than when the rate allows.
 */
static TurnResult
QueueTurn(RmsgHandler *h)
{
	RmsgWorkCounts counts = {0};
	char		activity[2 * NAMEDATALEN];
	int			granted;
	int			taken = 0;
	TurnResult	result;

	granted = RmsgFlowBegin(h, worker_index, &earliest_retry);
	if (granted == 0)
		return TURN_IDLE;
	snprintf(activity, sizeof(activity), "queue %s", h->target);
	RmsgWorkerReport(RMSG_WORKER_HANDLING, activity);
	BeginUnit("recoverable_msg: handling queue messages");
	CheckUsable(h);
	if (h->usable)
		taken = RmsgDispatchQueue(h, granted, handlers_generation, &counts, &earliest_retry);
	result = EndTurn(taken, &counts);
	RmsgFlowEnd(h, worker_index, granted, Max(taken, 0));
	return result;
}

/* One transaction on one instance's message. */
static TurnResult
InstanceTurn(void)
{
	RmsgWorkCounts counts = {0};
	int			taken;
	ListCell   *lc;

	RmsgWorkerReport(RMSG_WORKER_HANDLING, "instances");
	BeginUnit("recoverable_msg: handling instance messages");
	foreach(lc, handlers)
	{
		RmsgHandler *h = (RmsgHandler *) lfirst(lc);

		if (h->for_instances)
			CheckUsable(h);
	}
	taken = RmsgDispatchInstance(handlers, handlers_generation, &instance_cursor,
								 &counts, &earliest_retry);
	return EndTurn(taken, &counts);
}

/*
 * Worker 0's schedule: sweep exhausted messages, collect payloads, forget
 * the dedup_ids of puts older than their queue's window (queue/put_keys.c).
 */
static void
Maintain(void)
{
	int64		swept;
	int64		collected;

	RmsgWorkerReport(RMSG_WORKER_MAINTAINING, NULL);
	BeginUnit("recoverable_msg: dead-lettering exhausted messages");
	swept = RmsgSweepExhausted();
	EndUnit();
	BeginUnit("recoverable_msg: collecting payloads");
	collected = RmsgCollectPayloads();
	EndUnit();
	BeginUnit("recoverable_msg: removing expired put keys");
	(void) RmsgRemoveExpiredPutKeys();
	EndUnit();
	RmsgWorkerMaintained(collected, swept);
	if (swept > 0 || collected > 0)
		ereport(DEBUG1,
				(errmsg("recoverable_msg maintenance: " INT64_FORMAT " messages dead-lettered, " INT64_FORMAT " payloads collected",
						swept, collected)));
}

/*
 * When the first delayed message of a subscribed queue, or of a remote
 * queue worker 0 moves, comes due, or 0.
 */
static TimestampTz
NextDelayedMessage(void)
{
	Datum	   *ids;
	int			n = 0;
	ListCell   *lc;
	Datum		values[2];
	bool		isnull;
	Datum		next;
	TimestampTz due = 0;

	foreach(lc, handlers)
	{
		RmsgHandler *h = (RmsgHandler *) lfirst(lc);

		if (!h->for_instances && h->usable)
			n++;
	}
	n += list_length(remotes);
	if (n == 0)
		return 0;

	BeginUnit("recoverable_msg: looking for delayed messages");
	ids = palloc(sizeof(Datum) * n);	/* in the transaction's memory */
	n = 0;
	foreach(lc, handlers)
	{
		RmsgHandler *h = (RmsgHandler *) lfirst(lc);

		if (!h->for_instances && h->usable)
			ids[n++] = Int32GetDatum(h->queue_id);
	}
	foreach(lc, remotes)
		ids[n++] = Int32GetDatum(((RmsgRemote *) lfirst(lc))->queue_id);
	values[0] = PointerGetDatum(construct_array(ids, n, INT4OID, sizeof(int32),
												true, TYPALIGN_INT));
	values[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	RmsgSpiConnect();
	RmsgPlanExecute(&next_due_plan, values, NULL, false, 1);
	/* min() of no rows is NULL: no delayed message */
	next = RmsgSpiValue(0, "next_due", &isnull);
	if (!isnull)
		due = DatumGetTimestampTz(next);
	RmsgSpiFinish();
	EndUnit();
	return due;
}

/*
 * One pass over everything there is to do; true if it did something, else
 * *wake_at is when something comes due.
 */
static bool
RunPass(TimestampTz *wake_at)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz due;
	bool		worked = false;
	bool		any_instances = false;
	ListCell   *lc;

	*wake_at = now + (int64) rmsg_worker_naptime * 1000;
	if ((!handlers_checked || !handlers_valid || HandlersChanged()) &&
		!PrepareHandlers())
		return false;

	/*
	 * A change of the handlers ends the pass, so that the next one reads
	 * them again: a message put after an unsubscribe committed never goes
	 * to the old handler (the turns check again once they have taken one).
	 */
	foreach(lc, handlers)
	{
		RmsgHandler *h = (RmsgHandler *) lfirst(lc);
		TurnResult	result;

		CHECK_FOR_INTERRUPTS();
		if (HandlersChanged())
			return true;
		if (h->for_instances)
		{
			any_instances = true;
			continue;
		}
		result = QueueTurn(h);
		if (result == TURN_STALE)
			return true;
		worked |= (result == TURN_WORKED);
	}
	foreach(lc, remotes)
	{
		CHECK_FOR_INTERRUPTS();
		if (HandlersChanged())
			return true;
		worked |= RmsgTransferTurn((RmsgRemote *) lfirst(lc), &earliest_retry);
	}
	for (int turn = 0; any_instances && turn < INSTANCE_TURNS; turn++)
	{
		TurnResult	result;

		CHECK_FOR_INTERRUPTS();
		if (HandlersChanged())
			return true;
		result = InstanceTurn();
		if (result == TURN_STALE)
			return true;
		if (result == TURN_IDLE)
			break;
		worked = true;
	}

	if (worker_index == 0 && GetCurrentTimestamp() >= next_maintenance)
	{
		Maintain();
		next_maintenance = GetCurrentTimestamp() + (int64) rmsg_worker_naptime * 1000;
	}

	RmsgWorkerReport(RMSG_WORKER_IDLE, NULL);
	if (worked)
		return true;

	/* asleep until the first of: naptime, a retry, a delayed message, maintenance */
	now = GetCurrentTimestamp();
	if (earliest_retry != 0 && earliest_retry <= now)
		earliest_retry = 0;		/* due: this pass has seen to it */
	if (earliest_retry != 0 && earliest_retry < *wake_at)
		*wake_at = earliest_retry;
	due = NextDelayedMessage();
	if (due != 0 && due < *wake_at)
		*wake_at = due;
	if (worker_index == 0 && next_maintenance < *wake_at)
		*wake_at = next_maintenance;
	return false;
}

/*
 * SIGHUP: read the configuration; a new rmsg.database takes a restart, and
 * a shorter rmsg.worker_naptime brings the next maintenance forward.
 */
static void
ReloadConfiguration(void)
{
	TimestampTz latest_maintenance;

	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
	latest_maintenance = GetCurrentTimestamp() + (int64) rmsg_worker_naptime * 1000;
	if (next_maintenance > latest_maintenance)
		next_maintenance = latest_maintenance;
	if (strcmp(rmsg_database, connected_database) != 0)
	{
		ereport(LOG,
				(errmsg("recoverable_msg worker %d restarting: rmsg.database changed from \"%s\" to \"%s\"",
						worker_index, connected_database, rmsg_database)));
		proc_exit(1);			/* the postmaster starts us again */
	}
}

/* Sleeps until the latch is set or the time comes. */
static void
SleepUntil(TimestampTz wake_at)
{
	long		timeout = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), wake_at);

	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 Max(timeout, 1), PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
}

/*
 * After an error outside a handler: log it, keep it in our slot, roll back,
 * and read the handlers again after a pause.
 */
static void
RecoverFromError(MemoryContext error_context)
{
	ErrorData  *edata;

	error_context_stack = NULL;
	HOLD_INTERRUPTS();
	EmitErrorReport();
	MemoryContextSwitchTo(error_context);
	edata = CopyErrorData();
	AbortOutOfAnyTransaction();
	FlushErrorState();
	MemoryContextSwitchTo(TopMemoryContext);
	RmsgWorkerNoteError(edata->message ? edata->message : "unknown error", true);
	RmsgWorkerReport(RMSG_WORKER_FAILED, NULL);
	RmsgFlowLeaveAll(worker_index);	/* a turn the error ended */
	MemoryContextReset(error_context);
	pgstat_report_activity(STATE_IDLE, NULL);
	handlers_valid = false;
	RESUME_INTERRUPTS();

	SleepUntil(GetCurrentTimestamp() + ERROR_PAUSE_MS * 1000);
}

/* Whether a database of that name exists: a scan of the shared catalog. */
static bool
DatabaseExists(const char *name)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;
	bool		found = false;

	StartTransactionCommand();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (!found && (tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
		found = (strcmp(NameStr(((Form_pg_database) GETSTRUCT(tuple))->datname), name) == 0);
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return found;
}

/*
 * The previous worker of this slot could not connect to connected_database:
 * waits, connected to no database, until it exists or rmsg.database names
 * another one, then exits so that the postmaster starts the worker again
 * (after RESTART_SECONDS) to connect.  Logs why once.
 */
static void
WaitForDatabase(void)
{
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	RmsgWorkerAttach(worker_index, connected_database);
	RmsgWorkerReport(RMSG_WORKER_NO_DATABASE, NULL);
	ereport(LOG,
			(errmsg("recoverable_msg worker %d waits for database \"%s\", which does not exist",
					worker_index, connected_database),
			 errhint("Create the database, or set rmsg.database to a database that exists and reload the configuration.")));

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			if (strcmp(rmsg_database, connected_database) != 0)
				break;
		}
		if (DatabaseExists(connected_database))
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 rmsg_worker_naptime, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	RmsgWorkerConnecting(worker_index, NULL);
	proc_exit(1);				/* the postmaster starts us again, to connect */
}

/*
 * The worker's entry point (bgw_function_name); main_arg is its slot.
 * Errors outside a handler come back to the sigsetjmp below, and the loop
 * goes on after RecoverFromError.
 */
void
rmsg_worker_main(Datum main_arg)
{
	sigjmp_buf	local_sigjmp_buf;
	MemoryContext error_context;

	worker_index = DatumGetInt32(main_arg);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	strlcpy(connected_database, rmsg_database, NAMEDATALEN);
	if (RmsgWorkerConnectFailed(worker_index, connected_database))
		WaitForDatabase();		/* does not return */
	RmsgWorkerConnecting(worker_index, connected_database);
	BackgroundWorkerInitializeConnection(connected_database, NULL, 0);
	RmsgWorkerConnecting(worker_index, NULL);
	RmsgWorkerAttach(worker_index, connected_database);
	RmsgFlowLeaveAll(worker_index);	/* the turns of a worker that died before */
	ereport(LOG,
			(errmsg("recoverable_msg worker %d started in database \"%s\"",
					worker_index, connected_database)));

	handlers_context = AllocSetContextCreate(TopMemoryContext,
											 "recoverable_msg handlers",
											 ALLOCSET_SMALL_SIZES);
	error_context = AllocSetContextCreate(TopMemoryContext,
										  "recoverable_msg worker errors",
										  ALLOCSET_SMALL_SIZES);
	next_maintenance = GetCurrentTimestamp() + (int64) rmsg_worker_naptime * 1000;

	if (sigsetjmp(local_sigjmp_buf, 1) != 0)
		RecoverFromError(error_context);
	PG_exception_stack = &local_sigjmp_buf;

	for (;;)
	{
		TimestampTz wake_at;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
			ReloadConfiguration();
		if (!RunPass(&wake_at))
		{
			pgstat_report_stat(true);
			SleepUntil(wake_at);
			handlers_checked = false;	/* look for the extension again */
		}
	}
}
