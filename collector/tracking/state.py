"""The tracker's mutable state: channels, calls, snapshots and per-server bookkeeping.

Private to ``collector.tracking`` (the event handlers in ``tracker`` and the view derivation in ``views``
share it); nothing outside the package sees these objects, only the immutable records of ``calls``.
Slotted dataclasses: the tracker touches these fields on every event.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import itemgetter

from collector.tracking.calls import CallView, Leg

__all__ = ["Call", "Channel", "Fields", "Server", "Snapshot", "TrackerStats"]


@dataclass(slots=True)
class Channel:
    uniqueid: str
    linkedid: str
    name: str
    state: int
    caller_num: str
    caller_name: str
    exten: str
    created: float
    is_local: bool
    bridge: str = ""
    last_seq: int = 0
    seen_gen: int = 0
    misses: int = 0
    held: bool = False  # between Hold and Unhold (shown only as the call's phase)
    in_appdial: bool = False  # a resync listed it in AppDial: a dialled leg, never the caller (views.call_view)
    # caches for the view (performance only): the ChannelState text ``state`` was parsed from, and this
    # channel's Leg; set ``leg = None`` whenever name, state, is_local or created changes
    state_raw: str = ""
    leg: Leg | None = None


@dataclass(slots=True)
class Call:
    linkedid: str
    channels: dict[str, Channel] = field(default_factory=dict)
    dst: str = ""
    answer_time: float | None = None
    start_time: float = 0.0
    view: CallView | None = None
    caller: Channel | None = None  # the A-leg as last seen: the call keeps its identity after it leaves
    # cache for the view: channels sorted by (created, uniqueid); None after any change to ``channels``
    # or to a member's ``created``
    order: list[Channel] | None = None


@dataclass(slots=True)
class Snapshot:
    action_id: str
    gen: int
    begin_seq: int
    full: bool
    # the list's items as they arrived, applied in one step at CoreShowChannelsComplete (tracker): (message,
    # seq when it arrived, its time); an event arriving after an item outranks it, as if applied in order
    items: list[tuple[Mapping[str, str], int, float]] = field(default_factory=list)


@dataclass(slots=True)
class TrackerStats:
    events: int = 0
    ignored: int = 0
    malformed: int = 0
    errors: int = 0  # exceptions caught inside the tracker: bugs, expected to stay 0
    resync_added: int = 0
    resync_removed: int = 0
    snapshots: int = 0
    # the per-server channel bound (CallTracker.max_channels)
    refused: int = 0  # channels not created because the server was at max_channels
    limited: bool = False  # at the bound; cleared below the low-water mark


@dataclass(slots=True)
class Server:
    server_id: int
    channels: dict[str, Channel] = field(default_factory=dict)
    calls: dict[str, Call] = field(default_factory=dict)
    tombstones: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)
    bridges: dict[str, set[str]] = field(default_factory=dict)  # BridgeUniqueid -> member Uniqueids
    now: float = 0.0  # the latest time seen on this server's stream
    event_time: float = 0.0  # the time of the message being applied
    seq: int = 0
    gen: int = 0
    snapshot: Snapshot | None = None
    full_resync_due: bool = True
    uptime: float | None = None
    # calls dropped while the server was unreachable (CallTracker.drop_server), by Linkedid: (A-leg Uniqueid,
    # answer_time, start_time, dst), given back to the same call when the next full resync lists it again
    parked: dict[str, tuple[str, float | None, float, str]] = field(default_factory=dict)
    stats: TrackerStats = field(default_factory=TrackerStats)


class Fields:
    """The header names of a (prefixed) channel snapshot, and one C-level call that reads all seven
    (the tracker's upsert runs once or twice per event: seven ``dict.get`` calls cost more)."""

    __slots__ = ("fetch", "keys")

    def __init__(self, prefix: str) -> None:
        self.keys: tuple[str, ...] = tuple(prefix + k for k in (
            "Uniqueid", "Linkedid", "Channel", "ChannelState", "CallerIDNum", "CallerIDName", "Exten"))
        self.fetch = itemgetter(*self.keys)  # KeyError when one is missing: then read with get
