/*-------------------------------------------------------------------------
 *
 * relations.c
 *	  The OIDs and attribute numbers of our tables, for code that reads
 *	  them directly instead of through SQL.
 *
 * Looked up by name in schema rmsg on first use and kept in backend memory;
 * any relcache invalidation (DROP EXTENSION and CREATE EXTENSION give the
 * tables new OIDs, ALTER EXTENSION UPDATE alters them) makes us look them
 * up again.  With them we note who owns the tables (our statements run as
 * that role, kept_plans.c), the search path our statements are planned
 * under, and that the SQL objects are of the version this library was
 * built for: a database whose extension was not yet updated gets an error
 * that says what to run, never a call with arguments of another shape.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_trigger.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"

#include "core/core.h"

static RmsgRelations relations;
static bool relations_valid = false;
static bool callback_registered = false;

/* Relcache callback: any invalidation may concern our tables. */
static void
RelationsInvalidate(Datum arg, Oid relid)
{
	relations_valid = false;
}

/* The OID of relation rmsg.<name>; 42P01 when it is missing. */
static Oid
RelidOf(Oid namespace, const char *name)
{
	Oid			relid = get_relname_relid(name, namespace);

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"rmsg.%s\" does not exist", name),
				 errhint("Run CREATE EXTENSION recoverable_msg in this database.")));
	return relid;
}

/*
 * The attribute number of a column of ours, looked up by name rather than
 * assumed: an update script that adds or drops a column (ALTER TABLE adds
 * at the end) would otherwise have us read the wrong one.
 */
static AttrNumber
AttnumOf(Relation rel, const char *name)
{
	TupleDesc	desc = RelationGetDescr(rel);

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute attr = TupleDescAttr(desc, i);

		if (!attr->attisdropped && strcmp(NameStr(attr->attname), name) == 0)
			return attr->attnum;
	}
	elog(ERROR, "column \"%s\" of %s is missing", name, RelationGetRelationName(rel));
	return InvalidAttrNumber;	/* keep the compiler quiet */
}

/*
 * The version of the extension's SQL objects in this database, palloc'd, or
 * NULL when it is not installed.
 */
char *
RmsgInstalledVersion(void)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	char	   *version = NULL;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("recoverable_msg"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		value = heap_getattr(tuple, Anum_pg_extension_extversion,
										 RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = TextDatumGetCString(value);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

/* Refuses SQL objects of another version than the library's. */
static void
CheckInstalledVersion(void)
{
	char	   *version = RmsgInstalledVersion();

	if (version == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"recoverable_msg\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION recoverable_msg.")));
	if (strcmp(version, RMSG_SQL_VERSION) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"recoverable_msg\" is at version %s in this database, but its library needs version %s",
						version, RMSG_SQL_VERSION),
				 errhint("Run ALTER EXTENSION recoverable_msg UPDATE.")));
}

/*
 * Our statements run as the tables' owner (kept_plans.c), and so would any
 * trigger on our tables: a trigger someone added (1.0 let roles with the
 * TRIGGER right do so) would run as a superuser inside every function of
 * the extension.  No trigger of ours exists but PostgreSQL's own, for the
 * foreign keys; any other stops the extension until it is dropped.
 */
static void
RefuseTriggers(Oid namespace)
{
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tuple;

	rel = table_open(TriggerRelationId, AccessShareLock);
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	while (HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		Form_pg_trigger trigger = (Form_pg_trigger) GETSTRUCT(tuple);

		if (!trigger->tgisinternal && get_rel_namespace(trigger->tgrelid) == namespace)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table rmsg.%s has trigger \"%s\"",
							get_rel_name(trigger->tgrelid), NameStr(trigger->tgname)),
					 errdetail("The extension's statements run as the owner of its tables, and so would the trigger."),
					 errhint("Drop the trigger.")));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
}

/*
 * Our hot paths (put, get, ack) reach rmsg.message without the executor,
 * which is what fires triggers and applies row security.  Nothing of ours
 * adds either; should an administrator add one, those paths refuse to run
 * rather than silently bypass it.
 */
void
RmsgRefuseBypass(Relation rel, const char *what)
{
	if (rel->trigdesc != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table %s has triggers, which %s would bypass",
						RelationGetRelationName(rel), what),
				 errdetail("recoverable_msg writes this table directly, without the executor."),
				 errhint("Drop the trigger or disable row-level security on the extension's tables.")));
	if (rel->rd_rel->relrowsecurity)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table %s has row-level security, which %s would bypass",
						RelationGetRelationName(rel), what),
				 errdetail("recoverable_msg writes this table directly, without the executor."),
				 errhint("Drop the trigger or disable row-level security on the extension's tables.")));
}

/*
 * Refuses (55000) an index that is not a plain btree on exactly `columns`,
 * whole (no predicate).  ready_scan.c and instance/line_hint.c walk their
 * indexes by column numbers and take every entry of a range to be in it:
 * an index of another shape (a database made by a development script of
 * 1.1, or changed by hand) would be searched with keys of the wrong types,
 * and a partial one would let a walk pass messages it lacks.
 */
static void
RequireIndexOn(Oid index_oid, const char *index_name, const AttrNumber *columns,
			   int ncolumns, const char *column_names)
{
	Relation	index = index_open(index_oid, AccessShareLock);
	int2vector *keys = &index->rd_index->indkey;
	bool		ok;

	ok = index->rd_rel->relam == BTREE_AM_OID &&
		RelationGetIndexPredicate(index) == NIL &&
		index->rd_index->indnkeyatts == ncolumns;
	for (int i = 0; ok && i < ncolumns; i++)
		ok = keys->values[i] == columns[i];
	index_close(index, AccessShareLock);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("index rmsg.%s is not on (%s)", index_name, column_names),
				 errhint("Reinstall the extension, or recreate the index as its script does.")));
}

