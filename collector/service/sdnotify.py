"""systemd's sd_notify protocol in a few lines: one datagram per message to ``$NOTIFY_SOCKET``.

No dependency: the protocol is a Unix datagram of ``KEY=VALUE`` lines (sd_notify(3)). Outside systemd
(no ``NOTIFY_SOCKET``) every call is a no-op, so the daemon runs unchanged from a shell or a test.

Details that matter to systemd:

* ``RELOADING=1`` goes out with ``MONOTONIC_USEC=`` (CLOCK_MONOTONIC, µs), which systemd ≥ 253 wants so it
  can tell the reload's ``READY=1`` from an older one; it is added when the caller does not pass it.
* A value is one line: newlines in ``STATUS=`` text would start new assignments, so they become spaces.
* Only ``/path`` and ``@abstract`` addresses are Unix sockets; anything else (``vsock:…``) disables the
  notifier with one warning rather than failing every send.
* A failing send is logged once, not at every watchdog tick, until a send succeeds again.
"""

from __future__ import annotations

import logging
import os
import socket
import time

__all__ = ["Notifier"]

log = logging.getLogger(__name__)


def _value(v: str | int) -> str:
    text = str(v)
    return text.replace("\r", " ").replace("\n", " ") if ("\n" in text or "\r" in text) else text


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        addr = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        if addr and not addr.startswith(("/", "@")):
            log.warning("sd_notify disabled: unsupported NOTIFY_SOCKET address=%r", addr)
            addr = ""
        if addr.startswith("@"):  # abstract namespace
            addr = "\0" + addr[1:]
        self._addr = addr
        self._sock: socket.socket | None = None
        self._failing = False
        if addr:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` lines (keys upper-cased, in the order given); False when not sent."""
        if self._sock is None:
            return False
        if "reloading" in fields and "monotonic_usec" not in fields:
            fields["monotonic_usec"] = time.monotonic_ns() // 1000
        payload = "\n".join(f"{k.upper()}={_value(v)}" for k, v in fields.items()).encode()
        try:
            self._sock.sendto(payload, self._addr)
        except OSError as exc:
            if not self._failing:
                log.warning("sd_notify failed error=%s (further failures not logged until one succeeds)", exc)
            self._failing = True
            return False
        if self._failing:
            log.info("sd_notify works again")
            self._failing = False
        return True

    @staticmethod
    def watchdog_interval() -> float | None:
        """Half of ``WatchdogSec`` (systemd passes it as WATCHDOG_USEC), or None when not asked for us."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            n = int(usec)
        except ValueError:
            return None
        return n / 2_000_000 if n > 0 else None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
