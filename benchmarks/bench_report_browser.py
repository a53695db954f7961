"""How long a run's HTML report takes to open in headless Chromium (Debian's, through playwright).

    python benchmarks/bench_report_browser.py RUN_DIR [RUN_DIR ...] [--repeat 3] [--chromium PATH]

For each run folder, writes its report (`testtime report` does the same) unless --no-write, then opens
RUN_DIR/report.html in a fresh page, --repeat times, and prints per opening: the seconds to the load event (HTML
parsed, styles applied), the first contentful paint, the seconds until the whole page is laid out (its height read)
and painted (a full-page screenshot), and what the page holds (bytes, grids, cells). The browser is launched once,
before the timings.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path


def open_once(browser, page_file: Path) -> dict[str, float]:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(600_000)
    try:
        start = time.perf_counter()
        page.goto(page_file.as_uri(), wait_until="load")
        loaded = time.perf_counter() - start
        height = page.evaluate("() => document.documentElement.scrollHeight")  # forces a complete layout
        laid_out = time.perf_counter() - start
        fcp = page.evaluate("() => (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime || null")
        counts = page.evaluate("() => [document.querySelectorAll('table.g').length, "
                               "document.querySelectorAll('table.g td').length]")
        page.screenshot(full_page=False)  # the first screen, painted
        painted = time.perf_counter() - start
    finally:
        page.close()
    return {"load_s": loaded, "fcp_s": (fcp or 0) / 1000, "layout_s": laid_out, "first_screen_s": painted,
            "height_px": height, "grids": counts[0], "cells": counts[1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    ap.add_argument("--no-write", action="store_true", help="open the report.html already there")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from testtime.report.report import write_report

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium)
        for run in args.runs:
            if not args.no_write:
                start = time.perf_counter()
                write_report(run)
                print(f"{run}: report written in {time.perf_counter() - start:.1f} s")
            page_file = (run / "report.html").resolve()
            size = page_file.stat().st_size
            rows = [open_once(browser, page_file) for _ in range(args.repeat)]
            for r in rows:
                print(f"  load {r['load_s']:.2f} s, first contentful paint {r['fcp_s']:.2f} s, laid out "
                      f"{r['layout_s']:.2f} s, first screen painted {r['first_screen_s']:.2f} s")
            med = {k: statistics.median(r[k] for r in rows) for k in ("load_s", "fcp_s", "layout_s", "first_screen_s")}
            print(f"{run}: {size / 2**20:.1f} MB, {rows[0]['grids']} grids, {rows[0]['cells']} cells, "
                  f"{rows[0]['height_px'] / 1000:.0f}k px tall; median of {args.repeat}: load {med['load_s']:.2f} s, "
                  f"first contentful paint {med['fcp_s']:.2f} s, laid out {med['layout_s']:.2f} s, first screen "
                  f"painted {med['first_screen_s']:.2f} s", flush=True)
        browser.close()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
