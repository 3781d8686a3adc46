"""Bulk ``DELETE /billing/api/v2/active_calls`` over real TCP: ``s_*`` filters scoped as in
``active_calls_get``, ``dry_run``, the answer body, pacing per server (measured on the times the replay
servers saw the Hangup actions, not on how long the test took), servers in parallel, the bound on
concurrent bulk requests."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from collector.live.table import LiveCall
from collector.service.hangup import MAX_BULK
from collector.tracking.calls import CallStatus
from tests.conftest import ReplayFactory
from tests.daemon_helpers import wait_until
from tests.hangup_support import CALLS, calls_where, delete, hangup_daemon, held_replay, row_by_id, token

T = 90.0


def sees(user_id: int, row: LiveCall) -> bool:
    """The reseller rule, written out independently of api.scope."""
    i = row.info
    return user_id in (i.user_id, i.owner_id, i.dst_user_id, i.dst_owner_id)


def assert_paced(times: list[float], rate: float) -> None:
    """No stretch of the log holds more actions than ``rate`` allows: k actions after one are ≥ k/rate s
    later. Exact, without slack for delivery jitter: the daemon writes an action only 1/rate after the
    answer to the previous one, which the server wrote after it logged that action (the log and the
    daemon's bucket share the loop's monotonic clock; 1 ms covers the float sums)."""
    for i, t0 in enumerate(times):
        for j in range(i + 1, len(times)):
            assert times[j] - t0 >= (j - i) / rate - 0.001, (i, j, times[j] - t0, rate)


async def test_dry_run_lists_what_the_filters_select_and_touches_nothing(tmp_path: Path,
                                                                         replay_server: ReplayFactory) -> None:
    async with asyncio.timeout(T):
        replay = await held_replay(replay_server)
        async with hangup_daemon(tmp_path, [replay]) as daemon:
            reseller = token(daemon, "reseller")
            everything = {r.id for r in daemon.live.rows()}
            expected = [r.id for r in calls_where(daemon, lambda r: sees(4, r))]
            assert 0 < len(expected) < len(everything)
            assert await delete(daemon, CALLS + "?dry_run=1", reseller) == (
                200, {"status": "dry_run", "would_hang_up": expected})
            answered = [r.id for r in calls_where(daemon, lambda r: sees(4, r)
                                                  and r.call.status is CallStatus.ANSWERED)]
            assert 0 < len(answered) < len(expected)
            assert await delete(daemon, CALLS + "?dry_run=true&s_status=answered", reseller) == (
                200, {"status": "dry_run", "would_hang_up": answered})
            carol = [r.id for r in calls_where(daemon, lambda r: r.info.user_id == 5)]
            assert carol and await delete(daemon, CALLS + "?dry_run=1&s_user_id=5", reseller) == (
                200, {"status": "dry_run", "would_hang_up": carol})
            # a filter naming what the caller may not see fails exactly like one naming nothing
            for params in ("s_user_id=2", "s_user_id=999"):
                assert await delete(daemon, f"{CALLS}?dry_run=1&{params}", reseller) == (
                    400, {"error": "Originating User was not found"})
            assert await delete(daemon, CALLS + "?dry_run=maybe", reseller) == (
                400, {"error": "dry_run must be 1 or 0"})
            assert await delete(daemon, CALLS + "?s_status=talking", reseller) == (
                400, {"error": "Status value must be Ringing or Answered"})
            assert len(replay.hangup_log) == 0 and {r.id for r in daemon.live.rows()} == everything


async def test_bulk_hangs_up_exactly_the_selected_calls(tmp_path: Path, replay_server: ReplayFactory) -> None:
    async with asyncio.timeout(T):
        replay = await held_replay(replay_server)
        async with hangup_daemon(tmp_path, [replay], rate_per_server=200) as daemon:
            admin = token(daemon, "admin")
            alice = [r.id for r in calls_where(daemon, lambda r: r.info.user_id == 2)]
            rest = {r.id for r in daemon.live.rows()} - set(alice)
            assert len(alice) >= 3 and rest
            status, body = await delete(daemon, CALLS, admin, s_user_id="2")
            assert status == 200 and set(body) == {"status", "hung_up_calls", "failed", "hung_up_at"}
            assert body["status"] == "hung_up" and body["hung_up_calls"] == alice and body["failed"] == []
            assert all(row_by_id(daemon, i) is None for i in alice)
            assert {r.id for r in daemon.live.rows()} == rest
            # nothing left to select: an empty answer, nothing sent
            sent = len(replay.hangup_log)
            status, body = await delete(daemon, CALLS, admin, s_user_id="2")
            assert (status, body["hung_up_calls"], body["failed"]) == (200, [], [])
            assert len(replay.hangup_log) == sent


async def test_a_user_bulk_hangs_up_only_his_own(tmp_path: Path, replay_server: ReplayFactory) -> None:
    async with asyncio.timeout(T):
        replay = await held_replay(replay_server)
        async with hangup_daemon(tmp_path, [replay], users_may_hang_up=True, rate_per_server=200) as daemon:
            carols = [r.id for r in calls_where(daemon, lambda r: 5 in (r.info.user_id, r.info.dst_user_id))]
            others = {r.id for r in daemon.live.rows()} - set(carols)
            status, body = await delete(daemon, CALLS, token(daemon, "carol"))
            assert (status, body["hung_up_calls"], body["failed"]) == (200, carols, [])
            assert {r.id for r in daemon.live.rows()} == others
            assert await delete(daemon, CALLS, token(daemon, "accountant")) == (
                403, {"error": "Not allowed to hang up calls"})


async def test_bulk_is_paced_per_server_and_servers_run_in_parallel(tmp_path: Path,
                                                                    replay_server: ReplayFactory) -> None:
    rate = 8.0
    async with asyncio.timeout(T):
        replays = [await held_replay(replay_server), await held_replay(replay_server)]
        async with hangup_daemon(tmp_path, replays, rate_per_server=rate) as daemon:
            selected = calls_where(daemon, lambda r: r.info.user_id == 5)
            per_server = {sid: [r for r in selected if r.call.server_id == sid] for sid in (1, 2)}
            assert all(len(rows) >= 8 for rows in per_server.values()), {k: len(v) for k, v in per_server.items()}
            status, body = await delete(daemon, CALLS, token(daemon, "admin"), s_user_id="5")
            assert (status, body["hung_up_calls"], body["failed"]) == (200, [r.id for r in selected], [])
            logs = [[t for t, _channel in replay.hangup_log] for replay in replays]
            for log, sid in zip(logs, (1, 2), strict=True):
                assert len(log) >= len(per_server[sid])
                assert_paced(log, rate)
            # in parallel: each server's first Hangup came before the other's last one
            assert logs[0][0] < logs[1][-1] and logs[1][0] < logs[0][-1]


async def test_concurrent_bulk_requests_are_bounded(tmp_path: Path, replay_server: ReplayFactory) -> None:
    async with asyncio.timeout(T):
        replay = await held_replay(replay_server)
        async with hangup_daemon(tmp_path, [replay], rate_per_server=0.5) as daemon:
            admin = token(daemon, "admin")
            assert daemon.hangups is not None
            executor = daemon.hangups
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{daemon.port}{CALLS}"
                slow = [asyncio.ensure_future(http.delete(url, headers={"Authorization": f"Bearer {admin}"},
                                                          params={"s_user_id": uid})) for uid in ("2", "3")]
                # both are being worked on (paced at one call per 2 s)
                await wait_until(lambda: executor._bulk == MAX_BULK, what="two bulk hang-ups running")
                assert await delete(daemon, CALLS, admin, s_user_id="5") == (
                    429, {"error": "Too many bulk hang-ups in progress, try again later"})
                assert await delete(daemon, CALLS + "?dry_run=1", admin) == (
                    200, {"status": "dry_run", "would_hang_up": sorted(r.id for r in daemon.live.rows())})
                for task in slow:
                    task.cancel()
                await asyncio.gather(*slow, return_exceptions=True)
            await wait_until(lambda: executor._bulk == 0, what="the bulks stopped with their clients")
            left = calls_where(daemon, lambda r: r.info.user_id in (2, 3))
            assert len(left) >= 4  # at a call per 2 s, most of them were never reached


async def test_s_server_narrows_a_bulk_to_one_server(tmp_path: Path, replay_server: ReplayFactory) -> None:
    async with asyncio.timeout(T):
        replays = [await held_replay(replay_server), await held_replay(replay_server)]
        async with hangup_daemon(tmp_path, replays, rate_per_server=200) as daemon:
            admin = token(daemon, "admin")
            first = [r.id for r in calls_where(daemon, lambda r: r.call.server_id == 1 and r.info.user_id == 3)]
            second = {r.id for r in calls_where(daemon, lambda r: r.call.server_id == 2)}
            assert first and second
            status, body = await delete(daemon, CALLS, admin, s_server="1", s_user_id="3")
            assert (status, body["hung_up_calls"], body["failed"]) == (200, first, [])
            assert len(replays[1].hangup_log) == 0
            assert {r.id for r in calls_where(daemon, lambda r: r.call.server_id == 2)} == second
            # the demo's reference data knows server 1 only: another id fails as in active_calls_get
            assert await delete(daemon, CALLS, admin, s_server="2") == (400, {"error": "Server was not found"})
