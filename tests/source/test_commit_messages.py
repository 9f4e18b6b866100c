"""Pure helpers of the Git source: messages, trailers, reviews, signature verdicts, names."""

from __future__ import annotations

import pytest

from reconciler.commits import (
    Reason,
    Review,
    SignatureCheck,
    SignatureKind,
    Trailer,
    TrustPolicy,
    allowed_signers_text,
    combine_reviews,
    judge,
    parse_trailers,
    review_from_message,
    review_lines,
    signature_kind,
    subject,
    trust_policy,
)
from reconciler.desired import AllowedSigner, GitPolicy
from reconciler.source import (
    PermanentSourceError,
    TransientSourceError,
    classify_fetch_failure,
    is_safe_path,
    is_valid_branch,
    remote_location,
)

ANN = "Ann <ann@example.org>"
BO = "Bo <bo@example.org>"

# ---------------------------------------------------------------------------- trailers


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param("Fix\n\nReviewed-by: " + ANN + "\n", [("Reviewed-by", ANN)], id="one"),
        pytest.param(
            "Fix\n\nbody text\n\nReviewed-by: " + ANN + "\nApproved-by: " + BO,
            [("Reviewed-by", ANN), ("Approved-by", BO)],
            id="two-no-final-newline",
        ),
        pytest.param("Reviewed-by: " + ANN + "\n", [], id="subject-only-is-never-a-trailer"),
        pytest.param("Reviewed-by: " + ANN + "\nsecond line", [], id="first-paragraph"),
        pytest.param(
            "Fix\n\nReviewed-by: " + ANN + "\n\nMore prose after it.\n", [], id="not-last-paragraph"
        ),
        pytest.param("Fix\r\n\r\nReviewed-by: " + ANN + "\r\n", [("Reviewed-by", ANN)], id="crlf"),
        pytest.param(
            "Fix\n\nReviewed-by: " + ANN + "\n\n\n   \n",
            [("Reviewed-by", ANN)],
            id="trailing-blanks",
        ),
        pytest.param(
            "Fix\n\nreviewed-by:   " + ANN + "   \n", [("reviewed-by", ANN)], id="lower-case-spaces"
        ),
        pytest.param(
            "Fix\n\nAcked-by : " + ANN + "\n", [("Acked-by", ANN)], id="space-before-colon"
        ),
        pytest.param(
            "Fix\n\nReviewed-by: Ann\n  <ann@example.org>\n",
            [("Reviewed-by", "Ann <ann@example.org>")],
            id="continuation-line",
        ),
        pytest.param(
            "Fix\n\nThis explains why.\nReviewed-by: " + ANN + "\n",
            [("Reviewed-by", ANN)],
            id="prose-and-known-trailer-half",
        ),
        pytest.param(
            "Fix\n\none\ntwo\nthree\nfour\nReviewed-by: " + ANN + "\n",
            [],
            id="prose-four-to-one-below-quarter",
        ),
        pytest.param(
            "Fix\n\none\ntwo\nthree\nReviewed-by: " + ANN + "\n",
            [("Reviewed-by", ANN)],
            id="prose-three-to-one-exactly-quarter",
        ),
        pytest.param(
            "Fix\n\nSome text\nFoo: bar\n", [], id="prose-with-unknown-key-is-not-a-block"
        ),
        pytest.param(
            "Fix\n\nFoo: bar\nBaz-Qux: 1\n",
            [("Foo", "bar"), ("Baz-Qux", "1")],
            id="only-unknown-trailers",
        ),
        pytest.param(
            "Fix\n\n(cherry picked from commit abc)\nFoo: bar\n",
            [("Foo", "bar")],
            id="cherry-pick-line-counts-as-known",
        ),
        pytest.param(
            "Fix\n\nSee merge request g/p!3\nApproved-by: " + ANN + "\nApproved-by: " + BO,
            [("Approved-by", ANN), ("Approved-by", BO)],
            id="gitlab-approvals-under-reference",
        ),
        pytest.param("Fix\n\nNot a: trailer line at all\n", [], id="key-with-space"),
        pytest.param("", [], id="empty"),
    ],
)
def test_parse_trailers(message: str, expected: list[tuple[str, str]]) -> None:
    assert parse_trailers(message) == tuple(Trailer(k, v) for k, v in expected)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Fix the thing\n\nbody", "Fix the thing"),
        ("Fix the\nthing\n\nbody", "Fix the thing"),
        ("\n\n  Leading blank lines\n", "Leading blank lines"),
        ("", ""),
    ],
)
def test_subject_is_the_first_paragraph(message: str, expected: str) -> None:
    assert subject(message) == expected


