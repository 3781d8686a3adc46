"""``call_limit`` (MOR's concurrent-call limit of users, devices, providers and DIDs) end to end: the import
formats (JSON and CSV, MOR's 0 / null / negative = no limit → None), migration 4 on an older database,
the read-only load of a database that is not migrated yet, SQLite → RefIndex, and the MOR MySQL sync
against a real MariaDB (limits read from the right table, "no limit" spellings, a change picked up)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from collector.refdata.importer import ImportValidationError, demo_data, import_data, import_file
from collector.refdata.index import RefIndex
from collector.refdata.mor_sync import sync_once
from collector.refdata.store import CALL_LIMIT_TABLES, SCHEMA_VERSION, export_db, load_refdata, migrate, open_db
from tests.mariadb_support import MorDb
from tests.test_mor_mysql import settings_of


def _minimal(**limits: Any) -> dict[str, list[dict[str, Any]]]:
    """One row of each limited table, their call_limit as given (absent when not given)."""
    def lim(table: str) -> dict[str, Any]:
        return {"call_limit": limits[table]} if table in limits else {}
    return {
        "users": [{"id": 0, "username": "admin", "usertype": "admin"},
                  {"id": 7, "username": "u7", "usertype": "user", **lim("users")}],
        "devices": [{"id": 3, "user_id": 7, "device_type": "SIP", "name": "103", **lim("devices")}],
        "locations": [{"id": 1, "name": "Global"}],
        "providers": [{"id": 4, "name": "carrier", "tech": "SIP", "peer": "trunk4", **lim("providers")}],
        "dids": [{"id": 5, "did": "3705", "user_id": 7, "device_id": 3, **lim("dids")}],
    }


def _limits(path: Path) -> dict[str, int | None]:
    refs = RefIndex.build(load_refdata(path))
    return {"users": refs.users[7].call_limit, "devices": refs.devices[3].call_limit,
            "providers": refs.providers[4].call_limit, "dids": refs.dids[5].call_limit}


def test_json_import_to_sqlite_to_refindex(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    import_data(db, _minimal(users=100, devices=7, providers=250, dids=1))
    assert _limits(db) == {"users": 100, "devices": 7, "providers": 250, "dids": 1}
    assert RefIndex.build(load_refdata(db)).users[0].call_limit is None  # absent: no limit
    # stored as the numbers themselves, one column per table
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT call_limit FROM users WHERE id = 7").fetchone() == (100,)
        assert conn.execute("SELECT call_limit FROM users WHERE id = 0").fetchone() == (None,)
    finally:
        conn.close()


@pytest.mark.parametrize("none", [None, 0, -1, -500])
def test_mor_no_limit_spellings_are_stored_as_null(tmp_path: Path, none: int | None) -> None:
    db = tmp_path / "c.db"
    import_data(db, _minimal(users=none, devices=none, providers=none, dids=none))
    assert _limits(db) == dict.fromkeys(CALL_LIMIT_TABLES, None)
    # a limit replacing "no limit" and back, by upsert
    import_data(db, {"users": [{"id": 7, "username": "u7", "usertype": "user", "call_limit": 3}]})
    assert _limits(db)["users"] == 3
    import_data(db, {"users": [{"id": 7, "username": "u7", "usertype": "user", "call_limit": none}]})
    assert _limits(db)["users"] is None


@pytest.mark.parametrize("value", ["100", 2.5, True, [1]])
def test_a_limit_that_is_not_an_integer_rejects_the_file(tmp_path: Path, value: Any) -> None:
    db = tmp_path / "c.db"
    import_data(db, _minimal(devices=9))
    with pytest.raises(ImportValidationError) as err:
        import_data(db, _minimal(devices=value), source="x.json")
    assert str(err.value).startswith("x.json: devices row 1: call_limit: expected an integer, got ")
    assert _limits(db)["devices"] == 9  # nothing written


def test_csv_limits_empty_cell_zero_negative_and_junk(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    import_data(db, _minimal())
    users = tmp_path / "users.csv"
    users.write_text("id,username,usertype,call_limit\n0,admin,admin,\n7,u7,user, 12 \n8,u8,user,0\n9,u9,user,-3\n")
    assert import_file(db, users) == {"users": 4}
    refs = RefIndex.build(load_refdata(db))
    assert [refs.users[i].call_limit for i in (0, 7, 8, 9)] == [None, 12, None, None]
    users.write_text("id,username,usertype,call_limit\n0,admin,admin,\n7,u7,user,lots\n")
    with pytest.raises(ImportValidationError, match=r"users\.csv: users row 2: call_limit: expected an integer"):
        import_file(db, users)


def test_export_import_round_trip_keeps_limits(tmp_path: Path) -> None:
    import_data(tmp_path / "a.db", demo_data())
    exported = export_db(tmp_path / "a.db")
    alice = next(u for u in exported["users"] if u["username"] == "alice")
    admin = next(u for u in exported["users"] if u["username"] == "admin")
    assert (alice["call_limit"], admin["call_limit"]) == (100, None)  # null: `db import` takes it back
    import_data(tmp_path / "b.db", exported)
    assert load_refdata(tmp_path / "b.db") == load_refdata(tmp_path / "a.db")


def test_demo_data_has_limits_to_show() -> None:
    demo = demo_data()
    for table in ("users", "providers"):
        assert any(r.get("call_limit") for r in demo[table]), table
    assert any(r.get("call_limit") is None for r in demo["users"])  # and rows without one


def _v3_database(path: Path) -> None:
    """A database as the collector before call_limit left it: schema version 3, rows in it."""
    db = Database(path)
    try:
        assert migrate(db, target=3) == 3
        db.table("users").insert_all([{"id": 0, "username": "admin", "usertype": "admin"},
                                      {"id": 7, "username": "u7", "usertype": "user"}])
        db.table("locations").insert({"id": 1, "name": "Global"})
        db.table("devices").insert({"id": 3, "user_id": 7, "device_type": "SIP", "name": "103"})
        for table in CALL_LIMIT_TABLES:
            assert "call_limit" not in db.table(table).columns_dict
    finally:
        db.close()


def test_a_version_3_database_loads_read_only_without_limits(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    _v3_database(path)
    data = load_refdata(path)  # read-only (mode=ro), never migrates: the column is not there
    assert [(u.username, u.call_limit) for u in data.users] == [("admin", None), ("u7", None)]
    assert data.devices[0].call_limit is None
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone() == (3,)  # not migrated
    finally:
        conn.close()


def test_migration_4_adds_the_column_keeping_rows(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    _v3_database(path)
    db = open_db(path)
    try:
        assert SCHEMA_VERSION >= 4
        assert db.execute("SELECT name FROM schema_version WHERE version = 4").fetchone() == ("m004_call_limits",)
        for table in CALL_LIMIT_TABLES:
            col = db.table(table).columns_dict
            assert col["call_limit"] is int, table
        assert db.execute("SELECT id, call_limit FROM users ORDER BY id").fetchall() == [(0, None), (7, None)]
    finally:
        db.close()
    import_data(path, {"devices": [{"id": 3, "user_id": 7, "device_type": "SIP", "name": "103", "call_limit": 2}]})
    assert load_refdata(path).devices[0].call_limit == 2


# ------------------------------------------------------------------------------------------ MOR MySQL
def test_mor_sync_reads_the_limits(tmp_path: Path, mor_db: MorDb) -> None:
    """The test MOR (tests/mor_schema.py) writes "no limit" as 0 for users and DIDs, NULL for devices, -1
    for providers, and 999 on every provider's trunk device (which must not leak into the provider)."""
    db = tmp_path / "c.db"
    first = sync_once(settings_of(mor_db), db)
    assert first.ok, first.error
    refs = RefIndex.build(load_refdata(db))
    demo = demo_data()
    for table in CALL_LIMIT_TABLES:
        want = {r["id"]: r.get("call_limit") for r in demo[table]}
        got = {r.id: r.call_limit for r in getattr(refs.data, table)}
        assert got == want, table
    assert refs.users[2].call_limit == 100 and refs.users[0].call_limit is None
    assert refs.providers[1].call_limit == 100 and refs.providers[2].call_limit == 30  # not 999
    # a limit set and one cleared in MOR: the periodic sync notices the column and reads the table again
    mor_db.execute("UPDATE users SET call_limit = 5 WHERE id = 6", "UPDATE users SET call_limit = 0 WHERE id = 2",
                   "UPDATE dids SET call_limit = -1 WHERE id = 1", "UPDATE devices SET call_limit = 4 WHERE id = 3")
    again = sync_once(settings_of(mor_db), db, first.state)
    assert again.ok, again.error
    assert again.tables["users"].changed == 2 and again.tables["dids"].changed == 1
    refs = RefIndex.build(load_refdata(db))
    assert (refs.users[6].call_limit, refs.users[2].call_limit) == (5, None)
    assert (refs.dids[1].call_limit, refs.devices[3].call_limit) == (None, 4)
    # MOR's "no limit" rows compare equal to the cached NULLs: nothing changes on a quiet sync
    quiet = sync_once(settings_of(mor_db), db)
    assert quiet.ok and not quiet.changed
