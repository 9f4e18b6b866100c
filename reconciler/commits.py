"""What a commit says about itself: its review, trailers, and the signature verdict.

The Git source seam (`reconciler.source`) asks git; this module decides what the answers mean.
Purely computational: no subprocess, no filesystem, no Git.

Trust root for signatures: the signers allowed to sign commit N come from the operator's
reconciler settings and from the policy of the LAST APPLIED commit, never from commit N
itself. Otherwise anyone who can push could add their own key in the very commit they sign.
`trust_policy` builds that root; the first commit bootstraps from the operator's signers only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from reconciler.desired import AllowedSigner, GitPolicy

# ---------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class Trailer:
    key: str
    value: str


@dataclass(frozen=True)
class Review:
    """The review behind a commit, as far as its history shows one.

    platform: github, gitlab, bitbucket, azure-devops, gerrit, or "" when only trailers tell.
    reference: as the platform writes it ("#12", "group/project!12", a Gerrit URL).
    evidence: the message line the platform and number were read from.
    merge_sha: the merge commit the review was read from, when it is not the commit itself.
    """

    platform: str = ""
    number: int | None = None
    reference: str = ""
    evidence: str = ""
    reviewed_by: tuple[str, ...] = ()
    approved_by: tuple[str, ...] = ()
    merge_sha: str | None = None


def subject(message: str) -> str:
    """The subject as git shows it (%s): the first paragraph, its lines joined by spaces."""
    paragraph: list[str] = []
    for line in _lines(message):
        if line.strip():
            paragraph.append(line.strip())
        elif paragraph:
            break
    return " ".join(paragraph)


# Trailer keys git and the big forges write; one of them lets a mostly-prose last paragraph
# still count as a trailer block (git's own 25 % rule needs a recognised key too).
_KNOWN_KEYS = frozenset(
    {
        "signed-off-by",
        "reviewed-by",
        "approved-by",
        "acked-by",
        "tested-by",
        "co-authored-by",
        "reported-by",
        "suggested-by",
        "reviewed-on",
        "change-id",
        "cc",
    }
)
_TRAILER_LINE = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)")
_CHERRY_PICK = "(cherry picked from commit "


def parse_trailers(message: str) -> tuple[Trailer, ...]:
    """Trailers (`Key: value` lines) of a commit message, in order, as git finds them.

    Only the last paragraph can hold trailers, and never the first (the subject). It is a
    trailer block when all its lines are trailers, or when at least a quarter are and one
    has a well-known key. Lines starting with whitespace continue the trailer before them.
    """
    paragraphs = _paragraphs(message)
    if len(paragraphs) < 2:
        return ()
    found: list[list[str]] = []
    trailer_lines = other_lines = 0
    recognised = False
    for line in paragraphs[-1]:
        if line[:1] in (" ", "\t") and found:
            found[-1][1] += " " + line.strip()
            continue
        match = _TRAILER_LINE.fullmatch(line)
        if match is not None:
            trailer_lines += 1
            recognised |= match[1].lower() in _KNOWN_KEYS
            found.append([match[1], match[2].strip()])
        else:
            other_lines += 1
            recognised |= line.startswith(_CHERRY_PICK)
    if trailer_lines == 0:
        return ()
    if other_lines and not (recognised and trailer_lines * 3 >= other_lines):
        return ()
    return tuple(Trailer(key, value) for key, value in found)


def trailer_values(trailers: Iterable[Trailer], key: str) -> tuple[str, ...]:
    """Values of every trailer named `key` (case-insensitive), empty ones left out."""
    wanted = key.lower()
    return tuple(t.value for t in trailers if t.key.lower() == wanted and t.value)


_GITHUB_MERGE = re.compile(r"Merge pull request #(\d+) from (\S+)")
_GITHUB_SQUASH = re.compile(r".*\S \(#(\d+)\)")
_GITLAB = re.compile(r"See merge request (?:([A-Za-z0-9_.][A-Za-z0-9_./-]*))?!(\d+)")
_BITBUCKET = re.compile(r"Merged in (\S+) \(pull request #(\d+)\)")
_AZURE = re.compile(r"Merged PR (\d+):.*")
_GERRIT_NUMBER = re.compile(r".*/(\d+)/?")


def review_from_message(message: str) -> Review | None:
    """The review a commit message records, or None when it records none.

    Recognised: GitHub merge commits ("Merge pull request #N from owner/branch") and squash
    merges (subject ending in "(#N)"), GitLab ("See merge request group/project!N"),
    Bitbucket ("Merged in branch (pull request #N)"), Azure DevOps ("Merged PR N: ..."),
    Gerrit (a `Reviewed-on:` trailer), and `Reviewed-by:` / `Approved-by:` trailers.
    """
    lines = [line.strip() for line in _lines(message)]
    title = subject(message)
    trailers = parse_trailers(message)
    platform, number, reference, evidence = "", None, "", ""
    if match := _GITHUB_MERGE.match(title):
        platform, number, reference, evidence = "github", int(match[1]), f"#{match[1]}", title
    elif match := _BITBUCKET.match(title):
        platform, number, reference, evidence = "bitbucket", int(match[2]), f"#{match[2]}", title
    elif match := _AZURE.fullmatch(title):
        platform, number, reference, evidence = "azure-devops", int(match[1]), match[1], title
    elif gitlab := [m for line in lines if (m := _GITLAB.fullmatch(line))]:
        # the last one: a merge of merges quotes earlier requests above its own
        match = gitlab[-1]
        project = match[1] or ""
        platform, number, evidence = "gitlab", int(match[2]), match[0]
        reference = f"{project}!{match[2]}"
    elif gerrit := trailer_values(trailers, "Reviewed-on"):
        platform, reference, evidence = "gerrit", gerrit[-1], f"Reviewed-on: {gerrit[-1]}"
        if match := _GERRIT_NUMBER.fullmatch(gerrit[-1]):
            number = int(match[1])
    elif match := _GITHUB_SQUASH.fullmatch(title):
        platform, number, reference, evidence = "github", int(match[1]), f"#{match[1]}", title
    reviewed_by = trailer_values(trailers, "Reviewed-by")
    approved_by = trailer_values(trailers, "Approved-by")
    if not (platform or reviewed_by or approved_by):
        return None
    return Review(platform, number, reference, evidence, reviewed_by, approved_by)


def combine_reviews(own: Review | None, merge: Review | None, merge_sha: str) -> Review | None:
    """The review of a commit that a merge brought in: the merge's request, both trailers."""
    if merge is None:
        return own
    if own is None:
        return replace(merge, merge_sha=merge_sha)
    first = own if own.platform else merge
    return Review(
        platform=first.platform,
        number=first.number,
        reference=first.reference,
        evidence=first.evidence,
        reviewed_by=_unique((*own.reviewed_by, *merge.reviewed_by)),
        approved_by=_unique((*own.approved_by, *merge.approved_by)),
        merge_sha=None if own.platform else merge_sha,
    )


