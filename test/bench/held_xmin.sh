#!/usr/bin/env bash
#
# Consumers beside a held xmin, side by side in one run: recoverable_msg
# against PGMQ 1.5.1 and PgQ, each with 2 producers and 2 consumers through
# three phases of PHASE seconds:
#   before  nothing else runs;
#   during  one more session holds BEGIN ISOLATION LEVEL REPEATABLE READ;
#           SELECT txid_current(); open for the whole phase, so neither
#           VACUUM nor page pruning may remove a row version deleted after
#           it began (a report, an export, a replica's query with
#           hot_standby_feedback do the same);
#   after   that transaction has committed; autovacuum runs as it is
#           configured by default (naptime 1 min), so whether it has cleaned
#           up by then is part of what the phase shows.
#
#   test/bench/held_xmin.sh                    # PHASE=90: about 15 min
#   PHASE=20 BUILD=0 test/bench/held_xmin.sh   # a quick look, about 4 min
#   ROUNDS=3 test/bench/held_xmin.sh           # medians of 3 rounds
# Other knobs: BATCH (10, most messages a get takes: rmsg.get's max,
# pgmq.read's qty; PgQ's batches are what its ticker made), PGMQ_DIR (where
# PGMQ's control file and script are, ../shared/anchors/pgmq beside the
# repository), SYSTEMS ("rmsg pgmq pgq", the systems to run).
#
# The systems, each its own pgbench scripts, prepared statements, 1 KiB
# payloads, synchronous_commit = on, every call in autocommit unless said:
#   rmsg  put: rmsg.put.  Consumer: rmsg.get(queue, BATCH, '30 seconds'),
#         then rmsg.ack(msg_ids, receipts) of what it got.
#   pgmq  PGMQ 1.5.1, pure SQL (installed at run time, see install_pgmq).
#         put: pgmq.send of a jsonb.  Consumer: pgmq.read(queue, 30, BATCH),
#         then pgmq.delete(queue, msg_ids).
#   pgq   PgQ (Debian's postgresql-15-pgq3), ticked by pgqd (its defaults: a
#         ticker call every second; a tick per 500 events or 3 s).  put:
#         pgq.insert_event.  Consumer, one transaction: next_batch,
#         get_batch_events, finish_batch.  A PgQ subscription has one
#         open batch at a time, and next_batch hands it to whoever asks
#         until it is finished, so the two consumers share one
#         subscription and take turns through an advisory lock held for
#         the transaction (two subscriptions would read every event twice).
# Every consumer reads the payloads it gets (their total length), and one
# that got nothing sleeps 10 ms before it tries again, as a real one would
# rather than spin beside the producers.
#
# A phase is one pgbench run of the producers (2 clients) beside one of the
# consumers (2 clients), -T PHASE each; between phases, with no client
# running, the script reads the counters:
#   puts/s      the producers' transactions per second (one put each);
#   taken/s     messages consumed per second: the phase's puts minus the
#               growth of the backlog;
#   backlog     messages put and not yet consumed at the end of the phase:
#               rmsg.queues' ready + in_flight + delayed; the rows of
#               PGMQ's queue table; PgQ's events after the last tick its
#               consumer finished (the event sequence against that tick's
#               sequence value, so it includes about one second of events
#               not yet ticked);
#   per get     messages per consumer transaction (BATCH when the
#               consumers are behind, less when they wait for puts);
#   idx/get     index entries read per consumer transaction
#               (pg_stat_user_indexes.idx_tup_read of the system's
#               indexes, its acks' and puts' lookups included): how far a
#               get walks over entries it cannot take;
#   WAL B/msg   WAL bytes (pg_current_wal_insert_lsn() difference: the
#               insert position, exact to the byte) over the mean of the
#               phase's puts and takes, so a message's put and take count
#               once each even when the consumers fall behind;
#   syncs/msg   pg_stat_wal.wal_sync difference (every process's WAL
#               fsyncs, read once the clients have gone and the counter is
#               still) over the same count;
#   autovac     vacuums of the system's tables that ended in the phase
#               (pg_stat_user_tables, the system's schema);
#   dead rows   n_dead_tup of those tables at the phase's end;
#   MB          their total size at the phase's end.
# Printed: each phase as it ends, then the medians of the rounds, the
# ratios taken/s during / before and after / before (the median of the
# rounds' ratios, then each round's), and the autovacuums of the queue
# tables from the server log: the phase each ended in, the dead rows it
# removed and those it had to keep.  The systems run one after the other (a held xmin is the
# whole cluster's), in reverse order every other round; each starts from
# emptied tables, a VACUUM and a CHECKPOINT.
#
# Target (issue 17): during a held xmin the consumers keep at least 0.8 of
# their rate before it, as PgQ does (PGMQ: 0.09 to 0.16).  No pass/fail:
# the figures are printed.
#
# Cluster: a scratch one of its own (data directory under the work
# directory, a free port, run as postgres when started as root), stopped at
# exit, with pgqd and the holding session.  rmsg.worker_count = 0,
# shared_buffers 256MB, max_wal_size 8GB and checkpoint_timeout 1h (no
# checkpoint inside a run), log_autovacuum_min_duration = 0 (the server
# log tells what each vacuum could remove; RMSG_KEEP_WORK=1 keeps it).  The
# machine may be small (2 cores) and noisy: rates are medians, the WAL
# figures barely depend on it.

