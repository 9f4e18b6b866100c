"""`kitctl audit`: verify the hash-chained audit log, list it, and show what one commit did.

Read-only: these commands never write the log (only the controller appends to it).
"""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from reconciler import audit
from reconciler.clock import Clock, SystemClock

# The clock seam for `--since 2h`; tests replace it.
CLOCK: Clock = SystemClock()

_OK, _PROBLEMS, _USAGE = 0, 1, 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser("audit", help="check and read the audit log")
    actions = cmd.add_subparsers(dest="audit_command", required=True, metavar="ACTION")

    verify = actions.add_parser(
        "verify", help="check the hash chain and the head record; exit 1 on any problem"
    )
    _root(verify)
    verify.add_argument(
        "--anchor",
        action="append",
        default=[],
        metavar="SEQ:SHA256",
        help="a line hash kept off this server (printed by an earlier verify); repeatable",
    )
    verify.add_argument("--format", choices=("text", "json"), default="text")
    verify.set_defaults(run=run_verify)

    log = actions.add_parser("log", help="list audit entries, oldest first")
    _root(log)
    log.add_argument(
        "--commit", metavar="SHA", help="only entries caused by this commit (SHA, hex)"
    )
    log.add_argument(
        "--since", metavar="TIME", help="ISO 8601 time, a date, or an age (90s, 15m, 2h, 3d, 1w)"
    )
    log.add_argument("--format", choices=("text", "json"), default="text")
    log.set_defaults(run=run_log)

    show = actions.add_parser("show", help="everything one commit caused on this server")
    show.add_argument(
        "sha",
        metavar="SHA",
        help="a commit SHA (hex) or a prefix of at least 4 hex digits; not a name like HEAD",
    )
    _root(show)
    show.add_argument("--format", choices=("text", "json"), default="text")
    show.set_defaults(run=run_show)


