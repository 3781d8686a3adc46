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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.refdata.mor_mysql import ApiSwitches, MorSnapshot, MorSyncError, Skipped, connect, read_mor
from collector.refdata.settings import RefdataSettings
from collector.refdata.store import REF_TABLES, ImportValidationError, RefDataError, export_db, import_data, open_db

__all__ = ["MAX_SKIPPED", "SyncReport", "TableChanges", "apply_snapshot", "sync_once"]

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


def _records(table: str, rows: list[dict[str, Any]]) -> dict[int, Any]:
    cls = REF_TABLES[table]
    return {r["id"]: cls(**r) for r in rows}


def _diff(before: Mapping[str, list[dict[str, Any]]], after: Mapping[str, list[dict[str, Any]]]) -> dict[str, TableChanges]:
    out = {}
    for table in REF_TABLES:
        old = _records(table, before.get(table, []))
        new = _records(table, after.get(table, []))
        added = sum(1 for k in new if k not in old)
        removed = sum(1 for k in old if k not in new)
        changed = sum(1 for k, v in new.items() if k in old and old[k] != v)
        out[table] = TableChanges(added, changed, removed, len(new))
    return out


def apply_snapshot(db_path: str | Path, snap: MorSnapshot, *, source: str = "mor") -> tuple[
        dict[str, TableChanges], list[Skipped]]:
    """Write ``snap`` through the importer (replace mode), leaving out the rows it refuses; returns the
    per-table changes against what the SQLite held and every skipped row (mapping and rule skips)."""
    open_db(db_path).close()  # create / migrate, so a first sync can run on a fresh file
    before = export_db(db_path)
    data = {t: list(snap.data.get(t, [])) for t in REF_TABLES}
    skipped = list(snap.skipped)
    if not any(c.any for c in _diff(before, data).values()):
        return _diff(before, data), skipped  # identical to the cache (which passed the importer): no write
    while True:
        try:
            import_data(db_path, data, replace=True, source=source)
            break
        except ImportValidationError as exc:
            rows = data.get(exc.table)
            if exc.row is None or rows is None or not 1 <= exc.row <= len(rows):
                raise MorSyncError(f"MOR data refused: {exc}") from None
            bad = rows.pop(exc.row - 1)
            skipped.append(Skipped(exc.table, bad.get("id"), exc.reason))
            if len(skipped) - len(snap.skipped) > MAX_SKIPPED:
                raise MorSyncError(f"more than {MAX_SKIPPED} MOR rows break the import rules "
                                   f"(first: {skipped[len(snap.skipped)].table} id "
                                   f"{skipped[len(snap.skipped)].id}: {skipped[len(snap.skipped)].reason})") from None
    return _diff(before, data), skipped


def sync_once(settings: RefdataSettings, db_path: str | Path) -> SyncReport:
    """Connect, read, write; never raises for expected failures (the report says ``ok=False``)."""
    report = SyncReport(source=settings.describe(), started_at=time.time())
    try:
        conn = connect(settings)
        try:
            snap = read_mor(conn)
        finally:
            try:
                conn.close()
            except Exception:  # a connection the server already dropped
                pass
        report.read_seconds = snap.read_seconds
        report.api = snap.api
        report.tables, report.skipped = apply_snapshot(db_path, snap)
        report.ok = True
    except (MorSyncError, RefDataError, OSError, sqlite3.Error) as exc:
        report.error = str(exc).replace("\n", " ")
    report.finished_at = time.time()
    for s in report.skipped[:LOGGED_SKIPS]:
        log.warning("refdata sync skipped table=%s id=%s reason=%s", s.table, s.id, s.reason)
    if len(report.skipped) > LOGGED_SKIPS:
        log.warning("refdata sync skipped %d more rows (first %d logged)", len(report.skipped) - LOGGED_SKIPS,
                    LOGGED_SKIPS)
    return report
