"""Transport → one frozen ``ActiveCallsQuery``: query string, urlencoded/multipart form or JSON object.

Rules (docs/api.md "Parameters"): the query string is read first, then the body; only the first
``max_params`` name=value pairs are looked at; unknown names and empty values are ignored; the first
occurrence of a name wins; a value longer than ``max_param_len`` (or a JSON object/array/NaN) becomes
``INVALID``, which no user, id, name or pattern ever matches. Bytes that are not UTF-8 decode to U+FFFD,
broken %-escapes stay literal. Nothing here raises except ``MorError`` for a body we refuse.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.utils
import json
import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import web

from api.errors import BAD_BODY, TIMEOUT, TOO_LARGE, Envelope, MorError
from api.settings import ApiSettings

__all__ = [
    "ActiveCallsQuery", "FILTER_NAMES", "INVALID", "PARAM_NAMES", "build_query", "parse_body",
    "parse_json", "parse_multipart", "parse_urlencoded", "pick", "query_pairs", "read_body", "read_query",
]

log = logging.getLogger(__name__)

#: The seed's filter parameters, in the seed's order.
FILTER_NAMES: tuple[str, ...] = (
    "s_did", "s_provider", "s_user_id", "s_device", "s_dst_user_id", "s_dst_device", "s_destination",
    "s_destination_group", "s_source", "s_status", "s_server", "s_country",
)
PARAM_NAMES: tuple[str, ...] = ("u", "hash", *FILTER_NAMES)
_PARAM_SET = frozenset(PARAM_NAMES)

#: Stands for a value we refuse to interpret (too long, not a scalar): a NUL, which no username,
#: hash, id, direction name or LIKE subject contains, so every check treats it as "not found".
INVALID = "\x00"

Pair = tuple[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class ActiveCallsQuery:
    """The recognised parameters; ``None`` = absent (or empty)."""

    u: str | None = None
    hash: str | None = None
    s_did: str | None = None
    s_provider: str | None = None
    s_user_id: str | None = None
    s_device: str | None = None
    s_dst_user_id: str | None = None
    s_dst_device: str | None = None
    s_destination: str | None = None
    s_destination_group: str | None = None
    s_source: str | None = None
    s_status: str | None = None
    s_server: str | None = None
    s_country: str | None = None


def pick(pairs: Iterable[Pair], names: Collection[str], *, max_param_len: int) -> dict[str, str]:
    """The selection rules, for any set of names: ignore other names and empty values, the first
    occurrence wins, oversize → INVALID."""
    values: dict[str, str] = {}
    for name, value in pairs:
        if value == "" or name not in names or name in values:
            continue
        values[name] = INVALID if len(value) > max_param_len else value
    return values


def build_query(pairs: Iterable[Pair], *, max_param_len: int) -> ActiveCallsQuery:
    """MOR's parameters out of ``pairs`` (``pick``'s rules)."""
    return ActiveCallsQuery(**pick(pairs, _PARAM_SET, max_param_len=max_param_len))


def _unquote(raw: bytes) -> str:
    return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8", "replace")


def parse_urlencoded(data: bytes, limit: int) -> list[Pair]:
    """``a=1&b=2`` pairs, at most ``limit`` of them (the rest is never decoded)."""
    if limit <= 0 or not data:
        return []
    pieces = data.split(b"&", limit)[:limit]
    out: list[Pair] = []
    for piece in pieces:
        if piece:
            name, _, value = piece.partition(b"=")
            out.append((_unquote(name), _unquote(value)))
    return out


_NON_FINITE = object()  # NaN / Infinity / -Infinity


class _Obj(list[tuple[str, Any]]):
    """A JSON object kept as its ordered pairs, so duplicate keys can be first-wins as elsewhere."""


def _json_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return INVALID  # objects, arrays, NaN/Infinity


def parse_json(data: bytes, limit: int) -> list[Pair]:
    """Pairs of a JSON object body; anything else is a ``MorError(BAD_BODY)``.

    Numbers keep their literal text (``2`` → "2", ``2.0`` → "2.0", which is not an id)."""
    try:
        doc = json.loads(data, object_pairs_hook=_Obj, parse_int=str, parse_float=str,
                         parse_constant=lambda _c: _NON_FINITE)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        log.info("api rejected body reason=json_malformed detail=%r", str(exc)[:80])
        raise MorError(BAD_BODY, Envelope.STATUS) from None
    if not isinstance(doc, _Obj):
        log.info("api rejected body reason=json_not_object")
        raise MorError(BAD_BODY, Envelope.STATUS)
    return [(name, _json_value(value)) for name, value in doc[:max(limit, 0)]]


def parse_multipart(content_type: str, data: bytes, limit: int) -> list[Pair]:
    """Fields of a multipart/form-data body; file parts are ignored; no boundary → BAD_BODY."""
    header = content_type.encode("latin-1", "replace").replace(b"\r", b" ").replace(b"\n", b" ")
    msg = email.message_from_bytes(b"Content-Type: " + header + b"\r\n\r\n" + data)
    parts = msg.get_payload() if msg.is_multipart() else None
    if not isinstance(parts, list):
        log.info("api rejected body reason=multipart_malformed")
        raise MorError(BAD_BODY, Envelope.STATUS)
    out: list[Pair] = []
    for part in parts[:max(limit, 0)]:
        if not isinstance(part, email.message.Message) or part.get_filename() is not None:
            continue
        raw_name = part.get_param("name", header="content-disposition")
        if raw_name is None:
            continue
        name = email.utils.collapse_rfc2231_value(raw_name)
        payload = part.get_payload(decode=True)
        raw = payload if isinstance(payload, bytes) else b""
        charset = part.get_content_charset() or "utf-8"
        try:
            value = raw.decode(charset, "replace")
        except LookupError:
            value = raw.decode("utf-8", "replace")
        out.append((name, value))
    return out


def parse_body(content_type: str, data: bytes, limit: int) -> list[Pair]:
    """Dispatch on the media type; a missing or unknown type is sniffed (``{``/``[`` → JSON, else form)."""
    if not data or limit <= 0:
        return []
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == "application/json" or mime.endswith("+json"):
        return parse_json(data, limit)
    if mime == "application/x-www-form-urlencoded":
        return parse_urlencoded(data, limit)
    if mime == "multipart/form-data":
        return parse_multipart(content_type, data, limit)
    if data.lstrip()[:1] in (b"{", b"["):
        return parse_json(data, limit)
    return parse_urlencoded(data, limit)


async def read_body(request: web.Request, settings: ApiSettings) -> bytes:
    if not request.body_exists:
        return b""
    declared = request.content_length
    if declared is not None and declared > settings.max_body:
        log.info("api rejected body reason=too_large declared=%d", declared)
        raise MorError(TOO_LARGE, Envelope.STATUS, 413)
    buf = bytearray()
    try:
        async with asyncio.timeout(settings.body_timeout):
            while chunk := await request.content.readany():
                buf += chunk
                if len(buf) > settings.max_body:
                    log.info("api rejected body reason=too_large")
                    raise MorError(TOO_LARGE, Envelope.STATUS, 413)
    except TimeoutError:
        log.info("api rejected body reason=timeout received=%d", len(buf))
        raise MorError(TIMEOUT, Envelope.STATUS, 408) from None
    except MorError:
        raise
    except Exception as exc:  # broken chunked encoding, decompression errors, connection reset
        log.info("api rejected body reason=transfer detail=%r", exc)
        raise MorError(BAD_BODY, Envelope.STATUS) from None
    return bytes(buf)


def query_pairs(request: web.Request, limit: int) -> list[Pair]:
    # raw_query_string keeps %-escapes; aiohttp's parser decoded the request line with surrogateescape,
    # so encoding back with it restores the client's bytes exactly.
    raw = request.rel_url.raw_query_string.encode("utf-8", "surrogateescape")
    return parse_urlencoded(raw, limit)


async def read_query(request: web.Request, settings: ApiSettings, extras: Collection[str] = ()
                     ) -> tuple[ActiveCallsQuery, dict[str, str]]:
    """Everything the client sent, as one query, plus the ``extras`` (parameters beyond MOR's, such as
    ``group_by``) picked from the same pairs by the same rules, so the body is read once.
    Raises ``MorError`` for a refused body only."""
    pairs = query_pairs(request, settings.max_params)
    body = await read_body(request, settings)
    pairs += parse_body(request.headers.get("Content-Type", ""), body, settings.max_params - len(pairs))
    found = pick(pairs, extras, max_param_len=settings.max_param_len) if extras else {}
    return build_query(pairs, max_param_len=settings.max_param_len), found
