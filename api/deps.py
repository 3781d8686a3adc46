"""What the API needs from the daemon, and the typed AppKeys it is stored under.

Separate from ``app`` so handlers can import the keys without importing the app factory.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from api.auth import Principal
from api.changes import ChangeHub
from api.hangup_policy import HangupExecutor, HangupPolicy
from api.jsonout import JsonRenderer
from api.rows import RowFields
from api.settings import ApiSettings
from api.tokens import TokenIssuer
from api.xml import RowRenderer
from collector.live.table import LiveCall
from collector.refdata.index import RefIndex

__all__ = ["ApiDeps", "DEPS_KEY", "FIELDS_KEY", "JSON_RENDERER_KEY", "RENDERER_KEY"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiDeps:
    """Read-only views of the daemon's state; each request calls ``rows()`` and ``refs()`` once."""

    rows: Callable[[], Sequence[LiveCall]]  # e.g. LiveTable.rows: an immutable snapshot
    refs: Callable[[], RefIndex]  # current reference data (swapped whole on reload)
    settings: ApiSettings = field(default_factory=ApiSettings)
    clock: Callable[[], float] = time.time  # Unix time "now", for duration and the stale-row guard
    # Row changes for active_calls_stream (``ChangeHub.following(live_table)``); None: the stream
    # answers "Stream not available" and everything else works as before.
    changes: ChangeHub | None = None
    # server ids whose AMI session is down right now: their calls say ``"stale": true`` in JSON
    disconnected: Callable[[], Collection[int]] = frozenset
    # v2 REST: signs and checks Bearer tokens; None: the v2 routes answer 401 (not configured)
    tokens: TokenIssuer | None = None
    # whether this caller may hang calls up at all (the login answer tells the page to show the buttons)
    may_hang_up: Callable[[Principal], bool] = lambda _principal: False
    # v2 login: username → its local password hash (``collector db set-password``), None without one; it wins
    # over the user's MOR password (``User.password``). Blocking I/O: called in a worker thread.
    passwords: Callable[[str], str | None] = lambda _username: None
    # concurrency history: (series, start, end) → (bucket, total, answered) of the buckets with data and
    # bucket_of(start) <= bucket < end, oldest first (the store read off the loop, the open bucket included);
    # None from it: that series is not recorded (per_user off). None here: active_calls_history answers
    # "History is not enabled".
    history: Callable[[str, int, int], Awaitable[Sequence[tuple[int, int, int]] | None]] | None = None
    # v2 hang-up: who may end which call now (off by default; a reload may change it) and what does it
    # (None: DELETE answers 403)
    hangup_policy: Callable[[], HangupPolicy] = HangupPolicy
    hangups: HangupExecutor | None = None


DEPS_KEY = web.AppKey("api_deps", ApiDeps)
RENDERER_KEY = web.AppKey("api_row_renderer", RowRenderer)
FIELDS_KEY = web.AppKey("api_row_fields", RowFields)  # the renderer's own, for the JSON outputs
JSON_RENDERER_KEY = web.AppKey("api_json_renderer", JsonRenderer)  # JSON row lists, cached per row
