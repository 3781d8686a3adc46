"""MOR error contract: one exception type carrying the exact text and the envelope it is rendered in.

Raised anywhere in the request path and rendered once (by the handler or the error middleware), so the
wording of every error lives here and the tests can compare it byte for byte with docs/api.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

__all__ = [
    "Envelope", "MorError",
    "ACCESS_DENIED", "API_DISABLED", "GET_DISABLED", "INCORRECT_HASH", "NO_SECRET_KEY",
    "SERVER_NOT_FOUND", "DIRECTION_NOT_FOUND", "ORIG_USER_NOT_FOUND", "ORIG_DEVICE_NOT_FOUND",
    "TERM_USER_NOT_FOUND", "TERM_DEVICE_NOT_FOUND", "DESTINATION_GROUP_NOT_FOUND", "BAD_STATUS",
    "PROVIDER_NOT_FOUND", "DID_NOT_FOUND", "NO_DATA", "BAD_BODY", "TOO_LARGE", "TIMEOUT",
    "METHOD_NOT_ALLOWED", "INTERNAL_ERROR",
]


class Envelope(Enum):
    """Where the message sits in the document."""

    STATUS = "status"  # bare <status><error>…</error></status>: errors raised before the method runs
    PAGE = "page"  # <page><status><error>…</error></status></page>: errors inside the method
    MESSAGE = "message"  # <page><status><message>…</message></status></page>: informational (no data)


class MorError(Exception):
    """An answer that is not a list of calls. ``http_status`` is 200 except for transport failures."""

    def __init__(self, text: str, envelope: Envelope = Envelope.PAGE, http_status: int = 200,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.envelope = envelope
        self.http_status = http_status
        self.headers: Mapping[str, str] = headers or {}

    def __repr__(self) -> str:
        return f"MorError({self.text!r}, {self.envelope.name}, {self.http_status})"


# Pre-method errors (bare <status> root), in MOR's check order.
ACCESS_DENIED = "Access Denied"
API_DISABLED = "API Requests are disabled"
GET_DISABLED = "GET Requests are disabled"
NO_SECRET_KEY = "API must have Secret Key"
INCORRECT_HASH = "Incorrect hash"

# Method errors (<page> root), in the seed's list order, which is also their precedence.
SERVER_NOT_FOUND = "Server was not found"
DIRECTION_NOT_FOUND = "Direction was not found"
ORIG_USER_NOT_FOUND = "Originating User was not found"
ORIG_DEVICE_NOT_FOUND = "Originating Device was not found"
TERM_USER_NOT_FOUND = "Terminating User was not found"
TERM_DEVICE_NOT_FOUND = "Terminating Device was not found"
DESTINATION_GROUP_NOT_FOUND = "Destination Group was not found"
BAD_STATUS = "Status value must be Ringing or Answered"
PROVIDER_NOT_FOUND = "Provider was not found"
DID_NOT_FOUND = "Did was not found"

# Informational.
NO_DATA = "No data found..."

# Ours (not in MOR): transport failures and bugs, all in the bare <status> envelope.
BAD_BODY = "Invalid request body"
TOO_LARGE = "Request Entity Too Large"
TIMEOUT = "Request Timeout"
METHOD_NOT_ALLOWED = "Method Not Allowed"
INTERNAL_ERROR = "Internal Error"
