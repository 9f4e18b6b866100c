"""nftables: the reconciler's own table, `inet kitting`, and nothing else.

The file declares the table, deletes it and declares it again with its full content:
`nft -f` runs the file as one transaction, so the table is replaced atomically (the first
declaration makes the delete succeed on a server that has no such table yet) and no other
table is read or changed.

Only traffic arriving on the kitting interface is filtered: from the kitting subnet it may
reach exactly the services a kitting day needs; everything else arriving there is dropped.
Other interfaces are left to the host's own rules, including SSH: restricting SSH there
could lock the administrators out of a server managed over another network.

Purely computational.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, summarize_address_range

from reconciler.checks import PORT_SPAN
from reconciler.desired import Desired, DhcpMode, Site
from reconciler.layout import Layout
from reconciler.render._lines import Lines
from reconciler.rendered import Artifact, Check, Effect, Service

TABLE = "inet kitting"
MAX_PARTITIONS = PORT_SPAN // 2
"""udpcast ports opened per multicast port base: 2 per partition, up to this many partitions,
the same span validation keeps between overlapping sessions (checks.PORT_SPAN) and the most
a session serves (deployment_session.MAX_PARTITIONS)."""
REPORT_PORT = 6461
"""Clonezilla clients report a finished job here (ocsmgrd's port)."""

Interval = tuple[int, int]


def artifacts(desired: Desired, layout: Layout) -> tuple[list[Artifact], list[str]]:
    site = desired.site
    notes: list[str] = []
    ssh = _ssh_sources(site)
    if not ssh:
        notes.append(
            "SSH is closed on the kitting interface: no firewall.ssh_sources and no "
            "network.admin_range."
        )
    return [_table(desired, layout, ssh)], notes


def _table(desired: Desired, layout: Layout, ssh: list[Interval]) -> Artifact:
    site = desired.site
    iface = site.server.interface
    subnet = str(site.network.subnet)
    lines = Lines()
    lines.header()
    lines.note("The reconciler's own table. Declared, deleted and declared again in this one")
    lines.note("transaction, so `nft -f` replaces it atomically and touches no other table.")
    lines.add(f"table {TABLE}")
    lines.add(f"delete table {TABLE}")
    lines.blank()
    lines.add(f"table {TABLE} {{")
    lines.note("Relates TFTP data, sent from an ephemeral port, to the request on port 69.", "\t")
    lines.add("\tct helper tftp {")
    lines.add('\t\ttype "tftp" protocol udp')
    lines.add("\t\tl3proto ip")
    lines.add("\t}")
    lines.blank()
    lines.add("\tchain input {")
    lines.add("\t\ttype filter hook input priority filter; policy accept;")
    lines.note("Only the kitting interface is filtered here; others are the host's.", "\t\t")
    lines.add(f'\t\tiifname "{iface}" jump kitting_interface', "site.server.interface")
    lines.add("\t}")
    lines.blank()
    lines.add("\tchain kitting_interface {")
    _kitting_rules(lines, desired, subnet, ssh)
    lines.add("\t}")
    production = _merge(_network_interval(net) for net in site.firewall.production_networks)
    if production:
        targets = _set(production)
        lines.blank()
        lines.add("\tchain forward {")
        lines.add("\t\ttype filter hook forward priority filter; policy accept;")
        lines.note("The kitting network never reaches a production network.", "\t\t")
        origin = "site.firewall.production_networks"
        lines.add(f'\t\tiifname "{iface}" ip daddr {targets} drop', origin)
        lines.add(f"\t\tip saddr {subnet} ip daddr {targets} drop", origin)
        lines.add("\t}")
    lines.add("}")
    return lines.artifact(
        layout.nft_file,
        Service.nftables,
        on_add=Effect.reload,
        on_change=Effect.reload,
        on_remove=Effect.reload,
        check=Check.nft,
    )


def _kitting_rules(lines: Lines, desired: Desired, subnet: str, ssh: list[Interval]) -> None:
    site = desired.site
    src = f"ip saddr {subnet}"
    tcp_udp = "meta l4proto { tcp, udp } th dport"
    add = lines.add

    def note(text: str) -> None:
        lines.note(text, "\t\t")

    add("\t\tct state established,related accept")
    add("\t\tct state invalid drop")
    note("DHCP; a DISCOVER comes from 0.0.0.0, before the PC has an address.")
    add(f"\t\tip saddr {{ 0.0.0.0, {subnet} }} udp dport 67 accept", "site.network.subnet")
    if site.network.dhcp.mode is DhcpMode.proxy:
        note("PXE boot service requests (proxy DHCP).")
        add(f"\t\t{src} udp dport 4011 accept", "site.network.dhcp.mode")
    note("TFTP: loaders, menus, Clonezilla live.")
    add(f'\t\t{src} udp dport 69 ct helper set "tftp" accept', "site.network.subnet")
    if site.server.serve_dns:
        note("DNS.")
        add(f"\t\t{src} {tcp_udp} 53 accept", "site.server.serve_dns")
    note("rpcbind and NFS: the images root.")
    add(f"\t\t{src} {tcp_udp} {{ 111, 2049 }} accept", "site.network.subnet")
    note("mountd (NFSv3), on its pinned port.")
    add(f"\t\t{src} {tcp_udp} {site.nfs.mountd_port} accept", "site.nfs.mountd_port")
    note(f"udpcast: port base and the next port, for up to {MAX_PARTITIONS} partitions.")
    for (first, last), origin in _multicast_ranges(desired):
        add(f"\t\t{src} udp dport {first}-{last} accept", origin)
    note("IGMP: PCs join the multicast group (reports may come from 0.0.0.0).")
    add("\t\tip protocol igmp accept")
    note("Clonezilla job reports.")
    add(f"\t\t{src} tcp dport {REPORT_PORT} accept", "site.network.subnet")
    if ssh:
        origin = (
            "site.firewall.ssh_sources"
            if site.firewall.ssh_sources is not None
            else "site.network.admin_range"
        )
        note("SSH from the admin sources only.")
        add(f"\t\tip saddr {_set(ssh)} tcp dport 22 accept", origin)
    note("Ping, for diagnosis.")
    add(f"\t\t{src} icmp type echo-request accept", "site.network.subnet")
    note("Everything else arriving on the kitting interface.")
    add("\t\tcounter drop")


def _multicast_ranges(desired: Desired) -> list[tuple[Interval, str]]:
    """Port ranges of the site's port base and of every batch that picks its own."""
    bases = [(desired.site.multicast.port, "site.multicast.port")]
    for batch in sorted(desired.batches.values(), key=lambda b: b.name):
        if batch.multicast.port is not None:
            bases.append((batch.multicast.port, f"batches.{batch.name}.multicast.port"))
    spans = sorted(((port, port + PORT_SPAN - 1), origin) for port, origin in bases)
    merged: list[tuple[Interval, str]] = []
    for (first, last), origin in spans:
        if merged and first <= merged[-1][0][1] + 1:
            (prev_first, prev_last), prev_origin = merged[-1]
            merged[-1] = ((prev_first, max(prev_last, last)), prev_origin)
        else:
            merged.append(((first, last), origin))
    return merged


def _ssh_sources(site: Site) -> list[Interval]:
    sources = site.firewall.ssh_sources
    if sources is not None:
        return _merge(_source_interval(source) for source in sources)
    admin = site.network.admin_range
    if admin is not None:
        return [(int(admin.start), int(admin.end))]
    return []


def _source_interval(source: str) -> Interval:
    if "-" in source:
        first, last = source.split("-", 1)
        return int(IPv4Address(first)), int(IPv4Address(last))
    return _network_interval(IPv4Network(source))


def _network_interval(network: IPv4Network) -> Interval:
    return int(network.network_address), int(network.broadcast_address)


def _merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, with overlapping and adjacent intervals joined: a stable, minimal set."""
    merged: list[Interval] = []
    for first, last in sorted(intervals):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def _element(interval: Interval) -> str:
    first, last = IPv4Address(interval[0]), IPv4Address(interval[1])
    networks = list(summarize_address_range(first, last))
    if len(networks) == 1:
        network = networks[0]
        return str(network.network_address) if network.prefixlen == 32 else str(network)
    return f"{first}-{last}"


def _set(intervals: list[Interval]) -> str:
    elements = [_element(interval) for interval in intervals]
    return elements[0] if len(elements) == 1 else "{ " + ", ".join(elements) + " }"
