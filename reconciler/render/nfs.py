"""NFS: the images root, read-only, to the kitting subnet only, root squashed.

Clonezilla clients mount it on /home/partimag to read an image's metadata (multicast) or
the whole image (unicast). It is never exported to '*', and writable only for the one PC
of a capture session while that session is armed (`Writer`): that address alone gets
read-write access without root squashing (ocs-sr saves as root), for as long as the
deployments say; every other client keeps read-only, squashed access.

Kernel server: one line in /etc/exports.d/ plus mountd pinned to a fixed port (nfs.conf)
so the firewall can name it. nfs-ganesha: one EXPORT block whose CLIENT list is the subnet;
the EXPORT itself grants nothing (Access_Type = None), so a client outside the subnet
matches no CLIENT block and gets no access.

Purely computational.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

from reconciler.desired import NfsBackend, Site
from reconciler.layout import Layout
from reconciler.render._lines import Lines
from reconciler.rendered import Artifact, Check, Effect, Service

GANESHA_EXPORT_ID = 1
"""Fixed: changing it is a remove and re-add of the export for every client."""

KERNEL_EXPORT_OPTIONS = "ro,root_squash,sync,no_subtree_check,secure,sec=sys"
"""Read-only; root becomes nobody; explicit sync and no_subtree_check (exportfs warns
otherwise); requests only from privileged ports; AUTH_SYS only."""

KERNEL_WRITER_OPTIONS = "rw,no_root_squash,sync,no_subtree_check,secure,sec=sys"
"""The capturing PC: it writes the new image as root."""


@dataclass(frozen=True)
class Writer:
    """The one PC that may write the images root as root: a capture session's master PC."""

    address: IPv4Address
    origin: str = ""
    """The desired-state field that asks for it, e.g. "batches.master-2026"."""


def artifacts(
    site: Site, layout: Layout, *, writers: Sequence[Writer] = ()
) -> tuple[list[Artifact], list[str]]:
    notes = [
        "Root is squashed on the images export: unicast restores need world-readable image "
        "files (Clonezilla saves them 0600 unless -noabo; captures here use -noabo)."
    ]
    chosen = sorted(set(writers), key=lambda w: w.address)
    for writer in chosen:
        if writer.address not in site.network.subnet:
            raise ValueError(f"the capturing PC {writer.address} is outside {site.network.subnet}")
    if site.nfs.backend is NfsBackend.ganesha:
        return [_ganesha(site, layout, chosen)], notes
    return [_exports(site, layout, chosen), _nfs_conf(site, layout)], notes


def _exports(site: Site, layout: Layout, writers: Sequence[Writer]) -> Artifact:
    lines = Lines()
    lines.header()
    lines.note("Clonezilla image repository: read-only, kitting subnet only, root squashed.")
    lines.note("No blank between the client and '(': a blank would export to everyone.")
    if not writers:
        lines.add(
            f"{site.images_root} {site.network.subnet}({KERNEL_EXPORT_OPTIONS})",
            "site.images_root",
        )
    else:
        lines.note("During a capture its master PC alone writes, as root; a single host")
        lines.note("takes precedence over the subnet wherever it stands on the line.")
        hosts = " ".join(f"{w.address}({KERNEL_WRITER_OPTIONS})" for w in writers)
        lines.add(
            f"{site.images_root} {hosts} {site.network.subnet}({KERNEL_EXPORT_OPTIONS})",
            ",".join(w.origin for w in writers) or "site.images_root",
        )
    return lines.artifact(
        layout.exports_file,
        Service.nfs_kernel,
        on_add=Effect.reload,
        on_change=Effect.reload,
        on_remove=Effect.reload,
        check=Check.exports,
    )


def _nfs_conf(site: Site, layout: Layout) -> Artifact:
    lines = Lines()
    lines.header()
    lines.note("mountd on a fixed port, so the firewall can open exactly that port.")
    lines.add("[mountd]")
    lines.add(f"port={site.nfs.mountd_port}", "site.nfs.mountd_port")
    # rpc.mountd reads its port only at start.
    return lines.artifact(
        layout.nfs_conf_file,
        Service.nfs_kernel,
        on_add=Effect.restart,
        on_change=Effect.restart,
        on_remove=Effect.restart,
    )


def _ganesha(site: Site, layout: Layout, writers: Sequence[Writer]) -> Artifact:
    root = site.images_root
    lines = Lines()
    lines.header()
    lines.note("Included from ganesha.conf. NFS_CORE_PARAM is read only at start, so a")
    lines.note("change of this file restarts nfs-ganesha.")
    lines.add("NFS_CORE_PARAM {")
    lines.note("MOUNT on a fixed port, so the firewall can open exactly that port.", "    ")
    lines.add(f"    MNT_Port = {site.nfs.mountd_port};", "site.nfs.mountd_port")
    lines.add("    Protocols = 3, 4;")
    lines.note("NFSv3 mounts use the same path as NFSv4.", "    ")
    lines.add("    mount_path_pseudo = true;")
    lines.note("No lock manager and no quota service: nobody locks or writes a read-only", "    ")
    lines.note("image, and both would listen on ports the firewall does not open.", "    ")
    lines.add("    Enable_NLM = false;")
    lines.add("    Enable_RQUOTA = false;")
    lines.add("}")
    lines.blank()
    lines.add("EXPORT {")
    lines.add(f"    Export_Id = {GANESHA_EXPORT_ID};")
    lines.add(f'    Path = "{root}";', "site.images_root")
    lines.add(f'    Pseudo = "{root}";', "site.images_root")
    lines.add("    Protocols = 3, 4;")
    lines.add("    Transports = TCP;")
    lines.add("    SecType = sys;")
    lines.add("    PrivilegedPort = true;")
    lines.add("    Squash = root_squash;")
    lines.note("Nobody gets access unless a CLIENT block below grants it.", "    ")
    lines.add("    Access_Type = None;")
    lines.add("    FSAL {")
    lines.add("        Name = VFS;")
    lines.add("    }")
    for writer in writers:
        lines.note(
            "During a capture its master PC alone writes, as root (first match wins).", "    "
        )
        lines.add("    CLIENT {")
        lines.add(f"        Clients = {writer.address};", writer.origin)
        lines.add("        Access_Type = RW;")
        lines.add("        Squash = no_root_squash;")
        lines.add("    }")
    lines.add("    CLIENT {")
    lines.add(f"        Clients = {site.network.subnet};", "site.network.subnet")
    lines.add("        Access_Type = RO;")
    lines.add("        Squash = root_squash;")
    lines.add("    }")
    lines.add("}")
    return lines.artifact(
        layout.ganesha_conf,
        Service.nfs_ganesha,
        on_add=Effect.restart,
        on_change=Effect.restart,
        on_remove=Effect.restart,
        check=Check.ganesha,
    )
