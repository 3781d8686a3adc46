"""Headless Chromium over the DevTools Protocol (aiohttp's websocket client, no Playwright), for the
page tests and the browser benchmark.

Chromium is required: without it a browser test fails (CI must install it: ``apt-get install -y chromium``)
unless ``COLLECTOR_SKIP_BROWSER=1`` says to skip it. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

__all__ = ["ARTIFACTS", "FLAGS", "Cdp", "chromium", "chromium_binary"]

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1"]


def chromium_binary() -> str:
    found = os.environ.get("COLLECTOR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("COLLECTOR_SKIP_BROWSER") == "1":
        pytest.skip("COLLECTOR_SKIP_BROWSER=1 and no Chromium")
    pytest.fail("Chromium is not installed: apt-get install -y chromium (or set COLLECTOR_SKIP_BROWSER=1)")


class Cdp:
    """The few DevTools Protocol calls the test needs; events in between are ignored."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        n = next(self.ids)
        await self.ws.send_json({"id": n, "method": method, "params": params})
        async with asyncio.timeout(30):
            while True:
                msg = await self.ws.receive_json()
                if msg.get("id") == n:
                    if "error" in msg:
                        raise RuntimeError(f"{method}: {msg['error']}")
                    result: dict[str, Any] = msg["result"]
                    return result

    async def eval(self, expression: str) -> Any:
        res = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return res["result"].get("value")


@asynccontextmanager
async def chromium(tmp: Path, *, width: int = 1400, height: int = 1000) -> AsyncIterator[Cdp]:
    profile = tmp / "chromium-profile"
    profile.mkdir()
    log = (tmp / "chromium.log").open("wb")
    proc = await asyncio.create_subprocess_exec(chromium_binary(), *FLAGS, f"--window-size={width},{height}",
                                                f"--user-data-dir={profile}",
                                                "about:blank", stdout=log, stderr=log)
    try:
        port_file = profile / "DevToolsActivePort"
        async with asyncio.timeout(30):
            while not port_file.exists() or not port_file.read_text().strip():
                if proc.returncode is not None:
                    log_tail = (tmp / "chromium.log").read_text()[-2000:]
                    raise RuntimeError(f"chromium exited {proc.returncode}: {log_tail}")
                await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(30):
                while True:
                    async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                        pages = [t for t in await resp.json() if t.get("type") == "page"]
                    if pages:
                        break
                    await asyncio.sleep(0.05)
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield Cdp(ws)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()
