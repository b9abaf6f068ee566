#!/usr/bin/env bash
#
# Deduplicated logging, side by side in one run: the WAL a fan-out writes
# when the shared data is logged once and referenced (dedup 'token' queues:
# rmsg.put_many, puts by data token, rmsg.forward) against the WAL it writes
# when every message carries its own copy (queues created with
# dedup => 'none').
#
#   test/bench/dedup.sh                      # 3 rounds of 50 fan-outs per variant
#   ROUNDS=1 REPEAT=10 test/bench/dedup.sh   # a quick look
#   BUILD=0 test/bench/dedup.sh              # use the build already installed
#
# Workloads, each fan-out one transaction, synchronous_commit = on:
#   1. an 8-way fan-out of a 64 KiB incompressible payload:
#      (a) rmsg.put_many to 8 'token' queues (one statement, autocommit);
#      (b) BEGIN; one put, then 7 puts with payload NULL and
#          data_token => rmsg.last_data_token(); COMMIT;
#      (c) BEGIN; 8 puts of the payload to 8 'none' queues; COMMIT;
#   2. the same with a 1 KiB payload;
#   3. the seed's pattern, for 64 KiB and 1 KiB: BEGIN; get one message from
#      an input queue; put its data to 3 output queues; ack it; COMMIT;
#      (a) puts by the data_token the get returned, (b) rmsg.forward x3,
#      (c) puts of the payload bytes again, to 'none' queues.  The input
#      queue is filled before the measurement; only consume+fan-out counts.
# The payload comes from the client as a bytea literal, as an application's
# would (workload 3: the bytes the get returned), so a copy that is not
# sent is not paid for in wall time either.
#
# What is measured: WAL bytes (pg_current_wal_insert_lsn() differences
# inside the measuring session: the insert position, exact to the byte,
# where pg_current_wal_lsn() is the write position and may lag behind it),
# per fan-out, median of the rounds, and the ratio none / reference.  Next
# to it: full-page images (pg_stat_wal.wal_fpi delta, which should be 0),
# the deltas of rmsg.log_stats.payload_bytes_written and
# payload_bytes_referenced, and wall time per fan-out.  The WAL figures do
# not depend on the machine's noise and repeat from run to run; wall time
# does.
#
# How FPIs are kept out: every measurement starts from emptied rmsg tables,
# in one psql session that issues a CHECKPOINT, fills the input queue if any
# (pages created after the checkpoint never need a full-page image), runs
# WARMUP fan-outs of its own variant (they log the first touch of the
# index metapages and sequences), and only then measures.
# checkpoint_timeout = 1h and max_wal_size = 8GB keep checkpoints out of
# the measurements (the script says so if one fell inside anyway), and
# autovacuum is off so that no vacuum writes WAL into them; the script
# vacuums between measurements.  The variants run interleaved, round after
# round, each on its own queues.
#
# The server is a scratch cluster of its own (data directory under the
# work directory, a free port, run as postgres when started as root),
# stopped at exit.  A benchmark prints figures; it passes or fails nothing.

# Functions here take their own arguments, not the script's:
# shellcheck disable=SC2119

set -euo pipefail

# shellcheck source=test/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

ROUNDS=${ROUNDS:-3}
REPEAT=${REPEAT:-50}
BUILD=${BUILD:-1}
WARMUP=3
FANOUT=8    # workloads 1 and 2
OUTPUTS=3   # workload 3

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive integer, not '$REPEAT'"

WORKLOADS=(fan64k fan1k relay64k relay1k)
declare -A SIZE=([fan64k]=65536 [fan1k]=1024 [relay64k]=65536 [relay1k]=1024)
declare -A VARIANTS=([fan64k]="put_many token none" [fan1k]="put_many token none"
                     [relay64k]="token forward none" [relay1k]="token forward none")
declare -A TITLE=(
    [fan64k]="1. 8-way fan-out, 64 KiB payload"
    [fan1k]="2. 8-way fan-out, 1 KiB payload"
    [relay64k]="3. get + 3 puts of its data + ack, 64 KiB"
    [relay1k]="3. get + 3 puts of its data + ack, 1 KiB")
declare -A LABEL=(
    [fan64k.put_many]="(a) put_many to 8 'token' queues"
    [fan64k.token]="(b) put + 7 puts by data token"
    [fan64k.none]="(c) 8 puts to 'none' queues"
    [relay64k.token]="(a) 3 puts by the get's data token"
    [relay64k.forward]="(b) 3 x rmsg.forward"
    [relay64k.none]="(c) 3 puts of the bytes, 'none'")
