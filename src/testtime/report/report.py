"""A run's results as numbers (`summarize`), a terminal table (`print_summary`) and a page (`write_report`).

`run_dir/results.jsonl` holds one JSON object per task:
    {"task_id", "attempts": [[grid|null, grid|null] per test input], "correct": [bool]|null,
     "score": float, "votes": [[{"grid", "votes"}] per test input], "ttt_loss": [float]|null,
     "seconds": float, "invalid": int, "error": str|null}
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from testtime.core.store import CONFIG, REPORT, Record, read_config, read_joint_summary, read_results, write_atomic
from testtime.data.render import grid_html as _grid_html
from testtime.data.render import html_page, verdict_color
from testtime.data.tasks import Task, load_tasks


def summarize(records: Sequence[Record], joint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Totals of a run. `percent` is pass@2 over the tasks whose answers are known (None if none are).

    `joint` (what `joint.read_joint` gives) adds the joint stage: its cost, and seconds per task with the stage's
    process-seconds shared over the tasks (`mean_seconds_with_joint`)."""
    scored = [r for r in records if r.get("correct") is not None]
    score = float(sum(r.get("score") or 0.0 for r in scored))
    seconds = [float(r.get("seconds") or 0.0) for r in records]
    out = {
        "n_tasks": len(records),
        "n_scored": len(scored),
        "score": score,
        "percent": 100.0 * score / len(scored) if scored else None,
        "mean_seconds": sum(seconds) / len(seconds) if seconds else 0.0,
        "total_seconds": sum(seconds),
        "invalid": int(sum(r.get("invalid") or 0 for r in records)),
        "errors": sum(1 for r in records if r.get("error")),
        "compute": compute_by_stage(records),
        "decisions": by_decision(records),
        "selections": by_selection(scored),
        **recall(scored),
    }
    if joint is not None and records:
        out["joint"] = joint
        out["mean_seconds_with_joint"] = (sum(seconds) + joint["seconds"] * joint["world"]) / len(records)
    return out


def recall(scored: Sequence[Record]) -> dict[str, Any]:
    """How far a run's candidates reach (each record's `recall`): `recall`, the tasks whose right grids were among
    their candidates (each task the share of its test inputs, as pass@2 counts it: the most any selection of the
    same candidates could score), and `candidates`, the distinct grids per test input, on average; {} for records
    made before recall was kept."""
    notes = [r["recall"] for r in scored if (r.get("recall") or {}).get("found") is not None]
    if not notes:
        return {}
    counts = [c for n in notes for c in n["candidates"]]
    return {"recall": float(sum(np.mean(n["found"]) for n in notes)), "n_recall": len(notes),
            "candidates": float(np.mean(counts)) if counts else 0.0}


def by_selection(scored: Sequence[Record]) -> dict[str, float]:
    """pass@2 of each way of choosing the attempts that the records score (the configured one, the vote, the
    identity view's greedy answer), summed over the tasks: one run compares them on the same predictions."""
    out: dict[str, float] = {}
    for r in scored:
        for name, value in (r.get("selections") or {}).items():
            if value is not None:
                out[name] = out.get(name, 0.0) + float(value)
    return out


def compute_by_stage(records: Sequence[Record]) -> dict[str, float]:
    """Seconds spent per stage (icl, loo, ttt, predict) over the run; {} for records made before stages were timed."""
    out: dict[str, float] = {}
    for r in records:
        for stage, sec in (r.get("compute") or {}).items():
            out[stage] = out.get(stage, 0.0) + float(sec)
    return out


def by_decision(records: Sequence[Record]) -> dict[str, dict[str, float]]:
    """Per policy decision (answer, brief, long, ttt...): tasks, pass@2 score and seconds.

    The calibration of a policy: how often the tasks it answered early were right, against the rest.
    """
    out: dict[str, dict[str, float]] = {}
    for r in records:
        d = (r.get("policy") or {}).get("decision")
        if d is None:
            continue
        row = out.setdefault(d, {"n": 0, "n_scored": 0, "score": 0.0, "seconds": 0.0})
        row["n"] += 1
        row["seconds"] += float(r.get("seconds") or 0.0)
        if r.get("correct") is not None:
            row["n_scored"] += 1
            row["score"] += float(r.get("score") or 0.0)
    return out


