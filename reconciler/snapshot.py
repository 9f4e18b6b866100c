"""A site repo as one snapshot: from a working directory, a revision of a local Git repo,
or a dict of files (what the controller's Git source hands over), to a validation result.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import git
from git.objects.blob import Blob

from reconciler import load, validate
from reconciler.problems import Problem, Severity


def from_files(label: str, files: Mapping[str, bytes]) -> load.Loaded:
    """Parse the YAML files of a snapshot held in memory. Pure."""
    loaded = load.Loaded(root=label)
    for path in sorted(files):
        if not path.endswith(load.YAML_SUFFIXES) or any(
            part.startswith(".") for part in path.split("/")
        ):
            continue
        raw = files[path]
        if len(raw) > load.MAX_FILE_BYTES:
            loaded.problems.append(
                Problem(
                    path,
                    1,
                    1,
                    Severity.error,
                    f"file is {len(raw)} bytes; the limit is {load.MAX_FILE_BYTES} (split it up)",
                )
            )
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            loaded.problems.append(
                Problem(
                    path, 1, 1, Severity.error, f"not UTF-8 text: {exc.reason} at byte {exc.start}"
                )
            )
            continue
        documents, problems = load.parse(path, text)
        loaded.documents.extend(documents)
        loaded.problems.extend(problems)
        loaded.texts[path] = text
    return loaded


def files_at_revision(repo_dir: str | Path, revision: str) -> dict[str, bytes]:
    """The regular files of `revision` in the Git repo at `repo_dir` (symlinks left out)."""
    repo = git.Repo(repo_dir, search_parent_directories=True)
    try:
        commit = repo.commit(revision)
        prefix = Path(repo_dir).resolve().relative_to(Path(repo.working_dir).resolve()).as_posix()
        tree = commit.tree if prefix == "." else commit.tree / prefix
        files: dict[str, bytes] = {}
        for item in tree.traverse():
            if not isinstance(item, Blob) or item.mode & 0o170000 != 0o100000:
                continue  # regular files only: no symlinks, no submodules
            path = str(item.path)
            files[path if prefix == "." else path[len(prefix) + 1 :]] = item.data_stream.read()
        return files
    finally:
        repo.close()


def validate_revision(repo_dir: str | Path, revision: str) -> validate.Validation:
    label = f"{repo_dir}@{revision}"
    return validate.run(from_files(label, files_at_revision(repo_dir, revision)))


def validate_directory(repo_dir: str | Path) -> validate.Validation:
    return validate.run(load.repo(repo_dir))


def validate_files(label: str, files: Mapping[str, bytes]) -> validate.Validation:
    """Validate a snapshot held in memory (a commit's files). Pure."""
    return validate.run(from_files(label, files))
