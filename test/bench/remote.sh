#!/usr/bin/env bash
#
# Between servers (issue #19, item 4), side by side in one run: messages
# moved by a remote queue against an application's own dblink transfer,
# calls made by rmsg.call against the contract's calls carried by hand over
# dblink (prepare_call, the callee's handle(), record_reply), and a fan-out
# to three remote queues whose one payload row crosses once, by reference,
# against the same data put three times.
#
#   test/bench/remote.sh                                 # 5 rounds: about 7 min
#   BUILD=0 ROUNDS=3 test/bench/remote.sh                # the build already installed
#   BUILD=0 ROUNDS=1 MSGS=4000 CALLS=200 test/bench/remote.sh   # a quick look
#   BUILD=0 ROUNDS=3 CASES=fanout test/bench/remote.sh   # case 3 alone
# Knobs: ROUNDS (5), MSGS (20000 messages per measurement), CLIENTS (4
# pgbench producers), CALLS (1000 measured calls, after 16 warm-up calls),
# FANOUT_MSGS (200 fan-outs), DRAIN_TIMEOUT (300 s), BUILD (1; 0 uses the
# build already installed), CASES (puts,calls,fanout: the cases run).
#
# Two scratch clusters on this machine: a sends and calls (worker 0 on,
# rmsg.database = postgres, a postgres_fdw server "b" and a user mapping),
# b receives and is called; synchronous_commit = on, autovacuum off, and a
# VACUUM and a CHECKPOINT of both before each measurement.  b also listens
# on 127.0.0.1, where a's server "b_tcp" (case 3) reaches it.
#
# 1. Remote puts.  CLIENTS pgbench clients put MSGS 1 KiB payloads on a, each
#    put its own flushed commit, and the run waits until all are on b.
#      rmsg    SELECT rmsg.put('out', payload), 'out' being
#              rmsg.create_remote_queue('out', 'b', 'inbox'); worker 0 moves
#              them in batches (one flushed commit per batch on each side).
#      dblink  INSERT INTO outbox (payload); meanwhile a procedure on a takes
#              the oldest row, dblink_exec's INSERT ... ON CONFLICT (seq) DO
#              NOTHING of it on b (flushed there), deletes it and COMMITs
#              (flushed here): one message per round trip, exactly once-ish.
#    msgs/s    MSGS / (last arrival on b - start of the puts); the arrival is
#              b's channel_in.updated_at (rmsg) or the row's arrived_at.
#    put/s     pgbench's rate alone.  drain_s: end of the puts to the last
#              arrival; drain/s: what was not yet on b then, over drain_s.
#    sync/m    pg_stat_wal.wal_sync delta per message, on a (the producers'
#              commits included) and on b.  WAL/m: insert LSN delta per
#              message.  m/btch: messages per transaction on b (rmsg: distinct
#              xmin of the inbox's rows).  Target: rmsg >= 3x dblink msgs/s.
# 2. Calls.  A procedure on a calls s0 .. sN-1 on b in turn, N = 1, 2, 4,
#    committing after each call; the callee's work is one INSERT
#    (bench_handler(caller, call_id, request) returns sha256(request)).
#      rmsg    rmsg.call(caller, 'b', callee, request); b's handler set with
#              rmsg.set_callee_handler.
#      dblink  prepare_call; COMMIT; SELECT over dblink of b's handle() (a
#              prepared statement: accept_call, the work, rmsg.reply);
#              record_reply; COMMIT.
#    calls/s: CALLS calls' wall time.  a sync/c and rmsg frc/c
#    (rmsg.log_stats.forces) bracket exactly those calls; b sync/c counts
#    the warm-up too (read once b's sessions are gone).  Target: rmsg.call's
#    a wal_sync per call within 0.05 of the contract's 1/N, in every round.
# 3. Fan-out.  a's remote queues f1, f2, f3 go to b's g1, g2, g3 (token
#    dedup) over server b_tcp.  FANOUT_MSGS payloads of 32 KiB that do not
#    compress (random bytes, each different, made once: every round and
#    both variants send the same data) go to the three, one committed
#    transaction a payload, while the three queues are paused (as they are
#    outside this case, which worker 0's passes then skip): the run resumes
#    them once all are put and waits until all the messages are on b and
#    acknowledged on a, so that the batches are the same every time.
#      shared    rmsg.put_many(ARRAY['f1', 'f2', 'f3'], payload): one payload
#                row on a; the first message to leave carries the data with
#                its key, the two others the key alone (once b acknowledged
#                it), and g1 .. g3 reference one payload row on b.
#      unshared  rmsg.put('f1', payload), then f2, then f3: three payload
#                rows on a, each message carries its bytes, three rows on b.
#    b WAL/m, a WAL/m: insert LSN delta per message (a's includes the puts
#    and worker 0's numbering and forgetting, and any collection its
#    maintenance does meanwhile).  b recv/m: bytes b's backend of worker 0's
#    connection received (ss's bytes_received of the TCP connection; nan if
#    ss cannot tell).  by-ref: rmsg.channels.sent_by_reference delta of the
#    three.  a rows, b rows: payload rows written on a and held on b.
#    put_s: the puts; drain_s: the resume to the last acknowledgement.
#    Target: b WAL per message shared <= 0.4x unshared (3 messages, one
#    copy of the data instead of three), the median of the rounds' ratios.
# The cases run interleaved, in reverse order every other round; figures are
# medians of the rounds, ratios the median of each round's ratio.  A
# benchmark prints figures and marks targets; it passes or fails nothing.

