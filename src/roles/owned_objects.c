/*-------------------------------------------------------------------------
 *
 * owned_objects.c
 *	  Roles that own or were granted the extension's objects: DROP ROLE,
 *	  REASSIGN OWNED and DROP OWNED (utility_hook.c calls these).
 *
 * PostgreSQL refuses to drop a role that owns objects or holds privileges,
 * and offers REASSIGN OWNED and DROP OWNED, run in each database, to hand
 * them on or remove them.  Our owners and privileges live in our own
 * catalog rows (core/privileges.c), which PostgreSQL does not know of, so
 * we do the same for them in the database the statement runs in.  Left
 * alone, a dropped role's OID would stay in an owner column or an aclitem,
 * naming no role (or, once OIDs wrap around, some later role), and a dump
 * would carry it as a bare number.
 *
 *	DROP ROLE		   refused while the role owns a queue, an instance or a
 *					   component, holds a privilege on one, or is a handler's
 *					   role, in this database;
 *	REASSIGN OWNED	   gives what the role owns, and the handlers that run as
 *					   it, to the new role;
 *	DROP OWNED		   revokes the role's privileges, removes the handlers that
 *					   run as it (of queues, instance prefixes and callees),
 *					   and drops what it owns: queues with their messages,
 *					   instances with theirs, components with their logs,
 *					   the replies they keep as callees and their handlers,
 *					   and their entries in the called-component table (so
 *					   that a component made later under the name starts
 *					   afresh).
 *
 * Each does nothing in a database without the extension, or with it at
 * another version than the library's.
 *
 * Locks: the catalog rows an owner or privilege change rewrites are locked
 * FOR UPDATE first, as grant and revoke lock them (core/privileges.c).  A
 * queue is dropped under its name lock taken exclusively, an instance
 * under both of its name locks, as drop_queue and drop_instance take them
 * (core/locks.h lists them all).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "contract/contract.h"
#include "queue/queue.h"
#include "roles/roles.h"
#include "worker/worker.h"

/* $1 role: what refers to it, one line each */
static RmsgPlan references_plan = {
	"SELECT what FROM ("
	" SELECT 1 AS o, 'owner of queue ' || name AS what FROM rmsg.queue WHERE owner = $1"
	" UNION ALL SELECT 2, 'owner of instance ' || name FROM rmsg.instance WHERE owner = $1"
	" UNION ALL SELECT 3, 'owner of component ' || name FROM rmsg.component WHERE owner = $1"
	" UNION ALL SELECT 4, 'privileges for queue ' || name FROM rmsg.queue"
	"  WHERE EXISTS (SELECT 1 FROM aclexplode(acl) a WHERE a.grantee = $1)"
	" UNION ALL SELECT 5, 'privileges for instance ' || name FROM rmsg.instance"
	"  WHERE EXISTS (SELECT 1 FROM aclexplode(acl) a WHERE a.grantee = $1)"
	" UNION ALL SELECT 6, 'privileges for component ' || name FROM rmsg.component"
	"  WHERE EXISTS (SELECT 1 FROM aclexplode(acl) a WHERE a.grantee = $1)"
	" UNION ALL SELECT 7, 'handler of queue ' || q.name"
	"  FROM rmsg.subscription s JOIN rmsg.queue q USING (queue_id) WHERE s.owner = $1"
	" UNION ALL SELECT 8, 'handler of instance prefix ''' || prefix || ''''"
	"  FROM rmsg.instance_handler WHERE owner = $1"
	" UNION ALL SELECT 9, 'handler of callee ' || callee"
	"  FROM rmsg.callee_handler WHERE owner = $1"
	") r ORDER BY o, what LIMIT 20",
	1, {OIDOID}
};

/* What each kind of object keeps: its table, and how to find and change rows. */
typedef struct OwnedTable
{
	RmsgPlan	owned;			/* $1 role -> name, acl, locked */
	RmsgPlan	granted;		/* $1 role -> name, acl of rows it was granted on, locked */
	RmsgPlan	set_owner;		/* $1 name, $2 owner, $3 acl */
	RmsgPlan	set_acl;		/* $1 name, $2 acl */
} OwnedTable;

