"""`kitctl plan`: what apply would change on a server, or what merging a change would do."""

from __future__ import annotations

import argparse
import json
import sys

from reconciler import plan_format, reconcile, review, snapshot
from reconciler.commands import common
from reconciler.problems import errors, format_text


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "plan",
        help="show what apply would change, with reasons and diffs; writes nothing",
        description="Without --base: compare the repo's desired state with the server under "
        "--root. With --base REV: compare two revisions of the repo (for pull requests); "
        "no server is looked at.",
    )
    common.add_repo(cmd)
    common.add_root(cmd)
    cmd.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    cmd.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 0 when nothing changes, 2 when something would, 1 on errors",
    )
    cmd.add_argument(
        "--adopt", action="store_true", help="take over files that exist but are not ours"
    )
    cmd.add_argument("--base", metavar="REV", help="Git revision the change starts from")
    cmd.add_argument(
        "--head", metavar="REV", default=None, help="Git revision to merge (default: HEAD)"
    )
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    layout = common.layout(args)
    if args.base:
        return _review(args)
    desired = common.desired_or_report(args.repo)
    if desired is None:
        return reconcile.EXIT_ERROR
    built = reconcile.plan_for(desired, args.root, layout, adopt=args.adopt)
    sys.stdout.write(plan_format.render(built, args.format))
    return reconcile.plan_exit_code(built, detailed=args.detailed_exitcode)


def _review(args: argparse.Namespace) -> int:
    head_rev = args.head or "HEAD"
    head = snapshot.validate_revision(args.repo, head_rev)
    base = snapshot.validate_revision(args.repo, args.base)
    if head.desired is None:
        sys.stdout.write(_invalid(head_rev, format_text(head.problems), args.format))
        return reconcile.EXIT_ERROR
    layout = common.layout(args)
    built = review.server_plan(base.desired, head.desired, layout)
    changes = review.schedule(base.desired, head.desired)
    note = (
        ""
        if base.desired is not None
        else f"(base {args.base} is not valid: compared with an empty server)\n"
    )
    if args.format == "markdown":
        warnings = [p.text() for p in head.problems]
        body = plan_format.markdown(built) + "\n" + review.schedule_markdown(changes)
        if warnings:
            body += "\n## Warnings\n\n" + "\n".join(f"- `{w}`" for w in warnings) + "\n"
        sys.stdout.write(note + body)
    elif args.format == "json":
        payload = plan_format.as_dict(built)
        payload["schedule"] = [c.__dict__ for c in changes]
        sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(note + plan_format.text(built) + review.schedule_text(changes))
    code = reconcile.plan_exit_code(built, detailed=args.detailed_exitcode)
    if code == reconcile.EXIT_OK and changes and args.detailed_exitcode:
        return reconcile.EXIT_CHANGES
    return code


def _invalid(revision: str, problems: str, output_format: str) -> str:
    if output_format == "markdown":
        return f"## Invalid desired state at `{revision}`\n\n```\n{problems}```\n\nNothing would be applied.\n"
    return f"{revision}: invalid desired state; nothing would be applied\n{problems}"


__all__ = ["errors", "register", "run"]
