"""The design card's layout: one distribution, denoisrec.* import names, one-way dependencies."""

import ast
import importlib.util
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP = ("trainer", "models", "denoisers", "launch")


def test_every_package_directory_is_installed() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    on_disk = {
        "denoisrec." + ".".join(p.parent.relative_to(ROOT).parts)
        for top in TOP for p in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk == listed, f"pyproject packages differ from the folders: {on_disk ^ listed}"
    assert cfg["package-dir"] == {f"denoisrec.{t}": t for t in TOP}


def test_import_names_and_no_bare_top_level_package(tmp_path: Path) -> None:
    for t in TOP:
        mod = importlib.import_module(f"denoisrec.{t}")
        assert Path(mod.__file__).resolve().parent == ROOT / t
    # Outside the checkout (so the working directory is not on sys.path) only denoisrec.* resolves.
    code = ("import importlib.util as u, json; "
            f"print(json.dumps({{n: u.find_spec(n) is not None for n in {list(TOP)!r} + ['denoisrec.models']}}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    found = json.loads(proc.stdout)
    assert found.pop("denoisrec.models") is True
    assert not any(found.values()), f"bare top-level packages importable from site-packages: {found}"


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "denoisrec"
    assert exe.exists() or shutil.which("denoisrec"), "the denoisrec console script is not installed"


def _imports(path: Path) -> set:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_dependencies_point_one_way() -> None:
    rules = {
        "models": ("denoisrec.trainer", "denoisrec.denoisers", "denoisrec.launch"),
        "denoisers": ("denoisrec.trainer", "denoisrec.launch"),
        "launch": ("denoisrec.models", "denoisrec.denoisers"),
    }
    for top, forbidden in rules.items():
        for py in (ROOT / top).rglob("*.py"):
            bad = {m for m in _imports(py) if m.startswith(forbidden)}
            assert not bad, f"{py.relative_to(ROOT)} imports {sorted(bad)}"
