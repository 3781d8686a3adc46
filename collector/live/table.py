"""The served table: tracker changes in, enriched rows out, with a stable MOR ``id`` per call.

Every call is enriched when it changes and all of them again when reference data is reloaded, so a
request only filters and renders. ``rows()`` returns an immutable snapshot (a tuple) that a request may
keep while the table moves on; it is rebuilt lazily, once per change burst, not per request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import NamedTuple

from collector.refdata.model import NO_ENRICHMENT, Enrichment
from collector.tracking.calls import CallChange, CallKey, CallView

__all__ = ["LiveCall", "LiveTable", "Enrich"]

log = logging.getLogger(__name__)

Enrich = Callable[[CallView], Enrichment]
Listener = Callable[[str, "LiveCall"], None]


class LiveCall(NamedTuple):  # a NamedTuple for speed, like CallView (see collector/tracking/calls.py)
    id: int  # MOR's activecalls.id: assigned once, stable for the call's life
    call: CallView
    info: Enrichment


class LiveTable:
    def __init__(self, enrich: Enrich | None = None, first_id: int = 1) -> None:
        self._enrich: Enrich = enrich or (lambda _call: NO_ENRICHMENT)
        self._rows: dict[CallKey, LiveCall] = {}
        self._next_id = first_id
        self._snapshot: tuple[LiveCall, ...] | None = ()
        self._listeners: list[Listener] = []
        # key changed since the durable table last saved it → the id of the row it then saved for the key,
        # None if it saved none: lets a flush UPDATE/DELETE by id and skip calls born and gone in between
        self.dirty: dict[CallKey, int | None] = {}

    def subscribe(self, listener: Listener) -> None:
        """``listener(kind, row)`` after every change: ``added`` / ``updated`` / ``removed``."""
        self._listeners.append(listener)

    def apply(self, changes: Iterable[CallChange]) -> None:
        rows, enrich, changed = self._rows, self._enrich, self._changed
        for change in changes:
            key, call = change.key, change.call
            old = rows.get(key)
            if call is None:
                if old is not None:
                    del rows[key]
                    changed(key, "removed", old)
                continue
            try:
                info = enrich(call)
            except Exception:  # reference data must never make a live call disappear
                log.exception("enrichment failed linkedid=%s", call.linkedid)
                info = NO_ENRICHMENT
            if old is None:
                row = rows[key] = LiveCall(self._next_id, call, info)
                self._next_id += 1
                changed(key, "added", row)
            else:
                row = rows[key] = LiveCall(old.id, call, info)
                changed(key, "updated", row)

    def set_enricher(self, enrich: Enrich) -> int:
        """Swap reference data: re-enrich every call in place (ids kept); returns how many changed."""
        self._enrich = enrich
        changed = 0
        for key, row in list(self._rows.items()):
            try:
                info = enrich(row.call)
            except Exception:
                log.exception("enrichment failed linkedid=%s", row.call.linkedid)
                info = NO_ENRICHMENT
            if info != row.info:
                new = LiveCall(row.id, row.call, info)
                self._rows[key] = new
                self._changed(key, "updated", new)
                changed += 1
        return changed

    def restore(self, rows: Iterable[LiveCall]) -> None:
        """Rows loaded from the durable table at start: keep their ids."""
        for row in rows:
            self._rows[row.call.key] = row
            self._next_id = max(self._next_id, row.id + 1)
        self._snapshot = None

    def rows(self) -> tuple[LiveCall, ...]:
        snap = self._snapshot
        if snap is None:
            snap = self._snapshot = tuple(self._rows.values())
        return snap

    def get(self, key: CallKey) -> LiveCall | None:
        return self._rows.get(key)

    def __len__(self) -> int:
        return len(self._rows)

    def _changed(self, key: CallKey, kind: str, row: LiveCall) -> None:
        self._snapshot = None
        dirty = self.dirty
        if key not in dirty:
            dirty[key] = None if kind == "added" else row.id
        elif kind == "removed" and dirty[key] is None:
            del dirty[key]  # added and removed between two flushes: the durable table never had it
        for listener in self._listeners:
            try:
                listener(kind, row)
            except Exception:
                log.exception("live table listener failed")
