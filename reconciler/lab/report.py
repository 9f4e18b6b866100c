"""What a rehearsal found: per PC and per step, the lab-wide checks, as a table and JSON.

Purely computational: the rehearsal collects the results, this module only shapes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class StepResult:
    name: str
    ok: bool
    detail: str
    seconds: float
    bytes: int = 0


@dataclass(frozen=True)
class PcResult:
    """One simulated PC: who it is, what it was offered, and each step it played."""

    name: str
    hostname: str
    firmware: str
    macs: tuple[str, ...]
    in_site: bool
    expected_address: str
    """The reserved address, or "pool" for a PC that takes one from the pool."""
    address: str = ""
    boot_file: str = ""
    menu: str = ""
    steps: tuple[StepResult, ...] = ()
    client: str = ""
    """The imaging client it ran: "ocs-sr" (Clonezilla's own), "lab" (udp-receiver |
    decompress | partclone), or "" when it was not imaged."""

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)

    @property
    def seconds(self) -> float:
        return sum(step.seconds for step in self.steps)

    @property
    def bytes(self) -> int:
        return sum(step.bytes for step in self.steps)

    @property
    def result(self) -> str:
        """ "ok", or "failed: STEP" naming the first step that failed."""
        if not self.steps:
            return "not run"
        failed = next((step for step in self.steps if not step.ok), None)
        return "ok" if failed is None else f"failed: {failed.name}"


@dataclass(frozen=True)
class CheckResult:
    """A lab-wide check (firewall, SSH, production network, the controller's pass)."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Report:
    prefix: str
    run_dir: str
    pcs: tuple[PcResult, ...] = ()
    checks: tuple[CheckResult, ...] = ()
    commit: str = ""
    seconds: float = 0.0
    error: str = ""
    """Why the rehearsal stopped before its end ("" when it ran through)."""
    kept: bool = False
    facts: dict[str, str] = field(default_factory=dict)
    """Where things are: the server's namespace, its addresses, the report file..."""

    @property
    def ok(self) -> bool:
        """Everything ran and every PC and check held."""
        if self.error or not self.pcs or not self.checks:
            return False
        return all(pc.ok for pc in self.pcs) and all(check.ok for check in self.checks)


def to_json(report: Report) -> str:
    """The report as JSON (sorted keys, one trailing newline)."""
    body = {
        "ok": report.ok,
        "prefix": report.prefix,
        "run_dir": report.run_dir,
        "commit": report.commit,
        "seconds": round(report.seconds, 3),
        "error": report.error,
        "kept": report.kept,
        "facts": dict(report.facts),
        "pcs": [
            {
                "name": pc.name,
                "hostname": pc.hostname,
                "firmware": pc.firmware,
                "macs": list(pc.macs),
                "in_site": pc.in_site,
                "expected_address": pc.expected_address,
                "address": pc.address,
                "boot_file": pc.boot_file,
                "menu": pc.menu,
                "client": pc.client,
                "ok": pc.ok,
                "result": pc.result,
                "seconds": round(pc.seconds, 3),
                "bytes": pc.bytes,
                "steps": [
                    {
                        "name": step.name,
                        "ok": step.ok,
                        "detail": step.detail,
                        "seconds": round(step.seconds, 3),
                        "bytes": step.bytes,
                    }
                    for step in pc.steps
                ],
            }
            for pc in report.pcs
        ],
        "checks": [
            {"name": check.name, "ok": check.ok, "detail": check.detail} for check in report.checks
        ],
    }
    return json.dumps(body, indent=2, sort_keys=True) + "\n"


_COLUMNS = ("PC", "HOSTNAME", "FIRMWARE", "ADDRESS", "CLIENT", "RESULT", "SECONDS", "BYTES")
_RIGHT = frozenset({"SECONDS", "BYTES"})


def table(pcs: tuple[PcResult, ...]) -> str:
    """The summary table: one row per PC, columns as wide as their widest cell."""
    rows = [
        (
            pc.name,
            pc.hostname if pc.in_site else f"({pc.hostname})",
            pc.firmware,
            pc.address or "-",
            pc.client or "-",
            pc.result,
            f"{pc.seconds:.2f}",
            str(pc.bytes),
        )
        for pc in pcs
    ]
    widths = [max(len(row[i]) for row in [_COLUMNS, *rows]) for i in range(len(_COLUMNS))]
    lines = []
    for row in [_COLUMNS, *rows]:
        cells = [
            cell.rjust(width) if name in _RIGHT else cell.ljust(width)
            for cell, width, name in zip(row, widths, _COLUMNS, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def checks_text(checks: tuple[CheckResult, ...]) -> str:
    """One line per lab-wide check: ok/FAIL, its name, what was seen."""
    return "".join(
        f"{'ok  ' if check.ok else 'FAIL'}  {check.name}: {check.detail}\n" for check in checks
    )


def progress_line(pc: str, step: StepResult) -> str:
    """The live line printed as each step of a PC ends."""
    verdict = "ok  " if step.ok else "FAIL"
    return f"{pc:<6} {step.name:<10} {verdict} {step.seconds:6.2f} s  {step.detail}"