def _summary_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    pct = "n/a (no answers known)" if s["percent"] is None else f"{s['percent']:.2f}%"
    rows = [
        ("tasks", str(s["n_tasks"])),
        ("pass@2 score", f"{s['score']:g} / {s['n_scored']}"),
        ("pass@2", pct),
        ("seconds per task", f"{s['mean_seconds']:.1f}"),
        ("total seconds", f"{s['total_seconds']:.1f}"),
        ("invalid decodes", str(s["invalid"])),
        ("tasks with errors", str(s["errors"])),
    ]
    if s.get("joint"):
        j = s["joint"]
        rows.append(("joint stage", f"{j['steps']} steps, {j['seconds']:.1f} s on {j['world']} process(es)"))
        rows.append(("seconds per task, joint stage shared", f"{s['mean_seconds_with_joint']:.2f}"))
    if s.get("n_recall"):
        rows.append(("right grid among candidates (recall)",
                     f"{s['recall']:g} / {s['n_recall']}, {s['candidates']:.1f} candidates per test input"))
    if s.get("selections"):
        rows.append(("pass@2 by selection", ", ".join(f"{k} {v:g}" for k, v in s["selections"].items())))
    if s.get("compute"):
        rows.append(("seconds by stage", ", ".join(f"{k} {v:.1f}" for k, v in s["compute"].items())))
    for d, row in (s.get("decisions") or {}).items():
        acc = f"{row['score']:g}/{row['n_scored']} solved" if row["n_scored"] else "no answers known"
        rows.append((f"decision: {d}", f"{row['n']} tasks, {acc}, {row['seconds'] / row['n']:.1f} s/task"))
    return rows


def print_summary(records: Sequence[Record], console=None, joint: dict[str, Any] | None = None) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    s = summarize(records, joint)
    table = Table(title="Run summary", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for k, v in _summary_rows(s):
        table.add_row(k, v)
    (console or Console()).print(table)
    return s


# ---------------------------------------------------------------- HTML


def _grid(g: Any) -> np.ndarray | None:
    return None if g is None else np.asarray(g, dtype=np.uint8)


def grid_html(g: Any, caption: str = "", border: str | None = None) -> str:
    return _grid_html(_grid(g), caption=caption, border=border, css=False)


def loss_svg(losses: Sequence[float], width: int = 240, height: int = 60) -> str:
    """A tiny inline line chart of the TTT loss."""
    ys = [float(x) for x in losses if x is not None and np.isfinite(x)]
    if len(ys) < 2:
        return ""
    lo, hi = min(ys), max(ys)
    span = (hi - lo) or 1.0
    pts = " ".join(
        f"{i * (width - 4) / (len(ys) - 1) + 2:.1f},{height - 2 - (y - lo) / span * (height - 4):.1f}" for i, y in enumerate(ys)
    )
    return (
        f'<svg width="{width}" height="{height}" style="border:1px solid #ccc;vertical-align:middle">'
        f'<polyline fill="none" stroke="#0074D9" stroke-width="1.5" points="{pts}"/></svg>'
    )


def record_lines(rec: Record, meta: Sequence[str], error_color: str = "#c00") -> list[str]:
    """A task section's opening lines, shared by grid and text reports: facts, error, TTT loss curve.

    `meta` items are HTML already (escaped by the caller)."""
    out = [f"<p>{' &middot; '.join(meta)}</p>"]
    if rec.get("error"):
        out.append(f'<p style="color:{error_color}">error: {html.escape(str(rec["error"]))}</p>')
    losses = rec.get("ttt_loss")
    if losses:
        out.append(f"<p>TTT loss {float(losses[0]):.4f} &rarr; {float(losses[-1]):.4f} {loss_svg(losses)}</p>")
    return out


def _task_section(rec: Record, task: Task | None) -> str:
    tid = str(rec["task_id"])
    score = rec.get("score")
    head = f"{html.escape(tid)}"
    if rec.get("correct") is not None:
        head += f" &mdash; score {float(score or 0):g}"
    out = [f'<section id="t-{html.escape(tid)}"><h2>{head}</h2>']
    meta = [f"{float(rec.get('seconds') or 0):.1f} s", f"{int(rec.get('invalid') or 0)} invalid decodes"]
    pol = rec.get("policy")
    if pol:
        sig = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in pol.get("signals", {}).items())
        meta.append(html.escape(f"policy {pol.get('name')}: {pol.get('decision')}, {pol.get('ttt_steps', 0)} TTT steps"
                                + (f" ({sig})" if sig else "")))
    out += record_lines(rec, meta)
    if task is None:
        out.append("<p><i>task not found: demos and answers unavailable</i></p>")
    else:
        demos = "".join(
            '<div class="ex">'
            + grid_html(e.input, f"demo {i} in")
            + grid_html(e.output, "out")
            + "</div>"
            for i, e in enumerate(task.train)
        )
        out.append(f"<h3>Demos</h3>{demos}")
    attempts = rec.get("attempts") or []
    votes = rec.get("votes") or []
    ranked = rec.get("ranked") or []
    n_tests = max(len(attempts), len(task.test) if task else 0)
    for i in range(n_tests):
        truth = task.test[i].output if task and i < len(task.test) else None
        cells = []
        if task and i < len(task.test):
            cells.append(grid_html(task.test[i].input, f"test {i} input"))
        cells.append(grid_html(truth, "truth"))
        for k, a in enumerate(attempts[i] if i < len(attempts) else []):
            cells.append(grid_html(a, f"attempt {k + 1}", verdict_color(_grid(a), truth)))
        out.append(f"<h3>Test {i}</h3><div class=\"ex\">{''.join(cells)}</div>")
        cands = votes[i] if i < len(votes) and votes[i] else []
        if cands:
            vs = "".join(grid_html(c.get("grid"), f"{c.get('votes', '?')} votes") for c in cands)
            out.append(f'<details><summary>votes ({len(cands)} candidates)</summary><div class="ex">{vs}</div></details>')
        scored = (ranked[i] if i < len(ranked) else None) or []
        if any(c.get("logprob") is not None for c in scored):  # the product of experts' order, with its scores
            rs = "".join(grid_html(c.get("grid"), "unscored" if c.get("logprob") is None else
                                   f"log p {c['logprob']:.2f}, {c.get('votes', '?')} votes") for c in scored)
            out.append(f'<details><summary>product of experts ({len(scored)} ranked)</summary>'
                       f'<div class="ex">{rs}</div></details>')
    out.append("</section>")
    return "\n".join(out)


