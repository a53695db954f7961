"""Whether this process compiled its imports from source.

A Python told not to write bytecode (PYTHONDONTWRITEBYTECODE=1, usual in container images) whose packages were
installed without it (no `__pycache__` beside torch's or numpy's sources) compiles every module it imports, at every
start. On the H100 machine of 2026-12-06 that was about 5 of a cold `testtime solve`'s 12 s: importing torch and
transformers' model code took 9.6-11.4 s, and 4.6-5.0 s once `python -m compileall` had cached the bytecode
(results/h100-latency-2026-12-06b.md). A cold solve names the remedy when it finds the case (`hint`), and the
latency benchmark counts the modules, so that a cold figure says which of the two it measured.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections import Counter
from collections.abc import Mapping
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType


def compiled_at_import(modules: Mapping[str, ModuleType] | None = None) -> dict[str, str]:
    """The loaded modules (name: source file) that Python's own loader compiled from a .py file without cached
    bytecode to read: it compiled them at import and kept nothing, so the next process compiles them again. Other
    loaders (pytest's assertion rewriting, which caches under names of its own) are not counted."""
    found = {}
    for name, mod in list((sys.modules if modules is None else modules).items()):
        spec = getattr(mod, "__spec__", None)
        cached, origin = getattr(spec, "cached", None), getattr(spec, "origin", None)
        if (isinstance(getattr(spec, "loader", None), SourceFileLoader) and cached and origin
                and origin.endswith(".py") and not os.path.exists(cached)):
            found[name] = origin
    return found


def install_root(name: str, origin: str) -> Path:
    """The folder a module's top-level package sits in (site-packages, for an installed one)."""
    path = Path(origin)
    up = name.count(".") + (1 if path.name == "__init__.py" else 0)
    return path.parents[min(up, len(path.parents) - 1)]  # a module kept under another name may sit shallower


def hint(min_modules: int = 200, modules: Mapping[str, ModuleType] | None = None) -> str | None:
    """One line naming the command that caches this interpreter's bytecode for the folders it compiled from, where
    this process compiled `min_modules` or more of its imports (of `modules`, default all) from source because it
    may not write bytecode; None otherwise (where Python may write it, the next start reads what this one wrote)."""
    if not sys.dont_write_bytecode:
        return None
    compiled = {n: o for n, o in compiled_at_import(modules).items() if not n.startswith("__")}  # __main__: an alias
    if len(compiled) < min_modules:
        return None
    roots = [root for root, _ in Counter(install_root(n, o) for n, o in compiled.items()).most_common(2)]
    roots = [r for r in roots if not any(o != r and o in r.parents for o in roots)]  # compileall recurses
    folders = " ".join(shlex.quote(str(r)) for r in roots)
    return (f"note: this start compiled {len(compiled)} modules from source (Python may not write bytecode here, "
            f"and none was cached at install); `{shlex.quote(sys.executable)} -m compileall -q -j 0 {folders}` "
            "once makes later starts faster")
