"""The replay AMI server and the recorder, over real TCP on 127.0.0.1 (ephemeral ports).

Synchronisation is always by awaiting a condition (a block on the socket, a server counter, a hold point),
never by sleeping; every test is bounded by ``asyncio.timeout``. Expected data is derived from the bundled
traces independently of ``collector.tools.replay``: the unsolicited events of a trace are exactly its blocks with a
``Timestamp`` header (the banner/Login response, the recorder's action replies and the login-time
``FullyBooted`` have none).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from collector.tools.record import AmiLoginError, record
from collector.tools.replay import (
    EventMask,
    PassRewriter,
    ReplayEvent,
    ReplayServer,
    TraceSession,
    serve,
    split_sessions,
)
from collector.tools.traces import read_trace
from tests.conftest import ReplayFactory, scenario_files

T = 10.0  # per-test bound (seconds)


# ------------------------------------------------------------------------------------------------ helpers

def blocks_of(data: bytes) -> list[bytes]:
    """Every block of a CRLF AMI stream, terminator included."""
    parts = data.split(b"\r\n\r\n")
    return [p + b"\r\n\r\n" for p in parts[:-1] if p]


def trace_events(path: Path) -> list[bytes]:
    return [b for b in blocks_of(read_trace(path)) if b"\r\nTimestamp: " in b]


def headers(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        k, sep, v = line.partition(": ")
        if not sep:
            k, sep, v = line.partition(":")
        if sep and k not in out:
            out[k] = v
    return out


def key_order(raw: bytes) -> list[str]:
    return [line.split(":", 1)[0] for line in raw.decode().split("\r\n") if line]


def classes(h: dict[str, str]) -> set[str]:
    return {c for c in h.get("Privilege", "").split(",") if c and c != "all"}


@dataclass
class Block:
    raw: bytes
    h: dict[str, str]

    @property
    def event(self) -> str:
        return self.h.get("Event", "")


class AmiClient:
    """A minimal AMI client that keeps every block's raw bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, banner: bytes) -> None:
        self.reader, self.writer, self.banner = reader, writer, banner

    @classmethod
    async def connect(cls, port: int) -> AmiClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, await reader.readline())

    def send(self, action: str, **hdrs: str) -> None:
        text = f"Action: {action}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        self.writer.write(text.encode())

    async def block(self) -> Block | None:
        """The next block, or None at EOF / reset."""
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return Block(raw, headers(raw))

    async def until_response(self, action_id: str) -> tuple[list[Block], Block]:
        """Blocks up to the response carrying ``action_id`` (returned separately)."""
        before: list[Block] = []
        while True:
            b = await self.block()
            assert b is not None, f"EOF before the response to {action_id}"
            if "Response" in b.h and b.h.get("ActionID") == action_id:
                return before, b
            before.append(b)

    async def login(self, events: str = "on", username: str = "u", secret: str = "s") -> Block:
        self.send("Login", Username=username, Secret=secret, Events=events, ActionID="login-1")
        _, resp = await self.until_response("login-1")
        return resp

    async def list_items(self) -> tuple[list[Block], Block]:
        """After an ``EventList: start`` response: the items and the ``…Complete`` event."""
        items: list[Block] = []
        while True:
            b = await self.block()
            assert b is not None
            if b.event.endswith("Complete"):
                return items, b
            items.append(b)

    async def drain_to_eof(self) -> list[Block]:
        out = []
        while (b := await self.block()) is not None:
            out.append(b)
        return out

    async def events_until_finished(self, server: ReplayServer) -> list[Block]:
        """Every event up to the end of the replay (read while it streams: fast mode waits for the reader);
        once the server has sent everything a Ping is sent, and its reply marks the end of the stream."""

        async def mark_end() -> None:
            await server.wait_finished()
            self.send("Ping", ActionID="end")

        marker = asyncio.create_task(mark_end())
        try:
            before, _ = await self.until_response("end")
        finally:
            marker.cancel()
        return before

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def connect_login(server: ReplayServer, events: str = "on") -> AmiClient:
    client = await AmiClient.connect(server.port)
    resp = await client.login(events)
    assert resp.h["Response"] == "Success"
    return client


