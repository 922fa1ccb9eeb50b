"""Connection flood past the maximum (testbed with --max-connections 200).

1. 600 idle connections: the first 200 are held (each has a thread waiting
   for a head), the other 400 get `503` with `Retry-After` from the accept
   thread and a clean close; the thread count stays within max + a small
   constant.
2. While full, 1000 more clients connect and send a request at once: every
   one gets the 503 (or, at worst, a close; never a hang), fast.
3. The flood stops: normal requests succeed again, and threads, descriptors
   and open connections return to the baseline.
4. The same with event streams holding the 200 slots (no thread each).
"""

import socket
import time

import harness
from harness import Reader, Testbed, connect, report

MAX = 200
FLOOD = 600
BURST = 1000
SLACK = 4  # threads besides the connection threads, beyond the baseline


def read_503(sock, timeout=3.0):
    """What a rejected connection received: '503' (with Retry-After and
    Connection: close, then EOF), or a description of something else."""
    sock.settimeout(timeout)
    reader = Reader(sock)
    try:
        status, headers, body = reader.response()
    except ConnectionResetError:
        return "reset before the answer"
    except (EOFError, socket.timeout, ValueError) as e:
        return f"{type(e).__name__} {e}"
    if status != 503:
        return f"status {status}"
    if headers.get("retry-after") != "1":
        return f"503 without Retry-After: {headers}"
    if headers.get("connection", "").lower() != "close":
        return "503 without Connection: close"
    how = reader.closed_cleanly(timeout)
    return "503" if how in ("eof", "reset") else f"503 then {how}"


def flood(tb, base, hold, label):
    """`hold(i)` opens the i-th connection of the flood and returns it with
    what it already knows: "held", an outcome of `read_503`, or None (find
    out: nothing received means the server holds it)."""
    opened = []
    start = time.monotonic()
    for i in range(FLOOD):
        opened.append(hold(i))
        if i % 50 == 49:
            time.sleep(0.02)  # stay within the listen backlog
    took = time.monotonic() - start

    def received(s):
        s.setblocking(False)
        try:
            s.recv(1, socket.MSG_PEEK)
            got = True
        except BlockingIOError:
            got = False
        except OSError:
            got = True
        s.setblocking(True)
        return got

    # Wait (bounded) until every connection beyond the maximum has its
    # answer: a connect delayed by a full listen queue is answered late.
    unknown = [s for s, known in opened if known is None]
    harness.wait_for(
        lambda: sum(map(received, unknown)) >= len(unknown) - MAX, 3, interval=0.1
    )
    time.sleep(0.2)
    threads_full = tb.threads()
    fds_full = tb.fds()
    outcomes = {}
    for s, known in opened:
        if known is None:
            known = read_503(s) if received(s) else "held"
        outcomes[known] = outcomes.get(known, 0) + 1
    held = outcomes.pop("held", 0)
    rejected = outcomes.pop("503", 0)
    report(
        MAX - 2 <= held <= MAX and rejected == FLOOD - held,
        f"flood ({label}): {FLOOD} connections, past the maximum each gets 503 with Retry-After",
        f"{held} held, {rejected} got 503 + Retry-After + clean close, others {outcomes}, "
        f"opened in {took:.2f} s",
    )
    bound = base["threads"] + (MAX if label == "idle connections" else 0) + SLACK
    report(
        threads_full <= bound and tb.alive(),
        f"flood ({label}): thread count bounded while full",
        f"{threads_full} threads (baseline {base['threads']}, bound {bound}), "
        f"{fds_full} fds (baseline {base['fds']})",
    )
    return [s for s, _ in opened]


def burst(tb, base):
    """While full: BURST clients connect and send a request at once."""
    outcomes = {}
    slowest = 0.0
    peak_threads = 0
    start = time.monotonic()
    for i in range(BURST):
        t = time.monotonic()
        with connect(tb.addr, 5) as s:
            try:
                s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            except OSError:
                pass
            outcome = read_503(s)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        slowest = max(slowest, time.monotonic() - t)
        if i % 100 == 0:
            peak_threads = max(peak_threads, tb.threads())
    took = time.monotonic() - start
    got = outcomes.get("503", 0)
    resets = outcomes.get("reset before the answer", 0)
    others = {k: v for k, v in outcomes.items() if k not in ("503", "reset before the answer")}
    bound = base["threads"] + MAX + SLACK
    report(
        not others and got >= BURST * 0.99 and slowest < 1.0 and peak_threads <= bound,
        "flood: 1000 more requests while full are refused at once",
        f"{got} got 503, {resets} reset before reading it, others {others}; "
        f"{BURST / took:.0f} connections/s, slowest {slowest * 1000:.1f} ms, "
        f"peak {peak_threads} threads (bound {bound})",
    )


def recover(tb, base, socks, label):
    for s in socks:
        s.close()
    start = time.monotonic()
    ok = harness.wait_for(tb.ok_request, 3)
    first_ok = time.monotonic() - start
    settled, waited, now = tb.wait_settled(base, 5)
    report(
        ok and settled and tb.alive(),
        f"flood ({label}): the server recovers when the flood stops",
        f"first normal request answered {first_ok:.2f} s after the flood stopped; "
        f"threads {base['threads']} -> {now['threads']}, fds {base['fds']} -> {now['fds']}, "
        f"open connections {now['open_connections']} (baseline {base['open_connections']}) "
        f"after {waited:.2f} s",
    )


@harness.attack("flood")
def main():
    harness.raise_fd_limit(FLOOD * 2 + 200)
    with Testbed(
        "--max-connections", MAX, "--head-timeout-ms", 60000, "--keep-alive-ms", 500, name="flood"
    ) as tb:
        time.sleep(0.3)
        base = tb.baseline()
        rejected_before = tb.stats()["server"]["rejected"]

        socks = flood(tb, base, lambda i: (connect(tb.addr, 5), None), "idle connections")
        burst(tb, base)
        recover(tb, base, socks, "idle connections")
        rejected = tb.stats()["server"]["rejected"] - rejected_before
        report(
            rejected >= (FLOOD - MAX) + BURST * 0.99,
            "flood: the rejected counter counts the refused connections",
            f"rejected +{rejected}",
        )

        def stream(i):
            """An event-stream request; waits for the answer, so that the
            first 200 become streams (which hold a slot without a thread)."""
            s = connect(tb.addr, 5)
            s.sendall(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
            s.settimeout(3)
            data = b""
            deadline = time.monotonic() + 3
            while b"\r\n\r\n" not in data and time.monotonic() < deadline:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            if data.startswith(b"HTTP/1.1 200 "):
                return s, "held"
            if data.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 1\r\n" in data:
                return s, "503"
            return s, f"answered {data[:12]!r}"

        socks = flood(tb, base, stream, "event streams")
        recover(tb, base, socks, "event streams")


if __name__ == "__main__":
    main()
    harness.finish()
