"""The benchmark's generated sites are what it claims: valid, or one error per PC."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from reconciler import load, validate

BENCH = Path(__file__).resolve().parents[2] / "bench"


def bench_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("layout", ["split", "single"])
def test_generated_sites_are_valid(tmp_path: Path, layout: str) -> None:
    bench = bench_module("validate")
    bench.generate(tmp_path / "site", 2000, layout)
    result = validate.run(load.repo(tmp_path / "site"))
    assert result.problems == ()
    assert result.desired is not None
    assert len(result.desired.pcs()) == 2000
    assert len(result.desired.batches) == 3  # one per department, and the unicast one
    files = sorted(
        p.relative_to(tmp_path / "site").as_posix() for p in (tmp_path / "site").rglob("*")
    )
    departments = (
        ["departments/all.yaml"]
        if layout == "single"
        else [
            "departments/dept-000.yaml",
            "departments/dept-001.yaml",
        ]
    )
    assert files == sorted(
        ["batches.yaml", "departments", "images.yaml", "site.yaml", *departments]
    )


def test_the_wrong_site_has_one_error_per_pc(tmp_path: Path) -> None:
    bench = bench_module("validate")
    bench.generate(tmp_path / "site", 1000, bench.WRONG)
    result = validate.run(load.repo(tmp_path / "site"))
    hostnames = [p for p in result.problems if p.field.endswith(".hostname")]
    assert len(hostnames) == 1000
    assert len(result.problems) == 1003  # and the unicast batch's three PCs are unknown


def test_run_finds_every_benchmark_but_itself() -> None:
    run = bench_module("run")
    names = [p.name for p in run.scripts([])]
    assert "validate.py" in names
    assert "run.py" not in names
    assert names == sorted(names)
    with pytest.raises(SystemExit, match="no such benchmark: nope"):
        run.scripts(["nope"])


def test_the_lab_bench_runs_only_when_named() -> None:
    run = bench_module("run")
    assert "lab_transfer.py" not in [p.name for p in run.scripts([])]
    assert [p.name for p in run.scripts(["lab_transfer"])] == ["lab_transfer.py"]
