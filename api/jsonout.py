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
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from api.errors import Envelope, MorError
from api.rows import RowFields, clean_text, duration_seconds, server_name
from collector.live.table import LiveCall
from collector.refdata.model import Server

__all__ = ["JsonRenderer", "dumps", "error_json", "row_object", "rows_json"]


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


_DURATION_MARK = "\u2063"  # placeholder value; the real duration is spliced in per request
#: ``"duration":"⁣"`` as dumps writes it: unescaped quotes occur in JSON only around keys and values, so
#: this can only be the duration member, never text inside a value
_DURATION_SPLIT = dumps({"duration": _DURATION_MARK})[1:-1]
_DURATION_KEY = _DURATION_SPLIT.partition(b":")[0] + b":"
_STALE_END, _END = b',"stale":true}', b"}"


@dataclass(frozen=True, slots=True)
class _Fragment:
    row: LiveCall  # identity check: a new LiveCall object means the row changed
    servers: Mapping[int, Server]  # identity check: reloaded reference data may rename the server
    head: bytes  # '{"id":…,"duration":'
    tail: bytes  # ',"src":…' up to (not including) the closing brace


class JsonRenderer:
    """``rows_json`` with each row's JSON encoded once (per row object and reference data) and only
    ``duration`` and ``stale`` put in per request, as ``api.xml.RowRenderer`` does for XML: the full list
    of 10,000 calls is then a join, not 10,000 dicts encoded. Same bytes as ``rows_json``."""

    def __init__(self, fields: RowFields) -> None:
        self.fields = fields
        self._cache: dict[int, _Fragment] = {}

    def render_rows(self, rows: Sequence[LiveCall], now: float) -> bytes:
        """``{"active_calls": [...]}`` for ``rows`` (already filtered and ordered)."""
        down, servers = self.fields.disconnected(), self.fields.servers()
        cache = self._cache
        parts: list[bytes] = [b'{"active_calls":[']
        append = parts.append
        for row in rows:
            frag = cache.get(row.id)
            if frag is None or frag.row is not row or frag.servers is not servers:
                frag = cache[row.id] = self._fragment(row, servers)
            append(frag.head)
            seconds = duration_seconds(now, row.call.answer_time)
            append(b"null" if seconds is None else b"%d" % seconds)
            append(frag.tail)
            append(_STALE_END if row.call.server_id in down else _END)
            append(b",")
        if rows:
            parts.pop()
        append(b"]}")
        return b"".join(parts)

    def prune(self, live: Iterable[LiveCall], size: int) -> None:
        """Forget rows that left the table, once the cache has grown well past the table's ``size``."""
        if len(self._cache) > 2 * size + 1024:
            keep = {row.id for row in live}
            self._cache = {k: v for k, v in self._cache.items() if k in keep}

    def _fragment(self, row: LiveCall, servers: Mapping[int, Server]) -> _Fragment:
        obj = row_object(self.fields, row, 0.0, (), servers)
        obj["duration"] = _DURATION_MARK
        head, _, tail = dumps(obj).partition(_DURATION_SPLIT)
        return _Fragment(row, servers, head + _DURATION_KEY, tail[:-1])


def error_json(err: MorError) -> bytes:
    """``{"error": …}`` for both error envelopes, ``{"message": …}`` for the informational one."""
    key = "message" if err.envelope is Envelope.MESSAGE else "error"
    return dumps({key: err.text})
