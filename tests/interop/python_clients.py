"""httpx-sse and sseclient-py against the chat example: every message comes
back byte-for-byte as it was posted, and nothing else does. Both are used
exactly as their READMEs show (sseclient-py over requests and over urllib3),
with no filtering of empty events: a stock `json.loads(data)` loop must
survive connect, keep-alives, replay and shutdown."""

import json
import queue
import re
import threading
import time
import urllib.error

import httpx
import requests
import sseclient
import urllib3
from httpx_sse import connect_sse

from interop_lib import (
    LARGEST,
    Example,
    check,
    equal,
    finish,
    post,
    run_main,
    stats,
    wait_for,
    wait_subscribers,
)

HUB_ID = re.compile(r"^[0-9a-f]{8}-(\d+)$")

# Posted to the chat; each must arrive exactly as posted (UTF-8 bytes).
TEXTS = [
    "hello",
    "line one\nline two\nline three",
    "  two leading spaces",
    " one leading space",
    "trailing spaces   ",
    "  both  \n  sides  ",
    "unicode: h\u00e9llo w\u00f6rld \u2014 \u65e5\u672c\u8a9e \u2014 \U0001f389 \u00a0nbsp \u0000\u00ff",
    "\n",
    "\n\n\n",
    "a\n\nb",
    "\nstarts with an empty line",
    "ends with an empty line\n",
    " ",
    "data: looks like a field\nid: 7\nevent: x\nretry: 1\n: looks like a comment",
    "tab\there\t",
    "\ufeffbyte order mark first",
    "\n".join(f"line {i:04d} \u00e9\u00e8 " + "x" * 40 for i in range(1000)),  # ~55 KiB
]
TEXTS.append(LARGEST)
# Keep-alives every 200 ms: a client that took one for an event would show it.
CHAT_ARGS = ("--keep-alive-ms", "200")
# The event format has no way to carry CR: CR and CRLF become LF.
CR_TEXTS = [("a\r\nb", "a\nb"), ("a\rb", "a\nb"), ("a\r\n\r\nb\r", "a\n\nb\n")]


def httpx_sse_reader(url, out, stop, headers=None, handle=None):
    """httpx-sse as its README shows; each event goes to `handle` (default:
    `(event, data, id)` into `out`) until `stop` is set."""
    handle = handle or (lambda sse: out.put((sse.event, sse.data, sse.id)))
    try:
        with httpx.Client() as client:
            with connect_sse(client, "GET", url, headers=headers or {}) as event_source:
                for sse in event_source.iter_sse():
                    handle(sse)
                    if stop.is_set():
                        return
        out.put(("end", "", ""))
    except Exception as e:  # noqa: BLE001
        out.put(("error", repr(e), ""))


def sseclient_reader(open_response):
    """A reader that feeds sseclient-py the response `open_response(url,
    headers)` returns, as its README shows: a requests Response
    (`with_requests`; requests reads it in 128-byte blocks, which a chunk
    ends early) or a urllib3 one (`with_urllib3`)."""

    def read(url, out, stop, headers=None, handle=None):
        handle = handle or (lambda event: out.put((event.event, event.data, event.id)))
        headers = {"Accept": "text/event-stream", **(headers or {})}
        try:
            client = sseclient.SSEClient(open_response(url, headers))
            for event in client.events():
                handle(event)
                if stop.is_set():
                    return
            out.put(("end", "", ""))
        except Exception as e:  # noqa: BLE001
            out.put(("error", repr(e), ""))

    return read


sseclient_requests_reader = sseclient_reader(lambda url, headers: requests.get(url, stream=True, headers=headers))
sseclient_urllib3_reader = sseclient_reader(
    lambda url, headers: urllib3.PoolManager().request("GET", url, preload_content=False, headers=headers)
)


def json_loop(reader, url, out, headers=None):
    """Runs `reader` with the README's loop body, `json.loads(data)`, on every
    event it yields: an event with empty data raises, and ends it."""
    threading.Thread(
        target=reader,
        args=(url, out, threading.Event()),
        kwargs={"headers": headers, "handle": lambda e: out.put(("json", json.loads(e.data), e.id))},
        daemon=True,
    ).start()


