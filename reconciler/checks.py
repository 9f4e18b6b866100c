"""Semantic checks across documents: references, duplicates, address plan, multicast, windows.

Each check reads the desired state and reports through the validator's reporter, naming
both places when two things collide. Purely computational.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from reconciler.desired import (
    Action,
    Batch,
    Department,
    Desired,
    DhcpMode,
    Image,
    Mode,
    Pc,
    PcRef,
    Site,
)
from reconciler.problems import Severity

if TYPE_CHECKING:
    from reconciler.validate import Origin, Reporter, Where

NETBIOS_MAX = 15
# udpcast uses the port base and the next port, and Clonezilla adds 2 per partition; this
# many partitions' worth of ports is kept apart between sessions that run at the same time.
PORT_SPAN = 2 * 16


@dataclass(frozen=True)
class Draft:
    """What validated so far; the site may be missing when its document had errors, and the
    checks that do not need it still run, so one run reports every problem."""

    site: Site | None
    images: dict[str, Image]
    departments: dict[str, Department]
    batches: dict[str, Batch]

    def pcs(self) -> list[PcRef]:
        return Desired.pcs(self)  # type: ignore[arg-type]


@dataclass(frozen=True)
class PcAt:
    """A PC with its department and its place in the repo."""

    department: str
    index: int
    """The PC's index in its document (a PC left out for its errors still counts)."""
    pc: Pc
    origin: Origin

    @property
    def path(self) -> tuple[str | int, ...]:
        return ("pcs", self.index)


def run(draft: Draft, where: Where, declared: dict[str, set[str]], report: Reporter) -> None:
    pcs = list(_pcs(draft, where))
    index = Targets(pcs)
    targets = {name: index.of(batch) for name, batch in draft.batches.items()}
    _identities(draft, pcs, report)
    _references(draft, where, declared, pcs, report)
    _hostname_lengths(draft, pcs, targets, report)
    _images(draft, where, report)
    if draft.site is None:
        return
    desired = Desired(draft.site, draft.images, draft.departments, draft.batches)
    _address_plan(desired, where, pcs, report)
    _multicast(desired, where, report)
    _batches(desired, where, targets, report)
    _git_policy(desired, where, report)


def _pcs(desired: Draft | Desired, where: Where) -> Iterator[PcAt]:
    for name in sorted(desired.departments):
        for kept, pc in enumerate(desired.departments[name].pcs):
            yield PcAt(name, where.pc_index(name, kept), pc, where.departments[name])


def _hosts(subnet: IPv4Network) -> str:
    if subnet.prefixlen >= 31:
        return f"{subnet.network_address} to {subnet.broadcast_address}"
    return f"{subnet.network_address + 1} to {subnet.broadcast_address - 1}"


# ------------------------------------------------------------------------- address plan


