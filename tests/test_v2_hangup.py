"""``DELETE /billing/api/v2/active_calls/{id}`` over real TCP: a held replay of a real Asterisk 20 trace, the
real daemon (AMI session, tracker, live table, HTTP) and an aiohttp client with Bearer tokens.

Each role × (own call, another's call, missing id, expired token, forged token) with exact status and body;
a refused request never reaches Asterisk (the replay server's ``hangup_log`` stays as it was) and leaves
the call up; a hung-up call is gone from ``active_calls_get`` and the push stream; every attempt is one
``collector.audit`` line; a disconnected server is answered 503 with no action sent; off by default."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from api.auth import Principal, Role
from api.deps import DEPS_KEY
from api.tokens import TokenIssuer
from collector.live.table import LiveCall
from collector.service.daemon import Daemon
from collector.tools.replay import ReplayServer
from tests.conftest import ReplayFactory
from tests.daemon_helpers import admin_page, mor_hash, wait_until
from tests.hangup_support import CALLS, calls_where, delete, hangup_daemon, held_replay, issuer, row_by_id, token
from tests.test_stream import Sse

T = 60.0  # per-test bound (s): the held replay and the daemon's start included

NOT_FOUND = (404, {"error": "Active call not found"})
FORBIDDEN_ROLE = (403, {"error": "Not allowed to hang up calls"})
DISABLED = (403, {"error": "Hang-up is disabled"})
EXPIRED = (401, {"error": "Token expired"})
FORGED = (401, {"error": "Invalid token"})
MISSING_ID = 999_999
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


def caller_is(user_id: int, *, owner: int | None = None) -> Callable[[LiveCall], bool]:
    """A call made by ``user_id`` that involves nobody else of ours (no callee user, or ``owner``'s)."""
    def pred(r: LiveCall) -> bool:
        return r.info.user_id == user_id and r.info.dst_user_id is None and (owner is None or r.info.owner_id == owner)
    return pred


def involves(row: LiveCall, user_id: int) -> bool:
    return user_id in (row.info.user_id, row.info.owner_id, row.info.dst_user_id, row.info.dst_owner_id)


def expired_token(daemon: Daemon, username: str) -> str:
    """Signed with the daemon's key, but issued 2,000 s ago (the lifetime is 900 s)."""
    return token(daemon, username, issuer(lambda: time.time() - 2000))


def forged_token(daemon: Daemon, username: str) -> str:
    """Right claims, wrong key."""
    return token(daemon, username, TokenIssuer(b"x" * 32, 900))


async def assert_refused(daemon: Daemon, replay: ReplayServer, path: str, bearer: str | None,
                         expected: tuple[int, dict[str, str]]) -> None:
    """The exact answer, nothing sent to Asterisk, every call still up."""
    before_log, before_rows = len(replay.hangup_log), {r.id for r in daemon.live.rows()}
    assert await delete(daemon, path, bearer) == expected
    assert len(replay.hangup_log) == before_log
    assert {r.id for r in daemon.live.rows()} == before_rows


async def assert_hung_up(daemon: Daemon, replay: ReplayServer, row: LiveCall, bearer: str) -> None:
    before_log = len(replay.hangup_log)
    status, body = await delete(daemon, f"{CALLS}/{row.id}", bearer)
    assert (status, set(body)) == (200, {"status", "hung_up_call", "hung_up_at"}), body
    assert body["status"] == "hung_up" and body["hung_up_call"] == row.id
    assert TIME_RE.match(body["hung_up_at"]), body
    at = datetime.strptime(body["hung_up_at"], "%Y-%m-%d %H:%M:%S").timestamp()  # the API zone: local here
    assert abs(at - time.time()) < 120
    assert row_by_id(daemon, row.id) is None
    sent = [channel for _t, channel in list(replay.hangup_log)[before_log:]]
    assert sent and sent[0] == row.call.channel  # the caller's channel first


@pytest.fixture
def audit_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="collector.audit")
    return caplog


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "collector.audit"]


# ------------------------------------------------------------------------------------------------ the matrix

