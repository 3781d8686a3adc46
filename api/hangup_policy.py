"""Who may hang up which call, and what a hang-up attempt can come to: pure rules, no I/O.

Safe by default: the feature is off until ``[hangup] enabled = yes`` (the AMI user then acts on the PBX,
so it is an operator's decision), and plain users may not hang up unless ``users_may_hang_up = yes``.
When on: an admin may hang up any call; a reseller the calls he sees (``api.scope``: made by him or his
users, or to their devices); a user, if allowed, only his own calls (made by him or to his devices, the
calls he sees); an accountant never (a read-only role in MOR).

Refusals come in two kinds so ids cannot be probed: the *role* is refused (403, before any id is looked
at), or the *call* is not one the caller may hang up, which is answered exactly like a call that does not
exist (404 ``Active call not found``).

The executor the daemon supplies (``HangupExecutor``) answers each attempt with a ``HangupOutcome``; the
DELETE routes (``api.v2calls``) turn it into HTTP. Declared here so the API never imports the service.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from api.auth import Principal, Role
from api.scope import RowPredicate, Scope
from collector.live.table import LiveCall
from collector.refdata.index import RefIndex

__all__ = ["CALL_NOT_FOUND", "FEATURE_DISABLED", "ROLE_NOT_ALLOWED", "HangupBusy", "HangupExecutor",
           "HangupOutcome", "HangupPolicy", "HangupResult", "HTTP_STATUS"]

FEATURE_DISABLED = "Hang-up is disabled"
ROLE_NOT_ALLOWED = "Not allowed to hang up calls"
CALL_NOT_FOUND = "Active call not found"


@dataclass(frozen=True, slots=True)
class HangupPolicy:
    """The ``[hangup]`` switches that decide who may act (the defaults are the safe ones)."""

    enabled: bool = False
    users_may_hang_up: bool = False

    def refusal(self, principal: Principal) -> str | None:
        """Why this caller may hang up nothing at all (403), or None when some calls may be his to end."""
        if not self.enabled:
            return FEATURE_DISABLED
        role = principal.role
        if role is Role.ADMIN or role is Role.RESELLER:
            return None
        if role is Role.USER and self.users_may_hang_up:
            return None
        return ROLE_NOT_ALLOWED  # accountant always; a user unless users_may_hang_up

    def may_hang_up(self, principal: Principal) -> bool:
        """``ApiDeps.may_hang_up``: whether to offer this caller hang-up at all (the login answer says it)."""
        return self.refusal(principal) is None

    def call_predicate(self, principal: Principal, refs: RefIndex) -> RowPredicate | None:
        """The calls a caller who passed ``refusal`` may hang up; None = every call (admin).

        Reseller and user get exactly their visibility rule, so what they may end is what they see."""
        if principal.role is Role.ADMIN:
            return None
        return Scope(principal, refs).row_predicate() or _nothing

    def may_hang_up_call(self, principal: Principal, refs: RefIndex, row: LiveCall) -> bool:
        """The whole rule for one call (role, then call), for callers that have no prebuilt predicate."""
        if self.refusal(principal) is not None:
            return False
        pred = self.call_predicate(principal, refs)
        return pred is None or pred(row)


def _nothing(_row: LiveCall) -> bool:
    return False


class HangupResult(str, Enum):
    """What became of one attempt; the value is the audit line's and the metric's ``result`` label."""

    HUNG_UP = "hung_up"  # Asterisk accepted the Hangup and the call left the table: 200
    NOT_CONFIRMED = "not_confirmed"  # no AMI answer, or the call still there, within confirm_timeout: 504
    AMI_ERROR = "ami_error"  # Asterisk answered Error (Permission denied …) and the call is still up: 409
    SERVER_DOWN = "server_down"  # the call's server is not connected: 503, no action sent
    GONE = "gone"  # the call ended by itself before our Hangup reached it ("No such channel"): 404
    BUSY = "busy"  # too many hang-ups in flight: 429, nothing sent
    FORBIDDEN = "forbidden"  # feature off or role not allowed: 403 (refused before any call is looked at)
    NOT_FOUND = "not_found"  # no such call, or not one the caller may see or hang up: 404


#: HTTP status per result, for the single DELETE.
HTTP_STATUS: dict[HangupResult, int] = {
    HangupResult.HUNG_UP: 200, HangupResult.NOT_CONFIRMED: 504, HangupResult.AMI_ERROR: 409,
    HangupResult.SERVER_DOWN: 503, HangupResult.GONE: 404, HangupResult.BUSY: 429,
    HangupResult.FORBIDDEN: 403, HangupResult.NOT_FOUND: 404,
}


@dataclass(frozen=True, slots=True)
class HangupOutcome:
    call_id: int
    result: HangupResult
    error: str = ""  # the client's error text ("" for hung_up)
    at: float = 0.0  # Unix time the outcome was known (the call seen gone, for hung_up)


class HangupBusy(Exception):
    """Raised by an executor that refuses a request at once because its bounds are reached (429)."""


class HangupExecutor(Protocol):
    """What the DELETE routes need from the daemon: hang up calls on their servers, paced and confirmed."""

    async def hang_up(self, row: LiveCall, principal: Principal) -> HangupOutcome: ...

    async def hang_up_many(self, rows: Sequence[LiveCall], principal: Principal) -> list[HangupOutcome]: ...

    def refused(self, principal: Principal, call_id: int | None, result: HangupResult, reason: str) -> None:
        """Record (audit line, count) a request refused before any action: ``forbidden`` / ``not_found``."""
