"""Reference database: schema and migrations, validated all-or-nothing import, export round trip,
read-only load, and the ``db`` CLI commands."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from collector.refdata.importer import ImportValidationError, demo_data, import_data, import_file, load_demo
from collector.refdata.model import RefData, User
from collector.refdata.store import (
    CALL_LIMIT_TABLES,
    MIGRATIONS,
    REF_TABLES,
    SCHEMA_VERSION,
    RefDataError,
    RefSource,
    SqliteRefSource,
    export_db,
    init_db,
    load_refdata,
    migrate,
    open_db,
    schema_version,
)
from collector.service import dbcli


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "collector.db"


@pytest.fixture
def demo_db(db_path: Path) -> Path:
    load_demo(db_path)
    return db_path


def _schema(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"))
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------- schema
def test_open_db_creates_dir_wal_and_latest_schema(db_path: Path) -> None:
    db = open_db(db_path)
    try:
        assert db_path.parent.is_dir()
        assert db.journal_mode == "wal"
        assert schema_version(db) == SCHEMA_VERSION == len(MIGRATIONS)
        assert set(db.table_names()) == set(REF_TABLES) | {"schema_version", "local_passwords"}  # activecalls: durable
        assert [r[0] for r in db.execute("SELECT version FROM schema_version ORDER BY version")] == \
            list(range(1, SCHEMA_VERSION + 1))
    finally:
        db.close()


def test_schema_columns_match_the_records(db_path: Path) -> None:
    """The migrations are frozen SQL; the records may grow. This catches the two drifting apart."""
    db = open_db(db_path)
    try:
        for table, cls in REF_TABLES.items():
            cols = {c.name: c for c in db.table(table).columns}
            assert list(cols) == [f.name for f in dataclasses.fields(cls)], table
            for f in dataclasses.fields(cls):
                assert cols[f.name].type == ("INTEGER" if f.type in ("int", "int | None") else "TEXT"), \
                    (table, f.name)
                # only the limits (None = no limit) may be NULL; every other column has its default
                assert cols[f.name].notnull == (f.type != "int | None"), (table, f.name)
            assert ("call_limit" in cols) == (table in CALL_LIMIT_TABLES), table
            assert db.table(table).pks == ["id"]
    finally:
        db.close()


def test_migrations_are_idempotent(db_path: Path) -> None:
    init_db(db_path)
    before = _schema(db_path)
    assert init_db(db_path) == SCHEMA_VERSION
    db = Database(db_path)
    try:
        for step in MIGRATIONS:  # re-running any migration by hand changes nothing
            step(db)
        assert db.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        db.close()
    assert _schema(db_path) == before


def test_old_database_is_migrated_at_start_keeping_rows(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db = Database(db_path)
    assert migrate(db, target=1) == 1
    assert "activecalls" not in db.table_names()
    db.table("users").insert({"id": 0, "username": "admin", "usertype": "admin"})
    db.close()
    assert load_refdata(db_path).users[0].username == "admin"  # a v1 database is readable as is
    db = open_db(db_path)
    try:
        assert schema_version(db) == SCHEMA_VERSION
        assert db.table("users").count == 1
    finally:
        db.close()


def test_database_from_a_newer_collector_is_refused(db_path: Path) -> None:
    init_db(db_path)
    db = Database(db_path)
    db.execute("INSERT INTO schema_version VALUES (99, 'future', 'x')")
    db.close()
    with pytest.raises(RefDataError, match="newer"):
        open_db(db_path)


# ------------------------------------------------------------------------------------------- load
def test_demo_loads_and_reads_back_as_frozen_records(demo_db: Path) -> None:
    data = load_refdata(demo_db)
    demo = demo_data()
    for table in REF_TABLES:
        assert len(getattr(data, table)) == len(demo[table]), table
    admin = data.users[0]
    assert (admin.id, admin.username, admin.usertype, admin.api_secret_key) == \
        (0, "admin", "admin", "demo-admin-secret")
    reseller = next(u for u in data.users if u.usertype == "reseller")
    assert reseller.api_secret_key and reseller.api_secret_key != admin.api_secret_key
    assert [u.username for u in data.users if u.owner_id == reseller.id] == ["carol"]
    assert {u.usertype for u in data.users} == {"admin", "accountant", "reseller", "user"}
    assert [s.id for s in data.servers] == [1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        admin.username = "root"  # type: ignore[misc]
    assert load_demo(demo_db) == {t: len(demo[t]) for t in demo}  # idempotent upsert
    assert load_refdata(demo_db) == data


def test_load_refdata_never_creates_or_migrates(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    with pytest.raises(RefDataError, match="no such database"):
        load_refdata(missing)
    assert not missing.exists()
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(RefDataError, match="not initialized"):
        load_refdata(empty)
    v1 = tmp_path / "v1.db"
    db = Database(v1)
    migrate(db, target=1)
    db.close()
    assert load_refdata(v1) == RefData()
    db = Database(v1)
    assert schema_version(db) == 1
    db.close()


def test_refsource_protocol(demo_db: Path) -> None:
    src = SqliteRefSource(demo_db)
    assert isinstance(src, RefSource)
    assert src.load() == load_refdata(demo_db)


# ------------------------------------------------------------------------------------------- import
def _bad_cases() -> list[tuple[str, dict[str, Any], str, int | None, str]]:
    """(id, file content, table, row, reason fragment). Good rows come first so that a half-import
    would be visible."""
    new_user = {"id": 10, "username": "zed", "usertype": "user", "owner_id": 4}
    good_dev = {"id": 10, "user_id": 10, "device_type": "SIP", "name": "110", "extension": "110"}

    def devs(bad: dict[str, Any]) -> dict[str, Any]:
        return {"users": [new_user], "devices": [good_dev, {**good_dev, "id": 11, "name": "111", **bad}]}

    dst = {"id": 20, "prefix": "81", "direction_code": "PHL", "name": "x"}
    did = {"id": 20, "did": "37052000099", "user_id": 3, "device_id": 2, "provider_id": 1}
    return [
        ("int as string", devs({"user_id": "3"}), "devices", 2, "user_id: expected an integer"),
        ("bool as int", devs({"istrunk": True}), "devices", 2, "istrunk: expected an integer"),
        ("missing required", {"devices": [good_dev, {"id": 12, "user_id": 3, "device_type": "SIP"}]},
         "devices", 2, "missing required column 'name'"),
        ("unknown column", devs({"colour": "red"}), "devices", 2, "unknown column 'colour'"),
        ("null required", devs({"name": None}), "devices", 2, "missing required column 'name'"),
        ("dangling user", devs({"user_id": 77}), "devices", 2, "user_id 77 not found in users"),
        ("dangling location", devs({"location_id": 9}), "devices", 2, "location_id 9 not found in locations"),
        ("flag range", devs({"ani": 2}), "devices", 2, "ani must be 0 or 1"),
        ("duplicate peer across SIP/PJSIP", devs({"device_type": "PJSIP", "name": "101"}), "devices", 2,
         "duplicate device (type class, name) ('SIP', '101') (also id 1 in the database)"),
        ("duplicate id in file", {"devices": [good_dev, {**good_dev, "name": "112"}]}, "devices", 2,
         "duplicate id 10 (also row 1)"),
        ("did as number", {"dids": [{**did, "did": 37052000099}]}, "dids", 1,
         "quote numbers to keep leading zeros"),
        ("did device missing", {"dids": [{**did, "device_id": 99}]}, "dids", 1,
         "device_id 99 not found in devices"),
        ("did provider missing", {"dids": [{**did, "provider_id": 9}]}, "dids", 1,
         "provider_id 9 not found in providers"),
        ("did user missing", {"dids": [{**did, "device_id": 0, "user_id": 42}]}, "dids", 1,
         "user_id 42 not found in users"),
        ("did user does not own device", {"dids": [{**did, "user_id": 2}]}, "dids", 1,
         "user_id 2 does not own device 2"),
        ("duplicate did number", {"dids": [did, {**did, "id": 21}]}, "dids", 2,
         "duplicate did '37052000099' (also row 1)"),
        ("did not digits", {"dids": [{**did, "did": "3705-2"}]}, "dids", 1, "did must be digits"),
        ("destination direction missing", {"destinations": [{**dst, "direction_code": "JPN"}]},
         "destinations", 1, "direction_code 'JPN' not found in directions"),
        ("destination group missing", {"destinations": [{**dst, "destinationgroup_id": 99}]},
         "destinations", 1, "destinationgroup_id 99 not found in destinationgroups"),
        ("duplicate prefix vs database", {"destinations": [{**dst, "prefix": "447"}]}, "destinations", 1,
         "duplicate prefix '447' (also id 7 in the database)"),
        ("prefix not digits", {"destinations": [{**dst, "prefix": "8x"}]}, "destinations", 1,
         "prefix must be digits"),
        ("rule location missing", {"locationrules": [{"id": 9, "location_id": 5, "cut": "0"}]},
         "locationrules", 1, "location_id 5 not found in locations"),
        ("rule lengths", {"locationrules": [{"id": 9, "location_id": 1, "minlen": 9, "maxlen": 3}]},
         "locationrules", 1, "minlen <= maxlen"),
        ("rule type", {"locationrules": [{"id": 9, "location_id": 1, "lr_type": "cli"}]},
         "locationrules", 1, "lr_type must be one of"),
        ("duplicate username vs database", {"users": [{**new_user, "username": "alice"}]}, "users", 1,
         "duplicate username 'alice' (also id 2 in the database)"),
        ("bad usertype", {"users": [{**new_user, "usertype": "superuser"}]}, "users", 1, "usertype must be"),
        ("owner not a reseller", {"users": [{**new_user, "owner_id": 2}]}, "users", 1,
         "owner_id 2 is a user, not an admin or reseller"),
        ("second admin", {"users": [{**new_user, "usertype": "admin"}]}, "users", 1, "a second admin"),
        ("admin not id 0", {"users": [{"id": 0, "username": "admin", "usertype": "reseller"},
                                      {"id": 11, "username": "root", "usertype": "admin"}]},
         "users", 1, "id 0 is the admin's, not a reseller's"),
        ("admin elsewhere", {"users": [{"id": 0, "username": "admin", "usertype": "user"}]}, "users", 1,
         "id 0 is the admin's, not a user's"),
        ("admin with an owner", {"users": [{"id": 0, "username": "admin", "usertype": "admin", "owner_id": 4}]},
         "users", 1, "the admin's owner_id must be 0"),
        ("owns itself", {"users": [{**new_user, "usertype": "reseller", "owner_id": 10}]}, "users", 1,
         "owner_id 10 is the user itself"),
        ("reseller under a reseller", {"users": [{**new_user, "usertype": "reseller"}]}, "users", 1,
         "a reseller must be owned by the admin (owner_id 0), got 4"),
        ("owner missing", {"users": [{**new_user, "owner_id": 99}]}, "users", 1, "owner_id 99 not found in users"),
        ("direction code clash", {"directions": [{"id": 9, "name": "Japan", "code": "DEU"}]},
         "directions", 1, "duplicate code 'DEU'"),
        ("direction name clash, any case", {"directions": [{"id": 9, "name": "GERMANY", "code": "JPN"}]},
         "directions", 1, "duplicate name 'germany'"),
        ("rows not a list", {"users": {"id": 1}}, "users", None, "must be a list of rows"),
        ("row not an object", {"users": [[1, "x"]]}, "users", 1, "expected an object"),
        ("unknown table", {"phones": []}, "phones", None, "unknown table"),
    ]


@pytest.mark.parametrize("users,row,reason", [
    ([{"id": 1, "username": "u", "usertype": "user"}], 1, "no admin user"),
    ([{"id": 0, "username": "r", "usertype": "reseller"}, {"id": 1, "username": "u", "usertype": "user"}], 1,
     "id 0 is the admin's, not a reseller's"),
    ([{"id": 5, "username": "root", "usertype": "admin"}], 1, "the admin must have id 0, got 5"),
    ([{"id": 0, "username": "admin", "usertype": "admin"}, {"id": 1, "username": "acc", "usertype": "accountant",
      "owner_id": 2}, {"id": 2, "username": "res", "usertype": "reseller"}], 2,
     "an accountant must be owned by the admin"),
], ids=["no admin", "id 0 not the admin", "admin not id 0", "accountant under a reseller"])
def test_privilege_rules_on_a_fresh_database(db_path: Path, users: list[dict[str, Any]], row: int,
                                             reason: str) -> None:
    with pytest.raises(ImportValidationError) as err:
        import_data(db_path, {"users": users}, source="u.json")
    assert (err.value.table, err.value.row) == ("users", row) and reason in err.value.reason, str(err.value)
    msg = str(err.value)
    assert msg.startswith(f"u.json: users row {row}: ") and "\n" not in msg


def test_privilege_rules_accept_the_demo_and_a_minimal_set(db_path: Path) -> None:
    load_demo(db_path)  # the bundled demo data obeys every rule
    fresh = db_path.with_name("fresh.db")
    import_data(fresh, {"users": [{"id": 0, "username": "admin", "usertype": "admin"},
                                  {"id": 1, "username": "res", "usertype": "reseller"},
                                  {"id": 2, "username": "sub", "usertype": "user", "owner_id": 1}]})


@pytest.mark.parametrize("content,table,row,reason", [c[1:] for c in _bad_cases()],
                         ids=[c[0] for c in _bad_cases()])
def test_bad_row_rejects_the_whole_file(demo_db: Path, tmp_path: Path, content: dict[str, Any],
                                       table: str, row: int | None, reason: str) -> None:
    before = export_db(demo_db)
    file = tmp_path / "bad.json"
    file.write_text(json.dumps(content))
    with pytest.raises(ImportValidationError) as err:
        import_file(demo_db, file)
    exc = err.value
    assert (exc.table, exc.row) == (table, row)
    assert reason in exc.reason
    msg = str(exc)
    assert "\n" not in msg and msg.startswith("bad.json: ")
    if row is not None:
        assert f"{table} row {row}: " in msg
    assert export_db(demo_db) == before  # nothing half-imported


def test_write_failure_rolls_back_everything(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation passes, the second table's write fails: the first table's rows must be gone too."""
    from collector.refdata import importer
    before = export_db(demo_db)
    real = importer._write_rows
    calls = []

    def flaky(conn: sqlite3.Connection, table: str, rows: list[Any]) -> None:
        calls.append(table)
        if len(calls) == 2:
            raise sqlite3.OperationalError("disk I/O error (simulated)")
        real(conn, table, rows)

    monkeypatch.setattr(importer, "_write_rows", flaky)
    data = {"users": [{"id": 10, "username": "zed", "usertype": "user"}],
            "devices": [{"id": 10, "user_id": 10, "device_type": "SIP", "name": "110"}]}
    with pytest.raises(sqlite3.OperationalError):
        import_data(demo_db, data)
    monkeypatch.undo()
    assert calls == ["users", "devices"]
    assert export_db(demo_db) == before


