"""The layering of DESIGN.md, checked on the source: kernel below actors, actors apart."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSEMBLY = {"app.py", "cli.py"}  # the only kernel modules that know the concrete actors


def imported_modules(path: Path) -> set[str]:
    """Absolute names of everything a module imports (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.add(node.module)
    return names


def test_kernel_never_imports_actors() -> None:
    """No runtime/ module but the assembly imports from actors/."""
    offenders = {
        path.name: sorted(m for m in imported_modules(path) if m.split(".")[0] == "actors")
        for path in (ROOT / "runtime").glob("*.py")
        if path.name not in ASSEMBLY
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_actors_never_import_each_other() -> None:
    """An actor package imports the kernel and itself, never another actor."""
    offenders: dict[str, list[str]] = {}
    for path in (ROOT / "actors").rglob("*.py"):
        parts = path.relative_to(ROOT / "actors").parts
        if len(parts) < 2:
            continue
        own = parts[0]
        others = sorted(
            m
            for m in imported_modules(path)
            if m.startswith("actors.") and m.split(".")[1] != own
        )
        if others:
            offenders[str(path.relative_to(ROOT))] = others
    assert offenders == {}
