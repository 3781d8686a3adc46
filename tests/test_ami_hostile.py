"""Hostile AMI peers (issue #14 B): every session step is bounded in time, every server is bounded in size.

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

import aiohttp
import pytest

from collector.service.daemon import Daemon
from tests.daemon_helpers import running_daemon, settings_for, wait_until

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

FAST = {"connect_timeout": 0.5, "login_timeout": 0.3, "ping_timeout": 0.3, "resync_timeout": 0.3,
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
