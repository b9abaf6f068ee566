/*-------------------------------------------------------------------------
 *
 * privileges.c
 *	  The extension's own privileges: who may do what with a queue, an
 *	  instance or a component of the committed interaction contract.
 *
 * Applications hold no rights on the extension's tables (our statements
 * run as the tables' owner, kept_plans.c).  Instead each queue, instance
 * and component has an owner, the role that created it (a component: the
 * role that first used its name), and an access control list in its
 * catalog row, an aclitem[] as PostgreSQL keeps for its own objects.  The
 * privileges are stored as PostgreSQL's own privilege bits:
 *
 *	queue		put (INSERT bit)	 get (SELECT bit)		manage (UPDATE bit)
 *	instance	deliver (INSERT)	 receive (SELECT)		manage (UPDATE)
 *	component						 use (SELECT)			manage (UPDATE)
 *				call (EXECUTE)
 *
 * A role holds a privilege when it is a superuser, when it has the
 * privileges of the owner (it is the owner, or a member of the owner's role
 * with INHERIT), or when the list grants it to the role, to a role whose
 * privileges it has, or to PUBLIC: PostgreSQL's own rules (aclmask).  The
 * owner always holds every privilege.  Grants carry no grant option: the
 * manage privilege is what lets a role grant.
 *
 * The rights checked most often (every put, get and ack) come from a
 * backend-local cache of the lists, keyed by object id or name and
 * emptied whenever the catalog generation (shmem.c) moves, which every
 * transaction that creates, drops or grants something does when it ends.
 * A transaction that changed the catalog itself reads the rows instead, so
 * that it sees its own changes.  Without shared memory there is no
 * generation, and every check reads the row.
 *
 * Grants, revokes and owner changes lock the object's catalog row (FOR
 * UPDATE) while they change it, so that two of them never lose each
 * other's change; a role is refused before it waits for that lock, so a
 * role that may not manage an object cannot hold up those who may.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "core/core.h"

PG_FUNCTION_INFO_V1(rmsg_grant_queue);
PG_FUNCTION_INFO_V1(rmsg_revoke_queue);
PG_FUNCTION_INFO_V1(rmsg_grant_instance);
PG_FUNCTION_INFO_V1(rmsg_revoke_instance);
PG_FUNCTION_INFO_V1(rmsg_grant_component);
PG_FUNCTION_INFO_V1(rmsg_revoke_component);
PG_FUNCTION_INFO_V1(rmsg_has_queue_privilege);
PG_FUNCTION_INFO_V1(rmsg_has_queue_privilege_role);
PG_FUNCTION_INFO_V1(rmsg_has_instance_privilege);
PG_FUNCTION_INFO_V1(rmsg_has_instance_privilege_role);
PG_FUNCTION_INFO_V1(rmsg_has_component_privilege);
PG_FUNCTION_INFO_V1(rmsg_has_component_privilege_role);
PG_FUNCTION_INFO_V1(rmsg_alter_queue_owner);
PG_FUNCTION_INFO_V1(rmsg_alter_instance_owner);
PG_FUNCTION_INFO_V1(rmsg_alter_component_owner);

typedef struct RightName
{
	const char *name;
	AclMode		bit;
} RightName;

static const RightName queue_rights[] = {
	{"put", RMSG_PUT}, {"get", RMSG_GET}, {"manage", RMSG_MANAGE}, {NULL, 0}
};
static const RightName instance_rights[] = {
	{"deliver", RMSG_DELIVER}, {"receive", RMSG_RECEIVE}, {"manage", RMSG_MANAGE}, {NULL, 0}
};
static const RightName component_rights[] = {
	{"use", RMSG_USE}, {"call", RMSG_CALL}, {"manage", RMSG_MANAGE}, {NULL, 0}
};

/* What differs between the three kinds of object. */
typedef struct KindInfo
{
	const char *noun;			/* in messages */
	const char *grant_function;
	const char *revoke_function;
	const RightName *rights;
	RmsgPlan	by_name;		/* $1 name -> id, owner, acl */
	RmsgPlan	by_id;			/* $1 id -> name, owner, acl */
	RmsgPlan	lock;			/* $1 name -> owner, acl, locked FOR UPDATE */
	RmsgPlan	update;			/* $1 name, $2 acl */
	RmsgPlan	set_owner;		/* $1 name, $2 owner, $3 acl */
} KindInfo;

