"""Hostile AMI peers: every session step is bounded in time, every server is bounded in size.

Each peer is a small TCP server on 127.0.0.1 that misbehaves at one step: silent after accept, a banner then
silence, a login answered and then no action answered, a flood of Newchannel events, a CoreShowChannels
answer of a million entries. The daemon must name the step in /status ``last_error``, count it in
``collector_ami_timeouts_total{server,step}``, reconnect with backoff, refuse the excess of a flooding
server without touching another server's calls, and recover when the server behaves again.

Every wait awaits a condition with a timeout; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from collector.service.daemon import Daemon
from collector.tools.replay import ReplayServer
from collector.tools.timeline import iter_trace_messages
from tests.daemon_helpers import barrier, comparable, offline_calls, running_daemon, settings_for, wait_until
from tests.helpers import trace_paths

BANNER = b"Asterisk Call Manager/9.0.0\r\n"
_ACTION_ID = re.compile(rb"(?im)^ActionID:\s*(.*?)\s*$")
_ACTION = re.compile(rb"(?im)^Action:\s*(.*?)\s*$")

Handler = Callable[["Peer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Peer:
    """A TCP server on 127.0.0.1 running ``handler`` per connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def __aenter__(self) -> Peer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)


async def actions(reader: asyncio.StreamReader) -> AsyncIterator[tuple[bytes, bytes]]:
    """(action name lower-cased, ActionID) of each block the client sends."""
    while True:
        block = await reader.readuntil(b"\r\n\r\n")
        name = _ACTION.search(block)
        aid = _ACTION_ID.search(block)
        yield (name.group(1).lower() if name else b""), (aid.group(1) if aid else b"")


def reply(aid: bytes, *lines: str) -> bytes:
    return b"Response: Success\r\nActionID: " + aid + b"\r\n" + b"".join(
        line.encode() + b"\r\n" for line in lines) + b"\r\n"


async def silent(_peer: Peer, reader: asyncio.StreamReader, _w: asyncio.StreamWriter) -> None:
    await reader.read()  # accepts, never says a word


