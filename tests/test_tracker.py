"""CallTracker unit behaviour on hand-written events (the real-trace checks are in test_truth.py)."""

from __future__ import annotations

from collector.ami.framing import BANNER_KEY
from collector.tracking.calls import CallStatus, peer_of
from collector.tracking.tracker import CallTracker
from tests.helpers import chan

A, B = "100.1", "100.2"


def _outbound(trk: CallTracker, server: int = 1, t0: float = 100.0) -> None:
    trk.apply(server, chan("Newchannel", A, ts=t0))
    trk.apply(server, chan("Newchannel", B, A, channel="SIP/prov1-00000002", state=0, ts=t0 + 0.1))
    trk.apply(server, chan("Newstate", B, A, channel="SIP/prov1-00000002", state=5, ts=t0 + 0.2))


def test_two_legs_with_one_linkedid_are_one_ringing_call() -> None:
    trk = CallTracker()
    _outbound(trk)
    [call] = trk.calls()
    assert (call.linkedid, call.uniqueid, call.channel) == (A, A, "SIP/101-00000001")
    assert call.dst_channel == "SIP/prov1-00000002"
    assert call.status is CallStatus.RINGING and call.answer_time is None
    assert call.dst == "0063727007886" and call.src == "101"


def test_b_leg_up_answers_the_call_at_the_event_time() -> None:
    trk = CallTracker()
    _outbound(trk)
    changes = trk.apply(1, chan("Newstate", B, A, channel="SIP/prov1-00000002", state=6, ts=103.5))
    assert [c.kind for c in changes] == ["updated"]
    [call] = trk.calls()
    assert call.status is CallStatus.ANSWERED and call.answer_time == 103.5


def test_a_leg_up_alone_is_not_an_answer() -> None:
    # Answer()/IVR puts the caller Up with nobody on the other side
    trk = CallTracker()
    trk.apply(1, chan("Newchannel", A))
    trk.apply(1, chan("Newstate", A, state=6, ts=101.0))
    assert trk.calls()[0].status is CallStatus.RINGING


def test_new_callerid_changes_src() -> None:
    trk = CallTracker()
    _outbound(trk)
    trk.apply(1, chan("NewCallerid", A, CallerIDNum="306984327345"))
    assert trk.calls()[0].src == "306984327345"


def test_hangup_of_all_legs_removes_the_call_and_a_late_event_cannot_resurrect_it() -> None:
    trk = CallTracker()
    _outbound(trk)
    trk.apply(1, chan("Hangup", B, A, channel="SIP/prov1-00000002", ts=105.0))
    changes = trk.apply(1, chan("Hangup", A, ts=105.1))
    assert [c.kind for c in changes] == ["removed"] and trk.calls() == []
    assert trk.apply(1, chan("NewCallerid", A, ts=105.2)) == []
    assert trk.calls() == []


def test_hangup_for_unknown_channel_changes_nothing() -> None:
    trk = CallTracker()
    assert trk.apply(1, chan("Hangup", "9.9")) == []


def test_local_pair_is_plumbing_inside_one_call() -> None:
    trk = CallTracker()
    trk.apply(1, chan("Newchannel", A))
    trk.apply(1, chan("Newchannel", "100.2", A, channel="Local/102@ringgroup-00000003;1", state=0))
    trk.apply(1, chan("Newchannel", "100.3", A, channel="Local/102@ringgroup-00000003;2", state=4))
    trk.apply(1, chan("Newchannel", "100.4", A, channel="SIP/102-00000005", state=5))
    [call] = trk.calls()
    assert call.dst_channel == "SIP/102-00000005" and len(call.legs) == 4
    trk.apply(1, chan("Newstate", "100.3", A, channel="Local/102@ringgroup-00000003;2", state=6))
    assert trk.calls()[0].status is CallStatus.RINGING  # a Local half going Up is no answer
    trk.apply(1, chan("Newstate", "100.4", A, channel="SIP/102-00000005", state=6, ts=104.0))
    assert trk.calls()[0].status is CallStatus.ANSWERED


def test_linkedid_change_moves_the_channel_and_drops_the_emptied_call() -> None:
    trk = CallTracker()
    trk.apply(1, chan("Newchannel", "50.1", channel="IAX2/201-8141"))
    trk.apply(1, chan("Newchannel", "60.9", channel="SIP/101-00000015"))
    assert len(trk.calls()) == 2
    changes = trk.apply(1, chan("Newstate", "60.9", "50.1", channel="SIP/101-00000015", state=6))
    assert {c.kind for c in changes} == {"removed", "updated"}
    [call] = trk.calls()
    assert call.linkedid == "50.1" and call.status is CallStatus.ANSWERED


