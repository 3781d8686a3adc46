"""systemd's sd_notify protocol in a few lines: one datagram per message to ``$NOTIFY_SOCKET``.

No dependency: the protocol is a Unix datagram of ``KEY=VALUE`` lines (sd_notify(3)). Outside systemd
(no ``NOTIFY_SOCKET``) every call is a no-op, so the daemon runs unchanged from a shell or a test.
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["Notifier"]

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        addr = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        if addr.startswith("@"):  # abstract namespace
            addr = "\0" + addr[1:]
        self._addr = addr
        self._sock: socket.socket | None = None
        if addr:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, **fields: str | int) -> bool:
        if self._sock is None:
            return False
        payload = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        try:
            self._sock.sendto(payload, self._addr)
            return True
        except OSError as exc:
            log.warning("sd_notify failed: %s", exc)
            return False

    @staticmethod
    def watchdog_interval() -> float | None:
        """Half of ``WatchdogSec`` (systemd passes it as WATCHDOG_USEC), or None when not asked."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 2_000_000
        except ValueError:
            return None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
