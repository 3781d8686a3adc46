"""``active_calls_entities``: per role exactly the ids the ``s_*`` filters accept (spelled out by hand from
the shared world in tests/api_support.py, then cross-checked against the filters themselves), the entry
fields and names, call limits, the per-list cap, and the same auth and transport rules (JSON always)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from api.auth import Principal, Role
from api.entities import ENTITIES_PATH, ENTITY_CAP, entities_of
from api.scope import Scope
from collector.refdata.index import RefIndex
from collector.refdata.model import Did, User
from tests.api_support import PATH, REFS, SECRETS, make_app, signed, with_settings

ALL_USERS = set(range(10))
ALL_DEVICES = set(range(10, 17))
ALL_PROVIDERS = {1, 2, 3}
ALL_DIDS = {1, 2, 3, 4, 5}
#: username → (users, devices, providers, DIDs) it may filter by, from the world's ownership:
#: res (2) owns ruser (3) and carol (8); res2 (6) owns r2user (7); every other user is the admin's.
EXPECTED: dict[str, tuple[set[int], set[int], set[int], set[int]]] = {
    "admin": (ALL_USERS, ALL_DEVICES, ALL_PROVIDERS, ALL_DIDS),
    "acc": (ALL_USERS, ALL_DEVICES, ALL_PROVIDERS, ALL_DIDS),
    # himself and his users; their devices (13: ruser, 14: his own, 15: carol); his provider 2; DIDs he
    # resells (2, 4) — DID 5 routes to r2user's device, another reseller's
    "res": ({2, 3, 8}, {13, 14, 15}, {2}, {2, 4}),
    "ruser": ({3}, {13}, {2}, {2}),  # a reseller's user: the reseller's providers
    "carol": ({8}, {15}, {2}, {4}),
    "alice": ({4}, {10, 11}, ALL_PROVIDERS, set()),  # the admin's user: every provider, no DID of hers
    "bob": ({5}, {12}, ALL_PROVIDERS, {1}),
    "odd": ({9}, set(), ALL_PROVIDERS, set()),  # an unknown usertype: a plain user of the admin
}


async def _entities(client: Any, username: str, **params: str) -> dict[str, Any]:
    resp = await client.post(ENTITIES_PATH, data=signed(username, **params))
    assert resp.status == 200 and resp.content_type == "application/json"
    doc: dict[str, Any] = await resp.json()
    return doc


@pytest.mark.parametrize("username", sorted(SECRETS))
async def test_each_role_sees_exactly_what_it_may_filter_by(aiohttp_client: Any, username: str) -> None:
    client = await aiohttp_client(make_app())
    doc = await _entities(client, username)
    assert list(doc) == ["users", "devices", "providers", "servers", "directions", "destination_groups", "dids"]
    users, devices, providers, dids = EXPECTED[username]
    assert {u["id"] for u in doc["users"]} == users
    assert {d["id"] for d in doc["devices"]} == devices
    assert {p["id"] for p in doc["providers"]} == providers
    assert {d["id"] for d in doc["dids"]} == dids
    # every caller may filter by every server, direction and destination group
    assert [s["id"] for s in doc["servers"]] == [3, 1, 2]  # by name: idle, pbx1, pbx2
    assert [d["code"] for d in doc["directions"]] == ["TCD", "LTU", "PHL", "GBR"]  # Chad … United Kingdom
    assert [g["name"] for g in doc["destination_groups"]] == ["Asia", "Baltic", "UK mobile", "Unused"]


@pytest.mark.parametrize("username", ["res", "alice", "carol", "admin"])
async def test_listed_iff_the_filter_accepts_it(aiohttp_client: Any, username: str) -> None:
    """The promise itself: an id is listed exactly when its s_* filter is not answered "not found"."""
    client = await aiohttp_client(make_app())
    doc = await _entities(client, username)

    async def accepted(**params: str) -> bool:
        body = await (await client.post(PATH + "?format=json", data=signed(username, **params))).json()
        return "error" not in body  # a list, or "No data found..." as a message

    for user in REFS.data.users:
        assert await accepted(s_user_id=str(user.id)) == (user.id in {u["id"] for u in doc["users"]}), user.id
    for device in REFS.data.devices:
        ok = await accepted(s_user_id=str(device.user_id), s_device=str(device.id))
        assert ok == (device.id in {d["id"] for d in doc["devices"]}), device.id
    for provider in REFS.data.providers:
        assert await accepted(s_provider=str(provider.id)) == (provider.id in {p["id"] for p in doc["providers"]})
    for did in REFS.data.dids:
        assert await accepted(s_did=did.did) == (did.id in {d["id"] for d in doc["dids"]}), did.did
    for server in REFS.data.servers:
        assert await accepted(s_server=str(server.id))
    for group in REFS.data.destinationgroups:
        assert await accepted(s_destination_group=str(group.id))
    for direction in doc["directions"]:
        assert await accepted(s_country=direction["name"])


async def test_entry_fields_names_and_order(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app())
    doc = await _entities(client, "admin")
    assert "truncated" not in doc
    alice = next(u for u in doc["users"] if u["id"] == 4)
    assert alice == {"id": 4, "name": 'Alice <&> "Smith"', "username": "alice", "call_limit": None}
    bob = next(u for u in doc["users"] if u["id"] == 5)
    assert bob["name"] == "bob"  # no first/last name: the username, as MOR's nice_user
    names = [u["name"] for u in doc["users"]]
    assert names == sorted(names, key=str.casefold)
    assert next(d for d in doc["devices"] if d["id"] == 10) == {"id": 10, "name": "SIP/101", "user_id": 4,
                                                                "call_limit": None}
    assert next(d for d in doc["devices"] if d["id"] == 14)["name"] == "SIP/res-dev (200)"  # extension ≠ peer
    assert [d["name"] for d in doc["devices"]][:2] == ["IAX2/201", "SIP/101"]
    assert doc["providers"] == [{"id": 1, "name": "prov1", "call_limit": None},
                                {"id": 3, "name": "res2prov", "call_limit": None},
                                {"id": 2, "name": "resprov", "call_limit": None}]
    assert doc["servers"][0] == {"id": 3, "name": "idle"}
    assert doc["directions"][0] == {"code": "TCD", "name": "Chad"}
    assert doc["destination_groups"][0] == {"id": 1, "name": "Asia"}
    assert [d["number"] for d in doc["dids"]] == sorted(d.did for d in REFS.data.dids)
    assert set(doc["dids"][0]) == {"id", "number", "call_limit"}
    assert "destinations" not in doc


async def test_call_limits_are_listed(aiohttp_client: Any) -> None:
    data = REFS.data
    refs = RefIndex.build(dataclasses.replace(
        data,
        users=tuple(dataclasses.replace(u, call_limit=100) if u.id == 4 else u for u in data.users),
        devices=tuple(dataclasses.replace(d, call_limit=3) if d.id == 11 else d for d in data.devices),
        providers=tuple(dataclasses.replace(p, call_limit=30) if p.id == 1 else p for p in data.providers),
        dids=tuple(dataclasses.replace(d, call_limit=2) if d.id == 1 else d for d in data.dids)))
    client = await aiohttp_client(make_app(refs=refs))
    doc = await _entities(client, "admin")
    limits = {kind: {e["id"]: e["call_limit"] for e in doc[kind] if e["call_limit"] is not None}
              for kind in ("users", "devices", "providers", "dids")}
    assert limits == {"users": {4: 100}, "devices": {11: 3}, "providers": {1: 30}, "dids": {1: 2}}


def test_each_list_is_capped() -> None:
    admin = Principal(Role.ADMIN, REFS.users[0])
    cut = entities_of(Scope(admin, REFS), cap=2)
    assert cut.truncated and cut.doc["truncated"] is True
    assert [len(cut.doc[k]) for k in ("users", "devices", "providers", "servers", "directions",
                                      "destination_groups", "dids")] == [2] * 7
    first = entities_of(Scope(admin, REFS)).doc
    assert cut.doc["users"] == first["users"][:2]  # the first ones by name: cut after sorting
    whole = entities_of(Scope(admin, REFS), cap=10)
    assert not whole.truncated and "truncated" not in whole.doc
    alice = Principal(Role.USER, REFS.users[4])
    # her lists: 1 user, 2 devices, 3 providers; and the 3 servers, 4 directions, 4 groups everyone has
    assert not entities_of(Scope(alice, REFS), cap=4).truncated
    assert entities_of(Scope(alice, REFS), cap=3).truncated


async def test_the_cap_through_the_endpoint(aiohttp_client: Any) -> None:
    many = tuple(Did(100 + i, f"4{i:09d}", user_id=5, device_id=12) for i in range(ENTITY_CAP + 1))
    users = REFS.data.users + tuple(User(1000 + i, f"extra{i}", "user", owner_id=2) for i in range(5))
    refs = RefIndex.build(dataclasses.replace(REFS.data, dids=REFS.data.dids + many, users=users))
    client = await aiohttp_client(make_app(refs=refs))
    doc = await _entities(client, "admin")
    assert doc["truncated"] is True and len(doc["dids"]) == ENTITY_CAP
    assert doc["dids"][0]["number"] == "37052000001" and len(doc["users"]) == 15  # only the DIDs were cut
    res = await _entities(client, "res")  # the reseller sees his 2 DIDs and his 5 new users: nothing cut
    assert "truncated" not in res and len(res["dids"]) == 2 and len(res["users"]) == 8


async def test_auth_methods_and_errors_are_json(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app())
    for path in (ENTITIES_PATH, ENTITIES_PATH + "?format=xml"):  # JSON whatever format says
        resp = await client.post(path, data={"u": "admin", "hash": "0" * 40})
        assert resp.content_type == "application/json" and await resp.json() == {"error": "Incorrect hash"}
    resp = await client.post(ENTITIES_PATH, data={"u": "nobody"})
    assert await resp.json() == {"error": "Access Denied"}
    resp = await client.get(ENTITIES_PATH, params=signed("admin"))
    assert await resp.json() == {"error": "GET Requests are disabled"}
    resp = await client.put(ENTITIES_PATH, data=signed("admin"))
    assert resp.status == 405 and resp.headers["Allow"] == "GET, HEAD, POST"
    assert await resp.json() == {"error": "Method Not Allowed"}
    resp = await client.post(ENTITIES_PATH, json=signed("alice"))  # a JSON body, as active_calls_get takes
    assert {u["id"] for u in (await resp.json())["users"]} == {4}
    big = await aiohttp_client(make_app(with_settings(max_body=100)))
    resp = await big.post(ENTITIES_PATH, data={"u": "admin", "pad": "x" * 500})
    assert resp.status == 413 and await resp.json() == {"error": "Request Entity Too Large"}
    open_get = await aiohttp_client(make_app(with_settings(allow_get=True)))
    resp = await open_get.get(ENTITIES_PATH, params=signed("carol"))
    assert resp.status == 200 and {u["id"] for u in (await resp.json())["users"]} == {8}
