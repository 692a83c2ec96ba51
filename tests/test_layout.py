"""The design card's layout: one distribution, denoisrec.* import names, one-way dependencies, no import circles."""

import ast
import functools
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
TOP = ("trainer", "models", "denoisers", "launch")


def test_every_package_directory_is_installed() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    on_disk = {
        "denoisrec." + ".".join(p.parent.relative_to(ROOT).parts)
        for top in TOP
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk | {"denoisrec"} == listed, f"pyproject packages differ from the folders: {on_disk ^ listed}"
    # the top-level package is denoisrec/__init__.py alone: the Python entry point (denoisrec.train), no modules
    assert cfg["package-dir"] == {"denoisrec": "denoisrec", **{f"denoisrec.{t}": t for t in TOP}}
    assert [p.name for p in (ROOT / "denoisrec").iterdir() if p.name != "__pycache__"] == ["__init__.py"]


def test_the_top_level_package_imports_only_the_trainer_and_no_torch() -> None:
    imported = {m for m in _imports(ROOT / "denoisrec" / "__init__.py", "denoisrec") if m.startswith("denoisrec")}
    assert imported and all(m.startswith("denoisrec.trainer") for m in imported), imported
    code = "import sys, denoisrec; assert callable(denoisrec.train); print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr[-2000:]


def test_import_names_and_no_bare_top_level_package(tmp_path: Path) -> None:
    for t in TOP:
        mod = importlib.import_module(f"denoisrec.{t}")
        assert Path(mod.__file__).resolve().parent == ROOT / t
    # Outside the checkout (so the working directory is not on sys.path) only denoisrec.* resolves.
    code = (
        "import importlib.util as u, json; "
        f"print(json.dumps({{n: u.find_spec(n) is not None for n in {list(TOP)!r} + ['denoisrec.models']}}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    found = json.loads(proc.stdout)
    assert found.pop("denoisrec.models") is True
    assert not any(found.values()), f"bare top-level packages importable from site-packages: {found}"


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "denoisrec"
    assert exe.exists() or shutil.which("denoisrec"), "the denoisrec console script is not installed"


@functools.lru_cache(maxsize=None)
def _modules() -> Dict[str, Path]:
    """Every ``denoisrec.*`` module of the checkout → its file (a package is its ``__init__.py``)."""
    mods = {}
    for top in TOP:
        for py in (ROOT / top).rglob("*.py"):
            parts = py.relative_to(ROOT).with_suffix("").parts
            mods["denoisrec." + ".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = py
    return mods


def _is_main_block(node: ast.AST) -> bool:
    """``if __name__ == "__main__":``: runs only as ``python -m``, where the module is ``__main__``, a separate
    module from the imported ``denoisrec.x`` (so its imports cannot close a circle).
    """
    t = node.test if isinstance(node, ast.If) else None
    return (
        isinstance(t, ast.Compare)
        and isinstance(t.left, ast.Name)
        and t.left.id == "__name__"
        and len(t.comparators) == 1
        and isinstance(t.comparators[0], ast.Constant)
        and t.comparators[0].value == "__main__"
    )


def _is_type_checking_block(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:``: read by type checkers only, never run."""
    t = node.test if isinstance(node, ast.If) else None
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every import statement that can run, at any depth (inside functions and classes too)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif not (_is_main_block(node) or _is_type_checking_block(node)):
            yield from _import_nodes(node)


def _imports(path: Path, module: str = "") -> Set[str]:
    """The modules ``path`` imports: absolute names; ``from a import b`` is ``a.b`` when that is a module, else
    ``a``. Parent packages run on import too, but are not edges here: a package importing its own children is
    how packages are built, not a circle.
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    known = _modules()
    names = set()
    for node in _import_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
            continue
        base = node.module or ""
        if node.level:  # relative: from .x import y
            up = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(up + ([node.module] if node.module else []))
        for a in node.names:  # a submodule, or a name defined in module ``base``
            names.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return names


@functools.lru_cache(maxsize=None)
def import_graph() -> Dict[str, Set[str]]:
    """``denoisrec.*`` module → the ``denoisrec.*`` modules it imports (module-level and function-local)."""
    mods = _modules()
    graph = {}
    for name, py in mods.items():
        graph[name] = {m for m in _imports(py, name) if m in mods and m != name}
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted: every import circle
    lies inside one.
    """
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_sees_a_function_local_circle(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "import os\n\ndef f():\n    from denoisrec.models import spec, MODELS\n\n"
        "if __name__ == '__main__':\n    from denoisrec.trainer import cli\n"
    )
    assert _imports(src, "denoisrec.x.m") >= {"os", "denoisrec.models", "denoisrec.models.spec"}
    assert "denoisrec.trainer.cli" not in _imports(src, "denoisrec.x.m")
    src.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from denoisrec.trainer import cli\n"
        "from .sibling import x\n"
    )
    assert _imports(src, "denoisrec.x.m") == {"typing", "denoisrec.x.sibling"}
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(g) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "denoisrec.trainer.data.schema" in graph["denoisrec.trainer.data.checks"]  # the graph is not empty
    found = cycles(graph)
    assert not found, "import circles (function-local imports included): " + "; ".join(" ↔ ".join(c) for c in found)


def trainer_part(module: str) -> str:
    """The part of ``trainer/`` a module belongs to: its sub-package (``denoisrec.trainer.loop.steps`` →
    ``denoisrec.trainer.loop``), or the module itself at the top (``denoisrec.trainer.cli``).
    """
    return ".".join(module.split(".")[:3])


def part_graph(graph: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    """``graph`` inside ``denoisrec.trainer`` with each module replaced by its :func:`trainer_part`."""
    parts: Dict[str, Set[str]] = {}
    for m, deps in graph.items():
        if m.startswith("denoisrec.trainer"):
            mine = trainer_part(m)
            parts.setdefault(mine, set()).update(
                trainer_part(d) for d in deps if d.startswith("denoisrec.trainer") and trainer_part(d) != mine
            )
    return parts


def test_part_graph_collapses_packages() -> None:
    g = {
        "denoisrec.trainer.a.x": {"denoisrec.trainer.a.y", "denoisrec.trainer.b.z"},
        "denoisrec.trainer.a.y": {"denoisrec.trainer.a.x"},  # a circle inside one package is not between two
        "denoisrec.trainer.b.z": {"denoisrec.trainer.top", "denoisrec.models.spec"},
        "denoisrec.trainer.top": {"denoisrec.trainer.a.y"},
    }
    parts = part_graph(g)
    assert parts == {
        "denoisrec.trainer.a": {"denoisrec.trainer.b"},
        "denoisrec.trainer.b": {"denoisrec.trainer.top"},
        "denoisrec.trainer.top": {"denoisrec.trainer.a"},
    }
    assert cycles(parts) == [["denoisrec.trainer.a", "denoisrec.trainer.b", "denoisrec.trainer.top"]]


def test_trainer_packages_import_one_way() -> None:
    """No two parts of ``trainer/`` (its sub-packages and top-level modules) import each other, even through
    others: every arrow points down (function-local imports counted).
    """
    parts = part_graph(import_graph())
    # the graph is not empty
    assert "denoisrec.trainer.distributed" in parts["denoisrec.trainer.checkpoint"]
    found = cycles(parts)
    assert not found, "trainer/ parts import each other: " + "; ".join(" ↔ ".join(c) for c in found)


NEW_PACKAGES = ("config", "distributed", "loop", "evaluation", "checkpoint", "outputs", "denoising", "serving")


def test_trainer_is_grouped_in_small_packages() -> None:
    top = sorted(p.name for p in (ROOT / "trainer").glob("*.py"))
    assert len(top) <= 11, f"trainer/ has {len(top)} top-level modules (at most 11): {top}"
    for name in NEW_PACKAGES:
        pkg = ROOT / "trainer" / name
        modules = sorted(p.name for p in pkg.glob("*.py") if p.name != "__init__.py")
        assert 0 < len(modules) <= 8, f"trainer/{name}/ holds {len(modules)} modules (at most 8): {modules}"
        init = ast.parse((pkg / "__init__.py").read_text())
        doc = ast.get_docstring(init)
        assert doc and "\n" not in doc, f"trainer/{name}/__init__.py: its docstring is not one line"


def test_leaf_errors_and_ingest_apart_from_the_dataset_tools() -> None:
    graph = import_graph()
    assert graph["denoisrec.trainer.errors"] == set(), "trainer/errors.py must import nothing from denoisrec"
    assert not {m for m in graph["denoisrec.models.registry"] if not m.startswith("denoisrec.models.")}
    ingest = [m for m in graph if m.startswith("denoisrec.trainer.data.")]
    bad = {m: sorted(d for d in graph[m] if d.startswith("denoisrec.trainer.datasets")) for m in ingest}
    assert not any(bad.values()), f"runtime ingest imports the offline dataset tools: {bad}"


def test_dependencies_point_one_way() -> None:
    """Models and denoisers never import trainer; trainer never imports launch (launch names its entry point)."""
    rules = {
        "models": ("denoisrec.trainer", "denoisrec.denoisers", "denoisrec.launch"),
        "denoisers": ("denoisrec.trainer", "denoisrec.launch"),
        "launch": ("denoisrec.models", "denoisrec.denoisers", "denoisrec.trainer"),
        "trainer": ("denoisrec.launch",),
    }
    for top, forbidden in rules.items():
        for py in (ROOT / top).rglob("*.py"):
            bad = {m for m in _imports(py) if m == forbidden or m.startswith(forbidden)}
            assert not bad, f"{py.relative_to(ROOT)} imports {sorted(bad)}"


def test_trainer_reexports_its_public_api_without_importing_torch() -> None:
    code = (
        "import sys, denoisrec.trainer as t; from denoisrec.trainer import Config, UsageError; "
        "assert 'torch' not in sys.modules, 'importing denoisrec.trainer pulled in torch'; print(len(t.__all__))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout) >= 10
    trainer = importlib.import_module("denoisrec.trainer")
    missing = [n for n in trainer.__all__ if getattr(trainer, n, None) is None]
    assert not missing, f"denoisrec.trainer.__all__ names nothing for {missing}"
    with pytest.raises(AttributeError):
        trainer.no_such_name  # noqa: B018 - the access itself must raise
