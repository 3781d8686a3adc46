"""A replay AMI server: recorded Asterisk traffic served as a live Asterisk 20.

Why: the daemon, the demo and the tests need a *live* AMI peer (banner, Login, event class masks, Filter, Ping,
Logoff, CoreShowChannels answered from the channel state at that point of the trace, Hangup ending a channel and
its bridged peers with cause 16 — the trace's later events for them are dropped —, dropped sockets between
recorded sessions) without running Asterisk.

One player task walks the events of the sessions (:mod:`.trace`); each event is written, with its original bytes,
to every logged-in client whose event mask and filters accept it (:mod:`.clients`). The player waits for a
logged-in client at the start of each session and (by default) whenever nobody is logged in, so no event is lost
before a client arrives. Timing follows the ``Timestamp`` headers divided by ``speed``; ``fast`` sends as fast as
the slowest client reads. At a session boundary every client connection is closed. ``loop_forever`` starts again
after the last session, shifted to look like new calls (:mod:`.rewrite`); channels a pass leaves up get a
synthetic ``Hangup`` so a looping demo does not pile up ghosts.

Test hooks on :class:`ReplayServer`: ``events_sent``, ``clients_connected``/``clients_logged_in``/``logins_total``,
``wait_for(predicate)`` and friends, ``hold()``/``wait_held()``/``release()`` to park the stream at an exact
event count, ``drop_clients()`` to reset every connection, ``finished``, ``hangup_log`` (when each Hangup
action came, to measure a client's pacing).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl as _ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from collector.ami import framing as ami_framing
from collector.tools.replay.channels import ChannelRecord, ChannelTable
from collector.tools.replay.clients import Client, ClientHub, privilege_classes
from collector.tools.replay.options import ReplayOptions
from collector.tools.replay.rewrite import PassRewriter
from collector.tools.replay.trace import TIMESTAMP_RE, TraceSeed, TraceSession, load_sessions, parse_block, parse_blocks

__all__ = ["ReplayEvent", "ReplayOptions", "ReplayServer", "serve"]

log = logging.getLogger(__name__)

#: Events parsed at a time; the player yields to the event loop (clients' actions are served, buffered
#: output is written) after each batch, and in timed mode whenever it waits for the next event's time.
#: Fast mode writes each batch at once: 512 events (~240 KB) per write let a client read in big chunks,
#: as it does from a busy Asterisk, and keep the player to ~2 ms between yields.
_BATCH = 64
_FAST_BATCH = 512


@dataclass(frozen=True, slots=True)
class ReplayEvent:
    """The event the player is about to send (given to ``hold(when=…)`` predicates)."""

    index: int        # events sent before this one (over the whole replay)
    session: int      # index of its session in the file list
    pass_no: int      # loop pass, 0 first
    name: str
    timestamp: float | None
    fields: dict[str, str]
    raw: bytes


@dataclass(slots=True)
class _Waiter:
    predicate: Callable[[], bool]
    future: asyncio.Future[None]


class ReplayServer:
    """Serves trace files as a live Asterisk AMI. ``await start()`` returns the bound port; ``close()`` stops it.
    ``options`` is read each time it matters: assigning a changed copy changes a running server."""

    def __init__(self, paths: Sequence[str | Path], host: str = "127.0.0.1", port: int = 5038,
                 options: ReplayOptions | None = None, ssl: _ssl.SSLContext | None = None) -> None:
        options = options if options is not None else ReplayOptions()
        if options.wall_clock is None:  # settled now: a later switch from fast to timed keeps it
            options = dataclasses.replace(options, wall_clock=not options.fast)
        self.options = options
        self.paths = [Path(p) for p in paths]
        self.host = host
        self.port = port
        self.ssl = ssl  # a server-side TLS context: AMI over TLS, as Asterisk's tlsenable (port 5039)
        self.sessions: list[TraceSession] = load_sessions(self.paths)
        if not self.sessions:
            raise ValueError("no AMI session in " + ", ".join(map(str, self.paths)))
        self.state = ChannelTable()
        self.killed: set[str] = set()  # uniqueids hung up by an action this pass
        # (loop time, Channel) of every Hangup action handled, newest last: lets a test measure pacing
        self.hangup_log: deque[tuple[float, str]] = deque(maxlen=100_000)
        self._decoder = ami_framing.block_decoder()
        self._classes_of: dict[str, frozenset[str]] = {}
        # counters / observable state (read them; wait on them with wait_for)
        self.events_sent = 0
        self.session_index = 0
        self.pass_index = 0
        self.held = False
        self.finished = asyncio.Event()
        self._hub = ClientHub(self, self._poke, lambda client, text: self._handle_action(client, text))
        self._server: asyncio.base_events.Server | None = None
        self._player: asyncio.Task[None] | None = None
        self._waiters: list[_Waiter] = []
        self._hold_after: int | None = None
        self._hold_when: Callable[[ReplayEvent], bool] | None = None
        self._release = asyncio.Event()
        self.session: TraceSession = self.sessions[0]
        self._rewriter_base: PassRewriter | None = None
        self._trace_now: float | None = None
        self._anchor: tuple[float, float] | None = None  # (loop time, trace time) while the clock runs
        self._next_ts: float | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> int:
        """Bind and start the player; returns the bound port (useful with ``port=0``)."""
        self._server = await asyncio.start_server(self._hub.handle, self.host, self.port, ssl=self.ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        self._player = asyncio.create_task(self._run_player(), name="replay-player")
        log.info("replay AMI server on %s:%d: %d session(s) from %s, %s%s", self.host, self.port,
                 len(self.sessions), ", ".join(p.name for p in self.paths),
                 "fast" if self.options.fast else f"speed x{self.options.speed:g}",
                 ", looping" if self.options.loop_forever else "")
        return self.port

    async def close(self) -> None:
        """Stop accepting, stop the player, close every client."""
        if self._server is not None:
            self._server.close()
        if self._player is not None:
            self._player.cancel()
            await asyncio.gather(self._player, return_exceptions=True)
            self._player = None
        await self._hub.close_all()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            except TimeoutError:
                pass
            self._server = None
        for w in self._waiters:
            if not w.future.done():
                w.future.cancel()
        self._waiters.clear()

    async def __aenter__(self) -> ReplayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ observation hooks

    @property
    def clients_connected(self) -> int:
        """Open TCP connections (logged in or not)."""
        return len(self._hub.clients)

    @property
    def clients_logged_in(self) -> int:
        return self._hub.logged_in

    @property
    def connections_total(self) -> int:
        return self._hub.connections_total

    @property
    def logins_total(self) -> int:
        return self._hub.logins_total

    def trace_time(self) -> float | None:
        """The replayed Asterisk's clock: the trace time of the stream position (moves between events when
        timed, stands still while held, paused or in fast mode)."""
        now = self._trace_now
        if self._anchor is not None and not self.options.fast:
            wall0, ts0 = self._anchor
            t = ts0 + (asyncio.get_running_loop().time() - wall0) * self.options.speed
            if self._next_ts is not None:
                t = min(t, self._next_ts)
            now = t if now is None else max(now, t)
        return now

    def stamp_time(self) -> float:
        """The ``Timestamp`` for an event or reply the server makes up itself (end-of-pass Hangups, Ping): the
        clock the client sees on the replayed events, i.e. the wall clock when ``wall_clock`` stamps them so,
        else the (pass-shifted) trace time. Never the trace's own old times, which would look days late."""
        if self.options.wall_clock:
            return time.time()
        now = self.trace_time()
        return now if now is not None else time.time()

    def core_show_channels(self, action_id: str | None) -> bytes:
        """The reply to ``Action: CoreShowChannels`` now."""
        now = self.trace_time()
        return self.state.core_show_channels(action_id, now if now is not None else 0.0)

    def hangup(self, channel: str) -> bool:
        """``Action: Hangup``: queue Hangup events for the channel and its peers (the caller writes its reply,
        then flushes them); the trace's later events for those channels are dropped. False: no such channel."""
        self.hangup_log.append((asyncio.get_running_loop().time(), channel))
        targets = self.state.hangup_targets(channel)
        self.killed.update(rec.uniqueid for rec in targets)
        self._send_made_up(self.state.hangup_blocks(self.stamp_time(), targets))
        return bool(targets)

    def _send_made_up(self, blocks: list[bytes]) -> None:
        """Events the server makes up (Hangups), applied to the channel state and queued like the trace's."""
        now = self._trace_now or 0.0
        for raw in blocks:
            msg = parse_block(raw)
            self.state.apply(msg, now)
            self._broadcast(raw, privilege_classes(msg))

    def channels(self) -> list[ChannelRecord]:
        """The channel state CoreShowChannels would report now."""
        return list(self.state.channels.values())

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> None:
        """Wait until ``predicate()`` holds; it is re-checked whenever a counter or the hold state changes."""
        if predicate():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(predicate, fut)
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(fut, timeout)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def wait_events_sent(self, n: int, timeout: float | None = None) -> None:
        await self.wait_for(lambda: self.events_sent >= n, timeout)

    async def wait_clients(self, n: int = 1, logged_in: bool = True, timeout: float | None = None) -> None:
        """Wait until exactly ``n`` clients are connected (logged in, unless ``logged_in=False``)."""
        if logged_in:
            await self.wait_for(lambda: self.clients_logged_in == n, timeout)
        else:
            await self.wait_for(lambda: self.clients_connected == n, timeout)

    async def wait_logins(self, n: int, timeout: float | None = None) -> None:
        await self.wait_for(lambda: self.logins_total >= n, timeout)

    async def wait_held(self, timeout: float | None = None) -> None:
        await self.wait_for(lambda: self.held, timeout)

    async def wait_finished(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self.finished.wait(), timeout)

    def _poke(self) -> None:
        if not self._waiters:
            return
        for w in list(self._waiters):
            if w.future.done():
                continue
            try:
                ok = w.predicate()
            except Exception as exc:  # a broken test predicate must not stop the replay
                w.future.set_exception(exc)
                continue
            if ok:
                w.future.set_result(None)

    # ------------------------------------------------------------------ control hooks

    def hold(self, after_events: int | None = None, *, when: Callable[[ReplayEvent], bool] | None = None) -> None:
        """Park the stream before the event that would make ``events_sent`` exceed ``after_events``, or before
        the first event for which ``when(event)`` is true. Actions (CoreShowChannels, Ping…) are still served
        while held. ``release()`` continues."""
        self._hold_after = after_events
        self._hold_when = when
        self._release.clear()

    def release(self) -> None:
        """Lift the hold set by :meth:`hold`."""
        self._hold_after = None
        self._hold_when = None
        self.held = False  # at once, so that a wait for the next hold does not see this one
        self._release.set()

    async def flush_clients(self) -> None:
        """Wait until every client's pending output has been handed to the kernel (or the client is cut off)."""
        for client in list(self._hub.clients.values()):
            await self._drain(client)

    def drop_clients(self) -> int:
        """Reset every client connection at once (TCP RST, unsent data discarded); returns how many."""
        return self._hub.drop_all()

    # ------------------------------------------------------------------ client hooks (tests override them)
    async def _handle_action(self, client: Client, text: str) -> None:
        await self._hub.answer(client, text)

    async def _drain(self, client: Client) -> None:
        await self._hub.drain(client)

    # ------------------------------------------------------------------ the player

    def _rewriter(self, k: int) -> PassRewriter:
        if k == 0:
            return PassRewriter(0, 0, 0)
        if self._rewriter_base is None:  # one scan of the traces, on the first wrap
            self._rewriter_base = PassRewriter.for_sessions(self.sessions, 1)
        return dataclasses.replace(self._rewriter_base, k=k)

    async def _run_player(self) -> None:
        try:
            while True:
                for si, session in enumerate(self.sessions):
                    seamless = si == 0 and self.pass_index > 0
                    await self._enter_session(si, session, seamless)
                    await self._play_session(si, session)
                if not self.options.loop_forever:
                    break
                await self._end_pass()
                self.pass_index += 1
                self._poke()
            log.info("replay: all %d session(s) played, %d events; idle", len(self.sessions), self.events_sent)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("replay: player failed; stream stopped")
        finally:
            self._anchor = None
            self.finished.set()
            self._poke()

    async def _enter_session(self, si: int, session: TraceSession, seamless: bool) -> None:
        if not seamless and (si > 0 or self.pass_index > 0):
            n = 0
            for client in list(self._hub.clients.values()):
                await self._drain(client)
                self._hub.close(client)
                n += 1
            log.info("replay: session %d (%s) begins; closed %d client(s)", si, session.source, n)
        self.session_index = si
        self.session = session
        self._poke()
        # a recorded resync right after the login (no channel event before it) is the state at session start
        rw = self._rewriter(self.pass_index)
        for item in session.items:
            if isinstance(item, TraceSeed):
                self._apply_seed(item, rw, authoritative=True)
                break
            if item.startswith((b"Event: Newchannel", b"Event: Hangup")):
                break
        if not seamless:
            self._anchor = None
            await self._wait_client()

    async def _wait_client(self) -> None:
        if self.clients_logged_in == 0:
            await self._hub.flush()
            self._anchor = None
            await self.wait_for(lambda: self.clients_logged_in > 0)

    def _apply_seed(self, seed: TraceSeed, rw: PassRewriter, authoritative: bool) -> None:
        items = [parse_block(rw(raw)) for raw in seed.raws]
        if seed.ts is not None:
            now = seed.ts + rw.k * rw.epoch_offset
        else:
            now = self._trace_now or 0.0
        added, removed = self.state.seed(items, now, authoritative)
        if authoritative and seed.ts is not None:
            self._trace_now = now if self._trace_now is None else max(self._trace_now, now)
        if added or removed:
            log.info("replay: recorded channel list applied: %d added, %d removed", added, removed)

    async def _play_session(self, si: int, session: TraceSession) -> None:
        rw = self._rewriter(self.pass_index)
        seen_channel_event = False
        items = session.items
        i, n = 0, len(items)
        batch = _FAST_BATCH if self.options.fast else _BATCH
        while i < n:
            item = items[i]
            if isinstance(item, TraceSeed):
                # at session start it was applied already; later, only fill what a recorder gap hid
                self._apply_seed(item, rw, authoritative=not seen_channel_event)
                i += 1
                continue
            j = i + 1
            while j < n and j - i < batch and not isinstance(items[j], TraceSeed):
                j += 1
            raws = [rw(it) for it in items[i:j]]  # type: ignore[arg-type]
            i = j
            # whether a client listens changes only while this task waits: known until the next await
            listening = False
            apply_state, broadcast, classes_of = self.state.apply, self._broadcast, self._classes
            killed = self.killed
            for raw, msg in zip(raws, parse_blocks(raws, self._decoder), strict=False):
                name = msg.get("Event", "")
                if name == "Newchannel" or name == "Hangup":
                    seen_channel_event = True
                ts_text = msg.get("Timestamp")
                try:
                    ts = float(ts_text) if ts_text else None
                except ValueError:
                    ts = None
                if not self.options.fast:
                    await self._pace(ts)
                    listening = False
                if self._hold_after is not None or self._hold_when is not None:
                    await self._check_hold(ReplayEvent(self.events_sent, si, self.pass_index, name, ts, msg, raw))
                    listening = False
                if self.options.pause_when_idle and not listening:
                    if not self._hub.anyone_listening():
                        await self._wait_client()
                        self._restart_clock(ts)
                    listening = True
                if killed and msg.get("Uniqueid") in killed:
                    continue  # hung up by an action: the recorded rest of that channel never happens
                now = self._trace_now
                if ts is not None and (now is None or ts > now):
                    self._trace_now = now = ts
                apply_state(msg, ts if ts is not None else (now or 0.0))
                if self.options.wall_clock and ts is not None:
                    raw = TIMESTAMP_RE.sub(b"\nTimestamp: %.6f" % time.time(), raw, count=1)
                broadcast(raw, classes_of(msg))
            await self._hub.flush()
            await asyncio.sleep(0)

    def _classes(self, msg: dict[str, str]) -> frozenset[str]:
        """``privilege_classes``, memoised by the header's text (a handful of distinct values)."""
        priv = msg.get("Privilege", "")
        classes = self._classes_of.get(priv)
        if classes is None:
            classes = privilege_classes(msg)
            if len(self._classes_of) < 1024:  # bounded against an odd trace
                self._classes_of[priv] = classes
        return classes

    async def _end_pass(self) -> None:
        blocks = self.state.hangup_blocks(self.stamp_time())
        if blocks:
            log.info("replay: end of pass %d: %d channel(s) still up get a synthetic Hangup", self.pass_index,
                     len(blocks))
        self._send_made_up(blocks)
        await self._hub.flush()
        self.state.clear()
        self.killed.clear()

    async def _pace(self, ts: float | None) -> None:
        """Timed mode: sleep until the event's trace time, scaled by ``speed``."""
        if self.options.fast or ts is None:
            return
        loop = asyncio.get_running_loop()
        if self._anchor is None:
            self._anchor = (loop.time(), ts)
            return
        wall0, ts0 = self._anchor
        delay = wall0 + (ts - ts0) / self.options.speed - loop.time()
        if delay > 0.001:
            self._next_ts = ts
            await self._hub.flush()
            try:
                await asyncio.sleep(delay)
            finally:
                self._next_ts = None

    def _should_hold(self, ev: ReplayEvent) -> bool:
        if self._hold_after is not None and ev.index >= self._hold_after:
            return True
        if self._hold_when is None:
            return False
        try:
            return bool(self._hold_when(ev))
        except Exception:  # a broken predicate must not kill the stream
            log.exception("replay: hold predicate failed; hold lifted")
            self._hold_when = None
            return False

    async def _check_hold(self, ev: ReplayEvent) -> None:
        while self._should_hold(ev):
            await self._hub.flush()
            self.held = True
            anchor_was = self._anchor is not None
            self._anchor = None
            self._poke()
            await self._release.wait()
            self.held = False
            self._poke()
            if anchor_was:
                self._restart_clock(ev.timestamp)

    def _restart_clock(self, ts: float | None) -> None:
        """After a pause, trace time resumes from ``ts`` now (no burst of overdue events)."""
        if not self.options.fast and ts is not None:
            self._anchor = (asyncio.get_running_loop().time(), ts)

    def _broadcast(self, raw: bytes, classes: frozenset[str]) -> None:
        """Queue one event for every client that wants it; ``_flush`` writes the queues. The player flushes
        before every wait, so nothing else (an action's reply, a test's check) ever runs while events that
        ``events_sent`` already counts are still queued."""
        for client in self._hub.clients.values():
            if client.logged_in and not client.closing and client.wants(classes, raw):
                client.out.append(raw)
                client.events_sent += 1
        self.events_sent += 1
        if self._waiters:
            self._poke()


async def serve(paths: Sequence[str | Path], host: str = "127.0.0.1", port: int = 5038, speed: float = 1.0,
                fast: bool = False, loop_forever: bool = False, ready: asyncio.Future[int] | None = None,
                username: str | None = None, secret: str | None = None, exit_when_done: bool = False) -> None:
    """Run a :class:`ReplayServer` until cancelled (or, with ``exit_when_done``, until the trace has been sent).

    ``ready`` gets the bound port once listening (or the bind error)."""
    options = ReplayOptions(speed=speed, fast=fast, loop_forever=loop_forever, username=username, secret=secret)
    server = ReplayServer(paths, host=host, port=port, options=options)
    try:
        bound = await server.start()
    except BaseException as exc:
        if ready is not None and not ready.done():
            ready.set_exception(exc)
        raise
    if ready is not None and not ready.done():
        ready.set_result(bound)
    try:
        if exit_when_done and not loop_forever:
            await server.finished.wait()
            await server.flush_clients()
        else:
            await asyncio.Event().wait()
    finally:
        await server.close()
