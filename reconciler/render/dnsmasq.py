"""dnsmasq: the DHCP/TFTP drop-in and one host-reservation file per PC.

Why two kinds of file: dnsmasq never re-reads its main file on SIGHUP, so a change there
needs a restart, while a new file in `--dhcp-hostsdir` is picked up by itself (edits and
removals there need a SIGHUP). Keeping every PC in its own file makes "add a PC" free.

Boot files are chosen by DHCP option 93 (client architecture) and offered only to PCs that
are in the site repo: dnsmasq sets its own tag `known` for a client that a dhcp-host line
matches, and only our reservation files hold such lines. (Reservations do not set a tag
of their own: dnsmasq 2.90 aborts on SIGHUP when a `set:` reservation that holds a lease
was removed or edited in `--dhcp-hostsdir`, which is exactly what removing a PC does.)
An unknown MAC still
gets an address in authoritative mode (its MAC then shows up in the lease file, which is
how an engineer finds the MAC of a new PC) but never a boot file: a PC nobody declared must
not run anything from this server, and without a boot file its firmware moves on to the
local disk at once.

Purely computational.
"""

from __future__ import annotations

from ipaddress import IPv4Network

from reconciler.desired import Desired, DhcpMode, Pc, Site
from reconciler.layout import Layout
from reconciler.render._lines import Lines, join
from reconciler.rendered import Artifact, Check, Effect, Service

TAG_PC = "known"
"""dnsmasq's own tag for a client matched by a dhcp-host line (see the module docstring)."""
TAG_BIOS = "kitting-bios"
TAG_EFI64 = "kitting-efi64"

BIOS_ARCHES = (0,)
"""DHCP option 93 values served the BIOS loader."""
EFI64_ARCHES = (7, 9)
"""DHCP option 93 values of UEFI x86-64 (firmware sends either)."""

TFTP_MAX_CAP = 1000
"""Upper bound for tftp-max; dnsmasq lowers it itself if its file-descriptor limit is lower."""

ARCH_NOTE = (
    "Only BIOS (DHCP option 93 = 0) and UEFI x86-64 (7, 9) clients get a boot file; other "
    "architectures (6 UEFI IA32, 10 ARM32, 11 ARM64, 16 UEFI HTTP, ...) get none and boot on."
)


def uefi_boot_file(site: Site) -> tuple[str, str]:
    """The file UEFI x86-64 clients load, and the field it comes from."""
    if site.boot.secure_boot:
        return site.boot.shim, "site.boot.shim"
    return site.boot.uefi_loader, "site.boot.uefi_loader"


def hosts_file(layout: Layout, pc: Pc) -> str:
    # Host names are single RFC 1123 labels: no '/', no leading '.', so the file lands in
    # the directory and dnsmasq does not skip it as a dot file.
    return join(layout.dhcp_hosts_dir, f"{pc.hostname}.hosts")


def artifacts(desired: Desired, layout: Layout) -> tuple[list[Artifact], list[str]]:
    """The main drop-in plus one reservation file per PC, and notes for the plan."""
    site = desired.site
    notes = [ARCH_NOTE]
    if site.network.dhcp.mode is DhcpMode.proxy:
        notes.append("PCs not in the site repo get no PXE answer from this server (proxy DHCP).")
        if any(ref.pc.ip is not None for ref in desired.pcs()):
            notes.append(
                "Proxy DHCP: fixed addresses (pcs[].ip) are not applied; the other DHCP "
                "server assigns every address."
            )
    elif site.network.dhcp.pool is None:
        notes.append("PCs not in the site repo get neither an address nor a boot file.")
    else:
        notes.append("PCs not in the site repo get an address but no boot file.")
    if not site.boot.secure_boot:
        notes.append(
            f"Secure Boot support is off: UEFI clients get {site.boot.uefi_loader} directly, "
            "which firmware with Secure Boot enabled refuses."
        )
    result = [_main(site, layout)]
    for dept in sorted(desired.departments.values(), key=lambda d: d.name):
        for index, pc in enumerate(dept.pcs):
            origin = f"departments.{dept.name}.pcs[{index}]"
            result.append(_hosts(site, layout, pc, origin))
    return result, notes


