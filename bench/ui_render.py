"""Benchmark of the Active Calls page in headless Chromium: 5,000 calls in the snapshot, then ``--rate``
row changes per second (answers, new calls, hang-ups) for ``--seconds``, pushed through the real
``active_calls_stream``. Prints the time to first render (navigation → rows painted) and the frame
intervals the page achieved meanwhile (p50 / p95 / max, from a requestAnimationFrame probe), plus the
page's own paint cost per frame. Target: p95 frame < 50 ms.

    python -m bench.ui_render [--rows 5000] [--rate 200] [--seconds 20] [--query '?wall=1']
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

from api.app import create_app  # noqa: E402
from api.changes import ChangeHub  # noqa: E402
from api.deps import ApiDeps  # noqa: E402
from api.settings import ApiSettings  # noqa: E402
from collector.live.table import LiveCall  # noqa: E402
from collector.tracking.calls import CallStatus  # noqa: E402
from tests.browser import chromium  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_api_world", ROOT / "bench" / "api.py")
assert _spec is not None and _spec.loader is not None
world_mod = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = world_mod  # dataclasses look their module up while the class is built
_spec.loader.exec_module(world_mod)

TICK = 0.01
PROBE = """(() => { window.__frames = []; let last = 0;
  const f = (t) => { if (last) window.__frames.push(t - last); last = t; requestAnimationFrame(f); };
  requestAnimationFrame(f);
  window.__long = 0;
  try {
    new PerformanceObserver((l) => { window.__long += l.getEntries().length; }).observe({entryTypes: ['longtask']});
  } catch (e) {}
  return true; })()"""


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def churn(rows: dict[int, LiveCall], hub: ChangeHub, rate: int, stop: asyncio.Event) -> int:
    """``rate`` changes/s in 10 ms ticks: a third answer a ringing call, a third add one, a third remove one
    (the table stays near its size)."""
    rnd = random.Random(3)
    templates = list(rows.values())
    next_id = max(rows) + 1
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    budget = 0.0
    sent = 0
    while not stop.is_set():
        budget += rate * TICK
        while budget >= 1:
            budget -= 1
            kind = sent % 3
            if kind == 0:
                ringing = [r for r in (rows.get(rnd.randrange(1, next_id)) for _ in range(8)) if r is not None
                           and r.call.status is CallStatus.RINGING]
                if ringing:
                    r = ringing[0]
                    up = r._replace(call=r.call._replace(status=CallStatus.ANSWERED, answer_time=time.time()))
                    rows[r.id] = up
                    hub.publish("updated", up)
                    sent += 1
                    continue
                kind = 1
            if kind == 1:
                tpl = templates[next_id % len(templates)]
                uid = f"bench.{next_id}"
                new = LiveCall(next_id, tpl.call._replace(uniqueid=uid, linkedid=uid, status=CallStatus.RINGING,
                                                          answer_time=None, start_time=time.time()), tpl.info)
                rows[next_id] = new
                next_id += 1
                hub.publish("added", new)
            else:
                victim = next(iter(rows))
                hub.publish("removed", rows.pop(victim))
            sent += 1
        next_at += TICK
        await asyncio.sleep(max(0.0, next_at - loop.time()))
    return sent


async def run(n_rows: int, rate: int, seconds: float, width: int, height: int, query: str = "") -> dict[str, object]:
    world = world_mod.build_world(n_rows)
    rows = {r.id: r for r in world.rows}
    hub = ChangeHub()
    hub.seed(rows.values())
    app = create_app(ApiDeps(rows=lambda: tuple(rows.values()), refs=lambda: world.refs,
                             settings=ApiSettings(timezone="UTC"), clock=time.time, changes=hub))
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    secret = world_mod.ADMIN_SECRET
    try:
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:  # chromium may still write
            async with chromium(Path(tmp), width=width, height=height) as cdp:
                await cdp.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                               deviceScaleFactor=1, mobile=False)
                await cdp.call("Page.navigate", url=f"{base}/ui{query}#u=admin&secret={secret}")
                async with asyncio.timeout(120):
                    while not await cdp.eval(f"!!(window.activeCalls && window.activeCalls.st.rows.size >= {n_rows}"
                                             " && window.activeCalls.st.stats.firstRows)"):
                        await asyncio.sleep(0.02)
                first = await cdp.eval("window.activeCalls.st.stats.firstRows")
                await cdp.eval(PROBE)
                await cdp.eval("window.activeCalls.table.stats = {renders: 0, renderMs: 0, maxMs: 0}")
                stop = asyncio.Event()
                task = asyncio.create_task(churn(rows, hub, rate, stop))
                await asyncio.sleep(seconds)  # the measurement window: the page runs on its own meanwhile
                stop.set()
                sent = await task
                async with asyncio.timeout(30):  # the page has applied everything sent
                    while await cdp.eval("window.activeCalls.st.rows.size") != len(rows):
                        await asyncio.sleep(0.05)
                raw = await cdp.eval("JSON.stringify({frames: window.__frames, long: window.__long, "
                                     "table: window.activeCalls.table.stats, events: window.activeCalls.st.stats})")
    finally:
        await runner.cleanup()
    doc = json.loads(raw)
    frames: list[float] = doc["frames"]
    table = doc["table"]
    return {"rows": n_rows, "rate": rate, "seconds": seconds, "changes_sent": sent,
            "events_received": doc["events"]["events"], "first_render_ms": round(first),
            "frames": len(frames), "frame_p50_ms": round(pct(frames, 50), 1), "frame_p95_ms": round(pct(frames, 95), 1),
            "frame_max_ms": round(max(frames, default=float("nan")), 1), "long_tasks": doc["long"],
            "paints": table["renders"], "paint_avg_ms": round(table["renderMs"] / max(1, table["renders"]), 2),
            "paint_max_ms": round(table["maxMs"], 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--rate", type=int, default=200, help="row changes per second")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--query", default="?wall=1",
                    help="the page's URL flags, e.g. '?wall=1&sort=src&dir=asc' (changes land on screen)")
    args = ap.parse_args()
    print(f"cores={os.cpu_count()} load={os.getloadavg()[0]:.2f}")
    res = asyncio.run(run(args.rows, args.rate, args.seconds, args.width, args.height, args.query))
    for k, v in res.items():
        print(f"{k}: {v}")
    ok = res["frame_p95_ms"] < 50  # type: ignore[operator]
    print(f"p95 frame {res['frame_p95_ms']} ms: {'OK' if ok else 'ABOVE'} the 50 ms target; "
          f"first render {res['first_render_ms']} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