static KindInfo kinds[] = {
	[RMSG_QUEUE] = {
		"queue", "rmsg.grant_queue", "rmsg.revoke_queue", queue_rights,
		{"SELECT queue_id::bigint AS id, owner::oid, acl FROM rmsg.queue WHERE name = $1", 1, {TEXTOID}},
		{"SELECT name, owner::oid, acl FROM rmsg.queue WHERE queue_id = $1", 1, {INT8OID}},
		{"SELECT owner::oid, acl FROM rmsg.queue WHERE name = $1 FOR UPDATE", 1, {TEXTOID}},
		{"UPDATE rmsg.queue SET acl = $2 WHERE name = $1", 2, {TEXTOID, ACLITEMARRAYOID}},
		{"UPDATE rmsg.queue SET owner = $2, acl = $3 WHERE name = $1", 3, {TEXTOID, OIDOID, ACLITEMARRAYOID}},
	},
	[RMSG_INSTANCE] = {
		"instance", "rmsg.grant_instance", "rmsg.revoke_instance", instance_rights,
		{"SELECT instance_id AS id, owner::oid, acl FROM rmsg.instance WHERE name = $1", 1, {TEXTOID}},
		{"SELECT name, owner::oid, acl FROM rmsg.instance WHERE instance_id = $1", 1, {INT8OID}},
		{"SELECT owner::oid, acl FROM rmsg.instance WHERE name = $1 FOR UPDATE", 1, {TEXTOID}},
		{"UPDATE rmsg.instance SET acl = $2 WHERE name = $1", 2, {TEXTOID, ACLITEMARRAYOID}},
		{"UPDATE rmsg.instance SET owner = $2, acl = $3 WHERE name = $1", 3, {TEXTOID, OIDOID, ACLITEMARRAYOID}},
	},
	[RMSG_COMPONENT] = {
		"component", "rmsg.grant_component", "rmsg.revoke_component", component_rights,
		/* components are known by name only: their id is always 0 */
		{"SELECT 0::bigint AS id, owner::oid, acl FROM rmsg.component WHERE name = $1", 1, {TEXTOID}},
		{NULL, 0, {InvalidOid}},
		{"SELECT owner::oid, acl FROM rmsg.component WHERE name = $1 FOR UPDATE", 1, {TEXTOID}},
		{"UPDATE rmsg.component SET acl = $2 WHERE name = $1", 2, {TEXTOID, ACLITEMARRAYOID}},
		{"UPDATE rmsg.component SET owner = $2, acl = $3 WHERE name = $1", 3, {TEXTOID, OIDOID, ACLITEMARRAYOID}},
	},
};

static void ReportUnknownRight(RmsgObjectKind kind, const char *word) pg_attribute_noreturn();
static void ReportNoSuchObject(RmsgObjectKind kind, const char *name) pg_attribute_noreturn();
static void ReportNotOwner(RmsgObjectKind kind, const char *name) pg_attribute_noreturn();

/* Every privilege of a kind. */
static AclMode
AllRights(RmsgObjectKind kind)
{
	AclMode		all = 0;

	for (const RightName *r = kinds[kind].rights; r->name != NULL; r++)
		all |= r->bit;
	return all;
}

/*
 * The privileges `role` holds on an object with this owner and list
 * (NULL: nothing granted beyond the owner).
 */
AclMode
RmsgRightsOf(RmsgObjectKind kind, Oid role, Oid owner, const Acl *acl)
{
	if (has_privs_of_role(role, owner))	/* superusers too */
		return AllRights(kind);
	if (acl == NULL)
		return 0;
	return aclmask(acl, role, owner, AllRights(kind), ACLMASK_ALL);
}

/*
 * "put", "get and manage", "put, get and manage" for the bits of `rights`,
 * for messages; *count is how many.
 */
static char *
RightsText(RmsgObjectKind kind, AclMode rights, int *count)
{
	StringInfoData buf;
	int			total = 0;
	int			n = 0;

	for (const RightName *r = kinds[kind].rights; r->name != NULL; r++)
		if ((rights & r->bit) != 0)
			total++;
	initStringInfo(&buf);
	for (const RightName *r = kinds[kind].rights; r->name != NULL; r++)
	{
		if ((rights & r->bit) == 0)
			continue;
		n++;
		appendStringInfo(&buf, "%s%s",
						 n == 1 ? "" : (n == total ? " and " : ", "), r->name);
	}
	if (count != NULL)
		*count = total;
	return buf.data;
}

