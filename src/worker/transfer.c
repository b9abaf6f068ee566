/*-------------------------------------------------------------------------
 *
 * transfer.c
 *	  Worker 0 moves the messages of remote queues (remote/) to the queues
 *	  of the foreign servers they name: exactly once, in put order.
 *
 * One round of a remote queue is three steps, each its own transaction:
 *
 *  1. Numbering, here.  When nothing is in transit, up to
 *     RMSG_TRANSFER_BATCH ready messages of the queue leave rmsg.message
 *     for rmsg.transit, numbered from the queue's next_seq in the order
 *     they became ready, with their data (inline data moves, a payload
 *     row stays referenced).  This commit is flushed before
 *     anything is sent: once a number has left for the other server it
 *     must stand for the same message after any crash here, or the
 *     receiver, skipping numbers it holds, would skip a message it never
 *     had.  That is the one force per batch the transfer makes.
 *  2. Sending, there: rmsg.accept_transfer(channel, queue, first_seq,
 *     payloads, headers) in a transaction of the receiver (remote/accept.c)
 *     puts the messages it has not had yet and keeps the channel's last
 *     number with them; it answers that number.
 *  3. Forgetting, here: the transit rows up to that number go, and
 *     acked_seq moves there.  This commit need not be flushed: lost in a
 *     crash, it only makes the next round send the same numbers again,
 *     which the receiver skips.
 *
 * Data the receiver already holds goes as its key alone (remote/README.md,
 * Data by reference): a transit row keeps a payload row referenced, a
 * shared one is sent with its key, and once the receiver has it (earlier
 * in the batch, or acknowledged before: rmsg.payload_sent) the key goes
 * without the data.  A receiver that no longer holds it answers short of
 * the batch; step 3 then forgets that it held the rest's payload rows, and
 * the next round sends them with data.
 *
 * A crash of either server, or a lost connection, between any two steps
 * leaves the numbered messages in transit, and the next round sends them
 * again; so every message arrives once, and in order, since numbering
 * waits until the transit rows are gone.  An error (the other server down,
 * a refusal there) is kept in the queue's row (rmsg.channels.last_error),
 * the connection is dropped, and the queue is tried again a second later.
 * A paused queue is left alone.  Only worker 0 transfers, so one queue's
 * rounds never overlap.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "remote/remote.h"
#include "worker/worker.h"

/* The memory of one round, emptied at the start of the next. */
static MemoryContext transfer_context = NULL;

/*
 * A queue whose round failed waits before the next try: a second, twice
 * as long after each further failure, at most a minute; so a peer that is
 * down, or a message it refuses, costs the other queues little.
 */
#define RMSG_TRANSFER_RETRY_USECS (1 * USECS_PER_SEC)
#define RMSG_TRANSFER_MAX_RETRY_USECS (60 * USECS_PER_SEC)

/* How long the other server may take to answer a transfer. */
#define RMSG_TRANSFER_TIMEOUT_MS 60000

/*
 * The most bytes of data and headers one batch carries (always at least
 * one message): the batch goes as text, two characters a data byte, and a
 * text value or array stops at 1 GB.  Headers count too: they have no
 * limit of their own, and a batch of messages with small data but large
 * headers made arrays too large to send, every round, for ever.
 */
#define RMSG_TRANSFER_MAX_BYTES (INT64CONST(64) * 1024 * 1024)

/* Every remote queue, with the role whose user mapping the worker uses. */
static RmsgPlan load_plan = {
	"SELECT r.queue_id, q.name, r.server, r.remote_queue, r.channel, q.owner::oid AS owner"
	"  FROM rmsg.remote_queue r JOIN rmsg.queue q USING (queue_id)"
	" ORDER BY r.queue_id",
	0, {InvalidOid}
};

