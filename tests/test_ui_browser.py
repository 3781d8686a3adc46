"""The Active Calls page in a real headless Chromium (``tests.browser``), against the whole daemon
replaying a real trace with hold points: rows appear, answer and disappear as the trace plays, and the
page's counters equal the API's. A screenshot lands in ``test-artifacts/ui.png``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import aiohttp

from api.deps import DEPS_KEY
from collector.tools.timeline import iter_trace_messages
from tests.browser import ARTIFACTS, Cdp, chromium, chromium_binary
from tests.conftest import scenario_files
from tests.daemon_helpers import barrier, mor_hash, running_daemon, settings_for

# the page's whole table (only the rows on screen exist as <tr>: it is virtualised) and what it shows
PAGE_STATE = """JSON.stringify({
  rows: [...window.activeCalls.st.rows.values()].map(r => [r.uniqueid, r.status]),
  dom: [...document.querySelectorAll('#calls tbody tr:not(.pad)')].map(tr => [tr.dataset.uniqueid,
    tr.className.split(' ')[0]]),
  total: document.getElementById('total').textContent,
  answered: document.getElementById('answered').textContent,
  providers: [...document.querySelectorAll('#groups tbody tr')].map(tr => [...tr.cells].map(c => c.textContent)),
  error: document.getElementById('error').textContent,
})"""


async def api_view(http: aiohttp.ClientSession, base: str, auth: dict[str, str]) -> dict[str, Any]:
    async with http.post(base + "/billing/api/active_calls_get?format=json", data=auth) as resp:
        doc = await resp.json()
    async with http.post(base + "/billing/api/active_calls_totals?format=json",
                         data={**auth, "group_by": "provider"}) as resp:
        totals = await resp.json()
    rows = sorted([c["uniqueid"], c["status"]] for c in doc.get("active_calls", []))
    providers = sorted([g["name"] or "(none)",  # the call limit beside the count where one is set
                        f"{g['total']} / {g['call_limit']}" if g.get("call_limit") is not None else str(g["total"]),
                        str(g["answered"])] for g in totals["groups"])
    return {"on_screen": True, "rows": rows, "total": str(totals["totals"]["total"]),
            "answered": str(totals["totals"]["answered"]),
            "providers": providers}


def page_view(state: dict[str, Any]) -> dict[str, Any]:
    shown = {(uid, status.lower()) for uid, status in state["rows"]}
    on_screen = all(tuple(r) in shown for r in state["dom"]) and len(state["dom"]) >= min(len(shown), 10)
    return {"on_screen": on_screen, "rows": sorted(state["rows"]), "total": state["total"],
            "answered": state["answered"],
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
        await cdp.call("Page.navigate", url=f"{base}/?group=provider#u=admin&secret={secret}")
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
    """5,000 calls in the snapshot, then a burst answering all of them: the frame-batched, virtualised
    table must bring the page to the new state (times are printed for the report; the timeouts only bound
    a hung page, speed is not asserted here — ``python -m bench.ui_render`` measures frames)."""
    from collector.tracking.calls import CallStatus
    from tests.api_support import NOW, sha
    from tests.ui_support import many_rows, ui_server

    chromium_binary()
    ringing = [r for r in many_rows(15000) if r.call.status is CallStatus.RINGING][:5000]
    count = ("[window.activeCalls.st.rows.size, document.getElementById('answered').textContent, "
             "document.querySelectorAll('#calls tbody tr:not(.pad)').length > 0]")
    async with ui_server(ringing) as world, chromium(tmp_path) as cdp:
        n = len(ringing)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await cdp.call("Page.navigate", url=f"{world.base}/ui#u=admin&hash={sha('admin' + 'adminsecret')}")
        async with asyncio.timeout(90):
            while await cdp.eval(f"window.activeCalls && {count}") != [n, "0", True]:
                await asyncio.sleep(0.05)
        first = loop.time() - started
        started = loop.time()
        for row in ringing:
            world.put(row._replace(call=row.call._replace(status=CallStatus.ANSWERED, answer_time=NOW - 1)))
        async with asyncio.timeout(90):
            while await cdp.eval(count) != [n, str(n), True]:
                await asyncio.sleep(0.05)
        burst = loop.time() - started
        stats = await cdp.eval("JSON.stringify(window.activeCalls.table.stats)")
        shot = await cdp.call("Page.captureScreenshot", format="png")
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "ui-5000.png").write_bytes(base64.b64decode(shot["data"]))
    print(f"ui {n} rows: snapshot shown in {first:.2f}s, {n} updates applied in {burst:.2f}s; table {stats}")


async def test_page_shows_a_daemon_restart_and_recovers_by_itself(tmp_path: Path, replay_server: Any) -> None:
    """The daemon stops while the page is open: the page says so within 5 s, keeps retrying, and once a
    daemon answers on the same port again (its calls restored from SQLite, Asterisk not back yet) it shows
    that daemon's table — with nobody touching the page."""
    from dataclasses import replace

    chromium_binary()
    paths = scenario_files("concurrent_load")
    t0 = next(float(m["Timestamp"]) for m in iter_trace_messages(paths) if m.get("Timestamp"))
    replay = await replay_server("concurrent_load", fast=True)
    replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= t0 + 10)
    settings = settings_for(tmp_path, [replay.port])
    conn = "JSON.stringify({state: document.getElementById('conn').dataset.state, " \
           "banner: document.getElementById('banner').hidden ? '' : document.getElementById('banner').textContent})"
    async with chromium(tmp_path) as cdp, aiohttp.ClientSession() as http:
        async with running_daemon(settings) as daemon:
            secret = daemon._refs().users_by_username["admin"].api_secret_key
            auth = {"u": "admin", "hash": mor_hash("admin", secret)}
            port = daemon.port
            base = f"http://127.0.0.1:{port}"
            await replay.wait_held(timeout=30)
            await barrier(daemon)
            await cdp.call("Page.navigate", url=f"{base}/?group=provider#u=admin&secret={secret}")
            before = await page_matches(cdp, await api_view(http, base, auth))
            assert len(before["rows"]) > 5
        await wait_state(cdp, conn, lambda st: st["state"] == "down" and "reconnecting" in st["banner"],
                         timeout=5.0)  # the bar: shown within 5 s of the stream dropping
        await replay.close()  # Asterisk stays away: the new daemon has only what it restored
        async with running_daemon(replace(settings, http=replace(settings.http, port=port))) as again:
            assert again.port == port
            # same rows as before (restored), so first the page must be back on the stream by itself
            await wait_state(cdp, conn, lambda st: st == {"state": "live", "banner": ""}, timeout=30.0)
            after = await page_matches(cdp, await api_view(http, base, auth))
            assert after["rows"], "the restarted daemon's calls (restored from SQLite) are shown"
            ARTIFACTS.mkdir(exist_ok=True)
            shot = await cdp.call("Page.captureScreenshot", format="png")
            (ARTIFACTS / "ui-restarted.png").write_bytes(base64.b64decode(shot["data"]))


async def wait_state(cdp: Cdp, expression: str, ok: Any, timeout: float) -> dict[str, Any]:
    """Poll a JSON expression of the page until ``ok`` holds (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        state: dict[str, Any] = json.loads(await cdp.eval(expression))
        if ok(state):
            return state
        assert loop.time() < deadline, f"page state not reached within {timeout}s: {state}"
        await asyncio.sleep(0.05)