# ---------------------------------------------------------------------------- reviews


@pytest.mark.parametrize(
    ("message", "platform", "number", "reference"),
    [
        ("Merge pull request #12 from ann/pcs\n\nAdd PCs", "github", 12, "#12"),
        ("Merge pull request #7 from org/repo:branch", "github", 7, "#7"),
        ("Add the lab PCs (#31)\n\n* one\n* two", "github", 31, "#31"),
        ('Revert "Add the lab PCs (#31)" (#32)', "github", 32, "#32"),
        (
            "Merge branch 'pcs' into 'main'\n\nAdd PCs\n\nSee merge request kitting/site!42",
            "gitlab",
            42,
            "kitting/site!42",
        ),
        (
            "Merge branch 'a' into 'main'\n\nSee merge request grp/sub.group/my-site!5\n",
            "gitlab",
            5,
            "grp/sub.group/my-site!5",
        ),
        ("Merge branch 'a' into 'main'\n\nSee merge request !9", "gitlab", 9, "!9"),
        (
            "Merge branch 'b'\n\nSee merge request g/p!1\n\nSee merge request g/p!2",
            "gitlab",
            2,
            "g/p!2",
        ),
        ("Merged in feature/pcs (pull request #4)\n\nAdd PCs", "bitbucket", 4, "#4"),
        ("Merged PR 77: Add PCs", "azure-devops", 77, "77"),
        (
            "Add PCs\n\nChange-Id: I0123\nReviewed-on: https://review.example.org/c/site/+/345\n",
            "gerrit",
            345,
            "https://review.example.org/c/site/+/345",
        ),
    ],
)
def test_review_platforms(message: str, platform: str, number: int, reference: str) -> None:
    review = review_from_message(message)
    assert review is not None
    assert (review.platform, review.number, review.reference) == (platform, number, reference)


@pytest.mark.parametrize(
    "message",
    [
        "Add PCs",
        "Add PCs\n\nFixes #12 in the body, not a review",
        'Revert "Merge pull request #12 from ann/pcs"',
        "Refers to (#12) in the middle of the subject",
        "(#12)",
        "Merge branch 'pcs'\n\nsee merge request g/p!3 in lower case prose",
        "Merge pull request from ann/pcs",
    ],
)
def test_messages_without_a_review(message: str) -> None:
    assert review_from_message(message) is None


def test_trailers_alone_make_a_review() -> None:
    message = f"Add PCs\n\nReviewed-by: {ANN}\nApproved-by: {BO}\nSigned-off-by: {ANN}\n"
    assert review_from_message(message) == Review(reviewed_by=(ANN,), approved_by=(BO,))


def test_a_github_merge_keeps_its_trailers() -> None:
    message = f"Merge pull request #3 from a/b\n\nTitle\n\nReviewed-by: {ANN}\n"
    assert review_from_message(message) == Review(
        "github", 3, "#3", "Merge pull request #3 from a/b", reviewed_by=(ANN,)
    )


def test_combine_reviews_prefers_the_merge_request_and_keeps_all_trailers() -> None:
    own = Review(reviewed_by=(ANN,))
    merge = Review("gitlab", 5, "g/p!5", "See merge request g/p!5", (BO, ANN), (BO,))
    assert combine_reviews(own, merge, "m" * 40) == Review(
        "gitlab", 5, "g/p!5", "See merge request g/p!5", (ANN, BO), (BO,), "m" * 40
    )
    assert combine_reviews(None, merge, "m" * 40) == Review(
        "gitlab", 5, "g/p!5", "See merge request g/p!5", (BO, ANN), (BO,), "m" * 40
    )
    assert combine_reviews(own, None, "m" * 40) == own


def test_review_lines() -> None:
    review = Review("gitlab", 5, "g/p!5", "", (ANN,), (BO,), "0123456789abcdef" * 2 + "01234567")
    assert review_lines(review) == (
        "GitLab merge request g/p!5 (merge 0123456789ab)",
        f"Reviewed-by: {ANN}",
        f"Approved-by: {BO}",
    )
    assert review_lines(Review("github", 3, "#3")) == ("GitHub pull request #3",)
    assert review_lines(None) == ()


# ---------------------------------------------------------------------------- signatures

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
FPR_C = "0123456789ABCDEF0123456789ABCDEF01234567"
FPR_D = "89ABCDEF0123456789ABCDEF0123456789ABCDEF"
ALICE = AllowedSigner(principal="alice@example.org", ssh_key=KEY_A)
CAROL = AllowedSigner(principal="carol@example.org", openpgp_fingerprint=FPR_C)
POLICY = TrustPolicy(require_signed=True, signers=(ALICE, CAROL))
SHA = "f" * 40