for v in put_many token none; do LABEL[fan1k.$v]=${LABEL[fan64k.$v]}; done
for v in token forward none; do LABEL[relay1k.$v]=${LABEL[relay64k.$v]}; done

start_cluster() {
    start_bench_cluster \
        "synchronous_commit = on" \
        "shared_buffers = 256MB" \
        "max_wal_size = 8GB" \
        "checkpoint_timeout = 1h" \
        "autovacuum = off" \
        "max_connections = 20"
}

sql() { run_as_pg psql -X -q -v ON_ERROR_STOP=1 -At -c "$1"; }

queue_names() { # PREFIX COUNT: 'PREFIX_1', ..., 'PREFIX_COUNT'
    local i out=()
    for ((i = 1; i <= $2; i++)); do out+=("'$1_$i'"); done
    local IFS=,
    echo "${out[*]}"
}

setup_schema() {
    local q
    sql "CREATE EXTENSION recoverable_msg"
    # Fan-out targets: put_many (pm_*) and data tokens (dt_*) on 'token'
    # queues, plain copies (nd_*) on 'none' queues.  Workload 3: one input
    # and 3 outputs per variant.
    sql "SELECT rmsg.create_queue(q, dedup => 'token') FROM unnest(ARRAY[$(queue_names pm $FANOUT),
             $(queue_names dt $FANOUT), $(queue_names ot $OUTPUTS), $(queue_names of $OUTPUTS),
             'in_token', 'in_forward']) q" >/dev/null
    sql "SELECT rmsg.create_queue(q, dedup => 'none') FROM unnest(ARRAY[$(queue_names nd $FANOUT),
             $(queue_names on $OUTPUTS), 'in_none']) q" >/dev/null
    # WARMUP + REPEAT distinct incompressible payloads per size, the same
    # bytes for every variant and round (setseed: the same in every run).
    sql "CREATE TABLE bench_src (size int, n int, data bytea NOT NULL, PRIMARY KEY (size, n))"
    sql "ALTER TABLE bench_src ALTER data SET STORAGE EXTERNAL"
    sql "SELECT setseed(0.5);
         INSERT INTO bench_src
         SELECT s.size, n, (SELECT decode(string_agg(md5(random()::text || n || s.size || g), ''), 'hex')
                              FROM generate_series(1, s.size / 16) g)
           FROM (VALUES (65536), (1024)) s(size), generate_series(1, $((WARMUP + REPEAT))) n" >/dev/null
    q=$(sql "SELECT count(*) FILTER (WHERE length(data) <> size), count(DISTINCT data) FROM bench_src")
    [[ $q == "0|$((2 * (WARMUP + REPEAT)))" ]] || die "bench_src is not as expected: $q"
    sql "VACUUM (FREEZE, ANALYZE) bench_src"
    for q in forces forces_avoided payload_bytes_written payload_bytes_referenced; do
        sql "SELECT $q FROM rmsg.log_stats" >/dev/null || die "no rmsg.log_stats.$q: is a build with deduplicated logging installed?"
    done
}

# Empties what the workloads fill, so that every measurement starts alike.
reset_state() {
    sql "TRUNCATE rmsg.message, rmsg.lease, rmsg.dead_message, rmsg.payload"
    sql "VACUUM"
}

