"""Who is asking and which rows they get: the one pipeline every endpoint runs before it answers.

params → auth → scope → filters (plus the stale-row guard), and the method rule. ``active_calls_get``,
``active_calls_totals`` and ``active_calls_stream`` all take their rows from here, so they cannot disagree
on who sees which call or on which error comes first.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from api.auth import Principal, authenticate
from api.bearer import bearer_read_principal, bearer_token
from api.deps import DEPS_KEY
from api.errors import METHOD_NOT_ALLOWED, Envelope, MorError
from api.filters import build_filters
from api.params import read_query
from api.scope import RowPredicate, Scope
from collector.live.table import LiveCall

__all__ = ["MOR_METHODS", "Selection", "authorize", "check_method", "select_rows"]

_READ_METHODS = frozenset(("GET", "HEAD"))
MOR_METHODS: tuple[str, ...] = ("GET", "HEAD", "POST")


@dataclass(frozen=True, slots=True)
class Selection:
    """An authenticated caller's view: every predicate a row must pass (visibility first)."""

    principal: Principal
    predicates: tuple[RowPredicate, ...]
    now: float
    extras: Mapping[str, str] = field(default_factory=dict)  # endpoint-specific params (``group_by``)


def check_method(request: web.Request, allowed: tuple[str, ...] = MOR_METHODS) -> bool:
    """405 outside ``allowed`` (MOR's: POST, and GET/HEAD subject to ``allow_get``); returns "is a GET"."""
    if request.method not in allowed:
        raise MorError(METHOD_NOT_ALLOWED, Envelope.STATUS, 405, {"Allow": ", ".join(allowed)})
    return request.method in _READ_METHODS


async def authorize(request: web.Request, *, is_get: bool, extras: Collection[str] = ()) -> Selection:
    """params → auth (``u`` + ``hash``, or a Bearer token) → scope → filters; ``MorError`` for the first
    check that fails.

    ``extras`` names parameters beyond MOR's, read by the same rules (``api.params.pick``)."""
    deps = request.app[DEPS_KEY]
    settings = deps.settings
    query, found = await read_query(request, settings, extras)
    refs = deps.refs()
    if bearer_token(request) is not None:  # a v2 token instead of u + hash (docs/api-extensions.md)
        principal = bearer_read_principal(request, is_get=is_get)
    else:
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


def select_rows(table: Sequence[LiveCall], predicates: Sequence[RowPredicate]) -> list[LiveCall]:
    """One pass per predicate over what is left: cheaper than ``all(...)`` per row in CPython."""
    rows: list[LiveCall] = list(table)
    for predicate in predicates:
        rows = list(filter(predicate, rows))
        if not rows:
            break
    return rows
