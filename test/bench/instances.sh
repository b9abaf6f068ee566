#!/usr/bin/env bash
#
# Recovery-mode instances, side by side in one run: what delivering to an
# instance costs when some instances are in recovery, what the shared-memory
# instance cache buys, and how fast a backlog of deferred messages drains
# once recovery completes.
#
#   test/bench/instances.sh            # 6 rounds of 5 s per case, 100,000-message backlog: about 3.5 min
#   ROUNDS=2 DURATION=2 INSTANCES=1000 BACKLOG=10000 SINGLES=1000 test/bench/instances.sh   # a quick look
#   BUILD=0 test/bench/instances.sh    # use the build already installed
# Other knobs: RECOVERING (default INSTANCES / 100), CLIENTS (4),
# BACKLOG_ROUNDS (1), FILL_TX (4), BATCH (100).
#
# 1. rmsg.deliver throughput.  INSTANCES instances (default 10,000); pgbench,
#    CLIENTS clients (2 threads), prepared statements, each transaction one
#    `SELECT * FROM rmsg.deliver(instance, payload)` of a 100-byte payload
#    to an instance drawn at random among them.  Cases:
#      zero               no instance in recovery
#      one                RECOVERING instances (default 1%) in recovery,
#                         spread evenly over the names: about 1% of the
#                         deliveries are deferred
#      one_nocache        as one, with rmsg.instance_cache = off
#      one_async          as one, with synchronous_commit = off
#      one_async_nocache  as one_async, with rmsg.instance_cache = off
#    The cache cases run only when the server knows rmsg.instance_cache (the
#    script says when it does not).  Settings reach pgbench's sessions
#    through PGOPTIONS; the other cases set rmsg.instance_cache = on
#    explicitly.  Before each case every instance is dropped (with its
#    messages) and INSTANCES fresh ones are created, 1000 per transaction,
#    then VACUUM ANALYZE and CHECKPOINT, so that every case starts from the
#    same table sizes and a cold cache; a warm-up run of the first case, not
#    counted, comes before round 1.  The cases run interleaved, round after
#    round, in reverse order every other round so that drift over the run
#    does not favour a case.  Figures: deliveries per second (pgbench tps;
#    the median of the rounds, the ratio of the medians, and the ratio taken
#    round by round, whose cases ran close together), WAL bytes per deliver
#    (pg_current_wal_insert_lsn() difference around the pgbench run: the
#    insert position, exact to the byte, where pg_current_wal_lsn() is the
#    write position and lags behind it under synchronous_commit = off),
#    full-page images per 1000 delivers (pg_stat_wal.wal_fpi), and the share
#    of the messages that rmsg.instances counts as deferred after the run.
#    Target (issue): one >= 0.9x zero.
#
# 2. Backlog release, synchronous_commit = on.  Per round, two instances, A
#    and B, each put in recovery and sent BACKLOG (default 100,000) normal
#    messages in FILL_TX transactions (SELECT ... FROM generate_series(...),
#    LATERAL rmsg.deliver(...)); each payload starts with its sequence
#    number.  Then, for each instance in turn, rmsg.complete_recovery is
#    timed (its commit included), and:
#      A  is drained by a procedure in one session: receive(A, max => BATCH)
#         (default 100); COMMIT; ack(array of the ids); COMMIT; until
#         BACKLOG messages are acked;
#      B  gives SINGLES (default 10,000) messages one at a time,
#         receive(B, max => 1); COMMIT; ack(id); COMMIT; and the rest is
#         drained as A.
#    Checked while draining, and printed: the messages come in msg_id order
#    and in sequence-number order (inversions, which should be 0), each once
#    (deliveries = 1, kind 'normal'), every ack acks what it is given, no
#    receive comes back empty while messages are left, and afterwards
#    rmsg.instances shows the instance empty and nothing more is receivable.
#    Figures: messages per second, WAL bytes and WAL fsyncs
#    (pg_stat_wal.wal_sync, the walwriter's included) per message, the
#    share of the lease updates that were HOT, the drain's rate per tenth of
#    the backlog (does receiving slow down as the acked part grows?), and
#    the time of a receive on the drained line, before and after a VACUUM.
#    BACKLOG_ROUNDS (default 1) rounds.
#
# autovacuum is off, checkpoint_timeout = 1h and max_wal_size = 8GB, so that
# nothing but the measured work writes WAL while it runs; the script vacuums
# and checkpoints between measurements (never during a drain: what dead
# index entries cost a receive shows, as it would between two autovacuum
# runs).  The server is a scratch cluster of its own (data directory under
# the work directory, a free port, run as postgres when started as root),
# stopped at exit.  The machine may be small and noisy: the wall-time
# figures are medians, the WAL figures barely depend on it.  A benchmark
# prints figures; it passes or fails nothing, it marks whether the target
# was met.

# Functions here take their own arguments, not the script's:
# shellcheck disable=SC2119

