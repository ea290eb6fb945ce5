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
        # the engine is handed typed config objects: it never loads a config, never imports a task or the CLI
        ("engine", ("trainwell.tasks", "trainwell.cli", "trainwell.config.loader", "trainwell.report")),
        ("config", ("trainwell.tasks", "trainwell.cli")),
        ("report", ("trainwell.tasks", "trainwell.cli")),
        # the live doctor is imported by the engine, so it may not pull config loading in either
        ("doctor", ("trainwell.tasks", "trainwell.cli", "trainwell.report")),
        ("tasks", ("trainwell.cli", "trainwell.report")),
        # tracker adapters: handed to the engine by the CLI; the engine never imports them (nor their packages)
        ("trackers", ("trainwell.tasks", "trainwell.cli", "trainwell.report", "trainwell.doctor")),
        ("engine", ("trainwell.trackers", "mlflow", "wandb", "trackio")),
    ],
)
def test_import_direction(package: str, forbidden: tuple[str, ...]) -> None:
    files = sorted((SRC / package).rglob("*.py"))
    assert files, f"no files under {package}"
    for path in files:
        bad = [m for m in _imports(path) if any(m == f or m.startswith(f + ".") for f in forbidden)]
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_the_engine_loads_no_config_loading_even_indirectly() -> None:
    import subprocess
    import sys

    code = "import sys, trainwell.engine.loop; print(sorted(m for m in sys.modules if m.startswith('trainwell')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "trainwell.config.loader" not in loaded and "trainwell.tasks" not in loaded and "trainwell.cli" not in loaded


def test_no_test_hooks_in_production_code() -> None:
    offenders = [p.relative_to(SRC) for p in SRC.rglob("*.py") if "TRAINWELL_TEST" in p.read_text()]
    assert not offenders, offenders


def test_size_limits_of_the_redesign() -> None:
    """No source file over ~400 lines; the Trainer's loop module within 300 and no method over ~50 lines."""
    too_long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 460}
    assert not too_long, too_long
    loop = SRC / "engine" / "loop.py"
    tree = ast.parse(loop.read_text())
    trainer = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer")
    assert trainer.end_lineno - trainer.lineno <= 300
    long_methods = {
        f.name: f.end_lineno - f.lineno
        for f in trainer.body
        if isinstance(f, ast.FunctionDef) and f.end_lineno - f.lineno > 55
    }
    assert not long_methods, long_methods


def test_importing_metrics_loads_no_engine() -> None:
    import subprocess
    import sys

    code = "import sys, trainwell.metrics; print(sorted(m for m in sys.modules if m.startswith('trainwell')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "trainwell.engine" not in loaded and "trainwell.config" not in loaded and "trainwell.metrics" in loaded


def test_test_module_basenames_are_unique() -> None:
    """pytest imports test modules by basename (no packages): two test_model.py files break collection."""
    names = [p.name for p in (SRC.parents[1] / "tests").rglob("*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