# fanout_sql WORKLOAD VARIANT N: the statements of fan-out N (one transaction).
fanout_sql() {
    local workload=$1 variant=$2 n=$3 i
    case $workload.$variant in
        fan*.put_many)
            echo "SELECT count(*) FROM rmsg.put_many(ARRAY[$(queue_names pm $FANOUT)], :'p_$n'::bytea);" ;;
        fan*.token)
            echo "BEGIN;"
            echo "SELECT rmsg.put('dt_1', :'p_$n'::bytea);"
            for ((i = 2; i <= FANOUT; i++)); do
                echo "SELECT rmsg.put('dt_$i', NULL::bytea, data_token => rmsg.last_data_token());"
            done
            echo "COMMIT;" ;;
        fan*.none)
            echo "BEGIN;"
            for ((i = 1; i <= FANOUT; i++)); do echo "SELECT rmsg.put('nd_$i', :'p_$n'::bytea);"; done
            echo "COMMIT;" ;;
        relay*.token)
            echo "BEGIN;"
            echo "SELECT msg_id AS id, payload AS p, data_token AS tok FROM rmsg.get('in_token') \\gset"
            for ((i = 1; i <= OUTPUTS; i++)); do
                echo "SELECT rmsg.put('ot_$i', NULL::bytea, data_token => :tok);"
            done
            echo "SELECT rmsg.ack(:id);"
            echo "COMMIT;" ;;
        relay*.forward)
            echo "BEGIN;"
            echo "SELECT msg_id AS id, payload AS p FROM rmsg.get('in_forward') \\gset"
            for ((i = 1; i <= OUTPUTS; i++)); do echo "SELECT rmsg.forward(:id, 'of_$i');"; done
            echo "SELECT rmsg.ack(:id);"
            echo "COMMIT;" ;;
        relay*.none)
            echo "BEGIN;"
            echo "SELECT msg_id AS id, payload AS p FROM rmsg.get('in_none') \\gset"
            for ((i = 1; i <= OUTPUTS; i++)); do echo "SELECT rmsg.put('on_$i', :'p'::bytea);"; done
            echo "SELECT rmsg.ack(:id);"
            echo "COMMIT;" ;;
        *) die "no fan-out for $workload.$variant" ;;
    esac
}

# The psql script of one measurement: checkpoint, fill, warm-up, then
# REPEAT fan-outs between two readings of the counters.  Prints one line:
# WAL bytes, FPIs, WAL records, payload bytes written, payload bytes
# referenced, seconds, whether a checkpoint started meanwhile.
measure_script() {
    local workload=$1 variant=$2 size=${SIZE[$1]} n
    echo '\set ON_ERROR_STOP 1'
    echo '\o /dev/null'
    echo 'CHECKPOINT;'
    if [[ $workload == relay* ]]; then
        echo "SELECT count(rmsg.put('in_$variant', data))
                FROM (SELECT data FROM bench_src WHERE size = $size ORDER BY n) s;"
    fi
    for ((n = 1; n <= WARMUP; n++)); do
        [[ $workload == fan* ]] && echo "SELECT data AS p_$n FROM bench_src WHERE size = $size AND n = $n \\gset"
        fanout_sql "$workload" "$variant" "$n"
    done
    if [[ $workload == fan* ]]; then
        for ((n = WARMUP + 1; n <= WARMUP + REPEAT; n++)); do
            echo "SELECT data AS p_$n FROM bench_src WHERE size = $size AND n = $n \\gset"
        done
    fi
    # Our own pending statistics go to pg_stat_wal now, and again after the
    # loop, so that the two readings bracket exactly the loop.
    echo 'SELECT pg_stat_force_next_flush();'
    echo "SELECT pg_current_wal_insert_lsn() AS lsn0, w.wal_fpi AS fpi0, w.wal_records AS rec0,
                 s.payload_bytes_written AS pw0, s.payload_bytes_referenced AS pr0,
                 (SELECT checkpoint_lsn FROM pg_control_checkpoint()) AS ckpt0,
                 extract(epoch FROM clock_timestamp()) AS t0
            FROM pg_stat_wal w, rmsg.log_stats s \\gset"
    for ((n = WARMUP + 1; n <= WARMUP + REPEAT; n++)); do
        fanout_sql "$workload" "$variant" "$n"
    done
    echo "SELECT extract(epoch FROM clock_timestamp()) AS t1, pg_current_wal_insert_lsn() AS lsn1 \\gset"
    echo 'SELECT pg_stat_force_next_flush();'
    echo '\o'
    echo "SELECT pg_wal_lsn_diff(:'lsn1', :'lsn0'), w.wal_fpi - :fpi0, w.wal_records - :rec0,
                 s.payload_bytes_written - :pw0, s.payload_bytes_referenced - :pr0, :t1 - :t0,
                 (SELECT checkpoint_lsn FROM pg_control_checkpoint()) <> :'ckpt0'
            FROM pg_stat_wal w, rmsg.log_stats s;"
}