def test_invalid_json_file(demo_db: Path, tmp_path: Path) -> None:
    file = tmp_path / "broken.json"
    file.write_text('{"users": [')
    with pytest.raises(ImportValidationError, match=r"^broken\.json: not valid JSON"):
        import_file(demo_db, file)
    file.write_text("[1, 2]")
    with pytest.raises(ImportValidationError, match="top level must be an object"):
        import_file(demo_db, file)


def test_upsert_by_id_and_replace(demo_db: Path) -> None:
    counts = import_data(demo_db, {"users": [{"id": 2, "username": "alice", "usertype": "user",
                                              "first_name": "Alicia", "last_name": "Office"}]})
    assert counts == {"users": 1}
    data = load_refdata(demo_db)
    assert data.users[2].display_name == "Alicia Office" and len(data.users) == 7

    import_data(demo_db, {"destinations": [{"id": 1, "prefix": "63", "direction_code": "PHL",
                                            "name": "Philippines proper"}]}, replace=True)
    assert [d.prefix for d in load_refdata(demo_db).destinations] == ["63"]

    before = export_db(demo_db)
    with pytest.raises(ImportValidationError) as err:  # devices would lose their users
        import_data(demo_db, {"users": [{"id": 0, "username": "admin", "usertype": "admin"}]},
                    replace=True, source="users.json")
    assert (err.value.table, err.value.row, err.value.existing_id) == ("devices", None, 1)
    assert str(err.value) == \
        "users.json: devices id 1 (already in the database): user_id 2 not found in users"
    assert export_db(demo_db) == before


