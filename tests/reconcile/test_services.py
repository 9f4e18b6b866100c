"""The service manager seam: what SystemdServices runs, and the recording NoServices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reconciler.facts import ServiceState
from reconciler.rendered import Service
from reconciler.runner import Completed
from reconciler.services import NoServices, ServiceError, SystemdServices

CASES = Path(__file__).parent.parent / "cases" / "facts"


@dataclass
class Recorder:
    code: int = 0
    stdout: str = ""
    stderr: str = ""
    ran: list[tuple[str, ...]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], *, timeout: float = 60.0) -> Completed:
        self.ran.append(tuple(argv))
        return Completed(tuple(argv), self.code, self.stdout, self.stderr)


@pytest.mark.parametrize(
    ("service", "argv"),
    [
        # SIGHUP to the main PID: Debian's ExecReload does the same; others have none.
        (
            Service.dnsmasq,
            ("systemctl", "kill", "--kill-whom=main", "--signal=SIGHUP", "dnsmasq.service"),
        ),
        (Service.nfs_kernel, ("exportfs", "-ra")),
        (Service.nfs_ganesha, ("systemctl", "reload-or-restart", "nfs-ganesha.service")),
        (Service.sshd, ("systemctl", "reload-or-restart", "ssh.service")),
    ],
)
def test_reload_commands(service: Service, argv: tuple[str, ...]) -> None:
    runner = Recorder()
    SystemdServices(runner).reload(service)
    assert runner.ran == [argv]


def test_restart_and_firewall_commands(tmp_path: Path) -> None:
    runner = Recorder()
    services = SystemdServices(runner, root=str(tmp_path))
    services.restart(Service.dnsmasq)
    services.apply_firewall("/etc/nftables.d/kitting.nft")
    services.drop_firewall()
    assert runner.ran == [
        ("systemctl", "restart", "dnsmasq.service"),
        ("nft", "-f", f"{tmp_path}/etc/nftables.d/kitting.nft"),  # the file under --root
        ("nft", "delete", "table", "inet", "kitting"),
    ]


def test_a_failing_command_raises_with_the_tools_words() -> None:
    runner = Recorder(code=1, stderr="Failed to kill unit dnsmasq.service: No main process to kill")
    with pytest.raises(ServiceError) as raised:
        SystemdServices(runner).reload(Service.dnsmasq)
    assert str(raised.value) == (
        "`systemctl kill --kill-whom=main --signal=SIGHUP dnsmasq.service` exited with 1: "
        "Failed to kill unit dnsmasq.service: No main process to kill"
    )


def test_dropping_an_absent_table_is_fine() -> None:
    missing = (CASES / "nft-missing-table.stderr").read_text()
    SystemdServices(Recorder(code=1, stderr=missing)).drop_firewall()
    with pytest.raises(ServiceError):
        SystemdServices(Recorder(code=1, stderr="Error: Operation not permitted")).drop_firewall()


def test_state_from_systemctl_show() -> None:
    runner = Recorder(stdout=(CASES / "systemctl-show-active.txt").read_text())
    assert SystemdServices(runner).state(Service.sshd) is ServiceState.active
    assert runner.ran == [("systemctl", "show", "--property=LoadState,ActiveState", "ssh.service")]


def test_state_without_systemd_is_unknown() -> None:
    stderr = (CASES / "systemctl-no-systemd.stderr").read_text()
    assert SystemdServices(Recorder(code=1, stderr=stderr)).state(Service.dnsmasq) is (
        ServiceState.unknown
    )


def test_no_services_records_and_changes_nothing() -> None:
    services = NoServices()
    services.reload(Service.dnsmasq)
    services.restart(Service.sshd)
    services.apply_firewall("/etc/nftables.d/kitting.nft")
    services.drop_firewall()
    assert services.calls == [
        ("reload", "dnsmasq"),
        ("restart", "sshd"),
        ("apply_firewall", "/etc/nftables.d/kitting.nft"),
        ("drop_firewall", "inet kitting"),
    ]
    assert services.state(Service.dnsmasq) is ServiceState.unknown