set -euo pipefail

# shellcheck source=test/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-5}
INSTANCES=${INSTANCES:-10000}
RECOVERING=${RECOVERING:-$((INSTANCES / 100))}
CLIENTS=${CLIENTS:-4}
BACKLOG=${BACKLOG:-100000}
BACKLOG_ROUNDS=${BACKLOG_ROUNDS:-1}
FILL_TX=${FILL_TX:-4}
BATCH=${BATCH:-100}
SINGLES=${SINGLES:-10000}
BUILD=${BUILD:-1}
PAYLOAD_BYTES=100   # the sequence number, 10 digits, then padding
CHUNKS=10           # the drain's rate is printed per tenth of the backlog

for var in ROUNDS DURATION INSTANCES CLIENTS BACKLOG BACKLOG_ROUNDS FILL_TX BATCH SINGLES; do
    [[ ${!var} =~ ^[1-9][0-9]*$ ]] || die "$var must be a positive integer, not '${!var}'"
done
[[ $RECOVERING =~ ^[0-9]+$ ]] || die "RECOVERING must be an integer, not '$RECOVERING'"
((RECOVERING <= INSTANCES)) || die "RECOVERING ($RECOVERING) must be at most INSTANCES ($INSTANCES)"
((SINGLES <= BACKLOG)) || die "SINGLES ($SINGLES) must be at most BACKLOG ($BACKLOG)"
((FILL_TX <= BACKLOG)) || die "FILL_TX ($FILL_TX) must be at most BACKLOG ($BACKLOG)"

declare -A LABEL=(
    [zero]="none in recovery"
    [one]="$RECOVERING in recovery"
    [one_nocache]="$RECOVERING in recovery, cache off"
    [one_async]="$RECOVERING in recovery, sync commit off"
    [one_async_nocache]="$RECOVERING in recovery, sync off, cache off")
CASES=(zero one)      # the cache cases join when the server has the setting
HAVE_CACHE=0

start_cluster() {
    start_bench_cluster \
        "synchronous_commit = on" \
        "shared_buffers = 256MB" \
        "max_wal_size = 8GB" \
        "checkpoint_timeout = 1h" \
        "autovacuum = off" \
        "max_connections = 50"
}

sql() { run_as_pg psql -X -q -v ON_ERROR_STOP=1 -At -c "$1"; }

# case_options CASE: the PGOPTIONS of the case's pgbench sessions.
case_options() {
    local opts=""
    [[ $1 == *async* ]] && opts+=" -c synchronous_commit=off"
    if [[ $HAVE_CACHE == 1 ]]; then
        if [[ $1 == *nocache* ]]; then opts+=" -c rmsg.instance_cache=off"; else opts+=" -c rmsg.instance_cache=on"; fi
    fi
    echo "${opts# }"
}

case_recovering() { if [[ $1 == zero ]]; then echo 0; else echo "$RECOVERING"; fi; }

