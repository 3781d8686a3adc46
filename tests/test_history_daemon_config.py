"""The daemon's ``[history]`` switches, a reload that changes who is a reseller, and ``/status``; calls fed
from a real trace through the daemon's own tracker and live table, answers over real HTTP."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp

from api.auth import Principal, Role
from api.history import HISTORY_DISABLED, USER_HISTORY_DISABLED
from api.scope import Scope
from collector.live.enrich import Enricher
from collector.refdata.importer import load_demo
from collector.refdata.index import RefIndex
from collector.service.config import parse_settings
from collector.service.daemon import Daemon
from collector.tools.timeline import iter_trace_messages
from tests.conftest import scenario_files
from tests.daemon_helpers import mor_hash, wait_until

T0 = 1_795_701_000


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _daemon(tmp_path: Path, history: str = "") -> Daemon:
    db = tmp_path / "c.db"
    if not db.exists():
        load_demo(db)
    text = f"[api]\nlisten = 127.0.0.1\nport = 0\n[database]\npath = {db}\n[history]\n{history}\n"
    return Daemon(parse_settings(text, source=str(tmp_path / "t.ini")), history_clock=Clock(T0 + 1),
                  history_tick=0.01)


def _feed(daemon: Daemon, count: int = 400) -> None:
    msgs = list(iter_trace_messages(scenario_files("concurrent_load")))[:count]
    daemon.live.apply(daemon.tracker.apply_many(1, msgs))


async def _post(daemon: Daemon, username: str, **params: str) -> Any:
    refs = daemon._refs()
    user = refs.users_by_username[username]
    owner = refs.owner_of(user)
    assert owner is not None
    data = {"u": username, "hash": mor_hash(username, owner.api_secret_key), **params}
    url = f"http://127.0.0.1:{daemon.port}/billing/api/active_calls_history?format=json"
    async with aiohttp.ClientSession() as http, http.post(url, data=data) as resp:
        assert resp.status == 200
        return await resp.json()


async def _status(daemon: Daemon) -> Any:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{daemon.port}/status") as resp:
        return await resp.json()


PERIOD = {"period_start": str(T0), "period_end": str(T0 + 60)}


async def test_disabled_history_samples_nothing_and_says_so(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path, "enabled = no")
    await daemon.start()
    try:
        _feed(daemon)
        assert daemon.history is None and len(daemon.live) > 0
        assert await _post(daemon, "admin", **PERIOD) == {"error": HISTORY_DISABLED}
        assert (await _status(daemon))["history"] is None
    finally:
        await daemon.stop()
    conn = sqlite3.connect(tmp_path / "c.db")
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'active_calls_data'").fetchall() == []
    conn.close()


async def test_per_user_off_keeps_no_user_series(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path, "per_user = no")
    await daemon.start()
    try:
        _feed(daemon)
        assert daemon.history is not None
        assert not any(s.startswith("user:") for s in daemon.history.sampler.counts())
        assert await _post(daemon, "alice", **PERIOD) == {"error": USER_HISTORY_DISABLED}
        doc = await _post(daemon, "admin", **PERIOD)
        assert doc["points"] == [{"time": T0, "total": len(daemon.live),
                                  "answered": sum(1 for r in daemon.live.rows() if r.call.status.value == "Answered")}]
        reseller = await _post(daemon, "reseller", **PERIOD)
        pred = Scope(Principal(Role.RESELLER, daemon._refs().users_by_username["reseller"]), daemon._refs()
                     ).row_predicate()
        assert pred is not None
        seen = [r for r in daemon.live.rows() if pred(r)]
        assert seen and reseller["points"][0]["total"] == len(seen)
    finally:
        await daemon.stop()


async def test_reload_recounts_when_a_user_becomes_a_reseller(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path)
    await daemon.start()
    try:
        _feed(daemon)
        assert daemon.history is not None
        refs = daemon._refs()
        alice = refs.users_by_username["alice"]
        assert f"reseller:{alice.id}" not in daemon.history.sampler.counts()
        users = tuple(replace(u, usertype="reseller", api_secret_key="alice-key") if u.id == alice.id else u
                      for u in refs.data.users)
        index = RefIndex.build(replace(refs.data, users=users))
        daemon.apply_reference(index, Enricher(index))
        pred = Scope(Principal(Role.RESELLER, index.users[alice.id]), index).row_predicate()
        assert pred is not None
        seen = [r for r in daemon.live.rows() if pred(r)]
        assert seen and daemon.history.sampler.counts()[f"reseller:{alice.id}"][0] == len(seen)
        assert (await _post(daemon, "alice", **PERIOD))["points"][0]["total"] == len(seen)  # now his reseller series
        clock = daemon.history_clock
        assert isinstance(clock, Clock)
        clock.t = T0 + 16
        await wait_until(lambda: daemon.history is not None and daemon.history.store.rows_written > 0,
                         what="the first bucket written")
        status = (await _status(daemon))["history"]
        assert status["open_bucket"] == T0 + 15 and status["rows_written"] == len(daemon.history.sampler.counts())
        assert status["write_failures"] == 0 and status["dropped_rows"] == 0
    finally:
        await daemon.stop()
