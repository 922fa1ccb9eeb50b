"""Malformed and abusive requests (corpus.txt) against the testbed.

Each case is sent on a new connection and must get exactly the expected
status(es), with `Connection: close` and a clean close (FIN, no reset, no
extra bytes) after an error, or stay usable for another request when the
server keeps it open. After every case a normal request on a new
connection must still be answered 200. The whole corpus is then sent a
second time in small fragments (the parser is incremental), and the server
must still be alive with no connection left open.
"""

import codecs
import os
import random
import re
import socket
import time

import harness
from harness import Reader, Testbed, report

HEAD_TIMEOUT_MS = 2000
CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus.txt")
REPEAT = re.compile(r"<<(\d+)\*((?:(?!<<|>>).)*)>>", re.S)


def expand(text):
    """`<<N*TEXT>>` repetition (innermost first), then bytes escapes."""
    while True:
        text, n = REPEAT.subn(lambda m: m.group(2) * int(m.group(1)), text)
        if n == 0:
            break
    return codecs.escape_decode(text.encode("latin-1"))[0]


def load_corpus():
    cases = []
    with open(CORPUS, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            spec, sep, request = line.partition(" =>")
            if not sep:
                raise ValueError(f"corpus.txt:{number}: no ' =>'")
            status, mode, name = spec.split(" ", 2)
            if mode not in ("open", "eof", "stall"):
                raise ValueError(f"corpus.txt:{number}: bad mode {mode}")
            expected = None if status == "close" else [int(s) for s in status.split(",")]
            cases.append(
                {
                    "line": number,
                    "name": name,
                    "mode": mode,
                    "expected": expected,
                    "request": expand(request[1:] if request.startswith(" ") else request),
                }
            )
    return cases


def send(sock, data, fragmented, rng):
    """Sends `data` whole or in small pieces. A reset while sending is not
    an error by itself (the server may answer early and stop reading); the
    answer decides."""
    try:
        if not fragmented:
            sock.sendall(data)
            return
        at = 0
        while at < len(data):
            step = rng.randint(1, 16) if at < 512 else rng.randint(512, 8192)
            sock.sendall(data[at : at + step])
            at += step
            if rng.random() < 0.1:
                time.sleep(0.001)
    except (BrokenPipeError, ConnectionResetError):
        pass


def run_case(tb, case, fragmented, rng):
    """Returns None when the case passed, else what went wrong."""
    timeout = HEAD_TIMEOUT_MS / 1000 + 3 if case["mode"] == "stall" else 5
    sock = tb.connect(timeout)
    try:
        send(sock, case["request"], fragmented, rng)
        if case["mode"] == "eof":
            sock.shutdown(socket.SHUT_WR)
        reader = Reader(sock)
        head_only = case["request"].startswith(b"HEAD ")
        if case["expected"] is None:
            how = reader.closed_cleanly()
            return None if how == "eof" else f"expected a clean close, got {how} {reader.buf[:60]!r}"
        got = []
        headers = {}
        started = time.monotonic()
        try:
            for _ in case["expected"]:
                status, headers, _body = reader.response(head_only)
                got.append(status)
        except (EOFError, ConnectionResetError, socket.timeout, ValueError) as e:
            return f"expected {case['expected']}, got {got} then {type(e).__name__} {e}"
        if got != case["expected"]:
            return f"expected {case['expected']}, got {got}"
        last = got[-1]
        closes = headers.get("connection", "").lower() == "close"
        if last >= 400 and last not in (404, 405) and not closes:
            return f"{last} without Connection: close"
        if case["mode"] == "stall" and time.monotonic() - started < HEAD_TIMEOUT_MS / 1000 - 0.5:
            return "408 came before the head deadline"
        if closes or case["mode"] == "eof":
            if case["mode"] != "eof":
                sock.shutdown(socket.SHUT_WR)
            how = reader.closed_cleanly()
            if how != "eof":
                return f"after {last}: expected a clean close, got {how}"
        else:
            # The connection stays open: it must serve the next request.
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            status, _, body = reader.response()
            if (status, body) != (200, b"hello"):
                return f"kept-alive connection answered {status} {body[:40]!r} next"
        return None
    finally:
        sock.close()


@harness.attack("corpus")
def main():
    cases = load_corpus()
    report(len(cases) >= 60, "corpus size", f"{len(cases)} cases (at least 60)")
    rng = random.Random(0x5EED)
    with Testbed("--head-timeout-ms", HEAD_TIMEOUT_MS, name="corpus") as tb:
        base = tb.baseline()
        for case in cases:
            name = f"corpus line {case['line']}: {case['name']}"
            error = run_case(tb, case, False, rng)
            if error is None and not tb.ok_request():
                error = "a normal request right after it failed"
            expected = "clean close" if case["expected"] is None else case["expected"]
            report(error is None, name, error or f"{expected}, then GET / 200")
        # The same corpus again, every request cut into small pieces.
        start = time.monotonic()
        failures = []
        for case in cases:
            error = run_case(tb, case, True, rng)
            if error is None and not tb.ok_request():
                error = "a normal request right after it failed"
            if error:
                failures.append(f"line {case['line']} ({case['name']}): {error}")
        report(
            not failures,
            "corpus sent in fragments",
            f"{len(cases) - len(failures)}/{len(cases)} cases right in "
            f"{time.monotonic() - start:.1f} s" + ("; " + "; ".join(failures[:5]) if failures else ""),
        )
        ok, waited, now = tb.wait_settled(base, 5)
        report(
            ok and tb.alive(),
            "corpus leaves nothing behind",
            f"threads {base['threads']} -> {now['threads']}, fds {base['fds']} -> {now['fds']}, "
            f"open connections {now['open_connections']} (settled in {waited:.2f} s)",
        )


if __name__ == "__main__":
    main()
    harness.finish()
