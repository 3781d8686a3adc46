"""The daemon as systemd runs it: ``python -m collector run --config`` in a subprocess, against ``collector
replay`` in another subprocess serving a real Asterisk trace, with the demo reference data in a SQLite file.

What is checked from the outside only (datagrams on a fake ``$NOTIFY_SOCKET``, HTTP, signals, exit status,
the SQLite file, stderr): the sd_notify conversation (READY only once HTTP answers, WATCHDOG at half of
WATCHDOG_USEC, STATUS, RELOADING/READY around SIGHUP, STOPPING on SIGTERM); ``/healthz``, ``/readyz``,
``/status`` and ``/metrics`` before, during and after an AMI server outage; a SIGHUP reload that changes
reference data under calls that are up without touching them or the connection; SIGTERM flushing
``activecalls``; the token guard of ``/status`` and ``/metrics``; log hygiene; the systemd unit.

The replayed trace is the first ``CUT_AFTER`` seconds of ``concurrent_load`` served with ``--fast``: the
replay sends it at once and then idles with the calls up (answering Ping and CoreShowChannels from that
state), so the expected call table is exactly the offline tracker's table of the same file.
"""

from __future__ import annotations

import asyncio
import configparser
import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict, TypeVar, overload

import aiohttp
import pytest
from lxml import etree
from prometheus_client.parser import text_string_to_metric_families

from collector.ami.framing import ACCELERATED
from collector.refdata.importer import demo_data, load_demo
from collector.service.logsetup import MASK, RedactingFormatter, add_secrets, redact, setup_logging
from collector.service.sdnotify import Notifier
from collector.tools.timeline import iter_trace_messages
from collector.tools.traces import read_trace
from collector.tracking.calls import CallView
from collector.tracking.tracker import CallTracker
from tests.conftest import scenario_files

PY = sys.executable
REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "deploy" / "collector.service"

AMI_USER = "collector"
AMI_SECRET = "ami-Pa55-7f3c1e9b"
API_SECRETS = tuple(u["api_secret_key"] for u in demo_data()["users"] if u.get("api_secret_key"))
ADMIN_SECRET = next(u["api_secret_key"] for u in demo_data()["users"] if u["username"] == "admin")
STATUS_TOKEN = "tok-5b1d9e0c44a2"
WATCHDOG_USEC = 200_000
CUT_AFTER = 10.0  # seconds of concurrent_load: 59 calls up, 32 of them answered
SERVER = "pbx1"

T = TypeVar("T")


# ============================================================================================ helpers

@overload
async def until(probe: Callable[[], Awaitable[T | None]], timeout: float, what: str, interval: float = 0.02) -> T: ...
@overload
async def until(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.02) -> T: ...