def test_csv_import_coerces_and_names_the_row(demo_db: Path, tmp_path: Path) -> None:
    good = tmp_path / "devices.csv"
    good.write_text("id,user_id,device_type,name,extension,istrunk,location_id\n"
                    "20,3,PJSIP,bob-mobile,1020,0,\n", encoding="utf-8")
    assert import_file(demo_db, good) == {"devices": 1}
    dev = load_refdata(demo_db).devices[-1]
    assert (dev.id, dev.user_id, dev.device_type, dev.name, dev.istrunk, dev.location_id, dev.ani) == \
        (20, 3, "PJSIP", "bob-mobile", 0, 1, 0)

    before = export_db(demo_db)
    bad = tmp_path / "dids.csv"
    bad.write_text("id,did,user_id,device_id,provider_id\n"
                   "30,37052000030,3,2,1\n"
                   "31,37052000031,3,abc,1\n", encoding="utf-8")
    with pytest.raises(ImportValidationError) as err:
        import_file(demo_db, bad)
    assert str(err.value) == "dids.csv: dids row 2: device_id: expected an integer, got 'abc'"
    assert export_db(demo_db) == before

    extra = tmp_path / "servers.csv"
    extra.write_text("id,hostname\n2,pbx2,oops\n", encoding="utf-8")
    with pytest.raises(ImportValidationError, match="servers row 1: more cells than columns"):
        import_file(demo_db, extra)
    wrong = tmp_path / "phones.csv"
    wrong.write_text("id\n1\n", encoding="utf-8")
    with pytest.raises(ImportValidationError, match="CSV file name must name a table"):
        import_file(demo_db, wrong)


