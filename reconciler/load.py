"""Load a site repo's YAML into plain values, keeping the way back to line and column.

Speed, exact positions and safety at once: libyaml (through ruamel.yaml's C parser) turns
the text into a stream of events, and one flat loop here builds plain values from them with
an explicit stack. There is no node tree and no recursion, so a deeply nested file can
neither overflow the C stack (libyaml's own composer recurses) nor run long (libyaml's
scanner slows down with every open flow level): reading stops at `MAX_DEPTH`. When a
problem needs a position, the one file concerned is read again into an index of paths
(`Positions`). Errors are rare, so the happy path carries no position data at all.

Scalars follow the YAML 1.2 core schema (`yes` stays text, `0644` is the number 644,
`02:4b:49:54:01:01` stays text). Anchors and aliases are refused: every value in a reviewed
change should be visible in the diff, and refusing them also defuses alias bombs. Duplicate
keys, tags, merge keys and other YAML versions are refused too. `parse` is pure; `repo`
reads files.
"""

from __future__ import annotations

import gc
import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# libyaml through ruamel.yaml.clib, a declared dependency (see pyproject.toml).
from _ruamel_yaml import CParser
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from ruamel.yaml.reader import ReaderError

from reconciler.problems import Problem, Severity

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 64
YAML_SUFFIXES = (".yaml", ".yml")

Path_ = tuple[str | int, ...]

# The YAML 1.2 core schema (yaml.org/spec/1.2.2, 10.3.2): everything else is a string.
_NULL = re.compile(r"null|Null|NULL|~|")
_TRUE = re.compile(r"true|True|TRUE")
_FALSE = re.compile(r"false|False|FALSE")
_DECIMAL = re.compile(r"[-+]?[0-9]+")
_OCTAL = re.compile(r"0o[0-7]+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(?:inf|Inf|INF)")
_NAN = re.compile(r"\.(?:nan|NaN|NAN)")
# Python refuses to convert longer digit strings (int_max_str_digits); no field needs them.
_MAX_DIGITS = 4000


def _plain(text: str) -> Any:
    """The value of a plain (unquoted) scalar under the YAML 1.2 core schema."""
    if not text:
        return None
    if text[0] not in "0123456789-+.~nNtTfF":
        return text  # the common case: a word
    if _NULL.fullmatch(text):
        return None
    if _TRUE.fullmatch(text):
        return True
    if _FALSE.fullmatch(text):
        return False
    if len(text) > _MAX_DIGITS:
        return text
    if _DECIMAL.fullmatch(text):
        return int(text)
    if _OCTAL.fullmatch(text):
        return int(text[2:], 8)
    if _HEX.fullmatch(text):
        return int(text[2:], 16)
    if _FLOAT.fullmatch(text):
        return float(text)
    if _INF.fullmatch(text):
        return float("-inf" if text.startswith("-") else "inf")
    if _NAN.fullmatch(text):
        return float("nan")
    return text


@dataclass(frozen=True)
class Document:
    """One YAML document: where it is and its plain value."""

    file: str
    index: int
    line: int
    column: int
    data: Any
    refused: frozenset[Path_] = frozenset()
    """Paths whose value the loader refused (an alias, a tag): not "missing", but reported."""


@dataclass
class Loaded:
    """Everything read from a site repo: documents, load problems, and the texts for positions."""

    root: str
    documents: list[Document] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    unread: list[str] = field(default_factory=list)
    """Files (or the repo itself) that could not be read to their end: they may hide
    documents, so "no Site" is not claimed while there are any."""


_ANCHOR = (
    "anchors and aliases (&name / *name) are not supported: write the value out, so that "
    "reviewers see every value in the diff"
)
_TAG = "YAML tags ({tag!r}) are not supported: write a plain value (quote it to make it text)"
_DEEP = (
    f"nesting deeper than {MAX_DEPTH} levels (a site repo needs fewer than 10); "
    "the rest of this file was not read"
)
_NO_KEY = object()
"""A key that is not a plain string: its value is dropped."""
_DROP = object()
"""A value that was refused: left out of mappings, None in sequences (keeps indices)."""


