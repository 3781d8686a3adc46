"""A replay AMI server: recorded Asterisk traffic served as a live Asterisk.

Why: the daemon, the demo and the tests need a *live* AMI peer that behaves like Asterisk 20 (banner, Login,
event class masks, Filter, Ping, Logoff, CoreShowChannels answered from the channel state at that point of
the trace, dropped sockets between recorded sessions) without running Asterisk.

Model (one "Asterisk" per server):

* The trace files are cut into *sessions* (each file, and each banner line inside a file, starts one). A session
  is its banner, the ``FullyBooted`` block sent after Login, and the unsolicited events in order. The recorder's
  own traffic is not replayed: the banner/Login response, every ``Response:`` block, and the action-reply events
  (``ActionID`` and no ``Timestamp``: CoreShowChannel, Status, …). A recorded ``CoreShowChannel`` list is kept as
  a *seed* for the channel state (it names channels whose ``Newchannel`` the recorder missed).
* One player task walks the events; each event is written, with its original bytes, to every logged-in client
  whose event mask and filters accept it. The player waits for a logged-in client at the start of each session
  and (by default) whenever nobody is logged in, so no event is lost before a client arrives. Timing follows the
  ``Timestamp`` headers divided by ``speed``; ``fast`` sends as fast as the slowest client reads.
* At a session boundary every client connection is closed; the next connection gets the next session.
  ``loop_forever`` starts again after the last session with ids, channel names and timestamps shifted so each
  pass brings new calls (the wrap itself does not drop clients; channels a pass leaves up get a synthetic
  ``Hangup`` so a looping demo does not pile up ghosts).
* The channel state (for ``CoreShowChannels``) follows the events already sent: a channel is up from its
  ``Newchannel`` to its ``Hangup``; snapshots in later events update its fields. A recorded list right after a
  session's login replaces the state (channels ended in the gap disappear); one later in a session only adds the
  channels the events never announced. Checked against the ``*.truth.jsonl`` snapshots of every bundled trace:
  identical except within a few ms of a snapshot and inside recorder gaps.

Test hooks on :class:`ReplayServer`: ``events_sent``, ``clients_connected``/``clients_logged_in``/``logins_total``,
``wait_for(predicate)`` and friends, ``hold()``/``wait_held()``/``release()`` to park the stream at an exact
event count, ``drop_clients()`` to reset every connection, ``finished``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import re
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.ami import framing as ami_framing
from collector.tools.traces import read_trace

__all__ = [
    "ChannelRecord", "ChannelTable", "DEFAULT_BANNER", "EventMask", "PassRewriter", "ReplayEvent", "ReplayServer",
    "SNAPSHOT_FIELDS", "TraceSeed", "TraceSession", "load_sessions", "parse_block", "serve", "split_sessions",
]

log = logging.getLogger(__name__)

DEFAULT_BANNER = b"Asterisk Call Manager/9.0.0"
_BANNER_PREFIX = b"Asterisk Call Manager/"
_DEFAULT_FULLY_BOOTED = (b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 0\r\nLastReload: 0\r\n"
                         b"Status: Fully Booted\r\n\r\n")
#: A block ends at the first empty line; tolerate LF-only framing and the stray ``\r\n\n`` of asterisk#761.
_BLOCK_END = re.compile(rb"\r?\n\r?\n")
#: Largest action block accepted from a client before its buffer is discarded as garbage.
_MAX_ACTION_BYTES = 64 * 1024
#: Events parsed at a time; the player yields to the event loop (clients' actions are served, buffered
#: output is written) after each batch, and in timed mode whenever it waits for the next event's time.
#: Fast mode writes each batch at once: 512 events (~240 KB) per write let a client read in big chunks,
#: as it does from a busy Asterisk, and keep the player to ~2 ms between yields.
_BATCH = 64
_FAST_BATCH = 512

#: Asterisk's event class bits (include/asterisk/manager.h), for numeric ``Events:`` masks.
EVENT_CLASS_BITS: dict[str, int] = {
    "system": 1 << 0, "call": 1 << 1, "log": 1 << 2, "verbose": 1 << 3, "command": 1 << 4, "agent": 1 << 5,
    "user": 1 << 6, "config": 1 << 7, "dtmf": 1 << 8, "reporting": 1 << 9, "cdr": 1 << 10, "dialplan": 1 << 11,
    "originate": 1 << 12, "agi": 1 << 13, "cc": 1 << 14, "aoc": 1 << 15, "test": 1 << 16, "security": 1 << 17,
    "message": 1 << 18,
}

#: The channel snapshot fields of Asterisk 12+ in the order CoreShowChannel prints them.
SNAPSHOT_FIELDS: tuple[str, ...] = (
    "Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName", "ConnectedLineNum",
    "ConnectedLineName", "Language", "AccountCode", "Context", "Exten", "Priority", "Uniqueid", "Linkedid",
)


# --------------------------------------------------------------------------------------------- trace model

@dataclass(slots=True)
class TraceSeed:
    """A recorded CoreShowChannel list (raw item blocks): channels that exist at that point of the trace.

    ``ts``: trace time of the list (the last event before it, else the first after it), for ``Duration``."""

    raws: list[bytes]
    ts: float | None = None


TraceItem = bytes | TraceSeed  # bytes = one unsolicited event block, terminator included


@dataclass(slots=True)
class TraceSession:
    """One recorded AMI session: what a client connecting during it receives."""

    source: str
    banner: bytes = DEFAULT_BANNER
    fully_booted: bytes = _DEFAULT_FULLY_BOOTED
    items: list[TraceItem] = field(default_factory=list)

    @property
    def event_count(self) -> int:
        return sum(1 for it in self.items if isinstance(it, bytes))


def parse_block(raw: bytes) -> dict[str, str]:
    """Headers of one AMI block; the first value of a repeated key wins (as in ``ami_framing``)."""
    out: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").replace("\r", "").split("\n"):
        key, sep, value = line.partition(": ")
        if not sep:
            key, sep, value = line.partition(":")
            if not sep:
                continue
        if key not in out:
            out[key] = value
    return out


def _parse_slow(raw: bytes, out: list[dict[str, str]]) -> None:
    out.append(parse_block(raw))


def parse_blocks(raws: list[bytes], decoder: Any = None) -> list[dict[str, str]]:
    """``[parse_block(r) for r in raws]``, ~4x faster with ``decoder`` (``ami_framing.block_decoder()``): it
    frames the joined blocks as a stream, and every raw is one whole, terminated block."""
    if decoder is not None:
        data = b"".join(raws)
        out: list[dict[str, str]] = []
        consumed, _, _ = decoder.feed(data, out, _parse_slow)
        if consumed == len(data) and len(out) == len(raws):
            return out
    return [parse_block(r) for r in raws]


def _iter_blocks(data: bytes) -> Iterable[bytes]:
    """Raw blocks including their terminator, leading blank lines stripped; an unterminated tail gets one."""
    pos = 0
    n = len(data)
    while pos < n:
        m = _BLOCK_END.search(data, pos)
        end = m.end() if m else n
        block = data[pos:end].lstrip(b"\r\n")
        pos = end
        if not block.strip():
            continue
        if m is None:
            log.debug("trace ends inside a block; terminator added")
            block = block.rstrip(b"\r\n") + b"\r\n\r\n"
        yield block


_TS_RE = re.compile(rb"\nTimestamp: *([\d.]+)")


def _block_ts(raw: bytes) -> float | None:
    m = _TS_RE.search(raw)
    return _float(m.group(1).decode()) if m else None


def split_sessions(data: bytes, source: str = "<bytes>") -> list[TraceSession]:
    """Cut one recorded stream into sessions (a banner line starts a new one) and drop the recorder's traffic."""
    sessions: list[TraceSession] = []
    current: TraceSession | None = None
    seed: list[bytes] | None = None
    last_ts: float | None = None
    undated: list[TraceSeed] = []
    for block in _iter_blocks(data):
        if block.startswith(_BANNER_PREFIX):
            line, _, block = block.partition(b"\n")
            current = TraceSession(source=source, banner=line.rstrip(b"\r"))
            sessions.append(current)
            seed, last_ts, undated = None, None, []
            if not block.strip():
                continue
        if current is None:
            current = TraceSession(source=source)
            sessions.append(current)
        head = block[:64]
        if head.startswith(b"Response:"):
            continue  # Login response or a reply to the recorder's own action
        if not head.startswith(b"Event:"):
            log.debug("%s: block without Event/Response skipped: %r", source, head)
            continue
        has_ts = b"\nTimestamp:" in block
        has_aid = b"\nActionID:" in block
        if not has_ts and has_aid:
            # an item of a reply to the recorder's action; CoreShowChannel lists seed the channel state
            if head.startswith(b"Event: CoreShowChannel\r") or head.startswith(b"Event: CoreShowChannel\n"):
                seed = seed if seed is not None else []
                seed.append(block)
            elif head.startswith(b"Event: CoreShowChannelsComplete"):
                current.items.append(TraceSeed(seed or [], last_ts))
                if last_ts is None:
                    undated.append(current.items[-1])  # type: ignore[arg-type]
                seed = None
            continue
        if not has_ts and head.startswith(b"Event: FullyBooted"):
            current.fully_booted = block  # the login-time FullyBooted; re-sent to each client after its Login
            continue
        current.items.append(block)
        ts = _block_ts(block)
        if ts is not None:
            last_ts = ts
            for pending in undated:
                pending.ts = ts
            undated = []
    return sessions


