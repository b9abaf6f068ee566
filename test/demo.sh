#!/usr/bin/env bash
#
# A guided tour of recoverable_msg: builds and installs the extension, starts
# a scratch cluster of its own (private data directory, free port, unix
# socket in the work directory, the library preloaded), runs test/demo.sql
# through psql with every statement echoed before its result, and stops the
# cluster and removes everything when it ends, however it ends.
#
# Works as root (the cluster then runs as the postgres OS user) or as a sudo
# user, with or without a terminal.

# Functions here take their own arguments, not the script's:
# shellcheck disable=SC2119

set -euo pipefail

# shellcheck source=test/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

DEMO_SQL=$ROOT/test/demo.sql

# Extra Debian packages the walk-through may use, space separated.
DEMO_PACKAGES=${DEMO_PACKAGES:-}

# Creates and starts the scratch cluster; exports PGHOST/PGPORT for psql.
start_cluster() {
    local data=$WORK/demo_data port lib
    port=$(free_port)
    lib=$(make_var "$ROOT" MODULE_big)
    log "initdb $data"
    if ! run_as_pg initdb -D "$data" -A trust --no-sync >"$WORK/initdb.log" 2>&1; then
        cat "$WORK/initdb.log"
        die "initdb failed"
    fi
    # The socket lives in WORK only: nothing else on the machine can reach,
    # or be disturbed by, this cluster.
    cat >>"$data/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$WORK'
shared_preload_libraries = '${lib:-recoverable_msg}'
max_prepared_transactions = 10
rmsg.worker_count = 2
rmsg.worker_naptime = '1min'
CONF
    log "starting the cluster on port $port"
    if ! run_as_pg pg_ctl -D "$data" -l "$WORK/server.log" -w start >/dev/null; then
        cat "$WORK/server.log"
        die "the server did not start"
    fi
    export PGHOST=$WORK PGPORT=$port PGDATABASE=postgres
    DEMO_DATA=$data
}

stop_cluster() {
    run_as_pg pg_ctl -D "$DEMO_DATA" -m fast -w stop >/dev/null
}

# Runs the walk-through. psql reads demo.sql from our stdin so that the
# postgres user needs no access to the repository; -e prints each statement
# as sent to the server, ON_ERROR_STOP makes the first error fatal.
run_walkthrough() {
    log "running $DEMO_SQL"
    if ! run_as_pg psql -X -e -v ON_ERROR_STOP=1 -f - <"$DEMO_SQL"; then
        echo "---- last lines of the server log ----"
        tail -n 30 "$WORK/server.log"
        die "the walk-through stopped at an error"
    fi
}

# The point of it all: crash the server (an immediate stop, no shutdown
# checkpoint) with a committed put, an uncommitted put and a lease in
# flight, restart it, and look at what survived.
crash_and_recover() {
    local psql=(psql -X -v ON_ERROR_STOP=1)
    log "crash recovery: committed messages survive, uncommitted ones do not"
    run_as_pg "${psql[@]}" -e <<'SQL'
SELECT rmsg.create_queue('payments');
SELECT rmsg.put('payments', 'payment 1: committed, then leased'::text) AS msg_id;
SELECT rmsg.put('payments', 'payment 2: committed'::text) AS msg_id;
-- the oldest message is leased for 2 seconds:
SELECT msg_id, convert_from(payload, 'UTF8') AS payload
  FROM rmsg.get('payments', visibility => '2 seconds');
SQL
    # An open transaction with a put that never commits.
    run_as_pg "${psql[@]}" -c "BEGIN" \
        -c "SELECT rmsg.put('payments', 'payment 3: never committed'::text)" \
        -c "SELECT pg_sleep(30)" >/dev/null 2>&1 &
    sleep 1
    log "pg_ctl stop -m immediate (a crash: no checkpoint, no clean shutdown)"
    run_as_pg pg_ctl -D "$DEMO_DATA" -m immediate -w stop >/dev/null
    wait || true
    run_as_pg pg_ctl -D "$DEMO_DATA" -l "$WORK/server.log" -w start >/dev/null
    log "restarted after crash recovery"
    run_as_pg "${psql[@]}" -e <<'SQL'
-- both committed messages are there, payment 3 is not; the lease was
-- committed lazily, so it may or may not have survived the crash
-- (deliveries 1 or 0 for payment 1):
SELECT convert_from(coalesce(inline_data, ''), 'UTF8') AS payload, deliveries
  FROM rmsg.message ORDER BY msg_id;
SELECT pg_sleep(2.2);
-- once the lease has run out at the latest, both are delivered:
SELECT msg_id, convert_from(payload, 'UTF8') AS payload, deliveries, rmsg.ack(msg_id) AS acked
  FROM rmsg.get('payments', max => 10);
SELECT rmsg.drop_queue('payments');
SQL
}

