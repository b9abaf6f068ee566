/*-------------------------------------------------------------------------
 *
 * remote.h
 *	  Remote queues: messages put on one server and moved, exactly once
 *	  and in order, to a queue of another.  remote/README.md says how.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RMSG_REMOTE_H
#define RMSG_REMOTE_H

#include "queue/queue.h"

#include "libpq-fe.h"
#include "nodes/pg_list.h"

/* The most messages one transfer carries, and one accept_transfer takes. */
#define RMSG_TRANSFER_BATCH 100
#define RMSG_MAX_ACCEPT 10000

/*
 * remote/connection.c: libpq connections to foreign servers, for the
 * worker.  What to connect with is read from the catalogs, in a
 * transaction; the connection is made outside one.
 */
typedef struct RmsgConnInfo
{
	const char **keywords;		/* NULL-terminated, as PQconnectdbParams takes */
	const char **values;
	bool		needs_password;	/* the role is not a superuser */
	char	   *signature;		/* all of the above as one string: a change reconnects */
} RmsgConnInfo;

extern void RmsgCheckForeignServer(const char *name);
extern RmsgConnInfo *RmsgRemoteConnInfo(const char *server, Oid role, MemoryContext into);
extern PGconn *RmsgRemoteConnect(const char *server, Oid role, const RmsgConnInfo *info);
extern void RmsgRemoteDisconnect(const char *server, Oid role);
extern PGresult *RmsgRemoteExec(PGconn *conn, const char *sql, int nparams,
								const char *const *values, int timeout_ms);

#endif							/* RMSG_REMOTE_H */
