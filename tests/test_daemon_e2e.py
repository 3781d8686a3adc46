"""The daemon end to end over real TCP: replay AMI server → panoramisk session → tracker → live table →
SQLite mirror → HTTP, against the offline timeline of the same real traces, through drops, restarts,
lost hangups and hostile bytes."""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import replace
from pathlib import Path

from collector.tools.replay import ReplayOptions, ReplayServer, TraceSession
from collector.tools.timeline import iter_trace_messages, timeline
from collector.tools.traces import read_trace
from tests.conftest import ReplayFactory, scenario_files
from tests.daemon_helpers import (
    admin_page,
    barrier,
    comparable,
    offline_calls,
    running_daemon,
    settings_for,
    wait_until,
)

FAST = ReplayOptions(fast=True)


def _first_ts(paths: list[Path]) -> float:
    return next(float(m["Timestamp"]) for m in iter_trace_messages(paths) if m.get("Timestamp"))


async def test_table_equals_timeline_mid_trace_and_empties_at_the_end(tmp_path: Path,
                                                                      replay_server: ReplayFactory) -> None:
    paths = scenario_files("concurrent_load")
    hold_at = _first_ts(paths) + 15.0
    replay = await replay_server("concurrent_load", fast=True)
    replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= hold_at)
    async with running_daemon(settings_for(tmp_path, [replay.port])) as daemon:
        await replay.wait_held(timeout=30)
        await barrier(daemon)
        expected = offline_calls(paths, hold_at)
        assert len(expected) > 50
        assert comparable(r.call for r in daemon.live.rows()) == comparable(expected)
        # the API answers from the same table
        page = await admin_page(daemon)
        uniqueids = page.xpath("/page/active_call/uniqueid/text()")
        assert isinstance(uniqueids, list)
        assert sorted(str(u) for u in uniqueids) == sorted(c.uniqueid for c in expected)
        replay.release()
        await replay.wait_finished(timeout=60)
        await barrier(daemon)
        assert len(daemon.live) == 0
        assert daemon.tracker.stats(1).errors == 0


async def test_durable_table_survives_restart_with_answer_times(tmp_path: Path,
                                                                replay_server: ReplayFactory) -> None:
    paths = scenario_files("concurrent_load")
    hold_at = _first_ts(paths) + 12.0
    replay = await replay_server("concurrent_load", fast=True)
    replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= hold_at)
    settings = settings_for(tmp_path, [replay.port])
    async with running_daemon(settings) as daemon:
        await replay.wait_held(timeout=30)
        await barrier(daemon)
        before = {r.call.linkedid: (r.id, r.call.answer_time) for r in daemon.live.rows()}
        assert any(at is not None for _id, at in before.values())
    # stopped: the table was flushed; a new daemon restores it and reconciles with the (held) server
    async with running_daemon(settings) as daemon:
        await barrier(daemon)
        after = {r.call.linkedid: (r.id, r.call.answer_time) for r in daemon.live.rows()}
        assert after == before


async def test_drop_mid_call_reconnects_resyncs_no_ghost_no_loss(tmp_path: Path,
                                                                 replay_server: ReplayFactory) -> None:
    paths = scenario_files("concurrent_load")
    t0 = _first_ts(paths)
    replay = await replay_server("concurrent_load", fast=True, pause_when_idle=False)
    replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= t0 + 10)
    async with running_daemon(settings_for(tmp_path, [replay.port])) as daemon:
        await replay.wait_held(timeout=30)
        await barrier(daemon)
        session = daemon.sessions[0]
        # drop, then let the trace run on while the daemon is away (events are lost, as with Asterisk)
        replay.drop_clients()
        await wait_until(lambda: not session.status.logged_in, what="disconnect")
        replay.release()  # wakes the parked player; the new hold below applies to what follows
        replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= t0 + 14)
        await replay.wait_held(timeout=30)
        await wait_until(lambda: session.status.logged_in, what="relogin")
        await barrier(daemon)
        up = {ch.fields.get("Linkedid") for ch in replay.channels()}
        assert {r.call.linkedid for r in daemon.live.rows()} == up
        assert session.status.reconnects >= 1
        replay.release()
        await replay.wait_finished(timeout=60)
        await barrier(daemon)
        assert len(daemon.live) == 0


