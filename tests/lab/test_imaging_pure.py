"""The imaging's pure parts: the job of a menu, an image's metadata, command lines, the
job report. No root needed; expected values are written out by hand (the report's
numbers as DRBL's shell and bc compute them)."""

from __future__ import annotations

import subprocess
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from reconciler import deployment_report
from reconciler.images import Compression
from reconciler.lab import imaging, labsite, menus, ocs_client, pcsteps
from reconciler.lab.ocs_image import (
    Image,
    ImageError,
    Stream,
    TableEntry,
    disk_sectors,
    image_from,
    parse_disk,
    parse_parts,
    parse_sfdisk,
    partition_device,
    partition_number,
    streams_of,
    table_differences,
    table_script,
    targets,
)
from reconciler.lab.ocs_job import (
    Job,
    JobError,
    PartitionRestore,
    minutes_text,
    parse_job,
    report_line,
    space_in_use,
)

GOLDEN = Path(__file__).parents[1] / "cases" / "render" / "armed"

# The fixture image's table as Clonezilla saved it (loop0-pt.sf).
PT_SF = """label: gpt
label-id: 4B495454-494E-4700-8000-000000000001
device: /dev/loop0
unit: sectors
first-lba: 34
last-lba: 131038
sector-size: 512

/dev/loop0p1 : start=        2048, size=       73728, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=4B495454-494E-4700-8000-000000000011, name="EFI"
/dev/loop0p2 : start=       75776, size=       55263, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, uuid=4B495454-494E-4700-8000-000000000012, name="DATA"
"""
# The same table as `sfdisk -d` prints it for a disk file.
DUMPED = PT_SF.replace("/dev/loop0p", "/var/tmp/pc1.img").replace("/dev/loop0", "/var/tmp/pc1.img")
FILES = {
    "disk": 6,
    "parts": 16,
    "loop0-pt.sf": 443,
    "loop0-pt.parted": 380,
    "loop0p1.vfat-ptcl-img.gz.aa": 3329,
    "loop0p2.ntfs-ptcl-img.gz.ab": 1_000_000,
    "loop0p2.ntfs-ptcl-img.gz.aa": 1_000_000,
    "loop0p2.ntfs-ptcl-img.gz.ac": 131_838,
    "clonezilla-img": 5548,
    "MD5SUMS": 920,
}
PARTED = "Model: Loopback device (loopback)\nDisk /dev/loop0: 131072s\nSector size: 512B\n"


def fixture_image() -> Image:
    return image_from(
        "kitting-fixture",
        FILES,
        disk_text="loop0\n",
        parts_text="loop0p1 loop0p2\n",
        table_text=PT_SF,
        parted_text=PARTED,
    )


# ---------------------------------------------------------------- the job


def test_the_job_of_the_rendered_multicast_menu() -> None:
    menu = menus.pxelinux(
        (GOLDEN / "multicast-restore/srv/tftp/pxelinux.cfg/01-aa-bb-cc-00-01-02").read_text()
    )
    assert menu.ocs_live_run is not None
    job = parse_job(menu.ocs_live_run)
    assert (job.mode, job.image, job.disk, job.mcast_port) == (
        "multicast",
        "win11-sales-2025",
        "nvme0n1",
        2232,
    )
    assert job.options[:4] == ("-l", "en_US.UTF-8", "-batch", "-g")
    assert job.describe() == "multicast restore of win11-sales-2025 to nvme0n1, port 2232"


def test_the_job_of_the_rendered_unicast_grub_menu() -> None:
    menu = menus.grub(
        (GOLDEN / "unicast-restore/srv/tftp/grub/grub.cfg-01-aa-bb-cc-00-03-01").read_text()
    )
    assert menu.ocs_live_run is not None
    job = parse_job(menu.ocs_live_run)
    assert (job.mode, job.image, job.disk) == ("unicast", "win11-sales-2025", "sda")
    assert job.describe() == "unicast restore of win11-sales-2025 to sda"


