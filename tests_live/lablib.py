"""Helpers of the live suite: the lab's processes, a small AMI client, the collector's HTTP surface.

Nothing here imports the collector package: the product is driven only through its CLI, its INI
configuration, its HTTP API and ``/status``, so the suite survives any restructuring of the internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from lxml import etree

REPO = Path(__file__).resolve().parents[1]
INSTANCES: tuple[str, ...] = ("pbx", "phones", "carrier", "carrier2")
#: each lab instance's AMI address and a login that the lab's manager.conf grants
AMI_LOGINS: dict[str, tuple[str, int, str, str]] = {
    "pbx": ("127.0.0.1", 5038, "collector", "collector-lab"),
    "phones": ("127.0.0.2", 5038, "driver", "driver-lab"),
    "carrier": ("127.0.0.3", 5038, "driver", "driver-lab"),
    "carrier2": ("127.0.0.4", 5038, "driver", "driver-lab"),
}
TRUTH_LOGIN = ("127.0.0.1", 5038, "truth", "truth-lab")
ASTERISK = Path(os.environ.get("ASTERISK_PREFIX", "/opt/asterisk")) / "sbin" / "asterisk"
API_USER = "admin"
API_SECRET = "live-admin-secret"


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``cond`` until it returns something truthy (returned) or ``timeout`` s pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def find_lab() -> Path:
    """The lab folder: $ASTLAB, else ../shared/asterisk-lab beside this checkout (or beside the main
    checkout when this is a git worktree). Missing → AssertionError: the suite runs only with a lab."""
    env = os.environ.get("ASTLAB")
    candidates: list[Path] = [Path(env)] if env else [REPO.parent / "shared" / "asterisk-lab"]
    if not env:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            common = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--path-format=absolute",
                                     "--git-common-dir"], capture_output=True, text=True, timeout=10,
                                    check=True).stdout.strip()
            candidates.append(Path(common).parent.parent / "shared" / "asterisk-lab")
    for c in candidates:
        if (c / "start.sh").is_file() and (c / "drive.py").is_file():
            return c.resolve()
    raise AssertionError(
        "the Asterisk lab was not found (looked in " + ", ".join(map(str, candidates)) + "); "
        "set ASTLAB=/path/to/shared/asterisk-lab — the live suite is meant to run only where the lab is")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def tcp_listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


# ------------------------------------------------------------------------------------------- the lab


@dataclass
class Lab:
    home: Path  # the shared lab folder (read-only)
    conf: Path  # our copy of conf/ (ASTLAB_CONF)
    run_dir: Path  # ASTLAB_DIR
    log: Path  # where start/stop output goes

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "ASTLAB_DIR": str(self.run_dir), "ASTLAB_CONF": str(self.conf)}

    def script(self, name: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["bash", str(self.home / name), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        with self.log.open("a") as fh:
            fh.write(f"$ {name} {' '.join(args)} -> {proc.returncode}\n{proc.stdout}{proc.stderr}\n")
        return proc

    def pid(self, name: str) -> int | None:
        pf = self.run_dir / name / "asterisk.pid"
        try:
            return int(pf.read_text().strip())
        except (OSError, ValueError):
            return None

    def cli(self, command: str, timeout: float = 30) -> str:
        """One command through the pbx's remote console (asterisk -rx)."""
        proc = subprocess.run([str(ASTERISK), "-C", str(self.run_dir / "pbx" / "etc" / "asterisk.conf"),
                               "-rx", command], capture_output=True, text=True, timeout=timeout)
        return proc.stdout + proc.stderr

    def drive(self, *args: str) -> list[str]:
        return ["python3", str(self.home / "drive.py"), *args]


def prepare_lab(home: Path, base: Path, customise: Callable[[Path], None] | None = None) -> Lab:
    """Copy the lab's conf/ into ``base`` (ASTLAB_CONF); ``customise(conf)`` edits the copy before start."""
    conf = base / "conf"
    shutil.copytree(home / "conf", conf)
    if customise is not None:
        customise(conf)
    run_dir = base / "run"
    run_dir.mkdir()
    return Lab(home=home, conf=conf, run_dir=run_dir, log=base / "lab.log")


#: the pbx's AMI-over-TLS listener when the lab is started with enable_manager_tls
PBX_TLS_PORT = 5039