# measure WORKLOAD VARIANT: one measurement; appends to results/WORKLOAD.VARIANT
# "WAL-bytes/fan-out FPIs written/fan-out referenced/fan-out ms/fan-out records/fan-out".
measure() {
    local workload=$1 variant=$2 f out wal fpi rec pw pr secs ckpt
    f=$WORK/scripts/$workload.$variant.sql
    measure_script "$workload" "$variant" >"$f"
    chmod a+r "$f"
    reset_state
    out=$(run_as_pg psql -X -q -At -F ' ' -f "$f" 2>"$WORK/psql.err") || {
        cat "$WORK/psql.err" >&2
        die "psql failed for $workload.$variant (script $f; RMSG_KEEP_WORK=1 keeps it)"
    }
    read -r wal fpi rec pw pr secs ckpt <<<"$out"
    [[ $ckpt == f ]] || printf 'WARNING: a checkpoint started during %s.%s; its FPIs are in the figures\n' "$workload" "$variant"
    awk -v r="$REPEAT" -v wal="$wal" -v fpi="$fpi" -v rec="$rec" -v pw="$pw" -v pr="$pr" -v s="$secs" 'BEGIN {
        printf "%.1f %d %.1f %.1f %.3f %.2f\n", wal / r, fpi, pw / r, pr / r, s * 1000 / r, rec / r }' \
        >>"$WORK/results/$workload.$variant"
    tail -n 1 "$WORK/results/$workload.$variant" | awk -v n="$workload.$variant" '{
        printf "  %-18s %9.0f WAL bytes/fan-out  %3d FPIs  %8.3f ms/fan-out\n", n, $1, $2, $5 }'
}

column_max() { awk -v c="$2" 'NR == 1 || $c > m { m = $c } END { print m }' "$WORK/results/$1"; }

report() {
    local workload variant none ratio target
    printf '\nper fan-out, median of %d round(s) of %d fan-outs (FPIs: the most in one round)\n' "$ROUNDS" "$REPEAT"
    printf '%-38s %10s %5s %11s %11s %8s %10s\n' "workload / variant" "WAL bytes" "FPIs" \
        "written" "referenced" "ms" "none/this"
    for workload in "${WORKLOADS[@]}"; do
        printf '%s\n' "${TITLE[$workload]}"
        none=$(column_median "$workload.none" 1)
        for variant in ${VARIANTS[$workload]}; do
            ratio=base target=""
            if [[ $variant != none ]]; then
                ratio=$(awk -v a="$none" -v b="$(column_median "$workload.$variant" 1)" 'BEGIN { printf "%.2fx", a / b }')
                [[ $workload == fan64k ]] && target="  [>= 7x; 8x is the limit]"
            fi
            printf '  %-36s %10.0f %5d %11.0f %11.0f %8.3f %10s%s\n' "${LABEL[$workload.$variant]}" \
                "$(column_median "$workload.$variant" 1)" "$(column_max "$workload.$variant" 2)" \
                "$(column_median "$workload.$variant" 3)" "$(column_median "$workload.$variant" 4)" \
                "$(column_median "$workload.$variant" 5)" "$ratio" "$target"
        done
    done
    printf '\neach fan-out is one transaction: put_many one autocommit statement, the others\n'
    printf 'BEGIN ... COMMIT.  written, referenced: deltas of rmsg.log_stats.payload_bytes_written\n'
    printf 'and payload_bytes_referenced.  ms: wall time, psql round trips included.\n'
    printf '\nper-round WAL bytes per fan-out (and WAL records per fan-out):\n'
    for workload in "${WORKLOADS[@]}"; do
        for variant in ${VARIANTS[$workload]}; do
            printf '  %-18s %s\n' "$workload.$variant" \
                "$(awk '{ printf "%s%.0f (%.1f)", (NR > 1 ? "  " : ""), $1, $6 }' "$WORK/results/$workload.$variant")"
        done
    done
}

main() {
    bench_setup dedup
    start_cluster
    setup_schema
    log "$(sql "SELECT version()" | cut -d, -f1); wal_level $(sql "SHOW wal_level"), full_page_writes $(sql "SHOW full_page_writes"), wal_compression $(sql "SHOW wal_compression"), data_checksums $(sql "SHOW data_checksums")"
    log "$ROUNDS rounds of $REPEAT fan-outs (after $WARMUP warm-up) per variant, synchronous_commit = on, variants interleaved"
    for round in $(seq 1 "$ROUNDS"); do
        log "round $round"
        for workload in "${WORKLOADS[@]}"; do
            for variant in ${VARIANTS[$workload]}; do
                measure "$workload" "$variant"
            done
        done
    done
    report
}

main "$@"
