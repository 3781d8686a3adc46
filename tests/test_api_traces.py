"""End to end on real calls: the busiest moment of the recorded ``concurrent_load`` trace replayed
through the tracker, enriched with the bundled demo reference data (``Enricher`` + ``load_refdata``),
served by the API and compared byte for byte with an independent rendering of the expected rows."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest

from api.app import create_app
from api.deps import ApiDeps
from collector.live.enrich import Enricher
from collector.live.table import LiveCall, LiveTable
from collector.refdata.importer import load_demo
from collector.refdata.index import RefIndex
from collector.refdata.store import load_refdata
from collector.tools.timeline import iter_trace_messages, timeline
from collector.tracking.calls import CallChange
from tests.api_support import PATH, parse, with_settings
from tests.helpers import trace_paths

SECRETS = {"admin": "demo-admin-secret", "reseller": "demo-reseller-secret"}


class World:
    def __init__(self, db: Path) -> None:
        load_demo(db)
        self.refs = RefIndex.build(load_refdata(db))
        frames = timeline(iter_trace_messages(trace_paths("concurrent_load")), step=0.5)
        best = max(frames, key=lambda f: len(f.calls))
        self.now = best.t
        self.table = LiveTable(enrich=Enricher(self.refs).enrich)
        self.table.apply(CallChange("added", c.key, c) for c in best.calls)
        self.rows: list[LiveCall] = sorted(self.table.rows(), key=lambda r: r.id)

    def secret_for(self, username: str) -> str:
        owner = self.refs.owner_of(self.refs.users_by_username[username])
        assert owner is not None
        return SECRETS[owner.username]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("demo") / "demo.db")


# ------------------------------------------------------------------------------------------ oracle
def visible(world: World, username: str) -> Callable[[LiveCall], bool]:
    """The seed's words: admin all; reseller his and his users' calls; a user his own calls, and
    calls to devices of the same people."""
    me = world.refs.users_by_username[username]
    if me.usertype in ("admin", "accountant"):
        return lambda r: True
    people = {me.id}
    if me.usertype == "reseller":
        people |= {u.id for u in world.refs.data.users if u.owner_id == me.id and u.usertype == "user"}
    device_owner = {d.id: d.user_id for d in world.refs.data.devices}
    return lambda r: (r.info.user_id in people
                      or device_owner.get(r.info.dst_device_id or -1) in people
                      or r.info.dst_user_id in people)


def like(pattern: str) -> Callable[[str], bool]:
    glob = pattern.replace("%", "*").replace("_", "?")
    return lambda s: fnmatchcase(s, glob)


def oracle_filter(world: World, filters: dict[str, str]) -> Callable[[LiveCall], bool]:
    checks: list[Callable[[LiveCall], bool]] = []
    f = filters
    if "s_status" in f:
        checks.append(lambda r: r.call.status.value.lower() == f["s_status"].lower())
    if "s_user_id" in f:
        checks.append(lambda r: str(r.info.user_id) == f["s_user_id"])
        if "s_device" in f:
            checks.append(lambda r: str(r.info.src_device_id) == f["s_device"])
    if "s_dst_user_id" in f:
        checks.append(lambda r: str(r.info.dst_user_id) == f["s_dst_user_id"])
        if "s_dst_device" in f:
            checks.append(lambda r: str(r.info.dst_device_id) == f["s_dst_device"])
    if "s_provider" in f:
        checks.append(lambda r: str(r.info.provider_id) == f["s_provider"])
    if "s_did" in f:
        checks.append(lambda r: r.info.did != "" and like(f["s_did"])(r.info.did))
    if "s_destination" in f:
        checks.append(lambda r: like(f["s_destination"])(r.info.localized_dst))
    if "s_source" in f:
        checks.append(lambda r: like(f["s_source"])(r.call.src))
    if "s_country" in f:
        checks.append(lambda r: r.info.direction_name.lower() == f["s_country"].lower())
    if "s_destination_group" in f:
        checks.append(lambda r: str(r.info.destinationgroup_id) == f["s_destination_group"])
    if "s_server" in f:
        checks.append(lambda r: str(r.call.server_id) == f["s_server"])
    return lambda r: all(c(r) for c in checks)


def expected_xml(rows: list[LiveCall], now: float) -> bytes:
    def fmt(ts: float | None) -> str | None:
        return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")

    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<page>"]
    for r in rows:
        c, i = r.call, r.info
        fields: list[tuple[str, object]] = [
            ("id", r.id), ("uniqueid", c.uniqueid), ("status", c.status.value), ("answer_time", fmt(c.answer_time)),
            ("duration", None if c.answer_time is None else int(now - c.answer_time)), ("src", c.src),
            ("user_id", i.user_id), ("user", i.user), ("src_device_id", i.src_device_id),
            ("device_type", i.device_type), ("device_extension", i.device_extension),
            ("device_name", i.device_name), ("device_istrunk", i.device_istrunk), ("device_ani", i.device_ani),
            ("localized_dst", i.localized_dst), ("direction_code", i.direction_code),
            ("direction_name", i.direction_name), ("destination_name", i.destination_name),
            ("provider_id", i.provider_id), ("provider_name", i.provider_name), ("channel", c.channel)]
        if i.has_dst:
            fields += [("dst_user_id", i.dst_user_id), ("dst_user", i.dst_user), ("dst_device_id", i.dst_device_id),
                       ("dst_device_type", i.dst_device_type), ("dst_device_extension", i.dst_device_extension),
                       ("dst_device_name", i.dst_device_name), ("dst_device_istrunk", i.dst_device_istrunk),
                       ("dst_device_ani", i.dst_device_ani)]
        lines.append("  <active_call>")
        for tag, value in fields:
            text = "" if value is None else str(value)
            lines.append(f"    <{tag}>{escape(text)}</{tag}>" if text else f"    <{tag}/>")
        lines.append("  </active_call>")
    lines.append("</page>")
    return ("\n".join(lines) + "\n").encode()


def page(kind: str, text: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<page>\n  <status>\n    <{kind}>{text}</{kind}>\n'
            f"  </status>\n</page>\n").encode()


# ------------------------------------------------------------------------------------------ cases
HIT, NONE = "hit", "none"
CASES: list[tuple[str, dict[str, str], str]] = [
    # every role, no filter
    ("admin", {}, HIT), ("accountant", {}, HIT), ("reseller", {}, HIT), ("carol", {}, HIT),
    ("alice", {}, HIT), ("bob", {}, HIT), ("frontdesk", {}, HIT),
    # every filter as admin
    ("admin", {"s_status": "ringing"}, HIT), ("admin", {"s_status": "Answered"}, HIT),
    ("admin", {"s_user_id": "2"}, HIT), ("admin", {"s_user_id": "2", "s_device": "1"}, HIT),
    ("admin", {"s_user_id": "2", "s_device": "2"}, "Originating Device was not found"),
    ("admin", {"s_user_id": "6"}, NONE), ("admin", {"s_user_id": "77"}, "Originating User was not found"),
    ("admin", {"s_dst_user_id": "3"}, HIT), ("admin", {"s_dst_user_id": "3", "s_dst_device": "2"}, HIT),
    ("admin", {"s_dst_user_id": "3", "s_dst_device": "3"}, "Terminating Device was not found"),
    ("admin", {"s_dst_user_id": "77"}, "Terminating User was not found"),
    ("admin", {"s_provider": "1"}, HIT), ("admin", {"s_provider": "2"}, NONE),
    ("admin", {"s_provider": "3"}, "Provider was not found"),
    ("admin", {"s_did": "37052000001"}, HIT), ("admin", {"s_did": "3705200000_"}, HIT),
    ("admin", {"s_did": "%7"}, NONE), ("admin", {"s_did": "44%"}, "Did was not found"),
    ("admin", {"s_destination": "447%"}, HIT), ("admin", {"s_destination": "370%"}, HIT),
    ("admin", {"s_destination": "447"}, NONE),
    ("admin", {"s_source": "3069%"}, HIT), ("admin", {"s_source": "_0_"}, HIT),
    ("admin", {"s_country": "united kingdom"}, HIT), ("admin", {"s_country": "Germany"}, NONE),
    ("admin", {"s_country": "Atlantis"}, "Direction was not found"),
    ("admin", {"s_destination_group": "6"}, HIT), ("admin", {"s_destination_group": "8"}, NONE),
    ("admin", {"s_destination_group": "99"}, "Destination Group was not found"),
    ("admin", {"s_server": "1"}, HIT), ("admin", {"s_server": "2"}, "Server was not found"),
    ("admin", {"s_status": "talking"}, "Status value must be Ringing or Answered"),
    ("admin", {"s_status": "answered", "s_country": "Lithuania", "s_did": "%1"}, HIT),
    # roles × filters
    ("accountant", {"s_country": "lithuania"}, HIT),
    ("reseller", {"s_user_id": "5"}, HIT), ("reseller", {"s_dst_user_id": "5"}, HIT),
    ("reseller", {"s_user_id": "2"}, "Originating User was not found"),
    ("reseller", {"s_provider": "1"}, "Provider was not found"),
    ("reseller", {"s_did": "%"}, HIT), ("reseller", {"s_did": "37052000001"}, "Did was not found"),
    ("carol", {"s_did": "37052000003"}, HIT), ("carol", {"s_did": "37052000001"}, "Did was not found"),
    ("carol", {"s_status": "answered"}, HIT), ("carol", {"s_provider": "1"}, "Provider was not found"),
    ("alice", {"s_status": "answered"}, HIT), ("alice", {"s_provider": "1"}, HIT),
    ("alice", {"s_user_id": "3"}, "Originating User was not found"),
    ("bob", {"s_dst_user_id": "3"}, HIT), ("bob", {"s_dst_user_id": "3", "s_dst_device": "2"}, HIT),
    ("bob", {"s_dst_user_id": "5"}, "Terminating User was not found"),
    ("frontdesk", {"s_did": "37052000002"}, HIT), ("frontdesk", {"s_did": "37052000001"}, "Did was not found"),
    ("reseller", {"s_did": "37052000002"}, "Did was not found"),  # not his DID, though carol answers some
]


@pytest.mark.parametrize(("username", "filters", "expect"), CASES,
                         ids=[f"{u}-{'&'.join(f'{k}={v}' for k, v in f.items())}" for u, f, _ in CASES])
async def test_trace_calls_through_the_api(aiohttp_client: Any, world: World, username: str,
                                          filters: dict[str, str], expect: str) -> None:
    app = create_app(ApiDeps(rows=world.table.rows, refs=lambda: world.refs, settings=with_settings(),
                             clock=lambda: world.now))
    client = await aiohttp_client(app)
    sig = hashlib.sha1((username + world.secret_for(username)).encode()).hexdigest()
    resp = await client.post(PATH, data={"u": username, "hash": sig, **filters})
    assert resp.status == 200 and resp.headers["Content-Type"] == "text/xml; charset=utf-8"
    body = await resp.read()
    parse(body)
    see, keep = visible(world, username), oracle_filter(world, filters)
    rows = [r for r in world.rows if see(r) and keep(r)]
    if expect == HIT:
        assert rows, "the case should select calls from the trace"
        assert body == expected_xml(rows, world.now)
    elif expect == NONE:
        assert not rows
        assert body == page("message", "No data found...")
    else:
        assert body == page("error", expect)


def test_the_replayed_moment_has_every_kind_of_call(world: World) -> None:
    rows = world.rows
    assert len(rows) >= 100
    inbound = [r for r in rows if r.info.did_id is not None]
    internal = [r for r in rows if r.info.has_dst and r.info.did_id is None]
    outbound = [r for r in rows if not r.info.has_dst and r.info.provider_id is not None]
    assert inbound and internal and outbound
    assert {r.call.status.value for r in rows} == {"Ringing", "Answered"}
    for r in rows:  # facts of the demo data: phone 101 is Alice's, DID …03 goes to Carol's IAX2 201
        if r.call.channel.startswith("SIP/101-"):
            assert (r.info.user_id, r.info.src_device_id, r.info.user) == (2, 1, "Alice Office")
        if r.info.did == "37052000003" and r.info.dst_device_id is not None:
            assert (r.info.dst_user_id, r.info.dst_owner_id) == (5, 4)
        if r.info.destination_name == "United Kingdom mobile":
            assert r.info.localized_dst.startswith("447") and r.call.dst.startswith("00447")


def _ids(body: bytes) -> Iterator[int]:
    for el in parse(body):
        yield int(el.findtext("id") or 0)


async def test_roles_partition_sensibly(aiohttp_client: Any, world: World) -> None:
    app = create_app(ApiDeps(rows=world.table.rows, refs=lambda: world.refs, settings=with_settings(),
                             clock=lambda: world.now))
    client = await aiohttp_client(app)
    seen: dict[str, set[int]] = {}
    for user in ("admin", "accountant", "reseller", "carol", "alice", "bob", "frontdesk"):
        sig = hashlib.sha1((user + world.secret_for(user)).encode()).hexdigest()
        seen[user] = set(_ids(await (await client.post(PATH, data={"u": user, "hash": sig})).read()))
    assert seen["admin"] == seen["accountant"] == {r.id for r in world.rows}
    assert seen["carol"] <= seen["reseller"] < seen["admin"]  # the demo reseller has no phone of his own
    assert seen["alice"] | seen["bob"] | seen["reseller"] | seen["frontdesk"] == seen["admin"]