set -euo pipefail

# shellcheck source=test/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
# shellcheck source=test/bench/lib_peers.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib_peers.sh"

ROUNDS=${ROUNDS:-5} MSGS=${MSGS:-20000} CLIENTS=${CLIENTS:-4} CALLS=${CALLS:-1000}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-300} FANOUT_MSGS=${FANOUT_MSGS:-200} CASES=${CASES:-puts,calls,fanout}
WARMUP=16   # a multiple of every N: the measured calls start at s0
NS=(1 2 4)
PAYLOAD_BYTES=1024
FANOUT_BYTES=32768
for var in ROUNDS MSGS CLIENTS CALLS DRAIN_TIMEOUT FANOUT_MSGS; do
    [[ ${!var} =~ ^[1-9][0-9]*$ ]] || die "$var must be a positive integer, not '${!var}'"
done
[[ $CASES =~ ^(puts|calls|fanout)(,(puts|calls|fanout))*$ ]] ||
    die "CASES must be a comma-separated list of puts, calls and fanout, not '$CASES'"
has_case() { [[ ,$CASES, == *,$1,* ]]; }
# shellcheck disable=SC2034  # set by start_named_cluster, read through at()
PGHOST_a='' PGPORT_a='' PGHOST_b='' PGPORT_b=''

# at CLUSTER CMD...: CMD (a command, or a function using run_as_pg) against a or b.
at() {
    local h=PGHOST_$1 p=PGPORT_$1
    shift
    PGHOST=${!h} PGPORT=${!p} PGDATABASE=postgres "$@"
}
sql() { at "$1" run_as_pg psql -X -q -v ON_ERROR_STOP=1 -At -c "$2"; }
conninfo() { local h=PGHOST_$1 p=PGPORT_$1; echo "host=${!h} port=${!p} dbname=postgres"; }
lsn() { sql "$1" "SELECT pg_current_wal_insert_lsn() - '0/0'"; }
now() { date +%s.%N; }
# quiet_wal_sync CLUSTER [SECONDS]: wal_sync once every backend has reported.
# An idle backend that reported less than a second before holds its figures
# up to 10 s (PGSTAT_IDLE_INTERVAL): worker 0's connection to b does.
quiet_wal_sync() { sleep "${2:-1.1}"; at "$1" settled_wal_sync; }
# wait_until SECONDS SQL-ON-CLUSTER...: until the query prints t.
wait_until() {
    local i
    for ((i = 0; i < $1 * 10; i++)); do
        [[ $(sql "$2" "$3") == t ]] && return 0
        sleep 0.1
    done
    return 1
}

start_clusters() {
    local conf=("synchronous_commit = on" "shared_buffers = 256MB" "max_wal_size = 8GB"
                "checkpoint_timeout = 1h" "autovacuum = off" "max_connections = 30")
    start_named_cluster a "${conf[@]}" "rmsg.worker_count = 1" "rmsg.database = 'postgres'"
    start_named_cluster b "${conf[@]}" "listen_addresses = '127.0.0.1'"
}

