"""Render: values worked out by hand, effects, origins, determinism, refusals."""

from __future__ import annotations

import re
import shlex
from dataclasses import replace
from ipaddress import IPv4Address

import pytest

from reconciler import render
from reconciler.deployment_session import PartitionStream, multicast_runs
from reconciler.desired import Action, Desired, Mode
from reconciler.layout import Layout
from reconciler.render import pxe
from reconciler.render._lines import Lines
from reconciler.rendered import Artifact, Check, Effect, Service

from . import render_cases as rc

LAYOUT = Layout()
SERVER = IPv4Address("192.168.100.1")


def _text(artifact: Artifact) -> list[str]:
    return artifact.content.decode().splitlines()


def _line_with(artifact: Artifact, prefix: str) -> tuple[int, str]:
    """(1-based number, text) of the only line starting with prefix."""
    found = [(n, t) for n, t in enumerate(_text(artifact), 1) if t.startswith(prefix)]
    assert len(found) == 1, found
    return found[0]


def _basic() -> Desired:
    return rc.cases()["basic"]


# ------------------------------------------------------------------ dnsmasq


def test_pc_with_two_macs_and_no_fixed_address_gets_one_line_per_mac() -> None:
    hosts = render.all(_basic()).artifacts["/etc/kitting/dhcp-hosts/sales-pc01.hosts"]
    assert _text(hosts) == [
        "# managed by kitctl; edits are reverted",
        "aa:bb:cc:00:01:01,sales-pc01",
        "aa:bb:cc:00:01:02,sales-pc01",
    ]
    assert hosts.origins == (
        "",
        "departments.sales.pcs[0].macs[0]",
        "departments.sales.pcs[0].macs[1]",
    )


def test_fixed_address_with_two_macs_is_one_line_listing_both() -> None:
    rendered = render.all(rc.cases()["ganesha"])
    hosts = rendered.artifacts["/etc/kitting/dhcp-hosts/field-lt01.hosts"]
    assert _text(hosts)[1:] == ["02:11:22:33:44:01,02:11:22:33:44:02,192.168.100.30,field-lt01"]
    assert hosts.origin_of_line(2) == "departments.field.pcs[0]"


def test_proxy_mode_leaves_out_fixed_addresses_and_says_so() -> None:
    rendered = render.all(rc.cases()["proxy"])
    hosts = rendered.artifacts["/etc/kitting/dhcp-hosts/sales-pc02.hosts"]
    assert _text(hosts)[1:] == ["aa:bb:cc:00:02:01,sales-pc02"]
    assert any("fixed addresses (pcs[].ip) are not applied" in n for n in rendered.notes)


def test_adding_a_pc_needs_no_signal_but_edits_and_removals_do() -> None:
    for path, artifact in render.all(_basic()).artifacts.items():
        if path.startswith(LAYOUT.dhcp_hosts_dir + "/"):
            assert (artifact.on_add, artifact.on_change, artifact.on_remove) == (
                Effect.none,
                Effect.reload,
                Effect.reload,
            )
            assert artifact.service is Service.dnsmasq


def test_main_dropin_needs_a_restart_and_the_real_check() -> None:
    main = render.all(_basic()).artifacts[LAYOUT.dnsmasq_conf]
    assert (main.on_add, main.on_change, main.on_remove) == (Effect.restart,) * 3
    assert main.check is Check.dnsmasq
    assert main.mode == 0o644


def test_boot_files_by_architecture_and_only_for_known_pcs() -> None:
    main = render.all(_basic()).artifacts[LAYOUT.dnsmasq_conf]
    boots = [t for t in _text(main) if t.startswith("dhcp-boot=")]
    assert boots == [
        "dhcp-boot=tag:known,tag:kitting-bios,pxelinux.0",
        "dhcp-boot=tag:known,tag:kitting-efi64,shimx64.efi",
    ]
    matches = [t for t in _text(main) if t.startswith("dhcp-match=")]
    assert matches == [
        "dhcp-match=set:kitting-bios,option:client-arch,0",
        "dhcp-match=set:kitting-efi64,option:client-arch,7",
        "dhcp-match=set:kitting-efi64,option:client-arch,9",
    ]


