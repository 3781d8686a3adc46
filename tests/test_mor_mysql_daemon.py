"""The daemon with ``[refdata] source = mysql`` against a real MariaDB and a replayed real trace: MOR
edits appear after the next sync while calls are up (none lost or duplicated, enrichment recomputed),
a MySQL outage keeps the last good data and shows in /status and /metrics, recovery after restart,
and the reader's password never reaches a log line, /status or /metrics."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from collector.refdata.mor_sync import sync_once
from collector.service.config import Settings, parse_settings
from collector.service.daemon import Daemon
from collector.tools.timeline import iter_trace_messages
from tests.conftest import ReplayFactory, scenario_files
from tests.daemon_helpers import admin_page, barrier, running_daemon, wait_until
from tests.mariadb_support import READER_PASSWORD, MorDb


def _settings(tmp: Path, db: MorDb, ami_port: int | None, refresh: float = 1.0) -> Settings:
    lines = ["[collector]", "reconcile_interval = 3600", "ping_interval = 30", "reconnect_min = 0.05",
             "reconnect_max = 0.2", "flush_interval = 0.05", "resync_timeout = 5", "[api]", "listen = 127.0.0.1",
             "port = 0", db.ini(tmp / "collector.db", refresh=refresh)]
    if ami_port is not None:
        lines += ["[server:pbx1]", "host = 127.0.0.1", f"port = {ami_port}", "username = collector",
                  "secret = s3cret", "server_id = 1"]
    return parse_settings("\n".join(lines), source=str(tmp / "test.ini"))


def _hold_point() -> float:
    paths = scenario_files("concurrent_load")
    return next(float(m["Timestamp"]) for m in iter_trace_messages(paths) if m.get("Timestamp")) + 15.0


async def _get(daemon: Daemon, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{daemon.port}{path}") as resp:
            return resp.status, await resp.text()


async def _post_as(daemon: Daemon, user: str, secret: str) -> bytes:
    sig = hashlib.sha1((user + secret).encode()).hexdigest()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{daemon.port}/billing/api/active_calls_get",
                             data={"u": user, "hash": sig}) as resp:
            assert resp.status == 200
            return await resp.read()


def _metric(text: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def _snapshot(daemon: Daemon) -> dict[str, int]:
    return {r.call.linkedid: r.id for r in daemon.live.rows()}


async def test_mor_edits_appear_after_the_next_sync_while_calls_are_up(
        tmp_path: Path, mor_db: MorDb, replay_server: ReplayFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    hold_at = _hold_point()
    replay = await replay_server("concurrent_load", fast=True)
    replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= hold_at)
    async with running_daemon(_settings(tmp_path, mor_db, replay.port)) as daemon:
        assert daemon.refsync is not None and daemon.refsync.last_ok is not None  # synced at start
        await replay.wait_held(timeout=30)
        await barrier(daemon)
        before = _snapshot(daemon)
        assert len(before) > 50
        alice_calls = [r for r in daemon.live.rows() if r.info.src_device_id == 1]
        assert alice_calls and all(r.info.user_id == 2 for r in alice_calls)
        syncs = daemon.refsync.syncs
        # in MOR: Alice's phone (device 1) moves to Bob, a new DID, the reseller's API key rotated
        mor_db.execute("UPDATE devices SET user_id = 3 WHERE id = 1",
                       "INSERT INTO dids (id, did, status, user_id, device_id) VALUES (50, '37052000050', "
                       "'active', 3, 1)",
                       "UPDATE conflines SET value = 'rotated-reseller-key' WHERE name = 'API_Secret_Key' "
                       "AND owner_id = 4")
        await wait_until(lambda: daemon._refs().devices[1].user_id == 3, timeout=15, what="the periodic sync")
        assert daemon.refsync.syncs > syncs
        assert "37052000050" in daemon._refs().dids_by_number
        assert daemon._refs().users_by_username["reseller"].api_secret_key == "rotated-reseller-key"
        # no call lost or duplicated, same ids; enrichment of the calls already up recomputed
        await barrier(daemon)
        assert _snapshot(daemon) == before
        moved = [r for r in daemon.live.rows() if r.info.src_device_id == 1]
        assert moved and all((r.info.user_id, r.info.user) == (3, "Bob Sales") for r in moved)
        page = await admin_page(daemon)
        assert len(page.findall("active_call")) == len(before)
        new_key = await _post_as(daemon, "reseller", "rotated-reseller-key")
        assert b"<error>" not in new_key
        assert b"Incorrect hash" in await _post_as(daemon, "reseller", "demo-reseller-secret")
        # SIGHUP syncs too
        syncs = daemon.refsync.syncs
        daemon.reload()
        assert daemon._reload_task is not None
        await daemon._reload_task
        assert daemon.refsync.syncs == syncs + 1 and daemon.reloads == 1
        code, body = await _get(daemon, "/status")
        assert code == 200 and READER_PASSWORD not in body
        code, metrics = await _get(daemon, "/metrics")
        assert _metric(metrics, "collector_refdata_syncs_total") >= 3
        assert _metric(metrics, "collector_refdata_sync_failures_total") == 0
        assert READER_PASSWORD not in metrics
        replay.release()
        await replay.wait_finished(timeout=60)
        await barrier(daemon)
        assert len(daemon.live) == 0
    assert READER_PASSWORD not in caplog.text
    assert "refdata sync ok" in caplog.text


async def test_mysql_stopped_mid_run_keeps_the_last_good_data_then_recovers(
        tmp_path: Path, mor_db: MorDb, replay_server: ReplayFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    hold_at = _hold_point()
    replay = await replay_server("concurrent_load", fast=True)
    replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= hold_at)
    server = mor_db.server
    try:
        async with running_daemon(_settings(tmp_path, mor_db, replay.port)) as daemon:
            assert daemon.refsync is not None
            await replay.wait_held(timeout=30)
            await barrier(daemon)
            before = _snapshot(daemon)
            refs_before = daemon._refs()
            server.stop()
            failures = daemon.refsync.failures
            await wait_until(lambda: daemon.refsync is not None and daemon.refsync.failures > failures,
                             timeout=20, what="a failed sync")
            assert daemon._refs() is refs_before  # the index was not touched
            code, body = await _get(daemon, "/status")
            status: dict[str, Any] = json.loads(body)
            rd = status["refdata"]
            assert rd["source"] == "mysql" and rd["result"] == "failed" and "cannot connect" in rd["error"]
            assert rd["counts"]["devices"]["total"] == 3 and rd["last_ok_sync"] is not None
            assert READER_PASSWORD not in body
            code, _ = await _get(daemon, "/readyz")
            assert code == 200  # data exists: a MySQL outage does not take us out of service
            _, metrics = await _get(daemon, "/metrics")
            assert _metric(metrics, "collector_refdata_sync_failures_total") >= 1
            assert _metric(metrics, "collector_refdata_last_sync_timestamp") == pytest.approx(rd["last_ok_sync"])
            assert _snapshot(daemon) == before
            page = await admin_page(daemon)
            assert len(page.findall("active_call")) == len(before)
            failed_lines = [r for r in caplog.records if "refdata sync failed" in r.getMessage()]
            assert failed_lines and all(r.levelno == logging.ERROR for r in failed_lines)
            server.start()
            await wait_until(lambda: daemon.refsync is not None and daemon.refsync.last is not None
                             and daemon.refsync.last.ok, timeout=20, what="recovery")
            _, body = await _get(daemon, "/status")
            assert json.loads(body)["refdata"]["result"] == "ok"
            assert _snapshot(daemon) == before
            replay.release()
            await replay.wait_finished(timeout=60)
    finally:
        if not server.running:
            server.start()
    assert READER_PASSWORD not in caplog.text


async def test_mysql_down_at_start_serves_the_last_good_sqlite(
        tmp_path: Path, mor_db: MorDb, replay_server: ReplayFactory) -> None:
    replay = await replay_server("concurrent_load", fast=True)
    settings = _settings(tmp_path, mor_db, replay.port, refresh=3600)
    assert sync_once(settings.refdata, settings.database).ok  # an earlier run's good data
    server = mor_db.server
    server.stop()
    try:
        async with running_daemon(settings) as daemon:
            assert daemon.refsync is not None and daemon.refsync.last is not None
            assert not daemon.refsync.last.ok
            assert len(daemon._refs().data.devices) == 3
            await wait_until(lambda: daemon.ready()[0], what="the AMI server logged in")
            code, body = await _get(daemon, "/readyz")
            assert code == 200, body  # MySQL down, data from the last good sync: ready
        # no data at all and MySQL down: not ready, saying why
        empty = _settings(tmp_path / "fresh", mor_db, replay.port, refresh=3600)
        async with running_daemon(empty) as daemon:
            code, body = await _get(daemon, "/readyz")
            assert code == 503 and "no successful MOR sync" in body
    finally:
        server.start()
