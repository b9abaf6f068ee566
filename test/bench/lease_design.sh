#!/usr/bin/env bash
#
# Where a queue keeps its leases, a storage design study in plain SQL, side
# by side in one run.  It needs PostgreSQL 15 and pgbench, not the
# extension: each design is a set of tables and the SQL a get, a put and an
# ack would run (test/bench/lease_design/), so the study can be run before
# any C code is written for a design.
#
#   test/bench/lease_design.sh                         # 3 rounds: about 17 min
#   ROUNDS=1 DURATION=5 test/bench/lease_design.sh     # a quick look, about 5 min
#   RMSG_KEEP_WORK=1 test/bench/lease_design.sh        # keep the logs and plans
# Knobs: ROUNDS (3), DURATION (15, seconds per cycle run), PUT_DURATION
# (two thirds of DURATION, seconds per put_batch run), BACKLOG (20000, a
# multiple of 20: the messages put before each get-only and drain run),
# EXTRA_CYCLE_ROUNDS (2, more rounds of the durable cycle alone).
#
# The designs, one schema each in the database "bench" (schema.sql):
#   A   "in the row": rmsg.message as release 1.1 has it, fillfactor 70; a
#       get updates deliveries and lease_until in the message row (HOT when
#       the new version fits on its page).
#   B   "a lease table": the message row is written once and never changes,
#       fillfactor 100; a get locks the message row (FOR UPDATE SKIP
#       LOCKED) and writes or renews a small row (msg_id, deliveries,
#       lease_until) in b.lease; the ack deletes both rows.
#   B2  B with a second look at the lease after the row lock, on a fresh
#       snapshot, so that a message leased meanwhile by another get is
#       passed over instead of making the get come back short.
# Every get is one statement on the ready index, in msg_id order, with
# enable_seqscan and enable_bitmapscan off (the extension's C code only
# walks that index); payloads are 1 KiB, stored in the message row.
#
# What is measured, by pgbench with prepared statements unless said:
#   cycle        4 clients, DURATION s: put one, get one (30 s lease), ack
#                it, each its own transaction; synchronous_commit = on.
#                ROUNDS + EXTRA_CYCLE_ROUNDS samples per design.
#   cycle_async  the same with synchronous_commit = off, where the commits'
#                fsyncs no longer hide the CPU each design spends.
#   getonly_2cl, getonly_1cl
#                a backlog of BACKLOG ready messages, then 2 clients (or
#                1) get 10 at a time, leased for an hour and never acked,
#                until every message should be leased: the WAL a lease
#                costs, and whether two getters lease a message twice or
#                come back short.
#   drain        the same backlog, 2 clients get 10 and ack those 10 (two
#                transactions) until the queue is empty.
#   put_batch    4 clients, PUT_DURATION s, 100 rows per INSERT into A's
#                and B's message tables and into plain tables of the same
#                columns (primary key only, fillfactor 100).
#   explain      10,100 messages, 10,000 of them leased for an hour by
#                1000 gets of 10: EXPLAIN (ANALYZE, BUFFERS) of one more get
#                of 10, rolled back; run twice, then once more after a
#                VACUUM.  The buffers of the top node: what a get pays for
#                the leased messages ahead of the ready ones.
#   race         once, at the end: B's get with its guard (the WHERE of its
#                ON CONFLICT ... DO UPDATE) removed, 2 clients over the
#                backlog: the messages it leases twice.  Shows why B needs
#                the guard (get10_b.sql says why the lock alone does not do).
# Every measurement starts from emptied tables (TRUNCATE), its backlog if
# any, a VACUUM ANALYZE and a CHECKPOINT, so that each one pays for its own
# full-page images.  In each round the tests run one after the other, and
# each test runs its designs back to back: A B B2, or B2 B A every other
# round, so that drift over the run does not favour one design.
#
# The figures, per message (per row for put_batch):
#   tps, cycles            pgbench's rate and transactions (cycle: one
#                          pgbench transaction is one put-get-ack);
#   left_in_queue          cycle: puts whose get found nothing to take;
#   acked_per_s            tps x the share of cycles whose get took one;
#   msgs_per_s, rows_per_s drain and put_batch rates (drain: the backlog
#                          over the wall time to empty it);
#   wal_per_msg            pg_current_wal_insert_lsn() difference: every
#                          WAL byte, autovacuum's included;
#   walrec_nofpi_per_msg, walfpi_bytes_per_msg
#                          the same range read by pg_waldump --stats: the
#                          records' bytes without and the bytes of their
#                          full-page images;
#   fg_nofpi_per_msg, fg_wal_per_msg
#                          the same without the records only vacuum writes
#                          (Heap2/VACUUM, VISIBLE, FREEZE_PAGE,
#                          Btree/VACUUM): what the clients themselves wrote;
#   heap_lock_recs_per_msg Heap/LOCK records (a row lock writes its page);
#   fpi_per_msg            pg_stat_wal.wal_fpi difference;
#   sync_per_msg           pg_stat_wal.wal_sync difference (every process's
#                          WAL fsyncs);
#   hot_pct                A only: the share of its updates that were HOT;
#   leased, double_deliveries, short_get_pct
#                          getonly: messages with a lease at the end, extra
#                          deliveries (sum(deliveries) - leased: 0 unless a
#                          message was leased twice), and the backlog's
#                          share that the gets did not lease (short gets);
#   secs_walking_leased    getonly's wall time: each get walks past every
#                          message leased before it, so this grows with the
#                          backlog squared and is not a throughput;
#   get_calls_per_10msgs, pgbench_rounds
#                          drain: gets per 10 messages taken (above 1: short
#                          gets), and the pgbench runs it took to empty the
#                          queue (each run asks for what is left).
# How to read the output: one table per test, a row per figure, the median
# of its samples for A, B and B2, each sample in brackets, then B/A and
# B2/A of the medians.  The paired ratios that follow divide each round's
# B (B2) by the same round's A, which ran next to it, and give their median:
# trust them over the ratio of medians for rates.  The WAL and record
# counts hardly move between runs; the rates do, on a small machine by 20%
# or more.  A benchmark prints figures: it passes or fails nothing.
#
# Cluster: a scratch one (data directory under the work directory, a free
# port, run as the postgres OS user when started as root), stopped and
# removed at exit, also on error or Ctrl-C.  shared_buffers 256MB,
# synchronous_commit on, autovacuum on, checkpoint_timeout 1h and
# max_wal_size 40GB (no checkpoint falls inside a measurement: pg_waldump
# needs its WAL, and a checkpoint's full-page images would land in one
# design's figures only); the library is not preloaded.

