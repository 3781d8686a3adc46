"""Reference data in SQLite (MOR's table and column names): schema, migrations, validated import, export
and the read-only load into the frozen records of ``collector.refdata.model``.

Why a validating importer: enrichment trusts the indexes it builds (one device per channel peer, one
destination per prefix, every reference resolvable), so bad data is refused at the door, whole files at
a time, instead of being half-applied and discovered during a live call.

Conventions kept from MOR: the admin's user id is 0; an optional reference (a DID's device, a
destination's group, a user's owner …) is 0 when unset, so 0 is never checked against its table (an
owner 0 is the admin). No SQL foreign keys are declared for that reason; references are validated here.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn, Protocol, runtime_checkable

from sqlite_utils import Database

from collector.refdata.index import tech_class
from collector.refdata.model import (
    Destination, DestinationGroup, Device, Did, Direction, Location, LocationRule, Provider, RefData,
    Server, User,
)

__all__ = [
    "ACTIVECALLS_COLUMNS", "DEFAULT_DB_PATH", "ImportValidationError", "MIGRATIONS", "REF_TABLES",
    "RefDataError", "RefSource", "SCHEMA_VERSION", "SqliteRefSource", "demo_data", "export_db",
    "import_data", "import_file", "init_db", "load_demo", "load_refdata", "migrate", "open_db",
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

#: MOR's live table mirror (written by the live table, not by this module): column → SQLite type.
ACTIVECALLS_COLUMNS: dict[str, type] = {
    "id": int, "server_id": int, "uniqueid": str, "linkedid": str, "channel": str, "dstchannel": str,
    "src": str, "dst": str, "status": str, "start_time": float, "answer_time": float,
    "src_device_id": int, "dst_device_id": int, "provider_id": int, "did_id": int, "user_id": int,
    "owner_id": int, "localized_dst": str, "prefix": str, "legs_json": str,
}

USERTYPES = frozenset(("admin", "reseller", "user", "accountant"))
LR_TYPES = frozenset(("dst", "src"))
_DIGITS = re.compile(r"[0-9]+")
_CSV_INT = re.compile(r"[+-]?[0-9]+")


class RefDataError(Exception):
    """Reference data cannot be opened, read or written as asked."""


class ImportValidationError(RefDataError, ValueError):
    """A file (or data set) was refused as a whole; names the table, the row and why.

    ``row`` is the 1-based position of the row in its table's list (JSON) or among the data lines of a
    CSV file (line ``row + 1``); ``None`` for whole-file problems, or with ``existing_id`` for a row
    already in the database that the import would break (``replace``)."""

    def __init__(self, table: str, row: int | None, reason: str, *, source: str = "",
                 existing_id: int | None = None) -> None:
        self.table = table
        self.row = row
        self.reason = reason
        self.source = source
        self.existing_id = existing_id
        super().__init__(self._message())

    def _message(self) -> str:
        where = [self.source] if self.source else []
        if self.table and self.row is not None:
            where.append(f"{self.table} row {self.row}")
        elif self.table and self.existing_id is not None:
            where.append(f"{self.table} id {self.existing_id} (already in the database)")
        elif self.table:
            where.append(self.table)
        return ": ".join([*where, self.reason])


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


def _m003_activecalls(db: Database) -> None:
    """MOR's live table mirror; ``legs_json`` is a JSON list of the call's legs."""
    cols = dict(ACTIVECALLS_COLUMNS)
    db.table("activecalls").create(cols, pk="id", not_null={"server_id", "uniqueid", "linkedid"},
                                   if_not_exists=True)
    db.table("activecalls").create_index(["server_id", "linkedid"], unique=True, if_not_exists=True)


#: Applied in order at every start; version N = the first N applied. Each one is idempotent.
MIGRATIONS: tuple[Migration, ...] = (_m001_reference_tables, _m002_lookup_indexes, _m003_activecalls)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(db: Database) -> int:
    """Highest applied migration; 0 for an empty database."""
    if "schema_version" not in db.table_names():
        return 0
    row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
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
                        datetime.now(timezone.utc).isoformat(timespec="seconds")])
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


def _read_tables(conn: sqlite3.Connection) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for table, cls in REF_TABLES.items():
        names = _columns(cls)
        cols = ", ".join(f'"{c}"' for c in names)
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


def load_refdata(path: str | Path) -> RefData:
    """Everything, read-only (never creates or migrates; the daemon may run beside ``db import``)."""
    p = Path(path)
    if not p.is_file():
        raise RefDataError(f"{p}: no such database (run `collector db init` or `collector db demo`)")
    conn = sqlite3.connect(p.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        try:
            version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
        except sqlite3.OperationalError:
            version = 0
        if version < 1:
            raise RefDataError(f"{p}: database not initialized (run `collector db init`)")
        tables = _read_tables(conn)
    finally:
        conn.close()
    data = RefData(**tables)
    log.info("reference data loaded path=%s %s", p,
             " ".join(f"{t}={len(rows)}" for t, rows in tables.items()))
    return data


def export_db(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """All reference tables as ``{table: [row, …]}`` in dependency order; ``import_data`` accepts it."""
    data = load_refdata(path)
    return {table: [_as_dict(r) for r in getattr(data, table)] for table in REF_TABLES}


def _as_dict(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in _columns(type(record))}


# ---------------------------------------------------------------------------------------------- import
@dataclass(frozen=True, slots=True)
class _Col:
    name: str
    kind: type  # int | str
    required: bool


def _table_columns(cls: type) -> dict[str, _Col]:
    out = {}
    for f in fields(cls):
        kind = int if f.type in ("int", int) else str
        out[f.name] = _Col(f.name, kind, f.default is MISSING and f.default_factory is MISSING)
    return out


_TABLE_COLS: dict[str, dict[str, _Col]] = {t: _table_columns(c) for t, c in REF_TABLES.items()}


@dataclass(slots=True)
class _Entry:
    record: Any
    row: int | None  # 1-based row in the imported file; None = already in the database


class _RowError(Exception):
    pass


def _coerce(col: _Col, value: Any, from_csv: bool) -> Any:
    if col.kind is int:
        if from_csv and isinstance(value, str):
            text = value.strip()
            if not _CSV_INT.fullmatch(text):
                raise _RowError(f"{col.name}: expected an integer, got {value!r}")
            return int(text)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _RowError(f"{col.name}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if not isinstance(value, str):
        hint = " (quote numbers to keep leading zeros)" if isinstance(value, (int, float)) else ""
        raise _RowError(f"{col.name}: expected a string, got {type(value).__name__} {value!r}{hint}")
    return value


def _build_record(table: str, raw: Any, from_csv: bool) -> Any:
    if not isinstance(raw, Mapping):
        raise _RowError(f"expected an object with column names, got {type(raw).__name__}")
    cols = _TABLE_COLS[table]
    if None in raw:  # csv.DictReader: more cells than header columns
        raise _RowError("more cells than columns in the header")
    unknown = [k for k in raw if k not in cols]
    if unknown:
        raise _RowError(f"unknown column {unknown[0]!r} (known: {', '.join(cols)})")
    values: dict[str, Any] = {}
    for name, col in cols.items():
        value = raw.get(name)
        if value is None or (from_csv and value == ""):
            if col.required:
                raise _RowError(f"missing required column {name!r}")
            continue
        values[name] = _coerce(col, value, from_csv)
    return REF_TABLES[table](**values)


def _parse_file(file: Path) -> tuple[dict[str, list[Any]], bool]:
    """(rows by table, from_csv) of a JSON ``{table: [rows]}`` file or a CSV named after its table."""
    source = file.name
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportValidationError("", None, f"not UTF-8 text: {exc}", source=source) from None
    if file.suffix.lower() == ".csv":
        table = file.stem
        if table not in REF_TABLES:
            raise ImportValidationError("", None, f"CSV file name must name a table "
                                        f"({', '.join(REF_TABLES)}), got {table!r}", source=source)
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            if not reader.fieldnames:
                raise ImportValidationError(table, None, "empty file: no header line", source=source)
            rows: list[Any] = list(reader)
        except csv.Error as exc:
            raise ImportValidationError(table, None, f"bad CSV: {exc}", source=source) from None
        return {table: rows}, True
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportValidationError("", None, f"not valid JSON: {exc}", source=source) from None
    return data, False


def import_file(path: str | Path, file: str | Path, *, replace: bool = False) -> dict[str, int]:
    """Import one JSON (``{table: [rows…]}``) or CSV (``<table>.csv``) file in one transaction.

    Rows are upserted by ``id``; with ``replace`` the tables present in the file are emptied first.
    Any bad row rejects the whole file (``ImportValidationError``) and nothing is written. Returns the
    number of rows written per table."""
    f = Path(file)
    data, from_csv = _parse_file(f)
    return _import(path, data, replace=replace, source=f.name, from_csv=from_csv)


def import_data(path: str | Path, data: Any, *, replace: bool = False, source: str = "") -> dict[str, int]:
    """``import_file`` for data already in memory (``{table: [row dicts…]}``, JSON types)."""
    return _import(path, data, replace=replace, source=source, from_csv=False)


def _import(path: str | Path, data: Any, *, replace: bool, source: str, from_csv: bool) -> dict[str, int]:
    if not isinstance(data, Mapping):
        raise ImportValidationError("", None, "top level must be an object {table: [rows…]}", source=source)
    parsed: dict[str, list[_Entry]] = {}
    for table, rows in data.items():
        if table not in REF_TABLES:
            raise ImportValidationError(str(table), None, f"unknown table (known: {', '.join(REF_TABLES)})",
                                        source=source)
        if not isinstance(rows, list):
            raise ImportValidationError(table, None, "must be a list of rows", source=source)
        entries = []
        for n, raw in enumerate(rows, 1):
            try:
                entries.append(_Entry(_build_record(table, raw, from_csv), n))
            except _RowError as exc:
                raise ImportValidationError(table, n, str(exc), source=source) from None
            except TypeError as exc:  # pragma: no cover - records reject nothing _build_record allows
                raise ImportValidationError(table, n, str(exc), source=source) from None
        parsed[table] = entries

    db = open_db(path)
    try:
        existing = _read_tables(db.conn)
        state = _merge(existing, parsed, replace, source)
        _validate(state, source)
        with db.atomic():
            for table in REF_TABLES:
                if table not in parsed:
                    continue
                if replace:
                    db.execute(f'DELETE FROM "{table}"')
                rows = [_as_dict(e.record) for e in parsed[table]]
                if rows:
                    db.table(table).insert_all(rows, replace=True, batch_size=500)
    finally:
        db.close()
    counts = {t: len(e) for t, e in parsed.items()}
    log.info("reference data imported source=%s replace=%s %s", source or "<data>", replace,
             " ".join(f"{t}={n}" for t, n in counts.items()))
    return counts


def _merge(existing: Mapping[str, Sequence[Any]], parsed: Mapping[str, list[_Entry]], replace: bool,
           source: str) -> dict[str, dict[int, _Entry]]:
    """The tables as they would be after the import, each row remembering where it came from."""
    state: dict[str, dict[int, _Entry]] = {}
    for table in REF_TABLES:
        rows: dict[int, _Entry] = {}
        if not (replace and table in parsed):
            rows = {r.id: _Entry(r, None) for r in existing[table]}
        seen: dict[int, int] = {}
        for entry in parsed.get(table, ()):
            rid = entry.record.id
            if rid in seen:
                raise ImportValidationError(table, entry.row, f"duplicate id {rid} (also row {seen[rid]})",
                                            source=source)
            seen[rid] = entry.row or 0
            rows.pop(rid, None)  # keep file order for blame: an updated row counts as the file's
            rows[rid] = entry
        state[table] = rows
    return state


def _validate(state: Mapping[str, Mapping[int, _Entry]], source: str) -> None:
    """Field values, unique keys and references of the resulting state; raises on the first problem,
    blaming the imported row when one is involved."""

    def fail(table: str, entry: _Entry, reason: str) -> NoReturn:
        if entry.row is None:
            raise ImportValidationError(table, None, reason, source=source, existing_id=entry.record.id)
        raise ImportValidationError(table, entry.row, reason, source=source)

    def where(entry: _Entry) -> str:
        return f"row {entry.row}" if entry.row is not None else f"id {entry.record.id} in the database"

    def unique(table: str, key: Callable[[Any], Any], label: str) -> None:
        seen: dict[Any, _Entry] = {}
        for entry in state[table].values():
            k = key(entry.record)
            other = seen.get(k)
            if other is None:
                seen[k] = entry
                continue
            culprit, first = (entry, other) if entry.row is not None or other.row is None else (other, entry)
            fail(table, culprit, f"duplicate {label} {k!r} (also {where(first)})")

    def ref(table: str, entry: _Entry, column: str, target: str, optional: bool = True) -> Any:
        value = getattr(entry.record, column)
        if optional and value == 0:
            return None
        found = state[target].get(value)
        if found is None:
            fail(table, entry, f"{column} {value} not found in {target}")
        return found.record if found else None

    def nonempty(table: str, entry: _Entry, *columns: str) -> None:
        for c in columns:
            if not str(getattr(entry.record, c)).strip():
                fail(table, entry, f"{c} must not be empty")

    def flag(table: str, entry: _Entry, *columns: str) -> None:
        for c in columns:
            if getattr(entry.record, c) not in (0, 1):
                fail(table, entry, f"{c} must be 0 or 1, got {getattr(entry.record, c)}")

    for table, rows in state.items():
        for entry in rows.values():
            if entry.record.id < 0:
                fail(table, entry, f"id must be >= 0, got {entry.record.id}")

    admins = 0
    for e in state["users"].values():
        u: User = e.record
        nonempty("users", e, "username")
        if u.usertype not in USERTYPES:
            fail("users", e, f"usertype must be one of {', '.join(sorted(USERTYPES))}, got {u.usertype!r}")
        if u.usertype == "admin":
            admins += 1
            if admins > 1:
                fail("users", e, "a second admin user (MOR has exactly one)")
        if u.owner_id != 0 and u.owner_id != u.id:
            owner = ref("users", e, "owner_id", "users")
            if owner is not None and owner.usertype not in ("admin", "reseller"):
                fail("users", e, f"owner_id {u.owner_id} is a {owner.usertype}, not an admin or reseller")
    unique("users", lambda u: u.username, "username")

    for e in state["locations"].values():
        nonempty("locations", e, "name")
    for e in state["locationrules"].values():
        r: LocationRule = e.record
        ref("locationrules", e, "location_id", "locations", optional=False)
        flag("locationrules", e, "enabled")
        if r.lr_type not in LR_TYPES:
            fail("locationrules", e,
                 f"lr_type must be one of {', '.join(sorted(LR_TYPES))}, got {r.lr_type!r}")
        if r.minlen < 0 or r.maxlen < r.minlen:
            fail("locationrules", e, f"need 0 <= minlen <= maxlen, got minlen {r.minlen} maxlen {r.maxlen}")

    for e in state["directions"].values():
        nonempty("directions", e, "name", "code")
    unique("directions", lambda d: d.code, "code")
    unique("directions", lambda d: d.name.strip().lower(), "name")
    codes = {e.record.code for e in state["directions"].values()}
    for e in state["destinationgroups"].values():
        nonempty("destinationgroups", e, "name")
    for e in state["destinations"].values():
        d: Destination = e.record
        nonempty("destinations", e, "name")
        if not _DIGITS.fullmatch(d.prefix):
            fail("destinations", e, f"prefix must be digits, got {d.prefix!r}")
        if d.direction_code not in codes:
            fail("destinations", e, f"direction_code {d.direction_code!r} not found in directions")
        ref("destinations", e, "destinationgroup_id", "destinationgroups")
    unique("destinations", lambda d: d.prefix, "prefix")

    for e in state["devices"].values():
        nonempty("devices", e, "device_type", "name")
        flag("devices", e, "istrunk", "ani")
        ref("devices", e, "user_id", "users", optional=False)
        ref("devices", e, "location_id", "locations", optional=False)
    unique("devices", lambda d: (tech_class(d.device_type), d.name), "device (type class, name)")

    for e in state["providers"].values():
        nonempty("providers", e, "name", "tech", "peer")
        ref("providers", e, "user_id", "users")
    unique("providers", lambda p: (tech_class(p.tech), p.peer), "provider trunk (tech class, peer)")

    for e in state["dids"].values():
        did: Did = e.record
        if not _DIGITS.fullmatch(did.did):
            fail("dids", e, f"did must be digits, got {did.did!r}")
        ref("dids", e, "user_id", "users")
        device = ref("dids", e, "device_id", "devices")
        ref("dids", e, "provider_id", "providers")
        reseller = ref("dids", e, "reseller_id", "users")
        if reseller is not None and reseller.usertype != "reseller":
            fail("dids", e, f"reseller_id {did.reseller_id} is a {reseller.usertype}, not a reseller")
        if device is not None and did.user_id not in (0, device.user_id):
            fail("dids", e, f"user_id {did.user_id} does not own device {did.device_id} "
                            f"(its user is {device.user_id})")
    unique("dids", lambda d: d.did, "did")


# ---------------------------------------------------------------------------------------------- demo
def demo_data() -> dict[str, list[dict[str, Any]]]:
    """The bundled demo reference data (matches the devices, trunks and DIDs of the bundled traces)."""
    text = resources.files("collector").joinpath("data/demo.json").read_text(encoding="utf-8")
    data: dict[str, list[dict[str, Any]]] = json.loads(text)
    return data


def load_demo(path: str | Path) -> dict[str, int]:
    """Write the demo data (upsert by id: running it twice changes nothing)."""
    return import_data(path, demo_data(), source="demo.json")

