"""The client side of the replayed Asterisk: connections, their event masks and filters, and the answers to
the actions a daemon sends (Login, Events, Filter, Ping, CoreShowChannels, Logoff) as Asterisk 20 gives them.

The stream itself is the server's; it reaches a client only through :meth:`ClientHub.flush`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from collector.ami.framing import parse_action
from collector.tools.replay.options import ReplayOptions
from collector.tools.replay.trace import TraceSession

__all__ = ["EVENT_CLASS_BITS", "ClientHub", "EventMask", "ReplayedAsterisk", "privilege_classes"]

log = logging.getLogger(__name__)

#: Largest action block accepted from a client before its buffer is discarded as garbage.
_MAX_ACTION_BYTES = 64 * 1024

#: Asterisk's event class bits (include/asterisk/manager.h), for numeric ``Events:`` masks.
EVENT_CLASS_BITS: dict[str, int] = {
    "system": 1 << 0, "call": 1 << 1, "log": 1 << 2, "verbose": 1 << 3, "command": 1 << 4, "agent": 1 << 5,
    "user": 1 << 6, "config": 1 << 7, "dtmf": 1 << 8, "reporting": 1 << 9, "cdr": 1 << 10, "dialplan": 1 << 11,
    "originate": 1 << 12, "agi": 1 << 13, "cc": 1 << 14, "aoc": 1 << 15, "test": 1 << 16, "security": 1 << 17,
    "message": 1 << 18,
}


@dataclass(frozen=True, slots=True)
class EventMask:
    """A session's event class mask; ``classes is None`` means every class (``on``)."""

    classes: frozenset[str] | None

    @classmethod
    def parse(cls, value: str | None) -> EventMask:
        """``on``/``yes``/``all`` → everything, ``off``/``no`` → nothing, an integer → class bits, else a comma
        list of class names (unknown names ignored, as Asterisk does)."""
        v = (value or "on").strip().lower()
        if v in ("on", "yes", "true", "all", "-1"):
            return cls(None)
        if v in ("off", "no", "false", "0", ""):
            return cls(frozenset())
        if v.isdigit():
            bits = int(v)
            return cls(frozenset(name for name, bit in EVENT_CLASS_BITS.items() if bits & bit))
        names = {p.strip() for p in v.split(",") if p.strip()}
        if "all" in names:
            return cls(None)
        return cls(frozenset(names & EVENT_CLASS_BITS.keys()))

    @property
    def on(self) -> bool:
        return self.classes is None or bool(self.classes)

    def allows(self, classes: frozenset[str]) -> bool:
        """Asterisk sends an event only if *all* its classes are in the mask."""
        if self.classes is None:
            return True
        return bool(self.classes) and classes <= self.classes


def privilege_classes(msg: dict[str, str]) -> frozenset[str]:
    priv = msg.get("Privilege", "")
    return frozenset(p.strip().lower() for p in priv.split(",") if p.strip() and p.strip().lower() != "all")


@dataclass(slots=True)
class Client:
    """One TCP connection to the replay server."""

    cid: int
    writer: asyncio.StreamWriter
    peer: str
    logged_in: bool = False
    mask: EventMask = field(default_factory=lambda: EventMask(None))
    includes: list[re.Pattern[str]] = field(default_factory=list)
    excludes: list[re.Pattern[str]] = field(default_factory=list)
    closing: bool = False
    events_sent: int = 0
    stalled_since: float | None = None  # loop time its write buffer went over the high-water mark
    out: list[bytes] = field(default_factory=list)  # events not yet handed to the transport (see flush)

    def wants(self, classes: frozenset[str], raw: bytes) -> bool:
        if not self.mask.allows(classes):
            return False
        if not self.includes and not self.excludes:
            return True
        text = raw.decode("utf-8", "replace")
        if self.includes and not any(p.search(text) for p in self.includes):
            return False
        return not any(p.search(text) for p in self.excludes)

    def write(self, data: bytes) -> None:
        if self.closing:
            return
        if self.writer.transport.is_closing():  # peer gone: asyncio would log every further write
            self.closing = True
            return
        try:
            self.writer.write(data)
        except Exception as exc:  # transport already gone: the reader side will clean up
            log.debug("client %s write failed: %r", self.peer, exc)
            self.closing = True

    def over_high_water(self) -> bool:
        """True when ``drain()`` would block: only then is it worth awaiting (keeps fast mode cheap)."""
        try:
            transport = self.writer.transport
            return transport.get_write_buffer_size() >= transport.get_write_buffer_limits()[1]
        except Exception:
            return False


