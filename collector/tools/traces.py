"""Reading recorded AMI traces (``.ami`` raw bytes, or ``.ami.gz``)."""

from __future__ import annotations

import gzip
from pathlib import Path

__all__ = ["read_trace"]


def read_trace(path: str | Path) -> bytes:
    """The raw bytes of a trace file, gunzipped when its name ends in ``.gz``."""
    p = Path(path)
    data = p.read_bytes()
    if p.suffix == ".gz" or data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    return data
