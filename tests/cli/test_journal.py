"""journal: every apply result becomes the right audit event, and the recorder writes it.

The table lists every (action, reason) that reconciler/apply.py emits, with the event each
must be recorded as (worked out from issue 4's list of audit events: what was attempted,
whatever the outcome; rollbacks and drift repairs are events of their own). The last
tests drive the real apply so that the strings it emits and the mapping cannot drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler import apply, facts, journal, plan
from reconciler.audit import AuditLog, CommitInfo, Event, read
from reconciler.clock import FixedClock
from reconciler.host import MemoryHost
from reconciler.inventory import Entry, FirewallRecord, Inventory, digest
from reconciler.layout import Layout
from reconciler.live_firewall import NoFirewall
from reconciler.preflight import Outcome
from reconciler.rendered import Artifact, Check, Effect, Rendered, Service
from reconciler.services import NoServices, ServiceError

OK, FAILED = apply.Status.ok, apply.Status.failed
ROLLED_BACK, REFUSED = apply.Status.rolled_back, apply.Status.refused
HOSTS_FILE = "/etc/kitting/dhcp-hosts/pc-1.hosts"
NFT = "/etc/nftables.d/kitting.nft"

CASES = [
    ("write", "FileWritten", OK, "new", Event.file_written),
    ("write", "DriftRepaired", OK, "drift: owned file edited by hand", Event.drift_repaired),
    ("write", "WriteFailed", FAILED, "No space left on device", Event.file_written),
    ("remove", "FileRemoved", OK, "no longer rendered", Event.file_removed),
    ("remove", "RemoveFailed", FAILED, "Permission denied", Event.file_removed),
    ("write", "RollbackFailed", FAILED, "Read-only file system", Event.rollback),
    ("remove", "RollbackFailed", FAILED, "Read-only file system", Event.rollback),
    ("write", "RolledBack", ROLLED_BACK, "a file could not be written", Event.rollback),
    ("reload", "RolledBack", ROLLED_BACK, "reload failed; 1 file restored", Event.rollback),
    ("restart", "RollbackFailed", FAILED, "restart failed too", Event.rollback),
    ("firewall", "RolledBack", ROLLED_BACK, "firewall failed", Event.rollback),
    ("record", "InventoryRecorded", OK, "already matches desired", Event.inventory_recorded),
    ("reload", "ServiceReloaded", OK, "1 changed file needs a reload", Event.service_reloaded),
    ("reload", "ReloadFailed", FAILED, "Job failed", Event.service_reloaded),
    ("restart", "ServiceRestarted", OK, "only a restart re-reads it", Event.service_restarted),
    ("restart", "RestartFailed", FAILED, "Job failed", Event.service_restarted),
    ("firewall", "FirewallApplied", OK, "rendered firewall file new", Event.firewall_applied),
    ("firewall", "FirewallApplied", OK, "drift: live table differs", Event.drift_repaired),
    ("firewall", "FirewallFailed", FAILED, "drift: live table differs", Event.firewall_applied),
    ("drop-firewall", "FirewallDropped", OK, "no longer rendered", Event.firewall_dropped),
    ("drop-firewall", "FirewallFailed", FAILED, "No such file", Event.firewall_dropped),
    ("preflight", "PreflightPassed", OK, "3 files accepted", Event.preflight_passed),
    ("preflight", "PreflightRejected", REFUSED, "dnsmasq rejected it", Event.preflight_rejected),
    ("plan", "PlanBlocked", REFUSED, "exists but is not owned", Event.plan_blocked),
]


@pytest.mark.parametrize(("action", "reason", "status", "message", "event"), CASES)
def test_each_result_maps_to_its_event(
    action: str, reason: str, status: apply.Status, message: str, event: Event
) -> None:
    result = apply.Result(action, "/some/target", status, reason, message)
    assert journal.event_for(result) is event


def test_an_unknown_action_is_refused_rather_than_misrecorded() -> None:
    result = apply.Result("format-disk", "/dev/sda", OK, "Done", "")
    with pytest.raises(ValueError, match="no audit event for apply action 'format-disk'"):
        journal.event_for(result)


# ------------------------------------------------------------------- against real apply


def accept_all(candidates: object, rendered: object) -> Outcome:
    return Outcome()


def reservation(line: str) -> Artifact:
    return Artifact(
        path=HOSTS_FILE,
        content=(line + "\n").encode(),
        service=Service.dnsmasq,
        on_add=Effect.none,
        on_change=Effect.reload,
        on_remove=Effect.reload,
    )


class FailingOnce(NoServices):
    """The first reload fails (as systemd would say), the one after the rollback works."""

    def reload(self, service: Service) -> None:
        if not any(kind == "reload" for kind, _ in self.calls):
            self.calls.append(("reload", service.value))
            raise ServiceError("Job for dnsmasq.service failed")
        super().reload(service)


def run_apply(
    host: MemoryHost,
    wanted: Rendered,
    owned: Inventory,
    services: NoServices,
    firewall: facts.FirewallReader,
    *,
    log: AuditLog | None = None,
    commit: CommitInfo | None = None,
) -> tuple[plan.Plan, apply.Report]:
    observed = facts.gather(host, wanted, owned, services, firewall)
    built = plan.build(wanted, observed)
    report = apply.run(
        built,
        observed,
        wanted,
        host=host,
        services=services,
        layout=Layout(),
        preflight=accept_all,
        commit=commit.sha if commit else "",
        on_result=None if log is None else journal.recorder(log, commit),
    )
    return built, report


def owning(artifact: Artifact, content: bytes) -> tuple[MemoryHost, Inventory]:
    """A server holding `content` at the artifact's path, recorded as ours."""
    host = MemoryHost()
    host.files[artifact.path] = (content, 0o644)
    entry = Entry(sha256=digest(content), service=artifact.service, on_remove=artifact.on_remove)
    return host, Inventory(files={artifact.path: entry})


