"""A lab run's directory: the server's tree, the site repo, logs and the report.

    /var/lib/kitting-lab/kt1a2b3c/      (LAB_BASE / prefix without its dash)
        run.json        prefix, owner PID, state (running, kept, finished)
        server/         everything the server would write under / (labsite.ServerTree)
        site/           the lab site repo, a real git repository
        logs/           every program's output, one file each
        report.json     what the rehearsal found

Not under /run: the lab's NFS and SSH servers mount a private /run over the real one, and
the files they read must stay visible to them. Not under a world-writable directory either
(/tmp, /var/tmp): root writes here, so the base must be root's own. Directories are 0755 and files 0644: dnsmasq
drops to an unprivileged user and reads the TFTP root as that user, and NFS squashes root,
so image files must be world-readable, as on a real server.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from reconciler.lab import labsite
from reconciler.lab.netns import check_prefix, prefix_of

LAB_BASE = Path("/var/lib/kitting-lab")
RUN_FILE = "run.json"
GIT_TIMEOUT = 30.0

BOOT_SOURCES: Mapping[str, tuple[str, str]] = {
    labsite.BIOS_LOADER: ("/usr/lib/PXELINUX/pxelinux.0", "pxelinux"),
    labsite.BIOS_SECOND_STAGE: ("/usr/lib/syslinux/modules/bios/ldlinux.c32", "syslinux-common"),
    labsite.SHIM: ("/usr/lib/shim/shimx64.efi.signed", "shim-signed"),
    labsite.UEFI_LOADER: (
        "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
        "grub-efi-amd64-signed",
    ),
}
"""Boot files in the TFTP root -> (the Debian file it is a copy of, its package)."""


class WorkspaceError(RuntimeError):
    """The lab's directory could not be prepared (a missing package, git failing...)."""