@pytest.mark.parametrize(
    ("line", "port"),
    [
        ("ocs-sr -batch multicast_restoredisk img sda", 2232),  # DRBL's MULTICAST_PORT
        ("ocs-sr --mcast-port 3000 -batch --mcast-port 4000 multicast_restoredisk img sda", 4000),
        ("/usr/sbin/ocs-sr --mcast-port 2240 multicast_restoredisk img loop0", 2240),
    ],
)
def test_the_multicast_port_is_the_last_named_or_drbls_default(line: str, port: int) -> None:
    assert parse_job(line).mcast_port == port


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("", "does not run ocs-sr"),
        ("drbl-ocs -b startdisk multicast_restore img sda", "does not run ocs-sr"),
        ("ocs-sr -q2 -batch savedisk img sda", "savedisk: the lab plays restoredisk"),
        ("ocs-sr -batch restoredisk img sda sdb", "restoredisk: the lab restores one disk"),
        ("ocs-sr -batch restoredisk ../etc sda", "not a valid image name"),
        ("ocs-sr -batch restoredisk img sda1", "not a whole-disk device name"),
        ("ocs-sr -batch restoredisk 'img sda", "not a readable command line"),
        ("ocs-sr --mcast-port 65535 multicast_restoredisk img sda", "1-65534"),
        ("ocs-sr --mcast-port x multicast_restoredisk img sda", "1-65534"),
        ("ocs-sr multicast_restoredisk img", "ends with MODE IMAGE DISK"),
        ("ocs-sr -batch -p reboot img sda", "no restore mode"),
    ],
)
def test_jobs_the_lab_does_not_play_are_refused(line: str, words: str) -> None:
    with pytest.raises(JobError, match=words.replace("(", r"\(")):
        parse_job(line)


# ---------------------------------------------------------------- the partition table


def test_clonezillas_table_dump_is_read_by_partition_number() -> None:
    table = parse_sfdisk(PT_SF)
    assert (table.label, table.label_id, table.first_lba, table.last_lba, table.sector_size) == (
        "gpt",
        "4B495454-494E-4700-8000-000000000001",
        34,
        131038,
        512,
    )
    assert table.entries == (
        TableEntry(
            1, 2048, 73728, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            "4B495454-494E-4700-8000-000000000011", "EFI",
        ),
        TableEntry(
            2, 75776, 55263, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
            "4B495454-494E-4700-8000-000000000012", "DATA",
        ),
    )  # fmt: skip


def test_a_dos_dump_with_a_boot_flag_and_a_quoted_comma() -> None:
    text = (
        "label: dos\nlabel-id: 0x1234abcd\ndevice: /dev/sda\nunit: sectors\n\n"
        "/dev/sda2 : start=4096, size=8192, type=83\n"
        '/dev/sda1 : start=2048, size=2048, type=7, bootable, name="a, b"\n'
    )
    table = parse_sfdisk(text)
    assert [(e.number, e.start, e.type, e.bootable, e.name) for e in table.entries] == [
        (1, 2048, "7", True, "a, b"),
        (2, 4096, "83", False, None),
    ]
    assert (table.first_lba, table.last_lba, table.sector_size) == (None, None, 512)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("unit: sectors\n", "names no label"),
        ("label: gpt\nunit: cylinders\n", "only sectors"),
        ("label: gpt\n/dev/sda : start=1, size=2\n", "ends with no number"),
        ("label: gpt\n/dev/sda1 : size=2\n", "no usable start and size"),
        ("label: gpt\n/dev/sda1 : start=1, size=2\n/dev/sdb1 : start=3, size=4\n", "twice"),
        ("label: gpt\nwhat is this\n", "not an sfdisk dump line"),
    ],
)
def test_broken_dumps_are_refused(text: str, words: str) -> None:
    with pytest.raises(ImageError, match=words):
        parse_sfdisk(text)


