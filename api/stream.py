"""``active_calls_stream``: the caller's filtered live table as Server-Sent Events.

Authenticated and filtered exactly like ``active_calls_get`` (``api.selection``), except that GET is always
allowed (``EventSource`` can only GET). First a ``snapshot`` event (the filtered list, ``id:`` = the
hub's head), then ``call_added`` / ``call_updated`` / ``call_removed`` as they happen, each with its
change's sequence number as ``id:``. ``Last-Event-ID`` within the hub's history resumes with exactly
the missed changes; anything else gets a fresh snapshot.

Slow clients cannot slow the daemon: the hub's ``publish`` never touches a client. Each client's task
reads the shared history from its own cursor and writes to its socket; the stretch between its
cursor and the head is its queue, bounded by ``max_lag``. A reaper drops clients beyond it (also those
stuck in a socket write) with a final ``event: error`` / ``data: too slow`` and a log line. The reaper
also notices every reload of reference data and closes the streams whose user, role, owner or API
key changed (``event: closed`` / ``data: {"reason": "credentials changed"}``).

Filtered clients need no per-client row state: every change carries the previous row, so "became
visible" (→ ``call_added``) and "stopped being visible" (→ ``call_removed``) follow from the filters
alone — which is also what makes resume exact. Such a ``call_removed`` carries the previous row (what
this client saw last), never the new one: a call transferred to another reseller's device must not
show that client where it went. Each change's JSON is encoded once, for all clients.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

from aiohttp import web

from api.background import background
from api.changes import Change, ChangeHub, Inbox
from api.deps import DEPS_KEY, FIELDS_KEY, JSON_RENDERER_KEY
from api.errors import Envelope, MorError
from api.filters import parse_id
from api.jsonout import dumps, row_object
from api.rows import RowFields
from api.scope import RowPredicate
from api.selection import Selection, authorize, check_method, select_rows
from collector.live.table import LiveCall
from collector.refdata.index import RefIndex

__all__ = ["CREDENTIALS_CHANGED", "STREAM_PATHS", "STREAM_UNAVAILABLE", "StreamSettings", "active_calls_stream",
           "add_stream_routes"]

log = logging.getLogger(__name__)

STREAM_PATHS: tuple[str, ...] = ("/billing/api/active_calls_stream", "/api/active_calls_stream")
STREAM_UNAVAILABLE = "Stream not available"
_METHODS = ("GET", "POST")
_EVENT = {"added": b"call_added", "updated": b"call_updated", "removed": b"call_removed"}
_TOO_SLOW = b"event: error\ndata: too slow\n\n"
CREDENTIALS_CHANGED = "credentials changed"
_CLOSED = b'event: closed\ndata: {"reason": "%s"}\n\n'
_BY_ID = attrgetter("id")
_GONE = (ConnectionError,)  # aiohttp: ClientConnectionResetError, "Cannot write to closing transport"


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSettings:
    max_lag: int = 10_000  # changes a client may be behind the head before it is dropped
    keepalive: float = 2.0  # s of silence before a ": keepalive" (proxies; the page notices a dead link in 4.5 s)
    reap_interval: float = 1.0  # seconds between checks for clients that fell behind
    batch_delay: float = 0.0  # seconds to gather more changes after a wake-up (fewer, larger writes)
    close_grace: float = 5.0  # seconds a dropped client's socket gets to flush the final line
    retry_ms: int = 2000  # the EventSource reconnection delay we ask for

    def __post_init__(self) -> None:
        if self.max_lag < 1 or self.keepalive <= 0 or self.reap_interval <= 0 or self.batch_delay < 0:
            raise ValueError("stream settings must be positive")


class _Client:
    """One connected stream: a cursor into the hub's history and the socket it writes to."""

    __slots__ = ("user", "predicates", "resp", "request", "cursor", "kicked", "task", "inbox", "_fields",
                 "_clock", "credentials")

    def __init__(self, request: web.Request, resp: web.StreamResponse, sel: Selection, cursor: int,
                 inbox: Inbox | None) -> None:
        self.user = sel.principal.user.username
        self.inbox = inbox
        self.predicates: Sequence[RowPredicate] = sel.predicates
        self.request = request
        self.resp = resp
        self.cursor = cursor
        self.kicked: str | None = None
        self.task: asyncio.Task[str] | None = None
        self._fields: RowFields = request.app[FIELDS_KEY]
        self._clock = request.app[DEPS_KEY].clock
        self.credentials = _credentials(request.app[DEPS_KEY].refs(), self.user)

    def kick(self, reason: str) -> None:
        if self.kicked is None and self.task is not None and not self.task.done():
            self.kicked = reason
            self.task.cancel()

    async def run(self, hub: ChangeHub, settings: StreamSettings) -> str:
        """Pump changes until the peer goes away ("gone") or we drop it ("too slow", "shutdown")."""
        try:
            while True:
                try:
                    async with asyncio.timeout(settings.keepalive):
                        changes = await self._next(hub, settings)
                except TimeoutError:
                    if self.inbox is not None and not self.inbox.items:
                        self.cursor = hub.head  # nothing queued: every change so far was not ours
                    await self.resp.write(b": keepalive\nid: %d\n\n" % self.cursor)
                    continue
                if changes is None:
                    return "too slow"
                chunk = self._frames(changes)
                if chunk:
                    await self.resp.write(chunk)
        except asyncio.CancelledError:
            if self.kicked is None:
                raise
            return self.kicked
        except _GONE:
            return "gone"

    async def _next(self, hub: ChangeHub, settings: StreamSettings) -> list[Change] | None:
        """The next changes to consider and the new cursor; None when this client fell too far behind."""
        inbox = self.inbox
        if inbox is not None:  # scoped: only changes involving this user were routed here
            await inbox.wait()
            if settings.batch_delay:
                await asyncio.sleep(settings.batch_delay)
            if inbox.overflow:
                return None
            # publish is synchronous: every change up to the head that concerns us is in the inbox
            self.cursor = hub.head
            return inbox.drain()
        await hub.wait(self.cursor)
        if settings.batch_delay:
            await asyncio.sleep(settings.batch_delay)
        changes = hub.since(self.cursor)
        if changes is None or hub.head - self.cursor > settings.max_lag:
            return None
        if changes:
            self.cursor = changes[-1].seq
        return changes

    def lag(self, hub: ChangeHub) -> int:
        """How far behind this client is: its queued changes (scoped) or its distance to the head."""
        if self.inbox is not None:
            return len(self.inbox.items) + (self.inbox.limit if self.inbox.overflow else 0)
        return hub.head - self.cursor

    # ---------------------------------------------------------------- encoding
    def _published(self, ch: Change) -> bytes:
        frame = ch.frame
        if frame is None:
            head = b"id: %d\nevent: %s\ndata: " % (ch.seq, _EVENT[ch.kind])
            data = dumps(row_object(self._fields, ch.row, self._clock()))
            frame = ch.frame = head + data + b"\n\n"
            ch.data_at = len(head)
        return frame

    def _frame(self, ch: Change, event: str) -> bytes:
        """The change as ``event``: the shared bytes when that is how it was published."""
        frame = self._published(ch)
        if event == ch.kind:
            return frame
        return _frame(ch.seq, _EVENT[event], frame[ch.data_at:-2])

    def _gone(self, ch: Change) -> bytes:
        """``call_removed`` of an update that hid the row: ``prev``'s JSON (encoded once per change)."""
        data = ch.prev_data
        if data is None:
            assert ch.prev is not None
            data = ch.prev_data = dumps(row_object(self._fields, ch.prev, self._clock()))
        return _frame(ch.seq, b"call_removed", data)

    def _visible(self, row: LiveCall) -> bool:
        for p in self.predicates:
            if not p(row):
                return False
        return True

    def _frames(self, changes: list[Change]) -> bytes:
        if not self.predicates:  # sees everything: the shared, cached frames as they are
            return b"".join([self._frame(ch, ch.kind) for ch in changes])
        out: list[bytes] = []
        visible = self._visible
        for ch in changes:
            kind = ch.kind
            if kind == "updated":
                now = visible(ch.row)
                was = ch.prev is not None and visible(ch.prev)
                if now:
                    out.append(self._frame(ch, "updated" if was else "added"))
                elif was:  # the row as this client saw it last, never the new state it may not see
                    out.append(self._gone(ch))
            elif visible(ch.row):  # added, or removed (the row as it was last)
                out.append(self._frame(ch, kind))
        return b"".join(out)


