"""The reconciler's inventory: every file it owns on the server, with its content hash.

Ownership decides everything destructive: only inventory files are ever removed, and a
rendered path that exists but is not in the inventory is never overwritten silently.

Crash safety: before apply replaces files it records each one as *pending* here
(the hash it is about to write and the hash it replaces). After a crash the file holds
either of the two, and both are recognised as "ours, not a hand edit", so the next apply
simply finishes the job. The (de)serialization is pure; `load`/`save` go through a Host.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from reconciler.host import Host
from reconciler.layout import Layout
from reconciler.rendered import Effect, Service

FORMAT_VERSION = 1
FILE_NAME = "inventory.json"
ABSENT = "absent"
"""`pending_from` value for a file that did not exist before the pending write."""


class InventoryError(ValueError):
    """The inventory file cannot be read; apply must stop rather than guess ownership."""


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One owned file. `service` and `on_remove` are kept so that removing a file that is
    no longer rendered still tells its service what the removal needs."""

    sha256: str
    mode: int = 0o644
    service: Service | None = None
    on_remove: Effect = Effect.reload
    pending_from: str | None = None
    """Set while a write is in flight: the hash (or ABSENT) the file had before it."""

    def accepts(self, current_sha: str | None) -> bool:
        """Is this what we wrote (or what an interrupted write of ours left in place)?"""
        state = ABSENT if current_sha is None else current_sha
        return state == self.sha256 or (
            self.pending_from is not None and state == self.pending_from
        )

    def settled(self) -> Entry:
        return replace(self, pending_from=None)


@dataclass(frozen=True)
class FirewallRecord:
    """The kernel's own view of our nftables table right after we loaded it."""

    fingerprint: str
    listing: str


@dataclass(frozen=True)
class Inventory:
    files: Mapping[str, Entry] = field(default_factory=dict)
    firewall: FirewallRecord | None = None
    commit: str = ""
    """The site-repo commit of the last apply that changed the server and fully succeeded
    (an apply with nothing to do writes nothing, not even this)."""

    def owns(self, path: str) -> bool:
        return path in self.files

    def with_entries(self, entries: Mapping[str, Entry | None]) -> Inventory:
        """A copy where each path gets its new entry (None: no longer owned)."""
        files = dict(self.files)
        for path, entry in entries.items():
            if entry is None:
                files.pop(path, None)
            else:
                files[path] = entry
        return replace(self, files=files)


def path(layout: Layout) -> str:
    return posixpath.join(layout.state_dir, FILE_NAME)


def to_json(inventory: Inventory) -> bytes:
    """Deterministic JSON: sorted keys, modes as octal text, newline at the end."""
    files: dict[str, dict[str, Any]] = {}
    for name in sorted(inventory.files):
        entry = inventory.files[name]
        item: dict[str, Any] = {
            "sha256": entry.sha256,
            "mode": f"{entry.mode:04o}",
            "service": None if entry.service is None else entry.service.value,
            "on_remove": entry.on_remove.name,
        }
        if entry.pending_from is not None:
            item["pending_from"] = entry.pending_from
        files[name] = item
    body: dict[str, Any] = {"version": FORMAT_VERSION, "commit": inventory.commit, "files": files}
    if inventory.firewall is not None:
        body["firewall"] = {
            "fingerprint": inventory.firewall.fingerprint,
            "listing": inventory.firewall.listing,
        }
    return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()


def from_json(raw: bytes, source: str = FILE_NAME) -> Inventory:
    try:
        body = json.loads(raw)
        if not isinstance(body, dict) or body.get("version") != FORMAT_VERSION:
            raise InventoryError(f"{source}: not an inventory of format {FORMAT_VERSION}")
        files = {name: _entry(item) for name, item in body["files"].items()}
        firewall = body.get("firewall")
        record = (
            None
            if firewall is None
            else FirewallRecord(str(firewall["fingerprint"]), str(firewall["listing"]))
        )
        return Inventory(files=files, firewall=record, commit=str(body.get("commit", "")))
    except InventoryError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InventoryError(f"{source}: unreadable inventory ({error})") from error


def _entry(item: dict[str, Any]) -> Entry:
    service = item["service"]
    pending = item.get("pending_from")
    return Entry(
        sha256=str(item["sha256"]),
        mode=int(item["mode"], 8),
        service=None if service is None else Service(service),
        on_remove=Effect[item["on_remove"]],
        pending_from=None if pending is None else str(pending),
    )


def load(host: Host, layout: Layout) -> Inventory:
    """The inventory on the server; an empty one before the first apply."""
    raw = host.read(path(layout))
    return Inventory() if raw is None else from_json(raw, path(layout))


def save(host: Host, layout: Layout, inventory: Inventory) -> None:
    host.write_atomic(path(layout), to_json(inventory), 0o600)