def _main(site: Site, layout: Layout) -> Artifact:
    net = site.network
    lines = Lines()
    lines.header()
    lines.note("Kitting DHCP and TFTP. dnsmasq reads this file only at start: a change needs")
    lines.note("a restart. Host reservations live in --dhcp-hostsdir, one file per PC.")
    lines.blank()
    lines.note("Serve the kitting interface only; bind-dynamic binds its own addresses and")
    lines.note("follows the interface if it comes up after dnsmasq.")
    lines.add(f"interface={site.server.interface}", "site.server.interface")
    lines.add("bind-dynamic")
    if site.server.serve_dns:
        lines.note("DNS for the kitting network; never forward plain names or private PTRs.")
        lines.add("domain-needed", "site.server.serve_dns")
        lines.add("bogus-priv", "site.server.serve_dns")
    else:
        lines.note("DNS off: DHCP and TFTP only.")
        lines.add("port=0", "site.server.serve_dns")
    lines.blank()
    if net.dhcp.mode is DhcpMode.proxy:
        _proxy(lines, site)
    else:
        _authoritative(lines, site)
    lines.note("PC files in this directory; a new file is read without a signal.")
    lines.add(f"dhcp-hostsdir={layout.dhcp_hosts_dir}")
    lines.note("Keep boot file and server name in their own BOOTP fields (old PXE ROMs).")
    lines.add("dhcp-no-override")
    lines.note("Log the options and tags of every answer: why did a PC get no boot file?")
    lines.add("log-dhcp")
    lines.note("To a file the reconciler reads: a TFTP 'sent' line for a PC's own boot file")
    lines.note("means that PC is running its job, and the entry is withdrawn (one-shot).")
    lines.add(f"log-facility={layout.dnsmasq_log}")
    lines.note("The leases: the reconciler reads them to tell which PC a receiver with a pool")
    lines.note("address is.")
    lines.add(f"dhcp-leasefile={layout.dhcp_leases}")
    lines.blank()
    lines.note("TFTP for loaders, menus and Clonezilla live, on the kitting interface only.")
    lines.note("With tftp-root set, dnsmasq refuses paths with '..'. No tftp-secure: the")
    lines.note("packaged dnsmasq runs as its own user and would refuse root-owned files.")
    lines.add(f"enable-tftp={site.server.interface}", "site.server.interface")
    lines.add(f"tftp-root={site.boot.tftp_root}", "site.boot.tftp_root")
    lines.note("One transfer per PC that may boot at once (default 50 is too low).")
    tftp_max = min(net.dhcp.max_leases, TFTP_MAX_CAP)
    lines.add(f"tftp-max={max(tftp_max, 50)}", "site.network.dhcp.max_leases")
    return lines.artifact(
        layout.dnsmasq_conf,
        Service.dnsmasq,
        on_add=Effect.restart,
        on_change=Effect.restart,
        on_remove=Effect.restart,
        check=Check.dnsmasq,
    )


