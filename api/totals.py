"""``active_calls_totals``: how many calls the caller sees (total, answered), overall and per group.

Counted from the live rows on every request with the very selection ``active_calls_get`` uses
(``api.selection``), never from a running +1/−1 counter: a counter drifts the first time an
event is lost or a resync corrects the table, the rows cannot. Groups of users, devices, providers and
DIDs carry the record's MOR ``call_limit``, so a page can show "48 / 100" from one answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web
from lxml import etree

from api.deps import DEPS_KEY
from api.errors import MorError
from api.jsonout import dumps
from api.responses import json_response, wants_json, xml_response
from api.rows import clean_text
from api.selection import authorize, check_method, select_rows
from api.xml import XML_DECLARATION
from collector.live.table import LiveCall
from collector.refdata.index import RefIndex
from collector.tracking.calls import CallStatus

__all__ = ["BAD_GROUP_BY", "GROUP_BY", "LIMITED", "Group", "Totals", "active_calls_totals", "count", "render_json",
           "render_xml"]

Key = int | str | None
KeyOf = Callable[[LiveCall, RefIndex], tuple[Key, str]]


def _server(row: LiveCall, refs: RefIndex) -> tuple[Key, str]:
    server = refs.servers.get(row.call.server_id)
    return row.call.server_id, server.hostname if server is not None else ""


def _group(row: LiveCall, refs: RefIndex) -> tuple[Key, str]:
    gid = row.info.destinationgroup_id
    group = refs.destinationgroups.get(gid) if gid is not None else None
    return gid, group.name if group is not None else ""


#: ``group_by`` value → (key, name) of a row. Keys are the ids the filters take (direction: its code).
GROUP_BY: dict[str, KeyOf] = {
    "user": lambda r, _refs: (r.info.user_id, r.info.user),
    "device": lambda r, _refs: (r.info.src_device_id, r.info.device_name),
    "provider": lambda r, _refs: (r.info.provider_id, r.info.provider_name),
    "did": lambda r, _refs: (r.info.did_id, r.info.did),
    "destination_group": _group,
    "direction": lambda r, _refs: (r.info.direction_code or None, r.info.direction_name),
    "server": _server,
}
BAD_GROUP_BY = "Group by value must be one of: " + ", ".join(GROUP_BY)

#: ``group_by`` values whose groups are records with MOR's ``call_limit``: the record of a group's key.
LIMITED: dict[str, Callable[[RefIndex, int], object]] = {
    "user": lambda refs, key: refs.users.get(key),
    "device": lambda refs, key: refs.devices.get(key),
    "provider": lambda refs, key: refs.providers.get(key),
    "did": lambda refs, key: refs.dids.get(key),
}


@dataclass(frozen=True, slots=True)
class Group:
    key: Key  # None: calls without one (no provider, no DID …)
    name: str
    total: int
    answered: int
    call_limit: int | None = None  # the record's limit (group_by in ``LIMITED``); None: no limit


@dataclass(frozen=True, slots=True)
class Totals:
    total: int
    answered: int
    group_by: str | None
    groups: tuple[Group, ...]


def _order(g: Group) -> tuple[int, bool, str]:
    """Biggest first; ties by key (numeric ids as numbers), the key-less group last."""
    key = g.key
    text = f"{key:020d}" if isinstance(key, int) else str(key or "")
    return (-g.total, key is None, text)


def count(rows: Sequence[LiveCall], refs: RefIndex, group_by: str | None) -> Totals:
    answered = CallStatus.ANSWERED
    n_answered = sum(1 for r in rows if r.call.status is answered)
    if group_by is None:
        return Totals(len(rows), n_answered, None, ())
    key_of = GROUP_BY[group_by]
    names: dict[Key, str] = {}
    totals: Counter[Key] = Counter()
    answers: Counter[Key] = Counter()
    for row in rows:
        key, name = key_of(row, refs)
        names.setdefault(key, name)
        totals[key] += 1
        if row.call.status is answered:
            answers[key] += 1
    record_of = LIMITED.get(group_by)
    limits: dict[Key, int | None] = {}
    if record_of is not None:
        for k in names:
            record = record_of(refs, k) if isinstance(k, int) else None
            limits[k] = getattr(record, "call_limit", None)
    groups = sorted((Group(k, names[k], totals[k], answers[k], limits.get(k)) for k in names), key=_order)
    return Totals(len(rows), n_answered, group_by, tuple(groups))


def render_xml(t: Totals) -> bytes:
    page = etree.Element("page")
    totals = etree.SubElement(page, "totals")
    etree.SubElement(totals, "total").text = str(t.total)
    etree.SubElement(totals, "answered").text = str(t.answered)
    if t.group_by is not None:
        etree.SubElement(page, "group_by").text = t.group_by
        groups = etree.SubElement(page, "groups")
        for g in t.groups:
            el = etree.SubElement(groups, "group")
            etree.SubElement(el, "key").text = clean_text(g.key)
            etree.SubElement(el, "name").text = clean_text(g.name)
            etree.SubElement(el, "total").text = str(g.total)
            etree.SubElement(el, "answered").text = str(g.answered)
            if g.call_limit is not None:
                etree.SubElement(el, "call_limit").text = str(g.call_limit)
    etree.indent(page, space="  ")
    return XML_DECLARATION + etree.tostring(page, encoding="UTF-8") + b"\n"


def render_json(t: Totals) -> bytes:
    doc: dict[str, object] = {"totals": {"total": t.total, "answered": t.answered}}
    if t.group_by is not None:
        doc["group_by"] = t.group_by
        groups = doc["groups"] = [{"key": g.key, "name": clean_text(g.name), "total": g.total,
                                   "answered": g.answered} for g in t.groups]
        if t.group_by in LIMITED:  # every group of these carries the key: a number, or null for no limit
            for obj, g in zip(groups, t.groups, strict=True):
                obj["call_limit"] = g.call_limit
    return dumps(doc)


async def active_calls_totals(request: web.Request) -> web.Response:
    """Same transport, auth, filters and errors as ``active_calls_get``; ``group_by`` is checked last
    (after the seed's filter errors) and zero calls is an answer (0/0), not ``No data found...``."""
    is_get = check_method(request)
    deps = request.app[DEPS_KEY]
    sel = await authorize(request, is_get=is_get, extras=("group_by",))
    group_by = sel.extras.get("group_by")
    if group_by is not None and group_by not in GROUP_BY:
        raise MorError(BAD_GROUP_BY)
    rows = select_rows(deps.rows(), sel.predicates)
    totals = count(rows, deps.refs(), group_by)
    if wants_json(request):
        return json_response(render_json(totals))
    return xml_response(render_xml(totals))
