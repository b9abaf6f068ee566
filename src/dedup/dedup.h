/*-------------------------------------------------------------------------
 *
 * dedup.h
 *	  Deduplicated logging: where a message's data is kept, payload rows
 *	  shared by reference, and the session's data tokens.
 *	  dedup/README.md says how they fit together.
 *
 *-------------------------------------------------------------------------
 */
#ifndef RMSG_DEDUP_H
#define RMSG_DEDUP_H

#include "core/core.h"

/* A queue's dedup setting (rmsg.queue.dedup): how far its puts share data. */
typedef enum RmsgDedupMode
{
	RMSG_DEDUP_NONE,			/* 'none': every put writes its data */
	RMSG_DEDUP_TOKEN,			/* 'token': reference what tokens and fan-outs name */
	RMSG_DEDUP_CONTENT			/* 'content': also find equal data by hash */
} RmsgDedupMode;

extern RmsgDedupMode RmsgParseDedupMode(const char *text);

/* Where a message's data is kept: inline, or in a payload row. */
typedef struct RmsgStoredData
{
	int64		payload_id;		/* 0: inline */
	bytea	   *inline_data;	/* when inline */
	int32		size;			/* bytes of data, either way */
	bool		referenced;		/* a payload row that was already there */
} RmsgStoredData;

/* dedup/tokens.c: the session's data tokens */
#define RMSG_SESSION_TOKENS 256

typedef struct RmsgTokenData
{
	int64		payload_id;		/* the payload row holding the data, 0: none known */
	int64		msg_id;			/* a message holding it inline, 0: none */
	int32		size;
	bool		hash_known;		/* hash is the data's RmsgContentHash */
	uint64		hash;
} RmsgTokenData;

extern int64 RmsgIssueToken(const RmsgTokenData *data);
extern int64 RmsgIssuePutToken(int64 msg_id, const RmsgStoredData *stored,
							   int64 from_msg_id, bytea *data,
							   const RmsgTokenData *source);
extern bool RmsgLookupToken(int64 token, RmsgTokenData *data);
extern void RmsgTokenPromoted(int64 token, int64 payload_id);
extern int64 RmsgPromotedPayloadOf(int64 msg_id);
extern void RmsgClearLastToken(void);

/* dedup/payload.c: payload rows, shared by reference and collected */
extern int64 RmsgWritePayload(bytea *data, bool findable, Oid owner);
extern bool RmsgPinPayload(int64 payload_id);
extern int64 RmsgFindPayload(bytea *data, Oid owner);
extern uint64 RmsgContentHash(bytea *data);
extern bytea *RmsgReadPayload(int64 payload_id);
extern bytea *RmsgReadInlineData(int64 msg_id);
extern int64 RmsgCollectPayloads(void);

/* dedup/store.c: how a put stores its data */
#define RMSG_MIN_SHARED_SIZE 256

extern int	rmsg_inline_payload_max;
extern bool RmsgStoreData(RmsgDedupMode mode, Oid owner, bytea *data,
						  RmsgTokenData *source, bool will_share,
						  RmsgStoredData *out);

#endif							/* RMSG_DEDUP_H */