def _frame(seq: int, event: bytes, data: bytes) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, event, data)


def _credentials(refs: RefIndex, username: str) -> tuple[object, ...] | None:
    """What a stream's authorization rests on: the user (id, role, owner) and the API key that signs
    for it (its owner's). None when the user is gone. A change of any of them closes the stream."""
    user = refs.users_by_username.get(username)
    if user is None:
        return None
    owner = refs.owner_of(user)
    return user.id, user.usertype, user.owner_id, owner.id if owner else None, owner.api_secret_key if owner else None


class StreamState:
    """Per-application registry of connected clients (no module-level state)."""

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        self.clients: set[_Client] = set()
        self.refs: RefIndex | None = None  # the reference data the open streams were last checked against

    def recheck(self, refs: RefIndex) -> int:
        """After a reload (new reference data): close every stream whose user, role, owner or API key
        changed, or whose user is gone — it was authorized by data that no longer holds. Returns how many."""
        self.refs = refs
        closed = 0
        for client in list(self.clients):
            if _credentials(refs, client.user) != client.credentials:
                client.kick(CREDENTIALS_CHANGED)
                closed += 1
        return closed

    def reap(self, hub: ChangeHub) -> None:
        """Drop clients too far behind — including those blocked in a write, which cannot notice."""
        limit = self.settings.max_lag
        for client in list(self.clients):
            if client.lag(hub) > limit:
                client.kick("too slow")


