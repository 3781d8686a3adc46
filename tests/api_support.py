"""Shared hand-built world for the API tests (reference data, live rows, clients, XML helpers).

Named test_api_* so it stays within the API's files; it holds no tests itself. Every row's visibility
is spelled out in VISIBLE so role tests and the property test check against one table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from aiohttp import web
from lxml import etree

from api.app import create_app
from api.deps import ApiDeps
from api.settings import ApiSettings
from collector.live.table import LiveCall
from collector.refdata.index import RefIndex
from collector.refdata.model import (
    Destination,
    DestinationGroup,
    Device,
    Did,
    Direction,
    Enrichment,
    Provider,
    RefData,
    Server,
    User,
)
from collector.tracking.calls import CallStatus, CallView, Leg

__all__ = [
    "ALL_IDS", "NOW", "PATH", "REFDATA", "REFS", "ROWS", "SECRETS", "USERS", "VISIBLE", "calls_of",
    "error_of", "make_app", "message_of", "parse", "raw_http", "row_dict", "sha", "signed",
    "status_error_of", "with_settings",
]

NOW = 1_795_701_000.0  # 2026-11-26 13:50:00 UTC, the traces' era
PATH = "/billing/api/active_calls_get"

USERS: tuple[User, ...] = (
    User(0, "admin", "admin", "System", "Admin", owner_id=0, api_secret_key="adminsecret"),
    User(1, "acc", "accountant", "Ann", "Counter", owner_id=0),
    User(2, "res", "reseller", "Reese", "Seller", owner_id=0, api_secret_key="ressecret"),
    User(3, "ruser", "user", "Rita", "User", owner_id=2),
    User(4, "alice", "user", "Alice <&>", '"Smith"', owner_id=0),
    User(5, "bob", "user", "", "", owner_id=0),
    User(6, "res2", "reseller", "No", "Secret", owner_id=0, api_secret_key=""),
    User(7, "r2user", "user", "Res2", "User", owner_id=6),
    User(8, "carol", "user", "Carol", "Ü☎", owner_id=2),
    User(9, "odd", "partner", "Odd", "Type", owner_id=0),  # unknown usertype → least privilege
)
SECRETS: Mapping[str, str] = {  # username → the secret that signs its requests
    "admin": "adminsecret", "acc": "adminsecret", "res": "ressecret", "ruser": "ressecret",
    "alice": "adminsecret", "bob": "adminsecret", "carol": "ressecret", "odd": "adminsecret",
}

REFDATA = RefData(
    users=USERS,
    devices=(
        Device(10, 4, "SIP", "101", "101"),
        Device(11, 4, "IAX2", "201", "201"),
        Device(12, 5, "SIP", "102", "102", ani=1),
        Device(13, 3, "SIP", "301", "301"),
        Device(14, 2, "SIP", "res-dev", "200", istrunk=1),
        Device(15, 8, "SIP", "801", "801"),
        Device(16, 7, "SIP", "701", "701"),
    ),
    providers=(Provider(1, "prov1", "SIP", "prov1", user_id=0), Provider(2, "resprov", "SIP", "rp", user_id=2),
               Provider(3, "res2prov", "SIP", "r2p", user_id=6)),
    servers=(Server(1, "pbx1"), Server(2, "pbx2"), Server(3, "idle")),
    directions=(Direction(1, "Philippines", "PHL"), Direction(2, "Lithuania", "LTU"),
                Direction(3, "United Kingdom", "GBR"), Direction(4, "Chad", "TCD")),
    destinations=(Destination(1, "63", "PHL", "Philippines proper", destinationgroup_id=1),
                  Destination(2, "4477", "GBR", "United Kingdom mobile", destinationgroup_id=2),
                  Destination(3, "370", "LTU", "Lithuania fixed", destinationgroup_id=3)),
    destinationgroups=(DestinationGroup(1, "Asia"), DestinationGroup(2, "UK mobile"),
                       DestinationGroup(3, "Baltic"), DestinationGroup(4, "Unused")),
    dids=(Did(1, "37052000001", user_id=5, device_id=12), Did(2, "37052000003", user_id=3, device_id=13,
          reseller_id=2), Did(3, "37052000002"), Did(4, "37052000009", user_id=8, device_id=15, reseller_id=2),
          Did(5, "37099999999", device_id=16)),
)
REFS = RefIndex.build(REFDATA)


def _user_info(uid: int) -> dict[str, Any]:
    u = REFS.users[uid]
    return {"user_id": uid, "user": u.display_name, "owner_id": u.owner_id}


def _dev_info(did: int) -> dict[str, Any]:
    d = REFS.devices[did]
    return {"src_device_id": d.id, "device_type": d.device_type, "device_extension": d.extension,
            "device_name": d.name, "device_istrunk": d.istrunk, "device_ani": d.ani}


def _dst_info(dev_id: int) -> dict[str, Any]:
    d = REFS.devices[dev_id]
    u = REFS.users[d.user_id]
    return {"has_dst": True, "dst_user_id": u.id, "dst_user": u.display_name, "dst_owner_id": u.owner_id,
            "dst_device_id": d.id, "dst_device_type": d.device_type, "dst_device_extension": d.extension,
            "dst_device_name": d.name, "dst_device_istrunk": d.istrunk, "dst_device_ani": d.ani}


def _dest(code: str) -> dict[str, Any]:
    table = {"PHL": ("Philippines", "Philippines proper", 1), "GBR": ("United Kingdom", "United Kingdom mobile", 2),
             "LTU": ("Lithuania", "Lithuania fixed", 3)}
    name, dest, group = table[code]
    return {"direction_code": code, "direction_name": name, "destination_name": dest,
            "destinationgroup_id": group}


def _prov(pid: int) -> dict[str, Any]:
    p = REFS.providers[pid]
    return {"provider_id": p.id, "provider_name": p.name, "provider_owner_id": p.user_id}


def _call(n: int, server: int, channel: str, src: str, dst: str, answered: float | None) -> CallView:
    uid = f"1795700{n:03d}.{n}"
    leg = Leg(uid, channel, 6 if answered else 4, False, NOW - 100 + n)
    return CallView(server_id=server, linkedid=uid, uniqueid=uid, channel=channel,
                    dst_channel="", status=CallStatus.ANSWERED if answered else CallStatus.RINGING,
                    src=src, src_name="", dst=dst, start_time=NOW - 100 + n, answer_time=answered,
                    legs=(leg,))


def _row(n: int, call: CallView, **info: Any) -> LiveCall:
    return LiveCall(n, call, Enrichment(**info))


# The rows, deliberately not in id order (the API must sort).
ROWS: tuple[LiveCall, ...] = (
    _row(5, _call(5, 1, "SIP/102-00000005", "102", "101", None),
         **_user_info(5), **_dev_info(12), localized_dst="101", **_dst_info(10)),
    _row(1, _call(1, 1, "SIP/101-00000001", "306984327345", "0063727007886", None),
         **_user_info(4), **_dev_info(10), localized_dst="63727007886", **_dest("PHL"), **_prov(1)),
    _row(2, _call(2, 2, "IAX2/201-14296", "201", "0044770096100", NOW - 65.4),
         **_user_info(4), **_dev_info(11), localized_dst="44770096100", **_dest("GBR"), **_prov(1)),
    _row(3, _call(3, 1, "SIP/301-00000003", "301", "0037052000000", NOW - 30),
         **_user_info(3), **_dev_info(13), localized_dst="37052000000", **_dest("LTU"), **_prov(2)),
    _row(4, _call(4, 1, "SIP/prov1-00000004", "306912345678", "37052000001", NOW - 10),
         localized_dst="37052000001", **_dest("LTU"), did_id=1, did="37052000001", **_dst_info(12)),
    _row(6, _call(6, 2, "SIP/prov1-00000006", "37061234567", "37052000003", None),
         localized_dst="37052000003", **_dest("LTU"), did_id=2, did="37052000003", **_dst_info(13)),
    _row(7, _call(7, 1, "SIP/res-dev-00000007", "200", "0044770097100", NOW - 5),
         **_user_info(2), **_dev_info(14), localized_dst="44770097100", **_dest("GBR"), **_prov(2)),
    _row(8, _call(8, 2, "SIP/801-00000008", "801", "101", NOW - 1),
         **_user_info(8), **_dev_info(15), localized_dst="101", **_dst_info(10)),
    _row(9, _call(9, 1, "SIP/102-00000009", "\x07<b>&\"'ü☎\ud800", "0063727007886", NOW - 3600),
         **_user_info(5), **_dev_info(12), localized_dst="63727007886", **_dest("PHL"), **_prov(1)),
)

#: username → ids of the rows it may see.
ALL_IDS = frozenset(range(1, 10))
VISIBLE: Mapping[str, frozenset[int]] = {
    "admin": ALL_IDS, "acc": ALL_IDS,
    "res": frozenset({3, 6, 7, 8}),
    "ruser": frozenset({3, 6}),
    "alice": frozenset({1, 2, 5, 8}),
    "bob": frozenset({4, 5, 9}),
    "carol": frozenset({8}),
    "odd": frozenset(),
}


def sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def signed(u: str, **params: str) -> dict[str, str]:
    """Parameters with ``u`` and the correct hash for it."""
    return {"u": u, "hash": sha(u + SECRETS[u]), **params}


def make_app(settings: ApiSettings | None = None, rows: Sequence[LiveCall] = ROWS,
             refs: RefIndex = REFS, now: float = NOW) -> web.Application:
    s = settings or ApiSettings(timezone="UTC")
    return create_app(ApiDeps(rows=lambda: rows, refs=lambda: refs, settings=s, clock=lambda: now))


def parse(body: bytes) -> etree._Element:
    """Parse strictly (no recovery) and check the exact declaration every document must carry."""
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n'), body[:60]
    parser = etree.XMLParser(resolve_entities=False, no_network=True, recover=False)
    return etree.fromstring(body, parser)


def status_error_of(body: bytes) -> str:
    """The text of a bare ``<status><error>`` document (pre-method errors); asserts the shape."""
    root = parse(body)
    assert root.tag == "status" and [c.tag for c in root] == ["error"], etree.tostring(root)
    return root[0].text or ""


def error_of(body: bytes) -> str:
    """The text of a ``<page><status><error>`` document (method errors); asserts the shape."""
    root = parse(body)
    assert root.tag == "page" and [c.tag for c in root] == ["status"], etree.tostring(root)
    assert [c.tag for c in root[0]] == ["error"], etree.tostring(root)
    return root[0][0].text or ""


def message_of(body: bytes) -> str:
    root = parse(body)
    assert root.tag == "page" and [c.tag for c in root] == ["status"], etree.tostring(root)
    assert [c.tag for c in root[0]] == ["message"], etree.tostring(root)
    return root[0][0].text or ""


def calls_of(body: bytes) -> list[int]:
    """Ids of a call list document (asserts ``<page>`` holds only ``<active_call>`` children)."""
    root = parse(body)
    assert root.tag == "page", etree.tostring(root)[:200]
    assert len(root) > 0 and all(c.tag == "active_call" for c in root), etree.tostring(root)[:200]
    return [int(c.findtext("id") or "-1") for c in root]


def row_dict(el: etree._Element) -> dict[str, str | None]:
    return {c.tag: c.text for c in el}


def with_settings(**kw: Any) -> ApiSettings:
    return replace(ApiSettings(timezone="UTC"), **kw)


async def raw_http(port: int, data: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes to 127.0.0.1:port; read one response (by Content-Length, else to EOF)."""
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            if "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            else:
                body = await reader.read()
    finally:
        writer.close()
    return status, headers, body
