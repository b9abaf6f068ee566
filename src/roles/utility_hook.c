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
 *
 * DROP ROLE, REASSIGN OWNED and DROP OWNED.  Our owners and privileges are
 * rows of our catalog, which PostgreSQL's own dependency checks do not see:
 * owned_objects.c does for them what PostgreSQL does for its objects, in
 * the database the statement runs in.
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

/*
 * Runs PostgreSQL's own work for a utility statement (or the next hook's),
 * with ours around it: DROP ROLE is checked before, since afterwards the
 * role is gone; REASSIGN OWNED and DROP OWNED act after, once PostgreSQL
 * has checked that the user may run them.
 */
static void
RmsgProcessUtility(PlannedStmt *pstmt, const char *queryString,
				   bool readOnlyTree, ProcessUtilityContext context,
				   ParamListInfo params, QueryEnvironment *queryEnv,
				   DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	bool		ends_prepared = false;

	if (IsA(parsetree, TransactionStmt))
	{
		TransactionStmtKind kind = ((TransactionStmt *) parsetree)->kind;

		ends_prepared = (kind == TRANS_STMT_COMMIT_PREPARED ||
						 kind == TRANS_STMT_ROLLBACK_PREPARED);
	}
	else if (IsA(parsetree, DropRoleStmt))
	{
		DropRoleStmt *stmt = (DropRoleStmt *) parsetree;
		ListCell   *lc;

		foreach(lc, stmt->roles)
		{
			RoleSpec   *spec = lfirst(lc);
			Oid			role = get_rolespec_oid(spec, true);

			if (OidIsValid(role))
				RmsgCheckRoleUnreferenced(role, get_rolespec_name(spec));
		}
	}

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context,
							 params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);

	if (ends_prepared)
		RmsgBumpCatalogGeneration();

	/* after PostgreSQL's own, which checks the right to do it */
	if (IsA(parsetree, ReassignOwnedStmt))
	{
		ReassignOwnedStmt *stmt = (ReassignOwnedStmt *) parsetree;
		Oid			new_role = get_rolespec_oid(stmt->newrole, false);
		ListCell   *lc;

		foreach(lc, stmt->roles)
			RmsgReassignOwned(get_rolespec_oid(lfirst(lc), false), new_role);
	}
	else if (IsA(parsetree, DropOwnedStmt))
	{
		DropOwnedStmt *stmt = (DropOwnedStmt *) parsetree;
		ListCell   *lc;

		foreach(lc, stmt->roles)
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
