/*-------------------------------------------------------------------------
 *
 * payload.c
 *	  Payload rows: writing, finding, pinning, reading and collecting them.
 *
 * A payload row is written once and referenced by every message (live or
 * dead) that carries its data.  Nothing counts the references: sharing a
 * row costs a put no write to the row, and concurrent puts sharing one row
 * never wait for each other.  Instead, rmsg.collect_payloads (which the
 * worker's maintenance also runs) removes the rows that no message
 * references any more, the way a log's old segments are recycled once
 * nothing needs them.
 *
 * The race between the two is settled with row locks.  A put that
 * references a row it did not write first pins it: it finds the row in the
 * latest snapshot and locks it FOR KEY SHARE, held until the put's
 * transaction ends.  The collector locks its candidates FOR UPDATE SKIP
 * LOCKED, then looks for references again with a snapshot taken after its
 * locks were granted, and deletes only the rows still unreferenced.  So:
 *  - a pin taken first makes the collector skip the row;
 *  - a pin whose transaction committed before the collector's lock is seen
 *    by the second look (its message is committed by then);
 *  - a pin asked for after the collector's lock waits for the collector,
 *    then finds the row deleted (or still there, if the collector kept
 *    it), and a put that finds it deleted writes its data again.
 * A reference therefore never dangles, and no lock of ours beyond the row
 * locks is needed.  Neither side ever waits while holding a lock the other
 * side waits for: the collector skips instead of waiting.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/genam.h"
#include "access/heaptoast.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "dedup/dedup.h"

PG_FUNCTION_INFO_V1(rmsg_collect_payloads);

/* How many candidates the collector locks and re-checks at a time. */
#define COLLECT_BATCH 1000

/* $1 hash (NULL: not findable by content), $2 data */
static RmsgPlan write_payload_plan = {
	"INSERT INTO rmsg.payload (hash, data) VALUES ($1, $2) RETURNING payload_id",
	2, {INT8OID, BYTEAOID}
};

static RmsgPlan read_payload_plan = {
	"SELECT data FROM rmsg.payload WHERE payload_id = $1",
	1, {INT8OID}
};

static RmsgPlan read_inline_plan = {
	"SELECT inline_data FROM rmsg.message WHERE msg_id = $1"
	" UNION ALL SELECT inline_data FROM rmsg.dead_message WHERE msg_id = $1",
	1, {INT8OID}
};

/*
 * Who may reference a payload row: a live or dead message, and a message
 * of a remote queue on its way to another server (rmsg.transit), which the
 * worker moved there from rmsg.message in one transaction.
 */
#define UNREFERENCED(p) \
	"NOT EXISTS (SELECT 1 FROM rmsg.message m WHERE m.payload_id = " p ".payload_id)" \
	" AND NOT EXISTS (SELECT 1 FROM rmsg.dead_message d WHERE d.payload_id = " p ".payload_id)" \
	" AND NOT EXISTS (SELECT 1 FROM rmsg.transit t WHERE t.payload_id = " p ".payload_id)"

/* Unreferenced rows after $1, locked unless a put has pinned them. */
static RmsgPlan collect_candidates_plan = {
	"SELECT p.payload_id FROM rmsg.payload p"
	" WHERE p.payload_id > $1 AND " UNREFERENCED("p")
	" ORDER BY p.payload_id LIMIT " CppAsString2(COLLECT_BATCH)
	" FOR UPDATE OF p SKIP LOCKED",
	1, {INT8OID}
};

/*
 * The second look, in a snapshot taken after the locks were granted.  What
 * the remote side remembers of a row goes with it: the keys a receiver
 * holds it under (rmsg.payload_received), the servers this sender knows to
 * hold it (rmsg.payload_sent) and the key it sends it under
 * (rmsg.payload_key); a key found no more costs the data sent again,
 * never wrong data.
 */
static RmsgPlan collect_delete_plan = {
	"WITH gone AS (DELETE FROM rmsg.payload p WHERE p.payload_id = ANY($1)"
	"                 AND " UNREFERENCED("p") " RETURNING p.payload_id),"
	" received AS (DELETE FROM rmsg.payload_received r"
	"               WHERE r.payload_id IN (SELECT payload_id FROM gone)),"
	" sent AS (DELETE FROM rmsg.payload_sent s"
	"           WHERE s.payload_id IN (SELECT payload_id FROM gone)),"
	" keys AS (DELETE FROM rmsg.payload_key k"
	"           WHERE k.payload_id IN (SELECT payload_id FROM gone))"
	" SELECT count(*) AS collected FROM gone",
	1, {INT8ARRAYOID}
};

