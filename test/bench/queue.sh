#!/usr/bin/env bash
#
# Queue throughput, side by side in one run: recoverable_msg against a plain
# table queue (the design PGMQ uses: insert; UPDATE ... FOR UPDATE SKIP
# LOCKED to take; delete to ack) and against PgQ's pgq.insert_event.
#
#   test/bench/queue.sh                 # 5 rounds of 10 s per workload
#   ROUNDS=3 DURATION=5 test/bench/queue.sh
#   BUILD=0 test/bench/queue.sh         # use the build already installed
#
# pgbench, 4 clients, 1 KiB payloads, synchronous_commit = on, prepared
# statements.  The workloads run interleaved, round after round, each after
# a CHECKPOINT and a VACUUM so none inherits another's dirt; the table shows
# the median of the rounds, and next to it what does not depend on the
# machine's noise: forced WAL writes (pg_stat_wal.wal_sync) and WAL bytes
# per operation.  A benchmark prints figures; it passes or fails nothing.

set -euo pipefail

# shellcheck source=test/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
CLIENTS=4
PAYLOAD_BYTES=1024

start_cluster() {
    start_bench_cluster \
        "synchronous_commit = on" \
        "shared_buffers = 256MB" \
        "max_wal_size = 4GB" \
        "checkpoint_timeout = 30min" \
        "max_connections = 50"
}

sql() { run_as_pg psql -X -q -v ON_ERROR_STOP=1 -At -c "$1"; }

setup_schema() {
    sql "CREATE EXTENSION recoverable_msg"
    sql "CREATE EXTENSION pgq"
    sql "SELECT rmsg.create_queue('bench')"
    sql "SELECT pgq.create_queue('bench')" >/dev/null
    # The table queue as PGMQ builds one: an id, a visibility time with its
    # own index, a read count, the message.
    sql "CREATE TABLE table_queue (msg_id bigserial PRIMARY KEY,
             vt timestamptz NOT NULL DEFAULT now(), read_ct int NOT NULL DEFAULT 0,
             enqueued_at timestamptz NOT NULL DEFAULT now(), message bytea NOT NULL)"
    sql "CREATE INDEX ON table_queue (vt)"
    sql "CREATE TABLE batch_target (id bigserial PRIMARY KEY,
             enqueued_at timestamptz NOT NULL DEFAULT now(), message bytea NOT NULL)"
    sql "CREATE FUNCTION bench_payload() RETURNS bytea IMMUTABLE LANGUAGE sql
             AS \$\$ SELECT convert_to(repeat('x', $PAYLOAD_BYTES), 'UTF8') \$\$"
}

# pgbench scripts, one per workload.  A take that finds nothing (every
# ready row locked by the others) acks id 0, which matches no row.
write_scripts() {
    local d=$WORK/scripts
    mkdir -p "$d"
    cat >"$d/rmsg_cycle.sql" <<'SQL'
SELECT rmsg.put('bench', bench_payload());
SELECT coalesce((SELECT msg_id FROM rmsg.get('bench')), 0) AS id \gset
SELECT rmsg.ack(:id::bigint);
SQL
    cat >"$d/table_cycle.sql" <<'SQL'
INSERT INTO table_queue (message) VALUES (bench_payload());
WITH taken AS (UPDATE table_queue q SET vt = clock_timestamp() + interval '30 seconds', read_ct = read_ct + 1 WHERE q.msg_id = (SELECT msg_id FROM table_queue WHERE vt <= clock_timestamp() ORDER BY msg_id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING q.msg_id, q.message) SELECT coalesce((SELECT msg_id FROM taken), 0) AS id, (SELECT length(message) FROM taken) AS len \gset
DELETE FROM table_queue WHERE msg_id = :id;
SQL
    cat >"$d/rmsg_put.sql" <<'SQL'
SELECT rmsg.put('bench', bench_payload());
SQL
    cat >"$d/pgq_put.sql" <<'SQL'
SELECT pgq.insert_event('bench', 'bench', convert_from(bench_payload(), 'UTF8'));
SQL
    cat >"$d/rmsg_batch.sql" <<'SQL'
SELECT count(*) FROM rmsg.put_batch('bench', array_fill(bench_payload(), ARRAY[100]));
SQL
    cat >"$d/table_batch.sql" <<'SQL'
INSERT INTO batch_target (message) SELECT bench_payload() FROM generate_series(1, 100);
SQL
    chmod -R a+rX "$d"
}

# Empties what the workloads fill, then starts them from a clean slate.
reset_state() {
    sql "TRUNCATE rmsg.message, rmsg.payload, table_queue, batch_target"
    sql "VACUUM"
    sql "CHECKPOINT"
}

# run_workload NAME: one pgbench run; appends "tps syncs_per_tx bytes_per_tx".
run_workload() {
    local name=$1 before after out tps tx
    reset_state
    before=$(sql "SELECT wal_sync, wal_bytes FROM pg_stat_wal")
    out=$(run_as_pg pgbench -n -M prepared -c "$CLIENTS" -j 2 -T "$DURATION" \
        -f "$WORK/scripts/$name.sql" 2>&1) || { echo "$out"; die "pgbench failed for $name"; }
    after=$(sql "SELECT wal_sync, wal_bytes FROM pg_stat_wal")
    tps=$(grep -oP 'tps = \K[0-9.]+' <<<"$out" | head -1)
    tx=$(grep -oP 'number of transactions actually processed: \K[0-9]+' <<<"$out")
    awk -v b="$before" -v a="$after" -v tps="$tps" -v tx="$tx" 'BEGIN {
        split(b, x, "|"); split(a, y, "|");
        printf "%s %.3f %.0f\n", tps, (y[1] - x[1]) / tx, (y[2] - x[2]) / tx }' \
        >>"$WORK/results/$name"
    printf '  %-12s %10.0f scripts/s\n' "$name" "$tps"
}


