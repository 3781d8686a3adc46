"""Reference data records (MOR's table and column names) and the enrichment result.

Contract between the loader (``refdata``), enrichment (``enrich``), the live table and the API. Records
are frozen; a reload builds new ones and swaps them in whole. ``call_limit`` (users, devices, providers,
DIDs) is a positive number of concurrent calls or None: MOR's 0 / NULL / negative all mean "no limit",
so every loader stores them as None and readers need one test only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "Destination", "DestinationGroup", "Device", "Did", "Direction", "Enrichment", "Location",
    "LocationRule", "Provider", "RefData", "Server", "User", "GLOBAL_LOCATION_ID", "NO_ENRICHMENT",
]

#: MOR's "Global" location: rules in it apply to every device after the device's own location.
GLOBAL_LOCATION_ID = 1


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    usertype: str  # admin | reseller | user | accountant
    first_name: str = ""
    last_name: str = ""
    owner_id: int = 0  # the admin's id (0 in MOR) or the reseller's id
    api_secret_key: str = ""  # meaningful for admin and resellers (owners of API users)
    call_limit: int | None = None  # MOR's users.call_limit: concurrent calls allowed; None = no limit
    # MOR's ``users.password`` as MOR stores it (plain text, or a 40-hex sha1 in newer MORs); "" = none.
    # Only the v2 login reads it; a hash in ``local_passwords`` wins over it. Never shown (repr, export).
    password: str = field(default="", repr=False)

    @property
    def display_name(self) -> str:
        """MOR's nice_user: first + last name, or the username when both are empty."""
        name = f"{self.first_name} {self.last_name}".strip()
        return name or self.username


@dataclass(frozen=True, slots=True)
class Device:
    id: int
    user_id: int
    device_type: str  # SIP, IAX2, PJSIP, H323, dahdi, Virtual …
    name: str  # the peer name that appears in channel names (SIP/<name>-…)
    extension: str = ""
    istrunk: int = 0
    ani: int = 0
    location_id: int = GLOBAL_LOCATION_ID
    call_limit: int | None = None  # MOR's devices.call_limit; None = no limit


@dataclass(frozen=True, slots=True)
class Provider:
    id: int
    name: str
    tech: str  # SIP, IAX2, PJSIP …
    peer: str  # the trunk peer name its channels carry (SIP/<peer>-…)
    user_id: int = 0  # owner: 0 = admin, else a reseller's id
    call_limit: int | None = None  # MOR's providers.call_limit; None = no limit


@dataclass(frozen=True, slots=True)
class Server:
    id: int
    hostname: str = ""
    server_ip: str = ""
    comment: str = ""


@dataclass(frozen=True, slots=True)
class Direction:
    id: int
    name: str
    code: str


@dataclass(frozen=True, slots=True)
class DestinationGroup:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class Destination:
    id: int
    prefix: str
    direction_code: str
    name: str
    subcode: str = ""
    destinationgroup_id: int = 0


@dataclass(frozen=True, slots=True)
class Did:
    id: int
    did: str
    status: str = "active"
    user_id: int = 0
    device_id: int = 0
    provider_id: int = 0
    reseller_id: int = 0
    call_limit: int | None = None  # MOR's dids.call_limit; None = no limit


@dataclass(frozen=True, slots=True)
class Location:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class LocationRule:
    id: int
    location_id: int
    name: str = ""
    enabled: int = 1
    cut: str = ""
    add: str = ""
    minlen: int = 1
    maxlen: int = 100
    lr_type: str = "dst"


@dataclass(frozen=True, slots=True)
class RefData:
    users: tuple[User, ...] = ()
    devices: tuple[Device, ...] = ()
    providers: tuple[Provider, ...] = ()
    servers: tuple[Server, ...] = ()
    directions: tuple[Direction, ...] = ()
    destinations: tuple[Destination, ...] = ()
    destinationgroups: tuple[DestinationGroup, ...] = ()
    dids: tuple[Did, ...] = ()
    locations: tuple[Location, ...] = ()
    locationrules: tuple[LocationRule, ...] = ()


@dataclass(frozen=True, slots=True)
class Enrichment:
    """What reference data says about one call; every field empty/None when nothing matched."""

    user_id: int | None = None
    user: str = ""
    owner_id: int | None = None  # owner of the calling user (reseller visibility)
    src_device_id: int | None = None
    device_type: str = ""
    device_extension: str = ""
    device_name: str = ""
    device_istrunk: int | None = None
    device_ani: int | None = None
    localized_dst: str = ""
    direction_code: str = ""
    direction_name: str = ""
    destination_name: str = ""
    destination_prefix: str = ""
    destinationgroup_id: int | None = None
    provider_id: int | None = None
    provider_name: str = ""
    provider_owner_id: int | None = None
    did_id: int | None = None
    did: str = ""
    has_dst: bool = False  # the call goes to a local device (inbound DID or internal): dst_* shown
    dst_user_id: int | None = None
    dst_user: str = ""
    dst_owner_id: int | None = None
    dst_device_id: int | None = None
    dst_device_type: str = ""
    dst_device_extension: str = ""
    dst_device_name: str = ""
    dst_device_istrunk: int | None = None
    dst_device_ani: int | None = None


NO_ENRICHMENT = Enrichment()
