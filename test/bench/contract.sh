#!/usr/bin/env bash
#
# The committed interaction contract, side by side in one run: how often a
# caller forces its WAL, and how many calls per second it makes, when it
# logs its callees' replies lazily and forces only before calling a
# component again whose last reply is not yet flushed (the contract), against
# the same calls with every log write forced, and against forcing the log
# before each send (the usual way, which the contract improves on).
#
#   test/bench/contract.sh                       # 7 rounds of 1000 calls per case
#   ROUNDS=1 CALLS=200 test/bench/contract.sh    # a quick look
#   BUILD=0 test/bench/contract.sh               # use the build already installed
#
# Two scratch clusters, a caller and a callee, each with the library
# preloaded and synchronous_commit = on.  The caller calls the callee over a
# dblink connection opened once per measurement; N = 1, 2, 4 and 8 callees
# (callee names s0 .. sN-1, all served by the one callee cluster) are called
# in turn, s0, s1, ..., sN-1, s0, ...  One call, in a PL/pgSQL procedure on
# the caller, each numbered step its own transaction:
#   1. rmsg.prepare_call(caller, callee, request); COMMIT
#   2. reply := the callee's handle() over dblink (a prepared statement on
#      the callee, prepared once per connection): rmsg.accept_call, a row
#      of work and rmsg.reply in one transaction, flushed there;
#      rmsg.record_reply(caller, call_id, reply); COMMIT
# Modes:
#   contract  as above, the extension's defaults: the caller's log writes
#             commit lazily and prepare_call forces when the callee is about
#             to release a reply not yet flushed.
#   send      the usual way, force before each send: as above plus
#             rmsg.force_log(caller) at the start of step 1, before
#             prepare_call.  That one force makes everything logged before
#             the send stable, the last reply included, so prepare_call never
#             needs to force as well; forcing after prepare_call instead
#             would add the contract's own force at N = 1 (the reply of the
#             previous call to the same callee is unflushed by then) and make
#             forcing before each send look worse than it is.
#   every     every log write forced: rmsg.lazy_caller_log = off with
#             synchronous_commit = on, so both commits of a call flush.
#
# What is measured, on the caller, over CALLS calls after WARMUP calls of
# the same caller (a caller name of its own per measurement, so each starts
# afresh): the deltas of pg_stat_wal.wal_sync (every WAL fsync of the
# cluster: the backend's, and the walwriter's background flushes of lazy
# commits, at most one per wal_writer_delay), of rmsg.log_stats.forces (the
# flushes the contract made: prepare_call's and force_log's) and
# forces_avoided, and of the forces the called-component table charges to
# prepare_call; the wall time, as calls per second.  For context, the callee
# cluster's pg_stat_wal.wal_sync per call (its replies are flushed: about
# one per call in every mode).  Force counts barely depend on the machine;
# wall time does, so the table quotes medians of the rounds.  wal_sync minus
# rmsg forces ("other syncs") is the walwriter's share, bounded in the
# table, plus any caller commit that flushed although the mode asked for a
# lazy one (the extension commits a log write under synchronous_commit when
# its transaction wrote anything else).
#
# Targets (issue): with N callees the caller forces at most 1/N + 0.05
# times per call (checked on the worst round, for rmsg.log_stats.forces and
# for pg_stat_wal.wal_sync); at N = 4 the contract makes at least 1.5x the
# calls per second of forcing every write.  A benchmark prints figures; it
# passes or fails nothing, it marks whether each target was met.
#
# Each measurement runs after a CHECKPOINT and a VACUUM of both clusters;
# checkpoint_timeout = 1h and max_wal_size = 8GB keep checkpoints out of the
# measurements (the script says so if one fell inside anyway), autovacuum is
# off so that nothing else writes WAL meanwhile.  The modes and N run
# interleaved, round after round.  The servers run as postgres when started
# as root and are stopped at exit.

# Functions here take their own arguments, not the script's:
# shellcheck disable=SC2119

set -euo pipefail

# shellcheck source=test/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

ROUNDS=${ROUNDS:-7}
CALLS=${CALLS:-1000}
BUILD=${BUILD:-1}
WARMUP=16   # a multiple of every N: the measured calls start at s0
NS=(1 2 4 8)
MODES=(contract send every)

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"
[[ $CALLS =~ ^[1-9][0-9]*$ ]] || die "CALLS must be a positive integer, not '$CALLS'"

declare -A LABEL=([contract]="contract (lazy, force on re-call)"
                  [send]="force before each send"
                  [every]="every log write forced")

