"""Which user ids make a call visible to a scoped caller: the one rule the API's row predicate, the
change hub's routing and the concurrency history's per-reseller / per-user series all apply.

A reseller R sees a call when R is any of ``PARTY_IDS`` (caller, caller's owner, callee, callee's owner);
a user U when U is one of ``OWN_IDS`` (caller or callee). Here, below both ``api`` and ``collector.live``,
so the history sampler can count exactly what ``active_calls_get`` would list without importing the API.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter

__all__ = ["OWN_IDS", "PARTY_IDS", "PartyIds"]

#: Read off an ``Enrichment`` (any object with these attributes); ``None`` where a party is unknown.
PartyIds = Callable[[object], tuple[int | None, ...]]
PARTY_IDS: PartyIds = attrgetter("user_id", "owner_id", "dst_user_id", "dst_owner_id")
OWN_IDS: PartyIds = attrgetter("user_id", "dst_user_id")
