"""The real daemon records the concurrency history: a replayed trace over real TCP, an injected Unix clock
moved across bucket boundaries while the replay is held, rows read back from the SQLite file and from
``active_calls_history`` over real HTTP, then a restart that keeps them.

Quiet buckets (the replay held, the clock moved) must hold exactly the standing count of every series,
counted here with the API's own predicates over the live rows. A bucket in which events flowed holds a
value between the counts at its two holds and the largest count after any single trace message in
between: which intermediate states the daemon saw depends on how the bytes were sliced into reads.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import aiohttp

from api.auth import Principal, Role
from api.scope import Scope
from collector.live.table import LiveCall
from collector.refdata.index import RefIndex
from collector.service.daemon import Daemon
from collector.tools.timeline import iter_trace_messages
from collector.tracking.calls import CallStatus
from collector.tracking.tracker import CallTracker
from tests.conftest import ReplayFactory, scenario_files
from tests.daemon_helpers import barrier, mor_hash, settings_for, wait_until

B0 = 1_795_701_000  # a multiple of 15


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _first_ts(paths: list[Path]) -> float:
    return next(float(m["Timestamp"]) for m in iter_trace_messages(paths) if m.get("Timestamp"))


def _peak_between(paths: list[Path], after: float, until: float) -> tuple[int, int]:
    """The largest (total, answered) after any one message with after <= Timestamp < until (offline)."""
    trk = CallTracker()
    best = (0, 0)
    for msg in iter_trace_messages(paths):
        ts = msg.get("Timestamp")
        if ts and float(ts) >= until:
            break
        trk.apply(1, msg)
        if ts and float(ts) >= after:
            calls = trk.calls(1)
            now = (len(calls), sum(1 for c in calls if c.status is CallStatus.ANSWERED))
            best = (max(best[0], now[0]), max(best[1], now[1]))
    return best


def _standing(rows: Sequence[LiveCall], refs: RefIndex) -> dict[str, tuple[int, int]]:
    """Every series' count now, by the API's visibility (a reseller's and a user's rows as they would list)."""
    preds: dict[str, Callable[[LiveCall], bool]] = {"all": lambda r: True, "server:1": lambda r: True}
    for u in refs.data.users:
        if u.usertype == "reseller":
            rp = Scope(Principal(Role.RESELLER, u), refs).row_predicate()
            assert rp is not None
            preds[f"reseller:{u.id}"] = rp
        up = Scope(Principal(Role.USER, u), refs).row_predicate()
        assert up is not None
        preds[f"user:{u.id}"] = up
    out = {}
    for name, pred in preds.items():
        seen = [r for r in rows if pred(r)]
        if seen:
            out[name] = (len(seen), sum(1 for r in seen if r.call.status is CallStatus.ANSWERED))
    return out


def _stored(db: Path) -> dict[int, dict[str, tuple[int, int]]]:
    conn = sqlite3.connect(db)
    try:
        out: dict[int, dict[str, tuple[int, int]]] = {}
        for series, bucket, total, answered in conn.execute("SELECT * FROM active_calls_data"):
            out.setdefault(bucket, {})[series] = (total, answered)
        return out
    finally:
        conn.close()


async def _history(daemon: Daemon, start: int, end: int) -> list[dict[str, int]]:
    secret = daemon._refs().users_by_username["admin"].api_secret_key
    url = f"http://127.0.0.1:{daemon.port}/billing/api/active_calls_history?format=json"
    params = {"u": "admin", "hash": mor_hash("admin", secret), "period_start": str(start), "period_end": str(end)}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=params) as resp:
            assert resp.status == 200
            doc = await resp.json()
    assert doc["bucket_seconds"] == 15
    points: list[dict[str, int]] = doc["points"]
    return points


async def _move_clock(daemon: Daemon, clock: Clock, t: float) -> None:
    """Set the Unix clock and await the timer's tick that rolls the open bucket (no event needed)."""
    clock.t = t
    assert daemon.history is not None
    sampler = daemon.history.sampler
    await wait_until(lambda: sampler.open_bucket == (int(t) // 15) * 15, what="the history timer's tick")


async def test_daemon_records_buckets_across_boundaries_and_keeps_them_over_a_restart(
        tmp_path: Path, replay_server: ReplayFactory) -> None:
    paths = scenario_files("concurrent_load")
    t0 = _first_ts(paths)
    hold1, hold2 = t0 + 10.0, t0 + 20.0
    replay = await replay_server("concurrent_load", fast=True)
    replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= hold1)
    settings = settings_for(tmp_path, [replay.port])
    clock = Clock(B0 + 3)
    daemon = Daemon(settings, history_clock=clock, history_tick=0.01)
    await daemon.start()
    try:
        await replay.wait_held(timeout=30)
        await barrier(daemon)
        refs = daemon._refs()
        at1 = _standing(daemon.live.rows(), refs)
        assert at1["all"][0] > 20 and at1["all"][1] > 0
        assert any(s.startswith("user:") for s in at1), "the demo data enriches some calls of the trace"
        await _move_clock(daemon, clock, B0 + 16)
        await _move_clock(daemon, clock, B0 + 31)  # B0+15 stayed quiet
        replay.release()
        replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= hold2)
        await replay.wait_held(timeout=30)
        await barrier(daemon)
        at2 = _standing(daemon.live.rows(), refs)
        assert at2["all"] != at1["all"]
        await _move_clock(daemon, clock, B0 + 61)  # B0+45 quiet, filled when the timer rolls to B0+60
        assert daemon.history is not None
        await wait_until(lambda: daemon.history is not None and daemon.history.unwritten == 0,
                         what="closed buckets committed")
        stored = _stored(settings.database)
        assert sorted(stored) == [B0, B0 + 15, B0 + 30, B0 + 45]
        assert stored[B0 + 15] == at1 and stored[B0 + 45] == at2  # quiet: exactly the standing counts
        peak1 = _peak_between(paths, 0.0, hold1)
        peak2 = _peak_between(paths, hold1, hold2)
        for bucket, low, peak in ((B0, at1["all"], peak1), (B0 + 30, (max(at1["all"][0], at2["all"][0]),
                                                                      max(at1["all"][1], at2["all"][1])), peak2)):
            total, answered = stored[bucket]["all"]
            assert low[0] <= total <= peak[0] and low[1] <= answered <= peak[1], (bucket, stored[bucket]["all"])
            assert stored[bucket]["server:1"] == (total, answered)
        points = await _history(daemon, B0, B0 + 75)  # the open bucket B0+60 included
        assert points == [{"time": b, "total": stored[b]["all"][0], "answered": stored[b]["all"][1]}
                          for b in sorted(stored)] + [{"time": B0 + 60, "total": at2["all"][0],
                                                       "answered": at2["all"][1]}]
    finally:
        await daemon.stop()
    stored = _stored(settings.database)
    assert stored[B0 + 60] == at2  # the open bucket written at stop

    clock.t = B0 + 62  # a restart within the same bucket: history kept, the bucket merged by maximum
    again = Daemon(settings, history_clock=clock, history_tick=0.01)
    await again.start()
    try:
        await barrier(again)
        points = await _history(again, B0, B0 + 75)
        assert [p["time"] for p in points] == [B0, B0 + 15, B0 + 30, B0 + 45, B0 + 60]
        assert points[:4] == [{"time": b, "total": stored[b]["all"][0], "answered": stored[b]["all"][1]}
                              for b in sorted(stored)[:4]]
        assert points[4]["total"] >= at2["all"][0] and points[4]["answered"] >= at2["all"][1]
    finally:
        await again.stop()
