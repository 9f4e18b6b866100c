"""Imaging from simulated PCs against real programs, in namespaces of the test's own.

The server namespace runs nfs-ganesha (through LabServices) exporting a copy of the real
Clonezilla image (tests/fixtures/clonezilla.py), a listener on port 6461, and the TEST's
own multicast feed, built as DRBL's ocs-functions builds it (FIELD_NOTES): per partition,
in `parts` order, its chunks concatenated unmodified into `udp-sender --interface e0
--nokbd --mcast-all-addr 224.0.0.1 --portbase PORT --ttl 1`, the port 2 more for each
next partition. The PCs restore with the lab's client (reconciler.lab.imaging) or with
Clonezilla's own ocs-sr (reconciler.lab.ocs_client).

What a restored disk must be is worked out without the code under test: the fixture's
own constants say where its partitions are and which files they hold; the source disk
file was written by mkfs itself; the report lines are spelled out as DRBL builds them
(the 'Space in use' values are those Clonezilla's own report gives for this image).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from reconciler import deployment_report
from reconciler.desired import Firmware
from reconciler.lab import imaging, labsite, menus, ocs_client, pcsteps, probes
from reconciler.lab.netns import Host, NicSpec, VirtualNetwork
from reconciler.lab.ocs_job import REPORT_PORT, Job, parse_job, report_line
from reconciler.lab.procs import Proc, ProcessRegistry
from reconciler.lab.report import StepResult
from reconciler.lab.services import LabServices
from reconciler.layout import Layout
from reconciler.rendered import Service
from tests.fixtures import clonezilla
from tests.fixtures.clonezilla import ClonezillaImage

pytestmark = [pytest.mark.integration, pytest.mark.netns, pytest.mark.slow]

RequirePrograms = Callable[..., None]

SERVER = IPv4Address("192.168.100.1")
PCS = {"pc1": "192.168.100.11", "pc2": "192.168.100.12"}
PORT = 2240
IMAGE = clonezilla.IMAGE_NAME
PROGRAMS = (
    "udp-sender", "udp-receiver", "partclone.vfat", "partclone.ntfs", "gzip", "sfdisk",
    "nfs-ls", "nfs-cat", "mtype", "ntfscat", "rpcbind", "ganesha.nfsd", "rpcinfo",
)  # fmt: skip

# What partclone says of the fixture's streams ("Space in use"), as Clonezilla's own
# multicast restore of this image reported it to port 6461.
SPACE = ("600.1 KB = 1172 Blocks", "5.6 MB = 1370 Blocks")
MINUTES = r"(?:0|[0-9]*\.[0-9]{3})"

FEED = """set -eu
dir=$1 port=$2 receivers=$3 wait=$4
shift 4
for part in "$@"; do
  cat "$dir/$part".*-ptcl-img.* | udp-sender --interface e0 --nokbd \\
    --mcast-all-addr 224.0.0.1 --portbase "$port" --min-receivers "$receivers" \\
    --max-wait "$wait" --start-timeout 120 --ttl 1
  port=$((port + 2))
done
"""


def menu_job(mode: str, disk: str) -> str:
    """`ocs_live_run` as the reconciler's armed menus write it (tests/cases/render)."""
    head = "ocs-sr -l en_US.UTF-8 -batch -g auto -e1 auto -e2 -r -j2 -p reboot"
    if mode == "multicast":
        return f"{head} --mcast-port {PORT} multicast_restoredisk {IMAGE} {disk}"
    return f"{head} restoredisk {IMAGE} {disk}"


@dataclass
class Lab:
    net: VirtualNetwork
    server: Host
    pcs: dict[str, Host]
    images_root: Path
    reference: Path
    base: Path

    @property
    def image_dir(self) -> Path:
        return self.images_root / IMAGE


