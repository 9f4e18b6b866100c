"""How problems are shown: a huge value quoted in a message cannot flood the output."""

from __future__ import annotations

import json

from reconciler.problems import Problem, Severity, format_json, format_text


def test_a_huge_message_and_field_are_cut_with_what_was_left_out() -> None:
    value = "02:" + "a" * 5000
    problem = Problem(
        "departments/x.yaml", 7, 12, Severity.error, f"{value!r} is not a MAC", "pcs[0]" * 100
    )
    # 1000 characters of the message: the quote and the first 999 of the value
    message = f"'{value[:999]}… (+{len(value) + 2 + len(' is not a MAC') - 1000} characters)"
    field = "pcs[0]" * 33 + "pc… (+400 characters)"
    assert problem.text() == f"departments/x.yaml:7:12: error: {message} ({field})"
    shown = json.loads(format_json([problem], valid=False))["problems"][0]
    assert (shown["message"], shown["field"]) == (message, field)
    assert format_text([problem]).splitlines()[0] == problem.text()


def test_a_short_message_is_shown_as_it_is() -> None:
    problem = Problem("site.yaml", 3, 1, Severity.warning, "short", "timezone")
    assert problem.text() == "site.yaml:3:1: warning: short (timezone)"