/*
 * Step 1.  $1 queue, $2 the most to number, $3 now, $4 the most bytes,
 * ($5, $6) where the queue's ready hint says its ready messages start.
 * Only when nothing is in transit (next_seq - 1 = acked_seq).  Remote
 * queues hold only ungrouped messages of priority 0 (queue/priorities.c),
 * so the ready index gives them in order.  The batch is the unbroken front
 * of that order: a message another transaction has locked (a purge or an
 * ack in progress) ends it, since numbering the ones after it first would
 * send them before it, should that transaction roll back.  The rows are
 * found by msg_id with = ANY: a join planned while the queue was empty
 * read the whole table for each message of a backlog.  With nothing
 * ready it writes nothing, so an idle queue's passes cost no commit to
 * flush.  Only worker 0 numbers, so the queue's row needs no lock.  A
 * payload row other messages also reference is shared: it gets a random
 * key (rmsg.payload_key), unless it has one, to be sent under.
 *
 * The messages it moves leave their index entries behind until VACUUM
 * removes them, which it may not while a transaction holds the horizon.
 * From the front of the lane, every numbering (and every idle pass) read
 * them all again: 49,529 entries to move 3,000 messages (TAP 031).  So it
 * starts at the ready hint, which RmsgReadyFront first moves over the
 * entries whose messages are gone, as a get does (queue/ready_scan.c):
 * 6,059.
 */
static RmsgPlan number_plan = {
	"WITH r AS (SELECT next_seq FROM rmsg.remote_queue"
	"            WHERE queue_id = $1 AND next_seq - 1 = acked_seq),"
	" candidates AS (SELECT m.msg_id, row_number() OVER w AS rn,"
	"                       sum(m.payload_size::bigint"
	"                           + coalesce(octet_length(m.headers::text), 0)) OVER w AS bytes"
	"                  FROM rmsg.message m"
	"                 WHERE m.queue_id = $1 AND m.priority = 0 AND m.visible_at <= $3"
	"                   AND (m.visible_at, m.msg_id) >= ($5, $6)"
	"                   AND NOT EXISTS (SELECT FROM rmsg.lease l"
	"                                    WHERE l.msg_id = m.msg_id AND l.lease_until > $3)"
	"                   AND EXISTS (SELECT FROM r)"
	"                WINDOW w AS (ORDER BY m.visible_at, m.msg_id)"
	"                 ORDER BY m.visible_at, m.msg_id LIMIT $2),"
	" within AS (SELECT c.msg_id, c.rn FROM candidates c WHERE c.rn = 1 OR c.bytes <= $4),"
	" locked AS (SELECT m.msg_id FROM rmsg.message m"
	"             WHERE m.msg_id = ANY (ARRAY(SELECT w.msg_id FROM within w))"
	"             FOR UPDATE OF m SKIP LOCKED),"
	" run AS (SELECT w.msg_id FROM within w"
	"          WHERE w.rn < coalesce((SELECT min(w2.rn) FROM within w2"
	"                                  WHERE w2.msg_id NOT IN (SELECT msg_id FROM locked)),"
	"                                $2 + 1)),"
	" unleased AS (DELETE FROM rmsg.lease l WHERE l.msg_id = ANY (ARRAY(SELECT msg_id FROM run))),"
	" moved AS (DELETE FROM rmsg.message m WHERE m.msg_id = ANY (ARRAY(SELECT msg_id FROM run))"
	"           RETURNING m.msg_id, m.visible_at, m.enqueued_at, m.headers, m.inline_data,"
	"                     m.payload_id, m.payload_size),"
	" marked AS (SELECT mv.*,"
	"                   mv.payload_id IS NOT NULL"
	"                   AND mv.payload_size >= " CppAsString2(RMSG_MIN_SHARED_SIZE)
	"                   AND EXISTS (SELECT FROM rmsg.message o"
	"                                WHERE o.payload_id = mv.payload_id"
	"                                  AND o.msg_id <> mv.msg_id) AS shared"
	"              FROM moved mv),"
	" keyed AS (INSERT INTO rmsg.payload_key (payload_id, key)"
	"            SELECT d.payload_id,"
	"                   greatest(1, ('x' || substr(md5(gen_random_uuid()::text), 1, 16))"
	"                                 ::bit(64)::bigint & 9223372036854775807)"
	"              FROM (SELECT DISTINCT mk.payload_id FROM marked mk WHERE mk.shared) d"
	"            ON CONFLICT (payload_id) DO NOTHING),"
	" numbered AS (INSERT INTO rmsg.transit (queue_id, seq, msg_id, enqueued_at, headers, data,"
	"                                        payload_id, shared)"
	"   SELECT $1, (SELECT next_seq FROM r)"
	"              + row_number() OVER (ORDER BY mk.visible_at, mk.msg_id) - 1,"
	"          mk.msg_id, mk.enqueued_at, mk.headers, mk.inline_data, mk.payload_id, mk.shared"
	"     FROM marked mk RETURNING 1)"
	" UPDATE rmsg.remote_queue SET next_seq = next_seq + (SELECT count(*) FROM numbered)"
	"  WHERE queue_id = $1 AND (SELECT count(*) FROM numbered) > 0"
	" RETURNING (SELECT count(*) FROM numbered) AS numbered",
	6, {INT4OID, INT4OID, TIMESTAMPTZOID, INT8OID, TIMESTAMPTZOID, INT8OID}
};