class _TooDeep(Exception):
    pass


class _Frame:
    """A mapping or sequence being built."""

    __slots__ = ("container", "drop", "key", "lines", "path", "start")

    def __init__(self, container: dict[str, Any] | list[Any], path: Path_, start: Any) -> None:
        self.container = container
        self.path = path
        self.start = start
        self.key: object = None
        """In a mapping: the key whose value comes next, or None when a key comes next."""
        self.lines: dict[str, int] = {}
        self.drop = False


class _Reader:
    """Build plain values from libyaml's events with an explicit stack.

    Problems are collected, not raised, so one run reports all of them; a refused value is
    left out (a duplicate key keeps its first value).
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self.refused: set[Path_] = set()

    def refuse(self, event: Any, message: str, path: Path_) -> None:
        mark = event.start_mark
        self.refused.add(path)
        self.problems.append(
            Problem(
                self.file, mark.line + 1, mark.column + 1, Severity.error, message, dotted(path)
            )
        )

    def documents(self, next_event: Callable[[], Any]) -> Iterator[Document]:
        index = -1
        while True:
            event = next_event()
            kind = type(event)
            if kind is StreamEndEvent:
                return
            if kind is DocumentStartEvent:
                index += 1
                if event.version is not None and tuple(event.version) != (1, 2):
                    major, minor = event.version
                    self.refuse(
                        event,
                        f"'%YAML {major}.{minor}' is not supported: site repo files are read as "
                        "YAML 1.2 (remove the directive)",
                        (),
                    )
                continue
            if kind in (ScalarEvent, AliasEvent, MappingStartEvent, SequenceStartEvent):
                mark = event.start_mark
                self.refused = set()
                data = self.node(event, next_event)
                if data is not None and data is not _DROP:
                    refused = frozenset(self.refused)
                    yield Document(self.file, index, mark.line + 1, mark.column + 1, data, refused)

    def node(self, first: Any, next_event: Callable[[], Any]) -> Any:
        """The value of the node that starts with `first`, reading events up to its end."""
        stack: list[_Frame] = []
        event = first
        while True:
            kind = type(event)
            at = event
            if kind is ScalarEvent:
                if event.anchor is not None or event.tag is not None:
                    value = self.decorated_scalar(event, stack)
                elif event.style or not event.implicit[0]:
                    value = event.value  # quoted or block scalar: always text
                else:
                    value = _plain(event.value)
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                if len(stack) >= MAX_DEPTH:
                    self.refuse(event, _DEEP, _path_of(stack))
                    raise _TooDeep
                path = _path_of(stack)
                frame = _Frame({} if kind is MappingStartEvent else [], path, event)
                if event.anchor is not None or event.tag is not None:
                    frame.drop = self.decorated(event, path)
                stack.append(frame)
                event = next_event()
                continue
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                frame = stack.pop()
                value = _DROP if frame.drop else frame.container
                at = frame.start
            elif kind is AliasEvent:
                self.refuse(event, f"alias '*{event.anchor}': {_ANCHOR}", _path_of(stack))
                value = _DROP
            else:  # pragma: no cover - libyaml emits nothing else inside a document
                raise YAMLError(f"unexpected YAML event {kind.__name__}")
            if not stack:
                return value
            top = stack[-1]
            container = top.container
            if type(container) is list:
                container.append(None if value is _DROP else value)
            elif top.key is None:
                top.key = self.key(top, value, at)
            else:
                if top.key is not _NO_KEY and value is not _DROP:
                    container[top.key] = value  # type: ignore[call-overload,index]
                top.key = None
            event = next_event()

    def decorated(self, event: Any, path: Path_) -> bool:
        """Report an anchor or a tag on a node; True when the node must be left out."""
        if event.anchor is not None:
            self.refuse(event, f"anchor '&{event.anchor}': {_ANCHOR}", path)
        if event.tag is not None:
            self.refuse(event, _TAG.format(tag=_short_tag(event.tag)), path)
            return True
        return False

    def decorated_scalar(self, event: Any, stack: list[_Frame]) -> Any:
        path = _path_of(stack)
        if stack and isinstance(stack[-1].container, dict) and stack[-1].key is None:
            path = (*path, str(event.value))  # the scalar is a key
        if self.decorated(event, path):
            return _DROP
        if event.style or not event.implicit[0]:
            return event.value
        return _plain(event.value)

    def key(self, frame: _Frame, value: Any, event: Any) -> object:
        path = frame.path
        if type(event) is not ScalarEvent or value is _DROP:
            if value is not _DROP:
                self.refuse(event, "a key must be a plain string, not a list or mapping", path)
            return _NO_KEY
        key = str(event.value)
        if key == "<<" and not event.style:
            self.refuse(event, "merge keys ('<<') are not supported: write the fields out", path)
            return _NO_KEY
        if key in frame.lines:
            self.refuse(
                event,
                f"duplicate key {key!r} (first at line {frame.lines[key]}); YAML would keep "
                "only one of the two values: remove one",
                (*path, key),
            )
            return _NO_KEY
        frame.lines[key] = event.start_mark.line + 1
        return key


def _path_of(stack: list[_Frame]) -> Path_:
    """The path of the next node to be added to the top of the stack."""
    if not stack:
        return ()
    top = stack[-1]
    if isinstance(top.container, list):
        return (*top.path, len(top.container))
    return (*top.path, top.key) if isinstance(top.key, str) else top.path


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org") else tag


_SYNTAX_HINTS = (
    (
        "found unexpected ':'",
        "inside [...] or {...}, quote a value that contains ':' (e.g. \"2026-12-07T09:00\")",
    ),
    ("mapping values are not allowed", "quote a value that contains ': '"),
    ("expected ',' or ']'", "close the list with ']' and separate its items with ','"),
    ("expected ',' or '}'", "close the mapping with '}' and separate its items with ','"),
    ("did not find expected key", "keys of one mapping start in the same column"),
    ("could not find expected ':'", "write 'key: value' with a space after ':'"),
    ("found unexpected end of stream", "close the quote or bracket that is still open"),
    (
        "that cannot start any token",
        "indent with spaces, never tabs; quote values starting with '@' or '`'",
    ),
    ("found undefined tag handle", "tags are not supported: remove the '!...'"),
)


def _syntax_problem(file: str, text: str, exc: YAMLError) -> Problem:
    if isinstance(exc, ReaderError):
        # libyaml counts this position in UTF-8 bytes.
        before = text.encode("utf-8")[: exc.position].decode("utf-8", "replace")
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1) + 1
        code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1])
        message = (
            f"YAML: character U+{code:04X} is not allowed ({exc.reason}); remove it, "
            f"or write it as the escape \\u{code:04x} inside a double-quoted string"
        )
        return Problem(file, line, column, Severity.error, message)
    if isinstance(exc, MarkedYAMLError):
        at = exc.problem_mark or exc.context_mark
        line, column = (at.line + 1, at.column + 1) if at is not None else (1, 1)
        what = exc.problem or "invalid YAML"
        context = ""
        if exc.context:
            start = exc.context_mark
            where = f" at {start.line + 1}:{start.column + 1}" if start is not None else ""
            context = f" ({exc.context}{where})"
        hint = next((h for needle, h in _SYNTAX_HINTS if needle in what), "")
        message = f"YAML syntax: {what}{context}{'; ' + hint if hint else ''}"
        return Problem(file, line, column, Severity.error, message)
    message = " ".join(str(exc).split())  # one line, whatever the library said
    return Problem(file, 1, 1, Severity.error, f"YAML syntax: {message}")


def parse(file: str, text: str) -> tuple[list[Document], list[Problem]]:
    """Parse one file's text into documents; problems carry exact positions. Pure."""
    documents, problems, _complete = _parse(file, text)
    return documents, problems


