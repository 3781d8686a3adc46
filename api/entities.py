"""``active_calls_entities``: the names behind the ids a caller may filter by, for a page's pickers and labels.

Why a separate endpoint: the rows carry only their own names, and a page needs the whole choice (users
with no call right now, providers' limits …). Visibility is the filters' own rule (``api.scope``, as
``api.filters`` applies it), so every id listed is one the caller may pass to the matching ``s_*``
filter and nothing the filters would answer "not found" for is revealed. Servers, directions and
destination groups are every caller's to filter by, as in ``active_calls_get``. Destinations are never
listed (100,000 of them); each list is cut at ``ENTITY_CAP`` entries (``"truncated": true``).

JSON only (whatever ``format`` says, errors included): it serves pages, not MOR clients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from api.deps import DEPS_KEY
from api.errors import MorError
from api.jsonout import dumps, error_json
from api.responses import json_response
from api.rows import clean_text, server_name
from api.scope import Scope
from api.selection import authorize, check_method
from collector.refdata.model import Device

__all__ = ["ENTITIES_PATH", "ENTITY_CAP", "Entities", "active_calls_entities", "add_entities_routes",
           "device_name", "entities_of"]

ENTITIES_PATH = "/billing/api/active_calls_entities"
ENTITY_CAP = 10_000  # entries per list: bounds the answer (and its cost) on a MOR with 100,000 devices

T = TypeVar("T")


def device_name(device: Device) -> str:
    """How a page names a device: ``SIP/101`` (MOR's technology/peer, as in channel names), with the
    extension when it differs from the peer name: ``SIP/res-dev (200)``."""
    name = f"{device.device_type}/{device.name}"
    return f"{name} ({device.extension})" if device.extension and device.extension != device.name else name


@dataclass(frozen=True, slots=True)
class Entities:
    doc: dict[str, Any]  # the JSON document
    truncated: bool


def _listed(items: Iterable[T], key: Callable[[T], tuple[Any, ...]], entry: Callable[[T], dict[str, Any]],
            cap: int) -> tuple[list[dict[str, Any]], bool]:
    ordered = sorted(items, key=key)
    return [entry(i) for i in ordered[:cap]], len(ordered) > cap


def _by_name(name: str | None, rid: object) -> tuple[str, str]:
    return ((name or "").casefold(), f"{rid!s:>20}")  # ties (and ids as text) in a stable order


def entities_of(scope: Scope, cap: int = ENTITY_CAP) -> Entities:
    """The caller's lists, each sorted by name (DIDs by number), at most ``cap`` entries each."""
    refs = scope.refs
    data = refs.data
    lists: dict[str, list[dict[str, Any]]] = {}
    cut = False

    def put(name: str, listed: tuple[list[dict[str, Any]], bool]) -> None:
        nonlocal cut
        lists[name], was_cut = listed
        cut = cut or was_cut

    put("users", _listed(
        (u for u in data.users if scope.user_visible(u)), lambda u: _by_name(u.display_name, u.id),
        lambda u: {"id": u.id, "name": clean_text(u.display_name), "username": clean_text(u.username),
                   "call_limit": u.call_limit}, cap))
    put("devices", _listed(
        (d for d in data.devices if scope.device_visible(d)), lambda d: _by_name(device_name(d), d.id),
        lambda d: {"id": d.id, "name": clean_text(device_name(d)), "user_id": d.user_id,
                   "call_limit": d.call_limit}, cap))
    put("providers", _listed(
        (p for p in data.providers if scope.provider_visible(p)), lambda p: _by_name(p.name, p.id),
        lambda p: {"id": p.id, "name": clean_text(p.name), "call_limit": p.call_limit}, cap))
    put("servers", _listed(
        data.servers, lambda s: _by_name(server_name(s), s.id),
        lambda s: {"id": s.id, "name": server_name(s)}, cap))
    put("directions", _listed(
        data.directions, lambda d: _by_name(d.name, d.code),
        lambda d: {"code": clean_text(d.code), "name": clean_text(d.name)}, cap))
    put("destination_groups", _listed(
        data.destinationgroups, lambda g: _by_name(g.name, g.id),
        lambda g: {"id": g.id, "name": clean_text(g.name)}, cap))
    put("dids", _listed(
        (d for d in data.dids if scope.did_visible(d)), lambda d: (d.did, d.id),
        lambda d: {"id": d.id, "number": clean_text(d.did), "call_limit": d.call_limit}, cap))
    doc: dict[str, Any] = dict(lists)
    if cut:
        doc["truncated"] = True
    return Entities(doc, cut)


async def active_calls_entities(request: web.Request) -> web.Response:
    """Same transport, methods and auth as ``active_calls_get`` (``api.selection.authorize``); JSON always."""
    try:
        is_get = check_method(request)
        sel = await authorize(request, is_get=is_get)
    except MorError as err:
        return json_response(error_json(err), err.http_status, err.headers)
    scope = Scope(sel.principal, request.app[DEPS_KEY].refs())
    return json_response(dumps(entities_of(scope).doc))


def add_entities_routes(app: web.Application) -> None:
    app.router.add_route("*", ENTITIES_PATH, active_calls_entities)
