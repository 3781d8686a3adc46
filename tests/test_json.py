"""``format=json``: the same content as the XML documents — same rows, fields, order and text — and the
same errors, as ``{"error": …}`` / ``{"message": …}`` with ``application/json``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api_support import PATH, ROWS, SECRETS, make_app, parse, signed, with_settings

JSON = PATH + "?format=json"


def _xml_rows(body: bytes) -> list[list[tuple[str, str | None]]]:
    root = parse(body)
    return [[(c.tag, c.text) for c in call] for call in root.iterfind("active_call")]


def _as_xml_text(value: object) -> str | None:
    return None if value is None else str(value)


@pytest.mark.parametrize("username", sorted(SECRETS))
@pytest.mark.parametrize("params", [{}, {"s_status": "answered"}, {"s_destination": "%"}, {"s_server": "1"}])
async def test_rows_json_equal_xml(aiohttp_client: Any, username: str, params: dict[str, str]) -> None:
    client = await aiohttp_client(make_app())
    xml = await (await client.post(PATH, data=signed(username, **params))).read()
    resp = await client.post(JSON, data=signed(username, **params))
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/json; charset=utf-8"
    doc = await resp.json()
    root = parse(xml)
    message = root.findtext("status/message")
    if message is not None:
        assert doc == {"message": message}
        return
    assert list(doc) == ["active_calls"]
    # same fields, same order, same text (numbers as JSON numbers, absent as null)
    assert [[(k, _as_xml_text(v)) for k, v in call.items() if k != "server_id"]
            for call in doc["active_calls"]] == _xml_rows(xml)
    by_id = {r.id: r for r in ROWS}
    for call in doc["active_calls"]:
        assert list(call)[-1] == "server_id" and call["server_id"] == by_id[call["id"]].call.server_id
        assert isinstance(call["id"], int)
        assert call["duration"] is None or isinstance(call["duration"], int)


async def test_hostile_text_is_cleaned_as_in_xml(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app())
    doc = await (await client.post(JSON, data=signed("bob"))).json()
    row9 = next(c for c in doc["active_calls"] if c["id"] == 9)
    assert row9["src"] == "<b>&\"'ü☎"  # BEL and the lone surrogate removed, like the XML


@pytest.mark.parametrize(("params", "key", "text"), [
    ({"u": "nobody"}, "error", "Access Denied"),
    ({"u": "admin", "hash": "x"}, "error", "Incorrect hash"),
    (signed("admin", s_server="99"), "error", "Server was not found"),
    (signed("admin", s_status="busy"), "error", "Status value must be Ringing or Answered"),
    (signed("odd"), "message", "No data found..."),
])
async def test_errors_as_json(aiohttp_client: Any, params: dict[str, str], key: str, text: str) -> None:
    client = await aiohttp_client(make_app())
    for path in (JSON, PATH + "?format=JSON", "/billing/api/active_calls_totals?format=json"):
        resp = await client.post(path, data=params)
        if key == "message" and "totals" in path:
            continue  # totals answer 0/0 instead
        assert resp.status == 200 and resp.content_type == "application/json"
        assert await resp.json() == {key: text}


async def test_transport_errors_as_json(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app(with_settings(max_body=100)))
    resp = await client.put(JSON, data=signed("admin"))
    assert resp.status == 405 and resp.content_type == "application/json"
    assert await resp.json() == {"error": "Method Not Allowed"}
    resp = await client.post(JSON, data={"u": "admin", "pad": "x" * 500})
    assert resp.status == 413 and await resp.json() == {"error": "Request Entity Too Large"}
    resp = await client.post(JSON, data=b"{broken", headers={"Content-Type": "application/json"})
    assert await resp.json() == {"error": "Invalid request body"}


async def test_format_only_from_query_string_and_default_xml(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app())
    resp = await client.post(PATH, data=signed("admin", format="json"))
    assert resp.content_type == "text/xml"  # documented: the body does not choose the format
    resp = await client.post(PATH + "?format=xml", data=signed("admin"))
    assert resp.content_type == "text/xml"
    resp = await client.post(PATH + "?format=&format=json", data=signed("admin"))
    assert resp.content_type == "application/json"