# Set by start_named_cluster.
PGHOST_caller='' PGPORT_caller='' PGHOST_callee='' PGPORT_callee=''
WALWRITER_DELAY_MS=200   # read from the server once it runs

start_clusters() {
    local conf=("synchronous_commit = on" "shared_buffers = 128MB" "max_wal_size = 8GB"
                "checkpoint_timeout = 1h" "autovacuum = off" "max_connections = 20")
    start_named_cluster caller "${conf[@]}"
    start_named_cluster callee "${conf[@]}"
}

# on CLUSTER CMD...: runs CMD as postgres against the caller or callee cluster.
on() {
    local host port
    case $1 in
        caller) host=$PGHOST_caller port=$PGPORT_caller ;;
        callee) host=$PGHOST_callee port=$PGPORT_callee ;;
        *) die "no cluster $1" ;;
    esac
    shift
    PGHOST=$host PGPORT=$port PGDATABASE=postgres run_as_pg "$@"
}

sql() { on "$1" psql -X -q -v ON_ERROR_STOP=1 -At -c "$2"; }

setup_callee() {
    sql callee "CREATE EXTENSION recoverable_msg"
    # The call's work: one row per call, in the reply's transaction.
    sql callee "CREATE TABLE work (callee text, caller text, call_id bigint, request bytea NOT NULL,
                    done_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                    PRIMARY KEY (caller, callee, call_id))"
    # One statement, so one transaction: accept_call, the work, the reply
    # (or the saved reply of a duplicate, without the work).
    sql callee "CREATE FUNCTION handle(p_callee text, p_caller text, p_call_id bigint, p_request bytea)
                RETURNS bytea LANGUAGE plpgsql AS \$\$
                DECLARE
                    a record;
                    rep bytea;
                BEGIN
                    SELECT * INTO a FROM rmsg.accept_call(p_callee, p_caller, p_call_id, p_request);
                    IF a.status = 'duplicate' THEN
                        RETURN a.reply;
                    END IF;
                    INSERT INTO work (callee, caller, call_id, request)
                    VALUES (p_callee, p_caller, p_call_id, p_request);
                    rep := sha256(p_request);
                    PERFORM rmsg.reply(p_callee, p_caller, p_call_id, rep);
                    RETURN rep;
                END \$\$"
}

setup_caller() {
    local q
    sql caller "CREATE EXTENSION recoverable_msg"
    sql caller "CREATE EXTENSION dblink"
    for q in forces forces_avoided; do
        sql caller "SELECT $q FROM rmsg.log_stats" >/dev/null ||
            die "no rmsg.log_stats.$q: is a build with the committed interaction contract installed?"
    done
    # Calls first .. first + ncalls - 1 of a caller, to callees s0 .. sN-1
    # in turn, over the open dblink connection 'callee'.  Must be CALLed
    # outside a transaction block (it commits); rmsg.lazy_caller_log is the
    # session's.
    sql caller "CREATE PROCEDURE run_calls(p_caller text, ncallees int, first int, ncalls int, mode text)
                LANGUAGE plpgsql AS \$\$
                DECLARE
                    v_callee text;
                    req bytea;
                    cid bigint;
                    logged bytea;
                    rep bytea;
                BEGIN
                    IF mode NOT IN ('contract', 'send', 'every') THEN
                        RAISE EXCEPTION 'unknown mode %', mode;
                    END IF;
                    FOR i IN first .. first + ncalls - 1 LOOP
                        v_callee := 's' || (i % ncallees);
                        req := convert_to(format('call %s to %s', i, v_callee), 'UTF8');
                        IF mode = 'send' THEN
                            -- one force: everything logged so far
                            PERFORM rmsg.force_log(p_caller);
                        END IF;
                        SELECT p.call_id, p.logged_reply INTO cid, logged
                          FROM rmsg.prepare_call(p_caller, v_callee, req) p;
                        COMMIT;
                        IF logged IS NOT NULL THEN
                            RAISE EXCEPTION 'call % of % was replayed', cid, p_caller;
                        END IF;
                        SELECT t.r INTO rep
                          FROM dblink('callee', format('EXECUTE handle_call(%L, %L, %s, %L::bytea)',
                                                       v_callee, p_caller, cid, req)) AS t(r bytea);
                        PERFORM rmsg.record_reply(p_caller, cid, rep);
                        COMMIT;
                    END LOOP;
                END \$\$"
}

