"""Preflight: before anything is swapped in, the program that will read each file checks it.

Candidates are written to a private temporary directory, never to the live paths:
- dnsmasq's main file: `dnsmasq --test --conf-file=CANDIDATE`;
- dnsmasq's hosts directory: `dnsmasq --test` does not read hosts files at all, so their
  lines (whose format is the right-hand side of `dhcp-host=`) are checked as `dhcp-host=`
  lines of one synthetic file; that makes dnsmasq's own parser judge every reservation and
  catch duplicate addresses across files;
- nftables: `nft -c -f CANDIDATE`;
- sshd: `sshd -t -f WRAPPER`, where the wrapper only Includes the candidate (skipped with a
  note where sshd is not installed);
- kernel NFS exports and nfs-ganesha: no program checks them without touching the live
  server (exportfs acts on the kernel; ganesha.nfsd has no check mode), so our own
  syntax checks below stand in.

A rejection names the rendered file, the line, and through `Artifact.origin_of_line` the
desired-state field behind it.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from reconciler.layout import Layout
from reconciler.rendered import Artifact, Check, Service
from reconciler.runner import NOT_FOUND, Completed, Runner, run


@dataclass(frozen=True)
class Rejection:
    path: str
    """The rendered file, as a server path."""
    line: int
    """1-based; 0 when the tool named no line."""
    origin: str
    """The desired-state field that produced the line ("" for a fixed line or no line)."""
    tool: str
    message: str

    def text(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        origin = f" (from {self.origin})" if self.origin else ""
        return f"{where}: {self.tool} rejected it: {self.message}{origin}"


@dataclass(frozen=True)
class Outcome:
    rejections: tuple[Rejection, ...] = ()
    checked: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.rejections


Preflight = Callable[[Sequence[Artifact], Mapping[str, Artifact]], Outcome]
"""What apply calls: (candidates to be written, every rendered artifact) -> outcome."""


@dataclass
class _Findings:
    rejections: list[Rejection] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check(
    candidates: Sequence[Artifact],
    rendered: Mapping[str, Artifact],
    *,
    layout: Layout,
    runner: Runner = run,
) -> Outcome:
    """Run every candidate through the program that will read it (or our own checker):
    the ones that name a Check, and every file of dnsmasq's hosts directory."""
    found = _Findings()
    checked: list[str] = []
    with tempfile.TemporaryDirectory(prefix="kitting-preflight-") as workdir:
        hosts_changed = False
        for index, artifact in enumerate(sorted(candidates, key=lambda a: a.path)):
            if is_hosts_file(artifact, layout):
                checked.append(artifact.path)
                hosts_changed = True
                continue
            if artifact.check is None:
                continue
            checked.append(artifact.path)
            name = f"{index:05d}-{os.path.basename(artifact.path)}"
            candidate = os.path.join(workdir, name)
            with open(candidate, "wb") as handle:
                handle.write(artifact.content)
            _CHECKERS[artifact.check](artifact, candidate, runner, found)
        if hosts_changed:
            hosts = [a for _, a in sorted(rendered.items()) if is_hosts_file(a, layout)]
            _check_hosts(hosts, os.path.join(workdir, "dhcp-hosts.conf"), runner, found)
    return Outcome(tuple(found.rejections), tuple(checked), tuple(found.notes))


def is_hosts_file(artifact: Artifact, layout: Layout) -> bool:
    """A file dnsmasq reads from --dhcp-hostsdir. It is judged whatever its `check` says:
    `dnsmasq --test` never reads it, so render may leave `check` unset, yet dnsmasq will
    read every line of it."""
    hosts_dir = layout.dhcp_hosts_dir.rstrip("/") + "/"
    return artifact.service is Service.dnsmasq and artifact.path.startswith(hosts_dir)


def _reject(artifact: Artifact, line: int, tool: str, message: str) -> Rejection:
    return Rejection(artifact.path, line, artifact.origin_of_line(line), tool, message)


