"""plan.build on hand-made facts; every expected action, reason and diff worked out by hand."""

from __future__ import annotations

import hashlib

from reconciler import plan
from reconciler.facts import Facts, FileState, LiveFirewall, ServiceState
from reconciler.inventory import ABSENT, Entry, FirewallRecord, Inventory
from reconciler.plan import (
    ApplyFirewall,
    Conflict,
    DropFirewall,
    NoOp,
    RecordFile,
    ReloadService,
    RemoveFile,
    RestartService,
)
from reconciler.rendered import Artifact, Effect, Rendered, Service

from .helpers import (
    BOOT,
    HOSTS,
    LAYOUT,
    MAIN,
    NFT,
    boot_menu,
    main_conf,
    nft_file,
    rendered,
    reservation,
)

PC1 = f"{HOSTS}/pc-1"
PC2 = f"{HOSTS}/pc-2"
LINE1 = "aa:bb:cc:dd:ee:01,192.168.100.11,pc-1"
LINE2 = "aa:bb:cc:dd:ee:02,pc-2"
MAIN_TEXT = "port=0\ndhcp-hostsdir=/etc/kitting/dhcp-hosts\n"


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def reservation_entry(content: bytes) -> Entry:
    return Entry(sha(content), 0o644, Service.dnsmasq, Effect.reload)


def dnsmasq_site() -> Rendered:
    return rendered(reservation("pc-1", LINE1), reservation("pc-2", LINE2), main_conf(MAIN_TEXT))


def in_sync(wanted: Rendered) -> Facts:
    """The server after a complete apply of `wanted`."""
    files = {p: FileState(a.content, a.mode) for p, a in wanted.artifacts.items()}
    entries = {
        p: Entry(sha(a.content), a.mode, a.service, a.on_remove)
        for p, a in wanted.artifacts.items()
    }
    services = {a.service: ServiceState.unknown for a in wanted.artifacts.values() if a.service}
    return Facts(files=files, inventory=Inventory(files=entries), services=services)


def with_file(facts: Facts, path: str, content: bytes | None, mode: int = 0o644) -> Facts:
    files = dict(facts.files)
    files[path] = FileState(content, None if content is None else mode)
    return Facts(files, facts.inventory, facts.firewall, facts.services, facts.stale_temps)


def with_entry(facts: Facts, path: str, entry: Entry | None) -> Facts:
    owned = facts.inventory.with_entries({path: entry})
    return Facts(facts.files, owned, facts.firewall, facts.services, facts.stale_temps)


def build(wanted: Rendered, facts: Facts, *, adopt: bool = False) -> plan.Plan:
    return plan.build(wanted, facts, layout=LAYOUT, adopt=adopt)


# ---------------------------------------------------------------- files and services


def test_fresh_server_creates_everything_and_restarts_dnsmasq() -> None:
    wanted = dnsmasq_site()
    empty = Facts(services={Service.dnsmasq: ServiceState.active})
    built = build(wanted, empty)

    assert [(w.path, w.reason, w.create, w.effect) for w in built.writes] == [
        (MAIN, "new", True, Effect.restart),
        (PC1, "new", True, Effect.none),
        (PC2, "new", True, Effect.none),
    ]
    assert built.writes[1].diff == (f"--- /dev/null\n+++ {PC1} (desired)\n@@ -0,0 +1 @@\n+{LINE1}")
    assert built.services == (
        RestartService(
            Service.dnsmasq,
            f"{MAIN} changed; only a restart re-reads it",
            (PC1, PC2, MAIN),
        ),
    )
    assert built.summary == "+2 reservations, +1 file, dnsmasq: restart"
    assert built.changes and not built.blocked


def test_nothing_to_do_says_why() -> None:
    wanted = dnsmasq_site()
    built = build(wanted, in_sync(wanted))
    assert not built.changes
    assert built.actions == ()
    assert built.summary == "no changes: all 3 files match; inventory clean"
    assert built.noops == (NoOp("dnsmasq", "none of its files changed"),)


