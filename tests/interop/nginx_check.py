"""Through nginx (started by nginx.sh, proxy buffering left on): events
arrive within 100 ms of the POST, and a reconnect with Last-Event-ID
resumes. Usage: nginx_check.py PROXY_URL DIRECT_URL"""

import queue
import socket
import statistics
import sys
import threading
import time

import httpx
from httpx_sse import connect_sse

from interop_lib import LARGEST, check, equal, finish, post, run_main, stats, wait_for, wait_subscribers

PROXY, DIRECT = sys.argv[1], sys.argv[2]
LATENCY_LIMIT = 0.100


class Reader:
    """An httpx-sse subscriber; every event goes to `events` with its arrival time."""

    def __init__(self, url, headers=None, wait_head=True):
        self.events = queue.Queue()
        self.headers = {}
        self.opened = threading.Event()
        self._sock = None
        self._client = httpx.Client(timeout=httpx.Timeout(10.0, read=None))
        threading.Thread(target=self._run, args=(url, headers or {}), daemon=True).start()
        if wait_head and not self.opened.wait(5):
            raise AssertionError(f"no response head from {url} within 5 s")

    def _run(self, url, headers):
        try:
            with connect_sse(self._client, "GET", url, headers=headers) as source:
                self.headers = dict(source.response.headers)
                self.status = source.response.status_code
                stream = source.response.extensions["network_stream"]
                self._sock = stream.get_extra_info("socket")
                self.opened.set()
                for sse in source.iter_sse():
                    self.events.put((time.monotonic(), sse.event, sse.data, sse.id))
        except Exception as e:  # noqa: BLE001 - closed by close(), or a failure
            self.events.put((time.monotonic(), "error", repr(e), ""))
            self.opened.set()

    def take(self, n, timeout):
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            try:
                item = self.events.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                break
            if item[1] == "error":
                raise AssertionError(f"the stream failed: {item[2]}")
            got.append(item)
        return got

    def close(self):
        """Hangs up at once (FIN), even while the reader thread is blocked."""
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._client.close()


def subscribers():
    return stats(DIRECT)["hub"]["subscribers"]


def main():
    state = {}

    def latency():
        n = subscribers()
        reader = Reader(f"{PROXY}/events")
        state["reader"] = reader
        equal(reader.status, 200, "status through nginx")
        equal(reader.headers.get("content-type"), "text/event-stream", "Content-Type through nginx")
        wait_subscribers(DIRECT, n + 1)
        delays = []
        for i in range(10):
            text = f"through nginx {i}"
            started = time.monotonic()
            post(PROXY, text)
            got = reader.take(1, 2)
            if not got:
                raise AssertionError(f"message {i} did not arrive through nginx within 2 s")
            at, event, data, event_id = got[0]
            equal((event, data), ("message", text), f"event {i}")
            delays.append(at - started)
            state["last_id"] = event_id
            time.sleep(0.05)
        worst = max(delays)
        summary = f"POST to event through nginx: median {statistics.median(delays) * 1000:.1f} ms, max {worst * 1000:.1f} ms"
        if worst > LATENCY_LIMIT:
            raise AssertionError(summary + f" (limit {LATENCY_LIMIT * 1000:.0f} ms)")
        return summary

    check("nginx (buffering on): each event arrives within 100 ms of its POST", latency)

    def largest():
        post(PROXY, LARGEST)
        got = state["reader"].take(1, 5)
        if not got or got[0][2] != LARGEST:
            raise AssertionError(f"through nginx: {got[0][2][:100] if got else 'nothing'!r} instead of the message")
        state["last_id"] = got[0][3]

    check("nginx: the chat's largest message (MAX_MESSAGE, 64 KiB) arrives byte-exact", largest)

    def resume():
        reader = state.get("reader")
        if not reader:
            raise AssertionError("the previous check failed")
        reader.close()
        last_id = state["last_id"]
        later = ["missed 1", "missed 2\nwith two lines", "missed 3 \u00e9\U0001f389"]
        for text in later:
            post(PROXY, text)
        hits = stats(DIRECT)["hub"]["replay_hits"]
        again = Reader(f"{PROXY}/events", {"Last-Event-ID": last_id})
        got = again.take(3, 5)
        equal([(e, d) for _, e, d, _ in got], [("message", t) for t in later], "events after the reconnect")
        # And nothing else: no duplicate of what was seen before the reconnect.
        extra = again.take(1, 0.3)
        equal(extra, [], "events after the missed ones")
        if stats(DIRECT)["hub"]["replay_hits"] <= hits:
            raise AssertionError("the server did not count a replay hit")
        # Then the live stream goes on through the proxy.
        post(PROXY, "live again")
        live = again.take(1, 2)
        equal([d for _, _, d, _ in live], ["live again"], "the next live event")
        again.close()
        return f"Last-Event-ID {last_id} through nginx: the 3 missed messages, then live"

    check("nginx: a reconnect through the proxy with Last-Event-ID resumes (only the later messages)", resume)

    def control():
        # /ignored/ is the same proxy with `proxy_ignore_headers X-Accel-Buffering`:
        # there nginx's buffering holds small events back, which shows that the
        # header is what makes the check above pass.
        # The earlier readers are gone once the hub has noticed (within ~1 s).
        wait_for(5, "the earlier subscribers to leave", lambda: subscribers() == 0)
        reader = Reader(f"{PROXY}/ignored/events", wait_head=False)
        wait_subscribers(DIRECT, 1)
        posted = time.monotonic()
        post(PROXY, "held back?")
        got = reader.take(1, 0.5)
        head = reader.opened.is_set()
        reader.close()
        if got:
            raise AssertionError(
                f"the event arrived in {(got[0][0] - posted) * 1000:.0f} ms without the header: "
                "nginx did not buffer, so the 100 ms check proves nothing"
            )
        return "without it nginx held the event back for 500 ms" + ("" if head else " (and the response head too)")

    check("nginx control: with X-Accel-Buffering ignored, buffering holds the event back", control)
    finish()


if __name__ == "__main__":
    run_main(main, "nginx_check.py")
