"""A hostile or broken server on the Redis port: garbage replies, huge bulk
and array lengths, nesting without end, a reply that never ends, silence,
and a RESP3 reply. The chat must keep serving (streams open with
keep-alives, posts refused with 503), keep its memory bounded, never panic,
reconnect after each, and connect normally once a real Redis takes the port.

    python3 tests/scaleout/hostile.py
"""

import http.client
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "interop"))
from interop_lib import OUT_DIR, Example, check, equal, finish, run_main, wait_for  # noqa: E402

MIB = 1024 * 1024
RSS_LIMIT = 200 * MIB  # far above the chat's ~10 MiB; a reply buffered whole would pass it


def endless(conn):
    """A simple-string line that never ends (bounded here: 1 GiB, 60 s)."""
    conn.sendall(b"+")
    chunk = b"a" * 65536
    deadline = time.monotonic() + 60
    for _ in range(16384):
        if time.monotonic() > deadline:
            break
        conn.sendall(chunk)


def endless_bulk(conn):
    """A bulk within any sane limit's reach, whose bytes never all come."""
    conn.sendall(b"$60000000\r\n")
    for _ in range(100):
        conn.sendall(b"b" * 65536)
        time.sleep(0.05)


# Each connection gets the next of these (the reply to whatever came first).
MODES = {
    "garbage": lambda c: c.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n\x00\xff garbage \r\n"),
    "huge bulk": lambda c: c.sendall(b"$99999999999\r\n"),
    "huge array": lambda c: c.sendall(b"*99999999999\r\n"),
    "negative bulk": lambda c: c.sendall(b"$-7\r\n"),
    "nesting": lambda c: c.sendall(b"*1\r\n" * 100000),
    "endless line": endless,
    "endless bulk": endless_bulk,
    "silence": lambda c: time.sleep(30),
    "resp3 map": lambda c: c.sendall(b"%1\r\n+a\r\n+b\r\n"),
    "integer overflow": lambda c: c.sendall(b":99999999999999999999999\r\n"),
}


class Hostile:
    """Listens on `port`; counts the connections each mode answered."""

    def __init__(self, port=0):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.seen = {name: 0 for name in MODES}
        self.conns = []
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        names = list(MODES)
        n = 0
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            name = names[n % len(names)]
            n += 1
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn, name), daemon=True).start()

    def _serve(self, conn, name):
        try:
            conn.settimeout(5)
            conn.recv(65536)
            self.seen[name] += 1
            MODES[name](conn)
            time.sleep(30)  # then hold the connection: the client must give up itself
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self):
        self.stopped = True
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept, frees the port
        self.sock.close()
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class RawStream:
    """GET /events over HTTP/1.0 (a close-delimited body); counts comment lines."""

    def __init__(self, url):
        host, port = url.split("//")[1].split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.sendall(b"GET /events?room=lobby HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n")
        self.data = b""
        self.ended = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.data += chunk
        except OSError:
            pass
        self.ended = True

    def comments(self):
        return sum(1 for line in self.data.split(b"\n") if line.startswith(b":"))

    def close(self):
        self.sock.close()


