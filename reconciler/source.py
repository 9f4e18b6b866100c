"""The Git source seam: follow one branch of the site repo in a local bare clone.

The clone lives in the state directory (e.g. ROOT/var/lib/kitting/source). It is bare: the
reconciler never checks files out in place; the loader gets a commit's files through
`files_at` (in memory) or `export` (a fresh directory). Three refs of its own record what
happened, and keep those commits from being garbage-collected:

- refs/kitting/fetched: the branch head as last fetched, accepted or not;
- refs/kitting/accepted: the last head accepted by `fetch` (the base for the next check);
- refs/kitting/applied: set by the controller through `mark_applied`.

Only fast-forward moves are accepted: a new head that does not contain the last accepted
head (and the controller's last applied commit, when given) is a rewritten history and is
refused with `HistoryRewritten`, unless `allow_rewrite=True`.

Signatures: `verify(sha, policy)` checks the commit against a `TrustPolicy`. Build it with
`reconciler.commits.trust_policy` from the operator's settings and the policy of the LAST
APPLIED commit, never from the commit being verified: otherwise anyone who can push could
add their own key in the commit they sign. See docs/git-source.md.

Errors: `TransientSourceError` (remote unreachable, timed out: retry with backoff),
`PermanentSourceError` (no such branch, unknown commit, malformed objects: report once).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import git
from git.objects import Blob
from loguru import logger

from reconciler.audit import CommitInfo
from reconciler.commits import (
    Review,
    SignatureCheck,
    TrustPolicy,
    Verdict,
    allowed_signers_text,
    combine_reviews,
    judge,
    person,
    review_from_message,
    review_lines,
    signature_kind,
    subject,
)

FETCHED = "refs/kitting/fetched"
ACCEPTED = "refs/kitting/accepted"
APPLIED = "refs/kitting/applied"
NOTES_REF = "refs/notes/kitting"
NOTES_REMOTE_REF = "refs/kitting/notes-remote"

FETCH_TIMEOUT = 120.0
MAX_TREE_BYTES = 256 * 1024 * 1024
MAX_FIRST_PARENT_CHAIN = 100_000

_REGULAR_MODES = (0o100644, 0o100755)
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_BRANCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,99}")


class SourceError(Exception):
    """A Git source failure; `reason` is a CamelCase constant for the status."""

    reason = "SourceFailed"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class TransientSourceError(SourceError):
    """Worth retrying with backoff: the remote is unreachable or slow."""

    reason = "GitUnreachable"


class PermanentSourceError(SourceError):
    """Retrying will not help until the input changes."""

    reason = "SourceRejected"


class HistoryRewritten(PermanentSourceError):
    """The branch moved to a head that does not contain the last accepted commit."""

    reason = "HistoryRewritten"

    def __init__(self, message: str, *, old_sha: str, new_sha: str) -> None:
        super().__init__(message)
        self.old_sha = old_sha
        self.new_sha = new_sha


@dataclass(frozen=True)
class FetchResult:
    old_sha: str | None
    """The head accepted before this fetch (None on the first fetch)."""
    new_sha: str
    fast_forward: bool
    """False only when a rewrite was accepted with allow_rewrite=True."""

    @property
    def changed(self) -> bool:
        return self.old_sha != self.new_sha


def is_safe_path(path: str) -> bool:
    """A tree path that stays inside an export directory and is not Git's own.

    transfer.fsckObjects already refuses such trees on fetch; this is the second lock.
    """
    parts = path.split("/")
    return (
        bool(path)
        and not path.startswith("/")
        and "\0" not in path
        and all(part not in ("", ".", "..") and part.lower() != ".git" for part in parts)
    )


def is_valid_branch(branch: str) -> bool:
    """A branch name safe to put into a refspec (a subset of git check-ref-format)."""
    return (
        _BRANCH.fullmatch(branch) is not None
        and ".." not in branch
        and "//" not in branch
        and not branch.endswith(("/", ".", ".lock"))
        and "/." not in branch
    )


def remote_location(url_or_path: str, cwd: str) -> str:
    """What to hand git: URLs and scp-like `host:path` as they are, local paths made absolute
    (git runs inside the clone, where a relative path would mean something else)."""
    if url_or_path.startswith("-"):
        raise ValueError(f"a Git source must not start with '-': {url_or_path!r}")
    if "://" in url_or_path or re.match(r"[^/]+:", url_or_path):
        return url_or_path
    return os.path.normpath(os.path.join(cwd, url_or_path))


def classify_fetch_failure(stderr: str, branch: str, url: str) -> SourceError:
    """Turn git fetch's complaint into a transient or permanent error (LC_ALL=C messages)."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    said = [line for line in lines if line.startswith(("fatal:", "error:"))] or lines[-2:]
    detail = " ".join(said) or "no output"
    if "couldn't find remote ref" in stderr.lower():
        return PermanentSourceError(
            f"branch {branch!r} does not exist in the site repo {url} ({detail})",
            reason="BranchNotFound",
        )
    if "fsck" in stderr or "did not send all necessary objects" in stderr:
        return PermanentSourceError(
            f"the site repo {url} sent malformed objects, refused ({detail})",
            reason="ObjectsRefused",
        )
    return TransientSourceError(f"fetching branch {branch!r} from {url} failed: {detail}")


