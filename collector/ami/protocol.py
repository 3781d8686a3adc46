"""The asyncio Protocol handed to panoramisk's ``protocol_factory``.

panoramisk keeps what it does well (login, actions and their futures, reconnect); this class replaces its
reader, which has measured defects in 1.4 (notes/ami.md §5.4):
- it decodes each TCP chunk separately with ``errors='ignore'``, so a UTF-8 character split across two
  reads vanishes ("José" → "Jos"): we frame bytes first and decode whole messages (``AmiFramer``);
- an exception in a callback, or a repeated ``Event:`` header, escapes ``data_received`` and asyncio
  closes the connection: every hand-off here is guarded, and the framer keeps the first header value;
- it parses ~50k events/s: the framer is ~4x faster and skips unwanted events before decoding.
Replies to panoramisk's own actions (Login, Ping …) go back to its futures; our resync lists
(ActionID prefix ``resync-``) and every event go, in wire order, to a ``BatchSink``.

The path from the socket to the consumer, one named hand-off per layer:
``data_received(bytes)`` → ``AmiFramer.feed`` → ``MessageBatch`` (one per read slice) → the session's
``BatchSink`` (``AmiSession._on_batch``: status, resync replies, lifecycle) → the composition root's
``BatchSink`` (``Daemon.on_batch``: tracker, live table).
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from collector.ami.framing import BANNER_KEY, RX_TIME_KEY, AmiFramer, AmiMessage

__all__ = ["RESYNC_ACTION_PREFIX", "BatchSink", "FramedAMIProtocol", "MessageBatch", "ReadProbe", "ReaderOptions"]

log = logging.getLogger(__name__)

RESYNC_ACTION_PREFIX = "resync-"
#: Reader lag that gets a warning (at most one a minute): events queue up unread, and Asterisk drops a
#: reader that stays behind for its ``writetimeout``.
LAG_WARN_SECONDS = 1.0
#: The lag gauge is the median of the last this many per-read samples: a single odd ``Timestamp`` (a clock
#: step, an event stamped by a proxy or a replay with a stale time) does not move it; a real backlog shows
#: within half as many reads.
LAG_WINDOW = 64
#: How often (at most) the reader computes the median itself, for the lag warning; readers of ``lag``
#: (/status, metrics) get it fresh.
LAG_CHECK_SECONDS = 1.0
#: Bytes read per loop iteration, adapted between these bounds (asyncio's fixed default is 256 KiB); see
#: ``_adapt_read_size``.
READ_MIN = 64 * 1024
READ_MAX = 1024 * 1024
#: A gap this long between two reads that both came back full means other work (HTTP) holds the loop.
BUSY_GAP = 0.02

#: Bytes framed and handed on as one batch at a time (see data_received).
FRAME_SLICE = 64 * 1024

#: The events (and resync replies) of one read slice, in wire order.
MessageBatch = list[AmiMessage]
#: Where a server's batches go: ``(server_id, batch)``. The one hand-off type of the AMI layer, from the
#: protocol to the session and from the session to its consumer; it must guard each message itself.
BatchSink = Callable[[int, MessageBatch], None]
#: A measurement seam (benchmarks): called after each read is handled, with ``time.perf_counter()`` taken
#: when ``data_received`` began and when it ended.
ReadProbe = Callable[[float, float], None]


@dataclass(frozen=True, slots=True)
class ReaderOptions:
    """How the reader reads: the bounds of its adaptive read size (equal bounds fix it) and an optional
    probe. Defaults are production's; benchmarks change them here instead of patching the module."""

    read_min: int = READ_MIN
    read_max: int = READ_MAX
    probe: ReadProbe | None = None