def _address_plan(desired: Desired, where: Where, pcs: list[PcAt], report: Reporter) -> None:
    site, at = desired.site, where.site
    net = site.network
    subnet = net.subnet
    reserved = {
        subnet.network_address: "the network address",
        subnet.broadcast_address: "the broadcast address",
    }

    def inside(address: IPv4Address, path: tuple[str | int, ...], what: str) -> bool:
        if address not in subnet:
            report.at(
                at,
                path,
                f"{what} {address} is outside the kitting subnet {subnet} "
                f"(valid: {_hosts(subnet)})",
            )
            return False
        if address in reserved and subnet.prefixlen < 31:
            report.at(
                at,
                path,
                f"{what} {address} is {reserved[address]} of {subnet} (valid: {_hosts(subnet)})",
            )
            return False
        return True

    inside(site.server.address, ("server", "address"), "the server address")
    if net.gateway is not None:
        inside(net.gateway, ("network", "gateway"), "the gateway")
        if net.gateway == site.server.address:
            report.at(
                at,
                ("network", "gateway"),
                "the gateway is the server's own address, so PCs route through the kitting "
                "server; give the real router's address, or no gateway on an isolated VLAN",
                Severity.warning,
            )
    pool = net.dhcp.pool
    if net.dhcp.mode is DhcpMode.authoritative and pool is None:
        report.at(
            at,
            ("network", "dhcp"),
            "authoritative DHCP needs a pool: add network.dhcp.pool {start, end} "
            "(or use mode: proxy when another DHCP server hands out addresses)",
        )
    if net.dhcp.mode is DhcpMode.proxy and pool is not None:
        report.at(
            at,
            ("network", "dhcp", "pool"),
            "a proxy DHCP server hands out no addresses: remove the pool",
        )
    pool_ok = False
    if pool is not None:
        ok_start = inside(pool.start, ("network", "dhcp", "pool", "start"), "the pool start")
        ok_end = inside(pool.end, ("network", "dhcp", "pool", "end"), "the pool end")
        if ok_start and ok_end:
            if pool.start > pool.end:
                report.at(
                    at,
                    ("network", "dhcp", "pool"),
                    f"the pool starts ({pool.start}) after it ends ({pool.end}); "
                    "start must not be after end",
                )
            else:
                pool_ok = True
                for address, what, _path in (
                    (site.server.address, "the server address", ("server", "address")),
                    (net.gateway, "the gateway", ("network", "gateway")),
                ):
                    if address is not None and pool.start <= address <= pool.end:
                        report.at(
                            at,
                            ("network", "dhcp", "pool"),
                            f"the pool {pool.start}-{pool.end} contains {what} {address}; "
                            "move the pool or the address",
                        )
    admin = net.admin_range
    if admin is not None:
        ok = inside(admin.start, ("network", "admin_range", "start"), "the admin range start")
        ok = inside(admin.end, ("network", "admin_range", "end"), "the admin range end") and ok
        if ok and admin.start > admin.end:
            report.at(
                at,
                ("network", "admin_range"),
                f"the admin range starts ({admin.start}) after it ends ({admin.end}); "
                "start must not be after end",
            )
        elif (
            ok
            and pool_ok
            and pool is not None
            and admin.start <= pool.end
            and pool.start <= admin.end
        ):
            report.at(
                at,
                ("network", "admin_range"),
                f"the admin range {admin.start}-{admin.end} overlaps the DHCP pool "
                f"{pool.start}-{pool.end}; they must not share addresses",
            )
    for network in site.firewall.production_networks:
        if network.overlaps(subnet):
            index = site.firewall.production_networks.index(network)
            report.at(
                at,
                ("firewall", "production_networks", index),
                f"production network {network} overlaps the kitting subnet {subnet}: the firewall "
                "would cut the kitting network off from itself",
            )
    fixed: dict[IPv4Address, PcAt] = {}
    for item in pcs:
        ip = item.pc.ip
        if ip is None:
            continue
        path: tuple[str | int, ...] = (*item.path, "ip")
        if net.dhcp.mode is DhcpMode.proxy:
            report.at(
                item.origin,
                path,
                "a fixed IP needs authoritative DHCP: remove it, or use mode: authoritative "
                "(in proxy mode another server assigns addresses)",
            )
            continue
        if ip not in subnet:
            report.at(
                item.origin,
                path,
                f"{ip} is outside the kitting subnet {subnet} (valid: {_hosts(subnet)})",
            )
            continue
        if ip in reserved:
            report.at(
                item.origin, path, f"{ip} is {reserved[ip]} of {subnet} (valid: {_hosts(subnet)})"
            )
            continue
        if ip == site.server.address:
            report.at(item.origin, path, f"{ip} is the server's address; give the PC another one")
            continue
        if ip == net.gateway:
            report.at(item.origin, path, f"{ip} is the gateway's address; give the PC another one")
            continue
        if ip in fixed:
            other = fixed[ip]
            report.at(
                item.origin,
                path,
                f"IP {ip} is also the fixed IP of {other.pc.hostname} at "
                f"{report.where(other.origin, (*other.path, 'ip'))}; fixed IPs must be unique",
            )
            continue
        fixed[ip] = item
        if pool_ok and pool is not None and pool.start <= ip <= pool.end:
            report.at(
                item.origin,
                path,
                f"{ip} is inside the dynamic pool {pool.start}-{pool.end}; fixed IPs are clearer outside it",
                Severity.warning,
            )
        if admin is not None and admin.start <= ip <= admin.end:
            report.at(
                item.origin,
                path,
                f"{ip} is inside the admin range {admin.start}-{admin.end}, which is kept for "
                "admin terminals; pick an address outside it",
            )
    if pool_ok and pool is not None:
        dynamic = sum(1 for item in pcs if item.pc.ip is None)
        size = int(pool.end) - int(pool.start) + 1
        if dynamic > size:
            report.at(
                at,
                ("network", "dhcp", "pool"),
                f"{dynamic} PCs have no fixed IP but the pool holds only {size} addresses; "
                "enlarge the pool or give PCs fixed IPs",
                Severity.warning,
            )


