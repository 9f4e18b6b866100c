"""Shared values for the audit log tests (a module name no other test directory uses)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta, timezone
from pathlib import Path

from reconciler import audit
from reconciler.clock import FixedClock

PLUS2 = timezone(timedelta(hours=2))
SHA_A = "a1" * 20
SHA_B = "b2" * 20

COMMIT_A = audit.CommitInfo(
    sha=SHA_A,
    author="Ann Admin <ann@example.org>",
    committer="Ann Admin <ann@example.org>",
    date="2024-05-01T09:00:00+02:00",
    subject="Add lab 3",
    review=("GitHub pull request #12", "Reviewed-by: Bob <bob@example.org>"),
)
COMMIT_B = audit.CommitInfo(
    sha=SHA_B,
    author="Bob <bob@example.org>",
    committer="Bob <bob@example.org>",
    date="2024-05-01T11:00:00+02:00",
    subject="Open batch window",
)

Sample = Callable[[Path], list[bytes]]
"""Puts the five-line sample log under a root; returns its raw lines."""


def write_sample(root: Path, clock: FixedClock) -> None:
    with audit.AuditLog.at_root(root, clock) as log:
        for event, target, commit in (
            (audit.Event.file_written, "/etc/dnsmasq.d/kitting.conf", COMMIT_A),
            (audit.Event.service_restarted, "dnsmasq", COMMIT_A),
            (audit.Event.file_written, "/etc/nftables.d/kitting.nft", COMMIT_A),
            (audit.Event.firewall_applied, "inet kitting", COMMIT_A),
            (audit.Event.session_started, "batch lab3-monday", COMMIT_B),
        ):
            log.append(event, target, audit.Result.success(), commit=commit)
            clock.advance(timedelta(minutes=1))
