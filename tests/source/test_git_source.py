"""GitSource against real repositories: fetch, fast-forward only, files, metadata, notes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.source import (
    FetchResult,
    GitSource,
    HistoryRewritten,
    PermanentSourceError,
    TransientSourceError,
)

from .gitrepos import Upstream


@pytest.fixture
def clone_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "var" / "lib" / "kitting" / "source"


@pytest.fixture
def source(upstream: Upstream, clone_dir: Path) -> Iterator[GitSource]:
    with GitSource(str(upstream.path), clone_dir) as opened:
        yield opened


def test_first_fetch_clones_and_exposes_the_files(
    upstream: Upstream, source: GitSource, clone_dir: Path, tmp_path: Path
) -> None:
    sha = upstream.commit({"site.yaml": "kind: Site\n", "pcs/a.yaml": "kind: Department\n"}, "one")

    result = source.fetch()

    assert result == FetchResult(old_sha=None, new_sha=sha, fast_forward=True)
    assert result.changed
    assert source.head() == sha
    assert (clone_dir / "HEAD").is_file()
    assert not (clone_dir / "site.yaml").exists()  # bare: no files checked out in place
    assert source.files_at(sha) == {
        "site.yaml": b"kind: Site\n",
        "pcs/a.yaml": b"kind: Department\n",
    }
    out = tmp_path / "export"
    assert source.export(sha, out) == []
    assert (out / "pcs" / "a.yaml").read_bytes() == b"kind: Department\n"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "pcs",
        "pcs/a.yaml",
        "site.yaml",
    ]


def test_a_merge_is_fetched_as_a_fast_forward(upstream: Upstream, source: GitSource) -> None:
    base = upstream.commit({"site.yaml": "v: 1\n"}, "base")
    source.fetch()
    upstream.git("checkout", "--quiet", "-b", "feature")
    feature = upstream.commit({"pcs.yaml": "pc: 1\n"}, "Add a PC")
    upstream.git("checkout", "--quiet", "main")
    upstream.git(
        "merge", "--quiet", "--no-ff", "-m", "Merge pull request #5 from ann/feature", "feature"
    )
    merge = upstream.head()

    result = source.fetch()

    assert result == FetchResult(old_sha=base, new_sha=merge, fast_forward=True)
    assert source.files_at(merge) == {"site.yaml": b"v: 1\n", "pcs.yaml": b"pc: 1\n"}
    assert source.introducing_merge(feature, merge) == merge
    again = source.fetch()
    assert again == FetchResult(old_sha=merge, new_sha=merge, fast_forward=True)
    assert not again.changed


def test_a_force_push_is_refused_and_stays_refused(upstream: Upstream, source: GitSource) -> None:
    upstream.commit({"site.yaml": "v: 1\n"}, "one")
    two = upstream.commit({"site.yaml": "v: 2\n"}, "two")
    source.fetch()
    upstream.git("reset", "--quiet", "--hard", "HEAD~1")
    rewritten = upstream.commit({"site.yaml": "v: 3\n"}, "three, instead of two")

    with pytest.raises(HistoryRewritten) as refused:
        source.fetch()
    assert refused.value.reason == "HistoryRewritten"
    assert (refused.value.old_sha, refused.value.new_sha) == (two, rewritten)
    assert two[:12] in str(refused.value)
    assert source.head() == two
    with pytest.raises(HistoryRewritten):  # the refusal does not wear off on the next fetch
        source.fetch()

    accepted = source.fetch(allow_rewrite=True)

    assert accepted == FetchResult(old_sha=two, new_sha=rewritten, fast_forward=False)
    assert source.head() == rewritten
    assert source.fetch() == FetchResult(rewritten, rewritten, fast_forward=True)


def test_since_guards_the_applied_commit_across_a_fresh_clone(
    upstream: Upstream, tmp_path: Path
) -> None:
    one = upstream.commit({"site.yaml": "v: 1\n"}, "one")
    applied = upstream.commit({"site.yaml": "v: 2\n"}, "two")
    with GitSource(str(upstream.path), tmp_path / "first") as first:
        first.fetch()
    upstream.git("reset", "--quiet", "--hard", one)
    upstream.git("commit", "--quiet", "--amend", "-m", "one, amended")

    # the state directory's clone was lost; the controller still knows what it applied
    with GitSource(str(upstream.path), tmp_path / "second") as second:
        with pytest.raises(HistoryRewritten):
            second.fetch(since=applied)
        assert second.head() is None
    upstream.git("reset", "--quiet", "--hard", applied)
    later = upstream.commit({"site.yaml": "v: 3\n"}, "three")
    with GitSource(str(upstream.path), tmp_path / "third") as third:
        assert third.fetch(since=applied) == FetchResult(None, later, fast_forward=True)


def test_unreachable_remotes_are_transient(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-repo"
    with (
        GitSource(str(missing), tmp_path / "a") as source,
        pytest.raises(TransientSourceError) as gone,
    ):
        source.fetch()
    assert gone.value.reason == "GitUnreachable"
    assert str(missing) in str(gone.value)
    # port 1 on loopback: nothing listens, the connection is refused at once
    with (
        GitSource("git://127.0.0.1:1/site.git", tmp_path / "b", fetch_timeout=10) as source,
        pytest.raises(TransientSourceError, match=r"127\.0\.0\.1"),
    ):
        source.fetch()


def test_a_missing_branch_is_permanent(upstream: Upstream, tmp_path: Path) -> None:
    upstream.commit({"site.yaml": "v: 1\n"}, "one")
    with (
        GitSource(str(upstream.path), tmp_path / "c", branch="production") as source,
        pytest.raises(PermanentSourceError) as missing,
    ):
        source.fetch()
    assert missing.value.reason == "BranchNotFound"
    assert "'production'" in str(missing.value)
    with pytest.raises(PermanentSourceError, match="invalid branch"):
        GitSource(str(upstream.path), tmp_path / "d", branch="main..evil")


def test_symlinks_are_never_exported(upstream: Upstream, source: GitSource, tmp_path: Path) -> None:
    (upstream.path / "site.yaml").write_text("v: 1\n")
    os.symlink("/etc/passwd", upstream.path / "passwd.yaml")
    upstream.git("add", "--all")
    upstream.git("commit", "--quiet", "-m", "with a link")
    sha = source.fetch().new_sha

    assert source.files_at(sha) == {"site.yaml": b"v: 1\n"}
    out = tmp_path / "export"
    assert source.export(sha, out) == ["passwd.yaml"]
    assert sorted(os.listdir(out)) == ["site.yaml"]
    with pytest.raises(FileExistsError):
        source.export(sha, out)  # never into a directory that already holds something


def test_the_applied_commit_is_recorded(upstream: Upstream, source: GitSource) -> None:
    one = upstream.commit({"site.yaml": "v: 1\n"}, "one")
    source.fetch()
    assert source.applied() is None
    source.mark_applied(one)
    two = upstream.commit({"site.yaml": "v: 2\n"}, "two")
    assert source.fetch() == FetchResult(one, two, fast_forward=True)
    assert (source.applied(), source.head()) == (one, two)
    with pytest.raises(HistoryRewritten):
        source.fetch(since="-1")  # not a commit: it cannot be proven contained


def test_unknown_commits_are_permanent_errors(upstream: Upstream, source: GitSource) -> None:
    upstream.commit({"site.yaml": "v: 1\n"}, "one")
    source.fetch()
    with pytest.raises(PermanentSourceError) as unknown:
        source.files_at("0" * 40)
    assert unknown.value.reason == "UnknownRevision"
    with pytest.raises(PermanentSourceError):
        source.commit_info("--output=/tmp/x")


def test_commit_info_names_people_date_subject_and_review(
    upstream: Upstream, source: GitSource
) -> None:
    upstream.commit({"site.yaml": "v: 1\n"}, "base")
    upstream.git("checkout", "--quiet", "-b", "feature")
    feature = upstream.commit(
        {"pcs.yaml": "pc: 1\n"},
        "Add the lab PCs\n\nThey arrived today.\n\nReviewed-by: Bo Reviewer <bo@example.org>\n",
        env={"GIT_COMMITTER_NAME": "Cy Committer", "GIT_COMMITTER_EMAIL": "cy@example.org"},
    )
    upstream.git("checkout", "--quiet", "main")
    upstream.git(
        "merge",
        "--quiet",
        "--no-ff",
        "-m",
        "Merge branch 'feature' into 'main'",
        "-m",
        "Add the lab PCs",
        "-m",
        "See merge request kitting/site!42",
        "feature",
        env={"GIT_COMMITTER_DATE": "2024-05-06T07:08:09-0330"},
    )
    merge = upstream.head()
    source.fetch()

    info = source.commit_info(merge)
    assert info.sha == merge
    assert info.author == "Ann Author <ann@example.org>"
    assert info.subject == "Merge branch 'feature' into 'main'"
    assert info.review == ("GitLab merge request kitting/site!42",)
    assert info.date == "2024-05-06T07:08:09-03:30"  # the committer's date and offset

    inner = source.commit_info(feature, head=merge)
    assert inner.author == "Ann Author <ann@example.org>"
    assert inner.committer == "Cy Committer <cy@example.org>"
    assert inner.subject == "Add the lab PCs"
    assert inner.review == (
        f"GitLab merge request kitting/site!42 (merge {merge[:12]})",
        "Reviewed-by: Bo Reviewer <bo@example.org>",
    )
    # without the head, only the commit's own trailers tell
    assert source.commit_info(feature).review == ("Reviewed-by: Bo Reviewer <bo@example.org>",)


def test_introducing_merge_follows_the_first_parent_chain(
    upstream: Upstream, source: GitSource
) -> None:
    upstream.commit({"base": "0"}, "base")
    upstream.git("checkout", "--quiet", "-b", "feature")
    f1 = upstream.commit({"f1": "1"}, "f1")
    f2 = upstream.commit({"f2": "2"}, "f2")
    upstream.git("checkout", "--quiet", "main")
    m1 = upstream.commit({"m1": "1"}, "m1")
    upstream.git(
        "merge", "--quiet", "--no-ff", "-m", "Merge pull request #7 from a/feature", "feature"
    )
    merge7 = upstream.head()
    m2 = upstream.commit({"m2": "2"}, "m2")
    upstream.git("checkout", "--quiet", "feature")
    f3 = upstream.commit({"f3": "3"}, "f3")
    upstream.git("checkout", "--quiet", "main")
    upstream.git(
        "merge", "--quiet", "--no-ff", "-m", "Merge pull request #8 from a/feature", "feature"
    )
    merge8 = upstream.head()
    head = upstream.commit({"m3": "3"}, "m3")
    source.fetch()

    assert source.introducing_merge(f1, head) == merge7
    assert source.introducing_merge(f2, head) == merge7
    assert source.introducing_merge(f3, head) == merge8
    for on_chain in (m1, merge7, m2, head):
        assert source.introducing_merge(on_chain, head) is None
    assert source.introducing_merge(f3, merge7) is None  # not in that history at all
    assert source.commit_info(f1, head=head).review == (
        f"GitHub pull request #7 (merge {merge7[:12]})",
    )


def test_notes_are_kept_and_pushed(upstream: Upstream, clone_dir: Path, tmp_path: Path) -> None:
    sha = upstream.commit({"site.yaml": "v: 1\n"}, "one")
    with (
        GitSource(str(upstream.path), clone_dir, push_notes=True) as first,
        GitSource(str(upstream.path), tmp_path / "other", push_notes=True) as second,
    ):
        first.fetch()
        second.fetch()
        first.add_note(sha, "applied on server A: 3 files written")
        assert first.note(sha) == "applied on server A: 3 files written"
        # the second server's notes ref is behind the remote's: it merges, then pushes
        second.add_note(sha, "applied on server B: 1 file written")

    shown = upstream.git("notes", "--ref=kitting", "show", sha)
    assert shown.splitlines() == [
        "applied on server A: 3 files written",
        "applied on server B: 1 file written",
    ]


def test_a_local_path_is_resolved_against_the_callers_directory(
    upstream: Upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sha = upstream.commit({"site.yaml": "v: 1\n"}, "one")
    monkeypatch.chdir(tmp_path)
    with GitSource("upstream", tmp_path / "clone") as source:
        assert source.url == str(tmp_path / "upstream")
        assert source.fetch().new_sha == sha
    # the clone can be reopened and keeps its accepted head
    with GitSource("upstream", tmp_path / "clone") as reopened:
        assert reopened.head() == sha
    listed = subprocess.run(
        ["git", "--git-dir", str(tmp_path / "clone"), "for-each-ref", "--format=%(refname)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert listed == ["refs/kitting/accepted", "refs/kitting/fetched"]
