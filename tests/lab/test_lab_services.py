"""`LabServices` against the real programs in a namespace of the test's own: start,
reload (SIGHUP), restart (a new process), stop, state, and a program that cannot start.

The rehearsal only ever starts the programs (a first pass); these are the other paths a
second commit takes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.facts import ServiceState
from reconciler.lab.netns import NicSpec, VirtualNetwork
from reconciler.lab.services import LabServices
from reconciler.layout import Layout
from reconciler.rendered import Service
from reconciler.services import ServiceError

pytestmark = [pytest.mark.integration, pytest.mark.netns]

RequirePrograms = Callable[..., None]


def _lab(vnet: VirtualNetwork, base: Path) -> tuple[LabServices, Layout, Path]:
    vnet.add_switch()
    server = vnet.add_host("srv", nics=[NicSpec(address="192.168.100.1/24")])
    etc = base / "etc"
    hosts = etc / "dhcp-hosts"
    hosts.mkdir(parents=True)
    (hosts / "pc1.hosts").write_text("02:00:00:00:00:01,pc1\n")
    layout = Layout(
        dnsmasq_conf=str(etc / "kitting.conf"),
        dhcp_hosts_dir=str(hosts),
        ganesha_conf=str(etc / "ganesha-kitting.conf"),
        sshd_dropin=str(etc / "sshd" / "00-kitting.conf"),
        nft_file=str(etc / "kitting.nft"),
        dnsmasq_log=str(base / "log" / "dnsmasq.log"),  # never the machine's own files
        dhcp_leases=str(base / "leases" / "dnsmasq.leases"),
    )
    Path(layout.dnsmasq_conf).write_text(
        "interface=e0\nbind-dynamic\nport=0\n"
        "dhcp-range=192.168.100.10,192.168.100.20,255.255.255.0,1h\n"
        f"dhcp-hostsdir={hosts}\n"
    )
    Path(layout.sshd_dropin).parent.mkdir()
    Path(layout.sshd_dropin).write_text("PasswordAuthentication no\n")
    images = base / "images"
    images.mkdir()
    Path(layout.ganesha_conf).write_text(
        "NFS_CORE_PARAM {\n    MNT_Port = 20048;\n    Enable_NLM = false;\n"
        "    Enable_RQUOTA = false;\n}\n"
        f'EXPORT {{\n    Export_Id = 1;\n    Path = "{images}";\n    Pseudo = "{images}";\n'
        "    Access_Type = None;\n    FSAL {\n        Name = VFS;\n    }\n}\n"
    )
    services = LabServices(vnet.procs, server.netns, layout, base / "private")
    return services, layout, hosts


def test_start_reload_restart_and_stop(
    vnet: VirtualNetwork, readable_dir: Path, require_programs: RequirePrograms
) -> None:
    require_programs("dnsmasq", "sshd", "ssh-keygen", "rpcbind", "rpcinfo", "ganesha.nfsd")
    services, _, hosts = _lab(vnet, readable_dir)
    for service in (Service.dnsmasq, Service.sshd, Service.nfs_ganesha):
        assert services.state(service) is ServiceState.inactive
        services.restart(service)
        assert services.state(service) is ServiceState.active

    # dnsmasq re-reads its hosts files on SIGHUP, in the same process
    dnsmasq = services.pid(Service.dnsmasq)
    (hosts / "pc2.hosts").write_text("02:00:00:00:00:02,pc2\n")
    services.reload(Service.dnsmasq)
    assert services.pid(Service.dnsmasq) == dnsmasq
    proc = next(p for p in vnet.procs.procs if p.name == "dnsmasq")
    for _ in range(100):  # dnsmasq handles the signal in its own time: up to 2 s
        if proc.output().count(f"read {hosts}/pc1.hosts") >= 2:
            break
        time.sleep(0.02)
    assert proc.output().count(f"read {hosts}/pc1.hosts") == 2  # at start and after SIGHUP
    assert f"read {hosts}/pc2.hosts" in proc.output()

    # sshd re-executes itself on SIGHUP (same PID) and listens again
    sshd = services.pid(Service.sshd)
    services.reload(Service.sshd)
    assert services.pid(Service.sshd) == sshd
    assert (
        "Received SIGHUP; restarting."
        in next(p for p in vnet.procs.procs if p.name == "sshd").output()
    )

    # restart: a new process, the old one gone; ganesha re-registers mountd
    old = services.pid(Service.nfs_ganesha)
    services.restart(Service.nfs_ganesha)
    new = services.pid(Service.nfs_ganesha)
    assert new is not None and new != old
    assert not Path(f"/proc/{old}").exists()
    registered = vnet.procs.run(["rpcinfo", "-p", "127.0.0.1"], netns=vnet.netns("srv"), timeout=5)
    assert re.search(r"100005\s+3\s+tcp\s+20048\s+mountd", registered.text), registered.text

    services.stop_all()
    assert [services.state(s) for s in (Service.dnsmasq, Service.sshd, Service.nfs_ganesha)] == [
        ServiceState.inactive
    ] * 3
    assert services.calls == [
        ("restart", "dnsmasq"),
        ("restart", "sshd"),
        ("restart", "nfs-ganesha"),
        ("reload", "dnsmasq"),
        ("reload", "sshd"),
        ("restart", "nfs-ganesha"),
    ]


def test_a_program_that_cannot_start_is_a_service_error(
    vnet: VirtualNetwork, readable_dir: Path, require_programs: RequirePrograms
) -> None:
    require_programs("dnsmasq")
    services, layout, _ = _lab(vnet, readable_dir)
    Path(layout.dnsmasq_conf).write_text("interface=e0\nno-such-option\n")
    with pytest.raises(ServiceError, match="dnsmasq did not start") as raised:
        services.restart(Service.dnsmasq)
    assert "no-such-option" in str(raised.value) or "bad option" in str(raised.value)
    assert services.state(Service.dnsmasq) is ServiceState.inactive
    assert services.pid(Service.dnsmasq) is None
