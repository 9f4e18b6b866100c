"""Validate loaded documents into the desired state, collecting every problem in one run.

Two layers: structure (each document against its kind's model, with friendly messages
for pydantic's errors) and semantics (`reconciler.checks`: references, duplicates, the
address plan, multicast, windows). Purely computational: positions come from the texts
already loaded, no file is read here.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from reconciler import checks
from reconciler.desired import KINDS, Batch, Department, Desired, Image, Model, Site
from reconciler.load import Document, Loaded, Path_, Positions, dotted, gc_paused
from reconciler.problems import Problem, Severity, errors


@dataclass(frozen=True)
class Origin:
    """Where a validated object came from: file and document index."""

    file: str
    index: int


@dataclass(frozen=True)
class Validation:
    desired: Desired | None
    """None when there is any error."""
    problems: tuple[Problem, ...]

    @property
    def valid(self) -> bool:
        return not errors(self.problems)


@dataclass
class Reporter:
    """Turns (origin, field path, message) into positioned problems."""

    positions: Positions
    repo_label: str
    problems: list[Problem] = field(default_factory=list)

    def at(
        self,
        origin: Origin | None,
        path: Path_,
        message: str,
        severity: Severity = Severity.error,
        *,
        key: bool = False,
    ) -> None:
        if origin is None:
            self.problems.append(Problem(self.repo_label, 1, 1, severity, message, dotted(path)))
            return
        line, column = self.positions.of(origin.file, origin.index, path, key=key)
        self.problems.append(Problem(origin.file, line, column, severity, message, dotted(path)))

    def where(self, origin: Origin, path: Path_) -> str:
        """'file:line:col' of a place, for messages that name a second place."""
        line, column = self.positions.of(origin.file, origin.index, path)
        return f"{origin.file}:{line}:{column}"


def run(loaded: Loaded) -> Validation:
    """Validate everything that was loaded. Pure."""
    with gc_paused():
        return _run(loaded)


def _run(loaded: Loaded) -> Validation:
    report = Reporter(Positions(loaded.texts), loaded.root)
    report.problems.extend(loaded.problems)
    built: list[tuple[Model, Origin, Salvage | None]] = []
    declared: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for document in loaded.documents:
        found = _structure(document, report, declared)
        if found is not None:
            built.append((found[0], Origin(document.file, document.index), found[1]))
    draft, where = _assemble(built, report, declared, bool(loaded.unread))
    # A file that stopped early may hold what a reference names: say so next to "not defined".
    where.unread = {file: loaded.texts.get(file) for file in loaded.unread}
    checks.run(draft, where, declared, report)
    # The order of Problem's fields, as one key per problem: far fewer comparisons made
    # through dataclass __lt__ when every one of 50,000 PCs has a problem.
    problems = tuple(
        sorted(
            set(report.problems),
            key=lambda p: (p.file, p.line, p.column, p.severity, p.message, p.field),
        )
    )
    if errors(problems) or draft.site is None:
        return Validation(None, problems)
    return Validation(Desired(draft.site, draft.images, draft.departments, draft.batches), problems)


# ------------------------------------------------------------------------- structure


def _structure(
    document: Document, report: Reporter, declared: dict[str, set[str]]
) -> tuple[Model, Salvage | None] | None:
    """The document's model, or what could be salvaged of it (with how), or None."""
    origin = Origin(document.file, document.index)
    data = document.data
    if not isinstance(data, dict):
        report.at(
            origin,
            (),
            f"a document must be a mapping that starts with 'kind: ...', not {_shown(data)}",
        )
        return None
    kind = data.get("kind")
    if kind not in KINDS:
        valid = ", ".join(KINDS)
        if kind is None:
            report.at(origin, (), f"missing 'kind' (one of: {valid})")
        else:
            report.at(
                origin,
                ("kind",),
                f"unknown kind {kind!r}{checks.suggest(str(kind), KINDS)}; valid: {valid}",
            )
        return None
    name = data.get("name")
    declared[kind].add(name if isinstance(name, str) else "")
    model_class = KINDS[kind]
    try:
        return model_class.model_validate(data), None
    except ValidationError as exc:
        found = exc.errors(include_url=False)
        # A typo'd key already says "did you mean 'x'"; "missing 'x'" would only repeat it.
        typos = {
            (*tuple(e["loc"][:-1]), _closest(str(e["loc"][-1]), model_class, tuple(e["loc"][:-1])))
            for e in found
            if e["type"] == "extra_forbidden"
        }
        for error in found:
            if error["type"] == "missing" and (
                tuple(error["loc"]) in typos or tuple(error["loc"]) in document.refused
            ):
                continue
            _report_pydantic(error, model_class, origin, report)
        return _salvage(model_class, data, found)


