"""Ingest benchmark: how many AMI events per second the collector takes in, and what it costs.

    .venv/bin/python -m bench.ingest            # full: ≥ 1,000,000 events, ≥ 10,000 calls up at the peak (~5 min)
    .venv/bin/python -m bench.ingest --quick    # small sizes, < 60 s
    options: --keep DIR (keep the generated trace there), --json FILE (all figures), --profile (cProfile of (b)),
             --only a,b,c,blast,chunk,nodurable,paced,memory,resync (run a subset)

One trace is generated (bench/_tracegen.py: the bundled real recordings cloned with fresh ids, names and shifted
times, merged by Timestamp) into a temporary directory, as two byte streams: *raw* (everything an ``Events: on``
login receives) and *call,system* (what an ``Events: call,system`` login receives). Every figure below is measured
on those same bytes, each in a fresh worker process (so one measurement's heap cannot slow the next):

(a) panoramisk alone: stock ``panoramisk.ami_protocol.AMIProtocol.data_received`` fed 64 KiB chunks in-process,
    no-op dispatch: the parsing floor any panoramisk-based collector pays.
(b) tracker alone: ``AmiFramer`` (the session's NOISE_EVENTS skip list, SESSION_KEYS | TRACKER_KEYS projection) →
    ``CallTracker.apply_many`` (→ LiveTable), in-process, 64 KiB chunks; each stage reported on its own.
(c) full path: ``collector.tools.replay.ReplayServer`` in fast mode (its own process) → TCP 127.0.0.1 → ``AmiSession``
    (panoramisk Manager + FramedAMIProtocol) → tracker → LiveTable, with the durable table flushing every second
    (SQLite in the temp dir), like the daemon. Rates use the collector process's own CPU time ("per core") and wall
    time; when the replay server (one core, Python) cannot send faster than the collector reads, the wall rate is
    the server's, so (c') repeats the run with a minimal "blast" AMI server that writes the pre-rendered bytes.
On call,system, (a), (c) and (c') then run again in paired rounds (back to back, the order reversed every other
round); the (c)/(a) and (c')/(a) targets use the median of the rounds' own ratios, which a drift of the shared
machine's speed between two runs minutes apart does not skew. The throughput runs carry no API-like probe.
Every worker runs with the daemon's GC thresholds (``collector.service.daemon.tune_gc``), (a) included.
Events/s always counts *wire* events (every event the server sent to that login, including those the framer drops
by prefix), so (a), (b) and (c) divide the same numerator.

Also: collector peak RSS; memory per active call at 10,000 and 50,000 concurrent calls (tracemalloc and RSS
deltas); resync of a server with 10,000 channels (CoreShowChannels list applied in-process, and over TCP against
the parked replay server, warm and cold); arrival → API visibility latency (p50/p99: time from the start of the
``data_received`` that completed an event to a ``LiveTable.rows()`` call that sees it, sampled every 20 ms, in the
paced run and the 1 MiB-read variant).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import math
import operator
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypedDict

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHUNK = 65536
PACED_SPEED = 1.0  # x the merged trace's own rate for the "paced" run (1.0: 20-29k call,system ev/s at the peak)
PACED_WARMUP = 2.0  # seconds after the switch to timed mode before measuring (the fast part's backlog drains)
PROBE_EVERY = 0.02  # seconds between two LiveTable.rows() probes (each rebuilds the tuple of every row)
RESULT = "RESULT "


class Size(TypedDict):
    """One run's sizes (FULL or QUICK)."""

    min_events: int
    min_peak_calls: int
    memory_calls: tuple[int, ...]
    tracemalloc_calls: tuple[int, ...]
    resync_channels: int
    repeat: int
    paced_seconds: int
    rounds: int


FULL = Size(min_events=1_000_000, min_peak_calls=10_300, memory_calls=(10_000, 50_000), tracemalloc_calls=(10_000,),
            resync_channels=10_000, repeat=1, paced_seconds=20, rounds=5)
QUICK = Size(min_events=50_000, min_peak_calls=400, memory_calls=(1_000, 5_000), tracemalloc_calls=(1_000,),
             resync_channels=800, repeat=2, paced_seconds=5, rounds=3)


# --------------------------------------------------------------------------------------------- small helpers

