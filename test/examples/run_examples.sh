#!/usr/bin/env bash
#
# Runs the examples of test/examples for real and checks what they did:
#
#   python/, node/  a producer puts RMSG_EXAMPLES_MESSAGES messages (3000)
#                   while three consumers take them with long polls and
#                   handle each in a work transaction that acks it with its
#                   receipt; a fourth consumer dies (SIGKILL) after its get
#                   and before its commit.  Checked: every message handled
#                   exactly once, the dead consumer's messages handled by the
#                   others once their leases ran out, the queue empty.
#   *.sql           the worked examples of the contract, of instances and of
#                   the background worker, one check each.
#
# Everything runs on one scratch cluster of its own (own data directory, free
# port, the library preloaded, one background worker for worker_handlers.sql),
# as the postgres OS user when started as root.  The extension must be
# installed (test/check.sh installs it, then runs this as its stage
# `examples`, in the background beside the other stages).  Prints "ok - ..."
# or "not ok - ..." per check and, as the last line, "N passed, N failed";
# exits non-zero when a check failed.
#
#   test/examples/run_examples.sh              run it
#   test/examples/run_examples.sh --packages   print the Debian packages it
#                                              needs that are missing
#
# RMSG_EXAMPLES_WORK names the work directory (check.sh puts it under its
# own); by default it is a new /tmp/rmsg-XXXXXX.  Either way it is removed,
# and its server stopped, at the end (RMSG_KEEP_WORK=1 keeps it).

set -euo pipefail

# shellcheck source=test/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

EXAMPLES=$ROOT/test/examples
# Debian's interpreter, for which python3-psycopg is installed: the first
# python3 on the PATH may be another one (pyenv's, a virtualenv's).
PYTHON=/usr/bin/python3
MESSAGES=${RMSG_EXAMPLES_MESSAGES:-3000}
CONSUMERS=3
# No client may hang the run: each is killed after this many seconds.
CLIENT_TIMEOUT=300

PASS=0
FAIL=0

# The packages the clients need and that are missing.  Node.js and npm are
# looked for as commands: they may come from elsewhere than Debian's
# packages (NodeSource's nodejs bundles its own npm, and Debian's npm
# package would not install beside it).
needed_packages() {
    local pkgs=()
    package_installed python3-psycopg || pkgs+=(python3-psycopg)
    command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
    command -v npm >/dev/null 2>&1 || pkgs+=(npm)
    echo "${pkgs[@]}"
}

# check DESCRIPTION COMMAND...: runs the command and counts its verdict.
check() {
    local what=$1
    shift
    if "$@"; then
        PASS=$((PASS + 1))
        echo "ok - $what"
    else
        FAIL=$((FAIL + 1))
        echo "not ok - $what"
    fi
}

# A failure that no command can show (a client that did not even start).
fail_check() {
    FAIL=$((FAIL + 1))
    echo "not ok - $1"
}

# psql as the superuser, on database $1, tuples only; the rest are psql's
# arguments.  SQL files go in through stdin: the postgres user need not be
# able to read the tree.
sql() {
    local db=$1
    shift
    run_as_pg psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"
}

# expect DB QUERY EXPECTED: true when the query prints EXPECTED; otherwise
# says what it printed.
expect() {
    local got
    got=$(sql "$1" -c "$2" 2>&1) || true
    [[ $got == "$3" ]] && return 0
    echo "  $2"
    echo "  gave: ${got//$'\n'/ / }"
    echo "  expected: $3"
    return 1
}

# wait_until DB QUERY SECONDS: polls until the query prints t.
wait_until() {
    local db=$1 query=$2 i
    for ((i = 0; i < $3 * 10; i++)); do
        [[ $(sql "$db" -c "$query" 2>/dev/null) == t ]] && return 0
        sleep 0.1
    done
    echo "  gave up after $3 s waiting for: $query"
    return 1
}

# Shows a file indented, for a failure's explanation.
show() {
    [[ -s $1 ]] || return 0
    echo "  ----- $1${2:+ (last $2 lines)}"
    if [[ -n ${2:-} ]]; then tail -n "$2" "$1"; else cat "$1"; fi | sed 's/^/  | /'
}

# The cluster: the library preloaded, one worker for worker_handlers.sql (it
# waits in database postgres, where the extension is not installed, until
# sql_examples sends it elsewhere).
start_cluster() {
    start_named_cluster examples "rmsg.worker_count = 1" "max_connections = 50"
    # shellcheck disable=SC2154  # set by start_named_cluster
    export PGHOST=$PGHOST_examples PGPORT=$PGPORT_examples
    log "cluster on port $PGPORT, socket in $PGHOST"
    # The applications' roles: a producer may put on the queue, a consumer
    # get from it; neither holds any right on the extension's tables.
    sql postgres -c "CREATE ROLE rmsg_producer LOGIN" -c "CREATE ROLE rmsg_consumer LOGIN"
}

