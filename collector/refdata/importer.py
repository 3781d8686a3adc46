"""Validated import of reference data (JSON / CSV files or in-memory dicts) and the bundled demo data.

Why a validating importer: enrichment trusts the indexes it builds (one device per channel peer, one
destination per prefix, every reference resolvable), so bad data is refused at the door, whole files at
a time, instead of being half-applied and discovered during a live call.

Conventions kept from MOR: the admin's user id is 0; an optional reference (a DID's device, a
destination's group, a user's owner …) is 0 when unset, so 0 is never checked against its table (an
owner 0 is the admin). No SQL foreign keys are declared for that reason; references are validated here.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Callable, Mapping
from importlib import resources
from operator import itemgetter
from pathlib import Path
from typing import Any, NoReturn

from collector.refdata.errors import ImportValidationError, RefDataError
from collector.refdata.importrows import SPECS, Row, parse_file, parse_rows
from collector.refdata.index import tech_class
from collector.refdata.store import REF_TABLES, open_db

__all__ = [
    "LR_TYPES", "USERTYPES", "ImportValidationError", "RefDataError", "demo_data",
    "import_data", "import_file", "load_demo",
]

log = logging.getLogger(__name__)

USERTYPES = frozenset(("admin", "reseller", "user", "accountant"))
LR_TYPES = frozenset(("dst", "src"))
_DIGITS = re.compile(r"[0-9]+")


# ---------------------------------------------------------------------------------------------- import
def import_file(path: str | Path, file: str | Path, *, replace: bool = False) -> dict[str, int]:
    """Import one JSON (``{table: [rows…]}``) or CSV (``<table>.csv``) file in one transaction.

    Rows are upserted by ``id``; with ``replace`` the tables present in the file are emptied first.
    Any bad row rejects the whole file (``ImportValidationError``) and nothing is written. Returns the
    number of rows written per table."""
    f = Path(file)
    data, from_csv = parse_file(f)
    return _import(path, data, replace=replace, source=f.name, from_csv=from_csv)


def import_data(path: str | Path, data: Any, *, replace: bool = False, source: str = "") -> dict[str, int]:
    """``import_file`` for data already in memory (``{table: [row dicts…]}``, JSON types)."""
    return _import(path, data, replace=replace, source=source, from_csv=False)


#: The tables each table's rules look into besides its own rows: a table's rules run when it or one of
#: these changed (an unchanged table whose targets did not change was valid and still is).
_RULE_TARGETS: dict[str, tuple[str, ...]] = {
    "servers": (), "users": (), "locations": (), "locationrules": ("locations",), "directions": (),
    "destinationgroups": (), "destinations": ("directions", "destinationgroups"),
    "devices": ("users", "locations"), "providers": ("users",), "dids": ("users", "devices", "providers"),
}
assert set(_RULE_TARGETS) == set(REF_TABLES)

def _import(path: str | Path, data: Any, *, replace: bool, source: str, from_csv: bool) -> dict[str, int]:
    if not isinstance(data, Mapping):
        raise ImportValidationError("", None, "top level must be an object {table: [rows…]}", source=source)
    parsed: dict[str, list[Row]] = {}
    for table, rows in data.items():
        if table not in REF_TABLES:
            raise ImportValidationError(str(table), None, f"unknown table (known: {', '.join(REF_TABLES)})",
                                        source=source)
        if not isinstance(rows, list):
            raise ImportValidationError(table, None, "must be a list of rows", source=source)
        parsed[table] = parse_rows(table, rows, from_csv, source)
    for table in REF_TABLES:
        if table in parsed:
            _check_ids(table, parsed[table], source)

    db = open_db(path)
    try:
        state = _State(db.conn, parsed, replace, source)
        _validate(state)
        conn = db.conn
        conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: a first import of 125,000 rows never spills
        conn.execute("BEGIN IMMEDIATE")  # the replace diff below reads what it then writes
        try:
            for table in REF_TABLES:
                if table in parsed:
                    (_replace_rows if replace else _write_rows)(conn, table, parsed[table])
            conn.execute("COMMIT")
        except BaseException:
            conn.rollback()
            raise
    finally:
        db.close()
    counts = {t: len(e) for t, e in parsed.items()}
    log.info("reference data imported source=%s replace=%s %s", source or "<data>", replace,
             " ".join(f"{t}={n}" for t, n in counts.items()))
    return counts


def _write_rows(conn: sqlite3.Connection, table: str, rows: list[Row]) -> None:
    """Upsert by id: one prepared statement, every column in record order (no per-row dict)."""
    if rows:
        conn.executemany(SPECS[table].insert_sql, rows)


def _replace_rows(conn: sqlite3.Connection, table: str, rows: list[Row]) -> None:
    """Make the table hold exactly ``rows``, touching only the rows that differ: the ones gone and the
    ones changed are deleted first, then the new and changed ones inserted (so a unique key moving from
    one row to another never meets itself). Same result as emptying the table and inserting everything,
    without rewriting 100,000 destinations and their indexes when one was renamed."""
    old = {r[0]: r for r in conn.execute(SPECS[table].select_sql)}
    write = [r for r in rows if old.get(r[0]) != r]
    drop = old.keys() - {r[0] for r in rows}
    drop.update(r[0] for r in write if r[0] in old)
    if drop:
        conn.executemany(f'DELETE FROM "{table}" WHERE id = ?', [(rid,) for rid in drop])
    _write_rows(conn, table, write)


def _check_ids(table: str, rows: list[Row], source: str) -> None:
    """No id twice in one table of the import."""
    if len({r[0] for r in rows}) == len(rows):
        return
    seen: dict[int, int] = {}
    for n, r in enumerate(rows, 1):
        rid = r[0]
        if rid in seen:
            raise ImportValidationError(table, n, f"duplicate id {rid} (also row {seen[rid]})", source=source)
        seen[rid] = n


class _State:
    """The tables as they would be after the import (id → row tuple, in blame order: rows kept from the
    database by id, then the imported ones in file order), for the tables whose rules must run and the
    tables those rules look into; the others are not read at all."""

    def __init__(self, conn: sqlite3.Connection, parsed: Mapping[str, list[Row]], replace: bool,
                 source: str) -> None:
        self.parsed = parsed
        self.source = source
        self.run = [t for t in REF_TABLES if t in parsed or parsed.keys() & set(_RULE_TARGETS[t])]
        needed = set(self.run).union(*(_RULE_TARGETS[t] for t in self.run))
        self.rows: dict[str, dict[int, Row]] = {}
        self._blame: dict[str, dict[int, int]] = {}
        for table in REF_TABLES:
            if table not in needed:
                continue
            new = parsed.get(table)
            if new is not None and replace:
                self.rows[table] = {r[0]: r for r in new}
                continue
            rows = {r[0]: r for r in conn.execute(SPECS[table].select_sql)}
            for r in new or ():
                rows.pop(r[0], None)  # keep file order for blame: an updated row counts as the file's
                rows[r[0]] = r
            self.rows[table] = rows

    def row_of(self, table: str, rid: int) -> int | None:
        """The 1-based row of the import that wrote ``rid``; None = a row already in the database."""
        blame = self._blame.get(table)
        if blame is None:
            blame = self._blame[table] = {r[0]: n for n, r in enumerate(self.parsed.get(table, ()), 1)}
        return blame.get(rid)

    def fail(self, table: str, rid: int, reason: str) -> NoReturn:
        row = self.row_of(table, rid)
        if row is None:
            raise ImportValidationError(table, None, reason, source=self.source, existing_id=rid)
        raise ImportValidationError(table, row, reason, source=self.source)

    def where(self, table: str, rid: int) -> str:
        row = self.row_of(table, rid)
        return f"row {row}" if row is not None else f"id {rid} in the database"

    def unique(self, table: str, key: Callable[[Row], Any], label: str) -> None:
        rows = self.rows[table]
        keys = list(map(key, rows.values()))
        if len(set(keys)) == len(keys):
            return
        seen: dict[Any, int] = {}
        for rid, k in zip(rows, keys, strict=True):
            other = seen.get(k)
            if other is None:
                seen[k] = rid
                continue
            imported = self.row_of(table, rid) is not None
            culprit, first = (rid, other) if imported or self.row_of(table, other) is None else (other, rid)
            self.fail(table, culprit, f"duplicate {label} {k!r} (also {self.where(table, first)})")

    def ref(self, table: str, rid: int, column: str, value: int, target: str, optional: bool = True) -> Row | None:
        if optional and value == 0:
            return None
        found = self.rows[target].get(value)
        if found is None:
            self.fail(table, rid, f"{column} {value} not found in {target}")
        return found

    def nonempty(self, table: str, rid: int, row: Row, *columns: str) -> None:
        index = SPECS[table].index
        for c in columns:
            if not str(row[index[c]]).strip():
                self.fail(table, rid, f"{c} must not be empty")

    def flag(self, table: str, rid: int, row: Row, *columns: str) -> None:
        index = SPECS[table].index
        for c in columns:
            if row[index[c]] not in (0, 1):
                self.fail(table, rid, f"{c} must be 0 or 1, got {row[index[c]]}")


def _col(table: str, name: str) -> int:
    return SPECS[table].index[name]


def _validate(st: _State) -> None:
    """Field values, unique keys and references of the resulting state, for the tables whose rules
    involve an imported table; raises on the first problem, blaming the imported row when one is
    involved. Rules run in a fixed order (ids, then table by table), so the first problem is the same
    one whatever else is wrong."""
    run = set(st.run)
    for table in st.run:
        rows = st.rows[table]
        if rows and min(rows) < 0:
            rid = next(r for r in rows if r < 0)
            st.fail(table, rid, f"id must be >= 0, got {rid}")

    # Privileges: exactly one admin, user id 0 (which the API's "owner 0" and MOR's data assume); every
    # other user is owned by the admin or by a reseller, and resellers and accountants by the admin, so
    # owner chains are one level deep and cannot loop.
    if "users" in run:
        users = st.rows["users"]
        i_type, i_owner = _col("users", "usertype"), _col("users", "owner_id")
        admins = 0
        for rid, u in users.items():
            st.nonempty("users", rid, u, "username")
            usertype, owner_id = u[i_type], u[i_owner]
            if usertype not in USERTYPES:
                st.fail("users", rid, f"usertype must be one of {', '.join(sorted(USERTYPES))}, got {usertype!r}")
            if usertype == "admin":
                admins += 1
                if admins > 1:
                    st.fail("users", rid, "a second admin user (MOR has exactly one)")
                if rid != 0:
                    st.fail("users", rid, f"the admin must have id 0, got {rid}")
                if owner_id != 0:
                    st.fail("users", rid, f"the admin's owner_id must be 0, got {owner_id}")
                continue
            if rid == 0:
                st.fail("users", rid, f"id 0 is the admin's, not a {usertype}'s")
            if owner_id == rid:
                st.fail("users", rid, f"owner_id {owner_id} is the user itself")
            if owner_id != 0:
                owner = st.ref("users", rid, "owner_id", owner_id, "users")
                if owner is not None and owner[i_type] not in ("admin", "reseller"):
                    st.fail("users", rid, f"owner_id {owner_id} is a {owner[i_type]}, not an admin or reseller")
                if usertype in ("reseller", "accountant"):
                    article = "an" if usertype == "accountant" else "a"
                    st.fail("users", rid,
                            f"{article} {usertype} must be owned by the admin (owner_id 0), got {owner_id}")
        if users and admins == 0:
            first = min(users, key=lambda r: (st.row_of("users", r) is None, st.row_of("users", r) or 0, r))
            st.fail("users", first, "no admin user: MOR needs exactly one, with id 0 and usertype admin")
        st.unique("users", itemgetter(_col("users", "username")), "username")

    if "locations" in run:
        for rid, loc in st.rows["locations"].items():
            st.nonempty("locations", rid, loc, "name")
    if "locationrules" in run:
        i_loc, i_type = _col("locationrules", "location_id"), _col("locationrules", "lr_type")
        i_min, i_max = _col("locationrules", "minlen"), _col("locationrules", "maxlen")
        for rid, r in st.rows["locationrules"].items():
            st.ref("locationrules", rid, "location_id", r[i_loc], "locations", optional=False)
            st.flag("locationrules", rid, r, "enabled")
            if r[i_type] not in LR_TYPES:
                st.fail("locationrules", rid,
                        f"lr_type must be one of {', '.join(sorted(LR_TYPES))}, got {r[i_type]!r}")
            if r[i_min] < 0 or r[i_max] < r[i_min]:
                st.fail("locationrules", rid, f"need 0 <= minlen <= maxlen, got minlen {r[i_min]} maxlen {r[i_max]}")

    if "directions" in run:
        i_name = _col("directions", "name")
        for rid, d in st.rows["directions"].items():
            st.nonempty("directions", rid, d, "name", "code")
        st.unique("directions", itemgetter(_col("directions", "code")), "code")
        st.unique("directions", lambda d: d[i_name].strip().lower(), "name")
    if "destinationgroups" in run:
        for rid, g in st.rows["destinationgroups"].items():
            st.nonempty("destinationgroups", rid, g, "name")
    if "destinations" in run:
        i_code = _col("directions", "code")
        codes = {d[i_code] for d in st.rows["directions"].values()}
        groups = st.rows["destinationgroups"]
        i_name, i_prefix = _col("destinations", "name"), _col("destinations", "prefix")
        i_dc, i_group = _col("destinations", "direction_code"), _col("destinations", "destinationgroup_id")
        digits = _DIGITS.fullmatch
        for rid, d in st.rows["destinations"].items():  # 100,000 rows: the checks inlined
            if not str(d[i_name]).strip():
                st.fail("destinations", rid, "name must not be empty")
            if not digits(d[i_prefix]):
                st.fail("destinations", rid, f"prefix must be digits, got {d[i_prefix]!r}")
            if d[i_dc] not in codes:
                st.fail("destinations", rid, f"direction_code {d[i_dc]!r} not found in directions")
            group = d[i_group]
            if group != 0 and group not in groups:
                st.fail("destinations", rid, f"destinationgroup_id {group} not found in destinationgroups")
        st.unique("destinations", itemgetter(i_prefix), "prefix")

    if "devices" in run:
        users, locations = st.rows["users"], st.rows["locations"]
        i_user, i_loc = _col("devices", "user_id"), _col("devices", "location_id")
        i_type, i_name = _col("devices", "device_type"), _col("devices", "name")
        for rid, dev in st.rows["devices"].items():
            st.nonempty("devices", rid, dev, "device_type", "name")
            st.flag("devices", rid, dev, "istrunk", "ani")
            if dev[i_user] not in users:
                st.fail("devices", rid, f"user_id {dev[i_user]} not found in users")
            if dev[i_loc] not in locations:
                st.fail("devices", rid, f"location_id {dev[i_loc]} not found in locations")
        st.unique("devices", lambda d: (tech_class(d[i_type]), d[i_name]), "device (type class, name)")

    if "providers" in run:
        i_user = _col("providers", "user_id")
        i_tech, i_peer = _col("providers", "tech"), _col("providers", "peer")
        for rid, p in st.rows["providers"].items():
            st.nonempty("providers", rid, p, "name", "tech", "peer")
            st.ref("providers", rid, "user_id", p[i_user], "users")
        st.unique("providers", lambda p: (tech_class(p[i_tech]), p[i_peer]), "provider trunk (tech class, peer)")

    if "dids" in run:
        i_did, i_user = _col("dids", "did"), _col("dids", "user_id")
        i_dev, i_prov, i_res = _col("dids", "device_id"), _col("dids", "provider_id"), _col("dids", "reseller_id")
        i_type, i_dev_user = _col("users", "usertype"), _col("devices", "user_id")
        for rid, did in st.rows["dids"].items():
            if not _DIGITS.fullmatch(did[i_did]):
                st.fail("dids", rid, f"did must be digits, got {did[i_did]!r}")
            st.ref("dids", rid, "user_id", did[i_user], "users")
            device = st.ref("dids", rid, "device_id", did[i_dev], "devices")
            st.ref("dids", rid, "provider_id", did[i_prov], "providers")
            reseller = st.ref("dids", rid, "reseller_id", did[i_res], "users")
            if reseller is not None and reseller[i_type] != "reseller":
                st.fail("dids", rid, f"reseller_id {did[i_res]} is a {reseller[i_type]}, not a reseller")
            if device is not None and did[i_user] not in (0, device[i_dev_user]):
                st.fail("dids", rid, f"user_id {did[i_user]} does not own device {did[i_dev]} "
                                     f"(its user is {device[i_dev_user]})")
        st.unique("dids", itemgetter(i_did), "did")


# ---------------------------------------------------------------------------------------------- demo
def demo_data() -> dict[str, list[dict[str, Any]]]:
    """The bundled demo reference data (matches the devices, trunks and DIDs of the bundled traces)."""
    text = resources.files("collector").joinpath("data/demo.json").read_text(encoding="utf-8")
    data: dict[str, list[dict[str, Any]]] = json.loads(text)
    return data


def load_demo(path: str | Path) -> dict[str, int]:
    """Write the demo data (upsert by id: running it twice changes nothing)."""
    return import_data(path, demo_data(), source="demo.json")