# The committed interaction contract (README, "A worked example"): a caller
# 'shop' in database shop calls 'warehouse' and 'billing' in database
# callees through dblink.  The server crashes while the shop takes orders;
# the same CALL after the restart recovers it, and every call's work is
# done exactly once.
contract_demo() {
    local psql=(psql -X -v ON_ERROR_STOP=1) conninfo
    conninfo="dbname=callees host=$PGHOST port=$PGPORT"
    log "committed interaction contract: a caller, two callees, a crash mid-run"
    run_as_pg "${psql[@]}" -q -c "CREATE DATABASE callees" -c "CREATE DATABASE shop"
    run_as_pg "${psql[@]}" -q -d callees -f - <"$ROOT/test/examples/contract_callees.sql"
    run_as_pg "${psql[@]}" -q -d shop -f - <"$ROOT/test/examples/contract_caller.sql"
    run_as_pg "${psql[@]}" -d shop -e <<SQL
-- five orders (ten calls), a checkpoint after the fifth:
CALL take_orders(5, '$conninfo');
SELECT * FROM rmsg.callers;
SQL
    run_as_pg "${psql[@]}" -d callees -e <<'SQL'
-- each callee keeps its last reply to the shop:
SELECT callee, caller, call_id, reply_bytes FROM rmsg.last_calls;
SQL
    # Twenty orders, slowly, and a crash in the middle of them.
    run_as_pg "${psql[@]}" -d shop -c "CALL take_orders(20, '$conninfo', 0.1)" >/dev/null 2>&1 &
    sleep 1
    log "pg_ctl stop -m immediate while the shop takes orders"
    run_as_pg pg_ctl -D "$DEMO_DATA" -m immediate -w stop >/dev/null
    wait || true
    run_as_pg pg_ctl -D "$DEMO_DATA" -l "$WORK/server.log" -w start >/dev/null
    log "restarted; the shop's log since its last checkpoint:"
    run_as_pg "${psql[@]}" -d shop -e <<SQL
SELECT call_id, callee, convert_from(request, 'UTF8') AS request,
       convert_from(reply, 'UTF8') AS reply FROM rmsg.replay('shop');
SQL
    echo "-- until it restarts, the caller may not call (its state may be ahead of its log):"
    run_as_pg psql -X -d shop -e -c "SELECT * FROM rmsg.prepare_call('shop', 'warehouse')" 2>&1 || true
    run_as_pg "${psql[@]}" -d shop -e <<SQL
-- the same CALL recovers it: restart, replay from the log, send the rest
CALL take_orders(20, '$conninfo');
SELECT * FROM rmsg.callers;
SELECT caller, callee, stable, calls, forces FROM rmsg.called_components;
SELECT forces, forces_avoided FROM rmsg.log_stats;
SQL
    run_as_pg "${psql[@]}" -d callees -e <<'SQL'
-- every order reserved and charged exactly once, crash or not:
SELECT on_hand, 100 - on_hand AS reserved FROM stock;
SELECT count(*) AS charges, count(DISTINCT call_id) AS distinct_calls FROM charges;
SQL
}