# A database for one language's clients: queue jobs, the grants, and the
# application's table handled.
setup_client_db() {
    local db=$1
    sql postgres -c "CREATE DATABASE $db"
    sql "$db" >/dev/null <<'SQL'
CREATE EXTENSION recoverable_msg;
GRANT USAGE ON SCHEMA rmsg TO rmsg_producer, rmsg_consumer;
SELECT rmsg.create_queue('jobs');
SELECT rmsg.grant_queue('jobs', 'rmsg_producer', 'put');
SELECT rmsg.grant_queue('jobs', 'rmsg_consumer', 'get');
-- What the consumers did.  No unique key on purpose: a message handled
-- twice shows as two rows to count, rather than as an error that the
-- database raises instead of the check.
CREATE TABLE handled (
    msg_id      bigint NOT NULL,
    n           int NOT NULL,           -- the producer's number for it
    consumer    text NOT NULL,
    deliveries  int NOT NULL,
    handled_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
GRANT INSERT ON handled TO rmsg_consumer;
SQL
}

# client LANG ROLE DB PROGRAM ARGS...: runs producer or consumer of LANG as
# ROLE on DB, bounded in time.  Run in the background, its $! is timeout's
# (exec: no shell in between), which passes our SIGTERM on to the client.
client() {
    local lang=$1 role=$2 db=$3 program=$4
    shift 4
    case $lang in
        python) set -- "$PYTHON" "$EXAMPLES/python/$program.py" "$@" ;;
        node) set -- node "$NODE_DIR/$program.js" "$@" ;;
    esac
    PGUSER=$role PGDATABASE=$db exec timeout "$CLIENT_TIMEOUT" "$@"
}

