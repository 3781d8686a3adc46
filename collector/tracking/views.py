"""What a call shows: the ``CallView`` derived from its channels, and the changes of the touched calls.

Derived from the legs every time (never patched event by event). MOR's rule for the status: a call is
Answered from its first answer until it ends (``answer_time`` set ⇔ Answered), whatever its legs do
meanwhile; the first answer is when a non-Local B-leg is Up or two of the call's channels share a bridge,
and fixes ``answer_time``. What the legs of an answered call do afterwards shows only as ``phase``
(transferring, on_hold, ending). The B-leg shown is chosen by ``b_leg_outranks``. This is the tracker's
second-hottest code: it returns the previous view itself when nothing visible changed, so most events
allocate nothing here.
"""

from __future__ import annotations

from collections.abc import Iterable

from collector.tracking.calls import (
    AST_STATE_UP,
    PHASE_ENDING,
    PHASE_ON_HOLD,
    PHASE_TRANSFERRING,
    CallChange,
    CallStatus,
    CallView,
    Leg,
    b_leg_outranks,
)
from collector.tracking.state import Call, Channel, Server

__all__ = ["append_changes", "call_view"]

_IGNORED_EXTENS = frozenset(("", "s"))

# call_view and _leg build CallView and Leg positionally: fail at import, not silently, if calls.py reorders them
_VIEW_FIELDS = ("server_id", "linkedid", "uniqueid", "channel", "dst_channel", "status", "src", "src_name", "dst",
                "start_time", "answer_time", "legs", "phase")
if CallView._fields != _VIEW_FIELDS or Leg._fields != (
        "uniqueid", "channel", "state", "is_local", "created"):
    raise ImportError("collector.tracking.calls changed CallView/Leg fields: update views.call_view and _leg")


def _creation_order(ch: Channel) -> tuple[float, str]:
    return (ch.created, ch.uniqueid)


def _may_be_caller(ch: Channel) -> bool:
    """A caller candidate of a call first seen without its Linkedid channel: never the dialled half of a Local
    pair (``;2``) nor a channel a resync listed in AppDial (a leg some Dial created)."""
    return not (ch.in_appdial or (ch.is_local and ch.name.endswith(";2")))


def _leg(ch: Channel) -> Leg:
    leg = ch.leg
    if leg is None:
        leg = ch.leg = Leg(ch.uniqueid, ch.name, ch.state, ch.is_local, ch.created)
    return leg


def append_changes(srv: Server, touched: Iterable[str], out: list[CallChange]) -> None:
    """Append to ``out`` the changes of the touched calls."""
    calls = srv.calls
    for linkedid in touched:
        call = calls.get(linkedid)
        if call is None:
            continue
        old = call.view
        if not call.channels:
            del calls[linkedid]
            if old is not None:
                out.append(CallChange("removed", (srv.server_id, linkedid), None))
            continue
        view = call_view(srv, call)
        if view is old:  # nothing visible changed
            continue
        call.view = view
        out.append(CallChange("added" if old is None else "updated", (srv.server_id, linkedid), view))


def call_view(srv: Server, call: Call) -> CallView:
    """The call as shown now; ``call.view`` itself when nothing visible changed (no allocation)."""
    order = call.order
    channels = call.channels
    if order is None:
        order = call.order = (sorted(channels.values(), key=_creation_order) if len(channels) > 1
                              else list(channels.values()))
    a_leg = channels.get(call.linkedid)
    if a_leg is not None:
        call.caller = a_leg
    elif call.caller is not None:
        a_leg = call.caller  # the caller left (transfer, or the first of two hangups): same call
    else:  # first seen mid-call (resync) without its A-leg: the oldest that can be a caller
        a_leg = call.caller = next((c for c in order if _may_be_caller(c)), order[0])
    answered = held = ringing = False
    bridges: list[str] = []
    best_b: Channel | None = None
    for ch in order:
        bridge = ch.bridge
        if bridge:
            if bridge in bridges:
                answered = True  # two of the call's channels share a bridge
            else:
                bridges.append(bridge)
        if ch.held:
            held = True
        if ch is a_leg or ch.is_local:
            continue
        up = ch.state == AST_STATE_UP
        if up:
            answered = True
        else:
            ringing = True
        if best_b is None or b_leg_outranks(up, ch.created, best_b.state == AST_STATE_UP, best_b.created):
            best_b = ch
    if answered and call.answer_time is None:
        call.answer_time = srv.event_time
    if not call.dst and a_leg.exten not in _IGNORED_EXTENS:
        call.dst = a_leg.exten
    if order[0] is a_leg or a_leg.uniqueid not in channels:  # the A-leg first while it is up
        legs = tuple([c.leg or _leg(c) for c in order])
    else:
        legs = (a_leg.leg or _leg(a_leg), *[c.leg or _leg(c) for c in order if c is not a_leg])
    dst_channel = best_b.name if best_b is not None else ""
    # MOR's rule: Answered from the first answer until the call ends; the legs only set the phase
    if call.answer_time is None:
        status = CallStatus.RINGING
        phase = ""
    else:
        status = CallStatus.ANSWERED
        phase = (PHASE_ON_HOLD if held else "" if answered else PHASE_TRANSFERRING if ringing
                 else PHASE_ENDING)
    src = a_leg.caller_num if a_leg.caller_num != "<unknown>" else ""
    src_name = a_leg.caller_name if a_leg.caller_name != "<unknown>" else ""
    old = call.view
    # ``CallView.__eq__`` without building a view first; the legs (what changes most) compared first
    if (old is not None and old.legs == legs and old.status is status and old.dst_channel == dst_channel
            and old.answer_time == call.answer_time and old.uniqueid == a_leg.uniqueid
            and old.channel == a_leg.name and old.src == src and old.src_name == src_name
            and old.dst == call.dst and old.start_time == call.start_time and old.phase == phase):
        return old
    # positional (a third cheaper than keywords; the field order is checked at import, see _VIEW_FIELDS)
    return CallView(srv.server_id, call.linkedid, a_leg.uniqueid, a_leg.name, dst_channel, status, src,
                    src_name, call.dst, call.start_time, call.answer_time, legs, phase)
