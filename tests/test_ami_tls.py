"""AMI over TLS: the replay server speaks TLS with a CA made in the test; the daemon connects
with ``tls = yes`` / ``tls_ca``, tracks exactly as over TCP, refuses a certificate from another CA with a
clear error (log and /status), and with ``tls_verify = no`` connects anyway with a warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from collector.service.config import ConfigError, parse_settings
from collector.tools.replay import ReplayOptions, ReplayServer
from collector.tools.timeline import iter_trace_messages
from tests.daemon_helpers import barrier, comparable, offline_calls, running_daemon, settings_for, wait_until
from tests.helpers import trace_paths
from tests.tls_helpers import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki-other"), "other")


def _first_ts(paths: list[Path]) -> float:
    return next(float(m["Timestamp"]) for m in iter_trace_messages(paths) if m.get("Timestamp"))


async def test_tracks_over_tls_exactly_as_over_tcp(tmp_path: Path, pki: Pki) -> None:
    paths = trace_paths("concurrent_load")
    t0 = _first_ts(paths)
    async with ReplayServer(paths, port=0, options=ReplayOptions(fast=True), ssl=pki.server_context()) as replay:
        replay.hold(when=lambda ev: ev.timestamp is not None and ev.timestamp >= t0 + 12)
        settings = settings_for(tmp_path, [replay.port], server_extra=f"tls = yes\ntls_ca = {pki.ca}")
        assert settings.servers[0].tls and settings.servers[0].tls_verify
        async with running_daemon(settings) as daemon:
            await replay.wait_held(timeout=30)
            await barrier(daemon)
            expected = offline_calls(paths, t0 + 12)
            assert len(expected) > 50
            assert comparable(r.call for r in daemon.live.rows()) == comparable(expected)
            assert daemon.sessions[0].status.tls


async def test_server_name_is_checked_against_the_certificate(tmp_path: Path, pki: Pki) -> None:
    async with ReplayServer(trace_paths("concurrent_load"), port=0, options=ReplayOptions(fast=True),
                            ssl=pki.server_context()) as replay:
        extra = f"tls = yes\ntls_ca = {pki.ca}\ntls_server_name = pbx.test"
        async with running_daemon(settings_for(tmp_path, [replay.port], server_extra=extra)) as daemon:
            await wait_until(lambda: daemon.sessions[0].status.logged_in, timeout=10, what="login by name")
        extra = f"tls = yes\ntls_ca = {pki.ca}\ntls_server_name = wrong.test"
        async with running_daemon(settings_for(tmp_path, [replay.port], server_extra=extra)) as daemon:
            st = daemon.sessions[0].status
            await wait_until(lambda: "certificate verify failed" in st.last_error, timeout=10, what="name refused")
            assert "wrong.test" in st.last_error or "match" in st.last_error


async def test_a_certificate_from_another_ca_is_refused_clearly(
        tmp_path: Path, pki: Pki, other_pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    async with ReplayServer(trace_paths("concurrent_load"), port=0, options=ReplayOptions(fast=True),
                            ssl=pki.server_context()) as replay:
        settings = settings_for(tmp_path, [replay.port], server_extra=f"tls = yes\ntls_ca = {other_pki.ca}")
        async with running_daemon(settings) as daemon:
            st = daemon.sessions[0].status
            await wait_until(lambda: "certificate verify failed" in st.last_error, timeout=10,
                             what="the wrong CA refused")
            assert st.last_error.startswith("connect: TLS: ")
            assert not st.logged_in and replay.logins_total == 0
    assert any("certificate verify failed" in r.getMessage() and "server=pbx1" in r.getMessage()
               for r in caplog.records if r.levelno >= logging.WARNING)


async def test_tls_verify_no_connects_with_a_warning(
        tmp_path: Path, pki: Pki, other_pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    async with ReplayServer(trace_paths("concurrent_load"), port=0, options=ReplayOptions(fast=True),
                            ssl=pki.server_context()) as replay:
        extra = f"tls = yes\ntls_ca = {other_pki.ca}\ntls_verify = no"
        async with running_daemon(settings_for(tmp_path, [replay.port], server_extra=extra)) as daemon:
            await wait_until(lambda: daemon.sessions[0].status.logged_in, timeout=10, what="unverified login")
    assert any("without certificate verification" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)


def _ini(server: str) -> str:
    return ("[server:a]\nhost = 127.0.0.1\nusername = u\nsecret = s\nserver_id = 1\n" + server)


def test_config_tls_keys_are_validated(tmp_path: Path, pki: Pki) -> None:
    srv = parse_settings(_ini(f"tls = yes\ntls_ca = {pki.ca}\ntls_server_name = pbx.test")).servers[0]
    assert (srv.tls, srv.tls_ca, srv.tls_verify, srv.tls_server_name, srv.port) == (
        True, str(pki.ca), True, "pbx.test", 5038)
    rel = parse_settings(_ini(f"tls = yes\ntls_ca = {pki.ca.name}"), base_dir=pki.ca.parent).servers[0]
    assert rel.tls_ca == str(pki.ca)
    with pytest.raises(ConfigError, match=r"\[server:a\] tls_ca: cannot read"):
        parse_settings(_ini(f"tls = yes\ntls_ca = {tmp_path / 'missing.pem'}"))
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"tls_ca: .* is not a PEM certificate"):
        parse_settings(_ini(f"tls = yes\ntls_ca = {tmp_path / 'junk.pem'}"))
    with pytest.raises(ConfigError, match=r"tls_ca: needs tls = yes"):
        parse_settings(_ini(f"tls_ca = {pki.ca}"))
    with pytest.raises(ConfigError, match=r"tls_verify: not a boolean"):
        parse_settings(_ini("tls = yes\ntls_verify = maybe"))