def load_sessions(paths: Sequence[str | Path]) -> list[TraceSession]:
    """All sessions of several trace files (``.ami`` or ``.ami.gz``), each file starting at least one."""
    sessions: list[TraceSession] = []
    for path in paths:
        found = split_sessions(read_trace(path), source=str(path))
        if not found:
            log.warning("trace %s holds no session", path)
        sessions.extend(found)
    return sessions


# --------------------------------------------------------------------------------------------- loop passes

_EPOCH_RE = re.compile(rb"(?<![\d.])(\d{9,10})\.(\d+)(?![\d.])")
_HEX_SUFFIX_RE = re.compile(rb"(?<=[A-Za-z0-9_@.+]-)([0-9a-f]{8})(?![0-9A-Za-z-])")
_IAX2_SUFFIX_RE = re.compile(rb"(IAX2/[^\s/;,]*?-)(\d{1,5})(?![0-9A-Za-z])")
_UUID_RE = re.compile(rb"(?<![0-9A-Za-z-])([0-9a-f]{8})(-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
                      rb"(?![0-9A-Za-z-])")
_IAX2_STRIDE = 32768  # IAX2 call numbers are below 2**15


@dataclass(frozen=True, slots=True)
class PassRewriter:
    """Makes loop pass ``k`` look like new calls: every ``<epoch>.<n>`` (Uniqueid, Linkedid, Timestamp) moves by
    ``k * epoch_offset`` seconds, hex channel suffixes by ``k * hex_stride``, IAX2 call numbers by
    ``k * 32768``, bridge UUIDs' first group by ``k``. ``epoch_offset`` exceeds the span of the trace's epochs,
    so ids of different passes never collide."""

    k: int
    epoch_offset: int
    hex_stride: int

    @classmethod
    def for_sessions(cls, sessions: Sequence[TraceSession], k: int) -> PassRewriter:
        lo, hi, hex_lo, hex_hi = math.inf, -math.inf, math.inf, -math.inf
        for s in sessions:
            for it in s.items:
                for raw in (it,) if isinstance(it, bytes) else it.raws:
                    for m in _EPOCH_RE.finditer(raw):
                        v = int(m.group(1))
                        lo, hi = min(lo, v), max(hi, v)
                    for m in _HEX_SUFFIX_RE.finditer(raw):
                        v = int(m.group(1), 16)
                        hex_lo, hex_hi = min(hex_lo, v), max(hex_hi, v)
        epoch_offset = int(hi - lo) + 2 if hi >= lo else 2
        hex_stride = int(hex_hi - hex_lo) + 1 if hex_hi >= hex_lo else 1
        return cls(k, epoch_offset, hex_stride)

    def __call__(self, raw: bytes) -> bytes:
        if self.k == 0:
            return raw
        shift = self.k * self.epoch_offset
        raw = _EPOCH_RE.sub(lambda m: b"%d.%s" % (int(m.group(1)) + shift, m.group(2)), raw)
        hstep = self.k * self.hex_stride
        raw = _HEX_SUFFIX_RE.sub(lambda m: b"%08x" % ((int(m.group(1), 16) + hstep) % (1 << 32)), raw)
        istep = self.k * _IAX2_STRIDE
        raw = _IAX2_SUFFIX_RE.sub(lambda m: m.group(1) + b"%d" % (int(m.group(2)) + istep), raw)
        return _UUID_RE.sub(lambda m: b"%08x" % ((int(m.group(1), 16) + self.k) % (1 << 32)) + m.group(2), raw)