@dataclass(frozen=True)
class Salvage:
    """How a document with field errors was still made into a model for the checks across
    documents, so that one run reports every problem."""

    pcs: tuple[int, ...] | None = None
    """A department: the index in the document of each PC kept (PCs with errors are left out)."""
    dropped_hostnames: frozenset[str] = frozenset()
    """A department: the hostnames (case-folded) written on the PCs left out."""
    guessed: frozenset[Path_] = frozenset()
    """Broken fields given a placeholder or their default; checks that would read them as the
    user's own value must not run."""


_DEFAULT = object()
"""In `_SPARE`: leave the field out, so that it takes its default."""

# Fields that may be broken (or mistyped) without hiding the rest of their document: each
# is left out to take its default, or given a placeholder, and the result is such that no
# check across documents can report a problem the user's own value would not have (a
# default that only switches a check off, or a field that no check reads). The site's time
# zone is the one exception: windows that depend on it are not checked when it is guessed.
_SPARE: dict[type[Model], dict[Path_, object]] = {
    Site: {
        ("name",): "site",
        ("timezone",): "UTC",
        ("server", "hostname"): "server",
        ("server", "interface"): "eth0",
        ("server", "serve_dns"): _DEFAULT,
        ("network", "gateway"): _DEFAULT,
        ("network", "dns"): _DEFAULT,
        ("network", "vlan"): _DEFAULT,
        ("network", "dhcp", "lease_time"): _DEFAULT,
        ("network", "dhcp", "max_leases"): _DEFAULT,
        ("network", "admin_range"): _DEFAULT,
        ("boot",): _DEFAULT,
        ("images_root",): _DEFAULT,
        ("multicast", "ttl"): _DEFAULT,
        ("multicast", "max_bitrate"): _DEFAULT,
        ("nfs",): _DEFAULT,
        ("firewall",): _DEFAULT,
        ("ssh",): _DEFAULT,
        ("git", "branch"): _DEFAULT,
        ("git", "require_signed"): _DEFAULT,
    },
    Image: {
        ("description",): _DEFAULT,
        ("disk", "device"): "sda",
        ("disk", "size"): _DEFAULT,
        ("integrity",): _DEFAULT,
    },
    Department: {("image",): _DEFAULT, ("description",): _DEFAULT},
    Batch: {
        ("overwrite",): _DEFAULT,
        ("clients_to_wait",): _DEFAULT,
        ("start_timeout",): _DEFAULT,
        ("multicast", "max_bitrate"): _DEFAULT,
        ("after_imaging",): _DEFAULT,
        ("on_failure",): _DEFAULT,
        ("wake_on_lan",): _DEFAULT,
    },
}


def _spare_prefix(model_class: type[Model], loc: Path_) -> Path_ | None:
    """The shortest prefix of `loc` that may be spared, if any."""
    spare = _SPARE[model_class]
    return next((loc[:end] for end in range(1, len(loc) + 1) if loc[:end] in spare), None)


def _salvage(
    model_class: type[Model], data: dict[str, Any], found: list[Any]
) -> tuple[Model, Salvage] | None:
    """The document without its broken parts, when leaving them out cannot make a check
    report something false: a department without its broken PCs (the rest keep their
    index), a document with an unknown key or a broken field listed in `_SPARE`."""
    dropped_pcs: set[int] = set()
    unknown: set[Path_] = set()
    spared: set[Path_] = set()
    for error in found:
        loc: Path_ = tuple(error["loc"])
        if loc[-1:] == ("[key]",):
            loc = loc[:-1]
        if model_class is Department and len(loc) >= 2 and loc[0] == "pcs":
            if not isinstance(loc[1], int):
                return None
            dropped_pcs.add(loc[1])
            continue
        if error["type"] == "extra_forbidden":
            unknown.add(loc)
            meant = _closest(str(loc[-1]), model_class, loc[:-1])
            # A typo of a field that a check reads would leave that field at its default.
            if meant and _spare_prefix(model_class, (*loc[:-1], meant)) is None:
                return None
            continue
        prefix = _spare_prefix(model_class, loc)
        if prefix is None:
            return None
        spared.add(prefix)
    spare = _SPARE[model_class]
    fixed = dict(data)
    for path in sorted(unknown | spared, key=len, reverse=True):
        if not _replace(fixed, path, spare.get(path, _DEFAULT) if path in spared else _DEFAULT):
            return None
    kept: tuple[int, ...] | None = None
    hostnames: set[str] = set()
    if dropped_pcs:
        pcs = data.get("pcs")
        if not isinstance(pcs, list):
            return None
        kept = tuple(i for i in range(len(pcs)) if i not in dropped_pcs)
        fixed["pcs"] = [pcs[i] for i in kept]
        for i in dropped_pcs:
            name = pcs[i].get("hostname") if isinstance(pcs[i], dict) else None
            if isinstance(name, str):
                hostnames.add(name.casefold())
    try:
        model = model_class.model_validate(fixed)
    except ValidationError:
        return None
    return model, Salvage(kept, frozenset(hostnames), frozenset(spared))