@dataclass(frozen=True)
class RunDir:
    path: Path
    prefix: str

    @property
    def server(self) -> labsite.ServerTree:
        return labsite.ServerTree(PurePosixPath(self.path / "server"))

    @property
    def site_repo(self) -> Path:
        return self.path / "site"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def report(self) -> Path:
        return self.path / "report.json"

    @property
    def private(self) -> Path:
        return Path(self.server.private)

    def record(self) -> dict[str, object]:
        """run.json, or {} when it is missing or unreadable."""
        try:
            body = json.loads((self.path / RUN_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return body if isinstance(body, dict) else {}

    def mark(self, state: str, pid: int) -> None:
        """Record who owns the run now and in which state it is."""
        body = {"prefix": self.prefix, "pid": pid, "state": state}
        _write_atomic(self.path / RUN_FILE, (json.dumps(body, sort_keys=True) + "\n").encode())


def run_dir(base: Path, prefix: str) -> RunDir:
    return RunDir(base / check_prefix(prefix)[:-1], prefix)


def create(base: Path, prefix: str) -> RunDir:
    """A fresh run directory, owned by this process."""
    run = run_dir(base, prefix)
    base.mkdir(mode=0o755, parents=True, exist_ok=True)
    _check_base(base)
    run.path.mkdir(mode=0o755)
    for directory in (run.logs, Path(run.server.tftp_root), Path(run.server.images_root)):
        directory.mkdir(parents=True, exist_ok=True)
    _chmod_tree(run.path)  # whatever the umask: the server's programs read as other users
    run.mark("running", os.getpid())
    return run


def _check_base(base: Path) -> None:
    """The base must be a real directory of ours that nobody else can write into: root
    writes boot files, site repos and program files below it."""
    info = base.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise WorkspaceError(
            f"{base} must be a directory owned by uid {os.geteuid()} that only it may write to"
        )


def runs(base: Path) -> list[RunDir]:
    """Every run directory under `base` (whatever its state)."""
    if not base.is_dir():
        return []
    found = []
    for entry in sorted(base.iterdir()):
        prefix = prefix_of(entry.name + "-")
        if entry.is_dir() and prefix == entry.name + "-":
            found.append(RunDir(entry, prefix))
    return found


def place_boot_files(tree: labsite.ServerTree) -> dict[str, bytes]:
    """Copy the real boot loaders into the TFTP root; returns name -> content."""
    placed = {}
    for name, (source, package) in sorted(BOOT_SOURCES.items()):
        try:
            content = Path(source).read_bytes()
        except OSError as error:
            raise WorkspaceError(f"{source} is missing: install {package} ({error})") from None
        target = Path(tree.tftp_root) / name
        target.write_bytes(content)
        target.chmod(0o644)
        placed[name] = content
    return placed


def stand_in_image() -> dict[str, bytes]:
    """A small image directory shaped like Clonezilla's: metadata files and two
    compressed "partition streams" of deterministic bytes (not real partclone streams)."""
    disk = labsite.IMAGE_DISK
    files = {
        "disk": f"{disk}\n".encode(),
        "parts": f"{disk}1 {disk}2\n".encode(),
        "clonezilla-img": b"A stand-in image made by kitctl lab (not restorable).\n",
        "Info-img-id.txt": b"IMG_ID=kitting-lab-stand-in\n",
        f"{disk}-pt.sf": (
            f"label: gpt\ndevice: /dev/{disk}\nunit: sectors\n\n"
            f"/dev/{disk}1 : start=2048, size=73728, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n"
            f"/dev/{disk}2 : start=75776, size=55262, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n"
        ).encode(),
    }
    for number, fs in ((1, "vfat"), (2, "ntfs")):
        raw = b"".join(hashlib.sha256(f"lab-{number}-{i}".encode()).digest() for i in range(2048))
        files[f"{disk}{number}.{fs}-ptcl-img.gz.aa"] = gzip.compress(raw, mtime=0)
    return files


def place_image(tree: labsite.ServerTree, source: Path | None) -> dict[str, bytes]:
    """Put the lab's image into the images root (a copy of `source`, a Clonezilla image
    directory, or the stand-in); world-readable, as root-squashed NFS needs."""
    target = Path(tree.images_root) / labsite.IMAGE
    target.mkdir(mode=0o755)
    if source is None:
        files = stand_in_image()
    else:
        files = {}
        for entry in sorted(source.iterdir()):
            if entry.is_file() and not entry.is_symlink():
                files[entry.name] = entry.read_bytes()
        if not files:
            raise WorkspaceError(f"{source}: no image files in it")
    for name, content in files.items():
        path = target / name
        path.write_bytes(content)
        path.chmod(0o644)
    return files


def commit_site(repo: Path, files: Mapping[str, bytes], message: str) -> str:
    """Write the site repo's files and commit them on `main`; returns the commit's SHA."""
    repo.mkdir(parents=True, exist_ok=True)
    for name, content in sorted(files.items()):
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    if not (repo / ".git").exists():
        _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "--all", ".")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD").strip()


def remove_server(run: RunDir) -> None:
    """Drop what only a running lab needs (the server tree, the site repo); the logs and
    the report stay for reading."""
    for path in (Path(run.server.root), run.site_repo):
        shutil.rmtree(path, ignore_errors=True)


DISK_FILE = "disk.img"
"""What a PC restores onto (pcsteps' restore step), under its log directory."""


def remove_disks(run: RunDir) -> list[Path]:
    """Remove the PCs' restored disk files (64 MiB each for the lab's image) once the run
    verified them; their logs stay. Only regular files named DISK_FILE under the run's
    logs; returns what was removed."""
    removed: list[Path] = []
    if not run.logs.is_dir():
        return removed
    for path in sorted(run.logs.rglob(DISK_FILE)):
        if path.is_file() and not path.is_symlink():
            path.unlink()
            removed.append(path)
    return removed


def remove(run: RunDir) -> None:
    shutil.rmtree(run.path, ignore_errors=True)


def loops_under(listing: str, directory: Path) -> list[str]:
    """Loop devices (from `losetup --list --json`) whose backing file lies in `directory`:
    the disk files a run attached. Pure."""
    try:
        devices = json.loads(listing).get("loopdevices", []) if listing.strip() else []
    except (ValueError, AttributeError):
        return []
    found = []
    inside = str(directory).rstrip("/") + "/"
    for device in devices:
        back = str(device.get("back-file") or "").removesuffix(" (deleted)")
        name = str(device.get("name") or "")
        if name.startswith("/dev/loop") and back.startswith(inside):
            found.append(name)
    return sorted(found)


def detach_loops(run: RunDir) -> list[str]:
    """Detach every loop device backed by a file of the run; returns their names."""
    try:
        listing = subprocess.run(
            ["losetup", "--list", "--json"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    detached = []
    for name in loops_under(listing.stdout, run.path):
        done = subprocess.run(["losetup", "-d", name], capture_output=True, timeout=10, check=False)
        if done.returncode == 0:
            detached.append(name)
    return detached


def _git(repo: Path, *args: str) -> str:
    # The machine's git settings (a signing default, hooks) must not change the lab's repo.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(repo),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "kitctl lab",
        "GIT_AUTHOR_EMAIL": "lab@kitting.invalid",
        "GIT_COMMITTER_NAME": "kitctl lab",
        "GIT_COMMITTER_EMAIL": "lab@kitting.invalid",
    }
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
            env=env,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise WorkspaceError(f"git {' '.join(args)}: {error}") from None
    if done.returncode != 0:
        raise WorkspaceError(f"git {' '.join(args)}: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def _chmod_tree(root: Path) -> None:
    for directory, _subdirs, _files in os.walk(root):
        Path(directory).chmod(0o755)


def _write_atomic(path: Path, content: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
