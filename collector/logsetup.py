"""Log lines for journald: plain ``level logger message`` to stderr, context as ``key=value`` fields.

journald adds its own timestamps; when not under systemd (a terminal, a test) we prefix one.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["setup_logging", "set_level"]

_ROOTS = ("collector", "api", "aiohttp")


def setup_logging(level: str = "INFO") -> None:
    under_journald = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s %(message)s" if under_journald else \
        "%(asctime)s %(levelname)s %(name)s %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    set_level(level)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level)
    # panoramisk logs every message at DEBUG; keep it at INFO unless the operator asks for AMI traffic
    logging.getLogger("collector.panoramisk").setLevel(level if level == "DEBUG" else "WARNING")
    logging.getLogger("aiohttp.access").setLevel("WARNING")
