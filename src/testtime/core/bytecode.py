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
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType


def compiled_at_import(modules: Mapping[str, ModuleType] | None = None) -> list[str]:
    """The loaded modules that came from a .py file whose cached bytecode does not exist: Python compiled them at
    import and kept nothing, so the next process compiles them again."""
    found = []
    for name, mod in list((sys.modules if modules is None else modules).items()):
        spec = getattr(mod, "__spec__", None)
        cached, origin = getattr(spec, "cached", None), getattr(spec, "origin", None)
        if cached and origin and origin.endswith(".py") and not os.path.exists(cached):
            found.append(name)
    return found


def install_root(name: str, origin: str) -> Path:
    """The folder a module's top-level package sits in (site-packages, for an installed one)."""
    path = Path(origin)
    up = name.count(".") + (1 if path.name == "__init__.py" else 0)
    return path.parents[min(up, len(path.parents) - 1)]  # a module kept under another name may sit shallower


def hint(min_modules: int = 200) -> str | None:
    """One line naming the folders to compile once, where this process compiled at least `min_modules` of its
    imports from source because it may not write bytecode; None otherwise (where Python may write it, the next
    start reads what this one wrote)."""
    if not sys.dont_write_bytecode:
        return None
    names = compiled_at_import()
    if len(names) < min_modules:
        return None
    roots = Counter(install_root(n, sys.modules[n].__spec__.origin) for n in names)
    folders = " ".join(str(root) for root, _ in roots.most_common(2))
    return (f"note: this start compiled {len(names)} modules from source (Python may not write bytecode here, and "
            f"none was cached at install); `python -m compileall -q -j 0 {folders}` once makes later starts faster")
