"""README's layout is the code's: every module is listed under its folder, and none imports from a module listed
after it (imports point down the flow: core -> data -> model -> report -> stages -> recipes -> text -> cli)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "testtime"


def _layout_order() -> list[str]:
    """Dotted module names ("core.config", "cli") in README's order."""
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index("src/testtime/\n"): readme.index("\nconfigs/")]
    order: list[str] = []
    folder = ""
    for line in block.splitlines()[1:]:
        if m := re.match(r"^  ([a-z_]+)/\s", line):
            folder = m.group(1) + "."
        elif m := re.match(r"^  ([a-z_0-9]+)\.py\b", line):
            folder = ""
            order.append(m.group(1))
        elif m := re.match(r"^    ([a-z_0-9]+)\.py\b", line):
            order.append(folder + m.group(1))
    return order


def _modules() -> set[str]:
    return {".".join(p.relative_to(SRC).with_suffix("").parts) for p in SRC.rglob("*.py") if p.name != "__init__.py"}


def _imports(path: Path) -> set[str]:
    """Modules of testtime that `path` imports, dotted: `from testtime.core import config` gives core.config."""
    out = set()
    for m in re.finditer(r"^\s*from testtime((?:\.[a-z_0-9]+)*) import \(?([a-zA-Z_0-9, \n]+?)\)?$", path.read_text(),
                         re.MULTILINE):
        base = m.group(1).lstrip(".")
        names = {x.strip().split(" as ")[0] for x in m.group(2).split(",") if x.strip()}
        for name in names:
            out.add(f"{base}.{name}" if base else name)
        out.add(base)
    for m in re.finditer(r"^\s*import testtime\.([a-z_0-9.]+)", path.read_text(), re.MULTILINE):
        out.add(m.group(1))
    return out


def test_layout_parser_reads_folders_and_modules():
    order = _layout_order()
    assert order.index("core.jsonio") < order.index("data.tasks") < order.index("recipes.grid") < order.index("cli")
    assert "text.tasks" in order and "data.tasks" in order


def test_every_module_is_in_the_layout_and_imports_only_from_above():
    order = _layout_order()
    modules = _modules()
    assert modules <= set(order), f"not in README's layout: {sorted(modules - set(order))}"
    missing = set(order) - modules - {"__init__"}
    assert not missing, f"listed but missing: {sorted(missing)}"
    pos = {m: i for i, m in enumerate(order)}
    upward = sorted((mod, t) for mod in modules if mod in pos
                    for t in _imports(SRC.joinpath(*mod.split(".")).with_suffix(".py"))
                    if t in pos and pos[t] > pos[mod])
    assert not upward, f"imports from a module listed later: {upward}"


MAX_LINES = 500


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"


def _private_uses(path: Path) -> list[str]:
    """Private names (a leading underscore) of testtime's modules that `path` imports or reads off a module."""
    tree = ast.parse(path.read_text())
    modules = {".".join(p.relative_to(SRC.parent).with_suffix("").parts) for p in SRC.rglob("*.py")}
    bound: set[str] = set()  # local names of testtime modules
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("testtime"):
            for a in node.names:
                if f"{node.module}.{a.name}" in modules:
                    bound.add(a.asname or a.name)
                elif a.name.startswith("_") and not a.name.startswith("__"):
                    out.append(f"{node.module}.{a.name}")
        elif isinstance(node, ast.Import):
            bound.update(a.asname for a in node.names if a.asname and a.name.startswith("testtime"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            out.append(f"{node.value.id}.{node.attr}")
    return out


def test_no_private_name_is_used_across_modules():
    files = [p for folder in ("src", "tests", "benchmarks", "scripts") for p in (REPO / folder).rglob("*.py")]
    found = {str(p.relative_to(REPO)): uses for p in files if (uses := _private_uses(p))}
    assert not found, f"private names used from another module (make them public, or move them): {found}"