def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss() -> int:
    """Peak RSS of this process image (VmHWM: ru_maxrss would report the orchestrator's peak, which Linux
    carries across fork + exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _chunks(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def _percentile(samples: list[tuple[float, int]], q: float) -> float:
    """Weighted percentile of (value, weight) samples."""
    if not samples:
        return float("nan")
    samples = sorted(samples)
    total = sum(w for _, w in samples)
    target = q * total
    acc = 0
    for v, w in samples:
        acc += w
        if acc >= target:
            return v
    return samples[-1][0]


def _emit(result: dict[str, Any]) -> None:
    print(RESULT + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------- (a) panoramisk

def worker_panoramisk(a: dict[str, Any]) -> dict[str, Any]:
    from panoramisk.ami_protocol import AMIProtocol

    data = Path(a["path"]).read_bytes()
    chunks = _chunks(data)
    del data

    class _Factory:
        save_stream = None
        dispatched = 0

        def dispatch(self, message: Any) -> None:
            self.dispatched += 1

        def connection_lost(self, exc: Any) -> None:
            pass

    class _Transport:
        def write(self, data: bytes) -> None:
            pass

        def close(self) -> None:
            pass

    best = {"cpu": math.inf, "wall": math.inf}
    for _ in range(int(a.get("repeat", 1))):
        proto = AMIProtocol()
        proto.connection_made(_Transport())
        factory = proto.factory = _Factory()
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        for chunk in chunks:
            proto.data_received(chunk)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        best = {"cpu": min(cpu, best["cpu"]), "wall": min(wall, best["wall"])}
    return {**best, "dispatched": factory.dispatched, "maxrss": _maxrss()}


# --------------------------------------------------------------------------------------------- (b) tracker

def worker_tracker(a: dict[str, Any]) -> dict[str, Any]:
    from collector.ami.framing import AmiFramer
    from collector.ami.session import NOISE_EVENTS, SESSION_KEYS
    from collector.live.table import LiveTable
    from collector.tracking.tracker import TRACKER_KEYS, CallTracker

    data = Path(a["path"]).read_bytes()
    chunks = _chunks(data)
    del data
    out: dict[str, Any] = {}

    # as the AMI session drives them: the session's skip list and key projection, one apply_many per chunk
    def framer_only() -> dict[str, Any]:
        fr = AmiFramer(NOISE_EVENTS, SESSION_KEYS | TRACKER_KEYS)
        n = 0
        for chunk in chunks:
            n += len(fr.feed(chunk))
        return {"messages": n, "skipped": fr.stats.skipped}

    def with_tracker() -> dict[str, Any]:
        fr = AmiFramer(NOISE_EVENTS, SESSION_KEYS | TRACKER_KEYS)
        trk = CallTracker()
        apply_many = trk.apply_many
        changes = 0
        for chunk in chunks:
            changes += len(apply_many(1, fr.feed(chunk)))
        return {"changes": changes, "errors": trk.stats(1).errors}

    def with_live() -> dict[str, Any]:
        fr = AmiFramer(NOISE_EVENTS, SESSION_KEYS | TRACKER_KEYS)
        trk = CallTracker()
        live = LiveTable()
        apply_many = trk.apply_many
        peak = 0
        for chunk in chunks:
            changes = apply_many(1, fr.feed(chunk))
            if changes:
                live.apply(changes)
                if len(live) > peak:
                    peak = len(live)
        return {"peak_calls": peak, "final_calls": len(live), "errors": trk.stats(1).errors}

    stages = {"framer": framer_only, "tracker": with_tracker, "live": with_live}
    for _ in range(int(a.get("repeat", 1))):  # best of N (the CPU time of the fastest run of each stage)
        for name in a.get("stages", list(stages)):
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            info = stages[name]()
            info.update(cpu=time.process_time() - c0, wall=time.perf_counter() - t0)
            if name not in out or info["cpu"] < out[name]["cpu"]:
                out[name] = info
    if a.get("profile"):
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        with_live()
        prof.disable()
        buf = io.StringIO()
        st = pstats.Stats(prof, stream=buf)
        st.sort_stats("tottime").print_stats(25)
        out["profile_tottime"] = buf.getvalue()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(30)
        out["profile_cumulative"] = buf.getvalue()
    out["maxrss"] = _maxrss()
    return out


# --------------------------------------------------------------------------------------------- AMI servers

def _stop_server(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def serve_replay(a: dict[str, Any]) -> None:
    """collector.tools.replay.ReplayServer in fast mode; optionally parked after ``hold_after`` events."""
    import logging
    from dataclasses import replace

    from collector.tools.replay import ReplayOptions, ReplayServer

    logging.basicConfig(level=logging.WARNING)
    speed = float(a.get("speed", 0))
    server = ReplayServer([a["path"]], host="127.0.0.1", port=0,
                          options=ReplayOptions(fast=not speed, speed=speed or 1.0, write_timeout=120.0))
    if a.get("hold_after"):
        server.hold(after_events=int(a["hold_after"]))
    port = await server.start()
    print(f"PORT {port}", flush=True)
    if a.get("switch_after"):  # fast up to the busy part of the trace, then timed at ``speed``
        async def switch() -> None:
            await server.wait_events_sent(int(a["switch_after"]))
            server.options = replace(server.options, speed=float(a["paced_speed"]), fast=False)
        asyncio.get_running_loop().create_task(switch())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.close()


async def serve_blast(a: dict[str, Any]) -> None:
    """A minimal AMI peer that writes the pre-rendered trace as fast as the client reads (chunks end on block
    boundaries so action replies interleave cleanly). Answers Login (+ FullyBooted), CoreShowChannels (empty
    list, before the stream starts: a login resync then sweeps nothing), Ping, Logoff."""
    from collector.ami.framing import parse_action

    data = Path(a["path"]).read_bytes()
    view = memoryview(data)
    bounds = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos + 262144)
        end = len(data) if end < 0 else end + 4
        bounds.append((pos, end))
        pos = end

    async def stream(writer: asyncio.StreamWriter) -> None:
        for lo, hi in bounds:
            writer.write(view[lo:hi])
            await writer.drain()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        buf = b""
        streamer: asyncio.Task[None] | None = None
        try:
            while True:
                got = await reader.read(65536)
                if not got:
                    break
                buf += got.replace(b"\r", b"")
                while b"\n\n" in buf:
                    block, buf = buf.split(b"\n\n", 1)
                    hdr = parse_action(block, errors="strict", first_wins=False, bare_lines=True)
                    action = hdr.get("action", "").lower()
                    aid = f"ActionID: {hdr['actionid']}\r\n" if "actionid" in hdr else ""
                    if action == "login":
                        writer.write(f"Response: Success\r\n{aid}Message: Authentication accepted\r\n\r\n".encode())
                        mask = hdr.get("events", "on").lower()
                        if mask in ("on", "all") or "system" in mask:
                            writer.write(b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 10\r\n"
                                         b"LastReload: 10\r\nStatus: Fully Booted\r\n\r\n")
                        asyncio.get_running_loop().call_later(
                            3.0, lambda: None if streamer else start())  # no resync asked: stream anyway

                        def start() -> None:
                            nonlocal streamer
                            if streamer is None:
                                streamer = asyncio.create_task(stream(writer))
                    elif action == "coreshowchannels":
                        writer.write(f"Response: Success\r\n{aid}EventList: start\r\nMessage: Channels will follow"
                                     f"\r\n\r\nEvent: CoreShowChannelsComplete\r\n{aid}EventList: Complete\r\n"
                                     f"ListItems: 0\r\n\r\n".encode())
                        start()
                    elif action == "ping":
                        writer.write(f"Response: Success\r\n{aid}Ping: Pong\r\nTimestamp: {time.time():.6f}\r\n\r\n"
                                     .encode())
                    elif action == "logoff":
                        writer.write(f"Response: Goodbye\r\n{aid}Message: Thanks for all the fish.\r\n\r\n".encode())
                        await writer.drain()
                        writer.close()
                        return
                    else:
                        writer.write(f"Response: Success\r\n{aid}\r\n".encode())
        except (ConnectionError, OSError):
            pass
        finally:
            if streamer is not None:
                streamer.cancel()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


# --------------------------------------------------------------------------------------------- (c) full path

def _session(port: int, events: str, sink: Any, name: str = "bench", reader: Any = None) -> Any:
    """The session as the daemon builds it (handed the tracker's events and keys), plus ``reader``."""
    from collector.ami.session import AmiSession
    from collector.ami.settings import AmiServerSettings, CollectorSettings, Secret
    from collector.tracking.tracker import TRACKED_EVENTS, TRACKER_KEYS

    cfg = AmiServerSettings(name=name, host="127.0.0.1", port=port, username="bench", secret=Secret("bench"),
                            server_id=1, events=events)
    settings = CollectorSettings(reconcile_interval=1e9, resync_timeout=120.0, ping_timeout=30.0)
    return AmiSession(cfg, settings, sink, events=TRACKED_EVENTS, keys=TRACKER_KEYS, reader=reader)


async def worker_collector(a: dict[str, Any]) -> dict[str, Any]:
    import logging

    from collector.ami.protocol import READ_MAX, READ_MIN, ReaderOptions
    from collector.live.durable import DurableTable
    from collector.live.table import LiveTable
    from collector.tracking.tracker import CallTracker

    logging.basicConfig(level=logging.WARNING)
    loop = asyncio.get_running_loop()
    tracker = CallTracker()
    live = LiveTable()
    durable = DurableTable(Path(a["db"]), live) if a.get("db") else None
    expected = int(a["expected"])
    st: dict[str, Any] = {"n": 0, "peak": 0, "t_first": None, "t_last": None, "next_probe": 0.0}
    done = asyncio.Event()
    apply_many = tracker.apply_many
    live_apply = live.apply

    measure_after = int(a.get("measure_after", 0))  # events before the measured window (paced run: the ramp-up)
    warmup = float(a.get("warmup", 0))
    st["warm"], st["n_first"] = False, 0
    started = asyncio.Event()

    e2e_speed = float(a.get("e2e_speed", 0))  # timed replay: the event's Timestamp says when it was sent
    chunk_ts: list[float] = []
    e2e: list[float] = []

    def restart_window(n_before: int) -> None:
        st["t_first"], st["c_first"] = time.perf_counter(), time.process_time()
        st["n_first"] = n_before
        proc_samples.clear()
        probe_samples.clear()
        e2e.clear()

    def sink(server_id: int, msgs: list[dict[str, str]]) -> None:
        """The session's batch sink (one list per read slice); events are counted by their Timestamp."""
        timed = sum(map(operator.contains, msgs, itertools.repeat("Timestamp")))
        if timed:
            if e2e_speed:
                chunk_ts.extend(float(m["Timestamp"]) for m in msgs if "Timestamp" in m)
            n0 = st["n"]
            n = st["n"] = n0 + timed
            if n0 <= measure_after < n:
                restart_window(n0)
                started.set()
            elif (warmup and st["t_first"] is not None and not st["warm"]
                  and time.perf_counter() > st["t_first"] + warmup):
                st["warm"] = True  # the measured window starts again here
                restart_window(n0)
        changes = apply_many(server_id, msgs)
        if changes:
            live_apply(changes)
            if len(live) > st["peak"]:
                st["peak"] = len(live)
        if timed and st["n"] >= expected and not done.is_set():
            st["t_last"], st["c_last"] = time.perf_counter(), time.process_time()
            done.set()

    # arrival → visibility: every read is timed (the protocol's read probe); every ≥ 5 ms a probe scheduled right
    # behind it reads LiveTable.rows() as an API request would, and all events completed by that chunk share its
    # latency
    proc_samples: list[tuple[float, int]] = []
    probe_samples: list[tuple[float, int]] = []
    st["n_read"] = 0  # st["n"] when the previous read ended

    def probe(t0: float, n: int) -> None:
        live.rows()
        probe_samples.append((time.perf_counter() - t0, n))

    def read_done(t0: float, t1: float) -> None:
        n = st["n"] - st["n_read"]
        st["n_read"] = st["n"]
        if chunk_ts:
            now = time.time()
            e2e.extend(now - ts / e2e_speed for ts in chunk_ts)
            chunk_ts.clear()
        if n:
            proc_samples.append((t1 - t0, n))
            if t1 >= st["next_probe"]:
                st["next_probe"] = t1 + PROBE_EVERY
                loop.call_soon(probe, t0, n)

    read_min, read_max = READ_MIN, READ_MAX
    if a.get("read_chunk"):  # a fixed read size instead of the protocol's adaptive READ_MIN…READ_MAX
        read_min = read_max = int(a["read_chunk"])
    reader = ReaderOptions(read_min, read_max, read_done if a.get("probe", True) else None)
    session = _session(int(a["port"]), a["events"], sink, reader=reader)
    flusher = asyncio.create_task(durable.run(1.0)) if durable is not None else None
    t_start = time.perf_counter()
    await session.start()
    try:
        await asyncio.wait_for(started.wait(), float(a.get("timeout", 600)))
        await asyncio.wait_for(done.wait(), float(a.get("max_seconds") or a.get("timeout", 600)))
    except TimeoutError:
        pass
    t_end = time.perf_counter()
    stats = tracker.stats(1)
    result: dict[str, Any] = {
        "received": st["n"], "measured": st["n"] - st["n_first"], "expected": expected, "complete": done.is_set(),
        "wall": (st["t_last"] or t_end) - (st["t_first"] or t_start),
        "cpu": (st.get("c_last") or time.process_time()) - (st.get("c_first") or 0.0),
        "peak_calls": st["peak"], "calls_at_end": len(live),
        "tracker_errors": stats.errors, "tracker_events": stats.events,
        "bytes": session.status.bytes, "maxrss": _maxrss(),
        "latency_p50": _percentile(probe_samples, 0.50), "latency_p99": _percentile(probe_samples, 0.99),
        "latency_max": max((v for v, _ in probe_samples), default=float("nan")), "probes": len(probe_samples),
        "chunk_p50": _percentile(proc_samples, 0.50), "chunk_p99": _percentile(proc_samples, 0.99),
        "chunks": len(proc_samples), "events_per_chunk": st["n"] / max(1, len(proc_samples)),
        "read_chunk": a.get("read_chunk") or "adaptive",
        "window_wall": (st["t_last"] or t_end) - (st["t_first"] or t_start),
    }
    if e2e:
        # the replay sends an event at anchor + Timestamp / speed; the anchor is unknown, so the smallest observed
        # (wall - Timestamp / speed) is taken as a zero delay: latencies are relative to the fastest event
        floor = min(e2e)
        lat = sorted(x - floor for x in e2e)
        result.update(e2e_p50=lat[len(lat) // 2], e2e_p99=lat[int(len(lat) * 0.99)], e2e_max=lat[-1],
                      e2e_events=len(lat))
    if flusher is not None:
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
    await session.stop()
    if durable is not None:
        c0 = time.process_time()
        durable.flush_sync()
        result.update(flushes=durable.flushes, rows_written=durable.rows_written,
                      final_flush_cpu=time.process_time() - c0)
        durable.close()
    return result


# --------------------------------------------------------------------------------------------- resync

def _list_bytes(msgs: list[dict[str, str]]) -> bytes:
    return b"".join("".join(f"{k}: {v}\r\n" for k, v in m.items()).encode() + b"\r\n" for m in msgs)


async def worker_resync(a: dict[str, Any]) -> dict[str, Any]:
    """The replay server is parked once ``hold`` events are out (``channels`` channels up). Session A has seen
    them all and resyncs (warm: a periodic reconcile); session B logs in then (cold: every channel is new)."""
    import logging

    from collector.ami.framing import AmiFramer
    from collector.tracking.tracker import CallTracker

    logging.basicConfig(level=logging.WARNING)
    hold = int(a["delivered"])  # events the framer passes on before the server parks
    out: dict[str, Any] = {}
    trk_a, trk_b = CallTracker(), CallTracker()
    seen = {"a": 0}
    ready = asyncio.Event()
    captured: list[dict[str, str]] = []
    spent = {"a": 0.0, "b": 0.0}

    def sink_a(server_id: int, msgs: list[dict[str, str]]) -> None:
        for msg in msgs:
            if "Timestamp" in msg:
                seen["a"] += 1
                if seen["a"] >= hold:
                    ready.set()
            aid = msg.get("ActionID", "")
            if aid.startswith("resync-") and seen["a"] >= hold:
                captured.append(dict(msg))
                t0 = time.perf_counter()
                trk_a.apply(server_id, msg)
                spent["a"] += time.perf_counter() - t0
            else:
                trk_a.apply(server_id, msg)

    def sink_b(server_id: int, msgs: list[dict[str, str]]) -> None:
        t0 = time.perf_counter()
        trk_b.apply_many(server_id, msgs)
        spent["b"] += time.perf_counter() - t0

    sa = _session(int(a["port"]), a["events"], sink_a, "resync-a")
    await sa.start()
    await asyncio.wait_for(ready.wait(), 120)
    await asyncio.sleep(0.3)  # the login resync is long done; the server is parked
    t0 = time.perf_counter()
    items = await sa.resync(timeout=120)
    out["tcp_warm_wall"] = time.perf_counter() - t0
    out["tcp_warm_tracker"] = spent["a"]
    out["channels"] = items
    out["calls_a"] = len(trk_a.calls(1))

    sb = _session(int(a["port"]), a["events"], sink_b, "resync-b")
    t0 = time.perf_counter()
    await sb.start()
    while sb.status.resyncs < 1:
        await asyncio.sleep(0.005)
    out["tcp_cold_wall"] = sb.status.last_resync_seconds
    out["tcp_cold_login_to_done"] = time.perf_counter() - t0
    out["tcp_cold_tracker"] = spent["b"]
    out["calls_b"] = len(trk_b.calls(1))
    await sa.stop()
    await sb.stop()

    # in-process: the captured list (Response + items + Complete) applied to a fresh tracker (cold) and again to
    # the tracker that knows every channel (warm), then framed from bytes + applied (cold)
    def relabel(aid: str) -> list[dict[str, str]]:
        return [{**m, "ActionID": aid} for m in captured]

    cold = relabel("cold-1")
    fresh = CallTracker()
    gc.collect()
    c0 = time.perf_counter()
    for m in cold:
        fresh.apply(1, m)
    out["inproc_cold"] = time.perf_counter() - c0
    warm = relabel("warm-1")
    c0 = time.perf_counter()
    for m in warm:
        trk_a.apply(1, m)
    out["inproc_warm"] = time.perf_counter() - c0
    data = _list_bytes(relabel("bytes-1"))
    fr, fresh2 = AmiFramer(), CallTracker()
    c0 = time.perf_counter()
    for chunk in _chunks(data):
        for m in fr.feed(chunk):
            fresh2.apply(1, m)
    out["inproc_cold_bytes"] = time.perf_counter() - c0
    out["list_items"] = sum(1 for m in captured if m.get("Event") == "CoreShowChannel")
    out["calls_fresh"] = len(fresh.calls(1))
    return out


# --------------------------------------------------------------------------------------------- memory

def worker_memory(a: dict[str, Any]) -> dict[str, Any]:
    """Feed a stream that leaves N calls up (bench/_tracegen.calls_up_stream, written to a file beforehand so
    this process allocates nothing else), then count what the tracker + LiveTable hold."""
    import tracemalloc

    from collector.ami.framing import AmiFramer
    from collector.ami.session import NOISE_EVENTS
    from collector.live.table import LiveTable
    from collector.tracking.tracker import CallTracker

    use_tm = bool(a.get("tracemalloc"))
    fr, trk, live = AmiFramer(NOISE_EVENTS), CallTracker(), LiveTable()
    gc.collect()
    rss0 = _rss()
    if use_tm:
        tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0] if use_tm else 0
    with open(a["path"], "rb") as f:
        while True:
            data = f.read(CHUNK)
            if not data:
                break
            for msg in fr.feed(data):
                changes = trk.apply(1, msg)
                if changes:
                    live.apply(changes)
    live.dirty.clear()  # as after a durable flush
    fr = AmiFramer()
    gc.collect()
    out: dict[str, Any] = {"calls": len(live), "legs": sum(len(r.call.legs) for r in live.rows())}
    live._snapshot = None  # noqa: SLF001 (drop the tuple rows() built for the count above)
    srv = trk._servers[1]  # noqa: SLF001 (bench introspection)
    out["channels"] = len(srv.channels)
    out["tombstones"] = len(srv.tombstones)
    out["bridges"] = len(srv.bridges)
    if use_tm:
        out["traced"] = tracemalloc.get_traced_memory()[0] - base
        top = tracemalloc.take_snapshot().statistics("lineno")[:12]
        out["top"] = [f"{st.size / max(1, len(live)):7.0f} B/call  {st.traceback[0].filename.split('/')[-1]}:"
                      f"{st.traceback[0].lineno}" for st in top]
        del live
        gc.collect()
        out["traced_tracker_only"] = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
    else:
        out["rss_delta"] = _rss() - rss0
    out["maxrss"] = _maxrss()
    return out


# --------------------------------------------------------------------------------------------- orchestration

def _run_worker(name: str, args: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "bench.ingest", "--worker", name, "--args", json.dumps(args)],
                          cwd=ROOT, stdout=subprocess.PIPE, text=True, timeout=timeout)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT):
            result: dict[str, Any] = json.loads(line[len(RESULT):])
            return result
    raise RuntimeError(f"worker {name} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}")