_PLATFORM_NAMES = {
    "github": "GitHub pull request",
    "gitlab": "GitLab merge request",
    "bitbucket": "Bitbucket pull request",
    "azure-devops": "Azure DevOps pull request",
    "gerrit": "Gerrit change",
}


def review_lines(review: Review | None) -> tuple[str, ...]:
    """The review as the audit log lists it: the request first, then the trailers.

    e.g. ("GitLab merge request group/site!12 (merge 0123456789ab)", "Approved-by: Ann").
    """
    if review is None:
        return ()
    lines: list[str] = []
    if review.platform:
        via = f" (merge {review.merge_sha[:12]})" if review.merge_sha else ""
        lines.append(f"{_PLATFORM_NAMES[review.platform]} {review.reference}{via}")
    lines.extend(f"Reviewed-by: {who}" for who in review.reviewed_by)
    lines.extend(f"Approved-by: {who}" for who in review.approved_by)
    return tuple(lines)


def person(name: str, email: str) -> str:
    """ "Name <email>", as git prints an identity."""
    return f"{name} <{email}>"


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _lines(message: str) -> list[str]:
    return message.replace("\r\n", "\n").split("\n")


def _paragraphs(message: str) -> list[list[str]]:
    paragraphs: list[list[str]] = [[]]
    for line in _lines(message):
        if line.strip():
            paragraphs[-1].append(line.rstrip())
        elif paragraphs[-1]:
            paragraphs.append([])
    return [p for p in paragraphs if p]


