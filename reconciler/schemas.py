"""JSON Schemas of the site repo's kinds, generated from the models (one per kind).

Editors use them through the yaml-language-server modeline at the top of each file.
Purely computational.
"""

from __future__ import annotations

import json
from typing import Any

from reconciler.desired import KINDS

BASE_URI = "https://kitting.invalid/schemas"


def file_name(kind: str) -> str:
    return f"{kind.lower()}.schema.json"


def generate(kind: str) -> dict[str, Any]:
    schema = KINDS[kind].model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"{BASE_URI}/{file_name(kind)}"
    return schema


def render(kind: str) -> str:
    return json.dumps(generate(kind), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def all_rendered() -> dict[str, str]:
    return {file_name(kind): render(kind) for kind in KINDS}
