"""v2 login and refresh over a real aiohttp server (127.0.0.1): every role logs in, every failure has its
exact status and body, tokens expire and cannot be forged, failed logins are rate-limited per username and
per address in bounded memory, the scrypt queue is bounded, and no password or token is ever logged."""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from typing import Any

import jwt
import pytest

from api.logbudget import LogBudget
from api.ratelimit import FailureLimiter
from api.tokens import ISSUER
from api.v2auth import (
    BUSY,
    INVALID_CREDENTIALS,
    LOGIN_GUARD_KEY,
    LOGIN_PATH,
    MALFORMED_CREDENTIALS,
    MISSING_CREDENTIALS,
    REFRESH_PATH,
    TOO_MANY_FAILURES,
    LoginGuard,
)
from tests.api_support import NOW
from tests.daemon_helpers import wait_until
from tests.v2_support import LOCAL, PASSWORDS, World, basic, make_world, no_secrets_logged

__all__ = ["no_secrets_logged"]  # the fixture, used by name below

#: NOW is 2026-11-26 13:50:00 UTC; a token issued then lives 900 s.
EXPIRES_AT = "2026-11-26 14:05:00"


@pytest.fixture
def world() -> World:
    return make_world()


@pytest.fixture
async def client(aiohttp_client: Any, world: World) -> Any:
    return await aiohttp_client(world.app)


