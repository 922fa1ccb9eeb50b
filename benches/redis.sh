#!/usr/bin/env bash
# Broadcast through Redis against the in-process hub, side by side in one run.
#
#     bash benches/redis.sh [RUNS]        (default: 1)
#     ONLY=latency SECS=30 bash benches/redis.sh 3
#
# ONLY=KIND keeps one kind of run (throughput, latency, latency100,
# accepted, readers); SECS sets how long the latency runs last (default 5).
# Starts its own redis-server (a free port of 127.0.0.1, a temporary
# directory, no persistence), the release `chat` example, and runs the
# release `loadgen` example against two set-ups:
#   inproc  one chat instance, in-process hub;
#   redis   two chat instances on one Redis stream (`--redis URL --stream
#           NAME`, a new stream for each run), the clients spread over both
#           and the messages posted to both, alternately.
# The runs, each on both set-ups:
#   throughput  1,000 clients, 2,000 messages as fast as they are answered
#   latency     1,000 clients (ten per thread), 100 messages per second for 5 s
#   latency100  the same with 100 clients: the machine is not saturated, so the
#               figure is the Redis path's own cost, not the load generator's
#               queueing behind 1,000 sockets on two cores
#   accepted    one publisher (one connection, 64 requests in flight) posting
#               60,000 messages as fast as they are accepted, to one
#               instance (on Redis: the only one) and one client on it
#   readers     (redis only) 10,000 messages at 2,000 per second with 2 and
#               with 6 instances reading the stream: what each reader costs Redis
# Each run records the CPU time of Redis and of the chat instances
# (/proc/PID/stat) and Redis's own per-command figures (INFO commandstats,
# reset before the run). One JSON line per run goes to
# benches/results/redis.jsonl (overwritten), and a Markdown table to
# standard output.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release --example chat >/dev/null 2>&1
cargo build --profile loadgen --example loadgen >/dev/null 2>&1
out=benches/results/redis.jsonl
: >"$out"
tmp=$(mktemp -d)
chats=()
redis_pid=""
stop_chats() {
    local pid
    for pid in "${chats[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    for pid in "${chats[@]}"; do wait "$pid" 2>/dev/null || true; done
    chats=()
}
trap 'stop_chats; [ -z "$redis_pid" ] || kill "$redis_pid" 2>/dev/null; wait; rm -rf "$tmp"' EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --dir "$tmp" --save "" --appendonly no \
    --daemonize no >"$tmp/redis.log" 2>&1 &
redis_pid=$!
rcli() { redis-cli -p "$rport" "$@"; }
for _ in $(seq 100); do [ "$(rcli PING 2>/dev/null)" = PONG ] && break; sleep 0.05; done

# cpu_ms PID...: the CPU time (user + system) the processes used so far.
cpu_ms() {
    local ticks=0 pid stat
    for pid in "$@"; do
        stat=$(cut -d')' -f2 <"/proc/$pid/stat")
        ticks=$((ticks + $(echo "$stat" | awk '{print $12 + $13}')))
    done
    echo $((ticks * 1000 / $(getconf CLK_TCK)))
}

# start_chat ARGS...: starts a chat instance and appends its port to `ports`.
ports=()
start_chat() {
    local log="$tmp/chat-${#chats[@]}.log" port=""
    ./target/release/examples/chat --addr 127.0.0.1:0 --max-connections 20000 "$@" 2>"$log" &
    chats+=($!)
    # `listening on http://HOST:PORT`, once its newline has arrived (a Redis
    # log line may come before it).
    for _ in $(seq 200); do
        port=$(sed -n 's|^listening on http://.*:\([0-9]*\)$|\1|p' "$log")
        [ -n "$port" ] && break
        sleep 0.05
    done
    ports+=("$port")
}

stream=0
# setup inproc|redis [INSTANCES]
setup() {
    stop_chats
    ports=()
    if [ "$1" = inproc ]; then
        start_chat
    else
        stream=$((stream + 1))
        for _ in $(seq "${2:-2}"); do start_chat --redis "redis://127.0.0.1:$rport" --stream "bench:$stream"; done
    fi
}

# run KIND SETUP LOADGEN_ARGS...: every instance's events, publishing as asked.
run() {
    local kind=$1 set_up=$2 events=() port line cpu_r cpu_c stats
    shift 2
    for port in "${ports[@]}"; do events+=(--events "http://127.0.0.1:$port/events?room=bench"); done
    rcli CONFIG RESETSTAT >/dev/null
    cpu_r=$(cpu_ms "$redis_pid")
    cpu_c=$(cpu_ms "${chats[@]}")
    # (Its status says whether anything was lost; the line says it too.)
    line=$({ ./target/loadgen/examples/loadgen "${events[@]}" "$@" --connect-parallel 256 || true; } | tail -1)
    cpu_r=$(($(cpu_ms "$redis_pid") - cpu_r))
    cpu_c=$(($(cpu_ms "${chats[@]}") - cpu_c))
    # "xadd":[calls,usec],... from lines like cmdstat_xadd:calls=3,usec=7,...
    stats=$(rcli INFO commandstats | tr -d '\r' |
        sed -n 's/^cmdstat_\([a-z]*\):calls=\([0-9]*\),usec=\([0-9]*\),.*/"\1":[\2,\3]/p' | paste -sd, -)
    echo "{\"kind\":\"$kind\",\"setup\":\"$set_up\",\"instances\":${#chats[@]},\"redis_cpu_ms\":$cpu_r,\
\"chat_cpu_ms\":$cpu_c,\"commands\":{$stats},${line#\{}" | tee -a "$out" >&2
}

