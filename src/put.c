/*-------------------------------------------------------------------------
 *
 * put.c
 *	  rmsg.put and rmsg.put_batch: adding messages to a queue.
 *
 * A payload no larger than rmsg.inline_payload_max (2000 bytes, just below
 * the size at which PostgreSQL would toast the row) is stored in the message
 * row, inserted directly (insert.c); a larger one gets a payload row with
 * refs = 1 that the message references (payload.c), written with the
 * message by one statement.  A payload row
 * costs every put two more WAL records and about 150 bytes, and only pays
 * when the same data is put again: for a 1 KiB put it is 18% of throughput
 * (README, Performance).  Deduplicated logging gives shared data a payload
 * row when it is first shared.
 *
 * A put holds its queue's name lock in AccessShareLock until commit
 * (queue_admin.c explains why) and asks for waiting consumers to be woken
 * when it commits (wakeup.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "rmsg.h"

PG_FUNCTION_INFO_V1(rmsg_put);
PG_FUNCTION_INFO_V1(rmsg_put_text);
PG_FUNCTION_INFO_V1(rmsg_put_jsonb);
PG_FUNCTION_INFO_V1(rmsg_put_batch);

/* $1 queue_id, $2 visible_at, $3 enqueued_at, $4 size, $5 headers, $6 data */
static RmsgPlan put_payload_row_plan = {
	"WITH p AS (INSERT INTO rmsg.payload (refs, data) VALUES (1, $6) RETURNING payload_id)"
	" INSERT INTO rmsg.message"
	" (queue_id, visible_at, enqueued_at, payload_size, headers, payload_id)"
	" SELECT $1, $2, $3, $4, $5, p.payload_id FROM p RETURNING msg_id",
	6, {INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID, JSONBOID, BYTEAOID}
};

/*
 * The batch form: payload ids are drawn first, for the elements that need a
 * row, so that messages and payload rows can be matched; msg_ids are drawn
 * in array order and returned in it.  $1 queue_id, $2 now, $3 headers,
 * $4 data[], $5 inline limit.
 */
static RmsgPlan put_batch_plan = {
	"WITH d AS MATERIALIZED ("
	"   SELECT ord, data, length(data) AS size,"
	"          CASE WHEN length(data) > $5 THEN nextval('rmsg.payload_id_seq') END AS pid"
	"     FROM unnest($4::bytea[]) WITH ORDINALITY AS u (data, ord)),"
	" p AS (INSERT INTO rmsg.payload (payload_id, refs, data)"
	"       SELECT pid, 1, data FROM d WHERE pid IS NOT NULL),"
	" m AS (INSERT INTO rmsg.message"
	"        (msg_id, queue_id, visible_at, enqueued_at, payload_size, headers, payload_id, inline_data)"
	"       SELECT nextval('rmsg.msg_id_seq'), $1, $2, $2, size, $3, pid,"
	"              CASE WHEN pid IS NULL THEN data END"
	"         FROM (SELECT * FROM d ORDER BY ord) o"
	"       RETURNING msg_id)"
	" SELECT msg_id FROM m ORDER BY msg_id",
	5, {INT4OID, TIMESTAMPTZOID, JSONBOID, BYTEAARRAYOID, INT4OID}
};

/* Headers are a JSON object or NULL. */
static void
CheckHeaders(FunctionCallInfo fcinfo, int argno)
{
	Jsonb	   *headers;

	if (PG_ARGISNULL(argno))
		return;
	headers = PG_GETARG_JSONB_P(argno);
	if (!JB_ROOT_IS_OBJECT(headers))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("headers must be a JSON object, not %s",
						JsonbToCString(NULL, &headers->root, VARSIZE(headers)))));
}

/*
 * Data tokens (the deduplicated-logging interface of seed 004) are not
 * implemented in this version; refusing them beats silently storing data
 * the caller expected to be referenced.
 */
static void
RefuseDataToken(FunctionCallInfo fcinfo, int argno)
{
	if (PG_NARGS() > argno && !PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("data tokens are not supported yet"),
				 errhint("Pass the payload itself and leave data_token NULL.")));
}

/*
 * The common part of the put overloads: arguments 0 queue, 2 headers,
 * 3 delay, 4 data_token; the payload comes converted to bytea.
 */
