"""The v2 token signing key when ``[api] jwt_secret`` is empty: 32 random bytes in ``<state dir>/jwt.key``.

The state directory is the directory of ``[database] path`` (the daemon has no other state directory;
systemd's ``StateDirectory=`` is that, /var/lib/collector). The file is created once with ``O_EXCL`` and
mode 0600, so two daemons starting at once cannot both write a key, and it is reused at every start (tokens
survive restarts). A file group or others may access is refused: whoever can read it can mint tokens for
any user, whoever can write it can replace the key. The key is never logged.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from collector.service.config import ConfigError

__all__ = ["KEY_BYTES", "KEY_FILE", "KeyFileError", "load_or_create_key"]

log = logging.getLogger(__name__)

KEY_FILE = "jwt.key"
KEY_BYTES = 32


class KeyFileError(ConfigError):
    """The key file cannot be used as it is (one line: the path and what to do). A configuration error:
    ``collector run`` exits 2, which the systemd unit does not restart (a restart cannot fix it)."""


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``, created (``KEY_BYTES`` random bytes, mode 0600) when it does not exist yet."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return _read(path)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create the token signing key: {exc.strerror or exc}") from None
    key = secrets.token_bytes(KEY_BYTES)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    log.info("api token signing key generated path=%s (mode 0600; reused at every start)", path)
    return key


def _read(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the token signing key: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{path}: not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise KeyFileError(f"{path}: group or others may access the token signing key (mode {mode:04o}); "
                               f"run: chmod 600 {path}")
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    if len(data) < KEY_BYTES:
        raise KeyFileError(f"{path}: holds {len(data)} bytes, a key needs {KEY_BYTES}; delete the file to "
                           "generate a new key (every token issued before becomes invalid)")
    return data