report() {
    local ops_per_script
    printf '\n%-44s %12s %12s %14s\n' "workload (median of $ROUNDS rounds, $CLIENTS clients)" "ops/s" "syncs/op" "WAL bytes/op"
    for spec in "rmsg_cycle:1:rmsg put+get+ack (1 KiB)" "table_cycle:1:table queue insert+take+delete" \
                "rmsg_put:1:rmsg.put (1 KiB)" "pgq_put:1:pgq.insert_event (1 KiB)" \
                "rmsg_batch:100:rmsg.put_batch, 100 per call" "table_batch:100:100-row INSERT"; do
        IFS=: read -r name ops_per_script label <<<"$spec"
        printf '%-44s %12.0f %12.3f %14.0f\n' "$label" \
            "$(awk -v t="$(column_median "$name" 1)" -v n="$ops_per_script" 'BEGIN { print t * n }')" \
            "$(awk -v s="$(column_median "$name" 2)" -v n="$ops_per_script" 'BEGIN { print s / n }')" \
            "$(awk -v s="$(column_median "$name" 3)" -v n="$ops_per_script" 'BEGIN { print s / n }')"
    done
    ratio() { awk -v a="$(column_median "$1" 1)" -v b="$(column_median "$2" 1)" 'BEGIN { printf "%.2f", a / b }'; }
    printf '\nratios of the medians (target in brackets):\n'
    printf '  put+get+ack, rmsg / table queue:   %sx  [>= 1.5x]\n' "$(ratio rmsg_cycle table_cycle)"
    printf '  put, rmsg / pgq.insert_event:      %sx  [>= 0.9x]\n' "$(ratio rmsg_put pgq_put)"
    printf '  100 puts per call, rmsg / INSERT:  %sx\n' "$(ratio rmsg_batch table_batch)"
    printf '\nper-round ops/s (scripts/s for the cycles and batches):\n'
    for name in rmsg_cycle table_cycle rmsg_put pgq_put rmsg_batch table_batch; do
        printf '  %-12s %s\n' "$name" "$(awk '{ printf "%.0f ", $1 }' "$WORK/results/$name")"
    done
}

main() {
    bench_setup queue postgresql-15-pgq3 bc
    start_cluster
    setup_schema
    write_scripts
    log "$ROUNDS rounds of ${DURATION}s per workload, $CLIENTS clients, ${PAYLOAD_BYTES}-byte payloads, synchronous_commit = on"
    for round in $(seq 1 "$ROUNDS"); do
        log "round $round"
        for name in rmsg_cycle table_cycle rmsg_put pgq_put rmsg_batch table_batch; do
            run_workload "$name"
        done
    done
    report
}

main "$@"
