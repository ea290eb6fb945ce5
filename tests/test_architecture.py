"""Dependency rules: metrics import nothing of ours outside metrics/; the engine never imports a task."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "trainwell"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names.add("<relative>")
    return names


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        # metrics may use its own modules, nothing else of ours
        ("metrics", ("trainwell.engine", "trainwell.tasks", "trainwell.config", "trainwell.cli", "<relative>")),
        ("engine", ("trainwell.tasks", "trainwell.cli")),
        ("config", ("trainwell.tasks", "trainwell.cli")),
        ("report", ("trainwell.tasks", "trainwell.cli")),
    ],
)
def test_import_direction(package: str, forbidden: tuple[str, ...]) -> None:
    files = sorted((SRC / package).rglob("*.py"))
    assert files, f"no files under {package}"
    for path in files:
        bad = [m for m in _imports(path) if any(m == f or m.startswith(f + ".") for f in forbidden)]
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_importing_metrics_loads_no_engine() -> None:
    import subprocess
    import sys

    code = "import sys, trainwell.metrics; print(sorted(m for m in sys.modules if m.startswith('trainwell')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "trainwell.engine" not in loaded and "trainwell.config" not in loaded and "trainwell.metrics" in loaded
