"""``active_calls_get``: the selected rows (``api.selection``), sorted by id, as XML (or JSON).

No I/O besides reading the request: the rows and reference data are snapshots the daemon keeps
current, so a request costs one pass over the rows per predicate plus rendering of what is left.
"""

from __future__ import annotations

import logging
import time
from operator import attrgetter

from aiohttp import web

from api.deps import DEPS_KEY, JSON_RENDERER_KEY, RENDERER_KEY
from api.errors import NO_DATA, Envelope, MorError
from api.responses import json_response, wants_json, xml_response
from api.selection import authorize, check_method, select_rows

__all__ = ["active_calls_get"]

log = logging.getLogger(__name__)

_BY_ID = attrgetter("id")


async def active_calls_get(request: web.Request) -> web.Response:
    started = time.perf_counter()
    is_get = check_method(request)
    deps = request.app[DEPS_KEY]
    sel = await authorize(request, is_get=is_get)
    table = deps.rows()
    rows = select_rows(table, sel.predicates)
    log.debug("api active_calls_get api_user=%r role=%s rows=%d of=%d ms=%.1f", sel.principal.user.username,
              sel.principal.role.value, len(rows), len(table), (time.perf_counter() - started) * 1000)
    if not rows:
        raise MorError(NO_DATA, Envelope.MESSAGE)
    rows.sort(key=_BY_ID)
    if wants_json(request):
        json_renderer = request.app[JSON_RENDERER_KEY]
        body = json_renderer.render_rows(rows, sel.now)
        json_renderer.prune(table, len(table))
        return json_response(body)
    renderer = request.app[RENDERER_KEY]
    body = renderer.render_calls(rows, sel.now)
    renderer.prune(table, len(table))
    return xml_response(body)
