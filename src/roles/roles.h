/*-------------------------------------------------------------------------
 *
 * roles.h
 *	  What PostgreSQL's statements about roles and prepared transactions
 *	  mean for the extension's own owners and privileges.
 *	  roles/README.md says why this is needed.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RMSG_ROLES_H
#define RMSG_ROLES_H

#include "core/core.h"

/* roles/utility_hook.c */
extern void RmsgUtilityInit(void);

/* roles/owned_objects.c: DROP ROLE, REASSIGN OWNED and DROP OWNED for our objects */
extern void RmsgCheckRoleUnreferenced(Oid role, const char *name);
extern void RmsgReassignOwned(Oid old_role, Oid new_role);
extern void RmsgDropOwned(Oid role);

#endif							/* RMSG_ROLES_H */
