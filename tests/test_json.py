"""``format=json``: the same content as the XML documents — same rows, fields, order and text — and the
same errors, as ``{"error": …}`` / ``{"message": …}`` with ``application/json``."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from api.jsonout import JsonRenderer, rows_json
from api.rows import CALL_FIELDS, RowFields
from collector.refdata.index import RefIndex
from collector.refdata.model import Server
from tests.api_support import NOW, PATH, REFS, ROWS, SECRETS, make_app, parse, signed, with_settings

JSON = PATH + "?format=json"
#: The keys MOR's XML has not, in their order after the XML ones (``phase``/``stale`` follow when set).
JSON_ONLY = ("server_id", "server_name", "start_time", "start_epoch", "answer_epoch", "did", "dst")


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
    assert [[(k, _as_xml_text(v)) for k, v in call.items() if k not in JSON_ONLY]
            for call in doc["active_calls"]] == _xml_rows(xml)
    by_id = {r.id: r for r in ROWS}
    for call in doc["active_calls"]:
        assert tuple(call)[-len(JSON_ONLY):] == JSON_ONLY  # the shared world has no phase / stale rows
        assert call["server_id"] == by_id[call["id"]].call.server_id
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


@pytest.mark.parametrize(("zone", "offset"),
                         [("UTC", 0), ("Europe/Vilnius", 2 * 3600), ("America/New_York", -5 * 3600)])
async def test_json_row_extras(aiohttp_client: Any, zone: str, offset: int) -> None:
    """Each extra against the world's own rows and reference data; start_time in the API zone (November:
    no daylight saving time in either zone), computed here by plain arithmetic, not by the API's code."""
    client = await aiohttp_client(make_app(with_settings(timezone=zone)))
    doc = await (await client.post(JSON, data=signed("admin"))).json()
    by_id = {r.id: r for r in ROWS}
    assert sorted(c["id"] for c in doc["active_calls"]) == sorted(by_id)
    for got in doc["active_calls"]:
        row = by_id[got["id"]]
        start = int(row.call.start_time) + offset
        day, second = divmod(start, 86400)
        assert day == int(NOW + offset) // 86400  # every row starts on the world's day
        midnight = time.strftime("%Y-%m-%d", time.gmtime(day * 86400))
        clock = f"{second // 3600:02d}:{second % 3600 // 60:02d}:{second % 60:02d}"
        assert got["start_time"] == f"{midnight} {clock}"
        assert got["server_name"] == REFS.servers[row.call.server_id].hostname
        assert got["start_epoch"] == row.call.start_time and isinstance(got["start_epoch"], float)
        assert got["answer_epoch"] == row.call.answer_time
        assert got["did"] == (row.info.did or None)
        assert got["dst"] == row.call.dst
    answered = [c for c in doc["active_calls"] if c["status"] == "Answered"]
    assert answered and all(isinstance(c["answer_epoch"], float) for c in answered)
    assert {c["did"] for c in doc["active_calls"]} == {None, "37052000001", "37052000003"}


async def test_json_row_extras_unknown_server_empty_and_broken_values(aiohttp_client: Any) -> None:
    base = ROWS[2]  # answered, no DID
    rows = (base._replace(id=1, call=base.call._replace(server_id=77, dst="")),
            base._replace(id=2, call=base.call._replace(start_time=float("inf"), answer_time=float("nan"))))
    client = await aiohttp_client(make_app(rows=rows))
    resp = await client.post(JSON, data=signed("admin"))
    body = await resp.read()
    assert b"Infinity" not in body and b"NaN" not in body  # strict JSON
    one, two = (await resp.json())["active_calls"]
    assert (one["server_id"], one["server_name"], one["dst"], one["did"]) == (77, None, None, None)
    assert (two["start_time"], two["start_epoch"], two["answer_epoch"]) == (None, None, None)
    # XML of the same rows: exactly as before (no new elements)
    xml = parse(await (await client.post(PATH, data=signed("admin"))).read())
    assert [[c.tag for c in call] for call in xml] == [list(CALL_FIELDS)] * 2


def test_cached_json_rows_are_the_uncached_bytes() -> None:
    """The per-row JSON cache (active_calls_get, stream snapshots) against ``rows_json`` itself: same
    bytes for every row shape, at several clocks, after a row changes and after a server is renamed."""
    refs = [REFS]
    down: set[int] = set()
    fields = RowFields(ZoneInfo("Europe/Vilnius"), disconnected=lambda: down, refs=lambda: refs[0])
    renderer = JsonRenderer(fields)
    answered = ROWS[2]
    rows = [*ROWS, answered._replace(id=20, call=answered.call._replace(phase="on_hold", server_id=77)),
            answered._replace(id=21, call=answered.call._replace(answer_time=float("nan"), dst="\u2063\"x\\"))]
    for now in (NOW, NOW + 61.5, NOW + 3600):
        assert renderer.render_rows(rows, now) == rows_json(fields, rows, now)
    down.add(1)  # server 1 goes down: its rows say stale, from the cache too
    body = renderer.render_rows(rows, NOW)
    assert body == rows_json(fields, rows, NOW) and b'"stale":true' in body
    rows[0] = rows[0]._replace(call=rows[0].call._replace(dst="999"))  # a changed row: a new object
    assert renderer.render_rows(rows, NOW) == rows_json(fields, rows, NOW)
    renamed = RefIndex.build(dataclasses.replace(REFS.data, servers=(Server(1, "renamed"), Server(2, "pbx2"))))
    refs[0] = renamed
    body = renderer.render_rows(rows, NOW)
    assert body == rows_json(fields, rows, NOW) and b'"server_name":"renamed"' in body
    assert renderer.render_rows([], NOW) == rows_json(fields, [], NOW) == b'{"active_calls":[]}'
    doc = json.loads(body)
    assert [c["id"] for c in doc["active_calls"]] == [r.id for r in rows]
    assert doc["active_calls"][-1]["dst"] == "\u2063\"x\\"  # the placeholder in a value is only text