/* message_ready_idx, which ready_scan.c walks. */
static void
CheckReadyIndex(const RmsgRelations *r)
{
	AttrNumber	columns[] = {r->att_queue_id, r->att_priority, r->att_visible_at, r->att_msg_id};

	RequireIndexOn(r->message_ready_idx, "message_ready_idx", columns, lengthof(columns),
				   "queue_id, priority, visible_at, msg_id");
}

/* instance_message_line_idx, which instance/line_hint.c walks. */
static void
CheckLineIndex(const RmsgRelations *r)
{
	Relation	rel = table_open(r->instance_message, AccessShareLock);
	AttrNumber	columns[] = {AttnumOf(rel, "instance_id"), AttnumOf(rel, "msg_id")};

	table_close(rel, AccessShareLock);
	RequireIndexOn(r->instance_message_line_idx, "instance_message_line_idx", columns,
				   lengthof(columns), "instance_id, msg_id");
}

/*
 * Our tables' OIDs and attribute numbers, looked up again after any
 * relcache invalidation.  Also the check that the SQL objects are of the
 * version this library needs, and that nobody added a trigger to our
 * tables: every SQL-callable function passes here first (RmsgEnter).
 */
const RmsgRelations *
RmsgGetRelations(void)
{
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(RelationsInvalidate, (Datum) 0);
		callback_registered = true;
	}
	if (!relations_valid)
	{
		Oid			namespace;
		Relation	rel;
		MemoryContext old;

		/*
		 * The catalog can be read only in a transaction; a caller outside
		 * one (the worker between its transactions) would crash the
		 * server.  Such callers use what they looked up in a transaction.
		 */
		if (!IsTransactionState())
			elog(ERROR, "recoverable_msg looked up its tables outside a transaction");
		CheckInstalledVersion();
		namespace = get_namespace_oid("rmsg", false);
		RefuseTriggers(namespace);
		relations.namespace = namespace;
		relations.message = RelidOf(namespace, "message");
		relations.message_ready_idx = RelidOf(namespace, "message_ready_idx");
		relations.message_pkey = RelidOf(namespace, "message_pkey");
		relations.msg_id_seq = RelidOf(namespace, "msg_id_seq");
		relations.message_payload_idx = RelidOf(namespace, "message_payload_idx");
		relations.message_group_idx = RelidOf(namespace, "message_group_idx");
		relations.lease = RelidOf(namespace, "lease");
		relations.lease_pkey = RelidOf(namespace, "lease_pkey");
		relations.payload = RelidOf(namespace, "payload");
		relations.payload_pkey = RelidOf(namespace, "payload_pkey");
		relations.payload_hash_idx = RelidOf(namespace, "payload_hash_idx");
		relations.payload_id_seq = RelidOf(namespace, "payload_id_seq");
		relations.instance = RelidOf(namespace, "instance");
		relations.instance_message = RelidOf(namespace, "instance_message");
		relations.instance_message_line_idx = RelidOf(namespace, "instance_message_line_idx");
		relations.queue = RelidOf(namespace, "queue");
		relations.caller = RelidOf(namespace, "caller");

		rel = table_open(relations.message, AccessShareLock);
		relations.owner = rel->rd_rel->relowner;
		relations.att_msg_id = AttnumOf(rel, "msg_id");
		relations.att_queue_id = AttnumOf(rel, "queue_id");
		relations.att_visible_at = AttnumOf(rel, "visible_at");
		relations.att_enqueued_at = AttnumOf(rel, "enqueued_at");
		relations.att_payload_size = AttnumOf(rel, "payload_size");
		relations.att_payload_id = AttnumOf(rel, "payload_id");
		relations.att_headers = AttnumOf(rel, "headers");
		relations.att_inline_data = AttnumOf(rel, "inline_data");
		relations.att_group_id = AttnumOf(rel, "group_id");
		relations.att_priority = AttnumOf(rel, "priority");
		table_close(rel, NoLock);
		CheckReadyIndex(&relations);
		CheckLineIndex(&relations);

		rel = table_open(relations.lease, AccessShareLock);
		relations.att_lease_msg_id = AttnumOf(rel, "msg_id");
		relations.att_lease_deliveries = AttnumOf(rel, "deliveries");
		relations.att_lease_until = AttnumOf(rel, "lease_until");
		table_close(rel, NoLock);

		rel = table_open(relations.payload, AccessShareLock);
		relations.att_payload_payload_id = AttnumOf(rel, "payload_id");
		relations.att_payload_hash = AttnumOf(rel, "hash");
		relations.att_payload_data = AttnumOf(rel, "data");
		table_close(rel, NoLock);

		/*
		 * pg_catalog, then our schema, and nothing else: not even pg_temp,
		 * which would otherwise be searched first for types.
		 */
		old = MemoryContextSwitchTo(TopMemoryContext);
		if (relations.search_path != NULL)
		{
			list_free(relations.search_path->schemas);
			pfree(relations.search_path);
		}
		relations.search_path = palloc0(sizeof(OverrideSearchPath));
		relations.search_path->schemas = list_make2_oid(PG_CATALOG_NAMESPACE, namespace);
		relations.search_path->addCatalog = false;
		relations.search_path->addTemp = false;
		MemoryContextSwitchTo(old);

		relations_valid = true;
	}
	return &relations;
}
