"""Observe: what gather reads, and the readers driven by captured program output."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reconciler import facts, nftables
from reconciler.facts import FileState, LiveFirewall, ServiceState
from reconciler.host import MemoryHost
from reconciler.inventory import Entry, Inventory
from reconciler.live_firewall import NftReader, NoFirewall
from reconciler.rendered import Service
from reconciler.runner import Completed
from reconciler.services import parse_systemctl_show

from .helpers import HOSTS, MAIN, FixedFirewall, main_conf, nft_file, rendered, reservation

CASES = Path(__file__).parent.parent / "cases" / "facts"


@dataclass
class ScriptedRunner:
    """Answers each argv with a canned Completed; records what was run."""

    answers: dict[tuple[str, ...], Completed]
    ran: list[tuple[str, ...]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], *, timeout: float = 60.0) -> Completed:
        self.ran.append(tuple(argv))
        return self.answers[tuple(argv)]


def answer(argv: tuple[str, ...], code: int, stdout: str = "", stderr: str = "") -> Completed:
    return Completed(argv, code, stdout, stderr)


TEXT = ("nft", "-s", "list", "table", "inet", "kitting")
JSON = ("nft", "-s", "-j", "list", "table", "inet", "kitting")


@dataclass
class States:
    states: dict[Service, ServiceState]
    asked: list[Service] = field(default_factory=list)

    def state(self, service: Service) -> ServiceState:
        self.asked.append(service)
        return self.states.get(service, ServiceState.unknown)


def test_gather_reads_rendered_and_owned_paths_and_finds_our_temp_files() -> None:
    host = MemoryHost()
    host.files[f"{HOSTS}/pc-1"] = (b"old\n", 0o600)
    host.files[f"{HOSTS}/gone"] = (b"x\n", 0o644)
    host.files[f"{HOSTS}/.pc-2.0123abcd.kitting-tmp~"] = (b"half", 0o600)
    host.files[f"{HOSTS}/.hidden-by-someone"] = (b"y", 0o644)
    owned = Inventory(files={f"{HOSTS}/gone": Entry("0" * 64, service=Service.dnsmasq)})
    wanted = rendered(reservation("pc-1", "a"), reservation("pc-2", "b"), main_conf("port=0\n"))
    states = States({Service.dnsmasq: ServiceState.active})
    firewall = FixedFirewall(LiveFirewall(observed=True, present=True, fingerprint="f"))

    seen = facts.gather(host, wanted, owned, states, firewall)

    assert seen.files == {
        f"{HOSTS}/gone": FileState(b"x\n", 0o644),
        f"{HOSTS}/pc-1": FileState(b"old\n", 0o600),
        f"{HOSTS}/pc-2": FileState(None, None),
        MAIN: FileState(None, None),
    }
    assert seen.stale_temps == (f"{HOSTS}/.pc-2.0123abcd.kitting-tmp~",)
    assert seen.services == {Service.dnsmasq: ServiceState.active}
    assert states.asked == [Service.dnsmasq]
    assert seen.inventory is owned
    # No nftables artifact and none owned: the table is not looked at.
    assert seen.firewall == LiveFirewall(observed=False)


def test_gather_reads_the_firewall_when_nftables_is_involved() -> None:
    live = LiveFirewall(observed=True, present=True, listing="t", fingerprint="f")
    seen = facts.gather(
        MemoryHost(),
        rendered(nft_file("table inet kitting {}\n")),
        Inventory(),
        States({}),
        FixedFirewall(live),
    )
    assert seen.firewall == live
    assert seen.services == {Service.nftables: ServiceState.unknown}


def test_file_state_hash() -> None:
    assert FileState(b"abc").sha256 == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert FileState(None).sha256 is None


def test_nft_reader_on_captured_listings() -> None:
    listing = (CASES / "nft-list.txt").read_text()
    runner = ScriptedRunner(
        {
            TEXT: answer(TEXT, 0, listing),
            JSON: answer(JSON, 0, (CASES / "nft-list.json").read_text()),
        }
    )
    live = NftReader(runner).read()
    expected = nftables.fingerprint(
        nftables.normalize((CASES / "nft-list-reloaded-with-counters.json").read_text())
    )
    assert live == LiveFirewall(observed=True, present=True, listing=listing, fingerprint=expected)
    assert runner.ran == [TEXT, JSON]


def test_nft_reader_reports_a_missing_table_as_observed_and_absent() -> None:
    stderr = (CASES / "nft-missing-table.stderr").read_text()
    live = NftReader(ScriptedRunner({TEXT: answer(TEXT, 1, "", stderr)})).read()
    assert live == LiveFirewall(observed=True, present=False)


def test_nft_reader_failing_otherwise_is_not_observed() -> None:
    live = NftReader(
        ScriptedRunner({TEXT: answer(TEXT, 1, "", "Error: Operation not permitted")})
    ).read()
    assert live == LiveFirewall(observed=False, error="Error: Operation not permitted")


def test_no_firewall_reader_observes_nothing() -> None:
    assert NoFirewall().read().observed is False


def test_systemctl_show_parser() -> None:
    def parse(name: str) -> ServiceState:
        return parse_systemctl_show((CASES / name).read_text())

    assert parse("systemctl-show-active.txt") is ServiceState.active
    assert parse("systemctl-show-failed.txt") is ServiceState.failed
    assert parse("systemctl-show-not-found.txt") is ServiceState.not_found
    assert parse_systemctl_show("LoadState=loaded\nActiveState=maintenance\n") is (
        ServiceState.unknown
    )
    assert parse_systemctl_show("") is ServiceState.unknown
