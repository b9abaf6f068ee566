/*-------------------------------------------------------------------------
 *
 * store.c
 *	  Deciding how a put stores its data: inline, in a new payload row, or
 *	  as a reference to a payload row already logged.
 *
 * A put knows its data from the payload given, from a data token (the
 * session put or got it before, tokens.c), or from a message (forward).
 * When the data already sits in a payload row that still exists, the
 * message references that row and nothing else is written: the data is
 * logged once, however many messages carry it.  Otherwise the data is
 * written: inline in the message row when it is small and not worth
 * sharing, else in a payload row of its own.  References always name the
 * payload row that holds the data, never a message that references it, so
 * a reader never follows a chain.
 *
 * Inline data that is shared (by token, forward or put_many) is copied to
 * a payload row on its first share (the original message keeps its inline
 * copy), and later shares reference that row.  Data below
 * RMSG_MIN_SHARED_SIZE is not worth it: a reference costs about as much
 * WAL as the bytes it saves.
 *
 * A queue's dedup setting limits this: 'none' never references (the data
 * is written each time, read from its earlier occurrence if the put gave
 * only a token), 'token' references what tokens and fan-outs name, and
 * 'content' also finds equal data that content queues of the same owner
 * logged, by hash (payload.c says why not other owners').
 *
 * This file keeps no state and takes no lock of its own: the row locks
 * that keep a referenced payload row alive are payload.c's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "dedup/dedup.h"

/* rmsg.inline_payload_max (recoverable_msg.c defines the setting) */
int			rmsg_inline_payload_max = 2000;

/* Data found in a payload row the put did not write. */
static void
Referenced(int64 payload_id, int32 size, RmsgStoredData *out)
{
	out->payload_id = payload_id;
	out->inline_data = NULL;
	out->size = size;
	out->referenced = true;
}

/*
 * Writes data: in a payload row when it is too large to inline or is
 * going to be shared, else inline.  Queues with dedup = 'content' find
 * equal data first, and make what they write findable.
 */
static void
Written(RmsgDedupMode mode, Oid owner, bytea *data, bool will_share, RmsgStoredData *out)
{
	int32		size = (int32) VARSIZE_ANY_EXHDR(data);
	bool		content = (mode == RMSG_DEDUP_CONTENT);

	out->size = size;
	out->referenced = false;
	out->inline_data = NULL;
	out->payload_id = 0;

	if (content && size >= RMSG_MIN_SHARED_SIZE)
	{
		int64		found = RmsgFindPayload(data, owner);

		if (found != 0)
		{
			Referenced(found, size, out);
			return;
		}
	}
	if (size > rmsg_inline_payload_max ||
		((will_share || content) && size >= RMSG_MIN_SHARED_SIZE))
		out->payload_id = RmsgWritePayload(data, content, owner);
	else
		out->inline_data = data;
}

/*
 * Decides where a put to a queue with this dedup mode and owner stores its
 * data, and writes the payload row if one is needed (the message row is
 * the caller's).  data is the payload given, or NULL; source what a token
 * or message says of the data, or NULL.  One of them is set.  will_share:
 * the caller is going to reference the result from more messages
 * (put_many).
 *
 * When source's inline data had to be copied to a payload row,
 * source->payload_id names the new row; the caller tells the token map.
 * Returns false, with nothing written, when only source was given and its
 * data is no longer available.  Inside SPI.
 */
bool
RmsgStoreData(RmsgDedupMode mode, Oid owner, bytea *data, RmsgTokenData *source,
			  bool will_share, RmsgStoredData *out)
{
	if (source != NULL)
	{
		bool		may_reference = (mode != RMSG_DEDUP_NONE);

		/*
		 * Reference the earlier occurrence, if it is still logged: pinning
		 * its row keeps the collector away until this put's transaction
		 * ends.
		 */
		if (may_reference && source->payload_id != 0 &&
			RmsgPinPayload(source->payload_id))
		{
			Referenced(source->payload_id, source->size, out);
			return true;
		}
		if (data == NULL && source->msg_id != 0)
			data = RmsgReadInlineData(source->msg_id);
		if (data == NULL && !may_reference && source->payload_id != 0)
			data = RmsgReadPayload(source->payload_id);
		if (data == NULL)
			return false;

		/* the first share of inline data copies it to a payload row */
		if (may_reference && source->msg_id != 0 &&
			VARSIZE_ANY_EXHDR(data) >= RMSG_MIN_SHARED_SIZE)
		{
			Written(mode, owner, data, true, out);
			source->payload_id = out->payload_id;
			return true;
		}
	}
	Written(mode, owner, data, will_share, out);
	return true;
}

/* A queue's dedup setting, as rmsg.queue.dedup spells it. */
RmsgDedupMode
RmsgParseDedupMode(const char *text)
{
	if (strcmp(text, "none") == 0)
		return RMSG_DEDUP_NONE;
	if (strcmp(text, "token") == 0)
		return RMSG_DEDUP_TOKEN;
	if (strcmp(text, "content") == 0)
		return RMSG_DEDUP_CONTENT;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid dedup mode \"%s\"", text),
			 errhint("Use \"none\", \"token\" or \"content\".")));
	pg_unreachable();
}
