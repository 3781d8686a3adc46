"""Check that the tracker and the AMI framer behave exactly like an older git revision.

    .venv/bin/python -m bench._equiv            # working tree against HEAD
    .venv/bin/python -m bench._equiv 3c8418b    # … against any git revision

Each revision runs in a subprocess of its own, with that revision's tree (``git archive REV``) alone on
``sys.path``, so the modules may live at any path and import each other as they did then: the tracker is
``collector.tracking.tracker`` or (older layouts) ``collector.tracker``, the framer ``collector.ami.framing`` or
``collector.ami_framing``. Each subprocess dumps normalised results (plain tuples, one digest per ``apply``);
this process compares them. An exported revision has no built C decoder, so its framer runs pure Python.

Tracker: every bundled trace, then 40 perturbed variants of each (dropped and swapped events, reconnects and
CoreShowChannels lists with random items, mangled fields, a second server), fed message by message; the changes
returned by every ``apply`` (as a multiset), the final calls and the stats must be equal. The feed is what the
session delivers: the working tree's noise events (skipped by the framer before decoding) are left out.
Framer: the traces and adversarial byte streams (garbage, repeated keys, lines without ": ", banners, oversized
blocks, invalid UTF-8, LF-only framing) cut at random points; messages, key order, leftover state and stats must be
equal. Exit status 0 when equivalent.
"""

from __future__ import annotations

import dataclasses
import enum
import gzip
import hashlib
import importlib
import io
import logging
import os
import pickle
import random
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT / "tests" / "traces"
BANNER_KEY = "_Banner"  # the framer's banner pseudo-header, unchanged across revisions

_TRACKER_MODULES = ("collector.tracking.tracker", "collector.tracker")
_FRAMER_MODULES = ("collector.ami.framing", "collector.ami_framing")
_FRAMER_NOISE = ("VarSet", "Newexten", "Cdr", "DeviceStateChange")


# --------------------------------------------------------------------------------------------- normalising

def _plain(x: Any) -> Any:
    """Records of any revision (NamedTuple, dataclass, Enum) as plain, picklable, comparable values."""
    if isinstance(x, enum.Enum):
        return x.value
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return tuple(_plain(getattr(x, f.name)) for f in dataclasses.fields(x))
    if isinstance(x, (tuple, list)):
        return tuple(_plain(v) for v in x)
    if isinstance(x, dict):
        return tuple((k, _plain(v)) for k, v in x.items())
    return x


def _digest(x: Any) -> bytes:
    return hashlib.blake2b(repr(x).encode(), digest_size=8).digest()


