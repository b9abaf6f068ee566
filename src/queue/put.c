/*-------------------------------------------------------------------------
 *
 * put.c
 *	  rmsg.put and rmsg.put_batch: adding messages to a queue.
 *
 * dedup/store.c decides where the data goes: a reference to a payload row
 * already logged (named by a data token, or found by content), inline in
 * the message row (up to rmsg.inline_payload_max, 2000 bytes, just below
 * the size at which PostgreSQL would toast the row), or a payload row of
 * its own.  The message row is inserted directly (insert.c).  Each put
 * hands the session a data token for its data (dedup/tokens.c).
 *
 * A put holds its queue's name lock in AccessShareLock until commit
 * (catalog.c explains why) and asks for waiting consumers to be woken
 * when it commits (long_poll.c).  The role putting must hold the queue's
 * put privilege (core/privileges.c).
 *
 * A put with both a token and a payload stores exactly the payload given:
 * the reference is used only when the token's data is the same bytes (its
 * size and hash, or the bytes themselves where the hash is not known);
 * different bytes are refused, never silently replaced by the token's.
 * rmsg.put_with_token hands back the new data's token in the same
 * statement, for clients behind a pooler that cannot ask
 * rmsg.last_data_token() in the same transaction.
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

#include "queue/queue.h"

PG_FUNCTION_INFO_V1(rmsg_put);
PG_FUNCTION_INFO_V1(rmsg_put_text);
PG_FUNCTION_INFO_V1(rmsg_put_jsonb);
PG_FUNCTION_INFO_V1(rmsg_put_batch);
PG_FUNCTION_INFO_V1(rmsg_put_with_token);

/* The data a token names, read back, or NULL when it is gone.  Inside SPI. */
static bytea *
TokenData(const RmsgTokenData *source)
{
	bytea	   *data = NULL;

	if (source->payload_id != 0)
		data = RmsgReadPayload(source->payload_id);
	if (data == NULL && source->msg_id != 0)
		data = RmsgReadInlineData(source->msg_id);
	return data;
}

/*
 * A put gave both a payload and a token: the reference may stand for the
 * payload only if the token's data is the same bytes.  Sizes and, where
 * known, hashes tell most differences apart at no cost; otherwise the
 * token's data is read and compared.  False when that data is gone (the
 * put then writes the payload).  Inside SPI.
 */
static bool
CheckTokenMatches(int64 token, const RmsgTokenData *source, bytea *payload)
{
	Size		size = VARSIZE_ANY_EXHDR(payload);
	bool		same;

	if (size != (Size) source->size)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payload does not match the data of token " INT64_FORMAT, token),
				 errdetail("The payload has %zu bytes, the token's data %d.",
						   size, source->size)));
	if (source->hash_known)
		same = RmsgContentHash(payload) == source->hash;
	else
	{
		bytea	   *stored = TokenData(source);

		if (stored == NULL)
			return false;
		same = memcmp(VARDATA_ANY(stored), VARDATA_ANY(payload), size) == 0;
	}
	if (!same)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payload does not match the data of token " INT64_FORMAT, token),
				 errdetail("The payload has the same size as the token's data, but other bytes."),
				 errhint("Pass the token alone to put the token's data, or the payload alone to put new data.")));
	return true;
}

/*
 * What a put's data_token names, when it is given (argument argno).  An
 * unknown token is an error only when there is no payload to fall back on;
 * a payload that is not the token's data is an error.  Inside SPI.
 */
static bool
TokenSource(FunctionCallInfo fcinfo, int argno, bytea *payload,
			int64 *token, RmsgTokenData *source)
{
	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
	{
		if (payload == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("payload must not be null"),
					 errhint("Pass the payload, or a data_token naming data this session put or got.")));
		return false;
	}
	*token = PG_GETARG_INT64(argno);
	if (!RmsgLookupToken(*token, source))
	{
		if (payload != NULL)
			return false;		/* a token we cannot use: write the payload given */
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("data token " INT64_FORMAT " is not known to this session", *token),
				 errdetail("A data token is valid only in the session and for the role that put or got its data, among the last %d tokens it was handed.",
						   RMSG_SESSION_TOKENS)));
	}
	if (payload != NULL)
		return CheckTokenMatches(*token, source, payload);
	return true;
}

