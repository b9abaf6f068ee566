#!/usr/bin/env bash
#
# Queue throughput and latency, side by side in one run: recoverable_msg
# against PGMQ 1.5.1 (pure SQL, installed at run time from its script, see
# install_pgmq in lib_peers.sh) and against PgQ (Debian's
# postgresql-15-pgq3).
#
#   test/bench/queue.sh                       # 5 rounds of 10 s per workload: about 13 min
#   ROUNDS=1 DURATION=5 BUILD=0 test/bench/queue.sh   # a quick look, about 2 min
#   CASES="cycle get10" test/bench/queue.sh   # some of the cases
#   CASES=held_xmin PHASE=90 test/bench/queue.sh      # case 6 alone, as the issue ran it
# Knobs: ROUNDS (5), DURATION (10, seconds per pgbench run), CASES (all but
# held_xmin: "cycle put get10 batch latency"), BUILD (1; 0 uses the build
# already installed), BACKLOG (50000 x DURATION, messages put before case 3),
# IN_FLIGHT ("0 10000 50000", case 5's levels), LAT_GETS (300, gets timed per
# level and round), LAT_READY (100, case 5's ready messages), PHASE (30) and
# HELD_ROUNDS (1) for case 6, PGMQ_DIR (where PGMQ's control file and script
# are, ../shared/anchors/pgmq beside the repository).
#
# The cases.  pgbench, prepared statements, 4 clients (2 threads), 1 KiB
# payloads (bytea for rmsg, jsonb for PGMQ, text for PgQ), every call in
# autocommit, synchronous_commit = on:
#   1 cycle    one message through the queue per pgbench transaction
#              (rmsg also with each put in one of 100 message groups, at
#              random, and with each put at a priority from 0 to 9, at
#              random: targets >= 0.9x the plain cycle):
#              rmsg.put, rmsg.get (1 message, 30 s lease), rmsg.ack(msg_id,
#              receipt), against pgmq.send, pgmq.read(queue, 30, 1),
#              pgmq.delete(queue, msg_id), each its own statement.  A
#              client's get may find nothing (the others hold every ready
#              row): it then skips its ack.  Target: rmsg >= 2.0x PGMQ.
#   2 put      rmsg.put against pgmq.send and pgq.insert_event (no consumer,
#              so no pgqd: a ticker is not needed to insert).
#   3 get10    consumers on a backlog of BACKLOG messages put beforehand
#              (put_batch / send_batch of 1000 per call, one transaction):
#              rmsg.get(queue, 10, '30 seconds') then rmsg.ack(msg_ids,
#              receipts) of what it got, against pgmq.read(queue, 30, 10)
#              then pgmq.delete(queue, msg_ids).  The messages taken are
#              the backlog's decrease (a run that empties it says so: its
#              rate is then too low).  Also printed: the updates of
#              message rows (rmsg.message; PGMQ's q_bench for comparison)
#              over the run and their HOT share, n_tup_hot_upd /
#              n_tup_upd.  Target: no update of a message row, or >= 90%
#              HOT (a lease is a row of rmsg.lease).
#   4 batch    100 messages per call: rmsg.put_batch against
#              pgmq.send_batch and a plain 100-row INSERT into a table with
#              a bigserial primary key, enqueued_at and a bytea.  Targets:
#              rmsg >= 1.0x send_batch, >= 0.8x the INSERT.
#   5 latency  one client; IN_FLIGHT messages leased for an hour (put, then
#              taken in gets of up to 10000, committed), LAT_READY ready
#              ones put behind them, then LAT_GETS times: put one (the
#              backlog stays the same), get one, ack it.  Each get is timed
#              by psql's \timing (simple protocol, a fresh plan each time,
#              for both systems alike); printed: the median ms per get at
#              each level, and the ratio of the highest level to 0
#              (target <= 2x for each system).  PGMQ: pgmq.read(queue, 30,
#              1) and pgmq.delete.
#   6 held_xmin  test/bench/held_xmin.sh, run as it is (PHASE seconds per
#              phase, default 30 here, HELD_ROUNDS rounds, BUILD=0) after
#              the other cases, when CASES lists it: about 5 minutes at
#              PHASE=30, so it is not in the default CASES.  The issue's
#              run is PHASE=90 test/bench/held_xmin.sh (about 15 min).
#
# Each workload starts from emptied tables (TRUNCATE of every queue table,
# a new PgQ queue), a VACUUM and a CHECKPOINT; then case 3 puts its
# backlog, case 5 its leases (both after the checkpoint: the measured run
# writes no full-page images of their pages) and the queue table is
# ANALYZEd (PGMQ's plans depend on it; rmsg reads its index itself).  The
# workloads run interleaved round after round, in reverse order every
# other round (run_rounds); the table shows the median of the rounds, and
# beside every rate the figures that hardly depend on the machine's noise:
#   WAL B/msg   WAL bytes per message (pg_current_wal_insert_lsn()
#               difference around the run: the insert position, exact to
#               the byte; autovacuum's share included);
#   syncs/msg   pg_stat_wal.wal_sync difference per message (every
#               process's fsyncs, read once the clients are gone and the
#               counter is still);
#   table B/msg the growth of the queue table over the run
#               (pg_total_relation_size: heap, indexes, TOAST; PgQ's event
#               tables) per message: what a put costs on disk, and how much
#               room a cycle leaves behind unreused;
#   HOT         n_tup_hot_upd / n_tup_upd of the queue table over the run,
#               read once the clients' backends are gone (a backend
#               reports its statistics as it exits);
#   left        messages in the queue table at the end (case 5: the queue
#               size, in flight and ready).
# Messages per second are pgbench's tps (without the connection time)
# times the messages per transaction.  The ratios are the median of the
# rounds' ratios (each round's two runs ran close together), each round's
# in brackets.  A benchmark prints figures: it passes or fails nothing.
#
# Cluster: a scratch one (data directory under the work directory, a free
# port, run as postgres when started as root), stopped at exit, with the
# library preloaded and no background worker, shared_buffers 2GB (case
# 3's backlog stays in memory: 500,000 messages are 1.3 GB in rmsg.message
# at its fillfactor of 50, 0.6 GB in PGMQ's table), max_wal_size 4GB,
# checkpoint_timeout 30min, autovacuum as configured by default.  The
# machine may be small (2 cores) and noisy: rates are medians; the WAL
# figures barely depend on it.