set -euo pipefail

# shellcheck source=test/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
# shellcheck source=test/bench/lib_peers.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib_peers.sh"

PHASE=${PHASE:-90}
ROUNDS=${ROUNDS:-1}
BATCH=${BATCH:-10}
PRODUCERS=2
CONSUMERS=2
PAYLOAD_BYTES=1024
read -r -a SYSTEMS <<<"${SYSTEMS:-rmsg pgmq pgq}"
PHASES=(before during after)

for sys in "${SYSTEMS[@]}"; do
    [[ $sys == @(rmsg|pgmq|pgq) ]] || die "SYSTEMS lists rmsg, pgmq and pgq, not '$sys'"
done
for var in PHASE ROUNDS BATCH; do
    [[ ${!var} =~ ^[1-9][0-9]*$ ]] || die "$var must be a positive integer, not '${!var}'"
done
((BATCH <= 1000)) || die "BATCH ($BATCH) must be at most 1000"

sql() { run_as_pg psql -X -q -v ON_ERROR_STOP=1 -At -c "$1"; }

# The long transaction: a psql coprocess fed statement by statement, so
# that it ends with a COMMIT of its own when the phase is over.
HOLDER_PID=
start_holder() {
    local xid
    coproc HOLDER { run_as_pg psql -X -q -At -v ON_ERROR_STOP=1 -d "application_name=held_xmin"; }
    printf '%s\n' "BEGIN ISOLATION LEVEL REPEATABLE READ;" "SELECT txid_current();" >&"${HOLDER[1]}"
    read -r -t 30 xid <&"${HOLDER[0]}" || die "the holding session did not answer"
    printf '    held xid %s\n' "$xid"
}

