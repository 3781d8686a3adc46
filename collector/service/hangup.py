"""Hanging calls up on their Asterisk: AMI ``Hangup``, paced per server, confirmed by the live table.

Why it is built so:

* **Confirmed, not fire-and-forget.** Asterisk's ``Success`` only means a soft hangup was requested. The
  answer waits until the call has left the live table (a ``removed`` from ``LiveTable.subscribe``, awaited
  as a future registered *before* the action is sent, since the reply and the Hangup events arrive in the
  same read), bounded by ``confirm_timeout``: ``hung_up``, else ``not_confirmed``.
* **Which channel.** The call's caller channel while that leg is up (Asterisk then ends its bridged peer or
  the legs it dials); once the caller left (e.g. after a transfer), every remaining channel of the call.
* **"No such channel".** The channel vanished between our look and Asterisk's: if the call then leaves the
  table within ``confirm_timeout`` it ended by itself — ``gone`` (the client sees 404 ``Active call not
  found``, as for any call that no longer exists); if it stays, ``ami_error`` (409).
* **Paced.** Each server has a token bucket (capacity one token, ``rate_per_server`` tokens/s) and at most
  one Hangup out at a time: the next token is due 1/rate after Asterisk answered the previous action, so a
  bulk DELETE of thousands of calls reaches each Asterisk never faster than that, and a slow Asterisk slows
  us down. Servers are worked in parallel. At most ``MAX_BULK`` bulk requests run at once (more: 429), at
  most ``MAX_PENDING`` single hang-ups are under way (more: 429).
* **A disconnected server** is answered ``server_down`` at once, nothing queued or sent.

Every attempt is one INFO line on logger ``collector.audit`` (who, role, call id, uniqueid, channel, server,
result, latency_ms) and one count in ``counts`` (``collector_hangups_total{result}``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from api.auth import Principal
from api.hangup_policy import CALL_NOT_FOUND, HangupBusy, HangupOutcome, HangupPolicy, HangupResult
from collector.ami.session import AmiSession
from collector.live.table import LiveCall, LiveTable
from collector.tracking.calls import CallView

__all__ = ["AUDIT_LOGGER", "HangupSettings", "MAX_BULK", "MAX_PENDING", "PacedHangups", "TokenBucket",
           "hangup_channels"]

AUDIT_LOGGER = "collector.audit"
audit = logging.getLogger(AUDIT_LOGGER)

MAX_BULK = 2  # bulk DELETEs running at once; a third is answered 429
MAX_PENDING = 1000  # single hang-ups waiting for a token or a confirmation; past it 429
SERVER_DOWN = "Server not connected"
BUSY = "Too many hang-ups in progress, try again later"
NO_SUCH_CHANNEL = "No such channel"  # Asterisk's Error text for a channel that is not (or no longer) there
CANCELLED = "cancelled"  # audit/metric label of an attempt whose request went away mid-way


@dataclass(frozen=True, slots=True)
class HangupSettings:
    """``[hangup]``: off by default (the AMI user would act on calls: an operator's decision)."""

    enabled: bool = False
    users_may_hang_up: bool = False
    rate_per_server: float = 20.0  # Hangup actions per second per server
    confirm_timeout: float = 5.0  # s for one call: a turn at its server (singles), the answer, the call gone

    def __post_init__(self) -> None:
        if self.rate_per_server <= 0 or self.confirm_timeout <= 0:
            raise ValueError("rate_per_server and confirm_timeout must be positive")

    def policy(self) -> HangupPolicy:
        return HangupPolicy(enabled=self.enabled, users_may_hang_up=self.users_may_hang_up)


class TokenBucket:
    """A server's token bucket: at most one token, refilled at ``rate`` per second, and at most one action
    out at a time. ``acquire`` waits for the turn (a FIFO lock: first come, first served) and then for the
    token (sleeping exactly until it is due: no polling); the holder writes its action and calls
    ``release`` once Asterisk answered it. The next token is due ``1/rate`` after that release, so two
    actions are never written closer than ``1/rate`` apart, whatever the loop's stalls, and a slow Asterisk
    slows the hang-ups down instead of piling them up."""

    __slots__ = ("interval", "_next", "_lock")

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._next = 0.0  # loop time the next token is due
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        await self._lock.acquire()
        try:
            delay = self._next - asyncio.get_running_loop().time()
            if delay > 0:
                await asyncio.sleep(delay)
        except BaseException:
            self._lock.release()
            raise

    def release(self) -> None:
        self._next = asyncio.get_running_loop().time() + self.interval
        self._lock.release()


def hangup_channels(call: CallView) -> list[str]:
    """The caller channel while the caller leg is up, else every remaining channel of the call."""
    if not call.legs or any(leg.uniqueid == call.uniqueid for leg in call.legs):
        return [call.channel]
    return [leg.channel for leg in call.legs]


@dataclass(eq=False, slots=True)
class _Watch:
    """One attempt's view of its call: the latest row, resolved with the wall time once it is removed."""

    row: LiveCall
    gone: asyncio.Future[float]
    changed: asyncio.Event


class PacedHangups:
    """The daemon's ``api.hangup_policy.HangupExecutor``. ``session_for(server_id)`` finds the AMI session
    of a server (None when not configured); ``clock`` is the wall clock of ``HangupOutcome.at``."""

    def __init__(self, settings: HangupSettings, live: LiveTable,
                 session_for: Callable[[int], AmiSession | None], clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.policy = settings.policy()
        self._live = live
        self._session_for = session_for
        self._clock = clock
        self._buckets: dict[int, TokenBucket] = {}
        self._watchers: dict[int, set[_Watch]] = {}  # row id → attempts waiting for it to change or go
        self._bulk = 0
        self._pending = 0
        self.counts: dict[str, int] = dict.fromkeys([r.value for r in HangupResult] + [CANCELLED], 0)
        live.subscribe(self._on_change)

    def current_policy(self) -> HangupPolicy:
        """``ApiDeps.hangup_policy``: the policy in force (a reload may have changed it)."""
        return self.policy

    def may_hang_up(self, principal: Principal) -> bool:
        """``ApiDeps.may_hang_up``."""
        return self.policy.may_hang_up(principal)

    def reconfigure(self, settings: HangupSettings) -> None:
        """SIGHUP: new switches apply to the next request; a new rate to the next token taken."""
        if settings.rate_per_server != self.settings.rate_per_server:
            self._buckets.clear()
        self.settings = settings
        self.policy = settings.policy()

    # ------------------------------------------------------------------ the executor protocol
    async def hang_up(self, row: LiveCall, principal: Principal) -> HangupOutcome:
        started = time.monotonic()
        if self._pending >= MAX_PENDING:
            return self._done(row, principal, HangupResult.BUSY, BUSY, started, "")
        self._pending += 1
        try:
            return await self._attempt(row, principal, started)
        finally:
            self._pending -= 1

    async def hang_up_many(self, rows: Sequence[LiveCall], principal: Principal) -> list[HangupOutcome]:
        """Every row, each server's paced by its bucket, the servers in parallel; outcomes in ``rows`` order."""
        if self._bulk >= MAX_BULK:
            raise HangupBusy(BUSY)
        self._bulk += 1
        try:
            started = time.monotonic()
            by_server: dict[int, list[LiveCall]] = {}
            for row in rows:
                by_server.setdefault(row.call.server_id, []).append(row)
            results = await asyncio.gather(*(self._server_run(sid, group, principal, started)
                                             for sid, group in by_server.items()))
            found = {o.call_id: o for outcomes in results for o in outcomes}
            return [found[row.id] for row in rows]
        finally:
            self._bulk -= 1

    async def _server_run(self, server_id: int, rows: list[LiveCall], principal: Principal,
                          started: float) -> list[HangupOutcome]:
        """One server's share of a bulk, in order: the turn at the server's bucket first, then the attempt
        that uses it (and releases it once Asterisk answered), so its confirmation wait overlaps the next
        calls' actions; at most rate × confirm_timeout attempts are under way, however many calls."""
        bucket = self._bucket(server_id)
        tasks: list[asyncio.Task[HangupOutcome]] = []
        try:
            for row in rows:
                held = self._server_up(server_id)  # a server down: answered at once, no turn taken
                if held:
                    await bucket.acquire()
                tasks.append(asyncio.ensure_future(self._attempt(row, principal, started, held=bucket if held
                                                                 else None)))
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            raise

    def refused(self, principal: Principal, call_id: int | None, result: HangupResult, reason: str) -> None:
        self.counts[result.value] = self.counts.get(result.value, 0) + 1
        audit.info("hangup user=%r role=%s call_id=%s uniqueid=- channel=- server=- server_id=- result=%s "
                   "latency_ms=0.0 error=%r", principal.user.username, principal.role.value,
                   "*" if call_id is None else call_id, result.value, reason)

    # ------------------------------------------------------------------ one attempt
    async def _attempt(self, row: LiveCall, principal: Principal, started: float,
                       held: TokenBucket | None = None) -> HangupOutcome:
        """One call; ``held``: the bulk loop already holds this server's turn for our first action."""
        call = row.call
        shown = ",".join(hangup_channels(call))
        watch = self._watch(row)
        try:
            session = self._session_for(call.server_id)
            if session is None or not session.status.logged_in:
                return self._done(row, principal, HangupResult.SERVER_DOWN, SERVER_DOWN, started, shown)
            current = self._live.get(call.key)
            if current is None or current.id != row.id:
                return self._done(row, principal, HangupResult.GONE, CALL_NOT_FOUND, started, shown)
            turn, held = held, None
            result, error, at = await self._hang_up_confirmed(session, watch, turn)
            return self._done(row, principal, result, error, started, shown, at)
        except asyncio.CancelledError:
            self._audit(row, principal, CANCELLED, started, shown, "")
            raise
        finally:
            if held is not None:  # never used: hand the turn on
                held.release()
            self._unwatch(watch)

    async def _hang_up_confirmed(self, session: AmiSession, watch: _Watch,
                                 turn: TokenBucket | None) -> tuple[HangupResult, str, float | None]:
        """Hangup the call's channels, then wait (bounded) until it left the table. If it is still there
        once its caller leg is gone (a leg Asterisk did not end with it, e.g. the far side of a Local
        channel), its remaining channels are hung up too, once. ``turn``: already ours for the first action."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.confirm_timeout
        bucket = self._bucket(watch.row.call.server_id)
        followed_up = False
        accepted, errors = False, []
        channels = hangup_channels(watch.row.call)
        sent: set[str] = set()
        try:
            while True:
                for channel in channels:
                    if watch.gone.done():
                        break
                    if turn is None:
                        try:
                            await asyncio.wait_for(bucket.acquire(), max(0.001, deadline - loop.time()))
                        except TimeoutError:  # no turn at this server within confirm_timeout
                            if sent:
                                return HangupResult.NOT_CONFIRMED, self._unconfirmed(), None
                            return HangupResult.BUSY, BUSY, None
                        turn = bucket
                        if watch.gone.done():  # ended while we waited for the turn: nothing to send
                            break
                    sent.add(channel)
                    try:
                        reply = await session.hangup(channel, max(0.001, deadline - loop.time()))
                    except ConnectionError:
                        return HangupResult.SERVER_DOWN, SERVER_DOWN, None
                    except TimeoutError:
                        return HangupResult.NOT_CONFIRMED, self._unconfirmed(), None
                    except ValueError as exc:  # a name Asterisk would misread: never sent
                        errors.append(str(exc))
                        continue
                    finally:
                        turn.release()
                        turn = None
                    if reply.get("Response") == "Success":
                        accepted = True
                    else:
                        errors.append(reply.get("Message", "") or "Error")
                if not accepted and any(e != NO_SUCH_CHANNEL for e in errors):
                    return HangupResult.AMI_ERROR, _refused(errors), None
                while not watch.gone.done():
                    call = watch.row.call
                    if not followed_up and accepted and all(leg.uniqueid != call.uniqueid for leg in call.legs):
                        channels = [leg.channel for leg in call.legs if leg.channel not in sent]
                        if channels:
                            break  # the caller leg is gone but the call is not: end what is left, once
                    watch.changed.clear()
                    try:
                        await asyncio.wait_for(watch.changed.wait(), max(0.0, deadline - loop.time()))
                    except TimeoutError:
                        if accepted:
                            return HangupResult.NOT_CONFIRMED, self._unconfirmed(), None
                        return HangupResult.AMI_ERROR, _refused(errors), None
                else:
                    if accepted:
                        return HangupResult.HUNG_UP, "", watch.gone.result()
                    return HangupResult.GONE, CALL_NOT_FOUND, None
                followed_up = True
        finally:
            if turn is not None:  # handed in, never used (the call went first)
                turn.release()

    def _unconfirmed(self) -> str:
        return f"Hang-up not confirmed by Asterisk within {self.settings.confirm_timeout:g}s"

    # ------------------------------------------------------------------ plumbing
    def _bucket(self, server_id: int) -> TokenBucket:
        bucket = self._buckets.get(server_id)
        if bucket is None:
            bucket = self._buckets[server_id] = TokenBucket(self.settings.rate_per_server)
        return bucket

    def _server_up(self, server_id: int) -> bool:
        session = self._session_for(server_id)
        return session is not None and session.status.logged_in

    def _watch(self, row: LiveCall) -> _Watch:
        watch = _Watch(row, asyncio.get_running_loop().create_future(), asyncio.Event())
        self._watchers.setdefault(row.id, set()).add(watch)
        return watch

    def _unwatch(self, watch: _Watch) -> None:
        watches = self._watchers.get(watch.row.id)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._watchers[watch.row.id]

    def _on_change(self, kind: str, row: LiveCall) -> None:
        """LiveTable listener: O(1) unless someone waits for this very row."""
        if not self._watchers:
            return
        watches = self._watchers.get(row.id)
        if not watches:
            return
        now = self._clock()
        for watch in watches:
            watch.row = row
            if kind == "removed" and not watch.gone.done():
                watch.gone.set_result(now)
            watch.changed.set()

    def _done(self, row: LiveCall, principal: Principal, result: HangupResult, error: str, started: float,
              channels: str, at: float | None = None) -> HangupOutcome:
        self._audit(row, principal, result.value, started, channels, error)
        return HangupOutcome(row.id, result, error, self._clock() if at is None else at)

    def _audit(self, row: LiveCall, principal: Principal, result: str, started: float, channels: str,
               error: str) -> None:
        self.counts[result] = self.counts.get(result, 0) + 1
        session = self._session_for(row.call.server_id)
        audit.info("hangup user=%r role=%s call_id=%d uniqueid=%s channel=%s server=%s server_id=%d result=%s "
                   "latency_ms=%.1f%s", principal.user.username, principal.role.value, row.id, row.call.uniqueid,
                   channels, session.name if session is not None else "-", row.call.server_id, result,
                   (time.monotonic() - started) * 1000.0, f" error={error!r}" if error else "")


def _refused(errors: list[str]) -> str:
    return f"Asterisk refused the hang-up: {errors[0] if errors else 'Error'}"
