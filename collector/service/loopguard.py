"""Out of descriptors: asyncio's accept errors as one rate-limited line, never a traceback each.

When ``accept()`` fails with EMFILE/ENFILE/ENOBUFS/ENOMEM, asyncio's selector loop reports it through
``loop.call_exception_handler`` ("socket.accept() out of system resource", with the exception, so the
default handler prints a traceback) and stops accepting on that socket for a second. Under a connection
flood that is thousands of tracebacks. ``AcceptErrorFilter`` is a loop exception handler that counts those
and logs at most one line per window (``WindowedLog``); everything else goes to the handler that was in
place before (the loop's default one). New connections wait in the listen backlog meanwhile; the AMI
sessions keep their sockets.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
from typing import Any

from api.httpserver import WindowedLog

__all__ = ["AcceptErrorFilter"]

log = logging.getLogger(__name__)

_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _nofile() -> str:
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return "?"
    return str(soft)


class AcceptErrorFilter:
    def __init__(self, loop: asyncio.AbstractEventLoop, window: float = 10.0) -> None:
        self.loop = loop
        self.lines = WindowedLog(log, logging.WARNING, window)
        self._previous = loop.get_exception_handler()

    @property
    def count(self) -> int:
        return self.lines.total

    @staticmethod
    def matches(context: dict[str, Any]) -> bool:
        exc = context.get("exception")
        return (isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS
                and "accept" in str(context.get("message", "")))

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if self.matches(context):
            exc = context["exception"]
            self.lines.note(f"http accept failed: {errno.errorcode.get(exc.errno, exc.errno)} "
                            f"({exc.strerror}); new connections wait until descriptors free "
                            f"(RLIMIT_NOFILE={_nofile()}; see [api] max_connections)")
            return
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)

    def install(self) -> AcceptErrorFilter:
        self.loop.set_exception_handler(self)
        return self

    def uninstall(self) -> None:
        if self.loop.get_exception_handler() is self:
            self.loop.set_exception_handler(self._previous)
        self.lines.close()
