/*-------------------------------------------------------------------------
 *
 * relations.c
 *	  The OIDs and attribute numbers of our tables, for code that reads
 *	  them directly instead of through SQL.
 *
 * Looked up by name in schema rmsg on first use and kept in backend memory;
 * any relcache invalidation (DROP EXTENSION and CREATE EXTENSION give the
 * tables new OIDs) makes us look them up again.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "catalog/namespace.h"
#include "miscadmin.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "rmsg.h"

static RmsgRelations relations;
static bool relations_valid = false;
static bool callback_registered = false;

static void
RelationsInvalidate(Datum arg, Oid relid)
{
	relations_valid = false;
}

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
 * Direct access skips the executor's permission check, so we make it: the
 * same rights a SQL statement on the table would need, every one of them
 * (pg_class_aclcheck would accept a role holding any one bit of the mask).
 */
void
RmsgCheckPrivilege(Oid relid, AclMode mode)
{
	if (pg_class_aclmask(relid, GetUserId(), mode, ACLMASK_ALL) != mode)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE, get_rel_name(relid));
}

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
		Oid			namespace = get_namespace_oid("rmsg", false);
		Relation	rel;

		relations.message = RelidOf(namespace, "message");
		relations.message_ready_idx = RelidOf(namespace, "message_ready_idx");
		relations.message_pkey = RelidOf(namespace, "message_pkey");
		relations.msg_id_seq = RelidOf(namespace, "msg_id_seq");
		relations.message_payload_idx = RelidOf(namespace, "message_payload_idx");
		relations.payload = RelidOf(namespace, "payload");
		relations.payload_pkey = RelidOf(namespace, "payload_pkey");
		relations.payload_hash_idx = RelidOf(namespace, "payload_hash_idx");
		relations.payload_id_seq = RelidOf(namespace, "payload_id_seq");
		relations.instance = RelidOf(namespace, "instance");

		rel = table_open(relations.message, AccessShareLock);
		relations.att_msg_id = AttnumOf(rel, "msg_id");
		relations.att_queue_id = AttnumOf(rel, "queue_id");
		relations.att_deliveries = AttnumOf(rel, "deliveries");
		relations.att_visible_at = AttnumOf(rel, "visible_at");
		relations.att_lease_until = AttnumOf(rel, "lease_until");
		relations.att_enqueued_at = AttnumOf(rel, "enqueued_at");
		relations.att_payload_size = AttnumOf(rel, "payload_size");
		relations.att_payload_id = AttnumOf(rel, "payload_id");
		relations.att_headers = AttnumOf(rel, "headers");
		relations.att_inline_data = AttnumOf(rel, "inline_data");
		table_close(rel, NoLock);

		rel = table_open(relations.payload, AccessShareLock);
		relations.att_payload_payload_id = AttnumOf(rel, "payload_id");
		relations.att_payload_hash = AttnumOf(rel, "hash");
		relations.att_payload_data = AttnumOf(rel, "data");
		table_close(rel, NoLock);

		relations_valid = true;
	}
	return &relations;
}
