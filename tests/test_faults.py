"""Faults the end-to-end tests do not cover, each over real TCP on 127.0.0.1 and bounded in time:
a reset in the middle of a CoreShowChannels answer, an Asterisk crash and restart without Shutdown,
events out of order by a few ms, truncated blocks and garbage inside a live stream, and the API under
heavy load while the daemon ingests a fast replay. After each, the daemon's table is compared with the
truth of the replayed traffic: the replay server's own channel state (what Asterisk would list) grouped
by Linkedid, and the offline tracker of the same bytes.

Every wait awaits a condition of the system under test with a timeout; nothing sleeps to synchronise.
Two tests pin tracker defects found here and fixed since (a Newchannel reordered after its own Hangup;
a crash-restarted Asterisk reusing a Uniqueid before the resync answer).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from collector.service.daemon import Daemon
from collector.tools.replay import ReplayEvent, ReplayOptions, ReplayServer, TraceSession
from collector.tools.replay.clients import Client
from collector.tools.timeline import iter_trace_messages
from collector.tools.traces import read_trace
from collector.tracking.calls import CallView
from collector.tracking.tracker import CallTracker
from tests.daemon_helpers import (
    admin_page,
    barrier,
    comparable,
    mor_hash,
    offline_calls,
    running_daemon,
    settings_for,
    wait_until,
)
from tests.fault_streams import blocks_of, join_blocks, shift_epochs, shuffle_within
from tests.helpers import trace_paths, truth_path
from tests.truth import compare, truth_calls

_ACTION_ID = re.compile(r"(?im)^ActionID:\s*(.*?)\s*$")


# ------------------------------------------------------------------------------------------ helpers

def _from_time(t: float) -> Callable[[ReplayEvent], bool]:
    """A ``hold(when=...)`` condition: the first event stamped at or after ``t``."""
    return lambda ev: ev.timestamp is not None and ev.timestamp >= t


def _first_ts(paths: list[Path]) -> float:
    return next(float(m["Timestamp"]) for m in iter_trace_messages(paths) if m.get("Timestamp"))


def replay_truth(replay: ReplayServer) -> dict[str, str]:
    """What Asterisk would list now, as calls: the replay's channels grouped by Linkedid, with the truth
    status rule of tests/truth.py."""
    channels = [{"linkedid": ch.fields.get("Linkedid") or ch.uniqueid, "uniqueid": ch.uniqueid,
                 "channel": ch.fields.get("Channel", ""), "channelstate": ch.fields.get("ChannelState", ""),
                 "bridgeid": ch.bridge_id} for ch in replay.channels()]
    return truth_calls({"channels": channels})


def daemon_table(daemon: Daemon, server_id: int = 1) -> dict[str, str]:
    return {r.call.linkedid: r.call.status.value for r in daemon.live.rows() if r.call.server_id == server_id}


def assert_table_is_truth(daemon: Daemon, replay: ReplayServer, expected: list[CallView] | None = None) -> None:
    """Same calls as Asterisk (replay) has, same statuses; and, when given, field for field the offline
    tracker's table of the same bytes."""
    assert daemon_table(daemon) == replay_truth(replay)
    if expected is not None:
        assert comparable(r.call for r in daemon.live.rows()) == comparable(expected)


# ------------------------------------------------------------------ 1. reset inside a CoreShowChannels answer