def _replace(data: dict[str, Any], path: Path_, value: object) -> bool:
    """Set (or with `_DEFAULT`, remove) `path` in `data`, copying the mappings on the way
    so that the loaded document stays as it was. False when the path crosses a non-mapping."""
    current = data
    for part in path[:-1]:
        inner = current.get(part) if isinstance(part, str) else None
        if not isinstance(part, str) or not isinstance(inner, dict):
            return False
        copied = dict(inner)
        current[part] = copied
        current = copied
    last = path[-1]
    if not isinstance(last, str):
        return False
    if value is _DEFAULT:
        current.pop(last, None)
    else:
        current[last] = value
    return True


def _closest(given: str, model_class: type[BaseModel], parent: Path_) -> str:
    found = _model_at(model_class, parent)
    close = difflib.get_close_matches(
        given, list(found.model_fields) if found else [], n=1, cutoff=0.6
    )
    return close[0] if close else ""


_EXPECTED = {
    "model_type": "expected a mapping of fields (key: value)",
    "dict_type": "expected a mapping (key: value)",
    "list_type": "expected a list ([a, b], or one '- item' per line)",
    "string_type": "expected text",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "ip_v4_address": "expected an IPv4 address such as 192.168.100.1",
    "ip_v4_network": "expected an IPv4 network such as 192.168.100.0/24 (host bits zero)",
}


_LIMITS = {
    "greater_than_equal": ("at least", "ge"),
    "greater_than": ("more than", "gt"),
    "less_than_equal": ("at most", "le"),
    "less_than": ("less than", "lt"),
}


def _shown(value: Any) -> str:
    """A value as people wrote it in YAML, for 'got ...'."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _bounds(model_class: type[BaseModel], loc: Path_) -> str:
    """' from 1 to 4094' for a number field with limits, else ''."""
    parent = _model_at(model_class, loc[:-1])
    info = parent.model_fields.get(str(loc[-1])) if parent and loc else None
    if info is None:
        return ""
    low = next((m.ge for m in info.metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in info.metadata if hasattr(m, "le")), None)
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if low is not None:
        return f" of at least {low}"
    return f" of at most {high}" if high is not None else ""


def _report_pydantic(
    error: Any, model_class: type[BaseModel], origin: Origin, report: Reporter
) -> None:
    loc: Path_ = tuple(error["loc"])
    kind = error["type"]
    message = str(error["msg"]).removeprefix("Value error, ")
    if loc and loc[-1] == "[key]":  # a mapping key failed its own type: point at the key
        report.at(origin, loc[:-1], message, key=True)
        return
    if kind == "extra_forbidden":
        parent = _model_at(model_class, loc[:-1])
        unknown = str(loc[-1])
        allowed = sorted(parent.model_fields) if parent else []
        hint = checks.suggest(unknown, allowed)
        listing = f"; valid fields here: {', '.join(allowed)}" if allowed else ""
        report.at(origin, loc, f"unknown field {unknown!r}{hint}{listing}", key=True)
        return
    if kind == "missing":
        report.at(origin, loc, f"missing required field {str(loc[-1])!r}")
        return
    if kind in ("enum", "literal_error"):
        expected = error.get("ctx", {}).get("expected", "")
        given = error.get("input")
        options = [part.strip(" '") for part in str(expected).replace(" or ", ",").split(",")]
        hint = checks.suggest(str(given), options) if isinstance(given, str) else ""
        report.at(origin, loc, f"{given!r} is not allowed{hint}; expected {expected}")
        return
    given = error.get("input")
    if kind in _EXPECTED:
        bounds = _bounds(model_class, loc) if _EXPECTED[kind].endswith("number") else ""
        quote = (
            " (quote it to make it text)"
            if kind == "string_type" and isinstance(given, int | float)
            else ""
        )
        message = f"{_EXPECTED[kind]}{bounds}, got {_shown(given)}{quote}"
    elif kind in _LIMITS:
        words, key = _LIMITS[kind]
        message = f"must be {words} {error['ctx'][key]}, got {_shown(given)}"
    elif kind == "too_short":
        message = f"needs at least {error['ctx']['min_length']} item(s), got {len(given)}"
    elif kind == "too_long":
        message = f"takes at most {error['ctx']['max_length']} item(s), got {len(given)}"
    elif kind != "value_error" and "got" not in message:
        message = f"{message}, got {_shown(given)}"
    report.at(origin, loc, message)


def _model_at(model_class: type[BaseModel], loc: Path_) -> type[BaseModel] | None:
    """The model class reached by following `loc` through field annotations."""
    current: Any = model_class
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(part)
        if info is None:
            return None
        current = _unwrap(info.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """The model inside Optional[...], list[...], dict[..., ...]; else the annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, dict, tuple):
        for arg in reversed(typing.get_args(annotation)):
            inner = _unwrap(arg)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return annotation