#define OWNED_TABLE(table) { \
	{"SELECT name, acl FROM rmsg." table " WHERE owner = $1 ORDER BY name FOR UPDATE", \
	 1, {OIDOID}}, \
	{"SELECT name, acl FROM rmsg." table \
	 " WHERE EXISTS (SELECT 1 FROM aclexplode(acl) a WHERE a.grantee = $1)" \
	 " ORDER BY name FOR UPDATE", 1, {OIDOID}}, \
	{"UPDATE rmsg." table " SET owner = $2, acl = $3 WHERE name = $1", \
	 3, {TEXTOID, OIDOID, ACLITEMARRAYOID}}, \
	{"UPDATE rmsg." table " SET acl = $2 WHERE name = $1", 2, {TEXTOID, ACLITEMARRAYOID}}, \
}

static OwnedTable owned_tables[] = {
	[RMSG_QUEUE] = OWNED_TABLE("queue"),
	[RMSG_INSTANCE] = OWNED_TABLE("instance"),
	[RMSG_COMPONENT] = OWNED_TABLE("component"),
};

/*
 * $1 old role, $2 new: the handlers that run as the old role now run as
 * the new one, except where the new role already has a handler for the
 * same instance prefix: that one is kept, and the old role's removed.
 */
static RmsgPlan reassign_handlers_plan = {
	"WITH queues AS (UPDATE rmsg.subscription SET owner = $2 WHERE owner = $1),"
	" callees AS (UPDATE rmsg.callee_handler SET owner = $2 WHERE owner = $1),"
	" prefixes AS (UPDATE rmsg.instance_handler h SET owner = $2 WHERE owner = $1"
	"   AND NOT EXISTS (SELECT 1 FROM rmsg.instance_handler n WHERE n.prefix = h.prefix AND n.owner = $2)"
	"   RETURNING prefix)"
	" DELETE FROM rmsg.instance_handler WHERE owner = $1 AND prefix NOT IN (SELECT prefix FROM prefixes)",
	2, {OIDOID, OIDOID}
};

static RmsgPlan drop_handlers_plan = {
	"WITH queues AS (DELETE FROM rmsg.subscription WHERE owner = $1),"
	" callees AS (DELETE FROM rmsg.callee_handler WHERE owner = $1)"
	" DELETE FROM rmsg.instance_handler WHERE owner = $1",
	1, {OIDOID}
};

/* Dropping what a role owns.  $1 the name */
static RmsgPlan drop_queue_plan = {
	"WITH q AS (SELECT queue_id FROM rmsg.queue WHERE name = $1),"
	" live AS (DELETE FROM rmsg.message WHERE queue_id = (SELECT queue_id FROM q) RETURNING msg_id),"
	" leases AS (DELETE FROM rmsg.lease l USING live WHERE l.msg_id = live.msg_id),"
	" dead AS (DELETE FROM rmsg.dead_message WHERE queue_id = (SELECT queue_id FROM q)),"
	" put_keys AS (DELETE FROM rmsg.put_key WHERE queue_id = (SELECT queue_id FROM q))"
	" DELETE FROM rmsg.queue WHERE name = $1 RETURNING queue_id",
	1, {TEXTOID}
};

static RmsgPlan unlink_dead_letters_plan = {
	"UPDATE rmsg.queue SET dead_letter_queue_id = NULL WHERE owner = $1",
	1, {OIDOID}
};

static RmsgPlan drop_instance_plan = {
	"WITH i AS (DELETE FROM rmsg.instance WHERE name = $1 RETURNING instance_id)"
	" DELETE FROM rmsg.instance_message WHERE instance_id = (SELECT instance_id FROM i)",
	1, {TEXTOID}
};

/*
 * A component's own rows go with it: as a caller, its counter and its log
 * of calls; as a callee, the replies it keeps and its handler (whoever
 * registered it: a role that takes the name later must not have its calls
 * served by another role's handler, as that role).  The replies other callees
 * keep for it as their caller are theirs: deleting them would make those
 * callees take a replayed call for a new one and do its work again (and
 * whoever first used a caller's name owns it, on a callee's server too).
 */
