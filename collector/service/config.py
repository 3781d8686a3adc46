"""INI configuration → frozen settings, validated once at start (and on reload).

Every problem is reported as one line naming the file, section and key (``ConfigError``), so an operator
fixes it at a glance; the CLI turns it into exit status 2. Secrets are wrapped so that neither ``repr``
nor a log line can show them.

Unknown sections and keys are errors too, with the nearest valid name suggested. There is no table of
known keys: ``_Reader`` records every key it is asked for, and unknown = present − read. So a new key is
known as soon as the parser reads it — read every key of a section unconditionally (a key read only
when another is set would be reported as unknown otherwise).
"""

from __future__ import annotations

import builtins
import configparser
import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api.settings import ApiSettings
from collector.ami.settings import AmiServerSettings, CollectorSettings, Secret
from collector.live.history import HistorySettings  # [history]
from collector.refdata.settings import REFDATA_SOURCES, RefdataSettings  # [refdata]
from collector.service.hangup import HangupSettings  # [hangup]

__all__ = [
    "AmiServerSettings", "CollectorSettings", "ConfigError", "HttpSettings", "Secret", "Settings",
    "load_settings", "parse_settings",
]

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_EVENT_CLASS = re.compile(r"^(on|off|\d+|[a-z]+(,[a-z]+)*)$")