async def test_reconnect_trace_two_sessions(tmp_path: Path, replay_server: ReplayFactory) -> None:
    paths = scenario_files("ami_reconnect")
    replay = await replay_server("ami_reconnect", fast=True)
    part2_first = _first_ts(paths[1:])
    replay.hold(when=lambda ev: ev.session == 1 and ev.timestamp is not None and ev.timestamp > part2_first + 2)
    async with running_daemon(settings_for(tmp_path, [replay.port])) as daemon:
        await replay.wait_held(timeout=30)
        await barrier(daemon)
        expected = offline_calls(paths, part2_first + 2)
        assert len(expected) >= 4
        got = {r.call.linkedid: r.call.status.value for r in daemon.live.rows()}
        assert got == {c.linkedid: c.status.value for c in expected}
        replay.release()
        await replay.wait_finished(timeout=30)
        await barrier(daemon)
        assert len(daemon.live) == 0


class GappedReplay(ReplayServer):
    """Stops between the recorded sessions (the recorder's gap) until ``gap_open`` is set: every event of the
    first session sent, the client still connected."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.in_gap = asyncio.Event()
        self.gap_open = asyncio.Event()

    async def _enter_session(self, si: int, session: TraceSession, seamless: bool) -> None:
        if si == 1:
            await self._hub.flush()
            self.in_gap.set()
            await self.gap_open.wait()
        await super()._enter_session(si, session, seamless)


async def test_daemon_and_timeline_agree_in_a_recorder_gap(tmp_path: Path) -> None:
    # the timeline places the reconnect's resync at the first timestamped
    # event of its session, so at an instant inside the gap both show the calls as they were before it
    paths = scenario_files("ami_reconnect")
    last_1 = max(float(m["Timestamp"]) for m in iter_trace_messages(paths[:1]) if m.get("Timestamp"))
    mid_gap = (last_1 + _first_ts(paths[1:])) / 2
    frame = next(f for f in timeline(iter_trace_messages(paths)) if f.t >= mid_gap)
    assert frame.t < _first_ts(paths[1:]) and frame.calls
    after = next(f for f in timeline(iter_trace_messages(paths)) if f.t >= _first_ts(paths[1:]))
    assert comparable(after.calls) != comparable(frame.calls)  # the resync does change the table
    replay = GappedReplay(paths, port=0, options=FAST)
    await replay.start()
    try:
        async with running_daemon(settings_for(tmp_path, [replay.port])) as daemon:
            await asyncio.wait_for(replay.in_gap.wait(), 30)
            await barrier(daemon)
            assert comparable(r.call for r in daemon.live.rows()) == comparable(frame.calls)
            replay.gap_open.set()
            await replay.wait_finished(timeout=30)
            await barrier(daemon)
            assert len(daemon.live) == 0
    finally:
        await replay.close()


class LosingReplay(ReplayServer):
    """Asterisk hangs the channels up (its state follows the trace) but the Hangup events never reach
    the client: the lost-event case reconciliation exists for."""

    def _broadcast(self, raw: bytes, classes: frozenset[str]) -> None:
        if raw.startswith(b"Event: Hangup\r\n"):
            return
        super()._broadcast(raw, classes)


async def test_lost_hangups_are_reconciled_within_two_intervals(tmp_path: Path) -> None:
    async with LosingReplay(scenario_files("basic_outbound"), port=0, options=FAST) as replay:
        settings = settings_for(tmp_path, [replay.port], reconcile_interval=0.3)
        async with running_daemon(settings) as daemon:
            await replay.wait_finished(timeout=30)
            await barrier(daemon)
            await wait_until(lambda: len(daemon.live) == 0, timeout=10, what="ghost removal")
            assert daemon.tracker.stats(1).resync_removed == 2  # both legs, after two misses each


async def test_shutdown_then_restarted_asterisk_reusing_uniqueids(tmp_path: Path) -> None:
    src = read_trace(scenario_files("basic_outbound")[0])
    blocks = src.split(b"\r\n\r\n")
    answered = next(i for i, b in enumerate(blocks) if b.startswith(b"Event: DialEnd"))
    shutdown = (b"Event: Shutdown\r\nPrivilege: system,all\r\nTimestamp: 1795701690.000000\r\n"
                b"Shutdown: Cleanly\r\nRestart: True")
    (tmp_path / "s1.ami").write_bytes(b"\r\n\r\n".join(blocks[:answered + 1] + [shutdown]) + b"\r\n\r\n")
    (tmp_path / "s2.ami").write_bytes(src)  # the restarted Asterisk: same Uniqueids, same channel names
    async with ReplayServer([tmp_path / "s1.ami", tmp_path / "s2.ami"], port=0, options=FAST) as replay:
        replay.hold(when=lambda ev: ev.session == 1 and ev.name == "DialEnd")
        async with running_daemon(settings_for(tmp_path, [replay.port])) as daemon:
            await replay.wait_held(timeout=30)
            await barrier(daemon)
            rows = daemon.live.rows()
            assert len(rows) == 1 and rows[0].call.linkedid == "1795701681.2"
            assert daemon.sessions[0].status.reconnects >= 1
            replay.release()
            await replay.wait_finished(timeout=30)
            await barrier(daemon)
            assert len(daemon.live) == 0


class RawAmi:
    """A minimal hand-driven AMI peer for what a replay cannot do: hostile bytes, silence."""

    def __init__(self, answer_pings: bool = True) -> None:
        self.answer_pings = answer_pings
        self.writers: list[asyncio.StreamWriter] = []
        self.logins = 0
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        try:
            while True:
                block = await reader.readuntil(b"\r\n\r\n")
                headers = dict(line.split(": ", 1) for line in block.decode().strip().split("\r\n") if ": " in line)
                aid = headers.get("ActionID", "")
                action = headers.get("Action", "").lower()
                if action == "login":
                    self.logins += 1
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\nMessage: Authentication accepted\r\n\r\n"
                                 "Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n".encode())
                elif action == "coreshowchannels":
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\n"
                                 "Message: Channels will follow\r\n\r\n"
                                 f"Event: CoreShowChannelsComplete\r\nActionID: {aid}\r\nEventList: Complete\r\n"
                                 "ListItems: 0\r\n\r\n".encode())
                elif action == "ping" and self.answer_pings:
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\nPing: Pong\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    def send(self, data: bytes) -> None:
        self.writers[-1].write(data)

    async def close(self) -> None:
        for w in self.writers:
            w.close()
        if self.server is not None:
            self.server.close()


NEWCHANNEL = (b"Event: Newchannel\r\nPrivilege: call,all\r\nTimestamp: 100.0\r\nChannel: SIP/101-00000001\r\n"
              b"ChannelState: 4\r\nChannelStateDesc: Ring\r\nCallerIDNum: 101\r\nCallerIDName: Jos\xc3\xa9\r\n"
              b"Exten: 0063727007886\r\nUniqueid: 100.1\r\nLinkedid: 100.1\r\n\r\n")


async def test_garbage_and_a_one_mebibyte_line_are_survived(tmp_path: Path) -> None:
    peer = RawAmi()
    port = await peer.start()
    try:
        async with running_daemon(settings_for(tmp_path, [port])) as daemon:
            session = daemon.sessions[0]
            await barrier(daemon)
            peer.send(b"\x00\xff\xfe garbage \r\n\r\n" + b"Event: Huge\r\nX: " + b"x" * (1024 * 1024) + b"\r\n\r\n")
            # the name split over two writes: whole-message decoding keeps "José" intact
            peer.send(NEWCHANNEL[:150])
            await asyncio.sleep(0)  # let the first half go out as its own segment
            peer.send(NEWCHANNEL[150:])
            await barrier(daemon)
            rows = daemon.live.rows()
            assert [r.call.src_name for r in rows] == ["José"]
            assert session.status.reconnects == 0 and peer.logins == 1
    finally:
        await peer.close()


async def test_silent_server_is_detected_and_reconnected(tmp_path: Path) -> None:
    peer = RawAmi(answer_pings=False)
    port = await peer.start()
    try:
        settings = settings_for(tmp_path, [port], ping_interval=0.1, ping_timeout=0.2)
        async with running_daemon(settings) as daemon:
            session = daemon.sessions[0]
            await wait_until(lambda: peer.logins >= 2, timeout=10, what="reconnect after pong timeout")
            assert session.status.pong_timeouts >= 1
    finally:
        await peer.close()


async def test_auth_failure_is_retried_until_it_succeeds(tmp_path: Path) -> None:
    async with ReplayServer(scenario_files("basic_outbound"), port=0,
                            options=ReplayOptions(fast=True, username="collector", secret="other")) as replay:
        async with running_daemon(settings_for(tmp_path, [replay.port], auth_retry=0.1)) as daemon:
            session = daemon.sessions[0]
            await wait_until(lambda: session.status.auth_failures >= 2, what="auth failures")
            assert not session.status.logged_in
            replay.options = replace(replay.options, secret="s3cret")  # the operator fixes manager.conf
            await wait_until(lambda: session.status.logged_in, what="login after fix")
            await replay.wait_finished(timeout=30)


async def test_two_servers_one_flapping_never_loses_the_healthy_ones_calls(tmp_path: Path) -> None:
    paths = scenario_files("concurrent_load")
    hold_at = _first_ts(paths) + 12.0
    async with ReplayServer(paths, port=0, options=FAST) as healthy, \
            ReplayServer(scenario_files("local_internal"), port=0,
                         options=ReplayOptions(fast=True, loop_forever=True)) as flappy:
        healthy.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= hold_at)
        async with running_daemon(settings_for(tmp_path, [healthy.port, flappy.port])) as daemon:
            await healthy.wait_held(timeout=30)
            await barrier(daemon, 0)
            expected = comparable(offline_calls(paths, hold_at))
            for _ in range(5):
                await wait_until(lambda: daemon.sessions[1].status.logged_in, what="flappy login")
                flappy.drop_clients()
                await wait_until(lambda: not daemon.sessions[1].status.logged_in, what="flappy drop")
                await barrier(daemon, 0)
                assert comparable(r.call for r in daemon.live.rows() if r.call.server_id == 1) == expected
            assert daemon.sessions[1].status.reconnects >= 5
            assert daemon.sessions[0].status.reconnects == 0


async def test_server_side_filter_leaves_only_tracked_events(tmp_path: Path) -> None:
    # transfers and pickups emit call-class events the tracker does not use (BlindTransfer, Hold …)
    ignored = {}
    for send_filter in ("no", "yes"):
        async with ReplayServer(scenario_files("dev_transfers"), port=0, options=FAST) as replay:
            settings = settings_for(tmp_path / send_filter, [replay.port], server_extra=f"send_filter = {send_filter}")
            async with running_daemon(settings) as daemon:
                await replay.wait_finished(timeout=30)
                await barrier(daemon)
                assert len(daemon.live) == 0
                ignored[send_filter] = daemon.tracker.stats(1).ignored
    assert ignored["no"] > 0 and ignored["yes"] == 0


def test_trace_fixtures_are_gzip_or_plain() -> None:
    # the tools read .ami.gz as well as .ami
    gz = scenario_files("concurrent_load")[0]
    assert gz.suffix == ".gz" and gzip.decompress(gz.read_bytes())[:22] == b"Asterisk Call Manager/"