async def test_each_role_own_other_missing_expired_forged(tmp_path: Path, replay_server: ReplayFactory,
                                                          audit_log: pytest.LogCaptureFixture) -> None:
    async with asyncio.timeout(T):
        replay = await held_replay(replay_server)
        async with hangup_daemon(tmp_path, [replay], users_may_hang_up=True) as daemon:
            alice_calls = calls_where(daemon, caller_is(2))  # alice (user 2, the admin's)
            carol_calls = calls_where(daemon, caller_is(5, owner=4))  # carol (user 5, the reseller's)
            bob_calls = calls_where(daemon, caller_is(3))  # bob (user 3): nobody's but the admin's
            assert len(alice_calls) >= 3 and len(carol_calls) >= 3 and len(bob_calls) >= 3

            # admin: any call is his to end
            await assert_hung_up(daemon, replay, bob_calls.pop(), token(daemon, "admin"))
            await assert_hung_up(daemon, replay, carol_calls.pop(), token(daemon, "admin"))
            await assert_refused(daemon, replay, f"{CALLS}/{MISSING_ID}", token(daemon, "admin"), NOT_FOUND)
            await assert_refused(daemon, replay, f"{CALLS}/{bob_calls[0].id}", expired_token(daemon, "admin"),
                                 EXPIRED)
            await assert_refused(daemon, replay, f"{CALLS}/{bob_calls[0].id}", forged_token(daemon, "admin"), FORGED)

            # reseller: his users' calls; another's call is answered exactly like a missing one
            reseller = token(daemon, "reseller")
            assert not involves(alice_calls[0], 4)
            await assert_hung_up(daemon, replay, carol_calls.pop(), reseller)
            await assert_refused(daemon, replay, f"{CALLS}/{alice_calls[0].id}", reseller, NOT_FOUND)
            await assert_refused(daemon, replay, f"{CALLS}/{MISSING_ID}", reseller, NOT_FOUND)
            await assert_refused(daemon, replay, f"{CALLS}/{carol_calls[0].id}", expired_token(daemon, "reseller"),
                                 EXPIRED)
            await assert_refused(daemon, replay, f"{CALLS}/{carol_calls[0].id}", forged_token(daemon, "reseller"),
                                 FORGED)

            # a user (users_may_hang_up = yes): only his own
            alice = token(daemon, "alice")
            await assert_hung_up(daemon, replay, alice_calls.pop(), alice)
            await assert_refused(daemon, replay, f"{CALLS}/{bob_calls[0].id}", alice, NOT_FOUND)
            await assert_refused(daemon, replay, f"{CALLS}/{MISSING_ID}", alice, NOT_FOUND)
            await assert_refused(daemon, replay, f"{CALLS}/{alice_calls[0].id}", expired_token(daemon, "alice"),
                                 EXPIRED)
            await assert_refused(daemon, replay, f"{CALLS}/{alice_calls[0].id}", forged_token(daemon, "alice"),
                                 FORGED)

            # the accountant: never, whatever the id (refused before any call is looked at)
            accountant = token(daemon, "accountant")
            for path in (f"{CALLS}/{alice_calls[0].id}", f"{CALLS}/{bob_calls[0].id}", f"{CALLS}/{MISSING_ID}"):
                await assert_refused(daemon, replay, path, accountant, FORBIDDEN_ROLE)
            await assert_refused(daemon, replay, f"{CALLS}/{bob_calls[0].id}", expired_token(daemon, "accountant"),
                                 EXPIRED)
            await assert_refused(daemon, replay, f"{CALLS}/{bob_calls[0].id}", forged_token(daemon, "accountant"),
                                 FORGED)

            # ids that are no number, and no token at all
            for raw in ("abc", "-1", "1.0", "0x10", "9" * 40):
                await assert_refused(daemon, replay, f"{CALLS}/{raw}", token(daemon, "admin"), NOT_FOUND)
            await assert_refused(daemon, replay, f"{CALLS}/{bob_calls[0].id}", None,
                                 (401, {"error": "Missing bearer token"}))

            lines = audit_lines(audit_log)
            done = [ln for ln in lines if "result=hung_up" in ln]
            assert len(done) == 4
            assert len([ln for ln in lines if "result=not_found" in ln]) == 3 + 2 + 5
            assert len([ln for ln in lines if "result=forbidden" in ln]) == 3
            assert daemon.hangups is not None
            assert daemon.hangups.counts["hung_up"] == 4 and daemon.hangups.counts["not_found"] == 10