/*
 * What step 2 sends: the transit rows after acked_seq, as array literals.
 * A message whose payload row the receiver holds goes by reference: its
 * key, and no data.  The receiver holds it when it acknowledged it to the
 * same role before (rmsg.payload_sent), or when an earlier message of this
 * batch carries it with its key (the receiver keeps the key as it puts
 * that one).  Only a shared payload row is sent with its key (its random
 * rmsg.payload_key), so that the receiver remembers no keys that nothing
 * will name again; a row without a key goes with its data.
 * $1 queue, $2 max, $3 server, $4 the role the worker connects as
 */
static RmsgPlan in_transit_plan = {
	"SELECT min(t.seq) AS first_seq, count(*) AS n,"
	"       array_agg(CASE WHEN t.by_reference THEN NULL ELSE coalesce(t.data, p.data) END"
	"                 ORDER BY t.seq)::text AS payloads,"
	"       array_agg(t.headers ORDER BY t.seq)::text AS headers,"
	"       array_agg(CASE WHEN t.shared OR t.by_reference THEN t.key END"
	"                 ORDER BY t.seq)::text AS payload_keys,"
	"       count(*) FILTER (WHERE t.by_reference) AS by_reference"
	"  FROM (SELECT tt.seq, tt.data, tt.headers, tt.payload_id, tt.shared, k.key,"
	"               k.key IS NOT NULL"
	"               AND (EXISTS (SELECT FROM rmsg.payload_sent s"
	"                             WHERE s.payload_id = tt.payload_id"
	"                               AND s.server = $3 AND s.owner = $4)"
	"                    OR (tt.shared AND row_number() OVER (PARTITION BY tt.payload_id"
	"                                                         ORDER BY tt.seq) > 1))"
	"               AS by_reference"
	"          FROM rmsg.transit tt JOIN rmsg.remote_queue r USING (queue_id)"
	"          LEFT JOIN rmsg.payload_key k ON k.payload_id = tt.payload_id"
	"         WHERE tt.queue_id = $1 AND tt.seq > r.acked_seq"
	"         ORDER BY tt.seq LIMIT $2) t"
	"  LEFT JOIN rmsg.payload p ON p.payload_id = t.payload_id AND NOT t.by_reference",
	4, {INT4OID, INT4OID, TEXTOID, OIDOID}
};

/*
 * Step 3.  $1 queue, $2 the last number the receiver holds, $3 server,
 * $4 role, $5 messages the batch sent by reference (0 unless it was all
 * taken).  The shared payload rows it took are noted as held there.  An
 * answer short of the batch means the receiver stopped at a key it no
 * longer backs (its payload row was collected): the rest of the batch
 * forgets that the receiver holds their payload rows, and goes again
 * with its data.
 */
static RmsgPlan acknowledged_plan = {
	"WITH held AS (INSERT INTO rmsg.payload_sent (payload_id, server, owner)"
	"               SELECT DISTINCT t.payload_id, $3, $4 FROM rmsg.transit t"
	"                WHERE t.queue_id = $1 AND t.seq <= $2 AND t.shared"
	"               ON CONFLICT DO NOTHING),"
	" not_held AS (DELETE FROM rmsg.payload_sent s USING rmsg.transit t"
	"               WHERE t.queue_id = $1 AND t.seq > $2 AND s.payload_id = t.payload_id"
	"                 AND s.server = $3 AND s.owner = $4),"
	" gone AS (DELETE FROM rmsg.transit WHERE queue_id = $1 AND seq <= $2)"
	" UPDATE rmsg.remote_queue SET acked_seq = greatest(acked_seq, $2), last_sent_at = now(),"
	"                              sent_by_reference = sent_by_reference + $5"
	"  WHERE queue_id = $1",
	5, {INT4OID, INT8OID, TEXTOID, OIDOID, INT8OID}
};