def test_a_failed_reload_and_its_rollback_as_apply_reports_them() -> None:
    new = reservation("aa:bb:cc:dd:ee:02,pc-1")
    host, owned = owning(new, b"aa:bb:cc:dd:ee:01,pc-1\n")
    _, report = run_apply(host, Rendered({new.path: new}), owned, FailingOnce(), NoFirewall())
    mapped = [(r.action, r.reason, journal.event_for(r)) for r in report.results]
    assert mapped == [
        ("write", "FileWritten", Event.file_written),
        ("reload", "ReloadFailed", Event.service_reloaded),
        ("reload", "RolledBack", Event.rollback),
    ]


class DriftedTable:
    """The kernel's table differs from the one the reconciler loaded (a hand edit)."""

    def read(self) -> facts.LiveFirewall:
        return facts.LiveFirewall(
            observed=True, present=True, listing="table inet kitting {}", fingerprint="by-hand"
        )


def test_a_repaired_firewall_table_is_recorded_as_drift_repaired() -> None:
    table = Artifact(
        path=NFT, content=b"table inet kitting {}\n", service=Service.nftables, check=Check.nft
    )
    host, owned = owning(table, table.content)
    owned = Inventory(owned.files, firewall=FirewallRecord("as-loaded", "table inet kitting {}"))
    built, report = run_apply(host, Rendered({NFT: table}), owned, NoServices(), DriftedTable())
    assert [action.kind for action in built.actions] == ["firewall"]
    assert built.firewall[0].reason.startswith(journal.DRIFT_PREFIX)
    assert [(r.action, journal.event_for(r)) for r in report.results] == [
        ("firewall", Event.drift_repaired)
    ]


def test_the_recorder_makes_one_audit_line_per_result(tmp_path: Path) -> None:
    new = reservation("aa:bb:cc:dd:ee:02,pc-1")
    old = b"aa:bb:cc:dd:ee:01,pc-1\n"
    host, owned = owning(new, old + b"by hand\n")  # drifted: the write repairs it
    owned = Inventory({HOSTS_FILE: Entry(sha256=digest(old), service=Service.dnsmasq)})
    commit = CommitInfo(
        sha="a" * 40,
        author="Ann Author <ann@example.org>",
        committer="Ann Author <ann@example.org>",
        date="2026-12-01T09:00:00+09:00",
        subject="pc-1: new NIC",
    )
    clock = FixedClock(datetime(2026, 12, 1, 1, 0, tzinfo=UTC))
    with AuditLog(tmp_path / "audit.jsonl", tmp_path / "audit.head", clock) as log:
        run_apply(
            host,
            Rendered({HOSTS_FILE: new}),
            owned,
            FailingOnce(),
            NoFirewall(),
            log=log,
            commit=commit,
        )
    entries, findings = read(tmp_path / "audit.jsonl")
    assert findings == []
    assert [(e.event, e.target, e.result.status.value) for e in entries] == [
        ("drift_repaired", HOSTS_FILE, "ok"),
        ("service_reloaded", "dnsmasq", "failed"),
        ("rollback", "dnsmasq", "failed"),
    ]
    repaired, failed, rolled = entries
    assert repaired.result.message == "drift: owned file edited by hand"
    assert repaired.details["hash_before"] == digest(old + b"by hand\n")
    assert repaired.details["hash_after"] == digest(new.content)
    assert repaired.details["reason"] == "DriftRepaired"
    assert failed.result.message == "ReloadFailed: Job for dnsmasq.service failed"
    assert rolled.details["status"] == "rolled-back"
    assert rolled.result.message.startswith("RolledBack: reload failed; 1 file restored")
    assert all(e.commit == commit for e in entries)