async def test_users_may_not_hang_up_by_default(tmp_path: Path, replay_server: ReplayFactory) -> None:
    async with asyncio.timeout(T):
        replay = await held_replay(replay_server)
        async with hangup_daemon(tmp_path, [replay]) as daemon:  # enabled, users_may_hang_up left at no
            alice = token(daemon, "alice")
            own = calls_where(daemon, caller_is(2))[0]
            other = calls_where(daemon, caller_is(3))[0]
            for path in (f"{CALLS}/{own.id}", f"{CALLS}/{other.id}", f"{CALLS}/{MISSING_ID}", CALLS):
                await assert_refused(daemon, replay, path, alice, FORBIDDEN_ROLE)
            await assert_refused(daemon, replay, f"{CALLS}/{own.id}", expired_token(daemon, "alice"), EXPIRED)
            await assert_refused(daemon, replay, f"{CALLS}/{own.id}", forged_token(daemon, "alice"), FORGED)
            await assert_hung_up(daemon, replay, own, token(daemon, "admin"))  # the call itself can be ended


async def test_feature_disabled_is_403_for_everyone(tmp_path: Path, replay_server: ReplayFactory) -> None:
    async with asyncio.timeout(T):
        replay = await held_replay(replay_server)
        async with hangup_daemon(tmp_path, [replay], enabled=False, users_may_hang_up=True) as daemon:
            row = calls_where(daemon, caller_is(5, owner=4))[0]
            for user in ("admin", "reseller", "carol", "accountant"):
                for path in (f"{CALLS}/{row.id}", f"{CALLS}/{MISSING_ID}", CALLS, f"{CALLS}?dry_run=1"):
                    await assert_refused(daemon, replay, path, token(daemon, user), DISABLED)
            await assert_refused(daemon, replay, f"{CALLS}/{row.id}", forged_token(daemon, "admin"), FORGED)


# ------------------------------------------------------------------------------------------------ the effects

async def test_a_hung_up_call_leaves_active_calls_get_and_the_stream(tmp_path: Path, replay_server: ReplayFactory,
                                                                     audit_log: pytest.LogCaptureFixture) -> None:
    async with asyncio.timeout(T):
        replay = await held_replay(replay_server)
        async with hangup_daemon(tmp_path, [replay]) as daemon:
            row = calls_where(daemon, caller_is(3))[0]
            page = await admin_page(daemon)
            assert str(row.id) in page.xpath("/page/active_call/id/text()")  # type: ignore[operator]
            secret = daemon._refs().users_by_username["admin"].api_secret_key
            stream_url = (f"http://127.0.0.1:{daemon.port}/billing/api/active_calls_stream"
                          f"?u=admin&hash={mor_hash('admin', secret)}")
            async with aiohttp.ClientSession() as http, http.get(stream_url) as resp:
                assert resp.status == 200
                sse = Sse(resp)
                first = await sse.next()
                assert first.event == "snapshot" and row.id in sse.table
                await assert_hung_up(daemon, replay, row, token(daemon, "admin"))
                while row.id in sse.table:
                    ev = await sse.next()
                removed = [e for e in sse.events if e.event == "call_removed"]
                assert [e.data["id"] for e in removed] == [row.id] and ev.event == "call_removed"
            page = await admin_page(daemon)
            ids = page.xpath("/page/active_call/id/text()")
            assert isinstance(ids, list) and str(row.id) not in ids and len(ids) == len(daemon.live)
            [line] = [ln for ln in audit_lines(audit_log) if "result=hung_up" in ln]
            assert line.startswith("hangup user='admin' role=admin ")
            for part in (f"call_id={row.id} ", f"uniqueid={row.call.uniqueid} ", f"channel={row.call.channel}",
                         "server=pbx1 server_id=1 "):
                assert part in line, (part, line)
            assert re.search(r" latency_ms=\d+\.\d$", line), line


