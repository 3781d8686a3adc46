"""Judging a series of same-tick samples (CoreShowChannels, active_calls_get, /status).

Truth (MOR's status rule, the README's call model): a call is the set of channels sharing a Linkedid.
Its legs say Answered at a tick when a non-Local channel other than the A-leg (Uniqueid != Linkedid) is
Up (ChannelState 6) or two of its channels share a BridgeId; the call is then Answered from the first
tick its legs say so until its Linkedid is gone from CoreShowChannels (a tick without CoreShowChannels
does not end it), even if the legs stop being connected (a transfer, a B-leg hung up before the A-leg);
before that it is Ringing. An API row belongs to the truth call of the channel whose Uniqueid it shows.
Slack: one tick (0.5 s) either side.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tests_live.lablib import Disruption, Tick

LOCAL_B = re.compile(r"^Local/.*;2$")


def truth_calls(channels: Sequence[dict[str, str]]) -> dict[str, str]:
    """linkedid → "Answered" | "Ringing" from the legs of one tick alone (see sticky_truth)."""
    groups: dict[str, list[dict[str, str]]] = {}
    for ch in channels:
        groups.setdefault(ch["linkedid"], []).append(ch)
    out: dict[str, str] = {}
    for linkedid, chans in groups.items():
        bridges: dict[str, int] = {}
        answered = False
        for ch in chans:
            if ch.get("bridgeid"):
                bridges[ch["bridgeid"]] = bridges.get(ch["bridgeid"], 0) + 1
            if ch["uniqueid"] != linkedid and not ch["channel"].startswith("Local/") and ch["state"] == "6":
                answered = True
        out[linkedid] = "Answered" if answered or any(n >= 2 for n in bridges.values()) else "Ringing"
    return out


def sticky_truth(per_tick: Sequence[dict[str, str] | None]) -> list[dict[str, str] | None]:
    """MOR's rule over a series of truth_calls: Answered from a call's first Answered tick until a tick
    (with CoreShowChannels) no longer shows its Linkedid; None (no CoreShowChannels) stays None."""
    answered: set[str] = set()
    out: list[dict[str, str] | None] = []
    for tc in per_tick:
        if tc is None:
            out.append(None)
            continue
        answered &= tc.keys()  # gone → forgotten (a Linkedid reused later starts again)
        answered.update(k for k, v in tc.items() if v == "Answered")
        out.append({k: "Answered" if k in answered else v for k, v in tc.items()})
    return out


@dataclass
class Window:
    start: float
    end: float
    cause: str

    def covers(self, t: float) -> bool:
        return self.start <= t <= self.end


def disconnected_windows(ticks: Sequence[Tick], disruptions: Sequence[Disruption],
                         slack: float = 0.5) -> list[Window]:
    """Times when the collector could not know: from each disruption, and from every tick where /status
    shows the session down or its reconnect counter moved, until a tick shows it logged in again (since
    after the trigger) with a resync done after that login; plus ``slack``."""
    triggers: list[tuple[float, str]] = [(d.t, d.kind) for d in disruptions]
    prev: dict[str, Any] | None = None
    prev_t = ticks[0].t if ticks else 0.0
    for tk in ticks:
        s = tk.server
        if s is not None:
            if not s.get("connected"):
                triggers.append((prev_t, "status: disconnected"))
            elif prev is not None and s.get("reconnects", 0) > prev.get("reconnects", 0):
                triggers.append((prev_t, "status: reconnected between ticks"))
            prev, prev_t = s, tk.t
    windows: list[Window] = []
    for tau, cause in sorted(triggers):
        end = math.inf
        for tk in ticks:
            s = tk.server
            if tk.t <= tau or s is None or not s.get("connected"):
                continue
            since, resync = s.get("since") or 0.0, s.get("last_resync_at") or 0.0
            if since >= tau and resync >= since:
                end = max(tk.t, resync) + slack
                break
        start = tau - slack
        if windows and start <= windows[-1].end:
            windows[-1].end = max(windows[-1].end, end)
            if cause not in windows[-1].cause:
                windows[-1].cause += f", {cause}"
        else:
            windows.append(Window(start, end, cause))
    return windows


@dataclass
class Figures:
    ticks: int = 0
    judged_instants: int = 0
    agreeing_instants: int = 0
    status_checked: int = 0
    status_agreeing: int = 0
    agreement_pct: float = 100.0
    answered_to_ringing: int = 0
    answered_to_ringing_calls: int = 0
    answered_to_ringing_in_windows: int = 0  # of which inside a disconnected window
    answered_to_ringing_truth_ringing: int = 0  # of which the (sticky) truth also said Ringing at that tick
    truth_answered_legs_unconnected: int = 0  # call-instants Answered by the rule whose legs no longer say so
    b_leg_rows: int = 0
    b_leg_row_instants: int = 0
    api_rows_without_channel: int = 0  # row-instants, beyond the slack, judged instants only
    calls_missing_from_api: int = 0  # truth call-instants, beyond the slack, judged instants only
    channel_name_mismatches: int = 0
    peak_concurrent_calls: int = 0
    peak_concurrent_channels: int = 0
    peak_api_rows: int = 0
    calls_seen: int = 0  # distinct truth calls (Linkedids) over the run
    api_rows_seen: int = 0  # distinct API row ids over the run
    disconnected_windows: list[dict[str, Any]] = field(default_factory=list)
    disconnected_seconds: float = 0.0
    truth_unavailable_ticks: int = 0
    api_unavailable_ticks: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _example(fig: Figures, key: str, text: str, limit: int = 15) -> None:
    fig.examples.setdefault(key, [])
    if len(fig.examples[key]) < limit:
        fig.examples[key].append(text)


def judge(ticks: Sequence[Tick], windows: Sequence[Window]) -> Figures:
    fig = Figures(ticks=len(ticks))
    t0 = ticks[0].t if ticks else 0.0
    fig.disconnected_windows = [
        {"start_s": round(w.start - t0, 2), "end_s": None if math.isinf(w.end) else round(w.end - t0, 2),
         "seconds": None if math.isinf(w.end) else round(w.end - w.start, 2), "cause": w.cause} for w in windows]
    last_t = ticks[-1].t if ticks else 0.0
    fig.disconnected_seconds = round(sum(min(w.end, last_t) - w.start for w in windows), 2)

    # per tick: uniqueid → (linkedid, channel), truth calls, row linkedids
    index: list[dict[str, tuple[str, str]] | None] = []
    truth: list[dict[str, str] | None] = []
    uid_linked: dict[str, str] = {}  # every channel ever seen
    linked_seen: set[str] = set()
    for tk in ticks:
        if tk.channels is None:
            index.append(None)
            truth.append(None)
            fig.truth_unavailable_ticks += 1
            continue
        idx = {ch["uniqueid"]: (ch["linkedid"], ch["channel"]) for ch in tk.channels}
        uid_linked.update({u: lc[0] for u, lc in idx.items()})
        index.append(idx)
        tc = truth_calls(tk.channels)
        truth.append(tc)
        linked_seen.update(tc)
        fig.peak_concurrent_calls = max(fig.peak_concurrent_calls, len(tc))
        fig.peak_concurrent_channels = max(fig.peak_concurrent_channels, len(tk.channels))
    legs = truth
    truth = sticky_truth(legs)
    fig.truth_answered_legs_unconnected = sum(
        1 for lg, st in zip(legs, truth, strict=True) if lg is not None and st is not None
        for k, v in st.items() if v == "Answered" and lg[k] != "Answered")
    fig.api_unavailable_ticks = sum(1 for tk in ticks if tk.rows is None)

    def row_linked(j: int) -> set[str] | None:
        rows, idx = ticks[j].rows, index[j]
        if rows is None or idx is None:
            return None
        return {idx[r["uniqueid"]][0] if r["uniqueid"] in idx else r["uniqueid"] for r in rows}

    def api_status(j: int, row_id: str) -> str | None:
        rows = ticks[j].rows if 0 <= j < len(ticks) else None
        if rows is None:
            return None
        return next((r["status"] for r in rows if r["id"] == row_id), None)

    def neighbours(i: int) -> list[int]:
        return [j for j in (i - 1, i + 1) if 0 <= j < len(ticks)]

    # API series: Answered → Ringing per row id; B-leg rows
    last_status: dict[str, str] = {}
    flipped: set[str] = set()
    b_rows: set[str] = set()
    for i, tk in enumerate(ticks):
        if tk.rows is None:
            continue
        fig.peak_api_rows = max(fig.peak_api_rows, len(tk.rows))
        for r in tk.rows:
            rid = r["id"]
            if last_status.get(rid) == "Answered" and r["status"] == "Ringing":
                fig.answered_to_ringing += 1
                flipped.add(rid)
                in_window = any(w.covers(tk.t) for w in windows)
                fig.answered_to_ringing_in_windows += in_window
                idx_i, tc_i = index[i] or {}, truth[i] or {}
                t_status = tc_i.get(idx_i[r["uniqueid"]][0]) if r["uniqueid"] in idx_i else None
                fig.answered_to_ringing_truth_ringing += t_status == "Ringing"
                _example(fig, "answered_to_ringing", f"t={tk.t - t0:.1f}s id={rid} uniqueid={r['uniqueid']} "
                                                     f"channel={r['channel']} truth={t_status} "
                                                     f"in_disconnected_window={in_window}")
            last_status[rid] = r["status"]
            linked = uid_linked.get(r["uniqueid"])
            if LOCAL_B.match(r["channel"]) or (linked is not None and linked != r["uniqueid"]):
                fig.b_leg_row_instants += 1
                if rid not in b_rows:
                    _example(fig, "b_leg_rows", f"t={tk.t - t0:.1f}s id={rid} uniqueid={r['uniqueid']} "
                                                f"channel={r['channel']} linkedid={linked}")
                b_rows.add(rid)
    fig.answered_to_ringing_calls = len(flipped)
    fig.calls_seen, fig.api_rows_seen = len(linked_seen), len(last_status)
    fig.b_leg_rows = len(b_rows)

    # judged instants: both sides there, the session up, outside every disconnected window
    for i, tk in enumerate(ticks):
        cur_idx, cur_tc = index[i], truth[i]
        if tk.rows is None or cur_idx is None or cur_tc is None or tk.server is None or not tk.server.get("connected"):
            continue
        if any(w.covers(tk.t) for w in windows):
            continue
        fig.judged_instants += 1
        ok = True
        for r in tk.rows:  # status of the calls present in both
            if r["uniqueid"] not in cur_idx:
                if not any(index[j] is not None and r["uniqueid"] in (index[j] or {}) for j in neighbours(i)):
                    fig.api_rows_without_channel += 1
                    _example(fig, "api_rows_without_channel", f"t={tk.t - t0:.1f}s id={r['id']} "
                                                              f"uniqueid={r['uniqueid']} channel={r['channel']}")
                continue
            linked, chan = cur_idx[r["uniqueid"]]
            if chan != r["channel"]:
                fig.channel_name_mismatches += 1
                _example(fig, "channel_name_mismatches", f"t={tk.t - t0:.1f}s api={r['channel']} truth={chan}")
            want = cur_tc.get(linked)
            if want is None:
                continue
            fig.status_checked += 1
            forgiven = (r["status"] == want
                        or any(truth[j] is not None and (truth[j] or {}).get(linked) != want for j in neighbours(i))
                        or any(api_status(j, r["id"]) == want for j in neighbours(i)))
            if forgiven:
                fig.status_agreeing += 1
            else:
                ok = False
                _example(fig, "status_disagreements", f"t={tk.t - t0:.1f}s id={r['id']} uniqueid={r['uniqueid']} "
                                                      f"api={r['status']} truth={want} channel={r['channel']}")
        if ok:
            fig.agreeing_instants += 1
        near = [row_linked(j) for j in [i, *neighbours(i)]]
        for linked in cur_tc:  # every truth call shows in the API (within the slack)
            if any(s is not None and linked in s for s in near):
                continue
            if all(truth[j] is not None and linked not in (truth[j] or {}) for j in neighbours(i)):
                continue  # a call seen at one instant only: began and ended within the slack
            fig.calls_missing_from_api += 1
            _example(fig, "calls_missing_from_api", f"t={tk.t - t0:.1f}s linkedid={linked} status={cur_tc[linked]}")
    if fig.judged_instants:
        fig.agreement_pct = round(100.0 * fig.agreeing_instants / fig.judged_instants, 3)
    return fig


def ghosts(tick: Tick) -> list[str]:
    """Rows of ``tick`` whose uniqueid is no live channel at the same tick."""
    live = {ch["uniqueid"] for ch in tick.channels or ()}
    return [f"id={r['id']} uniqueid={r['uniqueid']} channel={r['channel']} status={r['status']}"
            for r in tick.rows or () if r["uniqueid"] not in live]