def test_a_new_reservation_needs_no_signal() -> None:
    wanted = dnsmasq_site()
    before = in_sync(wanted)
    grown = rendered(*wanted.artifacts.values(), reservation("pc-3", "aa:bb:cc:dd:ee:03,pc-3"))
    built = build(grown, before)
    assert [(w.path, w.reason) for w in built.writes] == [(f"{HOSTS}/pc-3", "new")]
    assert built.services == ()
    assert built.noops == (NoOp("dnsmasq", "1 changed file, all noticed without a signal"),)
    assert built.summary == "+1 reservation"


def test_a_changed_reservation_asks_for_a_reload() -> None:
    before = in_sync(dnsmasq_site())
    changed = rendered(
        reservation("pc-1", "aa:bb:cc:dd:ee:01,192.168.100.12,pc-1"),
        reservation("pc-2", LINE2),
        main_conf(MAIN_TEXT),
    )
    built = build(changed, before)
    (write,) = built.writes
    assert (write.path, write.reason, write.drift, write.create) == (
        PC1,
        "content differs from desired",
        False,
        False,
    )
    assert write.diff == (
        f"--- {PC1} (server)\n+++ {PC1} (desired)\n@@ -1 +1 @@\n"
        f"-{LINE1}\n+aa:bb:cc:dd:ee:01,192.168.100.12,pc-1"
    )
    assert write.previous == (LINE1 + "\n").encode()
    assert built.services == (
        ReloadService(Service.dnsmasq, "1 changed file needs a reload", (PC1,)),
    )
    assert built.summary == "~1 reservation, dnsmasq: reload"


def test_a_reservation_no_longer_rendered_is_removed_because_it_is_owned() -> None:
    before = in_sync(dnsmasq_site())
    smaller = rendered(reservation("pc-1", LINE1), main_conf(MAIN_TEXT))
    built = build(smaller, before)
    assert built.writes == ()
    assert built.removes == (
        RemoveFile(
            PC2,
            "no longer rendered",
            (LINE2 + "\n").encode(),
            0o644,
            f"--- {PC2} (server)\n+++ /dev/null\n@@ -1 +0,0 @@\n-{LINE2}",
            service=Service.dnsmasq,
            effect=Effect.reload,
        ),
    )
    assert built.services == (
        ReloadService(Service.dnsmasq, "1 changed file needs a reload", (PC2,)),
    )
    assert built.summary == "-1 reservation, dnsmasq: reload"


def test_files_nobody_owns_are_never_removed() -> None:
    # A file in the hosts directory that is not in the inventory is not ours to prune.
    before = with_file(in_sync(dnsmasq_site()), f"{HOSTS}/by-hand", b"x\n")
    assert build(dnsmasq_site(), before).changes is False


def test_owned_file_gone_and_no_longer_rendered_is_forgotten() -> None:
    before = with_file(in_sync(dnsmasq_site()), PC2, None)
    built = build(rendered(reservation("pc-1", LINE1), main_conf(MAIN_TEXT)), before)
    assert built.records == (RecordFile(PC2, None, "no longer rendered and already gone"),)
    assert built.removes == ()
    assert built.summary == "inventory: 1 entry"


def test_removing_a_hand_edited_owned_file_says_drift() -> None:
    before = with_file(in_sync(dnsmasq_site()), PC2, b"edited\n")
    built = build(rendered(reservation("pc-1", LINE1), main_conf(MAIN_TEXT)), before)
    (remove,) = built.removes
    assert remove.reason == (
        "no longer rendered; drift: it was edited by hand since the reconciler wrote it"
    )
    assert remove.drift
    assert built.summary == "-1 reservation, 1 drifted, dnsmasq: reload"


# ---------------------------------------------------------------- ownership


def test_an_unowned_file_in_the_way_blocks_the_plan() -> None:
    wanted = dnsmasq_site()
    before = with_entry(with_file(in_sync(wanted), MAIN, b"# from the package\n"), MAIN, None)
    built = build(wanted, before)
    assert built.writes == ()
    assert built.conflicts == (
        Conflict(
            MAIN,
            "exists but is not owned by the reconciler (not in its inventory), so it is never "
            "overwritten silently: move it away, or plan with adopt",
            f"--- {MAIN} (server)\n+++ {MAIN} (desired)\n@@ -1 +1,2 @@\n"
            "-# from the package\n+port=0\n+dhcp-hostsdir=/etc/kitting/dhcp-hosts",
        ),
    )
    assert built.blocked
    assert built.summary == "1 conflict (blocked)"


