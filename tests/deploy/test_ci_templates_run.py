"""The CI templates' shell steps, run for real: bash, git and this checkout's kitctl on a
site repo made here; GitLab's notes API is a fake served on 127.0.0.1 by this test.

Marked integration: real programs end to end, a few seconds per test (each job runs kitctl
three times). They need no namespaces; the marker keeps `make unit` fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.deploy.unitfile import REPO, RequirePrograms

pytestmark = pytest.mark.integration

GIT_ENV = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Engineer",
    "GIT_AUTHOR_EMAIL": "engineer@example.com",
    "GIT_COMMITTER_NAME": "Engineer",
    "GIT_COMMITTER_EMAIL": "engineer@example.com",
}
BATCH = "batches/2026-12-07-sales-multicast.yaml"
TOKEN = "glpat-test"  # a fake, checked by the fake API below
BOT = 42


def _env(**extra: str) -> dict[str, str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, **GIT_ENV, "PATH": path, **extra}


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout.strip()


def _bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # How both CI systems run a step: bash, stop at the first failing command.
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _edit_batch(repo: Path, old: str, new: str) -> None:
    path = repo / BATCH
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


@dataclass
class FakeNotes:
    """GitLab's user and merge-request notes endpoints, as far as the template uses them."""

    notes: list[dict[str, Any]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)


@pytest.fixture
def gitlab_api() -> Iterator[tuple[str, FakeNotes]]:
    state = FakeNotes()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, code: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            body: dict[str, Any] = json.loads(raw)
            return body

        def _authorised(self) -> bool:
            if self.headers.get("PRIVATE-TOKEN") == TOKEN:
                return True
            self._answer(401, {"message": "401 Unauthorized"})
            return False

        def do_GET(self) -> None:
            state.calls.append(f"GET {self.path}")
            if not self._authorised():
                return
            if self.path == "/api/v4/user":
                self._answer(200, {"id": BOT})
            else:
                self._answer(200, state.notes if self.path.endswith("page=1") else [])

        def do_POST(self) -> None:
            state.calls.append(f"POST {self.path}")
            if self._authorised():
                note = {"id": 100 + len(state.notes), "author": {"id": BOT}, **self._body()}
                state.notes.append(note)
                self._answer(201, note)

        def do_PUT(self) -> None:
            state.calls.append(f"PUT {self.path}")
            if self._authorised():
                note = next(n for n in state.notes if self.path.endswith(f"/notes/{n['id']}"))
                note.update(self._body())
                self._answer(200, note)

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/api/v4", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def site_origin(tmp_path: Path, require_programs: RequirePrograms) -> Path:
    """A bare 'origin' whose main holds the example site."""
    require_programs("git", "bash")
    origin = tmp_path / "origin.git"
    seed = tmp_path / "seed"
    _git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(origin))
    _git(tmp_path, "clone", "--quiet", str(origin), str(seed))
    subprocess.run(["cp", "-r", f"{REPO}/site-repo-example/.", str(seed)], check=True, timeout=30)
    _git(seed, "add", "-A")
    _git(seed, "commit", "--quiet", "-m", "site")
    _git(seed, "push", "--quiet", "origin", "HEAD:main")
    return origin


def _branch(origin: Path, name: str, old: str, new: str) -> str:
    work = origin.parent / f"work-{name}"
    _git(origin.parent, "clone", "--quiet", str(origin), str(work))
    _git(work, "checkout", "--quiet", "-b", name)
    _edit_batch(work, old, new)
    _git(work, "commit", "--quiet", "-am", f"{name}: move the sales batch")
    _git(work, "push", "--quiet", "origin", name)
    return _git(work, "rev-parse", "HEAD")


def _gitlab_script() -> str:
    job = YAML(typ="safe").load((REPO / "deploy/ci/gitlab-ci.yml").read_text(encoding="utf-8"))
    return "\n".join(job["kitctl-review"]["script"])


def _gitlab_job(origin: Path, branch: str, api: str, iid: str, run: int) -> tuple[Path, Any]:
    """Check out `branch` as GitLab's runner does (detached at its head) and run the job."""
    checkout = origin.parent / f"job-{branch}-{run}"
    _git(origin.parent, "clone", "--quiet", str(origin), str(checkout))
    _git(checkout, "checkout", "--quiet", "--detach", f"origin/{branch}")
    env = _env(
        CI_API_V4_URL=api,
        CI_PROJECT_ID="kitting/site-tokyo",
        CI_MERGE_REQUEST_IID=iid,
        CI_MERGE_REQUEST_TARGET_BRANCH_NAME="main",
        CI_JOB_URL="https://gitlab.example.com/kitting/site-tokyo/-/jobs/1",
        KITCTL_GITLAB_TOKEN=TOKEN,
    )
    return checkout, _bash(_gitlab_script(), checkout, env)


