# shellcheck shell=bash
#
# Shared helpers for test/check.sh and test/demo.sh.
#
# Sourcing this file sets ROOT (the repository) and defines:
#   ensure_packages [EXTRA_PKG...]   install what a fresh Debian 12 lacks
#   init_pg_env                      PG_CONFIG, BINDIR, PGXS_SRC, PG_REGRESS, PATH
#   make_workdir                     WORK: private scratch dir, cleaned (and its
#                                    servers stopped) when the script exits
#   free_port                        print a TCP port nobody listens on
#   run_as_pg CMD...                 run CMD as the postgres OS user when root
#   build_and_install [MAKE_ARG...]  clean, build (-Werror by default), install,
#                                    quietly: make's output only on failure
#   start_bench_cluster, start_named_cluster: scratch servers for benchmarks
#
# Everything a run creates (data directories, sockets, logs, copies of the
# source tree) lives under WORK, so runs never touch the Debian default
# cluster nor each other.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PG_MAJOR=15
# RMSG_PG_CONFIG points the scripts at another build of PostgreSQL 15, such
# as one configured with --enable-cassert for a run with assertions.
PG_CONFIG=${RMSG_PG_CONFIG:-/usr/lib/postgresql/$PG_MAJOR/bin/pg_config}
# pgbouncer: test/t/014_security_pooler.pl runs the extension behind a real
# pooler in transaction mode (it starts its own; the package's service is
# not used).
# prometheus-postgres-exporter: test/t/024_metrics.pl scrapes a real one
# running the extension's queries (it starts its own; the package's service
# is not used).
BASE_PACKAGES=("postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" libipc-run-perl make gcc pgbouncer
               prometheus-postgres-exporter)

# A UTF8 database and stable messages whatever the caller's locale is;
# C.UTF-8 ships with Debian's libc, so it never needs generating.
export LANG=C.UTF-8 LC_ALL=C.UTF-8
unset LANGUAGE

log() { printf '==> %s\n' "$*"; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

is_root() { [[ $(id -u) -eq 0 ]]; }

# Prefix for commands that need root (apt-get, make install).
as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        printf 'ERROR: need root or sudo to run: %s\n' "$*" >&2
        return 1
    fi
}

package_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

# Installs the packages the build and the tests need, plus any given as
# arguments, touching apt only when something is actually missing.
ensure_packages() {
    local pkg missing=()
    for pkg in "${BASE_PACKAGES[@]}" "$@"; do
        package_installed "$pkg" || missing+=("$pkg")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi
    if ! is_root && ! command -v sudo >/dev/null 2>&1; then
        printf 'ERROR: missing packages (%s) and neither root nor sudo\n' "${missing[*]}" >&2
        return 1
    fi
    log "installing ${missing[*]}"
    # The postgresql-15 postinst may create and start the default cluster on
    # port 5432, and pgbouncer's its service on port 6432; nothing here uses
    # them, every run starts its own servers and poolers.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null || return 1
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null || return 1
}

# Paths of the PostgreSQL installation; call after ensure_packages.
init_pg_env() {
    [[ -x $PG_CONFIG ]] || die "$PG_CONFIG not found (is postgresql-server-dev-$PG_MAJOR installed?)"
    BINDIR=$("$PG_CONFIG" --bindir)
    # pgxs.mk lives in .../pgxs/src/makefiles; the test drivers beside it.
    PGXS_SRC=$(cd "$(dirname "$("$PG_CONFIG" --pgxs)")/.." && pwd)
    # shellcheck disable=SC2034  # used by check.sh
    PG_REGRESS=$PGXS_SRC/test/regress/pg_regress
    # shellcheck disable=SC2034
    PG_ISOLATION_REGRESS=$PGXS_SRC/test/isolation/pg_isolation_regress
    PATH=$BINDIR:$PATH
    export PATH PG_CONFIG BINDIR
}

# Environment handed across run_as_pg: the server, the test drivers and the
# TAP framework read these.
PG_ENV_VARS=(PATH LANG LC_ALL PGHOST PGPORT PGDATA PGUSER PGDATABASE TESTDIR PG_REGRESS
             PG_TEST_EXTRA PG_TEST_TIMEOUT_DEFAULT PG_TEST_NOCLEAN PROVE_FLAGS TMPDIR)

# Runs a command as the postgres OS user when we are root (initdb and the
# server refuse to run as root); otherwise runs it as ourselves.
run_as_pg() {
    if ! is_root; then
        "$@"
        return
    fi
    local var envs=()
    for var in "${PG_ENV_VARS[@]}"; do
        [[ -n ${!var+set} ]] && envs+=("$var=${!var}")
    done
    runuser -u postgres -- env "${envs[@]}" "$@"
}

