/*-------------------------------------------------------------------------
 *
 * fanout.c
 *	  rmsg.forward and rmsg.put_many: the same data to more queues, logged
 *	  once, without the application handling data tokens.
 *
 * forward puts a copy of an existing message (its data and headers) to a
 * queue; the copy references the original's payload row.  It is the usual
 * relay (get a message, put its data on to another queue by the data token
 * the get returned) in one call.  put_many publishes one payload to
 * several queues: the data is written once and every other message
 * references it.  Queues with dedup = 'none' get their own copy of the
 * data either way (dedup/store.c).
 *
 * Forwarding reads the source message's data, so the role must hold get on
 * the source's queue (a message of a queue it may not get from is, for it,
 * no message at all), and put on the target; put_many needs put on every
 * queue it names.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "queue/queue.h"

PG_FUNCTION_INFO_V1(rmsg_forward);
PG_FUNCTION_INFO_V1(rmsg_put_many);

/* The message to forward, live or dead.  $1 msg_id */
static RmsgPlan source_message_plan = {
	"SELECT payload_id, inline_data, payload_size, headers, queue_id"
	"  FROM rmsg.message WHERE msg_id = $1"
	" UNION ALL"
	" SELECT payload_id, inline_data, payload_size, headers, queue_id"
	"  FROM rmsg.dead_message WHERE msg_id = $1",
	1, {INT8OID}
};

/*
 * The error for a source message that does not exist, or that the role may
 * not see: the two must look the same.
 */
static void
ReportNoSuchMessage(int64 msg_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_NO_DATA_FOUND),
			 errmsg("message " INT64_FORMAT " does not exist", msg_id)));
}

/*
 * Puts one copy, ready now or, in a group, when its turn comes (groups.c:
 * the group's lock before the msg_id is drawn).  Inside SPI; returns the
 * msg_id.
 */
static int64
PutCopy(const RmsgQueue *queue, const RmsgPlacement *place, TimestampTz now,
		Datum headers, bool headers_null, const RmsgStoredData *stored)
{
	TimestampTz visible_at = now;
	int64		msg_id;

	if (place->group_id != NULL)
		visible_at = RmsgGroupVisibleAt(queue->queue_id, place->group_id, now);
	msg_id = RmsgNextMsgId();
	RmsgInsertMessageAs(msg_id, queue->queue_id, visible_at, now, headers, headers_null,
						stored, place);
	return msg_id;
}

/*
 * rmsg.forward(msg_id, queue, group_id, priority): puts the data and
 * headers of message msg_id (live, in flight or dead) to queue, in
 * group_id when given, with that priority; returns the new msg_id.
 */
Datum
rmsg_forward(PG_FUNCTION_ARGS)
{
	char	   *queue_name;
	int64		source_msg_id;
	Datum		arg;
	RmsgQueue	queue;
	int32		source_queue_id;
	Datum		payload_id;
	Datum		inline_data;
	bool		no_payload_row;
	bool		no_inline_data;
	bool		headers_null;
	Datum		headers;
	bytea	   *data = NULL;
	RmsgTokenData source;
	RmsgStoredData stored;
	TimestampTz now = GetCurrentTimestamp();
	int64		msg_id;
	AclMode		source_rights;
	RmsgPlacement place;

	RmsgEnter("rmsg.forward", true);
	RmsgRequireArg(fcinfo, 0, "msg_id");
	source_msg_id = PG_GETARG_INT64(0);
	queue_name = RmsgTextArg(fcinfo, 1, "queue name");
	place = RmsgPlacementArgs(fcinfo, 2, 3);

	RmsgSpiConnect();
	queue = RmsgOpenQueueFor(queue_name, AccessShareLock, RMSG_PUT);
	RmsgCheckPlacement(&queue, queue_name, &place);
	arg = Int64GetDatum(source_msg_id);
	RmsgPlanExecute(&source_message_plan, &arg, NULL, false, 1);
	if (SPI_processed == 0)
		ReportNoSuchMessage(source_msg_id);
	/* read the whole row now: the rights check may run a statement */
	source_queue_id = DatumGetInt32(RmsgSpiNotNull(0, "queue_id"));
	payload_id = RmsgSpiValue(0, "payload_id", &no_payload_row);
	inline_data = RmsgSpiValue(0, "inline_data", &no_inline_data);
	source.size = DatumGetInt32(RmsgSpiNotNull(0, "payload_size"));
	headers = RmsgSpiValue(0, "headers", &headers_null);
	if (!RmsgObjectRights(RMSG_QUEUE, source_queue_id, NULL, GetUserId(),
						  &source_rights, NULL) ||
		(source_rights & RMSG_GET) == 0)
		ReportNoSuchMessage(source_msg_id);

	if (no_payload_row)
	{
		data = DatumGetByteaPP(inline_data);
		source.msg_id = source_msg_id;
		/* a payload row this session made of it when it first shared it */
		source.payload_id = RmsgPromotedPayloadOf(source_msg_id);
	}
	else
	{
		source.payload_id = DatumGetInt64(payload_id);
		source.msg_id = 0;
	}

	/*
	 * The source exists in our snapshot, so its payload row can be gone
	 * only if the source was acked and collected since.
	 */
	if (!RmsgStoreData(queue.dedup, queue.owner, data, &source, false, &stored))
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("message " INT64_FORMAT " does not exist any more", source_msg_id)));

	msg_id = PutCopy(&queue, &place, now, headers, headers_null, &stored);
	/* before SPI_finish: data may be in SPI's memory */
	(void) RmsgIssuePutToken(msg_id, &stored, no_payload_row ? source_msg_id : 0,
							 data, NULL);
	RmsgSpiFinish();

	RmsgCountPut(queue.queue_id, stored.size, stored.referenced);
	RmsgWakeQueueAtCommit(queue.queue_id);
	PG_RETURN_INT64(msg_id);
}

