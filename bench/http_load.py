"""HTTP load on a live daemon that is ingesting AMI at ~5,000 events/s: does the API starve the AMI reader?

Three processes on 127.0.0.1 (each with its own GIL):
  1. a replay AMI server: ``concurrent_load`` looped, *timed* at ``--speed`` (40 ≈ 5,000 call,system
     events/s), each event stamped with the wall clock as it is written (a live Asterisk's Timestamp);
  2. the real daemon (config → demo reference data in SQLite → AMI session → tracker → live table →
     aiohttp), whose message hook records, for every timestamped event, processing time − Timestamp:
     how far the AMI reader is behind the stream (back-pressure shows as a growing lag);
  3. this process: ``--clients`` concurrent HTTP clients for ``--seconds``, mixing full lists and filtered
     queries as admin, reseller and users.

Prints requests/s, latency p50/p95/p99/max, errors (must be 0), the events/s the daemon received (from its
/status), its reconnect count (must be 0) and the AMI lag p50/p99/max. Exit status 1 if errors or
reconnects are not 0.

    .venv/bin/python bench/http_load.py            # 200 clients, 60 s
    .venv/bin/python bench/http_load.py --quick    # 200 clients, 10 s
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import multiprocessing as mp
import os
import random
import re
import sys
import tempfile
import time
from array import array
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "tests" / "traces" / "concurrent_load.ami.gz"
DEMO = ROOT / "collector" / "data" / "demo.json"
PATH = "/billing/api/active_calls_get"


# ------------------------------------------------------------------------------------- replay process

def call_system_trace(src: Path, dst: Path) -> tuple[int, float]:
    """The trace as a ``call,system`` login receives it: Asterisk never sends the other classes to it, so
    the replay need not walk them (VarSet/Newexten/Cdr are ~68 % of concurrent_load). Returns the events kept
    and the trace time they span."""
    from collector.tools.traces import read_trace

    kept = []
    events = 0
    stamps: list[float] = []
    for block in read_trace(src).split(b"\r\n\r\n"):
        if block.startswith(b"Event: ") and b"\r\nTimestamp: " in block:
            m = re.search(rb"\r\nPrivilege: ([^\r]*)", block)
            classes = {c.strip() for c in m.group(1).decode().split(",")} - {"all"} if m else set()
            if not classes <= {"call", "system"}:
                continue
            events += 1
            t = re.search(rb"\r\nTimestamp: ([\d.]+)", block)
            if t:
                stamps.append(float(t.group(1)))
        kept.append(block)
    dst.write_bytes(b"\r\n\r\n".join(kept))
    return events, (max(stamps) - min(stamps)) if stamps else 0.0


def _replay_main(trace: str, speed: float, port_q: mp.Queue[int], stop: ProcessEvent) -> None:
    from collector.tools.replay import ReplayOptions, ReplayServer

    logging.basicConfig(level=logging.WARNING, format="replay %(levelname)s %(message)s")

    async def run() -> None:
        # write_timeout 5 s: the README's manager.conf writetimeout; a reader that stalls longer is cut off
        options = ReplayOptions(speed=speed, loop_forever=True, write_timeout=5.0)
        async with ReplayServer([trace], host="127.0.0.1", port=0, options=options) as replay:
            port_q.put(replay.port)
            while not stop.is_set():
                await asyncio.sleep(0.2)

    asyncio.run(run())


# ------------------------------------------------------------------------------------- daemon process

def _daemon_main(ami_port: int, db_dir: str, conn: Connection) -> None:
    from collector.refdata.importer import load_demo
    from collector.service.config import parse_settings
    from collector.service.daemon import Daemon

    logging.basicConfig(level=logging.WARNING, format="daemon %(levelname)s %(name)s %(message)s")
    db = Path(db_dir) / "collector.db"
    load_demo(db)
    ini = "\n".join([
        "[collector]", "reconcile_interval = 60", "ping_interval = 10", "ping_timeout = 5", "flush_interval = 1",
        "[api]", "listen = 127.0.0.1", "port = 0", "[database]", f"path = {db}",
        "[server:pbx1]", "host = 127.0.0.1", f"port = {ami_port}", "username = collector", "secret = x",
        "server_id = 1",
    ])
    settings = parse_settings(ini, source=str(Path(db_dir) / "bench.ini"))

    lags = array("d")  # seconds, one per timestamped event received
    lag_wall = array("d")  # when, for the lag over time

    class LagDaemon(Daemon):
        def on_batch(self, server_id: int, msgs: list[dict[str, str]]) -> None:
            now = time.time()
            for msg in msgs:
                ts = msg.get("Timestamp")
                if ts:
                    try:
                        lags.append(now - float(ts))
                        lag_wall.append(now)
                    except ValueError:
                        pass
            super().on_batch(server_id, msgs)

    async def run() -> None:
        daemon = LagDaemon(settings)
        await daemon.start()
        conn.send(("port", daemon.port))
        loop = asyncio.get_running_loop()
        got = asyncio.Event()
        loop.add_reader(conn.fileno(), got.set)
        while True:
            await got.wait()
            got.clear()
            if not conn.poll():
                continue
            cmd = conn.recv()
            if cmd == "mark":  # start of the measured window: forget the warm-up
                del lags[:]
                del lag_wall[:]
                conn.send(("marked", None))
            elif cmd == "stop":
                break
        loop.remove_reader(conn.fileno())
        stats = daemon.tracker.stats(1)
        conn.send(("lags", (lags.tobytes(), lag_wall.tobytes(), stats.errors, stats.events)))
        await daemon.stop()

    asyncio.run(run())


# ------------------------------------------------------------------------------------- load generator

def _users() -> list[tuple[str, str, dict[str, str], str]]:
    """(username, hash secret, filters, label): admin/reseller with their own secret, users with their
    owner's, full lists and filtered queries."""
    data = json.loads(DEMO.read_text())
    by_id = {u["id"]: u for u in data["users"]}
    secret = {u["username"]: (u.get("api_secret_key") or by_id[u["owner_id"]]["api_secret_key"])
              for u in data["users"] if u["usertype"] in ("admin", "reseller", "user")}
    return [
        ("admin", secret["admin"], {}, "admin full"),
        ("admin", secret["admin"], {}, "admin full"),
        ("admin", secret["admin"], {}, "admin full"),
        ("admin", secret["admin"], {"s_status": "answered"}, "admin answered"),
        ("admin", secret["admin"], {"s_user_id": "2"}, "admin user 2"),
        ("admin", secret["admin"], {"s_source": "3069%"}, "admin source"),
        ("admin", secret["admin"], {"s_destination": "0044%"}, "admin destination"),
        ("reseller", secret["reseller"], {}, "reseller full"),
        ("reseller", secret["reseller"], {"s_status": "ringing"}, "reseller ringing"),
        ("alice", secret["alice"], {}, "user full"),
        ("bob", secret["bob"], {"s_status": "answered"}, "user answered"),
        ("carol", secret["carol"], {}, "reseller's user full"),
    ]


