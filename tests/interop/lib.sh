# Shared by the shell check scripts (sourced): start and stop the examples,
# and the PASS/FAIL lines that run.sh counts.

BIN_DIR=${STDSSE_BIN_DIR:-target/debug/examples}
OUT_DIR=${INTEROP_OUT:-target/interop}
mkdir -p "$OUT_DIR/logs"
FAILED=0
STARTED_PIDS=()

pass() { echo "PASS $1${2:+: $2}"; }
fail() { echo "FAIL $1${2:+: $2}"; FAILED=$((FAILED + 1)); }

# start_example NAME TAG [ARGS...]: starts target/.../examples/NAME ARGS with
# its stderr in $OUT_DIR/logs/TAG.log and waits (at most 10 s) for its first
# line, `listening on http://HOST:PORT`, complete with its newline (`read`
# fails on a line still being written). Sets EX_PID, EX_URL, EX_PORT, EX_LOG.
start_example() {
    local name=$1 tag=$2 line i
    shift 2
    EX_LOG="$OUT_DIR/logs/$tag.log"
    EX_URL="" EX_PORT=""
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        # Emptied here, not only by the child's redirection: that runs after
        # the fork, and a read before it would find the last run's line.
        : >"$EX_LOG"
        "$BIN_DIR/$name" "$@" 2>"$EX_LOG" &
        EX_PID=$!
        STARTED_PIDS+=("$EX_PID")
        for ((i = 0; i < 100; i++)); do
            if IFS= read -r line 2>/dev/null <"$EX_LOG" && [[ $line == "listening on http://"* ]]; then
                EX_URL=${line#listening on }
                EX_PORT=${EX_URL##*:}
                return 0
            fi
            kill -0 "$EX_PID" 2>/dev/null || break
            sleep 0.1
        done
        # Restarting on the same port: retry while the port is still taken.
        if ! kill -0 "$EX_PID" 2>/dev/null && grep -qi "in use" "$EX_LOG"; then
            sleep 0.2
            continue
        fi
        break
    done
    echo "could not start $name: $(cat "$EX_LOG")" >&2
    kill -9 "$EX_PID" 2>/dev/null
    return 1
}

# stop_pid PID [SIGNAL] [SECONDS]: sends SIGNAL (default INT; `none` sends
# nothing), waits at most SECONDS (default 10) and sets STOP_STATUS to the
# exit status (or "timeout", after which the process is killed).
stop_pid() {
    local pid=$1 sig=${2:-INT} limit=${3:-10} i
    [[ $sig == none ]] || kill "-$sig" "$pid" 2>/dev/null
    for ((i = 0; i < limit * 20; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" 2>/dev/null
            STOP_STATUS=$?
            return 0
        fi
        sleep 0.05
    done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    STOP_STATUS=timeout
    return 1
}

kill_started() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        kill -9 "$pid" 2>/dev/null
    done
}
trap kill_started EXIT

# wait_until SECONDS COMMAND...: runs COMMAND every 50 ms until it succeeds.
wait_until() {
    local limit=$1 i
    shift
    for ((i = 0; i < limit * 20; i++)); do
        "$@" && return 0
        sleep 0.05
    done
    return 1
}

# The chat hub's current subscriber count (from GET /stats).
subscribers() {
    curl -s --max-time 2 "$1/stats" | sed -n 's/.*"subscribers":\([0-9]*\).*/\1/p'
}
has_subscribers() { [[ $(subscribers "$1") -ge $2 ]]; }

# post URL TEXT: POSTs a chat message; fails unless answered 204.
post() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --data-binary "$2" "$1/messages")
    [[ $code == 204 ]] || { echo "POST answered $code" >&2; return 1; }
}