def test_secure_boot_off_hands_uefi_clients_grub_directly() -> None:
    main = render.all(rc.cases()["no-secure-boot"]).artifacts[LAYOUT.dnsmasq_conf]
    number, text = _line_with(main, "dhcp-boot=tag:known,tag:kitting-efi64,")
    assert text.endswith(",grubx64.efi")
    assert main.origin_of_line(number) == "site.boot.uefi_loader"


def test_pool_lease_time_and_limits_with_their_origins() -> None:
    main = render.all(_basic()).artifacts[LAYOUT.dnsmasq_conf]
    number, text = _line_with(main, "dhcp-range=")
    assert text == "dhcp-range=192.168.100.10,192.168.100.100,255.255.255.0,43200"
    assert main.origin_of_line(number) == "site.network.dhcp.pool"
    number, text = _line_with(main, "dhcp-lease-max=")
    assert (text, main.origin_of_line(number)) == (
        "dhcp-lease-max=1000",
        "site.network.dhcp.max_leases",
    )
    assert _line_with(main, "tftp-max=")[1] == "tftp-max=1000"
    assert _line_with(main, "port=")[1] == "port=0"


def test_no_gateway_and_no_dns_are_sent_as_empty_options() -> None:
    desired = rc.cases()["basic"]
    net = desired.site.network.model_copy(update={"gateway": None, "dns": []})
    site = desired.site.model_copy(update={"network": net})
    main = render.all(replace(desired, site=site)).artifacts[LAYOUT.dnsmasq_conf]
    assert "dhcp-option=option:router" in _text(main)
    assert "dhcp-option=option:dns-server" in _text(main)


def test_dnsmasq_is_bound_to_the_kitting_interface_only() -> None:
    main = render.all(_basic()).artifacts[LAYOUT.dnsmasq_conf]
    lines = _text(main)
    assert "interface=enp3s0" in lines
    assert "enable-tftp=enp3s0" in lines
    assert "bind-dynamic" in lines
    assert not any(t.startswith(("except-interface", "listen-address")) for t in lines)


# ------------------------------------------------------------------ nftables


def test_firewall_opens_the_site_and_batch_multicast_ranges_merged() -> None:
    nft = render.all(rc.cases()["ganesha"]).artifacts[LAYOUT.nft_file]
    ranges = re.findall(r"udp dport (\d+-\d+) accept", nft.content.decode())
    # 16 partitions of 2 ports from each base: site 2232 (2232-2263) and batch 'autumn' 2260
    # (2260-2291) overlap and merge; 'spring' 3000 (3000-3031) does not.
    assert ranges == ["2232-2291", "3000-3031"]


def test_firewall_opens_exactly_the_ports_of_the_largest_session_validation_allows() -> None:
    # Validation keeps overlapping sessions 32 ports apart, and a session serves at most 16
    # partitions; the 16th partition sends on base + 30 and base + 31 (udpcast's two ports).
    nft = render.all(_basic()).artifacts[LAYOUT.nft_file].content.decode()
    assert re.findall(r"udp dport (\d+-\d+) accept", nft) == ["2232-2263"]
    sixteen = [PartitionStream(f"sda{i}", (f"/x/sda{i}.aa",)) for i in range(1, 17)]
    runs = multicast_runs(
        sixteen,
        interface="enp3s0",
        portbase=2232,
        data_group=IPv4Address("239.192.0.1"),
        ttl=1,
        min_receivers=1,
        max_wait=60,
        start_timeout=None,
        max_bitrate=None,
    )
    assert (runs[0].portbase, runs[-1].portbase + 1) == (2232, 2263)
    with pytest.raises(ValueError, match="at most 16 partitions"):
        multicast_runs(
            [*sixteen, PartitionStream("sda17", ("/x/sda17.aa",))],
            interface="enp3s0",
            portbase=2232,
            data_group=IPv4Address("239.192.0.1"),
            ttl=1,
            min_receivers=1,
            max_wait=60,
            start_timeout=None,
            max_bitrate=None,
        )


