"""The controller's status: conditions, revisions, drift, schedule. Written on every exit
path of a pass, read by `kitctl status`. Serialization is pure; `save`/`load` use the host.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from reconciler.host import Host
from reconciler.layout import Layout

FILE_NAME = "status.json"

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    """CamelCase, e.g. ApplySucceeded, ValidationFailed, HistoryRewritten."""
    message: str = ""
    since: str = ""
    """When the condition last changed its status or reason (ISO 8601)."""


@dataclass(frozen=True)
class Window:
    batch: str
    start: str
    end: str


@dataclass(frozen=True)
class Status:
    conditions: tuple[Condition, ...] = ()
    last_attempted: str = ""
    """The last head a pass tried (valid or not)."""
    last_applied: str = ""
    """The last commit whose desired state fully reached the server."""
    refused: str = ""
    """The head that was refused, so it is reported once and not retried until the branch moves."""
    refused_reason: str = ""
    source_error: str = ""
    """The reason of the last failed fetch ("" once a fetch works), so that its conditions
    are lifted when the source recovers."""
    drift: tuple[str, ...] = ()
    """Paths (or "firewall") found drifted and repaired at the last drift check."""
    last_drift_check: str = ""
    next_pass: str = ""
    open_windows: tuple[Window, ...] = ()
    updated: str = ""
    pid: int = 0

    def condition(self, kind: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)

    def with_condition(
        self, kind: str, status: bool, reason: str, message: str, now: datetime
    ) -> Status:
        """Set one condition; `since` moves only when its status or reason changes."""
        old = self.condition(kind)
        since = (
            old.since if old and old.status == status and old.reason == reason else now.isoformat()
        )
        new = Condition(kind, status, reason, message, since)
        others = tuple(c for c in self.conditions if c.type != kind)
        order = {READY: 0, RECONCILING: 1, STALLED: 2}
        return replace(
            self, conditions=tuple(sorted((*others, new), key=lambda c: order.get(c.type, 9)))
        )


def path(layout: Layout) -> str:
    return f"{layout.state_dir}/{FILE_NAME}"


def to_json(status: Status) -> bytes:
    return (json.dumps(asdict(status), indent=2, sort_keys=True) + "\n").encode()


def from_json(raw: bytes) -> Status:
    data: dict[str, Any] = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("status must be a JSON object")
    conditions = tuple(Condition(**c) for c in data.pop("conditions", []))
    windows = tuple(Window(**w) for w in data.pop("open_windows", []))
    drift = tuple(data.pop("drift", []))
    known = {f for f in Status.__dataclass_fields__}
    return Status(
        conditions=conditions,
        open_windows=windows,
        drift=drift,
        **{k: v for k, v in data.items() if k in known},
    )


def load(host: Host, layout: Layout) -> Status:
    raw = host.read(path(layout))
    if raw is None:
        return Status()
    try:
        return from_json(raw)
    except (ValueError, TypeError):
        # an unreadable status is rebuilt by the next pass; the audit log keeps the history
        return Status()


def save(host: Host, layout: Layout, status: Status) -> None:
    host.write_atomic(path(layout), to_json(status), 0o644)


__all__ = ["Condition", "Status", "Window"]