static int64
PutMessage(FunctionCallInfo fcinfo, bytea *payload)
{
	char	   *queue_name = RmsgTextArg(fcinfo, 0, "queue name");
	int64		delay = RmsgIntervalArg(fcinfo, 3, "delay", 0, true);
	Size		size = VARSIZE_ANY_EXHDR(payload);
	TimestampTz now = GetCurrentTimestamp();
	RmsgQueue	queue;
	Datum		values[6];
	bool		isnull[6] = {false, false, false, false, false, false};
	bool		found;
	int64		msg_id;

	CheckHeaders(fcinfo, 2);
	RefuseDataToken(fcinfo, 4);
	RmsgCheckPayloadSize(size);

	RmsgSpiConnect();
	queue = RmsgOpenQueue(queue_name, AccessShareLock);

	if (size <= (Size) rmsg_inline_payload_max)
		msg_id = RmsgInsertInlineMessage(queue.queue_id, now + delay, now,
										 PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2),
										 PG_ARGISNULL(2), payload);
	else
	{
		values[0] = Int32GetDatum(queue.queue_id);
		values[1] = TimestampTzGetDatum(now + delay);
		values[2] = TimestampTzGetDatum(now);
		values[3] = Int32GetDatum((int32) size);
		values[4] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
		isnull[4] = PG_ARGISNULL(2);
		values[5] = PointerGetDatum(payload);
		RmsgPlanExecute(&put_payload_row_plan, values, isnull, false, 1);
		msg_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &found));
	}
	RmsgSpiFinish();

	RmsgWakeQueueAtCommit(queue.queue_id);
	return msg_id;
}

static void
RefuseNullPayload(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload must not be null")));
}

/* rmsg.put(queue, payload bytea, headers, delay, data_token) */
Datum
rmsg_put(PG_FUNCTION_ARGS)
{
	RefuseNullPayload(fcinfo);
	PG_RETURN_INT64(PutMessage(fcinfo, PG_GETARG_BYTEA_PP(1)));
}

/* rmsg.put(queue, payload text, ...): text and bytea share a representation */
Datum
rmsg_put_text(PG_FUNCTION_ARGS)
{
	RefuseNullPayload(fcinfo);
	PG_RETURN_INT64(PutMessage(fcinfo, (bytea *) PG_GETARG_TEXT_PP(1)));
}

/* rmsg.put(queue, payload jsonb, ...): stored as the value's text form */
Datum
rmsg_put_jsonb(PG_FUNCTION_ARGS)
{
	Jsonb	   *value;

	RefuseNullPayload(fcinfo);
	value = PG_GETARG_JSONB_P(1);
	PG_RETURN_INT64(PutMessage(fcinfo, (bytea *) cstring_to_text(
										   JsonbToCString(NULL, &value->root, VARSIZE(value)))));
}

/*
 * rmsg.put_batch(queue, payloads bytea[], headers): one statement for the
 * whole array.  Every element is checked before anything is written.
 */
Datum
rmsg_put_batch(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *queue_name = RmsgTextArg(fcinfo, 0, "queue name");
	ArrayType  *payloads;
	Datum	   *elems;
	bool	   *elem_nulls;
	int			nelems;
	TimestampTz now = GetCurrentTimestamp();
	RmsgQueue	queue;
	Datum		values[5];
	bool		isnull[5] = {false, false, false, false, false};

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payloads must not be null")));
	payloads = PG_GETARG_ARRAYTYPE_P(1);
	if (ARR_NDIM(payloads) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("payloads must be a one-dimensional array")));
	deconstruct_array(payloads, BYTEAOID, -1, false, TYPALIGN_INT,
					  &elems, &elem_nulls, &nelems);
	for (int i = 0; i < nelems; i++)
	{
		if (elem_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("payload %d of the batch is null", i + 1)));
		RmsgCheckPayloadSize(VARSIZE_ANY_EXHDR(DatumGetPointer(elems[i])));
	}
	CheckHeaders(fcinfo, 2);

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	RmsgSpiConnect();
	/* an empty batch still names a queue, which must exist */
	queue = RmsgOpenQueue(queue_name, AccessShareLock);
	if (nelems == 0)
	{
		RmsgSpiFinish();
		return (Datum) 0;
	}

	values[0] = Int32GetDatum(queue.queue_id);
	values[1] = TimestampTzGetDatum(now);
	values[2] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	isnull[2] = PG_ARGISNULL(2);
	values[3] = PointerGetDatum(payloads);
	values[4] = Int32GetDatum(rmsg_inline_payload_max);
	RmsgPlanExecute(&put_batch_plan, values, isnull, false, 0);

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		null;
		Datum		msg_id = SPI_getbinval(SPI_tuptable->vals[i],
										   SPI_tuptable->tupdesc, 1, &null);

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &msg_id, &null);
	}
	RmsgSpiFinish();

	RmsgWakeQueueAtCommit(queue.queue_id);
	return (Datum) 0;
}
