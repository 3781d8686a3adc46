"""Operations endpoints: ``/healthz``, ``/readyz``, ``/status`` (JSON) and ``/metrics`` (Prometheus).

They need no MOR hash. Keep them private by the bind address (127.0.0.1 by default) or set
``[api] status_token``: then ``/status`` and ``/metrics`` want ``?token=`` or ``Authorization: Bearer``.
Gauges are computed from the live table at scrape time (never +1/−1 counters, which drift); counters
come from the sessions' and tracker's own tallies. One registry per app: no global metric state.

Metrics (prefix ``collector_``): ``active_calls{server,status}``, ``ami_connected{server}``,
``ami_last_event_age_seconds{server}``, ``ami_events_total{server}``, ``ami_reconnects_total{server}``,
``ami_auth_failures_total{server}``, ``resyncs_total{server}``, ``reconcile_corrections_total{server,kind}``,
``stale_calls_removed_total{server}``,
``ready`` (1 when ``/readyz`` is 200), ``reloads_total``, ``build_info{version,ami_decoder}``,
``api_requests_total{endpoint,code}``, ``api_request_duration_seconds{endpoint}``,
``http_connections``, ``http_connections_refused_total``, ``http_request_timeouts_total``,
``http_accept_errors_total``, ``hangups_total{result}``.
A 401 carries ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import hmac
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from collector import __version__
from collector.ami.framing import ACCELERATED
from collector.live.historydb import HistoryRecorder
from collector.service.refsync import refdata_metrics, refdata_status

#: Which AMI decoder runs: "c" (collector/ami/_fast.c, built at install) or "python" (exact, about half
#: the ingest speed).
AMI_DECODER = "c" if ACCELERATED else "python"

__all__ = ["add_ops_routes"]

PREFIX = "collector"


class DaemonView(Protocol):
    """What the ops endpoints read from the daemon (kept narrow so tests can pass a stand-in)."""

    @property
    def sessions(self) -> Sequence[Any]: ...

    tracker: Any
    live: Any
    started_at: float
    reloads: int

    def ready(self) -> tuple[bool, str]: ...


class _StateCollector:
    def __init__(self, daemon: DaemonView) -> None:
        self.d = daemon

    def collect(self) -> Iterator[Any]:
        d = self.d
        active = GaugeMetricFamily(f"{PREFIX}_active_calls", "Calls up now", labels=["server", "status"])
        counts: Counter[tuple[str, str]] = Counter()
        names = {s.server_id: s.status.name for s in d.sessions}
        for row in d.live.rows():
            counts[(names.get(row.call.server_id, str(row.call.server_id)), row.call.status.value)] += 1
        for s in d.sessions:
            for st in ("Ringing", "Answered"):
                counts.setdefault((s.status.name, st), 0)
        for (server, st), n in sorted(counts.items()):
            active.add_metric([server, st], n)
        yield active
        connected = GaugeMetricFamily(f"{PREFIX}_ami_connected", "1 when logged in to the server", labels=["server"])
        age = GaugeMetricFamily(f"{PREFIX}_ami_last_event_age_seconds", "Seconds since the last AMI message",
                                labels=["server"])
        events = CounterMetricFamily(f"{PREFIX}_ami_events", "AMI messages received", labels=["server"])
        lag = GaugeMetricFamily(f"{PREFIX}_ami_lag_seconds", "How far the AMI reader is behind the event "
                                "Timestamps: median of the last 64 reads, above the connection's lowest",
                                labels=["server"])
        reconnects = CounterMetricFamily(f"{PREFIX}_ami_reconnects", "AMI connections lost", labels=["server"])
        auth = CounterMetricFamily(f"{PREFIX}_ami_auth_failures", "AMI logins refused", labels=["server"])
        resyncs = CounterMetricFamily(f"{PREFIX}_resyncs", "CoreShowChannels resyncs completed", labels=["server"])
        corrections = CounterMetricFamily(f"{PREFIX}_reconcile_corrections",
                                          "Channels a resync added or removed", labels=["server", "kind"])
        timeouts = CounterMetricFamily(f"{PREFIX}_ami_timeouts", "AMI session steps that expired "
                                       "(connect, banner, login, ping, resync, filter, events)",
                                       labels=["server", "step"])
        degraded = GaugeMetricFamily(f"{PREFIX}_ami_degraded", "1 while a server is past a bound "
                                     "(max_channels, max_resync_entries) and its excess is refused", labels=["server"])
        refused = CounterMetricFamily(f"{PREFIX}_channels_refused", "New channels refused at max_channels",
                                      labels=["server"])
        now = time.time()
        for s in d.sessions:
            st = s.status
            for step, n in sorted(st.timeouts.items()):
                timeouts.add_metric([st.name, step], n)
            degraded.add_metric([st.name], 1 if degraded_reason(d, s) else 0)
            refused.add_metric([st.name], d.tracker.stats(s.server_id).refused)
            connected.add_metric([st.name], 1 if st.logged_in else 0)
            if st.last_event_at is not None:
                age.add_metric([st.name], max(0.0, now - st.last_event_at))
            events.add_metric([st.name], st.events)
            lag.add_metric([st.name], getattr(s, "lag_seconds", 0.0))
            reconnects.add_metric([st.name], st.reconnects)
            auth.add_metric([st.name], st.auth_failures)
            resyncs.add_metric([st.name], st.resyncs)
            ts = d.tracker.stats(s.server_id)
            corrections.add_metric([st.name, "added"], ts.resync_added)
            corrections.add_metric([st.name, "removed"], ts.resync_removed)
        stale = CounterMetricFamily(f"{PREFIX}_stale_calls_removed", "Calls removed because their server "
                                    "stayed disconnected longer than stale_after", labels=["server"])
        removed = getattr(d, "stale_removed", {})
        for s in d.sessions:
            stale.add_metric([s.status.name], removed.get(s.server_id, 0))
        yield from (connected, age, events, lag, reconnects, auth, resyncs, corrections, stale, timeouts, degraded,
                    refused)
        ok, _why = d.ready()
        ready = GaugeMetricFamily(f"{PREFIX}_ready", "1 when /readyz answers 200 (reference data loaded, "
                                  "enough AMI servers logged in)")
        ready.add_metric([], 1 if ok else 0)
        yield ready
        yield CounterMetricFamily(f"{PREFIX}_reloads", "Reference data reloads (SIGHUP) completed",
                                  value=d.reloads)
        yield from refdata_metrics(getattr(d, "refsync", None))
        yield from _http_metrics(d)
        hangups = getattr(d, "hangups", None)  # the v2 DELETE routes' executor (collector/service/hangup.py)
        if hangups is not None:
            total = CounterMetricFamily(f"{PREFIX}_hangups", "Hang-up requests by result (one per call attempted "
                                        "or refused)", labels=["result"])
            for result, n in sorted(hangups.counts.items()):
                total.add_metric([result], n)
            yield total
        info = InfoMetricFamily(f"{PREFIX}_build", "Build information")
        info.add_metric([], {"version": __version__, "ami_decoder": AMI_DECODER})
        yield info


def http_status(d: DaemonView) -> dict[str, int]:
    """The HTTP server's bounds: open connections, what was refused or cut."""
    guard, accept = getattr(d, "http_guard", None), getattr(d, "accept_errors", None)
    return {"connections": guard.active if guard is not None else 0,
            "max_connections": guard.max_connections if guard is not None else 0,
            "refused": guard.refused.total if guard is not None else 0,
            "header_timeouts": guard.header_timeouts.total if guard is not None else 0,
            "accept_errors": accept.count if accept is not None else 0}


