"""Signed commits against real keys: SSH (ssh-keygen) and OpenPGP (gpg), and the trust root."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.commits import Reason, TrustPolicy, Verdict, trust_policy
from reconciler.desired import AllowedSigner, GitPolicy
from reconciler.load import parse
from reconciler.source import GitSource

from .gitrepos import KeyMaker, Upstream


@pytest.fixture
def source(upstream: Upstream, tmp_path: Path) -> Iterator[GitSource]:
    with GitSource(str(upstream.path), tmp_path / "clone") as opened:
        yield opened


def required(*signers: AllowedSigner) -> TrustPolicy:
    return TrustPolicy(require_signed=True, signers=signers)


def site_yaml(*signers: tuple[str, str]) -> str:
    """A site file's git policy (only the part the trust root reads)."""
    lines = ["git:", "  require_signed: true", "  allowed_signers:"]
    for principal, key in signers:
        lines += [f"    - principal: {principal}", f"      ssh_key: {key}"]
    return "\n".join(lines) + "\n"


def policy_of(source: GitSource, sha: str) -> GitPolicy:
    """The git policy as the commit `sha` wrote it (what the controller would have applied)."""
    text = source.files_at(sha)["site.yaml"].decode()
    documents, problems = parse("site.yaml", text)
    assert problems == []
    return GitPolicy.model_validate(documents[0].data["git"])


def test_ssh_signatures(upstream: Upstream, source: GitSource, ssh_keys: KeyMaker) -> None:
    alice_key, alice_pub = ssh_keys("alice")
    mallory_key, _ = ssh_keys("mallory")
    alice = AllowedSigner(principal="alice@example.org", ssh_key=alice_pub)
    good = upstream.commit({"a": "1"}, "by alice", sign=("ssh", str(alice_key)))
    bad = upstream.commit({"a": "2"}, "by mallory", sign=("ssh", str(mallory_key)))
    unsigned = upstream.commit({"a": "3"}, "by nobody")
    source.fetch()

    verdict = source.verify(good, required(alice))
    assert (verdict.ok, verdict.reason, verdict.signer) == (
        True,
        Reason.SignatureVerified,
        "alice@example.org",
    )
    refused = source.verify(bad, required(alice))
    assert (refused.ok, refused.reason, refused.signer) == (False, Reason.UnknownSigner, None)
    assert bad[:12] in refused.message
    assert source.verify(unsigned, required(alice)) == Verdict(
        False, Reason.Unsigned, f"commit {unsigned[:12]} is not signed"
    )
    assert source.verify(bad, required()).reason is Reason.NoAllowedSigners
    assert source.verify(bad, TrustPolicy(require_signed=False)).ok


def test_a_commit_cannot_admit_its_own_key(
    upstream: Upstream, source: GitSource, ssh_keys: KeyMaker
) -> None:
    alice_key, alice_pub = ssh_keys("alice")
    bob_key, bob_pub = ssh_keys("bob")
    operator = [AllowedSigner(principal="alice@example.org", ssh_key=alice_pub)]
    first = upstream.commit(
        {"site.yaml": site_yaml(("alice@example.org", alice_pub))},
        "alice trusts herself",
        sign=("ssh", str(alice_key)),
    )
    # bob signs a commit that adds bob: judged by the applied policy, that is refused
    grab = upstream.commit(
        {"site.yaml": site_yaml(("alice@example.org", alice_pub), ("bob@example.org", bob_pub))},
        "bob adds himself",
        sign=("ssh", str(bob_key)),
    )
    source.fetch()

    bootstrap = trust_policy(
        operator, operator_require_signed=True, last_applied=None, last_applied_sha=None
    )
    assert source.verify(first, bootstrap).ok
    after_first = trust_policy(
        [],
        operator_require_signed=False,
        last_applied=policy_of(source, first),
        last_applied_sha=first,
    )
    refused = source.verify(grab, after_first)
    assert (refused.ok, refused.reason) == (False, Reason.UnknownSigner)
    assert first[:12] in refused.message  # the status names the trust root used
    # the same check with the commit's own policy would have let it through
    own = trust_policy(
        [],
        operator_require_signed=False,
        last_applied=policy_of(source, grab),
        last_applied_sha=grab,
    )
    assert source.verify(grab, own).ok

    # the way in: alice signs the commit that adds bob; after it was applied bob may sign
    upstream.git("reset", "--quiet", "--hard", first)
    admit = upstream.commit(
        {"site.yaml": site_yaml(("alice@example.org", alice_pub), ("bob@example.org", bob_pub))},
        "alice adds bob",
        sign=("ssh", str(alice_key)),
    )
    by_bob = upstream.commit(
        {"pcs.yaml": "x: 1\n"}, "bob's first change", sign=("ssh", str(bob_key))
    )
    source.fetch(allow_rewrite=True)
    assert source.verify(admit, after_first).ok
    after_admit = trust_policy(
        [],
        operator_require_signed=False,
        last_applied=policy_of(source, admit),
        last_applied_sha=admit,
    )
    verdict = source.verify(by_bob, after_admit)
    assert (verdict.ok, verdict.signer) == (True, "bob@example.org")


