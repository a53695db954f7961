"""A text run as numbers (`summary`) and as a page: `report.html` in the run folder, written by `evaluate_text`
at the end of a run.

Summary first (tasks, mean task accuracy, query accuracy, seconds), then per task its instruction,
demonstrations (folded), TTT loss, and a table of every query: input, prediction, target, right or
wrong (and the option scores when the answer was ranked). Every piece of task or model text is
escaped, so a prediction holding `<script>` shows as text.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testtime.core.store import CONFIG, REPORT, read_config, read_results, write_atomic
from testtime.data.render import html_page
from testtime.report.report import record_lines
from testtime.text.encode import normalize
from testtime.text.tasks import TextTask, first_queries, load_text_tasks

Record = dict[str, Any]
GOOD, BAD, UNKNOWN = "#2a2", "#c22", "#555"
CSS = (
    "table.q{border-collapse:collapse;margin:.5em 0}table.q td,table.q th{border:1px solid #ccc;padding:2px 6px;"
    "vertical-align:top;text-align:left}.pre{white-space:pre-wrap;font-family:monospace}"
)


def summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean per-task accuracy (as the paper reports BBH) and accuracy over all scored queries."""
    scored = [r for r in records if r.get("correct")]
    n_q = sum(len(r["correct"]) for r in scored)
    seconds = [float(r.get("seconds") or 0.0) for r in records]
    return {
        "tasks": len(records),
        "scored_tasks": len(scored),
        "task_accuracy": sum(r["score"] for r in scored) / len(scored) if scored else None,
        "query_accuracy": sum(sum(r["correct"]) for r in scored) / n_q if n_q else None,
        "errors": sum(1 for r in records if r.get("error")),
        "mean_seconds": sum(seconds) / len(seconds) if seconds else 0.0,
        "total_seconds": sum(seconds),
    }


