"""Each apply result into the audit log, on disk before the next action starts.

`event_for` names the audit event of an apply result: what was attempted, whatever the
outcome (a failed write is a `file_written` line whose result is a failure), except that
a rollback is its own event and a repaired drift is recorded as `drift_repaired`.
"""

from __future__ import annotations

from reconciler import apply
from reconciler.audit import AuditLog, CommitInfo, Event, Result

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
_ROLLBACK = frozenset({"RolledBack", "RollbackFailed"})
DRIFT_PREFIX = "drift:"
"""How plan words the reason of an action that repairs drift; a firewall load carries that
reason as its result message (apply has no DriftRepaired for the table)."""


def event_for(result: apply.Result) -> Event:
    """The audit event of an apply result. Raises ValueError for an action apply does not
    have: better no apply than one recorded under a wrong name."""
    if result.reason in _ROLLBACK:
        return Event.rollback
    if result.action == "write" and result.reason == "DriftRepaired":
        return Event.drift_repaired
    if result.action == "preflight" and result.reason == "PreflightPassed":
        return Event.preflight_passed
    if (
        result.action == "firewall"
        and result.status is apply.Status.ok
        and result.message.startswith(DRIFT_PREFIX)
    ):
        return Event.drift_repaired
    try:
        return _BY_ACTION[result.action]
    except KeyError:
        raise ValueError(f"no audit event for apply action {result.action!r}") from None


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
