"""``collector db set-password``: from a pipe or twice from a terminal, refusing empty, mismatched and unknown
users, never printing the password; and the daemon end to end: a set password logs in over real HTTP, the
generated ``jwt.key`` is 0600 and survives a restart, an unsafe one stops the start, ``jwt_secret`` signs."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api.passwords import hash_password, verify_password
from api.tokens import TokenIssuer
from collector.refdata.importer import load_demo
from collector.refdata.local_passwords import LocalPasswords
from collector.service import cli
from collector.service.config import Secret
from collector.service.jwtkey import KeyFileError
from tests.daemon_helpers import running_daemon, settings_for
from tests.v2_support import basic, no_secrets_logged

__all__ = ["no_secrets_logged"]  # the fixture, used by name below

LOGIN = "/billing/api/v2/authentication/login"
PASSWORD = "Tr0ub4dor&3 ✓"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "collector.db"
    load_demo(path)
    return path


def run(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        stdin: str | None = None, tty: list[str] | None = None) -> tuple[int, str, str]:
    if tty is not None:
        answers = iter(tty)
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
        monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    else:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_password_from_a_pipe(db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["db", "set-password", "alice", "--db", str(db)], monkeypatch, capsys, stdin=PASSWORD + "\n")
    assert (code, err) == (0, "")
    assert out == f"{db}: password set for 'alice'\n"
    stored = LocalPasswords(db).get("alice")
    assert stored is not None and stored.startswith("scrypt$") and verify_password(PASSWORD, stored)
    assert PASSWORD not in out + err


def test_password_from_a_terminal_twice(db: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["db", "set-password", "bob", "--db", str(db)], monkeypatch, capsys, tty=[PASSWORD, PASSWORD])
    assert code == 0 and "password set for 'bob'" in out and PASSWORD not in out + err
    stored = LocalPasswords(db).get("bob")
    assert stored is not None and verify_password(PASSWORD, stored)


@pytest.mark.parametrize(("stdin", "tty", "error"), [
    ("\n", None, "refusing an empty password; nothing changed"),
    ("", None, "refusing an empty password; nothing changed"),
    (None, ["", ""], "refusing an empty password; nothing changed"),
    (None, [PASSWORD, PASSWORD + "x"], "the two passwords differ; nothing changed"),
    ("x" * 1025 + "\n", None, "the password is longer than 1024 characters; nothing changed"),
])
def test_refused_passwords(db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                           stdin: str | None, tty: list[str] | None, error: str) -> None:
    code, out, err = run(["db", "set-password", "alice", "--db", str(db)], monkeypatch, capsys, stdin=stdin, tty=tty)
    assert (code, out) == (2, "")
    assert err == f"collector db set-password: error: {error}\n"
    assert LocalPasswords(db).get("alice") is None


def test_unknown_user_is_a_clear_error(db: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["db", "set-password", "mallory", "--db", str(db)], monkeypatch, capsys, stdin="pw\n")
    assert (code, out) == (2, "")
    assert err == (f"collector db set-password: error: unknown user 'mallory': not in the users table of {db} "
                   "(import or sync it first)\n")
    code, _out, err = run(["db", "set-password", "mallory", "--delete", "--db", str(db)], monkeypatch, capsys)
    assert code == 2 and "unknown user 'mallory' (and no local password to remove)" in err


def test_delete(db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["db", "set-password", "alice", "--db", str(db)], monkeypatch, capsys, stdin="pw-1\n")[0] == 0
    code, out, _ = run(["db", "set-password", "alice", "--delete", "--db", str(db)], monkeypatch, capsys)
    assert (code, out) == (0, f"{db}: local password of 'alice' removed\n")
    assert LocalPasswords(db).get("alice") is None
    code, out, _ = run(["db", "set-password", "alice", "--delete", "--db", str(db)], monkeypatch, capsys)
    assert (code, out) == (0, f"{db}: 'alice' had no local password; nothing changed\n")


def test_config_file_and_real_process(db: Path, tmp_path: Path) -> None:
    ini = tmp_path / "c.ini"
    ini.write_text(f"[database]\npath = {db}\n")
    proc = subprocess.run([sys.executable, "-m", "collector", "db", "set-password", "reseller", "-c", str(ini)],
                          input=PASSWORD + "\n", capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{db}: password set for 'reseller'\n" and PASSWORD not in proc.stdout + proc.stderr
    stored = LocalPasswords(db).get("reseller")
    assert stored is not None and verify_password(PASSWORD, stored)


# ------------------------------------------------------------------------------------------ the daemon
async def _login(port: int, username: str, password: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{port}{LOGIN}", headers=basic(username, password)) as resp:
            return resp.status, await resp.json()


async def test_daemon_logs_in_with_a_set_password_and_keeps_its_key(tmp_path: Path,
                                                                    no_secrets_logged: list[str]) -> None:
    settings = settings_for(tmp_path, [])
    LocalPasswords(settings.database).set("alice", hash_password(PASSWORD))
    key = tmp_path / "jwt.key"
    async with running_daemon(settings) as daemon:
        assert key.is_file() and (key.stat().st_mode & 0o777) == 0o600
        first = key.read_bytes()
        assert len(first) == 32
        status, body = await _login(daemon.port, "alice", PASSWORD)
        assert status == 200 and body["user"] == {"id": 2, "username": "alice", "role": "user", "name": "Alice Office"}
        assert body["expires_in"] == 900
        token = body["token"]
        no_secrets_logged.extend([token, PASSWORD, first.hex()])
        assert (await _login(daemon.port, "alice", "wrong"))[0] == 401
    async with running_daemon(settings) as daemon:  # restart: same key, the old token still verifies
        assert key.read_bytes() == first
        assert daemon.tokens is not None and daemon.tokens.verify(token).username == "alice"
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{daemon.port}/billing/api/active_calls_get"
            async with http.post(url, headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 200 and b"<page" in await resp.read()


async def test_daemon_refuses_a_key_others_may_read(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, [])
    key = tmp_path / "jwt.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o640)
    with pytest.raises(KeyFileError, match=r"jwt.key: group or others may access the token signing key "
                                           r"\(mode 0640\); run: chmod 600 "):
        async with running_daemon(settings):
            pass


async def test_daemon_signs_with_the_configured_secret(tmp_path: Path) -> None:
    base = settings_for(tmp_path, [])
    secret = "a-configured-secret-of-32-bytes-or-more"
    from dataclasses import replace

    settings = replace(base, http=replace(base.http, jwt_secret=Secret(secret), jwt_lifetime=60))
    async with running_daemon(settings) as daemon:
        assert not (tmp_path / "jwt.key").exists()
        issued = TokenIssuer(secret.encode(), 60).issue("admin", 0)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{daemon.port}/billing/api/v2/authentication/refresh",
                                 headers={"Authorization": f"Bearer {issued.token}"}) as resp:
                assert resp.status == 200
                assert (await resp.json())["expires_in"] == 60


async def test_a_preset_issuer_is_kept(tmp_path: Path) -> None:
    from collector.service.daemon import Daemon

    preset = TokenIssuer(b"p" * 32, 30)
    daemon = Daemon(settings_for(tmp_path, []), tokens=preset)
    await daemon.start()
    try:
        assert daemon.tokens is preset and not (tmp_path / "jwt.key").exists()
    finally:
        await daemon.stop()


def test_collector_run_exits_2_on_an_unsafe_key(tmp_path: Path) -> None:
    db = tmp_path / "collector.db"
    load_demo(db)
    key = tmp_path / "jwt.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o604)
    ini = tmp_path / "c.ini"
    ini.write_text(f"[api]\nport = 0\n[database]\npath = {db}\n")
    proc = subprocess.run([sys.executable, "-m", "collector", "run", "-c", str(ini)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"start failed: {key}: group or others may access the token signing key (mode 0604); run: chmod 600 " \
        f"{key}" in proc.stderr
    assert key.read_bytes().hex() not in proc.stderr


async def test_the_demo_prints_a_working_v2_login(tmp_path: Path) -> None:
    import re

    from tests.test_ops import Child, free_port

    port = free_port()
    demo = await Child.spawn("demo", "demo", "--dir", tmp_path / "demo", "--port", str(port), cwd=tmp_path)
    try:
        await demo.wait_line(r"Ctrl-C stops it", timeout=60)
        found = re.findall(r"^\s*curl -s -X POST -u 'admin:([^']+)' '([^']+)'\s*$", demo.out + demo.err, re.M)
        assert len(found) == 1, demo.err
        password, url = found[0]
        assert url == f"http://127.0.0.1:{port}{LOGIN}"
        async with aiohttp.ClientSession() as http:
            async with http.post(url, headers=basic("admin", password)) as resp:
                assert resp.status == 200
                body = await resp.json()
            assert body["user"]["role"] == "admin"
            async with http.post(f"http://127.0.0.1:{port}/billing/api/active_calls_get",
                                 headers={"Authorization": f"Bearer {body['token']}"}) as resp:
                assert resp.status == 200 and (await resp.read()).startswith(b"<?xml")
        log_lines = [ln for ln in demo.err.splitlines() if " INFO " in ln or " WARNING " in ln]
        assert log_lines and not any(password in ln or body["token"] in ln for ln in log_lines)
    finally:
        demo.signal(signal.SIGINT)
        assert await demo.exit_code(timeout=10) == 0
