"""Load a site repo's YAML into plain values, keeping the way back to line and column.

Speed and exact positions at once: the text is composed by libyaml through ruamel.yaml's C
parser (about twice as fast as building Python objects, and many times faster than the
round-trip loader); a small walk turns nodes into plain values and drops the nodes. When a
problem needs a position, the one file concerned is composed again and the path followed
(`Positions`). Errors are rare, so the happy path carries no position data at all.

Anchors and aliases are refused: every value in a reviewed change should be visible in the
diff, and refusing them also defuses alias bombs. Duplicate keys, custom tags and merge keys
are refused too. `parse` is pure; `repo` reads files.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# libyaml through ruamel.yaml.clib, a declared dependency: the pure-Python composer gives
# the same nodes several times slower.
from ruamel.yaml.cyaml import CSafeLoader as _Loader
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reconciler.problems import Problem, Severity

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 64
YAML_SUFFIXES = (".yaml", ".yml")

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_PLAIN_TAGS = {_STR, _INT, _FLOAT, _BOOL, _NULL, "tag:yaml.org,2002:timestamp"}

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Document:
    """One YAML document: where it is and its plain value."""

    file: str
    index: int
    line: int
    column: int
    data: Any


@dataclass
class Loaded:
    """Everything read from a site repo: documents, load problems, and the texts for positions."""

    root: str
    documents: list[Document] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)


def _tag(node: Node) -> str:
    tag = node.tag
    return str(getattr(tag, "value", tag))  # ruamel may wrap tags in a Tag object


def _scalar(node: ScalarNode) -> Any:
    """A scalar's plain value by its resolved YAML 1.2 tag; timestamps stay text."""
    tag, value = _tag(node), node.value
    if tag == _INT:
        text = value.replace("_", "")
        if text[:2] in ("0o", "0O"):
            return int(text[2:], 8)
        if text[:2] in ("0x", "0X"):
            return int(text[2:], 16)
        return int(text)
    if tag == _BOOL:
        return value.lower() == "true"
    if tag == _NULL:
        return None
    if tag == _FLOAT:
        special = {".inf": "inf", "+.inf": "inf", "-.inf": "-inf", ".nan": "nan"}
        return float(special.get(value.lower(), value.replace("_", "")))
    return value


class _Walk:
    """Turn composed nodes into plain values, noting what a site repo must not use.

    Problems are collected, not raised, so one run reports all of them; a refused value is
    left out (a duplicate key keeps its first value).
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self._seen: set[int] = set()

    def refuse(self, node: Node, message: str, path: Path_) -> None:
        mark = node.start_mark
        self.problems.append(
            Problem(
                self.file, mark.line + 1, mark.column + 1, Severity.error, message, _dotted(path)
            )
        )

    def value(self, node: Node, path: Path_, depth: int, at: Node | None = None) -> Any:
        if id(node) in self._seen:
            self.refuse(at or node, _ALIAS, path)
            return _SKIP
        self._seen.add(id(node))
        if depth > MAX_DEPTH:
            self.refuse(node, f"nesting deeper than {MAX_DEPTH} levels", path)
            return _SKIP
        if isinstance(node, ScalarNode):
            if _tag(node) not in _PLAIN_TAGS:
                self.refuse(node, f"YAML tag {_tag(node)!r} is not supported here", path)
                return _SKIP
            return _scalar(node)
        if isinstance(node, SequenceNode):
            items = (self.value(item, (*path, i), depth + 1) for i, item in enumerate(node.value))
            return [item for item in items if item is not _SKIP]
        if isinstance(node, MappingNode):
            return self.mapping(node, path, depth)
        self.refuse(node, "unsupported YAML node", path)  # pragma: no cover
        return _SKIP

    def mapping(self, node: MappingNode, path: Path_, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == "<<":
                self.refuse(
                    key_node, "merge keys ('<<') are not supported: write the fields out", path
                )
                continue
            if not isinstance(key_node, ScalarNode) or _tag(key_node) not in _PLAIN_TAGS:
                self.refuse(key_node, "a key must be a plain string", path)
                continue
            key = str(key_node.value)
            if key in result or key in first_line:
                self.refuse(
                    key_node,
                    f"duplicate key {key!r} (first at line {first_line[key]}); "
                    "YAML would silently keep only one of them",
                    (*path, key),
                )
                continue
            first_line[key] = key_node.start_mark.line + 1
            value = self.value(value_node, (*path, key), depth + 1, at=key_node)
            if value is not _SKIP:
                result[key] = value
        return result


_SKIP = object()
_ALIAS = (
    "anchors and aliases (&name / *name) are not supported: write the value out, so that "
    "reviewers see every value in the diff"
)


def _compose(text: str) -> Iterator[Node]:
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                yield node
    finally:
        dispose = getattr(loader, "dispose", None)
        if dispose is not None:
            dispose()


def parse(file: str, text: str) -> tuple[list[Document], list[Problem]]:
    """Parse one file's text into documents; problems carry exact positions. Pure."""
    documents: list[Document] = []
    problems: list[Problem] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()  # node trees are acyclic garbage; collection passes only cost time here
    try:
        for index, node in enumerate(_compose(text)):
            mark = node.start_mark
            walk = _Walk(file)
            data = walk.value(node, (), 0)
            problems.extend(walk.problems)
            if data is None or data is _SKIP:
                continue  # an empty document, e.g. after a trailing '---'
            documents.append(Document(file, index, mark.line + 1, mark.column + 1, data))
    except MarkedYAMLError as exc:
        at = exc.problem_mark or exc.context_mark
        line, column = (at.line + 1, at.column + 1) if at is not None else (1, 1)
        what = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context else ""
        problems.append(
            Problem(file, line, column, Severity.error, f"YAML syntax: {what}{context}")
        )
    except YAMLError as exc:
        problems.append(Problem(file, 1, 1, Severity.error, f"YAML syntax: {exc}"))
    finally:
        if gc_was_enabled:
            gc.enable()
    return documents, problems


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