# Gives the postgres user a path when we are root (the server, pg_regress
# and prove write under it); a no-op otherwise.
give_to_pg() {
    if is_root; then
        chown -R postgres: "$@"
    fi
}

# Stops every server whose data directory is under WORK, then removes WORK.
# Runs from the EXIT trap, so it must be quiet: the caller's last line of
# output (check.sh's total) has to stay the last one.
cleanup_workdir() {
    local pidfile
    if [[ -n ${WORK:-} && -d $WORK ]]; then
        while IFS= read -r pidfile; do
            run_as_pg "$BINDIR/pg_ctl" -D "$(dirname "$pidfile")" -m immediate -w stop \
                >/dev/null 2>&1 || true
        done < <(find "$WORK" -name postmaster.pid -type f 2>/dev/null)
        if [[ -n ${RMSG_KEEP_WORK:-} ]]; then
            printf 'kept work directory %s\n' "$WORK" >&2
        else
            rm -rf "$WORK"
        fi
    fi
}

# Creates WORK and arranges its cleanup at exit, including on Ctrl-C and
# SIGTERM (turned into an exit so the EXIT trap runs once).
make_workdir() {
    WORK=$(mktemp -d /tmp/rmsg-XXXXXX)
    chmod 755 "$WORK"
    give_to_pg "$WORK"
    trap cleanup_workdir EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    export WORK
}

# Starts a benchmark's one server, cluster "bench" of start_named_cluster,
# and points PGHOST/PGPORT/PGDATABASE at it.  Each argument is one more
# postgresql.conf line.  cleanup_workdir stops it.
start_bench_cluster() {
    start_named_cluster bench "$@"
    # shellcheck disable=SC2154  # set by start_named_cluster
    export PGHOST=$PGHOST_bench PGPORT=$PGPORT_bench PGDATABASE=postgres
}

