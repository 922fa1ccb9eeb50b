#!/usr/bin/env bash
# curl -N against the clock example (the raw stream, byte for byte) and the
# notify example (a bearer token, a cookie jar).
set -uo pipefail
source "$(dirname "$0")/lib.sh"

RFC3339='[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})'

if ! start_example clock curl-clock --addr 127.0.0.1:0 --interval-ms 200; then
    fail "curl: the clock example starts"
    exit 1
fi
raw="$OUT_DIR/curl-clock.raw"
headers="$OUT_DIR/curl-clock.headers"

name="curl -N: raw stream starts with the line ': connected' (no empty line after it), then event: time / id: evt-1 / data: RFC 3339"
curl -sN --max-time 1.1 -D "$headers" "$EX_URL/events" >"$raw"
status=$?
mapfile -t lines <"$raw"
expected_head=$(printf '%s\n' ": connected" "event: time" "id: evt-1")
actual_head=$(printf '%s\n' "${lines[@]:0:3}")
if [[ $status != 28 ]]; then
    fail "$name" "curl exited $status (expected 28: stopped by --max-time while streaming)"
elif [[ $actual_head != "$expected_head" ]]; then
    fail "$name" "first lines: $(printf '%q ' "${lines[@]:0:6}")"
elif ! [[ ${lines[3]} =~ ^data:\ $RFC3339$ && ${lines[4]} == "" ]]; then
    fail "$name" "data line: $(printf '%q ' "${lines[@]:3:2}")"
elif ! [[ ${lines[5]} == "event: time" && ${lines[6]} == "id: evt-2" ]]; then
    fail "$name" "second event: $(printf '%q ' "${lines[@]:5:3}")"
elif [[ -n $(tr -d '\n' <"$raw" | tr -d '[:print:]') ]]; then
    fail "$name" "the stream has bytes other than printable ASCII and LF (CR?)"
else
    pass "$name" "$(grep -c '^id: ' "$raw") events in 1.1 s; ${lines[3]}"
fi

# curl decodes the chunked body (exit status 28, not 56, above: the framing
# was valid), so the stream reads the same as the close-delimited one below.
name="curl -N: response head is 200, text/event-stream, no-cache, X-Accel-Buffering: no, chunked"
tr -d '\r' <"$headers" >"$headers.lf"
if head -n 1 "$headers.lf" | grep -q '^HTTP/1.1 200 ' &&
    grep -qix 'content-type: text/event-stream' "$headers.lf" &&
    grep -qix 'cache-control: no-cache' "$headers.lf" &&
    grep -qix 'x-accel-buffering: no' "$headers.lf" &&
    grep -qix 'transfer-encoding: chunked' "$headers.lf"; then
    pass "$name"
else
    fail "$name" "$(tr '\n' '|' <"$headers.lf")"
fi

name="curl --http1.0 -N: no Transfer-Encoding, the same stream, close-delimited"
out10=$(curl -sN --http1.0 --max-time 0.5 -D "$headers.10" "$EX_URL/events")
status=$?
mapfile -t lines10 <<<"$out10"
if [[ $status != 28 ]]; then
    fail "$name" "curl exited $status (expected 28: stopped by --max-time while streaming)"
elif grep -qi '^transfer-encoding:' "$headers.10"; then
    fail "$name" "$(tr -d '\r' <"$headers.10" | tr '\n' '|')"
elif [[ $(printf '%s\n' "${lines10[@]:0:3}") != "$expected_head" ]]; then
    fail "$name" "first lines: $(printf '%q ' "${lines10[@]:0:6}")"
else
    pass "$name"
fi

name="curl -N with Last-Event-ID: evt-41 resumes at evt-42"
out=$(curl -sN --max-time 0.5 -H 'Last-Event-ID: evt-41' "$EX_URL/events")
first_id=$(grep -m 1 '^id: ' <<<"$out")
if [[ $first_id == "id: evt-42" ]]; then
    pass "$name"
else
    fail "$name" "first id line: '$first_id'"
fi

stop_pid "$EX_PID" INT
if [[ $STOP_STATUS == 0 ]]; then
    pass "clock exits 0 on SIGINT"
else
    fail "clock exits 0 on SIGINT" "status $STOP_STATUS"
fi

# The notify example: curl as its README shows it, a token or a cookie jar.
if ! start_example notify curl-notify --addr 127.0.0.1:0 --user alice:token-a --admin admin-token; then
    fail "curl: the notify example starts"
    exit 1
fi
for n in 1 2; do
    curl -s -H 'Authorization: Bearer admin-token' -d "note $n" "$EX_URL/notify?user=alice"
done

name="curl -N without credentials: 401, WWW-Authenticate: Bearer, no event stream"
out=$(curl -sN --max-time 2 -D - -H 'Accept: text/event-stream' "$EX_URL/events" | tr -d '\r')
if [[ $out == "HTTP/1.1 401 "* ]] && grep -qx 'WWW-Authenticate: Bearer' <<<"$out" &&
    ! grep -qi 'text/event-stream\|^data:' <<<"$out"; then
    pass "$name"
else
    fail "$name" "$(tr '\n' '|' <<<"$out")"
fi

name="curl -N -H 'Authorization: Bearer ...': the user's notifications"
out=$(curl -sN --max-time 0.5 -H 'Authorization: Bearer token-a' "$EX_URL/events")
if [[ $(grep '^data: ' <<<"$out") == $'data: note 1\ndata: note 2' ]]; then
    pass "$name"
else
    fail "$name" "$(tr '\n' '|' <<<"$out")"
fi

name="curl -c/-b: POST /login, then the stream with the session cookie"
jar="$OUT_DIR/curl-notify.cookies"
rm -f "$jar"
login=$(curl -s -o /dev/null -w '%{http_code}' -c "$jar" -d token-a "$EX_URL/login")
out=$(curl -sN --max-time 0.5 -b "$jar" "$EX_URL/events")
if [[ $login == 204 ]] && grep -q '#HttpOnly_127.0.0.1' "$jar" && ! grep -q token-a "$jar" &&
    [[ $(grep -c '^data: ' <<<"$out") == 2 ]]; then
    pass "$name"
else
    fail "$name" "login $login; jar $(tr '\n' '|' <"$jar"); stream $(tr '\n' '|' <<<"$out")"
fi

stop_pid "$EX_PID" INT
if [[ $STOP_STATUS == 0 ]]; then
    pass "notify exits 0 on SIGINT"
else
    fail "notify exits 0 on SIGINT" "status $STOP_STATUS"
fi
exit $((FAILED > 0))
