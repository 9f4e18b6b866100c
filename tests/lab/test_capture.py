"""A real capture, end to end: a commit asks for a master image, a PC saves itself into it.

The lab of test_commit_driven.py, smaller: the real `kitctl run` (`services: direct`) runs
in the lab server's namespace and follows a real git site repo; two PCs, sales-pc01 (BIOS,
192.168.100.101, the master) and accounting-pc02 (UEFI, 192.168.100.102, another PC).

1. commit A declares the PCs; the master's disk is a loop device name (its Department
   entry says `disk: {device: loopN}`): the images root holds no image yet;
2. commit B adds a capture batch for the master, open now: its per-PC menu runs
   `ocs-sr ... -gb ... savedisk master-2026 loopN` (-gb: Clonezilla's B2SUMS), the
   rendered nfs-ganesha export gets a read-write, no-root-squash CLIENT block for
   192.168.100.101 before the subnet's read-only one, and for real: a write over NFS
   (libnfs `nfs-cp`) from the master's namespace lands as root, the same write from the
   other PC's namespace is refused;
3. the master plays its part: DHCP, its menu over TFTP, the job read from it; Clonezilla's
   own `ocs-sr` with the menu's options (`-p true` instead of `-p reboot`) saves a real
   disk (a copy of the test fixture's source disk: GPT, EFI FAT + NTFS, made by
   reconciler/lab/fixture_image.py's recipe) attached to /dev/loopN;
4. the master's report reaches port 6461 and the controller ends the batch: succeeded,
   the export read-only again (rendered, and a write from the master is refused now),
   `image_captured` in `kitctl audit show B` with the SHA-256 of every file (worked out
   here from the files), the image complete and its checksums verified by
   `kitctl images --verify`;
5. commit C asks for another capture to the same name without `overwrite`: blocked
   (ImageExists), nobody armed, the export stays read-only.

What differs from a real master PC, and why: this kernel has no NFS client, so ocs-sr
cannot mount the images root on /home/partimag. It saves into a local scratch directory
bound there (a private mount namespace), and the PC then writes every file into the export
over NFS itself, as the master PC (its namespace, its address, root): the image directory
with libnfs's nfs_mkdir2 and each file with libnfs's `nfs-cp`, then each file's mode as
ocs-sr left it (nfs_chmod: nfs-cp does not copy modes). ocs-sr's own job report would reach
the server before those copies, so ocs-sr reports to a listener in the PC's own namespace
(`-os 127.0.0.1`), and the PC sends that very line to the server's port 6461 once the image
is in the export, as the real order would be (the files on NFS first, then the report).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from reconciler import snapshot
from reconciler import status as status_file
from reconciler.cli import main
from reconciler.deploy_shell import load_state
from reconciler.host import LocalHost
from reconciler.lab import (
    fixture_image,
    labsite,
    menus,
    ocs_client,
    probes,
    rehearsal,
    workspace,
)
from reconciler.lab.netns import Host, VirtualNetwork
from reconciler.lab.procs import Proc, ProcessRegistry
from reconciler.layout import Layout
from reconciler.render.pxe import mac_file_name
from reconciler.settings import Settings
from tests.fixtures import clonezilla

pytestmark = [pytest.mark.integration, pytest.mark.netns, pytest.mark.slow]

RequirePrograms = Callable[..., None]
PROGRAMS = (
    "ip", "dnsmasq", "nft", "busybox", "tftp", "nfs-ls", "nfs-cp", "rpcbind", "rpcinfo",
    "ganesha.nfsd", "sshd", "ssh-keygen", "unshare", "git", "ocs-sr", "losetup", "partx",
    "partclone.vfat", "partclone.ntfs", "zstdmt", "b2sum", "sfdisk", "parted",
)  # fmt: skip
IMAGE = "master-2026"
BATCH = "capture-master"
AGAIN = "capture-master-again"
REPORT_PORT = 6461
WAIT = 60.0
POLL = 0.2
OCS_TIMEOUT = 180.0
NFS_TIMEOUT = 15.0
KITCTL = Path(sys.executable).with_name("kitctl")
LIBNFS = "libnfs.so.13"
READ_ONLY = "NFS3ERR_ROFS"
"""How libnfs's nfs-cp says the server refused a CREATE on a read-only export."""