/*
 * The detail of a "permission denied" error: which privileges are missing.
 * Called inside ereport, as PostgreSQL's own errdetail helpers are.
 */
static int
ErrdetailRightsNeeded(RmsgObjectKind kind, AclMode missing)
{
	int			count;
	char	   *names = RightsText(kind, missing, &count);

	if (count == 1)
		return errdetail("The %s privilege is needed.", names);
	return errdetail("The %s privileges are needed.", names);
}

/*
 * The error for a role that lacks `needed` on the object.  One message per
 * kind of object, so that each is a whole sentence.
 */
void
RmsgRequireRights(RmsgObjectKind kind, const char *name, AclMode held,
				  AclMode needed)
{
	AclMode		missing = needed & ~held;

	if (missing == 0)
		return;
	switch (kind)
	{
		case RMSG_QUEUE:
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for queue \"%s\"", name),
					 ErrdetailRightsNeeded(kind, missing),
					 errhint("Its owner, or a role with the manage privilege on it, can grant it with %s.",
							 "rmsg.grant_queue")));
			break;
		case RMSG_INSTANCE:
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for instance \"%s\"", name),
					 ErrdetailRightsNeeded(kind, missing),
					 errhint("Its owner, or a role with the manage privilege on it, can grant it with %s.",
							 "rmsg.grant_instance")));
			break;
		case RMSG_COMPONENT:
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for component \"%s\"", name),
					 ErrdetailRightsNeeded(kind, missing),
					 errhint("Its owner, or a role with the manage privilege on it, can grant it with %s.",
							 "rmsg.grant_component")));
			break;
	}
	elog(ERROR, "unrecognized object kind: %d", (int) kind);
}

/*
 * The error for a privilege name that the kind does not have.  The hints
 * list each kind's privileges as queue_rights, instance_rights and
 * component_rights above do: change them together.
 */
static void
ReportUnknownRight(RmsgObjectKind kind, const char *word)
{
	switch (kind)
	{
		case RMSG_QUEUE:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unrecognized queue privilege \"%s\"", word),
					 errhint("The queue privileges are put, get and manage, or all of them: all.")));
			break;
		case RMSG_INSTANCE:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unrecognized instance privilege \"%s\"", word),
					 errhint("The instance privileges are deliver, receive and manage, or all of them: all.")));
			break;
		case RMSG_COMPONENT:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unrecognized component privilege \"%s\"", word),
					 errhint("The component privileges are use, call and manage, or all of them: all.")));
			break;
	}
	elog(ERROR, "unrecognized object kind: %d", (int) kind);
}

/*
 * Privileges named in text: "put", "get, manage", "all"; case and spaces
 * around the names do not matter.
 */
AclMode
RmsgParseRights(RmsgObjectKind kind, const char *text)
{
	AclMode		rights = 0;
	char	   *copy = pstrdup(text);
	char	   *next = copy;

	for (;;)
	{
		char	   *comma = strchr(next, ',');
		char	   *word;
		char	   *end;
		bool		known = false;

		if (comma != NULL)
			*comma = '\0';
		word = next;
		while (*word == ' ' || *word == '\t')
			word++;
		end = word + strlen(word);
		while (end > word && (end[-1] == ' ' || end[-1] == '\t'))
			*--end = '\0';

		if (pg_strcasecmp(word, "all") == 0)
		{
			rights |= AllRights(kind);
			known = true;
		}
		for (const RightName *r = kinds[kind].rights; !known && r->name != NULL; r++)
		{
			if (pg_strcasecmp(word, r->name) == 0)
			{
				rights |= r->bit;
				known = true;
			}
		}
		if (!known)
			ReportUnknownRight(kind, word);
		if (comma == NULL)
			break;
		next = comma + 1;
	}
	pfree(copy);
	return rights;
}

/*
 * The cache of lists.  An entry is keyed by the object's kind and either
 * its id (queues and instances) or its name; a row read is stored under
 * both keys.  The whole cache goes when the catalog generation moves or
 * the relcache is invalidated (DROP EXTENSION, say).
 */
typedef struct AclKey
{
	int32		kind;
	int64		id;				/* 0 when keyed by name */
	char		name[NAMEDATALEN];	/* zero-padded; empty when keyed by id */
} AclKey;