set -euo pipefail

# shellcheck source=test/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
# shellcheck source=test/bench/lib_peers.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib_peers.sh"

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
BACKLOG=${BACKLOG:-}
LAT_GETS=${LAT_GETS:-300}
LAT_READY=${LAT_READY:-100}
PHASE=${PHASE:-30}
HELD_ROUNDS=${HELD_ROUNDS:-1}
read -r -a CASES <<<"${CASES:-cycle put get10 batch latency}"
read -r -a IN_FLIGHT <<<"${IN_FLIGHT:-0 10000 50000}"
CLIENTS=4
PAYLOAD_BYTES=1024

for c in "${CASES[@]}"; do
    [[ $c == @(cycle|put|get10|batch|latency|held_xmin) ]] ||
        die "CASES lists cycle, put, get10, batch, latency and held_xmin, not '$c'"
done
[[ ${DURATION} =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive integer, not '$DURATION'"
# Case 3's consumers took about 40,000 messages per second here: its
# backlog lasts the run with room to spare.
BACKLOG=${BACKLOG:-$((50000 * DURATION))}
for var in ROUNDS BACKLOG LAT_GETS LAT_READY PHASE HELD_ROUNDS; do
    [[ ${!var} =~ ^[1-9][0-9]*$ ]] || die "$var must be a positive integer, not '${!var}'"
done
((${#IN_FLIGHT[@]} > 0)) || die "IN_FLIGHT lists at least one count of messages"
for n in "${IN_FLIGHT[@]}"; do
    [[ $n =~ ^(0|[1-9][0-9]*)$ ]] || die "IN_FLIGHT lists counts of messages, not '$n'"
done

has_case() { [[ " ${CASES[*]} " == *" $1 "* ]]; }

sql() { run_as_pg psql -X -q -v ON_ERROR_STOP=1 -At -c "$1"; }

start_cluster() {
    start_bench_cluster \
        "synchronous_commit = on" \
        "shared_buffers = 2GB" \
        "max_wal_size = 4GB" \
        "checkpoint_timeout = 30min" \
        "max_connections = 50"
}

setup_schema() {
    sql "CREATE EXTENSION recoverable_msg"
    sql "CREATE EXTENSION pgmq VERSION '1.5.1'"
    sql "CREATE EXTENSION pgq"
    sql "SELECT rmsg.create_queue('bench')"
    sql "SELECT pgmq.create('bench')" >/dev/null
    sql "SELECT pgq.create_queue('bench')" >/dev/null
    sql "CREATE TABLE batch_target (id bigserial PRIMARY KEY,
             enqueued_at timestamptz NOT NULL DEFAULT now(), message bytea NOT NULL)"
    create_payload_functions
}

# The workloads of a case, named CASE_SYSTEM (case 5: latN_SYSTEM, one per
# level), in the order they run within a round.
workloads_of() {
    local n
    case $1 in
        cycle) echo cycle_rmsg cyclegrp_rmsg cycleprio_rmsg cycle_pgmq ;;
        put) echo put_rmsg put_pgmq put_pgq ;;
        get10) echo get10_rmsg get10_pgmq ;;
        batch) echo batch_rmsg batch_pgmq batch_insert ;;
        latency) for n in "${IN_FLIGHT[@]}"; do echo "lat${n}_rmsg lat${n}_pgmq"; done ;;
    esac
}

