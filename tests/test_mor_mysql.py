"""The MOR MySQL sync against a real MariaDB: same data as the bundled JSON, same XML for a real trace,
schema errors named, bad rows skipped and counted, the CLI's output and exit codes, config parsing."""

from __future__ import annotations

import functools
import hashlib
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from api.app import create_app
from api.deps import ApiDeps
from collector.live.enrich import Enricher
from collector.live.table import LiveTable
from collector.refdata.importer import demo_data, import_data
from collector.refdata.index import RefIndex
from collector.refdata.mor_mysql import MorSyncError, connect, connect_kwargs
from collector.refdata.mor_sync import sync_once
from collector.refdata.settings import RefdataSettings
from collector.refdata.store import export_db, load_refdata
from collector.service import cli
from collector.service.config import ConfigError, Secret, load_settings, parse_settings
from collector.tools.timeline import iter_trace_messages, timeline
from collector.tracking.calls import CallChange
from tests.api_support import PATH, parse, with_settings
from tests.helpers import trace_paths
from tests.mariadb_support import READER_PASSWORD, READER_USER, MorDb

SECRETS = {"admin": "demo-admin-secret", "reseller": "demo-reseller-secret"}


def _same(value: Any) -> Any:
    return value



def settings_of(db: MorDb, via: str = "tcp", **kw: Any) -> RefdataSettings:
    where: dict[str, Any] = ({"mysql_socket": str(db.server.socket)} if via == "socket"
                             else {"mysql_host": "127.0.0.1", "mysql_port": db.server.port})
    return RefdataSettings(source="mysql", mysql_user=READER_USER, mysql_password=Secret(READER_PASSWORD),
                           mysql_database=db.name, **where, **kw)


# ------------------------------------------------------------------------------------------ equality
@pytest.mark.parametrize("via", ["tcp", "socket"])
def test_full_sync_equals_the_demo_json_field_by_field(tmp_path: Path, mor_db: MorDb, via: str) -> None:
    report = sync_once(settings_of(mor_db, via), tmp_path / "mysql.db")
    assert report.ok, report.error
    assert report.skipped == []
    import_data(tmp_path / "json.db", demo_data())
    got, want = export_db(tmp_path / "mysql.db"), export_db(tmp_path / "json.db")
    assert list(got) == list(want)
    for table in want:
        assert got[table] == want[table], table
    assert {t: c.added for t, c in report.tables.items()} == {t: len(r) for t, r in want.items()}
    # MOR's API switches are read per owner (the admin's here)
    assert report.api[0].allow_api is True and report.api[0].allow_get_api is False
    # a second sync changes nothing and writes nothing
    again = sync_once(settings_of(mor_db, via), tmp_path / "mysql.db")
    assert again.ok and not again.changed


async def test_same_active_calls_xml_for_a_real_trace(tmp_path: Path, mor_db: MorDb, aiohttp_client: Any) -> None:
    assert sync_once(settings_of(mor_db), tmp_path / "mysql.db").ok
    import_data(tmp_path / "json.db", demo_data())
    frames = timeline(iter_trace_messages(trace_paths("concurrent_load")), step=0.5)
    best = max(frames, key=lambda f: len(f.calls))
    assert len(best.calls) >= 100
    bodies = {}
    for name in ("mysql", "json"):
        refs = RefIndex.build(load_refdata(tmp_path / f"{name}.db"))
        table = LiveTable(enrich=Enricher(refs).enrich)
        table.apply(CallChange("added", c.key, c) for c in best.calls)
        app = create_app(ApiDeps(rows=table.rows, refs=functools.partial(_same, refs), settings=with_settings(),
                                 clock=lambda: best.t))
        client = await aiohttp_client(app)
        for user in ("admin", "reseller", "carol", "alice"):
            owner = refs.owner_of(refs.users_by_username[user])
            assert owner is not None
            sig = hashlib.sha1((user + SECRETS[owner.username]).encode()).hexdigest()
            resp = await client.post(PATH, data={"u": user, "hash": sig})
            assert resp.status == 200
            bodies[(name, user)] = await resp.read()
    for user in ("admin", "reseller", "carol", "alice"):
        assert bodies[("mysql", user)] == bodies[("json", user)], user
    assert len(parse(bodies[("mysql", "admin")]).findall("active_call")) >= 100


