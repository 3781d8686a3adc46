"""Benchmark of ``active_calls_stream``: many connected clients while the live table churns.

The server process runs the real pieces — ``LiveTable`` → ``ChangeHub`` → ``create_app`` — and
ingests ``--rate`` row changes per second (each call: added ringing → updated answered → removed),
enriched from bench/api.py's reference world (345 users, 1,000 DIDs, 12 providers). Every change
carries its publish time (``time.time()``) in ``src``, so a client measures delivery latency as
receive time − publish time (same host, same clock). The client process opens ``--clients`` streams:
``--admins`` of them as admin (every change), the rest as plain users (their own calls only: the
common portal case). Row changes are a strict upper bound for AMI events: several AMI events make
one row change, so 5,000 row changes/s is more than 5,000 AMI events/s.

Prints: server CPU (ingest only, then with the clients), delivery latency p50/p99/max, events
delivered per second, clients dropped.

    .venv/bin/python bench/stream.py [--clients 1000] [--admins 10] [--rate 5000] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import multiprocessing as mp
import os
import re
import resource
import sys
import time
from collections import deque
from pathlib import Path
from typing import TypedDict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from api.app import create_app  # noqa: E402
from api.changes import ChangeHub  # noqa: E402
from api.deps import ApiDeps  # noqa: E402
from api.settings import ApiSettings  # noqa: E402
from api.stream import STREAM_KEY  # noqa: E402
from collector.live.table import LiveCall, LiveTable  # noqa: E402
from collector.refdata.model import Enrichment  # noqa: E402
from collector.tracking.calls import CallChange, CallStatus, CallView  # noqa: E402

log = logging.getLogger("bench.stream")

_spec = importlib.util.spec_from_file_location("bench_api_world", ROOT / "bench" / "api.py")
assert _spec is not None and _spec.loader is not None
world_mod = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = world_mod  # dataclasses look their module up while the class is built
_spec.loader.exec_module(world_mod)

STREAM = "/billing/api/active_calls_stream"
TICK = 0.01  # ingest granularity: rate/100 changes every 10 ms


class Mark(TypedDict):
    """What the server process reports on a "mark" command."""

    cpu: float
    wall: float
    clients: int
    head: int
    rows: int


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _ingest(table: LiveTable, templates: list[LiveCall], rate: int, stop: asyncio.Event) -> None:
    """``rate`` changes/s: each call is added, answered one tick later, removed after ~``pool`` calls."""
    per_tick = max(3, rate * TICK)
    live: deque[CallView] = deque()
    ringing: deque[CallView] = deque()
    pool = 2000
    n = 0
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    budget = 0.0
    while not stop.is_set():
        budget += per_tick
        changes: list[CallChange] = []
        while budget >= 3:  # one new, one answer, one removal: 3 changes
            budget -= 3
            n += 1
            tpl = templates[n % len(templates)]
            now = time.time()
            call = tpl.call._replace(linkedid=f"b{n}", uniqueid=f"b{n}", status=CallStatus.RINGING,
                           answer_time=None, src=f"{now:.6f}")
            changes.append(CallChange("added", call.key, call))
            ringing.append(call)
            if len(ringing) > 1:
                old = ringing.popleft()
                up = old._replace(status=CallStatus.ANSWERED, answer_time=now, src=f"{now:.6f}")
                changes.append(CallChange("updated", up.key, up))
                live.append(up)
            if len(live) > pool:
                gone = live.popleft()
                changes.append(CallChange("removed", gone.key, None))
        table.apply(changes)
        next_at += TICK
        await asyncio.sleep(max(0.0, next_at - loop.time()))


def serve(rate: int, port_q: mp.Queue[int], cmd_q: mp.Queue[str], out_q: mp.Queue[Mark]) -> None:
    logging.basicConfig(level=logging.WARNING, format="server %(levelname)s %(name)s %(message)s")
    world = world_mod.build_world(3000)
    templates: list[LiveCall] = list(world.rows)
    by_linked: dict[int, Enrichment] = {}

    def enrich(call: CallView) -> Enrichment:  # the template's enrichment, by the bench call number
        n = int(call.linkedid[1:])
        return by_linked.get(n) or templates[n % len(templates)].info

    async def main() -> None:
        table = LiveTable(enrich)
        hub = ChangeHub.following(table, history=50_000)
        deps = ApiDeps(rows=table.rows, refs=lambda: world.refs, settings=ApiSettings(prerender_interval=None),
                       changes=hub)
        app = create_app(deps)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=2048)
        await site.start()
        port_q.put(runner.addresses[0][1])
        stop = asyncio.Event()
        ingest = asyncio.create_task(_ingest(table, templates, rate, stop))
        loop = asyncio.get_running_loop()
        while True:
            cmd = await loop.run_in_executor(None, cmd_q.get)
            if cmd == "mark":
                out_q.put({"cpu": _cpu(), "wall": time.monotonic(), "clients": len(app[STREAM_KEY].clients),
                           "head": hub.head, "rows": len(table)})
            elif cmd == "stop":
                break
        stop.set()
        await ingest
        await runner.cleanup()

    asyncio.run(main())


_SRC = re.compile(rb'"src":"([0-9.]+)"')


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.events = 0
        self.dropped = 0
        self.measuring = False


async def client(http: aiohttp.ClientSession, url: str, params: dict[str, str], stats: Stats) -> None:
    try:
        async with http.get(url, params=params, timeout=aiohttp.ClientTimeout(total=None)) as resp:
            buf = b""
            while True:
                chunk = await resp.content.readany()
                if not chunk:
                    return
                now = time.time()
                buf += chunk
                head, sep, buf = buf.rpartition(b"\n\n")
                if not sep:
                    buf = head
                    continue
                if b"data: too slow" in head:
                    stats.dropped += 1
                if stats.measuring:
                    for frame in head.split(b"\n\n"):
                        stats.events += 1
                        if b"event: call_removed" in frame:  # carries the row as last updated: no stamp
                            continue
                        m = _SRC.search(frame)
                        if m:
                            stats.latencies.append(now - float(m.group(1)))
    except (aiohttp.ClientError, asyncio.CancelledError):
        return


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def run_clients(port: int, n_clients: int, admins: int, seconds: float,
                      cmd_q: mp.Queue[str], out_q: mp.Queue[Mark]) -> None:
    world = world_mod.build_world(10)
    refs = world.refs
    users = sorted((u for u in refs.users.values() if u.usertype == "user"), key=lambda u: u.id)
    loop = asyncio.get_running_loop()

    async def mark() -> Mark:
        cmd_q.put("mark")
        return await loop.run_in_executor(None, out_q.get)

    base = await mark()
    await asyncio.sleep(seconds / 2)
    ingest_only = await mark()
    stats = Stats()
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:
        url = f"http://127.0.0.1:{port}{STREAM}"
        tasks = []
        for i in range(n_clients):
            name = "admin" if i < admins else users[i % len(users)].username
            tasks.append(asyncio.create_task(client(http, url, world_mod.signed(refs, name), stats)))
            if i % 100 == 99:
                await asyncio.sleep(0.05)
        await asyncio.sleep(2.0)  # connected and snapshots read
        start = await mark()
        c0, t0 = _cpu(), time.monotonic()
        stats.measuring = True
        await asyncio.sleep(seconds)
        stats.measuring = False
        end = await mark()
        c1, t1 = _cpu(), time.monotonic()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    ingest_cpu = (ingest_only["cpu"] - base["cpu"]) / (ingest_only["wall"] - base["wall"])
    ingest_rate = (ingest_only["head"] - base["head"]) / (ingest_only["wall"] - base["wall"])
    wall = end["wall"] - start["wall"]
    cpu = (end["cpu"] - start["cpu"]) / wall
    changes = (end["head"] - start["head"]) / wall
    lat = stats.latencies
    print(f"clients={n_clients} (admins={admins}, users={n_clients - admins}) connected={end['clients']} "
          f"live rows≈{end['rows']}")
    print(f"ingest: {ingest_rate:,.0f} row changes/s without clients, {changes:,.0f} with them")
    print(f"server CPU: ingest only {ingest_cpu * 100:.0f}% of a core; with {n_clients} streams {cpu * 100:.0f}%")
    print(f"delivered: {stats.events / wall:,.0f} events/s to clients ({stats.events:,} in {wall:.1f}s)")
    print(f"delivery latency: p50 {pct(lat, 0.5) * 1000:.1f} ms  p99 {pct(lat, 0.99) * 1000:.1f} ms  "
          f"max {max(lat, default=float('nan')) * 1000:.1f} ms")
    print(f"client process CPU: {(c1 - c0) / (t1 - t0) * 100:.0f}% of a core; dropped as too slow: {stats.dropped}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--admins", type=int, default=10)
    ap.add_argument("--rate", type=int, default=5000, help="row changes per second")
    ap.add_argument("--seconds", type=float, default=15.0)
    args = ap.parse_args()
    port_q: mp.Queue[int] = mp.Queue()
    cmd_q: mp.Queue[str] = mp.Queue()
    out_q: mp.Queue[Mark] = mp.Queue()
    server = mp.Process(target=serve, args=(args.rate, port_q, cmd_q, out_q), daemon=True)
    server.start()
    port = port_q.get(timeout=60)
    print(f"cores={os.cpu_count()} load={os.getloadavg()[0]:.2f}")
    try:
        asyncio.run(run_clients(port, args.clients, args.admins, args.seconds, cmd_q, out_q))
    finally:
        cmd_q.put("stop")
        server.join(10)
        if server.is_alive():
            server.terminate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