# pgbench scripts, one per workload, and psql's for case 5.  Every get
# reads what it got (the payloads' total length), as a consumer would.
# pgbench's \gset of a NULL gives an empty string, which a prepared
# statement cannot take as a bigint: hence the aggregates, and \if to skip
# the ack of a get that found nothing.
write_scripts() {
    local d=$WORK/scripts i
    cat >"$d/cycle_rmsg.sql" <<'SQL'
SELECT rmsg.put('bench', bench_payload());
SELECT count(*) AS n, coalesce(max(msg_id), 0) AS id, coalesce(max(receipt), 0) AS receipt, coalesce(sum(length(payload)), 0) AS bytes FROM rmsg.get('bench', 1, '30 seconds') \gset
\if :n > 0
SELECT rmsg.ack(:id::bigint, :receipt::bigint);
\endif
SQL
    cat >"$d/cyclegrp_rmsg.sql" <<'SQL'
\set g random(1, 100)
SELECT rmsg.put('bench', bench_payload(), group_id => 'g' || :g);
SELECT count(*) AS n, coalesce(max(msg_id), 0) AS id, coalesce(max(receipt), 0) AS receipt, coalesce(sum(length(payload)), 0) AS bytes FROM rmsg.get('bench', 1, '30 seconds') \gset
\if :n > 0
SELECT rmsg.ack(:id::bigint, :receipt::bigint);
\endif
SQL
    cat >"$d/cycleprio_rmsg.sql" <<'SQL'
\set p random(0, 9)
SELECT rmsg.put('bench', bench_payload(), priority => :p);
SELECT count(*) AS n, coalesce(max(msg_id), 0) AS id, coalesce(max(receipt), 0) AS receipt, coalesce(sum(length(payload)), 0) AS bytes FROM rmsg.get('bench', 1, '30 seconds') \gset
\if :n > 0
SELECT rmsg.ack(:id::bigint, :receipt::bigint);
\endif
SQL
    cat >"$d/cycle_pgmq.sql" <<'SQL'
SELECT * FROM pgmq.send('bench', bench_json());
SELECT count(*) AS n, coalesce(max(msg_id), 0) AS id, coalesce(sum(length(message::text)), 0) AS bytes FROM pgmq.read('bench', 30, 1) \gset
\if :n > 0
SELECT pgmq.delete('bench', :id::bigint);
\endif
SQL
    cat >"$d/put_rmsg.sql" <<'SQL'
SELECT rmsg.put('bench', bench_payload());
SQL
    cat >"$d/put_pgmq.sql" <<'SQL'
SELECT * FROM pgmq.send('bench', bench_json());
SQL
    cat >"$d/put_pgq.sql" <<'SQL'
SELECT pgq.insert_event('bench', 'bench', bench_text());
SQL
    cat >"$d/get10_rmsg.sql" <<'SQL'
SELECT count(*) AS n, coalesce(sum(length(payload)), 0) AS bytes, coalesce(array_agg(msg_id), '{}') AS ids, coalesce(array_agg(receipt), '{}') AS receipts FROM rmsg.get('bench', 10, '30 seconds') \gset
\if :n > 0
SELECT rmsg.ack(:ids::bigint[], :receipts::bigint[]);
\endif
SQL
    cat >"$d/get10_pgmq.sql" <<'SQL'
SELECT count(*) AS n, coalesce(sum(length(message::text)), 0) AS bytes, coalesce(array_agg(msg_id), '{}') AS ids FROM pgmq.read('bench', 30, 10) \gset
\if :n > 0
SELECT count(*) FROM pgmq.delete('bench', :ids::bigint[]);
\endif
SQL
    cat >"$d/batch_rmsg.sql" <<'SQL'
SELECT count(*) FROM rmsg.put_batch('bench', array_fill(bench_payload(), ARRAY[100]));
SQL
    cat >"$d/batch_pgmq.sql" <<'SQL'
SELECT count(*) FROM pgmq.send_batch('bench', array_fill(bench_json(), ARRAY[100]));
SQL
    cat >"$d/batch_insert.sql" <<'SQL'
INSERT INTO batch_target (message) SELECT bench_payload() FROM generate_series(1, 100);
SQL
    # Case 5: psql times only the get (\timing, which -q does not
    # silence); the put keeps the backlog as it was.
    for ((i = 0; i < LAT_GETS; i++)); do
        cat <<'SQL'
SELECT rmsg.put('bench', bench_payload());
\timing on
SELECT count(*) AS n, coalesce(max(msg_id), 0) AS id, coalesce(max(receipt), 0) AS receipt, coalesce(sum(length(payload)), 0) AS bytes FROM rmsg.get('bench', 1, '30 seconds') \gset
\timing off
SELECT rmsg.ack(:id, :receipt);
SQL
    done >"$d/lat_rmsg.sql"
    for ((i = 0; i < LAT_GETS; i++)); do
        cat <<'SQL'
SELECT * FROM pgmq.send('bench', bench_json());
\timing on
SELECT count(*) AS n, coalesce(max(msg_id), 0) AS id, coalesce(sum(length(message::text)), 0) AS bytes FROM pgmq.read('bench', 30, 1) \gset
\timing off
SELECT pgmq.delete('bench', :id::bigint);
SQL
    done >"$d/lat_pgmq.sql"
    chmod -R a+rX "$d"
}