setup() {
    local i
    sql b "CREATE EXTENSION recoverable_msg; SELECT rmsg.create_queue('inbox')" >/dev/null
    sql b "CREATE TABLE inbox_dblink (seq bigint PRIMARY KEY, payload bytea NOT NULL,
               arrived_at timestamptz NOT NULL DEFAULT clock_timestamp());
           CREATE TABLE work (caller text, call_id bigint, request bytea NOT NULL,
               done_at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (caller, call_id))"
    # The callee's work, for both: the handler of rmsg.serve_call, and what
    # handle() does between accept_call and reply.
    sql b "CREATE FUNCTION bench_handler(p_caller text, p_call_id bigint, p_request bytea) RETURNS bytea
           LANGUAGE plpgsql AS \$\$ BEGIN
               INSERT INTO public.work (caller, call_id, request) VALUES (p_caller, p_call_id, p_request);
               RETURN sha256(p_request);
           END \$\$"
    sql b "CREATE FUNCTION handle(p_callee text, p_caller text, p_call_id bigint, p_request bytea)
           RETURNS bytea LANGUAGE plpgsql AS \$\$
           DECLARE a record; rep bytea;
           BEGIN
               SELECT * INTO a FROM rmsg.accept_call(p_callee, p_caller, p_call_id, p_request);
               IF a.status = 'duplicate' THEN RETURN a.reply; END IF;
               rep := bench_handler(p_caller, p_call_id, p_request);
               PERFORM rmsg.reply(p_callee, p_caller, p_call_id, rep);
               RETURN rep;
           END \$\$"
    for i in 0 1 2 3; do
        sql b "SELECT rmsg.set_callee_handler('s$i', 'bench_handler(text,bigint,bytea)')" >/dev/null
    done

    sql a "CREATE EXTENSION recoverable_msg; CREATE EXTENSION postgres_fdw; CREATE EXTENSION dblink"
    sql a "CREATE SERVER b FOREIGN DATA WRAPPER postgres_fdw
               OPTIONS (host '$PGHOST_b', port '$PGPORT_b', dbname 'postgres');
           CREATE USER MAPPING FOR CURRENT_USER SERVER b OPTIONS (user 'postgres')"
    sql a "SELECT rmsg.create_remote_queue('out', 'b', 'inbox')" >/dev/null
    at a create_payload_functions
    # Worker 0 notices the extension at the end of a nap, and only then
    # hears puts: one message goes through before anything is measured.
    sql a "SELECT rmsg.put('out', bench_payload())" >/dev/null
    wait_until 30 b "SELECT count(*) = 1 FROM rmsg.message" || die "worker 0 moved no message in 30 s"
    sql a "CREATE TABLE outbox (id bigserial PRIMARY KEY, payload bytea NOT NULL);
           CREATE TABLE bench_ctl (done bool NOT NULL); INSERT INTO bench_ctl VALUES (false)"
    # The hand-made transfer, oldest first, until the outbox is empty and
    # bench_ctl says the puts are over.  EXECUTE plans each pick: a plan
    # cached while the outbox was empty sorts a seq scan of it each time.
    sql a "CREATE PROCEDURE move_dblink(conn text) LANGUAGE plpgsql AS \$\$
           DECLARE r record;
           BEGIN
               PERFORM dblink_connect('b', conn);
               LOOP
                   EXECUTE 'SELECT id, payload FROM outbox ORDER BY id LIMIT 1' INTO r;
                   IF r.id IS NULL THEN
                       EXIT WHEN (SELECT done FROM bench_ctl);
                       COMMIT;
                       PERFORM pg_sleep(0.001);
                       CONTINUE;
                   END IF;
                   PERFORM dblink_exec('b', format('INSERT INTO inbox_dblink (seq, payload) VALUES (%s, %L)'
                                                   ' ON CONFLICT (seq) DO NOTHING', r.id, r.payload));
                   DELETE FROM outbox WHERE id = r.id;
                   COMMIT;
               END LOOP;
               PERFORM dblink_disconnect('b');
           END \$\$"
    # Calls first .. first + ncalls - 1 of a caller, to s0 .. sN-1 in turn.
    sql a "CREATE PROCEDURE run_calls(p_caller text, ncallees int, first int, ncalls int, mode text)
           LANGUAGE plpgsql AS \$\$
           DECLARE v_callee text; req bytea; p record; rep bytea;
           BEGIN
               FOR i IN first .. first + ncalls - 1 LOOP
                   v_callee := 's' || (i % ncallees);
                   req := convert_to(format('call %s to %s', i, v_callee), 'UTF8');
                   IF mode = 'rmsg' THEN
                       rep := rmsg.call(p_caller, 'b', v_callee, req);
                       COMMIT;
                   ELSE
                       SELECT * INTO p FROM rmsg.prepare_call(p_caller, v_callee, req);
                       COMMIT;
                       IF p.logged_reply IS NOT NULL THEN RAISE EXCEPTION 'call % replayed', p.call_id; END IF;
                       SELECT t.r INTO rep FROM dblink('callee', format('EXECUTE handle_call(%L, %L, %s, %L::bytea)',
                                                       v_callee, p_caller, p.call_id, req)) AS t(r bytea);
                       PERFORM rmsg.record_reply(p_caller, p.call_id, rep);
                       COMMIT;
                   END IF;
               END LOOP;
           END \$\$"
    echo "SELECT rmsg.put('out', bench_payload());" >"$WORK/scripts/put_rmsg.sql"
    echo "INSERT INTO outbox (payload) VALUES (bench_payload());" >"$WORK/scripts/put_dblink.sql"
    chmod -R a+rX "$WORK/scripts"
}

