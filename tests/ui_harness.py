"""Shared pieces of the browser-module tests (graph.js, session.js): an aiohttp app on 127.0.0.1 port 0
serving a harness page plus ``api/static`` at the page's real ``/ui/static`` path, and bounded polling of
a JavaScript condition (the page updates itself; a test awaits the state, it never sleeps a fixed time).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from api.ui import STATIC_DIR
from tests.browser import ARTIFACTS, Cdp

__all__ = ["GLOBALS_PAGE", "Proxied", "add_proxy", "contrast", "new_globals", "parse_rgb", "screenshot", "serve",
           "static_app", "wait_js"]

# a page with no script: the modules' own globals are what appears after injecting them
GLOBALS_PAGE = "<!doctype html><html><head><meta charset=utf-8></head><body></body></html>"


def static_app(pages: dict[str, str]) -> web.Application:
    """The harness pages (path → HTML) and ``api/static`` under ``/ui/static`` as the daemon serves it."""
    app = web.Application()

    def page(html: str) -> Any:
        async def handler(_request: web.Request) -> web.Response:
            return web.Response(text=html, content_type="text/html")
        return handler

    for path, html in {**pages, "/harness/globals.html": GLOBALS_PAGE}.items():
        app.router.add_get(path, page(html))
    app.router.add_static("/ui/static", STATIC_DIR, append_version=False)
    return app


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` on 127.0.0.1 port 0; yields the base URL."""
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@dataclass
class Proxied:
    """What the page sent through the proxy: method, path with query, form fields, Authorization."""

    method: str
    path_qs: str
    form: dict[str, str]
    authorization: str
    status: int = 0


@dataclass
class _Proxy:
    target: str
    log: list[Proxied] = field(default_factory=list)
    _http: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        form = {k: str(v) for k, v in (await request.post()).items()} if request.method == "POST" else {}
        entry = Proxied(request.method, request.path_qs, form, request.headers.get("Authorization", ""))
        self.log.append(entry)
        if self._http is None:
            self._http = aiohttp.ClientSession()
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
        async with self._http.request(request.method, self.target + request.path_qs, data=body,
                                      headers=headers) as resp:
            data = await resp.read()
            entry.status = resp.status
            keep = {k: v for k, v in resp.headers.items() if k.lower() in ("content-type", "retry-after")}
            return web.Response(body=data, status=resp.status, headers=keep)

    async def close(self, _app: web.Application) -> None:
        if self._http is not None:
            await self._http.close()


def add_proxy(app: web.Application, target: str) -> list[Proxied]:
    """Forward ``/billing/api/*`` to the real daemon at ``target`` (so the harness page, same origin, talks
    to it without CORS); returns the live log of what was forwarded."""
    proxy = _Proxy(target)
    app.router.add_route("*", "/billing/api/{tail:.*}", proxy.handle)
    app.on_cleanup.append(proxy.close)
    return proxy.log


async def wait_js(cdp: Cdp, expression: str, timeout: float = 20.0) -> Any:
    """Poll ``expression`` until it is truthy and return its value; fail with the last value after ``timeout``
    (which only bounds a hung page)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    value: Any = None
    while loop.time() < deadline:
        value = await cdp.eval(expression)
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"never true within {timeout}s: {expression}\nlast value: {value!r}")


async def new_globals(cdp: Cdp, base: str, script: str) -> list[str]:
    """The window properties that loading ``/ui/static/<script>`` into an empty page adds."""
    await cdp.call("Page.navigate", url=f"{base}/harness/globals.html")
    await wait_js(cdp, "document.readyState === 'complete' && location.pathname === '/harness/globals.html'")
    added = await cdp.eval(f"""new Promise((resolve, reject) => {{
      const before = new Set(Object.getOwnPropertyNames(window));
      const s = document.createElement('script');
      s.src = '/ui/static/{script}';
      s.onload = () => resolve(JSON.stringify(Object.getOwnPropertyNames(window).filter(k => !before.has(k))));
      s.onerror = () => reject(new Error('load failed'));
      document.head.append(s);
    }})""")
    result: list[str] = json.loads(added)
    return result


async def screenshot(cdp: Cdp, name: str) -> Path:
    shot = await cdp.call("Page.captureScreenshot", format="png")
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def _luminance(rgb: tuple[float, ...]) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else float(((c + 0.055) / 1.055) ** 2.4)
    r, g, b = (channel(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def parse_rgb(css: str) -> tuple[float, ...]:
    """``rgb(r, g, b)`` / ``rgba(r, g, b, a)`` as computed by the browser."""
    inner = css[css.index("(") + 1:css.rindex(")")]
    return tuple(float(x) for x in inner.replace("/", ",").replace(" ", ",").split(",") if x)


def contrast(fg: str, bg: str) -> float:
    """WCAG contrast ratio of two computed CSS colours (alpha ignored)."""
    a, b = sorted((_luminance(parse_rgb(fg)), _luminance(parse_rgb(bg))), reverse=True)
    return (a + 0.05) / (b + 0.05)
