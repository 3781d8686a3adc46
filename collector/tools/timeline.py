"""Offline replay of traces through the tracker: the call table as it stood at every step of trace time.

Used by ``collector timeline`` (bug reports, comparing against ground truth) and by the tests.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from collector.ami.framing import BANNER_KEY, RX_TIME_KEY, AmiFramer, AmiMessage
from collector.tools.traces import read_trace
from collector.tracking.calls import CallView
from collector.tracking.tracker import CallTracker

__all__ = ["TimelineFrame", "call_to_json", "iter_trace_messages", "timeline", "write_timeline"]


@dataclass(frozen=True, slots=True)
class TimelineFrame:
    t: float
    calls: list[CallView]


def iter_trace_messages(paths: Sequence[str | Path], chunk: int = 65536) -> Iterator[AmiMessage]:
    """Messages of several trace files as one stream (each file begins with its own banner)."""
    for path in paths:
        data = read_trace(path)
        framer = AmiFramer()
        for i in range(0, len(data), chunk):
            yield from framer.feed(data[i:i + chunk])
        yield from framer.feed(b"\n\n")


def _msg_time(msg: AmiMessage) -> float | None:
    ts = msg.get("Timestamp")
    if not ts:
        return None
    try:
        return float(ts)
    except ValueError:
        return None


def timeline(messages: Iterable[AmiMessage], step: float = 0.5, server_id: int = 1,
             tracker: CallTracker | None = None) -> Iterator[TimelineFrame]:
    """Yield the table at each multiple of ``step`` (Unix time) from the first timestamped event
    to the last one, then once more after the final message.

    After a banner (a reconnect), messages without a Timestamp (the resync's answer) are held until the first
    timestamped message of that session and applied at its time (stamped with it as their receive time): the
    frames of the gap show the state before the reconnect, not the answer that came after it."""
    trk = tracker or CallTracker()
    next_t: float | None = None
    last_t = 0.0
    held: list[AmiMessage] | None = None  # since a banner, until the session's first timestamped message
    for msg in messages:
        t = _msg_time(msg)
        if t is not None:
            if next_t is None:
                next_t = math.ceil(t / step) * step
            while next_t <= t:
                yield TimelineFrame(round(next_t, 6), sorted(trk.calls(server_id), key=_order))
                next_t += step
            last_t = max(last_t, t)
            if held:
                stamp = f"{t:.6f}"
                trk.apply_many(server_id, [{**m, RX_TIME_KEY: stamp} for m in held])
            held = None
        elif BANNER_KEY in msg:
            held = []
        if held is not None:
            held.append(msg)
            continue
        trk.apply(server_id, msg)
    if held:
        trk.apply_many(server_id, held)
    final_t = next_t if next_t is not None else last_t
    yield TimelineFrame(round(final_t, 6), sorted(trk.calls(server_id), key=_order))


def _order(call: CallView) -> tuple[float, str]:
    return (call.start_time, call.linkedid)


def call_to_json(call: CallView) -> dict[str, Any]:
    return {
        "linkedid": call.linkedid,
        "uniqueid": call.uniqueid,
        "channel": call.channel,
        "dst_channel": call.dst_channel,
        "status": call.status.value,
        "src": call.src,
        "dst": call.dst,
        "answer_time": call.answer_time,
        "server_id": call.server_id,
    }


def write_timeline(paths: Sequence[str | Path], out: TextIO, step: float = 0.5, server_id: int = 1) -> int:
    frames = 0
    for frame in timeline(iter_trace_messages(paths), step=step, server_id=server_id):
        out.write(json.dumps({"t": frame.t, "calls": [call_to_json(c) for c in frame.calls]}) + "\n")
        frames += 1
    return frames
