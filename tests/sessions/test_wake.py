"""Wake-on-LAN: the magic packet by hand, then real packets in namespaces the test creates.

The integration test runs the real deployments shell with the real sender (reconciler.wake)
entered into the lab server's namespace: a batch with `wake_on_lan` opens its window, the
shell broadcasts out of the server's kitting interface e0, and UDP port 9 sockets in two PC
namespaces on the same bridge receive the exact 102 bytes of every NIC of the armed PCs
(pc-a: one NIC, pc-b: two, the second a dock never plugged in here), none for pc-c (not in
the batch), and nothing on the next pass. Every PC's result is in the audit log with the
commit. Nothing is ever sent from the default namespace.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from reconciler import audit as audit_log
from reconciler import wake
from reconciler.audit import AuditLog, CommitInfo
from reconciler.batch_history import Usage
from reconciler.clock import FixedClock
from reconciler.deploy_shell import DeployShell
from reconciler.deployment_state import DeploymentState
from reconciler.deployments import (
    ImageFacts,
    Observation,
    SessionStarted,
    StartSession,
    StopSession,
)
from reconciler.desired import Department, Desired
from reconciler.lab import netns
from reconciler.lab.nsthread import in_netns
from reconciler.layout import Layout
from tests.deployments.deploy_cases import BERLIN, IMAGE, WIN11, batch, site

# ------------------------------------------------------------------------ the packet


def test_the_magic_packet_is_six_ff_then_the_mac_sixteen_times() -> None:
    packet = wake.magic_packet("02:4b:49:54:01:0a")
    assert len(packet) == 102
    assert packet[:6] == bytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
    mac = bytes([0x02, 0x4B, 0x49, 0x54, 0x01, 0x0A])
    for n in range(16):
        assert packet[6 + 6 * n : 12 + 6 * n] == mac
    assert packet.hex() == "ff" * 6 + "024b4954010a" * 16


def test_the_magic_packet_takes_dashes_and_upper_case_and_nothing_else() -> None:
    assert wake.magic_packet("02-4B-49-54-01-0A") == wake.magic_packet("02:4b:49:54:01:0a")
    for bad in ("02:4b:49:54:01", "02:4b:49:54:01:0a:0b", "02:4b:49:54:01:0g", "024b4954010a", ""):
        with pytest.raises(ValueError, match="not a MAC address"):
            wake.magic_packet(bad)


def test_a_bad_mac_is_reported_and_sends_nothing() -> None:
    # No socket is made when no MAC is valid, so this touches no network at all.
    assert wake.send("e0", ["02:4b:49:54:01"]) == {
        "02:4b:49:54:01": "not a MAC address: '02:4b:49:54:01'"
    }


# ------------------------------------------------------------------------ namespaces


def sender_in(ns: str) -> Callable[[str, Sequence[str]], Mapping[str, str | None]]:
    """The real `wake.send`, run in namespace `ns` (what the controller does in its own)."""
    return lambda interface, macs: in_netns(ns, lambda: wake.send(interface, macs))


def port_9_in(ns: str) -> socket.socket:
    def bind() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", wake.PORT))
        return sock

    return in_netns(ns, bind)


def receive(sock: socket.socket, *, want: int, seconds: float) -> list[bytes]:
    """Datagrams until `want` came or `seconds` passed (bounded in count and time)."""
    got: list[bytes] = []
    deadline = time.monotonic() + seconds
    while len(got) < want and (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(sock.recv(2048))
        except TimeoutError:
            break
    return got


class NoSessions:
    """Unicast batches start no sender; nothing else is asked of a session runner here."""

    def start(self, command: StartSession) -> SessionStarted:
        raise AssertionError("a unicast batch starts no session")

    def stop(self, command: StopSession) -> None:
        raise AssertionError("no session to stop")

    def adopt(self) -> list[Observation]:
        return []

    def observe(self) -> list[Observation]:
        return []

    def commit(self) -> None:
        pass

    def alive_pids(self) -> frozenset[int]:
        return frozenset()

    def has_news(self) -> bool:
        return False

    def usage(self, key: str) -> Usage:
        return Usage()

    def forget(self, keep: Collection[str]) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    try:
        yield made
    finally:
        for sock in made:
            sock.close()


NINE = datetime(2026, 3, 2, 9, 0, tzinfo=BERLIN)
DOCK = "02:00:00:00:0d:0c"
COMMIT = CommitInfo(
    sha="c0ffee" * 6 + "abcd",
    author="Ann <ann@example.org>",
    committer="Ann <ann@example.org>",
    date="2026-03-01T12:00:00+01:00",
    subject="wake the lab PCs",
)


@pytest.mark.integration
@pytest.mark.netns
def test_the_shell_wakes_the_armed_pcs_with_real_packets_once(
    vnet: netns.VirtualNetwork, tmp_path: Path, sockets: list[socket.socket]
) -> None:
    vnet.add_switch()
    server = vnet.add_host("srv", nics=[netns.NicSpec(address="192.168.100.1/24")])
    pc_a = vnet.add_host("pca", nics=[netns.NicSpec(address="192.168.100.11/24")])
    pc_b = vnet.add_host("pcb", nics=[netns.NicSpec(address="192.168.100.12/24")])
    pc_c = vnet.add_host("pcc", nics=[netns.NicSpec(address="192.168.100.13/24")])
    on_a, on_b = port_9_in(pc_a.netns), port_9_in(pc_b.netns)
    sockets += [on_a, on_b]

    room = Department.model_validate(
        {
            "kind": "Department",
            "name": "lab",
            "pcs": [
                {"hostname": "pc-a", "macs": [pc_a.mac]},
                {"hostname": "pc-b", "macs": [pc_b.mac, DOCK]},
            ],
        }
    )
    others = Department.model_validate(
        {"kind": "Department", "name": "other", "pcs": [{"hostname": "pc-c", "macs": [pc_c.mac]}]}
    )
    wanted = batch(mode="unicast", wake_on_lan=True)
    want = Desired(
        site=site(server={"hostname": "kit01", "interface": "e0", "address": "192.168.100.1"}),
        images={IMAGE.name: IMAGE},
        departments={"lab": room, "other": others},
        batches={wanted.name: wanted},
    )

    def images(d: Desired, s: DeploymentState, now: datetime) -> dict[str, ImageFacts]:
        return {"win11": WIN11}

    root = tmp_path / "root"
    (root / "home" / "partimag").mkdir(parents=True)
    clock = FixedClock(NINE)
    shell = DeployShell(
        str(root),
        Layout(),
        clock,
        sessions=NoSessions(),
        images=images,
        prerequisites=lambda d: {},
        listen=lambda address, port: in_netns(
            server.netns, lambda: socket.create_server((address, port))
        ),
        wake_on_lan=sender_in(server.netns),
    )
    audit = AuditLog(tmp_path / "audit.jsonl", tmp_path / "audit.head", clock)
    try:
        with audit:
            shell.step(want, audit, COMMIT)
        # Both PCs are on the bridge, so each hears every broadcast: pc-a's NIC, pc-b's
        # two NICs (the dock's too), and never pc-c's.
        expected = sorted(
            bytes.fromhex("ff" * 6 + mac.replace(":", "") * 16)
            for mac in (pc_a.mac, pc_b.mac, DOCK)
        )
        for sock in (on_a, on_b):
            # one more than expected: waits the full time, so a stray packet would show
            got = receive(sock, want=len(expected) + 1, seconds=3)
            assert sorted(got) == expected
            assert {len(packet) for packet in got} == {102}

        clock.set(NINE + timedelta(minutes=1))
        with audit:
            shell.step(want, audit, COMMIT)
        assert receive(on_a, want=1, seconds=1) == []  # once per request
    finally:
        shell.close()

    entries, findings = audit_log.read(tmp_path / "audit.jsonl")
    assert findings == []
    woken = [e for e in entries if e.event == "pc_woken"]
    assert [(e.target, e.result.status.value) for e in woken] == [("pc-a", "ok"), ("pc-b", "ok")]
    assert woken[1].details["macs"] == [pc_b.mac, DOCK]
    assert woken[1].details["interface"] == "e0"
    assert woken[1].result.message == "magic packet to 2 NICs out of e0"
    assert {e.commit for e in woken} == {COMMIT}
    assert [e.event for e in entries].count("wake_requested") == 1


@pytest.mark.integration
@pytest.mark.netns
def test_a_kitting_interface_that_is_not_there_is_audited_and_the_step_goes_on(
    vnet: netns.VirtualNetwork, tmp_path: Path
) -> None:
    vnet.add_switch()
    server = vnet.add_host("srv", nics=[netns.NicSpec(address="192.168.100.1/24")])
    macs = ["02:00:00:00:01:01", "02:00:00:00:02:01"]
    found = in_netns(server.netns, lambda: wake.send("e7", macs))
    assert found == dict.fromkeys(macs, "bind to e7: No such device")

    room = Department.model_validate(
        {"kind": "Department", "name": "lab", "pcs": [{"hostname": "pc-a", "macs": macs}]}
    )
    wanted = batch(mode="unicast", wake_on_lan=True)
    want = Desired(
        site=site(server={"hostname": "kit01", "interface": "e7", "address": "192.168.100.1"}),
        images={IMAGE.name: IMAGE},
        departments={"lab": room},
        batches={wanted.name: wanted},
    )
    root = tmp_path / "root"
    (root / "home" / "partimag").mkdir(parents=True)
    clock = FixedClock(NINE)
    shell = DeployShell(
        str(root),
        Layout(),
        clock,
        sessions=NoSessions(),
        images=lambda d, s, now: {"win11": WIN11},
        prerequisites=lambda d: {},
        listen=lambda address, port: in_netns(
            server.netns, lambda: socket.create_server((address, port))
        ),
        wake_on_lan=sender_in(server.netns),
    )
    audit = AuditLog(tmp_path / "audit.jsonl", tmp_path / "audit.head", clock)
    try:
        with audit:
            artifacts = shell.step(want, audit, COMMIT)
    finally:
        shell.close()
    assert len(artifacts) == 4  # armed all the same: PXE and GRUB entries for both NICs
    entries, _ = audit_log.read(tmp_path / "audit.jsonl")
    [woken] = [e for e in entries if e.event == "pc_woken"]
    assert (woken.target, woken.result.status.value) == ("pc-a", "failed")
    assert woken.result.message == (
        "02:00:00:00:01:01: bind to e7: No such device; "
        "02:00:00:00:02:01: bind to e7: No such device"
    )
    assert woken.commit == COMMIT
