"""The call tracker: a pure state machine from AMI messages to call-table changes.

Rules of this module: no I/O and no clock reads (time is the ``Timestamp`` header of the events, or the
``_RxTime`` the session stamps on replies that carry none); ``apply`` never raises on what Asterisk (or
garbage) sends; every handler is idempotent and tolerant of order, because facts about one call come from
several Asterisk threads and resyncs overlap with live events.

Model (Asterisk 12+): channels keyed by (server, Uniqueid); a call is the set of channels sharing a
Linkedid. A channel whose Linkedid changes (pickup, transfer, bridge merge) moves to the other call.
What a call shows (status, B-leg, caller) is derived from its legs every time, in ``views``; the state
objects are in ``state``; this module holds the event handlers and the resync logic.
Resync: a ``CoreShowChannels`` list is a snapshot. The first one after a session (re)start sweeps at
once what the snapshot lacks; later (periodic) ones remove a channel only after two consecutive misses.
A channel touched by an event after the list began is never swept by it, and a hung-up Uniqueid
(tombstone) is never brought back by a snapshot or a late event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from collector.ami.framing import RX_TIME_KEY
from collector.tracking.calls import AST_STATE_UP, CallChange, CallStatus, CallView
from collector.tracking.resync import SnapshotHandlers
from collector.tracking.state import (
    Call,
    Channel,
    Fields,
    Server,
    TrackerStats,
)
from collector.tracking.views import append_changes

__all__ = ["RX_TIME_KEY", "TRACKED_EVENTS", "TRACKER_KEYS", "CallTracker", "TrackerStats"]

log = logging.getLogger(__name__)

_TOMBSTONE_SECONDS = 300.0
_TOMBSTONE_MAX = 200_000


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


_PLAIN = Fields("")
_DEST = Fields("Dest")
_LOCAL_ONE = Fields("LocalOne")
_LOCAL_TWO = Fields("LocalTwo")


#: Every header the tracker reads (the framer's projection, ``AmiFramer(keep_keys=…)``): add here any key
#: a handler starts to read, or the C decoder will not decode it.
TRACKER_KEYS = frozenset((*_PLAIN.keys, *_DEST.keys, *_LOCAL_ONE.keys, *_LOCAL_TWO.keys, "Event", "Timestamp",
                          RX_TIME_KEY, "ActionID", "EventList", "Message", "Duration", "BridgeId", "BridgeType",
                          "BridgeUniqueid", "Newname", "Uptime", "Application"))


#: event → CallTracker method: the one table of what the tracker handles (``TRACKED_EVENTS`` is derived from
#: it, so the session's include list cannot drift from it). No ``NewAccountCode``: its snapshot only repeats
#: what Newchannel/Newstate carry (every bundled trace gives the same changes without it), and the session
#: drops it before decoding.
_HANDLERS: dict[str, str] = {
    "Newchannel": "_on_newchannel",
    "Newstate": "_on_snapshot_event",
    "NewCallerid": "_on_snapshot_event",
    "NewConnectedLine": "_on_snapshot_event",
    "HangupRequest": "_on_snapshot_event",
    "SoftHangupRequest": "_on_snapshot_event",
    "BridgeEnter": "_on_bridge_enter",
    "BridgeLeave": "_on_bridge_leave",
    "DialBegin": "_on_dial",
    "DialState": "_on_dial",
    "DialEnd": "_on_dial",
    "LocalBridge": "_on_local_bridge",
    "Hangup": "_on_hangup",
    "Rename": "_on_rename",
    "Hold": "_on_hold",
    "Unhold": "_on_hold",
    "CoreShowChannel": "_on_snapshot_item",
    "CoreShowChannelsComplete": "_on_snapshot_done",
    "FullyBooted": "_on_fully_booted",
    "Shutdown": "_on_shutdown",
}
#: Every event the tracker handles, resync list items included; the composition root hands it to the session.
TRACKED_EVENTS: tuple[str, ...] = tuple(_HANDLERS)


class CallTracker(SnapshotHandlers):
    """Feed ``apply(server_id, message)``; read ``calls()``. One instance serves every server."""

    def __init__(self, max_channels: int = 50_000) -> None:
        self._servers: dict[int, Server] = {}
        self.set_max_channels(max_channels)
        self._touched: set[str] = set()
        # bound once: ``apply_many`` looks the handler up per message
        self._handlers: dict[str, Callable[[Server, Mapping[str, str], set[str]], None]] = {
            event: getattr(self, method) for event, method in _HANDLERS.items()}

    # ------------------------------------------------------------------ public API
    def set_max_channels(self, n: int) -> None:
        """Channels tracked per server at most; past it a server's new channels are refused (its
        ``stats().limited``) until it is back under 90 % of the bound. Other servers are never affected."""
        self.max_channels = n
        self._low_water = max(0, n * 9 // 10)

    def apply(self, server_id: int, msg: Mapping[str, str]) -> list[CallChange]:
        """Apply one AMI message; return the call changes it caused (often none)."""
        return self.apply_many(server_id, (msg,))

    def apply_many(self, server_id: int, msgs: Iterable[Mapping[str, str]]) -> list[CallChange]:
        """Apply messages in order; return the call changes they caused, each as ``apply`` would have.
        One call per TCP chunk: the per-message loop is the collector's hottest code."""
        srv = self._servers.get(server_id)
        if srv is None:
            srv = self._servers[server_id] = Server(server_id)
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
                    append_changes(srv, touched, out)
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
        return self._servers.setdefault(server_id, Server(server_id)).stats

    def now(self, server_id: int) -> float:
        srv = self._servers.get(server_id)
        return srv.now if srv else 0.0

    def restore(self, views: Iterable[CallView]) -> list[CallChange]:
        """Load calls kept by the durable table before a restart; the next full resync keeps only
        those Asterisk still has, with their answer times."""
        changes: list[CallChange] = []
        by_server: dict[int, set[str]] = {}
        for view in views:
            srv = self._servers.setdefault(view.server_id, Server(view.server_id))
            for leg in view.legs:
                if leg.uniqueid in srv.channels:
                    continue
                ch = Channel(leg.uniqueid, view.linkedid, leg.channel, leg.state,
                              view.src if leg.uniqueid == view.uniqueid else "",
                              view.src_name if leg.uniqueid == view.uniqueid else "",
                              view.dst if leg.uniqueid == view.uniqueid else "",
                              leg.created, leg.is_local)
                srv.channels[leg.uniqueid] = ch
                call = srv.calls.get(view.linkedid)
                if call is None:
                    call = srv.calls[view.linkedid] = Call(view.linkedid, dst=view.dst,
                                                            answer_time=view.answer_time,
                                                            start_time=view.start_time)
                call.channels[leg.uniqueid] = ch
                call.order = None
            by_server.setdefault(view.server_id, set()).add(view.linkedid)
            srv.now = max(srv.now, view.answer_time or 0.0, view.start_time)
        for server_id, keys in by_server.items():
            append_changes(self._servers[server_id], keys, changes)
        return changes

    def drop_server(self, server_id: int, park: bool = True) -> list[CallChange]:
        """Remove every call of a server, returning the removals. ``park`` (a server unreachable for too long):
        its calls' answer times are kept, and given back to the same calls (same Linkedid) when the next full
        resync lists them again. Without it (a server disabled or gone from the configuration) the server is
        forgotten. The caller decides when (the daemon's clock): the tracker reads none."""
        srv = self._servers.get(server_id)
        if srv is None:
            return []
        touched: set[str] = set()
        if park:
            for call in srv.calls.values():
                if call.view is not None:
                    srv.parked[call.linkedid] = (call.view.uniqueid, call.answer_time, call.start_time, call.dst)
        for ch in list(srv.channels.values()):
            self._remove(srv, ch, touched)
        srv.snapshot = None
        srv.full_resync_due = True
        out: list[CallChange] = []
        append_changes(srv, touched, out)
        if not park:
            del self._servers[server_id]
        return out

    @staticmethod
    def _unpark(call: Call, parked: tuple[str, float | None, float, str]) -> None:
        _uid, answer_time, start_time, dst = parked
        if call.answer_time is None:
            call.answer_time = answer_time
        call.start_time = start_time  # known from its events; a resync only estimates it from Duration
        if dst:
            call.dst = dst

    # ------------------------------------------------------------------ channel bookkeeping
    def _upsert_keys(self, srv: Server, msg: Mapping[str, str], touched: set[str], fields: Fields = _PLAIN,
                     created_now: bool = False) -> Channel | None:
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
            if len(srv.channels) >= self.max_channels:  # the per-server bound
                self._refuse(srv, uid)
                return None
            ch = Channel(uid, linkedid or uid, name, _int(state), num or "", cname or "", exten or "",
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
    def _shown_caller(srv: Server, linkedid: str) -> Channel | None:
        """The leg ``views.call_view`` last showed as the caller when it is not the Linkedid channel (first seen
        mid-call, or the caller already left); a leg that is neither cannot change a view's caller fields."""
        call = srv.calls.get(linkedid)
        return None if call is None else call.caller

    def _attach(self, srv: Server, ch: Channel, touched: set[str]) -> None:
        call = srv.calls.get(ch.linkedid)
        if call is None:
            call = srv.calls[ch.linkedid] = Call(ch.linkedid, start_time=ch.created)
        elif ch.created < call.start_time:
            call.start_time = ch.created
        call.channels[ch.uniqueid] = ch
        call.order = None
        touched.add(ch.linkedid)

    def _relink(self, srv: Server, ch: Channel, linkedid: str, touched: set[str]) -> None:
        old = srv.calls.get(ch.linkedid)
        if old is not None:
            old.channels.pop(ch.uniqueid, None)
            old.order = None
            touched.add(old.linkedid)
        log.debug("relink server=%s uniqueid=%s linkedid=%s->%s", srv.server_id, ch.uniqueid,
                  ch.linkedid, linkedid)
        ch.linkedid = linkedid
        self._attach(srv, ch, touched)

    def _remove(self, srv: Server, ch: Channel, touched: set[str]) -> None:
        if ch.bridge:
            self._join_bridge(srv, ch, "", touched)
        srv.channels.pop(ch.uniqueid, None)
        if srv.stats.limited and len(srv.channels) < self._low_water:  # back within bounds
            srv.stats.limited = False
            log.info("tracker server=%s below %d channels again: new channels accepted (refused so far %d)",
                     srv.server_id, self._low_water, srv.stats.refused)
        call = srv.calls.get(ch.linkedid)
        if call is not None:
            call.channels.pop(ch.uniqueid, None)
            call.order = None
            touched.add(ch.linkedid)

    def _refuse(self, srv: Server, uid: str) -> None:
        """A new channel past ``max_channels`` (logged once per episode)."""
        stats = srv.stats
        stats.refused += 1
        if not stats.limited:
            stats.limited = True
            log.warning("tracker server=%s at max_channels=%d: new channels refused until below %d "
                        "(first refused uniqueid=%s)", srv.server_id, self.max_channels, self._low_water, uid)

    def _tombstone(self, srv: Server, uid: str) -> None:
        tombs = srv.tombstones
        # (stream time for expiry, the hangup's own time for ordering against a reordered Newchannel)
        tombs[uid] = (srv.now, srv.event_time)
        tombs.move_to_end(uid)
        horizon = srv.now - _TOMBSTONE_SECONDS
        while tombs and (len(tombs) > _TOMBSTONE_MAX or next(iter(tombs.values()))[0] < horizon):
            tombs.popitem(last=False)

    # ------------------------------------------------------------------ handlers
    def _on_newchannel(self, srv: Server, msg: Mapping[str, str], touched: set[str]) -> None:
        uid = msg.get("Uniqueid", "")
        gone = srv.tombstones.get(uid)
        if gone is not None:
            if srv.event_time <= gone[1]:
                return  # older than this channel's own Hangup (a reordered stream): not a new channel
            del srv.tombstones[uid]  # a reused Uniqueid is a new channel
        self._upsert_keys(srv, msg, touched, created_now=True)

    _on_snapshot_event = _upsert_keys  # Newstate, NewCallerid, NewConnectedLine, HangupRequest …

    def _on_bridge_enter(self, srv: Server, msg: Mapping[str, str], touched: set[str]) -> None:
        ch = self._upsert_keys(srv, msg, touched)
        if ch is None:
            return
        self._join_bridge(srv, ch, msg.get("BridgeUniqueid", ""), touched)
        if msg.get("BridgeType") == "basic":
            self._unify_linkedids(srv, ch.bridge, touched)

    def _on_bridge_leave(self, srv: Server, msg: Mapping[str, str], touched: set[str]) -> None:
        ch = self._upsert_keys(srv, msg, touched)
        if ch is not None and ch.bridge == msg.get("BridgeUniqueid", ch.bridge):
            self._join_bridge(srv, ch, "", touched)

    def _join_bridge(self, srv: Server, ch: Channel, bridge: str, touched: set[str]) -> None:
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
        # call: see views.call_view); anything else changes nothing visible
        call = srv.calls.get(ch.linkedid)
        view = None if call is None else call.view
        if call is None or view is None or (bridge and view.status is CallStatus.RINGING) or (
                left and view.status is CallStatus.ANSWERED and not (
                    ch.state == AST_STATE_UP and not ch.is_local and ch.uniqueid != ch.linkedid
                    and call.caller is not ch)):
            touched.add(ch.linkedid)

    def _unify_linkedids(self, srv: Server, bridge: str, touched: set[str]) -> None:
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

    def _on_dial(self, srv: Server, msg: Mapping[str, str], touched: set[str]) -> None:
        if "Uniqueid" in msg:  # absent when the dial comes from an Originate
            self._upsert_keys(srv, msg, touched)
        self._upsert_keys(srv, msg, touched, _DEST)

    def _on_local_bridge(self, srv: Server, msg: Mapping[str, str], touched: set[str]) -> None:
        self._upsert_keys(srv, msg, touched, _LOCAL_ONE)
        self._upsert_keys(srv, msg, touched, _LOCAL_TWO)

    def _on_hangup(self, srv: Server, msg: Mapping[str, str], touched: set[str]) -> None:
        uid = msg.get("Uniqueid")
        if not uid:
            srv.stats.malformed += 1
            return
        ch = srv.channels.get(uid)
        if ch is not None:
            self._remove(srv, ch, touched)
        self._tombstone(srv, uid)

    def _on_rename(self, srv: Server, msg: Mapping[str, str], touched: set[str]) -> None:
        ch = srv.channels.get(msg.get("Uniqueid", ""))
        new = msg.get("Newname")
        if ch is not None and new:
            ch.name = new
            ch.is_local = new.startswith("Local/")
            ch.leg = None
            touched.add(ch.linkedid)

    def _on_hold(self, srv: Server, msg: Mapping[str, str], touched: set[str]) -> None:
        ch = self._upsert_keys(srv, msg, touched)
        held = msg.get("Event") == "Hold"
        if ch is not None and ch.held != held:
            ch.held = held
            touched.add(ch.linkedid)  # shown only as the phase of an answered call

    def _on_fully_booted(self, srv: Server, msg: Mapping[str, str], touched: set[str]) -> None:
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

    def _on_shutdown(self, srv: Server, msg: Mapping[str, str], touched: set[str]) -> None:
        log.info("asterisk shutdown server=%s calls_dropped=%d", srv.server_id, len(srv.calls))
        for ch in list(srv.channels.values()):
            self._remove(srv, ch, touched)
        srv.tombstones.clear()
        srv.snapshot = None
        srv.full_resync_due = True
        srv.uptime = None