def test_export_import_round_trip(demo_db: Path, tmp_path: Path) -> None:
    exported = export_db(demo_db)
    assert list(exported) == list(REF_TABLES)
    file = tmp_path / "dump.json"
    file.write_text(json.dumps(exported))
    fresh = tmp_path / "fresh.db"
    assert import_file(fresh, file) == {t: len(rows) for t, rows in exported.items()}
    assert export_db(fresh) == exported
    assert load_refdata(fresh) == load_refdata(demo_db)
    # the same dump again is a no-op (upsert by id), and so is a replace with it
    import_file(fresh, file)
    import_file(fresh, file, replace=True)
    assert export_db(fresh) == exported


def test_demo_file_is_valid_and_self_contained(db_path: Path) -> None:
    demo = demo_data()
    assert set(demo) == set(REF_TABLES)
    assert import_data(db_path, copy.deepcopy(demo)) == {t: len(r) for t, r in demo.items()}
    users = {u["id"]: u for u in demo["users"]}
    assert users[0]["username"] == "admin" and users[0]["api_secret_key"] == "demo-admin-secret"
    assert User(**users[2]).display_name == "Alice Office"


# ------------------------------------------------------------------------------------------- CLI
def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="collector")
    dbcli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_init_demo_export_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "c.db")
    assert _cli(["db", "init", "--db", db]) == 0
    assert f"schema version {SCHEMA_VERSION}" in capsys.readouterr().out
    assert _cli(["db", "demo", "--db", db]) == 0
    out = tmp_path / "dump.json"
    assert _cli(["db", "export", "--db", db, "--out", str(out), "--with-secrets"]) == 0
    assert json.loads(out.read_text()) == export_db(db)
    capsys.readouterr()
    assert _cli(["db", "export", "--db", db, "--with-secrets"]) == 0  # a pipe, not a terminal
    assert json.loads(capsys.readouterr().out) == export_db(db)

    fresh = str(tmp_path / "fresh.db")
    assert _cli(["db", "import", str(out), "--db", fresh]) == 0
    assert "imported" in capsys.readouterr().out
    assert export_db(fresh) == export_db(db)


def test_cli_validation_error_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "c.db")
    assert _cli(["db", "demo", "--db", db]) == 0
    capsys.readouterr()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"devices": [{"id": 9, "user_id": 77, "device_type": "SIP", "name": "x"}]}))
    assert _cli(["db", "import", str(bad), "--db", db]) == 2
    err = capsys.readouterr().err
    assert err == "collector db import: error: bad.json: devices row 1: user_id 77 not found in users\n"
    assert _cli(["db", "import", str(tmp_path / "missing.json"), "--db", db]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert _cli(["db", "export", "--db", str(tmp_path / "none.db")]) == 2
    assert "no such database" in capsys.readouterr().err


def test_cli_help_texts(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("init", "import", "demo", "export"):
        with pytest.raises(SystemExit) as done:
            _cli(["db", cmd, "--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert "--db PATH" in text and "var/collector.db" in text
    with pytest.raises(SystemExit):
        _cli(["db", "import", "--help"])
    text = capsys.readouterr().out
    assert "one bad" in text and "devices.csv" in text and "--replace" in text