# ------------------------------------------------------------------------- identities


def _identities(desired: Draft | Desired, pcs: list[PcAt], report: Reporter) -> None:
    macs: dict[str, tuple[PcAt, int]] = {}
    names: dict[str, PcAt] = {}
    for item in pcs:
        for m_index, mac in enumerate(item.pc.macs):
            path = (*item.path, "macs", m_index)
            if mac in macs:
                other, other_index = macs[mac]
                same = other is item
                owner = "this PC" if same else other.pc.hostname
                report.at(
                    item.origin,
                    path,
                    f"MAC {mac} is also listed for {owner} at "
                    f"{report.where(other.origin, (*other.path, 'macs', other_index))}; "
                    "a MAC belongs to one PC, once",
                )
                continue
            macs[mac] = (item, m_index)
        folded = item.pc.hostname.casefold()
        if folded in names:
            other = names[folded]
            report.at(
                item.origin,
                (*item.path, "hostname"),
                f"hostname {item.pc.hostname!r} is already used by {other.pc.hostname!r} "
                f"(department {other.department}) at {report.where(other.origin, (*other.path, 'hostname'))}; "
                "hostnames are compared without regard to case",
            )
            continue
        names[folded] = item


# ------------------------------------------------------------------------- references


def _references(
    desired: Draft | Desired,
    where: Where,
    declared: dict[str, set[str]],
    pcs: list[PcAt],
    report: Reporter,
) -> None:
    images = declared["Image"] | set(desired.images)
    departments = declared["Department"] | set(desired.departments)
    hostnames = {item.pc.hostname.casefold() for item in pcs}
    all_hostnames = [item.pc.hostname for item in pcs]
    for name, dept in desired.departments.items():
        if dept.image is not None and dept.image not in images:
            report.at(
                where.departments[name],
                ("image",),
                f"image {dept.image!r} is not defined{where.unread_hint(dept.image)}"
                f"{suggest(dept.image, sorted(images))}; "
                f"defined images: {', '.join(sorted(images)) or 'none'}",
            )
    for name, batch in desired.batches.items():
        origin = where.batches[name]
        if batch.image not in images and batch.action is Action.restore:
            report.at(
                origin,
                ("image",),
                f"image {batch.image!r} is not defined{where.unread_hint(batch.image)}"
                f"{suggest(batch.image, sorted(images))}; "
                f"defined images: {', '.join(sorted(images)) or 'none'}",
            )
        for index, dept_name in enumerate(batch.targets.departments):
            if dept_name not in departments:
                report.at(
                    origin,
                    ("targets", "departments", index),
                    f"department {dept_name!r} is not defined{where.unread_hint(dept_name)}"
                    f"{suggest(dept_name, sorted(departments))}; "
                    f"defined departments: {', '.join(sorted(departments)) or 'none'}",
                )
        for index, hostname in enumerate(batch.targets.pcs):
            folded = hostname.casefold()
            if folded not in hostnames and folded not in where.dropped_hostnames:
                report.at(
                    origin,
                    ("targets", "pcs", index),
                    f"no PC has hostname {hostname!r}{where.unread_hint(hostname)}"
                    f"{suggest(hostname, all_hostnames)}; "
                    "list hostnames of PCs defined in a department",
                )
        if not batch.targets.departments and not batch.targets.pcs:
            report.at(origin, ("targets",), "a batch needs targets: departments and/or pcs")


def batch_targets(desired: Draft | Desired, batch: Batch) -> list[Pc]:
    """The PCs a batch targets, each once, in department then file order. Pure."""
    return Targets(desired.pcs()).of(batch)


