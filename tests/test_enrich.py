"""Enrichment: the real traces replayed through the tracker and enriched with the demo data, call by
call; localization and longest-prefix edge cases on synthetic data."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.live.enrich import DestinationIndex, Enricher, Localizer
from collector.live.table import LiveTable
from collector.refdata.importer import load_demo
from collector.refdata.index import RefIndex
from collector.refdata.model import (
    NO_ENRICHMENT,
    Destination,
    Device,
    Did,
    Direction,
    Enrichment,
    LocationRule,
    Provider,
    RefData,
    User,
)
from collector.refdata.store import load_refdata
from collector.tools.timeline import iter_trace_messages, timeline
from collector.tracking.calls import CallStatus, CallView, Leg
from collector.tracking.tracker import CallTracker

TRACES = Path(__file__).parent / "traces"


@pytest.fixture(scope="module")
def enricher(tmp_path_factory: pytest.TempPathFactory) -> Enricher:
    """The demo data the way the daemon gets it: SQLite → RefData → RefIndex → Enricher."""
    db = tmp_path_factory.mktemp("ref") / "collector.db"
    load_demo(db)
    return Enricher(RefIndex.build(load_refdata(db)))


Replay = dict[str, list[tuple[CallView, Enrichment]]]


def replay(enricher: Enricher, *names: str, step: float = 0.5) -> Replay:
    """Per Linkedid, in order, every distinct (view, enrichment) the timeline shows."""
    out: Replay = {}
    for frame in timeline(iter_trace_messages([TRACES / n for n in names]), step=step):
        for call in frame.calls:
            seen = out.setdefault(call.linkedid, [])
            item = (call, enricher(call))
            if not seen or seen[-1] != item:
                seen.append(item)
    return out


def calls_of(r: Replay) -> list[list[tuple[CallView, Enrichment]]]:
    """The calls in start order, each cut to the views while its caller's A-leg is still there (the
    tracker shows the surviving B-leg as the A-leg for a moment after the caller hung up)."""
    return [[(c, e) for c, e in views if c.uniqueid == lid] for lid, views in r.items()]


def answered(views: list[tuple[CallView, Enrichment]]) -> list[Enrichment]:
    return [e for c, e in views if c.status is CallStatus.ANSWERED]


def distinct(values: Iterable[object]) -> list[object]:
    out: list[object] = []
    for v in values:
        if not out or out[-1] != v:
            out.append(v)
    return out


def src(e: Enrichment) -> tuple[object, ...]:
    return (e.user_id, e.user, e.owner_id, e.src_device_id, e.device_type, e.device_name,
            e.device_extension, e.device_istrunk, e.device_ani)


def dst(e: Enrichment) -> tuple[object, ...]:
    return (e.has_dst, e.dst_user_id, e.dst_user, e.dst_owner_id, e.dst_device_id, e.dst_device_type,
            e.dst_device_name)


def dest(e: Enrichment) -> tuple[object, ...]:
    return (e.localized_dst, e.direction_code, e.direction_name, e.destination_name, e.destination_prefix,
            e.destinationgroup_id)


ALICE = (2, "Alice Office", 0, 1, "SIP", "101", "101", 0, 0)
BOB = (3, "Bob Sales", 0, 2, "SIP", "102", "102", 0, 0)
CAROL = (5, "Carol Warehouse", 4, 3, "IAX2", "201", "201", 0, 0)  # the reseller's user
NOBODY = (None, "", None, None, "", "", "", None, None)
TO_ALICE = (True, 2, "Alice Office", 0, 1, "SIP", "101")
TO_BOB = (True, 3, "Bob Sales", 0, 2, "SIP", "102")
TO_CAROL = (True, 5, "Carol Warehouse", 4, 3, "IAX2", "201")
NO_DST = (False, None, "", None, None, "", "")


# ------------------------------------------------------------------------------------------- traces
def test_basic_outbound(enricher: Enricher) -> None:
    [call] = calls_of(replay(enricher, "basic_outbound.ami"))
    last = call[-1][1]
    assert src(last) == ALICE
    assert (last.provider_id, last.provider_name, last.provider_owner_id) == (1, "prov1", 0)
    # the seed's own example: 0063727007886 → 63727007886, PHL Philippines proper
    assert dest(last) == ("63727007886", "PHL", "Philippines", "Philippines proper", "63", 1)
    assert dst(last) == NO_DST and last.did_id is None
    assert answered(call) and all(e.provider_name == "prov1" for e in answered(call))


def test_failover_provider_follows_the_current_trunk(enricher: Enricher) -> None:
    # the prov1 attempt lives only a few ms: sample the timeline finely
    a, b, c, d = calls_of(replay(enricher, "dev_failover.ami", step=0.001))
    germany_mobile = ("DEU", "Germany", "Germany mobile", "4917", 8)

    # a) 102: prov1 busy → prov2 answers
    assert all(src(e) == BOB for _, e in a)
    assert [p for p in distinct(e.provider_name for _, e in a) if p] == ["prov1", "prov2"]
    assert {(e.provider_id, e.provider_name) for e in answered(a)} == {(2, "prov2")}
    assert all(dest(e) == ("49170096300", *germany_mobile) for _, e in a)
    # b) IAX2 201 (the reseller's user): prov1 answers directly
    assert all(src(e) == CAROL for _, e in b)
    assert {e.provider_name for _, e in b} == {"", "prov1"}
    assert {e.provider_id for e in answered(b)} == {1}
    # c) 102: both providers fail; never answered; ends without a provider leg
    assert not answered(c)
    assert [p for p in distinct(e.provider_name for _, e in c) if p] == ["prov1", "prov2"]
    assert c[-1][1].provider_id is None and dest(c[-1][1]) == ("49170099096", *germany_mobile)
    # d) 101 (location "Vilnius office": its own rule does not apply, Global's 00 does): prov1 → prov2
    assert all(src(e) == ALICE for _, e in d)
    assert [p for p in distinct(e.provider_name for _, e in d) if p] == ["prov1", "prov2"]
    assert {e.provider_name for e in answered(d)} == {"prov2"}
    assert all(e.localized_dst == "49170097200" and not e.has_dst for _, e in d)


def test_inbound_did_calls(enricher: Enricher) -> None:
    first, second = calls_of(replay(enricher, "inbound_did.ami"))
    for views, did, to, in [(first, (1, "37052000001"), TO_BOB), (second, (3, "37052000003"), TO_CAROL)]:
        for _call, e in views:
            assert src(e) == NOBODY  # the caller is the PSTN, on trunk prov1
            assert (e.provider_id, e.provider_name) == (1, "prov1")
            assert (e.did_id, e.did) == did
            assert dst(e) == to  # from the DID's device, ringing or answered
            assert dest(e) == (did[1], "LTU", "Lithuania", "Lithuania Vilnius", "3705", 3)
        assert answered(views)
    assert second[-1][1].dst_owner_id == 4  # visible to the reseller through his user's device


def test_local_internal_calls(enricher: Enricher) -> None:
    a, b, c, d, e, f = calls_of(replay(enricher, "local_internal.ami", step=0.01))
    internal = ("", "", "", "", "", None)

    # a) 101 → 102 direct
    assert all(src(x) == ALICE and x.provider_id is None for _, x in a)
    assert {dst(x) for _, x in a if x.has_dst} == {TO_BOB}
    assert dest(a[-1][1]) == ("102",) + internal[1:]
    # b) 101 → 500 ring group through Local channels: nothing until a device leg rings; 201 answers
    assert dst(b[0][1]) == NO_DST
    assert {dst(x) for x in answered(b)} == {TO_CAROL}
    assert all(x.provider_id is None and x.localized_dst == "500" for _, x in b)
    # c) 102 → 0037052000000 via LCR Local/…@lcr/n → SIP/prov1 (4 channels)
    legs = {leg.channel.split("-")[0] for call, _ in c for leg in call.legs}
    assert legs == {"SIP/102", "Local/0037052000000@lcr", "SIP/prov1"}
    assert all(src(x) == BOB and not x.has_dst for _, x in c)
    assert {(x.provider_id, x.provider_name) for x in answered(c)} == {(1, "prov1")}
    assert dest(c[-1][1]) == ("37052000000", "LTU", "Lithuania", "Lithuania Vilnius", "3705", 3)
    # d) IAX2 201 → 101
    assert all(src(x) == CAROL for _, x in d)
    assert {dst(x) for x in answered(d)} == {TO_ALICE}
    # e)+f) 201 → 102, picked up by 101 (*8): the destination becomes the device that picked up
    assert all(src(x) == CAROL for _, x in e)
    assert distinct(dst(x) for _, x in e if x.has_dst) == [TO_BOB, TO_ALICE]
    assert {dst(x) for x in answered(e)} == {TO_ALICE}
    assert all(src(x) == ALICE and dest(x) == ("*8",) + internal[1:] for _, x in f)


def test_queue_did_without_device_and_internal_queue_call(enricher: Enricher) -> None:
    abandoned, to_queue = calls_of(replay(enricher, "dev_queue.ami"))
    # a) PSTN → DID 37052000007 → queue 700; members ring, nobody answers: DID known, dst_* empty
    for _, e in abandoned:
        assert (e.did_id, e.did, e.provider_name) == (4, "37052000007", "prov1")
        assert dst(e) == (True, None, "", None, None, "", "")
    # b) 101 → 700: both members ring, 201 answers
    assert {dst(x) for x in answered(to_queue)} == {TO_CAROL}
    assert all(src(x) == ALICE for _, x in to_queue)


def test_click_to_call_originate(enricher: Enricher) -> None:
    c2c = calls_of(replay(enricher, "dev_originate_ivr.ami"))[0]
    e = answered(c2c)[-1]
    assert src(e) == BOB and e.provider_name == "prov1"
    assert dest(e) == ("44770095211", "GBR", "United Kingdom", "United Kingdom mobile", "447", 6)


def test_load_trace_every_call_enriches_consistently(enricher: Enricher) -> None:
    """dev_load_drop (223 calls): every kind of call in bulk, including DID → ring group via Local."""
    by_kind: dict[str, int] = {}
    ring_group_answered = resynced = 0
    for views in calls_of(replay(enricher, "dev_load_drop.ami.gz", "dev_load_drop.part2.ami.gz")):
        for call, e in views:
            number = call.dst
            if call.channel.startswith("SIP/prov1-"):
                by_kind["inbound"] = by_kind.get("inbound", 0) + 1
                assert e.provider_name == "prov1" and e.has_dst and src(e) == NOBODY
                did = {"37052000001": 1, "37052000002": 2, "37052000003": 3}.get(number)
                if did is None:  # resynced after the recorder gap: the A-leg is already at exten 500
                    assert number == "500" and e.did_id is None and e.localized_dst == "500"
                    assert dst(e) in (TO_BOB, TO_CAROL, (True, None, "", None, None, "", ""))
                    resynced += 1
                    continue
                assert e.did_id == did and e.localized_dst == number and e.destination_prefix == "3705"
                if did == 1:
                    assert dst(e) == TO_BOB
                elif did == 3:
                    assert dst(e) == TO_CAROL
                else:  # ring group: the device that answered, else the DID's user
                    up = {leg.channel.split("-")[0] for leg in call.legs[1:]
                          if leg.state == 6 and not leg.is_local}
                    if up:
                        ring_group_answered += 1
                        assert dst(e) in (TO_BOB, TO_CAROL) and e.dst_device_name in {u[-3:] for u in up}
                    else:
                        assert dst(e) == (True, 6, "frontdesk", 0, None, "", "")
                continue
            assert src(e) in (ALICE, BOB, CAROL), call.channel
            if number.startswith("00"):
                kind = "outbound"
                assert e.localized_dst == number[2:] and not e.has_dst
                code = {"0044": "GBR", "0049": "DEU", "0037": "LTU"}[number[:4]]
                assert e.direction_code == code and e.destinationgroup_id is not None
                if call.status is CallStatus.ANSWERED:
                    assert e.provider_name in ("prov1", "prov2")
                if code != "DEU":
                    assert e.provider_name in ("", "prov1")
            else:
                kind = "internal"
                assert e.provider_id is None and e.direction_code == ""
                if call.status is CallStatus.ANSWERED:
                    assert e.has_dst and dst(e) in (TO_ALICE, TO_BOB, TO_CAROL)
            by_kind[kind] = by_kind.get(kind, 0) + 1
    assert set(by_kind) == {"inbound", "outbound", "internal"}
    assert ring_group_answered > 0 and resynced > 0


# ------------------------------------------------------------------------------------------- synthetic calls
def view(channel: str, number: str, *legs: tuple[str, int, float], status: CallStatus = CallStatus.RINGING,
         ) -> CallView:
    a = Leg("1.1", channel, 6 if status is CallStatus.ANSWERED else 4, channel.startswith("Local/"), 0.0)
    b = [Leg(f"1.{i}", ch, state, ch.startswith("Local/"), created)
         for i, (ch, state, created) in enumerate(legs, 2)]
    return CallView(server_id=1, linkedid="1.1", uniqueid="1.1", channel=channel, dst_channel="",
                    status=status, src="101", src_name="", dst=number, start_time=0.0, answer_time=None,
                    legs=(a, *b))


def test_no_matching_destination(enricher: Enricher) -> None:
    e = enricher(view("SIP/101-0000aaaa", "0081312345678", ("SIP/prov1-0000aaab", 5, 1.0)))
    assert src(e) == ALICE and e.provider_name == "prov1"
    assert e.localized_dst == "81312345678"  # localized, but Japan is not in the demo destinations
    assert (e.direction_code, e.direction_name, e.destination_name, e.destination_prefix,
            e.destinationgroup_id) == ("", "", "", "", None)


def test_unknown_caller_and_garbage_never_raise(enricher: Enricher) -> None:
    e = enricher(view("SIP/999-00000001", "0044123"))
    assert src(e) == NOBODY and e.localized_dst == "44123" and e.destination_name == "United Kingdom proper"
    for channel in ("", "garbage", "SIP/", "Local/;2", "DAHDI/i1/0044-1"):
        assert isinstance(enricher(view(channel, "")), Enrichment)
    assert enricher(view("SIP/101-1", "", status=CallStatus.ANSWERED)).localized_dst == ""


def test_enrich_failure_is_contained(enricher: Enricher, caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Enricher):
        __slots__ = ()

        def _enrich(self, call: CallView) -> Enrichment:
            raise RuntimeError("bug")

    broken = Broken(enricher.index)
    with caplog.at_level(logging.ERROR, logger="collector.live.enrich"):
        assert broken(view("SIP/101-1", "102")) is NO_ENRICHMENT
    assert "enrichment failed" in caplog.text


def test_pjsip_channel_finds_the_sip_device(enricher: Enricher) -> None:
    e = enricher(view("PJSIP/101-00000001", "102", ("PJSIP/102-00000002", 6, 1.0)))
    assert src(e) == ALICE and dst(e) == TO_BOB


def test_provider_prefers_the_up_leg_then_the_newest(enricher: Enricher) -> None:
    ringing_both = view("SIP/102-1", "0049170000000", ("SIP/prov1-2", 5, 1.0), ("SIP/prov2-3", 5, 2.0))
    assert enricher(ringing_both).provider_name == "prov2"
    prov1_up = view("SIP/102-1", "0049170000000", ("SIP/prov1-2", 6, 1.0), ("SIP/prov2-3", 5, 2.0),
                    status=CallStatus.ANSWERED)
    assert enricher(prov1_up).provider_name == "prov1"
    via_local = view("SIP/102-1", "0049170000000", ("Local/x@lcr-1;1", 6, 1.0), ("Local/x@lcr-1;2", 6, 1.0))
    assert enricher(via_local).provider_id is None  # a Local channel is never the provider


def test_inbound_did_by_localized_number_and_unknown_did(enricher: Enricher) -> None:
    e = enricher(view("SIP/prov2-1", "+37052000001"))
    assert (e.did_id, e.provider_name, e.localized_dst) == (1, "prov2", "37052000001")
    assert dst(e) == TO_BOB
    unknown = enricher(view("SIP/prov1-1", "37052000999", ("IAX2/201-5", 5, 1.0)))
    assert unknown.did_id is None and unknown.has_dst and dst(unknown) == TO_CAROL


def test_bad_reference_data_degrades_not_fails() -> None:
    data = RefData(
        users=(User(0, "admin", "admin"),),
        devices=(Device(1, user_id=42, device_type="SIP", name="101", location_id=7),),  # no user 42
        directions=(Direction(1, "Germany", "DEU"),),
        destinations=(Destination(1, "49", "DEU", "Germany"), Destination(2, "491", "XXX", "orphan")),
        dids=(Did(1, "49301", device_id=99, user_id=77),),  # dangling device and user
        providers=(Provider(1, "p", "SIP", "p"),),
    )
    en = Enricher.from_refdata(data)
    e = en(view("SIP/101-1", "0049123"))
    assert (e.src_device_id, e.user_id, e.user) == (1, None, "")
    assert e.localized_dst == "0049123" and e.destination_name == ""  # no rules at all
    assert en(view("SIP/101-1", "491234")).destination_prefix == "49"  # the orphan prefix is skipped
    inbound = en(view("SIP/p-1", "49301"))
    assert inbound.did_id == 1 and dst(inbound) == (True, None, "", None, None, "", "")


def test_enricher_plugs_into_the_live_table(enricher: Enricher) -> None:
    table = LiveTable(enrich=enricher)
    tracker = CallTracker()
    for msg in iter_trace_messages([TRACES / "basic_outbound.ami"]):
        table.apply(tracker.apply(1, msg))
        if len(table):
            row = table.rows()[0]
            assert row.info.user == "Alice Office"
            assert row.info.direction_code == "PHL"


# ------------------------------------------------------------------------------------------- localization
def rule(rid: int, cut: str, add: str, location_id: int = 1, minlen: int = 1, maxlen: int = 100,
         enabled: int = 1, lr_type: str = "dst") -> LocationRule:
    return LocationRule(rid, location_id, f"r{rid}", enabled, cut, add, minlen, maxlen, lr_type)


def test_localization_length_limits_are_inclusive() -> None:
    loc = Localizer([rule(1, "8", "370", minlen=9, maxlen=9)])
    assert loc.localize("861234567") == "37061234567"
    assert loc.localize("86123456") == "86123456"
    assert loc.localize("8612345678") == "8612345678"
    loc = Localizer([rule(1, "0", "", minlen=3, maxlen=5)])
    assert [loc.localize(n) for n in ("01", "012", "01234", "012345")] == ["01", "12", "1234", "012345"]


def test_localization_own_location_before_global() -> None:
    rules = [rule(1, "00", "", location_id=1), rule(2, "0", "370", location_id=2)]
    loc = Localizer(rules)
    # device in location 2: its own (shorter) rule wins although Global has a longer cut
    assert loc.localize("0063727007886", 2) == "370063727007886"
    assert loc.localize("0063727007886", 1) == "63727007886"
    # own location has no candidate → Global; an unknown location → Global
    assert loc.localize("+44", 2) == "+44"
    assert loc.localize("0044", 3) == "44"
    assert Localizer([rule(2, "0", "370", location_id=2, minlen=9, maxlen=9),
                      rule(1, "00", "")]).localize("0044207946", 2) == "44207946"


def test_localization_longest_cut_then_rule_id() -> None:
    loc = Localizer([rule(1, "0", "370"), rule(2, "00", ""), rule(3, "", "3705", minlen=7, maxlen=7)])
    assert loc.localize("0063727007886") == "63727007886"
    assert loc.localize("061234567") == "37061234567"
    assert loc.localize("2123456") == "37052123456"  # empty cut: prefix short local numbers
    assert loc.localize("21234567") == "21234567"
    # same cut: the lowest id whose limits fit; a rule that does not fit falls through to the next
    loc = Localizer([rule(5, "0", "B", maxlen=4), rule(4, "0", "A", minlen=6), rule(6, "0", "C")])
    assert [loc.localize(n) for n in ("0123", "012345", "01234")] == ["B123", "A12345", "C1234"]


def test_localization_ignores_disabled_and_src_rules() -> None:
    loc = Localizer([rule(1, "00", "", enabled=0), rule(2, "00", "X", lr_type="src")])
    assert loc.localize("0044") == "0044"
    assert loc.rule_for("0044") is None
    assert Localizer([]).localize("") == ""


# ------------------------------------------------------------------------------------------- longest prefix
def test_longest_prefix_lookup() -> None:
    idx = DestinationIndex([Destination(1, "49", "DEU", "Germany"), Destination(2, "4917", "DEU", "mobile"),
                            Destination(3, "491", "DEU", "x"), Destination(4, "4917", "DEU", "dup")])
    assert idx.longest("4917001").id == 2  # type: ignore[union-attr]
    assert idx.longest("4917").id == 2  # type: ignore[union-attr]
    assert idx.longest("4918").id == 3  # type: ignore[union-attr]
    assert idx.longest("4") is None
    assert idx.longest("") is None and idx.longest("33") is None
    assert len(idx) == 3


@settings(max_examples=200, deadline=None)
@given(prefixes=st.lists(st.text("0123", min_size=1, max_size=5), max_size=30),
       number=st.text("0123", max_size=8))
def test_longest_prefix_matches_brute_force(prefixes: list[str], number: str) -> None:
    dests = [Destination(i, p, "X", p) for i, p in enumerate(prefixes)]
    got = DestinationIndex(dests).longest(number)
    candidates = [d for d in dests if number.startswith(d.prefix)]
    want = max(candidates, key=lambda d: (len(d.prefix), -d.id)) if candidates else None
    assert got == want