async def banner_then_silence(_peer: Peer, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    w.write(BANNER)
    await reader.read()


def login_then(answered: frozenset[bytes]) -> Handler:
    """Banner, Login answered; then only the actions in ``answered`` get an answer."""
    async def handler(_peer: Peer, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(BANNER)
        async for name, aid in actions(reader):
            if name == b"login":
                w.write(reply(aid, "Message: Authentication accepted"))
            elif name in answered and name == b"coreshowchannels":
                w.write(reply(aid, "EventList: start", "Message: Channels will follow")
                        + b"Event: CoreShowChannelsComplete\r\nActionID: " + aid
                        + b"\r\nEventList: Complete\r\nListItems: 0\r\n\r\n")
            elif name in answered:
                w.write(reply(aid, "Ping: Pong") if name == b"ping" else reply(aid))
    return handler


async def status_of(daemon: Daemon) -> dict[str, object]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{daemon.port}/status") as resp:
            servers: list[dict[str, object]] = (await resp.json())["servers"]
            return servers[0]


async def metrics_text(daemon: Daemon) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{daemon.port}/metrics") as resp:
            return await resp.text()


# ------------------------------------------------------------------------------- 1. step timeouts

FAST: dict[str, Any] = {"connect_timeout": 0.5, "login_timeout": 0.3, "ping_timeout": 0.3, "resync_timeout": 0.3,
        "reconnect_min": 0.05, "reconnect_max": 0.2}


@pytest.mark.parametrize(("handler", "extra", "step", "words"), [
    (silent, "", "banner", "no AMI banner"),
    (banner_then_silence, "", "login", "no answer to Login"),
    (login_then(frozenset()), "", "resync", "no CoreShowChannels answer"),
    (login_then(frozenset()), "send_filter = yes", "filter", "no answer to Filter"),
    (login_then(frozenset({b"coreshowchannels"})), "", "ping", "no pong"),
], ids=["silent", "banner-only", "resync-unanswered", "filter-unanswered", "ping-unanswered"])
async def test_each_step_times_out_names_itself_and_reconnects(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, handler: Handler, extra: str, step: str,
        words: str) -> None:
    async with Peer(handler) as peer:
        timings = {**FAST, "ping_interval": 0.2} if step == "ping" else FAST
        settings = settings_for(tmp_path, [peer.port], server_extra=extra, **timings)
        async with running_daemon(settings) as daemon:
            st = daemon.sessions[0].status
            await wait_until(lambda: st.timeouts.get(step, 0) >= 2 and peer.connections >= 3, timeout=15,
                             what=f"two {step} timeouts and reconnects")
            status = await status_of(daemon)
            assert str(status["last_error"]).startswith(f"{step} timeout: {words}"), status["last_error"]
            assert status["timeouts"][step] >= 2  # type: ignore[index]
            text = await metrics_text(daemon)
            assert re.search(rf'collector_ami_timeouts_total{{server="pbx1",step="{step}"}} [2-9]', text), text
    lines = [r.getMessage() for r in caplog.records if f"reason={step} timeout" in r.getMessage()]
    assert lines and all("server=pbx1" in m for m in lines)


async def test_connect_timeout_counts_and_retries(tmp_path: Path) -> None:
    """A connect that never completes (a full listen backlog: SYNs unanswered) expires at connect_timeout."""
    import socket

    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    port = lst.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):  # fill the backlog so further SYNs are dropped
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            fillers.append(s)
        settings = settings_for(tmp_path, [port], **{**FAST, "connect_timeout": 0.2})
        async with running_daemon(settings) as daemon:
            st = daemon.sessions[0].status
            await wait_until(lambda: st.timeouts.get("connect", 0) >= 2 or "banner" in st.timeouts, timeout=15,
                             what="connect timeouts")
            if "banner" in st.timeouts:  # the kernel completed the handshake after all: the next step caught it
                pytest.skip("this kernel accepted past the backlog; the banner step caught the silent peer")
            assert st.last_error.startswith("connect: connect timeout"), st.last_error
    finally:
        for s in fillers:
            s.close()
        lst.close()


async def test_backoff_grows_when_login_works_but_actions_never_answer(tmp_path: Path) -> None:
    """A login that succeeds does not reset the backoff: only an answered resync does."""
    async with Peer(login_then(frozenset())) as peer:
        settings = settings_for(tmp_path, [peer.port], **{**FAST, "reconnect_min": 0.05, "reconnect_max": 5})
        async with running_daemon(settings) as daemon:
            session = daemon.sessions[0]
            await wait_until(lambda: session.status.timeouts.get("resync", 0) >= 3, timeout=15, what="3 timeouts")
            assert session._attempt >= 3


# ------------------------------------------------------------------------------- 2. per-server bounds

RSS_BOUND_MB = 400  # the daemon process (this test process) while a peer floods


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def newchannel(i: int) -> bytes:
    return (b"Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/flood-%08d\r\nChannelState: 4\r\n"
            b"ChannelStateDesc: Ring\r\nCallerIDNum: 100\r\nCallerIDName: flood\r\nConnectedLineNum: <unknown>\r\n"
            b"ConnectedLineName: <unknown>\r\nLanguage: en\r\nAccountCode: \r\nContext: from-flood\r\n"
            b"Exten: 200\r\nPriority: 1\r\nUniqueid: 1700000000.%d\r\nLinkedid: 1700000000.%d\r\n"
            b"Timestamp: 1700000000.%06d\r\n\r\n") % (i, i, i, i % 1_000_000)


def hangup(i: int) -> bytes:
    return (b"Event: Hangup\r\nPrivilege: call,all\r\nChannel: PJSIP/flood-%08d\r\nChannelState: 4\r\n"
            b"Uniqueid: 1700000000.%d\r\nLinkedid: 1700000000.%d\r\nCause: 16\r\n\r\n") % (i, i, i)


def item(aid: bytes, i: int) -> bytes:
    return (b"Event: CoreShowChannel\r\nActionID: " + aid + b"\r\nChannel: PJSIP/list-%08d\r\nChannelState: 6\r\n"
            b"ChannelStateDesc: Up\r\nCallerIDNum: 100\r\nCallerIDName: list\r\nExten: 200\r\n"
            b"Uniqueid: 1600000000.%d\r\nLinkedid: 1600000000.%d\r\nApplication: Dial\r\n"
            b"Duration: 00:00:10\r\nBridgeId: \r\n\r\n") % (i, i, i)


def empty_list(aid: bytes) -> bytes:
    return (reply(aid, "EventList: start", "Message: Channels will follow")
            + b"Event: CoreShowChannelsComplete\r\nActionID: " + aid
            + b"\r\nEventList: Complete\r\nListItems: 0\r\n\r\n")


async def write_lazily(w: asyncio.StreamWriter, blocks: Callable[[int], bytes], n: int, chunk: int = 2000) -> None:
    """``n`` blocks, generated ``chunk`` at a time and written as fast as the client reads."""
    for start in range(0, n, chunk):
        w.write(b"".join(blocks(i) for i in range(start, min(n, start + chunk))))
        await w.drain()


class Flooder:
    """Logs in, answers resyncs with an empty list, pings, then floods ``n`` Newchannel events; hangs up
    the first ``calm`` of them when ``calm_down`` is set."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.flooded = asyncio.Event()
        self.calm = asyncio.Event()
        self.calm_n = 0

    async def __call__(self, _peer: Peer, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(BANNER)
        async for name, aid in actions(reader):
            if name == b"login":
                w.write(reply(aid, "Message: Authentication accepted"))
            elif name == b"coreshowchannels":
                w.write(empty_list(aid))
                if not self.flooded.is_set():
                    await write_lazily(w, newchannel, self.n)
                    self.flooded.set()
                    asyncio.ensure_future(self._calm_later(w))
            elif name == b"ping":
                w.write(reply(aid, "Ping: Pong"))

    async def _calm_later(self, w: asyncio.StreamWriter) -> None:
        await self.calm.wait()
        await write_lazily(w, hangup, self.calm_n)


async def test_newchannel_flood_is_refused_past_max_channels_and_the_other_server_stays_exact(
        tmp_path: Path, replay_server: Callable[..., Awaitable[object]]) -> None:
    paths = trace_paths("concurrent_load")
    t0 = next(float(m["Timestamp"]) for m in iter_trace_messages(paths) if m.get("Timestamp"))
    flood = Flooder(200_000)
    replay = await replay_server("concurrent_load", fast=True)
    assert isinstance(replay, ReplayServer)
    replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= t0 + 12)
    async with Peer(flood) as peer:
        settings = settings_for(tmp_path, [replay.port, peer.port], max_channels=5000)
        async with running_daemon(settings) as daemon:
            peak = rss_mb()
            await asyncio.wait_for(flood.flooded.wait(), 30)
            trk = daemon.tracker
            await wait_until(lambda: trk.stats(2).refused >= 195_000, timeout=30, what="the flood read")
            peak = max(peak, rss_mb())
            await replay.wait_held(timeout=30)
            await barrier(daemon, 0)
            assert comparable(trk.calls(1)) == comparable(offline_calls(paths, t0 + 12, server_id=1))
            assert len(trk.calls(2)) == 5000 and trk.stats(2).limited
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{daemon.port}/status") as resp:
                    servers = (await resp.json())["servers"]
            assert servers[0]["degraded"] == "" and servers[1]["degraded"].startswith("channels at max_channels")
            assert servers[1]["channels_refused"] >= 195_000
            assert 'collector_ami_degraded{server="pbx2"} 1.0' in await metrics_text(daemon)
            # the server behaves again: its calls end, it is below the low-water mark, it recovers
            flood.calm_n = 1000
            flood.calm.set()
            await wait_until(lambda: not trk.stats(2).limited, timeout=30, what="recovery below low water")
            assert len(trk.calls(2)) == 4000
            peak = max(peak, rss_mb())
    print(f"flood RSS peak {peak:.0f} MB (bound {RSS_BOUND_MB} MB)")
    assert peak < RSS_BOUND_MB


class HugeList:
    """Answers the first ``big`` CoreShowChannels with ``n`` entries (generated lazily), later ones with
    ``small`` entries."""

    def __init__(self, n: int, small: int, big: int = 1) -> None:
        self.n, self.small, self.big_left = n, small, big
        self.sent_items = 0

    async def __call__(self, _peer: Peer, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(BANNER)
        async for name, aid in actions(reader):
            if name == b"login":
                w.write(reply(aid, "Message: Authentication accepted"))
            elif name == b"ping":
                w.write(reply(aid, "Ping: Pong"))
            elif name == b"coreshowchannels":
                n = self.n if self.big_left > 0 else self.small
                self.big_left -= 1
                w.write(reply(aid, "EventList: start", "Message: Channels will follow"))

                def counted(i: int, aid: bytes = aid) -> bytes:
                    self.sent_items += 1
                    return item(aid, i)
                await write_lazily(w, counted, n)
                w.write(b"Event: CoreShowChannelsComplete\r\nActionID: " + aid
                        + b"\r\nEventList: Complete\r\nListItems: %d\r\n\r\n" % n)


async def test_a_million_entry_resync_is_refused_whole_then_recovers(
        tmp_path: Path, replay_server: Callable[..., Awaitable[object]]) -> None:
    paths = trace_paths("concurrent_load")
    t0 = next(float(m["Timestamp"]) for m in iter_trace_messages(paths) if m.get("Timestamp"))
    huge = HugeList(1_000_000, small=10)
    replay = await replay_server("concurrent_load", fast=True)
    assert isinstance(replay, ReplayServer)
    replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= t0 + 12)
    async with Peer(huge) as peer:
        settings = settings_for(tmp_path, [replay.port, peer.port], max_resync_entries=20_000,
                                **{**FAST, "resync_timeout": 20})
        async with running_daemon(settings) as daemon:
            peak = rss_mb()
            s2 = daemon.sessions[1]
            trk = daemon.tracker
            await wait_until(lambda: s2.status.degraded.startswith("resync answer over"), timeout=30,
                             what="the huge list refused")
            assert trk.calls(2) == [] and trk.stats(2).resync_added == 0  # nothing of the cut list applied
            peak = max(peak, rss_mb())
            # reconnects with backoff; the next list is small: within bounds again
            await wait_until(lambda: s2.status.degraded == "" and s2.status.resyncs >= 1, timeout=30,
                             what="recovery on a list within bounds")
            await wait_until(lambda: len(trk.calls(2)) == 10, timeout=10, what="the small list applied")
            assert huge.sent_items < 1_000_000  # the refused list was not read to its end
            await replay.wait_held(timeout=30)
            await barrier(daemon, 0)
            assert comparable(trk.calls(1)) == comparable(offline_calls(paths, t0 + 12, server_id=1))
            peak = max(peak, rss_mb())
    print(f"huge-resync RSS peak {peak:.0f} MB (bound {RSS_BOUND_MB} MB)")
    assert peak < RSS_BOUND_MB
