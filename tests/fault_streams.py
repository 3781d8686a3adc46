"""Byte-level surgery on recorded AMI streams for the fault tests: shuffled timing, restarted Asterisk.

Every function takes and returns raw trace bytes (banner, ``\\r\\n\\r\\n``-terminated blocks), so the result
can be written to a ``.ami`` file and served by :class:`collector.tools.replay.ReplayServer` like any recording.
"""

from __future__ import annotations

import random
import re

__all__ = ["blocks_of", "join_blocks", "shift_epochs", "shuffle_within", "block_ts"]

_TS = re.compile(rb"\r\nTimestamp: *([\d.]+)")
_UID = re.compile(rb"\r\n(?!Bridge)[A-Za-z]*Uniqueid: *([^\r]+)")
_EPOCH = re.compile(rb"(?<![\d.])(\d{10})\.(\d+)(?![\d.])")


def blocks_of(data: bytes) -> list[bytes]:
    """The blocks of a stream without their terminators (the banner line stays glued to the first)."""
    return [b for b in data.split(b"\r\n\r\n") if b.strip()]


def join_blocks(blocks: list[bytes]) -> bytes:
    return b"".join(b + b"\r\n\r\n" for b in blocks)


def block_ts(block: bytes) -> float | None:
    m = _TS.search(block)
    return float(m.group(1)) if m else None


def _channels(block: bytes) -> set[bytes]:
    return set(_UID.findall(block))


def _ordered_shuffle(group: list[bytes], rnd: random.Random) -> list[bytes]:
    """A random order of ``group`` in which blocks about a common channel keep their relative order."""
    keys = [_channels(b) for b in group]
    pending = list(range(len(group)))
    out = []
    while pending:
        ready = [i for n, i in enumerate(pending) if not any(keys[i] & keys[j] for j in pending[:n])]
        pick = rnd.choice(ready)
        pending.remove(pick)
        out.append(group[pick])
    return out


def shuffle_within(data: bytes, window: float, seed: int, per_channel_order: bool = True) -> tuple[bytes, int]:
    """Permute the timestamped event blocks inside consecutive windows of ``window`` seconds (a window
    starts at its first event); Timestamps keep their values, so they go out of order by < ``window``.
    ``per_channel_order``: blocks naming a common channel (any ``*Uniqueid`` but BridgeUniqueid) keep their
    relative order, as Asterisk's per-channel topics guarantee; otherwise any permutation (even a Hangup
    before its own Newchannel). Blocks without a Timestamp (banner, login FullyBooted, recorded resync
    lists) stay where they are and close the window. Returns the new stream and how many blocks moved."""
    rnd = random.Random(seed)
    out: list[bytes] = []
    group: list[bytes] = []
    start = 0.0
    moved = 0

    def flush() -> None:
        nonlocal moved
        if len(group) > 1:
            before = list(group)
            if per_channel_order:
                group[:] = _ordered_shuffle(group, rnd)
            else:
                rnd.shuffle(group)
            moved += sum(1 for a, b in zip(before, group, strict=False) if a is not b)
        out.extend(group)
        group.clear()

    for block in blocks_of(data):
        ts = block_ts(block) if block.startswith(b"Event: ") else None
        if ts is None:
            flush()
            out.append(block)
            continue
        if group and ts - start > window:
            flush()
        if not group:
            start = ts
        group.append(block)
    flush()
    return join_blocks(out), moved


def shift_epochs(data: bytes, seconds: int, ids_too: bool = True) -> bytes:
    """Move every ``<epoch>.<n>`` by ``seconds``: Timestamps only, or (``ids_too``) Uniqueids and Linkedids
    as well (their counter suffix unchanged, as after a restart that starts the counters again)."""
    if ids_too:
        return _EPOCH.sub(lambda m: b"%d.%s" % (int(m.group(1)) + seconds, m.group(2)), data)
    return _TS.sub(lambda m: b"\r\nTimestamp: %.6f" % (float(m.group(1)) + seconds), data)
