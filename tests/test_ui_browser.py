"""The Active Calls page in a real headless Chromium, driven over the DevTools Protocol (aiohttp's
websocket client, no Playwright), against the whole daemon replaying a real trace with hold points:
rows appear, answer and disappear as the trace plays, and the page's counters equal the API's.

Chromium is required: without it this test fails (CI must install it: ``apt-get install -y chromium``)
unless ``COLLECTOR_SKIP_BROWSER=1`` says to skip it. A screenshot lands in ``test-artifacts/ui.png``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api.deps import DEPS_KEY
from collector.tools.timeline import iter_trace_messages
from tests.conftest import scenario_files
from tests.daemon_helpers import barrier, mor_hash, running_daemon, settings_for

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1"]

PAGE_STATE = """JSON.stringify({
  rows: [...document.querySelectorAll('#calls tbody tr')].map(tr => [tr.dataset.uniqueid, tr.cells[1].textContent]),
  total: document.getElementById('total').textContent,
  answered: document.getElementById('answered').textContent,
  providers: [...document.querySelectorAll('#providers tbody tr')].map(tr => [...tr.cells].map(c => c.textContent)),
  error: document.getElementById('error').textContent,
})"""


def chromium_binary() -> str:
    found = os.environ.get("COLLECTOR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("COLLECTOR_SKIP_BROWSER") == "1":
        pytest.skip("COLLECTOR_SKIP_BROWSER=1 and no Chromium")
    pytest.fail("Chromium is not installed: apt-get install -y chromium (or set COLLECTOR_SKIP_BROWSER=1)")


class Cdp:
    """The few DevTools Protocol calls the test needs; events in between are ignored."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        n = next(self.ids)
        await self.ws.send_json({"id": n, "method": method, "params": params})
        async with asyncio.timeout(30):
            while True:
                msg = await self.ws.receive_json()
                if msg.get("id") == n:
                    if "error" in msg:
                        raise RuntimeError(f"{method}: {msg['error']}")
                    result: dict[str, Any] = msg["result"]
                    return result

    async def eval(self, expression: str) -> Any:
        res = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return res["result"].get("value")


@asynccontextmanager
async def chromium(tmp: Path) -> AsyncIterator[Cdp]:
    profile = tmp / "chromium-profile"
    profile.mkdir()
    log = (tmp / "chromium.log").open("wb")
    proc = await asyncio.create_subprocess_exec(chromium_binary(), *FLAGS, f"--user-data-dir={profile}",
                                                "about:blank", stdout=log, stderr=log)
    try:
        port_file = profile / "DevToolsActivePort"
        async with asyncio.timeout(30):
            while not port_file.exists() or not port_file.read_text().strip():
                if proc.returncode is not None:
                    log_tail = (tmp / "chromium.log").read_text()[-2000:]
                    raise RuntimeError(f"chromium exited {proc.returncode}: {log_tail}")
                await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(30):
                while True:
                    async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                        pages = [t for t in await resp.json() if t.get("type") == "page"]
                    if pages:
                        break
                    await asyncio.sleep(0.05)
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield Cdp(ws)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def api_view(http: aiohttp.ClientSession, base: str, auth: dict[str, str]) -> dict[str, Any]:
    async with http.post(base + "/billing/api/active_calls_get?format=json", data=auth) as resp:
        doc = await resp.json()
    async with http.post(base + "/billing/api/active_calls_totals?format=json",
                         data={**auth, "group_by": "provider"}) as resp:
        totals = await resp.json()
    rows = sorted([c["uniqueid"], c["status"]] for c in doc.get("active_calls", []))
    providers = sorted([g["name"] or "(none)", str(g["total"]), str(g["answered"])] for g in totals["groups"])
    return {"rows": rows, "total": str(totals["totals"]["total"]), "answered": str(totals["totals"]["answered"]),
            "providers": providers}


def page_view(state: dict[str, Any]) -> dict[str, Any]:
    return {"rows": sorted(state["rows"]), "total": state["total"], "answered": state["answered"],
            "providers": sorted(state["providers"])}


async def page_matches(cdp: Cdp, expected: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
    """Poll the page (it updates itself from the stream) until it shows what the API says."""
    state: dict[str, Any] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        raw = await cdp.eval(PAGE_STATE)  # None while the page is still loading (no #total yet)
        state = json.loads(raw) if raw else {}
        if state and page_view(state) == expected:
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"page never matched the API:\npage={state and page_view(state)} "
                         f"error={state.get('error')!r}\n"
                         f"api={expected}")