def test_gitlab_job_posts_one_note_and_edits_it(
    site_origin: Path, gitlab_api: tuple[str, FakeNotes]
) -> None:
    api, state = gitlab_api
    head = _branch(site_origin, "later", "2026-12-07T09:00", "2026-12-07T10:00")
    _, first = _gitlab_job(site_origin, "later", api, "7", 1)
    assert first.returncode == 0, first.stderr + first.stdout
    assert "plan note created" in first.stdout
    second_dir, second = _gitlab_job(site_origin, "later", api, "7", 2)
    assert second.returncode == 0, second.stderr + second.stdout
    assert "plan note updated" in second.stdout
    assert [c.split("?")[0] for c in state.calls] == [
        "GET /api/v4/user",
        "GET /api/v4/projects/kitting%2Fsite-tokyo/merge_requests/7/notes",
        "POST /api/v4/projects/kitting%2Fsite-tokyo/merge_requests/7/notes",
        "GET /api/v4/user",
        "GET /api/v4/projects/kitting%2Fsite-tokyo/merge_requests/7/notes",
        "PUT /api/v4/projects/kitting%2Fsite-tokyo/merge_requests/7/notes/100",
    ]
    assert len(state.notes) == 1
    body = state.notes[0]["body"]
    assert body.startswith(f"<!-- kitctl-plan -->\n# kitctl plan for {head[:12]} into `main`\n")
    # The schedule change is what this merge request is about; the files do not change.
    assert "sales-2026-12-07" in body
    assert "10:00" in body
    assert json.loads((second_dir / "kitctl-validate.json").read_text())["valid"] is True


def test_gitlab_job_fails_but_still_posts_an_invalid_head(
    site_origin: Path, gitlab_api: tuple[str, FakeNotes]
) -> None:
    api, state = gitlab_api
    _branch(site_origin, "broken", "image: win11-sales-2025", "image: no-such-image")
    checkout, done = _gitlab_job(site_origin, "broken", api, "8", 1)
    assert done.returncode == 1
    assert "no-such-image" in done.stdout
    body = state.notes[0]["body"]
    assert "(FAILED)" in body.splitlines()[1]
    assert "Invalid desired state" in body
    assert json.loads((checkout / "kitctl-validate.json").read_text())["valid"] is False


def test_gitlab_job_reports_a_merge_conflict_and_posts_nothing_without_a_token(
    site_origin: Path, gitlab_api: tuple[str, FakeNotes]
) -> None:
    api, state = gitlab_api
    _branch(site_origin, "later", "2026-12-07T09:00", "2026-12-07T10:00")
    _branch(site_origin, "main-moves", "2026-12-07T09:00", "2026-12-07T11:00")
    main_work = site_origin.parent / "work-main-moves"
    _git(main_work, "push", "--quiet", "origin", "HEAD:main")
    checkout = site_origin.parent / "job-conflict"
    _git(site_origin.parent, "clone", "--quiet", str(site_origin), str(checkout))
    _git(checkout, "checkout", "--quiet", "--detach", "origin/later")
    env = _env(
        CI_API_V4_URL=api,
        CI_PROJECT_ID="1",
        CI_MERGE_REQUEST_IID="9",
        CI_MERGE_REQUEST_TARGET_BRANCH_NAME="main",
        KITCTL_GITLAB_TOKEN="",
    )
    done = _bash(_gitlab_script(), checkout, env)
    assert done.returncode == 1
    assert "KITCTL_GITLAB_TOKEN is not set" in done.stdout
    assert (checkout / "kitctl-plan.md").read_text().startswith("## Merge conflict\n")
    assert state.calls == []


def test_github_plan_step_compares_the_trial_merge_with_its_target(
    tmp_path: Path, require_programs: RequirePrograms
) -> None:
    require_programs("git", "bash")
    repo = tmp_path / "site"
    subprocess.run(["cp", "-r", f"{REPO}/site-repo-example", str(repo)], check=True, timeout=30)
    _git(repo, "init", "--quiet", "--initial-branch=main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "--quiet", "-m", "site")
    target = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "--quiet", "-b", "later")
    _edit_batch(repo, "2026-12-07T09:00", "2026-12-07T10:00")
    _git(repo, "commit", "--quiet", "-am", "move the sales batch")
    # What actions/checkout gives a pull_request run: GitHub's merge into the target.
    _git(repo, "checkout", "--quiet", "--detach", "main")
    _git(repo, "merge", "--quiet", "--no-ff", "--no-edit", "later")
    _git(repo, "update-ref", "refs/remotes/origin/main", "main")
    workflow = YAML(typ="safe").load((REPO / "deploy/ci/github-actions.yml").read_text())
    step = next(s for s in workflow["jobs"]["review"]["steps"] if s.get("name") == "Plan")
    outputs = tmp_path / "github_output"
    outputs.write_text("")
    done = _bash(step["run"], repo, _env(GITHUB_OUTPUT=str(outputs), BASE_REF="main"))
    assert done.returncode == 0, done.stderr
    assert outputs.read_text() == f"base={target}\n"
    plan = (repo / "kitctl-plan.md").read_text()
    assert "sales-2026-12-07" in plan
    assert "10:00" in plan
