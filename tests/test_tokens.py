"""Bearer tokens: what verifies, what does not, and that expiry follows the issuer's clock."""

from __future__ import annotations

from collections.abc import Callable

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.tokens import EXPIRED_TOKEN, INVALID_TOKEN, ISSUER, TokenIssuer
from api.v2errors import V2Error

KEY = b"k" * 32


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_issued_token_verifies_until_it_expires() -> None:
    clock = Clock(1_700_000_000.0)
    issuer = TokenIssuer(KEY, 900, clock)
    issued = issuer.issue("alice", 7)
    assert issued.expires_at - issued.issued_at == 900
    claims = issuer.verify(issued.token)
    assert (claims.username, claims.user_id, claims.expires_at) == ("alice", 7, issued.expires_at)
    clock.now += 899
    assert issuer.verify(issued.token).user_id == 7
    clock.now += 1
    with pytest.raises(V2Error) as err:
        issuer.verify(issued.token)
    assert (err.value.status, err.value.message) == (401, EXPIRED_TOKEN)


@pytest.mark.parametrize("forge", [
    lambda: jwt.encode({"sub": "alice", "uid": 7, "iss": ISSUER, "iat": 1, "exp": 2**40}, b"x" * 32,
                       algorithm="HS256"),  # another key
    lambda: jwt.encode({"sub": "alice", "uid": 7, "iss": ISSUER, "iat": 1, "exp": 2**40}, None,
                       algorithm="none"),  # alg=none
    lambda: jwt.encode({"sub": "alice", "uid": 7, "iat": 1, "exp": 2**40}, KEY, algorithm="HS256"),  # no iss
    lambda: jwt.encode({"sub": "alice", "uid": "7", "iss": ISSUER, "iat": 1, "exp": 2**40}, KEY,
                       algorithm="HS256"),  # uid not an int
    lambda: "not.a.token",
])
def test_forged_or_malformed_tokens_are_refused(forge: Callable[[], str]) -> None:
    with pytest.raises(V2Error) as err:
        TokenIssuer(KEY).verify(forge())
    assert (err.value.status, err.value.message) == (401, INVALID_TOKEN)


@given(st.text(max_size=300))
def test_arbitrary_text_never_verifies(text: str) -> None:
    with pytest.raises(V2Error):
        TokenIssuer(KEY).verify(text)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenIssuer(b"short")