def test_allowed_signers_text() -> None:
    bob = AllowedSigner(principal="bob", ssh_key=KEY_B)
    assert allowed_signers_text([ALICE, CAROL, bob, ALICE]) == (
        f'alice@example.org namespaces="git" {KEY_A}\nbob namespaces="git" {KEY_B}\n'
    )
    assert allowed_signers_text([CAROL]) == ""


@pytest.mark.parametrize(
    ("principal", "key"),
    [
        ("*", KEY_A),  # a wildcard would let any principal match
        ("a,b", KEY_A),
        ("alice\nmallory", KEY_A),
        ("alice", KEY_A + "\nmallory " + KEY_B),
        ("alice", 'cert-authority,principals="x" ' + KEY_A),
    ],
)
def test_allowed_signers_text_refuses_what_the_models_should_have(principal: str, key: str) -> None:
    # model_construct skips validation, as a careless caller might
    unsafe = AllowedSigner.model_construct(principal=principal, ssh_key=key)
    with pytest.raises(ValueError, match="unsafe"):
        allowed_signers_text([unsafe])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"tree 1\nauthor a\n\nmessage\n", None),
        (
            b"tree 1\ngpgsig -----BEGIN SSH SIGNATURE-----\n U1NI\n -----END SSH SIGNATURE-----\n"
            b"\nmsg\n",
            SignatureKind.ssh,
        ),
        (b"tree 1\ngpgsig -----BEGIN PGP SIGNATURE-----\n x\n\nm", SignatureKind.openpgp),
        (b"tree 1\ngpgsig-sha256 -----BEGIN PGP SIGNATURE-----\n\nm", SignatureKind.openpgp),
        (b"tree 1\ngpgsig -----BEGIN SIGNED MESSAGE-----\n\nm", SignatureKind.x509),
        (b"tree 1\ngpgsig something else\n\nm", SignatureKind.unknown),
        # a merged signed tag carries its own signature; the commit is still unsigned
        (b"tree 1\nmergetag object 1\n -----BEGIN PGP SIGNATURE-----\n\nm", None),
        # "gpgsig" in the message body is not a header
        (b"tree 1\n\ngpgsig -----BEGIN PGP SIGNATURE-----\n", None),
    ],
)
def test_signature_kind(raw: bytes, expected: SignatureKind | None) -> None:
    assert signature_kind(raw) == expected


@pytest.mark.parametrize(
    ("kind", "check", "gpg", "expected"),
    [
        (SignatureKind.ssh, SignatureCheck("G", "SHA256:a", "", "alice@example.org"), True,
         (True, Reason.SignatureVerified, "alice@example.org")),
        # good signature, but the key is in no allowed-signers line
        (SignatureKind.ssh, SignatureCheck("U", "SHA256:b", "", ""), True,
         (False, Reason.UnknownSigner, None)),
        # a principal that is not an SSH signer of the policy (carol is OpenPGP only)
        (SignatureKind.ssh, SignatureCheck("G", "SHA256:c", "", "carol@example.org"), True,
         (False, Reason.UnknownSigner, None)),
        (SignatureKind.openpgp, SignatureCheck("U", FPR_C, FPR_C, "Carol"), True,
         (True, Reason.SignatureVerified, "carol@example.org")),
        # signed by a subkey: the primary key's fingerprint is the one allowed
        (SignatureKind.openpgp, SignatureCheck("G", FPR_D, FPR_C.lower(), "Carol"), True,
         (True, Reason.SignatureVerified, "carol@example.org")),
        (SignatureKind.openpgp, SignatureCheck("G", FPR_D, FPR_D, "Dave"), True,
         (False, Reason.UnknownSigner, None)),
        (SignatureKind.openpgp, SignatureCheck("B", FPR_C, FPR_C, ""), True,
         (False, Reason.BadSignature, None)),
        (SignatureKind.openpgp, SignatureCheck("X", FPR_C, FPR_C, ""), True,
         (False, Reason.SignatureExpired, None)),
        (SignatureKind.openpgp, SignatureCheck("Y", FPR_C, FPR_C, ""), True,
         (False, Reason.KeyExpired, None)),
        (SignatureKind.openpgp, SignatureCheck("R", FPR_C, FPR_C, ""), True,
         (False, Reason.KeyRevoked, None)),
        (SignatureKind.openpgp, SignatureCheck("E", "", "", ""), True,
         (False, Reason.SignatureUncheckable, None)),
        (SignatureKind.openpgp, SignatureCheck("N"), False,
         (False, Reason.OpenPgpUnavailable, None)),
        (SignatureKind.openpgp, SignatureCheck("N"), True,
         (False, Reason.SignatureUncheckable, None)),
        (SignatureKind.x509, None, True, (False, Reason.UnsupportedSignature, None)),
        (None, None, True, (False, Reason.Unsigned, None)),
    ],
)  # fmt: skip
def test_judge(
    kind: SignatureKind | None,
    check: SignatureCheck | None,
    gpg: bool,
    expected: tuple[bool, Reason, str | None],
) -> None:
    verdict = judge(SHA, kind, check, POLICY, gpg_available=gpg)
    assert (verdict.ok, verdict.reason, verdict.signer) == expected
    assert verdict.message.startswith("commit ffffffffffff")


