"""``active_calls_totals``: counts equal what ``active_calls_get`` lists, for every role, filter and
``group_by``; same errors as ``active_calls_get`` plus the ``group_by`` one; XML and JSON agree."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import pytest
from lxml import etree

from api.totals import BAD_GROUP_BY, GROUP_BY
from collector.refdata.index import RefIndex
from tests.api_support import (
    PATH,
    REFS,
    ROWS,
    SECRETS,
    error_of,
    make_app,
    message_of,
    parse,
    signed,
    status_error_of,
    with_settings,
)

TOTALS = "/billing/api/active_calls_totals"
USERS = sorted(SECRETS)


def _key_name(call: etree._Element, group_by: str) -> tuple[str, str]:
    """The group of one listed call, read from active_calls_get's own XML (independent of totals.py)."""
    t = lambda tag: call.findtext(tag) or ""  # noqa: E731
    if group_by == "user":
        return t("user_id"), t("user")
    if group_by == "device":
        return t("src_device_id"), t("device_name")
    if group_by == "provider":
        return t("provider_id"), t("provider_name")
    if group_by == "direction":
        return t("direction_code"), t("direction_name")
    row_id = int(t("id"))
    row = next(r for r in ROWS if r.id == row_id)
    if group_by == "did":
        return str(row.info.did_id or ""), row.info.did
    if group_by == "destination_group":
        gid = row.info.destinationgroup_id
        return str(gid or ""), REFS.destinationgroups[gid].name if gid else ""
    assert group_by == "server"
    return str(row.call.server_id), REFS.servers[row.call.server_id].hostname


async def _listed(client: Any, params: dict[str, str]) -> list[etree._Element]:
    body = await (await client.post(PATH, data=params)).read()
    root = parse(body)
    if root.find("status/message") is not None:
        assert message_of(body) == "No data found..."
        return []
    return list(root.iterfind("active_call"))


def _groups(root: etree._Element) -> dict[tuple[str, str], tuple[int, int]]:
    return {(g.findtext("key") or "", g.findtext("name") or ""):
            (int(g.findtext("total") or -1), int(g.findtext("answered") or -1)) for g in root.iterfind("groups/group")}


@pytest.mark.parametrize("group_by", sorted(GROUP_BY))
@pytest.mark.parametrize("username", USERS)
async def test_totals_equal_counts_of_active_calls_get(aiohttp_client: Any, username: str, group_by: str) -> None:
    client = await aiohttp_client(make_app())
    calls = await _listed(client, signed(username))
    resp = await client.post(TOTALS, data=signed(username, group_by=group_by))
    assert resp.status == 200 and resp.content_type == "text/xml"
    root = parse(await resp.read())
    assert [c.tag for c in root] == ["totals", "group_by", "groups"]
    assert int(root.findtext("totals/total") or -1) == len(calls)
    assert int(root.findtext("totals/answered") or -1) == sum(c.findtext("status") == "Answered" for c in calls)
    assert root.findtext("group_by") == group_by
    expected_total: Counter[tuple[str, str]] = Counter(_key_name(c, group_by) for c in calls)
    expected_ans: Counter[tuple[str, str]] = Counter(_key_name(c, group_by) for c in calls
                                                     if c.findtext("status") == "Answered")
    assert _groups(root) == {k: (n, expected_ans[k]) for k, n in expected_total.items()}
    totals = [int(g.findtext("total") or 0) for g in root.iterfind("groups/group")]
    assert totals == sorted(totals, reverse=True)


@pytest.mark.parametrize("params", [{"s_status": "answered"}, {"s_provider": "1"}, {"s_server": "2"},
                                    {"s_country": "lithuania"}, {"s_source": "30%"}, {"s_did": "%"}])
async def test_totals_apply_the_filters(aiohttp_client: Any, params: dict[str, str]) -> None:
    client = await aiohttp_client(make_app())
    calls = await _listed(client, signed("admin", **params))
    root = parse(await (await client.post(TOTALS, data=signed("admin", **params))).read())
    assert [c.tag for c in root] == ["totals"]
    assert int(root.findtext("totals/total") or -1) == len(calls)


async def test_no_calls_is_zero_not_no_data(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app())
    root = parse(await (await client.post(TOTALS, data=signed("odd", group_by="provider"))).read())
    assert root.findtext("totals/total") == "0" and root.findtext("totals/answered") == "0"
    groups = root.find("groups")
    assert groups is not None and len(groups) == 0


