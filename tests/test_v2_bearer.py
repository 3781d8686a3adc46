"""A v2 token in place of ``u`` + ``hash`` on the MOR read endpoints (same rows as the hash gives the same
user; a bad one is MOR's ``Access Denied`` with HTTP 401; MOR's API and GET switches still apply), the v2
login ignoring those switches, and a property: random Basic headers never authenticate and never fail with
a 5xx. All over real sockets on 127.0.0.1."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.app import create_app
from api.changes import ChangeHub
from api.deps import DEPS_KEY
from api.ratelimit import FailureLimiter
from api.settings import ApiSettings
from api.v2auth import LOGIN_GUARD_KEY, LOGIN_PATH, LoginGuard
from tests.api_support import NOW, PATH, ROWS, VISIBLE, calls_of, signed, status_error_of
from tests.test_api_property import ServerThread
from tests.test_stream import Sse
from tests.v2_support import PASSWORDS, World, basic, make_world, no_secrets_logged

__all__ = ["no_secrets_logged"]  # the fixture, used by name below

TOTALS = "/billing/api/active_calls_totals"
STREAM = "/billing/api/active_calls_stream"


async def token_of(client: Any, username: str, seen: list[str]) -> str:
    resp = await client.post(LOGIN_PATH, headers=basic(username, PASSWORDS[username]))
    assert resp.status == 200
    token: str = (await resp.json())["token"]
    seen.append(token)
    return token


@pytest.mark.parametrize("username", ["admin", "acc", "res", "ruser"])
async def test_bearer_sees_what_the_hash_sees(aiohttp_client: Any, no_secrets_logged: list[str],
                                              username: str) -> None:
    client = await aiohttp_client(make_world().app)
    token = await token_of(client, username, no_secrets_logged)
    resp = await client.post(PATH, headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200 and resp.headers["Content-Type"] == "text/xml; charset=utf-8"
    by_token = await resp.read()
    assert set(calls_of(by_token)) == VISIBLE[username]
    by_hash = await (await client.post(PATH, params=signed(username))).read()
    assert by_token == by_hash
    resp = await client.post(TOTALS, params={"format": "json"}, headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200 and (await resp.json())["totals"]["total"] == len(VISIBLE[username])


async def test_bearer_wins_over_u_and_hash(aiohttp_client: Any, no_secrets_logged: list[str]) -> None:
    client = await aiohttp_client(make_world().app)
    token = await token_of(client, "ruser", no_secrets_logged)
    resp = await client.post(PATH, params=signed("admin"), headers={"Authorization": f"Bearer {token}"})
    assert set(calls_of(await resp.read())) == VISIBLE["ruser"]


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "x" * 5000])
async def test_a_bad_bearer_is_mor_access_denied_401(aiohttp_client: Any, token: str) -> None:
    client = await aiohttp_client(make_world().app)
    resp = await client.post(PATH, headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 401
    assert status_error_of(await resp.read()) == "Access Denied"
    resp = await client.post(PATH, params={"format": "json"}, headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 401
    assert await resp.read() == b'{"error":"Access Denied"}'


async def test_an_expired_bearer_is_access_denied(aiohttp_client: Any, no_secrets_logged: list[str]) -> None:
    world = make_world()
    client = await aiohttp_client(world.app)
    token = await token_of(client, "admin", no_secrets_logged)
    world.clock.now = NOW + 900
    resp = await client.post(PATH, headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 401 and status_error_of(await resp.read()) == "Access Denied"


async def test_mor_switches_apply_to_bearer_reads_not_to_login(aiohttp_client: Any,
                                                              no_secrets_logged: list[str]) -> None:
    off = await aiohttp_client(make_world(ApiSettings(timezone="UTC", enabled=False)).app)
    token = await token_of(off, "admin", no_secrets_logged)  # login works with the API switched off
    resp = await off.post(PATH, headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200 and status_error_of(await resp.read()) == "API Requests are disabled"
    no_get = await aiohttp_client(make_world().app)  # allow_get = no (the default)
    token = await token_of(no_get, "admin", no_secrets_logged)
    resp = await no_get.get(PATH, headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200 and status_error_of(await resp.read()) == "GET Requests are disabled"
    get_ok = await aiohttp_client(make_world(ApiSettings(timezone="UTC", allow_get=True)).app)
    token = await token_of(get_ok, "res", no_secrets_logged)
    resp = await get_ok.get(PATH, headers={"Authorization": f"Bearer {token}"})
    assert set(calls_of(await resp.read())) == VISIBLE["res"]


async def test_the_push_stream_takes_a_bearer(aiohttp_client: Any, no_secrets_logged: list[str]) -> None:
    hub = ChangeHub()
    hub.seed(ROWS)
    deps = replace(make_world().app[DEPS_KEY], changes=hub)
    client = await aiohttp_client(create_app(deps))
    token = await token_of(client, "res", no_secrets_logged)
    resp = await client.get(STREAM, headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    first = await Sse(resp).next()
    resp.close()
    assert first.event == "snapshot"
    assert {r["id"] for r in first.data["active_calls"]} == VISIBLE["res"]
    resp = await client.get(STREAM, headers={"Authorization": "Bearer forged"})
    assert resp.status == 401 and status_error_of(await resp.read()) == "Access Denied"


# ------------------------------------------------------------------------------------------ property
class _Server(ServerThread):
    def post(self, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", LOGIN_PATH, headers=headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def login_server() -> Iterator[tuple[_Server, World]]:
    world = make_world()
    # counters that never block here: every example reaches the password check
    world.app[LOGIN_GUARD_KEY] = LoginGuard(users=FailureLimiter(limit=10**9, window=1.0),
                                            addresses=FailureLimiter(limit=10**9, window=1.0))
    srv = _Server(world.app)
    with srv:
        yield srv, world


_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
_HEADER = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80),  # anything printable
    st.binary(max_size=60).map(lambda b: "Basic " + base64.b64encode(b).decode()),  # any bytes, well encoded
    st.tuples(st.sampled_from([*PASSWORDS, "bob", "ghost", "nobody", ""]), _TEXT).map(  # real names, any password
        lambda up: "Basic " + base64.b64encode(f"{up[0]}:{up[1]}".encode()).decode()),
)
_BODIES = {b'{"error":"Invalid username or password"}',
           b'{"error":"Malformed Basic authorization"}',
           b'{"error":"Missing credentials: send Authorization: Basic base64(username:password)"}'}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=_HEADER)
def test_random_basic_headers_never_authenticate(login_server: tuple[_Server, World], no_secrets_logged: list[str],
                                                 header: str) -> None:
    srv, _world = login_server
    try:
        decoded = base64.b64decode(header[6:], validate=True).decode() if header.startswith("Basic ") else ""
    except ValueError:
        decoded = ""
    name, _, password = decoded.partition(":")
    if PASSWORDS.get(name) == password:  # the one header that is a real login (hypothesis will not find it)
        return
    status, headers, body = srv.post({"Authorization": header} if header else {})
    assert status == 401, (status, body)
    assert body in _BODIES, body
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(body)["error"]
