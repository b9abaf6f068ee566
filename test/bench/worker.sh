#!/usr/bin/env bash
#
# The background worker against external consumers, side by side in one
# run: how fast the worker drains a queue through a trivial handler, what
# its batches buy, and how that compares with the same messages consumed
# by pgbench clients doing get + ack.
#
#   test/bench/worker.sh                    # 5 rounds of 20,000 messages per case: about 1 min
#   ROUNDS=1 MESSAGES=2000 test/bench/worker.sh   # a quick look, about 10 s
#   BUILD=0 test/bench/worker.sh            # use the build already installed
# Other knobs: BATCH (10, the batch of case worker_batch), WORKERS (2,
# rmsg.worker_count), CLIENTS (2, pgbench clients and threads; MESSAGES must
# be a multiple of it), FILL_TX (4, transactions of the preload),
# TIMEOUT (600, seconds a worker run may take before it is given up).
#
# Cases, each on a queue preloaded with MESSAGES (default 20,000) 100-byte
# payloads (a sequence number, then padding; all different), put in
# FILL_TX transactions of rmsg.put_batch while no handler is subscribed
# (the workers stay idle), then VACUUM ANALYZE and CHECKPOINT:
#   worker        the handler bench_handler(payload bytea), a SQL function
#                 whose body is SELECT 1, subscribed with batch => 1: every
#                 message one worker transaction (lease, handler call in a
#                 subtransaction, ack), one synchronous commit each.  Timed
#                 from one psql session, a coprocess fed query by query:
#                 it subscribes (the commit wakes the workers;
#                 rmsg.worker_naptime is 10 s, so a worker that waited for
#                 its naptime would show), reads clock_timestamp() (the
#                 start), then polls the sum of rmsg.worker.processed (a
#                 read of shared memory) every 10 ms until it has grown by
#                 MESSAGES, the end being that poll's clock_timestamp().
#                 The workers count after their commit, so the queue is
#                 empty by then, which is checked afterwards in
#                 rmsg.queues.  The script sleeps between the polls, not
#                 the server: the session holds no snapshot while it waits
#                 (a plpgsql loop would hold one from one COMMIT to the
#                 next, and the workers could then not mark the index
#                 entries of the messages they deleted dead: each take
#                 would walk over all of them, a slow-down that grows with
#                 the run and belongs to the benchmark, not the worker).
#   worker_batch  the same, subscribed with batch => BATCH (default 10).
#   pgbench       no handler subscribed; pgbench, CLIENTS clients (default
#                 2, one thread each), prepared statements, -t MESSAGES /
#                 CLIENTS, each transaction of the script being
#                     SELECT coalesce(max(msg_id), 0) AS id FROM rmsg.get('bench') \gset
#                     SELECT rmsg.ack(:id::bigint);
#                 in autocommit: the at-least-once pattern, a lazy commit
#                 for the get (a lease only) and a synchronous one for the
#                 ack.  msgs/s is pgbench's tps (without the connection
#                 time); the queue must be empty afterwards, which proves
#                 every get got a message and every ack removed it.
# Figures per case: messages per second; WAL bytes per message
# (pg_current_wal_insert_lsn() difference around the timed part: the
# insert position, exact to the byte); WAL fsyncs per message
# (pg_stat_wal.wal_sync difference, every process's syncs, the walwriter's
# included, read once the clients are gone, the workers idle and the
# counter still, since a worker reports its statistics when it goes idle);
# full-page images per 1000 messages (pg_stat_wal.wal_fpi); for the worker
# cases the rmsg.worker.processed and errors deltas (printed with a check
# that they are MESSAGES and 0), each worker's share, to see that both
# work, the time from the subscribe's commit to the first poll that saw a
# message handled (the workers wake at once, then read the handlers again
# before they take anything), and the rate of the second half of the
# messages over that of the first, counted from that poll (below 1x when
# handling slows down as the queue drains: a take steps over the index
# entries of the messages already handled, which only a VACUUM removes;
# rmsg.get does the same, so pgbench slows as well with a bigger backlog).
# Printed: the median of the rounds, and the ratios worker / pgbench,
# worker_batch / pgbench and worker_batch / worker, of the medians and
# round by round (the cases of a round ran close together).  The cases run
# interleaved, round after round, in reverse order every other round so
# that drift over the run does not favour a case, after a warm-up run of
# each case (MESSAGES / 10 messages, not counted).  Before each case the
# rmsg tables are truncated, so each starts from the same table; its first
# touch of a page after the CHECKPOINT writes a full-page image, alike in
# every case.
#
# Target (issue 6): the worker can use both cores; with WORKERS = 2 it
# should handle messages at least about as fast as 2 external consumers
# (worker / pgbench near 1x or above), and batching should buy more.  No
# pass/fail: the figures are printed.
#
# Cluster: synchronous_commit = on, rmsg.worker_count = WORKERS,
# rmsg.worker_naptime = 10s, autovacuum off, checkpoint_timeout = 1h and
# max_wal_size = 8GB, so that nothing but the measured work writes WAL
# while it runs (the script says so if a checkpoint fell inside anyway).
# Worker 0 runs its maintenance every naptime even when idle; it finds
# nothing to do here.  The server is a scratch cluster of its own (data
# directory under the work directory, a free port, run as postgres when
# started as root), stopped at exit.  The machine may be small (2 cores)
# and noisy: the wall-time figures are medians, the WAL figures barely
# depend on it.

