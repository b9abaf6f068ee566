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
 * rmsg.channel_in holds one row per channel and sending role, made by
 * the channel's first transfer (number 1): the queue it puts to and the
 * last number.  A role's channels are its own, so another role that may
 * put here cannot move or block them, whatever names it uses.  The commit
 * is flushed whatever the session's synchronous_commit: the sender
 * forgets what we acknowledge.  The sending role needs put
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

/*
 * Makes the role's channel row if it has none: only for a transfer that
 * begins at number 1.  $1 channel, $2 queue, $3 role
 */
static RmsgPlan channel_insert_plan = {
	"INSERT INTO rmsg.channel_in (channel, sender, queue_id, last_seq, updated_at)"
	" VALUES ($1, $3, $2, 0, now()) ON CONFLICT (channel, sender) DO NOTHING",
	3, {TEXTOID, INT4OID, OIDOID}
};

/* The role's channel row, locked until commit.  $1 channel, $3 role */
static RmsgPlan channel_lock_plan = {
	"SELECT queue_id, last_seq FROM rmsg.channel_in"
	" WHERE channel = $1 AND sender = $3 FOR UPDATE",
	3, {TEXTOID, INT4OID, OIDOID}
};

/* $1 channel, $2 the new last number, $3 role */
static RmsgPlan channel_advance_plan = {
	"UPDATE rmsg.channel_in SET last_seq = $2, updated_at = now()"
	" WHERE channel = $1 AND sender = $3",
	3, {TEXTOID, INT8OID, OIDOID}
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
	Datum		values[3];
	int64		last_seq;
	int64		new_last;
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

	/*
	 * The role's channel, locked: concurrent transfers on it wait for each
	 * other.  A channel begins at number 1: a first transfer that begins
	 * later means this server lost what it had acknowledged (a row gone
	 * with a commit a crash took, a restore), and skipping ahead would hide
	 * the loss.
	 */
	values[0] = CStringGetTextDatum(channel);
	values[1] = Int32GetDatum(queue.queue_id);
	values[2] = ObjectIdGetDatum(GetUserId());
	if (first_seq == 1)
		RmsgPlanExecute(&channel_insert_plan, values, NULL, true, 0);
	RmsgPlanExecute(&channel_lock_plan, values, NULL, true, 1);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("channel \"%s\" is not known here, and a transfer beginning at message " INT64_FORMAT " cannot open it",
						channel, first_seq),
				 errdetail("The numbers before it were acknowledged by this server, which no longer has them.")));
	last_seq = DatumGetInt64(RmsgSpiNotNull(0, "last_seq"));
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
	/* the sender forgets these once we answer: they must outlive a crash */
	RmsgRequireStableCommit();
	if (new_last > last_seq)
	{
		Datum		advance[3] = {values[0], Int64GetDatum(new_last), values[2]};

		RmsgPlanExecute(&channel_advance_plan, advance, NULL, true, 0);
		RmsgCountPuts(queue.queue_id, n - skip, bytes, false);
		RmsgWakeQueueAtCommit(queue.queue_id);
	}
	RmsgSpiFinish();
	PG_RETURN_INT64(new_last);
}
