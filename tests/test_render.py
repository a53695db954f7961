"""Renderers: plain text, terminal colors, PNG and HTML, with attempts framed by verdict."""

import numpy as np
from rich.console import Console

from testtime.data.render import BAD, GOOD, PALETTE, UNKNOWN, grid_html, grid_png, print_task, task_html, task_png
from testtime.data.tasks import Example, Task, task_text, validate_grid

A = validate_grid([[0, 1, 2], [3, 4, 5]])
B = validate_grid([[6, 7], [8, 9]])
TASK = Task("demo", (Example(A, B),), (Example(B, A), Example(A)))


def test_task_text():
    text = task_text(TASK)
    assert text.splitlines()[0] == "Task demo (1 train, 2 test)"
    assert "train[0] 2x3 -> 2x2" in text and "test[1] 2x3 -> ?" in text
    assert "  012   ->   67" in text and "  345        89" in text
    assert str(TASK) == text


def test_rich_colors():
    console = Console(record=True, width=120, color_system="truecolor")
    print_task(TASK, [[A, B], [None]], console=console)
    out = console.export_html(inline_styles=True, clear=False)
    for color in PALETTE:
        assert f"background-color: {color.lower()}" in out.lower()
    text = console.export_text()
    assert "attempt 1 2x3" in text and "attempt 2 2x2" in text


def test_grid_html_is_self_contained():
    html = grid_html(A, caption="a <b>", border=GOOD)
    assert html.startswith("<style>") and "&lt;b&gt;" in html and GOOD in html
    assert html.count("<tr>") == 2 and html.count("<td") == 6 and "<td class=c5>" in html
    assert "<style>" not in grid_html(A, css=False)
    assert "?" in grid_html(None)


def test_task_html_frames_attempts():
    page = task_html(TASK, [[A, B], [B]])
    assert page.startswith("<!DOCTYPE html>") and "Task demo" in page
    assert f"outline:3px solid {GOOD}" in page  # A is test[0]'s answer
    assert f"outline:3px solid {BAD}" in page
    assert f"outline:3px solid {UNKNOWN}" in page  # test[1] has no known answer


def test_pngs(tmp_path):
    p = grid_png(A, tmp_path / "g.png", title="a")
    q = task_png(TASK, tmp_path / "sub" / "t.png", predictions=[[A, np.zeros((3, 3), dtype=np.uint8)], [None]])
    r = task_png(TASK, tmp_path / "plain.png")
    for path in (p, q, r):
        assert path.read_bytes()[:4] == b"\x89PNG"
    assert q.stat().st_size > r.stat().st_size