# ------------------------------------------------------------------------------------------ bad data
def test_rule_breaking_rows_are_skipped_counted_and_logged(tmp_path: Path, mor_db: MorDb,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    mor_db.execute(
        "INSERT INTO devices (id, name, device_type, user_id, location_id) VALUES (50, 'ghost', 'SIP', 77, 1)",
        "INSERT INTO destinations (id, prefix, direction_code, name) VALUES (60, '44', 'GBR', 'dup of 44')",
        "INSERT INTO dids (id, did, status, device_id) VALUES (70, NULL, 'active', 0)",
        "INSERT INTO dids (id, did, status, device_id) VALUES (71, '3705999', 'active', 50)",  # cascades
        "INSERT INTO providers (id, name, tech, device_id, user_id) VALUES (80, 'lost', 'SIP', 4242, 0)",
        "INSERT INTO users (id, username, usertype) VALUES (90, 'partner1', 'partner')",
        "INSERT INTO devices (id, name, device_type, user_id) VALUES (51, 'nulluser', 'SIP', NULL)",
    )
    caplog.set_level(logging.WARNING)
    report = sync_once(settings_of(mor_db), tmp_path / "c.db")
    assert report.ok, report.error
    skipped = {(s.table, s.id) for s in report.skipped}
    assert skipped == {("devices", 50), ("destinations", 60), ("dids", 70), ("dids", 71), ("providers", 80),
                       ("users", 90), ("devices", 51)}
    reasons = {(s.table, s.id): s.reason for s in report.skipped}
    assert "user_id 77 not found in users" in reasons[("devices", 50)]
    assert "duplicate prefix '44'" in reasons[("destinations", 60)]
    assert "device_id 4242" in reasons[("providers", 80)]
    for table, rid in skipped:
        assert any(f"table={table} id={rid} " in r.getMessage() for r in caplog.records), (table, rid)
    # everything else arrived, as the demo has it
    got = export_db(tmp_path / "c.db")
    import_data(tmp_path / "json.db", demo_data())
    assert got == export_db(tmp_path / "json.db")


def test_missing_table_or_column_is_one_error_naming_it(tmp_path: Path, mor_db: MorDb) -> None:
    mor_db.execute("ALTER TABLE devices DROP COLUMN ani", "DROP TABLE locationrules")
    report = sync_once(settings_of(mor_db), tmp_path / "c.db")
    assert not report.ok
    assert "missing table(s) locationrules" in report.error and "devices.ani" in report.error
    assert "\n" not in report.error


def test_extra_columns_and_nulls_are_fine(tmp_path: Path, mor_db: MorDb) -> None:
    mor_db.execute("ALTER TABLE devices ADD COLUMN brand_new_column varchar(10) DEFAULT 'x'",
                   "UPDATE locationrules SET `add` = NULL, cut = NULL, minlen = NULL, maxlen = NULL WHERE id = 1",
                   "UPDATE destinations SET destinationgroup_id = NULL, subcode = NULL WHERE id = 1")
    report = sync_once(settings_of(mor_db), tmp_path / "c.db")
    assert report.ok, report.error
    data = load_refdata(tmp_path / "c.db")
    rule = next(r for r in data.locationrules if r.id == 1)
    assert (rule.cut, rule.add, rule.minlen, rule.maxlen) == ("", "", 1, 100)
    dest = next(d for d in data.destinations if d.id == 1)
    assert (dest.destinationgroup_id, dest.subcode) == (0, "")


def test_wrong_password_and_down_server_fail_cleanly_without_credentials(tmp_path: Path, mor_db: MorDb) -> None:
    bad = RefdataSettings(source="mysql", mysql_host="127.0.0.1", mysql_port=mor_db.server.port,
                          mysql_user=READER_USER, mysql_password=Secret("not-the-" + READER_PASSWORD),
                          mysql_database=mor_db.name)
    report = sync_once(bad, tmp_path / "c.db")
    assert not report.ok and "Access denied" in report.error and READER_PASSWORD not in report.error
    assert "\n" not in report.error
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down_settings = RefdataSettings(source="mysql", mysql_host="127.0.0.1", mysql_port=port,
                                    mysql_user=READER_USER, mysql_password=Secret(READER_PASSWORD),
                                    mysql_database=mor_db.name, connect_timeout=2)
    down = sync_once(down_settings, tmp_path / "c.db")
    assert not down.ok and f"cannot connect to mysql://127.0.0.1:{port}/{mor_db.name}" in down.error
    assert READER_PASSWORD not in down.error


def test_without_pymysql_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pymysql", None)  # import pymysql → ImportError
    with pytest.raises(MorSyncError, match=r"needs PyMySQL: pip install 'mor-active-calls-collector\[mysql\]'"):
        connect(RefdataSettings(source="mysql", mysql_user="u"))
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ConfigError, match=r"\[refdata\] source: mysql needs PyMySQL"):
        parse_settings("[refdata]\nsource = mysql\nmysql_host = h\nmysql_user = u\n")