def report_html(records: Sequence[Record], tasks: Sequence[Task] = (), title: str = "testtime report",
                joint: dict[str, Any] | None = None) -> str:
    by_id = {t.id: t for t in tasks}
    s = summarize(records, joint)
    rows = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{html.escape(v)}</td></tr>" for k, v in _summary_rows(s))
    index = " ".join(
        f'<a href="#t-{html.escape(str(r["task_id"]))}" style="color:'
        f'{"#2a2" if r.get("correct") and all(r["correct"]) else "#c22" if r.get("correct") is not None else "#555"}">'
        f"{html.escape(str(r['task_id']))}</a>"
        for r in records
    )
    body = [f"<h1>{html.escape(title)}</h1>", f"<table>{rows}</table>", f"<p>{index}</p>"]
    body += [_task_section(r, by_id.get(str(r["task_id"]))) for r in records]
    return html_page(title, "\n".join(body))


def write_report(run_dir: Path, tasks: list[Task] | None = None) -> Path:
    """Write `run_dir/report.html` from `run_dir/results.jsonl`; tasks default to config.json's "tasks" spec."""
    run_dir = Path(run_dir)
    records = read_results(run_dir)
    if tasks is None:
        cfg_path = run_dir / CONFIG
        cfg = read_config(run_dir)
        if cfg is None:
            raise FileNotFoundError(f"{cfg_path}: no such file (needed to find the tasks; or pass tasks=)")
        if not isinstance(cfg, dict) or "tasks" not in cfg:
            raise ValueError(f"{cfg_path}: has no 'tasks' entry")
        tasks = load_tasks(cfg["tasks"], cfg.get("solutions"))
    return write_atomic(run_dir / REPORT, report_html(records, tasks, title=f"testtime report: {run_dir.name}",
                                                      joint=read_joint_summary(run_dir)))
