"""Build a large AMI trace from the bundled real recordings (tests/traces) for the ingest benchmark.

Every kept block of a recording becomes a *template*: its literal bytes with holes where a value must differ per
copy (the ``Timestamp``, every ``<epoch>.<counter>`` id – Uniqueid, Linkedid, DestUniqueid, Cdr UniqueID …, bridge
UUIDs, hex channel suffixes ``SIP/101-0000000d`` and IAX2 call numbers ``IAX2/201-14296``). A *copy* of a recording
fills the holes from its global copy number ``g``:

* ids ``E.N`` → ``(E + round(shift)).(N * ID_STRIDE + g)`` (keeps the age order ``_linkedid_age`` relies on),
* timestamps ``+ shift`` (a float; copies are aligned so that each recording's busiest second falls within
  ``± jitter`` of one common peak, so thousands of calls overlap),
* UUIDs: first group replaced by ``g``; hex channel counters ``+ g * 0x10000``; IAX2 call numbers ``+ g * 32768``.

Copies are merged by Timestamp (``heapq.merge``: each copy keeps its own wire order, including the few sub-ms
timestamp regressions Asterisk really produces). What is dropped from the recordings: everything that is not an
unsolicited event (banner, responses, action-reply items: the recorder's own traffic), ``FullyBooted`` and
``Shutdown`` (a session event, not traffic; each would make the collector resync or drop every call), and the
channels a recorder gap left half-seen (no ``Newchannel`` or no ``Hangup``: their whole Linkedid group), so the
merged stream ends with no call up.

``Events: call,system`` stream = the blocks whose ``Privilege`` classes are all in {call, system}: exactly what
Asterisk (and the replay server) send to such a login.
"""

from __future__ import annotations

import gzip
import heapq
import math
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from collector.tools.traces import read_trace

__all__ = ["Source", "TracePlan", "TraceStats", "load_sources", "plan", "write_trace", "DEFAULT_MIX"]

TRACES = Path(__file__).resolve().parent.parent / "tests" / "traces"

#: (scenario, copies per round): concurrent_load packs the most simultaneous calls per event, so it carries the
#: peak; the device/flow scenarios add variety (Local channels, transfers, queue, pickup, originate, failover).
DEFAULT_MIX: tuple[tuple[str, float], ...] = (
    ("concurrent_load", 1.0),
    ("dev_load_drop", 0.1),
    ("local_internal", 0.5), ("dev_failover", 0.5), ("dev_transfers", 0.5), ("dev_queue", 0.5),
    ("dev_originate_ivr", 0.5), ("inbound_did", 0.5), ("basic_outbound", 0.5), ("busy_and_congestion", 0.5),
    ("no_answer_cancel", 0.5), ("ami_reconnect", 0.25),
)

ID_STRIDE = 10_000  # max copies; ids become N * ID_STRIDE + g
HEX_STRIDE = 0x10000
IAX_STRIDE = 32768
CALLSYS = frozenset(("call", "system"))

_BLOCK_END = re.compile(rb"\r?\n\r?\n")
_HOLES = re.compile(
    rb"(?P<ts>(?<=\nTimestamp: )\d+\.\d+)"
    rb"|(?P<uuid>(?<![0-9A-Za-z-])[0-9a-f]{8}(?=-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?![0-9A-Za-z-])))"
    rb"|(?P<id>(?<![\d.])\d{9,10}\.\d+(?![\d.]))"
    rb"|(?P<iax>(?<=IAX2/)[^\s/;,-]*-\d{1,5}(?![0-9A-Za-z]))"
    rb"|(?P<hex>(?<=[A-Za-z0-9_@.+]-)[0-9a-f]{8}(?![0-9A-Za-z-]))"
)
_TS, _UUID, _ID, _IAX, _HEX = range(5)
_KIND = {"ts": _TS, "uuid": _UUID, "id": _ID, "iax": _IAX, "hex": _HEX}
_FIELD = re.compile(rb"^([A-Za-z0-9-]+): ?(.*?)\r?$", re.M)


@dataclass(slots=True)
class _Template:
    ts: float
    parts: list[bytes]           # literal pieces, len(holes) + 1
    holes: list[tuple[int, bytes]]
    callsys: bool
    event: bytes


