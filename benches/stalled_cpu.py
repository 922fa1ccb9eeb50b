#!/usr/bin/env python3
"""CPU of the chat example with N stalled subscribers and nothing published.

usage: benches/stalled_cpu.py PATH_TO_CHAT_BINARY [clients=400] [messages=60] [size=15000]

Starts the chat example on 127.0.0.1:0, opens N raw TCP event streams to
/events?room=stall that never read, posts `messages` messages of `size`
bytes to that room (enough to fill the sockets' buffers, under the hub's
backlog bound), stops publishing, and reads utime+stime of the server from
/proc/PID/stat: over 1..9 s after the last post (before a 10 s stall
timeout can act) and over a 20 s window from 1 s after the last post.
"""
import json, os, socket, subprocess, sys, threading, time

chat = sys.argv[1]
clients = int(sys.argv[2]) if len(sys.argv) > 2 else 400
messages = int(sys.argv[3]) if len(sys.argv) > 3 else 60
size = int(sys.argv[4]) if len(sys.argv) > 4 else 15000
tick = os.sysconf("SC_CLK_TCK")

server = subprocess.Popen([chat, "--addr", "127.0.0.1:0"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
line = server.stderr.readline()  # the example prints its address on stderr
assert "listening on http://" in line, line
# The access log follows on stderr: drain it, or the server blocks on it.
threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()
host, port = line.split("http://")[1].strip().rstrip("/").split(":")
port = int(port)

def cpu():
    fields = open(f"/proc/{server.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick  # utime, stime

def request(method, target, body=b""):
    s = socket.create_connection((host, port))
    s.settimeout(10)
    s.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
              f"Connection: close\r\n\r\n".encode() + body)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return data.split(b"\r\n\r\n", 1)[1]

def stats():
    return json.loads(request("GET", "/stats"))

streams = []
for _ in range(clients):
    # A small receive buffer, so that a few messages fill what the kernel
    # holds for a client that does not read.
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, port))
    s.sendall(b"GET /events?room=stall HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    streams.append(s)  # never read
deadline = time.time() + 10
while stats().get("hub", stats()).get("subscribers", 0) < clients:
    assert time.time() < deadline, stats()
    time.sleep(0.05)
for n in range(messages):
    request("POST", "/messages?room=stall", (f"{n:04}" + "x" * (size - 4)).encode())
last = time.time()
time.sleep(1)
c0 = cpu(); t0 = time.time()
time.sleep(max(0, last + 9 - time.time()))
c1 = cpu(); t1 = time.time()
s1 = stats()
time.sleep(max(0, t0 + 20 - time.time()))
c2 = cpu(); t2 = time.time()
s2 = stats()
print(f"1..9 s after the last post: {100 * (c1 - c0) / (t1 - t0):.1f}% of a core; stats then: {json.dumps(s1)}")
print(f"20 s window from 1 s:       {100 * (c2 - c0) / (t2 - t0):.1f}% of a core; stats then: {json.dumps(s2)}")
server.terminate()
server.wait()
