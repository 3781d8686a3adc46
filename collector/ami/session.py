"""One AMI session per Asterisk server: connect, log in, keep alive, reconnect, resync.

panoramisk's ``Manager`` does login, actions and reconnect; this module fixes what it lacks (notes/ami.md
§5): reconnect with capped exponential backoff and jitter (its own retries every 2 s forever), slow
retries after an authentication failure, a pong timeout (its pings never time out, so a half-open link
went unnoticed), every action bounded by a timeout (an action sent while disconnected could hang), login
completion as a state of its own (its ``connect()`` resolves on TCP connect). After every login and on
``FullyBooted`` the server is resynced with ``CoreShowChannels``; a slow periodic reconciliation follows,
staggered across servers.

The session knows nothing of its consumer: the composition root hands it the events to ask Asterisk for
(``events``, the server-side include list with ``send_filter``), the headers to decode (``keys``) and the
``BatchSink`` that receives every batch after the session has read what concerns itself.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from collector.ami.framing import AmiMessage
from collector.ami.manager import SessionManager, tls_context
from collector.ami.protocol import (
    RESYNC_ACTION_PREFIX,
    BatchSink,
    FramedAMIProtocol,
    MessageBatch,
    ReaderOptions,
)
from collector.ami.settings import AmiServerSettings, CollectorSettings

__all__ = ["AmiSession", "NOISE_EVENTS", "SESSION_KEYS", "ServerStatus"]

log = logging.getLogger(__name__)

#: High-volume events dropped by a bytes prefix test before decoding, for logins that receive them (an
#: event the consumer asks for is never dropped, whatever this list says).
NOISE_EVENTS = (
    "VarSet", "Newexten", "Cdr", "DeviceStateChange", "RTCPSent", "RTCPReceived", "ChallengeSent",
    "SuccessfulAuth", "DTMFBegin", "DTMFEnd", "QueueMemberStatus", "ExtensionStatus", "PeerStatus",
    "NewAccountCode", "BridgeCreate", "BridgeDestroy",
)

#: The events the session reads itself (besides replies): a resync list, and Asterisk restarting.
_SESSION_EVENTS = frozenset(("CoreShowChannel", "CoreShowChannelsComplete", "FullyBooted", "Shutdown"))
#: Asterisk's lifecycle events: always asked for, the session itself acts on them.
_LIFECYCLE_EVENTS = ("FullyBooted", "Shutdown")
#: Replies to our own CoreShowChannels: sent to the asking login whatever its filter, so not in the filter.
_RESYNC_REPLY_EVENTS = frozenset(("CoreShowChannel", "CoreShowChannelsComplete"))
#: Headers the session and its protocol read themselves, decoded on top of the consumer's ``keys``
#: (replies are never projected).
SESSION_KEYS = frozenset(("Event", "ActionID", "Timestamp", "ListItems", "Shutdown", "Restart"))


@dataclass(slots=True)
class ServerStatus:
    """Health of one server, for /status, /readyz, metrics and systemd STATUS=."""

    name: str
    server_id: int
    host: str
    port: int
    connected: bool = False
    logged_in: bool = False
    since: float | None = None  # wall time of the current login
    last_event_at: float | None = None
    last_resync_at: float | None = None
    last_resync_result: str = "never"
    last_resync_seconds: float | None = None
    resyncs: int = 0
    reconnects: int = 0
    auth_failures: int = 0
    pong_timeouts: int = 0
    events: int = 0
    bytes: int = 0
    last_error: str = ""
    timeouts: dict[str, int] = field(default_factory=dict)  # step (connect, banner, login, ping …) → expiries
    degraded: str = ""  # why the session refuses part of what this server sends ("" = within bounds)
    tls: bool = False


class AmiSession:
    """One server's session. ``deliver`` receives every batch; ``events`` are what the consumer handles
    (the include list with ``send_filter``; never skipped as noise); ``keys`` the headers it reads (the
    framer's projection; ``None`` decodes every header); ``reader`` tunes or probes the protocol."""

    def __init__(self, cfg: AmiServerSettings, settings: CollectorSettings, deliver: BatchSink, *,
                 events: Iterable[str], keys: Iterable[str] | None, stagger: float = 0.0,
                 reader: ReaderOptions | None = None) -> None:
        self.cfg = cfg
        self.settings = settings
        self.name = cfg.name
        self.server_id = cfg.server_id
        self._deliver = deliver
        wanted = tuple(events)
        self.filter_events = tuple(dict.fromkeys(
            e for e in (*wanted, *_LIFECYCLE_EVENTS) if e not in _RESYNC_REPLY_EVENTS))
        self.skip_events = tuple(e for e in NOISE_EVENTS if e not in frozenset(wanted))
        self.keep_keys = None if keys is None else frozenset(keys) | SESSION_KEYS
        self._reader = reader
        self._stagger = stagger
        self.status = ServerStatus(cfg.name, cfg.server_id, cfg.host, cfg.port)
        self.stopping = False
        self.logged_in = asyncio.Event()
        self._manager: SessionManager | None = None
        self._attempt = 0
        self._auth_failed = False
        self._resync_seq = 0
        self._resync_waiters: dict[str, asyncio.Future[int]] = {}
        # items of the resync lists being read, held until their Complete (see _on_resync_list)
        self._resync_items: dict[str, list[AmiMessage]] = {}
        self._login_timer: asyncio.TimerHandle | None = None
        self.ssl_context = tls_context(cfg)
        self.status.tls = cfg.tls
        self._resync_wanted = asyncio.Event()
        self._drop_reason: str | None = None  # why we aborted the link ourselves, for the disconnect line
        self._tasks: list[asyncio.Task[None]] = []
        self.resync_done = asyncio.Condition()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.cfg.tls and not self.cfg.tls_verify:
            log.warning("ami TLS without certificate verification server=%s host=%s (tls_verify = no): the "
                        "link is encrypted but anyone on the path can pose as this Asterisk", self.name, self.cfg.host)
        self._manager = SessionManager(
            self,
            host=self.cfg.host, port=self.cfg.port, username=self.cfg.username,
            secret=str(self.cfg.secret), loop=loop,
            # with a session filter, log in deaf, add the filter, then turn events on: no event slips
            # through in the gap between login and filter
            events="off" if self.cfg.send_filter else self.cfg.events,
            ping_delay=10**9, ping_interval=10**9,  # our own pinger has a pong timeout
            reconnect_timeout=self.settings.reconnect_min,
            protocol_factory=lambda: FramedAMIProtocol(self._on_batch, self.name, self.skip_events, self._on_bytes,
                                                       self.keep_keys, server_id=self.server_id,
                                                       reader=self._reader),
            log=logging.getLogger("collector.panoramisk"),
        )
        self._manager.connect()
        self._tasks = [
            asyncio.create_task(self._pinger(), name=f"ami-ping-{self.name}"),
            asyncio.create_task(self._resyncer(), name=f"ami-resync-{self.name}"),
            asyncio.create_task(self._reconciler(), name=f"ami-reconcile-{self.name}"),
        ]

    async def stop(self) -> None:
        """Log off politely (bounded), then close; no reconnect afterwards."""
        if self.stopping:
            return
        mgr = self._manager
        if mgr is not None and self.status.logged_in:
            try:
                await asyncio.wait_for(mgr.send_action({"Action": "Logoff"}), 1.0)
            except (Exception, asyncio.CancelledError):
                pass
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if mgr is not None:
            mgr.close()
        self.status.connected = self.status.logged_in = False
        self.logged_in.clear()

    def drop_connection(self, why: str) -> None:
        """Abort the TCP connection; panoramisk's reconnect (with our backoff) takes over."""
        mgr = self._manager
        transport = getattr(getattr(mgr, "protocol", None), "transport", None)
        log.warning("ami dropping connection server=%s reason=%s", self.name, why)
        self.status.last_error = why
        self._drop_reason = why
        if transport is not None:
            transport.abort()

    @property
    def lag_seconds(self) -> float:
        """How far this session's reader is behind Asterisk's stream (0 when not logged in)."""
        protocol = getattr(self._manager, "protocol", None)
        return float(getattr(protocol, "lag", 0.0)) if self.status.logged_in else 0.0

    # ------------------------------------------------------------------ callbacks from SessionManager
    def _connected(self) -> None:
        self.status.connected = True
        log.info("ami connected server=%s host=%s port=%s tls=%s", self.name, self.cfg.host, self.cfg.port,
                 "no" if self.ssl_context is None else ("yes" if self.cfg.tls_verify else "unverified"))
        self._cancel_login_timer()
        self._login_timer = asyncio.get_running_loop().call_later(self.settings.login_timeout, self._login_expired)

    def _cancel_login_timer(self) -> None:
        if self._login_timer is not None:
            self._login_timer.cancel()
            self._login_timer = None

    def _login_expired(self) -> None:
        self._login_timer = None
        if self.stopping or self.status.logged_in or not self.status.connected:
            return
        # the banner is one line without a blank line after it: the framer may still hold it, so "any byte
        # since connect" is what tells a silent peer from one that never answers the Login
        banner = getattr(getattr(self._manager, "protocol", None), "bytes_in", 0) > 0
        step = "login" if banner else "banner"
        what = "no answer to Login" if banner else "no AMI banner"
        self._timeout(step, f"{what} within {self.settings.login_timeout:g}s")

    def _timeout(self, step: str, why: str) -> None:
        """One step of the session expired: count it, say so (one line, in drop_connection), reconnect."""
        self.status.timeouts[step] = self.status.timeouts.get(step, 0) + 1
        self.drop_connection(f"{step} timeout: {why}")

    def _connect_failed(self, exc: BaseException) -> None:
        if isinstance(exc, TimeoutError):
            self.status.timeouts["connect"] = self.status.timeouts.get("connect", 0) + 1
            exc = TimeoutError(f"connect timeout: no connection within {self.settings.connect_timeout:g}s")
        elif isinstance(exc, ssl.SSLError):
            exc = ConnectionError(f"TLS: {exc}")
        self.status.last_error = f"connect: {exc}"
        delay = self._next_delay()
        if self._manager is not None:
            self._manager.reconnect_timeout = delay
        log.warning("ami connect failed server=%s host=%s port=%s error=%s retry_in=%.1fs",
                    self.name, self.cfg.host, self.cfg.port, exc, delay)

    def _disconnected(self, exc: Exception | None) -> None:
        was = self.status.logged_in
        self.status.connected = self.status.logged_in = False
        self.logged_in.clear()
        self._cancel_login_timer()
        self._discard_resync_items()
        for fut in self._resync_waiters.values():
            if not fut.done():
                fut.set_exception(ConnectionError("disconnected during resync"))
        self._resync_waiters.clear()
        ours, self._drop_reason = self._drop_reason, None
        reason = str(exc) if exc is not None else (ours or "eof")
        if self.stopping:
            return
        if ours is None:  # drop_connection already recorded why
            self.status.last_error = f"disconnected: {reason}"
        self.status.reconnects += 1
        delay = self._next_delay()
        if self._manager is not None:
            self._manager.reconnect_timeout = delay
        log.warning("ami disconnected server=%s was_logged_in=%s error=%s retry_in=%.1fs",
                    self.name, was, reason, delay)

    def _login_result(self, ok: bool, future: asyncio.Future) -> None:  # type: ignore[type-arg]
        self._cancel_login_timer()
        if not ok:
            self._auth_failed = True
            self.status.auth_failures += 1
            message = ""
            try:
                message = future.result().get("Message", "")
            except Exception:
                pass
            log.error("ami authentication failed server=%s username=%s message=%r; retrying in %.0fs",
                      self.name, self.cfg.username, message, self.settings.auth_retry)
            self.drop_connection(f"authentication failed: {message}")
            return
        self._auth_failed = False  # the backoff starts again only after a resync answered (see resync)
        self.status.logged_in = True
        self.status.since = time.time()
        self.logged_in.set()
        log.info("ami logged in server=%s username=%s events=%s", self.name, self.cfg.username, self.cfg.events)
        if self.cfg.send_filter:
            asyncio.ensure_future(self._send_filter())
        else:
            self.request_resync()

    def _next_delay(self) -> float:
        if self._auth_failed:
            return self.settings.auth_retry * random.uniform(0.9, 1.1)
        base = min(self.settings.reconnect_max, self.settings.reconnect_min * 2.0 ** self._attempt)
        self._attempt = min(self._attempt + 1, 30)
        return base * random.uniform(0.5, 1.0)

    def _on_bytes(self, n: int) -> None:
        self.status.bytes += n
        self.status.last_event_at = time.time()  # per chunk, not per message

    def _on_batch(self, server_id: int, batch: MessageBatch) -> None:
        """The protocol's sink: read what concerns the session, then hand the batch on. Our resync lists
        are handed on whole or not at all (``_on_resync_list``)."""
        self.status.events += len(batch)
        out: MessageBatch | None = None  # the batch as handed on, built only once a resync reply is in it
        for i, msg in enumerate(batch):  # only resync replies and two lifecycle events concern the session
            event = msg.get("Event")
            if event is not None and event not in _SESSION_EVENTS:
                if out is not None:
                    out.append(msg)
                continue  # nearly every event stops at this one lookup
            action_id = msg.get("ActionID")
            if action_id is not None and action_id.startswith(RESYNC_ACTION_PREFIX):
                if out is None:
                    out = batch[:i]
                self._on_resync_list(action_id, event, msg, out)
                continue
            if event == "FullyBooted":
                self.request_resync()
            elif event == "Shutdown":
                log.warning("asterisk shutting down server=%s shutdown=%s restart=%s", self.name,
                            msg.get("Shutdown"), msg.get("Restart"))
            if out is not None:
                out.append(msg)
        self._deliver(server_id, batch if out is None else out)

    def _on_resync_list(self, action_id: str, event: str | None, msg: AmiMessage, out: MessageBatch) -> None:
        """One message of one of our CoreShowChannels answers. Its items are held until its Complete and
        handed on with it, so a list cut short (timeout, disconnect, over ``max_resync_entries``) leaves
        nothing behind; a list no longer awaited is dropped whole. Past ``max_resync_entries`` items the
        list is refused and the server degraded until a list fits again."""
        fut = self._resync_waiters.get(action_id)
        if fut is None or fut.done():
            return  # timed out, refused or disconnected: never applied, not even its Complete
        if event == "CoreShowChannel":
            held = self._resync_items.setdefault(action_id, [])
            if len(held) >= self.settings.max_resync_entries:
                self._resync_items.pop(action_id, None)
                self._set_degraded(f"resync answer over max_resync_entries={self.settings.max_resync_entries}")
                fut.set_exception(OverflowError(f"more than {self.settings.max_resync_entries} entries"))
                return
            held.append(msg)
            return
        if event == "CoreShowChannelsComplete":
            out.extend(self._resync_items.pop(action_id, ()))
        out.append(msg)
        self._on_resync_message(action_id, msg)

    def _discard_resync_items(self) -> None:
        self._resync_items.clear()

    def _set_degraded(self, reason: str) -> None:
        if self.status.degraded != reason:
            log.warning("ami server degraded server=%s reason=%s: its excess is refused until it is back "
                        "within bounds", self.name, reason)
        self.status.degraded = reason

    def _clear_degraded(self) -> None:
        if self.status.degraded:
            log.info("ami server back within bounds server=%s (was: %s)", self.name, self.status.degraded)
            self.status.degraded = ""

    def _on_resync_message(self, action_id: str, msg: AmiMessage) -> None:
        fut = self._resync_waiters.get(action_id)
        if fut is not None and not fut.done():
            if msg.get("Event") == "CoreShowChannelsComplete":
                items = msg.get("ListItems", "")
                fut.set_result(int(items) if items.isdigit() else 0)
            elif msg.get("Response") == "Error":
                fut.set_exception(RuntimeError(msg.get("Message", "error")))

    # ------------------------------------------------------------------ actions
    async def send_action(self, action: dict[str, str], timeout: float) -> dict[str, str]:
        """One action and its reply (``Response``, ``Message`` …), bounded by ``timeout`` (TimeoutError);
        ConnectionError at once when not logged in, so nothing is queued for a link that is down."""
        mgr = self._manager
        transport = getattr(getattr(mgr, "protocol", None), "transport", None)
        if mgr is None or transport is None or not self.status.logged_in:
            raise ConnectionError("not logged in")
        reply = await asyncio.wait_for(mgr.send_action(dict(action), as_list=False), timeout)
        return {str(k): str(v) for k, v in dict(reply).items()}

    async def hangup(self, channel: str, timeout: float) -> dict[str, str]:
        """``Action: Hangup`` for one channel (needs ``write = call`` or ``system``). A name starting with
        ``/`` would be a regex to Asterisk, one with a line break a second header: refused here."""
        if not channel or channel.startswith("/") or "\r" in channel or "\n" in channel:
            raise ValueError(f"not a channel name: {channel!r}")
        return await self.send_action({"Action": "Hangup", "Channel": channel}, timeout)

    # ------------------------------------------------------------------ resync
    def request_resync(self) -> None:
        self._resync_wanted.set()

    async def resync(self, timeout: float | None = None) -> int:
        """Send CoreShowChannels and wait for its Complete; the tracker consumes the list in order."""
        mgr = self._manager
        transport = getattr(getattr(mgr, "protocol", None), "transport", None)
        if transport is None or not self.status.logged_in:
            raise ConnectionError("not logged in")
        self._resync_seq += 1
        action_id = f"{RESYNC_ACTION_PREFIX}{self.name}-{self._resync_seq}"
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._resync_waiters[action_id] = fut
        started = time.monotonic()
        transport.write(f"Action: CoreShowChannels\r\nActionID: {action_id}\r\n\r\n".encode())
        try:
            items = await asyncio.wait_for(fut, timeout or self.settings.resync_timeout)
        except BaseException as exc:
            self.status.last_resync_result = f"failed: {type(exc).__name__}: {exc}"
            raise
        finally:
            self._resync_waiters.pop(action_id, None)
            self._resync_items.pop(action_id, None)
            self.status.last_resync_at = time.time()
            self.status.last_resync_seconds = time.monotonic() - started
        self.status.resyncs += 1
        self._attempt = 0  # a server that answers its resync is healthy: the backoff starts again
        if self.status.degraded.startswith("resync answer"):
            self._clear_degraded()
        self.status.last_resync_result = f"ok: {items} channels"
        log.info("ami resync server=%s channels=%d seconds=%.3f", self.name, items,
                 self.status.last_resync_seconds or 0.0)
        async with self.resync_done:
            self.resync_done.notify_all()
        return items

    async def _resyncer(self) -> None:
        while True:
            await self._resync_wanted.wait()
            self._resync_wanted.clear()
            if not self.status.logged_in:
                continue
            try:
                await self.resync()
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                self._timeout("resync", f"no CoreShowChannels answer within {self.settings.resync_timeout:g}s")
            except OverflowError as exc:
                # the rest of the list cannot be skipped on a stream: the connection goes, backoff applies
                self.drop_connection(f"resync refused: {exc} (max_resync_entries)")
            except Exception as exc:
                log.warning("ami resync failed server=%s error=%s", self.name, exc)

    async def _reconciler(self) -> None:
        """Periodic CoreShowChannels, offset per server so a fleet never resyncs in one burst."""
        interval = self.settings.reconcile_interval
        await asyncio.sleep(self._stagger * interval + random.uniform(0, interval * 0.1))
        while True:
            if self.status.logged_in:
                self.request_resync()
            await asyncio.sleep(interval * random.uniform(0.95, 1.05))

    async def _pinger(self) -> None:
        while True:
            await asyncio.sleep(self.settings.ping_interval)
            mgr = self._manager
            if mgr is None or not self.status.logged_in:
                continue
            try:
                await asyncio.wait_for(mgr.send_action({"Action": "Ping"}), self.settings.ping_timeout)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.status.pong_timeouts += 1
                self._timeout("ping", f"no pong within {self.settings.ping_timeout:g}s")

    async def _send_filter(self) -> None:
        mgr = self._manager
        if mgr is None:
            return
        # POSIX ERE over the whole event text, unanchorable per line: "Event: Hangup" also admits
        # HangupRequest, which the tracker uses anyway
        regex = "Event: (" + "|".join(self.filter_events) + ")"
        timeout = self.settings.ping_timeout
        try:
            resp = await asyncio.wait_for(
                mgr.send_action({"Action": "Filter", "Operation": "Add", "Filter": regex}), timeout)
            log.info("ami filter server=%s response=%s", self.name, resp.get("Response"))
        except TimeoutError:
            self._timeout("filter", f"no answer to Filter within {timeout:g}s")
            return
        except Exception as exc:
            log.warning("ami filter failed server=%s error=%s (needs write=system)", self.name, exc)
        try:
            await asyncio.wait_for(mgr.send_action({"Action": "Events", "EventMask": self.cfg.events}), timeout)
        except TimeoutError:
            self._timeout("events", f"no answer to Events within {timeout:g}s")
            return
        except Exception as exc:
            log.warning("ami events mask failed server=%s error=%s", self.name, exc)
        self.request_resync()