set -euo pipefail

# shellcheck source=test/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
# shellcheck source=test/bench/lib_peers.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib_peers.sh"   # wait_for_clients_gone, settled_wal_sync

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-15}
BACKLOG=${BACKLOG:-20000}
EXTRA_CYCLE_ROUNDS=${EXTRA_CYCLE_ROUNDS:-2}
for var in ROUNDS DURATION BACKLOG; do
    [[ ${!var} =~ ^[1-9][0-9]*$ ]] || die "$var must be a positive integer, not '${!var}'"
done
# A put_batch run writes about 200 MB of WAL a second: shorter runs keep the
# WAL between two checkpoints (and pg_waldump's reading of it) small.
PUT_DURATION=${PUT_DURATION:-$(((DURATION * 2 + 2) / 3))}
[[ $PUT_DURATION =~ ^[1-9][0-9]*$ ]] || die "PUT_DURATION must be a positive integer, not '$PUT_DURATION'"
[[ $EXTRA_CYCLE_ROUNDS =~ ^[0-9]+$ ]] ||
    die "EXTRA_CYCLE_ROUNDS must be a non-negative integer, not '$EXTRA_CYCLE_ROUNDS'"
# The get-only runs split the backlog into gets of 10 over 2 clients: with a
# multiple of 20, every message is asked for exactly once.
((BACKLOG % 20 == 0)) || die "BACKLOG must be a multiple of 20, not $BACKLOG"
command -v python3 >/dev/null || die "python3 is needed for the summary"

SQL_DIR=$ROOT/test/bench/lease_design
CLIENTS=4   # cycle and put_batch
# The explain test: this many leased messages ahead of 100 ready ones.
AHEAD=10000

sql() { run_as_pg psql -X -q -v ON_ERROR_STOP=1 -At -c "$1"; }
now() { date +%s.%N; }
# calc EXPR: awk's arithmetic on the figures (floats; bc may be missing).
# The parentheses keep a ">" in EXPR from being read as a redirection.
calc() { awk "BEGIN { printf \"%.3f\", ($1) }"; }

# record TEST DESIGN ROUND METRIC VALUE: one figure into results/raw.tsv,
# which summarize.py reads.
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$WORK/results/raw.tsv"; }

