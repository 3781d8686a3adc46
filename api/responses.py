"""How an answer leaves: the format the client asked for, the media type, and the connection rule.

The format is chosen from the **query string only** (``?format=json``): errors raised before the body
is read (413, 408, an unreadable body) must already know how to answer. Any non-200 answer is a
transport failure whose request body may be unread, so the connection is not reused.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from api.errors import MorError
from api.jsonout import error_json
from api.params import parse_urlencoded
from api.xml import render_error

__all__ = ["JSON_TYPE", "error_response", "json_response", "wants_json", "xml_response"]

JSON_TYPE = "application/json"
_FORMAT_PAIRS = 100  # how many query-string pairs are looked at for ``format`` (as params.max_params)


def wants_json(request: web.Request) -> bool:
    """True for ``format=json`` (any case) in the query string; the first ``format`` wins."""
    raw = request.rel_url.raw_query_string
    if "format" not in raw:  # fast path: nearly every MOR client sends no format at all
        return False
    for name, value in parse_urlencoded(raw.encode("utf-8", "surrogateescape"), _FORMAT_PAIRS):
        if name == "format" and value:
            return value.lower() == "json"
    return False


def _response(body: bytes, status: int, headers: Mapping[str, str] | None, content_type: str) -> web.Response:
    resp = web.Response(body=body, status=status, headers=headers, content_type=content_type, charset="utf-8")
    if status != 200:  # transport failures: the body may be unread, do not reuse the connection
        resp.force_close()
    return resp


def xml_response(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return _response(body, status, headers, "text/xml")


def json_response(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return _response(body, status, headers, JSON_TYPE)


def error_response(request: web.Request, err: MorError) -> web.Response:
    """The error in the format the query string asked for (XML unless ``format=json``)."""
    if wants_json(request):
        return json_response(error_json(err), err.http_status, err.headers)
    return xml_response(render_error(err), err.http_status, err.headers)