class GitSource:
    """One branch of one site repo, mirrored into `checkout_dir` (a bare repository).

    Not thread-safe; one controller owns one state directory. Close it (or use `with`) to
    stop GitPython's helper processes.
    """

    def __init__(
        self,
        url_or_path: str,
        checkout_dir: str | os.PathLike[str],
        branch: str = "main",
        *,
        gnupg_home: str | os.PathLike[str] | None = None,
        fetch_timeout: float = FETCH_TIMEOUT,
        push_notes: bool = False,
    ) -> None:
        if not is_valid_branch(branch):
            raise PermanentSourceError(f"invalid branch name {branch!r}", reason="InvalidBranch")
        self.url = remote_location(url_or_path, os.getcwd())
        self.checkout_dir = Path(checkout_dir)
        self.branch = branch
        self.gnupg_home = None if gnupg_home is None else str(gnupg_home)
        self.fetch_timeout = fetch_timeout
        self.push_notes = push_notes
        self._repo: git.Repo | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> GitSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None

    @property
    def repo(self) -> git.Repo:
        """The local clone, created empty on first use."""
        if self._repo is None:
            if not (self.checkout_dir / "HEAD").exists():
                self.checkout_dir.mkdir(parents=True, exist_ok=True)
                # no template: no sample hooks or other files from the host in our clone
                git.Git().execute(
                    ["git", "init", "--bare", "--quiet", "--template=", str(self.checkout_dir)],
                    env=self._env(),
                )
                with git.Repo(self.checkout_dir).config_writer() as settings:
                    # a reflog of refs/kitting/* shows every accepted and applied move
                    settings.set_value("core", "logAllRefUpdates", "always")
            self._repo = git.Repo(self.checkout_dir)
        return self._repo

    # ------------------------------------------------------------------ fetch

    def fetch(self, *, since: str | None = None, allow_rewrite: bool = False) -> FetchResult:
        """Fetch the branch; accept the new head if it fast-forwards from the last accepted
        head and from `since` (the controller's last applied commit), else raise
        HistoryRewritten unless allow_rewrite. A refused head stays refused on later fetches:
        the base only moves when a head is accepted."""
        log = logger.bind(target=self.branch, commit=None)
        code, _, stderr = self._git(
            "-c",
            "transfer.fsckObjects=true",
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-recurse-submodules",
            "--no-write-fetch-head",
            self.url,
            f"+refs/heads/{self.branch}:{FETCHED}",
            timeout=self.fetch_timeout,
        )
        if code != 0:
            error = classify_fetch_failure(stderr, self.branch, self.url)
            log.warning(f"fetch failed ({error.reason}): {error}")
            raise error
        new = self._resolve(FETCHED)
        if new is None:  # git said it fetched, yet wrote no commit there
            raise PermanentSourceError(f"fetching {self.branch!r} gave no commit")
        old = self._resolve(ACCEPTED)
        bases = list(dict.fromkeys(b for b in (old, since) if b))
        missing = [b for b in bases if not self._contains(new, b)]
        log = log.bind(commit=new)
        if missing and not allow_rewrite:
            message = (
                f"branch {self.branch!r} moved to {new[:12]}, which does not contain "
                f"{', '.join(b[:12] for b in missing)}: the history was rewritten (a force "
                "push?); refused. Allow rewrites in the reconciler settings to accept it."
            )
            log.error(f"fetch refused: {message}")
            raise HistoryRewritten(message, old_sha=missing[0], new_sha=new)
        if new != old:
            self._update_ref(ACCEPTED, new, old, "kitting: accepted fetched head")
        result = FetchResult(old, new, fast_forward=not missing)
        if missing:
            log.warning(f"fetch accepted a rewritten history (allow_rewrite), was {old}")
        elif result.changed:
            log.info(f"fetched {old} -> {new}")
        else:
            log.debug("fetched, no change")
        return result

    def head(self) -> str | None:
        """The last accepted head, or None before the first fetch."""
        return self._resolve(ACCEPTED)

    def mark_applied(self, sha: str) -> None:
        """Record the commit the server now runs (also keeps it from garbage collection)."""
        sha = self._commit_sha(sha)
        self._update_ref(APPLIED, sha, None, "kitting: applied")
        logger.bind(target=self.branch, commit=sha).info("marked applied")

    def applied(self) -> str | None:
        return self._resolve(APPLIED)

    # ------------------------------------------------------------------ files

    def files_at(self, sha: str, *, max_bytes: int = MAX_TREE_BYTES) -> dict[str, bytes]:
        """The regular files of a commit, relative path -> content (symlinks and submodules
        are left out: nothing may point outside the repo)."""
        return {path: blob.data_stream.read() for path, blob in self._blobs(sha, max_bytes)}

    def export(
        self, sha: str, directory: str | os.PathLike[str], *, max_bytes: int = MAX_TREE_BYTES
    ) -> list[str]:
        """Write the regular files of a commit into `directory`, which must not exist yet
        (it is created with its parents). Returns the paths left out (symlinks, submodules).
        Nothing follows a link: every file is created new with O_EXCL|O_NOFOLLOW."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=False)
        skipped = self._skipped(sha)
        for path, blob in self._blobs(sha, max_bytes):
            destination = target / path
            destination.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            descriptor = os.open(destination, flags, 0o644)
            with os.fdopen(descriptor, "wb") as handle:
                shutil.copyfileobj(blob.data_stream, handle)
        logger.bind(target=self.branch, commit=sha).debug(f"exported to {target}")
        return skipped

    def _blobs(self, sha: str, max_bytes: int) -> Iterator[tuple[str, Blob]]:
        total = 0
        for item in self._commit(sha).tree.traverse():
            if not isinstance(item, Blob) or item.mode not in _REGULAR_MODES:
                continue
            path = str(item.path)
            if not is_safe_path(path):
                raise PermanentSourceError(
                    f"commit {sha[:12]} holds an unsafe path {path!r}", reason="UnsafePath"
                )
            total += item.size
            if total > max_bytes:
                raise PermanentSourceError(
                    f"commit {sha[:12]} holds more than {max_bytes} bytes of files",
                    reason="TreeTooLarge",
                )
            yield path, item

    def _skipped(self, sha: str) -> list[str]:
        skipped = []
        for item in self._commit(sha).tree.traverse():
            if isinstance(item, Blob | git.Submodule) and item.mode not in _REGULAR_MODES:
                skipped.append(str(item.path))  # symlinks and submodules
        return sorted(skipped)

    # ------------------------------------------------------------------ signatures

    def verify(self, sha: str, policy: TrustPolicy) -> Verdict:
        """Check the commit's signature under `policy` (see `reconciler.commits.judge`).

        The policy must come from the operator's settings and the last APPLIED commit, never
        from `sha` itself (`reconciler.commits.trust_policy`)."""
        sha = self._commit_sha(sha)
        log = logger.bind(target=self.branch, commit=sha)
        kind = signature_kind(self._raw_commit(sha))
        check = None
        gpg = shutil.which("gpg") is not None
        if policy.require_signed and kind is not None:
            check = self._signature_check(sha, policy)
        verdict = judge(sha, kind, check, policy, gpg_available=gpg)
        (log.info if verdict.ok else log.warning)(f"verify: {verdict.reason}: {verdict.message}")
        return verdict

    def _signature_check(self, sha: str, policy: TrustPolicy) -> SignatureCheck:
        with tempfile.TemporaryDirectory(prefix="kitting-signers-") as scratch:
            signers_file = Path(scratch) / "allowed_signers"
            signers_file.write_text(allowed_signers_text(policy.signers), encoding="utf-8")
            code, out, err = self._git(
                "-c",
                f"gpg.ssh.allowedSignersFile={signers_file}",
                "log",
                "-1",
                "--no-show-signature",
                "--format=%G?%x00%GF%x00%GP%x00%GS",
                sha,
            )
        if code != 0:
            return SignatureCheck("E", signer=err.strip())
        status, key, primary, signer = ([*out.split("\0"), "", "", ""])[:4]
        return SignatureCheck(status.strip(), key.strip(), primary.strip(), signer.strip())

    # ------------------------------------------------------------------ metadata

    def commit_info(self, sha: str, *, head: str | None = None) -> CommitInfo:
        """Who made the commit and the review behind it, as the audit log records it."""
        sha = self._commit_sha(sha)
        commit = self._commit(sha)
        return CommitInfo(
            sha=sha,
            author=person(commit.author.name or "", commit.author.email or ""),
            committer=person(commit.committer.name or "", commit.committer.email or ""),
            # the committer date: when the commit took its place in the history
            date=commit.committed_datetime.isoformat(),
            subject=subject(_text(commit.message)),
            review=review_lines(self.review(sha, head=head)),
        )

    def review(self, sha: str, *, head: str | None = None) -> Review | None:
        """The review behind a commit. When its own message names no pull/merge request and
        `head` is given, the first-parent merge of `head` that brought it in is read too."""
        sha = self._commit_sha(sha)
        review = review_from_message(_text(self._commit(sha).message))
        if head is not None and (review is None or not review.platform):
            merge = self.introducing_merge(sha, head)
            if merge is not None:
                merge_review = review_from_message(_text(self._commit(merge).message))
                review = combine_reviews(review, merge_review, merge)
        return review

    def introducing_merge(self, sha: str, head: str) -> str | None:
        """The merge on `head`'s first-parent chain that brought `sha` in, or None when `sha`
        is on that chain itself (committed or fast-forwarded straight onto the branch) or
        not in head's history at all."""
        sha, head = self._commit_sha(sha), self._commit_sha(head)
        code, out, _ = self._git(
            "rev-list", "--first-parent", f"--max-count={MAX_FIRST_PARENT_CHAIN}", head
        )
        chain = out.split() if code == 0 else []
        if sha in chain or not chain:
            return None
        # The chain commits that contain sha are the newest ones: bisect for the oldest.
        low, high = 0, len(chain)  # invariant: chain[:low] contain sha, chain[high:] do not
        while low < high:
            middle = (low + high) // 2
            if self._contains(chain[middle], sha):
                low = middle + 1
            else:
                high = middle
        return chain[low - 1] if low > 0 else None

    # ------------------------------------------------------------------ notes

    def add_note(self, sha: str, text: str) -> None:
        """Attach (replace) the kitting note of a commit in the local clone, and push the
        notes to the remote when push_notes is set."""
        sha = self._commit_sha(sha)
        code, _, err = self._git(
            "notes", f"--ref={NOTES_REF}", "add", "-f", "-F", "-", sha, stdin=text
        )
        if code != 0:
            raise PermanentSourceError(f"could not add a note to {sha[:12]}: {err.strip()}")
        logger.bind(target=self.branch, commit=sha).info("note added")
        if self.push_notes:
            self.publish_notes()

    def note(self, sha: str) -> str | None:
        code, out, _ = self._git("notes", f"--ref={NOTES_REF}", "show", self._commit_sha(sha))
        return out if code == 0 else None

    def publish_notes(self) -> None:
        """Push refs/notes/kitting; when the remote's notes moved on, merge them in (lines of
        both kept) and push once more."""
        for attempt in range(2):
            code, _, err = self._git(
                "push", "--quiet", self.url, f"{NOTES_REF}:{NOTES_REF}", timeout=self.fetch_timeout
            )
            if code == 0:
                logger.bind(target=self.branch, commit=None).info("notes pushed")
                return
            if attempt == 1 or "rejected" not in err:
                raise TransientSourceError(f"pushing notes failed: {err.strip()}")
            code, _, err = self._git(
                "fetch",
                "--quiet",
                "--no-write-fetch-head",
                self.url,
                f"+{NOTES_REF}:{NOTES_REMOTE_REF}",
                timeout=self.fetch_timeout,
            )
            if code == 0:
                code, _, err = self._git(
                    "notes", f"--ref={NOTES_REF}", "merge", "-q", "-s", "cat_sort_uniq",
                    NOTES_REMOTE_REF,
                )  # fmt: skip
            if code != 0:
                raise TransientSourceError(f"merging remote notes failed: {err.strip()}")

    # ------------------------------------------------------------------ plumbing

    def _env(self) -> dict[str, str]:
        env = {
            "GIT_TERMINAL_PROMPT": "0",  # a daemon has nobody to type a password
            # notes need an identity; the host's may be unset
            "GIT_AUTHOR_NAME": "kitting reconciler",
            "GIT_AUTHOR_EMAIL": "kitting@localhost",
            "GIT_COMMITTER_NAME": "kitting reconciler",
            "GIT_COMMITTER_EMAIL": "kitting@localhost",
        }
        if "GIT_SSH_COMMAND" not in os.environ:
            env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
        if self.gnupg_home is not None:
            env["GNUPGHOME"] = self.gnupg_home
        return env

    def _git(
        self, *args: str, timeout: float | None = None, stdin: str | None = None
    ) -> tuple[int, str, str]:
        """Run git in the clone; (exit code, stdout, stderr), never raising on failure."""
        repo = self.repo
        if stdin is None:
            result = repo.git.execute(
                ["git", *args],
                with_extended_output=True,
                with_exceptions=False,
                kill_after_timeout=timeout,
                env=self._env(),
            )
        else:
            # GitPython's stdin needs a file object; a pipe through it would be no simpler
            with tempfile.TemporaryFile() as handle:
                handle.write(stdin.encode("utf-8"))
                handle.seek(0)
                result = repo.git.execute(
                    ["git", *args],
                    istream=handle,
                    with_extended_output=True,
                    with_exceptions=False,
                    kill_after_timeout=timeout,
                    env=self._env(),
                )
        code, out, err = result
        return int(code), _text(out), _text(err)

    def _resolve(self, ref: str) -> str | None:
        if ref.startswith("-"):
            return None  # never let a name become an option
        code, out, _ = self._git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        return out.strip() if code == 0 else None

    def _commit_sha(self, rev: str) -> str:
        if rev.startswith("-"):
            raise PermanentSourceError(f"not a commit: {rev!r}", reason="UnknownRevision")
        sha = self._resolve(rev)
        if sha is None or _SHA.fullmatch(sha) is None:
            raise PermanentSourceError(
                f"commit {rev!r} is not in the local clone", reason="UnknownRevision"
            )
        return sha

    def _commit(self, sha: str) -> git.Commit:
        return self.repo.commit(self._commit_sha(sha))

    def _raw_commit(self, sha: str) -> bytes:
        return bytes(self.repo.odb.stream(bytes.fromhex(sha)).read())

    def _contains(self, descendant: str, ancestor: str) -> bool:
        """True when `ancestor` is in the history of `descendant` (both present locally)."""
        old, new = self._resolve(ancestor), self._resolve(descendant)
        if old is None or new is None:
            return False  # e.g. a wiped clone whose old commits the remote no longer has
        code, _, _ = self._git("merge-base", "--is-ancestor", old, new)
        return code == 0

    def _update_ref(self, ref: str, new: str, old: str | None, why: str) -> None:
        args = ["update-ref", "-m", why, ref, new]
        if old is not None:
            args.append(old)  # compare-and-swap: refuse if someone moved it meanwhile
        code, _, err = self._git(*args)
        if code != 0:
            raise PermanentSourceError(f"could not move {ref}: {err.strip()}")


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


__all__ = [
    "CommitInfo",
    "FetchResult",
    "GitSource",
    "HistoryRewritten",
    "PermanentSourceError",
    "SourceError",
    "TransientSourceError",
    "Verdict",
    "classify_fetch_failure",
    "is_safe_path",
    "is_valid_branch",
    "remote_location",
]