# Empties every queue table (PgQ's by a new queue: its event tables go
# with the old one), then gives the next workload a clean slate.
reset_state() {
    sql "TRUNCATE rmsg.message, rmsg.lease, rmsg.payload, pgmq.q_bench, pgmq.a_bench, batch_target"
    sql "SELECT pgq.drop_queue('bench', true)" >/dev/null
    sql "SELECT pgq.create_queue('bench')" >/dev/null
    sql "VACUUM"
    sql "CHECKPOINT"
}

# put_ready SYS N: N ready messages, 1000 per call, one transaction.
put_ready() {
    local call
    case $1 in
        rmsg) call="rmsg.put_batch('bench', array_fill(bench_payload(), ARRAY[least(1000, n - done)]))" ;;
        pgmq) call="pgmq.send_batch('bench', array_fill(bench_json(), ARRAY[least(1000, n - done)]))" ;;
    esac
    sql "DO \$\$ DECLARE n int := $2; done int := 0; BEGIN
             WHILE done < n LOOP PERFORM count(*) FROM $call; done := done + 1000; END LOOP;
         END \$\$"
}

# lease SYS N: N messages put and leased for an hour; dies unless exactly N
# are in flight afterwards.
lease() {
    local sys=$1 n=$2 in_flight
    ((n > 0)) || return 0
    put_ready "$sys" "$n"
    case $sys in
        # A get takes at most 10000.
        rmsg) sql "DO \$\$ DECLARE n int := $n; k int; taken int := 0; BEGIN
                       WHILE taken < n LOOP
                           SELECT count(*) INTO k FROM rmsg.get('bench', least(10000, n - taken), '1 hour');
                           EXIT WHEN k = 0;
                           taken := taken + k;
                       END LOOP;
                   END \$\$"
              in_flight=$(sql "SELECT in_flight FROM rmsg.queues WHERE queue = 'bench'") ;;
        pgmq) sql "SELECT count(*) FROM pgmq.read('bench', 3600, $n)" >/dev/null
              in_flight=$(sql "SELECT count(*) FROM pgmq.q_bench WHERE vt > clock_timestamp() + interval '10 minutes'") ;;
    esac
    [[ $in_flight == "$n" ]] || die "$sys: $in_flight messages in flight, not $n"
}