def test_tables_compare_without_device_names_and_name_each_difference() -> None:
    assert table_differences(parse_sfdisk(PT_SF), parse_sfdisk(DUMPED)) == []
    lower = DUMPED.replace(
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
    )
    assert table_differences(parse_sfdisk(PT_SF), parse_sfdisk(lower)) == []
    changed = DUMPED.replace("size=       55263", "size=       55000").replace(
        'name="EFI"', 'name="ESP"'
    )
    assert table_differences(parse_sfdisk(PT_SF), parse_sfdisk(changed)) == [
        "partition 1: name 'ESP', the image has 'EFI'",
        "partition 2: size 55000, the image has 55263",
    ]
    one = "\n".join(line for line in DUMPED.splitlines() if "img2 :" not in line)
    assert table_differences(parse_sfdisk(PT_SF), parse_sfdisk(one)) == [
        "partitions [1], the image has [1, 2]"
    ]


def test_the_table_is_written_without_last_lba_as_ocs_sr_does() -> None:
    script = table_script(PT_SF)
    assert "last-lba" not in script
    assert script.count("\n") == PT_SF.count("\n") - 1
    assert "first-lba: 34\nsector-size: 512\n" in script


# ---------------------------------------------------------------- the image


def test_the_fixture_image_read_from_its_files() -> None:
    image = fixture_image()
    assert (image.disk, image.parts, image.disk_sectors, image.disk_bytes) == (
        "loop0",
        ("loop0p1", "loop0p2"),
        131072,
        64 * 1024 * 1024,
    )
    assert image.streams == (
        Stream("loop0p1", "vfat", Compression.gz, ("loop0p1.vfat-ptcl-img.gz.aa",)),
        Stream(
            "loop0p2",
            "ntfs",
            Compression.gz,
            tuple(f"loop0p2.ntfs-ptcl-img.gz.{s}" for s in ("aa", "ab", "ac")),
        ),
    )
    assert image.stream_bytes == 3329 + 2_000_000 + 131_838


def test_where_each_partition_goes_and_on_which_port() -> None:
    found = targets(fixture_image(), "loop0", 2240)
    assert [(t.device, t.number, t.offset, t.size, t.port) for t in found] == [
        ("/dev/loop0p1", 1, 2048 * 512, 73728 * 512, 2240),
        ("/dev/loop0p2", 2, 75776 * 512, 55263 * 512, 2242),
    ]
    assert [t.device for t in targets(fixture_image(), "sda")] == ["/dev/sda1", "/dev/sda2"]
    with pytest.raises(ImageError, match="pass 65535"):
        targets(fixture_image(), "sda", 65534)  # 65534, 65536


def test_the_disk_size_from_parted_else_from_the_gpt_layout() -> None:
    table = parse_sfdisk(PT_SF)
    assert disk_sectors(table, PARTED.replace("131072s", "200000s")) == 200000
    assert disk_sectors(table, "") == 131038 + 34  # backup GPT: 33 sectors after last-lba
    with pytest.raises(ImageError, match="nothing of its disk's size"):
        disk_sectors(parse_sfdisk("label: dos\n/dev/sda1 : start=2048, size=10\n"))


@pytest.mark.parametrize(
    ("disk", "part", "number"),
    [("loop0", "loop0p2", 2), ("sda", "sda10", 10), ("nvme0n1", "nvme0n1p1", 1)],
)
def test_partition_numbers(disk: str, part: str, number: int) -> None:
    assert partition_number(disk, part) == number
    assert partition_device(disk, number) == f"/dev/{part}"


@pytest.mark.parametrize(("disk", "part"), [("sda", "sdb1"), ("loop0", "loop01"), ("sda", "sda")])
def test_names_that_are_no_partition_of_the_disk(disk: str, part: str) -> None:
    with pytest.raises(ImageError, match="is not a partition of"):
        partition_number(disk, part)