class FramedAMIProtocol(AMIProtocol):  # type: ignore[misc]
    def __init__(self, deliver: BatchSink, server: str, skip_events: Iterable[str] = (),
                 on_bytes: Callable[[int], None] | None = None, keep_keys: Iterable[str] | None = None, *,
                 server_id: int = 0, reader: ReaderOptions | None = None) -> None:
        super().__init__()
        reader = reader or ReaderOptions()
        self._keep = None if keep_keys is None else frozenset(keep_keys)
        self._deliver = deliver
        self._server = server
        self._server_id = server_id
        self._read_min, self._read_max, self._probe = reader.read_min, reader.read_max, reader.probe
        self._skip = tuple(skip_events)
        self._on_bytes = on_bytes
        self.framer = AmiFramer(self._skip, self._keep)
        self._last_ts: float | None = None  # the stream's clock (Timestamp headers) …
        self._last_ts_mono = 0.0  # … and when we saw it
        self._pending_ts: str | None = None  # the latest Timestamp of the current chunk, unparsed
        self._ts_fresh = False  # a Timestamp of the current chunk parsed: the chunk gives a lag sample
        self._chunk_wall = self._chunk_mono = 0.0
        self.read_size = self._read_min
        self._read_end = 0.0  # monotonic time the previous data_received returned
        # the lag gauge (see _note_lag and ``lag``): a ring of per-read samples, their median less a floor
        self._lag_samples: list[float] = []
        self._lag_next = 0  # the ring slot the next sample overwrites once it is full
        self._lag_dirty = False  # samples came since _lag_value was computed
        self._lag_value = 0.0
        self._lag_floor = math.inf
        self._lag_checked_at = -math.inf
        self._lag_warned_at = -math.inf
        self.bytes_in = 0  # on this connection (a protocol per connection): tells "no banner" from "no login"

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        super().connection_made(transport)
        self.framer = AmiFramer(self._skip, self._keep)
        self._reset_lag()
        self.read_size = self._read_min
        if hasattr(transport, "max_size"):
            transport.max_size = self.read_size

    def data_received(self, data: bytes) -> None:
        probe = self._probe
        started = time.perf_counter() if probe is not None else 0.0
        self.bytes_in += len(data)
        if self._on_bytes is not None:
            self._on_bytes(len(data))
        # clocks are read once per chunk, not per message: at 100k events/s that is most of this layer
        self._chunk_wall, self._chunk_mono = time.time(), time.monotonic()
        self._adapt_read_size(len(data))
        # a big read is framed and handed on a slice at a time: the messages of one slice are still in the
        # CPU cache when the tracker reads them (one 1 MiB slice made the whole path ~25 % slower)
        if len(data) <= FRAME_SLICE:
            self._frame_and_route(data)
        else:
            for i in range(0, len(data), FRAME_SLICE):
                self._frame_and_route(data[i:i + FRAME_SLICE])
        if self._pending_ts is not None:
            self._settle_clock()
        if self._ts_fresh:  # one sample per read, from its last real Timestamp (untimed messages give none)
            self._ts_fresh = False
            self._note_lag(self._chunk_wall - self._last_ts)  # type: ignore[operator]
        self._read_end = time.monotonic()
        if probe is not None:
            try:
                probe(started, time.perf_counter())
            except Exception:
                log.exception("ami read probe failed server=%s", self._server)

    def _adapt_read_size(self, n: int) -> None:
        """asyncio reads one ``max_size`` chunk per loop iteration. Small reads are ~15 % cheaper per event
        (the bytes, messages and tracker state stay in the CPU cache), but when other work (HTTP requests
        rendering 10,000 calls) takes most of each iteration, a 64 KiB read per iteration caps the reader
        below the stream and it falls behind for good. So: a full read after a long gap grows the size
        (up to ``read_max``: each read is handled in one go and holds the loop that long); a full read after a
        short gap (the loop has time for us) shrinks it; a partial read means we keep up: back to ``read_min``."""
        size = self.read_size
        if n < size:
            new = self._read_min
        elif self._chunk_mono - self._read_end > BUSY_GAP:
            new = min(self._read_max, size * 4)
        else:
            new = max(self._read_min, size // 2)
        if new != size:
            self.read_size = new
            transport = self.transport
            if transport is not None and hasattr(transport, "max_size"):
                transport.max_size = new

    def _frame_and_route(self, data: bytes) -> None:
        try:
            messages = self.framer.feed(data)
        except Exception:  # the framer does not raise by design; this is the belt to its braces
            log.exception("ami framing failed server=%s; buffer dropped", self._server)
            self.framer = AmiFramer(self._skip, self._keep)
            return
        responses = self.responses
        batch: MessageBatch = []
        for msg in messages:
            action_id = msg.get("ActionID")
            if action_id is not None and action_id in responses and not action_id.startswith(
                    RESYNC_ACTION_PREFIX):
                self._reply(msg, action_id)
                continue
            ts = msg.get("Timestamp")
            if ts is not None:
                self._pending_ts = ts  # parsed only when needed: by an untimed message or at chunk end
            elif BANNER_KEY in msg:
                self.version = msg[BANNER_KEY]
                log.info("ami banner server=%s version=%s", self._server, self.version)
            else:
                self._stamp(msg)
            batch.append(msg)
        if batch:
            try:
                self._deliver(self._server_id, batch)
            except Exception:  # the sink guards each message itself; this is the belt to its braces
                log.exception("ami event handling failed server=%s events=%d", self._server, len(batch))

    def _reply(self, msg: AmiMessage, action_id: str) -> None:
        """A reply to one of panoramisk's own actions (Login, Ping …): its future, not the sink."""
        try:
            self.handle_message(Message(msg))
        except Exception:
            log.exception("ami reply handling failed server=%s action_id=%s", self._server, action_id)

    def _stamp(self, msg: AmiMessage) -> None:
        """Give untimed messages (resync items, FullyBooted, or every event when Asterisk runs without
        ``timestampevents``) a time on the stream's own clock: the last Timestamp seen plus the local
        time elapsed since, so resync-derived times never mix two clocks."""
        if self._pending_ts is not None:
            self._settle_clock()
        if self._last_ts is None:
            msg[RX_TIME_KEY] = repr(self._chunk_wall)
        else:
            msg[RX_TIME_KEY] = repr(self._last_ts + (self._chunk_mono - self._last_ts_mono))

    def _settle_clock(self) -> None:
        ts, self._pending_ts = self._pending_ts, None
        try:
            value = float(ts)  # type: ignore[arg-type]
        except ValueError:
            return
        if math.isfinite(value):  # "nan"/"inf" parse, but are no time
            self._last_ts, self._last_ts_mono, self._ts_fresh = value, self._chunk_mono, True

    def _reset_lag(self) -> None:
        self._lag_samples.clear()
        self._lag_next, self._lag_dirty, self._lag_value, self._lag_floor = 0, False, 0.0, math.inf

    @property
    def lag(self) -> float:
        """Seconds this reader is behind the stream: the median of the last ``LAG_WINDOW`` per-read samples
        (receive time minus the read's last ``Timestamp``), less the lowest such median on this connection
        (clock skew, network latency). It grows only when events wait unread, e.g. while the event loop is
        busy elsewhere; one odd Timestamp among normal ones does not move it. The median is computed when
        read (64 floats: a few µs), not per message."""
        if self._lag_dirty:
            self._lag_dirty = False
            median = statistics.median(self._lag_samples)
            if median < self._lag_floor:
                self._lag_floor = median
            self._lag_value = median - self._lag_floor
        return self._lag_value

    def _note_lag(self, raw: float) -> None:
        """One lag sample (a read's receive time minus its last Timestamp) into the ring; at most once per
        ``LAG_CHECK_SECONDS`` the gauge is computed for the warning."""
        samples = self._lag_samples
        if len(samples) < LAG_WINDOW:
            samples.append(raw)
        else:
            samples[self._lag_next] = raw
            self._lag_next = (self._lag_next + 1) % LAG_WINDOW
        self._lag_dirty = True
        mono = self._chunk_mono
        if mono - self._lag_checked_at < LAG_CHECK_SECONDS:
            return
        self._lag_checked_at = mono
        lag = self.lag
        if lag > LAG_WARN_SECONDS and mono - self._lag_warned_at >= 60.0:
            self._lag_warned_at = mono
            log.warning("ami reader behind server=%s lag=%.2fs: events arrive faster than they are "
                        "handled (Asterisk drops a reader behind by its writetimeout)", self._server, lag)
