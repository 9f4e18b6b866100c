"""`kitctl validate`: check a site repo; every problem in one run; never writes anything."""

from __future__ import annotations

import argparse
import sys

from reconciler import load, validate
from reconciler.problems import Severity, format_json, format_text


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser("validate", help="check a site repo and report every problem")
    cmd.add_argument("--repo", default=".", help="site repo directory (default: .)")
    cmd.add_argument("--format", choices=("text", "json"), default="text")
    cmd.add_argument("--strict", action="store_true", help="fail on warnings too")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    result = validate.run(load.repo(args.repo))
    failing = [p for p in result.problems if p.severity is Severity.error or args.strict]
    if args.format == "json":
        sys.stdout.write(format_json(result.problems, valid=not failing))
    elif result.problems:
        sys.stdout.write(format_text(result.problems))
    if not failing and args.format == "text":
        desired = result.desired
        assert desired is not None
        counts = (
            f"{_count(len(desired.pcs()), 'PC')} in {_count(len(desired.departments), 'department')}, "
            f"{_count(len(desired.images), 'image')}, {_count(len(desired.batches), 'batch')}"
        )
        sys.stdout.write(f"{args.repo}: valid ({counts})\n")
    return 1 if failing else 0


def _count(number: int, word: str) -> str:
    plural = word + ("es" if word.endswith("ch") else "s")
    return f"{number} {word if number == 1 else plural}"