static RmsgPlan drop_component_plan = {
	"WITH c AS (DELETE FROM rmsg.component WHERE name = $1),"
	" caller AS (DELETE FROM rmsg.caller WHERE caller = $1),"
	" log AS (DELETE FROM rmsg.call_log WHERE caller = $1),"
	" handler AS (DELETE FROM rmsg.callee_handler WHERE callee = $1)"
	" DELETE FROM rmsg.last_call WHERE callee = $1",
	1, {TEXTOID}
};

/* Whether this database has the extension, at the library's version. */
static bool
ExtensionHere(void)
{
	char	   *version = RmsgInstalledVersion();

	return version != NULL && strcmp(version, RMSG_SQL_VERSION) == 0;
}

/* The list without the items granted to `role`; NULL when nothing is left. */
static Acl *
AclWithout(Acl *acl, Oid role)
{
	int			n = ACL_NUM(acl);
	AclItem    *items = ACL_DAT(acl);
	int			kept = 0;
	Acl		   *result;

	for (int i = 0; i < n; i++)
		if (items[i].ai_grantee != role)
			kept++;
	if (kept == 0)
		return NULL;
	result = make_empty_acl();
	result = (Acl *) repalloc(result, ACL_N_SIZE(kept));
	SET_VARSIZE(result, ACL_N_SIZE(kept));
	ARR_DIMS(result)[0] = kept;
	kept = 0;
	for (int i = 0; i < n; i++)
		if (items[i].ai_grantee != role)
			ACL_DAT(result)[kept++] = items[i];
	return result;
}

/*
 * A row's name and privilege list (NULL: none granted), from the columns
 * name and acl of the current SPI result.
 */
static void
NameAndAcl(uint64 row, char **name, Acl **acl)
{
	bool		isnull;
	Datum		value;

	*name = TextDatumGetCString(RmsgSpiNotNull(row, "name"));
	value = RmsgSpiValue(row, "acl", &isnull);
	*acl = isnull ? NULL : DatumGetAclPCopy(value);
}

/*
 * DROP ROLE: refuses a role the extension's objects in this database still
 * refer to, as PostgreSQL refuses one its own objects refer to.
 */
void
RmsgCheckRoleUnreferenced(Oid role, const char *name)
{
	Datum		arg = ObjectIdGetDatum(role);
	StringInfoData detail;

	if (!ExtensionHere())
		return;
	RmsgSpiConnect();
	RmsgPlanExecute(&references_plan, &arg, NULL, true, 0);
	if (SPI_processed == 0)
	{
		RmsgSpiFinish();
		return;
	}
	initStringInfo(&detail);
	for (uint64 i = 0; i < SPI_processed; i++)
		appendStringInfo(&detail, "%s%s", i > 0 ? "\n" : "",
						 RmsgSpiText(i, "what"));
	ereport(ERROR,
			(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
			 errmsg("role \"%s\" cannot be dropped because objects of recoverable_msg depend on it", name),
			 errdetail("%s", detail.data),
			 errhint("REASSIGN OWNED BY and DROP OWNED BY, in each database that uses recoverable_msg, hand them on or remove them.")));
}

/* REASSIGN OWNED BY old TO new, for our objects in this database. */
void
RmsgReassignOwned(Oid old_role, Oid new_role)
{
	Datum		roles[2];

	if (!ExtensionHere() || old_role == new_role)
		return;
	RmsgNoteCatalogChange();
	RmsgSpiConnect();
	roles[0] = ObjectIdGetDatum(old_role);
	roles[1] = ObjectIdGetDatum(new_role);
	for (int kind = 0; kind < lengthof(owned_tables); kind++)
	{
		SPITupleTable *rows;
		uint64		nrows;

		RmsgPlanExecute(&owned_tables[kind].owned, roles, NULL, true, 0);
		rows = SPI_tuptable;
		nrows = SPI_processed;
		for (uint64 i = 0; i < nrows; i++)
		{
			Datum		values[3];
			bool		nulls[3] = {false, false, false};
			char	   *name;
			Acl		   *acl;

			SPI_tuptable = rows;
			NameAndAcl(i, &name, &acl);
			values[0] = CStringGetTextDatum(name);
			values[1] = roles[1];
			/* the grants were made by the old owner: now by the new one */
			nulls[2] = (acl == NULL);
			values[2] = acl ? PointerGetDatum(aclnewowner(acl, old_role, new_role)) : (Datum) 0;
			RmsgPlanExecute(&owned_tables[kind].set_owner, values, nulls, true, 0);
		}
	}
	RmsgPlanExecute(&reassign_handlers_plan, roles, NULL, true, 0);
	RmsgSpiFinish();
	RmsgHandlersChangedAtCommit();
}

