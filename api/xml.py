"""lxml rendering of the MOR documents: ``<page>`` of ``<active_call>`` rows, and the status envelopes.

Every document starts with ``<?xml version="1.0" encoding="UTF-8"?>`` and is indented by two spaces.
Text is stripped of characters XML 1.0 forbids (lxml would refuse them), so any value renders as
well-formed XML. Each row is serialised by lxml once and cached (keyed by row id, checked by row
identity: the live table replaces a ``LiveCall`` whenever anything about it changes); only
``duration``, which moves with the clock, is spliced in per request.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from lxml import etree

from api.errors import Envelope, MorError
from collector.live.table import LiveCall

__all__ = [
    "CALL_FIELDS", "DST_FIELDS", "XML_DECLARATION", "RowRenderer", "clean_text", "render_error",
    "render_status",
]

log = logging.getLogger(__name__)

XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'

#: Children of <active_call>, in the seed's order; DST_FIELDS follow for calls to a local device/DID.
CALL_FIELDS: tuple[str, ...] = (
    "id", "uniqueid", "status", "answer_time", "duration", "src", "user_id", "user", "src_device_id",
    "device_type", "device_extension", "device_name", "device_istrunk", "device_ani", "localized_dst",
    "direction_code", "direction_name", "destination_name", "provider_id", "provider_name", "channel",
)
DST_FIELDS: tuple[str, ...] = (
    "dst_user_id", "dst_user", "dst_device_id", "dst_device_type", "dst_device_extension",
    "dst_device_name", "dst_device_istrunk", "dst_device_ani",
)

# Everything outside XML 1.0's Char production (C0 controls but TAB/LF/CR, surrogates, FFFE/FFFF).
_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_DURATION_MARK = "\u2063"  # placeholder text; the real value is spliced in per request
_DURATION_SPLIT = f"<duration>{_DURATION_MARK}</duration>".encode()
_NO_DURATION = b"<duration/>"


def clean_text(value: object) -> str | None:
    """Element text for a value: None (→ empty element) for None/"", else XML-safe text."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if not text:
        return None
    if text.isprintable():  # fast path: printable excludes every character XML 1.0 forbids
        return text
    return _NOT_XML_CHAR.sub("", text) or None


def render_status(text: str, envelope: Envelope) -> bytes:
    """``<status><error>`` (bare), ``<page><status><error>`` or ``<page><status><message>``."""
    status = etree.Element("status")
    kind = "message" if envelope is Envelope.MESSAGE else "error"
    etree.SubElement(status, kind).text = clean_text(text)
    root = status
    if envelope is not Envelope.STATUS:
        root = etree.Element("page")
        root.append(status)
    etree.indent(root, space="  ")
    return XML_DECLARATION + etree.tostring(root, encoding="UTF-8") + b"\n"


def render_error(error: MorError) -> bytes:
    return render_status(error.text, error.envelope)


@dataclass(frozen=True, slots=True)
class _Fragment:
    row: LiveCall  # identity check: a new LiveCall object means the row changed
    head: bytes  # "  <active_call>\n … <answer_time…>\n    "
    tail: bytes  # "\n    <src>… </active_call>\n"


class RowRenderer:
    """Renders call lists; owns the per-app fragment cache (no module-level state)."""

    def __init__(self, zone: ZoneInfo | None) -> None:
        self._zone = zone
        self._cache: dict[int, _Fragment] = {}

    def render_calls(self, rows: Sequence[LiveCall], now: float) -> bytes:
        """The ``<page>`` document for non-empty ``rows`` (already filtered and ordered)."""
        parts: list[bytes] = [XML_DECLARATION, b"<page>\n"]
        append = parts.append
        cache = self._cache
        for row in rows:
            frag = cache.get(row.id)
            if frag is None or frag.row is not row:
                frag = cache[row.id] = self._fragment(row)
            append(frag.head)
            answered = row.call.answer_time
            append(_NO_DURATION if answered is None else _duration(now, answered))
            append(frag.tail)
        append(b"</page>\n")
        return b"".join(parts)

    def warm(self, rows: Iterable[LiveCall], limit: int) -> int:
        """Render up to ``limit`` rows that are not cached yet; returns how many it rendered."""
        cache = self._cache
        done = 0
        for row in rows:
            frag = cache.get(row.id)
            if frag is None or frag.row is not row:
                cache[row.id] = self._fragment(row)
                done += 1
                if done >= limit:
                    break
        return done

    def prune(self, live: Iterable[LiveCall], size: int) -> None:
        """Forget rows that left the table, once the cache has grown well past the table's ``size``."""
        if len(self._cache) > 2 * size + 1024:
            keep = {row.id for row in live}
            self._cache = {k: v for k, v in self._cache.items() if k in keep}

    def _fragment(self, row: LiveCall) -> _Fragment:
        el = etree.Element("active_call")
        sub = etree.SubElement
        for tag, value in zip(self.tags(row), self.values(row)):
            sub(el, tag).text = clean_text(value)
        etree.indent(el, space="  ", level=1)
        data = b"  " + etree.tostring(el, encoding="UTF-8") + b"\n"
        head, _, tail = data.partition(_DURATION_SPLIT)
        return _Fragment(row, head, tail)

    @staticmethod
    def tags(row: LiveCall) -> tuple[str, ...]:
        return CALL_FIELDS + DST_FIELDS if row.info.has_dst else CALL_FIELDS

    def values(self, row: LiveCall) -> tuple[object, ...]:
        c, i = row.call, row.info
        values: tuple[object, ...] = (
            row.id, c.uniqueid, c.status.value, self._time(c.answer_time), _DURATION_MARK, c.src,
            i.user_id, i.user, i.src_device_id, i.device_type, i.device_extension, i.device_name,
            i.device_istrunk, i.device_ani, i.localized_dst, i.direction_code, i.direction_name,
            i.destination_name, i.provider_id, i.provider_name, c.channel,
        )
        if i.has_dst:
            values += (i.dst_user_id, i.dst_user, i.dst_device_id, i.dst_device_type,
                       i.dst_device_extension, i.dst_device_name, i.dst_device_istrunk,
                       i.dst_device_ani)
        return values

    def _time(self, ts: float | None) -> str | None:
        if ts is None:
            return None
        try:
            dt = datetime.fromtimestamp(ts, self._zone) if self._zone else datetime.fromtimestamp(ts)
        except (OverflowError, OSError, ValueError):
            log.warning("api unrenderable answer_time=%r", ts)
            return None
        return dt.strftime("%Y-%m-%d %H:%M:%S")


def _duration(now: float, answered: float) -> bytes:
    try:
        seconds = max(0, int(now - answered))
    except (OverflowError, ValueError):  # inf / nan from a broken clock or row
        return _NO_DURATION
    return b"<duration>%d</duration>" % seconds
