"""Shared by the robustness attack scripts: start and stop the testbed
server (testbed.rs here, built as an example), read its process counters
from /proc, speak just enough HTTP over raw sockets, and report results.

Every attack prints one line per check, `PASS name: details` or
`FAIL name: details`; run.sh counts them. Every wait here is bounded.
Python standard library only; Linux only (/proc).
"""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTBED = os.environ.get(
    "TESTBED", os.path.join(ROOT, "target", "release", "examples", "testbed")
)
HOST = "127.0.0.1"

passed = 0
failed = 0

# SIGTERM (run.sh's timeout) unwinds like an exception, so that every
# `with Testbed(...)` stops its server on the way out.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def report(ok, name, details=""):
    """Prints one PASS/FAIL line."""
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
    line = f"{'PASS' if ok else 'FAIL'} {name}"
    if details:
        line += f": {details}"
    print(line, flush=True)
    return ok


def attack(name):
    """Decorator: runs an attack function, turning an exception into a FAIL
    line (with the traceback on stderr) instead of ending the script."""

    def wrap(fn):
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - any error fails the attack
                traceback.print_exc(file=sys.stderr)
                report(False, name, f"crashed: {type(e).__name__}: {e}")
                return None

        return run

    return wrap


def finish():
    """Exits with status 1 if any check failed."""
    sys.stdout.flush()
    sys.exit(1 if failed else 0)