# Functions here take their own arguments, not the script's:
# shellcheck disable=SC2119

set -euo pipefail

# shellcheck source=test/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

ROUNDS=${ROUNDS:-5}
MESSAGES=${MESSAGES:-20000}
BATCH=${BATCH:-10}
WORKERS=${WORKERS:-2}
CLIENTS=${CLIENTS:-2}
FILL_TX=${FILL_TX:-4}
TIMEOUT=${TIMEOUT:-600}
BUILD=${BUILD:-1}
PAYLOAD_BYTES=100   # the sequence number, 10 digits, then padding
POLL_SECS=0.01      # the worker cases' poll interval

for var in ROUNDS MESSAGES BATCH WORKERS CLIENTS FILL_TX TIMEOUT; do
    [[ ${!var} =~ ^[1-9][0-9]*$ ]] || die "$var must be a positive integer, not '${!var}'"
done
((BATCH <= 1000)) || die "BATCH ($BATCH) must be at most 1000"
((WORKERS <= 32)) || die "WORKERS ($WORKERS) must be at most 32"
((MESSAGES % CLIENTS == 0)) || die "MESSAGES ($MESSAGES) must be a multiple of CLIENTS ($CLIENTS)"
((FILL_TX <= MESSAGES)) || die "FILL_TX ($FILL_TX) must be at most MESSAGES ($MESSAGES)"
# The warm-up's size: a tenth, still a multiple of CLIENTS.
WARMUP_MESSAGES=$((MESSAGES / 10 / CLIENTS * CLIENTS))
((WARMUP_MESSAGES >= CLIENTS)) || WARMUP_MESSAGES=$CLIENTS

CASES=(worker worker_batch pgbench)
declare -A LABEL=(
    [worker]="worker, batch 1 ($WORKERS workers)"
    [worker_batch]="worker, batch $BATCH ($WORKERS workers)"
    [pgbench]="pgbench get+ack, $CLIENTS clients")

start_cluster() {
    start_bench_cluster \
        "synchronous_commit = on" \
        "shared_buffers = 256MB" \
        "max_wal_size = 8GB" \
        "checkpoint_timeout = 1h" \
        "autovacuum = off" \
        "max_connections = 50" \
        "rmsg.worker_count = $WORKERS" \
        "rmsg.worker_naptime = '10s'" \
        "rmsg.database = 'postgres'"
}

sql() { run_as_pg psql -X -q -v ON_ERROR_STOP=1 -At -c "$1"; }

