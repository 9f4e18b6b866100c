"""The rendered files against the real programs: dnsmasq, nft, sshd, grub-script-check,
nfsconf, and a live DHCP/TFTP/firewall exchange in network namespaces this test creates.

Expected values are worked out by hand from the site in render_cases.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from reconciler import render
from reconciler.desired import Department, Desired
from reconciler.lab import probes
from reconciler.lab.netns import NicSpec, VirtualNetwork
from reconciler.lab.services import NFS_SCRIPT
from reconciler.layout import Layout
from reconciler.rendered import Rendered

from . import render_cases as rc

pytestmark = pytest.mark.integration

RequirePrograms = Callable[..., None]
LAYOUT = Layout()


def _goldens(pattern: str) -> list[Path]:
    found = sorted(rc.CASES_DIR.rglob(pattern))
    assert found, f"no golden file matches {pattern}"
    return found


def _run(argv: list[str], *, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def scratch_netns(require_programs: RequirePrograms) -> Iterator[str]:
    """An empty network namespace of this test's own, deleted at the end."""
    require_programs("ip")
    name = f"kitting-render-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


# ------------------------------------------------------------------ syntax checks


def test_dnsmasq_accepts_every_golden_dropin(require_programs: RequirePrograms) -> None:
    require_programs("dnsmasq")
    for path in _goldens("kitting.conf"):
        if "dnsmasq.d" not in path.parts:
            continue
        done = _run(["dnsmasq", "--test", f"--conf-file={path}"])
        assert done.returncode == 0, (path, done.stderr)
        assert "syntax check OK" in done.stderr


def test_dnsmasq_accepts_every_golden_reservation_line(
    require_programs: RequirePrograms, tmp_path: Path
) -> None:
    """`dnsmasq --test` never reads a hosts file, so each line is checked as the
    --dhcp-host option it stands for (same syntax, per the man page)."""
    require_programs("dnsmasq")
    for path in _goldens("*.hosts"):
        lines = [t for t in path.read_text().splitlines() if not t.startswith("#")]
        wrapped = tmp_path / f"{path.parent.parent.parent.parent.name}-{path.name}.conf"
        wrapped.write_text("".join(f"dhcp-host={t}\n" for t in lines))
        done = _run(["dnsmasq", "--test", f"--conf-file={wrapped}"])
        assert done.returncode == 0, (path, done.stderr)


@pytest.mark.netns
def test_nft_accepts_every_golden_table(
    require_programs: RequirePrograms, scratch_netns: str
) -> None:
    require_programs("nft")
    for path in _goldens("kitting.nft"):
        done = _run(["ip", "netns", "exec", scratch_netns, "nft", "-c", "-f", str(path)])
        assert done.returncode == 0, (path, done.stderr)


@pytest.mark.netns
def test_nft_file_replaces_its_table_atomically_and_leaves_others_alone(
    require_programs: RequirePrograms, scratch_netns: str, tmp_path: Path
) -> None:
    require_programs("nft")
    other = tmp_path / "other.nft"
    other.write_text("table inet other {\n\tchain keep {\n\t\ttcp dport 9 drop\n\t}\n}\n")
    nft = ["ip", "netns", "exec", scratch_netns, "nft"]
    assert _run([*nft, "-f", str(other)]).returncode == 0
    basic = rc.golden_path("basic", LAYOUT.nft_file)
    ssh_off = rc.golden_path("ssh-off", LAYOUT.nft_file)
    for path in (basic, basic, ssh_off):  # first load, reload, then a changed table
        done = _run([*nft, "-f", str(path)])
        assert done.returncode == 0, done.stderr
    tables = _run([*nft, "list", "tables"]).stdout.split("\n")
    assert sorted(t for t in tables if t) == ["table inet kitting", "table inet other"]
    kitting = _run([*nft, "list", "table", "inet", "kitting"]).stdout
    assert "tcp dport 22" not in kitting  # the ssh-off table replaced the basic one
    assert "chain forward" not in kitting
    assert "tcp dport 9 drop" in _run([*nft, "list", "table", "inet", "other"]).stdout


