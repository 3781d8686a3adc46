"""Bytes → AMI messages, with no I/O.

Rule of this module: feed it whatever TCP hands over, in any split; it returns complete messages as
plain dicts and never raises on what the peer sends. It exists because panoramisk 1.4 decodes each TCP
chunk on its own (a UTF-8 character split across two reads is dropped), cannot survive a repeated
``Event:`` header, and tops out near 50k events/s; this framer decodes whole messages only, keeps the
first value of a repeated header, caps message size, and skips unwanted events by a bytes prefix test
before any decoding.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["ACCELERATED", "AmiFramer", "AmiMessage", "BANNER_KEY", "block_decoder", "MAX_MESSAGE_BYTES",
           "RX_TIME_KEY", "iter_messages", "parse_action", "parse_block", "parse_hms"]

log = logging.getLogger(__name__)

AmiMessage = dict[str, str]
#: Key of the pseudo-message the framer emits for an ``Asterisk Call Manager/x.y`` banner line.
BANNER_KEY = "_Banner"
#: Header the protocol adds with the local receive time to messages without ``Timestamp``.
RX_TIME_KEY = "_RxTime"
#: Largest message kept; larger ones (a 1 MiB header line, garbage with no blank line) are discarded.
MAX_MESSAGE_BYTES = 256 * 1024

_BANNER_PREFIX = b"Asterisk Call Manager/"

# the optional C decoder (collector/ami/_fast.c); COLLECTOR_NO_EXTENSIONS=1 forces the pure-Python path
_fast: Any = None
if not os.environ.get("COLLECTOR_NO_EXTENSIONS"):
    try:
        _fast = importlib.import_module("collector.ami._fast")
    except ImportError:  # not built (no compiler at install time): the Python path is exact, only slower
        log.debug("collector.ami._fast not built; framing in pure Python")
#: True when the C decoder is in use.
ACCELERATED = _fast is not None


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
    ``keep_keys`` is a projection hint: with the C decoder, only these headers (plus ``Event`` and
    ``Response``) are decoded; without it, or for a block the C decoder hands back, every header is there.
    Consumers must therefore read only keys they listed, and must not rely on the others being absent.
    """

    __slots__ = ("_buf", "_decoder", "_discarding", "_skip_prefixes", "stats")

    def __init__(self, skip_events: Iterable[str] = (), keep_keys: Iterable[str] | None = None,
                 accelerate: bool = True) -> None:
        self._buf = b""
        self._discarding = False
        self._skip_prefixes = tuple(f"Event: {name}\n".encode() for name in skip_events)
        self.stats = FramerStats()
        self._decoder = None
        if accelerate and _fast is not None:
            keep = None if keep_keys is None else frozenset((*keep_keys, "Event", "Response"))
            self._decoder = _fast.Decoder(self._skip_prefixes, keep, MAX_MESSAGE_BYTES)

    def feed(self, data: bytes) -> list[AmiMessage]:
        """Add bytes; return the messages they complete. ``b""`` means nothing (not EOF)."""
        # CR never appears inside an AMI value (Asterisk C-escapes caller names and variables), so
        # dropping every CR turns CRLF framing, stray LF-only framing (asterisk#761) and a CR/LF pair
        # split across reads into one case: messages end at a blank line "\n\n".
        decoder = self._decoder
        if decoder is not None and not self._discarding:
            return self._feed_c(decoder, data)
        if b"\r" in data:
            data = data.replace(b"\r", b"")
        buf = self._buf + data if self._buf else data
        parts = buf.split(b"\n\n")
        tail = parts.pop()
        out: list[AmiMessage] = []
        if parts:
            if self._discarding:
                # the end of an oversized message: drop it and resume with the next one
                self._discarding = False
                parts[0] = b""
            self._decode_all(parts, out)
        if len(tail) > MAX_MESSAGE_BYTES:
            if not self._discarding:
                self.stats.oversized += 1
                log.warning("ami message over %d bytes discarded", MAX_MESSAGE_BYTES)
            self._discarding = True
            tail = b""
        self._buf = tail
        return out

    def _feed_c(self, decoder: Any, data: bytes) -> list[AmiMessage]:
        """``feed`` with the C decoder, which finds the blocks in the raw buffer itself (its CRs kept: a
        block ends at LF, CRs, LF): no copy to drop the CRs, no split into a list of bytes. Same result."""
        buf = self._buf + data if self._buf else data
        out: list[AmiMessage] = []
        consumed, messages, skipped = decoder.feed(buf, out, self._decode_one)
        tail = buf[consumed:] if consumed else buf
        stats = self.stats
        stats.messages += messages
        stats.skipped += skipped
        if len(tail) > MAX_MESSAGE_BYTES and len(tail) - tail.count(b"\r") > MAX_MESSAGE_BYTES:
            stats.oversized += 1
            log.warning("ami message over %d bytes discarded", MAX_MESSAGE_BYTES)
            self._discarding = True  # the Python path drops the rest of it, up to its blank line
            tail = b""
        self._buf = tail
        return out

    def _decode_all(self, parts: list[bytes], out: list[AmiMessage]) -> None:
        """The Python framing loop (one iteration per message): without the C decoder, or while the end of
        an oversized message is being discarded."""
        skip = self._skip_prefixes
        decode_one = self._decode_one
        skipped = 0
        for raw in parts:
            if not raw:
                continue
            if raw[0] == 10:  # leading blank lines
                raw = raw.lstrip(b"\n")
                if not raw:
                    continue
            if skip and raw.startswith(skip):
                skipped += 1
                continue
            decode_one(raw, out)  # counts the messages it appends
        self.stats.skipped += skipped

    def _decode_one(self, raw: bytes, out: list[AmiMessage]) -> None:
        """One block → zero, one or (banner + message) two messages appended to ``out``.
        The single definition of every edge case: the C decoder sends here whatever it cannot do exactly."""
        if b"\r" in raw:  # a block the C decoder found in the raw stream
            raw = raw.replace(b"\r", b"")
        raw = raw.lstrip(b"\n")
        if not raw:
            return
        if self._skip_prefixes and raw.startswith(self._skip_prefixes):
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
        lines = raw.decode("utf-8", "replace").split("\n")
        msg = _headers(lines)
        if "Event" not in msg and "Response" not in msg:
            n = self.stats.garbage = self.stats.garbage + 1
            if n <= 10 or n % 1000 == 0:  # say what was skipped; a garbage flood must not fill the log
                log.warning("ami block without Event or Response skipped (%d on this connection): %r",
                            n, "\n".join(lines)[:200])
            return
        self.stats.messages += 1
        out.append(msg)


