"""`kitctl plan`: what apply would change on a server, or what merging a change would do."""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from reconciler import deploy_shell, deployments, load, plan_format, reconcile, review, snapshot
from reconciler.commands import common
from reconciler.desired import Desired
from reconciler.layout import Layout
from reconciler.plan import ApplyFirewall, Plan
from reconciler.problems import Problem, format_json, format_text


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "plan",
        help="show what apply would change, with reasons and diffs; writes nothing",
        description="Without --base: compare the repo's desired state with the server under "
        "--root. With --base REV: compare two revisions of the repo (for pull requests); "
        "no server is looked at, so --root and --adopt do not apply.",
    )
    common.add_repo(cmd)
    common.add_root(cmd)
    cmd.add_argument("--format", choices=plan_format.FORMATS, default="text")
    cmd.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 0 when nothing changes, 2 when something would, 1 on errors",
    )
    cmd.add_argument(
        "--no-diff",
        action="store_true",
        help="leave the diffs out (the summary and every action with its reason stay)",
    )
    cmd.add_argument(
        "--adopt", action="store_true", help="take over files that exist but are not ours"
    )
    cmd.add_argument(
        "--at",
        metavar="TIME",
        help="also show what the deployments do at TIME (ISO 8601, e.g. 2026-12-07T09:00; "
        "without an offset, in the site's time zone), from the server's deployment state",
    )
    cmd.add_argument("--base", metavar="REV", help="Git revision the change starts from")
    cmd.add_argument(
        "--head", metavar="REV", default=None, help="Git revision to merge (default: HEAD)"
    )
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.base and args.at:
        sys.stderr.write("kitctl plan: --at looks at a server's deployments; not with --base\n")
        return reconcile.EXIT_ERROR
    if args.base:
        return _review(args)
    if args.head:
        sys.stderr.write("kitctl plan: --head needs --base (the revision it is compared with)\n")
        return reconcile.EXIT_ERROR
    desired = common.desired_or_report(args.repo)
    if desired is None:
        return reconcile.EXIT_ERROR
    preview: list[str] = []
    if args.at:
        found = _deployments_at(desired, args.at, args.root, common.layout(args))
        if found is None:
            return reconcile.EXIT_ERROR
        preview = found
    # Tens of thousands of small acyclic objects (artifacts, facts, actions): collection
    # passes over them would only cost time (as while loading, see load.gc_paused).
    with load.gc_paused():
        built = reconcile.plan_for(desired, args.root, common.layout(args), adopt=args.adopt)
    shown = plan_format.render(_shown(built, args), args.format)
    if preview and args.format == "json":
        payload = json.loads(shown)
        payload["deployments"] = {"at": args.at, "lines": preview}
        shown = json.dumps(payload, indent=2, sort_keys=True) + "\n"
    sys.stdout.write(shown)
    if built.blocked and args.format == "text":
        sys.stdout.write(_blocked_hint(len(built.conflicts)))
    if preview and args.format == "text":
        sys.stdout.write("\n" + "\n".join(preview) + "\n")
    elif preview and args.format == "markdown":
        sys.stdout.write(
            f"\n## Deployments at `{_inline(args.at)}`\n\n{_fenced(chr(10).join(preview))}"
        )
    return reconcile.plan_exit_code(built, detailed=args.detailed_exitcode)