publish_all() { # --publish for every instance (one URL in-process)
    local port
    for port in "${ports[@]}"; do echo "--publish http://127.0.0.1:$port/messages?room=bench"; done
}

# want KIND: whether ONLY (if set) keeps this kind of run.
want() { [ -z "${ONLY:-}" ] || [ "$ONLY" = "$1" ]; }
msgs=$((100 * ${SECS:-5}))
for _ in $(seq "$runs"); do
    for s in inproc redis; do
        setup "$s"
        # shellcheck disable=SC2046 # one word per flag and URL
        want throughput && run throughput "$s" $(publish_all) --clients 1000 --messages 2000 --rate 0
        # shellcheck disable=SC2046
        want latency && run latency "$s" $(publish_all) --clients 1000 --messages "$msgs" --rate 100 --per-thread 10
        # shellcheck disable=SC2046
        want latency100 && run latency100 "$s" $(publish_all) --clients 100 --messages "$msgs" --rate 100 --per-thread 10
        if want accepted; then
            setup "$s" 1
            run accepted "$s" --publish "http://127.0.0.1:${ports[0]}/messages?room=bench" \
                --clients 1 --messages 60000 --rate 0 --pipeline 64
        fi
    done
    for n in 2 6; do
        want readers || continue
        setup redis "$n"
        run readers redis --publish "http://127.0.0.1:${ports[0]}/messages?room=bench" \
            --clients 1 --messages 10000 --rate 2000
    done
done
stop_chats

python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def pick(kind, setup, instances=None):
    return [r for r in rows if r["kind"] == kind and r["setup"] == setup
            and (instances is None or r["instances"] == instances)]
def fig(rs, key, fmt="{:,.0f}"):
    return " / ".join(fmt.format(r[key]) for r in rs) or "-"
def med(rs, key):
    return statistics.median(r[key] for r in rs) if rs else 0
lost = sum(r["missing"] + r["duplicated"] for r in rows)
print("| run | in-process (1 instance) | Redis (2 instances) | Redis / in-process (medians) | target |")
print("|---|---:|---:|---:|---|")
t_in, t_rd = pick("throughput", "inproc"), pick("throughput", "redis")
print(f"| deliveries/s, 1,000 clients, as fast as possible | {fig(t_in, 'per_sec')} | {fig(t_rd, 'per_sec')} "
      f"| {med(t_rd, 'per_sec') / max(med(t_in, 'per_sec'), 1):.2f}x | ≥ 0.8x |")
for kind, n in (("latency", "1,000"), ("latency100", "100")):
    l_in, l_rd = pick(kind, "inproc"), pick(kind, "redis")
    # Each round's two set-ups ran minutes apart: the difference round by round
    # is steadier than the difference of the medians.
    for q in ("p50", "p99"):
        diffs = [r[q + "_ms"] - i[q + "_ms"] for i, r in zip(l_in, l_rd)]
        print(f"| {q}, {n} clients at 100 events/s (ms) | {fig(l_in, q + '_ms', '{:.2f}')} | {fig(l_rd, q + '_ms', '{:.2f}')} "
              f"| {med(l_rd, q + '_ms') - med(l_in, q + '_ms'):+.2f} ms (round by round "
              f"{' / '.join(f'{d:+.2f}' for d in diffs)}) |{' ≤ +2 ms' if q == 'p99' else ''} |")
a_in, a_rd = pick("accepted", "inproc"), pick("accepted", "redis")
print(f"| events/s accepted, one publisher (64 in flight), one instance | {fig(a_in, 'published_per_sec')} | {fig(a_rd, 'published_per_sec')} "
      f"| {med(a_rd, 'published_per_sec') / max(med(a_in, 'published_per_sec'), 1):.2f}x | ≥ 20,000/s through Redis |")
print(f"\nlost or duplicated deliveries, all runs: {lost}\n")
print("| Redis's cost (accepted runs) | per event |")
print("|---|---:|")
for r in a_rd:
    c, n = r["commands"], r["messages"]
    xadd, xread = c.get("xadd", [0, 0]), c.get("xread", [0, 0])
    print(f"| Redis CPU (process, all commands and I/O) / the chat's CPU | {r['redis_cpu_ms'] * 1000 / n:.1f} / {r['chat_cpu_ms'] * 1000 / n:.1f} µs |")
    print(f"| XADD, as Redis times it | {xadd[1] / max(xadd[0], 1):.2f} µs |")
    print(f"| XREAD: calls per event, µs per call as Redis times it | {xread[0] / n:.2f}, {xread[1] / max(xread[0], 1):.1f} µs |")
for r in a_in:
    print(f"| in-process chat's CPU (for comparison) | {r['chat_cpu_ms'] * 1000 / r['messages']:.1f} µs |")
r2, r6 = pick("readers", "redis", 2), pick("readers", "redis", 6)
for a, b in zip(r2, r6):
    n = a["messages"]
    extra = (b["redis_cpu_ms"] - a["redis_cpu_ms"]) * 1000 / n / 4
    rounds = (b["commands"].get("xread", [0])[0] - a["commands"].get("xread", [0])[0]) / 4
    print(f"| readers at 2,000 events/s: Redis CPU with 2 / 6 instances; each extra instance | "
          f"{a['redis_cpu_ms'] * 1000 / n:.1f} / {b['redis_cpu_ms'] * 1000 / n:.1f} µs; {extra:.1f} µs "
          f"({rounds / n:.2f} XREAD rounds per event) |")
PY
