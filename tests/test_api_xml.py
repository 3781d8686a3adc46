"""Rendering: exact bytes of each envelope, element order, empty elements, escaping, time zone,
duration from the injected clock, ordering by id, and the per-row cache never serving stale rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from lxml import etree

from api.errors import Envelope
from api.rows import CALL_FIELDS, DST_FIELDS, RowFields
from api.xml import RowRenderer, render_status
from collector.live.table import LiveCall
from collector.refdata.model import Enrichment
from collector.tracking.calls import CallStatus
from tests.api_support import (
    NOW,
    PATH,
    ROWS,
    calls_of,
    make_app,
    parse,
    row_dict,
    signed,
    with_settings,
)

ROW1 = b"""<?xml version="1.0" encoding="UTF-8"?>
<page>
  <active_call>
    <id>1</id>
    <uniqueid>1795700001.1</uniqueid>
    <status>Ringing</status>
    <answer_time/>
    <duration/>
    <src>306984327345</src>
    <user_id>4</user_id>
    <user>Alice &lt;&amp;&gt; "Smith"</user>
    <src_device_id>10</src_device_id>
    <device_type>SIP</device_type>
    <device_extension>101</device_extension>
    <device_name>101</device_name>
    <device_istrunk>0</device_istrunk>
    <device_ani>0</device_ani>
    <localized_dst>63727007886</localized_dst>
    <direction_code>PHL</direction_code>
    <direction_name>Philippines</direction_name>
    <destination_name>Philippines proper</destination_name>
    <provider_id>1</provider_id>
    <provider_name>prov1</provider_name>
    <channel>SIP/101-00000001</channel>
  </active_call>
</page>
"""

ROW4 = b"""<?xml version="1.0" encoding="UTF-8"?>
<page>
  <active_call>
    <id>4</id>
    <uniqueid>1795700004.4</uniqueid>
    <status>Answered</status>
    <answer_time>2026-11-26 13:49:50</answer_time>
    <duration>10</duration>
    <src>306912345678</src>
    <user_id/>
    <user/>
    <src_device_id/>
    <device_type/>
    <device_extension/>
    <device_name/>
    <device_istrunk/>
    <device_ani/>
    <localized_dst>37052000001</localized_dst>
    <direction_code>LTU</direction_code>
    <direction_name>Lithuania</direction_name>
    <destination_name>Lithuania fixed</destination_name>
    <provider_id/>
    <provider_name/>
    <channel>SIP/prov1-00000004</channel>
    <dst_user_id>5</dst_user_id>
    <dst_user>bob</dst_user>
    <dst_device_id>12</dst_device_id>
    <dst_device_type>SIP</dst_device_type>
    <dst_device_extension>102</dst_device_extension>
    <dst_device_name>102</dst_device_name>
    <dst_device_istrunk>0</dst_device_istrunk>
    <dst_device_ani>1</dst_device_ani>
  </active_call>