def _root(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--root", default="/", help="server root (default: /)")


def _missing_state(root: str) -> str | None:
    """Why there is no audit log to read under `root`, or None. A root that does not exist
    or has no state folder is a mistake (a typo in --root), not an empty log: only a server
    the reconciler has worked on has the folder, and its log may be empty."""
    if not Path(root).is_dir():
        return f"--root {root}: no such directory"
    state = audit.log_path(root).parent
    if not state.is_dir():
        return (
            f"--root {root}: no reconciler state here ({state} does not exist): "
            "nothing has been applied to this root; is --root right?"
        )
    return None


def _refused(args: argparse.Namespace) -> bool:
    problem = _missing_state(args.root)
    if problem is not None:
        sys.stderr.write(f"kitctl audit {args.audit_command}: {_printable(problem)}\n")
    return problem is not None


def run_verify(args: argparse.Namespace) -> int:
    try:
        anchors = [audit.Anchor.parse(text) for text in args.anchor]
    except ValueError as exc:
        return _usage(str(exc))
    if _refused(args):
        return _PROBLEMS
    log = audit.log_path(args.root)
    report = audit.verify(log, audit.head_path(args.root), anchors)
    if args.format == "json":
        body = {
            "log": str(log),
            "ok": report.ok,
            "lines": report.lines,
            "last_seq": report.last_seq,
            "last_sha256": report.last_sha256,
            "problems": [_finding_json(f) for f in report.problems],
            "warnings": [_finding_json(f) for f in report.warnings],
        }
        sys.stdout.write(json.dumps(body, indent=2, sort_keys=True) + "\n")
        return _OK if report.ok else _PROBLEMS
    out = [_printable(f.text()) for f in report.problems]
    out += [f"warning: {_printable(f.text())}" for f in report.warnings]
    if report.ok:
        out.append(
            f"{log}: ok, {report.lines} line(s), chain intact; anchor "
            f"{report.last_seq}:{report.last_sha256} (keep it off this server to detect a "
            "rewrite later with --anchor)"
            if report.lines
            else f"{log}: ok, empty"
        )
    else:
        count = len(report.problems)
        out.append(f"{log}: {count} problem{'s' * (count != 1)} in {report.lines} line(s)")
    sys.stdout.write("\n".join(out) + "\n")
    return _OK if report.ok else _PROBLEMS


def run_log(args: argparse.Namespace) -> int:
    try:
        since = audit.parse_since(args.since, CLOCK.now()) if args.since else None
    except ValueError as exc:
        return _usage(f"--since: {exc}")
    if _refused(args):
        return _PROBLEMS
    entries, skipped = audit.read(audit.log_path(args.root))
    _note_skipped(skipped)
    commit = None
    if args.commit:
        try:
            commit = audit.resolve_commit(entries, args.commit)
        except (ValueError, audit.AmbiguousCommit) as exc:
            return _usage(f"--commit: {exc}")
        except audit.UnknownCommit as exc:
            sys.stderr.write(f"kitctl audit log: {exc}\n")
            return _OK
    _print_entries(audit.select(entries, commit=commit, since=since), args.format)
    return _OK


def run_show(args: argparse.Namespace) -> int:
    if _refused(args):
        return _PROBLEMS
    entries, skipped = audit.read(audit.log_path(args.root))
    _note_skipped(skipped)
    try:
        sha = audit.resolve_commit(entries, args.sha)
    except (ValueError, audit.AmbiguousCommit) as exc:
        return _usage(str(exc))
    except audit.UnknownCommit as exc:
        sys.stderr.write(f"kitctl audit show: {exc}\n")
        return _PROBLEMS
    caused = audit.select(entries, commit=sha)
    if args.format == "json":
        _print_entries(caused, "json")
        return _OK
    info = caused[-1].commit  # the latest metadata the controller recorded for it
    assert info is not None
    head = [
        f"commit {info.sha}",
        f"Author:    {info.author}",
        f"Committer: {info.committer}",
        f"Date:      {info.date}",
        f"Review:    {'; '.join(info.review) if info.review else '(none recorded)'}",
        "",
        f"    {info.subject}",
        "",
        f"{len(caused)} action(s) on this server:",
    ]
    sys.stdout.write("\n".join(_printable(line) for line in head) + "\n")
    _print_entries(caused, "text", with_commit=False)
    return _OK


def _print_entries(entries: Sequence[audit.Entry], fmt: str, *, with_commit: bool = True) -> None:
    if fmt == "json":
        # The stored lines themselves: still canonical, still checkable by hand.
        sys.stdout.write("".join(e.raw.decode("utf-8", "replace") for e in entries))
        return
    for e in entries:
        parts = [
            f"{e.seq:>6}",
            e.time.isoformat(timespec="milliseconds"),
            f"{e.event:<19}",
            f"{e.result.status.value:<6}",
            e.target,
        ]
        if with_commit:
            parts.append(e.commit.sha[:12] if e.commit else "-")
        if e.result.message:
            parts.append(f"({e.result.message})")
        sys.stdout.write(_printable(" ".join(parts)) + "\n")


def _note_skipped(skipped: Sequence[audit.Finding]) -> None:
    for finding in skipped:
        sys.stderr.write(f"kitctl audit: skipped {_printable(finding.text())}\n")
    if skipped:
        sys.stderr.write("kitctl audit: run `kitctl audit verify` for details\n")


def _finding_json(finding: audit.Finding) -> dict[str, object]:
    return {"line": finding.line, "kind": finding.kind.value, "message": finding.message}


def _printable(text: str) -> str:
    """Escape control and format characters: targets and messages come from the site
    repo and must not move the cursor or forge lines on an operator's terminal."""
    return "".join(ch if unicodedata.category(ch)[0] != "C" else ascii(ch)[1:-1] for ch in text)


def _usage(message: str) -> int:
    sys.stderr.write(f"kitctl audit: {_printable(message)}\n")
    return _USAGE