def _deployments_at(desired: Desired, text: str, root: str, layout: Layout) -> list[str] | None:
    """deployments.preview at TIME, from the deployment state under root (empty if none)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        sys.stderr.write(
            f"kitctl plan: --at {text!r} is not an ISO 8601 time, e.g. 2026-12-07T09:00\n"
        )
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(desired.site.timezone))
    try:
        state = deploy_shell.load_state(root, layout)
    except deploy_shell.DeploymentStateError as error:
        sys.stderr.write(f"kitctl plan: {error}\n")
        return None
    return deployments.preview(desired, state, moment)


def _blocked_hint(count: int) -> str:
    files = "this file" if count == 1 else f"these {count} files"
    return (
        f"\nApply would refuse to run. Move {files} out of the way, or take "
        f"{'it' if count == 1 else 'them'} over with `kitctl apply --adopt`.\n"
    )


def _shown(built: Plan, args: argparse.Namespace) -> Plan:
    """The plan as it is printed: without its diffs when asked (`--no-diff`)."""
    if not args.no_diff:
        return built
    return replace(
        built,
        writes=tuple(replace(w, diff="") for w in built.writes),
        removes=tuple(replace(r, diff="") for r in built.removes),
        firewall=tuple(
            replace(f, diff="") if isinstance(f, ApplyFirewall) else f for f in built.firewall
        ),
        conflicts=tuple(replace(c, diff="") for c in built.conflicts),
    )


# ---------------------------------------------------------------------------- review


def _review(args: argparse.Namespace) -> int:
    head_rev = args.head or "HEAD"
    try:
        head_sha = snapshot.revision_sha(args.repo, head_rev)
        base_sha = snapshot.revision_sha(args.repo, args.base)
        head = snapshot.validate_revision(args.repo, head_rev)
        base = snapshot.validate_revision(args.repo, args.base)
    except snapshot.RevisionError as error:
        sys.stderr.write(f"kitctl plan: {error}\n")
        return reconcile.EXIT_ERROR
    revisions = {
        "base": {"revision": args.base, "commit": base_sha, "valid": base.desired is not None},
        "head": {"revision": head_rev, "commit": head_sha, "valid": head.desired is not None},
    }
    if head.desired is None:
        sys.stdout.write(_invalid(head_rev, head_sha, head.problems, args.format, revisions))
        return reconcile.EXIT_ERROR
    built = _shown(review.server_plan(base.desired, head.desired, common.layout(args)), args)
    changes = review.schedule(base.desired, head.desired)
    base_note = (
        ""
        if base.desired is not None
        else f"base {args.base} is not valid: compared with an empty server"
    )
    if args.format == "markdown":
        sys.stdout.write(_markdown(args.base, base_sha, head_rev, head_sha, base_note))
        sys.stdout.write(plan_format.markdown(built) + "\n" + review.schedule_markdown(changes))
        if head.problems:
            sys.stdout.write("\n## Warnings\n\n" + _fenced(format_text(head.problems)) + "\n")
    elif args.format == "json":
        payload: dict[str, Any] = plan_format.as_dict(built)
        payload["schedule"] = [change.__dict__ for change in changes]
        payload["warnings"] = [problem.text() for problem in head.problems]
        payload |= revisions
        sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    else:
        title = f"Merging {head_rev} ({head_sha[:12]}) into {args.base} ({base_sha[:12]})\n"
        sys.stdout.write(title + (f"Note: {base_note}\n" if base_note else ""))
        sys.stdout.write(plan_format.text(built) + "\n" + review.schedule_text(changes))
        if head.problems:
            sys.stdout.write("\nWarnings:\n" + format_text(head.problems))
    code = reconcile.plan_exit_code(built, detailed=args.detailed_exitcode)
    if code == reconcile.EXIT_OK and changes and args.detailed_exitcode:
        return reconcile.EXIT_CHANGES
    return code


def _inline(text: str) -> str:
    """A revision name (user input) inside inline code."""
    return text.replace("`", "'").replace("\n", " ")


def _markdown(base: str, base_sha: str, head: str, head_sha: str, note: str) -> str:
    lines = [
        f"**kitctl plan**: merging `{_inline(head)}` (`{head_sha[:12]}`) into "
        f"`{_inline(base)}` (`{base_sha[:12]}`). No server was contacted: the base "
        "revision's files stand in for a server that follows it.",
        "",
    ]
    if note:
        lines += [f"> **Note:** {_inline(note)}.", ""]
    return "\n".join(lines) + "\n"


def _fenced(text: str) -> str:
    """Text in a code fence longer than any backtick run inside it, so it cannot break out."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text.rstrip(chr(10))}\n{fence}\n"


def _invalid(
    revision: str,
    sha: str,
    problems: tuple[Problem, ...],
    output_format: str,
    revisions: dict[str, Any],
) -> str:
    if output_format == "markdown":
        return (
            f"## Invalid desired state at `{_inline(revision)}` (`{sha[:12]}`)\n\n"
            f"{_fenced(format_text(problems))}\n"
            "A server following this branch would refuse this commit and keep its last "
            "good state. Nothing would be applied.\n"
        )
    if output_format == "json":
        payload: dict[str, Any] = json.loads(format_json(problems, valid=False))
        payload |= revisions
        return json.dumps(payload, indent=2, sort_keys=True) + "\n"
    return (
        f"{revision} ({sha[:12]}): invalid desired state; nothing would be applied\n"
        + format_text(problems)
    )
