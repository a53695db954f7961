"""A short sweep of the per-task TTT settings (issue 24, item 4), so the default is tuned, not guessed: LoRA's learning
rate, rank and target layers, and full-weight TTT's learning rate, one axis at a time around the default, each
setting a whole evaluation paired by task with the default's.

    python benchmarks/sweep_ttt.py --tasks arc1/eval --out runs/sweep --md runs/sweep.md --axes lr,rank,targets,full

Each setting is a run folder OUT/PREFIXNAME (resumed when run again: a call that stops at its time limit loses
nothing); the default's is OUT/PREFIXdefault, run first, or `--default-run DIR`, a run of the default that exists
already (`scripts/gpu_levers.sh` hands it the levers' own: resumed, it costs nothing). After each setting the table is written again (`levers_table.py`: pass@2,
recall of the right grid among candidates, GPU-s/task, tasks won and lost against the default, sign test). Under
torchrun every setting runs data-parallel, as `testtime evaluate` does. `--base KEY=VALUE` applies to every setting
(the default's run included), e.g. `--base epochs=3` for a cheaper sweep; on a CPU, `--limit 2` and a tiny model
check the whole path in seconds.

Ranks keep LoRA's scale alpha/rank at the default's 1 (alpha = rank), so the rank axis measures capacity, not a
larger step. The axes, in order of value per GPU-minute (a LoRA run costs the default's 1.65 H100-s/task with its two
adapters, 0.92 with `--base adapters=1`; a full one about 3 an adapter): lr (3 runs), rank (4), targets (3), full (3).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # levers_table beside this script

from levers_table import markdown, table  # noqa: E402

import testtime  # noqa: E402
from testtime.core.distributed import from_env  # noqa: E402
from testtime.stages.ensemble import DEFAULT_ADAPTERS  # noqa: E402

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]
AXES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "lr": [(f"lr-{lr:g}", {"lr": lr}) for lr in (2.5e-4, 1e-3, 2e-3)],  # the default: 5e-4
    "rank": [(f"rank-{r}", {"rank": r, "ttt_cfg.alpha": float(r)}) for r in (8, 16, 64, 128)],  # the default: 32
    "targets": [("targets-attention", {"ttt_cfg.targets": ATTENTION}), ("targets-mlp", {"ttt_cfg.targets": MLP}),
                ("targets-qv-mlp", {"ttt_cfg.targets": ["q_proj", "v_proj", *MLP]})],  # the default: every layer
    "full": [(f"full-lr-{lr:g}", {"adapter": "full", "lr": lr}) for lr in (3e-5, 1e-4, 3e-4)],  # measured: 1e-4
}


def settings_of(axes: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """The sweep's runs, the default first; an unknown axis is an error naming the known ones."""
    unknown = [a for a in axes if a not in AXES]
    if unknown:
        raise SystemExit(f"error: unknown axis {unknown[0]!r}; choose from {', '.join(AXES)}")
    return [("default", {})] + [s for a in axes for s in AXES[a]]


def same_adapters(base: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """A setting over the base, at the default run's adapters a task: full weights default to one where LoRA
    defaults to two, and each run is paired with the default's (two adapters alone win about 10 of the 400)."""
    full = settings.get("adapter") == "full"
    return {**({"adapters": DEFAULT_ADAPTERS} if full else {}), **base, **settings}


def parse_base(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE settings (a flag's name or a dotted config path; VALUE read as JSON where it parses)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: --base takes KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="arc1/eval")
    ap.add_argument("--out", type=Path, default=Path("runs/sweep"))
    ap.add_argument("--prefix", default="", help="of each run's folder name (a flat runs/ folder: --out runs --prefix sw-)")
    ap.add_argument("--default-run", type=Path, help="the default's run folder (default OUT/PREFIXdefault)")
    ap.add_argument("--axes", default="lr,rank,targets,full", help="comma-separated, in the order to run them")
    ap.add_argument("--model", help="a model folder (default: the shipped model)")
    ap.add_argument("--device")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--base", action="append", default=[], help="KEY=VALUE for every setting, e.g. epochs=3")
    ap.add_argument("--md", type=Path, help="the table, rewritten after each setting (default OUT/sweep.md)")
    args = ap.parse_args(argv)
    runs = settings_of([a for a in args.axes.split(",") if a])
    base = parse_base(args.base)
    common = {k: v for k, v in (("model", args.model), ("device", args.device), ("limit", args.limit)) if v is not None}
    md = args.md or args.out / f"{args.prefix}sweep.md"
    main_rank = from_env().is_main
    folders = {name: args.out / f"{args.prefix}{name}" for name, _ in runs}
    if args.default_run is not None:
        folders["default"] = args.default_run
    rows: list[dict[str, Any]] = []
    for name, settings in runs:
        # A sweep compares like with like: no time budget cuts any task's work.
        testtime.evaluate(args.tasks, folders[name], max_seconds=None, show_progress=main_rank,
                          **common, **same_adapters(base, settings))
        if main_rank:
            rows, notes = table(list(folders.values()), folders["default"])
            md.parent.mkdir(parents=True, exist_ok=True)
            md.write_text(f"Sweep of {args.tasks}{f' (first {args.limit})' if args.limit else ''}, base "
                          f"{json.dumps(base)}:\n\n" + markdown(rows, "default") + "".join(f"\n{n}" for n in notes))
    if main_rank:
        print(md.read_text())
    return rows


if __name__ == "__main__":
    main()
