#!/usr/bin/env bash
# The robustness suite (issue 6, "Hostile input"): builds the testbed and
# fuzz examples in release, runs every attack against real testbed server
# processes on 127.0.0.1, and prints `N passed, M failed` as its last line.
# Exits non-zero if any check failed or anything could not run.
#
#   bash tests/robustness/run.sh            # everything (about a minute)
#   FUZZ_SEED=7 bash tests/robustness/run.sh
#
# Each attack script prints one `PASS name: details` / `FAIL name: details`
# line per check; this script counts them. Every step has a time limit, and
# every server an attack starts is stopped when it ends (or, should an
# attack be killed, by the trap below, by process id).
set -u
cd "$(dirname "$0")/../.."
here=tests/robustness

passed=0
failed=0
run_dir=$(mktemp -d "${TMPDIR:-/tmp}/stdsse-robustness.XXXXXX")
export ROBUSTNESS_RUN_DIR="$run_dir"
child=""

cleanup() {
    if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
        # The attack stops its server on SIGTERM (up to 10 s); then KILL.
        kill -TERM "$child" 2>/dev/null
        for _ in $(seq 60); do
            kill -0 "$child" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$child" 2>/dev/null
    fi
    # Testbed servers left by an attack that was killed: recorded by pid.
    for file in "$run_dir"/testbed.*; do
        [ -e "$file" ] || continue
        pid=${file##*.}
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'examples/testbed'; then
            kill -KILL "$pid" 2>/dev/null
        fi
    done
    rm -rf "$run_dir"
}
interrupted() {
    echo
    echo "FAIL interrupted"
    echo "$passed passed, $((failed + 1)) failed"
    exit 130
}
trap cleanup EXIT
trap interrupted INT TERM

fail() {
    echo "FAIL $*"
    failed=$((failed + 1))
}

# Runs one step with a time limit, shows its output, counts its PASS and
# FAIL lines; a step that exits non-zero without a FAIL line counts as one
# failure (it could not run).
step() {
    local limit=$1 name=$2
    shift 2
    local log="$run_dir/$name.log"
    local started=$SECONDS
    echo
    echo "==> $name"
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1 &
    child=$!
    wait "$child"
    local status=$?
    child=""
    cat "$log"
    local p f
    p=$(grep -c '^PASS ' "$log")
    f=$(grep -c '^FAIL ' "$log")
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
        if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
            fail "$name: timed out after ${limit} s"
        else
            fail "$name: exited with status $status"
        fi
    elif [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
        fail "$name: no result"
    fi
    echo "($name: $((SECONDS - started)) s)"
}

# Slowloris, floods and vanishing subscribers need a few thousand sockets on
# each side.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -ge 20000 ]; then
    ulimit -n 20000
else
    ulimit -n "$hard"
fi
echo "file descriptor limit: $(ulimit -n)"
if [ "$(ulimit -n)" -lt 4096 ]; then
    fail "setup: the file descriptor limit ($(ulimit -n)) is below 4096"
fi

if ! command -v python3 >/dev/null || ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 8))'; then
    fail "setup: python3 (3.8 or later) is needed"
fi

echo
echo "==> build (release examples)"
# In the background and waited for, like every step, so that an interrupt
# is handled at once.
timeout 900 cargo build --release --examples &
child=$!
wait "$child"
build=$?
child=""
if [ "$build" -ne 0 ]; then
    fail "setup: cargo build --release --examples (status $build)"
fi

if [ "$failed" -eq 0 ]; then
    step 120 malformed python3 -u "$here/malformed.py"
    step 60 slowloris python3 -u "$here/slowloris.py"
    step 60 flood python3 -u "$here/flood.py"
    step 120 vanish python3 -u "$here/vanish.py"
    step 120 slow-subscriber python3 -u "$here/slow_subscriber.py"
    step 60 handlers python3 -u "$here/handlers.py"
    step 120 fuzz target/release/examples/fuzz --seed "${FUZZ_SEED:-1}" --inputs 1000000
fi

echo
echo "robustness suite: $SECONDS s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
