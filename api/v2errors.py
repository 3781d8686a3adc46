"""MOR v2 REST answers: JSON in and out, errors as ``{"error": "..."}`` with a fitting HTTP status.

The v2 service is not MOR's XML API ("global MOR API settings do not apply to this API service"), so it
has its own error type; the error middleware renders it, wherever on a v2 route it is raised.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

__all__ = ["V2Error", "V2_PREFIX", "v2_error_response", "v2_response"]

#: Every v2 route lives under this prefix; unexpected failures there are answered in JSON too.
V2_PREFIX = "/billing/api/v2/"


class V2Error(Exception):
    """A v2 answer that is not a success: the HTTP status and one clear message for the client."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers: Mapping[str, str] = headers or {}

    def __repr__(self) -> str:
        return f"V2Error({self.status}, {self.message!r})"


def v2_response(body: Mapping[str, Any], status: int = 200,
                headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=json.dumps(body, separators=(",", ":")).encode(), status=status,
                        headers=headers, content_type="application/json", charset="utf-8")


def v2_error_response(err: V2Error) -> web.Response:
    return v2_response({"error": err.message}, err.status, err.headers)
