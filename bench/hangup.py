"""Benchmark of the v2 hang-up: DELETE → 200 latency, and how a bulk DELETE is paced per server.

Everything is real and in one process: replay AMI servers serving ``tests/traces/concurrent_load`` (held
``--hold`` s into the trace, so its calls stay up until hung up), the daemon (AMI sessions, tracker, live
table, HTTP on 127.0.0.1) and an aiohttp client with a Bearer token.

1. Latency: ``--singles`` DELETEs of one call each, ``--concurrency`` at a time, as admin, with pacing out
   of the way (``rate_per_server`` 10,000). One DELETE = token check, lookup, AMI Hangup, the replay's
   Success and Hangup events back, the tracker and live table removing the call, the 200. Prints p50, p99
   and max.
2. Pacing: one bulk DELETE of every call up, ``rate_per_server = --rate``. From the times the replay
   servers saw each Hangup action: per server the actions, their span, the achieved rate, the smallest gap
   and the most actions in any 1 s window; and the bulk's wall time.

    .venv/bin/python bench/hangup.py [--servers 2] [--hold 20] [--singles 120] [--concurrency 1] [--rate 20]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from api.tokens import TokenIssuer  # noqa: E402
from collector.refdata.importer import load_demo  # noqa: E402
from collector.service.config import parse_settings  # noqa: E402
from collector.service.daemon import Daemon  # noqa: E402
from collector.service.hangup import HangupSettings  # noqa: E402
from collector.tools.replay import ReplayOptions, ReplayServer  # noqa: E402
from collector.tools.timeline import iter_trace_messages  # noqa: E402

TRACE = ROOT / "tests" / "traces" / "concurrent_load.ami.gz"
CALLS = "/billing/api/v2/active_calls"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def start_stack(tmp: Path, servers: int, hold: float, hangup: HangupSettings
                      ) -> tuple[list[ReplayServer], Daemon]:
    t0 = next(float(m["Timestamp"]) for m in iter_trace_messages([TRACE]) if m.get("Timestamp"))
    replays = []
    for _ in range(servers):
        replay = ReplayServer([TRACE], port=0, options=ReplayOptions(fast=True))
        replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= t0 + hold)
        await replay.start()
        replays.append(replay)
    db = tmp / "collector.db"
    if not db.exists():
        load_demo(db)
    lines = ["[collector]", "reconcile_interval = 3600", "flush_interval = 0.5", "[api]", "port = 0",
             "[database]", f"path = {db}"]
    for i, replay in enumerate(replays, start=1):
        lines += [f"[server:pbx{i}]", "host = 127.0.0.1", f"port = {replay.port}", "username = c", "secret = s",
                  f"server_id = {i}"]
    settings = dataclasses.replace(parse_settings("\n".join(lines)), hangup=hangup)
    daemon = Daemon(settings)
    daemon.tokens = TokenIssuer(b"b" * 32, 3600)
    await daemon.start()
    for i, replay in enumerate(replays):
        await replay.wait_held(timeout=60)
        await asyncio.wait_for(daemon.sessions[i].logged_in.wait(), 30)
        await daemon.sessions[i].resync()
    return replays, daemon


async def stop_stack(replays: list[ReplayServer], daemon: Daemon) -> None:
    await daemon.stop()
    for replay in replays:
        await replay.close()


def admin_token(daemon: Daemon) -> str:
    assert daemon.tokens is not None
    admin = daemon._refs().users_by_username["admin"]
    return daemon.tokens.issue(admin.username, admin.id).token


async def latency(tmp: Path, servers: int, hold: float, singles: int, concurrency: int) -> None:
    replays, daemon = await start_stack(tmp, servers, hold, HangupSettings(enabled=True, rate_per_server=10_000))
    try:
        ids = sorted(r.id for r in daemon.live.rows())
        if len(ids) < singles:
            print(f"only {len(ids)} calls up (need {singles}): raise --hold or --servers")
            singles = len(ids)
        headers = {"Authorization": f"Bearer {admin_token(daemon)}"}
        base = f"http://127.0.0.1:{daemon.port}{CALLS}/"
        times: list[float] = []
        statuses: dict[int, int] = {}
        queue = list(ids[:singles])
        async with aiohttp.ClientSession() as http:
            async def worker() -> None:
                while queue:
                    call_id = queue.pop()
                    start = time.perf_counter()
                    async with http.delete(base + str(call_id), headers=headers) as resp:
                        await resp.read()
                    times.append((time.perf_counter() - start) * 1000)
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        ok = statuses.get(200, 0)
        print(f"single DELETE → 200, {singles} hang-ups over {servers} server(s), concurrency {concurrency}: "
              f"p50 {pct(times, 50):.1f} ms, p99 {pct(times, 99):.1f} ms, max {max(times):.1f} ms, "
              f"mean {statistics.fmean(times):.1f} ms; statuses {dict(sorted(statuses.items()))} ({ok} hung up)")
    finally:
        await stop_stack(replays, daemon)


async def pacing(tmp: Path, servers: int, hold: float, rate: float) -> None:
    replays, daemon = await start_stack(tmp, servers, hold, HangupSettings(enabled=True, rate_per_server=rate))
    try:
        n = len(daemon.live)
        async with aiohttp.ClientSession() as http:
            start = time.perf_counter()
            async with http.delete(f"http://127.0.0.1:{daemon.port}{CALLS}",
                                   headers={"Authorization": f"Bearer {admin_token(daemon)}"}) as resp:
                body = await resp.json()
            wall = time.perf_counter() - start
        print(f"bulk DELETE of {n} calls on {servers} server(s) at rate_per_server={rate:g}: HTTP {resp.status}, "
              f"{len(body['hung_up_calls'])} hung up, {len(body['failed'])} failed, {wall:.2f} s")
        for i, replay in enumerate(replays, start=1):
            log = [t for t, _channel in replay.hangup_log]
            if len(log) < 2:
                print(f"  pbx{i}: {len(log)} action(s)")
                continue
            span = log[-1] - log[0]
            gaps = [b - a for a, b in zip(log, log[1:], strict=False)]
            window = max(sum(1 for t in log[j:] if t < t0 + 1.0) for j, t0 in enumerate(log))
            print(f"  pbx{i}: {len(log)} Hangup actions over {span:.2f} s = {(len(log) - 1) / span:.2f}/s, "
                  f"smallest gap {min(gaps) * 1000:.1f} ms (1/rate = {1000 / rate:.1f} ms), "
                  f"most in any 1 s window {window}")
    finally:
        await stop_stack(replays, daemon)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", type=int, default=2)
    ap.add_argument("--hold", type=float, default=20.0, help="seconds of the trace replayed before holding it")
    ap.add_argument("--singles", type=int, default=120)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--rate", type=float, default=20.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("collector.audit").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(latency(Path(tmp), args.servers, args.hold, args.singles, args.concurrency))
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(pacing(Path(tmp), args.servers, args.hold, args.rate))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
