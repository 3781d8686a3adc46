"""MOR v2 login: ``POST /billing/api/v2/authentication/login`` (Basic) and ``…/refresh`` (Bearer) → a token.

The answer to both is the same JSON (docs/api-extensions.md, v2): the token, its lifetime, who it names and
whether that user may hang calls up. MOR's global API switches do not apply here ("Global MOR API settings
do not apply to this API service").

Guessing is made expensive and uninformative: an unknown user, a wrong password and a user without any
password get the same 401 after the same scrypt work (``api.passwords``); failures are counted per username
and per client address (``api.ratelimit``) and answered 429 + ``Retry-After`` past the limit; scrypt runs in
worker threads behind a small semaphore with a bounded queue (503 past it), never on the event loop.
A password or a token is never logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from api.auth import Principal, Role
from api.bearer import bearer_principal
from api.deps import DEPS_KEY, FIELDS_KEY, ApiDeps
from api.logbudget import LogBudget
from api.passwords import verify_password
from api.ratelimit import FailureLimiter
from api.v2errors import V2_PREFIX, V2Error, v2_response

__all__ = ["BUSY", "INVALID_CREDENTIALS", "LOGIN_GUARD_KEY", "LOGIN_PATH", "LoginGuard",
           "MALFORMED_CREDENTIALS", "MISSING_CREDENTIALS", "NOT_CONFIGURED", "REFRESH_PATH", "TOO_MANY_FAILURES",
           "add_v2_auth_routes", "parse_basic"]

log = logging.getLogger(__name__)

LOGIN_PATH = V2_PREFIX + "authentication/login"
REFRESH_PATH = V2_PREFIX + "authentication/refresh"

INVALID_CREDENTIALS = "Invalid username or password"
MISSING_CREDENTIALS = "Missing credentials: send Authorization: Basic base64(username:password)"
MALFORMED_CREDENTIALS = "Malformed Basic authorization"
TOO_MANY_FAILURES = "Too many failed logins, try again later"
BUSY = "Too many logins in progress, try again later"
NOT_CONFIGURED = "Token authentication is not configured"
METHOD_NOT_ALLOWED = "Method not allowed"

_MAX_HEADER = 4096  # longer Authorization values are malformed, before any decoding
_MAX_KEY = 128  # characters of a username a failure counter is keyed by (10,000 keys stay a few MiB)
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 §5.1: token answers

T = TypeVar("T")


class LoginGuard:
    """Per-application login bounds: failure counters (per username, per address) and the scrypt workers.

    ``concurrency`` checks run at once in threads; up to ``queue`` more wait; past that a login is refused
    (503) at once, so a flood costs a bounded amount of memory and CPU."""

    def __init__(self, *, users: FailureLimiter | None = None, addresses: FailureLimiter | None = None,
                 concurrency: int = 2, queue: int = 16) -> None:
        if concurrency < 1 or queue < 0:
            raise ValueError("concurrency must be positive and queue not negative")
        self.users = FailureLimiter(limit=5, window=300.0) if users is None else users
        self.addresses = FailureLimiter(limit=20, window=300.0) if addresses is None else addresses
        self.max_pending = concurrency + queue
        self.pending = 0  # checks queued or running
        self._slots = asyncio.Semaphore(concurrency)
        self.log_budget = LogBudget("api login lines")

    def retry_after(self, username: str, address: str) -> int | None:
        waits = [w for w in (self.users.retry_after(username[:_MAX_KEY]), self.addresses.retry_after(address))
                 if w]
        return max(waits) if waits else None

    def attempt(self, username: str, address: str) -> tuple[float, float]:
        """Count an attempt as failed *before* checking it, so attempts in flight at once count against the
        limit too (otherwise 18 concurrent guesses would all pass a limit of 5); returns its two times."""
        return self.users.fail(username[:_MAX_KEY]), self.addresses.fail(address)

    def not_tried(self, username: str, address: str, at: tuple[float, float]) -> None:
        """The attempt was refused before its password was checked (503): it does not count."""
        self.users.forgive(username[:_MAX_KEY], at[0])
        self.addresses.forgive(address, at[1])

    def succeeded(self, username: str, address: str, at: tuple[float, float]) -> None:
        """The username's counter starts again; the address keeps its earlier failures (one address, many
        names), only this attempt's advance count is taken back."""
        self.users.reset(username[:_MAX_KEY])
        self.addresses.forgive(address, at[1])

    async def run(self, check: Callable[[], T]) -> T:
        """``check()`` in a worker thread, holding a slot until the thread is done (even if the request
        is cancelled meanwhile: an abandoned scrypt run still occupies its core)."""
        if self.pending >= self.max_pending:
            raise V2Error(503, BUSY, {"Retry-After": "1"})
        self.pending += 1
        try:
            await self._slots.acquire()
        except BaseException:
            self.pending -= 1
            raise
        task = asyncio.ensure_future(asyncio.to_thread(check))

        def release(done: asyncio.Future[T]) -> None:
            self._slots.release()
            self.pending -= 1
            if not done.cancelled():
                done.exception()  # retrieved: raised to the waiter below, or dropped with it

        task.add_done_callback(release)
        return await asyncio.shield(task)