setup_schema() {
    sql "CREATE EXTENSION recoverable_msg"
    sql "SELECT 'rmsg.deliver(text,bytea,text,jsonb)'::regprocedure" >/dev/null ||
        die "no rmsg.deliver: is a build with recovery-mode instances installed?"
    if sql "SHOW rmsg.instance_cache" >/dev/null 2>"$WORK/show.err"; then
        HAVE_CACHE=1
        CASES=(zero one one_nocache one_async one_async_nocache)
        # The setting has to take effect in pgbench's sessions the way the
        # script hands it over.
        [[ $(run_as_pg env PGOPTIONS="-c rmsg.instance_cache=off" psql -X -At -c "SHOW rmsg.instance_cache") == off ]] ||
            die "rmsg.instance_cache = off through PGOPTIONS did not take effect"
    else
        log "no setting rmsg.instance_cache on this server ($(head -1 "$WORK/show.err")): the cache on/off cases are skipped"
    fi
    sql "CREATE FUNCTION bench_payload() RETURNS bytea IMMUTABLE LANGUAGE sql
             AS \$\$ SELECT convert_to(repeat('x', $PAYLOAD_BYTES), 'UTF8') \$\$"
    # The backlog's payloads: the sequence number, then padding.
    sql "CREATE FUNCTION seq_payload(g bigint) RETURNS bytea IMMUTABLE LANGUAGE sql
             AS \$\$ SELECT convert_to(lpad(g::text, 10, '0') || repeat('x', $PAYLOAD_BYTES - 10), 'UTF8') \$\$"

    # Drop every instance, create n fresh ones named i1 .. in, and put r of
    # them, spread evenly over the names, in recovery.  A commit every 1000
    # instances: each call holds a heavyweight lock on its instance's name
    # until the end of the transaction, and 10,000 of them in one
    # transaction run the lock table out of shared memory ("out of shared
    # memory": the lock table is sized for max_locks_per_transaction = 64
    # per backend slot, some 4,600 locks at max_connections = 50, plus what
    # spare shared memory there is).
    sql "CREATE PROCEDURE reset_instances(n int, r int) LANGUAGE plpgsql AS \$\$
         DECLARE
             names text[] := ARRAY(SELECT instance FROM rmsg.instances);
         BEGIN
             FOR k IN 1 .. cardinality(names) LOOP
                 PERFORM rmsg.drop_instance(names[k]);
                 IF k % 1000 = 0 THEN COMMIT; END IF;
             END LOOP;
             COMMIT;
             FOR k IN 1 .. n LOOP
                 PERFORM rmsg.create_instance('i' || k);
                 IF k % 1000 = 0 THEN COMMIT; END IF;
             END LOOP;
             COMMIT;
             FOR k IN 0 .. r - 1 LOOP
                 PERFORM rmsg.begin_recovery('i' || (1 + k * n / r));
                 IF k % 1000 = 999 THEN COMMIT; END IF;
             END LOOP;
         END \$\$"

    # Drain: up to p_limit messages of p_instance, p_max per receive, each
    # receive and each ack its own transaction, as a consumer that holds its
    # lease while it works would commit them.  Checks the order against
    # msg_id and against the payloads' sequence numbers, counts what is
    # off instead of stopping, and records the time per tenth (p_chunks) of
    # p_limit in drain_chunk and the totals in drain_result.  Gives up after
    # 50 empty receives in a row (none should come back empty while
    # messages are left).
    sql "CREATE TABLE drain_chunk (run text, chunk int, msgs bigint, secs float8)"
    sql "CREATE TABLE drain_result (run text PRIMARY KEY, msgs bigint, secs float8,
             id_inversions bigint, seq_inversions bigint, odd bigint, empty_receives bigint,
             ack_failures bigint, first_id bigint, last_id bigint, first_seq bigint, last_seq bigint,
             wal_bytes numeric)"
    sql "CREATE VIEW drain_rate AS
         SELECT run, chunk, ((msgs - coalesce(lag(msgs) OVER (PARTITION BY run ORDER BY chunk), 0))
                             / nullif(secs, 0))::numeric AS rate
           FROM drain_chunk"
    sql "CREATE PROCEDURE drain(p_run text, p_instance text, p_max int, p_limit bigint, p_chunks int)
         LANGUAGE plpgsql AS \$\$
         DECLARE
             r record;
             ids bigint[];
             got int;
             m int;
             n bigint := 0;
             inv_id bigint := 0;
             inv_seq bigint := 0;
             odd bigint := 0;
             empties bigint := 0;
             in_a_row int := 0;
             ack_fail bigint := 0;
             first_id bigint;
             first_seq bigint;
             last_id bigint := 0;
             last_seq bigint := 0;
             chunk_size bigint := greatest(p_limit / p_chunks, 1);
             chunk int := 1;
             t0 timestamptz;
             tc timestamptz;
             lsn0 pg_lsn;
         BEGIN
             lsn0 := pg_current_wal_insert_lsn();
             t0 := clock_timestamp();
             tc := t0;
             WHILE n < p_limit LOOP
                 m := least(p_max, p_limit - n);
                 ids := '{}';
                 FOR r IN SELECT x.msg_id, x.kind, x.deliveries,
                                 convert_from(substr(x.payload, 1, 10), 'UTF8')::bigint AS seq
                            FROM rmsg.receive(p_instance, m) x LOOP
                     ids := ids || r.msg_id;
                     IF r.msg_id <= last_id THEN inv_id := inv_id + 1; END IF;
                     IF r.seq <= last_seq THEN inv_seq := inv_seq + 1; END IF;
                     IF r.kind <> 'normal' OR r.deliveries <> 1 THEN odd := odd + 1; END IF;
                     first_id := coalesce(first_id, r.msg_id);
                     first_seq := coalesce(first_seq, r.seq);
                     last_id := r.msg_id;
                     last_seq := r.seq;
                 END LOOP;
                 COMMIT;
                 got := cardinality(ids);
                 IF got = 0 THEN
                     empties := empties + 1;
                     in_a_row := in_a_row + 1;
                     EXIT WHEN in_a_row >= 50;
                     CONTINUE;
                 END IF;
                 in_a_row := 0;
                 IF p_max = 1 THEN
                     IF NOT rmsg.ack(ids[1]) THEN ack_fail := ack_fail + 1; END IF;
                 ELSE
                     ack_fail := ack_fail + (got - rmsg.ack(ids));
                 END IF;
                 COMMIT;
                 n := n + got;
                 WHILE n >= chunk * chunk_size AND chunk <= p_chunks LOOP
                     INSERT INTO drain_chunk VALUES (p_run, chunk, n, extract(epoch FROM clock_timestamp() - tc));
                     tc := clock_timestamp();
                     chunk := chunk + 1;
                 END LOOP;
             END LOOP;
             INSERT INTO drain_result VALUES (p_run, n, extract(epoch FROM clock_timestamp() - t0),
                 inv_id, inv_seq, odd, empties, ack_fail, first_id, last_id, first_seq, last_seq,
                 pg_current_wal_insert_lsn() - lsn0);
             COMMIT;
         END \$\$"
}

