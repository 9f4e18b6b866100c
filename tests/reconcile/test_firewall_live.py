"""The live firewall with the real nft, inside a network namespace this test creates:
load, record what the kernel shows, see a hand edit as drift, repair it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import pytest

from reconciler import inventory, preflight
from reconciler.host import LocalHost
from reconciler.live_firewall import NftReader
from reconciler.plan import ApplyFirewall, NoOp
from reconciler.runner import Completed, run
from reconciler.services import SystemdServices

from .helpers import LAYOUT, NFT, RequirePrograms, apply_once, nft_file, rendered

RULES = (Path(__file__).parent.parent / "cases/facts/kitting.nft").read_text()


@pytest.fixture
def netns(require_programs: RequirePrograms) -> Iterator[str]:
    require_programs("ip", "nft")
    name = f"kitting-fw-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


def inside(namespace: str, argv: Sequence[str], *, timeout: float = 60.0) -> Completed:
    return run(["ip", "netns", "exec", namespace, *argv], timeout=timeout)


@pytest.mark.integration
@pytest.mark.netns
def test_load_record_drift_and_repair(netns: str, tmp_path: Path) -> None:
    runner = partial(inside, netns)
    host = LocalHost(tmp_path)
    services = SystemdServices(runner, root=str(tmp_path))
    reader = NftReader(runner)
    check = partial(preflight.check, layout=LAYOUT, runner=runner)
    wanted = rendered(nft_file(RULES))

    built, report = apply_once(host, wanted, services=services, firewall=reader, preflight=check)
    assert built.summary == "+1 file, firewall: 4 rules changed (+4 -0)"
    assert report.ok, report.results
    listing = inside(netns, ["nft", "-s", "list", "table", "inet", "kitting"])
    assert 'iifname "e0" tcp dport 22 ip saddr @admins accept' in listing.stdout
    recorded = inventory.load(host, LAYOUT).firewall
    assert recorded is not None and recorded.listing == listing.stdout

    built, report = apply_once(host, wanted, services=services, firewall=reader, preflight=check)
    assert not built.changes and report.results == ()
    assert NoOp("firewall", "live table inet kitting matches what was loaded") in built.noops

    # A person adds a rule by hand: drift, shown as a listing diff, repaired by apply.
    hand = [
        "nft",
        "add",
        "rule",
        "inet",
        "kitting",
        "input",
        "iifname",
        "e0",
        "tcp",
        "dport",
        "2049",
        "accept",
    ]
    assert inside(netns, hand).ok
    built, report = apply_once(host, wanted, services=services, firewall=reader, preflight=check)
    (action,) = built.firewall
    assert isinstance(action, ApplyFirewall) and action.drift
    assert '+\t\tiifname "e0" tcp dport 2049 accept' in action.diff.splitlines()
    assert report.ok
    after = inside(netns, ["nft", "-s", "list", "table", "inet", "kitting"]).stdout
    assert "2049" not in after and after == listing.stdout

    # The table deleted by hand (or never loaded since boot): drift again, loaded again.
    assert inside(netns, ["nft", "delete", "table", "inet", "kitting"]).ok
    built, report = apply_once(host, wanted, services=services, firewall=reader, preflight=check)
    assert built.summary == "firewall: live table drifted"
    assert report.ok
    assert inside(netns, ["nft", "-s", "list", "table", "inet", "kitting"]).stdout == listing.stdout
    assert host.read(NFT) == RULES.encode()