# ------------------------------------------------------------------------------------------------ login / actions

async def test_login_ok_banner_and_fully_booted(replay_server: ReplayFactory, traces_dir: Path) -> None:
    async with asyncio.timeout(T):
        server = await replay_server("basic_outbound", fast=True, username="rec", secret="pw")
        server.hold(after_events=0)
        client = await AmiClient.connect(server.port)
        assert client.banner == b"Asterisk Call Manager/9.0.0\r\n"
        resp = await client.login(username="rec", secret="pw")
        assert resp.raw == b"Response: Success\r\nActionID: login-1\r\nMessage: Authentication accepted\r\n\r\n"
        fully_booted = await client.block()
        assert fully_booted is not None
        recorded = blocks_of(read_trace(traces_dir / "basic_outbound.ami"))[1]
        assert fully_booted.raw == recorded  # the trace's own login-time FullyBooted (Uptime 80)
        await server.wait_clients(1)
        client.send("Login", Username="rec", Secret="pw", ActionID="again")
        _, again = await client.until_response("again")
        assert again.h["Message"] == "Already authenticated"
        await client.close()


async def test_login_failure_closes_like_asterisk(replay_server: ReplayFactory) -> None:
    async with asyncio.timeout(T):
        server = await replay_server("basic_outbound", fast=True, username="rec", secret="pw")
        client = await AmiClient.connect(server.port)
        client.send("Ping", ActionID="early")
        _, denied = await client.until_response("early")
        assert denied.raw == b"Response: Error\r\nActionID: early\r\nMessage: Permission denied\r\n\r\n"
        client.send("Login", Username="rec", Secret="wrong", ActionID="l")
        _, resp = await client.until_response("l")
        assert resp.raw == b"Response: Error\r\nActionID: l\r\nMessage: Authentication failed\r\n\r\n"
        assert await client.drain_to_eof() == []  # and the server hangs up
        assert server.events_sent == 0 and server.logins_total == 0
        await client.close()


async def test_ping_unknown_events_logoff(replay_server: ReplayFactory) -> None:
    async with asyncio.timeout(T):
        server = await replay_server("basic_outbound", fast=True)
        client = await connect_login(server, events="off")
        client.send("Ping", ActionID="p1")
        events, pong = await client.until_response("p1")
        assert events == []  # Events: off → not even FullyBooted
        assert key_order(pong.raw) == ["Response", "ActionID", "Ping", "Timestamp"]
        assert pong.h["Ping"] == "Pong" and float(pong.h["Timestamp"]) > 1.7e9
        client.send("Frobnicate", ActionID="x1")
        _, err = await client.until_response("x1")
        assert err.raw == b"Response: Error\r\nActionID: x1\r\nMessage: Invalid/unknown command\r\n\r\n"
        client.writer.write(b"Foo: bar\r\nActionID: x2\r\n\r\n")
        _, missing = await client.until_response("x2")
        assert missing.h["Message"] == "Missing action in request"
        client.send("Events", EventMask="call,system", ActionID="e1")
        _, ev = await client.until_response("e1")
        assert (ev.h["Response"], ev.h["Events"]) == ("Success", "On")
        client.send("Logoff", ActionID="bye")
        _, bye = await client.until_response("bye")
        assert bye.h["Response"] == "Goodbye"
        assert await client.drain_to_eof() == []
        await client.close()


# ------------------------------------------------------------------------------------------------ event masks / filters

