"""Check that an optimised collector/tracking/tracker.py and collector/ami/framing.py behave exactly like an older revision.

    .venv/bin/python -m bench._equiv            # working tree against HEAD
    .venv/bin/python -m bench._equiv 6065bab    # … against any git revision

Tracker: every bundled trace, then 40 perturbed variants of each (dropped and swapped events, reconnects and
CoreShowChannels lists with random items, mangled fields, a second server), fed message by message to both versions;
the changes returned by every ``apply`` (as a multiset), the final calls and the stats must be equal.
Framer: the traces and adversarial byte streams (garbage, repeated keys, lines without ": ", banners, oversized
blocks, invalid UTF-8, LF-only framing) cut at random points; messages, key order, leftover state and stats must be
equal. Exit status 0 when equivalent.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from collector.ami.framing import BANNER_KEY  # noqa: E402
from collector.tools.timeline import iter_trace_messages  # noqa: E402
from collector.tools.traces import read_trace  # noqa: E402

TRACES = ROOT / "tests" / "traces"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _old_source(rev: str, rel: str, tmp: Path) -> Path:
    out = tmp / rel.replace("/", "_")
    src = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=ROOT, check=True, stdout=subprocess.PIPE).stdout
    # revisions before collector/tracking/calls.py became NamedTuples checked the field order with dataclasses.fields
    src = src.replace(b"tuple(f.name for f in fields(CallView))", b"CallView._fields").replace(
        b"tuple(f.name for f in fields(Leg))", b"Leg._fields")
    out.write_bytes(src)
    return out


def _norm(changes: list[Any]) -> list[Any]:
    return sorted(((c.kind, c.key, c.call) for c in changes), key=lambda x: (x[1], x[0]))


def _run_tracker(old: ModuleType, new: ModuleType, msgs: list[dict[str, str]], label: str) -> bool:
    a, b = old.CallTracker(), new.CallTracker()
    for i, m in enumerate(msgs):
        sid = int(m.pop("_sid", 1))
        ca, cb = _norm(a.apply(sid, dict(m))), _norm(b.apply(sid, dict(m)))
        if ca != cb:
            print(f"tracker MISMATCH {label} message {i} ({m.get('Event')}):\n old {ca}\n new {cb}")
            return False
    for sid in (1, 2):
        if sorted(a.calls(sid), key=lambda v: v.linkedid) != sorted(b.calls(sid), key=lambda v: v.linkedid):
            print(f"tracker MISMATCH {label}: final calls")
            return False
        if dataclasses.astuple(a.stats(sid)) != dataclasses.astuple(b.stats(sid)):
            print(f"tracker MISMATCH {label}: stats {a.stats(sid)} {b.stats(sid)}")
            return False
    return True


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


def check_tracker(old: ModuleType, new: ModuleType, variants: int = 40) -> bool:
    scenarios: dict[str, list[Path]] = {}
    for p in sorted(TRACES.glob("*.ami*")):
        scenarios.setdefault(p.name.split(".")[0], []).append(p)
    ok = True
    for name, paths in sorted(scenarios.items()):
        msgs = list(iter_trace_messages(sorted(paths)))
        ok &= _run_tracker(old, new, [dict(m) for m in msgs], name)
        rng = random.Random(name)
        for trial in range(variants):
            ok &= _run_tracker(old, new, _perturb(msgs, rng), f"{name}#{trial}")
    return ok


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


def _run_framer(old: ModuleType, new: ModuleType, data: bytes, cuts: list[int], skip: tuple[str, ...]) -> str | None:
    fa, fb = old.AmiFramer(skip), new.AmiFramer(skip)
    prev = 0
    for cut in sorted(cuts) + [len(data)]:
        ra, rb = fa.feed(data[prev:cut]), fb.feed(data[prev:cut])
        if ra != rb or [list(m) for m in ra] != [list(m) for m in rb]:
            return f"messages differ in bytes {prev}:{cut}"
        prev = cut
    # the C decoder keeps the unframed tail as read (with its CRs); the Python path strips them first
    if fa._buf.replace(b"\r", b"") != fb._buf.replace(b"\r", b"") or fa._discarding != fb._discarding:
        return f"leftover state differs: {fa._buf[-60:]!r} {fa._discarding} / {fb._buf[-60:]!r} {fb._discarding}"
    if dataclasses.astuple(fa.stats) != dataclasses.astuple(fb.stats):
        return f"stats differ: {fa.stats} {fb.stats}"
    return None


def check_framer(old: ModuleType, new: ModuleType, trials: int = 300) -> bool:
    import logging

    logging.getLogger(old.__name__).setLevel(logging.ERROR)
    logging.getLogger(new.__name__).setLevel(logging.ERROR)
    noise = ("VarSet", "Newexten", "Cdr", "DeviceStateChange")
    datas = [read_trace(p) for p in sorted(TRACES.glob("*.ami*"))]
    rng = random.Random(1)
    bad = 0
    for trial in range(trials):
        parts = [rng.choice(_ADVERSARIAL) for _ in range(rng.randint(1, 30))]
        if rng.random() < 0.3:
            d = rng.choice(datas)
            i = rng.randrange(len(d))
            parts.append(d[i:i + rng.randint(0, 20000)])
        data = b"".join(parts)
        if rng.random() < 0.2:
            data = bytes(b if rng.random() > 0.01 else rng.randrange(256) for b in data)
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 50)))) if len(data) > 1 else []
        for skip in ((), noise):
            err = _run_framer(old, new, data, cuts, skip)
            if err:
                bad += 1
                print(f"framer MISMATCH adversarial #{trial}: {err}")
    for d in datas:
        for chunk in (1 << 16, 4096, 7):
            if chunk == 7 and len(d) > 300000:
                continue
            for skip in ((), noise):
                err = _run_framer(old, new, d, list(range(chunk, len(d), chunk)), skip)
                if err:
                    bad += 1
                    print(f"framer MISMATCH trace chunk={chunk}: {err}")
    return bad == 0


def main(argv: list[str]) -> int:
    rev = argv[0] if argv else "HEAD"
    with tempfile.TemporaryDirectory() as tmp:
        old_fr = _load("_old_ami_framing", _old_source(rev, "collector/ami/framing.py", Path(tmp)))
        new_fr = _load("_new_ami_framing", ROOT / "collector" / "ami_framing.py")
        fr_ok = check_framer(old_fr, new_fr)
        print(f"framer vs {rev}: {'equivalent' if fr_ok else 'DIFFERENT'}")
        old_tr = _load("_old_tracker", _old_source(rev, "collector/tracking/tracker.py", Path(tmp)))
        new_tr = _load("_new_tracker", ROOT / "collector" / "tracker.py")
        import logging

        logging.getLogger().setLevel(logging.ERROR)
        tr_ok = check_tracker(old_tr, new_tr)
        print(f"tracker vs {rev}: {'equivalent' if tr_ok else 'DIFFERENT'}")
    return 0 if fr_ok and tr_ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
