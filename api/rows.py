"""One call row as named fields: the single definition both output formats render.

XML (``api.xml``) and JSON (``api.jsonout``) take their element names, order and values from here, so the
two formats cannot drift apart: same keys, same order, ``dst_*`` only for calls to a local device/DID,
text cleaned by the same rule (``clean_text``), ``answer_time`` in the same zone, ``duration`` by the
same arithmetic.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from collector.live.table import LiveCall
from collector.refdata.index import RefIndex
from collector.refdata.model import Server

__all__ = ["CALL_FIELDS", "DST_FIELDS", "DURATION_AT", "RowFields", "clean_text", "duration_seconds",
           "server_name"]

log = logging.getLogger(__name__)

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
_WITH_DST = CALL_FIELDS + DST_FIELDS
#: Where ``duration`` sits: it moves with the clock, so ``RowFields.values`` leaves it None and each
#: format fills it in per request (``duration_seconds``).
DURATION_AT = CALL_FIELDS.index("duration")

# Everything outside XML 1.0's Char production (C0 controls but TAB/LF/CR, surrogates, FFFE/FFFF).
_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def clean_text(value: object) -> str | None:
    """A value as text both formats can carry: None for None/"", else without XML-forbidden characters
    (lxml would refuse them; JSON gets the same text so the formats never disagree)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if not text:
        return None
    if text.isprintable():  # fast path: printable excludes every character XML 1.0 forbids
        return text
    return _NOT_XML_CHAR.sub("", text) or None


def server_name(server: Server) -> str:
    """What a server is called where the API names one (JSON rows, the entities list): its hostname, else
    its IP, else its id; cleaned like every other text."""
    return clean_text(server.hostname) or clean_text(server.server_ip) or str(server.id)


def duration_seconds(now: float, answered: float | None) -> int | None:
    """Whole seconds since the answer; None when not answered or the clock/row is broken (inf/nan)."""
    if answered is None:
        return None
    try:
        return max(0, int(now - answered))
    except (OverflowError, ValueError):
        return None


_NO_SERVERS: Mapping[int, Server] = {}
_MISS = object()
_TIME_CACHE = 65_536  # formatted timestamps kept (a start and an answer per live call), then forgotten


class RowFields:
    """A row's field names and values (``answer_time`` formatted in the configured zone)."""

    __slots__ = ("_zone", "_refs", "_times", "disconnected")

    def __init__(self, zone: ZoneInfo | None,
                 disconnected: Callable[[], Collection[int]] = frozenset,
                 refs: Callable[[], RefIndex] | None = None) -> None:
        self._zone = zone
        self._refs = refs
        # timestamp → its text: a call's start and answer times never change, and JSON renders every row
        # on every request (no row cache there), so each is formatted once, not once per request
        self._times: dict[float, str | None] = {}
        #: server ids disconnected now (JSON's ``stale``; MOR's XML has no such field)
        self.disconnected = disconnected

    def servers(self) -> Mapping[int, Server]:
        """The current reference data's servers (JSON's ``server_name``); none without reference data."""
        return self._refs().servers if self._refs is not None else _NO_SERVERS

    @staticmethod
    def tags(row: LiveCall) -> tuple[str, ...]:
        return _WITH_DST if row.info.has_dst else CALL_FIELDS

    def values(self, row: LiveCall) -> tuple[object, ...]:
        """Raw values in ``tags`` order (ints stay ints); ``duration`` (``DURATION_AT``) is None."""
        c, i = row.call, row.info
        values: tuple[object, ...] = (
            row.id, c.uniqueid, c.status.value, self.time(c.answer_time), None, c.src,
            i.user_id, i.user, i.src_device_id, i.device_type, i.device_extension, i.device_name,
            i.device_istrunk, i.device_ani, i.localized_dst, i.direction_code, i.direction_name,
            i.destination_name, i.provider_id, i.provider_name, c.channel,
        )
        if i.has_dst:
            values += (i.dst_user_id, i.dst_user, i.dst_device_id, i.dst_device_type,
                       i.dst_device_extension, i.dst_device_name, i.dst_device_istrunk,
                       i.dst_device_ani)
        return values

    def time(self, ts: float | None) -> str | None:
        """``YYYY-MM-DD HH:MM:SS`` in the configured zone; None for None or an unrenderable value."""
        if ts is None:
            return None
        times = self._times
        text = times.get(ts, _MISS)
        if text is _MISS:
            text = self._format(ts)
            if len(times) >= _TIME_CACHE:
                times.clear()
            times[ts] = text
        return text  # type: ignore[return-value]

    def _format(self, ts: float) -> str | None:
        try:
            dt = datetime.fromtimestamp(ts, self._zone) if self._zone else datetime.fromtimestamp(ts)
        except (OverflowError, OSError, ValueError):
            log.warning("api unrenderable time=%r", ts)
            return None
        return dt.strftime("%Y-%m-%d %H:%M:%S")