class CutListReplay(ReplayServer):
    """After ``cut_next(n, consumed)``, answers the next ``n`` CoreShowChannels actions with the Response and
    the first half of the items, waits until the client has taken them in (``consumed``: a message counter of
    the system under test, polled), then resets every connection (RST): the resync list is cut midway, as
    when Asterisk dies or the link drops during a long list."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # ReplayServer's own parameters
        super().__init__(*args, **kwargs)
        self.cuts_left = 0
        self.consumed: Callable[[], int] = lambda: 0
        self.lists_asked = 0
        self.lists_cut = 0

    def cut_next(self, n: int, consumed: Callable[[], int]) -> None:
        self.cuts_left, self.consumed = n, consumed

    async def _handle_action(self, client: Client, text: str) -> None:
        if "coreshowchannels" not in text.lower():
            await super()._handle_action(client, text)
            return
        self.lists_asked += 1
        if self.cuts_left <= 0:
            await super()._handle_action(client, text)
            return
        self.cuts_left -= 1
        m = _ACTION_ID.search(text)
        reply = self.state.core_show_channels(m.group(1) if m else None, self.trace_time() or 0.0)
        blocks = blocks_of(reply)  # Response, items…, Complete
        items = blocks[1:-1]
        half = blocks[:1] + items[:len(items) // 2]
        assert len(half) >= 10, "the cut needs a list worth cutting"
        base = self.consumed()
        client.write(join_blocks(half))
        await self._drain(client)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while self.consumed() < base + len(half):  # the half list reached the daemon's tracker
            assert loop.time() < deadline, "the client never read the half list"
            await asyncio.sleep(0.005)
        self.lists_cut += 1
        self.drop_clients()


async def test_reset_during_coreshowchannels_answer_removes_nothing_then_full_resync(tmp_path: Path) -> None:
    paths = trace_paths("concurrent_load")
    t0 = _first_ts(paths)
    replay = CutListReplay(paths, port=0, options=ReplayOptions(fast=True))
    async with replay:
        replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= t0 + 12)
        async with running_daemon(settings_for(tmp_path, [replay.port])) as daemon:
            session = daemon.sessions[0]
            await replay.wait_held(timeout=30)
            await barrier(daemon)  # list 1: normal
            expected = offline_calls(paths, t0 + 12)
            assert len(expected) > 50
            assert_table_is_truth(daemon, replay, expected)
            before = comparable(r.call for r in daemon.live.rows())
            kinds: list[str] = []
            daemon.live.subscribe(lambda kind, _row: kinds.append(kind))
            resyncs, asked = session.status.resyncs, replay.lists_asked
            # the next list (asked on demand) and the full resync after the reconnect are both cut in half
            replay.cut_next(2, lambda: session.status.events)
            session.request_resync()  # cut → reconnect → cut → reconnect → whole
            await wait_until(lambda: session.status.resyncs > resyncs and session.status.logged_in,
                             timeout=15, what="a whole resync after two cut lists")
            assert replay.lists_asked - asked >= 3 and (replay.lists_cut, replay.logins_total) == (2, 3)
            assert session.status.reconnects == 2
            assert "removed" not in kinds and "added" not in kinds  # the half lists swept nothing
            assert comparable(r.call for r in daemon.live.rows()) == before
            assert_table_is_truth(daemon, replay, expected)

            replay.release()
            await replay.wait_finished(timeout=30)
            await barrier(daemon)
            assert len(daemon.live) == 0 and replay.channels() == []
            assert daemon.tracker.stats(1).errors == 0


async def test_reset_during_resync_while_the_trace_runs_on(tmp_path: Path) -> None:
    """The list is cut while calls keep changing and the daemon is away: what ended in between is gone
    after the next whole list, what started is there."""
    paths = trace_paths("concurrent_load")
    t0 = _first_ts(paths)
    replay = CutListReplay(paths, port=0, options=ReplayOptions(fast=True, pause_when_idle=False))
    async with replay:
        replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= t0 + 10)
        async with running_daemon(settings_for(tmp_path, [replay.port])) as daemon:
            session = daemon.sessions[0]
            await replay.wait_held(timeout=30)
            await barrier(daemon)
            resyncs = session.status.resyncs
            replay.cut_next(1, lambda: session.status.events)
            session.request_resync()
            await wait_until(lambda: replay.lists_cut == 1, timeout=10, what="the cut")
            replay.release()  # the trace runs on to t0+16 whether or not the daemon is connected
            replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= t0 + 16)
            await replay.wait_held(timeout=30)
            await wait_until(lambda: session.status.resyncs > resyncs and session.status.logged_in,
                             timeout=15, what="resync after the cut")
            await barrier(daemon)
            assert_table_is_truth(daemon, replay)
            assert session.status.reconnects == 1
            replay.release()
            await replay.wait_finished(timeout=30)
            await barrier(daemon)
            assert len(daemon.live) == 0


# ------------------------------------------------------------------ 2. Asterisk crash + restart, no Shutdown

class CrashReplay(ReplayServer):
    """Each session after the first is an Asterisk that crashed and came back: the connections are reset
    (no Shutdown, no goodbye) and its channel state starts empty. ``list_gate`` delays CoreShowChannels
    answers while clear, so events of the new session can reach the daemon before its resync does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # ReplayServer's own parameters
        super().__init__(*args, **kwargs)
        self.list_gate = asyncio.Event()
        self.list_gate.set()

    async def _enter_session(self, si: int, session: TraceSession, seamless: bool) -> None:
        if si > 0 and not seamless:
            self.drop_clients()
            self.state.clear()
        await super()._enter_session(si, session, seamless)

    async def _handle_action(self, client: Client, text: str) -> None:
        if "coreshowchannels" in text.lower():
            await asyncio.wait_for(self.list_gate.wait(), 20)
        await super()._handle_action(client, text)


