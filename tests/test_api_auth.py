"""Authentication: MOR's check order, hash variants, GET switch, and the three transports."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import FormData

from collector.refdata.index import RefIndex
from collector.refdata.model import RefData, Server, User
from tests.api_support import (
    PATH,
    ROWS,
    VISIBLE,
    calls_of,
    make_app,
    message_of,
    sha,
    signed,
    status_error_of,
    with_settings,
)

ALICE_HASH = sha("alice" + "adminsecret")


async def post(client: Any, params: dict[str, str]) -> bytes:
    resp = await client.post(PATH, params=params)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/xml; charset=utf-8"
    return bytes(await resp.read())


@pytest.fixture
async def client(aiohttp_client: Any) -> Any:
    return await aiohttp_client(make_app())


@pytest.mark.parametrize("params", [
    {}, {"u": ""}, {"u": "nobody", "hash": sha("nobody")}, {"u": "Admin", "hash": sha("Adminadminsecret")},
    {"hash": sha("adminsecret")}, {"U": "admin", "hash": sha("adminadminsecret")}, {"u": " admin"},
])
async def test_unknown_or_missing_user_is_access_denied(client: Any, params: dict[str, str]) -> None:
    assert status_error_of(await post(client, params)) == "Access Denied"


@pytest.mark.parametrize("hash_", [
    None, "", "0" * 40, ALICE_HASH.upper(), ALICE_HASH[:-1], ALICE_HASH + "0", " " + ALICE_HASH[1:],
    sha("adminsecret"), sha("alice" + "ressecret"), sha("alice"), sha("adminsecretalice"), "é" * 40,
])
async def test_wrong_or_missing_hash_is_incorrect_hash(client: Any, hash_: str | None) -> None:
    params = {"u": "alice"} if hash_ is None else {"u": "alice", "hash": hash_}
    assert status_error_of(await post(client, params)) == "Incorrect hash"


@pytest.mark.parametrize("username", sorted(VISIBLE))
async def test_each_user_signs_with_the_secret_of_its_owner(client: Any, username: str) -> None:
    body = await post(client, signed(username))
    expected = sorted(VISIBLE[username])
    if expected:
        assert calls_of(body) == expected
    else:
        assert message_of(body) == "No data found..."


@pytest.mark.parametrize(("username", "wrong_secret"), [
    ("acc", "ressecret"), ("ruser", "adminsecret"), ("carol", "adminsecret"), ("res", "adminsecret"),
    ("alice", "ressecret"),
])
async def test_another_owners_secret_is_rejected(client: Any, username: str, wrong_secret: str) -> None:
    body = await post(client, {"u": username, "hash": sha(username + wrong_secret)})
    assert status_error_of(body) == "Incorrect hash"


@pytest.mark.parametrize("username", ["res2", "r2user"])
async def test_owner_without_secret(client: Any, username: str) -> None:
    for hash_ in (sha(username), sha(username + ""), "x" * 40):
        body = await post(client, {"u": username, "hash": hash_})
        assert status_error_of(body) == "API must have Secret Key"


async def test_api_disabled_comes_after_user_lookup(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app(with_settings(enabled=False)))
    assert status_error_of(await post(client, signed("admin"))) == "API Requests are disabled"
    assert status_error_of(await post(client, {"u": "admin"})) == "API Requests are disabled"
    assert status_error_of(await post(client, {"u": "nobody"})) == "Access Denied"


async def test_get_is_disabled_by_default_after_user_and_api_checks(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app())
    for params, expected in [(signed("admin"), "GET Requests are disabled"),
                             ({"u": "admin", "hash": "bad"}, "GET Requests are disabled"),
                             ({"u": "nobody"}, "Access Denied")]:
        resp = await client.get(PATH, params=params)
        assert resp.status == 200
        assert status_error_of(await resp.read()) == expected
    off = await aiohttp_client(make_app(with_settings(enabled=False)))
    resp = await off.get(PATH, params=signed("admin"))
    assert status_error_of(await resp.read()) == "API Requests are disabled"


async def test_get_allowed_then_hash_still_checked(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app(with_settings(allow_get=True)))
    resp = await client.get(PATH, params=signed("bob"))
    assert calls_of(await resp.read()) == [4, 5, 9]
    resp = await client.get(PATH, params={"u": "bob", "hash": "0" * 40})
    assert status_error_of(await resp.read()) == "Incorrect hash"
    head = await client.head(PATH, params=signed("bob"))
    assert head.status == 200 and head.headers["Content-Type"] == "text/xml; charset=utf-8"


async def test_head_follows_the_get_switch(client: Any) -> None:
    resp = await client.head(PATH, params=signed("bob"))
    assert resp.status == 200  # the body (GET Requests are disabled) is not sent for HEAD
    assert await resp.read() == b""


async def test_disable_hash_check_needs_neither_hash_nor_secret(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app(with_settings(disable_hash_check=True)))
    assert calls_of(await post(client, {"u": "alice"})) == [1, 2, 5, 8]
    assert calls_of(await post(client, {"u": "alice", "hash": "junk"})) == [1, 2, 5, 8]
    assert message_of(await post(client, {"u": "res2"})) == "No data found..."
    assert status_error_of(await post(client, {"u": "nobody"})) == "Access Denied"


async def test_secret_only_hash_only_when_switched_on(aiohttp_client: Any) -> None:
    default = await aiohttp_client(make_app())
    assert status_error_of(await post(default, {"u": "alice", "hash": sha("adminsecret")})) == "Incorrect hash"
    compat = await aiohttp_client(make_app(with_settings(accept_secret_only_hash=True)))
    assert calls_of(await post(compat, {"u": "alice", "hash": sha("adminsecret")})) == [1, 2, 5, 8]
    assert calls_of(await post(compat, signed("alice"))) == [1, 2, 5, 8]
    assert status_error_of(await post(compat, {"u": "alice", "hash": sha("ressecret")})) == "Incorrect hash"


async def test_the_seeds_own_request(aiohttp_client: Any) -> None:
    """Seed: u=username, s_server=2, s_status=ringing, secret 456789, hash df29… (= sha1("456789"))."""
    refs = RefIndex.build(RefData(
        users=(User(0, "admin", "admin", api_secret_key="456789"), User(2, "username", "user", "Test", "User #1")),
        servers=(Server(1), Server(2))))
    query = "u=username&s_server=2&s_status=ringing&hash=df2983700ffecb52e6649f0cb3981b66537083a4"
    assert sha("456789") == "df2983700ffecb52e6649f0cb3981b66537083a4"
    strict = await aiohttp_client(make_app(rows=(), refs=refs))
    resp = await strict.post(f"{PATH}?{query}")
    assert status_error_of(await resp.read()) == "Incorrect hash"
    compat = await aiohttp_client(make_app(with_settings(accept_secret_only_hash=True), rows=(), refs=refs))
    resp = await compat.post(f"{PATH}?{query}")
    assert message_of(await resp.read()) == "No data found..."


# ------------------------------------------------------------------------------------------ transports
async def test_query_string_on_post(client: Any) -> None:
    resp = await client.post(PATH, params=signed("bob", s_status="answered"))
    assert calls_of(await resp.read()) == [4, 9]


async def test_urlencoded_form_body(client: Any) -> None:
    resp = await client.post(PATH, data=signed("bob", s_status="answered"))
    assert calls_of(await resp.read()) == [4, 9]


async def test_multipart_form_body(client: Any) -> None:
    form = FormData()
    for k, v in signed("bob", s_status="answered").items():
        form.add_field(k, v)
    form.add_field("s_server", "2", filename="x.txt", content_type="text/plain")  # file parts are ignored
    resp = await client.post(PATH, data=form)
    assert calls_of(await resp.read()) == [4, 9]


async def test_json_object_body(client: Any) -> None:
    resp = await client.post(PATH, json=signed("bob", s_status="answered"))
    assert calls_of(await resp.read()) == [4, 9]
    resp = await client.post(PATH, json={**signed("bob"), "s_server": 1, "p": None, "flag": True})
    assert calls_of(await resp.read()) == [4, 5, 9]


async def test_parameters_split_between_query_and_body(client: Any) -> None:
    resp = await client.post(PATH, params={"u": "bob"}, data={"hash": signed("bob")["hash"], "s_server": "1"})
    assert calls_of(await resp.read()) == [4, 5, 9]
    resp = await client.post(PATH, params={"u": "bob"}, data=json.dumps({"hash": signed("bob")["hash"]}),
                             headers={"Content-Type": "application/json"})
    assert calls_of(await resp.read()) == [4, 5, 9]


async def test_extra_parameters_such_as_password_are_ignored(client: Any) -> None:
    resp = await client.post(PATH, data={**signed("bob"), "p": "secret", "foo": "bar", "s_unknown": "1"})
    assert calls_of(await resp.read()) == [4, 5, 9]


async def test_rows_listing_is_complete() -> None:
    assert sorted(r.id for r in ROWS) == list(range(1, 10))