def _http_metrics(d: DaemonView) -> Iterator[Any]:
    st = http_status(d)
    yield GaugeMetricFamily(f"{PREFIX}_http_connections", "HTTP connections open now", value=st["connections"])
    yield CounterMetricFamily(f"{PREFIX}_http_connections_refused", "HTTP connections refused at "
                              "[api] max_connections (503, closed at once)", value=st["refused"])
    yield CounterMetricFamily(f"{PREFIX}_http_request_timeouts", "HTTP connections closed because their "
                              "request headers did not arrive within [api] request_timeout",
                              value=st["header_timeouts"])
    yield CounterMetricFamily(f"{PREFIX}_http_accept_errors", "accept() failures for lack of descriptors "
                              "or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM)", value=st["accept_errors"])


def degraded_reason(d: DaemonView, s: Any) -> str:
    """Why a server is degraded ("" when within bounds): the session's (resync size) or the tracker's."""
    if d.tracker.stats(s.server_id).limited:
        return f"channels at max_channels={getattr(d.tracker, 'max_channels', '?')}: new channels refused"
    return str(s.status.degraded)


def _authorized(request: web.Request, token: str | None) -> bool:
    if not token:
        return True
    given = request.query.get("token", "")
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        given = credentials.strip()
    return hmac.compare_digest(given.encode(), token.encode())


