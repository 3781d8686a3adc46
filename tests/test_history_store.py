"""``active_calls_data`` in a real SQLite file: the DDL, UPSERT keeping the maximum, a restart in the middle
of a bucket keeping the larger half, retention pruned in bounded steps, and a failed write retried."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from collector.live.history import HistorySampler, Row
from collector.live.historydb import PRUNE_EVERY, HistoryRecorder, HistoryStore
from collector.live.table import LiveCall
from collector.refdata.model import Enrichment
from collector.tracking.calls import CallStatus, CallView

T0 = 1_795_701_000  # a multiple of 15


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def row(key: int, answered: bool = False, server: int = 1) -> LiveCall:
    cv = CallView(server_id=server, linkedid=f"L{key}", uniqueid=f"L{key}", channel="SIP/x", dst_channel="",
                  status=CallStatus.ANSWERED if answered else CallStatus.RINGING, src="1", src_name="", dst="2",
                  start_time=T0, answer_time=T0 if answered else None, legs=())
    return LiveCall(key, cv, Enrichment(user_id=4))


def test_table_layout(tmp_path: Path) -> None:
    HistoryStore(tmp_path / "h.db").close()
    conn = sqlite3.connect(tmp_path / "h.db")
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'active_calls_data'").fetchone()[0]
    assert "WITHOUT ROWID" in sql and "PRIMARY KEY (series, bucket)" in sql
    cols = [(r[1], r[2], r[5]) for r in conn.execute("PRAGMA table_info(active_calls_data)")]
    assert cols == [("series", "TEXT", 1), ("bucket", "INTEGER", 2), ("total", "INTEGER", 0),
                    ("answered", "INTEGER", 0)]
    conn.close()
    HistoryStore(tmp_path / "h.db").close()  # IF NOT EXISTS: a second open is a no-op


def test_upsert_keeps_the_maximum_of_each_column(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.db")
    store.write([("all", T0, 3, 1), ("user:4", T0, 1, 0)])
    store.write([("all", T0, 2, 2), ("all", T0 + 15, 1, 1)])
    assert store.query("all", T0, T0 + 30) == [(T0, 3, 2), (T0 + 15, 1, 1)]
    assert store.query("user:4", 0, 10**10) == [(T0, 1, 0)]
    assert store.query("all", T0 + 15, T0 + 15) == []
    store.close()


async def test_restart_in_the_middle_of_a_bucket_keeps_the_larger_half(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    clock = Clock(T0 + 2)
    first = HistoryRecorder(HistorySampler(clock), HistoryStore(db), retention_days=30, clock=clock)
    for k in range(3):
        first.sampler.on_change("added", row(k))
    first.sampler.on_change("updated", row(0, answered=True))
    for k in (1, 2):
        first.sampler.on_change("removed", row(k))
    assert first.flush_sync() > 0  # stop: the open bucket's first half (3 up, 1 answered)
    first.close()
    first.store.close()

    clock.t = T0 + 9  # same bucket, after the restart: only the restored call, then two answered
    second = HistoryRecorder(HistorySampler(clock), HistoryStore(db), retention_days=30, clock=clock)
    second.sampler.seed([row(0, answered=True)])
    second.sampler.on_change("added", row(5, answered=True))
    assert await second.query("all", T0, T0 + 15) == [(T0, 3, 2)]  # merged before it is even written
    clock.t = T0 + 15
    await second.flush()
    assert second.store.query("all", T0, T0 + 15) == [(T0, 3, 2)]
    assert second.store.query("server:1", T0, T0 + 15) == [(T0, 3, 2)]
    second.close()
    second.store.close()


def test_prune_steps_are_bounded_and_remove_exactly_the_expired(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.db")
    cutoff = T0
    rows: list[Row] = [(f"user:{u}", T0 + 15 * i, 1, 0) for u in range(12) for i in range(-20, 5)]
    store.write(rows)
    expired = sum(1 for _s, b, _t, _a in rows if b < cutoff)
    deleted, steps, done = 0, 0, False
    while not done:
        n, done = store.prune_step(cutoff, limit=7, max_series=3)
        assert n <= 7
        deleted += n
        steps += 1
        assert steps < 1000
    assert deleted == expired == 12 * 20 and store.rows_pruned == expired
    assert steps >= expired // 7
    for u in range(12):
        assert [b for b, _t, _a in store.query(f"user:{u}", 0, 10**10)] == [T0 + 15 * i for i in range(5)]
    assert store.prune_step(cutoff) == (0, True)  # a new pass finds nothing
    store.close()


async def test_recorder_prunes_by_retention_then_rests(tmp_path: Path) -> None:
    clock = Clock(T0 + 3 * 86_400)
    store = HistoryStore(tmp_path / "h.db")
    store.write([("all", T0, 1, 1), ("all", T0 + 86_400, 2, 1), ("all", T0 + 2 * 86_400 + 15, 3, 0)])
    recorder = HistoryRecorder(HistorySampler(clock), store, retention_days=1, clock=clock)
    await recorder.flush()  # the pass that starts with the daemon: one step removes both old rows
    assert [b for b, _t, _a in store.query("all", 0, 10**10)] == [T0 + 2 * 86_400 + 15]
    store.write([("all", T0, 9, 9)])  # an old row appears again: no pass until PRUNE_EVERY is over
    await recorder.flush()
    assert store.query("all", T0, T0 + 1) == [(T0, 9, 9)]
    clock.t += PRUNE_EVERY
    await recorder.flush()
    assert store.query("all", T0, T0 + 1) == []
    recorder.close()
    store.close()


async def test_a_failed_write_keeps_the_rows_and_retries(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    clock = Clock(T0 + 1)
    store = HistoryStore(db, busy_timeout_ms=0)
    recorder = HistoryRecorder(HistorySampler(clock), store, retention_days=30, clock=clock)
    recorder.sampler.on_change("added", row(1))
    clock.t = T0 + 16
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # another writer holds the file
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        await recorder.flush()
    assert recorder.write_failures == 1 and recorder.sampler.pending_rows == 3  # all, server:1, user:4
    assert await recorder.query("all", T0, T0 + 30) == [(T0, 1, 0), (T0 + 15, 1, 0)]  # WAL: readers go on
    locker.execute("ROLLBACK")
    locker.close()
    assert await recorder.flush() == 3
    assert store.query("all", 0, 10**10) == [(T0, 1, 0)]
    recorder.close()
    store.close()