async def test_events_mask_call_system_drops_dialplan_and_cdr(replay_server: ReplayFactory, traces_dir: Path) -> None:
    async with asyncio.timeout(T):
        server = await replay_server("basic_outbound", fast=True)
        client = await connect_login(server, events="call,system")
        got = await client.events_until_finished(server)
        assert got[0].event == "FullyBooted"
        names = {b.event for b in got}
        assert not names & {"VarSet", "Newexten", "Cdr", "SuccessfulAuth"}
        expected = [b for b in trace_events(traces_dir / "basic_outbound.ami")
                    if classes(headers(b)) <= {"call", "system"}]
        assert [b.raw for b in got[1:]] == expected
        assert {"Newchannel", "Hangup", "DialBegin", "BridgeEnter"} <= names
        await client.close()


async def test_events_action_and_filters(replay_server: ReplayFactory, traces_dir: Path) -> None:
    async with asyncio.timeout(T):
        server = await replay_server("local_internal", fast=True)
        server.hold(after_events=0)  # nothing flows until the session is configured
        client = await connect_login(server, events="off")
        client.send("Events", EventMask="call", ActionID="e")
        _, resp = await client.until_response("e")
        assert resp.h["Events"] == "On"
        client.send("Filter", Operation="Add", Filter=r"Event: (Newchannel|Hangup)\b", ActionID="f1")
        client.send("Filter", Operation="Add", Filter="!Channel: Local/", ActionID="f2")
        client.send("Filter", Operation="Add", Filter="(unclosed", ActionID="f3")
        for aid, ok in (("f1", True), ("f2", True), ("f3", False)):
            _, r = await client.until_response(aid)
            assert (r.h["Response"] == "Success") is ok
        server.release()
        got = await client.events_until_finished(server)
        expected = [b for b in trace_events(traces_dir / "local_internal.ami")
                    if headers(b)["Event"] in ("Newchannel", "Hangup")
                    and not headers(b)["Channel"].startswith("Local/")]
        assert [b.raw for b in got] == expected and len(expected) >= 20
        await client.close()


def test_event_mask_parsing() -> None:
    assert EventMask.parse("on").allows(frozenset({"security"}))
    assert not EventMask.parse("off").allows(frozenset())
    m = EventMask.parse("call, system")
    assert m.allows(frozenset({"call"})) and not m.allows(frozenset({"call", "dialplan"}))
    assert not m.allows(frozenset({"cdr"}))
    assert EventMask.parse("3") == EventMask(frozenset({"system", "call"}))


# ------------------------------------------------------------------------------------------------ fast stream

@pytest.mark.parametrize("scenario", ["basic_outbound", "dev_originate_ivr", "concurrent_load"])
async def test_fast_stream_equals_trace_events(replay_server: ReplayFactory, traces_dir: Path,
                                                scenario: str) -> None:
    async with asyncio.timeout(2 * T):
        (path,) = scenario_files(scenario)
        server = await replay_server(path, fast=True)
        client = await connect_login(server)
        got = await client.events_until_finished(server)
        expected = trace_events(path)
        assert got[0].event == "FullyBooted"
        assert len(got) - 1 == len(expected) == server.events_sent
        assert [b.raw for b in got[1:]] == expected  # byte for byte, CRLF included
        # unsolicited events that carry a foreign ActionID (OriginateResponse) are not the recorder's: kept
        if scenario == "dev_originate_ivr":
            assert sum(b.event == "OriginateResponse" for b in got) == 2
        await client.close()


# ------------------------------------------------------------------------------------------------ CoreShowChannels

def recorded_reply(path: Path, action_id: str) -> list[bytes]:
    """The trace's own reply to the recorder's CoreShowChannels: Response, items, Complete."""
    return [b for b in blocks_of(read_trace(path)) if f"\r\nActionID: {action_id}\r\n".encode() in b]


def duration_s(value: str) -> int:
    h, m, s = map(int, value.split(":"))
    return h * 3600 + m * 60 + s


