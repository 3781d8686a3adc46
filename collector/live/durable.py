"""The live table mirrored to SQLite (``activecalls``, MOR's table name), written in batches off the loop.

Why: a daemon restart must keep the answer times of calls still up. The event path only marks keys
dirty (``LiveTable.dirty``); a periodic flush turns them into one transaction in a worker thread, so a
slow disk never stalls the AMI reader. On start the rows are loaded back and the first resync of each
server keeps only what Asterisk still has.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

from collector.live.table import LiveCall, LiveTable
from collector.refdata.model import NO_ENRICHMENT
from collector.tracking.calls import CallKey, CallStatus, CallView, Leg

__all__ = ["ACTIVECALLS_COLUMNS", "DurableTable", "create_table"]

log = logging.getLogger(__name__)

#: MOR's columns and their SQLite types; ``legs_json`` holds the source name and the call's legs.
_COLUMN_TYPES: dict[str, str] = {
    "id": "INTEGER PRIMARY KEY", "server_id": "INTEGER NOT NULL", "uniqueid": "TEXT NOT NULL",
    "linkedid": "TEXT NOT NULL", "channel": "TEXT", "dstchannel": "TEXT", "src": "TEXT", "dst": "TEXT",
    "status": "TEXT", "start_time": "REAL", "answer_time": "REAL", "src_device_id": "INTEGER",
    "dst_device_id": "INTEGER", "provider_id": "INTEGER", "did_id": "INTEGER", "user_id": "INTEGER",
    "owner_id": "INTEGER", "localized_dst": "TEXT", "prefix": "TEXT", "legs_json": "TEXT",
}
ACTIVECALLS_COLUMNS: tuple[str, ...] = tuple(_COLUMN_TYPES)

#: The only DDL of ``activecalls``. Laid out to the letter as the reference schema's migration 3 wrote it
#: (sqlite-utils' layout; SQLite stores the text minus ``IF NOT EXISTS``), so a database created either
#: way has the same ``sqlite_master``; on one that has it already both are no-ops.
_CREATE_TABLE = ('CREATE TABLE IF NOT EXISTS "activecalls" (\n'
                 + ",\n".join(f'   "{name}" {kind}' for name, kind in _COLUMN_TYPES.items()) + "\n)")
_CREATE_INDEX = ('CREATE UNIQUE INDEX IF NOT EXISTS "idx_activecalls_server_id_linkedid"\n'
                 '    ON "activecalls" ("server_id", "linkedid")')


def create_table(conn: sqlite3.Connection) -> None:
    """Create ``activecalls`` and its key index unless there. A file written by an early durable table
    (no index) whose rows break the key keeps working without the index rather than refusing to start."""
    conn.execute(_CREATE_TABLE)
    try:
        conn.execute(_CREATE_INDEX)
    except sqlite3.IntegrityError as exc:
        log.warning("activecalls key index not created error=%s", exc)


#: The columns a flush rewrites in place (``UPDATE … WHERE id``): all but the key, so SQLite leaves the
#: (server_id, linkedid) index alone.
_UPDATE_COLUMNS = tuple(c for c in ACTIVECALLS_COLUMNS if c not in ("id", "server_id", "linkedid"))
_INSERT_COLUMNS = (*_UPDATE_COLUMNS, "id", "server_id", "linkedid")
_UPDATE = f"UPDATE activecalls SET {', '.join(c + ' = ?' for c in _UPDATE_COLUMNS)} WHERE id = ?"
_INSERT = (f"INSERT OR REPLACE INTO activecalls ({', '.join(_INSERT_COLUMNS)}) "
           f"VALUES ({', '.join('?' for _ in _INSERT_COLUMNS)})")
_to_json = json.JSONEncoder(check_circular=False, separators=(",", ":")).encode  # one per row per flush


def _update_values(row: LiveCall) -> tuple[Any, ...]:
    """``_UPDATE``'s parameters; ``_INSERT``'s are these plus (server_id, linkedid)."""
    c, i = row.call, row.info
    # Leg is a NamedTuple (uniqueid, channel, state, is_local, created): json writes it as that array
    return (c.uniqueid, c.channel, c.dst_channel, c.src, c.dst, c.status.value, c.start_time, c.answer_time,
            i.src_device_id, i.dst_device_id, i.provider_id, i.did_id, i.user_id, i.owner_id, i.localized_dst,
            i.destination_prefix, _to_json({"src_name": c.src_name, "legs": c.legs}), row.id)


def _row_from_db(r: sqlite3.Row) -> LiveCall:
    extra = json.loads(r["legs_json"] or "{}")
    legs = tuple(Leg(str(u), str(ch), int(st), bool(loc), float(cr)) for u, ch, st, loc, cr in extra.get("legs", []))
    call = CallView(
        server_id=int(r["server_id"]), linkedid=r["linkedid"], uniqueid=r["uniqueid"], channel=r["channel"],
        dst_channel=r["dstchannel"] or "", status=CallStatus(r["status"]), src=r["src"] or "",
        src_name=extra.get("src_name", ""), dst=r["dst"] or "", start_time=float(r["start_time"] or 0.0),
        answer_time=r["answer_time"], legs=legs)
    return LiveCall(int(r["id"]), call, NO_ENRICHMENT)


#: One flush: each dirty key with the id of the row the table held for it then, and its row now (None: gone).
#: The rows are immutable, so the batch can be written off the loop; put back in ``dirty`` if it fails.
_Batch = list[tuple[CallKey, int | None, LiveCall | None]]


class DurableTable:
    def __init__(self, path: Path, live: LiveTable) -> None:
        self.path = path
        self.live = live
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        create_table(self._conn)
        self.flushes = 0
        self.rows_written = 0

    def load(self) -> list[LiveCall]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM activecalls ORDER BY id").fetchall()
        out = []
        damaged: list[tuple[int]] = []
        for r in rows:
            try:
                out.append(_row_from_db(r))
            except Exception as exc:  # one damaged row must not stop the daemon
                log.warning("activecalls row dropped id=%s error=%s", r["id"], exc)
                damaged.append((r["id"],))
        if damaged:  # flushes assume the table holds exactly the rows they wrote
            with self._lock:
                self._conn.executemany("DELETE FROM activecalls WHERE id = ?", damaged)
        return out

    def _collect(self) -> _Batch:
        """On the loop; the writer thread turns the batch into statements, holding the loop up in 5 ms
        slices at most."""
        dirty, self.live.dirty = self.live.dirty, {}
        get = self.live.get
        return [(key, saved, get(key)) for key, saved in dirty.items()]

    def _write(self, batch: _Batch) -> int:
        """One transaction; returns the statements run (no transaction at all when there are none)."""
        deletes: list[tuple[int]] = []
        updates: list[tuple[Any, ...]] = []
        inserts: list[tuple[Any, ...]] = []
        for key, saved, row in batch:
            if row is not None and row.id == saved:
                updates.append(_update_values(row))
                continue
            if saved is not None:  # gone, or the key came back as a new call (new id)
                deletes.append((saved,))
            if row is not None:
                inserts.append((*_update_values(row), key[0], key[1]))
        n = len(deletes) + len(updates) + len(inserts)
        if not n:
            return 0
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                if deletes:
                    self._conn.executemany("DELETE FROM activecalls WHERE id = ?", deletes)
                if updates:
                    self._conn.executemany(_UPDATE, updates)
                if inserts:
                    self._conn.executemany(_INSERT, inserts)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        self.flushes += 1
        self.rows_written += n
        return n

    def _retry_later(self, batch: _Batch) -> None:
        # the transaction rolled back, so the table still holds what the batch says: that wins over what
        # keys dirtied since assume about it
        self.live.dirty.update((key, saved) for key, saved, _row in batch)

    def flush_sync(self) -> int:
        batch = self._collect()
        try:
            return self._write(batch)
        except BaseException:
            self._retry_later(batch)
            raise

    async def flush(self) -> int:
        batch = self._collect()
        try:
            return await asyncio.to_thread(self._write, batch)
        except Exception:
            log.exception("activecalls flush failed; will retry the same keys")
            self._retry_later(batch)
            raise

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception:
                pass

    def close(self) -> None:
        with self._lock:
            self._conn.close()