def test_basic_bridge_gives_members_the_oldest_linkedid() -> None:
    # call pickup: the picker's new Linkedid is only visible in VarSet, which call,system drops
    trk = CallTracker()
    trk.apply(1, chan("Newchannel", "50.1", channel="IAX2/201-8141"))
    trk.apply(1, chan("Newchannel", "60.9", channel="SIP/101-00000015"))
    for uid in ("60.9", "50.1"):
        trk.apply(1, chan("BridgeEnter", uid, channel="x", state=6, BridgeUniqueid="br", BridgeType="basic"))
    [call] = trk.calls()
    assert call.linkedid == "50.1" and call.status is CallStatus.ANSWERED


def test_full_resync_adds_unknown_and_removes_missing_channels() -> None:
    trk = CallTracker()
    _outbound(trk)
    trk.apply(1, {BANNER_KEY: "9.0.0"})  # reconnect: the next snapshot is a full resync
    trk.apply(1, {"Response": "Success", "ActionID": "r1", "EventList": "start",
                  "Message": "Channels will follow"})
    item = chan("CoreShowChannel", "200.1", channel="IAX2/201-77", state=6, ActionID="r1",
                Duration="00:00:10", BridgeId="")
    item.pop("Timestamp")
    trk.apply(1, item)
    trk.apply(1, {"Event": "CoreShowChannelsComplete", "ActionID": "r1", "ListItems": "1"})
    [call] = trk.calls()
    assert call.linkedid == "200.1" and call.start_time == 100.2 - 10


def test_periodic_reconcile_needs_two_misses_and_spares_channels_touched_meanwhile() -> None:
    trk = CallTracker()
    _outbound(trk)
    trk.apply(1, {"Event": "CoreShowChannelsComplete", "ActionID": "x"})  # stray: ignored

    def snapshot(aid: str, touch: bool = False) -> None:
        trk.apply(1, {"Response": "Success", "ActionID": aid, "EventList": "start",
                      "Message": "Channels will follow"})
        if touch:
            trk.apply(1, chan("Newstate", A, state=4, ts=110.0))
        trk.apply(1, {"Event": "CoreShowChannelsComplete", "ActionID": aid, "ListItems": "0"})

    snapshot("full")  # first snapshot of the session: full sweep of what was not touched
    assert trk.calls() == []
    _outbound(trk, t0=200.0)  # the same Uniqueids again, later: a Newchannel older than the sweep is stale
    trk.apply(1, chan("Newchannel", "300.1", channel="SIP/102-00000009"))
    snapshot("p1", touch=True)
    assert len(trk.calls()) == 2  # one miss is not enough
    snapshot("p2", touch=True)
    calls = trk.calls()
    assert [c.linkedid for c in calls] == [A]  # A was touched during each list; 300.1 missed twice
    assert [leg.uniqueid for leg in calls[0].legs] == [A]


def test_snapshot_does_not_resurrect_a_hung_up_channel() -> None:
    trk = CallTracker()
    _outbound(trk)
    trk.apply(1, chan("Hangup", B, A, channel="SIP/prov1-00000002"))
    trk.apply(1, {"Response": "Success", "ActionID": "r", "EventList": "start", "Message": "Channels will follow"})
    trk.apply(1, chan("CoreShowChannel", A, ActionID="r"))
    trk.apply(1, chan("CoreShowChannel", B, A, channel="SIP/prov1-00000002", ActionID="r"))
    trk.apply(1, {"Event": "CoreShowChannelsComplete", "ActionID": "r"})
    assert [leg.uniqueid for leg in trk.calls()[0].legs] == [A]


def test_shutdown_drops_only_that_servers_calls_and_reused_uniqueid_is_new() -> None:
    trk = CallTracker()
    _outbound(trk, server=1)
    _outbound(trk, server=2)
    trk.apply(1, {"Event": "Shutdown", "Shutdown": "Cleanly", "Restart": "True", "Timestamp": "200.0"})
    assert [c.server_id for c in trk.calls()] == [2]
    trk.apply(1, chan("Newchannel", A, ts=300.0))  # counters restarted: same Uniqueid, new call
    assert {c.server_id for c in trk.calls()} == {1, 2}


def test_malformed_and_unknown_events_never_raise() -> None:
    trk = CallTracker()
    for msg in ({"Event": "Newchannel"}, {"Event": "Hangup"}, {"Event": "Bogus", "Uniqueid": "1"},
                {"Event": "Newstate", "Uniqueid": "1", "ChannelState": "x", "Timestamp": "nan?"},
                {"Response": "Error"}, {}, {"Event": "DialBegin", "DestUniqueid": "7"},
                {"Event": "FullyBooted", "Uptime": "abc"}):
        trk.apply(1, msg)
    assert trk.stats(1).malformed >= 1


def test_peer_of_channel_names() -> None:
    assert peer_of("SIP/101-0000000d") == ("SIP", "101")
    assert peer_of("IAX2/201-14296") == ("IAX2", "201")
    assert peer_of("PJSIP/trunk-a-00000001") == ("PJSIP", "trunk-a")
    assert peer_of("Local/102@ringgroup-00000003;1") == ("Local", "102@ringgroup")
    assert peer_of("SIP/prov1/0044770096100") == ("SIP", "prov1")
    assert peer_of("garbage") == ("", "")