# --------------------------------------------------------------------------------------------- channel state

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


def _parse_duration(value: str) -> float:
    try:
        h, m, s = (int(x) for x in value.split(":"))
    except ValueError:
        return 0.0
    return float(h * 3600 + m * 60 + s)


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
                rec = ChannelRecord(uid, fields, now - _parse_duration(it.get("Duration", "")))
                self.channels[uid] = rec
                added += 1
            else:
                rec.fields = fields
            rec.application = it.get("Application", "")
            rec.application_data = it.get("ApplicationData", "")
            rec.bridge_id = it.get("BridgeId", "")
        return added, removed

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

    def hangup_blocks(self, ts: float) -> list[bytes]:
        """Synthetic ``Hangup`` events for every channel still up (end of a loop pass)."""
        out = []
        for i, rec in enumerate(list(self.channels.values())):
            body = "".join(f"{name}: {rec.fields.get(name, '')}\r\n" for name in SNAPSHOT_FIELDS)
            out.append((f"Event: Hangup\r\nPrivilege: call,all\r\nTimestamp: {ts + i * 1e-6:.6f}\r\n{body}"
                        "Cause: 16\r\nCause-txt: Normal Clearing\r\n\r\n").encode())
        return out


# --------------------------------------------------------------------------------------------- client side

@dataclass(frozen=True, slots=True)
class EventMask:
    """A session's event class mask; ``classes is None`` means every class (``on``)."""

    classes: frozenset[str] | None

    @classmethod
    def parse(cls, value: str | None) -> EventMask:
        """``on``/``yes``/``all`` → everything, ``off``/``no`` → nothing, an integer → class bits, else a comma
        list of class names (unknown names ignored, as Asterisk does)."""
        v = (value or "on").strip().lower()
        if v in ("on", "yes", "true", "all", "-1"):
            return cls(None)
        if v in ("off", "no", "false", "0", ""):
            return cls(frozenset())
        if v.isdigit():
            bits = int(v)
            return cls(frozenset(name for name, bit in EVENT_CLASS_BITS.items() if bits & bit))
        names = {p.strip() for p in v.split(",") if p.strip()}
        if "all" in names:
            return cls(None)
        return cls(frozenset(names & EVENT_CLASS_BITS.keys()))

    @property
    def on(self) -> bool:
        return self.classes is None or bool(self.classes)

    def allows(self, classes: frozenset[str]) -> bool:
        """Asterisk sends an event only if *all* its classes are in the mask."""
        if self.classes is None:
            return True
        return bool(self.classes) and classes <= self.classes