# npm ci into a copy of node/ in the work directory, never into the tree.
install_node_client() {
    NODE_DIR=$WORK/node
    mkdir -p "$NODE_DIR"
    cp "$EXAMPLES"/node/package.json "$EXAMPLES"/node/package-lock.json \
        "$EXAMPLES"/node/*.js "$NODE_DIR"/
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error) >"$WORK/npm.log" 2>&1 || {
        show "$WORK/npm.log" 30
        return 1
    }
}

# Producer, consumers and the consumer that dies, for one language; then the
# checks.
run_clients() {
    local lang=$1 db=${1}_clients dir=$WORK/$1 i rc crasher producer
    local consumers=() rcs=() held
    mkdir -p "$dir"
    log "$lang: $MESSAGES messages, $CONSUMERS consumers, one more that dies before its commit"
    setup_client_db "$db"

    # The consumer that dies starts alone, so that the producer's first
    # batch wakes it and it holds messages when it dies.
    # A subshell waits for it and keeps its exit code, so that bash does not
    # report its SIGKILL ("Killed") on our output.
    (
        client "$lang" rmsg_consumer "$db" consumer jobs crasher --die-before-commit \
            >"$dir/crasher.out" 2>&1 &
        code=0
        wait $! || code=$?
        echo "$code" >"$dir/crasher.rc"
    ) 2>/dev/null &
    crasher=$!
    wait_until "$db" "SELECT count(*) = 1 FROM pg_stat_activity
                       WHERE datname = current_database() AND usename = 'rmsg_consumer'
                         AND query LIKE '%rmsg.get%'" 30 || true
    client "$lang" rmsg_producer "$db" producer jobs "$MESSAGES" 0.03 >"$dir/producer.out" 2>&1 &
    producer=$!
    wait "$crasher" || true
    rc=$(cat "$dir/crasher.rc" 2>/dev/null || echo "none")
    # Then the others, while the producer still puts.
    for ((i = 1; i <= CONSUMERS; i++)); do
        client "$lang" rmsg_consumer "$db" consumer jobs "c$i" >"$dir/c$i.out" 2>&1 &
        consumers+=($!)
    done

    check "$lang: the producer put $MESSAGES messages" \
        wait_and_grep "$producer" "$dir/producer.out" "put $MESSAGES messages"
    held=$(awk '/^held / { $1 = ""; print }' "$dir/crasher.out" | xargs)
    check "$lang: a consumer died (SIGKILL) holding messages in its uncommitted work" \
        died_holding "$rc" "$held" "$dir/crasher.out"

    # Drained: nothing ready, leased or delayed (the dead consumer's leases
    # run out after 5 s, then the others take its messages).
    check "$lang: the consumers drained the queue" \
        wait_until "$db" "SELECT ready + in_flight + delayed + dead = 0 FROM rmsg.queues WHERE queue = 'jobs'" 120
    for i in "${!consumers[@]}"; do
        kill -TERM "${consumers[$i]}" 2>/dev/null || true
    done
    for i in "${!consumers[@]}"; do
        rc=0
        wait "${consumers[$i]}" || rc=$?
        rcs+=("$rc")
    done
    check "$lang: the consumers stopped cleanly on SIGTERM (exit codes ${rcs[*]})" \
        all_zero "${rcs[@]}"
    for ((i = 1; i <= CONSUMERS; i++)); do
        if grep -q 'handled' "$dir/c$i.out"; then
            sed 's/^/  /' "$dir/c$i.out"
        else
            show "$dir/c$i.out"
        fi
    done

    check "$lang: no message missing" \
        expect "$db" "SELECT count(DISTINCT n), min(n), max(n) FROM handled" "$MESSAGES|1|$MESSAGES"
    check "$lang: no message handled twice" \
        expect "$db" "SELECT count(*) - count(DISTINCT n), count(*) - count(DISTINCT msg_id) FROM handled" "0|0"
    check "$lang: the dead consumer's messages were handled once each by the others, redelivered" \
        expect "$db" "SELECT count(*), count(DISTINCT msg_id),
                             count(*) FILTER (WHERE consumer <> 'crasher' AND deliveries >= 2)
                        FROM handled WHERE msg_id = ANY ('{${held// /,}}'::bigint[])" \
        "$(wc -w <<<"$held")|$(wc -w <<<"$held")|$(wc -w <<<"$held")"
    check "$lang: the queue is empty and no lease is left" \
        expect "$db" "SELECT ready, in_flight, delayed, dead FROM rmsg.queues WHERE queue = 'jobs'" "0|0|0|0"
}

# wait_and_grep PID FILE TEXT: the process ended well and said TEXT.
wait_and_grep() {
    local rc=0
    wait "$1" || rc=$?
    if [[ $rc -eq 0 ]] && grep -qF "$3" "$2"; then
        sed 's/^/  /' "$2"
        return 0
    fi
    echo "  exit code $rc"
    show "$2"
    return 1
}

# died_holding RC HELD FILE: the consumer that dies was killed by SIGKILL
# (128 + 9) after printing the msg_ids it held.
died_holding() {
    [[ $1 == 137 && -n $2 ]] && return 0
    echo "  exit code $1, held: ${2:-nothing}"
    show "$3"
    return 1
}

all_zero() {
    local rc
    for rc in "$@"; do
        [[ $rc -eq 0 ]] || return 1
    done
}

# The SQL examples, as test/demo.sh runs them (without its crashes): one
# check each.
sql_examples() {
    log "SQL examples"
    sql postgres -c "CREATE DATABASE callees" -c "CREATE DATABASE shop" \
        -c "CREATE DATABASE orders" -c "CREATE DATABASE handlers"
    check "contract_callees.sql: a call delivered twice is worked once, answered alike" \
        callees_example
    check "contract_caller.sql: 5 orders, then on to 12 from the checkpoint, each reserved and charged once" \
        caller_example
    check "order_conversation.sql: messages deferred by recovery follow the recovery message, in order" \
        conversation_example
    check "worker_handlers.sql: the worker bills orders, dead-letters the bad one, handles an instance" \
        worker_example
}

# run_sql DB NAME: runs the SQL on stdin (test/examples/NAME, or statements
# for it) in DB; shows its output when it fails.
run_sql() {
    local out=$WORK/$2.out
    sql "$1" >>"$out" 2>&1 && return 0
    echo "  $2 failed"
    show "$out"
    return 1
}

callees_example() {
    local call="SELECT convert_from(handle('billing', 'probe', 1, 'order 1'), 'UTF8')"
    run_sql callees contract_callees.sql <"$EXAMPLES/contract_callees.sql" &&
        expect callees "$call" "charged 12 for order 1" &&
        expect callees "$call" "charged 12 for order 1" &&
        expect callees "SELECT count(*) FROM charges WHERE caller = 'probe'" 1
}

# Five orders, then the same procedure up to twelve: it restarts from its
# checkpoint after the fifth and sends only the calls of orders 6 to 12.
# Uses the callees of callees_example, through a foreign server.
caller_example() {
    run_sql shop contract_caller.sql <<SQL &&
CREATE EXTENSION postgres_fdw;
CREATE SERVER callees FOREIGN DATA WRAPPER postgres_fdw
  OPTIONS (dbname 'callees', host '$PGHOST', port '$PGPORT');
SELECT format('CREATE USER MAPPING FOR CURRENT_USER SERVER callees OPTIONS (user %L)', current_user) \gexec
SQL
    run_sql shop contract_caller.sql <"$EXAMPLES/contract_caller.sql" &&
        run_sql shop contract_caller.sql <<<"CALL take_orders(5, 'callees');
                                             CALL take_orders(12, 'callees');" &&
        expect callees "SELECT (SELECT on_hand FROM stock), count(*), count(DISTINCT call_id)
                          FROM charges WHERE caller = 'shop'" "88|12|12"
}

# An order recovers: messages that arrive meanwhile wait, and completing
# recovery releases them in the order they came.
conversation_example() {
    run_sql orders order_conversation.sql <"$EXAMPLES/order_conversation.sql" &&
        run_sql orders order_conversation.sql <<'SQL' &&
SELECT rmsg.create_instance('order-42', '{"status": "new", "paid": false}');
SELECT * FROM rmsg.deliver('order-42', 'placed');
CALL drain('order-42');
SELECT rmsg.begin_recovery('order-42');
SELECT * FROM rmsg.deliver('order-42', 'address changed');
SELECT * FROM rmsg.deliver('order-42', 'gift wrap');
CALL drain('order-42');     -- hands out nothing: both are deferred
SELECT * FROM rmsg.deliver('order-42', 'resync: paid', 'recovery');
CALL drain('order-42');
SQL
        expect orders "SELECT string_agg(kind || ':' || message, ', ' ORDER BY seq) FROM order_events" \
            "normal:placed, recovery:resync: paid, normal:address changed, normal:gift wrap" &&
        expect orders "SELECT mode, rmsg.load_state(instance) FROM rmsg.instances" \
            'normal|{"paid": true, "status": "gift wrap"}'
}

# worker_handlers.sql: the worker moves to database handlers on a reload, as
# in test/demo.sh, bills orders 1 and 3, dead-letters order 2 after three
# tries, and handles an order conversation's message.
worker_example() {
    run_sql handlers worker_handlers.sql <<<"CREATE EXTENSION recoverable_msg;" &&
        run_sql postgres worker_handlers.sql <<'SQL' &&
ALTER SYSTEM SET rmsg.database = 'handlers';
ALTER SYSTEM SET rmsg.worker_naptime = '1s';
ALTER SYSTEM SET rmsg.retry_delay = '200ms';
SELECT pg_reload_conf();
SQL
        wait_until handlers "SELECT count(*) = 1 FROM rmsg.worker
                              WHERE database = 'handlers' AND state = 'idle'" 30 &&
        run_sql handlers worker_handlers.sql <"$EXAMPLES/worker_handlers.sql" &&
        run_sql handlers worker_handlers.sql <<'SQL' &&
SELECT rmsg.put('billing', '{"id": 1, "amount": 20}'::jsonb);
SELECT rmsg.put('billing', '{"id": 2, "amount": 0}'::jsonb);
SELECT rmsg.put('billing', '{"id": 3, "amount": 5}'::jsonb);
SELECT rmsg.create_instance('order-7', '{"status": "new", "paid": false}');
SELECT * FROM rmsg.deliver('order-7', 'placed');
SQL
        wait_until handlers "SELECT ready = 1 FROM rmsg.queues WHERE queue = 'billing_dead'" 30 &&
        wait_until handlers "SELECT count(*) = 1 FROM order_events" 30 &&
        expect handlers "SELECT string_agg(order_id::text, ',' ORDER BY order_id) FROM invoices" "1,3" &&
        expect handlers "SELECT kind, message, status FROM order_events" "normal|placed|placed"
}

main() {
    if [[ ${1:-} == --packages ]]; then
        needed_packages
        return
    fi
    # shellcheck disable=SC2046  # a word list
    ensure_packages $(needed_packages) || die "could not install the packages the examples need"
    init_pg_env
    [[ -f $("$PG_CONFIG" --sharedir)/extension/recoverable_msg.control ]] ||
        die "recoverable_msg is not installed (test/check.sh installs it)"
    if [[ -n ${RMSG_EXAMPLES_WORK:-} ]]; then
        WORK=$RMSG_EXAMPLES_WORK
        mkdir -p "$WORK"
        chmod 755 "$WORK"
        give_to_pg "$WORK"
        trap cleanup_workdir EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM
    else
        make_workdir
    fi
    start_cluster
    run_clients python
    if install_node_client; then
        check "node: npm ci installed pg" true
        run_clients node
    else
        fail_check "node: npm ci installed pg (the node clients did not run)"
    fi
    sql_examples
    if ((FAIL > 0)); then
        show "$WORK/examples-server.log" 40
    fi
    echo "$PASS passed, $FAIL failed"
    ((FAIL == 0))
}

main "$@"
