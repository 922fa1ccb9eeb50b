"""What applications get wrong: handlers that panic, and event field
values with CR, LF or NUL.

* `GET /panic` (sequentially and from 20 threads at once) must get 500
  every time; the server keeps serving, the `panics` counter counts each
  one, and no thread or descriptor is left behind. `GET /panic-stream`
  panics inside an event-stream handler after the head.
* `/inject` builds events from hostile values: CR, LF or NUL in `id`, CR or
  LF in `event` must be refused with a 400 whose text is the EventError
  naming the field and the character. Values that are accepted (data and
  comments with line breaks, which are split into lines) must not inject
  anything: a subscriber reading the raw stream sees only well-formed
  lines, and no event, id or type that the attacker wrote.
"""

import socket
import threading
import time
import urllib.parse

import harness
from harness import Testbed, connect, report

PANICS = 20


@harness.attack("panics")
def panics(tb):
    time.sleep(0.3)
    base = tb.baseline()
    before = tb.stats()["server"]["panics"]
    statuses = []
    for _ in range(PANICS):
        statuses.append(tb.get("/panic")[0])
        statuses.append(200 if tb.ok_request() else 0)
    lock = threading.Lock()

    def hit():
        try:
            status = tb.get("/panic", timeout=10)[0]
        except OSError as e:
            status = repr(e)
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=hit) for _ in range(PANICS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    counted = tb.stats()["server"]["panics"] - before
    expected = [500, 200] * PANICS + [500] * PANICS
    report(
        sorted(map(str, statuses)) == sorted(map(str, expected))
        and counted == 2 * PANICS
        and tb.ok_request(),
        "panic: a panicking handler gets 500 and the server keeps serving",
        f"{statuses.count(500)} x 500 ({PANICS} in a row, each followed by a good request, "
        f"{PANICS} at once), panics counter +{counted}",
    )
    # A panic inside an event-stream handler, after the head was sent.
    with connect(tb.addr, 5) as s:
        s.sendall(b"GET /panic-stream HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
    counted_stream = tb.stats()["server"]["panics"] - before - counted
    report(
        data.startswith(b"HTTP/1.1 200 ")
        and b": about to panic\n" in data
        and counted_stream == 1
        and tb.ok_request(),
        "panic: a panicking event-stream handler ends its stream only",
        f"stream got {len(data)} bytes then closed, panics counter +{counted_stream}",
    )
    ok, waited, now = tb.wait_settled(base, 5)
    report(
        ok,
        "panic: nothing left behind",
        f"threads {now['threads']}/{base['threads']}, fds {now['fds']}/{base['fds']}, "
        f"connections {now['open_connections']}/{base['open_connections']} after {waited:.2f} s",
    )


# (field, value, refused character name or None when the value is accepted)
REFUSED = [
    ("id", "a\nevent: injected", "LF"),
    ("id", "a\rdata: injected", "CR"),
    ("id", "a\r\nid: injected", "CR"),
    ("id", "\ndata: injected\n\n", "LF"),
    ("id", "abc\0", "NUL"),
    ("id", "\0", "NUL"),
    ("event", "x\nevent: injected", "LF"),
    ("event", "x\rid: injected", "CR"),
    ("event", "x\r\ndata: injected\r\n\r\n", "CR"),
    ("event", "\r", "CR"),
]
ACCEPTED = [
    ("data", "line one\nevent: injected\nid: injected"),
    ("data", "x\rid: injected\r\rretry: 1"),
    ("data", "a\r\n\r\ndata: injected\n\nevent: injected"),
    ("comment", "c\ndata: injected\n\nevent: injected"),
    ("comment", "c\rid: injected"),
    ("id", "ok-1"),
    ("event", "ok"),
]
CHARS = {"LF": "U+000A", "CR": "U+000D", "NUL": "U+0000"}


def inject(tb, field, value):
    query = urllib.parse.urlencode({"field": field, "value": value})
    return tb.get(f"/inject?{query}")


def parse_stream(raw):
    """A small reference parser (WHATWG 9.2.6): returns (events, problems)
    where events are (type, data, id) and problems are malformed lines."""
    events, problems = [], []
    data, event_type, last_id = [], "", ""
    text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    for line in text.split("\n"):
        if line == "":
            if data:
                events.append((event_type or "message", "\n".join(data), last_id))
            data, event_type = [], ""
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if not colon:
            problems.append(f"line without a colon: {line!r}")
            continue
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event_type = value
        elif name == "id":
            if "\0" not in value:
                last_id = value
        elif name == "retry":
            problems.append(f"retry field: {line!r}")
        else:
            problems.append(f"unknown field: {line!r}")
    return events, problems


@harness.attack("injection")
def injection(tb):
    # Two subscribers: HTTP/1.1 (a chunked body) and HTTP/1.0 (a body that
    # ends with the connection).
    subs = [harness.open_stream(tb.addr, version=v) for v in ("1.1", "1.0")]
    harness.wait_for(lambda: tb.stats()["hub"]["subscribers"] >= 2, 5)

    for field, value, char in REFUSED:
        status, _, body = inject(tb, field, value)
        text = body.decode(errors="replace")
        ok = (
            status == 400
            and f"`{field}` field" in text
            and f"invalid character {char} ({CHARS[char]})" in text
        )
        report(ok, f"injection: {field} {value!r} is refused", f"{status} {text.strip()}")

    # NUL in the event type: the encoder may accept it (it cannot break a
    # line, and the standard keeps it in the type) or refuse it; either is
    # fine as long as nothing is injected.
    status, _, body = inject(tb, "event", "a\0b")
    nul_event_accepted = status == 200
    report(
        status == 200
        or (status == 400 and b"`event` field" in body and b"NUL" in body),
        "injection: NUL in the event type is accepted as is or refused",
        f"{status} {body.decode(errors='replace').strip()}",
    )

    for field, value in ACCEPTED:
        status, _, body = inject(tb, field, value)
        report(
            status == 200,
            f"injection: {field} {value!r} is accepted"
            + (" (split into lines)" if field in ("data", "comment") else ""),
            f"{status} {body.decode(errors='replace').strip()}",
        )
    # The end marker, then each subscriber reads until it arrives.
    inject(tb, "id", "end-of-test")
    for version, (sub, framing, raw) in zip(("1.1", "1.0"), subs):
        sub.settimeout(1)
        deadline = time.monotonic() + 5
        while b"id: end-of-test\n" not in raw and time.monotonic() < deadline:
            try:
                chunk = sub.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                break
            raw += framing.feed(chunk)
        sub.close()
        check_wire(version, raw, framing, nul_event_accepted)


def check_wire(version, raw, framing, nul_event_accepted):
    events, problems = parse_stream(raw)
    fields = [line.partition(b":")[0] for line in raw.split(b"\n") if line and not line.startswith(b":")]
    injected = [
        e for e in events if "injected" in e[0] or "injected" in e[2] or e[0] not in ("message", "ok", "a\0b")
    ]
    # Refused values published nothing; hub-assigned ids (`<epoch>-<n>`)
    # are compared as "".
    expected = (
        ([("a\0b", "inject", "")] if nul_event_accepted else [])
        + [
            ("message", "line one\nevent: injected\nid: injected", ""),
            ("message", "x\nid: injected\n\nretry: 1", ""),
            ("message", "a\n\ndata: injected\n\nevent: injected", ""),
            ("message", "inject", "ok-1"),
            ("ok", "inject", ""),
            ("message", "inject", "end-of-test"),
        ]
    )
    got = [(t, d, i if i in ("ok-1", "end-of-test") else "") for t, d, i in events]
    report(
        not problems and not injected and got == expected and set(fields) <= {b"data", b"event", b"id"},
        f"injection: nothing injected on the wire (HTTP/{version} subscriber)",
        f"{len(events)} events"
        + (f" in {framing.chunks} chunks" if framing.chunked else " (close-delimited)")
        + f", field names {sorted(set(f.decode() for f in fields))}, exactly the accepted ones"
        + (f"; problems {problems[:3]}" if problems else "")
        + (f"; injected {injected[:3]}" if injected else "")
        + (f"; got {got}, expected {expected}" if got != expected else ""),
    )


def main():
    with Testbed("--keep-alive-ms", 60000, name="handlers") as tb:
        panics(tb)
        injection(tb)


if __name__ == "__main__":
    main()
    harness.finish()