#: RFC 6750: a 401 names the scheme it wants.
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="collector"'}


def history_status(recorder: HistoryRecorder | None) -> dict[str, object] | None:
    """``/status`` ``history``: None when ``[history] enabled = no``; else what the writer has done and owes."""
    if recorder is None:
        return None
    sampler = recorder.sampler
    return {"open_bucket": sampler.open_bucket, "pending_rows": recorder.unwritten,
            "rows_written": recorder.store.rows_written, "rows_pruned": recorder.store.rows_pruned,
            "write_failures": recorder.write_failures, "dropped_rows": sampler.dropped_rows,
            "skipped_buckets": sampler.skipped_buckets}


def add_ops_routes(app: web.Application, daemon: DaemonView, token: str | None = None) -> None:
    registry = CollectorRegistry()
    registry.register(_StateCollector(daemon))
    requests = PromCounter(f"{PREFIX}_api_requests", "HTTP requests", ["endpoint", "code"], registry=registry)
    duration = Histogram(f"{PREFIX}_api_request_duration_seconds", "HTTP request duration", ["endpoint"],
                         registry=registry,
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))

    @web.middleware
    async def measure(request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        started = time.perf_counter()
        route = request.match_info.route.resource
        endpoint = route.canonical if route is not None else "other"
        code = 500
        try:
            resp = await handler(request)
            code = resp.status
            return resp
        except web.HTTPException as exc:
            code = exc.status
            raise
        finally:
            requests.labels(endpoint, str(code)).inc()
            duration.labels(endpoint).observe(time.perf_counter() - started)

    app.middlewares.insert(0, measure)

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        ok, why = daemon.ready()
        return web.json_response({"ready": ok, "reason": why}, status=200 if ok else 503)

    async def status(request: web.Request) -> web.Response:
        if not _authorized(request, token):
            return web.json_response({"error": "token required"}, status=401, headers=_CHALLENGE)
        now = time.time()
        servers = []
        per_server = Counter(row.call.server_id for row in daemon.live.rows())
        for s in daemon.sessions:
            st = s.status
            servers.append({
                "name": st.name, "server_id": st.server_id, "host": st.host, "port": st.port,
                "status": "ok" if st.logged_in else "fail",
                "connected": st.logged_in, "since": st.since,
                "last_event_age": None if st.last_event_at is None else round(now - st.last_event_at, 3),
                "last_resync_at": st.last_resync_at, "last_resync_result": st.last_resync_result,
                "last_resync_seconds": st.last_resync_seconds, "reconnects": st.reconnects,
                "auth_failures": st.auth_failures, "pong_timeouts": st.pong_timeouts, "events": st.events,
                "calls": per_server.get(s.server_id, 0), "last_error": st.last_error,
                "lag_seconds": round(getattr(s, "lag_seconds", 0.0), 3),
                "timeouts": dict(st.timeouts), "degraded": degraded_reason(daemon, s), "tls": st.tls,
                "channels_refused": daemon.tracker.stats(s.server_id).refused,
            })
        ok, why = daemon.ready()
        rows = daemon.live.rows()
        return web.json_response({
            "status": "ok" if ok else "fail", "reason": why, "version": __version__, "ami_decoder": AMI_DECODER,
            "uptime": round(now - daemon.started_at, 3), "reloads": daemon.reloads,
            "calls": {"total": len(rows),
                      "answered": sum(1 for r in rows if r.call.status.value == "Answered")},
            "servers": servers,
            "refdata": refdata_status(getattr(daemon, "refsync", None), getattr(daemon, "refs", None)),  # #15
            "http": http_status(daemon),
            "history": history_status(getattr(daemon, "history", None)),
        })

    async def metrics(request: web.Request) -> web.Response:
        if not _authorized(request, token):
            return web.Response(status=401, text="token required\n", headers=_CHALLENGE)
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
