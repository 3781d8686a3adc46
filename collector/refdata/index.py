"""In-memory indexes over reference data: every lookup the API and enrichment make is a dict access.

Built once per (re)load from a ``RefData``; never mutated afterwards, so readers need no locking and a
reload is one attribute swap.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.refdata.model import (
    DestinationGroup,
    Device,
    Did,
    Direction,
    Provider,
    RefData,
    Server,
    User,
)

__all__ = ["RefIndex", "tech_class"]


def tech_class(tech: str) -> str:
    """Channel technologies naming the same peers: PJSIP and SIP are one class (a MOR SIP device may
    be served by either driver); the others compare case-insensitively."""
    t = tech.upper()
    return "SIP" if t in ("SIP", "PJSIP") else t


@dataclass(frozen=True, slots=True)
class RefIndex:
    data: RefData
    users: dict[int, User]
    users_by_username: dict[str, User]
    devices: dict[int, Device]
    providers: dict[int, Provider]
    servers: dict[int, Server]
    directions_by_name: dict[str, Direction]  # lower-cased name
    directions_by_code: dict[str, Direction]
    destinationgroups: dict[int, DestinationGroup]
    dids: dict[int, Did]
    dids_by_number: dict[str, Did]

    @classmethod
    def build(cls, data: RefData) -> RefIndex:
        return cls(
            data=data,
            users={u.id: u for u in data.users},
            users_by_username={u.username: u for u in data.users},
            devices={d.id: d for d in data.devices},
            providers={p.id: p for p in data.providers},
            servers={s.id: s for s in data.servers},
            directions_by_name={d.name.lower(): d for d in data.directions},
            directions_by_code={d.code: d for d in data.directions},
            destinationgroups={g.id: g for g in data.destinationgroups},
            dids={d.id: d for d in data.dids},
            dids_by_number={d.did: d for d in data.dids},
        )

    def owner_of(self, user: User) -> User | None:
        """The user whose API secret signs this user's requests (MOR: admin for admin/accountant)."""
        if user.usertype in ("admin", "accountant"):
            return next((u for u in self.data.users if u.usertype == "admin"), None) \
                if user.usertype == "accountant" else user
        if user.usertype == "reseller":
            return user
        owner = self.users.get(user.owner_id)
        if owner is None:  # owner 0 = the admin in MOR
            return next((u for u in self.data.users if u.usertype == "admin"), None)
        return owner
