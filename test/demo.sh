#!/usr/bin/env bash
#
# A guided tour of recoverable_msg: builds and installs the extension
# (quietly, unless the build fails), starts a scratch cluster of its own
# (private data directory, free port, unix socket in the work directory, the
# library preloaded), and shows each capability the README lists, in its
# order, every statement echoed before its result: test/demo.sql for
# security, queues and deduplicated logging, then the functions below for
# the contract, instances and the background worker.  It stops the cluster
# and removes everything when it ends, however it ends.
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

# Prints a section's title and the sentences that say why it exists.
section() {
    printf '\n=== %s ===\n' "$1"
    shift
    printf '%s\n' "$@" ""
}

# Creates and starts the scratch cluster; exports PGHOST/PGPORT for psql and
# PGDATA for the pg_ctl of demo.sql's crash.  The workers serve the database
# shipping, which the worker section uses; it is made at once, so that they
# are connected by then.
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
    # or be disturbed by, this cluster.  A short naptime and retry delay
    # keep the worker section short.
    cat >>"$data/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$WORK'
shared_preload_libraries = '${lib:-recoverable_msg}'
rmsg.worker_count = 2
rmsg.database = 'shipping'
rmsg.worker_naptime = '1s'
rmsg.retry_delay = '200ms'
CONF
    log "starting the cluster on port $port"
    if ! run_as_pg pg_ctl -D "$data" -l "$WORK/server.log" -w start >/dev/null; then
        cat "$WORK/server.log"
        die "the server did not start"
    fi
    export PGHOST=$WORK PGPORT=$port PGDATABASE=postgres PGDATA=$data
    DEMO_DATA=$data
    run_as_pg psql -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE shipping" >/dev/null
    run_as_pg psql -X -q -v ON_ERROR_STOP=1 -d shipping -c "CREATE EXTENSION recoverable_msg" >/dev/null
}

stop_cluster() {
    run_as_pg pg_ctl -D "$DEMO_DATA" -m fast -w stop >/dev/null
}

# A crash: an immediate stop (no checkpoint, no clean shutdown), then a start,
# which recovers from the WAL.
crash_and_restart() {
    run_as_pg pg_ctl -D "$DEMO_DATA" -m immediate -w stop >/dev/null
    run_as_pg pg_ctl -D "$DEMO_DATA" -l "$WORK/server.log" -w start >/dev/null
}

# Runs the first part of the walk-through, demo.sql. psql reads it from our
# stdin so that the postgres user needs no access to the repository; -e
# prints each statement as sent to the server, ON_ERROR_STOP makes an
# unexpected error fatal.  DEMO_SERVER_LOG is for the restart in its crash.
run_walkthrough() {
    log "running $DEMO_SQL"
    if ! run_as_pg env DEMO_SERVER_LOG="$WORK/server.log" \
        psql -X -e -v ON_ERROR_STOP=1 -f - <"$DEMO_SQL"; then
        echo "---- last lines of the server log ----"
        tail -n 30 "$WORK/server.log"
        die "the walk-through stopped at an error"
    fi
}

