"""The tracker against real Asterisk 20 ground truth (CoreShowChannels every 0.5 s), every bundled trace.

Bar (issue 2): the timeline agrees with the truth at ≥ 99.5 % of instants (a call starting/ending within
one truth interval may be either way; instants while the recorder was disconnected are not judged),
statuses agree, answer times are within 0.5 s of the first truth instant showing the call answered, and
nothing is left once the truth is empty.
"""

from __future__ import annotations

import io
import json

import pytest

from collector.tools.timeline import iter_trace_messages, timeline, write_timeline
from collector.tracking.calls import PHASES
from tests.helpers import ALL_SCENARIOS, trace_paths, truth_path
from tests.truth import compare, load_truth


@pytest.mark.parametrize("name", ALL_SCENARIOS)
def test_tracker_matches_ground_truth(name: str) -> None:
    cmp = compare(trace_paths(name), truth_path(name))
    assert cmp.instants > 20
    assert cmp.ratio >= 0.995, "\n".join(cmp.mismatches[:10])
    assert cmp.status_agreeing == cmp.status_checked, "\n".join(cmp.mismatches[:10])
    truth = load_truth(truth_path(name))
    ever_answered = any("Answered" in calls.values() for _t, calls, _raw in truth)
    assert bool(cmp.answer_errors) == ever_answered
    late = {lid: err for lid, err in cmp.answer_errors.items() if err > 0.5}
    assert not late, late
    assert truth[-1][1] == {}
    assert cmp.final_calls == []


def test_reconnect_trace_needs_the_resync() -> None:
    # without the part2 resync, calls that ended during the gap would stay as ghosts
    paths = trace_paths("ami_reconnect")
    frames = list(timeline(iter_trace_messages(paths[:1])))
    assert frames[-1].calls, "the first session alone must end with calls up"
    assert list(timeline(iter_trace_messages(paths)))[-1].calls == []


def test_timeline_cli_output_shape() -> None:
    out = io.StringIO()
    n = write_timeline(trace_paths("basic_outbound"), out, step=0.5, server_id=7)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert n == len(lines) > 10
    ts = [line["t"] for line in lines]
    assert ts == sorted(ts) and all(abs(t * 2 - round(t * 2)) < 1e-6 for t in ts)
    answered = [c for line in lines for c in line["calls"] if c["status"] == "Answered"]
    assert answered and set(answered[0]) == {"linkedid", "uniqueid", "channel", "dst_channel", "status", "src",
                                              "dst", "answer_time", "server_id"}
    call = answered[0]
    assert call["server_id"] == 7 and call["src"] == "306984327345" and call["dst"] == "0063727007886"
    assert call["channel"].startswith("SIP/101-") and call["dst_channel"].startswith("SIP/prov1-")
    assert isinstance(call["answer_time"], float) and call["linkedid"] == call["uniqueid"]
    assert lines[-1]["calls"] == []


@pytest.mark.parametrize("name", ALL_SCENARIOS)
def test_answered_stays_answered_until_gone(name: str) -> None:
    # MOR's rule: once answered, a call is Answered (with its answer_time) in every frame until it
    # ends; dev_transfers' blind transfer used to show the call Ringing again while the new target rang
    seen: dict[str, float] = {}
    for frame in timeline(iter_trace_messages(trace_paths(name))):
        for call in frame.calls:
            assert (call.status.value == "Answered") == (call.answer_time is not None), (frame.t, call)
            if call.linkedid in seen:
                assert call.status.value == "Answered" and call.answer_time == seen[call.linkedid], (frame.t, call)
            elif call.answer_time is not None:
                seen[call.linkedid] = call.answer_time
            assert call.phase in ("", *PHASES)
            assert not call.phase or call.answer_time is not None
        live = {c.linkedid for c in frame.calls}
        for lid in [lid for lid in seen if lid not in live]:
            del seen[lid]  # gone: a reused Linkedid would be a new call


def test_phase_says_what_the_legs_of_an_answered_call_do() -> None:
    # dev_transfers: a call put on hold, and a blind transfer ringing a new target, both stay Answered
    phases: dict[str, set[str]] = {}
    for frame in timeline(iter_trace_messages(trace_paths("dev_transfers"))):
        for call in frame.calls:
            phases.setdefault(call.phase, set()).add(call.status.value)
    assert phases.keys() == {"", "on_hold", "transferring"}
    assert phases["on_hold"] == phases["transferring"] == {"Answered"}


def test_timeline_holds_the_state_through_a_reconnect_gap() -> None:
    # a collector's own login (Events: call,system) has no SuccessfulAuth: the reconnect's resync answer is then
    # the first thing of the new session, without a Timestamp; it belongs at the session's first timestamped
    # event, and the frames of the gap show the calls as they were before the reconnect
    first, second = trace_paths("ami_reconnect")
    before = list(timeline(iter_trace_messages([first])))
    second_msgs = [m for m in iter_trace_messages([second]) if m.get("Event") != "SuccessfulAuth"]
    first_ts = next(float(m["Timestamp"]) for m in second_msgs if m.get("Timestamp"))
    msgs = [*iter_trace_messages([first]), *second_msgs]
    frames = list(timeline(msgs))
    last_before = [c.linkedid for c in before[-2].calls]
    gap = [f for f in frames if before[-2].t <= f.t < first_ts]
    assert len(gap) > 2 and last_before
    for f in gap:
        assert [c.linkedid for c in f.calls] == last_before, f.t
    assert list(timeline(msgs))[-1].calls == []
