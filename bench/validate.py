"""How fast `kitctl validate` is, and how much memory it takes, for 1,000 to 50,000 PCs.

For each size a realistic site is generated in a temporary folder, in two layouts: one file
per department of 1,000 PCs ("split") and all departments in one big file ("single"); for
the largest size also a split site in which every hostname is wrong ("split, all wrong":
one error per PC, the slow path that finds every position). Each
site is measured in a fresh Python process of its own, so that the peak memory is that of one
validation: the process validates the site three times in a row and reports its best wall
time and its peak resident set size (`ru_maxrss`: the whole process, interpreter and imports
included). The whole command (`kitctl validate`, start-up included) is timed too, best of
three. The table goes to stdout and to bench/results/validate.md.

    .venv/bin/python bench/validate.py [--sizes 1000,10000,50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "validate.md"
PCS_PER_DEPARTMENT = 1000
WRONG = "split, all wrong"
TARGETS = {10_000: 1.5, 50_000: 8.0}  # seconds, from the issue
MEMORY_TARGET_MB = 400

IMAGES = """\
kind: Image
name: win11-base-2025
os: windows11
disk: {device: nvme0n1, size: 256GB}
integrity: {source: clonezilla}
---
kind: Image
name: win11-sales-2025
os: windows11
disk: {device: nvme0n1, size: 256GB}
---
kind: Image
name: ubuntu-24-04
os: linux
firmware: uefi
disk: {device: sda, size: 128GB}
"""

SITE = """\
kind: Site
name: bench
timezone: Europe/Berlin
server: {hostname: kitting01, interface: enp1s0, address: 10.0.0.1}
network:
  subnet: 10.0.0.0/16
  gateway: 10.0.255.254
  dns: [10.0.0.1]
  vlan: 100
  dhcp:
    pool: {start: 10.0.128.0, end: 10.0.255.200}
    lease_time: 12h
    max_leases: 60000
  admin_range: {start: 10.0.0.2, end: 10.0.0.50}
multicast: {group: 239.192.0.1, port: 2232, max_bitrate: 800m}
firewall:
  production_networks: [172.16.0.0/12]
  ssh_sources: [10.0.0.2-10.0.0.50]
