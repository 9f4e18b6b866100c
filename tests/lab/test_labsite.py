"""The lab's site, worked out by hand for the prefix kt1a2b3c- and 4 PCs (see the table
in reconciler/lab/labsite.py): validated by the real validator, rendered into the exact
reservations dnsmasq will read. No root, no namespaces.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import PurePosixPath

import pytest

from reconciler import render, snapshot
from reconciler.desired import Desired, Firmware, NfsBackend
from reconciler.lab import labsite
from reconciler.layout import Layout
from reconciler.settings import Settings

PREFIX = "kt1a2b3c-"
ROOT = PurePosixPath("/var/lib/kitting-lab/kt1a2b3c/server")
TREE = labsite.ServerTree(ROOT)
HOSTS_DIR = "/var/lib/kitting-lab/kt1a2b3c/server/etc/kitting/dhcp-hosts"


def _desired(count: int = 4) -> Desired:
    files = labsite.site_files(labsite.lab_pcs(PREFIX, count), TREE)
    validation = snapshot.validate_files("lab", files)
    assert validation.problems == ()
    assert validation.desired is not None
    return validation.desired


def test_four_pcs_as_the_table_says() -> None:
    pcs = labsite.lab_pcs(PREFIX, 4)
    seen = [
        (p.node, p.hostname, p.department, p.firmware, p.macs, p.fixed_ip, p.arches) for p in pcs
    ]
    assert seen == [
        ("pc1", "sales-pc01", "sales", Firmware.bios, ("02:1a:2b:3c:11:00",),
         IPv4Address("192.168.100.101"), (0,)),
        ("pc2", "sales-pc02", "sales", Firmware.uefi, ("02:1a:2b:3c:12:00", "02:1a:2b:3c:12:01"),
         IPv4Address("192.168.100.102"), (7, 9)),
        ("pc3", "accounting-pc03", "accounting", Firmware.bios, ("02:1a:2b:3c:13:00",),
         None, (0,)),
        ("pc4", "accounting-pc04", "accounting", Firmware.uefi, ("02:1a:2b:3c:14:00",),
         IPv4Address("192.168.100.104"), (7,)),
    ]  # fmt: skip
    assert [p.boot_file for p in pcs] == ["pxelinux.0", "shimx64.efi", "pxelinux.0", "shimx64.efi"]
    assert [p.second_stage for p in pcs] == [
        "ldlinux.c32",
        "grubx64.efi",
        "ldlinux.c32",
        "grubx64.efi",
    ]


def test_the_stray_is_unknown_and_gets_no_boot_file() -> None:
    stray = labsite.stray_pc(PREFIX)
    assert (stray.node, stray.macs, stray.in_site, stray.boot_file) == (
        "stray",
        ("02:1a:2b:3c:04:00",),
        False,
        None,
    )


def test_one_pc_is_a_sales_bios_pc_and_has_no_dock() -> None:
    (only,) = labsite.lab_pcs(PREFIX, 1)
    assert (only.hostname, only.firmware, len(only.macs)) == ("sales-pc01", Firmware.bios, 1)
    files = labsite.site_files((only,), TREE)
    assert sorted(files) == ["departments/sales.yaml", "images.yaml", "site.yaml"]


@pytest.mark.parametrize("count", [0, 100, -1])
def test_pc_count_is_bounded(count: int) -> None:
    with pytest.raises(ValueError, match="1 to 99"):
        labsite.lab_pcs(PREFIX, count)


def test_the_generated_site_validates_and_names_the_lab_tree() -> None:
    site = _desired().site
    assert site.server.interface == "e0"
    assert str(site.server.address) == "192.168.100.1"
    assert site.boot.tftp_root == "/var/lib/kitting-lab/kt1a2b3c/server/srv/tftp"
    assert site.images_root == "/var/lib/kitting-lab/kt1a2b3c/server/home/partimag"
    assert site.nfs.backend is NfsBackend.ganesha
    assert [str(n) for n in site.firewall.production_networks] == ["198.18.0.0/15"]
    assert site.network.gateway is None
    pool = site.network.dhcp.pool
    assert pool is not None and (str(pool.start), str(pool.end)) == (
        "192.168.100.10",
        "192.168.100.50",
    )
    admin = site.network.admin_range
    assert admin is not None and str(admin.start) == "192.168.100.200"


def test_the_site_is_the_same_bytes_for_the_same_run() -> None:
    pcs = labsite.lab_pcs(PREFIX, 4)
    assert labsite.site_files(pcs, TREE) == labsite.site_files(pcs, TREE)


def test_exact_reservations_dnsmasq_will_read() -> None:
    layout = Settings(source="/x", paths=TREE.layout_paths()).layout()
    rendered = render.all(_desired(), layout)
    hosts = {
        path.rsplit("/", 1)[1]: [
            line for line in artifact.content.decode().splitlines() if not line.startswith("#")
        ]
        for path, artifact in rendered.artifacts.items()
        if path.startswith(HOSTS_DIR + "/")
    }
    assert hosts == {
        "sales-pc01.hosts": ["02:1a:2b:3c:11:00,192.168.100.101,sales-pc01"],
        "sales-pc02.hosts": ["02:1a:2b:3c:12:00,02:1a:2b:3c:12:01,192.168.100.102,sales-pc02"],
        "accounting-pc03.hosts": ["02:1a:2b:3c:13:00,accounting-pc03"],
        "accounting-pc04.hosts": ["02:1a:2b:3c:14:00,192.168.100.104,accounting-pc04"],
    }


def test_every_server_path_moves_under_the_tree() -> None:
    paths = TREE.layout_paths()
    assert paths == {
        "dnsmasq_conf": f"{ROOT}/etc/dnsmasq.d/kitting.conf",
        "dhcp_hosts_dir": f"{ROOT}/etc/kitting/dhcp-hosts",
        "exports_file": f"{ROOT}/etc/exports.d/kitting.exports",
        "nfs_conf_file": f"{ROOT}/etc/nfs.conf.d/kitting.conf",
        "ganesha_conf": f"{ROOT}/etc/ganesha/kitting.conf",
        "nft_file": f"{ROOT}/etc/nftables.d/kitting.nft",
        "sshd_dropin": f"{ROOT}/etc/ssh/sshd_config.d/00-kitting.conf",
        "state_dir": f"{ROOT}/var/lib/kitting",
        "dnsmasq_log": f"{ROOT}/var/log/kitting/dnsmasq.log",
        "dhcp_leases": f"{ROOT}/var/lib/misc/dnsmasq.leases",
    }
    assert Settings(source="/x", paths=paths).layout() == Layout(**paths)
    assert (str(TREE.tftp_root), str(TREE.private)) == (f"{ROOT}/srv/tftp", f"{ROOT}/run/lab")


def test_pool_bounds() -> None:
    assert labsite.in_pool(IPv4Address("192.168.100.10"))
    assert labsite.in_pool(IPv4Address("192.168.100.50"))
    assert not labsite.in_pool(IPv4Address("192.168.100.51"))
    assert not labsite.in_pool(IPv4Address("192.168.100.101"))
