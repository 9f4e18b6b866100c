"""render: desired state in, the server's files out (`render.all`).

Each module renders the files of one program: dnsmasq (DHCP/TFTP), pxe (boot menus),
nfs (the images export), nftables (the kitting table) and sshd. Output depends on the
desired state alone: sorted, stable, no timestamps and no commit id, so rendering the same
state twice gives byte-identical files and an idle reconcile changes nothing.

Purely computational: no I/O, no clock, no subprocess.
"""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.desired import Desired
from reconciler.layout import Layout
from reconciler.render import dnsmasq, nfs, nftables, pxe, sshd
from reconciler.rendered import Artifact, Rendered

__all__ = ["DEFAULT_LAYOUT", "all", "dnsmasq", "nfs", "nftables", "pxe", "sshd"]

DEFAULT_LAYOUT = Layout()


def all(
    desired: Desired, layout: Layout = DEFAULT_LAYOUT, *, nfs_writers: Sequence[nfs.Writer] = ()
) -> Rendered:
    """Every artifact of `desired`, keyed and ordered by path, with notes for the plan.

    No PC is armed here: per-PC boot files are written by deployments (`pxe.armed`), which
    also name the capturing PCs that may write the images export (`nfs_writers`).
    """
    artifacts: list[Artifact] = []
    notes: list[str] = []
    for stage in (dnsmasq.artifacts(desired, layout), nftables.artifacts(desired, layout)):
        artifacts += stage[0]
        notes += stage[1]
    nfs_artifacts, nfs_notes = nfs.artifacts(desired.site, layout, writers=nfs_writers)
    artifacts += nfs_artifacts
    notes += nfs_notes
    artifacts += pxe.defaults(desired.site)
    notes += pxe.notes(desired.site)
    artifacts += sshd.artifacts(desired.site, layout)
    by_path: dict[str, Artifact] = {}
    for artifact in artifacts:
        if artifact.path in by_path:
            raise ValueError(f"two rendered files share the path {artifact.path}")
        by_path[artifact.path] = artifact
    return Rendered(
        artifacts={path: by_path[path] for path in sorted(by_path)},
        notes=tuple(notes),
    )