# What a workload's queue table is, for its statistics and its backlog
# (PgQ's events are in children of pgq.event_template, which a count of
# the parent includes).
queue_table() {
    case $1 in
        rmsg) echo rmsg.message ;;
        pgmq) echo pgmq.q_bench ;;
        insert) echo batch_target ;;
        pgq) echo pgq.event_template ;;
    esac
}

# The bytes on disk of a system's queue table, its indexes and TOAST
# included; PgQ's are the event tables of its queue.
size_query() {
    case $1 in
        pgq) echo "SELECT coalesce(sum(pg_total_relation_size(oid)), 0) FROM pg_class
                    WHERE relnamespace = 'pgq'::regnamespace AND relkind = 'r' AND relname ~ '^event_[0-9]'" ;;
        # a message's lease is a row of rmsg.lease: its bytes count too
        rmsg) echo "SELECT pg_total_relation_size('rmsg.message') + pg_total_relation_size('rmsg.lease')" ;;
        *) echo "SELECT pg_total_relation_size('$(queue_table "$1")')" ;;
    esac
}

# counters SYS: "WAL position|wal_sync|n_tup_upd|n_tup_hot_upd|rows|bytes"
# of the system's queue table, wal_sync read once it is still.
counters() {
    local table
    table=$(queue_table "$1")
    settled_wal_sync >/dev/null
    sql "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn, w.wal_sync,
                coalesce(s.n_tup_upd, 0), coalesce(s.n_tup_hot_upd, 0),
                (SELECT count(*) FROM $table), ($(size_query "$1"))
           FROM pg_stat_wal w LEFT JOIN pg_stat_user_tables s ON s.relid = '$table'::regclass"
}

# record NAME BEFORE AFTER MSGS RATE EXTRA: appends to results/NAME "1 rate
# 2 WAL B/msg 3 syncs/msg 4 HOT updates 5 updates 6 rows left 7 extra
# 8 table growth B/msg" from the counters around the run, its messages, its
# rate (messages per second, or case 5's median ms per get) and EXTRA
# (pgbench's tps, or case 5's mean ms per get).
record() {
    local name=$1 before=$2 after=$3 msgs=$4 rate=$5 extra=$6
    awk -v b="$before" -v a="$after" -v m="$msgs" -v r="$rate" -v e="$extra" 'BEGIN {
        split(b, x, "|"); split(a, y, "|");
        printf "%.3f %.0f %.3f %d %d %d %.3f %.0f\n", r, (m > 0 ? (y[1] - x[1]) / m : 0),
            (m > 0 ? (y[2] - x[2]) / m : 0), y[4] - x[4], y[3] - x[3], y[5], e,
            (m > 0 ? (y[6] - x[6]) / m : 0) }' \
        >>"$WORK/results/$name"
}

