#!/usr/bin/env bash
#
# An instance's line drained beside a long transaction, side by side in one
# run with the same drain without one.
#
#   BUILD=0 test/bench/instance_held_xmin.sh      # 30,000 messages a drain: about 1 min
#   LINE=6000 CHUNKS=3 BUILD=0 test/bench/instance_held_xmin.sh   # a quick look
#
# Two instances, free and held, each sent LINE (default 30,000) messages of
# 100 bytes in one transaction.  Each is drained by pgbench, one client,
# prepared statements, synchronous_commit = on, one message per pgbench
# transaction: SELECT ... FROM rmsg.receive(instance) then rmsg.ack(msg_id),
# each in autocommit, in CHUNKS (default 6) runs of LINE / CHUNKS
# transactions.  free is drained first; then a REPEATABLE READ transaction
# takes an xid and stays open (the horizon VACUUM may not pass, as a report
# or an export would hold it) while held is drained.  autovacuum is off in
# both, so the only difference is the horizon: free's acked messages leave
# index entries too, but index scans mark those dead and skip them, which
# they may not do while the horizon is held.
#
# Printed per chunk: messages per second for each, their ratio, and the
# index entries a message cost (idx_tup_read of instance_message_line_idx,
# from the statistics pgbench's sessions send as they end).  A receive
# starts where its line's hint says its messages begin (instance/
# line_hint.c); without that, the held drain slowed with every message
# acked (receive + ack fell from 687 to 62 a second over 30,000 messages,
# 4,800 index entries a message in TAP 032).  Target (of 1.1, as for
# queues): the held drain keeps at least 0.8x of the free one's rate.
#
# The server is a scratch cluster of its own, stopped at exit.  The machine
# may be small and noisy; the index entries per message barely depend on it.

set -euo pipefail

# shellcheck source=test/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

LINE=${LINE:-30000}
CHUNKS=${CHUNKS:-6}
BUILD=${BUILD:-1}
for var in LINE CHUNKS; do
    [[ ${!var} =~ ^[1-9][0-9]*$ ]] || die "$var must be a positive integer, not '${!var}'"
done
((LINE % CHUNKS == 0)) || die "LINE ($LINE) must be a multiple of CHUNKS ($CHUNKS)"

sql() { run_as_pg psql -X -q -v ON_ERROR_STOP=1 -At -c "$1"; }

line_reads() {
    sql "SELECT pg_stat_force_next_flush();" >/dev/null
    sql "SELECT idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'instance_message_line_idx'"
}

# drain INSTANCE: CHUNKS pgbench runs; writes "rate entries_per_msg" per
# chunk to results/INSTANCE.
drain() {
    local instance=$1 chunk out tps before after
    sed "s/INSTANCE/$instance/" >"$WORK/scripts/$instance.sql" <<'SQL'
SELECT count(*) AS n, coalesce(max(msg_id), 0) AS id, coalesce(max(receipt), 0) AS receipt FROM rmsg.receive('INSTANCE') \gset
\if :n > 0
SELECT rmsg.ack(:id::bigint, :receipt::bigint);
\endif
SQL
    give_to_pg "$WORK/scripts/$instance.sql"
    : >"$WORK/results/$instance"
    for chunk in $(seq 1 "$CHUNKS"); do
        before=$(line_reads)
        out=$(run_as_pg pgbench -n -M prepared -c 1 -t $((LINE / CHUNKS)) \
            -f "$WORK/scripts/$instance.sql" 2>&1) || { echo "$out"; die "pgbench failed"; }
        tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out")
        sleep 0.5   # pgbench's session sends its statistics as it ends
        after=$(line_reads)
        awk -v t="$tps" -v d=$((after - before)) -v n=$((LINE / CHUNKS)) \
            'BEGIN { printf "%.0f %.1f\n", t, d / n }' >>"$WORK/results/$instance"
    done
    [[ $(sql "SELECT count(*) FROM rmsg.instance_message m JOIN rmsg.instance i USING (instance_id)
               WHERE i.name = '$instance'") == 0 ]] || die "$instance was not drained"
}

main() {
    local xid chunk
    bench_setup instance_held_xmin
    start_bench_cluster "synchronous_commit = on" "autovacuum = off" "shared_buffers = 256MB" \
        "max_wal_size = 4GB"
    sql "CREATE EXTENSION recoverable_msg"
    for instance in free held; do
        sql "SELECT rmsg.create_instance('$instance')" >/dev/null
        sql "SELECT count(*) FROM generate_series(1, $LINE) i,
               LATERAL rmsg.deliver('$instance', convert_to(lpad(i::text, 100, '0'), 'UTF8'))" >/dev/null
    done
    sql "VACUUM ANALYZE"
    log "$(sql "SELECT version()" | cut -d, -f1); $(nproc) CPUs; $LINE messages per instance, $CHUNKS chunks"

    log "free: no transaction holds the horizon"
    drain free

    log "held: a REPEATABLE READ transaction holds an xid throughout"
    coproc HOLDER { run_as_pg psql -X -q -At -v ON_ERROR_STOP=1 -d "application_name=holder"; }
    printf '%s\n' "BEGIN ISOLATION LEVEL REPEATABLE READ;" "SELECT txid_current();" >&"${HOLDER[1]}"
    read -r -t 30 xid <&"${HOLDER[0]}" || die "the holding session did not answer"
    drain held
    [[ -n $(sql "SELECT backend_xid FROM pg_stat_activity WHERE application_name = 'holder'
                  AND backend_xid = '$xid'") ]] || die "the holder's transaction did not stay open"
    printf '%s\n' "COMMIT;" '\q' >&"${HOLDER[1]}"

    printf '\nreceive + ack, one message a transaction, %d messages per instance (xid %s held for "held")\n' "$LINE" "$xid"
    printf '%-8s %12s %12s %10s %14s %14s\n' chunk "free msg/s" "held msg/s" "held/free" "free idx/msg" "held idx/msg"
    for chunk in $(seq 1 "$CHUNKS"); do
        paste -d' ' <(sed -n "${chunk}p" "$WORK/results/free") <(sed -n "${chunk}p" "$WORK/results/held") |
            awk -v c="$chunk" '{ printf "%-8s %12s %12s %9.2fx %14s %14s\n", c, $1, $3, ($1 > 0 ? $3 / $1 : 0), $2, $4 }'
    done
    paste -d' ' "$WORK/results/free" "$WORK/results/held" |
        awk '{ f += $1; h += $3 } END { printf "\nheld / free, mean of the chunks: %.2fx  [>= 0.8x: %s]\n", h / f, (h / f >= 0.8 ? "met" : "missed") }'
    paste -d' ' "$WORK/results/free" "$WORK/results/held" | tail -1 |
        awk '{ printf "held / free, last chunk:          %.2fx\n", ($1 > 0 ? $3 / $1 : 0) }'
}

main "$@"
