"""A site repo as one snapshot: from a working directory, a revision of a local Git repo,
or a dict of files (what the controller's Git source hands over), to a validation result.

A snapshot from Git is read like a working directory (`load.repo`): the same files count
(*.yaml / *.yml, nothing below a hidden name), the same size limit, the same labels, and a
file that could not be read to its end keeps validation from claiming "no Site".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import git
from git.objects.blob import Blob
from git.objects.tree import Tree

from reconciler import load, validate
from reconciler.problems import Problem, Severity


class RevisionError(LookupError):
    """A revision (or the site repo folder in it) that cannot be read; the message says why."""


def _label(path: str) -> str:
    # A file name is untrusted too: keep every report line one line (as load does).
    return path if path.isprintable() else path.encode("unicode_escape").decode("ascii")


def from_files(label: str, files: Mapping[str, bytes]) -> load.Loaded:
    """Parse the YAML files of a snapshot held in memory. Pure."""
    with load.gc_paused():
        return _from_files(label, files)


def _from_files(label: str, files: Mapping[str, bytes]) -> load.Loaded:
    loaded = load.Loaded(root=label)
    for path in sorted(files):
        if not path.endswith(load.YAML_SUFFIXES) or any(
            part.startswith(".") for part in path.split("/")
        ):
            continue
        name = _label(path)
        raw = files[path]
        if len(raw) > load.MAX_FILE_BYTES:
            loaded.problems.append(
                Problem(
                    name,
                    1,
                    1,
                    Severity.error,
                    f"file is {len(raw)} bytes; at most {load.MAX_FILE_BYTES} are read "
                    "(split it into several files)",
                )
            )
            loaded.unread.append(name)
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            before = raw[: exc.start].decode("utf-8", "replace")
            line = before.count("\n") + 1
            column = len(before) - (before.rfind("\n") + 1) + 1
            loaded.problems.append(
                Problem(
                    name,
                    line,
                    column,
                    Severity.error,
                    f"not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot be decoded "
                    f"({exc.reason}); save the file as UTF-8",
                )
            )
            loaded.unread.append(name)
            continue
        # `_parse` also says whether the whole text was read (load.repo uses it the same way).
        documents, problems, complete = load._parse(name, text)
        if not complete:
            loaded.unread.append(name)
        loaded.documents.extend(documents)
        loaded.problems.extend(problems)
        loaded.texts[name] = text
    return loaded


def files_at_revision(repo_dir: str | Path, revision: str) -> dict[str, bytes]:
    """The regular files of `revision` below `repo_dir` (which may be a folder inside its
    Git repository), keyed by their path relative to `repo_dir`; symlinks and submodules
    are left out. Raises RevisionError when the repository, the revision or the folder in
    it does not exist."""
    try:
        repo = git.Repo(repo_dir, search_parent_directories=True)
    except git.NoSuchPathError as error:
        raise RevisionError(f"{repo_dir}: no such directory") from error
    except git.InvalidGitRepositoryError as error:
        raise RevisionError(f"{repo_dir}: not inside a Git repository") from error
    try:
        try:
            tree: Tree = repo.commit(revision).tree
        except (git.BadName, git.BadObject, ValueError) as error:
            raise RevisionError(
                f"{repo_dir}: no revision {revision!r} in this repository"
            ) from error
        top = Path(repo.working_tree_dir or repo.git_dir).resolve()
        try:
            prefix = Path(repo_dir).resolve().relative_to(top).as_posix()
        except ValueError as error:
            raise RevisionError(f"{repo_dir}: not inside the Git repository at {top}") from error
        if prefix != ".":
            try:
                found = tree / prefix
            except KeyError:
                found = None
            if not isinstance(found, Tree):
                raise RevisionError(f"{repo_dir}: the folder {prefix} does not exist at {revision}")
            tree = found
        files: dict[str, bytes] = {}
        for item in tree.traverse():
            if not isinstance(item, Blob) or item.mode & 0o170000 != 0o100000:
                continue  # regular files only: no symlinks, no submodules
            relative = PurePosixPath(str(item.path))
            key = relative if prefix == "." else relative.relative_to(prefix)
            files[key.as_posix()] = item.data_stream.read()
        return files
    finally:
        repo.close()


def revision_sha(repo_dir: str | Path, revision: str) -> str:
    """The full commit id `revision` names (RevisionError when it names none)."""
    try:
        repo = git.Repo(repo_dir, search_parent_directories=True)
    except (git.NoSuchPathError, git.InvalidGitRepositoryError) as error:
        raise RevisionError(f"{repo_dir}: not inside a Git repository") from error
    try:
        commit = repo.commit(revision)
        commit.tree  # noqa: B018 - resolves the object: a well-formed but unknown id fails here
        return str(commit.hexsha)
    except (git.BadName, git.BadObject, ValueError) as error:
        raise RevisionError(f"{repo_dir}: no revision {revision!r} in this repository") from error
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
