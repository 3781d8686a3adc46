"""``active_calls_stream``: snapshot + deltas always equal ``active_calls_get`` (hand-built rows with
visibility changes, and a real trace replayed through the whole daemon with hold points), exact resume
with ``Last-Event-ID``, slow clients dropped without delaying the others, the same auth and errors."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from api.app import create_app
from api.changes import ChangeHub
from api.deps import DEPS_KEY, ApiDeps
from api.stream import STREAM_KEY, StreamSettings
from collector.live.table import LiveCall
from collector.tracking.calls import CallStatus
from tests.api_support import NOW, REFS, ROWS, SECRETS, signed, with_settings

STREAM = "/billing/api/active_calls_stream"
GET = "/billing/api/active_calls_get?format=json"
EXTRAS = ("server_id", "server_name", "start_time", "start_epoch", "answer_epoch", "did", "dst")


# ----------------------------------------------------------------------------- an SSE client
@dataclass
class Event:
    id: int | None
    event: str
    data: Any


class Sse:
    """Reads an event stream; keeps the client-side table the way a browser page would."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.last_id: int | None = None
        self.table: dict[int, dict[str, Any]] = {}
        self.events: list[Event] = []

    async def next(self, timeout: float = 5.0) -> Event:
        """The next dispatched event; ``id``-only blocks (keepalives) update ``last_id`` only."""
        async with asyncio.timeout(timeout):
            while True:
                ev = await self.block()
                if ev is not None:
                    return ev

    async def block(self) -> Event | None:
        """Read one block (up to a blank line): the event it dispatches, or None (keepalive)."""
        fields: dict[str, str] = {}
        while True:
            raw = await self.resp.content.readline()
            if not raw:
                raise EOFError("stream ended")
            line = raw.decode().rstrip("\n")
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
                continue
            if "id" in fields:
                self.last_id = int(fields["id"])
            if "data" not in fields:
                return None
            data = fields["data"]
            ev = Event(self.last_id, fields.get("event", "message"), json.loads(data) if data.startswith("{") else data)
            self.apply(ev)
            return ev

    def apply(self, ev: Event) -> None:
        self.events.append(ev)
        if ev.event == "snapshot":
            self.table = {r["id"]: r for r in ev.data["active_calls"]}
        elif ev.event in ("call_added", "call_updated"):
            self.table[ev.data["id"]] = ev.data
        elif ev.event == "call_removed":
            self.table.pop(ev.data["id"], None)

    async def until_id(self, seq: int, timeout: float = 10.0) -> None:
        """Read until the stream has said it is past ``seq`` (an event's or a keepalive's id)."""
        async with asyncio.timeout(timeout):
            while self.last_id is None or self.last_id < seq:
                try:
                    await self.block()
                except EOFError:
                    raise AssertionError("stream ended early") from None


def without_duration(rows: dict[int, dict[str, Any]] | list[dict[str, Any]]) -> dict[int, list[tuple[str, Any]]]:
    items = rows.values() if isinstance(rows, dict) else rows
    return {r["id"]: [(k, v) for k, v in r.items() if k != "duration"] for r in items}


async def api_rows(http: aiohttp.ClientSession, base: str, params: dict[str, str]) -> dict[int, list[tuple[str, Any]]]:
    async with http.post(base + GET, data=params) as resp:
        doc = await resp.json()
    return without_duration(doc.get("active_calls", []))


# ----------------------------------------------------------------------------- hand-built world
class World:
    """A live table stand-in: rows by id, each change published to the hub like LiveTable does."""

    def __init__(self, rows: tuple[LiveCall, ...] = ROWS, **hub: int) -> None:
        self.rows: dict[int, LiveCall] = {r.id: r for r in rows}
        self.hub = ChangeHub(**hub)
        self.hub.seed(self.rows.values())

    def put(self, row: LiveCall) -> None:
        kind = "updated" if row.id in self.rows else "added"
        self.rows[row.id] = row
        self.hub.publish(kind, row)

    def drop(self, row_id: int) -> None:
        self.hub.publish("removed", self.rows.pop(row_id))

    def app(self, stream: StreamSettings | None = None, **settings: Any) -> web.Application:
        deps = ApiDeps(rows=lambda: tuple(self.rows.values()), refs=lambda: REFS,
                       settings=with_settings(**settings), clock=lambda: NOW, changes=self.hub)
        return create_app(deps, stream=stream or StreamSettings(keepalive=0.05))


