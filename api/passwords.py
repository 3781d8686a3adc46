"""Password hashing and checking for the v2 login: pure functions, no I/O, no clock.

Two stored forms are understood:

* ours, ``scrypt$n$r$p$salt_b64$hash_b64`` (stdlib ``hashlib.scrypt``, a random 16-byte salt), made by
  ``collector db set-password`` and kept in ``local_passwords``;
* MOR's ``users.password``: plain text in MOR's public dump, a 40-hex SHA1 of the password in newer MORs.
  A 40-hex value is checked both ways (it may be a plain password that happens to look like a digest).

Every check costs one scrypt run at the default cost, whatever the stored form and also when there is no
stored form at all (unknown user, user without a password: ``verify_password(pw, None)``), so the time a
login takes does not tell which case it was. Comparisons are constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

__all__ = ["DEFAULT_COST", "ScryptCost", "hash_password", "is_scrypt", "verify_password"]

_PREFIX = "scrypt"
_SALT_BYTES = 16
_HASH_BYTES = 32
_HEX40 = re.compile(r"[0-9a-fA-F]{40}")
#: Stored parameters above these are refused (a tampered row must not make one login take 4 GiB).
_MAX_N, _MAX_R, _MAX_P = 2**20, 32, 16


@dataclass(frozen=True, slots=True)
class ScryptCost:
    """scrypt's work factors; memory is 128 * n * r bytes (16 MiB at the default)."""

    n: int = 2**14
    r: int = 8
    p: int = 1

    def maxmem(self) -> int:
        return 128 * self.n * self.r * self.p + 1024 * 1024


DEFAULT_COST = ScryptCost()
#: The salt of the stand-in work done when there is nothing to check against (a fixed one: the result
#: is thrown away; only the cost matters).
_DUMMY_SALT = b"\x00" * _SALT_BYTES


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, cost: ScryptCost) -> bytes:
    return hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=salt, n=cost.n, r=cost.r, p=cost.p,
                          maxmem=cost.maxmem(), dklen=_HASH_BYTES)


def hash_password(password: str, cost: ScryptCost = DEFAULT_COST, salt: bytes | None = None) -> str:
    """The stored form of ``password``: ``scrypt$n$r$p$salt_b64$hash_b64`` with a fresh random salt."""
    if not password:
        raise ValueError("an empty password cannot be set")
    salt = os.urandom(_SALT_BYTES) if salt is None else salt
    digest = _scrypt(password, salt, cost)
    return f"{_PREFIX}${cost.n}${cost.r}${cost.p}${_b64(salt)}${_b64(digest)}"


def is_scrypt(stored: str) -> bool:
    return stored.startswith(_PREFIX + "$")


def _parse_scrypt(stored: str) -> tuple[ScryptCost, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != _PREFIX:
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        return None
    if not (2 <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P) or not salt \
            or len(digest) < 16:
        return None
    return ScryptCost(n, r, p), salt, digest


def _digest(value: str) -> bytes:
    """A fixed-length stand-in, so comparing plain texts does not leak their lengths."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def _mor_matches(password: str, stored: str) -> bool:
    plain = hmac.compare_digest(_digest(password), _digest(stored))
    if not _HEX40.fullmatch(stored):
        return plain
    sha1 = hashlib.sha1(password.encode("utf-8", "surrogatepass")).hexdigest()
    hashed = hmac.compare_digest(sha1.encode("ascii"), stored.lower().encode("ascii"))
    return plain or hashed


def verify_password(password: str, stored: str | None, cost: ScryptCost = DEFAULT_COST) -> bool:
    """Whether ``password`` matches ``stored`` (either form). None, "" or a malformed scrypt entry never
    match, after the same scrypt work as a real check; an empty password never matches."""
    parsed = _parse_scrypt(stored) if stored and is_scrypt(stored) else None
    if parsed is not None:
        stored_cost, salt, digest = parsed
        got = hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=salt, n=stored_cost.n,
                             r=stored_cost.r, p=stored_cost.p, maxmem=stored_cost.maxmem(), dklen=len(digest))
        return hmac.compare_digest(got, digest) and bool(password)
    _scrypt(password, _DUMMY_SALT, cost)  # the same work as a real check: timing does not tell
    if not stored or not password or is_scrypt(stored):
        return False
    return _mor_matches(password, stored)
