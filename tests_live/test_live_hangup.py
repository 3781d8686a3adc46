"""Hang-ups through the v2 REST API against the real Asterisk 20 of the shared lab (issue #16's live bar).

Calls are originated on the lab's phones (answered by the carrier after 1 s, then kept up for 30 min), the
collector hangs chosen ones up (``DELETE /billing/api/v2/active_calls/{id}`` with a JWT from the login), and
CoreShowChannels on the pbx — an AMI session of our own, not the collector's — proves that exactly those calls
are gone and the others untouched. The time from sending the DELETE to its 200 (which the collector answers
only after it has seen the call's channels hang up) is measured over every single hang-up; the figures go to
``test-artifacts/live/hangup.json`` and the README quotes them.

The lab's AMI user keeps its stock rights (``write = system``): Asterisk runs an action when ``write=`` holds
any one of its classes, and Hangup is ``system`` or ``call``, so this also proves the README's manager.conf
line.
"""

from __future__ import annotations

import asyncio
import base64
import random
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests_live.lablib import (
    AMI_LOGINS,
    COLLECTOR_BIN,
    TRUTH_LOGIN,
    Ami,
    Collector,
    Lab,
    collector_process,
    config_ini,
    free_port,
    run_process,
)
from tests_live.test_live_tracking import write_figures