async def test_core_show_channels_at_recorded_point_matches_asterisk(replay_server: ReplayFactory,
                                                                     traces_dir: Path) -> None:
    """Hold the stream where the recorder asked Asterisk; our reply must equal Asterisk's."""
    async with asyncio.timeout(T):
        path = traces_dir / "basic_outbound.ami"
        blocks = blocks_of(read_trace(path))
        reply = recorded_reply(path, "rec-csc-1")
        at = blocks.index(reply[0])
        n_before = sum(1 for b in blocks[:at] if b"\r\nTimestamp: " in b)
        # Asterisk answered at some moment between the events around the reply; we stand at the one before
        stamps = [float(headers(b)["Timestamp"]) for b in blocks if b"\r\nTimestamp: " in b]
        gap = stamps[n_before] - stamps[n_before - 1]
        server = await replay_server(path, fast=True)
        server.hold(after_events=n_before)
        client = await connect_login(server, events="off")
        await server.wait_held()
        client.send("CoreShowChannels", ActionID="rec-csc-1")
        _, resp = await client.until_response("rec-csc-1")
        items, complete = await client.list_items()
        mine = [resp.raw] + [b.raw for b in items] + [complete.raw]
        assert len(mine) == len(reply) == 4
        for ours, theirs in zip(mine, reply, strict=False):
            h_ours, h_theirs = headers(ours), headers(theirs)
            assert key_order(ours) == key_order(theirs)
            if "Duration" in h_theirs:
                ours_s, theirs_s = duration_s(h_ours.pop("Duration")), duration_s(h_theirs.pop("Duration"))
                assert ours_s <= theirs_s <= ours_s + gap + 1
            assert h_ours == h_theirs
        server.release()
        await client.close()


async def test_core_show_channels_mid_stream_equals_client_view(replay_server: ReplayFactory,
                                                                traces_dir: Path) -> None:
    """Stop the stream before every channel event and ask: each reply lists exactly the channels the events
    received so far leave up (Newchannel and no Hangup), with the latest state/name/linkedid they carried."""
    async with asyncio.timeout(T):
        shape = key_order(recorded_reply(traces_dir / "basic_outbound.ami", "rec-csc-1")[1])
        server = await replay_server("local_internal", fast=True)
        resume_from = [0]

        def stop_here(ev: ReplayEvent) -> bool:
            return ev.index >= resume_from[0] and ev.name in ("Newchannel", "Hangup", "Newstate", "BridgeEnter")

        server.hold(when=stop_here)
        client = await connect_login(server)
        tracked: dict[str, dict[str, str]] = {}
        checked = nonempty = 0
        while True:
            await server.wait_for(lambda: server.held or server.finished.is_set())
            if server.finished.is_set():
                break
            client.send("CoreShowChannels", ActionID=f"csc-{checked}")
            before, resp = await client.until_response(f"csc-{checked}")
            for b in before:  # the events sent before the reply: the client's view of the channels
                h, ev, uid = b.h, b.event, b.h.get("Uniqueid", "")
                if ev == "Newchannel":
                    tracked[uid] = dict(h)
                elif ev == "Hangup":
                    tracked.pop(uid, None)
                elif uid in tracked and "ChannelState" in h:
                    tracked[uid].update({k: h[k] for k in ("Channel", "ChannelState", "ChannelStateDesc",
                                                           "Linkedid", "CallerIDNum") if k in h})
            assert resp.h["EventList"] == "start" and resp.h["Message"] == "Channels will follow"
            items, complete = await client.list_items()
            assert int(complete.h["ListItems"]) == len(items)
            assert key_order(complete.raw) == ["Event", "ActionID", "EventList", "ListItems"]
            listed = {i.h["Uniqueid"]: i.h for i in items}
            assert listed.keys() == tracked.keys()
            for item in items:
                assert key_order(item.raw) == shape
                for k in ("Channel", "ChannelState", "ChannelStateDesc", "Linkedid", "CallerIDNum"):
                    assert item.h[k] == tracked[item.h["Uniqueid"]][k], (item.h["Uniqueid"], k)
            checked += 1
            nonempty += bool(items)
            resume_from[0] = server.events_sent + 1
            server.release()
            server.hold(when=stop_here)
        server.release()
        stops = [b for b in trace_events(traces_dir / "local_internal.ami")
                 if headers(b)["Event"] in ("Newchannel", "Hangup", "Newstate", "BridgeEnter")]
        assert checked == len(stops) and nonempty >= len(stops) - 12
        assert not server.channels()  # every call of the trace ended
        await client.close()


