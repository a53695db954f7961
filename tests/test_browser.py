"""The HTML pages in a real browser (issue 26): a small run's report and a task page, opened in headless Chromium,
draw every grid they should, cell by cell in the palette's colors.

Chromium is Debian's package (`.ci/run` installs it where missing; $TESTTIME_CHROMIUM names another), driven through
playwright. Where no Chromium can be found the tests skip, saying so. How long a 400-task report takes to open is
measured by benchmarks/bench_report_browser.py (results/report-browser-*.md), not here.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from testtime.data.render import PALETTE, task_html
from testtime.data.tasks import load_tasks, save_tasks

TASKS = ("66e6c45b", "00576224")  # the two smallest evaluation tasks (as in test_golden.py)
HANG_GUARD_MS = 300_000  # only a hang guard: a page of a small run opens in about a second

# Every grid table of a page, as drawn: each cell's box and computed background, every <details> opened first.
READ_GRIDS = """() => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  return Array.from(document.querySelectorAll('table.g')).map(t => {
    const box = t.getBoundingClientRect();
    const rows = Array.from(t.rows).map(r => Array.from(r.cells).map(c => {
      const b = c.getBoundingClientRect();
      return [getComputedStyle(c).backgroundColor, b.width, b.height, c.classList.contains('missing')];
    }));
    return {width: box.width, height: box.height, rows: rows};
  });
}"""


def find_chromium() -> str | None:
    for name in (os.environ.get("TESTTIME_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium found: apt-get install chromium (.ci/run does where it can), or set TESTTIME_CHROMIUM")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, timeout=HANG_GUARD_MS)
        yield b
        b.close()


def _rgb(hex_color: str) -> str:
    r, g, b = (int(hex_color[i: i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


COLOR_OF = {_rgb(c): i for i, c in enumerate(PALETTE)}


def drawn_grids(browser, page_file: Path) -> list[tuple[tuple[int, ...], ...] | None]:
    """Every grid of the page as the browser drew it (None: a missing grid's '?'), each checked to be drawn: a box of
    its own, rectangular, every cell a visible square in a palette color."""
    page = browser.new_page()
    page.set_default_timeout(HANG_GUARD_MS)
    try:
        page.goto(page_file.as_uri(), wait_until="load")
        tables = page.evaluate(READ_GRIDS)
    finally:
        page.close()
    out = []
    for t in tables:
        assert t["width"] > 0 and t["height"] > 0, t
        cells = [c for row in t["rows"] for c in row]
        if any(c[3] for c in cells):
            assert len(cells) == 1, t  # a missing grid is one '?' cell
            out.append(None)
            continue
        widths = {len(row) for row in t["rows"]}
        assert len(widths) == 1, f"not rectangular: {widths}"
        for color, w, h, _ in cells:
            assert w >= 8 and h >= 8 and abs(w - h) <= 1, (w, h)  # drawn as squares of 12 px (border aside)
            assert color in COLOR_OF, color
        out.append(tuple(tuple(COLOR_OF[c[0]] for c in row) for row in t["rows"]))
    return out


def _key(grid) -> tuple[tuple[int, ...], ...] | None:
    return None if grid is None else tuple(tuple(int(v) for v in row) for row in np.asarray(grid))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A real run of the shipped model on the two smallest evaluation tasks, without TTT, with enough views that the
    product of experts ranks candidates: records with attempts, votes and ranked candidates, and its report."""
    from testtime.model.loading import load_model
    from testtime.recipes.grid import config_from_dict, evaluate
    from testtime.report.report import write_report

    root = tmp_path_factory.mktemp("browser")
    by_id = {t.id: t for t in load_tasks("arc1/eval")}
    tasks = [by_id[t] for t in TASKS]
    save_tasks(tasks, root / "tasks")
    loaded = load_model(device="cpu")
    cfg = config_from_dict({"tasks": str(root / "tasks"), "device": "cpu", "ttt": False, "predict_cfg": {"views": 8}})
    records = evaluate(cfg, root / "run", model=loaded.model, codec=loaded.codec, tasks=tasks, show_progress=False)
    write_report(root / "run")
    return tasks, records, root / "run" / "report.html"


def test_the_report_draws_every_grid_of_a_small_run(browser, small_run):
    tasks, records, report = small_run
    expected = []
    for task, rec in zip(tasks, records, strict=True):
        for e in task.train:
            expected += [_key(e.input), _key(e.output)]
        for i, e in enumerate(task.test):
            expected += [_key(e.input), _key(e.output)]
            expected += [_key(a) for a in rec["attempts"][i]]
            expected += [_key(c["grid"]) for c in (rec.get("votes") or [[]] * (i + 1))[i]]
            ranked = (rec.get("ranked") or [[]] * (i + 1))[i] or []
            if any(c.get("logprob") is not None for c in ranked):
                expected += [_key(c["grid"]) for c in ranked]
    # The run is what it should be for this check: votes and ranked candidates to draw, not only demos.
    assert any(rec.get("votes") and rec["votes"][0] for rec in records)
    assert any(c.get("logprob") is not None for rec in records for c in (rec.get("ranked") or [[]])[0] or [])
    drawn = drawn_grids(browser, report)
    assert Counter(drawn) == Counter(expected)
    assert len(drawn) == len(expected) > 20


def test_the_task_page_draws_every_grid(browser, small_run, tmp_path):
    tasks, records, _ = small_run
    task, rec = tasks[1], records[1]
    attempts = [[None if a is None else np.array(a, np.uint8) for a in att] for att in rec["attempts"]]
    attempts[0] = [*attempts[0], None]  # and an attempt that is not there: a '?'
    page = tmp_path / "task.html"
    page.write_text(task_html(task, predictions=attempts))
    expected = [_key(g) for e in task.train for g in (e.input, e.output)]
    for i, e in enumerate(task.test):
        expected += [_key(e.input), _key(e.output), *(_key(a) for a in attempts[i])]
    assert drawn_grids(browser, page) == expected  # in the page's order
