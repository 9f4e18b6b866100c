"""Loading YAML: plain values, exact positions, the YAML 1.2 core schema, and what is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import load
from reconciler.problems import Problem, Severity


def parse(text: str) -> tuple[list[load.Document], list[Problem]]:
    return load.parse("f.yaml", text)


def only_data(text: str) -> object:
    documents, problems = parse(text)
    assert problems == []
    assert len(documents) == 1
    return documents[0].data


def messages(text: str) -> list[tuple[int, int, str, str]]:
    """(line, column, field, message) of each problem."""
    return [(p.line, p.column, p.field, p.message) for p in parse(text)[1]]


# ----------------------------------------------------------------------------- positions

NESTED = """\
# a comment line
kind: Site
network:
  dhcp:
    pool:
      start: 10.1.0.10
      end:   10.1.0.99
pcs:
  - hostname: a
    macs: ["02:00:00:00:00:01", "02:00:00:00:00:02"]
  -   hostname: b
      macs:
        - 02:00:00:00:00:03
"""


@pytest.mark.parametrize(
    ("path", "key", "where"),
    [
        ((), False, (2, 1)),  # the document starts after the comment
        (("kind",), False, (2, 7)),
        (("kind",), True, (2, 1)),
        (("network", "dhcp", "pool"), False, (6, 7)),  # a mapping value starts at its first key
        (("network", "dhcp", "pool"), True, (5, 5)),
        (("network", "dhcp", "pool", "end"), False, (7, 14)),
        (("network", "dhcp", "pool", "end"), True, (7, 7)),
        (("pcs", 0), False, (9, 5)),
        (("pcs", 0, "macs", 1), False, (10, 33)),
        (("pcs", 1, "hostname"), False, (11, 17)),
        (("pcs", 1, "macs", 0), False, (13, 11)),
        # paths that do not exist resolve to their deepest existing parent
        (("network", "dhcp", "lease_time"), False, (5, 5)),
        (("pcs", 1, "ip"), False, (11, 7)),
        (("pcs", 7, "hostname"), False, (9, 3)),
        (("nothing",), True, (2, 1)),
    ],
)
def test_positions_are_exact(path: load.Path_, key: bool, where: tuple[int, int]) -> None:
    positions = load.Positions({"f.yaml": NESTED})
    assert positions.of("f.yaml", 0, path, key=key) == where


def test_positions_count_documents_like_the_loader() -> None:
    text = "---\n---\nkind: Image\n---\nkind: Batch\nname: x\n"
    documents, problems = parse(text)
    assert problems == []
    assert [(d.index, d.line, d.data["kind"]) for d in documents] == [
        (1, 3, "Image"),
        (2, 5, "Batch"),
    ]
    positions = load.Positions({"f.yaml": text})
    assert positions.of("f.yaml", 2, ("name",)) == (6, 7)
    assert positions.of("f.yaml", 1, ("kind",), key=True) == (3, 1)


def test_positions_keep_list_indices_when_an_alias_was_dropped() -> None:
    text = 'a: &x "02:00:00:00:00:01"\nmacs: [*x, "zz"]\n'
    documents, _ = parse(text)
    assert documents[0].data["macs"] == [None, "zz"]  # index 1 is still "zz"
    assert load.Positions({"f.yaml": text}).of("f.yaml", 0, ("macs", 1)) == (2, 12)


def test_positions_of_the_first_of_duplicate_keys() -> None:
    text = "a: 1\nb:\n  c: 2\na: 3\n"
    assert parse(text)[0][0].data == {"a": 1, "b": {"c": 2}}
    assert load.Positions({"f.yaml": text}).of("f.yaml", 0, ("a",)) == (1, 4)


def test_positions_skip_keys_that_are_collections() -> None:
    text = "? [x, y]\n: 1\nb: {c: 2}\n"
    positions = load.Positions({"f.yaml": text})
    assert positions.of("f.yaml", 0, ("b", "c")) == (3, 8)


def test_positions_of_an_unknown_file_or_document() -> None:
    positions = load.Positions({"f.yaml": "a: 1\n"})
    assert positions.of("other.yaml", 0, ("a",)) == (1, 1)
    assert positions.of("f.yaml", 3, ("a",)) == (1, 1)


def test_positions_of_a_broken_file_stop_at_the_error() -> None:
    positions = load.Positions({"f.yaml": "a: 1\nb: [\n"})
    assert positions.of("f.yaml", 0, ("a",)) == (1, 4)


# ----------------------------------------------------------------------------- documents


def test_multi_document_file() -> None:
    documents, problems = parse("kind: Image\nname: a\n---\nkind: Image\nname: b\n")
    assert problems == []
    assert [(d.index, d.line, d.column, d.data) for d in documents] == [
        (0, 1, 1, {"kind": "Image", "name": "a"}),
        (1, 4, 1, {"kind": "Image", "name": "b"}),
    ]


@pytest.mark.parametrize(
    "text", ["", "\n", "# only a comment\n", "---\n", "---\n...\n", "--- ~\n", "---\nnull\n"]
)
def test_empty_documents_are_skipped(text: str) -> None:
    assert parse(text) == ([], [])


def test_a_document_after_empty_ones_keeps_its_index() -> None:
    documents, _ = parse("---\n# nothing\n---\nkind: Site\n")
    assert [(d.index, d.line) for d in documents] == [(1, 4)]


# ----------------------------------------------------------------------------- YAML 1.2 scalars


@pytest.mark.parametrize(
    ("plain", "value"),
    [
        ("yes", "yes"),  # YAML 1.1 would say True
        ("no", "no"),
        ("on", "on"),
        ("off", "off"),
        ("y", "y"),
        ("true", True),
        ("True", True),
        ("FALSE", False),
        ("0644", 644),  # decimal, not octal
        ("0o17", 15),
        ("0x1F", 31),
        ("-12", -12),
        ("+12", 12),
        ("1_000", "1_000"),  # no underscores in the core schema
        ("0b101", "0b101"),
        ("1:20", "1:20"),  # no sexagesimal numbers
        ("02:4b:49:54:01:01", "02:4b:49:54:01:01"),  # an unquoted MAC stays text
        ("024b49540101", "024b49540101"),
        ("2026-12-07", "2026-12-07"),  # dates stay text
        ("2026-12-07T09:00", "2026-12-07T09:00"),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        ("-.inf", float("-inf")),
        ("~", None),
        ("null", None),
        ("Null", None),
        ("", None),
        ("10.1.0.1", "10.1.0.1"),
        ("256GB", "256GB"),
        ("'0644'", "0644"),
        ('"yes"', "yes"),
        ("1" * 4001, "1" * 4001),  # too long to be a number: kept as text, no crash
    ],
)
def test_core_schema_scalars(plain: str, value: object) -> None:
    assert only_data(f"v: {plain}\n") == {"v": value}


def test_nan_is_a_float() -> None:
    data = only_data("v: .nan\n")
    assert isinstance(data, dict)
    assert data["v"] != data["v"]


def test_block_scalars_are_text() -> None:
    assert only_data("v: |\n  0644\n  yes\n") == {"v": "0644\nyes\n"}
    assert only_data("v: >-\n  a\n  b\n") == {"v": "a b"}


def test_keys_are_their_text() -> None:
    assert only_data("1: a\ntrue: b\nnull: c\n") == {"1": "a", "true": "b", "null": "c"}


# ----------------------------------------------------------------------------- refused


ANCHORS = (
    "anchors and aliases (&name / *name) are not supported: write the value out, so that "
    "reviewers see every value in the diff"
)


def test_anchors_and_aliases_are_refused_where_they_are() -> None:
    text = "a: &x [1]\nb: *x\nc:\n  - 5\n  - *x\n"
    assert messages(text) == [
        (1, 4, "a", f"anchor '&x': {ANCHORS}"),
        (2, 4, "b", f"alias '*x': {ANCHORS}"),
        (5, 5, "c[1]", f"alias '*x': {ANCHORS}"),
    ]
    assert parse(text)[0][0].data == {"a": [1], "c": [5, None]}


def test_an_alias_bomb_is_refused_without_expanding_it() -> None:
    # 9 levels of 9 aliases would expand to 9**9 (387 million) strings.
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        refs = ", ".join([f"*l{level - 1}"] * 9)
        lines.append(f"l{level}: &l{level} [{refs}]")
    documents, problems = parse("\n".join(lines) + "\n")
    assert len(problems) == 10 + 9 * 9  # each anchor and each alias, once
    assert {p.message.split(":")[0] for p in problems} == {
        *(f"anchor '&l{n}'" for n in range(10)),
        *(f"alias '*l{n}'" for n in range(9)),
    }
    assert documents[0].data["l9"] == [None] * 9


def test_a_merge_key_is_refused() -> None:
    assert messages("a:\n  <<: {b: 1}\n  c: 2\n") == [
        (2, 3, "a", "merge keys ('<<') are not supported: write the fields out")
    ]


@pytest.mark.parametrize(("tag", "shown"), [("!!str", "!!str"), ("!!int", "!!int"), ("!x", "!x")])
def test_tags_are_refused_and_their_value_left_out(tag: str, shown: str) -> None:
    documents, problems = parse(f"a: {tag} 5\nb: 2\n")
    assert documents[0].data == {"b": 2}
    assert documents[0].refused == frozenset({("a",)})
    assert [(p.line, p.column, p.field) for p in problems] == [(1, 4, "a")]
    assert problems[0].message.startswith(f"YAML tags ('{shown}') are not supported")


def test_a_tagged_mapping_is_refused() -> None:
    documents, problems = parse("a: !!set {x, y}\n")
    assert documents[0].data == {}
    assert problems[0].message.startswith("YAML tags ('!!set')")


def test_keys_that_are_lists_are_refused() -> None:
    assert messages("? [a]\n: 1\nb: 2\n") == [
        (1, 3, "", "a key must be a plain string, not a list or mapping")
    ]


def test_duplicate_keys_keep_the_first_value() -> None:
    documents, problems = parse("a: 1\nb: {c: 1, c: 2}\na: 3\n")
    assert documents[0].data == {"a": 1, "b": {"c": 1}}
    assert [(p.line, p.column, p.field) for p in problems] == [(2, 11, "b.c"), (3, 1, "a")]
    assert problems[1].message.startswith("duplicate key 'a' (first at line 1)")


def test_other_yaml_versions_are_refused() -> None:
    assert messages("%YAML 1.1\n---\na: yes\n") == [
        (
            1,
            1,
            "",
            "'%YAML 1.1' is not supported: site repo files are read as YAML 1.2 (remove the directive)",
        )
    ]


def test_deep_nesting_is_refused_before_libyaml_recurses() -> None:
    # libyaml's composer recurses in C (200,000 levels crashed the interpreter) and its
    # scanner slows down with every open level; reading stops at MAX_DEPTH instead.
    documents, problems = parse("a: " + "[" * 200_000 + "]" * 200_000 + "\n")
    assert documents == []
    assert [(p.line, p.column) for p in problems] == [(1, 4 + load.MAX_DEPTH - 1)]
    assert problems[0].message.startswith("nesting deeper than 64 levels")


def test_block_nesting_is_limited_too() -> None:
    _, problems = parse("- " * 100_000 + "x\n")
    assert [p.message.split(" (")[0] for p in problems] == ["nesting deeper than 64 levels"]


def test_nesting_up_to_the_limit_is_read() -> None:
    depth = load.MAX_DEPTH - 1  # the document's own mapping is one level
    data = only_data("a: " + "[" * depth + "1" + "]" * depth + "\n")
    for _ in range(depth + 1):  # the key, then each list
        assert isinstance(data, dict | list)
        data = data["a"] if isinstance(data, dict) else data[0]
    assert data == 1


def test_a_syntax_error_has_its_position_and_a_hint() -> None:
    assert messages("a: 1\nb: [1, 2\nc: 3\n") == [
        (
            3,
            2,
            "",
            "YAML syntax: did not find expected ',' or ']' (while parsing a flow sequence at 2:4); "
            "close the list with ']' and separate its items with ','",
        )
    ]


def test_a_tab_indent_is_explained() -> None:
    [(line, column, _, message)] = messages("a:\n\tb: 1\n")
    assert (line, column) == (2, 1)
    assert "indent with spaces, never tabs" in message


def test_a_control_character_is_placed_after_multibyte_text() -> None:
    # libyaml counts this position in bytes: 'é' is two of them.
    assert messages('é: ok\nb: "ab\x07"\n') == [
        (
            2,
            7,
            "",
            "YAML: character U+0007 is not allowed (control characters are not allowed); "
            "remove it, or write it as the escape \\u0007 inside a double-quoted string",
        )
    ]


def test_documents_before_a_syntax_error_are_kept() -> None:
    documents, problems = parse("kind: Image\n---\nkind: [\n")
    assert [d.data for d in documents] == [{"kind": "Image"}]
    assert len(problems) == 1


@settings(max_examples=300)
@given(
    text=st.text(alphabet=st.sampled_from(list("ab:- \n[]{}&*!#'\"|>?,%@`\t\x07é")), max_size=60)
)
def test_any_text_loads_without_crashing_and_problems_stay_on_one_line(text: str) -> None:
    documents, problems = parse(text)
    for problem in problems:
        assert problem.line >= 1 and problem.column >= 1
        assert "\n" not in problem.text()
    positions = load.Positions({"f.yaml": text})
    for document in documents:
        assert positions.of("f.yaml", document.index, ()) == (document.line, document.column)


def test_odd_keys_stay_on_one_line_in_field_paths() -> None:
    assert load.dotted(("pcs", 3, "macs", 0)) == "pcs[3].macs[0]"
    assert load.dotted(("a\nb", "c")) == "['a\\nb'].c"
    [(_, _, field, _)] = messages('"x\\ny": {a: 1, a: 2}\n')
    assert field == "['x\\ny'].a"


# ----------------------------------------------------------------------------- files


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_repo_reads_yaml_files_in_sorted_order_and_skips_hidden_ones(tmp_path: Path) -> None:
    write(tmp_path / "b.yaml", "kind: B\n")
    write(tmp_path / "a" / "z.yml", "kind: Z\n")
    write(tmp_path / "a" / "c.yaml", "kind: C\n")
    write(tmp_path / ".git" / "config.yaml", "kind: Hidden\n")
    write(tmp_path / ".hidden.yaml", "kind: Hidden\n")
    write(tmp_path / "a" / ".skip" / "x.yaml", "kind: Hidden\n")
    write(tmp_path / "README.md", "kind: NotYaml\n")
    write(tmp_path / "notes.txt", "kind: NotYaml\n")
    loaded = load.repo(tmp_path)
    assert loaded.problems == []
    assert [(d.file, d.data["kind"]) for d in loaded.documents] == [
        ("a/c.yaml", "C"),
        ("a/z.yml", "Z"),
        ("b.yaml", "B"),
    ]
    assert sorted(loaded.texts) == ["a/c.yaml", "a/z.yml", "b.yaml"]


def test_a_symlink_leaving_the_repo_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    outside = write(tmp_path / "secret.yaml", "kind: Site\n")
    write(repo / "site.yaml", "kind: Image\n")
    (repo / "leak.yaml").symlink_to(outside)
    (repo / "alias.yaml").symlink_to(repo / "site.yaml")  # inside the repo: fine
    (repo / "broken.yaml").symlink_to(repo / "missing.yaml")
    loaded = load.repo(repo)
    assert [(d.file, d.data["kind"]) for d in loaded.documents] == [
        ("alias.yaml", "Image"),
        ("site.yaml", "Image"),
    ]
    assert [(p.file, p.severity, p.message) for p in loaded.problems] == [
        ("broken.yaml", Severity.error, "cannot be read: No such file or directory"),
        (
            "leak.yaml",
            Severity.error,
            "symbolic link leading out of the site repo: refused (copy the file in)",
        ),
    ]


def test_a_symlinked_directory_is_not_followed_and_says_so(tmp_path: Path) -> None:
    write(tmp_path / "elsewhere" / "d.yaml", "kind: Department\n")
    repo = tmp_path / "repo"
    write(repo / "site.yaml", "kind: Site\n")
    (repo / "departments").symlink_to(tmp_path / "elsewhere")
    loaded = load.repo(repo)
    assert [d.file for d in loaded.documents] == ["site.yaml"]
    assert [(p.file, p.severity) for p in loaded.problems] == [("departments", Severity.warning)]
    assert "not followed" in loaded.problems[0].message


def test_a_file_over_the_limit_is_refused_unread(tmp_path: Path) -> None:
    write(tmp_path / "small.yaml", "kind: Site\n")
    write(tmp_path / "big.yaml", "kind: Site\n" + "# padding\n" * 10)
    loaded = load.repo(tmp_path, max_file_bytes=100)
    assert [d.file for d in loaded.documents] == ["small.yaml"]
    assert "big.yaml" not in loaded.texts
    assert [p.text() for p in loaded.problems] == [
        "big.yaml:1:1: error: file is 111 bytes; at most 100 are read (split it into several files)"
    ]


def test_the_default_limit_refuses_a_huge_file(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as stream:
        stream.truncate(load.MAX_FILE_BYTES + 1)  # sparse: nothing is written to disk
    loaded = load.repo(tmp_path)
    assert [p.message for p in loaded.problems] == [
        f"file is {load.MAX_FILE_BYTES + 1} bytes; at most {load.MAX_FILE_BYTES} are read "
        "(split it into several files)"
    ]


def test_non_utf8_text_is_refused_with_its_position(tmp_path: Path) -> None:
    (tmp_path / "d.yaml").write_bytes(
        "kind: Department\nname: ü\ndescription: ab\xff\n".encode("latin-1")
    )
    loaded = load.repo(tmp_path)
    assert loaded.documents == []
    assert [p.text() for p in loaded.problems] == [
        "d.yaml:2:7: error: not UTF-8 text: byte 0xfc cannot be decoded (invalid start byte); "
        "save the file as UTF-8"
    ]


def test_a_fifo_is_not_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")
    loaded = load.repo(tmp_path)  # would block forever if it were opened
    assert [p.message for p in loaded.problems] == ["not a regular file: refused"]


def test_a_file_name_with_a_newline_stays_on_one_line(tmp_path: Path) -> None:
    write(tmp_path / "a\nb.yaml", "kind: [\n")
    [problem] = load.repo(tmp_path).problems
    assert problem.file == "a\\nb.yaml"


def test_a_missing_repo(tmp_path: Path) -> None:
    loaded = load.repo(tmp_path / "nope")
    assert [p.message for p in loaded.problems] == ["the site repo directory does not exist"]
