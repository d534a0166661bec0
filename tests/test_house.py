"""The house: layers import only downwards, no import cycles, small modules, one formatter.

Every import counts, module-level or inside a function: a lazy import still ties the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "tfl_rebuild"
# tflite < runtime, rebuild < verify < coreml < commands < cli / the public API (tfl_rebuild/__init__).
# runtime and rebuild are peers: neither imports the other.
LAYERS = {
    "errors": 0, "fileio": 0, "text": 0, "native_logs": 0,
    "tflite": 1, "runtime": 2, "rebuild": 2, "verify": 3, "coreml": 4, "commands": 5,
    "cli": 6, "__init__": 6,
}  # fmt: skip


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


MODULES = _modules()


def _group(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path) -> set[str]:
    """The tfl_rebuild modules `module` imports (a package's name stands for its __init__)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path, node)
            if base == "tfl_rebuild" and all(a.name == "__version__" for a in node.names):
                continue  # the version string, defined before the API's imports
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != module)
    return found


def _edges() -> list[tuple[str, str]]:
    return [(m, t) for m, p in MODULES.items() for t in _imports(m, p)]


def test_every_module_has_a_layer():
    assert not [m for m in MODULES if _group(m) not in LAYERS]


def test_imports_only_go_down():
    upward = [
        f"{m} -> {t}"
        for m, t in _edges()
        if _group(m) != _group(t)
        and (LAYERS[_group(t)] > LAYERS[_group(m)] or LAYERS[_group(t)] == LAYERS[_group(m)] > 0)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    graph = nx.DiGraph(_edges())
    cycles = [" -> ".join(c) for c in nx.simple_cycles(graph)]
    assert not cycles, "\n".join(cycles[:10])


def test_few_top_level_modules():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 6, top


def test_few_large_modules():
    large = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 500}
    assert len(large) <= 2, large


# Printing lives at the edges: commands/ and cli.py render; the layers below return data.
PRINTERS = ("rich", "matplotlib")


def _third_party(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_printing_only_at_the_edges():
    misplaced = [
        f"{m} imports {lib}"
        for m, p in MODULES.items()
        if _group(m) not in ("commands", "cli")
        for lib in sorted(_third_party(p) & set(PRINTERS))
    ]
    assert not misplaced, "\n".join(misplaced)
