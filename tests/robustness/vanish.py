"""1,000 subscribers connect to /events and vanish abruptly (RST: SO_LINGER
with a zero timeout, then close), five rounds in a row. In each round most
of them are streaming when they vanish, some vanish right after sending the
request, some in the middle of the request head; in some rounds events are
being published while they go. After every round the server's open
connections, open streams, hub subscribers, threads and file descriptors
must return to the baseline within a few keep-alive intervals (500 ms).
"""

import time

import harness
from harness import Testbed, connect, report, reset

SUBSCRIBERS = 1000
ROUNDS = 5
KEEP_ALIVE_MS = 500
SETTLE = 8 * KEEP_ALIVE_MS / 1000  # a few keep-alive intervals
REQUEST = b"GET /events HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n"


def read_head(sock):
    sock.settimeout(5)
    deadline = time.monotonic() + 5
    data = b""
    while b"\r\n\r\n" not in data:
        if time.monotonic() > deadline or len(data) > 65536:
            raise TimeoutError("no response head")
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError("closed before the head")
        data += chunk
    if not data.startswith(b"HTTP/1.1 200 "):
        raise ValueError(f"answered {data[:40]!r}")


def one_round(tb, base, number, publish):
    streaming, early, half = [], [], []
    start = time.monotonic()
    for i in range(SUBSCRIBERS):
        s = connect(tb.addr, 5)
        kind = i % 10
        if kind == 8:
            s.sendall(REQUEST)
            early.append(s)  # vanishes before its head is read
        elif kind == 9:
            s.sendall(REQUEST[:20])
            half.append(s)  # vanishes in the middle of the request head
        else:
            s.sendall(REQUEST)
            streaming.append(s)
        if i % 100 == 99:
            # Keep the burst within the listen backlog: read the heads of
            # this batch before the next one connects.
            for t in streaming[len(streaming) - 80 :]:
                read_head(t)
    subscribed = harness.wait_for(
        lambda: tb.stats()["hub"]["subscribers"] >= len(streaming), 5
    )
    peak = tb.stats()
    peak_threads, peak_fds = tb.threads(), tb.fds()
    if publish:
        # Events in flight while they vanish: writes must fail cleanly.
        tb.request("POST", "/publish?count=200&size=200")
    for s in early + half + streaming:
        reset(s)
    if publish:
        tb.request("POST", "/publish?count=200&size=200")
    ok, waited, now = tb.wait_settled(base, SETTLE)
    report(
        bool(subscribed) and ok and tb.alive(),
        f"vanish round {number}: {SUBSCRIBERS} subscribers reset"
        + (" while events are published" if publish else ""),
        f"{len(streaming)} streaming + {len(early)} right after the request + "
        f"{len(half)} mid-head; peak {peak['hub']['subscribers']} subscribers, "
        f"{peak['server']['open_connections']} connections, {peak_threads} threads, "
        f"{peak_fds} fds; back to threads {now['threads']}/{base['threads']}, "
        f"fds {now['fds']}/{base['fds']}, connections {now['open_connections']}/"
        f"{base['open_connections']}, streams {now['open_streams']}/{base['open_streams']}, "
        f"subscribers {now['subscribers']}/{base['subscribers']} in {waited:.2f} s "
        f"(limit {SETTLE:.1f} s); round took {time.monotonic() - start:.1f} s",
    )


@harness.attack("vanish")
def main():
    harness.raise_fd_limit(SUBSCRIBERS * 2 + 200)
    with Testbed(
        "--max-connections", SUBSCRIBERS * 3, "--keep-alive-ms", KEEP_ALIVE_MS, name="vanish"
    ) as tb:
        time.sleep(0.3)
        base = tb.baseline()
        for number in range(1, ROUNDS + 1):
            one_round(tb, base, number, publish=number % 2 == 0)
        report(tb.ok_request(), "vanish: the server still answers after 5 rounds")


if __name__ == "__main__":
    main()
    harness.finish()
