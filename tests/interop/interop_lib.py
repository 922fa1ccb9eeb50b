"""Shared by the Python check scripts: start and stop the examples, bounded
waits, and the PASS/FAIL lines that run.sh counts."""

import atexit
import json
import os
import re
import signal
import subprocess
import threading
import time
import traceback
import urllib.request

BIN_DIR = os.environ.get("STDSSE_BIN_DIR", "target/debug/examples")
OUT_DIR = os.environ.get("INTEROP_OUT", "target/interop")
os.makedirs(os.path.join(OUT_DIR, "logs"), exist_ok=True)

# The chat's MAX_MESSAGE (examples/common/mod.rs): a message of exactly that size
# (64 lines of 1024 bytes), the same as lib.mjs and tests/chat_example.rs.
MAX_MESSAGE = 64 * 1024
LARGEST = ("h\u00e9llo \u2713 \U0001f600" + "x" * 1008 + "\n") * 64
assert len(LARGEST.encode("utf-8")) == MAX_MESSAGE

_running = set()
_log_seq = [0]


class Example:
    """A running example; `url`, `port`, and its stderr (access log) in `log`."""

    def __init__(self, name, addr="127.0.0.1:0", args=(), tag=None):
        self.name = name
        _log_seq[0] += 1
        self.file = os.path.join(OUT_DIR, "logs", f"{tag or name}-py{_log_seq[0]}.log")
        self.log = ""
        self._lock = threading.Lock()
        listening = threading.Event()
        self.proc = subprocess.Popen(
            [os.path.join(BIN_DIR, name), "--addr", addr, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _running.add(self.proc)

        def pump():
            with open(self.file, "wb") as out:
                for line in self.proc.stderr:
                    out.write(line)
                    out.flush()
                    text = line.decode("utf-8", "replace")
                    with self._lock:
                        self.log += text
                    # Only a whole line: the last one may lack its LF at EOF.
                    m = re.match(r"^listening on http://(\S+):(\d+)\n$", text)
                    if m and not listening.is_set():
                        self.host, self.port = m.group(1), int(m.group(2))
                        self.url = f"http://{self.host}:{self.port}"
                        listening.set()

        threading.Thread(target=pump, daemon=True).start()
        if not listening.wait(10):
            self.proc.kill()
            raise RuntimeError(f"{name} did not print 'listening on' within 10 s: {self.log.strip()}")

    def stop(self, sig=signal.SIGINT, timeout=10):
        """Sends `sig`, waits (bounded) and returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise RuntimeError(f"{self.name} did not exit within {timeout} s of {sig!r}")
        finally:
            _running.discard(self.proc)


def _kill_all():
    for proc in list(_running):
        if proc.poll() is None:
            proc.kill()


atexit.register(_kill_all)
signal.signal(signal.SIGTERM, lambda *_: (_kill_all(), os._exit(1)))


def post(base_url, text, room="lobby"):
    """POSTs a chat message (UTF-8); it must be answered 204."""
    req = urllib.request.Request(
        f"{base_url}/messages?room={room}", data=text.encode("utf-8"), method="POST"
    )
    with urllib.request.urlopen(req, timeout=5) as res:
        if res.status != 204:
            raise AssertionError(f"POST /messages answered {res.status}")


def stats(base_url):
    with urllib.request.urlopen(f"{base_url}/stats", timeout=5) as res:
        return json.load(res)


def wait_for(timeout, what, fn, every=0.02):
    """Polls `fn` until it returns something truthy, at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def wait_subscribers(base_url, n, timeout=5):
    """Waits until the chat hub counts `n` subscribers: the clients have
    connected, so events posted from then on reach them."""
    wait_for(timeout, f"{n} hub subscribers", lambda: stats(base_url)["hub"]["subscribers"] >= n)


def equal(actual, expected, what):
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


_results = {"passed": 0, "failed": 0}


def check(name, fn):
    """Runs one check; prints PASS or FAIL (and keeps going)."""
    started = time.monotonic()
    try:
        note = fn()
        _results["passed"] += 1
        ms = round((time.monotonic() - started) * 1000)
        print(f"PASS {name} ({ms} ms)" + (f": {note}" if note else ""), flush=True)
        return True
    except Exception as e:  # noqa: BLE001 - any failure is a failed check
        _results["failed"] += 1
        detail = str(e) or traceback.format_exc().strip().splitlines()[-1]
        print(f"FAIL {name}: {detail}", flush=True)
        return False


def finish():
    _kill_all()
    raise SystemExit(1 if _results["failed"] else 0)


def run_main(main, script):
    """Runs a check script's `main`: a crash is one reported failure, not a
    silent exit."""
    try:
        main()
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001
        print(f"FAIL {script} crashed: {e!r}", flush=True)
        raise SystemExit(1)