def enable_manager_tls(conf: Path, cert: Path, key: Path, bind: str = f"127.0.0.1:{PBX_TLS_PORT}") -> None:
    """Turn on AMI over TLS in the copied pbx manager.conf ([general]; the plain 5038 listener stays)."""
    path = conf / "pbx" / "manager.conf"
    text = path.read_text()
    head, sep, rest = text.partition("[general]\n")
    assert sep, f"no [general] section in {path}"
    path.write_text(f"{head}{sep}tlsenable = yes\ntlsbindaddr = {bind}\ntlscertfile = {cert}\n"
                    f"tlsprivatekey = {key}\n{rest}")


def lab_ports_busy() -> list[str]:
    return [f"{h}:{p}" for h, p, _u, _s in AMI_LOGINS.values() if tcp_listening(h, p)]


# ------------------------------------------------------------------------------------------ AMI client


class AmiError(Exception):
    pass


class Ami:
    """A minimal AMI client (asyncio streams, one action at a time, ``Events: off``)."""

    def __init__(self, host: str, port: int, username: str, secret: str) -> None:
        self.host, self.port, self.username, self.secret = host, port, username, secret
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ids = itertools.count(1)

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self, timeout: float = 5.0) -> None:
        reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, limit=1 << 24), timeout)
        self._reader = reader
        await asyncio.wait_for(reader.readline(), timeout)  # banner
        resp, _ = await self.action({"Action": "Login", "Username": self.username, "Secret": self.secret,
                                     "Events": "off"}, timeout=timeout)
        if resp.get("Response") != "Success":
            await self.close()
            raise AmiError(f"login {self.username}@{self.host}:{self.port} failed: {resp.get('Message')}")

    @staticmethod
    def _parse(block: bytes) -> dict[str, str]:
        msg: dict[str, str] = {}
        for line in block.decode("utf-8", "replace").replace("\r\n", "\n").split("\n"):
            k, sep, v = line.partition(":")
            if sep and k not in msg:
                msg[k] = v[1:] if v.startswith(" ") else v
        return msg

    async def _read_block(self) -> dict[str, str]:
        assert self._reader is not None
        while True:
            block = await self._reader.readuntil(b"\r\n\r\n")
            msg = self._parse(block.strip(b"\r\n"))
            if msg:
                return msg

    async def action(self, fields: dict[str, str], complete: str | None = None,
                     timeout: float = 10.0) -> tuple[dict[str, str], list[dict[str, str]]]:
        """Send one action; return its response and, for a list action, the items before ``complete``."""
        if self._writer is None:
            raise AmiError("not connected")
        aid = f"live-{next(self._ids)}"
        self._writer.write(("".join(f"{k}: {v}\r\n" for k, v in {**fields, "ActionID": aid}.items())
                            + "\r\n").encode())

        async def collect() -> tuple[dict[str, str], list[dict[str, str]]]:
            resp: dict[str, str] | None = None
            items: list[dict[str, str]] = []
            while True:
                msg = await self._read_block()
                if msg.get("ActionID") != aid:
                    continue
                if "Response" in msg and resp is None:
                    resp = msg
                    if complete is None or msg["Response"] != "Success":
                        return resp, items
                elif msg.get("Event") == complete:
                    return resp or {}, items
                elif "Event" in msg:
                    items.append(msg)

        try:
            return await asyncio.wait_for(collect(), timeout)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as e:
            await self.close()
            raise AmiError(f"{type(e).__name__}: {e}") from e

    async def core_show_channels(self, timeout: float = 10.0) -> list[dict[str, str]]:
        resp, items = await self.action({"Action": "CoreShowChannels"}, "CoreShowChannelsComplete", timeout)
        if resp.get("Response") != "Success":
            raise AmiError(f"CoreShowChannels: {resp.get('Message')}")
        return [{"channel": it.get("Channel", ""), "uniqueid": it.get("Uniqueid", ""),
                 "linkedid": it.get("Linkedid", ""), "state": it.get("ChannelState", ""),
                 "bridgeid": it.get("BridgeId", "")} for it in items]

    async def close(self) -> None:
        w, self._writer, self._reader = self._writer, None, None
        if w is not None:
            w.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(w.wait_closed(), 2)