# ------------------------------------------------------------------------------------------------ sessions

async def test_two_files_are_two_sessions_with_a_drop_between(replay_server: ReplayFactory,
                                                              traces_dir: Path) -> None:
    async with asyncio.timeout(T):
        part1, part2 = traces_dir / "ami_reconnect.ami", traces_dir / "ami_reconnect.part2.ami"
        ev1, ev2 = trace_events(part1), trace_events(part2)
        server = await replay_server(part1, part2, fast=True)
        server.hold(after_events=len(ev1))  # park at the first event of part2
        first = await connect_login(server)
        got1 = await first.drain_to_eof()  # the server closes the connection at the session boundary
        assert got1[0].event == "FullyBooted"
        assert [b.raw for b in got1[1:]] == ev1
        assert server.session_index == 1
        await first.close()

        second = await AmiClient.connect(server.port)
        assert second.banner == b"Asterisk Call Manager/9.0.0\r\n"
        await second.login()
        await server.wait_held()
        # the recorded resync of part2 is what this session's Asterisk had up at its start
        second.send("CoreShowChannels", ActionID="resync-1")
        before, _ = await second.until_response("resync-1")
        items, _ = await second.list_items()
        recorded = [headers(b) for b in recorded_reply(part2, "resync-1") if b.startswith(b"Event: CoreShowChannel\r")]
        assert len(recorded) == 10
        assert {i.h["Uniqueid"] for i in items} == {r["Uniqueid"] for r in recorded}
        assert {i.h["BridgeId"] for i in items} == {r["BridgeId"] for r in recorded}
        server.release()
        got2 = before + await second.events_until_finished(server)
        fully_booted = blocks_of(read_trace(part2))[1]
        assert got2[0].raw == fully_booted and b"Uptime: 292" in fully_booted
        assert [b.raw for b in got2[1:]] == ev2
        assert server.connections_total == 2
        await second.close()


async def test_drop_clients_mid_stream_then_resume(replay_server: ReplayFactory, traces_dir: Path) -> None:
    async with asyncio.timeout(T):
        expected = trace_events(traces_dir / "inbound_did.ami")
        server = await replay_server("inbound_did", fast=True)
        server.hold(after_events=50)
        client = await connect_login(server)
        await server.wait_held()
        assert server.drop_clients() == 1
        got = await client.drain_to_eof()  # whatever arrived before the reset; then EOF/reset
        assert len(got) <= 51
        await server.wait_clients(0, logged_in=False)
        await client.close()
        # nobody logged in: the stream waits (pause_when_idle) and the next client continues where it stopped
        again = await connect_login(server)
        server.release()
        rest = await again.events_until_finished(server)
        assert [b.raw for b in rest[1:]] == expected[50:]
        await again.close()


async def test_misbehaving_clients_do_not_hurt_the_server(replay_server: ReplayFactory) -> None:
    async with asyncio.timeout(T):
        server = await replay_server("concurrent_load", fast=True)
        junk = await AmiClient.connect(server.port)
        junk.writer.write(bytes(range(256)) * 50 + b"\r\n\r\n")  # binary garbage
        junk.writer.write(b"X" * 200_000 + b"\r\n\r\n")  # an endless line
        junk.writer.write(b"Action: Login\r\nUsername: a\r\n\r\nAction: Ping\r\nActionID: j\r\n\r\n")
        _, pong = await junk.until_response("j")
        assert pong.h["Ping"] == "Pong"
        junk.writer.transport.abort()  # vanish mid-stream, with unread events piling up
        reader = await connect_login(server)
        first = await reader.block()
        assert first is not None
        rude = await connect_login(server)
        rude.send("Ping", ActionID="half")  # ... and disconnects before reading anything
        rude.writer.transport.abort()
        got = await reader.events_until_finished(server)
        assert len(got) > 10_000 and server.events_sent == 16106
        await reader.close()


