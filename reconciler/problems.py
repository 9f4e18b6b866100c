"""Problems found in a site repo, and how they are shown to people and to tools.

A problem always says where (file, line, column), which field, what is wrong and what would
be valid. Purely computational.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum


class Severity(StrEnum):
    error = "error"
    warning = "warning"


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    line: int
    column: int
    severity: Severity
    message: str
    field: str = ""

    def text(self) -> str:
        where = f" ({self.field})" if self.field else ""
        return f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.message}{where}"


def errors(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity is Severity.error]


def warnings(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity is Severity.warning]


def format_text(problems: Sequence[Problem]) -> str:
    lines = [p.text() for p in sorted(set(problems))]
    n_err, n_warn = len(errors(problems)), len(warnings(problems))
    lines.append(f"{n_err} error{'s' * (n_err != 1)}, {n_warn} warning{'s' * (n_warn != 1)}")
    return "\n".join(lines) + "\n"


def format_json(problems: Sequence[Problem], *, valid: bool) -> str:
    body = {
        "valid": valid,
        "errors": len(errors(problems)),
        "warnings": len(warnings(problems)),
        "problems": [asdict(p) for p in sorted(set(problems))],
    }
    return json.dumps(body, indent=2, sort_keys=True) + "\n"
