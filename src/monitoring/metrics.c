/*-------------------------------------------------------------------------
 *
 * metrics.c
 *	  rmsg.metrics(): the extension's figures in the Prometheus text format.
 *
 * Monitoring systems read numbers as lines of "name{label="value"} number",
 * each family of lines after a "# HELP" and a "# TYPE" line.  This function
 * writes them from the same views an operator queries (rmsg.queues,
 * rmsg.instances, rmsg.worker, rmsg.called_components, rmsg.log_stats), so
 * the two never disagree; a scrape of a Prometheus server through an HTTP
 * exporter, or a script, takes the text as it is.  The counters (_total)
 * count since the server started, as the views' do; a restart resets
 * them, which Prometheus' rate() expects.
 *
 * It is for monitoring roles (EXECUTE is granted to pg_read_all_stats) and
 * shows every queue of the database: the views are read as the extension's
 * owner, as every statement of ours is (core/kept_plans.c).  Label values
 * are escaped as the format asks (backslash, double quote, newline), since
 * queue names may hold any character.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"

#include "core/core.h"

PG_FUNCTION_INFO_V1(rmsg_metrics);

/* One line family, read from one column of a query's rows. */
typedef struct Metric
{
	const char *name;
	const char *type;			/* "gauge" or "counter" */
	const char *help;
	const char *column;
	const char *state;			/* the value of label "state", or NULL */
} Metric;

/* One query, its label columns and the families read from its rows. */
typedef struct MetricSource
{
	RmsgPlan   *plan;
	const char *labels[3];		/* columns that become labels, NULL-ended */
	const Metric *metrics;
	int			nmetrics;
} MetricSource;

static RmsgPlan queues_plan = {
	"SELECT queue, ready, in_flight, delayed, dead,"
	"       coalesce(extract(epoch FROM oldest_ready_age), 0) AS oldest_ready_age,"
	"       paused::int AS paused, payload_bytes, puts, acks, dead_lettered,"
	"       stale_receipts, group_waiting, groups_in_flight"
	"  FROM rmsg.queues ORDER BY queue COLLATE \"C\"",
	0, {0}
};

static const Metric queue_metrics[] = {
	{"rmsg_queue_messages", "gauge", "Messages of the queue, by state.", "ready", "ready"},
	{"rmsg_queue_messages", "gauge", NULL, "in_flight", "in_flight"},
	{"rmsg_queue_messages", "gauge", NULL, "delayed", "delayed"},
	{"rmsg_queue_messages", "gauge", NULL, "dead", "dead"},
	{"rmsg_queue_messages", "gauge", NULL, "group_waiting", "group_waiting"},
	{"rmsg_queue_groups_in_flight", "gauge", "Message groups with a message in flight.",
	 "groups_in_flight", NULL},
	{"rmsg_queue_oldest_ready_age_seconds", "gauge",
	 "Seconds since the oldest ready message was put (0: none ready).", "oldest_ready_age", NULL},
	{"rmsg_queue_paused", "gauge", "1 while the queue is paused.", "paused", NULL},
	{"rmsg_queue_payload_bytes", "gauge", "Bytes of data of the queue's live messages.",
	 "payload_bytes", NULL},
	{"rmsg_queue_puts_total", "counter", "Messages put since the server started.", "puts", NULL},
	{"rmsg_queue_acks_total", "counter", "Messages acked since the server started.", "acks", NULL},
	{"rmsg_queue_dead_lettered_total", "counter",
	 "Messages that used up their deliveries since the server started.", "dead_lettered", NULL},
	{"rmsg_queue_stale_receipts_total", "counter",
	 "Acks, nacks and extends refused for a lease that was gone, since the server started.",
	 "stale_receipts", NULL},
};

static RmsgPlan instances_plan = {
	"SELECT mode, count(*) AS instances, sum(ready) AS ready, sum(deferred) AS deferred,"
	"       sum(in_flight) AS in_flight"
	"  FROM rmsg.instances GROUP BY mode ORDER BY mode",
	0, {0}
};

static const Metric instance_metrics[] = {
	{"rmsg_instances", "gauge", "Instances, by mode.", "instances", NULL},
	{"rmsg_instance_messages", "gauge", "Messages of the instances of a mode, by state.",
	 "ready", "ready"},
	{"rmsg_instance_messages", "gauge", NULL, "deferred", "deferred"},
	{"rmsg_instance_messages", "gauge", NULL, "in_flight", "in_flight"},
};

static RmsgPlan workers_plan = {
	"SELECT worker::text AS worker, database, (pid IS NOT NULL)::int AS up, processed,"
	"       errors, retried, dead_lettered"
	"  FROM rmsg.worker ORDER BY worker",
	0, {0}
};

static const Metric worker_metrics[] = {
	{"rmsg_worker_up", "gauge", "1 while the background worker runs.", "up", NULL},
	{"rmsg_worker_processed_total", "counter", "Messages the worker's handlers handled.",
	 "processed", NULL},
	{"rmsg_worker_errors_total", "counter", "Handler calls that failed.", "errors", NULL},
	{"rmsg_worker_retried_total", "counter", "Failed messages given back for a retry.",
	 "retried", NULL},
	{"rmsg_worker_dead_lettered_total", "counter",
	 "Failed messages dead-lettered by the worker.", "dead_lettered", NULL},
};