# ------------------------------------------------------------------------------------------------ timing / loop

async def test_timed_playback_follows_timestamps(replay_server: ReplayFactory, traces_dir: Path) -> None:
    async with asyncio.timeout(T):
        events = [headers(b) for b in trace_events(traces_dir / "basic_outbound.ami")]
        span = float(events[-1]["Timestamp"]) - float(events[0]["Timestamp"])  # ~10 s
        speed = 20.0
        server = await replay_server("basic_outbound", speed=speed)
        client = await connect_login(server)
        t0 = time.monotonic()
        got = await client.events_until_finished(server)
        elapsed = time.monotonic() - t0
        assert len(got) - 1 == len(events)
        assert span / speed * 0.9 <= elapsed <= span / speed + 1.5
        await client.close()


async def test_loop_mode_brings_new_ids_each_pass(replay_server: ReplayFactory) -> None:
    async with asyncio.timeout(T):
        server = await replay_server("basic_outbound", fast=True, loop_forever=True)
        client = await connect_login(server)
        newchannels: list[dict[str, str]] = []
        last_ts = 0.0
        while len(newchannels) < 6:  # three passes, two channels each
            b = await client.block()
            assert b is not None
            if "Timestamp" in b.h:
                ts = float(b.h["Timestamp"])
                assert ts >= last_ts - 0.01  # timestamps keep going forward across passes
                last_ts = ts
            if b.event == "Newchannel":
                newchannels.append(b.h)
        server.hold(after_events=server.events_sent)
        await server.wait_held()
        uids = [h["Uniqueid"] for h in newchannels]
        names = [h["Channel"] for h in newchannels]
        assert len(set(uids)) == 6 and len(set(names)) == 6
        # each pass: A-leg then B-leg of one call
        for a, b_leg in zip(newchannels[::2], newchannels[1::2], strict=False):
            assert a["Linkedid"] == a["Uniqueid"] and b_leg["Linkedid"] == a["Uniqueid"]
        assert names[0] == "SIP/101-00000002" and names[2] != names[0] and names[2].startswith("SIP/101-")
        assert server.pass_index >= 2 and server.connections_total == 1  # the wrap does not drop the client
        server.release()
        await client.close()


