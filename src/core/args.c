/*-------------------------------------------------------------------------
 *
 * args.c
 *	  Argument checks shared by the SQL-callable functions.
 *
 * Every check runs before anything is written, so bad input changes
 * nothing; each error names the bad value and carries the SQLSTATE the
 * README lists.  RmsgEnter is the first thing every SQL-callable function
 * does: it refuses a writer in a read-only transaction or on a standby, and
 * SQL objects of another version than the library's.  Times are checked
 * arithmetic: an interval that would carry a time past what a timestamp can
 * hold is refused with 22008, never wrapped round.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "common/int.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "core/core.h"

/* rmsg.max_payload_size (recoverable_msg.c defines the setting) */
int			rmsg_max_payload_size = 1024 * 1024;

/*
 * The start of every SQL-callable function: `function` is its name for
 * messages; `writes` says it changes something.  A writer refuses a
 * standby and a read-only transaction (25006) before touching anything,
 * as the executor refuses an INSERT there.
 */
void
RmsgEnter(const char *function, bool writes)
{
	if (writes)
	{
		PreventCommandDuringRecovery(function);
		PreventCommandIfReadOnly(function);
	}
	(void) RmsgGetRelations();
}

/*
 * An argument that must not be NULL (22004).  The SQL functions are not
 * STRICT, so that a NULL gets an error that names it rather than a NULL
 * result that a caller might take for "nothing happened".
 */
void
RmsgRequireArg(FunctionCallInfo fcinfo, int argno, const char *what)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
}

/* A text argument that must not be NULL, as a C string. */
char *
RmsgTextArg(FunctionCallInfo fcinfo, int argno, const char *what)
{
	RmsgRequireArg(fcinfo, argno, what);
	return text_to_cstring(PG_GETARG_TEXT_PP(argno));
}

/*
 * Names are 1 to 63 ASCII letters, digits, '_', '-' or '.', so that they read
 * the same in logs, views and any tool that quotes them.
 */
void
RmsgCheckName(const char *name, const char *what)
{
	size_t		len = strlen(name);

	if (len == 0 || len > RMSG_NAME_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s name \"%s\"", what, name),
				 errdetail("A %s name has 1 to %d characters.", what, RMSG_NAME_MAX)));

	for (const char *c = name; *c; c++)
	{
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
			  (*c >= '0' && *c <= '9') || *c == '_' || *c == '-' || *c == '.'))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s name \"%s\"", what, name),
					 errdetail("A %s name may contain only ASCII letters, digits, \"_\", \"-\" and \".\".", what)));
	}
}

/* An interval as the user wrote it, for messages. */
static char *
IntervalText(Interval *iv)
{
	return DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(iv)));
}

/*
 * An interval argument in microseconds.  A month counts as 30 days, as in
 * interval arithmetic on timestamps without a calendar.  Negative intervals
 * (and zero, unless allowed) are refused with 22023; one that would carry
 * the current time past the end of the timestamp range with 22008.
 */
int64
RmsgIntervalArg(FunctionCallInfo fcinfo, int argno, const char *what,
				int64 if_null, bool allow_zero)
{
	Interval   *iv;
	int64		usecs;
	int64		days_usecs;
	int64		days;

	if (PG_ARGISNULL(argno))
		return if_null;

	iv = PG_GETARG_INTERVAL_P(argno);
	days = (int64) iv->month * DAYS_PER_MONTH + iv->day;	/* cannot overflow */
	if (pg_mul_s64_overflow(days, USECS_PER_DAY, &days_usecs) ||
		pg_add_s64_overflow(iv->time, days_usecs, &usecs))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("%s \"%s\" is out of range", what, IntervalText(iv))));

	if (allow_zero && usecs < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be zero or positive, not \"%s\"",
						what, IntervalText(iv))));
	if (!allow_zero && usecs <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be positive, not \"%s\"",
						what, IntervalText(iv))));

	/*
	 * Checked against now, with a day to spare for the later "now" at which
	 * it is added: a time that far in the future is none a queue needs.
	 */
	{
		TimestampTz end;

		if (pg_add_s64_overflow(GetCurrentTimestamp(), usecs, &end) ||
			pg_add_s64_overflow(end, USECS_PER_DAY, &end) ||
			!IS_VALID_TIMESTAMP(end))
			ereport(ERROR,
					(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
					 errmsg("%s \"%s\" is out of range", what, IntervalText(iv)),
					 errdetail("It would reach beyond the last timestamp PostgreSQL can represent.")));
	}
	return usecs;
}

