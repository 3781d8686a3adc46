"""Reference data in SQLite (MOR's table and column names): schema, migrations, open/init, the
read-only load into the frozen records of ``collector.refdata.model``, and export.

The validated import and the demo data are in ``collector.refdata.importer``. Other tables may share
the database file (the live table's durable copy); their owners create them, not these migrations.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sqlite_utils import Database

from collector.refdata.errors import RefDataError
from collector.refdata.model import (
    Destination,
    DestinationGroup,
    Device,
    Did,
    Direction,
    Location,
    LocationRule,
    Provider,
    RefData,
    Server,
    User,
)

__all__ = [
    "CALL_LIMIT_TABLES",
    "DEFAULT_DB_PATH",
    "MIGRATIONS",
    "REF_TABLES",
    "SCHEMA_VERSION",
    "RefDataError",
    "RefSource",
    "SqliteRefSource",
    "as_dict",
    "export_db",
    "init_db",
    "load_refdata",
    "migrate",
    "open_db",
    "read_tables",
    "schema_version",
]

log = logging.getLogger(__name__)

DEFAULT_DB_PATH = "var/collector.db"

#: Reference tables in dependency order (a table only refers to tables before it), with their record.
REF_TABLES: dict[str, type] = {
    "servers": Server,
    "users": User,
    "locations": Location,
    "locationrules": LocationRule,
    "directions": Direction,
    "destinationgroups": DestinationGroup,
    "destinations": Destination,
    "devices": Device,
    "providers": Provider,
    "dids": Did,
}

# ---------------------------------------------------------------------------------------------- schema
Migration = Callable[[Database], None]


def _m001_reference_tables(db: Database) -> None:
    """Reference tables, MOR's names; every column NOT NULL with the record's default."""
    spec: dict[str, dict[str, tuple[type, Any]]] = {
        "servers": {"id": (int, None), "hostname": (str, ""), "server_ip": (str, ""), "comment": (str, "")},
        "users": {"id": (int, None), "username": (str, None), "usertype": (str, None),
                  "first_name": (str, ""), "last_name": (str, ""), "owner_id": (int, 0),
                  "api_secret_key": (str, "")},
        "locations": {"id": (int, None), "name": (str, None)},
        "locationrules": {"id": (int, None), "location_id": (int, None), "name": (str, ""),
                          "enabled": (int, 1), "cut": (str, ""), "add": (str, ""), "minlen": (int, 1),
                          "maxlen": (int, 100), "lr_type": (str, "dst")},
        "directions": {"id": (int, None), "name": (str, None), "code": (str, None)},
        "destinationgroups": {"id": (int, None), "name": (str, None)},
        "destinations": {"id": (int, None), "prefix": (str, None), "direction_code": (str, None),
                         "name": (str, None), "subcode": (str, ""), "destinationgroup_id": (int, 0)},
        "devices": {"id": (int, None), "user_id": (int, None), "device_type": (str, None),
                    "name": (str, None), "extension": (str, ""), "istrunk": (int, 0), "ani": (int, 0),
                    "location_id": (int, 1)},
        "providers": {"id": (int, None), "name": (str, None), "tech": (str, None), "peer": (str, None),
                      "user_id": (int, 0)},
        "dids": {"id": (int, None), "did": (str, None), "status": (str, "active"), "user_id": (int, 0),
                 "device_id": (int, 0), "provider_id": (int, 0), "reseller_id": (int, 0)},
    }
    for table, cols in spec.items():
        db.table(table).create(
            {name: kind for name, (kind, _d) in cols.items()}, pk="id", not_null=set(cols),
            defaults={name: d for name, (_k, d) in cols.items() if d is not None}, if_not_exists=True,
        )


def _m002_lookup_indexes(db: Database) -> None:
    """Unique business keys (what an import must not duplicate) and the lookups enrichment loads by."""
    for table, cols, unique in (
        ("users", ["username"], True),
        ("dids", ["did"], True),
        ("destinations", ["prefix"], True),
        ("directions", ["code"], True),
        ("destinations", ["direction_code"], False),
        ("devices", ["user_id"], False),
        ("devices", ["name"], False),
        ("locationrules", ["location_id"], False),
    ):
        db.table(table).create_index(cols, unique=unique, if_not_exists=True)


def _m003_retired(db: Database) -> None:
    """Kept so version numbers stay stable: it created the live table's mirror, whose DDL now lives only
    in ``collector.live.durable`` (which creates it itself). Databases already at version 3 keep theirs."""


#: Tables that gained MOR's ``call_limit`` in migration 4.
CALL_LIMIT_TABLES: tuple[str, ...] = ("users", "devices", "providers", "dids")


def _m004_call_limits(db: Database) -> None:
    """``call_limit`` (MOR's name) on users, devices, providers and DIDs: NULL = no limit, the only
    nullable column, so "no limit" has one spelling (the importer stores MOR's 0 / negative as NULL)."""
    for table in CALL_LIMIT_TABLES:
        if "call_limit" not in db.table(table).columns_dict:
            db.execute(f'ALTER TABLE "{table}" ADD COLUMN call_limit INTEGER')


def _m005_passwords(db: Database) -> None:
    """MOR's ``users.password`` (what the MOR sync reads; "" = none) and ``local_passwords``: salted
    scrypt hashes set with ``collector db set-password``. That table is not a reference table: neither
    the importer (even with ``--replace``) nor the MOR sync ever writes or empties it."""
    if "password" not in db.table("users").columns_dict:
        db.execute("ALTER TABLE users ADD COLUMN password TEXT NOT NULL DEFAULT ''")
    db.execute("CREATE TABLE IF NOT EXISTS local_passwords (username TEXT PRIMARY KEY, hash TEXT NOT NULL)")


#: Applied in order at every start; version N = the first N applied. Each one is idempotent; a released
#: one is never removed or reordered (the number is what a database records), only retired to a no-op.
MIGRATIONS: tuple[Migration, ...] = (_m001_reference_tables, _m002_lookup_indexes, _m003_retired,
                                     _m004_call_limits, _m005_passwords)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(db: Database | sqlite3.Connection) -> int:
    """Highest applied migration; 0 for an empty database. Takes a bare connection too, for the
    read-only load, which must not go through sqlite-utils' table creation helpers."""
    conn = db.conn if isinstance(db, Database) else db
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
                    ).fetchone() is None:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(db: Database, target: int | None = None) -> int:
    """Apply the missing migrations up to ``target`` (default: all) in one IMMEDIATE transaction, so
    two processes starting at once serialize instead of racing; returns the resulting version."""
    goal = SCHEMA_VERSION if target is None else target
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
               "name TEXT NOT NULL, applied_at TEXT NOT NULL)")
    db.execute("BEGIN IMMEDIATE")
    try:
        current = schema_version(db)
        if current > SCHEMA_VERSION:
            raise RefDataError(f"database schema version {current} is newer than this collector "
                               f"({SCHEMA_VERSION}); refusing to touch it")
        for version in range(current + 1, goal + 1):
            step = MIGRATIONS[version - 1]
            step(db)
            db.execute("INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                       [version, step.__name__.lstrip("_"),
                        datetime.now(UTC).isoformat(timespec="seconds")])
            log.info("schema migration applied version=%d name=%s", version, step.__name__)
        db.execute("COMMIT")
    except BaseException:
        db.rollback()
        raise
    return max(current, goal)


