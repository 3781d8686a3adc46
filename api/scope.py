"""Who sees what: the row predicate and the "may this caller name this thing" checks of the filters.

admin/accountant: everything. Reseller R: calls made by R or R's users and calls to devices of R or
R's users. User U: calls made by U and calls to U's devices. The same rule decides which users,
devices, providers and DIDs a filter may name, so a filter cannot probe what the rows would hide.
"""

from __future__ import annotations

from collections.abc import Callable

from api.auth import Principal, Role
from collector.live.table import LiveCall
from collector.refdata.index import RefIndex
from collector.refdata.model import Device, Did, Provider, User
from collector.refdata.visibility import OWN_IDS, PARTY_IDS

__all__ = ["PARTY_IDS", "RowPredicate", "Scope"]

RowPredicate = Callable[[LiveCall], bool]

# A row's user ids that can make it visible to a scoped caller live in collector.refdata.visibility: a
# reseller sees the row when his id is any of PARTY_IDS, a user when it is one of OWN_IDS; the change hub
# routes a change and the history sampler counts a reseller's or a user's series by these same ids.


class Scope:
    """The caller's view of one reference-data snapshot."""

    __slots__ = ("principal", "refs", "_me")

    def __init__(self, principal: Principal, refs: RefIndex) -> None:
        self.principal = principal
        self.refs = refs
        self._me = principal.user.id

    def row_predicate(self) -> RowPredicate | None:
        """None when every row is visible (admin, accountant)."""
        me = self._me
        if self.principal.sees_everything:
            return None
        ids = PARTY_IDS if self.principal.role is Role.RESELLER else OWN_IDS

        def sees(row: LiveCall) -> bool:
            return me in ids(row.info)
        return sees

    def user_visible(self, user: User) -> bool:
        if self.principal.sees_everything:
            return True
        if self.principal.role is Role.RESELLER:
            return user.id == self._me or user.owner_id == self._me
        return user.id == self._me

    def device_visible(self, device: Device) -> bool:
        owner = self.refs.users.get(device.user_id)
        return owner is not None and self.user_visible(owner)

    def provider_visible(self, provider: Provider) -> bool:
        """admin/accountant: any; reseller: his own (user_id == his id); a user: what his owner sees."""
        if self.principal.sees_everything:
            return True
        if self.principal.role is Role.RESELLER:
            return provider.user_id == self._me
        owner = self.refs.owner_of(self.principal.user)
        if owner is None:
            return False
        if owner.usertype == "reseller":
            return provider.user_id == owner.id
        return True  # the admin owns the user: the admin sees every provider

    def did_visible(self, did: Did) -> bool:
        """A DID of the caller's own, of a visible user, or routed to a visible device."""
        if self.principal.sees_everything:
            return True
        if self.principal.role is Role.RESELLER and did.reseller_id == self._me:
            return True
        user = self.refs.users.get(did.user_id) if did.user_id else None
        if user is not None and self.user_visible(user):
            return True
        device = self.refs.devices.get(did.device_id) if did.device_id else None
        return device is not None and self.device_visible(device)
