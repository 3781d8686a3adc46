"""lxml rendering of the MOR documents: ``<page>`` of ``<active_call>`` rows, and the status envelopes.

Every document starts with ``<?xml version="1.0" encoding="UTF-8"?>`` and is indented by two spaces.
Row fields come from ``api.rows`` (shared with JSON); text goes through its ``clean_text``, so any value
renders as well-formed XML. Each row is serialised by lxml once and cached (keyed by row id, checked by
row identity: the live table replaces a ``LiveCall`` whenever anything about it changes); only
``duration``, which moves with the clock, is spliced in per request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lxml import etree

from api.errors import Envelope, MorError
from api.rows import DURATION_AT, RowFields, clean_text, duration_seconds
from collector.live.table import LiveCall

__all__ = ["XML_DECLARATION", "RowRenderer", "render_error", "render_status"]

XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'

_DURATION_MARK = "\u2063"  # placeholder text; the real value is spliced in per request
_DURATION_SPLIT = f"<duration>{_DURATION_MARK}</duration>".encode()
_NO_DURATION = b"<duration/>"


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

    def __init__(self, fields: RowFields) -> None:
        self.fields = fields
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
        texts = [clean_text(value) for value in self.fields.values(row)]
        texts[DURATION_AT] = _DURATION_MARK
        el = etree.Element("active_call")
        sub = etree.SubElement
        for tag, text in zip(self.fields.tags(row), texts, strict=False):
            sub(el, tag).text = text
        etree.indent(el, space="  ", level=1)
        data = b"  " + etree.tostring(el, encoding="UTF-8") + b"\n"
        head, _, tail = data.partition(_DURATION_SPLIT)
        return _Fragment(row, head, tail)


def _duration(now: float, answered: float) -> bytes:
    seconds = duration_seconds(now, answered)
    return _NO_DURATION if seconds is None else b"<duration>%d</duration>" % seconds
