"""The rehearsal as the end-to-end test: commits to a site repo drive a whole kitting day.

What a kitting engineer does, with nothing in between: the site repo is a real git
repository; the real `kitctl run` (the CLI, `services: direct`) runs inside the lab server's
namespace and follows it, starting dnsmasq, nfs-ganesha and sshd itself and loading the
firewall there; simulated PCs in their own namespaces boot against it with real clients.

1. commit A declares 8 PCs (pc1, pc3, pc5, pc7 BIOS; pc2, pc4, pc6, pc8 UEFI; pc2 has a
   dock; pc3 takes a pool address) and no batch: applied;
2. commit B adds a multicast batch for all 8, open now: every PC gets its imaging menu,
   restores the real Clonezilla image from the controller's sender, is verified byte for
   byte, reports, and after its "reboot" gets local boot; `kitctl audit show B` lists the
   files it wrote and every PC's arming, success and disarming;
3. commit C removes pc8 (and so lowers the batch's clients_to_wait to 7: an edited batch,
   a new request): its reservation is gone and it boots as an unknown PC; none of the
   seven PCs that ran the job is armed again (`pc_held`), no session starts;
4. commit D is invalid: refused, nothing changes, the server keeps serving.

Also: a PC that is not in the site repo gets an address but no boot file; a kitting PC
cannot reach the production namespace; SSH is accepted from the admin range only.

Expected values are worked out from the lab's plan (reconciler/lab/labsite.py): fixed
addresses 192.168.100.10N (N = PC number, pc3 from the pool .10-.50), hostnames
sales-pc01..04 and accounting-pc05..08, boot files pxelinux.0 (BIOS) and shimx64.efi (UEFI).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from reconciler import snapshot
from reconciler import status as status_file
from reconciler.cli import main
from reconciler.controller import DIRECT_DIR
from reconciler.deploy_shell import load_state
from reconciler.host import LocalHost
from reconciler.lab import imaging, kitting_day, labsite, pcsteps, rehearsal, security, workspace
from reconciler.lab.netns import Host, VirtualNetwork
from reconciler.lab.procs import Proc, ProcessRegistry
from reconciler.lab.report import StepResult
from reconciler.layout import Layout
from reconciler.render.pxe import mac_file_name
from reconciler.settings import Settings
from tests.fixtures import clonezilla

pytestmark = [pytest.mark.integration, pytest.mark.netns, pytest.mark.slow]

RequirePrograms = Callable[..., None]
PROGRAMS = (
    "ip", "dnsmasq", "nft", "busybox", "tftp", "nfs-ls", "nfs-cp", "rpcbind", "rpcinfo",
    "ganesha.nfsd", "sshd", "ssh-keygen", "ssh-keyscan", "unshare", "git", "udp-sender",
    "udp-receiver", "partclone.vfat", "partclone.ntfs", "sfdisk",
)  # fmt: skip
PCS = 8
APPLY_TIMEOUT = 60.0
POLL = 0.2
KITCTL = Path(sys.executable).with_name("kitctl")


@dataclass
class Lab:
    net: VirtualNetwork
    run: workspace.RunDir
    pcs: tuple[labsite.LabPc, ...]
    stray: labsite.LabPc
    layout: Layout
    hosts: dict[str, Host] = field(default_factory=dict)
    controller: Proc | None = None

    @property
    def root(self) -> str:
        return str(self.run.server.root)

    def status(self) -> status_file.Status:
        return status_file.load(LocalHost("/"), self.layout)

    def commit(self, files: dict[str, bytes], message: str, *, remove: tuple[str, ...] = ()) -> str:
        for name in remove:
            (self.run.site_repo / name).unlink()
        return workspace.commit_site(self.run.site_repo, files, message)

    def wait_applied(self, sha: str) -> status_file.Status:
        return self._wait(lambda s: s.last_applied == sha, f"commit {sha[:12]} applied")

    def wait_refused(self, sha: str) -> status_file.Status:
        return self._wait(lambda s: s.refused == sha, f"commit {sha[:12]} refused")

    def _wait(self, done: Callable[[status_file.Status], bool], what: str) -> status_file.Status:
        deadline = time.monotonic() + APPLY_TIMEOUT
        for _ in range(int(APPLY_TIMEOUT / POLL) + 1):
            current = self.status()
            if done(current):
                return current
            assert self.controller is not None and self.controller.running(), (
                f"kitctl run ended: {self.controller.output()[-3000:] if self.controller else ''}"
            )
            if time.monotonic() > deadline:
                break
            time.sleep(POLL)
        said = self.controller.output()[-4000:] if self.controller is not None else ""
        pytest.fail(f"not {what} within {APPLY_TIMEOUT:g} s: {current}\nkitctl run said:\n{said}")

    def wait_armed(self, hostnames: list[str]) -> None:
        """Until every PC's restore entry is out (the batch's pass after the apply)."""
        deadline = time.monotonic() + APPLY_TIMEOUT
        for _ in range(int(APPLY_TIMEOUT / POLL) + 1):
            if all(self.phase(h) == "waiting" for h in hostnames) and self._entries_out():
                return
            if time.monotonic() > deadline:
                break
            time.sleep(POLL)
        said = self.controller.output()[-4000:] if self.controller is not None else ""
        phases = {h: self.phase(h) for h in hostnames}
        pytest.fail(f"not armed within {APPLY_TIMEOUT:g} s: {phases}\nkitctl run said:\n{said}")

    def _entries_out(self) -> bool:
        """Every per-PC boot file of every NIC, both families, runs a Clonezilla job."""
        paths = [path for pc in self.pcs for path in _per_pc_files(self, pc)]
        return all(path.is_file() and "ocs_live_run" in path.read_text() for path in paths)

    def said(self) -> str:
        """The end of what `kitctl run` logged (for failure messages)."""
        said = self.controller.output()[-3000:] if self.controller is not None else ""
        log = Path(self.layout.dnsmasq_log)
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no dnsmasq log)"
        return f"{said}\n--- dnsmasq log:\n{tail}"

    def phase(self, hostname: str) -> str:
        state = load_state("/", self.layout)
        phases = {h: pc.phase.value for r in state.batches.values() for h, pc in r.pcs.items()}
        return phases.get(hostname, "")


@pytest.fixture
def lab(
    readable_dir: Path, require_programs: RequirePrograms, vnet: VirtualNetwork
) -> Iterator[Lab]:
    require_programs(*PROGRAMS)
    run = workspace.create(readable_dir, vnet.prefix)
    tree = run.server
    pcs = labsite.lab_pcs(vnet.prefix, PCS)
    settings = Settings(source=str(run.site_repo), services="direct", paths=tree.layout_paths())
    built = Lab(vnet, run, pcs, labsite.stray_pc(vnet.prefix), settings.layout())
    for name, path in settings.model_dump()["paths"].items():  # never the machine's own files
        assert path.startswith(f"{tree.root}/"), (name, path)
    _network(built)
    config = run.path / "reconciler.yaml"
    config.write_text(json.dumps(settings.model_dump(mode="json")))  # YAML is a superset
    try:
        yield built
    finally:
        if built.controller is not None:  # SIGTERM: it stops its own programs, by PID
            built.controller.stop(grace=20.0)
        workspace.detach_loops(run)


def _network(lab: Lab) -> None:
    """The rehearsal's network: kitting switch (server, admin, PCs, stray), the server's
    uplink to a router, production behind the router."""
    lab.hosts.update(rehearsal.build_network(lab.net, (*lab.pcs, lab.stray)))


def _start_controller(lab: Lab) -> None:
    config = lab.run.path / "reconciler.yaml"
    lab.controller = lab.net.procs.start(
        [str(KITCTL), "run", "--config", str(config)],
        netns=lab.hosts["srv"].netns,
        name="kitctl-run",
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _play(
    lab: Lab, bench: pcsteps.Bench, pcs: tuple[labsite.LabPc, ...], *, armed: bool, label: str
) -> dict[str, tuple[StepResult, ...]]:
    """Every PC plays its steps at once (a multicast session waits for all of them)."""

    def one(pc: labsite.LabPc) -> tuple[StepResult, ...]:
        with ProcessRegistry(lab.run.logs / label / pc.node) as procs:
            session = pcsteps.PcSession(pc, lab.hosts[pc.node], procs)
            steps = pcsteps.steps_for(pc, armed=armed, reboot=armed)
            return pcsteps.play(bench, session, steps, lambda step: None)

    with ThreadPoolExecutor(max_workers=len(pcs), thread_name_prefix="e2e-pc") as pool:
        futures = {pc.node: pool.submit(one, pc) for pc in pcs}
        return {node: future.result() for node, future in futures.items()}


def _failures(played: dict[str, tuple[StepResult, ...]]) -> list[str]:
    return [
        f"{node} {step.name}: {step.detail}"
        for node, steps in played.items()
        for step in steps
        if not step.ok
    ]


def _per_pc_files(lab: Lab, pc: labsite.LabPc) -> list[Path]:
    """Both families' per-PC boot files of every NIC of the PC."""
    tftp = Path(lab.run.server.tftp_root)
    files = []
    for mac in pc.macs:
        name = mac_file_name(mac)
        files.append(tftp / "pxelinux.cfg" / name)
        files.append(tftp / labsite.GRUB_DIR / f"grub.cfg-{name}")
    return files


