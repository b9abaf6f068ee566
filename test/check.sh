#!/usr/bin/env bash
#
# The whole test suite: builds recoverable_msg with warnings as errors,
# installs it, then runs the three layers named in the Makefile
#   regress    REGRESS     sql/*.sql vs expected/*.out      (pg_regress)
#   isolation  ISOLATION   test/specs/*.spec                (pg_isolation_regress)
#   tap        PROVE_TESTS test/t/*.pl                       (prove)
# and the examples (test/examples/run_examples.sh: the Python and Node.js
# clients and the SQL examples, run in the background beside the others),
# each against servers of its own, in a private work directory and on free
# ports. Prints one line per layer and, as the very last line,
#   N passed, N failed
# (pg_regress tests and isolation specs count one each, TAP assertions one
# each, the examples' checks one each). Exits non-zero when anything failed,
# the build included.
#
# Works as root (servers then run as the postgres OS user) or as a sudo user,
# with no terminal: this is what CI runs through .ci/run.

# Functions here take their own arguments, not the script's, and some are
# only called through run_logged:
# shellcheck disable=SC2119,SC2317

set -euo pipefail

# shellcheck source=test/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

PASSED=0
FAILED=0
STAGE_LINES=()

# Records one layer's figures.
record() {
    local stage=$1 pass=$2 fail=$3
    PASSED=$((PASSED + pass))
    FAILED=$((FAILED + fail))
    STAGE_LINES+=("$stage: $pass passed, $fail failed")
    log "$stage: $pass passed, $fail failed"
}

record_skip() {
    STAGE_LINES+=("$1: skipped ($2)")
    log "$1: skipped ($2)"
}

# Prints the closing summary and exits with the suite's verdict.
finish() {
    local line
    echo
    echo "== summary =="
    for line in "${STAGE_LINES[@]}"; do
        echo "$line"
    done
    if ((PASSED + FAILED == 0)); then
        # A suite that ran nothing has checked nothing: not a pass.
        echo "no test ran: counted as one failure"
        FAILED=1
    fi
    echo "$PASSED passed, $FAILED failed"
    if ((FAILED > 0)); then
        exit 1
    fi
    exit 0
}