async def post(client: Any, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    resp = await client.post(path, headers=headers or {})
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    return resp.status, await resp.json(), resp.headers


async def login(client: Any, username: str, password: str, seen: list[str]) -> tuple[int, Any, Any]:
    status, body, headers = await post(client, LOGIN_PATH, basic(username, password))
    if status == 200:
        seen.append(body["token"])
    return status, body, headers


@pytest.mark.parametrize(("username", "uid", "role", "name", "may_hang_up"), [
    ("admin", 0, "admin", "System Admin", True),  # MOR plain text
    ("res", 2, "reseller", "Reese Seller", False),  # MOR sha1
    ("ruser", 3, "user", "Rita User", False),  # local hash (wins over MOR's)
    ("acc", 1, "accountant", "Ann Counter", False),  # local hash only
])
async def test_each_role_logs_in(client: Any, world: World, no_secrets_logged: list[str], username: str,
                                 uid: int, role: str, name: str, may_hang_up: bool) -> None:
    status, body, headers = await login(client, username, PASSWORDS[username], no_secrets_logged)
    assert status == 200
    token = body.pop("token")
    assert body == {"token_type": "Bearer", "expires_in": 900, "expires_at": EXPIRES_AT,
                    "user": {"id": uid, "username": username, "role": role, "name": name},
                    "may_hang_up": may_hang_up}
    assert headers["Cache-Control"] == "no-store"
    claims = world.tokens.verify(token)
    assert (claims.username, claims.user_id, claims.issued_at, claims.expires_at) == (username, uid, NOW,
                                                                                      NOW + 900)


@pytest.mark.parametrize(("username", "password"), [
    ("admin", "admin-pw-2"),  # wrong password
    ("admin", ""),  # empty password
    ("nobody", "admin-pw-1"),  # unknown user
    ("bob", "anything"),  # a user without any password
    ("bob", ""),
    ("ghost", "ghost-pw"),  # a local hash, but no such user in the reference data
    ("ruser", "old-mor-pw"),  # MOR's password, overridden by the local hash
    ("ADMIN", "admin-pw-1"),  # usernames are case-sensitive, as in MOR
])
async def test_bad_credentials_are_indistinguishable(client: Any, no_secrets_logged: list[str], username: str,
                                                     password: str) -> None:
    resp = await client.post(LOGIN_PATH, headers=basic(username, password))
    assert resp.status == 401
    assert await resp.read() == b'{"error":"Invalid username or password"}' == \
        f'{{"error":"{INVALID_CREDENTIALS}"}}'.encode()
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    assert "WWW-Authenticate" not in resp.headers  # a browser page must not get the native dialog


@pytest.mark.parametrize(("header", "message"), [
    (None, MISSING_CREDENTIALS),
    ("", MISSING_CREDENTIALS),
    ("Basic", MALFORMED_CREDENTIALS),
    ("Basic !!!!", MALFORMED_CREDENTIALS),
    ("Basic " + base64.b64encode(b"no-colon").decode(), MALFORMED_CREDENTIALS),
    ("Basic " + base64.b64encode(b":password-only").decode(), MALFORMED_CREDENTIALS),
    ("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), MALFORMED_CREDENTIALS),  # not UTF-8
    ("Basic " + base64.b64encode(b"admin:admin-pw-1").decode()[:-1], MALFORMED_CREDENTIALS),  # bad padding
    ("Bearer abc", MALFORMED_CREDENTIALS),
    ("Basic " + base64.b64encode(b"admin:" + b"x" * 5000).decode(), MALFORMED_CREDENTIALS),  # too long
])
async def test_missing_or_malformed_basic_header(client: Any, header: str | None, message: str) -> None:
    headers = {} if header is None else {"Authorization": header}
    status, body, _ = await post(client, LOGIN_PATH, headers)
    assert (status, body) == (401, {"error": message})


async def test_basic_scheme_is_case_insensitive(client: Any, no_secrets_logged: list[str]) -> None:
    raw = base64.b64encode(b"admin:admin-pw-1").decode()
    status, body, _ = await post(client, LOGIN_PATH, {"Authorization": "bAsIc " + raw})
    no_secrets_logged.append(body.get("token", "-"))
    assert status == 200 and body["user"]["username"] == "admin"


async def test_login_and_refresh_want_post(client: Any) -> None:
    for path in (LOGIN_PATH, REFRESH_PATH):
        resp = await client.get(path, headers=basic("admin", "admin-pw-1"))
        assert resp.status == 405
        assert await resp.json() == {"error": "Method not allowed"}
        assert resp.headers["Allow"] == "POST"


async def test_refresh_gives_a_fresh_token(client: Any, world: World, no_secrets_logged: list[str]) -> None:
    _, body, _ = await login(client, "res", PASSWORDS["res"], no_secrets_logged)
    world.clock.now += 600
    status, again, headers = await post(client, REFRESH_PATH, {"Authorization": f"Bearer {body['token']}"})
    assert status == 200
    no_secrets_logged.append(again["token"])
    assert again["token"] != body["token"]
    assert again["expires_at"] == "2026-11-26 14:15:00"
    assert {k: v for k, v in again.items() if k not in ("token", "expires_at")} == \
        {k: v for k, v in body.items() if k not in ("token", "expires_at")}
    assert headers["Cache-Control"] == "no-store"
    assert world.tokens.verify(again["token"]).expires_at == NOW + 1500


async def test_refresh_refuses_expired_forged_and_missing_tokens(client: Any, world: World,
                                                                 no_secrets_logged: list[str]) -> None:
    _, body, _ = await login(client, "admin", PASSWORDS["admin"], no_secrets_logged)
    forged = jwt.encode({"sub": "admin", "uid": 0, "iss": ISSUER, "iat": int(NOW), "exp": int(NOW) + 900},
                        b"another-key-of-at-least-32-bytes!!", algorithm="HS256")
    unsigned = jwt.encode({"sub": "admin", "uid": 0, "iss": ISSUER, "iat": int(NOW), "exp": int(NOW) + 900},
                          None, algorithm="none")
    gone = world.tokens.issue("nobody", 99).token  # a well-signed token of a user that does not exist
    for token, message in ((forged, "Invalid token"), (unsigned, "Invalid token"), ("x.y.z", "Invalid token"),
                           (gone, "Invalid token")):
        status, answer, _ = await post(client, REFRESH_PATH, {"Authorization": f"Bearer {token}"})
        assert (status, answer) == (401, {"error": message})
    status, answer, headers = await post(client, REFRESH_PATH)
    assert (status, answer) == (401, {"error": "Missing bearer token"})
    assert headers["WWW-Authenticate"] == "Bearer"
    world.clock.now += 900
    status, answer, _ = await post(client, REFRESH_PATH, {"Authorization": f"Bearer {body['token']}"})
    assert (status, answer) == (401, {"error": "Token expired"})


# ------------------------------------------------------------------------------------------ brute force
async def test_failures_are_limited_per_username(client: Any, no_secrets_logged: list[str]) -> None:
    for _ in range(5):
        status, _b, _h = await login(client, "admin", "wrong", no_secrets_logged)
        assert status == 401
    for password in ("wrong", PASSWORDS["admin"]):  # blocked: even the right password is not tried
        resp = await client.post(LOGIN_PATH, headers=basic("admin", password))
        assert resp.status == 429
        assert await resp.json() == {"error": TOO_MANY_FAILURES}
        assert 1 <= int(resp.headers["Retry-After"]) <= 300
    status, body, _ = await login(client, "res", PASSWORDS["res"], no_secrets_logged)  # others still log in
    assert status == 200
    for _ in range(5):  # an unknown username is limited the same way
        assert (await login(client, "nobody", "x", no_secrets_logged))[0] == 401
    assert (await login(client, "nobody", "x", no_secrets_logged))[:2] == (429, {"error": TOO_MANY_FAILURES})


async def test_failures_are_limited_per_address_and_success_does_not_reset_it(
        client: Any, world: World, no_secrets_logged: list[str]) -> None:
    guard = world.app[LOGIN_GUARD_KEY]
    for i in range(19):  # 19 names, one failure each: no username reaches its limit
        assert (await login(client, f"user{i}", "x", no_secrets_logged))[0] == 401
    assert (await login(client, "admin", PASSWORDS["admin"], no_secrets_logged))[0] == 200
    assert (await login(client, "user19", "x", no_secrets_logged))[0] == 401  # the 20th failure
    status, body, headers = await login(client, "acc", PASSWORDS["acc"], no_secrets_logged)
    assert (status, body) == (429, {"error": TOO_MANY_FAILURES})
    assert 1 <= int(headers["Retry-After"]) <= 300
    assert len(guard.addresses) == 1 and len(guard.users) == 20


async def test_a_block_ends_when_the_window_has_passed(aiohttp_client: Any, no_secrets_logged: list[str]) -> None:
    world = make_world()
    now = [1000.0]
    users = FailureLimiter(limit=5, window=300.0, clock=lambda: now[0])
    world.app[LOGIN_GUARD_KEY] = LoginGuard(users=users)
    client = await aiohttp_client(world.app)
    for _ in range(5):
        assert (await login(client, "admin", "wrong", no_secrets_logged))[0] == 401
    status, _b, headers = await login(client, "admin", PASSWORDS["admin"], no_secrets_logged)
    assert status == 429 and headers["Retry-After"] == "300"
    now[0] += 299.5
    status, _b, headers = await login(client, "admin", PASSWORDS["admin"], no_secrets_logged)
    assert status == 429 and headers["Retry-After"] == "1"
    now[0] += 0.5
    assert (await login(client, "admin", PASSWORDS["admin"], no_secrets_logged))[0] == 200


async def test_counters_stay_bounded(aiohttp_client: Any, no_secrets_logged: list[str]) -> None:
    world = make_world()
    guard = world.app[LOGIN_GUARD_KEY] = LoginGuard(users=FailureLimiter(limit=5, window=300.0, max_keys=3))
    client = await aiohttp_client(world.app)
    for i in range(6):
        assert (await login(client, f"spray{i}", "x", no_secrets_logged))[0] == 401
    assert len(guard.users) == 3
    assert guard.users.retry_after("spray5") is None and "spray0" not in guard.users._failures
    assert (await login(client, "L" * 3000, "x", no_secrets_logged))[0] == 401  # a long name: a short key
    assert max(len(k) for k in guard.users._failures) == 128


def test_limiter_defaults_keep_at_most_10000_keys() -> None:
    now = [0.0]
    limiter = FailureLimiter(limit=5, window=300.0, clock=lambda: now[0])
    for i in range(10_050):
        limiter.fail(f"k{i}")
    assert len(limiter) == 10_000
    assert "k0" not in limiter._failures and "k10049" in limiter._failures
    for _ in range(4):
        limiter.fail("k10049")
    assert limiter.retry_after("k10049") == 300
    now[0] = 300.0
    assert limiter.retry_after("k10049") is None and "k10049" not in limiter._failures


async def test_the_scrypt_queue_is_bounded(aiohttp_client: Any, no_secrets_logged: list[str]) -> None:
    release = threading.Event()

    def slow(username: str) -> str | None:
        if username == "slow":
            release.wait(10)
        return LOCAL.get(username)

    world = make_world(passwords=slow)
    guard = world.app[LOGIN_GUARD_KEY] = LoginGuard(concurrency=1, queue=0)
    client = await aiohttp_client(world.app)
    first = asyncio.ensure_future(client.post(LOGIN_PATH, headers=basic("slow", "x")))
    await wait_until(lambda: guard.pending == 1, what="the first check running")
    resp = await client.post(LOGIN_PATH, headers=basic("admin", PASSWORDS["admin"]))
    assert resp.status == 503
    assert await resp.json() == {"error": BUSY}
    assert resp.headers["Retry-After"] == "1"
    assert "admin" not in guard.users._failures  # refused unchecked: not counted
    assert len(guard.addresses._failures["127.0.0.1"]) == 1  # only the slow attempt in flight
    release.set()
    assert (await first).status == 401
    await wait_until(lambda: guard.pending == 0, what="the slot released")
    assert (await login(client, "admin", PASSWORDS["admin"], no_secrets_logged))[0] == 200


async def test_without_a_token_issuer_login_says_so(aiohttp_client: Any) -> None:
    from dataclasses import replace

    from api.app import create_app
    from api.deps import DEPS_KEY

    deps = replace(make_world().app[DEPS_KEY], tokens=None)
    client = await aiohttp_client(create_app(deps))
    status, body, _ = await post(client, LOGIN_PATH, basic("admin", PASSWORDS["admin"]))
    assert (status, body) == (503, {"error": "Token authentication is not configured"})


async def test_concurrent_guesses_count_before_they_are_checked(client: Any, world: World,
                                                                no_secrets_logged: list[str]) -> None:
    """Ten guesses at once for one name: the limit check and the count happen before any password check,
    so exactly five are checked and five refused, whatever the interleaving."""
    answers = await asyncio.gather(*(client.post(LOGIN_PATH, headers=basic("admin", f"guess{i}")) for i in range(10)))
    assert sorted(r.status for r in answers) == [401] * 5 + [429] * 5
    guard = world.app[LOGIN_GUARD_KEY]
    assert guard.pending == 0 and len(guard.users._failures["admin"]) == 5
    assert len(guard.addresses._failures["127.0.0.1"]) == 5


async def test_a_success_takes_back_only_its_own_advance_count(client: Any, world: World,
                                                               no_secrets_logged: list[str]) -> None:
    guard = world.app[LOGIN_GUARD_KEY]
    for i in range(3):
        assert (await login(client, f"other{i}", "x", no_secrets_logged))[0] == 401
    assert (await login(client, "admin", PASSWORDS["admin"], no_secrets_logged))[0] == 200
    assert len(guard.addresses._failures["127.0.0.1"]) == 3  # the earlier failures stay
    assert "admin" not in guard.users._failures


def test_failure_lines_are_rate_limited() -> None:
    now = [0.0]
    budget = LogBudget("api login lines", limit=3, window=10.0, clock=lambda: now[0])
    assert [budget.take() for _ in range(5)] == ["", "", "", None, None]
    now[0] = 10.0
    assert budget.take() == " (api login lines suppressed=2 window=10s)"
    assert budget.take() == ""


async def test_a_flood_of_bad_logins_logs_a_bounded_number_of_lines(
        client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="api.v2auth")
    for i in range(30):  # 20 per address fail, then 10 refused
        await client.post(LOGIN_PATH, headers=basic(f"n{i}", "x"))
    lines = [r.getMessage() for r in caplog.records if r.name == "api.v2auth"]
    assert len(lines) == 20
    assert sum("api login failed" in ln for ln in lines) == 20


def test_every_v2_message_is_documented() -> None:
    from pathlib import Path

    from api import tokens, v2auth

    doc = (Path(__file__).parent.parent / "docs" / "api-extensions.md").read_text()
    for text in (v2auth.INVALID_CREDENTIALS, v2auth.MISSING_CREDENTIALS, v2auth.MALFORMED_CREDENTIALS,
                 v2auth.TOO_MANY_FAILURES, v2auth.BUSY, v2auth.NOT_CONFIGURED, v2auth.METHOD_NOT_ALLOWED,
                 tokens.INVALID_TOKEN, tokens.EXPIRED_TOKEN, "Missing bearer token"):
        assert f'{{"error": "{text}"}}' in doc, text
