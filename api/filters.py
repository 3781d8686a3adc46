"""The seed's twelve ``s_*`` filters as pure predicates over rows, built (and validated) once per request.

Validation runs in the seed's error-list order, which is the documented precedence when several
filters are bad: Server, Direction, Originating User, Originating Device, Terminating User, Terminating
Device, Destination Group, Status, Provider, Did. A name or id the caller may not see fails exactly
like one that does not exist. ``s_did``/``s_destination``/``s_source`` are SQL LIKE patterns.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from api.errors import (
    BAD_STATUS,
    DESTINATION_GROUP_NOT_FOUND,
    DID_NOT_FOUND,
    DIRECTION_NOT_FOUND,
    ORIG_DEVICE_NOT_FOUND,
    ORIG_USER_NOT_FOUND,
    PROVIDER_NOT_FOUND,
    SERVER_NOT_FOUND,
    TERM_DEVICE_NOT_FOUND,
    TERM_USER_NOT_FOUND,
    MorError,
)
from api.params import ActiveCallsQuery
from api.scope import RowPredicate, Scope
from collector.live.table import LiveCall
from collector.tracking.calls import CallStatus

__all__ = ["build_filters", "like_to_regex", "parse_id"]

_STATUSES = {"ringing": CallStatus.RINGING, "answered": CallStatus.ANSWERED}
_MAX_ID_DIGITS = 18  # fits in a signed 64-bit MySQL id; longer is never an existing row


def parse_id(value: str) -> int | None:
    """A row id: ASCII digits only (no sign, space or suffix, unlike Ruby's lenient ``to_i``)."""
    if value.isascii() and value.isdigit() and len(value) <= _MAX_ID_DIGITS:
        return int(value)
    return None


def like_to_regex(pattern: str) -> re.Pattern[str]:
    """SQL LIKE → an anchored regex: ``%`` any run, ``_`` one character, ``\\`` escapes the next one.

    Case-insensitive like MySQL's default collation. Each ``%``-separated middle segment sits in an
    atomic group that takes its leftmost occurrence and never backtracks, so matching stays about
    linear in the subject whatever the pattern (``%a%a%a…%b`` cannot blow up); leftmost-greedy is
    exact for patterns whose only repetition is ``%``."""
    segments: list[str] = []
    current: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            current.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "%":
            segments.append("".join(current))
            current = []
        elif c == "_":
            current.append(".")
        else:
            current.append(re.escape(c))
        i += 1
    segments.append("".join(current))
    if len(segments) == 1:
        source = segments[0]
    else:
        middle = "".join(f"(?>.*?{s})" for s in segments[1:-1] if s)
        source = f"{segments[0]}{middle}.*{segments[-1]}"
    return re.compile(source, re.DOTALL | re.IGNORECASE)


def _like(pattern: str, field: Callable[[LiveCall], str]) -> RowPredicate:
    match = like_to_regex(pattern).fullmatch
    return lambda row: match(field(row)) is not None


def build_filters(query: ActiveCallsQuery, scope: Scope) -> list[RowPredicate]:
    """Predicates for the filters present; ``MorError`` (page envelope) for the first bad one."""
    refs = scope.refs
    preds: list[RowPredicate] = []

    if query.s_server is not None:
        server_id = parse_id(query.s_server)
        if server_id is None or server_id not in refs.servers:
            raise MorError(SERVER_NOT_FOUND)
        preds.append(lambda row: row.call.server_id == server_id)

    if query.s_country is not None:
        direction = refs.directions_by_name.get(query.s_country.lower())
        if direction is None:
            raise MorError(DIRECTION_NOT_FOUND)
        code = direction.code
        preds.append(lambda row: row.info.direction_code == code)

    if query.s_user_id is not None:
        user_id = _visible_user(query.s_user_id, scope, ORIG_USER_NOT_FOUND)
        preds.append(lambda row: row.info.user_id == user_id)
        if query.s_device is not None:  # "does not work without s_user_id": ignored alone
            device_id = _visible_device(query.s_device, user_id, scope, ORIG_DEVICE_NOT_FOUND)
            preds.append(lambda row: row.info.src_device_id == device_id)

    if query.s_dst_user_id is not None:
        dst_user_id = _visible_user(query.s_dst_user_id, scope, TERM_USER_NOT_FOUND)
        preds.append(lambda row: row.info.dst_user_id == dst_user_id)
        if query.s_dst_device is not None:
            dst_device_id = _visible_device(query.s_dst_device, dst_user_id, scope, TERM_DEVICE_NOT_FOUND)
            preds.append(lambda row: row.info.dst_device_id == dst_device_id)

    if query.s_destination_group is not None:
        group_id = parse_id(query.s_destination_group)
        if group_id is None or group_id not in refs.destinationgroups:
            raise MorError(DESTINATION_GROUP_NOT_FOUND)
        preds.append(lambda row: row.info.destinationgroup_id == group_id)

    if query.s_status is not None:
        status = _STATUSES.get(query.s_status.lower())
        if status is None:
            raise MorError(BAD_STATUS)
        preds.append(lambda row: row.call.status is status)

    if query.s_provider is not None:
        provider_id = parse_id(query.s_provider)
        provider = refs.providers.get(provider_id) if provider_id is not None else None
        if provider is None or not scope.provider_visible(provider):
            raise MorError(PROVIDER_NOT_FOUND)
        preds.append(lambda row: row.info.provider_id == provider_id)

    if query.s_did is not None:
        # Existence is judged on the DIDs the caller may see (no probing of others' numbers); the rows,
        # already scoped, are matched on their own DID number, so "%" means "every call via a DID".
        did_match = like_to_regex(query.s_did).fullmatch
        if not any(did_match(d.did) is not None and scope.did_visible(d) for d in refs.dids.values()):
            raise MorError(DID_NOT_FOUND)
        preds.append(lambda row: bool(row.info.did) and did_match(row.info.did) is not None)

    if query.s_destination is not None:
        preds.append(_like(query.s_destination, lambda row: row.info.localized_dst))

    if query.s_source is not None:
        preds.append(_like(query.s_source, lambda row: row.call.src))

    return preds


def _visible_user(value: str, scope: Scope, error: str) -> int:
    user_id = parse_id(value)
    user = scope.refs.users.get(user_id) if user_id is not None else None
    if user is None or not scope.user_visible(user):
        raise MorError(error)
    return user.id


def _visible_device(value: str, user_id: int, scope: Scope, error: str) -> int:
    """The device must exist and belong to the (already checked, visible) user."""
    device_id = parse_id(value)
    device = scope.refs.devices.get(device_id) if device_id is not None else None
    if device is None or device.user_id != user_id:
        raise MorError(error)
    return device.id
