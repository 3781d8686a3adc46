"""``active_calls_history``: the caller's concurrency over a period, per 15 s bucket (collector.live.history).

Same transport, auth and error envelopes as ``active_calls_get`` (``api.selection.authorize``); the role
picks the one series answered, so nobody can read a series wider than the calls he may list: admin and
accountant ``all`` (``server:<id>`` with ``s_server``), a reseller ``reseller:<his id>``, a user
``user:<his id>``. The store is read off the loop by ``ApiDeps.history``; the answer includes the bucket
still open, so the newest point moves until its 15 s are over.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo

from aiohttp import web

from api.auth import Principal, Role
from api.deps import DEPS_KEY
from api.errors import MorError
from api.filters import parse_id
from api.jsonout import dumps
from api.responses import json_response
from api.selection import authorize, check_method
from collector.live.history import BUCKET_SECONDS

__all__ = ["BAD_PERIOD_END", "BAD_PERIOD_START", "BUCKET_SECONDS", "HISTORY_DISABLED", "HISTORY_PATHS",
           "MAX_PERIOD_DAYS", "PERIOD_MISSING", "PERIOD_ORDER", "PERIOD_TOO_LONG", "SERVER_NOT_ALLOWED",
           "USER_HISTORY_DISABLED", "active_calls_history", "add_history_routes", "parse_time", "series_for"]

HISTORY_PATHS: tuple[str, ...] = ("/billing/api/active_calls_history", "/api/active_calls_history")
MAX_PERIOD_DAYS = 31

HISTORY_DISABLED = "History is not enabled"
USER_HISTORY_DISABLED = "History per user is not enabled"
PERIOD_MISSING = "Period start and period end are required"
BAD_PERIOD_START = "Period start must be YYYY-MM-DD HH:MM:SS or Unix seconds"
BAD_PERIOD_END = "Period end must be YYYY-MM-DD HH:MM:SS or Unix seconds"
PERIOD_ORDER = "Period end must be after period start"
PERIOD_TOO_LONG = f"Period must not be longer than {MAX_PERIOD_DAYS} days"
SERVER_NOT_ALLOWED = "Server history is for admin and accountant only"

_INLINE_POINTS = 2_000  # more points than this are rendered in a worker thread
_UNIX = re.compile(r"[0-9]{1,11}")
_STAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")


def parse_time(value: str, zone: tzinfo | None) -> int | None:
    """Unix seconds (digits) or ``YYYY-MM-DD HH:MM:SS`` in the API's zone (None: the server's); None if
    neither. A wall time a DST change repeats is its first occurrence, one it skips is read as if
    the change had not happened yet (Python's ``fold=0``)."""
    if _UNIX.fullmatch(value):
        return int(value)
    if not _STAMP.fullmatch(value):
        return None
    try:
        naive = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    moment = naive.replace(tzinfo=zone) if zone is not None else naive.astimezone()
    return int(moment.timestamp())


def _period(extras: Mapping[str, str], zone: tzinfo | None) -> tuple[int, int]:
    raw_start, raw_end = extras.get("period_start"), extras.get("period_end")
    if raw_start is None or raw_end is None:
        raise MorError(PERIOD_MISSING)
    start = parse_time(raw_start, zone)
    if start is None:
        raise MorError(BAD_PERIOD_START)
    end = parse_time(raw_end, zone)
    if end is None:
        raise MorError(BAD_PERIOD_END)
    if end <= start:
        raise MorError(PERIOD_ORDER)
    if end - start > MAX_PERIOD_DAYS * 86_400:
        raise MorError(PERIOD_TOO_LONG)
    return start, end


def series_for(principal: Principal, s_server: str | None) -> str:
    """The one series this caller may read (``s_server`` already checked by the filters: an id that exists)."""
    if principal.sees_everything:
        if s_server is None:
            return "all"
        sid = parse_id(s_server)
        assert sid is not None  # build_filters refused anything else with "Server was not found"
        return f"server:{sid}"
    if s_server is not None:
        raise MorError(SERVER_NOT_ALLOWED)
    if principal.role is Role.RESELLER:
        return f"reseller:{principal.user.id}"
    return f"user:{principal.user.id}"


async def active_calls_history(request: web.Request) -> web.Response:
    """Errors in MOR's order: transport and auth, then the filters (``s_server``: "Server was not found"),
    then history off, the period, and ``s_server`` for a scoped caller. The answer is JSON."""
    is_get = check_method(request)
    deps = request.app[DEPS_KEY]
    sel = await authorize(request, is_get=is_get, extras=("period_start", "period_end", "s_server"))
    if deps.history is None:
        raise MorError(HISTORY_DISABLED)
    start, end = _period(sel.extras, deps.settings.zone())
    series = series_for(sel.principal, sel.extras.get("s_server"))
    points = await deps.history(series, start, end)
    if points is None:
        raise MorError(USER_HISTORY_DISABLED)
    if len(points) > _INLINE_POINTS:  # a day of points is ~50 ms of JSON: not on the loop
        body = await asyncio.to_thread(_render, start, end, points)
    else:
        body = _render(start, end, points)
    return json_response(body)


def _render(start: int, end: int, points: Sequence[tuple[int, int, int]]) -> bytes:
    return dumps({"bucket_seconds": BUCKET_SECONDS, "period_start": start, "period_end": end,
                  "points": [{"time": b, "total": t, "answered": a} for b, t, a in points]})


def add_history_routes(app: web.Application) -> None:
    for path in HISTORY_PATHS:
        app.router.add_route("*", path, active_calls_history)
