/*-------------------------------------------------------------------------
 *
 * args.c
 *	  Argument checks shared by the SQL-callable functions.
 *
 * Every check runs before anything is written, so bad input changes
 * nothing; each error names the bad value and carries the SQLSTATE the
 * README lists.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "rmsg.h"

/* A text argument that must not be NULL, as a C string. */
char *
RmsgTextArg(FunctionCallInfo fcinfo, int argno, const char *what)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
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

/*
 * An interval argument in microseconds.  A month counts as 30 days, as in
 * interval arithmetic on timestamps without a calendar.  Negative intervals
 * (and zero, unless allowed) are refused.
 */
int64
RmsgIntervalArg(FunctionCallInfo fcinfo, int argno, const char *what,
				int64 if_null, bool allow_zero)
{
	Interval   *iv;
	int64		usecs;
	int64		days;

	if (PG_ARGISNULL(argno))
		return if_null;

	iv = PG_GETARG_INTERVAL_P(argno);
	days = (int64) iv->month * DAYS_PER_MONTH + iv->day;

	/* beyond ~290,000 years the sum would overflow; no lease needs that */
	if (days > INT64CONST(100000000) || days < -INT64CONST(100000000))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" is out of range", what,
						DatumGetCString(DirectFunctionCall1(interval_out,
															IntervalPGetDatum(iv))))));
	usecs = iv->time + days * USECS_PER_DAY;

	if (usecs < 0 || (usecs == 0 && !allow_zero))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be %s, not \"%s\"", what,
						allow_zero ? "zero or positive" : "positive",
						DatumGetCString(DirectFunctionCall1(interval_out,
															IntervalPGetDatum(iv))))));
	return usecs;
}

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