static RmsgPlan totals_plan = {
	"SELECT l.forces, l.forces_avoided, l.payload_bytes_written,"
	"       l.payload_bytes_referenced, l.payloads_collected,"
	"       c.components, c.calls"
	"  FROM rmsg.log_stats l,"
	"       (SELECT count(*) AS components, coalesce(sum(calls), 0) AS calls"
	"          FROM rmsg.called_components) c",
	0, {0}
};

static const Metric total_metrics[] = {
	{"rmsg_log_forces_total", "counter",
	 "WAL flushes the committed interaction contract asked for.", "forces", NULL},
	{"rmsg_log_forces_avoided_total", "counter",
	 "Calls sent without a flush that a force-every-call protocol would have made.",
	 "forces_avoided", NULL},
	{"rmsg_payload_bytes_written_total", "counter", "Bytes of message data written.",
	 "payload_bytes_written", NULL},
	{"rmsg_payload_bytes_referenced_total", "counter",
	 "Bytes of message data put by reference instead of written again.",
	 "payload_bytes_referenced", NULL},
	{"rmsg_payloads_collected_total", "counter",
	 "Payload rows removed once no message referenced them.", "payloads_collected", NULL},
	{"rmsg_called_components", "gauge", "Called components the contract tracks.",
	 "components", NULL},
	{"rmsg_contract_calls_total", "counter", "Calls made under the contract.", "calls", NULL},
};

static const MetricSource sources[] = {
	{&queues_plan, {"queue", NULL}, queue_metrics, lengthof(queue_metrics)},
	{&instances_plan, {"mode", NULL}, instance_metrics, lengthof(instance_metrics)},
	{&workers_plan, {"worker", "database", NULL}, worker_metrics, lengthof(worker_metrics)},
	{&totals_plan, {NULL}, total_metrics, lengthof(total_metrics)},
};

/* A label's value, escaped as the text format asks. */
static void
AppendLabelValue(StringInfo buf, const char *value)
{
	for (const char *c = value; *c != '\0'; c++)
	{
		if (*c == '\\')
			appendStringInfoString(buf, "\\\\");
		else if (*c == '"')
			appendStringInfoString(buf, "\\\"");
		else if (*c == '\n')
			appendStringInfoString(buf, "\\n");
		else
			appendStringInfoChar(buf, *c);
	}
}

/* The "{label="value",...}" of one row, or nothing when there are none. */
static void
AppendLabels(StringInfo buf, const MetricSource *source, uint64 row, const char *state)
{
	bool		any = false;

	for (int i = 0; source->labels[i] != NULL; i++)
	{
		bool		isnull;
		Datum		value;

		value = RmsgSpiValue(row, source->labels[i], &isnull);
		appendStringInfoString(buf, any ? "," : "{");
		appendStringInfo(buf, "%s=\"", source->labels[i]);
		AppendLabelValue(buf, isnull ? "" : TextDatumGetCString(value));
		appendStringInfoChar(buf, '"');
		any = true;
	}
	if (state != NULL)
	{
		appendStringInfoString(buf, any ? "," : "{");
		appendStringInfo(buf, "state=\"%s\"", state);
		any = true;
	}
	if (any)
		appendStringInfoChar(buf, '}');
}

/* Runs one source's query and writes its families. */
static void
AppendSource(StringInfo buf, const MetricSource *source)
{
	uint64		nrows;

	RmsgPlanExecute(source->plan, NULL, NULL, false, 0);
	nrows = SPI_processed;
	for (int m = 0; m < source->nmetrics; m++)
	{
		const Metric *metric = &source->metrics[m];
		int			column = SPI_fnumber(SPI_tuptable->tupdesc, metric->column);

		if (column <= 0)
			elog(ERROR, "metrics query lacks column \"%s\"", metric->column);
		/* the first line of a family names it; the others share it */
		if (metric->help != NULL)
			appendStringInfo(buf, "# HELP %s %s\n# TYPE %s %s\n",
							 metric->name, metric->help, metric->name, metric->type);
		for (uint64 row = 0; row < nrows; row++)
		{
			char	   *value = SPI_getvalue(SPI_tuptable->vals[row],
											 SPI_tuptable->tupdesc, column);

			if (value == NULL)
				continue;		/* not counted: no line */
			appendStringInfoString(buf, metric->name);
			AppendLabels(buf, source, row, metric->state);
			appendStringInfo(buf, " %s\n", value);
		}
	}
}

/* rmsg.metrics() -> text */
Datum
rmsg_metrics(PG_FUNCTION_ARGS)
{
	StringInfoData buf;

	RmsgEnter("rmsg.metrics", false);
	/* made before SPI connects, so it outlives SPI's memory */
	initStringInfo(&buf);
	RmsgSpiConnect();
	for (int i = 0; i < lengthof(sources); i++)
		AppendSource(&buf, &sources[i]);
	RmsgSpiFinish();
	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}
