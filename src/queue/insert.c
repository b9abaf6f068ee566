/*-------------------------------------------------------------------------
 *
 * insert.c
 *	  Adding a message row without the executor.
 *
 * Every single put is this: one row into rmsg.message and an entry in each
 * of its indexes.  As a SQL statement that costs an executor start and end,
 * a good part of the put.  So we form the row, insert it with
 * table_tuple_insert, and insert the index entries ourselves.  What the
 * executor would do besides is owed nothing here: the table has no
 * triggers, no partitions, plain-column indexes, one partial index whose
 * predicate we know (message_payload_idx: payload_id IS NOT NULL), and the
 * row we form always satisfies its constraints (exactly one of payload_id
 * and inline_data).  Should someone add a trigger or row security to the
 * table, we refuse rather than bypass it (core/relations.c).  The caller
 * has checked the extension's own privileges (core/privileges.c);
 * applications hold none on the table.  Payload rows (dedup/payload.c) and
 * batches stay SQL statements.
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
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/timestamp.h"

#include "queue/queue.h"

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
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;

	foreach(lc, indexes)
	{
		Relation	index = index_open(lfirst_oid(lc), RowExclusiveLock);
		IndexInfo  *info = BuildIndexInfo(index);
		Datum		values[INDEX_MAX_KEYS];
		bool		isnull[INDEX_MAX_KEYS];

		/*
		 * Evaluating a predicate would need an executor state; the one
		 * partial index we have says "has a payload row", which we read off
		 * the row.  Anything else is an index we did not create.
		 */
		if (info->ii_Predicate != NIL)
		{
			bool		no_payload_row;

			if (RelationGetRelid(index) != rels->message_payload_idx)
				elog(ERROR, "unexpected partial index \"%s\" on rmsg.message",
					 RelationGetRelationName(index));
			(void) slot_getattr(slot, rels->att_payload_id, &no_payload_row);
			if (no_payload_row)
			{
				index_close(index, NoLock);
				continue;
			}
		}
		if (info->ii_Expressions != NIL)
			elog(ERROR, "unexpected expression index \"%s\" on rmsg.message",
				 RelationGetRelationName(index));
		FormIndexDatum(info, slot, NULL, values, isnull);
		index_insert(index, values, isnull, &slot->tts_tid, rel,
					 index->rd_index->indisunique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO,
					 key_unchanged, info);
		index_close(index, NoLock);
	}
	list_free(indexes);

	/* a new entry in the ready index: gets must not start past it */
	{
		bool		isnull;

		RmsgReadyHintLower(DatumGetInt32(slot_getattr(slot, rels->att_queue_id, &isnull)),
						   DatumGetTimestampTz(slot_getattr(slot, rels->att_visible_at, &isnull)));
	}
}

/*
 * Inserts one message; returns its msg_id.  Its data is either inline
 * (data set) or in the payload row payload_id, which the caller has
 * written or pinned (dedup/payload.c); size is the data's length either
 * way.
 */
int64
RmsgInsertMessage(int32 queue_id, TimestampTz visible_at,
				  TimestampTz enqueued_at, Datum headers, bool headers_null,
				  const RmsgStoredData *stored)
{
	const RmsgRelations *rels = RmsgGetRelations();
	Relation	rel;
	TupleDesc	desc;
	Datum	   *values;
	bool	   *nulls;
	TupleTableSlot *slot;
	int64		msg_id;

	rel = table_open(rels->message, RowExclusiveLock);
	RmsgRefuseBypass(rel, "a put");
	desc = RelationGetDescr(rel);

	msg_id = nextval_internal(rels->msg_id_seq, false);

	values = palloc0(sizeof(Datum) * desc->natts);
	nulls = palloc(sizeof(bool) * desc->natts);
	memset(nulls, true, sizeof(bool) * desc->natts);
#define SET_COLUMN(attnum, value) \
	(values[(attnum) - 1] = (value), nulls[(attnum) - 1] = false)
	SET_COLUMN(rels->att_msg_id, Int64GetDatum(msg_id));
	SET_COLUMN(rels->att_queue_id, Int32GetDatum(queue_id));
	SET_COLUMN(rels->att_deliveries, Int32GetDatum(0));
	SET_COLUMN(rels->att_visible_at, TimestampTzGetDatum(visible_at));
	SET_COLUMN(rels->att_enqueued_at, TimestampTzGetDatum(enqueued_at));
	SET_COLUMN(rels->att_payload_size, Int32GetDatum(stored->size));
	if (stored->payload_id != 0)
		SET_COLUMN(rels->att_payload_id, Int64GetDatum(stored->payload_id));
	else
		SET_COLUMN(rels->att_inline_data, PointerGetDatum(stored->inline_data));
	if (!headers_null)
		SET_COLUMN(rels->att_headers, headers);
#undef SET_COLUMN

	slot = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);
	ExecStoreHeapTuple(heap_form_tuple(desc, values, nulls), slot, true);
	table_tuple_insert(rel, slot, GetCurrentCommandId(true), 0, NULL);
	RmsgInsertIndexEntries(rel, slot, false);

	/* as after a statement: what we wrote is seen by the commands after us */
	CommandCounterIncrement();
	ExecDropSingleTupleTableSlot(slot);
	table_close(rel, NoLock);
	return msg_id;
}