/*
 * DROP OWNED BY role, for our objects in this database: its privileges,
 * the handlers that run as it, and what it owns.
 */
void
RmsgDropOwned(Oid role)
{
	Datum		arg = ObjectIdGetDatum(role);

	if (!ExtensionHere())
		return;
	RmsgNoteCatalogChange();
	RmsgSpiConnect();

	/* privileges granted to it */
	for (int kind = 0; kind < lengthof(owned_tables); kind++)
	{
		SPITupleTable *rows;
		uint64		nrows;

		RmsgPlanExecute(&owned_tables[kind].granted, &arg, NULL, true, 0);
		rows = SPI_tuptable;
		nrows = SPI_processed;
		for (uint64 i = 0; i < nrows; i++)
		{
			Datum		values[2];
			bool		nulls[2] = {false, false};
			char	   *name;
			Acl		   *acl;
			Acl		   *kept;

			SPI_tuptable = rows;
			NameAndAcl(i, &name, &acl);
			kept = AclWithout(acl, role);
			values[0] = CStringGetTextDatum(name);
			values[1] = PointerGetDatum(kept);
			nulls[1] = (kept == NULL);
			RmsgPlanExecute(&owned_tables[kind].set_acl, values, nulls, true, 0);
		}
	}

	/* the handlers that run as it */
	RmsgPlanExecute(&drop_handlers_plan, &arg, NULL, true, 0);

	/*
	 * What it owns.  A queue goes as drop_queue drops it, under its name
	 * lock, so that no put adds to it meanwhile; one that another role's
	 * queue sends dead letters to cannot go (2BP01), as drop_queue refuses.
	 */
	RmsgPlanExecute(&unlink_dead_letters_plan, &arg, NULL, true, 0);
	for (int kind = 0; kind < lengthof(owned_tables); kind++)
	{
		SPITupleTable *rows;
		uint64		nrows;

		RmsgPlanExecute(&owned_tables[kind].owned, &arg, NULL, true, 0);
		rows = SPI_tuptable;
		nrows = SPI_processed;
		for (uint64 i = 0; i < nrows; i++)
		{
			char	   *name;
			Acl		   *acl;
			Datum		name_arg;

			SPI_tuptable = rows;
			NameAndAcl(i, &name, &acl);
			name_arg = CStringGetTextDatum(name);
			switch (kind)
			{
				case RMSG_QUEUE:
					(void) RmsgLockName(RMSG_LOCK_QUEUE_NAME, name, NULL, AccessExclusiveLock, true);
					RmsgRefuseDropOfDeadLetterQueue(name);
					RmsgPlanExecute(&drop_queue_plan, &name_arg, NULL, true, 0);
					if (SPI_processed > 0)
					{
						int32		queue_id = DatumGetInt32(RmsgSpiNotNull(0, "queue_id"));

						RmsgQueueStatsForget(queue_id);
						RmsgReadyHintForget(queue_id);
					}
					break;
				case RMSG_INSTANCE:
					RmsgLockInstance(name, RMSG_LOCK_INSTANCE_ARRIVAL);
					RmsgLockInstance(name, RMSG_LOCK_INSTANCE_TAKE);
					RmsgPlanExecute(&drop_instance_plan, &name_arg, NULL, true, 0);
					RmsgInstanceChanged(name);
					break;
				case RMSG_COMPONENT:
					RmsgPlanExecute(&drop_component_plan, &name_arg, NULL, true, 0);
					RmsgComponentsForget(name);
					break;
			}
		}
	}
	RmsgSpiFinish();
	RmsgHandlersChangedAtCommit();
}