/* $1 queue, $2 the error */
static RmsgPlan error_plan = {
	"UPDATE rmsg.remote_queue SET last_error = $2, last_error_at = now() WHERE queue_id = $1",
	2, {INT4OID, TEXTOID}
};

/* Reads every remote queue into a list of RmsgRemote in `into`.  Inside SPI. */
List *
RmsgLoadRemoteQueues(MemoryContext into)
{
	List	   *remotes = NIL;

	RmsgPlanExecute(&load_plan, NULL, NULL, true, 0);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		MemoryContext old = MemoryContextSwitchTo(into);
		RmsgRemote *r = palloc0(sizeof(RmsgRemote));

		r->queue_id = DatumGetInt32(RmsgSpiNotNull(i, "queue_id"));
		strlcpy(r->queue, RmsgSpiText(i, "name"), sizeof(r->queue));
		strlcpy(r->server, RmsgSpiText(i, "server"), sizeof(r->server));
		r->remote_queue = pstrdup(RmsgSpiText(i, "remote_queue"));
		r->channel = pstrdup(RmsgSpiText(i, "channel"));
		r->owner = DatumGetObjectId(RmsgSpiNotNull(i, "owner"));
		remotes = lappend(remotes, r);
		MemoryContextSwitchTo(old);
	}
	return remotes;
}

/* What step 1 found to send, in the worker's memory for step 2. */
typedef struct Batch
{
	RmsgConnInfo *conninfo;		/* where to send it */
	int64		n;
	char		first_seq[24];
	char	   *payloads;		/* a bytea[] literal, NULL for data sent by key */
	char	   *headers;		/* a jsonb[] literal */
	char	   *payload_keys;	/* a bigint[] literal: shared rows' random keys */
	int64		by_reference;	/* how many went by key */
	char		key_origin[64]; /* where the keys come from (KeyOrigin) */
} Batch;

/*
 * Where this sender's payload keys come from: the cluster, the database
 * and this extension's payload table.  The keys are random, so this only
 * keeps two senders' keys apart for certain.  In a transaction.
 */
static void
KeyOrigin(char *out, size_t size)
{
	snprintf(out, size, UINT64_FORMAT ":%u:%u", GetSystemIdentifier(), MyDatabaseId,
			 RmsgGetRelations()->payload);
}

/*
 * Step 1, and reading what is in transit; false when the queue is gone or
 * paused.  In a transaction.
 */
