"""Trace files → sessions, the unit the replay serves: one per recorded login, the recorder's own traffic left out.

A session is its banner, the ``FullyBooted`` block sent after Login and the unsolicited events in order. Not
replayed: the banner/Login response, every ``Response:`` block, and the action-reply events (``ActionID`` and no
``Timestamp``: CoreShowChannel, Status, …). A recorded ``CoreShowChannel`` list is kept as a *seed* for the
channel state (it names channels whose ``Newchannel`` the recorder missed).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.ami import framing as ami_framing
from collector.tools.traces import read_trace

__all__ = ["DEFAULT_BANNER", "TIMESTAMP_RE", "TraceItem", "TraceSeed", "TraceSession", "load_sessions",
           "parse_block", "parse_blocks", "split_sessions"]

log = logging.getLogger(__name__)

DEFAULT_BANNER = b"Asterisk Call Manager/9.0.0"
_BANNER_PREFIX = b"Asterisk Call Manager/"
_DEFAULT_FULLY_BOOTED = (b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 0\r\nLastReload: 0\r\n"
                         b"Status: Fully Booted\r\n\r\n")
#: A block ends at the first empty line; tolerate LF-only framing and the stray ``\r\n\n`` of asterisk#761.
_BLOCK_END = re.compile(rb"\r?\n\r?\n")
#: The ``Timestamp`` header of a raw event block (its value is group 1).
TIMESTAMP_RE = re.compile(rb"\nTimestamp: *([\d.]+)")


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
    """Headers of one AMI block; the first value of a repeated key wins (the framer's rule)."""
    return ami_framing.parse_block(raw, decode_then_strip_cr=True)


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


def _block_ts(raw: bytes) -> float | None:
    m = TIMESTAMP_RE.search(raw)
    return _float(m.group(1).decode()) if m else None


def _float(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None


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
