"""The import floors, read from the source with ast (every import, at module level or inside a function):
metrics.py on the ground floor imports nothing of the project, plan.py (the plan record) beside it only
metrics; models/ and analysis/ build on them and never import each other (models needs no plan); sweep/
knows both; benchmarks/ sits on top; and no module imports itself back in a circle."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("metrics", "plan", "models", "analysis", "sweep", "benchmarks")
MODULES = ("metrics", "plan")  # the ground floor's modules: files, not folders
MAY_IMPORT = {  # floor -> the floors its modules may import (their own included)
    "metrics": {"metrics"},
    "plan": {"metrics", "plan"},
    "models": {"metrics", "models"},
    "analysis": {"metrics", "plan", "analysis"},
    "sweep": {"metrics", "plan", "models", "analysis", "sweep"},
    "benchmarks": set(PACKAGES),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> set[str]:
    """The project modules `path` imports: `import a.b` and `from a.b import c` give a.b, or a.b.c where
    that is a module of its own."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in PACKAGES and _is_module(n)}
    return found


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    files = [*(ROOT / f"{m}.py" for m in MODULES if (ROOT / f"{m}.py").is_file()),
             *(p for d in PACKAGES if d not in MODULES for p in (ROOT / d).rglob("*.py"))]
    return {module_name(p): project_imports(p) for p in files}


def upward(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} imports {i}" for m, imports in edges.items() for i in imports
                  if i.split(".")[0] not in MAY_IMPORT[m.split(".")[0]])


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every circle a depth-first walk of the import graph meets, as [a, b, ..., a]."""
    done, on_path, found = set(), [], []

    def visit(module):
        if module in on_path:
            found.append(on_path[on_path.index(module):] + [module])
            return
        if module in done:
            return
        on_path.append(module)
        for imported in sorted(edges.get(module, ())):
            visit(imported)
        on_path.pop()
        done.add(module)

    for module in sorted(edges):
        visit(module)
    return found


def test_every_floor_imports_only_the_floors_below_it():
    assert upward(graph()) == []


def test_no_import_circle():
    assert circles(graph()) == []


def test_the_checks_find_an_upward_import_and_a_circle(tmp_path, monkeypatch):
    """The checks are not vacuous: in a made-up tree, a models module that imports analysis, the plan record
    importing analysis, and two models modules that import each other (one inside a function), are found."""
    for floor in ("models", "analysis"):
        (tmp_path / floor).mkdir()
        (tmp_path / floor / "__init__.py").write_text("")
    (tmp_path / "metrics.py").write_text("")
    (tmp_path / "plan.py").write_text("import metrics\nimport analysis.b\n")
    (tmp_path / "models" / "a.py").write_text("from analysis import b\nimport models.c\n")
    (tmp_path / "models" / "c.py").write_text("def f():\n    from models.a import g\n")
    (tmp_path / "analysis" / "b.py").write_text("import metrics\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    edges = graph()
    assert edges == {"metrics": set(), "plan": {"metrics", "analysis.b"}, "models": set(), "analysis": set(),
                     "analysis.b": {"metrics"}, "models.a": {"analysis", "analysis.b", "models.c"},
                     "models.c": {"models.a"}}
    assert upward(edges) == ["models.a imports analysis", "models.a imports analysis.b", "plan imports analysis.b"]
    assert circles(edges) == [["models.a", "models.c", "models.a"]]