static bool
NumberAndRead(const RmsgRemote *r, Batch *batch, MemoryContext into)
{
	RmsgQueue	queue;
	TimestampTz now;
	Snapshot	snapshot;
	RmsgHintKey front;
	Datum		values[6];
	Datum		read_values[4];
	bool		isnull;

	batch->n = 0;
	RmsgSpiConnect();
	if (!RmsgTryOpenQueue(r->queue, AccessShareLock, &queue) ||
		queue.queue_id != r->queue_id || queue.paused)
	{
		RmsgSpiFinish();
		return false;
	}
	/*
	 * Past what is gone at the front of the lane.  The hint is read after
	 * the statement's snapshot is taken: a put the snapshot sees lowered
	 * it before committing, so the statement does not start past it.
	 */
	now = GetCurrentTimestamp();
	RmsgReadyFront(r->queue_id, 0, now);
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	front = RmsgReadyHintRead(r->queue_id, 0, now).start;
	values[0] = Int32GetDatum(r->queue_id);
	values[1] = Int32GetDatum(RMSG_TRANSFER_BATCH);
	values[2] = TimestampTzGetDatum(now);
	values[3] = Int64GetDatum(RMSG_TRANSFER_MAX_BYTES);
	values[4] = TimestampTzGetDatum(front.at);
	values[5] = Int64GetDatum(front.msg_id);
	RmsgPlanExecuteIn(&number_plan, values, NULL, snapshot, 0);
	UnregisterSnapshot(snapshot);
	if (SPI_processed > 0 && DatumGetInt64(RmsgSpiNotNull(0, "numbered")) > 0)
	{
		RmsgRequireStableCommit();	/* the numbers must outlive a crash */
		RmsgReadyHintTouched(r->queue_id);	/* the hint's rules, ready_hint.c */
	}

	read_values[0] = values[0];
	read_values[1] = values[1];
	read_values[2] = CStringGetTextDatum(r->server);
	read_values[3] = ObjectIdGetDatum(r->owner);
	RmsgPlanExecute(&in_transit_plan, read_values, NULL, true, 1);
	batch->n = DatumGetInt64(RmsgSpiNotNull(0, "n"));
	if (batch->n > 0)
	{
		MemoryContext old = MemoryContextSwitchTo(into);

		snprintf(batch->first_seq, sizeof(batch->first_seq), INT64_FORMAT,
				 DatumGetInt64(RmsgSpiNotNull(0, "first_seq")));
		batch->payloads = pstrdup(RmsgSpiText(0, "payloads"));
		(void) RmsgSpiValue(0, "headers", &isnull);
		/* every element NULL still makes an array of NULLs */
		batch->headers = isnull ? NULL : pstrdup(RmsgSpiText(0, "headers"));
		batch->payload_keys = pstrdup(RmsgSpiText(0, "payload_keys"));
		batch->by_reference = DatumGetInt64(RmsgSpiNotNull(0, "by_reference"));
		KeyOrigin(batch->key_origin, sizeof(batch->key_origin));
		MemoryContextSwitchTo(old);
	}
	RmsgSpiFinish();
	return true;
}

/* Step 2: sends the batch; the last number the receiver holds. */
static int64
Send(const RmsgRemote *r, const Batch *batch)
{
	PGconn	   *conn = RmsgRemoteConnect(r->server, r->owner, batch->conninfo);
	const char *params[7];
	PGresult   *result;
	int64		last;

	params[0] = r->channel;
	params[1] = r->remote_queue;
	params[2] = batch->first_seq;
	params[3] = batch->payloads;
	params[4] = batch->headers;
	params[5] = batch->payload_keys;
	params[6] = batch->key_origin;
	result = RmsgRemoteExec(conn,
							"SELECT rmsg.accept_transfer($1, $2, $3::pg_catalog.int8,"
							" $4::pg_catalog.bytea[], $5::pg_catalog.jsonb[],"
							" $6::pg_catalog.int8[], $7::pg_catalog.text)",
							7, params, RMSG_TRANSFER_TIMEOUT_MS);
	if (PQntuples(result) != 1 || PQgetisnull(result, 0, 0))
	{
		PQclear(result);
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("the other server answered a transfer with no number")));
	}
	last = strtoi64(PQgetvalue(result, 0, 0), NULL, 10);
	PQclear(result);
	return last;
}

/* Keeps the error of a failed round in the queue's row. */
static void
NoteError(const RmsgRemote *r, const char *message)
{
	Datum		values[2];

	RmsgWorkerBeginUnit("recoverable_msg: noting a transfer's error");
	RmsgSpiConnect();
	values[0] = Int32GetDatum(r->queue_id);
	values[1] = CStringGetTextDatum(message);
	RmsgPlanExecute(&error_plan, values, NULL, true, 0);
	RmsgSpiFinish();
	RmsgWorkerEndUnit();
}

/*
 * The last number the receiver answered must lie between the numbers it
 * had before this batch and the end of the batch.  Below: it lost what it
 * acknowledged.  Above: it holds numbers this sender never sent (the
 * sender was restored from an older backup, or a copy of it sends on the
 * same channel), and it skipped this batch's messages as ones it had.
 * Either way the channel stops with an error rather than lose anything.
 */
