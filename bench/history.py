"""Cost of the concurrency history: sampling per row change, and writing per closed bucket.

    .venv/bin/python bench/history.py [--calls 5000] [--users 1000] [--resellers 20] [--changes 200000]

1. sampling: 5,000 calls up (callers and callees drawn from 1,000 users, a fifth of them owned by
   resellers), then a stream of row changes as the live table emits them — answers, re-enrichments that
   move no count, hangups and new calls — timed per change through ``HistorySampler.on_change`` with
   ``per_user`` on and off; plus one timer roll (the closing of a bucket) with that many series standing;
2. on the real traces (dev_load_drop, concurrent_load): tracker → live table in process, with and without
   the sampler listening, best of 15 interleaved rounds: what the history adds per AMI event and per row change;
3. writing: the rows of one closed bucket (every series standing) UPSERTed into a real SQLite file in
   one transaction, fresh and again over existing rows (the restart case), and one prune step.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.live.history import HistorySampler  # noqa: E402
from collector.live.historydb import HistoryStore  # noqa: E402
from collector.live.table import LiveCall, LiveTable  # noqa: E402
from collector.refdata.model import Enrichment  # noqa: E402
from collector.tools.timeline import iter_trace_messages  # noqa: E402
from collector.tracking.calls import CallStatus, CallView  # noqa: E402
from collector.tracking.tracker import CallTracker  # noqa: E402

TRACES = ROOT / "tests" / "traces"
LOAD_TRACES = (("dev_load_drop.ami.gz", "dev_load_drop.part2.ami.gz"), ("concurrent_load.ami.gz",))

T0 = 1_795_701_000.0


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_row(key: int, rnd: random.Random, users: int, owners: dict[int, int], answered: bool) -> LiveCall:
    caller = rnd.randrange(users)
    callee = rnd.randrange(users) if rnd.random() < 0.3 else None
    cv = CallView(server_id=1 + key % 4, linkedid=f"L{key}", uniqueid=f"L{key}", channel=f"SIP/{key}",
                  dst_channel="", status=CallStatus.ANSWERED if answered else CallStatus.RINGING, src="1",
                  src_name="", dst="2", start_time=T0, answer_time=T0 if answered else None, legs=())
    info = Enrichment(user_id=caller, owner_id=owners[caller], dst_user_id=callee,
                      dst_owner_id=owners[callee] if callee is not None else None)
    return LiveCall(key, cv, info)


def sampling(calls: int, users: int, resellers: int, changes: int,
             per_user: bool) -> tuple[float, float, float, int]:
    """(µs per change of the mix, µs per update that moves no count, ms per bucket roll, series standing)."""
    rnd = random.Random(5)
    reseller_ids = list(range(users, users + resellers))
    owners = {u: (rnd.choice(reseller_ids) if rnd.random() < 0.2 else 0) for u in range(users)}
    clock = Clock(T0 + 1)
    sampler = HistorySampler(clock, per_user=per_user, resellers=reseller_ids)
    live = {k: make_row(k, rnd, users, owners, rnd.random() < 0.6) for k in range(calls)}
    sampler.seed(live.values())
    keys = list(live)
    next_key = calls
    stream: list[tuple[str, LiveCall]] = []
    for _ in range(changes):  # prepared first: only the sampler is timed
        k = rnd.choice(keys)
        r = live[k]
        x = rnd.random()
        if x < 0.5:  # re-enrichment / leg change: no count moves
            stream.append(("updated", r))
        elif x < 0.7:
            live[k] = r = LiveCall(r.id, r.call._replace(status=CallStatus.ANSWERED), r.info)
            stream.append(("updated", r))
        else:  # one ends, a new one starts (the table stays at `calls`)
            stream.append(("removed", r))
            del live[k]
            new = make_row(next_key, rnd, users, owners, False)
            live[next_key] = new
            keys[keys.index(k)] = next_key
            next_key += 1
            stream.append(("added", new))
    start = time.perf_counter()
    for kind, row in stream:
        sampler.on_change(kind, row)
    per_change = (time.perf_counter() - start) / len(stream) * 1e6
    same = [("updated", live[k]) for k in keys] * max(1, changes // len(keys))
    start = time.perf_counter()
    for kind, row in same:
        sampler.on_change(kind, row)
    per_noop = (time.perf_counter() - start) / len(same) * 1e6
    series = len(sampler.counts())
    clock.t = T0 + 16
    start = time.perf_counter()
    sampler.tick()
    roll_ms = (time.perf_counter() - start) * 1e3
    return per_change, per_noop, roll_ms, series


def on_traces(rounds: int = 15) -> tuple[float, float, int, int]:
    """(µs per event without, µs per event with the sampler, events, row changes) over the load traces."""
    traces = [list(iter_trace_messages([TRACES / n for n in names])) for names in LOAD_TRACES]
    events = sum(len(m) for m in traces)

    def run(sample: bool) -> tuple[float, int]:
        elapsed, changes = 0.0, 0
        for msgs in traces:
            tracker, live = CallTracker(), LiveTable()
            clock = Clock(T0)
            if sample:
                live.subscribe(HistorySampler(clock).on_change)
            start = time.perf_counter()
            for i in range(0, len(msgs), 64):
                batch = tracker.apply_many(1, msgs[i:i + 64])
                changes += len(batch)
                live.apply(batch)
                clock.t += 0.05
            elapsed += time.perf_counter() - start
        return elapsed, changes

    without, with_, changes = float("inf"), float("inf"), 0
    for _ in range(rounds):  # interleaved, so a noisy neighbour hurts both alike
        without = min(without, run(False)[0])
        t, changes = run(True)
        with_ = min(with_, t)
    return without / events * 1e6, with_ / events * 1e6, events, changes


def writing(series: int) -> tuple[float, float, float]:
    """(ms to write one bucket fresh, ms again over the same keys, ms for one prune step of 5,000 rows)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = HistoryStore(Path(tmp) / "h.db")
        for b in range(20):  # some history first, so the B-tree is not empty
            store.write([(f"user:{s}", int(T0) - 15 * (b + 1), 3, 1) for s in range(series)])
        rows = [(f"user:{s}", int(T0), 5, 2) for s in range(series)]
        start = time.perf_counter()
        store.write(rows)
        fresh = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        store.write(rows)
        again = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        store.prune_step(int(T0))
        prune = (time.perf_counter() - start) * 1e3
        store.close()
    return fresh, again, prune


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--resellers", type=int, default=20)
    ap.add_argument("--changes", type=int, default=200_000)
    a = ap.parse_args()
    for per_user in (True, False):
        us, noop, roll, series = sampling(a.calls, a.users, a.resellers, a.changes, per_user)
        print(f"sampling per_user={'yes' if per_user else 'no '} ({a.calls} calls, {a.users} users, {a.resellers} "
              f"resellers): {us:.2f} µs per row change of the mix, {noop:.2f} µs per update moving no count; "
              f"bucket roll with {series} series standing: {roll:.2f} ms")
    without, with_, events, changes = on_traces()
    print(f"real traces ({events} events, {changes} row changes): tracker + live table {without:.2f} µs per event, "
          f"{with_:.2f} µs with the sampler (+{(with_ - without) * events / changes:.2f} µs per row change)")
    fresh, again, prune = writing(series=a.users + a.resellers + 5)
    print(f"writing one closed bucket ({a.users + a.resellers + 5} rows, one transaction): {fresh:.1f} ms fresh, "
          f"{again:.1f} ms over existing rows (restart merge); one prune step (5,000 rows): {prune:.1f} ms")


if __name__ == "__main__":
    main()