_str_split = str.split
_COLON_SPACE = itertools.repeat(": ")  # endless: map() stops at the end of ``lines``
_ONE = itertools.repeat(1)


def _headers(lines: list[str]) -> AmiMessage:
    """The header rule of every AMI block, for event blocks and replies alike (see ``_parse_lines``)."""
    # fast path, exact: when every line holds ": " and no key repeats, one C-level pass builds the
    # same dict as _parse_lines; anything else (a line without ": ", a repeated key) takes the slow path
    try:
        msg = dict(map(_str_split, lines, _COLON_SPACE, _ONE))
    except ValueError:
        return _parse_lines(lines)
    if len(msg) != len(lines):
        return _parse_lines(lines)
    return msg


def _parse_lines(lines: list[str]) -> AmiMessage:
    msg: AmiMessage = {}
    for line in lines:
        key, sep, value = line.partition(": ")
        if not sep:
            key, sep, value = line.partition(":")
            if not sep:
                continue  # a line that is no header (garbage); the rest may still be usable
        if key not in msg:  # first value wins: a repeated Event: header cannot rename the event
            msg[key] = value
    return msg


def parse_block(raw: bytes, *, decode_then_strip_cr: bool = False) -> AmiMessage:
    """Headers of one whole block (terminator or not), as the framer reads them: split at the first ``": "``
    (else ``":"``), lines without a colon skipped, first value of a repeated key kept, no banner or
    Event/Response check. CRs are dropped before decoding, as the framer does; ``decode_then_strip_cr``
    drops them after (``replay.parse_block``'s historical order: it differs only for invalid UTF-8 next
    to a CR)."""
    if decode_then_strip_cr:
        text = raw.decode("utf-8", "replace").replace("\r", "")
    else:
        text = (raw.replace(b"\r", b"") if b"\r" in raw else raw).decode("utf-8", "replace")
    return _headers(text.strip("\n").split("\n"))  # blank lines hold no header: strip them for the fast path


def parse_action(raw: bytes | str, *, errors: str = "replace", first_wins: bool = True,
                 bare_lines: bool = False) -> dict[str, str]:
    """Headers of an action block a client sent (CRs already dropped), keys lower-cased and both sides
    stripped: Asterisk reads action headers case-insensitively. Split at the first ``":"``; by default a
    line without one or with an empty key is skipped and the first value of a repeated key is kept.
    ``bare_lines`` keeps those lines (key = the stripped line, value ``""``), ``first_wins=False`` keeps
    the last value, ``errors`` is the UTF-8 decoding policy (bench/ingest.py's minimal peer:
    ``errors="strict", first_wins=False, bare_lines=True``). A ``str`` is taken as already decoded."""
    out: dict[str, str] = {}
    text = raw if isinstance(raw, str) else raw.decode("utf-8", errors)
    for line in text.split("\n"):
        key, sep, value = line.partition(":")
        k = key.strip().lower()
        if not bare_lines and (not sep or not k):
            continue
        if first_wins and k in out:
            continue
        out[k] = value.strip()
    return out


def parse_hms(value: str, *, fractional: bool = True) -> float:
    """An ``HH:MM:SS`` field (CoreShowChannel ``Duration``) in seconds; anything else → 0.0.
    ``fractional=False`` also refuses a non-integer seconds part (``"0:0:1.5"`` → 0.0)."""
    try:
        h, m, s = value.split(":")
        if fractional:
            return int(h) * 3600 + int(m) * 60 + float(s)
        return float(int(h) * 3600 + int(m) * 60 + int(s))
    except ValueError:
        return 0.0


def block_decoder() -> Any:
    """A C decoder for whole blocks (every header, no skip list), or None when it is not built: for
    ``replay.parse_blocks``, whose blocks are not a TCP stream."""
    return None if _fast is None else _fast.Decoder((), None, MAX_MESSAGE_BYTES)


def iter_messages(data: bytes, skip_events: Iterable[str] = ()) -> list[AmiMessage]:
    """Frame a whole recorded stream at once (traces, tests)."""
    framer = AmiFramer(skip_events)
    msgs = framer.feed(data)
    msgs.extend(framer.feed(b"\n\n"))
    return msgs
