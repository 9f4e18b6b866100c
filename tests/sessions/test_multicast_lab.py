"""A real multicast restore through the controller, in network namespaces.

The controller (sandbox root, real image inventory with checksum verification, the real
session runner and report listener, both inside the server namespace) serves a batch of
two PCs with the real Clonezilla image of tests/fixtures/clonezilla.py. Each PC namespace
does what Clonezilla live's `ocs-sr multicast_restoredisk` does per partition, in `parts`
order (port 2232, then 2234): `udp-receiver | gzip -dc | partclone.<fs> -r`, into a zeroed
file of the partition's size. Then the real `ocs-socket` sends the job report to port 6461.

Checked: both PCs' partitions equal the same restore done locally from the image files, and
the source disk's partitions (the FAT one byte for byte; the NTFS one but its last sector:
NTFS keeps a backup boot sector there, beyond its last cluster, which partclone does not
copy); the sender saw both receivers; each report turns its PC succeeded and withdraws its
entries in that very pass; the batch finishes and its history records what was streamed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.clock import SystemClock
from reconciler.controller import Controller
from reconciler.deploy_shell import DeployShell, load_state
from reconciler.lab import netns
from reconciler.lab.kitting_day import listen_in
from reconciler.lab.procs import netns_argv
from reconciler.layout import Layout
from reconciler.sessions import SessionRunner
from reconciler.settings import Settings
from tests.conftest import RequirePrograms
from tests.controller.siterepo import SiteRepo, events
from tests.fixtures import clonezilla

pytestmark = [pytest.mark.integration, pytest.mark.netns, pytest.mark.slow]

SERVER = "192.168.100.1"
PCS = {
    "pc1": ("lab-pc01", "02:4b:00:00:00:11", "192.168.100.11"),
    "pc2": ("lab-pc02", "02:4b:00:00:00:12", "192.168.100.12"),
}
SECTOR = 512
STEP_TIMEOUT = 40.0


def site_files(image: clonezilla.ClonezillaImage, start: datetime, end: datetime) -> dict[str, str]:
    pcs = "".join(
        f'  - hostname: {host}\n    macs: ["{mac}"]\n    ip: {ip}\n'
        for host, mac, ip in PCS.values()
    )
    return {
        "site.yaml": (
            "kind: Site\nname: lab\ntimezone: UTC\n"
            f"server: {{hostname: kit01, interface: e0, address: {SERVER}}}\n"
            "network:\n  subnet: 192.168.100.0/24\n"
            "  dhcp: {pool: {start: 192.168.100.100, end: 192.168.100.150}}\n"
        ),
        "images.yaml": (
            f"kind: Image\nname: {image.name}\nfirmware: uefi\n"
            f"disk: {{device: {image.disk}}}\nintegrity: {{source: clonezilla}}\n"
        ),
        "lab.yaml": f"kind: Department\nname: lab\npcs:\n{pcs}",
        "batch.yaml": (
            f"kind: Batch\nname: lab-restore\nimage: {image.name}\n"
            "targets: {departments: [lab]}\nmode: multicast\n"
            f"window: {{start: '{start.isoformat()}', end: '{end.isoformat()}'}}\n"
            "clients_to_wait: 2\nmax_wait: 20s\nstart_timeout: 60s\n"
        ),
    }


def partitions(image: clonezilla.ClonezillaImage) -> list[tuple[str, str, int, int]]:
    """(name, file system, first sector, sectors) in parts order, from the sfdisk dump."""
    table = (image.image_dir / f"{image.disk}-pt.sf").read_text()
    found = []
    for name in image.parts:
        line = next(row for row in table.splitlines() if row.startswith(f"/dev/{name} "))
        fields = dict(item.strip().split("=", 1) for item in line.split(":", 1)[1].split(",")[:2])
        stream = next(image.image_dir.glob(f"{name}.*-ptcl-img.gz.aa")).name
        filesystem = stream.split(".")[1].split("-")[0]
        found.append((name, filesystem, int(fields["start"]), int(fields["size"])))
    return found


def restore(
    argv_prefix: list[str], chunks: list[Path] | None, port: int, filesystem: str, target: Path
) -> tuple[int, str]:
    """`udp-receiver | gzip -dc | partclone -r` (or `cat chunks | ...` locally), as
    processes joined by pipes, no shell. Returns partclone's status and the pipeline's words."""
    if chunks is None:
        source = [*argv_prefix, "udp-receiver", "--interface", "e0", "--nokbd",
                  "--mcast-all-addr", "224.0.0.1", "--portbase", str(port)]  # fmt: skip
    else:
        source = ["cat", *map(str, chunks)]
    with contextlib.ExitStack() as stack:
        log = stack.enter_context((target.parent / f"{target.name}.log").open("wb"))
        first = subprocess.Popen(source, stdout=subprocess.PIPE, stderr=log)
        stack.callback(first.kill)
        gunzip = subprocess.Popen(["gzip", "-dc"], stdin=first.stdout, stdout=subprocess.PIPE)
        stack.callback(gunzip.kill)
        assert first.stdout is not None and gunzip.stdout is not None
        first.stdout.close()
        clone = subprocess.Popen(
            [f"partclone.{filesystem}", "-r", "-s", "-", "-O", str(target)],
            stdin=gunzip.stdout,
            stdout=log,
            stderr=log,
        )
        stack.callback(clone.kill)
        gunzip.stdout.close()
        code = clone.wait(timeout=STEP_TIMEOUT)
        gunzip.wait(timeout=STEP_TIMEOUT)
        first.wait(timeout=STEP_TIMEOUT)
    return code, (target.parent / f"{target.name}.log").read_text(errors="replace")


def zeroed(path: Path, size: int) -> Path:
    with path.open("wb") as handle:
        handle.truncate(size)
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def controller_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "root"
    root.mkdir()
    yield root


def test_two_pcs_restore_the_real_image_by_multicast_and_report(
    vnet: netns.VirtualNetwork,
    clonezilla_image: clonezilla.ClonezillaImage,
    controller_root: Path,
    tmp_path: Path,
    require_programs: RequirePrograms,
) -> None:
    require_programs("udp-sender", "udp-receiver", "gzip", "partclone.vfat", "partclone.ntfs")
    require_programs("ocs-socket", "git", "dnsmasq", "nft")
    began = time.monotonic()
    image = clonezilla_image
    root = controller_root
    clonezilla.copy_image(image, root / "home" / "partimag")
    live = root / "srv" / "tftp" / "clonezilla"
    live.mkdir(parents=True)
    for name in ("vmlinuz", "initrd.img", "filesystem.squashfs"):
        (live / name).write_bytes(b"stand-in for Clonezilla live\n")

    vnet.add_switch()
    server = vnet.add_host("srv", nics=[netns.NicSpec(address=f"{SERVER}/24")])
    hosts = {
        node: vnet.add_host(node, nics=[netns.NicSpec(mac=mac, address=f"{ip}/24")])
        for node, (_, mac, ip) in PCS.items()
    }

    now = datetime.now(UTC).replace(microsecond=0)
    repo = SiteRepo(tmp_path / "site", seed=None)
    for name, text in site_files(
        image, now - timedelta(minutes=1), now + timedelta(minutes=15)
    ).items():
        repo.write(name, text)
    repo.commit("lab batch")

    clock = SystemClock()
    layout = Layout()
    runner = SessionRunner(
        root / "var/lib/kitting/sessions",
        root=str(root),
        clock=clock,
        wrap=lambda argv: netns_argv(server.netns, argv),
    )
    shell = DeployShell(str(root), layout, clock, sessions=runner, listen=listen_in(server.netns))
    settings = Settings(source=str(repo.path), root=str(root), services="none")
    ctl = Controller(settings, clock=clock, deployments=shell)
    try:
        # the commit is applied and, its window being open, the batch armed and its session
        # started (its image verified against Clonezilla's checksum files first)
        ctl.pass_once()
        (record,) = load_state(str(root), layout).batches.values()
        assert record.phase.value == "armed", (record.reason, record.message)
        entries = sorted(p.name for p in (root / "srv/tftp/pxelinux.cfg").glob("01-*"))
        assert entries == ["01-02-4b-00-00-00-11", "01-02-4b-00-00-00-12"]

        parts = partitions(image)
        results: dict[str, list[tuple[int, str]]] = {node: [] for node in PCS}

        def pc(node: str) -> None:
            for index, (name, filesystem, _, sectors) in enumerate(parts):
                target = zeroed(tmp_path / f"{node}-{name}.img", sectors * SECTOR)
                prefix = ["ip", "netns", "exec", hosts[node].netns]
                results[node].append(restore(prefix, None, 2232 + 2 * index, filesystem, target))

        threads = [threading.Thread(target=pc, args=(node,), daemon=True) for node in PCS]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=STEP_TIMEOUT)
        assert not any(thread.is_alive() for thread in threads), "a receiver hangs"
        for node in PCS:
            assert [code for code, _ in results[node]] == [0, 0], results[node]

        # The same partitions restored locally from the image files, and the source disk.
        source = image.source_disk.read_bytes()
        for name, filesystem, first, sectors in parts:
            chunks = sorted(image.image_dir.glob(f"{name}.{filesystem}-ptcl-img.gz.*"))
            reference = zeroed(tmp_path / f"local-{name}.img", sectors * SECTOR)
            code, words = restore([], chunks, 0, filesystem, reference)
            assert code == 0, words
            original = source[first * SECTOR : (first + sectors) * SECTOR]
            expected = reference.read_bytes()
            for node in PCS:
                restored = (tmp_path / f"{node}-{name}.img").read_bytes()
                assert sha256(restored) == sha256(expected), f"{node} {name}"
                if filesystem == "ntfs":  # but its backup boot sector, see the docstring
                    assert sha256(restored[:-SECTOR]) == sha256(original[:-SECTOR])
                else:
                    assert sha256(restored) == sha256(original)

        # The sender's receivers reach the state: both PCs are imaging.
        ctl.pass_once("deployment", converge=True)
        (record,) = load_state(str(root), layout).batches.values()
        assert {host: pc.phase.value for host, pc in record.pcs.items()} == {
            "lab-pc01": "imaging",
            "lab-pc02": "imaging",
        }
        assert (root / "srv/tftp/pxelinux.cfg").is_dir()
        assert list((root / "srv/tftp/pxelinux.cfg").glob("01-*")) == []  # withdrawn on join

        # Each PC reports with Clonezilla's own client; each report finishes its PC.
        for node, (host, mac, ip) in PCS.items():
            line = (
                f"{ip} {mac} Multicast restored {image.name}, /dev/{image.parts[0]}, success, "
                f"37 MB, .010 mins, 3700.0 MB/min; /dev/{image.parts[1]}, success, 28 MB, "
                ".010 mins, 2800.0 MB/min;"
            )
            sent = vnet.procs.run(
                ["ocs-socket", "-m", line, "-h", SERVER, "-p", "6461"],
                netns=hosts[node].netns,
                timeout=10,
            )
            assert sent.ok, sent.text
            deadline = time.monotonic() + 5
            while not shell.has_news() and time.monotonic() < deadline:
                time.sleep(0.02)
            ctl.pass_once("report", converge=True)
            (record,) = load_state(str(root), layout).batches.values()
            assert record.pcs[host].phase.value == "succeeded"
            assert record.pcs[host].reason == "ReportedSuccess"

        # Every PC done: the batch finishes once the (already ended) sender is gone.
        for _ in range(50):
            ctl.pass_once("deployment", converge=True)
            (record,) = load_state(str(root), layout).batches.values()
            if events(root, "deployment_recorded"):
                break
            time.sleep(0.1)
        assert (record.phase.value, record.outcome and record.outcome.value) == (
            "finished",
            "succeeded",
        )
        history = (root / f"home/partimag/logs/deployment-{record.key}.json").read_text()
        body = json.loads(history)
        streamed = [
            (p["partition"], p["portbase"], p["bytes"], p["receivers"], p["transferred"])
            for p in body["session"]["partitions"]
        ]
        sizes = [
            sum(f.stat().st_size for f in image.image_dir.glob(f"{name}.*-ptcl-img.gz.*"))
            for name in image.parts
        ]
        both = ["192.168.100.11", "192.168.100.12"]
        assert streamed == [
            (image.parts[0], 2232, sizes[0], both, True),
            (image.parts[1], 2234, sizes[1], both, True),
        ]
        assert body["pcs"]["lab-pc01"]["bytes"] == sum(sizes)
    finally:
        shell.close()
    assert time.monotonic() - began < 60
