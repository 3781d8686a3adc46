"""The pure history sampler: per 15 s bucket, the maximum of each series equals a brute-force maximum over
the event sequence, with each series counted by the API's own visibility rule (``api.scope.Scope``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial

from hypothesis import given, settings
from hypothesis import strategies as st

from api.auth import Principal, Role
from api.scope import Scope
from collector.live.history import BUCKET_SECONDS, HistorySampler, Row, bucket_of
from collector.live.table import LiveCall, LiveTable
from collector.refdata.index import RefIndex
from collector.refdata.model import Enrichment, RefData, User
from collector.tracking.calls import CallChange, CallStatus, CallView

USERS = (
    User(0, "admin", "admin", "A", "D", owner_id=0),
    User(2, "res", "reseller", "R", "S", owner_id=0),
    User(3, "ruser", "user", "R", "U", owner_id=2),
    User(4, "alice", "user", "A", "L", owner_id=0),
    User(6, "res2", "reseller", "R", "2", owner_id=0),
    User(7, "r2user", "user", "R", "7", owner_id=6),
)
REFS = RefIndex.build(RefData(users=USERS))
BY_ID = {u.id: u for u in USERS}
RESELLERS = frozenset(u.id for u in USERS if u.usertype == "reseller")


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def call(key: int, server: int, caller: int | None, callee: int | None, answered: bool, t: float = 0.0) -> LiveCall:
    cv = CallView(server_id=server, linkedid=f"L{key}", uniqueid=f"L{key}", channel=f"SIP/{key}", dst_channel="",
                  status=CallStatus.ANSWERED if answered else CallStatus.RINGING, src="1", src_name="", dst="2",
                  start_time=t, answer_time=t if answered else None, legs=())
    info = Enrichment(
        user_id=caller, owner_id=BY_ID[caller].owner_id if caller is not None else None,
        dst_user_id=callee, dst_owner_id=BY_ID[callee].owner_id if callee is not None else None)
    return LiveCall(key, cv, info)


def on_server(sid: int, row: LiveCall) -> bool:
    return row.call.server_id == sid


def visible_series(rows: Sequence[LiveCall]) -> dict[str, tuple[int, int]]:
    """Every series' (total, answered) by brute force, visibility decided by api.scope."""
    preds: dict[str, Callable[[LiveCall], bool]] = {"all": lambda r: True}
    for sid in (1, 2):
        preds[f"server:{sid}"] = partial(on_server, sid)
    for u in USERS:
        if u.usertype == "reseller":
            pred = Scope(Principal(Role.RESELLER, u), REFS).row_predicate()
            assert pred is not None
            preds[f"reseller:{u.id}"] = pred
        upred = Scope(Principal(Role.USER, u), REFS).row_predicate()
        assert upred is not None
        preds[f"user:{u.id}"] = upred
    out = {}
    for name, pred in preds.items():
        seen = [r for r in rows if pred(r)]
        if seen:
            out[name] = (len(seen), sum(1 for r in seen if r.call.status is CallStatus.ANSWERED))
    return out


def brute_force(states: Sequence[tuple[float, dict[str, tuple[int, int]]]], until: float) -> set[Row]:
    """Each bucket from the first event's to the one holding ``until``: max of the standing count at its start
    and of the counts after each event inside it."""
    out: set[Row] = set()
    b = bucket_of(states[0][0])
    last = bucket_of(until)
    standing: dict[str, tuple[int, int]] = {}
    i = 0
    while b <= last:
        best = dict(standing)
        while i < len(states) and states[i][0] < b + BUCKET_SECONDS:
            standing = states[i][1]
            for s, (t, a) in standing.items():
                bt, ba = best.get(s, (0, 0))
                best[s] = (max(bt, t), max(ba, a))
            i += 1
        out.update((s, b, t, a) for s, (t, a) in best.items() if t > 0)
        b += BUCKET_SECONDS
    return out


@dataclass(frozen=True)
class Step:
    dt: float
    key: int
    action: str  # up (add or re-enrich), answer, down
    server: int
    caller: int | None
    callee: int | None


party = st.one_of(st.none(), st.sampled_from([u.id for u in USERS]))
steps = st.lists(st.builds(Step, st.floats(0, 40, allow_nan=False).map(lambda x: round(x, 1)),
                           st.integers(0, 5), st.sampled_from(["up", "up", "answer", "down"]),
                           st.sampled_from([1, 2]), party, party), min_size=1, max_size=60)


States = list[tuple[float, dict[str, tuple[int, int]]]]


def play(run: Iterable[Step], clock: Clock) -> tuple[HistorySampler, States, float]:
    """Feed a real LiveTable (the sampler listening) and record the brute-force states after each change."""
    sampler = HistorySampler(clock, resellers=RESELLERS, max_fill=10_000)
    enrichment: dict[str, Enrichment] = {}  # what reference data says of each call, by linkedid
    table = LiveTable(lambda cv: enrichment[cv.linkedid])
    table.subscribe(sampler.on_change)
    info: dict[int, LiveCall] = {}
    states: States = []
    for step in run:
        clock.t += step.dt
        have = info.get(step.key)
        if step.action == "down":
            if have is None:
                continue
            del info[step.key]
            change = CallChange("removed", have.call.key, None)
        elif step.action == "answer":
            if have is None:
                continue
            info[step.key] = call(step.key, have.call.server_id, have.info.user_id, have.info.dst_user_id, True)
            change = CallChange("updated", have.call.key, info[step.key].call)
        else:
            answered = have is not None and have.call.status is CallStatus.ANSWERED
            server = have.call.server_id if have is not None else step.server  # a call keeps its server
            info[step.key] = call(step.key, server, step.caller, step.callee, answered)
            change = CallChange("updated" if have else "added", info[step.key].call.key, info[step.key].call)
        if step.key in info:
            enrichment[f"L{step.key}"] = info[step.key].info
        table.apply([change])
        states.append((clock.t, visible_series(list(info.values()))))
    return sampler, states, clock.t


