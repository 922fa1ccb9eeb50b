#!/usr/bin/env bash
# The crate's own client, `tail URL`, against the clock and chat examples.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

TAIL="$BIN_DIR/tail"
RFC3339='[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})'

# --- clock -------------------------------------------------------------------
name="tail --max-events 3 on the clock: 3 JSON lines evt-1..3, exit 0"
if start_example clock tail-clock --addr 127.0.0.1:0 --interval-ms 100; then
    out=$(timeout 10 "$TAIL" --max-events 3 "$EX_URL/events" 2>"$OUT_DIR/logs/tail-clock.stderr")
    status=$?
    mapfile -t lines <<<"$out"
    ok=1
    for i in 1 2 3; do
        [[ ${lines[i - 1]} =~ ^\{\"type\":\"time\",\"data\":\"$RFC3339\",\"id\":\"evt-$i\"\}$ ]] || ok=0
    done
    if [[ $status != 0 ]]; then
        fail "$name" "exit status $status"
    elif [[ $ok != 1 || ${#lines[@]} != 3 ]]; then
        fail "$name" "output: $out"
    else
        pass "$name" "${lines[0]}"
    fi
    stop_pid "$EX_PID" INT
else
    fail "$name" "the clock example did not start"
fi

# --- chat --------------------------------------------------------------------
# JSON lines with the hub's ids (<epoch>-<n>) written as ID.
without_ids() { sed -E 's/"id":"[0-9a-f]{8}-[0-9]+"}$/"id":"ID"}/' "$1"; }

name="tail --max-events 3 on the chat: messages as JSON lines (multi-line, unicode, escapes), exit 0"
if ! start_example chat tail-chat --addr 127.0.0.1:0; then
    fail "$name" "the chat example did not start"
    exit 1
fi
chat_url=$EX_URL chat_port=$EX_PORT chat_pid=$EX_PID
out="$OUT_DIR/tail-chat.jsonl"
timeout 15 "$TAIL" --max-events 3 "$chat_url/events" >"$out" 2>"$OUT_DIR/logs/tail-chat.stderr" &
tail_pid=$!
STARTED_PIDS+=("$tail_pid")
tab=$'\t'
if wait_until 5 has_subscribers "$chat_url" 1 &&
    post "$chat_url" "hello" &&
    post "$chat_url" $'two\nlines' &&
    post "$chat_url" "  unicode é 日本 🎉 \"quoted\" back\\slash${tab}tab "; then
    stop_pid "$tail_pid" none 10
    expected='{"type":"message","data":"hello","id":"ID"}
{"type":"message","data":"two\nlines","id":"ID"}
{"type":"message","data":"  unicode é 日本 🎉 \"quoted\" back\\slash\ttab ","id":"ID"}'
    if [[ $STOP_STATUS != 0 ]]; then
        fail "$name" "tail's exit status: $STOP_STATUS; output: $(cat "$out")"
    elif [[ $(without_ids "$out") != "$expected" ]]; then
        fail "$name" "output: $(cat "$out")"
    else
        pass "$name" "$(head -n 1 "$out")"
    fi
else
    fail "$name" "no subscriber, or a POST failed"
fi

name="tail: the chat's largest message (MAX_MESSAGE, 64 KiB) arrives byte-exact"
largest="$OUT_DIR/largest.txt"
"$INTEROP_PYTHON" -c 'import sys; sys.path.insert(0, sys.argv[1]); from interop_lib import LARGEST; sys.stdout.buffer.write(LARGEST.encode())' "$(dirname "$0")" >"$largest"
out="$OUT_DIR/tail-largest.jsonl"
n=$(subscribers "$chat_url")
timeout 15 "$TAIL" --max-events 1 "$chat_url/events" >"$out" 2>"$OUT_DIR/logs/tail-largest.stderr" &
tail_pid=$!
STARTED_PIDS+=("$tail_pid")
code=""
if wait_until 5 has_subscribers "$chat_url" $((n + 1)); then
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --data-binary @"$largest" "$chat_url/messages")
fi
stop_pid "$tail_pid" none 10
if [[ $code != 204 ]]; then
    fail "$name" "no subscriber, or the POST answered '$code'"
elif [[ $STOP_STATUS != 0 ]]; then
    fail "$name" "tail's exit status: $STOP_STATUS; $(head -c 300 "$OUT_DIR/logs/tail-largest.stderr")"
elif ! "$INTEROP_PYTHON" -c 'import json, sys
got = json.loads(open(sys.argv[1], encoding="utf-8").readline())["data"]
sys.exit(got != open(sys.argv[2], encoding="utf-8", newline="").read())' "$out" "$largest"; then
    fail "$name" "output: $(head -c 200 "$out")"
else
    pass "$name" "$(wc -c <"$largest") bytes"
fi

name="tail follows the chat across a restart: reconnects with Last-Event-ID, gap signal, then the new messages"
out="$OUT_DIR/tail-chat-restart.jsonl"
timeout 30 "$TAIL" --max-events 5 "$chat_url/events" >"$out" 2>"$OUT_DIR/logs/tail-chat-restart.stderr" &
tail_pid=$!
STARTED_PIDS+=("$tail_pid")
problem=""
if ! wait_until 5 has_subscribers "$chat_url" 1; then
    problem="tail did not subscribe"
elif ! post "$chat_url" "before 1" || ! post "$chat_url" "before 2"; then
    problem="POST failed"
elif ! wait_until 5 test "$(wc -l <"$out")" -ge 2; then
    problem="tail printed $(wc -l <"$out") lines before the restart"
else
    stop_pid "$chat_pid" INT
    [[ $STOP_STATUS == 0 ]] || problem="chat exited $STOP_STATUS on SIGINT"
    if start_example chat tail-chat-restarted --addr "127.0.0.1:$chat_port"; then
        chat_pid=$EX_PID
        post "$chat_url" "after 1" && post "$chat_url" $'after 2\n  indented' || problem="POST after the restart failed"
        stop_pid "$tail_pid" none 15
        [[ $STOP_STATUS == 0 ]] || problem="tail exited $STOP_STATUS"
    else
        problem="chat did not restart on port $chat_port"
    fi
fi
expected='{"type":"message","data":"before 1","id":"ID"}
{"type":"message","data":"before 2","id":"ID"}
{"type":"stdsse-gap","data":"unknown-id","id":"ID"}
{"type":"message","data":"after 1","id":"ID"}
{"type":"message","data":"after 2\n  indented","id":"ID"}'
misses=$(curl -s --max-time 2 "$chat_url/stats" | sed -n 's/.*"replay_misses":\([0-9]*\).*/\1/p')
if [[ -n $problem ]]; then
    fail "$name" "$problem; output: $(cat "$out")"
elif [[ $(without_ids "$out") != "$expected" ]]; then
    fail "$name" "output: $(cat "$out")"
elif [[ ${misses:-0} -lt 1 ]]; then
    fail "$name" "the server counted no unknown Last-Event-ID (replay_misses=$misses)"
else
    pass "$name" "$(grep -m 1 reconnecting "$OUT_DIR/logs/tail-chat-restart.stderr")"
fi

stop_pid "$chat_pid" INT
if [[ $STOP_STATUS == 0 ]]; then pass "chat exits 0 on SIGINT"; else fail "chat exits 0 on SIGINT" "status $STOP_STATUS"; fi
exit $((FAILED > 0))
