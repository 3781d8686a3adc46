"""Loop passes: ``loop_forever`` replays the traces again and again, and each pass must look like new calls
(a daemon that saw pass 0 would otherwise take pass 1 for duplicates of calls it already ended)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from collector.tools.replay.trace import TraceSession

__all__ = ["PassRewriter"]

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