def test_streams_in_split_order_and_the_kinds_the_lab_cannot_restore() -> None:
    names = ["sda1.ext4-ptcl-img.zst", "sda2.ntfs-ptcl-img.gz.ab", "sda2.ntfs-ptcl-img.gz.aa"]
    assert [s.chunks for s in streams_of(["sda1", "sda2"], names)] == [
        ("sda1.ext4-ptcl-img.zst",),
        ("sda2.ntfs-ptcl-img.gz.aa", "sda2.ntfs-ptcl-img.gz.ab"),
    ]
    with pytest.raises(ImageError, match="sda3: the image holds no stream"):
        streams_of(["sda3"], names)
    with pytest.raises(ImageError, match="a ntfsclone stream"):
        streams_of(["sda1"], ["sda1.ntfs-img.aa"])
    with pytest.raises(ImageError, match="both an unsplit stream and chunks"):
        streams_of(["sda1"], ["sda1.ext4-ptcl-img.gz", "sda1.ext4-ptcl-img.gz.aa"])
    with pytest.raises(ImageError, match="different kinds"):
        streams_of(["sda1"], ["sda1.ext4-ptcl-img.gz.aa", "sda1.ext4-ptcl-img.zst.ab"])
    with pytest.raises(ImageError, match="cannot be read as a pipe"):
        streams_of(["sda1"], ["sda1.ext4-ptcl-img.lrz"])


@pytest.mark.parametrize(
    ("disk", "parts", "words"),
    [
        ("", "sda1", "names 0 disks"),
        ("sda sdb", "sda1", "names 2 disks"),
        ("sda1", "sda1", "not a whole-disk device"),
        ("sda", "", "names no partition"),
        ("sda", "sda1 sda1", "twice"),
        ("sda", "../sda1", "not a partition name"),
    ],
)
def test_disk_and_parts_files_are_checked(disk: str, parts: str, words: str) -> None:
    with pytest.raises(ImageError, match=words):
        parse_disk(disk)
        parse_parts(parts)


def test_a_partition_past_the_disk_end_is_refused() -> None:
    with pytest.raises(ImageError, match="loop0p2 ends after the end of its disk"):
        image_from(
            "kitting-fixture",
            FILES,
            disk_text="loop0",
            parts_text="loop0p1 loop0p2",
            table_text=PT_SF,
            parted_text=PARTED.replace("131072s", "100000s"),
        )


# ---------------------------------------------------------------- command lines


def test_the_receiver_as_ocs_sr_runs_it_on_the_kitting_nic() -> None:
    assert imaging.receiver_argv(2242, start_timeout=20, receive_timeout=15) == [
        "udp-receiver", "--interface", "e0", "--nokbd", "--mcast-all-addr", "224.0.0.1",
        "--portbase", "2242", "--ttl", "1", "--start-timeout", "20", "--receive-timeout", "15",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="outside 1-65534"):
        imaging.receiver_argv(65535)


def test_decompressors_and_partclone() -> None:
    assert imaging.decompress_argv(Compression.gz) == ["gzip", "-dc"]
    assert imaging.decompress_argv(Compression.zst) == ["zstd", "-dc"]
    assert imaging.decompress_argv(Compression.uncompressed) == ["cat"]
    with pytest.raises(ImageError, match="no decompressor"):
        imaging.decompress_argv(Compression.lrz)
    disk, log = Path("/lab/pc1/disk.img"), Path("/lab/pc1/p1.log")
    assert imaging.partclone_argv("ntfs", disk, 38797312, log) == [
        "partclone.ntfs", "-r", "-s", "-", "-O", "/lab/pc1/disk.img", "--offset=38797312",
        "-L", "/lab/pc1/p1.log",
    ]  # fmt: skip
    assert "-r" not in imaging.partclone_argv("dd", disk, 0, log)
    with pytest.raises(ImageError, match="not a file system name"):
        imaging.partclone_argv("ext4;reboot", disk, 0, log)


def test_nfs_urls_and_chunk_reading() -> None:
    server = IPv4Address("192.168.100.1")
    assert imaging.nfs_url(server, "/home/partimag/", "img", "parts") == (
        "nfs://192.168.100.1/home/partimag/img/parts"
    )
    assert imaging.nfs_url(server, "srv//images", "img") == "nfs://192.168.100.1/srv/images/img"
    with pytest.raises(ValueError, match="not a valid image name"):
        imaging.nfs_url(server, "/home/partimag", "..")
    assert imaging.nfs_cat_argv(["nfs://a/x.aa", "nfs://a/x.ab"]) == [
        "sh", "-c", 'for url do nfs-cat "$url" || exit 1; done', "nfs-cat-all",
        "nfs://a/x.aa", "nfs://a/x.ab",
    ]  # fmt: skip


