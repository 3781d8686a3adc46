"""The change hub: LiveTable changes → one numbered, bounded history that every stream client reads.

Why a shared history instead of a queue per client: ``publish`` runs inside the tracker's event
handling, so it must cost O(1) however many clients are connected. Each client keeps only a cursor
(the last sequence number it has written); its "queue" is the stretch of history between its cursor
and the head, bounded by the stream's ``max_lag`` — a client further behind is dropped, the daemon
never waits for it. The same history serves ``Last-Event-ID`` resumes.

Scoped clients (resellers, users: the many portal users) do not read the whole history: each one
sees only calls involving its own user id, so ``publish`` routes a change by the user ids it involves
(caller, caller's owner, callee, callee's owner — before and after) into the inboxes registered
under those ids (``Inbox``: a bounded per-client queue). That costs O(interested clients) per change
instead of waking and filtering every client for every change, which is what lets 1,000 clients
follow 5,000 changes/s on one core. Clients that see everything read the shared history.

Sequence numbers start at the wall clock in microseconds, so they keep increasing across daemon
restarts (an id from a previous run is below the history and gets a fresh snapshot, never wrong
deltas) and stay below 2**53 (exact in JavaScript).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from api.scope import PARTY_IDS
from collector.live.table import LiveCall

__all__ = ["Change", "ChangeHub", "Inbox", "SubscribableTable"]

Listener = Callable[[str, LiveCall], None]


class Change:
    """One row change. ``prev`` is the row as it was before (None for ``added``), so a client with
    filters can tell "became visible" / "stopped being visible" without per-client row state."""

    __slots__ = ("seq", "kind", "row", "prev", "frame", "data_at", "prev_data")

    def __init__(self, seq: int, kind: str, row: LiveCall, prev: LiveCall | None) -> None:
        self.seq = seq
        self.kind = kind
        self.row = row
        self.prev = prev
        # The SSE event as published, encoded once by the first client that needs it (and kept only
        # once: the row's JSON is ``frame[data_at:-2]``, for clients that see it as another kind).
        self.frame: bytes | None = None
        self.data_at = 0
        # ``prev``'s JSON, encoded once, for the ``call_removed`` of clients that stop seeing the row.
        self.prev_data: bytes | None = None


class Inbox:
    """A scoped client's bounded queue. ``push`` never blocks: past ``limit`` it only marks overflow
    (the client is then dropped as too slow), so a stuck client costs the daemon nothing more."""

    __slots__ = ("items", "limit", "overflow", "_wake")

    def __init__(self, limit: int) -> None:
        self.items: list[Change] = []
        self.limit = limit
        self.overflow = False
        self._wake: asyncio.Event | None = None

    def push(self, change: Change) -> None:
        if len(self.items) >= self.limit:
            self.overflow = True
        else:
            self.items.append(change)
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set()

    def drain(self) -> list[Change]:
        items, self.items = self.items, []
        return items

    async def wait(self) -> None:
        while not self.items and not self.overflow:
            wake = self._wake
            if wake is None:
                wake = self._wake = asyncio.Event()
            await wake.wait()


def _interest(row: LiveCall, prev: LiveCall | None) -> set[int | None]:
    """User ids a change concerns: exactly the ids the visibility rule looks at (``PARTY_IDS``)."""
    keys = set(PARTY_IDS(row.info))
    if prev is not None and prev.info is not row.info:
        keys.update(PARTY_IDS(prev.info))
    return keys


class ChangeHub:
    """Numbered history of LiveTable changes plus a wake-up for readers. Single event loop, no locks."""

    def __init__(self, history: int = 20_000, first_seq: int | None = None) -> None:
        if history < 1:
            raise ValueError("history must be positive")
        self.history = history
        self._seq = time.time_ns() // 1000 if first_seq is None else first_seq  # last published
        self._base = self._seq + 1  # seq of _events[0]
        self._events: list[Change] = []
        self._current: dict[int, LiveCall] = {}  # row id → latest row, for ``prev``
        self._wake: asyncio.Event | None = None
        self._routes: dict[int, set[Inbox]] = {}  # user id → inboxes of clients scoped to it

    @classmethod
    def following(cls, table: SubscribableTable, **kwargs: int) -> ChangeHub:
        """A hub seeded with the table's rows and subscribed to its changes (the daemon's one-liner)."""
        hub = cls(**kwargs)
        hub.seed(table.rows())
        table.subscribe(hub.publish)
        return hub

    def seed(self, rows: Iterable[LiveCall]) -> None:
        """Rows already in the table (restored at start), so their first update has a ``prev``."""
        for row in rows:
            self._current[row.id] = row

    @property
    def head(self) -> int:
        """Sequence number of the newest change (the snapshot id of a stream opened now)."""
        return self._seq

    @property
    def oldest(self) -> int:
        """The oldest sequence number still in the history."""
        return self._base

    def publish(self, kind: str, row: LiveCall) -> None:
        """LiveTable listener: O(1), never blocks, never calls a client."""
        self._seq += 1
        if kind == "removed":
            prev = self._current.pop(row.id, None)
        else:
            prev = self._current.get(row.id)
            self._current[row.id] = row
        change = Change(self._seq, kind, row, prev)
        self._events.append(change)
        routes = self._routes
        if routes:
            for key in _interest(row, prev):
                inboxes = routes.get(key)  # type: ignore[arg-type]
                if inboxes:
                    for inbox in inboxes:
                        inbox.push(change)
        if len(self._events) >= self.history + (self.history >> 2) + 1:  # amortised O(1) trim
            drop = len(self._events) - self.history
            del self._events[:drop]
            self._base += drop
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set()

    def since(self, seq: int) -> list[Change] | None:
        """Changes after ``seq``; None when some of them already left the history (or ``seq`` is
        from the future, e.g. an id from another daemon run)."""
        if seq < self._base - 1 or seq > self._seq:
            return None
        return self._events[seq - self._base + 1:]

    def attach(self, user_id: int, inbox: Inbox) -> None:
        """Route every later change that involves ``user_id`` into ``inbox``."""
        self._routes.setdefault(user_id, set()).add(inbox)

    def detach(self, user_id: int, inbox: Inbox) -> None:
        inboxes = self._routes.get(user_id)
        if inboxes is not None:
            inboxes.discard(inbox)
            if not inboxes:
                del self._routes[user_id]

    async def wait(self, seq: int) -> None:
        """Return once something newer than ``seq`` was published."""
        while self._seq <= seq:
            wake = self._wake
            if wake is None:
                wake = self._wake = asyncio.Event()
            await wake.wait()


class SubscribableTable(Protocol):
    """What ``ChangeHub.following`` needs of ``collector.live.table.LiveTable``."""

    def rows(self) -> Iterable[LiveCall]: ...
    def subscribe(self, listener: Listener) -> None: ...
