"""api/static/graph.js in a real headless Chromium, against a fake ``/billing/api/active_calls_history``
answering exactly per the contract (JSON ``{"bucket_seconds", "period_start", "period_end", "points":
[{"time", "total", "answered"}]}``, only buckets with data, Unix-seconds period bounds).

The browser runs in Asia/Kathmandu (UTC+05:45, so a UTC-vs-local mistake cannot line up by luck); the test
computes local midnight independently with zoneinfo and compares every drawn series' ``data-points`` with
the served buckets exactly. Screenshots: ``test-artifacts/graph.png`` and ``graph-wall.png``.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web

from tests.browser import Cdp, chromium, chromium_binary
from tests.conftest import ReplayFactory
from tests.daemon_helpers import barrier, mor_hash, running_daemon, settings_for
from tests.ui_harness import add_proxy, contrast, new_globals, screenshot, serve, static_app, wait_js

TZ = "Asia/Kathmandu"
BUCKET = 15

HARNESS = """<!doctype html><html><head><meta charset="utf-8"><title>graph harness</title>
<style>
body { font: 13px system-ui, sans-serif; margin: 8px; background: #ffffff; color: #1d2329; }
body.wall { background: #0b0f14; color: #e6edf3; --ac-graph-today: #58a6ff; }
#g { width: 900px; }
</style></head><body><div id="g"></div>
<script src="/ui/static/graph.js"></script>
<script>
"use strict";
window.made = 0;
const q = new URLSearchParams(location.search);
const cred = new URLSearchParams(location.hash.slice(1));   // the fragment: never sent to a server
window.harness = { graph: window.ActiveCallsGraph.startGraph(document.getElementById("g"), async (path, params) => {
  window.made += 1;
  // as the page does: a POST form, credentials never in the URL
  const r = await fetch(path + "?format=json", { method: "POST",
    body: new URLSearchParams({ ...params, u: cred.get("u"), hash: cred.get("hash") }) });
  if (!r.ok) throw new Error("HTTP " + r.status);
  return r.json();
}, { intervalMs: Number(q.get("interval") || 15000) }) };
</script></body></html>"""

STATE = """JSON.stringify({
  series: Object.fromEntries([...document.querySelectorAll('#g path[data-series]')]
    .map(p => [p.dataset.series, p.dataset.points])),
  d: Object.fromEntries([...document.querySelectorAll('#g path[data-series]')].map(p => [p.dataset.series,
    p.getAttribute('d')])),
  now: Number(document.querySelector('#g svg[data-panel=day]').dataset.now),
  total: document.querySelector('#g [data-role=current-total]').textContent,
  answered: document.querySelector('#g [data-role=current-answered]').textContent,
  error: document.querySelector('#g [data-role=graph-error]').textContent,
  width: Number(document.querySelector('#g svg[data-panel=day]').getAttribute('width')),
  hourWidth: Number(document.querySelector('#g svg[data-panel=hour]').getAttribute('width')),
  dayHeight: Number(document.querySelector('#g svg[data-panel=day]').getAttribute('height')),
  xLabels: [...document.querySelectorAll('#g svg[data-panel=day] [data-role=x-label]')].map(t => t.textContent),
  hourLabels: [...document.querySelectorAll('#g svg[data-panel=hour] [data-role=x-label]')].map(t => t.textContent),
})"""
LOADED = "(p => p && p.dataset.points.length > 0)(document.querySelector('#g path[data-series=yesterday]'))"


@dataclass
class FakeHistory:
    """The history endpoint: every stored bucket in [period_start, period_end], sorted by time."""

    points: dict[int, tuple[int, int]] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    served: list[int] = field(default_factory=list)
    fail: int = 0   # answer {"error": "Access Denied"} with this status instead of the points

    async def handle(self, request: web.Request) -> web.Response:
        q = {**request.query, **{k: str(v) for k, v in (await request.post()).items()}}
        self.requests.append(q)
        if self.fail:
            return web.json_response({"error": "Access Denied"}, status=self.fail)
        if q.get("u") != "admin" or q.get("hash") != "h":
            return web.json_response({"error": "Access Denied"})
        start, end = int(q["period_start"]), int(q["period_end"])  # the graph sends Unix seconds
        pts = [{"time": t, "total": v, "answered": a} for t, (v, a) in sorted(self.points.items()) if start <= t <= end]
        self.served.append(len(pts))
        return web.json_response({"bucket_seconds": BUCKET, "period_start": start, "period_end": end, "points": pts})


def local_midnights(now: float) -> tuple[int, int, int]:
    """Yesterday's, today's and tomorrow's local midnight in TZ, as epoch seconds."""
    tz = ZoneInfo(TZ)
    today = datetime.fromtimestamp(now, tz).date()

    def at(d: date) -> int:
        return int(datetime.combine(d, dtime(), tz).timestamp())

    return at(today - timedelta(days=1)), at(today), at(today + timedelta(days=1))


def history_data(now: float) -> tuple[dict[int, tuple[int, int]], int]:
    """Two days of buckets up to a little before now (so the next ones are in the past too), with a
    10-minute hole yesterday and one in the last hour; also an hour before yesterday that must not show."""
    y0, _t0, _t1 = local_midnights(now)
    end = (int(now) // BUCKET) * BUCKET - 3 * BUCKET
    rng = random.Random(17)
    data: dict[int, tuple[int, int]] = {}
    for t in range(y0 - 3600, end + 1, BUCKET):
        if y0 + 3 * 3600 <= t < y0 + 3 * 3600 + 600 or end - 1800 <= t < end - 1200:
            continue
        total = max(0, int(30 + 25 * math.sin(2 * math.pi * (t - y0) / 86400 - math.pi / 2)) + rng.randint(0, 8))
        data[t] = (total, total * 3 // 4)
    return data, end


def parse_points(text: str) -> list[tuple[int, int]]:
    if not text:
        return []
    return [(int(t), int(v)) for t, v in (item.split(":") for item in text.split(","))]


def expected(data: dict[int, tuple[int, int]], now: float) -> dict[str, list[tuple[int, int]]]:
    y0, t0, t1 = local_midnights(now)
    rows = sorted((t, v) for t, (v, _a) in data.items() if t >= y0)  # the graph asks from yesterday's midnight
    return {"yesterday": [p for p in rows if y0 <= p[0] < t0],
            "today": [p for p in rows if t0 <= p[0] < t1],
            "hour": [p for p in rows if p[0] + BUCKET > now - 3600]}


def drawn_points(d: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r"[ML]([-\d.]+) ([-\d.]+)", d)]


async def state(cdp: Cdp) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(await cdp.eval(STATE))
    return result


async def open_graph(cdp: Cdp, base: str, query: str = "", auth: str = "u=admin&hash=h") -> dict[str, Any]:
    await cdp.call("Emulation.setTimezoneOverride", timezoneId=TZ)
    await cdp.call("Page.navigate", url=f"{base}/harness/graph.html{query}#{auth}")
    await wait_js(cdp, LOADED)
    return await state(cdp)


def graph_app(fake: FakeHistory) -> web.Application:
    app = static_app({"/harness/graph.html": HARNESS})
    app.router.add_post("/billing/api/active_calls_history", fake.handle)
    return app


async def test_graph_series_equal_the_served_buckets(tmp_path: Path) -> None:
    chromium_binary()
    now = time.time()
    data, end = history_data(now)
    fake = FakeHistory(points=data)
    async with serve(graph_app(fake)) as base, chromium(tmp_path) as cdp:
        st = await open_graph(cdp, base)
        y0, t0, _t1 = local_midnights(st["now"])
        assert now <= st["now"] <= time.time(), "the graph's notion of now is the (same machine's) browser clock"
        first = fake.requests[0]
        assert int(first["period_start"]) == y0, "one request from yesterday's local midnight"
        assert int(first["period_end"]) >= end
        got = {name: parse_points(st["series"][name]) for name in ("today", "yesterday", "hour")}
        want = expected(data, st["now"])
        assert got["yesterday"] == want["yesterday"]
        assert got["today"] == want["today"]
        assert got["hour"] == want["hour"]
        assert len(got["yesterday"]) == 86400 // BUCKET - 40, "a whole local day less the 10-minute hole"
        assert all(t >= y0 for t, _v in got["yesterday"]), "the hour before yesterday is not drawn"
        assert st["total"] == str(data[end][0]) and st["answered"] == str(data[end][1])
        assert st["error"] == ""
        assert st["xLabels"][0] == "00:00" and st["xLabels"][-1] == "24:00"
        assert 4 <= len(st["hourLabels"]) <= 6 and all(re.fullmatch(r"\d\d:\d0", t) for t in st["hourLabels"]), \
            f"local round minutes: {st['hourLabels']}"
        # drawing is bounded: at most two points per pixel column whatever the bucket count
        width, height = st["width"], st["dayHeight"]
        assert width == 900
        for name in ("today", "yesterday"):
            pts = drawn_points(st["d"][name])
            assert len(pts) <= 2 * width
            assert all(0 <= x <= width and 0 <= y <= height for x, y in pts)
        assert len(drawn_points(st["d"]["yesterday"])) > 400, "yesterday's curve spans the width"
        assert st["d"]["hour"].count("M") >= 2, "the hole in the last hour breaks the line"
        if got["today"]:
            assert drawn_points(st["d"]["today"])[-1][0] <= (end - t0 + BUCKET) / 86400 * width + 36
        stats = json.loads(await cdp.eval("JSON.stringify(harness.graph.stats)"))
        assert stats["points"] == len(got["today"]) + len(got["yesterday"]) and stats["loads"] == 1
        shot = await screenshot(cdp, "graph.png")
        assert shot.stat().st_size > 10_000
    print(f"graph: {stats['points']} buckets drawn in {stats['drawMs']:.1f} ms at {width}px")


async def test_graph_refresh_picks_up_new_buckets(tmp_path: Path) -> None:
    chromium_binary()
    now = time.time()
    data, end = history_data(now)
    fake = FakeHistory(points=data)
    async with serve(graph_app(fake)) as base, chromium(tmp_path) as cdp:
        await open_graph(cdp, base)
        calls = len(fake.requests)
        fake.points[end] = (99, 61)             # the newest bucket was still filling
        fake.points[end + BUCKET] = (77, 50)    # and a new one
        await cdp.eval("harness.graph.refresh()")
        st = await state(cdp)
        today = parse_points(st["series"]["today"])
        hour = parse_points(st["series"]["hour"])
        assert today[-2:] == [(end, 99), (end + BUCKET, 77)] == hour[-2:]
        assert st["total"] == "77" and st["answered"] == "50"
        assert len(fake.requests) == calls + 1
        again = fake.requests[-1]
        assert end - 150 <= int(again["period_start"]) <= end, "a refresh re-reads only the last minutes"
        assert fake.served[-1] <= 10
        assert today == expected(fake.points, st["now"])["today"]
        # a failing endpoint keeps what is drawn and says so; the next good answer clears the message
        for status, text in ((500, "HTTP 500"), (200, "Access Denied")):   # the harness throws on !ok
            fake.fail = status
            await cdp.eval("harness.graph.refresh()")
            failed = await state(cdp)
            assert failed["error"] == f"History unavailable: {text}"
            assert failed["series"] == st["series"]
        fake.fail = 0
        await cdp.eval("harness.graph.refresh()")
        assert (await state(cdp))["error"] == ""

        # the 15 s timer does the same by itself (here every 300 ms)
        st = await open_graph(cdp, base, "?interval=300")
        fake.points[end + 2 * BUCKET] = (12, 3)
        await wait_js(cdp, "document.querySelector('#g [data-role=current-total]').textContent === '12'")
        st = await state(cdp)
        assert parse_points(st["series"]["today"])[-1] == (end + 2 * BUCKET, 12)
        assert st["answered"] == "3"
        # stop() ends the timer and refresh() after it asks nothing
        assert await cdp.eval("""(async () => { harness.graph.stop(); const n = window.made;
            await harness.graph.refresh(); return window.made - n; })()""") == 0


async def test_graph_wall_theme_and_resize(tmp_path: Path) -> None:
    chromium_binary()
    data, _end = history_data(time.time())
    async with serve(graph_app(FakeHistory(points=data))) as base, chromium(tmp_path) as cdp:
        before = await open_graph(cdp, base)
        colours = """JSON.stringify({
          label: getComputedStyle(document.querySelector('#g [data-role=x-label]')).fill,
          text: getComputedStyle(document.querySelector('#g [data-role=current-total]')).color,
          today: getComputedStyle(document.querySelector('#g path[data-series=today]')).stroke,
          yesterday: getComputedStyle(document.querySelector('#g path[data-series=yesterday]')).stroke,
          hour: getComputedStyle(document.querySelector('#g path[data-series=hour]')).stroke,
          bg: getComputedStyle(document.body).backgroundColor})"""
        light = json.loads(await cdp.eval(colours))
        assert light["label"] == light["text"] == "rgb(29, 35, 41)", "text follows the page's colour"
        for name in ("today", "yesterday", "hour"):
            assert contrast(light[name], light["bg"]) >= 3, (name, light)
        await cdp.eval("document.body.classList.add('wall')")
        wall = json.loads(await cdp.eval(colours))
        assert wall["bg"] == "rgb(11, 15, 20)"
        assert wall["label"] == wall["text"] == "rgb(230, 237, 243)"
        assert wall["today"] == "rgb(88, 166, 255)", "the theme's --ac-graph-today is used"
        for name in ("today", "yesterday", "hour"):   # yesterday/hour keep their defaults: readable on dark too
            assert contrast(wall[name], wall["bg"]) >= 3, (name, wall)
        assert contrast(wall["label"], wall["bg"]) >= 7
        shot = await screenshot(cdp, "graph-wall.png")
        assert shot.stat().st_size > 10_000

        await cdp.eval("document.getElementById('g').style.width = '480px'")
        await wait_js(cdp, "document.querySelector('#g svg[data-panel=day]').getAttribute('width') === '480'")
        after = await state(cdp)
        assert after["hourWidth"] == 480
        assert after["series"] == before["series"], "resizing redraws, the data stays exact"
        for name in ("today", "yesterday", "hour"):
            assert all(0 <= x <= 480 for x, _y in drawn_points(after["d"][name]))
        assert len(drawn_points(after["d"]["yesterday"])) <= 2 * 480
        assert len(after["xLabels"]) < len(before["xLabels"]), "fewer hour labels on a narrow graph"


async def test_graph_adds_one_global(tmp_path: Path) -> None:
    chromium_binary()
    async with serve(graph_app(FakeHistory())) as base, chromium(tmp_path) as cdp:
        assert await new_globals(cdp, base, "graph.js") == ["ActiveCallsGraph"]


async def test_graph_against_the_real_daemon(tmp_path: Path, replay_server: ReplayFactory) -> None:
    """The real ``active_calls_history`` (behind a same-origin proxy): two days of seeded buckets plus what the
    daemon's sampler records while a trace replays; the drawn series equal what the endpoint answers."""
    from collector.live.historydb import create_history_table

    chromium_binary()
    now = time.time()
    data, end = history_data(now)
    replay = await replay_server("concurrent_load", fast=True)
    settings = settings_for(tmp_path, [replay.port])
    with sqlite3.connect(settings.database) as conn:
        create_history_table(conn)
        conn.executemany("INSERT INTO active_calls_data (series, bucket, total, answered) VALUES ('all', ?, ?, ?)",
                         [(t, v, a) for t, (v, a) in data.items()])
    conn.close()
    async with running_daemon(settings) as daemon:
        await replay.wait_finished(timeout=60)
        await barrier(daemon)
        secret = daemon._refs().users_by_username["admin"].api_secret_key
        auth = {"u": "admin", "hash": mor_hash("admin", secret)}
        daemon_base = f"http://127.0.0.1:{daemon.port}"
        app = static_app({"/harness/graph.html": HARNESS})
        sent = add_proxy(app, daemon_base)
        async with serve(app) as base, chromium(tmp_path) as cdp, aiohttp.ClientSession() as http:
            await open_graph(cdp, base, auth=f"u=admin&hash={auth['hash']}")
            assert sent[0].form["u"] == "admin" and "hash" not in sent[0].path_qs, "credentials in the body only"
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while True:   # the open bucket may still move: compare until the page and the API agree
                await cdp.eval("harness.graph.refresh()")
                st = await state(cdp)
                y0, _t0, _t1 = local_midnights(st["now"])
                async with http.post(daemon_base + "/billing/api/active_calls_history?format=json",
                                     data={**auth, "period_start": str(y0),
                                           "period_end": sent[-1].form["period_end"]}) as resp:
                    assert resp.status == 200
                    answer = await resp.json()
                served = {p["time"]: (p["total"], p["answered"]) for p in answer["points"]}
                want = expected(served, st["now"])
                got = {name: parse_points(st["series"][name]) for name in want}
                if got == want or loop.time() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert got == want
            assert answer["bucket_seconds"] == BUCKET
            sampled = [v for t, (v, _a) in served.items() if t > end]
            assert sampled and max(sampled) > 20, "the replayed calls are in today's series"
            assert len(got["yesterday"]) == 86400 // BUCKET - 40, "the seeded yesterday, through the real endpoint"
            last = max(served)
            assert st["total"] == str(served[last][0]) and st["answered"] == str(served[last][1])