def test_an_unowned_identical_file_still_blocks_without_adopt() -> None:
    wanted = dnsmasq_site()
    before = with_entry(in_sync(wanted), MAIN, None)
    (conflict,) = build(wanted, before).conflicts
    assert conflict.reason.endswith(
        "never overwritten silently (its content already matches desired): move it away, "
        "or plan with adopt"
    )
    assert conflict.diff == ""


def test_adopt_takes_over_an_unowned_file() -> None:
    wanted = dnsmasq_site()
    before = with_entry(with_file(in_sync(wanted), MAIN, b"# from the package\n"), MAIN, None)
    built = build(wanted, before, adopt=True)
    assert built.conflicts == ()
    (write,) = built.writes
    assert (write.path, write.adopt, write.reason) == (
        MAIN,
        True,
        "adopt: take over the unowned file; content differs from desired",
    )
    assert built.services[0].kind == "restart"


def test_adopt_of_an_identical_unowned_file_only_records_it() -> None:
    wanted = dnsmasq_site()
    built = build(wanted, with_entry(in_sync(wanted), MAIN, None), adopt=True)
    assert built.writes == ()
    assert built.records == (
        RecordFile(
            MAIN,
            Entry(sha(MAIN_TEXT.encode()), 0o644, Service.dnsmasq, Effect.restart),
            "adopt: unowned file already matches",
        ),
    )
    assert built.services == ()


# ---------------------------------------------------------------- drift


def test_a_hand_edit_of_an_owned_file_is_drift_with_its_diff() -> None:
    wanted = dnsmasq_site()
    before = with_file(in_sync(wanted), PC1, b"aa:bb:cc:dd:ee:01,192.168.100.99,pc-1\n")
    built = build(wanted, before)
    (write,) = built.writes
    assert (write.reason, write.drift) == ("drift: owned file edited by hand", True)
    assert write.diff == (
        f"--- {PC1} (server)\n+++ {PC1} (desired)\n@@ -1 +1 @@\n"
        f"-aa:bb:cc:dd:ee:01,192.168.100.99,pc-1\n+{LINE1}"
    )
    assert built.summary == "~1 reservation, 1 drifted, dnsmasq: reload"


def test_an_owned_file_deleted_by_hand_is_drift() -> None:
    wanted = dnsmasq_site()
    built = build(wanted, with_file(in_sync(wanted), PC1, None))
    (write,) = built.writes
    assert (write.reason, write.drift, write.create) == (
        "drift: owned file was deleted by hand",
        True,
        True,
    )
    assert built.summary == "+1 reservation, 1 drifted"


def test_a_mode_changed_by_hand_is_drift_and_needs_no_signal() -> None:
    wanted = dnsmasq_site()
    built = build(wanted, with_file(in_sync(wanted), PC1, (LINE1 + "\n").encode(), 0o600))
    (write,) = built.writes
    assert write.reason == "drift: mode changed by hand; mode 0600 differs from desired 0644"
    assert (write.drift, write.effect, write.diff) == (True, Effect.none, "")
    assert built.services == ()


def test_a_desired_mode_change_is_not_drift() -> None:
    wanted = dnsmasq_site()
    before = in_sync(wanted)
    tighter = rendered(
        reservation("pc-1", LINE1),
        reservation("pc-2", LINE2),
        Artifact(**{**main_conf(MAIN_TEXT).__dict__, "mode": 0o600}),
    )
    (write,) = build(tighter, before).writes
    assert (write.reason, write.drift) == ("mode 0644 differs from desired 0600", False)


# ---------------------------------------------------------------- after a crash


def test_pending_write_not_yet_done_is_completed_without_calling_it_drift() -> None:
    wanted = dnsmasq_site()
    old = b"aa:bb:cc:dd:ee:01,192.168.100.10,pc-1\n"
    pending = Entry(sha((LINE1 + "\n").encode()), 0o644, Service.dnsmasq, Effect.reload, sha(old))
    before = with_entry(with_file(in_sync(wanted), PC1, old), PC1, pending)
    (write,) = build(wanted, before).writes
    assert (write.reason, write.drift) == (
        "content differs from desired (an interrupted apply had not replaced it)",
        False,
    )


