/*-------------------------------------------------------------------------
 *
 * tokens.c
 *	  The session's data tokens: which data this session put or got, and
 *	  where that data is logged (seed 004's volatile storage).
 *
 * Every put and every message a get returns is handed a token.  The token
 * maps, in this backend's memory only, to the payload row that holds the
 * data, or to the message whose row holds it inline (a later share
 * promotes it to a payload row, remembered here so the next share
 * references that row).  A token is a random 63-bit number: another
 * session's tokens, or invented ones, are simply not in this map, and
 * even a collision could only reach data this session itself saw.
 *
 * The map is a ring of RMSG_SESSION_TOKENS entries; the oldest token is
 * forgotten first.  A forgotten token is like data that is no longer
 * available: a put with a payload writes it again, one without fails.
 * Entries are not transactional: a payload row written by a transaction
 * that rolled back is simply not found when the token is used, and the
 * put falls back to the message or the payload given (dedup.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/pg_prng.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/timestamp.h"

#include "rmsg.h"

PG_FUNCTION_INFO_V1(rmsg_last_data_token);

typedef struct TokenEntry
{
	int64		token;			/* 0: unused */
	RmsgTokenData data;
} TokenEntry;

static TokenEntry tokens[RMSG_SESSION_TOKENS];
static int	next_slot = 0;
static int64 last_token = 0;
static pg_prng_state token_prng;
static bool token_prng_seeded = false;

static TokenEntry *
FindEntry(int64 token)
{
	if (token == 0)
		return NULL;
	for (int i = 0; i < RMSG_SESSION_TOKENS; i++)
		if (tokens[i].token == token)
			return &tokens[i];
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

	if (!token_prng_seeded)
	{
		if (!pg_prng_strong_seed(&token_prng))
			pg_prng_seed(&token_prng, (uint64) MyProcPid ^ (uint64) GetCurrentTimestamp());
		token_prng_seeded = true;
	}
	do
		token = (int64) (pg_prng_uint64(&token_prng) & PG_INT64_MAX);
	while (token == 0 || FindEntry(token) != NULL);

	tokens[next_slot].token = token;
	tokens[next_slot].data = *data;
	next_slot = (next_slot + 1) % RMSG_SESSION_TOKENS;
	last_token = token;
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
	for (int i = 0; i < RMSG_SESSION_TOKENS; i++)
		if (tokens[i].token != 0 && tokens[i].data.msg_id == msg_id &&
			tokens[i].data.payload_id != 0)
			return tokens[i].data.payload_id;
	return 0;
}

/* A put or get that handed out no data (an empty get): no last token. */
void
RmsgClearLastToken(void)
{
	last_token = 0;
}

/* rmsg.last_data_token(): the data of the immediately preceding put or get */
Datum
rmsg_last_data_token(PG_FUNCTION_ARGS)
{
	if (last_token == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(last_token);
}