def _fmt_rate(events: int, seconds: float) -> str:
    return f"{events / seconds:,.0f}" if seconds > 0 else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (< 60 s)")
    ap.add_argument("--keep", metavar="DIR", help="write the generated trace to DIR and keep it")
    ap.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of (b) on the call,system stream")
    ap.add_argument("--only", default="a,b,c,blast,chunk,nodurable,paced,memory,resync", help="comma list of phases")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--args", default="{}", help=argparse.SUPPRESS)
    ns = ap.parse_args(argv)
    if ns.serve:
        serve = {"replay": serve_replay, "blast": serve_blast}[ns.serve]
        asyncio.run(serve(json.loads(ns.args)))
        return 0
    if ns.worker:
        from collector.service.daemon import tune_gc
        tune_gc()  # every worker, (a) included, runs with the daemon's GC thresholds
        args = json.loads(ns.args)
        sync_workers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "panoramisk": worker_panoramisk, "tracker": worker_tracker, "memory": worker_memory}
        async_workers: dict[str, Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]] = {
            "collector": worker_collector, "resync": worker_resync}
        if ns.worker in async_workers:
            res = asyncio.run(async_workers[ns.worker](args))
        else:
            res = sync_workers[ns.worker](args)
        _emit(res)
        return 0
    return orchestrate(ns)


