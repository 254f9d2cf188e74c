"""The package's import structure (docs/architecture.md): every import, at module level or inside
a function, goes to a lower layer or stays inside its own part; no module imports itself back
through a circle; the package never edits ``sys.path``."""

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "megatron_prealign"

# Lowest first. A part (a sub-package or a top-level module) may import its own modules and the
# parts of lower layers, never those of its own layer or above.
LAYERS = [
    {"errors", "stats", "norms", "model_sizes", "compat"},
    {"runtime"},
    {"data"},
    {"instruct", "model", "xllama"},
    {"alignment"},
    {"training"},
    {"generation", "launch_plan"},
    {"evaluation", "hf", "gpu_check", "hf_round_trip"},
    {"cli"},
    {"demo", "pretrain"},
    {"testing"},  # fixtures of the tests and benchmarks: may import anything, imported by nothing
]
LAYER = {part: level for level, parts in enumerate(LAYERS) for part in parts}


def _modules():
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def _imports(name, path, modules):
    """The package modules ``name`` imports (``from pkg import sub`` counts as importing ``sub``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def _graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _part(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_part_has_a_layer():
    parts = {_part(m) for m in _modules()} - {None}
    assert parts <= set(LAYER), f"parts without a layer in this test: {sorted(parts - set(LAYER))}"


def test_no_upward_or_sideways_import():
    wrong = []
    for module, targets in _graph().items():
        source = _part(module)
        for target in targets:
            goal = _part(target)
            if source is None or goal is None or goal == source:
                continue
            if LAYER[goal] >= LAYER[source]:
                wrong.append(f"{module} -> {target} ({source} is layer {LAYER[source]}, {goal} {LAYER[goal]})")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_no_library_module_imports_the_testing_fixtures():
    graph = _graph()
    wrong = [f"{module} -> {target}" for module, targets in graph.items() if _part(module) != "testing"
             for target in targets if _part(target) == "testing"]
    assert not wrong, "library modules importing megatron_prealign.testing:\n" + "\n".join(sorted(wrong))


def _top_level_imports(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_package_and_the_benchmarks_do_not_import_the_test_suite():
    """Fixtures the benchmarks share with the tests live in megatron_prealign.testing; the
    package imports none of tests/, bench/, tools/."""
    wrong = [f"{path.relative_to(PACKAGE.parent)} imports {sorted(found)}"
             for path in [*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "bench").glob("*.py")]
             if (found := _top_level_imports(path) & ({"tests"} if path.parent.name == "bench"
                                                       else {"tests", "bench", "tools"}))]
    assert not wrong, "\n".join(wrong)


def test_no_import_circle():
    graph = _graph()
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"


def test_the_checks_see_a_circle_and_an_upward_import(tmp_path, monkeypatch):
    """The walk itself: a planted upward import and circle are found."""
    fake = tmp_path / "megatron_prealign"
    for rel, text in {"__init__.py": "", "runtime.py": "from megatron_prealign.data import a\n",
                      "data/__init__.py": "", "data/a.py": "from megatron_prealign.data import b\n",
                      "data/b.py": "def f():\n    from . import a\n",
                      "data/c.py": "from megatron_prealign.testing import fixtures\n",
                      "testing/__init__.py": "", "testing/fixtures.py": ""}.items():
        (fake / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake / rel).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    graph = _graph()
    assert graph["megatron_prealign.runtime"] == {"megatron_prealign.data.a"}
    assert graph["megatron_prealign.data.b"] == {"megatron_prealign.data.a"}
    assert graph["megatron_prealign.data.c"] == {"megatron_prealign.testing.fixtures"}
    for check in (test_no_upward_or_sideways_import, test_no_import_circle,
                  test_no_library_module_imports_the_testing_fixtures):
        try:
            check()
        except AssertionError:
            continue
        raise AssertionError(f"{check.__name__} missed the planted defect")


def test_no_sys_path_edits_in_the_package():
    edits = [f"{path.relative_to(PACKAGE.parent)}:{number}"
             for path in PACKAGE.rglob("*.py")
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if "sys.path" in line and not line.lstrip().startswith("#")]
    assert not edits, f"sys.path used in the package: {edits}"
