"""README's layout is the code's: every module is listed, and none imports from a module listed after it."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "testtime"


def _layout_order() -> list[str]:
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index("src/testtime/\n"): readme.index("\nconfigs/")]
    order: list[str] = []
    for m in re.finditer(r"\b([a-z_0-9]+)\.py\b", block):
        if m.group(1) not in order:
            order.append(m.group(1))
    return order


def _imports(path: Path) -> set[str]:
    out = set()
    for m in re.finditer(r"^\s*from testtime(?:\.([a-z_0-9]+))? import ([a-zA-Z_0-9, ()\n]+?)$", path.read_text(),
                         re.MULTILINE):
        out |= {m.group(1)} if m.group(1) else {x.strip(" ()") for x in m.group(2).split(",")}
    return out


def test_every_module_is_in_the_layout_and_imports_only_from_above():
    order = _layout_order()
    modules = {p.stem for p in SRC.glob("*.py")} - {"__init__"}
    assert modules <= set(order), f"not in README's layout: {sorted(modules - set(order))}"
    pos = {m: i for i, m in enumerate(order)}
    upward = sorted((p.stem, t) for p in SRC.glob("*.py") if p.stem in pos
                    for t in _imports(p) if t in pos and pos[t] > pos[p.stem])
    assert not upward, f"imports from a module listed later: {upward}"
