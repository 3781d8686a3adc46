"""AMI over TLS against the real Asterisk 20.

The lab fixture starts the pbx with ``tlsenable = yes`` on 127.0.0.1:5039 and a certificate for
127.0.0.1 signed by a throwaway CA (``lab_pki``, openssl CLI). The collector (``collector run -c``,
``port = 5039``, ``tls = yes``, ``tls_ca``) must connect, log in, resync and track ``drive.py smoke``
exactly as over plain TCP; given a CA that did not sign the certificate it must refuse the server:
``certificate verify failed`` in /status ``last_error`` and in its log, and no login.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.tls_helpers import Pki, make_pki
from tests_live.lablib import (
    PBX_TLS_PORT,
    Collector,
    Lab,
    collector_ami_sockets,
    collector_process,
    config_ini,
    free_port,
    http_json,
    http_ok,
    wait_for,
)
from tests_live.test_live_tracking import run_smoke, write_figures

VERIFY_FAILED = "certificate verify failed"


def server_status(col: Collector) -> dict[str, Any]:
    server: dict[str, Any] = http_json(col.base_url + "/status")["servers"][0]
    return server


def test_tls_login_resync_and_smoke(lab: Lab, lab_pki: Pki, refdata_db: Path, artifacts: Path,
                                    tmp_path: Path) -> None:
    """Verified TLS (tls_ca = the lab's CA): logged in on 5039, resynced, smoke calls tracked as over TCP."""
    port = free_port()
    ini = config_ini(api_port=port, db=refdata_db, ami_port=PBX_TLS_PORT, tls_ca=lab_pki.ca)
    started = time.monotonic()
    with collector_process(ini, tmp_path / "collector", port, keep_log=artifacts / "tls-collector.log") as col:
        ready_s = round(time.monotonic() - started, 2)
        st = wait_for(lambda: (s := server_status(col)).get("last_resync_at") and s, 30, "a resync after login")
        assert st["connected"] and st["tls"] and st["port"] == PBX_TLS_PORT, st
        assert st["last_resync_at"] >= st["since"], f"no resync after the TLS login: {st}"
        assert col.proc.pid is not None
        socks = collector_ami_sockets(col.proc.pid, port=PBX_TLS_PORT)
        assert socks, "no established connection of the collector to 127.0.0.1:5039"
        log = col.log_text()
        assert f"port={PBX_TLS_PORT} tls=yes" in log and "ami logged in server=pbx" in log, log[-3000:]
        fig = run_smoke(lab, col, artifacts, tmp_path, name="tls-smoke")
        st_end = server_status(col)
    assert col.exit_code == 0, f"collector did not exit 0 on SIGTERM (rc={col.exit_code}):\n{col.log_text()[-3000:]}"
    assert st_end["reconnects"] == 0 and st_end["connected"], f"the TLS session dropped: {st_end}"
    write_figures(artifacts, "tls", {
        "ready_seconds": ready_s, "resync": st["last_resync_result"], "resync_seconds": st["last_resync_seconds"],
        "calls_seen": fig.calls_seen, "api_rows_seen": fig.api_rows_seen, "agreement_pct": fig.agreement_pct,
        "judged_instants": fig.judged_instants, "reconnects": st_end["reconnects"], "events": st_end["events"]})


def test_tls_wrong_ca_is_refused(lab: Lab, refdata_db: Path, artifacts: Path, tmp_path: Path) -> None:
    """tls_ca = a CA that did not sign the pbx's certificate: certificate verify failed, never logged in."""
    assert lab.pid("pbx") is not None, "the lab's pbx is not running"
    wrong: Pki = make_pki(tmp_path / "wrong", "wrongca")
    port = free_port()
    ini = config_ini(api_port=port, db=refdata_db, ami_port=PBX_TLS_PORT, tls_ca=wrong.ca)
    with collector_process(ini, tmp_path / "collector", port, ready_path="/healthz",
                           keep_log=artifacts / "tls-wrong-ca-collector.log") as col:
        st = wait_for(lambda: VERIFY_FAILED in (s := server_status(col)).get("last_error", "") and s, 30,
                      f"/status last_error to say {VERIFY_FAILED!r}")
        time.sleep(3)  # a few more attempts (reconnect_max = 2 s): none of them may get further
        st = server_status(col)
        ready = http_ok(col.base_url + "/readyz")
        log = col.log_text()
    assert col.exit_code == 0, f"collector did not exit 0 on SIGTERM (rc={col.exit_code}):\n{log[-3000:]}"
    assert VERIFY_FAILED in st["last_error"] and not st["connected"] and st["since"] is None, st
    assert not ready, "/readyz is 200 although the only AMI server refused TLS"
    assert VERIFY_FAILED in log and "ami connect failed server=pbx" in log, log[-3000:]
    assert "ami logged in" not in log and "ami connected" not in log, log[-3000:]
    write_figures(artifacts, "tls-wrong-ca", {"last_error": st["last_error"], "reconnects": st["reconnects"],
                                              "connect_failures_logged": log.count("ami connect failed")})
