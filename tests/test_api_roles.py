"""Visibility per role, checked against an oracle written from the seed's words (not from scope.py):
admin/accountant everything; reseller his own calls, his users' calls and calls to his or his users'
devices; a user his own calls and calls to his devices. Reading the XML back: which rows came out."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api_support import (
    PATH,
    REFS,
    ROWS,
    USERS,
    calls_of,
    make_app,
    message_of,
    parse,
    row_dict,
    signed,
)


def oracle(username: str) -> list[int]:
    me = REFS.users_by_username[username]
    if me.usertype in ("admin", "accountant"):
        return sorted(r.id for r in ROWS)
    if me.usertype == "reseller":
        mine = {me.id} | {u.id for u in USERS if u.owner_id == me.id and u.id != me.id}
    else:
        mine = {me.id}
    dev_owner = {d.id: d.user_id for d in REFS.data.devices}
    return sorted(r.id for r in ROWS
                  if r.info.user_id in mine or dev_owner.get(r.info.dst_device_id or -1) in mine)


ROLES = [("admin", "admin"), ("acc", "accountant"), ("res", "reseller"), ("ruser", "reseller's user"),
         ("carol", "reseller's user"), ("alice", "plain user"), ("bob", "plain user"),
         ("odd", "unknown user type = plain user")]


@pytest.mark.parametrize(("username", "role"), ROLES, ids=[f"{u}:{r}" for u, r in ROLES])
async def test_role_sees_exactly_its_calls(aiohttp_client: Any, username: str, role: str) -> None:
    client = await aiohttp_client(make_app())
    resp = await client.post(PATH, data=signed(username))
    body = await resp.read()
    expected = oracle(username)
    if not expected:
        assert message_of(body) == "No data found..."
        return
    assert calls_of(body) == expected
    for el in parse(body):  # what came out is the row itself, not some other view of it
        row = next(r for r in ROWS if r.id == int(el.findtext("id") or 0))
        assert row_dict(el)["uniqueid"] == row.call.uniqueid


def test_the_oracle_is_not_trivial() -> None:
    sizes = {u: len(oracle(u)) for u, _ in ROLES}
    assert sizes["admin"] == 9 and 0 < sizes["ruser"] < sizes["res"] < sizes["admin"]
    assert sizes["odd"] == 0 and sizes["carol"] == 1
    assert oracle("alice") == [1, 2, 5, 8]  # own calls 1, 2 and calls to her device 10 (5, 8)
    assert oracle("res") == [3, 6, 7, 8]  # his user's call, call to his user's device, own, carol's