# ------------------------------------------------------------------------------------------ config
def test_refdata_config_defaults_and_validation(tmp_path: Path) -> None:
    s = parse_settings("[collector]\n").refdata
    assert s == RefdataSettings() and s.source == "file"
    s = parse_settings("[refdata]\nsource = mysql\nmysql_host = db\nmysql_user = collector\n"
                       "mysql_password = hunter2\n").refdata
    assert (s.mysql_host, s.mysql_port, s.mysql_database, s.refresh_interval, s.mysql_tls) == \
        ("db", 3306, "mor", 300.0, False)
    assert isinstance(s.mysql_password, Secret) and "hunter2" not in repr(s)
    s = parse_settings("[refdata]\nsource = mysql\nmysql_socket = /run/mysqld/mysqld.sock\nmysql_user = c\n"
                       "mysql_tls = yes\nmysql_tls_verify = no\nrefresh_interval = 60\n").refdata
    kw = connect_kwargs(s)
    assert kw["unix_socket"] == "/run/mysqld/mysqld.sock" and "host" not in kw and "ssl" in kw
    assert kw["ssl"].check_hostname is False
    for text, msg in [
        ("[refdata]\nsource = oracle\n", "[refdata] source: one of file, mysql"),
        ("[refdata]\nsource = mysql\nmysql_user = u\n", "[refdata] mysql_host: missing (required)"),
        ("[refdata]\nsource = mysql\nmysql_host = h\n", "[refdata] mysql_user: missing (required)"),
        ("[refdata]\nsource = mysql\nmysql_host = h\nmysql_user = u\nmysql_port = 0\n", "[refdata] mysql_port"),
        ("[refdata]\nsource = mysql\nmysql_host = h\nmysql_user = u\nrefresh_interval = x\n",
         "[refdata] refresh_interval: not a number"),
        ("[refdata]\nsource = mysql\nmysql_host = h\nmysql_user = u\nmysql_tls_ca = /nonexistent.pem\n",
         "[refdata] mysql_tls_ca: no such file"),
    ]:
        with pytest.raises(ConfigError) as exc:
            parse_settings(text, source="t.ini")
        assert msg in str(exc.value)