def _crash_traces(tmp: Path, reuse: str) -> tuple[str, str]:
    """s1: basic_outbound up to its answer, Uptime 80, then a dialplan-only event to park on. s2: the same
    call 60 s later on a restarted Asterisk (Uptime 3): same channel names; the Uniqueid keeps its counter
    suffix with a new epoch (``suffix``, what a real restart gives) or is identical (``identical``)."""
    src = read_trace(trace_paths("basic_outbound")[0])
    blocks = blocks_of(src)
    answered = next(i for i, b in enumerate(blocks) if b.startswith(b"Event: DialEnd"))
    park = (b"Event: VarSet\r\nPrivilege: dialplan,all\r\nTimestamp: 1795701690.000000\r\nVariable: X\r\n"
            b"Value: 1")
    (tmp / "s1.ami").write_bytes(join_blocks(blocks[:answered + 1] + [park]))
    s2 = shift_epochs(src, 60, ids_too=reuse == "suffix")
    s2 = s2.replace(b"Uptime: 80\r\nLastReload: 80", b"Uptime: 3\r\nLastReload: 3", 1)
    (tmp / "s2.ami").write_bytes(s2)
    old = "1795701681.2"
    return old, ("1795701741.2" if reuse == "suffix" else old)


@pytest.mark.parametrize("reuse", [
    "suffix",
    "identical",
])
async def test_asterisk_crash_and_restart_without_shutdown(tmp_path: Path, reuse: str) -> None:
    old, new = _crash_traces(tmp_path, reuse)
    replay = CrashReplay([tmp_path / "s1.ami", tmp_path / "s2.ami"], port=0, options=ReplayOptions(fast=True))
    async with replay:
        n1 = replay.sessions[0].event_count
        replay.hold(when=lambda ev: ev.session == 0 and ev.index == n1 - 1)  # before the parking event
        async with running_daemon(settings_for(tmp_path, [replay.port])) as daemon:
            session = daemon.sessions[0]
            await replay.wait_held(timeout=30)
            await barrier(daemon)
            rows = daemon.live.rows()
            assert [(r.call.linkedid, r.call.status.value) for r in rows] == [(old, "Answered")]
            assert daemon_table(daemon) == replay_truth(replay)

            # crash: RST, then a restarted Asterisk whose events race ahead of the resync answer
            replay.list_gate.clear()
            try:
                resyncs = session.status.resyncs
                replay.release()
                replay.hold(when=lambda ev: ev.session == 1 and ev.name == "DialBegin")  # B-leg created, ringing
                await replay.wait_held(timeout=30)
                created = max(float(m["Timestamp"]) for m in iter_trace_messages([tmp_path / "s2.ami"])
                                 if m.get("Event") == "Newchannel")
                await wait_until(lambda: any(r.call.linkedid == new and len(r.call.legs) == 2
                                             for r in daemon.live.rows()), what="the new call and its B-leg")
                assert session.status.reconnects == 1
                new_row = next(r for r in daemon.live.rows() if r.call.linkedid == new)
                # no mix-up: the new call is ringing, started now, has no answer time of the old one
                assert new_row.call.status.value == "Ringing" and new_row.call.answer_time is None
                assert new_row.call.start_time > created - 1
                assert new_row.call.channel == "SIP/101-00000002"
            finally:
                replay.list_gate.set()  # never leave the replay's action handler parked
            await wait_until(lambda: session.status.resyncs > resyncs, what="resync after the restart")
            await barrier(daemon)
            assert daemon_table(daemon) == {new: "Ringing"} == replay_truth(replay)  # old calls gone
            replay.release()
            await replay.wait_finished(timeout=30)
            await barrier(daemon)
            assert len(daemon.live) == 0
            assert daemon.tracker.stats(1).errors == 0


# ------------------------------------------------------------------ 3. events out of order by a few ms

