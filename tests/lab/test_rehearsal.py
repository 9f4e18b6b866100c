"""`kitctl lab run` end to end: the real controller configures dnsmasq, nfs-ganesha, sshd
and the firewall inside a lab server namespace, and simulated PCs boot against them.

The expected facts are worked out by hand from the lab's plan (reconciler/lab/labsite.py):
with 4 PCs, pc1 and pc3 are BIOS (pxelinux.0), pc2 and pc4 UEFI (shimx64.efi); pc1, pc2
and pc4 have the reservations .101, .102 and .104, pc3 takes a pool address (.10-.50);
pc2 has a second NIC; `stray` is not in the site repo. A failure in the middle and a kept
lab brought down by `kitctl lab down` must leave no namespace, program or file behind.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli import main
from reconciler.lab import netns, pcsteps, rehearsal, workspace

pytestmark = [pytest.mark.integration, pytest.mark.netns]

RequirePrograms = Callable[..., None]
PROGRAMS = (
    "ip", "dnsmasq", "nft", "busybox", "tftp", "nfs-ls", "nfs-cp", "rpcbind", "rpcinfo",
    "ganesha.nfsd", "sshd", "ssh-keygen", "ssh-keyscan", "unshare", "git",
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
    code = main(["lab", "run", "--pcs", "4", "--base", str(base), "--report", str(report_path)])
    out = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert code == 0, out
    assert report["ok"] is True and report["error"] == ""
    prefix = report["prefix"]

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
    assert checks["production-route-control"]["detail"].startswith(
        "adm -> 198.18.0.10: tcp reached, udp reached, icmp reached"
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
    assert "PC     HOSTNAME         FIRMWARE  ADDRESS          RESULT  SECONDS" in out
    assert f"lab {prefix}: every check held" in out
    # Everything torn down; only the logs and the report stay.
    run_dir = Path(report["run_dir"])
    assert _namespaces(prefix) == []
    assert _lab_processes(str(run_dir)) == []
    assert sorted(p.name for p in run_dir.iterdir()) == ["logs", "report.json", "run.json"]
    assert json.loads((run_dir / "run.json").read_text())["state"] == "finished"


def test_a_failure_mid_run_still_tears_everything_down(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = netns.make_prefix(secrets.token_bytes(3))
    seen: dict[str, list[str]] = {}

    def broken_play(*args: object, **kwargs: object) -> object:
        # by now the server's programs run: prove it, then fail as a bug would
        seen["namespaces"] = _namespaces(prefix)
        seen["processes"] = _lab_processes(str(base))
        raise RuntimeError("a probe broke")

    monkeypatch.setattr(pcsteps, "play", broken_play)
    lines: list[str] = []
    report = rehearsal.run(rehearsal.Options(pcs=1, base=base, prefix=prefix), lines.append)

    assert (report.ok, report.error) == (False, "RuntimeError: a probe broke")
    assert f"{prefix}srv" in seen["namespaces"]
    assert any("dnsmasq --keep-in-foreground" in p for p in seen["processes"])
    assert any("ganesha.nfsd" in p for p in seen["processes"])
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
        report = rehearsal.run(rehearsal.Options(pcs=1, base=base, prefix=prefix, keep=True))
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
def test_two_pcs_are_imaged_by_multicast_then_boot_locally(
    base: Path,
    tmp_path: Path,
    clonezilla_image: Any,
    require_programs: RequirePrograms,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The real fixture image, a batch open now: by the lab's plan pc1 (BIOS) and pc2
    (UEFI, docked) are armed, receive both partitions by multicast, verify, report, and
    after the controller took their reports their menus boot the local disk."""
    require_programs("udp-sender", "udp-receiver", "partclone.vfat", "partclone.ntfs", "gzip")
    report_path = tmp_path / "report.json"
    argv = ["lab", "run", "--pcs", "2", "--base", str(base), "--report", str(report_path)]
    code = main([*argv, "--image", str(clonezilla_image.image_dir)])
    out = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert code == 0, out
    pcs = {pc["name"]: pc for pc in report["pcs"]}
    for name in ("pc1", "pc2"):
        steps = _steps(pcs[name])
        assert [s["name"] for s in pcs[name]["steps"]][-6:] == [
            "job", "image", "restore", "verify", "report", "reboot",
        ], out  # fmt: skip
        assert all(step["ok"] for step in steps.values()), out
        assert "local" in steps["reboot"]["detail"].lower(), steps["reboot"]
    assert "restore" not in _steps(pcs["stray"])
    checks = {check["name"]: check for check in report["checks"]}
    assert checks["deployment"]["ok"], checks["deployment"]
    assert "sales-pc01: succeeded" in checks["deployment"]["detail"]
    assert "accounting-pc02: succeeded" in checks["deployment"]["detail"]
    assert report["seconds"] < 60
