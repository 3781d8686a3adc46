"""Bearer tokens for the v2 API: HS256 JWTs that name a user, valid for a fixed lifetime.

The token carries who (``sub`` = username, ``uid``) and when (``iat``, ``exp``); the role is *not*
trusted from it but read from current reference data on every request, so demoting or removing a user
takes effect at once. Never log a token or the key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt

from api.v2errors import V2Error

__all__ = ["ISSUER", "IssuedToken", "TokenClaims", "TokenIssuer", "INVALID_TOKEN", "EXPIRED_TOKEN"]

ISSUER = "mor-active-calls-collector"
INVALID_TOKEN = "Invalid token"
EXPIRED_TOKEN = "Token expired"
_ALGORITHM = "HS256"
MIN_KEY_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    issued_at: int
    expires_at: int  # Unix seconds


@dataclass(frozen=True, slots=True)
class TokenClaims:
    username: str
    user_id: int
    issued_at: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class TokenIssuer:
    """Signs and checks tokens with one key; ``clock`` is injectable so tests can expire a token."""

    key: bytes = field(repr=False)
    lifetime: int = 900  # seconds
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if len(self.key) < MIN_KEY_BYTES:
            raise ValueError(f"the token signing key must be at least {MIN_KEY_BYTES} bytes")
        if self.lifetime < 1:
            raise ValueError("the token lifetime must be positive")

    def issue(self, username: str, user_id: int) -> IssuedToken:
        now = int(self.clock())
        exp = now + self.lifetime
        claims = {"sub": username, "uid": user_id, "iss": ISSUER, "iat": now, "exp": exp}
        return IssuedToken(jwt.encode(claims, self.key, algorithm=_ALGORITHM), now, exp)

    def verify(self, token: str) -> TokenClaims:
        """The claims of a good token; ``V2Error(401)`` for a forged, malformed or expired one."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self.key, algorithms=[_ALGORITHM], issuer=ISSUER,
                options={"require": ["sub", "uid", "iat", "exp", "iss"], "verify_exp": False})
        except jwt.PyJWTError as exc:
            raise V2Error(401, INVALID_TOKEN) from exc
        sub, uid, iat, exp = claims["sub"], claims["uid"], claims["iat"], claims["exp"]
        if not (isinstance(sub, str) and type(uid) is int and type(iat) is int and type(exp) is int):
            raise V2Error(401, INVALID_TOKEN)
        if self.clock() >= exp:  # checked against our clock, not PyJWT's, so tests can move time
            raise V2Error(401, EXPIRED_TOKEN)
        return TokenClaims(sub, uid, iat, exp)
