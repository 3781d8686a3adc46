"""API settings: MOR's per-owner switches (here one set for the whole service) plus our input caps.

Validated on construction, so a bad time zone or a nonsensical cap fails at start-up or reload, not on
the first request. The daemon builds it from the ``[api]`` config section, one key per field, with the
defaults written here only.
"""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["ApiSettings", "DEFAULT_PATHS"]

#: The issue's path first; ``/api/active_calls_get`` is the seed's "From MOR X14" spelling.
DEFAULT_PATHS: tuple[str, ...] = ("/billing/api/active_calls_get", "/api/active_calls_get")


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiSettings:
    enabled: bool = True  # MOR "Allow API": off → "API Requests are disabled"
    allow_get: bool = False  # MOR "Allow GET API": off → "GET Requests are disabled"
    disable_hash_check: bool = False  # MOR "API disable hash checking": no hash, no secret needed
    accept_secret_only_hash: bool = False  # also accept sha1(secret) (the seed's own example hash)
    timezone: str | None = None  # zoneinfo name for answer_time; None = the server's local zone
    max_param_len: int = 1024  # longer values are invalid (see docs/api.md "Caps")
    max_params: int = 100  # only the first N name=value pairs of a request are read
    max_body: int = 64 * 1024  # larger bodies → HTTP 413
    body_timeout: float = 10.0  # seconds to receive the whole body → HTTP 408
    hide_older_than_hours: float | None = None  # MOR's Hide_active_calls_longer_than (MOR default 24)
    prerender_interval: float | None = 0.5  # seconds between background row-rendering passes; None = off
    paths: tuple[str, ...] = DEFAULT_PATHS

    def __post_init__(self) -> None:
        if self.timezone is not None:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {self.timezone!r}") from exc
        for name in ("max_param_len", "max_params", "max_body"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.body_timeout <= 0:
            raise ValueError("body_timeout must be positive")
        if self.prerender_interval is not None and self.prerender_interval <= 0:
            raise ValueError("prerender_interval must be positive (or None for no background rendering)")
        if self.hide_older_than_hours is not None and self.hide_older_than_hours <= 0:
            raise ValueError("hide_older_than_hours must be positive (or None to show every call)")
        if not self.paths or any(not p.startswith("/") for p in self.paths):
            raise ValueError("paths must be absolute URL paths")

    def zone(self) -> ZoneInfo | None:
        """The configured zone, or None for the server's local zone."""
        return ZoneInfo(self.timezone) if self.timezone is not None else None