# A small libnfs client for what nfs-cp cannot do: make a directory, set a file's mode.
# argv: SERVER EXPORT OP...; OP is mkdir:PATH:MODE or chmod:PATH:MODE (octal), PATH
# relative to the export. Prints one line per OP: "ok OP" or "error OP: MESSAGE".
_LIBNFS_SCRIPT = f"""
import ctypes, sys
lib = ctypes.CDLL({LIBNFS!r})
lib.nfs_init_context.restype = ctypes.c_void_p
lib.nfs_get_error.restype = ctypes.c_char_p
lib.nfs_get_error.argtypes = [ctypes.c_void_p]
lib.nfs_mount.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
lib.nfs_mkdir2.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
lib.nfs_chmod.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
lib.nfs_destroy_context.argtypes = [ctypes.c_void_p]
nfs = lib.nfs_init_context()
server, export, *ops = sys.argv[1:]
if lib.nfs_mount(nfs, server.encode(), export.encode()) != 0:
    print("error mount:", lib.nfs_get_error(nfs).decode(errors="replace"))
    sys.exit(1)
failed = 0
for op in ops:
    kind, path, mode = op.split(":")
    call = lib.nfs_mkdir2 if kind == "mkdir" else lib.nfs_chmod
    if call(nfs, path.encode(), int(mode, 8)) != 0:
        print("error", op + ":", lib.nfs_get_error(nfs).decode(errors="replace"))
        failed = 1
    else:
        print("ok", op)
lib.nfs_destroy_context(nfs)
sys.exit(failed)
"""


@dataclass
class Lab:
    net: VirtualNetwork
    run: workspace.RunDir
    pcs: tuple[labsite.LabPc, ...]
    layout: Layout
    disk: str
    """The master's disk: a free loop device, chosen before commit A."""
    hosts: dict[str, Host] = field(default_factory=dict)
    controller: Proc | None = None

    @property
    def root(self) -> str:
        return str(self.run.server.root)

    @property
    def master(self) -> labsite.LabPc:
        return self.pcs[0]

    @property
    def other(self) -> labsite.LabPc:
        return self.pcs[1]

    @property
    def images_root(self) -> Path:
        return Path(self.run.server.images_root)

    def said(self) -> str:
        return self.controller.output()[-4000:] if self.controller is not None else ""

    def wait(self, done: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / POLL) + 1):
            if done():
                return
            assert self.controller is not None and self.controller.running(), (
                f"kitctl run ended: {self.said()}"
            )
            if time.monotonic() > deadline:
                break
            time.sleep(POLL)
        pytest.fail(f"not {what} within {timeout:g} s\nkitctl run said:\n{self.said()}")

    def status(self) -> status_file.Status:
        return status_file.load(LocalHost("/"), self.layout)

    def batch(self, name: str) -> dict[str, Any]:
        """The newest request of batch `name` in the deployments' state ({} when none)."""
        state = load_state("/", self.layout)
        found = [r for r in state.batches.values() if r.name == name and not r.withdrawn]
        if not found:
            return {}
        record = found[-1]
        return {
            "phase": record.phase.value,
            "outcome": record.outcome.value if record.outcome else None,
            "reason": record.reason,
            "message": record.message,
            "pcs": {host: pc.phase.value for host, pc in record.pcs.items()},
        }

    def menu_file(self, pc: labsite.LabPc) -> Path:
        return Path(self.run.server.tftp_root) / "pxelinux.cfg" / mac_file_name(pc.macs[0])

    def export(self) -> str:
        """The rendered nfs-ganesha export, comments and blank lines left out."""
        text = Path(self.layout.ganesha_conf).read_text()
        lines = (line.split("#", 1)[0].rstrip() for line in text.splitlines())
        return "\n".join(line for line in lines if line.strip())


def _free_loop() -> str:
    """A loop device nobody uses, from the top: the lab's other ocs-sr runs restore onto
    the fixture image's disk name (loop0, the first free one when it was saved), and
    `losetup -f` hands out the lowest free one. Attaching later still refuses a device
    taken meanwhile (ocs_client.loop_device)."""
    for number in range(7, 0, -1):
        name = f"loop{number}"
        if Path(f"/dev/{name}").is_block_device() and ocs_client.backing_file(name) is None:
            return name
    pytest.fail("no free loop device among loop1-loop7 for the master's disk")


