"""Issue 13: a CoreShowChannels answer is applied whole at CoreShowChannelsComplete, and a call first seen in
a resync gets the same caller and dst whatever the order of the items. Built from the real answers recorded
in the reconnect traces (``*.part2.ami``: the recorder's resync after its own reconnect)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.ami.framing import AmiMessage
from collector.tools.timeline import iter_trace_messages
from collector.tracking.calls import CallView
from collector.tracking.tracker import CallTracker
from tests.helpers import trace_paths

SERVER = 1


def _answer(path: object) -> tuple[list[AmiMessage], AmiMessage, list[AmiMessage], AmiMessage, list[AmiMessage]]:
    """(messages before the answer, its start response, its items, its Complete, messages after)."""
    msgs = list(iter_trace_messages([path]))  # type: ignore[list-item]
    start = next(i for i, m in enumerate(msgs) if m.get("EventList") == "start")
    done = next(i for i, m in enumerate(msgs) if m.get("Event") == "CoreShowChannelsComplete")
    items = [m for m in msgs[start + 1:done] if m.get("Event") == "CoreShowChannel"]
    assert len(items) == done - start - 1, "the recorded answer is not interleaved with events"
    return msgs[:start], msgs[start], items, msgs[done], msgs[done + 1:]


def _table(trk: CallTracker) -> dict[str, CallView]:
    return {c.linkedid: c for c in trk.calls(SERVER)}


@pytest.mark.parametrize("name", ["ami_reconnect", "dev_load_drop"])
def test_partial_answer_changes_nothing_until_complete(name: str) -> None:
    first, second = trace_paths(name)
    before, start, items, done, _after = _answer(second)
    n = len(items)
    assert n >= 10
    final: dict[str, CallView] | None = None
    for k in range(n + 1):
        trk = CallTracker()
        for msg in iter_trace_messages([first]):
            trk.apply(SERVER, msg)
        trk.apply_many(SERVER, before)
        table = _table(trk)
        trk.apply(SERVER, start)
        changes = trk.apply_many(SERVER, items[:k])
        assert changes == [] and _table(trk) == table, f"{k} of {n} items changed the table"
        if k == n:
            assert trk.apply(SERVER, done), "the complete answer changes the table at once"
            final = _table(trk)
    assert final is not None and final != {}


def _first_seen(items: Sequence[Mapping[str, str]], start: AmiMessage,
                done: AmiMessage) -> dict[str, tuple[str, str, str]]:
    trk = CallTracker()
    trk.apply(SERVER, start)
    trk.apply_many(SERVER, items)
    trk.apply(SERVER, done)
    return {c.linkedid: (c.uniqueid, c.channel, c.dst) for c in trk.calls(SERVER)}


_LOAD = _answer(trace_paths("dev_load_drop")[1])
_RECONNECT = _answer(trace_paths("ami_reconnect")[1])


def _check_callers(seen: dict[str, tuple[str, str, str]], items: list[AmiMessage]) -> None:
    by_uid = {m["Uniqueid"]: m for m in items}
    for lid, (uid, channel, dst) in seen.items():
        if lid in by_uid:
            assert uid == lid, (lid, channel)
        assert by_uid[uid].get("Application") != "AppDial" and not channel.endswith(";2"), (lid, channel)
        assert dst == by_uid[uid]["Exten"], (lid, channel, dst)


def test_ring_group_call_first_seen_keeps_its_dst() -> None:
    _before, start, items, done, _after = _LOAD
    # the real answer lists Local/102@ringgroup-…;2 (Exten 102) before the caller (Exten 500)
    seen = _first_seen(items, start, done)
    ring = {lid: v for lid, v in seen.items() if any("@ringgroup" in m["Channel"] and m["Linkedid"] == lid
                                                       for m in items)}
    assert len(ring) == 3
    assert {dst for _u, _c, dst in ring.values()} == {"500"}
    _check_callers(seen, items)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.permutations(_LOAD[2]), st.permutations(_RECONNECT[2]))
def test_first_seen_caller_and_dst_whatever_the_order(load: list[AmiMessage], reconnect: list[AmiMessage]) -> None:
    for (_b, start, items, done, _a), shuffled in ((_LOAD, load), (_RECONNECT, reconnect)):
        expected = _first_seen(items, start, done)
        got = _first_seen(shuffled, start, done)
        assert got == expected
        _check_callers(got, items)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.permutations(_LOAD[2]))
def test_without_the_linkedid_channel_the_caller_is_the_oldest_not_a_dialled_leg(items: list[AmiMessage]) -> None:
    # a call whose Linkedid channel left (a transfer): the caller is the oldest listed leg by Duration that no
    # Dial created and that is not a Local ;2 half
    _b, start, _items, done, _a = _LOAD
    lid = "1795703752.4609"  # IAX2/201-8401 (caller, 500) → Local/201@ringgroup;1/;2 → IAX2/201-1155
    rest = [m for m in items if m["Uniqueid"] != lid]
    extra = AmiMessage({**next(m for m in items if m["Uniqueid"] == "1795703752.4615"),
                        "Uniqueid": "1795703752.4700", "Channel": "SIP/103-00000c00", "Application": "Dial",
                        "Exten": "777", "Duration": "00:00:04"})
    seen = _first_seen([*rest, extra], start, done)
    uid, channel, dst = seen[lid]
    assert (uid, channel, dst) == ("1795703752.4700", "SIP/103-00000c00", "777")


def test_drop_server_then_resync_gives_back_the_same_answer_times() -> None:
    # a server unreachable past stale_after: its calls leave the table, and come back with the reconnect's
    # resync keeping their answer times (the resync alone would stamp them with its own time)
    first, second = trace_paths("ami_reconnect")
    kept, dropped = CallTracker(), CallTracker()
    for msg in iter_trace_messages([first]):
        kept.apply(SERVER, msg)
        dropped.apply(SERVER, msg)
    up = _table(dropped)
    assert any(c.answer_time is not None for c in up.values())
    changes = dropped.drop_server(SERVER)
    assert sorted(c.key[1] for c in changes if c.kind == "removed") == sorted(up) and dropped.calls() == []
    assert dropped.drop_server(SERVER) == [] and dropped.drop_server(99) == []
    before, start, items, done, _after = _answer(second)
    for trk in (kept, dropped):
        trk.apply_many(SERVER, [*before, start, *items, done])
    again, reference = _table(dropped), _table(kept)
    assert again and again.keys() == reference.keys()
    for lid, call in again.items():
        assert call.answer_time == reference[lid].answer_time and call.dst == reference[lid].dst, lid
        assert call.start_time == reference[lid].start_time, lid


def test_forget_server() -> None:
    trk = CallTracker()
    for msg in iter_trace_messages([trace_paths("ami_reconnect")[0]]):
        trk.apply(SERVER, msg)
    assert trk.calls(SERVER)
    assert all(c.kind == "removed" for c in trk.drop_server(SERVER, park=False))
    assert trk.calls() == [] and trk.now(SERVER) == 0.0
