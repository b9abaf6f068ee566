/*-------------------------------------------------------------------------
 *
 * create.c
 *	  rmsg.create_remote_queue: a local queue whose messages go to a queue
 *	  of a foreign server.
 *
 * A remote queue is an ordinary queue of this database, made by
 * create_queue, plus a row of rmsg.remote_queue naming the foreign server
 * and the queue there.  Puts into it are ordinary puts: they commit here,
 * in the application's transaction, whether or not the other server is up.
 * The worker then moves the messages (transfer.c).  Nobody gets from a
 * remote queue here (get and subscribe refuse it): its messages are the
 * receiver's.
 *
 * Where and as whom the worker connects is PostgreSQL's own business: a
 * foreign server (CREATE SERVER ... FOREIGN DATA WRAPPER postgres_fdw) and
 * the user mapping of the role that creates the remote queue, which must
 * hold USAGE on the server, as for a foreign table.  The worker connects
 * with that mapping for as long as the queue exists (connection.c).
 *
 * The channel is the name the receiver knows this sender's queue by: the
 * system identifier of this cluster, the database, a random number and
 * the queue, so that two senders never share one and a queue made again
 * never continues an old one.  It is written once and dumped with the row,
 * so a restored database goes on with its sequence numbers.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"

#include "remote/remote.h"

PG_FUNCTION_INFO_V1(rmsg_create_remote_queue);

extern Datum rmsg_create_queue(PG_FUNCTION_ARGS);

/* $1 queue name, $2 server, $3 remote queue, $4 the channel's prefix */
static RmsgPlan insert_plan = {
	"INSERT INTO rmsg.remote_queue (queue_id, server, remote_queue, channel)"
	" SELECT queue_id, $2, $3, $4 || ':' || queue_id FROM rmsg.queue WHERE name = $1",
	4, {TEXTOID, TEXTOID, TEXTOID, TEXTOID}
};

/* rmsg.create_remote_queue(queue, server, remote_queue) */
Datum
rmsg_create_remote_queue(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *server;
	char	   *remote_queue;
	char		channel_prefix[64];
	Datum		values[4];
	LOCAL_FCINFO(create, 5);

	RmsgEnter("rmsg.create_remote_queue", true);
	name = RmsgTextArg(fcinfo, 0, "queue name");
	server = RmsgTextArg(fcinfo, 1, "server");
	remote_queue = PG_ARGISNULL(2) ? name : RmsgTextArg(fcinfo, 2, "remote queue name");
	RmsgCheckName(name, "queue");
	RmsgCheckName(remote_queue, "queue");
	RmsgCheckForeignServer(server);

	/* the queue itself, as create_queue makes it, with its defaults */
	InitFunctionCallInfoData(*create, NULL, 5, InvalidOid, NULL, NULL);
	create->args[0].value = CStringGetTextDatum(name);
	create->args[0].isnull = false;
	create->args[1].value = Int32GetDatum(5);
	create->args[1].isnull = false;
	create->args[2].value = (Datum) 0;
	create->args[2].isnull = true;
	create->args[3].value = CStringGetTextDatum("token");
	create->args[3].isnull = false;
	create->args[4].value = (Datum) 0;
	create->args[4].isnull = true;
	(void) rmsg_create_queue(create);

	{
		uint32		nonce;

		/*
		 * A random part: a queue made again under the same id (after DROP
		 * and CREATE EXTENSION, say) must not continue the old channel's
		 * numbers at the receiver, which would skip its first messages.
		 */
		if (!pg_strong_random(&nonce, sizeof(nonce)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate a random channel name")));
		snprintf(channel_prefix, sizeof(channel_prefix), UINT64_FORMAT ":%u:%08x",
				 GetSystemIdentifier(), MyDatabaseId, nonce);
	}
	RmsgSpiConnect();
	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(server);
	values[2] = CStringGetTextDatum(remote_queue);
	values[3] = CStringGetTextDatum(channel_prefix);
	RmsgPlanExecute(&insert_plan, values, NULL, true, 0);
	if (SPI_processed != 1)
		elog(ERROR, "queue \"%s\" was not created", name);
	RmsgSpiFinish();
	PG_RETURN_VOID();
}