# The tables a design's measurements write (or a put_batch target itself).
tables_of() {
    case $1 in
        a) echo a.message ;;
        b | b2) echo b.message, b.lease ;;
        *) echo "$1" ;;
    esac
}
# B2 is B's tables with another get.
schema_of() { [[ $1 == b2 ]] && echo b || echo "$1"; }

empty() { sql "TRUNCATE $(tables_of "$1")"; }
# A clean start: dead rows gone, statistics current, and every later
# first change of a page pays its own full-page image.
settle() {
    sql "VACUUM ANALYZE $(tables_of "$1")"
    sql "CHECKPOINT"
}
# fill DESIGN N: N ready messages, one transaction, in msg_id order.
fill() {
    empty "$1"
    sql "INSERT INTO $(schema_of "$1").message (queue_id, visible_at, enqueued_at, payload_size, inline_data)
         SELECT 1, now(), now(), 1024, data FROM generate_series(1, $2) g JOIN payloads ON i = g % 1000"
    settle "$1"
}

# counters: "insert LSN|wal_sync|wal_fpi", read once the pgbench sessions
# are gone and the sync counter is still (a backend reports its figures as
# it exits, the walwriter a little later).
counters() {
    wait_for_clients_gone pgbench >&2
    settled_wal_sync >/dev/null
    sql "SELECT pg_current_wal_insert_lsn(), wal_sync, wal_fpi FROM pg_stat_wal"
}
# a_updates: "n_tup_upd|n_tup_hot_upd" of A's message table.
a_updates() { sql "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = 'a.message'::regclass"; }
# record_hot TEST ROUND BEFORE AFTER: the HOT share of A's updates between
# two a_updates.
record_hot() {
    local u0 h0 u1 h1
    IFS='|' read -r u0 h0 <<<"$3"
    IFS='|' read -r u1 h1 <<<"$4"
    record "$1" a "$2" hot_pct "$(calc "($u1 - $u0) > 0 ? 100 * ($h1 - $h0) / ($u1 - $u0) : 0")"
}

# wal_figures TEST DESIGN ROUND BEFORE AFTER N TAG: the WAL figures of the
# range between two counters, per message (N of them), from pg_stat_wal
# and from pg_waldump's statistics of the range (kept in logs/).
wal_figures() {
    local t=$1 d=$2 r=$3 n=$6 tag=$7 l0 y0 f0 l1 y1 f1 dump totals fg_rec fg_all
    ((n > 0)) || die "$tag: no message to divide its WAL by"
    IFS='|' read -r l0 y0 f0 <<<"$4"
    IFS='|' read -r l1 y1 f1 <<<"$5"
    record "$t" "$d" "$r" wal_per_msg "$(sql "SELECT round(pg_wal_lsn_diff('$l1', '$l0') / $n, 1)")"
    record "$t" "$d" "$r" sync_per_msg "$(calc "($y1 - $y0) / $n")"
    record "$t" "$d" "$r" fpi_per_msg "$(calc "($f1 - $f0) / $n")"
    dump=$WORK/results/logs/waldump_$tag.txt
    # The range's last record may still be incomplete on disk: pg_waldump
    # then says so at the end, after its statistics.
    run_as_pg pg_waldump -p "$WORK/lease_data/pg_wal" -s "$l0" -e "$l1" --stats=record >"$dump" 2>&1 || true
    # The "Total" line: count, record bytes [%], full-page image bytes [%], ...
    totals=$(awk '$1 == "Total" { print $3, $5 }' "$dump")
    [[ -n $totals ]] || { tail -n 5 "$dump" >&2; die "pg_waldump gave no statistics for $tag"; }
    record "$t" "$d" "$r" walrec_nofpi_per_msg "$(calc "${totals% *} / $n")"
    record "$t" "$d" "$r" walfpi_bytes_per_msg "$(calc "${totals#* } / $n")"
    # Per record type: "Type  count (%)  record bytes (%)  FPI bytes (%) ...";
    # with the percentages removed, the bytes are fields 3 and 4.
    read -r fg_rec fg_all < <(awk -v n="$n" '
        NR > 3 && $1 ~ /\// {
            gsub(/\([^)]*\)/, "")
            if ($1 ~ /^(Heap2\/(VACUUM|VISIBLE|FREEZE_PAGE)|Btree\/VACUUM)$/) next
            rec += $3; fpi += $4
        }
        END { printf "%.1f %.1f\n", rec / n, (rec + fpi) / n }' "$dump")
    record "$t" "$d" "$r" fg_nofpi_per_msg "$fg_rec"
    record "$t" "$d" "$r" fg_wal_per_msg "$fg_all"
    record "$t" "$d" "$r" heap_lock_recs_per_msg \
        "$(awk -v n="$n" '$1 == "Heap/LOCK" { c = $2 } END { printf "%.3f", c / n }' "$dump")"
}