@pytest.fixture
async def served() -> AsyncIterator[Callable[..., Any]]:
    runners: list[web.AppRunner] = []

    async def serve(app: web.Application) -> str:
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield serve
    for r in runners:
        await r.cleanup()


def _moved(row: LiveCall, **info: Any) -> LiveCall:
    return LiveCall(row.id, row.call, replace(row.info, **info))


def _answered(row: LiveCall) -> LiveCall:
    return LiveCall(row.id, row.call._replace(status=CallStatus.ANSWERED, answer_time=NOW - 2), row.info)


async def test_snapshot_and_deltas_follow_visibility_for_every_role(served: Any) -> None:
    world = World()
    base = await served(world.app())
    by_id = {r.id: r for r in ROWS}
    filters = [{}, {"s_status": "answered"}, {"s_provider": "1"}]
    async with aiohttp.ClientSession() as http:
        clients: list[tuple[dict[str, str], Sse]] = []
        for username in sorted(SECRETS):
            for f in filters:
                params = signed(username, **f)
                resp = await http.get(base + STREAM, params=params)
                if resp.content_type == "text/xml":  # e.g. a reseller's user naming the admin's provider
                    assert b"Provider was not found" in await resp.read() and "s_provider" in f
                    continue
                assert resp.status == 200 and resp.content_type == "text/event-stream"
                sse = Sse(resp)
                first = await sse.next()
                assert first.event == "snapshot" and first.id == world.hub.head
                clients.append((params, sse))

        async def check() -> None:
            for params, sse in clients:
                await sse.until_id(world.hub.head)
                assert without_duration(sse.table) == await api_rows(http, base, params), params

        await check()
        # alice's call 1 becomes bob's (alice loses it, bob gains it), 5 answers, 2 changes provider,
        # 9 goes away, a new call appears, 3 moves to carol (reseller's user)
        world.put(_moved(by_id[1], user_id=5, user="bob", owner_id=0, src_device_id=12))
        world.put(_answered(by_id[5]))
        world.put(_moved(by_id[2], provider_id=2, provider_name="resprov"))
        world.drop(9)
        world.put(LiveCall(10, by_id[4].call, by_id[4].info))
        world.put(_moved(by_id[3], user_id=8, user="Carol", owner_id=2))
        await check()
        kinds = {ev.event for _p, sse in clients for ev in sse.events}
        assert kinds == {"snapshot", "call_added", "call_updated", "call_removed"}
        for _p, sse in clients:
            ids: list[int] = []
            for ev in sse.events:
                assert ev.id is not None  # every event of the stream carries its position
                ids.append(ev.id)
            assert ids == sorted(ids) and len(set(ids)) == len(ids)  # monotonic
        for _p, sse in clients:
            sse.resp.close()


async def test_stream_rows_carry_the_json_extras(served: Any) -> None:
    """Snapshot and delta rows are ``active_calls_get``'s JSON rows: the extras too, in the API zone."""
    world = World()
    base = await served(world.app(timezone="Europe/Vilnius"))  # UTC+2 in November
    by_id = {r.id: r for r in ROWS}

    def expected(row: LiveCall) -> dict[str, Any]:
        start = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(row.call.start_time) + 7200))
        return {"server_id": row.call.server_id, "server_name": REFS.servers[row.call.server_id].hostname,
                "start_time": start, "start_epoch": row.call.start_time, "answer_epoch": row.call.answer_time,
                "did": row.info.did or None, "dst": row.call.dst or None}

    async with aiohttp.ClientSession() as http:
        resp = await http.get(base + STREAM, params=signed("admin"))
        sse = Sse(resp)
        snap = await sse.next()
        assert snap.event == "snapshot" and len(snap.data["active_calls"]) == len(ROWS)
        for got in snap.data["active_calls"]:
            assert {k: got[k] for k in EXTRAS} == expected(by_id[got["id"]]), got["id"]
        moved = LiveCall(12, by_id[6].call._replace(server_id=1, dst="37052000003", start_time=NOW - 7.5),
                         by_id[6].info)
        world.put(moved)
        added = await sse.next()
        assert added.event == "call_added" and {k: added.data[k] for k in EXTRAS} == expected(moved)
        assert added.data["did"] == "37052000003" and added.data["server_name"] == "pbx1"
        world.put(_answered(moved))
        updated = await sse.next()
        assert updated.event == "call_updated" and updated.data["answer_epoch"] == NOW - 2
        resp.close()


