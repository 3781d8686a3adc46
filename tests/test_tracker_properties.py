"""Hypothesis: arbitrary drops and local reorderings of real call flows never break the tracker.

Invariants: ``apply`` never raises and never hits an internal error; no call is shown twice and no
channel belongs to two calls; after a full resync that lists what Asterisk really has (here: nothing, as
at the end of the trace) no call is left.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.ami.framing import BANNER_KEY
from collector.ami.session import NOISE_EVENTS
from collector.tools.timeline import iter_trace_messages
from collector.tracking.tracker import CallTracker
from tests.helpers import trace_paths

FLOWS = {name: [m for m in iter_trace_messages(trace_paths(name)) if m.get("Event") not in NOISE_EVENTS
                and "ActionID" not in m and "Response" not in m]
         for name in ("local_internal", "dev_failover", "dev_transfers", "dev_queue", "inbound_did")}


def _check_invariants(trk: CallTracker) -> None:
    calls = trk.calls(1)
    linkedids = [c.linkedid for c in calls]
    assert len(linkedids) == len(set(linkedids))
    uids = [leg.uniqueid for c in calls for leg in c.legs]
    assert len(uids) == len(set(uids))
    for c in calls:
        assert c.legs
        assert c.legs[0].uniqueid == c.uniqueid or c.uniqueid not in {leg.uniqueid for leg in c.legs}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(FLOWS)), data=st.data())
def test_drops_and_swaps_never_break_invariants(name: str, data: st.DataObject) -> None:
    flow = list(FLOWS[name])
    n = len(flow)
    drops = data.draw(st.sets(st.integers(0, n - 1), max_size=max(1, n // 5)), label="drops")
    swaps = data.draw(st.lists(st.integers(0, n - 2), max_size=n // 4), label="swaps")
    for i in swaps:
        flow[i], flow[i + 1] = flow[i + 1], flow[i]
    trk = CallTracker()
    for i, msg in enumerate(flow):
        if i in drops:
            continue
        trk.apply(1, msg)
        if i % 25 == 0:
            _check_invariants(trk)
    _check_invariants(trk)
    assert trk.stats(1).errors == 0
    # reconnect + full resync listing nothing: every ghost the drops left must go
    trk.apply(1, {BANNER_KEY: "9.0.0"})
    trk.apply(1, {"Response": "Success", "ActionID": "r", "EventList": "start", "Message": "Channels will follow"})
    trk.apply(1, {"Event": "CoreShowChannelsComplete", "ActionID": "r", "ListItems": "0"})
    assert trk.calls(1) == []


@settings(max_examples=40, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["Event", "Uniqueid", "Linkedid", "Channel", "ChannelState",
                                                 "DestUniqueid", "BridgeUniqueid", "Timestamp", "ActionID"]),
                                st.text(max_size=12), max_size=8), max_size=40),
       st.lists(st.sampled_from(["Newchannel", "Newstate", "Hangup", "DialBegin", "BridgeEnter", "BridgeLeave",
                                 "CoreShowChannel", "CoreShowChannelsComplete", "Rename", "Shutdown",
                                 "FullyBooted", "LocalBridge"]), min_size=40, max_size=40))
def test_garbage_messages_never_raise(msgs: list[dict[str, str]], events: list[str]) -> None:
    trk = CallTracker()
    for msg, ev in zip(msgs, events, strict=False):
        msg.setdefault("Event", ev)
        trk.apply(1, msg)
    _check_invariants(trk)
    assert trk.stats(1).errors == 0
