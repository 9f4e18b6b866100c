"""`kitctl schema`: print or write the JSON Schemas generated from the models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reconciler import schemas
from reconciler.desired import KINDS


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser("schema", help="print or write the JSON Schema of each kind")
    cmd.add_argument(
        "--write", metavar="DIR", help="write one <kind>.schema.json per kind into DIR"
    )
    cmd.add_argument("--kind", choices=sorted(KINDS), help="print only this kind")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    rendered = schemas.all_rendered()
    if args.write:
        target = Path(args.write)
        target.mkdir(parents=True, exist_ok=True)
        for name, text in sorted(rendered.items()):
            (target / name).write_text(text, encoding="utf-8")
            print(f"wrote {target / name}")
        return 0
    if args.kind:
        sys.stdout.write(rendered[schemas.file_name(args.kind)])
        return 0
    for name in sorted(rendered):
        sys.stdout.write(rendered[name])
    return 0
