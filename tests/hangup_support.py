"""A real daemon on a held replay of ``concurrent_load`` with hang-up on, Bearer tokens and DELETE helpers."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from api.tokens import TokenIssuer
from collector.live.table import LiveCall
from collector.service.daemon import Daemon
from collector.service.hangup import HangupSettings
from collector.tools.replay import ReplayServer
from collector.tools.timeline import iter_trace_messages
from tests.conftest import ReplayFactory, scenario_files
from tests.daemon_helpers import barrier, settings_for

KEY = b"k" * 32  # the daemon's token key in these tests
CALLS = "/billing/api/v2/active_calls"
HOLD_AFTER = 15.0  # s of concurrent_load replayed before the trace is held: ~85 calls up


def issuer(clock: Callable[[], float] | None = None) -> TokenIssuer:
    return TokenIssuer(KEY, 900) if clock is None else TokenIssuer(KEY, 900, clock)


def first_ts(name: str = "concurrent_load") -> float:
    return next(float(m["Timestamp"]) for m in iter_trace_messages(scenario_files(name)) if m.get("Timestamp"))


async def held_replay(replay_server: ReplayFactory, after: float = HOLD_AFTER) -> ReplayServer:
    hold_at = first_ts() + after
    replay = await replay_server("concurrent_load", fast=True)
    replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= hold_at)
    return replay


@asynccontextmanager
async def hangup_daemon(tmp: Path, replays: Iterable[ReplayServer], api: dict[str, Any] | None = None,
                        **hangup: Any) -> AsyncIterator[Daemon]:
    """The daemon following ``replays`` (pbx1, pbx2 … = server ids 1, 2 …), every replay held and applied;
    ``hangup``: ``[hangup]`` keys (``enabled`` defaults to yes here), ``api``: ``ApiSettings`` fields."""
    replays = list(replays)
    settings = settings_for(tmp, [r.port for r in replays])
    options = {"enabled": True, **hangup}
    settings = dataclasses.replace(settings, hangup=HangupSettings(**options),
                                   api=dataclasses.replace(settings.api, **(api or {})))
    daemon = Daemon(settings)
    daemon.tokens = issuer()
    await daemon.start()
    try:
        for i, replay in enumerate(replays):
            await replay.wait_held(timeout=30)
            await barrier(daemon, i)
        yield daemon
    finally:
        await daemon.stop()


def token(daemon: Daemon, username: str, tokens: TokenIssuer | None = None) -> str:
    user = daemon._refs().users_by_username[username]
    return (tokens or issuer()).issue(user.username, user.id).token


async def delete(daemon: Daemon, path: str, bearer: str | None, **params: str) -> tuple[int, dict[str, Any]]:
    """A DELETE over real HTTP; the JSON body (asserted to be JSON)."""
    headers = {} if bearer is None else {"Authorization": f"Bearer {bearer}"}
    async with aiohttp.ClientSession() as http:
        async with http.delete(f"http://127.0.0.1:{daemon.port}{path}", headers=headers, params=params) as resp:
            assert resp.content_type == "application/json", resp.content_type
            return resp.status, json.loads(await resp.read())


def row_by_id(daemon: Daemon, call_id: int) -> LiveCall | None:
    return next((r for r in daemon.live.rows() if r.id == call_id), None)


def calls_where(daemon: Daemon, pred: Callable[[LiveCall], bool]) -> list[LiveCall]:
    return sorted((r for r in daemon.live.rows() if pred(r)), key=lambda r: r.id)
