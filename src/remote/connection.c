/*-------------------------------------------------------------------------
 *
 * connection.c
 *	  The worker's libpq connections to foreign servers.
 *
 * Where to connect comes from the foreign server's options and as whom
 * from the user mapping of the remote queue's owner, as postgres_fdw and
 * dblink read them: every option libpq knows is passed on, the others
 * (postgres_fdw's own, such as fetch_size) are left out.  A role that is
 * not a superuser must connect with a password from its mapping, and the
 * server must have asked for it: otherwise the worker, which runs as a
 * superuser on the server's OS account, would lend that identity (peer or
 * trust authentication, a .pgpass of the server's) to whoever may create a
 * remote queue.  postgres_fdw applies the same rule.
 *
 * A connection is kept, per server and role, for the worker's next
 * transfers, and dropped on any error.  Every wait for the other server
 * (connecting, sending, reading the result) sleeps on the worker's latch
 * and the socket together, so SIGTERM and a postmaster's death end it at
 * once; connect_timeout (10 s) bounds the connection.  A server that
 * stops answering in the middle of a statement holds the worker until
 * TCP gives up: set the keepalives_* options on the foreign server.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/defrem.h"
#include "foreign/foreign.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/acl.h"
#include "utils/memutils.h"

#include "remote/remote.h"

/* A kept connection: to `server` with the user mapping of `role`. */
typedef struct KeptConnection
{
	char		server[NAMEDATALEN];
	Oid			role;
	PGconn	   *conn;
	char	   *signature;		/* of the RmsgConnInfo it was made with (malloc'd) */
} KeptConnection;

#define RMSG_MAX_KEPT_CONNECTIONS 16
static KeptConnection kept[RMSG_MAX_KEPT_CONNECTIONS];
static int	nkept = 0;

/*
 * The foreign server, checked for the current role the way a foreign
 * table's use would be: it exists (else 42704), the role holds USAGE on it
 * (else 42501), and has a user mapping for it (else 42704).
 */
void
RmsgCheckForeignServer(const char *name)
{
	ForeignServer *server = GetForeignServerByName(name, false);
	AclResult	result;

	result = pg_foreign_server_aclcheck(server->serverid, GetUserId(), ACL_USAGE);
	if (result != ACLCHECK_OK)
		aclcheck_error(result, OBJECT_FOREIGN_SERVER, server->servername);
	(void) GetUserMapping(GetUserId(), server->serverid);
}

/* Adds keyword=value unless the options already name the keyword; the new count. */
static int
AddDefault(RmsgConnInfo *info, int n, const char *keyword, const char *value)
{
	for (int i = 0; i < n; i++)
		if (strcmp(info->keywords[i], keyword) == 0)
			return n;
	info->keywords[n] = keyword;
	info->values[n] = value;
	return n + 1;
}

/*
 * libpq's options, read once per process: PQconndefaults also reads the
 * environment and the service file, too much for every call and round.
 */
static PQconninfoOption *libpq_options = NULL;

/* Whether libpq knows the option `name`. */
static bool
IsLibpqOption(const char *name)
{
	if (libpq_options == NULL)
	{
		libpq_options = PQconndefaults();
		if (libpq_options == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory reading libpq's connection options")));
	}
	for (const PQconninfoOption *o = libpq_options; o->keyword != NULL; o++)
		if (strcmp(o->keyword, name) == 0)
			return true;
	return false;
}

/* Adds the libpq options of a list of DefElem to keywords and values. */
static void
AddOptions(List *options,
		   const char **keywords, const char **values, int *n, bool *has_password)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *d = (DefElem *) lfirst(lc);

		if (!IsLibpqOption(d->defname))
			continue;
		/* these are ours to set */
		if (strcmp(d->defname, "application_name") == 0 ||
			strcmp(d->defname, "fallback_application_name") == 0 ||
			strcmp(d->defname, "client_encoding") == 0)
			continue;
		if (strcmp(d->defname, "password") == 0 && defGetString(d)[0] != '\0')
			*has_password = true;
		keywords[*n] = d->defname;
		values[*n] = defGetString(d);
		(*n)++;
	}
}

/*
 * Waits until the socket is ready for `events`, the latch is set (and
 * then handles interrupts: SIGTERM ends the worker here, a cancel or
 * statement_timeout a user's call), or timeout_ms pass (-1: no limit);
 * false on the timeout.
 */
