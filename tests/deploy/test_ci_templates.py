"""deploy/ci/: the site-repo CI templates parse, run validate and `plan --base`, and call
kitctl only with arguments its own parser accepts (so a renamed flag breaks this test,
not a team's pipeline)."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
from ruamel.yaml import YAML

from reconciler import cli
from tests.deploy.unitfile import REPO

GITHUB = REPO / "deploy" / "ci" / "github-actions.yml"
GITLAB = REPO / "deploy" / "ci" / "gitlab-ci.yml"
SHELL_ENDS = {">", ">>", "||", "&&", "|", ";", "2>&1"}


def _load(path: Any) -> dict[Any, Any]:
    data: dict[Any, Any] = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    return data


def _github_steps() -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = _load(GITHUB)["jobs"]["review"]["steps"]
    return steps


def _gitlab_job() -> dict[str, Any]:
    job: dict[str, Any] = _load(GITLAB)["kitctl-review"]
    return job


def _scripts() -> dict[str, str]:
    github = "\n".join(step.get("run", "") for step in _github_steps())
    gitlab = "\n".join([*_gitlab_job()["before_script"], *_gitlab_job()["script"]])
    return {"github": github, "gitlab": gitlab}


def _kitctl_commands(script: str) -> list[list[str]]:
    """Each `kitctl ...` command line, cut where the shell takes over (redirects, ||)."""
    commands = []
    for line in script.splitlines():
        if not line.strip().startswith("kitctl "):
            continue
        words = shlex.split(line.strip(), comments=True)
        end = next((i for i, w in enumerate(words) if w in SHELL_ENDS), len(words))
        commands.append(words[1:end])
    return commands


@pytest.mark.parametrize("name", ["github", "gitlab"])
def test_runs_validate_in_text_and_json_and_plan_against_a_base(name: str) -> None:
    commands = _kitctl_commands(_scripts()[name])
    assert ["validate", "--format", "text"] in commands
    assert ["validate", "--format", "json"] in commands
    plans = [c for c in commands if c[0] == "plan"]
    assert len(plans) == 1
    plan = plans[0]
    assert plan[plan.index("--base") + 1] == "$base"
    assert plan[plan.index("--head") + 1] == "HEAD"
    assert plan[plan.index("--format") + 1] == "markdown"
    assert plan[plan.index("--repo") + 1] == "."


@pytest.mark.parametrize("name", ["github", "gitlab"])
def test_every_kitctl_call_is_accepted_by_the_cli_parser(name: str) -> None:
    commands = _kitctl_commands(_scripts()[name])
    assert len(commands) == 3
    for argv in commands:
        args = cli.parser().parse_args(argv)
        assert args.command == argv[0]


@pytest.mark.parametrize("path", [GITHUB, GITLAB])
def test_marks_where_kitctl_comes_from_as_a_placeholder(path: Any) -> None:
    text = path.read_text(encoding="utf-8")
    assert ">>> PLACEHOLDER" in text
    assert 'KITCTL_PIP_SPEC: "kitting-reconciler @ git+https://' in text


def test_github_checks_out_all_history_of_pull_requests_only() -> None:
    data = _load(GITHUB)
    # YAML 1.2 (ruamel's safe loader): `on` is a string key, not the boolean of YAML 1.1.
    assert set(data["on"]) == {"pull_request"}
    assert data["permissions"] == {"contents": "read", "pull-requests": "write"}
    checkout = next(s for s in _github_steps() if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0


def test_github_comments_once_and_edits_it_after_every_run() -> None:
    steps = {step["name"]: step for step in _github_steps()}
    plan = steps["Plan"]
    comment = steps["Post the plan as a pull-request comment"]
    assert comment["uses"].startswith("actions/github-script@")
    script = comment["with"]["script"]
    assert "<!-- kitctl-plan -->" in script
    assert "updateComment" in script
    assert "createComment" in script
    # Both run after a failed validation too, so the comment never shows a stale plan.
    assert "!cancelled()" in plan["if"]
    assert "!cancelled()" in comment["if"]
    artifacts = steps["Keep the reports"]
    assert artifacts["uses"].startswith("actions/upload-artifact@")
    assert artifacts["with"]["path"].split() == ["kitctl-validate.json", "kitctl-plan.md"]


def test_gitlab_runs_on_merge_requests_with_all_history() -> None:
    job = _gitlab_job()
    assert job["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'}]
    assert job["variables"]["GIT_DEPTH"] == "0"
    assert job["artifacts"]["when"] == "always"
    assert job["artifacts"]["paths"] == ["kitctl-validate.json", "kitctl-plan.md"]
    script = "\n".join(job["script"])
    assert "KITCTL_GITLAB_TOKEN" in script
    assert "PRIVATE-TOKEN" in script
    assert "<!-- kitctl-plan -->" in script
    # The job's own verdict comes last, after the note was posted.
    assert job["script"][-1] == 'exit "$status"'
