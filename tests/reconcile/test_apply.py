"""apply.run on an in-memory server: idempotence, drift repair, ownership, rollback."""

from __future__ import annotations

import hashlib
import json

from reconciler import inventory
from reconciler.apply import Result, Status
from reconciler.facts import LiveFirewall
from reconciler.host import MemoryHost
from reconciler.inventory import Entry, FirewallRecord
from reconciler.rendered import Effect, Rendered, Service
from reconciler.services import NoServices

from .helpers import (
    BOOT,
    HOSTS,
    INVENTORY,
    LAYOUT,
    MAIN,
    NFT,
    FailingServices,
    FixedFirewall,
    RejectLine,
    apply_once,
    boot_menu,
    main_conf,
    nft_file,
    rendered,
    reservation,
)

PC1, PC2, PC3 = f"{HOSTS}/pc-1", f"{HOSTS}/pc-2", f"{HOSTS}/pc-3"
LINE1 = "aa:bb:cc:dd:ee:01,192.168.100.11,pc-1"
LINE2 = "aa:bb:cc:dd:ee:02,pc-2"
MAIN_TEXT = "port=0\ndhcp-hostsdir=/etc/kitting/dhcp-hosts\n"


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def site() -> Rendered:
    return rendered(
        reservation("pc-1", LINE1, "departments/lab.yaml: pcs[0]"),
        reservation("pc-2", LINE2),
        main_conf(MAIN_TEXT),
        boot_menu("DEFAULT local\n"),
    )


def applied() -> tuple[MemoryHost, NoServices]:
    host, services = MemoryHost(), NoServices()
    _, report = apply_once(host, site(), services=services)
    assert report.ok
    return host, services


def test_first_apply_writes_every_file_records_them_and_restarts_dnsmasq() -> None:
    host, services = applied()
    assert host.text(PC1) == LINE1 + "\n"
    assert host.text(PC2) == LINE2 + "\n"
    assert host.text(MAIN) == MAIN_TEXT
    assert host.text(BOOT) == "DEFAULT local\n"
    assert services.calls == [("restart", "dnsmasq")]
    owned = inventory.load(host, LAYOUT)
    assert owned.commit == "c0ffee"
    assert owned.files == {
        PC1: Entry(sha(f"{LINE1}\n".encode()), 0o644, Service.dnsmasq, Effect.reload),
        PC2: Entry(sha(f"{LINE2}\n".encode()), 0o644, Service.dnsmasq, Effect.reload),
        MAIN: Entry(sha(MAIN_TEXT.encode()), 0o644, Service.dnsmasq, Effect.restart),
        BOOT: Entry(sha(b"DEFAULT local\n"), 0o644, None, Effect.reload),
    }


def test_write_order_inventory_first_then_service_less_files_then_dnsmasq_main_file_last() -> None:
    host, _ = applied()
    assert host.writes == [
        INVENTORY,  # write-ahead intent
        BOOT,
        INVENTORY,  # the service-less group settled
        PC1,
        PC2,
        MAIN,  # only a restart re-reads it: after the files it refers to
        INVENTORY,  # dnsmasq's group settled
        INVENTORY,  # commit recorded
    ]


def test_second_apply_writes_nothing_and_reloads_nothing() -> None:
    host, services = applied()
    writes, calls = list(host.writes), list(services.calls)
    built, report = apply_once(host, site(), services=services)
    assert not built.changes
    assert built.summary == "no changes: all 4 files match; inventory clean"
    assert report.results == ()
    assert host.writes == writes
    assert services.calls == calls


def test_drift_is_shown_then_repaired_with_a_reload() -> None:
    host, services = applied()
    host.files[PC1] = (b"aa:bb:cc:dd:ee:01,192.168.100.99,pc-1\n", 0o644)
    built, report = apply_once(host, site(), services=services)
    (write,) = built.writes
    assert write.drift
    assert "-aa:bb:cc:dd:ee:01,192.168.100.99,pc-1\n+" + LINE1 in write.diff
    assert host.text(PC1) == LINE1 + "\n"
    assert services.calls[-1] == ("reload", "dnsmasq")
    assert [(r.action, r.target, r.reason) for r in report.results] == [
        ("preflight", "candidates", "PreflightPassed"),
        ("write", PC1, "DriftRepaired"),
        ("reload", "dnsmasq", "ServiceReloaded"),
    ]
    again, _ = apply_once(host, site(), services=services)
    assert not again.changes


def test_an_unowned_file_is_never_overwritten() -> None:
    host = MemoryHost()
    host.files[MAIN] = (b"# shipped by a package\n", 0o644)
    services = NoServices()
    built, report = apply_once(host, site(), services=services)
    assert built.blocked
    assert host.text(MAIN) == "# shipped by a package\n"
    assert host.writes == []  # nothing at all was written, not even the other files
    assert services.calls == []
    assert [(r.action, r.target, r.status, r.reason) for r in report.results] == [
        ("plan", MAIN, Status.refused, "PlanBlocked")
    ]
    assert not report.ok


