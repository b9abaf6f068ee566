/*-------------------------------------------------------------------------
 *
 * accept.c
 *	  rmsg.accept_transfer: the receiving side of a remote queue.
 *
 * A sending server's worker calls it, over libpq, in a transaction of its
 * own on this server: "here are the messages numbered first_seq, first_seq
 * + 1, ... of channel C, for queue Q".  It puts those the channel has not
 * brought yet and moves the channel's last number to the last one, in the
 * same transaction, so the messages and the number commit together or not
 * at all; and it returns that number, which the sender takes for its
 * acknowledgement.  A sender that crashed, or lost the connection before
 * it read the answer, sends the same numbers again: the ones at or below
 * the channel's last number are skipped, so each message is put once.  The
 * commit is a normal, flushed one: the number is kept stably, and the
 * sender forgets its copies only once it has the answer (transfer.c).
 *
 * rmsg.channel_in holds one row per channel, made by its first transfer:
 * the queue it puts to, the role that sent it and the last number.  Only
 * that very role may send on the channel again, so a role that may put to
 * the queue cannot move someone else's channel past messages it has not
 * brought.  The sending role needs put
 * on the queue, as for any put.  A number beyond the next one is refused:
 * the sender numbers without gaps, so a gap means a mistake, not a lost
 * message to skip over.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "remote/remote.h"

PG_FUNCTION_INFO_V1(rmsg_accept_transfer);

/* Makes the channel's row if it has none.  $1 channel, $2 queue, $3 role, $4 last */
static RmsgPlan channel_insert_plan = {
	"INSERT INTO rmsg.channel_in (channel, queue_id, sender, last_seq, updated_at)"
	" VALUES ($1, $2, $3, $4, now()) ON CONFLICT (channel) DO NOTHING",
	4, {TEXTOID, INT4OID, OIDOID, INT8OID}
};

/* The channel's row, locked until commit.  $1 channel */
static RmsgPlan channel_lock_plan = {
	"SELECT queue_id, sender::oid AS sender, last_seq FROM rmsg.channel_in"
	" WHERE channel = $1 FOR UPDATE",
	1, {TEXTOID}
};

/* $1 channel, $2 the new last number */
static RmsgPlan channel_advance_plan = {
	"UPDATE rmsg.channel_in SET last_seq = $2, updated_at = now() WHERE channel = $1",
	2, {TEXTOID, INT8OID}
};

/* The elements of a one-dimensional array argument (NULL array: none). */
static int
ArrayArg(FunctionCallInfo fcinfo, int argno, Oid type, int16 typlen, bool byval,
		 char align, Datum **elems, bool **nulls)
{
	ArrayType  *array;
	int			n;

	if (PG_ARGISNULL(argno))
	{
		*elems = NULL;
		*nulls = NULL;
		return 0;
	}
	array = PG_GETARG_ARRAYTYPE_P(argno);
	if (ARR_NDIM(array) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("the arrays of a transfer must be one-dimensional")));
	deconstruct_array(array, type, typlen, byval, align, elems, nulls, &n);
	return n;
}

