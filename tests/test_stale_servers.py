"""Issue 13: calls of a server unreachable past ``stale_after`` leave the table and come back with the resync
(answer times kept); calls of servers disabled / gone from the configuration are dropped; /readyz needs an
enabled server. Driven by an injected clock, with stand-in sessions (the daemon is not started)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from collector.service.config import parse_settings
from collector.service.daemon import Daemon
from collector.tools.timeline import iter_trace_messages
from tests.helpers import trace_paths


def _daemon(tmp_path: Path, stale_after: float = 60) -> tuple[Daemon, SimpleNamespace]:
    settings = parse_settings(f"[collector]\nstale_after = {stale_after}\n[database]\npath = {tmp_path / 'c.db'}\n",
                              source=str(tmp_path / "t.ini"))
    assert settings.collector.stale_after == stale_after
    daemon = Daemon(settings)
    session = SimpleNamespace(server_id=1, status=SimpleNamespace(logged_in=False, name="pbx1"))
    daemon.sessions.append(session)  # type: ignore[arg-type]
    return daemon, session


def _feed(daemon: Daemon, path: Path, server_id: int = 1, until_resync: bool = False) -> None:
    msgs = list(iter_trace_messages([path]))
    if until_resync:
        msgs = msgs[:1 + next(i for i, m in enumerate(msgs) if m.get("Event") == "CoreShowChannelsComplete")]
    daemon.live.apply(daemon.tracker.apply_many(server_id, msgs))


def test_default_stale_after() -> None:
    assert parse_settings("", source="x.ini").collector.stale_after == 60.0


def test_unreachable_server_calls_removed_then_back_with_answer_times(tmp_path: Path) -> None:
    first, second = trace_paths("ami_reconnect")
    daemon, session = _daemon(tmp_path, stale_after=30)
    _feed(daemon, first)
    before = {r.call.linkedid: r.call for r in daemon.live.rows()}
    assert before and any(c.answer_time is not None for c in before.values())
    assert daemon.disconnected() == {1}
    assert daemon.check_stale(now=1000.0) == 0  # down since now: still served (restored calls too)
    assert daemon.check_stale(now=1029.0) == 0 and len(daemon.live.rows()) == len(before)
    assert daemon.check_stale(now=1031.0) == len(before)
    assert not daemon.live.rows() and daemon.stale_removed == {1: len(before)}
    assert daemon.check_stale(now=2000.0) == 0 and daemon.stale_removed == {1: len(before)}  # once per outage
    session.status.logged_in = True
    assert daemon.check_stale(now=2001.0) == 0 and daemon.disconnected() == frozenset()
    _feed(daemon, second, until_resync=True)  # the reconnect's resync
    after = {r.call.linkedid: r.call for r in daemon.live.rows()}
    assert after, "the resync brings the live calls back"
    kept = [lid for lid in after if lid in before and before[lid].answer_time is not None]
    assert kept
    for lid in kept:
        assert after[lid].answer_time == before[lid].answer_time, lid


def test_calls_of_unconfigured_servers_dropped(tmp_path: Path) -> None:
    daemon, _session = _daemon(tmp_path)
    _feed(daemon, trace_paths("ami_reconnect")[0], server_id=1)
    _feed(daemon, trace_paths("ami_reconnect")[0], server_id=2)
    assert {r.call.server_id for r in daemon.live.rows()} == {1, 2}
    assert daemon.drop_unconfigured({1}) == {2}
    assert {r.call.server_id for r in daemon.live.rows()} == {1}
    assert daemon.tracker.calls(2) == []


def test_not_ready_without_an_enabled_server(tmp_path: Path) -> None:
    daemon, _session = _daemon(tmp_path)
    daemon.refs = SimpleNamespace()  # type: ignore[assignment]
    daemon.sessions.clear()
    ok, why = daemon.ready()
    assert not ok and "no enabled AMI server" in why
