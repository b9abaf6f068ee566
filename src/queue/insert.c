/*-------------------------------------------------------------------------
 *
 * insert.c
 *	  Adding a message row without the executor.
 *
 * Every put is this: rows into rmsg.message and an entry in each of its
 * indexes.  As a SQL statement that costs an executor start and end,
 * a good part of the put.  So we form the row, insert it with
 * table_tuple_insert, and insert the index entries ourselves.  What the
 * executor would do besides is owed nothing here: the table has no
 * triggers, no partitions, plain-column indexes, partial indexes whose
 * predicates are all "column IS NOT NULL" (message_payload_idx on
 * payload_id, message_group_idx on group_id), and the row we form always
 * satisfies its constraints (exactly one of payload_id
 * and inline_data).  Should someone add a trigger or row security to the
 * table, we refuse rather than bypass it (core/relations.c).  The caller
 * has checked the extension's own privileges (core/privileges.c);
 * applications hold none on the table.  A batch goes in one
 * table_multi_insert, which writes one WAL record per page it fills.
 * Payload rows (dedup/payload.c) stay SQL statements.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "commands/sequence.h"
#include "executor/tuptable.h"
#include "nodes/pg_list.h"
#include "nodes/primnodes.h"
#include "utils/builtins.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/timestamp.h"

#include "queue/queue.h"

/* The indexes of rmsg.message, open, with what inserting into them takes. */
typedef struct MessageIndexes
{
	int			count;
	Relation   *indexes;
	IndexInfo **infos;
} MessageIndexes;

static void
OpenMessageIndexes(Relation rel, MessageIndexes *set)
{
	List	   *oids = RelationGetIndexList(rel);
	ListCell   *lc;

	set->count = 0;
	set->indexes = palloc(sizeof(Relation) * list_length(oids));
	set->infos = palloc(sizeof(IndexInfo *) * list_length(oids));
	foreach(lc, oids)
	{
		Relation	index = index_open(lfirst_oid(lc), RowExclusiveLock);
		IndexInfo  *info = BuildIndexInfo(index);

		if (info->ii_Expressions != NIL)
			elog(ERROR, "unexpected expression index \"%s\" on rmsg.message",
				 RelationGetRelationName(index));
		set->indexes[set->count] = index;
		set->infos[set->count] = info;
		set->count++;
	}
	list_free(oids);
}

static void
CloseMessageIndexes(MessageIndexes *set)
{
	for (int i = 0; i < set->count; i++)
		index_close(set->indexes[i], NoLock);
}

/*
 * Whether a row belongs in a partial index.  Evaluating a predicate would
 * need an executor state; ours are all "column IS NOT NULL" (a payload
 * row, a group), which we read off the row.  Anything else is an index we
 * did not create.
 */
static bool
PartialIndexCovers(Relation index, IndexInfo *info, TupleTableSlot *slot)
{
	NullTest   *test = NULL;
	bool		isnull;

	if (list_length(info->ii_Predicate) == 1 && IsA(linitial(info->ii_Predicate), NullTest))
		test = (NullTest *) linitial(info->ii_Predicate);
	if (test == NULL || test->nulltesttype != IS_NOT_NULL || !IsA(test->arg, Var))
		elog(ERROR, "unexpected partial index \"%s\" on rmsg.message",
			 RelationGetRelationName(index));
	(void) slot_getattr(slot, ((Var *) test->arg)->varattno, &isnull);
	return !isnull;
}

/* Adds the entries of one row version to the open indexes. */
static void
AddEntries(Relation rel, const MessageIndexes *set, TupleTableSlot *slot,
		   bool key_unchanged)
{

	for (int i = 0; i < set->count; i++)
	{
		Relation	index = set->indexes[i];
		IndexInfo  *info = set->infos[i];
		Datum		values[INDEX_MAX_KEYS];
		bool		isnull[INDEX_MAX_KEYS];

		if (info->ii_Predicate != NIL && !PartialIndexCovers(index, info, slot))
			continue;
		FormIndexDatum(info, slot, NULL, values, isnull);
		index_insert(index, values, isnull, &slot->tts_tid, rel,
					 index->rd_index->indisunique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO,
					 key_unchanged, info);
	}
}

/*
 * Adds the index entries of a row version to every index of the table: for
 * an insert, and for an update that could not be HOT.  key_unchanged says
 * the update changed no indexed column, which lets btree delete the old
 * versions' entries bottom-up instead of splitting pages, as the executor
 * arranges for such updates.  Then tells the queue's ready hint of the new
 * entry (ready_hint.c).
 */
void
RmsgInsertIndexEntries(Relation rel, TupleTableSlot *slot, bool key_unchanged)
{
	const RmsgRelations *rels = RmsgGetRelations();
	MessageIndexes set;
	bool		isnull;

	OpenMessageIndexes(rel, &set);
	AddEntries(rel, &set, slot, key_unchanged);
	CloseMessageIndexes(&set);

	/* a new entry in the ready index: gets must not start past it */
	RmsgReadyHintLower(DatumGetInt32(slot_getattr(slot, rels->att_queue_id, &isnull)),
					   DatumGetInt16(slot_getattr(slot, rels->att_priority, &isnull)),
					   DatumGetTimestampTz(slot_getattr(slot, rels->att_visible_at, &isnull)));
}