static bool
WaitForSocket(PGconn *conn, int events, long timeout_ms)
{
	int			rc;

	rc = WaitLatchOrSocket(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | events |
						   (timeout_ms >= 0 ? WL_TIMEOUT : 0),
						   PQsocket(conn), timeout_ms, PG_WAIT_EXTENSION);
	if (rc & WL_LATCH_SET)
	{
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	return !(rc & WL_TIMEOUT);
}

/*
 * What to connect to `server` as `role` with: the libpq options of the
 * server and of the role's user mapping, in `into`.  In a transaction (it
 * reads the catalogs); errors when the server or the mapping is gone, or a
 * role that is not a superuser has no password in its mapping.
 */
RmsgConnInfo *
RmsgRemoteConnInfo(const char *server_name, Oid role, MemoryContext into)
{
	MemoryContext old = MemoryContextSwitchTo(into);
	ForeignServer *server = GetForeignServerByName(server_name, false);
	UserMapping *mapping;
	int			max;
	RmsgConnInfo *info = palloc0(sizeof(RmsgConnInfo));
	int			n = 0;
	bool		has_password = false;
	StringInfoData signature;

	/* the right to use the server, again: it may have been revoked since */
	if (pg_foreign_server_aclcheck(server->serverid, role, ACL_USAGE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role %u no longer holds USAGE on foreign server \"%s\"", role, server_name)));
	mapping = GetUserMapping(role, server->serverid);
	max = list_length(server->options) + list_length(mapping->options) + 8;
	info->keywords = palloc0(sizeof(char *) * (max + 1));
	info->values = palloc0(sizeof(char *) * (max + 1));
	AddOptions(server->options, info->keywords, info->values, &n, &has_password);
	AddOptions(mapping->options, info->keywords, info->values, &n, &has_password);
	info->needs_password = !superuser_arg(role);
	if (info->needs_password && !has_password)
		ereport(ERROR,
				(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
				 errmsg("the user mapping of role %u for server \"%s\" has no password", role, server_name),
				 errdetail("A role that is not a superuser must connect to another server with a password.")));
	info->keywords[n] = "application_name";
	info->values[n++] = "recoverable_msg transfer";
	info->keywords[n] = "client_encoding";
	info->values[n++] = pstrdup(GetDatabaseEncodingName());
	/*
	 * Defaults the server's options may override: a peer that stops
	 * answering is noticed (keepalives), and a statement there gives up
	 * rather than wait for ever on a lock.
	 */
	n = AddDefault(info, n, "connect_timeout", "10");
	n = AddDefault(info, n, "keepalives_idle", "30");
	n = AddDefault(info, n, "keepalives_interval", "10");
	n = AddDefault(info, n, "keepalives_count", "3");
	n = AddDefault(info, n, "options", "-c lock_timeout=10000 -c statement_timeout=60000");
	info->keywords[n] = NULL;
	info->values[n] = NULL;
	initStringInfo(&signature);
	appendStringInfo(&signature, "%d", (int) info->needs_password);
	for (int i = 0; i < n; i++)
	{
		info->keywords[i] = pstrdup(info->keywords[i]);
		info->values[i] = pstrdup(info->values[i]);
		appendStringInfo(&signature, "|%s=%s", info->keywords[i], info->values[i]);
	}
	info->signature = signature.data;
	MemoryContextSwitchTo(old);
	return info;
}

/* Connects, waiting on the latch and the socket; the connection, or an error. */
static PGconn *
Connect(const char *server_name, Oid role, const RmsgConnInfo *info)
{
	PGconn	   *conn;
	PostgresPollingStatusType status;

	conn = PQconnectStartParams(info->keywords, info->values, false);
	if (conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory connecting to server \"%s\"", server_name)));
	/* a connection that failed at once (no server at that socket) has no socket to wait on */
	for (status = PQstatus(conn) == CONNECTION_BAD ? PGRES_POLLING_FAILED : PGRES_POLLING_WRITING;
		 status != PGRES_POLLING_OK && status != PGRES_POLLING_FAILED && PQsocket(conn) >= 0;
		 status = PQconnectPoll(conn))
	{
		/* connect_timeout bounds this in libpq */
		if (status == PGRES_POLLING_READING)
			(void) WaitForSocket(conn, WL_SOCKET_READABLE, -1L);
		else if (status == PGRES_POLLING_WRITING)
			(void) WaitForSocket(conn, WL_SOCKET_WRITEABLE, -1L);
	}
	if (PQstatus(conn) != CONNECTION_OK)
	{
		char	   *message = pchomp(PQerrorMessage(conn));

		PQfinish(conn);
		ereport(ERROR,
				(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
				 errmsg("could not connect to server \"%s\": %s", server_name, message)));
	}
	if (info->needs_password && !PQconnectionUsedPassword(conn))
	{
		PQfinish(conn);
		ereport(ERROR,
				(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
				 errmsg("server \"%s\" did not ask role %u for its password", server_name, role),
				 errdetail("A role that is not a superuser must connect to another server with a password.")));
	}
	return conn;
}

