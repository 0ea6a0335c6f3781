"""The layout: imports run in one direction (no circles, not even through imports inside functions)."""

import ast
from pathlib import Path

import networkx as nx

PKG = Path(__file__).resolve().parents[1] / "marl_kstep"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    """Every import statement of the package, at any depth (module level or inside functions)."""
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    g = nx.DiGraph()
    g.add_nodes_from(files)
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # "from pkg import sub" imports the submodule; "from pkg import name" the package
                targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in files else stem for a in node.names]
            for t in targets:
                if t in files and t != mod:
                    g.add_edge(mod, t)
    return g


def test_the_graph_sees_the_package():
    g = import_graph()
    assert g.has_edge("marl_kstep.estimators.exact", "marl_kstep.estimators._walk")
    assert g.has_edge("marl_kstep.cli", "marl_kstep.experiments.benchtable")  # "from .experiments import benchtable"
    assert g.number_of_nodes() > 25


def test_no_import_circles():
    cycles = list(nx.simple_cycles(import_graph()))
    assert cycles == [], f"import circles: {cycles}"


def test_layers_point_down():
    """The model knows nothing of policies, estimators or training; estimators nothing of
    training, environments, experiments or the command line; nothing imports the package root."""
    g = import_graph()
    below = {
        "marl_kstep.model": ("marl_kstep.policy", "marl_kstep.estimators", "marl_kstep.optim", "marl_kstep.envs"),
        "marl_kstep.policy": ("marl_kstep.model", "marl_kstep.estimators", "marl_kstep.optim"),
        "marl_kstep.estimators": ("marl_kstep.optim", "marl_kstep.envs", "marl_kstep.sampling",
                                  "marl_kstep.experiments", "marl_kstep.cli", "marl_kstep.search"),
        "marl_kstep.sampling": ("marl_kstep.experiments", "marl_kstep.plotting", "marl_kstep.cli"),
    }
    for layer, forbidden in below.items():
        for a, b in g.edges:
            if a == layer or a.startswith(layer + "."):
                assert not any(b == f or b.startswith(f + ".") for f in forbidden), f"{a} imports {b}"
    assert not [a for a, b in g.edges if b == "marl_kstep"], "modules inside the package import its root"
