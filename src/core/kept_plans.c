/*-------------------------------------------------------------------------
 *
 * kept_plans.c
 *	  Prepared statements kept for the life of the backend, and reading
 *	  their results by column name.
 *
 * Every statement the extension runs is a static RmsgPlan: its text is
 * parsed and planned on first use and kept (SPI_keepplan), so a put or a get
 * costs an execution, never a parse.  The plan cache revalidates a kept
 * plan by itself when the tables change, e.g. after the extension is
 * dropped and created again in the same session.
 *
 * Every statement here finds its rows by key.  A queue table that has just
 * been vacuumed empty makes the planner believe a sequential scan of its one
 * page beats any index, and the plan it caches then scans the whole table
 * on every call as the queue fills again.  So our statements run with
 * enable_seqscan and enable_bitmapscan off, for the execution only:
 * whenever the plan cache replans, it picks the index scans.  A scan that
 * has no index to use (the worker's read of its handlers) then costs as
 * much as a disabled plan, which would cross jit_above_cost and have every
 * execution compiled, so JIT is off too: none of our statements reads
 * enough rows to gain from it.  All three are plain booleans without hooks,
 * so we set the variables themselves and put them back, even on error;
 * going through the GUC machinery would cost every put, get and ack an
 * allocation or two.
 *
 * Nothing outside the extension can redirect a statement.  Every statement
 * is parsed, planned and run with a search path of pg_catalog and the
 * extension's schema only (an override search path, which the plan cache
 * records and checks on every execution), so a function, operator or type
 * that someone planted in a schema of the caller's search_path (public.=
 * for int, say) is never chosen.  And every statement runs as the owner of
 * the extension's tables, as PostgreSQL's own foreign-key checks run as the
 * table's owner: applications hold no rights on our tables at all, and the
 * C functions check the rights the extension grants (privileges.c) before
 * they run anything.  Nothing but our statements and PostgreSQL's
 * foreign-key checks runs inside (relations.c refuses triggers on our
 * tables), and as a security-restricted operation it could neither switch
 * roles nor leave session state behind anyway.
 *
 * Results are read by column name (RmsgSpiValue and its kin), never by
 * position: the statement's SELECT list or RETURNING clause names what each
 * column is, and the code that reads it says the same name.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "fmgr.h"
#include "jit/jit.h"
#include "miscadmin.h"
#include "optimizer/cost.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"

#include "core/core.h"

/*
 * The kept plan of a statement, prepared on its first use in this backend.
 * Called with the search path and user of RmsgPlanExecute in place, so the
 * names in the statement resolve as they will when it runs.
 */
static SPIPlanPtr
RmsgPlanGet(RmsgPlan *p)
{
	if (p->plan == NULL)
	{
		/*
		 * Generic plans: our statements look up a few rows by key, and a
		 * custom plan per execution would cost a planning run per call.
		 */
		SPIPlanPtr	plan = SPI_prepare_cursor(p->sql, p->nargs, p->argtypes,
											  CURSOR_OPT_GENERIC_PLAN);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s",
				 p->sql, SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		p->plan = plan;
	}
	return p->plan;
}

/*
 * Run a kept statement.  With latest_snapshot, a transaction-snapshot
 * isolation level (REPEATABLE READ, SERIALIZABLE) still sees the newest
 * committed state: for the queue catalog (a queue dropped after our snapshot
 * is not written to), for drop_queue (which must delete what it waited for)
 * and for payload collection, which must see references made after our
 * snapshot.  READ COMMITTED takes a fresh snapshot per statement anyway.
 */
int
RmsgPlanExecute(RmsgPlan *p, Datum *values, const bool *isnull,
				bool latest_snapshot, long count)
{
	return RmsgPlanExecuteIn(p, values, isnull,
							 latest_snapshot && IsolationUsesXactSnapshot()
							 ? GetLatestSnapshot() : InvalidSnapshot,
							 count);
}

/*
 * Run a kept statement with the given snapshot (InvalidSnapshot: as a
 * statement would, a fresh one under READ COMMITTED): for a caller that
 * must read shared memory after the snapshot was taken, so that what it
 * reads is at least as new as what the statement sees.
 */