# run_pgbench NAME SYS KIND: one pgbench run of NAME's script, its figures
# recorded.
run_pgbench() {
    local name=$1 sys=$2 kind=$3 before after out tps tx msgs
    before=$(counters "$sys")
    out=$(run_as_pg pgbench -n -M prepared -c "$CLIENTS" -j 2 -T "$DURATION" \
        -f "$WORK/scripts/$name.sql" 2>&1) || { echo "$out"; die "pgbench failed for $name"; }
    wait_for_clients_gone pgbench
    after=$(counters "$sys")
    tps=$(grep -oP 'tps = \K[0-9.]+' <<<"$out" | head -1)
    tx=$(grep -oP 'number of transactions actually processed: \K[0-9]+' <<<"$out")
    case $kind in
        batch) msgs=$((tx * 100)) ;;
        # The backlog's decrease: what the consumers took and acked.
        get10) msgs=$(($(cut -d'|' -f5 <<<"$before") - $(cut -d'|' -f5 <<<"$after"))) ;;
        *) msgs=$tx ;;
    esac
    record "$name" "$before" "$after" "$msgs" \
        "$(awk -v t="$tps" -v m="$msgs" -v x="$tx" 'BEGIN { print (x > 0 ? t * m / x : 0) }')" "$tps"
    tail -n 1 "$WORK/results/$name" | awk -v n="$name" '{
        printf "  %-15s %9.0f msgs/s %7.0f WAL B/msg %6.3f syncs/msg %6.0f table B/msg", n, $1, $2, $3, $8
        if ($5 > 0) printf " %5.1f%% HOT", 100 * $4 / $5
        printf "\n" }'
    [[ $kind != get10 || $(cut -d'|' -f5 <<<"$after") -gt 0 ]] ||
        printf '  WARNING: %s emptied its backlog of %d: its rate is too low (raise BACKLOG)\n' "$name" "$BACKLOG"
}

# run_latency NAME SYS: case 5's psql loop, its gets' median and mean ms.
run_latency() {
    local name=$1 sys=$2 before after times
    before=$(counters "$sys")
    run_as_pg psql -X -q -v ON_ERROR_STOP=1 -At -d "dbname=$PGDATABASE application_name=bench_latency" \
        -f "$WORK/scripts/lat_$sys.sql" >"$WORK/lat.out" 2>&1 ||
        { tail -n 20 "$WORK/lat.out"; die "the latency loop failed for $name"; }
    wait_for_clients_gone bench_latency
    after=$(counters "$sys")
    # "Time: 0.123 ms", or "Time: 1234.567 ms (00:01.235)" past a second.
    times=$(awk '/^Time: / { print $2 }' "$WORK/lat.out")
    [[ $(wc -l <<<"$times") == "$LAT_GETS" ]] || die "$name: not $LAT_GETS timed gets in $WORK/lat.out"
    record "$name" "$before" "$after" "$LAT_GETS" "$(median <<<"$times")" \
        "$(awk '{ s += $1 } END { print s / NR }' <<<"$times")"
    tail -n 1 "$WORK/results/$name" | awk -v n="$name" '{
        printf "  %-15s %9.3f ms/get (mean %.3f) %7.0f WAL B/msg %6.3f syncs/msg %7d in the queue\n", n, $1, $7, $2, $3, $6 }'
}

# run_case NAME (called by run_rounds): a clean slate, what the case puts
# beforehand, then the measured run.
run_case() {
    local name=$1 sys=${1##*_} kind=${1%_*}
    reset_state
    case $kind in
        get10) put_ready "$sys" "$BACKLOG" ;;
        lat*) lease "$sys" "${kind#lat}"
              put_ready "$sys" "$LAT_READY" ;;
    esac
    if [[ $kind == @(get10|lat*) ]]; then
        sql "ANALYZE $(queue_table "$sys")"
    fi
    case $kind in
        lat*) run_latency "$name" "$sys" ;;
        *) run_pgbench "$name" "$sys" "$kind" ;;
    esac
}

# verdict VALUE OP TARGET: "met" or "missed".
verdict() {
    awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { ok = (op == ">=") ? (v >= t) : (v <= t); print (ok ? "met" : "missed") }'
}

# ratio_line LABEL A B [OP TARGET]: the median of the rounds' ratios of A's
# first column to B's, each round's, and the target's verdict.
ratio_line() {
    local label=$1 a=$2 b=$3 op=${4:-} target=${5:-} text value
    text=$(paired "$a" "$b")
    value=$(median <"$WORK/results/$a.$b.paired")
    printf '  %-40s %s' "$label" "$text"
    [[ -n $op ]] && printf '  [%s %sx: %s]' "$op" "$target" "$(verdict "$value" "$op" "$target")"
    printf '\n'
}

