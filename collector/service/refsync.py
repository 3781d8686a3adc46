"""The daemon's side of the MOR MySQL sync (``[refdata] source = mysql``): when to sync, what happened.

Why a worker process (one, kept, started with ``spawn``): PyMySQL is blocking and pure Python, and
reading 100,000 destinations plus the importer's checks take seconds of CPU. On the event loop that
would stall AMI reading long enough for Asterisk to drop us (``writetimeout``); even in a worker thread
it competes for the GIL (stalls of 60-700 ms measured on a loaded 2-core machine, bench/mysql_sync.py).
In its own process it only shares the SQLite file; the report that comes back is small.

A failed sync changes nothing: the SQLite keeps the last good data, the index in memory keeps serving,
and ``/readyz`` stays ready once data exists — only ``/status`` and the metrics say the sync is failing.
Never shows credentials: ``status()`` names host, port and database only.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from collector.refdata.index import RefIndex
from collector.refdata.mor_sync import SyncReport, SyncState, TableChanges, log_skipped, sync_once
from collector.refdata.settings import RefdataSettings

__all__ = ["RefdataSync", "refdata_metrics", "refdata_status"]

log = logging.getLogger(__name__)

#: After a failed sync the next try comes sooner than ``refresh_interval`` (MySQL is often back quickly).
RETRY_AFTER_FAILURE = 30.0


class RefdataSync:
    """Runs ``sync_once`` off the loop, one at a time, and keeps the outcome for /status and /metrics."""

    def __init__(self, settings: RefdataSettings, db_path: Path) -> None:
        self.settings = settings
        self.db_path = db_path
        self.lock = asyncio.Lock()
        self.last: SyncReport | None = None
        self.last_ok: SyncReport | None = None
        self.syncs = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.state: SyncState | None = None  # fingerprints of the last good sync: unchanged tables not re-read
        self.tables: dict[str, TableChanges] = {}  # per table: the last sync's changes, current totals
        self._pool: ProcessPoolExecutor | None = None

    async def _run(self) -> SyncReport:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, sync_once, self.settings, self.db_path, self.state, False)
        except BrokenProcessPool:  # the worker died (OOM killer …): a failed sync, a new worker next time
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            report = SyncReport(source=self.settings.describe(), started_at=time.time(), finished_at=time.time(),
                                error="the sync worker process died")
            return report

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    async def sync(self) -> SyncReport:
        async with self.lock:
            report = await self._run()
        log_skipped(report)
        self.syncs += 1
        self.last = report
        if report.ok:
            self.last_ok = report
            self.state = report.state
            self.consecutive_failures = 0
            self.tables = {t: report.tables.get(t) or TableChanges(total=c.total) for t, c in self.tables.items()}
            self.tables.update(report.tables)
            log.info("refdata sync ok source=%s %s", self.where(), report.summary())
        else:
            self.failures += 1
            self.consecutive_failures += 1
            log.error("refdata sync failed source=%s keeping the last good data: %s", self.where(), report.error)
        return report

    def next_delay(self) -> float:
        interval = self.settings.refresh_interval
        return min(interval, RETRY_AFTER_FAILURE) if self.consecutive_failures else interval

    def where(self) -> str:
        s = self.settings
        return f"{s.mysql_socket or f'{s.mysql_host}:{s.mysql_port}'}/{s.mysql_database}"

    def not_ready(self, refs: RefIndex | None) -> str | None:
        """Unready only while no data exists at all (never synced and an empty cache); a MySQL that is
        down once data is loaded must not take the collector out of service."""
        if self.last_ok is None and (refs is None or not refs.data.users):
            return "reference data: no successful MOR sync yet and the local cache is empty"
        return None

    def status(self) -> dict[str, Any]:
        last = self.last
        return {
            "source": "mysql", "server": self.where(),
            "last_sync": None if last is None else round(last.finished_at, 3),
            "result": None if last is None else ("ok" if last.ok else "failed"),
            "error": None if last is None or last.ok else last.error,
            "last_ok_sync": None if self.last_ok is None else round(self.last_ok.finished_at, 3),
            "seconds": None if last is None else round(last.seconds, 3),
            "counts": {t: {"added": c.added, "changed": c.changed, "removed": c.removed, "total": c.total}
                       for t, c in self.tables.items()},
            "skipped": 0 if self.last_ok is None else len(self.last_ok.skipped),
            "syncs": self.syncs, "failures": self.failures,
            "refresh_interval": self.settings.refresh_interval,
        }


def refdata_status(refsync: RefdataSync | None, refs: RefIndex | None) -> dict[str, Any]:
    """``/status``'s ``refdata`` part, for either source."""
    if refsync is not None:
        return refsync.status()
    rows = {} if refs is None else {t: len(getattr(refs.data, t)) for t in refs.data.__slots__}
    return {"source": "file", "last_sync": None, "result": None, "counts": {t: {"total": n} for t, n in rows.items()}}


def refdata_metrics(refsync: RefdataSync | None) -> Iterator[Any]:
    """``collector_refdata_*``: counters from the sync's own tallies, the last success as a timestamp."""
    yield CounterMetricFamily("collector_refdata_syncs", "MOR MySQL syncs run",
                              value=0 if refsync is None else refsync.syncs)
    yield CounterMetricFamily("collector_refdata_sync_failures", "MOR MySQL syncs that failed (last good data kept)",
                              value=0 if refsync is None else refsync.failures)
    ts = GaugeMetricFamily("collector_refdata_last_sync_timestamp",
                           "Unix time of the last successful MOR MySQL sync (0: none yet)")
    ts.add_metric([], 0.0 if refsync is None or refsync.last_ok is None else refsync.last_ok.finished_at)
    yield ts
    dur = GaugeMetricFamily("collector_refdata_last_sync_duration_seconds", "Duration of the last MOR MySQL sync")
    dur.add_metric([], 0.0 if refsync is None or refsync.last is None else refsync.last.seconds)
    yield dur
    skipped = GaugeMetricFamily("collector_refdata_skipped_rows",
                                "MOR rows left out by the last successful sync (they break an import rule)")
    skipped.add_metric([], 0 if refsync is None or refsync.last_ok is None else len(refsync.last_ok.skipped))
    yield skipped
