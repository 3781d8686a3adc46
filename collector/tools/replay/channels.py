"""Channel state, so ``CoreShowChannels`` answers what Asterisk would at that point of the trace.

A channel is up from its ``Newchannel`` to its ``Hangup``; snapshots in later events update its fields. A recorded
list right after a session's login replaces the state (channels ended in the gap disappear); one later in a session
only adds the channels the events never announced. Checked against the ``*.truth.jsonl`` snapshots of every bundled
trace: identical except within a few ms of a snapshot and inside recorder gaps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from collector.ami.framing import parse_hms

__all__ = ["SNAPSHOT_FIELDS", "ChannelRecord", "ChannelTable"]

#: The channel snapshot fields of Asterisk 12+ in the order CoreShowChannel prints them.
SNAPSHOT_FIELDS: tuple[str, ...] = (
    "Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName", "ConnectedLineNum",
    "ConnectedLineName", "Language", "AccountCode", "Context", "Exten", "Priority", "Uniqueid", "Linkedid",
)


@dataclass(slots=True)
class ChannelRecord:
    """What CoreShowChannel reports about one channel."""

    uniqueid: str
    snapshot: dict[str, str]  # the snapshot fields as of the last settle; read them through ``fields``
    created: float
    application: str = ""
    application_data: str = ""
    bridge_id: str = ""
    # snapshots seen since (message, ((field, header) …)): folded in only when someone reads ``fields``, which
    # most channels never need (they hang up first); that keeps fast mode fast
    pending: list[tuple[dict[str, str], tuple[tuple[str, str], ...]]] = field(default_factory=list)

    @property
    def fields(self) -> dict[str, str]:
        if self.pending:
            snap = self.snapshot
            for msg, names in self.pending:
                for name, key in names:
                    value = msg.get(key)
                    if value is not None:
                        snap[name] = value
            self.pending.clear()
        return self.snapshot

    @fields.setter
    def fields(self, value: dict[str, str]) -> None:
        self.snapshot = value
        self.pending.clear()

    def duration(self, now: float) -> str:
        secs = max(0, int(now - self.created))
        return f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"


def _snapshot_keys(msg: dict[str, str]) -> list[tuple[str, tuple[tuple[str, str], ...], bool]]:
    """The channel snapshots a message carries, by its header names alone: for each prefix P ("", "Dest",
    "LocalOne" …) with PUniqueid, PChannelState and PChannel, (PUniqueid, ((field, P+field) …), whether
    every field is there)."""
    out = []
    for key in msg:
        if not key.endswith("Uniqueid"):
            continue
        prefix = key[:-8]
        if prefix + "ChannelState" not in msg or prefix + "Channel" not in msg:
            continue  # BridgeUniqueid, DestUniqueId of a non-snapshot… not a channel snapshot
        names = tuple((name, prefix + name) for name in SNAPSHOT_FIELDS)
        out.append((key, names, all(k in msg for _, k in names)))
    return out


@dataclass(slots=True)
class ChannelTable:
    """The channels up at the current point of the replay, followed from the events already sent.

    Up = ``Newchannel`` seen and no ``Hangup`` yet (plus channels named by a recorded CoreShowChannel list whose
    ``Newchannel`` the recorder missed). Any event carrying a (possibly prefixed: ``Dest``, ``LocalOne``…)
    channel snapshot refreshes that channel's fields; events never resurrect a hung-up channel.
    """

    channels: dict[str, ChannelRecord] = field(default_factory=dict)
    #: memo for _refresh_snapshots: a message's header names → its channel snapshots (see _snapshot_keys)
    snapshot_keys: dict[tuple[str, ...], list[tuple[str, tuple[tuple[str, str], ...], bool]]] = field(
        default_factory=dict)

    def clear(self) -> None:
        self.channels.clear()

    def apply(self, msg: dict[str, str], ts: float) -> None:
        event = msg.get("Event", "")
        if event == "Hangup":
            self.channels.pop(msg.get("Uniqueid", ""), None)
            return
        if event == "Newchannel":
            uid = msg.get("Uniqueid", "")
            if uid:
                rec = self.channels.get(uid)
                if rec is None:
                    self.channels[uid] = ChannelRecord(uid, {k: msg.get(k, "") for k in SNAPSHOT_FIELDS}, ts)
                else:
                    rec.created = ts
            return
        if not self.channels:
            return
        self._refresh_snapshots(msg)
        if event == "Newexten":
            rec = self.channels.get(msg.get("Uniqueid", ""))
            if rec is not None:
                rec.application = msg.get("Application", "")
                rec.application_data = msg.get("AppData", "")
        elif event == "DialBegin":
            dest = self.channels.get(msg.get("DestUniqueid", ""))
            if dest is not None:
                caller = self.channels.get(msg.get("Uniqueid", "")) if "Channel" in msg else None
                if "Channel" not in msg:
                    dest.application = "AppDial2"  # Originate: dialled by the core, no caller channel
                elif caller is not None and caller.application == "Queue":
                    dest.application = "AppQueue"
                else:
                    dest.application = "AppDial"
                dest.application_data = "(Outgoing Line)"
        elif event == "BridgeEnter":
            rec = self.channels.get(msg.get("Uniqueid", ""))
            if rec is not None:
                rec.bridge_id = msg.get("BridgeUniqueid", "")
        elif event == "BridgeLeave":
            rec = self.channels.get(msg.get("Uniqueid", ""))
            if rec is not None and rec.bridge_id == msg.get("BridgeUniqueid", ""):
                rec.bridge_id = ""
        elif event == "BridgeMerge":
            src, dst = msg.get("FromBridgeUniqueid", ""), msg.get("ToBridgeUniqueid", "")
            if src and dst:
                for rec in self.channels.values():
                    if rec.bridge_id == src:
                        rec.bridge_id = dst
        elif event == "Rename":
            rec = self.channels.get(msg.get("Uniqueid", ""))
            if rec is not None and msg.get("Newname"):
                rec.fields["Channel"] = msg["Newname"]

    def _refresh_snapshots(self, msg: dict[str, str]) -> None:
        keys = tuple(msg)
        snapshots = self.snapshot_keys.get(keys)
        if snapshots is None:
            snapshots = _snapshot_keys(msg)
            if len(self.snapshot_keys) < 4096:  # a few hundred header layouts in practice
                self.snapshot_keys[keys] = snapshots
        for uid_key, names, complete in snapshots:
            rec = self.channels.get(msg[uid_key])
            if rec is not None:
                pending = rec.pending
                if complete:  # every field present (Asterisk's snapshots are): the earlier ones are moot
                    pending.clear()
                pending.append((msg, names))
                if len(pending) > 16:  # bounded: settle now and then
                    rec.fields  # noqa: B018 (the property settles)

    def seed(self, items: Sequence[dict[str, str]], now: float, authoritative: bool) -> tuple[int, int]:
        """Apply a recorded CoreShowChannel list taken at trace time ``now``.

        ``authoritative`` (a resync right after a login, nothing followed since): the list *is* the state —
        missing channels ended while the recorder was away. Otherwise only channels absent from the state are
        added (their ``Newchannel`` fell in a recorder gap); tracked channels keep what the events said.
        Returns (added, removed)."""
        listed: dict[str, dict[str, str]] = {}
        for it in items:
            uid = it.get("Uniqueid") or it.get("UniqueID") or ""
            if uid:
                listed[uid] = it
        removed = 0
        if authoritative:
            for uid in [u for u in self.channels if u not in listed]:
                del self.channels[uid]
                removed += 1
        added = 0
        for uid, it in listed.items():
            rec = self.channels.get(uid)
            if rec is not None and not authoritative:
                continue
            fields = {k: it.get(k, "") for k in SNAPSHOT_FIELDS}
            if rec is None:
                rec = ChannelRecord(uid, fields, now - parse_hms(it.get("Duration", ""), fractional=False))
                self.channels[uid] = rec
                added += 1
            else:
                rec.fields = fields
            rec.application = it.get("Application", "")
            rec.application_data = it.get("ApplicationData", "")
            rec.bridge_id = it.get("BridgeId", "")
        return added, removed

    def hangup_targets(self, channel: str) -> list[ChannelRecord]:
        """What ``Action: Hangup`` on ``channel`` ends, as Asterisk would: the channel, the peers in its
        bridge, and (not bridged yet) the legs it is dialling. Empty: no such channel."""
        rec = next((r for r in self.channels.values() if r.fields.get("Channel") == channel), None)
        if rec is None:
            return []
        out = [rec]
        linkedid = rec.fields.get("Linkedid", "")
        for other in self.channels.values():
            if other is rec:
                continue
            if rec.bridge_id and other.bridge_id == rec.bridge_id:
                out.append(other)
            elif not rec.bridge_id and not other.bridge_id and other.application == "AppDial" \
                    and linkedid and other.fields.get("Linkedid") == linkedid:
                out.append(other)
        return out

    def core_show_channels(self, action_id: str | None, now: float) -> bytes:
        """The whole reply to ``Action: CoreShowChannels`` as Asterisk 20 writes it (one contiguous write)."""
        aid = f"ActionID: {action_id}\r\n" if action_id is not None else ""
        parts = [f"Response: Success\r\n{aid}EventList: start\r\nMessage: Channels will follow\r\n\r\n"]
        for rec in self.channels.values():
            lines = [f"Event: CoreShowChannel\r\n{aid}"]
            lines.extend(f"{name}: {rec.fields.get(name, '')}\r\n" for name in SNAPSHOT_FIELDS)
            lines.append(f"Application: {rec.application}\r\nApplicationData: {rec.application_data}\r\n"
                         f"Duration: {rec.duration(now)}\r\nBridgeId: {rec.bridge_id}\r\n\r\n")
            parts.append("".join(lines))
        parts.append(f"Event: CoreShowChannelsComplete\r\n{aid}EventList: Complete\r\n"
                     f"ListItems: {len(self.channels)}\r\n\r\n")
        return "".join(parts).encode()

    def hangup_blocks(self, ts: float, records: Sequence[ChannelRecord] | None = None) -> list[bytes]:
        """Synthetic ``Hangup`` events (cause 16) for ``records``, by default every channel still up (end of
        a loop pass)."""
        out = []
        for i, rec in enumerate(list(self.channels.values()) if records is None else records):
            body = "".join(f"{name}: {rec.fields.get(name, '')}\r\n" for name in SNAPSHOT_FIELDS)
            out.append((f"Event: Hangup\r\nPrivilege: call,all\r\nTimestamp: {ts + i * 1e-6:.6f}\r\n{body}"
                        "Cause: 16\r\nCause-txt: Normal Clearing\r\n\r\n").encode())
        return out
