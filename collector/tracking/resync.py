"""Resync: how the tracker takes a ``CoreShowChannels`` answer (a mixin of ``CallTracker``, kept apart
because it is the one part of the tracker that reasons about lists rather than single events).

A list is collected item by item and applied in one step at ``CoreShowChannelsComplete``, so the table
never shows a partial list. The first list after a session (re)start sweeps at once what it lacks; later
(periodic) ones remove a channel only after two consecutive misses. A channel touched by an event after
the list began keeps the event's facts, and a hung-up Uniqueid is never brought back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from collector.ami.framing import BANNER_KEY, parse_hms
from collector.tracking.state import Call, Channel, Server, Snapshot

__all__ = ["SnapshotHandlers"]

log = logging.getLogger("collector.tracking.tracker")


class SnapshotHandlers:
    """The resync handlers; the channel bookkeeping they use is ``CallTracker``'s."""

    # implemented by CallTracker
    def _upsert_keys(self, srv: Server, msg: Mapping[str, str], touched: set[str]) -> Channel | None:
        raise NotImplementedError

    def _join_bridge(self, srv: Server, ch: Channel, bridge: str, touched: set[str]) -> None:
        raise NotImplementedError

    def _remove(self, srv: Server, ch: Channel, touched: set[str]) -> None:
        raise NotImplementedError

    def _tombstone(self, srv: Server, uid: str) -> None:
        raise NotImplementedError

    @staticmethod
    def _unpark(call: Call, parked: tuple[str, float | None, float, str]) -> None:
        raise NotImplementedError

    def _on_non_event(self, srv: Server, msg: Mapping[str, str]) -> None:
        if BANNER_KEY in msg:
            srv.full_resync_due = True
            srv.snapshot = None
            return
        if msg.get("EventList") == "start" and "hannels will follow" in msg.get("Message", ""):
            self._begin_snapshot(srv, msg.get("ActionID", ""))

    def _begin_snapshot(self, srv: Server, action_id: str) -> Snapshot:
        srv.gen += 1
        snap = Snapshot(action_id, srv.gen, srv.seq, srv.full_resync_due)
        srv.full_resync_due = False
        srv.snapshot = snap
        return snap

    def _on_snapshot_item(self, srv: Server, msg: Mapping[str, str], touched: set[str]) -> None:
        """Collect one item of a list: the whole list is applied at CoreShowChannelsComplete, in one step, so the
        table never shows a partial list (a call with half its legs, a caller chosen from the first item)."""
        snap = srv.snapshot
        action_id = msg.get("ActionID", "")
        if snap is None or snap.action_id != action_id:
            if snap is not None:
                self._apply_items(srv, snap, touched)  # a list never completed: what it said still counts
            snap = self._begin_snapshot(srv, action_id)
        snap.items.append((msg, srv.seq, srv.event_time))

    def _apply_items(self, srv: Server, snap: Snapshot, touched: set[str]) -> None:
        """Apply the collected items as if each had been applied when it arrived: an event that came after an
        item outranks it (the channel's ``last_seq`` is newer), an earlier one is refreshed by it."""
        items, snap.items = snap.items, []
        complete_time = srv.event_time
        for msg, seq, t in items:
            uid = msg.get("Uniqueid", "")
            ch = srv.channels.get(uid)
            if ch is not None and ch.last_seq > seq:
                ch.seen_gen = snap.gen  # listed, and touched by a newer event since: the event's facts stand
                ch.misses = 0
                continue
            srv.event_time = t
            self._apply_item(srv, snap, msg, touched)
        srv.event_time = complete_time

    def _apply_item(self, srv: Server, snap: Snapshot, msg: Mapping[str, str], touched: set[str]) -> None:
        uid = msg.get("Uniqueid", "")
        known = uid in srv.channels  # unknown: it began before we listened, or its events were lost
        ch = self._upsert_keys(srv, msg, touched)
        if ch is None:
            return
        ch.in_appdial = msg.get("Application") == "AppDial"
        if not known:
            srv.stats.resync_added += 1
            ch.created = srv.event_time - parse_hms(msg.get("Duration", ""))
            ch.leg = None
            call = srv.calls.get(ch.linkedid)
            if call is not None:
                call.order = None
                if ch.created < call.start_time:
                    call.start_time = ch.created
                parked = srv.parked.get(ch.linkedid) if srv.parked else None
                if parked is not None:  # kept until the list completes: every leg of the call sees it
                    self._unpark(call, parked)
        bridge = msg.get("BridgeId", ch.bridge) or ""
        if bridge != ch.bridge:
            self._join_bridge(srv, ch, bridge, touched)
        ch.seen_gen = snap.gen
        ch.misses = 0

    def _on_snapshot_done(self, srv: Server, msg: Mapping[str, str], touched: set[str]) -> None:
        snap = srv.snapshot
        if snap is None or snap.action_id != msg.get("ActionID", ""):
            return
        srv.snapshot = None
        srv.stats.snapshots += 1
        self._apply_items(srv, snap, touched)
        if snap.full and srv.parked:
            srv.parked.clear()  # calls dropped while unreachable and not listed again are gone
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
