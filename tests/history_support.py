"""The history tests' oracle: every series' standing count, with visibility decided by ``api.scope``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial

from api.auth import Principal, Role
from api.scope import Scope
from collector.live.table import LiveCall
from collector.refdata.index import RefIndex
from collector.tracking.calls import CallStatus


def _on_server(sid: int, row: LiveCall) -> bool:
    return row.call.server_id == sid


def api_series(rows: Sequence[LiveCall], refs: RefIndex, servers: Iterable[int]) -> dict[str, tuple[int, int]]:
    """(total, answered) per series with any call: ``all``, ``server:N``, and each reseller's and user's rows
    as ``active_calls_get`` would list them for him."""
    preds: dict[str, Callable[[LiveCall], bool]] = {"all": lambda r: True}
    for sid in servers:
        preds[f"server:{sid}"] = partial(_on_server, sid)
    for u in refs.data.users:
        if u.usertype == "reseller":
            rp = Scope(Principal(Role.RESELLER, u), refs).row_predicate()
            assert rp is not None
            preds[f"reseller:{u.id}"] = rp
        up = Scope(Principal(Role.USER, u), refs).row_predicate()
        assert up is not None
        preds[f"user:{u.id}"] = up
    out = {}
    for name, pred in preds.items():
        seen = [r for r in rows if pred(r)]
        if seen:
            out[name] = (len(seen), sum(1 for r in seen if r.call.status is CallStatus.ANSWERED))
    return out