stop_holder() {
    local state
    # The transaction must have stayed open the whole phase for the phase
    # to mean anything.
    state=$(sql "SELECT state || ' xmin ' || coalesce(backend_xmin::text, '-') FROM pg_stat_activity
                  WHERE application_name = 'held_xmin'")
    printf '    holder at the end: %s\n' "${state:-gone}"
    printf '%s\n' "COMMIT;" '\q' >&"${HOLDER[1]}"
    wait "$HOLDER_PID" || die "the holding session failed"
    HOLDER_PID=
}

# At exit: the holding session first, then what cleanup_with_peers stops
# and removes.
stop_helpers() {
    [[ -n ${HOLDER_PID:-} ]] && kill -TERM "$HOLDER_PID" 2>/dev/null
    cleanup_with_peers
}

start_cluster() {
    start_bench_cluster \
        "synchronous_commit = on" \
        "shared_buffers = 256MB" \
        "max_wal_size = 8GB" \
        "checkpoint_timeout = 1h" \
        "max_connections = 50" \
        "log_autovacuum_min_duration = 0" \
        "log_timezone = 'UTC'"
}

setup_schema() {
    sql "CREATE EXTENSION recoverable_msg"
    sql "CREATE EXTENSION pgmq VERSION '1.5.1'"
    sql "CREATE EXTENSION pgq"
    sql "SELECT rmsg.create_queue('bench')"
    sql "SELECT pgmq.create('bench')" >/dev/null
    create_payload_functions
}

write_scripts() {
    local d=$WORK/scripts
    cat >"$d/rmsg_put.sql" <<'SQL'
SELECT rmsg.put('bench', bench_payload());
SQL
    cat >"$d/rmsg_take.sql" <<SQL
SELECT count(*) AS n, coalesce(sum(length(payload)), 0) AS bytes, coalesce(array_agg(msg_id), '{}') AS ids, coalesce(array_agg(receipt), '{}') AS receipts FROM rmsg.get('bench', $BATCH, '30 seconds') \\gset
\\if :n > 0
SELECT rmsg.ack(:ids::bigint[], :receipts::bigint[]);
\\else
\\sleep 10 ms
\\endif
SQL
    cat >"$d/pgmq_put.sql" <<'SQL'
SELECT * FROM pgmq.send('bench', bench_json());
SQL
    cat >"$d/pgmq_take.sql" <<SQL
SELECT count(*) AS n, coalesce(sum(length(message::text)), 0) AS bytes, coalesce(array_agg(msg_id), '{}') AS ids FROM pgmq.read('bench', 30, $BATCH) \\gset
\\if :n > 0
SELECT count(*) FROM pgmq.delete('bench', :ids::bigint[]);
\\else
\\sleep 10 ms
\\endif
SQL
    cat >"$d/pgq_put.sql" <<'SQL'
SELECT pgq.insert_event('bench', 'bench', bench_text());
SQL
    cat >"$d/pgq_take.sql" <<'SQL'
BEGIN;
SELECT pg_advisory_xact_lock(17);
SELECT coalesce(pgq.next_batch('bench', 'bench'), 0) AS batch_id \gset
\if :batch_id > 0
SELECT count(*) AS n, coalesce(sum(length(ev_data)), 0) AS bytes FROM pgq.get_batch_events(:batch_id) \gset
SELECT pgq.finish_batch(:batch_id);
\endif
COMMIT;
\if :batch_id = 0
\sleep 10 ms
\endif
SQL
    chmod -R a+rX "$d"
}

# Each system's backlog, as said at the top.
backlog_query() {
    case $1 in
        rmsg) echo "SELECT ready + in_flight + delayed FROM rmsg.queues WHERE queue = 'bench'" ;;
        pgmq) echo "SELECT count(*) FROM pgmq.q_bench" ;;
        pgq) echo "SELECT pgq.seq_getval(q.queue_event_seq) - t.tick_event_seq
                     FROM pgq.queue q
                     JOIN pgq.subscription s ON s.sub_queue = q.queue_id
                     JOIN pgq.tick t ON t.tick_queue = q.queue_id AND t.tick_id = s.sub_last_tick
                    WHERE q.queue_name = 'bench'" ;;
    esac
}

# Empties the system's queue, then gives the next run a clean slate.
reset_system() {
    case $1 in
        rmsg) sql "TRUNCATE rmsg.message, rmsg.lease, rmsg.payload" ;;
        pgmq) sql "TRUNCATE pgmq.q_bench, pgmq.a_bench" ;;
        # A new queue: its event tables go with the old one.
        pgq) sql "SELECT pgq.drop_queue(queue_name, true) FROM pgq.queue WHERE queue_name = 'bench'" >/dev/null
             sql "SELECT pgq.create_queue('bench')" >/dev/null
             sql "SELECT pgq.register_consumer('bench', 'bench')" >/dev/null ;;
    esac
    sql "VACUUM"
    sql "CHECKPOINT"
}