def test_pending_write_already_done_only_settles_the_inventory() -> None:
    wanted = dnsmasq_site()
    content = (LINE1 + "\n").encode()
    pending = Entry(sha(content), 0o644, Service.dnsmasq, Effect.reload, pending_from=ABSENT)
    built = build(wanted, with_entry(in_sync(wanted), PC1, pending))
    assert built.writes == ()
    assert built.records == (
        RecordFile(
            PC1,
            reservation_entry(content),
            "an interrupted apply had already written it; settle its inventory entry",
        ),
    )
    assert built.services == ()


def test_pending_create_not_yet_done_is_new() -> None:
    wanted = dnsmasq_site()
    pending = Entry(sha(b"whatever"), pending_from=ABSENT)
    before = with_entry(with_file(in_sync(wanted), PC1, None), PC1, pending)
    (write,) = build(wanted, before).writes
    assert (write.reason, write.drift) == (
        "new (an interrupted apply had not written it yet)",
        False,
    )


def test_leftover_temp_files_are_removed() -> None:
    wanted = dnsmasq_site()
    synced = in_sync(wanted)
    temp = f"{HOSTS}/.pc-1.0a1b2c3d.kitting-tmp~"
    before = Facts(synced.files, synced.inventory, synced.firewall, synced.services, (temp,))
    built = build(wanted, before)
    (remove,) = built.removes
    assert (remove.path, remove.temp, remove.reason, remove.service) == (
        temp,
        True,
        "temporary file left by an interrupted write",
        None,
    )
    assert built.services == ()
    assert built.summary == "-1 leftover temp file"


# ---------------------------------------------------------------- service states


def test_an_inactive_service_is_started_instead_of_reloaded() -> None:
    wanted = dnsmasq_site()
    synced = in_sync(wanted)
    stopped = Facts(
        synced.files, synced.inventory, services={Service.dnsmasq: ServiceState.inactive}
    )
    built = build(wanted, with_file(stopped, PC1, b"edited\n"))
    assert built.services == (
        RestartService(
            Service.dnsmasq, "1 changed file; it is inactive: a restart starts it", (PC1,)
        ),
    )
    assert built.notes == ("dnsmasq is inactive on the server",)


def test_files_without_a_service_signal_nobody() -> None:
    before = Facts(
        files={BOOT: FileState(b"old", 0o644)},
        inventory=Inventory(files={BOOT: Entry(sha(b"old"), on_remove=Effect.reload)}),
    )
    built = build(rendered(boot_menu("new")), before)
    assert [w.path for w in built.writes] == [BOOT]
    assert built.services == ()
    assert built.summary == "~1 file"


def test_render_notes_are_kept() -> None:
    wanted = rendered(boot_menu("m"), notes=("ARM64 clients get no boot file",))
    assert build(wanted, Facts()).notes == ("ARM64 clients get no boot file",)


# ---------------------------------------------------------------- firewall

RULES_V1 = (
    "table inet kitting {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n"
    '\t\tiifname "e0" tcp dport 22 accept\n\t\tiifname "e0" udp dport 69 accept\n\t}\n}\n'
)
RULES_V2 = RULES_V1.replace("udp dport 69 accept", "udp dport 69 drop")
LOADED = LiveFirewall(
    observed=True, present=True, listing="table inet kitting {\n}\n", fingerprint="a" * 64
)
RECORD = FirewallRecord("a" * 64, "table inet kitting {\n}\n")


def firewall_facts(
    live: LiveFirewall, record: FirewallRecord | None, text: str = RULES_V1
) -> Facts:
    synced = in_sync(rendered(nft_file(text)))
    owned = Inventory(files=synced.inventory.files, firewall=record)
    return Facts(synced.files, owned, live, synced.services)