# Both clusters start each measurement alike.
reset_state() {
    local c
    for c in caller callee; do
        sql "$c" "VACUUM"
        sql "$c" "CHECKPOINT"
    done
}

# The psql script of one measurement, run on the caller: connect to the
# callee, warm up, then CALLS calls between two readings of the counters.
# Prints one line: caller wal_sync, rmsg forces, forces avoided,
# prepare_call forces (called-component table), callee wal_sync (all
# deltas), seconds, calls the callee did, replies
# the caller logged, whether a checkpoint started meanwhile on either
# cluster.
measure_script() {
    local caller=$1 n=$2 mode=$3
    local conn="host=$PGHOST_callee port=$PGPORT_callee dbname=postgres application_name=bench_caller"
    local callee_stats="SELECT w.wal_sync, c.checkpoint_lsn FROM pg_stat_wal w, pg_control_checkpoint() c"
    local counters="SELECT w.wal_sync AS s, l.forces AS f, l.forces_avoided AS a,
                        (SELECT coalesce(sum(forces), 0) FROM rmsg.called_components
                          WHERE caller = '$caller') AS pf,
                        r.s AS cs, r.ck AS cck,
                        (SELECT checkpoint_lsn FROM pg_control_checkpoint()) AS ck
                   FROM pg_stat_wal w, rmsg.log_stats l,
                        dblink('callee', '$callee_stats') AS r(s bigint, ck pg_lsn)"
    echo '\set ON_ERROR_STOP 1'
    echo '\o /dev/null'
    [[ $mode == every ]] && echo 'SET rmsg.lazy_caller_log = off;'
    echo "SELECT dblink_connect('callee', '$conn');"
    # The callee's entry point as a prepared statement, as a client that
    # calls it over and over would have it: no parse and plan per call.
    echo "SELECT dblink_exec('callee', 'PREPARE handle_call(text, text, bigint, bytea) AS SELECT handle(\$1, \$2, \$3, \$4)');"
    echo "CALL run_calls('$caller', $n, 0, $WARMUP, '$mode');"
    # Our own pending statistics and those of the callee's backend go to
    # pg_stat_wal now, and again after the calls, so that the readings
    # bracket exactly the measured calls.
    echo 'SELECT pg_stat_force_next_flush();'
    echo "SELECT x FROM dblink('callee', 'SELECT 1 FROM pg_stat_force_next_flush()') AS t(x int);"
    echo "SELECT s AS s0, f AS f0, a AS a0, pf AS pf0, cs AS cs0, cck AS cck0, ck AS ck0,
                 extract(epoch FROM clock_timestamp()) AS t0 FROM ($counters) x \\gset"
    echo "CALL run_calls('$caller', $n, $WARMUP, $CALLS, '$mode');"
    echo "SELECT extract(epoch FROM clock_timestamp()) AS t1 \\gset"
    echo 'SELECT pg_stat_force_next_flush();'
    echo "SELECT x FROM dblink('callee', 'SELECT 1 FROM pg_stat_force_next_flush()') AS t(x int);"
    echo '\o'
    echo "SELECT s - :s0, f - :f0, a - :a0, pf - :pf0, cs - :cs0, :t1 - :t0,
                 (SELECT n FROM dblink('callee', 'SELECT count(*) FROM work WHERE caller = ''$caller''')
                                 AS w(n bigint)),
                 (SELECT count(reply) FROM rmsg.call_log WHERE caller = '$caller'),
                 ck <> :'ck0' OR cck <> :'cck0'
            FROM ($counters) x;"
}