# Case 3's queues, over TCP so that b's side of the connection counts the
# bytes it receives, and its data: FANOUT_MSGS payloads of 2048 md5s each.
setup_fanout() {
    local i
    for i in 1 2 3; do sql b "SELECT rmsg.create_queue('g$i')" >/dev/null; done
    sql a "CREATE SERVER b_tcp FOREIGN DATA WRAPPER postgres_fdw
               OPTIONS (host '127.0.0.1', port '$PGPORT_b', dbname 'postgres');
           CREATE USER MAPPING FOR CURRENT_USER SERVER b_tcp OPTIONS (user 'postgres')"
    for i in 1 2 3; do sql a "SELECT rmsg.create_remote_queue('f$i', 'b_tcp', 'g$i')" >/dev/null; done
    sql a "CREATE TABLE fanout_data AS
             SELECT i, (SELECT decode(string_agg(md5(random()::text || i || '/' || j), ''), 'hex')
                          FROM generate_series(1, $FANOUT_BYTES / 16) j) AS payload
               FROM generate_series(1, $FANOUT_MSGS) i"
    sql a "CREATE PROCEDURE fanout_put(shared bool) LANGUAGE plpgsql AS \$\$
           DECLARE r record;
           BEGIN
               FOR r IN SELECT payload FROM fanout_data ORDER BY i LOOP
                   IF shared THEN
                       PERFORM rmsg.put_many(ARRAY['f1', 'f2', 'f3'], r.payload);
                   ELSE
                       PERFORM rmsg.put('f1', r.payload);
                       PERFORM rmsg.put('f2', r.payload);
                       PERFORM rmsg.put('f3', r.payload);
                   END IF;
                   COMMIT;
               END LOOP;
           END \$\$"
    # the three channels begin (channel_in rows on b) before any measurement
    sql a "SELECT rmsg.put_many(ARRAY['f1', 'f2', 'f3'], 'warm-up'::bytea)" >/dev/null
    wait_until 30 a "SELECT bool_and(last_acknowledged = 1 AND in_transit = 0) FROM rmsg.channels
                      WHERE queue IN ('f1', 'f2', 'f3')" || die "worker 0 opened no fan-out channel in 30 s"
    pause_fanout
}

# f1 .. f3 stay paused outside their measurement: worker 0's passes during
# the other cases skip them rather than look for work in them.
pause_fanout() {
    local q
    for q in f1 f2 f3; do sql a "SELECT rmsg.pause_queue('$q')" >/dev/null; done
}