def test_adopt_overwrites_the_unowned_file_and_owns_it() -> None:
    host = MemoryHost()
    host.files[MAIN] = (b"# shipped by a package\n", 0o644)
    _, report = apply_once(host, site(), adopt=True)
    assert report.ok
    assert host.text(MAIN) == MAIN_TEXT
    assert inventory.load(host, LAYOUT).owns(MAIN)


def test_pruning_removes_only_owned_files_and_reloads() -> None:
    host, services = applied()
    host.files[f"{HOSTS}/by-hand"] = (b"aa:bb:cc:dd:ee:09,pc-9\n", 0o644)
    smaller = rendered(
        reservation("pc-1", LINE1), main_conf(MAIN_TEXT), boot_menu("DEFAULT local\n")
    )
    built, report = apply_once(host, smaller, services=services)
    assert built.summary == "-1 reservation, dnsmasq: reload"
    assert host.read(PC2) is None
    assert host.read(f"{HOSTS}/by-hand") is not None
    assert PC2 not in inventory.load(host, LAYOUT).files
    assert services.calls[-1] == ("reload", "dnsmasq")
    assert report.ok


def test_a_failed_reload_rolls_the_files_back_and_reloads_again() -> None:
    host, _ = applied()
    owned_before = inventory.load(host, LAYOUT).files
    services = FailingServices(fail={("reload", "dnsmasq")})
    changed = rendered(
        reservation("pc-1", "aa:bb:cc:dd:ee:01,192.168.100.12,pc-1"),  # changed: reload
        reservation("pc-2", LINE2),
        reservation("pc-3", "aa:bb:cc:dd:ee:03,pc-3"),  # new
        main_conf(MAIN_TEXT),
        boot_menu("DEFAULT clonezilla\n"),  # another group: stays applied
    )
    _, report = apply_once(host, changed, services=services)
    assert host.text(PC1) == LINE1 + "\n"  # previous content back
    assert host.read(PC3) is None  # a file created by this apply is removed again
    assert host.text(BOOT) == "DEFAULT clonezilla\n"
    assert services.calls == [("reload", "dnsmasq"), ("reload", "dnsmasq")]
    statuses = [(r.action, r.target, r.status, r.reason) for r in report.results]
    assert statuses[-2:] == [
        ("reload", "dnsmasq", Status.failed, "ReloadFailed"),
        ("reload", "dnsmasq", Status.rolled_back, "RolledBack"),
    ]
    assert report.results[-1].message == (
        "reload failed; 2 files restored, reload done again with the previous files"
    )
    assert not report.ok
    owned = inventory.load(host, LAYOUT)
    assert owned.files[PC1] == owned_before[PC1]
    assert PC3 not in owned.files
    assert owned.files[BOOT] == Entry(sha(b"DEFAULT clonezilla\n"), 0o644, None, Effect.reload)
    assert owned.commit == "c0ffee"  # from the first apply: this one did not succeed
    # The change is still wanted, so the next pass tries again.
    retry, report = apply_once(host, changed, services=NoServices(), commit="beef")
    assert retry.summary == "+1 reservation, ~1 reservation, dnsmasq: reload"
    assert report.ok and inventory.load(host, LAYOUT).commit == "beef"


def test_a_failed_write_restores_the_group_and_skips_its_reload() -> None:
    host, _ = applied()

    def disk_full(step: str, path: str) -> None:
        if step == "temp-written" and path == PC2:
            raise OSError(28, "No space left on device")

    host.on_step = disk_full
    services = NoServices()
    changed = rendered(
        reservation("pc-1", "aa:bb:cc:dd:ee:01,pc-1"),
        reservation("pc-2", "aa:bb:cc:dd:ee:02,192.168.100.12,pc-2"),
        main_conf(MAIN_TEXT),
        boot_menu("DEFAULT local\n"),
    )
    _, report = apply_once(host, changed, services=services)
    assert host.text(PC1) == LINE1 + "\n"
    assert host.text(PC2) == LINE2 + "\n"
    assert services.calls == []
    assert [(r.action, r.target, r.status, r.reason) for r in report.results][-2:] == [
        ("write", PC2, Status.failed, "WriteFailed"),
        ("write", "dnsmasq", Status.rolled_back, "RolledBack"),
    ]