@settings(max_examples=300, deadline=None)
@given(steps, st.integers(0, 4))
def test_max_per_bucket_equals_brute_force(run: list[Step], quiet_buckets: int) -> None:
    clock = Clock(1_795_700_003.0)
    sampler, states, t = play(run, clock)
    if not states:
        return
    clock.t = until = t + quiet_buckets * BUCKET_SECONDS
    sampler.tick()
    got = set(sampler.take_closed()) | set(sampler.open_rows())
    assert got == brute_force(states, until)
    assert sampler.counts() == states[-1][1]


def test_a_known_sequence_exactly() -> None:
    clock = Clock(1000.0)  # bucket 990
    s = HistorySampler(clock, resellers=RESELLERS)
    s.on_change("added", call(1, 1, 3, None, False))  # ruser: reseller 2 sees it
    clock.t = 1001.0
    s.on_change("added", call(2, 2, 4, 7, False))  # alice → r2user: reseller 6 sees it
    s.on_change("updated", call(2, 2, 4, 7, True))
    clock.t = 1004.9
    s.on_change("removed", call(1, 1, 3, None, False))
    clock.t = 1005.0  # bucket 1005: only call 2 stands
    s.tick()
    clock.t = 1050.0  # 1020 and 1035 are quiet: the standing count
    s.tick()
    rows = sorted(s.take_closed())
    assert [r for r in rows if r[0] == "all"] == [("all", 990, 2, 1), ("all", 1005, 1, 1), ("all", 1020, 1, 1),
                                                   ("all", 1035, 1, 1)]
    assert [r for r in rows if r[1] == 990] == sorted([
        ("all", 990, 2, 1), ("server:1", 990, 1, 0), ("server:2", 990, 1, 1), ("reseller:2", 990, 1, 0),
        ("reseller:6", 990, 1, 1), ("user:3", 990, 1, 0), ("user:4", 990, 1, 1), ("user:7", 990, 1, 1)])
    assert s.open_rows() and {r[1] for r in s.open_rows()} == {1050}
    assert s.points("all", 0, 10**10) == {1050: (1, 1)}


def test_total_and_answered_maxima_are_independent() -> None:
    clock = Clock(0.0)
    s = HistorySampler(clock)
    for k in range(3):
        s.on_change("added", call(k, 1, None, None, False))
    for k in range(3):
        s.on_change("removed", call(k, 1, None, None, False))
    s.on_change("added", call(9, 1, None, None, True))
    clock.t = 15.0
    s.tick()
    assert ("all", 0, 3, 1) in s.take_closed()


def test_clock_stepping_back_counts_in_the_open_bucket() -> None:
    clock = Clock(100.0)
    s = HistorySampler(clock)
    s.on_change("added", call(1, 1, None, None, False))
    clock.t = 80.0  # NTP step back: a closed bucket is never reopened
    s.on_change("added", call(2, 1, None, None, False))
    assert s.open_bucket == 90 and s.points("all", 0, 200) == {90: (2, 0)}


def test_quiet_fill_is_capped_and_counted() -> None:
    clock = Clock(0.0)
    s = HistorySampler(clock, max_fill=2)
    s.on_change("added", call(1, 1, None, None, False))
    clock.t = 15 * 10 + 1  # bucket 150: 1..9 quiet, only 2 filled
    s.tick()
    assert sorted(b for ser, b, _t, _a in s.take_closed() if ser == "all") == [0, 15, 30]
    assert s.skipped_buckets == 7


def test_pending_is_bounded_oldest_dropped() -> None:
    clock = Clock(0.0)
    s = HistorySampler(clock, max_pending=4, per_user=False)  # two series per bucket: all, server:1
    s.on_change("added", call(1, 1, 4, None, False))
    for i in range(1, 5):
        clock.t = 15.0 * i
        s.tick()
    assert s.pending_rows == 4 and s.dropped_rows == 4
    assert sorted({b for _s, b, _t, _a in s.take_closed()}) == [30, 45]


def test_give_back_merges_by_maximum() -> None:
    clock = Clock(0.0)
    s = HistorySampler(clock, per_user=False)
    s.on_change("added", call(1, 1, None, None, False))
    clock.t = 15.0
    s.tick()
    rows = s.take_closed()
    s.give_back([*rows, ("all", 0, 5, 2)])
    assert sorted(s.take_closed()) == [("all", 0, 5, 2), ("server:1", 0, 1, 0)]


def test_per_user_off_and_resellers_reloaded() -> None:
    clock = Clock(0.0)
    s = HistorySampler(clock, per_user=False, resellers=())
    row = call(1, 1, 3, None, True)
    s.on_change("added", row)
    assert set(s.counts()) == {"all", "server:1"}
    s.set_resellers(RESELLERS, [row])  # reference data now says who resells: his series starts counting
    assert s.counts() == {"all": (1, 1), "server:1": (1, 1), "reseller:2": (1, 1)}
    s.set_resellers((), [row])
    assert "reseller:2" not in s.counts()
