"""Arguments and steps shared by the commands that read a site repo and a server root."""

from __future__ import annotations

import argparse
import sys

from reconciler import snapshot
from reconciler.desired import Desired
from reconciler.layout import Layout
from reconciler.problems import errors, format_text


def add_repo(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--repo", default=".", help="site repo directory (default: .)")


def add_root(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--root",
        default="/",
        help="server root to observe and write under (default: /, the live server; "
        "any other directory is a sandbox where no service is signalled)",
    )


def layout(args: argparse.Namespace) -> Layout:
    return Layout()


def desired_or_report(repo: str) -> Desired | None:
    """The validated desired state of a working directory, or None after printing why.
    Warnings of a valid repo go to stderr too: they are worth seeing before an apply."""
    result = snapshot.validate_directory(repo)
    if result.desired is None:
        sys.stderr.write(format_text(result.problems))
        found = len(errors(result.problems))
        noun = "error" if found == 1 else "errors"
        sys.stderr.write(f"{repo}: invalid ({found} {noun}); nothing was planned or written\n")
        return None
    if result.problems:
        sys.stderr.write(format_text(result.problems))
    return result.desired
