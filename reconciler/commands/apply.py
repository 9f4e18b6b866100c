"""`kitctl apply`: one pass: validate, render, observe, plan, check, write, reload, audit."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import git

from reconciler import journal, plan_format, reconcile
from reconciler.audit import AuditLog, CommitInfo
from reconciler.clock import SystemClock
from reconciler.commands import common
from reconciler.live_firewall import NftReader, NoFirewall
from reconciler.services import NoServices, SystemdServices


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser("apply", help="converge the server under --root to the site repo")
    common.add_repo(cmd)
    common.add_root(cmd)
    cmd.add_argument(
        "--services",
        choices=("systemd", "none"),
        default=None,
        help="how to reload programs: systemd, or none (record only). "
        "Default: systemd for --root /, none for a sandbox root",
    )
    cmd.add_argument(
        "--adopt", action="store_true", help="take over files that exist but are not ours"
    )
    cmd.add_argument("--format", choices=("text", "json"), default="text")
    cmd.add_argument(
        "--detailed-exitcode", action="store_true", help="exit 2 when something changed"
    )
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    layout = common.layout(args)
    desired = common.desired_or_report(args.repo)
    if desired is None:
        return reconcile.EXIT_ERROR
    seams = reconcile.seams_for(args.root, layout)
    if args.services == "none":
        seams = reconcile.Seams(seams.host, NoServices(), NoFirewall(), seams.preflight)
    elif args.services == "systemd":
        seams = reconcile.Seams(seams.host, SystemdServices(), NftReader(), seams.preflight)
    commit = _working_tree_commit(args.repo)
    with AuditLog.at_root(args.root, SystemClock(), layout=layout) as log:
        built, report = reconcile.apply_for(
            desired,
            args.root,
            layout,
            adopt=args.adopt,
            commit=commit.sha if commit else "",
            seams=seams,
            on_result=journal.recorder(log, commit),
        )
    if args.format == "json":
        sys.stdout.write(plan_format.report_json(report))
    else:
        sys.stdout.write(f"Plan: {built.summary}\n")
        sys.stdout.write(plan_format.report_text(report))
    return reconcile.apply_exit_code(report, detailed=args.detailed_exitcode)


def _working_tree_commit(repo: str) -> CommitInfo | None:
    """The commit of a site repo working tree, marked dirty when it has local changes."""
    try:
        tree = git.Repo(Path(repo), search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    try:
        head = tree.head.commit
    except ValueError:
        return None
    finally:
        tree.close()
    dirty = " (working tree with uncommitted changes)" if tree.is_dirty(path=repo) else ""
    return CommitInfo(
        sha=head.hexsha,
        author=f"{head.author.name} <{head.author.email}>",
        committer=f"{head.committer.name} <{head.committer.email}>",
        date=head.committed_datetime.isoformat(),
        subject=str(head.summary) + dirty,
    )