def test_a_commit_cannot_switch_signing_off_for_itself(
    upstream: Upstream, source: GitSource, ssh_keys: KeyMaker
) -> None:
    alice_key, alice_pub = ssh_keys("alice")
    first = upstream.commit(
        {"site.yaml": site_yaml(("alice@example.org", alice_pub))},
        "signed",
        sign=("ssh", str(alice_key)),
    )
    off = upstream.commit(
        {"site.yaml": "git:\n  require_signed: false\n"}, "unsigned, turns it off"
    )
    source.fetch()
    applied = trust_policy(
        [],
        operator_require_signed=False,
        last_applied=policy_of(source, first),
        last_applied_sha=first,
    )

    verdict = source.verify(off, applied)

    assert (verdict.ok, verdict.reason) == (False, Reason.Unsigned)


def _gpg(home: Path, *args: str) -> str:
    done = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--quiet", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _new_key(home: Path, uid: str) -> str:
    _gpg(home, "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key", uid,
         "ed25519", "sign", "never")  # fmt: skip
    listing = _gpg(home, "--with-colons", "--list-secret-keys", uid)
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


def test_openpgp_signatures(
    upstream: Upstream, gnupg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    carol = _new_key(gnupg, "Carol <carol@example.org>")
    dave = _new_key(gnupg, "Dave <dave@example.org>")
    # the reconciler's own keyring holds public keys only; carol's and dave's were imported
    keyring = tmp_path / "reconciler-gpg"
    keyring.mkdir(mode=0o700)
    exported = tmp_path / "public.asc"
    _gpg(gnupg, "--armor", "--output", str(exported), "--export", carol, dave)
    _gpg(keyring, "--no-autostart", "--import", str(exported))  # public keys need no agent
    signing = {"GNUPGHOME": str(gnupg)}
    by_carol = upstream.commit({"a": "1"}, "carol", sign=("openpgp", carol), env=signing)
    by_dave = upstream.commit({"a": "2"}, "dave", sign=("openpgp", dave), env=signing)
    policy = required(AllowedSigner(principal="carol@example.org", openpgp_fingerprint=carol))

    with GitSource(str(upstream.path), tmp_path / "clone", gnupg_home=keyring) as source:
        source.fetch()
        verdict = source.verify(by_carol, policy)
        assert (verdict.ok, verdict.reason, verdict.signer) == (
            True,
            Reason.SignatureVerified,
            "carol@example.org",
        )
        assert carol in verdict.message
        refused = source.verify(by_dave, policy)
        assert (refused.ok, refused.reason) == (False, Reason.UnknownSigner)
        assert dave in refused.message

    empty = tmp_path / "empty-gpg"
    empty.mkdir(mode=0o700)
    with GitSource(str(upstream.path), tmp_path / "clone", gnupg_home=empty) as source:
        missing_key = source.verify(by_carol, policy)
        assert (missing_key.ok, missing_key.reason) == (False, Reason.SignatureUncheckable)

        # without gpg on the PATH git would call the commit unsigned; the verdict must not
        only_git = tmp_path / "bin"
        only_git.mkdir()
        os.symlink(subprocess.check_output(["which", "git"], text=True).strip(), only_git / "git")
        monkeypatch.setenv("PATH", str(only_git))
        no_gpg = source.verify(by_carol, policy)
        assert (no_gpg.ok, no_gpg.reason) == (False, Reason.OpenPgpUnavailable)