def _privilege_classes(msg: dict[str, str]) -> frozenset[str]:
    priv = msg.get("Privilege", "")
    return frozenset(p.strip().lower() for p in priv.split(",") if p.strip() and p.strip().lower() != "all")


@dataclass(slots=True)
class _Client:
    """One TCP connection to the replay server."""

    cid: int
    writer: asyncio.StreamWriter
    peer: str
    logged_in: bool = False
    mask: EventMask = field(default_factory=lambda: EventMask(None))
    includes: list[re.Pattern[str]] = field(default_factory=list)
    excludes: list[re.Pattern[str]] = field(default_factory=list)
    closing: bool = False
    events_sent: int = 0
    stalled_since: float | None = None  # loop time its write buffer went over the high-water mark
    out: list[bytes] = field(default_factory=list)  # events not yet handed to the transport (see _flush)

    def wants(self, classes: frozenset[str], raw: bytes) -> bool:
        if not self.mask.allows(classes):
            return False
        if not self.includes and not self.excludes:
            return True
        text = raw.decode("utf-8", "replace")
        if self.includes and not any(p.search(text) for p in self.includes):
            return False
        return not any(p.search(text) for p in self.excludes)

    def write(self, data: bytes) -> None:
        if self.closing:
            return
        if self.writer.transport.is_closing():  # peer gone: asyncio would log every further write
            self.closing = True
            return
        try:
            self.writer.write(data)
        except Exception as exc:  # transport already gone: the reader side will clean up
            log.debug("client %s write failed: %r", self.peer, exc)
            self.closing = True

    def over_high_water(self) -> bool:
        """True when ``drain()`` would block: only then is it worth awaiting (keeps fast mode cheap)."""
        try:
            transport = self.writer.transport
            return transport.get_write_buffer_size() >= transport.get_write_buffer_limits()[1]
        except Exception:
            return False


def _parse_action(text: str) -> dict[str, str]:
    """Headers of an action block, keys lower-cased (Asterisk reads action headers case-insensitively)."""
    out: dict[str, str] = {}
    for line in text.split("\n"):
        key, sep, value = line.partition(":")
        if not sep:
            continue
        k = key.strip().lower()
        if k and k not in out:
            out[k] = value.strip()
    return out


def _reply(kind: str, action_id: str | None, *lines: str) -> bytes:
    aid = f"ActionID: {action_id}\r\n" if action_id is not None else ""
    body = "".join(f"{line}\r\n" for line in lines)
    return f"Response: {kind}\r\n{aid}{body}\r\n".encode()


# --------------------------------------------------------------------------------------------- the server

@dataclass(frozen=True, slots=True)
class ReplayEvent:
    """The event the player is about to send (given to ``hold(when=…)`` predicates)."""

    index: int        # events sent before this one (over the whole replay)
    session: int      # index of its session in the file list
    pass_no: int      # loop pass, 0 first
    name: str
    timestamp: float | None
    fields: dict[str, str]
    raw: bytes


@dataclass(slots=True)
class _Waiter:
    predicate: Callable[[], bool]
    future: asyncio.Future[None]