# b_received: "PORT BYTES" of the TCP connection worker 0 keeps to b (server
# b_tcp), BYTES what b's side of it received; "none" when there is none or
# ss cannot tell.
b_received() {
    local port bytes
    port=$(sql b "SELECT client_port FROM pg_stat_activity
                   WHERE application_name = 'recoverable_msg transfer' AND client_addr IS NOT NULL")
    [[ $port =~ ^[0-9]+$ ]] || { echo none; return; }
    bytes=$(ss -Htin state established "( sport = :$PGPORT_b and dport = :$port )" 2>/dev/null |
        grep -oP 'bytes_received:\K[0-9]+' | head -1) || true
    if [[ -n $bytes ]]; then echo "$port $bytes"; else echo none; fi
}

reset_state() {
    sql b "TRUNCATE rmsg.message, rmsg.lease, rmsg.payload, rmsg.payload_received, inbox_dblink"
    sql a "TRUNCATE outbox; UPDATE bench_ctl SET done = false"
    sql a "SELECT rmsg.collect_payloads()" >/dev/null
    for c in a b; do sql "$c" "VACUUM"; sql "$c" "CHECKPOINT"; done
}

# measure_put SYS: appends to results/put_SYS "1 msgs/s 2 put/s 3 drain_s
# 4 a-sync/m 5 b-sync/m 6 a-WAL/m 7 b-WAL/m 8 m/btch 9 messages 10 drain/s".
measure_put() {
    local sys=$1 out tps puts t0 t1 tend mover="" early got batches as0 bs0 al0 bl0 as1 bs1 al1 bl1
    # inbox's channel: case 3's channels are in channel_in too
    local inbox="FROM rmsg.channel_in JOIN rmsg.queue USING (queue_id) WHERE name = 'inbox'"
    local arrived="SELECT coalesce(max(last_seq), 0) $inbox"
    [[ $sys == dblink ]] && arrived="SELECT count(*) FROM inbox_dblink"
    reset_state
    as0=$(quiet_wal_sync a) bs0=$(quiet_wal_sync b) al0=$(lsn a) bl0=$(lsn b)
    local base; base=$(sql b "$arrived")
    if [[ $sys == dblink ]]; then
        at a run_as_pg psql -X -q -v ON_ERROR_STOP=1 -d "dbname=postgres application_name=bench_mover" \
            -c "CALL move_dblink('$(conninfo b)')" >"$WORK/mover.log" 2>&1 &
        mover=$!
        wait_until 10 a "SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'bench_mover'" ||
            die "the dblink mover did not start"
    fi
    t0=$(now)
    out=$(at a run_as_pg pgbench -n -M prepared -c "$CLIENTS" -j 2 -t $((MSGS / CLIENTS)) \
        -f "$WORK/scripts/put_$sys.sql" 2>&1) || { echo "$out"; die "pgbench failed for put_$sys"; }
    t1=$(now)
    tps=$(grep -oP 'tps = \K[0-9.]+' <<<"$out" | head -1)
    puts=$(grep -oP 'number of transactions actually processed: \K[0-9]+' <<<"$out")
    early=$(($(sql b "$arrived") - base))
    if [[ $sys == rmsg ]]; then
        wait_until "$DRAIN_TIMEOUT" b "SELECT ($arrived) >= $((base + puts))" ||
            die "put_rmsg: not all on b after $DRAIN_TIMEOUT s: $(sql a "SELECT pending, in_transit, last_error FROM rmsg.channels")"
        tend=$(sql b "SELECT extract(epoch FROM updated_at) $inbox")
        got=$(sql b "SELECT count(*) FROM rmsg.message")
        batches=$(sql b "SELECT count(DISTINCT xmin::text) FROM rmsg.message")
    else
        sql a "UPDATE bench_ctl SET done = true"
        wait "$mover" || { cat "$WORK/mover.log"; die "the dblink mover failed"; }
        tend=$(sql b "SELECT extract(epoch FROM max(arrived_at)) FROM inbox_dblink")
        got=$(sql b "SELECT count(*) FROM inbox_dblink") batches=$got
    fi
    [[ $got == "$puts" ]] || die "put_$sys: $puts messages put, $got on b"
    at a wait_for_clients_gone pgbench
    as1=$(quiet_wal_sync a) bs1=$(quiet_wal_sync b "$([[ $sys == rmsg ]] && echo 10.5 || echo 1.1)")
    al1=$(lsn a) bl1=$(lsn b)
    awk -v n="$puts" -v t0="$t0" -v t1="$t1" -v te="$tend" -v tps="$tps" -v b="$batches" -v e="$early" \
        -v as="$((as1 - as0))" -v bs="$((bs1 - bs0))" -v al="$((al1 - al0))" -v bl="$((bl1 - bl0))" 'BEGIN {
        d = te > t1 ? te - t1 : 0
        printf "%.0f %.0f %.2f %.3f %.3f %.0f %.0f %.1f %d %.0f\n", n / (te - t0), tps, d, as / n, bs / n,
            al / n, bl / n, n / b, n, (d > 0 ? (n - e) / d : 0) }' >>"$WORK/results/put_$sys"
    tail -n 1 "$WORK/results/put_$sys" | awk -v s="$sys" '{ printf "  put %-6s %6.0f msgs/s (puts %5.0f/s, drain %5.2f s at %5.0f/s)  sync/msg a %.3f b %.3f  %5.1f msgs/batch\n", s, $1, $2, $3, $10, $4, $5, $8 }'
}

