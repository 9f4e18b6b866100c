"""The lab's test image: a real Clonezilla image, made by Clonezilla's own `ocs-sr savedisk`,
built once per machine and cached. `kitctl lab run` serves it by default; the tests use it too
(tests/fixtures/clonezilla.py, with their own cache directory).

The recipe (FIELD_NOTES.md, "Real Clonezilla images can be made here"): a 64 MiB GPT disk
file with an EFI system partition (FAT32) and an NTFS partition holding files of known
content, attached to a loop device, saved with

    ocs-sr -b -q2 -j2 -z1p -i 1 -sfsck -scs -senc -gm -gs -gb -p true -or DIR savedisk NAME loopN

`-i 1` splits streams at 1 MB, so the NTFS stream (3 MB of incompressible data) comes in
four chunks (.aa-.ad); `-gm -gs -gb` turn on Clonezilla's MD5SUMS, SHA1SUMS and B2SUMS.

The result is cached under a base directory (the lab's LAB_CACHE, /var/cache/kitting-lab;
the tests' /var/cache/kitting-tests), in a directory named after RECIPE_VERSION: bump it
whenever the recipe changes. The source disk file is kept beside the image, so that tests
can restore and compare. The image's `disk` and `parts` files name the loop device of the
build (`ClonezillaImage.disk`): Clonezilla's multicast restore needs that same disk name.

ocs-sr saves the disk's size through parted (`loopN-pt.parted`); an image saved without
parted installed has that file empty, and Clonezilla's own restore of it stops with "Disk
size from image NOT found": parted is required (recipe 2).

Building takes about 25 s on a 2-core machine (ocs-sr itself; it is bounded by timeouts),
runs under a lock so parallel runs build once, and always detaches the loop device.
Nobody may change a cached image: copy it first (`copy_image`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

RECIPE_VERSION = 2
LAB_CACHE = Path("/var/cache/kitting-lab")
"""Where `kitctl lab run` keeps the image it serves by default."""
IMAGE_NAME = "kitting-fixture"

PROGRAMS = (
    "ocs-sr",
    "partclone.vfat",
    "partclone.ntfs",
    "pigz",
    "sgdisk",
    "mkfs.vfat",
    "mmd",
    "mcopy",
    "mkntfs",
    "ntfscp",
    "losetup",
    "partx",
    "b2sum",
    "parted",
)

SECTOR = 512
MIB = 1024 * 1024
DISK_BYTES = 64 * MIB
# FAT32 needs at least 65525 clusters: 36 MiB of 512-byte clusters has about 72500.
ESP_FIRST, ESP_SECTORS = 2048, 36 * MIB // SECTOR
DATA_FIRST = ESP_FIRST + ESP_SECTORS  # 75776, 2048-aligned
DATA_LAST = DISK_BYTES // SECTOR - 34  # the last sector before the backup GPT
SPLIT_MB = 1
NOISE_BYTES = 3_000_000
# Fixed GUIDs: the same recipe gives the same partition table on every machine.
DISK_GUID = "4B495454-494E-4700-8000-000000000001"
ESP_GUID = "4B495454-494E-4700-8000-000000000011"
DATA_GUID = "4B495454-494E-4700-8000-000000000012"
OCS_OPTIONS = (
    "-b", "-q2", "-j2", "-z1p", "-i", str(SPLIT_MB),
    "-sfsck", "-scs", "-senc", "-gm", "-gs", "-gb", "-p", "true",
)  # fmt: skip

LOOP_CONTROL = Path("/dev/loop-control")
COMMAND_TIMEOUT = 60.0
OCS_TIMEOUT = 300.0
LOCK_TIMEOUT = 2 * OCS_TIMEOUT + 120


class FixtureUnavailable(RuntimeError):
    """This machine cannot build the image (a program or loop devices are missing)."""


class FixtureBuildError(RuntimeError):
    """Building was attempted and failed; the message ends with the log's tail."""


