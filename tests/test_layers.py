"""Imports run one way: a package imports only the packages below it (README, style guide)."""

from __future__ import annotations

import ast
from pathlib import Path

import sparsecircuits

PACKAGE_ROOT = Path(sparsecircuits.__file__).parent

# Each package's level: it may import leaf modules and packages of a lower level only.
LEVELS = {
    "data": 1,
    "model": 1,
    "loading": 2,
    "tasks": 3,
    "imports": 3,
    "train": 4,
    "circuits": 5,
    "interp": 5,
    "sae": 3,
    "explain": 6,
    "report": 7,
    "viewer": 8,
}
# Leaf modules import no package, and only the leaf modules before them here (so no cycles).
LEAF_ORDER = ("errors", "validation", "files", "database", "render", "cli_types")
LEAF_MODULES = set(LEAF_ORDER)


def imported_sparsecircuits_parts(path: Path) -> set[str]:
    """First name under `sparsecircuits` of every import in the file, at any depth (imports
    inside functions count too: a lazy import is still a dependency)."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            pieces = name.split(".")
            if pieces[0] == "sparsecircuits" and len(pieces) > 1:
                parts.add(pieces[1])
    return parts


def test_every_package_has_a_level():
    packages = {path.parent.name for path in PACKAGE_ROOT.glob("*/__init__.py")}
    assert packages <= set(LEVELS), f"give {packages - set(LEVELS)} a level in this test"


def test_packages_import_only_packages_below_them():
    wrong = []
    for package, level in LEVELS.items():
        for path in sorted((PACKAGE_ROOT / package).rglob("*.py")):
            for part in imported_sparsecircuits_parts(path) - {package} - LEAF_MODULES:
                if LEVELS.get(part, 99) >= level:
                    wrong.append(f"{path.relative_to(PACKAGE_ROOT)} imports {part}")
    assert not wrong, "imports against the data flow:\n" + "\n".join(wrong)


def test_leaf_modules_import_no_package():
    for position, name in enumerate(LEAF_ORDER):
        parts = imported_sparsecircuits_parts(PACKAGE_ROOT / f"{name}.py")
        allowed = set(LEAF_ORDER[:position])
        assert parts <= allowed, f"{name}.py imports {parts - allowed}"


def test_every_module_at_the_top_is_a_leaf_or_the_command_line():
    modules = {path.stem for path in PACKAGE_ROOT.glob("*.py")}
    assert modules - {"__init__", "__main__", "cli"} == LEAF_MODULES