"""


def department(number: int, first_pc: int, *, wrong: bool = False) -> str:
    """One department of PCS_PER_DEPARTMENT PCs: every 10th a docked laptop with two MACs,
    every other one a fixed IP, the rest from the pool; some with their own disk."""
    image = ("win11-base-2025", "win11-sales-2025", "ubuntu-24-04")[number % 3]
    lines = [
        "kind: Department",
        f"name: dept-{number:03d}",
        f"image: {image}",
        f"description: Department {number}, floor {number % 7}",
        "pcs:",
    ]
    for offset in range(PCS_PER_DEPARTMENT):
        pc = first_pc + offset
        mac = f"02:4b:{pc >> 16 & 255:02x}:{pc >> 8 & 255:02x}:{pc & 255:02x}:01"
        sep = "_" if wrong else "-"  # '_' is refused in hostnames
        lines.append(f"  - hostname: D{number:03d}{sep}PC{sep}{offset:04d}")
        if offset % 10 == 0:
            dock = mac[:-2] + "02"
            lines.append(f'    macs: ["{mac}", "{dock}"]')
        else:
            lines.append(f'    macs: ["{mac}"]')
        if pc % 2 == 0:
            fixed = 256 + pc // 2  # from 10.0.1.0 upwards, below the pool
            lines.append(f"    ip: 10.0.{fixed >> 8}.{fixed & 255}")
        if offset % 25 == 0:
            lines.append("    disk: {device: nvme0n1, size: 512GB}")
    return "\n".join(lines) + "\n"


def batches(departments: int) -> str:
    """A multicast batch per department on days of its own, and a unicast batch for a few
    PCs, in a window of its own."""
    docs = []
    for number in range(departments):
        image = ("win11-base-2025", "win11-sales-2025", "ubuntu-24-04")[number % 3]
        day = 1 + number % 28
        month = 1 + number // 28
        docs.append(
            f"kind: Batch\nname: dept-{number:03d}-rollout\nimage: {image}\n"
            f"targets: {{departments: [dept-{number:03d}]}}\nmode: multicast\n"
            f"window:\n  start: 2027-{month:02d}-{day:02d}T08:00\n"
            f"  end: 2027-{month:02d}-{day:02d}T18:00\n"
            f"max_wait: 15m\nstart_timeout: 1h\n"
        )
    docs.append(
        "kind: Batch\nname: replacements\nimage: win11-base-2025\nmode: unicast\n"
        "targets:\n  pcs: [D000-PC-0001, D000-PC-0002, D000-PC-0003]\n"
        "window:\n  start: 2026-12-20T08:00\n  end: 2026-12-20T18:00\n"
    )
    return "---\n".join(docs)


def generate(root: Path, pcs: int, layout: str) -> None:
    root.mkdir(parents=True)
    (root / "site.yaml").write_text(SITE, encoding="utf-8")
    (root / "images.yaml").write_text(IMAGES, encoding="utf-8")
    count = pcs // PCS_PER_DEPARTMENT
    wrong = layout == WRONG
    texts = [department(n, n * PCS_PER_DEPARTMENT, wrong=wrong) for n in range(count)]
    folder = root / "departments"
    folder.mkdir()
    if layout == "single":
        (folder / "all.yaml").write_text("---\n".join(texts), encoding="utf-8")
    else:
        for number, text in enumerate(texts):
            (folder / f"dept-{number:03d}.yaml").write_text(text, encoding="utf-8")
    (root / "batches.yaml").write_text(batches(count), encoding="utf-8")


# ----------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Measured:
    best: float
    times: list[float]
    problems: int
    rss_start_kb: int
    rss_imported_kb: int
    rss_peak_kb: int


def measure(repo: str, repeat: int) -> Measured:
    """Runs in the child process: validate `repeat` times, report the best time and peak RSS."""
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from reconciler import load, validate

    imported_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    problems = -1
    for _ in range(repeat):
        began = time.perf_counter()
        result = validate.run(load.repo(repo))
        times.append(time.perf_counter() - began)
        problems = len(result.problems)
        del result
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return Measured(min(times), times, problems, start_rss, imported_rss, peak)


def measure_in_child(repo: Path, repeat: int) -> Measured:
    done = subprocess.run(
        [sys.executable, __file__, "--measure", str(repo), "--repeat", str(repeat)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return Measured(**json.loads(done.stdout))


def time_command(repo: Path, repeat: int, *, valid: bool) -> float:
    """Best wall time of the whole `kitctl validate` command, start-up included."""
    kitctl = Path(sys.executable).parent / "kitctl"
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        done = subprocess.run(
            [str(kitctl), "validate", "--repo", str(repo)],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        best = min(best, time.perf_counter() - began)
        if done.returncode != (0 if valid else 1):
            raise SystemExit(f"unexpected result for {repo}:\n{done.stdout[-2000:]}")
    return best


@dataclass
class Row:
    pcs: int
    layout: str
    megabytes: float
    validate_s: float
    command_s: float
    peak_mb: float
    imported_mb: float

    def verdict(self) -> str:
        limit = TARGETS.get(self.pcs)
        slow = limit is not None and max(self.validate_s, self.command_s) >= limit
        heavy = self.peak_mb >= MEMORY_TARGET_MB
        if limit is None:
            return "ok" if not heavy else f"over {MEMORY_TARGET_MB} MB"
        return "MISSED" if slow or heavy else f"ok (< {limit} s, < {MEMORY_TARGET_MB} MB)"


def table(rows: list[Row]) -> str:
    lines = [
        "| PCs | layout | YAML size | validate (best of 3) | `kitctl validate` (best of 3) "
        "| peak RSS | RSS after imports | target |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    lines.extend(
        f"| {r.pcs:,} | {r.layout} | {r.megabytes:.1f} MB | {r.validate_s:.2f} s "
        f"| {r.command_s:.2f} s | {r.peak_mb:.0f} MB | {r.imported_mb:.0f} MB | {r.verdict()} |"
        for r in rows
    )
    return "\n".join(lines) + "\n"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import ruamel.yaml

    return (
        f"{cpu}, {os.cpu_count()} CPUs; Python {platform.python_version()}, "
        f"ruamel.yaml {ruamel.yaml.__version__}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--layouts", default="split,single")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--measure", metavar="REPO", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(asdict(measure(args.measure, args.repeat))))
        return 0
    rows = []
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = [(pcs, layout) for pcs in sizes for layout in args.layouts.split(",")]
    runs.append((max(sizes), WRONG))
    with tempfile.TemporaryDirectory(prefix="kitctl-bench-") as tmp:
        for pcs, layout in runs:
            repo = Path(tmp) / f"{pcs}-{layout.replace(', ', '-').replace(' ', '-')}"
            generate(repo, pcs, layout)
            size = sum(p.stat().st_size for p in repo.rglob("*.yaml")) / 1e6
            measured = measure_in_child(repo, args.repeat)
            # the wrong site: one error per PC, and the unicast batch's 3 PCs are unknown
            expected = pcs + 3 if layout == WRONG else 0
            if measured.problems != expected:
                raise SystemExit(f"{repo}: expected {expected} problems, got {measured}")
            rows.append(
                Row(
                    pcs,
                    layout,
                    size,
                    measured.best,
                    time_command(repo, args.repeat, valid=layout != WRONG),
                    measured.rss_peak_kb / 1024,
                    measured.rss_imported_kb / 1024,
                )
            )
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    report = (
        "# validate: speed and memory\n\n"
        f"Generated by `bench/validate.py` on {machine()}.\n\n"
        "validate = `load.repo` + `validate.run` in one process (best of 3 runs in a row); "
        "`kitctl validate` = the whole command, interpreter start-up and imports included; "
        "peak RSS = `ru_maxrss` of the measuring process (a fresh one per row).\n\n"
        f"{table(rows)}"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report, encoding="utf-8")
    print(f"\n{table(rows)}\nwrote {out}")
    missed = [r for r in rows if r.verdict() == "MISSED"]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
