"""Where reference data comes from: ``[refdata]`` of the configuration, as a frozen record.

Kept in the refdata layer (the service's config module only parses INI into it) so the MOR sync and
its tests need nothing from the service. ``mysql_password`` is expected to be the config's ``Secret``
(a str whose repr hides it); the field is also kept out of this record's repr.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["REFDATA_SOURCES", "RefdataSettings"]

REFDATA_SOURCES = ("file", "mysql")


@dataclass(frozen=True, slots=True)
class RefdataSettings:
    source: str = "file"  # file: the SQLite file is filled by `collector db import`; mysql: synced from MOR
    mysql_host: str = "127.0.0.1"
    mysql_port: int = 3306
    mysql_socket: str = ""  # a Unix socket path; when set, host and port are not used
    mysql_user: str = ""
    mysql_password: str = field(default="", repr=False)
    mysql_database: str = "mor"
    refresh_interval: float = 300.0  # s between syncs (also at start and on SIGHUP)
    mysql_tls: bool = False
    mysql_tls_ca: str = ""  # CA bundle; empty: the system's
    mysql_tls_verify: bool = True  # check the certificate chain and the host name
    connect_timeout: float = 10.0  # s; a MySQL that is down must not hold a sync for long
    read_timeout: float = 60.0

    @property
    def mysql(self) -> bool:
        return self.source == "mysql"

    def describe(self) -> str:
        """Where it connects, for logs and /status: never the password (nor the user)."""
        if not self.mysql:
            return "file"
        where = self.mysql_socket or f"{self.mysql_host}:{self.mysql_port}"
        return f"mysql://{where}/{self.mysql_database}"