def orchestrate(ns: argparse.Namespace) -> int:
    from bench import _tracegen as tg
    from collector.ami.session import NOISE_EVENTS

    size = QUICK if ns.quick else FULL
    phases = set(ns.only.split(","))
    t_begin = time.perf_counter()
    workdir = Path(ns.keep) if ns.keep else Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"mode": "quick" if ns.quick else "full", "python": sys.version.split()[0],
                           "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}
    try:
        # ---- trace
        t0 = time.perf_counter()
        sources = tg.load_sources([n for n, _ in tg.DEFAULT_MIX])
        tp = tg.plan(sources, tg.DEFAULT_MIX, size["min_events"], size["min_peak_calls"])
        raw_path, cs_path = workdir / "raw.ami", workdir / "callsys.ami"
        st = tg.write_trace(tp, raw_path, cs_path, channel_marks=(size["resync_channels"],), skip=NOISE_EVENTS)
        noise = frozenset(NOISE_EVENTS)
        delivered = {"raw": sum(c.source.count(noise, False) for c in tp.copies),
                     "callsys": sum(c.source.count(noise, True) for c in tp.copies)}
        wire = {"raw": st.events, "callsys": st.callsys_events}
        paths = {"raw": raw_path, "callsys": cs_path}
        res["trace"] = {"copies": st.copies, "events": st.events, "callsys_events": st.callsys_events,
                        "delivered_after_skip": delivered, "calls": st.calls, "peak_calls_planned": st.peak_calls,
                        "peak_channels": st.peak_channels, "span_s": st.t_span, "raw_bytes": st.raw_bytes,
                        "callsys_bytes": st.callsys_bytes, "per_source": st.per_source,
                        "gen_seconds": time.perf_counter() - t0, "dir": str(workdir)}
        print(f"trace: {st.events:,} events ({st.raw_bytes / 2**20:,.0f} MiB), call,system {st.callsys_events:,} "
              f"({st.callsys_bytes / 2**20:,.0f} MiB); {st.copies} copies of {len(st.per_source)} recordings; "
              f"{st.calls:,} calls, peak {st.peak_calls:,} calls / {st.peak_channels:,} channels up; "
              f"generated in {time.perf_counter() - t0:.1f} s into {workdir}", flush=True)

        # ---- (a) panoramisk, (b) tracker
        for stream in ("raw", "callsys"):
            if "a" in phases:
                r = _run_worker("panoramisk", {"path": str(paths[stream]), "repeat": size["repeat"]})
                res[f"a_{stream}"] = r
                print(f"(a) panoramisk {stream}: {_fmt_rate(wire[stream], r['cpu'])} ev/s cpu", flush=True)
            if "b" in phases:
                r = _run_worker("tracker", {"path": str(paths[stream]), "repeat": size["repeat"],
                                            "profile": bool(ns.profile and stream == "callsys")})
                res[f"b_{stream}"] = r
                if "profile_tottime" in r:
                    print(r["profile_tottime"])
                    print(r["profile_cumulative"])
                print(f"(b) tracker {stream}: framer {_fmt_rate(wire[stream], r['framer']['cpu'])}, "
                      f"+tracker {_fmt_rate(wire[stream], r['tracker']['cpu'])}, "
                      f"+live {_fmt_rate(wire[stream], r['live']['cpu'])} ev/s cpu; peak calls "
                      f"{r['live']['peak_calls']:,}", flush=True)

        # ---- memory (in parallel with the replay server loading the trace: memory figures do not care)
        server = None
        if "c" in phases:
            server = _start_server_async("replay", {"path": str(raw_path)})
        if "memory" in phases:
            src = sources["concurrent_load"]
            for n in size["memory_calls"]:
                copies = math.ceil(n / src.peak_calls)
                mem_path = workdir / f"calls-up-{n}.ami"
                with open(mem_path, "wb") as f:
                    for block in tg.calls_up_stream(src, copies, g0=tp.stats.copies):
                        f.write(block)
                r = _run_worker("memory", {"path": str(mem_path), "tracemalloc": False})
                if n in size["tracemalloc_calls"]:  # tracemalloc triples the run time: not at 50,000
                    tm = _run_worker("memory", {"path": str(mem_path), "tracemalloc": True})
                    r.update({k: tm[k] for k in ("traced", "traced_tracker_only", "top")})
                mem_path.unlink()
                res[f"memory_{n}"] = r
                traced = f"{r['traced'] / r['calls']:,.0f} B/call traced, " if "traced" in r else ""
                print(f"memory {n:,}: {r['calls']:,} calls up, {traced}{r['rss_delta'] / r['calls']:,.0f} B/call RSS",
                      flush=True)

        # ---- (c) full path through the replay server, then through the blast server
        def full_run(kind: str, stream: str, srv: Any = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
            if srv is None:
                srv = _start_server_async(kind, {"path": str(paths[stream])})
            proc, port = srv.result()
            cpu0 = _proc_cpu(proc.pid)
            try:
                r = _run_worker("collector", {"port": port, "events": "on" if stream == "raw" else "call,system",
                                              "expected": delivered[stream], **(extra or {})})
                r["server_cpu"] = _proc_cpu(proc.pid) - cpu0
            finally:
                _stop_server(proc)
            return r

        for kind in ("c", "blast"):
            if kind not in phases:
                continue
            srv_kind = "replay" if kind == "c" else "blast"
            for stream in ("raw", "callsys"):
                srv = server if (kind == "c" and stream == "raw") else None
                # like the daemon: the durable table (SQLite) flushing every second; no rows() probe (a
                # throughput run carries no API load: latency comes from the paced run and the 1 MiB variant)
                r = full_run(srv_kind, stream, srv, {"db": str(workdir / f"activecalls-{kind}-{stream}.db"),
                                                     "probe": False})
                res[f"{kind}_{stream}"] = r
                label = "(c)" if kind == "c" else "(c')"
                print(f"{label} {srv_kind} {stream}: {r['received']:,}/{r['expected']:,} "
                      f"events, {_fmt_rate(wire[stream], r['cpu'])} ev/s cpu, {_fmt_rate(wire[stream], r['wall'])} "
                      f"ev/s wall, server cpu {r['server_cpu']:.1f} s / wall {r['wall']:.1f} s; peak RSS "
                      f"{r['maxrss'] / 2**20:,.0f} MiB", flush=True)
        # call,system again in paired rounds: (a), (c) and (c') back to back, the order reversed every other
        # round so that a steady drift of the machine's speed favours none of them. On a shared VM that speed
        # moves by ±25 % within minutes, and a ratio of two runs minutes apart (the best (a) against the best
        # (c)) inherits it; a round's own ratio compares runs seconds apart, and the target uses their median.
        per_round: list[dict[str, float]] = []
        for rnd in range(1, size["rounds"] + 1):
            cpus = {}
            for kind in ("a", "c", "blast") if rnd % 2 else ("blast", "c", "a"):
                if kind not in phases:
                    continue
                key = f"{kind}_callsys"
                if kind == "a":
                    r = _run_worker("panoramisk", {"path": str(cs_path)})
                else:
                    r = full_run("replay" if kind == "c" else "blast", "callsys", None,
                                 {"db": str(workdir / f"activecalls-{kind}-callsys-{rnd}.db"), "probe": False})
                print(f"round {rnd} {key}: {_fmt_rate(wire['callsys'], r['cpu'])} ev/s cpu", flush=True)
                cpus[kind] = r["cpu"]
                if key not in res or r["cpu"] < res[key]["cpu"]:
                    res[key] = r
            per_round.append(cpus)
        res["rounds"] = per_round
        # (c') call,system again: with fixed 1 MiB reads instead of ami_protocol's adaptive size (what a loop
        # busy with HTTP gets), and without the durable table (what it costs)
        variants: list[tuple[str, dict[str, Any]]] = [
            ("chunk", {"read_chunk": 1024 * 1024, "db": str(workdir / "activecalls-chunk.db")}),
            ("nodurable", {"probe": False})]
        for key, extra in variants:
            if key not in phases:
                continue
            r = full_run("blast", "callsys", extra=extra)
            res[f"{key}_callsys"] = r
            flush = (f"; {r['flushes']} flushes, {r['rows_written']:,} rows, final flush {r['final_flush_cpu']:.1f} s"
                     if "flushes" in r else "")
            lat = (f"; latency p50 {r['latency_p50'] * 1e3:.2f} ms p99 {r['latency_p99'] * 1e3:.2f} ms"
                   if r["probes"] else "")
            print(f"(c') blast callsys [{key}]: {_fmt_rate(wire['callsys'], r['cpu'])} ev/s cpu, "
                  f"{_fmt_rate(wire['callsys'], r['wall'])} wall{lat}{flush}", flush=True)
        if server is not None and "c_raw" not in res:
            _stop_server(server.result()[0])

        # ---- paced: the replay server in timed mode at PACED_SPEED x the trace's own rate (10,000+ calls up);
        # visibility latency when the collector is not saturated (the case in production), and its CPU share
        if "paced" in phases:
            n_ch = size["resync_channels"]
            srv = _start_server_async("replay", {"path": str(cs_path), "switch_after": st.channel_marks[n_ch],
                                                 "paced_speed": PACED_SPEED})
            proc, port = srv.result()
            try:
                r = _run_worker("collector", {"port": port, "events": "call,system", "expected": delivered["callsys"],
                                              "max_seconds": size["paced_seconds"], "warmup": PACED_WARMUP,
                                              "e2e_speed": PACED_SPEED,
                                              "measure_after": st.channel_marks_delivered[n_ch]})
            finally:
                _stop_server(proc)
            res["paced_callsys"] = r
            print(f"paced x{PACED_SPEED:g}: {r['measured'] / r['wall']:,.0f} delivered ev/s for {r['wall']:.0f} s, "
                  f"collector cpu {100 * r['cpu'] / r['wall']:.0f} %, latency p50 {r['latency_p50'] * 1e3:.2f} ms "
                  f"p99 {r['latency_p99'] * 1e3:.2f} ms; send → visible p50 {r['e2e_p50'] * 1e3:.2f} ms p99 "
                  f"{r['e2e_p99'] * 1e3:.2f} ms max {r['e2e_max'] * 1e3:.1f} ms", flush=True)

        # ---- resync of N channels against the parked replay server
        if "resync" in phases:
            hold = st.channel_marks.get(size["resync_channels"])
            if hold:
                srv = _start_server_async("replay", {"path": str(cs_path), "hold_after": hold})
                proc, port = srv.result()
                try:
                    r = _run_worker("resync", {"port": port, "events": "call,system",
                                               "delivered": st.channel_marks_delivered[size["resync_channels"]]})
                finally:
                    _stop_server(proc)
                res["resync"] = r
                print(f"resync {r['channels']:,} channels: in-process cold {r['inproc_cold'] * 1e3:.0f} ms, warm "
                      f"{r['inproc_warm'] * 1e3:.0f} ms; TCP warm {r['tcp_warm_wall'] * 1e3:.0f} ms, cold "
                      f"{r['tcp_cold_wall'] * 1e3:.0f} ms", flush=True)
        res["total_seconds"] = time.perf_counter() - t_begin
        res["loadavg_end"] = os.getloadavg()
        print()
        print(report(res, wire, size))
        if ns.json:
            Path(ns.json).write_text(json.dumps(res, indent=2))
    finally:
        if not ns.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


class _Pending:
    """A server process started in the background (it loads the trace while other phases run)."""

    def __init__(self, kind: str, args: dict[str, Any]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.ingest", "--serve", kind, "--args",
                                      json.dumps(args)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        self.kind = kind

    def result(self) -> tuple[subprocess.Popen[str], int]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"{self.kind} server did not start: {line!r}")
        port = int(line.split()[1])
        self.result = lambda: (self.proc, port)  # type: ignore[method-assign]
        return self.proc, port


def _start_server_async(kind: str, args: dict[str, Any]) -> _Pending:
    return _Pending(kind, args)


def report(res: dict[str, Any], wire: dict[str, int], size: Size) -> str:
    lines = []
    tr = res["trace"]
    lines.append(f"Ingest benchmark ({res['mode']}), Python {res['python']}, {res['cpus']} CPUs, load average "
                 f"{res['loadavg_start'][0]:.1f} at start / {res['loadavg_end'][0]:.1f} at end; "
                 f"total {res['total_seconds']:.0f} s")
    lines.append(f"trace: {tr['events']:,} events raw / {tr['callsys_events']:,} call,system; {tr['calls']:,} calls, "
                 f"peak {tr['peak_calls_planned']:,} calls / {tr['peak_channels']:,} channels; "
                 f"{tr['raw_bytes'] / 2**20:,.0f} / {tr['callsys_bytes'] / 2**20:,.0f} MiB")
    rounds = res.get("rounds") or []
    if rounds:
        lines.append(f"call,system: {len(rounds)} paired rounds of (a), (c) and (c') run back to back; each "
                     "round's own ratio (the table below keeps each figure's best run):")
        for kind, label in (("c", "(c)/(a)"), ("blast", "(c')/(a)")):
            ratios = _paired(res, kind)
            if ratios:
                lines.append(f"  {label} per round: {', '.join(f'{x:.2f}' for x in ratios)} "
                             f"(median {statistics.median(ratios):.2f})")
    lines.append("")
    hdr = f"{'measurement (events/s = wire events / time)':62s} {'raw':>12s} {'call,system':>12s}"
    lines.append(hdr)
    lines.append("-" * len(hdr))

    def row(label: str, key: str, field: str | None, time_key: str = "cpu") -> None:
        vals = []
        for s in ("raw", "callsys"):
            r = res.get(f"{key}_{s}")
            if r is None:
                vals.append("-")
                continue
            r = r[field] if field else r
            vals.append(_fmt_rate(wire[s], r[time_key]))
        lines.append(f"{label:62s} {vals[0]:>12s} {vals[1]:>12s}")

    row("(a) panoramisk data_received, no-op dispatch (cpu)", "a", None)
    row("(b) framer alone (cpu)", "b", "framer")
    row("(b) framer + tracker (cpu)", "b", "tracker")
    row("(b) framer + tracker + LiveTable (cpu)", "b", "live")
    row("(c) replay --fast → TCP → AmiSession → … (collector cpu)", "c", None)
    row("(c) same, wall clock (bound by the replay server)", "c", None, "wall")
    row("(c') blast server → TCP → AmiSession → … (collector cpu)", "blast", None)
    row("(c') same, wall clock", "blast", None, "wall")
    for key, label in (("c", "(c)/(a), best run of each, collector cpu"),
                       ("blast", "(c')/(a), best run of each, collector cpu"), ("blast", "(c')/(a), wall clock")):
        vals = []
        for s in ("raw", "callsys"):
            rc, ra = res.get(f"{key}_{s}"), res.get(f"a_{s}")
            if rc is None or ra is None:
                vals.append("-")
                continue
            t = "wall" if "wall" in label else "cpu"
            vals.append(f"{ra['cpu'] / rc[t]:.2f}")
        lines.append(f"{label:62s} {vals[0]:>12s} {vals[1]:>12s}")
    for key, label in (("chunk", "(c') with fixed 1 MiB reads (cpu)"),
                       ("nodurable", "(c') without the durable table (cpu)")):
        rc = res.get(f"{key}_callsys")
        if rc:
            lines.append(f"{label:62s} {'-':>12s} {_fmt_rate(wire['callsys'], rc['cpu']):>12s}")
    for key, label in (("c", "(c)"), ("blast", "(c')"), ("chunk", "(c') 1 MiB reads"),
                       ("nodurable", "(c') without durable")):
        if f"{key}_raw" not in res and f"{key}_callsys" not in res:
            continue
        runs = [res.get(f"{key}_{s}") for s in ("raw", "callsys")]
        rss = [f"{v['maxrss'] / 2**20:,.0f}" if v else "-" for v in runs]
        lines.append(f"{label + ' collector peak RSS (MiB)':62s} {rss[0]:>12s} {rss[1]:>12s}")
        if any(v and v["probes"] for v in runs):
            lat = [f"{v['latency_p50'] * 1e3:.2f} / {v['latency_p99'] * 1e3:.2f}" if v and v["probes"] else "-"
                   for v in runs]
            lines.append(f"{label + ' arrival → rows() latency p50 / p99 (ms)':62s} {lat[0]:>12s} {lat[1]:>12s}")
        peak = [f"{v['peak_calls']:,}" if v else "-" for v in runs]
        lines.append(f"{label + ' peak calls in LiveTable':62s} {peak[0]:>12s} {peak[1]:>12s}")
    rp = res.get("paced_callsys")
    if rp:
        lines.append(f"paced: replay timed at x{PACED_SPEED:g} the trace's rate, call,system: "
                     f"{rp['measured'] / rp['wall']:,.0f} delivered ev/s over {rp['wall']:.0f} s (calls up: "
                     f"{rp['peak_calls']:,}), collector cpu {100 * rp['cpu'] / rp['wall']:.0f} %, arrival → rows() "
                     f"p50 {rp['latency_p50'] * 1e3:.2f} ms / p99 {rp['latency_p99'] * 1e3:.2f} ms; replay send → "
                     f"visible (every event) p50 {rp['e2e_p50'] * 1e3:.2f} ms / p99 {rp['e2e_p99'] * 1e3:.2f} ms / max "
                     f"{rp['e2e_max'] * 1e3:.1f} ms")
    lines.append("")
    for n in size["memory_calls"]:
        m = res.get(f"memory_{n}")
        if m:
            traced = (f"{m['traced'] / m['calls']:,.0f} B/call (tracemalloc; tracker alone "
                      f"{m['traced_tracker_only'] / m['calls']:,.0f}), ") if "traced" in m else ""
            lines.append(f"memory at {m['calls']:,} calls up ({m['channels']:,} channels, {m['tombstones']:,} "
                         f"tombstones): {traced}{m['rss_delta'] / m['calls']:,.0f} B/call (RSS delta)")
    r = res.get("resync")
    if r:
        lines.append(f"resync {r['channels']:,} channels: tracker applying the list in-process: cold "
                     f"{r['inproc_cold'] * 1e3:.0f} ms, warm {r['inproc_warm'] * 1e3:.0f} ms, cold from bytes "
                     f"(framer + tracker) {r['inproc_cold_bytes'] * 1e3:.0f} ms")
        lines.append(f"resync over TCP (replay server builds the list): warm {r['tcp_warm_wall'] * 1e3:.0f} ms "
                     f"(tracker {r['tcp_warm_tracker'] * 1e3:.0f} ms), cold after login {r['tcp_cold_wall'] * 1e3:.0f}"
                     f" ms (tracker {r['tcp_cold_tracker'] * 1e3:.0f} ms)")
    lines.extend(_targets(res, wire, size))
    return "\n".join(lines)


def _paired(res: dict[str, Any], kind: str) -> list[float]:
    """(a)'s CPU time over ``kind``'s in each paired call,system round, sorted."""
    return sorted(r["a"] / r[kind] for r in res.get("rounds") or [] if "a" in r and kind in r)


def _targets(res: dict[str, Any], wire: dict[str, int], size: Size) -> list[str]:
    """Each target of issue #6 beside what this run measured."""
    rows: list[tuple[str, str, str, bool | None]] = []

    def add(label: str, value: float | None, fmt: str, target: str, ok: bool | None) -> None:
        rows.append((label, "-" if value is None else fmt.format(value), target, None if value is None else ok))

    for s, name in (("raw", "raw"), ("callsys", "call,system")):
        c, a = res.get(f"c_{s}"), res.get(f"a_{s}")
        rate = wire[s] / c["cpu"] if c else None
        add(f"(c) events/s on one core, {name} (collector cpu)", rate, "{:,.0f}", ">= 100,000",
            rate is not None and rate >= 100_000)
        b = res.get(f"blast_{s}")
        for key, run, label in (("c", c, f"(c)/(a), {name}"), ("blast", b, f"(c')/(a), {name}, collector saturated")):
            paired = _paired(res, key) if s == "callsys" else []
            if paired:  # the median of the paired rounds: see orchestrate
                ratio: float | None = statistics.median(paired)
                label += f", median of {len(paired)} paired rounds"
            else:
                ratio = a["cpu"] / run["cpu"] if run and a else None
            add(label, ratio, "{:.2f}", ">= 2.0", ratio is not None and ratio >= 2.0)
    for n in size["memory_calls"]:
        m = res.get(f"memory_{n}")
        per = m["rss_delta"] / m["calls"] if m else None
        add(f"memory per active call at {n:,} calls (RSS delta)", per, "{:,.0f} B", "< 4,096 B",
            per is not None and per < 4096)
    r = res.get("resync")
    worst = max(r["tcp_cold_wall"], r["tcp_warm_wall"], r["inproc_cold"]) if r else None
    add(f"resync of {size['resync_channels']:,} channels (worst of the four)", worst, "{:.3f} s", "< 2 s",
        worst is not None and worst < 2.0)
    rp = res.get("paced_callsys")
    p99 = max(rp["e2e_p99"], rp["latency_p99"]) if rp else None
    add("event arrival → visible in the API, p99 (paced run at x1)", None if p99 is None else p99 * 1e3,
        "{:.1f} ms", "< 50 ms", p99 is not None and p99 < 0.05)
    out = ["", f"{'target':72s} {'measured':>10s} {'target':>12s}  result", "-" * 104]
    for label, value, target, ok in rows:
        out.append(f"{label:72s} {value:>10s} {target:>12s}  {'-' if ok is None else ('met' if ok else 'MISSED')}")
    return out


if __name__ == "__main__":
    sys.exit(main())
