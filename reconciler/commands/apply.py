"""`kitctl apply`: one pass: validate, render, observe, plan, check, write, reload, audit."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import git

from reconciler import apply, audit, journal, plan_format, reconcile
from reconciler.audit import AuditLog, CommitInfo
from reconciler.clock import SystemClock
from reconciler.commands import common
from reconciler.layout import Layout
from reconciler.live_firewall import NftReader, NoFirewall
from reconciler.services import NoServices, SystemdServices

# Routine results that the text output counts instead of listing one by one (--verbose
# lists them; the audit log always has one line each).
_ROUTINE = {"FileWritten": "written", "FileRemoved": "removed", "InventoryRecorded": "recorded"}


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
        "--verbose",
        "-v",
        action="store_true",
        help="list every file written, removed or recorded (text output counts them)",
    )
    cmd.add_argument(
        "--detailed-exitcode", action="store_true", help="exit 2 when something changed"
    )
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    layout = common.layout(args)
    if args.services == "systemd" and args.root != "/":
        # systemctl and nft act on this machine, whatever the root: a sandbox stays a sandbox
        sys.stderr.write(
            f"kitctl apply: --services systemd reloads this machine's programs and loads its "
            f"firewall; it needs --root / (got {args.root}); a sandbox root takes "
            "--services none\n"
        )
        return reconcile.EXIT_ERROR
    desired = common.desired_or_report(args.repo)
    if desired is None:
        return reconcile.EXIT_ERROR
    seams = reconcile.seams_for(args.root, layout)
    if args.services == "none":
        seams = reconcile.Seams(seams.host, NoServices(), NoFirewall(), seams.preflight)
    elif args.services == "systemd":
        seams = reconcile.Seams(seams.host, SystemdServices(), NftReader(), seams.preflight)
    commit = working_tree_commit(args.repo)
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
        if args.verbose or not report.results:
            sys.stdout.write(plan_format.report_text(report))
        else:
            sys.stdout.write(report_text(report.results, layout))
        sys.stdout.write(
            _afterword(report, args, layout, sandbox=isinstance(seams.services, NoServices))
        )
    return reconcile.apply_exit_code(report, detailed=args.detailed_exitcode)


def _line(status: str, action: str, text: str) -> str:
    return f"{status:<11} {action:<13} {text}"


def report_text(results: Sequence[apply.Result], layout: Layout) -> str:
    """One line per result, except routine file results that went well: one line per kind
    (written / removed / recorded), where the first of them happened."""
    hosts = layout.dhcp_hosts_dir.rstrip("/") + "/"
    routine: dict[str, list[str]] = {}
    for result in results:
        if result.status is apply.Status.ok and result.reason in _ROUTINE:
            routine.setdefault(result.reason, []).append(result.target)
    lines: list[str] = []
    for result in results:
        if result.status is apply.Status.ok and result.reason in _ROUTINE:
            targets = routine.pop(result.reason, None)
            if targets is not None:
                lines.append(_routine_line(result, targets, hosts))
            continue
        text = f"{result.target}: {result.reason}: {result.message}"
        lines.append(_line(result.status.value, result.action, text))
    statuses: dict[str, int] = {}
    for result in results:
        statuses[result.status.value] = statuses.get(result.status.value, 0) + 1
    ok = all(result.status is apply.Status.ok for result in results)
    tally = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
    count = len(results)
    lines.append(
        f"Apply {'succeeded' if ok else 'FAILED'}: {count} action{'s' * (count != 1)}, {tally}"
    )
    return "\n".join(lines) + "\n"


def _routine_line(first: apply.Result, targets: list[str], hosts: str) -> str:
    verb = _ROUTINE[first.reason]
    if verb == "recorded":
        noun = "inventory entry" if len(targets) == 1 else "inventory entries"
        return _line("ok", first.action, f"{len(targets)} {noun} {verb}")
    reservations = sum(target.startswith(hosts) for target in targets)
    files = f"{len(targets)} file{'s' * (len(targets) != 1)} {verb}"
    if reservations:
        files += f" ({reservations} reservation{'s' * (reservations != 1)})"
    if len(targets) == 1:
        files = f"{targets[0]} {verb}: {first.message}"
    return _line("ok", first.action, files)


def _afterword(
    report: apply.Report, args: argparse.Namespace, layout: Layout, *, sandbox: bool
) -> str:
    lines: list[str] = []
    refused = [r for r in report.results if r.reason == "PlanBlocked"]
    if refused:
        them = "this file" if len(refused) == 1 else f"these {len(refused)} files"
        lines.append(
            f"Nothing was written. Move {them} out of the way, or take "
            f"{'it' if len(refused) == 1 else 'them'} over with --adopt."
        )
    signalled = {"reload", "restart", "firewall", "drop-firewall"}
    if sandbox and any(r.action in signalled for r in report.results):
        lines.append(
            "Services: none (sandbox): nothing was reloaded or restarted; the lines above "
            "say what a server would be asked to do."
        )
    if report.results:
        where = audit.log_path(args.root, layout)
        count = len(report.results)
        lines.append(f"Audit log: {count} line{'s' * (count != 1)} appended to {where}")
    return "".join(line + "\n" for line in lines)


def working_tree_commit(repo: str) -> CommitInfo | None:
    """The commit checked out in the site repo's working tree (None outside Git), its
    subject marked when the repo folder has changes not committed (untracked files too):
    then the files applied are not exactly those of the commit."""
    folder = Path(repo).resolve()
    try:
        tree = git.Repo(folder, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    try:
        try:
            head = tree.head.commit
        except ValueError:  # a repository without any commit yet
            return None
        dirty = tree.is_dirty(untracked_files=True, path=str(folder))
        note = " (working tree with uncommitted changes)" if dirty else ""
        return CommitInfo(
            sha=head.hexsha,
            author=f"{head.author.name} <{head.author.email}>",
            committer=f"{head.committer.name} <{head.committer.email}>",
            date=head.committed_datetime.isoformat(),
            subject=str(head.summary) + note,
        )
    finally:
        tree.close()
