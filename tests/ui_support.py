"""A small real aiohttp app for the page tests: the real ``create_app`` (get, totals, stream, the page)
over the hand-built world of ``tests.api_support``, a live ``ChangeHub`` the test drives, and
contract-shaped stand-ins (docs/api-extensions.md) for endpoints this branch does not have yet: each is
added only when the real app lacks its route, so the tests use the real one as soon as it is merged.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from api.app import create_app
from api.changes import ChangeHub
from api.deps import ApiDeps
from api.scope import Scope
from api.selection import authorize
from api.stream import StreamSettings
from collector.live.table import LiveCall
from collector.refdata.index import RefIndex
from tests.api_support import NOW, REFS, ROWS, with_settings

__all__ = ["ENTITIES_PATH", "HISTORY_PATH", "UiWorld", "entities_of", "many_rows", "ui_server"]

ENTITIES_PATH = "/billing/api/active_calls_entities"
HISTORY_PATH = "/billing/api/active_calls_history"


def _json(doc: Any) -> web.Response:
    return web.Response(body=json.dumps(doc).encode(), content_type="application/json")


def entities_of(scope: Scope, refs: RefIndex) -> dict[str, list[dict[str, Any]]]:
    """What the contract says the entities endpoint lists: what the caller may filter by."""
    users = [u for u in refs.users.values() if scope.user_visible(u)]
    devices = [d for d in refs.devices.values() if scope.device_visible(d)]
    providers = [p for p in refs.providers.values() if scope.provider_visible(p)]
    dids = [d for d in refs.dids.values() if scope.did_visible(d)]
    return {
        "users": sorted(({"id": u.id, "name": u.display_name or u.username, "username": u.username,
                          "call_limit": getattr(u, "call_limit", None)} for u in users),
                        key=lambda e: (e["name"], e["id"])),
        "devices": sorted(({"id": d.id, "name": d.name, "user_id": d.user_id,
                            "call_limit": getattr(d, "call_limit", None)} for d in devices),
                          key=lambda e: (e["name"], e["id"])),
        "providers": sorted(({"id": p.id, "name": p.name, "call_limit": getattr(p, "call_limit", None)}
                             for p in providers), key=lambda e: (e["name"], e["id"])),
        "servers": sorted(({"id": s.id, "name": s.hostname} for s in refs.servers.values()),
                          key=lambda e: (e["name"], e["id"])),
        "directions": sorted(({"code": d.code, "name": d.name} for d in refs.data.directions),
                             key=lambda e: e["name"]),
        "destination_groups": sorted(({"id": g.id, "name": g.name} for g in refs.destinationgroups.values()),
                                     key=lambda e: (e["name"], e["id"])),
        "dids": sorted(({"id": d.id, "number": d.did, "call_limit": getattr(d, "call_limit", None)}
                        for d in dids), key=lambda e: e["number"]),
    }


async def _entities(request: web.Request) -> web.Response:
    sel = await authorize(request, is_get=request.method == "GET")
    deps = request.app[WORLD_KEY].deps
    refs = deps.refs()
    return _json(entities_of(Scope(sel.principal, refs), refs))


async def _history(request: web.Request) -> web.Response:
    await authorize(request, is_get=request.method == "GET", extras=("period_start", "period_end"))
    world = request.app[WORLD_KEY]
    return _json({"bucket_seconds": 15, "period_start": NOW - 86400, "period_end": NOW, "points": world.history})


@dataclass
class UiWorld:
    """The rows the app serves (mutate through ``put``/``drop`` so the stream hears of it)."""

    rows: dict[int, LiveCall]
    hub: ChangeHub
    deps: ApiDeps
    base: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)

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


WORLD_KEY = web.AppKey("ui_world", UiWorld)


@asynccontextmanager
async def ui_server(rows: list[LiveCall] | None = None, *, refs: RefIndex = REFS,
                    stream: StreamSettings | None = None, **deps_kw: Any) -> AsyncIterator[UiWorld]:
    table = {r.id: r for r in (ROWS if rows is None else rows)}
    hub = ChangeHub()
    hub.seed(table.values())
    deps = ApiDeps(rows=lambda: tuple(table.values()), refs=lambda: refs, settings=with_settings(),
                   clock=lambda: NOW, changes=hub, **deps_kw)
    world = UiWorld(table, hub, deps)

    def make_app() -> web.Application:
        app = create_app(deps, stream=stream)
        app[WORLD_KEY] = world
        have = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
        if ENTITIES_PATH not in have:
            app.router.add_route("*", ENTITIES_PATH, _entities)
        if HISTORY_PATH not in have:
            app.router.add_route("*", HISTORY_PATH, _history)
        return app

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