</page>
"""


async def fetch(client: Any, username: str, **filters: str) -> bytes:
    resp = await client.post(PATH, data=signed(username, **filters))
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/xml; charset=utf-8"
    return bytes(await resp.read())


async def test_exact_bytes_outbound_ringing(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app())
    body = await fetch(client, "alice", s_user_id="4", s_device="10")
    assert body == ROW1
    parse(body)


async def test_exact_bytes_inbound_answered_with_dst(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app())
    body = await fetch(client, "bob", s_did="37052000001")
    assert body == ROW4
    parse(body)


async def test_exact_envelopes(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app())
    assert await fetch(client, "bob", s_server="3") == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<page>\n  <status>\n    <message>No data found...</message>\n'
        b'  </status>\n</page>\n')
    assert await fetch(client, "bob", s_did="9") == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<page>\n  <status>\n    <error>Did was not found</error>\n'
        b'  </status>\n</page>\n')
    resp = await client.post(PATH, data={"u": "bob"})
    assert await resp.read() == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<status>\n  <error>Incorrect hash</error>\n</status>\n')


async def test_every_row_has_the_seed_element_order(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app())
    root = parse(await fetch(client, "admin"))
    by_id = {r.id: r for r in ROWS}
    assert [int(c.findtext("id") or 0) for c in root] == list(range(1, 10))  # ordered by id
    for el in root:
        row = by_id[int(el.findtext("id") or 0)]
        tags = [c.tag for c in el]
        assert tags == list(CALL_FIELDS + DST_FIELDS if row.info.has_dst else CALL_FIELDS)
        assert all(len(c) == 0 and not c.attrib for c in el)  # flat, text only
        values = row_dict(el)
        assert values["uniqueid"] == row.call.uniqueid and values["channel"] == row.call.channel
        assert values["status"] == row.call.status.value
        assert (values["answer_time"] is None) is (row.call.answer_time is None)
        assert (values["duration"] is None) is (row.call.answer_time is None)
        assert values["user_id"] == (None if row.info.user_id is None else str(row.info.user_id))


async def test_hostile_text_is_escaped_and_forbidden_chars_are_stripped(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app())
    body = await fetch(client, "bob", s_user_id="5", s_status="answered")
    assert b"&lt;b&gt;&amp;\"'\xc3\xbc\xe2\x98\x8e</src>" in body
    el = parse(body)[0]
    assert row_dict(el)["src"] == "<b>&\"'ü☎"  # \x07 and the lone surrogate are gone
    alice = parse(await fetch(client, "alice", s_user_id="4", s_device="10"))[0]
    assert row_dict(alice)["user"] == 'Alice <&> "Smith"'


async def test_every_field_survives_any_characters(aiohttp_client: Any) -> None:
    nasty = "\x00\x01\x08\x0b\x0c\x0e\x1f\ud800\udfff\ufffe\uffff<&>\"'\t\r\n ok 日本 \U0001F600"
    info = Enrichment(user=nasty, device_type=nasty, device_extension=nasty, device_name=nasty,
                      localized_dst=nasty, direction_code=nasty, direction_name=nasty, destination_name=nasty,
                      provider_name=nasty, dst_user=nasty, dst_device_type=nasty, dst_device_extension=nasty,
                      dst_device_name=nasty, user_id=4, has_dst=True, dst_user_id=4)
    call = ROWS[1].call._replace(uniqueid=nasty, channel=nasty, src=nasty)
    client = await aiohttp_client(make_app(rows=(LiveCall(1, call, info),)))
    el = parse(await fetch(client, "alice"))[0]
    expected = "<&>\"'\t\r\n ok 日本 \U0001F600"  # lxml writes CR as &#13;, so it survives
    for tag in ("uniqueid", "src", "user", "channel", "dst_device_name", "direction_name"):
        assert row_dict(el)[tag] == expected, tag


async def test_answer_time_zone_and_duration(aiohttp_client: Any) -> None:
    ts = NOW - 65.4
    cases = {"UTC": "2026-11-26 13:48:54", "Europe/Vilnius": "2026-11-26 15:48:54",
             "America/New_York": "2026-11-26 08:48:54"}
    for zone, expected in cases.items():
        client = await aiohttp_client(make_app(with_settings(timezone=zone)))
        el = parse(await fetch(client, "alice", s_user_id="4", s_device="11"))[0]
        assert row_dict(el)["answer_time"] == expected
        assert row_dict(el)["duration"] == "65"
    local = await aiohttp_client(make_app(with_settings(timezone=None)))
    el = parse(await fetch(local, "alice", s_user_id="4", s_device="11"))[0]
    assert row_dict(el)["answer_time"] == datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


async def test_duration_follows_the_injected_clock_despite_the_row_cache(aiohttp_client: Any) -> None:
    from api.app import create_app
    from api.deps import ApiDeps
    from tests.api_support import REFS

    now = [NOW]
    rows: list[tuple[LiveCall, ...]] = [ROWS]
    app = create_app(ApiDeps(rows=lambda: rows[0], refs=lambda: REFS, settings=with_settings(),
                             clock=lambda: now[0]))
    client = await aiohttp_client(app)

    async def durations() -> dict[int, str | None]:
        root = parse(await fetch(client, "admin"))
        return {int(c.findtext("id") or 0): row_dict(c)["duration"] for c in root}

    first = await durations()
    assert first[2] == "65" and first[1] is None and first[9] == "3600"
    now[0] = NOW + 100
    second = await durations()
    assert second[2] == "165" and second[1] is None and second[9] == "3700"
    now[0] = NOW - 10_000  # a clock behind the answer time never yields a negative duration
    assert (await durations())[2] == "0"
    now[0] = NOW
    # the live table replaces a row object when the call changes: the cache must notice
    answered = ROWS[1]._replace(call=ROWS[1].call._replace(status=CallStatus.ANSWERED, answer_time=NOW - 7))
    rows[0] = (answered, *ROWS[2:], ROWS[0])
    root = parse(await fetch(client, "admin", s_user_id="4", s_device="10"))
    assert row_dict(root[0])["status"] == "Answered" and row_dict(root[0])["duration"] == "7"
    assert row_dict(root[0])["answer_time"] == "2026-11-26 13:49:53"


def test_render_status_shapes() -> None:
    assert render_status("x", Envelope.STATUS) == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<status>\n  <error>x</error>\n</status>\n')
    root = etree.fromstring(render_status("a<&>\x01b", Envelope.PAGE))
    assert root.findtext("status/error") == "a<&>b"


def test_unrenderable_times_become_empty_elements() -> None:
    row = ROWS[2]._replace(call=ROWS[2].call._replace(answer_time=1e300))
    root = parse(RowRenderer(RowFields(None)).render_calls([row], NOW))
    assert row_dict(root[0])["answer_time"] is None
    assert row_dict(root[0])["duration"] == "0"
    nan = ROWS[2]._replace(call=ROWS[2].call._replace(answer_time=float("nan")))
    root = parse(RowRenderer(RowFields(None)).render_calls([nan], NOW))
    assert row_dict(root[0])["answer_time"] is None and row_dict(root[0])["duration"] is None


def test_cache_is_pruned_when_rows_leave() -> None:
    renderer = RowRenderer(RowFields(None))
    many = [ROWS[0]._replace(id=i) for i in range(1, 3000)]
    renderer.render_calls(many, NOW)
    renderer.prune(many[:10], 10)
    renderer.render_calls(many[:10], NOW)
    assert len(renderer._cache) == 10  # noqa: SLF001 - white-box check of the bound


async def test_rows_are_ordered_by_id_whatever_the_table_order(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app(rows=tuple(reversed(ROWS))))
    assert calls_of(await fetch(client, "admin")) == list(range(1, 10))


async def test_background_prerender_warms_the_cache(aiohttp_client: Any) -> None:
    import asyncio

    from api.deps import RENDERER_KEY

    app = make_app(with_settings(prerender_interval=0.02))
    await aiohttp_client(app)
    for _ in range(100):
        await asyncio.sleep(0.02)
        if len(app[RENDERER_KEY]._cache) == len(ROWS):  # noqa: SLF001
            break
    assert sorted(app[RENDERER_KEY]._cache) == list(range(1, 10))  # noqa: SLF001


async def test_prerender_failure_is_logged_once_per_streak(aiohttp_client: Any, caplog: Any) -> None:
    import asyncio
    import logging

    from api.app import create_app
    from api.deps import ApiDeps
    from tests.api_support import REFS

    def broken() -> tuple[LiveCall, ...]:
        raise RuntimeError("no table")

    app = create_app(ApiDeps(rows=broken, refs=lambda: REFS, settings=with_settings(prerender_interval=0.01)))
    with caplog.at_level(logging.ERROR, logger="api.app"):
        await aiohttp_client(app)
        await asyncio.sleep(0.2)
    assert sum("prerender failed" in r.getMessage() for r in caplog.records) == 1
