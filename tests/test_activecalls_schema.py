"""``activecalls`` has one owner (``collector.live.durable``) and the same schema however a file got it:
``collector db init`` then the daemon's durable table, the durable table alone, or a database written by
the collector when the refdata migration 3 still created the table (schema version 3)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlite_utils import Database

from collector.live.durable import ACTIVECALLS_COLUMNS, DurableTable
from collector.live.table import LiveTable
from collector.refdata.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    migrate,
    open_db,
    schema_version,
)
from collector.service import dbcli
from collector.tracking.calls import CallChange, CallStatus, CallView

#: ``sqlite_master`` (type, name, sql) for activecalls as `collector db init` + the daemon left it before
#: the DDL moved to ``collector.live.durable`` (captured from that code; it must never change).
BEFORE: list[tuple[str, str, str]] = [
    ("index", "idx_activecalls_server_id_linkedid",
     'CREATE UNIQUE INDEX "idx_activecalls_server_id_linkedid"\n    ON "activecalls" ("server_id", "linkedid")'),
    ("table", "activecalls",
     ('CREATE TABLE "activecalls" (\n   "id" INTEGER PRIMARY KEY,\n   "server_id" INTEGER NOT NULL,\n'
      '   "uniqueid" TEXT NOT NULL,\n   "linkedid" TEXT NOT NULL,\n   "channel" TEXT,\n   "dstchannel" TEXT,\n'
      '   "src" TEXT,\n   "dst" TEXT,\n   "status" TEXT,\n   "start_time" REAL,\n   "answer_time" REAL,\n'
      '   "src_device_id" INTEGER,\n   "dst_device_id" INTEGER,\n   "provider_id" INTEGER,\n   "did_id" INTEGER,\n'
      '   "user_id" INTEGER,\n   "owner_id" INTEGER,\n   "localized_dst" TEXT,\n   "prefix" TEXT,\n'
      '   "legs_json" TEXT\n)')),
]


def _activecalls_schema(path: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'activecalls' "
                            "ORDER BY type, name").fetchall()
    finally:
        conn.close()


def _old_v3_database(path: Path) -> None:
    """What the collector wrote while refdata's migration 3 created activecalls (its code, frozen here)."""
    db = Database(path)
    try:
        assert migrate(db, target=2) == 2
        db.table("activecalls").create(
            {"id": int, "server_id": int, "uniqueid": str, "linkedid": str, "channel": str, "dstchannel": str,
             "src": str, "dst": str, "status": str, "start_time": float, "answer_time": float,
             "src_device_id": int, "dst_device_id": int, "provider_id": int, "did_id": int, "user_id": int,
             "owner_id": int, "localized_dst": str, "prefix": str, "legs_json": str},
            pk="id", not_null={"server_id", "uniqueid", "linkedid"}, if_not_exists=True)
        db.table("activecalls").create_index(["server_id", "linkedid"], unique=True, if_not_exists=True)
        db.execute("INSERT INTO schema_version VALUES (3, 'm003_activecalls', '2024-01-01T00:00:00+00:00')")
        db.conn.commit()
    finally:
        db.close()


def _view(linkedid: str) -> CallView:
    return CallView(1, linkedid, linkedid, f"SIP/a-{linkedid}", "", CallStatus.RINGING, "101", "", "3701",
                    100.0, None, ())


def _round_trip(path: Path, linkedid: str) -> list[str]:
    """A daemon's life on ``path``: load what is there, add a call, flush; returns the linkedids stored."""
    live = LiveTable()
    durable = DurableTable(path, live)
    try:
        restored = durable.load()
        if restored:  # as the daemon does: ids continue after the restored ones
            live.restore(restored)
            live.dirty.clear()
        live.apply([CallChange("added", (1, linkedid), _view(linkedid))])
        durable.flush_sync()
    finally:
        durable.close()
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT linkedid FROM activecalls ORDER BY linkedid")]
    finally:
        conn.close()


def test_refdata_migrations_no_longer_create_activecalls(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    open_db(path).close()
    assert _activecalls_schema(path) == []
    assert SCHEMA_VERSION == len(MIGRATIONS) >= 3  # migration 3 kept (a no-op) so version numbers hold
    assert MIGRATIONS[2].__name__ == "_m003_retired"


def test_db_init_then_durable_gives_the_schema_of_before(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    assert dbcli.main(["db", "init", "--db", str(path)]) == 0
    open_db(path).close()  # what the daemon does first
    assert _round_trip(path, "a") == ["a"]
    assert _activecalls_schema(path) == BEFORE


def test_durable_alone_on_a_fresh_file_gives_the_same_schema(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    assert _round_trip(path, "a") == ["a"]
    assert _activecalls_schema(path) == BEFORE
    conn = sqlite3.connect(path)
    try:
        assert [r[1] for r in conn.execute("PRAGMA table_info(activecalls)")] == list(ACTIVECALLS_COLUMNS)
    finally:
        conn.close()


def test_a_version_3_database_from_the_old_code_keeps_working(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    _old_v3_database(path)
    assert _activecalls_schema(path) == BEFORE
    assert _round_trip(path, "a") == ["a"]
    db = open_db(path)  # the daemon's start: nothing to migrate, nothing rewritten
    try:
        assert schema_version(db) == SCHEMA_VERSION
        assert db.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        db.close()
    assert _round_trip(path, "b") == ["a", "b"]  # the earlier row survived a restart
    assert _activecalls_schema(path) == BEFORE


def test_a_version_2_database_is_migrated_and_durable_adds_its_table(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    db = Database(path)
    migrate(db, target=2)
    db.close()
    open_db(path).close()
    assert _activecalls_schema(path) == []
    assert _round_trip(path, "a") == ["a"]
    assert _activecalls_schema(path) == BEFORE


def test_a_file_from_the_early_durable_table_keeps_working(tmp_path: Path) -> None:
    """The durable table used to create a looser table of its own (no NOT NULL, no index) when it ran
    on a file no `db init` had touched (bench, tests): it is kept as is and gains the key index."""
    path = tmp_path / "c.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE activecalls (id INTEGER PRIMARY KEY, "
                 + ", ".join(f"{c} TEXT" for c in ACTIVECALLS_COLUMNS[1:]) + ")")
    conn.close()
    assert _round_trip(path, "a") == ["a"]
    assert _round_trip(path, "b") == ["a", "b"]
    assert [r[:2] for r in _activecalls_schema(path)] == [("index", "idx_activecalls_server_id_linkedid"),
                                                         ("table", "activecalls")]