ROUNDS = 3
CALLS_PER_ROUND = 40
KEPT_PER_ROUND = 4  # left up by the single DELETEs, checked untouched, then ended by one bulk DELETE
#: carrier: ring 1 s, answer, stay until the caller hangs up (conf/carrier/extensions.conf 004477009ORTT)
LONG_CALL = "0044770090199"
CALLERS = ("101", "102")
PASSWORD = "live-hangup-password"


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: a reported p99 is a latency that happened)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@pytest.fixture(scope="module")
def hangup_collector(lab: Lab, refdata_db: Path, tmp_path_factory: pytest.TempPathFactory,
                     artifacts: Path) -> Iterator[Collector]:
    """A collector of its own with ``[hangup] enabled`` and a v2 password for the admin."""
    base = tmp_path_factory.mktemp("hangup-collector")
    db = base / "collector.db"
    db.write_bytes(refdata_db.read_bytes())
    port = free_port()
    text = config_ini(api_port=port, db=db) + "\n[hangup]\nenabled = yes\nconfirm_timeout = 5\n"
    config = base / "config.ini"
    config.write_text(text)
    setpw = subprocess.run([str(COLLECTOR_BIN), "db", "set-password", "admin", "-c", str(config)],
                           input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
    assert setpw.returncode == 0, f"collector db set-password: {setpw.stdout}{setpw.stderr}"
    assert PASSWORD not in setpw.stdout + setpw.stderr
    with collector_process(text, base / "run", port, keep_log=artifacts / "hangup-collector.log") as col:
        yield col
    assert col.exit_code == 0, f"collector did not exit 0 on SIGTERM (rc={col.exit_code})"
    assert PASSWORD not in col.log_text(), "the password reached the collector's log"


async def login(http: aiohttp.ClientSession, base: str) -> str:
    basic = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    async with http.post(base + "/billing/api/v2/authentication/login",
                         headers={"Authorization": f"Basic {basic}"}) as resp:
        body = await resp.json()
        assert resp.status == 200, f"login: HTTP {resp.status} {body}"
    assert body["may_hang_up"] is True, body
    token: str = body["token"]
    return token


async def api_rows(http: aiohttp.ClientSession, col: Collector) -> list[dict[str, Any]]:
    async with http.post(col.api_url + "&format=json") as resp:
        assert resp.status == 200
        doc = await resp.json()
    rows: list[dict[str, Any]] = doc.get("active_calls", [])
    return rows


async def until(cond: Any, timeout: float, what: str) -> Any:
    """Await an async condition (bounded); returns its last truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await cond()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.2)


async def originate(phones: Ami, n: int) -> None:
    for i in range(n):
        src = CALLERS[i % len(CALLERS)]
        resp, _ = await phones.action({
            "Action": "Originate", "Channel": f"SIP/pbx{src}/{LONG_CALL}", "Context": "caller", "Exten": "s",
            "Priority": "1", "Async": "true", "Timeout": "30000", "Variable": "TALK=1800"})
        assert resp.get("Response") == "Success", f"Originate: {resp}"


def test_hang_up_exactly_the_chosen_calls(lab: Lab, hangup_collector: Collector, artifacts: Path) -> None:
    col = hangup_collector
    rng = random.Random(16)
    latencies: list[float] = []
    rounds: list[dict[str, Any]] = []

    async def scenario() -> None:
        rc = await run_process(lab.drive("hangup-all"), timeout=60, log=artifacts / "hangup-drive.log")
        assert rc == 0
        truth, phones = Ami(*TRUTH_LOGIN), Ami(*AMI_LOGINS["phones"])
        await truth.connect()
        await phones.connect()
        timeout = aiohttp.ClientTimeout(total=30)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http:
                await until(lambda: _idle(truth, http, col), 30, "an idle lab (no channel, no API row)")
                headers = {"Authorization": f"Bearer {await login(http, col.base_url)}"}
                for r in range(ROUNDS):
                    rounds.append(await _round(r, truth, phones, http, headers))
        finally:
            await truth.close()
            await phones.close()

    async def _round(r: int, truth: Ami, phones: Ami, http: aiohttp.ClientSession,
                     headers: dict[str, str]) -> dict[str, Any]:
        await originate(phones, CALLS_PER_ROUND)

        async def all_answered() -> list[dict[str, Any]] | None:
            rows = await api_rows(http, col)
            answered = [row for row in rows if row["status"] == "Answered"]
            return answered if len(answered) == CALLS_PER_ROUND else None

        rows = await until(all_answered, 60, f"round {r}: {CALLS_PER_ROUND} answered calls in the API")
        rng.shuffle(rows)
        chosen, kept = rows[KEPT_PER_ROUND:], rows[:KEPT_PER_ROUND]
        before = await truth.core_show_channels()
        linked = {ch["uniqueid"]: ch["linkedid"] for ch in before}
        for row in chosen:
            t0 = time.perf_counter()
            async with http.delete(f"{col.base_url}/billing/api/v2/active_calls/{row['id']}",
                                   headers=headers) as resp:
                body = await resp.json()
            latencies.append(time.perf_counter() - t0)
            assert resp.status == 200 and body["status"] == "hung_up" and body["hung_up_call"] == row["id"], \
                f"DELETE {row['id']}: HTTP {resp.status} {body}"
        after = await truth.core_show_channels()
        gone = {linked[row["uniqueid"]] for row in chosen}
        left = [ch for ch in after if ch["linkedid"] in gone]
        assert not left, f"round {r}: channels of hung-up calls still up: {left[:5]}"
        kept_links = {linked[row["uniqueid"]] for row in kept}
        kept_before = sorted(ch["uniqueid"] for ch in before if ch["linkedid"] in kept_links)
        kept_after = sorted(ch["uniqueid"] for ch in after if ch["linkedid"] in kept_links)
        assert kept_after == kept_before and len(kept_before) >= 2 * KEPT_PER_ROUND, \
            f"round {r}: the calls not hung up were touched: {kept_before} → {kept_after}"
        assert sorted(x["id"] for x in await api_rows(http, col)) == sorted(x["id"] for x in kept)
        # the rest in one bulk DELETE: a dry run names exactly them, the real one ends exactly them
        async with http.delete(f"{col.base_url}/billing/api/v2/active_calls?dry_run=1", headers=headers) as resp:
            dry = await resp.json()
        assert resp.status == 200 and sorted(dry["would_hang_up"]) == sorted(x["id"] for x in kept), dry
        async with http.delete(f"{col.base_url}/billing/api/v2/active_calls", headers=headers) as resp:
            bulk = await resp.json()
        assert resp.status == 200 and sorted(bulk["hung_up_calls"]) == sorted(x["id"] for x in kept), bulk
        await until(lambda: _idle(truth, http, col), 15, f"round {r}: no channel left after the bulk DELETE")
        return {"round": r, "single": len(chosen), "bulk": len(kept), "channels_before": len(before)}

    asyncio.run(scenario())
    figures = {
        "hang_ups_single": len(latencies), "hang_ups_bulk": sum(r["bulk"] for r in rounds), "rounds": rounds,
        "delete_to_200_ms": {"p50": round(percentile(latencies, 50) * 1000, 1),
                             "p99": round(percentile(latencies, 99) * 1000, 1),
                             "max": round(max(latencies) * 1000, 1),
                             "mean": round(statistics.fmean(latencies) * 1000, 1)},
    }
    write_figures(artifacts, "hangup", figures)
    assert len(latencies) >= 100


async def _idle(truth: Ami, http: aiohttp.ClientSession, col: Collector) -> bool:
    return not await truth.core_show_channels() and not await api_rows(http, col)
