"""Enrichment: what reference data says about a live call (MOR's user, device, provider, DID,
localized number and destination columns).

Pure: no I/O, no SQL, no clock. Everything is indexed once when the ``Enricher`` is built (one per
reference data load), so ``enrich`` costs a few dict lookups per call, O(length of the number), and a
reload is building a new ``Enricher`` and swapping it in. ``enrich`` never raises: reference data, good
or bad, must not take a live call off the table.

Rules (see docs/refdata.md):
* source: the A-leg channel's (technology class, peer) → device → user (PJSIP and SIP are one class);
* inbound: the A-leg is a provider trunk; the DID is the dialled number; ``dst_*`` come from the DID's
  device, else the device that answered, else the DID's user; localized with the Global location;
* outbound: the provider is the current non-Local B-leg on a provider trunk (Up first, else the newest:
  after a failover prov1 → prov2 the call shows prov2);
* internal: a non-Local B-leg on a known device (Up first, else the newest) fills ``dst_*``;
* ``localized_dst`` by MOR's location rules (own location before Global, then the longest cut);
  the destination by the longest prefix of it, among destinations whose direction exists.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from collector.refdata.index import RefIndex, tech_class
from collector.refdata.model import (
    GLOBAL_LOCATION_ID,
    NO_ENRICHMENT,
    Destination,
    Device,
    Enrichment,
    LocationRule,
    Provider,
    RefData,
    User,
)
from collector.tracking.calls import AST_STATE_UP, CallView, b_leg_outranks, peer_of

__all__ = ["DestinationIndex", "Enricher", "Localizer"]

log = logging.getLogger(__name__)


class Localizer:
    """MOR's destination localization. Rules are grouped by location and by ``cut``, so finding the
    rule is one dict lookup per prefix length of the number, longest first."""

    __slots__ = ("_by_location",)

    def __init__(self, rules: Iterable[LocationRule]) -> None:
        grouped: dict[int, dict[str, list[LocationRule]]] = {}
        for rule in sorted(rules, key=lambda r: r.id):
            if rule.enabled != 1 or rule.lr_type != "dst":
                continue
            grouped.setdefault(rule.location_id, {}).setdefault(rule.cut, []).append(rule)
        # location → (cut lengths longest first, cut → rules by id)
        self._by_location: dict[int, tuple[tuple[int, ...], dict[str, tuple[LocationRule, ...]]]] = {
            loc: (tuple(sorted({len(c) for c in cuts}, reverse=True)),
                  {c: tuple(rs) for c, rs in cuts.items()})
            for loc, cuts in grouped.items()
        }

    def rule_for(self, dst: str, location_id: int = GLOBAL_LOCATION_ID) -> LocationRule | None:
        """The rule MOR applies: the device's own location first, then Global; within a location the
        longest matching ``cut`` (ties: lowest rule id) whose length limits admit ``len(dst)``."""
        if not dst:
            return None
        rule = self._match(dst, location_id)
        if rule is None and location_id != GLOBAL_LOCATION_ID:
            rule = self._match(dst, GLOBAL_LOCATION_ID)
        return rule

    def localize(self, dst: str, location_id: int = GLOBAL_LOCATION_ID) -> str:
        rule = self.rule_for(dst, location_id)
        return dst if rule is None else rule.add + dst[len(rule.cut):]

    def _match(self, dst: str, location_id: int) -> LocationRule | None:
        entry = self._by_location.get(location_id)
        if entry is None:
            return None
        lengths, by_cut = entry
        n = len(dst)
        for length in lengths:
            if length > n:
                continue
            for rule in by_cut.get(dst[:length], ()):
                if rule.minlen <= n <= rule.maxlen:
                    return rule
        return None


class DestinationIndex:
    """Longest-prefix match: a dict of prefix → destination plus the set of prefix lengths present,
    tried longest first (at most ~len(number) dict lookups, in practice a handful)."""

    __slots__ = ("_by_prefix", "_lengths")

    def __init__(self, destinations: Iterable[Destination]) -> None:
        by_prefix: dict[str, Destination] = {}
        for d in sorted(destinations, key=lambda d: d.id):
            if d.prefix:
                by_prefix.setdefault(d.prefix, d)  # a duplicate prefix (unvalidated source): lowest id
        self._by_prefix = by_prefix
        self._lengths = tuple(sorted({len(p) for p in by_prefix}, reverse=True))

    def longest(self, number: str) -> Destination | None:
        if not number:
            return None
        by_prefix = self._by_prefix
        n = len(number)
        for length in self._lengths:
            if length <= n:
                d = by_prefix.get(number[:length])
                if d is not None:
                    return d
        return None

    def __len__(self) -> int:
        return len(self._by_prefix)


@dataclass(slots=True)
class _BLegs:
    provider: Provider | None = None  # the trunk the call is on now
    device: Device | None = None  # the called device: answered, else the newest ringing
    answered_device: Device | None = None


class Enricher:
    """``enrich(call) -> Enrichment`` over one immutable reference data load; also callable, so it
    plugs straight into ``LiveTable(enrich=…)`` / ``set_enricher``."""

    __slots__ = ("index", "_users", "_devices_by_id", "_dids", "_devices", "_providers", "_localizer",
                 "_destinations", "_directions")

    def __init__(self, index: RefIndex) -> None:
        data = index.data
        self.index = index
        self._users = index.users
        self._devices_by_id = index.devices
        self._dids = index.dids_by_number
        self._devices: dict[tuple[str, str], Device] = {}
        for dev in sorted(data.devices, key=lambda d: d.id):
            self._devices.setdefault((tech_class(dev.device_type), dev.name), dev)
        self._providers: dict[tuple[str, str], Provider] = {}
        for prov in sorted(data.providers, key=lambda p: p.id):
            self._providers.setdefault((tech_class(prov.tech), prov.peer), prov)
        self._localizer = Localizer(data.locationrules)
        directions = index.directions_by_code
        self._destinations = DestinationIndex(d for d in data.destinations if d.direction_code in directions)
        self._directions = directions

    @classmethod
    def from_refdata(cls, data: RefData) -> Enricher:
        return cls(RefIndex.build(data))

    @property
    def localizer(self) -> Localizer:
        return self._localizer

    @property
    def destinations(self) -> DestinationIndex:
        return self._destinations

    def __call__(self, call: CallView) -> Enrichment:
        return self.enrich(call)

    def enrich(self, call: CallView) -> Enrichment:
        try:
            return self._enrich(call)
        except Exception:  # bad data must not kill a call: it just shows without enrichment
            log.exception("enrichment failed linkedid=%s channel=%s", call.linkedid, call.channel)
            return NO_ENRICHMENT

    # ------------------------------------------------------------------------------------------ lookups
    def device_for_channel(self, channel: str) -> Device | None:
        return self._devices.get(self._peer_key(channel))

    def provider_for_channel(self, channel: str) -> Provider | None:
        return self._providers.get(self._peer_key(channel))

    def localize(self, dst: str, location_id: int = GLOBAL_LOCATION_ID) -> str:
        return self._localizer.localize(dst, location_id)

    def destination_for(self, number: str) -> Destination | None:
        return self._destinations.longest(number)

    # ------------------------------------------------------------------------------------------ rules
    def _peer_key(self, channel: str) -> tuple[str, str]:
        tech, peer = peer_of(channel)
        return tech_class(tech), peer

    def _enrich(self, call: CallView) -> Enrichment:
        f: dict[str, Any] = {}
        a_key = self._peer_key(call.channel)
        src_dev = self._devices.get(a_key)
        if src_dev is not None:
            self._device_fields(f, src_dev, "")
        b = self._b_legs(call)
        inbound = self._providers.get(a_key)
        dst = call.dst
        if inbound is not None:
            self._provider(f, inbound)
            localized = self._localizer.localize(dst, GLOBAL_LOCATION_ID)
            f["has_dst"] = True
            did = self._dids.get(dst) or (self._dids.get(localized) if localized != dst else None)
            dst_dev: Device | None = None
            if did is not None:
                f["did_id"] = did.id
                f["did"] = did.did
                dst_dev = self._devices_by_id.get(did.device_id) if did.device_id else None
                if dst_dev is None:  # ring group / queue: whoever answered
                    dst_dev = b.answered_device
                if dst_dev is None and did.user_id:
                    self._dst_user(f, self._users.get(did.user_id))
            else:
                dst_dev = b.device
            if dst_dev is not None:
                self._device_fields(f, dst_dev, "dst_")
        else:
            location = src_dev.location_id if src_dev is not None else GLOBAL_LOCATION_ID
            localized = self._localizer.localize(dst, location)
            if b.provider is not None:
                self._provider(f, b.provider)
            if b.device is not None:
                f["has_dst"] = True
                self._device_fields(f, b.device, "dst_")
        f["localized_dst"] = localized
        dest = self._destinations.longest(localized)
        if dest is not None:
            direction = self._directions[dest.direction_code]
            f["direction_code"] = direction.code
            f["direction_name"] = direction.name
            f["destination_name"] = dest.name
            f["destination_prefix"] = dest.prefix
            f["destinationgroup_id"] = dest.destinationgroup_id or None
        return Enrichment(**f)

    def _b_legs(self, call: CallView) -> _BLegs:
        """One pass over the non-Local B-legs, each pick by the tracker's own rule (``b_leg_outranks``: Up
        first, then the newest), so the provider and device shown match ``dst_channel``. A trunk leg is
        never a destination device."""
        out = _BLegs()
        prov_up = dev_up = False
        prov_at = dev_at = up_at = 0.0
        a = call.uniqueid
        for leg in call.legs:
            if leg.is_local or leg.uniqueid == a:
                continue
            key = self._peer_key(leg.channel)
            up = leg.state == AST_STATE_UP
            created = leg.created
            prov = self._providers.get(key)
            if prov is not None:
                if out.provider is None or b_leg_outranks(up, created, prov_up, prov_at):
                    out.provider, prov_up, prov_at = prov, up, created
                continue
            dev = self._devices.get(key)
            if dev is None:
                continue
            if out.device is None or b_leg_outranks(up, created, dev_up, dev_at):
                out.device, dev_up, dev_at = dev, up, created
            if up and (out.answered_device is None or b_leg_outranks(True, created, True, up_at)):
                out.answered_device, up_at = dev, created
        return out

    def _provider(self, f: dict[str, Any], prov: Provider) -> None:
        f["provider_id"] = prov.id
        f["provider_name"] = prov.name
        f["provider_owner_id"] = prov.user_id

    def _dst_user(self, f: dict[str, Any], user: User | None) -> None:
        if user is not None:
            f["dst_user_id"] = user.id
            f["dst_user"] = user.display_name
            f["dst_owner_id"] = user.owner_id

    def _device_fields(self, f: dict[str, Any], dev: Device, prefix: str) -> None:
        """The device half of the source (``prefix`` "") or destination ("dst_") columns."""
        f["src_device_id" if not prefix else "dst_device_id"] = dev.id
        f[prefix + "device_type"] = dev.device_type
        f[prefix + "device_extension"] = dev.extension
        f[prefix + "device_name"] = dev.name
        f[prefix + "device_istrunk"] = dev.istrunk
        f[prefix + "device_ani"] = dev.ani
        user = self._users.get(dev.user_id)
        if user is not None:
            f[prefix + "user_id"] = user.id
            f[prefix + "user"] = user.display_name
            f[prefix + "owner_id"] = user.owner_id