def _parse(file: str, text: str) -> tuple[list[Document], list[Problem], bool]:
    """`parse`, and whether the whole text was read (no syntax error, not too deep)."""
    documents: list[Document] = []
    reader = _Reader(file)
    parser = CParser(text)
    complete = False
    try:
        for document in reader.documents(parser.get_event):
            documents.append(document)  # one by one: keep those read before an error
        complete = True
    except _TooDeep:
        pass
    except YAMLError as exc:
        reader.problems.append(_syntax_problem(file, text, exc))
    finally:
        parser.dispose()
    return documents, reader.problems, complete


_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def dotted(path: Path_) -> str:
    """'pcs[3].macs[0]'; a key with other characters is quoted, so it stays on one line."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _SIMPLE_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def _label(path: Path, root: Path) -> str:
    label = path.relative_to(root).as_posix()
    # A file name is untrusted too: keep every report line one line.
    return label if label.isprintable() else label.encode("unicode_escape").decode("ascii")


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while many small acyclic objects are built.

    A site of 50,000 PCs makes millions of them; each collection pass walks every live one
    again, which cost a third of validation's time. Reference counting still frees them.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def repo(directory: str | os.PathLike[str], *, max_file_bytes: int = MAX_FILE_BYTES) -> Loaded:
    """Read every *.yaml / *.yml file below `directory` (sorted, hidden entries skipped)."""
    with gc_paused():
        return _repo(directory, max_file_bytes)


def _repo(directory: str | os.PathLike[str], max_file_bytes: int) -> Loaded:
    root = Path(directory)
    loaded = Loaded(root=str(root))
    if not root.is_dir():
        loaded.problems.append(
            Problem(str(root), 1, 1, Severity.error, "the site repo directory does not exist")
        )
        loaded.unread.append(str(root))
        return loaded
    resolved_root = root.resolve()
    for path, is_dir_link in _yaml_files(root):
        label = _label(path, root)
        if is_dir_link:
            loaded.problems.append(
                Problem(
                    label,
                    1,
                    1,
                    Severity.warning,
                    "symbolic link to a directory: not followed, its files are not read "
                    "(put the files in the repo itself)",
                )
            )
            continue
        text = _read(path, label, resolved_root, max_file_bytes, loaded.problems)
        if text is None:
            loaded.unread.append(label)
            continue
        documents, problems, complete = _parse(label, text)
        if not complete:
            loaded.unread.append(label)
        loaded.documents.extend(documents)
        loaded.problems.extend(problems)
        loaded.texts[label] = text
    return loaded


def _read(
    path: Path, label: str, root: Path, max_file_bytes: int, problems: list[Problem]
) -> str | None:
    """A file's text, or None after noting why it cannot be used."""

    def refuse(message: str, line: int = 1, column: int = 1) -> None:
        problems.append(Problem(label, line, column, Severity.error, message))

    try:
        if path.is_symlink() and not path.resolve(strict=True).is_relative_to(root):
            refuse("symbolic link leading out of the site repo: refused (copy the file in)")
            return None
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            refuse("not a regular file: refused")
            return None
        if info.st_size > max_file_bytes:
            refuse(
                f"file is {info.st_size} bytes; at most {max_file_bytes} are read "
                "(split it into several files)"
            )
            return None
        with path.open("rb") as stream:
            data = stream.read(max_file_bytes + 1)
    except (OSError, RuntimeError) as exc:  # broken or looping links, permissions
        refuse(f"cannot be read: {exc.strerror if isinstance(exc, OSError) else exc}")
        return None
    if len(data) > max_file_bytes:  # it grew since stat
        refuse(f"file has more than {max_file_bytes} bytes (split it into several files)")
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8", "replace")
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1) + 1
        refuse(
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} cannot be decoded ({exc.reason}); "
            "save the file as UTF-8",
            line,
            column,
        )
        return None