async def test_events_shuffled_within_5ms_windows_match_offline_and_truth(tmp_path: Path) -> None:
    src = trace_paths("concurrent_load")[0]
    data, moved = shuffle_within(read_trace(src), 0.005, seed=20261126)
    assert moved > 5000
    shuffled = tmp_path / "concurrent_load.shuffled.ami"
    shuffled.write_bytes(data)
    # offline first: the shuffled stream against the real ground truth, with tests/truth.py's tolerance
    cmp = compare([shuffled], truth_path("concurrent_load"))
    assert cmp.ratio >= 0.995 and cmp.status_agreeing == cmp.status_checked, cmp.mismatches[:5]
    assert not {lid: e for lid, e in cmp.answer_errors.items() if e > 0.5}
    assert cmp.final_calls == []

    t0 = _first_ts([shuffled])
    holds = [t0 + 6, t0 + 14, t0 + 22, t0 + 30]
    async with ReplayServer([shuffled], port=0, options=ReplayOptions(fast=True)) as replay:
        async with running_daemon(settings_for(tmp_path, [replay.port])) as daemon:
            for hold_at in holds:
                replay.hold(when=_from_time(hold_at))
                await replay.wait_held(timeout=30)
                await barrier(daemon)
                expected = offline_calls([shuffled], hold_at)
                assert len(expected) > 20
                assert_table_is_truth(daemon, replay, expected)
                replay.release()
            await replay.wait_finished(timeout=30)
            await barrier(daemon)
            assert len(daemon.live) == 0
            assert daemon.tracker.stats(1).errors == 0
            assert daemon.sessions[0].status.reconnects == 0


def test_any_permutation_within_5ms_leaves_no_ghost(tmp_path: Path) -> None:
    """Asterisk orders one channel's own events; a peer (or proxy) that does not still must leave no ghost."""
    data, _moved = shuffle_within(read_trace(trace_paths("concurrent_load")[0]), 0.005, seed=1,
                                  per_channel_order=False)
    shuffled = tmp_path / "any.ami"
    shuffled.write_bytes(data)
    trk = CallTracker()
    for msg in iter_trace_messages([shuffled]):
        trk.apply(1, msg)
    assert trk.calls(1) == []


# ------------------------------------------------------------------ 4. truncated blocks and garbage, live

BAD_NAME = b"CallerIDName: Al\xefce \xff\xfe Office"  # latin-1 and stray bytes: not UTF-8


class HostileReplay(ReplayServer):
    """Injects damage before chosen events of the (client-visible) stream: the event's first half with a
    terminator (a block cut in half, then the whole block), its first 40 % cut mid-line with no terminator
    (glued to the whole block), random bytes as a block of their own, and a random line glued on top of a
    block."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # ReplayServer's own parameters
        super().__init__(*args, **kwargs)
        rnd = random.Random(6)
        self.plan: dict[int, str] = {}
        for k in range(30, 1800, 37):
            self.plan[k] = ("cut-terminated", "cut-glued", "garbage-block", "garbage-line")[len(self.plan) % 4]
        self.rnd = rnd
        self.visible = 0
        self.injected: dict[str, int] = {}

    def _garbage(self, n: int) -> bytes:
        raw = bytes(self.rnd.randrange(256) for _ in range(n))
        return raw.replace(b"Event", b"Evxnt").replace(b"Response", b"Rxsponse")

    def _broadcast(self, raw: bytes, classes: frozenset[str]) -> None:
        if classes <= {"call", "system"} and classes:
            kind = self.plan.get(self.visible)
            self.visible += 1
            if kind is not None:
                body = raw[:-4]
                if kind == "cut-terminated":
                    prefix = body[:len(body) // 2] + b"\r\n\r\n"
                elif kind == "cut-glued":
                    prefix = body[:int(len(body) * 0.4)]
                elif kind == "garbage-block":
                    prefix = self._garbage(200).replace(b"\n", b" ") + b"\r\n\r\n"
                else:
                    prefix = self._garbage(80).replace(b"\n", b" ").replace(b"\r", b" ") + b"\r\n"
                self.injected[kind] = self.injected.get(kind, 0) + 1
                super()._broadcast(prefix, classes)
                self.events_sent -= 1  # the damage is not an event of the trace
        super()._broadcast(raw, classes)


async def test_truncated_blocks_garbage_and_bad_utf8_keep_the_session_and_the_calls(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="collector.ami.framing")
    bad = tmp_path / "concurrent_load.bad_utf8.ami"  # every "Alice Office" caller name as non-UTF-8 bytes
    bad.write_bytes(read_trace(trace_paths("concurrent_load")[0]).replace(b"CallerIDName: Alice Office", BAD_NAME))
    paths = [bad]
    t0 = _first_ts(paths)
    replay = HostileReplay(paths, port=0, options=ReplayOptions(fast=True))
    async with replay:
        replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= t0 + 15)
        async with running_daemon(settings_for(tmp_path, [replay.port])) as daemon:
            session = daemon.sessions[0]
            await replay.wait_held(timeout=30)
            await barrier(daemon)
            assert min(replay.injected.values()) >= 5 and len(replay.injected) == 4, replay.injected
            assert_table_is_truth(daemon, replay, offline_calls(paths, t0 + 15))
            names = {r.call.src_name for r in daemon.live.rows()}
            assert "Al\ufffdce \ufffd\ufffd Office" in names
            page = await admin_page(daemon)
            active_calls = page.xpath("/page/active_call")
            assert isinstance(active_calls, list)
            assert len(active_calls) == len(daemon.live)
            replay.release()
            await replay.wait_finished(timeout=30)
            await barrier(daemon)
            assert len(daemon.live) == 0
            assert session.status.reconnects == 0 and replay.logins_total == 1  # the session stayed up
            stats = daemon.tracker.stats(1)
            assert stats.errors == 0 and stats.malformed >= 1  # the cut halves, counted and dropped
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert skipped, "no log line names the skipped garbage"


# ------------------------------------------------------------------ 5. the API under load during a fast replay

async def _hammer(url: str, users: list[tuple[str, str, dict[str, str]]], stop: asyncio.Event,
                  codes: dict[int, int]) -> None:
    async with aiohttp.ClientSession() as http:
        i = 0
        while not stop.is_set():
            user, secret, filters = users[i % len(users)]
            i += 1
            async with http.post(url, data={"u": user, "hash": mor_hash(user, secret), **filters}) as resp:
                await resp.read()
                codes[resp.status] = codes.get(resp.status, 0) + 1


def _stalled_reader(port: int, body: bytes, requests: int) -> socket.socket:
    """A client that pipelines requests and never reads: its responses pile up on the server."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        sock.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    request = (f"POST /billing/api/active_calls_get HTTP/1.1\r\nHost: x\r\nContent-Type: "
               f"application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    sock.setblocking(True)
    sock.sendall(request * requests)
    return sock