async def test_last_event_id_resume_loses_nothing_and_old_ids_get_a_snapshot(served: Any) -> None:
    world = World(history=50)
    base = await served(world.app())
    by_id = {r.id: r for r in ROWS}
    params = signed("alice")
    async with aiohttp.ClientSession() as http:
        resp = await http.get(base + STREAM, params=params)
        sse = Sse(resp)
        await sse.next()
        world.put(_answered(by_id[1]))
        await sse.until_id(world.hub.head)
        resp.close()  # the client goes away …
        seen = dict(sse.table)
        # … and misses: call 1 leaves alice (→ removed), 5 answers (→ updated), a new call of hers
        world.put(_moved(by_id[1], user_id=5, user="bob"))
        world.put(_answered(by_id[5]))
        world.put(LiveCall(11, by_id[2].call, by_id[2].info))
        world.put(_moved(by_id[7], provider_id=1))  # not hers: nothing to replay
        resp = await http.get(base + STREAM, params=params, headers={"Last-Event-ID": str(sse.last_id)})
        again = Sse(resp)
        again.table = seen
        got = [await again.next() for _ in range(3)]
        assert [e.event for e in got] == ["call_removed", "call_updated", "call_added"]
        await again.until_id(world.hub.head)
        assert without_duration(again.table) == await api_rows(http, base, params)
        resp.close()
        # too old (left the history), from the future, or garbage → a fresh snapshot
        for _ in range(120):
            world.put(_answered(by_id[7]))
        for bad in (str(sse.last_id), str(world.hub.head + 10), "abc"):
            resp = await http.get(base + STREAM, params=params, headers={"Last-Event-ID": bad})
            ev = await Sse(resp).next()
            assert ev.event == "snapshot" and ev.id == world.hub.head
            resp.close()
        # the query-string form (for pages that open a new EventSource themselves)
        head = world.hub.head
        world.put(_answered(by_id[2]))
        resp = await http.get(base + STREAM, params={**params, "last_event_id": str(head)})
        ev = await Sse(resp).next()
        assert ev.event == "call_updated" and ev.id == head + 1
        resp.close()


