"""The `testtime` command's options, declared once: the flags `evaluate` and `solve` share, each typed and helped.

`DEVICE` and `DTYPE` are also serve's. Flags that set a config field are checked against that field's declared limits
(config.Range), not here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def flag_name(key: str, value: object) -> str:
    """The flag as the user typed it: `--no-augment` for augment=False."""
    return ("--no-" if value is False else "--") + key.replace("_", "-")


MODELS = Annotated[list[str] | None, typer.Option(
    "--model", help="A Hugging Face causal LM folder; default: the shipped base model. Named twice or more: a run with "
                    "each (OUT/checkpoints/), their attempts combined into OUT as `testtime combine` does.")]
SOLVE_MODELS = Annotated[list[str] | None, typer.Option(
    "--model", help="A Hugging Face causal LM folder; default: the shipped base model. Named twice or more: each "
                    "model solves the task in turn, their attempts combined as `testtime combine` does.")]
TTT = Annotated[bool | None, typer.Option("--ttt/--no-ttt", show_default=False,
                                           help="Train a per-task adapter before predicting (default: yes).")]
# Flags that set a config field are checked against that field's declared limits (config.Range), not here.
VIEWS = Annotated[int | None, typer.Option(help="D8 views for augmented inference (1: plain greedy; default 8).")]
ORDERS = Annotated[int | None, typer.Option(help="Demo orders per view (default 1); text tasks: orders each query "
                                                  "is asked under, their answers voting.")]
DEVICE = Annotated[str | None, typer.Option(help="cpu or cuda; default: cuda when available.")]
DTYPE = Annotated[str | None, typer.Option(help="The weights' dtype, float32 or bfloat16 (default: bfloat16 on a GPU, "
                                                "float32 on a CPU). A CPU with native bf16 (AVX512-BF16, AMX) runs "
                                                "faster in bfloat16; on a GPU TTT and decoding run under bf16 "
                                                "autocast either way.")]
SAMPLES = Annotated[int | None, typer.Option(help="TTT sequences per task.")]
EPOCHS = Annotated[int | None, typer.Option(help="TTT epochs (default: the policy's; extended 6, else 2).")]
LR = Annotated[float | None, typer.Option(help="TTT learning rate.")]
RANK = Annotated[int | None, typer.Option(help="LoRA rank.")]
ADAPTER = Annotated[str | None, typer.Option(
    help="Per-task update: lora (low-rank adapters, the default) or full (a full-weight update of the same layers; "
         "rank does not apply, and it usually wants a lower --lr, say 1e-4).")]
AUG = Annotated[bool | None, typer.Option("--augment/--no-augment", show_default=False,
                                           help="Transform TTT samples (D8, colors, order; default: yes).")]
LOO = Annotated[bool | None, typer.Option("--loo/--no-loo", show_default=False,
                                           help="Leave-one-out TTT tasks (else plain input->output pairs; default: yes).")]
DEMO = Annotated[bool | None, typer.Option("--demo-loss/--no-demo-loss", show_default=False,
                                            help="Also learn demo outputs, not only the held-out (text: last) one "
                                                 "(default: yes).")]
SHARED = Annotated[bool, typer.Option("--shared", help="Ablation: one adapter shared by the tasks of a batch.")]
ICL = Annotated[bool | None, typer.Option("--icl/--no-icl", show_default=False, help="Text tasks: the demonstrations "
                                           "in the prompt (default: yes; --no-icl: zero-shot prompts).")]
TTT_DATA = Annotated[str | None, typer.Option(help="Text tasks: TTT sequences of shuffled demos (default), loo "
                                                    "(leave-one-out) or pairs (each demo alone).")]
PER_QUERY = Annotated[bool, typer.Option("--per-query", help="Text tasks: one adapter per query instead of one "
                                                               "shared by a task's queries.")]
MAX_QUERIES = Annotated[int | None, typer.Option(help="Text tasks: only the first N queries of each task.")]
CONFIG = Annotated[Path | None, typer.Option(help="JSON config of the recipe to start from (the flags given override it).")]
RECIPE = Annotated[str | None, typer.Option(
    help="A named recipe to start from (see `testtime recipes`; default: default); the flags given override it.")]
POLICY = Annotated[str | None, typer.Option(
    help="When to train: never, always, extended (default with --ttt), agree, loo-stop, adaptive, settle, anytime; "
         "see `testtime policies`.")]
SELECT = Annotated[str | None, typer.Option(
    help="How the two attempts are chosen: poe (candidates ranked by their likelihood under augmented views, the "
         "default) or vote (the views' hierarchical vote).")]
JOINT = Annotated[int | None, typer.Option(
    min=0, help="Joint stage: train the whole model on every task's demonstrations first, this many sequences per "
                "task (0: none; see testtime.recipes.joint).")]
JOINT_DIR = Annotated[str | None, typer.Option(
    help="Folder of the joint stage (default OUT/joint); runs of the same tasks and joint settings can share one.")]
MAX_SECONDS = Annotated[float | None, typer.Option(
    help="Time budget of a task: its cost is estimated before it starts and, where over, its work is cut to fit "
         "(fewer demos in context, scoring views, views, TTT steps; the output says what). Default: 300 on a CPU, "
         "none on a GPU.")]
ADAPTERS = Annotated[int | None, typer.Option(help="Adapters per task, trained together, each predicting every view; "
                                             "candidates pooled, scored through every adapter (default 2; 1 with "
                                             "--shared, --adapter full or without TTT).")]
DFS = Annotated[float | None, typer.Option(help="Depth-first sampling: every answer at least this likely under each "
                                         "view, the greedy one always among them (say 0.1; default: greedy).")]
SECOND = Annotated[int | None, typer.Option(help="Second round: this many more TTT steps on tasks with a confident "
                                            "answer, added as a demonstration; then predict again (default 0: none).")]
BUDGET = Annotated[float | None, typer.Option(
    help="Seconds a task on average over the run, spent where the signals say a task is unsolved: a cheap pass on "
         "every task, then TTT rounds by expected gain per second (policy anytime unless --policy names settle).")]
AUDIT_LOO = Annotated[bool, typer.Option("--audit-loo", help="Also decode the held-out demos the leave-one-out "
                                         "check scores; records count where verdicts differ (decoding not in compute).")]
LABELS = Annotated[Path | None, typer.Option(help="JSON object of task id -> label (a stream's familiar or novel): "
                                                  "kept in each record, for analysis; the policy never sees it.")]