# The median over NAME's rounds of the HOT share of its queue table's
# updates, in percent.
hot_share() {
    awk '{ print ($5 > 0 ? 100 * $4 / $5 : 0) }' "$WORK/results/$1" | median | xargs printf '%.1f'
}

# row LABEL NAME [left [DECIMALS]]: one line of the table, the medians of
# NAME's columns: the rate (to DECIMALS places, default 0), WAL and syncs
# per message, the HOT share when the queue table had updates, and the
# rows left in it when asked.
row() {
    local label=$1 name=$2 left=${3:-} decimals=${4:-0} hot=""
    if [[ $(column_median "$name" 5) != 0 ]]; then
        hot="$(hot_share "$name")%"
    fi
    if [[ -n $left ]]; then
        left=$(column_median "$name" 6 | xargs printf '%.0f')
    fi
    printf "  %-40s %10.${decimals}f %10.0f %10.3f %11.0f %7s %8s" "$label" "$(column_median "$name" 1)" \
        "$(column_median "$name" 2)" "$(column_median "$name" 3)" "$(column_median "$name" 8)" "$hot" "$left" |
        sed 's/ *$//'
    printf '\n'
}

report() {
    local n name first last
    printf '\n%s, %d clients (case 5: 1), %d-byte payloads, synchronous_commit = on\n' \
        "$( ((ROUNDS > 1)) && echo "median of $ROUNDS rounds" || echo "1 round")" "$CLIENTS" "$PAYLOAD_BYTES"
    printf '  %-40s %10s %10s %10s %11s %7s %8s\n' "" msgs/s "WAL B/msg" syncs/msg "table B/msg" HOT left
    if has_case cycle; then
        printf '1. put + get + ack, one message per cycle\n'
        row "rmsg  put, get, ack" cycle_rmsg left
        row "rmsg  the same in 100 message groups" cyclegrp_rmsg left
        row "rmsg  the same at priorities 0-9" cycleprio_rmsg left
        row "pgmq  send, read 1, delete" cycle_pgmq left
    fi
    if has_case put; then
        printf '2. put\n'
        row "rmsg.put" put_rmsg
        row "pgmq.send" put_pgmq
        row "pgq.insert_event" put_pgq
    fi
    if has_case get10; then
        printf '3. get 10 + ack of the array, on a backlog of %d\n' "$BACKLOG"
        row "rmsg  get 10, ack(ids, receipts)" get10_rmsg left
        row "pgmq  read 10, delete(ids)" get10_pgmq left
    fi
    if has_case batch; then
        printf '4. 100 messages per call\n'
        row "rmsg.put_batch" batch_rmsg
        row "pgmq.send_batch" batch_pgmq
        row "100-row INSERT" batch_insert
    fi
    if has_case latency; then
        printf '5. get latency, 1 client: put, get, ack    %10s %10s %10s %11s %7s %8s\n' ms/get "WAL B/msg" syncs/msg "table B/msg" HOT queue
        for sys in rmsg pgmq; do
            for n in "${IN_FLIGHT[@]}"; do
                row "$(printf '%-5s %6d in flight ahead' "$sys" "$n")" "lat${n}_$sys" left 3
            done
        done
    fi

    printf '\nratios: the median of the rounds'"'"' (each round'"'"'s in brackets)  [target]\n'
    if has_case cycle; then
        ratio_line "1. cycle, rmsg / pgmq:" cycle_rmsg cycle_pgmq '>=' 2.0
        ratio_line "   cycle in groups / plain:" cyclegrp_rmsg cycle_rmsg '>=' 0.9
        ratio_line "   cycle at priorities / plain:" cycleprio_rmsg cycle_rmsg '>=' 0.9
    fi
    if has_case put; then
        ratio_line "2. put, rmsg / pgmq.send:" put_rmsg put_pgmq
        ratio_line "   put, rmsg / pgq.insert_event:" put_rmsg put_pgq
    fi
    if has_case get10; then
        ratio_line "3. get 10 + ack, rmsg / pgmq:" get10_rmsg get10_pgmq
        if [[ $(column_median get10_rmsg 5) == 0 ]]; then
            # leases are rows of rmsg.lease: a get writes no message row
            printf '  %-40s %s  (%s)  [none, or >= 90%% HOT: met]\n' "   updates of rmsg's message rows:" 0 \
                "$(awk '{ n = n $5 " " } END { printf "%sin the rounds", n }' "$WORK/results/get10_rmsg")"
        else
            printf '  %-40s %s%%  (%s)  [none, or >= 90%% HOT: %s]\n' "   HOT share of rmsg's message updates:" \
                "$(hot_share get10_rmsg)" \
                "$(awk '{ s = s sprintf("%.1f%% ", ($5 > 0 ? 100 * $4 / $5 : 0)); n = n " " $5 }
                        END { printf "%sof%s updates", s, n }' "$WORK/results/get10_rmsg")" \
                "$(verdict "$(hot_share get10_rmsg)" '>=' 90)"
        fi
        printf '  %-40s %s%%\n' "   HOT share of PGMQ's reads:" "$(hot_share get10_pgmq)"
    fi
    if has_case batch; then
        ratio_line "4. batch, rmsg / pgmq.send_batch:" batch_rmsg batch_pgmq '>=' 1.0
        ratio_line "   batch, rmsg / 100-row INSERT:" batch_rmsg batch_insert '>=' 0.8
    fi
    if has_case latency; then
        first=${IN_FLIGHT[0]} last=${IN_FLIGHT[-1]}
        for sys in rmsg pgmq; do
            ratio_line "5. ms/get, $sys, $last / $first in flight:" "lat${last}_$sys" "lat${first}_$sys" '<=' 2
        done
    fi

    printf '\nper round: msgs/s (case 5: ms per get)\n'
    for c in "${CASES[@]}"; do
        for name in $(workloads_of "$c"); do
            printf '  %-15s %s\n' "$name" "$(awk '{ printf ($1 < 100 ? "%.3f " : "%.0f "), $1 }' "$WORK/results/$name" | sed 's/ $//')"
        done
    done
}

