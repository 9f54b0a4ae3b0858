"""Each third-party library stays in the one place that owns it (docs/architecture.md).

import-linter checks the project's own layers; this checks the outside world's doors: a module
that starts importing sqlite3 or paho beside the storage or MQTT layer fails here, by name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "edge_ml"

# library -> the modules (paths relative to edge_ml/, prefixes for packages) allowed to import it
OWNERS = {
    "sqlite3": ("storage/",),
    "sqlite_utils": ("storage/",),
    "paho": ("mqtt.py",),
    "numba": ("kernels/", "replay/kernels.py"),
    "river": ("model/",),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("library", sorted(OWNERS))
def test_library_is_imported_only_by_its_owner(library: str) -> None:
    owners = OWNERS[library]
    offenders = [
        str(rel) for path in sorted(PACKAGE.rglob("*.py"))
        if library in _imports(path)
        and not (rel := path.relative_to(PACKAGE)).as_posix().startswith(owners)
    ]
    assert offenders == [], f"{library} imported outside {owners}: {offenders}"


def test_owners_really_import_their_library() -> None:
    """The check above is not vacuous: each owner module does import its library."""
    for library, owners in OWNERS.items():
        users = [path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
                 if library in _imports(path)]
        assert any(u.startswith(owners) for u in users), library
