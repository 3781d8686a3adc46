"""The call tracker: a pure state machine from AMI messages to call-table changes.

Rules of this module: no I/O and no clock reads (time is the ``Timestamp`` header of the events, or the
``_RxTime`` the session stamps on replies that carry none); ``apply`` never raises on what Asterisk (or
garbage) sends; every handler is idempotent and tolerant of order, because facts about one call come from
several Asterisk threads and resyncs overlap with live events.

Model (Asterisk 12+): channels keyed by (server, Uniqueid); a call is the set of channels sharing a
Linkedid. A channel whose Linkedid changes (pickup, transfer, bridge merge) moves to the other call.
Status is derived from the legs every time: Answered while a non-Local B-leg is Up or two of the call's
channels share a bridge, else Ringing; the first time it is answered fixes ``answer_time``.
Resync: a ``CoreShowChannels`` list is a snapshot. The first one after a session (re)start sweeps at
once what the snapshot lacks; later (periodic) ones remove a channel only after two consecutive misses.
A channel touched by an event after the list began is never swept by it, and a hung-up Uniqueid
(tombstone) is never brought back by a snapshot or a late event.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter

from collector.ami.framing import BANNER_KEY, RX_TIME_KEY, parse_hms
from collector.tracking.calls import CallChange, CallStatus, CallView, Leg

__all__ = ["CallTracker", "TrackerStats", "RX_TIME_KEY", "TRACKER_KEYS"]

log = logging.getLogger(__name__)

_UP = 6
_TOMBSTONE_SECONDS = 300.0
_TOMBSTONE_MAX = 200_000
_IGNORED_EXTENS = frozenset(("", "s"))


@dataclass(slots=True)
class _Channel:
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
    # caches for _view (performance only): the ChannelState text ``state`` was parsed from, and this
    # channel's Leg; set ``leg = None`` whenever name, state, is_local or created changes
    state_raw: str = ""
    leg: Leg | None = None


@dataclass(slots=True)
class _Call:
    linkedid: str
    channels: dict[str, _Channel] = field(default_factory=dict)
    dst: str = ""
    answer_time: float | None = None
    start_time: float = 0.0
    view: CallView | None = None
    caller: _Channel | None = None  # the A-leg as last seen: the call keeps its identity after it leaves
    # cache for _view: channels sorted by (created, uniqueid); None after any change to ``channels``
    # or to a member's ``created``
    order: list[_Channel] | None = None


@dataclass(slots=True)
class _Snapshot:
    action_id: str
    gen: int
    begin_seq: int
    full: bool


@dataclass(slots=True)
class TrackerStats:
    events: int = 0
    ignored: int = 0
    malformed: int = 0
    errors: int = 0  # exceptions caught inside the tracker: bugs, expected to stay 0
    resync_added: int = 0
    resync_removed: int = 0
    snapshots: int = 0


@dataclass(slots=True)
class _Server:
    server_id: int
    channels: dict[str, _Channel] = field(default_factory=dict)
    calls: dict[str, _Call] = field(default_factory=dict)
    tombstones: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)
    bridges: dict[str, set[str]] = field(default_factory=dict)  # BridgeUniqueid -> member Uniqueids
    now: float = 0.0  # the latest time seen on this server's stream
    event_time: float = 0.0  # the time of the message being applied
    seq: int = 0
    gen: int = 0
    snapshot: _Snapshot | None = None
    full_resync_due: bool = True
    uptime: float | None = None
    stats: TrackerStats = field(default_factory=TrackerStats)


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default


def _linkedid_age(linkedid: str) -> tuple[float, int, str]:
    """Sort key: a Linkedid is the Uniqueid of the oldest channel, ``[system-]<epoch>.<counter>``."""
    tail = linkedid.rsplit("-", 1)[-1]
    epoch, _, counter = tail.partition(".")
    try:
        return (float(epoch), int(counter or 0), linkedid)
    except ValueError:
        return (float("inf"), 0, linkedid)


class _Fields:
    """The header names of a (prefixed) channel snapshot, and one C-level call that reads all seven
    (``_upsert_keys`` runs once or twice per event: seven ``dict.get`` calls cost more)."""

    __slots__ = ("keys", "fetch")

    def __init__(self, prefix: str) -> None:
        self.keys: tuple[str, ...] = tuple(prefix + k for k in (
            "Uniqueid", "Linkedid", "Channel", "ChannelState", "CallerIDNum", "CallerIDName", "Exten"))
        self.fetch = itemgetter(*self.keys)  # KeyError when one is missing: then read with get


# _view and _leg build CallView and Leg positionally: fail at import, not silently, if calls.py reorders them
_VIEW_FIELDS = ("server_id", "linkedid", "uniqueid", "channel", "dst_channel", "status", "src", "src_name", "dst",
                "start_time", "answer_time", "legs")
if CallView._fields != _VIEW_FIELDS or Leg._fields != (
        "uniqueid", "channel", "state", "is_local", "created"):
    raise ImportError("collector.tracking.calls changed CallView/Leg fields: update CallTracker._view and _leg")
_PLAIN = _Fields("")
_DEST = _Fields("Dest")
_LOCAL_ONE = _Fields("LocalOne")
_LOCAL_TWO = _Fields("LocalTwo")


#: Every header the tracker reads (the framer's projection, ``AmiFramer(keep_keys=…)``): add here any key
#: a handler starts to read, or the C decoder will not decode it.
TRACKER_KEYS = frozenset((*_PLAIN.keys, *_DEST.keys, *_LOCAL_ONE.keys, *_LOCAL_TWO.keys, "Event", "Timestamp",
                          RX_TIME_KEY, "ActionID", "EventList", "Message", "Duration", "BridgeId", "BridgeType",
                          "BridgeUniqueid", "Newname", "Uptime"))


def _creation_order(ch: _Channel) -> tuple[float, str]:
    return (ch.created, ch.uniqueid)


def _leg(ch: _Channel) -> Leg:
    leg = ch.leg
    if leg is None:
        leg = ch.leg = Leg(ch.uniqueid, ch.name, ch.state, ch.is_local, ch.created)
    return leg


class CallTracker:
    """Feed ``apply(server_id, message)``; read ``calls()``. One instance serves every server."""

    def __init__(self) -> None:
        self._servers: dict[int, _Server] = {}
        self._touched: set[str] = set()
        self._handlers: dict[str, Callable[[_Server, Mapping[str, str], set[str]], None]] = {
            "Newchannel": self._on_newchannel,
            "Newstate": self._on_snapshot_event,
            "NewCallerid": self._on_snapshot_event,
            "NewConnectedLine": self._on_snapshot_event,
            "NewAccountCode": self._on_snapshot_event,
            "HangupRequest": self._on_snapshot_event,
            "SoftHangupRequest": self._on_snapshot_event,
            "BridgeEnter": self._on_bridge_enter,
            "BridgeLeave": self._on_bridge_leave,
            "DialBegin": self._on_dial,
            "DialState": self._on_dial,
            "DialEnd": self._on_dial,
            "LocalBridge": self._on_local_bridge,
            "Hangup": self._on_hangup,
            "Rename": self._on_rename,
            "CoreShowChannel": self._on_snapshot_item,
            "CoreShowChannelsComplete": self._on_snapshot_done,
            "FullyBooted": self._on_fully_booted,
            "Shutdown": self._on_shutdown,
        }

    # ------------------------------------------------------------------ public API
    def apply(self, server_id: int, msg: Mapping[str, str]) -> list[CallChange]:
        """Apply one AMI message; return the call changes it caused (often none)."""
        return self.apply_many(server_id, (msg,))

    def apply_many(self, server_id: int, msgs: Iterable[Mapping[str, str]]) -> list[CallChange]:
        """Apply messages in order; return the call changes they caused, each as ``apply`` would have.
        One call per TCP chunk: the per-message loop is the collector's hottest code."""
        srv = self._servers.get(server_id)
        if srv is None:
            srv = self._servers[server_id] = _Server(server_id)
        out: list[CallChange] = []
        handlers = self._handlers
        touched = self._touched  # one set reused for every message (apply is not reentrant)
        events = ignored = 0
        for msg in msgs:
            event = msg.get("Event")
            if event is None:
                self._on_non_event(srv, msg)
                continue
            events += 1
            handler = handlers.get(event)
            if handler is None:
                ignored += 1
                continue
            ts = msg.get("Timestamp") or msg.get(RX_TIME_KEY)
            t = srv.now
            if ts:
                try:
                    t = float(ts)
                except ValueError:
                    pass
                if t > srv.now:
                    srv.now = t
            # times recorded for this message (creation, answer) are its own, so one message stamped on
            # another clock (a resync item after a reconnect) cannot shift the times of later events
            srv.event_time = t
            srv.seq += 1
            try:
                handler(srv, msg, touched)
                if touched:
                    self._changes(srv, touched, out)
                    touched.clear()
            except Exception:  # a tracker bug must never take the AMI session down
                touched.clear()
                srv.stats.errors += 1
                log.exception("tracker failed on event=%s server=%s", event, server_id)
        stats = srv.stats
        stats.events += events
        stats.ignored += ignored
        return out

    def calls(self, server_id: int | None = None) -> list[CallView]:
        servers = self._servers.values() if server_id is None else (
            [self._servers[server_id]] if server_id in self._servers else [])
        out = []
        for srv in servers:
            for call in srv.calls.values():
                if call.view is not None:
                    out.append(call.view)
        return out

    def stats(self, server_id: int) -> TrackerStats:
        return self._servers.setdefault(server_id, _Server(server_id)).stats

    def now(self, server_id: int) -> float:
        srv = self._servers.get(server_id)
        return srv.now if srv else 0.0

    def restore(self, views: Iterable[CallView]) -> list[CallChange]:
        """Load calls kept by the durable table before a restart; the next full resync keeps only
        those Asterisk still has, with their answer times."""
        changes: list[CallChange] = []
        by_server: dict[int, set[str]] = {}
        for view in views:
            srv = self._servers.setdefault(view.server_id, _Server(view.server_id))
            for leg in view.legs:
                if leg.uniqueid in srv.channels:
                    continue
                ch = _Channel(leg.uniqueid, view.linkedid, leg.channel, leg.state,
                              view.src if leg.uniqueid == view.uniqueid else "",
                              view.src_name if leg.uniqueid == view.uniqueid else "",
                              view.dst if leg.uniqueid == view.uniqueid else "",
                              leg.created, leg.is_local)
                srv.channels[leg.uniqueid] = ch
                call = srv.calls.get(view.linkedid)
                if call is None:
                    call = srv.calls[view.linkedid] = _Call(view.linkedid, dst=view.dst,
                                                            answer_time=view.answer_time,
                                                            start_time=view.start_time)
                call.channels[leg.uniqueid] = ch
                call.order = None
            by_server.setdefault(view.server_id, set()).add(view.linkedid)
            srv.now = max(srv.now, view.answer_time or 0.0, view.start_time)
        for server_id, keys in by_server.items():
            self._changes(self._servers[server_id], keys, changes)
        return changes

    # ------------------------------------------------------------------ channel bookkeeping
    def _upsert_keys(self, srv: _Server, msg: Mapping[str, str], touched: set[str], fields: _Fields = _PLAIN,
                     created_now: bool = False) -> _Channel | None:
        """Create or refresh the channel of one (prefixed) snapshot in ``msg``; with the default fields it is also
        the handler of the plain snapshot events (Newstate, NewCallerid …), called by ``apply`` without a wrapper."""
        try:
            uid, linkedid, name, state, num, cname, exten = fields.fetch(msg)
        except KeyError:  # None for what is missing: an older Asterisk, a Dial from an Originate
            uid, linkedid, name, state, num, cname, exten = map(msg.get, fields.keys)
        if not uid:
            if fields is _PLAIN:
                srv.stats.malformed += 1
            return None
        ch = srv.channels.get(uid)
        if ch is None:
            if uid in srv.tombstones and not created_now:
                return None  # a late event (or stale snapshot) for a channel already gone
            if not name:
                return None
            ch = _Channel(uid, linkedid or uid, name, _int(state), num or "", cname or "", exten or "",
                          srv.event_time, name.startswith("Local/"))
            ch.state_raw = state or ""
            srv.channels[uid] = ch
            self._attach(srv, ch, touched)
        else:
            # only a change to what a CallView shows marks the call touched: most events
            # (NewConnectedLine, HangupRequest, DialState …) change nothing visible. Every leg's name and
            # state are shown; caller number/name and exten only of the leg shown as the caller.
            changed = caller_changed = False
            if state and state != ch.state_raw:  # the same text parses to the same state: skip it
                n = _int(state, ch.state)
                ch.state_raw = state
                if n != ch.state:
                    ch.state = n
                    ch.leg = None
                    changed = True
            if num is not None and num != ch.caller_num:
                ch.caller_num = num
                caller_changed = True
            if cname is not None and cname != ch.caller_name:
                ch.caller_name = cname
                caller_changed = True
            if exten is not None and exten != ch.exten:
                ch.exten = exten
                caller_changed = True
            if name and name != ch.name:
                ch.name = name
                ch.leg = None
                changed = True
            linkedid = linkedid or ch.linkedid
            if linkedid != ch.linkedid:
                self._relink(srv, ch, linkedid, touched)
            elif changed:
                touched.add(linkedid)
            elif caller_changed and (uid == linkedid or self._shown_caller(srv, linkedid) is ch):
                touched.add(linkedid)
        ch.last_seq = srv.seq
        return ch

    @staticmethod
    def _shown_caller(srv: _Server, linkedid: str) -> _Channel | None:
        """The leg ``_view`` last showed as the caller when it is not the Linkedid channel (first seen
        mid-call, or the caller already left); a leg that is neither cannot change a view's caller fields."""
        call = srv.calls.get(linkedid)
        return None if call is None else call.caller

    def _attach(self, srv: _Server, ch: _Channel, touched: set[str]) -> None:
        call = srv.calls.get(ch.linkedid)
        if call is None:
            call = srv.calls[ch.linkedid] = _Call(ch.linkedid, start_time=ch.created)
        elif ch.created < call.start_time:
            call.start_time = ch.created
        call.channels[ch.uniqueid] = ch
        call.order = None
        touched.add(ch.linkedid)

    def _relink(self, srv: _Server, ch: _Channel, linkedid: str, touched: set[str]) -> None:
        old = srv.calls.get(ch.linkedid)
        if old is not None:
            old.channels.pop(ch.uniqueid, None)
            old.order = None
            touched.add(old.linkedid)
        log.debug("relink server=%s uniqueid=%s linkedid=%s->%s", srv.server_id, ch.uniqueid,
                  ch.linkedid, linkedid)
        ch.linkedid = linkedid
        self._attach(srv, ch, touched)

    def _remove(self, srv: _Server, ch: _Channel, touched: set[str]) -> None:
        if ch.bridge:
            self._join_bridge(srv, ch, "", touched)
        srv.channels.pop(ch.uniqueid, None)
        call = srv.calls.get(ch.linkedid)
        if call is not None:
            call.channels.pop(ch.uniqueid, None)
            call.order = None
            touched.add(ch.linkedid)

    def _tombstone(self, srv: _Server, uid: str) -> None:
        tombs = srv.tombstones
        # (stream time for expiry, the hangup's own time for ordering against a reordered Newchannel)
        tombs[uid] = (srv.now, srv.event_time)
        tombs.move_to_end(uid)
        horizon = srv.now - _TOMBSTONE_SECONDS
        while tombs and (len(tombs) > _TOMBSTONE_MAX or next(iter(tombs.values()))[0] < horizon):
            tombs.popitem(last=False)

    # ------------------------------------------------------------------ handlers
    def _on_newchannel(self, srv: _Server, msg: Mapping[str, str], touched: set[str]) -> None:
        uid = msg.get("Uniqueid", "")
        gone = srv.tombstones.get(uid)
        if gone is not None:
            if srv.event_time <= gone[1]:
                return  # older than this channel's own Hangup (a reordered stream): not a new channel
            del srv.tombstones[uid]  # a reused Uniqueid is a new channel
        self._upsert_keys(srv, msg, touched, created_now=True)

    _on_snapshot_event = _upsert_keys  # Newstate, NewCallerid, NewConnectedLine, HangupRequest …

    def _on_bridge_enter(self, srv: _Server, msg: Mapping[str, str], touched: set[str]) -> None:
        ch = self._upsert_keys(srv, msg, touched)
        if ch is None:
            return
        self._join_bridge(srv, ch, msg.get("BridgeUniqueid", ""), touched)
        if msg.get("BridgeType") == "basic":
            self._unify_linkedids(srv, ch.bridge, touched)

    def _on_bridge_leave(self, srv: _Server, msg: Mapping[str, str], touched: set[str]) -> None:
        ch = self._upsert_keys(srv, msg, touched)
        if ch is not None and ch.bridge == msg.get("BridgeUniqueid", ch.bridge):
            self._join_bridge(srv, ch, "", touched)

    def _join_bridge(self, srv: _Server, ch: _Channel, bridge: str, touched: set[str]) -> None:
        if ch.bridge:
            members = srv.bridges.get(ch.bridge)
            if members is not None:
                members.discard(ch.uniqueid)
                if not members:
                    del srv.bridges[ch.bridge]
        left = bool(ch.bridge)
        ch.bridge = bridge
        if bridge:
            members = srv.bridges.get(bridge)
            if members is None:
                srv.bridges[bridge] = {ch.uniqueid}
            else:
                members.add(ch.uniqueid)
        # a bridge shows only through the status: joining can only answer a ringing call, leaving can only
        # un-answer an answered one, and not when the one leaving is an Up B-leg (that alone answers the
        # call: see _view); anything else changes nothing visible
        call = srv.calls.get(ch.linkedid)
        view = None if call is None else call.view
        if view is None or (bridge and view.status is CallStatus.RINGING) or (
                left and view.status is CallStatus.ANSWERED and not (
                    ch.state == _UP and not ch.is_local and ch.uniqueid != ch.linkedid and call.caller is not ch)):
            touched.add(ch.linkedid)

    def _unify_linkedids(self, srv: _Server, bridge: str, touched: set[str]) -> None:
        """Asterisk gives every member of a basic bridge the oldest Linkedid among them
        (bridge_basic_push → ast_bridge_channel_update_linkedids). A pickup shows that change only in
        dialplan-class VarSet events, which a ``call,system`` login does not receive, so apply it here."""
        members = [srv.channels[u] for u in srv.bridges.get(bridge, ()) if u in srv.channels]
        if len(members) < 2:
            return
        first = members[0].linkedid
        for m in members:
            if m.linkedid != first:
                break
        else:
            return  # one call already (the usual case): nothing to compare
        oldest = min((m.linkedid for m in members), key=_linkedid_age)
        for m in members:
            if m.linkedid != oldest:
                self._relink(srv, m, oldest, touched)

    def _on_dial(self, srv: _Server, msg: Mapping[str, str], touched: set[str]) -> None:
        if "Uniqueid" in msg:  # absent when the dial comes from an Originate
            self._upsert_keys(srv, msg, touched)
        self._upsert_keys(srv, msg, touched, _DEST)

    def _on_local_bridge(self, srv: _Server, msg: Mapping[str, str], touched: set[str]) -> None:
        self._upsert_keys(srv, msg, touched, _LOCAL_ONE)
        self._upsert_keys(srv, msg, touched, _LOCAL_TWO)

    def _on_hangup(self, srv: _Server, msg: Mapping[str, str], touched: set[str]) -> None:
        uid = msg.get("Uniqueid")
        if not uid:
            srv.stats.malformed += 1
            return
        ch = srv.channels.get(uid)
        if ch is not None:
            self._remove(srv, ch, touched)
        self._tombstone(srv, uid)

    def _on_rename(self, srv: _Server, msg: Mapping[str, str], touched: set[str]) -> None:
        ch = srv.channels.get(msg.get("Uniqueid", ""))
        new = msg.get("Newname")
        if ch is not None and new:
            ch.name = new
            ch.is_local = new.startswith("Local/")
            ch.leg = None
            touched.add(ch.linkedid)

    def _on_fully_booted(self, srv: _Server, msg: Mapping[str, str], touched: set[str]) -> None:
        uptime = msg.get("Uptime")
        if uptime:
            up = float(_int(uptime, -1))
            if srv.uptime is not None and 0 <= up < srv.uptime:
                # a restart without Shutdown (crash): every channel of the old process is gone
                log.warning("asterisk restarted server=%s uptime=%s calls_dropped=%d", srv.server_id, uptime,
                            len(srv.calls))
                for ch in list(srv.channels.values()):
                    self._remove(srv, ch, touched)
                srv.tombstones.clear()  # Uniqueid counters restart: old tombstones mean nothing now
            srv.uptime = up

    def _on_shutdown(self, srv: _Server, msg: Mapping[str, str], touched: set[str]) -> None:
        log.info("asterisk shutdown server=%s calls_dropped=%d", srv.server_id, len(srv.calls))
        for ch in list(srv.channels.values()):
            self._remove(srv, ch, touched)
        srv.tombstones.clear()
        srv.snapshot = None
        srv.full_resync_due = True
        srv.uptime = None

    # ------------------------------------------------------------------ resync
    def _on_non_event(self, srv: _Server, msg: Mapping[str, str]) -> None:
        if BANNER_KEY in msg:
            srv.full_resync_due = True
            srv.snapshot = None
            return
        if msg.get("EventList") == "start" and "hannels will follow" in msg.get("Message", ""):
            self._begin_snapshot(srv, msg.get("ActionID", ""))

    def _begin_snapshot(self, srv: _Server, action_id: str) -> _Snapshot:
        srv.gen += 1
        snap = _Snapshot(action_id, srv.gen, srv.seq, srv.full_resync_due)
        srv.full_resync_due = False
        srv.snapshot = snap
        return snap

    def _on_snapshot_item(self, srv: _Server, msg: Mapping[str, str], touched: set[str]) -> None:
        snap = srv.snapshot
        action_id = msg.get("ActionID", "")
        if snap is None or snap.action_id != action_id:
            snap = self._begin_snapshot(srv, action_id)
        uid = msg.get("Uniqueid", "")
        known = uid in srv.channels  # unknown: it began before we listened, or its events were lost
        ch = self._upsert_keys(srv, msg, touched)
        if ch is None:
            return
        if not known:
            srv.stats.resync_added += 1
            ch.created = srv.event_time - parse_hms(msg.get("Duration", ""))
            ch.leg = None
            call = srv.calls.get(ch.linkedid)
            if call is not None:
                call.order = None
                if ch.created < call.start_time:
                    call.start_time = ch.created
        bridge = msg.get("BridgeId", ch.bridge) or ""
        if bridge != ch.bridge:
            self._join_bridge(srv, ch, bridge, touched)
        ch.seen_gen = snap.gen
        ch.misses = 0

    def _on_snapshot_done(self, srv: _Server, msg: Mapping[str, str], touched: set[str]) -> None:
        snap = srv.snapshot
        if snap is None or snap.action_id != msg.get("ActionID", ""):
            return
        srv.snapshot = None
        srv.stats.snapshots += 1
        for ch in list(srv.channels.values()):
            if ch.seen_gen == snap.gen or ch.last_seq > snap.begin_seq:
                continue
            ch.misses += 1
            if snap.full or ch.misses >= 2:
                srv.stats.resync_removed += 1
                log.info("resync removed server=%s uniqueid=%s channel=%s linkedid=%s full=%s",
                         srv.server_id, ch.uniqueid, ch.name, ch.linkedid, snap.full)
                self._remove(srv, ch, touched)
                self._tombstone(srv, ch.uniqueid)

    # ------------------------------------------------------------------ views
    def _changes(self, srv: _Server, touched: Iterable[str], out: list[CallChange]) -> None:
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
            view = self._view(srv, call)
            if view is old:  # nothing visible changed
                continue
            call.view = view
            out.append(CallChange("added" if old is None else "updated", (srv.server_id, linkedid), view))

    def _view(self, srv: _Server, call: _Call) -> CallView:
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
        else:  # first seen mid-call (resync) without its A-leg
            a_leg = call.caller = next((c for c in order if not c.is_local), order[0])
        answered = False
        bridges: list[str] = []
        best_b: _Channel | None = None
        for ch in order:
            bridge = ch.bridge
            if bridge:
                if bridge in bridges:
                    answered = True  # two of the call's channels share a bridge
                else:
                    bridges.append(bridge)
            if ch is a_leg or ch.is_local:
                continue
            up = ch.state == _UP
            if up:
                answered = True
            if best_b is None:
                best_b = ch
            else:  # the newest Up leg, else the newest: (up, created) >= (…) without building two tuples
                best_up = best_b.state == _UP
                if up > best_up or (up == best_up and ch.created >= best_b.created):
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
        status = CallStatus.ANSWERED if answered else CallStatus.RINGING
        src = a_leg.caller_num if a_leg.caller_num != "<unknown>" else ""
        src_name = a_leg.caller_name if a_leg.caller_name != "<unknown>" else ""
        old = call.view
        # ``CallView.__eq__`` without building a view first; the legs (what changes most) compared first
        if (old is not None and old.legs == legs and old.status is status and old.dst_channel == dst_channel
                and old.answer_time == call.answer_time and old.uniqueid == a_leg.uniqueid
                and old.channel == a_leg.name and old.src == src and old.src_name == src_name
                and old.dst == call.dst and old.start_time == call.start_time):
            return old
        # positional (a third cheaper than keywords; the field order is checked at import, see _VIEW_FIELDS)
        return CallView(srv.server_id, call.linkedid, a_leg.uniqueid, a_leg.name, dst_channel, status, src,
                        src_name, call.dst, call.start_time, call.answer_time, legs)
