"""``format=json``: the same documents as the XML ones, as JSON objects.

Row fields come from the XML renderer's own field list and value extraction (``RowRenderer``), so the
two formats cannot drift apart: same keys, same order, ``dst_*`` only where XML has them, plus one
trailing ``server_id`` (MOR's XML, a frozen contract, has no server; the live page shows it). Integers stay
JSON numbers, text is cleaned exactly as for XML (so both formats carry identical text), absent values
are ``null`` where XML has an empty element.

The format is chosen from the **query string only** (``?format=json``): errors raised before the body
is read (413, 408, an unreadable body) must already know how to answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from api.errors import Envelope, MorError
from api.params import parse_urlencoded
from api.xml import RowRenderer, clean_text
from collector.live.table import LiveCall

__all__ = ["JSON_TYPE", "dumps", "error_json", "json_response", "row_object", "rows_json", "wants_json"]

JSON_TYPE = "application/json"
_FORMAT_PAIRS = 100  # how many query-string pairs are looked at for ``format`` (as params.max_params)


def wants_json(request: web.Request) -> bool:
    """True for ``format=json`` (any case) in the query string; the first ``format`` wins."""
    raw = request.rel_url.raw_query_string
    if "format" not in raw:  # fast path: nearly every MOR client sends no format at all
        return False
    for name, value in parse_urlencoded(raw.encode("utf-8", "surrogateescape"), _FORMAT_PAIRS):
        if name == "format" and value:
            return value.lower() == "json"
    return False


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON (stdlib: rendering is not the bottleneck, the row selection is)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def _value(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return clean_text(value)


def row_object(renderer: RowRenderer, row: LiveCall, now: float) -> dict[str, object]:
    """One call as a dict with the XML element names and order; ``duration`` at ``now``."""
    obj: dict[str, object] = {}
    # tags/values are the XML renderer's single definition of a row: reused, not re-listed here.
    for tag, value in zip(renderer.tags(row), renderer.values(row)):
        obj[tag] = _value(value)
    answered = row.call.answer_time
    obj["duration"] = None if answered is None else _duration(now, answered)
    obj["server_id"] = row.call.server_id  # JSON only, last: MOR's XML has no server, the live page needs it
    return obj


def _duration(now: float, answered: float) -> int | None:
    try:
        return max(0, int(now - answered))
    except (OverflowError, ValueError):
        return None


def rows_json(renderer: RowRenderer, rows: Iterable[LiveCall], now: float) -> bytes:
    return dumps({"active_calls": [row_object(renderer, r, now) for r in rows]})


def error_json(err: MorError) -> bytes:
    """``{"error": …}`` for both error envelopes, ``{"message": …}`` for the informational one."""
    key = "message" if err.envelope is Envelope.MESSAGE else "error"
    return dumps({key: err.text})


def json_response(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    resp = web.Response(body=body, status=status, headers=headers, content_type=JSON_TYPE, charset="utf-8")
    if status != 200:  # same rule as the XML transport failures: the body may be unread
        resp.force_close()
    return resp
