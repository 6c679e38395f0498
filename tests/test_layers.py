"""The layers of the package (docs/architecture.md): a package imports only those below it.

The NGSI-LD vocabulary is at the bottom, then the shared HTTP helpers and storage, then access
control, the hub and the capabilities built on it; a lower layer never imports a higher one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cidade

ROOT = Path(cidade.__file__).parent

# What each package may import of Cidade's besides itself ("config" is read by every layer).
ALLOWED = {
    "ngsild": set(),
    "http": {"ngsild"},
    "store": {"ngsild"},
    "auth": {"ngsild", "http", "store", "config"},
    "hub": {"ngsild", "http", "store", "auth", "config"},
    "devices": {"ngsild", "http", "store", "auth", "hub", "config"},
    "occurrences": {"ngsild", "http", "store", "auth", "hub", "config"},
}


def imported_packages(path: Path) -> set[str]:
    """The top-level Cidade packages a module imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "cidade" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_layers_below_it(package: str) -> None:
    wrong = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        above = imported_packages(path) - ALLOWED[package] - {package}
        if above:
            wrong[str(path.relative_to(ROOT))] = sorted(above)
    assert not wrong, f"imports from a higher layer: {wrong}"


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    from cidade.hub.model import View\n    import cidade.auth.gate\n"
    )
    assert imported_packages(module) == {"hub", "auth"}