STREAM_KEY = web.AppKey("api_stream_state", StreamState)


def _last_event_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or ""
    return parse_id(raw.strip()) if raw else None


async def active_calls_stream(request: web.Request) -> web.StreamResponse:
    check_method(request, _METHODS)  # no HEAD: a stream has no end to measure
    deps = request.app[DEPS_KEY]
    state = request.app[STREAM_KEY]
    sel = await authorize(request, is_get=False)  # GET always allowed here: EventSource only GETs
    hub = deps.changes
    if hub is None:
        raise MorError(STREAM_UNAVAILABLE, Envelope.STATUS, 503)
    resp = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    resp.content_type = "text/event-stream"
    resp.charset = "utf-8"
    await resp.prepare(request)

    # Rows, head and the inbox are taken together, with no await in between: the snapshot (or the
    # replayed history) is exactly the state after change ``head``, and every later change reaches the
    # client through its inbox or the history it reads.
    retry = b"retry: %d\n\n" % state.settings.retry_ms
    resume = _last_event_id(request)
    missed = hub.since(resume) if resume is not None else None
    cursor = hub.head
    scoped = None if sel.principal.sees_everything else sel.principal.user.id
    inbox = Inbox(state.settings.max_lag + 1) if scoped is not None else None
    client = _Client(request, resp, sel, cursor, inbox)
    if missed is not None and resume is not None:
        if inbox is None:
            client.cursor = resume  # the pump reads the missed changes from the history itself
            first = retry
        else:
            first = retry + client._frames(missed)
            if not missed:
                first += b": resumed\nid: %d\n\n" % cursor
    else:
        table = deps.rows()
        rows = select_rows(table, sel.predicates)
        rows.sort(key=_BY_ID)
        renderer = request.app[JSON_RENDERER_KEY]
        snapshot = renderer.render_rows(rows, deps.clock())
        renderer.prune(table, len(table))
        first = retry + _frame(cursor, b"snapshot", snapshot)
    if inbox is not None and scoped is not None:
        hub.attach(scoped, inbox)
    log.info("api stream open api_user=%r role=%s resume=%s head=%d clients=%d", client.user,
             sel.principal.role.value, resume if missed is not None else None, hub.head, len(state.clients) + 1)
    state.clients.add(client)
    try:
        try:
            await resp.write(first)
        except _GONE:
            return resp
        pump = client.task = asyncio.create_task(client.run(hub, state.settings), name="api-stream-client")
        try:
            reason = await pump
        finally:
            if not pump.done():
                pump.cancel()
    finally:
        state.clients.discard(client)
        if inbox is not None and scoped is not None:
            hub.detach(scoped, inbox)
    log.info("api stream closed api_user=%r reason=%s", client.user, reason)
    if reason == "too slow":
        log.warning("api stream dropped api_user=%r reason=too_slow behind=%d max_lag=%d", client.user,
                    client.lag(hub), state.settings.max_lag)
        await _drop(request, resp, state.settings.close_grace)
    elif reason == CREDENTIALS_CHANGED:
        await _drop(request, resp, state.settings.close_grace, _CLOSED % CREDENTIALS_CHANGED.encode(), eof=True)
    return resp


async def _drop(request: web.Request, resp: web.StreamResponse, grace: float, last: bytes = _TOO_SLOW,
                eof: bool = False) -> None:
    """Best effort final line (and, with ``eof``, the response's proper end), then close; abort after
    ``grace`` if the peer never reads it."""
    try:
        async with asyncio.timeout(1.0):
            await resp.write(last)
            if eof:
                await resp.write_eof()
    except (TimeoutError, *_GONE):
        pass
    transport = request.transport
    if transport is not None and not transport.is_closing():
        transport.close()  # flushes what is buffered (the final line) first …
        asyncio.get_running_loop().call_later(grace, transport.abort)  # … unless the peer never reads


async def _reaper(app: web.Application) -> None:
    state, deps = app[STREAM_KEY], app[DEPS_KEY]
    state.refs = deps.refs()
    while True:
        await asyncio.sleep(state.settings.reap_interval)
        if deps.changes is not None:
            state.reap(deps.changes)
        refs = deps.refs()
        if refs is not state.refs:  # reference data reloaded: re-check who may still stream
            closed = state.recheck(refs)
            if closed:
                log.info("api streams closed after reload reason=credentials_changed count=%d", closed)


async def _end_streams(app: web.Application) -> None:
    """On shutdown: end every stream now (EventSource reconnects) rather than wait out the timeout."""
    for client in list(app[STREAM_KEY].clients):
        client.kick("shutdown")


def add_stream_routes(app: web.Application, settings: StreamSettings) -> None:
    app[STREAM_KEY] = StreamState(settings)
    for path in STREAM_PATHS:
        app.router.add_route("*", path, active_calls_stream)
    app.cleanup_ctx.append(background(_reaper, "api-stream-reaper"))
    app.on_shutdown.append(_end_streams)
