"""The Active Calls page in headless Chromium against a real aiohttp app (``tests.ui_support``): sorting by
every column equals the API's rows sorted by the page's rule, search and status narrow the rows, counters
and every group panel equal ``active_calls_totals``, the dropdowns list what the entities endpoint lets
each role filter by, wall mode fits ≥ 40 rows at 1920×1080, and a dropped stream is shown within 5 s and
resumed (Last-Event-ID) by itself. Screenshots land in ``test-artifacts/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from collector.tracking.calls import CallStatus
from tests.api_support import NOW, ROWS, SECRETS, sha
from tests.browser import Cdp, chromium, chromium_binary
from tests.ui_page import (
    SORT_COLUMNS,
    api_rows,
    api_totals,
    expected_order,
    open_page,
    poll,
    screenshot,
    search_matches,
)
from tests.ui_support import CuttableRelay, many_rows, ui_server

ADMIN = {"u": "admin", "hash": sha("admin" + SECRETS["admin"])}


def auth_of(user: str) -> dict[str, str]:
    return {"u": user, "hash": sha(user + SECRETS[user])}


def page_url(base: str, user: str = "admin", query: str = "") -> str:
    return f"{base}/ui{query}#u={user}&hash={auth_of(user)['hash']}"


def group_rows(totals: dict[str, Any]) -> list[list[str]]:
    return [[g["name"] or "(none)",
             f"{g['total']} / {g['call_limit']}" if g.get("call_limit") is not None else str(g["total"]),
             str(g["answered"])] for g in totals["groups"]]


async def type_into(cdp: Cdp, selector: str, text: str) -> None:
    """Focus and type as a person would (one input event per key)."""
    await cdp.eval(f"document.querySelector({json.dumps(selector)}).focus()")
    await cdp.eval(f"document.querySelector({json.dumps(selector)}).select()")
    for ch in text:
        await cdp.call("Input.insertText", text=ch)


async def choose(cdp: Cdp, select_id: str, value: str) -> None:
    await cdp.eval(f"(() => {{ const s = document.getElementById({json.dumps(select_id)}); "
                   f"s.value = {json.dumps(value)}; s.dispatchEvent(new Event('change')); }})()")


async def test_sort_search_counters_and_groups(tmp_path: Path) -> None:
    chromium_binary()
    async with ui_server() as world, chromium(tmp_path) as cdp, aiohttp.ClientSession() as http:
        rows = await api_rows(http, world.base, ADMIN)
        assert len(rows) == 9
        await open_page(cdp, page_url(world.base))
        totals = await api_totals(http, world.base, ADMIN, group_by="server")
        state = await poll(cdp, lambda s: s["conn"] == "live" and len(s["ids"]) == len(rows) and s["groups"])
        assert state["total"] == str(totals["totals"]["total"])
        assert state["answered"] == str(totals["totals"]["answered"])
        assert state["group"] == "server" and state["groups"] == group_rows(totals)
        # default: time, longest first
        assert state["ids"] == expected_order(rows, "time", descending=True)
        # uniqueid and channel on hover; ringing time looks unlike talk time
        looks = json.loads(await cdp.eval("""JSON.stringify([...document.querySelectorAll('#calls tbody tr:not(.pad)')]
          .map(tr => [Number(tr.dataset.id), tr.title, getComputedStyle(tr.querySelector('td.time')).color,
                      getComputedStyle(tr.querySelector('td.time'), '::before').content]))"""))
        by_id = {int(r["id"]): r for r in rows}
        for row_id, title, _color, _before in looks:
            assert by_id[row_id]["uniqueid"] in title and by_id[row_id]["channel"] in title
        ring = {(color, before) for row_id, _t, color, before in looks if by_id[row_id]["status"] == "Ringing"}
        talk = {(color, before) for row_id, _t, color, before in looks if by_id[row_id]["status"] == "Answered"}
        assert len(ring) == 1 and len(talk) == 1 and ring != talk and '"ringing "' in next(iter(ring))[1]
        # ringing time counts from start_epoch, talk time from the answer, both on the server's clock
        cells = json.loads(await cdp.eval("""JSON.stringify([...document.querySelectorAll('#calls tbody tr:not(.pad)')]
          .map(tr => [Number(tr.dataset.id), tr.querySelector('td.time').textContent,
                      tr.querySelector('td.start').textContent, tr.querySelector('td.answer').textContent]))"""))
        for row_id, shown, start, answer in cells:
            r = by_id[row_id]
            assert start == r["start_time"][11:] and answer == (r["answer_time"] or "")[11:]
            m, sec = shown.split(":")[-2:]
            seconds = int(m) * 60 + int(sec) + (3600 * int(shown.split(":")[0]) if shown.count(":") == 2 else 0)
            since = NOW - (r["start_epoch"] if r["status"] == "Ringing" else r["answer_epoch"])
            assert int(since) - 1 <= seconds <= since + 60, (r, shown)  # the server clock, known to ±1 s
        await screenshot(cdp, "ui-normal.png")

        for col in SORT_COLUMNS:
            for _click in range(2):
                await cdp.eval(f"document.querySelector('#calls th[data-col={col}]').click()")
                state = await poll(cdp, lambda s: True)
                direction = await cdp.eval(f"document.querySelector('#calls th[data-col={col}]').dataset.dir")
                assert direction in ("asc", "desc")
                want = expected_order(rows, col, descending=direction == "desc")
                assert state["ids"] == want, f"sorted by {col} {direction}"
                assert f"sort={col}" in state["search"] or (col == "time" and direction == "desc")

        # typing narrows the rows as you type (a word at a time), status too
        for text in ("lith", "lithuania fixed", "prov1-0000000", "carol"):
            await type_into(cdp, "#f-search", text)
            want_ids = search_matches(rows, text)
            state = await poll(cdp, lambda s: set(s["ids"]) == want_ids)  # noqa: B023 (awaited here)
            assert 0 < len(state["ids"]) < len(rows), text
        await type_into(cdp, "#f-search", "")
        await cdp.call("Input.dispatchKeyEvent", type="keyDown", key="Backspace", code="Backspace",
                       windowsVirtualKeyCode=8)
        await poll(cdp, lambda s: len(s["ids"]) == len(rows))
        await choose(cdp, "f-status", "ringing")
        ringing = {int(r["id"]) for r in rows if r["status"] == "Ringing"}
        state = await poll(cdp, lambda s: set(s["ids"]) == ringing)
        assert "status=ringing" in state["search"]
        assert state["total"] == "9", "counters count the whole stream, not the page-side filter"
        await choose(cdp, "f-status", "")

        # every group panel equals active_calls_totals with that group_by
        for group in ("provider", "user", "direction", "destination_group", "server"):
            await cdp.eval(f"document.querySelector('#group-tabs button[data-group={group}]').click()")
            totals = await api_totals(http, world.base, ADMIN, group_by=group)
            state = await poll(cdp, lambda s: s["group"] == group  # noqa: B023 (awaited here)
                               and s["groups"] == group_rows(totals))  # noqa: B023
            assert state["groups"], group

        # the view survives a reload from its URL (a bookmarked wall screen)
        await cdp.eval("document.querySelector('#calls th[data-col=src]').click()")
        await cdp.eval("document.querySelector('#group-tabs button[data-group=provider]').click()")
        search = await cdp.eval("location.search")
        assert "sort=src" in search and "group=provider" in search and "hash" not in search
        await cdp.call("Page.navigate", url=page_url(world.base, query=search))
        state = await poll(cdp, lambda s: s["conn"] == "live" and len(s["ids"]) == len(rows)
                           and s["group"] == "provider")
        direction = await cdp.eval("document.querySelector('#calls th[data-col=src]').dataset.dir")
        assert state["ids"] == expected_order(rows, "src", descending=direction == "desc")


async def test_dropdowns_list_what_each_role_may_filter_by(tmp_path: Path) -> None:
    chromium_binary()
    selects = {"f-user": ("users", "id"), "f-device": ("devices", "id"), "f-provider": ("providers", "id"),
               "f-server": ("servers", "id"), "f-direction": ("directions", "name"),
               "f-dgroup": ("destination_groups", "id"), "f-did": ("dids", "number")}
    ids = json.dumps(list(selects))
    options = f"JSON.stringify(Object.fromEntries({ids}.map(id => [id, [...document.getElementById(id).options]" \
              ".map(o => o.value).filter(Boolean)])))"
    seen: dict[str, dict[str, list[str]]] = {}
    async with ui_server() as world, chromium(tmp_path) as cdp, aiohttp.ClientSession() as http:
        for user in ("admin", "res", "alice"):
            async with http.post(world.base + "/billing/api/active_calls_entities?format=json",
                                 data=auth_of(user)) as resp:
                entities = await resp.json()
            want = {sid: [str(e[field]) for e in entities[lst]] for sid, (lst, field) in selects.items()}
            await open_page(cdp, page_url(world.base, user))
            await poll(cdp, lambda s: s["conn"] == "live")
            got = await poll(cdp, lambda s: s == want, expression=options)  # noqa: B023 (awaited here)
            seen[user] = got
        assert len(seen["admin"]["f-user"]) > len(seen["res"]["f-user"]) >= len(seen["alice"]["f-user"]) >= 1
        assert seen["admin"]["f-provider"] != seen["res"]["f-provider"]

        # a dropdown filters on the server: rows, counters and panels follow the s_* filter
        await open_page(cdp, page_url(world.base))
        await poll(cdp, lambda s: s["conn"] == "live" and len(s["ids"]) == 9)
        await choose(cdp, "f-provider", "1")
        rows = await api_rows(http, world.base, ADMIN, s_provider="1")
        totals = await api_totals(http, world.base, ADMIN, s_provider="1", group_by="server")
        assert 0 < len(rows) < 9
        state = await poll(cdp, lambda s: sorted(s["ids"]) == sorted(int(r["id"]) for r in rows)
                           and s["total"] == str(totals["totals"]["total"]) and s["groups"] == group_rows(totals))
        assert "s_provider=1" in state["search"]
        # a device brings its user (MOR's s_device works only with s_user_id)
        await choose(cdp, "f-provider", "")
        await choose(cdp, "f-device", "10")
        rows = await api_rows(http, world.base, ADMIN, s_user_id="4", s_device="10")
        assert 0 < len(rows) < 9
        state = await poll(cdp, lambda s: sorted(s["ids"]) == sorted(int(r["id"]) for r in rows))
        assert "s_user_id=4" in state["search"] and "s_device=10" in state["search"]


async def test_wall_mode_fits_40_rows_at_1920x1080(tmp_path: Path) -> None:
    chromium_binary()
    fits = """JSON.stringify((() => {
      const box = document.getElementById('scroller').getBoundingClientRect();
      const head = document.querySelector('#calls thead').getBoundingClientRect();
      const rows = [...document.querySelectorAll('#calls tbody tr:not(.pad)')].filter(tr => {
        const r = tr.getBoundingClientRect(); return r.top >= head.bottom - 1 && r.bottom <= box.bottom + 1; });
      return {wall: document.body.classList.contains('wall'), fully_visible: rows.length,
              bg: getComputedStyle(document.body).backgroundColor, live: document.getElementById('conn').dataset.state,
              signin: getComputedStyle(document.getElementById('signin')).display,
              clock: document.getElementById('clock').textContent,
              updated: document.getElementById('updated').textContent};
    })())"""
    async with ui_server(many_rows(200)) as world, chromium(tmp_path) as cdp:
        await open_page(cdp, page_url(world.base, query="?wall=1"), 1920, 1080)
        state = await poll(cdp, lambda s: s["live"] == "live" and s["fully_visible"] >= 40 and s["clock"] != ""
                           and s["updated"] != "", expression=fits)
        assert state["wall"] and state["signin"] == "none"
        assert state["bg"] == "rgb(13, 17, 23)", "dark"
        await screenshot(cdp, "ui-wall.png")
        # the toggle leaves wall mode (and the URL flag) again
        await cdp.eval("document.getElementById('wall-toggle').click()")
        state = await poll(cdp, lambda s: not s["wall"], expression=fits)
        assert "wall" not in await cdp.eval("location.search")


async def test_disconnect_is_shown_and_the_stream_resumes(tmp_path: Path) -> None:
    chromium_binary()
    async with ui_server() as world, chromium(tmp_path) as cdp:
        await open_page(cdp, page_url(world.base))
        await poll(cdp, lambda s: s["conn"] == "live" and len(s["model"]) == 9)
        await world.stop()  # the daemon goes away: its streams end
        state = await poll(cdp, lambda s: s["conn"] == "down" and "reconnecting" in s["banner"], timeout=5.0)
        assert "disconnected" in state["connText"]
        # meanwhile calls change: a call answers, one ends, one starts
        ringing = next(r for r in world.rows.values() if r.call.status is CallStatus.RINGING)
        world.put(ringing._replace(call=ringing.call._replace(status=CallStatus.ANSWERED, answer_time=NOW - 1)))
        world.drop(next(iter(world.rows)))
        new = ROWS[0]._replace(id=99, call=ROWS[0].call._replace(uniqueid="new.99", linkedid="new.99"))
        world.put(new)
        await world.start(world.make_app())  # back on the same port
        want = sorted([r.call.uniqueid, r.call.status.value] for r in world.rows.values())
        state = await poll(cdp, lambda s: s["conn"] == "live" and sorted(s["model"]) == want, timeout=30.0)
        assert state["banner"] == ""
        assert state["snapshots"] == 1, "resumed with Last-Event-ID: the missed changes, no new snapshot"


async def test_rows_stay_put_while_the_table_changes_around_them(tmp_path: Path) -> None:
    """Scrolled into the middle of 200 calls: calls above end, calls below answer, new ones ring, a visible
    call changes something that is not its sort key — every row on screen stays exactly where it was."""
    chromium_binary()
    where = """JSON.stringify(Object.fromEntries([...document.querySelectorAll('#calls tbody tr:not(.pad)')]
      .filter(tr => { const r = tr.getBoundingClientRect(), box = document.getElementById('scroller')
        .getBoundingClientRect(); return r.top >= box.top + 30 && r.bottom <= box.bottom; })
      .map(tr => [tr.dataset.id, [Math.round(tr.getBoundingClientRect().top), tr.cells[4].textContent]])))"""
    async with ui_server(many_rows(200)) as world, chromium(tmp_path) as cdp:
        await open_page(cdp, page_url(world.base))
        await poll(cdp, lambda s: s["conn"] == "live" and len(s["model"]) == 200)
        await cdp.eval("document.getElementById('scroller').scrollTop = 60 * window.activeCalls.table.rowHeight")
        order = json.loads(await cdp.eval("JSON.stringify(window.activeCalls.table.ids())"))
        before = await poll(cdp, lambda s: len(s) > 10, expression=where)
        visible = [int(i) for i in before]
        assert min(order.index(i) for i in visible) >= 55, "scrolled into the middle"
        above = order[:5]
        below_ringing = [i for i in order[order.index(visible[-1]) + 1:]
                         if world.rows[i].call.status is CallStatus.RINGING][:5]
        for row_id in above:
            world.drop(row_id)
        for row_id in below_ringing:
            r = world.rows[row_id]
            world.put(r._replace(call=r.call._replace(status=CallStatus.ANSWERED, answer_time=NOW - 0.5)))
        for n in range(5):
            new = ROWS[1]._replace(id=1000 + n, call=ROWS[1].call._replace(uniqueid=f"new{n}", start_time=NOW))
            world.put(new)
        touched = visible[len(visible) // 2]
        r = world.rows[touched]
        world.put(r._replace(call=r.call._replace(src="555000111")))  # not the time column's key
        await poll(cdp, lambda s: len(s["model"]) == 200 and ["new4", "Ringing"] in s["model"])
        after = await poll(cdp, lambda s: s.get(str(touched), [0, ""])[1] == "555000111", expression=where)
        assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}


async def test_a_silently_cut_link_is_shown_within_5_s_and_resumed(tmp_path: Path) -> None:
    """The network between page and daemon dies without a FIN or a reset (a relay that swallows every byte
    of the stream's connection): the page's watchdog, fed by the server's 2 s keepalives, says so within
    5 s, and the page reconnects by itself once the network is back, resuming with Last-Event-ID."""
    chromium_binary()
    async with ui_server() as world, CuttableRelay(world.port) as relay, chromium(tmp_path) as cdp:
        await open_page(cdp, page_url(relay.base))
        await poll(cdp, lambda s: s["conn"] == "live" and len(s["model"]) == 9)
        assert relay.cut() >= 1, "the page's stream goes through the relay"
        state = await poll(cdp, lambda s: s["conn"] != "live" and "reconnecting" in s["banner"], timeout=5.0)
        assert "disconnected" in state["connText"]
        # while the link is down a call ends; the new connection (the network is back) brings it
        world.drop(next(iter(world.rows)))
        want = sorted([r.call.uniqueid, r.call.status.value] for r in world.rows.values())
        state = await poll(cdp, lambda s: s["conn"] == "live" and sorted(s["model"]) == want, timeout=30.0)
        assert state["banner"] == ""
        assert state["snapshots"] == 1, "resumed with Last-Event-ID: the missed change, no new snapshot"