# measure_call N MODE K: appends to results/callN_MODE "1 calls/s 2 a-sync/c
# 3 rmsg-forces/c 4 b-sync/c 5 seconds"; the caller, c<K>_nN_MODE, is new.
measure_call() {
    local n=$1 mode=$2 caller=c$3_n$1_$2 f out s frc secs logged ndone bs0 bs1 bbase
    local others="SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
    f=$WORK/scripts/$caller.sql
    {
        echo '\set ON_ERROR_STOP 1'
        echo '\o /dev/null'
        echo "SELECT rmsg.restart('$caller');"
        if [[ $mode == dblink ]]; then
            echo "SELECT dblink_connect('callee', '$(conninfo b) application_name=bench_caller');"
            echo "SELECT dblink_exec('callee', 'PREPARE handle_call(text, text, bigint, bytea) AS SELECT handle(\$1, \$2, \$3, \$4)');"
        fi
        echo "CALL run_calls('$caller', $n, 0, $WARMUP, '$mode');"
        # our pending statistics go to pg_stat_wal now, and after the calls
        echo 'SELECT pg_stat_force_next_flush();'
        echo "SELECT w.wal_sync AS s0, l.forces AS f0, extract(epoch FROM clock_timestamp()) AS t0
                FROM pg_stat_wal w, rmsg.log_stats l \\gset"
        echo "CALL run_calls('$caller', $n, $WARMUP, $CALLS, '$mode');"
        echo "SELECT extract(epoch FROM clock_timestamp()) AS t1 \\gset"
        echo 'SELECT pg_stat_force_next_flush();'
        echo '\o'
        echo "SELECT w.wal_sync - :s0, l.forces - :f0, :t1 - :t0,
                     (SELECT count(reply) FROM rmsg.call_log WHERE caller = '$caller')
                FROM pg_stat_wal w, rmsg.log_stats l;"
    } >"$f"
    chmod a+r "$f"
    reset_state
    bbase=$(sql b "$others") bs0=$(quiet_wal_sync b)
    out=$(at a run_as_pg psql -X -q -At -F ' ' -f "$f" 2>"$WORK/psql.err") ||
        { cat "$WORK/psql.err" >&2; die "psql failed for $caller (script $f; RMSG_KEEP_WORK=1 keeps it)"; }
    read -r s frc secs logged <<<"$out"
    # b's backends of this session report their figures as they exit
    wait_until 10 b "SELECT ($others) <= $bbase" || echo "WARNING: $caller's sessions still on b"
    bs1=$(quiet_wal_sync b)
    ndone=$(sql b "SELECT count(*) FROM work WHERE caller = '$caller'")
    [[ $ndone == $((WARMUP + CALLS)) && $logged == $((WARMUP + CALLS)) ]] ||
        die "$caller: b did $ndone calls and a logged $logged replies, not $((WARMUP + CALLS))"
    awk -v c="$CALLS" -v s="$s" -v f="$frc" -v t="$secs" -v bs="$((bs1 - bs0))" -v all="$((WARMUP + CALLS))" \
        'BEGIN { printf "%.1f %.4f %.4f %.4f %.3f\n", c / t, s / c, f / c, bs / all, t }' >>"$WORK/results/call${n}_$mode"
    tail -n 1 "$WORK/results/call${n}_$mode" | awk -v n="$n" -v m="$mode" '{
        printf "  call N=%d %-6s %6.0f calls/s  wal_sync/call a %.3f (rmsg forces %.3f) b %.3f\n", n, m, $1, $2, $3, $4 }'
}

