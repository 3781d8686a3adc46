"""The Active Calls page: static HTML + JS from ``api/static`` (package data, no build step).

The page holds no secret server-side: it signs requests in the browser (sha1(u + secret), or the v2
login's token kept in the page's memory) and reads ``active_calls_stream`` with ``fetch()``, so it needs
nothing the API does not already offer. Served at ``/`` and ``/ui``; assets under ``/ui/static/``
(docs/api-extensions.md describes the page).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

__all__ = ["STATIC_DIR", "add_ui_routes"]

STATIC_DIR = Path(__file__).parent / "static"


async def _index(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def add_ui_routes(app: web.Application) -> None:
    app.router.add_get("/", _index)
    app.router.add_get("/ui", _index)
    app.router.add_static("/ui/static", STATIC_DIR, append_version=False)
