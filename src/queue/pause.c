/*-------------------------------------------------------------------------
 *
 * pause.c
 *	  rmsg.pause_queue and rmsg.resume_queue.
 *
 * A paused queue keeps taking puts but hands nothing out: rmsg.get returns
 * no rows, and the worker dispatches none of its messages, until
 * rmsg.resume_queue.  Leases handed out before stay theirs: they may be
 * acked, nacked and extended as usual.
 *
 * The flag is a column of the queue's catalog row, so it is transactional
 * (a pause that rolls back never happened) and survives restarts and dumps.
 * Every get and every worker transaction opens its queue, which reads the
 * row or the backend's cache of it (catalog.c); a pause or resume marks the
 * catalog changed, so every cache goes stale once it commits: the catalog
 * generation is bumped after the commit is visible to everyone
 * (RmsgCatalogXactEnd), so whoever reads the new generation reads the new
 * row.  A get already past opening its queue when the pause commits may
 * still lease what it finds; the next does not.
 *
 * Neither takes the queue's name lock beyond what a put takes: waiting
 * for every get in progress, long polls included, would hold up the
 * queue's producers behind the pause.  A resume wakes the queue's long
 * polls and the worker at commit, as a put does: they open the queue again
 * and find it open.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "storage/lockdefs.h"

#include "queue/queue.h"

PG_FUNCTION_INFO_V1(rmsg_pause_queue);
PG_FUNCTION_INFO_V1(rmsg_resume_queue);

/* $1 queue_id, $2 paused */
static RmsgPlan set_paused_plan = {
	"UPDATE rmsg.queue SET paused = $2 WHERE queue_id = $1",
	2, {INT4OID, BOOLOID}
};

/* Sets a queue's paused flag, for a role that may manage it. */
static void
SetPaused(FunctionCallInfo fcinfo, const char *function, bool paused)
{
	char	   *name;
	RmsgQueue	queue;
	Datum		values[2];

	RmsgEnter(function, true);
	name = RmsgTextArg(fcinfo, 0, "queue name");
	RmsgSpiConnect();
	RmsgNoteCatalogChange();	/* also: read the catalog, not the cache */
	queue = RmsgOpenQueueFor(name, AccessShareLock, RMSG_MANAGE);

	values[0] = Int32GetDatum(queue.queue_id);
	values[1] = BoolGetDatum(paused);
	RmsgPlanExecute(&set_paused_plan, values, NULL, true, 0);
	if (!paused)
		RmsgWakeQueueAtCommit(queue.queue_id);
	RmsgSpiFinish();
}

/* rmsg.pause_queue(queue) */
Datum
rmsg_pause_queue(PG_FUNCTION_ARGS)
{
	SetPaused(fcinfo, "rmsg.pause_queue", true);
	PG_RETURN_VOID();
}

/* rmsg.resume_queue(queue) */
Datum
rmsg_resume_queue(PG_FUNCTION_ARGS)
{
	SetPaused(fcinfo, "rmsg.resume_queue", false);
	PG_RETURN_VOID();
}
