"""A run folder on disk: its file names, atomic writes, and the JSON-lines results store.

Every reader and writer of a run folder goes through here, so the conventions live in one place:
- `results.jsonl` (merged) and `results.rank{r}.jsonl` (one per rank under torchrun): one record per task,
  appended (and fsynced) as each group of tasks finishes;
- `config.json`, `summary.json`, `submission.json`, `report.html`: written whole, atomically.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testtime.core import jsonio, schema

RESULTS = "results.jsonl"
CONFIG = "config.json"
SUMMARY = "summary.json"
SUBMISSION = "submission.json"
REPORT = "report.html"
_RANK_FILE = re.compile(r"results\.rank(\d+)\.jsonl")

Record = dict[str, Any]


def write_atomic(path: str | Path, text: str) -> Path:
    """Write a file so that a reader (or a restart after a kill) sees the old content or the new, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_records(path: str | Path) -> list[Record]:
    """Records of one JSON-lines results file, under one policy for every reader.

    A last line without its newline is a write cut short by a crash: it is ignored (the task counts as not
    done and runs again). Blank lines are skipped. Any other line that is not a record (`schema.Record`) is
    an error naming the file, line and field: a partial or malformed file is never read as complete.
    """
    return [schema.check_record(rec, f"{path}: line {n}")
            for n, rec in jsonio.read_json_lines(path, "results", complete_only=True)]


def read_results(run_dir: str | Path) -> list[Record]:
    """A run's merged `results.jsonl` (see `read_records` for what counts as a bad file)."""
    path = Path(run_dir) / RESULTS
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    return read_records(path)


def read_file_records(path: Path) -> list[Record]:
    """Records of one results file ([] if absent); a last line cut short by a kill is ignored, see `read_records`."""
    return read_records(path) if Path(path).exists() else []


def own_results(out_dir: Path, rank: int | None) -> Path:
    """The results file a process appends to: its rank's under torchrun (`rank` not None), else the merged one."""
    return Path(out_dir) / (RESULTS if rank is None else f"results.rank{rank}.jsonl")


def result_files(out_dir: Path) -> list[Path]:
    """The merged results file first (a legacy or earlier run's), then every rank's file in rank order."""
    ranks = sorted((int(m.group(1)), p) for p in Path(out_dir).iterdir() if (m := _RANK_FILE.fullmatch(p.name)))
    return [Path(out_dir) / RESULTS, *(p for _, p in ranks)]


def finished_ids(out_dir: Path) -> set[str]:
    return {r["task_id"] for p in result_files(out_dir) for r in read_file_records(p)}


def merge_results(out_dir: Path, task_ids: Sequence[str]) -> list[Record]:
    """Every results file of `out_dir` into `results.jsonl`, atomically: one record per task, in task order.

    Records of tasks outside `task_ids` (an earlier run with a larger --limit) are kept, after the others.
    Returns the records of `task_ids`.
    """
    by_id: dict[str, Record] = {}
    for p in result_files(out_dir):
        for r in read_file_records(p):
            by_id.setdefault(r["task_id"], r)
    ordered = [by_id.pop(t) for t in task_ids if t in by_id]
    write_atomic(Path(out_dir) / RESULTS, "".join(json.dumps(r) + "\n" for r in ordered + list(by_id.values())))
    return ordered


def drop_cut_tail(path: Path) -> None:
    """Cut a last line left without its newline by a kill, so that the next append starts a fresh line."""
    if not path.exists():
        return
    data = jsonio.read_bytes(path, "results")  # refuses a FIFO or device: appending to one would block or worse
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def append_records(path: Path, records: Sequence[Record]) -> None:
    """Append records as whole lines, flushed and fsynced: once this returns, a kill loses none of them.

    A last line cut by an earlier kill is dropped first, so the new lines never join onto it.
    """
    drop_cut_tail(path)
    with path.open("a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_config(run_dir: str | Path) -> dict[str, Any] | None:
    """A run's `config.json` as written (None when the folder has none), checked against `schema.RunConfig`."""
    path = Path(run_dir) / CONFIG
    if not path.exists() and not path.is_symlink():
        return None
    return schema.check_run_config(jsonio.read_json(path, "config"), str(path))


def read_joint_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """The joint stage's cost as the run's `summary.json` records it (None: no summary, or no joint stage)."""
    path = Path(run_dir) / SUMMARY
    summary = jsonio.read_json(path, "summary") if path.exists() else None
    return summary.get("joint") if isinstance(summary, dict) else None