def test_a_changed_firewall_file_loads_the_table_and_counts_rules() -> None:
    built = build(rendered(nft_file(RULES_V2)), firewall_facts(LOADED, RECORD))
    assert [w.path for w in built.writes] == [NFT]
    assert built.firewall == (
        ApplyFirewall(
            NFT,
            "rendered firewall file changed (+1 -1 rules)",
            file_changed=True,
            rules_added=1,
            rules_removed=1,
        ),
    )
    assert built.services == ()  # the table is loaded, never "reloaded" through systemd
    assert built.summary == "~1 file, firewall: 2 rules changed (+1 -1)"


def test_a_firewall_matching_what_was_loaded_needs_nothing() -> None:
    built = build(rendered(nft_file(RULES_V1)), firewall_facts(LOADED, RECORD))
    assert not built.changes
    assert NoOp("firewall", "live table inet kitting matches what was loaded") in built.noops


def test_a_hand_edited_live_table_is_drift_with_the_listing_diff() -> None:
    edited = LiveFirewall(
        observed=True,
        present=True,
        listing="table inet kitting {\n\tchain x {\n\t}\n}\n",
        fingerprint="b" * 64,
    )
    built = build(rendered(nft_file(RULES_V1)), firewall_facts(edited, RECORD))
    assert built.firewall == (
        ApplyFirewall(
            NFT,
            "drift: live table inet kitting differs from what the reconciler loaded",
            drift=True,
            diff=(
                "--- loaded by the reconciler\n+++ live now\n@@ -1,2 +1,4 @@\n"
                " table inet kitting {\n+\tchain x {\n+\t}\n }"
            ),
        ),
    )
    assert built.summary == "firewall: live table drifted"


def test_a_missing_live_table_is_drift() -> None:
    gone = LiveFirewall(observed=True, present=False)
    (action,) = build(rendered(nft_file(RULES_V1)), firewall_facts(gone, RECORD)).firewall
    assert action == ApplyFirewall(
        NFT,
        "drift: live table inet kitting is missing (flushed, or not loaded since boot)",
        drift=True,
    )


def test_a_table_never_recorded_is_loaded_once() -> None:
    (action,) = build(rendered(nft_file(RULES_V1)), firewall_facts(LOADED, None)).firewall
    assert action.reason == (
        "live table inet kitting was never recorded by the reconciler: load it to a known state"
    )
    assert build(rendered(nft_file(RULES_V1)), firewall_facts(LOADED, None)).summary == (
        "firewall: load table"
    )


def test_an_unobserved_firewall_is_said_so_and_left_alone() -> None:
    unseen = LiveFirewall(observed=False, error="not looked at")
    built = build(rendered(nft_file(RULES_V1)), firewall_facts(unseen, None))
    assert not built.changes
    assert NoOp("firewall", "live table not observed: not looked at") in built.noops


def test_a_firewall_file_no_longer_rendered_drops_the_table() -> None:
    built = build(rendered(boot_menu("m")), firewall_facts(LOADED, RECORD))
    assert [r.path for r in built.removes] == [NFT]
    assert built.firewall == (DropFirewall("its file is no longer rendered: delete the table"),)


# ---------------------------------------------------------------- the summary line


def test_summary_of_a_mixed_plan() -> None:
    old_main = main_conf("port=0\n")
    extra_a = boot_menu("a")
    extra_b = Artifact(path="/srv/tftp/old-b", content=b"b", service=None)
    before_set = rendered(old_main, nft_file(RULES_V1), extra_a, extra_b)
    synced = in_sync(before_set)
    before = Facts(
        synced.files,
        Inventory(files=synced.inventory.files, firewall=RECORD),
        LOADED,
        {Service.dnsmasq: ServiceState.active, Service.nftables: ServiceState.unknown},
    )
    twenty = [reservation(f"pc-{n:02d}", f"aa:bb:cc:dd:ee:{n:02x},pc-{n:02d}") for n in range(20)]
    after = rendered(*twenty, main_conf(MAIN_TEXT), nft_file(RULES_V2))
    built = build(after, before)
    assert built.summary == (
        "+20 reservations, ~2 files, -2 files, firewall: 2 rules changed (+1 -1), dnsmasq: restart"
    )


def test_the_plan_is_the_same_whatever_the_input_order() -> None:
    wanted = dnsmasq_site()
    reversed_order = Rendered(dict(reversed(list(wanted.artifacts.items()))))
    assert build(wanted, Facts()) == build(reversed_order, Facts())
