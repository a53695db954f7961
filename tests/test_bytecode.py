"""testtime.core.bytecode: which imports were compiled from source and not kept, the folder to compile once, and the
one-line note `testtime solve` prints where a Python may not write bytecode (PYTHONDONTWRITEBYTECODE)."""

from __future__ import annotations

import compileall
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testtime.core import bytecode

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def package(tmp_path, monkeypatch):
    """A package of three modules in a folder of its own, on sys.path, forgotten again after the test."""
    root = tmp_path / "site"
    (root / "pkg_bc" / "sub").mkdir(parents=True)
    for rel in ("pkg_bc/__init__.py", "pkg_bc/sub/__init__.py", "pkg_bc/sub/leaf.py"):
        (root / rel).write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in [n for n in sys.modules if n.split(".")[0] == "pkg_bc"]:
        del sys.modules[name]


def test_modules_compiled_without_keeping_bytecode_are_found(package, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    importlib.import_module("pkg_bc.sub.leaf")
    assert {"pkg_bc", "pkg_bc.sub", "pkg_bc.sub.leaf"} <= set(bytecode.compiled_at_import())
    assert not list(package.rglob("*.pyc"))  # nothing was written: the next start compiles them again
    assert {bytecode.install_root(n, sys.modules[n].__spec__.origin) for n in ("pkg_bc", "pkg_bc.sub",
                                                                             "pkg_bc.sub.leaf")} == {package}


def test_modules_with_cached_bytecode_are_not(package, monkeypatch):
    assert compileall.compile_dir(str(package), quiet=1)  # what `python -m compileall` does once
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    importlib.import_module("pkg_bc.sub.leaf")
    assert not {"pkg_bc", "pkg_bc.sub", "pkg_bc.sub.leaf"} & set(bytecode.compiled_at_import())


def test_the_hint_names_the_folder_to_compile_and_only_where_python_may_not_write(package, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    importlib.import_module("pkg_bc.sub.leaf")
    ours = {n: m for n, m in sys.modules.items() if n.split(".")[0] == "pkg_bc"}
    note = bytecode.hint(min_modules=3, modules=ours)
    assert note is not None and "\n" not in note
    assert f"{sys.executable} -m compileall -q -j 0 {package}`" in note  # this interpreter: its bytecode's tag
    assert bytecode.hint(min_modules=4, modules=ours) is None  # a few modules are not worth a note
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    assert bytecode.hint(min_modules=3, modules=ours) is None  # Python keeps what it compiled: the next start reads it


def test_a_folder_inside_another_is_not_named_twice(tmp_path, monkeypatch):
    """compileall recurses: where the standard library's folder holds site-packages, only the outer one is named."""
    outer = tmp_path / "lib"
    for rel in ("a_mod_bc.py", "site/b_mod_bc.py"):
        (outer / rel).parent.mkdir(parents=True, exist_ok=True)
        (outer / rel).write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(outer))
    monkeypatch.syspath_prepend(str(outer / "site"))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    try:
        mods = {n: importlib.import_module(n) for n in ("a_mod_bc", "b_mod_bc")}
        note = bytecode.hint(min_modules=2, modules=mods)
        assert note is not None and note.count(str(outer)) == 1 and f"{outer}`" in note
    finally:
        for n in ("a_mod_bc", "b_mod_bc"):
            sys.modules.pop(n, None)


def test_modules_of_other_loaders_are_not_counted(package, monkeypatch):
    """Modules another loader brought in (pytest rewrites test modules and caches them under its own names) are
    not Python's uncached imports."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    leaf = importlib.import_module("pkg_bc.sub.leaf")
    assert "pkg_bc.sub.leaf" in bytecode.compiled_at_import({"pkg_bc.sub.leaf": leaf})
    assert not bytecode.compiled_at_import({"this_test": sys.modules[__name__]})  # rewritten by pytest


def test_a_module_kept_under_a_deeper_name_than_its_path_gets_the_topmost_folder():
    assert bytecode.install_root("a.b.c", "/x.py") == Path("/")
    assert bytecode.install_root("a.b", "/s/a/b/__init__.py") == Path("/s")
    assert bytecode.install_root("six", "/s/six.py") == Path("/s")


def test_solve_prints_the_note_where_every_import_compiles(tmp_path):
    """`testtime solve` in a Python that may not write bytecode and finds none cached (an empty cache prefix stands
    in for site-packages without __pycache__): the solve works and stderr carries the one-line note."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(tmp_path / "no-cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "testtime", "solve", "arc1/eval/66e6c45b", "--no-ttt", "--views", "1",
                           "--device", "cpu"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    notes = [ln for ln in proc.stderr.splitlines() if ln.startswith("note: this start compiled")]
    assert len(notes) == 1 and "python -m compileall -q -j 0 " in notes[0], proc.stderr[-2000:]
    assert not (tmp_path / "no-cache").exists()  # the note's premise: nothing was kept
