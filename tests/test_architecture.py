"""The layering of ARCHITECTURE.md, kept by a check: who may import whom, and how big a module grows.

Every import counts, also one inside a function or under TYPE_CHECKING: a lazy import is still a
dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "localllm"
FACES = ("localllm.ui", "localllm.cli", "localllm.server")
MAX_LINES = 400

# (who, what it must never import, why)
RULES = [
    (
        "localllm.documents",
        ("localllm.llm", "localllm.rag", "localllm.chat"),
        "parsing needs no model",
    ),
    (
        "localllm.index",
        ("localllm.llm", "localllm.rag", "localllm.chat"),
        "search needs no chat engine",
    ),
    (
        "localllm.llm",
        ("localllm.rag", "localllm.index", "localllm.chat"),
        "the engine knows no documents",
    ),
    ("localllm.rag", ("localllm.chat", "localllm.finetune"), "grounding is below the chat service"),
    ("localllm.ui", ("localllm.cli", "localllm.server"), "a face does not reach into another"),
    ("localllm.cli", ("localllm.ui",), "a face does not reach into another"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every localllm module `path` imports, anywhere in it."""
    found: set[str] = set()
    package = (
        module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    )
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {name for name in found if name == "localllm" or name.startswith("localllm.")}


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(who: str, banned: tuple[str, ...]) -> list[str]:
    return [
        f"{name} imports {target}"
        for name, path in MODULES.items()
        if within(name, who)
        for target in sorted(imports(path))
        if any(within(target, b) for b in banned)
    ]


def test_the_core_never_imports_a_face() -> None:
    core = [n for n in MODULES if not any(within(n, f) for f in FACES)]
    assert len(core) > 40, "the walk found the package"
    bad = [
        f"{name} imports {target}"
        for name in core
        for target in sorted(imports(MODULES[name]))
        if any(within(target, f) for f in FACES)
    ]
    assert not bad, "the core must not import the UI, the CLI or the server:\n" + "\n".join(bad)


@pytest.mark.parametrize(("who", "banned", "why"), RULES, ids=[r[0] for r in RULES])
def test_the_rooms_keep_their_layer(who: str, banned: tuple[str, ...], why: str) -> None:
    assert any(within(n, who) for n in MODULES), f"no modules under {who}"
    bad = violations(who, banned)
    assert not bad, f"{why}:\n" + "\n".join(bad)


def test_the_checker_sees_lazy_and_type_only_imports() -> None:
    sample = PACKAGE / "index" / "_probe_for_test.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from localllm.llm.base import Message\n"
        "def f():\n    import localllm.rag.answer\n    from ..chat import service\n",
        encoding="utf-8",
    )
    try:
        seen = imports(sample)
    finally:
        sample.unlink()
    assert {"localllm.llm.base", "localllm.rag.answer", "localllm.chat.service"} <= seen


def test_no_module_over_the_size_limit() -> None:
    big = {
        name: n
        for name, path in MODULES.items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not big, f"modules over {MAX_LINES} lines (split them by what they do): {big}"