@pytest.mark.netns
def test_sshd_accepts_the_dropin_and_applies_its_values(
    require_programs: RequirePrograms, tmp_path: Path
) -> None:
    require_programs("sshd", "ssh-keygen", "unshare")
    key = tmp_path / "host_key"
    made = _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
    assert made.returncode == 0, made.stderr
    dropin = rc.golden_path("basic", LAYOUT.sshd_dropin)
    main = tmp_path / "sshd_config"
    main.write_text(f"HostKey {key}\nInclude {dropin}\n")
    # sshd -t wants its privilege separation directory: give it one in a private /run,
    # so nothing on the machine changes.
    script = (
        "mount -t tmpfs kitting-run /run && mkdir -m 0755 /run/sshd && "
        f'/usr/sbin/sshd -t -f "{main}" && '
        f'/usr/sbin/sshd -T -f "{main}" -C user=kit,host=pc,addr=192.168.100.50'
    )
    done = _run(["unshare", "--mount", "sh", "-c", script])
    assert done.returncode == 0, done.stderr
    effective = set(done.stdout.splitlines())
    assert {
        "passwordauthentication no",
        "kbdinteractiveauthentication no",
        "permitrootlogin no",
        "pubkeyauthentication yes",
        "authenticationmethods publickey",
    } <= effective


def test_grub_accepts_every_golden_menu(require_programs: RequirePrograms) -> None:
    require_programs("grub-script-check")
    for path in [*_goldens("grub.cfg"), *_goldens("grub.cfg-01-*")]:
        done = _run(["grub-script-check", str(path)])
        assert done.returncode == 0, (path, done.stdout, done.stderr)


def test_nfsconf_reads_the_pinned_mountd_port(require_programs: RequirePrograms) -> None:
    require_programs("nfsconf")
    for case, port in (("basic", "20048"), ("ssh-off", "20048")):
        path = rc.golden_path(case, LAYOUT.nfs_conf_file)
        done = _run(["nfsconf", "--file", str(path), "--get", "mountd", "port"])
        assert (done.returncode, done.stdout.strip()) == (0, port), done.stderr


# ------------------------------------------------------------------ live exchange

PC_BIOS_MAC = "aa:bb:cc:00:01:02"  # sales-pc01, its second NIC
LAPTOP_MAC, LAPTOP_DOCK_MAC = "02:11:22:33:44:01", "02:11:22:33:44:02"  # field-lt01
ARM_MAC = "aa:bb:cc:00:03:01"  # acct-pc01, asked as an ARM64 client
UNKNOWN_MAC = "02:00:00:00:99:99"
NEW_PC_MAC = "02:00:00:00:77:01"


def _live_site(tmp: Path) -> tuple[Desired, Layout]:
    """The basic site on interface e0 with its files under tmp, no gateway and no DNS
    (so that suppressing dnsmasq's defaults is seen), plus the docked laptop."""
    base = rc.cases()["basic"]
    tftp = tmp / "tftp"
    tftp.mkdir()
    server = base.site.server.model_copy(update={"interface": "e0"})
    net = base.site.network.model_copy(update={"gateway": None, "dns": []})
    boot = base.site.boot.model_copy(update={"tftp_root": str(tftp)})
    site = base.site.model_copy(update={"server": server, "network": net, "boot": boot})
    departments = {**base.departments, "field": rc.docked_laptop_with_fixed_ip()}
    layout = Layout(
        dnsmasq_conf=str(tmp / "kitting.conf"),
        dhcp_hosts_dir=str(tmp / "dhcp-hosts"),
        dnsmasq_log="-",  # dnsmasq's word for stderr, which this test reads
        dhcp_leases=str(tmp / "leases"),  # the rendered file names it: never the machine's
    )
    return replace(base, site=site, departments=departments), layout


def _write(rendered: Rendered, paths: list[str]) -> None:
    for path in paths:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(rendered.artifacts[path].content)