/*
 * The common part of the put overloads: arguments 0 queue, 2 headers,
 * 3 delay, 4 data_token, 5 dedup_id, 6 group_id (groups.c), 7 priority
 * (priorities.c); the payload
 * comes converted to bytea, or NULL.  Returns the msg_id, and the new data's token in *new_token (0
 * for a repeat of a put with the same dedup_id, which stores nothing and
 * returns the first put's msg_id: put_keys.c).
 */
static int64
PutMessage(FunctionCallInfo fcinfo, bytea *payload, int64 *new_token)
{
	char	   *queue_name = RmsgTextArg(fcinfo, 0, "queue name");
	int64		delay = RmsgIntervalArg(fcinfo, 3, "delay", 0, true);
	TimestampTz now = GetCurrentTimestamp();
	RmsgQueue	queue;
	RmsgTokenData source;
	int64		token = 0;
	bool		by_token;
	int64		source_msg_id;
	int64		source_payload_id;
	RmsgStoredData stored;
	int64		msg_id = 0;
	char	   *dedup_id = RmsgKeyArg(fcinfo, 5, "dedup_id");
	RmsgPlacement place = RmsgPlacementArgs(fcinfo, 6, 7);
	TimestampTz visible_at = RmsgTimeAfter(now, delay);

	RmsgCheckHeaders(fcinfo, 2);
	if (payload != NULL)
		RmsgCheckPayloadSize(VARSIZE_ANY_EXHDR(payload));

	RmsgSpiConnect();
	queue = RmsgOpenQueueFor(queue_name, AccessShareLock, RMSG_PUT);
	RmsgCheckPlacement(&queue, queue_name, &place);
	by_token = TokenSource(fcinfo, 4, payload, &token, &source);
	/*
	 * The group's lock first, before a msg_id is drawn: the group's order
	 * is that of its msg_ids, so a put that waits for another must draw
	 * its msg_id after that one (groups.c).  Then the key's lock
	 * (put_keys.c): always in this order, so puts never wait in a circle.
	 */
	if (place.group_id != NULL)
		visible_at = RmsgGroupVisibleAt(queue.queue_id, place.group_id, visible_at);
	if (dedup_id != NULL)
	{
		int64		first;

		msg_id = RmsgNextMsgId();
		first = RmsgClaimPutKey(&queue, dedup_id, msg_id, now);
		if (first != msg_id)
		{
			/* a repeat: nothing stored, so no data to name */
			RmsgSpiFinish();
			RmsgClearLastToken();
			*new_token = 0;
			return first;
		}
	}
	if (payload == NULL)
		RmsgCheckPayloadSize((Size) source.size);
	source_msg_id = by_token ? source.msg_id : 0;
	source_payload_id = by_token ? source.payload_id : 0;

	if (!RmsgStoreData(queue.dedup, queue.owner, payload, by_token ? &source : NULL, false, &stored))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the data of token " INT64_FORMAT " is no longer available", token),
				 errdetail("The payload row and the message that held it are gone: acknowledged and collected, or rolled back."),
				 errhint("Pass the payload as well: it is written when the reference cannot be used.")));
	if (by_token && source.payload_id != source_payload_id)
		RmsgTokenPromoted(token, source.payload_id);

	if (msg_id == 0)
		msg_id = RmsgNextMsgId();
	RmsgInsertMessageAs(msg_id, queue.queue_id, visible_at, now,
						PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2),
						PG_ARGISNULL(2), &stored, &place);
	RmsgSpiFinish();

	RmsgCountPut(queue.queue_id, stored.size, stored.referenced);
	*new_token = RmsgIssuePutToken(msg_id, &stored,
								   stored.payload_id != source_payload_id ? source_msg_id : 0,
								   payload, by_token ? &source : NULL);
	RmsgWakeQueueAtCommit(queue.queue_id);
	return msg_id;
}

