"""The inventory: deterministic JSON, pending intents, refusing what it cannot read."""

from __future__ import annotations

import hashlib

import pytest

from reconciler import inventory
from reconciler.host import MemoryHost
from reconciler.inventory import ABSENT, Entry, FirewallRecord, Inventory, InventoryError
from reconciler.rendered import Effect, Service

from .helpers import INVENTORY, LAYOUT

SHA_OLD = hashlib.sha256(b"old\n").hexdigest()
SHA_NEW = hashlib.sha256(b"new\n").hexdigest()


def test_json_is_sorted_with_octal_modes_and_a_final_newline() -> None:
    owned = Inventory(
        files={
            "/etc/z": Entry(SHA_NEW, 0o600, None, Effect.none),
            "/etc/a": Entry(SHA_OLD, 0o644, Service.dnsmasq, Effect.restart, pending_from=ABSENT),
        },
        firewall=FirewallRecord("f" * 64, "table inet kitting {\n}\n"),
        commit="abc123",
    )
    expected = (
        "{\n"
        ' "commit": "abc123",\n'
        ' "files": {\n'
        '  "/etc/a": {\n'
        '   "mode": "0644",\n'
        '   "on_remove": "restart",\n'
        '   "pending_from": "absent",\n'
        '   "service": "dnsmasq",\n'
        f'   "sha256": "{SHA_OLD}"\n'
        "  },\n"
        '  "/etc/z": {\n'
        '   "mode": "0600",\n'
        '   "on_remove": "none",\n'
        '   "service": null,\n'
        f'   "sha256": "{SHA_NEW}"\n'
        "  }\n"
        " },\n"
        ' "firewall": {\n'
        f'  "fingerprint": "{"f" * 64}",\n'
        '  "listing": "table inet kitting {\\n}\\n"\n'
        " },\n"
        ' "version": 1\n'
        "}\n"
    )
    assert inventory.to_json(owned).decode() == expected
    assert inventory.from_json(expected.encode()) == owned


def test_load_of_a_fresh_server_is_empty_and_save_round_trips() -> None:
    host = MemoryHost()
    assert inventory.load(host, LAYOUT) == Inventory()
    owned = Inventory(files={"/etc/a": Entry(SHA_NEW)})
    inventory.save(host, LAYOUT, owned)
    assert host.stat_mode(INVENTORY) == 0o600
    assert inventory.load(host, LAYOUT) == owned


def test_an_entry_accepts_what_we_wrote_and_what_a_pending_write_replaces() -> None:
    settled = Entry(SHA_NEW)
    assert settled.accepts(SHA_NEW)
    assert not settled.accepts(SHA_OLD)
    assert not settled.accepts(None)
    replacing = Entry(SHA_NEW, pending_from=SHA_OLD)
    assert replacing.accepts(SHA_NEW) and replacing.accepts(SHA_OLD)
    assert not replacing.accepts(None)
    creating = Entry(SHA_NEW, pending_from=ABSENT)
    assert creating.accepts(None) and creating.accepts(SHA_NEW)
    assert not creating.accepts(SHA_OLD)
    assert creating.settled() == Entry(SHA_NEW)


def test_with_entries_adds_replaces_and_drops() -> None:
    owned = Inventory(files={"/a": Entry(SHA_OLD), "/b": Entry(SHA_OLD)})
    changed = owned.with_entries({"/a": Entry(SHA_NEW), "/b": None, "/c": Entry(SHA_NEW)})
    assert changed.files == {"/a": Entry(SHA_NEW), "/c": Entry(SHA_NEW)}
    assert owned.files == {"/a": Entry(SHA_OLD), "/b": Entry(SHA_OLD)}  # unchanged value


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"not json", "unreadable inventory"),
        (b'{"version": 2, "files": {}}', "not an inventory of format 1"),
        (b'{"version": 1}', "unreadable inventory"),
        (
            b'{"version": 1, "files": {"/a": {"sha256": "x", "mode": "9", "service": null, '
            b'"on_remove": "none"}}}',
            "unreadable inventory",
        ),
        (
            b'{"version": 1, "files": {"/a": {"sha256": "x", "mode": "0644", "service": "ftp", '
            b'"on_remove": "none"}}}',
            "unreadable inventory",
        ),
    ],
)
def test_unreadable_inventories_are_refused(raw: bytes, words: str) -> None:
    with pytest.raises(InventoryError, match=words):
        inventory.from_json(raw)
