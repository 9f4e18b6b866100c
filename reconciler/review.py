"""What merging a change would do, without touching a server: for pull-request comments.

The base revision's rendered files stand in for the server (an in-memory host that owns
exactly them); the head revision is planned against it. The deployment schedule is
compared batch by batch. Purely computational.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler import facts, inventory, plan, render
from reconciler.checks import batch_targets, window_bounds
from reconciler.desired import Batch, Desired
from reconciler.host import MemoryHost
from reconciler.layout import Layout
from reconciler.live_firewall import NoFirewall
from reconciler.services import NoServices


@dataclass(frozen=True)
class ScheduleChange:
    batch: str
    change: str  # "added", "removed", "changed"
    description: str


def server_plan(base: Desired | None, head: Desired, layout: Layout) -> plan.Plan:
    """The plan that would take a server converged on `base` to `head`."""
    host = MemoryHost()
    owned = inventory.Inventory()
    if base is not None:
        base_rendered = render.all(base, layout)
        for path, artifact in base_rendered.artifacts.items():
            host.files[path] = (artifact.content, artifact.mode)
        owned = owned.with_entries(
            {path: plan.entry_for(a) for path, a in base_rendered.artifacts.items()}
        )
    head_rendered = render.all(head, layout)
    observed = facts.gather(host, head_rendered, owned, NoServices(), NoFirewall())
    return plan.build(head_rendered, observed, layout=layout)


def _describe(desired: Desired, batch: Batch) -> str:
    bounds = window_bounds(desired, batch)
    window = (
        f"{bounds[0].isoformat(timespec='minutes')} to {bounds[1].isoformat(timespec='minutes')}"
        if bounds
        else "window unresolved"
    )
    count = len(batch_targets(desired, batch))
    return f"{batch.action.value} {batch.image} to {count} PCs by {batch.mode.value}, {window}"


def schedule(base: Desired | None, head: Desired) -> list[ScheduleChange]:
    """Batches added, removed or changed between two desired states, by name."""
    before = base.batches if base is not None else {}
    changes: list[ScheduleChange] = []
    for name in sorted(set(before) | set(head.batches)):
        old, new = before.get(name), head.batches.get(name)
        if old is None and new is not None:
            changes.append(ScheduleChange(name, "added", _describe(head, new)))
        elif new is None and old is not None and base is not None:
            changes.append(ScheduleChange(name, "removed", _describe(base, old)))
        elif old is not None and new is not None and base is not None:
            was, now = _describe(base, old), _describe(head, new)
            if old != new or was != now:
                changes.append(ScheduleChange(name, "changed", f"{was} -> {now}"))
    return changes


def schedule_markdown(changes: list[ScheduleChange]) -> str:
    lines = ["## Deployment schedule", ""]
    if not changes:
        return "\n".join([*lines, "No batch is added, removed or changed.", ""])
    lines += ["| Batch | Change | What |", "|---|---|---|"]
    for change in changes:
        what = change.description.replace("|", "\\|")
        lines.append(f"| `{change.batch}` | {change.change} | {what} |")
    return "\n".join([*lines, ""])


def schedule_text(changes: list[ScheduleChange]) -> str:
    if not changes:
        return "Deployment schedule: no batch added, removed or changed\n"
    lines = ["Deployment schedule:"]
    lines += [f"  {c.change:<8} {c.batch}: {c.description}" for c in changes]
    return "\n".join(lines) + "\n"