@pytest.mark.netns
@pytest.mark.slow
def test_pcs_get_boot_files_by_architecture_through_the_rendered_firewall(
    vnet: VirtualNetwork, tmp_path: Path, require_programs: RequirePrograms
) -> None:
    require_programs("dnsmasq", "nft", "busybox", "tftp")
    desired, layout = _live_site(tmp_path)
    rendered = render.all(desired, layout)
    served = [p for p in rendered.artifacts if p.startswith(str(tmp_path))]
    _write(rendered, served)
    (Path(desired.site.boot.tftp_root) / "pxelinux.0").write_bytes(b"pxelinux stand-in\n")
    nft_file = tmp_path / "kitting.nft"
    nft_file.write_bytes(rendered.artifacts[LAYOUT.nft_file].content)

    vnet.add_switch()
    srv = vnet.add_host("srv", nics=[NicSpec(address="192.168.100.1/24")])
    bios_pc = vnet.add_host("pc1", nics=[NicSpec(mac=PC_BIOS_MAC)])
    laptop = vnet.add_host("pc2", nics=[NicSpec(mac=LAPTOP_MAC), NicSpec(mac=LAPTOP_DOCK_MAC)])
    arm_pc = vnet.add_host("pc3", nics=[NicSpec(mac=ARM_MAC)])
    stranger = vnet.add_host("pc4", nics=[NicSpec(mac=UNKNOWN_MAC)])
    newcomer = vnet.add_host("pc5", nics=[NicSpec(mac=NEW_PC_MAC)])

    loaded = vnet.procs.run(["nft", "-f", str(nft_file)], netns=srv.netns, timeout=10)
    assert loaded.ok, loaded.text
    argv = ["dnsmasq", "--no-daemon", f"--conf-file={layout.dnsmasq_conf}"]
    # root: the TFTP root is in pytest's private tmp dir; the rest is the rendered file.
    argv += ["--user=root", "--pid-file="]
    dnsmasq = vnet.procs.start([*argv, "--log-facility=-"], netns=srv.netns, name="dnsmasq")
    assert dnsmasq.wait_for_output("TFTP root is", timeout=5.0), dnsmasq.output()

    # A pool address is offered only after dnsmasq's ping check (about 3 s): wait as long
    # as PXE firmware does.
    bios = probes.dhcp(vnet.procs, bios_pc, client_arch=0, tries=2, pause=4)
    uefi = probes.dhcp(vnet.procs, laptop, client_arch=7)
    docked = probes.dhcp(vnet.procs, laptop, nic="e1", client_arch=9)
    arm = probes.dhcp(vnet.procs, arm_pc, client_arch=11, tries=2, pause=4)
    unknown = probes.dhcp(vnet.procs, stranger, client_arch=7, tries=2, pause=4)
    for lease in (bios, uefi, docked, arm, unknown):
        assert isinstance(lease, probes.DhcpLease), (lease, dnsmasq.output()[-3000:])
    assert isinstance(bios, probes.DhcpLease)
    assert isinstance(uefi, probes.DhcpLease)
    assert isinstance(docked, probes.DhcpLease)
    assert isinstance(arm, probes.DhcpLease)
    assert isinstance(unknown, probes.DhcpLease)
    assert (bios.boot_file, bios.hostname) == ("pxelinux.0", "sales-pc01")
    assert str(bios.next_server) == "192.168.100.1"
    # The laptop's fixed address, whichever NIC asks; shim because Secure Boot is on.
    assert (str(uefi.address), uefi.boot_file) == ("192.168.100.30/24", "shimx64.efi")
    assert (str(docked.address), docked.boot_file) == ("192.168.100.30/24", "shimx64.efi")
    # ARM64 and a MAC not in the site repo: an address from the pool, no boot file.
    assert arm.boot_file is None and arm.hostname == "acct-pc01"
    assert unknown.boot_file is None
    assert 10 <= int(str(unknown.address.ip).rsplit(".", 1)[1]) <= 100
    # No gateway and no DNS in the site: dnsmasq must not offer itself as either.
    assert all(lease.router is None for lease in (bios, uefi, unknown))
    sent = [t for t in dnsmasq.output().splitlines() if " sent size:" in t]
    assert sent, "log-dhcp shows every option sent"
    assert not [t for t in sent if " router " in t or " dns-server " in t]
    assert probes.dnsmasq_tags(dnsmasq.output(), UNKNOWN_MAC) >= {"kitting-efi64"}
    assert "known" not in probes.dnsmasq_tags(dnsmasq.output(), UNKNOWN_MAC)

    # A PC added to the site repo: its new file is read without any signal.
    with_new = replace(desired, departments={**desired.departments, "new": _new_department()})
    new_hosts = f"{layout.dhcp_hosts_dir}/new-pc01.hosts"
    _write(render.all(with_new, layout), [new_hosts])
    assert dnsmasq.wait_for_output(f"read {new_hosts}", timeout=5.0), dnsmasq.output()[-2000:]
    newly = probes.dhcp(vnet.procs, newcomer, client_arch=0, tries=2, pause=4)
    assert isinstance(newly, probes.DhcpLease) and newly.boot_file == "pxelinux.0"

    # A PC that holds a lease leaves the site: its file goes, a SIGHUP drops its
    # reservation (dnsmasq 2.90 aborted here while reservations set a tag of their own).
    Path(f"{layout.dhcp_hosts_dir}/field-lt01.hosts").unlink()
    assert dnsmasq.wait_for_output("field-lt01.hosts removed", timeout=5.0)
    dnsmasq.send_signal(signal.SIGHUP)
    gone = probes.dhcp(vnet.procs, laptop, client_arch=7, tries=2, pause=4)
    assert dnsmasq.running(), dnsmasq.output()[-2000:]
    assert isinstance(gone, probes.DhcpLease) and gone.boot_file is None
    assert 10 <= int(str(gone.address.ip).rsplit(".", 1)[1]) <= 100  # the pool, not .30

    # TFTP through the firewall: the menu the BIOS PC would read, byte for byte.
    vnet.assign(bios_pc, str(bios.address))
    menu = probes.tftp_get(vnet.procs, bios_pc, "192.168.100.1", "pxelinux.cfg/default")
    default_path = f"{desired.site.boot.tftp_root}/pxelinux.cfg/default"
    assert menu == probes.TftpFetched(
        "pxelinux.cfg/default", rendered.artifacts[default_path].content
    )

    # The firewall: the report port is open, any other port and SSH from a PC are not.
    listeners = [probes.tcp_listen(vnet.procs, srv, port, timeout=8.0) for port in (6461, 22, 8080)]
    assert probes.tcp_connect(vnet.procs, bios_pc, "192.168.100.1", 6461) == "connected"
    assert probes.tcp_connect(vnet.procs, bios_pc, "192.168.100.1", 22, timeout=1.0) == "timeout"
    assert probes.tcp_connect(vnet.procs, bios_pc, "192.168.100.1", 8080, timeout=1.0) == "timeout"
    for listener in listeners:
        listener.proc.stop()


