"""Hostile input: caps, repeats, broken encodings, bad bodies, oversize and slow bodies, odd methods,
and the error middleware. Every response is parsed; nothing may yield a traceback or a 500."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import quote

import pytest

from api.app import create_app
from api.deps import ApiDeps
from api.errors import MorError
from api.params import INVALID, build_query, parse_json, parse_multipart, parse_urlencoded
from api.settings import ApiSettings
from tests.api_support import (
    NOW,
    PATH,
    REFS,
    calls_of,
    error_of,
    make_app,
    message_of,
    raw_http,
    sha,
    signed,
    status_error_of,
    with_settings,
)

BOB = signed("bob")
BOB_Q = f"u=bob&hash={BOB['hash']}"
ALL = list(range(1, 10))


@pytest.fixture
async def client(aiohttp_client: Any) -> Any:
    return await aiohttp_client(make_app())


async def body_of(resp: Any, status: int = 200) -> bytes:
    assert resp.status == status
    assert resp.headers["Content-Type"] == "text/xml; charset=utf-8"
    return bytes(await resp.read())


# ------------------------------------------------------------------------------------------ repeats, empties
async def test_first_occurrence_wins(client: Any) -> None:
    resp = await client.post(f"{PATH}?{BOB_Q}&u=admin&hash={sha('adminadminsecret')}")
    assert calls_of(await body_of(resp)) == [4, 5, 9]
    resp = await client.post(f"{PATH}?{BOB_Q}&s_server=2&s_server=1")
    assert message_of(await body_of(resp)) == "No data found..."  # bob has nothing on server 2
    resp = await client.post(f"{PATH}?{BOB_Q}&s_status=answered", data={"s_status": "ringing"})
    assert calls_of(await body_of(resp)) == [4, 9]  # the query string is read before the body


async def test_empty_values_are_absent_so_a_later_value_counts(client: Any) -> None:
    resp = await client.post(f"{PATH}?{BOB_Q}&s_server=&s_server=1&s_status=&s_did=")
    assert calls_of(await body_of(resp)) == [4, 5, 9]
    resp = await client.post(f"{PATH}?u=&u=bob&hash=&hash={BOB['hash']}")
    assert calls_of(await body_of(resp)) == [4, 5, 9]


async def test_json_duplicate_keys_first_wins(client: Any) -> None:
    body = '{"u": "bob", "hash": "' + BOB["hash"] + '", "s_status": "answered", "s_status": "ringing"}'
    resp = await client.post(PATH, data=body, headers={"Content-Type": "application/json"})
    assert calls_of(await body_of(resp)) == [4, 9]


# ------------------------------------------------------------------------------------------ caps
async def test_oversize_values_are_invalid_never_ignored(client: Any) -> None:
    long_ = "1" * 1025
    resp = await client.post(PATH, data={"u": "bob" + "x" * 1025})
    assert status_error_of(await body_of(resp)) == "Access Denied"
    resp = await client.post(PATH, data={"u": "bob", "hash": BOB["hash"] * 30})
    assert status_error_of(await body_of(resp)) == "Incorrect hash"
    for name, error in [("s_server", "Server was not found"), ("s_country", "Direction was not found"),
                        ("s_user_id", "Originating User was not found"),
                        ("s_dst_user_id", "Terminating User was not found"),
                        ("s_destination_group", "Destination Group was not found"),
                        ("s_status", "Status value must be Ringing or Answered"),
                        ("s_provider", "Provider was not found"), ("s_did", "Did was not found")]:
        resp = await client.post(PATH, data={**BOB, name: long_})
        assert error_of(await body_of(resp)) == error, name
    for name in ("s_source", "s_destination"):  # a pattern of 1025 "%" would match all: it matches none
        resp = await client.post(PATH, data={**BOB, name: "%" * 1025})
        assert message_of(await body_of(resp)) == "No data found..."
    resp = await client.post(PATH, data={**BOB, "s_source": "%" * 1024})  # at the cap: still valid
    assert calls_of(await body_of(resp)) == [4, 5, 9]


async def test_only_the_first_max_params_pairs_are_read(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app(with_settings(max_params=100)))
    junk = "&".join(f"j{i}=1" for i in range(98))
    resp = await client.post(f"{PATH}?{junk}&{BOB_Q}")  # pairs 99 and 100
    assert calls_of(await body_of(resp)) == [4, 5, 9]
    resp = await client.post(f"{PATH}?{junk}&x=1&{BOB_Q}")  # hash is pair 101
    assert status_error_of(await body_of(resp)) == "Incorrect hash"
    resp = await client.post(f"{PATH}?{junk}&{BOB_Q}&s_status=ringing")  # filter beyond the cap
    assert calls_of(await body_of(resp)) == [4, 5, 9]
    many = "&".join(f"p{i}={i}" for i in range(5000))
    started = time.perf_counter()
    resp = await client.post(PATH, data=many + "&" + BOB_Q,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status_error_of(await body_of(resp)) == "Access Denied"
    assert time.perf_counter() - started < 1.0
    resp = await client.post(PATH, json={**{f"k{i}": i for i in range(3000)}, **BOB})
    assert status_error_of(await body_of(resp)) == "Access Denied"


async def test_oversize_body_is_413_with_a_mor_page(client: Any) -> None:
    resp = await client.post(PATH, data=b"u=" + b"x" * 70_000,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status_error_of(await body_of(resp, 413)) == "Request Entity Too Large"

    async def chunks() -> Any:  # no Content-Length: counted while reading
        for _ in range(20):
            yield b"a" * 8192

    resp = await client.post(PATH, data=chunks())
    assert status_error_of(await body_of(resp, 413)) == "Request Entity Too Large"
    resp = await client.post(PATH, data=b"u=bob&" + b"x" * 60_000,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status_error_of(await body_of(resp)) == "Incorrect hash"  # under the cap: read normally


async def test_slow_body_gets_408_quickly(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app(with_settings(body_timeout=0.3)))
    started = time.perf_counter()
    status, headers, body = await raw_http(client.server.port, (
        f"POST {PATH} HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\nu=bob").encode())
    assert time.perf_counter() - started < 2.0
    assert status == 408 and headers["content-type"] == "text/xml; charset=utf-8"
    assert headers.get("connection", "").lower() == "close"
    assert status_error_of(body) == "Request Timeout"


# ------------------------------------------------------------------------------------------ encodings
async def test_bad_percent_encoding_stays_literal(client: Any) -> None:
    resp = await client.post(f"{PATH}?{BOB_Q}&s_source=%zz%")
    assert message_of(await body_of(resp)) == "No data found..."
    resp = await client.post(f"{PATH}?{BOB_Q}&s_country=%E0%A4%A")
    assert error_of(await body_of(resp)) == "Direction was not found"
    resp = await client.post(f"{PATH}?u=bo%62&hash={BOB['hash']}&s_source=30%25")  # %25 is a LIKE %
    assert calls_of(await body_of(resp)) == [4]


async def test_non_utf8_bytes_match_nothing(client: Any) -> None:
    resp = await client.post(f"{PATH}?u=b%FFob&hash={BOB['hash']}")
    assert status_error_of(await body_of(resp)) == "Access Denied"
    resp = await client.post(f"{PATH}?{BOB_Q}&s_country=Lith%FEuania")
    assert error_of(await body_of(resp)) == "Direction was not found"
    resp = await client.post(PATH, data=b"u=bob&hash=" + BOB["hash"].encode() + b"&s_source=\xff\xfe%",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert message_of(await body_of(resp)) == "No data found..."
    resp = await client.post(PATH, data=b'{"u": "b\xffob"}', headers={"Content-Type": "application/json"})
    assert status_error_of(await body_of(resp)) == "Invalid request body"


async def test_utf8_values_round_trip(client: Any) -> None:
    resp = await client.post(f"{PATH}?u=admin&hash={sha('adminadminsecret')}&s_source=" + quote("%ü☎%"))
    assert calls_of(await body_of(resp)) == [9]


async def test_raw_non_ascii_in_the_request_line_is_refused_by_aiohttp(client: Any) -> None:
    status, _, _ = await raw_http(client.server.port,
                                  f"POST {PATH}?u=b".encode() + b"\xffob HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 400  # aiohttp's HTTP parser, before any of our code (documented)


# ------------------------------------------------------------------------------------------ bodies
@pytest.mark.parametrize("raw", [
    b"[1, 2]", b'["u", "bob"]', b"null", b"42", b'"u=bob"', b"{", b'{"u": "bob",}', b"{'u': 'bob'}",
    b"[" * 30_000 + b"]" * 30_000, b'{"u": NaN' + b"}" * 2,
])
async def test_json_that_is_not_an_object_is_invalid(client: Any, raw: bytes) -> None:
    resp = await client.post(PATH, data=raw, headers={"Content-Type": "application/json"})
    assert status_error_of(await body_of(resp)) == "Invalid request body"


async def test_json_value_types(client: Any) -> None:
    for value, expected in [(1, [4, 5, 9]), ("1", [4, 5, 9])]:
        resp = await client.post(PATH, json={**BOB, "s_server": value})
        assert calls_of(await body_of(resp)) == expected
    for value in (1.0, {"id": 1}, [1], True, float("inf")):
        resp = await client.post(PATH, data=json.dumps({**BOB, "s_server": value}),
                                 headers={"Content-Type": "application/json"})
        assert error_of(await body_of(resp)) == "Server was not found", value
    resp = await client.post(PATH, json={**BOB, "s_server": None})  # null = absent
    assert calls_of(await body_of(resp)) == [4, 5, 9]
    resp = await client.post(PATH, json={"u": 5, "hash": BOB["hash"]})
    assert status_error_of(await body_of(resp)) == "Access Denied"
    resp = await client.post(PATH, json={"u": "bob", "hash": "\ud800" * 40})
    assert status_error_of(await body_of(resp)) == "Incorrect hash"


async def test_body_without_content_type_is_sniffed(client: Any) -> None:
    for raw in (BOB_Q.encode(), json.dumps(BOB).encode(), b"  \n" + json.dumps(BOB).encode()):
        resp = await client.post(PATH, data=raw, headers={"Content-Type": ""})
        assert calls_of(await body_of(resp)) == [4, 5, 9]
    resp = await client.post(PATH, data=BOB_Q.encode(), headers={"Content-Type": "text/plain"})
    assert calls_of(await body_of(resp)) == [4, 5, 9]


async def test_broken_multipart_is_invalid(client: Any) -> None:
    resp = await client.post(PATH, data=b"--x\r\n", headers={"Content-Type": "multipart/form-data"})
    assert status_error_of(await body_of(resp)) == "Invalid request body"
    resp = await client.post(PATH, data=b"garbage", headers={"Content-Type": "multipart/form-data; boundary=zz"})
    assert status_error_of(await body_of(resp)) == "Invalid request body"


# ------------------------------------------------------------------------------------------ methods, paths
async def test_other_methods_get_405_with_allow(client: Any) -> None:
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        resp = await client.request(method, PATH, params=BOB)
        assert resp.headers["Allow"] == "GET, HEAD, POST"
        assert status_error_of(await body_of(resp, 405)) == "Method Not Allowed"


async def test_the_x14_path_also_answers(client: Any) -> None:
    resp = await client.post("/api/active_calls_get", data=BOB)
    assert calls_of(await body_of(resp)) == [4, 5, 9]
    resp = await client.post("/billing/api/other")
    assert resp.status == 404


# ------------------------------------------------------------------------------------------ middleware
async def test_unexpected_exception_is_logged_and_rendered(aiohttp_client: Any,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    def boom() -> Any:
        raise RuntimeError("table exploded")

    app = create_app(ApiDeps(rows=boom, refs=lambda: REFS, settings=with_settings(), clock=lambda: NOW))
    client = await aiohttp_client(app)
    with caplog.at_level(logging.ERROR, logger="api.app"):
        resp = await client.post(PATH, data=BOB)
        assert status_error_of(await body_of(resp, 500)) == "Internal Error"
    assert any("table exploded" in (r.exc_text or "") for r in caplog.records)
    assert b"Traceback" not in await resp.read()


async def test_extra_routes_and_later_routes_share_the_middleware(aiohttp_client: Any) -> None:
    from aiohttp import web

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def broken(_request: web.Request) -> web.Response:
        raise ValueError("bug")

    app = create_app(ApiDeps(rows=lambda: (), refs=lambda: REFS), routes=[web.get("/healthz", healthz)])
    app.router.add_get("/broken", broken)
    client = await aiohttp_client(app)
    assert await (await client.get("/healthz")).text() == "ok"
    resp = await client.get("/broken")
    assert status_error_of(await body_of(resp, 500)) == "Internal Error"


# ------------------------------------------------------------------------------------------ pure parsers
def test_parsers_directly() -> None:
    assert parse_urlencoded(b"a=1&&b&c=%41+%42&=x", 10) == [("a", "1"), ("b", ""), ("c", "A B"), ("", "x")]
    assert parse_urlencoded(b"a=1&b=2&c=3", 2) == [("a", "1"), ("b", "2")]
    assert parse_json(b'{"a": 1, "b": [1], "c": null}', 10) == [("a", "1"), ("b", INVALID), ("c", "")]
    with pytest.raises(MorError):
        parse_json(b"[]", 10)
    body = (b"--B\r\nContent-Disposition: form-data; name=\"u\"\r\n\r\nbob\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\nzz\r\n--B--\r\n")
    assert parse_multipart("multipart/form-data; boundary=B", body, 10) == [("u", "bob")]
    q = build_query([("u", "a"), ("u", "b"), ("s_server", ""), ("s_server", "2"), ("x", "y"),
                     ("s_did", "z" * 11)], max_param_len=10)
    assert (q.u, q.s_server, q.s_did) == ("a", "2", INVALID)


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        ApiSettings(timezone="Mars/Olympus")
    with pytest.raises(ValueError):
        ApiSettings(max_body=0)
    with pytest.raises(ValueError):
        ApiSettings(paths=("relative",))
    assert ApiSettings(timezone="Europe/Vilnius").zone() is not None


async def test_stale_row_guard_when_configured(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app(with_settings(hide_older_than_hours=1.0), now=NOW + 10))
    resp = await client.post(PATH, data=signed("admin"))
    assert calls_of(await body_of(resp)) == ALL  # all started within the last 110 s
    old = await aiohttp_client(make_app(with_settings(hide_older_than_hours=1.0), now=NOW + 3600))
    resp = await old.post(PATH, data=signed("admin"))
    assert message_of(await body_of(resp)) == "No data found..."


async def test_concurrent_requests_do_not_interfere(client: Any) -> None:
    results = await asyncio.gather(*(client.post(PATH, data=signed(u)) for u in ["bob", "alice", "res"] * 20))
    for resp, user in zip(results, ["bob", "alice", "res"] * 20, strict=False):
        assert calls_of(await body_of(resp)) == {"bob": [4, 5, 9], "alice": [1, 2, 5, 8], "res": [3, 6, 7, 8]}[user]
