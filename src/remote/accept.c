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
 * Data by reference (seed 004's deduplicated logging, across servers).  A
 * sender may give a payload its key: a random number its own server drew
 * for the payload row holding the data, with key_origin saying which
 * server that is.  Random, so that no role can name data it was not sent
 * by guessing (payload_ids count up), and a copy of the sending database
 * gives its new data other keys than the original does.
 * The data is stored as a put that is going to be shared would store it
 * (a payload row, dedup/store.c), and rmsg.payload_received remembers
 * which payload row here holds it, for this sending role only.  A later
 * message may then come as its key alone, with a NULL payload: it is put
 * as a put by data token would be, a reference where the queue's dedup
 * setting allows one, else a copy read from that row here.  A key this
 * role never sent, or whose payload row has been collected since, cannot
 * be put: the transfer takes the messages before it and answers the
 * number before it, and the sender sends the rest again with their data.
 * A role finds only the keys sent under its own name, and only by knowing
 * them: the role the worker connects as carries every producer's data, and
 * whoever can log in as it must not reach that data by guessing a key.
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

#include "dedup/dedup.h"
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

/* The longest key_origin taken: the sender's is about 40 characters. */
#define RMSG_MAX_KEY_ORIGIN 100

/* The data a key names here.  $1 role, $2 origin, $3 key */
static RmsgPlan key_lookup_plan = {
	"SELECT payload_id, size FROM rmsg.payload_received"
	" WHERE sender = $1 AND origin = $2 AND key = $3",
	3, {OIDOID, TEXTOID, INT8OID}
};

/*
 * A key's data is kept here.  $1 role, $2 origin, $3 key, $4 payload row,
 * $5 size.  A key names one data for ever (the sender draws it at random),
 * so a key already known keeps its row: nothing here waits on, or
 * changes, a row the collector may be deleting.  Data this sender named
 * by another key before, and that found the same payload row (a
 * 'content' queue), gives that row its newest key only, so that keys do
 * not pile up on a row that traffic keeps alive.
 */
static RmsgPlan key_remember_plan = {
	"WITH older AS (DELETE FROM rmsg.payload_received"
	"                WHERE payload_id = $4 AND sender = $1 AND origin = $2 AND key <> $3)"
	" INSERT INTO rmsg.payload_received (sender, origin, key, payload_id, size)"
	" VALUES ($1, $2, $3, $4, $5)"
	" ON CONFLICT (sender, origin, key) DO NOTHING",
	5, {OIDOID, TEXTOID, INT8OID, INT8OID, INT4OID}
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

/*
 * Stores the data of one message that came by key alone, as a put by data
 * token would; false, with nothing written, when this role sent no such
 * key or its payload row is gone.
 */
static bool
StoreByKey(const RmsgQueue *queue, Datum origin, int64 key, RmsgStoredData *stored)
{
	Datum		values[3];
	RmsgTokenData source = {0};

	values[0] = ObjectIdGetDatum(GetUserId());
	values[1] = origin;
	values[2] = Int64GetDatum(key);
	RmsgPlanExecute(&key_lookup_plan, values, NULL, true, 1);
	if (SPI_processed == 0)
		return false;
	source.payload_id = DatumGetInt64(RmsgSpiNotNull(0, "payload_id"));
	source.size = DatumGetInt32(RmsgSpiNotNull(0, "size"));
	RmsgCheckPayloadSize(source.size);
	return RmsgStoreData(queue->dedup, queue->owner, NULL, &source, false, stored);
}

/* Remembers which payload row here holds the data the sender calls key. */
static void
RememberKey(Datum origin, int64 key, const RmsgStoredData *stored)
{
	Datum		values[5];

	values[0] = ObjectIdGetDatum(GetUserId());
	values[1] = origin;
	values[2] = Int64GetDatum(key);
	values[3] = Int64GetDatum(stored->payload_id);
	values[4] = Int32GetDatum(stored->size);
	RmsgPlanExecute(&key_remember_plan, values, NULL, true, 0);
}

/*
 * rmsg.accept_transfer(channel, queue, first_seq, payloads, headers,
 *                      payload_keys, key_origin) -> bigint
 */
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
	Datum	   *keys = NULL;
	bool	   *key_nulls = NULL;
	Datum		origin = (Datum) 0;
	int			n;
	int			nheaders;
	int			nkeys;
	int			taken;
	RmsgQueue	queue;
	Datum		values[3];
	int64		last_seq;
	int64		new_last;
	int			skip;
	TimestampTz now = GetCurrentTimestamp();
	int64		bytes_written = 0;
	int64		bytes_referenced = 0;
	int			n_written = 0;
	int			n_referenced = 0;
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
	nkeys = ArrayArg(fcinfo, 5, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					 &keys, &key_nulls);
	if (!PG_ARGISNULL(6))
	{
		text	   *origin_text = PG_GETARG_TEXT_PP(6);
		int			length = VARSIZE_ANY_EXHDR(origin_text);

		if (length < 1 || length > RMSG_MAX_KEY_ORIGIN)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("key_origin must be 1 to %d bytes long, not %d",
							RMSG_MAX_KEY_ORIGIN, length)));
		origin = PointerGetDatum(origin_text);
	}
	if (n > RMSG_MAX_ACCEPT)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a transfer carries at most %d messages, not %d", RMSG_MAX_ACCEPT, n)));
	if (!PG_ARGISNULL(4) && nheaders != n)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("a transfer of %d payloads has %d headers", n, nheaders)));
	if (!PG_ARGISNULL(5) && nkeys != n)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("a transfer of %d payloads has %d payload keys", n, nkeys)));
	for (int i = 0; i < n; i++)
	{
		bool		keyed = keys != NULL && !key_nulls[i];

		if (keyed && origin == (Datum) 0)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("payload keys need a key_origin")));
		if (keyed && DatumGetInt64(keys[i]) <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("payload key %d must be positive, not " INT64_FORMAT,
							i + 1, DatumGetInt64(keys[i]))));
		if (payload_nulls[i] && !keyed)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("payload %d of the transfer is null and has no key", i + 1)));
		if (!payload_nulls[i])
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

	/*
	 * The messages it has not brought yet, in their order, up to the first
	 * whose key names nothing here.
	 */
	skip = (int) Min((int64) n, last_seq - first_seq + 1);
	taken = n;
	for (int i = skip; i < n; i++)
	{
		bool		no_headers = headers == NULL || header_nulls[i];
		bool		keyed = keys != NULL && !key_nulls[i];
		RmsgStoredData stored;

		if (payload_nulls[i])
		{
			if (!StoreByKey(&queue, origin, DatumGetInt64(keys[i]), &stored))
			{
				taken = i;
				break;
			}
		}
		else
		{
			/* data with a key is going to be named again: a payload row */
			(void) RmsgStoreData(queue.dedup, queue.owner, DatumGetByteaPP(payloads[i]),
								 NULL, keyed, &stored);
			if (keyed && stored.payload_id != 0)
				RememberKey(origin, DatumGetInt64(keys[i]), &stored);
		}
		RmsgInsertMessageAs(RmsgNextMsgId(), queue.queue_id, now, now,
							no_headers ? (Datum) 0 : headers[i], no_headers, &stored, &plain);
		if (stored.referenced)
		{
			n_referenced++;
			bytes_referenced += stored.size;
		}
		else
		{
			n_written++;
			bytes_written += stored.size;
		}
	}
	new_last = Max(last_seq, first_seq + taken - 1);
	/* the sender forgets these once we answer: they must outlive a crash */
	RmsgRequireStableCommit();
	if (new_last > last_seq)
	{
		Datum		advance[3] = {values[0], Int64GetDatum(new_last), values[2]};

		RmsgPlanExecute(&channel_advance_plan, advance, NULL, true, 0);
		RmsgCountPuts(queue.queue_id, n_written, bytes_written, false);
		RmsgCountPuts(queue.queue_id, n_referenced, bytes_referenced, true);
		RmsgWakeQueueAtCommit(queue.queue_id);
	}
	RmsgSpiFinish();
	PG_RETURN_INT64(new_last);
}