# Case 6: held_xmin.sh as it is, on a cluster of its own; this run's is
# stopped first so that it runs alone.
run_held_xmin() {
    if [[ -f $WORK/bench_data/postmaster.pid ]]; then
        run_as_pg pg_ctl -D "$WORK/bench_data" -m fast -w stop >/dev/null
    fi
    log "6. held xmin: PHASE=$PHASE ROUNDS=$HELD_ROUNDS BUILD=0 test/bench/held_xmin.sh"
    PHASE=$PHASE ROUNDS=$HELD_ROUNDS BUILD=0 "$ROOT/test/bench/held_xmin.sh"
}

main() {
    local c names=() more=()
    bench_setup queue postgresql-15-pgq3
    trap cleanup_with_peers EXIT
    for c in "${CASES[@]}"; do
        [[ $c == held_xmin ]] && continue
        read -r -a more <<<"$(workloads_of "$c" | tr '\n' ' ')"
        names+=("${more[@]}")
    done
    if ((${#names[@]} > 0)); then
        install_pgmq
        start_cluster
        setup_schema
        write_scripts
        log "$(sql "SELECT string_agg(extname || ' ' || extversion, ', ' ORDER BY extname) || ', wal_sync_method '
                         || current_setting('wal_sync_method') FROM pg_extension WHERE extname <> 'plpgsql'")"
        log "$ROUNDS round(s) of ${DURATION}s per workload, $CLIENTS clients, ${PAYLOAD_BYTES}-byte payloads, synchronous_commit = on: ${names[*]}"
        run_rounds "$ROUNDS" "${names[@]}"
        report
    fi
    if has_case held_xmin; then
        run_held_xmin
    else
        printf '\n6. held xmin: not run (CASES=held_xmin runs it after the others, PHASE=%d); the issue'"'"'s\n' "$PHASE"
        printf '   90 s run is PHASE=90 test/bench/held_xmin.sh (figures in README.md, Performance).\n'
    fi
}

main "$@"