static void
CheckAnswer(const RmsgRemote *r, const Batch *batch, int64 last)
{
	int64		first = strtoi64(batch->first_seq, NULL, 10);

	if (last < first - 1 || last > first + batch->n - 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("the receiver of queue \"%s\" answered message " INT64_FORMAT " to messages " INT64_FORMAT " to " INT64_FORMAT,
						r->queue, last, first, first + batch->n - 1),
				 errdetail("The receiver and this sender no longer agree on channel \"%s\": one of them was restored or copied.",
						   r->channel)));
}

/* Step 3: forget what the receiver holds (a lazy commit). */
static void
Forget(const RmsgRemote *r, const Batch *batch, int64 last)
{
	Datum		values[5];
	bool		all_taken = last == strtoi64(batch->first_seq, NULL, 10) + batch->n - 1;

	RmsgWorkerBeginUnit("recoverable_msg: forgetting messages the other server holds");
	RmsgSpiConnect();
	values[0] = Int32GetDatum(r->queue_id);
	values[1] = Int64GetDatum(last);
	values[2] = CStringGetTextDatum(r->server);
	values[3] = ObjectIdGetDatum(r->owner);
	values[4] = Int64GetDatum(all_taken ? batch->by_reference : 0);
	RmsgLazyWriteBegin(RMSG_LAZY_TRANSFER_ACK);
	RmsgPlanExecute(&acknowledged_plan, values, NULL, true, 0);
	RmsgLazyWriteEnd();
	RmsgSpiFinish();
	RmsgWorkerEndUnit();
}

/*
 * One round of the remote queue; true if it moved messages.  Any failure
 * in it (the other server down or refusing, a batch that cannot be read,
 * an answer that does not fit) is the queue's: noted in its row, the
 * connection dropped, and the queue tried again later (*retry_at), while
 * the worker goes on with its other work.
 */
bool
RmsgTransferTurn(RmsgRemote *r, TimestampTz *retry_at)
{
	MemoryContext old;
	Batch		batch;
	volatile bool moved = false;
	char	   *volatile failure = NULL;

	if (r->retry_at > GetCurrentTimestamp())
	{
		if (*retry_at == 0 || r->retry_at < *retry_at)
			*retry_at = r->retry_at;
		return false;
	}
	/* a round ended by an error leaves its memory here, freed now */
	if (transfer_context == NULL)
		transfer_context = AllocSetContextCreate(TopMemoryContext, "recoverable_msg transfer",
												 ALLOCSET_DEFAULT_SIZES);
	MemoryContextReset(transfer_context);
	old = MemoryContextSwitchTo(transfer_context);

	PG_TRY();
	{
		bool		open;

		RmsgWorkerBeginUnit("recoverable_msg: numbering messages of a remote queue");
		open = NumberAndRead(r, &batch, transfer_context);
		RmsgWorkerEndUnit();
		if (open && batch.n > 0)
		{
			int64		last;

			/* where to connect: the server or the user mapping may be gone */
			RmsgWorkerBeginUnit("recoverable_msg: reading where a remote queue goes");
			batch.conninfo = RmsgRemoteConnInfo(r->server, r->owner, transfer_context);
			RmsgWorkerEndUnit();
			/* sending, outside any transaction */
			last = Send(r, &batch);
			CheckAnswer(r, &batch, last);
			Forget(r, &batch, last);
			moved = true;
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(transfer_context);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		MemoryContextSwitchTo(transfer_context);
		failure = pstrdup(edata->message);
	}
	PG_END_TRY();

	if (failure != NULL)
	{
		int64		wait = RMSG_TRANSFER_RETRY_USECS;

		RmsgRemoteDisconnect(r->server, r->owner);
		ereport(LOG,
				(errmsg("recoverable_msg could not move messages of queue \"%s\" to server \"%s\": %s",
						r->queue, r->server, failure)));
		NoteError(r, failure);
		for (int i = 0; i < r->failures && wait < RMSG_TRANSFER_MAX_RETRY_USECS; i++)
			wait *= 2;
		r->failures++;
		r->retry_at = GetCurrentTimestamp() + Min(wait, RMSG_TRANSFER_MAX_RETRY_USECS);
		if (*retry_at == 0 || r->retry_at < *retry_at)
			*retry_at = r->retry_at;
	}
	else
		r->failures = 0;
	MemoryContextSwitchTo(old);
	return moved;
}
