#!/usr/bin/env bash
# How the cost of broadcasting grows with the number of clients.
#
#     bash benches/scale.sh [CLIENTS...]        (default: 10 100 1000 10000)
#
# For each client count it starts the release `chat` example and runs the
# release `loadgen` example three ways:
#   throughput  messages posted as fast as the server answers (--rate 0)
#   latency     100 messages per second for 5 s (--rate 100)
#   idle        connections held for 5 s with keep-alives flowing: server RSS per client
# One JSON line per run goes to benches/results/scale.jsonl (overwritten), and
# a Markdown table to standard output. benches/chart.py draws the SVG.
#
# The clients run on the same two cores as the server, so how the load
# generator uses them matters; both ways are measured (--per-thread):
#   1    a thread per client: one wake-up per client per event (the costly
#        part at a moderate rate), but nothing waits behind another socket;
#   10   ten clients per thread, read round-robin: one wake-up serves ten
#        clients, but a thread blocked on one socket lets the others fill
#        (which costs throughput when events come as fast as possible).
set -euo pipefail
cd "$(dirname "$0")/.."
clients=("$@")
[ ${#clients[@]} -gt 0 ] || clients=(10 100 1000 10000)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release --example chat >/dev/null 2>&1
cargo build --profile loadgen --example loadgen >/dev/null 2>&1
out=benches/results/scale.jsonl
: >"$out"
err=$(mktemp)
trap 'kill $chat 2>/dev/null || true; rm -f "$err"' EXIT

run() { # kind clients messages rate hold per-thread
    ./target/release/examples/chat --addr 127.0.0.1:0 --max-connections 20000 2>"$err" &
    chat=$!
    # The first line, `listening on http://HOST:PORT`, once it is complete
    # (`read` fails until its newline has arrived).
    local first="" port
    for _ in $(seq 100); do IFS= read -r first 2>/dev/null <"$err" && break; sleep 0.05; done
    port=${first##*:}
    local line
    line=$(./target/loadgen/examples/loadgen \
        --events "http://127.0.0.1:$port/events?room=bench" \
        --publish "http://127.0.0.1:$port/messages?room=bench" \
        --clients "$2" --messages "$3" --rate "$4" --hold-secs "$5" --pid "$chat" \
        --connect-parallel 256 --per-thread "$6" | tail -1)
    kill -INT "$chat"; wait "$chat" 2>/dev/null || true
    echo "{\"kind\":\"$1\",${line#\{}" | tee -a "$out" >&2
}

for n in "${clients[@]}"; do
    # About two million deliveries per throughput run (at least 200 messages).
    messages=$(( 2000000 / n )); [ $messages -ge 200 ] || messages=200
    [ $messages -le 20000 ] || messages=20000
    for k in 1 10; do
        run throughput "$n" "$messages" 0 0 "$k"
        run latency "$n" 500 100 0 "$k"
    done
    run idle "$n" 0 0 5 10
done

python3 - "$out" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault(r["clients"], {})[(r["kind"], r.get("per_thread", 1))] = r
print("| clients | deliveries/s, as fast as possible (1 / 10 clients per thread) "
      "| p50 / p99 latency at 100 events/s, 1 client per thread | same, 10 clients per thread "
      "| server RSS per idle client | lost or duplicated |")
print("|---:|---:|---:|---:|---:|---:|")
for n in sorted(rows):
    get = lambda kind, k: rows[n].get((kind, k), {})
    t1, t10, l1, l10, idle = get("throughput", 1), get("throughput", 10), get("latency", 1), get("latency", 10), get("idle", 10)
    lost = sum(r.get("missing", 0) + r.get("duplicated", 0) for r in (t1, t10, l1, l10))
    print(f"| {n:,} | {t1.get('per_sec', 0):,.0f} / {t10.get('per_sec', 0):,.0f} "
          f"| {l1.get('p50_ms', 0):.1f} / {l1.get('p99_ms', 0):.1f} ms "
          f"| {l10.get('p50_ms', 0):.1f} / {l10.get('p99_ms', 0):.1f} ms "
          f"| {idle.get('rss_kib_per_client', 0):.1f} KiB | {lost} |")
PY