@pytest.mark.parametrize("username", ["admin", "alice"])  # the shared history / a routed inbox
async def test_stalled_client_is_dropped_without_delaying_others(served: Any, caplog: pytest.LogCaptureFixture,
                                                                 username: str) -> None:
    world = World(history=100_000)
    settings = StreamSettings(max_lag=300, keepalive=0.2, reap_interval=0.05, close_grace=30)
    app = world.app(settings)
    base = await served(app)
    port = int(base.rsplit(":", 1)[1])
    # the stalled client: a tiny receive buffer, reads the headers and the snapshot, then never again
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2 ** 20)
    q = "&".join(f"{k}={v}" for k, v in signed(username).items())
    writer.write(f"GET {STREAM}?{q} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await reader.readuntil(b"event: snapshot")
    caplog.set_level(logging.INFO, logger="api.stream")
    by_id = {r.id: r for r in ROWS}
    async with aiohttp.ClientSession() as http:
        fast = Sse(await http.get(base + STREAM, params=signed(username)))
        await fast.next()
        loop = asyncio.get_running_loop()
        worst = 0.0
        state = app[STREAM_KEY]
        for _burst in range(400):  # bursts of 200 changes of ~1 KB until the socket buffers are full
            for n in range(200):
                world.put(_answered(by_id[1 + (n % 9)]))
            target, sent = world.hub.head, loop.time()
            await fast.until_id(target, timeout=5)
            worst = max(worst, loop.time() - sent)
            if len(state.clients) == 1:
                break
        assert len(state.clients) == 1  # only the fast one is left
        assert worst < 1.0, f"the fast client waited {worst:.3f}s behind a stalled one"
        assert any("reason=too_slow" in r.getMessage() for r in caplog.records)
        fast.resp.close()
    # once the stalled client reads again it gets its backlog, then the final error line, then EOF
    rest = await asyncio.wait_for(reader.read(), 20)
    assert rest.rstrip(b"\r\n0").endswith(b"event: error\ndata: too slow")
    writer.close()


async def test_stream_auth_errors_methods_and_get(served: Any) -> None:
    world = World()
    base = await served(world.app())  # allow_get is off: the stream allows GET anyway
    async with aiohttp.ClientSession() as http:
        async with http.get(base + STREAM, params={"u": "admin", "hash": "0" * 40}) as resp:
            assert resp.content_type == "text/xml" and b"<error>Incorrect hash</error>" in await resp.read()
        async with http.get(base + STREAM + "?format=json", params={"u": "nobody"}) as resp:
            assert resp.content_type == "application/json" and await resp.json() == {"error": "Access Denied"}
        async with http.get(base + STREAM + "?format=json", params=signed("admin", s_status="x")) as resp:
            assert await resp.json() == {"error": "Status value must be Ringing or Answered"}
        async with http.put(base + STREAM, params=signed("admin")) as resp:
            assert resp.status == 405 and resp.headers["Allow"] == "GET, POST"
        async with http.post(base + STREAM, data=signed("admin")) as resp:  # POST (non-browser clients)
            ev = await Sse(resp).next()
            assert ev.event == "snapshot" and len(ev.data["active_calls"]) == len(ROWS)
    no_hub = create_app(ApiDeps(rows=lambda: ROWS, refs=lambda: REFS, settings=with_settings()))
    base = await served(no_hub)
    async with aiohttp.ClientSession() as http:
        async with http.get(base + STREAM, params=signed("admin")) as resp:
            assert resp.status == 503 and b"Stream not available" in await resp.read()
    disabled = World().app(enabled=False)
    base = await served(disabled)
    async with aiohttp.ClientSession() as http:
        async with http.get(base + STREAM, params=signed("admin")) as resp:
            assert b"API Requests are disabled" in await resp.read()


async def test_keepalive_carries_the_cursor_and_shutdown_ends_streams(served: Any) -> None:
    world = World()
    app = world.app(StreamSettings(keepalive=0.05))
    base = await served(app)
    async with aiohttp.ClientSession() as http:
        resp = await http.get(base + STREAM, params=signed("carol"))
        sse = Sse(resp)
        await sse.next()
        world.put(_answered(ROWS[1]))  # row 1: not carol's — she gets no event, only the cursor
        await sse.until_id(world.hub.head)
        assert [e.event for e in sse.events] == ["snapshot"]
        await app.shutdown()  # what runner.cleanup() does first: streams end, they do not hang
        with pytest.raises(EOFError):
            await sse.next(timeout=5)


# ----------------------------------------------------------------------------- the real daemon
async def test_stream_equals_active_calls_get_through_a_replayed_trace(tmp_path: Path,
                                                                       replay_server: Any) -> None:
    from collector.tools.timeline import iter_trace_messages
    from tests.conftest import scenario_files
    from tests.daemon_helpers import barrier, mor_hash, running_daemon, settings_for

    paths = scenario_files("concurrent_load")
    t0 = next(float(m["Timestamp"]) for m in iter_trace_messages(paths) if m.get("Timestamp"))
    replay = await replay_server("concurrent_load", fast=True)
    holds = [t0 + s for s in (3, 8, 14, 20, 27, 34)]
    replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= holds[0])
    async with running_daemon(settings_for(tmp_path, [replay.port])) as daemon:
        assert daemon._runner is not None
        app = daemon._runner.app
        hub = app[DEPS_KEY].changes
        assert hub is not None, "the daemon must pass changes=ChangeHub.following(self.live) to ApiDeps"
        app[STREAM_KEY].settings = StreamSettings(keepalive=0.05)  # ids of quiet clients arrive quickly
        refs = daemon._refs()
        admin = refs.users_by_username["admin"].api_secret_key
        reseller = refs.users_by_username["reseller"].api_secret_key
        who = [{"u": "admin", "hash": mor_hash("admin", admin)},
               {"u": "admin", "hash": mor_hash("admin", admin), "s_status": "answered"},
               {"u": "admin", "hash": mor_hash("admin", admin), "s_provider": "1"},
               {"u": "alice", "hash": mor_hash("alice", admin)},
               {"u": "bob", "hash": mor_hash("bob", admin)},
               {"u": "carol", "hash": mor_hash("carol", reseller)},
               {"u": "reseller", "hash": mor_hash("reseller", reseller)}]
        base = f"http://127.0.0.1:{daemon.port}"
        async with aiohttp.ClientSession() as http:
            clients = []
            for params in who:
                sse = Sse(await http.get(base + STREAM, params=params))
                assert (await sse.next()).event == "snapshot"
                clients.append((params, sse))
            late: Sse | None = None
            non_empty = 0
            for i, _hold in enumerate(holds + [None]):
                if i > 0:
                    replay.release()
                    if _hold is not None:
                        replay.hold(when=lambda ev, h=_hold: ev.timestamp is not None and ev.timestamp >= h)
                if _hold is not None:
                    await replay.wait_held(timeout=30)
                else:
                    await replay.wait_finished(timeout=60)
                await barrier(daemon)
                for params, sse in clients:
                    await sse.until_id(hub.head)
                    expected = await api_rows(http, base, params)
                    assert without_duration(sse.table) == expected, (params, i)
                    non_empty += bool(expected)
                if i == 2:  # a client that joins mid-trace and one that resumes
                    late = Sse(await http.get(base + STREAM, params=who[0]))
                    await late.next()
                    late.resp.close()
                if i == 4 and late is not None:
                    resumed = Sse(await http.get(base + STREAM, params=who[0],
                                                 headers={"Last-Event-ID": str(late.last_id)}))
                    resumed.table = dict(late.table)
                    await resumed.until_id(hub.head)
                    assert resumed.events[0].event != "snapshot"
                    assert without_duration(resumed.table) == await api_rows(http, base, who[0])
                    resumed.resp.close()
            assert non_empty > 10  # the check compared real calls, not only empty tables
            assert len(daemon.live) == 0
            for _p, sse in clients:
                sse.resp.close()