def _audit(lab: Lab, capsys: pytest.CaptureFixture[str], sha: str) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert main(["audit", "show", sha, "--root", lab.root, "--format", "json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_commits_drive_a_kitting_day(
    lab: Lab, clonezilla_image: clonezilla.ClonezillaImage, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = lab.run.server
    workspace.place_boot_files(tree)
    image_files = workspace.place_image(tree, clonezilla_image.images_root / clonezilla_image.name)
    files_a = labsite.site_files(lab.pcs, tree)
    desired = snapshot.validate_files("lab", files_a).desired
    assert desired is not None
    live = desired.site.boot.clonezilla
    for name in (live.kernel, live.initrd, live.rootfs):  # the PCs play the live system's part
        path = Path(tree.tftp_root) / name
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.write_bytes(b"stand-in for Clonezilla live\n")
        path.chmod(0o644)

    roles = security.Roles(
        server=lab.hosts["srv"],
        admin=lab.hosts["adm"],
        production=lab.hosts["prodsrv"],
        pc=lab.hosts[lab.pcs[0].node],
        router=lab.hosts["rtr"],
    )
    with ProcessRegistry(lab.run.logs / "control") as procs:
        control = security.production_control(procs, roles)
    assert control.ok, control.detail  # before any firewall: the route to production works

    # --- commit A: the PCs, no batch --------------------------------------------------
    commit_a = lab.commit(files_a, "Declare the 8 PCs of the lab")
    _start_controller(lab)
    lab.wait_applied(commit_a)

    # --- commit B: a multicast batch for all 8, open now --------------------------------
    window = kitting_day.batch_window(datetime.now(UTC), clonezilla_image.disk)
    commit_b = lab.commit(
        labsite.site_files(lab.pcs, tree, window), "Image the 8 lab PCs by multicast now"
    )
    lab.wait_applied(commit_b)
    lab.wait_armed([pc.hostname for pc in lab.pcs])
    reference = lab.run.path / "reference.img"
    restored = imaging.restore_local(
        lab.net.procs,
        lab.hosts["srv"].netns,
        Path(tree.images_root) / labsite.IMAGE,
        reference,
    )
    assert restored.ok, restored.problems()
    bench = pcsteps.Bench(
        net=lab.net,
        server=labsite.SERVER,
        tftp_root=Path(tree.tftp_root),
        images_root=Path(tree.images_root),
        image=labsite.IMAGE,
        image_files=image_files,
        armed={pc.hostname: labsite.IMAGE for pc in lab.pcs},
        imaging=pcsteps.ImagingBench(
            reference=reference,
            expected_files=clonezilla.expected_files(),
            settled=lambda hostname: lab.phase(hostname) == "succeeded",
        ),
    )
    played = _play(lab, bench, (*lab.pcs, lab.stray), armed=True, label="imaging")
    assert _failures(played) == []
    every_step = ["dhcp", "boot-file", "loader", "menu", "nfs", "job", "image", "restore",
                  "verify", "report", "reboot"]  # fmt: skip
    for pc in lab.pcs:
        names = [step.name for step in played[pc.node]]
        docked = [*every_step[:1], "dhcp-dock", *every_step[1:]]
        assert names == (docked if pc.node == "pc2" else every_step), pc.node
        assert lab.phase(pc.hostname) == "succeeded"
        for path in _per_pc_files(lab, pc):  # disarmed: both families back to the default
            assert not path.exists(), path  # menus, which boot the local disk
    leases = {pc.node: _detail(played[pc.node], "dhcp") for pc in lab.pcs}
    for number in (1, 2, 4, 5, 6, 7, 8):
        expected_boot = "pxelinux.0" if number % 2 else "shimx64.efi"
        assert leases[f"pc{number}"] == f"192.168.100.{100 + number}, boot file {expected_boot}"
    pool_address = IPv4Address(leases["pc3"].split(",")[0])
    assert IPv4Address("192.168.100.10") <= pool_address <= IPv4Address("192.168.100.50")
    # the stray PC: an address from the pool, no boot file, so no menu at all
    assert [step.name for step in played["stray"]] == ["dhcp"]
    assert _detail(played["stray"], "dhcp").endswith("boot file none")

    caused = _audit(lab, capsys, commit_b)
    events = [(entry["event"], entry["target"]) for entry in caused]
    hostnames = [pc.hostname for pc in lab.pcs]
    # pc_imaging too: udp-sender names its receivers by address; pc3's is from the pool
    # and is known by dnsmasq's lease file
    for event in ("pc_armed", "pc_imaging", "pc_succeeded", "pc_disarmed"):
        assert sorted(t for e, t in events if e == event) == sorted(hostnames), event
    assert ("commit_applied", "main") in events
    assert any(e == "session_started" for e, _ in events)
    # every per-PC boot file (9 NICs, both families: 18) written when armed, removed after
    per_pc = {str(path) for pc in lab.pcs for path in _per_pc_files(lab, pc)}
    assert len(per_pc) == 18
    assert per_pc <= {t for e, t in events if e == "file_written"}
    assert per_pc <= {t for e, t in events if e == "file_removed"}
    assert not [t for e, t in events if e == "file_written" and t.endswith(".hosts")]  # A's

    # --- commit C: pc8 leaves the site ---------------------------------------------------
    gone = lab.pcs[-1]
    assert gone.node == "pc8"
    remaining = lab.pcs[:-1]
    # The batch's clients_to_wait drops to 7 with it: an edited batch is a new request, but
    # no PC that ran the batch's job is armed again (pc_held, ImagedEarlier) and no
    # session starts for nobody.
    files_c = labsite.site_files(remaining, tree, window)
    commit_c = lab.commit(files_c, "pc8 goes back to stock")
    lab.wait_applied(commit_c)
    held = [(e["event"], e["target"]) for e in _audit(lab, capsys, commit_c)]
    assert sorted(t for e, t in held if e == "pc_held") == sorted(pc.hostname for pc in remaining)
    assert not [e for e, _ in held if e in ("pc_armed", "session_started", "session_requested")]
    for pc in lab.pcs:
        assert not any(path.exists() for path in _per_pc_files(lab, pc)), pc.node
    hosts_dir = Path(lab.layout.dhcp_hosts_dir)
    assert sorted(p.name for p in hosts_dir.iterdir()) == sorted(
        f"{pc.hostname}.hosts" for pc in remaining
    )
    stranger = replace(gone, department=None, fixed_ip=None)  # what the site now says of it
    after = _play(
        lab, replace(bench, armed={}, imaging=None), (remaining[0], stranger),
        armed=False, label="after-c",
    )  # fmt: skip
    # pc1 is not armed again (it already succeeded: local boot); pc8 is a stranger now
    assert _failures(after) == [], lab.said()
    assert [step.name for step in after["pc8"]] == ["dhcp"]
    assert _detail(after["pc8"], "dhcp").endswith("boot file none")

    # --- commit D: invalid -----------------------------------------------------------------
    dnsmasq_before = _dnsmasq_pid(lab)
    broken = dict(files_c)
    broken["departments/sales.yaml"] = broken["departments/sales.yaml"].replace(
        b"firmware: bios", b"firmware: bios-legacy", 1
    )
    commit_d = lab.commit(broken, "A typo")
    refused = lab.wait_refused(commit_d)
    assert refused.last_applied == commit_c
    [refusal] = _audit(lab, capsys, commit_d)
    assert refusal["event"] == "commit_refused"
    # pc1's firmware line of the sales file: line 7, the value after "    firmware: "
    assert "departments/sales.yaml:7:15" in json.dumps(refusal)
    assert _dnsmasq_pid(lab) == dnsmasq_before
    still = _play(
        lab, replace(bench, armed={}, imaging=None), (lab.pcs[1],), armed=False, label="after-d"
    )
    assert _failures(still) == []

    # --- the lab-wide facts ------------------------------------------------------------------
    pc = lab.pcs[0]
    lab.net.assign(lab.hosts[pc.node], f"{pc.fixed_ip}/24", gateway=str(labsite.SERVER))
    host_key = Path(lab.layout.state_dir) / DIRECT_DIR / "ssh_host_ed25519_key"
    with ProcessRegistry(lab.run.logs / "checks") as procs:
        blocked = security.production_blocked(procs, roles)
        ssh = security.ssh_admin_only(procs, roles, host_key)
    assert blocked.ok, blocked.detail
    assert ssh.ok, ssh.detail


def _detail(steps: tuple[StepResult, ...], name: str) -> str:
    return next(step.detail for step in steps if step.name == name)


def _dnsmasq_pid(lab: Lab) -> int:
    pid_file = Path(lab.layout.state_dir) / DIRECT_DIR / "dnsmasq.pid"
    return int(pid_file.read_text().strip())
