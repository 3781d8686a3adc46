"""The whole path in a real headless Chromium against the real daemon replaying a real trace: log in with
username + password (``collector db set-password``'s store), the page reads the stream and totals with the
Bearer token, a reseller sees only his calls, the hang-up button asks first and then the daemon sends AMI
``Hangup`` to the (replayed) Asterisk — the call leaves the API and the page by itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from api.passwords import hash_password
from collector.refdata.local_passwords import LocalPasswords
from tests.browser import Cdp, chromium, chromium_binary
from tests.conftest import ReplayFactory
from tests.hangup_support import hangup_daemon, held_replay, token
from tests.ui_page import open_page, poll, screenshot

PASSWORD = {"admin": "wall screen 1", "reseller": "res pass 2", "alice": "alice pass 3"}

STATE = """JSON.stringify({
  ids: [...document.querySelectorAll('#calls tbody tr:not(.pad)')].map(tr => Number(tr.dataset.id)),
  model: window.activeCalls ? [...window.activeCalls.st.rows.keys()] : [],
  buttons: [...document.querySelectorAll('#calls tbody tr:not(.pad) button.hangup')].filter(b => !b.hidden
    && b.offsetWidth > 0).length,
  conn: document.getElementById('conn').dataset.state,
  total: document.getElementById('total').textContent,
  dialog: document.querySelector('dialog.ac-confirm') ? document.querySelector('dialog.ac-confirm').textContent : '',
  flash: document.getElementById('flash').textContent,
})"""


async def watch(cdp: Cdp, ok: Any, timeout: float = 15.0) -> dict[str, Any]:
    return await poll(cdp, ok, timeout, STATE)


async def log_in(cdp: Cdp, base: str, user: str) -> None:
    await open_page(cdp, f"{base}/ui")
    await poll(cdp, lambda s: bool(s), expression="JSON.stringify(!!document.querySelector('#session-login "
                                                   "input[name=password]') && {ok: 1})")
    for name, text in (("username", user), ("password", PASSWORD[user])):
        await cdp.eval(f"document.querySelector('#session-login input[name={name}]').focus()")
        await cdp.call("Input.insertText", text=text)
    await cdp.eval("document.querySelector('#session-login button[type=submit]').click()")


async def test_login_then_hang_up_through_the_daemon(tmp_path: Path, replay_server: ReplayFactory) -> None:
    chromium_binary()
    replay = await held_replay(replay_server)
    async with hangup_daemon(tmp_path, [replay]) as daemon, chromium(tmp_path) as cdp, \
            aiohttp.ClientSession() as http:
        store = LocalPasswords(daemon.settings.database)
        for user, password in PASSWORD.items():
            store.set(user, hash_password(password))
        base = f"http://127.0.0.1:{daemon.port}"

        async def visible_to(user: str) -> list[int]:
            bearer = {"Authorization": f"Bearer {token(daemon, user)}"}
            async with http.post(base + "/billing/api/active_calls_get?format=json", headers=bearer) as resp:
                return sorted(int(r["id"]) for r in (await resp.json())["active_calls"])

        # a reseller: only his calls, and (resellers may) the buttons
        mine = await visible_to("reseller")
        everyone = await visible_to("admin")
        assert len(everyone) > 20 and len(mine) < len(everyone)
        await log_in(cdp, base, "reseller")
        await watch(cdp, lambda s: s["conn"] == "live" and sorted(s["model"]) == mine)

        # a user (users may not hang up by default): no buttons
        await log_in(cdp, base, "alice")
        state = await watch(cdp, lambda s: s["conn"] == "live" and len(s["model"]) > 0)
        assert state["buttons"] == 0

        await log_in(cdp, base, "admin")
        state = await watch(cdp, lambda s: s["conn"] == "live" and sorted(s["model"]) == everyone and s["buttons"] > 0)
        victim = state["ids"][0]
        click = f"document.querySelector('#calls tbody tr[data-id=\"{victim}\"] button.hangup').click()"
        await cdp.eval(click)
        state = await watch(cdp, lambda s: f"Hang up call {victim}" in s["dialog"])
        await screenshot(cdp, "ui-hangup-confirm.png")
        await cdp.eval("document.querySelector('dialog.ac-confirm button[data-action=hangup]').click()")
        state = await watch(cdp, lambda s: victim not in s["model"] and f"Call {victim} hung up" in s["flash"],
                            timeout=20.0)
        assert victim not in await visible_to("admin"), "Asterisk (the replay) ended it; the API agrees"
        assert state["conn"] == "live"