# Recovery-mode instances (README, "A worked example" under "Recovery-mode
# instances"): an order recovers while its customer keeps writing; the
# server crashes in the middle; after the restart the order is still in
# recovery with the deferred messages, and completing recovery releases
# them in the order they arrived.
instance_demo() {
    local psql=(psql -X -v ON_ERROR_STOP=1)
    log "recovery-mode instances: an order recovers, a crash in the middle"
    run_as_pg "${psql[@]}" -q -c "CREATE DATABASE orders"
    run_as_pg "${psql[@]}" -q -d orders -f - <"$ROOT/test/examples/order_conversation.sql"
    run_as_pg "${psql[@]}" -d orders -e <<'SQL'
SELECT rmsg.create_instance('order-42', '{"status": "new", "paid": false}');
SELECT * FROM rmsg.deliver('order-42', 'placed');
CALL drain('order-42');
-- the payment provider reports a mismatch: the order must recover
SELECT rmsg.begin_recovery('order-42');
-- the customer keeps writing: those messages are deferred
SELECT * FROM rmsg.deliver('order-42', 'address changed');
SELECT * FROM rmsg.deliver('order-42', 'gift wrap');
SELECT instance, mode, ready, deferred, in_flight FROM rmsg.instances;
SQL
    log "pg_ctl stop -m immediate while order-42 recovers"
    run_as_pg pg_ctl -D "$DEMO_DATA" -m immediate -w stop >/dev/null
    run_as_pg pg_ctl -D "$DEMO_DATA" -l "$WORK/server.log" -w start >/dev/null
    run_as_pg "${psql[@]}" -d orders -e <<'SQL'
-- after the crash: still in recovery, its state and both deferred messages kept
SELECT instance, mode, ready, deferred, in_flight FROM rmsg.instances;
SELECT rmsg.load_state('order-42');
-- the recovery message: handling it completes recovery, then the deferred
-- messages are handled in the order they arrived
SELECT * FROM rmsg.deliver('order-42', 'resync: paid', 'recovery');
CALL drain('order-42');
SELECT mode, kind, message, status FROM order_events ORDER BY seq;
SELECT instance, mode, ready, deferred, in_flight FROM rmsg.instances;
SELECT rmsg.load_state('order-42');
SQL
}

# Waits (up to 30 s) until query $2 in database $1 prints 't'.
wait_for() {
    local db=$1 query=$2 i
    for ((i = 0; i < 300; i++)); do
        [[ $(run_as_pg psql -X -Atq -d "$db" -c "$query" 2>/dev/null) == t ]] && return 0
        sleep 0.1
    done
    die "gave up waiting for: $query"
}

