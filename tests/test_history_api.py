"""``active_calls_history`` per role, with exact values: a real sampler fed the shared API rows over three
buckets, two of them written to a real SQLite store and one still open; each role's points must equal the
counts of the rows that role may list (``VISIBLE``, the API's own table). Then every error text."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from api.app import create_app
from api.deps import ApiDeps
from api.errors import INCORRECT_HASH, SERVER_NOT_FOUND
from api.history import (
    BAD_PERIOD_END,
    BAD_PERIOD_START,
    HISTORY_DISABLED,
    PERIOD_MISSING,
    PERIOD_ORDER,
    PERIOD_TOO_LONG,
    SERVER_NOT_ALLOWED,
    USER_HISTORY_DISABLED,
    parse_time,
)
from collector.live.history import HistorySampler
from collector.live.historydb import HistoryRecorder, HistoryStore
from collector.tracking.calls import CallStatus
from tests.api_support import NOW, REFS, ROWS, SECRETS, VISIBLE, error_of, sha, signed, status_error_of, with_settings

HISTORY = "/billing/api/active_calls_history"
B0, B1, B2 = int(NOW), int(NOW) + 15, int(NOW) + 30  # NOW is a multiple of 15
SETS = {B0: frozenset(range(1, 9)), B1: frozenset(range(1, 10)), B2: frozenset({3, 4, 5, 6, 7, 8, 9})}
ANSWERED = frozenset(r.id for r in ROWS if r.call.status is CallStatus.ANSWERED)
RESELLERS = frozenset(u.id for u in REFS.data.users if u.usertype == "reseller")


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class World:
    recorder: HistoryRecorder
    store: HistoryStore


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """Bucket B0: rows 1-8; B1: row 9 joins (all nine), then rows 1 and 2 end; B2 (open): what stands."""
    clock = Clock(NOW + 1)
    sampler = HistorySampler(clock, resellers=RESELLERS)
    by_id = {r.id: r for r in ROWS}
    sampler.seed(by_id[i] for i in sorted(SETS[B0]))
    clock.t = NOW + 16
    sampler.on_change("added", by_id[9])
    clock.t = NOW + 17
    sampler.on_change("removed", by_id[1])
    sampler.on_change("removed", by_id[2])
    clock.t = NOW + 31
    store = HistoryStore(tmp_path / "h.db")
    recorder = HistoryRecorder(sampler, store, retention_days=30, clock=clock)
    assert await recorder.flush() > 0  # B0 and B1 stored; B2 stays open in memory
    assert {b for b, _t, _a in store.query("all", 0, 10**10)} == {B0, B1}
    yield World(recorder, store)
    recorder.close()
    store.close()


def _app(world: World | None, per_user: bool = True, **settings: Any) -> Any:
    async def history(series: str, start: int, end: int) -> list[tuple[int, int, int]] | None:
        assert world is not None
        if series.startswith("user:") and not per_user:
            return None
        return await world.recorder.query(series, start, end)
    return create_app(ApiDeps(rows=lambda: ROWS, refs=lambda: REFS, settings=with_settings(**settings),
                              clock=lambda: NOW + 31, history=history if world is not None else None))


def _expected(visible: Collection[int]) -> list[dict[str, int]]:
    out = []
    for b, ids in SETS.items():
        seen = ids & set(visible)
        if seen:
            out.append({"time": b, "total": len(seen), "answered": len(seen & ANSWERED)})
    return out


def _period(start: int = B0, end: int = B0 + 45) -> dict[str, str]:
    return {"period_start": str(start), "period_end": str(end)}


async def _json(client: Any, params: dict[str, str], path: str = HISTORY) -> Any:
    resp = await client.post(path, data=params)
    assert resp.status == 200 and resp.content_type == "application/json"
    return json.loads(await resp.read())


@pytest.mark.parametrize("username", sorted(SECRETS))
async def test_each_role_gets_the_counts_of_the_calls_it_may_list(aiohttp_client: Any, world: World,
                                                                 username: str) -> None:
    client = await aiohttp_client(_app(world))
    doc = await _json(client, signed(username, **_period()))
    assert doc == {"bucket_seconds": 15, "period_start": B0, "period_end": B0 + 45,
                   "points": _expected(VISIBLE[username])}
    if username not in ("odd",):
        assert doc["points"], "every fixture role but the odd one sees calls"


async def test_admin_and_accountant_may_ask_for_one_server(aiohttp_client: Any, world: World) -> None:
    client = await aiohttp_client(_app(world))
    for username in ("admin", "acc"):
        for sid in (1, 2):
            on = {r.id for r in ROWS if r.call.server_id == sid}
            doc = await _json(client, signed(username, s_server=str(sid), **_period()))
            assert doc["points"] == _expected(on)
        assert (await _json(client, signed(username, s_server="3", **_period())))["points"] == []  # idle server


async def test_server_series_is_refused_to_scoped_callers(aiohttp_client: Any, world: World) -> None:
    client = await aiohttp_client(_app(world))
    for username in ("res", "alice"):
        body = await (await client.post(HISTORY, data=signed(username, s_server="1", **_period()))).read()
        assert error_of(body) == SERVER_NOT_ALLOWED
    body = await (await client.post(HISTORY, data=signed("admin", s_server="99", **_period()))).read()
    assert error_of(body) == SERVER_NOT_FOUND


async def test_period_picks_the_overlapping_buckets(aiohttp_client: Any, world: World) -> None:
    client = await aiohttp_client(_app(world))
    doc = await _json(client, signed("admin", **_period(B1 + 5, B1 + 10)))  # inside B1: B1 overlaps
    assert [p["time"] for p in doc["points"]] == [B1]
    assert doc["period_start"] == B1 + 5 and doc["period_end"] == B1 + 10
    doc = await _json(client, signed("admin", **_period(B0, B1)))  # the end is exclusive
    assert [p["time"] for p in doc["points"]] == [B0]
    doc = await _json(client, signed("admin", **_period(B2, B2 + 1)))  # only the open bucket
    assert doc["points"] == [{"time": B2, "total": 7, "answered": 5}]
    doc = await _json(client, signed("admin", **_period(B2 + 15, B2 + 3600)))
    assert doc["points"] == []


async def test_wall_times_in_the_api_zone(aiohttp_client: Any, world: World) -> None:
    client = await aiohttp_client(_app(world))
    # NOW = 2026-11-26 13:50:00 UTC = 15:50:00 in Vilnius (EET, +2)
    doc = await _json(client, signed("admin", period_start="2026-11-26 13:50:00", period_end="2026-11-26 13:50:45"))
    assert doc["period_start"] == B0 and len(doc["points"]) == 3
    client = await aiohttp_client(_app(world, timezone="Europe/Vilnius"))
    doc = await _json(client, signed("admin", period_start="2026-11-26 15:50:15", period_end=str(B2)))
    assert doc["period_start"] == B1 and [p["time"] for p in doc["points"]] == [B1]


def test_parse_time() -> None:
    from zoneinfo import ZoneInfo

    assert parse_time("1795701000", None) == 1_795_701_000
    assert parse_time("2026-11-26 13:50:00", ZoneInfo("UTC")) == 1_795_701_000
    assert parse_time("2026-03-29 03:30:00", ZoneInfo("Europe/Vilnius")) == parse_time("2026-03-29 01:30:00",
                                                                                      ZoneInfo("UTC"))
    for bad in ("", "-5", "1.5", "2026-11-26", "2026-11-26T13:50:00", "2026-02-30 00:00:00", "2026-11-26 24:00:00",
                "123456789012", "\x00", " 1795701000"):
        assert parse_time(bad, ZoneInfo("UTC")) is None, bad


PERIOD_ERRORS = [
    ({}, PERIOD_MISSING),
    ({"period_start": str(B0)}, PERIOD_MISSING),
    ({"period_end": str(B0)}, PERIOD_MISSING),
    ({"period_start": "yesterday", "period_end": str(B0)}, BAD_PERIOD_START),
    ({"period_start": str(B0), "period_end": "2026-11-26 25:00:00"}, BAD_PERIOD_END),
    ({"period_start": "x" * 5000, "period_end": str(B0)}, BAD_PERIOD_START),  # oversize: never a time
    ({"period_start": str(B1), "period_end": str(B0)}, PERIOD_ORDER),
    ({"period_start": str(B0), "period_end": str(B0)}, PERIOD_ORDER),
    ({"period_start": str(B0), "period_end": str(B0 + 31 * 86400 + 1)}, PERIOD_TOO_LONG),
]


@pytest.mark.parametrize(("params", "text"), PERIOD_ERRORS)
async def test_period_errors(aiohttp_client: Any, world: World, params: dict[str, str], text: str) -> None:
    client = await aiohttp_client(_app(world))
    resp = await client.post(HISTORY, data=signed("admin", **params))
    assert resp.status == 200 and error_of(await resp.read()) == text
    resp = await client.post(HISTORY + "?format=json", data=signed("admin", **params))
    assert resp.status == 200 and json.loads(await resp.read()) == {"error": text}


async def test_exactly_31_days_is_allowed(aiohttp_client: Any, world: World) -> None:
    client = await aiohttp_client(_app(world))
    doc = await _json(client, signed("admin", **_period(B0, B0 + 31 * 86400)))
    assert len(doc["points"]) == 3


async def test_auth_comes_first_then_history_off_then_user_series_off(aiohttp_client: Any, world: World) -> None:
    client = await aiohttp_client(_app(world))
    body = await (await client.post(HISTORY, data={"u": "admin", "hash": sha("wrong"), **_period()})).read()
    assert status_error_of(body) == INCORRECT_HASH
    client = await aiohttp_client(_app(None))
    assert error_of(await (await client.post(HISTORY, data=signed("admin", **_period()))).read()) == HISTORY_DISABLED
    assert error_of(await (await client.post(HISTORY, data=signed("admin"))).read()) == HISTORY_DISABLED
    client = await aiohttp_client(_app(world, per_user=False))
    body = await (await client.post(HISTORY, data=signed("alice", **_period()))).read()
    assert error_of(body) == USER_HISTORY_DISABLED
    assert (await _json(client, signed("res", **_period())))["points"] == _expected(VISIBLE["res"])


async def test_get_follows_allow_get_and_the_second_path_answers(aiohttp_client: Any, world: World) -> None:
    client = await aiohttp_client(_app(world))
    body = await (await client.get(HISTORY, params=signed("admin", **_period()))).read()
    assert status_error_of(body) == "GET Requests are disabled"
    client = await aiohttp_client(_app(world, allow_get=True))
    resp = await client.get("/api/active_calls_history", params=signed("admin", **_period()))
    assert resp.status == 200 and len(json.loads(await resp.read())["points"]) == 3



async def test_a_long_period_answers_every_point(aiohttp_client: Any, tmp_path: Path) -> None:
    """Beyond the inline limit the JSON is rendered in a worker thread: the same document, every point."""
    clock = Clock(NOW + 31 * 86_400)
    store = HistoryStore(tmp_path / "long.db")
    start = int(NOW)
    rows = [("all", start + 15 * i, i % 97, i % 89 if i % 89 <= i % 97 else 0) for i in range(10_000)]
    store.write(rows)
    world = World(HistoryRecorder(HistorySampler(clock), store, retention_days=30, clock=clock), store)
    try:
        client = await aiohttp_client(_app(world))
        doc = await _json(client, signed("acc", **_period(start, start + 31 * 86_400)))
        assert doc["points"] == [{"time": b, "total": t, "answered": a} for _s, b, t, a in rows]
    finally:
        world.recorder.close()
        store.close()
