"""A small real aiohttp app for the page tests: the real ``create_app`` (get, totals, stream, entities,
history, the page) over the hand-built world of ``tests.api_support``, with a live ``ChangeHub`` the test
drives and a history series the test sets (``UiWorld.history``: ``(bucket, total, answered)``).
"""

from __future__ import annotations

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

__all__ = ["UiWorld", "many_rows", "ui_server"]


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
