"""MOR MySQL → SQLite sync at scale, daemon style, against a private MariaDB.

    .venv/bin/python bench/mysql_sync.py [--destinations 100000] [--devices 10000] [--dids 10000] [--users 5000]

Fills a MOR-shaped database (tests/mor_schema.py) on a private mariadbd (tests/mariadb_support.py), then,
in one child process (so peak memory is the sync's, not the filler's):

1. cold: the first sync into an empty SQLite, then the load + index build the daemon does before its swap;
2. periodic, nothing changed in MOR (per-table fingerprints only: nothing read, written or swapped);
3. periodic, one device moved (devices + its dependents read, devices imported in replace mode, load + build);
4. periodic, one destination renamed (destinations read and imported, load + build);
5. after a restart (no fingerprints yet), nothing changed: everything read and compared, nothing written.

Each runs the way the daemon runs it (``RefdataSync.sync``: the sync in its worker process, then the
daemon's load + index build in a thread) while a 1 ms ticker on the event loop records how late it
wakes; the worst lateness is the loop stall AMI reading would see. Targets: sync < 5 s, stall < 50 ms.
Peak memory: peak RSS (ru_maxrss) of the sync worker and of the daemon-side process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.live.enrich import Enricher  # noqa: E402
from collector.refdata.index import RefIndex  # noqa: E402
from collector.refdata.settings import RefdataSettings  # noqa: E402
from collector.refdata.store import load_refdata  # noqa: E402
from collector.service.daemon import tune_gc  # noqa: E402
from collector.service.refsync import RefdataSync  # noqa: E402


def _rss_kb() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def make_data(n_dest: int, n_dev: int, n_did: int, n_users: int) -> dict[str, list[dict[str, Any]]]:
    """Our import format, sized like a large MOR (written to MySQL the way MOR stores it)."""
    n_res = max(1, n_users // 100)
    users = [{"id": 0, "username": "admin", "usertype": "admin", "owner_id": 0, "api_secret_key": "adminkey"}]
    users += [{"id": i, "username": f"reseller{i}", "usertype": "reseller", "first_name": "R", "last_name": str(i),
               "owner_id": 0, "api_secret_key": f"key{i}"} for i in range(1, n_res + 1)]
    users += [{"id": i, "username": f"user{i}", "usertype": "user", "first_name": "U", "last_name": str(i),
               "owner_id": (i % (n_res + 1)) if i % 3 else 0} for i in range(n_res + 1, n_users)]
    directions = [{"id": i, "name": f"Country {i}", "code": f"C{i:03d}"} for i in range(1, 251)]
    groups = [{"id": i, "name": f"Group {i}"} for i in range(1, 501)]
    dests = [{"id": i, "prefix": str(10_000 + i), "direction_code": f"C{1 + i % 250:03d}", "subcode": "FIX",
              "name": f"Dest {i}", "destinationgroup_id": 1 + i % 500} for i in range(1, n_dest + 1)]
    locations = [{"id": i, "name": f"Loc {i}"} for i in range(1, 11)]
    rules = [{"id": i, "location_id": 1 + i % 10, "name": f"r{i}", "enabled": 1, "cut": "00", "add": "",
              "minlen": 5, "maxlen": 20, "lr_type": "dst"} for i in range(1, 31)]
    user_ids = [u["id"] for u in users if u["usertype"] == "user"]
    devices = [{"id": i, "user_id": user_ids[i % len(user_ids)], "device_type": "SIP", "name": f"dev{i}",
                "extension": str(1000 + i), "istrunk": 0, "ani": 0, "location_id": 1 + i % 10}
               for i in range(1, n_dev + 1)]
    providers = [{"id": i, "name": f"Provider {i}", "tech": "SIP", "peer": f"trunk{i}", "user_id": 0}
                 for i in range(1, 51)]
    dids = [{"id": i, "did": str(37_060_000_000 + i), "status": "active",
             "user_id": devices[i % n_dev]["user_id"], "device_id": devices[i % n_dev]["id"],
             "provider_id": 1 + i % 50, "reseller_id": 0} for i in range(1, n_did + 1)]
    return {"servers": [{"id": 1, "hostname": "pbx", "server_ip": "10.0.0.1", "comment": ""}], "users": users,
            "locations": locations, "locationrules": rules, "directions": directions,
            "destinationgroups": groups, "destinations": dests, "devices": devices, "providers": providers,
            "dids": dids}


async def _daemon_style(rs: RefdataSync | None, db: Path) -> dict[str, Any]:
    """One sync exactly as the daemon runs it (``RefdataSync.sync``: the worker process), then, if MOR
    changed, the load + index build the daemon does in a thread before its swap; a 1 ms ticker on the
    loop records how late it wakes during each part."""
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            t = loop.time()
            await asyncio.sleep(0.001)
            lags.append(loop.time() - t - 0.001)

    def worst(part: list[float]) -> float:
        return round(max(part, default=0.0) * 1000, 1)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    lags.clear()
    if rs is None:  # baseline: the same ticker with nothing running (what the machine itself adds)
        await asyncio.sleep(3.0)
        stop.set()
        await tick
        return {"max_stall_ms": worst(lags), "p99_stall_ms": round(sorted(lags)[int(len(lags) * 0.99)] * 1000, 2)}
    rss0 = _rss_kb()
    t0 = time.perf_counter()
    report = await rs.sync()
    t_sync = time.perf_counter() - t0
    sync_lags = list(lags)
    lags.clear()
    t_load = 0.0
    if report.ok and report.changed:  # what the daemon does before the swap (its existing reload path)
        t1 = time.perf_counter()
        enricher = await asyncio.to_thread(lambda: Enricher(RefIndex.build(load_refdata(db))))
        t_load = time.perf_counter() - t1
        await asyncio.to_thread(lambda: enricher)  # keep freeing it out of the measured window
    load_lags = list(lags)
    stop.set()
    await tick
    return {"ok": report.ok, "error": report.error, "sync_s": round(t_sync, 3), "read_s": round(report.read_seconds, 3),
            "load_index_s": round(t_load, 3), "sync_stall_ms": worst(sync_lags), "load_stall_ms": worst(load_lags),
            "rss_before_mb": round(rss0 / 1024, 1), "rows": sum(c.total for c in report.tables.values()),
            "skipped": len(report.skipped), "tables_read": len(report.tables)}


def _peak_mb(pid: int | None = None) -> float:
    return round(resource.getrusage(resource.RUSAGE_CHILDREN if pid else resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def child(args: argparse.Namespace) -> None:
    """The phases in one process, as one daemon lives through them."""
    import pymysql

    tune_gc()  # the daemon's GC thresholds
    settings = RefdataSettings(source="mysql", mysql_socket=args.socket, mysql_user="collector",
                               mysql_password=args.password, mysql_database=args.database)
    db = Path(args.sqlite)
    rs = RefdataSync(settings, db)
    admin = pymysql.connect(unix_socket=args.socket, user="root", password="", database=args.database,
                            autocommit=True)
    idle = asyncio.run(_daemon_style(None, db))
    results = []
    moved = "UPDATE devices SET user_id = (SELECT MAX(id) FROM users) WHERE id = 1"
    renamed = "UPDATE destinations SET name = 'Renamed' WHERE id = 1"
    for phase, sql in (("cold (empty SQLite)", None), ("periodic, no change", None),
                       ("periodic, device moved", moved), ("periodic, dest renamed", renamed),
                       ("after restart, no chg", None)):
        if sql:
            with admin.cursor() as cur:
                cur.execute(sql)
        if phase.startswith("after restart"):
            rs.state = None  # a new daemon: no fingerprints yet
        results.append({**asyncio.run(_daemon_style(rs, db)), "phase": phase})
    admin.close()
    rs.close()
    peaks = {"daemon_peak_rss_mb": _peak_mb(), "worker_peak_rss_mb": _peak_mb(1)}
    print(json.dumps({"idle": idle, "phases": results, **peaks}))


def run_child(socket: str, password: str, database: str, sqlite: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", "--socket", socket, "--password", password,
                          "--database", database, "--sqlite", str(sqlite)], capture_output=True, text=True,
                         check=True)
    results: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--destinations", type=int, default=100_000)
    p.add_argument("--devices", type=int, default=10_000)
    p.add_argument("--dids", type=int, default=10_000)
    p.add_argument("--users", type=int, default=5_000)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--socket", help=argparse.SUPPRESS)
    p.add_argument("--password", help=argparse.SUPPRESS)
    p.add_argument("--database", help=argparse.SUPPRESS)
    p.add_argument("--sqlite", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    from tests.mariadb_support import READER_PASSWORD, MariaDB, new_mor_db

    root = Path(tempfile.mkdtemp(prefix="bench-mysql-"))
    server = MariaDB(root)
    try:
        server.install()
        server.start()
        t = time.perf_counter()
        data = make_data(args.destinations, args.devices, args.dids, args.users)
        db = new_mor_db(server, data)
        print(f"filled MariaDB: users={args.users} devices={args.devices} (+50 provider trunks) dids={args.dids} "
              f"destinations={args.destinations} in {time.perf_counter() - t:.1f}s")
        sqlite = root / "collector.db"
        both = run_child(str(server.socket), READER_PASSWORD, db.name, sqlite)
        results: list[dict[str, Any]] = both["phases"]
        print(f"idle loop, no sync (the machine's own noise): max stall {both['idle']['max_stall_ms']} ms, "
              f"p99 {both['idle']['p99_stall_ms']} ms")
        print(f"{'phase':<24} {'sync s':>7} {'read s':>7} {'tables':>6} {'rows':>7} {'sync stall ms':>13} "
              f"{'load+index s':>12} {'load stall ms':>13}")
        for r in results:
            assert r["ok"], r["error"]
            print(f"{r['phase']:<24} {r['sync_s']:>7} {r['read_s']:>7} {r['tables_read']:>6} {r['rows']:>7} "
                  f"{r['sync_stall_ms']:>13} {r['load_index_s']:>12} {r['load_stall_ms']:>13}")
        print(f"peak RSS: sync worker process {both['worker_peak_rss_mb']} MB, daemon-side process "
              f"{both['daemon_peak_rss_mb']} MB (its RSS before the first sync: {results[0]['rss_before_mb']} MB)")
        worst_sync = max(r["sync_s"] for r in results)
        worst_stall = max(r["sync_stall_ms"] for r in results)
        print(f"targets: sync < 5 s: {'ok' if worst_sync < 5 else 'MISSED'} ({worst_sync} s); "
              f"loop stall during the sync < 50 ms: {'ok' if worst_stall < 50 else 'MISSED'} ({worst_stall} ms)")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