/*
 * The length of a lease (get, receive, receive_any, extend), in
 * microseconds: one rule for all of them.  It must be given (22004), and
 * may be zero: a lease that ends at once, so the message counts a delivery
 * and is ready again immediately (or, for extend, the lease ends now).
 */
int64
RmsgVisibilityArg(FunctionCallInfo fcinfo, int argno)
{
	RmsgRequireArg(fcinfo, argno, "visibility");
	return RmsgIntervalArg(fcinfo, argno, "visibility", 0, true);
}

/*
 * base + usecs, for a time an interval argument (or a setting) gave: an
 * overflow is an error, never a wrap.
 */
TimestampTz
RmsgTimeAfter(TimestampTz base, int64 usecs)
{
	TimestampTz result;

	if (pg_add_s64_overflow(base, usecs, &result) || !IS_VALID_TIMESTAMP(result))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	return result;
}

/*
 * A count argument ("max", "batch") that must be 1 to limit: each message
 * taken needs memory before the first is found.
 */
int32
RmsgCountArg(FunctionCallInfo fcinfo, int argno, const char *what, int32 limit)
{
	int32		value;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
	value = PG_GETARG_INT32(argno);
	if (value < 1 || value > limit)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be between 1 and %d, not %d", what, limit, value)));
	return value;
}

/*
 * Any payload (a message's, a call's request or reply, the data a data
 * token names) must fit rmsg.max_payload_size: 54000 otherwise.
 */
void
RmsgCheckPayloadSize(Size size)
{
	if (size > (Size) rmsg_max_payload_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("payload of %zu bytes exceeds rmsg.max_payload_size (%d bytes)",
						size, rmsg_max_payload_size),
				 errhint("Raise rmsg.max_payload_size, or store large data elsewhere and put a reference to it.")));
}

/* A payload argument that must not be NULL, within rmsg.max_payload_size. */
bytea *
RmsgPayloadArg(FunctionCallInfo fcinfo, int argno)
{
	bytea	   *payload;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload must not be null")));
	payload = PG_GETARG_BYTEA_PP(argno);
	RmsgCheckPayloadSize(VARSIZE_ANY_EXHDR(payload));
	return payload;
}

/* Headers are a JSON object or NULL. */
void
RmsgCheckHeaders(FunctionCallInfo fcinfo, int argno)
{
	Jsonb	   *headers;

	if (PG_ARGISNULL(argno))
		return;
	headers = PG_GETARG_JSONB_P(argno);
	if (!JB_ROOT_IS_OBJECT(headers))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("headers must be a JSON object, not %s",
						JsonbToCString(NULL, &headers->root, VARSIZE(headers)))));
}

/*
 * A short text argument that names something (a put's dedup_id, a
 * message's group_id), or NULL when not given: 1 to RMSG_MAX_KEY_BYTES
 * bytes, else 22023.  They are keys, not data.
 */
char *
RmsgKeyArg(FunctionCallInfo fcinfo, int argno, const char *what)
{
	text	   *arg;
	int			len;

	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
		return NULL;
	arg = PG_GETARG_TEXT_PP(argno);
	len = VARSIZE_ANY_EXHDR(arg);
	if (len == 0 || len > RMSG_MAX_KEY_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must have 1 to %d bytes, not %d", what, RMSG_MAX_KEY_BYTES, len)));
	return text_to_cstring(arg);
}
