"""Run every benchmark in bench/: each bench/NAME.py (except this one and _*.py) in turn.

A new measurement only needs a script of its own here, runnable as `python bench/NAME.py`,
that exits non-zero when it misses its targets. Arguments after `--` go to every script.
The scripts in SEPARATE run only when named (they need root, or take minutes).

    .venv/bin/python bench/run.py [NAME ...] [-- ARGS]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEPARATE = {"lab_transfer": "make bench-lab (root: it builds network namespaces)"}


def scripts(names: list[str]) -> list[Path]:
    found = sorted(
        p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_")
    )
    if names:
        unknown = sorted(set(names) - {p.stem for p in found})
        if unknown:
            raise SystemExit(f"no such benchmark: {', '.join(unknown)}")
        return [p for p in found if p.stem in names]
    for p in found:
        if p.stem in SEPARATE:
            print(f"== {p.stem}: not run by default; {SEPARATE[p.stem]}", flush=True)
    return [p for p in found if p.stem not in SEPARATE]


def main(argv: list[str]) -> int:
    names, extra = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    failed = []
    for script in scripts(names):
        print(f"== {script.stem}", flush=True)
        if subprocess.run([sys.executable, str(script), *extra], check=False).returncode != 0:
            failed.append(script.stem)
    if failed:
        print(f"missed targets or failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
