"""A small real aiohttp app for the page tests: the real ``create_app`` (get, totals, stream, entities,
history, the page) over the hand-built world of ``tests.api_support``, with a live ``ChangeHub`` the test
drives and a history series the test sets (``UiWorld.history``: ``(bucket, total, answered)``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from api.app import create_app
from api.changes import ChangeHub
from api.deps import ApiDeps
from api.stream import StreamSettings
from collector.live.table import LiveCall
from collector.refdata.index import RefIndex
from tests.api_support import NOW, REFS, ROWS, with_settings

__all__ = ["CuttableRelay", "UiWorld", "many_rows", "ui_server"]


@dataclass
class UiWorld:
    """The rows the app serves (mutate through ``put``/``drop`` so the stream hears of it)."""

    rows: dict[int, LiveCall]
    hub: ChangeHub
    deps: ApiDeps
    base: str = ""
    history: list[tuple[int, int, int]] = field(default_factory=list)
    history_asked: list[str] = field(default_factory=list)  # the series each history request read

    runner: web.AppRunner | None = None
    port: int = 0
    make_app: Callable[[], web.Application] = field(default=lambda: web.Application())

    async def start(self, app: web.Application) -> None:
        """Serve ``app`` (again: on the same port after ``stop``, as a restarted daemon would)."""
        self.runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self.runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def put(self, row: LiveCall) -> None:
        kind = "updated" if row.id in self.rows else "added"
        self.rows[row.id] = row
        self.hub.publish(kind, row)

    def drop(self, row_id: int) -> None:
        row = self.rows.pop(row_id)
        self.hub.publish("removed", row)


@asynccontextmanager
async def ui_server(rows: list[LiveCall] | None = None, *, refs: RefIndex = REFS,
                    stream: StreamSettings | None = None, **deps_kw: Any) -> AsyncIterator[UiWorld]:
    table = {r.id: r for r in (ROWS if rows is None else rows)}
    hub = ChangeHub()
    hub.seed(table.values())
    points: list[tuple[int, int, int]] = []
    asked: list[str] = []

    async def history(series: str, start: int, end: int) -> list[tuple[int, int, int]]:
        asked.append(series)
        return [p for p in points if start <= p[0] <= end]

    deps = ApiDeps(rows=lambda: tuple(table.values()), refs=lambda: refs, settings=with_settings(),
                   clock=lambda: NOW, changes=hub, history=history, **deps_kw)
    world = UiWorld(table, hub, deps, history=points, history_asked=asked)

    def make_app() -> web.Application:
        return create_app(deps, stream=stream)

    world.make_app = make_app
    await world.start(make_app())
    try:
        yield world
    finally:
        await world.stop()

def many_rows(n: int) -> list[LiveCall]:
    """``n`` calls cloned from the world's rows (ids 1..n, unique uniqueids, every status and owner)."""
    out = []
    for i in range(1, n + 1):
        src = ROWS[i % len(ROWS)]
        uid = f"u{i}"
        out.append(LiveCall(i, src.call._replace(uniqueid=uid, linkedid=uid, start_time=src.call.start_time - i),
                            src.info))
    return out


class CuttableRelay:
    """A TCP relay in front of a server that can *cut* the link the way a dead network does: ``cut()``
    makes every stream connection through it (a response that says ``text/event-stream``) go silent —
    open, no FIN, no reset, nothing forwarded either way — and closes the other ones; connections made
    afterwards pass again, as a network that comes back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: list[_Link] = []

    async def __aenter__(self) -> CuttableRelay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        for link in self._links:
            link.close(force=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> int:
        """Silence the stream links now; returns how many there were."""
        streams = 0
        for link in self._links:
            if link.is_stream:
                link.silent = True
                streams += 1
            else:
                link.close()
        self._links = [link for link in self._links if link.is_stream]
        return streams

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        link = _Link(writer, up_writer)
        self._links.append(link)
        pumps = [asyncio.ensure_future(link.pump(reader, up_writer, down=False)),
                 asyncio.ensure_future(link.pump(up_reader, writer, down=True))]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)  # one side ended: end the link
        link.close()
        if not link.silent and link in self._links:  # a cut one stays, for __aexit__ to close its client side
            self._links.remove(link)
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


class _Link:
    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client, self.upstream = client, upstream
        self.silent = False
        self.is_stream = False

    async def pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, down: bool) -> None:
        while chunk := await src.read(65536):
            if down and not self.is_stream and b"text/event-stream" in chunk:
                self.is_stream = True
            if not self.silent:  # a cut link swallows everything, and says nothing
                dst.write(chunk)
                await dst.drain()

    def close(self, force: bool = False) -> None:
        if force or not self.silent:  # a cut link is left hanging, as a dead network leaves it
            self.client.close()
        self.upstream.close()
