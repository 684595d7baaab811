"""The package's layering (design.md, "The parts"): imports point down the data flow only.

physics never imports models (models may use the physics: BM3D's CT noise model), models never
import training, nothing below ``cli/`` imports typer. Function-level imports count: a lazy
import still ties the layers together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import lowdose

PACKAGE = Path(lowdose.__file__).parent

# A package may import the shared modules (rank 0) and packages of a lower rank, never one of
# its own rank or above: io and metrics, then the physics, then the models (a denoiser may use
# the physics' noise model; the physics never uses a model), then training and reporting, then
# the study, then the commands.
RANKS = {
    "io": 1, "metrics": 1,
    "physics": 2,
    "models": 3,
    "training": 4, "reporting": 4,
    "evaluation": 5,
    "cli": 6,
}
SHARED = {"errors", "image", "registry", "device", "settings"}


def _imports(path: Path) -> set[str]:
    """Top-level names of everything ``path`` imports, ``lowdose.x`` as ``lowdose.x``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            found.add(".".join(parts[:2]) if parts[0] == "lowdose" else parts[0])
    return found


def _modules() -> list[tuple[str, Path]]:
    return sorted((path.relative_to(PACKAGE).parts[0], path)
                  for path in PACKAGE.rglob("*.py") if path.parent != PACKAGE)


def test_every_package_has_a_rank():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(RANKS)
    assert {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"} == SHARED


@pytest.mark.parametrize(("package", "path"), _modules(),
                         ids=lambda v: str(v.relative_to(PACKAGE)) if isinstance(v, Path) else v)
def test_imports_point_down_the_flow(package, path):
    imported = _imports(path)
    if package != "cli":
        assert "typer" not in imported, "only cli/ may import typer"
    for name in imported:
        if not name.startswith("lowdose.") or name.split(".")[1] in SHARED:
            continue
        other = name.split(".")[1]
        if other == package:
            continue
        assert RANKS[other] < RANKS[package], f"{package}/ must not import {name}"
