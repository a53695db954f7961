"""What a run folder's files hold, as one validated schema: a task's record (grid or text) and the run's
config.json. `store` reads every record and config through here, so report, submit, compare and a resumed run
meet a record of the wrong shape as one line naming the file, line and field, never as a TypeError later.

Only the fields a reader uses are checked; other fields pass, so records of older runs still read.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

# Strict: a number in quotes or a 0/1 for true/false is an error, as it is in a config.
_STRICT = ConfigDict(strict=True, extra="allow")

Cell = Annotated[int, Field(ge=0, le=9)]
Row = Annotated[list[Cell], Field(min_length=1, max_length=30)]


def _rectangular(rows: list[list[int]]) -> list[list[int]]:
    if any(len(r) != len(rows[0]) for r in rows):
        raise ValueError("grid is not rectangular")
    return rows


Grid = Annotated[list[Row], Field(min_length=1, max_length=30), AfterValidator(_rectangular)]
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]


class Vote(BaseModel):
    model_config = _STRICT
    grid: Grid | None = None
    votes: float | None = None


class PolicyNote(BaseModel):
    model_config = _STRICT
    name: str | None = None
    decision: str | None = None
    signals: dict[str, float | str | bool | None] | None = None
    ttt_steps: Count | None = None


class BudgetNote(BaseModel):
    """What the CPU time budget did to a task (`testtime.stages.budget.Plan.to_json`)."""

    model_config = _STRICT
    max_seconds: Seconds | None = None
    cuts: list[str] | None = None
    estimate: dict[str, Seconds] | None = None


class RecallNote(BaseModel):
    """Whether a task's candidates hold the right grid (`testtime.recipes.grid_records.recall_note`)."""

    model_config = _STRICT
    candidates: list[Count]
    found: list[bool] | None = None
    rank: list[Count | None] | None = None


class Record(BaseModel):
    """One task's line of results.jsonl: grid records and text records share the first block."""

    model_config = _STRICT
    task_id: Annotated[str, Field(min_length=1)]
    score: Share | None = None
    correct: list[bool] | None = None
    seconds: Seconds | None = None
    error: str | None = None
    ttt_loss: list[float | None] | None = None
    tokens: dict[str, Count] | None = None
    # grid tasks
    attempts: list[list[Grid | None]] | None = None
    greedy: list[Grid | None] | None = None
    greedy_correct: list[bool] | None = None
    greedy_score: Share | None = None
    votes: list[list[Vote]] | None = None
    invalid: Count | None = None
    policy: PolicyNote | None = None
    compute: dict[str, Seconds] | None = None
    budget: BudgetNote | None = None
    recall: RecallNote | None = None
    # text tasks
    kind: Literal["text"] | None = None
    answers: list[str | None] | None = None
    method: str | None = None
    scores: list[list[float] | None] | None = None


class RunConfig(BaseModel):
    """A run folder's config.json, as far as the readers of a finished run use it."""

    model_config = _STRICT
    tasks: Annotated[str, Field(min_length=1)] | None = None
    limit: Annotated[int, Field(ge=1)] | None = None
    solutions: str | None = None
    model: str | None = None
    ttt: bool | None = None
    ttt_cfg: dict[str, Any] | None = None


_RECORD = TypeAdapter(Record)
_RUN_CONFIG = TypeAdapter(RunConfig)


def _problem(e: ValidationError) -> str:
    """The first problem of a validation, in one line: the field's path, what it should be, what it is."""
    err = e.errors(include_url=False)[0]
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
    shown = json.dumps(err["input"], default=str)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    msg = err["msg"].removeprefix("Value error, ")
    return f"{path or 'record'}: {msg[0].lower()}{msg[1:]}, got {shown}"


def check_record(obj: Any, where: str) -> dict[str, Any]:
    """`obj` (a parsed line of results) when it is a valid record; else a one-line ValueError from `where`."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected an object with a 'task_id', got {type(obj).__name__}")
    if "task_id" not in obj:
        raise ValueError(f"{where}: expected an object with a 'task_id'")
    try:
        _RECORD.validate_python(obj)
    except ValidationError as e:
        raise ValueError(f"{where}: {_problem(e)}") from None
    return obj


def check_run_config(obj: Any, where: str) -> dict[str, Any]:
    """`obj` (a parsed config.json of a run) when valid; else a one-line ValueError from `where`."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: a run's config must be an object, got {json.dumps(obj)[:40]}")
    try:
        _RUN_CONFIG.validate_python(obj)
    except ValidationError as e:
        raise ValueError(f"{where}: {_problem(e)}") from None
    return obj
