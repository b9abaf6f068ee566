/*-------------------------------------------------------------------------
 *
 * receipts.c
 *	  The receipt of a lease: a number that names one lease of one message,
 *	  so that a consumer whose lease ran out cannot act on the message
 *	  another consumer has taken since.
 *
 * A receipt is not stored: it is a hash of what makes a lease unique,
 * computed again whenever one is checked.  Every lease counts up the
 * message's deliveries, so (msg_id, deliveries) differs from one lease of
 * a message to the next.  A queue message's deliveries can start over (a
 * dead letter moved to its dead-letter queue starts at 0), but that always
 * moves its visible_at too, and so do a nack with a delay and the worker's
 * retry: the hash covers visible_at as well.  An instance message never
 * starts over.  Storing a random number per lease would have cost every
 * lease more WAL than the whole row change: PostgreSQL logs a HOT update
 * without the unchanged bytes at the start and end of the row, and a
 * column added at the end, after the payload, would have put the payload
 * into every lease's WAL record.
 *
 * A receipt acts (lease.c, remove.c) only while its lease holds: the
 * message's current deliveries (and visible_at) hash to it, and its lease
 * has not run out.  A nack without a delay ends the lease at once; an
 * instance's nack with a delay keeps the lease until then, to hold its line
 * in order, and so its receipt holds as long.  Receipts are not secrets:
 * a role that may take a queue's messages may ack them without one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"

#include "queue/queue.h"

/*
 * The receipt of the lease of message msg_id after its `deliveries`-th
 * delivery; epoch is the queue message's visible_at (0 for an instance
 * message).
 */
int64
RmsgReceiptOf(int64 msg_id, int32 deliveries, TimestampTz epoch)
{
	int64		parts[3];

	parts[0] = msg_id;
	parts[1] = deliveries;
	parts[2] = epoch;
	return (int64) (hash_bytes_extended((const unsigned char *) parts, sizeof(parts),
										UINT64CONST(0x524D534752435054)) & PG_INT64_MAX);
}
