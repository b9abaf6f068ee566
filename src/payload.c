/*-------------------------------------------------------------------------
 *
 * payload.c
 *	  Payload rows and their reference counts.
 *
 * A payload row is written once and referenced by every message (live or
 * dead) that carries its data; refs counts those messages.  Releasing a
 * reference deletes the row when it was the last one.  The decision is made
 * by the DELETE's own qualification (refs <= what we release), which
 * PostgreSQL re-checks against the newest row version when another
 * transaction changed refs meanwhile: a concurrent new reference keeps the
 * row alive, and a put that finds the row deleted writes its data again.
 * No lock of ours is needed.  The statements read the newest committed
 * counts (the latest snapshot) whatever the isolation level: a REPEATABLE
 * READ snapshot may predate the references being released, e.g. those of
 * messages a drop_queue deletes after waiting for their puts.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/array.h"

#include "rmsg.h"

static RmsgPlan delete_last_plan = {
	"DELETE FROM rmsg.payload WHERE payload_id = $1 AND refs <= 1",
	1, {INT8OID}
};

static RmsgPlan decrement_plan = {
	"UPDATE rmsg.payload SET refs = refs - 1 WHERE payload_id = $1",
	1, {INT8OID}
};

static RmsgPlan delete_last_many_plan = {
	"WITH c AS (SELECT id, count(*) AS n FROM unnest($1::bigint[]) id GROUP BY id)"
	" DELETE FROM rmsg.payload p USING c"
	" WHERE p.payload_id = c.id AND p.refs <= c.n",
	1, {INT8ARRAYOID}
};

static RmsgPlan decrement_many_plan = {
	"WITH c AS (SELECT id, count(*) AS n FROM unnest($1::bigint[]) id GROUP BY id)"
	" UPDATE rmsg.payload p SET refs = p.refs - c.n FROM c"
	" WHERE p.payload_id = c.id",
	1, {INT8ARRAYOID}
};

/* One message no longer references this payload.  Call inside SPI. */
void
RmsgReleasePayload(int64 payload_id)
{
	Datum		arg = Int64GetDatum(payload_id);

	RmsgPlanExecute(&delete_last_plan, &arg, NULL, true, 0);
	if (SPI_processed == 0)
		RmsgPlanExecute(&decrement_plan, &arg, NULL, true, 0);
}

/*
 * Several references go at once (an id may repeat).  The rows whose last
 * references these were are deleted; the others are decremented.
 */
void
RmsgReleasePayloads(Datum payload_ids)
{
	ArrayType  *ids = DatumGetArrayTypeP(payload_ids);
	int			nids = ArrayGetNItems(ARR_NDIM(ids), ARR_DIMS(ids));

	if (nids == 0)
		return;

	RmsgPlanExecute(&delete_last_many_plan, &payload_ids, NULL, true, 0);
	/* every id was distinct and deleted: nothing left to decrement */
	if (SPI_processed < (uint64) nids)
		RmsgPlanExecute(&decrement_many_plan, &payload_ids, NULL, true, 0);
}