/*
 * rmsg.put(queue, payload bytea, headers, delay, data_token, dedup_id,
 *			group_id, priority)
 */
Datum
rmsg_put(PG_FUNCTION_ARGS)
{
	int64		token;

	RmsgEnter("rmsg.put", true);
	PG_RETURN_INT64(PutMessage(fcinfo, PG_ARGISNULL(1) ? NULL : PG_GETARG_BYTEA_PP(1), &token));
}

/* rmsg.put(queue, payload text, ...): text and bytea share a representation */
Datum
rmsg_put_text(PG_FUNCTION_ARGS)
{
	int64		token;

	RmsgEnter("rmsg.put", true);
	PG_RETURN_INT64(PutMessage(fcinfo, PG_ARGISNULL(1) ? NULL : (bytea *) PG_GETARG_TEXT_PP(1),
							   &token));
}

/* rmsg.put(queue, payload jsonb, ...): stored as the value's text form */
Datum
rmsg_put_jsonb(PG_FUNCTION_ARGS)
{
	Jsonb	   *value;
	int64		token;

	RmsgEnter("rmsg.put", true);
	if (PG_ARGISNULL(1))
		PG_RETURN_INT64(PutMessage(fcinfo, NULL, &token));
	value = PG_GETARG_JSONB_P(1);
	PG_RETURN_INT64(PutMessage(fcinfo, (bytea *) cstring_to_text(
										   JsonbToCString(NULL, &value->root, VARSIZE(value))),
							   &token));
}

/*
 * rmsg.put_with_token(queue, payload bytea, headers, delay, data_token,
 *					   dedup_id, group_id, priority) -> (msg_id, data_token):
 * a put that hands back its data's token at once.
 */
Datum
rmsg_put_with_token(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		result[2];
	bool		nulls[2] = {false, false};
	int64		token;

	RmsgEnter("rmsg.put_with_token", true);
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	result[0] = Int64GetDatum(PutMessage(fcinfo, PG_ARGISNULL(1) ? NULL : PG_GETARG_BYTEA_PP(1),
										 &token));
	result[1] = Int64GetDatum(token);
	nulls[1] = token == 0;		/* a repeat by dedup_id stored no data */
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), result, nulls)));
}

/*
 * Where the messages of a batch after its first go: ready now, or, in a
 * group, waiting for their turn behind the first (groups.c).
 */
static TimestampTz
BatchRestVisibleAt(const RmsgPlacement *place, TimestampTz now)
{
	return place->group_id != NULL ? DT_NOEND : now;
}

/*
 * The batch one message at a time, for queues that look for equal content:
 * each element may find its data logged already, even by an earlier
 * element of the same batch.
 */
static void
PutEachOfBatch(const RmsgQueue *queue, Datum *elems, int nelems,
			   TimestampTz now, Datum headers, bool headers_null,
			   const RmsgPlacement *place, TimestampTz first_visible_at,
			   ReturnSetInfo *rsinfo)
{
	for (int i = 0; i < nelems; i++)
	{
		RmsgStoredData stored;
		Datum		msg_id;
		bool		null = false;

		(void) RmsgStoreData(queue->dedup, queue->owner, DatumGetByteaPP(elems[i]), NULL, false, &stored);
		msg_id = Int64GetDatum(RmsgNextMsgId());
		RmsgInsertMessageAs(DatumGetInt64(msg_id), queue->queue_id,
							i == 0 ? first_visible_at : BatchRestVisibleAt(place, now),
							now, headers, headers_null, &stored, place);
		RmsgCountPut(queue->queue_id, stored.size, stored.referenced);
		if (i == nelems - 1)
			(void) RmsgIssuePutToken(DatumGetInt64(msg_id), &stored, 0,
									 DatumGetByteaPP(elems[i]), NULL);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &msg_id, &null);
	}
}

/*
 * The batch in one multi-row insert; every element's data is written, in
 * the message row or, above rmsg.inline_payload_max, in a payload row.
 */
