"""Who a v2 request is: ``Authorization: Bearer <token>`` → the user it names, with his current role."""

from __future__ import annotations

import logging

from aiohttp import web

from api.auth import Principal, Role, check_switches
from api.deps import DEPS_KEY
from api.errors import ACCESS_DENIED, Envelope, MorError
from api.tokens import INVALID_TOKEN
from api.v2errors import V2Error

__all__ = ["bearer_principal", "bearer_read_principal", "bearer_token"]

log = logging.getLogger(__name__)

_MAX_TOKEN = 4096  # longer Authorization values are refused before any decoding


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None when the header is absent or not Bearer."""
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


def bearer_principal(request: web.Request) -> Principal:
    """The caller of a v2 route; ``V2Error(401)`` for a missing, bad or expired token or a removed user."""
    deps = request.app[DEPS_KEY]
    token = bearer_token(request)
    if deps.tokens is None:
        raise V2Error(401, "Token authentication is not configured")
    if not token:
        raise V2Error(401, "Missing bearer token", {"WWW-Authenticate": "Bearer"})
    if len(token) > _MAX_TOKEN:
        raise V2Error(401, INVALID_TOKEN)
    claims = deps.tokens.verify(token)
    user = deps.refs().users.get(claims.user_id)
    if user is None or user.username != claims.username:
        raise V2Error(401, INVALID_TOKEN)
    return Principal(Role.of(user.usertype), user)


def bearer_read_principal(request: web.Request, *, is_get: bool) -> Principal:
    """A MOR read endpoint's caller by ``Authorization: Bearer`` (instead of ``u`` + ``hash``): a missing,
    bad or expired token is MOR's ``Access Denied`` with HTTP 401; MOR's API and GET switches then apply as
    they do to a hash."""
    try:
        principal = bearer_principal(request)
    except V2Error as err:
        log.info("api auth failed reason=bearer (%s)", err.message)
        raise MorError(ACCESS_DENIED, Envelope.STATUS, 401) from None
    check_switches(principal.user.username, request.app[DEPS_KEY].settings, is_get=is_get)
    return principal