async def test_api_under_load_never_starves_the_ami_reader(tmp_path: Path) -> None:
    paths = trace_paths("concurrent_load")
    t0 = _first_ts(paths)
    hold_at = t0 + 30
    # timed at x10 (~5,000 events/s for 3 s, so the API load overlaps the whole stream); a reader that stalls
    # 2 s is cut off, as Asterisk's writetimeout would
    async with ReplayServer(paths, port=0, options=ReplayOptions(speed=10.0, wall_clock=False,
                                                                 write_timeout=2.0)) as replay:
        replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= hold_at)
        async with running_daemon(settings_for(tmp_path, [replay.port])) as daemon:
            session = daemon.sessions[0]
            await wait_until(lambda: session.status.logged_in, what="login")
            refs = daemon._refs()
            admin = refs.users_by_username["admin"].api_secret_key
            reseller = refs.users_by_username["reseller"].api_secret_key
            users = [("admin", admin, {}), ("admin", admin, {}), ("reseller", reseller, {}),
                     ("alice", admin, {}), ("admin", admin, {"s_status": "answered"}),
                     ("admin", admin, {"s_user_id": "2"}), ("carol", reseller, {})]
            url = f"http://127.0.0.1:{daemon.port}/billing/api/active_calls_get"
            stop = asyncio.Event()
            codes: dict[int, int] = {}
            body = f"u=admin&hash={mor_hash('admin', admin)}".encode()
            stalled = [_stalled_reader(daemon.port, body, 200) for _ in range(6)]
            load = [asyncio.create_task(_hammer(url, users, stop, codes)) for _ in range(40)]
            try:
                await replay.wait_held(timeout=30)
            finally:
                stop.set()
                await asyncio.wait_for(asyncio.gather(*load), 10)
                for s in stalled:
                    s.close()
            assert set(codes) == {200} and sum(codes.values()) > 200, codes
            await barrier(daemon)
            assert_table_is_truth(daemon, replay, offline_calls(paths, hold_at))
            replay.release()
            await replay.wait_finished(timeout=30)
            await barrier(daemon)
            assert len(daemon.live) == 0
            assert session.status.reconnects == 0 and replay.logins_total == 1
            assert session.status.pong_timeouts == 0
            assert daemon.tracker.stats(1).errors == 0
