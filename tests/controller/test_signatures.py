"""Signed commits, with ed25519 keys made by ssh-keygen and commits signed by git itself.

The trust root for a commit is the operator's settings plus the policy of the last APPLIED
commit: a site repo that turns `require_signed` on needs one unsigned bootstrap commit
(applied under the operator's rules), after which only allowed signers get through.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.clock import FixedClock

from .conftest import RequirePrograms
from .siterepo import (
    DNSMASQ,
    SiteRepo,
    condition,
    controller,
    dhcp_range,
    events,
    status_json,
)

POLICY_OFF = """\
git:
  branch: main                  # the protected branch this server follows
  require_signed: false         # true: apply only commits signed by an allowed signer
  allowed_signers: []
"""


def ssh_key(directory: Path, name: str) -> tuple[Path, str]:
    """A fresh ed25519 key pair: (private key, 'ssh-ed25519 BASE64')."""
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(private)],
        check=True,
        timeout=30,
        capture_output=True,
    )
    kind, blob, *_ = (directory / f"{name}.pub").read_text().split()
    return private, f"{kind} {blob}"


def fingerprint(private: Path) -> str:
    done = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{private}.pub"],
        check=True,
        timeout=30,
        capture_output=True,
        text=True,
    )
    return done.stdout.split()[1]  # "256 SHA256:... comment (ED25519)"


@pytest.fixture
def keys(tmp_path: Path, require_programs: RequirePrograms) -> dict[str, tuple[Path, str]]:
    require_programs("ssh-keygen")
    return {name: ssh_key(tmp_path / "keys", name) for name in ("alice", "mallory")}


def message(root: Path, kind: str) -> str:
    status = status_json(root)
    return str(next(c["message"] for c in status["conditions"] if c["type"] == kind))


def test_the_site_policy_admits_allowed_signers_only(
    site: SiteRepo, root: Path, clock: FixedClock, keys: dict[str, tuple[Path, str]]
) -> None:
    alice, alice_public = keys["alice"]
    mallory, _ = keys["mallory"]
    site.replace(
        "site.yaml",
        POLICY_OFF,
        "git:\n  require_signed: true\n  allowed_signers:\n"
        f"    - principal: alice@example.org\n      ssh_key: {alice_public}\n",
    )
    bootstrap = site.commit("Require signed commits")  # unsigned: nothing applied yet
    ctl = controller(site, root, clock)
    assert ctl.pass_once().applied

    site.lease("8h")
    by_alice = site.commit("Shorter leases", sign=alice)
    assert ctl.pass_once("commit").applied
    assert dhcp_range(28800) in (root / DNSMASQ).read_text()

    site.lease("6h")
    by_mallory = site.commit("Even shorter leases", sign=mallory)
    assert not ctl.pass_once("commit").applied
    status = status_json(root)
    assert condition(status, "Stalled") == (True, "UnknownSigner")
    assert condition(status, "Ready") == (False, "UnknownSigner")
    assert message(root, "Stalled") == (
        f"{by_mallory[:12]}: commit {by_mallory[:12]} is signed by key {fingerprint(mallory)}, "
        "which is not an allowed signer (trust root: operator settings + policy of applied "
        f"commit {by_alice})"
    )

    site.lease("4h")
    unsigned = site.commit("Shortest leases")
    assert not ctl.pass_once("commit").applied
    ctl.pass_once("poll")
    assert condition(status_json(root), "Stalled") == (True, "Unsigned")
    assert message(root, "Stalled") == f"{unsigned[:12]}: commit {unsigned[:12]} is not signed"
    assert dhcp_range(28800) in (root / DNSMASQ).read_text()  # neither reached the server
    assert [(e.details["head"], e.details["reason"]) for e in events(root, "commit_refused")] == [
        (by_mallory, "UnknownSigner"),
        (unsigned, "Unsigned"),
    ]

    site.lease("2h")
    again = site.commit("Two hour leases", sign=alice)
    assert ctl.pass_once("commit").applied
    assert dhcp_range(7200) in (root / DNSMASQ).read_text()
    status = status_json(root)
    assert condition(status, "Stalled") == (False, "ApplySucceeded")
    assert [e.commit.sha for e in events(root, "commit_applied") if e.commit] == [
        bootstrap,
        by_alice,
        again,
    ]


def test_the_operator_can_require_signatures_from_the_first_commit(
    site: SiteRepo, root: Path, clock: FixedClock, keys: dict[str, tuple[Path, str]]
) -> None:
    alice, alice_public = keys["alice"]
    mallory, _ = keys["mallory"]
    signers = [{"principal": "alice@example.org", "ssh_key": alice_public}]
    ctl = controller(site, root, clock, require_signed=True, signers=signers)

    assert not ctl.pass_once().applied  # the fixture's commit is unsigned
    assert condition(status_json(root), "Stalled") == (True, "Unsigned")
    assert not (root / DNSMASQ).exists()

    by_mallory = site.commit("Mallory signs", sign=mallory)
    assert not ctl.pass_once("commit").applied
    assert condition(status_json(root), "Stalled") == (True, "UnknownSigner")
    assert "(trust root: operator settings)" in message(root, "Stalled")
    assert by_mallory[:12] in message(root, "Ready")

    by_alice = site.commit("Alice signs", sign=alice)
    assert ctl.pass_once("commit").applied
    status = status_json(root)
    assert condition(status, "Ready") == (True, "ApplySucceeded")
    assert (status["last_applied"], status["refused"]) == (by_alice, "")
    assert (root / DNSMASQ).exists()