def post_status(url, text):
    """POSTs a message: (status, Retry-After or None)."""
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("POST", "/messages?room=lobby", body=text.encode())
        res = conn.getresponse()
        res.read()
        return res.status, res.getheader("Retry-After")
    finally:
        conn.close()


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def main():
    hostile = Hostile()
    chat = Example(
        "chat",
        args=("--redis", f"redis://127.0.0.1:{hostile.port}", "--stream", "hostile", "--keep-alive-ms", "500"),
        tag="hostile-chat",
    )
    stream = RawStream(chat.url)
    posts = []
    peak = [0]

    def exercise_until(done, limit):
        """Posts, samples memory and checks the server until `done()` (at most `limit` s)."""
        deadline = time.monotonic() + limit
        while not done() and time.monotonic() < deadline:
            text = f"while hostile {len(posts)}"
            posts.append((text, *post_status(chat.url, text)))
            peak[0] = max(peak[0], rss(chat.proc.pid)[0])
            time.sleep(0.25)
        return done()

    def every_mode():
        all_seen = exercise_until(lambda: all(hostile.seen.values()), 40)
        missing = [name for name, count in hostile.seen.items() if not count]
        equal(missing, [], "modes the chat never reconnected to see")
        return ", ".join(f"{name} x{count}" for name, count in hostile.seen.items()) if all_seen else None

    check("hostile Redis: the chat reconnects after each bad reply (every kind answered at least once)", every_mode)

    def refused():
        wrong = [p for p in posts if p[1:] != (503, "1")]
        if wrong:
            raise AssertionError(f"{len(wrong)} of {len(posts)} posts answered otherwise, e.g. {wrong[0]}")
        return f"{len(posts)} posts, all 503 with Retry-After: 1"

    check("hostile Redis: every post is refused with 503 and Retry-After: 1 (none accepted into the void)", refused)

    def serving():
        equal(chat.proc.poll(), None, "the chat's exit status")
        if stream.ended:
            raise AssertionError("the open stream ended")
        if stream.comments() < 3:
            raise AssertionError(f"{stream.comments()} keep-alives on the open stream")
        return f"stream open, {stream.comments()} keep-alives"

    check("hostile Redis: the chat keeps serving, its open stream keeps getting keep-alives", serving)

    def memory():
        now, hwm = rss(chat.proc.pid)
        if max(peak[0], hwm) > RSS_LIMIT:
            raise AssertionError(f"VmHWM {hwm / MIB:.1f} MiB, peak VmRSS {peak[0] / MIB:.1f} MiB")
        return f"VmRSS now {now / MIB:.1f} MiB, peak sampled {peak[0] / MIB:.1f} MiB, VmHWM {hwm / MIB:.1f} MiB"

    check(f"hostile Redis: memory stays bounded (VmHWM under {RSS_LIMIT // MIB} MiB)", memory)

    def no_panic():
        for word in ("panicked", "RUST_BACKTRACE"):
            if word in chat.log:
                raise AssertionError(f"stderr says {word!r}: {chat.log[-2000:]}")
        return f"{len(chat.log.splitlines())} log lines"

    check("hostile Redis: no panic in the chat's stderr", no_panic)

    # A real Redis takes the port.
    hostile.stop()
    workdir = tempfile.mkdtemp(prefix="stdsse-scaleout-")
    with open(os.path.join(OUT_DIR, "logs", "hostile-redis.log"), "wb") as log:
        redis = subprocess.Popen(
            ["redis-server", "--port", str(hostile.port), "--bind", "127.0.0.1", "--dir", workdir, "--save", ""],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def recovers():
            started = time.monotonic()
            wait_for(15, "a post accepted", lambda: post_status(chat.url, "real redis")[0] == 204, every=0.1)
            took = time.monotonic() - started
            # The reader may be in its longest back-off (5 s) when the writer is up.
            wait_for(10, "the message on the open stream", lambda: b"data: real redis" in stream.data)
            if stream.ended:
                raise AssertionError("the open stream ended")
            # A post accepted while the server was hostile must not vanish.
            lost = [t for t, status, _ in posts if status == 204 and f"data: {t}\n".encode() not in stream.data]
            if lost:
                raise AssertionError(f"{len(lost)} posts answered 204 while the server was hostile never arrived: {lost[:3]}")
            return f"accepted {took:.1f} s after a real Redis took the port; delivered on the stream open since the start"

        check("hostile Redis replaced by a real one: the chat connects, accepts posts and delivers them", recovers)
    finally:
        stream.close()
        status = chat.stop()
        redis.kill()
        redis.wait(5)
    check("chat exits 0 on SIGINT", lambda: equal(status, 0, "exit status"))
    finish()


if __name__ == "__main__":
    run_main(main, "hostile.py")
