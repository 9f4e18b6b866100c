"""`kitctl lab run` end to end: the real controller configures dnsmasq, nfs-ganesha, sshd
and the firewall inside a lab server namespace, and simulated PCs boot against them.

The expected facts are worked out by hand from the lab's plan (reconciler/lab/labsite.py):
with 4 PCs, pc1 and pc3 are BIOS (pxelinux.0), pc2 and pc4 UEFI (shimx64.efi); pc1, pc2
and pc4 have the reservations .101, .102 and .104, pc3 takes a pool address (.10-.50);
pc2 has a second NIC; `stray` is not in the site repo. The way to production is the
server (192.168.100.1), then the router (198.19.0.254). The default run images: the lab's
Clonezilla image (saved by ocs-sr, cached; here in the tests' cache), pc1 with Clonezilla's
own ocs-sr, the others with the lab's client. A failure in the middle and a kept lab
brought down by `kitctl lab down` must leave no namespace, program, loop device or file
behind.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli import main
from reconciler.lab import netns, ocs_client, pcsteps, rehearsal, workspace
from tests.fixtures import clonezilla

pytestmark = [pytest.mark.integration, pytest.mark.netns]

RequirePrograms = Callable[..., None]
PROGRAMS = (
    "ip", "dnsmasq", "nft", "busybox", "tftp", "nfs-ls", "nfs-cp", "rpcbind", "rpcinfo",
    "ganesha.nfsd", "sshd", "ssh-keygen", "ssh-keyscan", "unshare", "git",
)  # fmt: skip
IMAGING_PROGRAMS = (
    "udp-sender", "udp-receiver", "partclone.vfat", "partclone.ntfs", "gzip", "sfdisk",
    "nfs-cat", "mtype", "ntfscat", "ocs-sr", "parted", "losetup",
    *clonezilla.PROGRAMS,
)  # fmt: skip
BOOT_FILES = {
    "pxelinux.0": Path("/usr/lib/PXELINUX/pxelinux.0"),
    "ldlinux.c32": Path("/usr/lib/syslinux/modules/bios/ldlinux.c32"),
    "shimx64.efi": Path("/usr/lib/shim/shimx64.efi.signed"),
    "grubx64.efi": Path("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"),
}


@pytest.fixture
def base(readable_dir: Path, require_programs: RequirePrograms) -> Path:
    """A lab base of this test's own. Not under pytest's tmp_path: the lab's dnsmasq reads
    the TFTP root as an unprivileged user, and tmp_path's parents are private to root."""
    require_programs(*PROGRAMS)
    return readable_dir


