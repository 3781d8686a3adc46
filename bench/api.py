"""Benchmark of ``active_calls_get`` with 10,000 live calls, against a real server on 127.0.0.1.

The server runs in a child process (its own core and GIL); this process is the client. Measures
(a) a filtered query returning about 10 calls, (b) the full list as admin (cold: first request after
start, then warm; and as ``format=json``, which has no row cache), (c) 200 concurrent clients for a
bounded time: requests/s, errors, latencies.

    .venv/bin/python bench/api.py [--calls 10000] [--seconds 10] [--clients 200]

Targets (issue): (a) p50 < 5 ms, (b) p50 < 150 ms, (c) no errors.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing as mp
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from api.app import create_app  # noqa: E402
from api.deps import ApiDeps  # noqa: E402
from api.settings import ApiSettings  # noqa: E402
from collector.live.table import LiveCall  # noqa: E402
from collector.refdata.index import RefIndex  # noqa: E402
from collector.refdata.model import (  # noqa: E402
    Destination,
    DestinationGroup,
    Device,
    Did,
    Direction,
    Enrichment,
    Provider,
    RefData,
    Server,
    User,
)
from collector.tracking.calls import CallStatus, CallView, Leg  # noqa: E402

PATH = "/billing/api/active_calls_get"
ADMIN_SECRET, RESELLER_SECRET = "bench-admin", "bench-reseller"
NOW = time.time()


@dataclass(frozen=True)
class World:
    refs: RefIndex
    rows: tuple[LiveCall, ...]


def build_world(n_calls: int, seed: int = 7) -> World:
    """5 resellers x 40 users + 300 admin users, 2 devices each, 12 providers, 40 directions,
    400 destinations, 1,000 DIDs, 3 servers; calls 60 % outbound, 25 % via a DID, 15 % internal."""
    rnd = random.Random(seed)
    users = [User(0, "admin", "admin", "Sys", "Admin", api_secret_key=ADMIN_SECRET),
             User(1, "accountant", "accountant", "Ann", "Counter")]
    for r in range(5):
        users.append(User(10 + r, f"reseller{r}", "reseller", "Res", str(r), api_secret_key=RESELLER_SECRET + str(r)))
    uid = 100
    for r in range(5):
        for _ in range(40):
            users.append(User(uid, f"user{uid}", "user", "First", f"Last {uid}", owner_id=10 + r))
            uid += 1
    for _ in range(300):
        users.append(User(uid, f"user{uid}", "user", f"Name <{uid}>", "& Co", owner_id=0))
        uid += 1
    plain = [u for u in users if u.usertype == "user"]
    devices = []
    for i, u in enumerate(plain):
        devices.append(Device(1000 + 2 * i, u.id, "SIP", f"sip{u.id}", str(u.id)))
        devices.append(Device(1001 + 2 * i, u.id, "IAX2", f"iax{u.id}", f"9{u.id}"))
    providers = [Provider(p, f"carrier-{p}", "SIP", f"trunk{p}", user_id=0 if p < 8 else 10 + p - 8)
                 for p in range(1, 13)]
    directions = [Direction(d, f"Country {d}", f"C{d:02d}") for d in range(1, 41)]
    groups = [DestinationGroup(g, f"Group {g}") for g in range(1, 21)]
    destinations = [Destination(i, f"{d.id}{k}", d.code, f"{d.name} zone {k}", destinationgroup_id=1 + i % 20)
                    for i, (d, k) in enumerate(((d, k) for d in directions for k in range(10)), start=1)]
    dev_by_id = {d.id: d for d in devices}
    dids = [Did(i, f"3705{i:07d}", user_id=dev.user_id, device_id=dev.id)
            for i, dev in enumerate(rnd.sample(devices, 1000), start=1)]
    refs = RefIndex.build(RefData(users=tuple(users), devices=tuple(devices), providers=tuple(providers),
                                  servers=(Server(1), Server(2), Server(3)), directions=tuple(directions),
                                  destinations=tuple(destinations), destinationgroups=tuple(groups),
                                  dids=tuple(dids)))
    by_user = {u.id: u for u in users}
    rows = []
    for n in range(1, n_calls + 1):
        kind = rnd.random()
        answered = NOW - rnd.uniform(1, 900) if rnd.random() < 0.7 else None
        uniq = f"{int(NOW) - 1000}.{n}"
        info: dict[str, object] = {}
        dest = rnd.choice(destinations)
        direction = refs.directions_by_code[dest.direction_code]
        number = dest.prefix + f"{rnd.randrange(10**7):07d}"
        if kind < 0.60 or kind >= 0.85:
            dev = rnd.choice(devices)
            owner = by_user[dev.user_id]
            info.update(user_id=owner.id, user=owner.display_name, owner_id=owner.owner_id, src_device_id=dev.id,
                        device_type=dev.device_type, device_extension=dev.extension, device_name=dev.name,
                        device_istrunk=0, device_ani=0)
            channel, src = f"{dev.device_type}/{dev.name}-{n:08x}", dev.extension
        if kind < 0.60:  # outbound
            prov = rnd.choice(providers)
            info.update(localized_dst=number, direction_code=direction.code, direction_name=direction.name,
                        destination_name=dest.name, destinationgroup_id=dest.destinationgroup_id,
                        provider_id=prov.id, provider_name=prov.name, provider_owner_id=prov.user_id)
            dst = "00" + number
        else:
            if kind < 0.85:  # inbound via DID
                did = rnd.choice(dids)
                target = dev_by_id[did.device_id]
                src, dst, channel = f"3706{rnd.randrange(10**7):07d}", did.did, f"SIP/trunk1-{n:08x}"
                info.update(did_id=did.id, did=did.did, localized_dst=did.did, provider_id=1,
                            provider_name="carrier-1")
            else:  # internal
                target = rnd.choice(devices)
                dst = target.extension
                info.update(localized_dst=dst)
            t_owner = by_user[target.user_id]
            info.update(has_dst=True, dst_user_id=t_owner.id, dst_user=t_owner.display_name,
                        dst_owner_id=t_owner.owner_id, dst_device_id=target.id,
                        dst_device_type=target.device_type, dst_device_extension=target.extension,
                        dst_device_name=target.name, dst_device_istrunk=0, dst_device_ani=0)
        call = CallView(server_id=rnd.randint(1, 3), linkedid=uniq, uniqueid=uniq, channel=channel, dst_channel="",
                        status=CallStatus.ANSWERED if answered else CallStatus.RINGING, src=src, src_name="",
                        dst=dst, start_time=NOW - 1000, answer_time=answered,
                        legs=(Leg(uniq, channel, 6, False, NOW - 1000),))
        rows.append(LiveCall(n, call, Enrichment(**info)))  # type: ignore[arg-type]
    return World(refs, tuple(rows))


def signed(refs: RefIndex, username: str, **filters: str) -> dict[str, str]:
    owner = refs.owner_of(refs.users_by_username[username])
    assert owner is not None
    return {"u": username, "hash": hashlib.sha1((username + owner.api_secret_key).encode()).hexdigest(), **filters}


def serve(n_calls: int, churn: int, port_queue: mp.Queue[int]) -> None:
    """The server process. ``churn`` rows per second are replaced by new (equal) LiveCall objects, as
    the live table does when calls change, so the row cache has real work to do."""
    world = build_world(n_calls)
    current = [world.rows]

    async def churner() -> None:
        rnd = random.Random(1)
        while True:
            await asyncio.sleep(0.1)
            rows = list(current[0])
            for i in rnd.sample(range(len(rows)), max(1, churn // 10)):
                r = rows[i]
                rows[i] = LiveCall(r.id, r.call, r.info)
            current[0] = tuple(rows)

    async def main() -> None:
        app = create_app(ApiDeps(rows=lambda: current[0], refs=lambda: world.refs, settings=ApiSettings()))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        if churn:
            asyncio.get_running_loop().create_task(churner())
        port_queue.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def line(name: str, samples: list[float], extra: str = "") -> str:
    return (f"{name:<44} n={len(samples):<6} p50={pct(samples, 0.50):8.2f} ms  p99={pct(samples, 0.99):8.2f} ms"
            f"  max={max(samples) * 1000:8.2f} ms {extra}")


async def timed(session: aiohttp.ClientSession, url: str, data: dict[str, str]) -> tuple[float, int, bytes]:
    started = time.perf_counter()
    async with session.post(url, data=data) as resp:
        body = await resp.read()
    return time.perf_counter() - started, resp.status, body


async def run_bench(port: int, world: World, seconds: float, clients: int) -> None:
    url = f"http://127.0.0.1:{port}{PATH}"
    refs = world.refs
    counts: dict[int, int] = {}
    for r in world.rows:
        if r.info.user_id is not None:
            counts[r.info.user_id] = counts.get(r.info.user_id, 0) + 1
    target_user = min(counts, key=lambda u: (abs(counts[u] - 10), u))
    plain_users = [u.username for u in refs.data.users if u.usertype == "user"]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        # (b) cold: the very first full list renders every row
        cold, status, body = await timed(session, url, signed(refs, "admin"))
        assert status == 200 and body.count(b"<active_call>") == len(world.rows), body[:200]
        print(f"(b) full list as admin, cold (first request, empty row cache): {cold * 1000:.1f} ms, "
              f"{len(body) / 1e6:.1f} MB, {len(world.rows)} calls")
        # (a) filtered, about 10 calls
        query = signed(refs, "admin", s_user_id=str(target_user))
        samples = []
        for _ in range(30):
            await timed(session, url, query)
        for _ in range(500):
            t, status, body = await timed(session, url, query)
            assert status == 200
            samples.append(t)
        print(line(f"(a) admin s_user_id={target_user} ({body.count(b'<active_call>')} calls)", samples))
        samples = []
        for i in range(500):
            t, status, body = await timed(session, url, signed(refs, plain_users[i % len(plain_users)]))
            assert status == 200
            samples.append(t)
        print(line("(a') a plain user's own calls (~25 calls)", samples))
        samples = []
        for _ in range(30):
            t, status, body = await timed(session, url, signed(refs, "admin"))
            assert status == 200
            samples.append(t)
        print(line("(b) full list as admin, warm (rows churning)", samples, f"{len(body) / 1e6:.1f} MB"))
        samples = []
        for _ in range(30):
            t, status, body = await timed(session, url, signed(refs, "admin", s_status="answered"))
            samples.append(t)
        print(line("(b') admin s_status=answered", samples, f"({body.count(b'<active_call>')} calls)"))
        samples = []
        json_url = url + "?format=json"
        for _ in range(30):
            t, status, body = await timed(session, json_url, signed(refs, "admin"))
            assert status == 200 and body.count(b'"uniqueid"') == len(world.rows), body[:200]
            samples.append(t)
        print(line("(b'') full list as admin, format=json", samples, f"{len(body) / 1e6:.1f} MB"))

    # (c) concurrent clients, bounded time, a realistic mix
    errors = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    mix = ([signed(refs, u) for u in plain_users[:100]]
           + [signed(refs, f"reseller{r}", s_status="answered") for r in range(5)]
           + [signed(refs, "admin", s_user_id=str(u)) for u in list(counts)[:50]]
           + [signed(refs, "admin", s_did="3705000001_")])

    async def client(session: aiohttp.ClientSession, k: int) -> None:
        nonlocal errors
        rnd = random.Random(k)
        while time.perf_counter() < deadline:
            try:
                t, status, body = await timed(session, url, rnd.choice(mix))
                if status != 200 or b"<error>" in body:
                    errors += 1
                latencies.append(t)
            except (TimeoutError, aiohttp.ClientError):
                errors += 1

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session, k) for k in range(clients)))
        elapsed = time.perf_counter() - started
    print(line(f"(c) {clients} concurrent clients, {seconds:.0f} s", latencies,
               f"{len(latencies) / elapsed:.0f} req/s, errors={errors}"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--churn", type=int, default=200, help="rows replaced per second in the server")
    args = parser.parse_args()
    ctx = mp.get_context("fork")
    ports: mp.Queue[int] = ctx.Queue()
    proc = ctx.Process(target=serve, args=(args.calls, args.churn, ports), daemon=True)
    proc.start()
    try:
        port = ports.get(timeout=120)
        world = build_world(args.calls)  # same seed: the same world as the server's
        print(f"server pid={proc.pid} port={port}; {args.calls} calls, {len(world.refs.data.users)} users, "
              f"{len(world.refs.data.devices)} devices, {len(world.refs.data.dids)} DIDs; "
              f"{args.churn} rows/s replaced")
        asyncio.run(run_bench(port, world, args.seconds, args.clients))
    finally:
        proc.terminate()
        proc.join(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