async def test_page_follows_a_replayed_trace(tmp_path: Path, replay_server: Any) -> None:
    chromium_binary()  # fail (or skip) before starting anything
    paths = scenario_files("concurrent_load")
    t0 = next(float(m["Timestamp"]) for m in iter_trace_messages(paths) if m.get("Timestamp"))
    holds = [t0 + s for s in (4, 10, 17, 25, 33)]
    replay = await replay_server("concurrent_load", fast=True)
    replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= holds[0])
    async with running_daemon(settings_for(tmp_path, [replay.port])) as daemon, chromium(tmp_path) as cdp:
        assert daemon._runner is not None and daemon._runner.app[DEPS_KEY].changes is not None, \
            "the daemon must pass changes=ChangeHub.following(self.live) to ApiDeps (collector/service/daemon.py)"
        secret = daemon._refs().users_by_username["admin"].api_secret_key
        auth = {"u": "admin", "hash": mor_hash("admin", secret)}
        base = f"http://127.0.0.1:{daemon.port}"
        await replay.wait_held(timeout=30)
        await barrier(daemon)
        # sign in the way a person would: user + secret, hashed in the page by SubtleCrypto
        await cdp.call("Page.navigate", url=f"{base}/#u=admin&secret={secret}")
        history: dict[str, list[str]] = {}
        most = 0
        async with aiohttp.ClientSession() as http:
            for _i, hold in enumerate([*holds[1:], None]):
                expected = await api_view(http, base, auth)
                state = await page_matches(cdp, expected)
                for uid, status in state["rows"]:
                    history.setdefault(uid, []).append(status)
                for uid in history:
                    if uid not in {u for u, _s in state["rows"]}:
                        history[uid].append("gone")
                if len(state["rows"]) > most:
                    most = len(state["rows"])
                    shot = await cdp.call("Page.captureScreenshot", format="png")
                    ARTIFACTS.mkdir(exist_ok=True)
                    (ARTIFACTS / "ui.png").write_bytes(base64.b64decode(shot["data"]))
                replay.release()
                if hold is not None:
                    replay.hold(when=lambda ev, h=hold: ev.timestamp is not None and ev.timestamp >= h)
                    await replay.wait_held(timeout=30)
                else:
                    await replay.wait_finished(timeout=60)
                await barrier(daemon)
            final = await page_matches(cdp, await api_view(http, base, auth))
        assert final["rows"] == [] and final["total"] == "0"
        assert most > 20, "the page showed a busy table at some point"
        answered_live = [u for u, seq in history.items() if "Ringing" in seq and "Answered" in seq]
        gone = [u for u, seq in history.items() if "gone" in seq]
        assert answered_live, "some calls were seen ringing, then answered"
        assert gone, "some calls were seen leaving the table"
        assert (ARTIFACTS / "ui.png").stat().st_size > 10_000


async def test_page_keeps_up_with_5000_rows(tmp_path: Path) -> None:
    """5,000 calls in the snapshot, then a burst answering all of them: the keyed, frame-batched DOM
    update must bring the page to the new state (times are printed for the report; the timeouts only bound
    a hung page, speed is not asserted here)."""

    from aiohttp import web

    from api.app import create_app
    from api.changes import ChangeHub
    from api.deps import ApiDeps
    from collector.live.table import LiveCall
    from collector.tracking.calls import CallStatus
    from tests.api_support import NOW, REFS, ROWS, sha, with_settings

    chromium_binary()
    ringing = [r for r in ROWS if r.call.status is CallStatus.RINGING]
    rows = {n: LiveCall(n, ringing[n % len(ringing)].call._replace(uniqueid=f"u{n}", linkedid=f"u{n}"),
                        ringing[n % len(ringing)].info) for n in range(1, 5001)}
    hub = ChangeHub()
    hub.seed(rows.values())
    app = create_app(ApiDeps(rows=lambda: tuple(rows.values()), refs=lambda: REFS, settings=with_settings(),
                             clock=lambda: NOW, changes=hub))
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    count = "[document.querySelectorAll('#calls tbody tr').length, document.getElementById('answered').textContent]"
    try:
        async with chromium(tmp_path) as cdp:
            loop = asyncio.get_running_loop()
            started = loop.time()
            await cdp.call("Page.navigate", url=f"{base}/ui#u=admin&hash={sha('admin' + 'adminsecret')}")
            async with asyncio.timeout(90):
                while await cdp.eval(f"document.getElementById('total') && {count}") != [5000, "0"]:
                    await asyncio.sleep(0.05)
            first = loop.time() - started
            started = loop.time()
            for n, row in list(rows.items()):
                up = LiveCall(n, row.call._replace(status=CallStatus.ANSWERED, answer_time=NOW - 1), row.info)
                rows[n] = up
                hub.publish("updated", up)
            async with asyncio.timeout(90):
                while await cdp.eval(count) != [5000, "5000"]:
                    await asyncio.sleep(0.05)
            burst = loop.time() - started
            stats = await cdp.eval("JSON.stringify(window.activeCalls.stats)")
            shot = await cdp.call("Page.captureScreenshot", format="png")
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / "ui-5000.png").write_bytes(base64.b64decode(shot["data"]))
    finally:
        await runner.cleanup()
    print(f"ui 5000 rows: snapshot shown in {first:.2f}s, 5000 updates applied in {burst:.2f}s; page {stats}")
