"""Log lines for journald: plain ``level logger message`` to stderr, context as ``key=value`` fields.

journald adds its own timestamps; when not under systemd (a terminal, a test) we prefix one. Under
journald (``$JOURNAL_STREAM`` names our stderr) each line starts with the syslog priority (``<3>`` …),
which journald strips and stores, so ``journalctl -p warning`` works.

Secrets never reach the output: the formatter masks the value after ``secret``, ``password``,
``api_secret_key``, ``token`` (``: ``, ``=`` or dict-repr forms) and ``Authorization: Bearer`` in the
whole formatted text, tracebacks included (panoramisk prints a Login action, ``Secret:`` and all, when a
connection dies with it pending). Exact values registered with :func:`add_secrets` (the configured AMI
secrets, API secret keys, status token) are masked where they appear as a whole token (not inside a
longer word or number), and only when at least ``MIN_SECRET_LEN`` characters long: a short secret
(``demo``) would otherwise garble paths and words (``var/********/collector.db``). This is a safety net:
our own code never logs a secret, whatever its length.

panoramisk's own link messages ("Connection lost" at ERROR, "Not able to reconnect" …) are dropped below
DEBUG: the session logs each of those events once, with ``server=`` and the retry delay.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable

__all__ = ["MASK", "MIN_SECRET_LEN", "RedactingFormatter", "add_secrets", "redact", "set_level", "setup_logging"]

_ROOTS = ("collector", "api", "aiohttp")

MASK = "********"
MIN_SECRET_LEN = 6

_KEYED = re.compile(
    r"""(?ix)
    ((?:\b|(?<=\\[rnt]))                                          # a word start, or after a repr'd \r \n \t
     (?:secret|password|passwd|api_secret_key|status_token|token)     # the key
     ['"]?\s*[:=]\s*['"]?)                                         # ": ", "=", "': '"
    ([^\s'"&,;}\]\\]+)                                             # the value
    """)
_BEARER = re.compile(r"(?i)(\bBearer\s+)([^\s'\",;]+)")
_SYSLOG_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}

_secrets: set[str] = set()
_secrets_re: re.Pattern[str] | None = None

#: panoramisk's own lines about the link, each already logged by AmiSession with ``server=`` context
#: ("ami disconnected server=… retry_in=…"); at ERROR without a server name they only mislead.
_PANORAMISK_DUPLICATES = ("Connection lost", "Not able to reconnect", "Not able to connect",
                          "Try to connect again in ")


class _DropPanoramiskDuplicates(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger(record.name).getEffectiveLevel() <= logging.DEBUG:
            return True
        msg = record.msg if isinstance(record.msg, str) else ""
        return not msg.startswith(_PANORAMISK_DUPLICATES)


_PANORAMISK_FILTER = _DropPanoramiskDuplicates()


def add_secrets(values: Iterable[str | None]) -> None:
    """Mask these exact values, as whole tokens, in every later log line (values shorter than
    ``MIN_SECRET_LEN`` are ignored: masking them would garble ordinary words and paths)."""
    global _secrets_re
    before = len(_secrets)
    for v in values:
        if v and len(str(v)) >= MIN_SECRET_LEN:
            _secrets.add(str(v))
    if len(_secrets) != before:
        alternatives = "|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True))
        _secrets_re = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")


def redact(text: str) -> str:
    text = _KEYED.sub(lambda m: m.group(1) + MASK, text)
    text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    if _secrets_re is not None:
        text = _secrets_re.sub(MASK, text)
    return text


class RedactingFormatter(logging.Formatter):
    def __init__(self, fmt: str, syslog_prefix: bool = False) -> None:
        super().__init__(fmt)
        self.syslog_prefix = syslog_prefix

    def format(self, record: logging.LogRecord) -> str:
        text = redact(super().format(record))
        if self.syslog_prefix:
            prio = _SYSLOG_PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
            text = f"<{prio}>{text}"
        return text


def _stderr_is_journal() -> bool:
    """True when ``$JOURNAL_STREAM`` (``DEV:INODE``) is our stderr, as sd_journal_stream_fd(3) says to check."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
        return st.st_dev == int(dev) and st.st_ino == int(ino)
    except (OSError, ValueError, AttributeError):
        return False


def setup_logging(level: str = "INFO") -> None:
    under_journald = _stderr_is_journal()
    fmt = "%(levelname)s %(name)s %(message)s" if under_journald else \
        "%(asctime)s %(levelname)s %(name)s %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(fmt, syslog_prefix=under_journald))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    set_level(level)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level)
    # panoramisk logs every message at DEBUG; keep it at INFO unless the operator asks for AMI traffic
    panoramisk = logging.getLogger("collector.panoramisk")
    panoramisk.setLevel(level if level == "DEBUG" else "WARNING")
    if _PANORAMISK_FILTER not in panoramisk.filters:
        panoramisk.addFilter(_PANORAMISK_FILTER)
    logging.getLogger("aiohttp.access").setLevel("WARNING")
