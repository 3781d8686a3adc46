"""The durable table (``activecalls`` in a real SQLite file): after every successful flush it holds exactly
the live table's rows (ids, keys, every column), a failed flush loses nothing, and a flush writes only
what it must (calls born and gone between two flushes cost no statement)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.live.durable import ACTIVECALLS_COLUMNS, DurableTable
from collector.live.table import LiveCall, LiveTable
from collector.refdata.model import Enrichment
from collector.tracking.calls import CallChange, CallStatus, CallView, Leg

_FAIL_TRIGGERS = ("INSERT", "UPDATE", "DELETE")


def _view(linkedid: str, version: int, server_id: int = 1) -> CallView:
    """A call whose every column moves with ``version`` (so a missed rewrite shows)."""
    legs = (Leg(linkedid, f"SIP/a-{linkedid}", 6, False, 100.0 + version),
            Leg(f"{linkedid}.{version}", f"Local/{version}@ctx-0001;1", 5 if version % 2 else 6, True, 100.5))
    return CallView(server_id, linkedid, linkedid, f"SIP/a-{linkedid}", f"SIP/b-{version}",
                    CallStatus.ANSWERED if version % 2 else CallStatus.RINGING, f"10{version}", f'Name "{version}"',
                    f"370{version}", 100.0, 101.0 + version if version % 2 else None, legs)


def _enrich(call: CallView) -> Enrichment:
    n = int(call.src[2:])
    return Enrichment(src_device_id=n, dst_device_id=n + 1, provider_id=None, did_id=n + 3, user_id=n + 4,
                      owner_id=0, localized_dst=call.dst, destination_prefix=call.dst[:3])


def _table(path: Path) -> list[LiveCall]:
    """What a restarting daemon would load."""
    durable = DurableTable(path, LiveTable())
    try:
        return durable.load()
    finally:
        durable.close()


def _state(live: LiveTable) -> list[tuple[int, CallView]]:
    # enrichment is not stored (a restart recomputes it): ids and views must match
    return sorted(((r.id, r.call) for r in live.rows()), key=lambda x: x[0])


def _same(db: list[LiveCall], live: LiveTable) -> None:
    assert [(r.id, r.call) for r in db] == _state(live)


def _raw(path: Path) -> dict[int, dict[str, object]]:
    conn = sqlite3.connect(str(path))
    conn.row_factory = sqlite3.Row
    try:
        return {r["id"]: dict(r) for r in conn.execute("SELECT * FROM activecalls")}
    finally:
        conn.close()


def _set_failing(path: Path, on: bool) -> None:
    """Make every write to the table fail (a real SQLite error, like a full disk), or stop doing so."""
    conn = sqlite3.connect(str(path))
    try:
        for op in _FAIL_TRIGGERS:
            conn.execute(f"DROP TRIGGER IF EXISTS fail_{op.lower()}")
            if on:
                conn.execute(f"CREATE TRIGGER fail_{op.lower()} BEFORE {op} ON activecalls "
                             "BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
        conn.commit()
    finally:
        conn.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Path, LiveTable, DurableTable]]:
    path = tmp_path / "collector.sqlite"
    live = LiveTable(_enrich)
    durable = DurableTable(path, live)
    yield path, live, durable
    durable.close()


def test_every_column_is_written_and_read_back(store: tuple[Path, LiveTable, DurableTable]) -> None:
    path, live, durable = store
    live.apply([CallChange("added", (1, "a"), _view("a", 1)), CallChange("added", (2, "b"), _view("b", 2, 2))])
    assert durable.flush_sync() == 2
    raw = _raw(path)
    assert set(raw[1]) == set(ACTIVECALLS_COLUMNS)
    row = live.get((1, "a"))
    assert row is not None
    c, i = row.call, row.info
    assert raw[1] == {
        "id": 1, "server_id": 1, "uniqueid": "a", "linkedid": "a", "channel": "SIP/a-a", "dstchannel": "SIP/b-1",
        "src": "101", "dst": "3701", "status": "Answered", "start_time": 100.0, "answer_time": 102.0,
        "src_device_id": i.src_device_id, "dst_device_id": i.dst_device_id, "provider_id": None,
        "did_id": i.did_id, "user_id": i.user_id, "owner_id": 0, "localized_dst": "3701", "prefix": "370",
        "legs_json": raw[1]["legs_json"]}
    assert c.src_name == 'Name "1"'
    _same(_table(path), live)


def test_update_rewrites_in_place_and_remove_deletes(store: tuple[Path, LiveTable, DurableTable]) -> None:
    path, live, durable = store
    live.apply([CallChange("added", (1, "a"), _view("a", 1)), CallChange("added", (1, "b"), _view("b", 1))])
    durable.flush_sync()
    live.apply([CallChange("updated", (1, "a"), _view("a", 2)), CallChange("removed", (1, "b"), None)])
    assert live.dirty == {(1, "a"): 1, (1, "b"): 2}  # each key → the id the table holds for it
    assert durable.flush_sync() == 2
    raw = _raw(path)
    assert list(raw) == [1] and raw[1]["status"] == "Ringing" and raw[1]["answer_time"] is None
    _same(_table(path), live)


def test_a_call_born_and_gone_between_flushes_costs_no_statement(store: tuple[Path, LiveTable, DurableTable]) -> None:
    path, live, durable = store
    live.apply([CallChange("added", (1, "short"), _view("short", 1)),
                CallChange("updated", (1, "short"), _view("short", 2)),
                CallChange("removed", (1, "short"), None)])
    assert live.dirty == {}
    assert durable.flush_sync() == 0 and durable.rows_written == 0
    assert _raw(path) == {}


def test_a_key_back_as_a_new_call_replaces_the_old_row(store: tuple[Path, LiveTable, DurableTable]) -> None:
    path, live, durable = store
    live.apply([CallChange("added", (1, "a"), _view("a", 1))])
    durable.flush_sync()
    live.apply([CallChange("removed", (1, "a"), None), CallChange("added", (1, "a"), _view("a", 3))])
    assert durable.flush_sync() == 2  # the old id deleted, the new one inserted
    assert list(_raw(path)) == [2]
    _same(_table(path), live)


def test_a_failed_flush_loses_nothing(store: tuple[Path, LiveTable, DurableTable]) -> None:
    path, live, durable = store
    live.apply([CallChange("added", (1, k), _view(k, 1)) for k in "abc"])
    durable.flush_sync()
    before = _raw(path)
    live.apply([CallChange("updated", (1, "a"), _view("a", 2)), CallChange("removed", (1, "b"), None),
                CallChange("added", (1, "d"), _view("d", 1))])
    _set_failing(path, True)
    with pytest.raises(sqlite3.DatabaseError, match="disk says no"):
        durable.flush_sync()
    assert _raw(path) == before  # rolled back
    # changes while the disk is failing: they must not make the retry forget what the table really holds
    live.apply([CallChange("updated", (1, "d"), _view("d", 2)), CallChange("added", (1, "e"), _view("e", 1)),
                CallChange("updated", (1, "c"), _view("c", 4)), CallChange("removed", (1, "a"), None)])
    _set_failing(path, False)
    durable.flush_sync()
    _same(_table(path), live)


def test_load_drops_a_damaged_row_from_the_table(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "collector.sqlite"
    live = LiveTable()
    durable = DurableTable(path, live)
    live.apply([CallChange("added", (1, k), _view(k, 1)) for k in "ab"])
    durable.flush_sync()
    durable.close()
    conn = sqlite3.connect(str(path))
    conn.execute("UPDATE activecalls SET legs_json = '{\"legs\": [[1]]}' WHERE id = 2")
    conn.commit()
    conn.close()
    rows = _table(path)
    assert [r.id for r in rows] == [1]
    assert "activecalls row dropped id=2" in caplog.text
    assert list(_raw(path)) == [1]


_KEYS = [(1, "a"), (1, "b"), (2, "a"), (1, "c")]
_change = st.one_of(st.tuples(st.just("change"), st.sampled_from(_KEYS), st.integers(0, 5)),
                    st.tuples(st.just("remove"), st.sampled_from(_KEYS), st.just(0)))
# a flush takes the dirty keys on the loop, then writes them in a thread while the loop applies more changes
_flush = st.tuples(st.sampled_from(["flush", "failed flush"]), st.lists(_change, max_size=4))


def _apply(live: LiveTable, op: str, key: tuple[int, str], version: int) -> None:
    if op == "change":
        kind: Literal["added", "updated"] = "updated" if live.get(key) is not None else "added"
        live.apply([CallChange(kind, key, _view(key[1], version, key[0]))])
    else:
        live.apply([CallChange("removed", key, None)])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.one_of(_change, _flush), max_size=40))
def test_after_each_flush_the_table_equals_the_live_table(tmp_path_factory: pytest.TempPathFactory,
                                                          ops: list[tuple[Any, ...]]) -> None:
    path = tmp_path_factory.mktemp("durable") / "collector.sqlite"
    live = LiveTable(_enrich)
    durable = DurableTable(path, live)
    try:
        for op in ops:
            if op[0] in ("change", "remove"):
                _apply(live, *op)
                continue
            kind, in_flight = op
            before = _raw(path)
            batch = durable._collect()  # what DurableTable.flush does, with the thread's window made explicit
            taken = _state(live)
            for change in in_flight:
                _apply(live, *change)
            if kind == "flush":
                durable._write(batch)
                assert [(r.id, r.call) for r in _table(path)] == taken  # the table as the batch was taken
                continue
            _set_failing(path, True)
            try:
                try:
                    written = durable._write(batch)
                except sqlite3.DatabaseError:
                    durable._retry_later(batch)
                else:
                    assert written == 0  # only a flush with nothing to write can succeed
            finally:
                _set_failing(path, False)
            assert _raw(path) == before
        durable.flush_sync()
        _same(_table(path), live)
    finally:
        durable.close()
