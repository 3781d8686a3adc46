"""MOR authentication, in MOR's check order: user by ``u`` → API on → GET allowed → secret → hash.

``hash`` = lowercase hex SHA1 of ``u`` + the API secret of the user's owner (RefIndex.owner_of):
the admin's for admin and accountant, the reseller's own for a reseller and his users. Compared in
constant time; a hash that is not exactly 40 characters counts as missing. Never logs hash or secret.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from enum import Enum

from api.errors import (
    ACCESS_DENIED,
    API_DISABLED,
    GET_DISABLED,
    INCORRECT_HASH,
    NO_SECRET_KEY,
    Envelope,
    MorError,
)
from api.params import ActiveCallsQuery
from api.settings import ApiSettings
from collector.refdata.index import RefIndex
from collector.refdata.model import User

__all__ = ["Principal", "Role", "authenticate", "check_switches", "expected_hash"]

log = logging.getLogger(__name__)


class Role(str, Enum):
    ADMIN = "admin"
    ACCOUNTANT = "accountant"
    RESELLER = "reseller"
    USER = "user"

    @classmethod
    def of(cls, usertype: str) -> Role:
        """Unknown user types get the least privilege (a plain user)."""
        try:
            return cls(usertype)
        except ValueError:
            return cls.USER


@dataclass(frozen=True, slots=True)
class Principal:
    role: Role
    user: User

    @property
    def sees_everything(self) -> bool:
        return self.role in (Role.ADMIN, Role.ACCOUNTANT)


def expected_hash(username: str, secret: str) -> str:
    """What a client must send: sha1(u + secret), lowercase hex."""
    return hashlib.sha1((username + secret).encode("utf-8", "surrogatepass")).hexdigest()


def _deny(text: str, username: str, reason: str) -> MorError:
    log.info("api auth failed api_user=%r reason=%s", username[:64], reason)
    return MorError(text, Envelope.STATUS)


def authenticate(query: ActiveCallsQuery, refs: RefIndex, settings: ApiSettings, *,
                 is_get: bool) -> Principal:
    """The caller, or ``MorError`` with MOR's pre-method error for the first check that fails."""
    username = query.u or ""
    user = refs.users_by_username.get(username) if username else None
    if user is None:
        raise _deny(ACCESS_DENIED, username, "unknown_user")
    check_switches(username, settings, is_get=is_get)
    if not settings.disable_hash_check:
        owner = refs.owner_of(user)
        secret = owner.api_secret_key if owner is not None else ""
        if not secret:
            raise _deny(NO_SECRET_KEY, username, "no_secret")
        if not _hash_ok(query.hash, username, secret, settings.accept_secret_only_hash):
            raise _deny(INCORRECT_HASH, username, "bad_hash")
    return Principal(Role.of(user.usertype), user)


def check_switches(username: str, settings: ApiSettings, *, is_get: bool) -> None:
    """MOR's API on/off and GET switches, checked once the caller is known (by hash or by Bearer token)."""
    if not settings.enabled:
        raise _deny(API_DISABLED, username, "api_disabled")
    if is_get and not settings.allow_get:
        raise _deny(GET_DISABLED, username, "get_disabled")


def _hash_ok(given: str | None, username: str, secret: str, accept_secret_only: bool) -> bool:
    if given is None or len(given) != 40:
        return False
    got = given.encode("utf-8", "surrogatepass")
    ok = hmac.compare_digest(got, expected_hash(username, secret).encode("ascii"))
    if accept_secret_only:  # evaluated regardless of ``ok`` so timing does not tell which one matched
        alt = hmac.compare_digest(got, expected_hash("", secret).encode("ascii"))
        ok = ok or alt
    return ok
