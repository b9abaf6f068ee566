/*-------------------------------------------------------------------------
 *
 * tokens.c
 *	  The session's data tokens: which data this session put or got, and
 *	  where that data is logged, kept in the backend's memory only.
 *
 * Every put and every message a get returns is handed a token.  The token
 * maps, in this backend's memory only, to the payload row that holds the
 * data, or to the message whose row holds it inline (a later share copies
 * it to a payload row, remembered here so the next share references that
 * row).  Knowing where the data lies without reading the log is what lets
 * a put by token reference it cheaply.  A token is a random 63-bit number:
 * another session's tokens, or invented ones, are simply not in this map,
 * and even a collision could only reach data this session itself saw.
 *
 * The map is a ring of RMSG_SESSION_TOKENS entries; the oldest token is
 * forgotten first.  A forgotten token is like data that is no longer
 * available: a put with a payload writes it again, one without fails.
 * Entries are not transactional: a payload row written by a transaction
 * that rolled back is simply not found when the token is used, and the
 * put falls back to the message or the payload given (store.c).
 *
 * A token is good only for the role that was handed it, and only for the
 * extension it was handed by: an entry remembers the role and the OID of
 * rmsg.message, which DROP EXTENSION and CREATE EXTENSION change, so a
 * token from before them, whose payload_id or msg_id may now number other
 * data, is never accepted.  It also remembers a hash of the data where
 * the data was in hand, so that a put giving a payload with a token can
 * check that the two agree (queue/put.c).  And rmsg.last_data_token()
 * answers only in the transaction that was handed the token: behind a
 * pooler in transaction mode the next transaction on this backend may be
 * another client's.
 *
 * Nothing here is shared between backends, so no lock guards it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/timestamp.h"

#include "dedup/dedup.h"

PG_FUNCTION_INFO_V1(rmsg_last_data_token);

typedef struct TokenEntry
{
	int64		token;			/* 0: unused */
	Oid			role;			/* handed to */
	Oid			message_table;	/* rmsg.message of the extension that handed it */
	RmsgTokenData data;
} TokenEntry;

static TokenEntry tokens[RMSG_SESSION_TOKENS];
static int	next_slot = 0;
static int64 last_token = 0;
static LocalTransactionId last_token_xact = InvalidLocalTransactionId;

/*
 * Strong random numbers drawn RANDOM_BATCH at a time: a call to the
 * strong source costs about as much as a short put's own work (3% of the
 * put-get-ack cycle's time went to it, one call per token), and one call
 * for many numbers is as strong as one call each.
 */
#define RANDOM_BATCH 32

static int64 random_batch[RANDOM_BATCH];
static int	random_left = 0;

/*
 * A random nonzero 63-bit number from the operating system's strong
 * source: a token is a capability, and the tokens of one backend must not
 * tell the next (a fast generator's output does, from a few of them).
 */
static int64
RandomToken(void)
{
	int64		token;

	do
	{
		if (random_left == 0)
		{
			if (!pg_strong_random(random_batch, sizeof(random_batch)))
				ereport(ERROR,
						(errcode(ERRCODE_INTERNAL_ERROR),
						 errmsg("could not generate a random data token")));
			random_left = RANDOM_BATCH;
		}
		token = random_batch[--random_left] & PG_INT64_MAX;
		/* a number handed out is not kept where a later look could find it */
		random_batch[random_left] = 0;
	} while (token == 0);
	return token;
}

/* The entry of a token this role may use, or NULL. */
static TokenEntry *
FindEntry(int64 token)
{
	Oid			role = GetUserId();
	Oid			message_table = RmsgGetRelations()->message;

	if (token == 0)
		return NULL;
	for (int i = 0; i < RMSG_SESSION_TOKENS; i++)
		if (tokens[i].token == token)
			return (tokens[i].role == role &&
					tokens[i].message_table == message_table) ? &tokens[i] : NULL;
	return NULL;
}

/*
 * Hands out a new token for data, in the oldest slot of the ring, and makes
 * it the session's last token (rmsg.last_data_token).
 */
int64
RmsgIssueToken(const RmsgTokenData *data)
{
	int64		token;

	do
		token = RandomToken();
	while (FindEntry(token) != NULL);

	tokens[next_slot].token = token;
	tokens[next_slot].role = GetUserId();
	tokens[next_slot].message_table = RmsgGetRelations()->message;
	tokens[next_slot].data = *data;
	next_slot = (next_slot + 1) % RMSG_SESSION_TOKENS;
	last_token = token;
	last_token_xact = MyProc->lxid;
	return token;
}

/* What a token of this session names; false when it names nothing. */
bool
RmsgLookupToken(int64 token, RmsgTokenData *data)
{
	TokenEntry *entry = FindEntry(token);

	if (entry == NULL)
		return false;
	*data = entry->data;
	return true;
}

/* The token's data now has a payload row: later shares reference it. */
void
RmsgTokenPromoted(int64 token, int64 payload_id)
{
	TokenEntry *entry = FindEntry(token);

	if (entry != NULL)
		entry->data.payload_id = payload_id;
}

/*
 * The payload row this session wrote for the inline data of message msg_id
 * when it first shared it, or 0.  Lets rmsg.forward of the same message
 * reference that row instead of writing the data once more.
 */
int64
RmsgPromotedPayloadOf(int64 msg_id)
{
	Oid			message_table = RmsgGetRelations()->message;
	Oid			role = GetUserId();

	for (int i = 0; i < RMSG_SESSION_TOKENS; i++)
		if (tokens[i].token != 0 && tokens[i].data.msg_id == msg_id &&
			tokens[i].data.payload_id != 0 &&
			tokens[i].role == role && tokens[i].message_table == message_table)
			return tokens[i].data.payload_id;
	return 0;
}

/* A put or get that handed out no data (an empty get): no last token. */
void
RmsgClearLastToken(void)
{
	last_token = 0;
}

/*
 * rmsg.last_data_token(): the data of the immediately preceding put or
 * get, when it was in this transaction.
 */
Datum
rmsg_last_data_token(PG_FUNCTION_ARGS)
{
	RmsgEnter("rmsg.last_data_token", false);
	if (last_token == 0 || last_token_xact != MyProc->lxid ||
		FindEntry(last_token) == NULL)
		PG_RETURN_NULL();
	PG_RETURN_INT64(last_token);
}

/*
 * Hands out the token for the data of message msg_id, stored as stored:
 * the payload row that now holds it, or the message itself when inline.
 * from_msg_id: the message whose inline data was moved to that payload
 * row by this put (0 if none), so that forwarding it again references it.
 * data is the data when the put has it in hand, else NULL; source what
 * the put's own token said of it, or NULL.  Returns the token.
 */
int64
RmsgIssuePutToken(int64 msg_id, const RmsgStoredData *stored, int64 from_msg_id,
				  bytea *data, const RmsgTokenData *source)
{
	RmsgTokenData token;

	token.payload_id = stored->payload_id;
	token.msg_id = stored->payload_id == 0 ? msg_id : from_msg_id;
	token.size = stored->size;
	token.hash_known = false;
	token.hash = 0;
	if (data != NULL)
	{
		token.hash_known = true;
		token.hash = RmsgContentHash(data);
	}
	else if (source != NULL)
	{
		token.hash_known = source->hash_known;
		token.hash = source->hash;
	}
	return RmsgIssueToken(&token);
}