@dataclass(slots=True)
class Source:
    name: str
    templates: list[_Template]
    t_first: float
    t_peak: float
    peak_calls: int
    call_deltas: list[tuple[float, int, int]]  # (time, calls delta, channels delta) in recording time
    n_calls: int
    names: dict[str, int] = field(default_factory=dict)  # event name -> count

    def count(self, skip: frozenset[str], callsys_only: bool) -> int:
        """Events left after dropping names in ``skip`` (what the collector's framer delivers)."""
        return sum(1 for t in self.templates
                   if (t.callsys or not callsys_only) and t.event.decode() not in skip)

    @property
    def events(self) -> int:
        return len(self.templates)

    @property
    def callsys_events(self) -> int:
        return sum(1 for t in self.templates if t.callsys)


def _blocks(data: bytes) -> Iterator[bytes]:
    pos, n = 0, len(data)
    while pos < n:
        m = _BLOCK_END.search(data, pos)
        end = m.end() if m else n
        block = data[pos:end].lstrip(b"\r\n")
        pos = end
        if block.strip():
            yield block.rstrip(b"\r\n") + b"\r\n\r\n"


def _fields(block: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for m in _FIELD.finditer(block):
        out.setdefault(m.group(1), m.group(2))
    return out


def _scenario_paths(name: str) -> list[Path]:
    paths = []
    for pat in (f"{name}.ami", f"{name}.ami.gz", f"{name}.part2.ami", f"{name}.part2.ami.gz"):
        paths.extend(sorted(TRACES.glob(pat)))
    if not paths:
        raise FileNotFoundError(f"no trace for {name} in {TRACES}")
    return paths


def load_source(name: str) -> Source:
    data = b"".join(read_trace(p) for p in _scenario_paths(name))
    kept: list[tuple[bytes, dict[bytes, bytes]]] = []
    newchan: dict[bytes, bytes] = {}  # uid -> linkedid
    hung: set[bytes] = set()
    for block in _blocks(data):
        if not block.startswith(b"Event:") or b"\nTimestamp:" not in block:
            continue  # banner, responses, action replies: the recorder's own traffic
        f = _fields(block)
        ev = f.get(b"Event", b"")
        if ev in (b"FullyBooted", b"Shutdown"):
            continue
        if ev == b"Newchannel":
            newchan[f.get(b"Uniqueid", b"")] = f.get(b"Linkedid", b"")
        elif ev == b"Hangup":
            hung.add(f.get(b"Uniqueid", b""))
        kept.append((block, f))
    complete = set(newchan) & hung
    bad_links = {lk for uid, lk in newchan.items() if uid not in complete}
    templates: list[_Template] = []
    live_ch: dict[bytes, bytes] = {}
    live_calls: dict[bytes, int] = {}
    deltas: list[tuple[float, int, int]] = []
    linkedids: set[bytes] = set()
    for block, f in kept:
        uids = [v for k, v in f.items() if k.lower().endswith(b"uniqueid") and v[:1].isdigit() and b"-" not in v]
        links = [v for k, v in f.items() if k.lower().endswith(b"linkedid")]
        if any(u not in complete for u in uids) or any(lk in bad_links for lk in links):
            continue
        ts = float(f[b"Timestamp"])
        ev = f.get(b"Event", b"")
        parts: list[bytes] = []
        holes: list[tuple[int, bytes]] = []
        pos = 0
        for m in _HOLES.finditer(block):
            parts.append(block[pos:m.start()])
            holes.append((_KIND[m.lastgroup or ""], m.group()))
            pos = m.end()
        parts.append(block[pos:])
        classes = {c.strip().lower() for c in f.get(b"Privilege", b"").decode().split(",")} - {"all", ""}
        templates.append(_Template(ts, parts, holes, bool(classes) and classes <= CALLSYS, ev))
        if ev == b"Newchannel":
            uid, lk = f[b"Uniqueid"], f.get(b"Linkedid", b"")
            live_ch[uid] = lk
            linkedids.add(lk)
            n = live_calls.get(lk, 0)
            live_calls[lk] = n + 1
            deltas.append((ts, 1 if n == 0 else 0, 1))
        elif ev == b"Hangup":
            gone = live_ch.pop(f.get(b"Uniqueid", b""), None)
            if gone is not None:
                n = live_calls[gone] - 1
                if n:
                    live_calls[gone] = n
                else:
                    del live_calls[gone]
                deltas.append((ts, -1 if n == 0 else 0, -1))
    if not templates:
        raise ValueError(f"{name}: no event kept")
    peak, t_peak, cur = 0, templates[0].ts, 0
    for t, dc, _ in deltas:
        cur += dc
        if cur > peak:
            peak, t_peak = cur, t
    names: dict[str, int] = {}
    for tpl in templates:
        key = tpl.event.decode()
        names[key] = names.get(key, 0) + 1
    return Source(name, templates, templates[0].ts, t_peak, peak, deltas, len(linkedids), names)


def load_sources(names: Sequence[str]) -> dict[str, Source]:
    return {n: load_source(n) for n in names}


@dataclass(slots=True)
class _Copy:
    source: Source
    g: int
    shift: float


@dataclass(slots=True)
class TraceStats:
    copies: int = 0
    events: int = 0
    callsys_events: int = 0
    calls: int = 0
    peak_calls: int = 0
    peak_channels: int = 0
    t_span: float = 0.0
    raw_bytes: int = 0
    callsys_bytes: int = 0
    per_source: dict[str, int] = field(default_factory=dict)
    channel_marks: dict[int, int] = field(default_factory=dict)
    channel_marks_delivered: dict[int, int] = field(default_factory=dict)


@dataclass(slots=True)
class TracePlan:
    copies: list[_Copy]
    stats: TraceStats


def plan(sources: dict[str, Source], mix: Sequence[tuple[str, float]], min_events: int, min_peak_calls: int,
         jitter: float = 1.5, seed: int = 1, t_peak: float = 1_800_000_000.0) -> TracePlan:
    """Choose how many rounds of ``mix`` (and each copy's time shift) reach both targets."""
    def build(rounds: int) -> TracePlan:
        rng = random.Random(seed)
        copies: list[_Copy] = []
        acc = {name: 0.0 for name, _ in mix}
        g = 0
        for _ in range(rounds):
            for name, weight in mix:
                acc[name] += weight
                while acc[name] >= 1.0 - 1e-9:
                    acc[name] -= 1.0
                    src = sources[name]
                    copies.append(_Copy(src, g, t_peak - src.t_peak + rng.uniform(-jitter, jitter)))
                    g += 1
        if g > ID_STRIDE:
            raise ValueError("too many copies")
        return TracePlan(copies, _stats(copies))

    def ok(tp: TracePlan) -> bool:
        return tp.stats.events >= min_events and tp.stats.peak_calls >= min_peak_calls

    lo, hi = 0, 1
    best = build(hi)
    while not ok(best):  # grow geometrically, then bisect down to the fewest rounds that reach both
        lo, hi = hi, hi * 2
        best = build(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        tp = build(mid)
        if ok(tp):
            hi, best = mid, tp
        else:
            lo = mid
    return best


def calls_up_stream(source: Source, copies: int, jitter: float = 1.5, seed: int = 2,
                    g0: int = 0) -> Iterator[bytes]:
    """``call,system`` events of ``copies`` copies of ``source``, each cut at its busiest moment (so
    ``copies * source.peak_calls`` calls are up at the end), one copy after the other."""
    rng = random.Random(seed)
    for k in range(copies):
        c = _Copy(source, g0 + k, 1_800_000_000.0 - source.t_peak + rng.uniform(-jitter, jitter))
        limit = source.t_peak + c.shift
        for ts, _callsys, _event, block in _render(c, callsys_only=True):
            if ts > limit:
                break
            yield block


def _stats(copies: Sequence[_Copy]) -> TraceStats:
    st = TraceStats(copies=len(copies))
    pts: list[tuple[float, int, int]] = []
    t0, t1 = math.inf, -math.inf
    for c in copies:
        s = c.source
        st.events += s.events
        st.callsys_events += s.callsys_events
        st.calls += s.n_calls
        st.per_source[s.name] = st.per_source.get(s.name, 0) + 1
        pts.extend((t + c.shift, dc, dch) for t, dc, dch in s.call_deltas)
        t0 = min(t0, s.templates[0].ts + c.shift)
        t1 = max(t1, s.templates[-1].ts + c.shift)
    pts.sort(key=lambda p: (p[0], p[1]))  # at equal times count the hangup first (conservative)
    calls = chans = 0
    for _, dc, dch in pts:
        calls += dc
        chans += dch
        st.peak_calls = max(st.peak_calls, calls)
        st.peak_channels = max(st.peak_channels, chans)
    st.t_span = t1 - t0
    return st


def _render(c: _Copy, callsys_only: bool = False) -> Iterator[tuple[float, bool, bytes, bytes]]:
    g, shift = c.g, c.shift
    eshift = round(shift)
    ids: dict[bytes, bytes] = {}
    other: dict[bytes, bytes] = {}
    gb = b"%08x" % g
    for t in c.source.templates:
        if callsys_only and not t.callsys:
            continue
        ts = t.ts + shift
        out = [t.parts[0]]
        for (kind, val), lit in zip(t.holes, t.parts[1:], strict=False):
            if kind == _TS:
                out.append(b"%.6f" % ts)
            elif kind == _ID:
                new = ids.get(val)
                if new is None:
                    e, _, n = val.partition(b".")
                    new = ids[val] = b"%d.%d" % (int(e) + eshift, int(n) * ID_STRIDE + g)
                out.append(new)
            elif kind == _UUID:
                out.append(gb)
            else:
                new = other.get(val)
                if new is None:
                    if kind == _HEX:
                        v = int(val, 16)
                        if v >= HEX_STRIDE:
                            raise ValueError(f"channel counter {val!r} too large")
                        new = b"%08x" % (v + g * HEX_STRIDE)
                    else:  # IAX2 peer-callno
                        peer, _, num = val.rpartition(b"-")
                        new = peer + b"-%d" % (int(num) + g * IAX_STRIDE)
                    other[val] = new
                out.append(new)
            out.append(lit)
        yield ts, t.callsys, t.event, b"".join(out)


def write_trace(tp: TracePlan, raw_path: Path, callsys_path: Path, gz: bool = False,
                channel_marks: Sequence[int] = (), skip: Iterable[str] = ()) -> TraceStats:
    """Render and merge every copy; write the raw stream and the ``call,system`` stream (no banner: the replay
    server adds its own, and the in-process measurements feed events only).

    ``channel_marks``: for each N, ``stats.channel_marks[N]`` = how many ``call,system`` events have been sent
    when N channels are up for the first time (where to park a replay to resync N channels), and
    ``stats.channel_marks_delivered[N]`` how many of those are not named in ``skip`` (what a collector whose
    framer drops ``skip`` has received by then)."""
    skip_b = {name.encode() for name in skip}
    opener = gzip.open if gz else open
    st = tp.stats
    st.raw_bytes = st.callsys_bytes = 0
    marks = sorted(channel_marks)
    n = n_cs = n_cs_delivered = up = 0
    with opener(raw_path, "wb") as raw_f, opener(callsys_path, "wb") as cs_f:
        buf_raw: list[bytes] = []
        buf_cs: list[bytes] = []
        for _ts, callsys, event, block in heapq.merge(*(_render(c) for c in tp.copies), key=lambda x: x[0]):
            buf_raw.append(block)
            if callsys:
                buf_cs.append(block)
                n_cs += 1
                if event not in skip_b:
                    n_cs_delivered += 1
                if event == b"Newchannel":
                    up += 1
                    while marks and up >= marks[0]:
                        st.channel_marks_delivered[marks[0]] = n_cs_delivered
                        st.channel_marks[marks.pop(0)] = n_cs
                elif event == b"Hangup":
                    up -= 1
            n += 1
            if len(buf_raw) >= 8192:
                data = b"".join(buf_raw)
                raw_f.write(data)
                st.raw_bytes += len(data)
                data = b"".join(buf_cs)
                cs_f.write(data)
                st.callsys_bytes += len(data)
                buf_raw, buf_cs = [], []
        data = b"".join(buf_raw)
        raw_f.write(data)
        st.raw_bytes += len(data)
        data = b"".join(buf_cs)
        cs_f.write(data)
        st.callsys_bytes += len(data)
    assert n == st.events, (n, st.events)
    return st