# Shows a non-empty file (or its last $2 lines) under a banner, for CI logs.
show_file() {
    local file=${1//\/.\//\/} lines=${2:-}
    [[ -s $file ]] || return 0
    echo "----- $file${lines:+ (last $lines lines)} -----"
    if [[ -n $lines ]]; then tail -n "$lines" "$file"; else cat "$file"; fi
    echo "----- end of $file -----"
}

# Writes the server settings every test instance gets.
write_temp_config() {
    local lib
    lib=$(make_var "$COPY" MODULE_big)
    cat >"$WORK/rmsg.conf" <<EOF
shared_preload_libraries = '${lib:-recoverable_msg}'
max_prepared_transactions = 10
log_min_messages = warning
EOF
    give_to_pg "$WORK/rmsg.conf"
}

# pg_regress and prove write results into the tree they run in, and as root
# the server runs as postgres: so the tests run in a copy owned by postgres.
copy_tree() {
    COPY=$WORK/tree
    mkdir -p "$COPY"
    tar -C "$ROOT" --exclude=./.git --exclude=./results --exclude=./output_iso \
        --exclude=./tmp_check -cf - . | tar -C "$COPY" -xf -
    give_to_pg "$COPY"
}

# Runs a command in the copy of the tree.
run_in_copy() {
    cd "$COPY" && "$@"
}

# Runs a command with its output shown and saved in file $1; returns its
# status. The command runs as a background job that we wait for, because
# bash delays a trapped signal (Ctrl-C, a CI timeout's SIGTERM) until a
# foreground command ends, while `wait` returns at once: the EXIT trap then
# stops the servers, which ends the test drivers too.
run_logged() {
    local out=$1
    shift
    (set -o pipefail; "$@" 2>&1 | tee "$out") &
    wait $!
}

# Reads pg_regress's closing lines ("All 5 tests passed.", "2 of 5 tests
# failed.", "4 of 5 tests passed, 1 failed test(s) ignored.") from output
# file $1 and prints "PASS FAIL"; prints nothing when there is no summary
# (the driver died before running the tests).
parse_regress_summary() {
    local out=$1 n m f p
    if n=$(grep -oE 'All [0-9]+ tests passed' "$out" | grep -oE '[0-9]+'); then
        echo "$n 0"
    elif m=$(grep -oE '[0-9]+ of [0-9]+ tests failed' "$out"); then
        read -r f _ n _ <<<"$m"
        echo "$((n - f)) $f"
    elif m=$(grep -oE '[0-9]+ of [0-9]+ tests passed, [0-9]+ failed test' "$out"); then
        # Failures of tests marked "ignore" in a schedule do not count.
        read -r p _ n _ <<<"$m"
        echo "$p 0"
    fi
}

# Runs one pg_regress-style driver in the copy, shows what explains its
# failures, and leaves its figures in RUN_PASS and RUN_FAIL.
#   run_regress_driver STAGE DRIVER OUTDIR NTESTS ARGS...
run_regress_driver() {
    local stage=$1 driver=$2 outdir=$3 ntests=$4
    shift 4
    local port out rc=0 figures died=0 ok
    RUN_PASS=0 RUN_FAIL=$ntests
    port=$(free_port) || return 0
    out=$WORK/$stage.out
    log "$stage: $(basename "$driver") on port $port"
    run_logged "$out" run_in_copy run_as_pg "$driver" \
        --bindir="$BINDIR" \
        --temp-instance="$WORK/${stage}_instance" \
        --temp-config="$WORK/rmsg.conf" \
        --port="$port" \
        "$@" || rc=$?
    figures=$(parse_regress_summary "$out")
    if [[ -z $figures ]]; then
        # No summary: initdb, the server or the driver itself died midway.
        # Tests reported "... ok" before that passed; all others failed.
        echo "$stage: $(basename "$driver") exited with status $rc before its summary"
        died=1
        ok=$(grep -cE '^(test | +)[^ ]+ +\.\.\. ok( |$)' "$out" || true)
        figures="$ok $((ntests - ok))"
    elif [[ $rc -ne 0 && ${figures#* } == 0 ]]; then
        # Exit status says failure though the summary does not.
        figures="${figures% *} 1"
    fi
    read -r RUN_PASS RUN_FAIL <<<"$figures"
    if ((RUN_FAIL > 0)); then
        # The driver writes these under its --outputdir.
        show_file "$COPY/$outdir/regression.diffs"
        ((died)) && show_file "$COPY/$outdir/log/initdb.log" 30
        show_file "$COPY/$outdir/log/postmaster.log" 100
    fi
}

stage_regress() {
    local tests opts
    tests=$(make_var "$COPY" REGRESS)
    opts=$(make_var "$COPY" REGRESS_OPTS)
    if [[ -z $tests ]]; then
        record_skip regress "REGRESS is empty"
        return
    fi
    # shellcheck disable=SC2086  # the Makefile's lists are word lists
    run_regress_driver regress "$PG_REGRESS" . "$(wc -w <<<"$tests")" \
        --inputdir=. --dbname=contrib_regression $opts $tests
    record regress "$RUN_PASS" "$RUN_FAIL"
}

stage_isolation() {
    local tests opts opt specdir=specs name present=() missing=()
    tests=$(make_var "$COPY" ISOLATION)
    opts=$(make_var "$COPY" ISOLATION_OPTS)
    if [[ -z $tests ]]; then
        record_skip isolation "ISOLATION is empty"
        return
    fi
    # pg_isolation_regress reads <inputdir>/specs/<name>.spec.
    for opt in $opts; do
        [[ $opt == --inputdir=* ]] && specdir=${opt#--inputdir=}/specs
    done
    for name in $tests; do
        if [[ -f $COPY/$specdir/$name.spec ]]; then present+=("$name"); else missing+=("$name"); fi
    done
    if [[ ${#present[@]} -eq 0 ]]; then
        echo "note: no spec in $specdir/ for ISOLATION ($tests) yet"
        record_skip isolation "no specs yet"
        return
    fi
    # shellcheck disable=SC2086
    run_regress_driver isolation "$PG_ISOLATION_REGRESS" output_iso "${#present[@]}" \
        --outputdir=output_iso $opts "${present[@]}"
    if [[ ${#missing[@]} -gt 0 ]]; then
        # Listed in the Makefile but absent: a failure each, as it would be
        # under make installcheck.
        echo "isolation: no spec for ${missing[*]}: counted as failed"
        RUN_FAIL=$((RUN_FAIL + ${#missing[@]}))
    fi
    record isolation "$RUN_PASS" "$RUN_FAIL"
}

# Reads prove's output (file $1) and prints "PASS FAIL" counting assertions.
# Tests=T in "Files=F, Tests=T" counts the assertions run; the summary report
# lists per file "(Wstat: W Tests: T Failed: K)" and, for a file that died or
# broke its plan, "Parse errors: ..." and "You planned P tests but ran R".
# A file reported there counts at least one failure, plus the planned
# assertions it never ran.
parse_prove_output() {
    awk '
        /^Files=[0-9]+, Tests=[0-9]+/ {
            match($0, /Tests=[0-9]+/); total = substr($0, RSTART + 6, RLENGTH - 6) + 0; seen = 1
        }
        /\(Wstat: [0-9]+.* Tests: [0-9]+ Failed: [0-9]+\)/ {
            flush()
            match($0, /Failed: [0-9]+/); cur = substr($0, RSTART + 8, RLENGTH - 8) + 0
            match($0, /Wstat: [0-9]+/); wstat = substr($0, RSTART + 7, RLENGTH - 7) + 0
            infile = 1; extra = 0; bad = (wstat != 0)
            next
        }
        infile && /Parse errors:/ { bad = 1 }
        infile && /You planned [0-9]+ tests? but ran [0-9]+/ {
            match($0, /planned [0-9]+/); planned = substr($0, RSTART + 8, RLENGTH - 8) + 0
            match($0, /ran [0-9]+/); ran = substr($0, RSTART + 4, RLENGTH - 4) + 0
            if (planned > ran) extra = planned - ran
            bad = 1
        }
        infile && /No plan found/ { bad = 1 }
        function flush() {
            if (!infile) return
            f = cur + extra
            if (bad && f == 0) f = 1
            failed += f; assert_failed += cur
            infile = 0
        }
        END {
            flush()
            if (!seen) { print ""; exit }
            print total - assert_failed, failed + 0
        }
    ' "$1"
}

stage_tap() {
    local tests port out rc=0 figures failed_files f base log_file pass fail
    tests=$(make_var "$COPY" PROVE_TESTS)
    if [[ -z $tests ]]; then
        record_skip tap "PROVE_TESTS is empty"
        return
    fi
    port=$(free_port) || { record tap 0 1; return; }
    out=$WORK/tap.out
    log "tap: prove $tests (PGPORT=$port)"
    rm -rf "$COPY/tmp_check"
    mkdir "$COPY/tmp_check"
    give_to_pg "$COPY/tmp_check"
    # The environment of PGXS's prove_installcheck; the TAP tests build their
    # own clusters with PostgreSQL::Test::Cluster.
    # shellcheck disable=SC2086
    TESTDIR=$COPY PG_REGRESS=$PG_REGRESS PGPORT=$port \
        run_logged "$out" run_in_copy run_as_pg \
        prove ${PROVE_FLAGS:-} -I "$PGXS_SRC/test/perl/" -I . $tests || rc=$?
    figures=$(parse_prove_output "$out")
    if [[ -z $figures ]]; then
        echo "tap: prove exited with status $rc before its summary"
        figures="0 1"
    elif [[ $rc -ne 0 && ${figures#* } == 0 ]]; then
        figures="${figures% *} 1"
    fi
    read -r pass fail <<<"$figures"
    record tap "$pass" "$fail"
    if ((fail > 0)); then
        # The files prove names in its report, or every log when it gave none.
        failed_files=$(grep -oE '^[^ ]+\.pl +\(Wstat' "$out" | awk '{print $1}' || true)
        for f in ${failed_files:-$tests}; do
            base=$(basename "$f" .pl)
            show_file "$COPY/tmp_check/log/regress_log_$base" 200
        done
        # Server logs of the clusters those files made: <file>_<node>.log.
        for f in ${failed_files:-$tests}; do
            base=$(basename "$f" .pl)
            for log_file in "$COPY/tmp_check/log/${base}"_*.log; do
                show_file "$log_file" 50
            done
        done
    fi
}

# The examples start in the background before the other stages, whose
# drivers leave the second core idle much of the time, and are waited for
# after them.  Their output is shown when they have ended, not mixed into
# the other stages'.
stage_examples_start() {
    EXAMPLES_OUT=$WORK/examples.out
    log "examples: test/examples/run_examples.sh started in the background"
    RMSG_EXAMPLES_WORK=$WORK/examples \
        bash "$COPY/test/examples/run_examples.sh" >"$EXAMPLES_OUT" 2>&1 </dev/null &
    EXAMPLES_PID=$!
}

# Ends the examples if the run ends before stage_examples_finish waited for
# them (an error, Ctrl-C, a CI timeout), then cleans up as always.
stop_examples_and_cleanup() {
    if [[ -n ${EXAMPLES_PID:-} ]]; then
        kill "$EXAMPLES_PID" 2>/dev/null || true
        wait "$EXAMPLES_PID" 2>/dev/null || true
    fi
    cleanup_workdir
}

# Waits for the examples and counts their "ok" and "not ok" lines, checked
# against their closing "N passed, N failed".
stage_examples_finish() {
    local rc=0 figures pass fail
    log "examples: waiting for them"
    wait "$EXAMPLES_PID" || rc=$?
    EXAMPLES_PID=
    show_file "$EXAMPLES_OUT"
    pass=$(grep -c '^ok - ' "$EXAMPLES_OUT" || true)
    fail=$(grep -c '^not ok - ' "$EXAMPLES_OUT" || true)
    figures=$(tail -n 1 "$EXAMPLES_OUT" | grep -xE '[0-9]+ passed, [0-9]+ failed' || true)
    if [[ -z $figures ]]; then
        # It died midway: what it checked counts, and the death one failure.
        echo "examples: run_examples.sh exited with status $rc before its summary"
        fail=$((fail + 1))
    elif [[ $figures != "$pass passed, $fail failed" ]]; then
        echo "examples: its summary ($figures) disagrees with its lines: counted as one more failure"
        fail=$((fail + 1))
    elif [[ $rc -ne 0 && $fail -eq 0 ]]; then
        fail=1
    fi
    record examples "$pass" "$fail"
}

# Ends the run before any test could run, still with the closing line.
fail_early() {
    echo "$1"
    echo "0 passed, 1 failed"
    exit 1
}

main() {
    # shellcheck disable=SC2046  # a word list: the clients' packages
    ensure_packages $(bash "$ROOT/test/examples/run_examples.sh" --packages) ||
        fail_early "could not install the required packages"
    init_pg_env
    build_and_install || fail_early "build failed"
    make_workdir
    # The drivers' and the TAP clusters' socket directories (kept by them
    # when a test fails) then land in WORK and go with it.
    export TMPDIR=$WORK/tmp
    mkdir "$TMPDIR"
    give_to_pg "$TMPDIR"
    copy_tree
    write_temp_config
    trap stop_examples_and_cleanup EXIT
    stage_examples_start
    stage_regress
    stage_isolation
    stage_tap
    stage_examples_finish
    finish
}

main "$@"