async def test_disconnected_server_is_503_at_once_with_no_action_sent(tmp_path: Path, replay_server: ReplayFactory,
                                                                      audit_log: pytest.LogCaptureFixture) -> None:
    async with asyncio.timeout(T):
        replay = await held_replay(replay_server)
        # a long confirm_timeout: an answer within the test's bound means it did not wait for one
        async with hangup_daemon(tmp_path, [replay], confirm_timeout=120) as daemon:
            session = daemon.sessions[0]
            replay.options = dataclasses.replace(replay.options, username="somebody-else")  # logins now fail
            replay.drop_clients()
            await wait_until(lambda: not session.status.logged_in and session.status.auth_failures >= 1,
                             what="the session down, its login refused")
            row = calls_where(daemon, caller_is(3))[0]  # still served (stale_after has not passed)
            before = len(replay.hangup_log)
            async with asyncio.timeout(10):
                assert await delete(daemon, f"{CALLS}/{row.id}", token(daemon, "admin")) == (
                    503, {"error": "Server not connected"})
                status, body = await delete(daemon, CALLS, token(daemon, "admin"), s_user_id="3")
            assert status == 200 and body["hung_up_calls"] == []
            bobs = {r.id for r in calls_where(daemon, lambda r: r.info.user_id == 3)}
            assert {f["id"] for f in body["failed"]} == bobs
            assert {f["error"] for f in body["failed"]} == {"Server not connected"}
            assert len(replay.hangup_log) == before and row_by_id(daemon, row.id) is not None
            assert [ln for ln in audit_lines(audit_log) if "result=server_down" in ln]


