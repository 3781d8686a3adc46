"""A private MariaDB server for the tests (and the benchmark): a fresh data directory, its own socket
and 127.0.0.1 port, started as the current user and stopped at the end.

Why a real server: the sync reads MOR's schema through ``information_schema`` and a consistent-snapshot
transaction, with a SELECT-only user; a fake would test our assumptions, not MariaDB's answers.

``mariadb`` (session fixture) fails loudly when ``mariadbd`` is missing, unless ``COLLECTOR_SKIP_MYSQL=1``
(then the tests that use it are skipped).
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from collector.refdata.mor_mysql import probe_unix_socket
from tests.mor_schema import MOR_TABLES, create_schema, fill_from_refdata

__all__ = ["MariaDB", "MorDb", "mariadb", "mor_db", "find_binary"]

READER_USER = "collector"
READER_PASSWORD = "r3ad-0nly-Pa55"  # the tests look for it in logs and /status: it must never appear
_COUNTER = itertools.count(1)


def find_binary(name: str) -> str | None:
    return shutil.which(name) or next((str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name)
                                       if p.exists()), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MariaDB:
    """One mariadbd process on a private data directory; ``stop``/``start`` keep data, port and socket."""

    root: Path
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socket(self) -> Path:
        return self.root / "sock"

    def install(self) -> None:
        cmd = [find_binary("mariadb-install-db") or "mariadb-install-db", "--no-defaults",
               f"--datadir={self.datadir}", "--auth-root-authentication-method=normal",
               "--skip-test-db", "--skip-name-resolve", *self._user()]
        out = subprocess.run(cmd, capture_output=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {out.stderr.decode(errors='replace')[-2000:]}")

    def _user(self) -> list[str]:
        return ["--user=root"] if os.geteuid() == 0 else []

    def start(self, timeout: float = 30.0) -> None:
        binary = find_binary("mariadbd")
        assert binary is not None
        cmd = [binary, "--no-defaults", f"--datadir={self.datadir}", f"--socket={self.socket}",
               f"--port={self.port}", "--bind-address=127.0.0.1", f"--pid-file={self.root / 'pid'}",
               f"--log-error={self.root / 'error.log'}", "--skip-name-resolve", "--skip-log-bin",
               "--innodb-buffer-pool-size=128M", "--innodb-log-file-size=64M", "--max-connections=50",
               "--character-set-server=utf8mb4", "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
               "--innodb-flush-method=nosync", "--sync-frm=0", *self._user()]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:  # poll the socket until the server answers a handshake (no blind sleep)
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited with {self.proc.returncode}: {self._log_tail()}")
            try:
                probe_unix_socket(str(self.socket), 2.0)  # before PyMySQL, which leaks a failed socket
                self.admin().close()
                return
            except Exception as exc:  # noqa: BLE001 - not up yet: any connect error means "poll again"
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"mariadbd did not accept connections in {timeout}s: "
                                       f"{self._log_tail()}") from exc
                time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            return (self.root / "error.log").read_text(errors="replace")[-1500:]
        except OSError:
            return "(no error log)"

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def admin(self, database: str | None = None) -> Any:
        import pymysql

        return pymysql.connect(unix_socket=str(self.socket), user="root", password="", database=database,
                               autocommit=True, connect_timeout=2, charset="utf8mb4")

    def execute(self, sql: str | Sequence[str], database: str | None = None) -> None:
        conn = self.admin(database)
        try:
            with conn.cursor() as cur:
                for stmt in ([sql] if isinstance(sql, str) else sql):
                    cur.execute(stmt)
        finally:
            conn.close()


@dataclass
class MorDb:
    """A MOR-shaped database on the server, with a SELECT-only reader user."""

    server: MariaDB
    name: str

    def ini(self, db_path: Path, *, via: str = "tcp", refresh: float = 300.0, extra: str = "") -> str:
        where = (f"mysql_socket = {self.server.socket}" if via == "socket"
                 else f"mysql_host = 127.0.0.1\nmysql_port = {self.server.port}")
        return (f"[database]\npath = {db_path}\n[refdata]\nsource = mysql\n{where}\n"
                f"mysql_user = {READER_USER}\nmysql_password = {READER_PASSWORD}\n"
                f"mysql_database = {self.name}\nrefresh_interval = {refresh}\n{extra}\n")

    def execute(self, *sql: str) -> None:
        self.server.execute(list(sql), self.name)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        conn = self.server.admin(self.name)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        finally:
            conn.close()


def grant_reader(server: MariaDB, database: str, tables: Sequence[str] = MOR_TABLES) -> None:
    """The README's minimal grant: SELECT on the tables the sync reads, nothing else."""
    stmts = []
    for host in ("localhost", "127.0.0.1"):
        stmts.append(f"CREATE USER IF NOT EXISTS '{READER_USER}'@'{host}' IDENTIFIED BY '{READER_PASSWORD}'")
        stmts += [f"GRANT SELECT ON `{database}`.`{t}` TO '{READER_USER}'@'{host}'" for t in tables]
    server.execute(stmts)


def new_mor_db(server: MariaDB, data: dict[str, list[dict[str, Any]]] | None = None) -> MorDb:
    name = f"mor_{next(_COUNTER)}"
    server.execute([f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"])
    create_schema(server, name)
    if data is not None:
        fill_from_refdata(server, name, data)
    grant_reader(server, name)
    return MorDb(server, name)


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDB]:
    if find_binary("mariadbd") is None or find_binary("mariadb-install-db") is None:
        if os.environ.get("COLLECTOR_SKIP_MYSQL") == "1":
            pytest.skip("mariadbd not installed and COLLECTOR_SKIP_MYSQL=1")
        pytest.fail("mariadbd / mariadb-install-db not found: install mariadb-server "
                    "(apt-get install -y mariadb-server) or set COLLECTOR_SKIP_MYSQL=1 to skip these tests")
    root = Path(tempfile.mkdtemp(prefix="collector-mariadb-"))
    server = MariaDB(root)
    try:
        server.install()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def mor_db(mariadb: MariaDB) -> MorDb:
    """A fresh MOR database filled with the bundled demo data (``collector/data/demo.json``)."""
    from collector.refdata.importer import demo_data

    if not mariadb.running:  # a test that stopped it failed before restarting it
        mariadb.start()
    return new_mor_db(mariadb, demo_data())