@pytest.fixture
def lab(
    vnet: VirtualNetwork,
    readable_dir: Path,
    clonezilla_image: ClonezillaImage,
    require_programs: RequirePrograms,
) -> Iterator[Lab]:
    """The server (NFS export of a world-readable copy of the image, as root-squashed NFS
    needs) and two PCs; the reference restored in the server's namespace, no network."""
    require_programs(*PROGRAMS)
    vnet.add_switch()
    server = vnet.add_host("srv", nics=[NicSpec(address=f"{SERVER}/24")])
    pcs = {name: vnet.add_host(name, nics=[NicSpec(address=f"{a}/24")]) for name, a in PCS.items()}
    images_root = readable_dir / "partimag"
    clonezilla.copy_image(clonezilla_image, images_root)
    for path in images_root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    layout = Layout(ganesha_conf=str(readable_dir / "ganesha-kitting.conf"))
    Path(layout.ganesha_conf).write_text(
        "NFS_CORE_PARAM {\n    MNT_Port = 20048;\n    Protocols = 3, 4;\n"
        "    Enable_NLM = false;\n    Enable_RQUOTA = false;\n}\n"
        f'EXPORT {{\n    Export_Id = 1;\n    Path = "{images_root}";\n'
        f'    Pseudo = "{images_root}";\n    Protocols = 3, 4;\n    Access_Type = None;\n'
        "    Squash = root_squash;\n    FSAL {\n        Name = VFS;\n    }\n"
        "    CLIENT {\n        Clients = 192.168.100.0/24;\n        Access_Type = RO;\n"
        "    }\n}\n"
    )
    services = LabServices(vnet.procs, server.netns, layout, readable_dir / "private")
    services.restart(Service.nfs_ganesha)
    reference = readable_dir / "reference.img"
    imaging.restore_local(vnet.procs, server.netns, images_root / IMAGE, reference)
    yield Lab(vnet, server, pcs, images_root, reference, readable_dir)
    services.stop_all()


def start_feed(lab: Lab, image: ClonezillaImage, *, receivers: int, wait: int) -> Proc:
    argv = ["bash", "-c", FEED, "feed", str(lab.image_dir), str(PORT), str(receivers), str(wait)]
    return lab.net.procs.start([*argv, *image.parts], netns=lab.server.netns, name="feed")


def expected_files() -> dict[int, dict[str, bytes]]:
    return {1: dict(clonezilla.ESP_FILES), 2: clonezilla.data_files()}


def expected_line(name: str, host: Host, opening: str, disk: str) -> re.Pattern[str]:
    """The report, field by field as DRBL writes it; only the minutes vary."""
    parts = [
        re.escape(f" /dev/{disk}p{number}, success, {space}, ") + MINUTES + " mins;"
        for number, space in ((1, SPACE[0]), (2, SPACE[1]))
    ]
    head = re.escape(f"{PCS[name]} {host.mac} {opening} {IMAGE},")
    return re.compile(head + "".join(parts))


@dataclass(frozen=True)
class Played:
    restore: imaging.DiskRestore
    verified: imaging.Verified
    line: str


def play(lab: Lab, name: str, job: Job, disk: Path) -> Played:
    """One PC: metadata over NFS, restore, verification, report (its own registry: the
    PCs run in threads)."""
    host = lab.pcs[name]
    with ProcessRegistry(lab.base / "logs" / name) as procs:
        image, _ = imaging.read_image_nfs(procs, host, SERVER, str(lab.images_root), job.image)
        if job.mode == "multicast":
            restored = imaging.restore_multicast(procs, host, image, job, disk)
        else:
            restored = imaging.restore_unicast(
                procs, host, image, job, disk, server=SERVER, images_root=str(lab.images_root)
            )
        assert restored.ok, restored.problems()
        verified = imaging.verify(
            procs,
            host.netns,
            disk,
            image=image,
            reference=lab.reference,
            expected_files=expected_files(),
        )
        address = host.address
        assert address is not None
        line = report_line(address, host.mac, job.mode, image.name, restored.partitions)
        imaging.send_report(procs, host, SERVER, line)
    return Played(restored, verified, line)


MENU = """DEFAULT kitting-job
LABEL kitting-job
  KERNEL clonezilla/vmlinuz
  APPEND boot=live ocs_server=192.168.100.1 ocs_live_run="{job}" ocs_live_batch=yes
LABEL local
  LOCALBOOT 0
"""