# measure ROUND N MODE: one measurement; appends to results/N.MODE, per
# call unless said: "1 wal_sync 2 rmsg-forces 3 avoided 4 prepare_call-forces
# 5 callee-wal_sync 6 calls/s 7 other-syncs (wal_sync - rmsg forces)
# 8 walwriter-bound (the most background flushes the walwriter can have
# made in the time: one per wal_writer_delay, plus one) 9 seconds".
measure() {
    local round=$1 n=$2 mode=$3 caller f out sync forces avoided pforces csync secs ndone logged ckpt
    caller=c${round}_n${n}_$mode
    f=$WORK/scripts/$caller.sql
    measure_script "$caller" "$n" "$mode" >"$f"
    chmod a+r "$f"
    reset_state
    out=$(on caller psql -X -q -At -F ' ' -f "$f" 2>"$WORK/psql.err") || {
        cat "$WORK/psql.err" >&2
        die "psql failed for $caller (script $f; RMSG_KEEP_WORK=1 keeps it)"
    }
    read -r sync forces avoided pforces csync secs ndone logged ckpt <<<"$out"
    # Every call must have been done once by the callee and have its reply
    # logged, or the figures are not those of the calls we think.
    [[ $ndone == $((WARMUP + CALLS)) && $logged == $((WARMUP + CALLS)) ]] ||
        die "$caller: the callee did $ndone calls and the caller logged $logged replies, not $((WARMUP + CALLS))"
    [[ $ckpt == f ]] || printf 'WARNING: a checkpoint started during %s; its syncs are in the figures\n' "$caller"
    awk -v c="$CALLS" -v s="$sync" -v f="$forces" -v a="$avoided" -v p="$pforces" -v cs="$csync" -v t="$secs" \
        -v d="$WALWRITER_DELAY_MS" 'BEGIN {
        printf "%.4f %.4f %.4f %.4f %.4f %.1f %.4f %.4f %.3f\n", s / c, f / c, a / c, p / c, cs / c, c / t,
            (s - f) / c, (int(t * 1000 / d) + 1) / c, t }' >>"$WORK/results/$n.$mode"
    tail -n 1 "$WORK/results/$n.$mode" | awk -v n="$n" -v m="$mode" '{
        printf "  N=%d %-9s %6.3f wal_sync/call  %6.3f rmsg forces/call  %7.0f calls/s\n", n, m, $1, $2, $6 }'
}

column_max() { awk -v c="$2" 'NR == 1 || $c > m { m = $c } END { print m }' "$WORK/results/$1"; }

# mark VALUE LIMIT: "target met" when VALUE <= LIMIT.
mark_at_most() { awk -v v="$1" -v l="$2" 'BEGIN { print (v <= l + 1e-9) ? "target met" : "target MISSED" }'; }