LOGIN_GUARD_KEY = web.AppKey("v2_login_guard", LoginGuard)


def parse_basic(value: str | None) -> tuple[str, str]:
    """(username, password) of an ``Authorization: Basic`` value; ``V2Error(401)`` when missing or malformed."""
    if not value:
        raise V2Error(401, MISSING_CREDENTIALS)
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "basic" or len(value) > _MAX_HEADER:
        raise V2Error(401, MALFORMED_CREDENTIALS)
    try:
        text = base64.b64decode(rest.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        raise V2Error(401, MALFORMED_CREDENTIALS) from None
    username, sep, password = text.partition(":")
    if not sep or not username:
        raise V2Error(401, MALFORMED_CREDENTIALS)
    return username, password


def _token_answer(request: web.Request, deps: ApiDeps, principal: Principal) -> web.Response:
    assert deps.tokens is not None
    user = principal.user
    issued = deps.tokens.issue(user.username, user.id)
    body: dict[str, Any] = {
        "token": issued.token, "token_type": "Bearer", "expires_in": issued.expires_at - issued.issued_at,
        "expires_at": request.app[FIELDS_KEY].time(issued.expires_at),  # the API's zone, as answer_time
        "user": {"id": user.id, "username": user.username, "role": principal.role.value, "name": user.display_name},
        "may_hang_up": bool(deps.may_hang_up(principal)),
    }
    return v2_response(body, headers=_NO_STORE)


def _post_only(request: web.Request) -> ApiDeps:
    if request.method != "POST":
        raise V2Error(405, METHOD_NOT_ALLOWED, {"Allow": "POST"})
    deps = request.app[DEPS_KEY]
    if deps.tokens is None:
        raise V2Error(503, NOT_CONFIGURED)
    return deps


async def login(request: web.Request) -> web.Response:
    deps = _post_only(request)
    guard = request.app[LOGIN_GUARD_KEY]
    username, password = parse_basic(request.headers.get("Authorization"))
    address = request.remote or ""
    wait = guard.retry_after(username, address)
    if wait is not None:
        if (suffix := guard.log_budget.take()) is not None:
            log.info("api login refused api_user=%r peer=%s reason=rate_limited retry_after=%d%s", username[:64],
                     address, wait, suffix)
        raise V2Error(429, TOO_MANY_FAILURES, {"Retry-After": str(wait)})
    user = deps.refs().users_by_username.get(username)

    def check() -> bool:
        # the local hash wins over MOR's; unknown user / no password: verify_password does the same work
        stored = deps.passwords(username) or (user.password if user is not None else None)
        return verify_password(password, stored if user is not None else None)

    at = guard.attempt(username, address)  # no await between the limit check and this count
    try:
        ok = await guard.run(check)
    except V2Error:  # busy: nothing was checked
        guard.not_tried(username, address, at)
        raise
    if not ok or user is None:
        if (suffix := guard.log_budget.take()) is not None:
            log.info("api login failed api_user=%r peer=%s%s", username[:64], address, suffix)
        raise V2Error(401, INVALID_CREDENTIALS)
    guard.succeeded(username, address, at)
    principal = Principal(Role.of(user.usertype), user)
    log.info("api login ok api_user=%r role=%s peer=%s", username[:64], principal.role.value, address)
    return _token_answer(request, deps, principal)


async def refresh(request: web.Request) -> web.Response:
    deps = _post_only(request)
    principal = bearer_principal(request)
    return _token_answer(request, deps, principal)


def add_v2_auth_routes(app: web.Application, guard: LoginGuard | None = None) -> None:
    """Register login and refresh (any method: others get a JSON 405) with this app's own ``LoginGuard``."""
    app[LOGIN_GUARD_KEY] = LoginGuard() if guard is None else guard
    app.router.add_route("*", LOGIN_PATH, login)
    app.router.add_route("*", REFRESH_PATH, refresh)