# counters SYS: "WAL position|wal_sync|backlog|vacuums|dead rows|bytes|
# index entries read",
# read once wal_sync has stopped moving (the walwriter reports its own
# syncs a little later than the backends).
counters() {
    settled_wal_sync >/dev/null
    sql "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn, (SELECT wal_sync FROM pg_stat_wal),
                ($(backlog_query "$1")),
                coalesce(sum(autovacuum_count + vacuum_count), 0), coalesce(sum(n_dead_tup), 0),
                coalesce(sum(pg_total_relation_size(relid)), 0),
                (SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_user_indexes WHERE schemaname = '$1')
           FROM pg_stat_user_tables WHERE schemaname = '$1'"
}

# run_phase SYS PHASE: one pgbench run of the producers beside one of the
# consumers; appends to results/SYS_PHASE "1 taken/s 2 puts/s 3 backlog
# 4 per get 5 WAL B/msg 6 syncs/msg 7 autovac 8 dead rows 9 MB 10 idx/get".
run_phase() {
    local sys=$1 phase=$2 before after put_pid take_pid puts gets
    before=$(counters "$sys")
    # Where the phase starts, in the server log's terms (UTC), so that
    # vacuum_log can tell which phase each autovacuum ended in.
    printf '%s %s %s %s\n' "$(sql "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS')")" \
        "$sys" "$phase" "${RUNS[$sys]}" >>"$WORK/results/phase_starts"
    run_as_pg pgbench -n -M prepared -c "$PRODUCERS" -j 1 -T "$PHASE" \
        -f "$WORK/scripts/${sys}_put.sql" >"$WORK/put.out" 2>&1 &
    put_pid=$!
    run_as_pg pgbench -n -M prepared -c "$CONSUMERS" -j 1 -T "$PHASE" \
        -f "$WORK/scripts/${sys}_take.sql" >"$WORK/take.out" 2>&1 &
    take_pid=$!
    wait "$put_pid" || { cat "$WORK/put.out"; die "the producers failed ($sys, $phase)"; }
    wait "$take_pid" || { cat "$WORK/take.out"; die "the consumers failed ($sys, $phase)"; }
    wait_for_clients_gone pgbench
    after=$(counters "$sys")
    puts=$(grep -oP 'number of transactions actually processed: \K[0-9]+' "$WORK/put.out")
    gets=$(grep -oP 'number of transactions actually processed: \K[0-9]+' "$WORK/take.out")
    awk -v b="$before" -v a="$after" -v puts="$puts" -v gets="$gets" -v t="$PHASE" 'BEGIN {
        split(b, x, "|"); split(a, y, "|");
        taken = puts - (y[3] - x[3]); moved = (puts + taken) / 2;
        printf "%.1f %.1f %d %.2f %.0f %.3f %d %d %.1f %.1f\n", taken / t, puts / t, y[3],
            (gets > 0 ? taken / gets : 0), (moved > 0 ? (y[1] - x[1]) / moved : 0),
            (moved > 0 ? (y[2] - x[2]) / moved : 0), y[4] - x[4], y[5], y[6] / 1048576,
            (gets > 0 ? (y[7] - x[7]) / gets : 0) }' \
        >>"$WORK/results/${sys}_$phase"
    tail -n 1 "$WORK/results/${sys}_$phase" | awk -v s="$sys" -v p="$phase" '{
        printf "  %-5s %-7s %6.0f taken/s %6.0f puts/s %7d backlog %5.2f per get %7.1f idx/get %5.0f WAL B/msg %5.3f syncs/msg %d autovac %7d dead %6.0f MB\n",
            s, p, $1, $2, $3, $4, $10, $5, $6, $7, $8, $9 }'
}

# run_case SYS: the three phases of one system (called by run_rounds).
# The round each system is in, for the phase marks vacuum_log reads.
declare -A RUNS=()
run_case() {
    local sys=$1
    RUNS[$sys]=$((${RUNS[$sys]:-0} + 1))
    reset_system "$sys"
    run_phase "$sys" before
    start_holder
    run_phase "$sys" during
    stop_holder
    run_phase "$sys" after
}

# ratio_column SYS PHASE: taken/s of PHASE over before's, one line per round.
ratio_column() {
    paste -d ' ' <(awk '{ print $1 }' "$WORK/results/$1_$2") <(awk '{ print $1 }' "$WORK/results/$1_before") |
        awk '{ printf "%.2f\n", ($2 > 0 ? $1 / $2 : 0) }'
}

