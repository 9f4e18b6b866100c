"""Each apply result into the audit log, on disk before the next action starts."""

from __future__ import annotations

from reconciler import apply
from reconciler.audit import AuditLog, CommitInfo, Event, Result

_EVENTS: dict[tuple[str, str], Event] = {
    ("write", "FileWritten"): Event.file_written,
    ("write", "DriftRepaired"): Event.drift_repaired,
    ("remove", "FileRemoved"): Event.file_removed,
    ("record", "InventoryRecorded"): Event.inventory_recorded,
    ("reload", "ServiceReloaded"): Event.service_reloaded,
    ("restart", "ServiceRestarted"): Event.service_restarted,
    ("firewall", "FirewallApplied"): Event.firewall_applied,
    ("drop-firewall", "FirewallDropped"): Event.firewall_dropped,
    ("preflight", "PreflightPassed"): Event.preflight_passed,
    ("preflight", "PreflightRejected"): Event.preflight_rejected,
    ("plan", "PlanBlocked"): Event.plan_blocked,
}
_BY_ACTION: dict[str, Event] = {
    "write": Event.file_written,
    "remove": Event.file_removed,
    "record": Event.inventory_recorded,
    "reload": Event.service_reloaded,
    "restart": Event.service_restarted,
    "firewall": Event.firewall_applied,
    "drop-firewall": Event.firewall_dropped,
    "preflight": Event.preflight_rejected,
    "plan": Event.plan_blocked,
}


def event_for(result: apply.Result) -> Event:
    """The audit event of an apply result; a rollback is its own event."""
    if result.reason in ("RolledBack", "RollbackFailed"):
        return Event.rollback
    return _EVENTS.get((result.action, result.reason)) or _BY_ACTION.get(
        result.action, Event.rollback
    )


def recorder(log: AuditLog, commit: CommitInfo | None) -> apply.OnResult:
    """An `on_result` callback that appends (and fsyncs) one audit line per result."""

    def record(result: apply.Result) -> None:
        ok = result.status is apply.Status.ok
        outcome = (
            Result.success(result.message)
            if ok
            else Result.failure(f"{result.reason}: {result.message}")
        )
        details: dict[str, str] = {"reason": result.reason, "status": result.status.value}
        details.update(result.details)
        log.append(event_for(result), result.target, outcome, details=details, commit=commit)

    return record
