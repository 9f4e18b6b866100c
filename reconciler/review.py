"""What merging a change would do, without touching a server: for pull-request comments.

The base revision's rendered files stand in for the server (an in-memory host that owns
exactly them); the head revision is planned against it. The deployment schedule is
compared batch by batch. Purely computational.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from reconciler import facts, inventory, plan, render
from reconciler.checks import batch_targets, window_bounds
from reconciler.desired import Batch, Desired
from reconciler.facts import LiveFirewall, ServiceState
from reconciler.host import MemoryHost
from reconciler.layout import Layout
from reconciler.rendered import Service

# Shown in full in the summary line; the other fields only when they change.
_SUMMARIZED = frozenset({"kind", "name", "image", "action", "targets", "mode", "window"})
_NAMED_PCS = 5
"""At most this many hostnames are named when a batch gains or loses PCs."""


class _Unobserved:
    """A server that exists only as files: no services, no kernel firewall to look at."""

    def state(self, service: Service) -> ServiceState:
        return ServiceState.unknown

    def read(self) -> LiveFirewall:
        return LiveFirewall(observed=False, error="a review compares revisions, not a server")


@dataclass(frozen=True)
class ScheduleChange:
    batch: str
    change: str  # "added", "removed", "changed"
    description: str
    """The batch as it will be (as it was, for a removed one)."""
    differences: tuple[str, ...] = ()
    """For a changed batch: each thing that differs, "what: before -> after"."""


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
    observed = facts.gather(host, head_rendered, owned, _Unobserved(), _Unobserved())
    built = plan.build(head_rendered, observed, layout=layout)
    # No live table exists in a comparison of two revisions: the only firewall news is a
    # change of the rendered table, which `plan` reports as an action already.
    noops = tuple(
        plan.NoOp("firewall", "rendered table unchanged") if noop.subject == "firewall" else noop
        for noop in built.noops
    )
    return replace(built, noops=noops)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def _window(desired: Desired, batch: Batch) -> str:
    bounds = window_bounds(desired, batch)
    if bounds is None:
        return "window unresolved"
    start, end = bounds
    if start.date() == end.date() and start.utcoffset() == end.utcoffset():
        return f"{start:%Y-%m-%d %H:%M}-{end:%H:%M} {_offset(start)}"
    return f"{start:%Y-%m-%d %H:%M} {_offset(start)} to {end:%Y-%m-%d %H:%M} {_offset(end)}"


def _offset(moment: datetime) -> str:
    text = moment.isoformat(timespec="minutes")
    return "UTC" + text[16:] if text[16:] not in ("", "+00:00") else "UTC"


def _describe(desired: Desired, batch: Batch, count: int) -> str:
    what = f"{batch.action.value} {batch.image}"
    return f"{what} to {_plural(count, 'PC')} by {batch.mode.value}, {_window(desired, batch)}"


def _flat(batch: Batch) -> dict[str, Any]:
    """The batch's other fields as "name" / "parent.name" -> value, for people."""
    flat: dict[str, Any] = {}
    for name, value in batch.model_dump(mode="json").items():
        if name in _SUMMARIZED:
            continue
        if isinstance(value, dict):
            flat.update({f"{name}.{key}": inner for key, inner in value.items()})
        else:
            flat[name] = value
    return flat


def _names(hostnames: list[str]) -> str:
    shown = ", ".join(hostnames[:_NAMED_PCS])
    more = len(hostnames) - _NAMED_PCS
    return shown + (f" and {more} more" if more > 0 else "")


def _differences(base: Desired, old: Batch, head: Desired, new: Batch) -> tuple[str, ...]:
    found: list[str] = []
    if (old.action, old.image) != (new.action, new.image):
        found.append(f"{old.action.value} {old.image} -> {new.action.value} {new.image}")
    before = [pc.hostname for pc in batch_targets(base, old)]
    after = [pc.hostname for pc in batch_targets(head, new)]
    if before != after:
        had, has = set(before), set(after)
        gained = [name for name in after if name not in had]
        lost = [name for name in before if name not in has]
        text = f"PCs: {len(before)} -> {len(after)}"
        if gained:
            text += f" (+ {_names(gained)})"
        if lost:
            text += f" (- {_names(lost)})"
        found.append(text)
    if old.mode != new.mode:
        found.append(f"mode: {old.mode.value} -> {new.mode.value}")
    was, now = _window(base, old), _window(head, new)
    if was != now:
        found.append(f"window: {was} -> {now}")
    old_rest, new_rest = _flat(old), _flat(new)
    for name in sorted(set(old_rest) | set(new_rest)):
        if old_rest.get(name) != new_rest.get(name):
            found.append(f"{name}: {_value(old_rest.get(name))} -> {_value(new_rest.get(name))}")
    return tuple(found)


def _value(value: object) -> str:
    return "(default)" if value is None else str(value)


def schedule(base: Desired | None, head: Desired) -> list[ScheduleChange]:
    """Batches added, removed or changed between two desired states, by name."""
    before = base.batches if base is not None else {}
    changes: list[ScheduleChange] = []
    for name in sorted(set(before) | set(head.batches)):
        old, new = before.get(name), head.batches.get(name)
        if new is not None and (old is None or base is None):
            count = len(batch_targets(head, new))
            changes.append(ScheduleChange(name, "added", _describe(head, new, count)))
        elif old is not None and base is not None and new is None:
            count = len(batch_targets(base, old))
            changes.append(ScheduleChange(name, "removed", _describe(base, old, count)))
        elif old is not None and new is not None and base is not None:
            differences = _differences(base, old, head, new)
            if differences:
                count = len(batch_targets(head, new))
                description = _describe(head, new, count)
                changes.append(ScheduleChange(name, "changed", description, differences))
    return changes


def _cell(text: str) -> str:
    """Plain text for a Markdown table cell: no markup, no HTML, no cell or line breaks
    (">" stays: inside a cell it cannot start a quote, and "a -> b" reads better)."""
    escaped = "".join("\\" + char if char in "\\`*_[]<|#" else char for char in text)
    return escaped.replace("\n", " ")


def schedule_markdown(changes: list[ScheduleChange]) -> str:
    lines = ["## Deployment schedule", ""]
    if not changes:
        return "\n".join([*lines, "No batch is added, removed or changed.", ""])
    lines += ["| Batch | Change | What | Differences |", "|---|---|---|---|"]
    for change in changes:
        differences = "<br>".join(_cell(d) for d in change.differences)
        lines.append(
            f"| `{change.batch}` | {change.change} | {_cell(change.description)} | {differences} |"
        )
    return "\n".join([*lines, ""])


def schedule_text(changes: list[ScheduleChange]) -> str:
    if not changes:
        return "Deployment schedule: no batch added, removed or changed\n"
    lines = ["Deployment schedule:"]
    for change in changes:
        lines.append(f"  {change.change:<8} {change.batch}: {change.description}")
        lines += [f"           {difference}" for difference in change.differences]
    return "\n".join(lines) + "\n"