def play_steps(
    lab: Lab, name: str, ocs_live_run: str, *, clonezilla: bool = False
) -> tuple[tuple[StepResult, ...], pcsteps.PcSession]:
    """One PC through the imaging steps of an armed PC (pcsteps), from its menu on."""
    host = lab.pcs[name]
    pc = labsite.LabPc(
        node=name,
        hostname=f"sales-{name}",
        department="sales",
        firmware=Firmware.bios,
        macs=(host.mac,),
        fixed_ip=host.address,
        arches=(probes.ARCH_BIOS,),
    )
    setup = pcsteps.ImagingBench(
        reference=lab.reference,
        expected_files=expected_files(),
        clonezilla_clients=frozenset({pc.hostname} if clonezilla else ()),
    )
    bench = pcsteps.Bench(
        net=lab.net,
        server=SERVER,
        tftp_root=lab.base,
        images_root=lab.images_root,
        image=IMAGE,
        image_files={},
        imaging=setup,
    )
    with ProcessRegistry(lab.base / "logs" / name) as procs:
        menu = menus.pxelinux(MENU.format(job=ocs_live_run))
        session = pcsteps.PcSession(pc, host, procs, menu_file="pxelinux.cfg/01-x", menu=menu)
        results = pcsteps.play(bench, session, pcsteps.IMAGING_STEPS, lambda step: None)
    return results, session


def differing_sectors(a: Path, b: Path, first: int, count: int) -> list[int]:
    """Sectors (disk numbers) in [first, first + count) whose bytes differ in a and b."""
    found = []
    with open(a, "rb") as one, open(b, "rb") as two:
        one.seek(first * 512)
        two.seek(first * 512)
        for sector in range(first, first + count):
            if one.read(512) != two.read(512):
                found.append(sector)
    return found


def assert_source_content(disk: Path, image: ClonezillaImage) -> None:
    """Against the disk mkfs wrote, at the fixture's own partition places: the EFI
    partition is identical, and so is the NTFS one but for its last sector, NTFS's backup
    boot sector, which lies outside the volume and is not in partclone's stream."""
    source = image.source_disk
    esp = differing_sectors(disk, source, clonezilla.ESP_FIRST, clonezilla.ESP_SECTORS)
    data_count = clonezilla.DATA_LAST - clonezilla.DATA_FIRST + 1
    data = differing_sectors(disk, source, clonezilla.DATA_FIRST, data_count)
    assert (esp, data) == ([], [clonezilla.DATA_LAST])


def assert_tampering_is_seen(lab: Lab, restored: Path) -> None:
    """The verifier can fail: one byte changed inside noise.bin on the NTFS partition."""
    broken = lab.base / "tampered.img"
    shutil.copyfile(restored, broken)
    image = imaging.read_image_dir(lab.image_dir)
    with ProcessRegistry(lab.base / "logs" / "tamper") as procs:
        at = broken.read_bytes().index(clonezilla.noise()[:64]) + 1000
        with open(broken, "r+b") as disk:
            disk.seek(at)
            flipped = disk.read(1)[0] ^ 0xFF
            disk.seek(at)
            disk.write(bytes([flipped]))
        with pytest.raises(imaging.ImagingError) as raised:
            imaging.verify(
                procs,
                lab.server.netns,
                broken,
                image=image,
                reference=lab.reference,
                expected_files=expected_files(),
            )
    assert str(raised.value) == (
        f"differs from the reference at byte {at} (sector {at // 512}); "
        f"partition 2: noise.bin: {clonezilla.NOISE_BYTES} bytes that differ, "
        f"expected {clonezilla.NOISE_BYTES}"
    )