def test_the_pipeline_quotes_every_word_and_reports_every_stage(tmp_path: Path) -> None:
    errors = (tmp_path / "a b.err", tmp_path / "c.err", tmp_path / "d.err")
    script = imaging.pipeline_script(
        ["printf", "%s", "it's; $(reboot)"],
        ["cat"],
        ["sh", "-c", 'cat > "$0"; exit 3', str(tmp_path / "out")],
        errors,
    )
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=10, check=False
    )
    assert imaging.parse_pipeline_status(done.stdout) == (0, 0, 3)
    assert (tmp_path / "out").read_text() == "it's; $(reboot)"
    assert all(path.exists() for path in errors)


@pytest.mark.parametrize(
    ("stdout", "statuses"),
    [("0 0 0\n", (0, 0, 0)), ("noise\n1 141 2\n", (1, 141, 2)), ("", None), ("0 0\n", None)],
)
def test_pipeline_statuses(stdout: str, statuses: tuple[int, int, int] | None) -> None:
    assert imaging.parse_pipeline_status(stdout) == statuses


def test_nfs_listings() -> None:
    text = (
        "drwxr-xr-x  2     0     0         4096 .\n"
        "-rw-r--r--  1     0     0            6 disk\n"
        "-rw-------  1     0     0      1000000 loop0p2.ntfs-ptcl-img.gz.aa\n"
    )
    assert imaging.parse_nfs_ls(text) == {"disk": 6, "loop0p2.ntfs-ptcl-img.gz.aa": 1000000}
    assert pcsteps.parse_nfs_ls is imaging.parse_nfs_ls


# ---------------------------------------------------------------- the job report


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        # computed with `echo "scale=3; S / 60 *1.0" | bc -l`, S cut to 2 decimals first
        ("0", "0"),
        ("0.03", "0"),
        ("0.5", ".008"),
        ("7.05", ".117"),
        ("7.059999999", ".117"),
        ("59.99", ".999"),
        ("60", "1.000"),
        ("90", "1.500"),
        ("3600.12", "60.002"),
    ],
)
def test_minutes_as_bc_prints_them(seconds: str, text: str) -> None:
    whole, _, fraction = seconds.partition(".")
    nanoseconds = int(whole) * 10**9 + int((fraction + "000000000")[:9])
    assert minutes_text(nanoseconds) == text


def test_space_in_use_as_ocs_sr_cuts_it_from_partclones_log() -> None:
    log = "File system:  NTFS\nDevice size:   28.3 MB = 6907 Blocks\nSpace in use:   5.6 MB = 1370 Blocks\n"
    assert space_in_use(log) == "5.6 MB = 1370 Blocks"
    assert space_in_use("Space in use: 955 MB (23%)\n") == "955 MB"
    assert space_in_use("Starting to restore image (-)\n") == ""


def test_the_report_line_as_clonezilla_sends_it() -> None:
    parts = [
        PartitionRestore("/dev/loop0p1", True, "600.1 KB = 1172 Blocks", 4_520_000_000, 3329),
        PartitionRestore("/dev/loop0p2", True, "5.6 MB = 1370 Blocks", 4_030_000_000, 2_131_838),
    ]
    line = report_line(
        IPv4Address("192.168.100.11"), "02:A5:27:F8:02:00", "multicast", "kitting-fixture", parts
    )
    # The line ocs-sr itself sent for this image (minutes aside)
    assert line == (
        "192.168.100.11 02:a5:27:f8:02:00 Multicast restored kitting-fixture, "
        "/dev/loop0p1, success, 600.1 KB = 1172 Blocks, .075 mins; "
        "/dev/loop0p2, success, 5.6 MB = 1370 Blocks, .067 mins;"
    )
    parsed = deployment_report.parse(line)
    assert parsed.outcome is deployment_report.ReportOutcome.succeeded
    assert [p.device for p in parsed.partitions] == ["/dev/loop0p1", "/dev/loop0p2"]

    failed = [PartitionRestore("/dev/sda1", False, "", 10**9, 0, "partclone exit 1")]
    line = report_line(IPv4Address("192.168.100.12"), "02:00:00:00:00:02", "unicast", "img", failed)
    assert (
        line
        == "192.168.100.12 02:00:00:00:00:02 Unicast restored img, /dev/sda1, ***FAIL***, , .016 mins;"
    )
    assert deployment_report.parse(line).outcome is deployment_report.ReportOutcome.failed


