/*-------------------------------------------------------------------------
 *
 * component_catalog.c
 *	  Who may act as a component of the committed interaction contract.
 *
 * A component is a name: the caller of rmsg.prepare_call and the other
 * caller functions, the callee of rmsg.accept_call and rmsg.reply.  One name
 * is one part of an application, whether it calls or is called, so callers
 * and callees share one catalog, rmsg.component.  A name belongs to the
 * role that first used it: the first use makes its row, with that role as
 * its owner.  Others act as it only with the use privilege, which its owner
 * (or a role with manage) grants with rmsg.grant_component.  As for queues
 * and instances, core/privileges.c does the rest: it computes the rights,
 * grants, revokes and gives a component to another owner.
 *
 * The row is made in the transaction of that first use, and that
 * transaction commits stably even where the contract commits lazily
 * (core/commit_mode.c): a row lost in a crash would leave the name to
 * whichever role used it next.  Two roles that race to a new name both try
 * to make it; the unique key lets one in, and the other then finds it taken.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"

#include "contract/contract.h"

/* $1 name, $2 owner */
static RmsgPlan create_plan = {
	"INSERT INTO rmsg.component (name, owner) VALUES ($1, $2)"
	" ON CONFLICT (name) DO NOTHING",
	2, {TEXTOID, OIDOID}
};

/*
 * Checks that the current role may act as component `name` (a valid name,
 * checked by the caller): 42501 when it may not.  A new name becomes the
 * role's own when may_make, else the answer is false: nothing was ever
 * logged under it.
 */
bool
RmsgUseComponent(const char *name, bool may_make)
{
	AclMode		rights;
	Datum		values[2];

	if (!RmsgObjectRights(RMSG_COMPONENT, 0, name, GetUserId(), &rights, NULL))
	{
		if (!may_make)
			return false;
		values[0] = CStringGetTextDatum(name);
		RmsgLockRole(GetUserId());
		values[1] = ObjectIdGetDatum(GetUserId());
		RmsgNoteCatalogChange();
		RmsgSpiConnect();
		RmsgPlanExecute(&create_plan, values, NULL, true, 0);
		if (SPI_processed > 0)
			RmsgRequireStableCommit();
		RmsgSpiFinish();
		if (!RmsgObjectRights(RMSG_COMPONENT, 0, name, GetUserId(), &rights, NULL))
			elog(ERROR, "component \"%s\" vanished while it was being made", name);
	}
	RmsgRequireRights(RMSG_COMPONENT, name, rights, RMSG_USE);
	return true;
}
