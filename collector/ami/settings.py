"""The AMI layer's settings: one Asterisk server to follow, and the session timings.

They live with the code that reads them (one settings type per layer); ``collector.service.config``
only builds them from the INI file. ``Secret`` lives here because the AMI login secret is its first user.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AmiServerSettings", "CollectorSettings", "Secret"]


class Secret(str):
    """A str that never shows itself in ``repr`` (settings dumps, tracebacks, logs of objects)."""

    def __repr__(self) -> str:
        return "Secret('********')"


@dataclass(frozen=True, slots=True)
class AmiServerSettings:
    name: str
    host: str
    port: int
    username: str
    secret: Secret
    server_id: int
    enabled: bool = True
    events: str = "call,system"
    send_filter: bool = False  # also send an Action: Filter include list (needs write=system)
    # AMI over TLS (Asterisk's tlsenable/tlsbindaddr, usually port 5039)
    tls: bool = False
    tls_ca: str | None = None  # PEM CA file to verify the server with; None = the system's CAs
    tls_verify: bool = True  # no: encrypt without checking who answers (a warning is logged)
    tls_server_name: str | None = None  # name checked against the certificate (and sent as SNI); None = host


@dataclass(frozen=True, slots=True)
class CollectorSettings:
    log_level: str = "INFO"
    reconcile_interval: float = 60.0
    ping_interval: float = 10.0
    ping_timeout: float = 5.0
    resync_timeout: float = 15.0
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    auth_retry: float = 60.0
    flush_interval: float = 1.0
    require_all_servers: bool = False
    stale_after: float = 60.0  # s a server may stay disconnected before its calls leave the table
    watchdog: bool = True
    connect_timeout: float = 10.0  # TCP connect (and TLS handshake)
    login_timeout: float = 10.0  # from connect to the Login answer (banner included)
    # per-server bounds: past one the server is marked degraded and its excess refused
    max_channels: int = 50_000  # channels tracked per server
    max_resync_entries: int = 100_000  # items accepted from one CoreShowChannels answer
