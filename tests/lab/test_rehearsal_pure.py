"""The rehearsal's pure parts: reading boot menus, judging leases, the summary table and
JSON report, and the service manager's answers that need no program. No root needed.

Expected values are written out by hand.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path, PurePosixPath

import pytest

from reconciler import snapshot
from reconciler.cli import main
from reconciler.facts import ServiceState
from reconciler.lab import kitting_day, labsite, menus, pcsteps, rehearsal, workspace
from reconciler.lab.probes import DhcpLease
from reconciler.lab.procs import ProcessRegistry
from reconciler.lab.report import CheckResult, PcResult, Report, StepResult, table, to_json
from reconciler.lab.services import LabServices
from reconciler.layout import Layout
from reconciler.rendered import Service
from reconciler.services import ServiceError

GOLDEN = Path(__file__).parents[1] / "cases" / "render"
SERVER = IPv4Address("192.168.100.1")

# ---------------------------------------------------------------- menus


def test_the_default_pxelinux_menu_boots_the_local_disk() -> None:
    text = (GOLDEN / "basic" / "srv" / "tftp" / "pxelinux.cfg" / "default").read_text()
    verdict = menus.pxelinux(text)
    assert (verdict.kind, verdict.entry, verdict.ocs_live_run) == ("local", "local", None)


def test_the_default_grub_menu_boots_the_local_disk() -> None:
    text = (GOLDEN / "basic" / "srv" / "tftp" / "grub" / "grub.cfg").read_text()
    verdict = menus.grub(text)
    assert (verdict.kind, verdict.entry) == ("local", "local-disk")


JOB = (
    "ocs-sr -l en_US.UTF-8 -batch -g auto -e1 auto -e2 -r -j2 -p reboot --mcast-port 2232 "
    "multicast_restoredisk win11-sales-2025 nvme0n1"
)


def test_an_armed_pxelinux_menu_runs_the_clonezilla_job() -> None:
    path = GOLDEN / "armed/multicast-restore/srv/tftp/pxelinux.cfg/01-aa-bb-cc-00-01-02"
    verdict = menus.pxelinux(path.read_text())
    assert (verdict.kind, verdict.entry, verdict.kernel) == (
        "job",
        "kitting-job",
        "clonezilla/vmlinuz",
    )
    assert verdict.ocs_live_run == JOB
    assert menus.ocs_words(verdict)[-3:] == ["multicast_restoredisk", "win11-sales-2025", "nvme0n1"]


def test_an_armed_grub_menu_runs_the_same_job() -> None:
    path = GOLDEN / "armed/multicast-restore/srv/tftp/grub/grub.cfg-01-aa-bb-cc-00-01-02"
    verdict = menus.grub(path.read_text())
    assert (verdict.kind, verdict.entry, verdict.kernel) == (
        "job",
        "kitting-job",
        "/clonezilla/vmlinuz",
    )
    assert verdict.ocs_live_run == JOB


def test_menus_without_their_default_entry_are_unknown() -> None:
    assert menus.pxelinux("DEFAULT gone\nLABEL local\n  LOCALBOOT 0\n").kind == "unknown"
    assert menus.grub('set default=x\nmenuentry "y" --id y {\n  exit\n}\n').kind == "unknown"
    assert menus.pxelinux("").entry == ""


def test_grub_reads_the_quoted_form_of_the_job() -> None:
    text = (
        "set default=j\n"
        'menuentry "j" --id j {\n'
        '  linux /vmlinuz boot=live "ocs_live_run=ocs-sr -batch restoredisk img sda" x=1\n'
        "}\n"
    )
    assert menus.grub(text).ocs_live_run == "ocs-sr -batch restoredisk img sda"


# ---------------------------------------------------------------- leases and listings


def _lease(address: str, boot: str | None, hostname: str | None) -> DhcpLease:
    return DhcpLease(
        interface="e0",
        address=IPv4Interface(address),
        server_id=SERVER,
        next_server=SERVER if boot else None,
        boot_file=boot,
        router=None,
        lease_seconds=3600,
        hostname=hostname,
    )


PCS = labsite.lab_pcs("kt1a2b3c-", 4)


def test_a_lease_as_the_site_says_has_no_problem() -> None:
    assert (
        pcsteps.lease_problems(
            PCS[0], _lease("192.168.100.101/24", "pxelinux.0", "sales-pc01"), SERVER
        )
        == []
    )
    assert pcsteps.lease_problems(PCS[2], _lease("192.168.100.37/24", "pxelinux.0", "accounting-pc03"), SERVER) == []  # fmt: skip
    stray = labsite.stray_pc("kt1a2b3c-")
    assert pcsteps.lease_problems(stray, _lease("192.168.100.10/24", None, None), SERVER) == []


def test_lease_problems_name_each_difference() -> None:
    wrong = _lease("192.168.100.12/24", "shimx64.efi", "other")
    assert pcsteps.lease_problems(PCS[0], wrong, SERVER) == [
        "address 192.168.100.12, expected its reservation 192.168.100.101",
        "boot file shimx64.efi, expected pxelinux.0",
        "host name 'other', expected 'sales-pc01'",
    ]
    stray = labsite.stray_pc("kt1a2b3c-")
    assert pcsteps.lease_problems(stray, _lease("192.168.100.60/24", "shimx64.efi", None), SERVER) == [
        "address 192.168.100.60 is not from the pool 192.168.100.10-192.168.100.50",
        "boot file shimx64.efi, expected no boot file",
    ]  # fmt: skip


def test_menu_paths_follow_each_loader() -> None:
    assert pcsteps.menu_paths(PCS[0]) == ((), "pxelinux.cfg/01-02-1a-2b-3c-11-00")
    assert pcsteps.menu_paths(PCS[1]) == (
        ("grub/grub.cfg",),
        "grub/grub.cfg-01-02-1a-2b-3c-12-00",
    )
    assert [pcsteps.default_menu(pc) for pc in PCS[:2]] == ["pxelinux.cfg/default", "grub/grub.cfg"]


def test_nfs_ls_lines_give_regular_files_and_sizes() -> None:
    text = (
        "drwxr-xr-x  2     0     0         4096 .\n"
        "-rw-r--r--  1     0     0            4 disk\n"
        "-rw-r--r--  1     0     0        65542 sda1.vfat-ptcl-img.gz.aa\n"
        "lrwxrwxrwx  1     0     0            4 link\n"
    )
    assert pcsteps.parse_nfs_ls(text) == {"disk": 4, "sda1.vfat-ptcl-img.gz.aa": 65542}


def test_loop_devices_backed_by_the_run_are_found() -> None:
    listing = json.dumps(
        {
            "loopdevices": [
                {"name": "/dev/loop0", "back-file": "/var/lib/kitting-lab/kt1a2b3c/disks/pc1.img"},
                {"name": "/dev/loop1", "back-file": "/var/lib/kitting-lab/kt1a2b3c2/x.img"},
                {"name": "/dev/loop2", "back-file": "/var/lib/kitting-lab/kt1a2b3c/y (deleted)"},
                {"name": "/dev/loop3", "back-file": None},
            ]
        }
    )
    run = Path("/var/lib/kitting-lab/kt1a2b3c")
    assert workspace.loops_under(listing, run) == ["/dev/loop0", "/dev/loop2"]
    assert workspace.loops_under("", run) == []
    assert workspace.loops_under("not json", run) == []


def test_the_stand_in_image_is_the_same_every_time() -> None:
    first, second = workspace.stand_in_image(), workspace.stand_in_image()
    assert first == second
    assert (first["disk"], first["parts"]) == (b"sda\n", b"sda1 sda2\n")
    assert sorted(first) == [
        "Info-img-id.txt",
        "clonezilla-img",
        "disk",
        "parts",
        "sda-pt.sf",
        "sda1.vfat-ptcl-img.gz.aa",
        "sda2.ntfs-ptcl-img.gz.aa",
    ]


# ---------------------------------------------------------------- report


def _pc(name: str, host: str, firmware: str, address: str, steps: tuple[StepResult, ...], *, in_site: bool = True, client: str = "") -> PcResult:  # fmt: skip
    return PcResult(
        name=name,
        hostname=host,
        firmware=firmware,
        macs=("02:00:00:00:00:01",),
        in_site=in_site,
        expected_address=address,
        address=address,
        boot_file="pxelinux.0" if in_site else "",
        steps=steps,
        client=client,
    )


ROWS = (
    _pc("pc1", "sales-pc01", "bios", "192.168.100.101",
        (StepResult("dhcp", True, "", 3.1), StepResult("boot-file", True, "", 0.024, 42430)),
        client="ocs-sr"),
    _pc("pc2", "sales-pc02", "uefi", "192.168.100.102",
        (StepResult("dhcp", True, "", 0.5), StepResult("nfs", False, "refused", 1.0)),
        client="lab"),
    _pc("stray", "stray", "uefi", "192.168.100.26", (StepResult("dhcp", True, "", 3.9),),
        in_site=False),
)  # fmt: skip


def test_summary_table_columns_and_alignment() -> None:
    assert table(ROWS) == (
        "PC     HOSTNAME    FIRMWARE  ADDRESS          CLIENT  RESULT       SECONDS  BYTES\n"
        "pc1    sales-pc01  bios      192.168.100.101  ocs-sr  ok              3.12  42430\n"
        "pc2    sales-pc02  uefi      192.168.100.102  lab     failed: nfs     1.50      0\n"
        "stray  (stray)     uefi      192.168.100.26   -       ok              3.90      0\n"
    )


def test_report_is_ok_only_when_everything_held() -> None:
    good = (ROWS[0],)
    checks = (CheckResult("firewall-live", True, "live"),)
    assert Report("kt1a2b3c-", "/r", good, checks).ok
    assert not Report("kt1a2b3c-", "/r", ROWS, checks).ok
    assert not Report("kt1a2b3c-", "/r", good, (CheckResult("x", False, "no"),)).ok
    assert not Report("kt1a2b3c-", "/r", good, checks, error="boom").ok
    assert not Report("kt1a2b3c-", "/r", (), checks).ok
    not_run = _pc("pc9", "x", "bios", "pool", ())
    assert (not_run.ok, not_run.result) == (False, "not run")


def test_json_report_carries_each_pc_and_step() -> None:
    body = json.loads(to_json(Report("kt1a2b3c-", "/r", ROWS, (), commit="abc", seconds=1.23456)))
    assert (body["ok"], body["prefix"], body["commit"], body["seconds"]) == (
        False,
        "kt1a2b3c-",
        "abc",
        1.235,
    )
    pc2 = body["pcs"][1]
    assert (pc2["result"], pc2["bytes"], pc2["seconds"]) == ("failed: nfs", 0, 1.5)
    assert [pc["client"] for pc in body["pcs"]] == ["ocs-sr", "lab", ""]
    assert pc2["steps"][1] == {
        "name": "nfs",
        "ok": False,
        "detail": "refused",
        "seconds": 1.0,
        "bytes": 0,
    }


def test_pc_checks_from_the_steps() -> None:
    tftp, unknown = rehearsal.pc_checks((ROWS[0], ROWS[2]))
    assert (tftp.name, tftp.ok) == ("tftp-through-firewall", True)
    assert tftp.detail == (
        "declared PCs: 1; boot files fetched: 1 (42430 bytes), with the firewall live"
    )
    # pc2 never got to fetch its boot file
    assert not rehearsal.pc_checks(ROWS)[0].ok
    assert (unknown.name, unknown.ok) == ("unknown-pc-no-boot-file", True)
    assert unknown.detail == "stray: 192.168.100.26, boot file none"
    given = _pc("stray", "stray", "uefi", "192.168.100.26", (StepResult("dhcp", True, "", 1),), in_site=False)  # fmt: skip
    offered = PcResult(**{**given.__dict__, "boot_file": "shimx64.efi"})
    assert not rehearsal.pc_checks((ROWS[0], offered))[1].ok


# ---------------------------------------------------------------- imaging choices


def test_the_client_each_pc_runs() -> None:
    pc1, pc2 = labsite.lab_pcs("kt1a2b3c-", 2)
    stray = labsite.stray_pc("kt1a2b3c-")
    ocs = frozenset({"sales-pc01"})
    assert [rehearsal.client_of(pc, armed=True, ocs_pcs=ocs) for pc in (pc1, pc2, stray)] == [
        "ocs-sr",
        "lab",
        "",
    ]
    assert rehearsal.client_of(pc1, armed=False, ocs_pcs=ocs) == ""


def test_a_slow_client_makes_the_sender_wait_longer_and_the_site_still_validates() -> None:
    now = datetime(2026, 12, 3, 15, 40, 12, tzinfo=UTC)
    quick = kitting_day.batch_window(now, "loop0")
    slow = kitting_day.batch_window(now, "loop0", slow_client=True)
    assert (quick.max_wait, quick.start_timeout) == ("20s", "60s")
    assert (slow.max_wait, slow.start_timeout, slow.start) == (
        "60s",
        "120s",
        "2026-12-03T15:39:12+00:00",
    )
    tree = labsite.ServerTree(PurePosixPath("/var/lib/kitting-lab/kt000001/server"))
    files = labsite.site_files(labsite.lab_pcs("kt0a0b0c-", 2), tree, slow)
    batch = files["batches/lab-imaging.yaml"].decode()
    assert 'max_wait: "60s"' in batch and 'start_timeout: "120s"' in batch
    validation = snapshot.validate_files("kitting-lab", files)
    assert validation.desired is not None, [p.text() for p in validation.problems]


def test_clonezilla_own_client_needs_an_image_saved_from_a_loop_device() -> None:
    with pytest.raises(rehearsal.RehearsalError, match=r"'sda'.*--no-ocs-sr"):
        rehearsal.wait_for_loop("sda", lambda line: None)


def test_an_image_and_no_image_at_once_is_refused_before_anything_is_built() -> None:
    with pytest.raises(ValueError, match="choose one"):
        rehearsal.run(rehearsal.Options(image=Path("/nonexistent"), stand_in=True))
    with pytest.raises(SystemExit):
        main(["lab", "run", "--image", "/nonexistent", "--no-image"])


def test_the_restored_disks_go_and_the_logs_stay(tmp_path: Path) -> None:
    run = workspace.RunDir(tmp_path / "kt1a2b3c", "kt1a2b3c-")
    disk = run.logs / "pc1" / "012-disk-pc1-x" / "disk.img"
    disk.parent.mkdir(parents=True)
    disk.write_bytes(b"\0" * 512)
    log = run.logs / "pc1" / "012-disk-pc1-x" / "disk.img.sfdisk"
    log.write_text("label: gpt\n")
    elsewhere = tmp_path / "disk.img"
    elsewhere.write_bytes(b"keep")
    (run.logs / "pc2").mkdir()
    (run.logs / "pc2" / "disk.img").symlink_to(elsewhere)
    assert workspace.remove_disks(run) == [disk]
    assert not disk.exists() and log.exists() and elsewhere.read_bytes() == b"keep"


# ---------------------------------------------------------------- LabServices


def _services(tmp_path: Path) -> LabServices:
    layout = Layout(ganesha_conf="/lab/etc/ganesha/kitting.conf", sshd_dropin="/lab/etc/ssh/sshd_config.d/00-kitting.conf")  # fmt: skip
    return LabServices(
        ProcessRegistry(tmp_path / "logs"), "kt1a2b3c-srv", layout, tmp_path / "private"
    )


def test_lab_services_say_what_they_cannot_do(tmp_path: Path) -> None:
    services = _services(tmp_path)
    assert services.state(Service.dnsmasq) is ServiceState.inactive
    assert services.state(Service.nfs_kernel) is ServiceState.not_found
    with pytest.raises(ServiceError, match="no kernel NFS server"):
        services.reload(Service.nfs_kernel)
    with pytest.raises(ServiceError, match="not running in the lab"):
        services.reload(Service.dnsmasq)
    assert services.calls == [("reload", "nfs-kernel-server"), ("reload", "dnsmasq")]
    assert services.pid(Service.dnsmasq) is None


def test_lab_main_files_include_the_reconcilers(tmp_path: Path) -> None:
    services = _services(tmp_path)
    assert services.ganesha_main() == (
        "# The lab's main nfs-ganesha file; the export is the reconciler's.\n"
        "NFSv4 {\n"
        f'    RecoveryRoot = "{tmp_path}/private/ganesha-recovery";\n'
        "    Graceless = true;\n"
        "}\n"
        '%include "/lab/etc/ganesha/kitting.conf"\n'
    )
    assert services.sshd_main() == (
        "# The lab's main sshd file; the hardening is the reconciler's drop-in.\n"
        "Include /lab/etc/ssh/sshd_config.d/*.conf\n"
        f"HostKey {tmp_path}/private/ssh_host_ed25519_key\n"
        "PidFile none\n"
    )