class Targets:
    """Every PC by department and by hostname, so that finding a batch's PCs costs in
    proportion to the batch, not to the whole site. Pure."""

    def __init__(self, pcs: Iterable[PcRef | PcAt]) -> None:
        """`pcs` in department then file order, as `Desired.pcs()` gives them."""
        self._pcs: list[Pc] = []
        self._by_department: dict[str, list[int]] = {}
        self._by_hostname: dict[str, list[int]] = {}
        for order, ref in enumerate(pcs):
            self._pcs.append(ref.pc)
            self._by_department.setdefault(ref.department, []).append(order)
            self._by_hostname.setdefault(ref.pc.hostname.casefold(), []).append(order)

    def of(self, batch: Batch) -> list[Pc]:
        chosen: set[int] = set()
        for department in batch.targets.departments:
            chosen.update(self._by_department.get(department, ()))
        for hostname in batch.targets.pcs:
            chosen.update(self._by_hostname.get(hostname.casefold(), ()))
        return [self._pcs[order] for order in sorted(chosen)]


def _hostname_lengths(
    desired: Draft | Desired, pcs: list[PcAt], targets: dict[str, list[Pc]], report: Reporter
) -> None:
    long_names = [item for item in pcs if len(item.pc.hostname) > NETBIOS_MAX]
    if not long_names:
        return  # the usual case, and then the batches need no look
    windows_images = {name for name, image in desired.images.items() if image.os.is_windows}
    long_folded = {item.pc.hostname.casefold() for item in long_names}
    batch_images: dict[str, set[str]] = {}
    for name, batch in desired.batches.items():
        if batch.action is Action.restore:
            for pc in targets[name]:
                if (folded := pc.hostname.casefold()) in long_folded:
                    batch_images.setdefault(folded, set()).add(batch.image)
    for item in long_names:
        hostname = item.pc.hostname
        dept_image = desired.departments[item.department].image
        images = batch_images.get(hostname.casefold(), set()) | (
            {dept_image} if dept_image else set()
        )
        windows = sorted(images & windows_images)
        if windows:
            report.at(
                item.origin,
                (*item.path, "hostname"),
                f"hostname {hostname!r} has {len(hostname)} characters; Windows (image "
                f"{windows[0]!r}) allows at most {NETBIOS_MAX} (NetBIOS name)",
            )


# ------------------------------------------------------------------------- multicast


