/*-------------------------------------------------------------------------
 *
 * contract.h
 *	  The committed interaction contract: calls between components that
 *	  happen exactly once across crashes, with a force of the WAL only
 *	  when a callee's reply is not yet stable.
 *	  contract/README.md says how it works.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RMSG_CONTRACT_H
#define RMSG_CONTRACT_H

#include "core/core.h"

/* The most replies per caller a callee can be told to keep. */
#define RMSG_MAX_CALL_DEPTH 32

extern int	rmsg_last_call_depth;
extern int	rmsg_max_components;

/* contract/called_components.c: the called-component table in shared memory */
extern Size RmsgComponentsShmemSize(void);
extern void RmsgComponentsShmemStartup(void);
extern bool RmsgBeforeSend(const char *caller, const char *callee);
extern void RmsgReplyRecorded(const char *caller, const char *callee, int64 call_id);
extern void RmsgComponentsXactEnd(bool committed);
extern void RmsgComponentsSubXactEnd(bool committed, SubTransactionId subxid,
									 SubTransactionId parent);
extern XLogRecPtr RmsgForceLog(void);

/* contract/component_catalog.c: who may act as a caller or callee */
extern bool RmsgUseComponent(const char *name, bool may_make);

#endif							/* RMSG_CONTRACT_H */
