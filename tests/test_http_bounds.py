"""Issue #14, HTTP resource bounds: ``[api] max_connections``, ``request_timeout`` (slowloris),
``keepalive_timeout`` (idle connections), and accept() out of descriptors (EMFILE) as one rate-limited
line instead of a traceback per attempt, with the AMI session untouched.

(a) and (b) run an in-process daemon against a replay AMI server; (c) runs ``python -m collector run`` with
``RLIMIT_NOFILE`` lowered (see :mod:`tests.test_ops` for the subprocess helpers).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import resource
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from collector.refdata.importer import load_demo
from collector.service.config import ConfigError, parse_settings
from tests.conftest import ReplayFactory
from tests.daemon_helpers import admin_page, running_daemon, settings_for, wait_until
from tests.test_ops import (
    PY,
    Child,
    Stack,
    child_env,
    cut_trace,  # noqa: F401  (module fixture, used by ``stack``)
    parse_metrics,
    stack,  # noqa: F401  (the daemon stack fixture of the ops tests)
    until,
)

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def conns() -> AsyncIterator[list[Conn]]:
    """Client connections a test opens; every one closed at teardown."""
    opened: list[Conn] = []
    try:
        yield opened
    finally:
        for _r, w in opened:
            w.close()
        for _r, w in opened:
            try:
                await asyncio.wait_for(w.wait_closed(), 2)
            except (TimeoutError, OSError):
                pass


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bytes | None:
    """Everything the server sent until it closed (EOF or reset) within ``timeout``; None if still open."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionResetError:
        return b""
    except TimeoutError:
        return None


def test_config_keys() -> None:
    base = "[api]\nport = 0\n"
    s = parse_settings(base + "max_connections = 7\nrequest_timeout = 2.5\nkeepalive_timeout = 4\n")
    assert (s.http.max_connections, s.http.request_timeout, s.http.keepalive_timeout) == (7, 2.5, 4.0)
    d = parse_settings(base).http
    assert (d.max_connections, d.request_timeout, d.keepalive_timeout) == (1000, 15.0, 15.0)
    with pytest.raises(ConfigError, match=r"\[api\] max_connections"):
        parse_settings(base + "max_connections = 0\n")
    with pytest.raises(ConfigError, match=r"\[api\] request_timeout"):
        parse_settings(base + "request_timeout = soon\n")


# ------------------------------------------------------------------------------------------ (a)
async def test_excess_connections_closed_and_idle_ones_expire(tmp_path: Path, replay_server: ReplayFactory,
                                                              conns: list[Conn]) -> None:
    ami = await replay_server("basic_outbound", fast=True)
    settings = settings_for(tmp_path, [ami.port])
    limit, keepalive = 5, 1.0
    settings = dataclasses.replace(settings, http=dataclasses.replace(
        settings.http, max_connections=limit, keepalive_timeout=keepalive, request_timeout=30.0))
    async with running_daemon(settings) as daemon:
        guard = daemon.http_guard
        assert guard is not None
        for _ in range(limit + 4):
            conns.append(await asyncio.open_connection("127.0.0.1", daemon.port))
        loop = asyncio.get_running_loop()
        excess = conns[limit:]
        got = await asyncio.gather(*(closed_by_server(r, 3.0) for r, _w in excess))
        started_idle = loop.time()
        assert all(g is not None and (g == b"" or g.startswith(b"HTTP/1.1 503")) for g in got), got
        assert guard.active == limit and guard.refused.total == 4
        # the idle ones go after keepalive_timeout (no request, nothing sent), then the API answers again
        idle = await asyncio.gather(*(closed_by_server(r, keepalive + 5.0) for r, _w in conns[:limit]))
        assert all(g == b"" for g in idle), idle
        assert loop.time() - started_idle >= keepalive * 0.5
        await wait_until(lambda: guard.active == 0, 5, "idle connections released")
        page = await admin_page(daemon)
        assert page.tag == "page"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{daemon.port}/metrics") as resp:
                metrics = parse_metrics(await resp.text())
        assert metrics[("collector_http_connections_refused_total", frozenset())] == 4
        assert metrics[("collector_http_connections", frozenset())] >= 1  # this scrape's own connection


