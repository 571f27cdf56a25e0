#!/usr/bin/env python3
"""Bounded load test of ``GET /recommend`` against ``prismrec serve`` on 127.0.0.1.

    prismrec train --data /tmp/baby-like --model vbpr --set epochs=5 --out /tmp/runs/vbpr-baby
    python benchmarks/serve_load.py --bundle /tmp/runs/vbpr-baby                # open loop, 500 req/s
    python benchmarks/serve_load.py --bundle /tmp/runs/vbpr-baby --rate 0       # closed loop, max rate

The script starts the server itself (loopback only, an ephemeral port), waits for ``/health``,
sends at most ``--requests`` requests for at most ``--duration`` seconds over ``--concurrency``
keep-alive connections (raw HTTP/1.1 on asyncio, so the client costs little CPU), then stops
the server. Users are drawn uniformly from the bundle's users (seeded).

Open loop (``--rate R``): request i is due at ``t0 + i/R``; its latency counts from that due
time, so a server that falls behind shows it in p99 (no coordinated omission). Closed loop
(``--rate 0``): each connection sends its next request when the previous one is answered.

Results are merged into ``benchmarks/results/serving.json``: ``requests_per_s`` (answered per
second), ``p50_ms``, ``p99_ms`` and a ``load`` block with the details.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from _results import machine, merge_result  # noqa: E402  (puts src/ on the path)

RESULTS = Path(__file__).resolve().parent / "results" / "serving.json"
HOST = "127.0.0.1"  # never anything but loopback
GRACE = 10.0  # seconds past --duration for the open loop's backlog; requests still queued then are not sent


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(bundle: Path, port: int, threads: int, timeout: float) -> subprocess.Popen:
    """``prismrec serve`` in a child process; returns once ``/health`` answers."""
    cmd = [sys.executable, "-m", "prismrec", "serve", str(bundle), "--host", HOST, "--port", str(port),
           "--threads", str(threads), "--log-level", "warning"]
    env = {k: v for k, v in os.environ.items() if k != "PRISMREC_ADMIN_TOKEN"}
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.25)
    proc.terminate()
    raise SystemExit(f"server did not answer /health within {timeout:.0f} s")


def check_against_cli(bundle: Path, port: int, users: list, k: int) -> dict:
    """Compare ``GET /recommend`` with ``prismrec recommend`` (same bundle, same users): equal top-k?"""
    cmd = [sys.executable, "-m", "prismrec", "recommend", str(bundle), "-k", str(k), "--json"]
    for u in users:
        cmd += ["--user", str(u)]
    cli = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    cli = cli if isinstance(cli, list) else [cli]
    same = 0
    for u, c in zip(users, cli):
        with urllib.request.urlopen(f"http://{HOST}:{port}/recommend?user={u}&k={k}", timeout=30) as r:
            same += json.loads(r.read())["items"] == c["items"]
    return {"users": len(users), "k": k, "same_top_k": same, "command": "prismrec recommend BUNDLE --user ID -k K"}


class Connection:
    """One keep-alive HTTP/1.1 connection to the server."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)

    async def get(self, path: str) -> int:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status

    def close(self):
        if self.writer is not None:
            self.writer.close()