# run_pgbench TAG SYNCHRONOUS_COMMIT PGBENCH-ARG...: one pgbench run, its
# output in logs/pgbench_TAG.txt; sets PROCESSED and TPS.  Any failure
# stops the benchmark: a figure from a half-failed run would mislead.
PROCESSED=0 TPS=0
run_pgbench() {
    local tag=$1 commit=$2 log
    shift 2
    log=$WORK/results/logs/pgbench_$tag.txt
    run_as_pg env PGOPTIONS="-c synchronous_commit=$commit" pgbench -n -M prepared "$@" >"$log" 2>&1 ||
        { cat "$log" >&2; die "pgbench failed for $tag"; }
    if grep -q 'aborted' "$log"; then
        cat "$log" >&2
        die "pgbench clients aborted in $tag"
    fi
    PROCESSED=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$log")
    TPS=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$log")
    [[ -n $PROCESSED && -n $TPS ]] || { cat "$log" >&2; die "no figures in pgbench's output for $tag"; }
}

# cycle DESIGN ROUND SYNCHRONOUS_COMMIT: put-get-ack, CLIENTS clients,
# DURATION seconds, on an empty queue.
cycle() {
    local d=$1 r=$2 commit=$3 t tag before after u0 left
    t=$([[ $commit == on ]] && echo cycle || echo cycle_async)
    tag=${t}_${d}_$r
    empty "$d"
    settle "$d"
    before=$(counters)
    u0=$(a_updates)
    run_pgbench "$tag" "$commit" -c $CLIENTS -j $CLIENTS -T "$DURATION" -D lease=30 -f "$WORK/scripts/cycle_$d.sql"
    after=$(counters)
    record "$t" "$d" "$r" tps "$TPS"
    record "$t" "$d" "$r" cycles "$PROCESSED"
    # A get that found nothing to take skipped its ack: its message is left.
    left=$(sql "SELECT count(*) FROM $(schema_of "$d").message")
    record "$t" "$d" "$r" left_in_queue "$left"
    record "$t" "$d" "$r" acked_per_s "$(calc "$TPS * ($PROCESSED - $left) / $PROCESSED")"
    wal_figures "$t" "$d" "$r" "$before" "$after" "$PROCESSED" "$tag"
    [[ $d == a ]] && record_hot "$t" "$r" "$u0" "$(a_updates)"
    empty "$d"
}

# getonly DESIGN ROUND CLIENTS: the backlog leased 10 at a time for an
# hour, never acked, each client asking for its share of it.
getonly() {
    local d=$1 r=$2 c=$3 t=getonly_${3}cl tag=getonly${3}_$1_$2 before after u0 t0 t1 counts leased extra
    fill "$d" "$BACKLOG"
    before=$(counters)
    u0=$(a_updates)
    t0=$(now)
    run_pgbench "$tag" on -c "$c" -j "$c" -t $((BACKLOG / 10 / c)) -D lease=3600 -f "$WORK/scripts/get10_$d.sql"
    t1=$(now)
    after=$(counters)
    # A's leased messages are those delivered at least once; B's have a lease row.
    if [[ $d == a ]]; then
        counts=$(sql "SELECT count(*), coalesce(sum(deliveries) - count(*), 0) FROM a.message WHERE deliveries > 0")
    else
        counts=$(sql "SELECT count(*), coalesce(sum(deliveries) - count(*), 0) FROM b.lease")
    fi
    IFS='|' read -r leased extra <<<"$counts"
    record "$t" "$d" "$r" leased "$leased"
    record "$t" "$d" "$r" double_deliveries "$extra"
    record "$t" "$d" "$r" short_get_pct "$(calc "100 * ($BACKLOG - $leased) / $BACKLOG")"
    record "$t" "$d" "$r" secs_walking_leased "$(calc "$t1 - $t0")"
    # Per message leased: a short get leased fewer, and wrote less.
    wal_figures "$t" "$d" "$r" "$before" "$after" "$leased" "$tag"
    [[ $d == a ]] && record_hot "$t" "$r" "$u0" "$(a_updates)"
    # Nothing left behind for autovacuum to work on during the next test.
    empty "$d"
}