typedef struct AclEntry
{
	AclKey		key;
	bool		exists;
	int64		id;
	char		name[NAMEDATALEN];
	Oid			owner;
	Acl		   *acl;			/* in acl_context, NULL when none */
} AclEntry;

static HTAB *acl_cache = NULL;
static MemoryContext acl_context = NULL;
static uint64 acl_generation = 0;
static bool acl_callback_registered = false;

/* Relcache callback: our tables may be gone or new (DROP EXTENSION). */
static void
AclCacheInvalidate(Datum arg, Oid relid)
{
	acl_generation = 0;			/* no generation is 0: reset on next use */
}

/* The cache, emptied first if it is out of date; NULL when it may not be used. */
static HTAB *
AclCache(void)
{
	uint64		generation = RmsgCatalogGeneration();
	HASHCTL		ctl;

	if (generation == 0 || RmsgCatalogChangedHere())
		return NULL;
	if (!acl_callback_registered)
	{
		CacheRegisterRelcacheCallback(AclCacheInvalidate, (Datum) 0);
		acl_callback_registered = true;
	}
	if (acl_cache != NULL && acl_generation == generation)
		return acl_cache;

	if (acl_context == NULL)
		acl_context = AllocSetContextCreate(CacheMemoryContext,
											"recoverable_msg rights",
											ALLOCSET_SMALL_SIZES);
	if (acl_cache != NULL)
		hash_destroy(acl_cache);
	MemoryContextReset(acl_context);
	ctl.keysize = sizeof(AclKey);
	ctl.entrysize = sizeof(AclEntry);
	ctl.hcxt = acl_context;
	acl_cache = hash_create("recoverable_msg rights", 256, &ctl,
							HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	acl_generation = generation;
	return acl_cache;
}

/* The key for an object by name, or by id when name is NULL; zero-padded. */
static void
MakeAclKey(AclKey *key, RmsgObjectKind kind, int64 id, const char *name)
{
	memset(key, 0, sizeof(*key));
	key->kind = kind;
	if (name != NULL)
		strlcpy(key->name, name, NAMEDATALEN);
	else
		key->id = id;
}

/* Stores what a row said under one key. */
static void
StoreAcl(HTAB *cache, const AclKey *key, const AclEntry *from)
{
	AclEntry   *entry = hash_search(cache, key, HASH_ENTER, NULL);

	entry->exists = from->exists;
	entry->id = from->id;
	memcpy(entry->name, from->name, NAMEDATALEN);
	entry->owner = from->owner;
	entry->acl = NULL;
	if (from->acl != NULL)
	{
		entry->acl = MemoryContextAlloc(acl_context, VARSIZE(from->acl));
		memcpy(entry->acl, from->acl, VARSIZE(from->acl));
	}
}

/*
 * What the catalog says of an object: its id, name, owner and list
 * (pointing into `out`'s own memory, or the cache's, valid until the next
 * call here).  False when there is no such object.  Runs its own SPI
 * connection when it must read the row.
 */
static bool
LookupAcl(RmsgObjectKind kind, int64 id, const char *name, AclEntry *out)
{
	HTAB	   *cache = AclCache();
	AclKey		key;
	Datum		arg;
	bool		isnull;
	Datum		value;

	/*
	 * No object has a longer name (RmsgCheckName); the cache's key would
	 * cut it short and answer, or remember, for another name.
	 */
	if (name != NULL && strlen(name) > RMSG_NAME_MAX)
	{
		memset(out, 0, sizeof(*out));
		return false;
	}
	MakeAclKey(&key, kind, id, name);
	if (cache != NULL)
	{
		AclEntry   *entry = hash_search(cache, &key, HASH_FIND, NULL);

		if (entry != NULL)
		{
			*out = *entry;
			return entry->exists;
		}
	}

	memset(out, 0, sizeof(*out));
	RmsgSpiConnect();
	if (name != NULL)
	{
		arg = CStringGetTextDatum(name);
		RmsgPlanExecute(&kinds[kind].by_name, &arg, NULL, true, 1);
	}
	else
	{
		arg = Int64GetDatum(id);
		RmsgPlanExecute(&kinds[kind].by_id, &arg, NULL, true, 1);
	}
	out->exists = SPI_processed > 0;
	if (out->exists)
	{
		if (name != NULL)
		{
			out->id = DatumGetInt64(RmsgSpiNotNull(0, "id"));
			strlcpy(out->name, name, NAMEDATALEN);
		}
		else
		{
			out->id = id;
			text_to_cstring_buffer(DatumGetTextPP(RmsgSpiNotNull(0, "name")),
								   out->name, NAMEDATALEN);
		}
		out->owner = DatumGetObjectId(RmsgSpiNotNull(0, "owner"));
		value = RmsgSpiValue(0, "acl", &isnull);
		if (!isnull)
		{
			/* out of SPI's memory, which goes at SPI_finish */
			Acl		   *acl = DatumGetAclP(value);

			out->acl = MemoryContextAlloc(CurTransactionContext, VARSIZE(acl));
			memcpy(out->acl, acl, VARSIZE(acl));
		}
	}
	RmsgSpiFinish();

	if (cache != NULL)
	{
		StoreAcl(cache, &key, out);
		if (out->exists && kind != RMSG_COMPONENT)
		{
			/* the same row under its other key */
			AclKey		other;

			MakeAclKey(&other, kind, out->id, name != NULL ? NULL : out->name);
			StoreAcl(cache, &other, out);
		}
	}
	return out->exists;
}

/*
 * The privileges `role` holds on the object named by id (queues,
 * instances) or by name; false when there is no such object.  *owner, when
 * not NULL, is set to its owner.
 */
bool
RmsgObjectRights(RmsgObjectKind kind, int64 id, const char *name, Oid role,
				 AclMode *rights, Oid *owner)
{
	AclEntry	entry;

	if (!LookupAcl(kind, id, name, &entry))
		return false;
	*rights = RmsgRightsOf(kind, role, entry.owner, entry.acl);
	if (owner != NULL)
		*owner = entry.owner;
	return true;
}

/*
 * Whether the current role may see what the counters show of an object:
 * it holds one of the privileges `any_of` on it, or reads all statistics
 * (pg_read_all_stats, as PostgreSQL's own statistics views have it).
 */
bool
RmsgMaySee(RmsgObjectKind kind, int64 id, const char *name, AclMode any_of)
{
	AclMode		rights;

	if (has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS))
		return true;
	return RmsgObjectRights(kind, id, name, GetUserId(), &rights, NULL) &&
		(rights & any_of) != 0;
}

