"""Password forms (ours: scrypt; MOR's: plain text or 40-hex sha1), the ``local_passwords`` store in the real
SQLite reference database (migration 5, never touched by the importer or the MOR sync) and MOR's
``users.password`` read by the sync from a real MariaDB."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.passwords import ScryptCost, hash_password, is_scrypt, verify_password
from collector.refdata.importer import demo_data, import_data
from collector.refdata.local_passwords import LocalPasswords
from collector.refdata.model import User
from collector.refdata.mor_sync import sync_once
from collector.refdata.store import load_refdata, migrate, open_db, schema_version
from tests.mariadb_support import MorDb
from tests.test_mor_mysql import settings_of

FAST = ScryptCost(n=2**4, r=1, p=1)  # property tests only: the format and logic, not the cost


# ------------------------------------------------------------------------------------------ pure forms
def test_hash_format_and_round_trip() -> None:
    stored = hash_password("correct horse")
    parts = stored.split("$")
    assert parts[:4] == ["scrypt", str(2**14), "8", "1"] and len(parts) == 6
    assert len(base64.b64decode(parts[4])) == 16 and len(base64.b64decode(parts[5])) == 32
    assert is_scrypt(stored)
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsE", stored)
    assert not verify_password("", stored)
    assert hash_password("correct horse") != stored  # a fresh salt every time


def test_empty_password_cannot_be_hashed() -> None:
    with pytest.raises(ValueError, match="empty"):
        hash_password("")


def test_mor_plain_text_and_sha1_forms() -> None:
    assert verify_password("s3cret", "s3cret")
    assert not verify_password("s3cre", "s3cret")
    sha1 = hashlib.sha1(b"s3cret").hexdigest()
    assert verify_password("s3cret", sha1)
    assert verify_password("s3cret", sha1.upper())
    assert not verify_password("other", sha1)
    assert verify_password(sha1, sha1)  # a 40-hex plain password still matches as plain text


@pytest.mark.parametrize("stored", [None, "", "scrypt$", "scrypt$16384$8$1$!!$AAAA", "scrypt$3$8$1$AAAA$AAAA",
                                    f"scrypt${2**24}$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,
                                    "scrypt$16384$8$1$AAAA"])
def test_missing_or_malformed_stored_forms_never_match(stored: str | None) -> None:
    assert not verify_password("", stored)
    assert not verify_password("scrypt$", stored)
    assert not verify_password("AAAA", stored)


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_property_only_the_password_itself_matches(password: str, other: str) -> None:
    stored = hash_password(password, FAST)
    assert verify_password(password, stored, FAST)
    assert verify_password(other, stored, FAST) == (other == password)
    assert verify_password(other, password, FAST) == (other == password)


def test_user_repr_hides_the_mor_password() -> None:
    user = User(1, "alice", "user", password="hunter2-secret")
    assert "hunter2-secret" not in repr(user)
    assert user.password == "hunter2-secret"


# ------------------------------------------------------------------------------------------ the store
def test_store_set_get_delete(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    import_data(db, demo_data())
    store = LocalPasswords(db)
    assert store.get("alice") is None
    assert store.user_exists("alice") and not store.user_exists("nobody")
    store.set("alice", "scrypt$x")
    assert store.get("alice") == "scrypt$x"
    store.set("alice", "scrypt$y")
    assert store.get("alice") == "scrypt$y"
    assert store.delete("alice") is True
    assert store.get("alice") is None
    assert store.delete("alice") is False


def test_store_without_database_or_table_reads_nothing(tmp_path: Path) -> None:
    assert LocalPasswords(tmp_path / "missing.db").get("alice") is None
    old = tmp_path / "v3.db"
    from sqlite_utils import Database

    v3 = Database(old)
    migrate(v3, target=3)
    v3.close()
    assert LocalPasswords(old).get("alice") is None  # read-only: the table is not there, nothing is created
    conn = sqlite3.connect(old)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'local_passwords'").fetchone() is None
    conn.close()


def test_a_version_3_database_still_loads_read_only_then_migrates(tmp_path: Path) -> None:
    from sqlite_utils import Database

    path = tmp_path / "v3.db"
    db = Database(path)
    migrate(db, target=3)
    db.table("users").insert({"id": 0, "username": "admin", "usertype": "admin"})
    db.close()
    data = load_refdata(path)  # read-only: the column migration 5 adds reads as its default
    assert data.users[0].username == "admin" and data.users[0].password == ""
    db = open_db(path)
    try:
        assert schema_version(db) == 5
        assert "password" in db["users"].columns_dict
        assert "local_passwords" in db.table_names()
    finally:
        db.close()


def test_import_replace_never_touches_local_passwords(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    import_data(db, demo_data())
    LocalPasswords(db).set("alice", "scrypt$kept")
    users = [{**u, "first_name": "Renamed"} for u in demo_data()["users"]]
    import_data(db, {"users": users}, replace=True)
    assert LocalPasswords(db).get("alice") == "scrypt$kept"
    assert {u.first_name for u in load_refdata(db).users} == {"Renamed"}


# ------------------------------------------------------------------------------------------ MOR's column
def test_mor_sync_reads_users_password_and_leaves_local_hashes(tmp_path: Path, mor_db: MorDb) -> None:
    sha1 = hashlib.sha1(b"reseller-pw").hexdigest()
    mor_db.execute("UPDATE users SET password = 'plain-admin-pw' WHERE username = 'admin'",
                   f"UPDATE users SET password = '{sha1}' WHERE username = 'reseller'")
    db = tmp_path / "c.db"
    LocalPasswords(db).set("alice", "scrypt$local")
    report = sync_once(settings_of(mor_db), db)
    assert report.ok, report.error
    users = {u.username: u for u in load_refdata(db).users}
    assert users["admin"].password == "plain-admin-pw"
    assert users["reseller"].password == sha1
    assert users["alice"].password == ""
    assert LocalPasswords(db).get("alice") == "scrypt$local"
    # a password change in MOR is a change the fingerprints see
    mor_db.execute("UPDATE users SET password = 'new-admin-pw' WHERE username = 'admin'")
    again = sync_once(settings_of(mor_db), db, report.state)
    assert again.ok and again.tables["users"].changed == 1
    assert {u.username: u for u in load_refdata(db).users}["admin"].password == "new-admin-pw"
    assert LocalPasswords(db).get("alice") == "scrypt$local"


@pytest.mark.parametrize("stored", [None, "", "plain-text", hashlib.sha1(b"pw").hexdigest(), "scrypt$bad",
                                    hash_password("pw")])
@pytest.mark.parametrize("password", ["pw", "wrong", ""])
def test_every_check_costs_exactly_one_default_scrypt_run(monkeypatch: pytest.MonkeyPatch, stored: str | None,
                                                          password: str) -> None:
    """Unknown user (None), no password (""), MOR's forms, a broken entry and ours: the same work each time,
    so response time does not tell them apart (counted, not timed)."""
    calls: list[tuple[int, int, int]] = []
    real = hashlib.scrypt

    def counting(pw: bytes, *, salt: bytes, n: int, r: int, p: int, maxmem: int = 0, dklen: int = 64) -> bytes:
        calls.append((n, r, p))
        return real(pw, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=dklen)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    verify_password(password, stored)
    assert calls == [(2**14, 8, 1)]


def test_export_masks_mor_passwords_unless_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from collector.service import dbcli

    db = tmp_path / "c.db"
    users = [{**u, "password": "mor-plain-pw"} if u["username"] == "alice" else u for u in demo_data()["users"]]
    import_data(db, {**demo_data(), "users": users})
    assert dbcli.main(["db", "export", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "mor-plain-pw" not in out
    alice = next(u for u in json.loads(out)["users"] if u["username"] == "alice")
    assert alice["password"] == "********"
    target = tmp_path / "full.json"
    assert dbcli.main(["db", "export", "--with-secrets", "--out", str(target), "--db", str(db)]) == 0
    again = tmp_path / "again.db"
    assert dbcli.main(["db", "import", str(target), "--db", str(again)]) == 0
    assert {u.username: u.password for u in load_refdata(again).users}["alice"] == "mor-plain-pw"