@pytest.fixture
def lab(
    readable_dir: Path, require_programs: RequirePrograms, vnet: VirtualNetwork
) -> Iterator[Lab]:
    require_programs(*PROGRAMS)
    run = workspace.create(readable_dir, vnet.prefix)
    tree = run.server
    pcs = labsite.lab_pcs(vnet.prefix, 2)
    settings = Settings(source=str(run.site_repo), services="direct", paths=tree.layout_paths())
    built = Lab(vnet, run, pcs, settings.layout(), _free_loop())
    for name, path in settings.model_dump()["paths"].items():  # never the machine's own files
        assert path.startswith(f"{tree.root}/"), (name, path)
    built.hosts.update(rehearsal.build_network(vnet, pcs))
    (run.path / "reconciler.yaml").write_text(json.dumps(settings.model_dump(mode="json")))
    try:
        yield built
    finally:
        if built.controller is not None:  # SIGTERM: it stops its own programs, by PID
            built.controller.stop(grace=20.0)
        workspace.detach_loops(run)


def _site_files(lab: Lab, *batches: str) -> dict[str, bytes]:
    """The lab's site with the master's disk named, plus the given Batch documents."""
    files = labsite.site_files(lab.pcs, lab.run.server)
    sales = files["departments/sales.yaml"].decode()
    ip_line = f'    ip: "{lab.master.fixed_ip}"\n'
    assert sales.count(ip_line) == 1, sales
    files["departments/sales.yaml"] = sales.replace(
        ip_line, f'{ip_line}    disk: {{device: "{lab.disk}"}}\n'
    ).encode()
    for number, text in enumerate(batches):
        files[f"batches/capture-{number}.yaml"] = text.encode()
    return files


def _capture_batch(name: str, hostname: str, now: datetime) -> str:
    start = (now - timedelta(minutes=1)).replace(microsecond=0).isoformat()
    end = (now + timedelta(minutes=30)).replace(microsecond=0).isoformat()
    return f"""\
kind: Batch
name: {name}
image: {IMAGE}
action: capture
targets: {{pcs: [{hostname}]}}
mode: unicast
window: {{start: "{start}", end: "{end}"}}
"""


def _commit(lab: Lab, files: dict[str, bytes], message: str, remove: tuple[str, ...] = ()) -> str:
    for name in remove:
        (lab.run.site_repo / name).unlink()
    return workspace.commit_site(lab.run.site_repo, files, message)


def _applied(lab: Lab, sha: str) -> None:
    lab.wait(lambda: lab.status().last_applied == sha, f"commit {sha[:12]} applied")


def _nfs_write(procs: ProcessRegistry, lab: Lab, pc: labsite.LabPc, name: str) -> tuple[bool, str]:
    """Write a small file named `name` into the images export from `pc`'s namespace with
    nfs-cp; (the server has it, what nfs-cp said)."""
    local = procs.scratch(f"probe-{pc.node}") / "probe"
    local.write_bytes(f"written by {pc.hostname}\n".encode())
    done = procs.run(
        ["nfs-cp", str(local), f"nfs://{labsite.SERVER}{lab.images_root}/{name}"],
        netns=lab.hosts[pc.node].netns,
        timeout=NFS_TIMEOUT,
        name=f"nfscp-{pc.node}",
        env={"PATH": probes.PROBE_PATH},
    )
    landed = lab.images_root / name
    return done.ok and landed.is_file(), done.text


def _libnfs(procs: ProcessRegistry, lab: Lab, pc: labsite.LabPc, *ops: str) -> str:
    done = procs.run(
        [sys.executable, "-c", _LIBNFS_SCRIPT, str(labsite.SERVER), str(lab.images_root), *ops],
        netns=lab.hosts[pc.node].netns,
        timeout=NFS_TIMEOUT,
        name=f"libnfs-{pc.node}",
        env={"PATH": probes.PROBE_PATH},
    )
    assert done.ok, f"libnfs {' '.join(ops)}: {done.text}"
    return done.text


