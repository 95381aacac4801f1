"""The package's layers and the one direction of their dependencies.

Every import in the package (top-level and inside functions) is read with
``ast`` and checked against the layer table below: a module may import its
own subpackage and any layer below it, never one above or beside it. The
same table is drawn in napari_hyperfusion/__init__.py and docs/architecture.md.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "napari_hyperfusion"

# unit of the graph -> layer; a unit is a subpackage or a top-level module
LAYERS = {
    "__init__": 0, "errors": 0, "resources": 0,
    "nn": 1,
    "data": 2,
    "io": 3,
    "infer": 4,
    "analysis": 5, "train": 5,
    "synth": 6,
    "_qt": 7, "cli": 7, "samples": 7,
    "launch": 8,
}  # fmt: skip
# the synthetic generator serves the CLI (make-cohort), the scripts and the tests only;
# the panel reads the generator's ground truth (synth.truth) for synthetic subjects, and which of its
# volumes a model's views hold (synth.coverage: the truth that model can reach), nothing else
SYNTH_USERS = {"cli"}
SYNTH_MODULES_FOR = {"_qt": ("napari_hyperfusion.synth.truth", "napari_hyperfusion.synth.coverage")}
# only the panel (and the launcher that opens napari's window) may touch Qt
QT_USERS = {"_qt", "launch"}
QT_MODULES = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari.qt", "napari._qt", "superqt")


def _modules() -> dict[str, Path]:
    """Dotted module name (without the package) -> file."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """(imported absolute dotted name, line) for every import in a module."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    if name == "__init__":
        here = []
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                target = ".".join(["napari_hyperfusion", *base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if node.module is None or target == "napari_hyperfusion":  # from . import x
                found += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((target, node.lineno))
    return found


def _unit(dotted: str) -> str | None:
    """The layer unit of an absolute name inside the package (None outside)."""
    parts = dotted.split(".")
    if parts[0] != "napari_hyperfusion":
        return None
    if len(parts) == 1 or parts[1] == "__version__":
        return "__init__"
    return parts[1]


def _edges() -> list[tuple[str, str, str, int]]:
    """(importing unit, imported unit, importing module, line)."""
    edges = []
    for name, path in _modules().items():
        src = name.split(".")[0]
        for target, line in _imports(name, path):
            dst = _unit(target)
            if dst is not None and dst != src:
                edges.append((src, dst, name, line))
    return edges


def test_every_unit_has_a_layer():
    units = {name.split(".")[0] for name in _modules()}
    assert units <= set(LAYERS), f"add {units - set(LAYERS)} to LAYERS (and to docs/architecture.md)"


def test_imports_go_down_the_layers_only():
    wrong = [
        f"{module} (line {line}) imports {dst}: layer {LAYERS[src]} may only use layers below it"
        for src, dst, module, line in _edges()
        if LAYERS[dst] >= LAYERS[src]
    ]
    assert not wrong, "\n".join(wrong)


def test_the_synthetic_generator_serves_only_the_cli():
    wrong = set()
    for name, path in _modules().items():
        src = name.split(".")[0]
        if src in SYNTH_USERS or src == "synth":
            continue
        for target, line in _imports(name, path):
            if _unit(target) == "synth" and not target.startswith(SYNTH_MODULES_FOR.get(src, ("-",))):
                wrong.add(f"{name} (line {line}) imports {target}")
    assert not wrong, f"{sorted(wrong)}: real-data code must not depend on the synthetic generator"


def test_only_the_ui_imports_qt():
    wrong = []
    for name, path in _modules().items():
        if name.split(".")[0] in QT_USERS:
            continue
        for target, line in _imports(name, path):
            if target.startswith(QT_MODULES) or "backend_qt" in target:
                wrong.append(f"{name} (line {line}) imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_between_modules():
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target, _ in _imports(name, path):
            dotted = target.removeprefix("napari_hyperfusion.")
            while dotted and dotted not in modules:  # "data.schema.SchemaError" -> "data.schema"
                dotted = dotted.rpartition(".")[0]
            if dotted and dotted != name and target.startswith("napari_hyperfusion"):
                graph[name].add(dotted)
    # a package's __init__ is not a dependency of its modules here (they are light)
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


@pytest.mark.parametrize("unit", ["nn", "data", "io", "infer", "analysis", "train", "synth", "cli", "samples"])
def test_the_core_imports_without_qt(unit):
    """Importing any non-UI layer (every module in it) loads no Qt binding."""
    names = [f"napari_hyperfusion.{n}" for n in _modules() if n.split(".")[0] == unit]
    code = (
        "import importlib, sys\n"
        f"for n in {names!r}: importlib.import_module(n)\n"
        "qt = sorted(m for m in sys.modules if m.split('.')[0] in ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6'))\n"
        "print(qt)\n"
        "sys.exit(1 if qt else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"importing {unit} loaded Qt: {proc.stdout}{proc.stderr}"


def test_the_layer_checker_catches_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: a data module importing the panel is reported."""
    fake = tmp_path / "napari_hyperfusion"
    for path in _modules().values():
        dest = fake / path.relative_to(PACKAGE)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(path.read_text())
    (fake / "data" / "bad.py").write_text("from .._qt.panel import HyperFusionPanel\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    with pytest.raises(AssertionError, match=r"data.bad \(line 1\) imports _qt"):
        test_imports_go_down_the_layers_only()