async def ami_login_ok(host: str, port: int, user: str, secret: str) -> bool:
    ami = Ami(host, port, user, secret)
    try:
        await ami.connect(timeout=3)
        await ami.action({"Action": "Ping"}, timeout=3)
        return True
    except (TimeoutError, OSError, AmiError, asyncio.IncompleteReadError):
        return False
    finally:
        await ami.close()


# ------------------------------------------------------------------------------------- the collector


def api_hash(user: str = API_USER, secret: str = API_SECRET) -> str:
    return hashlib.sha1((user + secret).encode()).hexdigest()


def refdata() -> dict[str, list[dict[str, Any]]]:
    """Reference data matching the lab (conf/pbx/sip.conf, iax.conf, extensions.conf)."""
    return {
        "servers": [{"id": 1, "hostname": "pbx", "server_ip": "127.0.0.1", "comment": "asterisk-lab pbx"}],
        "users": [
            {"id": 0, "username": API_USER, "usertype": "admin", "first_name": "", "last_name": "",
             "owner_id": 0, "api_secret_key": API_SECRET},
            {"id": 1, "username": "alice", "usertype": "user", "first_name": "Alice", "last_name": "Office",
             "owner_id": 0},
            {"id": 2, "username": "bob", "usertype": "user", "first_name": "Bob", "last_name": "Sales",
             "owner_id": 0},
            {"id": 3, "username": "carol", "usertype": "user", "first_name": "Carol", "last_name": "Warehouse",
             "owner_id": 0},
        ],
        "locations": [{"id": 1, "name": "Global"}],
        "locationrules": [{"id": 1, "location_id": 1, "name": "00 international to E.164", "enabled": 1,
                           "cut": "00", "add": "", "minlen": 5, "maxlen": 20, "lr_type": "dst"}],
        "devices": [
            {"id": 1, "user_id": 1, "device_type": "SIP", "name": "101", "extension": "101", "istrunk": 0,
             "ani": 0, "location_id": 1},
            {"id": 2, "user_id": 2, "device_type": "SIP", "name": "102", "extension": "102", "istrunk": 0,
             "ani": 0, "location_id": 1},
            {"id": 3, "user_id": 3, "device_type": "IAX2", "name": "201", "extension": "201", "istrunk": 0,
             "ani": 0, "location_id": 1},
        ],
        "providers": [{"id": 1, "name": "prov1", "tech": "SIP", "peer": "prov1", "user_id": 0},
                      {"id": 2, "name": "prov2", "tech": "SIP", "peer": "prov2", "user_id": 0}],
        "directions": [{"id": 1, "name": "United Kingdom", "code": "GBR"},
                       {"id": 2, "name": "Germany", "code": "DEU"},
                       {"id": 3, "name": "Lithuania", "code": "LTU"}],
        "destinationgroups": [{"id": 1, "name": "United Kingdom"}, {"id": 2, "name": "Germany"},
                              {"id": 3, "name": "Lithuania"}],
        # dialled 0044… / 0049… / 00370… → localized (the Global rule cuts 00) 44… / 49… / 370…
        "destinations": [
            {"id": 1, "prefix": "44", "direction_code": "GBR", "subcode": "FIX", "name": "United Kingdom",
             "destinationgroup_id": 1},
            {"id": 2, "prefix": "49", "direction_code": "DEU", "subcode": "FIX", "name": "Germany",
             "destinationgroup_id": 2},
            {"id": 3, "prefix": "370", "direction_code": "LTU", "subcode": "FIX", "name": "Lithuania",
             "destinationgroup_id": 3},
        ],
        "dids": [
            {"id": 1, "did": "37052000001", "status": "active", "user_id": 2, "device_id": 2, "provider_id": 1},
            {"id": 2, "did": "37052000002", "status": "active", "user_id": 2, "device_id": 0, "provider_id": 1},
            {"id": 3, "did": "37052000003", "status": "active", "user_id": 3, "device_id": 3, "provider_id": 1},
            {"id": 7, "did": "37052000007", "status": "active", "user_id": 1, "device_id": 0, "provider_id": 1},
        ],
    }


