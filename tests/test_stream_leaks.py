"""Issue #14 (A.1): a call that stops being visible to a scoped stream client must not show that client
where it went. ``call_removed`` carries the row as that client saw it last, never the new state."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import aiohttp
from hypothesis import given, settings
from hypothesis import strategies as st

from api.auth import Principal, Role
from api.changes import Change, ChangeHub
from api.jsonout import row_object
from api.rows import RowFields
from api.scope import Scope
from api.stream import _Client
from collector.live.table import LiveCall
from tests.api_support import NOW, REFS, ROWS, signed
from tests.test_stream import STREAM, Sse, World, served  # noqa: F401  (fixture)

MARK = "LEAKED-STATE"


def _elsewhere(row: LiveCall) -> LiveCall:
    """The call transferred to res2's user (device 701, res2's trunk): visible to admin and res2 only."""
    info = replace(row.info, user_id=7, user=MARK, owner_id=6, src_device_id=16, device_name=MARK,
                   provider_id=3, provider_name=MARK, provider_owner_id=6, has_dst=True, dst_user_id=7,
                   dst_owner_id=6, dst_user=MARK, dst_device_id=16, did=MARK)
    return LiveCall(row.id, row.call, info)


async def test_call_moved_out_of_scope_leaks_nothing_for_any_role(served: Any) -> None:  # noqa: F811
    world = World()
    base = await served(world.app())
    by_id = {r.id: r for r in ROWS}
    # (who, filters, the row they see that moves away)
    cases = [("admin", {"s_provider": "1"}, 1), ("res", {}, 3), ("alice", {}, 2)]
    async with aiohttp.ClientSession() as http:
        clients: list[tuple[str, Sse, int]] = []
        for who, f, row_id in cases:
            resp = await http.get(base + STREAM, params=signed(who, **f))
            sse = Sse(resp)
            assert (await sse.next()).event == "snapshot"
            assert row_id in sse.table, who
            clients.append((who, sse, row_id))
        seen = {who: dict(sse.table) for who, sse, _r in clients}
        for _who, _sse, row_id in clients:
            world.put(_elsewhere(by_id[row_id]))
        for who, sse, row_id in clients:
            await sse.until_id(world.hub.head)
            removed = [ev for ev in sse.events if ev.event == "call_removed"]
            assert row_id in [ev.data["id"] for ev in removed], who
            for ev in removed:
                assert ev.data == seen[who][ev.data["id"]], who  # what this client saw last
            for ev in sse.events:
                assert MARK not in json.dumps(ev.data), (who, ev.event)
            sse.resp.close()


# ----------------------------------------------------------------------------- property
_FIELDS = RowFields(None)
_WHO = ("admin", "res", "ruser", "alice", "bob", "carol", "odd")
_PARTIES = st.sampled_from([0, 2, 3, 4, 5, 7, 8])  # user ids a call's parties can have


def _client(username: str, s_status: str | None) -> tuple[_Client, Any]:
    user = REFS.users_by_username[username]
    principal = Principal(Role.of(user.usertype), user)
    preds = []
    visible = Scope(principal, REFS).row_predicate()
    if visible is not None:
        preds.append(visible)
    if s_status is not None:
        preds.append(lambda row: row.call.status.value.lower() == s_status)
    client = _Client.__new__(_Client)
    client.predicates = tuple(preds)
    client._fields = _FIELDS
    client._clock = lambda: NOW
    return client, (lambda row: all(p(row) for p in preds))


def _parse(chunk: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in chunk.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line)
        if "data" in fields:
            out.append((fields["event"], json.loads(fields["data"])))
    return out


_OP = st.tuples(st.sampled_from(["put", "put", "put", "drop"]), st.integers(1, 12), _PARTIES, _PARTIES,
                st.booleans(), st.booleans())


@settings(max_examples=150, deadline=None)
@given(who=st.sampled_from(_WHO), s_status=st.sampled_from([None, "answered", "ringing"]),
       ops=st.lists(_OP, max_size=40))
def test_stream_view_is_the_filtered_table_and_removed_is_what_was_seen(
        who: str, s_status: str | None, ops: list[tuple[str, int, int, int, bool, bool]]) -> None:
    client, visible = _client(who, s_status)
    template = ROWS[1]
    rows: dict[int, LiveCall] = {}
    hub = ChangeHub(first_seq=0)
    view: dict[int, dict[str, Any]] = {}
    for op, rid, caller, callee, has_dst, answered in ops:
        if op == "drop":
            if rid not in rows:
                continue
            hub.publish("removed", rows.pop(rid))
        else:
            u, d = REFS.users[caller], REFS.users[callee]
            info = replace(template.info, user_id=caller, user=u.username, owner_id=u.owner_id,
                           has_dst=has_dst, dst_user_id=callee if has_dst else None,
                           dst_owner_id=d.owner_id if has_dst else None, dst_user=d.username if has_dst else "")
            call = template.call._replace(status=type(template.call.status)("Answered" if answered else "Ringing"),
                                          answer_time=NOW - 1 if answered else None)
            row = LiveCall(rid, call, info)
            hub.publish("updated" if rid in rows else "added", row)
            rows[rid] = row
        change: Change = hub.since(hub.head - 1)[-1]  # type: ignore[index]
        for event, data in _parse(client._frames([change])):
            if event == "call_removed":
                assert view.pop(data["id"]) == data  # exactly what this client saw last
            else:
                assert visible(rows[data["id"]])
                view[data["id"]] = data
        expected = {r.id: row_object(_FIELDS, r, NOW) for r in rows.values() if visible(r)}
        assert view == expected