# ---------------------------------------------------------------- Clonezilla's own client


def test_ocs_sr_runs_with_the_labs_options_not_the_menus() -> None:
    job = parse_job(
        "ocs-sr -l en_US.UTF-8 -batch -g auto -e1 auto -e2 -r -j2 -p reboot "
        "--mcast-port 2240 multicast_restoredisk kitting-fixture loop0"
    )
    assert ocs_client.ocs_sr_argv(job, IPv4Address("192.168.100.1")) == [
        "ocs-sr", "-l", "en_US.UTF-8", "-batch", "-nogui", "-p", "true", "-iefi", "-ssnf",
        "-irvd", "-os", "192.168.100.1", "--mcast-port", "2240", "multicast_restoredisk",
        "kitting-fixture", "loop0",
    ]  # fmt: skip
    unicast = Job("unicast", "img", "loop3")
    assert ocs_client.ocs_sr_argv(unicast, IPv4Address("192.168.100.1"))[-3:] == [
        "restoredisk",
        "img",
        "loop3",
    ]


def test_ocs_sr_never_gets_a_real_disk() -> None:
    assert ocs_client.check_loop_name("loop12") == "loop12"
    for disk in ("sda", "nvme0n1", "loop", "loop0p1", "loop1234"):
        with pytest.raises(imaging.ImagingError, match="loop device only"):
            ocs_client.check_loop_name(disk)


def test_the_quick_drbl_ocs_conf() -> None:
    text = (
        'OCSMGRD_PORT="6461"\nSLEEP_TIME_AFTER_PART_CLONED="15"\n# SLEEP_TIME_AFTER_PART_CLONED=9\n'
    )
    assert ocs_client.quick_conf(text) == (
        'OCSMGRD_PORT="6461"\nSLEEP_TIME_AFTER_PART_CLONED="0"\n'
        "# SLEEP_TIME_AFTER_PART_CLONED=9\n"
        'NOTIFY_OCS_SERVER_TIME_LIMIT="0"\n'
    )


# ---------------------------------------------------------------- the PC's steps


def test_imaging_steps_join_only_an_armed_pc() -> None:
    pc = labsite.lab_pcs("kt0a0b0c-", 2)[0]
    names = [name for name, _ in pcsteps.steps_for(pc)]
    assert names == ["dhcp", "boot-file", "loader", "menu", "nfs"]
    armed = [name for name, _ in pcsteps.steps_for(pc, armed=True)]
    assert armed == [*names, "job", "image", "restore", "verify", "report"]
    stray = labsite.stray_pc("kt0a0b0c-")
    assert [name for name, _ in pcsteps.steps_for(stray, armed=True)] == ["dhcp"]


def test_the_first_difference_between_two_disk_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(bytes(3 * 1024 * 1024))
    b.write_bytes(bytes(3 * 1024 * 1024))
    assert imaging.first_difference(a, b) is None
    with open(b, "r+b") as handle:
        handle.seek(2 * 1024 * 1024 + 513)
        handle.write(b"x")
    assert imaging.first_difference(a, b) == "at byte 2097665 (sector 4097)"
    b.write_bytes(bytes(10))
    assert imaging.first_difference(a, b) == "in size: 3145728 bytes, the reference 10"