/* The error for an object that a grant, revoke or owner change names. */
static void
ReportNoSuchObject(RmsgObjectKind kind, const char *name)
{
	switch (kind)
	{
		case RMSG_QUEUE:
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("queue \"%s\" does not exist", name)));
			break;
		case RMSG_INSTANCE:
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("instance \"%s\" does not exist", name)));
			break;
		case RMSG_COMPONENT:
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("component \"%s\" does not exist", name)));
			break;
	}
	elog(ERROR, "unrecognized object kind: %d", (int) kind);
}

/*
 * The list with `rights` granted to or revoked from `grantee`.  The grantor
 * recorded is the owner, as PostgreSQL records when a superuser grants.
 */
static Acl *
ChangeAcl(Acl *old, Oid owner, Oid grantee, AclMode rights, bool grant)
{
	AclItem		item;

	item.ai_grantee = grantee;
	item.ai_grantor = owner;
	ACLITEM_SET_PRIVS_GOPTIONS(item, rights, ACL_NO_RIGHTS);
	return aclupdate(old != NULL ? old : make_empty_acl(), &item,
					 grant ? ACL_MODECHG_ADD : ACL_MODECHG_DEL, owner,
					 DROP_RESTRICT);
}

/*
 * rmsg.grant_queue and its kin: (object text, role regrole, privileges
 * text).  The role granting must hold manage on the object.  The row is
 * locked while its list is changed, so two grants never lose each other.
 */