def open_db(path: str | Path) -> Database:
    """Open (creating the file and its directory) in WAL mode and bring the schema up to date."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = Database(path)
    try:
        db.execute("PRAGMA busy_timeout = 5000")
        db.enable_wal()
        migrate(db)
    except BaseException:
        db.close()
        raise
    return db


def init_db(path: str | Path) -> int:
    """Create or migrate the database; returns the schema version."""
    db = open_db(path)
    try:
        return schema_version(db)
    finally:
        db.close()


# ---------------------------------------------------------------------------------------------- loading
@runtime_checkable
class RefSource(Protocol):
    """Where reference data comes from (this SQLite file today; a MOR MySQL read-only sync later).
    Enrichment only ever sees the ``RefData`` it returns."""

    def load(self) -> RefData: ...


@dataclass(frozen=True, slots=True)
class SqliteRefSource:
    path: str | Path

    def load(self) -> RefData:
        return load_refdata(self.path)


def _columns(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


#: Low-cardinality text columns shared between rows instead of one string object per row (with
#: 100,000 destinations this is ~10 MiB of a reload).
_SHARED_TEXT: dict[str, tuple[str, ...]] = {
    "destinations": ("direction_code", "subcode"),
    "devices": ("device_type",),
    "dids": ("status",),
    "users": ("usertype",),
}


def read_tables(conn: sqlite3.Connection) -> dict[str, tuple[Any, ...]]:
    """Every reference table as records, by id (the load; the importer reads value tuples itself).

    The load never migrates, so it may meet a database of an older schema (the daemon beside an old
    file, a read-only copy): a column a later migration adds (only nullable ones are ever added) reads
    as NULL, the record's "not set"."""
    out: dict[str, tuple[Any, ...]] = {}
    for table, cls in REF_TABLES.items():
        names = _columns(cls)
        cols = ", ".join(_column_sql(conn, table, cls))
        rows = conn.execute(f'SELECT {cols} FROM "{table}" ORDER BY id')
        shared = [names.index(c) for c in _SHARED_TEXT.get(table, ())]
        if shared:
            pool: dict[str, str] = {}
            records = []
            for row in rows:
                values = list(row)
                for i in shared:
                    values[i] = pool.setdefault(values[i], values[i])
                records.append(cls(*values))
            out[table] = tuple(records)
        else:
            out[table] = tuple(cls(*row) for row in rows)
    return out


def _column_sql(conn: sqlite3.Connection, table: str, cls: type) -> list[str]:
    """The record's columns as select expressions; a column a later migration adds (absent from a database
    read read-only before ``db init`` migrated it) reads as the record's default, so an old file still loads."""
    present = {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}
    out = []
    for f in fields(cls):
        if f.name in present or f.default is MISSING:
            out.append(f'"{f.name}"')
        else:
            out.append(f'{_literal(f.default)} AS "{f.name}"')
    return out


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(int(value))
    return "'" + str(value).replace("'", "''") + "'"


def load_refdata(path: str | Path) -> RefData:
    """Everything, read-only (never creates or migrates; the daemon may run beside ``db import``)."""
    p = Path(path)
    if not p.is_file():
        raise RefDataError(f"{p}: no such database (run `collector db init` or `collector db demo`)")
    conn = sqlite3.connect(p.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        if schema_version(conn) < 1:
            raise RefDataError(f"{p}: database not initialized (run `collector db init`)")
        tables = read_tables(conn)
    finally:
        conn.close()
    data = RefData(**tables)
    log.info("reference data loaded path=%s %s", p,
             " ".join(f"{t}={len(rows)}" for t, rows in tables.items()))
    return data


def export_db(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """All reference tables as ``{table: [row, …]}`` in dependency order; ``import_data`` accepts it."""
    data = load_refdata(path)
    return {table: [as_dict(r) for r in getattr(data, table)] for table in REF_TABLES}


def as_dict(record: Any) -> dict[str, Any]:
    """A record as its row (column → value), the shape both ``export_db`` and the importer write."""
    return {name: getattr(record, name) for name in _columns(type(record))}