def test_ssh_defaults_to_the_admin_range_and_explicit_sources_replace_it() -> None:
    basic = render.all(_basic()).artifacts[LAYOUT.nft_file].content.decode()
    assert "ip saddr 192.168.100.200-192.168.100.250 tcp dport 22 accept" in basic
    explicit = render.all(rc.cases()["ganesha"]).artifacts[LAYOUT.nft_file].content.decode()
    assert (
        "ip saddr { 10.9.8.0/24, 192.168.100.200-192.168.100.215 } tcp dport 22 accept" in explicit
    )


def test_no_ssh_source_closes_ssh_and_no_production_network_means_no_forward_chain() -> None:
    rendered = render.all(rc.cases()["ssh-off"])
    nft = rendered.artifacts[LAYOUT.nft_file].content.decode()
    assert "dport 22 " not in nft
    assert "chain forward" not in nft
    assert any(n.startswith("SSH is closed") for n in rendered.notes)


def test_production_networks_are_merged_and_dropped_from_interface_and_subnet() -> None:
    nft = render.all(rc.cases()["ganesha"]).artifacts[LAYOUT.nft_file].content.decode()
    # 10.20.0.0/16 lies inside 10.0.0.0/8: one element is enough.
    assert '\t\tiifname "eth1.100" ip daddr 10.0.0.0/8 drop\n' in nft
    assert "\t\tip saddr 192.168.100.0/24 ip daddr 10.0.0.0/8 drop\n" in nft


def test_the_file_replaces_only_its_own_table() -> None:
    nft = render.all(_basic()).artifacts[LAYOUT.nft_file].content.decode()
    statements = [t for t in nft.splitlines() if t and not t[0].isspace() and t[0] not in "#}"]
    assert statements == [
        "table inet kitting",
        "delete table inet kitting",
        "table inet kitting {",
    ]


# ------------------------------------------------------------------ NFS, sshd


def test_kernel_export_is_read_only_to_the_subnet_and_never_to_everyone() -> None:
    exports = render.all(_basic()).artifacts[LAYOUT.exports_file]
    rules = [t for t in _text(exports) if not t.startswith("#")]
    assert rules == [
        "/home/partimag 192.168.100.0/24(ro,root_squash,sync,no_subtree_check,secure,sec=sys)"
    ]
    assert "*" not in exports.content.decode()


def test_mountd_is_pinned_and_needs_a_restart() -> None:
    conf = render.all(_basic()).artifacts[LAYOUT.nfs_conf_file]
    assert _text(conf)[-2:] == ["[mountd]", "port=20048"]
    assert conf.on_change is Effect.restart


def test_ganesha_grants_nothing_outside_the_client_block() -> None:
    rendered = render.all(rc.cases()["ganesha"])
    assert LAYOUT.exports_file not in rendered.artifacts
    text = rendered.artifacts[LAYOUT.ganesha_conf].content.decode()
    export = text[text.index("EXPORT {") :]
    client = export[export.index("CLIENT {") :]
    assert "Access_Type = None;" in export[: export.index("CLIENT {")]
    assert "Clients = 192.168.100.0/24;" in client
    assert "Access_Type = RO;" in client
    assert "MNT_Port = 20050;" in text


def test_sshd_dropin_only_when_hardening() -> None:
    basic = render.all(_basic()).artifacts[LAYOUT.sshd_dropin]
    assert _text(basic)[2:] == [
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin no",
        "PubkeyAuthentication yes",
        "AuthenticationMethods publickey",
    ]
    assert LAYOUT.sshd_dropin not in render.all(rc.cases()["ssh-off"]).artifacts