async def _client(http: aiohttp.ClientSession, url: str, users: list[tuple[str, str, dict[str, str], str]],
                  deadline: float, rnd: random.Random, lat: array[float], errors: list[str]) -> None:
    while time.monotonic() < deadline:
        user, secret, filters, label = rnd.choice(users)
        data = {"u": user, "hash": hashlib.sha1((user + secret).encode()).hexdigest(), **filters}
        t = time.perf_counter()
        try:
            async with http.post(url, data=data) as resp:
                body = await resp.read()
                if resp.status != 200 or b"<error>" in body:
                    errors.append(f"{label}: HTTP {resp.status} {body[:120]!r}")
        except Exception as exc:  # a transport error is an error of the run, not of the bench
            errors.append(f"{label}: {type(exc).__name__}: {exc}")
        lat.append(time.perf_counter() - t)


async def _status(http: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    async with http.get(f"http://127.0.0.1:{port}/status") as resp:
        status: dict[str, Any] = await resp.json()
        return status


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def _load(port: int, clients: int, seconds: float,
                conn: Connection) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}{PATH}"
    users = _users()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        # warm-up: logged in and events flowing for 2 s
        t_end = time.monotonic() + 30
        while True:
            st = await _status(http, port)
            if st["servers"][0]["connected"] and st["servers"][0]["events"] > 0:
                break
            if time.monotonic() > t_end:
                raise SystemExit("daemon never logged in to the replay")
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)
        conn.send("mark")
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        st0 = await _status(http, port)
        t0 = time.monotonic()
        lat: array[float] = array("d")
        errors: list[str] = []
        deadline = t0 + seconds
        if clients:
            await asyncio.gather(*(_client(http, url, users, deadline, random.Random(i), lat, errors)
                                   for i in range(clients)))
        else:  # --clients 0: the AMI side alone, for comparison
            await asyncio.sleep(seconds)
        elapsed = time.monotonic() - t0
        st1 = await _status(http, port)
    s0, s1 = st0["servers"][0], st1["servers"][0]
    return {"elapsed": elapsed, "lat": sorted(lat), "errors": errors,
            "events_per_s": (s1["events"] - s0["events"]) / elapsed,
            "reconnects": s1["reconnects"], "pong_timeouts": s1["pong_timeouts"],
            "calls_end": st1["calls"]["total"], "connected": s1["connected"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--quick", action="store_true", help="10 s run")
    ap.add_argument("--speed", type=float, default=48.0,
                    help="replay speed factor; 48 schedules ~6,300 call,system events/s from concurrent_load "
                         "(~5,000 arrive when the replay process shares 2 vCPUs with the rest)")
    args = ap.parse_args(argv)
    seconds = 10.0 if args.quick else args.seconds

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    port_q: mp.Queue[int] = ctx.Queue()
    parent, child = ctx.Pipe()
    with tempfile.TemporaryDirectory(prefix="http_load.") as tmp:
        trace = Path(tmp) / "concurrent_load.call_system.ami"
        n_events, span = call_system_trace(TRACE, trace)
        replay = ctx.Process(target=_replay_main, args=(str(trace), args.speed, port_q, stop), name="replay")
        replay.start()
        ami_port = port_q.get(timeout=60)
        daemon = ctx.Process(target=_daemon_main, args=(ami_port, tmp, child), name="daemon")
        daemon.start()
        try:
            kind, port = parent.recv()
            assert kind == "port"
            res = asyncio.run(_load(port, args.clients, seconds, parent))
            parent.send("stop")
            kind, (raw_lags, raw_wall, tracker_errors, tracker_events) = parent.recv()
        finally:
            daemon.join(timeout=20)
            if daemon.is_alive():
                daemon.kill()
            stop.set()
            replay.join(timeout=10)
            if replay.is_alive():
                replay.kill()

    lags = array("d")
    lags.frombytes(raw_lags)
    wall = array("d")
    wall.frombytes(raw_wall)
    lat = res["lat"]
    ms = 1000.0
    print(f"run: {args.clients} clients, {res['elapsed']:.1f} s, replay speed x{args.speed:g} (timed, looped "
          f"concurrent_load: {n_events} call,system events per {span:.1f} s pass = "
          f"{n_events / span * args.speed:.0f} events/s scheduled, wall-clock Timestamps)")
    if lat:
        print(f"http: {len(lat)} requests, {len(lat) / res['elapsed']:.0f} req/s, "
              f"latency p50 {_pct(lat, 50) * ms:.1f} ms"
              f" p95 {_pct(lat, 95) * ms:.1f} ms p99 {_pct(lat, 99) * ms:.1f} ms max {lat[-1] * ms:.1f} ms, "
              f"errors {len(res['errors'])}")
    for e in res["errors"][:5]:
        print("  error:", e)
    print(f"ami: {res['events_per_s']:.0f} events/s received by the daemon (its /status; below the schedule "
          f"when the replay process itself lacks CPU), reconnects "
          f"{res['reconnects']}, pong timeouts {res['pong_timeouts']}, connected at the end {res['connected']}, "
          f"calls at the end {res['calls_end']}, tracker errors {tracker_errors}")
    sl = sorted(lags)
    if sl:
        print(f"ami lag (processing wall clock - event Timestamp), {len(sl)} events: p50 {_pct(sl, 50) * ms:.1f} ms"
              f" p99 {_pct(sl, 99) * ms:.1f} ms max {sl[-1] * ms:.1f} ms; >100 ms: "
              f"{sum(1 for x in sl if x > 0.1)}, >1 s: {sum(1 for x in sl if x > 1.0)}")
        # lag over time: the worst per 5 s slice (a reader falling behind shows as a rising series)
        if wall:
            start = wall[0]
            buckets: dict[int, float] = {}
            for w, lg in zip(wall, lags, strict=False):
                k = int((w - start) // 5)
                buckets[k] = max(buckets.get(k, 0.0), lg)
            print("ami lag max per 5 s:", " ".join(f"{buckets[k] * ms:.0f}" for k in sorted(buckets)), "ms")
    print(f"machine: {os.cpu_count()} CPUs, load average (1/5/15 min) at the end "
          + "/".join(f"{x:.2f}" for x in os.getloadavg()))
    ok = not res["errors"] and res["reconnects"] == 0 and tracker_errors == 0
    print("RESULT:", "OK" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
