"""Observe: what is on the live server now, as plain values for `plan`.

`gather` reads every rendered path and every owned path through the Host seam, lists the
directories they live in for temporary files an interrupted write left behind, asks the
service manager how each involved service is, and reads the reconciler's nftables table
through the firewall reader seam (`live_firewall`). Parsing of program output lives in pure
functions (`nftables`, `services.parse_systemctl_show`) tested on captured output. This
module imports no seam that runs programs, so `plan` can use its values and stay pure.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Protocol

from reconciler.host import Host, is_temp_name
from reconciler.inventory import Inventory, digest
from reconciler.rendered import Rendered, Service


class ServiceState(StrEnum):
    active = "active"
    reloading = "reloading"
    activating = "activating"
    inactive = "inactive"
    failed = "failed"
    not_found = "not-found"
    unknown = "unknown"
    """Not observed (no service manager, or it could not be asked)."""


class ServiceStates(Protocol):
    """The part of the service manager that observe needs."""

    def state(self, service: Service) -> ServiceState: ...


@dataclass(frozen=True)
class FileState:
    content: bytes | None
    mode: int | None = None

    @property
    def exists(self) -> bool:
        return self.content is not None

    @cached_property
    def sha256(self) -> str | None:
        return None if self.content is None else digest(self.content)


@dataclass(frozen=True)
class LiveFirewall:
    """The reconciler's nftables table as the kernel reports it."""

    observed: bool
    present: bool = False
    listing: str = ""
    """`nft -s list table inet kitting`: for people (diffs in a drift report)."""
    fingerprint: str = ""
    """Of the normalized JSON listing: for comparison (see `nftables`)."""
    error: str = ""


class FirewallReader(Protocol):
    def read(self) -> LiveFirewall: ...


@dataclass(frozen=True)
class Facts:
    files: Mapping[str, FileState] = field(default_factory=dict)
    """Every rendered path and every owned path (absent files included)."""
    inventory: Inventory = field(default_factory=Inventory)
    firewall: LiveFirewall = field(default_factory=lambda: LiveFirewall(observed=False))
    services: Mapping[Service, ServiceState] = field(default_factory=dict)
    stale_temps: tuple[str, ...] = ()
    """Temporary files of ours left behind by an interrupted write."""

    def file(self, path: str) -> FileState:
        return self.files.get(path, FileState(None))


def gather(
    host: Host,
    rendered: Rendered,
    inventory: Inventory,
    services: ServiceStates,
    firewall: FirewallReader,
    *,
    scan_dirs: Iterable[str] = (),
) -> Facts:
    """`scan_dirs`: more directories to look in for leftover temporary files (the state
    directory, where the inventory itself is replaced atomically)."""
    paths = sorted(set(rendered.artifacts) | set(inventory.files))
    files = {p: FileState(content, mode) for p, (content, mode) in host.read_files(paths).items()}
    directories = {posixpath.dirname(p) for p in paths} | set(scan_dirs)
    stale = sorted(
        posixpath.join(directory, name)
        for directory in sorted(directories)
        for name in host.list_dir(directory)
        if is_temp_name(name)
    )
    involved = {a.service for a in rendered.artifacts.values()}
    involved |= {e.service for e in inventory.files.values()}
    states = {s: services.state(s) for s in sorted(x for x in involved if x is not None)}
    uses_firewall = Service.nftables in involved
    live = firewall.read() if uses_firewall else LiveFirewall(observed=False)
    return Facts(
        files=files,
        inventory=inventory,
        firewall=live,
        services=states,
        stale_temps=tuple(stale),
    )
