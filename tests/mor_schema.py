"""MOR's tables as /work/shared/notes/mor-database.md describes them (MOR's column types, extra columns
the sync must ignore, NULLs where MOR leaves them), and a filler that writes our reference data the way
MOR stores it: a provider's trunk as a ``devices`` row with ``user_id = -1``, API keys in ``conflines``,
empty optional values as NULL."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["MOR_DDL", "MOR_TABLES", "PROVIDER_DEVICE_BASE", "create_schema", "fill_from_refdata", "insert_rows"]

#: Provider devices get ids above every user device (MOR keeps both in ``devices``).
PROVIDER_DEVICE_BASE = 900_000

MOR_DDL: dict[str, str] = {
    "users": """CREATE TABLE users (id int NOT NULL AUTO_INCREMENT, username varchar(30) NOT NULL DEFAULT '',
        password varchar(100) NOT NULL DEFAULT '', usertype varchar(20) NOT NULL DEFAULT 'user',
        logged int DEFAULT 0, first_name varchar(50) DEFAULT '', last_name varchar(50) DEFAULT '',
        calltime_normative double DEFAULT 3, show_in_realtime_stats tinyint DEFAULT 0,
        balance double DEFAULT 0, owner_id int DEFAULT 0, hidden tinyint DEFAULT 0, blocked tinyint DEFAULT 0,
        hide_destination_end tinyint DEFAULT -1, own_providers int DEFAULT 0, time_zone varchar(255),
        responsible_accountant_id int DEFAULT -1, call_limit int DEFAULT 0, PRIMARY KEY (id))""",
    "devices": """CREATE TABLE devices (id int NOT NULL AUTO_INCREMENT, name varchar(100), host varchar(255),
        secret varchar(50), context varchar(50), ipaddr varchar(255), port int DEFAULT 0,
        device_type varchar(20), user_id int DEFAULT -1, extension varchar(50), username varchar(60),
        istrunk int DEFAULT 0, ani tinyint DEFAULT 0, location_id int DEFAULT 1, server_id int DEFAULT 1,
        callerid varchar(100), description varchar(255), call_limit int DEFAULT 0, PRIMARY KEY (id))""",
    "providers": """CREATE TABLE providers (id bigint NOT NULL AUTO_INCREMENT, name varchar(255),
        tech varchar(255), channel varchar(255), login varchar(255), password varchar(255),
        server_ip varchar(255), port varchar(255), device_id bigint, user_id int DEFAULT 0,
        common_use int DEFAULT 0, hidden int DEFAULT 0, call_limit int DEFAULT 0, PRIMARY KEY (id))""",
    "servers": """CREATE TABLE servers (id int NOT NULL AUTO_INCREMENT, server_id int, server_ip varchar(255),
        hostname varchar(255), comment varchar(255), server_type enum('asterisk','sip_proxy') DEFAULT 'asterisk',
        active tinyint DEFAULT 1, ami_port varchar(255) DEFAULT '5038', ami_username varchar(255),
        ami_secret varchar(255), maxcalllimit int DEFAULT 1000, PRIMARY KEY (id))""",
    "directions": """CREATE TABLE directions (id bigint NOT NULL AUTO_INCREMENT, name varchar(255),
        code varchar(20), PRIMARY KEY (id))""",
    "destinations": """CREATE TABLE destinations (id bigint NOT NULL AUTO_INCREMENT, prefix varchar(50),
        direction_code varchar(20), subcode varchar(255), name varchar(255), city varchar(255),
        state varchar(255), destinationgroup_id int, PRIMARY KEY (id), KEY prefix (prefix))""",
    "destinationgroups": """CREATE TABLE destinationgroups (id int NOT NULL AUTO_INCREMENT, name varchar(255),
        desttype varchar(10), flag varchar(10), PRIMARY KEY (id))""",
    "dids": """CREATE TABLE dids (id int NOT NULL AUTO_INCREMENT, did varchar(50), status varchar(255),
        user_id int DEFAULT 0, device_id int DEFAULT 0, subscription_id int DEFAULT 0,
        reseller_id int DEFAULT 0, provider_id int DEFAULT 0, dialplan_id int DEFAULT 0,
        call_limit int DEFAULT 0, PRIMARY KEY (id))""",
    "locations": """CREATE TABLE locations (id int NOT NULL AUTO_INCREMENT, name varchar(255), user_id int,
        PRIMARY KEY (id))""",
    "locationrules": """CREATE TABLE locationrules (id int NOT NULL AUTO_INCREMENT, location_id int,
        name varchar(255), enabled tinyint DEFAULT 1, cut varchar(255), `add` varchar(255), minlen int,
        maxlen int, lr_type enum('dst','src') DEFAULT 'dst', lcr_id int, tariff_id int, did_id int,
        device_id int, PRIMARY KEY (id))""",
    "conflines": """CREATE TABLE conflines (id int NOT NULL AUTO_INCREMENT, name varchar(255),
        value varchar(255), owner_id int DEFAULT 0, value2 blob, PRIMARY KEY (id))""",
}
MOR_TABLES: tuple[str, ...] = tuple(MOR_DDL)


def create_schema(server: Any, database: str) -> None:
    server.execute(list(MOR_DDL.values()), database)


def insert_rows(conn: Any, table: str, rows: Sequence[Mapping[str, Any]], batch: int = 2000) -> None:
    if not rows:
        return
    cols = list(rows[0])
    sql = (f"INSERT INTO `{table}` ({', '.join(f'`{c}`' for c in cols)}) "
           f"VALUES ({', '.join(['%s'] * len(cols))})")
    with conn.cursor() as cur:
        for i in range(0, len(rows), batch):
            cur.executemany(sql, [tuple(r[c] for c in cols) for r in rows[i:i + batch]])


def _none(value: Any, empty: Any) -> Any:
    return None if value == empty else value


def mor_rows(data: Mapping[str, Iterable[Mapping[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Our ``{table: [rows]}`` (the JSON importer's format) as MOR's rows."""
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in MOR_TABLES}
    for u in data.get("users", ()):
        out["users"].append({"id": u["id"], "username": u["username"], "password": u.get("password", ""),
                             "usertype": u["usertype"],
                             "first_name": _none(u.get("first_name", ""), ""),
                             "last_name": _none(u.get("last_name", ""), ""),
                             "owner_id": u.get("owner_id", 0), "time_zone": None, "balance": 12.5,
                             "call_limit": u.get("call_limit") or 0})  # MOR's "no limit" is 0 here
        if u.get("api_secret_key"):
            out["conflines"].append({"name": "API_Secret_Key", "value": u["api_secret_key"], "owner_id": u["id"],
                                     "value2": None})
    out["conflines"] += [{"name": n, "value": v, "owner_id": 0, "value2": None}
                         for n, v in (("Allow_API", "1"), ("Allow_GET_API", "0"),
                                      ("API_Disable_hash_checking", "0"), ("Active_Calls_Maximum_Calls", "100"))]
    for d in data.get("devices", ()):
        out["devices"].append({"id": d["id"], "name": d["name"], "device_type": d["device_type"],
                               "user_id": d["user_id"], "extension": _none(d.get("extension", ""), ""),
                               "username": d["name"], "istrunk": d.get("istrunk", 0), "ani": d.get("ani", 0),
                               "location_id": d.get("location_id", 1), "server_id": 1, "secret": "devsecret",
                               "callerid": None, "description": None,
                               "call_limit": d.get("call_limit")})  # ... and NULL here
    for p in data.get("providers", ()):
        dev = PROVIDER_DEVICE_BASE + p["id"]
        out["devices"].append({"id": dev, "name": p["peer"], "device_type": p["tech"], "user_id": -1,
                               "extension": None, "username": p["peer"], "istrunk": 1, "ani": 0,
                               "location_id": 1, "server_id": 1, "secret": "trunksecret", "callerid": None,
                               "description": None, "call_limit": 999})  # the trunk device's: not ours
        out["providers"].append({"id": p["id"], "name": p["name"], "tech": p["tech"], "device_id": dev,
                                 "user_id": p.get("user_id", 0), "server_ip": "10.0.0.1", "password": "pw",
                                 "common_use": 0, "call_limit": p.get("call_limit") or -1})
    for s in data.get("servers", ()):
        out["servers"].append({"id": s["id"] + 40, "server_id": s["id"], "server_ip": _none(s.get("server_ip", ""), ""),
                               "hostname": _none(s.get("hostname", ""), ""), "comment": s.get("comment", ""),
                               "ami_secret": "amisecret"})
    for t in ("directions",):
        out[t] = [dict(r) for r in data.get(t, ())]
    for g in data.get("destinationgroups", ()):
        out["destinationgroups"].append({"id": g["id"], "name": g["name"], "desttype": "FIX", "flag": None})
    for d in data.get("destinations", ()):
        out["destinations"].append({"id": d["id"], "prefix": d["prefix"], "direction_code": d["direction_code"],
                                    "subcode": _none(d.get("subcode", ""), ""), "name": d["name"], "city": None,
                                    "state": None, "destinationgroup_id": _none(d.get("destinationgroup_id", 0), 0)})
    for d in data.get("dids", ()):
        out["dids"].append({"id": d["id"], "did": d["did"], "status": d.get("status", "active"),
                            "user_id": d.get("user_id", 0), "device_id": d.get("device_id", 0),
                            "reseller_id": d.get("reseller_id", 0), "provider_id": d.get("provider_id", 0),
                            "dialplan_id": 0, "call_limit": d.get("call_limit") or 0})
    for loc in data.get("locations", ()):
        out["locations"].append({"id": loc["id"], "name": loc["name"], "user_id": 0})
    for r in data.get("locationrules", ()):
        out["locationrules"].append({"id": r["id"], "location_id": r["location_id"], "name": r.get("name", ""),
                                     "enabled": r.get("enabled", 1), "cut": _none(r.get("cut", ""), ""),
                                     "add": _none(r.get("add", ""), ""), "minlen": r.get("minlen", 1),
                                     "maxlen": r.get("maxlen", 100), "lr_type": r.get("lr_type", "dst"),
                                     "lcr_id": None, "tariff_id": None})
    return out


def fill_from_refdata(server: Any, database: str, data: Mapping[str, Iterable[Mapping[str, Any]]]) -> None:
    conn = server.admin(database)
    try:
        conn.autocommit(False)
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_AUTO_VALUE_ON_ZERO')")  # admin id 0
        for table, rows in mor_rows(data).items():
            insert_rows(conn, table, rows)
        conn.commit()
    finally:
        conn.close()
