"""Helpers for the page tests: driving the page over CDP and the page's own rules mirrored in Python
(sort keys, free-text search), so a test can say what the page must show from the API's answer.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.browser import ARTIFACTS, Cdp

__all__ = ["PAGE", "api_rows", "api_totals", "expected_order", "haystack", "open_page", "poll", "screenshot",
           "search_matches", "SORT_COLUMNS"]

# what the page shows: the rows on screen in order, counters, group panel, stream state
PAGE = """JSON.stringify({
  ids: [...document.querySelectorAll('#calls tbody tr:not(.pad)')].map(tr => Number(tr.dataset.id)),
  model: window.activeCalls ? [...window.activeCalls.st.rows.values()].map(r => [r.uniqueid, r.status]) : [],
  snapshots: window.activeCalls ? window.activeCalls.st.stats.snapshots : 0,
  total: document.getElementById('total').textContent,
  answered: document.getElementById('answered').textContent,
  group: document.getElementById('groups').dataset.group || '',
  groups: [...document.querySelectorAll('#groups tbody tr')].map(tr => [...tr.cells].map(c => c.textContent)),
  conn: document.getElementById('conn').dataset.state,
  connText: document.getElementById('conn').textContent,
  banner: document.getElementById('banner').hidden ? '' : document.getElementById('banner').textContent,
  error: document.getElementById('error').textContent,
  search: location.search,
})"""


async def open_page(cdp: Cdp, url: str, width: int = 1400, height: int = 900) -> None:
    """The viewport exactly ``width``×``height`` CSS pixels (window chrome does not count), then go."""
    await cdp.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                   mobile=False)
    await cdp.call("Page.navigate", url="about:blank")  # a new document even when only the #fragment differs
    await cdp.call("Page.navigate", url=url)


async def poll(cdp: Cdp, ok: Callable[[dict[str, Any]], bool], timeout: float = 15.0,
               expression: str = PAGE) -> dict[str, Any]:
    """Evaluate ``expression`` (JSON) until ``ok`` holds; AssertionError with the last state at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    state: dict[str, Any] = {}
    while True:
        raw = await cdp.eval(f"(() => {{ try {{ return {expression}; }} catch (e) {{ return null; }} }})()")
        state = json.loads(raw) if raw else {}
        if state and ok(state):
            return state
        if loop.time() > deadline:
            raise AssertionError(f"page state never matched within {timeout}s: {state}")
        await asyncio.sleep(0.05)


async def screenshot(cdp: Cdp, name: str) -> int:
    shot = await cdp.call("Page.captureScreenshot", format="png")
    ARTIFACTS.mkdir(exist_ok=True)
    data = base64.b64decode(shot["data"])
    (ARTIFACTS / name).write_bytes(data)
    return len(data)


async def api_rows(http: aiohttp.ClientSession, base: str, auth: dict[str, str],
                   **filters: str) -> list[dict[str, Any]]:
    async with http.post(base + "/billing/api/active_calls_get?format=json", data={**auth, **filters}) as resp:
        doc = await resp.json()
    rows: list[dict[str, Any]] = doc.get("active_calls", [])
    return rows


async def api_totals(http: aiohttp.ClientSession, base: str, auth: dict[str, str], **params: str) -> dict[str, Any]:
    async with http.post(base + "/billing/api/active_calls_totals?format=json", data={**auth, **params}) as resp:
        doc: dict[str, Any] = await resp.json()
    return doc


# ---------------------------------------------------------------- the page's rules (api/static/columns.js)
def _empty(v: Any) -> bool:
    return v is None or v == ""


def _lower(v: Any) -> str | None:
    return None if _empty(v) else str(v).lower()


def _numberish(v: Any) -> str | None:
    return None if _empty(v) else str(v).rjust(20)


def _join(*parts: Any) -> str:
    return " / ".join(str(p) for p in parts if not _empty(p))


def _status(r: dict[str, Any]) -> str:
    return f"{r['status']} ({r['phase'].replace('_', ' ')})" if r.get("phase") else r.get("status") or ""


def _server(r: dict[str, Any]) -> str:
    return r.get("server_name") or ("" if r.get("server_id") is None else str(r["server_id"]))


def _answer_epoch(r: dict[str, Any]) -> float | None:
    """The JSON extra, else what the page estimates (one "now" for a snapshot: now − duration)."""
    if r.get("answer_epoch") is not None:
        return float(r["answer_epoch"])
    return None if r.get("duration") is None else -float(r["duration"])


def _start_epoch(r: dict[str, Any]) -> float:
    return float(r["start_epoch"]) if r.get("start_epoch") is not None else 0.0  # page: the snapshot's "now"


def _time_key(r: dict[str, Any]) -> float | None:
    if r.get("status") == "Answered":
        a = _answer_epoch(r)
        return None if a is None else 4e9 - a
    return -_start_epoch(r)


def _dest(r: dict[str, Any]) -> str:
    return r.get("destination_name") or _join(r.get("dst_user"), r.get("dst_device_name"))


SORT_COLUMNS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "time": _time_key,
    "status": lambda r: _lower(_status(r)),
    "start": _start_epoch,
    "answer": lambda r: _answer_epoch(r) if r.get("status") == "Answered" else None,
    "src": lambda r: _numberish(r.get("src")),
    "caller": lambda r: _lower(_join(r.get("user"), r.get("device_name"))),
    "dst": lambda r: _numberish(r.get("localized_dst") or r.get("dst") or ""),
    "country": lambda r: _lower(r.get("direction_name")),
    "dest": lambda r: _lower(_dest(r)),
    "did": lambda r: _numberish(r.get("did")),
    "provider": lambda r: _lower(r.get("provider_name")),
    "server": lambda r: _lower(_server(r)),
}


def expected_order(rows: list[dict[str, Any]], col: str, descending: bool) -> list[int]:
    """Ids as the page must list them: by the key (empty last either way), then by id."""
    key = SORT_COLUMNS[col]
    sign = -1 if descending else 1

    def cmp(a: dict[str, Any], b: dict[str, Any]) -> int:
        ka, kb = key(a), key(b)
        if _empty(ka) or _empty(kb):
            if _empty(ka) != _empty(kb):
                return 1 if _empty(ka) else -1
        elif ka != kb:
            return sign * (-1 if ka < kb else 1)
        return int(a["id"]) - int(b["id"])

    return [int(r["id"]) for r in sorted(rows, key=functools.cmp_to_key(cmp))]


def haystack(r: dict[str, Any]) -> str:
    fields = [r.get("id"), r.get("uniqueid"), r.get("channel"), r.get("src"), r.get("user"), r.get("device_name"),
              r.get("localized_dst"), r.get("dst"), r.get("direction_name"), r.get("destination_name"),
              r.get("dst_user"), r.get("dst_device_name"), r.get("did"), r.get("provider_name"), _server(r),
              r.get("status")]
    return "\u0001".join(str(v) for v in fields if not _empty(v)).lower()


def search_matches(rows: list[dict[str, Any]], text: str) -> set[int]:
    words = text.lower().split()
    return {int(r["id"]) for r in rows if all(w in haystack(r) for w in words)}