/* rmsg.accept_transfer(channel, queue, first_seq, payloads, headers) -> bigint */
Datum
rmsg_accept_transfer(PG_FUNCTION_ARGS)
{
	char	   *channel;
	char	   *queue_name;
	int64		first_seq;
	Datum	   *payloads;
	bool	   *payload_nulls;
	Datum	   *headers = NULL;
	bool	   *header_nulls = NULL;
	int			n;
	int			nheaders;
	RmsgQueue	queue;
	Datum		values[4];
	int64		last_seq;
	int64		new_last;
	Oid			sender;
	int			skip;
	TimestampTz now = GetCurrentTimestamp();
	int64		bytes = 0;
	RmsgPlacement plain = {NULL, 0};

	RmsgEnter("rmsg.accept_transfer", true);
	channel = RmsgKeyArg(fcinfo, 0, "channel");
	if (channel == NULL)
		RmsgRequireArg(fcinfo, 0, "channel");
	queue_name = RmsgTextArg(fcinfo, 1, "queue name");
	RmsgRequireArg(fcinfo, 2, "first_seq");
	first_seq = PG_GETARG_INT64(2);
	if (first_seq < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("first_seq must be at least 1, not " INT64_FORMAT, first_seq)));
	RmsgRequireArg(fcinfo, 3, "payloads");
	n = ArrayArg(fcinfo, 3, BYTEAOID, -1, false, TYPALIGN_INT, &payloads, &payload_nulls);
	nheaders = ArrayArg(fcinfo, 4, JSONBOID, -1, false, TYPALIGN_INT, &headers, &header_nulls);
	if (n > RMSG_MAX_ACCEPT)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a transfer carries at most %d messages, not %d", RMSG_MAX_ACCEPT, n)));
	if (!PG_ARGISNULL(4) && nheaders != n)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("a transfer of %d payloads has %d headers", n, nheaders)));
	for (int i = 0; i < n; i++)
	{
		if (payload_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("payload %d of the transfer is null", i + 1)));
		RmsgCheckPayloadSize(VARSIZE_ANY_EXHDR(DatumGetPointer(payloads[i])));
		if (headers != NULL && !header_nulls[i] &&
			!JB_ROOT_IS_OBJECT(DatumGetJsonbP(headers[i])))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("headers %d of the transfer must be a JSON object", i + 1)));
	}
	if (first_seq > PG_INT64_MAX - n)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("first_seq " INT64_FORMAT " is out of range", first_seq)));

	RmsgSpiConnect();
	queue = RmsgOpenQueueFor(queue_name, AccessShareLock, RMSG_PUT);

	/* the channel, locked: concurrent transfers on it wait for each other */
	values[0] = CStringGetTextDatum(channel);
	values[1] = Int32GetDatum(queue.queue_id);
	values[2] = ObjectIdGetDatum(GetUserId());
	values[3] = Int64GetDatum(first_seq - 1);
	RmsgPlanExecute(&channel_insert_plan, values, NULL, true, 0);
	RmsgPlanExecute(&channel_lock_plan, values, NULL, true, 1);
	if (SPI_processed != 1)
		elog(ERROR, "channel \"%s\" has no row", channel);
	sender = DatumGetObjectId(RmsgSpiNotNull(0, "sender"));
	last_seq = DatumGetInt64(RmsgSpiNotNull(0, "last_seq"));
	/*
	 * The very role, not one with its privileges: a channel row that
	 * another role made first (it may put to the queue, and channel names
	 * can be guessed) must not make a superuser's transfers skip numbers.
	 */
	if (sender != GetUserId())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("channel \"%s\" belongs to another role", channel),
				 errhint("A channel row made by mistake or by someone else can be deleted from rmsg.channel_in by a superuser.")));
	if (DatumGetInt32(RmsgSpiNotNull(0, "queue_id")) != queue.queue_id)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("channel \"%s\" puts to another queue than \"%s\"", channel, queue_name)));
	if (first_seq > last_seq + 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("channel \"%s\" expects message " INT64_FORMAT ", not " INT64_FORMAT,
						channel, last_seq + 1, first_seq)));

	/* the messages it has not brought yet, in their order */
	skip = (int) Min((int64) n, last_seq - first_seq + 1);
	for (int i = skip; i < n; i++)
	{
		bytea	   *data = DatumGetByteaPP(payloads[i]);
		bool		no_headers = headers == NULL || header_nulls[i];
		RmsgStoredData stored;

		(void) RmsgStoreData(queue.dedup, queue.owner, data, NULL, false, &stored);
		RmsgInsertMessageAs(RmsgNextMsgId(), queue.queue_id, now, now,
							no_headers ? (Datum) 0 : headers[i], no_headers, &stored, &plain);
		bytes += stored.size;
	}
	new_last = Max(last_seq, first_seq + n - 1);
	if (new_last > last_seq)
	{
		values[1] = Int64GetDatum(new_last);
		RmsgPlanExecute(&channel_advance_plan, values, NULL, true, 0);
		RmsgCountPuts(queue.queue_id, n - skip, bytes, false);
		RmsgWakeQueueAtCommit(queue.queue_id);
	}
	RmsgSpiFinish();
	PG_RETURN_INT64(new_last);
}
