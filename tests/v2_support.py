"""The v2 login tests' world: the API test users with passwords in every stored form, a token issuer on a
movable clock, and an app serving both; plus a check that no password or token ever reaches a log line."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from aiohttp import web

from api.app import create_app
from api.auth import Principal, Role
from api.deps import ApiDeps
from api.passwords import hash_password
from api.settings import ApiSettings
from api.tokens import TokenIssuer
from collector.refdata.index import RefIndex
from tests.api_support import NOW, REFDATA, ROWS

__all__ = ["KEY", "LOCAL", "PASSWORDS", "Clock", "World", "basic", "make_world", "no_secrets_logged"]

KEY = b"test-signing-key-of-32-bytes-or-more!"

#: The password each user logs in with (what the tests send), whatever form it is stored in.
PASSWORDS: dict[str, str] = {
    "admin": "admin-pw-1",  # MOR plain text
    "res": "reseller pw ✓",  # MOR sha1 (40 hex)
    "ruser": "user-pw-local",  # a local scrypt hash overriding MOR's "old-mor-pw"
    "acc": "accountant-pw",  # local hash only
}
MOR_PASSWORDS: dict[str, str] = {
    "admin": "admin-pw-1",
    "res": hashlib.sha1("reseller pw ✓".encode()).hexdigest(),
    "ruser": "old-mor-pw",
}
LOCAL: dict[str, str] = {
    "ruser": hash_password("user-pw-local"),
    "acc": hash_password("accountant-pw"),
    "ghost": hash_password("ghost-pw"),  # a local hash for a username not in the reference data
}
REFS = RefIndex.build(replace(REFDATA, users=tuple(replace(u, password=MOR_PASSWORDS.get(u.username, ""))
                                                    for u in REFDATA.users)))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def basic(username: str, password: str) -> dict[str, str]:
    raw = f"{username}:{password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@dataclass
class World:
    app: web.Application
    clock: Clock
    tokens: TokenIssuer
    passwords: Callable[[str], str | None]
    seen: list[str] = field(default_factory=list)  # every token handed out (checked against the logs)


def make_world(settings: ApiSettings | None = None,
               passwords: Callable[[str], str | None] = LOCAL.get) -> World:
    clock = Clock(NOW)
    tokens = TokenIssuer(KEY, 900, clock)
    deps = ApiDeps(rows=lambda: ROWS, refs=lambda: REFS, settings=settings or ApiSettings(timezone="UTC"),
                   clock=lambda: NOW, tokens=tokens, passwords=passwords,
                   may_hang_up=lambda p: p.role is Role.ADMIN)
    return World(create_app(deps), clock, tokens, passwords)


def admin_principal() -> Principal:
    return Principal(Role.ADMIN, REFS.users[0])


@pytest.fixture
def no_secrets_logged(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """Capture every log record at DEBUG; afterwards none may contain a password, a token (appended to
    the yielded list by the test) or the signing key, in its message or its arguments."""
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    yield seen
    secrets = [*PASSWORDS.values(), "old-mor-pw", "ghost-pw", *LOCAL.values(), KEY.decode(), *seen]
    texts: list[str] = []
    records = [*caplog.get_records("setup"), *caplog.get_records("call")]
    for record in records:
        texts.append(record.getMessage())
        args: Any = record.args
        texts.extend(repr(a) for a in (args if isinstance(args, tuple) else (args,)))
        if record.exc_text:
            texts.append(record.exc_text)
    assert records, "nothing was logged: the check would be vacuous"
    for secret in secrets:
        for text in texts:
            assert secret not in text, f"a secret reached the log: {text[:200]!r}"