# ------------------------------------------------------------------------------------------ (b)
async def test_slowloris_headers_cut_after_request_timeout(tmp_path: Path, replay_server: ReplayFactory,
                                                           conns: list[Conn]) -> None:
    ami = await replay_server("basic_outbound", fast=True)
    settings = settings_for(tmp_path, [ami.port])
    request_timeout = 1.0
    settings = dataclasses.replace(settings, http=dataclasses.replace(
        settings.http, request_timeout=request_timeout, keepalive_timeout=60.0))
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-Pad-%d: y\r\n" % i for i in range(40)) + b"\r\n"
    async with running_daemon(settings) as daemon:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
        conns.append((reader, writer))
        started = loop.time()
        sent, closed = 0, None
        while sent < len(request) - 1 and closed is None:  # bounded: never the final byte
            try:
                writer.write(request[sent:sent + 1])
                await writer.drain()
            except OSError:
                closed = b""
                break
            sent += 1
            closed = await closed_by_server(reader, 0.2)  # the trickle's pace, and the check it was cut
        elapsed = loop.time() - started
        assert closed == b"", "the server never closed the trickling connection"
        assert request_timeout * 0.9 <= elapsed <= request_timeout + 3.0, elapsed
        assert sent < len(request) - 1
        assert daemon.http_guard is not None and daemon.http_guard.header_timeouts.total == 1
        # a normal client on the same server is unaffected
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{daemon.port}/healthz") as resp:
                assert resp.status == 200


# ------------------------------------------------------------------------------------------ (c)
NOFILE = 64  # the daemon needs ~25 descriptors of its own; the rest go to the flood


def _lower_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, hard))


async def _spawn_limited(st: Stack) -> Child:
    load_demo(st.db)
    st.write_config()
    env = child_env(NOTIFY_SOCKET=st.notify.address)
    proc = await asyncio.create_subprocess_exec(
        PY, "-m", "collector", "run", "--config", str(st.ini),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env, cwd=st.tmp, preexec_fn=_lower_nofile)
    child = Child("daemon", proc)
    st.children.append(child)
    st.daemon = child
    return child


async def test_emfile_logged_once_per_window_and_ami_survives(
        stack: Stack, conns: list[Conn]) -> None:  # noqa: F811  (the imported fixture)
    st = stack
    await st.start_replay()
    daemon = await _spawn_limited(st)
    await st.ready()
    await st.settled()
    before = (await st.json("/status"))["servers"][0]

    loop = asyncio.get_running_loop()

    async def connect() -> Conn | None:
        try:
            return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", st.http_port), 2.0)
        except (TimeoutError, OSError):
            return None

    # the flood: more idle connections than the daemon has descriptors (the excess waits in the backlog)
    for got in await asyncio.gather(*(connect() for _ in range(3 * NOFILE))):
        if got is not None:
            conns.append(got)
    # ours, or (without the filter) asyncio's own report with its traceback
    await daemon.wait_line(r"http accept failed: EMFILE|socket\.accept\(\) out of system resource", timeout=10)
    hold_until = loop.time() + 3.0  # the attack lasts 3 s (asyncio retries accept() every second)
    await until(lambda: loop.time() >= hold_until or None, 5, "the end of the flood", interval=0.1)
    for _r, w in conns:
        w.close()
    conns.clear()

    async def status() -> dict[str, object] | None:
        async with st.http.get(st.url("/status")) as resp:
            return dict(await resp.json()) if resp.status == 200 else None

    after = await until(status, 30, "/status answering after the flood", interval=0.2)
    accept_lines = [line for line in daemon.err_lines if re.search(r"accept", line, re.I)]
    assert not any("Traceback" in line for line in daemon.err_lines), daemon.err[-3000:]
    assert 1 <= len(accept_lines) <= 3, accept_lines

    server = after["servers"][0]  # type: ignore[index]
    assert server["connected"] and server["reconnects"] == before["reconnects"], server
    assert after["http"]["accept_errors"] >= 1  # type: ignore[index]
    rows = await st.calls()
    assert {r["uniqueid"] for r in rows} == st.trace.uniqueids



async def test_accept_filter_only_swallows_resource_errors() -> None:
    import errno
    from typing import Any

    from collector.service.loopguard import AcceptErrorFilter

    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
    try:
        filt = AcceptErrorFilter(loop, window=60.0).install()
        emfile = {"message": "socket.accept() out of system resource", "exception": OSError(errno.EMFILE, "x")}
        for _ in range(100):
            loop.call_exception_handler(emfile)
        other = {"message": "Task exception was never retrieved", "exception": RuntimeError("bug")}
        loop.call_exception_handler(other)
        assert filt.count == 100 and seen == [other]
        filt.uninstall()
        assert loop.get_exception_handler() is not filt
    finally:
        loop.set_exception_handler(previous)