# ----------------------------------------------------------------------------- the hub itself
def test_hub_history_bounds_and_sequence_numbers() -> None:
    hub = ChangeHub(history=10, first_seq=100)
    assert hub.head == 100 and hub.since(100) == [] and hub.since(101) is None  # from the future
    for _ in range(30):
        hub.publish("updated", ROWS[0])
    assert hub.head == 130
    assert [c.seq for c in hub.since(125) or []] == [126, 127, 128, 129, 130]
    assert hub.since(100) is None  # left the history: a resume there needs a snapshot
    assert hub.oldest <= 121 and len(hub.since(hub.oldest - 1) or []) <= 13  # bounded (≤ 1.25 × history)
    later = ChangeHub()
    assert later.head > 1_700_000_000_000_000 and later.head < 2 ** 53  # µs of wall clock, exact in JS


def test_hub_routes_changes_to_the_users_they_involve_before_and_after() -> None:
    from api.changes import Inbox

    hub = ChangeHub()
    hub.seed(ROWS)
    alice, bob, res = Inbox(100), Inbox(100), Inbox(100)
    hub.attach(4, alice)
    hub.attach(5, bob)
    hub.attach(2, res)  # the reseller: owner of user 3 (ruser) and of carol (8)
    row1 = ROWS[1]  # alice's call
    hub.publish("updated", _moved(row1, user_id=5, user="bob", owner_id=0))  # alice's → bob's
    assert len(alice.items) == 1 and alice.items[0].prev is row1  # she must hear it leave
    assert len(bob.items) == 1 and not res.items
    hub.publish("updated", _moved(ROWS[3], user_id=8, owner_id=2))  # ruser's → carol's: reseller's both
    assert len(res.items) == 1
    hub.detach(5, bob)
    hub.publish("removed", ROWS[0])  # bob's call 5 to alice's device, bob detached
    assert len(bob.items) == 1 and len(alice.items) == 2
    tiny = Inbox(1)
    hub.attach(4, tiny)
    hub.publish("updated", ROWS[1])
    hub.publish("updated", ROWS[1])
    assert tiny.overflow and len(tiny.items) == 1  # bounded: overflow marks it for dropping