static void
GrantOrRevoke(FunctionCallInfo fcinfo, RmsgObjectKind kind, bool grant)
{
	KindInfo   *info = &kinds[kind];
	char	   *name;
	Oid			grantee;
	AclMode		rights;
	Datum		values[2];
	bool		isnull;
	Oid			owner;
	Acl		   *acl = NULL;
	Datum		value;

	RmsgEnter(grant ? info->grant_function : info->revoke_function, true);
	name = RmsgTextArg(fcinfo, 0, info->noun);
	RmsgCheckName(name, info->noun);
	RmsgRequireArg(fcinfo, 1, "role");
	grantee = PG_GETARG_OID(1);
	if (!OidIsValid(grantee))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("role must name a role")));
	rights = RmsgParseRights(kind, RmsgTextArg(fcinfo, 2, "privileges"));

	/*
	 * The grantee is locked first, before anything a drop_queue or a put
	 * could wait for: if a DROP ROLE of it is open, only this grant waits.
	 */
	if (grant)
		RmsgLockRole(grantee);

	/* a queue's name lock, as a put takes it: a drop waits for us */
	if (kind == RMSG_QUEUE)
		(void) RmsgLockName(RMSG_LOCK_QUEUE_NAME, name, NULL, AccessShareLock, true);

	/*
	 * Checked once before the row lock, so that a role that may not grant
	 * cannot hold up those who use the object, and again on the row read
	 * under the lock.
	 */
	{
		AclMode		held;

		if (RmsgObjectRights(kind, 0, name, GetUserId(), &held, NULL))
			RmsgRequireRights(kind, name, held, RMSG_MANAGE);
	}

	RmsgNoteCatalogChange();
	RmsgSpiConnect();
	values[0] = CStringGetTextDatum(name);
	RmsgPlanExecute(&info->lock, values, NULL, true, 1);
	if (SPI_processed == 0)
		ReportNoSuchObject(kind, name);
	owner = DatumGetObjectId(RmsgSpiNotNull(0, "owner"));
	value = RmsgSpiValue(0, "acl", &isnull);
	if (!isnull)
		acl = DatumGetAclP(value);
	RmsgRequireRights(kind, name, RmsgRightsOf(kind, GetUserId(), owner, acl),
					  RMSG_MANAGE);

	acl = ChangeAcl(acl, owner, grantee, rights, grant);
	values[1] = PointerGetDatum(acl);
	RmsgPlanExecute(&info->update, values, NULL, true, 0);
	RmsgSpiFinish();
}

Datum
rmsg_grant_queue(PG_FUNCTION_ARGS)
{
	GrantOrRevoke(fcinfo, RMSG_QUEUE, true);
	PG_RETURN_VOID();
}

Datum
rmsg_revoke_queue(PG_FUNCTION_ARGS)
{
	GrantOrRevoke(fcinfo, RMSG_QUEUE, false);
	PG_RETURN_VOID();
}

Datum
rmsg_grant_instance(PG_FUNCTION_ARGS)
{
	GrantOrRevoke(fcinfo, RMSG_INSTANCE, true);
	PG_RETURN_VOID();
}

Datum
rmsg_revoke_instance(PG_FUNCTION_ARGS)
{
	GrantOrRevoke(fcinfo, RMSG_INSTANCE, false);
	PG_RETURN_VOID();
}

Datum
rmsg_grant_component(PG_FUNCTION_ARGS)
{
	GrantOrRevoke(fcinfo, RMSG_COMPONENT, true);
	PG_RETURN_VOID();
}

Datum
rmsg_revoke_component(PG_FUNCTION_ARGS)
{
	GrantOrRevoke(fcinfo, RMSG_COMPONENT, false);
	PG_RETURN_VOID();
}

/*
 * rmsg.has_queue_privilege([role,] queue, privilege) and its kin, as
 * PostgreSQL's has_table_privilege: true when the role holds any of the
 * privileges named; NULL when there is no such object.
 */
static Datum
HasPrivilege(FunctionCallInfo fcinfo, RmsgObjectKind kind, bool with_role)
{
	int			first = with_role ? 1 : 0;
	Oid			role;
	char	   *name;
	AclMode		wanted;
	AclMode		rights;

	RmsgEnter("rmsg.has_privilege", false);
	if (with_role && PG_ARGISNULL(0))
		PG_RETURN_NULL();
	role = with_role ? PG_GETARG_OID(0) : GetUserId();
	name = RmsgTextArg(fcinfo, first, kinds[kind].noun);
	wanted = RmsgParseRights(kind, RmsgTextArg(fcinfo, first + 1, "privilege"));
	if (!RmsgObjectRights(kind, 0, name, role, &rights, NULL))
		PG_RETURN_NULL();
	PG_RETURN_BOOL((rights & wanted) != 0);
}

Datum
rmsg_has_queue_privilege(PG_FUNCTION_ARGS)
{
	return HasPrivilege(fcinfo, RMSG_QUEUE, false);
}

