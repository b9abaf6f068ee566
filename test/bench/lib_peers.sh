# shellcheck shell=bash
#
# What the benchmarks that run recoverable_msg beside its peers share
# (test/bench/queue.sh and test/bench/held_xmin.sh): PGMQ installed for the
# run, PgQ's ticker, the same 1 KiB payload in each system's type, and the
# waits that make the statistics read after a pgbench run complete.
# Source it after test/lib/common.sh; it uses init_pg_env's PG_CONFIG and
# make_workdir's WORK.
#
# Sourcing this file defines:
#   install_pgmq                  PGMQ 1.5.1 into the server's extension directory
#   start_pgqd, stop_pgqd         PgQ's ticker for the bench cluster
#   cleanup_with_peers            the EXIT trap: pgqd, the work directory
#                                 (cleanup_workdir), the PGMQ files placed
#   create_payload_functions      bench_payload(), bench_text(), bench_json()
#   wait_for_clients_gone [APP]   until the sessions of application APP have ended
#   settled_wal_sync              pg_stat_wal.wal_sync once it has stopped moving

# Where PGMQ's control file and script are: a directory beside the
# repository, never inside it.
PGMQ_DIR=${PGMQ_DIR:-$ROOT/../shared/anchors/pgmq}

# PGMQ is a pure SQL extension: its control file and script go into the
# server's extension directory for the run, and out again at exit if this
# run put them there.  They are never copied into the repository.  A
# different PGMQ found there is left alone: the run stops instead.  A run
# that finds the same files there (another benchmark's, or queue.sh's when
# it runs held_xmin.sh) uses them and leaves them to their owner.
PGMQ_PLACED=()
install_pgmq() {
    local dir f
    dir=$("$PG_CONFIG" --sharedir)/extension
    for f in pgmq.control pgmq--1.5.1.sql; do
        [[ -f $PGMQ_DIR/$f ]] || die "$PGMQ_DIR/$f not found (set PGMQ_DIR)"
        if [[ -e $dir/$f ]]; then
            cmp -s "$PGMQ_DIR/$f" "$dir/$f" || die "$dir/$f exists and differs from $PGMQ_DIR/$f"
        else
            PGMQ_PLACED+=("$dir/$f")
            as_root install -m 644 "$PGMQ_DIR/$f" "$dir/$f"
        fi
    done
}

# pgqd ticks every database with PgQ installed; it looks for them when it
# starts, so it starts after CREATE EXTENSION pgq.  Its connection string
# is the bench cluster's (PGHOST and PGPORT of start_bench_cluster).
start_pgqd() {
    cat >"$WORK/pgqd.ini" <<INI
[pgqd]
base_connstr = host=$PGHOST port=$PGPORT user=postgres
initial_database = postgres
database_list = postgres
logfile = $WORK/pgqd.log
pidfile = $WORK/pgqd.pid
INI
    give_to_pg "$WORK/pgqd.ini"
    run_as_pg pgqd -q -d "$WORK/pgqd.ini"
}

# Stops the pgqd this run started (the one of its pid file), if any.
stop_pgqd() {
    local pid
    [[ -f ${WORK:-}/pgqd.pid ]] || return 0
    pid=$(cat "$WORK/pgqd.pid" 2>/dev/null) || return 0
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
}

# At exit: pgqd first (it would keep trying to reconnect to the stopped
# server), then the work directory and its server, then the PGMQ files
# this run placed.
cleanup_with_peers() {
    stop_pgqd
    cleanup_workdir
    if ((${#PGMQ_PLACED[@]} > 0)); then
        as_root rm -f "${PGMQ_PLACED[@]}"
    fi
}

# Each system gets the same PAYLOAD_BYTES (default 1024) in the type it
# takes: bytea for rmsg, text for PgQ, jsonb for PGMQ.  IMMUTABLE, so a
# prepared statement computes its payload once.
create_payload_functions() {
    local bytes=${PAYLOAD_BYTES:-1024}
    # {"p": "..."}: 8 bytes around the string, so the jsonb's text is
    # PAYLOAD_BYTES long too.
    run_as_pg psql -X -q -v ON_ERROR_STOP=1 -At <<SQL
CREATE FUNCTION bench_payload() RETURNS bytea IMMUTABLE LANGUAGE sql
    AS \$\$ SELECT convert_to(repeat('x', $bytes), 'UTF8') \$\$;
CREATE FUNCTION bench_text() RETURNS text IMMUTABLE LANGUAGE sql
    AS \$\$ SELECT repeat('x', $bytes) \$\$;
CREATE FUNCTION bench_json() RETURNS jsonb IMMUTABLE LANGUAGE sql
    AS \$\$ SELECT jsonb_build_object('p', repeat('x', $((bytes - 8)))) \$\$;
SQL
}

# A backend reports its statistics as it exits (before it leaves
# pg_stat_activity), which may be a moment after its client is done: once
# the sessions of application APP (default pgbench) are gone, what they
# did is in pg_stat_user_tables and pg_stat_wal.
wait_for_clients_gone() {
    local app=${1:-pgbench} i
    for ((i = 0; i < 100; i++)); do
        [[ $(run_as_pg psql -X -At -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = '$app'") == 0 ]] &&
            return 0
        sleep 0.05
    done
    printf 'WARNING: %s backends still there 5 s after their client ended\n' "$app"
}

# pg_stat_wal.wal_sync once two reads a quarter second apart agree (the
# walwriter reports its own syncs a little later than the backends).
settled_wal_sync() {
    local stats prev="" i
    for ((i = 0; i < 20; i++)); do
        stats=$(run_as_pg psql -X -At -c "SELECT wal_sync FROM pg_stat_wal")
        [[ $stats == "$prev" ]] && break
        prev=$stats
        sleep 0.25
    done
    echo "$stats"
}
