"""Application factory: the MOR route(s), the error middleware and typed AppKeys; no global app.

Extend it by passing ``routes``/``middlewares`` or by adding routes to the returned (not yet
started) application; ``DEPS_KEY`` gives other handlers the same dependencies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from api.active_calls import active_calls_get
from api.background import background
from api.clienterrors import install_client_error_limiter
from api.deps import DEPS_KEY, FIELDS_KEY, JSON_RENDERER_KEY, RENDERER_KEY, ApiDeps
from api.entities import add_entities_routes
from api.errors import INTERNAL_ERROR, TOO_LARGE, Envelope, MorError
from api.history import add_history_routes
from api.jsonout import JsonRenderer
from api.responses import error_response
from api.rows import RowFields
from api.settings import ApiSettings
from api.stream import StreamSettings, add_stream_routes
from api.totals import active_calls_totals
from api.ui import add_ui_routes
from api.v2auth import add_v2_auth_routes
from api.v2calls import add_v2calls_routes
from api.v2errors import V2_PREFIX, V2Error, v2_error_response
from api.xml import RowRenderer

__all__ = ["ApiDeps", "ApiSettings", "DEPS_KEY", "StreamSettings", "TOTALS_PATHS", "create_app",
           "mor_error_middleware"]

#: ``active_calls_totals`` beside each spelling of ``active_calls_get``.
TOTALS_PATHS: tuple[str, ...] = ("/billing/api/active_calls_totals", "/api/active_calls_totals")

log = logging.getLogger(__name__)


@web.middleware
async def mor_error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``MorError`` → its envelope, ``V2Error`` → JSON; any other exception → logged, then
    ``<status><error>Internal Error`` (JSON ``{"error": …}`` under ``V2_PREFIX``)."""
    try:
        return await handler(request)
    except V2Error as err:
        return v2_error_response(err)
    except MorError as err:
        return error_response(request, err)
    except web.HTTPRequestEntityTooLarge:  # aiohttp's own client_max_size, on routes added by others
        return error_response(request, MorError(TOO_LARGE, Envelope.STATUS, 413))
    except web.HTTPException:
        raise  # deliberate HTTP answers (404 for unknown paths, redirects …)
    except Exception:
        log.exception("api unexpected error method=%s path=%s", request.method, request.path)
        if request.path.startswith(V2_PREFIX):
            return v2_error_response(V2Error(500, INTERNAL_ERROR))
        return error_response(request, MorError(INTERNAL_ERROR, Envelope.STATUS, 500))


_PRERENDER_BATCH = 200  # rows per slice (~8 ms of lxml work) before yielding to the loop


async def _prerender(app: web.Application) -> None:
    """Keep the row cache warm so a full list right after start-up or a reload is not a cold render."""
    deps, renderer = app[DEPS_KEY], app[RENDERER_KEY]
    interval = deps.settings.prerender_interval or 0.5
    failing = False
    while True:
        await asyncio.sleep(interval)
        try:
            rows = deps.rows()
            while renderer.warm(rows, _PRERENDER_BATCH) == _PRERENDER_BATCH:
                await asyncio.sleep(0)
            renderer.prune(rows, len(rows))
            failing = False
        except Exception:
            if not failing:  # once per failure streak, not every interval
                log.exception("api prerender failed")
            failing = True


def create_app(deps: ApiDeps, *, routes: Iterable[web.AbstractRouteDef] = (),
               middlewares: Iterable[Middleware] = (),
               stream: StreamSettings | None = None) -> web.Application:
    """A ready-to-run application serving ``active_calls_get`` on ``deps.settings.paths``, plus
    ``active_calls_totals``, ``active_calls_stream``, ``active_calls_entities`` (docs/api-extensions.md)
    and the page at ``/``.

    ``middlewares`` run inside the error middleware, so their exceptions are rendered too.
    ``stream`` tunes the push stream (queue bounds, keepalive); the defaults suit production."""
    settings = deps.settings
    install_client_error_limiter()  # malformed requests: one short line each, rate-limited (#14)
    app = web.Application(middlewares=[mor_error_middleware, *middlewares],
                          client_max_size=settings.max_body)
    app[DEPS_KEY] = deps
    fields = app[FIELDS_KEY] = RowFields(settings.zone(), disconnected=deps.disconnected, refs=deps.refs)
    app[RENDERER_KEY] = RowRenderer(fields)
    app[JSON_RENDERER_KEY] = JsonRenderer(fields)
    for path in settings.paths:
        app.router.add_route("*", path, active_calls_get)
    for path in TOTALS_PATHS:
        app.router.add_route("*", path, active_calls_totals)
    add_stream_routes(app, stream or StreamSettings())
    add_entities_routes(app)
    add_history_routes(app)
    add_ui_routes(app)
    add_v2_auth_routes(app)
    add_v2calls_routes(app)
    app.router.add_routes(list(routes))
    if settings.prerender_interval is not None:
        app.cleanup_ctx.append(background(_prerender, "api-prerender"))
    return app