# ------------------------------------------------------------------------- assembly


@dataclass
class Where:
    """Origins of every validated object, for messages about them."""

    site: Origin | None = None
    images: dict[str, Origin] = field(default_factory=dict)
    departments: dict[str, Origin] = field(default_factory=dict)
    batches: dict[str, Origin] = field(default_factory=dict)
    partial: set[str] = field(default_factory=set)
    """Departments kept without their broken PCs: counts over them are not final."""
    pc_indexes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """A partial department's kept PCs: the index of each in its document."""
    dropped_hostnames: set[str] = field(default_factory=set)
    """Hostnames (case-folded) of PCs left out for their errors: they may be targeted."""
    site_zone_guessed: bool = False
    """The Site's time zone is broken: windows read in it are not checked."""
    unread: dict[str, str | None] = field(default_factory=dict)
    """Files that could not be read to their end, with their text when it is known."""

    def pc_index(self, department: str, kept: int) -> int:
        """The index in its document of a department's `kept`-th validated PC."""
        indexes = self.pc_indexes.get(department)
        return kept if indexes is None else indexes[kept]

    def unread_hint(self, name: str) -> str:
        """' (F could not be read)' naming the unread files that may define `name`, or ''."""
        files = [f for f, text in sorted(self.unread.items()) if text is None or name in text]
        if not files:
            return ""
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        return f" ({shown} could not be read)"


def _assemble(
    built: list[tuple[Model, Origin, Salvage | None]],
    report: Reporter,
    declared: dict[str, set[str]],
    some_unread: bool,
) -> tuple[checks.Draft, Where]:
    where = Where()
    sites: list[tuple[Site, Origin]] = []
    images: dict[str, Image] = {}
    departments: dict[str, Department] = {}
    batches: dict[str, Batch] = {}
    site_salvage: dict[Origin, Salvage | None] = {}
    for model, origin, salvage in built:
        if isinstance(model, Site):
            sites.append((model, origin))
            site_salvage[origin] = salvage
            continue
        assert isinstance(model, Image | Department | Batch)
        tables: dict[type[Model], tuple[dict[str, Any], dict[str, Origin]]] = {
            Image: (images, where.images),
            Department: (departments, where.departments),
            Batch: (batches, where.batches),
        }
        table, origins = tables[type(model)]
        name = model.name
        if name in table:
            first = report.where(origins[name], ("name",))
            report.at(
                origin,
                ("name",),
                f"{model.kind} {name!r} is defined twice (first at {first}); names must be unique",
            )
            continue
        table[name] = model
        origins[name] = origin
        if isinstance(model, Department) and salvage is not None and salvage.pcs is not None:
            where.partial.add(name)
            where.pc_indexes[name] = salvage.pcs
            where.dropped_hostnames |= salvage.dropped_hostnames
    for _site, origin in sites[1:]:
        first = report.where(sites[0][1], ("kind",))
        report.at(
            origin, ("kind",), f"a second Site document; a repo has exactly one (first at {first})"
        )
    if not sites:
        # A Site with errors was already reported as such; a file that could not be read
        # may hold the Site, and its error says so.
        if not declared["Site"] and not some_unread:
            report.at(None, (), "no 'kind: Site' document: a site repo needs exactly one")
        return checks.Draft(None, images, departments, batches), where
    site, where.site = sites[0]
    salvage = site_salvage[where.site]
    where.site_zone_guessed = salvage is not None and ("timezone",) in salvage.guessed
    return checks.Draft(site, images, departments, batches), where