def suggest(given: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest candidate, or ''."""
    close = difflib.get_close_matches(given, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _low23_reserved(group: IPv4Address) -> bool:
    """True when the group maps to the same Ethernet address as 224.0.0.x (switches flood it)."""
    return (int(group) & 0x7FFFFF) >> 8 == 0


def _group_problem(group: IPv4Address) -> tuple[str, Severity] | None:
    if not group.is_multicast:
        return (f"{group} is not a multicast address (224.0.0.0/4; use 239.x.y.z)", Severity.error)
    if _low23_reserved(group):
        return (
            f"{group} maps to the same Ethernet multicast address as 224.0.0.{int(group) & 0xFF}, "
            "which switches flood to every port; pick a group whose last 23 bits differ "
            "(e.g. 239.192.0.1)",
            Severity.error,
        )
    if group not in IPv4Network("239.0.0.0/8"):
        return (
            f"{group} is outside 239.0.0.0/8, the organisation-local scope recommended here",
            Severity.warning,
        )
    return None


def _port_problem(port: int) -> str | None:
    if not 1024 <= port <= 65534 or port % 2:
        return f"port {port} must be even and between 1024 and 65534 (udpcast uses it and the next)"
    return None


def _multicast(desired: Desired, where: Where, report: Reporter) -> None:
    mc = desired.site.multicast
    if found := _group_problem(mc.group):
        report.at(where.site, ("multicast", "group"), found[0], found[1])
    if found_port := _port_problem(mc.port):
        report.at(where.site, ("multicast", "port"), found_port)
    for name, batch in desired.batches.items():
        origin = where.batches[name]
        if batch.multicast.group is not None and (found := _group_problem(batch.multicast.group)):
            report.at(origin, ("multicast", "group"), found[0], found[1])
        if batch.multicast.port is not None and (found_port := _port_problem(batch.multicast.port)):
            report.at(origin, ("multicast", "port"), found_port)


# ------------------------------------------------------------------------- batches


def window_bounds(desired: Desired, batch: Batch) -> tuple[datetime, datetime] | None:
    """The window as aware datetimes, or None when a local time is missing or ambiguous. Pure."""
    zone = ZoneInfo(batch.window.timezone or desired.site.timezone)
    start, end = (_aware(t, zone) for t in (batch.window.start, batch.window.end))
    if start is None or end is None:
        return None
    return start, end


def _aware(moment: datetime, zone: ZoneInfo) -> datetime | None:
    if moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=zone) if _local_problem(moment, zone) is None else None


def _local_problem(moment: datetime, zone: ZoneInfo) -> str | None:
    """Why a wall-clock time is not one instant in `zone` (a DST gap or overlap), if it is not."""
    early = moment.replace(tzinfo=zone, fold=0)
    late = moment.replace(tzinfo=zone, fold=1)
    if early.utcoffset() == late.utcoffset():
        return None
    text = moment.isoformat(timespec="minutes")
    after = early.astimezone(ZoneInfo("UTC")).astimezone(zone).replace(tzinfo=None)
    if after != moment:
        return (
            f"{text} does not exist in {zone.key}: clocks skip it at a DST change; "
            f"use a time after the change, e.g. {after.isoformat(timespec='minutes')}"
        )
    return (
        f"{text} happens twice in {zone.key}: clocks go back at a DST change; add an offset "
        f"to say which: {text}{_offset(early.utcoffset())} (the first) or "
        f"{text}{_offset(late.utcoffset())} (the second)"
    )


def _offset(offset: timedelta | None) -> str:
    minutes = int((offset or timedelta()).total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _batches(
    desired: Desired, where: Where, targets: dict[str, list[Pc]], report: Reporter
) -> None:
    site = desired.site
    windows: dict[str, tuple[datetime, datetime]] = {}
    for name in sorted(desired.batches):
        batch, origin = desired.batches[name], where.batches[name]
        zone = ZoneInfo(batch.window.timezone or site.timezone)
        # The site's zone is broken (and reported): a local time read in it cannot be judged.
        unknown_zone = where.site_zone_guessed and batch.window.timezone is None
        for edge in ("start", "end"):
            moment: datetime = getattr(batch.window, edge)
            if unknown_zone or moment.tzinfo is not None:
                continue
            if problem := _local_problem(moment, zone):
                report.at(origin, ("window", edge), problem)
        naive = batch.window.start.tzinfo is None or batch.window.end.tzinfo is None
        bounds = None if unknown_zone and naive else window_bounds(desired, batch)
        if bounds is not None:
            start, end = bounds
            if end <= start:
                report.at(
                    origin,
                    ("window", "end"),
                    f"the window ends ({end.isoformat()}) before or when it starts "
                    f"({start.isoformat()}); end must be after start",
                )
            else:
                windows[name] = bounds
                if batch.mode is Mode.multicast and timedelta(seconds=batch.max_wait) > end - start:
                    report.at(
                        origin,
                        ("max_wait",),
                        f"max_wait ({batch.max_wait} s) is longer than the whole window "
                        f"({int((end - start).total_seconds())} s); shorten it or widen the window",
                        Severity.warning,
                    )
        chosen = targets[name]
        # PCs left out for their errors may be among the targets: counts are not final then.
        counted = not (set(batch.targets.departments) & where.partial) and not any(
            hostname.casefold() in where.dropped_hostnames for hostname in batch.targets.pcs
        )
        if batch.clients_to_wait is not None:
            if batch.mode is Mode.unicast:
                report.at(
                    origin,
                    ("clients_to_wait",),
                    "clients_to_wait only applies to multicast batches: remove it",
                    Severity.warning,
                )
            elif counted and chosen and batch.clients_to_wait > len(chosen):
                report.at(
                    origin,
                    ("clients_to_wait",),
                    f"clients_to_wait is {batch.clients_to_wait} but the batch targets only {len(chosen)} PCs "
                    f"(valid: 1 to {len(chosen)})",
                )
        if batch.action is Action.capture:
            if counted and len(chosen) != 1:
                report.at(
                    origin,
                    ("targets",),
                    f"a capture saves exactly one master PC; this batch targets {len(chosen)}",
                )
            if batch.mode is Mode.multicast:
                report.at(origin, ("mode",), "a capture writes over NFS: use mode: unicast")
        elif batch.overwrite:
            report.at(
                origin,
                ("overwrite",),
                "overwrite only applies to capture batches: remove it",
                Severity.warning,
            )
        image = desired.images.get(batch.image)
        if image is not None and batch.action is Action.restore:
            for pc in chosen:
                if pc.firmware is not None and pc.firmware != image.firmware:
                    report.at(
                        origin,
                        ("image",),
                        f"PC {pc.hostname} boots {pc.firmware.value.upper()} but image {image.name!r} "
                        f"was made for {image.firmware.value.upper()}; it may not boot after restore",
                        Severity.warning,
                    )
                if pc.disk and pc.disk.size and image.disk.size and pc.disk.size < image.disk.size:
                    report.at(
                        origin,
                        ("image",),
                        f"PC {pc.hostname}'s disk ({pc.disk.size} bytes) is smaller than the "
                        f"disk image {image.name!r} was saved from ({image.disk.size} bytes)",
                        Severity.warning,
                    )
    _overlaps(desired, where, windows, targets, report)


def _session(desired: Desired, batch: Batch) -> tuple[IPv4Address, int]:
    mc = desired.site.multicast
    return (batch.multicast.group or mc.group, batch.multicast.port or mc.port)


def _overlaps(
    desired: Desired,
    where: Where,
    windows: dict[str, tuple[datetime, datetime]],
    targets: dict[str, list[Pc]],
    report: Reporter,
) -> None:
    names = sorted(windows)
    hostnames = {name: {pc.hostname for pc in targets[name]} for name in names}
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            (a_start, a_end), (b_start, b_end) = windows[first], windows[second]
            if not (a_start < b_end and b_start < a_end):
                continue
            a, b = desired.batches[first], desired.batches[second]
            origin = where.batches[second]
            there = report.where(where.batches[first], ("window",))
            if a.mode is Mode.multicast and b.mode is Mode.multicast:
                (a_group, a_port), (b_group, b_port) = _session(desired, a), _session(desired, b)
                if a_group == b_group:
                    report.at(
                        origin,
                        ("multicast", "group"),
                        f"batch {first!r} ({there}) uses multicast group {a_group} in an overlapping "
                        "window; give each batch its own group",
                    )
                if abs(a_port - b_port) < PORT_SPAN:
                    report.at(
                        origin,
                        ("multicast", "port"),
                        f"batch {first!r} ({there}) uses port {a_port} in an overlapping window; keep ports "
                        f"at least {PORT_SPAN} apart (2 per partition)",
                    )
            shared = sorted(hostnames[first] & hostnames[second])
            if shared:
                report.at(
                    origin,
                    ("targets",),
                    f"PC {shared[0]}{f' and {len(shared) - 1} more' if len(shared) > 1 else ''} "
                    f"also in batch {first!r} ({there}) whose window overlaps; a PC is imaged by one batch at a time",
                )


# ------------------------------------------------------------------------- git, images


def _git_policy(desired: Desired, where: Where, report: Reporter) -> None:
    git = desired.site.git
    if git.require_signed and not git.allowed_signers:
        report.at(
            where.site,
            ("git", "allowed_signers"),
            "require_signed is on but no allowed_signers are listed: add at least one",
        )
    for index, signer in enumerate(git.allowed_signers):
        if (signer.ssh_key is None) == (signer.openpgp_fingerprint is None):
            report.at(
                where.site,
                ("git", "allowed_signers", index),
                "give exactly one of ssh_key or openpgp_fingerprint",
            )


def _images(desired: Draft | Desired, where: Where, report: Reporter) -> None:
    for name, image in desired.images.items():
        integrity = image.integrity
        if integrity is None:
            continue
        origin = where.images[name]
        if integrity.source.value == "manifest" and not integrity.manifest:
            report.at(
                origin,
                ("integrity", "manifest"),
                "integrity source is manifest but the manifest is empty",
            )
        for file, digest in integrity.manifest.items():
            if re.fullmatch(r"[0-9a-f]{64}", digest) is None:
                report.at(
                    origin,
                    ("integrity", "manifest", file),
                    f"{digest!r} is not a SHA-256 (64 lower-case hex digits)",
                )
