#!/usr/bin/env python3
"""Draws benches/results/scale.svg from benches/results/scale.jsonl.

    python3 benches/chart.py

Two panels against the number of clients (log scale): publish-to-receive
latency at 100 events per second (p50 and p99, with the load generator's two
client models), and server memory (RSS) per idle client. Standard library only; the SVG is written by hand.
"""
import json
import math
import os

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "results", "scale.jsonl")
TARGET = os.path.join(HERE, "results", "scale.svg")

rows = {}
with open(SOURCE) as f:
    for line in f:
        r = json.loads(line)
        rows.setdefault(r["clients"], {})[(r["kind"], r.get("per_thread", 1))] = r
clients = sorted(rows)


def values(kind, per_thread, field):
    return [rows[n].get((kind, per_thread), {}).get(field, 0) for n in clients]


series = {
    "p50, 10 clients per thread": values("latency", 10, "p50_ms"),
    "p99, 10 clients per thread": values("latency", 10, "p99_ms"),
    "p99, a thread per client": values("latency", 1, "p99_ms"),
    "RSS per idle client (KiB)": values("idle", 10, "rss_kib_per_client"),
}

W, H, PAD = 360, 240, 48
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H + 30}" '
       f'font-family="sans-serif" font-size="11">',
       f'<rect width="{2 * W}" height="{H + 30}" fill="white"/>']


def panel(x0, title, lines, colors):
    top = max(max(v) for v in lines.values()) or 1
    top = 10 ** math.ceil(math.log10(top)) if top > 0 else 1
    top = top / 2 if max(max(v) for v in lines.values()) <= top / 2 else top
    lo, hi = math.log10(clients[0]), math.log10(clients[-1])
    px = lambda n: x0 + PAD + (math.log10(n) - lo) / ((hi - lo) or 1) * (W - 2 * PAD)
    py = lambda v: H - PAD + 20 - v / top * (H - 2 * PAD)
    out.append(f'<text x="{x0 + W / 2}" y="16" text-anchor="middle" font-weight="bold">{title}</text>')
    out.append(f'<line x1="{x0 + PAD}" y1="{py(0)}" x2="{x0 + W - PAD}" y2="{py(0)}" stroke="#333"/>')
    out.append(f'<line x1="{x0 + PAD}" y1="{py(0)}" x2="{x0 + PAD}" y2="{py(top)}" stroke="#333"/>')
    for i in range(5):
        v = top * i / 4
        out.append(f'<text x="{x0 + PAD - 4}" y="{py(v) + 4}" text-anchor="end">{v:g}</text>')
        out.append(f'<line x1="{x0 + PAD}" y1="{py(v)}" x2="{x0 + W - PAD}" y2="{py(v)}" stroke="#eee"/>')
    for n in clients:
        out.append(f'<text x="{px(n)}" y="{py(0) + 14}" text-anchor="middle">{n:,}</text>')
    out.append(f'<text x="{x0 + W / 2}" y="{py(0) + 28}" text-anchor="middle">clients</text>')
    for (name, values), color in zip(lines.items(), colors):
        points = " ".join(f"{px(n):.1f},{py(v):.1f}" for n, v in zip(clients, values))
        out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>')
        for n, v in zip(clients, values):
            out.append(f'<circle cx="{px(n):.1f}" cy="{py(v):.1f}" r="3" fill="{color}"/>')
    for i, ((name, _), color) in enumerate(zip(lines.items(), colors)):
        out.append(f'<rect x="{x0 + PAD + 8}" y="{30 + 14 * i}" width="10" height="3" fill="{color}"/>')
        out.append(f'<text x="{x0 + PAD + 22}" y="{35 + 14 * i}">{name}</text>')


panel(0, "Latency at 100 events/s (ms)", {k: series[k] for k in list(series)[:3]},
      ["#2563eb", "#dc2626", "#f59e0b"])
panel(W, "Server memory per idle client", {k: series[k] for k in list(series)[3:]}, ["#16a34a"])
out.append("</svg>")
with open(TARGET, "w") as f:
    f.write("\n".join(out) + "\n")
print(f"wrote {TARGET}")
