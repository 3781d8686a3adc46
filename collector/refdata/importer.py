"""Validated import of reference data (JSON / CSV files or in-memory dicts) and the bundled demo data.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from collector.refdata.errors import ImportValidationError, RefDataError
from collector.refdata.index import tech_class
from collector.refdata.model import Destination, Did, LocationRule, User
from collector.refdata.store import REF_TABLES, as_dict, open_db, read_tables

__all__ = [
    "LR_TYPES", "USERTYPES", "ImportValidationError", "RefDataError", "demo_data",
    "import_data", "import_file", "load_demo",
]

log = logging.getLogger(__name__)

USERTYPES = frozenset(("admin", "reseller", "user", "accountant"))
LR_TYPES = frozenset(("dst", "src"))
_DIGITS = re.compile(r"[0-9]+")
_CSV_INT = re.compile(r"[+-]?[0-9]+")


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
        existing = read_tables(db.conn)
        state = _merge(existing, parsed, replace, source)
        _validate(state, source)
        with db.atomic():
            for table in REF_TABLES:
                if table not in parsed:
                    continue
                if replace:
                    db.execute(f'DELETE FROM "{table}"')
                rows = [as_dict(e.record) for e in parsed[table]]
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

    # Privileges: exactly one admin, user id 0 (which the API's "owner 0" and MOR's data assume); every
    # other user is owned by the admin or by a reseller, and resellers and accountants by the admin, so
    # owner chains are one level deep and cannot loop.
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
            if u.id != 0:
                fail("users", e, f"the admin must have id 0, got {u.id}")
            if u.owner_id != 0:
                fail("users", e, f"the admin's owner_id must be 0, got {u.owner_id}")
            continue
        if u.id == 0:
            fail("users", e, f"id 0 is the admin's, not a {u.usertype}'s")
        if u.owner_id == u.id:
            fail("users", e, f"owner_id {u.owner_id} is the user itself")
        if u.owner_id != 0:
            owner = ref("users", e, "owner_id", "users")
            if owner is not None and owner.usertype not in ("admin", "reseller"):
                fail("users", e, f"owner_id {u.owner_id} is a {owner.usertype}, not an admin or reseller")
            if u.usertype in ("reseller", "accountant"):
                article = "an" if u.usertype == "accountant" else "a"
                fail("users", e, f"{article} {u.usertype} must be owned by the admin (owner_id 0), got {u.owner_id}")
    if state["users"] and admins == 0:
        first = min(state["users"].values(), key=lambda e: (e.row is None, e.row or 0, e.record.id))
        fail("users", first, "no admin user: MOR needs exactly one, with id 0 and usertype admin")
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