def _new_department() -> Department:
    return Department.model_validate(
        {
            "kind": "Department",
            "name": "new",
            "pcs": [{"hostname": "new-pc01", "macs": [NEW_PC_MAC]}],
        }
    )


@pytest.mark.netns
@pytest.mark.slow
def test_ganesha_serves_the_export_read_only_to_the_subnet_only(
    vnet: VirtualNetwork, tmp_path: Path, require_programs: RequirePrograms
) -> None:
    require_programs("rpcbind", "ganesha.nfsd", "rpcinfo", "nfs-ls", "nfs-cp")
    images = tmp_path / "images"
    images.mkdir()
    (images / "disk").write_text("sda\n")
    base = rc.cases()["ganesha"]
    # The subnet is the lower half of the lab network, so .200 is a client outside it.
    net = base.site.network.model_copy(update={"subnet": IPv4Network("192.168.100.0/25")})
    site = base.site.model_copy(update={"network": net, "images_root": str(images)})
    rendered = render.all(replace(base, site=site))
    kitting = tmp_path / "kitting.conf"
    kitting.write_bytes(rendered.artifacts[LAYOUT.ganesha_conf].content)
    main = tmp_path / "ganesha.conf"
    main.write_text(f'%include "{kitting}"\n')

    vnet.add_switch()
    srv = vnet.add_host("srv", nics=[NicSpec(address="192.168.100.1/24")])
    inside = vnet.add_host("pc1", nics=[NicSpec(address="192.168.100.50/24")])
    outside = vnet.add_host("adm", nics=[NicSpec(address="192.168.100.200/24")])
    # rpcbind keeps its socket and state in /run: give both programs a private /run so
    # nothing of the machine's rpcbind is touched.
    log = tmp_path / "ganesha.log"
    argv = ["unshare", "--mount", "--", "sh", "-c", NFS_SCRIPT, "sh", str(main), str(log)]
    vnet.procs.start([*argv, str(tmp_path / "ganesha.pid")], netns=srv.netns, name="nfs")
    registered = ""
    for _ in range(100):  # 10 s
        registered = vnet.procs.run(["rpcinfo", "-p", "127.0.0.1"], netns=srv.netns, timeout=5).text
        if "mountd" in registered:
            break
        time.sleep(0.1)
    assert "Configuration file successfully parsed" in log.read_text()
    # mountd on the pinned port; no lock manager, no quota service.
    assert re.search(r"100005\s+3\s+tcp\s+20050\s+mountd", registered), registered
    assert "nlockmgr" not in registered and "rquotad" not in registered

    url = f"nfs://192.168.100.1{images}"
    listed = vnet.procs.run(["nfs-ls", url], netns=inside.netns, timeout=10)
    assert listed.ok and " disk" in listed.text, listed.text
    upload = tmp_path / "upload"
    upload.write_text("x\n")
    wrote = vnet.procs.run(["nfs-cp", str(upload), f"{url}/upload"], netns=inside.netns, timeout=10)
    assert "ROFS" in wrote.text, wrote.text
    assert not (images / "upload").exists()
    refused = vnet.procs.run(["nfs-ls", url], netns=outside.netns, timeout=10)
    assert "MNT3ERR_ACCES" in refused.text, refused.text