async def until(probe: Callable[[], Awaitable[T | None] | T | None], timeout: float, what: str,
                interval: float = 0.02) -> T:
    """Poll ``probe`` (sync or async) until it returns something truthy, at most ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        got = probe()
        if asyncio.iscoroutine(got):
            try:
                got = await asyncio.wait_for(got, max(0.05, deadline - loop.time()))
            except (TimeoutError, OSError, aiohttp.ClientError) as exc:
                got, last = None, exc
        if got:
            return got  # type: ignore[return-value]  # truthy: a T, awaited first when it was a coroutine
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")
        await asyncio.sleep(interval)


def mor_hash(username: str, secret: str) -> str:
    return hashlib.sha1((username + secret).encode()).hexdigest()


def offline_calls(path: Path, server_id: int = 1) -> list[CallView]:
    """The tracker's table after the whole trace, offline (no sockets, no clock)."""
    trk = CallTracker()
    for msg in iter_trace_messages([path]):
        trk.apply(server_id, msg)
    return trk.calls(server_id)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "LISTEN_FDS")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Child:
    """A ``python -m collector …`` subprocess; stdout and stderr are read continuously into ``.out``/``.err``."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.out_lines: list[str] = []
        self.err_lines: list[str] = []
        self._pumps = [asyncio.create_task(self._pump(proc.stdout, self.out_lines)),
                       asyncio.create_task(self._pump(proc.stderr, self.err_lines))]

    @classmethod
    async def spawn(cls, name: str, *args: str | Path, env: Mapping[str, str] | None = None,
                    cwd: Path | None = None) -> Child:
        proc = await asyncio.create_subprocess_exec(
            PY, "-m", "collector", *map(str, args), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=dict(env) if env is not None else child_env(), cwd=cwd)
        return cls(name, proc)

    @staticmethod
    async def _pump(stream: asyncio.StreamReader | None, into: list[str]) -> None:
        assert stream is not None
        while line := await stream.readline():
            into.append(line.decode("utf-8", "replace"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def out(self) -> str:
        return "".join(self.out_lines)

    @property
    def err(self) -> str:
        return "".join(self.err_lines)

    async def wait_line(self, pattern: str, timeout: float = 10.0, stream: str = "err") -> re.Match[str]:
        rx = re.compile(pattern)
        lines = self.err_lines if stream == "err" else self.out_lines

        def probe() -> re.Match[str] | None:
            for line in lines:
                if m := rx.search(line):
                    return m
            if self.proc.returncode is not None and all(t.done() for t in self._pumps):
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}) without printing "
                                     f"{pattern!r}; stderr:\n{self.err[-3000:]}")
            return None

        return await until(probe, timeout, f"{self.name}: {pattern!r}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def exit_code(self, timeout: float) -> int:
        """Wait for the process to end (bounded) and its output to be read; its exit status."""
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.wait_for(asyncio.gather(*self._pumps), 5)
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                pass
        for t in self._pumps:
            if not t.done():
                try:
                    await asyncio.wait_for(t, 2)
                except (TimeoutError, Exception):
                    t.cancel()


class NotifySocket:
    """The systemd end of sd_notify: a Unix datagram socket recording every message (time, fields)."""

    def __init__(self, directory: Path) -> None:
        path = str(directory / "notify.sock")
        # sun_path holds 107 bytes; a deep temp dir falls back to the abstract namespace
        self.address = path if len(path.encode()) < 100 else f"@collector-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.address if not self.address.startswith("@") else "\0" + self.address[1:])
        self.sock.setblocking(False)
        self.messages: list[tuple[float, dict[str, str], str]] = []
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 65536)
            text = data.decode()
            fields = dict(line.split("=", 1) for line in text.split("\n") if "=" in line)
            self.messages.append((time.monotonic(), fields, text))

    async def wait(self, key: str, value: str | None = "1", after: int = 0, timeout: float = 10.0) -> int:
        """Index of the first message at or after ``after`` that sets ``key`` (to ``value`` if given)."""
        def probe() -> int | None:
            for i in range(after, len(self.messages)):
                got = self.messages[i][1].get(key)
                if got is not None and (value is None or got == value):
                    return i + 1  # +1 so that index 0 is truthy; undone below
            return None

        return (await until(probe, timeout, f"sd_notify {key}={value}")) - 1

    def fields(self, i: int) -> dict[str, str]:
        return self.messages[i][1]

    def indexes(self, key: str, value: str = "1", after: int = 0) -> list[int]:
        return [i for i in range(after, len(self.messages)) if self.messages[i][1].get(key) == value]

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.sock.close()


@dataclass(frozen=True)
class CutTrace:
    path: Path
    expected: tuple[CallView, ...]

    @property
    def uniqueids(self) -> set[str]:
        return {c.uniqueid for c in self.expected}

    def count(self, status: str) -> int:
        return sum(1 for c in self.expected if c.status.value == status)


@pytest.fixture(scope="module")
def cut_trace(tmp_path_factory: pytest.TempPathFactory) -> CutTrace:
    """The first CUT_AFTER seconds of concurrent_load (whole blocks), and the offline tracker's table of it."""
    src = read_trace(scenario_files("concurrent_load")[0])
    ts_rx = re.compile(rb"\nTimestamp: *([\d.]+)")
    first = ts_rx.search(src)
    assert first is not None
    t0 = float(first.group(1))
    kept: list[bytes] = []
    for block in src.split(b"\r\n\r\n"):
        m = ts_rx.search(block)
        if m and float(m.group(1)) >= t0 + CUT_AFTER:
            break
        kept.append(block)
    path = tmp_path_factory.mktemp("trace") / "cut.ami"
    path.write_bytes(b"\r\n\r\n".join(kept) + b"\r\n\r\n")
    expected = tuple(offline_calls(path))
    assert len(expected) >= 40 and 0 < sum(1 for c in expected if c.answer_time is not None) < len(expected)
    return CutTrace(path, expected)