# measure_fanout MODE (shared or unshared): appends to results/fanout_MODE
# "1 b-WAL/m 2 a-WAL/m 3 b-recv/m 4 by-ref 5 messages 6 a-rows 7 b-rows
# 8 put_s 9 drain_s".
measure_fanout() {
    local mode=$1 n=$((3 * FANOUT_MSGS)) fq="queue IN ('f1', 'f2', 'f3')" q t0 t1 t2 al0 bl0 al1 bl1
    local ref0 ref1 r0 r1 recv ap0 ap got bp
    local refs="SELECT coalesce(sum(sent_by_reference), 0) FROM rmsg.channels WHERE $fq"
    reset_state
    ap0=$(sql a "SELECT count(*) FROM rmsg.payload")
    ref0=$(sql a "$refs") r0=$(b_received) al0=$(lsn a) bl0=$(lsn b)
    t0=$(now)
    sql a "CALL fanout_put($([[ $mode == shared ]] && echo true || echo false))"
    t1=$(now)
    ap=$(($(sql a "SELECT count(*) FROM rmsg.payload") - ap0))
    for q in f1 f2 f3; do sql a "SELECT rmsg.resume_queue('$q')" >/dev/null; done
    wait_until "$DRAIN_TIMEOUT" b "SELECT count(*) >= $n FROM rmsg.message" ||
        die "fanout_$mode: not all on b after $DRAIN_TIMEOUT s: $(sql a "SELECT queue, pending, in_transit, last_error FROM rmsg.channels WHERE $fq")"
    wait_until 60 a "SELECT bool_and(pending = 0 AND in_transit = 0) FROM rmsg.channels WHERE $fq" ||
        die "fanout_$mode: a has not forgotten what b holds after 60 s"
    t2=$(now)
    al1=$(lsn a) bl1=$(lsn b) ref1=$(sql a "$refs") r1=$(b_received)
    pause_fanout
    got=$(sql b "SELECT count(*) FROM rmsg.message") bp=$(sql b "SELECT count(*) FROM rmsg.payload")
    [[ $got == "$n" ]] || die "fanout_$mode: $n messages put, $got on b"
    # each of g1 .. g3 holds the payloads in put order, with their bytes
    [[ $(sql b "SELECT string_agg(d, ' ' ORDER BY q) FROM (
                  SELECT q.name AS q, md5(string_agg(md5(coalesce(m.inline_data, p.data)), ',' ORDER BY m.msg_id)) AS d
                    FROM rmsg.message m JOIN rmsg.queue q USING (queue_id)
                    LEFT JOIN rmsg.payload p USING (payload_id) GROUP BY q.name) x") == \
       "$(sql a "SELECT repeat(md5(string_agg(md5(payload), ',' ORDER BY i)) || ' ', 2)
                     || md5(string_agg(md5(payload), ',' ORDER BY i)) FROM fanout_data")" ]] ||
        die "fanout_$mode: the data on b is not the data put on a"
    # the same connection before and after (or a new one, counted from 0)
    if [[ $r1 == none ]] || [[ $r0 != none && ${r0% *} != "${r1% *}" ]]; then
        recv=nan
    else
        recv=$((${r1#* } - $([[ $r0 == none ]] && echo 0 || echo "${r0#* }")))
    fi
    awk -v n="$n" -v bl="$((bl1 - bl0))" -v al="$((al1 - al0))" -v rv="$recv" -v ref="$((ref1 - ref0))" \
        -v ap="$ap" -v bp="$bp" -v t0="$t0" -v t1="$t1" -v t2="$t2" 'BEGIN {
        printf "%.0f %.0f %s %d %d %d %d %.2f %.2f\n", bl / n, al / n, (rv == "nan" ? "nan" : sprintf("%.0f", rv / n)),
            ref, n, ap, bp, t1 - t0, t2 - t1 }' >>"$WORK/results/fanout_$mode"
    tail -n 1 "$WORK/results/fanout_$mode" | awk -v m="$mode" '{
        printf "  fanout %-8s WAL/msg b %6d a %6d  b recv/msg %6s  by reference %d of %d  payload rows a %d b %d  (put %.2f s, drain %.2f s)\n",
            m, $1, $2, $3, $4, $5, $6, $7, $8, $9 }'
}

# run_case NAME, for run_rounds: put_SYS, callN_MODE or fanout_MODE.
MEASUREMENT=0
run_case() {
    local k=${1#call}
    MEASUREMENT=$((MEASUREMENT + 1))
    case $1 in
        put_*) measure_put "${1#put_}" ;;
        fanout_*) measure_fanout "${1#fanout_}" ;;
        call*) measure_call "${k%%_*}" "${k#*_}" "$MEASUREMENT" ;;
    esac
}

verdict() { awk "BEGIN { print (($1) ? \"met\" : \"missed\") }"; }

report() {
    local r
    has_case puts && report_puts
    has_case calls && report_calls
    has_case fanout && report_fanout
    [[ $CASES == fanout ]] && return
    printf '\nper round, msgs/s or calls/s:\n'
    for r in "${NAMES[@]}"; do
        [[ $r == fanout_* ]] && continue
        printf '  %-12s %s\n' "$r" "$(awk '{ printf "%.0f ", $1 }' "$WORK/results/$r")"
    done
}