def _audit(capsys: pytest.CaptureFixture[str], lab: Lab, sha: str) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert main(["audit", "show", sha, "--root", lab.root, "--format", "json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _writer_block(address: IPv4Address) -> str:
    return (
        "    CLIENT {\n"
        f"        Clients = {address};\n"
        "        Access_Type = RW;\n"
        "        Squash = no_root_squash;\n"
        "    }\n"
    )


SUBNET_BLOCK = (
    "    CLIENT {\n"
    "        Clients = 192.168.100.0/24;\n"
    "        Access_Type = RO;\n"
    "        Squash = root_squash;\n"
    "    }\n"
    "}"
)


def test_a_master_pc_captures_itself_into_a_new_image(
    lab: Lab, clonezilla_image: clonezilla.ClonezillaImage, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = lab.run.server
    master, other = lab.master, lab.other
    assert (master.hostname, master.fixed_ip) == ("sales-pc01", IPv4Address("192.168.100.101"))
    assert (other.hostname, other.fixed_ip) == ("accounting-pc02", IPv4Address("192.168.100.102"))
    workspace.place_boot_files(tree)
    files_a = _site_files(lab)
    _place_live_stand_ins(lab, files_a)
    writer = _writer_block(IPv4Address("192.168.100.101"))

    # --- commit A: the PCs, the master's disk named; no image, no batch -----------------
    commit_a = _commit(lab, files_a, "Declare the lab PCs; the master's disk")
    lab.controller = lab.net.procs.start(
        [str(KITCTL), "run", "--config", str(lab.run.path / "reconciler.yaml")],
        netns=lab.hosts["srv"].netns,
        name="kitctl-run",
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    _applied(lab, commit_a)
    assert not (lab.images_root / IMAGE).exists()
    assert lab.export().endswith(SUBNET_BLOCK) and writer not in lab.export() + "\n"

    # --- commit B: capture the master now ---------------------------------------------------
    now = datetime.now(UTC)
    files_b = _site_files(lab, _capture_batch(BATCH, master.hostname, now))
    commit_b = _commit(lab, files_b, "Capture the 2026 master from sales-pc01")
    _applied(lab, commit_b)
    lab.wait(
        lambda: (
            lab.batch(BATCH).get("pcs") == {master.hostname: "waiting"}
            and lab.menu_file(master).is_file()
        ),
        "the master armed",
    )
    assert not lab.menu_file(other).exists()  # nobody else is armed
    # the subnet block ends the export; the master's block comes right before it
    assert lab.export().endswith(writer + SUBNET_BLOCK), lab.export()
    # --- the master plays its part -------------------------------------------------------------
    with ProcessRegistry(lab.run.logs / "master") as procs:
        # it boots: its address and its menu, the job read from it
        host = lab.hosts[master.node]
        lease = probes.dhcp(procs, host, client_arch=master.arches[0], tries=3, pause=2)
        assert isinstance(lease, probes.DhcpLease), lease
        assert lease.address.ip == master.fixed_ip and lease.boot_file == "pxelinux.0"
        lab.net.assign(host, str(lease.address))
        per_pc = f"pxelinux.cfg/{mac_file_name(master.macs[0])}"
        fetched = probes.tftp_get(procs, host, str(labsite.SERVER), per_pc, timeout=10.0)
        assert isinstance(fetched, probes.TftpFetched), fetched
        verdict = menus.pxelinux(fetched.data.decode())
        words = menus.ocs_words(verdict)
        assert words[0] == "ocs-sr" and words[-3:] == ["savedisk", IMAGE, lab.disk], words
        options = words[1:-3]
        assert "-gb" in options  # Clonezilla's B2SUMS generation
        assert "-noabo" in options  # files readable by others: root is squashed on NFS
        assert options[options.index("-p") + 1] == "reboot"

        # Clonezilla live is up: the export lets this PC alone write, as root
        lab.net.assign(lab.hosts[other.node], f"{other.fixed_ip}/24")
        # the export was restarted with the writer block: retry a little while it comes up
        wrote, said = False, ""
        deadline = time.monotonic() + 20
        for attempt in range(40):
            wrote, said = _nfs_write(procs, lab, master, f"probe-master-{attempt}")
            if wrote or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert wrote, f"the master cannot write into the export: {said}"
        probe = lab.images_root / f"probe-master-{attempt}"
        assert probe.stat().st_uid == 0  # as root: not squashed
        refused, said_other = _nfs_write(procs, lab, other, "probe-other")
        assert not refused and READ_ONLY in said_other, said_other
        assert not (lab.images_root / "probe-other").exists()
        probe.unlink()  # the server's admin tidies up; not part of the image

        scratch = procs.scratch("capture")
        saved, report = _save(
            procs,
            lab,
            host=host,
            options=options,
            scratch=scratch,
            source_disk=clonezilla_image.source_disk,
        )
        image_dir = saved / IMAGE
        local_files = sorted(p.name for p in image_dir.iterdir() if p.is_file())
        assert {"disk", "parts", "clonezilla-img", "B2SUMS"} <= set(local_files), local_files
        assert (image_dir / "disk").read_text().split() == [lab.disk]
        assert (image_dir / "parts").read_text().split() == [f"{lab.disk}p1", f"{lab.disk}p2"]
        assert not [p for p in image_dir.iterdir() if not p.is_file()]  # a flat directory

        # into the export, over NFS, as the master PC
        assert "ok mkdir" in _libnfs(procs, lab, master, f"mkdir:/{IMAGE}:0755")
        for name in local_files:
            done = procs.run(
                ["nfs-cp", str(image_dir / name),
                 f"nfs://{labsite.SERVER}{lab.images_root}/{IMAGE}/{name}"],
                netns=host.netns,
                timeout=NFS_TIMEOUT,
                name=f"nfscp-{master.node}",
                env={"PATH": probes.PROBE_PATH},
            )  # fmt: skip
            assert done.ok, f"nfs-cp {name}: {done.text}"
        modes = [
            f"chmod:/{IMAGE}/{n}:{(image_dir / n).stat().st_mode & 0o777:o}" for n in local_files
        ]
        _libnfs(procs, lab, master, *modes)
        served = lab.images_root / IMAGE
        for name in local_files:
            assert (served / name).read_bytes() == (image_dir / name).read_bytes(), name

        # the job report, Clonezilla's own line, now that the image is in the export
        # ocs-sr's image_save names the repository it saved into (`dirname` of the image
        # directory), not the image: the server takes it as the capture it armed
        assert report.startswith(f"{master.fixed_ip} {master.macs[0]} Saved /home/partimag, ")
        parts = [p.strip() for p in report.split(",", 1)[1].split(";") if p.strip()]
        assert [p.split(",")[0:2] for p in parts] == [
            [f"/dev/{lab.disk}p1", " success"],
            [f"/dev/{lab.disk}p2", " success"],
        ], report
        sent = probes.tcp_send_line(procs, host, str(labsite.SERVER), REPORT_PORT, report)
        assert sent == "connected"

    # --- the server ends the capture -------------------------------------------------------------
    lab.wait(lambda: lab.batch(BATCH).get("phase") == "finished", "the capture finished")
    finished = lab.batch(BATCH)
    assert (finished["outcome"], finished["pcs"]) == ("succeeded", {master.hostname: "succeeded"})
    lab.wait(lambda: writer not in lab.export() + "\n", "the export read-only again")
    assert lab.export().endswith(SUBNET_BLOCK)
    with ProcessRegistry(lab.run.logs / "export-closed") as procs:
        # the restarted export refuses the master now (retried while ganesha comes back up)
        for attempt in range(20):
            wrote, said = _nfs_write(procs, lab, master, f"probe-after-{attempt}")
            assert not wrote, f"the master still writes after its capture: {said}"
            if READ_ONLY in said:
                break
            time.sleep(0.5)
        assert READ_ONLY in said, said
        assert not list(lab.images_root.glob("probe-after-*"))

    expected = {
        name: hashlib.sha256((lab.images_root / IMAGE / name).read_bytes()).hexdigest()
        for name in local_files
    }
    caused = _audit(capsys, lab, commit_b)
    captured = [e for e in caused if e["event"] == "image_captured"]
    assert len(captured) == 1, [e["event"] for e in caused]
    assert captured[0]["target"] == IMAGE
    assert captured[0]["details"]["pc"] == master.hostname
    assert captured[0]["details"]["manifest"] == expected

    capsys.readouterr()
    code = main([
        "images", "--root", "/", "--images-root", str(lab.images_root), "--verify",
        "--format", "json",
    ])  # fmt: skip
    inventory = json.loads(capsys.readouterr().out)
    (image,) = [i for i in inventory["images"] if i["name"] == IMAGE]
    assert code == 0, inventory
    assert image["status"] == "OK" and "B2SUMS" in image["verified_with"], image
    assert [(p["name"], p["filesystem"]) for p in image["partitions"]] == [
        (f"{lab.disk}p1", "vfat"),
        (f"{lab.disk}p2", "ntfs"),
    ]
    assert {p["compression"] for p in image["partitions"]} == {"zst"}  # the menu's -z9p

    # --- commit C: a second capture to the same name, no overwrite ---------------------------------
    files_c = _site_files(lab, _capture_batch(AGAIN, master.hostname, datetime.now(UTC)))
    commit_c = _commit(lab, files_c, "Capture the master again (forgot overwrite)")
    _applied(lab, commit_c)
    lab.wait(lambda: lab.batch(AGAIN).get("phase") == "blocked", "the second capture blocked")
    blocked = lab.batch(AGAIN)
    assert blocked["reason"] == "ImageExists"
    assert IMAGE in blocked["message"] and "overwrite: true" in blocked["message"]
    assert not lab.menu_file(master).exists()
    assert writer not in lab.export() + "\n"
    events = [(e["event"], e["details"].get("reason")) for e in _audit(capsys, lab, commit_c)]
    assert ("batch_blocked", "ImageExists") in events, events


def _place_live_stand_ins(lab: Lab, files: dict[str, bytes]) -> None:
    """The server arms nobody without Clonezilla live in its TFTP root; the PCs play the
    live system's part."""
    desired = snapshot.validate_files("lab", files).desired
    assert desired is not None
    live = desired.site.boot.clonezilla
    for name in (live.kernel, live.initrd, live.rootfs):
        path = Path(lab.run.server.tftp_root) / name
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.write_bytes(b"stand-in for Clonezilla live\n")
        path.chmod(0o644)


def _save(
    procs: ProcessRegistry,
    lab: Lab,
    *,
    host: Host,
    options: list[str],
    scratch: Path,
    source_disk: Path,
) -> tuple[Path, str]:
    """ocs-sr savedisk with the menu's options (`-p true`, not reboot) in the master's
    namespace, from a copy of `source_disk` on /dev/DISK, into SCRATCH/partimag; its report
    caught in the PC's own namespace. Returns SCRATCH/partimag and the report line."""
    disk = scratch / "disk.img"
    shutil.copyfile(source_disk, disk)
    conf = scratch / "drbl-ocs.conf"
    conf.write_text(ocs_client.quick_conf(ocs_client.DRBL_OCS_CONF.read_text()))
    logs = scratch / "var-log"
    logs.mkdir()
    saved = scratch / "partimag"
    saved.mkdir()
    at = options.index("-p")
    lab_options = [*options[:at], "-p", "true", *options[at + 2 :], "-nogui"]
    ocs_sr = ["ocs-sr", *lab_options, "-os", "127.0.0.1", "savedisk", IMAGE, lab.disk]
    argv = ["unshare", "--mount", "--propagation", "private", "--", "bash", "-c"]
    argv += [
        ocs_client.wrapper(writable=True),
        "ocs-run",
        str(saved),
        str(conf),
        str(logs),
        *ocs_sr,
    ]
    catcher = probes.tcp_listen(procs, host, REPORT_PORT, timeout=OCS_TIMEOUT)
    made: list[Path] = []
    with ocs_client.loop_device(procs, host.netns, lab.disk, disk):
        try:
            fixture_image.partition_nodes(lab.disk, made)
            done = procs.run(
                argv,
                netns=host.netns,
                timeout=OCS_TIMEOUT,
                name="ocs-sr-savedisk",
                env={"PATH": probes.PROBE_PATH, "LC_ALL": "C", "TERM": "dumb"},
            )
        finally:
            for node in made:
                node.unlink(missing_ok=True)
    log = (
        (logs / "clonezilla.log").read_text(errors="replace")[-3000:]
        if (logs / "clonezilla.log").exists()
        else ""
    )
    assert done.ok, f"ocs-sr savedisk exited {done.returncode}: {done.text[-3000:]}\n{log}"
    messages = catcher.messages()
    assert len(messages) == 1, f"ocs-sr sent {len(messages)} reports: {done.text[-2000:]}"
    return saved, messages[0].payload.strip()
