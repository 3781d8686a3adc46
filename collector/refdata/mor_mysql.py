"""Read MOR's own MySQL/MariaDB database (read-only) into the JSON importer's ``{table: [rows]}`` format.

Why this shape: the validated importer (``collector.refdata.store.import_data``) stays the only gate into
the SQLite cache, so MOR data obeys exactly the rules a JSON file does; this module only maps MOR's
schema onto ours:

* explicit column lists (MOR's tables have many more columns; new ones never break us), checked first
  against ``information_schema`` so a missing table or column is one error naming all of them;
* NULL → the model's empty value (0 / "" / the record default) for optional fields; a NULL where the
  model needs a value skips the row; ``call_limit`` 0 / NULL / negative (MOR: no limit) → None;
* a provider's trunk lives in ``devices`` with ``user_id = -1``: those rows are not user devices, their
  ``name`` is the provider's ``peer``;
* ``users.password`` as MOR stores it (plain text, or a 40-hex sha1 in newer MORs), for the v2 login only;
* ``servers.server_id`` (the id AMI config and ``activecalls`` use) is our ``servers.id``;
* ``conflines`` per owner: ``API_Secret_Key`` → that owner's ``users.api_secret_key`` (owner 0 = the
  admin); ``Allow_API`` / ``Allow_GET_API`` / ``API_Disable_hash_checking`` are returned as
  ``ApiSwitches`` (our model keeps those switches in ``[api]``, not per owner).

Every table is read inside one consistent-snapshot, read-only transaction, so a MOR admin editing while
we read cannot give us a device whose user we did not see. Periodic syncs first ask the server for a
fingerprint of each table (row count and CRC32 aggregates over the columns we read, computed in C on
the server): only tables whose fingerprint moved, and the tables referring to them, are read again.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from collector.refdata.model import GLOBAL_LOCATION_ID
from collector.refdata.settings import RefdataSettings

__all__ = ["API_CONFLINES", "ApiSwitches", "DEPENDENTS", "MOR_COLUMNS", "MorSnapshot", "MorSyncError",
           "OUR_TABLES", "SOURCES", "Skipped", "connect", "connect_kwargs", "fingerprints", "read_mor",
           "tables_to_read"]

log = logging.getLogger(__name__)

#: MOR table → the columns read (nothing else is ever selected).
MOR_COLUMNS: dict[str, tuple[str, ...]] = {
    "servers": ("id", "server_id", "hostname", "server_ip", "comment"),
    "users": ("id", "username", "usertype", "first_name", "last_name", "owner_id", "call_limit", "password"),
    "locations": ("id", "name"),
    "locationrules": ("id", "location_id", "name", "enabled", "cut", "add", "minlen", "maxlen", "lr_type"),
    "directions": ("id", "name", "code"),
    "destinationgroups": ("id", "name"),
    "destinations": ("id", "prefix", "direction_code", "name", "subcode", "destinationgroup_id"),
    "devices": ("id", "user_id", "device_type", "name", "extension", "istrunk", "ani", "location_id",
                "call_limit"),
    "providers": ("id", "name", "tech", "device_id", "user_id", "call_limit"),
    "dids": ("id", "did", "status", "user_id", "device_id", "provider_id", "reseller_id", "call_limit"),
    "conflines": ("id", "name", "value", "owner_id"),
}

API_CONFLINES = ("API_Secret_Key", "Allow_API", "Allow_GET_API", "API_Disable_hash_checking")
PROVIDER_DEVICE_USER = -1  # MOR: devices.user_id of a provider's trunk device

_REQ = object()  # a field the model needs: NULL skips the row

#: our table → [(our field, MOR column, kind, default)]; kind int or str.
_FIELDS: dict[str, tuple[tuple[str, str, type, Any], ...]] = {
    "users": (("id", "id", int, _REQ), ("username", "username", str, _REQ), ("usertype", "usertype", str, _REQ),
              ("first_name", "first_name", str, ""), ("last_name", "last_name", str, ""),
              ("owner_id", "owner_id", int, 0), ("call_limit", "call_limit", int, None),
              ("password", "password", str, "")),
    "locations": (("id", "id", int, _REQ), ("name", "name", str, "")),
    "locationrules": (("id", "id", int, _REQ), ("location_id", "location_id", int, _REQ),
                      ("name", "name", str, ""), ("enabled", "enabled", int, 1), ("cut", "cut", str, ""),
                      ("add", "add", str, ""), ("minlen", "minlen", int, 1), ("maxlen", "maxlen", int, 100),
                      ("lr_type", "lr_type", str, "dst")),
    "directions": (("id", "id", int, _REQ), ("name", "name", str, ""), ("code", "code", str, "")),
    "destinationgroups": (("id", "id", int, _REQ), ("name", "name", str, "")),
    "destinations": (("id", "id", int, _REQ), ("prefix", "prefix", str, ""),
                     ("direction_code", "direction_code", str, ""), ("name", "name", str, ""),
                     ("subcode", "subcode", str, ""), ("destinationgroup_id", "destinationgroup_id", int, 0)),
    "devices": (("id", "id", int, _REQ), ("user_id", "user_id", int, _REQ),
                ("device_type", "device_type", str, ""), ("name", "name", str, ""),
                ("extension", "extension", str, ""), ("istrunk", "istrunk", int, 0), ("ani", "ani", int, 0),
                ("location_id", "location_id", int, GLOBAL_LOCATION_ID), ("call_limit", "call_limit", int, None)),
    "dids": (("id", "id", int, _REQ), ("did", "did", str, ""), ("status", "status", str, "active"),
             ("user_id", "user_id", int, 0), ("device_id", "device_id", int, 0),
             ("provider_id", "provider_id", int, 0), ("reseller_id", "reseller_id", int, 0),
             ("call_limit", "call_limit", int, None)),
}


class MorSyncError(Exception):
    """The sync could not run (driver missing, MySQL unreachable, schema not MOR's …): one line."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """A MOR row left out of the sync, and why (counted and logged, never fatal)."""

    table: str
    id: Any
    reason: str


@dataclass(frozen=True, slots=True)
class ApiSwitches:
    """MOR's per-owner API switches from ``conflines`` (None: not set for that owner)."""

    owner_id: int
    allow_api: bool | None = None
    allow_get_api: bool | None = None
    disable_hash_checking: bool | None = None


@dataclass(slots=True)
class MorSnapshot:
    data: dict[str, list[dict[str, Any]]]
    skipped: list[Skipped] = field(default_factory=list)
    api: dict[int, ApiSwitches] = field(default_factory=dict)
    read_seconds: float = 0.0
    fingerprints: dict[str, tuple[int, int, int]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- connect
def _driver() -> Any:
    try:
        import pymysql
    except ImportError:
        raise MorSyncError("[refdata] source = mysql needs PyMySQL: "
                           "pip install 'mor-active-calls-collector[mysql]'") from None
    return pymysql


def connect_kwargs(s: RefdataSettings) -> dict[str, Any]:
    """PyMySQL arguments for the settings (a socket replaces host/port; TLS through an SSLContext)."""
    kw: dict[str, Any] = {"user": s.mysql_user, "password": str(s.mysql_password), "database": s.mysql_database,
                          "charset": "utf8mb4", "connect_timeout": s.connect_timeout,
                          "read_timeout": s.read_timeout, "autocommit": False}
    if s.mysql_socket:
        kw["unix_socket"] = s.mysql_socket
    else:
        kw["host"] = s.mysql_host
        kw["port"] = s.mysql_port
    if s.mysql_tls:
        ctx = ssl.create_default_context(cafile=s.mysql_tls_ca or None)
        if not s.mysql_tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        kw["ssl"] = ctx
    return kw


def probe_unix_socket(path: str, timeout: float) -> None:
    """Raise ``OSError`` unless a server listens on ``path``. PyMySQL leaves its socket open when the
    connect itself fails (a server not started yet), so a socket path is tried with one of our own first."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)


def connect(s: RefdataSettings) -> Any:
    """An open PyMySQL connection, or ``MorSyncError`` naming where (never the password)."""
    pymysql = _driver()
    try:
        if s.mysql_socket:
            probe_unix_socket(s.mysql_socket, s.connect_timeout)
        return pymysql.connect(**connect_kwargs(s))
    except pymysql.MySQLError as exc:
        raise MorSyncError(f"cannot connect to {s.describe()}: {_mysql_message(exc)}") from None
    except (OSError, ssl.SSLError) as exc:
        raise MorSyncError(f"cannot connect to {s.describe()}: {exc}") from None


def _mysql_message(exc: BaseException) -> str:
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    if len(args) >= 2:
        return f"({args[0]}) {args[1]}"
    return str(exc) or type(exc).__name__


# ---------------------------------------------------------------------------------------------- read
def check_schema(cur: Any) -> None:
    """Every table and column we read exists (as the connected user sees it); else one error naming them."""
    cur.execute("SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()")
    have: dict[str, set[str]] = {}
    for table, column in cur.fetchall():
        have.setdefault(str(table).lower(), set()).add(str(column).lower())
    missing_tables = [t for t in MOR_COLUMNS if t not in have]
    missing_cols = [f"{t}.{c}" for t, cols in MOR_COLUMNS.items() if t in have
                    for c in cols if c not in have[t]]
    if missing_tables or missing_cols:
        parts = []
        if missing_tables:
            parts.append(f"missing table(s) {', '.join(missing_tables)} (or no SELECT grant on them)")
        if missing_cols:
            parts.append(f"missing column(s) {', '.join(missing_cols)}")
        raise MorSyncError("MOR schema: " + "; ".join(parts))


def _select(cur: Any, table: str, where: str = "") -> Iterator[tuple[Any, ...]]:
    cols = ", ".join(f"`{c}`" for c in MOR_COLUMNS[table])
    cur.execute(f"SELECT {cols} FROM `{table}`{where} ORDER BY `id`")
    while True:
        chunk = cur.fetchmany(5000)
        if not chunk:
            return
        yield from chunk


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _limit(value: int | None) -> int | None:
    """MOR's call_limit: 0 (its default), NULL or negative = no limit, our None (the importer would store
    None too; mapping it here keeps an unchanged MOR row equal to the cached one, so no sync rewrites it)."""
    return value if value is not None and value > 0 else None


def _flag(value: str | None) -> bool | None:
    if value is None or value.strip() == "":
        return None
    return value.strip() not in ("0", "no", "false")


class _Mapper:
    """Builds one table's rows from MOR tuples, recording skipped rows."""

    def __init__(self, skipped: list[Skipped]) -> None:
        self.skipped = skipped

    def rows(self, table: str, source: Iterator[tuple[Any, ...]],
             columns: tuple[str, ...] | None = None,
             keep: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        spec = _FIELDS[table]
        pos = {c: i for i, c in enumerate(columns or MOR_COLUMNS[table])}
        names = tuple(name for name, _c, _k, _d in spec)
        pick = itemgetter(*[pos[column] for _n, column, _k, _d in spec])  # every table maps 2+ columns
        kinds = tuple(kind for _n, _c, kind, _d in spec)
        limited = "call_limit" in names
        out: list[dict[str, Any]] = []
        text_pool: dict[str, str] = {}
        for raw in source:
            values = pick(raw)
            # the usual row: no NULL, ints and str already (C-level check); else the checked mapping
            row = dict(zip(names, values, strict=True)) if tuple(map(type, values)) == kinds else \
                self.one(table, spec, pos, raw, text_pool)
            if row is None:
                continue
            if limited:
                row["call_limit"] = _limit(row["call_limit"])
            if keep is None or keep(row):
                out.append(row)
        return out

    def one(self, table: str, spec: tuple[tuple[str, str, type, Any], ...], pos: dict[str, int],
            raw: tuple[Any, ...], pool: dict[str, str]) -> dict[str, Any] | None:
        row: dict[str, Any] = {}
        for name, column, kind, default in spec:
            value = raw[pos[column]]
            if value is None:
                if default is _REQ:
                    self.skip(table, raw[pos["id"]], f"{column} is NULL")
                    return None
                row[name] = default
            elif kind is int:
                try:
                    row[name] = int(value)
                except (TypeError, ValueError):
                    self.skip(table, raw[pos["id"]], f"{column} is not an integer: {value!r}")
                    return None
            else:
                s = _text(value)
                row[name] = pool.setdefault(s, s)  # 100,000 destinations share a few codes
        return row

    def skip(self, table: str, rid: Any, reason: str) -> None:
        self.skipped.append(Skipped(table, rid, reason))


#: Our table → the MOR tables its rows come from.
SOURCES: dict[str, tuple[str, ...]] = {
    "servers": ("servers",), "users": ("users", "conflines"), "locations": ("locations",),
    "locationrules": ("locationrules",), "directions": ("directions",),
    "destinationgroups": ("destinationgroups",), "destinations": ("destinations",), "devices": ("devices",),
    "providers": ("providers", "devices"), "dids": ("dids",),
}
#: Our table → the tables whose rows refer to it: re-read with it, so a row skipped for a missing
#: reference comes back when the reference appears (and a removed one is noticed).
DEPENDENTS: dict[str, tuple[str, ...]] = {
    "users": ("devices", "providers", "dids"), "locations": ("locationrules", "devices"),
    "directions": ("destinations",), "destinationgroups": ("destinations",), "devices": ("providers", "dids"),
    "providers": ("dids",),
}
OUR_TABLES: tuple[str, ...] = tuple(SOURCES)

Fingerprint = tuple[int, int, int]


def fingerprints(cur: Any) -> dict[str, Fingerprint]:
    """Per MOR table: (rows, BIT_XOR and SUM of CRC32 over the columns we read), computed by the server.
    MOR rewrites other columns all the time (balances, registrations), so CHECKSUM TABLE would not do."""
    out: dict[str, Fingerprint] = {}
    for table, cols in MOR_COLUMNS.items():
        row = "CONCAT_WS(0x1f, " + ", ".join(f"IFNULL(`{c}`, 0x00)" for c in cols) + ")"
        where = (" WHERE `name` IN (" + ", ".join(f"'{n}'" for n in API_CONFLINES) + ")"
                 if table == "conflines" else "")
        cur.execute(f"SELECT COUNT(*), COALESCE(BIT_XOR(CRC32({row})), 0), COALESCE(SUM(CRC32({row})), 0) "
                    f"FROM `{table}`{where}")
        n, x, total = cur.fetchall()[0]
        out[table] = (int(n), int(x), int(total))
    return out


def tables_to_read(now: dict[str, Fingerprint], before: dict[str, Fingerprint] | None) -> set[str]:
    """Our tables whose MOR sources changed since ``before`` (all without it), with their dependents."""
    if before is None:
        return set(OUR_TABLES)
    changed = {t for t, fp in now.items() if before.get(t) != fp}
    todo = {ours for ours, src in SOURCES.items() if changed.intersection(src)}
    stack = list(todo)
    while stack:
        for dep in DEPENDENTS.get(stack.pop(), ()):
            if dep not in todo:
                todo.add(dep)
                stack.append(dep)
    return todo


def read_mor(conn: Any, before: dict[str, Fingerprint] | None = None) -> MorSnapshot:
    """One consistent read of the tables that changed since ``before`` (every table without it);
    ``MorSyncError`` on a schema problem. ``snapshot.data`` holds only the tables read."""
    started = time.perf_counter()
    skipped: list[Skipped] = []
    m = _Mapper(skipped)
    data: dict[str, list[dict[str, Any]]] = {}
    pymysql = _driver()
    try:
        # unbuffered: rows stream in; a buffered result of 100,000 rows is freed in one GIL-holding go
        with conn.cursor(pymysql.cursors.SSCursor) as cur:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            check_schema(cur)
            fps = fingerprints(cur)
            todo = tables_to_read(fps, before)
            if "servers" in todo:
                data["servers"] = [{"id": int(server_id if server_id is not None else sid),
                                    "hostname": _text(hostname or ""), "server_ip": _text(ip or ""),
                                    "comment": _text(comment or "")}
                                   for sid, server_id, hostname, ip, comment in _select(cur, "servers")]
            if "users" in todo:
                data["users"] = m.rows("users", _select(cur, "users"))
            for table in ("locations", "locationrules", "directions", "destinationgroups", "destinations"):
                if table in todo:
                    data[table] = m.rows(table, _select(cur, table))
            if todo.intersection(("devices", "providers")):
                trunk_names: dict[int, str] = {}

                def user_device(row: dict[str, Any]) -> bool:
                    if row["user_id"] == PROVIDER_DEVICE_USER:
                        trunk_names[row["id"]] = row["name"]
                        return False
                    return True

                devices = m.rows("devices", _select(cur, "devices"), keep=user_device)
                if "devices" in todo:
                    data["devices"] = devices
                else:  # read for the trunk names only: their skips belong to the devices table
                    m.skipped[:] = [s for s in m.skipped if s.table != "devices"]
                if "providers" in todo:
                    names = {d["id"]: d["name"] for d in devices} | trunk_names
                    data["providers"] = _providers(m, _select(cur, "providers"), names)
            if "dids" in todo:
                data["dids"] = m.rows("dids", _select(cur, "dids"))
            conflines: list[tuple[Any, ...]] = []
            if "users" in todo:
                names_in = ", ".join(["%s"] * len(API_CONFLINES))
                cols = ", ".join(f"`{c}`" for c in MOR_COLUMNS["conflines"])
                cur.execute(f"SELECT {cols} FROM `conflines` WHERE `name` IN ({names_in}) ORDER BY `id`",
                            API_CONFLINES)
                conflines = list(cur.fetchall())
            cur.execute("COMMIT")
    except pymysql.MySQLError as exc:
        raise MorSyncError(f"reading MOR's database: {_mysql_message(exc)}") from None
    api = _apply_conflines(data["users"], conflines) if "users" in data else {}
    return MorSnapshot(data=data, skipped=skipped, api=api, read_seconds=time.perf_counter() - started,
                       fingerprints=fps)


def _providers(m: _Mapper, source: Iterator[tuple[Any, ...]], device_names: dict[int, str]) -> list[dict[str, Any]]:
    out = []
    for pid, name, tech, device_id, user_id, call_limit in source:
        if device_id is None or int(device_id) not in device_names:
            m.skip("providers", pid, f"device_id {device_id} not found in devices (its trunk peer name)")
            continue
        # the limit is the provider's own (providers.call_limit), not its trunk device's
        out.append({"id": int(pid), "name": _text(name or ""), "tech": _text(tech or ""),
                    "peer": device_names[int(device_id)], "user_id": int(user_id or 0),
                    "call_limit": _limit(None if call_limit is None else int(call_limit))})
    return out


def _apply_conflines(users: list[dict[str, Any]], rows: list[tuple[Any, ...]]) -> dict[int, ApiSwitches]:
    """Keys onto their owners' user rows (the last row of a name wins, as MOR reads the newest)."""
    values: dict[tuple[int, str], str | None] = {}
    for _id, name, value, owner in rows:
        values[(int(owner or 0), str(name))] = None if value is None else _text(value)
    by_id = {u["id"]: u for u in users}
    admin = next((u for u in users if u["usertype"] == "admin"), None)
    for u in users:
        u["api_secret_key"] = ""
    owners: set[int] = set()
    for (owner, name), value in values.items():
        owners.add(owner)
        if name != "API_Secret_Key" or not value:
            continue
        user = admin if owner == 0 else by_id.get(owner)
        if user is not None:
            user["api_secret_key"] = value
    return {o: ApiSwitches(o, _flag(values.get((o, "Allow_API"))), _flag(values.get((o, "Allow_GET_API"))),
                           _flag(values.get((o, "API_Disable_hash_checking")))) for o in sorted(owners)}