report_puts() {
    local r c
    printf '\n1. remote puts: %d clients put %d messages of %d bytes; median of %d round(s)\n' \
        "$CLIENTS" "$MSGS" "$PAYLOAD_BYTES" "$ROUNDS"
    printf '  %-31s %7s %7s %7s %7s %8s %8s %7s %7s %6s\n' "" msgs/s put/s drain_s drain/s "a sync/m" \
        "b sync/m" "a WAL/m" "b WAL/m" m/btch
    for r in "rmsg:rmsg remote queue, worker 0" "dblink:dblink mover, 1 msg a commit"; do
        printf '  %-31s' "${r#*:}"
        for c in 1 2 3 10 4 5 6 7 8; do column_median "put_${r%%:*}" "$c"; done |
            xargs printf ' %7.0f %7.0f %7.2f %7.0f %8.3f %8.3f %7.0f %7.0f %6.1f\n'
    done
    printf '  msgs/s, rmsg / dblink: %s  [>= 3x: %s]\n' "$(paired put_rmsg put_dblink)" \
        "$(verdict "$(median <"$WORK/results/put_rmsg.put_dblink.paired") >= 3")"
}

report_calls() {
    local n mode c worst
    printf '\n2. calls to N callees in turn: %d calls after %d warm-up; median of %d round(s)\n' \
        "$CALLS" "$WARMUP" "$ROUNDS"
    printf '  %-2s %-28s %8s %9s %10s %9s  %s\n' N "" calls/s "a sync/c" "rmsg frc/c" "b sync/c" \
        "[a sync/c within 0.05 of 1/N in every round]"
    for n in "${NS[@]}"; do
        for mode in rmsg dblink; do
            # the round farthest from 1/N: its value and distance
            worst=$(awk -v n="$n" '{ d = $2 - 1 / n; d = d < 0 ? -d : d; if (NR == 1 || d > w) { w = d; v = $2 } }
                                   END { printf "%.3f %.3f", v, w }' "$WORK/results/call${n}_$mode")
            printf '  %-2d %-28s' "$n" "$([[ $mode == rmsg ]] && echo rmsg.call || echo "dblink, by hand")"
            for c in 1 2 3 4; do column_median "call${n}_$mode" "$c"; done | xargs printf ' %8.0f %9.3f %10.3f %9.3f'
            printf '  [1/N = %.3f, worst round %s: %s]\n' "$(awk -v n="$n" 'BEGIN { print 1 / n }')" "${worst% *}" \
                "$(verdict "${worst#* } <= 0.05 + 1e-9")"
        done
    done
    for n in "${NS[@]}"; do
        printf '  N=%d calls/s, rmsg.call / dblink by hand: %s\n' "$n" "$(paired "call${n}_rmsg" "call${n}_dblink")"
    done
}

report_fanout() {
    local r c
    printf '\n3. fan-out to 3 remote queues: %d payloads of %d bytes, %d messages; median of %d round(s)\n' \
        "$FANOUT_MSGS" "$FANOUT_BYTES" $((3 * FANOUT_MSGS)) "$ROUNDS"
    printf '  %-31s %7s %7s %8s %6s %6s %6s %6s %7s\n' "" "b WAL/m" "a WAL/m" "b recv/m" by-ref \
        "a rows" "b rows" put_s drain_s
    for r in "shared:put_many, sent by reference" "unshared:3 puts, each with its bytes"; do
        printf '  %-31s' "${r#*:}"
        for c in 1 2 3 4 6 7 8 9; do column_median "fanout_${r%%:*}" "$c"; done |
            xargs printf ' %7.0f %7.0f %8.0f %6.0f %6.0f %6.0f %6.2f %7.2f\n'
    done
    printf '  b WAL/m, shared / unshared: %s  [<= 0.4x: %s]\n' "$(paired fanout_shared fanout_unshared)" \
        "$(verdict "$(median <"$WORK/results/fanout_shared.fanout_unshared.paired") <= 0.4")"
    printf '  a WAL/m, shared / unshared: %sx\n' "$(ratio_of "$(column_median fanout_shared 2)" \
        "$(column_median fanout_unshared 2)")"
}

main() {
    local n
    bench_setup remote
    start_clusters
    setup
    has_case fanout && setup_fanout
    NAMES=()
    has_case puts && NAMES+=(put_rmsg put_dblink)
    if has_case calls; then
        for n in "${NS[@]}"; do NAMES+=("call${n}_rmsg" "call${n}_dblink"); done
    fi
    has_case fanout && NAMES+=(fanout_shared fanout_unshared)
    log "$(sql a "SELECT version()" | cut -d, -f1); clusters a (sends, calls; worker 0) and b, on this machine"
    log "synchronous_commit on, wal_sync_method $(sql a "SHOW wal_sync_method"), autovacuum off, rmsg.last_call_depth $(sql a "SHOW rmsg.last_call_depth")"
    log "$ROUNDS round(s) of: ${NAMES[*]}"
    run_rounds "$ROUNDS" "${NAMES[@]}"
    report
}

main "$@"