def _e(value: Any) -> str:
    return html.escape(str(value))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _summary_rows(s: dict[str, Any], meta: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [(k, str(v)) for k, v in meta.items()]
    rows += [
        ("tasks", f"{s['tasks']} ({s['scored_tasks']} with known answers)"),
        ("mean task accuracy", _pct(s["task_accuracy"])),
        ("query accuracy", _pct(s["query_accuracy"])),
        ("seconds per task", f"{s['mean_seconds']:.1f}"),
        ("total seconds", f"{s['total_seconds']:.1f}"),
        ("tasks with errors", str(s["errors"])),
    ]
    return rows


def _query_rows(rec: Record, task: TextTask | None) -> str:
    answers = rec.get("answers") or []
    scores = rec.get("scores") or []
    queries = list(task.queries) if task else [(None, None)] * len(answers)
    head = "<tr><th>#</th><th>input</th><th>prediction</th><th>target</th><th></th>"
    head += "<th>option scores</th></tr>" if scores and task and task.options else "</tr>"
    rows = [head]
    for i, (x, y) in enumerate(queries):
        pred = answers[i] if i < len(answers) else None
        if y is None:
            mark, color = "&ndash;", UNKNOWN
        elif pred is not None and normalize(pred) == normalize(y):
            mark, color = "right", GOOD
        else:
            mark, color = "wrong", BAD
        cells = [
            str(i),
            f'<span class="pre">{_e(x) if x is not None else "<i>task not found</i>"}</span>',
            f'<span class="pre">{_e(pred) if pred is not None else "<i>none</i>"}</span>',
            f'<span class="pre">{_e(y) if y is not None else "<i>unknown</i>"}</span>',
            f'<b style="color:{color}">{mark}</b>',
        ]
        if scores and task and task.options:
            s = scores[i] if i < len(scores) and scores[i] else []
            cells.append(", ".join(f"{_e(o)} {v:.2f}" for o, v in zip(task.options, s, strict=False)))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f'<table class="q">{"".join(rows)}</table>'


def _task_section(rec: Record, task: TextTask | None) -> str:
    tid = str(rec["task_id"])
    correct = rec.get("correct")
    head = _e(tid) + (f" &mdash; {sum(correct)}/{len(correct)} right" if correct else "")
    out = [f'<section id="t-{_e(tid)}"><h2>{head}</h2>']
    meta = [f"{float(rec.get('seconds') or 0):.1f} s", f"answers by {_e(rec.get('method') or 'n/a')}"]
    out += record_lines(rec, meta, error_color=BAD)
    if task is None:
        out.append("<p><i>task not found in the run's task file: inputs and targets unavailable</i></p>")
    else:
        if task.instruction:
            out.append(f'<p><b>Instruction:</b> <span class="pre">{_e(task.instruction)}</span></p>')
        if task.options:
            out.append(f"<p><b>Options:</b> {', '.join(_e(o) for o in task.options)}</p>")
        demos = "".join(
            f'<tr><td>{i}</td><td class="pre">{_e(x)}</td><td class="pre">{_e(y)}</td></tr>'
            for i, (x, y) in enumerate(task.demos)
        )
        out.append(
            f"<details><summary>{len(task.demos)} demonstrations</summary>"
            f'<table class="q"><tr><th>#</th><th>input</th><th>target</th></tr>{demos}</table></details>'
        )
    out.append(_query_rows(rec, task))
    out.append("</section>")
    return "\n".join(out)


def text_report_html(
    records: Sequence[Record], tasks: Sequence[TextTask] = (), title: str = "testtime text report",
    meta: dict[str, Any] | None = None,
) -> str:
    """The page: `meta` (e.g. model, TTT on/off) and the summary on top, then one section per task."""
    by_id = {t.id: t for t in tasks}
    s = summary(records)
    rows = "".join(f"<tr><th style='text-align:left'>{_e(k)}</th><td>{_e(v)}</td></tr>"
                   for k, v in _summary_rows(s, meta or {}))
    index = " ".join(
        f'<a href="#t-{_e(r["task_id"])}" style="color:'
        f'{UNKNOWN if not r.get("correct") else GOOD if all(r["correct"]) else BAD}">'
        f'{_e(r["task_id"])} ({_pct(r.get("score"))})</a>'
        for r in records
    )
    body = [f"<style>{CSS}</style>", f"<h1>{_e(title)}</h1>", f"<table>{rows}</table>", f"<p>{index}</p>"]
    body += [_task_section(r, by_id.get(str(r["task_id"]))) for r in records]
    return html_page(title, "\n".join(body))


def write_text_report(run_dir: str | Path, tasks: Sequence[TextTask] | None = None) -> Path:
    """Write `run_dir/report.html` from `run_dir/results.jsonl`; tasks default to config.json's "tasks" file."""
    run_dir = Path(run_dir)
    records = read_results(run_dir)
    cfg_path = run_dir / CONFIG
    cfg = read_config(run_dir) or {}
    if tasks is None:
        if "tasks" not in cfg:
            raise FileNotFoundError(f"{cfg_path}: no such file or no 'tasks' entry (needed to find the tasks)")
        tasks = [first_queries(t, cfg.get("max_queries")) for t in load_text_tasks(cfg["tasks"])]
    meta = {}
    if cfg:
        t, p = cfg.get("ttt_cfg") or {}, cfg.get("predict_cfg") or {}
        meta = {
            "tasks file": cfg.get("tasks"),
            "model": cfg.get("model") or "default",
            "TTT": (f"on: {t.get('samples')} {cfg.get('ttt_data', 'shuffled')} samples, {t.get('epochs')} epoch(s), "
                    f"rank {t.get('rank')}, lr {t.get('lr')}"
                    + ("" if t.get("loss_on_demos", True) else ", loss on the last answer only")
                    + (", one adapter per query" if cfg.get("per_query") else "")
                    + (", one shared adapter" if t.get("shared") else "")) if cfg.get("ttt") else "off",
            "prompt": (f"{'the demonstrations' if p.get('icl', True) else 'no demonstrations (zero-shot)'}"
                       + (f", answers voted over {p['orders']} demo orders" if p.get("orders", 1) > 1 else "")),
        }
    return write_atomic(run_dir / REPORT,
                        text_report_html(records, tasks, title=f"testtime text report: {run_dir.name}", meta=meta))