/*
 * The worker's connection to `server` as `role` (its user mapping's user):
 * the kept one, or a new one made with `info`.  Outside a transaction.
 */
PGconn *
RmsgRemoteConnect(const char *server, Oid role, const RmsgConnInfo *info)
{
	KeptConnection *k;
	PGconn	   *conn;
	char	   *signature;

	for (int i = 0; i < nkept; i++)
		if (kept[i].role == role && strcmp(kept[i].server, server) == 0)
		{
			/* a changed server or mapping (ALTER ...) takes a new connection */
			if (PQstatus(kept[i].conn) == CONNECTION_OK &&
				strcmp(kept[i].signature, info->signature) == 0)
				return kept[i].conn;
			RmsgRemoteDisconnect(server, role);
			break;
		}
	if (nkept == RMSG_MAX_KEPT_CONNECTIONS)
		RmsgRemoteDisconnect(kept[0].server, kept[0].role);
	conn = Connect(server, role, info);
	signature = strdup(info->signature);
	if (signature == NULL)
	{
		PQfinish(conn);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	}
	k = &kept[nkept++];
	strlcpy(k->server, server, sizeof(k->server));
	k->role = role;
	k->conn = conn;
	k->signature = signature;
	return conn;
}

/* Closes and forgets the connection to `server` as `role`, if any. */
void
RmsgRemoteDisconnect(const char *server, Oid role)
{
	for (int i = 0; i < nkept; i++)
		if (kept[i].role == role && strcmp(kept[i].server, server) == 0)
		{
			PQfinish(kept[i].conn);
			free(kept[i].signature);
			kept[i] = kept[--nkept];
			return;
		}
}

/*
 * Runs one statement with text parameters on the connection and returns
 * its last result (the caller PQclears it), waiting on the latch and the
 * socket; an error when it could not be sent, failed, or had no answer
 * within timeout_ms (-1: no limit but the caller's own statement_timeout),
 * when it is cancelled there.
 */
PGresult *
RmsgRemoteExec(PGconn *conn, const char *sql, int nparams, const char *const *values,
			   int timeout_ms)
{
	PGresult   *last = NULL;
	PGresult   *result;
	TimestampTz deadline = timeout_ms >= 0
		? TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms) : 0;

	if (!PQsendQueryParams(conn, sql, nparams, NULL, values, NULL, NULL, 0))
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not send to the other server: %s", pchomp(PQerrorMessage(conn)))));
	for (;;)
	{
		while (PQisBusy(conn))
		{
			long		left = -1L;

			if (deadline != 0)
				left = Max(0L, (long) ((deadline - GetCurrentTimestamp()) / 1000));
			if (!WaitForSocket(conn, WL_SOCKET_READABLE, left))
			{
				PGcancel   *cancel = PQgetCancel(conn);
				char		why[256];

				if (cancel != NULL)
				{
					(void) PQcancel(cancel, why, sizeof(why));
					PQfreeCancel(cancel);
				}
				PQclear(last);
				ereport(ERROR,
						(errcode(ERRCODE_QUERY_CANCELED),
						 errmsg("the other server did not answer within %d ms", timeout_ms)));
			}
			if (!PQconsumeInput(conn))
			{
				PQclear(last);
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("lost the connection to the other server: %s",
								pchomp(PQerrorMessage(conn)))));
			}
		}
		result = PQgetResult(conn);
		if (result == NULL)
			break;
		PQclear(last);
		last = result;
	}
	if (last == NULL || (PQresultStatus(last) != PGRES_TUPLES_OK &&
						 PQresultStatus(last) != PGRES_COMMAND_OK))
	{
		char	   *message = last != NULL ? pchomp(PQresultErrorMessage(last))
			: pchomp(PQerrorMessage(conn));
		char	   *sqlstate = last != NULL ? PQresultErrorField(last, PG_DIAG_SQLSTATE) : NULL;
		int			code = ERRCODE_CONNECTION_FAILURE;

		if (sqlstate != NULL && strlen(sqlstate) == 5)
			code = MAKE_SQLSTATE(sqlstate[0], sqlstate[1], sqlstate[2], sqlstate[3], sqlstate[4]);
		PQclear(last);
		ereport(ERROR,
				(errcode(code),
				 errmsg("the other server refused: %s", message)));
	}
	return last;
}
