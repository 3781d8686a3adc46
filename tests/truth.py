"""Ground-truth comparison: the tracker's table against real CoreShowChannels snapshots.

A truth instant's calls are its channels grouped by Linkedid. A call's truth status is MOR's: Answered
from the first instant where a non-Local channel other than the A-leg (Uniqueid != Linkedid) is Up, or two
channels share a BridgeId (ami.md §4), until the call is gone (a blind transfer ringing a new target,
or the called side hanging up first, does not make it Ringing again); Ringing before that.
A difference at an instant is forgiven when the call starts, ends or changes status within one truth
interval of it (the neighbouring instants disagree among themselves).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.ami.framing import AmiMessage
from collector.tools.timeline import iter_trace_messages
from collector.tools.traces import read_trace
from collector.tracking.calls import CallView
from collector.tracking.tracker import CallTracker

TruthCalls = dict[str, str]  # linkedid -> "Ringing" | "Answered"


def truth_calls(snapshot: dict[str, Any]) -> TruthCalls:
    groups: dict[str, list[dict[str, Any]]] = {}
    for ch in snapshot["channels"]:
        groups.setdefault(ch["linkedid"], []).append(ch)
    out: TruthCalls = {}
    for linkedid, chans in groups.items():
        answered = False
        bridges: dict[str, int] = {}
        for ch in chans:
            if ch.get("bridgeid"):
                bridges[ch["bridgeid"]] = bridges.get(ch["bridgeid"], 0) + 1
            if (ch["uniqueid"] != linkedid and not ch["channel"].startswith("Local/")
                    and ch["channelstate"] == "6"):
                answered = True
        if any(n >= 2 for n in bridges.values()):
            answered = True
        out[linkedid] = "Answered" if answered else "Ringing"
    return out


def load_truth(path: Path) -> list[tuple[float, TruthCalls, dict[str, Any]]]:
    rows = []
    answered: set[str] = set()  # calls seen answered at an earlier instant, while they stay up
    for line in read_trace(path).decode().splitlines():
        obj = json.loads(line)
        if "error" in obj:
            continue
        calls = truth_calls(obj)
        answered &= calls.keys()
        for lid, status in calls.items():
            if status == "Answered":
                answered.add(lid)
            elif lid in answered:
                calls[lid] = "Answered"  # MOR's rule: answered until the call ends
        rows.append((obj["t"], calls, obj))
    return rows


@dataclass
class Comparison:
    instants: int = 0
    agreeing: int = 0
    status_checked: int = 0
    status_agreeing: int = 0
    blind_instants: int = 0
    mismatches: list[str] = field(default_factory=list)
    answer_errors: dict[str, float] = field(default_factory=dict)
    final_calls: list[CallView] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.agreeing / self.instants if self.instants else 1.0


def _timed(msg: AmiMessage) -> float | None:
    ts = msg.get("Timestamp")
    return float(ts) if ts else None


def blind_windows(ami_paths: Sequence[Path]) -> list[tuple[float, float]]:
    """Periods when the recording session saw nothing: from the disconnect to the next session's
    resync. Nothing can be known about calls then, so instants inside are not judged. The disconnect
    time comes from the driver's markers in ``NAME.calls.jsonl`` when present (a quiet spell before the
    drop has no event to date it), else from the last event of the earlier session; the resync ends with
    the first timestamped event of the next session (its reply follows the login at once)."""
    windows = []
    last_end: float | None = None
    markers: list[float] = []
    calls = ami_paths[0].parent / (ami_paths[0].name.split(".")[0] + ".calls.jsonl")
    if calls.exists():
        markers = [json.loads(line)["t"] for line in calls.read_text().splitlines()
                   if "disconnect" in json.loads(line).get("marker", "")]
    for i, path in enumerate(ami_paths):
        times = [float(m["Timestamp"]) for m in iter_trace_messages([path]) if m.get("Timestamp")]
        if last_end is not None and times:
            start = markers[i - 1] if len(markers) >= i else last_end
            windows.append((start, times[0]))
        if times:
            last_end = times[-1]
    return windows


def compare(ami_paths: Sequence[Path], truth_path: Path, server_id: int = 1) -> Comparison:
    truth = load_truth(truth_path)
    windows = blind_windows(ami_paths)
    blind = [any(lo < t <= hi for lo, hi in windows) for t, _c, _r in truth]
    tracker = CallTracker()
    msgs = iter_trace_messages(ami_paths)
    pending: AmiMessage | None = None
    ours: list[dict[str, tuple[str, float | None]]] = []
    for t, _calls, _raw in truth:
        while True:
            if pending is None:
                pending = next(msgs, None)
                if pending is None:
                    break
            mt = _timed(pending)
            if mt is not None and mt > t:
                break
            tracker.apply(server_id, pending)
            pending = None
        ours.append({c.linkedid: (c.status.value, c.answer_time) for c in tracker.calls(server_id)})
    while pending is not None:
        tracker.apply(server_id, pending)
        pending = next(msgs, None)

    cmp = Comparison(final_calls=tracker.calls(server_id))
    n = len(truth)
    for i, (t, tcalls, _raw) in enumerate(truth):
        if blind[i]:
            cmp.blind_instants += 1
            continue
        cmp.instants += 1
        neighbours = [truth[j][1] for j in (i - 1, i + 1) if 0 <= j < n]
        mine = ours[i]
        bad = []
        for lid in set(tcalls) | set(mine):
            in_t, in_m = lid in tcalls, lid in mine
            if in_t != in_m:
                if any((lid in nb) != in_t for nb in neighbours):
                    continue
                bad.append(f"{lid} truth={in_t} ours={in_m}")
                continue
            cmp.status_checked += 1
            if tcalls[lid] == mine[lid][0] or any(nb.get(lid) != tcalls[lid] for nb in neighbours):
                cmp.status_agreeing += 1
            else:
                bad.append(f"{lid} status truth={tcalls[lid]} ours={mine[lid][0]}")
        if bad:
            cmp.mismatches.append(f"t={t}: " + "; ".join(sorted(bad)))
        else:
            cmp.agreeing += 1
    # answer time: our answer_time vs the first truth instant showing the call answered
    first_answered: dict[str, float] = {}
    for t, tcalls, _raw in truth:
        for lid, st in tcalls.items():
            if st == "Answered" and lid not in first_answered:
                first_answered[lid] = t
    seen_answer: dict[str, float] = {}
    for mine in ours:
        for lid, (_st, at) in mine.items():
            if at is not None and lid not in seen_answer:
                seen_answer[lid] = at
    for lid, t_first in first_answered.items():
        if any(lo < t_first <= hi + 0.5 for lo, hi in windows):
            continue  # answered while the recorder was blind: only the resync saw it
        if lid in seen_answer:
            # the answer happened in (previous instant, t_first]; 0.5 s tolerance past either end
            idx = [t for t, _c, _r in truth]
            k = idx.index(t_first)
            lo = idx[k - 1] if k > 0 else t_first - 0.5
            at = seen_answer[lid]
            err = 0.0 if lo <= at <= t_first else min(abs(at - lo), abs(at - t_first))
            cmp.answer_errors[lid] = err
    return cmp
