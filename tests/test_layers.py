"""The layering written in ``segdemo/__init__.py``, checked against the real imports of every module
(at the top of a file, inside functions, and under ``TYPE_CHECKING`` alike)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import segdemo

PACKAGE = Path(segdemo.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str, package: str) -> set[str]:
    """Every module that ``source`` (a module of ``package``) imports, relative imports resolved
    (``from . import x`` names ``package.x`` too, for when ``x`` is a module)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module
            found.add(origin)
            found.update(f"{origin}.{alias.name}" for alias in node.names)  # `from . import x` imports x
    return found


def unit(module: str) -> str:
    """The top-level room of a segdemo module: ``segdemo.engine.loop`` → ``engine``."""
    return module.split(".")[1]


def package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


MODULES = {module_name(path): imports(path.read_text(encoding="utf-8"), package_of(path))
           for path in sorted(PACKAGE.rglob("*.py"))}
UNITS = {unit(name) for name in MODULES if name != "segdemo"}
LAYER_OF = {name: depth for depth, layer in enumerate(segdemo.LAYERS) for name in layer}


def segdemo_imports(imported: set[str]) -> set[str]:
    """The segdemo modules among ``imported`` (names of attributes such as ``segdemo.__version__``
    and of classes imported from a module drop out: they are not modules)."""
    return {name for name in imported if name in MODULES}


def test_every_room_has_a_layer_and_every_layer_a_room():
    assert UNITS == set(LAYER_OF), (f"not in segdemo.LAYERS: {sorted(UNITS - set(LAYER_OF))}; "
                                    f"in LAYERS but missing: {sorted(set(LAYER_OF) - UNITS)}")


@pytest.mark.parametrize("module", sorted(name for name in MODULES if name != "segdemo"))
def test_imports_point_down(module):
    upward = sorted(
        target for target in segdemo_imports(MODULES[module])
        if target != "segdemo" and unit(target) != unit(module) and LAYER_OF[unit(target)] <= LAYER_OF[unit(module)])
    assert not upward, f"{module} imports {upward}, which are not in a layer below {unit(module)!r}"


def test_only_the_ui_imports_gradio():
    importers = sorted(module for module, imported in MODULES.items()
                       if any(name.split(".")[0] in ("gradio", "gradio_client") for name in imported))
    assert importers and all(module.startswith("segdemo.ui") for module in importers), importers


def test_no_import_circle_inside_a_package():
    """Across rooms the layers rule circles out; inside one (engine, data, models, ui) look for them."""
    # A submodule always imports its parent packages first: those edges are no circle.
    graph = {module: {t for t in segdemo_imports(imported) if not module.startswith(f"{t}.") and t != module}
             for module, imported in MODULES.items()}
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                raise AssertionError(" → ".join([*trail[trail.index(target):], target]))
            if target not in state:
                visit(target, [*trail, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_imports_inside_functions_and_relative_ones_are_seen():
    source = "from .. import viz\nfrom .setup import build\ndef f():\n    from ..ui import app\n"
    assert {"segdemo.viz", "segdemo.engine.setup", "segdemo.ui", "segdemo.ui.app"} <= imports(source, "segdemo.engine")