def _reply(kind: str, action_id: str | None, *lines: str) -> bytes:
    aid = f"ActionID: {action_id}\r\n" if action_id is not None else ""
    body = "".join(f"{line}\r\n" for line in lines)
    return f"Response: {kind}\r\n{aid}{body}\r\n".encode()


class ReplayedAsterisk(Protocol):
    """What the client side reads of the server, each time at the moment it needs it."""

    options: ReplayOptions
    session_index: int

    @property
    def session(self) -> TraceSession: ...

    def trace_time(self) -> float | None: ...

    def stamp_time(self) -> float: ...

    def core_show_channels(self, action_id: str | None) -> bytes: ...

    def hangup(self, channel: str) -> bool: ...


class ClientHub:
    """Every connection to one replay server; ``on_change`` runs whenever a count or a client's state changes.
    Each action block goes, decoded, to ``on_action`` (the server's hook, which may end in :meth:`answer`)."""

    def __init__(self, asterisk: ReplayedAsterisk, on_change: Callable[[], None],
                 on_action: Callable[[Client, str], Awaitable[None]]) -> None:
        self.asterisk = asterisk
        self._on_action = on_action
        self.clients: dict[int, Client] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.connections_total = 0
        self.logins_total = 0
        self._on_change = on_change

    @property
    def logged_in(self) -> int:
        return sum(1 for c in self.clients.values() if c.logged_in and not c.closing)

    def anyone_listening(self) -> bool:
        """``logged_in > 0``, cheap enough for once per event."""
        for c in self.clients.values():
            if c.logged_in and not c.closing:
                return True
        return False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The ``asyncio.start_server`` callback: one connection, from banner to EOF."""
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        self.connections_total += 1
        peer = str(writer.get_extra_info("peername"))
        client = Client(self.connections_total, writer, peer)
        self.clients[client.cid] = client
        self._on_change()
        log.info("replay: client %s connected (session %d)", peer, self.asterisk.session_index)
        try:
            client.write(self.asterisk.session.banner + b"\r\n")
            buf = b""
            while not client.closing:
                data = await reader.read(65536)
                if not data:
                    break
                buf += data.replace(b"\r", b"")
                while b"\n\n" in buf and not client.closing:
                    block, buf = buf.split(b"\n\n", 1)
                    if block.strip():
                        await self._on_action(client, block.decode("utf-8", "replace"))
                if len(buf) > _MAX_ACTION_BYTES:
                    log.warning("replay: client %s sent %d bytes without a blank line; discarded", peer, len(buf))
                    buf = b""
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
            log.info("replay: client %s connection error: %r", peer, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("replay: client %s handler failed", peer)
        finally:
            self.clients.pop(client.cid, None)
            self.close(client)
            if task is not None:
                self.tasks.discard(task)
            log.info("replay: client %s gone", peer)
            self._on_change()

    def close(self, client: Client) -> None:
        client.closing = True
        try:
            client.writer.close()
        except Exception:
            pass
        self._on_change()

    async def close_all(self) -> None:
        """Close every client: flush what is buffered, then reset those that do not read."""
        for client in list(self.clients.values()):
            self.close(client)  # flushes what is buffered, then the handler sees EOF and ends
        pending = set(self.tasks)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=1.0)
        if pending:  # clients that do not read: reset them
            for client in list(self.clients.values()):
                client.writer.transport.abort()
            _, pending = await asyncio.wait(pending, timeout=1.0)
        for t in pending:  # last resort (asyncio logs a cancelled handler task on 3.11)
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def drop_all(self) -> int:
        """Reset every client connection at once (TCP RST, unsent data discarded); returns how many."""
        n = 0
        for client in list(self.clients.values()):
            client.closing = True
            transport = client.writer.transport
            sock = transport.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            transport.abort()
            n += 1
        log.info("replay: dropped %d client(s)", n)
        self._on_change()
        return n

    async def drain(self, client: Client) -> None:
        if client.closing:
            return
        write_timeout = self.asterisk.options.write_timeout
        try:
            await asyncio.wait_for(client.writer.drain(), write_timeout)
        except TimeoutError:
            log.warning("replay: client %s did not read for %.1f s; disconnecting", client.peer, write_timeout)
            self.close(client)
            client.writer.transport.abort()
        except (ConnectionError, OSError) as exc:
            log.debug("replay: client %s drain failed: %r", client.peer, exc)
            self.close(client)

    async def flush(self) -> None:
        """Hand every client's queued events to its transport."""
        targets = []
        for client in self.clients.values():
            if client.out:
                client.write(b"".join(client.out))
                client.out.clear()
                targets.append(client)
        options = self.asterisk.options
        if options.fast:  # as fast as the (slowest) client reads
            for client in targets:
                if client.over_high_water():
                    await self.drain(client)
            return
        # timed: never hold the stream for one reader; one that stays backed up for write_timeout is cut off,
        # as Asterisk does with its writetimeout
        now = asyncio.get_running_loop().time()
        for client in targets:
            if not client.over_high_water():
                client.stalled_since = None
            elif client.stalled_since is None:
                client.stalled_since = now
            elif now - client.stalled_since > options.write_timeout:
                log.warning("replay: client %s has not read for %.1f s; disconnecting", client.peer,
                            options.write_timeout)
                client.closing = True
                client.writer.transport.abort()

    # ------------------------------------------------------------------ actions

    async def answer(self, client: Client, text: str) -> None:
        """Answer one action block as Asterisk 20 does."""
        hdr = parse_action(text)
        aid = hdr.get("actionid")
        action = hdr.get("action", "").lower()
        if not action:
            client.write(_reply("Error", aid, "Message: Missing action in request"))
            return
        if not client.logged_in and action not in ("login", "logoff", "challenge"):
            client.write(_reply("Error", aid, "Message: Permission denied"))
            return
        if action == "login":
            self._action_login(client, hdr, aid)
        elif action == "logoff":
            client.write(_reply("Goodbye", aid, "Message: Thanks for all the fish."))
            await self.drain(client)
            self.close(client)
        elif action == "ping":
            client.write(_reply("Success", aid, "Ping: Pong", f"Timestamp: {self.asterisk.stamp_time():.6f}"))
        elif action == "events":
            client.mask = EventMask.parse(hdr.get("eventmask"))
            client.write(_reply("Success", aid, f"Events: {'On' if client.mask.on else 'Off'}"))
        elif action == "filter":
            self._action_filter(client, hdr, aid)
        elif action == "coreshowchannels":
            client.write(self.asterisk.core_show_channels(aid))
        elif action == "hangup":
            channel = hdr.get("channel", "")
            if not channel:
                client.write(_reply("Error", aid, "Message: No channel specified"))
            elif self.asterisk.hangup(channel):  # queues the Hangup events: the reply goes out before them
                client.write(_reply("Success", aid, "Message: Channel Hungup"))
                await self.flush()
            else:
                client.write(_reply("Error", aid, "Message: No such channel"))
        else:
            client.write(_reply("Error", aid, "Message: Invalid/unknown command"))
        await self.drain(client)

    def _action_login(self, client: Client, hdr: dict[str, str], aid: str | None) -> None:
        if client.logged_in:
            client.write(_reply("Success", aid, "Message: Already authenticated"))
            return
        options = self.asterisk.options
        if options.username is not None and (hdr.get("username") != options.username
                                             or (options.secret is not None and hdr.get("secret") != options.secret)):
            log.info("replay: client %s failed to authenticate as %r", client.peer, hdr.get("username"))
            client.write(_reply("Error", aid, "Message: Authentication failed"))
            self.close(client)
            return
        client.mask = EventMask.parse(hdr.get("events"))
        client.write(_reply("Success", aid, "Message: Authentication accepted"))
        if client.mask.allows(frozenset({"system"})):
            client.write(self.asterisk.session.fully_booted)
        client.logged_in = True
        self.logins_total += 1
        log.info("replay: client %s logged in as %r, events=%s", client.peer, hdr.get("username"),
                 hdr.get("events", "on"))
        self._on_change()

    def _action_filter(self, client: Client, hdr: dict[str, str], aid: str | None) -> None:
        if hdr.get("operation", "").lower() != "add":
            client.write(_reply("Error", aid, "Message: Unknown operation"))
            return
        expr = hdr.get("filter", "")
        exclude = expr.startswith("!")
        try:
            pattern = re.compile(expr[1:] if exclude else expr)
        except re.error:
            client.write(_reply("Error", aid, "Message: Filter did not compile.  Check the syntax of the filter "
                                              "given."))
            return
        (client.excludes if exclude else client.includes).append(pattern)
        client.write(_reply("Success", aid, "Message: Success"))