def _lab_processes(marker: str) -> list[str]:
    """Command lines of live processes that mention `marker` (a run directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


def _namespaces(prefix: str) -> list[str]:
    return [ns for ns in netns.list_namespaces() if ns.startswith(prefix)]


def _mac(prefix: str, node: int, nic: int = 0) -> str:
    token = prefix[2:8]
    return f"02:{token[0:2]}:{token[2:4]}:{token[4:6]}:{node:02x}:{nic:02x}"


def _steps(pc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["name"]: step for step in pc["steps"]}


@pytest.mark.slow
def test_four_pcs_boot_against_the_reconciled_lab_server(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_path = tmp_path / "report.json"
    argv = ["lab", "run", "--pcs", "4", "--no-image", "--base", str(base)]
    code = main([*argv, "--report", str(report_path)])
    out, err = capsys.readouterr()
    report = json.loads(report_path.read_text())
    assert code == 0, out
    assert report["ok"] is True and report["error"] == ""
    prefix = report["prefix"]
    # the terminal gets progress and the summary; every log line goes to the run's file
    assert " INFO " not in err
    log = (Path(report["run_dir"]) / "logs" / "kitctl.log").read_text()
    assert "applied: +4 reservations" in log and "started dnsmasq" in log

    pcs = {pc["name"]: pc for pc in report["pcs"]}
    assert sorted(pcs) == ["pc1", "pc2", "pc3", "pc4", "stray"]
    facts = {
        name: (pc["hostname"], pc["firmware"], pc["macs"], pc["boot_file"], pc["result"])
        for name, pc in pcs.items()
    }
    assert facts == {
        "pc1": ("sales-pc01", "bios", [_mac(prefix, 0x11)], "pxelinux.0", "ok"),
        "pc2": ("sales-pc02", "uefi", [_mac(prefix, 0x12), _mac(prefix, 0x12, 1)], "shimx64.efi", "ok"),
        "pc3": ("accounting-pc03", "bios", [_mac(prefix, 0x13)], "pxelinux.0", "ok"),
        "pc4": ("accounting-pc04", "uefi", [_mac(prefix, 0x14)], "shimx64.efi", "ok"),
        "stray": ("stray", "uefi", [_mac(prefix, 0x04)], "", "ok"),
    }  # fmt: skip
    assert [pcs[n]["address"] for n in ("pc1", "pc2", "pc4")] == [
        "192.168.100.101",
        "192.168.100.102",
        "192.168.100.104",
    ]
    for name in ("pc3", "stray"):  # from the pool .10-.50
        assert pcs[name]["expected_address"] == "pool"
        assert 10 <= int(pcs[name]["address"].rsplit(".", 1)[1]) <= 50
    assert pcs["pc3"]["address"] != pcs["stray"]["address"]

    # Each boot file and second stage, byte for byte Debian's file, by firmware.
    sizes = {name: path.stat().st_size for name, path in BOOT_FILES.items()}
    for name, first, second in (
        ("pc1", "pxelinux.0", "ldlinux.c32"),
        ("pc2", "shimx64.efi", "grubx64.efi"),
        ("pc3", "pxelinux.0", "ldlinux.c32"),
        ("pc4", "shimx64.efi", "grubx64.efi"),
    ):
        steps = _steps(pcs[name])
        assert steps["boot-file"]["bytes"] == sizes[first], name
        assert steps["loader"]["bytes"] == sizes[second], name
    menus = {name: (pcs[name]["menu"], _steps(pcs[name])["menu"]["detail"]) for name in pcs if name != "stray"}  # fmt: skip
    assert menus == {
        "pc1": ("pxelinux.cfg/default", "pxelinux.cfg/default: local boot (entry local)"),
        "pc2": ("grub/grub.cfg", "grub/grub.cfg: local boot (entry local-disk)"),
        "pc3": ("pxelinux.cfg/default", "pxelinux.cfg/default: local boot (entry local)"),
        "pc4": ("grub/grub.cfg", "grub/grub.cfg: local boot (entry local-disk)"),
    }
    # The dock's NIC shares pc2's reservation and gets the UEFI boot file too (option 93 = 9).
    assert _steps(pcs["pc2"])["dhcp-dock"]["detail"] == (
        f"e1 {_mac(prefix, 0x12, 1)}: 192.168.100.102, boot file shimx64.efi"
    )
    # NFS: 7 stand-in files listed; disk ("sda\n") and parts ("sda1 sda2\n") read.
    assert _steps(pcs["pc1"])["nfs"]["bytes"] == 4 + 10
    assert [step["name"] for step in pcs["stray"]["steps"]] == ["dhcp"]

    checks = {check["name"]: check for check in report["checks"]}
    assert sorted(checks) == [
        "controller-pass",
        "firewall-live",
        "kernel-nfs-files",
        "other-ports-dropped",
        "plan-after-pass",
        "production-blocked",
        "production-route-control",
        "ssh-admin-only",
        "tftp-through-firewall",
        "unknown-pc-no-boot-file",
    ]
    assert all(check["ok"] for check in checks.values()), checks
    assert checks["production-blocked"]["detail"] == (
        "pc1 -> 198.18.0.10: tcp blocked, udp blocked, icmp blocked"
    )
    assert checks["production-route-control"]["detail"] == (
        "adm -> 198.18.0.10: tcp reached, udp reached, icmp reached (no firewall loaded yet); "
        "traceroute: 192.168.100.1, 198.19.0.254, 198.18.0.10"
    )
    assert checks["ssh-admin-only"]["detail"] == (
        "adm (192.168.100.200): got the lab sshd's host key; pc1: timeout"
    )
    assert checks["controller-pass"]["detail"].startswith(f"applied {report['commit'][:12]}: ")
    assert (
        "asked: restart dnsmasq, restart nfs-ganesha, apply_firewall "
        in checks["controller-pass"]["detail"]
    )

    # Live progress, then the table, then the verdict.
    assert "pc4    menu       ok" in out
    assert "PC     HOSTNAME         FIRMWARE  ADDRESS          CLIENT  RESULT  SECONDS" in out
    assert [pcs[name]["client"] for name in sorted(pcs)] == ["", "", "", "", ""]
    assert f"lab {prefix}: every check held" in out
    # Everything torn down; only the logs and the report stay.
    run_dir = Path(report["run_dir"])
    assert _namespaces(prefix) == []
    assert _lab_processes(str(run_dir)) == []
    assert sorted(p.name for p in run_dir.iterdir()) == ["logs", "report.json", "run.json"]
    assert json.loads((run_dir / "run.json").read_text())["state"] == "finished"


def _programs_in(namespace: str) -> list[str]:
    """Command lines of the processes inside a namespace."""
    found = []
    for pid in netns.run_ip("netns", "pids", namespace).stdout.split():
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_a_failure_mid_run_still_tears_everything_down(
    base: Path, monkeypatch: pytest.MonkeyPatch, require_programs: RequirePrograms
) -> None:
    """The default run (imaging) breaks while the PCs play: the server's programs, the
    multicast session and the controller's loop must all go."""
    require_programs(*IMAGING_PROGRAMS)
    prefix = netns.make_prefix(secrets.token_bytes(3))
    seen: dict[str, list[str]] = {}

    def broken_play(*args: object, **kwargs: object) -> object:
        # by now the server's programs and the batch's sender run: prove it, then fail
        seen["namespaces"] = _namespaces(prefix)
        seen["processes"] = _lab_processes(str(base))
        seen["server"] = _programs_in(f"{prefix}srv")
        raise RuntimeError("a probe broke")

    monkeypatch.setattr(pcsteps, "play", broken_play)
    lines: list[str] = []
    options = rehearsal.Options(pcs=1, base=base, prefix=prefix, image_cache=clonezilla.cache_dir())
    report = rehearsal.run(options, lines.append)

    assert (report.ok, report.error) == (False, "RuntimeError: a probe broke")
    assert f"{prefix}srv" in seen["namespaces"] and f"{prefix}rtr" in seen["namespaces"]
    assert any("dnsmasq --keep-in-foreground" in p for p in seen["processes"])
    assert any("ganesha.nfsd" in p for p in seen["processes"])
    assert any(p.startswith("udp-sender ") for p in seen["server"]), seen["server"]
    assert _namespaces(prefix) == []
    assert _lab_processes(str(base)) == []
    run = workspace.run_dir(base, prefix)
    assert json.loads(run.report.read_text())["error"] == "RuntimeError: a probe broke"
    assert not Path(run.server.root).exists() and not run.site_repo.exists()
    assert not netns.record_path(netns.STATE_DIR, prefix).exists()