def test_a_preflight_rejection_changes_nothing() -> None:
    host, services = applied()
    writes, calls = list(host.writes), list(services.calls)
    changed = rendered(
        reservation("pc-1", "bogus", "departments/lab.yaml: pcs[0].macs[0]"),
        reservation("pc-2", LINE2),
        main_conf(MAIN_TEXT),
        boot_menu("DEFAULT local\n"),
    )
    preflight = RejectLine(PC1, 1)
    _, report = apply_once(host, changed, services=services, preflight=preflight)
    assert preflight.seen == [PC1]
    assert host.writes == writes and services.calls == calls
    (result,) = report.results
    assert (result.action, result.target, result.status, result.reason) == (
        "preflight",
        PC1,
        Status.refused,
        "PreflightRejected",
    )
    assert result.message == (
        f"{PC1}:1: dnsmasq rejected it: bad (from departments/lab.yaml: pcs[0].macs[0])"
    )


def test_each_result_reaches_the_callback_before_the_next_action() -> None:
    host = MemoryHost()
    seen: list[tuple[str, str, bool, bool]] = []

    def audit(result: Result) -> None:
        # What was on the server when the result was handed over.
        seen.append(
            (result.action, result.target, host.read(PC2) is not None, host.read(MAIN) is not None)
        )

    services = NoServices()
    apply_once(host, site(), services=services, on_result=audit)
    assert seen == [
        ("preflight", "candidates", False, False),
        ("write", BOOT, False, False),
        ("write", PC1, False, False),
        ("write", PC2, True, False),
        ("write", MAIN, True, True),
        ("restart", "dnsmasq", True, True),
    ]


def test_write_results_carry_hashes_and_diff_for_the_audit() -> None:
    host = MemoryHost()
    results: list[Result] = []
    apply_once(host, rendered(reservation("pc-1", LINE1)), on_result=results.append)
    write = next(r for r in results if r.action == "write")
    assert dict(write.details) == {
        "hash_before": "absent",
        "hash_after": sha(f"{LINE1}\n".encode()),
        "diff": f"--- /dev/null\n+++ {PC1} (desired)\n@@ -0,0 +1 @@\n+{LINE1}",
    }


def test_leftover_temp_files_are_cleaned_up() -> None:
    host, services = applied()
    temp = f"{HOSTS}/.pc-3.0a1b2c3d.kitting-tmp~"
    host.files[temp] = (b"half a fi", 0o600)
    built, report = apply_once(host, site(), services=services)
    assert built.summary == "-1 leftover temp file"
    assert host.read(temp) is None
    assert report.ok
    assert services.calls == [("restart", "dnsmasq")]  # only the first apply's


FIREWALL = (
    "table inet kitting {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n"
    '\t\tiifname "e0" udp dport 69 accept\n\t}\n}\n'
)


def test_firewall_is_loaded_and_what_the_kernel_shows_is_recorded() -> None:
    host, services = MemoryHost(), NoServices()

    class Kernel(FixedFirewall):
        def read(self) -> LiveFirewall:  # after the load, the table is there
            if ("apply_firewall", NFT) in services.calls:
                return LiveFirewall(observed=True, present=True, listing="L", fingerprint="F" * 64)
            return LiveFirewall(observed=True, present=False)

    kernel = Kernel(LiveFirewall(observed=True, present=False))
    built, report = apply_once(
        host, rendered(nft_file(FIREWALL)), services=services, firewall=kernel
    )
    assert built.summary == "+1 file, firewall: 1 rule changed (+1 -0)"
    assert services.calls == [("apply_firewall", NFT)]
    assert inventory.load(host, LAYOUT).firewall == FirewallRecord("F" * 64, "L")
    assert [r.reason for r in report.results] == [
        "PreflightPassed",
        "FileWritten",
        "FirewallApplied",
    ]
    again, _ = apply_once(host, rendered(nft_file(FIREWALL)), services=services, firewall=kernel)
    assert not again.changes
    assert services.calls == [("apply_firewall", NFT)]


def test_a_failed_firewall_load_restores_the_file() -> None:
    host = MemoryHost()
    apply_once(host, rendered(nft_file(FIREWALL)))
    services = FailingServices(fail={("apply_firewall", NFT)})
    newer = FIREWALL.replace("accept", "drop")
    _, report = apply_once(host, rendered(nft_file(newer)), services=services)
    assert host.text(NFT) == FIREWALL
    assert services.calls == [("apply_firewall", NFT)]  # nft -f is atomic: no second load
    assert report.results[-1].status is Status.rolled_back
    assert report.results[-1].message == (
        "firewall failed; 1 file restored; nft -f is all-or-nothing, so the kernel kept its "
        "previous table"
    )


def test_the_inventory_on_disk_is_valid_json_after_every_apply() -> None:
    host, _ = applied()
    body = json.loads(host.files[INVENTORY][0])
    assert sorted(body["files"]) == sorted([BOOT, MAIN, PC1, PC2])
    assert all("pending_from" not in entry for entry in body["files"].values())