Datum
rmsg_has_queue_privilege_role(PG_FUNCTION_ARGS)
{
	return HasPrivilege(fcinfo, RMSG_QUEUE, true);
}

Datum
rmsg_has_instance_privilege(PG_FUNCTION_ARGS)
{
	return HasPrivilege(fcinfo, RMSG_INSTANCE, false);
}

Datum
rmsg_has_instance_privilege_role(PG_FUNCTION_ARGS)
{
	return HasPrivilege(fcinfo, RMSG_INSTANCE, true);
}

Datum
rmsg_has_component_privilege(PG_FUNCTION_ARGS)
{
	return HasPrivilege(fcinfo, RMSG_COMPONENT, false);
}

Datum
rmsg_has_component_privilege_role(PG_FUNCTION_ARGS)
{
	return HasPrivilege(fcinfo, RMSG_COMPONENT, true);
}

/* The error for a role that must own the object and does not. */
static void
ReportNotOwner(RmsgObjectKind kind, const char *name)
{
	switch (kind)
	{
		case RMSG_QUEUE:
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("must be owner of queue \"%s\"", name)));
			break;
		case RMSG_INSTANCE:
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("must be owner of instance \"%s\"", name)));
			break;
		case RMSG_COMPONENT:
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("must be owner of component \"%s\"", name)));
			break;
	}
	elog(ERROR, "unrecognized object kind: %d", (int) kind);
}

/*
 * rmsg.alter_queue_owner(queue, owner) and its kin, as ALTER ... OWNER TO:
 * the object's owner (or a role with its privileges) gives it to a role it
 * is a member of; superusers to anyone.  The grants in its list were made
 * by the old owner, and now are by the new one.
 */
static void
AlterOwner(FunctionCallInfo fcinfo, RmsgObjectKind kind, const char *function)
{
	KindInfo   *info = &kinds[kind];
	char	   *name;
	Oid			new_owner;
	Oid			owner;
	Acl		   *acl = NULL;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	bool		isnull;
	Datum		value;

	RmsgEnter(function, true);
	name = RmsgTextArg(fcinfo, 0, info->noun);
	RmsgCheckName(name, info->noun);
	RmsgRequireArg(fcinfo, 1, "owner");
	new_owner = PG_GETARG_OID(1);
	if (!OidIsValid(new_owner))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("owner must name a role")));

	/*
	 * Checked once before the row lock, so that a role that may not change
	 * the owner cannot hold up those who use the object, and again on the
	 * row read under the lock.
	 */
	{
		AclMode		rights;
		Oid			cached_owner;

		if (RmsgObjectRights(kind, 0, name, GetUserId(), &rights, &cached_owner) &&
			!has_privs_of_role(GetUserId(), cached_owner))
			ReportNotOwner(kind, name);
	}

	/* the new owner is locked before the row, as a grantee is (GrantOrRevoke) */
	check_is_member_of_role(GetUserId(), new_owner);
	RmsgLockRole(new_owner);

	RmsgNoteCatalogChange();
	RmsgSpiConnect();
	values[0] = CStringGetTextDatum(name);
	RmsgPlanExecute(&info->lock, values, NULL, true, 1);
	if (SPI_processed == 0)
		ReportNoSuchObject(kind, name);
	owner = DatumGetObjectId(RmsgSpiNotNull(0, "owner"));
	value = RmsgSpiValue(0, "acl", &isnull);
	if (!isnull)
		acl = DatumGetAclP(value);
	if (!has_privs_of_role(GetUserId(), owner))
		ReportNotOwner(kind, name);

	values[1] = ObjectIdGetDatum(new_owner);
	values[2] = acl ? PointerGetDatum(aclnewowner(acl, owner, new_owner)) : (Datum) 0;
	nulls[2] = (acl == NULL);
	RmsgPlanExecute(&info->set_owner, values, nulls, true, 0);
	RmsgSpiFinish();
}

Datum
rmsg_alter_queue_owner(PG_FUNCTION_ARGS)
{
	AlterOwner(fcinfo, RMSG_QUEUE, "rmsg.alter_queue_owner");
	PG_RETURN_VOID();
}

Datum
rmsg_alter_instance_owner(PG_FUNCTION_ARGS)
{
	AlterOwner(fcinfo, RMSG_INSTANCE, "rmsg.alter_instance_owner");
	PG_RETURN_VOID();
}