report() {
    local n mode limit worst_f worst_s ratio_every ratio_send mark
    printf '\nper call, median of %d round(s) of %d calls after %d warm-up calls; caller cluster\n' \
        "$ROUNDS" "$CALLS" "$WARMUP"
    printf 'unless marked callee.  Target: caller forces/call <= 1/N + 0.05, checked on the worst\n'
    printf 'round (in brackets) of rmsg.log_stats.forces and of pg_stat_wal.wal_sync.\n'
    printf '%2s %-34s %8s %8s %8s %8s %8s %8s %8s %8s  %s\n' N mode wal_sync rmsg "of them" other \
        walwr "forces" callee "calls/s" "target"
    printf '%2s %-34s %8s %8s %8s %8s %8s %8s %8s %8s\n' "" "" "" forces prep_call syncs "<=" avoided wal_sync ""
    for n in "${NS[@]}"; do
        limit=$(awk -v n="$n" 'BEGIN { printf "%.3f", 1 / n + 0.05 }')
        for mode in "${MODES[@]}"; do
            mark=""
            if [[ $mode == contract ]]; then
                worst_f=$(column_max "$n.$mode" 2)
                worst_s=$(column_max "$n.$mode" 1)
                mark=$(printf '<= %s: rmsg %s (%.3f), wal_sync %s (%.3f)' "$limit" \
                    "$(mark_at_most "$worst_f" "$limit")" "$worst_f" \
                    "$(mark_at_most "$worst_s" "$limit")" "$worst_s")
            fi
            printf '%2d %-34s %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f %8.0f  %s\n' "$n" "${LABEL[$mode]}" \
                "$(column_median "$n.$mode" 1)" "$(column_median "$n.$mode" 2)" \
                "$(column_median "$n.$mode" 4)" "$(column_median "$n.$mode" 7)" \
                "$(column_median "$n.$mode" 8)" "$(column_median "$n.$mode" 3)" \
                "$(column_median "$n.$mode" 5)" "$(column_median "$n.$mode" 6)" "$mark"
        done
    done
    printf '\nwal_sync: pg_stat_wal.wal_sync delta: every WAL fsync of the caller cluster, the\n'
    printf '  walwriter'"'"'s background flushes of lazy commits included.\n'
    printf 'rmsg forces: rmsg.log_stats.forces delta, the flushes prepare_call and force_log made;\n'
    printf '  "of them prep_call": those prepare_call made (rmsg.called_components.forces).\n'
    printf 'other syncs: wal_sync - rmsg forces: the walwriter'"'"'s flushes and the caller'"'"'s\n'
    printf '  synchronous commits ("every": all its log writes; otherwise the commits the extension\n'
    printf '  did not make lazy).  "walwr <=": the most flushes the walwriter can have added, one per\n'
    printf '  wal_writer_delay = %sms of run time, plus one.\n' "$WALWRITER_DELAY_MS"
    printf 'forces avoided: rmsg.log_stats.forces_avoided, sends made without a force while the\n'
    printf '  session'"'"'s last commit was not yet flushed.\n'
    printf 'callee wal_sync: the callee cluster'"'"'s fsyncs per call (its replies are stable).\n'
    printf 'calls/s: wall time of the CALL, dblink round trips and the callee'"'"'s work included.\n'

    printf '\ncalls per second, ratios of the medians (target in brackets):\n'
    for n in "${NS[@]}"; do
        ratio_every=$(awk -v a="$(column_median "$n.contract" 6)" -v b="$(column_median "$n.every" 6)" \
            'BEGIN { printf "%.2f", a / b }')
        ratio_send=$(awk -v a="$(column_median "$n.contract" 6)" -v b="$(column_median "$n.send" 6)" \
            'BEGIN { printf "%.2f", a / b }')
        mark=""
        if [[ $n == 4 ]]; then
            mark="  [>= 1.5x: $(awk -v r="$ratio_every" 'BEGIN { print (r >= 1.5) ? "target met" : "target MISSED" }')]"
        fi
        printf '  N=%d  contract / every write forced:     %5sx%s\n' "$n" "$ratio_every" "$mark"
        # The same ratio within each round, whose cases ran back to back:
        # the machine's drift between rounds cancels out of it.
        paste <(awk '{ print $6 }' "$WORK/results/$n.contract") <(awk '{ print $6 }' "$WORK/results/$n.every") |
            awk '{ printf "%.2f\n", $1 / $2 }' >"$WORK/results/$n.paired"
        printf '       the same, round by round:           %5sx median of %s\n' \
            "$(median <"$WORK/results/$n.paired")" "$(sort -g "$WORK/results/$n.paired" | tr '\n' ' ' | sed 's/ $//')"
        printf '       contract / force before each send: %5sx\n' "$ratio_send"
        # What a caller fsync costs here, from the two ends: the wall time
        # the contract saves per wal_sync it saves against "every".
        awk -v a="$(column_median "$n.contract" 6)" -v b="$(column_median "$n.every" 6)" \
            -v sa="$(column_median "$n.contract" 1)" -v sb="$(column_median "$n.every" 1)" 'BEGIN {
            printf "       per call: contract %.0f us, every %.0f us: %.0f us per caller wal_sync saved\n",
                1e6 / a, 1e6 / b, (1e6 / b - 1e6 / a) / (sb - sa) }'
    done

    printf '\nper round: calls/s (caller wal_sync/call, rmsg forces/call):\n'
    for n in "${NS[@]}"; do
        for mode in "${MODES[@]}"; do
            printf '  N=%d %-9s %s\n' "$n" "$mode" \
                "$(awk '{ printf "%s%.0f (%.3f, %.3f)", (NR > 1 ? "  " : ""), $6, $1, $2 }' "$WORK/results/$n.$mode")"
        done
    done
}

main() {
    bench_setup contract
    start_clusters
    setup_callee
    setup_caller
    WALWRITER_DELAY_MS=$(sql caller "SELECT setting FROM pg_settings WHERE name = 'wal_writer_delay'")
    log "$(sql caller "SELECT version()" | cut -d, -f1); two clusters (caller, callee) on this machine"
    log "synchronous_commit $(sql caller "SHOW synchronous_commit"), wal_sync_method $(sql caller "SHOW wal_sync_method"), fsync $(sql caller "SHOW fsync"), wal_writer_delay $(sql caller "SHOW wal_writer_delay"), wal_writer_flush_after $(sql caller "SHOW wal_writer_flush_after"), rmsg.last_call_depth $(sql caller "SHOW rmsg.last_call_depth"), rmsg.lazy_caller_log $(sql caller "SHOW rmsg.lazy_caller_log") (off in 'every')"
    log "$ROUNDS rounds of $CALLS calls (after $WARMUP warm-up calls) per case, N = ${NS[*]} callees called in turn, modes ${MODES[*]} interleaved"
    for round in $(seq 1 "$ROUNDS"); do
        log "round $round"
        for n in "${NS[@]}"; do
            for mode in "${MODES[@]}"; do
                measure "$round" "$n" "$mode"
            done
        done
    done
    report
}

main "$@"