def _yaml_files(root: Path) -> list[tuple[Path, bool]]:
    """YAML files below `root` in sorted order, with symlinked directories flagged (True)."""
    found: list[tuple[Path, bool]] = []
    for current, dirs, files in os.walk(root):
        here = Path(current)
        visible = sorted(d for d in dirs if not d.startswith("."))
        dirs[:] = [d for d in visible if not (here / d).is_symlink()]
        found.extend((here / d, True) for d in visible if (here / d).is_symlink())
        found.extend(
            (here / name, False)
            for name in files
            if name.endswith(YAML_SUFFIXES) and not name.startswith(".")
        )
    return sorted(found)


class Positions:
    """Find the line and column of a field, reading a file again only when asked. Pure."""

    def __init__(self, texts: dict[str, str]) -> None:
        self._texts = texts
        self._index: dict[str, _Index] = {}

    def of(self, file: str, index: int, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """Line and column (1-based) of `path` in document `index` of `file`.

        With key=True, the position of the mapping key itself (for unknown fields). A path
        that does not exist resolves to its deepest existing parent (for missing fields).
        """
        if file not in self._index:
            self._index[file] = _index(self._texts.get(file, ""))
        found = self._index[file]
        if key and (index, path) in found.keys:
            return found.keys[(index, path)]
        for end in range(len(path), -1, -1):
            at = found.values.get((index, path[:end]))
            if at is not None:
                return at
        return (1, 1)


@dataclass
class _Index:
    values: dict[tuple[int, Path_], tuple[int, int]] = field(default_factory=dict)
    keys: dict[tuple[int, Path_], tuple[int, int]] = field(default_factory=dict)


_KEY, _IN_KEY, _VALUE = 0, 1, 2  # what a mapping expects next


class _Slot:
    """A mapping or sequence being indexed; path None inside a key that is a collection."""

    __slots__ = ("index", "key", "path", "state")

    def __init__(self, path: Path_ | None, mapping: bool) -> None:
        self.path = path
        self.state = _KEY if mapping else -1
        self.key: str | None = None
        self.index = 0


def _index(text: str) -> _Index:
    """Positions of every value and key of every document; the first of duplicate keys wins."""
    found = _Index()
    parser = CParser(text)
    stack: list[_Slot] = []
    document = -1
    try:
        while True:
            event = parser.get_event()
            kind = type(event)
            if kind is StreamEndEvent:
                break
            if kind is DocumentStartEvent:
                document += 1
                stack.clear()
                continue
            if kind is MappingEndEvent or kind is SequenceEndEvent:
                stack.pop()
                _ended(stack)
                continue
            if kind not in (ScalarEvent, AliasEvent, MappingStartEvent, SequenceStartEvent):
                continue
            mark = (event.start_mark.line + 1, event.start_mark.column + 1)
            top = stack[-1] if stack else None
            collection = kind is MappingStartEvent or kind is SequenceStartEvent
            is_key = top is not None and top.state == _KEY
            path: Path_ | None
            if top is None:
                path = ()
            elif is_key:
                top.key = str(event.value) if kind is ScalarEvent else None
                if top.path is not None and top.key is not None:
                    found.keys.setdefault((document, (*top.path, top.key)), mark)
                top.state = _IN_KEY if collection else _VALUE
                path = None
            elif top.path is None:
                path = None
            elif top.state == _VALUE:
                path = None if top.key is None else (*top.path, top.key)
            else:
                path = (*top.path, top.index)
            if path is not None:
                found.values.setdefault((document, path), mark)
            if collection:
                if len(stack) >= MAX_DEPTH:
                    break
                stack.append(_Slot(path, kind is MappingStartEvent))
            elif not is_key:
                _ended(stack)
    except YAMLError:
        pass  # already reported by parse; positions up to the error are kept
    finally:
        parser.dispose()
    return found


def _ended(stack: list[_Slot]) -> None:
    """A node just ended: move its parent on to the next key or item."""
    if not stack:
        return
    top = stack[-1]
    if top.state == -1:
        top.index += 1
    elif top.state == _IN_KEY:
        top.state = _VALUE
    elif top.state == _VALUE:
        top.state = _KEY