Datum
rmsg_alter_component_owner(PG_FUNCTION_ARGS)
{
	AlterOwner(fcinfo, RMSG_COMPONENT, "rmsg.alter_component_owner");
	PG_RETURN_VOID();
}

/*
 * Called before a role's OID is written into our catalog (as an owner, a
 * grantee or the role a handler runs as).  The role is locked as
 * PostgreSQL locks a role it records a dependency on: a concurrent DROP
 * ROLE, which locks the role exclusively, waits until we commit and then
 * finds the row (roles/owned_objects.c); and the role must still exist,
 * since it may have been dropped since our caller looked it up.
 */
void
RmsgLockRole(Oid role)
{
	LockSharedObject(AuthIdRelationId, role, 0, AccessShareLock);
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(role)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role with OID %u does not exist", role)));
}

/*
 * The search path a handler runs with (RmsgInvokeAsRole): its own schema,
 * with pg_catalog first and pg_temp last, so that nothing another role
 * put in a schema of its choosing, or a temporary table, is found before
 * what the handler's owner meant.  A schema named $user cannot be named
 * in a search path, quoted or not (it stands for the current role's
 * schema, which another role may have made): its handlers get pg_catalog
 * and pg_temp alone.
 */
static const char *
SearchPathFor(Oid function)
{
	char	   *schema = get_namespace_name(get_func_namespace(function));

	if (schema == NULL ||		/* dropped meanwhile: the call will fail */
		strcmp(schema, "$user") == 0)
		return "pg_catalog, pg_temp";
	return psprintf("pg_catalog, %s, pg_temp", quote_identifier(schema));
}

/*
 * Settings that change what the handler's SQL means, which the session a
 * handler runs in (the caller's, for serve_call) may have set otherwise:
 * each is set to PostgreSQL's default for the call.  Without this, a
 * handler that escapes quotes by doubling them, safe with the default
 * standard_conforming_strings, could be made to run the caller's SQL as
 * its owner.  Settings that only change how values are written or read
 * (DateStyle, TimeZone) and custom ones still come from the session, as
 * they reach a SECURITY DEFINER function.
 */
static const struct
{
	const char *name;
	const char *value;
}			handler_settings[] = {
	{"standard_conforming_strings", "on"},
	{"backslash_quote", "safe_encoding"},
	{"transform_null_equals", "off"},
	{"array_nulls", "on"},
	{"bytea_output", "hex"},
	{"quote_all_identifiers", "off"},
};

/*
 * Calls a function of another role's as that role: a handler, run for the
 * role that registered it (worker/handler_call.c, contract/serve.c).  With
 * SECURITY_LOCAL_USERID_CHANGE it cannot SET ROLE back to the caller, as
 * a security-restricted operation it can neither make temporary tables
 * (which the next role's handler would find first by name) nor LISTEN,
 * and the settings it changes (a search_path) go when it returns, in its
 * own GUC nest level.  An error leaves the user and the settings to the
 * transaction's or subtransaction's abort, which restores both.
 *
 * The search path is not the session's, nor are the settings that change
 * what SQL means (handler_settings): serve_call runs a callee's handler
 * in the caller's own session, whose search_path (or a temporary table of
 * the handler's table's name) the caller chooses, and a function planted
 * there would run as the handler's owner.  So the handler gets what
 * PostgreSQL advises for a SECURITY DEFINER function: pg_catalog, then the
 * schema of the handler itself, then pg_temp, last (SearchPathFor).  A
 * handler that needs other schemas names them, or sets its own search_path
 * (CREATE FUNCTION ... SET search_path), which applies on top of this one.
 */
Datum
RmsgInvokeAsRole(Oid role, FunctionCallInfo fcinfo)
{
	Oid			saved_user;
	int			saved_context;
	int			nest_level;
	Datum		result;

	GetUserIdAndSecContext(&saved_user, &saved_context);
	nest_level = NewGUCNestLevel();
	(void) set_config_option("search_path", SearchPathFor(fcinfo->flinfo->fn_oid),
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	for (int i = 0; i < lengthof(handler_settings); i++)
		(void) set_config_option(handler_settings[i].name, handler_settings[i].value,
								 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	SetUserIdAndSecContext(role, saved_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	result = FunctionCallInvoke(fcinfo);
	AtEOXact_GUC(false, nest_level);
	SetUserIdAndSecContext(saved_user, saved_context);
	return result;
}
