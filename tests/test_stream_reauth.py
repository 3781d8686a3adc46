"""Issue #14 (A.2): open streams are re-checked on every reload; a stream whose user, role, owner or API
key changed (or whose user is gone) is closed with ``event: closed`` and a reason."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from collector.refdata.importer import import_data
from tests.daemon_helpers import mor_hash, running_daemon, settings_for, wait_until
from tests.test_stream import Sse

KEYS = {"admin": "demo-admin-secret", "alice": "demo-admin-secret", "bob": "demo-admin-secret",
        "frontdesk": "demo-admin-secret", "reseller": "demo-reseller-secret", "carol": "demo-reseller-secret"}


async def _closed(sse: Sse) -> str:
    while True:
        ev = await sse.next(timeout=10)
        if ev.event == "closed":
            return str(ev.data["reason"])


async def test_streams_of_changed_users_are_closed_with_a_reason_on_reload(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, [])
    async with running_daemon(settings) as daemon, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{daemon.port}/billing/api/active_calls_stream"
        streams: dict[str, Sse] = {}
        for user, key in KEYS.items():
            resp = await http.get(url, params={"u": user, "hash": mor_hash(user, key)})
            assert resp.status == 200 and resp.content_type == "text/event-stream", user
            streams[user] = Sse(resp)
            assert (await streams[user].next()).event == "snapshot"
        db = settings.database
        import_data(db, {"users": [
            {"id": 4, "username": "reseller", "usertype": "reseller", "api_secret_key": "rotated-reseller-key"},
            {"id": 2, "username": "alice2", "usertype": "user"},   # alice renamed: "alice" is gone
            {"id": 6, "username": "frontdesk", "usertype": "user", "owner_id": 4},  # new owner
            {"id": 3, "username": "bob", "usertype": "accountant"},  # new role
        ]})
        reloads = daemon.reloads
        daemon.reload()
        await wait_until(lambda: daemon.reloads > reloads, what="reload")
        for user in ("reseller", "carol", "alice", "frontdesk", "bob"):  # carol: her owner's key rotated
            assert await _closed(streams[user]) == "credentials changed", user
            assert await streams[user].resp.content.read() == b"", user  # and the connection ends
        # the admin's stream is untouched: it still gets keepalives and stays open
        admin = streams["admin"]
        await asyncio.sleep(1.5)
        assert not admin.resp.content.at_eof()
        assert all(ev.event == "snapshot" for ev in admin.events)
        # a second reload with no change closes nothing
        daemon.reload()
        await wait_until(lambda: daemon.reloads > reloads + 1, what="second reload")
        await asyncio.sleep(1.5)
        assert not admin.resp.content.at_eof()
        admin.resp.close()
