"""What the desired state renders to: files for the server, each knowing its consumer.

`render` produces these; `plan` compares them with facts; `apply` writes them. Purely
computational: values only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum


class Service(StrEnum):
    """A program on the server that reads rendered files."""

    dnsmasq = "dnsmasq"
    nfs_kernel = "nfs-kernel-server"
    nfs_ganesha = "nfs-ganesha"
    nftables = "nftables"
    sshd = "sshd"


class Effect(IntEnum):
    """What a file change asks of its service, cheapest first (so max() picks the need)."""

    none = 0  # the program notices by itself (a new file in dnsmasq's hosts directory)
    reload = 1  # re-read without dropping clients (SIGHUP, exportfs -ra, nft -f, sshd reload)
    restart = 2  # only a restart re-reads it (dnsmasq's main file)


class Check(StrEnum):
    """The real program that must accept a candidate file before it is swapped in."""

    dnsmasq = "dnsmasq"
    nft = "nft"
    sshd = "sshd"
    exports = "exports"
    ganesha = "ganesha"


@dataclass(frozen=True)
class Artifact:
    """One file the reconciler owns on the server.

    `path` is absolute as the programs see it; apply writes it under --root. `origins`
    names, per line (1-based index = position), the desired-state field that produced it,
    or "" for a fixed line, so a rejected line can be traced back to the site repo.
    """

    path: str
    content: bytes
    service: Service | None
    on_add: Effect = Effect.reload
    on_change: Effect = Effect.reload
    on_remove: Effect = Effect.reload
    mode: int = 0o644
    check: Check | None = None
    origins: tuple[str, ...] = ()

    def origin_of_line(self, line: int) -> str:
        return self.origins[line - 1] if 0 < line <= len(self.origins) else ""


@dataclass(frozen=True)
class Rendered:
    """Every artifact of one desired state, keyed by path, plus notes for the plan."""

    artifacts: dict[str, Artifact] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    """Facts worth saying in a plan (e.g. 'ARM64 clients get no boot file')."""