dotted = _dotted


def repo(directory: str | os.PathLike[str], *, max_file_bytes: int = MAX_FILE_BYTES) -> Loaded:
    """Read every *.yaml / *.yml file below `directory` (sorted, hidden folders skipped)."""
    root = Path(directory)
    loaded = Loaded(root=str(root))
    if not root.is_dir():
        loaded.problems.append(
            Problem(str(root), 1, 1, Severity.error, "the site repo directory does not exist")
        )
        return loaded
    resolved_root = root.resolve()
    for path in sorted(_yaml_files(root)):
        label = path.relative_to(root).as_posix()
        if path.is_symlink() and not path.resolve().is_relative_to(resolved_root):
            loaded.problems.append(
                Problem(label, 1, 1, Severity.error, "symbolic link leaving the site repo: refused")
            )
            continue
        size = path.stat().st_size
        if size > max_file_bytes:
            loaded.problems.append(
                Problem(
                    label,
                    1,
                    1,
                    Severity.error,
                    f"file is {size} bytes; the limit is {max_file_bytes} (split it up)",
                )
            )
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            loaded.problems.append(
                Problem(
                    label, 1, 1, Severity.error, f"not UTF-8 text: {exc.reason} at byte {exc.start}"
                )
            )
            continue
        documents, problems = parse(label, text)
        loaded.documents.extend(documents)
        loaded.problems.extend(problems)
        loaded.texts[label] = text
    return loaded


def _yaml_files(root: Path) -> Iterator[Path]:
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.endswith(YAML_SUFFIXES) and not name.startswith("."):
                yield Path(current) / name


class Positions:
    """Find the line and column of a field, composing a file again only when asked. Pure."""

    def __init__(self, texts: dict[str, str]) -> None:
        self._texts = texts
        self._nodes: dict[str, list[Node]] = {}

    def _documents(self, file: str) -> list[Node]:
        if file not in self._nodes:
            try:
                self._nodes[file] = list(_compose(self._texts.get(file, "")))
            except YAMLError:
                self._nodes[file] = []
        return self._nodes[file]

    def of(self, file: str, index: int, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """Line and column (1-based) of `path` in document `index` of `file`.

        With key=True, the position of the mapping key itself (for unknown fields). A path
        that does not exist resolves to its deepest existing parent (for missing fields).
        """
        nodes = self._documents(file)
        if index >= len(nodes):
            return (1, 1)
        node: Node = nodes[index]
        for i, part in enumerate(path):
            last = i == len(path) - 1
            if isinstance(node, MappingNode) and isinstance(part, str):
                for key_node, value_node in node.value:
                    if str(key_node.value) == part:
                        node = key_node if (last and key) else value_node
                        break
                else:
                    break
            elif (
                isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value)
            ):
                node = node.value[part]
            else:
                break
        return (node.start_mark.line + 1, node.start_mark.column + 1)
