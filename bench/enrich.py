"""Enrichment throughput and the cost of a full reference data reload.

    .venv/bin/python bench/enrich.py [--destinations 100000] [--devices 10000] [--seconds 2]

1. enrichments per second over realistic calls: every distinct call view the tracker produces while
   replaying the bundled load traces (dev_load_drop, concurrent_load), enriched with the demo data and
   with the big synthetic data set;
2. a full reload of a big data set (demo + N destinations + M devices with their users and DIDs):
   SQLite → RefData (``load_refdata``), RefData → ``RefIndex`` + ``Enricher``, and memory
   (tracemalloc peak during load + build, and what stays allocated afterwards).
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.live.enrich import Enricher  # noqa: E402
from collector.refdata.importer import demo_data, import_data  # noqa: E402
from collector.refdata.index import RefIndex  # noqa: E402
from collector.refdata.store import load_refdata  # noqa: E402
from collector.tools.timeline import iter_trace_messages  # noqa: E402
from collector.tracking.calls import CallView  # noqa: E402
from collector.tracking.tracker import CallTracker  # noqa: E402

TRACES = ROOT / "tests" / "traces"
LOAD_TRACES = (("dev_load_drop.ami.gz", "dev_load_drop.part2.ami.gz"), ("concurrent_load.ami.gz",))


def realistic_calls() -> list[CallView]:
    """Every call view the tracker emits (each change of each call) over the load traces."""
    views: list[CallView] = []
    for names in LOAD_TRACES:
        tracker = CallTracker()
        for msg in iter_trace_messages([TRACES / n for n in names]):
            for change in tracker.apply(1, msg):
                if change.call is not None:
                    views.append(change.call)
    return views


def big_data(n_destinations: int, n_devices: int, seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    """The demo data plus a MOR-sized tariff (directions, groups, destinations) and customer base."""
    rnd = random.Random(seed)
    data = demo_data()
    directions = [{"id": 100 + i, "name": f"Country {i}", "code": f"C{i:03d}"} for i in range(250)]
    groups = [{"id": 100 + i, "name": f"Group {i}"} for i in range(500)]
    taken = {d["prefix"] for d in data["destinations"]}
    dests: list[dict[str, Any]] = []
    while len(dests) < n_destinations:
        prefix = str(rnd.randint(1, 9)) + "".join(rnd.choices("0123456789", k=rnd.randint(1, 8)))
        if prefix in taken:
            continue
        taken.add(prefix)
        i = len(dests)
        dests.append({"id": 1000 + i, "prefix": prefix, "direction_code": f"C{i % 250:03d}",
                      "subcode": "MOB" if i % 3 == 0 else "FIX", "name": f"Destination {prefix}",
                      "destinationgroup_id": 100 + i % 500})
    n_users = max(1, n_devices // 4)
    resellers = [{"id": 1000 + i, "username": f"reseller{i}", "usertype": "reseller",
                  "api_secret_key": f"secret{i}"} for i in range(20)]
    users = [{"id": 2000 + i, "username": f"user{i}", "usertype": "user", "first_name": "User",
              "last_name": str(i), "owner_id": 1000 + i % 20 if i % 2 else 0} for i in range(n_users)]
    locations = [{"id": 10 + i, "name": f"Location {i}"} for i in range(20)]
    rules = [{"id": 100 + i, "location_id": 10 + i % 20, "name": f"rule {i}", "cut": str(i % 10),
              "add": "370", "minlen": 8, "maxlen": 12} for i in range(100)]
    devices = [{"id": 100 + i, "user_id": 2000 + i % n_users, "device_type": "IAX2" if i % 5 == 0 else "SIP",
                "name": f"dev{i}", "extension": str(10000 + i), "location_id": 10 + i % 20 if i % 4 else 1}
               for i in range(n_devices)]
    dids = [{"id": 100 + i, "did": f"3705{3000000 + i}", "user_id": devices[i]["user_id"],
             "device_id": devices[i]["id"], "provider_id": 1} for i in range(n_devices)]
    for table, rows in (("directions", directions), ("destinationgroups", groups), ("destinations", dests),
                        ("users", resellers + users), ("locations", locations), ("locationrules", rules),
                        ("devices", devices), ("dids", dids)):
        data[table] = data[table] + rows
    return data


def rate(enricher: Enricher, calls: list[CallView], seconds: float) -> tuple[float, int]:
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for call in calls:
            enricher.enrich(call)
        done += len(calls)
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start), done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--destinations", type=int, default=100_000)
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=2.0, help="duration of each throughput run")
    args = ap.parse_args()

    print(f"python {sys.version.split()[0]}")
    t = time.perf_counter()
    calls = realistic_calls()
    print(f"realistic calls: {len(calls)} call views from {sum(len(n) for n in LOAD_TRACES)} trace files "
          f"({time.perf_counter() - t:.2f} s to replay)")

    with tempfile.TemporaryDirectory() as tmp:
        demo_db = Path(tmp) / "demo.db"
        import_data(demo_db, demo_data())
        demo = Enricher(RefIndex.build(load_refdata(demo_db)))
        per_s, n = rate(demo, calls, args.seconds)
        print(f"enrich, demo data: {per_s:10,.0f} calls/s ({1e6 / per_s:.1f} µs/call, {n} calls)")

        data = big_data(args.destinations, args.devices)
        sizes = {t: len(r) for t, r in data.items()}
        big_db = Path(tmp) / "big.db"
        t = time.perf_counter()
        import_data(big_db, data)
        t_import = time.perf_counter() - t
        print(f"big data set: {sizes['destinations']:,} destinations, {sizes['devices']:,} devices, "
              f"{sizes['users']:,} users, {sizes['dids']:,} DIDs, {sizes['locationrules']} location rules; "
              f"db {big_db.stat().st_size / 2**20:.1f} MiB")
        print(f"import (validate + write, one transaction): {t_import:.2f} s")

        gc.collect()
        t = time.perf_counter()
        ref = load_refdata(big_db)
        t_load = time.perf_counter() - t
        t = time.perf_counter()
        big = Enricher(RefIndex.build(ref))
        t_build = time.perf_counter() - t
        print(f"reload: load_refdata {t_load:.3f} s + RefIndex/Enricher build {t_build:.3f} s "
              f"= {t_load + t_build:.3f} s")
        per_s, n = rate(big, calls, args.seconds)
        print(f"enrich, big data:  {per_s:10,.0f} calls/s ({1e6 / per_s:.1f} µs/call, {n} calls)")
        del ref, big
        gc.collect()

        tracemalloc.start()
        ref = load_refdata(big_db)
        _, peak_load = tracemalloc.get_traced_memory()
        big = Enricher(RefIndex.build(ref))
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"memory (tracemalloc): peak {peak / 2**20:.1f} MiB during load + build "
              f"(load alone {peak_load / 2**20:.1f} MiB); {current / 2**20:.1f} MiB stays allocated "
              f"(RefData + indexes of one generation; a reload holds two briefly)")
        assert big.destinations is not None


if __name__ == "__main__":
    main()
