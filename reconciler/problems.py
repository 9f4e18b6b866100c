"""Problems found in a site repo, and how they are shown to people and to tools.

A problem always says where (file, line, column), which field, what is wrong and what would
be valid. Purely computational.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum

MAX_MESSAGE = 1000
"""Characters of a message shown; a message quoting a huge value (a 50 MB "MAC") is cut,
so one bad value cannot flood a terminal, a log line or a pull-request comment."""
MAX_FIELD = 200


def shorten(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters and how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… (+{len(text) - limit} characters)"


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
        shown = self.shown()
        where = f" ({shown.field})" if shown.field else ""
        return f"{self.file}:{self.line}:{self.column}: {self.severity}: {shown.message}{where}"

    def shown(self) -> Problem:
        """As shown to people and tools: message and field path cut to a readable length."""
        return replace(
            self,
            message=shorten(self.message, MAX_MESSAGE),
            field=shorten(self.field, MAX_FIELD),
        )


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
        "problems": [asdict(p.shown()) for p in sorted(set(problems))],
    }
    return json.dumps(body, indent=2, sort_keys=True) + "\n"