# Starts cluster NAME in WORK/NAME_data, with its socket in a directory of
# its own (WORK/NAME_sock, so two servers never share a socket path even on
# the same port number), logs in WORK/NAME-initdb.log and WORK/NAME-server.log,
# the library preloaded and no background worker (its maintenance would run
# in the middle of a measurement; pass "rmsg.worker_count = N" to have
# some).  Each argument after NAME is one more postgresql.conf line.  Sets
# PGHOST_NAME and PGPORT_NAME (NAME must be a valid shell identifier) and
# leaves PGHOST, PGPORT and PGDATABASE alone:
# the script points each command at its server.  cleanup_workdir stops it.
start_named_cluster() {
    local name=$1 data sock port line
    shift
    [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "cluster name '$name' is not a shell identifier"
    data=$WORK/${name}_data
    sock=$WORK/${name}_sock
    port=$(free_port)
    mkdir -p "$sock"
    give_to_pg "$sock"
    run_as_pg initdb -D "$data" -A trust >"$WORK/$name-initdb.log" 2>&1 ||
        { cat "$WORK/$name-initdb.log"; die "initdb failed for cluster $name"; }
    {
        printf '%s\n' "port = $port" "listen_addresses = ''" "unix_socket_directories = '$sock'" \
            "shared_preload_libraries = 'recoverable_msg'" "rmsg.worker_count = 0"
        for line in "$@"; do printf '%s\n' "$line"; done
    } >>"$data/postgresql.conf"
    run_as_pg pg_ctl -D "$data" -l "$WORK/$name-server.log" -w start >/dev/null ||
        { cat "$WORK/$name-server.log"; die "the server of cluster $name did not start"; }
    printf -v "PGHOST_$name" '%s' "$sock"
    printf -v "PGPORT_$name" '%s' "$port"
}

# True when something listens on TCP port $1 or a PostgreSQL socket lock for it
# exists in /tmp (a unix-socket-only server there would clash by name).
port_in_use() {
    local port=$1
    [[ -e /tmp/.s.PGSQL.$port.lock ]] && return 0
    if command -v ss >/dev/null 2>&1; then
        ss -Hltn "sport = :$port" 2>/dev/null | grep -q . && return 0
    fi
    # Fallback (and double check) when iproute2 is absent: try to connect.
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    return 1
}

# Prints a free port, never the same twice in one script even before the
# server that will use it has started. Starts from a random point in
# 20000-39999 so parallel runs on one machine rarely probe the same ports.
RMSG_PORTS_TAKEN=" "
free_port() {
    local port tries
    port=$((20000 + RANDOM % 20000))
    for ((tries = 0; tries < 2000; tries++)); do
        if [[ $RMSG_PORTS_TAKEN != *" $port "* ]] && ! port_in_use "$port"; then
            RMSG_PORTS_TAKEN+="$port "
            echo "$port"
            return 0
        fi
        port=$((port + 1))
        ((port < 40000)) || port=20000
    done
    echo "no free port found" >&2
    return 1
}

# Builds from scratch and installs the extension, quietly: make's output goes
# to a log file that is printed (on stderr) only when the build or the
# install fails, so a good build is the one line "==> building and
# installing ... ok".  COPT=-Werror turns warnings into errors unless
# BUILD_WERROR=0.  Written without relying on `set -e`, which bash ignores
# inside a function called from an `if`.  Arguments go to make (demo.sh
# passes -j).
# shellcheck disable=SC2120
build_and_install() {
    local copt=() build_log status=0
    [[ ${BUILD_WERROR:-1} == 1 ]] && copt=(COPT=-Werror)
    build_log=$(mktemp /tmp/rmsg-build-XXXXXX.log) || return 1
    printf '==> building and installing %s ... ' "$ROOT"
    {
        make -C "$ROOT" PG_CONFIG="$PG_CONFIG" clean >/dev/null &&
            make -C "$ROOT" PG_CONFIG="$PG_CONFIG" "${copt[@]}" "$@" &&
            as_root make -C "$ROOT" PG_CONFIG="$PG_CONFIG" "$@" install
    } >"$build_log" 2>&1 || status=1
    if ((status == 0)); then
        echo ok
    else
        echo failed
        {
            echo "---- make's output ----"
            cat "$build_log"
            echo "---- end of make's output ----"
        } >&2
    fi
    rm -f "$build_log"
    return "$status"
}

# A benchmark's build: unless BUILD=0, builds and installs the extension
# (warnings allowed), its output in /tmp/rmsg-NAME-build.log, shown if the
# build fails.
bench_build() {
    local log=/tmp/rmsg-$1-build.log
    [[ ${BUILD:-1} == 1 ]] || return 0
    # shellcheck disable=SC2119  # it takes make's arguments, none needed here
    BUILD_WERROR=0 build_and_install >"$log" 2>&1 || { cat "$log"; die "build failed"; }
}

# bench_setup NAME [PACKAGE...]: a benchmark's start: the packages it needs
# besides ours, its build (bench_build NAME), its work directory, and there
# results/ (written by the postgres user too) and scripts/.
bench_setup() {
    local name=$1
    shift
    ensure_packages "$@" || die "could not install the packages the benchmark needs"
    init_pg_env
    bench_build "$name"
    make_workdir
    mkdir -p "$WORK/results" "$WORK/scripts"
    give_to_pg "$WORK/results"
}

# Benchmarks' arithmetic.  Each keeps one results file per case in
# WORK/results, one line per round, its figures in columns.
# median: the median of the numbers on stdin ("nan" when there are none).
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit } m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m }'; }
# column_median CASE N: the median over the rounds of column N.
column_median() { awk -v c="$2" '{ print $c }' "$WORK/results/$1" | median; }
# ratio_of A B: A / B to two decimals (0 when B is 0).
ratio_of() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
# paired A B: the ratio of case A's first column to case B's within each
# round (the two ran close together); prints "median  (round by round)".
paired() {
    paste <(awk '{ print $1 }' "$WORK/results/$1") <(awk '{ print $1 }' "$WORK/results/$2") |
        awk '{ printf "%.2f\n", ($2 > 0 ? $1 / $2 : 0) }' >"$WORK/results/$1.$2.paired"
    printf '%sx  (%s)' "$(median <"$WORK/results/$1.$2.paired" | xargs printf '%.2f')" \
        "$(tr '\n' ' ' <"$WORK/results/$1.$2.paired" | sed 's/ $//')"
}

# run_rounds N CASE...: N rounds of the cases, each through the caller's
# run_case NAME, in reverse order every other round, so that drift over
# the run does not favour a case.
run_rounds() {
    local rounds=$1 round name order
    shift
    for round in $(seq 1 "$rounds"); do
        log "round $round"
        order=("$@")
        if ((round % 2 == 0)); then
            mapfile -t order < <(printf '%s\n' "$@" | tac)
        fi
        for name in "${order[@]}"; do
            run_case "$name"
        done
    done
}

# Prints a Makefile variable (through its print-% target) of the tree at $1.
make_var() {
    make -s -C "$1" PG_CONFIG="$PG_CONFIG" "print-$2"
}
