"""The panoramisk ``Manager`` an ``AmiSession`` drives: connect bounded by a timeout, our own TLS context
and server name, and every connection event reported back to the session (which owns the policy)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING, Any

from panoramisk import Manager

from collector.ami.settings import AmiServerSettings

if TYPE_CHECKING:  # the session builds the manager; the manager only calls it back
    from collector.ami.session import AmiSession

__all__ = ["SessionManager", "tls_context"]

log = logging.getLogger("collector.ami.session")


def tls_context(cfg: AmiServerSettings) -> ssl.SSLContext | None:
    """The client TLS context of a server (None without ``tls``); ``tls_ca`` is read here (at start)."""
    if not cfg.tls:
        return None
    ctx = ssl.create_default_context(cafile=cfg.tls_ca)
    if not cfg.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class SessionManager(Manager):  # type: ignore[misc]  # panoramisk is untyped
    """panoramisk's Manager with our reconnect policy and login bookkeeping."""

    def __init__(self, session: AmiSession, **config: Any) -> None:
        super().__init__(**config)
        self._session = session

    def connect(self, run_forever: bool = False, on_startup: Any = None,
                on_shutdown: Any = None) -> asyncio.Future[Any]:
        """panoramisk's connect, bounded by ``connect_timeout`` (TCP connect and TLS handshake), with TLS
        server name and context of our own (panoramisk passes ``ssl=`` only)."""
        s = self._session
        tls = s.ssl_context
        conn = self.loop.create_connection(
            self.config["protocol_factory"], self.config["host"], self.config["port"], ssl=tls,
            server_hostname=(s.cfg.tls_server_name or s.cfg.host) if tls is not None else None)
        t = asyncio.ensure_future(asyncio.wait_for(conn, s.settings.connect_timeout))
        t.add_done_callback(self.connection_made)
        return t

    def connection_made(self, f: asyncio.Future) -> None:  # type: ignore[type-arg]
        if self._session.stopping:
            return
        exc = None if f.cancelled() else f.exception()
        if exc is not None:
            self._session._connect_failed(exc)
            if not isinstance(exc, OSError):  # panoramisk only retries on OSError
                self.loop.call_later(self.reconnect_timeout, self.connect)
                return
        super().connection_made(f)
        if exc is None:
            self._session._connected()

    def connection_lost(self, exc: Exception | None) -> None:
        self._session._disconnected(exc)
        if self._session.stopping:
            self._connected = False
            return
        super().connection_lost(exc)

    def login(self, future: asyncio.Future) -> bool:  # type: ignore[type-arg]
        try:
            ok = bool(super().login(future))
        except (Exception, asyncio.CancelledError) as exc:  # the connection died during login
            log.warning("ami login interrupted server=%s: %s", self._session.name, exc)
            return False
        self._session._login_result(ok, future)
        return ok