# The background worker (README, "Background worker"): the workers move to
# a database of their own on a reload, bill orders through a queue handler
# (one order fails until it is dead-lettered), and handle an order
# conversation through an instance handler: nothing while it recovers, a
# crash in the middle, and the deferred messages in order once the recovery
# message completes it.
worker_demo() {
    local psql=(psql -X -v ON_ERROR_STOP=1)
    log "background worker: handlers for a queue and for instances"
    run_as_pg "${psql[@]}" -q -c "CREATE DATABASE shipping"
    run_as_pg "${psql[@]}" -q -d shipping -c "CREATE EXTENSION recoverable_msg"
    run_as_pg "${psql[@]}" -e <<'SQL'
-- the workers serve the database rmsg.database names; a reload moves them
ALTER SYSTEM SET rmsg.database = 'shipping';
ALTER SYSTEM SET rmsg.worker_naptime = '1s';
ALTER SYSTEM SET rmsg.retry_delay = '200ms';
SELECT pg_reload_conf();
SQL
    wait_for postgres "SELECT count(*) = 2 FROM rmsg.worker WHERE database = 'shipping' AND state = 'idle'"
    run_as_pg "${psql[@]}" -q -d shipping -f - <"$ROOT/test/examples/worker_handlers.sql" >/dev/null
    run_as_pg "${psql[@]}" -d shipping -e <<'SQL'
SELECT worker, pid IS NOT NULL AS running, state, database FROM rmsg.worker;
SELECT kind, target, handler, batch FROM rmsg.handlers;
-- three orders; the second has no amount: its handler fails
SELECT rmsg.put('billing', '{"id": 1, "amount": 20}'::jsonb) AS msg_id;
SELECT rmsg.put('billing', '{"id": 2, "amount": 0}'::jsonb) AS msg_id;
SELECT rmsg.put('billing', '{"id": 3, "amount": 5}'::jsonb) AS msg_id;
SQL
    wait_for shipping "SELECT ready = 1 FROM rmsg.queues WHERE queue = 'billing_dead'"
    run_as_pg "${psql[@]}" -d shipping -e <<'SQL'
-- 1 and 3 billed at once, each in the transaction that acked it;
-- 2 was tried three times (200 ms, then 400 ms later) and dead-lettered
SELECT order_id, amount FROM invoices ORDER BY order_id;
SELECT queue, ready, in_flight, delayed, dead FROM rmsg.queues ORDER BY queue;
SELECT kind, target, errors, last_error FROM rmsg.handlers;
SELECT worker, state, processed, errors, retried, dead_lettered, last_error FROM rmsg.worker;
-- an order conversation: placed, then the provider reports a mismatch
SELECT rmsg.create_instance('order-7', '{"status": "new", "paid": false}');
SELECT * FROM rmsg.deliver('order-7', 'placed');
SQL
    wait_for shipping "SELECT count(*) = 1 FROM order_events"
    run_as_pg "${psql[@]}" -d shipping -e <<'SQL'
SELECT rmsg.begin_recovery('order-7');
SELECT * FROM rmsg.deliver('order-7', 'address changed');   -- deferred
SELECT * FROM rmsg.deliver('order-7', 'gift wrap');         -- deferred
SELECT pg_sleep(1);
-- the workers leave them alone while the order recovers:
SELECT instance, mode, ready, deferred, in_flight FROM rmsg.instances;
SQL
    log "pg_ctl stop -m immediate while order-7 recovers"
    run_as_pg pg_ctl -D "$DEMO_DATA" -m immediate -w stop >/dev/null
    run_as_pg pg_ctl -D "$DEMO_DATA" -l "$WORK/server.log" -w start >/dev/null
    wait_for postgres "SELECT count(*) = 2 FROM rmsg.worker WHERE database = 'shipping' AND state = 'idle'"
    run_as_pg "${psql[@]}" -d shipping -e <<'SQL'
-- after the crash: still recovering, both messages deferred
SELECT instance, mode, ready, deferred, in_flight FROM rmsg.instances;
-- the provider's answer: its handler completes recovery
SELECT * FROM rmsg.deliver('order-7', 'resync: paid', 'recovery');
SQL
    wait_for shipping "SELECT count(*) = 4 FROM order_events"
    run_as_pg "${psql[@]}" -d shipping -e <<'SQL'
-- handled in order: the deferred messages right after the recovery
SELECT kind, message, status FROM order_events ORDER BY seq;
SELECT instance, mode, ready, deferred, in_flight FROM rmsg.instances;
SELECT rmsg.load_state('order-7');
SELECT worker, state, processed, errors FROM rmsg.worker;
SQL
}

main() {
    # shellcheck disable=SC2086  # a space-separated package list
    ensure_packages $DEMO_PACKAGES || die "could not install the required packages"
    init_pg_env
    BUILD_WERROR=0 build_and_install || die "build failed"
    make_workdir
    start_cluster
    run_walkthrough
    crash_and_recover
    contract_demo
    instance_demo
    worker_demo
    stop_cluster   # the EXIT trap stops it too, should anything above fail
    log "demo finished"
}

main "$@"
