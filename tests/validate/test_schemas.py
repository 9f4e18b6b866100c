"""The committed JSON Schemas: in step with the models, named by every example file, and
accepting the example documents as people write them ('600s', '800m', '256GB')."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from reconciler import load, schemas

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
EXAMPLE = ROOT / "site-repo-example"
# The example is a site repo as users copy it: it carries its own copy of the schemas.
EXAMPLE_SCHEMAS = EXAMPLE / "schemas"
MODELINE = re.compile(r"# yaml-language-server: \$schema=(\S+)\n")
EXAMPLE_FILES = sorted(p.relative_to(EXAMPLE).as_posix() for p in EXAMPLE.rglob("*.y*ml"))


def committed(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return schema


def validator(kind: str) -> Draft202012Validator:
    schema = committed(schemas.file_name(kind))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def example_documents(relative: str) -> list[load.Document]:
    documents, problems = load.parse(relative, (EXAMPLE / relative).read_text(encoding="utf-8"))
    assert problems == []
    return documents


@pytest.mark.parametrize("folder", [SCHEMAS, EXAMPLE_SCHEMAS], ids=lambda p: p.name)
def test_committed_schemas_match_the_models(folder: Path) -> None:
    rendered = schemas.all_rendered()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in folder.glob("*.json")}
    stale = sorted(name for name in rendered if on_disk.get(name) != rendered[name])
    extra = sorted(set(on_disk) - set(rendered))
    assert not stale and not extra, (
        f"{folder.relative_to(ROOT)}/ is out of date with reconciler/desired.py (differs: "
        f"{stale}, no longer generated: {extra}); regenerate with `make schemas` and commit"
    )


def test_the_loader_reads_the_examples_yaml_not_its_schemas() -> None:
    loaded = load.repo(EXAMPLE)
    assert loaded.problems == []
    files = {d.file for d in loaded.documents}  # relative to the repo
    assert files == set(EXAMPLE_FILES)
    assert (EXAMPLE_SCHEMAS / "site.schema.json").is_file()  # there, and not read as a document
    assert not any(f.startswith("schemas/") for f in files)


def test_there_is_one_schema_per_kind() -> None:
    assert sorted(schemas.all_rendered()) == [
        "batch.schema.json",
        "department.schema.json",
        "image.schema.json",
        "site.schema.json",
    ]


def test_the_example_has_every_kind() -> None:
    kinds = {d.data["kind"] for f in EXAMPLE_FILES for d in example_documents(f)}
    assert kinds == {"Site", "Image", "Department", "Batch"}


@pytest.mark.parametrize("relative", EXAMPLE_FILES)
def test_every_example_file_names_the_schema_of_its_kind(relative: str) -> None:
    path = EXAMPLE / relative
    first_line = path.read_text(encoding="utf-8").splitlines(keepends=True)[0]
    modeline = MODELINE.fullmatch(first_line)
    assert modeline, f"{relative} must start with '# yaml-language-server: $schema=...'"
    kinds = {d.data["kind"] for d in example_documents(relative)}
    assert len(kinds) == 1, f"{relative} mixes kinds {sorted(kinds)}: one schema per file"
    target = (path.parent / modeline.group(1)).resolve()
    assert target == EXAMPLE_SCHEMAS / schemas.file_name(kinds.pop())
    assert target.is_file()


@pytest.mark.parametrize("relative", EXAMPLE_FILES)
def test_example_documents_satisfy_the_committed_schemas(relative: str) -> None:
    for document in example_documents(relative):
        errors = sorted(
            f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator(document.data["kind"]).iter_errors(document.data)
        )
        assert errors == [], f"{relative} document {document.index}"


def test_the_examples_use_the_human_forms_the_schemas_must_accept() -> None:
    # Without these, the test above would prove nothing about them.
    [site] = example_documents("site.yaml")
    [sales] = example_documents("batches/2026-12-07-sales-multicast.yaml")
    images = example_documents("images.yaml")
    assert site.data["multicast"]["max_bitrate"] == "800m"
    assert site.data["network"]["dhcp"]["lease_time"] == "12h"
    assert sales.data["max_wait"] == "600s"
    assert sales.data["window"]["start"] == "2026-12-07T09:00"
    assert images[0].data["disk"]["size"] == "256GB"


@pytest.mark.parametrize(
    ("kind", "document", "complaint"),
    [
        ("Image", {"kind": "Image", "name": "x", "disk": {"device": "sda"}, "oss": "linux"}, "oss"),
        ("Image", {"kind": "Image", "name": "../x", "disk": {"device": "sda"}}, "does not match"),
        ("Image", {"kind": "Image", "name": "x", "disk": {"size": "256GB"}}, "'device'"),
        ("Image", {"kind": "Image", "name": "x", "disk": {"device": "sda", "size": "big"}}, "big"),
        ("Batch", {"kind": "Site"}, "'Batch' was expected"),
    ],
)
def test_the_schemas_refuse_what_validation_refuses(
    kind: str, document: dict[str, Any], complaint: str
) -> None:
    messages = [e.message for e in validator(kind).iter_errors(document)]
    assert any(complaint in m for m in messages), messages