def _named(message: str, candidate: str, artifact: Artifact) -> str:
    """The tool's words, with our temporary name replaced by the file's real path."""
    return message.replace(candidate, artifact.path).strip()


# --------------------------------------------------------------------------- dnsmasq

_DNSMASQ_LINE = re.compile(r"^(?:dnsmasq: )?(?P<message>.*) at line (?P<line>\d+) of (?P<file>.+)$")


def parse_dnsmasq(output: str) -> list[tuple[int, str]]:
    """(line, message) from `dnsmasq --test` complaints ("... at line N of FILE")."""
    found = []
    for text in output.splitlines():
        match = _DNSMASQ_LINE.match(text.strip())
        if match:
            found.append((int(match["line"]), match["message"]))
    return found


def _check_dnsmasq(artifact: Artifact, candidate: str, runner: Runner, found: _Findings) -> None:
    done = runner(["dnsmasq", "--test", f"--conf-file={candidate}"])
    if done.ok:
        return
    if _missing(done, "dnsmasq", artifact, found):
        return
    errors = parse_dnsmasq(done.output) or [(0, _named(done.output, candidate, artifact))]
    found.rejections.extend(_reject(artifact, line, "dnsmasq", msg) for line, msg in errors)


def _check_hosts(
    hosts: Sequence[Artifact], candidate: str, runner: Runner, found: _Findings
) -> None:
    where: list[tuple[Artifact, int]] = []
    lines: list[str] = []
    for artifact in hosts:
        for number, text in enumerate(artifact.content.decode("utf-8", "replace").splitlines(), 1):
            if text.strip() and not text.lstrip().startswith("#"):
                lines.append(f"dhcp-host={text.strip()}")
                where.append((artifact, number))
    if not lines:
        return
    with open(candidate, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    done = runner(["dnsmasq", "--test", f"--conf-file={candidate}"])
    if done.ok or _missing(done, "dnsmasq", hosts[0], found):
        return
    errors = parse_dnsmasq(done.output)
    if not errors:
        found.rejections.append(_reject(hosts[0], 0, "dnsmasq", done.output.strip()))
    for line, message in errors:
        artifact, number = where[line - 1] if 0 < line <= len(where) else (hosts[0], 0)
        found.rejections.append(_reject(artifact, number, "dnsmasq", message))


# --------------------------------------------------------------------------- nft

_NFT_ERROR = re.compile(r"^(?P<file>.+?):(?P<line>\d+):\d+(?:-\d+)?: Error: (?P<message>.*)$")


def parse_nft(output: str, candidate: str) -> list[tuple[int, str]]:
    """(line, message) from `nft -c -f` errors ("FILE:LINE:COL-COL: Error: ...")."""
    found = []
    for text in output.splitlines():
        match = _NFT_ERROR.match(text)
        if match and match["file"] == candidate:
            found.append((int(match["line"]), match["message"]))
    return found


def _check_nft(artifact: Artifact, candidate: str, runner: Runner, found: _Findings) -> None:
    done = runner(["nft", "-c", "-f", candidate])
    if done.ok or _missing(done, "nft", artifact, found):
        return
    errors = parse_nft(done.output, candidate) or [(0, _named(done.output, candidate, artifact))]
    found.rejections.extend(_reject(artifact, line, "nft", msg) for line, msg in errors)


# --------------------------------------------------------------------------- sshd

_SSHD_LINE = re.compile(r"^(?P<file>.+?):? line (?P<line>\d+): (?P<message>.*)$")
_SSHD_ENVIRONMENT = re.compile(r"^Missing privilege separation directory: ")


def parse_sshd(output: str, candidate: str) -> list[tuple[int, str]]:
    """(line, message) from `sshd -t` ("FILE line N: ..." or "FILE: line N: ...")."""
    found = []
    for text in output.splitlines():
        match = _SSHD_LINE.match(text.strip())
        if match and match["file"] == candidate:
            found.append((int(match["line"]), match["message"]))
    return found


def _check_sshd(artifact: Artifact, candidate: str, runner: Runner, found: _Findings) -> None:
    wrapper = candidate + ".wrapper"
    with open(wrapper, "w", encoding="utf-8") as handle:
        handle.write(f"Include {candidate}\n")
    done = runner(["sshd", "-t", "-f", wrapper])
    if done.ok:
        return
    if done.returncode == NOT_FOUND:
        found.notes.append(f"{artifact.path}: not checked: sshd is not installed here")
        return
    errors = parse_sshd(done.output, candidate)
    if errors:
        found.rejections.extend(_reject(artifact, line, "sshd", msg) for line, msg in errors)
        return
    complaints = [line for line in done.output.splitlines() if line.strip()]
    if complaints and all(_SSHD_ENVIRONMENT.match(line) for line in complaints):
        # sshd parsed the file (it checks this directory only afterwards); the directory
        # is made by ssh.service when it starts, so this machine simply never ran sshd.
        found.notes.append(f"{artifact.path}: accepted by sshd -t ({complaints[0]})")
        return
    found.rejections.append(_reject(artifact, 0, "sshd", _named(done.output, candidate, artifact)))


# --------------------------------------------------------------------------- exports

_EXPORT_FLAGS = frozenset(
    [
        "rw",
        "ro",
        "sync",
        "async",
        "secure",
        "insecure",
        "wdelay",
        "no_wdelay",
        "hide",
        "nohide",
        "crossmnt",
        "subtree_check",
        "no_subtree_check",
        "insecure_locks",
        "no_auth_nlm",
        "secure_locks",
        "auth_nlm",
        "root_squash",
        "no_root_squash",
        "all_squash",
        "no_all_squash",
        "nordirplus",
        "pnfs",
        "no_pnfs",
        "security_label",
        "mp",
    ]
)
_EXPORT_KEYS = {
    "anonuid": re.compile(r"^\d+$"),
    "anongid": re.compile(r"^\d+$"),
    "fsid": re.compile(r"^(root|\d+|[0-9a-fA-F-]{32,36})$"),
    "sec": re.compile(r"^(sys|krb5|krb5i|krb5p)(:(sys|krb5|krb5i|krb5p))*$"),
    "mountpoint": re.compile(r"^/\S*$"),
    "mp": re.compile(r"^/\S*$"),
}
_CLIENT = re.compile(r"^(?P<host>[^()\s]*)(?:\((?P<options>[^()\s]*)\))?$")
_HOST = re.compile(r"^(\*|@[A-Za-z0-9._-]+|[A-Za-z0-9*?.:_\[\]-]+(/\d{1,3}|/[0-9.]+)?)$")


def check_exports(text: str) -> list[tuple[int, str]]:
    """Problems in an exports(5) file, as (line, message). Stricter than exportfs on
    purpose: a client without options, or options without a client (the classic
    "host (rw)" space), would export to the whole world, and we never write that."""
    problems: list[tuple[int, str]] = []
    for number, line in _logical_lines(text):
        tokens = line.split()
        if not tokens:
            continue
        path, clients = tokens[0].strip('"'), tokens[1:]
        if not path.startswith("/"):
            problems.append((number, f"export path {tokens[0]!r} is not absolute"))
        if not clients:
            problems.append((number, f"{path} names no client (it would go to every host)"))
        for client in clients:
            problems.extend((number, p) for p in _client_problems(client))
    return problems


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    start, pending = 0, ""
    for number, raw in enumerate(text.splitlines(), 1):
        body = raw.split("#", 1)[0]
        if not pending:
            start = number
        if body.rstrip().endswith("\\"):
            pending += body.rstrip()[:-1] + " "
            continue
        yield start, pending + body
        pending = ""
    if pending:
        yield start, pending


def _client_problems(client: str) -> list[str]:
    match = _CLIENT.match(client)
    if match is None:
        return [f"{client!r} is not a client specification (host(options))"]
    host, options = match["host"], match["options"]
    problems = []
    if not host:
        problems.append(f"{client!r} has options but no client: a space before '('?")
    elif _HOST.match(host) is None:
        problems.append(f"{host!r} is not a host, network, wildcard or @netgroup")
    if options is None:
        problems.append(f"{client!r} has no options (exportfs would warn and guess)")
        return problems
    for option in options.split(","):
        key, equals, value = option.partition("=")
        if not equals:
            if option not in _EXPORT_FLAGS:
                problems.append(f"unknown export option {option!r}")
        elif key not in _EXPORT_KEYS:
            problems.append(f"unknown export option {key!r}")
        elif _EXPORT_KEYS[key].match(value) is None:
            problems.append(f"bad value {value!r} for export option {key!r}")
    return problems


def _check_exports(artifact: Artifact, candidate: str, runner: Runner, found: _Findings) -> None:
    del candidate, runner  # our own checker reads the content directly
    text = artifact.content.decode("utf-8", "replace")
    found.rejections.extend(
        _reject(artifact, line, "exports check", message) for line, message in check_exports(text)
    )


# --------------------------------------------------------------------------- ganesha


def check_ganesha(text: str) -> list[tuple[int, str]]:
    """Structural problems in an nfs-ganesha file: blocks `NAME { ... }` must balance and
    every statement inside is `Key = value;`. Comments start with '#'."""
    problems: list[tuple[int, str]] = []
    opened: list[int] = []
    statement, statement_line = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        quoted = False
        for char in raw:
            if char == '"':
                quoted = not quoted
            if quoted or char not in "#{};":
                if not statement.strip():
                    statement_line = number
                statement += char
                continue
            if char == "#":
                break
            if char == "{":
                words = statement.split()
                if "=" in statement and len(words) > 1:
                    unfinished = " ".join(words[:-1])  # the last word names the block
                    problems.append((statement_line, f"missing ';' after {unfinished!r}"))
                elif re.fullmatch(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*", statement) is None:
                    problems.append(
                        (number, f"block name expected before '{{', not {statement.strip()!r}")
                    )
                opened.append(number)
            elif char == "}":
                if statement.strip():
                    problems.append((statement_line, f"missing ';' after {statement.strip()!r}"))
                if not opened:
                    problems.append((number, "'}' closes no block"))
                else:
                    opened.pop()
            elif statement.strip() and "=" not in statement:
                problems.append(
                    (statement_line or number, f"{statement.strip()!r} is not Key = value")
                )
            statement = ""
        if quoted:
            problems.append((number, "unterminated quoted string"))
        statement += " "
    if statement.strip():
        problems.append((statement_line, f"missing ';' after {statement.strip()!r}"))
    problems.extend((line, "block opened here is never closed") for line in opened)
    return problems


def _check_ganesha(artifact: Artifact, candidate: str, runner: Runner, found: _Findings) -> None:
    del candidate, runner  # our own checker reads the content directly
    text = artifact.content.decode("utf-8", "replace")
    found.rejections.extend(
        _reject(artifact, line, "ganesha check", message) for line, message in check_ganesha(text)
    )


def _missing(done: Completed, program: str, artifact: Artifact, found: _Findings) -> bool:
    """A missing checker is a rejection: an unchecked file is never swapped in."""
    if done.returncode != NOT_FOUND:
        return False
    found.rejections.append(
        _reject(artifact, 0, program, f"{program} is not installed, so the file cannot be checked")
    )
    return True


_CHECKERS: dict[Check, Callable[[Artifact, str, Runner, _Findings], None]] = {
    Check.dnsmasq: _check_dnsmasq,
    Check.nft: _check_nft,
    Check.sshd: _check_sshd,
    Check.exports: _check_exports,
    Check.ganesha: _check_ganesha,
}
