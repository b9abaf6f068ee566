/*-------------------------------------------------------------------------
 *
 * utility_hook.c
 *	  What some of PostgreSQL's own statements mean for the extension: a
 *	  hook on utility statements.
 *
 * COMMIT PREPARED and ROLLBACK PREPARED.  A transaction that created,
 * dropped or granted one of our objects makes the backends' caches of the
 * catalog stale when it ends (core/shmem.c).  A prepared one ends twice: at
 * PREPARE, in its own backend, and at COMMIT PREPARED or ROLLBACK PREPARED,
 * perhaps in another backend, which knows nothing of what it changed.  A
 * backend that read the catalog in between cached it as it then stood; so
 * after every COMMIT PREPARED and ROLLBACK PREPARED the caches go stale
 * again.  Such statements are rare, and a stale cache costs one read.
 * After COMMIT PREPARED the workers also read their handlers again and
 * look for work, which the prepared transaction may have changed or made.
 *
 * DROP ROLE, REASSIGN OWNED and DROP OWNED.  Our owners and privileges are
 * rows of our catalog, which PostgreSQL's own dependency checks do not see:
 * owned_objects.c does for them what PostgreSQL does for its objects, in
 * the database the statement runs in.  The DROP ROLE check runs after
 * PostgreSQL's own work: a user who may not drop the role learns nothing
 * of what refers to it, and the role is then locked against new references.
 *
 * The hook exists only in backends that loaded the library (every backend
 * when it is in shared_preload_libraries).  It keeps no state; the catalog
 * generation it advances is an atomic counter in shared memory.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/acl.h"

#include "roles/roles.h"
#include "worker/worker.h"

static ProcessUtility_hook_type prev_process_utility = NULL;

/* A role named by DROP ROLE, as it was before PostgreSQL dropped it. */
typedef struct DroppedRole
{
	Oid			role;
	char	   *name;
} DroppedRole;

/*
 * Runs PostgreSQL's own work for a utility statement (or the next hook's),
 * with ours after it, once PostgreSQL has checked that the user may run it
 * (so that our checks tell nothing to a user who may not) and, for DROP
 * ROLE, locked the role, so that nothing of ours can name it meanwhile
 * (core/privileges.c's RmsgLockRole waits for that lock).  An error of
 * ours undoes PostgreSQL's work with the rest of the transaction.
 */
static void
RmsgProcessUtility(PlannedStmt *pstmt, const char *queryString,
				   bool readOnlyTree, ProcessUtilityContext context,
				   ParamListInfo params, QueryEnvironment *queryEnv,
				   DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	TransactionStmtKind ends_prepared = TRANS_STMT_BEGIN;	/* none */
	List	   *dropped_roles = NIL;
	ListCell   *lc;

	if (IsA(parsetree, TransactionStmt))
	{
		TransactionStmtKind kind = ((TransactionStmt *) parsetree)->kind;

		if (kind == TRANS_STMT_COMMIT_PREPARED || kind == TRANS_STMT_ROLLBACK_PREPARED)
			ends_prepared = kind;
	}
	else if (IsA(parsetree, DropRoleStmt))
	{
		/* their OIDs and names, while they exist */
		foreach(lc, ((DropRoleStmt *) parsetree)->roles)
		{
			RoleSpec   *spec = lfirst(lc);
			Oid			role = get_rolespec_oid(spec, true);

			if (OidIsValid(role))
			{
				DroppedRole *dropped = palloc(sizeof(DroppedRole));

				dropped->role = role;
				dropped->name = pstrdup(get_rolespec_name(spec));
				dropped_roles = lappend(dropped_roles, dropped);
			}
		}
	}

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context,
							 params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);

	if (ends_prepared != TRANS_STMT_BEGIN)
	{
		RmsgBumpCatalogGeneration();
		if (ends_prepared == TRANS_STMT_COMMIT_PREPARED)
			RmsgWorkersRecheckAll();
	}

	foreach(lc, dropped_roles)
	{
		DroppedRole *dropped = lfirst(lc);

		RmsgCheckRoleUnreferenced(dropped->role, dropped->name);
	}

	if (IsA(parsetree, ReassignOwnedStmt))
	{
		ReassignOwnedStmt *stmt = (ReassignOwnedStmt *) parsetree;
		Oid			new_role = get_rolespec_oid(stmt->newrole, false);

		RmsgLockRole(new_role);
		foreach(lc, stmt->roles)
			RmsgReassignOwned(get_rolespec_oid(lfirst(lc), false), new_role);
	}
	else if (IsA(parsetree, DropOwnedStmt))
	{
		foreach(lc, ((DropOwnedStmt *) parsetree)->roles)
			RmsgDropOwned(get_rolespec_oid(lfirst(lc), false));
	}
}

/* Called from _PG_init. */
void
RmsgUtilityInit(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = RmsgProcessUtility;
}
