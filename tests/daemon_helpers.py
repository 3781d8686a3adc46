"""Building and driving a real in-process daemon (real SQLite file, real AMI over TCP, real HTTP port)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from lxml import etree

from collector.refdata.importer import load_demo
from collector.service.config import Settings, parse_settings
from collector.service.daemon import Daemon
from collector.tools.timeline import iter_trace_messages
from collector.tracking.calls import CallView
from collector.tracking.tracker import CallTracker

ADMIN_SECRET_OWNER = "admin"


def settings_for(tmp: Path, ami_ports: Iterable[int], server_extra: str = "", **collector: object) -> Settings:
    db = tmp / "collector.db"
    if not db.exists():
        load_demo(db)
    opts: dict[str, object] = {"reconcile_interval": 3600, "ping_interval": 30, "ping_timeout": 5,
                               "reconnect_min": 0.05, "reconnect_max": 0.2, "auth_retry": 0.2, "flush_interval": 0.05,
                               "resync_timeout": 5}
    opts.update(collector)
    lines = ["[collector]"] + [f"{k} = {v}" for k, v in opts.items()]
    lines += ["[api]", "listen = 127.0.0.1", "port = 0", "[database]", f"path = {db}"]
    for i, port in enumerate(ami_ports, start=1):
        lines += [f"[server:pbx{i}]", "host = 127.0.0.1", f"port = {port}", "username = collector",
                  "secret = s3cret", f"server_id = {i}", server_extra]
    return parse_settings("\n".join(lines), source=str(tmp / "test.ini"))


@asynccontextmanager
async def running_daemon(settings: Settings) -> AsyncIterator[Daemon]:
    daemon = Daemon(settings)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Await a condition of the system under test (bounded); not a sleep standing in for one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def barrier(daemon: Daemon, index: int = 0) -> None:
    """Everything the AMI server sent before now has been applied: a CoreShowChannels answer comes
    after all earlier events on the same TCP stream."""
    session = daemon.sessions[index]
    await asyncio.wait_for(session.logged_in.wait(), 10)
    await session.resync()


def offline_calls(paths: list[Path], until_ts: float, server_id: int = 1) -> list[CallView]:
    """The tracker's table after every trace event with Timestamp < until_ts (what a held replay sent)."""
    trk = CallTracker()
    for msg in iter_trace_messages(paths):
        ts = msg.get("Timestamp")
        if ts and float(ts) >= until_ts:
            break
        trk.apply(server_id, msg)
    return trk.calls(server_id)


def comparable(calls: Iterable[CallView]) -> set[tuple[object, ...]]:
    return {(c.linkedid, c.uniqueid, c.channel, c.dst_channel, c.status.value, c.src, c.dst, c.answer_time)
            for c in calls}


def mor_hash(username: str, secret: str) -> str:
    return hashlib.sha1((username + secret).encode()).hexdigest()


async def admin_page(daemon: Daemon) -> etree._Element:
    """``active_calls_get`` as the demo admin over real HTTP, parsed (HTTP 200 asserted)."""
    secret = daemon._refs().users_by_username["admin"].api_secret_key
    url = f"http://127.0.0.1:{daemon.port}/billing/api/active_calls_get"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data={"u": "admin", "hash": mor_hash("admin", secret)}) as resp:
            assert resp.status == 200
            return etree.fromstring(await resp.read())
