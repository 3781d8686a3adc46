"""One test per panoramisk 1.4 defect that collector/ami/protocol.py and ami_session.py work around
(notes/ami.md §5.4); the over-the-wire ones (UTF-8 split, silent server) are in test_daemon_e2e.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from collector.ami import protocol as ami_protocol
from collector.ami.framing import AmiMessage
from collector.ami.protocol import LAG_WINDOW, FramedAMIProtocol, ReaderOptions
from collector.ami.session import AmiSession
from collector.ami.settings import AmiServerSettings, CollectorSettings, Secret
from collector.tracking.tracker import TRACKED_EVENTS, TRACKER_KEYS


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False
        self.max_size = 256 * 1024  # asyncio's selector transport reads this many bytes per loop iteration

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _protocol(sink: Callable[[AmiMessage], None]) -> tuple[FramedAMIProtocol, _Transport]:
    """The protocol with a per-message sink (it hands the sink one list per read slice)."""
    def deliver(_sid: int, batch: list[AmiMessage]) -> None:
        for m in batch:
            sink(m)

    proto = FramedAMIProtocol(deliver, "t")
    transport = _Transport()
    proto.connection_made(transport)
    return proto, transport


async def test_an_exception_in_the_event_handler_does_not_close_the_connection(
        caplog: pytest.LogCaptureFixture) -> None:
    seen: list[AmiMessage] = []

    def sink(msg: AmiMessage) -> None:
        seen.append(msg)
        if msg.get("Event") == "Boom":
            raise RuntimeError("handler bug")

    proto, transport = _protocol(sink)
    proto.data_received(b"Event: Boom\r\nX: 1\r\n\r\n")
    proto.data_received(b"Event: Hangup\r\nUniqueid: 1.1\r\n\r\n")
    assert [m["Event"] for m in seen] == ["Boom", "Hangup"]
    assert not transport.closed
    assert "ami event handling failed server=t events=1" in caplog.text


async def test_repeated_event_header_does_not_close_the_connection() -> None:
    seen: list[AmiMessage] = []
    proto, transport = _protocol(seen.append)
    proto.data_received(b"Event: UserEvent\r\nUserEvent: x\r\nEvent: other\r\n\r\n")
    assert seen[0]["Event"] == "UserEvent" and not transport.closed


async def test_replies_to_panoramisk_actions_resolve_their_futures_and_skip_the_sink() -> None:
    seen: list[AmiMessage] = []
    proto, transport = _protocol(seen.append)
    fut = proto.send({"Action": "Ping", "ActionID": "p-1"})
    assert b"Action: Ping" in transport.written
    proto.data_received(b"Response: Success\r\nActionID: p-1\r\nPing: Pong\r\n\r\n")
    assert (await asyncio.wait_for(fut, 1)).ping == "Pong"
    assert seen == []


async def test_untimed_messages_get_the_streams_clock() -> None:
    seen: list[AmiMessage] = []
    proto, _ = _protocol(seen.append)
    proto.data_received(b"Event: Newstate\r\nTimestamp: 1000.5\r\nUniqueid: 1\r\n\r\n"
                        b"Event: CoreShowChannel\r\nActionID: resync-x-1\r\nUniqueid: 1\r\n\r\n")
    rx = float(seen[1]["_RxTime"])
    assert 1000.5 <= rx < 1001.5  # the stream's clock, not the local wall clock


def _read(proto: FramedAMIProtocol, age: float, n: int = 3, ts: str | None = None) -> None:
    """One read of ``n`` events whose Timestamp is ``age`` seconds old (or the literal ``ts``)."""
    stamp = ts if ts is not None else f"{time.time() - age:.6f}"
    proto.data_received(b"".join(b"Event: Newstate\r\nTimestamp: %s\r\nUniqueid: 1.%d\r\n\r\n" % (stamp.encode(), i)
                                 for i in range(n)))


@pytest.mark.parametrize("days", [-3.0, 3.0], ids=["days-old", "days-ahead"])
async def test_one_odd_timestamp_does_not_move_the_lag_gauge(days: float) -> None:
    # one event stamped days off (a replay's stale synthetic Hangup, a clock step) made the gauge
    # jump by days (or, dated ahead, lowered the floor for the rest of the connection)
    proto, _ = _protocol(lambda _m: None)
    for _ in range(20):
        _read(proto, 0.0)
    _read(proto, 0.0, n=1, ts=f"{time.time() + days * 86400:.6f}")
    assert proto.lag < 0.5
    for _ in range(LAG_WINDOW):
        _read(proto, 0.0)
        assert proto.lag < 0.5


async def test_a_real_backlog_shows_in_the_lag_gauge_within_the_window(caplog: pytest.LogCaptureFixture,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ami_protocol, "LAG_CHECK_SECONDS", 0.0)  # the warning's check: every read, not 1/s
    proto, _ = _protocol(lambda _m: None)
    for _ in range(20):
        _read(proto, 0.0)
    assert proto.lag < 0.5
    reads = 0
    while proto.lag < 4.5:
        _read(proto, 5.0)
        reads += 1
        assert reads <= LAG_WINDOW
    for _ in range(LAG_WINDOW):
        _read(proto, 5.0)
    assert 4.5 < proto.lag < 5.5
    assert "ami reader behind server=t" in caplog.text
    for _ in range(LAG_WINDOW):  # caught up
        _read(proto, 0.0)
    assert proto.lag < 0.5


async def test_the_lag_gauge_ignores_messages_without_a_real_timestamp() -> None:
    proto, _ = _protocol(lambda _m: None)
    _read(proto, 0.0)
    for value in ("nan", "inf", "garbage"):
        _read(proto, 0.0, ts=value)
        assert proto.lag == 0.0
    for _ in range(LAG_WINDOW):  # untimed messages: stamped on the stream clock, but no lag sample
        proto.data_received(b"Event: FullyBooted\r\nStatus: Fully Booted\r\n\r\n")
    assert proto._lag_samples == proto._lag_samples[:1] and proto.lag == 0.0


def _session(port: int, **kw: float) -> AmiSession:
    cfg = AmiServerSettings(name="s", host="127.0.0.1", port=port, username="u", secret=Secret("p"), server_id=1)
    return AmiSession(cfg, CollectorSettings(**kw), lambda _sid, _batch: None,  # type: ignore[arg-type]
                      events=TRACKED_EVENTS, keys=TRACKER_KEYS)


async def test_an_action_while_disconnected_fails_at_once_instead_of_hanging() -> None:
    session = _session(1)
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(session.resync(), 1)


async def test_logged_in_means_login_accepted_not_tcp_connected(tmp_path: Path) -> None:
    # panoramisk's connect() resolves on TCP connect; a server that never answers Login is not "up"
    accepted = asyncio.Event()

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        accepted.set()
        try:
            await reader.read()
        finally:
            writer.close()  # else its transport is collected later, warning inside whichever test runs then

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    session = _session(port, ping_interval=3600)
    await session.start()
    try:
        await asyncio.wait_for(accepted.wait(), 5)
        await asyncio.sleep(0.2)  # the server stays mute: nothing to await but time
        assert session.status.connected and not session.status.logged_in and not session.logged_in.is_set()
    finally:
        await session.stop()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


def _full_read(size: int) -> bytes:
    block = b"Event: Newstate\r\nUniqueid: 1.1\r\nChannelState: 6\r\n\r\n"
    return (block * (size // len(block) + 1))[:size]


async def test_read_size_grows_only_when_other_work_holds_the_loop_and_shrinks_back() -> None:
    from collector.ami import protocol as ami_protocol

    seen: list[AmiMessage] = []
    proto, transport = _protocol(seen.append)
    assert transport.max_size == ami_protocol.READ_MIN
    sizes = []
    for _ in range(4):  # full reads, each after a long gap (HTTP work between two reads): grow to READ_MAX
        proto._read_end -= 1.0  # noqa: SLF001 (the previous read ended a second ago)
        proto.data_received(_full_read(proto.read_size))
        sizes.append(transport.max_size)
    assert sizes == [4 * ami_protocol.READ_MIN, ami_protocol.READ_MAX, ami_protocol.READ_MAX,
                     ami_protocol.READ_MAX]
    proto.data_received(_full_read(proto.read_size))  # full, but straight after the previous one: shrink
    assert transport.max_size == ami_protocol.READ_MAX // 2
    proto.data_received(b"\r\n\r\nEvent: Hangup\r\nUniqueid: 1.1\r\n\r\n")  # partial: we keep up
    assert transport.max_size == ami_protocol.READ_MIN
    assert seen[-1]["Event"] == "Hangup" and len(seen) > 40_000  # nothing lost on the way


def test_the_session_asks_for_and_decodes_what_it_is_handed() -> None:
    """The composition root hands the session its events and keys; noise never hides a handed event."""
    cfg = AmiServerSettings(name="s", host="127.0.0.1", port=1, username="u", secret=Secret("p"), server_id=1)
    session = AmiSession(cfg, CollectorSettings(), lambda _sid, _batch: None, events=("Hangup", "VarSet"),
                         keys={"Uniqueid"})
    assert session.filter_events == ("Hangup", "VarSet", "FullyBooted", "Shutdown")
    assert "VarSet" not in session.skip_events and "Cdr" in session.skip_events
    assert session.keep_keys is not None and {"Uniqueid", "ActionID", "ListItems"} <= session.keep_keys
    tracked = AmiSession(cfg, CollectorSettings(), lambda _sid, _batch: None, events=TRACKED_EVENTS,
                         keys=TRACKER_KEYS)
    assert "CoreShowChannel" not in tracked.filter_events and "Newchannel" in tracked.filter_events


def test_the_read_probe_sees_every_read_and_fixed_bounds_fix_the_read_size() -> None:
    reads: list[tuple[float, float]] = []
    batches: list[tuple[int, int]] = []
    proto = FramedAMIProtocol(lambda sid, batch: batches.append((sid, len(batch))), "t", server_id=7,
                              reader=ReaderOptions(read_min=4096, read_max=4096,
                                                   probe=lambda t0, t1: reads.append((t0, t1))))
    transport = _Transport()
    proto.connection_made(transport)
    proto.data_received(b"Event: Newstate\r\nUniqueid: 1\r\n\r\n" * 200)
    assert len(reads) == 1 and reads[0][0] <= reads[0][1]
    assert batches == [(7, 200)]
    assert proto.read_size == 4096