class ConfigError(Exception):
    """One line: where and what."""


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The HTTP server itself (``[api]`` keys that are the process's, not the API's): bind address and
    who may read the ops endpoints. Everything the API itself obeys is ``api.settings.ApiSettings``."""

    listen: str = "127.0.0.1"
    port: int = 8080
    status_token: Secret | None = None  # when set, /status and /metrics want ?token= or a Bearer header
    # --- descriptors and time a client may hold
    max_connections: int = 1000  # open HTTP connections; past it new ones get 503 and are closed at once
    request_timeout: float = 15.0  # s for a connection's first request headers to arrive (slowloris)
    keepalive_timeout: float = 15.0  # s an idle connection (keep-alive, or nothing sent yet) stays open
    # --- v2 tokens (the daemon builds its TokenIssuer from these at start)
    jwt_secret: Secret | None = None  # HS256 signing key; None = generated into <state dir>/jwt.key
    jwt_lifetime: int = 900  # s a token from login / refresh is valid


@dataclass(frozen=True, slots=True)
class Settings:
    path: Path | None
    collector: CollectorSettings
    api: ApiSettings
    database: Path
    servers: tuple[AmiServerSettings, ...] = field(default=())
    http: HttpSettings = field(default_factory=HttpSettings)
    refdata: RefdataSettings = field(default_factory=RefdataSettings)  # [refdata]
    history: HistorySettings = field(default_factory=HistorySettings)  # [history]
    hangup: HangupSettings = field(default_factory=HangupSettings)  # [hangup]


class _Reader:
    def __init__(self, parser: configparser.ConfigParser, source: str,
                 sources: dict[tuple[str, str], str] | None = None) -> None:
        self.parser = parser
        self.source = source
        self.sources = sources or {}  # (section, key) -> the file that set it last (conf.d drop-ins)
        # Every (section, key) a reader was asked for, present or not: the known-key table is what the
        # parser reads, so a new key never needs a second list (see ``check_unknown``).
        self.asked: dict[builtins.str, set[builtins.str]] = {}

    def fail(self, section: str, key: str, why: str) -> ConfigError:
        where = self.sources.get((section, key.lower()), self.source)
        return ConfigError(f"{where}: [{section}] {key}: {why}")

    def missing(self, section: builtins.str, key: builtins.str) -> ConfigError:
        """A required key is absent: blame a misspelling of it when there is one (``secert``)."""
        if self.parser.has_section(section):
            known = self.asked.get(section, set())
            for present in self.parser.options(section):
                if present not in known and difflib.get_close_matches(present, [key], n=1, cutoff=0.6):
                    return self.fail(section, present, f"unknown key (did you mean {key!r}?)")
        return self.fail(section, key, "missing (required)")

    def raw(self, section: str, key: str) -> str | None:
        self.asked.setdefault(section, set()).add(key.lower())
        if not self.parser.has_section(section) or not self.parser.has_option(section, key):
            return None
        return self.parser.get(section, key, raw=True).strip()

    def str(self, section: str, key: str, default: str | None = None) -> str:
        value = self.raw(section, key)
        if value is None or value == "":
            if default is None:
                raise self.missing(section, key)
            return default
        return value

    def int(self, section: builtins.str, key: builtins.str, default: int | None = None, lo: int = 0,
            hi: int = 2**31) -> int:
        value = self.raw(section, key)
        if value is None or value == "":
            if default is None:
                raise self.missing(section, key)
            return default
        try:
            n = int(value)
        except ValueError:
            raise self.fail(section, key, f"not an integer: {value!r}") from None
        if not lo <= n <= hi:
            raise self.fail(section, key, f"{n} out of range {lo}..{hi}")
        return n

    def float(self, section: builtins.str, key: builtins.str, default: float, lo: float = 0.0,
              hi: float = 1e9) -> float:
        value = self.raw(section, key)
        if value is None or value == "":
            return default
        try:
            x = float(value)
        except ValueError:
            raise self.fail(section, key, f"not a number: {value!r}") from None
        if not lo <= x <= hi:
            raise self.fail(section, key, f"{x} out of range {lo}..{hi}")
        return x

    def bool(self, section: builtins.str, key: builtins.str, default: bool) -> bool:
        value = self.raw(section, key)
        if value is None or value == "":
            return default
        v = value.lower()
        if v in ("1", "yes", "true", "on"):
            return True
        if v in ("0", "no", "false", "off"):
            return False
        raise self.fail(section, key, f"not a boolean (yes/no): {value!r}")

    def check_unknown(self, families: dict[builtins.str, builtins.str]) -> None:
        """After every read: a section nothing was read from, or a key nobody asked for, is an error
        naming file, section and key, with the nearest known name suggested. ``families`` maps a
        section prefix (``server:``) to the name shown for it (``[server:NAME]``)."""
        for section in self.parser.sections():
            asked = self.asked.get(section)
            if asked is None:
                shown = sorted({*(s for s in self.asked if not s.startswith(tuple(families))),
                                *families.values()})
                near = difflib.get_close_matches(section, shown, n=1, cutoff=0.6)
                hint = f" (did you mean [{near[0]}]?)" if near else f" (expected {', '.join(f'[{n}]' for n in shown)})"
                keys = self.parser.options(section)
                where = self.sources.get((section, keys[0]), self.source) if keys else self.source
                raise ConfigError(f"{where}: [{section}]: unknown section{hint}")
            for key in self.parser.options(section):
                if key not in asked:
                    near = difflib.get_close_matches(key, sorted(asked), n=1, cutoff=0.6)
                    hint = f" (did you mean {near[0]!r}?)" if near else ""
                    raise self.fail(section, key, f"unknown key{hint}")


def parse_settings(text: str, source: str = "<config>", base_dir: Path | None = None,
                   sources: dict[tuple[str, str], str] | None = None) -> Settings:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        raise ConfigError(f"{source}: {str(exc).splitlines()[0]}") from None
    r = _Reader(parser, source, sources)
    settings = _parse(parser, r, base_dir)
    # Unknown = present − read: the check needs no table of its own (keys added by anyone are known
    # as soon as the code above reads them). A section nothing reads is an unknown section.
    r.check_unknown({"server:": "server:NAME"})
    return settings


def _parse(parser: configparser.ConfigParser, r: _Reader, base_dir: Path | None) -> Settings:

    level = r.str("collector", "log_level", "INFO").upper()
    if level not in _LOG_LEVELS:
        raise r.fail("collector", "log_level", f"one of {', '.join(_LOG_LEVELS)}")
    collector = CollectorSettings(
        log_level=level,
        reconcile_interval=r.float("collector", "reconcile_interval", 60.0, 0.1, 86400.0),
        ping_interval=r.float("collector", "ping_interval", 10.0, 0.1, 3600.0),
        ping_timeout=r.float("collector", "ping_timeout", 5.0, 0.1, 600.0),
        resync_timeout=r.float("collector", "resync_timeout", 15.0, 0.1, 600.0),
        reconnect_min=r.float("collector", "reconnect_min", 1.0, 0.01, 600.0),
        reconnect_max=r.float("collector", "reconnect_max", 60.0, 0.01, 3600.0),
        auth_retry=r.float("collector", "auth_retry", 60.0, 0.01, 86400.0),
        flush_interval=r.float("collector", "flush_interval", 1.0, 0.01, 3600.0),
        require_all_servers=r.bool("collector", "require_all_servers", False),
        stale_after=r.float("collector", "stale_after", 60.0, 0.1, 86400.0),
        watchdog=r.bool("collector", "watchdog", True),
        # --- step timeouts and per-server bounds
        connect_timeout=r.float("collector", "connect_timeout", 10.0, 0.01, 600.0),
        login_timeout=r.float("collector", "login_timeout", 10.0, 0.01, 600.0),
        max_channels=r.int("collector", "max_channels", 50_000, 1, 10_000_000),
        max_resync_entries=r.int("collector", "max_resync_entries", 100_000, 1, 10_000_000),
    )
    api = _api_settings(r)
    http = _http_settings(r)
    db = Path(r.str("database", "path", "var/collector.db"))
    if base_dir is not None and not db.is_absolute():
        db = base_dir / db

    servers: list[AmiServerSettings] = []
    ids: dict[int, str] = {}
    for section in parser.sections():
        if not section.startswith("server:"):
            continue
        name = section.split(":", 1)[1].strip()
        if not name:
            raise r.fail(section, "*", "server section needs a name: [server:NAME]")
        events = r.str(section, "events", "call,system").replace(" ", "")
        if not _EVENT_CLASS.match(events):
            raise r.fail(section, "events", f"not an AMI event mask: {events!r}")
        srv = AmiServerSettings(
            name=name,
            host=r.str(section, "host"),
            port=r.int(section, "port", 5038, 1, 65535),
            username=r.str(section, "username"),
            secret=Secret(r.str(section, "secret")),
            server_id=r.int(section, "server_id", None, 0),
            enabled=r.bool(section, "enabled", True),
            events=events,
            send_filter=r.bool(section, "send_filter", False),
        )
        srv = dataclasses.replace(srv, **_tls_settings(r, section, base_dir))  # AMI over TLS
        if srv.server_id in ids and srv.enabled:
            raise r.fail(section, "server_id", f"{srv.server_id} already used by [server:{ids[srv.server_id]}]")
        if srv.enabled:
            ids[srv.server_id] = name
        servers.append(srv)
    return Settings(path=None, collector=collector, api=api, database=db, servers=tuple(servers), http=http,
                    refdata=_parse_refdata(r), history=_parse_history(r),
                    hangup=_parse_hangup(r))


# ---------------------------------------------------------------------------------------------- [hangup]
def _parse_hangup(r: _Reader) -> HangupSettings:
    """``[hangup]``: the v2 DELETE routes; every key read whatever ``enabled`` says (all stay known)."""
    d = HangupSettings()
    return HangupSettings(
        enabled=r.bool("hangup", "enabled", d.enabled),
        users_may_hang_up=r.bool("hangup", "users_may_hang_up", d.users_may_hang_up),
        rate_per_server=r.float("hangup", "rate_per_server", d.rate_per_server, 0.01, 10_000.0),
        confirm_timeout=r.float("hangup", "confirm_timeout", d.confirm_timeout, 0.01, 600.0),
    )


# ------------------------------------------------------------------------------- [server:NAME] TLS
def _tls_settings(r: _Reader, section: str, base_dir: Path | None) -> dict[str, Any]:
    """``tls``, ``tls_ca`` (must exist and be readable; relative to the config file), ``tls_verify``,
    ``tls_server_name``; the TLS keys without ``tls = yes`` are an error (they would be silently unused)."""
    tls = r.bool(section, "tls", False)
    ca = r.str(section, "tls_ca", "") or None
    name = r.str(section, "tls_server_name", "") or None
    verify = r.bool(section, "tls_verify", True)
    if not tls:
        for key in ("tls_ca", "tls_server_name", "tls_verify"):
            if r.raw(section, key):
                raise r.fail(section, key, "needs tls = yes")
        return {}
    if ca is not None:
        path = Path(ca)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        try:
            with path.open("rb") as fh:
                head = fh.read(4096)
        except OSError as exc:
            raise r.fail(section, "tls_ca", f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
        if b"-----BEGIN CERTIFICATE-----" not in head:
            raise r.fail(section, "tls_ca", f"{str(path)!r} is not a PEM certificate file")
        ca = str(path)
    return {"tls": True, "tls_ca": ca, "tls_verify": verify, "tls_server_name": name}


# ---------------------------------------------------------------------------------------------- [api]
_OFF = ("off", "none", "no")
_API_DEFAULTS = ApiSettings()  # defaults live in ApiSettings only


#: an HS256 key at least as long as the hash (RFC 7518 §3.2), as ``api.tokens.TokenIssuer`` requires
_MIN_JWT_SECRET = 32


def _http_settings(r: _Reader) -> HttpSettings:
    token = r.str("api", "status_token", "")
    jwt_secret = r.str("api", "jwt_secret", "")
    if jwt_secret and len(jwt_secret.encode("utf-8")) < _MIN_JWT_SECRET:
        raise r.fail("api", "jwt_secret", f"too short: at least {_MIN_JWT_SECRET} bytes (or empty: a random key "
                                          "is generated into jwt.key beside the database)")
    d = HttpSettings()
    return HttpSettings(listen=r.str("api", "listen", "127.0.0.1"), port=r.int("api", "port", 8080, 0, 65535),
                        status_token=Secret(token) if token else None,
                        max_connections=r.int("api", "max_connections", d.max_connections, 1, 1_000_000),
                        request_timeout=r.float("api", "request_timeout", d.request_timeout, 0.001, 3600.0),
                        keepalive_timeout=r.float("api", "keepalive_timeout", d.keepalive_timeout, 0.001, 86400.0),
                        jwt_secret=Secret(jwt_secret) if jwt_secret else None,
                        jwt_lifetime=r.int("api", "jwt_lifetime", d.jwt_lifetime, 10, 7 * 86400))


def _optional_float(r: _Reader, key: str, default: float | None, lo: float, hi: float) -> float | None:
    """A number, or None for ``off``; empty keeps ``default``."""
    value = r.raw("api", key)
    if value is None or value == "":
        return default
    if value.lower() in _OFF:
        return None
    return r.float("api", key, 0.0, lo, hi)


def _paths(r: _Reader) -> tuple[str, ...]:
    value = r.raw("api", "paths")
    if not value:
        return _API_DEFAULTS.paths
    paths = tuple(p.strip() for p in value.split(",") if p.strip())
    for p in paths:
        if not p.startswith("/") or any(c.isspace() for c in p):
            raise r.fail("api", "paths", f"not an absolute URL path: {p!r}")
    if len(set(paths)) != len(paths):
        raise r.fail("api", "paths", "a path is listed twice")
    return paths


def _api_settings(r: _Reader) -> ApiSettings:
    """``[api]`` → ``ApiSettings``, every field; each bad value names its key."""
    d = _API_DEFAULTS
    tz = r.str("api", "timezone", "") or None
    if tz is not None:
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(tz)
        except Exception:
            raise r.fail("api", "timezone", f"unknown time zone {tz!r}") from None
    try:
        return ApiSettings(
            enabled=r.bool("api", "enabled", d.enabled),
            allow_get=r.bool("api", "allow_get", d.allow_get),
            disable_hash_check=r.bool("api", "disable_hash_check", d.disable_hash_check),
            accept_secret_only_hash=r.bool("api", "accept_secret_only_hash", d.accept_secret_only_hash),
            timezone=tz,
            max_param_len=r.int("api", "max_param_len", d.max_param_len, 1),
            max_params=r.int("api", "max_params", d.max_params, 1),
            max_body=r.int("api", "max_body", d.max_body, 1),
            body_timeout=r.float("api", "body_timeout", d.body_timeout, 0.001, 3600.0),
            hide_older_than_hours=_optional_float(r, "hide_older_than_hours", d.hide_older_than_hours, 0.001, 1e6),
            prerender_interval=_optional_float(r, "prerender_interval", d.prerender_interval, 0.001, 3600.0),
            paths=_paths(r),
        )
    except ValueError as exc:  # ApiSettings' own checks: a backstop, the reads above are stricter
        raise r.fail("api", "*", str(exc)) from None


# ---------------------------------------------------------------------------------------------- [refdata]
_MYSQL_KEYS = ("mysql_host", "mysql_port", "mysql_socket", "mysql_user", "mysql_password", "mysql_database",
               "refresh_interval", "mysql_tls", "mysql_tls_ca", "mysql_tls_verify")


def _parse_refdata(r: _Reader) -> RefdataSettings:
    """``[refdata]``: ``source = file`` (default; nothing else read) or ``mysql`` (the MOR sync)."""
    sec = "refdata"
    source = r.str(sec, "source", "file").lower()
    if source not in REFDATA_SOURCES:
        raise r.fail(sec, "source", f"one of {', '.join(REFDATA_SOURCES)}, got {source!r}")
    for key in _MYSQL_KEYS:  # all known whatever the source (they may stay in the file while source = file)
        r.raw(sec, key)
    if source == "file":
        return RefdataSettings()
    import importlib.util

    if importlib.util.find_spec("pymysql") is None:
        raise r.fail(sec, "source", "mysql needs PyMySQL: pip install 'mor-active-calls-collector[mysql]'")
    socket = r.str(sec, "mysql_socket", "")
    ca = r.str(sec, "mysql_tls_ca", "")
    if ca and not Path(ca).is_file():
        raise r.fail(sec, "mysql_tls_ca", f"no such file: {ca}")
    return RefdataSettings(
        source=source,
        mysql_host=r.str(sec, "mysql_host", "127.0.0.1" if socket else None),
        mysql_port=r.int(sec, "mysql_port", 3306, 1, 65535),
        mysql_socket=socket,
        mysql_user=r.str(sec, "mysql_user"),
        mysql_password=Secret(r.str(sec, "mysql_password", "")),
        mysql_database=r.str(sec, "mysql_database", "mor"),
        refresh_interval=r.float(sec, "refresh_interval", 300.0, 1.0, 86400.0),
        mysql_tls=r.bool(sec, "mysql_tls", False),
        mysql_tls_ca=ca,
        mysql_tls_verify=r.bool(sec, "mysql_tls_verify", True),
    )
# --- end [refdata] ----------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------- [history]
def _parse_history(r: _Reader) -> HistorySettings:
    """``[history]``: the concurrency history (README, "Concurrency history")."""
    d = HistorySettings()
    return HistorySettings(enabled=r.bool("history", "enabled", d.enabled),
                           retention_days=r.int("history", "retention_days", d.retention_days, 1, 3650),
                           per_user=r.bool("history", "per_user", d.per_user))


def load_settings(path: Path) -> Settings:
    """Read ``path`` plus ``conf.d/*.ini`` beside it (later files override keys of earlier ones)."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    files = [path]
    confd = path.parent / "conf.d"
    if confd.is_dir():
        files.extend(sorted(confd.glob("*.ini")))
    merged = configparser.ConfigParser(interpolation=None)
    sources: dict[tuple[str, str], str] = {}
    for f in files:
        one = configparser.ConfigParser(interpolation=None)
        try:
            text = f.read_text(encoding="utf-8")
            one.read_string(text, source=str(f))
            merged.read_string(text, source=str(f))
        except configparser.Error as exc:
            raise ConfigError(f"{f}: {str(exc).splitlines()[0]}") from None
        for section in one.sections():
            for key in one.options(section):
                sources[(section, key)] = str(f)
    lines = []
    for section in merged.sections():
        lines.append(f"[{section}]")
        for key, value in merged.items(section, raw=True):
            lines.append(f"{key} = {value}")
    settings = parse_settings("\n".join(lines), source=str(path), base_dir=path.parent, sources=sources)
    return Settings(path=path, collector=settings.collector, api=settings.api,
                    database=settings.database, servers=settings.servers, http=settings.http,
                    refdata=settings.refdata, history=settings.history,
                    hangup=settings.hangup)