class ReplayServer:
    """Serves trace files as a live Asterisk AMI. ``await start()`` returns the bound port; ``close()`` stops it.

    ``pause_when_idle`` (default): the stream only advances while a client is logged in, so a client never
    misses events by connecting late; set it False to let the stream run on (events lost, as with a real
    Asterisk) while nobody is connected. ``write_timeout``: a client that does not read for that long is
    disconnected, like Asterisk's ``writetimeout`` (made generous for tests).
    """

    def __init__(self, paths: Sequence[str | Path], host: str = "127.0.0.1", port: int = 5038,
                 speed: float = 1.0, fast: bool = False, loop_forever: bool = False,
                 username: str | None = None, secret: str | None = None, *,
                 pause_when_idle: bool = True, write_timeout: float = 10.0,
                 wall_clock: bool | None = None) -> None:
        if speed <= 0 and not fast:
            raise ValueError("speed must be > 0")
        self.paths = [Path(p) for p in paths]
        self.host = host
        self.port = port
        self.speed = speed
        self.fast = fast
        self.loop_forever = loop_forever
        self.username = username
        self.secret = secret
        self.pause_when_idle = pause_when_idle
        self.write_timeout = write_timeout
        # timed playback stamps events with the wall clock, as a live Asterisk would (answer times and
        # durations then make sense to a daemon); --fast keeps the trace's own times (tests compare them)
        self.wall_clock = (not fast) if wall_clock is None else wall_clock
        self.sessions: list[TraceSession] = load_sessions(self.paths)
        if not self.sessions:
            raise ValueError("no AMI session in " + ", ".join(map(str, self.paths)))
        self.state = ChannelTable()
        self._decoder = ami_framing.block_decoder()
        self._classes_of: dict[str, frozenset[str]] = {}
        # counters / observable state (read them; wait on them with wait_for)
        self.events_sent = 0
        self.connections_total = 0
        self.logins_total = 0
        self.session_index = 0
        self.pass_index = 0
        self.held = False
        self.finished = asyncio.Event()
        self._clients: dict[int, _Client] = {}
        self._client_tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.base_events.Server | None = None
        self._player: asyncio.Task[None] | None = None
        self._waiters: list[_Waiter] = []
        self._hold_after: int | None = None
        self._hold_when: Callable[[ReplayEvent], bool] | None = None
        self._release = asyncio.Event()
        self._session: TraceSession = self.sessions[0]
        self._rewriter_base: PassRewriter | None = None
        self._trace_now: float | None = None
        self._anchor: tuple[float, float] | None = None  # (loop time, trace time) while the clock runs
        self._next_ts: float | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> int:
        """Bind and start the player; returns the bound port (useful with ``port=0``)."""
        self._server = await asyncio.start_server(self._handle_client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._player = asyncio.create_task(self._run_player(), name="replay-player")
        log.info("replay AMI server on %s:%d: %d session(s) from %s, %s%s", self.host, self.port,
                 len(self.sessions), ", ".join(p.name for p in self.paths),
                 "fast" if self.fast else f"speed x{self.speed:g}", ", looping" if self.loop_forever else "")
        return self.port

    async def close(self) -> None:
        """Stop accepting, stop the player, close every client."""
        if self._server is not None:
            self._server.close()
        if self._player is not None:
            self._player.cancel()
            await asyncio.gather(self._player, return_exceptions=True)
            self._player = None
        for client in list(self._clients.values()):
            self._close_client(client)  # flushes what is buffered, then the handler sees EOF and ends
        pending = set(self._client_tasks)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=1.0)
        if pending:  # clients that do not read: reset them
            for client in list(self._clients.values()):
                client.writer.transport.abort()
            _, pending = await asyncio.wait(pending, timeout=1.0)
        for t in pending:  # last resort (asyncio logs a cancelled handler task on 3.11)
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            except (TimeoutError, asyncio.TimeoutError):
                pass
            self._server = None
        for w in self._waiters:
            if not w.future.done():
                w.future.cancel()
        self._waiters.clear()

    async def __aenter__(self) -> ReplayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ observation hooks

    @property
    def clients_connected(self) -> int:
        """Open TCP connections (logged in or not)."""
        return len(self._clients)

    @property
    def clients_logged_in(self) -> int:
        return sum(1 for c in self._clients.values() if c.logged_in and not c.closing)

    def _anyone_listening(self) -> bool:
        """``clients_logged_in > 0``, cheap enough for once per event."""
        for c in self._clients.values():
            if c.logged_in and not c.closing:
                return True
        return False

    def trace_time(self) -> float | None:
        """The replayed Asterisk's clock: the trace time of the stream position (moves between events when
        timed, stands still while held, paused or in fast mode)."""
        now = self._trace_now
        if self._anchor is not None and not self.fast:
            wall0, ts0 = self._anchor
            t = ts0 + (asyncio.get_running_loop().time() - wall0) * self.speed
            if self._next_ts is not None:
                t = min(t, self._next_ts)
            now = t if now is None else max(now, t)
        return now

    def channels(self) -> list[ChannelRecord]:
        """The channel state CoreShowChannels would report now."""
        return list(self.state.channels.values())

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> None:
        """Wait until ``predicate()`` holds; it is re-checked whenever a counter or the hold state changes."""
        if predicate():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(predicate, fut)
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(fut, timeout)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def wait_events_sent(self, n: int, timeout: float | None = None) -> None:
        await self.wait_for(lambda: self.events_sent >= n, timeout)

    async def wait_clients(self, n: int = 1, logged_in: bool = True, timeout: float | None = None) -> None:
        """Wait until exactly ``n`` clients are connected (logged in, unless ``logged_in=False``)."""
        if logged_in:
            await self.wait_for(lambda: self.clients_logged_in == n, timeout)
        else:
            await self.wait_for(lambda: self.clients_connected == n, timeout)

    async def wait_logins(self, n: int, timeout: float | None = None) -> None:
        await self.wait_for(lambda: self.logins_total >= n, timeout)

    async def wait_held(self, timeout: float | None = None) -> None:
        await self.wait_for(lambda: self.held, timeout)

    async def wait_finished(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self.finished.wait(), timeout)

    def _poke(self) -> None:
        if not self._waiters:
            return
        for w in list(self._waiters):
            if w.future.done():
                continue
            try:
                ok = w.predicate()
            except Exception as exc:  # a broken test predicate must not stop the replay
                w.future.set_exception(exc)
                continue
            if ok:
                w.future.set_result(None)

    # ------------------------------------------------------------------ control hooks

    def hold(self, after_events: int | None = None, *, when: Callable[[ReplayEvent], bool] | None = None) -> None:
        """Park the stream before the event that would make ``events_sent`` exceed ``after_events``, or before
        the first event for which ``when(event)`` is true. Actions (CoreShowChannels, Ping…) are still served
        while held. ``release()`` continues."""
        self._hold_after = after_events
        self._hold_when = when
        self._release.clear()

    def release(self) -> None:
        """Lift the hold set by :meth:`hold`."""
        self._hold_after = None
        self._hold_when = None
        self.held = False  # at once, so that a wait for the next hold does not see this one
        self._release.set()

    async def flush_clients(self) -> None:
        """Wait until every client's pending output has been handed to the kernel (or the client is cut off)."""
        for client in list(self._clients.values()):
            await self._drain(client)

    def drop_clients(self) -> int:
        """Reset every client connection at once (TCP RST, unsent data discarded); returns how many."""
        n = 0
        for client in list(self._clients.values()):
            client.closing = True
            transport = client.writer.transport
            sock = transport.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            transport.abort()
            n += 1
        log.info("replay: dropped %d client(s)", n)
        self._poke()
        return n

    # ------------------------------------------------------------------ clients

    async def _handle_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._client_tasks.add(task)
        self.connections_total += 1
        peer = str(writer.get_extra_info("peername"))
        client = _Client(self.connections_total, writer, peer)
        self._clients[client.cid] = client
        self._poke()
        log.info("replay: client %s connected (session %d)", peer, self.session_index)
        try:
            client.write(self._session.banner + b"\r\n")
            buf = b""
            while not client.closing:
                data = await reader.read(65536)
                if not data:
                    break
                buf += data.replace(b"\r", b"")
                while b"\n\n" in buf and not client.closing:
                    block, buf = buf.split(b"\n\n", 1)
                    if block.strip():
                        await self._handle_action(client, block.decode("utf-8", "replace"))
                if len(buf) > _MAX_ACTION_BYTES:
                    log.warning("replay: client %s sent %d bytes without a blank line; discarded", peer, len(buf))
                    buf = b""
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
            log.info("replay: client %s connection error: %r", peer, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("replay: client %s handler failed", peer)
        finally:
            self._clients.pop(client.cid, None)
            self._close_client(client)
            if task is not None:
                self._client_tasks.discard(task)
            log.info("replay: client %s gone", peer)
            self._poke()

    def _close_client(self, client: _Client) -> None:
        client.closing = True
        try:
            client.writer.close()
        except Exception:
            pass
        self._poke()

    async def _handle_action(self, client: _Client, text: str) -> None:
        hdr = _parse_action(text)
        aid = hdr.get("actionid")
        action = hdr.get("action", "").lower()
        if not action:
            client.write(_reply("Error", aid, "Message: Missing action in request"))
            return
        if not client.logged_in and action not in ("login", "logoff", "challenge"):
            client.write(_reply("Error", aid, "Message: Permission denied"))
            return
        if action == "login":
            self._action_login(client, hdr, aid)
        elif action == "logoff":
            client.write(_reply("Goodbye", aid, "Message: Thanks for all the fish."))
            await self._drain(client)
            self._close_client(client)
        elif action == "ping":
            now = self.trace_time()
            stamp = now if now is not None else time.time()
            client.write(_reply("Success", aid, "Ping: Pong", f"Timestamp: {stamp:.6f}"))
        elif action == "events":
            client.mask = EventMask.parse(hdr.get("eventmask"))
            client.write(_reply("Success", aid, f"Events: {'On' if client.mask.on else 'Off'}"))
        elif action == "filter":
            self._action_filter(client, hdr, aid)
        elif action == "coreshowchannels":
            now = self.trace_time()
            client.write(self.state.core_show_channels(aid, now if now is not None else 0.0))
        else:
            client.write(_reply("Error", aid, "Message: Invalid/unknown command"))
        await self._drain(client)

    def _action_login(self, client: _Client, hdr: dict[str, str], aid: str | None) -> None:
        if client.logged_in:
            client.write(_reply("Success", aid, "Message: Already authenticated"))
            return
        if self.username is not None and (hdr.get("username") != self.username
                                          or (self.secret is not None and hdr.get("secret") != self.secret)):
            log.info("replay: client %s failed to authenticate as %r", client.peer, hdr.get("username"))
            client.write(_reply("Error", aid, "Message: Authentication failed"))
            self._close_client(client)
            return
        client.mask = EventMask.parse(hdr.get("events"))
        client.write(_reply("Success", aid, "Message: Authentication accepted"))
        if client.mask.allows(frozenset({"system"})):
            client.write(self._session.fully_booted)
        client.logged_in = True
        self.logins_total += 1
        log.info("replay: client %s logged in as %r, events=%s", client.peer, hdr.get("username"),
                 hdr.get("events", "on"))
        self._poke()

    def _action_filter(self, client: _Client, hdr: dict[str, str], aid: str | None) -> None:
        if hdr.get("operation", "").lower() != "add":
            client.write(_reply("Error", aid, "Message: Unknown operation"))
            return
        expr = hdr.get("filter", "")
        exclude = expr.startswith("!")
        try:
            pattern = re.compile(expr[1:] if exclude else expr)
        except re.error:
            client.write(_reply("Error", aid, "Message: Filter did not compile.  Check the syntax of the filter "
                                              "given."))
            return
        (client.excludes if exclude else client.includes).append(pattern)
        client.write(_reply("Success", aid, "Message: Success"))

    async def _drain(self, client: _Client) -> None:
        if client.closing:
            return
        try:
            await asyncio.wait_for(client.writer.drain(), self.write_timeout)
        except (TimeoutError, asyncio.TimeoutError):
            log.warning("replay: client %s did not read for %.1f s; disconnecting", client.peer,
                        self.write_timeout)
            self._close_client(client)
            client.writer.transport.abort()
        except (ConnectionError, OSError) as exc:
            log.debug("replay: client %s drain failed: %r", client.peer, exc)
            self._close_client(client)

    # ------------------------------------------------------------------ the player

    def _rewriter(self, k: int) -> PassRewriter:
        if k == 0:
            return PassRewriter(0, 0, 0)
        if self._rewriter_base is None:  # one scan of the traces, on the first wrap
            self._rewriter_base = PassRewriter.for_sessions(self.sessions, 1)
        return dataclasses.replace(self._rewriter_base, k=k)

    async def _run_player(self) -> None:
        try:
            while True:
                for si, session in enumerate(self.sessions):
                    seamless = si == 0 and self.pass_index > 0
                    await self._enter_session(si, session, seamless)
                    await self._play_session(si, session)
                if not self.loop_forever:
                    break
                await self._end_pass()
                self.pass_index += 1
                self._poke()
            log.info("replay: all %d session(s) played, %d events; idle", len(self.sessions), self.events_sent)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("replay: player failed; stream stopped")
        finally:
            self._anchor = None
            self.finished.set()
            self._poke()

    async def _enter_session(self, si: int, session: TraceSession, seamless: bool) -> None:
        if not seamless and (si > 0 or self.pass_index > 0):
            n = 0
            for client in list(self._clients.values()):
                await self._drain(client)
                self._close_client(client)
                n += 1
            log.info("replay: session %d (%s) begins; closed %d client(s)", si, session.source, n)
        self.session_index = si
        self._session = session
        self._poke()
        # a recorded resync right after the login (no channel event before it) is the state at session start
        rw = self._rewriter(self.pass_index)
        for item in session.items:
            if isinstance(item, TraceSeed):
                self._apply_seed(item, rw, authoritative=True)
                break
            if item.startswith((b"Event: Newchannel", b"Event: Hangup")):
                break
        if not seamless:
            self._anchor = None
            await self._wait_client()

    async def _wait_client(self) -> None:
        if self.clients_logged_in == 0:
            await self._flush()
            self._anchor = None
            await self.wait_for(lambda: self.clients_logged_in > 0)

    def _apply_seed(self, seed: TraceSeed, rw: PassRewriter, authoritative: bool) -> None:
        items = [parse_block(rw(raw)) for raw in seed.raws]
        if seed.ts is not None:
            now = seed.ts + rw.k * rw.epoch_offset
        else:
            now = self._trace_now or 0.0
        added, removed = self.state.seed(items, now, authoritative)
        if authoritative and seed.ts is not None:
            self._trace_now = now if self._trace_now is None else max(self._trace_now, now)
        if added or removed:
            log.info("replay: recorded channel list applied: %d added, %d removed", added, removed)

    async def _play_session(self, si: int, session: TraceSession) -> None:
        rw = self._rewriter(self.pass_index)
        seen_channel_event = False
        items = session.items
        i, n = 0, len(items)
        batch = _FAST_BATCH if self.fast else _BATCH
        while i < n:
            item = items[i]
            if isinstance(item, TraceSeed):
                # at session start it was applied already; later, only fill what a recorder gap hid
                self._apply_seed(item, rw, authoritative=not seen_channel_event)
                i += 1
                continue
            j = i + 1
            while j < n and j - i < batch and not isinstance(items[j], TraceSeed):
                j += 1
            raws = [rw(it) for it in items[i:j]]  # type: ignore[arg-type]
            i = j
            # whether a client listens changes only while this task waits: known until the next await
            listening = False
            apply_state, broadcast, classes_of = self.state.apply, self._broadcast, self._classes
            for raw, msg in zip(raws, parse_blocks(raws, self._decoder)):
                name = msg.get("Event", "")
                if name == "Newchannel" or name == "Hangup":
                    seen_channel_event = True
                ts_text = msg.get("Timestamp")
                try:
                    ts = float(ts_text) if ts_text else None
                except ValueError:
                    ts = None
                if not self.fast:
                    await self._pace(ts)
                    listening = False
                if self._hold_after is not None or self._hold_when is not None:
                    await self._check_hold(ReplayEvent(self.events_sent, si, self.pass_index, name, ts, msg, raw))
                    listening = False
                if self.pause_when_idle and not listening:
                    if not self._anyone_listening():
                        await self._wait_client()
                        self._restart_clock(ts)
                    listening = True
                now = self._trace_now
                if ts is not None and (now is None or ts > now):
                    self._trace_now = now = ts
                apply_state(msg, ts if ts is not None else (now or 0.0))
                if self.wall_clock and ts is not None:
                    raw = _TS_RE.sub(b"\nTimestamp: %.6f" % time.time(), raw, count=1)
                broadcast(raw, classes_of(msg))
            await self._flush()
            await asyncio.sleep(0)

    def _classes(self, msg: dict[str, str]) -> frozenset[str]:
        """``_privilege_classes``, memoised by the header's text (a handful of distinct values)."""
        priv = msg.get("Privilege", "")
        classes = self._classes_of.get(priv)
        if classes is None:
            classes = _privilege_classes(msg)
            if len(self._classes_of) < 1024:  # bounded against an odd trace
                self._classes_of[priv] = classes
        return classes

    async def _end_pass(self) -> None:
        now = self._trace_now or 0.0
        blocks = self.state.hangup_blocks(now)
        if blocks:
            log.info("replay: end of pass %d: %d channel(s) still up get a synthetic Hangup", self.pass_index,
                     len(blocks))
        for raw in blocks:
            msg = parse_block(raw)
            self.state.apply(msg, now)
            self._broadcast(raw, _privilege_classes(msg))
        await self._flush()
        self.state.clear()

    async def _pace(self, ts: float | None) -> None:
        """Timed mode: sleep until the event's trace time, scaled by ``speed``."""
        if self.fast or ts is None:
            return
        loop = asyncio.get_running_loop()
        if self._anchor is None:
            self._anchor = (loop.time(), ts)
            return
        wall0, ts0 = self._anchor
        delay = wall0 + (ts - ts0) / self.speed - loop.time()
        if delay > 0.001:
            self._next_ts = ts
            await self._flush()
            try:
                await asyncio.sleep(delay)
            finally:
                self._next_ts = None

    def _should_hold(self, ev: ReplayEvent) -> bool:
        if self._hold_after is not None and ev.index >= self._hold_after:
            return True
        if self._hold_when is None:
            return False
        try:
            return bool(self._hold_when(ev))
        except Exception:  # a broken predicate must not kill the stream
            log.exception("replay: hold predicate failed; hold lifted")
            self._hold_when = None
            return False

    async def _check_hold(self, ev: ReplayEvent) -> None:
        while self._should_hold(ev):
            await self._flush()
            self.held = True
            anchor_was = self._anchor is not None
            self._anchor = None
            self._poke()
            await self._release.wait()
            self.held = False
            self._poke()
            if anchor_was:
                self._restart_clock(ev.timestamp)

    def _restart_clock(self, ts: float | None) -> None:
        """After a pause, trace time resumes from ``ts`` now (no burst of overdue events)."""
        if not self.fast and ts is not None:
            self._anchor = (asyncio.get_running_loop().time(), ts)

    def _broadcast(self, raw: bytes, classes: frozenset[str]) -> None:
        """Queue one event for every client that wants it; ``_flush`` writes the queues. The player flushes
        before every wait, so nothing else (an action's reply, a test's check) ever runs while events that
        ``events_sent`` already counts are still queued."""
        for client in self._clients.values():
            if client.logged_in and not client.closing and client.wants(classes, raw):
                client.out.append(raw)
                client.events_sent += 1
        self.events_sent += 1
        if self._waiters:
            self._poke()

    async def _flush(self) -> None:
        targets = []
        for client in self._clients.values():
            if client.out:
                client.write(b"".join(client.out))
                client.out.clear()
                targets.append(client)
        if self.fast:  # as fast as the (slowest) client reads
            for client in targets:
                if client.over_high_water():
                    await self._drain(client)
            return
        # timed: never hold the stream for one reader; one that stays backed up for write_timeout is cut off,
        # as Asterisk does with its writetimeout
        now = asyncio.get_running_loop().time()
        for client in targets:
            if not client.over_high_water():
                client.stalled_since = None
            elif client.stalled_since is None:
                client.stalled_since = now
            elif now - client.stalled_since > self.write_timeout:
                log.warning("replay: client %s has not read for %.1f s; disconnecting", client.peer,
                            self.write_timeout)
                client.closing = True
                client.writer.transport.abort()


def _float(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None


async def serve(paths: Sequence[str | Path], host: str = "127.0.0.1", port: int = 5038, speed: float = 1.0,
                fast: bool = False, loop_forever: bool = False, ready: asyncio.Future[int] | None = None,
                username: str | None = None, secret: str | None = None, exit_when_done: bool = False) -> None:
    """Run a :class:`ReplayServer` until cancelled (or, with ``exit_when_done``, until the trace has been sent).

    ``ready`` gets the bound port once listening (or the bind error)."""
    server = ReplayServer(paths, host=host, port=port, speed=speed, fast=fast, loop_forever=loop_forever,
                          username=username, secret=secret)
    try:
        bound = await server.start()
    except BaseException as exc:
        if ready is not None and not ready.done():
            ready.set_exception(exc)
        raise
    if ready is not None and not ready.done():
        ready.set_result(bound)
    try:
        if exit_when_done and not loop_forever:
            await server.finished.wait()
            await server.flush_clients()
        else:
            await asyncio.Event().wait()
    finally:
        await server.close()