# ------------------------------------------------------------------ PXE


def test_default_menus_boot_the_local_disk() -> None:
    rendered = render.all(_basic())
    pxelinux = _text(rendered.artifacts["/srv/tftp/pxelinux.cfg/default"])
    assert "DEFAULT local" in pxelinux
    assert "  LOCALBOOT 0" in pxelinux
    grub = _text(rendered.artifacts["/srv/tftp/grub/grub.cfg"])
    assert "set default=local-disk" in grub
    assert not any(t.lstrip().startswith("linux") for t in grub)


def test_no_pc_is_armed_by_render_all() -> None:
    paths = render.all(_basic()).artifacts
    assert not [p for p in paths if "01-" in p.rsplit("/", 1)[-1]]


def _armed(name: str) -> tuple[Artifact, Artifact]:
    hostname, mac, job = rc.armed_jobs()[name]
    desired = rc.cases()[rc.ARMED_SITE]
    pc = next(r.pc for r in desired.pcs() if r.pc.hostname == hostname)
    return pxe.armed(pc, job, desired.site, mac=mac, origin="batches.spring")


def _kernel_params(line: str) -> list[str]:
    # Both loaders group a double-quoted value with its name; shlex does the same.
    return shlex.split(line)


@pytest.mark.parametrize("name", sorted(rc.armed_jobs()))
def test_bios_and_uefi_carry_the_same_instruction(name: str) -> None:
    pxelinux, grub = _armed(name)
    append = _line_with(pxelinux, "  APPEND ")[1].removeprefix("  APPEND ")
    linux = _line_with(grub, "  linux ")[1].removeprefix("  linux ").split(" ", 1)
    assert linux[0] == "/clonezilla/vmlinuz"
    assert _kernel_params(append) == _kernel_params(linux[1])


def test_multicast_restore_runs_unattended_with_the_report_target() -> None:
    pxelinux, _ = _armed("multicast-restore")
    params = _kernel_params(_line_with(pxelinux, "  APPEND ")[1].removeprefix("  APPEND "))
    assert "ocs_server=192.168.100.1" in params
    assert "ocs_live_batch=yes" in params
    assert "fetch=tftp://192.168.100.1/clonezilla/filesystem.squashfs" in params
    assert "ocs_prerun=mount -t nfs 192.168.100.1:/home/partimag /home/partimag" in params
    assert (
        "ocs_live_run=ocs-sr -l en_US.UTF-8 -batch -g auto -e1 auto -e2 -r -j2 -p reboot "
        "--mcast-port 2232 multicast_restoredisk win11-sales-2025 nvme0n1"
    ) in params


def test_capture_saves_with_checksums_and_unicast_restore_keeps_extra_options() -> None:
    capture = _armed("capture")[0].content.decode()
    assert (
        'ocs_live_run="ocs-sr -l en_US.UTF-8 -batch -q2 -j2 -z9p -sfsck -senc -noabo -gb '
        '-p reboot savedisk win11-sales-2026 nvme0n1"'
    ) in capture
    unicast = _armed("unicast-restore")[1].content.decode()
    assert "-j2 -k1 -icds -p poweroff restoredisk win11-sales-2025 sda" in unicast


def test_armed_file_names_are_lower_case_with_dashes() -> None:
    pxelinux, grub = _armed("multicast-restore")
    assert pxelinux.path == "/srv/tftp/pxelinux.cfg/01-aa-bb-cc-00-01-02"
    assert grub.path == "/srv/tftp/grub/grub.cfg-01-aa-bb-cc-00-01-02"
    assert pxelinux.on_add is Effect.none and pxelinux.service is None