/*
 * The hash by which queues with dedup = 'content' find equal data, and a
 * put checks that the payload it was given is its token's data.
 */
uint64
RmsgContentHash(bytea *data)
{
	return hash_bytes_extended((const unsigned char *) VARDATA_ANY(data),
							   VARSIZE_ANY_EXHDR(data), 0);
}

/*
 * The key by which content queues find equal data: the hash of the data
 * seeded with the name of the role that owns the queue.  So a queue finds
 * only what queues of its own owner logged: another owner's data would
 * otherwise be found too, and a put's counters (bytes referenced instead
 * of written) would tell whether someone else had logged exactly these
 * bytes.  The name, not the OID: the key is stored in rmsg.payload.hash,
 * and pg_dump carries role names over to another cluster, where the same
 * roles have other OIDs (and an OID of the old cluster may be another
 * role's).  A role renamed stops finding what it logged under its old name,
 * which costs a payload row, never a wrong reference: the bytes are always
 * compared too.
 */
static int64
ContentKey(bytea *data, Oid owner)
{
	char	   *owner_name = GetUserNameFromId(owner, false);
	uint64		seed = hash_bytes_extended((const unsigned char *) owner_name,
										   strlen(owner_name), 0);

	return (int64) hash_bytes_extended((const unsigned char *) VARDATA_ANY(data),
									   VARSIZE_ANY_EXHDR(data), seed);
}

/*
 * Writes a payload row holding data; returns its payload_id.  findable:
 * record its content key, so that puts to queues with dedup = 'content' of
 * the same owner find it.  Call inside SPI.
 */
int64
RmsgWritePayload(bytea *data, bool findable, Oid owner)
{
	Datum		values[2];
	bool		isnull[2] = {!findable, false};

	values[0] = findable ? Int64GetDatum(ContentKey(data, owner)) : (Datum) 0;
	values[1] = PointerGetDatum(data);
	RmsgPlanExecute(&write_payload_plan, values, isnull, false, 1);
	return DatumGetInt64(RmsgSpiNotNull(0, "payload_id"));
}

/*
 * Locks the row version the slot holds (found in snapshot) FOR KEY SHARE,
 * following it to its newest version; false when it has been deleted.
 * Waits for a collector that is deciding about the row.
 */
static bool
PinFoundRow(Relation rel, TupleTableSlot *slot, Snapshot snapshot)
{
	TupleTableSlot *locked = table_slot_create(rel, NULL);
	ItemPointerData tid = slot->tts_tid;
	TM_FailureData tmfd;
	TM_Result	result;

	result = table_tuple_lock(rel, &tid, snapshot, locked,
							  GetCurrentCommandId(false), LockTupleKeyShare,
							  LockWaitBlock, TUPLE_LOCK_FLAG_FIND_LAST_VERSION,
							  &tmfd);
	ExecDropSingleTupleTableSlot(locked);
	/* TM_Deleted: collected; anything else cannot happen to a payload row */
	return result == TM_Ok;
}

/*
 * An index scan of rmsg.payload for one key, in the latest snapshot: what
 * matters to a new reference is whether a row exists now, whatever the
 * isolation level.  Every caller pins what it finds.
 */
typedef struct PayloadScan
{
	Relation	rel;
	Relation	index;
	Snapshot	snapshot;
	TupleTableSlot *slot;
	IndexScanDesc scan;
} PayloadScan;

static void
PayloadScanBegin(PayloadScan *ps, Oid index, int64 key_value)
{
	const RmsgRelations *rels = RmsgGetRelations();
	ScanKeyData key;

	ps->rel = table_open(rels->payload, RowShareLock);
	RmsgRefuseBypass(ps->rel, "sharing a payload");
	ps->index = index_open(index, AccessShareLock);
	ps->snapshot = RegisterSnapshot(GetLatestSnapshot());
	ps->slot = table_slot_create(ps->rel, NULL);
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(key_value));
	ps->scan = index_beginscan(ps->rel, ps->index, ps->snapshot, 1, 0);
	index_rescan(ps->scan, &key, 1, NULL, 0);
}

static bool
PayloadScanNext(PayloadScan *ps)
{
	return index_getnext_slot(ps->scan, ForwardScanDirection, ps->slot);
}

static void
PayloadScanEnd(PayloadScan *ps)
{
	index_endscan(ps->scan);
	ExecDropSingleTupleTableSlot(ps->slot);
	UnregisterSnapshot(ps->snapshot);
	index_close(ps->index, AccessShareLock);
	table_close(ps->rel, NoLock);
}

