"""MOR v2 hang-up: ``DELETE /billing/api/v2/active_calls/{id}`` and the bulk ``DELETE …/active_calls``.

Order of checks (each answered as ``{"error": …}``): Bearer token (401) → feature on and role allowed
(403) → the call: it must exist, be visible to the caller (scope, ``hide_older_than_hours``) and be his to
hang up (``api.hangup_policy``), else 404 ``Active call not found`` — the same body and status whatever
the reason, so ids cannot be probed. Then the executor acts: 200 / 409 / 503 / 504 (docs/api-extensions.md).

The bulk form takes the ``s_*`` filters of ``active_calls_get`` from the query string (validated and scoped
by ``api.filters`` exactly as there; a bad one is 400 with MOR's text) and ``dry_run=1`` to list the ids it
would hang up without doing anything.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from api.auth import Principal
from api.bearer import bearer_principal
from api.deps import DEPS_KEY, FIELDS_KEY, ApiDeps
from api.errors import MorError
from api.filters import build_filters, parse_id
from api.hangup_policy import (
    CALL_NOT_FOUND,
    FEATURE_DISABLED,
    HTTP_STATUS,
    HangupBusy,
    HangupExecutor,
    HangupPolicy,
    HangupResult,
)
from api.params import build_query, pick, query_pairs
from api.scope import RowPredicate, Scope
from api.selection import select_rows
from api.v2errors import V2_PREFIX, V2Error, v2_response
from collector.live.table import LiveCall

__all__ = ["BULK_BUSY", "CALLS_PATH", "add_v2calls_routes"]

CALLS_PATH = V2_PREFIX + "active_calls"
BULK_BUSY = "Too many bulk hang-ups in progress, try again later"
_TRUE, _FALSE = frozenset(("1", "true", "yes")), frozenset(("0", "false", "no"))


def add_v2calls_routes(app: web.Application) -> None:
    for path, handler in ((CALLS_PATH + "/{id}", delete_active_call), (CALLS_PATH, delete_active_calls)):
        app.router.add_route("DELETE", path, handler)
        app.router.add_route("*", path, _method_not_allowed)  # any other method: a JSON 405, not aiohttp's text


async def _method_not_allowed(request: web.Request) -> web.Response:
    raise V2Error(405, "Method Not Allowed", {"Allow": "DELETE"})


def _allowed(request: web.Request) -> tuple[ApiDeps, HangupPolicy, Principal, HangupExecutor]:
    """The caller and the executor, or the 401/403 that comes before any call is looked at."""
    principal = bearer_principal(request)
    deps = request.app[DEPS_KEY]
    policy = deps.hangup_policy()
    why = policy.refusal(principal)
    if why is None and deps.hangups is None:  # enabled in the policy but nothing wired (no AMI)
        why = FEATURE_DISABLED
    if why is not None:
        if deps.hangups is not None:
            deps.hangups.refused(principal, _call_id(request), HangupResult.FORBIDDEN, why)
        raise V2Error(403, why)
    assert deps.hangups is not None
    return deps, policy, principal, deps.hangups


def _call_id(request: web.Request) -> int | None:
    """The id of a single DELETE (None for the bulk form or an id that is no number)."""
    raw = request.match_info.get("id")
    return None if raw is None else parse_id(raw)


def _candidates(deps: ApiDeps, policy: HangupPolicy, principal: Principal, scope: Scope) -> list[RowPredicate]:
    """Visibility (as active_calls_get), the stale-row guard, then the hang-up rule."""
    preds: list[RowPredicate] = []
    visible = scope.row_predicate()
    if visible is not None:
        preds.append(visible)
    hide = deps.settings.hide_older_than_hours
    if hide is not None:
        cutoff = deps.clock() - hide * 3600.0
        preds.append(lambda row: row.call.start_time >= cutoff)
    rule = policy.call_predicate(principal, scope.refs)
    if rule is not None:
        preds.append(rule)
    return preds


async def delete_active_call(request: web.Request) -> web.Response:
    deps, policy, principal, executor = _allowed(request)
    call_id = _call_id(request)
    row = None
    if call_id is not None:
        preds = _candidates(deps, policy, principal, Scope(principal, deps.refs()))
        row = next((r for r in deps.rows() if r.id == call_id), None)
        if row is not None and not all(p(row) for p in preds):
            row = None  # not his to see or to end: answered exactly like a call that does not exist
    if row is None:
        executor.refused(principal, call_id, HangupResult.NOT_FOUND, CALL_NOT_FOUND)
        raise V2Error(404, CALL_NOT_FOUND)
    outcome = await executor.hang_up(row, principal)
    if outcome.result is not HangupResult.HUNG_UP:
        raise V2Error(HTTP_STATUS[outcome.result], outcome.error)
    return v2_response({"status": "hung_up", "hung_up_call": call_id,
                        "hung_up_at": request.app[FIELDS_KEY].time(outcome.at)})


def _dry_run(value: str | None) -> bool:
    if value is None:
        return False
    v = value.lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise V2Error(400, "dry_run must be 1 or 0")


async def delete_active_calls(request: web.Request) -> web.Response:
    deps, policy, principal, executor = _allowed(request)
    settings = deps.settings
    pairs = query_pairs(request, settings.max_params)
    dry_run = _dry_run(pick(pairs, ("dry_run",), max_param_len=settings.max_param_len).get("dry_run"))
    query = build_query(pairs, max_param_len=settings.max_param_len)
    scope = Scope(principal, deps.refs())
    try:
        filters = build_filters(query, scope)
    except MorError as err:
        raise V2Error(400, err.text) from None
    rows: Sequence[LiveCall] = sorted(select_rows(deps.rows(), _candidates(deps, policy, principal, scope) + filters),
                                      key=lambda r: r.id)
    if dry_run:
        return v2_response({"status": "dry_run", "would_hang_up": [r.id for r in rows]})
    try:
        outcomes = await executor.hang_up_many(rows, principal)
    except HangupBusy:
        raise V2Error(429, BULK_BUSY, {"Retry-After": "1"}) from None
    done = [o.call_id for o in outcomes if o.result is HangupResult.HUNG_UP]
    failed = [{"id": o.call_id, "error": o.error} for o in outcomes if o.result is not HangupResult.HUNG_UP]
    return v2_response({"status": "hung_up", "hung_up_calls": done, "failed": failed,
                        "hung_up_at": request.app[FIELDS_KEY].time(deps.clock())})