def test_check_config_validates_refdata_and_never_prints_the_password(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ini = tmp_path / "c.ini"
    ini.write_text(f"[database]\npath = {tmp_path}/c.db\n[refdata]\nsource = mysql\nmysql_host = db.example\n"
                   "mysql_user = collector\nmysql_password = s3cr3t-pw\n")
    assert cli.main(["check-config", "-c", str(ini)]) == 0
    out = capsys.readouterr()
    assert "refdata mysql://db.example:3306/mor" in out.out and "s3cr3t-pw" not in out.out + out.err
    ini.write_text("[refdata]\nsource = mysql\nmysql_host = db\nmysql_user = c\nmysql_tls = maybe\n")
    assert cli.main(["check-config", "-c", str(ini)]) == 2
    assert "[refdata] mysql_tls: not a boolean" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ CLI
def test_db_sync_cli_output_and_exit_codes(tmp_path: Path, mor_db: MorDb,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    ini = tmp_path / "c.ini"
    ini.write_text(mor_db.ini(tmp_path / "c.db"))
    assert load_settings(ini).refdata.mysql
    assert cli.main(["db", "sync", "-c", str(ini)]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert any(line.split()[:3] == ["users", "added", "7"] for line in lines), out.out
    assert any(line.split()[:3] == ["destinations", "added", "11"] for line in lines), out.out
    assert "0 row(s) skipped" in lines[-1] and READER_PASSWORD not in out.out + out.err
    # a change in MOR: one DID moved, one added
    mor_db.execute("UPDATE dids SET status = 'reserved' WHERE id = 1",
                   "INSERT INTO dids (id, did, status) VALUES (99, '37052000099', 'free')",
                   "DELETE FROM dids WHERE id = 4")
    assert cli.main(["db", "sync", "-c", str(ini)]) == 0
    dids = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("dids"))
    assert dids.split()[1:7] == ["added", "1", "changed", "1", "removed", "1"]
    # MySQL unreachable: one error line, exit 2, no password
    ini.write_text(mor_db.ini(tmp_path / "c.db").replace(f"mysql_port = {mor_db.server.port}", "mysql_port = 1"))
    assert cli.main(["db", "sync", "-c", str(ini)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("collector db sync: error: cannot connect to mysql://127.0.0.1:1/")
    assert READER_PASSWORD not in err
    # not configured for MySQL
    ini.write_text(f"[database]\npath = {tmp_path}/c.db\n")
    assert cli.main(["db", "sync", "-c", str(ini)]) == 2
    assert "source is 'file': nothing to sync" in capsys.readouterr().err
    assert cli.main(["db", "sync", "-c", str(tmp_path / "missing.ini")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_later_syncs_read_only_what_changed_and_its_dependents(tmp_path: Path, mor_db: MorDb) -> None:
    db = tmp_path / "c.db"
    mor_db.execute("INSERT INTO devices (id, name, device_type, user_id, location_id) "
                   "VALUES (50, 'late', 'SIP', 77, 1)")
    first = sync_once(settings_of(mor_db), db)
    assert first.ok and [(s.table, s.id) for s in first.skipped] == [("devices", 50)]
    assert first.state is not None and first.state.fingerprints
    # nothing changed: nothing read, nothing written, the skip still reported
    same = sync_once(settings_of(mor_db), db, first.state)
    assert same.ok and same.tables == {} and not same.changed
    assert [(s.table, s.id) for s in same.skipped] == [("devices", 50)]
    # a destination renamed: only destinations read
    mor_db.execute("UPDATE destinations SET name = 'Renamed' WHERE id = 1",
                   "UPDATE users SET balance = balance + 1")  # a column we do not read: no re-read of users
    one = sync_once(settings_of(mor_db), db, same.state)
    assert one.ok and set(one.tables) == {"destinations"} and one.tables["destinations"].changed == 1
    # the missing user appears: users and its dependents re-read, the device comes in
    mor_db.execute("INSERT INTO users (id, username, usertype, owner_id) VALUES (77, 'late', 'user', 0)")
    back = sync_once(settings_of(mor_db), db, one.state)
    assert back.ok and {"users", "devices", "providers", "dids"} <= set(back.tables)
    assert back.skipped == [] and back.tables["devices"].added == 1
    # Bob is deleted in MOR while his device stays: that device (an unchanged row) is now skipped
    mor_db.execute("DELETE FROM users WHERE id = 3")
    gone = sync_once(settings_of(mor_db), db, back.state)
    assert gone.ok, gone.error
    assert {(s.table, s.id) for s in gone.skipped} >= {("devices", 2)}
    assert 3 not in {u.id for u in load_refdata(db).users}
