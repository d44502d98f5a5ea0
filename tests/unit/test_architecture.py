"""The shape of the package: no import cycles, private library APIs only in compat.py (the layers
and the torch-free config checks: import-linter's contracts in pyproject.toml, `make lint`)."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import yaml

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


def test_pre_commit_runs_what_make_lint_runs_offline() -> None:
    """.pre-commit-config.yaml: local hooks only (nothing fetched), the same tools as the lint
    target of the Makefile."""
    root = PACKAGE_DIR.parents[1]
    config = yaml.safe_load((root / ".pre-commit-config.yaml").read_text())
    assert [repo["repo"] for repo in config["repos"]] == ["local"]
    hooks = [hook["entry"].split()[0:3] for hook in config["repos"][0]["hooks"]]
    makefile = (root / "Makefile").read_text()
    recipe = makefile.split("\nlint:")[1].split("\n\n")[0]
    linted = [line.split()[0:3] for line in recipe.splitlines()[1:]]
    tools = {tuple(part.replace("$(VENV)", ".venv") for part in line[:2]) for line in linted}
    assert tools == {tuple(hook[:2]) for hook in hooks}
