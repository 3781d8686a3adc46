"""One read-only sync: MOR's MySQL → the validated importer (replace mode) → the local SQLite cache.

Why through ``import_data``: the importer's rules are the only definition of "data enrichment can
trust". A MOR row that breaks one (a device of an unknown user, a duplicate prefix …) is not a reason
to refuse the whole sync: the importer names the table and row, we leave that row out, count it, and
try again; nothing is written until the whole set passes. Blocking I/O and CPU only: the daemon runs
``sync_once`` in a worker thread.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from operator import itemgetter
from pathlib import Path
from typing import Any

from collector.refdata.errors import ImportValidationError, RefDataError
from collector.refdata.importer import import_data
from collector.refdata.mor_mysql import (
    ApiSwitches,
    Fingerprint,
    MorSnapshot,
    MorSyncError,
    Skipped,
    connect,
    read_mor,
)
from collector.refdata.settings import RefdataSettings
from collector.refdata.store import REF_TABLES, open_db

__all__ = ["MAX_SKIPPED", "SyncReport", "SyncState", "TableChanges", "apply_snapshot", "log_skipped", "sync_once"]

log = logging.getLogger(__name__)

#: Above this many rule-breaking rows the sync fails instead (each one costs a validation pass, and that
#: many broken rows means something larger is wrong with the data).
MAX_SKIPPED = 500
LOGGED_SKIPS = 20  # skipped rows logged one line each per sync; the rest as one count


@dataclass(frozen=True, slots=True)
class TableChanges:
    added: int = 0
    changed: int = 0
    removed: int = 0
    total: int = 0

    @property
    def any(self) -> bool:
        return bool(self.added or self.changed or self.removed)


@dataclass(slots=True)
class SyncReport:
    """What one sync did; ``ok`` False carries ``error`` (one line, never a credential)."""

    source: str
    started_at: float
    finished_at: float = 0.0
    ok: bool = False
    error: str = ""
    tables: dict[str, TableChanges] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    api: dict[int, ApiSwitches] = field(default_factory=dict)
    read_seconds: float = 0.0
    state: SyncState | None = None

    @property
    def seconds(self) -> float:
        return max(0.0, self.finished_at - self.started_at)

    @property
    def changed(self) -> bool:
        return any(c.any for c in self.tables.values())

    def counts(self) -> dict[str, dict[str, int]]:
        return {t: {"added": c.added, "changed": c.changed, "removed": c.removed, "total": c.total}
                for t, c in self.tables.items()}

    def summary(self) -> str:
        if not self.ok:
            return f"failed: {self.error}"
        changed = " ".join(f"{t}=+{c.added}/~{c.changed}/-{c.removed}" for t, c in self.tables.items() if c.any)
        return (f"{changed or 'no changes'} skipped={len(self.skipped)} "
                f"rows={sum(c.total for c in self.tables.values())} seconds={self.seconds:.2f}")


@dataclass(slots=True)
class SyncState:
    """What the next sync compares against: the MOR fingerprints of the last good sync (tables whose
    fingerprint is unchanged are not read again), and that sync's skips and API switches."""

    fingerprints: dict[str, Fingerprint] | None = None
    skipped: dict[str, list[Skipped]] = field(default_factory=dict)
    api: dict[int, ApiSwitches] = field(default_factory=dict)


class _NeedFullRead(Exception):
    """The importer blamed a row of a table this (partial) sync did not read: read everything."""


