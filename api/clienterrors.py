"""Malformed requests log one short line each, rate-limited, never a traceback.

aiohttp logs every request it cannot parse (``aiohttp.server``: "Error handling request", ERROR, with
the parser's traceback and the offending bytes). A hostile or broken client can send thousands a
second, so this filter turns each into ``api client error peer=… error=…`` (one line, the error's first
line, truncated) and lets at most ``limit`` through per ``window`` seconds; the next line after a
window with suppressed ones says how many (``api client errors suppressed=K window=10s``). Other
records of that logger (real server bugs) pass unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp.http_exceptions import HttpProcessingError

from api.logbudget import LogBudget

__all__ = ["ClientErrorLimiter", "install_client_error_limiter"]

_SERVER_LOGGER = "aiohttp.server"
_MAX_TEXT = 120


class ClientErrorLimiter(logging.Filter):
    def __init__(self, limit: int = 10, window: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.budget = LogBudget("api client errors", limit, window, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        summary = self.budget.take()
        if summary is None:
            return False
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        text = (str(getattr(exc, "message", "")) or type(exc).__name__).strip().splitlines()
        first = text[0].strip() if text else ""
        record.msg = "api client error peer=%s error=%s status=%s%s"
        record.args = (peer, repr(first[:_MAX_TEXT]), getattr(exc, "code", 400), summary)
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info = None
        record.exc_text = None
        return True


def install_client_error_limiter(limit: int = 10, window: float = 10.0) -> ClientErrorLimiter:
    """Attach the limiter to aiohttp's server logger once per process (idempotent); returns it."""
    logger = logging.getLogger(_SERVER_LOGGER)
    for f in logger.filters:
        if isinstance(f, ClientErrorLimiter):
            return f
    limiter = ClientErrorLimiter(limit, window)
    logger.addFilter(limiter)
    return limiter
