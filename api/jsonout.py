"""``format=json``: the same documents as the XML ones, as JSON objects.

Row fields come from ``api.rows``, the definition the XML renderer uses too: same keys, same order,
``dst_*`` only where XML has them, plus one trailing ``server_id`` (MOR's XML, a frozen contract, has no
server; the live page shows it). Integers stay JSON numbers, text is cleaned exactly as for XML (so both
formats carry identical text), absent values are ``null`` where XML has an empty element.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from typing import Any

from api.errors import Envelope, MorError
from api.rows import RowFields, clean_text, duration_seconds
from collector.live.table import LiveCall

__all__ = ["dumps", "error_json", "row_object", "rows_json"]


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON (stdlib: rendering is not the bottleneck, the row selection is)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def _value(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return clean_text(value)


def row_object(fields: RowFields, row: LiveCall, now: float,
               disconnected: Collection[int] | None = None) -> dict[str, object]:
    """One call as a dict with the XML element names and order; ``duration`` at ``now``. JSON only, after
    them: ``server_id``; ``phase`` when the legs of an answered call are not simply talking (transferring,
    on_hold, ending); ``stale: true`` when the call's server is disconnected now (``disconnected``, else
    asked of ``fields``)."""
    obj = {tag: _value(value) for tag, value in zip(fields.tags(row), fields.values(row), strict=False)}
    call = row.call
    obj["duration"] = duration_seconds(now, call.answer_time)  # keeps its place among the keys
    obj["server_id"] = call.server_id  # JSON only, last: MOR's XML has no server, the live page needs it
    if call.phase:
        obj["phase"] = call.phase
    if call.server_id in (fields.disconnected() if disconnected is None else disconnected):
        obj["stale"] = True
    return obj


def rows_json(fields: RowFields, rows: Iterable[LiveCall], now: float) -> bytes:
    down = fields.disconnected()
    return dumps({"active_calls": [row_object(fields, r, now, down) for r in rows]})


def error_json(err: MorError) -> bytes:
    """``{"error": …}`` for both error envelopes, ``{"message": …}`` for the informational one."""
    key = "message" if err.envelope is Envelope.MESSAGE else "error"
    return dumps({key: err.text})