# ---------------------------------------------------------------------------- signatures


class Reason(StrEnum):
    """Why a commit's signature was accepted or refused (CamelCase, as in conditions)."""

    SignatureNotRequired = "SignatureNotRequired"
    SignatureVerified = "SignatureVerified"
    Unsigned = "Unsigned"
    UnknownSigner = "UnknownSigner"
    BadSignature = "BadSignature"
    SignatureExpired = "SignatureExpired"
    KeyExpired = "KeyExpired"
    KeyRevoked = "KeyRevoked"
    SignatureUncheckable = "SignatureUncheckable"
    OpenPgpUnavailable = "OpenPgpUnavailable"
    UnsupportedSignature = "UnsupportedSignature"
    NoAllowedSigners = "NoAllowedSigners"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: Reason
    message: str
    signer: str | None = None
    """The allowed signer's principal (from the trust policy, not from the key's own label)."""


@dataclass(frozen=True)
class TrustPolicy:
    """Who may sign the head, and whether a signature is required at all.

    origin says where the signers came from, for the status and the audit.
    """

    require_signed: bool
    signers: tuple[AllowedSigner, ...] = ()
    origin: str = "operator settings"


def trust_policy(
    operator_signers: Sequence[AllowedSigner],
    *,
    operator_require_signed: bool,
    last_applied: GitPolicy | None,
    last_applied_sha: str | None,
) -> TrustPolicy:
    """The trust root for the next commit: the operator's signers plus the last applied policy.

    The candidate commit's own policy never takes part: a commit that adds its key, or turns
    `require_signed` off, takes effect only for the commits after it, once it was applied
    under the old rules. With nothing applied yet, only the operator's signers count.
    """
    signers = list(operator_signers)
    origin = "operator settings"
    require = operator_require_signed
    if last_applied is not None:
        signers.extend(last_applied.allowed_signers)
        require = require or last_applied.require_signed
        origin += f" + policy of applied commit {last_applied_sha or '(unknown)'}"
    return TrustPolicy(require, tuple(dict.fromkeys(signers)), origin)


class SignatureKind(StrEnum):
    ssh = "ssh"
    openpgp = "openpgp"
    x509 = "x509"
    unknown = "unknown"


_ARMOR = {
    "-----BEGIN SSH SIGNATURE-----": SignatureKind.ssh,
    "-----BEGIN PGP SIGNATURE-----": SignatureKind.openpgp,
    "-----BEGIN SIGNED MESSAGE-----": SignatureKind.x509,
}


def signature_kind(raw_commit: bytes) -> SignatureKind | None:
    """The kind of signature in a raw commit object (`git cat-file commit`), None if unsigned.

    Read from the object itself because git reports a PGP-signed commit as unsigned ("N")
    when gpg is missing, which must not be mistaken for "no signature".
    """
    head, _, _ = raw_commit.partition(b"\n\n")
    for line in head.split(b"\n"):
        name, _, value = line.partition(b" ")
        if name in (b"gpgsig", b"gpgsig-sha256"):
            return _ARMOR.get(value.decode("ascii", "replace").strip(), SignatureKind.unknown)
    return None


_SIGNER_KEY = re.compile(r"[a-z0-9@.-]+ [A-Za-z0-9+/]+={0,3}")
_PRINCIPAL = re.compile(r"[A-Za-z0-9._%+@-]+")


def allowed_signers_text(signers: Iterable[AllowedSigner]) -> str:
    """git's allowed-signers file for the SSH keys among `signers` (sorted, one per line).

    The values were validated by the models already; they are checked again here because
    this text reaches a file that ssh-keygen parses (a comma or '*' in a principal would
    widen who matches, a space or newline would inject options or entries).
    """
    lines = set()
    for signer in signers:
        if signer.ssh_key is None:
            continue
        if _PRINCIPAL.fullmatch(signer.principal) is None:
            raise ValueError(f"unsafe signer principal {signer.principal!r}")
        if _SIGNER_KEY.fullmatch(signer.ssh_key) is None:
            raise ValueError(f"unsafe SSH key for {signer.principal!r}")
        lines.add(f'{signer.principal} namespaces="git" {signer.ssh_key}\n')
    return "".join(sorted(lines))