def test_judge_when_nothing_is_required_or_nobody_allowed() -> None:
    assert judge(SHA, None, None, TrustPolicy(require_signed=False)).ok
    empty = judge(SHA, SignatureKind.ssh, None, TrustPolicy(require_signed=True))
    assert (empty.ok, empty.reason) == (False, Reason.NoAllowedSigners)


def test_trust_policy_never_reads_the_candidate() -> None:
    applied = GitPolicy(require_signed=True, allowed_signers=[CAROL])
    bootstrap = trust_policy(
        [ALICE], operator_require_signed=False, last_applied=None, last_applied_sha=None
    )
    assert bootstrap == TrustPolicy(False, (ALICE,), "operator settings")
    after = trust_policy(
        [ALICE, CAROL], operator_require_signed=False, last_applied=applied, last_applied_sha="abc"
    )
    # the applied policy switches signing on; signers are merged without duplicates
    assert after == TrustPolicy(
        True, (ALICE, CAROL), "operator settings + policy of applied commit abc"
    )
    relaxed = GitPolicy(require_signed=False)
    still = trust_policy(
        [], operator_require_signed=True, last_applied=relaxed, last_applied_sha="abc"
    )
    assert still.require_signed  # the operator's requirement cannot be lifted by the repo


# ---------------------------------------------------------------------------- names and errors


@pytest.mark.parametrize(
    ("path", "safe"),
    [
        ("site.yaml", True),
        ("pcs/lab-1.yaml", True),
        ("..yaml", True),
        ("../etc/passwd", False),
        ("pcs/../../x", False),
        ("/etc/passwd", False),
        (".git/config", False),
        ("a/.GIT/hooks/x", False),
        ("a//b", False),
        ("./a", False),
        ("", False),
        ("a\0b", False),
    ],
)
def test_is_safe_path(path: str, safe: bool) -> None:
    assert is_safe_path(path) is safe


@pytest.mark.parametrize(
    ("branch", "valid"),
    [
        ("main", True),
        ("release/2024.1", True),
        ("-main", False),
        ("main..x", False),
        ("a//b", False),
        ("main.lock", False),
        ("main/", False),
        ("a/.hidden", False),
        ("main@{1}", False),
        ("main branch", False),
        ("", False),
    ],
)
def test_is_valid_branch(branch: str, valid: bool) -> None:
    assert is_valid_branch(branch) is valid


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://git.example.org/site.git", "https://git.example.org/site.git"),
        ("ssh://git@git.example.org/site.git", "ssh://git@git.example.org/site.git"),
        ("git@git.example.org:kitting/site.git", "git@git.example.org:kitting/site.git"),
        ("/srv/site", "/srv/site"),
        ("site", "/home/op/site"),
        ("../site/", "/home/site"),
        ("./dir:with-colon", "/home/op/dir:with-colon"),
    ],
)
def test_remote_location(given: str, expected: str) -> None:
    assert remote_location(given, "/home/op") == expected


def test_remote_location_refuses_options() -> None:
    with pytest.raises(ValueError, match="must not start with '-'"):
        remote_location("--upload-pack=touch /tmp/x", "/")


def test_classify_fetch_failure() -> None:
    url = "https://git.example.org/site.git"
    missing = classify_fetch_failure(
        "fatal: couldn't find remote ref refs/heads/prod\n", "prod", url
    )
    assert isinstance(missing, PermanentSourceError)
    assert missing.reason == "BranchNotFound"
    down = classify_fetch_failure(
        "fatal: unable to access 'https://git.example.org/site.git/': "
        "Could not resolve host: git.example.org\n",
        "main",
        url,
    )
    assert isinstance(down, TransientSourceError)
    assert down.reason == "GitUnreachable"
    assert "Could not resolve host" in str(down)
    fsck = classify_fetch_failure(
        "error: object 1234: badTree: contains '..'\nfatal: fsck error in packed object\n",
        "main",
        url,
    )
    assert isinstance(fsck, PermanentSourceError)
    assert fsck.reason == "ObjectsRefused"
