"""api/static/session.js in a real headless Chromium, against fake v2 endpoints answering exactly per the
contract: login (Basic) and refresh (Bearer) → 200 ``{"token", "token_type", "expires_in", "expires_at",
"user": {"id", "username", "role", "name"}, "may_hang_up"}``, 401 ``{"error": "Invalid username or
password"}``, 429 ``{"error": "Too many failed logins, try again later"}`` + Retry-After, and the hang-up
``DELETE /billing/api/v2/active_calls/{id}`` → ``{"status": "hung_up", "hung_up_call", "hung_up_at"}``.
Every request the page makes is logged with its Authorization header, so the tests see what was sent.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from collector.service.hangup import HangupSettings
from collector.tools.timeline import iter_trace_messages
from collector.tracking.calls import CallStatus
from tests.browser import Cdp, chromium, chromium_binary
from tests.conftest import ReplayFactory, scenario_files
from tests.daemon_helpers import barrier, mor_hash, running_daemon, settings_for
from tests.ui_harness import add_proxy, new_globals, serve, static_app, wait_js

USER, PASSWORD = "alice", "s3cret pässwörd"   # non-ASCII: Basic must carry UTF-8
HARNESS = """<!doctype html><html><head><meta charset="utf-8"><title>session harness</title></head><body>
<form id="login"></form><p id="out"></p>
<script src="/ui/static/session.js"></script>
<script>
"use strict";
window.h = { session: null, logins: 0, expired: null, changes: 0 };
window.h.form = window.ActiveCallsSession.mountLogin(document.getElementById("login"), (s) => {
  h.session = s; h.logins += 1;
  s.onexpire = (why) => { h.expired = why; };
  s.onchange = () => { h.changes += 1; };
  document.getElementById("out").textContent = "Hello " + s.user.name;
});
</script></body></html>"""


@dataclass
class FakeV2:
    """Login/refresh/hang-up and one Bearer read endpoint (active_calls_totals), per contracts.md."""

    expires_in: int = 900
    tokens: dict[str, str] = field(default_factory=dict)     # valid token → username
    issued: list[str] = field(default_factory=list)
    failures: int = 0
    reject_next_read: bool = False
    busy: bool = False   # the auth branch's 503 while too many scrypt checks run
    log: list[tuple[str, str, str]] = field(default_factory=list)   # method, path?query, Authorization
    forms: list[dict[str, str]] = field(default_factory=list)        # the read endpoint's form bodies

    @web.middleware
    async def record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/ui/static/"):
            self.log.append((request.method, request.path_qs, request.headers.get("Authorization", "")))
        resp: web.StreamResponse = await handler(request)
        return resp

    def issue(self, username: str) -> web.Response:
        token = secrets.token_urlsafe(32)
        self.tokens[token] = username
        self.issued.append(token)
        expires = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + self.expires_in))
        return web.json_response({"token": token, "token_type": "Bearer", "expires_in": self.expires_in,
                                  "expires_at": expires,
                                  "user": {"id": 7, "username": username, "role": "admin", "name": "Alice Admin"},
                                  "may_hang_up": True})

    def bearer(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        return self.tokens.get(token) and token

    async def login(self, request: web.Request) -> web.Response:
        if self.busy:
            return web.json_response({"error": "Too many logins in progress, try again later"}, status=503,
                                     headers={"Retry-After": "1"})
        if self.failures >= 2:
            return web.json_response({"error": "Too many failed logins, try again later"}, status=429,
                                     headers={"Retry-After": "30"})
        auth = request.headers.get("Authorization", "")
        decoded = base64.b64decode(auth[6:]).decode() if auth.startswith("Basic ") else ""
        user, _, password = decoded.partition(":")
        if (user, password) != (USER, PASSWORD):
            self.failures += 1
            return web.json_response({"error": "Invalid username or password"}, status=401)
        return self.issue(user)

    async def refresh(self, request: web.Request) -> web.Response:
        token = self.bearer(request)
        if token is None:
            return web.json_response({"error": "Invalid token"}, status=401)
        return self.issue(self.tokens[token])

    async def totals(self, request: web.Request) -> web.Response:
        self.forms.append({k: str(v) for k, v in (await request.post()).items()})
        if request.query.get("format") != "json":   # as api.responses.wants_json: the query string only
            return web.Response(text="<status><error>xml</error></status>", content_type="text/xml")
        if self.reject_next_read or self.bearer(request) is None:
            self.reject_next_read = False
            return web.json_response({"error": "Access Denied"}, status=401)
        return web.json_response({"totals": {"total": 3, "answered": 1}})

    async def hang_up(self, request: web.Request) -> web.Response:
        if self.bearer(request) is None:
            return web.json_response({"error": "Invalid token"}, status=401)
        call = int(request.match_info["id"])
        if call == 44:
            return web.json_response({"error": "Not allowed to hang up this call"}, status=403)
        return web.json_response({"status": "hung_up", "hung_up_call": call,
                                  "hung_up_at": time.strftime("%Y-%m-%d %H:%M:%S")})

    def app(self) -> web.Application:
        app = static_app({"/harness/session.html": HARNESS})
        app.middlewares.append(self.record)
        app.router.add_post("/billing/api/v2/authentication/login", self.login)
        app.router.add_post("/billing/api/v2/authentication/refresh", self.refresh)
        app.router.add_post("/billing/api/active_calls_totals", self.totals)
        app.router.add_delete(r"/billing/api/v2/active_calls/{id:\d+}", self.hang_up)
        return app

    def sent(self, method: str, path: str) -> list[tuple[str, str, str]]:
        return [entry for entry in self.log if entry[0] == method and entry[1].startswith(path)]


async def open_harness(cdp: Cdp, base: str) -> None:
    await cdp.call("Page.navigate", url=f"{base}/harness/session.html")
    await wait_js(cdp, "location.pathname === '/harness/session.html' && !!document.querySelector('#login input')")


async def type_login(cdp: Cdp, username: str, password: str) -> None:
    """Type into the form as a person would (focus + insertText), then press the button."""
    for name, text in (("username", username), ("password", password)):
        await cdp.eval(f"(el => {{ el.value = ''; el.focus(); }})(document.querySelector('#login [name={name}]'))")
        await cdp.call("Input.insertText", text=text)
    await cdp.eval("document.querySelector('#login button[type=submit]').click()")


async def error_line(cdp: Cdp, previous: str = "") -> str:
    """The login error line once it shows something other than ``previous``."""
    text: str = await wait_js(cdp, f"""(t => t && t !== {json.dumps(previous)} && t)(
        document.querySelector('#login [data-role=login-error]').textContent)""")
    return text


async def test_login_keeps_the_token_in_memory_only(tmp_path: Path) -> None:
    chromium_binary()
    fake = FakeV2()
    async with serve(fake.app()) as base, chromium(tmp_path) as cdp:
        await open_harness(cdp, base)
        form = json.loads(await cdp.eval("""(f => JSON.stringify({method: f.method,
            inputs: [...f.querySelectorAll('input')].map(i => [i.name, i.type, i.autocomplete]),
            error: f.querySelector('[data-role=login-error]').getAttribute('role')}))(
            document.getElementById('login'))"""))
        assert form == {"method": "post", "error": "alert", "inputs": [["username", "text", "username"],
                                                                      ["password", "password", "current-password"]]}
        before = time.time()
        await type_login(cdp, USER, PASSWORD)
        await wait_js(cdp, "h.logins === 1")
        after = time.time()
        [token] = fake.issued
        [(_m, path, auth)] = fake.sent("POST", "/billing/api/v2/authentication/login")
        assert path == "/billing/api/v2/authentication/login", "no credentials in the URL"
        assert auth == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        who = json.loads(await cdp.eval("JSON.stringify({user: h.session.user, may: h.session.mayHangUp, "
                                        "active: h.session.active, out: document.getElementById('out').textContent,"
                                        "expires: h.session.expiresAt.getTime() / 1000, "
                                        "password: document.querySelector('#login [name=password]').value})"))
        assert who["user"] == {"id": 7, "username": USER, "role": "admin", "name": "Alice Admin"}
        assert who["may"] is True and who["active"] is True and who["out"] == "Hello Alice Admin"
        assert before + 900 <= who["expires"] <= after + 900, "expires_in counted from the answer's arrival"
        assert who["password"] == "", "the password does not linger in the form"
        # the token is nowhere the page or another script could find it
        places = json.loads(await cdp.eval("""JSON.stringify([location.href, document.cookie,
            JSON.stringify(Object.entries(localStorage)), JSON.stringify(Object.entries(sessionStorage)),
            String(localStorage.length + sessionStorage.length), document.documentElement.outerHTML,
            JSON.stringify(h.session), JSON.stringify(history.state)])"""))
        assert places[1] == "" and places[4] == "0"
        assert all(token not in place for place in places)
        # it is sent only as a Bearer header
        body = json.loads(await cdp.eval("h.session.request('/billing/api/active_calls_totals', "
                                         "{group_by: 'provider'}).then(JSON.stringify)"))
        assert body == {"totals": {"total": 3, "answered": 1}}
        [(_m, path, auth)] = fake.sent("POST", "/billing/api/active_calls_totals")
        assert path == "/billing/api/active_calls_totals?format=json" and auth == f"Bearer {token}"
        assert fake.forms == [{"group_by": "provider"}], "a POST form, as MOR's API wants"
        assert all(token not in p for _m, p, _a in fake.log)
        headers = json.loads(await cdp.eval("""(() => { const o = {Accept: 'x'};
            const same = h.session.authorize(o) === o;
            return JSON.stringify([o, same, [...h.session.authorize(new Headers()).entries()], h.session.authorize()]);
            })()"""))
        assert headers == [{"Accept": "x", "Authorization": f"Bearer {token}"}, True,
                           [["authorization", f"Bearer {token}"]], {"Authorization": f"Bearer {token}"}]
        # logout forgets it: nothing more is authorized
        after = json.loads(await cdp.eval("""(async () => { h.session.logout();
            let err = null;
            try { await h.session.request('/billing/api/active_calls_totals', {}); } catch (e) { err = e.message; }
            return JSON.stringify({active: h.session.active, headers: h.session.authorize({}), err}); })()"""))
        assert after == {"active": False, "headers": {}, "err": "Access Denied"}
        assert fake.log[-1] == ("POST", "/billing/api/active_calls_totals?format=json", "")


async def test_login_shows_the_servers_error_text(tmp_path: Path) -> None:
    chromium_binary()
    fake = FakeV2()
    async with serve(fake.app()) as base, chromium(tmp_path) as cdp:
        await open_harness(cdp, base)
        fake.busy = True
        await type_login(cdp, USER, PASSWORD)
        assert await error_line(cdp) == "Too many logins in progress, try again later (retry in 1 s)"
        fake.busy = False
        await type_login(cdp, USER, "wrong")
        assert await error_line(cdp, "Too many logins in progress, try again later (retry in 1 s)") == \
            "Invalid username or password"
        await cdp.eval("document.querySelector('#login [data-role=login-error]').textContent = 'x'")
        await type_login(cdp, "mallory", PASSWORD)
        assert await error_line(cdp, "x") == "Invalid username or password"
        await type_login(cdp, USER, PASSWORD)   # the limiter answers now, even with the right password
        assert await error_line(cdp, "Invalid username or password") == \
            "Too many failed logins, try again later (retry in 30 s)"
        assert await cdp.eval("h.logins") == 0 and fake.issued == []
        assert len(fake.sent("POST", "/billing/api/v2/authentication/login")) == 4


async def test_token_refreshes_before_expiry(tmp_path: Path) -> None:
    chromium_binary()
    fake = FakeV2(expires_in=4)   # refreshed a quarter of the lifetime (1 s) before it ends
    async with serve(fake.app()) as base, chromium(tmp_path) as cdp:
        await open_harness(cdp, base)
        await type_login(cdp, USER, PASSWORD)
        await wait_js(cdp, "h.logins === 1")
        first_expiry = await cdp.eval("h.session.expiresAt.getTime()")
        await wait_js(cdp, "h.changes >= 2")   # two refreshes in a row, each scheduled by the previous one
        refreshes = fake.sent("POST", "/billing/api/v2/authentication/refresh")
        assert [auth for _m, _p, auth in refreshes[:2]] == [f"Bearer {fake.issued[0]}", f"Bearer {fake.issued[1]}"]
        assert await cdp.eval("h.session.expiresAt.getTime()") > first_expiry
        assert await cdp.eval("h.expired") is None
        await cdp.eval("h.session.request('/billing/api/active_calls_totals', {})")
        current = await cdp.eval("h.session.authorize({}).Authorization")
        assert fake.sent("POST", "/billing/api/active_calls_totals")[-1][2] == current
        assert current in {f"Bearer {t}" for t in fake.issued[1:]}


async def test_a_401_refreshes_once_and_retries(tmp_path: Path) -> None:
    chromium_binary()
    fake = FakeV2()
    async with serve(fake.app()) as base, chromium(tmp_path) as cdp:
        await open_harness(cdp, base)
        await type_login(cdp, USER, PASSWORD)
        await wait_js(cdp, "h.logins === 1")
        fake.reject_next_read = True
        body = json.loads(await cdp.eval("h.session.request('/billing/api/active_calls_totals', {})"
                                         ".then(JSON.stringify)"))
        assert body == {"totals": {"total": 3, "answered": 1}}
        t1, t2 = fake.issued
        assert fake.log[-3:] == [("POST", "/billing/api/active_calls_totals?format=json", f"Bearer {t1}"),
                                 ("POST", "/billing/api/v2/authentication/refresh", f"Bearer {t1}"),
                                 ("POST", "/billing/api/active_calls_totals?format=json", f"Bearer {t2}")]
        # a refused refresh ends the session: one retry at most, and the page is told
        fake.tokens.clear()
        err = await cdp.eval("h.session.request('/billing/api/active_calls_totals', {}).then(() => null, "
                             "e => e.message)")
        assert err == "Access Denied"
        assert [p for _m, p, _a in fake.log[-2:]] == ["/billing/api/active_calls_totals?format=json",
                                                       "/billing/api/v2/authentication/refresh"]
        assert await cdp.eval("[h.session.active, h.expired]") == [False, "Invalid token"]


async def test_hang_up_asks_first(tmp_path: Path) -> None:
    chromium_binary()
    fake = FakeV2()
    dialog = "(d => d && d.open && d.querySelector('p').textContent)(document.querySelector('dialog'))"
    async with serve(fake.app()) as base, chromium(tmp_path) as cdp:
        await open_harness(cdp, base)
        await type_login(cdp, USER, PASSWORD)
        await wait_js(cdp, "h.logins === 1")
        [token] = fake.issued
        # confirm → DELETE with the Bearer token
        await cdp.eval("void (h.p = h.session.hangUp(42, 'alice → <b>+37060000000</b>'))")
        assert await wait_js(cdp, dialog) == "Hang up call 42 (alice → <b>+37060000000</b>)?"
        assert await cdp.eval("document.querySelector('dialog b') === null"), "the label is text, not markup"
        assert await cdp.eval("document.activeElement.dataset.action") == "cancel"
        assert fake.sent("DELETE", "/billing/api/v2/") == [], "nothing is sent before the confirmation"
        await cdp.eval("document.querySelector('dialog [data-action=hangup]').click()")
        result = json.loads(await cdp.eval("h.p.then(JSON.stringify)"))
        assert result["ok"] is True and result["status"] == 200
        assert result["body"]["status"] == "hung_up" and result["body"]["hung_up_call"] == 42
        assert fake.sent("DELETE", "/billing/api/v2/") == \
            [("DELETE", "/billing/api/v2/active_calls/42", f"Bearer {token}")]
        assert await cdp.eval("document.querySelector('dialog')") is None, "the dialog is gone"
        # Cancel, and Escape, resolve without a request
        await cdp.eval("void (h.p = h.session.hangUp(43, ''))")
        assert await wait_js(cdp, dialog) == "Hang up call 43?"
        await cdp.eval("document.querySelector('dialog [data-action=cancel]').click()")
        assert json.loads(await cdp.eval("h.p.then(JSON.stringify)")) == {"ok": False, "status": 0, "body": None}
        await cdp.eval("void (h.p = h.session.hangUp(43, 'x'))")
        await wait_js(cdp, dialog)
        for kind in ("keyDown", "keyUp"):
            await cdp.call("Input.dispatchKeyEvent", type=kind, key="Escape", code="Escape", windowsVirtualKeyCode=27)
        assert json.loads(await cdp.eval("h.p.then(JSON.stringify)")) == {"ok": False, "status": 0, "body": None}
        assert len(fake.sent("DELETE", "/billing/api/v2/")) == 1
        # the server's refusal comes back as it is
        await cdp.eval("void (h.p = h.session.hangUp(44, 'x'))")
        await wait_js(cdp, dialog)
        await cdp.eval("document.querySelector('dialog [data-action=hangup]').click()")
        assert json.loads(await cdp.eval("h.p.then(JSON.stringify)")) == \
            {"ok": False, "status": 403, "body": {"error": "Not allowed to hang up this call"}}


async def test_session_adds_one_global(tmp_path: Path) -> None:
    chromium_binary()
    async with serve(FakeV2().app()) as base, chromium(tmp_path) as cdp:
        assert await new_globals(cdp, base, "session.js") == ["ActiveCallsSession"]


async def test_session_against_the_real_daemon(tmp_path: Path, replay_server: ReplayFactory) -> None:
    """The real v2 login/refresh, Bearer reads and hang-up (behind a same-origin proxy), the daemon following
    a trace held with calls up: the session's read equals a u+hash read, a 10 s token is renewed before it
    ends, and a confirmed hang-up ends a live call."""
    from api.passwords import hash_password
    from collector.refdata.local_passwords import LocalPasswords

    chromium_binary()
    paths = scenario_files("concurrent_load")
    t0 = next(float(m["Timestamp"]) for m in iter_trace_messages(paths) if m.get("Timestamp"))
    replay = await replay_server("concurrent_load", fast=True)
    replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= t0 + 17)
    settings = settings_for(tmp_path, [replay.port])
    settings = replace(settings, http=replace(settings.http, jwt_lifetime=10), hangup=HangupSettings(enabled=True))
    LocalPasswords(settings.database).set("admin", hash_password(PASSWORD))
    async with running_daemon(settings) as daemon:
        await replay.wait_held(timeout=30)
        await barrier(daemon)
        secret = daemon._refs().users_by_username["admin"].api_secret_key
        daemon_base = f"http://127.0.0.1:{daemon.port}"
        app = static_app({"/harness/session.html": HARNESS})
        sent = add_proxy(app, daemon_base)
        async with serve(app) as base, chromium(tmp_path) as cdp, aiohttp.ClientSession() as http:
            await open_harness(cdp, base)
            await type_login(cdp, "admin", "wrong")
            assert await error_line(cdp) == "Invalid username or password"
            await type_login(cdp, "admin", PASSWORD)
            await wait_js(cdp, "h.logins === 1")
            who = json.loads(await cdp.eval("JSON.stringify([h.session.user, h.session.mayHangUp])"))
            assert who[0]["username"] == "admin" and who[0]["role"] == "admin" and who[1] is True
            first = await cdp.eval("h.session.authorize({}).Authorization")
            mine = json.loads(await cdp.eval("h.session.request('/billing/api/active_calls_totals', "
                                             "{group_by: 'provider'}).then(JSON.stringify)"))
            async with http.post(daemon_base + "/billing/api/active_calls_totals?format=json",
                                 data={"u": "admin", "hash": mor_hash("admin", secret),
                                       "group_by": "provider"}) as resp:
                theirs = await resp.json()
            assert mine == theirs and mine["totals"]["total"] > 0, "the Bearer read sees what u+hash sees"
            read = [e for e in sent if e.path_qs == "/billing/api/active_calls_totals?format=json"]
            assert [(e.authorization, e.status, "hash" in e.form) for e in read] == [(first, 200, False)]
            # a 10 s token: renewed 2.5 s before it ends, and the new one reads
            await wait_js(cdp, "h.changes >= 1", timeout=30)
            renewed = [e for e in sent if e.path_qs == "/billing/api/v2/authentication/refresh"]
            assert renewed[0].authorization == first and renewed[0].status == 200
            current = await cdp.eval("h.session.authorize({}).Authorization")
            assert current != first
            await cdp.eval("h.session.request('/billing/api/active_calls_totals', {})")
            assert (sent[-1].authorization, sent[-1].status) == (current, 200)
            assert all(first[7:] not in e.path_qs and current[7:] not in e.path_qs for e in sent)
            assert await cdp.eval("localStorage.length + sessionStorage.length + document.cookie.length") == 0
            # hang-up: Cancel sends nothing; confirmed, the real DELETE ends the call (Asterisk's Hangup replayed)
            call = next(r for r in daemon.live.rows() if r.call.status is CallStatus.ANSWERED)
            dialog = "(d => d && d.open && d.querySelector('p').textContent)(document.querySelector('dialog'))"
            await cdp.eval(f"void (h.p = h.session.hangUp({call.id}, 'answered call'))")
            assert await wait_js(cdp, dialog) == f"Hang up call {call.id} (answered call)?"
            await cdp.eval("document.querySelector('dialog [data-action=cancel]').click()")
            assert json.loads(await cdp.eval("h.p.then(JSON.stringify)")) == {"ok": False, "status": 0, "body": None}
            assert not [e for e in sent if e.method == "DELETE"]
            await cdp.eval(f"void (h.p = h.session.hangUp({call.id}, 'answered call'))")
            await wait_js(cdp, dialog)
            await cdp.eval("document.querySelector('dialog [data-action=hangup]').click()")
            result = json.loads(await cdp.eval("h.p.then(JSON.stringify)"))
            assert (result["ok"], result["status"], result["body"]["status"], result["body"]["hung_up_call"]) == \
                (True, 200, "hung_up", call.id)
            [deleted] = [e for e in sent if e.method == "DELETE"]
            assert deleted.path_qs == f"/billing/api/v2/active_calls/{call.id}"
            assert deleted.authorization == await cdp.eval("h.session.authorize({}).Authorization")
            assert all(r.id != call.id for r in daemon.live.rows()), "the call left the table"
        replay.release()