@dataclass(frozen=True)
class SignatureCheck:
    """What git said about a signature: %G?, %GF, %GP and %GS of `git log`."""

    status: str
    key_fingerprint: str = ""
    primary_fingerprint: str = ""
    signer: str = ""


_STATUS_REFUSED = {
    "B": (Reason.BadSignature, "the signature does not match the commit"),
    "X": (Reason.SignatureExpired, "the signature has expired"),
    "Y": (Reason.KeyExpired, "the signing key has expired"),
    "R": (Reason.KeyRevoked, "the signing key was revoked"),
    "E": (
        Reason.SignatureUncheckable,
        "the signature cannot be checked (for OpenPGP: is the signer's public key in the "
        "reconciler's keyring?)",
    ),
}


def judge(
    sha: str,
    kind: SignatureKind | None,
    check: SignatureCheck | None,
    policy: TrustPolicy,
    *,
    gpg_available: bool = True,
) -> Verdict:
    """Accept or refuse a commit's signature under `policy`; every refusal says why.

    SSH: git must report "G" (good, and the key belongs to a principal of the allowed-signers
    file built from the policy). OpenPGP: a good signature ("G", or "U" since trust comes
    from the fingerprint allow-list, not from the keyring's web of trust) whose signing key
    or primary key fingerprint is allowed.
    """
    short = sha[:12]
    if not policy.require_signed:
        return Verdict(True, Reason.SignatureNotRequired, "signatures are not required")
    if not any(s.ssh_key or s.openpgp_fingerprint for s in policy.signers):
        return Verdict(
            False,
            Reason.NoAllowedSigners,
            f"commit {short}: signatures are required but no allowed signer is configured "
            f"(trust root: {policy.origin})",
        )
    if kind is None:
        return Verdict(False, Reason.Unsigned, f"commit {short} is not signed")
    if kind in (SignatureKind.x509, SignatureKind.unknown):
        return Verdict(
            False,
            Reason.UnsupportedSignature,
            f"commit {short} carries a {kind} signature; only SSH and OpenPGP are supported",
        )
    if kind is SignatureKind.openpgp and not gpg_available:
        return Verdict(
            False,
            Reason.OpenPgpUnavailable,
            f"commit {short} has an OpenPGP signature but gpg is not installed",
        )
    if check is None or check.status == "N":
        return Verdict(
            False,
            Reason.SignatureUncheckable,
            f"commit {short} is signed ({kind}) but git could not check the signature",
        )
    if check.status in _STATUS_REFUSED:
        reason, text = _STATUS_REFUSED[check.status]
        return Verdict(False, reason, f"commit {short}: {text}")
    if kind is SignatureKind.ssh:
        principals = {s.principal for s in policy.signers if s.ssh_key}
        if check.status == "G" and check.signer in principals:
            return Verdict(
                True,
                Reason.SignatureVerified,
                f"commit {short} signed by {check.signer} (SSH key {check.key_fingerprint})",
                check.signer,
            )
        return _unknown(short, check.key_fingerprint, policy)
    by_fingerprint = {
        s.openpgp_fingerprint.upper(): s.principal for s in policy.signers if s.openpgp_fingerprint
    }
    for fingerprint in (check.key_fingerprint, check.primary_fingerprint):
        principal = by_fingerprint.get(fingerprint.upper()) if fingerprint else None
        if check.status in ("G", "U") and principal is not None:
            return Verdict(
                True,
                Reason.SignatureVerified,
                f"commit {short} signed by {principal} (OpenPGP key {fingerprint})",
                principal,
            )
    return _unknown(short, check.primary_fingerprint or check.key_fingerprint, policy)


def _unknown(short: str, fingerprint: str, policy: TrustPolicy) -> Verdict:
    return Verdict(
        False,
        Reason.UnknownSigner,
        f"commit {short} is signed by key {fingerprint or '(unknown)'}, which is not an "
        f"allowed signer (trust root: {policy.origin})",
    )


__all__ = [
    "Reason",
    "Review",
    "SignatureCheck",
    "SignatureKind",
    "Trailer",
    "TrustPolicy",
    "Verdict",
    "allowed_signers_text",
    "combine_reviews",
    "judge",
    "parse_trailers",
    "person",
    "review_from_message",
    "review_lines",
    "signature_kind",
    "subject",
    "trailer_values",
]