def _cached_rows(db_path: str | Path, tables: list[str]) -> dict[str, dict[int, tuple[Any, ...]]]:
    """The SQLite's rows of ``tables`` as id → value tuple (record field order), read-only."""
    conn = sqlite3.connect(Path(db_path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        out = {}
        for table in tables:
            names = [f.name for f in fields(REF_TABLES[table])]
            cols = ", ".join(f'"{c}"' for c in names)
            out[table] = {row[0]: row for row in conn.execute(f'SELECT {cols} FROM "{table}"')}
        return out
    finally:
        conn.close()


def _diff(before: Mapping[str, Mapping[int, tuple[Any, ...]]],
          after: Mapping[str, list[dict[str, Any]]]) -> dict[str, TableChanges]:
    out = {}
    for table, rows in after.items():
        getter = itemgetter(*[f.name for f in fields(REF_TABLES[table])])  # C speed: 100,000 rows
        old = before[table]
        new = {r["id"]: getter(r) for r in rows}
        added = sum(1 for k in new if k not in old)
        removed = sum(1 for k in old if k not in new)
        changed = sum(1 for k, v in new.items() if k in old and old[k] != v)
        out[table] = TableChanges(added, changed, removed, len(new))
    return out


def apply_snapshot(db_path: str | Path, snap: MorSnapshot, *, source: str = "mor") -> tuple[
        dict[str, TableChanges], list[Skipped]]:
    """Write the tables of ``snap`` that differ from the SQLite through the importer (replace mode, those
    tables only), leaving out the rows it refuses; returns the per-table changes of the tables read and
    their skipped rows (mapping and rule skips)."""
    open_db(db_path).close()  # create / migrate, so a first sync can run on a fresh file
    tables = [t for t in REF_TABLES if t in snap.data]
    before = _cached_rows(db_path, tables)
    data = {t: list(snap.data[t]) for t in tables}
    skipped = list(snap.skipped)
    changes = _diff(before, data)
    todo = {t for t, c in changes.items() if c.any}
    rule_skips = 0
    while todo:
        try:
            import_data(db_path, {t: data[t] for t in tables if t in todo}, replace=True, source=source)
            break
        except ImportValidationError as exc:
            if exc.row is None and exc.table in data and exc.table not in todo:
                todo.add(exc.table)  # an unchanged table's row breaks now: import it too, to blame the row
                continue
            if exc.row is None or exc.table not in todo:
                if exc.existing_id is not None and exc.table not in data:
                    raise _NeedFullRead(str(exc)) from None
                raise MorSyncError(f"MOR data refused: {exc}") from None
            bad = data[exc.table].pop(exc.row - 1)
            skipped.append(Skipped(exc.table, bad.get("id"), exc.reason))
            rule_skips += 1
            if rule_skips > MAX_SKIPPED:
                first = skipped[len(snap.skipped)]
                raise MorSyncError(f"more than {MAX_SKIPPED} MOR rows break the import rules "
                                   f"(first: {first.table} id {first.id}: {first.reason})") from None
    if rule_skips:
        changes = _diff(before, data)
    _release(before, data)
    return changes, skipped


def _release(*containers: dict[str, Any]) -> None:
    """Free big row sets a slice at a time: dropping 100,000 rows in one go is one C call that holds
    the GIL for ~100 ms, which the event loop would feel as a stall."""
    for container in containers:
        for rows in container.values():
            if isinstance(rows, list):
                while rows:
                    del rows[-2000:]
            elif isinstance(rows, dict):
                while rows:
                    for _ in range(min(2000, len(rows))):
                        rows.popitem()
        container.clear()


def sync_once(settings: RefdataSettings, db_path: str | Path, state: SyncState | None = None,
              log_skips: bool = True) -> SyncReport:
    """Connect, read what changed since ``state``, write; never raises for expected failures (the report
    says ``ok=False``). ``report.state`` is what to pass next time (unchanged after a failure)."""
    state = state or SyncState()
    report = SyncReport(source=settings.describe(), started_at=time.time(), state=state)
    try:
        conn = connect(settings)
        try:
            snap = read_mor(conn, state.fingerprints)
            try:
                tables, skipped = apply_snapshot(db_path, snap)
            except _NeedFullRead:
                snap = read_mor(conn, None)
                tables, skipped = apply_snapshot(db_path, snap)
        finally:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a connection the server already dropped
                pass
        by_table = {t: [s for s in skipped if s.table == t] for t in snap.data}
        kept = {t: v for t, v in state.skipped.items() if t not in snap.data}
        new_state = SyncState(snap.fingerprints, {**kept, **by_table}, snap.api if "users" in snap.data else state.api)
        report.read_seconds = snap.read_seconds
        report.api = new_state.api
        report.tables = tables
        report.skipped = [s for t in REF_TABLES for s in new_state.skipped.get(t, [])]
        report.state = new_state
        report.ok = True
        _release(snap.data)
    except (MorSyncError, RefDataError, OSError, sqlite3.Error) as exc:
        report.error = str(exc).replace("\n", " ")
    report.finished_at = time.time()
    if log_skips:
        log_skipped(report)
    return report


def log_skipped(report: SyncReport) -> None:
    """One warning per row skipped by this sync (rows of tables it did not re-read were logged before)."""
    fresh = [s for s in report.skipped if s.table in report.tables]
    for s in fresh[:LOGGED_SKIPS]:
        log.warning("refdata sync skipped table=%s id=%s reason=%s", s.table, s.id, s.reason)
    if len(fresh) > LOGGED_SKIPS:
        log.warning("refdata sync skipped %d more rows (first %d logged)", len(fresh) - LOGGED_SKIPS, LOGGED_SKIPS)