@pytest.mark.parametrize("timed", [True, False], ids=["timed-wall-clock", "fast-trace-clock"])
async def test_loop_stamps_synthetic_hangups_with_the_current_time(replay_server: ReplayFactory, traces_dir: Path,
                                                                  tmp_path: Path, timed: bool) -> None:
    """the end-of-pass synthetic Hangups (and Ping replies) carry the clock of the events around them,
    not the trace's own old times (a daemon's lag metric jumped by years once per pass)."""
    data = read_trace(traces_dir / "basic_outbound.ami")
    short = tmp_path / "left_up.ami"
    short.write_bytes(data[:data.index(b"Event: HangupRequest")])  # both channels still up at the end of a pass
    stamps = [float(headers(b)["Timestamp"]) for b in trace_events(short)]
    first, last = stamps[0], stamps[-1]
    async with asyncio.timeout(T):
        if timed:
            server = await replay_server(short, speed=50.0, loop_forever=True)
        else:
            server = await replay_server(short, fast=True, loop_forever=True)
        offset = PassRewriter.for_sessions(server.sessions, 1).epoch_offset
        t_start = time.time()
        client = await connect_login(server)
        hangups, prev, seen = 0, -1.0, 0
        while hangups < 6:  # three passes, two synthetic Hangups each
            b = await client.block()
            assert b is not None
            if b.event == "Hangup":
                hangups += 1
            if "Timestamp" not in b.h:
                continue
            ts, seen = float(b.h["Timestamp"]), seen + 1
            assert ts >= prev - 0.01, (b.event, ts, prev)  # monotonic within a small tolerance
            if timed:  # a live Asterisk's clock: now
                assert t_start - 0.5 <= ts <= time.time() + 0.5, (b.event, ts, t_start)
            else:  # inside the pass-shifted time range of its pass
                k = int((ts - first + 1.0) // offset)
                assert first + k * offset - 0.01 <= ts <= last + k * offset + 0.01, (b.event, ts, k)
            prev = ts
        server.hold(after_events=server.events_sent)
        await server.wait_held()
        assert server.pass_index >= 2 and seen >= 3 * len(stamps)
        client.send("Ping", ActionID="p")
        _, pong = await client.until_response("p")
        assert float(pong.h["Timestamp"]) >= prev - 0.01
        if timed:
            assert abs(float(pong.h["Timestamp"]) - time.time()) < 0.5
        server.release()
        await client.close()


def test_pass_rewriter_is_consistent() -> None:
    raw = (b"Event: Newchannel\r\nTimestamp: 1795701681.983426\r\nChannel: Local/102@ringgroup-00000003;1\r\n"
           b"Uniqueid: 1795701681.2\r\nLinkedid: 1795701681.2\r\nBridgeUniqueid: 0283817d-5311-4df5-9abc-98b392ce051f"
           b"\r\nDestChannel: IAX2/201-14296\r\nEventTV: 2026-11-26T14:01:19.976+0000\r\n\r\n")
    rw = PassRewriter(k=2, epoch_offset=100, hex_stride=0x10)
    out = headers(rw(raw))
    assert out["Timestamp"] == "1795701881.983426"
    assert out["Uniqueid"] == out["Linkedid"] == "1795701881.2"
    assert out["Channel"] == "Local/102@ringgroup-00000023;1"
    assert out["BridgeUniqueid"] == "0283817f-5311-4df5-9abc-98b392ce051f"
    assert out["DestChannel"] == "IAX2/201-79832"
    assert out["EventTV"] == "2026-11-26T14:01:19.976+0000"
    assert PassRewriter(0, 100, 16)(raw) == raw


def test_sessions_split_on_banner_and_skip_recorder_traffic(traces_dir: Path) -> None:
    data = read_trace(traces_dir / "ami_reconnect.ami") + read_trace(traces_dir / "ami_reconnect.part2.ami")
    sessions: list[TraceSession] = split_sessions(data)
    assert len(sessions) == 2
    assert [s.event_count for s in sessions] == [len(trace_events(traces_dir / "ami_reconnect.ami")),
                                                 len(trace_events(traces_dir / "ami_reconnect.part2.ami"))]


async def test_serve_reports_port_and_stops_when_done(traces_dir: Path) -> None:
    async with asyncio.timeout(T):
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(serve([traces_dir / "no_answer_cancel.ami"], port=0, fast=True, ready=ready,
                                         exit_when_done=True))
        port = await ready
        client = await AmiClient.connect(port)
        await client.login()
        got = await client.drain_to_eof()  # serve() returns after the trace and closes the connection
        assert len(got) - 1 == len(trace_events(traces_dir / "no_answer_cancel.ami"))
        await task
        await client.close()


# ------------------------------------------------------------------------------------------------ record

async def test_record_a_replay_reproduces_the_trace(replay_server: ReplayFactory, traces_dir: Path,
                                                   tmp_path: Path) -> None:
    async with asyncio.timeout(T):
        path = traces_dir / "basic_outbound.ami"
        server = await replay_server(path, fast=True)
        out = tmp_path / "rec.ami"
        stop = asyncio.Event()
        task = asyncio.create_task(record("127.0.0.1", server.port, "rec", "pw", out, events="on", stop=stop))
        await server.wait_finished()
        stop.set()
        n = await task
        data = out.read_bytes()
        assert n == len(data)
        # the trace minus what answered the recorder's own actions, then our Logoff's Goodbye
        trace = read_trace(path)
        own = [b for b in blocks_of(trace) if not b.startswith(b"Event: FullyBooted")
               and b"\r\nTimestamp: " not in b][1:]  # [0] = banner + Login response: part of the stream
        expected = trace
        for b in own:
            expected = expected.replace(b, b"", 1)
        assert data.startswith(expected)
        assert data[len(expected):] == b"Response: Goodbye\r\nMessage: Thanks for all the fish.\r\n\r\n"
        assert [b for b in blocks_of(data) if b"\r\nTimestamp: " in b] == trace_events(path)


async def test_record_refused_login(replay_server: ReplayFactory, tmp_path: Path) -> None:
    async with asyncio.timeout(T):
        server = await replay_server("basic_outbound", fast=True, username="rec", secret="pw")
        out = tmp_path / "refused.ami"
        with pytest.raises(AmiLoginError):
            await record("127.0.0.1", server.port, "rec", "bad", out)
        assert out.read_bytes() == (b"Asterisk Call Manager/9.0.0\r\n"
                                    b"Response: Error\r\nMessage: Authentication failed\r\n\r\n")


# ------------------------------------------------------------------------------------------------ Hangup

async def test_hangup_action_ends_the_channel_and_its_bridged_peer(replay_server: ReplayFactory) -> None:
    """``Action: Hangup`` as Asterisk answers it: Success, then a Hangup (cause 16) for the channel and the
    peers in its bridge; the trace's own later events for them are never sent; an unknown channel or none
    named is an Error."""
    async with asyncio.timeout(T):
        server = await replay_server("concurrent_load", fast=True)

        def pairs() -> dict[str, list[str]]:
            by_bridge: dict[str, list[str]] = {}
            for rec in server.channels():
                if rec.bridge_id:
                    by_bridge.setdefault(rec.bridge_id, []).append(rec.uniqueid)
            return {b: m for b, m in by_bridge.items() if len(m) == 2}

        def two_in_a_bridge(ev: ReplayEvent) -> bool:
            return ev.index > 200 and bool(pairs())

        server.hold(when=two_in_a_bridge)
        client = await connect_login(server)
        await server.wait_for(lambda: server.held)
        recs = server.channels()
        members = next(iter(pairs().values()))
        target = next(r for r in recs if r.uniqueid == members[0])
        channel = target.fields["Channel"]
        untouched = {r.uniqueid for r in recs} - set(members)

        client.send("Hangup", ActionID="h1", Channel=channel)
        _, resp = await client.until_response("h1")
        assert resp.h["Response"] == "Success" and resp.h["Message"] == "Channel Hungup"
        client.send("Ping", ActionID="p1")
        after, _ = await client.until_response("p1")
        hangups = [b for b in after if b.event == "Hangup"]
        assert sorted(b.h["Uniqueid"] for b in hangups) == sorted(members)
        assert all(b.h["Cause"] == "16" and b.h["Cause-txt"] == "Normal Clearing" for b in hangups)
        assert {r.uniqueid for r in server.channels()} == untouched

        client.send("Hangup", ActionID="h2", Channel=channel)  # gone now
        _, resp = await client.until_response("h2")
        assert resp.h["Response"] == "Error" and resp.h["Message"] == "No such channel"
        client.send("Hangup", ActionID="h3")
        _, resp = await client.until_response("h3")
        assert resp.h["Response"] == "Error" and resp.h["Message"] == "No channel specified"

        server.release()
        rest = await client.events_until_finished(server)
        assert rest, "the trace went on"
        assert not [b for b in rest if b.h.get("Uniqueid") in members], "no recorded event of a hung-up channel"
        assert not server.channels()
        await client.close()