async def run_load(port: int, paths: list[str], *, rate: float, concurrency: int, duration: float):
    """(latencies in seconds, statuses, elapsed seconds) of up to ``len(paths)`` requests."""
    conns = [Connection(port) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in conns))
    lat, statuses = [], []
    t0 = time.perf_counter()
    stop_at = t0 + duration
    sent = unsent = 0

    async def closed_loop(conn: Connection):
        nonlocal sent
        while sent < len(paths) and time.perf_counter() < stop_at:
            path, sent = paths[sent], sent + 1
            start = time.perf_counter()
            statuses.append(await conn.get(path))
            lat.append(time.perf_counter() - start)

    queue: asyncio.Queue = asyncio.Queue()

    async def open_loop(conn: Connection):
        nonlocal unsent
        while (job := await queue.get()) is not None:
            due, path = job
            if time.perf_counter() > stop_at + GRACE:  # hopelessly behind: stop, count the rest
                unsent += 1
                continue
            statuses.append(await conn.get(path))
            lat.append(time.perf_counter() - due)  # from the due time: waiting for a connection counts

    async def pacer():
        for i, path in enumerate(paths):
            due = t0 + i / rate
            if due > stop_at:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((due, path))
        for _ in conns:
            queue.put_nowait(None)

    if rate > 0:
        await asyncio.gather(pacer(), *(open_loop(c) for c in conns))
    else:
        await asyncio.gather(*(closed_loop(c) for c in conns))
    elapsed = time.perf_counter() - t0
    for c in conns:
        c.close()
    return np.array(lat), np.array(statuses), elapsed, unsent


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True, help="run directory / bundle to serve")
    p.add_argument("--requests", type=int, default=15_000, help="at most this many requests")
    p.add_argument("--duration", type=float, default=30.0, help="at most this many seconds of load")
    p.add_argument("--rate", type=float, default=500.0, help="open-loop requests per second; 0: closed loop")
    p.add_argument("--concurrency", type=int, default=16, help="keep-alive connections")
    p.add_argument("--warmup", type=int, default=300, help="requests sent (closed loop) before measuring")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    p.add_argument("--startup-timeout", type=float, default=180.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check-users", type=int, default=20,
                   help="users whose GET /recommend is compared with `prismrec recommend` first")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.requests < 1 or args.duration <= 0 or args.concurrency < 1:
        raise SystemExit("--requests, --duration and --concurrency must be positive")

    users = json.loads((args.bundle / "users.json").read_text())
    rng = np.random.default_rng(args.seed)
    pick = rng.integers(0, len(users), args.requests + args.warmup)
    paths = [f"/recommend?user={users[i]}&k={args.k}" for i in pick]
    port = free_port()
    load0 = os.getloadavg()[0]
    server = start_server(args.bundle, port, args.threads, args.startup_timeout)
    try:
        check = check_against_cli(args.bundle, port, [users[i] for i in pick[:args.check_users]], args.k)
        asyncio.run(run_load(port, paths[:args.warmup], rate=0, concurrency=args.concurrency, duration=30))
        cpu0 = cpu_seconds(server.pid)
        lat, statuses, elapsed, unsent = asyncio.run(run_load(port, paths[args.warmup:], rate=args.rate,
                                                      concurrency=args.concurrency, duration=args.duration))
        server_cpu = cpu_seconds(server.pid) - cpu0
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    ok = statuses == 200
    ms = np.percentile(lat * 1e3, [50, 90, 99, 99.9]) if len(lat) else [float("nan")] * 4
    import importlib.util
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    command = shlex.join(["python", "benchmarks/serve_load.py", *(argv if argv is not None else sys.argv[1:])])
    result = {
        "requests_per_s": round(len(lat) / elapsed, 1),
        "p50_ms": round(float(ms[0]), 2),
        "p99_ms": round(float(ms[2]), 2),
        "matches_cli": check,
        "load": {"bundle": str(args.bundle), "route": f"GET /recommend?user=..&k={args.k}",
                 "mode": f"open loop at {args.rate:g} req/s" if args.rate > 0 else "closed loop",
                 "concurrency": args.concurrency, "requests": int(len(lat)), "errors": int((~ok).sum()),
                 "unsent": int(unsent),
                 "seconds": round(elapsed, 2),
                 "server_cpu_ms_per_request": round(server_cpu / max(len(lat), 1) * 1e3, 3),
                 "p90_ms": round(float(ms[1]), 2), "p999_ms": round(float(ms[3]), 2),
                 "server": f"uvicorn ({http}, {loop}), 1 process, torch threads {args.threads}", "command": command,
                 "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)], "cpus": os.cpu_count(),
                 "machine": machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%S")},
    }
    merge_result(args.out, result, command)
    return result


if __name__ == "__main__":
    main()
