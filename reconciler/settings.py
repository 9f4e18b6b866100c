"""The controller's own settings: what the operator of one kitting server decides.

Read from a YAML file (default /etc/kitting/reconciler.yaml) and overridden by `kitctl run`
flags. The site repo says what the server should do; these settings say where that repo
is and whom to trust, so they never come from the repo itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reconciler import load
from reconciler.desired import AllowedSigner
from reconciler.fields import absolute_path
from reconciler.layout import Layout
from reconciler.load import Positions
from reconciler.validate import Origin, Reporter, _report_pydantic, _shown

DEFAULT_PATH = "/etc/kitting/reconciler.yaml"


class Notes(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    """Record each applied commit's summary as a git note (refs/notes/kitting) in the clone."""
    push: bool = False
    """Also push the notes to the remote, so `git log --notes=kitting` shows them anywhere."""


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    """The site repo: a local path or any URL git understands."""
    branch: str = Field(default="main", pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")
    root: str = "/"
    """Server root to converge; anything but / is a sandbox."""
    services: str = Field(default="auto", pattern=r"^(auto|systemd|direct|none)$")
    """How programs are reloaded: systemd; direct (kitctl starts dnsmasq, nfs-ganesha and
    sshd itself as its children and loads nft in its own network namespace: the lab, or a
    container without systemd; they stop when kitctl stops); none (record only); auto
    (systemd for /, none elsewhere)."""
    backend: str = Field(default="native", pattern=r"^(native|drbl)$")
    """Who runs imaging sessions: native (the reconciler's own udp-sender feeder) or drbl
    (a full DRBL server's drbl-ocs)."""
    interval: float = Field(default=60.0, gt=0, le=86400)
    """Seconds between polls of a remote source (with jitter). Local sources are watched."""
    drift_interval: float = Field(default=300.0, gt=0, le=86400)
    """Seconds between drift checks of the files and firewall the reconciler owns."""
    allow_rewrite: bool = False
    """Accept a branch whose history was rewritten (force push). Off: refused and audited."""
    require_signed: bool = False
    """Apply only commits signed by a trusted signer, whatever the site repo says."""
    signers: list[AllowedSigner] = Field(default_factory=list)
    """Trusted signers of the operator; the last applied commit's site policy adds to them."""
    notes: Notes = Field(default_factory=Notes)
    paths: dict[str, str] = Field(default_factory=dict)
    """Where the rendered files live, when not the Debian/Ubuntu defaults (reconciler.layout):
    e.g. {dnsmasq_conf: /etc/dnsmasq.d/kitting.conf}. The lab uses this to keep a whole
    server inside one directory."""

    @model_validator(mode="after")
    def _live_services_need_root(self) -> Settings:
        # systemctl, nft and the direct programs act on this machine, never under a root
        if self.services in ("direct", "systemd") and self.root != "/":
            raise ValueError(
                f"services: {self.services} acts on this machine's programs and firewall: "
                "root must be / (a sandbox root takes services: none or auto)"
            )
        return self

    def layout(self) -> Layout:
        unknown = sorted(set(self.paths) - set(Layout.__dataclass_fields__))
        if unknown:
            raise SettingsError(
                f"unknown paths: {', '.join(unknown)}; known: {', '.join(Layout.__dataclass_fields__)}"
            )
        for name, value in self.paths.items():
            try:
                absolute_path(value)
            except ValueError as error:
                raise SettingsError(f"paths.{name}: {error}") from None
        return Layout(**self.paths)


def read(
    path: str | Path, overrides: dict[str, Any] | None = None, *, required: bool = False
) -> Settings:
    """Settings from a YAML file with command-line overrides on top.

    A file that does not exist is no settings at all, unless `required` (the operator named
    it): then it is an error. Problems read like `kitctl validate`'s: FILE:LINE:COL, the
    field, and what would be valid; a value given on the command line is named by its flag.
    """
    file = Path(path)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    text: str | None = None
    if required or file.exists():
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SettingsError(f"{path}: no such settings file") from None
        except (OSError, UnicodeDecodeError) as error:
            raise SettingsError(f"{path}: cannot read the settings file: {error}") from None
    data: dict[str, Any] = {}
    if text is not None:
        documents, problems = load.parse(str(path), text)
        if problems:
            raise SettingsError("\n".join(p.text() for p in problems))
        if documents and isinstance(documents[0].data, dict):
            data = dict(documents[0].data)
        elif documents and documents[0].data is not None:
            first = documents[0]
            raise SettingsError(
                f"{path}:{first.line}:{first.column}: error: expected a mapping of settings "
                f"(key: value), got {_shown(first.data)}"
            )
    data.update(given)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(_explain(exc, str(path), text, given)) from None


def _explain(exc: ValidationError, path: str, text: str | None, given: dict[str, Any]) -> str:
    """One line per problem, worded by the site repo's validation (reconciler.validate)."""
    report = Reporter(Positions({path: text or ""}), path)
    origin = Origin(path, 0)
    flags: list[str] = []
    for raw in exc.errors(include_url=False):
        error = _reworded(raw)
        name = str(error["loc"][0]) if error["loc"] else ""
        flag = "--" + name.replace("_", "-")
        before = len(report.problems)
        _report_pydantic(error, Settings, origin, report)
        if name in given or text is None:
            for problem in report.problems[before:]:
                message = problem.message.removeprefix(f"{name}: ")
                if name in given:
                    flags.append(f"{flag}: {message}")
                else:  # no file: the value can only come from the command line
                    flags.append(f"{message}: give {flag} or write it in {path}")
            del report.problems[before:]
    return "\n".join([p.text() for p in sorted(report.problems)] + flags)


_CHOICES = re.compile(r"\^\(([A-Za-z0-9_-]+(?:\|[A-Za-z0-9_-]+)+)\)\$")


def _reworded(error: Any) -> Any:
    """pydantic's error in the shape validate words best: a pattern of alternatives is a
    choice (so the message lists them and suggests the closest), and a model-level error
    that starts with a field's name belongs to that field (so it gets its position)."""
    loc = tuple(error["loc"])
    if error["type"] == "string_pattern_mismatch":
        choices = _CHOICES.fullmatch(str(error.get("ctx", {}).get("pattern", "")))
        if choices:
            options = [f"{option!r}" for option in choices.group(1).split("|")]
            expected = f"{', '.join(options[:-1])} or {options[-1]}"
            return {**error, "type": "literal_error", "ctx": {"expected": expected}}
    if not loc and error["type"] == "value_error":
        message = str(error["msg"]).removeprefix("Value error, ")
        name = message.split(":", 1)[0]
        if name in Settings.model_fields:
            return {**error, "loc": (name,), "msg": message}
    return error


class SettingsError(ValueError):
    """The controller's settings are invalid; the message names the file and field."""