@pytest.mark.slow
def test_a_kept_lab_runs_on_until_lab_down(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = netns.make_prefix(secrets.token_bytes(3))
    try:
        options = rehearsal.Options(pcs=1, base=base, prefix=prefix, keep=True, stand_in=True)
        report = rehearsal.run(options)
        assert report.ok and report.kept
        # Its dnsmasq owns the run now: a sweep of stale runs leaves it alone.
        assert prefix not in netns.cleanup_stale()
        assert f"{prefix}srv" in _namespaces(prefix)
        owner = netns.OwnerRecord.decode(netns.record_path(netns.STATE_DIR, prefix).read_bytes())
        assert Path(f"/proc/{owner.pid}/cmdline").read_bytes().startswith(b"dnsmasq\0")
        assert main(["lab", "down", "--base", str(base)]) == 0
        assert f"removed lab {prefix}: namespaces and files" in capsys.readouterr().out
    finally:
        netns.teardown(prefix)
    assert _namespaces(prefix) == []
    assert _lab_processes(str(base)) == []
    assert not workspace.run_dir(base, prefix).path.exists()


@pytest.mark.slow
def test_the_default_run_images_one_pc_with_ocs_sr_and_one_with_the_lab_client(
    base: Path,
    tmp_path: Path,
    require_programs: RequirePrograms,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No --image: the lab serves its Clonezilla image (saved by ocs-sr savedisk; built
    first when the cache has none). By the lab's plan pc1 (BIOS) runs Clonezilla's own
    ocs-sr on /dev/<the image's disk>, pc2 (UEFI, docked) the lab's client; both receive
    the image from the reconciler's sender, are verified against the image restored with
    no network (table, every byte, the fixture's 4 known files), report, and boot the
    local disk once the controller took their reports."""
    require_programs(*IMAGING_PROGRAMS)
    report_path = tmp_path / "report.json"
    argv = ["lab", "run", "--pcs", "2", "--base", str(base), "--report", str(report_path)]
    code = main([*argv, "--image-cache", str(clonezilla.cache_dir())])
    out = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert code == 0, out
    image = clonezilla.build_or_reuse()  # the one the run served (built by the run if new)
    assert report["facts"]["image"] == (
        f"{image.image_dir} (saved by ocs-sr savedisk from /dev/{image.disk}, cached)"
    )
    pcs = {pc["name"]: pc for pc in report["pcs"]}
    assert {name: pc["client"] for name, pc in pcs.items()} == {
        "pc1": "ocs-sr",
        "pc2": "lab",
        "stray": "",
    }
    verified = (
        f"table as in the image, {clonezilla.DISK_BYTES} bytes equal to the reference, "
        "4 known files read back"
    )
    for name in ("pc1", "pc2"):
        steps = _steps(pcs[name])
        assert [s["name"] for s in pcs[name]["steps"]][-6:] == [
            "job", "image", "restore", "verify", "report", "reboot",
        ], out  # fmt: skip
        assert all(step["ok"] for step in steps.values()), out
        assert steps["job"]["detail"] == (
            f"multicast restore of lab-image to {image.disk}, port 2232"
        )
        assert steps["verify"]["detail"] == verified
        assert "local boot" in steps["reboot"]["detail"], steps["reboot"]
    pc1, pc2 = _steps(pcs["pc1"]), _steps(pcs["pc2"])
    assert pc1["restore"]["detail"].startswith(
        f"ocs-sr multicast restore of lab-image to {image.disk}, port 2232: exit 0 in "
    )
    assert pc1["report"]["detail"] == "sent by ocs-sr itself"
    assert pc2["restore"]["detail"] == "2 partitions restored"
    assert pc2["report"]["detail"].startswith("192.168.100.102 ")
    assert "restore" not in _steps(pcs["stray"])
    checks = {check["name"]: check for check in report["checks"]}
    assert all(check["ok"] for check in checks.values()), checks
    assert checks["deployment"]["detail"].startswith(
        "accounting-pc02: succeeded, sales-pc01: succeeded; "
    )
    assert "pc1    sales-pc01       bios      192.168.100.101  ocs-sr  ok" in out
    assert "pc2    accounting-pc02  uefi      192.168.100.102  lab     ok" in out
    # Everything torn down: namespaces, programs, the loop device, the restored disks.
    run_dir = Path(report["run_dir"])
    assert _namespaces(report["prefix"]) == []
    assert _lab_processes(str(run_dir)) == []
    holder = ocs_client.backing_file(image.disk)
    assert holder is None or not holder.startswith(str(run_dir))
    assert list(run_dir.rglob(workspace.DISK_FILE)) == []
    assert report["seconds"] < 150
