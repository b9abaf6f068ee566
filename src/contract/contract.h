/*-------------------------------------------------------------------------
 *
 * contract.h
 *	  The committed interaction contract: calls between components that
 *	  take effect exactly once across crashes, where the caller forces its
 *	  WAL only before a call that would make a callee release a reply the
 *	  caller's log does not yet hold stably.
 *	  contract/README.md says how it works.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RMSG_CONTRACT_H
#define RMSG_CONTRACT_H

#include "core/core.h"

/*
 * The most replies per caller a callee can be told to keep
 * (rmsg.last_call_depth), and so the most CLSNs an entry of the
 * called-component table remembers.
 */
#define RMSG_MAX_CALL_DEPTH 32

extern int	rmsg_last_call_depth;
extern int	rmsg_max_components;

/* contract/called_components.c: the called-component table in shared memory */
extern Size RmsgComponentsShmemSize(void);
extern void RmsgComponentsShmemStartup(void);
extern bool RmsgBeforeSend(const char *caller, const char *callee);
extern void RmsgReplyRecorded(const char *caller, const char *callee, int64 call_id);
extern bool RmsgReplyPendingFor(const char *caller, const char *callee);
extern void RmsgComponentsXactEnd(bool committed);
extern void RmsgComponentsSubXactEnd(bool committed, SubTransactionId subxid,
									 SubTransactionId parent);
extern XLogRecPtr RmsgForceLog(void);
extern void RmsgComponentsForget(const char *name);

/* contract/component_catalog.c: who may act as a caller or callee (42501 if not) */
extern bool RmsgUseComponent(const char *name, bool may_make);

#endif							/* RMSG_CONTRACT_H */