def wait_for(predicate, timeout, interval=0.05):
    """Polls `predicate` until it returns a true value or `timeout` seconds
    pass; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


class Testbed:
    """One testbed process on a free port of 127.0.0.1; stderr goes to a
    file (so a chatty server never blocks on a full pipe)."""

    def __init__(self, *args, name="testbed"):
        self.name = name
        self.stopped = False
        self.log = tempfile.NamedTemporaryFile(
            prefix="stdsse-testbed-", suffix=".log", delete=False
        )
        self.proc = subprocess.Popen(
            [TESTBED, "--addr", f"{HOST}:0", *map(str, args)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        self.pid = self.proc.pid
        # run.sh kills what is recorded here should this script be killed.
        self.pidfile = None
        run_dir = os.environ.get("ROBUSTNESS_RUN_DIR")
        if run_dir:
            self.pidfile = os.path.join(run_dir, f"testbed.{self.pid}")
            open(self.pidfile, "w").close()
        self.port = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(self.log.name, "rb") as f:
                first = f.readline()
            if first.endswith(b"\n"):
                text = first.decode()
                if not text.startswith("listening on http://"):
                    raise RuntimeError(f"unexpected first line: {text!r}")
                self.port = int(text.strip().rsplit(":", 1)[1])
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        if self.port is None:
            tail = self.stderr_tail()
            self.stop()
            raise RuntimeError(f"testbed did not start: {tail}")
        self.addr = (HOST, self.port)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        """SIGTERM (graceful shutdown), then SIGKILL after 10 s. Reports
        whether the server was still running and then shut down cleanly
        (exit status 0)."""
        if self.stopped:
            return
        self.stopped = True
        try:
            self._stop()
        finally:
            if self.proc.poll() is None:  # interrupted while stopping
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.log.close()
            for path in (self.log.name, self.pidfile):
                try:
                    if path:
                        os.unlink(path)
                except OSError:
                    pass

    def _stop(self):
        crashed = self.proc.poll()
        if crashed is None:
            start = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            try:
                status = self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                status = "killed after 10 s"
            if self.port is not None:
                report(
                    status == 0,
                    f"{self.name}: graceful shutdown after the attack",
                    f"exit status {status} {time.monotonic() - start:.2f} s after SIGTERM",
                )
        elif self.port is not None:
            report(
                False,
                f"{self.name}: the server exited during the attack",
                f"exit status {crashed}; stderr ends with: {self.stderr_tail(5)!r}",
            )

    def stderr_tail(self, lines=20):
        try:
            with open(self.log.name, "rb") as f:
                data = f.read()
        except OSError:
            return ""
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])

    # --- /proc -----------------------------------------------------------

    def status_field(self, name):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
        raise KeyError(name)

    def threads(self):
        return self.status_field("Threads")

    def rss_kib(self):
        return self.status_field("VmRSS")

    def fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    # --- HTTP ------------------------------------------------------------

    def connect(self, timeout=5.0):
        return connect(self.addr, timeout)

    def request(self, method, target, body=b"", timeout=5.0, headers=()):
        """One request on a new connection (Connection: close); returns
        (status, headers dict with lower-case names, body)."""
        with self.connect(timeout) as s:
            head = f"{method} {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            for name, value in headers:
                head += f"{name}: {value}\r\n"
            if body or method == "POST":
                head += f"Content-Length: {len(body)}\r\n"
            s.sendall(head.encode() + b"\r\n" + body)
            reader = Reader(s)
            return reader.response(head_only=(method == "HEAD"))

    def get(self, target, timeout=5.0):
        return self.request("GET", target, timeout=timeout)

    def stats(self):
        status, _, body = self.get("/stats")
        if status != 200:
            raise RuntimeError(f"/stats answered {status}")
        return json.loads(body)

    def baseline(self):
        """Threads, descriptors and counters once the server is idle."""
        # /proc first: the /stats request's own connection thread and socket
        # are not counted (its open connection is, every time alike).
        threads, fds = self.threads(), self.fds()
        stats = self.stats()
        return {
            "threads": threads,
            "fds": fds,
            "open_connections": stats["server"]["open_connections"],
            "open_streams": stats["server"]["open_streams"],
            "subscribers": stats["hub"]["subscribers"],
        }

    def settled(self, base):
        """Whether threads, descriptors, connections, streams and
        subscribers are back at `base`. Returns (ok, now)."""
        now = self.baseline()
        ok = all(now[k] <= base[k] for k in base)
        return ok, now

    def wait_settled(self, base, timeout):
        """Waits until `settled`; returns (ok, seconds, last values)."""
        start = time.monotonic()
        last = None
        while True:
            ok, last = self.settled(base)
            if ok or time.monotonic() - start >= timeout:
                return ok, time.monotonic() - start, last
            time.sleep(0.05)

    def ok_request(self, timeout=5.0):
        """A normal GET / on a new connection: 200 hello?"""
        try:
            status, _, body = self.get("/", timeout)
            return status == 200 and body == b"hello"
        except OSError:
            return False


def connect(addr, timeout=5.0, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(addr)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def reset(s):
    """Closes a socket abruptly: SO_LINGER with a zero timeout makes close()
    send RST instead of FIN."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()


class Reader:
    """Reads HTTP responses from a socket with a buffer (for pipelining)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.deadline = time.monotonic() + 30

    def _more(self):
        if time.monotonic() > self.deadline:
            raise socket.timeout("response not complete within 30 s")
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def response(self, head_only=False):
        """The next response: (status, headers, body). Raises EOFError when
        the connection closes before a whole response, socket.timeout when
        a read takes longer than the socket's timeout or the whole response
        longer than 30 s."""
        self.deadline = time.monotonic() + 30
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 1 << 20:
                raise ValueError("response head too large")
            self._more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ValueError(f"bad status line {lines[0]!r}")
        status = int(parts[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0
        if not head_only and status not in (204, 304) and not 100 <= status < 200:
            length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._more()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def final_response(self, head_only=False):
        """The next response that is not 1xx."""
        while True:
            status, headers, body = self.response(head_only)
            if status >= 200:
                return status, headers, body

    def closed_cleanly(self, timeout=3.0):
        """After the last response: does the connection end with a FIN and
        no more bytes? Returns 'eof', 'reset', 'timeout' or 'bytes'."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if self.buf:
                    return "bytes"
                data = self.sock.recv(65536)
                if not data:
                    return "eof"
                self.buf += data
        except ConnectionResetError:
            return "reset"
        except socket.timeout:
            return "timeout"


