"""Composition root: builds every long-lived object once and wires them; nothing else constructs them.

Start order (so systemd's READY=1 means "answering"): config → reference data → durable table restore
→ HTTP socket bound → READY=1 → AMI sessions connect in the background (a server that is down shows as
not ready in /readyz, it does not block start-up). SIGTERM/SIGINT stop gracefully (HTTP closed, AMI
Logoff, table flushed); SIGHUP reloads reference data and the log level without touching calls.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import signal
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from aiohttp import web

from api.app import ApiDeps, create_app
from api.changes import ChangeHub
from api.httpserver import ConnectionGuard, GuardedTCPSite
from api.tokens import TokenIssuer
from collector import __version__
from collector.ami.framing import ACCELERATED
from collector.ami.protocol import MessageBatch
from collector.ami.session import AmiSession
from collector.live.durable import DurableTable
from collector.live.enrich import Enricher
from collector.live.history import HistorySampler
from collector.live.historydb import HistoryRecorder, HistoryStore
from collector.live.table import LiveTable
from collector.refdata.index import RefIndex
from collector.refdata.local_passwords import LocalPasswords
from collector.refdata.store import load_refdata, open_db
from collector.service.config import ConfigError, Settings, load_settings
from collector.service.hangup import PacedHangups
from collector.service.jwtkey import KEY_FILE, load_or_create_key
from collector.service.logsetup import add_secrets, set_level
from collector.service.loopguard import AcceptErrorFilter
from collector.service.ops import add_ops_routes
from collector.service.refsync import RefdataSync
from collector.service.sdnotify import Notifier
from collector.tracking.tracker import TRACKED_EVENTS, TRACKER_KEYS, CallTracker

__all__ = ["Daemon", "run_daemon"]

log = logging.getLogger(__name__)

#: Cyclic-GC thresholds for the daemon process. CPython's default (700, 10, 10) collects generation 0 after
#: every 700 net new containers: while 10,000 calls build up that is every few hundred AMI messages, and the
#: collections cost ~8 % of ingest (bench/ingest.py). Nearly all of the collector's garbage is freed by
#: reference counting; the cyclic collector only finds asyncio's occasional cycles, so rarer runs lose nothing.
GC_THRESHOLDS = (50_000, 20, 10)

#: Descriptors the daemon needs besides HTTP connections (AMI sessions, SQLite, logs, the loop): the start-up
#: check warns when RLIMIT_NOFILE < max_connections + this.
_FD_RESERVE = 64


def tune_gc() -> None:
    """Apply ``GC_THRESHOLDS`` (the daemon does it at start; the ingest benchmark does it in every worker)."""
    gc.set_threshold(*GC_THRESHOLDS)


@dataclass
class Daemon:
    settings: Settings
    notifier: Notifier = field(default_factory=Notifier)
    tracker: CallTracker = field(default_factory=CallTracker)
    live: LiveTable = field(default_factory=LiveTable)
    sessions: list[AmiSession] = field(default_factory=list)
    refs: RefIndex | None = None
    tokens: TokenIssuer | None = None  # v2 Bearer tokens; None → the v2 routes answer 401
    hangups: PacedHangups | None = None  # the v2 DELETE routes' executor (built at start)
    durable: DurableTable | None = None
    started_at: float = field(default_factory=time.time)
    port: int = 0
    reloads: int = 0
    log_level: str = ""  # the level in force (config at start, then whatever the last reload set)
    _runner: web.AppRunner | None = None
    http_guard: ConnectionGuard | None = None  # max_connections, request_timeout
    accept_errors: AcceptErrorFilter | None = None  # EMFILE on accept → one line per 10 s
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _ready: bool = False  # READY=1 sent
    _reload_task: asyncio.Future[None] | None = None
    refsync: RefdataSync | None = None  # [refdata] source = mysql
    _refresh_task: asyncio.Future[None] | None = None  # a periodic MOR sync + swap in progress
    # ---- servers unreachable for longer than stale_after (check_stale, driven by _stale_loop)
    clock: Callable[[], float] = time.monotonic
    stale_removed: dict[int, int] = field(default_factory=dict)  # server_id -> calls removed as stale
    _down_since: dict[int, float] = field(default_factory=dict)
    _stale: set[int] = field(default_factory=set)  # servers whose calls are out of the table now
    # ---- concurrency history ([history]): sampled from the live table's changes, Unix time
    history: HistoryRecorder | None = None
    history_clock: Callable[[], float] = time.time  # tests inject one to cross bucket boundaries
    history_tick: float = 1.0  # s between timer ticks: a closed bucket is stored within about this

    # ------------------------------------------------------------------ reference data
    def load_reference(self) -> tuple[RefIndex, Enricher]:
        """Read and index reference data: pure CPU and file work, run in a thread on reload."""
        open_db(self.settings.database).close()  # create / migrate the schema
        index = RefIndex.build(load_refdata(self.settings.database))
        return index, Enricher(index)

    def apply_reference(self, index: RefIndex, enricher: Enricher) -> int:
        self.refs = index
        add_secrets(u.api_secret_key for u in index.data.users)  # never printed, whatever logs them
        changed = self.live.set_enricher(enricher.enrich)
        if self.history is not None:
            self.history.sampler.set_resellers(_resellers(index), self.live.rows())
        return changed

    def reload(self) -> None:
        """SIGHUP: new reference data (and log level) in, calls and connections untouched. Loading
        runs in a worker thread: 100,000 destinations take ~0.4 s, long enough for Asterisk to drop a
        reader that stops reading (writetimeout)."""
        if self._reload_task is not None and not self._reload_task.done():
            log.warning("SIGHUP ignored: a reload is already running")
            return
        self._reload_task = asyncio.ensure_future(self._reload())

    async def _reload(self) -> None:
        self.notifier.notify(reloading=1, status="reloading reference data")
        try:
            if self.settings.path is not None:
                new = load_settings(self.settings.path)
                add_secrets([str(srv.secret) for srv in new.servers] + [str(new.http.status_token or "")])
                current = self.log_level or self.settings.collector.log_level
                if new.collector.log_level != current:
                    set_level(new.collector.log_level)
                    self.log_level = new.collector.log_level
                    log.info("reload log_level=%s", new.collector.log_level)
                if self.hangups is not None and new.hangup != self.hangups.settings:
                    self.hangups.reconfigure(new.hangup)  # e.g. hang-up switched off at once
                    log.info("reload hangup enabled=%s users_may_hang_up=%s rate_per_server=%g confirm_timeout=%g",
                             new.hangup.enabled, new.hangup.users_may_hang_up, new.hangup.rate_per_server,
                             new.hangup.confirm_timeout)
                if self.refsync is not None and new.refdata.mysql:
                    self.refsync.settings = new.refdata
                    add_secrets([str(new.refdata.mysql_password)])
                enabled = {srv.server_id for srv in new.servers if srv.enabled}
                for session in [x for x in self.sessions if x.server_id not in enabled]:
                    self.sessions.remove(session)  # removed or disabled: its calls go, it is not followed any more
                    await session.stop()
                self.drop_unconfigured(enabled)
            if self._refresh_task is not None and not self._refresh_task.done():  # one at a time
                await asyncio.wait([self._refresh_task])
            if self.refsync is not None:  # MOR → SQLite first (a failure keeps the last data)
                await self.refsync.sync()
            old = self.refs
            index, enricher = await asyncio.to_thread(self.load_reference)
            changed = self.apply_reference(index, enricher)
            self.reloads += 1
            log.info("reload done users=%d devices=%d providers=%d dids=%d destinations=%d calls_changed=%d%s",
                     len(index.data.users), len(index.data.devices), len(index.data.providers),
                     len(index.data.dids), len(index.data.destinations), changed,
                     "" if old is None else f" (before: devices={len(old.data.devices)} "
                                            f"destinations={len(old.data.destinations)})")
        except ConfigError as exc:
            log.error("reload rejected, keeping the running configuration: %s", exc)
        except Exception:
            log.exception("reload failed, keeping the previous reference data")
        finally:
            self.notifier.notify(ready=1, status=self.status_line())

    # ------------------------------------------------------------------ events
    def on_batch(self, server_id: int, batch: MessageBatch) -> None:
        """The sessions' ``BatchSink``: one read slice of one server → tracker → live table."""
        changes = self.tracker.apply_many(server_id, batch)
        if changes:
            self.live.apply(changes)

    def session_for(self, server_id: int) -> AmiSession | None:
        """The AMI session of a server (hang-ups go there), None when the server is not configured."""
        return next((x for x in self.sessions if x.server_id == server_id), None)

    # ------------------------------------------------------------------ unreachable / unconfigured servers
    def disconnected(self) -> Collection[int]:
        """Server ids whose session is down now (JSON rows say ``stale: true``)."""
        return frozenset(s.server_id for s in self.sessions if not s.status.logged_in)

    def check_stale(self, now: float | None = None) -> int:
        """Drop the calls of every server disconnected for longer than ``stale_after`` (once per outage; the
        tracker keeps their answer times for the resync after the reconnect). Returns the calls removed."""
        limit = self.settings.collector.stale_after
        now = self.clock() if now is None else now
        removed = 0
        for s in self.sessions:
            sid = s.server_id
            if s.status.logged_in:
                self._down_since.pop(sid, None)
                self._stale.discard(sid)
                continue
            since = self._down_since.setdefault(sid, now)  # at start: restored calls are served that long
            if sid in self._stale or now - since < limit:
                continue
            self._stale.add(sid)
            changes = self.tracker.drop_server(sid)
            if changes:
                self.live.apply(changes)
            n = sum(1 for c in changes if c.kind == "removed")
            self.stale_removed[sid] = self.stale_removed.get(sid, 0) + n
            removed += n
            log.warning("ami server unreachable for %.0fs server=%s server_id=%d calls_removed=%d (they come "
                        "back with the resync after it reconnects)", now - since, s.status.name, sid, n)
        return removed

    def drop_unconfigured(self, enabled: Collection[int]) -> set[int]:
        """Drop the calls of servers not enabled in the configuration (at start, and on SIGHUP); return the
        server ids that had a session or calls and are no longer enabled."""
        gone = ({s.server_id for s in self.sessions} | {r.call.server_id for r in self.live.rows()}) - set(enabled)
        for sid in sorted(gone):
            changes = self.tracker.drop_server(sid, park=False)
            if changes:
                self.live.apply(changes)
            self._down_since.pop(sid, None)
            self._stale.discard(sid)
            log.info("server_id=%d disabled or not configured: calls_removed=%d", sid,
                     sum(1 for c in changes if c.kind == "removed"))
        return gone

    async def _stale_loop(self) -> None:
        period = min(1.0, self.settings.collector.stale_after / 4)
        while True:
            self.check_stale()
            await asyncio.sleep(period)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        s = self.settings
        tune_gc()
        self.tracker.set_max_channels(s.collector.max_channels)  # per-server channel bound
        self.log_level = s.collector.log_level
        add_secrets([str(srv.secret) for srv in s.servers] + [str(s.http.status_token or "")])
        self.settings.database.parent.mkdir(parents=True, exist_ok=True)
        if s.refdata.mysql:  # sync at start; MySQL down → serve the last good SQLite data
            add_secrets([str(s.refdata.mysql_password)])
            self.refsync = RefdataSync(s.refdata, s.database)
            await self.refsync.sync()
        self.apply_reference(*self.load_reference())
        self.durable = DurableTable(s.database, self.live)
        restored = self.durable.load()
        if restored:
            self.live.restore(restored)
            self.live.apply(self.tracker.restore(r.call for r in restored))
            self.live.dirty.clear()
            log.info("restored calls=%d from activecalls; first resync of each server keeps the live ones",
                     len(restored))
        enabled = [srv for srv in s.servers if srv.enabled]
        self.drop_unconfigured({srv.server_id for srv in enabled})  # after dirty.clear(): activecalls follows
        if s.history.enabled:
            self._start_history()
        for i, srv in enumerate(enabled):
            # the session is told what the tracker handles and reads: the AMI layer knows nothing of the tracker
            self.sessions.append(AmiSession(srv, s.collector, self.on_batch, events=TRACKED_EVENTS, keys=TRACKER_KEYS,
                                            stagger=i / max(1, len(enabled))))
        if self.tokens is None:  # tests may preset one
            self.tokens = self.token_issuer()
        self.hangups = PacedHangups(s.hangup, self.live, self.session_for)
        deps = ApiDeps(rows=self.live.rows, refs=self._refs, settings=s.api, clock=time.time,
                       changes=ChangeHub.following(self.live), disconnected=self.disconnected,
                       tokens=self.tokens, passwords=LocalPasswords(s.database).get,
                       history=self._history_points if self.history is not None else None,
                       may_hang_up=self.hangups.may_hang_up, hangup_policy=self.hangups.current_policy,
                       hangups=self.hangups)
        app = create_app(deps)
        add_ops_routes(app, self, token=str(s.http.status_token) if s.http.status_token else None)
        self.accept_errors = AcceptErrorFilter(asyncio.get_running_loop()).install()
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=2.0,
                                     keepalive_timeout=s.http.keepalive_timeout)
        await self._runner.setup()
        assert self._runner.server is not None
        self.http_guard = ConnectionGuard(self._runner.server, max_connections=s.http.max_connections,
                                          request_timeout=s.http.request_timeout)
        site = GuardedTCPSite(self._runner, s.http.listen, s.http.port, self.http_guard)
        await site.start()
        self.port = site.port
        self._check_nofile()
        log.info("api listening address=%s port=%d version=%s ami_decoder=%s", s.http.listen, self.port, __version__,
                 "c" if ACCELERATED else "python (collector.ami._fast not built: see README, Install)")
        for session in self.sessions:
            await session.start()
        self._tasks.append(asyncio.create_task(self.durable.run(s.collector.flush_interval), name="durable"))
        if self.history is not None:
            self._tasks.append(asyncio.create_task(self.history.run(self.history_tick), name="history"))
        interval = Notifier.watchdog_interval()
        if interval and s.collector.watchdog:
            self._tasks.append(asyncio.create_task(self._watchdog(interval), name="watchdog"))
        self._tasks.append(asyncio.create_task(self._status_loop(), name="sd-status"))
        if self.refsync is not None:
            self._tasks.append(asyncio.create_task(self._refsync_loop(), name="refdata-sync"))
        self._tasks.append(asyncio.create_task(self._stale_loop(), name="stale"))
        self.notifier.notify(ready=1, status=self.status_line(), mainpid=os.getpid())
        self._ready = True

    def token_issuer(self) -> TokenIssuer:
        """From ``[api] jwt_secret``, or the key kept in ``jwt.key`` in the state directory (the database's
        directory), generated there the first time. ``KeyFileError`` (start refused) for an unsafe file."""
        http = self.settings.http
        if http.jwt_secret:
            add_secrets([str(http.jwt_secret)])
            key = str(http.jwt_secret).encode("utf-8")
        else:
            key = load_or_create_key(self.settings.database.parent / KEY_FILE)
        return TokenIssuer(key, http.jwt_lifetime)

    def _start_history(self) -> None:
        """The sampler counts the calls already in the table (restored) and then every change."""
        h = self.settings.history
        sampler = HistorySampler(self.history_clock, per_user=h.per_user,
                                 resellers=_resellers(self.refs) if self.refs is not None else ())
        sampler.seed(self.live.rows())
        self.live.subscribe(sampler.on_change)
        self.history = HistoryRecorder(sampler, HistoryStore(self.settings.database),
                                       retention_days=h.retention_days, clock=self.history_clock)

    async def _history_points(self, series: str, start: int, end: int) -> list[tuple[int, int, int]] | None:
        """``ApiDeps.history``: None for a user series when ``per_user`` is off (never recorded)."""
        assert self.history is not None
        if series.startswith("user:") and not self.settings.history.per_user:
            return None
        return await self.history.query(series, start, end)

    def _check_nofile(self) -> None:
        """A warning when max_connections cannot be reached before the descriptor limit (EMFILE first)."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = self.settings.http.max_connections + _FD_RESERVE
        if soft != resource.RLIM_INFINITY and soft < need:
            log.warning("api max_connections=%d needs about %d descriptors but RLIMIT_NOFILE=%d: past the limit "
                        "new connections wait (accept EMFILE); raise LimitNOFILE= or lower max_connections",
                        self.settings.http.max_connections, need, soft)

    def _refs(self) -> RefIndex:
        assert self.refs is not None
        return self.refs

    async def stop(self) -> None:
        self.notifier.notify(stopping=1, status="stopping")
        log.info("stopping")
        if self._reload_task is not None:
            await asyncio.wait([self._reload_task], timeout=5.0)
        if self._runner is not None:
            await self._runner.cleanup()
        if self.http_guard is not None:
            self.http_guard.close()
        if self.accept_errors is not None:
            self.accept_errors.uninstall()
        await asyncio.gather(*(s.stop() for s in self.sessions), return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.refsync is not None:  # the sync worker process
            await asyncio.to_thread(self.refsync.close)
        if self.durable is not None:
            n = self.durable.flush_sync()
            self.durable.close()
            log.info("activecalls flushed rows=%d calls=%d", n, len(self.live))
        if self.history is not None:
            try:
                n = self.history.flush_sync()
                log.info("active_calls_data flushed rows=%d (open bucket included)", n)
            except Exception:
                log.exception("active_calls_data final write failed")
            self.history.close()
            self.history.store.close()
        self.notifier.close()

    def request_stop(self) -> None:
        self._stop.set()

    def on_sighup(self) -> None:
        """SIGHUP: reload, but only between READY=1 and STOPPING=1 (never a RELOADING=1 outside them)."""
        if not self._ready or self._stop.is_set():
            log.info("SIGHUP ignored while %s", "starting" if not self._ready else "stopping")
            return
        self.reload()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.notify(watchdog=1)
            await asyncio.sleep(interval)

    async def _status_loop(self) -> None:
        """STATUS= whenever the line changes (checked every second), so `systemctl status` follows drops."""
        last = ""  # the first tick re-sends what READY=1 carried if nothing changed; cheap and simple
        while True:
            await asyncio.sleep(1.0)
            line = self.status_line()
            if line != last:
                self.notifier.notify(status=line)
                last = line

    # ------------------------------------------------------------------ MOR MySQL sync
    async def _refsync_loop(self) -> None:
        """Every refresh_interval (sooner after a failure): sync, and swap the index only if MOR changed.
        A SIGHUP reload in progress already syncs, so this tick is skipped."""
        assert self.refsync is not None
        while True:
            await asyncio.sleep(self.refsync.next_delay())
            if self._reload_task is not None and not self._reload_task.done():
                continue
            self._refresh_task = asyncio.ensure_future(self._refresh_refdata())
            await asyncio.wait([self._refresh_task])

    async def _refresh_refdata(self) -> None:
        assert self.refsync is not None
        try:
            report = await self.refsync.sync()
            if report.ok and report.changed:
                index, enricher = await asyncio.to_thread(self.load_reference)
                changed = self.apply_reference(index, enricher)
                log.info("refdata swapped users=%d devices=%d dids=%d destinations=%d calls_changed=%d",
                         len(index.data.users), len(index.data.devices), len(index.data.dids),
                         len(index.data.destinations), changed)
        except Exception:
            log.exception("refdata refresh failed, keeping the previous reference data")

    def status_line(self) -> str:
        up = sum(1 for s in self.sessions if s.status.logged_in)
        return f"{up}/{len(self.sessions)} AMI up, {len(self.live)} calls"

    def ready(self) -> tuple[bool, str]:
        if self.refs is None:
            return False, "reference data not loaded"
        if self.refsync is not None and (why := self.refsync.not_ready(self.refs)):
            return False, why
        up = sum(1 for s in self.sessions if s.status.logged_in)
        if not self.sessions:
            return False, "no enabled AMI server"
        if self.settings.collector.require_all_servers:
            return (up == len(self.sessions)), f"{up}/{len(self.sessions)} AMI servers connected"
        return (up >= 1), f"{up}/{len(self.sessions)} AMI servers connected"


def _resellers(index: RefIndex) -> frozenset[int]:
    """Users whose role is reseller (``api.auth.Role.of``: exactly usertype ``reseller``)."""
    return frozenset(u.id for u in index.data.users if u.usertype == "reseller")


async def run_daemon(settings: Settings, started: asyncio.Future[Daemon] | None = None) -> int:
    daemon = Daemon(settings)
    loop = asyncio.get_running_loop()
    # before start(): a SIGTERM while the database loads must stop cleanly, and SIGHUP's default action
    # (terminate the process) must never apply
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, daemon.request_stop)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        loop.add_signal_handler(signal.SIGHUP, daemon.on_sighup)
    except (NotImplementedError, RuntimeError):
        pass
    try:
        try:
            await daemon.start()
        except Exception as exc:
            log.error("start failed: %s", exc)
            await daemon.stop()
            if started is not None and not started.done():
                started.set_exception(exc)
            return 2 if isinstance(exc, ConfigError) else 1  # 2: a restart cannot fix it (the unit's rule)
        if started is not None and not started.done():
            started.set_result(daemon)
        try:
            await daemon.wait_stopped()
        finally:
            await daemon.stop()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
    log.info("stopped")
    return 0