/* A message row, formed in a slot of the table's own kind. */
static TupleTableSlot *
FormMessage(Relation rel, int64 msg_id, int32 queue_id, TimestampTz visible_at,
			TimestampTz enqueued_at, Datum headers, bool headers_null,
			const RmsgStoredData *stored, const RmsgPlacement *place)
{
	const RmsgRelations *rels = RmsgGetRelations();
	TupleDesc	desc = RelationGetDescr(rel);
	TupleTableSlot *slot = table_slot_create(rel, NULL);

	ExecClearTuple(slot);
	memset(slot->tts_values, 0, sizeof(Datum) * desc->natts);
	memset(slot->tts_isnull, true, sizeof(bool) * desc->natts);
#define SET_COLUMN(attnum, value) \
	(slot->tts_values[(attnum) - 1] = (value), slot->tts_isnull[(attnum) - 1] = false)
	SET_COLUMN(rels->att_msg_id, Int64GetDatum(msg_id));
	SET_COLUMN(rels->att_queue_id, Int32GetDatum(queue_id));
	SET_COLUMN(rels->att_visible_at, TimestampTzGetDatum(visible_at));
	SET_COLUMN(rels->att_enqueued_at, TimestampTzGetDatum(enqueued_at));
	SET_COLUMN(rels->att_payload_size, Int32GetDatum(stored->size));
	if (stored->payload_id != 0)
		SET_COLUMN(rels->att_payload_id, Int64GetDatum(stored->payload_id));
	else
		SET_COLUMN(rels->att_inline_data, PointerGetDatum(stored->inline_data));
	if (!headers_null)
		SET_COLUMN(rels->att_headers, headers);
	if (place->group_id != NULL)
		SET_COLUMN(rels->att_group_id, CStringGetTextDatum(place->group_id));
	SET_COLUMN(rels->att_priority, Int16GetDatum(place->priority));
#undef SET_COLUMN
	ExecStoreVirtualTuple(slot);
	return slot;
}

/*
 * Inserts one message with a msg_id the caller took from rmsg.msg_id_seq
 * (RmsgNextMsgId: an idempotent put claims its key with it first,
 * put_keys.c), placed in its group and lane as `place` says.  Its data is
 * either inline or in a payload row the caller has written or pinned
 * (dedup/payload.c); stored->size is the data's length either way.
 */
void
RmsgInsertMessageAs(int64 msg_id, int32 queue_id, TimestampTz visible_at,
					TimestampTz enqueued_at, Datum headers, bool headers_null,
					const RmsgStoredData *stored, const RmsgPlacement *place)
{
	RmsgInsertMessages(queue_id, visible_at, enqueued_at, headers, headers_null,
					   1, stored, place, &msg_id);
}

/* The next msg_id, for RmsgInsertMessageAs. */
int64
RmsgNextMsgId(void)
{
	return nextval_internal(RmsgGetRelations()->msg_id_seq, false);
}

/*
 * Inserts n messages with the same times, headers, group and priority, the
 * data of message i as stored[i]; their msg_ids, ascending, go to
 * msg_ids[] (an element that is not 0 on entry is a msg_id taken before,
 * and kept).  Several rows
 * go in one call of table_multi_insert, which fills a page with one WAL
 * record where inserting row by row writes one per row.
 */
void
RmsgInsertMessages(int32 queue_id, TimestampTz visible_at, TimestampTz enqueued_at,
				   Datum headers, bool headers_null, int n,
				   const RmsgStoredData *stored, const RmsgPlacement *place,
				   int64 *msg_ids)
{
	const RmsgRelations *rels = RmsgGetRelations();
	Relation	rel;
	TupleTableSlot **slots;
	MessageIndexes set;

	rel = table_open(rels->message, RowExclusiveLock);
	RmsgRefuseBypass(rel, "a put");

	slots = palloc(sizeof(TupleTableSlot *) * n);
	for (int i = 0; i < n; i++)
	{
		if (msg_ids[i] == 0)
			msg_ids[i] = nextval_internal(rels->msg_id_seq, false);
		slots[i] = FormMessage(rel, msg_ids[i], queue_id, visible_at, enqueued_at,
							   headers, headers_null, &stored[i], place);
	}
	if (n == 1)
		table_tuple_insert(rel, slots[0], GetCurrentCommandId(true), 0, NULL);
	else
		table_multi_insert(rel, slots, n, GetCurrentCommandId(true), 0, NULL);

	OpenMessageIndexes(rel, &set);
	for (int i = 0; i < n; i++)
		AddEntries(rel, &set, slots[i], false);
	CloseMessageIndexes(&set);
	/* new entries in the ready index: gets must not start past them */
	RmsgReadyHintLower(queue_id, place->priority, visible_at);

	/* as after a statement: what we wrote is seen by the commands after us */
	CommandCounterIncrement();
	for (int i = 0; i < n; i++)
		ExecDropSingleTupleTableSlot(slots[i]);
	pfree(slots);
	table_close(rel, NoLock);
}