report() {
    local sys phase label c
    printf '\nheld xmin: %d producers, %d consumers (up to %d per get), %d-byte payloads, %d s per phase, ' \
        "$PRODUCERS" "$CONSUMERS" "$BATCH" "$PAYLOAD_BYTES" "$PHASE"
    if ((ROUNDS > 1)); then printf 'median of %d rounds\n' "$ROUNDS"; else printf '1 round\n'; fi
    printf '%-6s %-7s %7s %7s %9s %7s %7s %8s %9s %9s %7s %9s %6s\n' system phase puts/s taken/s "vs before" \
        backlog "per get" "idx/get" "WAL B/msg" syncs/msg autovac "dead rows" MB
    for sys in "${SYSTEMS[@]}"; do
        label=$sys
        for phase in "${PHASES[@]}"; do
            local -a m=()
            for c in 1 2 3 4 5 6 7 8 9 10; do m[c]=$(column_median "${sys}_$phase" "$c"); done
            local vs=""
            [[ $phase != before ]] && vs=$(ratio_column "$sys" "$phase" | median | xargs printf '%.2fx')
            printf '%-6s %-7s %7.0f %7.0f %9s %7.0f %7.2f %8.1f %9.0f %9.3f %7.0f %9.0f %6.0f\n' "$label" "$phase" \
                "${m[2]}" "${m[1]}" "$vs" "${m[3]}" "${m[4]}" "${m[10]}" "${m[5]}" "${m[6]}" "${m[7]}" "${m[8]}" "${m[9]}"
            label=""
        done
    done
    printf '\ntaken/s during / before (target >= 0.8x; the issue measured PGMQ at 0.09-0.16x, PgQ 1.00-1.25x):\n'
    for sys in "${SYSTEMS[@]}"; do
        printf '  %-5s %sx  (%s)\n' "$sys" "$(ratio_column "$sys" during | median | xargs printf '%.2f')" \
            "$(ratio_column "$sys" during | tr '\n' ' ' | sed 's/ $//')"
    done
    printf 'taken/s after / before:\n'
    for sys in "${SYSTEMS[@]}"; do
        printf '  %-5s %sx  (%s)\n' "$sys" "$(ratio_column "$sys" after | median | xargs printf '%.2f')" \
            "$(ratio_column "$sys" after | tr '\n' ' ' | sed 's/ $//')"
    done
}

# The autovacuums of the queue tables, from the server log: in which phase
# each ended, how many dead rows it removed and how many it had to keep
# (those a running transaction might still see).
vacuum_log() {
    printf '\nautovacuums of the queue tables (server log; the phase they ended in):\n'
    awk 'FNR == NR { start[++n] = $1 " " $2; tag[n] = $3 " " $4 (rounds > 1 ? " (round " $5 ")" : ""); next }
         /automatic vacuum of table "postgres\.(rmsg\.message|pgmq\.q_bench|pgq\.event_[0-9_]+)"/ {
             at = $1 " " $2; table = $0; sub(/.*automatic vacuum of table "postgres\./, "", table); sub(/".*/, "", table)
             phase = "(before the first phase)"
             for (i = 1; i <= n; i++) if (start[i] <= at) phase = tag[i]
             want = 1; next }
         want && /tuples:/ { sub(/^[ \t]*tuples: /, ""); printf "  %-24s %-22s %s\n", phase, table, $0; want = 0; shown++ }
         END { if (!shown) print "  none" }' rounds="$ROUNDS" "$WORK/results/phase_starts" "$WORK/bench-server.log"
}

main() {
    bench_setup held_xmin postgresql-15-pgq3 pgqd
    trap stop_helpers EXIT
    install_pgmq
    start_cluster
    setup_schema
    start_pgqd
    write_scripts
    log "$ROUNDS round(s) of ${PHASE}s phases, $PRODUCERS producers and $CONSUMERS consumers per system, ${PAYLOAD_BYTES}-byte payloads, synchronous_commit = on"
    run_rounds "$ROUNDS" "${SYSTEMS[@]}"
    report
    vacuum_log
}

main "$@"
