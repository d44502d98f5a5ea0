"""The shape of the package: no import cycles, private library APIs only in compat.py (the layers
and the torch-free config checks: import-linter's contracts in pyproject.toml, `make lint`)."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

import mnist_lit

PACKAGE_DIR = Path(mnist_lit.__file__).parent


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("mnist_lit")
    cycles = [
        (importer, imported)
        for importer in graph.modules
        for imported in graph.find_modules_directly_imported_by(importer)
        # a module importing its own package's __init__ is how Python runs it, not a cycle
        if not importer.startswith(f"{imported}.")
        and graph.chain_exists(importer=imported, imported=importer)
    ]
    assert cycles == []


def _private_imports(path: Path) -> list[str]:
    """``from a._b import c``, ``from a import _b`` and ``import a._b`` in a source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.module.startswith("."):
            names = [node.module, *(alias.name for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        if any(
            part.startswith("_") and part != "__future__" for n in names for part in n.split(".")
        ):
            found.append(f"{path.name}:{node.lineno}")
    return found


def test_private_library_apis_only_in_compat() -> None:
    offenders = [
        hit
        for path in PACKAGE_DIR.rglob("*.py")
        if path.name != "compat.py"
        for hit in _private_imports(path)
    ]
    assert offenders == []