def config_ini(*, api_port: int, db: Path, reconcile_interval: float = 10, ami_port: int | None = None,
               tls_ca: Path | None = None) -> str:
    """The collector's INI for the lab's pbx; ``tls_ca`` → AMI over TLS (``tls = yes``) verified with it."""
    host, port, user, secret = AMI_LOGINS["pbx"]
    port = ami_port or port
    tls = "" if tls_ca is None else f"tls = yes\ntls_ca = {tls_ca}\n"
    return f"""\
[collector]
log_level = INFO
reconcile_interval = {reconcile_interval}
ping_interval = 5
ping_timeout = 5
resync_timeout = 15
reconnect_min = 0.5
reconnect_max = 2
auth_retry = 5
flush_interval = 1
require_all_servers = yes
watchdog = no

[api]
listen = 127.0.0.1
port = {api_port}
enabled = yes
allow_get = no
timezone = UTC

[database]
path = {db}

[server:pbx]
host = {host}
port = {port}
username = {user}
secret = {secret}
server_id = 1
enabled = yes
events = call,system
{tls}"""


@dataclass
class Collector:
    proc: subprocess.Popen[bytes]
    base_url: str
    log: Path
    exit_code: int | None = None  # set when collector_process stopped it (None: had to be killed)

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/billing/api/active_calls_get?u={API_USER}&hash={api_hash()}"

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


COLLECTOR_BIN = Path(sys.executable).with_name("collector")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def collector_process(config_text: str, base: Path, api_port: int, *, ready_path: str = "/readyz",
                      keep_log: Path | None = None) -> Iterator[Collector]:
    """``collector check-config`` then ``collector run -c`` on ``config_text``; yields once ``ready_path``
    answers 200; on exit SIGTERM (killed by PID after 30 s) and the exit code in ``exit_code``."""
    base.mkdir(parents=True, exist_ok=True)
    config = base / "config.ini"
    config.write_text(config_text)
    config.chmod(0o600)
    check = subprocess.run([str(COLLECTOR_BIN), "check-config", "-c", str(config)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, f"check-config: {check.stdout}{check.stderr}"
    log = base / "collector.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(COLLECTOR_BIN), "run", "-c", str(config)], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    col = Collector(proc=proc, base_url=f"http://127.0.0.1:{api_port}", log=log)
    try:
        def ready() -> bool:
            assert proc.poll() is None, f"collector exited {proc.returncode}:\n{col.log_text()[-3000:]}"
            return http_ok(col.base_url + ready_path)

        wait_for(ready, 60, f"the collector's {ready_path}", interval=0.25)
        yield col
    finally:
        rc = proc.poll()
        if rc is None:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
                rc = None
        col.exit_code = rc
        if keep_log is not None:
            shutil.copy(log, keep_log)


# ------------------------------------------------------------------------------------ sampling (0.5 s)


@dataclass
class Tick:
    t: float
    channels: list[dict[str, str]] | None  # CoreShowChannels, None = unavailable
    rows: list[dict[str, str]] | None  # active_calls_get, None = unavailable
    server: dict[str, Any] | None  # /status servers[0]
    error: str = ""


def parse_active_calls(body: bytes) -> list[dict[str, str]]:
    """The <active_call> elements of an active_calls_get answer; an <error> raises ValueError."""
    root = etree.fromstring(body)
    calls = [{child.tag: (child.text or "") for child in el} for el in root.iter("active_call")]
    if not calls:
        err = root.find(".//error")
        if err is not None:
            raise ValueError(f"active_calls_get error: {err.text}")
    return calls


class Sampler:
    """Every ``interval`` s: CoreShowChannels (own AMI session, user truth), active_calls_get and
    /status, all three started in the same tick."""

    def __init__(self, collector: Collector, interval: float = 0.5) -> None:
        self.collector, self.interval = collector, interval
        self.ticks: list[Tick] = []
        self._ami: Ami | None = None
        self._stop = asyncio.Event()

    async def _truth(self) -> list[dict[str, str]] | str:
        try:
            if self._ami is None or not self._ami.connected:
                self._ami = Ami(*TRUTH_LOGIN)
                await self._ami.connect(timeout=2)
            return await self._ami.core_show_channels(timeout=5)
        except (TimeoutError, OSError, AmiError, asyncio.IncompleteReadError) as e:
            if self._ami is not None:
                await self._ami.close()
            self._ami = None
            return f"ami: {type(e).__name__}: {e}"

    async def _api(self, http: aiohttp.ClientSession) -> list[dict[str, str]] | str:
        try:
            async with http.post(self.collector.api_url) as r:
                body = await r.read()
                if r.status != 200:
                    return f"api: HTTP {r.status}"
            return parse_active_calls(body)
        except (TimeoutError, aiohttp.ClientError, ValueError, etree.XMLSyntaxError) as e:
            return f"api: {type(e).__name__}: {e}"

    async def _status(self, http: aiohttp.ClientSession) -> dict[str, Any] | str:
        try:
            async with http.get(self.collector.base_url + "/status") as r:
                data = await r.json()
            server: dict[str, Any] = data["servers"][0]
            return server
        except (TimeoutError, aiohttp.ClientError, ValueError, KeyError, IndexError) as e:
            return f"status: {type(e).__name__}: {e}"

    async def tick(self, http: aiohttp.ClientSession) -> Tick:
        t = time.time()
        truth, rows, server = await asyncio.gather(self._truth(), self._api(http), self._status(http))
        errors = [x for x in (truth, rows, server) if isinstance(x, str)]
        return Tick(t=t, channels=None if isinstance(truth, str) else truth,
                    rows=None if isinstance(rows, str) else rows,
                    server=None if isinstance(server, str) else server, error="; ".join(errors))

    async def run(self, max_seconds: float) -> None:
        """Sample until stop() or ``max_seconds`` (a bound, not a schedule)."""
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            start = next_t = time.monotonic()
            while not self._stop.is_set() and time.monotonic() - start < max_seconds:
                self.ticks.append(await self.tick(http))
                next_t += self.interval
                if next_t < time.monotonic():  # a slow tick: keep the grid, skip what was missed
                    next_t += self.interval * (int((time.monotonic() - next_t) / self.interval) + 1)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), max(0.0, next_t - time.monotonic()))
        if self._ami is not None:
            await self._ami.close()

    def stop(self) -> None:
        self._stop.set()