async def test_group_by_errors_and_precedence(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app())
    body = await (await client.post(TOTALS, data=signed("admin", group_by="planet"))).read()
    assert error_of(body) == BAD_GROUP_BY
    assert error_of(await (await client.post(TOTALS, data=signed("admin", group_by="User"))).read()) == BAD_GROUP_BY
    # a seed filter error wins over ours
    body = await (await client.post(TOTALS, data=signed("admin", group_by="planet", s_server="99"))).read()
    assert error_of(body) == "Server was not found"
    # group_by from the query string, the body, JSON; first non-empty wins
    body = await (await client.post(TOTALS + "?group_by=&group_by=server", data=signed("admin", group_by="x"))).read()
    assert parse(body).findtext("group_by") == "server"
    body = await (await client.post(TOTALS, json=signed("admin", group_by="provider"))).read()
    assert parse(body).findtext("group_by") == "provider"
    long = "u" * 2000
    assert error_of(await (await client.post(TOTALS, data=signed("admin", group_by=long))).read()) == BAD_GROUP_BY


async def test_same_auth_and_transport_errors_as_active_calls_get(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app())
    assert status_error_of(await (await client.post(TOTALS, data={"u": "admin", "hash": "0" * 40})).read()) \
        == "Incorrect hash"
    assert status_error_of(await (await client.post(TOTALS, data={"u": "nobody"})).read()) == "Access Denied"
    assert status_error_of(await (await client.get(TOTALS, params=signed("admin")))
                           .read()) == "GET Requests are disabled"
    resp = await client.put(TOTALS, data=signed("admin"))
    assert resp.status == 405 and resp.headers["Allow"] == "GET, HEAD, POST"
    client2 = await aiohttp_client(make_app(with_settings(allow_get=True)))
    root = parse(await (await client2.get("/api/active_calls_totals", params=signed("admin"))).read())
    assert root.findtext("totals/total") == "9"


async def test_totals_json_equals_xml(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app())
    for username in USERS:
        for group_by in [None, *GROUP_BY]:
            params = signed(username, **({"group_by": group_by} if group_by else {}))
            root = parse(await (await client.post(TOTALS, data=params)).read())
            resp = await client.post(TOTALS + "?format=json", data=params)
            assert resp.content_type == "application/json"
            doc = await resp.json()
            assert doc["totals"] == {"total": int(root.findtext("totals/total") or -1),
                                     "answered": int(root.findtext("totals/answered") or -1)}
            if group_by is None:
                assert set(doc) == {"totals"}
                continue
            assert doc["group_by"] == group_by
            assert [(str(g["key"]) if g["key"] is not None else "", g["name"] or "", g["total"], g["answered"])
                    for g in doc["groups"]] == [
                (g.findtext("key") or "", g.findtext("name") or "", int(g.findtext("total") or -1),
                 int(g.findtext("answered") or -1)) for g in root.iterfind("groups/group")]


def _limited_refs() -> RefIndex:
    """The shared world with limits on some users, devices, providers and DIDs (others: no limit)."""
    limits = {"users": {4: 100, 3: 2}, "devices": {10: 5}, "providers": {1: 30}, "dids": {1: 4}}
    data = dataclasses.replace(REFS.data, **{
        table: tuple(dataclasses.replace(r, call_limit=limits[table][r.id]) if r.id in limits[table] else r
                     for r in getattr(REFS.data, table)) for table in limits})
    return RefIndex.build(data)


async def test_groups_of_limited_records_carry_call_limit(aiohttp_client: Any) -> None:
    refs = _limited_refs()
    client = await aiohttp_client(make_app(refs=refs))
    tables: dict[str, dict[int, Any]] = {"user": refs.users, "device": refs.devices, "provider": refs.providers,
                                         "did": refs.dids}
    for group_by in GROUP_BY:
        params = signed("admin", group_by=group_by)
        root = parse(await (await client.post(TOTALS, data=params)).read())
        doc = await (await client.post(TOTALS + "?format=json", data=params)).json()
        assert len(doc["groups"]) == len(root.findall("groups/group")) > 0
        for el, g in zip(root.iterfind("groups/group"), doc["groups"], strict=True):
            table = tables.get(group_by)
            record = table.get(g["key"]) if table is not None and g["key"] is not None else None
            want = record.call_limit if record is not None else None
            tags = [c.tag for c in el]
            if table is None:  # servers, directions, destination groups have no limit: no key at all
                assert "call_limit" not in g and "call_limit" not in tags, group_by
                continue
            assert g["call_limit"] == want, (group_by, g)
            if want is None:  # XML: the element only when a limit is set
                assert tags == ["key", "name", "total", "answered"], (group_by, g)
            else:
                assert tags == ["key", "name", "total", "answered", "call_limit"], (group_by, g)
                assert el.findtext("call_limit") == str(want)
        if group_by in tables:  # the world's limits show up (row 1 and 2: alice, device 10, prov1 …)
            assert any(g["call_limit"] is not None for g in doc["groups"]), group_by
    # the shared world has no limits: every group of a limited kind says null, XML has no element
    plain = await aiohttp_client(make_app())
    doc = await (await plain.post(TOTALS + "?format=json", data=signed("admin", group_by="user"))).json()
    assert [g["call_limit"] for g in doc["groups"]] == [None] * len(doc["groups"])
    body = await (await plain.post(TOTALS, data=signed("admin", group_by="user"))).read()
    assert b"call_limit" not in body
