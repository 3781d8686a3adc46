"""The concurrency history in SQLite (``active_calls_data``, MOR's table name), written off the loop.

``HistoryStore`` owns the table's DDL (created if missing: no migration) and its statements; every write is
an UPSERT keeping the larger value, so a bucket written twice — its first half before a restart, the
second after — keeps the maximum of both. ``HistoryRecorder`` drives the sampler's timer on the loop and
hands closed buckets, then small prune steps, to a worker thread, as ``DurableTable`` does for calls.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from collector.live.history import HistorySampler, Point, Row, bucket_of

__all__ = ["HistoryRecorder", "HistoryStore", "PRUNE_EVERY", "PRUNE_ROWS", "create_history_table"]

log = logging.getLogger(__name__)

_CREATE = ("CREATE TABLE IF NOT EXISTS active_calls_data (\n"
           "   series TEXT NOT NULL,\n   bucket INTEGER NOT NULL,\n   total INTEGER NOT NULL,\n"
           "   answered INTEGER NOT NULL,\n   PRIMARY KEY (series, bucket)\n) WITHOUT ROWID")
_UPSERT = ("INSERT INTO active_calls_data (series, bucket, total, answered) VALUES (?, ?, ?, ?) "
           "ON CONFLICT (series, bucket) DO UPDATE SET total = max(total, excluded.total), "
           "answered = max(answered, excluded.answered)")
_QUERY = ("SELECT bucket, total, answered FROM active_calls_data WHERE series = ? AND bucket >= ? AND bucket < ? "
          "ORDER BY bucket")
_NEXT_SERIES = "SELECT series FROM active_calls_data WHERE series > ? ORDER BY series LIMIT 1"
_PRUNE = ("DELETE FROM active_calls_data WHERE series = ? AND bucket IN "
          "(SELECT bucket FROM active_calls_data WHERE series = ? AND bucket < ? ORDER BY bucket LIMIT ?)")

#: rows one prune step deletes at most (one short transaction; at one step a second that is 18 M rows an
#: hour, far above what expires: 10,000 busy series lose 2.4 M rows an hour)
PRUNE_ROWS = 5_000
_PRUNE_SERIES = 500  # series one step looks at at most (each an index seek)
PRUNE_EVERY = 3600.0  # s between the starts of two prune passes


def create_history_table(conn: sqlite3.Connection) -> None:
    conn.execute(_CREATE)


class HistoryStore:
    """One SQLite connection, used by one worker thread at a time (and the lock)."""

    def __init__(self, path: Path, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")  # the activecalls writer shares the file
        create_history_table(self._conn)
        # reads on their own connection: WAL lets them run beside a write, so a month-long query never
        # holds up the writer (nor the writer a query)
        self._read = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._read_lock = threading.Lock()
        self._cursor = ""  # the prune pass's position: the last series it finished
        self.rows_written = 0
        self.rows_pruned = 0

    def write(self, rows: Sequence[Row]) -> int:
        if not rows:
            return 0
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(_UPSERT, rows)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        self.rows_written += len(rows)
        return len(rows)

    def prune_step(self, cutoff: int, limit: int = PRUNE_ROWS, max_series: int = _PRUNE_SERIES) -> tuple[int, bool]:
        """Delete up to ``limit`` rows older than ``cutoff``, series by series in key order, resuming where
        the last step stopped; returns (rows deleted, whether the pass reached the last series). Every
        lookup is a primary-key seek, so the table needs no index beyond its key."""
        deleted = 0
        with self._lock:
            for _ in range(max_series):
                found = self._conn.execute(_NEXT_SERIES, (self._cursor,)).fetchone()
                if found is None:
                    self._cursor = ""
                    self.rows_pruned += deleted
                    return deleted, True
                series = found[0]
                want = limit - deleted
                n = self._conn.execute(_PRUNE, (series, series, cutoff, want)).rowcount
                deleted += n
                if n == want:  # the series may have more: resume on it next step
                    break
                self._cursor = series
        self.rows_pruned += deleted
        return deleted, False

    def query(self, series: str, start: int, end: float) -> list[Point]:
        """Stored buckets of one series with ``start <= bucket < end``, oldest first."""
        with self._read_lock:
            return [(int(b), int(t), int(a)) for b, t, a in self._read.execute(_QUERY, (series, start, end))]

    def close(self) -> None:
        with self._read_lock:
            self._read.close()
        with self._lock:
            self._conn.close()


class HistoryRecorder:
    """The sampler's timer and writer: on every tick close what the clock has passed, write it in a worker
    thread (failed rows go back to the sampler), and step the current prune pass."""

    def __init__(self, sampler: HistorySampler, store: HistoryStore, *, retention_days: int,
                 clock: Callable[[], float]) -> None:
        self.sampler = sampler
        self.store = store
        self.retention = retention_days * 86_400
        self._clock = clock
        self._inflight: list[Row] = []  # taken from the sampler, not yet committed: still answered by query
        self._pruning = True  # a pass starts with the daemon
        self._next_pass = 0.0
        self.write_failures = 0
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="history-read")

    @property
    def unwritten(self) -> int:
        """Closed rows not yet committed: pending in the sampler or in the write now running."""
        return self.sampler.pending_rows + len(self._inflight)

    def cutoff(self, now: float) -> int:
        return bucket_of(now) - self.retention

    async def flush(self) -> int:
        """One tick; returns the rows written."""
        self.sampler.tick()
        now = self._clock()
        if not self._pruning and now >= self._next_pass:
            self._pruning = True
        rows = self.sampler.take_closed()
        cutoff = self.cutoff(now) if self._pruning else None
        if not rows and cutoff is None:
            return 0
        self._inflight = rows
        try:
            written, done = await asyncio.to_thread(self._write, rows, cutoff)
        except Exception:
            self.write_failures += 1
            self.sampler.give_back(rows)
            raise
        finally:
            self._inflight = []
        if done:
            self._pruning = False
            self._next_pass = now + PRUNE_EVERY
        return written

    def _write(self, rows: Sequence[Row], cutoff: int | None) -> tuple[int, bool]:
        written = self.store.write(rows)
        done = False
        if cutoff is not None:
            _n, done = self.store.prune_step(cutoff)
        return written, done

    def flush_sync(self) -> int:
        """At shutdown: everything closed plus the open bucket so far (merged by maximum after a restart)."""
        self.sampler.tick()
        return self.store.write(self.sampler.take_closed() + self.sampler.open_rows())

    async def run(self, interval: float) -> None:
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
                failing = False
            except Exception:
                if not failing:  # once per failure streak; the rows wait in the sampler (bounded)
                    log.exception("active_calls_data write failed; will retry")
                failing = True

    async def query(self, series: str, start: int, end: float) -> list[Point]:
        """Stored buckets merged with what memory still holds (unwritten and open buckets). Memory is read
        on the loop (a few buckets); the store is read and merged in the recorder's one reader thread, so
        a month of points (178,560) costs the loop nothing and queries never crowd the default executor."""
        start = bucket_of(start)
        mem = self.sampler.points(series, start, end)
        for s, b, t, a in self._inflight:
            if s == series and start <= b < end:
                old = mem.get(b)
                mem[b] = (t, a) if old is None else (max(old[0], t), max(old[1], a))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, self._read_merged, series, start, end, mem)

    def _read_merged(self, series: str, start: int, end: float, mem: dict[int, tuple[int, int]]) -> list[Point]:
        merged = {b: (t, a) for b, t, a in self.store.query(series, start, end)}
        for b, (t, a) in mem.items():
            old = merged.get(b)
            merged[b] = (t, a) if old is None else (max(old[0], t), max(old[1], a))
        return [(b, t, a) for b, (t, a) in sorted(merged.items())]

    def close(self) -> None:
        """The reader thread (after the queries in flight); the store is closed by its owner."""
        self._reader.shutdown(wait=True)