# The committed interaction contract (README, "A worked example"): a caller
# 'shop' in database shop calls 'warehouse' and 'billing' in database
# callees with rmsg.call, through a foreign server.  The server crashes
# while the shop takes orders; the same CALL after the restart recovers
# it, and every call's work is done exactly once.
contract_demo() {
    local psql=(psql -X -v ON_ERROR_STOP=1 -P null='(null)')
    section "4. Committed interaction contract" \
        "A caller that keeps state between calls must survive a crash without sending a call twice, and" \
        "without forcing its log to disk before every call. Callees keep their last reply to it; it logs" \
        "their replies lazily, forces only before a callee would drop a reply its log may lack, and after" \
        "a crash replays from a checkpoint."
    echo "-- the shop (database shop, test/examples/contract_caller.sql) takes orders: for each it calls"
    echo "-- warehouse, then billing (database callees, test/examples/contract_callees.sql) with rmsg.call,"
    echo "-- through a foreign server 'callees' (it could be another machine)."
    run_as_pg "${psql[@]}" -q -c "CREATE DATABASE callees" -c "CREATE DATABASE shop"
    run_as_pg "${psql[@]}" -q -d callees -f - <"$ROOT/test/examples/contract_callees.sql" >/dev/null
    run_as_pg "${psql[@]}" -q -d shop <<SQL >/dev/null
CREATE EXTENSION postgres_fdw;
CREATE SERVER callees FOREIGN DATA WRAPPER postgres_fdw
  OPTIONS (dbname 'callees', host '$PGHOST', port '$PGPORT');
SELECT format('CREATE USER MAPPING FOR CURRENT_USER SERVER callees OPTIONS (user %L)', current_user) \gexec
SQL
    run_as_pg "${psql[@]}" -q -d shop -f - <"$ROOT/test/examples/contract_caller.sql"
    run_as_pg "${psql[@]}" -d shop -e <<SQL
\echo '-- five orders, ten calls, a checkpoint after every fifth order. Call ids number the shop''s calls'
\echo '-- from 1: order n is call 2n-1 to warehouse and call 2n to billing.'
CALL take_orders(5, 'callees');
SELECT caller, next_call_id, checkpoint_call_id, logged_calls, calls_without_reply FROM rmsg.callers;
SQL
    run_as_pg "${psql[@]}" -d callees -e <<'SQL'
\echo '-- each callee keeps its last reply to the shop:'
SELECT callee, caller, call_id, reply_bytes FROM rmsg.last_calls;
SQL
    echo "-- twenty orders, a tenth of a second apart; the server crashes a second in:"
    run_as_pg "${psql[@]}" -d shop -c "CALL take_orders(20, 'callees', 0.1)" >/dev/null 2>&1 &
    sleep 1
    log "pg_ctl stop -m immediate while the shop takes orders, then start"
    crash_and_restart
    wait || true
    run_as_pg "${psql[@]}" -d shop -e <<SQL
\echo '-- the shop''s log holds the calls since its last checkpoint (a checkpoint every fifth order). A'
\echo '-- reply the crash took shows as (null): that call will be sent again, and its callee answers from'
\echo '-- the reply it kept.'
SELECT caller, checkpoint_call_id FROM rmsg.callers;
SELECT call_id, callee, convert_from(request, 'UTF8') AS request,
       convert_from(reply, 'UTF8') AS reply FROM rmsg.replay('shop');
\echo '-- until the caller restarts, it may not call: its state in memory may be ahead of its log'
\echo '-- (expected error 55000):'
\set ON_ERROR_STOP 0
SELECT * FROM rmsg.prepare_call('shop', 'warehouse');
\set ON_ERROR_STOP 1
\echo '-- the same CALL recovers it: restart from the checkpoint, replay from the log, send the rest:'
CALL take_orders(20, 'callees');
SELECT caller, next_call_id, checkpoint_call_id, logged_calls, calls_without_reply FROM rmsg.callers;
\echo '-- calls counts the calls sent since the restart (replayed ones were answered from the log);'
\echo '-- stable says whether the callee''s last reply is on disk here (if not, the next call to it forces'
\echo '-- first). No forces: the callees share this server, and their flushed commits flushed the shop''s'
\echo '-- lazy writes too. forces_avoided counts the flushes of a caller that forces before every send.'
SELECT caller, callee, stable, calls, forces FROM rmsg.called_components;
SELECT forces, forces_avoided FROM rmsg.log_stats;
\echo '-- after a step replay cannot repeat (a clock read, a random number), a caller forces its log;'
\echo '-- force_log returns the WAL position it flushed:'
SELECT rmsg.force_log('shop') <= pg_current_wal_flush_lsn() AS on_disk;
SQL
    run_as_pg "${psql[@]}" -d callees -e <<'SQL'
\echo '-- every order reserved and charged exactly once, crash or not:'
SELECT on_hand, 100 - on_hand AS reserved FROM stock;
SELECT count(*) AS charges, count(DISTINCT call_id) AS distinct_calls FROM charges;
SQL
}

