"""Session fixtures of the live suite: the Asterisk lab (private run dir, copied conf, AMI over TLS on the
pbx's 127.0.0.1:5039 with a throwaway CA), reference data, and ``collector run`` as a subprocess. Only the
collector's CLI, INI, HTTP API and /status are used."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tls_helpers import Pki, make_pki
from tests_live.lablib import (
    AMI_LOGINS,
    COLLECTOR_BIN,
    INSTANCES,
    REPO,
    Collector,
    Lab,
    ami_login_ok,
    collector_process,
    config_ini,
    enable_manager_tls,
    find_lab,
    free_port,
    lab_ports_busy,
    prepare_lab,
    refdata,
    wait_for,
)

ARTIFACTS = REPO / "test-artifacts" / "live"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def lab_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The CA and server certificate (SAN IP:127.0.0.1) of the pbx's AMI TLS listener (openssl CLI)."""
    return make_pki(tmp_path_factory.mktemp("lab-pki"), "labca")


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory, artifacts: Path, lab_pki: Pki) -> Iterator[Lab]:
    """The four lab instances, started from a copy of conf/ in a private ASTLAB_DIR; stopped (by PID).
    The copy's pbx manager.conf also listens for AMI over TLS on 127.0.0.1:5039 (lab_pki's certificate)."""
    home = find_lab()  # missing lab → AssertionError: the suite fails loudly
    lab = prepare_lab(home, tmp_path_factory.mktemp("astlab"),
                      customise=lambda conf: enable_manager_tls(conf, lab_pki.cert, lab_pki.key))
    # the lab binds fixed loopback ports: wait (bounded) for another engineer's lab to go away
    wait_for(lambda: not lab_ports_busy(), 180, "the lab's AMI ports (127.0.0.1-4:5038) to be free "
             f"(busy: {lab_ports_busy()}) — is another lab running?", interval=2)
    inst = lab.script("install.sh", timeout=600)
    assert inst.returncode == 0, f"install.sh failed ({inst.returncode}):\n{inst.stdout}{inst.stderr}"
    try:
        started = lab.script("start.sh", timeout=240)
        assert started.returncode == 0, f"start.sh failed ({started.returncode}):\n{started.stdout}{started.stderr}"
        for name in INSTANCES:
            login = AMI_LOGINS[name]
            wait_for(lambda login=login: asyncio.run(ami_login_ok(*login)), 60,  # type: ignore[misc]
                     f"an AMI login on {name} ({login[0]}:{login[1]})", interval=0.5)
        yield lab
    finally:
        pids = {n: lab.pid(n) for n in INSTANCES}
        stopped = lab.script("stop.sh", timeout=120)
        shutil.copy(lab.log, artifacts / "lab.log")
        for name in INSTANCES:
            with_log = lab.run_dir / name / "log" / "messages.log"
            if with_log.exists():
                shutil.copy(with_log, artifacts / f"asterisk-{name}.log")
        alive = [f"{n}={p}" for n, p in pids.items() if p is not None and Path(f"/proc/{p}").exists()]
        assert stopped.returncode == 0 and not alive, f"stop.sh left {alive}:\n{stopped.stdout}{stopped.stderr}"


@pytest.fixture(scope="session")
def refdata_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database with the lab's users, devices, providers, DIDs and destinations."""
    base = tmp_path_factory.mktemp("refdata")
    db, data = base / "collector.db", base / "lab.json"
    data.write_text(json.dumps(refdata(), indent=1))
    for args in (["db", "init", "--db", str(db)], ["db", "import", str(data), "--db", str(db)]):
        proc = subprocess.run([str(COLLECTOR_BIN), *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"collector {' '.join(args)}: {proc.returncode}\n{proc.stdout}{proc.stderr}"
    return db


@pytest.fixture(scope="session")
def collector(lab: Lab, refdata_db: Path, tmp_path_factory: pytest.TempPathFactory,
              artifacts: Path) -> Iterator[Collector]:
    """``collector run -c`` against the lab's pbx; ready when /readyz says so; SIGTERM → exit 0."""
    port = free_port()
    with collector_process(config_ini(api_port=port, db=refdata_db), tmp_path_factory.mktemp("collector"), port,
                           keep_log=artifacts / "collector.log") as col:
        yield col
    assert col.exit_code == 0, f"collector did not exit 0 on SIGTERM (rc={col.exit_code}):\n{col.log_text()[-3000:]}"