@dataclass
class Stack:
    """A replay subprocess, a daemon subprocess, their config and SQLite file, a fake NOTIFY_SOCKET."""

    tmp: Path
    trace: CutTrace
    http: aiohttp.ClientSession
    notify: NotifySocket
    http_port: int = field(default_factory=free_port)
    ami_port: int = 0
    replay: Child | None = None
    daemon: Child | None = None
    children: list[Child] = field(default_factory=list)
    auth: dict[str, str] = field(default_factory=dict)  # Authorization header when a status_token is set

    @property
    def db(self) -> Path:
        return self.tmp / "collector.db"

    @property
    def ini(self) -> Path:
        return self.tmp / "collector.ini"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    async def start_replay(self, port: int = 0) -> Child:
        child = await Child.spawn("replay", "replay", self.trace.path, "--listen", f"127.0.0.1:{port}", "--fast",
                                  "--username", AMI_USER, "--secret", AMI_SECRET, cwd=self.tmp)
        self.children.append(child)
        self.replay = child
        m = await child.wait_line(r"replay AMI server on 127\.0\.0\.1:(\d+)", timeout=15)
        self.ami_port = int(m.group(1))
        return child

    def write_config(self, **api: str) -> None:
        lines = ["[collector]", "log_level = INFO", "reconcile_interval = 3600", "ping_interval = 10",
                 "reconnect_min = 0.05", "reconnect_max = 0.3", "resync_timeout = 5",
                 # only the stop path writes activecalls, so the SIGTERM test sees that flush
                 "flush_interval = 3600",
                 "[api]", "listen = 127.0.0.1", f"port = {self.http_port}", "timezone = UTC"]
        lines += [f"{k} = {v}" for k, v in api.items()]
        lines += ["[database]", "path = collector.db",  # relative to the config file
                  f"[server:{SERVER}]", "host = 127.0.0.1", f"port = {self.ami_port}", f"username = {AMI_USER}",
                  f"secret = {AMI_SECRET}", "server_id = 1"]
        self.ini.write_text("\n".join(lines) + "\n")

    async def start_daemon(self, **api: str) -> Child:
        if api.get("status_token"):
            self.auth = {"Authorization": f"Bearer {api['status_token']}"}
        if not self.db.exists():
            load_demo(self.db)
        self.write_config(**api)
        env = child_env(NOTIFY_SOCKET=self.notify.address, WATCHDOG_USEC=str(WATCHDOG_USEC))
        child = await Child.spawn("daemon", "run", "--config", self.ini, env=env, cwd=self.tmp)
        self.children.append(child)
        self.daemon = child
        return child

    async def ready(self) -> dict[str, str]:
        """Wait for READY=1 (the first one) and return its fields."""
        daemon = self.daemon
        assert daemon is not None

        def probe() -> int | None:
            found = self.notify.indexes("READY")
            if found:
                return found[0] + 1
            if daemon.proc.returncode is not None:
                raise AssertionError(f"daemon exited {daemon.proc.returncode} before READY=1:\n{daemon.err[-3000:]}")
            return None

        return self.notify.fields(await until(probe, 15, "READY=1") - 1)

    # ------------------------------------------------------------------ HTTP
    async def get(self, path: str, **kw: Any) -> tuple[int, bytes, Mapping[str, str]]:
        async with self.http.get(self.url(path), **kw) as resp:
            return resp.status, await resp.read(), resp.headers

    async def json(self, path: str, status: int = 200, **kw: Any) -> Any:
        code, body, _ = await self.get(path, **kw)
        assert code == status, (path, code, body[:500])
        return json.loads(body)

    async def metrics(self, **kw: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        code, body, headers = await self.get("/metrics", **kw)
        assert code == 200 and headers["Content-Type"].startswith("text/plain")
        return parse_metrics(body.decode())

    async def calls(self, user: str = "admin", secret: str = ADMIN_SECRET) -> list[dict[str, str]]:
        """The MOR API's answer for ``user``: one dict per <active_call> (tag → text, '' for empty)."""
        url = self.url("/billing/api/active_calls_get")
        async with self.http.post(url, data={"u": user, "hash": mor_hash(user, secret)}) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/xml")
            page = etree.fromstring(await resp.read())
        assert page.tag == "page"
        if page.find("status") is not None:  # MOR's "no calls" document
            return []
        return [{child.tag: child.text or "" for child in call} for call in page.findall("active_call")]

    async def settled(self, timeout: float = 20.0) -> list[dict[str, str]]:
        """Wait until the daemon has taken in the whole trace; the API's calls then.

        The replay says when it has sent everything; after that the daemon is done once the API shows the
        offline tracker's table (uniqueid, status, answer time of every call) and its AMI message count has
        stopped moving. The uniqueids alone are not enough: after a reconnect the table still holds the
        calls of before while the replayed events walk them through Ringing again."""
        assert self.replay is not None
        await self.replay.wait_line(r"replay: all \d+ session\(s\) played", timeout)
        want = {c.uniqueid: (c.status.value, utc(c.answer_time)) for c in self.trace.expected}
        last_events: list[int] = []

        async def probe() -> list[dict[str, str]] | None:
            rows = await self.calls()
            events = (await self.json("/status", headers=self.auth))["servers"][0]["events"]
            last_events.append(events)
            got = {r["uniqueid"]: (r["status"], r["answer_time"]) for r in rows}
            return rows if got == want and last_events[-2:] == [events, events] else None

        return await until(probe, timeout, "the daemon to hold the trace's final call table", interval=0.05)


@pytest.fixture
async def stack(tmp_path: Path, cut_trace: CutTrace) -> AsyncIterator[Stack]:
    notify = NotifySocket(tmp_path)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        st = Stack(tmp_path, cut_trace, http, notify)
        try:
            yield st
        finally:
            for child in st.children:
                await child.kill()
            await notify.close()


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric(samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"{name}{labels} missing; have {sorted(k[0] for k in samples)}"
    return samples[key]


def timeless(row: Mapping[str, str]) -> dict[str, str]:
    """An <active_call> without ``duration`` (it grows with the clock)."""
    return {k: v for k, v in row.items() if k != "duration"}


def utc(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def assert_log_hygiene(stderr: str, *secrets: str) -> None:
    """No secret anywhere; key=value context at INFO; nothing crashed."""
    for s in (AMI_SECRET, *API_SECRETS, *secrets):
        assert s not in stderr, f"secret {s[:3]}… leaked into the log"
    info = [line for line in stderr.splitlines() if " INFO " in line]
    login = re.compile(rf"ami logged in server={SERVER} username={AMI_USER}\b")
    assert any(login.search(line) for line in info), stderr[-2000:]
    assert any(re.search(r"api listening address=127\.0\.0\.1 port=\d+", line) for line in info)
    assert "Traceback" not in stderr, stderr[-3000:]
    # panoramisk's context-free duplicates of the session's own lines are filtered out below DEBUG
    assert "Connection lost" not in stderr and "Not able to reconnect" not in stderr


# ============================================================================================ sd_notify

async def test_notify_ready_after_http_watchdog_status_reload_and_sigterm_flush(stack: Stack) -> None:
    await stack.start_replay()
    daemon = await stack.start_daemon()
    ready = await stack.ready()
    # READY=1 means "answering": the very first request after it succeeds, no retry
    code, body, _ = await stack.get("/healthz")
    assert (code, json.loads(body)) == (200, {"status": "ok"})
    assert ready["MAINPID"] == str(daemon.pid)
    assert re.fullmatch(r"[01]/1 AMI up, \d+ calls", ready["STATUS"]), ready
    first_ready = stack.notify.indexes("READY")[0]
    assert not any(k in f for _t, f, _r in stack.notify.messages[:first_ready] for k in ("STOPPING", "RELOADING"))
    await daemon.wait_line(rf"api listening address=127\.0\.0\.1 port={stack.http_port}", timeout=2)

    # WATCHDOG=1 from the loop at half of WATCHDOG_USEC (0.1 s)
    await until(lambda: len(stack.notify.indexes("WATCHDOG", after=first_ready)) >= 6, 5, "six WATCHDOG=1")
    times = [stack.notify.messages[i][0] for i in stack.notify.indexes("WATCHDOG", after=first_ready)]
    gap = statistics.median(b - a for a, b in zip(times, times[1:], strict=False))
    assert WATCHDOG_USEC / 4e6 <= gap <= WATCHDOG_USEC / 1e6, f"median WATCHDOG gap {gap:.3f}s"

    rows = await stack.settled()
    n = len(stack.trace.expected)

    # SIGHUP: RELOADING=1 (with MONOTONIC_USEC) … READY=1 with a fresh STATUS
    mark = len(stack.notify.messages)
    daemon.signal(signal.SIGHUP)
    i = await stack.notify.wait("RELOADING", after=mark)
    assert int(stack.notify.fields(i)["MONOTONIC_USEC"]) > 0
    j = await stack.notify.wait("READY", after=i + 1)
    assert stack.notify.fields(j)["STATUS"] == f"1/1 AMI up, {n} calls"

    # a bad drop-in + SIGHUP: rejected with one line naming section and key, still READY, nothing lost
    confd = stack.ini.parent / "conf.d"
    confd.mkdir()
    (confd / "90-bad.ini").write_text("[collector]\nping_interval = often\n")
    mark = len(stack.notify.messages)
    daemon.signal(signal.SIGHUP)
    i = await stack.notify.wait("RELOADING", after=mark)
    await stack.notify.wait("READY", after=i + 1)
    await daemon.wait_line(r"ERROR .*reload rejected.*\[collector\] ping_interval", timeout=5)
    (confd / "90-bad.ini").unlink()
    assert [timeless(r) for r in await stack.calls()] == [timeless(r) for r in rows]
    assert daemon.proc.returncode is None

    # SIGTERM: STOPPING=1, exit 0 within 5 s, activecalls = what the API showed just before
    before = {(r["id"], r["uniqueid"], r["answer_time"]) for r in await stack.calls()}
    assert len(before) == n
    mark = len(stack.notify.messages)
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    await stack.notify.wait("STOPPING", after=mark, timeout=5)
    assert await daemon.exit_code(timeout=5) == 0
    assert time.monotonic() - started < 5
    assert not stack.notify.indexes("READY", after=mark)
    with sqlite3.connect(stack.db) as db:
        stored = {(str(i), u, utc(a)) for i, u, a in
                  db.execute("SELECT id, uniqueid, answer_time FROM activecalls")}
    assert stored == before
    assert re.search(rf"activecalls flushed rows=\d+ calls={n}\b", daemon.err)  # upserts + deletes
    assert_log_hygiene(daemon.err)


# ============================================================================================ ops endpoints

async def test_ops_endpoints_and_metrics_through_a_server_outage(stack: Stack) -> None:
    await stack.start_replay()
    daemon = await stack.start_daemon()
    await stack.ready()
    rows = await stack.settled()
    n, answered = len(rows), stack.trace.count("Answered")
    assert sum(r["status"] == "Answered" for r in rows) == answered

    # ---- healthy
    assert await stack.json("/healthz") == {"status": "ok"}
    assert (await stack.json("/readyz"))["ready"] is True
    status = await stack.json("/status")
    assert status["status"] == "ok" and status["calls"] == {"total": n, "answered": answered}
    (srv,) = status["servers"]
    assert srv["name"] == SERVER and srv["status"] == "ok" and srv["connected"] is True
    assert srv["reconnects"] == 0 and srv["calls"] == n and srv["last_resync_result"].startswith("ok")
    assert srv["events"] > 0 and srv["last_event_age"] >= 0
    m = await stack.metrics()
    assert metric(m, "collector_active_calls", server=SERVER, status="Answered") == answered
    assert metric(m, "collector_active_calls", server=SERVER, status="Ringing") == n - answered
    assert sum(v for (name, _l), v in m.items() if name == "collector_active_calls") == n
    assert metric(m, "collector_ami_connected", server=SERVER) == 1
    assert metric(m, "collector_ami_reconnects_total", server=SERVER) == 0
    assert metric(m, "collector_ami_events_total", server=SERVER) >= srv["events"]
    assert metric(m, "collector_resyncs_total", server=SERVER) >= 1
    assert metric(m, "collector_ami_last_event_age_seconds", server=SERVER) >= 0
    assert metric(m, "collector_reconcile_corrections_total", server=SERVER, kind="added") >= 0
    assert metric(m, "collector_ready") == 1
    assert status["ami_decoder"] == ("c" if ACCELERATED else "python")  # the daemon reports its decoder
    assert metric(m, "collector_build_info", version=status["version"], ami_decoder=status["ami_decoder"]) == 1
    assert metric(m, "collector_api_requests_total", endpoint="/status", code="200") >= 1
    assert metric(m, "collector_api_requests_total", endpoint="/billing/api/active_calls_get", code="200") >= 1
    assert ("collector_api_request_duration_seconds_count", frozenset({("endpoint", "/healthz")})) in m
    for (name, labels) in m:  # low cardinality: no per-call/user/device labels
        assert {k for k, _v in labels} <= {"server", "status", "kind", "endpoint", "code", "le", "version",
                                            "ami_decoder", "result"}, name  # result: a fixed set (hang-ups)

    # ---- the AMI server dies
    assert stack.replay is not None
    stack.replay.proc.kill()
    await stack.replay.exit_code(timeout=5)

    async def not_ready() -> bool:
        code, _body, _h = await stack.get("/readyz")
        return code == 503

    await until(not_ready, 10, "/readyz 503")
    assert (await stack.json("/readyz", status=503))["ready"] is False
    assert await stack.json("/healthz") == {"status": "ok"}  # the loop still answers
    # last_error is set by the first failed reconnect (the disconnect itself leaves it empty)
    status = await until(lambda: _with_last_error(stack), 5, "/status last_error")
    (srv,) = status["servers"]
    assert status["status"] == "fail" and srv["status"] == "fail" and srv["connected"] is False
    assert srv["reconnects"] >= 1 and "connect" in srv["last_error"]
    m = await stack.metrics()
    assert metric(m, "collector_ami_connected", server=SERVER) == 0
    assert metric(m, "collector_ami_reconnects_total", server=SERVER) == srv["reconnects"]
    assert metric(m, "collector_ready") == 0
    assert metric(m, "collector_api_requests_total", endpoint="/readyz", code="503") >= 1
    # the calls the tracker still holds are still served (HTTP 200, well-formed), and counted alike
    during = await stack.calls()
    assert len(during) == status["calls"]["total"] == sum(
        v for (name, _l), v in m.items() if name == "collector_active_calls")
    await daemon.wait_line(rf"WARNING .*ami disconnected server={SERVER}\b", timeout=5)

    # ---- it comes back on the same port: ready again, the same calls, the reconnect counted
    await stack.start_replay(port=stack.ami_port)

    async def ready_again() -> bool:
        code, _body, _h = await stack.get("/readyz")
        return code == 200

    await until(ready_again, 15, "/readyz 200 again")
    # (same uniqueids and answer times; the MOR ids may differ: this "Asterisk" restarted and replayed the
    # same calls from their start, which the first full resync partly swept before the events re-added them)
    rows = await stack.settled()
    status = await stack.json("/status")
    (srv,) = status["servers"]
    assert status["status"] == "ok" and srv["status"] == "ok" and srv["connected"] is True
    assert srv["reconnects"] >= 1 and srv["calls"] == len(rows) == n
    m = await stack.metrics()
    assert metric(m, "collector_ami_connected", server=SERVER) == 1
    assert metric(m, "collector_ami_reconnects_total", server=SERVER) == srv["reconnects"]
    assert metric(m, "collector_active_calls", server=SERVER, status="Answered") == \
        sum(r["status"] == "Answered" for r in rows) == answered
    assert metric(m, "collector_ready") == 1

    daemon.signal(signal.SIGTERM)
    assert await daemon.exit_code(timeout=5) == 0
    assert_log_hygiene(daemon.err)


async def _with_last_error(stack: Stack) -> dict[str, Any] | None:
    status = await stack.json("/status")
    return status if status["servers"][0]["last_error"] else None


# ============================================================================================ reload

def _demo_row(table: str, row_id: int) -> dict[str, Any]:
    return dict(next(r for r in demo_data()[table] if r["id"] == row_id))


RENAMES = {"Alice Office": "Alicia Office", "Carol Warehouse": "Caroline Warehouse"}
class _Destination(TypedDict):
    id: int
    prefix: str
    direction_code: str
    subcode: str
    name: str
    destinationgroup_id: int


NEW_DESTINATION: _Destination = {"id": 99, "prefix": "370520", "direction_code": "LTU", "subcode": "FIX",
                   "name": "Lithuania DID range", "destinationgroup_id": 3}


def _after_change(row: dict[str, str]) -> dict[str, str]:
    """What the reference data change below does to one <active_call> (duration left out: it moves)."""
    new = timeless(row)
    for key in ("user", "dst_user"):
        if key in new:
            new[key] = RENAMES.get(new[key], new[key])
    if new.get("provider_name") == "prov1":
        new["provider_name"] = "prov1 (renamed)"
    if new.get("localized_dst", "").startswith(NEW_DESTINATION["prefix"]):
        new["destination_name"] = NEW_DESTINATION["name"]
    return new


async def test_sighup_reload_applies_new_reference_data_to_calls_already_up(stack: Stack) -> None:
    await stack.start_replay()
    daemon = await stack.start_daemon(status_token=STATUS_TOKEN)
    await stack.ready()
    before = await stack.settled()
    bearer = {"Authorization": f"Bearer {STATUS_TOKEN}"}
    status0 = await stack.json("/status", headers=bearer)
    (srv0,) = status0["servers"]

    # the token guards /status and /metrics (query or Bearer), not the probes
    for path in ("/status", "/metrics"):
        for kw in ({}, {"params": {"token": "wrong"}}, {"headers": {"Authorization": "Bearer wrong"}}):
            code, _body, headers = await stack.get(path, **kw)
            assert code == 401 and headers["WWW-Authenticate"].startswith("Bearer"), (path, kw)
        assert (await stack.get(path, params={"token": STATUS_TOKEN}))[0] == 200
        assert (await stack.get(path, headers=bearer))[0] == 200
    assert (await stack.get("/healthz"))[0] == 200 and (await stack.get("/readyz"))[0] == 200

    # an import into the same SQLite file while the daemon runs: users renamed, provider renamed, a destination
    change = {"users": [dict(_demo_row("users", 2), first_name="Alicia"),
                        dict(_demo_row("users", 5), first_name="Caroline")],
              "providers": [dict(_demo_row("providers", 1), name="prov1 (renamed)")],
              "destinations": [NEW_DESTINATION]}
    (stack.tmp / "change.json").write_text(json.dumps(change))
    imp = await Child.spawn("db-import", "db", "import", "change.json", "--db", "collector.db", cwd=stack.tmp)
    stack.children.append(imp)
    assert await imp.exit_code(timeout=15) == 0, imp.err
    # nothing changes before the reload
    assert [timeless(r) for r in await stack.calls()] == [timeless(r) for r in before]

    mark = len(stack.notify.messages)
    daemon.signal(signal.SIGHUP)
    i = await stack.notify.wait("RELOADING", after=mark)
    await stack.notify.wait("READY", after=i + 1)
    after = await stack.calls()

    # the same calls, same MOR ids, same answer times; enrichment from the new data
    assert [r["id"] for r in after] == [r["id"] for r in before]
    assert [(r["uniqueid"], r["answer_time"], r["status"]) for r in after] == \
        [(r["uniqueid"], r["answer_time"], r["status"]) for r in before]
    assert [timeless(r) for r in after] == [_after_change(r) for r in before]
    changed = sum(timeless(a) != timeless(b) for a, b in zip(after, before, strict=False))
    assert changed >= 3, "the change should touch several calls that are up"
    assert any(r.get("dst_user") == "Caroline Warehouse" for r in after)
    assert any(r.get("destination_name") == NEW_DESTINATION["name"] for r in after)

    # the connection was not touched
    status1 = await stack.json("/status", params={"token": STATUS_TOKEN})
    (srv1,) = status1["servers"]
    assert status1["reloads"] == status0["reloads"] + 1 == 1
    assert srv1["reconnects"] == 0 and srv1["since"] == srv0["since"] and srv1["connected"] is True
    assert stack.replay is not None
    assert len(re.findall(r"logged in as 'collector'", stack.replay.err)) == 1
    assert len(re.findall(rf"ami logged in server={SERVER}\b", daemon.err)) == 1
    m = await stack.metrics(headers=bearer)
    assert metric(m, "collector_reloads_total") == 1
    await daemon.wait_line(r"INFO .*reload done users=7 .*destinations=12", timeout=5)

    daemon.signal(signal.SIGTERM)
    assert await daemon.exit_code(timeout=5) == 0
    assert_log_hygiene(daemon.err, STATUS_TOKEN)


# ============================================================================================ start failures

async def test_http_port_taken_fails_start_without_ready(stack: Stack) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        stack.http_port = taken.getsockname()[1]
        stack.ami_port = free_port()  # nothing there: start-up does not wait for AMI anyway
        daemon = await stack.start_daemon()
        assert await daemon.exit_code(timeout=10) == 1
    assert not stack.notify.indexes("READY")
    errors = [line for line in daemon.err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "start failed" in errors[0] and str(stack.http_port) in errors[0], daemon.err
    assert "Traceback" not in daemon.err


# ============================================================================================ systemd unit

def test_systemd_unit_is_what_the_notes_ask_for() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # configparser's documented case-keeping hook
    unit.read_string(UNIT.read_text())
    svc = unit["Service"]
    assert svc["Type"] == "notify" and svc["NotifyAccess"] == "main"
    assert int(svc["WatchdogSec"]) > 0 and svc["Restart"] == "on-failure"
    assert "-HUP" in svc["ExecReload"] and "$MAINPID" in svc["ExecReload"]
    assert svc["ExecStart"].split()[1:3] == ["run", "--config"]
    assert svc["ExecStartPre"].split()[1] == "check-config"
    assert svc["User"] not in ("", "root") and svc["StateDirectory"] == "collector"
    assert svc["ProtectSystem"] == "strict" and svc["NoNewPrivileges"] == "yes"
    assert "AF_UNIX" in svc["RestrictAddressFamilies"]  # NOTIFY_SOCKET is a Unix socket
    # the config's database path is inside StateDirectory (the only writable place under ProtectSystem=strict)
    example = configparser.ConfigParser(interpolation=None)
    example.read(REPO / "config.example.ini")
    assert example["database"]["path"].startswith("/var/lib/collector/")


def _unit_copy(tmp_path: Path) -> tuple[str, Path]:
    """``systemd-analyze`` and a copy of the unit whose ExecStart/ExecStartPre name this venv's ``collector``:
    the unit says /usr/local/bin/collector (the README's symlink), which verify insists exists and is
    executable. Nothing else in the copy differs."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    exe = Path(PY).parent / "collector"
    if not os.access(exe, os.X_OK):
        pytest.skip(f"{exe} not installed (pip install -e .)")
    text = UNIT.read_text()
    assert text.count("/usr/local/bin/collector") == 2
    unit = tmp_path / "collector.service"
    unit.write_text(text.replace("/usr/local/bin/collector", str(exe)))
    return analyze, unit


def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    """Any message at all (unknown key, bad value, missing binary) fails the test."""
    analyze, unit = _unit_copy(tmp_path)
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=30,
                          env=child_env(SYSTEMD_LOG_LEVEL="notice"))
    assert proc.returncode == 0 and proc.stderr.strip() == "" and proc.stdout.strip() == "", \
        (proc.returncode, proc.stdout, proc.stderr)


def test_systemd_analyze_security_exposure_is_low(tmp_path: Path) -> None:
    """``systemd-analyze security --offline`` (systemd ≥ 250) rates the sandboxing; 2.0 of 10 at most (the
    unit scores 1.2: what remains is network access, which an AMI client needs, and no PrivateUsers)."""
    analyze, unit = _unit_copy(tmp_path)
    proc = subprocess.run([analyze, "security", "--offline=true", "--threshold=20", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=30, env=child_env(SYSTEMD_LOG_LEVEL="notice"))
    if "--offline" in proc.stderr or "unrecognized option" in proc.stderr:
        pytest.skip("systemd-analyze security has no --offline/--threshold (systemd < 250)")
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr


# ============================================================================================ own modules, in process

def test_notifier_speaks_sd_notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "n.sock" if len(str(tmp_path)) < 90 else Path("/tmp") / f"n-{uuid.uuid4().hex}.sock"
    server.bind(str(path))
    server.settimeout(2)
    try:
        n = Notifier(str(path))
        assert n.enabled and n.notify(ready=1, status="2/3 AMI up,\n12 calls")
        assert server.recv(4096) == b"READY=1\nSTATUS=2/3 AMI up, 12 calls"
        before = time.monotonic_ns() // 1000
        assert n.notify(reloading=1, status="reloading")
        fields = dict(line.split("=", 1) for line in server.recv(4096).decode().split("\n"))
        assert fields["RELOADING"] == "1" and before <= int(fields["MONOTONIC_USEC"]) <= time.monotonic_ns() // 1000
        n.close()
        assert not n.notify(stopping=1)
    finally:
        server.close()
        path.unlink(missing_ok=True)
    # a vanished socket: False, logged once, no exception
    gone = Notifier(str(path))
    assert not gone.notify(watchdog=1) and not gone.notify(watchdog=1)
    gone.close()
    assert not Notifier("vsock:2:1234").enabled and not Notifier("").enabled
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not Notifier().enabled
    for usec, pid, want in (("200000", None, 0.1), ("200000", str(os.getpid()), 0.1), ("200000", "1", None),
                            ("0", None, None), ("-5", None, None), ("x", None, None), (None, None, None)):
        for key, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
            if value is None:
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, value)
        assert Notifier.watchdog_interval() == want, (usec, pid)


def test_log_lines_never_show_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    # what panoramisk prints when a connection dies with the Login pending, and other shapes of secrets
    action = "Action: Login\r\nActionID: x-1\r\nEvents: call,system\r\nSecret: hunter2-ami\r\nUsername: collector"
    assert "hunter2" not in redact(action) and f"Secret: {MASK}" in redact(action)
    assert "hunter2" not in redact(str({"Action": "Login", "Secret": "hunter2-ami", "Username": "u"}))
    assert redact("GET /metrics?token=tok-123&x=1") == f"GET /metrics?token={MASK}&x=1"
    assert "abc" not in redact("Authorization: Bearer abc.def")
    harmless = "accept_secret_only_hash=yes server=pbx1 hash=0a1b secrets=3"
    assert redact(harmless) == harmless
    add_secrets(["demo-value-for-redaction", None, "ab"])
    assert redact("user row api key demo-value-for-redaction here") == f"user row api key {MASK} here"

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    saved_levels = {name: logging.getLogger(name).level for name in ("collector.panoramisk", "aiohttp.access")}
    try:
        setup_logging("INFO")
        try:
            raise RuntimeError(f"Fail to send {action!r}")
        except RuntimeError:
            logging.getLogger("collector.panoramisk").exception("Fail to send")
        logging.getLogger("collector.test").info("ami logged in server=pbx1 secret=hunter2-ami")
        text = stream.getvalue()
        assert "hunter2" not in text and "server=pbx1" in text and re.match(r"\d{4}-\d\d-\d\d ", text)
        # under journald (JOURNAL_STREAM names our stderr): no timestamp, syslog priority prefix
        fd_file = open(os.devnull, "w")  # noqa: SIM115 - closed below
        try:
            st = os.fstat(fd_file.fileno())
            monkeypatch.setattr(sys, "stderr", fd_file)
            monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
            setup_logging("INFO")
            fmt = root.handlers[0].formatter
            assert isinstance(fmt, RedactingFormatter) and fmt.syslog_prefix
            rec = logging.LogRecord("collector.x", logging.WARNING, __file__, 1, "ami down server=%s", ("pbx1",), None)
            assert fmt.format(rec) == "<4>WARNING collector.x ami down server=pbx1"
        finally:
            fd_file.close()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)


# ============================================================================================ log level on reload

async def test_sighup_applies_the_log_level_both_ways(stack: Stack) -> None:
    await stack.start_replay()
    daemon = await stack.start_daemon()
    await stack.ready()
    await stack.settled()
    confd = stack.ini.parent / "conf.d"
    confd.mkdir()

    async def reload_and_request() -> str:
        """SIGHUP, one API request, then a second SIGHUP as a barrier: the stderr written in between."""
        mark = len(stack.notify.messages)
        daemon.signal(signal.SIGHUP)
        await stack.notify.wait("READY", after=await stack.notify.wait("RELOADING", after=mark) + 1)
        start = len(daemon.err_lines)
        await stack.calls()
        mark = len(stack.notify.messages)
        daemon.signal(signal.SIGHUP)
        await stack.notify.wait("READY", after=await stack.notify.wait("RELOADING", after=mark) + 1)
        # "reload done" is written before READY=1 is sent; the pipe may still hold it
        await until(lambda: any("reload done" in line for line in daemon.err_lines[start:]), 5, "reload done")
        return "".join(daemon.err_lines[start:])

    (confd / "50-debug.ini").write_text("[collector]\nlog_level = DEBUG\n")
    assert " DEBUG api.active_calls api active_calls_get api_user='admin'" in await reload_and_request()
    (confd / "50-debug.ini").unlink()  # back to the file's INFO
    assert " DEBUG " not in await reload_and_request()
    daemon.signal(signal.SIGTERM)
    assert await daemon.exit_code(timeout=5) == 0