# Recovery-mode instances (README, "A worked example" under "Recovery-mode
# instances"): an order recovers while its customer keeps writing; the
# server crashes in the middle; after the restart the order is still in
# recovery with the deferred messages, and completing recovery releases
# them in the order they arrived.  Then receive_any, for a consumer of many
# conversations.
instance_demo() {
    local psql=(psql -X -v ON_ERROR_STOP=1 -P null='(null)')
    section "5. Recovery-mode instances" \
        "An instance governs one conversation, an order say. While it recovers (its state is behind, a" \
        "partner must resync), the normal messages that keep coming must be neither handled nor lost:" \
        "they wait in its line, and completing recovery releases them first, in order."
    echo "-- order-42's handler, handle_next, is in test/examples/order_conversation.sql: it applies one"
    echo "-- message to the order's state and acks it, in one transaction; drain calls it until none is left."
    run_as_pg "${psql[@]}" -q -c "CREATE DATABASE orders"
    run_as_pg "${psql[@]}" -q -d orders -f - <"$ROOT/test/examples/order_conversation.sql"
    run_as_pg "${psql[@]}" -d orders -e <<'SQL'
SELECT rmsg.create_instance('order-42', '{"status": "new", "paid": false}');
SELECT disposition FROM rmsg.deliver('order-42', 'placed');
CALL drain('order-42');
\echo '-- the payment provider reports a mismatch: the order must recover. The customer keeps writing:'
\echo '-- those messages are deferred.'
SELECT rmsg.begin_recovery('order-42');
SELECT disposition FROM rmsg.deliver('order-42', 'address changed');
SELECT disposition FROM rmsg.deliver('order-42', 'gift wrap');
SELECT instance, mode, ready, deferred, in_flight FROM rmsg.instances;
SQL
    log "pg_ctl stop -m immediate while order-42 recovers, then start"
    crash_and_restart
    run_as_pg "${psql[@]}" -d orders -e <<'SQL'
\echo '-- after the crash: still in recovery, its state and both deferred messages kept:'
SELECT instance, mode, ready, deferred, in_flight FROM rmsg.instances;
SELECT rmsg.load_state('order-42');
\echo '-- the provider''s answer, a recovery message: handling it completes recovery, and then the deferred'
\echo '-- messages are handled, in the order they arrived:'
SELECT disposition FROM rmsg.deliver('order-42', 'resync: paid', 'recovery');
CALL drain('order-42');
SELECT mode, kind, message, status FROM order_events ORDER BY seq;
SELECT instance, mode, ready, deferred, in_flight FROM rmsg.instances;
SELECT rmsg.load_state('order-42');
\echo '-- other instances never wait for one that recovers, and one consumer can serve them all:'
\echo '-- receive_any takes the next message of up to max instances, one each, in turn. order-42 recovers'
\echo '-- again, and its new message waits while order-43 and order-44 are served:'
SELECT rmsg.begin_recovery('order-42');
SELECT disposition FROM rmsg.deliver('order-42', 'returned');
SELECT rmsg.create_instance('order-43'), rmsg.create_instance('order-44');
SELECT disposition FROM rmsg.deliver('order-43', 'placed');
SELECT disposition FROM rmsg.deliver('order-43', 'paid');
SELECT disposition FROM rmsg.deliver('order-44', 'placed');
SELECT disposition FROM rmsg.deliver('order-44', 'cancelled');
CREATE TEMP TABLE took AS SELECT * FROM rmsg.receive_any(max => 10);
SELECT instance, convert_from(payload, 'UTF8') AS message, rmsg.ack(msg_id, receipt) AS acked
  FROM took ORDER BY instance;
DROP TABLE took;
CREATE TEMP TABLE took AS SELECT * FROM rmsg.receive_any(max => 10);
SELECT instance, convert_from(payload, 'UTF8') AS message, rmsg.ack(msg_id, receipt) AS acked
  FROM took ORDER BY instance;
SELECT instance, mode, ready, deferred, in_flight FROM rmsg.instances ORDER BY instance;
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

# The background worker (README, "Background worker"): the workers serve
# database shipping; they bill orders through a queue handler (one order
# fails until it is dead-lettered), handle an order conversation through an
# instance handler (nothing while it recovers, the deferred messages in
# order once the recovery message completes it), collect payloads, and
# leave the messages alone once the handlers are removed.
worker_demo() {
    local psql=(psql -X -v ON_ERROR_STOP=1 -P null='(null)')
    section "6. The background worker" \
        "Handlers, plain SQL functions subscribed to a queue or to instances, run inside the server: no" \
        "consumer process to run. Each message is handled in one transaction with its ack, so its work is" \
        "done exactly once; failures are retried with backoff, then dead-lettered."
    echo "-- the cluster runs 2 workers for database shipping (postgresql.conf: rmsg.worker_count = 2,"
    echo "-- rmsg.database = 'shipping', and, to keep the demo short, rmsg.worker_naptime = '1s' and"
    echo "-- rmsg.retry_delay = '200ms'); demo.sh created shipping with the extension at the start."
    echo "-- The handlers bill(bytea,jsonb) and on_order_event(text,bytea,text) are in"
    echo "-- test/examples/worker_handlers.sql, which subscribes bill to the queue billing."
    wait_for shipping "SELECT count(*) = 2 FROM rmsg.worker WHERE database = 'shipping' AND state = 'idle'"
    run_as_pg "${psql[@]}" -q -d shipping -f - <"$ROOT/test/examples/worker_handlers.sql" >/dev/null
    run_as_pg "${psql[@]}" -d shipping -e <<'SQL'
SELECT worker, pid IS NOT NULL AS running, state, database FROM rmsg.worker;
SELECT kind, target, handler, batch FROM rmsg.handlers;
\echo '-- three orders; the second has no amount, so its handler fails. (msg_ids start at 1 here: each'
\echo '-- database has its own sequence.)'
\set ECHO none
\set QUIET 1
CREATE TEMP TABLE puts_began AS SELECT clock_timestamp() AS at;
\set ECHO queries
\unset QUIET
SELECT rmsg.put('billing', '{"id": 1, "amount": 20}'::jsonb) AS msg_id;
SELECT rmsg.put('billing', '{"id": 2, "amount": 0}'::jsonb) AS msg_id;
SELECT rmsg.put('billing', '{"id": 3, "amount": 5}'::jsonb) AS msg_id;
\set ECHO none
\set QUIET 1
DO $$
BEGIN
    FOR i IN 1..3000 LOOP    -- 30 s at most
        EXIT WHEN EXISTS (SELECT FROM invoices WHERE order_id = 1);
        PERFORM pg_sleep(0.01);
    END LOOP;
    IF NOT EXISTS (SELECT FROM invoices WHERE order_id = 1) THEN
        RAISE EXCEPTION 'order 1 was not billed within 30 s';
    END IF;
    RAISE NOTICE 'order 1 was billed within % ms of its put: its commit woke a worker, which would otherwise have slept up to rmsg.worker_naptime',
        (SELECT ceil(extract(epoch FROM clock_timestamp() - at) * 1000) FROM puts_began);
END $$;
SQL
    wait_for shipping "SELECT ready = 1 FROM rmsg.queues WHERE queue = 'billing_dead'"
    run_as_pg "${psql[@]}" -d shipping -e <<'SQL'
\echo '-- orders 1 and 3 billed, each in the transaction that acked it. Order 2 failed three times (its'
\echo '-- queue''s max_deliveries; tried again after 200 ms, then after 400 ms) and went to billing_dead:'
SELECT order_id, amount FROM invoices ORDER BY order_id;
SELECT queue, ready, in_flight, delayed, dead FROM rmsg.queues ORDER BY queue;
SELECT kind, target, errors, last_error FROM rmsg.handlers;
SELECT worker, state, processed, errors, retried, dead_lettered, last_error FROM rmsg.worker;
\echo '-- an instance handler serves the orders (prefix order-): placed, then the provider reports a'
\echo '-- mismatch and the order recovers; the customer''s messages meanwhile are deferred:'
SELECT rmsg.create_instance('order-7', '{"status": "new", "paid": false}');
SELECT disposition FROM rmsg.deliver('order-7', 'placed');
SQL
    wait_for shipping "SELECT count(*) = 1 FROM order_events"
    run_as_pg "${psql[@]}" -d shipping -e <<'SQL'
SELECT rmsg.begin_recovery('order-7');
SELECT disposition FROM rmsg.deliver('order-7', 'address changed');
SELECT disposition FROM rmsg.deliver('order-7', 'gift wrap');
SELECT pg_sleep(0.5);
\echo '-- half a second later, the workers have left them alone:'
SELECT instance, mode, ready, deferred, in_flight FROM rmsg.instances;
\echo '-- the provider''s answer: its handler completes recovery, and the deferred messages follow:'
SELECT disposition FROM rmsg.deliver('order-7', 'resync: paid', 'recovery');
SQL
    wait_for shipping "SELECT count(*) = 4 FROM order_events"
    run_as_pg "${psql[@]}" -d shipping -e <<'SQL'
SELECT kind, message, status FROM order_events ORDER BY seq;
SELECT instance, mode, ready, deferred, in_flight FROM rmsg.instances;
SELECT rmsg.load_state('order-7');
\echo '-- worker 0 also runs the maintenance every rmsg.worker_naptime; among it, collect_payloads. A'
\echo '-- 5000-byte message, too large to live in its message row, is put, taken and acked:'
SELECT rmsg.create_queue('archive');
SELECT rmsg.put('archive', convert_to(repeat('x', 5000), 'UTF8')) AS msg_id;
SELECT rmsg.ack(msg_id) AS acked FROM rmsg.get('archive');
SELECT payload_rows FROM rmsg.log_stats;
SQL
    wait_for shipping "SELECT payload_rows = 0 FROM rmsg.log_stats"
    run_as_pg "${psql[@]}" -d shipping -e <<'SQL'
\echo '-- within a second its payload row is gone:'
SELECT payload_rows FROM rmsg.log_stats;
SELECT worker, processed, payloads_collected FROM rmsg.worker;
\echo '-- flow control: billing''s handler talks to a payment provider that takes 5 calls a second. With'
\echo '-- rate => 5 (and concurrency => 1: one call at a time across both workers), 10 orders put at once'
\echo '-- take about a second: 5 at once (a second''s burst), then 5 a second:'
SELECT rmsg.subscribe('billing', 'bill(bytea,jsonb)', concurrency => 1, rate => 5);
SELECT kind, target, handler, concurrency, rate FROM rmsg.handlers WHERE kind = 'queue';
\set ECHO none
\set QUIET 1
CREATE TEMP TABLE limited_began AS SELECT clock_timestamp() AS at;
DO $$
BEGIN
    PERFORM rmsg.put('billing', jsonb_build_object('id', i, 'amount', i))
       FROM generate_series(10, 19) i;
END $$;
DO $$
BEGIN
    FOR i IN 1..3000 LOOP    -- 30 s at most
        EXIT WHEN (SELECT count(*) FROM invoices WHERE order_id >= 10) = 10;
        PERFORM pg_sleep(0.01);
    END LOOP;
    RAISE NOTICE '% of the 10 orders billed, in % ms',
        (SELECT count(*) FROM invoices WHERE order_id >= 10),
        (SELECT ceil(extract(epoch FROM clock_timestamp() - at) * 1000) FROM limited_began);
END $$;
\set ECHO queries
\unset QUIET
\echo '-- unsubscribe and remove_handler take the handlers away; the messages then stay where they are:'
SELECT rmsg.unsubscribe('billing');
SELECT rmsg.remove_handler('order-');
SELECT count(*) AS handlers FROM rmsg.handlers;
SELECT rmsg.put('billing', '{"id": 4, "amount": 7}'::jsonb) AS msg_id;
SELECT disposition FROM rmsg.deliver('order-7', 'delivered');
SELECT pg_sleep(0.5);
SELECT queue, ready, in_flight FROM rmsg.queues WHERE queue = 'billing';
SELECT instance, mode, ready, in_flight FROM rmsg.instances;
SQL
}

# Between servers (README, "Between servers"): a remote queue in database
# shipping (the workers' database) whose messages worker 0 moves to a queue
# of database callees, through a foreign server.  Here both are on this
# server; the server could be another machine, as for rmsg.call above.
remote_demo() {
    local psql=(psql -X -v ON_ERROR_STOP=1 -P null='(null)')
    section "7. Between servers" \
        "A queue on another server: puts commit here, in the application's transaction, and the worker" \
        "moves the messages there exactly once and in order, whatever crashes or lost connections come" \
        "between: it numbers a batch (one flushed commit), the receiver keeps the last number with the" \
        "messages, and the sender forgets the batch once the receiver has it."
    run_as_pg "${psql[@]}" -q -d callees -c "SELECT rmsg.create_queue('shipments_in')" >/dev/null
    run_as_pg "${psql[@]}" -q -d shipping <<SQL >/dev/null
CREATE EXTENSION IF NOT EXISTS postgres_fdw;
CREATE SERVER warehouse_db FOREIGN DATA WRAPPER postgres_fdw
  OPTIONS (dbname 'callees', host '$PGHOST', port '$PGPORT');
SELECT format('CREATE USER MAPPING FOR CURRENT_USER SERVER warehouse_db OPTIONS (user %L)', current_user) \\gexec
SQL
    run_as_pg "${psql[@]}" -d shipping -e <<'SQL'
SELECT rmsg.create_remote_queue('shipments', 'warehouse_db', 'shipments_in');
SELECT rmsg.put('shipments', 'parcel ' || i) AS msg_id FROM generate_series(1, 3) i;
SQL
    wait_for shipping "SELECT pending = 0 AND in_transit = 0 AND last_acknowledged = 3 FROM rmsg.channels WHERE queue = 'shipments'"
    run_as_pg "${psql[@]}" -d shipping -e <<'SQL'
\echo '-- the worker moved them: sent and acknowledged by the receiver, nothing pending or in transit:'
SELECT server, queue, remote_queue, pending, in_transit, last_sent, last_acknowledged FROM rmsg.channels;
SQL
    run_as_pg "${psql[@]}" -d callees -e <<'SQL'
\echo '-- on the receiving side, ordinary messages, in put order; the channel keeps its last number:'
SELECT convert_from(payload, 'UTF8') AS payload, rmsg.ack(msg_id) AS acked FROM rmsg.get('shipments_in', 10);
SELECT last_seq FROM rmsg.channel_in;
SQL
    run_as_pg "${psql[@]}" -q -d callees -c "SELECT rmsg.create_queue('labels_in')" >/dev/null
    run_as_pg "${psql[@]}" -d shipping -e <<'SQL'
\echo '-- data the receiver already holds goes by reference: a 6 kB label put to two remote queues'
\echo '-- of one server crosses once, and the second message carries only its key:'
SELECT rmsg.create_remote_queue('labels', 'warehouse_db', 'labels_in');
SELECT count(*) AS messages
  FROM rmsg.put_many(ARRAY['shipments', 'labels'], convert_to(repeat('label ', 1000), 'UTF8'));
SQL
    wait_for shipping "SELECT bool_and(pending = 0 AND in_transit = 0) FROM rmsg.channels"
    run_as_pg "${psql[@]}" -d shipping -e <<'SQL'
SELECT queue, last_acknowledged, sent_by_reference FROM rmsg.channels ORDER BY queue;
SQL
    run_as_pg "${psql[@]}" -d callees -e <<'SQL'
\echo '-- on the receiving side, both messages reference one payload row:'
SELECT q.name AS queue, m.payload_size, m.payload_id
  FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) ORDER BY q.name;
SQL
}

main() {
    # shellcheck disable=SC2086  # a space-separated package list
    ensure_packages $DEMO_PACKAGES || die "could not install the required packages"
    init_pg_env
    BUILD_WERROR=0 build_and_install -j"$(nproc)" || die "build failed"
    make_workdir
    start_cluster
    run_walkthrough
    contract_demo
    instance_demo
    worker_demo
    remote_demo
    stop_cluster   # the EXIT trap stops it too, should anything above fail
    echo
    log "demo finished"
}

main "$@"