/* The queue names of put_many, checked: one dimension, no NULLs. */
static char **
QueueNames(FunctionCallInfo fcinfo, int argno, int *count)
{
	ArrayType  *array;
	Datum	   *elems;
	bool	   *nulls;
	char	  **names;

	RmsgRequireArg(fcinfo, argno, "queues");
	array = PG_GETARG_ARRAYTYPE_P(argno);
	if (ARR_NDIM(array) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("queues must be a one-dimensional array")));
	deconstruct_array(array, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, count);
	names = palloc(sizeof(char *) * Max(*count, 1));
	for (int i = 0; i < *count; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("queue name %d of the array is null", i + 1)));
		names[i] = TextDatumGetCString(elems[i]);
		RmsgCheckName(names[i], "queue");
	}
	return names;
}

/*
 * rmsg.put_many(queues text[], payload bytea, headers): one message per
 * queue, in array order, all with the same data, written once; returns the
 * msg_ids in array order.  Every queue is checked before anything is
 * written.  The session's last data token names the data.
 */
Datum
rmsg_put_many(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			nqueues;
	char	  **names;
	bytea	   *payload;
	bool		headers_null = PG_ARGISNULL(2);
	Datum		headers;
	TimestampTz now = GetCurrentTimestamp();
	RmsgQueue  *queues;
	RmsgQueue  *lead = NULL;
	int			nsharing = 0;
	RmsgStoredData shared = {0};
	bool		have_shared = false;
	RmsgStoredData first = {0};
	int64		first_msg_id = 0;
	RmsgPlacement place;

	RmsgEnter("rmsg.put_many", true);
	names = QueueNames(fcinfo, 0, &nqueues);
	payload = RmsgPayloadArg(fcinfo, 1);
	RmsgCheckHeaders(fcinfo, 2);
	place = RmsgPlacementArgs(fcinfo, 3, 4);
	headers = headers_null ? (Datum) 0 : PG_GETARG_DATUM(2);

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	RmsgSpiConnect();
	queues = palloc(sizeof(RmsgQueue) * Max(nqueues, 1));
	for (int i = 0; i < nqueues; i++)
	{
		queues[i] = RmsgOpenQueueFor(names[i], AccessShareLock, RMSG_PUT);
		RmsgCheckPlacement(&queues[i], names[i], &place);
		if (queues[i].dedup != RMSG_DEDUP_NONE)
		{
			/* a content queue leads: it finds equal data and writes findably */
			if (nsharing++ == 0 || queues[i].dedup == RMSG_DEDUP_CONTENT)
				lead = &queues[i];
		}
	}

	/* the data once, for every queue that may reference it */
	if (lead != NULL)
	{
		(void) RmsgStoreData(lead->dedup, lead->owner, payload, NULL, nsharing > 1, &shared);
		have_shared = shared.payload_id != 0;
	}

	for (int i = 0; i < nqueues; i++)
	{
		RmsgStoredData stored;
		Datum		msg_id;
		bool		null = false;

		if (queues[i].dedup != RMSG_DEDUP_NONE && have_shared)
		{
			/* the first message owns what the lead wrote; the rest refer */
			stored = shared;
			shared.referenced = true;
		}
		else
			(void) RmsgStoreData(queues[i].dedup, queues[i].owner, payload, NULL, false, &stored);
		msg_id = Int64GetDatum(PutCopy(&queues[i], &place, now, headers, headers_null,
									   &stored));
		if (i == 0)
		{
			first = stored;
			first_msg_id = DatumGetInt64(msg_id);
		}
		RmsgCountPut(queues[i].queue_id, stored.size, stored.referenced);
		RmsgWakeQueueAtCommit(queues[i].queue_id);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &msg_id, &null);
	}
	RmsgSpiFinish();

	if (nqueues > 0)
		(void) RmsgIssuePutToken(first_msg_id, have_shared ? &shared : &first, 0,
								 payload, NULL);
	return (Datum) 0;
}
