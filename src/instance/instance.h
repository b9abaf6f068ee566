/*-------------------------------------------------------------------------
 *
 * instance.h
 *	  Recovery-mode instances: a line of messages per instance, handed out
 *	  in order one lease at a time, and a recovery mode in which only
 *	  recovery messages pass.  instance/README.md says how it works.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RMSG_INSTANCE_H
#define RMSG_INSTANCE_H

#include "core/core.h"
#include "queue/queue.h"

extern bool rmsg_instance_cache;

/* instance/catalog.c: instances, their locks and the shared mode cache */
typedef struct RmsgInstance
{
	int64		instance_id;
	bool		recovering;
	AclMode		rights;			/* of the role that opened it */
} RmsgInstance;

extern Size RmsgInstanceCacheShmemSize(void);
extern void RmsgInstanceCacheShmemStartup(void);
extern void RmsgLockInstance(const char *name, RmsgNameLock lock_kind);
extern RmsgInstance RmsgOpenInstance(const char *name, RmsgNameLock lock_kind, AclMode needed);
typedef bool (*RmsgInstanceFilter) (int64 instance_id, const char *name, void *arg);
extern bool RmsgTryOpenInstanceById(int64 instance_id, RmsgInstanceFilter wanted,
									void *arg, char *name,
									RmsgInstance *instance, bool *fresh);
extern void RmsgUnlockInstance(const char *name, RmsgNameLock lock_kind);
extern void RmsgInstanceChanged(const char *name);
extern void RmsgInstanceCacheXactEnd(void);

/* instance/line_hint.c: where a receive may start in an instance's line */
extern Size RmsgLineHintShmemSize(void);
extern void RmsgLineHintShmemStartup(void);
extern void RmsgLineHintWalk(int64 instance_id);
extern int64 RmsgLineHintRead(int64 instance_id);
extern void RmsgLineHintLower(int64 instance_id, int64 msg_id);
extern int64 RmsgNextLineWithMessages(int64 after);
extern void RmsgReportNoInstance(const char *name);

/* instance/receive.c: an instance's head message, for the worker */
typedef struct RmsgInstanceMessage
{
	int64		visibility;		/* set by the caller: the lease's length */
	char		instance[NAMEDATALEN];
	int64		instance_id;
	int64		msg_id;
	Datum		kind;			/* text */
	Datum		payload;		/* bytea */
	Datum		headers;		/* jsonb */
	bool		headers_null;
	int32		deliveries;
	int64		receipt;
} RmsgInstanceMessage;

extern bool RmsgTakeInstanceMessage(int64 *cursor, RmsgInstanceFilter wanted,
									void *arg, RmsgInstanceMessage *out);

/* instance/lease.c: ack, nack and extend of instance messages */
extern void RmsgInstanceLeaseInit(void);

/*
 * instance/deliver.c: called when a transaction made instance messages
 * ready (a delivery that is not deferred, the end of a recovery):
 * recoverable_msg.c points the hook at the background workers, which then
 * look at the instances when it commits.  The hook is how this folder
 * tells the workers above it without calling up into worker/.
 */
typedef void (*RmsgInstanceReadyHook) (void);
extern RmsgInstanceReadyHook rmsg_instance_ready_hook;
extern void RmsgInstanceMessagesReady(void);

#endif							/* RMSG_INSTANCE_H */
