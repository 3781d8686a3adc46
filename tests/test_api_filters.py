"""The twelve s_* filters: hit, miss (No data found), not found, not visible; precedence; LIKE."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.filters import like_to_regex, parse_id
from tests.api_support import PATH, calls_of, error_of, make_app, message_of, signed

NO_DATA = "No data found..."

# (caller, filters, expected): a list of row ids, NO_DATA, or an error text.
CASES: list[tuple[str, dict[str, str], list[int] | str]] = [
    # s_server
    ("admin", {"s_server": "1"}, [1, 3, 4, 5, 7, 9]),
    ("admin", {"s_server": "2"}, [2, 6, 8]),
    ("admin", {"s_server": "3"}, NO_DATA),
    ("admin", {"s_server": "4"}, "Server was not found"),
    ("admin", {"s_server": "x"}, "Server was not found"),
    ("admin", {"s_server": "-1"}, "Server was not found"),
    ("alice", {"s_server": "2"}, [2, 8]),
    # s_country (direction name, case-insensitive)
    ("admin", {"s_country": "lithuania"}, [3, 4, 6]),
    ("admin", {"s_country": "UNITED KINGDOM"}, [2, 7]),
    ("admin", {"s_country": "Chad"}, NO_DATA),
    ("admin", {"s_country": "LTU"}, "Direction was not found"),
    ("admin", {"s_country": "Mars"}, "Direction was not found"),
    ("bob", {"s_country": "Lithuania"}, [4]),
    # s_user_id
    ("admin", {"s_user_id": "4"}, [1, 2]),
    ("admin", {"s_user_id": "9"}, NO_DATA),
    ("admin", {"s_user_id": "99"}, "Originating User was not found"),
    ("admin", {"s_user_id": "4a"}, "Originating User was not found"),
    ("alice", {"s_user_id": "4"}, [1, 2]),
    ("alice", {"s_user_id": "5"}, "Originating User was not found"),  # exists, not hers
    ("res", {"s_user_id": "3"}, [3]),
    ("res", {"s_user_id": "2"}, [7]),
    ("res", {"s_user_id": "8"}, [8]),
    ("res", {"s_user_id": "4"}, "Originating User was not found"),
    ("ruser", {"s_user_id": "8"}, "Originating User was not found"),
    # s_device (needs s_user_id; must be that user's)
    ("admin", {"s_user_id": "4", "s_device": "10"}, [1]),
    ("admin", {"s_user_id": "4", "s_device": "11"}, [2]),
    ("admin", {"s_user_id": "4", "s_device": "12"}, "Originating Device was not found"),
    ("admin", {"s_user_id": "4", "s_device": "99"}, "Originating Device was not found"),
    ("admin", {"s_device": "99"}, list(range(1, 10))),  # ignored without s_user_id
    ("alice", {"s_user_id": "4", "s_device": "11"}, [2]),
    ("res", {"s_user_id": "2", "s_device": "14"}, [7]),
    ("res", {"s_user_id": "3", "s_device": "14"}, "Originating Device was not found"),
    # s_dst_user_id
    ("admin", {"s_dst_user_id": "4"}, [5, 8]),
    ("admin", {"s_dst_user_id": "5"}, [4]),
    ("admin", {"s_dst_user_id": "2"}, NO_DATA),
    ("admin", {"s_dst_user_id": "99"}, "Terminating User was not found"),
    ("alice", {"s_dst_user_id": "4"}, [5, 8]),
    ("bob", {"s_dst_user_id": "4"}, "Terminating User was not found"),
    ("res", {"s_dst_user_id": "3"}, [6]),
    ("res", {"s_dst_user_id": "4"}, "Terminating User was not found"),
    # s_dst_device (needs s_dst_user_id)
    ("admin", {"s_dst_user_id": "4", "s_dst_device": "10"}, [5, 8]),
    ("admin", {"s_dst_user_id": "4", "s_dst_device": "11"}, NO_DATA),
    ("admin", {"s_dst_user_id": "4", "s_dst_device": "12"}, "Terminating Device was not found"),
    ("admin", {"s_dst_device": "12"}, list(range(1, 10))),  # ignored without s_dst_user_id
    ("ruser", {"s_dst_user_id": "3", "s_dst_device": "13"}, [6]),
    # s_destination_group
    ("admin", {"s_destination_group": "3"}, [3, 4, 6]),
    ("admin", {"s_destination_group": "1"}, [1, 9]),
    ("admin", {"s_destination_group": "4"}, NO_DATA),
    ("admin", {"s_destination_group": "9"}, "Destination Group was not found"),
    ("res", {"s_destination_group": "2"}, [7]),
    # s_status
    ("admin", {"s_status": "ringing"}, [1, 5, 6]),
    ("admin", {"s_status": "ANSWERED"}, [2, 3, 4, 7, 8, 9]),
    ("admin", {"s_status": "Ringing"}, [1, 5, 6]),
    ("admin", {"s_status": "hold"}, "Status value must be Ringing or Answered"),
    ("admin", {"s_status": "ringing "}, "Status value must be Ringing or Answered"),
    ("ruser", {"s_status": "ringing"}, [6]),
    # s_provider
    ("admin", {"s_provider": "1"}, [1, 2, 9]),
    ("admin", {"s_provider": "2"}, [3, 7]),
    ("admin", {"s_provider": "3"}, NO_DATA),
    ("admin", {"s_provider": "9"}, "Provider was not found"),
    ("acc", {"s_provider": "2"}, [3, 7]),
    ("res", {"s_provider": "2"}, [3, 7]),
    ("res", {"s_provider": "1"}, "Provider was not found"),  # the admin's provider
    ("alice", {"s_provider": "1"}, [1, 2]),
    ("alice", {"s_provider": "2"}, NO_DATA),  # her owner (admin) sees every provider
    ("ruser", {"s_provider": "2"}, [3]),
    ("ruser", {"s_provider": "1"}, "Provider was not found"),  # not her reseller's
    ("ruser", {"s_provider": "3"}, "Provider was not found"),
    # s_did (LIKE over the DID number, DIDs the caller may see)
    ("admin", {"s_did": "37052000001"}, [4]),
    ("admin", {"s_did": "3705200000_"}, [4, 6]),
    ("admin", {"s_did": "%0003"}, [6]),
    ("admin", {"s_did": "%"}, [4, 6]),
    ("admin", {"s_did": "37052000002"}, NO_DATA),
    ("admin", {"s_did": "3705200000"}, "Did was not found"),  # no implicit %
    ("admin", {"s_did": "4%"}, "Did was not found"),
    ("bob", {"s_did": "%"}, [4]),
    ("bob", {"s_did": "37052000003"}, "Did was not found"),
    ("res", {"s_did": "%"}, [6]),
    ("res", {"s_did": "37052000009"}, NO_DATA),  # his user's DID, no call on it
    ("res", {"s_did": "37052000001"}, "Did was not found"),
    ("res", {"s_did": "37099999999"}, "Did was not found"),  # routed to another reseller's device
    ("carol", {"s_did": "%9"}, NO_DATA),
    # s_destination (LIKE over localized_dst)
    ("admin", {"s_destination": "63%"}, [1, 9]),
    ("admin", {"s_destination": "4477%"}, [2, 7]),
    ("admin", {"s_destination": "101"}, [5, 8]),
    ("admin", {"s_destination": "1_1"}, [5, 8]),
    ("admin", {"s_destination": "%000%"}, [3, 4, 6]),
    ("admin", {"s_destination": "63"}, NO_DATA),
    ("admin", {"s_destination": "%"}, list(range(1, 10))),
    ("alice", {"s_destination": "%"}, [1, 2, 5, 8]),
    # s_source (LIKE over src)
    ("admin", {"s_source": "30%"}, [1, 3, 4]),
    ("admin", {"s_source": "_0_"}, [2, 3, 5, 7, 8]),
    ("admin", {"s_source": "102"}, [5]),
    ("admin", {"s_source": "%ü☎%"}, [9]),
    ("admin", {"s_source": "%ü☎"}, NO_DATA),  # the raw src ends in a lone surrogate (not rendered)
    ("admin", {"s_source": "%<B>%"}, [9]),  # case-insensitive like MySQL's default collation
    ("admin", {"s_source": "%\\%"}, NO_DATA),  # escaped: a literal %
    ("admin", {"s_source": "%&\"'%"}, [9]),
    ("bob", {"s_source": "30%"}, [4]),
    # combinations
    ("admin", {"s_status": "answered", "s_server": "1"}, [3, 4, 7, 9]),
    ("admin", {"s_country": "philippines", "s_status": "answered"}, [9]),
    ("res", {"s_user_id": "3", "s_provider": "2", "s_destination_group": "3", "s_country": "Lithuania"}, [3]),
    ("admin", {"s_server": "", "s_status": "", "s_did": ""}, list(range(1, 10))),  # empty = absent
]


@pytest.mark.parametrize(("caller", "filters", "expected"), CASES,
                         ids=[f"{c}-{'&'.join(f'{k}={v}' for k, v in f.items())}" for c, f, _ in CASES])
async def test_filter(aiohttp_client: Any, caller: str, filters: dict[str, str],
                      expected: list[int] | str) -> None:
    client = await aiohttp_client(make_app())
    resp = await client.post(PATH, data=signed(caller, **filters))
    assert resp.status == 200
    body = await resp.read()
    if isinstance(expected, list):
        assert calls_of(body) == expected
    elif expected == NO_DATA:
        assert message_of(body) == NO_DATA
    else:
        assert error_of(body) == expected


BAD = {"s_server": "9", "s_country": "Mars", "s_user_id": "99", "s_dst_user_id": "99",
       "s_destination_group": "99", "s_status": "x", "s_provider": "99", "s_did": "9%"}
ORDER = ["Server was not found", "Direction was not found", "Originating User was not found",
         "Terminating User was not found", "Destination Group was not found",
         "Status value must be Ringing or Answered", "Provider was not found", "Did was not found"]


async def test_error_precedence_is_the_seed_list_order(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app())
    names = list(BAD)
    for i, expected in enumerate(ORDER):
        resp = await client.post(PATH, data=signed("admin", **{k: BAD[k] for k in names[i:]}))
        assert error_of(await resp.read()) == expected
    resp = await client.post(PATH, data=signed("admin", s_user_id="4", s_device="12", s_dst_user_id="99"))
    assert error_of(await resp.read()) == "Originating Device was not found"
    resp = await client.post(PATH, data=signed("admin", s_dst_user_id="4", s_dst_device="12", s_status="x"))
    assert error_of(await resp.read()) == "Terminating Device was not found"


# ------------------------------------------------------------------------------------------ pure parts
@pytest.mark.parametrize(("value", "expected"), [
    ("0", 0), ("12", 12), ("007", 7), ("", None), ("-1", None), ("+1", None), (" 1", None), ("1 ", None),
    ("1.0", None), ("١٢", None), ("9" * 18, int("9" * 18)), ("9" * 19, None), ("0x1", None),
])
def test_parse_id_is_strict(value: str, expected: int | None) -> None:
    assert parse_id(value) == expected


@pytest.mark.parametrize(("pattern", "subject", "matches"), [
    ("370%", "37052000001", True), ("370%", "4370", False), ("%370", "4370", True), ("370", "3701", False),
    ("_70", "370", True), ("_70", "3370", False), ("%", "", True), ("%%", "x", True), ("a\\%b", "a%b", True),
    ("a\\%b", "axb", False), ("a\\_b", "a_b", True), ("a\\_b", "axb", False), ("a\\", "a\\", True),
    ("a.b", "axb", False), ("(", "(", True), ("%a%b%", "xxaxxbxx", True), ("%a%b%", "bxa", False),
    ("A%", "abc", True), ("%\n%", "a\nb", True), ("_", "\n", True), ("%ab%ab", "abab", True),
    ("%ab%ab", "ab", False), ("a%a", "a", False), ("a%a", "aa", True),
])
def test_like(pattern: str, subject: str, matches: bool) -> None:
    assert (like_to_regex(pattern).fullmatch(subject) is not None) is matches


def _reference_like(pattern: str, subject: str) -> bool:
    """Textbook dynamic programming over (pattern token, subject position)."""
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            tokens.append(("lit", pattern[i + 1]))
            i += 2
            continue
        tokens.append(("any", "") if c == "%" else ("one", "") if c == "_" else ("lit", c))
        i += 1

    @cache
    def m(t: int, s: int) -> bool:
        if t == len(tokens):
            return s == len(subject)
        kind, ch = tokens[t]
        if kind == "any":
            return m(t + 1, s) or (s < len(subject) and m(t, s + 1))
        if s == len(subject):
            return False
        if kind == "one" or ch.lower() == subject[s].lower():
            return m(t + 1, s + 1)
        return False

    return m(0, 0)


ALPHABET = st.sampled_from("ab0%_\\.*")


@settings(max_examples=400, deadline=None)
@given(st.text(ALPHABET, min_size=1, max_size=10), st.text(st.sampled_from("ab0%_\\.*"), max_size=12))
def test_like_agrees_with_a_reference_matcher(pattern: str, subject: str) -> None:
    assert (like_to_regex(pattern).fullmatch(subject) is not None) is _reference_like(pattern, subject)


def test_like_has_no_catastrophic_backtracking() -> None:
    import time

    pattern = "%a" * 200 + "%b"
    subject = "a" * 1000
    started = time.perf_counter()
    assert like_to_regex(pattern).fullmatch(subject) is None
    assert like_to_regex("%" + "_" * 500 + "%b").fullmatch("a" * 1000) is None
    assert time.perf_counter() - started < 0.5
    assert re.compile(like_to_regex("x%y").pattern)  # a plain regex, usable anywhere
