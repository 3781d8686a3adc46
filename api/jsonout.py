"""``format=json``: the same documents as the XML ones, as JSON objects.

Row fields come from ``api.rows``, the definition the XML renderer uses too: same keys, same order,
``dst_*`` only where XML has them, then JSON-only keys MOR's XML (a frozen contract) has not: ``server_id``,
``server_name``, ``start_time``, ``start_epoch``, ``answer_epoch``, ``did``, ``dst`` (the live page shows
and sorts by them), then ``phase`` / ``stale`` when they apply. Integers stay JSON numbers, text is cleaned
exactly as for XML (so both formats carry identical text), absent values are ``null`` where XML has an
empty element.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from api.errors import Envelope, MorError
from api.rows import RowFields, clean_text, duration_seconds, server_name
from collector.live.table import LiveCall
from collector.refdata.model import Server

__all__ = ["dumps", "error_json", "row_object", "rows_json"]


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON (stdlib: rendering is not the bottleneck, the row selection is)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def _value(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return clean_text(value)


def _epoch(ts: float | None) -> float | None:
    """Unix seconds as a JSON number; None for None and for inf/nan (which JSON cannot carry)."""
    return ts if ts is not None and math.isfinite(ts) else None


def row_object(fields: RowFields, row: LiveCall, now: float,
               disconnected: Collection[int] | None = None,
               servers: Mapping[int, Server] | None = None) -> dict[str, object]:
    """One call as a dict with the XML element names and order; ``duration`` at ``now``. JSON only, after
    them: ``server_id``, ``server_name`` (null when the server is not in the reference data),
    ``start_time`` (API zone), ``start_epoch``, ``answer_epoch``, ``did`` (the call's DID number),
    ``dst`` (the number dialled, as received); ``phase`` when the legs of an answered call are not simply
    talking (transferring, on_hold, ending); ``stale: true`` when the call's server is disconnected now.
    ``disconnected`` and ``servers`` are asked of ``fields`` when not given (a list passes them once)."""
    obj = {tag: _value(value) for tag, value in zip(fields.tags(row), fields.values(row), strict=False)}
    call = row.call
    obj["duration"] = duration_seconds(now, call.answer_time)  # keeps its place among the keys
    obj["server_id"] = call.server_id  # JSON only, from here on: MOR's XML has none of these
    server = (fields.servers() if servers is None else servers).get(call.server_id)
    obj["server_name"] = server_name(server) if server is not None else None
    obj["start_time"] = fields.time(call.start_time)
    obj["start_epoch"] = _epoch(call.start_time)
    obj["answer_epoch"] = _epoch(call.answer_time)
    obj["did"] = clean_text(row.info.did)
    obj["dst"] = clean_text(call.dst)
    if call.phase:
        obj["phase"] = call.phase
    if call.server_id in (fields.disconnected() if disconnected is None else disconnected):
        obj["stale"] = True
    return obj


def rows_json(fields: RowFields, rows: Iterable[LiveCall], now: float) -> bytes:
    down, servers = fields.disconnected(), fields.servers()
    return dumps({"active_calls": [row_object(fields, r, now, down, servers) for r in rows]})


def error_json(err: MorError) -> bytes:
    """``{"error": …}`` for both error envelopes, ``{"message": …}`` for the informational one."""
    key = "message" if err.envelope is Envelope.MESSAGE else "error"
    return dumps({key: err.text})
