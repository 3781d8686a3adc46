"""Bytes → AMI messages, with no I/O.

Rule of this module: feed it whatever TCP hands over, in any split; it returns complete messages as
plain dicts and never raises on what the peer sends. It exists because panoramisk 1.4 decodes each TCP
chunk on its own (a UTF-8 character split across two reads is dropped), cannot survive a repeated
``Event:`` header, and tops out near 50k events/s; this framer decodes whole messages only, keeps the
first value of a repeated header, caps message size, and skips unwanted events by a bytes prefix test
before any decoding.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["AmiFramer", "AmiMessage", "BANNER_KEY", "MAX_MESSAGE_BYTES", "iter_messages"]

log = logging.getLogger(__name__)

AmiMessage = dict[str, str]
#: Key of the pseudo-message the framer emits for an ``Asterisk Call Manager/x.y`` banner line.
BANNER_KEY = "_Banner"
#: Largest message kept; larger ones (a 1 MiB header line, garbage with no blank line) are discarded.
MAX_MESSAGE_BYTES = 256 * 1024

_BANNER_PREFIX = b"Asterisk Call Manager/"


@dataclass(slots=True)
class FramerStats:
    messages: int = 0
    skipped: int = 0
    oversized: int = 0
    garbage: int = 0


class AmiFramer:
    """Incremental AMI framer.

    ``skip_events`` lists event names dropped before decoding (e.g. ``VarSet`` when the login cannot
    filter at the source); the test is a prefix compare on the raw bytes, the cheapest possible.
    """

    __slots__ = ("_buf", "_discarding", "_skip_prefixes", "stats")

    def __init__(self, skip_events: Iterable[str] = ()) -> None:
        self._buf = b""
        self._discarding = False
        self._skip_prefixes = tuple(f"Event: {name}\n".encode() for name in skip_events)
        self.stats = FramerStats()

    def feed(self, data: bytes) -> list[AmiMessage]:
        """Add bytes; return the messages they complete. ``b""`` means nothing (not EOF)."""
        # CR never appears inside an AMI value (Asterisk C-escapes caller names and variables), so
        # dropping every CR turns CRLF framing, stray LF-only framing (asterisk#761) and a CR/LF pair
        # split across reads into one case: messages end at a blank line "\n\n".
        if b"\r" in data:
            data = data.replace(b"\r", b"")
        buf = self._buf + data if self._buf else data
        parts = buf.split(b"\n\n")
        tail = parts.pop()
        out: list[AmiMessage] = []
        for raw in parts:
            if self._discarding:
                # the end of an oversized message: drop it and resume with the next one
                self._discarding = False
                continue
            if not raw:
                continue
            self._decode_into(raw, out)
        if len(tail) > MAX_MESSAGE_BYTES:
            if not self._discarding:
                self.stats.oversized += 1
                log.warning("ami message over %d bytes discarded", MAX_MESSAGE_BYTES)
            self._discarding = True
            tail = b""
        self._buf = tail
        return out

    def _decode_into(self, raw: bytes, out: list[AmiMessage]) -> None:
        if raw.startswith(b"\n"):
            raw = raw.lstrip(b"\n")
            if not raw:
                return
        if raw.startswith(self._skip_prefixes) if self._skip_prefixes else False:
            self.stats.skipped += 1
            return
        if len(raw) > MAX_MESSAGE_BYTES:
            self.stats.oversized += 1
            log.warning("ami message over %d bytes discarded", MAX_MESSAGE_BYTES)
            return
        if raw.startswith(_BANNER_PREFIX):
            line, _, raw = raw.partition(b"\n")
            out.append({BANNER_KEY: line[len(_BANNER_PREFIX):].decode("utf-8", "replace").strip()})
            if not raw:
                return
        text = raw.decode("utf-8", "replace")
        msg: AmiMessage = {}
        for line in text.split("\n"):
            key, sep, value = line.partition(": ")
            if not sep:
                key, sep, value = line.partition(":")
                if not sep:
                    continue  # a line that is no header (garbage); the rest may still be usable
            if key not in msg:  # first value wins: a repeated Event: header cannot rename the event
                msg[key] = value
        if not msg or ("Event" not in msg and "Response" not in msg):
            self.stats.garbage += 1
            log.debug("ami block without Event or Response skipped: %r", text[:200])
            return
        self.stats.messages += 1
        out.append(msg)


def iter_messages(data: bytes, skip_events: Iterable[str] = ()) -> list[AmiMessage]:
    """Frame a whole recorded stream at once (traces, tests)."""
    framer = AmiFramer(skip_events)
    msgs = framer.feed(data)
    msgs.extend(framer.feed(b"\n\n"))
    return msgs
