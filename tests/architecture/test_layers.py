"""Pure core, thin shell: the pure stages never reach, even indirectly, a module that runs
programs, talks to Git or the network, or reads the clock.

Imports are followed through the reconciler package by reading the source (no import is
executed), so a new import anywhere in the chain that breaks the rule fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "reconciler"

PURE = [
    "reconciler.fields",
    "reconciler.desired",
    "reconciler.problems",
    "reconciler.validate",
    "reconciler.checks",
    "reconciler.rendered",
    "reconciler.render",
    "reconciler.render.dnsmasq",
    "reconciler.render.pxe",
    "reconciler.render.nfs",
    "reconciler.render.nftables",
    "reconciler.render.sshd",
    "reconciler.plan",
    "reconciler.plan_format",
    "reconciler.review",
    "reconciler.deployments",
    "reconciler.images",
    "reconciler.commits",
    "reconciler.nftables",
]

# Modules (and prefixes) a pure stage must never reach.
FORBIDDEN = (
    "subprocess",
    "socket",
    "git",
    "watchfiles",
    "reconciler.runner",
    "reconciler.source",
    "reconciler.controller",
    "reconciler.clock",
    "reconciler.live_firewall",
    "reconciler.services",
    "reconciler.preflight",
    "reconciler.apply",
    "reconciler.sessions",
)


def _source(module: str) -> Path | None:
    relative = module.split(".")[1:]
    for candidate in (
        PACKAGE.joinpath(*relative).with_suffix(".py"),
        PACKAGE.joinpath(*relative, "__init__.py"),
    ):
        if candidate.is_file():
            return candidate
    return None


def _imports(module: str) -> set[str]:
    path = _source(module)
    if path is None:
        return set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            # `from reconciler import render` imports a module, not a name
            found.update(
                f"{base}.{alias.name}" for alias in node.names if _source(f"{base}.{alias.name}")
            )
    return found


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under `if TYPE_CHECKING:` (annotations only, never run)."""
    nodes: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING"
        ):
            todo.extend(node.orelse)
            continue
        nodes.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return nodes


def _reach(start: str) -> dict[str, str]:
    """Every module reachable from `start`, with the module that imported it."""
    seen: dict[str, str] = {start: ""}
    todo = [start]
    while todo:
        current = todo.pop()
        for name in sorted(_imports(current)):
            if name not in seen:
                seen[name] = current
                if name.startswith("reconciler"):
                    todo.append(name)
    return seen


def _chain(seen: dict[str, str], name: str) -> str:
    links = [name]
    while seen.get(links[-1]):
        links.append(seen[links[-1]])
    return " <- ".join(links)


@pytest.mark.parametrize("module", PURE)
def test_pure_stage_reaches_no_seam(module: str) -> None:
    assert _source(module) is not None, f"{module} does not exist; update PURE"
    seen = _reach(module)
    bad = [
        _chain(seen, name)
        for name in seen
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    ]
    assert not bad, "\n".join(bad)


def test_the_rule_catches_a_violation() -> None:
    """The checker itself: the controller does reach subprocess-running seams."""
    seen = _reach("reconciler.controller")
    assert "reconciler.source" in seen
    assert "git" in seen