def test_arming_refuses_a_mac_of_another_pc() -> None:
    desired = _basic()
    pc = desired.pcs()[0].pc
    job = pxe.BootJob(Action.restore, Mode.unicast, "img", "sda", SERVER)
    with pytest.raises(ValueError, match="not a MAC address of"):
        pxe.armed(pc, job, desired.site, mac="02:00:00:00:00:01")


def test_loader_in_a_subdirectory_gets_menus_there_and_root_relative_kernel_paths() -> None:
    desired = rc.cases()["no-secure-boot"]
    pc = next(r.pc for r in desired.pcs() if r.pc.hostname == "acct-pc01")
    job = pxe.BootJob(Action.restore, Mode.unicast, "img", "sda", SERVER)
    pxelinux, _ = pxe.armed(pc, job, desired.site, mac="aa:bb:cc:00:03:01")
    assert pxelinux.path == "/srv/tftp/bios/pxelinux.cfg/01-aa-bb-cc-00-03-01"
    assert "  KERNEL ::clonezilla/vmlinuz" in _text(pxelinux)


def test_a_grub_dir_other_than_debians_prefix_is_noted() -> None:
    desired = _basic()
    boot = desired.site.boot.model_copy(update={"grub_dir": "efi/grub"})
    site = desired.site.model_copy(update={"boot": boot})
    rendered = render.all(replace(desired, site=site))
    assert "/srv/tftp/efi/grub/grub.cfg" in rendered.artifacts
    assert any("grubnetx64.efi.signed" in n for n in rendered.notes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"action": Action.capture, "mode": Mode.multicast}, "unicast only"),
        ({"mcast_port": 2233}, "must be even"),
        ({"mcast_port": 80}, "must be even and within"),
        ({"image": "../etc"}, "not a valid image name"),
        ({"disk": "sda1"}, "not a whole-disk device"),
        ({"extra_options": ("-p", "true")}, "set by the job itself"),
        ({"extra_options": ("-b",)}, "set by the job itself"),
        ({"extra_options": ('x" init=/bin/sh "',)}, "not a plain token"),
        ({"extra_options": ("$(reboot)",)}, "not a plain token"),
        ({"extra_options": ("a;b",)}, "not a plain token"),
        ({"extra_options": ("",)}, "not a plain token"),
    ],
)
def test_boot_job_refuses_what_would_break_the_kernel_line(
    changes: dict[str, object], message: str
) -> None:
    fields: dict[str, object] = {
        "action": Action.restore,
        "mode": Mode.unicast,
        "image": "img",
        "disk": "sda",
        "server": SERVER,
    }
    fields.update(changes)
    with pytest.raises(ValueError, match=message):
        pxe.BootJob(**fields)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the whole stage


def test_rendering_twice_is_byte_identical() -> None:
    for desired in rc.cases().values():
        first, second = render.all(desired), render.all(desired)
        assert first == second
        assert list(first.artifacts) == sorted(first.artifacts)


def test_order_of_departments_and_batches_does_not_matter() -> None:
    desired = rc.cases()["ganesha"]
    shuffled = replace(
        desired,
        departments=dict(reversed(list(desired.departments.items()))),
        batches=dict(reversed(list(desired.batches.items()))),
    )
    assert list(shuffled.departments) != list(desired.departments)
    assert render.all(shuffled) == render.all(desired)


def test_every_artifact_names_an_origin_per_line_and_is_plain_ascii() -> None:
    for desired in rc.cases().values():
        for artifact in render.all(desired).artifacts.values():
            assert len(artifact.origins) == len(_text(artifact))
            assert artifact.content.endswith(b"\n")
            assert _text(artifact)[0] == "# managed by kitctl; edits are reverted"
            assert artifact.mode == 0o644


def test_a_line_with_a_control_character_is_refused() -> None:
    lines = Lines()
    for bad in ("a\nb", "a\rb", "a\x00b", "a\x1bb", "caf\u00e9"):
        with pytest.raises(ValueError, match="control character"):
            lines.add(bad)