def take(out, n, timeout, what):
    """The next `n` events from the queue, within `timeout` seconds."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        try:
            item = out.get(timeout=max(left, 0.001))
        except queue.Empty:
            raise AssertionError(f"{what}: {len(got)} of {n} events after {timeout} s") from None
        if item[0] in ("error", "end"):
            raise AssertionError(f"{what}: the client {'failed: ' + item[1] if item[1] else 'ended'}")
        got.append(item)
    return got


def compare(got, expected, what):
    for i, ((event, data, event_id), text) in enumerate(zip(got, expected)):
        equal(event, "message", f"{what}: event {i} type")
        if data.encode("utf-8") != text.encode("utf-8"):
            raise AssertionError(f"{what}: event {i} data: expected {text[:200]!r}, got {data[:200]!r}")
        if not HUB_ID.match(event_id or ""):
            raise AssertionError(f"{what}: event {i} id {event_id!r} is not <epoch>-<n>")


def main():
    chat = Example("chat", args=CHAT_ARGS, tag="python-chat")
    url = f"{chat.url}/events"
    readers = {
        "httpx-sse": httpx_sse_reader,
        "sseclient-py (requests)": sseclient_requests_reader,
        "sseclient-py (urllib3)": sseclient_urllib3_reader,
    }
    queues = {name: queue.Queue() for name in readers}
    stop = threading.Event()
    for name, reader in readers.items():
        threading.Thread(target=reader, args=(url, queues[name], stop), daemon=True).start()
    ready = []

    def subscribed():
        wait_subscribers(chat.url, len(readers))
        # Idle long enough for keep-alives after the connect.
        time.sleep(0.5)
        for text in TEXTS:
            post(chat.url, text)
        for text, _ in CR_TEXTS:
            post(chat.url, text)
        ready.append(True)

    check("chat: every Python client subscribed, messages posted", subscribed)
    all_events = {}
    for name in readers:
        def texts(name=name):
            if not ready:
                raise AssertionError("nothing was posted")
            got = take(queues[name], len(TEXTS) + len(CR_TEXTS), 10, name)
            all_events[name] = got
            compare(got[: len(TEXTS)], TEXTS, name)
            return f"{len(TEXTS)} messages byte-for-byte (multi-line, spaces, unicode, empty lines, 55 KiB, 64 KiB)"

        check(f"{name}: messages arrive byte-for-byte as posted", texts)

        def cr(name=name):
            got = all_events[name][len(TEXTS):]
            compare(got, [want for _, want in CR_TEXTS], name)

        check(f"{name}: CR and CRLF inside a message arrive as LF", cr)

    def same_ids():
        ids = {name: [e[2] for e in events] for name, events in all_events.items()}
        equal(len(ids), len(readers), "clients that got every message")
        for name in readers:
            equal(ids[name], ids["httpx-sse"], f"ids seen by {name} and httpx-sse")
        numbers = [int(HUB_ID.match(i).group(1)) for i in ids["httpx-sse"]]
        equal(numbers, sorted(set(numbers)), "ids increase")
        return f"ids {ids['httpx-sse'][0]} .. {ids['httpx-sse'][-1]}"

    check("httpx-sse and sseclient-py (requests, urllib3) see the same ids, increasing", same_ids)

    def resume():
        events = all_events["httpx-sse"]
        k = 5
        last_id = events[k - 1][2]
        out = queue.Queue()
        threading.Thread(
            target=httpx_sse_reader, args=(url, out, threading.Event(), {"Last-Event-ID": last_id}), daemon=True
        ).start()
        before = stats(chat.url)["hub"]["replay_hits"]
        got = take(out, len(events) - k, 10, "replay")
        compare(got, TEXTS[k:] + [want for _, want in CR_TEXTS], "replay")
        equal(got[0][2], events[k][2], "first replayed id")
        wait_for(5, "the server to count a replay hit", lambda: stats(chat.url)["hub"]["replay_hits"] > before)
        return f"Last-Event-ID {last_id}: {len(got)} later messages replayed"

    check("httpx-sse: Last-Event-ID header resumes from the server's history", resume)

    # A short event on an otherwise idle stream: a client that waits for a
    # block of bytes to fill (not a chunk to end) would hold it back until
    # more traffic came, the next keep-alive 15 s later at the earliest.
    for name in ("sseclient-py (requests)", "sseclient-py (urllib3)"):
        def short_event(name=name):
            out = queue.Queue()
            n = stats(chat.url)["hub"]["subscribers"]
            threading.Thread(target=readers[name], args=(url, out, threading.Event()), daemon=True).start()
            wait_for(5, "the subscription", lambda: stats(chat.url)["hub"]["subscribers"] > n)
            posted = time.monotonic()
            post(chat.url, "short")
            got = take(out, 1, 2, name)
            equal(got[0][1], "short", "data")
            return f"arrived after {round((time.monotonic() - posted) * 1000)} ms"

        check(f"{name}, used as its README shows: a short event on an idle stream arrives within 2 s", short_event)

    def one_byte_more_is_refused():
        try:
            post(chat.url, LARGEST + "x")
        except urllib.error.HTTPError as e:
            return equal(e.code, 413, "status")
        raise AssertionError("a message of MAX_MESSAGE + 1 bytes was accepted")

    check("chat: a message of MAX_MESSAGE + 1 bytes is refused with 413", one_byte_more_is_refused)

    # The READMEs' loop, `json.loads(data)` on every event, on a connect, a
    # replay (Last-Event-ID) and the keep-alives in between; then shutdown.
    loops = {}
    first_id = {}

    def json_connect():
        n = stats(chat.url)["hub"]["subscribers"]
        for name, reader in readers.items():
            loops[name] = queue.Queue()
            json_loop(reader, url, loops[name])
        wait_subscribers(chat.url, n + len(readers))
        post(chat.url, json.dumps({"n": 1}))
        time.sleep(0.5)  # keep-alives after an event with an id
        post(chat.url, json.dumps({"n": 2}))
        for name, out in loops.items():
            got = take(out, 2, 10, name)
            equal([g[1] for g in got], [{"n": 1}, {"n": 2}], f"{name}: json.loads of each event")
            first_id[name] = got[0][2]

    check("httpx-sse, sseclient-py: json.loads(data) on every event of a connect with keep-alives", json_connect)

    def json_replay():
        n = stats(chat.url)["hub"]["subscribers"]
        replays = {}
        for name, reader in readers.items():
            replays[name] = queue.Queue()
            json_loop(reader, url, replays[name], headers={"Last-Event-ID": first_id[name]})
        wait_subscribers(chat.url, n + len(readers))
        time.sleep(0.5)
        post(chat.url, json.dumps({"n": 3}))
        for name, out in replays.items():
            got = take(out, 2, 10, f"{name} replay")
            equal([g[1] for g in got], [{"n": 2}, {"n": 3}], f"{name}: json.loads after Last-Event-ID")
            loops[name + " (replay)"] = out

    check("httpx-sse, sseclient-py: json.loads(data) on every event of a replay (Last-Event-ID)", json_replay)

    stop.set()
    check("chat exits 0 on SIGINT", lambda: equal(chat.stop(), 0, "exit status"))

    def json_shutdown():
        for name, out in loops.items():
            rest = []
            item = out.get(timeout=10)
            while item[0] == "json":
                rest.append(item[1])
                item = out.get(timeout=10)
            # A connection cut is not what this checks; a phantom event is.
            if item[0] == "error" and "JSONDecodeError" in item[1]:
                raise AssertionError(f"{name}: json.loads failed at shutdown: {item[1]}")
            equal(rest, [] if "replay" in name else [{"n": 3}], f"{name}: the events left at shutdown")
        return "each loop ended without an empty event"

    check("httpx-sse, sseclient-py: json.loads(data) loops end at shutdown without an empty event", json_shutdown)
    finish()


if __name__ == "__main__":
    run_main(main, "python_clients.py")
