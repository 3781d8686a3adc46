"""``active_calls_get``: params → auth → scope → filters → XML (or JSON), all from the live table in memory.

No I/O besides reading the request: the rows and reference data are snapshots the daemon keeps
current, so a request costs one pass over the rows per predicate plus rendering of what is left.
``authorize`` (params → auth → scope → filters) is shared with ``active_calls_totals`` and
``active_calls_stream`` so the three endpoints cannot disagree on who sees which call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from aiohttp import web

from api.auth import Principal, authenticate
from api.deps import DEPS_KEY, RENDERER_KEY
from api.errors import METHOD_NOT_ALLOWED, NO_DATA, Envelope, MorError
from api.filters import build_filters
from api.jsonout import json_response, rows_json, wants_json
from api.params import (
    INVALID, query_pairs, read_body, build_query, parse_body, read_query,
)
from api.scope import RowPredicate, Scope
from collector.live.table import LiveCall

__all__ = ["Selection", "active_calls_get", "authorize", "check_method", "select_rows", "xml_response"]

log = logging.getLogger(__name__)

_READ_METHODS = frozenset(("GET", "HEAD"))
_ALLOWED = "GET, HEAD, POST"
_BY_ID = attrgetter("id")


def xml_response(body: bytes, status: int = 200,
                 headers: Mapping[str, str] | None = None) -> web.Response:
    resp = web.Response(body=body, status=status, headers=headers, content_type="text/xml",
                        charset="utf-8")
    if status != 200:  # transport failures: the body may be unread, do not reuse the connection
        resp.force_close()
    return resp


@dataclass(frozen=True, slots=True)
class Selection:
    """An authenticated caller's view: every predicate a row must pass (visibility first)."""

    principal: Principal
    predicates: tuple[RowPredicate, ...]
    now: float
    extras: Mapping[str, str] = field(default_factory=dict)  # endpoint-specific params (``group_by``)


def check_method(request: web.Request) -> bool:
    """MOR's method rule (POST; GET/HEAD subject to ``allow_get``); returns "is a GET"."""
    if request.method != "POST" and request.method not in _READ_METHODS:
        raise MorError(METHOD_NOT_ALLOWED, Envelope.STATUS, 405, {"Allow": _ALLOWED})
    return request.method in _READ_METHODS


async def authorize(request: web.Request, *, is_get: bool, extras: tuple[str, ...] = ()) -> Selection:
    """params → auth → scope → filters; ``MorError`` for the first check that fails.

    ``extras`` names parameters beyond MOR's (read with the same rules: first non-empty wins, oversize
    → invalid); they are looked up in the same pairs, so the body is read once."""
    deps = request.app[DEPS_KEY]
    settings = deps.settings
    found: dict[str, str] = {}
    if extras:
        pairs = query_pairs(request, settings.max_params)
        body = await read_body(request, settings)
        pairs += parse_body(request.headers.get("Content-Type", ""), body, settings.max_params - len(pairs))
        query = build_query(pairs, max_param_len=settings.max_param_len)
        for name, value in pairs:
            if name in extras and value and name not in found:
                found[name] = INVALID if len(value) > settings.max_param_len else value
    else:
        query = await read_query(request, settings)
    refs = deps.refs()
    principal = authenticate(query, refs, settings, is_get=is_get)
    scope = Scope(principal, refs)
    filters = build_filters(query, scope)
    now = deps.clock()
    front: list[RowPredicate] = []
    visible = scope.row_predicate()
    if visible is not None:
        front.append(visible)
    if settings.hide_older_than_hours is not None:
        cutoff = now - settings.hide_older_than_hours * 3600.0
        front.append(lambda row: row.call.start_time >= cutoff)
    return Selection(principal, tuple(front + filters), now, found)


async def active_calls_get(request: web.Request) -> web.Response:
    started = time.perf_counter()
    is_get = check_method(request)
    deps = request.app[DEPS_KEY]
    sel = await authorize(request, is_get=is_get)
    table = deps.rows()
    rows = select_rows(table, sel.predicates)
    log.debug("api active_calls_get api_user=%r role=%s rows=%d of=%d ms=%.1f", sel.principal.user.username,
              sel.principal.role.value, len(rows), len(table), (time.perf_counter() - started) * 1000)
    if not rows:
        raise MorError(NO_DATA, Envelope.MESSAGE)
    rows.sort(key=_BY_ID)
    renderer = request.app[RENDERER_KEY]
    if wants_json(request):
        return json_response(rows_json(renderer, rows, sel.now))
    body = renderer.render_calls(rows, sel.now)
    renderer.prune(table, len(table))
    return xml_response(body)


def select_rows(table: Sequence[LiveCall], predicates: Sequence[RowPredicate]) -> list[LiveCall]:
    """One pass per predicate over what is left: cheaper than ``all(...)`` per row in CPython."""
    rows: list[LiveCall] = list(table)
    for predicate in predicates:
        rows = list(filter(predicate, rows))
        if not rows:
            break
    return rows