def _authoritative(lines: Lines, site: Site) -> None:
    net = site.network
    subnet: IPv4Network = net.subnet
    lines.note("This server is the only DHCP server on the kitting VLAN.")
    lines.add("dhcp-authoritative", "site.network.dhcp.mode")
    lease = net.dhcp.lease_time
    if net.dhcp.pool is not None:
        pool = net.dhcp.pool
        lines.add(
            f"dhcp-range={pool.start},{pool.end},{subnet.netmask},{lease}",
            "site.network.dhcp.pool",
        )
    else:
        lines.note("No pool: only PCs with a fixed address get one.")
        lines.add(
            f"dhcp-range={subnet.network_address},static,{subnet.netmask},{lease}",
            "site.network.dhcp.pool",
        )
    lines.add(f"dhcp-lease-max={net.dhcp.max_leases}", "site.network.dhcp.max_leases")
    lines.note("No ping before offering a pool address: while dnsmasq waits for the echo")
    lines.note("(about 3 s) it answers nobody, which stalls a room of PCs booting at once.")
    lines.add("no-ping")
    if net.gateway is not None:
        lines.add(f"dhcp-option=option:router,{net.gateway}", "site.network.gateway")
    else:
        lines.note("No gateway: an empty option stops dnsmasq offering itself as router.")
        lines.add("dhcp-option=option:router", "site.network.gateway")
    if net.dns:
        servers = ",".join(str(address) for address in net.dns)
        lines.add(f"dhcp-option=option:dns-server,{servers}", "site.network.dns")
    elif site.server.serve_dns:
        lines.note("0.0.0.0 stands for this server's own address.")
        lines.add("dhcp-option=option:dns-server,0.0.0.0", "site.server.serve_dns")
    else:
        lines.note("No DNS server to hand out.")
        lines.add("dhcp-option=option:dns-server", "site.network.dns")
    lines.note("One lease per NIC: firmware, Clonezilla and Windows send different client ids.")
    lines.add("dhcp-ignore-clid")
    lines.blank()
    bios = site.boot.bios_loader
    uefi, uefi_origin = uefi_boot_file(site)
    lines.note("Boot file by DHCP option 93, only for PCs of the site repo (tag known).")
    for arch in BIOS_ARCHES:
        lines.add(f"dhcp-match=set:{TAG_BIOS},option:client-arch,{arch}")
    for arch in EFI64_ARCHES:
        lines.add(f"dhcp-match=set:{TAG_EFI64},option:client-arch,{arch}")
    lines.add(f"dhcp-boot=tag:{TAG_PC},tag:{TAG_BIOS},{bios}", "site.boot.bios_loader")
    lines.add(f"dhcp-boot=tag:{TAG_PC},tag:{TAG_EFI64},{uefi}", uefi_origin)
    lines.blank()


def _proxy(lines: Lines, site: Site) -> None:
    subnet: IPv4Network = site.network.subnet
    lines.note("Proxy DHCP: another server hands out addresses; answer PXE requests only.")
    lines.add(
        f"dhcp-range={subnet.network_address},proxy,{subnet.netmask}", "site.network.dhcp.mode"
    )
    bios = site.boot.bios_loader
    uefi, uefi_origin = uefi_boot_file(site)
    lines.note("One PXE service per architecture (x86PC = 0, BC_EFI = 7, x86-64_EFI = 9),")
    lines.note("only for PCs of the site repo (tag known).")
    menu = '"Kitting network boot"'
    lines.add(f"pxe-service=tag:{TAG_PC},x86PC,{menu},{bios}", "site.boot.bios_loader")
    lines.add(f"pxe-service=tag:{TAG_PC},BC_EFI,{menu},{uefi}", uefi_origin)
    lines.add(f"pxe-service=tag:{TAG_PC},x86-64_EFI,{menu},{uefi}", uefi_origin)
    lines.blank()


def _hosts(site: Site, layout: Layout, pc: Pc, origin: str) -> Artifact:
    lines = Lines()
    lines.header()
    authoritative = site.network.dhcp.mode is DhcpMode.authoritative
    if authoritative and pc.ip is not None:
        # One line with every MAC: dnsmasq refuses the same address on two lines, and this
        # form lets whichever NIC boots take the fixed address (a docked laptop has two).
        macs = ",".join(pc.macs)
        lines.add(f"{macs},{pc.ip},{pc.hostname}", origin)
    else:
        for index, mac in enumerate(pc.macs):
            lines.add(f"{mac},{pc.hostname}", f"{origin}.macs[{index}]")
    return lines.artifact(
        hosts_file(layout, pc),
        Service.dnsmasq,
        on_add=Effect.none,
        on_change=Effect.reload,
        on_remove=Effect.reload,
    )
