"""How fast `kitctl plan` is, from the site repo to the plan, for 1,000 to 50,000 PCs.

For each size a site is generated in a temporary folder (the generator of
bench/validate.py: 1,000 PCs per department, every 10th a laptop with a dock, half with a
fixed IP) and measured twice: against an empty sandbox root (everything is new), and
against a root converged by one `kitctl apply --services none` (nothing to do). Each
measurement runs in a fresh Python process of its own: validate, render, plan (observe +
compare) and format the text plan (diffs included), best of three runs in a row, and the
peak resident set size of that process (`ru_maxrss`: interpreter and imports included).
The whole command, `kitctl plan` (start-up included, output to /dev/null), is timed as
well, best of three, with its own peak RSS; so is the one apply. The table goes to stdout
and to bench/results/render_plan.md; the exit status is 1 when a target is missed.

    .venv/bin/python bench/render_plan.py [--sizes 1000,10000,50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository: bench/ is a namespace package
from bench import validate as validate_bench  # noqa: E402  (the site generator)

RESULTS = HERE / "results" / "render_plan.md"
KITCTL = Path(sys.executable).parent / "kitctl"
EMPTY_TARGET_S = {10_000: 2.0}  # validate + render + plan against an empty root (issue 3)
NOOP_TARGET_S = {10_000: 1.0}  # a no-op plan on a converged site (issue 3)
MEMORY_TARGET_MB = 400
QUIET = {**os.environ, "KITCTL_LOG_LEVEL": "WARNING"}


# ---------------------------------------------------------------------------- in a child


@dataclass(frozen=True)
class Stages:
    validate_s: float
    render_s: float
    plan_s: float
    format_s: float
    total_s: float
    summary: str
    rss_peak_kb: int


def measure(repo: str, root: str, repeat: int) -> Stages:
    """Runs in the child process: the stages `kitctl plan` goes through, best total of
    `repeat` runs, and the peak RSS."""
    from reconciler import load, plan_format, reconcile, render, snapshot
    from reconciler.layout import Layout

    layout = Layout()
    best: Stages | None = None
    for _ in range(repeat):
        began = time.perf_counter()
        validation = snapshot.validate_directory(repo)
        validated = time.perf_counter()
        assert validation.desired is not None, validation.problems[:3]
        with load.gc_paused():  # as commands/plan.py does
            rendered = render.all(validation.desired, layout)
            rendered_at = time.perf_counter()
            built, _ = reconcile.plan_rendered(rendered, reconcile.seams_for(root, layout), layout)
        planned = time.perf_counter()
        text = plan_format.text(built)
        done = time.perf_counter()
        assert text
        stages = Stages(
            validated - began,
            rendered_at - validated,
            planned - rendered_at,
            done - planned,
            done - began,
            built.summary,
            0,
        )
        if best is None or stages.total_s < best.total_s:
            best = stages
        del validation, rendered, built, text
    assert best is not None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return Stages(**{**asdict(best), "rss_peak_kb": peak})


def measure_in_child(repo: Path, root: Path, repeat: int) -> Stages:
    done = subprocess.run(
        [sys.executable, __file__, "--measure", str(repo), str(root), "--repeat", str(repeat)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1200,
    )
    return Stages(**json.loads(done.stdout))


# ---------------------------------------------------------------------------- commands


def run_command(argv: list[str], expect: int) -> tuple[float, float]:
    """Wall time (s) and peak RSS (MB) of one command, output to /dev/null."""
    began = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.PIPE, env=QUIET)
        assert process.stderr is not None
        errors = process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - began
    code = os.waitstatus_to_exitcode(status)
    process.returncode = code  # reaped by wait4 already
    if code != expect:
        raise SystemExit(f"{' '.join(argv)}: exit {code}, expected {expect}\n{errors[-2000:]!r}")
    return elapsed, usage.ru_maxrss / 1024


def best_command(argv: list[str], expect: int, repeat: int) -> tuple[float, float]:
    runs = [run_command(argv, expect) for _ in range(repeat)]
    return min(t for t, _ in runs), max(m for _, m in runs)


# ---------------------------------------------------------------------------- report


@dataclass
class Row:
    pcs: int
    root: str  # "empty" or "converged"
    stages: Stages
    command_s: float
    command_mb: float

    def target_s(self) -> float | None:
        targets = EMPTY_TARGET_S if self.root == "empty" else NOOP_TARGET_S
        return targets.get(self.pcs)

    def verdict(self) -> str:
        limit = self.target_s()
        heavy = max(self.stages.rss_peak_kb / 1024, self.command_mb) >= MEMORY_TARGET_MB
        slow = limit is not None and max(self.stages.total_s, self.command_s) >= limit
        if slow or heavy:
            return "MISSED"
        return f"ok (< {limit:g} s, < {MEMORY_TARGET_MB} MB)" if limit else "ok"


def table(rows: list[Row]) -> str:
    lines = [
        "| PCs | root | validate | render | plan | format | in-process total "
        "| `kitctl plan` | peak RSS (process / command) | target |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        s = r.stages
        lines.append(
            f"| {r.pcs:,} | {r.root} | {s.validate_s:.2f} s | {s.render_s:.2f} s "
            f"| {s.plan_s:.2f} s | {s.format_s:.2f} s | {s.total_s:.2f} s | {r.command_s:.2f} s "
            f"| {s.rss_peak_kb / 1024:.0f} / {r.command_mb:.0f} MB | {r.verdict()} |"
        )
    return "\n".join(lines) + "\n"


def apply_table(applies: list[tuple[int, float, float]]) -> str:
    lines = ["| PCs | `kitctl apply --services none` (once) | peak RSS |", "|---:|---:|---:|"]
    lines += [f"| {pcs:,} | {secs:.1f} s | {mb:.0f} MB |" for pcs, secs, mb in applies]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--measure", nargs=2, metavar=("REPO", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(asdict(measure(args.measure[0], args.measure[1], args.repeat))))
        return 0
    rows: list[Row] = []
    applies: list[tuple[int, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="kitctl-bench-") as tmp:
        for pcs in (int(size) for size in args.sizes.split(",")):
            repo, empty, converged = (Path(tmp) / f"{pcs}-{n}" for n in ("repo", "empty", "root"))
            validate_bench.generate(repo, pcs, "split")
            plan = [str(KITCTL), "plan", "--repo", str(repo), "--detailed-exitcode", "--root"]

            stages = measure_in_child(repo, empty, args.repeat)
            if not stages.summary.startswith(f"+{pcs} reservations"):
                raise SystemExit(f"{pcs} PCs, empty root: unexpected plan: {stages.summary}")
            rows.append(
                Row(pcs, "empty", stages, *best_command([*plan, str(empty)], 2, args.repeat))
            )
            print(table(rows[-1:]).splitlines()[-1], flush=True)

            apply = [str(KITCTL), "apply", "--repo", str(repo), "--root", str(converged)]
            seconds, megabytes = run_command([*apply, "--services", "none"], 0)
            applies.append((pcs, seconds, megabytes))

            stages = measure_in_child(repo, converged, args.repeat)
            if not stages.summary.startswith("no changes"):
                raise SystemExit(f"{pcs} PCs, converged root: unexpected plan: {stages.summary}")
            command = best_command([*plan, str(converged)], 0, args.repeat)
            rows.append(Row(pcs, "converged", stages, *command))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    report = (
        "# render and plan: speed and memory\n\n"
        f"Generated by `bench/render_plan.py` on {validate_bench.machine()}.\n\n"
        "Stages in one process (best of 3 runs in a row): validate = `load.repo` + "
        "`validate.run`; render = `render.all`; plan = observe the root + `plan.build`; "
        "format = the text plan with its diffs. `kitctl plan` = the whole command, start-up "
        "included, best of 3. Peak RSS = `ru_maxrss` of the measuring process / of the "
        "command.\n\n"
        f"{table(rows)}\n"
        "Setting up each converged root:\n\n"
        f"{apply_table(applies)}"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report, encoding="utf-8")
    print(f"\n{table(rows)}\n{apply_table(applies)}\nwrote {out}")
    return 1 if any(r.verdict() == "MISSED" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
