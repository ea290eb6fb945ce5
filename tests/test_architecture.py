"""Dependency rules: the layering metrics → config, records → engine → doctor, report, trackers → experiment, api →
tasks → cli over the whole import graph (lazy and type-only imports included), no import cycles, size limits."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "trainwell"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


def _imports(module: str) -> set[str]:
    """Every ``trainwell`` module ``module`` imports, wherever the import stands: module level, inside a function
    (lazy), under ``TYPE_CHECKING``. ``from package import name`` counts as importing ``package.name`` when that is a
    module; importing ``a.b.c`` also runs ``a.b``'s ``__init__`` (unless ``module`` is inside ``a.b`` already)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "trainwell")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                head = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*head, *([node.module] if node.module else [])])
            if base.split(".")[0] != "trainwell":
                continue
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    for target in list(found):
        parts = target.split(".")
        for i in range(2, len(parts)):
            ancestor = ".".join(parts[:i])
            if ancestor in MODULES and not f"{module}.".startswith(f"{ancestor}."):
                found.add(ancestor)
    found.discard(module)
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "trainwell"


LAYERS: dict[str, set[str]] = {
    # metrics, records and config stand alone: everything may depend on them
    "metrics": set(),
    "records": set(),
    "config": set(),
    # the engine is handed typed config objects and writes the records; it never loads a config file, never
    # imports the doctor (it calls an observer protocol), a task, the report or a tracker adapter
    "engine": {"config", "records"},
    "doctor": {"config", "records", "engine"},
    "report": {"config", "records", "engine", "doctor"},
    "trackers": {"config", "records", "engine"},
    # the one place a config's task class is imported, and the Python API that wires the doctor into a run
    "experiment": {"config", "records", "engine"},
    "api": {"config", "records", "engine", "doctor"},
    "tasks": {"metrics", "config", "records", "engine", "doctor", "experiment"},
    # the command line sits on top of everything
    "cli": {
        "metrics",
        "config",
        "records",
        "engine",
        "doctor",
        "report",
        "trackers",
        "experiment",
        "api",
        "tasks",
        "cli_args",
    },
    "cli_args": set(),
    "__main__": {"cli"},
    "trainwell": set(),  # the package's __init__: its exports are imported lazily, by name
}


def test_every_module_is_in_a_layer() -> None:
    assert {_layer(m) for m in MODULES} <= set(LAYERS), sorted({_layer(m) for m in MODULES} - set(LAYERS))


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_import_direction(layer: str) -> None:
    allowed = LAYERS[layer] | {layer}
    bad = {
        module: sorted(t for t in _imports(module) if _layer(t) not in allowed)
        for module in sorted(MODULES)
        if _layer(module) == layer
    }
    bad = {module: targets for module, targets in bad.items() if targets}
    assert not bad, f"{layer} may import only {sorted(allowed)}; found {bad}"


def test_no_import_cycles() -> None:
    """No module reaches itself through imports (strongly connected components of the whole graph, Tarjan)."""
    graph = {m: _imports(m) & MODULES.keys() for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    assert not cycles, cycles


def test_cycle_check_sees_lazy_and_type_only_imports(tmp_path: Path) -> None:
    """The graph counts imports inside functions and under TYPE_CHECKING (a cycle hidden there is still one)."""
    lazy = _imports("trainwell.cli")  # imports most of its commands inside the command functions
    assert "trainwell.report" in lazy or any(m.startswith("trainwell.report.") for m in lazy)
    typed = {m for m in MODULES if "TYPE_CHECKING" in MODULES[m].read_text()}
    assert typed, "no module uses TYPE_CHECKING: this check lost its subject"
    for module in typed:
        tree = ast.parse(MODULES[module].read_text())
        guarded = [n for n in ast.walk(tree) if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)]
        for block in guarded:
            for node in ast.walk(block):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("trainwell"):
                    assert any(t == node.module or t.startswith(node.module + ".") for t in _imports(module))


def test_the_engine_imports_no_tracker_package() -> None:
    """Tracker adapters are handed to the engine; the engine never imports mlflow, wandb or trackio itself."""
    for module, path in MODULES.items():
        if _layer(module) != "engine":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            assert not [n for n in names if n.split(".")[0] in ("mlflow", "wandb", "trackio")], (module, names)


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


MAX_FUNCTION_LINES = 60
"""Issue #23: the longest function or method anywhere in src/trainwell, ``def`` to its last line inclusive."""


def _function_lengths(source: str) -> dict[str, tuple[int, int]]:
    """``{qualified name: (line of its def, lines from the def to its last line inclusive)}`` for every function,
    method and nested function in ``source`` (decorators are not counted: ``lineno`` is the ``def`` line)."""
    found: dict[str, tuple[int, int]] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    assert child.end_lineno is not None
                    found[name] = (child.lineno, child.end_lineno - child.lineno + 1)
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def test_function_lengths_count_def_to_last_line_for_methods_and_nested_functions() -> None:
    """The counter the limit below relies on: a two-line function is 2, a decorator adds nothing, methods, async
    and nested functions (even inside an ``if``) are all seen."""
    source = (
        "import functools\n"
        "@functools.cache\n"
        "def f():\n"
        "    return 1\n"
        "class C:\n"
        "    async def m(self):\n"
        "        if True:\n"
        "            def inner():\n"
        "                pass\n"
        "\n"
        "        return 2\n"
    )
    assert _function_lengths(source) == {"f": (3, 2), "C.m": (6, 6), "C.m.inner": (8, 2)}


def test_no_function_is_longer_than_the_limit() -> None:
    """A function over the limit does several things: split it into named steps, one docstring each."""
    offenders = {
        f"{path.relative_to(SRC)}:{line} {name}": length
        for path in sorted(SRC.rglob("*.py"))
        for name, (line, length) in _function_lengths(path.read_text()).items()
        if length > MAX_FUNCTION_LINES
    }
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines (def to last line): {offenders}"