async def test_ami_error_is_409_and_a_call_gone_meanwhile_is_404(tmp_path: Path, replay_server: ReplayFactory,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Asterisk's own refusal (the AMI user lacks the write class) → 409 with its message, call still up;
    "No such channel" for a call that then leaves the table → 404, as for any call that no longer exists."""
    async with asyncio.timeout(T):
        replay = await held_replay(replay_server)
        async with hangup_daemon(tmp_path, [replay], confirm_timeout=2) as daemon:
            session = daemon.sessions[0]
            first, second = calls_where(daemon, caller_is(3))[:2]
            real = session.hangup

            async def denied(channel: str, timeout: float) -> dict[str, str]:
                return {"Response": "Error", "Message": "Permission denied"}

            monkeypatch.setattr(session, "hangup", denied)
            assert await delete(daemon, f"{CALLS}/{first.id}", token(daemon, "admin")) == (
                409, {"error": "Asterisk refused the hang-up: Permission denied"})
            assert row_by_id(daemon, first.id) is not None

            async def ended_meanwhile(channel: str, timeout: float) -> dict[str, str]:
                await real(channel, timeout)  # the call really ends (its Hangup events reach the tracker) …
                return {"Response": "Error", "Message": "No such channel"}  # … as if someone was faster

            monkeypatch.setattr(session, "hangup", ended_meanwhile)
            assert await delete(daemon, f"{CALLS}/{second.id}", token(daemon, "admin")) == NOT_FOUND
            assert row_by_id(daemon, second.id) is None
            assert daemon.hangups is not None and daemon.hangups.counts["gone"] == 1
            assert daemon.hangups.counts["ami_error"] == 1


async def test_metrics_count_hangups_by_result(tmp_path: Path, replay_server: ReplayFactory) -> None:
    async with asyncio.timeout(T):
        replay = await held_replay(replay_server)
        async with hangup_daemon(tmp_path, [replay]) as daemon:
            await assert_hung_up(daemon, replay, calls_where(daemon, caller_is(3))[0], token(daemon, "admin"))
            await assert_refused(daemon, replay, f"{CALLS}/{MISSING_ID}", token(daemon, "admin"), NOT_FOUND)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{daemon.port}/metrics") as resp:
                    text = await resp.text()
            assert 'collector_hangups_total{result="hung_up"} 1.0' in text
            assert 'collector_hangups_total{result="not_found"} 1.0' in text
            assert 'collector_hangups_total{result="ami_error"} 0.0' in text



async def test_no_confirmation_is_504_and_the_call_stays(tmp_path: Path, replay_server: ReplayFactory,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Asterisk says Success but the call never leaves the table (or Asterisk never answers): 504 once
    ``confirm_timeout`` has passed, the call still listed."""
    async with asyncio.timeout(T):
        replay = await held_replay(replay_server)
        async with hangup_daemon(tmp_path, [replay], confirm_timeout=0.3) as daemon:
            session = daemon.sessions[0]
            first, second = calls_where(daemon, caller_is(3))[:2]

            async def success_only(channel: str, timeout: float) -> dict[str, str]:
                return {"Response": "Success", "Message": "Channel Hungup"}

            monkeypatch.setattr(session, "hangup", success_only)
            expected = (504, {"error": "Hang-up not confirmed by Asterisk within 0.3s"})
            assert await delete(daemon, f"{CALLS}/{first.id}", token(daemon, "admin")) == expected
            assert row_by_id(daemon, first.id) is not None

            async def silent(channel: str, timeout: float) -> dict[str, str]:
                await asyncio.Event().wait()  # no answer ever: the session's bound is what ends it
                raise AssertionError("unreachable")

            async def bounded(channel: str, timeout: float) -> dict[str, str]:
                return await asyncio.wait_for(silent(channel, timeout), timeout)

            monkeypatch.setattr(session, "hangup", bounded)
            assert await delete(daemon, f"{CALLS}/{second.id}", token(daemon, "admin")) == expected
            assert row_by_id(daemon, second.id) is not None
            assert daemon.hangups is not None and daemon.hangups.counts["not_confirmed"] == 2


async def test_other_methods_get_a_json_405(tmp_path: Path, replay_server: ReplayFactory) -> None:
    async with asyncio.timeout(T):
        replay = await held_replay(replay_server)
        async with hangup_daemon(tmp_path, [replay]) as daemon, aiohttp.ClientSession() as http:
            row = calls_where(daemon, caller_is(3))[0]
            for method in ("GET", "POST", "PUT"):
                for path in (f"{CALLS}/{row.id}", CALLS):
                    async with http.request(method, f"http://127.0.0.1:{daemon.port}{path}",
                                            headers={"Authorization": f"Bearer {token(daemon, 'admin')}"}) as resp:
                        assert (resp.status, resp.headers["Allow"], await resp.json()) == (
                            405, "DELETE", {"error": "Method Not Allowed"})
            assert row_by_id(daemon, row.id) is not None and len(replay.hangup_log) == 0


async def test_may_hang_up_follows_the_policy_and_a_reload(tmp_path: Path, replay_server: ReplayFactory) -> None:
    """``ApiDeps.may_hang_up`` (what the login answer tells the page) is the policy in force; SIGHUP's
    reload switches hang-up off (or on) for the next request, calls and connections untouched."""
    async with asyncio.timeout(T):
        replay = await held_replay(replay_server)
        async with hangup_daemon(tmp_path, [replay], users_may_hang_up=True) as daemon:
            ini = tmp_path / "c.ini"
            ini.write_text(f"[api]\nport = 0\n[database]\npath = {daemon.settings.database}\n"
                           f"[server:pbx1]\nhost = 127.0.0.1\nport = {replay.port}\nusername = collector\n"
                           "secret = s3cret\nserver_id = 1\n[hangup]\nenabled = no\n")
            daemon.settings = dataclasses.replace(daemon.settings, path=ini)
            assert daemon._runner is not None
            deps = daemon._runner.app[DEPS_KEY]
            refs = daemon._refs()

            def allowed() -> list[bool]:
                return [deps.may_hang_up(Principal(Role.of(refs.users_by_username[u].usertype),
                                                   refs.users_by_username[u]))
                        for u in ("admin", "reseller", "alice", "accountant")]

            assert allowed() == [True, True, True, False]
            row = calls_where(daemon, caller_is(3))[0]
            daemon.reload()
            assert daemon._reload_task is not None
            await daemon._reload_task
            assert allowed() == [False, False, False, False]
            await assert_refused(daemon, replay, f"{CALLS}/{row.id}", token(daemon, "admin"), DISABLED)
            ini.write_text(ini.read_text().replace("enabled = no", "enabled = yes"))
            daemon.reload()
            await daemon._reload_task
            assert allowed() == [True, True, False, False]  # users_may_hang_up back at its default, no
            await assert_hung_up(daemon, replay, row, token(daemon, "admin"))


async def test_calls_hidden_by_age_cannot_be_hung_up(tmp_path: Path, replay_server: ReplayFactory) -> None:
    """``hide_older_than_hours`` hides a call from active_calls_get: it is then not found here either (the
    fast replay stamps calls with the trace's own, months-old times)."""
    async with asyncio.timeout(T):
        replay = await held_replay(replay_server)
        async with hangup_daemon(tmp_path, [replay], api={"hide_older_than_hours": 1.0}) as daemon:
            row = calls_where(daemon, caller_is(3))[0]
            assert time.time() - row.call.start_time > 3600
            await assert_refused(daemon, replay, f"{CALLS}/{row.id}", token(daemon, "admin"), NOT_FOUND)
            assert await delete(daemon, CALLS + "?dry_run=1", token(daemon, "admin")) == (
                200, {"status": "dry_run", "would_hang_up": []})


async def test_a_single_hangup_is_not_starved_by_a_running_bulk(tmp_path: Path, replay_server: ReplayFactory) -> None:
    """Turns at a server are first come, first served and a bulk holds at most one: a single DELETE
    during a long bulk on the same server is answered after at most one of the bulk's actions."""
    async with asyncio.timeout(T):
        replay = await held_replay(replay_server)
        async with hangup_daemon(tmp_path, [replay], rate_per_server=2) as daemon:
            admin = token(daemon, "admin")
            assert daemon.hangups is not None
            executor = daemon.hangups
            single = calls_where(daemon, caller_is(5, owner=4))[0]
            bulk_ids = [r.id for r in calls_where(daemon, lambda r: r.info.user_id == 3)]
            assert len(bulk_ids) >= 6
            bulk = asyncio.ensure_future(delete(daemon, CALLS, admin, s_user_id="3"))
            try:
                await wait_until(lambda: executor.counts["hung_up"] >= 1, what="the bulk under way")
                status, body = await delete(daemon, f"{CALLS}/{single.id}", admin)
                assert (status, body["hung_up_call"]) == (200, single.id)
                done_by_bulk = executor.counts["hung_up"] - 1
                assert done_by_bulk <= 3, done_by_bulk  # the bulk's first, perhaps the one in progress, no more
                assert single.call.channel in [channel for _t, channel in replay.hangup_log]
            finally:
                bulk.cancel()
                await asyncio.gather(bulk, return_exceptions=True)


async def test_two_deletes_of_one_call_end_it_once(tmp_path: Path, replay_server: ReplayFactory) -> None:
    """Both wait for the server's turn; the first ends the call (200), the second finds it gone when its turn
    comes, 0.5 s after Asterisk answered the first (the call's Hangup events came with that answer), and
    sends nothing (404)."""
    async with asyncio.timeout(T):
        replay = await held_replay(replay_server)
        async with hangup_daemon(tmp_path, [replay], rate_per_server=2) as daemon:
            row = calls_where(daemon, caller_is(3))[0]
            admin = token(daemon, "admin")
            answers = await asyncio.gather(delete(daemon, f"{CALLS}/{row.id}", admin),
                                           delete(daemon, f"{CALLS}/{row.id}", admin))
            assert sorted(status for status, _body in answers) == [200, 404]
            assert NOT_FOUND in answers and row_by_id(daemon, row.id) is None
            assert [channel for _t, channel in replay.hangup_log].count(row.call.channel) == 1


async def test_the_session_sends_hangup_only_for_plain_channel_names(tmp_path: Path,
                                                                     replay_server: ReplayFactory) -> None:
    """``AmiSession.hangup``: a name Asterisk would read as a regex (``/…/`` ends every match) or one
    carrying a line break (a second header) is refused before anything is written; a real one is answered
    as Asterisk does; a session that is down raises at once."""
    async with asyncio.timeout(T):
        replay = await held_replay(replay_server)
        async with hangup_daemon(tmp_path, [replay]) as daemon:
            session = daemon.sessions[0]
            for bad in ("/SIP/.*/", "SIP/101-1\r\nChannel: SIP/102-2", "", "SIP/1\n"):
                with pytest.raises(ValueError):
                    await session.hangup(bad, 1.0)
            assert len(replay.hangup_log) == 0
            reply = await session.hangup("SIP/nobody-00000000", 5.0)
            assert (reply["Response"], reply["Message"]) == ("Error", "No such channel")
            assert [channel for _t, channel in replay.hangup_log] == ["SIP/nobody-00000000"]
            replay.options = dataclasses.replace(replay.options, username="somebody-else")
            replay.drop_clients()
            await wait_until(lambda: not session.status.logged_in, what="the session down")
            with pytest.raises(ConnectionError):
                await session.hangup("SIP/101-0000001d", 5.0)
            assert len(replay.hangup_log) == 1