def _read_trace(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _import_first(names: tuple[str, ...], tree: Path) -> ModuleType:
    for name in names:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        if not Path(mod.__file__ or "").resolve().is_relative_to(tree.resolve()):
            raise RuntimeError(f"{name} imported from {mod.__file__}, not from {tree}")
        return mod
    raise RuntimeError(f"none of {names} in {tree}")


# --------------------------------------------------------------------------------------------- inputs

def _perturb(msgs: list[dict[str, str]], rng: random.Random) -> list[dict[str, str]]:
    flow = [dict(m) for m in msgs if "Response" not in m]
    n = len(flow)
    for _ in range(rng.randint(0, n // 5)):
        del flow[rng.randrange(len(flow))]
    for _ in range(rng.randint(0, n // 4)):
        i = rng.randrange(len(flow) - 1)
        flow[i], flow[i + 1] = flow[i + 1], flow[i]
    snaps = [m for m in msgs if m.get("Event") in ("Newchannel", "Newstate", "DialBegin")]
    for _ in range(rng.randint(0, 3)):
        at = rng.randrange(len(flow))
        aid = f"r{rng.random()}"
        block: list[dict[str, str]] = []
        if rng.random() < 0.5:
            block.append({BANNER_KEY: "9.0.0"})
        block.append({"Response": "Success", "ActionID": aid, "EventList": "start",
                      "Message": "Channels will follow"})
        for s in rng.sample(snaps, min(len(snaps), rng.randint(0, 8))):
            it = {k: v for k, v in s.items() if k not in ("Timestamp", "Privilege")}
            it.update(Event="CoreShowChannel", ActionID=aid, Duration=f"00:00:{rng.randint(0, 59):02d}",
                      BridgeId=rng.choice(["", "b1", "b2"]), _RxTime=s.get("Timestamp", "1"))
            if rng.random() < 0.3:
                it["ChannelState"] = rng.choice(["4", "5", "6", "x", ""])
            block.append(it)
        block.append({"Event": "CoreShowChannelsComplete", "ActionID": aid, "ListItems": str(len(block) - 2)})
        flow[at:at] = block
    for _ in range(rng.randint(0, 10)):
        m = flow[rng.randrange(len(flow))]
        k = rng.choice(["ChannelState", "Channel", "Linkedid", "CallerIDNum", "Exten", "Uniqueid", "BridgeType"])
        if k in m:
            m[k] = rng.choice(["", "6", "5", "<unknown>", m[k] + "x", "Local/x-1;1"])
    for m in flow:
        if rng.random() < 0.02:
            m["_sid"] = "2"
    return flow


def _tracker_inputs() -> list[tuple[str, list[dict[str, str]]]]:
    """The bundled traces as message lists (framed by the working tree), without the session's noise."""
    sys.path.insert(0, str(ROOT))
    from collector.ami.session import NOISE_EVENTS
    from collector.tools.timeline import iter_trace_messages
    from collector.tracking.tracker import TRACKED_EVENTS

    noise = frozenset(NOISE_EVENTS) - frozenset(TRACKED_EVENTS)
    scenarios: dict[str, list[Path]] = {}
    for p in sorted(TRACES.glob("*.ami*")):
        scenarios.setdefault(p.name.split(".")[0], []).append(p)
    return [(name, [dict(m) for m in iter_trace_messages(sorted(paths)) if m.get("Event") not in noise])
            for name, paths in sorted(scenarios.items())]


_ADVERSARIAL = [
    b"Asterisk Call Manager/9.0.0\r\nResponse: Success\r\nMessage: ok\r\n\r\n",
    b"Event: UserEvent\r\nUserEvent: foo\r\nEvent: bar\r\n\r\n",
    b"Event: X\r\nKey:novalue\r\ngarbage line\r\nA: b: c\r\n: empty\r\n\r\n",
    b"garbage\r\nmore\r\n\r\n", b"\r\n\r\n\r\n", b"Event: Y\nA: 1\n\n\n\nEvent: Z\r\nB: 2\r\n\n",
    b"Event: Newchannel\r\nCallerIDName: Jos\xc3\xa9 \xff\xfe M\xc3\r\nX: \xe2\x82\r\n\r\n",
    b"Event: VarSet\r\nA: 1\r\n\r\n", b"Event: VarSetX\r\nA: 1\r\n\r\n",
    b"Event: Big\r\nA: " + b"x" * 300000 + b"\r\n\r\nEvent: After\r\nA: 1\r\n\r\n",
    b"Response: Success\r\nA: 1\r\nA: 2\r\n\r\n", b"Event: E\r\n\r\n", b"Event:E\r\nB:\r\n\r\n",
    b"Key: v\r\nKey2: v\r\n\r\n", b"x" * 270000, b"\r\n\r\n",
]


def _framer_cases() -> list[tuple[str, bytes, list[int]]]:
    """(label, bytes, cut points): deterministic, so both revisions' workers build the same list."""
    datas = [_read_trace(p) for p in sorted(TRACES.glob("*.ami*"))]
    rng = random.Random(1)
    cases = []
    for trial in range(300):
        parts = [rng.choice(_ADVERSARIAL) for _ in range(rng.randint(1, 30))]
        if rng.random() < 0.3:
            d = rng.choice(datas)
            i = rng.randrange(len(d))
            parts.append(d[i:i + rng.randint(0, 20000)])
        data = b"".join(parts)
        if rng.random() < 0.2:
            data = bytes(b if rng.random() > 0.01 else rng.randrange(256) for b in data)
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 50)))) if len(data) > 1 else []
        cases.append((f"adversarial #{trial}", data, cuts))
    for n, d in enumerate(datas):
        for chunk in (1 << 16, 4096, 7):
            if chunk == 7 and len(d) > 300000:
                continue
            cases.append((f"trace {n} chunk={chunk}", d, list(range(chunk, len(d), chunk))))
    return cases


# --------------------------------------------------------------------------------------------- worker side

def _norm_changes(changes: list[Any]) -> list[Any]:
    return sorted(((c.kind, c.key, _plain(c.call)) for c in changes), key=lambda x: (x[1], x[0]))


def _feed_tracker(tr: ModuleType, msgs: list[dict[str, str]]) -> tuple[bytes, Any, Any]:
    t = tr.CallTracker()
    digests = bytearray()
    for m in msgs:
        sid = int(m.pop("_sid", 1))
        digests += _digest(_norm_changes(t.apply(sid, dict(m))))
    calls = tuple(tuple(sorted((_plain(v) for v in t.calls(sid)), key=lambda v: v[1])) for sid in (1, 2))
    stats = tuple(_plain(t.stats(sid)) for sid in (1, 2))
    return bytes(digests), calls, stats


def _worker(tree: Path, inputs: Path, out: Path, variants: int = 40) -> None:
    logging.getLogger().setLevel(logging.CRITICAL)
    tr = _import_first(_TRACKER_MODULES, tree)
    fr = _import_first(_FRAMER_MODULES, tree)
    tracker: dict[str, Any] = {}
    for name, msgs in pickle.loads(inputs.read_bytes()):
        tracker[name] = _feed_tracker(tr, [dict(m) for m in msgs])
        rng = random.Random(name)
        for trial in range(variants):
            tracker[f"{name}#{trial}"] = _feed_tracker(tr, _perturb(msgs, rng))
    framer: dict[str, Any] = {}
    for label, data, cuts in _framer_cases():
        for skip in ((), _FRAMER_NOISE):
            f = fr.AmiFramer(skip)
            steps = []
            prev = 0
            for cut in [*cuts, len(data)]:
                steps.append(_digest(tuple(tuple(m.items()) for m in f.feed(data[prev:cut]))))
                prev = cut
            # the C decoder keeps the unframed tail as read (with its CRs); the Python path strips them first
            framer[f"{label} skip={len(skip)}"] = (b"".join(steps), f._buf.replace(b"\r", b""), f._discarding,
                                                    _plain(f.stats))
    out.write_bytes(pickle.dumps({"tracker": tracker, "framer": framer, "files": (tr.__file__, fr.__file__)}))


# --------------------------------------------------------------------------------------------- driver side

def _export(rev: str, dest: Path) -> Path:
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, stdout=subprocess.PIPE).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    for name in ("collector/tracking/tracker.py", "collector/tracker.py"):
        p = dest / name
        if p.is_file():  # revisions before calls.py became NamedTuples checked the field order with fields()
            p.write_bytes(p.read_bytes().replace(b"tuple(f.name for f in fields(CallView))", b"CallView._fields")
                          .replace(b"tuple(f.name for f in fields(Leg))", b"Leg._fields"))
    return dest