static void
PutBatchRows(const RmsgQueue *queue, Datum *elems, int nelems,
			 TimestampTz now, Datum headers, bool headers_null,
			 const RmsgPlacement *place, TimestampTz first_visible_at,
			 ReturnSetInfo *rsinfo)
{
	RmsgStoredData *stored = palloc0(sizeof(RmsgStoredData) * nelems);
	int64	   *msg_ids = palloc0(sizeof(int64) * nelems);
	int64		bytes = 0;

	for (int i = 0; i < nelems; i++)
	{
		bytea	   *data = DatumGetByteaPP(elems[i]);

		stored[i].size = VARSIZE_ANY_EXHDR(data);
		if (stored[i].size > rmsg_inline_payload_max)
			stored[i].payload_id = RmsgWritePayload(data, false, queue->owner);
		else
			stored[i].inline_data = data;
	}
	if (first_visible_at == BatchRestVisibleAt(place, now))
		RmsgInsertMessages(queue->queue_id, first_visible_at, now, headers, headers_null,
						   nelems, stored, place, msg_ids);
	else
	{
		/* the group's head first, then the rest, which wait their turn */
		RmsgInsertMessages(queue->queue_id, first_visible_at, now, headers, headers_null,
						   1, stored, place, msg_ids);
		RmsgInsertMessages(queue->queue_id, BatchRestVisibleAt(place, now), now,
						   headers, headers_null, nelems - 1, stored + 1, place,
						   msg_ids + 1);
	}

	for (int i = 0; i < nelems; i++)
	{
		Datum		msg_id = Int64GetDatum(msg_ids[i]);
		bool		null = false;

		bytes += stored[i].size;
		if (i == nelems - 1)
			(void) RmsgIssuePutToken(msg_ids[i], &stored[i], 0,
									 DatumGetByteaPP(elems[i]), NULL);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &msg_id, &null);
	}
	RmsgCountPuts(queue->queue_id, nelems, bytes, false);
}

/*
 * rmsg.put_batch(queue, payloads bytea[], headers, group_id, priority): every element
 * is checked before anything is written.  In a group, the elements are
 * its messages in their order.  The session's last data token names
 * the last element's data.
 */
Datum
rmsg_put_batch(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *queue_name;
	ArrayType  *payloads;
	Datum	   *elems;
	bool	   *elem_nulls;
	int			nelems;
	TimestampTz now = GetCurrentTimestamp();
	RmsgQueue	queue;
	Datum		headers;
	bool		headers_null = PG_ARGISNULL(2);
	RmsgPlacement place;
	TimestampTz first_visible_at;

	RmsgEnter("rmsg.put_batch", true);
	queue_name = RmsgTextArg(fcinfo, 0, "queue name");
	RmsgRequireArg(fcinfo, 1, "payloads");
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
	RmsgCheckHeaders(fcinfo, 2);
	headers = headers_null ? (Datum) 0 : PG_GETARG_DATUM(2);
	place = RmsgPlacementArgs(fcinfo, 3, 4);

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	RmsgSpiConnect();
	/* an empty batch still names a queue, which must exist */
	queue = RmsgOpenQueueFor(queue_name, AccessShareLock, RMSG_PUT);
	RmsgCheckPlacement(&queue, queue_name, &place);
	if (nelems == 0)
	{
		RmsgSpiFinish();
		return (Datum) 0;
	}

	first_visible_at = place.group_id != NULL ?
		RmsgGroupVisibleAt(queue.queue_id, place.group_id, now) : now;
	if (queue.dedup == RMSG_DEDUP_CONTENT)
		PutEachOfBatch(&queue, elems, nelems, now, headers, headers_null,
					   &place, first_visible_at, rsinfo);
	else
		PutBatchRows(&queue, elems, nelems, now, headers, headers_null,
					 &place, first_visible_at, rsinfo);
	RmsgSpiFinish();

	RmsgWakeQueueAtCommit(queue.queue_id);
	return (Datum) 0;
}