def raise_fd_limit(want):
    """Raises the soft RLIMIT_NOFILE towards `want` (up to the hard limit);
    returns the soft limit in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def open_connections(tb):
    return tb.stats()["server"]["open_connections"]


def connect_paced(tb, n, batch=100, timeout=5.0, rcvbuf=None, then=None):
    """Opens `n` connections in batches, waiting after each batch (up to 3 s)
    until the server holds them, so that the burst does not overflow the
    listen queue (the standard library listens with a backlog of 128) and
    cost a 1 s SYN retransmission. `then(sock)` runs on each new socket
    (for example to send a request). Only for connections the server keeps
    open (not past max_connections)."""
    base = open_connections(tb)
    socks = []
    for i in range(n):
        s = connect(tb.addr, timeout, rcvbuf)
        if then is not None:
            then(s)
        socks.append(s)
        if (i + 1) % batch == 0 or i + 1 == n:
            wait_for(lambda: open_connections(tb) >= base + i + 1, 3)
    return socks


class Body:
    """Decodes a response body as it arrives: chunked (RFC 9112 7.1, checked
    strictly: a framing error is a server bug) or delimited by the close."""

    def __init__(self, chunked):
        self.chunked = chunked
        self.buf = b""
        self.pos = 0
        self.state = "size"
        self.left = 0
        self.chunks = 0

    @property
    def ended(self):
        return self.state == "done"

    def feed(self, data):
        """Returns the body bytes in `data` (and what was held back)."""
        if not self.chunked:
            return data
        self.buf = self.buf[self.pos :] + data
        self.pos = 0
        out = []
        buf = self.buf
        while True:
            if self.state == "size":
                end = buf.find(b"\r\n", self.pos)
                if end < 0:
                    if len(buf) - self.pos > 18:
                        raise ValueError(f"chunk size line {buf[self.pos:self.pos + 20]!r}")
                    break
                line = buf[self.pos : end]
                if not 1 <= len(line) <= 16 or line.strip(b"0123456789abcdefABCDEF"):
                    raise ValueError(f"bad chunk size line {line!r}")
                self.pos = end + 2
                self.left = int(line, 16)
                self.state = "data" if self.left else "trailer"
                self.chunks += 1
            elif self.state == "data":
                take = min(self.left, len(buf) - self.pos)
                out.append(buf[self.pos : self.pos + take])
                self.pos += take
                self.left -= take
                if self.left:
                    break
                self.state = "crlf"
            elif self.state in ("crlf", "trailer"):
                if len(buf) - self.pos < 2:
                    break
                if buf[self.pos : self.pos + 2] != b"\r\n":
                    raise ValueError(f"no CRLF after chunk data: {buf[self.pos:self.pos + 10]!r}")
                self.pos += 2
                self.state = "size" if self.state == "crlf" else "done"
            else:
                if self.pos < len(buf):
                    raise ValueError("bytes after the last chunk")
                break
        return b"".join(out)


def open_stream(addr, target="/events", timeout=5.0, version="1.1"):
    """Connects and requests an event stream with HTTP/`version`. Returns
    (sock, Body, first body bytes) once the 200 head is in; raises
    otherwise."""
    sock = connect(addr, timeout)
    sock.sendall(f"GET {target} HTTP/{version}\r\nHost: t\r\n\r\n".encode())
    data = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in data:
        if time.monotonic() > deadline or len(data) > 65536:
            raise TimeoutError("no event-stream head")
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(f"closed before the head: {data[:40]!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 200 "):
        raise ValueError(f"answered {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("content-type") != "text/event-stream":
        raise ValueError(f"not an event stream: {headers}")
    body = Body(headers.get("transfer-encoding", "").lower() == "chunked")
    return sock, body, body.feed(rest)
