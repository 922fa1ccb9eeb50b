"""A subscriber that never reads while three others (two HTTP/1.1, one
HTTP/1.0) receive 10,000 events
of 1,500 bytes (published in rounds of 1,000, each round received in full
by the readers before the next; the hub's default backlog bound is 2,000
events / 2 MiB per subscriber).

The silent one (a 4 KiB receive buffer, never read) must be evicted (hub
`evicted` >= 1, and its socket ends with EOF or RST once drained); the
readers must get all 10,000 events, in order, with consecutive hub ids and
intact data; the server's resident memory must stay bounded and must not
grow with the number of events.
"""

import socket
import threading
import time

import harness
from harness import Testbed, connect, report

READERS = 3
ROUNDS = 10
PER_ROUND = 1000
SIZE = 1500
TOTAL = ROUNDS * PER_ROUND
RSS_LIMIT_KIB = 64 * 1024  # generous: the history and one backlog are ~3 MiB
REQUEST = b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n"


class Subscriber(threading.Thread):
    """Reads an event stream and checks every `bulk` event as it comes."""

    def __init__(self, addr, version):
        super().__init__(daemon=True)
        self.version = version
        self.sock, self.body, self.first = harness.open_stream(addr, timeout=10, version=version)
        self.count = 0
        self.errors = []
        self.last_seq = None
        self.epoch = None
        self.ended = None
        self.stop = threading.Event()

    def check(self, block):
        fields = {}
        for line in block.split(b"\n"):
            if line.startswith(b":") or not line:
                continue
            name, _, value = line.partition(b":")
            fields[name] = value[1:] if value.startswith(b" ") else value
        if fields.get(b"event") != b"bulk":
            return
        epoch, _, seq = fields.get(b"id", b"").decode().rpartition("-")
        data = fields.get(b"data", b"")
        # Each /publish call numbers its events from 0.
        expected_data = (b"%08d" % (self.count % PER_ROUND)).ljust(SIZE, b"x")
        if self.epoch is None:
            self.epoch = epoch
        if epoch != self.epoch or not seq.isdigit():
            self.errors.append(f"event {self.count}: id {fields.get(b'id')!r}")
        elif self.last_seq is not None and int(seq) != self.last_seq + 1:
            self.errors.append(f"event {self.count}: id {seq} after {self.last_seq}")
        elif data != expected_data:
            self.errors.append(f"event {self.count}: data {data[:20]!r}...")
        if seq.isdigit():
            self.last_seq = int(seq)
        self.count += 1

    def run(self):
        buf = self.first
        self.sock.settimeout(0.5)
        while not self.stop.is_set():
            *blocks, buf = buf.split(b"\n\n")
            for block in blocks:
                self.check(block)
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError as e:
                self.ended = f"error {e}"
                return
            if not chunk:
                self.ended = "eof"
                return
            try:
                buf += self.body.feed(chunk)
            except ValueError as e:
                self.ended = f"bad framing: {e}"
                return


def sysctl(name):
    try:
        with open(f"/proc/sys/{name}") as f:
            return f.read().split()
    except OSError:
        return "?"


def drain(sock, timeout):
    """Reads the silent subscriber's socket until it ends; returns (how, bytes)."""
    sock.settimeout(1)
    total = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return "reset", total
        if not chunk:
            return "eof", total
        total += len(chunk)
    return "still open", total


@harness.attack("slow subscriber")
def main():
    with Testbed(name="slow subscriber") as tb:
        time.sleep(0.3)
        base = tb.baseline()
        rss_start = tb.rss_kib()
        silent = connect(tb.addr, 10, rcvbuf=4096)
        silent.sendall(REQUEST)
        # The last reader asks with HTTP/1.0: a body without chunks.
        readers = [Subscriber(tb.addr, "1.1") for _ in range(READERS - 1)]
        readers.append(Subscriber(tb.addr, "1.0"))
        for r in readers:
            r.start()
        harness.wait_for(lambda: tb.stats()["hub"]["subscribers"] == READERS + 1, 5)
        rss = []
        evicted_after = None
        start = time.monotonic()
        try:
            for number in range(1, ROUNDS + 1):
                status, _, _ = tb.request(
                    "POST", f"/publish?count={PER_ROUND}&size={SIZE}", timeout=30
                )
                if status != 200:
                    raise RuntimeError(f"/publish answered {status}")
                want = number * PER_ROUND
                harness.wait_for(lambda: all(r.count >= want or r.ended for r in readers), 20)
                rss.append(tb.rss_kib())
                if evicted_after is None and tb.stats()["hub"]["evicted"] >= 1:
                    evicted_after = want
            took = time.monotonic() - start
        finally:
            for r in readers:
                r.stop.set()
        for r in readers:
            r.join(5)
        stats = tb.stats()
        how, drained = drain(silent, 10)
        silent.close()
        counts = [r.count for r in readers]
        errors = [e for r in readers for e in r.errors]
        report(
            counts == [TOTAL] * READERS and not errors and all(r.ended is None for r in readers),
            "slow subscriber: the readers get all 10,000 events in order",
            f"counts {counts} (HTTP/{', '.join(r.version for r in readers)}), ids consecutive, "
            f"data intact; {TOTAL / took:.0f} events/s per reader" + (f"; errors {errors[:3]}" if errors else "")
            + "".join(f"; reader ended: {r.ended}" for r in readers if r.ended),
        )
        report(
            stats["hub"]["evicted"] >= 1 and how in ("eof", "reset") and drained < TOTAL * SIZE,
            "slow subscriber: the one that never reads is evicted",
            f"hub evicted {stats['hub']['evicted']} (after {evicted_after} events), "
            f"its socket then gave {drained} bytes (of {TOTAL * (SIZE + 30)} published) and "
            f"ended with {how}; subscribers now {stats['hub']['subscribers']}"
            + (
                ""
                if stats["hub"]["evicted"]
                else f" (kernel buffers may have absorbed it all: tcp_wmem {sysctl('net/ipv4/tcp_wmem')})"
            ),
        )
        growth_late = rss[-1] - rss[ROUNDS // 2 - 1]
        report(
            max(rss) < RSS_LIMIT_KIB and growth_late < 4096,
            "slow subscriber: server memory stays bounded",
            f"VmRSS {rss_start} KiB at start, max {max(rss)} KiB (limit {RSS_LIMIT_KIB}), "
            f"{rss[ROUNDS // 2 - 1]} KiB after {TOTAL // 2} events, {rss[-1]} KiB after {TOTAL} "
            f"(growth {growth_late} KiB, limit 4096)",
        )
        for r in readers:
            r.sock.close()
        ok, waited, now = tb.wait_settled(base, 20)
        report(
            ok and tb.alive(),
            "slow subscriber: everything is released when the readers leave",
            f"threads {now['threads']}/{base['threads']}, fds {now['fds']}/{base['fds']}, "
            f"streams {now['open_streams']}, subscribers {now['subscribers']} after {waited:.2f} s",
        )


if __name__ == "__main__":
    main()
    harness.finish()
