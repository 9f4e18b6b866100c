"""The lab network for real: namespaces, dnsmasq, busybox udhcpc, tftp-hpa, sockets.

Every expected value here is written by hand from the dnsmasq file the test writes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.lab import labsite, netns, probes, rehearsal, security
from reconciler.lab.netns import NicSpec, VirtualNetwork
from reconciler.lab.procs import Proc, ProcessRegistry

pytestmark = [pytest.mark.integration, pytest.mark.netns]

RequirePrograms = Callable[..., None]

PC1_MAC = "02:00:5e:10:00:21"  # BIOS PC
PC2_MAC = "02:00:5e:10:00:22"  # UEFI PC, e0
PC2_DOCK_MAC = "02:00:5e:10:01:22"  # UEFI PC, e1 (its dock)
IGNORES_SIGTERM = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def _dnsmasq_file(tmp: Path, tftp_root: Path) -> Path:
    path = tmp / "dnsmasq-lab.conf"
    path.write_text(
        "port=0\n"
        "interface=e0\n"
        "bind-interfaces\n"
        "user=root\n"  # the TFTP root is in pytest's private tmp dir
        f"dhcp-leasefile={tmp / 'leases'}\n"
        "dhcp-range=192.168.100.100,192.168.100.199,255.255.255.0,1h\n"
        f"dhcp-host={PC1_MAC},192.168.100.21\n"
        f"dhcp-host={PC2_MAC},{PC2_DOCK_MAC},192.168.100.22\n"
        "dhcp-match=set:efi,option:client-arch,7\n"
        "dhcp-boot=tag:efi,shimx64.efi\n"
        "dhcp-boot=tag:!efi,pxelinux.0\n"
        "enable-tftp\n"
        f"tftp-root={tftp_root}\n"
        "log-dhcp\n"
    )
    return path


def _start_dnsmasq(net: VirtualNetwork, server: netns.Host, tmp: Path) -> Proc:
    root = tmp / "tftp"
    root.mkdir()
    (root / "pxelinux.0").write_bytes(bytes(range(256)) * 64 + b"tail")
    argv = ["dnsmasq", "--no-daemon", f"--conf-file={_dnsmasq_file(tmp, root)}"]
    proc = net.procs.start([*argv, "--log-facility=-", "--pid-file="], netns=server.netns)
    assert proc.wait_for_output("sockets bound exclusively to interface e0", timeout=5.0), (
        proc.output()
    )
    return proc


def _wait_inside(ns: str, pid: int) -> None:
    for _ in range(250):  # 5 s
        if str(pid) in netns.run_ip("netns", "pids", ns).stdout.split():
            return
        time.sleep(0.02)
    raise AssertionError(f"pid {pid} never entered {ns}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_bios_and_uefi_pcs_get_their_address_boot_file_and_tftp_bytes(
    vnet: VirtualNetwork, tmp_path: Path, require_programs: RequirePrograms
) -> None:
    require_programs("dnsmasq", "busybox", "tftp")
    vnet.add_switch()
    server = vnet.add_host("srv", nics=[NicSpec(address="192.168.100.1/24")])
    pc1 = vnet.add_host("pc1", nics=[NicSpec(mac=PC1_MAC)])
    pc2 = vnet.add_host("pc2", nics=[NicSpec(mac=PC2_MAC), NicSpec(mac=PC2_DOCK_MAC)])
    dnsmasq = _start_dnsmasq(vnet, server, tmp_path)

    bios = probes.dhcp(vnet.procs, pc1, client_arch=probes.ARCH_BIOS)
    uefi = probes.dhcp(vnet.procs, pc2, client_arch=probes.ARCH_EFI_X86_64)
    dock = probes.dhcp(vnet.procs, pc2, nic="e1", client_arch=probes.ARCH_EFI_X86_64)

    assert isinstance(bios, probes.DhcpLease), bios
    assert str(bios.address) == "192.168.100.21/24"
    assert bios.boot_file == "pxelinux.0"
    assert str(bios.next_server) == "192.168.100.1"
    assert str(bios.server_id) == "192.168.100.1"
    assert isinstance(uefi, probes.DhcpLease), uefi
    assert str(uefi.address) == "192.168.100.22/24"
    assert uefi.boot_file == "shimx64.efi"
    # The dock's MAC is reserved with the same PC: the same address.
    assert isinstance(dock, probes.DhcpLease), dock
    assert (dock.interface, str(dock.address)) == ("e1", "192.168.100.22/24")
    # dnsmasq really read option 93: it tagged only the UEFI PC's requests "efi".
    assert "efi" in probes.dnsmasq_tags(dnsmasq.output(), PC2_MAC)
    assert "efi" not in probes.dnsmasq_tags(dnsmasq.output(), PC1_MAC)
    assert "known" in probes.dnsmasq_tags(dnsmasq.output(), PC1_MAC)

    vnet.assign(pc1, str(bios.address))
    fetched = probes.tftp_get(vnet.procs, pc1, "192.168.100.1", "pxelinux.0")
    assert fetched == probes.TftpFetched("pxelinux.0", bytes(range(256)) * 64 + b"tail")
    missing = probes.tftp_get(vnet.procs, pc1, "192.168.100.1", "grubx64.efi")
    assert isinstance(missing, probes.TftpFailed)
    assert (missing.kind, missing.code) == ("error", 1)  # TFTP "file not found"


def test_hosts_have_their_macs_multicast_route_and_nothing_in_default_namespace(
    vnet: VirtualNetwork,
) -> None:
    vnet.add_switch()
    pc = vnet.add_host("pc1", nics=[NicSpec(mac=PC2_MAC), NicSpec()])
    links = netns.run_ip("-n", pc.netns, "-o", "link", "show")
    assert f"link/ether {PC2_MAC} " in links.stdout
    # The second NIC got the run's own MAC: 02, the prefix's 3 bytes, host 1 (the first), NIC 1.
    token = vnet.prefix[2:8]
    assert pc.nics[1].mac == f"02:{token[0:2]}:{token[2:4]}:{token[4:6]}:01:01"
    assert f"link/ether {pc.nics[1].mac} " in links.stdout
    routes = netns.run_ip("-n", pc.netns, "route", "show", "224.0.0.0/4")
    assert routes.stdout.split()[:3] == ["224.0.0.0/4", "dev", "e0"]
    ports = netns.run_ip("-n", vnet.netns("kit"), "-o", "link", "show", "master", "br0")
    assert sorted(netns.parse_link_names(ports.stdout)) == ["pc1-e0", "pc1-e1"]
    default_links = netns.run_ip("-o", "link", "show")
    assert not [
        n for n in netns.parse_link_names(default_links.stdout) if n.startswith(vnet.prefix)
    ]


def test_router_joins_production_until_a_firewall_drops_forwarding(
    vnet: VirtualNetwork, tmp_path: Path, require_programs: RequirePrograms
) -> None:
    require_programs("busybox", "nft")
    vnet.add_switch()
    rtr, prod = vnet.add_production()
    pc = vnet.add_host(
        "pc1", nics=[NicSpec(address="192.168.100.21/24")], gateway="192.168.100.254"
    )
    assert probes.ping(vnet.procs, pc, "198.18.0.10")
    listener = probes.udp_listen(vnet.procs, prod, 9999)
    probes.udp_send(vnet.procs, pc, "198.18.0.10", 9999, "hello production")
    assert [(str(m.source), m.payload) for m in listener.messages()] == [
        ("192.168.100.21", "hello production")
    ]
    assert probes.tcp_connect(vnet.procs, pc, "198.18.0.10", 22, timeout=1.0) == "refused"

    rules = tmp_path / "router.nft"
    rules.write_text(
        "table inet labfw {\n"
        "  chain forward {\n"
        "    type filter hook forward priority 0; policy accept;\n"
        "    ip saddr 192.168.100.0/24 ip daddr 198.18.0.0/15 drop\n"
        "  }\n"
        "}\n"
    )
    loaded = vnet.procs.run(["nft", "-f", str(rules)], netns=rtr.netns, timeout=5.0)
    assert loaded.ok, loaded.text

    assert not probes.ping(vnet.procs, pc, "198.18.0.10", timeout=1.0)
    assert probes.tcp_connect(vnet.procs, pc, "198.18.0.10", 22, timeout=1.0) == "timeout"
    listener = probes.udp_listen(vnet.procs, prod, 9999, timeout=1.0)
    probes.udp_send(vnet.procs, pc, "198.18.0.10", 9999, "blocked")
    assert listener.messages() == []


def test_the_rehearsal_network_reaches_production_only_through_the_server_then_the_router(
    vnet: VirtualNetwork, require_programs: RequirePrograms
) -> None:
    """srv e1 -- uplink -- rtr -- production -- prodsrv (addresses from labsite's plan,
    worked out by hand: uplink 198.19.0.0/24, production link 198.18.0.0/24)."""
    require_programs("busybox")
    hosts = rehearsal.build_network(vnet, labsite.lab_pcs(vnet.prefix, 1))
    assert sorted(hosts) == ["adm", "pc1", "prodsrv", "rtr", "srv"]
    adm, prod, srv = hosts["adm"], hosts["prodsrv"], hosts["srv"]
    assert [(n.name, n.switch, str(n.address)) for n in srv.nics] == [
        ("e0", "kit", "192.168.100.1/24"),
        ("e1", "uplink", "198.19.0.1/24"),
    ]
    assert [(n.name, n.switch, str(n.address)) for n in hosts["rtr"].nics] == [
        ("e0", "uplink", "198.19.0.254/24"),
        ("e1", "prod", "198.18.0.1/24"),
    ]
    assert (str(prod.address), str(prod.gateway)) == ("198.18.0.10", "198.18.0.1")
    assert security.trace(vnet.procs, adm, "198.18.0.10") == [
        "192.168.100.1",
        "198.19.0.254",
        "198.18.0.10",
    ]
    listener = probes.udp_listen(vnet.procs, prod, 9999)
    probes.udp_send(vnet.procs, adm, "198.18.0.10", 9999, "routed, not translated")
    assert [(str(m.source), m.payload) for m in listener.messages()] == [
        ("192.168.100.200", "routed, not translated")
    ]
    # The server is the only way out: with its forwarding off, production is out of reach.
    off = vnet.procs.run(
        ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"], netns=srv.netns, timeout=5.0
    )
    assert off.ok, off.text
    assert not probes.ping(vnet.procs, adm, "198.18.0.10", timeout=1.0)
    with pytest.raises(ValueError, match="not inside the lab networks"):
        vnet.add_route(hosts["rtr"], "10.0.0.0/8", via="198.19.0.1")


def test_job_report_line_reaches_a_listener_on_6461(vnet: VirtualNetwork) -> None:
    vnet.add_switch()
    server = vnet.add_host("srv", nics=[NicSpec(address="192.168.100.1/24")])
    pc = vnet.add_host("pc1", nics=[NicSpec(address="192.168.100.21/24")])
    listener = probes.tcp_listen(vnet.procs, server, 6461)
    line = "192.168.100.21 02:00:5e:10:00:21 Restoring disk finished"
    assert probes.tcp_send_line(vnet.procs, pc, "192.168.100.1", 6461, line) == "connected"
    assert [(str(m.source), m.payload) for m in listener.messages()] == [
        ("192.168.100.21", line + "\n")
    ]


def test_teardown_after_a_failing_body_leaves_no_namespace_process_or_record(
    tmp_path: Path, require_programs: RequirePrograms
) -> None:
    require_programs("dnsmasq")
    outsider: subprocess.Popen[bytes] | None = None
    with (
        pytest.raises(RuntimeError, match="test body failed"),
        VirtualNetwork.create(log_dir=tmp_path / "lab") as net,
    ):
        prefix = net.prefix
        net.add_switch()
        server = net.add_host("srv", nics=[NicSpec(address="192.168.100.1/24")])
        pc = net.add_host("pc1")
        names = [net.netns(n) for n in ("kit", "srv", "pc1")]
        assert sorted(n for n in netns.list_namespaces() if n.startswith(prefix)) == sorted(names)
        dnsmasq = _start_dnsmasq(net, server, tmp_path)
        sleeper = net.procs.start(["sleep", "60"], netns=pc.netns)
        # A process the registry does not know: teardown finds it in the namespace.
        outsider = subprocess.Popen(["ip", "netns", "exec", pc.netns, "sleep", "60"])
        _wait_inside(pc.netns, outsider.pid)
        raise RuntimeError("test body failed")
    assert outsider is not None
    assert not [n for n in netns.list_namespaces() if n.startswith(prefix)]
    assert dnsmasq.returncode == 0  # dnsmasq ends cleanly on SIGTERM
    assert sleeper.returncode == -signal.SIGTERM
    assert outsider.wait(timeout=5) == -signal.SIGTERM
    assert not _alive(dnsmasq.pid) and not _alive(sleeper.pid) and not _alive(outsider.pid)
    assert not netns.record_path(netns.STATE_DIR, prefix).exists()
    assert netns.teardown(prefix) == []  # idempotent


def test_registry_stops_its_programs_on_keyboard_interrupt(
    vnet: VirtualNetwork, tmp_path: Path
) -> None:
    vnet.add_switch()
    pc = vnet.add_host("pc1")
    with (
        pytest.raises(KeyboardInterrupt),
        ProcessRegistry(tmp_path / "procs", grace=0.5) as procs,
    ):
        stubborn = procs.start([sys.executable, "-c", IGNORES_SIGTERM], netns=pc.netns)
        assert stubborn.wait_for_output("ready", timeout=5.0)
        plain = procs.start(["sleep", "60"], netns=pc.netns)
        assert stubborn.running() and plain.running()
        raise KeyboardInterrupt
    assert plain.returncode == -signal.SIGTERM
    assert stubborn.returncode == -signal.SIGKILL  # ignored SIGTERM: killed after the grace
    assert not _alive(plain.pid) and not _alive(stubborn.pid)


def test_run_stops_a_program_at_its_timeout(vnet: VirtualNetwork) -> None:
    vnet.add_switch()
    pc = vnet.add_host("pc1")
    done = vnet.procs.run(["sleep", "60"], netns=pc.netns, timeout=0.3)
    assert done.timed_out and done.returncode == -signal.SIGTERM and not done.ok
    done = vnet.procs.run(["sh", "-c", "echo out; echo err >&2; exit 3"], netns=pc.netns, timeout=5)
    assert (done.returncode, done.stdout, done.stderr, done.timed_out) == (
        3,
        b"out\n",
        b"err\n",
        False,
    )


def test_cleanup_stale_removes_a_dead_owners_run_and_keeps_a_live_one(
    vnet: VirtualNetwork, tmp_path: Path
) -> None:
    vnet.add_switch()
    crashed = VirtualNetwork.create(log_dir=tmp_path / "crashed")
    try:
        crashed.add_switch()
        crashed.add_host("pc1")
        # Its owner "died": a PID whose process has ended (reaped, so it is gone).
        gone = subprocess.Popen(["true"])
        gone.wait(timeout=5)
        record = netns.OwnerRecord(crashed.prefix, gone.pid, 1)
        netns.record_path(netns.STATE_DIR, crashed.prefix).write_bytes(record.encode())

        removed = netns.cleanup_stale()

        assert crashed.prefix in removed and vnet.prefix not in removed
        left = netns.list_namespaces()
        assert not [n for n in left if n.startswith(crashed.prefix)]
        assert vnet.netns("kit") in left
    finally:
        crashed.teardown()