int
RmsgPlanExecuteIn(RmsgPlan *p, Datum *values, const bool *isnull,
				  Snapshot snapshot, long count)
{
	const RmsgRelations *rels = RmsgGetRelations();
	char		nulls[lengthof(p->argtypes)];
	int			rc;
	bool		saved_seqscan = enable_seqscan;
	bool		saved_bitmapscan = enable_bitmapscan;
	bool		saved_jit = jit_enabled;
	Oid			saved_user;
	int			saved_context;

	Assert(p->nargs <= lengthof(p->argtypes));
	for (int i = 0; i < p->nargs; i++)
		nulls[i] = (isnull != NULL && isnull[i]) ? 'n' : ' ';

	GetUserIdAndSecContext(&saved_user, &saved_context);
	PushOverrideSearchPath(rels->search_path);
	SetUserIdAndSecContext(rels->owner, saved_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION | SECURITY_NOFORCE_RLS);
	enable_seqscan = false;
	enable_bitmapscan = false;
	jit_enabled = false;
	PG_TRY();
	{
		SPIPlanPtr	plan = RmsgPlanGet(p);

		if (snapshot != InvalidSnapshot)
			rc = SPI_execute_snapshot(plan, values, nulls, snapshot, InvalidSnapshot,
									  false, true, count);
		else
			rc = SPI_execute_plan(plan, values, nulls, false, count);
	}
	PG_FINALLY();
	{
		enable_seqscan = saved_seqscan;
		enable_bitmapscan = saved_bitmapscan;
		jit_enabled = saved_jit;
		SetUserIdAndSecContext(saved_user, saved_context);
		PopOverrideSearchPath();
	}
	PG_END_TRY();

	if (rc < 0)
		elog(ERROR, "SPI execution failed for \"%s\": %s",
			 p->sql, SPI_result_code_string(rc));
	return rc;
}

/*
 * SPI_connect and SPI_finish, raising an internal error when they fail:
 * neither can fail in correct code, so no caller checks.
 */
void
RmsgSpiConnect(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

void
RmsgSpiFinish(void)
{
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
}

/*
 * Reading the current SPI result by column name.  A statement says in its
 * SELECT list or RETURNING clause what each column is; reading them by
 * name keeps the code right when a statement gains or reorders a column,
 * and says at each read what is being read.
 */
static int
ColumnNumber(const char *column)
{
	int			number = SPI_fnumber(SPI_tuptable->tupdesc, column);

	if (number <= 0)
		elog(ERROR, "statement result has no column \"%s\"", column);
	return number;
}

/* A column of row `row` of the current SPI result; *isnull says if it is NULL. */
Datum
RmsgSpiValue(uint64 row, const char *column, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
						 ColumnNumber(column), isnull);
}

/* A column that the statement never leaves NULL. */
Datum
RmsgSpiNotNull(uint64 row, const char *column)
{
	bool		isnull;
	Datum		value = RmsgSpiValue(row, column, &isnull);

	if (isnull)
		elog(ERROR, "statement result column \"%s\" is null", column);
	return value;
}

/*
 * A varlena column (bytea, jsonb, text), detoasted and copied out of SPI's
 * memory so that it outlives SPI_finish.
 */
Datum
RmsgSpiCopyValue(uint64 row, const char *column, bool *isnull)
{
	Datum		value = RmsgSpiValue(row, column, isnull);

	if (*isnull)
		return (Datum) 0;
	return SPI_datumTransfer(PointerGetDatum(PG_DETOAST_DATUM_PACKED(value)),
							 false, -1);
}

/*
 * A text column as a C string (NULL stays NULL), in the current memory
 * context: SPI's while connected, so copy what must outlive SPI_finish.
 */
char *
RmsgSpiText(uint64 row, const char *column)
{
	bool		isnull;
	Datum		value = RmsgSpiValue(row, column, &isnull);

	return isnull ? NULL : TextDatumGetCString(value);
}

/*
 * Runs one of the extension's own SQL functions as the current role, with
 * that role's rights and the function's own checks (where RmsgPlanExecute
 * runs our statements as the tables' owner): rmsg.call's prepare_call,
 * say.  The statement names everything with its schema and gives its
 * argument types, so nothing comes from the caller's search_path.  *plan
 * is prepared on first use and kept for the backend; the plan cache
 * replans it when the objects change.  Inside SPI; one row expected.
 */
void
RmsgExecuteAsCaller(SPIPlanPtr *plan, int nargs, const char *sql, Oid *types,
					Datum *args, const char *nulls)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	prepared = SPI_prepare(sql, nargs, types);

		if (prepared == NULL || SPI_keepplan(prepared) != 0)
			elog(ERROR, "could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
		*plan = prepared;
	}
	if (SPI_execute_plan(*plan, args, nulls, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "\"%s\" returned no row", sql);
}
