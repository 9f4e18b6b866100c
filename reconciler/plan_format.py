"""How plans and apply reports are shown: text (with unified diffs), JSON, Markdown.

Purely computational. Diffs can carry text from hand-edited server files; in Markdown
they sit in a fence longer than any backtick run inside them, so they cannot break out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from reconciler.plan import (
    Action,
    ApplyFirewall,
    Conflict,
    DropFirewall,
    Plan,
    RecordFile,
    RemoveFile,
    WriteFile,
)

if TYPE_CHECKING:  # only for annotations: this module stays free of the seams apply uses
    from reconciler.apply import Report, Result

FORMATS = ("text", "json", "markdown")


def _marker(action: Action) -> str:
    if isinstance(action, WriteFile):
        return "+" if action.create else "~"
    if isinstance(action, RemoveFile):
        return "-"
    if isinstance(action, RecordFile):
        return "="
    return "*"


def _subject(action: Action) -> str:
    if isinstance(action, WriteFile | RemoveFile | RecordFile):
        return action.path
    if isinstance(action, ApplyFirewall):
        return f"firewall: load {action.path}"
    if isinstance(action, DropFirewall):
        return "firewall: drop table"
    return f"{action.service.value}: {action.kind}"


def _diff(action: Action | Conflict) -> str:
    if isinstance(action, WriteFile | RemoveFile | ApplyFirewall | Conflict):
        return action.diff
    return ""


def text(plan: Plan, *, diffs: bool = True) -> str:
    lines = [f"Plan: {plan.summary}"]
    if plan.conflicts:
        lines += ["", "Blocking conflicts (nothing is applied while any remains):"]
        for conflict in plan.conflicts:
            lines.append(f"  ! {conflict.path}: {conflict.reason}")
            if diffs and conflict.diff:
                lines += _indented(conflict.diff)
    if plan.actions:
        lines += ["", "Actions:"]
        for action in plan.actions:
            lines.append(f"  {_marker(action)} {_subject(action)}: {action.reason}")
            if diffs and _diff(action):
                lines += _indented(_diff(action))
    if plan.noops:
        lines += ["", "No action needed:"]
        lines += [f"  = {noop.subject}: {noop.reason}" for noop in plan.noops]
    if plan.notes:
        lines += ["", "Notes:"]
        lines += [f"  - {note}" for note in plan.notes]
    return "\n".join(lines) + "\n"


def _indented(diff: str) -> list[str]:
    return ["      " + line for line in diff.splitlines()]


def as_dict(plan: Plan) -> dict[str, Any]:
    return {
        "summary": plan.summary,
        "changes": plan.changes,
        "blocked": plan.blocked,
        "actions": [_action_dict(a) for a in plan.actions],
        "conflicts": [{"path": c.path, "reason": c.reason, "diff": c.diff} for c in plan.conflicts],
        "noops": [{"subject": n.subject, "reason": n.reason} for n in plan.noops],
        "notes": list(plan.notes),
    }


def _action_dict(action: Action) -> dict[str, Any]:
    item: dict[str, Any] = {"kind": action.kind, "reason": action.reason}
    if isinstance(action, WriteFile):
        item |= {
            "path": action.path,
            "create": action.create,
            "drift": action.drift,
            "adopt": action.adopt,
            "mode": f"{action.artifact.mode:04o}",
            "service": None if action.artifact.service is None else action.artifact.service.value,
            "diff": action.diff,
        }
    elif isinstance(action, RemoveFile):
        item |= {
            "path": action.path,
            "drift": action.drift,
            "temp": action.temp,
            "service": None if action.service is None else action.service.value,
            "diff": action.diff,
        }
    elif isinstance(action, RecordFile):
        item |= {"path": action.path, "owned": action.entry is not None}
    elif isinstance(action, ApplyFirewall):
        item |= {"path": action.path, "drift": action.drift, "diff": action.diff}
    elif not isinstance(action, DropFirewall):
        item |= {"service": action.service.value, "paths": list(action.paths)}
    return item


def as_json(plan: Plan) -> str:
    return json.dumps(as_dict(plan), indent=2, sort_keys=True) + "\n"


def markdown(plan: Plan) -> str:
    lines = ["## Plan", "", f"**{_md(plan.summary)}**", ""]
    if plan.conflicts:
        lines += ["### Blocking conflicts", ""]
        for conflict in plan.conflicts:
            lines.append(f"- `{_code(conflict.path)}`: {_md(conflict.reason)}")
        lines.append("")
    if plan.actions:
        lines += ["### Actions", "", "| | What | Why |", "|---|---|---|"]
        for action in plan.actions:
            lines.append(
                f"| {_marker(action)} | `{_code(_subject(action))}` | {_md(action.reason)} |"
            )
        lines.append("")
    diffs = [(_subject(a), _diff(a)) for a in plan.actions if _diff(a)]
    diffs += [(c.path, c.diff) for c in plan.conflicts if c.diff]
    if diffs:
        lines += ["### Diffs", ""]
        for subject, diff in diffs:
            fence = "`" * max(3, _longest_backticks(diff) + 1)
            lines += [f"`{_code(subject)}`", "", fence + "diff", diff, fence, ""]
    if plan.noops:
        lines += ["### No action needed", ""]
        lines += [f"- {_md(n.subject)}: {_md(n.reason)}" for n in plan.noops]
        lines.append("")
    if plan.notes:
        lines += ["### Notes", ""]
        lines += [f"- {_md(note)}" for note in plan.notes]
        lines.append("")
    return "\n".join(lines)


def _longest_backticks(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def _md(text: str) -> str:
    """Plain text for a Markdown line or table cell: no markup, no cell breaks."""
    return re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", text.replace("\n", " "))


def _code(text: str) -> str:
    return text.replace("`", "'").replace("|", "\\|").replace("\n", " ")


def render(plan: Plan, output_format: str) -> str:
    if output_format == "json":
        return as_json(plan)
    if output_format == "markdown":
        return markdown(plan)
    return text(plan)


# ---------------------------------------------------------------------------- apply


def report_text(report: Report) -> str:
    if not report.results:
        return "Apply: nothing to do\n"
    lines = [
        f"{r.status.value:<11} {r.action:<13} {r.target}: {r.reason}: {r.message}"
        for r in report.results
    ]
    verdict = "succeeded" if report.ok else "FAILED"
    lines.append(f"Apply {verdict}: {_counts(report.results)}")
    return "\n".join(lines) + "\n"


def _counts(results: Sequence[Result]) -> str:
    tally: dict[str, int] = {}
    for result in results:
        tally[result.status.value] = tally.get(result.status.value, 0) + 1
    return ", ".join(f"{count} {status}" for status, count in sorted(tally.items()))


def report_json(report: Report) -> str:
    body = {
        "ok": report.ok,
        "changed": report.changed,
        "results": [
            {
                "action": r.action,
                "target": r.target,
                "status": r.status.value,
                "reason": r.reason,
                "message": r.message,
                "details": dict(r.details),
            }
            for r in report.results
        ],
    }
    return json.dumps(body, indent=2, sort_keys=True) + "\n"
