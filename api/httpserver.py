"""HTTP resource bounds: at most ``max_connections`` open connections, and a first request whose
headers are not complete within ``request_timeout`` seconds is cut (slowloris).

aiohttp's ``web.Server`` is an asyncio protocol factory (one ``RequestHandler`` per connection).
``ConnectionGuard`` wraps it: each accepted connection gets a small ``_GuardedConnection`` protocol that
counts it and forwards every protocol call to the aiohttp handler, which it only creates for connections
within the limit. Past the limit a connection is answered ``503`` with ``Connection: close`` and closed at
once, so descriptors stay bounded by ``max_connections`` plus the few in their last milliseconds. Refusals
and header timeouts are counted and logged at most once per ``window`` seconds, with the count.

Idle keep-alive connections (and connections that never send a byte) are aiohttp's ``keepalive_timeout``;
the body is ``ApiSettings.body_timeout``. ``GuardedTCPSite`` is ``web.TCPSite`` serving through the guard.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

__all__ = ["ConnectionGuard", "GuardedTCPSite", "WindowedLog"]

log = logging.getLogger(__name__)

_REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 20\r\n"
            b"Connection: close\r\n\r\ntoo many connections")
_HEADER_END = (b"\n\r\n", b"\n\n")  # CRLF CRLF (and the bare-LF form some clients send)


class WindowedLog:
    """One log line per ``window`` seconds for a recurring event: the first occurrence after a quiet
    window at once, the ones after it as a single line with their count when the window ends."""

    def __init__(self, logger: logging.Logger, level: int, window: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.level, self.window, self.clock = logger, level, window, clock
        self.total = 0
        self._pending = 0
        self._last = ""
        self._timer: asyncio.TimerHandle | None = None

    def note(self, message: str) -> None:
        """Count one occurrence; ``message`` (one line) describes it."""
        self.total += 1
        self._last = message
        if self._timer is not None:
            self._pending += 1
            return
        self.logger.log(self.level, "%s (count=1)", message)
        self._arm()

    def _arm(self) -> None:
        try:
            self._timer = asyncio.get_running_loop().call_later(self.window, self._flush)
        except RuntimeError:  # no loop (unit use): every note logs
            self._timer = None

    def _flush(self) -> None:
        self._timer = None
        if self._pending:
            self.logger.log(self.level, "%s (count=%d in the last %gs)", self._last, self._pending, self.window)
            self._pending = 0
            self._arm()  # keep summarising while it goes on; a quiet window ends it

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            self.logger.log(self.level, "%s (count=%d)", self._last, self._pending)
            self._pending = 0


class ConnectionGuard:
    """Protocol factory for ``loop.create_server``: bounds and times the connections of ``server``."""

    def __init__(self, server: web.Server, *, max_connections: int, request_timeout: float | None,
                 window: float = 10.0) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be positive")
        self.server = server
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.active = 0
        self.refused = WindowedLog(log, logging.WARNING, window)
        self.header_timeouts = WindowedLog(log, logging.INFO, window)

    def __call__(self) -> asyncio.Protocol:
        return _GuardedConnection(self)

    def close(self) -> None:
        self.refused.close()
        self.header_timeouts.close()


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)


class _GuardedConnection(asyncio.Protocol):
    __slots__ = ("_guard", "_inner", "_transport", "_timer", "_tail")

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        g = self._guard
        assert isinstance(transport, asyncio.Transport)
        if g.active >= g.max_connections:
            g.refused.note(f"api connection refused: max_connections={g.max_connections} reached "
                           f"(last peer={_peer(transport)})")
            transport.write(_REFUSED)
            transport.close()
            return
        g.active += 1
        self._transport = transport
        if g.request_timeout is not None:
            self._timer = asyncio.get_running_loop().call_later(g.request_timeout, self._headers_late)
        self._inner = g.server()
        self._inner.connection_made(transport)

    def _headers_late(self) -> None:
        self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            self._guard.header_timeouts.note(f"api request headers not complete within request_timeout="
                                             f"{self._guard.request_timeout:g}s: connection closed "
                                             f"(last peer={_peer(self._transport)})")
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return  # refused: whatever it sends is dropped
        if self._timer is not None:
            window = self._tail + data
            if any(end in window for end in _HEADER_END):
                self._timer.cancel()
                self._timer = None
                self._tail = b""
            else:
                self._tail = window[-2:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        inner, self._inner = self._inner, None
        if inner is not None:
            self._guard.active -= 1
            self._transport = None
            inner.connection_lost(exc)


class GuardedTCPSite(web.BaseSite):
    """``web.TCPSite`` whose connections go through ``guard`` (the runner's server wrapped)."""

    __slots__ = ("_host", "_port", "_guard", "_bound_port")

    def __init__(self, runner: web.BaseRunner, host: str | None, port: int, guard: ConnectionGuard,
                 **kwargs: Any) -> None:
        super().__init__(runner, **kwargs)
        self._host, self._port, self._guard = host, port, guard
        self._bound_port: int | None = None

    @property
    def port(self) -> int:
        return self._bound_port if self._bound_port is not None else self._port

    @property
    def name(self) -> str:
        return f"http://{self._host or '0.0.0.0'}:{self.port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._guard, self._host, self._port,
                                                ssl=self._ssl_context, backlog=self._backlog)
        sockets = self._server.sockets
        self._bound_port = int(sockets[0].getsockname()[1]) if sockets else self._port
