"""The history graph on the page (``graph.js`` drawn by ``app.js``) from the real ``active_calls_history``:
today's buckets as the page's series, the newest value as "now", and the server filter choosing the
per-server series (admin) while a reseller's graph reads his own series without it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.api_support import SECRETS, sha
from tests.browser import chromium, chromium_binary
from tests.ui_page import open_page, poll
from tests.ui_support import ui_server

GRAPH = """JSON.stringify({
  today: (document.querySelector('#graph path[data-series=today]') || {dataset: {}}).dataset.points || '',
  hour: (document.querySelector('#graph path[data-series=hour]') || {dataset: {}}).dataset.points || '',
  text: document.getElementById('graph').textContent,
})"""


def url(base: str, user: str, query: str = "") -> str:
    return f"{base}/ui{query}#u={user}&hash={sha(user + SECRETS[user])}"


async def test_graph_draws_the_history_endpoint(tmp_path: Path) -> None:
    chromium_binary()
    now = int(time.time()) // 15 * 15
    points = [(now - 15 * k, 40 + k % 7, 30) for k in range(0, 400)]  # the last 100 minutes
    async with ui_server() as world, chromium(tmp_path) as cdp:
        world.history.extend(points)
        await open_page(cdp, url(world.base, "admin"))
        state = await poll(cdp, lambda s: s["hour"] != "" and "peak: 40" in s["text"], expression=GRAPH)
        drawn = {int(p.split(":")[0]) for p in state["today"].split(",")}
        midnight = time.mktime(time.localtime(time.time())[:3] + (0, 0, 0, 0, 0, -1))
        assert drawn == {t for t, _total, _answered in points if t >= midnight}
        assert world.history_asked and set(world.history_asked) == {"all"}

        await open_page(cdp, url(world.base, "admin", "?s_server=2"))
        await poll(cdp, lambda s: s["hour"] != "", expression=GRAPH)
        assert "server:2" in world.history_asked
        await open_page(cdp, url(world.base, "res", "?s_server=2"))
        state = await poll(cdp, lambda s: s["hour"] != "", expression=GRAPH)
        assert "reseller:2" in world.history_asked and "unavailable" not in state["text"]
        assert json.loads(await cdp.eval("JSON.stringify(location.search)")) == "?s_server=2"