# drain DESIGN ROUND: 2 clients get 10 and ack them until the backlog is
# gone.  A pgbench run asks for what is left; short gets leave some for
# another run.
drain() {
    local d=$1 r=$2 tag=drain_$1_$2 before after u0 t0 t1 left=$BACKLOG transactions=0 runs=0
    fill "$d" "$BACKLOG"
    cat "$WORK/scripts/get10_$d.sql" "$SQL_DIR/ack_$(schema_of "$d").sql" >"$WORK/scripts/drain_$d.sql"
    before=$(counters)
    u0=$(a_updates)
    t0=$(now)
    while ((left > 0)); do
        ((runs < 50)) || die "drain of $d: $left messages still there after 50 pgbench runs"
        run_pgbench "${tag}_$runs" on -c 2 -j 2 -t $(((left + 19) / 20)) -D lease=30 -f "$WORK/scripts/drain_$d.sql"
        transactions=$((transactions + PROCESSED))
        runs=$((runs + 1))
        left=$(sql "SELECT count(*) FROM $(schema_of "$d").message")
    done
    t1=$(now)
    after=$(counters)
    record drain "$d" "$r" msgs_per_s "$(calc "$BACKLOG / ($t1 - $t0)")"
    record drain "$d" "$r" get_calls_per_10msgs "$(calc "$transactions * 10 / $BACKLOG")"
    record drain "$d" "$r" pgbench_rounds "$runs"
    wal_figures drain "$d" "$r" "$before" "$after" "$BACKLOG" "$tag"
    [[ $d == a ]] && record_hot drain "$r" "$u0" "$(a_updates)"
    empty "$d"
}

# put_batch TABLE ROUND: CLIENTS clients insert 100 rows per statement.
put_batch() {
    local table=$1 r=$2 name=${1/./_} tag before after
    tag=put_${name}_$r
    empty "$table"
    settle "$table"
    before=$(counters)
    run_pgbench "$tag" on -c $CLIENTS -j $CLIENTS -T "$PUT_DURATION" -f "$WORK/scripts/put100_$name.sql"
    after=$(counters)
    record put_batch "$table" "$r" rows_per_s "$(calc "$TPS * 100")"
    wal_figures put_batch "$table" "$r" "$before" "$after" $((PROCESSED * 100)) "$tag"
    empty "$table"
}

# explain DESIGN: AHEAD messages leased for an hour ahead of 100 ready
# ones, then the plan of one more get of 10 (rolled back), twice, and once
# more after a VACUUM.  Records the top node's shared buffers (hit + read)
# and the execution time; the plans are in explain_DESIGN.txt.
explain() {
    local d=$1 out=$WORK/results/explain_$1.txt run plan
    fill "$d" $((AHEAD + 100))
    run_pgbench "ahead_$d" on -c 1 -j 1 -t $((AHEAD / 10)) -D lease=3600 -f "$WORK/scripts/get10_$d.sql"
    : >"$out"
    for run in 1 2 vacuum 3; do
        if [[ $run == vacuum ]]; then
            sql "VACUUM $(tables_of "$d")"
            continue
        fi
        plan=$(run_as_pg psql -X -v ON_ERROR_STOP=1 -f "$WORK/scripts/explain_$d.sql")
        printf '== run %s\n%s\n' "$run" "$plan" >>"$out"
        # The first Buffers line is the top node's, which counts its children's.
        record explain "$d" "$run" buffers "$(awk '/Buffers: shared/ {
                h = 0; rd = 0
                if (match($0, /hit=[0-9]+/)) h = substr($0, RSTART + 4, RLENGTH - 4)
                if (match($0, /read=[0-9]+/)) rd = substr($0, RSTART + 5, RLENGTH - 5)
                print h + rd; exit }' <<<"$plan")"
        record explain "$d" "$run" exec_ms "$(awk '/Execution Time/ { print $3 }' <<<"$plan")"
        record explain "$d" "$run" buffers_line "$(grep -m1 'Buffers: shared' <<<"$plan" | sed 's/^ *//')"
    done
    empty "$d"
}