async def run_process(argv: Sequence[str], timeout: float, log: Path | None = None) -> int:
    """Run a subprocess to completion within ``timeout`` (killed, by its own PID, past it)."""
    out = log.open("ab") if log is not None else None
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=out or subprocess.DEVNULL,
                                                    stderr=subprocess.STDOUT)
        try:
            return await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"{' '.join(argv)} did not finish within {timeout:.0f} s") from None
    finally:
        if out is not None:
            out.close()


# ------------------------------------------------------------------------------ the collector's socket


def collector_ami_sockets(pid: int, host: str = "127.0.0.1", port: int = 5038) -> list[int]:
    """Local ports of the established TCP connections of process ``pid`` to host:port (from ss -tnp)."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", "dst", f"{host}:{port}"],
                         capture_output=True, text=True, timeout=10).stdout
    ports = []
    for line in out.splitlines():
        if f"pid={pid}," not in line:
            continue
        m = re.search(r"\s\S+:(\d+)\s+\S+:" + str(port) + r"\s", " " + line + " ")
        if m:
            ports.append(int(m.group(1)))
    return ports


def kill_ami_socket(lab: Lab, pid: int) -> str:
    """Kill the collector's AMI TCP connection: ss -K on its local port (needs INET_DIAG_DESTROY), else
    ``manager kick session`` of the collector user's sessions through the pbx CLI. Returns how."""
    ports = collector_ami_sockets(pid)
    for lport in ports:
        subprocess.run(["ss", "-K", "-tn", "dst", "127.0.0.1", "dport", "=", "5038", "sport", "=", str(lport)],
                       capture_output=True, text=True, timeout=10)
    if ports and not set(ports) & set(collector_ami_sockets(pid)):
        return f"ss -K sport {ports}"
    # fallback: the AMI server closes the collector user's sessions
    listing = lab.cli("manager show connected")
    fds = [m.group(1) for m in re.finditer(r"^\s*collector\s+\S+\s+\d+\s+\d+\s+(\d+)", listing, re.M)]
    for fd in fds:
        lab.cli(f"manager kick session {fd}")
    return f"manager kick session {fds}"


@dataclass
class Disruption:
    kind: str
    t: float
    how: str = ""
