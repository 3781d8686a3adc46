"""First-run experience, as a new user meets it: ``collector demo`` prints curl lines that work within a
minute, every command explains itself under ``--help``, and a bad configuration is one line naming the
section and key with exit status 2 (from ``collector run`` and ``collector check-config`` alike).

Everything runs ``python -m collector`` in subprocesses (see :class:`tests.test_ops.Child`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import re
import signal
import time
from pathlib import Path

import aiohttp
import pytest
from lxml import etree

from collector.service.cli import build_parser
from tests.test_ops import Child, NotifySocket, child_env, free_port, parse_metrics, until

DEMO_SECRETS = ("demo-admin-secret", "demo-reseller-secret")
FIRST_RUN_BUDGET = 60.0


# ============================================================================================ demo

async def test_demo_prints_curl_lines_that_work_within_a_minute(tmp_path: Path) -> None:
    started = time.monotonic()
    port = free_port()
    demo = await Child.spawn("demo", "demo", "--dir", tmp_path / "demo", "--port", str(port), cwd=tmp_path)
    try:
        await demo.wait_line(r"Ctrl-C stops it", timeout=FIRST_RUN_BUDGET)
        printed = demo.out + demo.err
        posts = re.findall(r"^\s*curl -s -X POST '([^']+)'\s*$", printed, re.M)
        gets = re.findall(r"^\s*curl -s (http://\S+)\s*$", printed, re.M)
        base = f"http://127.0.0.1:{port}"
        assert posts and all(u.startswith(f"{base}/billing/api/active_calls_get?u=") for u in posts), printed
        assert {f"{base}/status", f"{base}/metrics"} <= set(gets), printed

        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as http:

            async def post(url: str) -> etree._Element:
                async with http.post(url) as resp:
                    assert resp.status == 200 and resp.headers["Content-Type"] == "text/xml; charset=utf-8"
                    body = await resp.read()
                assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
                return etree.fromstring(body)  # raises on malformed XML

            async def listing() -> list[etree._Element] | None:
                return (await post(posts[0])).findall("active_call") or None

            remaining = FIRST_RUN_BUDGET - (time.monotonic() - started)
            calls = await until(listing, remaining, "the first printed POST to list an <active_call>", interval=0.2)
            assert time.monotonic() - started < FIRST_RUN_BUDGET
            for call in calls:
                assert call.findtext("id") and call.findtext("uniqueid") and call.findtext("status") in (
                    "Answered", "Ringing")

            # every other printed line works too (a user may see no calls: MOR's <page><status> document)
            for url in posts[1:]:
                page = await post(url)
                assert page.tag == "page" and (page.find("active_call") is not None or page.find("status") is not None)
            answered = await post(posts[0] + "&s_status=answered")
            assert {c.findtext("status") for c in answered.findall("active_call")} <= {"Answered"}
            async with http.get(f"{base}/status") as resp:
                assert resp.status == 200
                status = await resp.json()
            assert status["servers"][0]["status"] == "ok" and status["calls"]["total"] >= 1
            async with http.get(f"{base}/metrics") as resp:
                assert resp.status == 200
                samples = parse_metrics(await resp.text())
            assert any(name == "collector_active_calls" and v >= 1 for (name, _l), v in samples.items())

            # the printed v2 login works, and its token hangs up a call (hang-up is on in the demo)
            login = re.search(r"curl -s -X POST -u '([^:']+):([^']+)' '([^']+)'", printed)
            assert login is not None, printed
            basic = base64.b64encode(f"{login[1]}:{login[2]}".encode()).decode()
            async with http.post(login[3], headers={"Authorization": f"Basic {basic}"}) as resp:
                assert resp.status == 200
                bearer = {"Authorization": f"Bearer {(await resp.json())['token']}"}
            up = await until(listing, 30, "a call to hang up", interval=0.2)
            victim = up[0].findtext("id")
            async with http.delete(f"{base}/billing/api/v2/active_calls/{victim}", headers=bearer) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["hung_up_call"] == int(str(victim))
            assert victim not in [c.findtext("id") for c in (await post(posts[0])).findall("active_call")]

        # Ctrl-C stops it cleanly
        demo.signal(signal.SIGINT)
        assert await demo.exit_code(timeout=5) == 0
        for secret in DEMO_SECRETS:
            assert secret not in demo.err and secret not in demo.out
        assert "Traceback" not in demo.err
        # a long generated AMI secret, so the redaction net never garbles a path (var/********/…)
        ini = (tmp_path / "demo" / "demo.ini").read_text()
        assert len(ini.split("secret = ", 1)[1].split()[0]) >= 20
        assert "********" not in demo.err
    finally:
        await demo.kill()


# ============================================================================================ --help

def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...],
                                                                                     argparse.ArgumentParser]]:
    found = [(prefix, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.extend(_commands(sub, prefix + (name,)))
    return found


def _words(text: str) -> str:
    return " ".join(text.split())


async def test_every_command_has_a_help_with_a_description() -> None:
    commands = _commands(build_parser())
    assert {c for c, _p in commands if len(c) == 1} >= {
        ("run",), ("check-config",), ("demo",), ("replay",), ("record",), ("timeline",), ("db",)}
    children = [await Child.spawn("help", *cmd, "--help") for cmd, _p in commands]
    try:
        codes = await asyncio.wait_for(asyncio.gather(*(c.exit_code(timeout=20) for c in children)), 25)
        for (cmd, parser), child, code in zip(commands, children, codes, strict=False):
            name = " ".join(("collector", *cmd))
            assert code == 0 and child.err == "", (name, code, child.err)
            assert child.out.startswith(f"usage: {name}"), (name, child.out[:200])
            assert parser.description, f"{name} has no description"
            assert _words(parser.description) in _words(child.out), name
        top = children[0].out
        for cmd, _p in commands:
            if len(cmd) == 1:
                assert re.search(rf"^\s+{re.escape(cmd[0])}\s", top, re.M), f"{cmd[0]} missing from collector --help"
    finally:
        for c in children:
            await c.kill()


# ============================================================================================ bad config

BAD_CONFIGS = [
    ("[collector]\nping_interval = often\n", "[collector] ping_interval"),
    ("[collector]\nlog_level = LOUD\n", "[collector] log_level"),
    ("[api]\nport = 99999\n", "[api] port"),
    ("[api]\nallow_get = maybe\n", "[api] allow_get"),
    ("[api]\ntimezone = Mars/Olympus\n", "[api] timezone"),
    ("[server:pbx1]\nhost = 127.0.0.1\nusername = collector\nsecret = S3cr3t-never-shown\n", "[server:pbx1] server_id"),
    ("[server:pbx1]\nhost = 127.0.0.1\nusername = collector\nsecret = S3cr3t-never-shown\nserver_id = 1\n"
     "[server:pbx2]\nhost = 127.0.0.2\nusername = collector\nsecret = S3cr3t-never-shown\nserver_id = 1\n",
     "[server:pbx2] server_id"),
    ("[servers]\nhost = x\n", "[servers]"),
]


@pytest.mark.parametrize("command", ["run", "check-config"])
async def test_bad_config_is_one_line_naming_section_and_key_exit_2(tmp_path: Path, command: str) -> None:
    notify = NotifySocket(tmp_path)
    children: list[tuple[Path, str, Child]] = []
    try:
        for i, (text, where) in enumerate(BAD_CONFIGS):
            path = tmp_path / f"bad{i}.ini"
            path.write_text("[database]\npath = collector.db\n" + text)
            env = child_env(NOTIFY_SOCKET=notify.address)
            children.append((path, where, await Child.spawn("bad-config", command, "--config", path, env=env,
                                                            cwd=tmp_path)))
        for path, where, child in children:
            assert await child.exit_code(timeout=60) == 2, (where, child.err)
            lines = child.err.splitlines()
            assert len(lines) == 1 and child.out == "", (where, child.out, child.err)
            assert str(path) in lines[0] and where in lines[0], (where, lines[0])
            assert "S3cr3t" not in lines[0]
        assert not notify.indexes("READY")  # a daemon that cannot start never says READY
        assert not (tmp_path / "collector.db").exists()  # nor touches the database
    finally:
        for _p, _w, child in children:
            await child.kill()
        await notify.close()


async def test_check_config_accepts_the_example_and_a_missing_file_is_exit_2(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    good = await Child.spawn("check", "check-config", "--config", repo / "config.example.ini", cwd=tmp_path)
    missing = await Child.spawn("check", "check-config", "--config", tmp_path / "nope.ini", cwd=tmp_path)
    assert await good.exit_code(timeout=20) == 0, good.err
    assert re.fullmatch(r".*config\.example\.ini: ok \(1 AMI server\(s\) enabled, database \S+\)\n", good.out)
    assert "change-me" not in good.out + good.err  # the example's AMI secret
    assert await missing.exit_code(timeout=20) == 2
    assert missing.err.count("\n") == 1 and "nope.ini" in missing.err and "not found" in missing.err