# race: B without its guard, 2 clients over the backlog.  Each message
# taken twice is a double delivery a consumer would see.
race() {
    fill b "$BACKLOG"
    run_pgbench race_noguard on -c 2 -j 2 -t $((BACKLOG / 20)) -D lease=30 -f "$WORK/scripts/get10_b_noguard.sql"
    local counts deliveries leased twice
    counts=$(sql "SELECT coalesce(sum(deliveries), 0), count(*), count(*) FILTER (WHERE deliveries > 1) FROM b.lease")
    IFS='|' read -r deliveries leased twice <<<"$counts"
    record race b 1 deliveries "$deliveries"
    record race b 1 messages_leased "$leased"
    record race b 1 double_deliveries $((deliveries - leased))
    record race b 1 messages_leased_twice_or_more "$twice"
    empty b
}

# The pgbench scripts, copied where the postgres OS user can read them,
# and the ones made from others: B's get without its guard line, and one
# put_batch script per table.
write_scripts() {
    local s=$WORK/scripts f table
    mkdir -p "$s"
    cp "$SQL_DIR"/*.sql "$s/"
    sed '/-- the guard$/d' "$SQL_DIR/get10_b.sql" >"$s/get10_b_noguard.sql"
    (($(wc -l <"$s/get10_b_noguard.sql") == $(wc -l <"$SQL_DIR/get10_b.sql") - 1)) ||
        die "get10_b.sql must have exactly one line ending in '-- the guard'"
    for table in a.message b.message p.plain_a p.plain_b; do
        f=$s/put100_${table/./_}.sql
        sed "s/TARGET_TABLE/$table/" "$SQL_DIR/put100.sql" >"$f"
    done
    chmod -R a+rX "$s"
}

# The order of round R: the designs reversed every other round.
designs_of_round() { (($1 % 2 == 1)) && echo "a b b2" || echo "b2 b a"; }

main() {
    local r d order
    ensure_packages || die "could not install the packages the benchmark needs"
    init_pg_env
    make_workdir
    mkdir -p "$WORK/results/logs"
    write_scripts
    # The extension's library is not loaded: the study is plain SQL.  The
    # later shared_preload_libraries line overrides start_named_cluster's.
    start_named_cluster lease "shared_preload_libraries = ''" "shared_buffers = 256MB" \
        "synchronous_commit = on" "max_wal_size = 40GB" "min_wal_size = 1GB" \
        "checkpoint_timeout = 1h" "autovacuum = on"
    # shellcheck disable=SC2154  # set by start_named_cluster
    export PGHOST=$PGHOST_lease PGPORT=$PGPORT_lease PGDATABASE=bench
    PGDATABASE=postgres sql "CREATE DATABASE bench"
    run_as_pg psql -X -q -v ON_ERROR_STOP=1 -f "$WORK/scripts/schema.sql" >/dev/null

    log "$(sql "SELECT version()")"
    log "$(nproc) CPUs; $ROUNDS round(s): cycles of ${DURATION}s (durable $((ROUNDS + EXTRA_CYCLE_ROUNDS))x, async $((ROUNDS + EXTRA_CYCLE_ROUNDS))x), put_batch ${PUT_DURATION}s, backlog $BACKLOG"
    for r in $(seq 1 "$ROUNDS"); do
        read -r -a order <<<"$(designs_of_round "$r")"
        log "round $r (${order[*]}) $(date +%T)"
        for d in "${order[@]}"; do cycle "$d" "$r" on; done
        for d in "${order[@]}"; do getonly "$d" "$r" 2; done
        for d in "${order[@]}"; do getonly "$d" "$r" 1; done
        for d in "${order[@]}"; do drain "$d" "$r"; done
        # B2 writes B's tables the same way as B: put_batch is the same for both.
        for d in "${order[@]}"; do
            [[ $d == b2 ]] && continue
            put_batch "$d.message" "$r"
            put_batch "p.plain_$d" "$r"
        done
    done
    # The cycle is the figure a decision would hang on and the noisiest:
    # more samples of it, and the asynchronous view of it every round.
    for r in $(seq 1 $((ROUNDS + EXTRA_CYCLE_ROUNDS))); do
        read -r -a order <<<"$(designs_of_round "$r")"
        log "cycle round $r (${order[*]}) $(date +%T)"
        if ((r > ROUNDS)); then
            for d in "${order[@]}"; do cycle "$d" "$r" on; done
        fi
        for d in "${order[@]}"; do cycle "$d" "$r" off; done
    done
    log "explain and race $(date +%T)"
    for d in a b b2; do explain "$d"; done
    race
    log "done $(date +%T)"
    echo
    python3 "$SQL_DIR/summarize.py" "$WORK/results/raw.tsv"
}

main "$@"