def test_two_pcs_restore_from_one_multicast_feed_then_one_over_nfs(
    lab: Lab, clonezilla_image: ClonezillaImage
) -> None:
    disk = clonezilla_image.disk
    listener = probes.tcp_listen(lab.net.procs, lab.server, REPORT_PORT, count=3, timeout=60)
    feed = start_feed(lab, clonezilla_image, receivers=2, wait=20)
    job = parse_job(menu_job("multicast", disk))
    assert (job.mode, job.image, job.disk, job.mcast_port) == ("multicast", IMAGE, disk, PORT)

    # pc1 through the imaging API, pc2 through the steps of an armed PC
    with ThreadPoolExecutor(max_workers=2) as pool:
        pc1_future = pool.submit(play, lab, "pc1", job, lab.base / "pc1-multicast.img")
        pc2_future = pool.submit(play_steps, lab, "pc2", menu_job("multicast", disk))
        multicast, (steps, session) = pc1_future.result(), pc2_future.result()
    assert feed.wait(30) == 0, feed.output()
    assert feed.output().count("Transfer complete.") == 2

    unicast = play(lab, "pc1", parse_job(menu_job("unicast", disk)), lab.base / "pc1-nfs.img")

    chunks = [p for p in lab.image_dir.iterdir() if "-ptcl-img." in p.name]
    wire_bytes = sum(p.stat().st_size for p in chunks)
    verified = (
        f"table as in the image, {64 * 1024 * 1024} bytes equal to the reference, "
        "4 known files read back"
    )
    for result in (multicast, unicast):
        assert result.restore.stream_bytes == wire_bytes
        assert [p.device for p in result.restore.partitions] == [
            f"/dev/{disk}p1",
            f"/dev/{disk}p2",
        ]
        assert result.verified.detail == verified
    assert [(step.name, step.ok) for step in steps] == [
        (name, True) for name in ("job", "image", "restore", "verify", "report")
    ], steps
    assert steps[0].detail == f"multicast restore of {IMAGE} to {disk}, port {PORT}"
    assert (steps[2].bytes, steps[3].detail) == (wire_bytes, verified)
    assert session.disk is not None
    for path in (lab.base / "pc1-multicast.img", session.disk, lab.base / "pc1-nfs.img"):
        assert_source_content(path, clonezilla_image)
    assert_tampering_is_seen(lab, session.disk)

    received = sorted(m.payload for m in listener.messages())
    expected = [
        expected_line("pc1", lab.pcs["pc1"], "Multicast restored", disk),
        expected_line("pc1", lab.pcs["pc1"], "Unicast restored", disk),
        expected_line("pc2", lab.pcs["pc2"], "Multicast restored", disk),
    ]
    assert len(received) == 3
    for payload, pattern in zip(received, expected, strict=True):
        assert pattern.fullmatch(payload.rstrip("\n")), (payload, pattern.pattern)
    sent = sorted(line + "\n" for line in (multicast.line, unicast.line, steps[4].detail))
    assert received == sent
    for payload in received:
        parsed = deployment_report.parse(payload)
        assert parsed.outcome is deployment_report.ReportOutcome.succeeded


def test_clonezilla_own_client_and_the_lab_client_share_one_feed(
    lab: Lab, clonezilla_image: ClonezillaImage, require_programs: RequirePrograms
) -> None:
    require_programs("ocs-sr", "parted", "losetup", "unshare")
    disk = clonezilla_image.disk
    holder = ocs_client.backing_file(disk)
    if holder is not None:
        reason = f"/dev/{disk}, the image's disk name, is in use (by {holder})"
        if os.environ.get("KITTING_REQUIRE_INTEGRATION") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    listener = probes.tcp_listen(lab.net.procs, lab.server, REPORT_PORT, count=2, timeout=200)
    # ocs-sr takes about 12 s to its first udp-receiver: the feed waits for both PCs.
    feed = start_feed(lab, clonezilla_image, receivers=2, wait=90)
    job = parse_job(menu_job("multicast", disk))

    with ThreadPoolExecutor(max_workers=2) as pool:
        ocs_future = pool.submit(
            play_steps, lab, "pc1", menu_job("multicast", disk), clonezilla=True
        )
        lab_future = pool.submit(play, lab, "pc2", job, lab.base / "pc2.img")
        (steps, session), played = ocs_future.result(), lab_future.result()
    assert feed.wait(30) == 0, feed.output()
    assert [(step.name, step.ok) for step in steps] == [
        (name, True) for name in ("job", "image", "restore", "verify", "report")
    ], steps
    assert steps[2].detail.startswith(f"ocs-sr multicast restore of {IMAGE} to {disk}, port")
    assert "equal to the reference" in steps[3].detail
    assert steps[4].detail == "sent by ocs-sr itself"
    assert ocs_client.backing_file(disk) is None  # detached again
    assert session.disk is not None and session.clonezilla is not None
    assert_source_content(session.disk, clonezilla_image)
    assert (session.clonezilla.logs / "clonezilla.log").is_file()  # not the machine's /var/log

    by_source = {str(m.source): m.payload.rstrip("\n") for m in listener.messages()}
    assert set(by_source) == set(PCS.values())
    ocs_line, lab_line = by_source[PCS["pc1"]], by_source[PCS["pc2"]]
    assert lab_line == played.line
    assert expected_line("pc1", lab.pcs["pc1"], "Multicast restored", disk).fullmatch(ocs_line)
    assert expected_line("pc2", lab.pcs["pc2"], "Multicast restored", disk).fullmatch(lab_line)
    # The lab's line is Clonezilla's but for the PC's address, MAC and minutes.
    strip = re.compile(MINUTES + " mins")
    assert strip.sub("", ocs_line.split(" ", 2)[2]) == strip.sub("", lab_line.split(" ", 2)[2])