/*
 * Pins the payload row payload_id for a new reference (see the file
 * header); false when it no longer exists.
 */
bool
RmsgPinPayload(int64 payload_id)
{
	PayloadScan ps;
	bool		pinned = false;

	PayloadScanBegin(&ps, RmsgGetRelations()->payload_pkey, payload_id);
	if (PayloadScanNext(&ps))
		pinned = PinFoundRow(ps.rel, ps.slot, ps.snapshot);
	PayloadScanEnd(&ps);
	return pinned;
}

/*
 * Finds a findable payload row of this owner's content queues (one whose
 * content key matches) holding exactly data and pins it; returns its
 * payload_id, or 0 when there is none.  The key only narrows the search:
 * the bytes are compared.
 */
int64
RmsgFindPayload(bytea *data, Oid owner)
{
	const RmsgRelations *rels = RmsgGetRelations();
	Size		size = VARSIZE_ANY_EXHDR(data);
	PayloadScan ps;
	int64		found = 0;

	PayloadScanBegin(&ps, rels->payload_hash_idx, ContentKey(data, owner));
	while (found == 0 && PayloadScanNext(&ps))
	{
		bool		isnull;
		Datum		stored = slot_getattr(ps.slot, rels->att_payload_data, &isnull);
		bytea	   *stored_data;

		/* the size first: it is known without reading a toasted value */
		if (isnull || toast_raw_datum_size(stored) - VARHDRSZ != size)
			continue;
		stored_data = DatumGetByteaPP(stored);
		if (memcmp(VARDATA_ANY(stored_data), VARDATA_ANY(data), size) != 0)
			continue;
		if (PinFoundRow(ps.rel, ps.slot, ps.snapshot))
			found = DatumGetInt64(slot_getattr(ps.slot, rels->att_payload_payload_id, &isnull));
	}
	PayloadScanEnd(&ps);
	return found;
}

/*
 * Runs an at most one-row read by id and returns the bytea column `column`
 * of its row, detoasted, or NULL when there is no row or the value is NULL.
 */
static bytea *
ReadOne(RmsgPlan *plan, int64 id, const char *column)
{
	Datum		arg = Int64GetDatum(id);
	bool		isnull;
	Datum		value;

	RmsgPlanExecute(plan, &arg, NULL, true, 1);
	if (SPI_processed == 0)
		return NULL;
	value = RmsgSpiValue(0, column, &isnull);
	return isnull ? NULL : DatumGetByteaPP(value);
}

/* The data of a payload row, or NULL when it is gone.  Inside SPI. */
bytea *
RmsgReadPayload(int64 payload_id)
{
	return ReadOne(&read_payload_plan, payload_id, "data");
}

/*
 * The inline data of a live or dead message, or NULL when the message is
 * gone (or keeps its data in a payload row).  Inside SPI.
 */
bytea *
RmsgReadInlineData(int64 msg_id)
{
	return ReadOne(&read_inline_plan, msg_id, "inline_data");
}

/*
 * rmsg.collect_payloads() and the worker's maintenance: removes the payload
 * rows no message references any more; returns how many.  Works in batches
 * of COLLECT_BATCH, each locked, looked at again and deleted (see the file
 * header); rows a put has pinned are left for the next collection.
 */
int64
RmsgCollectPayloads(void)
{
	int64		collected = 0;
	int64		after = 0;

	RmsgSpiConnect();
	for (;;)
	{
		Datum		arg = Int64GetDatum(after);
		Datum	   *ids;
		int			nids = 0;
		ArrayType  *array;
		Datum		array_arg;

		RmsgPlanExecute(&collect_candidates_plan, &arg, NULL, true, 0);
		if (SPI_processed == 0)
			break;
		ids = palloc(sizeof(Datum) * SPI_processed);
		for (uint64 i = 0; i < SPI_processed; i++)
			ids[nids++] = RmsgSpiNotNull(i, "payload_id");
		after = DatumGetInt64(ids[nids - 1]);

		array = construct_array(ids, nids, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
		array_arg = PointerGetDatum(array);
		RmsgPlanExecute(&collect_delete_plan, &array_arg, NULL, true, 1);
		collected += DatumGetInt64(RmsgSpiNotNull(0, "collected"));
		if (nids < COLLECT_BATCH)
			break;
	}
	RmsgSpiFinish();

	RmsgCountCollected(collected);
	return collected;
}

/* rmsg.collect_payloads() */
Datum
rmsg_collect_payloads(PG_FUNCTION_ARGS)
{
	RmsgEnter("rmsg.collect_payloads", true);
	PG_RETURN_INT64(RmsgCollectPayloads());
}
