"""Slowloris: 500 connections each trickle a request head at one byte per
second. While they are open, a normal request must be answered within 1 s;
at the head deadline (5 s here) every one of them must get 408 and be
closed, and the server's threads, descriptors and open connections must
return to their baseline.
"""

import statistics
import threading
import time

import harness
from harness import Testbed, report

CONNECTIONS = 500
HEAD_TIMEOUT = 5.0
PAYLOAD = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slowloris: " + b"a" * 64


class Trickler(threading.Thread):
    """Sends one byte per second on every connection and collects what the
    server answers; a connection is done at EOF, reset or send error."""

    def __init__(self, socks):
        super().__init__(daemon=True)
        self.socks = socks
        self.sent = [0] * len(socks)
        self.got = [b""] * len(socks)
        self.done_at = [None] * len(socks)
        self.answered_at = [None] * len(socks)
        self.started = time.monotonic()
        self.stop = threading.Event()

    def active(self):
        return sum(1 for d in self.done_at if d is None)

    def run(self):
        next_byte = time.monotonic()
        while not self.stop.is_set() and self.active():
            now = time.monotonic()
            send_now = now >= next_byte
            if send_now:
                next_byte += 1.0
            for i, s in enumerate(self.socks):
                if self.done_at[i] is not None:
                    continue
                try:
                    while True:
                        data = s.recv(4096)
                        if not data:
                            self.done_at[i] = time.monotonic()
                            break
                        if not self.got[i]:
                            self.answered_at[i] = time.monotonic()
                        self.got[i] += data
                except BlockingIOError:
                    pass
                except OSError:
                    self.done_at[i] = time.monotonic()
                if self.done_at[i] is None and send_now and not self.got[i]:
                    try:
                        s.send(PAYLOAD[self.sent[i] : self.sent[i] + 1])
                        self.sent[i] += 1
                    except BlockingIOError:
                        pass
                    except OSError:
                        self.done_at[i] = time.monotonic()
            time.sleep(0.02)


@harness.attack("slowloris")
def main():
    harness.raise_fd_limit(CONNECTIONS * 2 + 100)
    with Testbed("--head-timeout-ms", int(HEAD_TIMEOUT * 1000), name="slowloris") as tb:
        time.sleep(0.3)
        base = tb.baseline()
        connect_start = time.monotonic()
        socks = harness.connect_paced(tb, CONNECTIONS)
        for s in socks:
            s.setblocking(False)
        connected = time.monotonic() - connect_start
        trickler = Trickler(socks)
        trickler.start()
        try:
            # A burst of connects can overflow the listen queue (the standard
            # library listens with a backlog of 128); measure once the
            # server holds all 500.
            harness.wait_for(
                lambda: tb.stats()["server"]["open_connections"]
                >= base["open_connections"] + CONNECTIONS,
                3,
            )
            accepted = time.monotonic() - connect_start
            # Normal requests while the 500 trickle, until shortly before
            # the head deadline.
            latencies = []
            errors = []
            peak_threads = 0
            peak_open = 0
            measure_until = connect_start + HEAD_TIMEOUT - 0.6
            while not latencies or time.monotonic() < measure_until:
                peak_threads = max(peak_threads, tb.threads())
                t = time.monotonic()
                try:
                    status, _, body = tb.get("/", timeout=5)
                    if (status, body) != (200, b"hello"):
                        errors.append(f"{status} {body!r}")
                except OSError as e:
                    errors.append(repr(e))
                latencies.append(time.monotonic() - t)
                peak_open = max(peak_open, tb.stats()["server"]["open_connections"])
                time.sleep(0.1)
            slowest = max(latencies)
            report(
                not errors and slowest < 1.0 and peak_open >= CONNECTIONS,
                "slowloris: normal requests answered while 500 connections trickle",
                f"{len(latencies)} requests, median {statistics.median(latencies) * 1000:.1f} ms, "
                f"max {slowest * 1000:.1f} ms (limit 1000 ms), {peak_open} connections open, "
                f"{peak_threads} threads (baseline {base['threads']}), 500 connected in "
                f"{connected:.2f} s, all accepted after {accepted:.2f} s" + (f"; errors {errors[:3]}" if errors else ""),
            )
            # The deadline: every trickling connection gets 408 and a close.
            harness.wait_for(lambda: trickler.active() == 0, HEAD_TIMEOUT + 5)
        finally:
            trickler.stop.set()
            trickler.join(5)
            for s in socks:
                s.close()
        statuses = [g.split(b"\r\n", 1)[0][9:12] for g in trickler.got]
        got_408 = sum(1 for st in statuses if st == b"408")
        ends = [d - connect_start for d in trickler.done_at if d is not None]
        answers = [a - connect_start for a in trickler.answered_at if a is not None]
        report(
            got_408 == CONNECTIONS
            and len(ends) == CONNECTIONS
            and min(answers) >= HEAD_TIMEOUT - 0.1,
            "slowloris: every trickling connection gets 408 at the head deadline",
            f"{got_408}/{CONNECTIONS} got 408 after sending at most {max(trickler.sent)} bytes, "
            f"answered {min(answers):.2f}-{max(answers):.2f} s and closed "
            f"{min(ends):.2f}-{max(ends):.2f} s after the first connect "
            f"(deadline {HEAD_TIMEOUT:.1f} s)"
            if ends and answers
            else "no connection was answered and closed",
        )
        ok, waited, now = tb.wait_settled(base, 5)
        report(
            ok and tb.alive() and tb.ok_request(),
            "slowloris: threads and connections reclaimed after the deadline",
            f"threads {base['threads']} -> peak {peak_threads} -> {now['threads']}, "
            f"fds {base['fds']} -> {now['fds']}, open connections {now['open_connections']} "
            f"(baseline {base['open_connections']}), settled {waited:.2f} s after the last close",
        )


if __name__ == "__main__":
    main()
    harness.finish()