setup_schema() {
    sql "CREATE EXTENSION recoverable_msg"
    sql "SELECT 'rmsg.subscribe(text,regprocedure,integer)'::regprocedure" >/dev/null ||
        die "no rmsg.subscribe: is a build with the background worker installed?"
    sql "SELECT rmsg.create_queue('bench')" >/dev/null
    sql "CREATE FUNCTION bench_handler(payload bytea) RETURNS void LANGUAGE sql AS 'SELECT 1'"
    sql "CREATE FUNCTION seq_payload(g bigint) RETURNS bytea IMMUTABLE LANGUAGE sql
             AS \$\$ SELECT convert_to(lpad(g::text, 10, '0') || repeat('x', $PAYLOAD_BYTES - 10), 'UTF8') \$\$"

    # fill(n, tx): n messages into queue bench, in tx transactions of
    # rmsg.put_batch.
    sql "CREATE PROCEDURE fill(n bigint, tx int) LANGUAGE plpgsql AS \$\$
         DECLARE
             per bigint := (n + tx - 1) / tx;
             lo bigint := 1;
         BEGIN
             WHILE lo <= n LOOP
                 PERFORM count(*) FROM rmsg.put_batch('bench',
                     ARRAY(SELECT seq_payload(g) FROM generate_series(lo, least(lo + per - 1, n)) g));
                 COMMIT;
                 lo := lo + per;
             END LOOP;
         END \$\$"
}

write_scripts() {
    mkdir -p "$WORK/scripts"
    cat >"$WORK/scripts/get_ack.sql" <<'SQL'
SELECT coalesce(max(msg_id), 0) AS id FROM rmsg.get('bench') \gset
SELECT rmsg.ack(:id::bigint);
SQL
    chmod -R a+rX "$WORK/scripts"
}

# The workers come up before the extension exists and then look for it
# only every naptime; a reload sets their latches.  Waits until all of them
# are idle in the database.
wait_for_workers() {
    local i states
    sql "SELECT pg_reload_conf()" >/dev/null
    for ((i = 0; i < 300; i++)); do
        states=$(sql "SELECT string_agg(coalesce(state, 'none'), ',' ORDER BY worker) FROM rmsg.worker")
        [[ $(sql "SELECT count(*) FROM rmsg.worker WHERE pid IS NOT NULL AND state = 'idle'") == "$WORKERS" ]] &&
            return 0
        sleep 0.1
    done
    die "the $WORKERS workers are not idle after 30 s (states: $states)"
}