def _run_worker(tree: Path, inputs: Path, out: Path) -> dict[str, Any]:
    # -S: no site-packages, whose editable install of the working tree would shadow ``tree``; the tracker and
    # the framer need only the standard library
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, "-S", str(Path(__file__).resolve()), "--worker", str(tree), str(inputs), str(out)],
                   cwd=out.parent, env=env, check=True)
    result: dict[str, Any] = pickle.loads(out.read_bytes())
    return result


def _first_step(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    return next((i // 8 for i in range(0, n, 8) if a[i:i + 8] != b[i:i + 8]), n // 8)


def _compare(kind: str, old: dict[str, Any], new: dict[str, Any]) -> bool:
    ok = old.keys() == new.keys()
    if not ok:
        print(f"{kind} MISMATCH: different cases {sorted(old.keys() ^ new.keys())[:5]}")
    for label in old.keys() & new.keys():
        a, b = old[label], new[label]
        if a == b:
            continue
        ok = False
        if a[0] != b[0]:
            print(f"{kind} MISMATCH {label}: step {_first_step(a[0], b[0])} differs")
        else:
            print(f"{kind} MISMATCH {label}: final state differs:\n old {a[1:]}\n new {b[1:]}"[:2000])
    return ok


def main(argv: list[str]) -> int:
    if argv[:1] == ["--worker"]:
        _worker(Path(argv[1]), Path(argv[2]), Path(argv[3]))
        return 0
    rev = argv[0] if argv else "HEAD"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        inputs = tmp / "inputs.pkl"
        inputs.write_bytes(pickle.dumps(_tracker_inputs()))
        old = _run_worker(_export(rev, tmp / "old"), inputs, tmp / "old.pkl")
        new = _run_worker(ROOT, inputs, tmp / "new.pkl")
    fr_ok = _compare("framer", old["framer"], new["framer"])
    print(f"framer vs {rev}: {'equivalent' if fr_ok else 'DIFFERENT'}")
    tr_ok = _compare("tracker", old["tracker"], new["tracker"])
    print(f"tracker vs {rev}: {'equivalent' if tr_ok else 'DIFFERENT'}")
    return 0 if fr_ok and tr_ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