write_scripts() {
    mkdir -p "$WORK/scripts"
    cat >"$WORK/scripts/deliver.sql" <<SQL
\\set n random(1, $INSTANCES)
SELECT * FROM rmsg.deliver('i' || :n::int, bench_payload());
SQL
    chmod -R a+rX "$WORK/scripts"
}

# pgbench's backends report their WAL statistics as they exit, which may be
# a moment after pgbench itself is done.
wait_for_clients_gone() {
    local i
    for ((i = 0; i < 100; i++)); do
        [[ $(sql "SELECT count(*) FROM pg_stat_activity
                   WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()") == 0 ]] && return 0
        sleep 0.05
    done
    printf 'WARNING: client backends still there 5 s after pgbench ended\n'
}

wal_counters() { sql "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn, wal_fpi FROM pg_stat_wal"; }

# run_case CASE [warmup]: one pgbench run from fresh instances; appends
# "1 delivers/s 2 WAL bytes/deliver 3 FPI/1000 delivers 4 deferred % 5 messages
# 6 transactions" to results/CASE.
run_case() {
    local name=$1 warmup=${2:-} opts before after out tps tx counts
    opts=$(case_options "$name")
    sql "CALL reset_instances($INSTANCES, $(case_recovering "$name"))"
    sql "VACUUM ANALYZE"
    sql "CHECKPOINT"
    sql "SELECT pg_stat_force_next_flush()" >/dev/null
    before=$(wal_counters)
    out=$(run_as_pg env PGOPTIONS="$opts" pgbench -n -M prepared -c "$CLIENTS" -j 2 -T "$DURATION" \
        -f "$WORK/scripts/deliver.sql" 2>&1) || { echo "$out"; die "pgbench failed for $name"; }
    wait_for_clients_gone
    after=$(wal_counters)
    tps=$(grep -oP 'tps = \K[0-9.]+' <<<"$out" | head -1)
    tx=$(grep -oP 'number of transactions actually processed: \K[0-9]+' <<<"$out")
    # deferred, all messages
    counts=$(sql "SELECT coalesce(sum(deferred), 0), coalesce(sum(ready) + sum(deferred) + sum(in_flight), 0)
                    FROM rmsg.instances")
    if [[ -n $warmup ]]; then
        printf '  %-18s %8.0f delivers/s (warm-up, not counted)\n' "$name" "$tps"
        return
    fi
    awk -v b="$before" -v a="$after" -v tps="$tps" -v tx="$tx" -v c="$counts" 'BEGIN {
        split(b, x, "|"); split(a, y, "|"); split(c, k, "|");
        printf "%s %.1f %.2f %.3f %d %d\n", tps, (y[1] - x[1]) / tx, 1000 * (y[2] - x[2]) / tx,
            (k[2] > 0 ? 100 * k[1] / k[2] : 0), k[2], tx }' >>"$WORK/results/$name"
    tail -n 1 "$WORK/results/$name" | awk -v n="$name" '{
        printf "  %-18s %8.0f delivers/s %7.0f WAL B/deliver %6.2f FPI/1000 delivers %6.2f%% deferred\n", n, $1, $2, $3, $4 }'
    # Every transaction delivered one message, and all are still there.
    [[ $(awk '{ print $5 == $6 }' <<<"$(tail -n 1 "$WORK/results/$name")") == 1 ]] ||
        printf 'WARNING: %s: %s messages in rmsg.instances after %s deliver transactions\n' \
            "$name" "$(awk '{ print $5 }' <<<"$(tail -n 1 "$WORK/results/$name")")" "$tx"
}

# One backlog round: fill A and B, then release and drain each.  Appends to
# results/backlog: "1 round 2 fill delivers/s 3 fill WAL B/deliver
# 4 deferred after fill (A + B) 5 complete A ms 6 released A 7 complete B ms
# 8 released B".
run_backlog() {
    local round=$1 a=bl_a_r$1 b=bl_b_r$1 inst per from to i t0 t1 fill_secs lsn0 lsn1 deferred
    local ca ra cb rb
    sql "SELECT rmsg.create_instance('$a'), rmsg.create_instance('$b')" >/dev/null
    [[ $round != 1 ]] || sql "SELECT rmsg.create_instance('bench_warm')" >/dev/null
    sql "SELECT rmsg.begin_recovery('$a'), rmsg.begin_recovery('$b')" >/dev/null
    sql "VACUUM ANALYZE"
    sql "CHECKPOINT"
    per=$(((BACKLOG + FILL_TX - 1) / FILL_TX))
    lsn0=$(sql "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
    t0=$(date +%s.%N)
    for inst in "$a" "$b"; do
        for ((i = 0; i < FILL_TX; i++)); do
            from=$((i * per + 1))
            to=$(((i + 1) * per < BACKLOG ? (i + 1) * per : BACKLOG))
            ((from <= to)) || continue
            sql "SELECT count(*) FROM generate_series($from, $to) g,
                        LATERAL rmsg.deliver('$inst', seq_payload(g)) d
                  WHERE d.disposition = 'deferred'" >/dev/null
        done
    done
    t1=$(date +%s.%N)
    lsn1=$(sql "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
    deferred=$(sql "SELECT coalesce(sum(deferred), 0) FROM rmsg.instances WHERE instance IN ('$a', '$b')")
    fill_secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
    printf '  fill: %d deliveries in %d transactions: %.0f delivers/s, %.0f WAL B/deliver, %s deferred\n' \
        $((2 * BACKLOG)) $((2 * FILL_TX)) "$(awk -v s="$fill_secs" -v n=$((2 * BACKLOG)) 'BEGIN { print n / s }')" \
        "$(awk -v a="$lsn0" -v b="$lsn1" -v n=$((2 * BACKLOG)) 'BEGIN { print (b - a) / n }')" "$deferred"
    [[ $deferred == $((2 * BACKLOG)) ]] ||
        printf 'WARNING: rmsg.instances shows %s deferred messages, not %d\n' "$deferred" $((2 * BACKLOG))
    sql "VACUUM ANALYZE"
    sql "CHECKPOINT"

    read -r ca ra <<<"$(complete "$a")"
    printf '  complete_recovery(%s): %.1f ms, %s released\n' "$a" "$ca" "$ra"
    drain "$a" "$a" "$BATCH" "$BACKLOG" "receive max=>$BATCH + ack(array)"
    check_empty "$a"

    read -r cb rb <<<"$(complete "$b")"
    printf '  complete_recovery(%s): %.1f ms, %s released\n' "$b" "$cb" "$rb"
    drain "$b.1" "$b" 1 "$SINGLES" "receive max=>1 + ack(id)"
    if ((SINGLES < BACKLOG)); then
        drain "$b.rest" "$b" "$BATCH" $((BACKLOG - SINGLES)) "the rest, max=>$BATCH"
    fi
    check_empty "$b"
    printf '%s %s %s %s %s %s %s %s\n' "$round" \
        "$(awk -v s="$fill_secs" -v n=$((2 * BACKLOG)) 'BEGIN { print n / s }')" \
        "$(awk -v a="$lsn0" -v b="$lsn1" -v n=$((2 * BACKLOG)) 'BEGIN { print (b - a) / n }')" \
        "$deferred" "$ca" "$ra" "$cb" "$rb" >>"$WORK/results/backlog"
}

# complete INSTANCE: times rmsg.complete_recovery, its commit included;
# prints "ms released".
complete() {
    run_as_pg psql -X -q -v ON_ERROR_STOP=1 -At -F ' ' <<SQL
SELECT extract(epoch FROM clock_timestamp()) AS t0 \\gset
SELECT rmsg.complete_recovery('$1') AS released \\gset
SELECT round((1000 * (extract(epoch FROM clock_timestamp()) - :t0))::numeric, 2), :released;
SQL
}

# drain RUN INSTANCE MAX LIMIT LABEL: one CALL drain(...) in a session of
# its own, between two readings of pg_stat_wal.wal_sync (every WAL fsync of
# the cluster, the walwriter's included) and of the updates of
# rmsg.instance_message (leases), HOT or not; prints the figures.  Appends
# "1 run 2 wal_sync/msg 3 HOT share of the updates %" to results/drain.
drain() {
    local run=$1 inst=$2 max=$3 limit=$4 label=$5 before after
    before=$(drain_counters)
    run_as_pg psql -X -q -v ON_ERROR_STOP=1 -c "CALL drain('$run', '$inst', $max, $limit, $CHUNKS)"
    wait_for_clients_gone
    after=$(drain_counters)
    awk -v r="$run" -v b="$before" -v a="$after" -v n="$limit" 'BEGIN {
        split(b, x, "|"); split(a, y, "|");
        printf "%s %.3f %.1f\n", r, (y[1] - x[1]) / n, (y[2] > x[2] ? 100 * (y[3] - x[3]) / (y[2] - x[2]) : 0) }' \
        >>"$WORK/results/drain"
    sql "SELECT msgs, secs, id_inversions, seq_inversions, odd, empty_receives, ack_failures,
                first_seq, last_seq, wal_bytes FROM drain_result WHERE run = '$run'" |
        awk -F'|' -v l="$label" -v d="$(tail -n 1 "$WORK/results/drain")" '{
            split(d, f, " ");
            printf "    %-30s %7d msgs in %7.2f s: %7.0f msgs/s, %5.0f WAL B/msg, %.3f wal_sync/msg, %.0f%% of leases HOT\n",
                l, $1, $2, ($2 > 0 ? $1 / $2 : 0), ($1 > 0 ? $10 / $1 : 0), f[2], f[3]
            printf "    %-30s seq %d..%d; inversions msg_id %d, seq %d; redelivered/odd %d; empty receives %d; failed acks %d\n",
                "", $8, $9, $3, $4, $5, $6, $7 }'
    printf '    %-30s msgs/s per tenth: %s\n' "" \
        "$(sql "SELECT string_agg(round(rate)::text, ' ' ORDER BY chunk) FROM drain_rate WHERE run = '$run'")"
}

drain_counters() {
    sql "SELECT w.wal_sync, t.n_tup_upd, t.n_tup_hot_upd FROM pg_stat_wal w, pg_stat_user_tables t
          WHERE t.relid = 'rmsg.instance_message'::regclass"
}

# check_empty INSTANCE: after its drain, nothing is left of the instance's
# line and nothing is receivable.  Times receives on the empty line in one
# session, after one on another instance has prepared the session's plans:
# two before any VACUUM (they may walk past the index entries of the
# messages acked) and one after (the second after it); a receive on an empty line should cost
# next to nothing whatever else the table holds, so the number of the other
# instances' messages is printed beside.  Appends "1 instance 2 ms 3 ms
# 4 ms after VACUUM 5 other messages" to results/empty.
check_empty() {
    local left others got r1 r2 r3 timed
    left=$(sql "SELECT ready || ' ready, ' || deferred || ' deferred, ' || in_flight || ' in flight'
                  FROM rmsg.instances WHERE instance = '$1'")
    others=$(sql "SELECT coalesce(sum(ready + deferred + in_flight), 0) FROM rmsg.instances WHERE instance <> '$1'")
    timed="SELECT count(*), round((1000 * extract(epoch FROM clock_timestamp() - statement_timestamp()))::numeric, 2)
             FROM rmsg.receive('$1', 1000);"
    # The VACUUM makes the session plan its statements again: one receive
    # after it, untimed, pays for that.
    { read -r got r1; read -r _ r2; read -r _ r3; } < <(run_as_pg psql -X -q -v ON_ERROR_STOP=1 -At -F ' ' <<SQL
\\o /dev/null
SELECT count(*) FROM rmsg.receive('bench_warm', 1000);
\\o
$timed
$timed
VACUUM rmsg.instance_message;
\\o /dev/null
$timed
\\o
$timed
SQL
)
    printf '    %-30s left afterwards: %s; receive(max=>1000) got %s\n' "" "$left" "$got"
    printf '    %-30s in %s ms, again %s ms, after VACUUM %s ms (other instances'"'"' messages: %s)\n' "" \
        "$r1" "$r2" "$r3" "$others"
    printf '%s %s %s %s %s\n' "$1" "$r1" "$r2" "$r3" "$others" >>"$WORK/results/empty"
    [[ $left == "0 ready, 0 deferred, 0 in flight" && $got == 0 ]] ||
        printf 'WARNING: instance %s is not empty after its drain\n' "$1"
}



# drain_median PATTERN COLUMN: median over the rounds of a drain_result
# figure ("rate" for msgs/s).
drain_median() {
    local expr=$2
    [[ $expr == rate ]] && expr="msgs / nullif(secs, 0)"
    sql "SELECT $expr FROM drain_result WHERE run LIKE '$1'" | median
}

# empty_stat a|b COLUMN: median of a column of results/empty over the
# rounds, for instance A or B.
empty_stat() { awk -v re="^bl_$1_r" -v c="$2" '$1 ~ re { print $c }' "$WORK/results/empty" | median; }

# drain_stat REGEX COLUMN: median of a column of results/drain over the
# runs matching REGEX.
drain_stat() { awk -v re="$1" -v c="$2" '$1 ~ re { print $c }' "$WORK/results/drain" | median; }

drain_sum() { sql "SELECT coalesce(sum($2), 0) FROM drain_result WHERE run LIKE '$1'"; }

report() {
    local name target_mark r_one r_sync r_async r_tenths
    printf '\n1. rmsg.deliver, %d instances, %d clients, %d-byte payloads, median of %d round(s) of %d s\n' \
        "$INSTANCES" "$CLIENTS" "$PAYLOAD_BYTES" "$ROUNDS" "$DURATION"
    printf '%-44s %12s %14s %12s %10s\n' case delivers/s "WAL B/deliver" "FPI/1000" deferred
    for name in "${CASES[@]}"; do
        printf '%-44s %12.0f %14.0f %12.2f %9.2f%%\n' "${LABEL[$name]}" \
            "$(column_median "$name" 1)" "$(column_median "$name" 2)" "$(column_median "$name" 3)" \
            "$(column_median "$name" 4)"
    done
    printf '(deferred: share of the messages rmsg.instances counts as deferred after the run; expected %.2f%%)\n' \
        "$(awk -v r="$RECOVERING" -v n="$INSTANCES" 'BEGIN { print 100 * r / n }')"

    r_one=$(ratio_of "$(column_median one 1)" "$(column_median zero 1)")
    target_mark=$(awk -v r="$r_one" 'BEGIN { print (r >= 0.9) ? "target met" : "target MISSED" }')
    printf '\nratios of the medians, delivers/s (round by round in brackets: median, then each round):\n'
    printf '  %d%% in recovery / none:            %sx [>= 0.9x: %s]   %s\n' \
        "$((100 * RECOVERING / INSTANCES))" "$r_one" "$target_mark" "$(paired one zero)"
    if [[ $HAVE_CACHE == 1 ]]; then
        r_sync=$(ratio_of "$(column_median one 1)" "$(column_median one_nocache 1)")
        r_async=$(ratio_of "$(column_median one_async 1)" "$(column_median one_async_nocache 1)")
        printf '  cache on / off, sync commit on:   %sx   %s\n' "$r_sync" "$(paired one one_nocache)"
        printf '  cache on / off, sync commit off:  %sx   %s\n' "$r_async" "$(paired one_async one_async_nocache)"
    else
        printf '  cache on / off: skipped, the server has no setting rmsg.instance_cache\n'
    fi
    printf '\nper round, delivers/s:\n'
    for name in "${CASES[@]}"; do
        printf '  %-18s %s\n' "$name" "$(awk '{ printf "%.0f ", $1 }' "$WORK/results/$name")"
    done

    printf '\n2. backlog release, %d deferred normal messages per instance, median of %d round(s)\n' \
        "$BACKLOG" "$BACKLOG_ROUNDS"
    printf '  fill (%d per transaction):      %8.0f delivers/s  %6.0f WAL B/deliver\n' \
        "$(((BACKLOG + FILL_TX - 1) / FILL_TX))" "$(column_median backlog 2)" "$(column_median backlog 3)"
    printf '  complete_recovery:             %8.1f ms (A), %.1f ms (B); released %s\n' \
        "$(column_median backlog 5)" "$(column_median backlog 7)" \
        "$(awk '{ printf "%s%s+%s", (NR > 1 ? ", " : ""), $6, $8 }' "$WORK/results/backlog")"
    printf '  %-32s %9s %9s %9s %9s %9s\n' "drain (after complete_recovery)" msgs/s "WAL B/msg" "syncs/msg" "HOT %" "seconds"
    printf '  %-32s %9.0f %9.0f %9.3f %9.0f %9.2f  for %d\n' "(a) receive max=>$BATCH + ack(array)" \
        "$(drain_median 'bl_a_r%' rate)" "$(drain_median 'bl_a_r%' 'wal_bytes / msgs')" \
        "$(drain_stat '^bl_a_r[0-9]+$' 2)" "$(drain_stat '^bl_a_r[0-9]+$' 3)" \
        "$(drain_median 'bl_a_r%' secs)" "$BACKLOG"
    printf '  %-32s %9.0f %9.0f %9.3f %9.0f %9.2f  for %d\n' "(b) receive max=>1 + ack(id)" \
        "$(drain_median 'bl_b_r%.1' rate)" "$(drain_median 'bl_b_r%.1' 'wal_bytes / msgs')" \
        "$(drain_stat '^bl_b_r[0-9]+[.]1$' 2)" "$(drain_stat '^bl_b_r[0-9]+[.]1$' 3)" \
        "$(drain_median 'bl_b_r%.1' secs)" "$SINGLES"
    printf '  (syncs: pg_stat_wal.wal_sync, the walwriter'"'"'s included; HOT: share of the lease updates that were HOT)\n'
    printf '  received (all rounds):         %d of %d; msg_id inversions %d, sequence inversions %d,\n' \
        "$(drain_sum 'bl_%' msgs)" $((2 * BACKLOG * BACKLOG_ROUNDS)) \
        "$(drain_sum 'bl_%' id_inversions)" "$(drain_sum 'bl_%' seq_inversions)"
    printf '                                 redelivered/odd %d, empty receives %d, failed acks %d\n' \
        "$(drain_sum 'bl_%' odd)" "$(drain_sum 'bl_%' empty_receives)" "$(drain_sum 'bl_%' ack_failures)"
    # B's two drains join up: the rest starts after the singles end.
    if ((SINGLES < BACKLOG)); then
        printf '  B singles then rest in order:  %s\n' "$(sql "SELECT coalesce(bool_and(r.first_id > s.last_id AND r.first_seq = s.last_seq + 1), false)
              FROM drain_result s JOIN drain_result r ON r.run = replace(s.run, '.1', '.rest')
             WHERE s.run LIKE 'bl_b_r%.1'")"
    fi
    # Slow-down as the backlog shrinks: the rate of the last tenth against
    # the first, in A's drains; and what a receive costs on the emptied
    # line, before and after a VACUUM.
    r_tenths=$(sql "SELECT round(l.rate / f.rate, 2) FROM drain_rate f JOIN drain_rate l ON l.run = f.run
                     WHERE f.chunk = 1 AND l.chunk = $CHUNKS AND f.run LIKE 'bl_a_r%'" | median)
    printf '  (a) last tenth / first tenth:  %sx msgs/s (about 1x when the rate does not depend on what was acked before)\n' \
        "$r_tenths"
    printf '  receive on a drained line:     A %.2f ms, again %.2f ms, after VACUUM %.2f ms (%s messages of B in the table)\n' \
        "$(empty_stat a 2)" "$(empty_stat a 3)" "$(empty_stat a 4)" "$(empty_stat a 5)"
    printf '                                 B %.2f ms, again %.2f ms, after VACUUM %.2f ms (%s other messages)\n' \
        "$(empty_stat b 2)" "$(empty_stat b 3)" "$(empty_stat b 4)" "$(empty_stat b 5)"

    printf '\n3. summary (medians)\n'
    printf '  %-52s %s\n' "deliver, none in recovery" "$(column_median zero 1 | xargs printf '%.0f/s')"
    printf '  %-52s %s\n' "deliver, $RECOVERING of $INSTANCES in recovery" \
        "$(column_median one 1 | xargs printf '%.0f/s'), ${r_one}x of none [>= 0.9x: $target_mark]"
    printf '  %-52s %s\n' "deferred in that case" "$(column_median one 4 | xargs printf '%.2f%%')"
    printf '  %-52s %s\n' "WAL per deliver, none / $RECOVERING in recovery" \
        "$(column_median zero 2 | xargs printf '%.0f') / $(column_median one 2 | xargs printf '%.0f') bytes"
    if [[ $HAVE_CACHE == 1 ]]; then
        printf '  %-52s %s\n' "instance cache on / off, sync commit on" "${r_sync}x"
        printf '  %-52s %s\n' "instance cache on / off, sync commit off" "${r_async}x"
    else
        printf '  %-52s %s\n' "instance cache on / off" "skipped (no rmsg.instance_cache)"
    fi
    printf '  %-52s %s\n' "complete_recovery, $BACKLOG deferred" "$(column_median backlog 5 | xargs printf '%.1f ms')"
    printf '  %-52s %s\n' "drain, receive max=>$BATCH + ack(array)" "$(drain_median 'bl_a_r%' rate | xargs printf '%.0f msgs/s')"
    printf '  %-52s %s\n' "drain, receive max=>1 + ack(id)" "$(drain_median 'bl_b_r%.1' rate | xargs printf '%.0f msgs/s')"
    printf '  %-52s %s\n' "drain rate, last tenth / first tenth of (a)" "${r_tenths}x"
    printf '  %-52s %s\n' "receive on empty A, B's $BACKLOG in the table" \
        "$(empty_stat a 3 | xargs printf '%.2f') ms, after VACUUM $(empty_stat a 4 | xargs printf '%.2f') ms"
    printf '  %-52s %s\n' "receive on empty B, table empty" \
        "$(empty_stat b 3 | xargs printf '%.2f') ms, after VACUUM $(empty_stat b 4 | xargs printf '%.2f') ms"
    printf '  %-52s %s\n' "order inversions / messages received" \
        "$(($(drain_sum 'bl_%' id_inversions) + $(drain_sum 'bl_%' seq_inversions))) / $(drain_sum 'bl_%' msgs) of $((2 * BACKLOG * BACKLOG_ROUNDS))"
}

main() {
    local round
    bench_setup instances
    start_cluster
    setup_schema
    write_scripts
    log "$(sql "SELECT version()" | cut -d, -f1); $(nproc) CPUs; synchronous_commit $(sql "SHOW synchronous_commit"), wal_sync_method $(sql "SHOW wal_sync_method"), full_page_writes $(sql "SHOW full_page_writes"), rmsg.instance_cache $(if [[ $HAVE_CACHE == 1 ]]; then sql "SHOW rmsg.instance_cache"; else echo absent; fi)"
    log "1. deliver: $ROUNDS rounds of ${DURATION}s per case, cases ${CASES[*]} interleaved; $INSTANCES instances, $RECOVERING in recovery in the 'one' cases; $CLIENTS clients"
    run_case "${CASES[0]}" warmup
    run_rounds "$ROUNDS" "${CASES[@]}"
    sql "CALL reset_instances(0, 0)"
    sql "VACUUM"
    log "2. backlog: $BACKLOG_ROUNDS round(s), $BACKLOG deferred messages per instance, batches of $BATCH, $SINGLES one at a time"
    for round in $(seq 1 "$BACKLOG_ROUNDS"); do
        log "backlog round $round"
        run_backlog "$round"
    done
    report
}

main "$@"
