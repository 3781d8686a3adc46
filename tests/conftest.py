"""Shared pytest fixtures.

* ``traces_dir``: the bundled real Asterisk traces (``tests/traces``; never ``/work/shared`` at test time).
* ``replay_server``: factory starting a :class:`collector.tools.replay.ReplayServer` on 127.0.0.1 with an ephemeral
  port, closed at teardown. ``await replay_server("basic_outbound", fast=True)`` → started server (``.port``);
  arguments are scenario names (all their session files, in order) or paths; ``host``/``port`` go to
  ReplayServer, the other keywords to its ReplayOptions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from collector.tools.replay import ReplayOptions, ReplayServer

TRACES_DIR = Path(__file__).parent / "traces"

ReplayFactory = Callable[..., Awaitable[ReplayServer]]


def scenario_files(name: str, root: Path = TRACES_DIR) -> list[Path]:
    """Session files of a scenario in replay order: ``NAME.ami[.gz]`` then ``NAME.part2.ami[.gz]``."""
    files = [root / f"{name}{part}{ext}" for part in ("", ".part2") for ext in (".ami", ".ami.gz")]
    found = [f for f in files if f.exists()]
    if not found:
        raise FileNotFoundError(f"no trace named {name!r} in {root}")
    return found


@pytest.fixture
def traces_dir() -> Path:
    return TRACES_DIR


@pytest.fixture
async def replay_server() -> AsyncIterator[ReplayFactory]:
    servers: list[ReplayServer] = []

    async def make(*traces: str | Path, **kwargs: Any) -> ReplayServer:
        paths: list[Path] = []
        for t in traces:
            p = Path(t)
            paths.extend([p] if p.suffix in (".ami", ".gz") or p.exists() else scenario_files(str(t)))
        host = kwargs.pop("host", "127.0.0.1")
        port = kwargs.pop("port", 0)
        tls = kwargs.pop("ssl", None)
        server = ReplayServer(paths, host=host, port=port, options=ReplayOptions(**kwargs), ssl=tls)
        servers.append(server)
        await server.start()
        return server

    yield make
    for server in servers:
        await server.close()


# --- a private MariaDB for the MOR MySQL sync tests (session scope; see tests/mariadb_support.py)
from tests.mariadb_support import mariadb, mor_db  # noqa: E402,F401
