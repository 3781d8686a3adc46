"""The page signed in with username + password (the v2 login, ``session.js``) in a real headless Chromium
against the real daemon replaying a real trace: a wrong password is refused with the server's words, the
page reads stream, totals and entities with the Bearer token only (no u/hash anywhere), the token is in
no URL, storage or cookie, each role sees its own calls, and signing out stops the stream.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import aiohttp

from api.passwords import hash_password
from collector.refdata.local_passwords import LocalPasswords
from collector.tools.timeline import iter_trace_messages
from tests.browser import Cdp, chromium, chromium_binary
from tests.conftest import ReplayFactory, scenario_files
from tests.daemon_helpers import barrier, running_daemon, settings_for
from tests.ui_page import open_page, poll, screenshot

PASSWORD = {"admin": "wall screen 1", "reseller": "res pass 2"}

STATE = """JSON.stringify({
  model: window.activeCalls ? [...window.activeCalls.st.rows.keys()] : [],
  rows: document.querySelectorAll('#calls tbody tr:not(.pad)').length,
  buttons: [...document.querySelectorAll('#calls tbody tr:not(.pad) button.hangup')].filter(b => !b.hidden
    && b.offsetWidth > 0).length,
  conn: document.getElementById('conn').dataset.state,
  total: document.getElementById('total').textContent,
  who: document.getElementById('who').textContent,
  users: [...document.getElementById('f-user').options].map(o => o.value).filter(Boolean),
  groups: [...document.querySelectorAll('#groups tbody tr')].map(tr => [...tr.cells].map(c => c.textContent)),
  loginError: (document.querySelector('#session-login [data-role=login-error]') || {}).textContent || '',
  leaks: location.href + JSON.stringify(Object.assign({}, localStorage)) +
    JSON.stringify(Object.assign({}, sessionStorage)) + document.cookie + document.body.innerHTML,
})"""


async def watch(cdp: Cdp, ok: Any, timeout: float = 15.0) -> dict[str, Any]:
    return await poll(cdp, ok, timeout, STATE)


async def log_in(cdp: Cdp, base: str, user: str, password: str) -> None:
    await open_page(cdp, f"{base}/ui")
    await poll(cdp, lambda s: bool(s), expression="JSON.stringify(!!document.querySelector('#session-login "
                                                   "input[name=password]') && {ok: 1})")
    for name, text in (("username", user), ("password", password)):
        await cdp.eval(f"document.querySelector('#session-login input[name={name}]').focus()")
        await cdp.call("Input.insertText", text=text)
    await cdp.eval("document.querySelector('#session-login button[type=submit]').click()")


async def test_password_login_reads_with_the_token_only(tmp_path: Path, replay_server: ReplayFactory) -> None:
    chromium_binary()
    paths = scenario_files("concurrent_load")
    t0 = next(float(m["Timestamp"]) for m in iter_trace_messages(paths) if m.get("Timestamp"))
    replay = await replay_server("concurrent_load", fast=True)
    replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= t0 + 15)
    async with running_daemon(settings_for(tmp_path, [replay.port])) as daemon, chromium(tmp_path) as cdp, \
            aiohttp.ClientSession() as http:
        await replay.wait_held(timeout=30)
        await barrier(daemon)
        store = LocalPasswords(daemon.settings.database)
        for user, password in PASSWORD.items():
            store.set(user, hash_password(password))
        base = f"http://127.0.0.1:{daemon.port}"

        async def api(user: str) -> tuple[list[int], dict[str, Any], dict[str, Any]]:
            """What ``user`` may see, asked with a token of his own (the login the page makes)."""
            async with http.post(base + "/billing/api/v2/authentication/login",
                                 headers={"Authorization": "Basic " + base64.b64encode(
                                     f"{user}:{PASSWORD[user]}".encode()).decode()}) as resp:
                login = await resp.json()
            bearer = {"Authorization": f"Bearer {login['token']}"}
            async with http.post(base + "/billing/api/active_calls_get?format=json", headers=bearer) as resp:
                ids = sorted(int(r["id"]) for r in (await resp.json())["active_calls"])
            async with http.post(base + "/billing/api/active_calls_totals?format=json",
                                 data={"group_by": "server"}, headers=bearer) as resp:
                totals = await resp.json()
            async with http.post(base + "/billing/api/active_calls_entities?format=json", headers=bearer) as resp:
                entities = await resp.json()
            return ids, totals, entities

        await log_in(cdp, base, "admin", "not the password")
        state = await watch(cdp, lambda s: s["loginError"] != "")
        assert state["loginError"] == "Invalid username or password" and state["conn"] == "offline"

        seen: dict[str, list[int]] = {}
        for user in ("reseller", "admin"):
            ids, totals, entities = await api(user)
            await log_in(cdp, base, user, PASSWORD[user])
            state = await watch(cdp, lambda s: s["conn"] == "live" and sorted(s["model"]) == ids  # noqa: B023
                                and s["total"] == str(totals["totals"]["total"])  # noqa: B023
                                and len(s["groups"]) == len(totals["groups"]))  # noqa: B023
            seen[user] = ids
            assert state["users"] == [str(u["id"]) for u in entities["users"]], "the token's own entities"
            assert state["buttons"] == 0, "hang-up is not configured: no buttons"
            assert "eyJ" not in state["leaks"] and PASSWORD[user] not in state["leaks"], "in memory only"
        assert 0 < len(seen["reseller"]) < len(seen["admin"]), "the reseller saw only his calls"
        await screenshot(cdp, "ui-login.png")

        await cdp.eval("document.getElementById('logout').click()")
        state = await watch(cdp, lambda s: s["conn"] == "offline" and s["model"] == [])
        assert json.loads(await cdp.eval("JSON.stringify(window.activeCalls.st.auth)")) is None