# Waits until the measured work has reported its statistics: no client
# backend but ours, every worker idle, and pg_stat_wal.wal_sync still for
# 100 ms (a worker reports its statistics just after it says it is idle).
wait_quiet() {
    local i last now
    for ((i = 0; i < 100; i++)); do
        [[ $(sql "SELECT (SELECT count(*) FROM pg_stat_activity
                           WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())
                       + (SELECT count(*) FROM rmsg.worker WHERE state IS DISTINCT FROM 'idle')") == 0 ]] && break
        sleep 0.05
    done
    ((i < 100)) || printf 'WARNING: clients or workers still busy 5 s after the run\n'
    last=$(sql "SELECT wal_sync FROM pg_stat_wal")
    for ((i = 0; i < 20; i++)); do
        sleep 0.1
        now=$(sql "SELECT wal_sync FROM pg_stat_wal")
        [[ $now == "$last" ]] && return 0
        last=$now
    done
}

subscribed() { sql "SELECT count(*) FROM rmsg.handlers WHERE kind = 'queue' AND target = 'bench'"; }

# prepare N: no handler, emptied rmsg tables, N messages in queue bench,
# VACUUM ANALYZE, CHECKPOINT.
prepare() {
    [[ $(subscribed) == 0 ]] || sql "SELECT rmsg.unsubscribe('bench')" >/dev/null
    sql "TRUNCATE rmsg.message, rmsg.payload, rmsg.dead_message"
    sql "CALL fill($1, $(((FILL_TX < $1) ? FILL_TX : $1)))"
    sql "VACUUM ANALYZE"
    sql "CHECKPOINT"
    wait_quiet
}

# What is left in queue bench, as "ready in_flight delayed dead".
leftover() { sql "SELECT ready, in_flight, delayed, dead FROM rmsg.queues WHERE queue = 'bench'" | tr '|' ' '; }

counters() { sql "SELECT w.wal_sync, b.checkpoints_timed + b.checkpoints_req, w.wal_fpi FROM pg_stat_wal w, pg_stat_bgwriter b"; }

# record CASE N SECS WAL_BYTES BEFORE AFTER [warmup]: appends "1 msgs/s
# 2 WAL B/msg 3 syncs/msg 4 seconds 5 FPI/1000 msgs" to results/CASE,
# unless a warm-up, and prints the line of the run.
record() {
    local name=$1 n=$2 secs=$3 wal=$4 before=$5 after=$6 warmup=${7:-} rate walb syncs fpi ckpt
    read -r rate walb syncs secs fpi ckpt < <(awk -v n="$n" -v s="$secs" -v w="$wal" -v b="$before" -v a="$after" 'BEGIN {
        split(b, x, "|"); split(a, y, "|");
        printf "%.1f %.1f %.4f %.3f %.2f %d\n", (s > 0 ? n / s : 0), w / n, (y[1] - x[1]) / n, s,
            1000 * (y[3] - x[3]) / n, y[2] - x[2] }')
    printf '  %-14s %8.0f msgs/s %5.0f WAL B/msg %6.3f syncs/msg %6.1f FPI/1000 msgs %7.2f s%s\n' \
        "$name" "$rate" "$walb" "$syncs" "$fpi" "$secs" "$(if [[ -n $warmup ]]; then echo '  (warm-up, not counted)'; fi)"
    ((ckpt == 0)) || printf 'WARNING: %s: %d checkpoint(s) fell inside the run\n' "$name" "$ckpt"
    [[ -n $warmup ]] || printf '%s %s %s %s %s\n' "$rate" "$walb" "$syncs" "$secs" "$fpi" >>"$WORK/results/$name"
}

# check_left CASE: the queue is empty after the run.
check_left() {
    local left
    left=$(leftover)
    [[ $left == "0 0 0 0" ]] ||
        printf 'WARNING: %s: queue bench not empty after the run (ready, in flight, delayed, dead: %s)\n' "$1" "$left"
}

# worker_counters: the workers' processed and errors, summed, and
# processed per worker, as "processed|errors|p0 p1 ...".
worker_counters() {
    sql "SELECT sum(coalesce(processed, 0)), sum(coalesce(errors, 0)),
                string_agg(coalesce(processed, 0)::text, ' ' ORDER BY worker) FROM rmsg.worker"
}

# ask QUERY: sends one query to the poll session; its one line of answer
# goes to ANSWER (a variable, not output: no subshell per poll).
ask() {
    printf '%s\n' "$1" >&"${POLL[1]}"
    IFS= read -r -t 60 ANSWER <&"${POLL[0]}" || die "no answer from the poll session to: $1 ($(cat "$WORK/poll.err"))"
}

# time_workers BATCH N: in one session (a psql coprocess fed query by
# query), subscribes the handler to queue bench with that batch, then polls
# the workers' processed counters (shared memory) every POLL_SECS until
# they grew by N or TIMEOUT seconds passed.  The sleeps are the script's,
# between autocommit queries: the session holds no snapshot while it
# waits, so it never keeps the workers from pruning what they deleted (a
# plpgsql loop would, holding its snapshot from one COMMIT to the next).
# Sets TW_SECS (from the subscribe's commit; -1: timed out), TW_WAL (WAL
# bytes from before the subscribe), TW_POLLS, TW_FIRST (ms from the
# subscribe's commit to the first poll that saw a message handled) and
# TW_HALVES: the rate of the second half of the messages over that of the
# first half, counted from that poll (0 when the polls were too coarse to
# tell).
time_workers() {
    local batch=$1 n=$2 p0 lsn0 t0 now p polls=0 secs=-1 sleep_fd first="" half=""
    p0=$(sql "SELECT sum(coalesce(processed, 0)) FROM rmsg.worker")
    exec {sleep_fd}<> <(:)    # read -t on it sleeps without a fork
    coproc POLL { run_as_pg psql -X -q -At -v ON_ERROR_STOP=1 2>"$WORK/poll.err"; }
    ask "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn;"
    lsn0=$ANSWER
    ask "SELECT 'subscribed' FROM rmsg.subscribe('bench', 'bench_handler(bytea)'::regprocedure, $batch);"
    ask "SELECT extract(epoch FROM clock_timestamp());"
    t0=$ANSWER
    while :; do
        ask "SELECT sum(coalesce(processed, 0)), extract(epoch FROM clock_timestamp()) FROM rmsg.worker;"
        IFS='|' read -r p now <<<"$ANSWER"
        polls=$((polls + 1))
        [[ -n $first ]] || ((p == p0)) || first=$now
        [[ -n $half ]] || ((2 * (p - p0) < n)) || half=$now
        if ((p - p0 >= n)); then
            secs=$(awk -v a="$t0" -v b="$now" 'BEGIN { printf "%.4f", b - a }')
            break
        fi
        ((${now%.*} - ${t0%.*} <= TIMEOUT)) || break
        read -r -t "$POLL_SECS" -u "$sleep_fd" || true
    done
    ask "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn - $lsn0;"
    printf '\\q\n' >&"${POLL[1]}"
    wait "$POLL_PID" || true
    exec {sleep_fd}<&-
    TW_SECS=$secs TW_WAL=$ANSWER TW_POLLS=$polls TW_FIRST=-1 TW_HALVES=0
    if [[ $secs != -1 ]]; then
        read -r TW_FIRST TW_HALVES < <(awk -v t0="$t0" -v f="$first" -v h="$half" -v e="$now" 'BEGIN {
            printf "%.1f %.2f\n", 1000 * (f - t0), (e > h && h > f ? (h - f) / (e - h) : 0) }')
    fi
}

# run_worker_case CASE BATCH [warmup]
run_worker_case() {
    local name=$1 batch=$2 warmup=${3:-} n=$MESSAGES before after w0 w1 processed errors split
    [[ -z $warmup ]] || n=$WARMUP_MESSAGES
    prepare "$n"
    before=$(counters)
    w0=$(worker_counters)
    time_workers "$batch" "$n"
    wait_quiet
    after=$(counters)
    w1=$(worker_counters)
    IFS='|' read -r processed errors split < <(awk -v b="$w0" -v a="$w1" 'BEGIN {
        split(b, x, "|"); split(a, y, "|"); k = split(x[3], px, " "); split(y[3], py, " ");
        s = ""; for (i = 1; i <= k; i++) s = s (i > 1 ? ", " : "") "w" (i - 1) " " (py[i] - px[i]);
        printf "%d|%d|%s\n", y[1] - x[1], y[2] - x[2], s }')
    [[ $TW_SECS != -1 ]] || die "$name: the workers handled only $processed of $n messages in $TIMEOUT s (errors $errors; queue: $(leftover))"
    record "$name" "$n" "$TW_SECS" "$TW_WAL" "$before" "$after" "$warmup"
    [[ -n $warmup ]] || echo "$TW_FIRST $TW_HALVES" >>"$WORK/results/$name.start"
    if [[ $processed == "$n" && $errors == 0 ]]; then
        printf '  %-14s processed +%d = %d, errors +0: ok; per worker %s; %d polls\n' \
            "" "$processed" "$n" "$split" "$TW_POLLS"
        printf '  %-14s first message handled after %s ms; second half / first half of the drain: %sx\n' \
            "" "$TW_FIRST" "$TW_HALVES"
    else
        printf 'WARNING: %s: processed +%s (expected %d), errors +%s (expected 0); per worker %s\n' \
            "$name" "$processed" "$n" "$errors" "$split"
    fi
    check_left "$name"
    sql "SELECT rmsg.unsubscribe('bench')" >/dev/null
}

# run_pgbench_case [warmup]
run_pgbench_case() {
    local warmup=${1:-} n=$MESSAGES before after lsn0 lsn1 out tps tx
    [[ -z $warmup ]] || n=$WARMUP_MESSAGES
    prepare "$n"
    before=$(counters)
    lsn0=$(sql "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
    out=$(run_as_pg pgbench -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -t $((n / CLIENTS)) \
        -f "$WORK/scripts/get_ack.sql" 2>&1) || { echo "$out"; die "pgbench failed"; }
    lsn1=$(sql "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
    wait_quiet
    after=$(counters)
    tps=$(grep -oP 'tps = \K[0-9.]+' <<<"$out" | head -1)
    tx=$(grep -oP 'number of transactions actually processed: \K[0-9]+' <<<"$out")
    [[ $tx == "$n" ]] || printf 'WARNING: pgbench: %s transactions of %d\n' "$tx" "$n"
    record pgbench "$n" "$(awk -v n="$n" -v t="$tps" 'BEGIN { print n / t }')" \
        "$(awk -v a="$lsn0" -v b="$lsn1" 'BEGIN { print b - a }')" "$before" "$after" "$warmup"
    check_left pgbench
}

run_case() {
    case $1 in
        worker) run_worker_case worker 1 "${2:-}" ;;
        worker_batch) run_worker_case worker_batch "$BATCH" "${2:-}" ;;
        pgbench) run_pgbench_case "${2:-}" ;;
    esac
}



report() {
    local name
    printf '\nqueue drain, %d messages of %d bytes per run, median of %d round(s), synchronous_commit = on\n' \
        "$MESSAGES" "$PAYLOAD_BYTES" "$ROUNDS"
    printf '%-36s %10s %10s %10s %9s %9s\n' case msgs/s "WAL B/msg" syncs/msg FPI/1000 seconds
    for name in "${CASES[@]}"; do
        printf '%-36s %10.0f %10.0f %10.3f %9.1f %9.2f\n' "${LABEL[$name]}" \
            "$(column_median "$name" 1)" "$(column_median "$name" 2)" "$(column_median "$name" 3)" \
            "$(column_median "$name" 5)" "$(column_median "$name" 4)"
    done
    printf '(syncs: pg_stat_wal.wal_sync, every process'"'"'s, the walwriter'"'"'s included)\n'
    printf 'worker, first message handled after (ms from the subscribe'"'"'s commit, +/- one poll of ~%s s):\n' "$POLL_SECS"
    printf '  batch 1 %s, batch %d %s\n' "$(column_median worker.start 1)" "$BATCH" "$(column_median worker_batch.start 1)"
    printf 'worker drain rate, second half / first half of the messages (from the first handled):\n'
    printf '  batch 1 %sx, batch %d %sx\n' "$(column_median worker.start 2)" "$BATCH" "$(column_median worker_batch.start 2)"
    printf '\nratios of the medians, msgs/s (round by round in brackets: median, then each round):\n'
    printf '  %-30s %sx   %s\n' "worker, batch 1 / pgbench:" \
        "$(ratio_of "$(column_median worker 1)" "$(column_median pgbench 1)")" "$(paired worker pgbench)"
    printf '  %-30s %sx   %s\n' "worker, batch $BATCH / pgbench:" \
        "$(ratio_of "$(column_median worker_batch 1)" "$(column_median pgbench 1)")" "$(paired worker_batch pgbench)"
    printf '  %-30s %sx   %s\n' "worker, batch $BATCH / batch 1:" \
        "$(ratio_of "$(column_median worker_batch 1)" "$(column_median worker 1)")" "$(paired worker_batch worker)"
    printf '\nper round, msgs/s:\n'
    for name in "${CASES[@]}"; do
        printf '  %-14s %s\n' "$name" "$(awk '{ printf "%.0f ", $1 }' "$WORK/results/$name")"
    done
    printf '\n(%d CPUs, a shared machine that may be noisy: wall-time figures are medians; the WAL figures barely depend on it)\n' \
        "$(nproc)"
}

main() {
    local name
    bench_setup worker
    start_cluster
    setup_schema
    write_scripts
    wait_for_workers
    log "$(sql "SELECT version()" | cut -d, -f1); $(nproc) CPUs; synchronous_commit $(sql "SHOW synchronous_commit"), wal_sync_method $(sql "SHOW wal_sync_method"), rmsg.worker_count $(sql "SHOW rmsg.worker_count"), rmsg.worker_naptime $(sql "SHOW rmsg.worker_naptime")"
    log "$ROUNDS rounds of $MESSAGES messages per case, cases ${CASES[*]} interleaved; batch $BATCH; $CLIENTS pgbench clients"
    log "warm-up, $WARMUP_MESSAGES messages per case"
    for name in "${CASES[@]}"; do
        run_case "$name" warmup
    done
    run_rounds "$ROUNDS" "${CASES[@]}"
    report
}

main "$@"