def noise(size: int = NOISE_BYTES) -> bytes:
    """Deterministic, incompressible bytes (SHA-256 in counter mode)."""
    blocks = (
        hashlib.sha256(f"kitting-fixture-{i}".encode()).digest() for i in range(size // 32 + 1)
    )
    return b"".join(blocks)[:size]


ESP_FILES: Mapping[str, bytes] = {
    "EFI/BOOT/BOOTX64.EFI": b"kitting fixture: a stand-in for a boot loader\n",
    # Where the recipe was first written; the text is part of recipe 2, so it stays.
    "EFI/kitting/README.TXT": b"Made by tests/fixtures/clonezilla.py\n",
}


def data_files() -> dict[str, bytes]:
    """What the NTFS partition holds, path -> content."""
    return {"hello.txt": b"hello from the kitting fixture\n", "noise.bin": noise()}


def expected_files() -> dict[int, dict[str, bytes]]:
    """Partition number -> path -> content: what every disk restored from the image holds."""
    return {1: dict(ESP_FILES), 2: data_files()}


@dataclass(frozen=True)
class ClonezillaImage:
    home: Path
    """The cache entry holding everything below."""
    images_root: Path
    """A directory laid out like /home/partimag, holding the image directory."""
    name: str
    source_disk: Path
    """The disk file that was saved (do not modify)."""
    disk: str
    """The disk name at save time, e.g. loop0 (the image's `disk` file)."""
    parts: tuple[str, ...]
    """The partitions at save time, e.g. (loop0p1, loop0p2) (the image's `parts` file)."""
    build_seconds: float
    """How long the build took on the machine that made the cache entry."""

    @property
    def image_dir(self) -> Path:
        return self.images_root / self.name


def missing_programs() -> list[str]:
    search = os.pathsep.join((os.environ.get("PATH", ""), "/usr/sbin", "/sbin"))
    return [p for p in PROGRAMS if shutil.which(p, path=search) is None]


def home_dir(cache: Path) -> Path:
    """The cache entry of the current recipe under the base directory `cache`."""
    return cache / f"clonezilla-v{RECIPE_VERSION}"


def build_or_reuse(cache: Path = LAB_CACHE) -> ClonezillaImage:
    """The cached image under `cache`, built first when there is none for RECIPE_VERSION."""
    base = cache
    base.mkdir(parents=True, exist_ok=True)
    home = home_dir(base)
    if not (home / "recipe.json").is_file():
        with _locked(base / f"clonezilla-v{RECIPE_VERSION}.lock"):
            if not (home / "recipe.json").is_file():
                _build(home)
    return _load(home)


def copy_image(image: ClonezillaImage, images_root: Path, name: str | None = None) -> Path:
    """A private copy of the image directory under `images_root` (to break it in a test)."""
    target = images_root / (name or image.name)
    images_root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(image.image_dir, target, symlinks=True)
    return target


def _load(home: Path) -> ClonezillaImage:
    recipe = json.loads((home / "recipe.json").read_text(encoding="utf-8"))
    if recipe.get("recipe_version") != RECIPE_VERSION:
        raise FixtureBuildError(f"{home}/recipe.json is not recipe {RECIPE_VERSION}")
    return ClonezillaImage(
        home=home,
        images_root=home / "partimag",
        name=recipe["image"],
        source_disk=home / "disk.img",
        disk=recipe["disk"],
        parts=tuple(recipe["parts"]),
        build_seconds=float(recipe["build_seconds"]),
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise FixtureBuildError(
                        f"{path}: another build held the lock too long"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(home: Path) -> None:
    missing = missing_programs()
    if missing:
        raise FixtureUnavailable(f"the Clonezilla fixture needs {', '.join(missing)}")
    if not LOOP_CONTROL.exists():
        raise FixtureUnavailable(f"loop devices are unavailable here (no {LOOP_CONTROL})")
    for stale in home.parent.glob(f"{home.name}.build-*"):  # left by a killed build
        _detach_all(stale / "disk.img")
        shutil.rmtree(stale, ignore_errors=True)
    work = home.parent / f"{home.name}.build-{os.getpid()}"
    work.mkdir()
    started = time.monotonic()
    try:
        disk_img = work / "disk.img"
        _make_disk(work, disk_img)
        images_root = work / "partimag"
        images_root.mkdir()
        disk, parts = _save(disk_img, images_root, work / "ocs-sr.log")
        recipe = {
            "recipe_version": RECIPE_VERSION,
            "image": IMAGE_NAME,
            "disk": disk,
            "parts": parts,
            "ocs_sr": ["ocs-sr", *OCS_OPTIONS, "-or", "DIR", "savedisk", IMAGE_NAME, disk],
            "build_seconds": round(time.monotonic() - started, 1),
        }
        (work / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")
        os.rename(work, home)
    except BaseException:
        log = work / "ocs-sr.log"
        if log.exists():
            shutil.copyfile(log, home.parent / f"{home.name}.failed.log")
        shutil.rmtree(work, ignore_errors=True)
        raise


def _run(cmd: Sequence[str], *, timeout: float = COMMAND_TIMEOUT, log: Path | None = None) -> str:
    """Run a program in its own process group; kill the whole group when it overruns.
    Its output goes to `log` when given (ocs-sr talks a lot), else it is returned."""
    env = {**os.environ, "LC_ALL": "C", "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"}
    with contextlib.ExitStack() as stack:
        sink: int | IO[bytes] = subprocess.PIPE
        if log is not None:
            sink = stack.enter_context(open(log, "ab"))
        proc = stack.enter_context(
            subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        )
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)
            raise FixtureBuildError(
                f"{cmd[0]} ran longer than {timeout:.0f} s{_tail(log)}"
            ) from None
    text = stdout.decode("utf-8", "replace") if stdout else ""
    if proc.returncode != 0:
        raise FixtureBuildError(
            f"{' '.join(cmd)} exited {proc.returncode}: {text.strip()}{_tail(log)}"
        )
    return text


def _tail(log: Path | None, lines: int = 25) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_bytes().decode("utf-8", "replace").splitlines()[-lines:]
    return f"\n--- last lines of {log}:\n" + "\n".join(text)


def _make_disk(work: Path, disk_img: Path) -> None:
    with open(disk_img, "wb") as handle:
        handle.truncate(DISK_BYTES)
    _run([
        "sgdisk", "-o", "-U", DISK_GUID,
        "-n", f"1:{ESP_FIRST}:{DATA_FIRST - 1}", "-t", "1:ef00", "-c", "1:EFI", "-u", f"1:{ESP_GUID}",
        "-n", f"2:{DATA_FIRST}:{DATA_LAST}", "-t", "2:0700", "-c", "2:DATA", "-u", f"2:{DATA_GUID}",
        str(disk_img),
    ])  # fmt: skip

    esp = work / "esp.fs"
    with open(esp, "wb") as handle:
        handle.truncate(ESP_SECTORS * SECTOR)
    _run(["mkfs.vfat", "-F", "32", "-s", "1", "-n", "EFI", "-i", "4B495431", str(esp)])
    sources = work / "files"
    for path, content in ESP_FILES.items():
        parent = ""
        for directory in path.split("/")[:-1]:
            parent = f"{parent}/{directory}"
            with contextlib.suppress(FixtureBuildError):  # already made for a sibling
                _run(["mmd", "-i", str(esp), f"::{parent}"])
        source = sources / "esp" / path
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_bytes(content)
        _run(["mcopy", "-i", str(esp), str(source), f"::/{path}"])

    data = work / "data.fs"
    with open(data, "wb") as handle:
        handle.truncate((DATA_LAST - DATA_FIRST + 1) * SECTOR)
    _run(["mkntfs", "-F", "-Q", "-p", str(DATA_FIRST), "-L", "DATA", str(data)])
    for path, content in data_files().items():
        source = sources / "data" / path
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_bytes(content)
        _run(["ntfscp", "-f", str(data), str(source), f"/{path}"])

    with open(disk_img, "r+b") as disk:
        for fs_file, first in ((esp, ESP_FIRST), (data, DATA_FIRST)):
            disk.seek(first * SECTOR)
            with open(fs_file, "rb") as src:
                shutil.copyfileobj(src, disk, MIB)
        disk.flush()
        os.fsync(disk.fileno())
    shutil.rmtree(sources)
    esp.unlink()
    data.unlink()


def _save(disk_img: Path, images_root: Path, log: Path) -> tuple[str, list[str]]:
    """Attach the disk file, let ocs-sr save it, and always detach it again."""
    try:
        device = _run(["losetup", "-fP", "--show", str(disk_img)]).strip()
    except FixtureBuildError as error:
        raise FixtureUnavailable(f"loop devices are unavailable here: {error}") from error
    name = device.removeprefix("/dev/")
    made: list[Path] = []
    try:
        parts = partition_nodes(name, made)
        _run(
            ["ocs-sr", *OCS_OPTIONS, "-or", str(images_root), "savedisk", IMAGE_NAME, name],
            timeout=OCS_TIMEOUT,
            log=log,
        )
    finally:
        for node in made:
            with contextlib.suppress(FileNotFoundError):
                node.unlink()
        _detach(device)
    image_dir = images_root / IMAGE_NAME
    for required in ("disk", "parts", "clonezilla-img", "MD5SUMS"):
        if not (image_dir / required).is_file():
            raise FixtureBuildError(f"ocs-sr wrote no {required} in {image_dir}{_tail(log)}")
    saved_disk = (image_dir / "disk").read_text(encoding="utf-8").split()
    if saved_disk != [name]:
        raise FixtureBuildError(f"{image_dir}/disk says {saved_disk}, expected {name}")
    return name, parts


def partition_nodes(name: str, made: list[Path]) -> list[str]:
    """Make sure /dev/loopNp1 and p2 exist: without udev nobody creates them. The nodes
    this made are appended to `made`: the caller removes them before detaching."""
    sys_dir = Path("/sys/block") / name
    expected = [f"{name}p1", f"{name}p2"]
    if not all((sys_dir / p).is_dir() for p in expected):
        _run(["partx", "-a", f"/dev/{name}"])
    deadline = time.monotonic() + 5
    while not all((sys_dir / p / "dev").is_file() for p in expected):
        if time.monotonic() > deadline:
            raise FixtureBuildError(f"/sys/block/{name} shows no partitions {expected}")
        time.sleep(0.1)
    for part in expected:
        node = Path("/dev") / part
        major, minor = (int(n) for n in (sys_dir / part / "dev").read_text().strip().split(":"))
        device = os.makedev(major, minor)
        with contextlib.suppress(FileNotFoundError):
            info = node.stat()
            if stat.S_ISBLK(info.st_mode) and info.st_rdev == device:
                continue  # devtmpfs (or udev) made it
            node.unlink()  # left by a killed run: partition minors are handed out anew
        os.mknod(node, stat.S_IFBLK | 0o600, device)
        made.append(node)
    return expected


def _detach(device: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            _run(["losetup", "-d", device])
            return
        except FixtureBuildError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)  # busy for a moment after ocs-sr's last sync


def _detach_all(disk_img: Path) -> None:
    if not disk_img.exists():
        return
    with contextlib.suppress(FixtureBuildError):
        for line in _run(["losetup", "-j", str(disk_img)]).splitlines():
            _detach(line.partition(":")[0])
