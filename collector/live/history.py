"""Concurrency history, sampled: per 15 s bucket the most calls up at once, total and answered, per series.

Pure (no I/O): fed the live table's changes (``on_change``, a ``LiveTable`` listener) and ticked by a timer
(``tick``), it keeps the open bucket's maxima in memory and hands closed buckets to whoever stores them
(``take_closed``). A count only changes at a row change, so the maximum over a bucket is the largest of the
standing count when the bucket opens and the count after each change inside it: both are sampled, nothing
is polled. A quiet bucket still gets the standing count, when the clock passes its end.

Series (the names stored in ``active_calls_data.series``):
``all`` every call; ``server:<id>`` the calls of one Asterisk server; ``reseller:<id>`` the calls reseller
<id> sees in ``active_calls_get`` (his id is one of ``PARTY_IDS``: caller, caller's owner, callee, callee's
owner — collector.refdata.visibility, the rule ``api.scope`` applies); ``user:<id>`` the calls where user
<id> is the caller or the callee (``OWN_IDS``, again the API's rule for a user), kept when ``per_user``.
Buckets start at Unix-time multiples of 15 s. Memory is the live calls plus the open bucket plus closed
buckets not yet written, the last bounded by ``max_pending`` rows (oldest buckets dropped, counted).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from collector.live.table import LiveCall
from collector.refdata.visibility import OWN_IDS, PARTY_IDS
from collector.tracking.calls import CallKey, CallStatus

__all__ = ["BUCKET_SECONDS", "ROWS_PER_SERIES_DAY", "SERIES_ALL", "HistorySampler", "HistorySettings", "Point",
           "Row", "bucket_of", "reseller_series", "server_series", "user_series"]

log = logging.getLogger(__name__)

BUCKET_SECONDS = 15
SERIES_ALL = "all"
#: rows per series per day: 86,400 / 15
ROWS_PER_SERIES_DAY = 86_400 // BUCKET_SECONDS

Point = tuple[int, int, int]  # (bucket start, max total, max answered)
Row = tuple[str, int, int, int]  # (series, bucket start, max total, max answered)


def bucket_of(t: float) -> int:
    """The start of the bucket holding Unix time ``t`` (a multiple of 15)."""
    return int(t // BUCKET_SECONDS) * BUCKET_SECONDS


def server_series(server_id: int) -> str:
    return f"server:{server_id}"


def reseller_series(user_id: int) -> str:
    return f"reseller:{user_id}"


def user_series(user_id: int) -> str:
    return f"user:{user_id}"


@dataclass(frozen=True, slots=True)
class HistorySettings:
    """``[history]``: sample at all, how long rows live, and whether every user gets a series."""

    enabled: bool = True
    retention_days: int = 30
    per_user: bool = True


# a call's series, whether it is answered, and the party ids its series were derived from
_Contribution = tuple[tuple[str, ...], bool, tuple[int | None, ...]]


class HistorySampler:
    """Counts per series, kept current change by change; maxima of the open bucket; closed buckets pending."""

    def __init__(self, clock: Callable[[], float], *, per_user: bool = True, resellers: Collection[int] = (),
                 max_fill: int = 20, max_pending: int = 500_000) -> None:
        self._clock = clock
        self.per_user = per_user
        self._resellers: frozenset[int] = frozenset(resellers)
        self.max_fill = max_fill  # quiet buckets filled with the standing count after a clock jump / stall
        self.max_pending = max_pending
        self._calls: dict[CallKey, _Contribution] = {}
        self._counts: dict[str, list[int]] = {}  # series → [total, answered] now; absent when 0
        self._open_bucket: int | None = None
        self._open: dict[str, list[int]] = {}  # series → [max total, max answered] in the open bucket
        self._closed: dict[int, dict[str, tuple[int, int]]] = {}  # bucket → series → maxima, not yet taken
        self._pending = 0  # rows in _closed
        self.dropped_rows = 0  # closed rows lost because the writer fell max_pending behind
        self.skipped_buckets = 0  # quiet buckets past max_fill after a clock jump, left without rows
        # series names by id: formatted once, not per change (bounded by the reference data's ids)
        self._server_names: dict[int, str] = {}
        self._reseller_names: dict[int, str] = {}
        self._user_names: dict[int, str] = {}

    # ------------------------------------------------------------------ what a call counts in
    def series_of(self, row: LiveCall) -> tuple[str, ...]:
        info = row.info
        sid = row.call.server_id
        server = self._server_names.get(sid)
        if server is None:
            server = self._server_names[sid] = server_series(sid)
        names = [SERIES_ALL, server]
        resellers = self._resellers
        if resellers:
            for uid in dict.fromkeys(PARTY_IDS(info)):
                if uid in resellers:
                    assert uid is not None
                    name = self._reseller_names.get(uid)
                    if name is None:
                        name = self._reseller_names[uid] = reseller_series(uid)
                    names.append(name)
        if self.per_user:
            for uid in dict.fromkeys(OWN_IDS(info)):
                if uid is not None:
                    name = self._user_names.get(uid)
                    if name is None:
                        name = self._user_names[uid] = user_series(uid)
                    names.append(name)
        return tuple(names)

    # ------------------------------------------------------------------ input
    def on_change(self, kind: str, row: LiveCall) -> None:
        """A ``LiveTable`` listener: ``added`` / ``updated`` / ``removed``."""
        call = row.call
        key = call.key
        if kind == "removed":
            if key in self._calls:
                self._roll(self._clock())
                self._apply(key, None)
            return
        answered = call.status is CallStatus.ANSWERED
        parties = PARTY_IDS(row.info)
        old = self._calls.get(key)
        if old is not None and old[1] == answered and old[2] == parties:
            return  # most updates (legs, phase, names) move no count: the series follow from these ids alone
        self._roll(self._clock())
        self._apply(key, (self.series_of(row), answered, parties))

    def seed(self, rows: Iterable[LiveCall]) -> None:
        """The calls already in the table when sampling starts (restored at start-up)."""
        for row in rows:
            self.on_change("added", row)

    def set_resellers(self, resellers: Collection[int], rows: Iterable[LiveCall]) -> None:
        """New reference data: who is a reseller may have changed, so every call's series is recomputed."""
        ids = frozenset(resellers)
        if ids == self._resellers:
            return
        self._resellers = ids
        self._reseller_names.clear()
        self._roll(self._clock())
        for row in rows:
            self._apply(row.call.key, (self.series_of(row), row.call.status is CallStatus.ANSWERED,
                                       PARTY_IDS(row.info)))

    def tick(self) -> None:
        """The timer: close the open bucket (and fill quiet ones) once the clock has passed its end."""
        self._roll(self._clock())

    def _apply(self, key: CallKey, new: _Contribution | None) -> None:
        calls = self._calls
        old = calls.get(key)
        if old == new:
            return
        counts = self._counts
        if old is not None:
            names, answered, _parties = old
            for s in names:
                c = counts[s]
                c[0] -= 1
                if answered:
                    c[1] -= 1
                if not c[0]:
                    del counts[s]
        if new is None:
            del calls[key]
            return
        calls[key] = new
        names, answered, _parties = new
        opened = self._open
        for s in names:
            got = counts.get(s)
            if got is None:
                c = counts[s] = [1, 1 if answered else 0]
            else:
                c = got
                c[0] += 1
                if answered:
                    c[1] += 1
            m = opened.get(s)
            if m is None:
                opened[s] = [c[0], c[1]]
            else:  # only an increase can raise a maximum
                if c[0] > m[0]:
                    m[0] = c[0]
                if c[1] > m[1]:
                    m[1] = c[1]

    def _roll(self, now: float) -> None:
        b = bucket_of(now)
        cur = self._open_bucket
        if cur is None:
            self._open_bucket = b
            self._open = {s: [c[0], c[1]] for s, c in self._counts.items()}
            return
        if b <= cur:
            return  # the same bucket, or the clock stepped back: changes count in the open bucket
        self._close(cur, {s: (m[0], m[1]) for s, m in self._open.items()})
        standing = {s: (c[0], c[1]) for s, c in self._counts.items()}
        gap = (b - cur) // BUCKET_SECONDS - 1
        fill = min(gap, self.max_fill)
        if standing:
            for i in range(1, fill + 1):
                self._close(cur + i * BUCKET_SECONDS, standing)
        if gap > fill:
            self.skipped_buckets += gap - fill
            log.warning("history: clock jumped %d s ahead; %d quiet buckets filled, %d left without rows",
                        b - cur, fill, gap - fill)
        self._open_bucket = b
        self._open = {s: [t, a] for s, (t, a) in standing.items()}

    def _close(self, bucket: int, values: dict[str, tuple[int, int]]) -> None:
        if not values:
            return
        have = self._closed.get(bucket)
        if have is None:
            self._closed[bucket] = dict(values)
            self._pending += len(values)
        else:
            for s, (t, a) in values.items():
                old = have.get(s)
                if old is None:
                    have[s] = (t, a)
                    self._pending += 1
                else:
                    have[s] = (max(old[0], t), max(old[1], a))
        self._bound()

    def _bound(self) -> None:
        while self._pending > self.max_pending and self._closed:
            oldest = min(self._closed)
            n = len(self._closed.pop(oldest))
            self._pending -= n
            if not self.dropped_rows:
                log.warning("history: writer %d rows behind; dropping the oldest unwritten buckets", self.max_pending)
            self.dropped_rows += n

    # ------------------------------------------------------------------ output
    def take_closed(self) -> list[Row]:
        """Every closed bucket not yet taken, as rows (the caller writes them or ``give_back``s them)."""
        rows = [(s, b, t, a) for b, values in self._closed.items() for s, (t, a) in values.items()]
        self._closed = {}
        self._pending = 0
        return rows

    def give_back(self, rows: Iterable[Row]) -> None:
        """Rows a failed write did not store: pending again (merged by maximum), still bounded."""
        for s, b, t, a in rows:
            self._close(b, {s: (t, a)})

    def open_rows(self) -> list[Row]:
        """The open bucket so far (written at shutdown: a restart in the same bucket merges by maximum)."""
        b = self._open_bucket
        if b is None:
            return []
        return [(s, b, m[0], m[1]) for s, m in self._open.items()]

    def points(self, series: str, start: int, end: float) -> dict[int, tuple[int, int]]:
        """What memory holds for one series with ``start <= bucket < end``: unwritten closed buckets and the
        open one (the store has the rest)."""
        out: dict[int, tuple[int, int]] = {}
        for b, values in self._closed.items():
            if start <= b < end and (v := values.get(series)) is not None:
                out[b] = v
        ob = self._open_bucket
        if ob is not None and start <= ob < end and (m := self._open.get(series)) is not None:
            out[ob] = (m[0], m[1])
        return out

    def counts(self) -> dict[str, tuple[int, int]]:
        """The standing counts now (series with at least one call)."""
        return {s: (c[0], c[1]) for s, c in self._counts.items()}

    @property
    def pending_rows(self) -> int:
        return self._pending

    @property
    def open_bucket(self) -> int | None:
        return self._open_bucket
